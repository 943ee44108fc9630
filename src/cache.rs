//! The user cache (`$OCILAMBDA_CACHE_DIR`, else `$XDG_CACHE_HOME/ocilambda`, else
//! `~/.cache/ocilambda`): blobs by digest, base tag resolutions, and the metadata of
//! reusable layers keyed by everything that shapes them.
//!
//! Every write is a temp file renamed into place, and every name is derived from content
//! or from a key of inputs, so concurrent builds sharing the cache cannot corrupt it.
//! Credentials never come here.

use crate::layers::Layer;
use crate::report::{Event, Reporter};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Clone)]
pub struct Cache {
    root: PathBuf,
    /// Told when a corrupt entry is dropped: the cache repairs itself, but the user
    /// should know their disk or a tool changed it.
    reporter: Arc<dyn Reporter>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("root", &self.root).finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagEntry {
    /// Digest of what the tag pointed to (an index or a manifest).
    pub digest: String,
    /// Seconds since the epoch when the tag was resolved.
    pub resolved_at: u64,
}

impl Cache {
    /// The cache at `root` (the command layer's [`crate::config::Environment::cache_dir`]),
    /// reporting through `reporter`.
    pub fn open(root: &Path, reporter: Arc<dyn Reporter>) -> Result<Cache> {
        Ok(Cache {
            reporter,
            ..Self::at(root.to_path_buf())?
        })
    }

    /// The cache at `root`, reporting nothing (tests, tools).
    pub fn at(root: PathBuf) -> Result<Cache> {
        for sub in ["blobs/sha256", "blobs/verified", "tags", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| {
                format!("creating cache directory {}", root.join(sub).display())
            })?;
        }
        Ok(Cache {
            root,
            reporter: Arc::new(crate::report::Silent),
        })
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

    /// Whether the cache holds the blob with bytes that match its digest (see
    /// [`Cache::verified_blob`]).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.verified_blob(digest).is_some()
    }

    /// The path of the cached blob, only if its bytes match its digest. A full re-hash on
    /// every use would cost a second read of every reused layer, so the check is a
    /// fingerprint of the file (device, inode, size, mtime, ctime) recorded the last time
    /// its bytes were hashed: any write to the file changes its ctime, which no user can
    /// set back, so a changed fingerprint means the bytes are hashed again. A blob that
    /// does not match is removed with a warning, so it is fetched or rebuilt, never used.
    pub fn verified_blob(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_path(digest).ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        let mark = self.fingerprint_path(digest)?;
        let print = fingerprint(&meta);
        if std::fs::read_to_string(&mark).is_ok_and(|m| m == print) {
            return Some(path);
        }
        match crate::digest::of_file(&path) {
            Ok(actual) if actual == digest => {
                // Best effort: without the mark the next use hashes again.
                let _ = self.write_atomic(&mark, print.as_bytes());
                Some(path)
            }
            Ok(_) => {
                self.drop_corrupt(digest, &path);
                None
            }
            Err(_) => None,
        }
    }

