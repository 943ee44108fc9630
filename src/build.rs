//! `ocilambda build`: project → staged trees → layers → image → OCI layout.
//!
//! This module wires the steps together and decides what can be reused: the dependency
//! and workspace-member layers are cached under a key of everything that shapes them
//! (uv.lock, pyproject files, selection, target, uv binary, bytecode interpreter), so an
//! app-only edit starts no uv process and rebuilds only the app layer.

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
use crate::stage::{self, Interpreter, Selection, Uv};
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
}

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
            !matches!(
                n.as_ref(),
                ".git" | ".venv" | ".ocilambda" | "__pycache__" | "build" | "dist"
            ) && !n.ends_with(".egg-info")
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

struct Plan {
    project: Project,
    target: Target,
    handler_text: String,
    app: Tree,
    epoch: u64,
    uv_path: PathBuf,
    deps_key: String,
    members_key: Option<String>,
    interpreter: Option<Interpreter>,
    offline: bool,
}

/// The interpreter for bytecode, remembered per (uv binary, version) so the common path
/// starts no uv process; a remembered path that vanished is looked up again.
fn bytecode_interpreter(
    cache: &Cache,
    uv_path: &Path,
    uv_identity: &str,
    target: &Target,
) -> Result<Option<Interpreter>> {
    let key = format!("interpreter:{uv_identity}:{}", target.python);
    if let Some(found) = cache.record_get::<Interpreter>(&key)
        && found.path.is_file()
    {
        return Ok(Some(found));
    }
    let uv = Uv::version_of(uv_path)?;
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
    let found = Interpreter { path, version };
    cache.record_put(&key, &found)?;
    Ok(Some(found))
}

