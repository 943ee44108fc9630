//! The base image as a source of layers: resolve a reference (tag, digest or `@sha256`
//! pin) to one platform's manifest and config, through the cache. Only the manifest and
//! config are fetched; base layer blobs stay remote until something needs their bytes
//! (`--complete`, or a push to a registry that lacks them), as ko's lazy layers do.

use crate::cache::Cache;
use crate::error::hint;
use crate::registry::{Client, Reference};
use crate::source;
use crate::target::{Arch, PyVersion};
use anyhow::{Context, Result, bail};
use std::time::Duration;

pub use crate::oci::Descriptor;

#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: Reference,
    /// What the tag pointed to (an index or a manifest): the value to pin.
    pub top_digest: String,
    /// The platform manifest's digest (`org.opencontainers.image.base.digest`).
    pub manifest_digest: String,
    pub config: Vec<u8>,
    /// Base layers with OCI media types.
    pub layers: Vec<Descriptor>,
    pub pinned: bool,
    pub from_cache: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    pub pull: bool,
    pub offline: bool,
    pub tag_ttl: Duration,
}

pub use crate::registry::parse_reference;

async fn manifest_by_digest(
    client: &Client,
    cache: &Cache,
    reference: &Reference,
    digest: &str,
    fetch: Fetch,
) -> Result<(Vec<u8>, bool)> {
    if let Some(bytes) = cache.read_blob(digest) {
        return Ok((bytes, true));
    }
    if fetch.offline {
        bail!(hint(
            format!(
                "base manifest {digest} of {} is not in the cache",
                reference.whole()
            ),
            "run once without --offline to fill the cache"
        ));
    }
    let pinned = Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest.to_string(),
    );
    let manifest = client.get_manifest(&pinned).await?;
    cache.write_blob(&manifest.bytes)?;
    Ok((manifest.bytes, false))
}

/// Resolve `text` for `arch`.
pub async fn resolve(
    client: &Client,
    cache: &Cache,
    text: &str,
    arch: Arch,
    fetch: Fetch,
) -> Result<BaseImage> {
    let reference = parse_reference(text)?;
    let name = reference.whole();
    let pinned = reference.digest().is_some();
    let mut from_cache = true;
    let top_digest = if let Some(d) = reference.digest() {
        d.to_string()
    } else {
        let cached = if fetch.pull {
            None
        } else {
            cache.tag_get(&name, (!fetch.offline).then_some(fetch.tag_ttl))
        };
        match cached {
            Some(entry) => entry.digest,
            None if fetch.offline => bail!(hint(
                format!("base {name} has never been resolved on this machine"),
                "run once without --offline, or pin the base by digest"
            )),
            None => {
                from_cache = false;
                let manifest = client
                    .get_manifest(&reference)
                    .await
                    .with_context(|| format!("resolving base {name}"))?;
                cache.write_blob(&manifest.bytes)?;
                cache.tag_put(&name, &manifest.digest)?;
                manifest.digest
            }
        }
    };
    let (top, hit) = manifest_by_digest(client, cache, &reference, &top_digest, fetch)
        .await
        .with_context(|| format!("reading base {name}"))?;
    from_cache &= hit;
    let top_value: serde_json::Value = serde_json::from_slice(&top)
        .with_context(|| format!("base {name}: manifest is not JSON"))?;

    let (manifest_digest, manifest) = if crate::oci::media::json_is_index(&top_value) {
        let digest = source::select_platform(&top_value, arch.oci_name(), |have| {
            hint(
                format!(
                    "base {name} has no manifest for linux/{} (it has: {})",
                    arch.oci_name(),
                    have.join(", ")
                ),
                "choose the other --arch, or a base image built for this architecture",
            )
        })?;
        let (bytes, hit) = manifest_by_digest(client, cache, &reference, &digest, fetch)
            .await
            .with_context(|| format!("reading base {name} (linux/{})", arch.oci_name()))?;
        from_cache &= hit;
        (digest, bytes)
    } else {
        (top_digest.clone(), top)
    };
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let media_type = manifest
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(crate::oci::media::OCI_MANIFEST);
    if !crate::oci::media::is_image_manifest(media_type) {
        bail!(hint(
            format!("base {name} has an unsupported manifest type `{media_type}`"),
            "use an OCI or Docker v2 schema 2 image"
        ));
    }
    let config_desc = Descriptor::from_json(
        manifest
            .get("config")
            .context("base manifest has no config")?,
    )?;
    let config = match cache.read_blob(&config_desc.digest) {
        Some(bytes) => bytes,
        None if fetch.offline => bail!(hint(
            format!(
                "base config {} of {name} is not in the cache",
                config_desc.digest
            ),
            "run once without --offline"
        )),
        None => {
            from_cache = false;
            source::fetch_small_blob(client, cache, &reference, &config_desc.digest)
                .await
                .with_context(|| format!("fetching the config of base {name}"))?
        }
    };
    let config_value: serde_json::Value = serde_json::from_slice(&config)?;
    let config_arch = config_value
        .get("architecture")
        .and_then(|a| a.as_str())
        .unwrap_or("");
    if config_arch != arch.oci_name() {
        bail!(hint(
            format!(
                "base {name} is a {config_arch} image, but the target architecture is {}",
                arch.lambda_name()
            ),
            "use a multi-arch base (like public.ecr.aws/lambda/python:X.Y) or the matching --arch"
        ));
    }
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .context("base manifest has no layers")?
        .iter()
        .map(Descriptor::from_json)
        .collect::<Result<Vec<_>>>()?;
    Ok(BaseImage {
        reference,
        top_digest,
        manifest_digest,
        config,
        layers,
        pinned,
        from_cache,
    })
}

