//! The image's root filesystem on disk, made from a per-layer cache. Each layer is
//! unpacked once into `<cache>/invoke-v2/layers/<diff_id hex>/` (its tree, and in
//! `meta.json` what it whites out), verified against its diff_id and its blob digest on
//! that one pass; an image's root is then composed from those trees into
//! `<cache>/invoke-v2/roots/<chain id hex>/`, reused by every image with the same layers.
//! So a config-only change composes nothing, and an app-only rebuild unpacks only the app
//! layer; its root is patched from the previous build's (the old app layer taken out
//! against the cached root of the layers below, the new one put in) rather than composed
//! from scratch, so the work follows the size of the app, not of the image. The cache is
//! bounded by size (least recently used layers go first, never a root a running sandbox
//! holds). Fetching blobs is the caller's business.
//!
//! The root is a hard-link farm rather than an overlay mount (bubblewrap's
//! `--overlay-src`): those options arrived in bubblewrap 0.10, while the distributions
//! our users run ship 0.8 or 0.9 (this machine too), and an unprivileged overlay needs
//! Linux ≥ 5.11 and a filesystem that takes it as a lower layer (not every CI container's
//! overlay root does). A farm works with any bubblewrap and kernel, costs no disk (the
//! files are the cached inodes, shared), and one link(2) per file to compose: far less
//! than decompressing. Sharing is safe because the sandbox binds the root read-only.
//!
//! Extraction is our own rather than the `tar` crate's `unpack_in`, which canonicalises
//! paths on the host and so rejects the absolute symlinks every rootfs has (`/lib64/ld-…`
//! → `/lib/…`). Entries, cleaned paths and whiteouts come from [`crate::layer`] (which
//! refuses `..` and `.wh..`, counts bytes against Lambda's 10 GB); here a path is
//! resolved inside the root the way the image will see it (an absolute symlink restarts
//! at the root, `..` stops there), the last component is never followed, setuid bits and
//! devices are dropped, and whiteouts hide lower layers only (they are applied to the
//! farm before the layer's own entries). Nothing is chowned (the sandbox maps the
//! invoking user to the function's user).

use crate::layer::{Budget, Entry, Kind, LAMBDA_UNCOMPRESSED_LIMIT, LayerError, Op, Strictness};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The default bound on the unpacked layers (`invoke-cache-size`): 2 GiB.
pub const DEFAULT_CACHE_SIZE: u64 = 2 << 30;

/// Composed roots kept besides the one in use: each costs a directory tree and one link
/// per file, and the edit-build-invoke loop makes a new one per build.
const KEEP_ROOTS: usize = 4;

/// Linux's own limit on symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: u32 = 40;

/// Where the sandbox mounts its own filesystems: bwrap needs the mount points to exist,
/// and cannot create them in a root that is bound read-only.
const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "tmp"];

/// One layer to unpack, its blob already on local disk.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: String,
    /// The digest of the uncompressed tar, from the image config.
    pub diff_id: String,
    pub media_type: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub layers: usize,
    pub files: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// What a cached layer holds besides its tree: what it does to the layers below it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    diff_id: String,
    /// Uncompressed bytes of its tar, counted against Lambda's 10 GB per image.
    size: u64,
    files: u64,
    /// Bytes of file content on disk, counted against the cache's bound.
    bytes: u64,
    /// Directories the layer has an entry for (tree path → mode); the others in its tree
    /// only lead to its entries and must not replace a lower layer's symlink.
    dirs: BTreeMap<PathBuf, u32>,
    whiteouts: Vec<PathBuf>,
    opaque: Vec<PathBuf>,
    /// Hard links to files of lower layers (path → target), made when composing.
    links: Vec<(PathBuf, PathBuf)>,
}

/// The OCI chain id of `diff_ids` (bottom first): the name of their composed root.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut chain = String::new();
    for (i, diff_id) in diff_ids.iter().enumerate() {
        chain = if i == 0 {
            diff_id.clone()
        } else {
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{chain} {diff_id}")))
            )
        };
    }
    chain
}

/// The per-layer cache and the roots composed from it.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Uncompressed bytes one image may unpack to (Lambda's 10 GB).
    limit: u64,
    /// Bytes of unpacked layers to keep (`invoke-cache-size`).
    capacity: u64,
}

/// A composed root, held (a shared lock) while a sandbox may use it: eviction skips it.
#[derive(Debug)]
pub struct Root {
    pub dir: PathBuf,
    _lease: File,
}

/// What [`Store::prepare`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Layers unpacked now (the others were cached), and their counts.
    pub unpacked: Stats,
    /// The image's layers in all.
    pub layers: usize,
    /// Whether the root itself was composed now (else reused).
    pub composed: bool,
    /// Whether it was composed from the previous build's root, swapping the top layer.
    pub patched: bool,
}

