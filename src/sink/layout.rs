//! The OCI image-layout sink. A new layout is staged next to its final place and renamed
//! in; an existing one (ours, or one skopeo or umoci also write to) gets ocilambda's tag
//! added or replaced in place, its `index.json` swapped atomically, so readers see the
//! previous image or the new one, never a half-written mix, and nothing ocilambda did not
//! write is ever removed.
//!
//! Base layer blobs are written only with `--complete`: the image-layout spec allows a
//! manifest to reference blobs the layout does not hold, and pushing fetches them lazily.

use crate::cache::Cache;
use crate::image::{Image, Referrer};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

pub use crate::oci::layout::{LayoutError, REF_NAME};
use crate::oci::layout::{entry_digest, read_index, ref_name};

/// The annotation every image ocilambda builds carries; an image tagged [`REF_NAME`]
/// without it belongs to someone else and is never replaced.
const OWN_IMAGE_MARK: &str = crate::oci::annotation::VERSION;

/// The artifact type of the referrers ocilambda attaches (the SBOM): when the image they
/// refer to is replaced, they go with it.
const OWN_REFERRER_TYPE: &str = crate::oci::media::CYCLONEDX_JSON;

/// Put a cache blob into the layout as a file of its own: a reflink where the file system
/// offers one (instant, no extra space until either side changes), a copy otherwise. Never
/// a hard link: a layout that shares an inode with the cache would change when the cache
/// entry is damaged, and the other way round.
fn place_blob(cache: &Cache, digest: &str, blobs: &Path) -> Result<()> {
    let to = blobs.join(crate::digest::hex_part(digest)?);
    if holds(&to, digest) {
        return Ok(());
    }
    // Only bytes that match their digest go in: a damaged cache entry is never copied.
    let from = cache
        .verified_blob(digest)
        .with_context(|| format!("blob {digest} is missing from the cache or damaged"))?;
    let tmp = blobs.join(format!(
        ".{}.tmp-{}",
        crate::digest::hex_part(digest)?,
        std::process::id()
    ));
    let copied = reflink_copy::reflink_or_copy(&from, &tmp)
        .with_context(|| format!("copying blob {digest} into the layout"))
        .and_then(|_| std::fs::rename(&tmp, &to).context("renaming a layout blob into place"));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

/// Whether the layout file `path` already holds the blob: an existing file is kept only
/// when its bytes match the digest (one a user or a crash damaged is written again).
fn holds(path: &Path, digest: &str) -> bool {
    path.is_file() && crate::digest::of_file(path).is_ok_and(|d| d == digest)
}

/// Write bytes as a layout blob (temporary file, then rename: a reader never sees half).
fn put_bytes(blobs: &Path, bytes: &[u8]) -> Result<()> {
    let digest = crate::digest::of_bytes(bytes);
    let to = blobs.join(crate::digest::hex_part(&digest)?);
    if holds(&to, &digest) {
        return Ok(());
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".blob.tmp-")
        .tempfile_in(blobs)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    crate::fs::persist_readable(tmp, &to)
}

/// Write `image` under the ref name `latest` in the layout at `dest`, plus its
/// `referrers`. `with_blobs` lists the layer digests whose blobs go in (all new layers,
/// plus the base's with `--complete`); each must be in the cache.
///
/// A new layout is written next to `dest` and renamed into place. An existing layout may
/// hold images of other tools (skopeo and umoci add to layouts): there only ocilambda's own
/// tag is added or replaced, as those tools do, and only blobs of the image it replaces
/// that nothing else references are removed.
pub fn write(
    dest: &Path,
    image: &Image,
    cache: &Cache,
    with_blobs: &[String],
    referrers: &[Referrer],
) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_new(dest, image, cache, with_blobs, referrers)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dest.display())),
        Ok(meta) if meta.is_dir() && dest.join("oci-layout").is_file() => {
            merge(dest, image, cache, with_blobs, referrers)
        }
        Ok(meta) if meta.is_dir() && is_empty_dir(dest) => {
            write_new(dest, image, cache, with_blobs, referrers)
        }
        Ok(_) => Err(LayoutError::NotALayout(dest.to_path_buf()).into()),
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// The `index.json` entries for the image and its referrers.
fn own_entries(image: &Image, referrers: &[Referrer]) -> Result<Vec<Value>> {
    let config = &image.config;
    let mut manifests = vec![serde_json::json!({
        "mediaType": crate::oci::media::OCI_MANIFEST,
        "digest": image.manifest_digest,
        "size": image.manifest_bytes.len(),
        "platform": {"os": config["os"], "architecture": config["architecture"]},
        "annotations": {"org.opencontainers.image.ref.name": REF_NAME},
    })];
    for r in referrers {
        manifests.push(serde_json::json!({
            "mediaType": crate::oci::media::OCI_MANIFEST,
            "digest": crate::digest::of_bytes(&r.manifest),
            "size": r.manifest.len(),
            "artifactType": r.artifact_type,
        }));
    }
    Ok(manifests)
}

