//! Image sources: an image that already exists, for the commands that read one (`inspect`,
//! `diff`, `lint`, `verify`, `invoke`). IMAGE is an OCI layout on disk (`oci:DIR`, or a
//! directory holding `oci-layout` or `index.json`) or a registry reference, read down to
//! its manifest and config; an index is returned as such, to refuse or to pick a platform
//! from.
//!
//! Blobs are found in the layout, then in the cache, then fetched (verified) into the
//! cache from the image's registry or, for the base layers a layout made without
//! `--complete` leaves out, from the base its `org.opencontainers.image.base.name` names.
//!
//! Not here: the base a build starts from ([`crate::base`]: tag cache, `--offline`), or
//! writing images ([`crate::sink`]).

use crate::base::{Descriptor, parse_reference};
use crate::build::provenance;
use crate::cache::Cache;
use crate::error::hint;
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

/// Where IMAGE points.
#[derive(Debug, Clone)]
pub enum Origin {
    Layout(PathBuf),
    Registry(Reference),
}

/// A single-platform image: its manifest and config, exactly as stored.
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

/// Does `dir` hold an OCI image layout?
pub fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() || dir.join("index.json").is_file()
}

/// The error for an IMAGE that names a path but no layout.
pub fn not_a_layout(spec: &str) -> anyhow::Error {
    hint(
        format!("no OCI image layout at {spec}"),
        "pass a layout directory written by `ocilambda build` (default .ocilambda/image), or a registry reference REGISTRY/REPOSITORY[:TAG]",
    )
}

/// Where `spec` points: a layout (`oci:DIR[:TAG]`, or a layout directory), else a registry
/// reference. Something that looks like a path is never taken for a reference.
pub fn locate(spec: &str) -> Result<Origin> {
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

fn layout_blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    Ok(dir
        .join("blobs/sha256")
        .join(crate::digest::hex_part(digest)?))
}

/// A layout blob's bytes, checked against its digest.
fn read_layout_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = layout_blob_path(dir, digest)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let got = crate::digest::of_bytes(&bytes);
    if got != digest {
        bail!(
            "blob {} has digest {got}, not {digest}: the layout is corrupted",
            path.display()
        );
    }
    Ok(bytes)
}

/// Fetch a blob of `from`'s repository into the cache (verified) and read it: for small
/// blobs (configs) the cache lacks.
pub async fn fetch_small_blob(
    client: &Client,
    cache: &Cache,
    from: &Reference,
    digest: &str,
) -> Result<Vec<u8>> {
    let path = cache.blob_path(digest)?;
    client
        .get_blob_to(from.registry(), from.repository(), digest, &path)
        .await?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
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

/// Open what `spec` names (see [`locate`]).
pub async fn open(spec: &str, remote: &Remote, cache: &Cache) -> Result<Opened> {
    let origin = locate(spec)?;
    let (digest, bytes) = match &origin {
        Origin::Layout(dir) => {
            if !dir.join("index.json").is_file() {
                bail!(hint(
                    format!(
                        "{} is not an OCI image layout (no index.json)",
                        dir.display()
                    ),
                    "build one with `ocilambda build`, or give a registry reference"
                ));
            }
            let digest = crate::sink::layout::read_manifest_digest(dir)?;
            let bytes = read_layout_blob(dir, &digest)
                .with_context(|| format!("reading the manifest of {spec}"))?;
            (digest, bytes)
        }
        Origin::Registry(reference) => {
            let fetched = remote.client()?.get_manifest(reference).await?;
            cache.write_blob(&fetched.bytes)?;
            (fetched.digest, fetched.bytes)
        }
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
    let image = Image::read(spec.into(), origin, digest, bytes, manifest, remote, cache).await?;
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
            Origin::Layout(dir) => read_layout_blob(dir, &digest)
                .with_context(|| format!("reading the linux/{arch} manifest of {}", self.label))?,
            Origin::Registry(r) => {
                let pinned = Reference::with_digest(
                    r.registry().to_string(),
                    r.repository().to_string(),
                    digest.clone(),
                );
                let fetched = remote.client()?.get_manifest(&pinned).await?;
                cache.write_blob(&fetched.bytes)?;
                fetched.bytes
            }
        };
        let manifest = parse_json(&bytes, "manifest", &self.label)?;
        let origin = self.origin.clone();
        Image::read(
            self.label.clone(),
            origin,
            digest,
            bytes,
            manifest,
            remote,
            cache,
        )
        .await
    }
}

impl Image {
    /// The image whose manifest is `manifest`, with its config.
    async fn read(
        label: String,
        origin: Origin,
        manifest_digest: String,
        manifest_bytes: Vec<u8>,
        manifest: Value,
        remote: &Remote,
        cache: &Cache,
    ) -> Result<Image> {
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .with_context(|| format!("the manifest of {label} has no config"))?;
        let config_bytes = match &origin {
            Origin::Layout(dir) => read_layout_blob(dir, config_digest),
            Origin::Registry(r) => match cache.read_blob(config_digest) {
                Some(bytes) => Ok(bytes),
                None => fetch_small_blob(remote.client()?, cache, r, config_digest).await,
            },
        }
        .with_context(|| format!("reading the config of {label}"))?;
        Ok(Image {
            config: parse_json(&config_bytes, "config", &label)?,
            label,
            origin,
            config_bytes,
            manifest_digest,
            manifest,
            manifest_bytes,
        })
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

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.manifest["annotations"][key].as_str()
    }

    /// A local file holding the blob: the layout's, else the cache's, else fetched into
    /// the cache from the image's registry or, for a layout, its base's.
    pub async fn blob(&self, digest: &str, remote: &Remote, cache: &Cache) -> Result<LocalBlob> {
        if let Origin::Layout(dir) = &self.origin {
            let path = layout_blob_path(dir, digest)?;
            if path.is_file() {
                return Ok(LocalBlob {
                    path,
                    fetched: None,
                });
            }
        }
        let path = cache.blob_path(digest)?;
        if path.is_file() {
            return Ok(LocalBlob {
                path,
                fetched: None,
            });
        }
        let from = match &self.origin {
            Origin::Registry(r) => r.clone(),
            Origin::Layout(_) => {
                let Some(base) = self.annotation(provenance::BASE_NAME) else {
                    bail!(hint(
                        format!(
                            "layer {digest} is missing from {} and the manifest names no base to fetch it from",
                            self.label
                        ),
                        "build with --complete, or give the image's registry reference"
                    ));
                };
                parse_reference(base).with_context(|| format!("the base of {}", self.label))?
            }
        };
        let fetched = remote
            .client()?
            .get_blob_to(from.registry(), from.repository(), digest, &path)
            .await
            .with_context(|| {
                format!(
                    "fetching layer {digest} of {} from {}",
                    self.label,
                    from.whole()
                )
            })?;
        Ok(LocalBlob {
            path,
            fetched: Some(fetched),
        })
    }
}
