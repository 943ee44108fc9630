//! OCI image layouts on disk, the reading side: `index.json`, the image ocilambda tags in
//! it, blobs checked against their names. Writing a layout is the layout sink's
//! ([`crate::sink::layout`]); both agree on the vocabulary here.

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The ref name (tag) ocilambda gives its image in a layout.
pub const REF_NAME: &str = "latest";

/// Why a layout cannot be written; the command layer words the advice.
#[derive(Debug)]
pub enum LayoutError {
    /// The output exists and is not an OCI image layout (nor an empty directory).
    NotALayout(PathBuf),
    /// The layout's `latest` tag names an image ocilambda did not build.
    ForeignTag(PathBuf),
    /// A blob in the layout does not match its name.
    CorruptBlob(PathBuf),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::NotALayout(p) => write!(
                f,
                "{} exists and is not an OCI image layout; refusing to replace it",
                p.display()
            ),
            LayoutError::ForeignTag(p) => write!(
                f,
                "the layout at {} already tags an image `{REF_NAME}` that ocilambda did not build; refusing to replace it",
                p.display()
            ),
            LayoutError::CorruptBlob(p) => {
                write!(f, "{} does not match its digest", p.display())
            }
        }
    }
}

impl std::error::Error for LayoutError {}

pub fn read_index(dest: &Path) -> Result<Value> {
    let path = dest.join("index.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", path.display())),
        // A layout cut short before its index was written holds no image yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::media::OCI_INDEX,
            "manifests": [],
        })),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn ref_name(entry: &Value) -> Option<&str> {
    entry["annotations"]["org.opencontainers.image.ref.name"].as_str()
}

pub fn entry_digest(entry: &Value) -> Result<&str> {
    entry["digest"]
        .as_str()
        .context("an index.json entry has no digest")
}

/// The image manifest digest the layout's `index.json` tags `latest` (ocilambda's tag), or
/// its only image manifest when nothing is tagged `latest` (a layout another tool wrote).
pub fn read_manifest_digest(dir: &Path) -> Result<String> {
    let index = read_index(dir)?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    if let Some(e) = entries.iter().find(|e| ref_name(e) == Some(REF_NAME)) {
        return Ok(entry_digest(e)?.to_string());
    }
    let images: Vec<&Value> = entries
        .iter()
        .filter(|e| e["artifactType"].is_null())
        .collect();
    match images.as_slice() {
        [one] => Ok(entry_digest(one)?.to_string()),
        [] => anyhow::bail!("{}/index.json lists no image", dir.display()),
        _ => anyhow::bail!(
            "{}/index.json lists {} images and none is tagged `{REF_NAME}`",
            dir.display(),
            images.len()
        ),
    }
}

/// Where a layout keeps the blob `digest`.
pub fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    Ok(dir.join("blobs/sha256").join(super::check_digest(digest)?))
}

/// A (small) layout blob's bytes, checked against its digest.
pub fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(dir, digest)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if crate::digest::of_bytes(&bytes) != digest {
        return Err(LayoutError::CorruptBlob(path).into());
    }
    Ok(bytes)
}