impl Store {
    /// The store under `cache_root`, keeping at most `capacity` bytes of unpacked layers.
    pub fn open(cache_root: &Path, capacity: u64) -> Result<Store> {
        let dir = cache_root.join("invoke-v2");
        for sub in ["layers", "roots", "tmp"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        // The whole-image trees of earlier versions: never reused, so reclaimed.
        let old = cache_root.join("rootfs-v1");
        if old.is_dir() {
            let _ = remove_tree(&old);
        }
        sweep_stale(&dir.join("tmp"));
        Ok(Store {
            dir,
            limit: LAMBDA_UNCOMPRESSED_LIMIT,
            capacity,
        })
    }

    fn layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self
            .dir
            .join("layers")
            .join(crate::digest::hex_part(diff_id)?))
    }

    fn root_dir(&self, diff_ids: &[String]) -> Result<PathBuf> {
        Ok(self
            .dir
            .join("roots")
            .join(crate::digest::hex_part(&chain_id(diff_ids))?))
    }

    /// The composed root of `diff_ids`, if a previous invocation made it; held and
    /// marked as used.
    pub fn root(&self, diff_ids: &[String]) -> Result<Option<Root>> {
        let dir = self.root_dir(diff_ids)?;
        if !dir.is_dir() {
            return Ok(None);
        }
        let lease = match lease(&dir) {
            // Evicted (or taken as a sibling) between the check and the lease.
            Ok(_) if !dir.is_dir() => return Ok(None),
            Ok(lease) => lease,
            Err(_) => return Ok(None),
        };
        touch(&lease_path(&dir));
        for diff_id in diff_ids {
            touch(&self.layer_dir(diff_id)?.join("meta.json"));
        }
        Ok(Some(Root { dir, _lease: lease }))
    }

    /// The layers of `diff_ids` not in the cache yet.
    pub fn missing(&self, diff_ids: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for diff_id in diff_ids {
            if read_meta(&self.layer_dir(diff_id)?).is_none() && !out.contains(diff_id) {
                out.push(diff_id.clone());
            }
        }
        Ok(out)
    }

    /// The store-wide lock: held shared while layers are unpacked or a root is composed,
    /// exclusively while evicting. A layer another invoke is unpacking or composing from
    /// belongs to no leased root yet, so only this keeps eviction from taking it.
    fn store_lock(&self) -> Result<File> {
        let path = self.dir.join("store.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    }

    /// Unpack `blobs` (the missing layers) into the cache, then compose the root of
    /// `diff_ids` from the cached layers, and lease it.
    pub fn prepare(&self, diff_ids: &[String], blobs: &[LayerBlob]) -> Result<(Root, Prepared)> {
        let store = self.store_lock()?;
        // Waits for an eviction in progress; none starts until the root is leased.
        store.lock_shared()?;
        let mut prepared = Prepared {
            layers: diff_ids.len(),
            ..Prepared::default()
        };
        // The image's cached layers are in use from here on: marked recent, so that
        // another invoke's eviction takes other layers first.
        for diff_id in diff_ids {
            touch(&self.layer_dir(diff_id)?.join("meta.json"));
        }
        // Lambda's limit is on the image: the cached layers count too.
        let mut used: u64 = diff_ids
            .iter()
            .filter_map(|d| read_meta(&self.layer_dir(d).ok()?))
            .map(|m| m.size)
            .sum();
        for blob in blobs {
            if read_meta(&self.layer_dir(&blob.diff_id)?).is_some() {
                continue;
            }
            let meta = self
                .unpack_layer(blob, self.limit.saturating_sub(used))
                .with_context(|| format!("unpacking layer {}", blob.digest))?;
            used += meta.size;
            prepared.unpacked.layers += 1;
            prepared.unpacked.files += meta.files;
            prepared.unpacked.bytes += meta.bytes;
        }
        let dest = self.root_dir(diff_ids)?;
        let root = match self.root(diff_ids)? {
            Some(root) => root,
            None => {
                prepared.patched = self.patch(diff_ids, &dest)?;
                if !prepared.patched {
                    self.compose(diff_ids, &dest)?;
                }
                prepared.composed = true;
                let lease = lease(&dest)?;
                // Another invoke's eviction may have taken the root between its
                // composition and the lease: a clear error rather than a missing root.
                if !dest.is_dir() {
                    anyhow::bail!(
                        "the unpacked image left the invoke cache while it was being prepared (another invoke evicted it); run again"
                    );
                }
                Root {
                    dir: dest,
                    _lease: lease,
                }
            }
        };
        Ok((root, prepared))
    }

    /// Unpack one layer into `layers/<hex>`, checking its blob digest and diff_id on the
    /// one pass; `allowed` uncompressed bytes at most.
    fn unpack_layer(&self, blob: &LayerBlob, allowed: u64) -> Result<Meta> {
        let dest = self.layer_dir(&blob.diff_id)?;
        let staging = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(self.dir.join("tmp"))
            .context("creating a directory in the invoke cache")?;
        let tree = staging.path().join("tree");
        fs::create_dir(&tree)?;
        let mut writer = LayerWriter::new(&tree);
        let summary = apply_blob(&mut writer, blob, allowed);
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                // A refused entry or a gzip bomb leaves nothing behind.
                let _ = remove_tree(staging.path());
                return Err(match e.downcast_ref::<LayerError>() {
                    // The bound is the image's, whatever its cached layers used.
                    Some(LayerError::TooLarge { .. }) => {
                        LayerError::TooLarge { limit: self.limit }.into()
                    }
                    _ => e,
                });
            }
        };
        let meta = Meta {
            diff_id: blob.diff_id.clone(),
            size: summary.size,
            ..writer.meta
        };
        fs::write(
            staging.path().join("meta.json"),
            serde_json::to_vec(&meta).expect("serialisable"),
        )?;
        match fs::rename(staging.path(), &dest) {
            Ok(()) => {}
            // Another invocation unpacked the same layer meanwhile: use its tree.
            Err(_) if read_meta(&dest).is_some() => {
                let _ = remove_tree(staging.path());
            }
            Err(e) => {
                let _ = remove_tree(staging.path());
                return Err(e).with_context(|| format!("moving the layer to {}", dest.display()));
            }
        }
        // The staging directory was renamed away: nothing is left to clean up.
        let _ = staging.keep();
        Ok(meta)
    }

    /// Compose the root of `diff_ids` (all cached) into `dest`.
    fn compose(&self, diff_ids: &[String], dest: &Path) -> Result<()> {
        let staging = tempfile::Builder::new()
            .prefix(".compose-")
            .tempdir_in(self.dir.join("tmp"))
            .context("creating a directory in the invoke cache")?;
        let root = staging.path().join("root");
        fs::create_dir(&root)?;
        let mut farm = Farm::new(&root);
        let composed = diff_ids.iter().try_for_each(|diff_id| {
            let dir = self.layer_dir(diff_id)?;
            let meta = read_meta(&dir)
                .with_context(|| format!("layer {diff_id} left the cache while in use"))?;
            farm.layer(&dir.join("tree"), &meta)
                .with_context(|| format!("applying layer {diff_id}"))
        });
        if let Err(e) = composed.and_then(|()| farm.finish()) {
            let _ = remove_tree(staging.path());
            return Err(e);
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        let record = lease_path(dest);
        fs::write(&record, diff_ids.join("\n"))?;
        match fs::rename(&root, dest) {
            Ok(()) => {}
            Err(_) if dest.is_dir() => remove_tree(&root)?,
            Err(e) => {
                let _ = remove_tree(&root);
                return Err(e).with_context(|| format!("moving the rootfs to {}", dest.display()));
            }
        }
        Ok(())
    }

    /// Make the root of `diff_ids` from a sibling's, if there is one to take: a root of the
    /// same lower layers under another top layer (the previous build of the app) that no
    /// sandbox holds, with the root of the lower layers at hand. The sibling's top layer
    /// is taken out against the lower root (what it added goes, what it replaced comes
    /// back as the lower root's inode) and the new one applied: work in proportion to the
    /// two top layers, not to the image, which is what an app-only rebuild needs. Only for
    /// top layers that whiteouts, links or paths through the lower layers' symlinks do not
    /// complicate; `false` when composing from scratch is needed.
    fn patch(&self, diff_ids: &[String], dest: &Path) -> Result<bool> {
        let Some((top, lower)) = diff_ids.split_last().filter(|(_, lower)| !lower.is_empty())
        else {
            return Ok(false);
        };
        let lower_root = self.root_dir(lower)?;
        let new_dir = self.layer_dir(top)?;
        let Some(new_meta) = read_meta(&new_dir) else {
            return Ok(false);
        };
        if lower.is_empty() || !new_meta.swappable() || !lower_root.is_dir() {
            return Ok(false);
        }
        // Held, so eviction leaves it while it is read.
        let Ok(_lower_lease) = lease(&lower_root) else {
            return Ok(false);
        };
        if !lower_root.is_dir() || !swappable_over(&new_dir.join("tree"), &lower_root, &new_meta) {
            return Ok(false);
        }
        let mut siblings = self.roots();
        siblings.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, sibling, ids) in siblings {
            let Some((old_top, old_lower)) = ids.split_last() else {
                continue;
            };
            if old_lower != lower || old_top == top {
                continue;
            }
            let old_dir = self.layer_dir(old_top)?;
            let Some(old_meta) = read_meta(&old_dir) else {
                continue;
            };
            if !old_meta.swappable()
                || !swappable_over(&old_dir.join("tree"), &lower_root, &old_meta)
            {
                continue;
            }
            let Some(lock) = try_exclusive(&sibling) else {
                continue;
            };
            let staging = tempfile::Builder::new()
                .prefix(".patch-")
                .tempdir_in(self.dir.join("tmp"))
                .context("creating a directory in the invoke cache")?;
            let root = staging.path().join("root");
            if fs::rename(&sibling, &root).is_err() {
                continue;
            }
            let _ = fs::remove_file(lease_path(&sibling));
            drop(lock);
            let swapped = take_out(&old_dir.join("tree"), &root, &lower_root, Path::new(""))
                .and_then(|()| {
                    let mut farm = Farm::new(&root);
                    farm.layer(&new_dir.join("tree"), &new_meta)?;
                    farm.finish()
                });
            if swapped.is_err() {
                // The sibling is spent either way; composing from scratch is always right.
                let _ = remove_tree(staging.path());
                return Ok(false);
            }
            fs::write(lease_path(dest), diff_ids.join("\n"))?;
            if fs::rename(&root, dest).is_err() {
                let _ = remove_tree(&root);
                if !dest.is_dir() {
                    return Ok(false);
                }
            }
            touch(&lease_path(&lower_root));
            return Ok(true);
        }
        Ok(false)
    }

    /// After [`Store::prepare`], while the function starts: keep the cache to its size,
    /// and compose the root of the image's lower layers if the next app-only rebuild can
    /// be patched from it ([`Store::patch`]).
    pub fn settle(&self, current: &[String]) {
        self.evict(current);
        let Ok(store) = self.store_lock() else {
            return;
        };
        if store.lock_shared().is_err() {
            return;
        }
        let Some((top, lower)) = current.split_last() else {
            return;
        };
        let swappable = self
            .layer_dir(top)
            .ok()
            .and_then(|d| read_meta(&d))
            .is_some_and(|m| m.swappable());
        if swappable
            && !lower.is_empty()
            && let Ok(dest) = self.root_dir(lower)
            && !dest.is_dir()
        {
            let _ = self.compose(lower, &dest);
        }
    }

    /// Keep the unpacked layers within the capacity, least recently used first (after
    /// [`Store::prepare`], while the function starts: it is not in the way); a root
    /// linking an evicted layer goes with it (its links would keep the bytes), unless a
    /// sandbox holds it, and then the layer stays too. Roots beyond [`KEEP_ROOTS`] go.
    /// The layers of `current` always stay. Best effort: a failure leaves more behind.
    pub fn evict(&self, current: &[String]) {
        // Never while another invoke prepares (it would lose layers it has not leased
        // yet); that invoke evicts in its turn.
        let Ok(store) = self.store_lock() else {
            return;
        };
        if store.try_lock().is_err() {
            return;
        }
        let keep: HashSet<String> = current
            .iter()
            .filter_map(|d| crate::digest::hex_part(d).ok().map(str::to_string))
            .collect();
        let current_root = self.root_dir(current).ok();
        let mut roots = self.roots();
        let mut layers: Vec<(SystemTime, String, u64)> = fs::read_dir(self.dir.join("layers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let meta_path = e.path().join("meta.json");
                let used = fs::metadata(&meta_path).ok()?.modified().ok()?;
                Some((used, name, read_meta(&e.path())?.bytes))
            })
            .collect();
        let mut total: u64 = layers.iter().map(|l| l.2).sum();
        layers.sort();
        for (_, name, bytes) in layers {
            if total <= self.capacity {
                break;
            }
            if keep.contains(&name) {
                continue;
            }
            let users: Vec<&(SystemTime, PathBuf, Vec<String>)> = roots
                .iter()
                .filter(|(_, _, ids)| ids.iter().any(|d| d.ends_with(&name)))
                .collect();
            let Some(locks) = users
                .iter()
                .map(|(_, dir, _)| try_exclusive(dir))
                .collect::<Option<Vec<File>>>()
            else {
                continue;
            };
            for (_, dir, _) in &users {
                remove_root(dir);
            }
            drop(locks);
            let dir = self.dir.join("layers").join(&name);
            // Renamed first, so no reader ever sees a half-removed layer as cached.
            let doomed = self.dir.join("tmp").join(format!(".evict-layer-{name}"));
            if fs::rename(&dir, &doomed).is_ok() {
                let _ = remove_tree(&doomed);
                total = total.saturating_sub(bytes);
            }
            roots.retain(|(_, dir, _)| dir.is_dir());
        }
        roots.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, dir, _) in roots.into_iter().skip(KEEP_ROOTS) {
            if Some(&dir) != current_root.as_ref()
                && let Some(lock) = try_exclusive(&dir)
            {
                remove_root(&dir);
                drop(lock);
            }
        }
    }

    /// Every composed root: its last use, directory and layers.
    fn roots(&self) -> Vec<(SystemTime, PathBuf, Vec<String>)> {
        fs::read_dir(self.dir.join("roots"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let record = lease_path(&e.path());
                let used = fs::metadata(&record).ok()?.modified().ok()?;
                let ids = fs::read_to_string(&record).ok()?;
                Some((used, e.path(), ids.lines().map(str::to_string).collect()))
            })
            .collect()
    }
}

