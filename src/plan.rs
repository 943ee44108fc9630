//! The staging plan images and zips share: project + settings + selection + target →
//! staged parts (third-party deps, workspace members, app), each cached under a key of
//! everything that shapes it and staged in parallel.
//!
//! This module owns what is decided before any bytes are encoded (settings merged, target,
//! handler, app sources, uv, bytecode interpreter) and the staging skeleton; the image
//! side ([`crate::build`]) encodes parts as tar+gzip layers and the zip side
//! ([`crate::package`]) as zip entries, through an [`Encoder`]. It never names a command.

use crate::cache::Cache;
use crate::config::{Selection, Settings};
use crate::output;
use crate::project::{Handler, Project};
use crate::provenance::{Choices, json_key, sha_hex};
use crate::report::{Event, Reporter};
use crate::stage::{self, Export, Interpreter, Uv};
use crate::target::{Arch, Target};
use crate::tree::Tree;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to package, as a command gives it: the part of a request `build` and `zip` share.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub project_dir: &'a Path,
    /// Settings given on the command line (highest precedence).
    pub cli: &'a Settings,
    /// Settings from the environment (below the command line, above pyproject.toml).
    pub env: &'a Settings,
    pub offline: bool,
    /// Whether bytecode is compiled when no setting decides: on for images, off for zips
    /// (as in uv's AWS Lambda guide's zip recipe, where the first import writes nothing
    /// back anyway).
    pub bytecode_by_default: bool,
    pub reporter: &'a dyn Reporter,
}

/// Everything resolved from the project, the settings and the environment before any uv
/// or network work, so `build` and `zip` read settings, pick the target and find the app
/// sources the same way.
#[derive(Debug)]
pub struct Plan {
    pub project: Project,
    /// CLI > environment > [tool.ocilambda], merged.
    pub settings: Settings,
    pub selection: Selection,
    pub target: Target,
    pub handler_text: String,
    pub app: Tree,
    /// The rule that picked `app`: outputs must stay out of what it selects.
    pub app_sources: crate::project::AppSources,
    pub uv_path: PathBuf,
    /// Keys caches without starting uv (see [`Uv::locate`]).
    pub uv_identity: String,
    /// uv's version, when finding the identity already asked for it.
    pub uv_known: Option<Uv>,
    /// The interpreter that compiles bytecode; None: no bytecode.
    pub interpreter: Option<Interpreter>,
}

impl Plan {
    /// The settings beyond the lock that the image records (see [`Choices`]).
    pub fn choices(&self) -> Choices {
        Choices {
            include: self.settings.include.clone(),
            exclude: self.settings.exclude.clone(),
            package: self.project.package.clone(),
            extras: self.selection.extras.clone(),
            all_extras: self.selection.all_extras,
            groups: self.selection.groups.clone(),
        }
    }

    /// Everything that shapes what staging installs for third-party dependencies, as the
    /// base of cache keys: uv.lock, pyproject files, selection, target, uv binary and
    /// bytecode interpreter. Each side adds what shapes its own encoding.
    pub fn staging_inputs(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let project = &self.project;
        let sel = &self.selection;
        let selection = json_key(&serde_json::json!({
            "package": project.package, "extras": sel.extras, "all_extras": sel.all_extras, "groups": sel.groups,
        }));
        let mut pyprojects: Vec<String> = vec![sha_hex(&std::fs::read(
            project.root.join("pyproject.toml"),
        )?)];
        pyprojects.push(sha_hex(&std::fs::read(project.dir.join("pyproject.toml"))?));
        for m in &project.members {
            pyprojects.push(sha_hex(
                &std::fs::read(m.dir.join("pyproject.toml")).unwrap_or_default(),
            ));
        }
        let mut inputs = serde_json::Map::new();
        inputs.insert("stage".into(), stage::STAGE_VERSION.into());
        inputs.insert("lock".into(), sha_hex(&project.lock).into());
        inputs.insert("pyprojects".into(), pyprojects.into());
        inputs.insert("selection".into(), selection.into());
        inputs.insert("python".into(), self.target.python.to_string().into());
        inputs.insert("platform".into(), self.target.uv_platform().into());
        inputs.insert("uv".into(), self.uv_identity.clone().into());
        inputs.insert(
            "bytecode".into(),
            self.interpreter.as_ref().map(|i| i.version.clone()).into(),
        );
        Ok(inputs)
    }

