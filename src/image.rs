//! The one image model: a single-platform image (its manifest and config, exactly as
//! stored) whatever its origin: an OCI layout on disk (`oci:DIR`, or a directory holding
//! `oci-layout` or `index.json`), a registry reference, or a build in progress. The base a
//! build starts from ([`crate::base`] resolves it), the image [`crate::assemble`] makes,
//! the audits, `invoke` and both sinks all hold this type. An index is read as such, to
//! refuse or to pick a platform from.
//!
//! [`Image::locate`] is the one blob chain: the layout, then the cache, then the image's
//! registry or, for the base layers a layout made without `--complete` leaves out (and a
//! build in progress never holds), the base its `org.opencontainers.image.base.name`
//! names. Every byte is checked against its digest before use, and never cached
//! unverified.
//!
//! Not here: how a base tag is resolved ([`crate::base`]: tag cache, offline), or
//! writing images ([`crate::sink`]).

mod error;
pub use error::ImageError;

use crate::cache::Cache;
use crate::error::hint;
use crate::oci::Descriptor;
use crate::oci::annotation as provenance;
use crate::registry::parse_reference;
use crate::registry::{Client, Reference};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A registry client made on first use: a complete layout is read without one, and making
/// one sets up TLS.
pub struct Remote {
    insecure: Vec<String>,
    ca_cert: Option<std::path::PathBuf>,
    client: OnceLock<Client>,
}

impl Remote {
    /// `insecure`: registry hosts allowed over plain HTTP (`--insecure-registry`).
    pub fn new(insecure: &[String]) -> Remote {
        Remote {
            insecure: insecure.to_vec(),
            ca_cert: None,
            client: OnceLock::new(),
        }
    }

    /// Also trust this CA certificate (PEM) for registries (`--ca-cert`, SSL_CERT_FILE).
    pub fn with_ca_cert(mut self, ca_cert: Option<std::path::PathBuf>) -> Remote {
        self.ca_cert = ca_cert;
        self
    }

    pub fn client(&self) -> Result<&Client> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let made = Client::new(&self.insecure, self.ca_cert.as_deref())?;
        Ok(self.client.get_or_init(|| made))
    }
}

/// Where an image's manifest, config and own blobs are.
#[derive(Debug, Clone)]
pub enum Origin {
    Layout(PathBuf),
    Registry(Reference),
    /// A build in progress: its manifest and config are only in memory, its new layers in
    /// the cache, its base layers where its annotations say.
    Build,
}

/// An artifact that refers to an image (OCI 1.1 `subject`), e.g. its SBOM: listed in
/// `index.json` next to the image, as OCI layouts hold referrers.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub manifest: Vec<u8>,
    pub artifact_type: String,
    /// Every blob the manifest references (config and layers).
    pub blobs: Vec<Vec<u8>>,
}

/// A single-platform image: its manifest and config, exactly as stored (the bytes a
/// digest depends on) and parsed.
#[derive(Debug, Clone)]
pub struct Image {
    /// How the user named it (for messages).
    pub label: String,
    pub origin: Origin,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_bytes: Vec<u8>,
    pub config: Value,
}

/// An image index (multi-platform): Lambda refuses one, `invoke` picks this machine's
/// platform from it.
#[derive(Debug, Clone)]
pub struct Index {
    pub label: String,
    pub digest: String,
    pub manifest: Value,
    origin: Origin,
}

/// What IMAGE named: an image, or an index.
#[derive(Debug, Clone)]
pub enum Opened {
    Image(Box<Image>),
    Index(Index),
}

impl Opened {
    /// The image, or an error for an index (inspect and diff compare single images).
    pub fn image(self) -> Result<Image> {
        match self {
            Opened::Image(i) => Ok(*i),
            Opened::Index(Index { label, .. }) => bail!(hint(
                format!("{label} is an image index (multi-platform), not a single image"),
                "name one platform's manifest by digest (REPOSITORY@sha256:...)"
            )),
        }
    }
}

