//! The registry sink: put an image that is on disk into a repository.
//!
//! The image is an OCI layout as `build` writes it; each blob comes from the layout, else
//! the cache, else the base image's registry (a layout built without `--complete` leaves
//! the base layers out, and the manifest's `org.opencontainers.image.base.name` says where
//! they live), fetched only when the target lacks them. This module decides what to send
//! and in which order; the HTTP, retries and credentials are [`crate::registry`]'s.

use crate::cache::Cache;
use crate::image::{self, Image, Location};
use crate::oci::Descriptor;
use crate::registry::name::{self, Name};
use crate::registry::{BlobPush, BlobSource, Client, Progress, Pushed};
use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::oci::annotation::{BASE_DIGEST, BASE_NAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Config,
    Layer,
    BaseLayer,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Layer => "layer",
            Kind::BaseLayer => "base layer",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub kind: Kind,
}

/// The image `build` wrote to `dir` (the manifest its index tags `latest`), read through
/// [`image::open_layout`], the one layout reader.
pub fn read_layout(dir: &Path) -> Result<Image> {
    if !dir.join("index.json").is_file() {
        bail!(image::ImageError::NothingBuilt(dir.to_path_buf()));
    }
    image::open_layout(dir)
}

/// The blobs a push of `image` sends, each with its role: the config first, then the
/// layers in manifest order. A layer is the base's when the base manifest (in the cache
/// after a build here) lists it, or when the image's layout leaves it out.
pub fn blobs(image: &Image, cache: &Cache) -> Result<Vec<Blob>> {
    let base_layers: HashSet<String> = image
        .annotation(BASE_DIGEST)
        .and_then(|d| cache.read_blob(d))
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|m| m.get("layers")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.get("digest")?.as_str().map(str::to_string))
        .collect();
    let config = Descriptor::from_json(&image.manifest["config"])
        .context("the manifest's config descriptor")?;
    let mut blobs = vec![Blob {
        digest: config.digest,
        size: config.size,
        kind: Kind::Config,
    }];
    for layer in image.descriptors()? {
        let held = match image.layout_dir() {
            Some(dir) => crate::oci::layout::blob_path(dir, &layer.digest)?.is_file(),
            None => true,
        };
        let kind = if base_layers.contains(&layer.digest) || !held {
            Kind::BaseLayer
        } else {
            Kind::Layer
        };
        blobs.push(Blob {
            digest: layer.digest,
            size: layer.size,
            kind,
        });
    }
    Ok(blobs)
}

/// Where the image's base layers live, from its manifest's annotations.
fn base_name(image: &Image) -> Result<Option<Name>> {
    image
        .annotation(BASE_NAME)
        .map(|n| {
            name::parse(n)
                .with_context(|| format!("the manifest's {BASE_NAME} `{n}` is not a reference"))
        })
        .transpose()
}