impl Meta {
    /// Whether this layer can be swapped in and out of a root without recomposing the
    /// layers below it: it hides nothing of theirs and links to none of their files.
    fn swappable(&self) -> bool {
        self.whiteouts.is_empty() && self.opaque.is_empty() && self.links.is_empty()
    }
}

/// Whether the layer tree `tree` lies over the composed root `lower` path for path: no
/// directory of it is a symlink or a file below (so no entry lands elsewhere than its own
/// path), no file of it is a directory below, and every directory they share is writable
/// (the root keeps its final modes while it is patched).
fn swappable_over(tree: &Path, lower: &Path, meta: &Meta) -> bool {
    fn walk(tree: &Path, lower: &Path, rel: &Path, meta: &Meta) -> Option<()> {
        for entry in fs::read_dir(tree.join(rel)).ok()? {
            let entry = entry.ok()?;
            let rel = rel.join(entry.file_name());
            let is_dir = entry.file_type().ok()?.is_dir();
            match fs::symlink_metadata(lower.join(&rel)) {
                Ok(m) if is_dir && m.is_dir() => {
                    if m.permissions().mode() & 0o200 == 0 {
                        return None;
                    }
                }
                Ok(m) if !is_dir && !m.is_dir() => {}
                Ok(_) => return None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return None,
            }
            if is_dir {
                if meta.dirs.get(&rel).is_some_and(|mode| mode & 0o200 == 0) {
                    return None;
                }
                walk(tree, lower, &rel, meta)?;
            }
        }
        Some(())
    }
    walk(tree, lower, Path::new(""), meta).is_some()
}

