//! `ocilambda zip`: project → staged trees → deterministic zip archives for Lambda, either
//! one function package (dependencies at the root, then the app) or, with `--layer`, a
//! layer (dependencies under `python/lib/python3.X/site-packages`) and an app-only zip.
//!
//! Settings, target, uv staging and bytecode are the staging plan's ([`crate::plan`]);
//! this module is its zip side: it decides where things go inside each zip, caches the
//! dependency zips under a key of everything that shapes them (so an app-only edit starts
//! no uv process and compresses only the app), and checks Lambda's size limits before
//! writing anything.

use crate::cache::Cache;
use crate::config::Settings;
use crate::output;
use crate::plan::{self, Encoder, Plan, Request};
use crate::provenance::json_key;
use crate::report::{Event, Reporter};
use crate::sink::zip::{self as zipsink, Entries, Part, Written};
use crate::stage::{self, Distribution};
use crate::tree::{self, Tree};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Lambda's limit on a function's unzipped code, layers included (250 MiB).
pub const UNZIPPED_LIMIT: u64 = 262_144_000;

/// Above this a zip cannot be sent in the API request itself and must go through S3.
pub const DIRECT_UPLOAD_LIMIT: u64 = 50 * 1024 * 1024;

/// Where Lambda unpacks a function's zip; app and function-package bytecode embed it.
const TASK_ROOT: &str = "/var/task";

/// How many distributions the size-budget error names.
const LARGEST_SHOWN: usize = 10;

#[derive(Debug, Clone, Default)]
pub struct ZipRequest {
    pub project_dir: PathBuf,
    /// Settings given on the command line (highest precedence).
    pub cli: Settings,
    /// The zip file; with `layer`, the directory for both zips.
    pub output: Option<PathBuf>,
    pub layer: bool,
    /// Settings from the environment (`OCILAMBDA_*`), below the command line.
    pub env: Settings,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: PathBuf,
    pub offline: bool,
}

/// One written zip, with what Lambda and CI compare.
#[derive(Debug, Clone, Serialize)]
pub struct ZipOutput {
    /// `package`, `layer` or `app`.
    pub kind: &'static str,
    pub path: PathBuf,
    pub size: u64,
    pub unzipped_size: u64,
    pub files: u64,
    /// base64 of the SHA-256 of the file: the value Lambda reports as `CodeSha256`.
    pub code_sha256: String,
    /// The same hash as `sha256:<hex>`.
    pub digest: String,
}

/// A staged part (third-party dependencies or workspace members) and how it was had.
#[derive(Debug, Clone, Serialize)]
pub struct PartSummary {
    pub kind: &'static str,
    pub unzipped_size: u64,
    pub files: u64,
    pub reused: bool,
    pub millis: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ZipSummary {
    pub zips: Vec<ZipOutput>,
    pub python: String,
    pub arch: String,
    pub handler: String,
    /// Everything the function unpacks to, layer included, next to Lambda's limit.
    pub unzipped_total: u64,
    pub unzipped_limit: u64,
    pub parts: Vec<PartSummary>,
    pub uv_version: Option<String>,
    pub bytecode_interpreter: Option<String>,
    pub timings_ms: BTreeMap<String, u64>,
}

/// A dependency zip in the cache: its blob plus what the size check needs, so a reused
/// part is never unpacked or walked again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedZip {
    written: Written,
    distributions: Vec<Distribution>,
}

/// Where the dependencies go inside their zip, and the path their bytecode embeds.
struct DepsLayout {
    /// Path prefix inside the zip ("" for the function package).
    prefix: String,
    /// Where Lambda will see the files.
    pyc_root: String,
    /// Console scripts (`bin/`) are left out of a layer, as in uv's AWS Lambda guide, which
    /// zips only `lib/`: nothing on Lambda runs them, and `bin/` is not on any path there.
    skip_bin: bool,
}