/// Where to push: one repository, one or more tags.
#[derive(Debug, Clone)]
pub struct Destination {
    pub registry: String,
    pub repository: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// The repository had it.
    Skipped,
    Mounted {
        from: String,
    },
    Uploaded {
        downloaded: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    pub digest: String,
    pub size: u64,
    pub kind: Kind,
    #[serde(flatten)]
    pub action: Action,
    pub millis: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Every tag already named this manifest: nothing was sent.
    pub up_to_date: bool,
    /// Per blob, when blobs had to be checked (not when the manifest was already there).
    pub blobs: Vec<BlobReport>,
    /// The tags written.
    pub tagged: Vec<String>,
}

/// What the caller shows while blobs move.
pub trait Observer: Send + Sync {
    /// An upload of `blob` is starting; the returned callback gets the bytes sent so far.
    fn uploading(&self, blob: &Blob) -> Progress;
    fn finished(&self, report: &BlobReport);
}

/// The cache record of a repository a blob was last pushed to, per registry: the next
/// push of the blob to another repository of that registry can mount it from there.
fn seen_key(registry: &str, digest: &str) -> String {
    format!("blob-seen-in:{registry}:{digest}")
}

/// Push `image` to `dest`: blobs first (skipped when present, mounted when another
/// repository of the registry has them, else uploaded, `jobs` at a time), the manifest
/// only once every blob is there, then the other tags.
pub async fn push(
    client: &Client,
    cache: &Cache,
    image: &Image,
    dest: &Destination,
    jobs: usize,
    observer: &dyn Observer,
) -> Result<Outcome> {
    let (registry, repo) = (dest.registry.as_str(), dest.repository.as_str());
    // A malformed base name fails before any request, as a bad image should.
    let base = base_name(image)?;
    // A tag that already names our manifest needs nothing: the common no-op push is one
    // HEAD per tag.
    let current = futures_util::future::try_join_all(
        dest.tags
            .iter()
            .map(|tag| client.manifest_digest(registry, repo, tag)),
    )
    .await?;
    let stale: Vec<String> = dest
        .tags
        .iter()
        .zip(&current)
        .filter(|(_, d)| d.as_deref() != Some(image.manifest_digest.as_str()))
        .map(|(t, _)| t.clone())
        .collect();
    if stale.is_empty() {
        return Ok(Outcome {
            up_to_date: true,
            blobs: Vec::new(),
            tagged: Vec::new(),
        });
    }
    // A registry accepts a manifest only once it holds every blob it names, so a
    // manifest already there (under another tag, or by digest) vouches for them.
    let have_manifest = current
        .iter()
        .flatten()
        .any(|d| *d == image.manifest_digest)
        || client
            .manifest_digest(registry, repo, &image.manifest_digest)
            .await?
            .is_some();
    let mut reports = Vec::new();
    if !have_manifest {
        let mut order = blobs(image, cache)?;
        // Largest first, so the longest transfer is not the one that starts last.
        order.sort_by_key(|b| std::cmp::Reverse(b.size));
        reports = futures_util::stream::iter(&order)
            .map(|blob| push_one(client, cache, (image, base.as_ref()), dest, blob, observer))
            .buffer_unordered(jobs.max(1))
            .try_collect()
            .await
            .map_err(|e| changed_during_push(image).unwrap_or(e))?;
    }
    for tag in &stale {
        client
            .put_manifest(
                registry,
                repo,
                tag,
                &image.manifest_bytes,
                image.media_type(),
                &image.manifest_digest,
            )
            .await?;
    }
    Ok(Outcome {
        up_to_date: false,
        blobs: reports,
        tagged: stale,
    })
}

/// The layout was rebuilt while it was being pushed: a blob that vanished with the image it
/// belonged to is then no fault of any registry.
#[derive(Debug)]
pub struct LayoutChanged {
    pub dir: PathBuf,
    pub pushing: String,
    pub now: String,
}

impl std::fmt::Display for LayoutChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the layout at {} changed during the push: it held {} when the push began and now holds {}",
            self.dir.display(),
            self.pushing,
            self.now
        )
    }
}

impl std::error::Error for LayoutChanged {}

/// After a failure: did the layout change under the push? (Checked only then, so a normal
/// push reads `index.json` once.)
fn changed_during_push(image: &Image) -> Option<anyhow::Error> {
    let dir = image.layout_dir()?;
    let now =
        crate::oci::layout::read_manifest_digest(dir).unwrap_or_else(|_| "no image".to_string());
    (now != image.manifest_digest).then(|| {
        LayoutChanged {
            dir: dir.to_path_buf(),
            pushing: image.manifest_digest.clone(),
            now,
        }
        .into()
    })
}