/// Take the layer `tree` out of `root` (`rel` within both): what only it has goes, what
/// it replaced comes back from `lower`, the root of the layers below it.
fn take_out(tree: &Path, root: &Path, lower: &Path, rel: &Path) -> Result<()> {
    for entry in fs::read_dir(tree.join(rel))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        let (path, below) = (root.join(&rel), lower.join(&rel));
        if entry.file_type()?.is_dir() {
            take_out(tree, root, lower, &rel)?;
            match fs::symlink_metadata(&below) {
                Ok(m) => {
                    let mode = m.permissions().mode() & 0o7777;
                    if fs::symlink_metadata(&path)?.permissions().mode() & 0o7777 != mode {
                        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => remove(&path)?,
                Err(e) => return Err(e.into()),
            }
        } else {
            remove(&path)?;
            match fs::symlink_metadata(&below) {
                Ok(_) => fs::hard_link(&below, &path)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// `roots/<hex>.layers`: the root's layers, its last use (mtime), and its lock.
fn lease_path(root: &Path) -> PathBuf {
    root.with_extension("layers")
}

/// A shared lock on `root`'s record, held while a sandbox may run in it.
fn lease(root: &Path) -> Result<File> {
    let file = File::open(lease_path(root))
        .with_context(|| format!("opening {}", lease_path(root).display()))?;
    file.lock_shared()?;
    Ok(file)
}

/// The exclusive lock eviction needs, if no sandbox holds `root`.
fn try_exclusive(root: &Path) -> Option<File> {
    let file = File::open(lease_path(root)).ok()?;
    file.try_lock().ok()?;
    Some(file)
}

/// Remove a root: renamed away first (so no reader ever sees a half-removed root),
/// then deleted; an interrupted deletion is finished by the next [`Store::open`].
fn remove_root(dir: &Path) {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let doomed = dir
        .parent()
        .and_then(Path::parent)
        .map(|store| store.join("tmp").join(format!(".evict-root-{name}")));
    match doomed {
        Some(doomed) if fs::rename(dir, &doomed).is_ok() => {
            let _ = fs::remove_file(lease_path(dir));
            let _ = remove_tree(&doomed);
        }
        _ => {
            let _ = remove_tree(dir);
            let _ = fs::remove_file(lease_path(dir));
        }
    }
}

fn read_meta(layer_dir: &Path) -> Option<Meta> {
    serde_json::from_slice(&fs::read(layer_dir.join("meta.json")).ok()?).ok()
}

fn touch(path: &Path) {
    // A file's mtime is its last use: eviction goes by it.
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Remove staging directories that an interrupted run left behind (older than an hour,
/// so a concurrent unpack in progress is never touched).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // What eviction renamed away is never in use; the rest may be another run's.
        let evicted = entry.file_name().to_string_lossy().starts_with(".evict-");
        let stale = evicted
            || entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
        if stale {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// `remove_dir_all` that first makes directories writable: a composed root keeps the
/// image's directory modes, and a 0555 directory cannot be emptied by its non-root owner.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    fs::remove_dir_all(path)
}

/// A reader that hashes what it reads, so a blob is verified on the single pass that
/// unpacks it.
struct HashingReader<R> {
    inner: R,
    hasher: std::rc::Rc<std::cell::RefCell<Sha256>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// Unpack `layer`'s blob with `writer`, checking the blob's digest and the diff_id of
/// its tar on the same pass.
fn apply_blob(
    writer: &mut LayerWriter,
    layer: &LayerBlob,
    allowed: u64,
) -> Result<crate::layer::Summary> {
    let file =
        File::open(&layer.path).with_context(|| format!("opening {}", layer.path.display()))?;
    // A second handle on the same open file (shared offset): after the archive ends, the
    // bytes the decompressor never asked for are read through it, so the digest covers
    // the whole blob.
    let mut rest = file.try_clone()?;
    let hasher = std::rc::Rc::new(std::cell::RefCell::new(Sha256::new()));
    let hashing = io::BufReader::with_capacity(
        256 * 1024,
        HashingReader {
            inner: file,
            hasher: hasher.clone(),
        },
    );
    let summary = writer.apply(hashing, &layer.media_type, Budget::new(allowed))?;
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail)?;
    hasher.borrow_mut().update(&tail);
    let got = format!(
        "sha256:{}",
        hex::encode(
            std::rc::Rc::try_unwrap(hasher)
                .expect("the reader is dropped")
                .into_inner()
                .finalize()
        )
    );
    if got != layer.digest {
        bail!(
            "blob {} has digest {got}; refusing a corrupted layer",
            layer.path.display()
        );
    }
    if summary.diff_id != layer.diff_id {
        bail!(
            "layer {} unpacks to {}, but the image config says {}; refusing a corrupted layer",
            layer.digest,
            summary.diff_id,
            layer.diff_id
        );
    }
    Ok(summary)
}

/// Resolves directories inside one root the way the image will see them.
struct Resolver<'a> {
    root: &'a Path,
}

impl Resolver<'_> {
    /// The host directory for `rel` (a directory inside the root), creating missing
    /// components as 0755 directories. Symlinks on the way are resolved as the image
    /// will see them: an absolute target restarts at the root, `..` stops at the root;
    /// so no symlink can lead outside the root.
    fn dir(&self, rel: &Path) -> Result<PathBuf> {
        let mut stack: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = rel.iter().map(|c| c.to_os_string()).collect();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            if c == "." || c.is_empty() {
                continue;
            }
            if c == ".." {
                stack.pop();
                continue;
            }
            let mut host = self.root.to_path_buf();
            host.extend(&stack);
            host.push(&c);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => stack.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        bail!("too many levels of symbolic links in `{}`", rel.display());
                    }
                    let target = fs::read_link(&host)?;
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for part in target.components().rev().filter_map(|p| match p {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    }) {
                        pending.push_front(part);
                    }
                }
                Ok(_) => bail!(
                    "`{}` is not a directory in the image",
                    host.strip_prefix(self.root).unwrap_or(&host).display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    create_dir(&host)?;
                    stack.push(c);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut out = self.root.to_path_buf();
        out.extend(stack);
        Ok(out)
    }
}

/// Remove whatever is at `path` (a symlink itself, not its target).
fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_tree(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Unpacks one layer into its own tree; whiteouts are recorded, not applied (there is
/// nothing below to hide yet).
struct LayerWriter {
    root: PathBuf,
    meta: Meta,
}

impl LayerWriter {
    fn new(root: &Path) -> LayerWriter {
        LayerWriter {
            root: root.to_path_buf(),
            meta: Meta::default(),
        }
    }

    /// Apply one layer blob (its bytes as stored, compressed as `media_type` says).
    fn apply<R: BufRead>(
        &mut self,
        blob: R,
        media_type: &str,
        mut budget: Budget,
    ) -> Result<crate::layer::Summary> {
        crate::layer::read(blob, media_type, &mut budget, Strictness::Refuse, |e| {
            let raw = e.raw.clone();
            self.entry(e).with_context(|| format!("extracting `{raw}`"))
        })
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_path_buf()
    }

    /// A hard link at `path` to `target_rel`: made now when the target is a file this
    /// layer already wrote, recorded for the compose step when it is a lower layer's.
    fn hard_link(&mut self, path: &Path, target_rel: PathBuf) -> Result<()> {
        let resolver = Resolver { root: &self.root };
        let target_parent = resolver.dir(target_rel.parent().unwrap_or(Path::new("")))?;
        let target = target_parent.join(target_rel.file_name().context("hard link")?);
        match fs::symlink_metadata(&target) {
            Ok(m) if !m.is_dir() => {
                if target != path {
                    remove(path)?;
                    // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the
                    // symlink itself.
                    fs::hard_link(&target, path)?;
                }
            }
            Ok(_) => bail!(
                "hard link to `{}`, which is not a file of the image",
                target_rel.display()
            ),
            // A file of a lower layer: linked when the root is composed.
            Err(_) => {
                let rel = self.rel(path);
                self.meta.links.push((rel, target_rel));
            }
        }
        Ok(())
    }

    fn entry(&mut self, entry: Entry<'_>) -> Result<()> {
        let rel = match &entry.op {
            Op::Put(rel) => rel,
            Op::Whiteout(hidden) => {
                self.meta.whiteouts.push(hidden.clone());
                return Ok(());
            }
            Op::Opaque(dir) => {
                self.meta.opaque.push(dir.clone());
                return Ok(());
            }
            Op::Refused(reason) => bail!("{reason}"),
        };
        let name = rel.file_name().context("entry without a name")?.to_owned();
        let resolver = Resolver { root: &self.root };
        let parent = resolver.dir(rel.parent().unwrap_or(Path::new("")))?;
        let path = parent.join(&name);
        let mode = entry.mode;
        match entry.kind {
            Kind::Dir => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove(&path)?;
                        create_dir(&path)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&path)?,
                    Err(e) => return Err(e.into()),
                }
                // Sticky bit kept (a world-writable /tmp needs it); setuid/setgid dropped.
                // Applied to the composed root only: the tree stays ours to write.
                let rel = self.rel(&path);
                self.meta.dirs.insert(rel, mode & 0o1777);
            }
            Kind::File => {
                let n = write_file(&path, entry.content, mode, entry.mtime)?;
                self.meta.files += 1;
                self.meta.bytes += n;
            }
            Kind::Symlink => {
                let target = entry.link.context("symlink without a target")?;
                remove(&path)?;
                // Kept as written: an absolute target is resolved against the image's
                // root inside the sandbox, never against the host's here.
                std::os::unix::fs::symlink(&target, &path)?;
                self.meta.files += 1;
            }
            Kind::Hardlink => {
                // Cleaned by the reader: relative to the root, no `..`.
                let target_rel = entry.link.context("hard link without a target")?;
                self.hard_link(&path, target_rel)?;
                self.meta.files += 1;
            }
            // Device nodes cannot be made without privileges (the sandbox brings its own
            // /dev), and FIFOs in a function's image are unheard of: skipped.
            _ => {}
        }
        Ok(())
    }
}

/// Composes a root from cached layer trees, bottom first, as hard links.
struct Farm {
    root: PathBuf,
    /// Final modes of directories (host path → mode), applied by [`Farm::finish`]: until
    /// then every directory stays writable for us.
    dir_modes: BTreeMap<PathBuf, u32>,
}

impl Farm {
    fn new(root: &Path) -> Farm {
        Farm {
            root: root.to_path_buf(),
            dir_modes: BTreeMap::new(),
        }
    }

    fn resolve(&self, rel: &Path) -> Result<PathBuf> {
        Resolver { root: &self.root }.dir(rel)
    }

    /// Apply one cached layer: its whiteouts first (so they hide lower layers only, in
    /// whatever order its tar had them), then its entries, then its links downwards.
    fn layer(&mut self, tree: &Path, meta: &Meta) -> Result<()> {
        for dir in &meta.opaque {
            let dir = self.resolve(dir)?;
            for entry in fs::read_dir(&dir)? {
                self.remove(&entry?.path())?;
            }
        }
        for hidden in &meta.whiteouts {
            let name = hidden.file_name().context("whiteout without a name")?;
            let parent = self.resolve(hidden.parent().unwrap_or(Path::new("")))?;
            self.remove(&parent.join(name))?;
        }
        let root = self.root.clone();
        self.link_dir(tree, &root, Path::new(""), meta)?;
        for (rel, target_rel) in &meta.links {
            let parent = self.resolve(rel.parent().unwrap_or(Path::new("")))?;
            let path = parent.join(rel.file_name().context("hard link")?);
            let target_parent = self.resolve(target_rel.parent().unwrap_or(Path::new("")))?;
            let target = target_parent.join(target_rel.file_name().context("hard link")?);
            match fs::symlink_metadata(&target) {
                Ok(m) if !m.is_dir() => {}
                _ => bail!(
                    "hard link to `{}`, which is not a file of the image",
                    target_rel.display()
                ),
            }
            if target != path {
                self.remove(&path)?;
                fs::hard_link(&target, &path)?;
            }
        }
        Ok(())
    }

    /// Link the entries of the layer directory `src` (`rel` in the layer's tree) into
    /// the root's directory `dest`.
    fn link_dir(&mut self, src: &Path, dest: &Path, rel: &Path, meta: &Meta) -> Result<()> {
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let name = entry.file_name();
            let (from, to, rel) = (entry.path(), dest.join(&name), rel.join(&name));
            if entry.file_type()?.is_dir() {
                let to = match meta.dirs.get(&rel) {
                    // The layer's own directory replaces whatever lower layers had there.
                    Some(&mode) => {
                        match fs::symlink_metadata(&to) {
                            Ok(m) if m.is_dir() => {}
                            Ok(_) => {
                                self.remove(&to)?;
                                create_dir(&to)?;
                            }
                            Err(_) => create_dir(&to)?,
                        }
                        self.dir_modes.insert(to.clone(), mode);
                        to
                    }
                    // Only a way to its entries: through a lower layer's symlink, if any.
                    None => match fs::symlink_metadata(&to) {
                        Ok(m) if m.is_dir() => to,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            create_dir(&to)?;
                            to
                        }
                        _ => self.resolve(to.strip_prefix(&self.root)?)?,
                    },
                };
                self.link_dir(&from, &to, &rel, meta)?;
            } else {
                // A file or a symlink: the cached inode itself (linkat does not follow a
                // symlink, and never writes through one at `to`).
                if let Err(e) = fs::hard_link(&from, &to) {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e).with_context(|| format!("linking {}", to.display()));
                    }
                    self.remove(&to)?;
                    fs::hard_link(&from, &to)?;
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<()> {
        if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            self.dir_modes.retain(|k, _| !k.starts_with(path));
        }
        remove(path)
    }

    /// Directory modes, the sandbox's mount points.
    fn finish(self) -> Result<()> {
        for name in MOUNT_POINTS {
            let path = self.root.join(name);
            if fs::symlink_metadata(&path).is_err() {
                create_dir(&path)?;
            }
        }
        // A placeholder for the host's resolv.conf, bound over it in the sandbox so the
        // function can resolve names (Docker and Lambda provide this file the same way).
        let etc = self.root.join("etc");
        let resolv = etc.join("resolv.conf");
        if fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir())
            && fs::symlink_metadata(&resolv).is_err()
        {
            File::create(&resolv)?;
        }
        for (path, mode) in &self.dir_modes {
            if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
            }
        }
        Ok(())
    }
}

