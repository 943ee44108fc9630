//! `ocilambda build`: a staging plan → layers → image on a base → OCI layout.
//!
//! The command wiring only: [`crate::plan`] decides and stages the parts, this module
//! encodes them as tar+gzip layers (cached under the plan's keys plus the layer format and
//! timestamps), resolves the base while uv installs, and writes the image with its
//! provenance ([`crate::provenance`]) and, when asked, an SBOM referrer.

use crate::assemble::{self, NewLayer};
use crate::base::{self, Fetch};
use crate::cache::Cache;
use crate::config::Settings;
use crate::image::{Image, Referrer, Remote};
use crate::layers::{self, Layer};
use crate::output;
use crate::plan::{self, Encoder, Plan, Request};
use crate::provenance::json_key;
use crate::report::{Event, Reporter};
use crate::sink;
use crate::tree::Tree;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::config::DEFAULT_EPOCH;

/// The provenance annotation keys, for modules that still import them from here; new code
/// uses [`crate::provenance`] (reading an image should not import the build command).
pub use crate::oci::annotation as provenance;

/// Where the task root is in the image; every layer we add lives below it.
pub const TASK_ROOT: &str = "var/task";

/// How long a cached base tag resolution is trusted when no setting says.
const DEFAULT_BASE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub project_dir: PathBuf,
    /// Settings given on the command line (highest precedence).
    pub cli: Settings,
    /// Settings from the environment (`OCILAMBDA_*`), below the command line.
    pub env: Settings,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: PathBuf,
    pub output: Option<PathBuf>,
    pub complete: bool,
    pub pull: bool,
    pub offline: bool,
    pub insecure_registries: Vec<String>,
    /// An extra CA certificate (PEM) to trust for registries.
    pub ca_cert: Option<PathBuf>,
    /// Timestamps for the image: SOURCE_DATE_EPOCH, or what `verify` replays.
    pub epoch: u64,
    /// Build on this platform-manifest digest of the configured base while recording the
    /// base's name as configured (`verify` rebuilds on exactly the recorded base).
    pub base_digest: Option<String>,
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

/// The image side of the staging plan: parts become reproducible tar+gzip layers under
/// the task root, cached by key.
struct LayerEncoder<'a> {
    cache: &'a Cache,
    epoch: u64,
    reporter: &'a dyn Reporter,
}

impl LayerEncoder<'_> {
    fn write(&self, kind: &str, key: &str, tree: &Tree, started: Instant) -> Result<Layer> {
        let layer = layers::write(
            &tree.prefixed(TASK_ROOT),
            self.epoch,
            &self.cache.blob_dir(),
        )?;
        // The writer hashed the bytes it wrote: no need to hash them again on reuse.
        self.cache.mark_verified(&layer.digest);
        self.cache.layer_put(key, &layer)?;
        self.reporter.event(Event::Step(format!(
            "Built {kind} layer ({}, {} files) in {}",
            output::size(layer.size),
            output::count(layer.files),
            output::duration(started.elapsed())
        )));
        Ok(layer)
    }

    fn reused(&self, kind: &str, layer: Layer) -> Layer {
        self.reporter.event(Event::Step(format!(
            "Reused {kind} layer {} ({})",
            output::short_digest(&layer.digest),
            output::size(layer.size)
        )));
        layer
    }
}

impl Encoder for LayerEncoder<'_> {
    type Part = Layer;

    fn cached(&self, kind: &'static str, key: &str) -> Option<Layer> {
        Some(self.reused(kind, self.cache.layer_get(key)?))
    }

    fn encode(&self, kind: &'static str, key: &str, dir: &Path) -> Result<Layer> {
        let started = Instant::now();
        let mut tree = Tree::new();
        tree.add_dir_all(dir, "")?;
        self.write(kind, key, &tree, started)
    }

    fn reporter(&self) -> &dyn Reporter {
        self.reporter
    }

    fn pyc_root(&self) -> &str {
        "/var/task"
    }
}