/// A blob as a local file.
#[derive(Debug, Clone)]
pub struct LocalBlob {
    pub path: PathBuf,
    /// The bytes downloaded to get it; `None` when it was already on disk.
    pub fetched: Option<u64>,
}

/// Where a blob's bytes are (see [`Image::locate`]).
#[derive(Debug, Clone)]
pub enum Location {
    /// A file of the image's layout (not yet hashed).
    Layout(PathBuf),
    /// A cache file whose bytes match the digest.
    Cache(PathBuf),
    /// In a registry repository; a verified copy goes to `keep_at` in the cache.
    Remote { from: Reference, keep_at: PathBuf },
}

/// A blob neither the layout nor the cache holds, of an image that names no base to fetch
/// it from.
#[derive(Debug)]
pub struct MissingBlob {
    pub digest: String,
    pub image: String,
}

impl std::fmt::Display for MissingBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blob {} is neither in {} nor in the cache, and its manifest names no base image to fetch it from",
            self.digest, self.image
        )
    }
}

impl std::error::Error for MissingBlob {}

/// Does `dir` hold an OCI image layout?
pub fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() || dir.join("index.json").is_file()
}

/// The error for an IMAGE that names a path but no layout.
pub fn not_a_layout(spec: &str) -> anyhow::Error {
    ImageError::NoLayout(spec.to_string()).into()
}

/// Where `spec` points: a layout (`oci:DIR[:TAG]`, or a layout directory), else a registry
/// reference. Something that looks like a path is never taken for a reference.
pub fn origin_of(spec: &str) -> Result<Origin> {
    if let Some(dir) = spec.strip_prefix("oci:") {
        // `oci:DIR:TAG` as skopeo writes it: the tag part is ignored (one image per layout).
        let dir = match dir.rsplit_once(':') {
            Some((d, _)) if is_layout(Path::new(d)) => d,
            _ => dir,
        };
        return Ok(Origin::Layout(PathBuf::from(dir)));
    }
    let path = Path::new(spec);
    if is_layout(path) {
        return Ok(Origin::Layout(path.to_path_buf()));
    }
    if path.exists() || spec.starts_with('.') || spec.starts_with('/') {
        return Err(not_a_layout(spec));
    }
    Ok(Origin::Registry(parse_reference(spec)?))
}

fn parse_json(bytes: &[u8], what: &str, label: &str) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("the {what} of {label} is not JSON"))
}

/// The two kinds of small blob, fetched through different registry endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Small {
    Manifest,
    Config,
}

/// A manifest or config of `from`'s repository by digest: the cache's verified copy (and
/// `true`), else fetched, verified and cached (and `false`); `None` when the cache lacks
/// it and `fetch` is false (offline). The one way every reader and the base resolver get
/// small blobs.
pub async fn small_blob(
    remote: &Remote,
    cache: &Cache,
    from: &Reference,
    digest: &str,
    kind: Small,
    fetch: bool,
) -> Result<Option<(Vec<u8>, bool)>> {
    if let Some(bytes) = cache.read_blob(digest) {
        return Ok(Some((bytes, true)));
    }
    if !fetch {
        return Ok(None);
    }
    let bytes = fetch_small(remote, cache, from, digest, kind).await?;
    Ok(Some((bytes, false)))
}

/// [`small_blob`], fetching what the cache lacks.
async fn cached_or_fetched(
    remote: &Remote,
    cache: &Cache,
    from: &Reference,
    digest: &str,
    kind: Small,
) -> Result<Vec<u8>> {
    match cache.read_blob(digest) {
        Some(bytes) => Ok(bytes),
        None => fetch_small(remote, cache, from, digest, kind).await,
    }
}

