//! The base a build starts from: resolve a reference (tag, digest or `@sha256` pin) to
//! one platform's [`Image`], through the cache (tags within their TTL, offline). Only the
//! manifest and config are fetched; base layer blobs stay remote until something needs
//! their bytes (`--complete`, the base's Python, or a push to a registry that lacks
//! them), as ko's lazy layers do, and then come through the image's one blob locator.

use crate::cache::Cache;
use crate::image::{self, Image, LocalBlob, Location, Origin, Remote, Small};
use crate::oci::Descriptor;
use crate::registry::Reference;
use crate::target::{Arch, PyVersion};
use anyhow::{Context, Result, bail};
use std::time::Duration;

/// A base resolved for one platform. Its image's manifest digest is what the build
/// records as `org.opencontainers.image.base.digest`.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference as resolved (the image's origin).
    pub reference: Reference,
    pub image: Image,
    /// What the name pointed to (an index or a manifest): the value to pin.
    pub top_digest: String,
    /// Resolved without a request.
    pub from_cache: bool,
}

impl Resolved {
    /// The reference names a digest, so rebuilds resolve it to the same base.
    pub fn pinned(&self) -> bool {
        self.reference.digest().is_some()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    pub pull: bool,
    pub offline: bool,
    pub tag_ttl: Duration,
}

pub use crate::registry::parse_reference;

/// Why a base cannot be used; the command layer words the advice.
#[derive(Debug)]
pub enum BaseError {
    /// `--offline` and the tag was never resolved here.
    NeverResolved {
        name: String,
    },
    /// `--offline` and a blob (`what`: "base manifest …", "base layer …") is not cached.
    NotCached {
        what: String,
    },
    /// The index has no manifest for the target platform.
    PlatformMissing {
        name: String,
        want: String,
        have: Vec<String>,
    },
    UnsupportedManifest {
        name: String,
        media_type: String,
    },
    /// A single-platform base of another architecture.
    WrongArch {
        name: String,
        image_arch: String,
        target: Arch,
    },
}

impl std::fmt::Display for BaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseError::NeverResolved { name } => {
                write!(f, "base {name} has never been resolved on this machine")
            }
            BaseError::NotCached { what } => write!(f, "{what} is not in the cache"),
            BaseError::PlatformMissing { name, want, have } => write!(
                f,
                "base {name} has no manifest for {want} (it has: {})",
                have.join(", ")
            ),
            BaseError::UnsupportedManifest { name, media_type } => {
                write!(
                    f,
                    "base {name} has an unsupported manifest type `{media_type}`"
                )
            }
            BaseError::WrongArch {
                name,
                image_arch,
                target,
            } => write!(
                f,
                "base {name} is a {image_arch} image, but the target architecture is {}",
                target.lambda_name()
            ),
        }
    }
}

impl std::error::Error for BaseError {}

/// A manifest or config of the base, through the image model's one small-blob reader
/// (cache first, verified); offline, a miss is a [`BaseError::NotCached`]. Its bytes and
/// whether the cache had them.
async fn small_blob(
    remote: &Remote,
    cache: &Cache,
    reference: &Reference,
    digest: &str,
    fetch: Fetch,
    kind: Small,
) -> Result<(Vec<u8>, bool)> {
    let what = match kind {
        Small::Manifest => "manifest",
        Small::Config => "config",
    };
    image::small_blob(remote, cache, reference, digest, kind, !fetch.offline)
        .await
        .with_context(|| format!("fetching the {what} of base {}", reference.whole()))?
        .ok_or_else(|| {
            BaseError::NotCached {
                what: format!("base {what} {digest} of {}", reference.whole()),
            }
            .into()
        })
}

/// What a tag (or digest) names now: from the reference itself, the tag cache within its
/// TTL, or the registry. Returns the digest and whether no request was made.
async fn top_digest(
    remote: &Remote,
    cache: &Cache,
    reference: &Reference,
    fetch: Fetch,
) -> Result<(String, bool)> {
    if let Some(d) = reference.digest() {
        return Ok((d.to_string(), true));
    }
    let name = reference.whole();
    let cached = if fetch.pull {
        None
    } else {
        cache.tag_get(&name, (!fetch.offline).then_some(fetch.tag_ttl))
    };
    match cached {
        Some(entry) => Ok((entry.digest, true)),
        None if fetch.offline => bail!(BaseError::NeverResolved { name }),
        None => {
            let manifest = remote
                .client()?
                .get_manifest(reference)
                .await
                .with_context(|| format!("resolving base {name}"))?;
            cache.write_blob(&manifest.bytes)?;
            cache.tag_put(&name, &manifest.digest)?;
            Ok((manifest.digest, false))
        }
    }
}

