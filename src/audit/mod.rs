//! Audits of built images: `inspect`, `diff`, `lint` (and `verify`, which rebuilds and
//! diffs). They read images through [`crate::image`] (an OCI layout or a registry
//! reference) and layer contents through [`crate::layer`], streaming the tars without unpacking
//! them to disk. They return what they found; the command layer renders it.

use crate::cache::Cache;
use crate::image::{self, Remote};
use crate::report::Reporter;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

pub mod diff;
pub mod inspect;
pub mod lint;
pub mod verify;

/// How the audits reach registries: hosts allowed over plain HTTP and an extra CA.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub insecure: &'a [String],
    pub ca_cert: Option<&'a Path>,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: &'a Path,
}

fn session(access: Access, reporter: Arc<dyn Reporter>) -> Result<(Remote, Cache)> {
    let remote = Remote::new(access.insecure).with_ca_cert(access.ca_cert.map(Into::into));
    Ok((remote, Cache::open(access.cache_dir, reporter)?))
}

/// What `image` is, layer by layer (with each layer's paths when `with_files`).
pub async fn inspect_image(
    image: &str,
    with_files: bool,
    access: Access<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<inspect::Inspection> {
    let (remote, cache) = session(access, reporter)?;
    let opened = image::open(image, &remote, &cache).await?.image()?;
    inspect::inspect(&opened, with_files, &remote, &cache).await
}

/// Two images compared: their digests and what differs (nothing: identical).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub identical: bool,
    pub a: String,
    pub b: String,
    pub differences: Vec<diff::Difference>,
}

pub async fn diff_images(
    a: &str,
    b: &str,
    access: Access<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<Comparison> {
    let (remote, cache) = session(access, reporter)?;
    let ia = image::open(a, &remote, &cache).await?.image()?;
    let ib = image::open(b, &remote, &cache).await?.image()?;
    ia.check_layout_blobs()?;
    ib.check_layout_blobs()?;
    let differences = diff::diff(&ia, &ib, &remote, &cache).await?;
    Ok(Comparison {
        identical: differences.is_empty(),
        a: ia.manifest_digest,
        b: ib.manifest_digest,
        differences,
    })
}

/// Lint's findings; `ok` is false when one is an error (warnings do not fail the check:
/// errors are what Lambda refuses).
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    pub ok: bool,
    pub findings: Vec<lint::Finding>,
}

pub async fn lint_image(
    image: &str,
    access: Access<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<LintReport> {
    let (remote, cache) = session(access, reporter)?;
    let opened = image::open(image, &remote, &cache).await?;
    let findings = lint::lint(opened, &remote, &cache).await?;
    let ok = !findings.iter().any(|f| f.severity == lint::Severity::Error);
    Ok(LintReport { ok, findings })
}

/// The image `push` is about to upload has lint errors: what Lambda would refuse.
#[derive(Debug, Clone)]
pub struct LintRefused {
    pub image: String,
    pub errors: Vec<lint::Finding>,
}

impl std::fmt::Display for LintRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "not pushing {}: lint found {n} error{} Lambda would refuse: ",
            self.image,
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.errors.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}[{}] {}", e.check, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for LintRefused {}

/// Lint's error-level checks on the layout `push` is about to upload, before any byte
/// leaves: a [`LintRefused`] error when one fails. Reads the layers the image adds to its
/// base (on this machine: nothing is downloaded to check), not the base's own: those are
/// as their publisher made them, and `lint IMAGE` reads them.
pub async fn lint_before_push(
    layout: &Path,
    access: Access<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<()> {
    use crate::sink::registry::{Kind, blobs, read_layout};
    let (remote, cache) = session(access, reporter)?;
    // The layout as push reads it (with push's errors when there is none), and push's
    // word on which layers are the image's own.
    let pushing = read_layout(layout)?;
    let own = blobs(&pushing, &cache)?
        .into_iter()
        .filter(|b| b.kind == Kind::Layer)
        .map(|b| b.digest)
        .collect();
    let opened = image::Opened::Image(Box::new(pushing));
    let errors: Vec<lint::Finding> =
        lint::lint_reaching(opened, &remote, &cache, lint::Reach::Only(own))
            .await?
            .into_iter()
            .filter(|f| f.severity == lint::Severity::Error)
            .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(LintRefused {
        image: layout.display().to_string(),
        errors,
    }
    .into())
}