    /// (name, hash of its files) of each workspace member: what shapes the members' stage
    /// beyond [`Plan::staging_inputs`].
    pub fn member_hashes(&self) -> Result<Vec<(String, String)>> {
        self.project
            .members
            .iter()
            .map(|m| Ok((m.name.clone(), tree_hash(&m.dir)?)))
            .collect()
    }

    /// The part keys: `deps_key` as the side made it, and the members' key derived from it
    /// (none without workspace members).
    pub fn part_keys(&self, prefix: &str, deps_key: String) -> Result<PartKeys> {
        let members = if self.project.members.is_empty() {
            None
        } else {
            Some(format!(
                "{prefix}workspace:{}",
                json_key(&serde_json::json!({"deps": deps_key, "members": self.member_hashes()?}))
            ))
        };
        Ok(PartKeys {
            deps: deps_key,
            members,
        })
    }
}

/// Hash a directory's files (paths and contents), skipping what is never packaged.
fn tree_hash(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let walker = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            // Build outputs only at the member's top level: a subpackage may be called
            // `build` or `dist`, and its edits must invalidate the layer.
            let top_level_output = e.depth() == 1
                && (matches!(n.as_ref(), "build" | "dist") || n.ends_with(".egg-info"));
            !matches!(n.as_ref(), ".git" | ".venv" | ".ocilambda" | "__pycache__")
                && !top_level_output
        });
    for entry in walker {
        let entry = entry?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)?
            .to_string_lossy()
            .into_owned();
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        if entry.file_type().is_symlink() {
            hasher.update(
                std::fs::read_link(entry.path())?
                    .to_string_lossy()
                    .as_bytes(),
            );
        } else {
            hasher.update(std::fs::read(entry.path())?);
        }
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The merged settings: pyproject (root, then member) < environment < command line. The
/// member comes from the command line or environment first, else from the root's settings.
fn load_project(req: &Request) -> Result<(Project, Settings)> {
    let explicit = req.cli.package.as_deref().or(req.env.package.as_deref());
    let project = Project::load(req.project_dir, explicit)?;
    let settings = project
        .settings
        .clone()
        .overlaid_with(req.env.clone())
        .overlaid_with(req.cli.clone());
    Ok((project, settings))
}

/// Why a staging plan cannot be made; the command layer words the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// No `handler` setting from any source.
    NoHandler,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::NoHandler => write!(f, "no handler configured"),
        }
    }
}

impl std::error::Error for PlanError {}

/// Resolve settings, target, handler, app sources, uv and the bytecode interpreter.
pub fn prepare(req: &Request, cache: &Cache) -> Result<Plan> {
    let (project, settings) = load_project(req)?;
    let handler_text = settings.handler.clone().ok_or(PlanError::NoHandler)?;
    let handler: Handler = handler_text.parse()?;
    let arch = settings.arch.unwrap_or(Arch::X86_64);
    let python = project.target_python(settings.python_version, settings.base.as_deref())?;
    let target = Target { python, arch };
    let (include, exclude) = (
        settings.include.as_deref().unwrap_or_default(),
        settings.exclude.as_deref().unwrap_or_default(),
    );
    let app = project.app_tree(&handler, include, exclude)?;
    if !app.unintended.is_empty() {
        req.reporter
            .event(Event::Warning(unintended_warning(&app.unintended)));
    }
    let app = app.tree;
    crate::handler::check(&app, &handler)?;
    let app_sources = project.app_sources(&handler, include, exclude)?;

    let (uv_path, uv_identity, uv_known) = Uv::locate()?;
    let compile = settings.compile_bytecode.unwrap_or(req.bytecode_by_default);
    let interpreter = if compile {
        Some(bytecode_interpreter(
            cache,
            (&uv_path, &uv_identity, uv_known.as_ref()),
            &target,
            req.offline,
            req.reporter,
        )?)
    } else {
        None
    };
    Ok(Plan {
        selection: Selection::new(&settings, req.offline),
        project,
        settings,
        target,
        handler_text,
        app,
        app_sources,
        uv_path,
        uv_identity,
        uv_known,
        interpreter,
    })
}