/// The `arch` manifest of what `top` is (itself, or an entry of an index): its bytes, and
/// whether they came from the cache.
async fn platform_manifest(
    remote: &Remote,
    cache: &Cache,
    reference: &Reference,
    top: Vec<u8>,
    arch: Arch,
    fetch: Fetch,
) -> Result<(Vec<u8>, bool)> {
    let name = reference.whole();
    let top_value: serde_json::Value = serde_json::from_slice(&top)
        .with_context(|| format!("base {name}: manifest is not JSON"))?;
    if !crate::oci::media::json_is_index(&top_value) {
        return Ok((top, true));
    }
    let want = format!("linux/{}", arch.oci_name());
    let digest = image::select_platform(&top_value, arch.oci_name(), |have| {
        BaseError::PlatformMissing {
            name: name.clone(),
            want: want.clone(),
            have: have.to_vec(),
        }
        .into()
    })?;
    let (bytes, hit) = small_blob(remote, cache, reference, &digest, fetch, Small::Manifest)
        .await
        .with_context(|| format!("reading base {name} ({want})"))?;
    Ok((bytes, hit))
}

/// The base config: from the cache, else fetched (verified); and whether it was cached.
async fn config(
    remote: &Remote,
    cache: &Cache,
    reference: &Reference,
    digest: &str,
    fetch: Fetch,
) -> Result<(Vec<u8>, bool)> {
    small_blob(remote, cache, reference, digest, fetch, Small::Config).await
}

