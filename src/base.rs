//! The base image as a source of layers: resolve a reference (tag, digest or `@sha256`
//! pin) to one platform's manifest and config, through the cache. Only the manifest and
//! config are fetched; base layer blobs stay remote until something needs their bytes
//! (`--complete`, or a push to a registry that lacks them), as ko's lazy layers do.

mod error;
pub use error::BaseError;

use crate::cache::Cache;
use crate::error::hint;
use crate::registry::{Client, Reference};
use crate::source;
use crate::target::Arch;
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

pub fn parse_reference(text: &str) -> Result<Reference> {
    // Our own parser (registry::name), not oci-spec's: compiling oci-spec's reference
    // regex costs ~30 ms, most of an app-only rebuild.
    let n = crate::registry::name::parse(text).map_err(|e| {
        use crate::registry::name::{NameError, redact};
        hint(
            format!("invalid image reference `{}`: {e}", redact(text)),
            match e {
                NameError::Credentials => crate::diagnostics::CREDENTIALS_IN_REFERENCE,
                _ => "use REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. public.ecr.aws/lambda/python:3.13",
            },
        )
    })?;
    Ok(match (n.tag, n.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(n.registry, n.repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(n.registry, n.repository, digest),
        (tag, None) => Reference::with_tag(
            n.registry,
            n.repository,
            tag.unwrap_or_else(|| "latest".into()),
        ),
    })
}

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
        bail!(BaseError::NotCached(format!(
            "base manifest {digest} of {}",
            reference.whole()
        )));
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
            None if fetch.offline => bail!(BaseError::NeverResolved(name.clone())),
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
            BaseError::NoPlatform {
                name: name.clone(),
                platform: format!("linux/{}", arch.oci_name()),
                have: have.to_vec(),
            }
            .into()
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
        bail!(BaseError::UnsupportedManifest {
            name: name.clone(),
            media_type: media_type.to_string(),
        });
    }
    let config_desc = Descriptor::from_json(
        manifest
            .get("config")
            .context("base manifest has no config")?,
    )?;
    let config = match cache.read_blob(&config_desc.digest) {
        Some(bytes) => bytes,
        None if fetch.offline => bail!(BaseError::NotCached(format!(
            "base config {} of {name}",
            config_desc.digest
        ))),
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
        bail!(BaseError::WrongArch {
            name: name.clone(),
            arch: config_arch.to_string(),
            target: arch.lambda_name().to_string(),
        });
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
            bail!(BaseError::NotCached(format!("base layer {}", layer.digest)));
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
