//! Audits of built images: `inspect`, `diff`, `lint` (and `verify`, which rebuilds and
//! diffs). They read images through [`crate::source`] (an OCI layout or a registry
//! reference) and layer contents through [`crate::layer`], streaming the tars without unpacking
//! them to disk.

use crate::cache::Cache;
use crate::source::{self, Remote};
use anyhow::Result;
use std::path::Path;

pub mod diff;
pub mod inspect;
pub mod lint;
pub mod verify;

/// What an audit command prints on stdout, and whether its verdict is positive (exit 0)
/// or negative (exit 1: images differ, lint errors).
pub struct Report {
    pub stdout: String,
    pub ok: bool,
}

/// How the audits reach registries: hosts allowed over plain HTTP and an extra CA.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access<'a> {
    pub insecure: &'a [String],
    pub ca_cert: Option<&'a Path>,
}

fn session(access: Access) -> Result<(Remote, Cache)> {
    let remote = Remote::new(access.insecure).with_ca_cert(access.ca_cert.map(Into::into));
    Ok((remote, Cache::open()?))
}

pub async fn inspect_command(
    image: &str,
    with_files: bool,
    json: bool,
    access: Access<'_>,
) -> Result<Report> {
    let (remote, cache) = session(access)?;
    let opened = source::open(image, &remote, &cache).await?.image()?;
    let inspection = inspect::inspect(&opened, with_files, &remote, &cache).await?;
    let stdout = if json {
        serde_json::to_string(&inspection)? + "\n"
    } else {
        inspect::render(&inspection)
    };
    Ok(Report { stdout, ok: true })
}

pub async fn diff_command(a: &str, b: &str, json: bool, access: Access<'_>) -> Result<Report> {
    let (remote, cache) = session(access)?;
    let ia = source::open(a, &remote, &cache).await?.image()?;
    let ib = source::open(b, &remote, &cache).await?.image()?;
    ia.check_layout_blobs()?;
    ib.check_layout_blobs()?;
    let diffs = diff::diff(&ia, &ib, &remote, &cache).await?;
    let stdout = if json {
        serde_json::to_string(&serde_json::json!({
            "identical": diffs.is_empty(),
            "a": ia.manifest_digest,
            "b": ib.manifest_digest,
            "differences": diffs,
        }))? + "\n"
    } else if diffs.is_empty() {
        format!("identical {}\n", ia.manifest_digest)
    } else {
        diff::table(&diffs)
    };
    Ok(Report {
        stdout,
        ok: diffs.is_empty(),
    })
}

pub async fn lint_command(image: &str, json: bool, access: Access<'_>) -> Result<Report> {
    let (remote, cache) = session(access)?;
    let opened = source::open(image, &remote, &cache).await?;
    let findings = lint::lint(opened, &remote, &cache).await?;
    let errors = findings.iter().any(|f| f.severity == lint::Severity::Error);
    let stdout = if json {
        serde_json::to_string(&serde_json::json!({"ok": !errors, "findings": findings}))? + "\n"
    } else if findings.is_empty() {
        "ok: no findings\n".to_string()
    } else {
        findings
            .iter()
            .map(|f| {
                let sev = match f.severity {
                    lint::Severity::Error => "error",
                    lint::Severity::Warning => "warning",
                };
                format!("{sev}[{}]: {}\n  fix: {}\n", f.check, f.message, f.fix)
            })
            .collect()
    };
    // Warnings are printed but do not fail the check; errors are what Lambda refuses.
    Ok(Report {
        stdout,
        ok: !errors,
    })
}