/// The deps layer's key: what shapes the staged install, plus the layer format and the
/// timestamps written into it; the workspace key follows from it.
fn layer_keys(plan: &Plan, epoch: u64) -> Result<plan::PartKeys> {
    let mut deps_inputs = serde_json::Map::new();
    deps_inputs.insert("format".into(), layers::FORMAT_VERSION.into());
    deps_inputs.extend(plan.staging_inputs()?);
    deps_inputs.insert("epoch".into(), epoch.into());
    plan.part_keys("", format!("deps:{}", json_key(&deps_inputs.into())))
}

/// The app layer; unchanged app sources reuse theirs without starting the bytecode compiler.
fn app_layer(plan: &Plan, enc: &LayerEncoder, scratch: &Path) -> Result<LayerSummary> {
    let started = Instant::now();
    let key = format!(
        "app:{}",
        json_key(&serde_json::json!({
            "format": layers::FORMAT_VERSION,
            "sources": plan.app.content_key()?,
            "bytecode": plan.interpreter.as_ref().map(|i| &i.version),
            "python": plan.target.python.to_string(),
            "epoch": enc.epoch,
        }))
    );
    let (layer, reused) = match enc.cache.layer_get(&key) {
        Some(layer) => (enc.reused("app", layer), true),
        None => {
            let tree = plan::app_with_bytecode(plan, scratch, enc.pyc_root())?;
            (enc.write("app", &key, &tree, started)?, false)
        }
    };
    Ok(LayerSummary {
        kind: "app",
        layer,
        reused,
        millis: if reused {
            0
        } else {
            started.elapsed().as_millis() as u64
        },
    })
}

/// Stage and encode every layer of `plan`: (layers, uv version).
fn stage_layers(
    plan: &Plan,
    cache: &Cache,
    epoch: u64,
    reporter: &dyn Reporter,
) -> Result<(Vec<LayerSummary>, String)> {
    let keys = layer_keys(plan, epoch)?;
    let enc = LayerEncoder {
        cache,
        epoch,
        reporter,
    };
    let staging = cache.temp_dir("stage-")?;
    let scratch = staging.path().join("app-pyc");
    let parts = plan::stage_parts(plan, &keys, &enc, staging.path(), || {
        app_layer(plan, &enc, &scratch)
    })?;
    let summary = |s: plan::Staged<Layer>| LayerSummary {
        kind: s.kind,
        layer: s.part,
        reused: s.reused,
        millis: s.millis,
    };
    let mut out = vec![summary(parts.deps)];
    out.extend(parts.members.map(summary));
    out.push(parts.app);
    let uv_version = plan::uv_version(plan, cache, parts.uv.as_ref())?;
    Ok((out, uv_version))
}

/// The base as configured, and the reference to resolve (the recorded digest when
/// `verify` replays a build).
fn base_refs(plan: &Plan, req: &BuildRequest) -> Result<(String, String)> {
    let base_ref = plan
        .settings
        .base
        .clone()
        .unwrap_or_else(|| format!("public.ecr.aws/lambda/python:{}", plan.target.python));
    let resolve_ref = match &req.base_digest {
        Some(d) => {
            let r = base::parse_reference(&base_ref)?;
            format!("{}/{}@{d}", r.registry(), r.repository())
        }
        None => base_ref.clone(),
    };
    Ok((base_ref, resolve_ref))
}

/// What staging and base resolution produced together.
struct Staged {
    plan: Plan,
    base: base::Resolved,
    base_millis: u64,
    layers: Vec<LayerSummary>,
    uv_version: String,
}

