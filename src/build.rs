//! `ocilambda build`: project → staged trees → layers → image → OCI layout.
//!
//! This module wires the steps together and decides what can be reused: the dependency
//! and workspace-member layers are cached under a key of everything that shapes them
//! (uv.lock, pyproject files, selection, target, uv binary, bytecode interpreter), so an
//! app-only edit starts no uv process and rebuilds only the app layer.
//!
//! The steps up to staging ([`prepare`], [`export`], [`stage_into`], [`app_with_bytecode`])
//! are shared with `ocilambda zip` ([`crate::package`]), so both read settings, pick the
//! target, install and compile the same way; only what is made of the staged trees differs.

use crate::base::{self, BaseImage, Fetch};
use crate::cache::Cache;
use crate::config::{Settings, parse_duration};
use crate::error::hint;
use crate::image::{self, NewLayer};
use crate::layers::{self, Layer};
use crate::output;
use crate::project::{Handler, Project};
use crate::registry::Client;
use crate::sink;
use crate::stage::{self, Export, Interpreter, Selection, Uv};
use crate::target::{Arch, Target};
use crate::tree::Tree;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The documented default for SOURCE_DATE_EPOCH: 1970-01-01T00:00:00Z, as ko uses.
pub const DEFAULT_EPOCH: u64 = 0;

/// Where the task root is in the image; every layer we add lives below it.
pub const TASK_ROOT: &str = "var/task";

#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub project_dir: PathBuf,
    /// Settings given on the command line (highest precedence).
    pub cli: Settings,
    pub output: Option<PathBuf>,
    pub package: Option<String>,
    pub extras: Vec<String>,
    pub all_extras: bool,
    pub groups: Vec<String>,
    pub complete: bool,
    pub pull: bool,
    pub offline: bool,
    pub insecure_registries: Vec<String>,
    /// Timestamps for the image, overriding SOURCE_DATE_EPOCH (`verify` replays a build).
    pub epoch: Option<u64>,
    /// Build on this platform-manifest digest of the configured base while recording the
    /// base's name as configured (`verify` rebuilds on exactly the recorded base).
    pub base_digest: Option<String>,
}

/// The provenance annotation keys (see [`crate::oci::annotation`]).
pub use crate::oci::annotation as provenance;

#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub kind: &'static str,
    #[serde(flatten)]
    pub layer: Layer,
    pub reused: bool,
    pub millis: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseSummary {
    pub name: String,
    /// The platform manifest the image is built on.
    pub digest: String,
    /// What the reference resolved to (an index for the Lambda images): the pin.
    pub resolved: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub digest: String,
    pub output: PathBuf,
    pub base: BaseSummary,
    pub python: String,
    pub arch: String,
    pub handler: String,
    pub layers: Vec<LayerSummary>,
    pub uv_version: Option<String>,
    pub bytecode_interpreter: Option<String>,
    pub timings_ms: BTreeMap<String, u64>,
}

pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            hint(
                format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"),
                "set it to e.g. `$(git log -1 --format=%ct)`, or unset it",
            )
        }),
        _ => Ok(DEFAULT_EPOCH),
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hash a directory's files (paths and contents), skipping what is never packaged.
fn tree_hash(dir: &Path) -> Result<String> {
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

/// What to package, as a command gives it: the part of a request that `build` and `zip`
/// share.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub project_dir: &'a Path,
    /// Settings given on the command line (highest precedence).
    pub cli: &'a Settings,
    pub package: Option<&'a str>,
    pub extras: &'a [String],
    pub all_extras: bool,
    pub groups: &'a [String],
    pub offline: bool,
    /// Whether bytecode is compiled when no setting decides: on for images, off for zips
    /// (as in the seed's zip recipe, where the first import writes nothing back anyway).
    pub bytecode_by_default: bool,
}

/// Everything resolved from the project, the settings and the environment before any uv
/// or network work: shared by `build` and `zip`, so both read settings, pick the target
/// and find the app sources the same way.
#[derive(Debug)]
pub struct Plan {
    pub project: Project,
    /// CLI > OCILAMBDA_* > [tool.ocilambda], merged.
    pub settings: Settings,
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
    pub offline: bool,
    pub extras: Vec<String>,
    pub all_extras: bool,
    pub groups: Vec<String>,
}

