//! Where an audited image comes from: an OCI layout on disk (`oci:DIR`, or a directory
//! holding `oci-layout`) or a registry reference. Blobs are found in the layout, then in
//! the cache, then fetched (verified) from the image's registry or, for base layers a
//! layout left out, from the registry its `org.opencontainers.image.base.name` names.

use crate::base::parse_reference;
use crate::cache::Cache;
use crate::error::hint;
use crate::registry::{self, Client, Reference};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum Origin {
    Layout(PathBuf),
    Registry(Reference),
}

/// A single-platform image: its manifest and config, exactly as stored.
#[derive(Debug, Clone)]
pub struct Image {
    pub label: String,
    pub origin: Origin,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_bytes: Vec<u8>,
    pub config: Value,
}

/// What a reference named: an image, or an index (which Lambda refuses).
#[derive(Debug, Clone)]
pub enum Opened {
    Image(Box<Image>),
    Index {
        label: String,
        digest: String,
        manifest: Value,
    },
}

impl Opened {
    /// The image, or an error for an index (inspect and diff compare single images).
    pub fn image(self) -> Result<Image> {
        match self {
            Opened::Image(i) => Ok(*i),
            Opened::Index { label, .. } => bail!(hint(
                format!("{label} is an image index (multi-platform), not a single image"),
                "name one platform's manifest by digest (REPOSITORY@sha256:...)"
            )),
        }
    }
}

/// A layout path when `spec` is `oci:DIR` or an existing layout directory.
fn layout_dir(spec: &str) -> Option<PathBuf> {
    if let Some(dir) = spec.strip_prefix("oci:") {
        // `oci:DIR:TAG` as skopeo writes it: the tag part is ignored (one image per layout).
        let dir = match dir.rsplit_once(':') {
            Some((d, _)) if Path::new(d).join("oci-layout").is_file() => d,
            _ => dir,
        };
        return Some(PathBuf::from(dir));
    }
    let path = Path::new(spec);
    path.join("oci-layout")
        .is_file()
        .then(|| path.to_path_buf())
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))
}

fn read_layout_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = dir
        .join("blobs/sha256")
        .join(crate::digest::hex_part(digest)?);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let got = crate::digest::of_bytes(&bytes);
    if got != digest {
        bail!(
            "blob {} has digest {got}: the layout is corrupted",
            path.display()
        );
    }
    Ok(bytes)
}

fn is_index(manifest: &Value) -> bool {
    matches!(
        manifest.get("mediaType").and_then(|m| m.as_str()),
        Some(registry::MEDIA_OCI_INDEX) | Some(registry::MEDIA_DOCKER_LIST)
    ) || (manifest.get("manifests").is_some() && manifest.get("layers").is_none())
}

pub async fn open(spec: &str, client: &Client, cache: &Cache) -> Result<Opened> {
    if let Some(dir) = layout_dir(spec) {
        let index_path = dir.join("index.json");
        if !index_path.is_file() {
            bail!(hint(
                format!(
                    "{} is not an OCI image layout (no index.json)",
                    dir.display()
                ),
                "build one with `ocilambda build`, or give a registry reference"
            ));
        }
        let digest = crate::sink::layout::read_manifest_digest(&dir)?;
        let bytes = read_layout_blob(&dir, &digest)?;
        let manifest = parse_json(&bytes, "the manifest")?;
        if is_index(&manifest) {
            return Ok(Opened::Index {
                label: spec.into(),
                digest,
                manifest,
            });
        }
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .context("manifest without config")?;
        let config_bytes = read_layout_blob(&dir, config_digest)?;
        return Ok(Opened::Image(Box::new(Image {
            label: spec.into(),
            origin: Origin::Layout(dir),
            config: parse_json(&config_bytes, "the config")?,
            config_bytes,
            manifest_digest: digest,
            manifest,
            manifest_bytes: bytes,
        })));
    }
    let path = Path::new(spec);
    if path.exists() || spec.starts_with('.') || spec.starts_with('/') {
        bail!(hint(
            format!("{spec} is not an OCI image layout (no oci-layout file)"),
            "give the directory `ocilambda build` wrote (default .ocilambda/image), or a registry reference"
        ));
    }
    let reference = parse_reference(spec)?;
    let fetched = client.get_manifest(&reference).await?;
    cache.write_blob(&fetched.bytes)?;
    let manifest = parse_json(&fetched.bytes, "the manifest")?;
    if is_index(&manifest) {
        return Ok(Opened::Index {
            label: spec.into(),
            digest: fetched.digest,
            manifest,
        });
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("manifest without config")?;
    let config_bytes = match cache.read_blob(config_digest) {
        Some(b) => b,
        None => {
            let p = cache.blob_path(config_digest)?;
            client
                .get_blob_to(
                    reference.registry(),
                    reference.repository(),
                    config_digest,
                    &p,
                )
                .await?;
            std::fs::read(&p)?
        }
    };
    Ok(Opened::Image(Box::new(Image {
        label: spec.into(),
        origin: Origin::Registry(reference),
        config: parse_json(&config_bytes, "the config")?,
        config_bytes,
        manifest_digest: fetched.digest,
        manifest,
        manifest_bytes: fetched.bytes,
    })))
}

impl Image {
    /// Layer descriptors: (media type, digest, size).
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

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.manifest["annotations"][key].as_str()
    }

    /// A local file holding the blob, fetching it into the cache when needed.
    pub async fn blob(&self, digest: &str, client: &Client, cache: &Cache) -> Result<PathBuf> {
        if let Origin::Layout(dir) = &self.origin {
            let p = dir
                .join("blobs/sha256")
                .join(crate::digest::hex_part(digest)?);
            if p.is_file() {
                return Ok(p);
            }
        }
        let cached = cache.blob_path(digest)?;
        if cached.is_file() {
            return Ok(cached);
        }
        let (registry, repository) = match &self.origin {
            Origin::Registry(r) => (r.registry().to_string(), r.repository().to_string()),
            Origin::Layout(dir) => {
                let base = self.annotation("org.opencontainers.image.base.name").with_context(|| {
                    format!(
                        "blob {digest} is not in the layout {} and the image names no base to fetch it from",
                        dir.display()
                    )
                })?;
                let r = parse_reference(base)?;
                (r.registry().to_string(), r.repository().to_string())
            }
        };
        client
            .get_blob_to(&registry, &repository, digest, &cached)
            .await
            .with_context(|| format!("fetching layer {digest} of {}", self.label))?;
        Ok(cached)
    }
}
