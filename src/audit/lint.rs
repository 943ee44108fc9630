//! `ocilambda lint`: what makes Lambda reject an image or start it slowly, each finding
//! with a severity and a one-line fix. Reads every layer (base layers included, fetched
//! when needed) into a merged view of the filesystem, honouring whiteouts.

use super::files::{self, FileInfo, Kind};
use crate::cache::Cache;

use crate::source::{Image, Index, Opened, Remote};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// Lambda's limits for container images.
const MAX_UNCOMPRESSED: u64 = 10 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: &'static str,
    pub message: String,
    pub fix: String,
}

/// The .pyc magic number (first two bytes, little endian) of each Lambda Python version
/// we could check against a real interpreter; 3.14's is not verified here, so for 3.14
/// only the cache tag is checked.
fn pyc_magic(minor: u32) -> Option<u16> {
    match minor {
        10 => Some(3439),
        11 => Some(3495),
        12 => Some(3531),
        13 => Some(3571),
        _ => None,
    }
}

fn finding(severity: Severity, check: &'static str, message: String, fix: &str) -> Finding {
    Finding {
        severity,
        check,
        message,
        fix: fix.to_string(),
    }
}

/// The image's Python minor version: the interpreter in /var/lang/bin, else the most
/// common cache tag of the .pyc under /var/task.
fn python_minor(view: &BTreeMap<String, FileInfo>) -> Option<u32> {
    let from_bin = view
        .keys()
        .filter_map(|p| p.strip_prefix("var/lang/bin/python3."))
        .find_map(|v| v.parse().ok());
    from_bin.or_else(|| {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for p in view.keys().filter(|p| p.starts_with("var/task/")) {
            if let Some(tag) = p.split(".cpython-3").nth(1)
                && let Some(minor) = tag.split('.').next().and_then(|m| m.parse().ok())
            {
                *counts.entry(minor).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(m, _)| m)
    })
}

pub async fn lint(opened: Opened, remote: &Remote, cache: &Cache) -> Result<Vec<Finding>> {
    let image: Image = match opened {
        Opened::Index(Index { label, .. }) => {
            return Ok(vec![finding(
                Severity::Error,
                "single-platform",
                format!(
                    "{label} is an image index; Lambda accepts only a single-platform image manifest"
                ),
                "push one platform's manifest (ocilambda build/push never write an index; disable provenance attestations in docker buildx)",
            )]);
        }
        Opened::Image(i) => *i,
    };
    let mut out = Vec::new();
    let mt = image.manifest["mediaType"].as_str().unwrap_or("");
    if !crate::oci::media::is_image_manifest(mt) {
        out.push(finding(
            Severity::Error,
            "media-types",
            format!("manifest media type `{mt}` is not supported by Lambda"),
            "use an OCI or Docker v2 schema 2 image manifest",
        ));
    }
    let config_mt = image.manifest["config"]["mediaType"].as_str().unwrap_or("");
    if config_mt != "application/vnd.oci.image.config.v1+json"
        && config_mt != "application/vnd.docker.container.image.v1+json"
    {
        out.push(finding(
            Severity::Error,
            "media-types",
            format!("config media type `{config_mt}` is not supported by Lambda"),
            "use an OCI or Docker image config",
        ));
    }
    if image.manifest_bytes.len() > crate::image::MAX_MANIFEST_BYTES {
        out.push(finding(
            Severity::Error,
            "manifest-size",
            format!(
                "manifest is {} bytes, over Lambda's {}",
                image.manifest_bytes.len(),
                crate::image::MAX_MANIFEST_BYTES
            ),
            "use fewer layers",
        ));
    }
    let arch = image.config["architecture"].as_str().unwrap_or("");
    if !matches!(arch, "amd64" | "arm64") || image.config["os"] != "linux" {
        out.push(finding(
            Severity::Error,
            "architecture",
            format!(
                "platform {}/{arch} is not one Lambda runs",
                image.config["os"].as_str().unwrap_or("?")
            ),
            "build for linux x86_64 or arm64",
        ));
    }
    let entrypoint_ok = image.config["config"]["Entrypoint"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    if !entrypoint_ok {
        out.push(finding(Severity::Error, "entrypoint", "the image has no ENTRYPOINT".into(), "build on a Lambda base image (public.ecr.aws/lambda/python), whose entrypoint runs the runtime interface client"));
    }
    let layers = image.layers();
    let diff_ids = image.config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        out.push(finding(
            Severity::Error,
            "diff-ids",
            format!(
                "config lists {} diff_ids for {} layers",
                diff_ids.len(),
                layers.len()
            ),
            "rebuild the image; its config does not match its layers",
        ));
    }
    let history = image.config["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| e["empty_layer"] != true).count())
        .unwrap_or(0);
    if history != layers.len() {
        out.push(finding(
            Severity::Warning,
            "history",
            format!(
                "config history has {history} layer entries for {} layers",
                layers.len()
            ),
            "rebuild with a tool that records one history entry per layer",
        ));
    }

    let mut view: BTreeMap<String, FileInfo> = BTreeMap::new();
    let mut total = 0u64;
    for (i, (media_type, digest, _)) in layers.iter().enumerate() {
        if !media_type.ends_with("tar+gzip") && !media_type.ends_with("tar.gzip") {
            out.push(finding(Severity::Error, "compression", format!("layer {i} ({digest}) has media type `{media_type}`; Lambda supports only gzip layers"), "recompress the layer with gzip (ocilambda writes gzip layers)"));
            continue;
        }
        let blob = image.blob(digest, remote, cache).await?;
        let read = files::read_layer(&blob.path, media_type)?;
        if let Some(want) = diff_ids.get(i).and_then(|d| d.as_str())
            && want != read.diff_id
        {
            out.push(finding(
                Severity::Error,
                "diff-ids",
                format!(
                    "layer {i} ({digest}) unpacks to {} but the config says {want}",
                    read.diff_id
                ),
                "rebuild the image; its config does not match its layers",
            ));
        }
        total += read.size;
        files::apply(&mut view, read.entries);
    }
    if total > MAX_UNCOMPRESSED {
        out.push(finding(
            Severity::Error,
            "size",
            format!(
                "uncompressed size {} exceeds Lambda's 10 GB",
                crate::output::size(total)
            ),
            "move data out of the image (S3, EFS)",
        ));
    }

    if let Some(handler) = image.config["config"]["Cmd"][0].as_str() {
        let module = handler
            .rsplit_once('.')
            .map(|(m, _)| m)
            .unwrap_or(handler)
            .replace('.', "/");
        let candidates = [
            format!("var/task/{module}.py"),
            format!("var/task/{module}/__init__.py"),
        ];
        let found = candidates.iter().any(|c| view.contains_key(c))
            || view.keys().any(|k| {
                k.starts_with(&format!("var/task/{module}."))
                    && (k.ends_with(".so") || k.ends_with(".pyc"))
            });
        if !found {
            out.push(finding(
                Severity::Error,
                "handler",
                format!(
                    "the handler module of `{handler}` is not under /var/task (no {module}.py)"
                ),
                "check the handler (CMD) and that the app code is in the image",
            ));
        }
    } else {
        out.push(finding(
            Severity::Error,
            "handler",
            "the image has no CMD naming a handler".into(),
            "set CMD to MODULE.FUNCTION (ocilambda build --handler)",
        ));
    }

    let minor = python_minor(&view);
    let mut unreadable = Vec::new();
    let mut wrong_version = Vec::new();
    let mut timestamp_pyc = Vec::new();
    for (path, info) in &view {
        if !(path.starts_with("var/task/") || path.starts_with("opt/")) {
            continue;
        }
        // Lambda runs the function as an unprivileged user: files need o+r, dirs o+rx.
        let need = if info.kind == Kind::Dir { 0o005 } else { 0o004 };
        if matches!(info.kind, Kind::File | Kind::Dir) && info.mode & need != need {
            unreadable.push(format!("/{path} ({:04o})", info.mode));
        }
        if info.kind == Kind::File && path.ends_with(".pyc") {
            let tag_minor = path
                .split(".cpython-3")
                .nth(1)
                .and_then(|t| t.split('.').next())
                .and_then(|m| m.parse::<u32>().ok());
            let magic =
                (info.head.len() >= 2).then(|| u16::from_le_bytes([info.head[0], info.head[1]]));
            let version_ok = match minor {
                Some(m) => {
                    tag_minor.is_none_or(|t| t == m)
                        && pyc_magic(m).is_none_or(|want| magic == Some(want))
                }
                None => true,
            };
            if !version_ok {
                wrong_version.push(format!("/{path}"));
            } else if info.head.len() >= 8
                && u32::from_le_bytes([info.head[4], info.head[5], info.head[6], info.head[7]]) & 1
                    == 0
            {
                timestamp_pyc.push(format!("/{path}"));
            }
        }
    }
    let some = |v: &[String]| {
        let mut s = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 3 {
            s.push_str(&format!(" and {} more", v.len() - 3));
        }
        s
    };
    if !unreadable.is_empty() {
        out.push(finding(
            Severity::Error,
            "permissions",
            format!(
                "{} paths under /var/task or /opt are not world-readable: {}",
                unreadable.len(),
                some(&unreadable)
            ),
            "make them readable (chmod o+r, o+rx for directories); ocilambda writes 0644/0755",
        ));
    }
    if !wrong_version.is_empty() {
        out.push(finding(
            Severity::Error,
            "bytecode-version",
            format!(
                "{} .pyc files are not for the image's Python 3.{}: {}",
                wrong_version.len(),
                minor.unwrap_or(0),
                some(&wrong_version)
            ),
            "compile bytecode with an interpreter of the image's version (ocilambda build does)",
        ));
    }
    if !timestamp_pyc.is_empty() {
        out.push(finding(
            Severity::Warning,
            "bytecode-hash",
            format!(
                "{} .pyc files are timestamp-based and go stale once mtimes are normalised: {}",
                timestamp_pyc.len(),
                some(&timestamp_pyc)
            ),
            "compile unchecked-hash .pyc (ocilambda build does)",
        ));
    }
    Ok(out)
}
