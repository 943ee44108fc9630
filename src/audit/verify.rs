//! `ocilambda verify`: rebuild the project the way the image records it was built (base
//! digest, SOURCE_DATE_EPOCH, handler, target, bytecode) and compare digests. A mismatch
//! is explained by the provenance that differs and by the file-level diff.

use super::{Report, diff};
use crate::build::{self, BuildRequest, provenance};
use crate::cache::Cache;
use crate::config::Settings;
use crate::error::hint;
use crate::source::{self, Image, Remote};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub image: String,
    pub project_dir: PathBuf,
    pub cli: Settings,
    pub package: Option<String>,
    pub extras: Vec<String>,
    pub all_extras: bool,
    pub groups: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub json: bool,
}

fn required<'a>(image: &'a Image, key: &str) -> Result<&'a str> {
    image.annotation(key).ok_or_else(|| {
        hint(
            format!("{} records no `{key}`: it was not built by ocilambda, or by a version without provenance", image.label),
            "verify rebuilds from what the image records; rebuild and push it with a current ocilambda",
        )
    })
}

/// Provenance fields whose difference explains a digest mismatch by itself.
const EXPLAINING: &[(&str, &str)] = &[
    (provenance::REVISION, "VCS revision"),
    (provenance::SOURCE, "VCS source URL"),
    (provenance::LOCK, "uv.lock"),
    (
        provenance::SETTINGS,
        "settings (include/exclude, package/extra/group, arch)",
    ),
    (provenance::UV, "uv version"),
    (provenance::BYTECODE, "bytecode interpreter"),
    (provenance::VERSION, "ocilambda version"),
];

pub async fn verify_command(req: VerifyRequest) -> Result<Report> {
    let remote = Remote::new(&req.insecure_registries);
    let cache = Cache::open()?;
    let image = source::open(&req.image, &remote, &cache).await?.image()?;
    image.check_layout_blobs()?;
    let base_name = required(&image, provenance::BASE_NAME)?.to_string();
    let base_digest = required(&image, provenance::BASE_DIGEST)?.to_string();
    let created = required(&image, provenance::CREATED)?;
    let epoch = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("reading the image's creation time `{created}`"))?
        .unix_timestamp()
        .max(0) as u64;
    let arch = match image.config["architecture"].as_str() {
        Some("arm64") => "arm64",
        _ => "x86_64",
    };
    // What the image records wins over the project's configuration; the flags given to
    // verify win over both (to replay a build made with flags).
    let recorded = Settings {
        base: Some(base_name),
        handler: image.annotation(provenance::HANDLER).map(str::to_string),
        python_version: image.annotation(provenance::PYTHON).map(str::to_string),
        arch: Some(arch.to_string()),
        compile_bytecode: image.annotation(provenance::BYTECODE).map(|b| b != "off"),
        ..Default::default()
    };
    let scratch = cache.temp_dir("verify-")?;
    let output = scratch.path().join("image");
    let summary = build::build(BuildRequest {
        project_dir: req.project_dir.clone(),
        cli: recorded.overlaid_with(req.cli.clone()),
        output: Some(output.clone()),
        package: req.package.clone(),
        extras: req.extras.clone(),
        all_extras: req.all_extras,
        groups: req.groups.clone(),
        insecure_registries: req.insecure_registries.clone(),
        epoch: Some(epoch),
        base_digest: Some(base_digest),
        ..Default::default()
    })
    .await
    .context("rebuilding the project")?;

    if summary.digest == image.manifest_digest {
        let stdout = if req.json {
            serde_json::to_string(
                &serde_json::json!({"reproducible": true, "digest": summary.digest}),
            )? + "\n"
        } else {
            format!("reproducible {}\n", summary.digest)
        };
        return Ok(Report { stdout, ok: true });
    }
    let rebuilt = source::open(&format!("oci:{}", output.display()), &remote, &cache)
        .await?
        .image()?;
    let explained: Vec<String> = EXPLAINING
        .iter()
        .filter(|(key, _)| image.annotation(key) != rebuilt.annotation(key))
        .map(|(key, what)| {
            format!(
                "{what} differs: image {}, rebuild {}",
                image.annotation(key).unwrap_or("-"),
                rebuilt.annotation(key).unwrap_or("-")
            )
        })
        .collect();
    let diffs = diff::diff(&image, &rebuilt, &remote, &cache).await?;
    let stdout = if req.json {
        serde_json::to_string(&serde_json::json!({
            "reproducible": false,
            "digest": image.manifest_digest,
            "rebuilt": summary.digest,
            "explained_by": explained,
            "differences": diffs,
        }))? + "\n"
    } else {
        let mut s = format!(
            "not reproducible: the image is {}, the rebuild {}\n",
            image.manifest_digest, summary.digest
        );
        for e in &explained {
            s.push_str(&format!("  {e}\n"));
        }
        s.push_str(&diff::table(&diffs));
        s
    };
    Ok(Report { stdout, ok: false })
}