/// What include globs brought in that may not be meant to ship, at most eight names.
fn unintended_warning(paths: &[String]) -> String {
    let mut shown = paths.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 8 {
        shown.push_str(&format!(" and {} more", paths.len() - 8));
    }
    format!(
        "`include` also selected {shown}, beyond the handler package; add them to `exclude` if they should not ship"
    )
}

/// The interpreter for bytecode, remembered per (uv binary, version) so the common path
/// starts no uv process; a remembered path that vanished is looked up again. uv finds one,
/// else installs one of its managed builds (unless offline), else it is an error: shipping
/// without bytecode would give this machine another image digest than one that has it.
fn bytecode_interpreter(
    cache: &Cache,
    (uv_path, uv_identity, uv_known): (&Path, &str, Option<&Uv>),
    target: &Target,
    offline: bool,
    reporter: &dyn Reporter,
) -> Result<Interpreter> {
    let key = format!("interpreter:{uv_identity}:{}", target.python);
    if let Some(found) = cache.record_get::<Interpreter>(&key)
        && found.path.is_file()
        && found.stamp == stage::interpreter_stamp(&found.path)
    {
        return Ok(found);
    }
    let uv = match uv_known {
        Some(uv) => uv.clone(),
        None => Uv::version_of(uv_path)?,
    };
    let lookup = || match stage::find_interpreter(&uv, target) {
        Some(path) => interpreter_at(path, target),
        None => Ok(None),
    };
    let no_interpreter = |install_failed| stage::NoInterpreter {
        python: target.python,
        install_failed,
    };
    let found = match lookup()? {
        Some(found) => found,
        None if offline => return Err(no_interpreter(None).into()),
        None => {
            reporter.event(Event::Step(format!(
                "Installing Python {} with uv to compile bytecode",
                target.python
            )));
            stage::install_interpreter(&uv, target).map_err(|why| no_interpreter(Some(why)))?;
            lookup()?.ok_or_else(|| {
                no_interpreter(Some("uv installed it but does not find it".into()))
            })?
        }
    };
    cache.record_put(&key, &found)?;
    Ok(found)
}