/// Fetch a manifest or config (verified) into the cache and return its bytes.
async fn fetch_small(
    remote: &Remote,
    cache: &Cache,
    from: &Reference,
    digest: &str,
    kind: Small,
) -> Result<Vec<u8>> {
    let client = remote.client()?;
    match kind {
        Small::Config => {
            let path = cache.blob_path(digest)?;
            client
                .get_config_to(from.registry(), from.repository(), digest, &path)
                .await?;
            cache.mark_verified(digest);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        }
        Small::Manifest => {
            let pinned = Reference::with_digest(
                from.registry().to_string(),
                from.repository().to_string(),
                digest.to_string(),
            );
            // Verified against the pinned digest by the client.
            let fetched = client.get_manifest(&pinned).await?;
            cache.write_blob(&fetched.bytes)?;
            Ok(fetched.bytes)
        }
    }
}

/// The digest of `index`'s `linux/{arch}` entry (`arch` as OCI names it); when there is
/// none, the error `missing` makes from the platforms the index does have (`os/arch`).
pub fn select_platform(
    index: &Value,
    arch: &str,
    missing: impl FnOnce(&[String]) -> anyhow::Error,
) -> Result<String> {
    let entries = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let platform = |d: &Value| {
        let field = |k: &str| d["platform"][k].as_str().unwrap_or("?").to_string();
        (field("os"), field("architecture"))
    };
    let Some(chosen) = entries
        .iter()
        .find(|d| platform(d) == ("linux".into(), arch.into()))
    else {
        let have: Vec<String> = entries
            .iter()
            .map(|d| {
                let (os, a) = platform(d);
                format!("{os}/{a}")
            })
            .collect();
        return Err(missing(&have));
    };
    let digest = chosen["digest"]
        .as_str()
        .context("index entry without digest")?;
    crate::digest::hex_part(digest)?;
    Ok(digest.to_string())
}

/// The manifest a layout tags (see [`crate::oci::layout::read_manifest_digest`]):
/// its digest and exact bytes, checked against each other.
fn layout_manifest(dir: &Path) -> Result<(String, Vec<u8>)> {
    if !dir.join("index.json").is_file() {
        bail!(ImageError::NoIndex(dir.to_path_buf()));
    }
    let digest = crate::oci::layout::read_manifest_digest(dir)?;
    let bytes = crate::oci::layout::read_blob(dir, &digest).context("reading its manifest")?;
    Ok((digest, bytes))
}

/// The config digest of `manifest`, which must be a single-platform image manifest (an
/// index or another artifact is no image to read).
fn image_config_digest<'a>(manifest: &'a Value, label: &str) -> Result<&'a str> {
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(crate::oci::media::OCI_MANIFEST);
    if !crate::oci::media::is_image_manifest(media_type) {
        bail!("{label} holds a {media_type}, not a single-platform image manifest");
    }
    manifest["config"]["digest"]
        .as_str()
        .with_context(|| format!("the manifest of {label} has no config"))
}

/// The single-platform image a layout tags, read without any network: the one layout
/// reader behind `open` and the push sink.
pub fn open_layout(dir: &Path) -> Result<Image> {
    let (_, bytes) = layout_manifest(dir)?;
    let label = dir.display().to_string();
    let manifest = parse_json(&bytes, "manifest", &label)?;
    let config_digest = image_config_digest(&manifest, &label)?;
    let config_bytes = crate::oci::layout::read_blob(dir, config_digest)
        .with_context(|| format!("reading the config of {label}"))?;
    Image::from_bytes(
        label,
        Origin::Layout(dir.to_path_buf()),
        bytes,
        config_bytes,
    )
}