impl DepsLayout {
    fn new(layer: bool, python: crate::target::PyVersion) -> DepsLayout {
        if layer {
            let prefix = format!("python/lib/python{python}/site-packages");
            DepsLayout {
                pyc_root: format!("/opt/{prefix}"),
                prefix,
                skip_bin: true,
            }
        } else {
            DepsLayout {
                prefix: String::new(),
                pyc_root: TASK_ROOT.to_string(),
                skip_bin: false,
            }
        }
    }
}

/// A part of the package after staging: reused from the cache, or freshly staged and not
/// yet written anywhere (so the size check can still refuse it).
enum Staged {
    Reused(CachedZip),
    Fresh {
        entries: Entries,
        distributions: Vec<Distribution>,
    },
}

impl Staged {
    fn unzipped_size(&self) -> u64 {
        match self {
            Staged::Reused(c) => c.written.unzipped_size,
            Staged::Fresh { entries, .. } => entries.unzipped_size(),
        }
    }

    fn files(&self) -> u64 {
        match self {
            Staged::Reused(c) => c.written.files,
            Staged::Fresh { entries, .. } => entries.files(),
        }
    }

    fn distributions(&self) -> &[Distribution] {
        match self {
            Staged::Reused(c) => &c.distributions,
            Staged::Fresh { distributions, .. } => distributions,
        }
    }
}

fn cached(cache: &Cache, key: &str) -> Option<CachedZip> {
    let found: CachedZip = cache.record_get(key)?;
    cache.has_blob(&found.written.digest).then_some(found)
}

/// The staged directory as a tree under `layout.prefix`.
fn staged_tree(dir: &Path, layout: &DepsLayout) -> Result<Tree> {
    let mut tree = Tree::new();
    tree.add_dir(&layout.prefix);
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name
            .to_str()
            .with_context(|| format!("file name `{}` is not UTF-8", entry.path().display()))?;
        if layout.skip_bin && name == "bin" {
            continue;
        }
        let dest = tree::join(&layout.prefix, name);
        if entry.file_type()?.is_dir() {
            tree.add_dir_all(&entry.path(), &dest)?;
        } else {
            tree.add_path(&entry.path(), &dest)?;
        }
    }
    Ok(tree)
}

/// Why a zip cannot be written; the command layer words the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipError {
    /// With layer zips, the output must be a directory.
    OutputIsFile(PathBuf),
    /// Without, it must be a file.
    OutputIsDirectory(PathBuf),
    /// Over Lambda's unzipped limit: what is too large, and the sizes, already worded.
    TooLarge(String),
}

impl std::fmt::Display for ZipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZipError::OutputIsFile(p) => write!(
                f,
                "the output {} is a file, not a directory for the layer and app zips",
                p.display()
            ),
            ZipError::OutputIsDirectory(p) => {
                write!(f, "the output {} is a directory", p.display())
            }
            ZipError::TooLarge(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ZipError {}

/// Refuse a package Lambda would refuse, naming what makes it large.
fn check_budget(total: u64, mut largest: Vec<Distribution>, layer: bool) -> Result<()> {
    if total <= UNZIPPED_LIMIT {
        return Ok(());
    }
    largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let shown: Vec<String> = largest
        .iter()
        .take(LARGEST_SHOWN)
        .map(|d| format!("{} ({})", d.name, output::size(d.bytes)))
        .collect();
    bail!(ZipError::TooLarge(format!(
        "the {} unzips to {} ({} bytes), over Lambda's limit of 250 MiB ({} bytes) for zip deployments, layers included; largest: {}",
        if layer {
            "function with its layer"
        } else {
            "function package"
        },
        output::size(total),
        output::count(total),
        output::count(UNZIPPED_LIMIT),
        shown.join(", ")
    )));
}

fn describe(w: &Written) -> Result<String> {
    Ok(format!(
        "{}, {} unzipped, {} files; CodeSha256 {}",
        output::size(w.size),
        output::size(w.unzipped_size),
        output::count(w.files),
        w.code_sha256()?
    ))
}

/// The zips this request writes: (kind, path).
fn output_paths(req: &ZipRequest, project_dir: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let default_dir = project_dir.join(".ocilambda");
    if req.layer {
        let dir = req.output.clone().unwrap_or(default_dir);
        if dir.is_file() {
            bail!(ZipError::OutputIsFile(dir));
        }
        Ok(vec![
            ("layer", dir.join("layer_content.zip")),
            ("app", dir.join("app.zip")),
        ])
    } else {
        let file = req
            .output
            .clone()
            .unwrap_or_else(|| default_dir.join("package.zip"));
        if file.is_dir() {
            bail!(ZipError::OutputIsDirectory(file));
        }
        Ok(vec![("package", file)])
    }
}

/// The zip side of the staging plan: parts become zip entries under `layout`, kept in
/// memory until the size check passes (a reused part is a cached zip already).
struct ZipEncoder<'a> {
    cache: &'a Cache,
    plan: &'a Plan,
    layout: &'a DepsLayout,
    reporter: &'a dyn Reporter,
}

