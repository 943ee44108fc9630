//! The user cache (`$OCILAMBDA_CACHE_DIR`, else `$XDG_CACHE_HOME/ocilambda`, else
//! `~/.cache/ocilambda`): blobs by digest, base tag resolutions, and the metadata of
//! reusable layers keyed by everything that shapes them.
//!
//! Every write is a temp file renamed into place, and every name is derived from content
//! or from a key of inputs, so concurrent builds sharing the cache cannot corrupt it.
//! Credentials never come here.

use crate::layers::Layer;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagEntry {
    /// Digest of what the tag pointed to (an index or a manifest).
    pub digest: String,
    /// Seconds since the epoch when the tag was resolved.
    pub resolved_at: u64,
}

impl Cache {
    pub fn open() -> Result<Cache> {
        let root = if let Some(dir) =
            std::env::var_os("OCILAMBDA_CACHE_DIR").filter(|d| !d.is_empty())
        {
            PathBuf::from(dir)
        } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(dir).join("ocilambda")
        } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(home).join(".cache").join("ocilambda")
        } else {
            anyhow::bail!(crate::error::hint(
                "no cache directory: neither OCILAMBDA_CACHE_DIR, XDG_CACHE_HOME nor HOME is set",
                "set OCILAMBDA_CACHE_DIR to a writable directory"
            ));
        };
        Self::at(root)
    }

    pub fn at(root: PathBuf) -> Result<Cache> {
        for sub in ["blobs/sha256", "tags", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| {
                format!("creating cache directory {}", root.join(sub).display())
            })?;
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blob_dir().join(crate::digest::hex_part(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// A small blob (manifest, config), checked against its digest on the way out: a
    /// corrupted cache entry is treated as missing rather than trusted.
    pub fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(digest).ok()?).ok()?;
        (crate::digest::of_bytes(&bytes) == digest).then_some(bytes)
    }

    /// Store bytes under their own digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = crate::digest::of_bytes(bytes);
        let path = self.blob_path(&digest)?;
        if !path.is_file() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// A fresh temporary directory inside the cache (same filesystem as the blobs, so
    /// finished files can be renamed or hard-linked instead of copied).
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.root.join("tmp"))
            .context("creating a staging directory in the cache")
    }

    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().context("cache path has no parent")?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        persist_readable(tmp, path)
    }

    fn key_path(&self, kind: &str, key: &str) -> PathBuf {
        let name = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
        self.root.join(kind).join(format!("{name}.json"))
    }

    pub fn tag_get(&self, reference: &str, max_age: Option<Duration>) -> Option<TagEntry> {
        let bytes = std::fs::read(self.key_path("tags", reference)).ok()?;
        let entry: TagEntry = serde_json::from_slice(&bytes).ok()?;
        if let Some(max_age) = max_age {
            let now = now_secs();
            // `>=`, so a zero TTL means "always resolve again", even within one second.
            if now.saturating_sub(entry.resolved_at) >= max_age.as_secs() {
                return None;
            }
        }
        Some(entry)
    }

    pub fn tag_put(&self, reference: &str, digest: &str) -> Result<()> {
        let entry = TagEntry {
            digest: digest.to_string(),
            resolved_at: now_secs(),
        };
        self.write_atomic(
            &self.key_path("tags", reference),
            &serde_json::to_vec(&entry)?,
        )
    }

    /// A cached layer for `key`, only if its blob is still there.
    pub fn layer_get(&self, key: &str) -> Option<Layer> {
        let bytes = std::fs::read(self.key_path("layers", key)).ok()?;
        let layer: Layer = serde_json::from_slice(&bytes).ok()?;
        self.has_blob(&layer.digest).then_some(layer)
    }

    pub fn layer_put(&self, key: &str, layer: &Layer) -> Result<()> {
        self.write_atomic(&self.key_path("layers", key), &serde_json::to_vec(layer)?)
    }

    /// Small JSON records (e.g. tool versions) under a key.
    pub fn record_get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Option<T> {
        serde_json::from_slice(&std::fs::read(self.key_path("layers", key)).ok()?).ok()
    }

    pub fn record_put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.write_atomic(&self.key_path("layers", key), &serde_json::to_vec(value)?)
    }
}

/// Rename a finished temp file into place as 0644: tempfile creates 0600, and layout
/// blobs (hard links to cache blobs) must be readable by whoever unpacks or pushes them.
pub fn persist_readable(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupted_blob_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        let d = cache.write_blob(b"{}").unwrap();
        assert_eq!(cache.read_blob(&d).unwrap(), b"{}");
        std::fs::write(cache.blob_path(&d).unwrap(), b"{ }").unwrap();
        assert!(cache.read_blob(&d).is_none());
    }

    #[test]
    fn tag_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        cache.tag_put("r/x:1", "sha256:abc").unwrap();
        assert!(
            cache
                .tag_get("r/x:1", Some(Duration::from_secs(60)))
                .is_some()
        );
        assert!(cache.tag_get("r/x:1", None).is_some());
        let mut e = cache.tag_get("r/x:1", None).unwrap();
        e.resolved_at -= 120;
        cache
            .write_atomic(
                &cache.key_path("tags", "r/x:1"),
                &serde_json::to_vec(&e).unwrap(),
            )
            .unwrap();
        assert!(
            cache
                .tag_get("r/x:1", Some(Duration::from_secs(60)))
                .is_none()
        );
    }
}
