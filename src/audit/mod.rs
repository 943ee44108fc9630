//! Audits of built images: `inspect`, `diff`, `lint` (and `verify`, which rebuilds and
//! diffs). They read images through [`crate::source`] (an OCI layout or a registry
//! reference) and layer contents through [`crate::layer`], streaming the tars without unpacking
//! them to disk. They return what they found; the command layer renders it.

use crate::cache::Cache;
use crate::report::Reporter;
use crate::source::{self, Remote};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

pub mod diff;
pub mod inspect;
pub mod lint;
pub mod verify;

/// How the audits reach registries: hosts allowed over plain HTTP and an extra CA.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access<'a> {
    pub insecure: &'a [String],
    pub ca_cert: Option<&'a Path>,
}

fn session(access: Access, reporter: Arc<dyn Reporter>) -> Result<(Remote, Cache)> {
    let remote = Remote::new(access.insecure).with_ca_cert(access.ca_cert.map(Into::into));
    Ok((remote, Cache::open(reporter)?))
}

/// What `image` is, layer by layer (with each layer's paths when `with_files`).
pub async fn inspect_image(
    image: &str,
    with_files: bool,
    access: Access<'_>,
    reporter: Arc<dyn Reporter>,
) -> Result<inspect::Inspection> {
    let (remote, cache) = session(access, reporter)?;
    let opened = source::open(image, &remote, &cache).await?.image()?;
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
    let ia = source::open(a, &remote, &cache).await?.image()?;
    let ib = source::open(b, &remote, &cache).await?.image()?;
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
    let opened = source::open(image, &remote, &cache).await?;
    let findings = lint::lint(opened, &remote, &cache).await?;
    let ok = !findings.iter().any(|f| f.severity == lint::Severity::Error);
    Ok(LintReport { ok, findings })
}