impl Encoder for ZipEncoder<'_> {
    type Part = Staged;

    fn cached(&self, _kind: &'static str, key: &str) -> Option<Staged> {
        cached(self.cache, key).map(Staged::Reused)
    }

    fn encode(&self, kind: &'static str, _key: &str, dir: &Path) -> Result<Staged> {
        let started = Instant::now();
        let distributions = stage::distribution_sizes(dir, &self.plan.target)?;
        let tree = staged_tree(dir, self.layout)?;
        let entries = Entries::from_parts(&[Part::Tree(&tree)])?;
        self.reporter.event(Event::Step(format!(
            "Staged {kind} ({}, {} files) in {}",
            output::size(entries.unzipped_size()),
            output::count(entries.files()),
            output::duration(started.elapsed())
        )));
        Ok(Staged::Fresh {
            entries,
            distributions,
        })
    }

    fn pyc_root(&self) -> &str {
        &self.layout.pyc_root
    }

    fn reporter(&self) -> &dyn Reporter {
        self.reporter
    }
}

/// Refuse outputs that would land in the app sources or replace a file zip did not write.
fn check_outputs(plan: &Plan, outputs: &[(&'static str, PathBuf)]) -> Result<()> {
    for (_, path) in outputs {
        if plan.app_sources.would_ship(path) {
            return Err(zipsink::OutputError::InAppSources(path.clone()).into());
        }
        zipsink::check_replaceable(path)?;
    }
    Ok(())
}

/// The budget check over every part and the app: total unzipped size.
fn check_parts(parts: &[plan::Staged<Staged>], app: &Tree, layer: bool) -> Result<u64> {
    let app_size = Entries::from_parts(&[Part::Tree(app)])?.unzipped_size();
    let total = parts.iter().map(|p| p.part.unzipped_size()).sum::<u64>() + app_size;
    let mut largest: Vec<Distribution> = parts
        .iter()
        .flat_map(|p| p.part.distributions().iter().cloned())
        .collect();
    largest.push(Distribution {
        name: "app code".into(),
        bytes: app_size,
    });
    check_budget(total, largest, layer)?;
    Ok(total)
}

pub fn zip(req: ZipRequest, reporter: Arc<dyn Reporter>) -> Result<ZipSummary> {
    let started = Instant::now();
    let mut timings = BTreeMap::new();
    let cache = Cache::open(&req.cache_dir, reporter.clone())?;
    let plan = plan::prepare(
        &Request {
            project_dir: &req.project_dir,
            cli: &req.cli,
            env: &req.env,
            offline: req.offline,
            bytecode_by_default: false,
            reporter: &*reporter,
        },
        &cache,
    )?;
    // <PROJECT_DIR>/.ocilambda as given (the workspace root with --package), where the
    // other commands look by default.
    let outputs = output_paths(&req, &plan.project.root)?;
    check_outputs(&plan, &outputs)?;
    let layout = DepsLayout::new(req.layer, plan.target.python);
    let keys = part_keys(&plan, &layout)?;
    let staging = cache.temp_dir("zip-")?;
    let encoder = ZipEncoder {
        cache: &cache,
        plan: &plan,
        layout: &layout,
        reporter: &*reporter,
    };
    let scratch = staging.path().join("app-pyc");
    let staged = plan::stage_parts(&plan, &keys, &encoder, staging.path(), || {
        let app_started = Instant::now();
        let app = plan::app_with_bytecode(&plan, &scratch, TASK_ROOT)?;
        Ok((app, app_started.elapsed().as_millis() as u64))
    })?;
    let (app, app_millis) = staged.app;
    timings.insert("app".into(), app_millis);
    let mut parts = vec![staged.deps];
    parts.extend(staged.members);

    // The size check comes before any zip is written, the cache's included: a package
    // Lambda refuses is not worth compressing.
    let total = check_parts(&parts, &app, req.layer)?;

    let (part_summaries, part_zips) = store_parts(&cache, parts, &mut timings, &*reporter)?;

    let write_started = Instant::now();
    let zips = write_outputs(&outputs, &part_zips, &app, &*reporter)?;
    timings.insert("write".into(), write_started.elapsed().as_millis() as u64);
    timings.insert("total".into(), started.elapsed().as_millis() as u64);
    reporter.event(Event::Step(format!(
        "Zipped for Python {} on {} in {} ({} of Lambda's 250 MiB unzipped)",
        plan.target.python,
        plan.target.arch.lambda_name(),
        output::duration(started.elapsed()),
        output::size(total)
    )));
    Ok(ZipSummary {
        zips,
        python: plan.target.python.to_string(),
        arch: plan.target.arch.lambda_name().to_string(),
        handler: plan.handler_text,
        unzipped_total: total,
        unzipped_limit: UNZIPPED_LIMIT,
        parts: part_summaries,
        uv_version: staged.uv.map(|uv| uv.version),
        bytecode_interpreter: plan.interpreter.map(|i| i.version),
        timings_ms: timings,
    })
}

/// Store each staged part's zip in the cache (a no-op for a part reused from it): their
/// summaries and the cached zip files, in the order given.
fn store_parts(
    cache: &Cache,
    parts: Vec<plan::Staged<Staged>>,
    timings: &mut BTreeMap<String, u64>,
    reporter: &dyn Reporter,
) -> Result<(Vec<PartSummary>, Vec<PathBuf>)> {
    let mut summaries = Vec::new();
    let mut zips = Vec::new();
    for p in parts {
        summaries.push(PartSummary {
            kind: p.kind,
            unzipped_size: p.part.unzipped_size(),
            files: p.part.files(),
            reused: p.reused,
            millis: p.millis,
        });
        let written = store(cache, p.kind, p.part, &p.key, reporter)?;
        zips.push(cache.blob_path(&written.digest)?);
        timings.insert(p.kind.to_string(), p.millis);
    }
    Ok((summaries, zips))
}

/// Cache keys of the dependency zip and, with local packages, the members zip: the
/// staging inputs plus everything that shapes the zip bytes.
fn part_keys(plan: &Plan, layout: &DepsLayout) -> Result<plan::PartKeys> {
    let mut inputs = plan.staging_inputs()?;
    inputs.insert("zip".into(), zipsink::FORMAT_VERSION.into());
    inputs.insert("prefix".into(), layout.prefix.clone().into());
    inputs.insert("pyc_root".into(), layout.pyc_root.clone().into());
    inputs.insert("skip_bin".into(), layout.skip_bin.into());
    plan.part_keys("zip-", format!("zip-deps:{}", json_key(&inputs.into())))
}

/// Compress a freshly staged part into the cache (a reused one is there already).
fn store(
    cache: &Cache,
    kind: &str,
    staged: Staged,
    key: &str,
    reporter: &dyn Reporter,
) -> Result<Written> {
    match staged {
        Staged::Reused(c) => {
            reporter.event(Event::Step(format!(
                "Reused {kind} zip {} ({})",
                output::short_digest(&c.written.digest),
                output::size(c.written.size)
            )));
            Ok(c.written)
        }
        Staged::Fresh {
            entries,
            distributions,
        } => {
            let started = Instant::now();
            let written = entries.write_to_blobs(&cache.blob_dir())?;
            cache.mark_verified(&written.digest);
            let record = CachedZip {
                written: written.clone(),
                distributions,
            };
            cache.record_put(key, &record)?;
            reporter.event(Event::Step(format!(
                "Compressed {kind} ({} zipped) in {}",
                output::size(written.size),
                output::duration(started.elapsed())
            )));
            Ok(written)
        }
    }
}

/// Write each requested zip from the cached part zips (copied entry by entry, without
/// recompressing) and the app (compressed here).
fn write_outputs(
    outputs: &[(&'static str, PathBuf)],
    part_zips: &[PathBuf],
    app: &Tree,
    reporter: &dyn Reporter,
) -> Result<Vec<ZipOutput>> {
    let mut pending = Vec::new();
    for (kind, path) in outputs {
        let mut sources: Vec<Part> = Vec::new();
        if *kind != "app" {
            sources.extend(part_zips.iter().map(|p| Part::Zip(p)));
        }
        if *kind != "layer" {
            sources.push(Part::Tree(app));
        }
        let entries = Entries::from_parts(&sources)?;
        pending.push((*kind, entries.write_pending(path)?));
    }
    // All zips are written before any is renamed into place, so a failure while writing
    // leaves the previous pair; only a failing rename (rare: same directory) could leave a
    // new layer zip next to an old app zip.
    let mut zips = Vec::new();
    for (kind, p) in pending {
        let path = p.dest().to_path_buf();
        let written = p.persist()?;
        reporter.event(Event::Step(format!(
            "Wrote {} ({})",
            path.display(),
            describe(&written)?
        )));
        if written.size > DIRECT_UPLOAD_LIMIT {
            reporter.event(Event::OverDirectUpload {
                path: path.clone(),
                size: written.size,
            });
        }
        zips.push(ZipOutput {
            kind,
            path,
            size: written.size,
            unzipped_size: written.unzipped_size,
            files: written.files,
            code_sha256: written.code_sha256()?,
            digest: written.digest,
        });
    }
    Ok(zips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_error_names_the_largest_distributions_and_suggests_an_image() {
        check_budget(UNZIPPED_LIMIT, Vec::new(), false).unwrap();
        let dists: Vec<Distribution> = (0..12)
            .map(|i| Distribution {
                name: format!("d{i} 1.0"),
                bytes: i * 1024 * 1024,
            })
            .collect();
        let err = check_budget(UNZIPPED_LIMIT + 1, dists, true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("262,144,001 bytes"), "{text}");
        assert!(
            text.contains("d11 1.0 (11.0 MiB), d10 1.0 (10.0 MiB)"),
            "{text}"
        );
        assert!(text.contains("d2 1.0"), "{text}");
        assert!(!text.contains("d1 1.0"), "ten shown: {text}");
        assert!(!text.contains('\n'));
        assert!(
            crate::diagnostics::hint(&err)
                .unwrap()
                .contains("ocilambda build")
        );
    }

    #[test]
    fn layer_puts_dependencies_under_site_packages_without_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("pkg/__init__.py"), b"").unwrap();
        std::fs::write(dir.path().join("bin/tool"), b"#!/var/lang/bin/python3.12").unwrap();
        let layout = DepsLayout::new(true, "3.12".parse().unwrap());
        assert_eq!(layout.pyc_root, "/opt/python/lib/python3.12/site-packages");
        let tree = staged_tree(dir.path(), &layout).unwrap();
        let paths: Vec<&str> = tree.entries().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "python",
                "python/lib",
                "python/lib/python3.12",
                "python/lib/python3.12/site-packages",
                "python/lib/python3.12/site-packages/pkg",
                "python/lib/python3.12/site-packages/pkg/__init__.py",
            ]
        );
        let layout = DepsLayout::new(false, "3.12".parse().unwrap());
        let tree = staged_tree(dir.path(), &layout).unwrap();
        assert!(tree.get("bin/tool").is_some());
        assert!(tree.get("pkg/__init__.py").is_some());
    }
}
