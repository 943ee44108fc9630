//! The OCI image-layout sink. The layout is written next to its final place and swapped
//! in with one atomic exchange, so readers see the previous layout or the new one, never
//! a half-written mix or nothing, and a failed build leaves the old layout untouched.
//!
//! Base layer blobs are written only with `--complete`: the image-layout spec allows a
//! manifest to reference blobs the layout does not hold, and pushing fetches them lazily.

use crate::cache::Cache;
use crate::image::Image;
use anyhow::{Context, Result};
use std::path::Path;

pub const REF_NAME: &str = "latest";

/// Put a cache blob into the layout: a hard link when the cache shares the filesystem
/// (instant, no extra space), a copy otherwise.
fn place_blob(cache: &Cache, digest: &str, blobs: &Path) -> Result<()> {
    let from = cache.blob_path(digest)?;
    let to = blobs.join(crate::digest::hex_part(digest)?);
    if to.exists() {
        return Ok(());
    }
    if std::fs::hard_link(&from, &to).is_err() {
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying blob {digest} into the layout"))?;
    }
    Ok(())
}

/// An artifact that refers to the image (OCI 1.1 `subject`), e.g. its SBOM: listed in
/// `index.json` next to the image, as OCI layouts hold referrers.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub manifest: Vec<u8>,
    pub artifact_type: String,
    /// Every blob the manifest references (config and layers).
    pub blobs: Vec<Vec<u8>>,
}

/// Write `image` as the only image (ref name `latest`) of the layout at `dest`, plus its
/// `referrers`. `with_blobs` lists the layer digests whose blobs go in (all new layers,
/// plus the base's with `--complete`); each must be in the cache.
pub fn write(
    dest: &Path,
    image: &Image,
    cache: &Cache,
    with_blobs: &[String],
    referrers: &[Referrer],
) -> Result<()> {
    refuse_to_replace_non_layout(dest)?;
    let (parent, name) = super::staging(dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let blobs = tmp.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(
        tmp.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let small = [
        (&image.manifest_digest, &image.manifest),
        (&image.config_digest, &image.config),
    ];
    for (digest, bytes) in small {
        std::fs::write(blobs.join(crate::digest::hex_part(digest)?), bytes)?;
    }
    for digest in with_blobs {
        place_blob(cache, digest, &blobs)?;
    }
    let config: serde_json::Value = serde_json::from_slice(&image.config)?;
    let mut manifests = vec![serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.manifest_digest,
        "size": image.manifest.len(),
        "platform": {"os": config["os"], "architecture": config["architecture"]},
        "annotations": {"org.opencontainers.image.ref.name": REF_NAME},
    })];
    for r in referrers {
        for blob in r.blobs.iter().chain(std::iter::once(&r.manifest)) {
            let digest = crate::digest::of_bytes(blob);
            std::fs::write(blobs.join(crate::digest::hex_part(&digest)?), blob)?;
        }
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": crate::digest::of_bytes(&r.manifest),
            "size": r.manifest.len(),
            "artifactType": r.artifact_type,
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    std::fs::write(
        tmp.path().join("index.json"),
        crate::image::canonical_json(&index),
    )?;

    let staged = tmp.keep();
    let swapped = if dest.exists() {
        // One atomic exchange: `dest` is the old layout until the instant it is the new
        // one, and the old one ends up where the new one was staged.
        exchange(&staged, dest)
    } else {
        std::fs::rename(&staged, dest)
    };
    if let Err(e) = swapped {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("moving the new layout to {}", dest.display()));
    }
    let _ = std::fs::remove_dir_all(&staged);
    Ok(())
}

/// `--output` must name a layout (or nothing, or an empty directory): replacing any other
/// directory would delete whatever it holds.
fn refuse_to_replace_non_layout(dest: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    let empty_dir = meta.is_dir() && std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none());
    if empty_dir || (meta.is_dir() && dest.join("oci-layout").is_file()) {
        return Ok(());
    }
    anyhow::bail!(crate::error::hint(
        format!(
            "{} exists and is not an OCI image layout; refusing to replace it",
            dest.display()
        ),
        "choose another --output (the default is <PROJECT_DIR>/.ocilambda/image), or remove it yourself"
    ))
}

/// Swap two directories atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 does not keep the pointers.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(err);
    }
    // A filesystem without RENAME_EXCHANGE: two renames, with a short window in which `b`
    // does not exist; on failure the old layout is put back.
    let mut aside = a.as_os_str().to_owned();
    aside.push(".old");
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(b, &aside)?;
    if let Err(e) = std::fs::rename(a, b) {
        let _ = std::fs::rename(&aside, b);
        return Err(e);
    }
    std::fs::rename(&aside, a)
}

/// The image manifest digest the layout's `index.json` names (its first entry; referrers
/// such as the SBOM follow it).
pub fn read_manifest_digest(dir: &Path) -> Result<String> {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json"))
            .with_context(|| format!("reading {}/index.json", dir.display()))?,
    )?;
    index["manifests"][0]["digest"]
        .as_str()
        .map(str::to_string)
        .context("index.json lists no manifest")
}