async fn push_one(
    client: &Client,
    cache: &Cache,
    (image, base): (&Image, Option<&Name>),
    dest: &Destination,
    blob: &Blob,
    observer: &dyn Observer,
) -> Result<BlobReport> {
    let started = Instant::now();
    let (registry, repo) = (dest.registry.as_str(), dest.repository.as_str());
    // The one blob chain (layout, cache, base registry); bytes from a file are hashed
    // again as they stream (body::from_file), remote ones on their way through.
    let source = match image.locate(&blob.digest, cache)? {
        Location::Layout(path) | Location::Cache(path) => BlobSource::File(path),
        Location::Remote { from, keep_at } => BlobSource::Remote {
            registry: from.registry().to_string(),
            repository: from.repository().to_string(),
            keep_at,
        },
    };
    let seen_in: Option<String> = cache.record_get(&seen_key(registry, &blob.digest));
    let mount_from = match base {
        Some(base) if blob.kind == Kind::BaseLayer && base.registry == registry => {
            Some(base.repository.clone())
        }
        _ => seen_in,
    }
    .filter(|from| from != repo);
    let progress = observer.uploading(blob);
    let pushed = client
        .push_blob(
            registry,
            repo,
            BlobPush {
                digest: &blob.digest,
                size: blob.size,
                source: &source,
                mount_from: mount_from.as_deref(),
                progress,
            },
        )
        .await
        .with_context(|| {
            format!(
                "{} {} ({})",
                blob.kind.label(),
                blob.digest,
                crate::output::size(blob.size)
            )
        })?;
    // Best effort: a missed record only costs a mount next time.
    let _ = cache.record_put(&seen_key(registry, &blob.digest), &repo);
    let action = match pushed {
        Pushed::Existed => Action::Skipped,
        Pushed::Mounted => Action::Mounted {
            from: mount_from.unwrap_or_default(),
        },
        Pushed::Uploaded { downloaded } => Action::Uploaded { downloaded },
    };
    let report = BlobReport {
        digest: blob.digest.clone(),
        size: blob.size,
        kind: blob.kind,
        action,
        millis: started.elapsed().as_millis() as u64,
    };
    observer.finished(&report);
    Ok(report)
}

/// A referrer of the image in its layout (e.g. the SBOM `build --sbom` wrote).
struct LocalReferrer {
    digest: String,
    artifact_type: String,
    bytes: Vec<u8>,
    manifest: serde_json::Value,
}

/// The layout's referrers whose `subject` is the image, each manifest checked against its
/// digest.
fn layout_referrers(image: &Image) -> Result<Vec<LocalReferrer>> {
    let Some(dir) = image.layout_dir() else {
        return Ok(Vec::new());
    };
    let index = crate::oci::layout::read_index(dir)?;
    let mut found = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let (Some(digest), Some(artifact_type)) =
            (entry["digest"].as_str(), entry["artifactType"].as_str())
        else {
            continue;
        };
        let bytes = crate::oci::layout::read_blob(dir, digest)?;
        let manifest: serde_json::Value = serde_json::from_slice(&bytes)?;
        if manifest["subject"]["digest"].as_str() != Some(image.manifest_digest.as_str()) {
            continue;
        }
        found.push(LocalReferrer {
            digest: digest.to_string(),
            artifact_type: artifact_type.to_string(),
            bytes,
            manifest,
        });
    }
    Ok(found)
}

/// One referrer's blobs, then its manifest by digest.
async fn push_referrer(
    client: &Client,
    cache: &Cache,
    image: &Image,
    dest: &Destination,
    r: &LocalReferrer,
) -> Result<()> {
    let (registry, repo) = (dest.registry.as_str(), dest.repository.as_str());
    let blobs = std::iter::once(&r.manifest["config"])
        .chain(r.manifest["layers"].as_array().into_iter().flatten());
    for b in blobs {
        let d = b["digest"]
            .as_str()
            .context("referrer descriptor without digest")?;
        let source = match image.locate(d, cache)? {
            Location::Layout(path) | Location::Cache(path) => BlobSource::File(path),
            Location::Remote { .. } => bail!("blob {d} of a referrer is missing"),
        };
        client
            .push_blob(
                registry,
                repo,
                BlobPush {
                    digest: d,
                    size: b["size"].as_u64().unwrap_or(0),
                    source: &source,
                    mount_from: None,
                    progress: std::sync::Arc::new(|_| {}),
                },
            )
            .await?;
    }
    client
        .put_manifest(
            registry,
            repo,
            &r.digest,
            &r.bytes,
            crate::oci::media::OCI_MANIFEST,
            &r.digest,
        )
        .await
}