/// A 0755 directory whatever the umask (a chmod only when the umask would change it:
/// composing makes hundreds of directories per image).
fn create_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o755).create(path)?;
    if umask() & 0o755 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The process's umask, read once from /proc (reading it with umask(2) would change it
/// for a moment, for every thread); unknown counts as one that changes modes.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
            })
            .unwrap_or(0o777)
    })
}

/// A new regular file at `path` (replacing what was there) with `content`: never opened
/// through a symlink, mode without setuid/setgid (the tree belongs to whoever invokes,
/// possibly root, and must not become a way to gain privileges on the host), and the
/// layer's mtime (timestamp-checked bytecode compares the source's with the .pyc's).
fn write_file(path: &Path, content: &mut dyn Read, mode: u32, mtime: u64) -> Result<u64> {
    remove(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true) // O_EXCL: never opens through a symlink
        .mode(0o600)
        .open(path)?;
    let n = io::copy(content, &mut file)?;
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
    file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use crate::layer::testing::{E, gzip, tar_of};
    use crate::oci::media::OCI_LAYER_TAR;

    /// Each layer unpacked into a tree of its own, then the root composed from them: the
    /// two halves of [`Store::prepare`] without the cache around them.
    fn apply(root: &Path, layers: &[Vec<u8>]) -> Result<Stats> {
        let trees = tempfile::tempdir().unwrap();
        let mut stats = Stats::default();
        let mut farm = Farm::new(root);
        for (i, l) in layers.iter().enumerate() {
            let tree = trees.path().join(i.to_string());
            fs::create_dir(&tree).unwrap();
            let mut w = LayerWriter::new(&tree);
            w.apply(&l[..], OCI_LAYER_TAR, Budget::lambda())?;
            stats.layers += 1;
            stats.files += w.meta.files;
            stats.bytes += w.meta.bytes;
            farm.layer(&tree, &w.meta)?;
        }
        farm.finish()?;
        Ok(stats)
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        (dir, root)
    }

    #[test]
    fn whiteout_deletes_a_file_of_a_lower_layer() {
        let (_d, root) = setup();
        let base = tar_of(&[
            E::Dir("etc/", 0o755),
            E::File("etc/gone", 0o644, "x"),
            E::File("etc/kept", 0o644, "y"),
            E::Dir("etc/sub/", 0o755),
            E::File("etc/sub/deep", 0o644, "z"),
        ]);
        let upper = tar_of(&[
            E::File("etc/.wh.gone", 0o644, ""),
            E::File("etc/.wh.sub", 0o644, ""),
        ]);
        apply(&root, &[base, upper]).unwrap();
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("etc/sub").exists());
        assert_eq!(fs::read_to_string(root.join("etc/kept")).unwrap(), "y");
        assert!(
            !root.join("etc/.wh.gone").exists(),
            "whiteouts are not files"
        );
    }

    #[test]
    fn opaque_whiteout_hides_lower_layers_but_not_its_own() {
        for marker_first in [true, false] {
            let (_d, root) = setup();
            let base = tar_of(&[
                E::Dir("opt/", 0o755),
                E::Dir("opt/o/", 0o755),
                E::File("opt/o/old", 0o644, "old"),
                E::Dir("opt/o/sub/", 0o755),
                E::File("opt/o/sub/lower", 0o644, "lower"),
                E::File("opt/sibling", 0o644, "s"),
            ]);
            let mut entries = vec![
                E::Dir("opt/o/sub/", 0o755),
                E::File("opt/o/sub/new", 0o644, "new"),
            ];
            let marker = E::File("opt/o/.wh..wh..opq", 0o644, "");
            if marker_first {
                entries.insert(0, marker);
            } else {
                entries.push(marker);
            }
            apply(&root, &[base, tar_of(&entries)]).unwrap();
            assert!(
                !root.join("opt/o/old").exists(),
                "marker first: {marker_first}"
            );
            assert!(
                !root.join("opt/o/sub/lower").exists(),
                "marker first: {marker_first}"
            );
            assert_eq!(
                fs::read_to_string(root.join("opt/o/sub/new")).unwrap(),
                "new"
            );
            assert!(root.join("opt/sibling").exists());
        }
    }

    #[test]
    fn entry_with_dotdot_is_refused() {
        let (dir, root) = setup();
        let evil = tar_of(&[E::File("../escaped", 0o644, "pwned")]);
        let err = apply(&root, &[evil]).unwrap_err();
        assert!(format!("{err:#}").contains("`..` would escape"), "{err:#}");
        assert!(!dir.path().join("escaped").exists());

        let nested = tar_of(&[E::Dir("a/", 0o755), E::File("a/../../escaped", 0o644, "x")]);
        assert!(apply(&root, &[nested]).is_err());
        assert!(!dir.path().join("escaped").exists());

        let link = tar_of(&[
            E::File("f", 0o644, "x"),
            E::Hardlink("l", "../../etc/passwd"),
        ]);
        assert!(apply(&root, &[link]).is_err());
    }

    #[test]
    fn symlinks_never_lead_outside_the_root() {
        let (dir, root) = setup();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), "safe").unwrap();
        let abs = outside.to_str().unwrap().to_string();
        let layer1 = tar_of(&[
            // An absolute symlink as a rootfs has them, and one naming the host dir.
            E::Symlink("lib64", "/usr/lib64"),
            E::Symlink("hostdir", &abs),
            E::Symlink("up", "../../../.."),
            E::Symlink("victim", &format!("{abs}/victim")),
        ]);
        let layer2 = tar_of(&[
            E::File("lib64/ld.so", 0o755, "ld"),
            E::File("hostdir/victim", 0o644, "pwned"),
            E::File("up/escaped", 0o644, "pwned"),
            // Replaces the symlink itself, never writes through it.
            E::File("victim", 0o644, "replaced"),
        ]);
        apply(&root, &[layer1, layer2]).unwrap();
        assert_eq!(
            fs::read_link(root.join("lib64")).unwrap(),
            Path::new("/usr/lib64")
        );
        assert_eq!(
            fs::read_to_string(root.join("usr/lib64/ld.so")).unwrap(),
            "ld"
        );
        assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "safe");
        assert_eq!(
            fs::read_to_string(root.join(abs.trim_start_matches('/')).join("victim")).unwrap(),
            "pwned",
            "the absolute target is re-rooted"
        );
        assert_eq!(fs::read_to_string(root.join("escaped")).unwrap(), "pwned");
        assert!(!dir.path().join("escaped").exists());
        assert!(fs::symlink_metadata(root.join("victim")).unwrap().is_file());
    }

    #[test]
    fn modes_and_mtimes_are_kept_and_setuid_dropped() {
        let (_d, root) = setup();
        let layer = tar_of(&[
            E::Dir("ro/", 0o555),
            E::File("ro/secret", 0o600, "s"),
            E::File("bin-su", 0o4755, "#!"),
            E::Dir("tmp/", 0o1777),
        ]);
        let later = tar_of(&[E::File("ro/added-later", 0o644, "x")]);
        apply(&root, &[layer, later]).unwrap();
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("ro"), 0o555);
        assert_eq!(mode("ro/secret"), 0o600);
        assert_eq!(mode("bin-su"), 0o755);
        assert_eq!(mode("tmp"), 0o1777);
        assert!(root.join("ro/added-later").exists());
        assert_eq!(
            fs::metadata(root.join("ro/secret")).unwrap().mtime(),
            1_700_000_000
        );
        remove_tree(&root).unwrap();
    }

    #[test]
    fn hard_links_share_the_file_and_mount_points_exist() {
        let (_d, root) = setup();
        let layer = tar_of(&[
            E::Dir("etc/", 0o755),
            E::File("usr-bin-python3.11", 0o755, "elf"),
            E::Hardlink("python3", "usr-bin-python3.11"),
        ]);
        let stats = apply(&root, &[layer]).unwrap();
        let a = fs::metadata(root.join("python3")).unwrap();
        let b = fs::metadata(root.join("usr-bin-python3.11")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(stats.files, 2);
        for m in MOUNT_POINTS {
            assert!(root.join(m).is_dir(), "{m}");
        }
        assert!(root.join("etc/resolv.conf").is_file());
    }

    #[test]
    fn an_entry_and_its_whiteout_in_one_layer_keep_the_entry_in_either_order() {
        for whiteout_first in [true, false] {
            let (_d, root) = setup();
            let base = tar_of(&[
                E::Dir("etc/", 0o755),
                E::File("etc/a", 0o644, "lower"),
                E::Dir("etc/d/", 0o755),
                E::File("etc/d/lower", 0o644, "lower"),
            ]);
            let mut upper = vec![
                E::File("etc/a", 0o644, "upper"),
                E::File("etc/d/new", 0o644, "n"),
            ];
            let whiteouts = [
                E::File("etc/.wh.a", 0o644, ""),
                E::File("etc/.wh.d", 0o644, ""),
            ];
            if whiteout_first {
                upper.splice(0..0, whiteouts);
            } else {
                upper.extend(whiteouts);
            }
            apply(&root, &[base, tar_of(&upper)]).unwrap();
            let first = format!("whiteout first: {whiteout_first}");
            assert_eq!(
                fs::read_to_string(root.join("etc/a")).unwrap(),
                "upper",
                "{first}"
            );
            assert!(!root.join("etc/d/lower").exists(), "{first}");
            assert!(root.join("etc/d/new").exists(), "{first}");
        }
    }

    #[test]
    fn absolute_entry_paths_land_inside_the_root() {
        let (dir, root) = setup();
        let layer = tar_of(&[
            E::File("/etc/abs", 0o644, "x"),
            E::File("./rel", 0o644, "y"),
        ]);
        apply(&root, &[layer]).unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/abs")).unwrap(), "x");
        assert_eq!(fs::read_to_string(root.join("rel")).unwrap(), "y");
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn whiteouts_of_dot_and_dotdot_are_refused_and_the_root_survives() {
        for evil in [".wh..", ".wh...", "sub/.wh..."] {
            let (_d, root) = setup();
            let base = tar_of(&[E::Dir("sub/", 0o755), E::File("sub/kept", 0o644, "k")]);
            let err = apply(&root, &[base, tar_of(&[E::File(evil, 0o644, "")])]).unwrap_err();
            assert!(format!("{err:#}").contains(evil), "{err:#}");
            assert!(root.join("sub/kept").exists(), "{evil} deleted the root");
        }
    }

    #[test]
    fn devices_are_skipped() {
        let (_d, root) = setup();
        let stats = apply(&root, &[tar_of(&[E::Device("dev-null")])]).unwrap();
        assert!(fs::symlink_metadata(root.join("dev-null")).is_err());
        assert_eq!(stats.files, 0);
    }

    /// A gzipped layer blob of `entries` in `dir`, as the image would list it.
    fn blob(dir: &Path, entries: &[E]) -> LayerBlob {
        let tar = tar_of(entries);
        let gz = gzip(&tar);
        let digest = crate::digest::of_bytes(&gz);
        let path = dir.join(crate::digest::hex_part(&digest).unwrap());
        fs::write(&path, &gz).unwrap();
        LayerBlob {
            digest,
            diff_id: crate::digest::of_bytes(&tar),
            media_type: crate::oci::media::OCI_LAYER_GZIP.into(),
            path,
        }
    }

    fn ids(blobs: &[&LayerBlob]) -> Vec<String> {
        blobs.iter().map(|b| b.diff_id.clone()).collect()
    }

    #[test]
    fn each_layer_is_unpacked_once_and_an_app_only_change_unpacks_only_the_app() {
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path(), DEFAULT_CACHE_SIZE).unwrap();
        let base = blob(
            cache.path(),
            &[E::Dir("etc/", 0o755), E::File("etc/os", 0o644, "base")],
        );
        let deps = blob(
            cache.path(),
            &[
                E::Dir("var/", 0o755),
                E::Dir("var/task/", 0o755),
                E::File("var/task/dep.py", 0o644, "dep"),
            ],
        );
        let app1 = blob(cache.path(), &[E::File("var/task/app.py", 0o644, "v1")]);
        let app2 = blob(cache.path(), &[E::File("var/task/app.py", 0o644, "v2")]);

        let first = ids(&[&base, &deps, &app1]);
        assert_eq!(store.missing(&first).unwrap(), first);
        let (root1, done) = store
            .prepare(&first, &[base.clone(), deps.clone(), app1.clone()])
            .unwrap();
        assert_eq!(
            (done.unpacked.layers, done.layers, done.composed),
            (3, 3, true)
        );
        assert_eq!(
            fs::read_to_string(root1.dir.join("var/task/app.py")).unwrap(),
            "v1"
        );

        // The next build: only its app layer is new.
        let second = ids(&[&base, &deps, &app2]);
        assert_eq!(store.missing(&second).unwrap(), vec![app2.diff_id.clone()]);
        let (root2, done) = store.prepare(&second, std::slice::from_ref(&app2)).unwrap();
        assert_eq!(
            (done.unpacked.layers, done.unpacked.files, done.composed),
            (1, 1, true)
        );
        assert_eq!(
            fs::read_to_string(root2.dir.join("var/task/app.py")).unwrap(),
            "v2"
        );
        assert_eq!(
            fs::read_to_string(root2.dir.join("var/task/dep.py")).unwrap(),
            "dep"
        );
        // The unchanged layers' files are the cached inodes, not copies.
        let ino = |root: &Path| fs::metadata(root.join("var/task/dep.py")).unwrap().ino();
        assert_eq!(ino(&root1.dir), ino(&root2.dir));
        assert_ne!(root1.dir, root2.dir);
        // The old root is untouched by the new one.
        assert_eq!(
            fs::read_to_string(root1.dir.join("var/task/app.py")).unwrap(),
            "v1"
        );

        // The same layers again (a config-only change): nothing to do.
        let (again, done) = store.prepare(&second, &[]).unwrap();
        assert_eq!((done.unpacked.layers, done.composed), (0, false));
        assert_eq!(again.dir, root2.dir);
        assert_eq!(store.root(&second).unwrap().unwrap().dir, root2.dir);
    }

    /// Every entry of a root: its path, kind, mode and content or target.
    fn listing(root: &Path) -> Vec<(PathBuf, String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.unwrap();
            let m = fs::symlink_metadata(entry.path()).unwrap();
            let (kind, data) = if m.is_dir() {
                ("dir", vec![])
            } else if m.file_type().is_symlink() {
                let target = fs::read_link(entry.path()).unwrap();
                ("symlink", target.to_string_lossy().as_bytes().to_vec())
            } else {
                ("file", fs::read(entry.path()).unwrap())
            };
            let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
            out.push((rel, kind.to_string(), m.mode() & 0o7777, data));
        }
        out
    }

    #[test]
    fn an_app_only_rebuild_is_patched_from_the_previous_root_and_equals_a_fresh_compose() {
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path(), DEFAULT_CACHE_SIZE).unwrap();
        let base = blob(
            cache.path(),
            &[
                E::Dir("etc/", 0o755),
                E::File("etc/os", 0o644, "base"),
                E::Dir("usr/", 0o755),
                E::Dir("usr/ro/", 0o555),
                E::File("usr/ro/f", 0o644, "ro"),
                E::Symlink("lib", "usr/lib"),
                E::Dir("var/", 0o755),
                E::Dir("var/task/", 0o755),
            ],
        );
        let deps = blob(
            cache.path(),
            &[
                E::File("var/task/dep.py", 0o644, "dep"),
                E::Dir("var/task/pkg/", 0o755),
                E::File("var/task/pkg/__init__.py", 0o644, "pkg"),
            ],
        );
        let app1 = blob(
            cache.path(),
            &[
                E::Dir("var/task/app/", 0o700),
                E::File("var/task/app/main.py", 0o644, "v1"),
                E::File("var/task/dep.py", 0o600, "shadowed by the app"),
                E::File("var/task/pkg/extra.py", 0o644, "extra"),
                E::Symlink("var/task/link", "app/main.py"),
            ],
        );
        let app2 = blob(
            cache.path(),
            &[
                E::Dir("var/task/app/", 0o755),
                E::File("var/task/app/main.py", 0o644, "v2"),
                E::Dir("var/task/app/sub/", 0o755),
                E::File("var/task/app/sub/new.py", 0o644, "new"),
            ],
        );
        // Writes through the base's symlink: never patched, always composed.
        let through_symlink = blob(cache.path(), &[E::File("lib/x.so", 0o644, "x")]);
        let fresh = |layers: &[&LayerBlob]| {
            let other = tempfile::tempdir().unwrap();
            let fresh = Store::open(other.path(), DEFAULT_CACHE_SIZE).unwrap();
            let all: Vec<LayerBlob> = layers.iter().map(|l| (*l).clone()).collect();
            let (root, _) = fresh.prepare(&ids(layers), &all).unwrap();
            (listing(&root.dir), other)
        };
        let all = [
            base.clone(),
            deps.clone(),
            app1.clone(),
            app2.clone(),
            through_symlink.clone(),
        ];
        let run = |layers: &[&LayerBlob]| {
            let ids = ids(layers);
            let (root, done) = store.prepare(&ids, &all).unwrap();
            store.settle(&ids);
            let got = listing(&root.dir);
            drop(root);
            (got, done)
        };
        let (_, done) = run(&[&base, &deps, &app1]);
        assert!(!done.patched, "nothing to patch from yet");
        for (top, patched) in [
            (&app2, true),
            (&app1, true),
            (&through_symlink, false),
            // From app1's root, which the symlink image left alone.
            (&app2, true),
            (&app1, true),
        ] {
            let layers = [&base, &deps, top];
            let (got, done) = run(&layers);
            assert_eq!(done.patched, patched, "{}", top.digest);
            assert_eq!(got, fresh(&layers).0, "{} patched: {patched}", top.digest);
        }
        let left: Vec<_> = fs::read_dir(cache.path().join("invoke-v2/tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_blob_or_tar_that_does_not_match_its_digests_is_refused_and_not_cached() {
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path(), DEFAULT_CACHE_SIZE).unwrap();
        let good = blob(cache.path(), &[E::File("hello", 0o644, "world")]);
        let wrong_blob = LayerBlob {
            digest: crate::digest::of_bytes(b"other"),
            ..good.clone()
        };
        let wrong_diff = LayerBlob {
            diff_id: crate::digest::of_bytes(b"other tar"),
            ..good.clone()
        };
        for (bad, why) in [
            (&wrong_blob, "refusing a corrupted layer"),
            (&wrong_diff, "but the image config says"),
        ] {
            let ids = ids(&[bad]);
            let err = store.prepare(&ids, std::slice::from_ref(bad)).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#}");
            assert_eq!(store.missing(&ids).unwrap(), ids, "nothing cached");
            assert!(store.root(&ids).unwrap().is_none());
        }
        let left: Vec<_> = fs::read_dir(cache.path().join("invoke-v2/tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "partial unpack left behind: {left:?}");
        let (root, _) = store
            .prepare(&ids(&[&good]), std::slice::from_ref(&good))
            .unwrap();
        assert_eq!(fs::read_to_string(root.dir.join("hello")).unwrap(), "world");
    }

    #[test]
    fn the_cache_keeps_to_its_size_least_recently_used_first_but_never_a_held_root() {
        let cache = tempfile::tempdir().unwrap();
        // Room for two 1 KiB layers.
        let store = Store::open(cache.path(), 2048).unwrap();
        let kib = "x".repeat(1024);
        let layers: Vec<LayerBlob> = (0..4)
            .map(|i| blob(cache.path(), &[E::File(&format!("f{i}"), 0o644, &kib)]))
            .collect();
        let prepare = |l: &LayerBlob| {
            let ids = ids(&[l]);
            let prepared = store.prepare(&ids, std::slice::from_ref(l)).unwrap();
            store.evict(&ids);
            // Distinct last-use times.
            std::thread::sleep(Duration::from_millis(20));
            prepared.0
        };
        let held = prepare(&layers[0]);
        let released_dir = prepare(&layers[1]).dir;
        prepare(&layers[2]);
        let cached = |l: &LayerBlob| store.missing(&ids(&[l])).unwrap().is_empty();
        // Over the bound: layer 1 goes (its root is not held); layer 0's root is held.
        assert!(cached(&layers[0]), "held by a running sandbox");
        assert!(!cached(&layers[1]), "least recently used");
        assert!(!released_dir.exists(), "its root went with it");
        assert!(cached(&layers[2]), "the current image stays");
        let _fourth = prepare(&layers[3]);
        assert!(cached(&layers[0]) && cached(&layers[3]));
        assert!(
            !cached(&layers[2]),
            "now the least recently used one not held"
        );
        assert_eq!(fs::read_to_string(held.dir.join("f0")).unwrap(), kib);
        let left: Vec<_> = fs::read_dir(cache.path().join("invoke-v2/tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "evicted trees are deleted: {left:?}");
    }

    #[test]
    fn nothing_is_evicted_while_another_invoke_prepares() {
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path(), 0).unwrap();
        let kib = "x".repeat(1024);
        let first = blob(cache.path(), &[E::File("a", 0o644, &kib)]);
        let second = blob(cache.path(), &[E::File("b", 0o644, &kib)]);
        drop(
            store
                .prepare(&ids(&[&first]), std::slice::from_ref(&first))
                .unwrap(),
        );
        // Another process between unpacking and leasing its root holds the store shared.
        let preparing = store.store_lock().unwrap();
        preparing.lock_shared().unwrap();
        store.evict(&ids(&[&second]));
        assert!(
            store.missing(&ids(&[&first])).unwrap().is_empty(),
            "evicted under a prepare"
        );
        drop(preparing);
        store.evict(&ids(&[&second]));
        assert!(
            !store.missing(&ids(&[&first])).unwrap().is_empty(),
            "over the bound and unheld: evicted"
        );
    }

    #[test]
    fn a_layer_past_the_uncompressed_limit_stops_the_unpack_and_leaves_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let mut store = Store::open(cache.path(), DEFAULT_CACHE_SIZE).unwrap();
        store.limit = 48 * 1024;
        let small = blob(
            cache.path(),
            &[E::File("small", 0o644, &"\0".repeat(20 * 1024))],
        );
        let bomb = blob(
            cache.path(),
            &[E::File("zeros", 0o644, &"\0".repeat(40 * 1024))],
        );
        // Alone, each fits; the cached one counts towards the image's limit.
        store
            .prepare(&ids(&[&small]), std::slice::from_ref(&small))
            .unwrap();
        let both = ids(&[&small, &bomb]);
        let err = store
            .prepare(&both, std::slice::from_ref(&bomb))
            .unwrap_err();
        assert!(
            matches!(
                err.chain()
                    .find_map(|c| c.downcast_ref::<crate::layer::LayerError>()),
                Some(crate::layer::LayerError::TooLarge { limit: 49152 })
            ),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("Lambda's 10 GB uncompressed limit"));
        assert_eq!(store.missing(&both).unwrap(), vec![bomb.diff_id.clone()]);
        let left: Vec<_> = fs::read_dir(cache.path().join("invoke-v2/tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "partial unpack left behind: {left:?}");
        // The same layer within the limit unpacks.
        store.limit = 1 << 20;
        store.prepare(&both, &[bomb]).unwrap();
    }

    #[test]
    fn chain_ids_are_ocis() {
        let a = "sha256:".to_string() + &"a".repeat(64);
        let b = "sha256:".to_string() + &"b".repeat(64);
        assert_eq!(chain_id(std::slice::from_ref(&a)), a);
        let ab = chain_id(&[a.clone(), b.clone()]);
        assert_eq!(ab, crate::digest::of_bytes(format!("{a} {b}").as_bytes()));
        assert_ne!(ab, chain_id(&[b, a]));
    }

    #[test]
    fn a_hard_link_to_a_lower_layers_file_is_made_when_composing() {
        let (_d, root) = setup();
        let lower = tar_of(&[E::File("bin-python", 0o755, "elf")]);
        let upper = tar_of(&[E::Hardlink("python3", "bin-python")]);
        apply(&root, &[lower, upper]).unwrap();
        assert_eq!(
            fs::metadata(root.join("python3")).unwrap().ino(),
            fs::metadata(root.join("bin-python")).unwrap().ino()
        );
        let (_d, root) = setup();
        let dangling = tar_of(&[E::Hardlink("python3", "nowhere")]);
        assert!(apply(&root, &[dangling]).is_err());
    }

    #[test]
    fn a_layers_directory_replaces_a_lower_symlink_but_a_path_through_one_follows_it() {
        let (_d, root) = setup();
        let lower = tar_of(&[
            E::Dir("usr/", 0o755),
            E::Dir("usr/lib/", 0o755),
            E::Symlink("lib", "usr/lib"),
            E::Symlink("opt", "/usr/lib"),
        ]);
        let upper = tar_of(&[E::File("lib/libx.so", 0o644, "x"), E::Dir("opt/", 0o700)]);
        apply(&root, &[lower, upper]).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("usr/lib/libx.so")).unwrap(),
            "x"
        );
        assert!(
            fs::symlink_metadata(root.join("lib"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(fs::symlink_metadata(root.join("opt")).unwrap().is_dir());
        assert_eq!(
            fs::metadata(root.join("opt")).unwrap().mode() & 0o7777,
            0o700
        );
        remove_tree(&root).unwrap();
    }
}