/// The base runs another Python than the build targets: its wheels (cp3N, manylinux_2_NN)
/// and bytecode would not load there.
#[derive(Debug)]
pub struct PythonMismatch {
    pub base: String,
    pub base_python: PyVersion,
    pub target: PyVersion,
}

impl std::fmt::Display for PythonMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "base {} runs Python {}, but the build targets Python {}",
            self.base, self.base_python, self.target
        )
    }
}

impl std::error::Error for PythonMismatch {}

/// Refuse a base whose tag (`…/python:X.Y[-suffix]`) names another Python than `target`.
/// Checked before anything is installed.
pub fn check_tag_python(base: &str, target: PyVersion) -> Result<()> {
    match crate::project::version_from_base_tag(base) {
        Some(v) if v != target => Err(PythonMismatch {
            base: crate::registry::name::redact(base).into_owned(),
            base_python: v,
            target,
        }
        .into()),
        _ => Ok(()),
    }
}

/// The Python the base runs, from its files when its tag says nothing (a digest pin): the
/// interpreter `/var/lang/bin/python3.N` of Lambda's images, looked for from the top layer
/// down, fetching only the layers it reads. Remembered per base manifest, so this costs
/// one download per base. `None`: not a Lambda-style base, or offline without the layers.
pub async fn runtime_python(
    client: &Client,
    cache: &Cache,
    base: &BaseImage,
    offline: bool,
) -> Result<Option<PyVersion>> {
    let key = format!("base-python:{}", base.manifest_digest);
    if let Some(found) = cache.record_get::<Option<(u32, u32)>>(&key) {
        return Ok(found.map(|(a, b)| PyVersion(a, b)));
    }
    for layer in base.layers.iter().rev() {
        if !cache.has_blob(&layer.digest) {
            if offline {
                return Ok(None);
            }
            let path = cache.blob_path(&layer.digest)?;
            client
                .get_blob_to(
                    base.reference.registry(),
                    base.reference.repository(),
                    &layer.digest,
                    layer.size,
                    &path,
                )
                .await?;
            cache.mark_verified(&layer.digest);
        }
        if let Some(v) = python_in_layer(cache, &layer.digest, &layer.media_type)? {
            cache.record_put(&key, &Some((v.0, v.1)))?;
            return Ok(Some(v));
        }
    }
    cache.record_put(&key, &None::<(u32, u32)>)?;
    Ok(None)
}

fn python_in_layer(cache: &Cache, digest: &str, media_type: &str) -> Result<Option<PyVersion>> {
    let path = cache.blob_path(digest)?;
    let mut found = None;
    crate::layer::read_file(
        &path,
        media_type,
        &mut crate::layer::Budget::lambda(),
        |entry| {
            if let crate::layer::Op::Put(p) = &entry.op
                && let Some(minor) = p
                    .to_str()
                    .and_then(|p| p.strip_prefix("var/lang/bin/python3."))
                    .and_then(|m| m.parse().ok())
            {
                found = Some(PyVersion(3, minor));
            }
            Ok(())
        },
    )
    .with_context(|| format!("reading base layer {digest}"))?;
    Ok(found)
}

/// Make sure every base layer blob is in the cache (for `--complete`), verified.
pub async fn fetch_layers(
    client: &Client,
    cache: &Cache,
    base: &BaseImage,
    offline: bool,
) -> Result<u64> {
    let mut fetched = 0;
    for layer in &base.layers {
        if cache.has_blob(&layer.digest) {
            continue;
        }
        if offline {
            bail!(hint(
                format!("base layer {} is not in the cache", layer.digest),
                "run once without --offline to fetch the base layers"
            ));
        }
        let path = cache.blob_path(&layer.digest)?;
        fetched += client
            .get_blob_to(
                base.reference.registry(),
                base.reference.repository(),
                &layer.digest,
                layer.size,
                &path,
            )
            .await?;
        // get_blob_to hashed the bytes on their way in.
        cache.mark_verified(&layer.digest);
    }
    Ok(fetched)
}