/// Push the layout's referrers of the image (e.g. the SBOM `build --sbom` wrote): their
/// blobs, then their manifests by digest. Where the registry has no referrers API, the
/// OCI 1.1 tag-schema fallback keeps an index of them at tag `sha256-<image hex>`. The
/// image's own tags are never touched, so they still name the single-platform manifest.
/// Returns the artifact types pushed.
pub async fn push_referrers(
    client: &Client,
    cache: &Cache,
    image: &Image,
    dest: &Destination,
) -> Result<Vec<String>> {
    let (registry, repo) = (dest.registry.as_str(), dest.repository.as_str());
    let mut pushed = Vec::new();
    let mut descriptors = Vec::new();
    for r in layout_referrers(image)? {
        // Already there (and indexed, since that step follows the manifest): nothing to do.
        if client
            .manifest_digest(registry, repo, &r.digest)
            .await?
            .is_some()
        {
            continue;
        }
        push_referrer(client, cache, image, dest, &r).await?;
        descriptors.push(serde_json::json!({
            "mediaType": crate::oci::media::OCI_MANIFEST,
            "digest": r.digest,
            "size": r.bytes.len(),
            "artifactType": r.artifact_type,
        }));
        pushed.push(r.artifact_type);
    }
    if descriptors.is_empty()
        || client
            .referrers_api(registry, repo, &image.manifest_digest)
            .await?
    {
        return Ok(pushed);
    }
    tag_schema_fallback(client, image, dest, descriptors).await?;
    Ok(pushed)
}

/// The referrers tag-schema fallback: merge `descriptors` into whatever index the
/// `sha256-<image hex>` tag already holds.
async fn tag_schema_fallback(
    client: &Client,
    image: &Image,
    dest: &Destination,
    descriptors: Vec<serde_json::Value>,
) -> Result<()> {
    let (registry, repo) = (dest.registry.as_str(), dest.repository.as_str());
    let tag = format!(
        "sha256-{}",
        crate::digest::hex_part(&image.manifest_digest)?
    );
    let reference =
        crate::registry::Reference::with_tag(registry.to_string(), repo.to_string(), tag.clone());
    let mut manifests: Vec<serde_json::Value> =
        match client.manifest_digest(registry, repo, &tag).await? {
            Some(_) => {
                let existing = client.get_manifest(&reference).await?;
                serde_json::from_slice::<serde_json::Value>(&existing.bytes)?["manifests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
    for d in descriptors {
        if !manifests.iter().any(|m| m["digest"] == d["digest"]) {
            manifests.push(d);
        }
    }
    let fallback = crate::oci::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::media::OCI_INDEX,
        "manifests": manifests,
    }));
    let digest = crate::digest::of_bytes(&fallback);
    client
        .put_manifest(
            registry,
            repo,
            &tag,
            &fallback,
            crate::oci::media::OCI_INDEX,
            &digest,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_rebuilt_under_a_push_is_told_apart_from_a_registry_fault() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        let dest = tmp.path().join("layout");
        let (first, l1) = crate::sink::layout::tests::image(&cache, b"app v1", true);
        crate::sink::layout::write(&dest, &first, &cache, &[l1], &[]).unwrap();
        let pushing = read_layout(&dest).unwrap();
        assert!(
            changed_during_push(&pushing).is_none(),
            "unchanged: the fault stands"
        );
        let (second, l2) = crate::sink::layout::tests::image(&cache, b"app v2", true);
        crate::sink::layout::write(&dest, &second, &cache, &[l2], &[]).unwrap();
        let err = changed_during_push(&pushing).expect("the layout changed");
        assert!(err.to_string().contains("changed during the push"), "{err}");
    }
}