fn stage_and_write(
    plan: &Plan,
    cache: &Cache,
    sel: &Selection,
) -> Result<(Vec<LayerSummary>, Option<String>)> {
    let deps_cached = cache.layer_get(&plan.deps_key);
    let members_cached = plan.members_key.as_ref().map(|k| cache.layer_get(k));
    let need_uv = deps_cached.is_none() || matches!(members_cached, Some(None));
    let mut uv_version = None;
    let mut export = None;
    let uv = if need_uv {
        let uv = Uv::version_of(&plan.uv_path)?;
        output::status(&format!("Using uv {}", uv.version));
        let started = Instant::now();
        let e = stage::export(&uv, &plan.project, sel, plan.offline)?;
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
        uv_version = Some(uv.version.clone());
        export = Some(e);
        Some(uv)
    } else {
        None
    };
    let staging = cache.temp_dir("stage-")?;

    let build_staged = |kind: &'static str, key: &str, members: bool| -> Result<LayerSummary> {
        let started = Instant::now();
        let (uv, export) = (uv.as_ref().unwrap(), export.as_ref().unwrap());
        let dir = staging.path().join(kind);
        let requirements = if members {
            export.members.join("\n") + "\n"
        } else {
            export.third_party.clone()
        };
        let opts = stage::InstallOptions {
            packages: &export.packages,
            members,
            offline: plan.offline,
        };
        stage::install(uv, &plan.project, &plan.target, &requirements, &dir, &opts)
            .with_context(|| format!("installing the {kind} layer"))?;
        stage::fix_scripts(&dir, &plan.target)?;
        if let Some(interp) = &plan.interpreter {
            let files: Vec<(String, PathBuf)> = stage::python_files(&dir)?
                .into_iter()
                .map(|rel| {
                    let src = dir.join(&rel);
                    (rel, src)
                })
                .collect();
            stage::compile(
                &interp.path,
                &plan.target,
                &dir,
                &format!("/{TASK_ROOT}"),
                &files,
            )?;
        }
        let mut tree = Tree::new();
        tree.add_dir_all(&dir, "")?;
        let layer = layers::write(&tree.prefixed(TASK_ROOT), plan.epoch, &cache.blob_dir())?;
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
        let mut tree = plan.app.clone();
        if let Some(interp) = &plan.interpreter {
            let out = staging.path().join("app-pyc");
            std::fs::create_dir_all(&out)?;
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
            stage::compile(
                &interp.path,
                &plan.target,
                &out,
                &format!("/{TASK_ROOT}"),
                &files,
            )?;
            tree.add_dir_all(&out, "")?;
        }
        let layer = layers::write(&tree.prefixed(TASK_ROOT), plan.epoch, &cache.blob_dir())?;
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
            None => build_staged("deps", &plan.deps_key, false),
        });
        let members = s.spawn(|| -> Result<Option<LayerSummary>> {
            match (&plan.members_key, members_cached.clone()) {
                (Some(_), Some(Some(l))) => Ok(Some(reused("workspace", l))),
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
    let project = Project::load(&req.project_dir, req.package.as_deref())?;
    let settings = project
        .settings
        .clone()
        .overlaid_with(Settings::from_env()?)
        .overlaid_with(req.cli.clone());
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
    let base_ref = settings
        .base
        .clone()
        .unwrap_or_else(|| format!("public.ecr.aws/lambda/python:{python}"));
    let app = project.app_tree(
        &handler,
        settings.include.as_deref().unwrap_or_default(),
        settings.exclude.as_deref().unwrap_or_default(),
    )?;
    let epoch = source_date_epoch()?;
    let tag_ttl = parse_duration(settings.base_ttl.as_deref().unwrap_or("24h"))?;
    let output_dir = req
        .output
        .clone()
        .unwrap_or_else(|| project.dir.join(".ocilambda").join("image"));
    let cache = Cache::open()?;

    let (uv_path, uv_identity) = Uv::locate()?;
    let compile = settings.compile_bytecode;
    let interpreter = if compile == Some(false) {
        None
    } else {
        match bytecode_interpreter(&cache, &uv_path, &uv_identity, &target)? {
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

    let selection = json_key(&serde_json::json!({
        "package": req.package, "extras": req.extras, "all_extras": req.all_extras, "groups": req.groups,
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
    let deps_inputs = serde_json::json!({
        "format": layers::FORMAT_VERSION,
        "stage": stage::STAGE_VERSION,
        "lock": sha_hex(&project.lock),
        "pyprojects": pyprojects,
        "selection": selection,
        "python": python.to_string(),
        "platform": target.uv_platform(),
        "uv": uv_identity,
        "bytecode": interpreter.as_ref().map(|i| i.version.clone()),
        "epoch": epoch,
    });
    let deps_key = format!("deps:{}", json_key(&deps_inputs));
    let members_key = if project.members.is_empty() {
        None
    } else {
        let mut hashes = Vec::new();
        for m in &project.members {
            hashes.push((m.name.clone(), tree_hash(&m.dir)?));
        }
        Some(format!(
            "workspace:{}",
            json_key(&serde_json::json!({"deps": deps_key, "members": hashes}))
        ))
    };

    let plan = Plan {
        project,
        target,
        handler_text: handler_text.clone(),
        app,
        epoch,
        uv_path,
        deps_key,
        members_key,
        interpreter,
        offline: req.offline,
    };

    // The base is resolved over the network while uv installs: neither waits for the other.
    let client = Client::new(&req.insecure_registries, None)?;
    let fetch = Fetch {
        pull: req.pull,
        offline: req.offline,
        tag_ttl,
    };
    let base_started = Instant::now();
    let base_future = base::resolve(&client, &cache, &base_ref, arch, fetch);
    let stage_cache = cache.clone();
    let stage_future = tokio::task::spawn_blocking(move || {
        let sel = Selection {
            extras: &req.extras,
            groups: &req.groups,
            all_extras: req.all_extras,
        };
        let result = stage_and_write(&plan, &stage_cache, &sel);
        (plan, result)
    });
    let (base, staged) = tokio::join!(
        async {
            let b = base_future.await;
            (b, base_started.elapsed())
        },
        stage_future
    );
    let (plan, staged) = staged.context("the staging thread panicked")?;
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
    if !base.pinned {
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

    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.base.name".to_string(),
        base.reference.whole(),
    );
    annotations.insert(
        "org.opencontainers.image.base.digest".to_string(),
        base.manifest_digest.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        image::rfc3339(plan.epoch)?,
    );
    let new: Vec<NewLayer> = new_layers
        .iter()
        .map(|l| NewLayer {
            layer: l.layer.clone(),
            created_by: created_by(l.kind, &plan),
        })
        .collect();
    let image = image::assemble(&base, &new, &plan.handler_text, plan.epoch, &annotations)?;
    sink::layout::write(&output_dir, &image, &cache, &with_blobs)
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
            name: base.reference.whole(),
            digest: base.manifest_digest,
            resolved: base.top_digest,
        },
        python: python.to_string(),
        arch: arch.lambda_name().to_string(),
        handler: handler_text,
        layers: new_layers,
        uv_version,
        bytecode_interpreter: plan.interpreter.map(|i| i.version),
        timings_ms: timings,
    })
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

fn json_key(value: &serde_json::Value) -> String {
    sha_hex(&image::canonical_json(value))
}