    /// Record that the blob at `digest` was just written from bytes hashed on the way (a
    /// layer or zip writer, a verified download), so its first use need not hash it again.
    pub fn mark_verified(&self, digest: &str) {
        let (Ok(path), Some(mark)) = (self.blob_path(digest), self.fingerprint_path(digest)) else {
            return;
        };
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = self.write_atomic(&mark, fingerprint(&meta).as_bytes());
        }
    }

    fn fingerprint_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = crate::digest::hex_part(digest).ok()?;
        Some(self.root.join("blobs/verified").join(hex))
    }

    fn drop_corrupt(&self, digest: &str, path: &Path) {
        self.reporter.event(Event::Warning(format!(
            "the cached blob {digest} does not match its digest; removed it, it will be fetched or rebuilt"
        )));
        let _ = std::fs::remove_file(path);
        if let Some(mark) = self.fingerprint_path(digest) {
            let _ = std::fs::remove_file(mark);
        }
    }

    /// A small blob (manifest, config), checked against its digest on the way out: a
    /// corrupted cache entry is removed and treated as missing rather than trusted.
    pub fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest).ok()?;
        let bytes = std::fs::read(&path).ok()?;
        if crate::digest::of_bytes(&bytes) != digest {
            self.drop_corrupt(digest, &path);
            return None;
        }
        Some(bytes)
    }

    /// Store bytes under their own digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = crate::digest::of_bytes(bytes);
        let path = self.blob_path(&digest)?;
        // A file already there is kept only if it is intact: a damaged entry is replaced.
        if self.verified_blob(&digest).is_none() {
            self.write_atomic(&path, bytes)?;
            self.mark_verified(&digest);
        }
        Ok(digest)
    }

    /// A fresh staging directory inside the cache (same filesystem as the blobs, so
    /// finished files can be renamed or hard-linked instead of copied), owned by this
    /// process until dropped. Stale ones, left by builds that were killed, are swept first.
    pub fn temp_dir(&self, prefix: &str) -> Result<StagingDir> {
        let tmp = self.root.join("tmp");
        sweep_stale_staging(&tmp);
        StagingDir::create(&tmp, prefix).context("creating a staging directory in the cache")
    }

    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().context("cache path has no parent")?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        crate::fs::persist_readable(tmp, path)
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

    /// A cached layer for `key`, only if its blob is still there and intact.
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

/// A staging directory `tmp/NAME` and its lock file `tmp/NAME.lock`, locked (flock) for
/// as long as the value lives: the kernel drops the lock when the process dies however it
/// dies, so a directory whose lock is free belongs to no live build.
///
/// Order is what makes sweeping safe: the lock file is created and locked before the
/// directory, and removed after it (by its owner or by a sweeper holding the lock).
#[derive(Debug)]
pub struct StagingDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: std::fs::File,
}