/// Open what `spec` names (see [`origin_of`]).
pub async fn open(spec: &str, remote: &Remote, cache: &Cache) -> Result<Opened> {
    let origin = origin_of(spec)?;
    let (digest, bytes) = match &origin {
        Origin::Layout(dir) => layout_manifest(dir).with_context(|| format!("reading {spec}"))?,
        Origin::Registry(reference) => {
            let fetched = remote.client()?.get_manifest(reference).await?;
            cache.write_blob(&fetched.bytes)?;
            (fetched.digest, fetched.bytes)
        }
        Origin::Build => bail!("{spec} names no stored image"),
    };
    let manifest = parse_json(&bytes, "manifest", spec)?;
    if crate::oci::media::json_is_index(&manifest) {
        return Ok(Opened::Index(Index {
            label: spec.into(),
            digest,
            manifest,
            origin,
        }));
    }
    let image = Image::read(spec.into(), origin, bytes, manifest, remote, cache).await?;
    Ok(Opened::Image(Box::new(image)))
}

impl Index {
    /// The index's `linux/{arch}` image; `missing` as for [`select_platform`].
    pub async fn platform(
        &self,
        arch: &str,
        remote: &Remote,
        cache: &Cache,
        missing: impl FnOnce(&[String]) -> anyhow::Error,
    ) -> Result<Image> {
        let digest = select_platform(&self.manifest, arch, missing)?;
        let bytes = match &self.origin {
            Origin::Layout(dir) => crate::oci::layout::read_blob(dir, &digest)
                .with_context(|| format!("reading the linux/{arch} manifest of {}", self.label))?,
            Origin::Registry(r) => {
                cached_or_fetched(remote, cache, r, &digest, Small::Manifest).await?
            }
            // An index is read from a layout or a registry; a build makes single images.
            Origin::Build => bail!("{} is an index no layout or registry holds", self.label),
        };
        let manifest = parse_json(&bytes, "manifest", &self.label)?;
        let origin = self.origin.clone();
        Image::read(self.label.clone(), origin, bytes, manifest, remote, cache).await
    }
}

impl Image {
    /// The image of these manifest and config bytes (the digest is the manifest's hash).
    pub fn from_bytes(
        label: String,
        origin: Origin,
        manifest_bytes: Vec<u8>,
        config_bytes: Vec<u8>,
    ) -> Result<Image> {
        Ok(Image {
            manifest: parse_json(&manifest_bytes, "manifest", &label)?,
            config: parse_json(&config_bytes, "config", &label)?,
            manifest_digest: crate::digest::of_bytes(&manifest_bytes),
            label,
            origin,
            manifest_bytes,
            config_bytes,
        })
    }

    /// The image whose manifest is `manifest_bytes`, with its config.
    async fn read(
        label: String,
        origin: Origin,
        manifest_bytes: Vec<u8>,
        manifest: Value,
        remote: &Remote,
        cache: &Cache,
    ) -> Result<Image> {
        let config_digest = image_config_digest(&manifest, &label)?;
        let config_bytes = match &origin {
            Origin::Layout(dir) => crate::oci::layout::read_blob(dir, config_digest),
            Origin::Registry(r) => {
                cached_or_fetched(remote, cache, r, config_digest, Small::Config).await
            }
            Origin::Build => cache
                .read_blob(config_digest)
                .context("the config is not in the cache"),
        }
        .with_context(|| format!("reading the config of {label}"))?;
        Image::from_bytes(label, origin, manifest_bytes, config_bytes)
    }

    /// The config's digest, as the manifest names it.
    pub fn config_digest(&self) -> Option<&str> {
        self.manifest["config"]["digest"].as_str()
    }

    /// The manifest's media type (OCI's when it names none, as OCI manifests may).
    pub fn media_type(&self) -> &str {
        self.manifest["mediaType"]
            .as_str()
            .unwrap_or(crate::oci::media::OCI_MANIFEST)
    }

    /// The layout the image was read from, if it was.
    pub fn layout_dir(&self) -> Option<&Path> {
        match &self.origin {
            Origin::Layout(dir) => Some(dir),
            _ => None,
        }
    }