/// Resolve the base over the network while uv installs: neither waits for the other.
async fn stage_on_base(
    plan: Plan,
    req: &BuildRequest,
    remote: &Remote,
    cache: &Cache,
    reporter: &Arc<dyn Reporter>,
) -> Result<Staged> {
    let (_, resolve_ref) = base_refs(&plan, req)?;
    let fetch = Fetch {
        pull: req.pull,
        offline: req.offline,
        tag_ttl: plan.settings.base_ttl.unwrap_or(DEFAULT_BASE_TTL),
    };
    let arch = plan.target.arch;
    let base_started = Instant::now();
    let base_future = base::resolve(remote, cache, &resolve_ref, arch, fetch);
    let stage_cache = cache.clone();
    let epoch = req.epoch;
    let stage_reporter = reporter.clone();
    let stage_future = tokio::task::spawn_blocking(move || {
        let result = stage_layers(&plan, &stage_cache, epoch, &*stage_reporter);
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
    let base = base?;
    // A base pinned by digest says nothing of its Python in its name: ask its files.
    if crate::project::version_from_base_tag(&resolve_ref).is_none()
        && let Some(v) = base::runtime_python(remote, cache, &base, req.offline).await?
        && v != plan.target.python
    {
        return Err(base::PythonMismatch {
            base: crate::registry::name::redact(&resolve_ref).into_owned(),
            base_python: v,
            target: plan.target.python,
        }
        .into());
    }
    let (layers, uv_version) = staged?;
    reporter.event(Event::Step(format!(
        "Resolved base {} to {} (linux/{}{})",
        base.reference.whole(),
        output::short_digest(&base.top_digest),
        arch.oci_name(),
        if base.from_cache { ", cached" } else { "" }
    )));
    if !base.pinned() {
        reporter.event(Event::UnpinnedBase {
            registry: base.reference.registry().to_string(),
            repository: base.reference.repository().to_string(),
            digest: base.top_digest.clone(),
        });
    }
    Ok(Staged {
        plan,
        base,
        base_millis: base_time.as_millis() as u64,
        layers,
        uv_version,
    })
}

/// The SBOM referrer of `image`, made from the distributions in the non-app layers.
fn sbom_referrer(
    s: &Staged,
    cache: &Cache,
    image: &Image,
    epoch: u64,
    reporter: &dyn Reporter,
) -> Result<Referrer> {
    let mut dists = Vec::new();
    for l in s.layers.iter().filter(|l| l.kind != "app") {
        dists.extend(crate::sbom::distributions_in_layer(
            &cache.blob_path(&l.layer.digest)?,
        )?);
    }
    let project = &s.plan.project;
    let sbom = crate::sbom::generate(
        (&project.name, project.version.as_deref().unwrap_or("0")),
        &dists,
        &project.lock,
        epoch,
    )?;
    reporter.event(Event::Step(format!(
        "Wrote SBOM ({} distributions)",
        dists.len()
    )));
    crate::sbom::referrer(
        &sbom,
        &image.manifest_digest,
        image.manifest_bytes.len(),
        epoch,
    )
}

/// The image on its base with provenance: (image, the base's name as recorded).
fn assemble(s: &Staged, req: &BuildRequest) -> Result<(Image, String)> {
    let plan = &s.plan;
    // The name as configured (a verify rebuild resolves by digest but records the name).
    let base_name = if req.base_digest.is_some() {
        base::parse_reference(&base_refs(plan, req)?.0)?.whole()
    } else {
        s.base.reference.whole()
    };
    let choices = plan.choices();
    let annotations = crate::provenance::annotations(&crate::provenance::Facts {
        base_name: &base_name,
        base_digest: &s.base.image.manifest_digest,
        epoch: req.epoch,
        uv_version: &s.uv_version,
        lock: &plan.project.lock,
        handler: &plan.handler_text,
        python: plan.target.python,
        arch: plan.target.arch,
        bytecode: plan.interpreter.as_ref().map(|i| i.version.as_str()),
        choices: &choices,
        project_root: &plan.project.root,
    })?;
    let new: Vec<NewLayer> = s
        .layers
        .iter()
        .map(|l| NewLayer {
            layer: l.layer.clone(),
            created_by: created_by(l.kind, plan),
        })
        .collect();
    let image = assemble::assemble(
        &s.base.image,
        &new,
        &plan.handler_text,
        req.epoch,
        &annotations,
    )?;
    Ok((image, base_name))
}

/// Build the image `req` describes and write it as an OCI layout.
pub async fn build(req: BuildRequest, reporter: Arc<dyn Reporter>) -> Result<BuildSummary> {
    let started = Instant::now();
    let cache = Cache::open(&req.cache_dir, reporter.clone())?;
    let plan = plan::prepare(
        &Request {
            project_dir: &req.project_dir,
            cli: &req.cli,
            env: &req.env,
            offline: req.offline,
            bytecode_by_default: true,
            reporter: &*reporter,
        },
        &cache,
    )?;
    let output_dir = req
        .output
        .clone()
        // <PROJECT_DIR>/.ocilambda/image as given (the workspace root with --package),
        // where push and invoke look by default.
        .unwrap_or_else(|| plan.project.root.join(".ocilambda").join("image"));
    // A base tag that names another Python fails before uv installs anything.
    base::check_tag_python(&base_refs(&plan, &req)?.0, plan.target.python)?;
    let remote = Remote::new(&req.insecure_registries).with_ca_cert(req.ca_cert.clone());
    // Made now, so a bad CA certificate fails before uv installs anything.
    remote.client()?;
    let staged = stage_on_base(plan, &req, &remote, &cache, &reporter).await?;

    let mut with_blobs: Vec<String> = staged
        .layers
        .iter()
        .map(|l| l.layer.digest.clone())
        .collect();
    if req.complete {
        let base = &staged.base;
        let fetched = base::fetch_layers(&remote, &cache, base, req.offline)
            .await
            .with_context(|| format!("fetching the layers of base {}", base.reference.whole()))?;
        if fetched > 0 {
            reporter.event(Event::Step(format!(
                "Fetched base layers ({})",
                output::size(fetched)
            )));
        }
        with_blobs.extend(base.image.layers().into_iter().map(|(_, digest, _)| digest));
    }
    let (image, base_name) = assemble(&staged, &req)?;
    if image.manifest_bytes.len() > assemble::MAX_MANIFEST_BYTES {
        reporter.event(Event::Warning(format!(
            "the image manifest is {} bytes, over the {} AWS recommends for Lambda (the base has {} layers)",
            image.manifest_bytes.len(),
            assemble::MAX_MANIFEST_BYTES,
            staged.base.image.layers().len()
        )));
    }
    let mut referrers = Vec::new();
    if staged.plan.settings.sbom == Some(true) {
        referrers.push(sbom_referrer(
            &staged, &cache, &image, req.epoch, &*reporter,
        )?);
    }
    sink::layout::write(&output_dir, &image, &cache, &with_blobs, &referrers)
        .with_context(|| format!("writing the image layout to {}", output_dir.display()))?;
    reporter.event(Event::Step(format!(
        "Wrote image {} to {} in {}",
        output::short_digest(&image.manifest_digest),
        output_dir.display(),
        output::duration(started.elapsed())
    )));
    Ok(summary(
        staged,
        image.manifest_digest,
        output_dir,
        base_name,
        started,
    ))
}

fn summary(
    s: Staged,
    digest: String,
    output: PathBuf,
    base_name: String,
    started: Instant,
) -> BuildSummary {
    let mut timings = BTreeMap::new();
    timings.insert("base".to_string(), s.base_millis);
    for l in &s.layers {
        timings.insert(l.kind.to_string(), l.millis);
    }
    timings.insert("total".into(), started.elapsed().as_millis() as u64);
    BuildSummary {
        digest,
        output,
        base: BaseSummary {
            name: base_name,
            digest: s.base.image.manifest_digest,
            resolved: s.base.top_digest,
        },
        python: s.plan.target.python.to_string(),
        arch: s.plan.target.arch.lambda_name().to_string(),
        handler: s.plan.handler_text,
        layers: s.layers,
        uv_version: Some(s.uv_version),
        bytecode_interpreter: s.plan.interpreter.map(|i| i.version),
        timings_ms: timings,
    }
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