impl StagingDir {
    fn create(tmp: &Path, prefix: &str) -> Result<StagingDir> {
        let (lock, lock_path) = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(LOCK_SUFFIX)
            .tempfile_in(tmp)?
            .into_parts();
        let lock_path = lock_path.keep()?;
        let dir = PathBuf::from(
            lock_path
                .to_string_lossy()
                .strip_suffix(LOCK_SUFFIX)
                .context("a lock file's name")?,
        );
        let made = try_lock(&lock).and_then(|()| Ok(std::fs::create_dir(&dir)?));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&lock_path);
            return Err(e);
        }
        Ok(StagingDir {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // Still locked here: a sweeper that opened this file before it goes finds another
        // file (or none) at the path, and leaves it.
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

const LOCK_SUFFIX: &str = ".lock";

/// Staging directories made before they carried a lock: removed once untouched this long
/// (an older ocilambda sharing the cache may still be using a fresh one).
const UNLOCKED_STAGING_AGE: Duration = Duration::from_secs(3600);

fn try_lock(file: &std::fs::File) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Remove the staging directories in `tmp` that no live process owns: those whose lock
/// file this process can lock, and old ones from before locks. Best effort: what cannot
/// be removed now is tried again by the next build.
pub fn sweep_stale_staging(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(LOCK_SUFFIX) {
            sweep_locked(&entry.path(), &tmp.join(stem));
        } else if ["stage-", "zip-", "verify-"]
            .iter()
            .any(|p| name.starts_with(p))
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && !tmp.join(format!("{name}{LOCK_SUFFIX}")).exists()
            && older_than(&entry.path(), UNLOCKED_STAGING_AGE)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Remove `dir` and its lock file when the lock is free and still the one at `lock_path`.
fn sweep_locked(lock_path: &Path, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(lock) = std::fs::File::open(lock_path) else {
        return;
    };
    if try_lock(&lock).is_err() {
        return; // a live build's
    }
    // The file may have been removed and its name reused since we opened it.
    let same = match (lock.metadata(), std::fs::metadata(lock_path)) {
        (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
        _ => false,
    };
    // No directory yet: a build between creating its lock file and locking it, unless
    // it died there long ago.
    if !same || (!dir.exists() && !older_than(lock_path, UNLOCKED_STAGING_AGE)) {
        return;
    }
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        let _ = std::fs::remove_file(lock_path);
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
}

/// What identifies one version of a file's bytes without reading them.
fn fingerprint(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{} {} {} {}.{} {}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
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
    fn corrupted_blob_reads_as_missing_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(crate::report::Recorder::default());
        let cache = Cache {
            reporter: recorder.clone(),
            ..Cache::at(dir.path().to_path_buf()).unwrap()
        };
        let d = cache.write_blob(b"{}").unwrap();
        assert_eq!(cache.read_blob(&d).unwrap(), b"{}");
        assert!(recorder.0.lock().unwrap().is_empty());
        std::fs::write(cache.blob_path(&d).unwrap(), b"{ }").unwrap();
        assert!(cache.read_blob(&d).is_none());
        let events = recorder.0.lock().unwrap();
        assert!(
            matches!(&events[..], [Event::Warning(w)] if w.contains(&d)),
            "{events:?}"
        );
    }

    #[test]
    fn a_blob_changed_in_place_is_found_and_removed_even_with_its_mtime_restored() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        let d = cache.write_blob(&[7u8; 4096]).unwrap();
        let path = cache.blob_path(&d).unwrap();
        assert!(cache.has_blob(&d), "intact");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(b"CORRUPT").unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert!(!cache.has_blob(&d), "same size, same mtime, other bytes");
        assert!(!path.exists(), "a damaged entry is dropped, not kept");
        // Storing the bytes again repairs it.
        assert_eq!(cache.write_blob(&[7u8; 4096]).unwrap(), d);
        assert!(cache.has_blob(&d));
    }

    #[test]
    fn a_damaged_small_blob_is_replaced_when_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        let d = cache.write_blob(br#"{"schemaVersion":2}"#).unwrap();
        std::fs::write(cache.blob_path(&d).unwrap(), br#"{"garbage":1}"#).unwrap();
        // Written again (as a fresh download would be) without reading it first.
        cache.write_blob(br#"{"schemaVersion":2}"#).unwrap();
        assert_eq!(cache.read_blob(&d).unwrap(), br#"{"schemaVersion":2}"#);
    }

    /// A staging dir is removed with its lock when dropped, and kept from sweeps while
    /// held (flock conflicts between two opens of the file, even in one process).
    #[test]
    fn a_held_staging_dir_survives_a_sweep_and_goes_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        let held = cache.temp_dir("stage-").unwrap();
        std::fs::write(held.path().join("f"), b"x").unwrap();
        let lock = PathBuf::from(format!("{}{LOCK_SUFFIX}", held.path().display()));
        assert!(lock.is_file());
        sweep_stale_staging(&dir.path().join("tmp"));
        assert!(
            held.path().join("f").is_file(),
            "a live build's dir is kept"
        );
        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists() && !lock.exists());
    }

    /// What a killed build leaves (a dir and a lock file nobody holds) is swept by the
    /// next staging dir made; a lock-less dir from before locks only once it is old.
    #[test]
    fn stale_staging_dirs_are_swept_and_fresh_unlocked_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf()).unwrap();
        let tmp = dir.path().join("tmp");
        let killed = cache.temp_dir("stage-").unwrap();
        let killed_path = killed.path().to_path_buf();
        // As after kill -9: no destructor ran, the kernel dropped the lock.
        std::mem::forget(killed);
        // Forgetting keeps the descriptor open (and locked): release it as death would.
        let lock_path = PathBuf::from(format!("{}{LOCK_SUFFIX}", killed_path.display()));
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == lock_path) {
                let n: i32 = fd.file_name().to_string_lossy().parse().unwrap();
                // SAFETY: closing the descriptor of the forgotten lock file.
                unsafe { libc::close(n) };
            }
        }
        std::fs::write(killed_path.join("partial"), b"x").unwrap();
        for name in ["stage-old", "zip-fresh"] {
            std::fs::create_dir(tmp.join(name)).unwrap();
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
        std::fs::File::open(tmp.join("stage-old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let next = cache.temp_dir("stage-").unwrap();
        assert!(!killed_path.exists() && !lock_path.exists(), "swept");
        assert!(
            !tmp.join("stage-old").exists(),
            "an old lock-less dir is swept"
        );
        assert!(
            tmp.join("zip-fresh").is_dir(),
            "a fresh lock-less dir may be in use"
        );
        assert!(next.path().is_dir());
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