    /// Layer descriptors as stored: (media type, digest, size); lenient, for audits that
    /// report what is wrong with them.
    pub fn layers(&self) -> Vec<(String, String, u64)> {
        self.manifest["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        (
                            l["mediaType"].as_str().unwrap_or_default().to_string(),
                            l["digest"].as_str().unwrap_or_default().to_string(),
                            l["size"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Layer descriptors checked and with OCI media types, for unpacking.
    pub fn descriptors(&self) -> Result<Vec<Descriptor>> {
        self.manifest["layers"]
            .as_array()
            .with_context(|| format!("{}: the manifest lists no layers", self.label))?
            .iter()
            .map(Descriptor::from_json)
            .collect()
    }

    /// Hash every layer blob the image's layout holds: a layout whose bytes do not match
    /// their names is never called identical or reproducible. (Blobs it leaves out are
    /// verified when they are fetched.)
    pub fn check_layout_blobs(&self) -> Result<()> {
        let Origin::Layout(dir) = &self.origin else {
            return Ok(());
        };
        for (_, digest, _) in self.layers() {
            let path = crate::oci::layout::blob_path(dir, &digest)?;
            if !path.is_file() {
                continue;
            }
            let actual = crate::digest::of_file(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if actual != digest {
                return Err(crate::oci::layout::LayoutError::CorruptBlob(path).into());
            }
        }
        Ok(())
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.manifest["annotations"][key].as_str()
    }

    /// Where the blob's bytes are: the layout's file, else the cache's (verified), else the
    /// image's registry or, for a layout that left the base layers out, the base its
    /// annotations name. The one chain every reader and the push sink follow; a layout
    /// file is not hashed here (see [`Image::blob`]).
    pub fn locate(&self, digest: &str, cache: &Cache) -> Result<Location> {
        if let Origin::Layout(dir) = &self.origin {
            let path = crate::oci::layout::blob_path(dir, digest)?;
            if path.is_file() {
                return Ok(Location::Layout(path));
            }
        }
        if let Some(path) = cache.verified_blob(digest) {
            return Ok(Location::Cache(path));
        }
        let from = match &self.origin {
            Origin::Registry(r) => r.clone(),
            Origin::Layout(_) | Origin::Build => {
                let Some(base) = self.annotation(provenance::BASE_NAME) else {
                    return Err(MissingBlob {
                        digest: digest.to_string(),
                        image: self.label.clone(),
                    }
                    .into());
                };
                parse_reference(base).with_context(|| format!("the base of {}", self.label))?
            }
        };
        Ok(Location::Remote {
            from,
            keep_at: cache.blob_path(digest)?,
        })
    }

    /// A local file holding the blob, its bytes checked against the digest: fetched into
    /// the cache when it is remote.
    pub async fn blob(&self, digest: &str, remote: &Remote, cache: &Cache) -> Result<LocalBlob> {
        match self.locate(digest, cache)? {
            Location::Layout(path) => {
                // Audits certify what they read: a layout blob is hashed before any use.
                let actual = crate::digest::of_file(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                if actual != digest {
                    return Err(crate::oci::layout::LayoutError::CorruptBlob(path).into());
                }
                Ok(LocalBlob {
                    path,
                    fetched: None,
                })
            }
            Location::Cache(path) => Ok(LocalBlob {
                path,
                fetched: None,
            }),
            Location::Remote { from, keep_at } => {
                // The descriptor's size bounds the download; a digest no descriptor names
                // (never the case for layers) gets Lambda's own limit on an image.
                let max = self
                    .layers()
                    .into_iter()
                    .find(|(_, d, _)| d == digest)
                    .map_or(10 << 30, |(_, _, size)| size);
                let fetched = remote
                    .client()?
                    .get_blob_to(from.registry(), from.repository(), digest, max, &keep_at)
                    .await
                    .with_context(|| {
                        format!(
                            "fetching layer {digest} of {} from {}",
                            self.label,
                            from.whole()
                        )
                    })?;
                cache.mark_verified(digest);
                Ok(LocalBlob {
                    path: keep_at,
                    fetched: Some(fetched),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The blob locator on a layout: hit, miss, corrupt; no registry needed.
    use super::*;
    use serde_json::json;

    struct Fixture {
        dir: tempfile::TempDir,
        cache: Cache,
        layer: Vec<u8>,
        digest: String,
    }

    /// A layout holding one image whose one layer blob is `in_layout` or not; the image
    /// names a base when `base` is given.
    fn fixture(in_layout: bool, base: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let cache = Cache::at(dir.path().join("cache")).unwrap();
        let put = |bytes: &[u8]| {
            let d = crate::digest::of_bytes(bytes);
            std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
            d
        };
        let layer = b"layer bytes".to_vec();
        let digest = crate::digest::of_bytes(&layer);
        if in_layout {
            put(&layer);
        }
        let config = put(br#"{"architecture":"amd64","os":"linux"}"#);
        let mut manifest = json!({
            "schemaVersion": 2, "mediaType": crate::oci::media::OCI_MANIFEST,
            "config": {"mediaType": crate::oci::media::OCI_CONFIG, "digest": config, "size": 36},
            "layers": [{"mediaType": crate::oci::media::OCI_LAYER_GZIP, "digest": digest, "size": layer.len()}],
        });
        if let Some(b) = base {
            manifest["annotations"] = json!({provenance::BASE_NAME: b});
        }
        let m = serde_json::to_vec(&manifest).unwrap();
        let md = put(&m);
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
                {"mediaType": crate::oci::media::OCI_MANIFEST, "digest": md, "size": m.len(),
                 "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
            .unwrap(),
        )
        .unwrap();
        Fixture {
            dir,
            cache,
            layer,
            digest,
        }
    }

    fn image(f: &Fixture) -> Image {
        open_layout(&f.dir.path().join("layout")).unwrap()
    }

    #[tokio::test]
    async fn a_layout_blob_is_found_and_hashed_before_use() {
        let f = fixture(true, None);
        let img = image(&f);
        assert!(matches!(
            img.locate(&f.digest, &f.cache).unwrap(),
            Location::Layout(_)
        ));
        let remote = Remote::new(&[]);
        let blob = img.blob(&f.digest, &remote, &f.cache).await.unwrap();
        assert_eq!(std::fs::read(blob.path).unwrap(), f.layer);
        // Damaged in the layout: refused, never handed out.
        std::fs::write(
            crate::oci::layout::blob_path(&f.dir.path().join("layout"), &f.digest).unwrap(),
            b"layer bytez",
        )
        .unwrap();
        let err = img.blob(&f.digest, &remote, &f.cache).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("does not match its digest"),
            "{err:#}"
        );
        assert!(img.check_layout_blobs().is_err());
    }

    #[test]
    fn a_blob_the_layout_leaves_out_comes_from_the_cache_only_if_intact() {
        let f = fixture(false, Some("reg.test/lambda/python:3.11"));
        let img = image(&f);
        f.cache.write_blob(&f.layer).unwrap();
        assert!(matches!(
            img.locate(&f.digest, &f.cache).unwrap(),
            Location::Cache(_)
        ));
        std::fs::write(f.cache.blob_path(&f.digest).unwrap(), b"layer bytez").unwrap();
        // A damaged cache entry is dropped: the base's registry is asked instead.
        match img.locate(&f.digest, &f.cache).unwrap() {
            Location::Remote { from, keep_at } => {
                assert_eq!(from.repository(), "lambda/python");
                assert_eq!(keep_at, f.cache.blob_path(&f.digest).unwrap());
            }
            other => panic!("expected the base registry, got {other:?}"),
        }
        assert!(!f.cache.blob_path(&f.digest).unwrap().exists());
    }

    #[test]
    fn a_blob_nobody_holds_is_a_typed_miss() {
        let f = fixture(false, None);
        let err = image(&f).locate(&f.digest, &f.cache).unwrap_err();
        assert!(err.downcast_ref::<MissingBlob>().is_some(), "{err:#}");
    }
}