/// The interpreter at `path`, when it is of the target's version.
fn interpreter_at(path: PathBuf, target: &Target) -> Result<Option<Interpreter>> {
    let out = crate::children::output(std::process::Command::new(&path).args([
        "-E",
        "-c",
        "import sys; print('%d.%d.%d' % sys.version_info[:3])",
    ]))
    .with_context(|| format!("running {}", path.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !version.starts_with(&format!("{}.", target.python)) {
        return Ok(None);
    }
    let stamp = stage::interpreter_stamp(&path);
    Ok(Some(Interpreter {
        path,
        version,
        stamp,
    }))
}

/// `uv export` of the locked requirements, with the summary lines both sides print.
pub fn export(plan: &Plan, reporter: &dyn Reporter) -> Result<(Uv, Export)> {
    let uv = match &plan.uv_known {
        Some(uv) => uv.clone(),
        None => Uv::version_of(&plan.uv_path)?,
    };
    reporter.event(Event::Step(format!("Using uv {}", uv.version)));
    let started = Instant::now();
    let e = stage::export(&uv, &plan.project, &plan.selection)?;
    reporter.event(Event::Step(format!(
        "Exported {} locked packages{} in {}",
        e.packages.len(),
        if e.members.is_empty() {
            String::new()
        } else {
            format!(
                " and {} workspace member{}",
                e.members.len(),
                if e.members.len() == 1 { "" } else { "s" }
            )
        },
        output::duration(started.elapsed())
    )));
    Ok((uv, e))
}

/// Install the third-party requirements (or, with `members`, the workspace members) into
/// `dir`, ready to package: console scripts pointed at the runtime's interpreter, and
/// bytecode (when planned) embedding paths under `pyc_root`, where Lambda will see the
/// files (`/var/task` in an image or function zip, `/opt/python/...` in a layer).
/// `hardlink`: see [`stage::InstallOptions::hardlink`].
pub fn stage_into(
    plan: &Plan,
    (uv, export): &(Uv, Export),
    members: bool,
    dir: &Path,
    pyc_root: &str,
    hardlink: bool,
) -> Result<()> {
    let requirements = if members {
        export.members.join("\n") + "\n"
    } else {
        export.third_party.clone()
    };
    let opts = stage::InstallOptions {
        packages: &export.packages,
        members,
        offline: plan.selection.offline,
        hardlink,
    };
    stage::install(uv, &plan.project, &plan.target, &requirements, dir, &opts)?;
    stage::fix_scripts(dir, &plan.target)?;
    if let Some(interp) = &plan.interpreter {
        let files: Vec<(String, PathBuf)> = stage::python_files(dir)?
            .into_iter()
            .map(|rel| {
                let src = dir.join(&rel);
                (rel, src)
            })
            .collect();
        stage::compile(&interp.path, &plan.target, dir, pyc_root, &files)?;
    }
    Ok(())
}

/// The app sources, plus their bytecode (when planned) compiled into `scratch` with paths
/// under `pyc_root`.
pub fn app_with_bytecode(plan: &Plan, scratch: &Path, pyc_root: &str) -> Result<Tree> {
    let mut tree = plan.app.clone();
    if let Some(interp) = &plan.interpreter {
        std::fs::create_dir_all(scratch)?;
        let files: Vec<(String, PathBuf)> = plan
            .app
            .entries()
            .filter_map(|(rel, node)| match node {
                crate::tree::Node::File { source, .. } if rel.ends_with(".py") => {
                    Some((rel.clone(), source.clone()))
                }
                _ => None,
            })
            .collect();
        stage::compile(&interp.path, &plan.target, scratch, pyc_root, &files)?;
        tree.add_dir_all(scratch, "")?;
    }
    Ok(tree)
}

/// uv's version without starting uv when it is known: from this run, from locating it
/// (wrapper scripts), or recorded by an earlier run with the same uv binary.
pub fn uv_version(plan: &Plan, cache: &Cache, ran: Option<&Uv>) -> Result<String> {
    let key = format!("uv-version:{}", plan.uv_identity);
    if let Some(uv) = ran {
        cache.record_put(&key, &uv.version)?;
        return Ok(uv.version.clone());
    }
    if let Some(uv) = &plan.uv_known {
        return Ok(uv.version.clone());
    }
    if let Some(v) = cache.record_get::<String>(&key) {
        return Ok(v);
    }
    let v = Uv::version_of(&plan.uv_path)?.version;
    cache.record_put(&key, &v)?;
    Ok(v)
}

/// The cache keys of the staged parts.
#[derive(Debug, Clone)]
pub struct PartKeys {
    pub deps: String,
    /// None: the project has no workspace members.
    pub members: Option<String>,
}

/// How one side encodes and caches a staged part (deps or workspace members).
pub trait Encoder: Sync {
    type Part: Send;
    /// The part cached under `key`, when all its bytes are still there.
    fn cached(&self, kind: &'static str, key: &str) -> Option<Self::Part>;
    /// Encode the freshly staged directory `dir` of part `kind` (cached under `key`).
    fn encode(&self, kind: &'static str, key: &str, dir: &Path) -> Result<Self::Part>;
    /// Where Lambda sees the staged files: the path their bytecode embeds.
    fn pyc_root(&self) -> &str;
    /// Where staging reports what it did.
    fn reporter(&self) -> &dyn Reporter;
}

/// A part after staging: reused from the cache or freshly encoded.
#[derive(Debug, Clone)]
pub struct Staged<P> {
    pub kind: &'static str,
    pub key: String,
    pub part: P,
    pub reused: bool,
    pub millis: u64,
}

/// Every part of a plan: deps, workspace members (when any were exported), the app, and
/// the uv that ran (none when every part came from the cache).
pub struct Parts<P, A> {
    pub deps: Staged<P>,
    pub members: Option<Staged<P>>,
    pub app: A,
    pub uv: Option<Uv>,
}

/// Stage the parts of `plan` into `staging`: parts found in the cache start no uv; the
/// others are exported once and installed in parallel with each other and with `app`
/// (gzip and zip compression run on one core per stream).
pub fn stage_parts<E: Encoder, A: Send>(
    plan: &Plan,
    keys: &PartKeys,
    encoder: &E,
    staging: &Path,
    app: impl FnOnce() -> Result<A> + Send,
) -> Result<Parts<E::Part, A>> {
    let deps_cached = encoder.cached("deps", &keys.deps);
    let members_cached = keys
        .members
        .as_ref()
        .map(|k| encoder.cached("workspace", k));
    let need_uv = deps_cached.is_none() || matches!(members_cached, Some(None));
    let exported = if need_uv {
        Some(export(plan, encoder.reporter())?)
    } else {
        None
    };
    let stage = |kind: &'static str, key: &str, members: bool| -> Result<Staged<E::Part>> {
        let started = Instant::now();
        let exported = exported.as_ref().expect("uv ran: a part is missing");
        let dir = staging.join(kind);
        // Hard links from uv's cache instead of copies: a staged dir is read once into a
        // layer or zip, and every rewrite in it replaces files by rename
        // (stage::fix_scripts), so uv's cache is never written through a link. Measured:
        // cold build of the FastAPI example 1.12 s with copies, 0.82 s with links.
        stage_into(plan, exported, members, &dir, encoder.pyc_root(), true)
            .with_context(|| format!("installing the {kind}"))?;
        let part = encoder.encode(kind, key, &dir)?;
        let millis = started.elapsed().as_millis() as u64;
        let key = key.to_string();
        Ok(Staged {
            kind,
            key,
            part,
            reused: false,
            millis,
        })
    };
    let reused = |kind: &'static str, key: &str, part: E::Part| Staged {
        kind,
        key: key.to_string(),
        part,
        reused: true,
        millis: 0,
    };
    let (deps, members, app) = std::thread::scope(|s| {
        let deps = s.spawn(|| match deps_cached {
            Some(p) => Ok(reused("deps", &keys.deps, p)),
            None => stage("deps", &keys.deps, false),
        });
        let members = s.spawn(|| -> Result<Option<Staged<E::Part>>> {
            match (&keys.members, members_cached) {
                (Some(key), Some(Some(p))) => Ok(Some(reused("workspace", key, p))),
                // The lock's graph can over-count (a member behind an unselected extra):
                // when the export lists none, there is no workspace part.
                (Some(_), _) if exported.as_ref().is_some_and(|(_, e)| e.members.is_empty()) => {
                    Ok(None)
                }
                (Some(key), _) => stage("workspace", key, true).map(Some),
                (None, _) => Ok(None),
            }
        });
        let app = app();
        (
            deps.join().expect("deps thread"),
            members.join().expect("members thread"),
            app,
        )
    });
    Ok(Parts {
        deps: deps?,
        members: members?,
        app: app?,
        uv: exported.map(|(uv, _)| uv),
    })
}