/// Resolve `text` for `arch`.
pub async fn resolve(
    remote: &Remote,
    cache: &Cache,
    text: &str,
    arch: Arch,
    fetch: Fetch,
) -> Result<Resolved> {
    let reference = parse_reference(text)?;
    let name = reference.whole();
    let (top_digest, mut from_cache) = top_digest(remote, cache, &reference, fetch).await?;
    let (top, hit) = small_blob(
        remote,
        cache,
        &reference,
        &top_digest,
        fetch,
        Small::Manifest,
    )
    .await
    .with_context(|| format!("reading base {name}"))?;
    from_cache &= hit;
    let (manifest_bytes, hit) =
        platform_manifest(remote, cache, &reference, top, arch, fetch).await?;
    from_cache &= hit;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(crate::oci::media::OCI_MANIFEST);
    if !crate::oci::media::is_image_manifest(media_type) {
        bail!(BaseError::UnsupportedManifest {
            name,
            media_type: media_type.to_string(),
        });
    }
    let config_desc = Descriptor::from_json(
        manifest
            .get("config")
            .context("base manifest has no config")?,
    )?;
    let (config, hit) = config(remote, cache, &reference, &config_desc.digest, fetch).await?;
    from_cache &= hit;
    let image = Image::from_bytes(
        name.clone(),
        Origin::Registry(reference.clone()),
        manifest_bytes,
        config,
    )?;
    let image_arch = image.config["architecture"].as_str().unwrap_or("");
    if image_arch != arch.oci_name() {
        bail!(BaseError::WrongArch {
            name,
            image_arch: image_arch.to_string(),
            target: arch,
        });
    }
    // Checked here, so a base with a malformed layer list fails as the base it is.
    image.descriptors().context("base manifest has no layers")?;
    Ok(Resolved {
        reference,
        image,
        top_digest,
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
    remote: &Remote,
    cache: &Cache,
    base: &Resolved,
    offline: bool,
) -> Result<Option<PyVersion>> {
    let key = format!("base-python:{}", base.image.manifest_digest);
    if let Some(found) = cache.record_get::<Option<(u32, u32)>>(&key) {
        return Ok(found.map(|(a, b)| PyVersion(a, b)));
    }
    for layer in base.image.descriptors()?.iter().rev() {
        let Some(blob) = layer_file(base, &layer.digest, remote, cache, offline).await? else {
            return Ok(None);
        };
        if let Some(v) = python_in_layer(&blob.path, &layer.digest, &layer.media_type)? {
            cache.record_put(&key, &Some((v.0, v.1)))?;
            return Ok(Some(v));
        }
    }
    cache.record_put(&key, &None::<(u32, u32)>)?;
    Ok(None)
}

/// A base layer as a local file whose bytes match its digest, through the image's blob
/// locator (the cache, else the base's registry); `None` offline when the cache lacks it.
async fn layer_file(
    base: &Resolved,
    digest: &str,
    remote: &Remote,
    cache: &Cache,
    offline: bool,
) -> Result<Option<LocalBlob>> {
    if offline && !matches!(base.image.locate(digest, cache)?, Location::Cache(_)) {
        return Ok(None);
    }
    base.image.blob(digest, remote, cache).await.map(Some)
}

fn python_in_layer(
    path: &std::path::Path,
    digest: &str,
    media_type: &str,
) -> Result<Option<PyVersion>> {
    let mut found = None;
    crate::layer::read_file(
        path,
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

/// Make sure every base layer blob is in the cache, verified (for `--complete`); the
/// bytes downloaded.
pub async fn fetch_layers(
    remote: &Remote,
    cache: &Cache,
    base: &Resolved,
    offline: bool,
) -> Result<u64> {
    let mut fetched = 0;
    for layer in base.image.descriptors()? {
        let Some(blob) = layer_file(base, &layer.digest, remote, cache, offline).await? else {
            bail!(BaseError::NotCached {
                what: format!("base layer {}", layer.digest),
            });
        };
        fetched += blob.fetched.unwrap_or(0);
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    //! Base resolution from the cache alone (`--offline`): no registry, no network.
    use super::*;
    use crate::oci::media;
    use serde_json::json;

    struct Fixture {
        _dir: tempfile::TempDir,
        cache: Cache,
        remote: Remote,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        Fixture {
            _dir: dir,
            cache,
            remote: Remote::new(&[]),
        }
    }

    /// A platform manifest (config + one layer) in the cache; its digest.
    fn manifest(f: &Fixture, arch: &str, media_type: &str) -> String {
        let config = f
            .cache
            .write_blob(
                &serde_json::to_vec(&json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}))
                    .unwrap(),
            )
            .unwrap();
        let m = json!({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": media::DOCKER_CONFIG, "digest": config, "size": 10},
            "layers": [{"mediaType": media::DOCKER_LAYER_GZIP, "digest": format!("sha256:{}", "1".repeat(64)), "size": 5}],
        });
        f.cache
            .write_blob(&serde_json::to_vec(&m).unwrap())
            .unwrap()
    }

    fn offline() -> Fetch {
        Fetch {
            pull: false,
            offline: true,
            tag_ttl: Duration::from_secs(3600),
        }
    }

    async fn resolve_index(f: &Fixture, index: serde_json::Value, arch: Arch) -> Result<Resolved> {
        let digest = f
            .cache
            .write_blob(&serde_json::to_vec(&index).unwrap())
            .unwrap();
        f.cache
            .tag_put("reg.test/lambda/python:3.11", &digest)
            .unwrap();
        resolve(
            &f.remote,
            &f.cache,
            "reg.test/lambda/python:3.11",
            arch,
            offline(),
        )
        .await
    }

    fn entry(digest: &str, arch: &str) -> serde_json::Value {
        json!({"mediaType": media::OCI_MANIFEST, "digest": digest, "size": 1,
               "platform": {"os": "linux", "architecture": arch}})
    }

    #[tokio::test]
    async fn an_oci_index_is_narrowed_to_the_architecture() {
        let f = fixture();
        let amd = manifest(&f, "amd64", media::OCI_MANIFEST);
        let arm = manifest(&f, "arm64", media::OCI_MANIFEST);
        let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
                           "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")]});
        let base = resolve_index(&f, index, Arch::Arm64).await.unwrap();
        assert_eq!(base.image.manifest_digest, arm);
        assert!(base.from_cache);
        // Docker media types come out as their OCI equivalents.
        assert_eq!(
            base.image.descriptors().unwrap()[0].media_type,
            media::OCI_LAYER_GZIP
        );
    }

    #[tokio::test]
    async fn a_docker_list_with_attestation_entries_picks_the_image() {
        let f = fixture();
        let amd = manifest(&f, "amd64", media::DOCKER_MANIFEST);
        let attestation = json!({"mediaType": media::OCI_MANIFEST,
            "digest": format!("sha256:{}", "2".repeat(64)), "size": 1,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"}});
        let index = json!({"schemaVersion": 2, "mediaType": media::DOCKER_LIST,
                           "manifests": [attestation, entry(&amd, "amd64")]});
        let base = resolve_index(&f, index, Arch::X86_64).await.unwrap();
        assert_eq!(base.image.manifest_digest, amd);
    }

    #[tokio::test]
    async fn a_missing_platform_names_the_ones_there_are() {
        let f = fixture();
        let amd = manifest(&f, "amd64", media::OCI_MANIFEST);
        let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
                           "manifests": [entry(&amd, "amd64")]});
        let err = resolve_index(&f, index, Arch::Arm64).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("linux/arm64") && text.contains("linux/amd64"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_single_manifest_of_another_architecture_is_refused() {
        let f = fixture();
        let amd = manifest(&f, "amd64", media::OCI_MANIFEST);
        f.cache
            .tag_put("reg.test/lambda/python:3.11", &amd)
            .unwrap();
        let err = resolve(
            &f.remote,
            &f.cache,
            "reg.test/lambda/python:3.11",
            Arch::Arm64,
            offline(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("amd64"), "{err:#}");
    }

    #[tokio::test]
    async fn offline_without_a_cached_resolution_is_an_error() {
        let f = fixture();
        let err = resolve(
            &f.remote,
            &f.cache,
            "reg.test/lambda/python:3.12",
            Arch::X86_64,
            offline(),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("never been resolved"),
            "{err:#}"
        );
    }

    #[test]
    fn a_tag_naming_another_python_is_refused() {
        assert!(check_tag_python("reg.test/lambda/python:3.11", PyVersion(3, 11)).is_ok());
        assert!(check_tag_python("reg.test/lambda/python:3.11-arm64", PyVersion(3, 12)).is_err());
        assert!(check_tag_python("reg.test/lambda/python@sha256:00", PyVersion(3, 12)).is_ok());
    }
}