/// Every blob of the image and referrers into `blobs`.
fn put_blobs(
    blobs: &Path,
    image: &Image,
    cache: &Cache,
    with_blobs: &[String],
    referrers: &[Referrer],
) -> Result<()> {
    put_bytes(blobs, &image.manifest_bytes)?;
    put_bytes(blobs, &image.config_bytes)?;
    for digest in with_blobs {
        place_blob(cache, digest, blobs)?;
    }
    for r in referrers {
        for blob in r.blobs.iter().chain(std::iter::once(&r.manifest)) {
            put_bytes(blobs, blob)?;
        }
    }
    Ok(())
}

fn index_json(manifests: Vec<Value>) -> Vec<u8> {
    crate::oci::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::media::OCI_INDEX,
        "manifests": manifests,
    }))
}

/// A layout where there was none (or an empty directory): staged next to `dest`, renamed
/// into place, so a failed build leaves nothing behind.
fn write_new(
    dest: &Path,
    image: &Image,
    cache: &Cache,
    with_blobs: &[String],
    referrers: &[Referrer],
) -> Result<()> {
    let (parent, name) = super::staging(dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let blobs = tmp.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(tmp.path().join("oci-layout"), LAYOUT_MARKER)?;
    put_blobs(&blobs, image, cache, with_blobs, referrers)?;
    std::fs::write(
        tmp.path().join("index.json"),
        index_json(own_entries(image, referrers)?),
    )?;
    let staged = tmp.keep();
    // rename(2) replaces an empty directory atomically, and fails on a non-empty one: a
    // directory that filled up since it was checked is never replaced.
    if let Err(e) = std::fs::rename(&staged, dest) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("moving the new layout to {}", dest.display()));
    }
    Ok(())
}

const LAYOUT_MARKER: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Add or replace ocilambda's tag in an existing layout, keeping every other manifest, its
/// blobs and any file ocilambda does not know. New blobs go in first and `index.json` is
/// replaced atomically, so a reader (or a kill at any point) sees the old index or the new
/// one with all its blobs; blobs only the replaced image used are removed last.
fn merge(
    dest: &Path,
    image: &Image,
    cache: &Cache,
    with_blobs: &[String],
    referrers: &[Referrer],
) -> Result<()> {
    // One writer at a time: two builds into one layout must not remove each other's blobs.
    let _lock = lock_dir(dest)?;
    let blobs = dest.join("blobs/sha256");
    let old = read_index(dest)?;
    let old_entries = old["manifests"].as_array().cloned().unwrap_or_default();
    let mut replaced = Vec::new();
    for entry in &old_entries {
        if ref_name(entry) == Some(REF_NAME) {
            let manifest = read_json_blob(dest, entry_digest(entry)?)?;
            if manifest["annotations"][OWN_IMAGE_MARK].as_str().is_none() {
                return Err(LayoutError::ForeignTag(dest.to_path_buf()).into());
            }
            replaced.push(entry_digest(entry)?.to_string());
        }
    }
    let mut kept = Vec::new();
    for entry in old_entries {
        let digest = entry_digest(&entry)?.to_string();
        if replaced.contains(&digest) || is_own_referrer_of(dest, &entry, &replaced) {
            replaced.push(digest);
            continue;
        }
        kept.push(entry);
    }
    std::fs::create_dir_all(&blobs)?;
    put_blobs(&blobs, image, cache, with_blobs, referrers)?;
    let mut manifests = own_entries(image, referrers)?;
    manifests.extend(kept);
    let mut index = old;
    index["manifests"] = Value::Array(manifests);
    let mut tmp = tempfile::Builder::new()
        .prefix(".index.json.tmp-")
        .tempfile_in(dest)?;
    std::io::Write::write_all(&mut tmp, &crate::oci::canonical_json(&index))?;
    crate::fs::persist_readable(tmp, &dest.join("index.json"))?;
    remove_unreferenced(dest, &index, &replaced);
    Ok(())
}

