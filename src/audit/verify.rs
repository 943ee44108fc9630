//! `ocilambda verify`: rebuild the project the way the image records it was built (base
//! digest, SOURCE_DATE_EPOCH, handler, target, bytecode, and the app-file and selection
//! settings when they were not the defaults) and compare digests. A mismatch is explained
//! by the provenance that differs and by the file-level diff.

use super::diff;
use crate::build::{self, BuildRequest};
use crate::cache::Cache;
use crate::config::Settings;
use crate::error::hint;
use crate::image::{self, Image, Remote};
use crate::provenance::{self, Choices};
use crate::report::Reporter;
use crate::target::Arch;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub image: String,
    pub project_dir: PathBuf,
    /// Settings given on the command line: they win over what the image records.
    pub cli: Settings,
    /// Settings from the environment (`OCILAMBDA_*`), below what the image records.
    pub env: Settings,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    /// Rebuild without touching the network (base and packages must be cached).
    pub offline: bool,
    /// Resolve the recorded base again even if a resolution is cached.
    pub pull: bool,
}

/// What verify found: the rebuild's digest is the image's, or it is not, explained by
/// the recorded provenance that differs and by the file-level differences.
#[derive(Debug, Clone)]
pub enum Verdict {
    Reproducible {
        digest: String,
    },
    NotReproducible {
        digest: String,
        rebuilt: String,
        explained_by: Vec<String>,
        differences: Vec<diff::Difference>,
    },
}

/// The architecture the image's config records; an image without one, or with one Lambda
/// does not run, is refused rather than rebuilt for a guess.
fn recorded_arch(image: &Image) -> Result<Arch> {
    let name = image.config["architecture"].as_str().ok_or_else(|| {
        hint(
            format!("{} records no architecture in its config", image.label),
            "a rebuild needs the architecture the image records; this image was not built by ocilambda",
        )
    })?;
    name.parse::<Arch>()
        .with_context(|| format!("the architecture {} records", image.label))
}

/// What the image records about how it was built, as settings for the rebuild.
fn recorded_settings(image: &Image, base_name: String) -> Result<Settings> {
    let choices = Choices::from_annotation(image.annotation(provenance::CHOICES))?;
    Ok(Settings {
        base: Some(base_name),
        handler: image.annotation(provenance::HANDLER).map(str::to_string),
        python_version: image
            .annotation(provenance::PYTHON)
            .map(str::parse)
            .transpose()?,
        arch: Some(recorded_arch(image)?),
        compile_bytecode: image.annotation(provenance::BYTECODE).map(|b| b != "off"),
        include: choices.include,
        exclude: choices.exclude,
        package: choices.package,
        // An image records every selection: none recorded means none.
        extras: Some(choices.extras),
        all_extras: Some(choices.all_extras),
        groups: Some(choices.groups),
        ..Default::default()
    })
}

fn required<'a>(image: &'a Image, key: &str) -> Result<&'a str> {
    image.annotation(key).ok_or_else(|| {
        hint(
            format!("{} records no `{key}`: it was not built by ocilambda, or by a version without provenance", image.label),
            "a rebuild replays what the image records; build and push it again with a current ocilambda",
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

pub async fn verify(req: VerifyRequest, reporter: Arc<dyn Reporter>) -> Result<Verdict> {
    let remote = Remote::new(&req.insecure_registries).with_ca_cert(req.ca_cert.clone());
    let cache = Cache::open(&req.cache_dir, reporter.clone())?;
    let image = image::open(&req.image, &remote, &cache).await?.image()?;
    image.check_layout_blobs()?;
    let base_name = required(&image, provenance::BASE_NAME)?.to_string();
    let base_digest = required(&image, provenance::BASE_DIGEST)?.to_string();
    let created = required(&image, provenance::CREATED)?;
    let epoch = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("reading the image's creation time `{created}`"))?
        .unix_timestamp()
        .max(0) as u64;
    // What the image records wins over the project's configuration; the flags given to
    // verify win over both (to replay a build made with flags the image does not record).
    let recorded = recorded_settings(&image, base_name)?;
    let scratch = cache.temp_dir("verify-")?;
    let output = scratch.path().join("image");
    let summary = build::build(
        BuildRequest {
            project_dir: req.project_dir.clone(),
            cli: recorded.overlaid_with(req.cli.clone()),
            env: req.env.clone(),
            cache_dir: req.cache_dir.clone(),
            output: Some(output.clone()),
            insecure_registries: req.insecure_registries.clone(),
            ca_cert: req.ca_cert.clone(),
            offline: req.offline,
            pull: req.pull,
            epoch,
            base_digest: Some(base_digest),
            ..Default::default()
        },
        reporter,
    )
    .await
    .context("rebuilding the project")?;

    if summary.digest == image.manifest_digest {
        return Ok(Verdict::Reproducible {
            digest: summary.digest,
        });
    }
    let rebuilt = image::open(&format!("oci:{}", output.display()), &remote, &cache)
        .await?
        .image()?;
    let explained_by: Vec<String> = EXPLAINING
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
    let differences = diff::diff(&image, &rebuilt, &remote, &cache).await?;
    Ok(Verdict::NotReproducible {
        digest: image.manifest_digest,
        rebuilt: summary.digest,
        explained_by,
        differences,
    })
}