impl Plan {
    pub fn selection(&self) -> Selection<'_> {
        Selection {
            extras: &self.extras,
            groups: &self.groups,
            all_extras: self.all_extras,
        }
    }

    /// Everything that shapes what staging installs for third-party dependencies, as the
    /// base of cache keys: uv.lock, pyproject files, selection, target, uv binary and
    /// bytecode interpreter. Each command adds what shapes its own output.
    pub fn staging_inputs(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let project = &self.project;
        let selection = json_key(&serde_json::json!({
            "package": project.package, "extras": self.extras, "all_extras": self.all_extras, "groups": self.groups,
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
}

/// Resolve settings, target, handler, app sources, uv and the bytecode interpreter.
pub fn prepare(source: &Source, cache: &Cache) -> Result<Plan> {
    let project = Project::load(source.project_dir, source.package)?;
    let settings = project
        .settings
        .clone()
        .overlaid_with(Settings::from_env()?)
        .overlaid_with(source.cli.clone());
    let handler_text = settings.handler.clone().ok_or_else(|| {
        hint(
            "no handler configured",
            "pass --handler MODULE.FUNCTION (e.g. app.main.handler), or set `handler` in [tool.ocilambda]",
        )
    })?;
    let handler: Handler = handler_text.parse()?;
    let arch: Arch = settings.arch.as_deref().unwrap_or("x86_64").parse()?;
    let python =
        project.target_python(settings.python_version.as_deref(), settings.base.as_deref())?;
    let target = Target { python, arch };
    let (include, exclude) = (
        settings.include.as_deref().unwrap_or_default(),
        settings.exclude.as_deref().unwrap_or_default(),
    );
    let app = project.app_tree(&handler, include, exclude)?;
    if !app.unintended.is_empty() {
        output::warning(&unintended_warning(&app.unintended));
    }
    let app = app.tree;
    crate::handler::check(&app, &handler)?;
    let app_sources = project.app_sources(&handler, include, exclude)?;

    let (uv_path, uv_identity, uv_known) = Uv::locate()?;
    let compile = settings.compile_bytecode;
    let interpreter = if compile == Some(false)
        || (compile.is_none() && !source.bytecode_by_default)
    {
        None
    } else {
        match bytecode_interpreter(cache, &uv_path, &uv_identity, uv_known.as_ref(), &target)? {
            Some(i) => Some(i),
            None if compile == Some(true) => bail!(hint(
                format!(
                    "no Python {python} interpreter found to compile bytecode (--compile-bytecode was given)"
                ),
                format!(
                    "install one with `uv python install {python}`, or pass --no-compile-bytecode"
                )
            )),
            None => {
                output::warning(&format!(
                    "no Python {python} interpreter found: shipping without bytecode (install one with `uv python install {python}`)"
                ));
                None
            }
        }
    };
    Ok(Plan {
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
        offline: source.offline,
        extras: source.extras.to_vec(),
        all_extras: source.all_extras,
        groups: source.groups.to_vec(),
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

/// `uv export` of the locked requirements, with the summary lines both commands print.
pub fn export(plan: &Plan) -> Result<(Uv, Export)> {
    let uv = match &plan.uv_known {
        Some(uv) => uv.clone(),
        None => Uv::version_of(&plan.uv_path)?,
    };
    output::status(&format!("Using uv {}", uv.version));
    let started = Instant::now();
    let e = stage::export(&uv, &plan.project, &plan.selection(), plan.offline)?;
    output::status(&format!(
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
    ));
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
        offline: plan.offline,
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

/// The image build's cache keys: the staging inputs plus what shapes the layer bytes.
struct LayerKeys {
    epoch: u64,
    deps: String,
    members: Option<String>,
}

/// The interpreter for bytecode, remembered per (uv binary, version) so the common path
/// starts no uv process; a remembered path that vanished is looked up again.
fn bytecode_interpreter(
    cache: &Cache,
    uv_path: &Path,
    uv_identity: &str,
    uv_known: Option<&Uv>,
    target: &Target,
) -> Result<Option<Interpreter>> {
    let key = format!("interpreter:{uv_identity}:{}", target.python);
    if let Some(found) = cache.record_get::<Interpreter>(&key)
        && found.path.is_file()
        && found.stamp == stage::interpreter_stamp(&found.path)
    {
        return Ok(Some(found));
    }
    let uv = match uv_known {
        Some(uv) => uv.clone(),
        None => Uv::version_of(uv_path)?,
    };
    let Some(path) = stage::find_interpreter(&uv, target) else {
        return Ok(None);
    };
    let out = std::process::Command::new(&path)
        .args([
            "-E",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !version.starts_with(&format!("{}.", target.python)) {
        return Ok(None);
    }
    let stamp = stage::interpreter_stamp(&path);
    let found = Interpreter {
        path,
        version,
        stamp,
    };
    cache.record_put(&key, &found)?;
    Ok(Some(found))
}

fn stage_and_write(
    plan: &Plan,
    keys: &LayerKeys,
    cache: &Cache,
) -> Result<(Vec<LayerSummary>, Option<String>)> {
    let deps_cached = cache.layer_get(&keys.deps);
    let members_cached = keys.members.as_ref().map(|k| cache.layer_get(k));
    let need_uv = deps_cached.is_none() || matches!(members_cached, Some(None));
    let exported = if need_uv { Some(export(plan)?) } else { None };
    let uv_version = exported.as_ref().map(|(uv, _)| uv.version.clone());
    let staging = cache.temp_dir("stage-")?;
    let task_root = format!("/{TASK_ROOT}");

    let build_staged = |kind: &'static str, key: &str, members: bool| -> Result<LayerSummary> {
        let started = Instant::now();
        let exported = exported.as_ref().expect("uv ran: a layer is missing");
        let dir = staging.path().join(kind);
        // Hard links from uv's cache instead of copies: the staging dir is read once into
        // a layer, and every rewrite in it replaces files by rename (stage::fix_scripts),
        // so uv's cache is never written through a link. Measured: cold build of the
        // FastAPI example 1.12 s with copies, 0.82 s with links, same digest.
        stage_into(plan, exported, members, &dir, &task_root, true)
            .with_context(|| format!("installing the {kind} layer"))?;
        let mut tree = Tree::new();
        tree.add_dir_all(&dir, "")?;
        let layer = layers::write(&tree.prefixed(TASK_ROOT), keys.epoch, &cache.blob_dir())?;
        cache.mark_verified(&layer.digest);
        cache.layer_put(key, &layer)?;
        let millis = started.elapsed().as_millis() as u64;
        output::status(&format!(
            "Built {kind} layer ({}, {} files) in {}",
            output::size(layer.size),
            output::count(layer.files),
            output::duration(started.elapsed())
        ));
        Ok(LayerSummary {
            kind,
            layer,
            reused: false,
            millis,
        })
    };
    let reused = |kind: &'static str, layer: Layer| {
        output::status(&format!(
            "Reused {kind} layer {} ({})",
            output::short_digest(&layer.digest),
            output::size(layer.size)
        ));
        LayerSummary {
            kind,
            layer,
            reused: true,
            millis: 0,
        }
    };

    let app_build = || -> Result<LayerSummary> {
        let started = Instant::now();
        // Unchanged app sources reuse their layer without starting the bytecode compiler.
        let key = format!(
            "app:{}",
            json_key(&serde_json::json!({
                "format": layers::FORMAT_VERSION,
                "sources": plan.app.content_key()?,
                "bytecode": plan.interpreter.as_ref().map(|i| &i.version),
                "python": plan.target.python.to_string(),
                "epoch": keys.epoch,
            }))
        );
        if let Some(layer) = cache.layer_get(&key) {
            return Ok(reused("app", layer));
        }
        let tree = app_with_bytecode(plan, &staging.path().join("app-pyc"), &task_root)?;
        let layer = layers::write(&tree.prefixed(TASK_ROOT), keys.epoch, &cache.blob_dir())?;
        cache.mark_verified(&layer.digest);
        cache.layer_put(&key, &layer)?;
        output::status(&format!(
            "Built app layer ({}, {} files) in {}",
            output::size(layer.size),
            output::count(layer.files),
            output::duration(started.elapsed())
        ));
        Ok(LayerSummary {
            kind: "app",
            layer,
            reused: false,
            millis: started.elapsed().as_millis() as u64,
        })
    };

    // Independent layers are built in parallel: gzip is the bottleneck and runs on one
    // core per stream (parallel gzip of one stream is not byte-stable).
    let (deps, members, app) = std::thread::scope(|s| {
        let deps = s.spawn(|| match deps_cached.clone() {
            Some(l) => Ok(reused("deps", l)),
            None => build_staged("deps", &keys.deps, false),
        });
        let members = s.spawn(|| -> Result<Option<LayerSummary>> {
            match (&keys.members, members_cached.clone()) {
                (Some(_), Some(Some(l))) => Ok(Some(reused("workspace", l))),
                // The lock's graph can over-count (a member behind an unselected extra):
                // when the export lists none, there is no workspace layer.
                (Some(_), _) if exported.as_ref().is_some_and(|(_, e)| e.members.is_empty()) => {
                    Ok(None)
                }
                (Some(key), _) => build_staged("workspace", key, true).map(Some),
                (None, _) => Ok(None),
            }
        });
        let app = app_build();
        (
            deps.join().expect("deps thread"),
            members.join().expect("members thread"),
            app,
        )
    });
    let mut out = vec![deps?];
    if let Some(m) = members? {
        out.push(m);
    }
    out.push(app?);
    Ok((out, uv_version))
}

pub async fn build(req: BuildRequest) -> Result<BuildSummary> {
    let started = Instant::now();
    let mut timings = BTreeMap::new();
    let cache = Cache::open()?;
    let plan = prepare(
        &Source {
            project_dir: &req.project_dir,
            cli: &req.cli,
            package: req.package.as_deref(),
            extras: &req.extras,
            all_extras: req.all_extras,
            groups: &req.groups,
            offline: req.offline,
            bytecode_by_default: true,
        },
        &cache,
    )?;
    let (python, arch) = (plan.target.python, plan.target.arch);
    let base_ref = plan
        .settings
        .base
        .clone()
        .unwrap_or_else(|| format!("public.ecr.aws/lambda/python:{python}"));
    let epoch = match req.epoch {
        Some(e) => e,
        None => source_date_epoch()?,
    };
    let tag_ttl = parse_duration(plan.settings.base_ttl.as_deref().unwrap_or("24h"))?;
    let output_dir = req
        .output
        .clone()
        // <PROJECT_DIR>/.ocilambda/image as given (the workspace root with --package),
        // where push and invoke look by default.
        .unwrap_or_else(|| plan.project.root.join(".ocilambda").join("image"));

    // The deps layer's key: what shapes the staged install, plus the layer format and the
    // timestamps written into it.
    let mut deps_inputs = serde_json::Map::new();
    deps_inputs.insert("format".into(), layers::FORMAT_VERSION.into());
    deps_inputs.extend(plan.staging_inputs()?);
    deps_inputs.insert("epoch".into(), epoch.into());
    let deps_key = format!("deps:{}", json_key(&deps_inputs.into()));
    let members_key = if plan.project.members.is_empty() {
        None
    } else {
        Some(format!(
            "workspace:{}",
            json_key(&serde_json::json!({"deps": deps_key, "members": plan.member_hashes()?}))
        ))
    };
    let keys = LayerKeys {
        epoch,
        deps: deps_key,
        members: members_key,
    };

    // The base is resolved over the network while uv installs: neither waits for the other.
    let client = Client::new(&req.insecure_registries, None)?;
    let fetch = Fetch {
        pull: req.pull,
        offline: req.offline,
        tag_ttl,
    };
    let base_started = Instant::now();
    let resolve_ref = match &req.base_digest {
        Some(d) => {
            let r = base::parse_reference(&base_ref)?;
            format!("{}/{}@{d}", r.registry(), r.repository())
        }
        None => base_ref.clone(),
    };
    let base_future = base::resolve(&client, &cache, &resolve_ref, arch, fetch);
    let stage_cache = cache.clone();
    let stage_future = tokio::task::spawn_blocking(move || {
        let result = stage_and_write(&plan, &keys, &stage_cache);
        (plan, keys, result)
    });
    let (base, staged) = tokio::join!(
        async {
            let b = base_future.await;
            (b, base_started.elapsed())
        },
        stage_future
    );
    let (plan, keys, staged) = staged.context("the staging thread panicked")?;
    let (base, base_time) = base;
    let base: BaseImage = base?;
    timings.insert("base".into(), base_time.as_millis() as u64);
    let (new_layers, uv_version) = staged?;
    output::status(&format!(
        "Resolved base {} to {} (linux/{}{})",
        base.reference.whole(),
        output::short_digest(&base.top_digest),
        arch.oci_name(),
        if base.from_cache { ", cached" } else { "" }
    ));
    if !base.pinned && !output::is_quiet() {
        output::hint(&format!(
            "pin the base for reproducible rebuilds: --base {}/{}@{}",
            base.reference.registry(),
            base.reference.repository(),
            base.top_digest
        ));
    }

    let mut with_blobs: Vec<String> = new_layers.iter().map(|l| l.layer.digest.clone()).collect();
    if req.complete {
        let fetched = base::fetch_layers(&client, &cache, &base, req.offline)
            .await
            .with_context(|| format!("fetching the layers of base {}", base.reference.whole()))?;
        if fetched > 0 {
            output::status(&format!("Fetched base layers ({})", output::size(fetched)));
        }
        with_blobs.extend(base.layers.iter().map(|l| l.digest.clone()));
    }

    let uv_version = match uv_version {
        Some(v) => {
            cache.record_put(&format!("uv-version:{}", plan.uv_identity), &v)?;
            v
        }
        None => known_uv_version(&plan, &cache)?,
    };
    // The name as configured (a verify rebuild resolves by digest but records the name).
    let base_name = if req.base_digest.is_some() {
        base::parse_reference(&base_ref)?.whole()
    } else {
        base.reference.whole()
    };
    let annotations = provenance_annotations(
        &plan,
        &base_name,
        &base.manifest_digest,
        keys.epoch,
        &uv_version,
    )?;
    let new: Vec<NewLayer> = new_layers
        .iter()
        .map(|l| NewLayer {
            layer: l.layer.clone(),
            created_by: created_by(l.kind, &plan),
        })
        .collect();
    let image = image::assemble(&base, &new, &plan.handler_text, keys.epoch, &annotations)?;
    let mut referrers = Vec::new();
    if plan.settings.sbom == Some(true) {
        let mut dists = Vec::new();
        for l in new_layers.iter().filter(|l| l.kind != "app") {
            dists.extend(crate::sbom::distributions_in_layer(
                &cache.blob_path(&l.layer.digest)?,
            )?);
        }
        let project = &plan.project;
        let sbom = crate::sbom::generate(
            (&project.name, project.version.as_deref().unwrap_or("0")),
            &dists,
            &project.lock,
            keys.epoch,
        )?;
        output::status(&format!("Wrote SBOM ({} distributions)", dists.len()));
        referrers.push(crate::sbom::referrer(
            &sbom,
            &image.manifest_digest,
            image.manifest.len(),
            keys.epoch,
        )?);
    }
    sink::layout::write(&output_dir, &image, &cache, &with_blobs, &referrers)
        .with_context(|| format!("writing the image layout to {}", output_dir.display()))?;
    for l in &new_layers {
        timings.insert(l.kind.to_string(), l.millis);
    }
    timings.insert("total".into(), started.elapsed().as_millis() as u64);
    output::status(&format!(
        "Wrote image {} to {} in {}",
        output::short_digest(&image.manifest_digest),
        output_dir.display(),
        output::duration(started.elapsed())
    ));
    Ok(BuildSummary {
        digest: image.manifest_digest,
        output: output_dir,
        base: BaseSummary {
            name: base_name,
            digest: base.manifest_digest,
            resolved: base.top_digest,
        },
        python: python.to_string(),
        arch: arch.lambda_name().to_string(),
        handler: plan.handler_text,
        layers: new_layers,
        uv_version: Some(uv_version),
        bytecode_interpreter: plan.interpreter.map(|i| i.version),
        timings_ms: timings,
    })
}

/// uv's version without starting uv when it is known: from locating it (wrapper scripts),
/// or recorded by an earlier build with the same uv binary.
fn known_uv_version(plan: &Plan, cache: &Cache) -> Result<String> {
    if let Some(uv) = &plan.uv_known {
        return Ok(uv.version.clone());
    }
    let key = format!("uv-version:{}", plan.uv_identity);
    if let Some(v) = cache.record_get::<String>(&key) {
        return Ok(v);
    }
    let v = Uv::version_of(&plan.uv_path)?.version;
    cache.record_put(&key, &v)?;
    Ok(v)
}

/// `git` facts about the project, when it is in a repository: HEAD and the origin URL
/// with any `user:password@` removed (CI remotes often carry tokens). Outside a
/// repository no git process is started; inside, both queries run at once.
fn git_facts(dir: &Path) -> (Option<String>, Option<String>) {
    if !dir.ancestors().any(|d| d.join(".git").exists()) {
        return (None, None);
    }
    let spawn = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    };
    let finish = |child: Option<std::process::Child>| -> Option<String> {
        let out = child?.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let head = spawn(&["rev-parse", "HEAD"]);
    let origin = spawn(&["remote", "get-url", "origin"]);
    (finish(head), finish(origin).map(|u| strip_credentials(&u)))
}

/// The origin URL in one form whatever the clone used, without credentials or user:
/// `https://user:token@host/x.git`, `ssh://git@host/x` and `git@host:x.git` all become
/// `https://host/x`, so CI (https with a token) and a developer (ssh) record the same.
pub fn strip_credentials(url: &str) -> String {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (host.to_string(), path.to_string())
        }
        // scp-like `user@host:path`
        None => match url.split_once(':') {
            Some((authority, path)) if !authority.contains('/') => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                (host.to_string(), path.to_string())
            }
            _ => return url.to_string(),
        },
    };
    // An ssh port (`host:22`) means nothing for https.
    let host = host.split(':').next().unwrap_or(&host).to_string();
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    if path.is_empty() {
        format!("https://{host}")
    } else {
        format!("https://{host}/{path}")
    }
}

/// The settings that shape the image beyond the lock, as one digest: `verify` compares
/// it to tell "built with other settings" from "built from other sources".
pub fn settings_digest(plan: &Plan) -> String {
    let s = &plan.settings;
    json_key(&serde_json::json!({
        "include": s.include, "exclude": s.exclude, "arch": plan.target.arch.lambda_name(),
        "package": plan.project.package, "extras": plan.extras, "all_extras": plan.all_extras,
        "groups": plan.groups,
    }))
}

fn provenance_annotations(
    plan: &Plan,
    base_name: &str,
    base_digest: &str,
    epoch: u64,
    uv_version: &str,
) -> Result<BTreeMap<String, String>> {
    use provenance::*;
    let mut a = BTreeMap::new();
    a.insert(BASE_NAME.to_string(), base_name.to_string());
    a.insert(BASE_DIGEST.to_string(), base_digest.to_string());
    a.insert(CREATED.to_string(), image::rfc3339(epoch)?);
    a.insert(VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string());
    a.insert(LOCK.to_string(), sha_hex(&plan.project.lock));
    a.insert(HANDLER.to_string(), plan.handler_text.clone());
    a.insert(PYTHON.to_string(), plan.target.python.to_string());
    a.insert(UV.to_string(), uv_version.to_string());
    a.insert(
        BYTECODE.to_string(),
        plan.interpreter
            .as_ref()
            .map_or_else(|| "off".to_string(), |i| i.version.clone()),
    );
    a.insert(SETTINGS.to_string(), settings_digest(plan));
    let (revision, source) = git_facts(&plan.project.root);
    if let Some(r) = revision {
        a.insert(REVISION.to_string(), r);
    }
    if let Some(s) = source {
        a.insert(SOURCE.to_string(), s);
    }
    Ok(a)
}

fn created_by(kind: &str, plan: &Plan) -> String {
    let t = &plan.target;
    match kind {
        "deps" => format!(
            "ocilambda: uv pip install --target /{TASK_ROOT} --python-version {} --python-platform {} (third-party dependencies from uv.lock)",
            t.python,
            t.uv_platform()
        ),
        "workspace" => {
            format!("ocilambda: uv pip install --target /{TASK_ROOT} (workspace members)")
        }
        _ => format!(
            "ocilambda: COPY app sources to /{TASK_ROOT} (handler {})",
            plan.handler_text
        ),
    }
}

/// A cache key from JSON inputs: the SHA-256 of their canonical form.
pub fn json_key(value: &serde_json::Value) -> String {
    sha_hex(&image::canonical_json(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_source_urls() {
        for url in [
            "https://x-access-token:ghs_secret@github.com/org/repo.git",
            "https://github.com/org/repo",
            "git@github.com:org/repo.git",
            "ssh://git@github.com:22/org/repo.git",
        ] {
            assert_eq!(
                strip_credentials(url),
                "https://github.com/org/repo",
                "{url}"
            );
        }
        assert_eq!(strip_credentials("https://user@host"), "https://host");
    }
}