/// A blob of the layout parsed as JSON, after checking its bytes against its name.
fn read_json_blob(dest: &Path, digest: &str) -> Result<Value> {
    let path = dest
        .join("blobs/sha256")
        .join(crate::digest::hex_part(digest)?);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if crate::digest::of_bytes(&bytes) != digest {
        return Err(LayoutError::CorruptBlob(path).into());
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// An SBOM ocilambda attached to one of the images it is replacing.
fn is_own_referrer_of(dest: &Path, entry: &Value, replaced: &[String]) -> bool {
    if entry["artifactType"].as_str() != Some(OWN_REFERRER_TYPE) || ref_name(entry).is_some() {
        return false;
    }
    entry_digest(entry)
        .and_then(|d| read_json_blob(dest, d))
        .is_ok_and(|m| {
            m["subject"]["digest"]
                .as_str()
                .is_some_and(|s| replaced.iter().any(|r| r == s))
        })
}

/// The digests a manifest or index blob references, itself included, recursively.
fn referenced(dest: &Path, digest: &str, into: &mut HashSet<String>) -> Result<()> {
    if !into.insert(digest.to_string()) {
        return Ok(());
    }
    let value = read_json_blob(dest, digest)?;
    for d in value["config"]["digest"].as_str().into_iter().chain(
        value["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["digest"].as_str()),
    ) {
        into.insert(d.to_string());
    }
    for m in value["manifests"].as_array().into_iter().flatten() {
        referenced(dest, entry_digest(m)?, into)?;
    }
    Ok(())
}

/// Remove the blobs of the `replaced` manifests that the new `index` no longer reaches.
/// Best effort and conservative: if any manifest of the index cannot be read, nothing is
/// removed (a leftover blob costs space; a removed one would break someone's image).
fn remove_unreferenced(dest: &Path, index: &Value, replaced: &[String]) {
    let mut live = HashSet::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let Ok(digest) = entry_digest(entry) else {
            return;
        };
        if referenced(dest, digest, &mut live).is_err() {
            return;
        }
    }
    let mut old = HashSet::new();
    for digest in replaced {
        if referenced(dest, digest, &mut old).is_err() {
            return;
        }
    }
    for digest in old.difference(&live) {
        if let Ok(hex) = crate::digest::hex_part(digest) {
            let _ = std::fs::remove_file(dest.join("blobs/sha256").join(hex));
        }
    }
}

/// An exclusive `flock` on the layout directory, released when the file is dropped.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: a valid open descriptor; flock keeps no pointer.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", dir.display()));
    }
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::Origin;
    use crate::oci::layout::read_manifest_digest;
    use serde_json::json;

    /// An image whose manifest carries ocilambda's mark (or not) and one app layer,
    /// its layer blob in `cache`.
    pub(crate) fn image(cache: &Cache, app: &[u8], ours: bool) -> (Image, String) {
        let layer = cache.write_blob(app).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let config_digest = crate::digest::of_bytes(&config);
        let mut m = json!({"schemaVersion": 2, "mediaType": crate::oci::media::OCI_MANIFEST,
            "config": {"mediaType": crate::oci::media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": crate::oci::media::OCI_LAYER_GZIP, "digest": layer, "size": app.len()}]});
        if ours {
            m["annotations"] = json!({OWN_IMAGE_MARK: "0.0.0"});
        }
        let manifest = crate::oci::canonical_json(&m);
        let image = Image::from_bytes("test".into(), Origin::Build, manifest, config).unwrap();
        (image, layer)
    }

    fn blobs(dir: &Path) -> HashSet<String> {
        std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_rebuild_replaces_its_own_image_and_keeps_what_others_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        let dest = tmp.path().join("layout");
        // Someone else's image, tagged `theirs`, written first.
        let (theirs, their_layer) = image(&cache, b"their layer", false);
        write(
            &dest,
            &theirs,
            &cache,
            std::slice::from_ref(&their_layer),
            &[],
        )
        .unwrap();
        let mut index: Value =
            serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
        index["manifests"][0]["annotations"][crate::oci::annotation::REF_NAME] = json!("theirs");
        std::fs::write(dest.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dest.join("NOTES"), b"mine").unwrap();

        let (first, first_layer) = image(&cache, b"app v1", true);
        write(
            &dest,
            &first,
            &cache,
            std::slice::from_ref(&first_layer),
            &[],
        )
        .unwrap();
        assert_eq!(read_manifest_digest(&dest).unwrap(), first.manifest_digest);
        let (second, second_layer) = image(&cache, b"app v2", true);
        write(
            &dest,
            &second,
            &cache,
            std::slice::from_ref(&second_layer),
            &[],
        )
        .unwrap();
        assert_eq!(read_manifest_digest(&dest).unwrap(), second.manifest_digest);

        let left = blobs(&dest);
        let hex = |d: &str| d[7..].to_string();
        assert!(left.contains(&hex(&their_layer)) && left.contains(&hex(&theirs.manifest_digest)));
        assert!(left.contains(&hex(&second_layer)));
        assert!(
            !left.contains(&hex(&first_layer)),
            "the replaced image's own blobs go"
        );
        assert!(!left.contains(&hex(&first.manifest_digest)));
        assert_eq!(std::fs::read(dest.join("NOTES")).unwrap(), b"mine");
        // The blobs are files of their own: damaging the cache does not reach the layout.
        let layout_blob = dest.join("blobs/sha256").join(hex(&second_layer));
        std::fs::write(cache.blob_path(&second_layer).unwrap(), b"XXXXXX").unwrap();
        assert_eq!(std::fs::read(layout_blob).unwrap(), b"app v2");
    }

    #[test]
    fn a_damaged_blob_of_the_layout_is_written_again_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        let dest = tmp.path().join("layout");
        let (image, layer) = image(&cache, b"app v1", true);
        write(&dest, &image, &cache, std::slice::from_ref(&layer), &[]).unwrap();
        let in_layout = dest.join("blobs/sha256").join(&layer[7..]);
        std::fs::write(&in_layout, b"app vX").unwrap();
        write(&dest, &image, &cache, std::slice::from_ref(&layer), &[]).unwrap();
        assert_eq!(std::fs::read(&in_layout).unwrap(), b"app v1");
    }

    #[test]
    fn a_latest_that_is_not_ours_and_a_directory_that_is_no_layout_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        let dest = tmp.path().join("layout");
        let (theirs, l) = image(&cache, b"their layer", false);
        write(&dest, &theirs, &cache, &[l], &[]).unwrap();
        let (ours, l2) = image(&cache, b"app", true);
        let err = write(&dest, &ours, &cache, std::slice::from_ref(&l2), &[]).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(LayoutError::ForeignTag(_))),
            "{err:#}"
        );
        assert_eq!(read_manifest_digest(&dest).unwrap(), theirs.manifest_digest);

        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("file"), b"x").unwrap();
        let err = write(&other, &ours, &cache, &[l2], &[]).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(LayoutError::NotALayout(_))),
            "{err:#}"
        );
        assert_eq!(std::fs::read(other.join("file")).unwrap(), b"x");
    }
}
