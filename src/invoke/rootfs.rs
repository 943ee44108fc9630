//! The image's root filesystem on disk: its layers applied in order into a cache
//! directory keyed by the manifest digest (`<cache>/rootfs-v1/<hex>`), reused by every later
//! invocation of the same image. Fetching the layer blobs is the caller's business.
//!
//! Extraction is our own rather than the `tar` crate's `unpack_in`, which canonicalises
//! paths on the host and so rejects the absolute symlinks every rootfs has (`/lib64/ld-…`
//! → `/lib/…`). Entries, cleaned paths and whiteouts come from [`crate::layer`] (which
//! refuses `..`, counts bytes against Lambda's 10 GB); here a path is resolved inside the
//! root the way the image will see it (an absolute symlink restarts at the root, `..`
//! stops there), the last component is never followed, and whiteouts hide lower layers
//! only. Nothing is chowned (the sandbox maps the invoking user to the function's user).

use crate::layer::{Budget, Entry, Kind, Op, Strictness};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unpacked images kept in the cache; older ones (by last use) are removed after an
/// unpack. Each build of an app gives a new manifest digest, so without a bound the
/// edit-build-invoke loop would fill the disk with near-identical trees.
const KEEP: usize = 4;

/// Linux's own limit on symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: u32 = 40;

/// Where the sandbox mounts its own filesystems: bwrap needs the mount points to exist,
/// and cannot create them in a root that is bound read-only.
const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "tmp"];

/// One layer to apply, its blob already on local disk.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: String,
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

/// Versioned: a tree unpacked by an older, different extraction is never reused.
fn rootfs_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("rootfs-v1")
}

/// The unpacked root of `manifest_digest`, if a previous invocation made it. Marks it as
/// used, so pruning keeps it.
pub fn cached(cache_root: &Path, manifest_digest: &str) -> Result<Option<PathBuf>> {
    let dir = rootfs_dir(cache_root).join(crate::digest::hex_part(manifest_digest)?);
    if !dir.is_dir() {
        return Ok(None);
    }
    touch(&dir);
    Ok(Some(dir))
}

fn touch(dir: &Path) {
    // The directory's mtime is its last use: pruning goes by it.
    if let Ok(f) = File::open(dir) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Apply `layers` (bottom first) into a fresh root for `manifest_digest`, then move it into
/// place. Concurrent unpacks of one image both succeed; the second one's tree is dropped.
pub fn unpack(
    cache_root: &Path,
    manifest_digest: &str,
    layers: &[LayerBlob],
) -> Result<(PathBuf, Stats)> {
    unpack_within(cache_root, manifest_digest, layers, Budget::lambda())
}

/// [`unpack`] with the uncompressed bytes bounded by `budget`.
fn unpack_within(
    cache_root: &Path,
    manifest_digest: &str,
    layers: &[LayerBlob],
    budget: Budget,
) -> Result<(PathBuf, Stats)> {
    let dir = rootfs_dir(cache_root);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(crate::digest::hex_part(manifest_digest)?);
    sweep_stale(&dir);
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&dir)
        .with_context(|| format!("creating a directory in {}", dir.display()))?;
    let root = staging.path().join("root");
    fs::create_dir(&root)?;
    let mut applier = Applier::within(&root, budget);
    let applied = layers.iter().try_for_each(|layer| {
        apply_blob(&mut applier, layer).with_context(|| format!("unpacking layer {}", layer.digest))
    });
    if let Err(e) = applied {
        // A refused entry or a gzip bomb leaves nothing behind (the staging dir goes too).
        let _ = remove_tree(&root);
        return Err(e);
    }
    let stats = applier.finish()?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    match fs::rename(&root, &dest) {
        Ok(()) => {}
        // Another invocation unpacked the same image meanwhile: use its tree.
        Err(_) if dest.is_dir() => remove_tree(&root)?,
        Err(e) => {
            let _ = remove_tree(&root);
            return Err(e).with_context(|| format!("moving the rootfs to {}", dest.display()));
        }
    }
    drop(staging);
    prune(&dir, &dest);
    Ok((dest, stats))
}

/// Remove unpacks that an interrupted run left behind (older than an hour, so a
/// concurrent unpack in progress is never touched).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(".unpack-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
        if stale {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// Keep the [`KEEP`] most recently used roots (and always `current`).
fn prune(dir: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut roots: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    roots.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (_, path) in roots.into_iter().skip(KEEP) {
        if path != current {
            let _ = remove_tree(&path);
        }
    }
}

/// `remove_dir_all` that first makes directories writable: an unpacked root keeps the
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

fn apply_blob(applier: &mut Applier, layer: &LayerBlob) -> Result<()> {
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
    applier.apply(hashing, &layer.media_type)?;
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
    Ok(())
}

/// Applies layers, in order, to one root.
pub struct Applier {
    root: PathBuf,
    /// Final modes of directories (host path → mode), applied by [`Applier::finish`]:
    /// until then every directory stays writable for us, so a later entry or layer can
    /// still add to a directory the image makes read-only.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Host paths the current layer wrote: an opaque whiteout hides only lower layers.
    this_layer: HashSet<PathBuf>,
    /// Uncompressed bytes allowed across all layers (Lambda's 10 GB).
    budget: Budget,
    stats: Stats,
}

impl Applier {
    pub fn new(root: &Path) -> Applier {
        Applier::within(root, Budget::lambda())
    }

    /// An applier that stops once the layers unpack to more than `budget` allows.
    pub fn within(root: &Path, budget: Budget) -> Applier {
        Applier {
            root: root.to_path_buf(),
            dir_modes: BTreeMap::new(),
            this_layer: HashSet::new(),
            budget,
            stats: Stats::default(),
        }
    }

    /// Apply one layer blob (its bytes as stored, compressed as `media_type` says).
    pub fn apply<R: BufRead>(&mut self, blob: R, media_type: &str) -> Result<()> {
        self.this_layer.clear();
        self.stats.layers += 1;
        let mut budget = self.budget;
        let result = crate::layer::read(blob, media_type, &mut budget, Strictness::Refuse, |e| {
            let raw = e.raw.clone();
            self.entry(e).with_context(|| format!("extracting `{raw}`"))
        });
        self.budget = budget;
        result.map(drop)
    }

    fn entry(&mut self, entry: Entry<'_>) -> Result<()> {
        let rel = match &entry.op {
            Op::Put(rel) => rel,
            Op::Whiteout(hidden) => {
                let name = hidden.file_name().context("whiteout without a name")?;
                let parent = self.resolve_dir(hidden.parent().unwrap_or(Path::new("")))?;
                return self.hide_lower(&parent.join(name));
            }
            Op::Opaque(dir) => {
                let dir = self.resolve_dir(dir)?;
                return self.clear_lower(&dir);
            }
            Op::Refused(reason) => bail!("{reason}"),
        };
        let name = rel.file_name().context("entry without a name")?.to_owned();
        let parent = self.resolve_dir(rel.parent().unwrap_or(Path::new("")))?;
        let path = parent.join(&name);
        let mode = entry.mode;
        match entry.kind {
            Kind::Dir => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.remove(&path)?;
                        create_dir(&path)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&path)?,
                    Err(e) => return Err(e.into()),
                }
                // Sticky bit kept (a world-writable /tmp needs it); setuid/setgid dropped.
                self.dir_modes.insert(path.clone(), mode & 0o1777);
            }
            Kind::File => {
                self.replace(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true) // O_EXCL: never opens through a symlink
                    .mode(0o600)
                    .open(&path)?;
                let n = io::copy(entry.content, &mut file)?;
                // setuid/setgid dropped: the tree belongs to whoever invokes, possibly
                // root, and must not become a way to gain privileges on the host.
                file.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
                // Timestamp-checked bytecode compares the source mtime with the .pyc.
                let mtime = UNIX_EPOCH + Duration::from_secs(entry.mtime);
                file.set_modified(mtime)?;
                self.stats.files += 1;
                self.stats.bytes += n;
            }
            Kind::Symlink => {
                let target = entry.link.context("symlink without a target")?;
                self.replace(&path)?;
                // Kept as written: an absolute target is resolved against the image's
                // root inside the sandbox, never against the host's here.
                std::os::unix::fs::symlink(&target, &path)?;
                self.stats.files += 1;
            }
            Kind::Hardlink => {
                // Cleaned by the reader: relative to the root, no `..`.
                let target_rel = entry.link.context("hard link without a target")?;
                let target_parent =
                    self.resolve_dir(target_rel.parent().unwrap_or(Path::new("")))?;
                let target = target_parent.join(target_rel.file_name().context("hard link")?);
                match fs::symlink_metadata(&target) {
                    Ok(m) if !m.is_dir() => {}
                    _ => bail!(
                        "hard link to `{}`, which is not a file of the image",
                        target_rel.display()
                    ),
                }
                if target != path {
                    self.replace(&path)?;
                    // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the
                    // symlink itself.
                    fs::hard_link(&target, &path)?;
                }
                self.stats.files += 1;
            }
            // Device nodes cannot be made without privileges (the sandbox brings its own
            // /dev), and FIFOs in a function's image are unheard of: skipped.
            _ => return Ok(()),
        }
        self.this_layer.insert(path);
        Ok(())
    }

    /// The host directory for `rel` (a directory inside the image), creating missing
    /// components as 0755 directories. Symlinks on the way are resolved as the image will
    /// see them: an absolute target restarts at the root, `..` stops at the root; so no
    /// symlink can lead outside the root.
    fn resolve_dir(&mut self, rel: &Path) -> Result<PathBuf> {
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
            let mut host = self.root.clone();
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
                    host.strip_prefix(&self.root).unwrap_or(&host).display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    create_dir(&host)?;
                    stack.push(c);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut out = self.root.clone();
        out.extend(stack);
        Ok(out)
    }

    /// Make way for a new non-directory entry at `path` (never following a symlink there).
    fn replace(&mut self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(_) => self.remove(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove whatever is at `path` (a symlink itself, not its target).
    fn remove(&mut self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(path)?;
                self.dir_modes.retain(|k, _| !k.starts_with(path));
            }
            Ok(_) => fs::remove_file(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// A whiteout of `path`: what lower layers have there goes, what this layer put there
    /// (before or after the whiteout in the tar) stays.
    fn hide_lower(&mut self, path: &Path) -> Result<()> {
        let ours = self.this_layer.contains(path);
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                self.clear_lower(path)?;
                if !ours && fs::read_dir(path)?.next().is_none() {
                    self.remove(path)?;
                }
            }
            Ok(_) if !ours => self.remove(path)?,
            _ => {}
        }
        Ok(())
    }

    /// An opaque whiteout: everything in `dir` from lower layers goes, what this layer
    /// put there stays (whatever order the tar has them in), as Docker applies it.
    fn clear_lower(&mut self, dir: &Path) -> Result<()> {
        let mut doomed = Vec::new();
        let mut walk = vec![dir.to_path_buf()];
        while let Some(d) = walk.pop() {
            for entry in fs::read_dir(&d)? {
                let path = entry?.path();
                if !self.this_layer.contains(&path) {
                    doomed.push(path);
                } else if fs::symlink_metadata(&path)?.is_dir() {
                    walk.push(path);
                }
            }
        }
        for path in doomed {
            self.remove(&path)?;
        }
        Ok(())
    }

    /// Directory modes, the sandbox's mount points; the counts.
    pub fn finish(self) -> Result<Stats> {
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
        Ok(self.stats)
    }
}

fn create_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use crate::layer::testing::{E, gzip, tar_of};
    use crate::oci::media::OCI_LAYER_TAR;

    fn apply(root: &Path, layers: &[Vec<u8>]) -> Result<Stats> {
        let mut a = Applier::new(root);
        for l in layers {
            a.apply(&l[..], OCI_LAYER_TAR)?;
        }
        a.finish()
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
    fn unpack_verifies_the_blob_and_reuses_the_result() {
        let cache = tempfile::tempdir().unwrap();
        let blobs = cache.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        let tar = tar_of(&[E::File("hello", 0o644, "world")]);
        let gz = gzip(&tar);
        let digest = crate::digest::of_bytes(&gz);
        let path = blobs.join("layer");
        fs::write(&path, &gz).unwrap();
        let manifest = crate::digest::of_bytes(b"manifest");
        let layer = LayerBlob {
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            path: path.clone(),
        };
        assert!(cached(cache.path(), &manifest).unwrap().is_none());
        let (root, stats) = unpack(cache.path(), &manifest, std::slice::from_ref(&layer)).unwrap();
        assert_eq!(fs::read_to_string(root.join("hello")).unwrap(), "world");
        assert_eq!(stats.layers, 1);
        assert_eq!(cached(cache.path(), &manifest).unwrap(), Some(root));

        let wrong = LayerBlob {
            digest: crate::digest::of_bytes(b"other"),
            ..layer
        };
        let other = crate::digest::of_bytes(b"manifest 2");
        let err = unpack(cache.path(), &other, &[wrong]).unwrap_err();
        assert!(
            format!("{err:#}").contains("refusing a corrupted layer"),
            "{err:#}"
        );
        assert!(cached(cache.path(), &other).unwrap().is_none());
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

    #[test]
    fn a_layer_past_the_uncompressed_limit_stops_the_unpack_and_leaves_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let tar = tar_of(&[E::File("zeros", 0o644, &"\0".repeat(64 * 1024))]);
        let gz = gzip(&tar);
        let path = cache.path().join("bomb");
        fs::write(&path, &gz).unwrap();
        let layer = LayerBlob {
            digest: crate::digest::of_bytes(&gz),
            media_type: crate::oci::media::OCI_LAYER_GZIP.into(),
            path,
        };
        let manifest = crate::digest::of_bytes(b"bomb");
        let small = Budget::new(16 * 1024);
        let err = unpack_within(cache.path(), &manifest, std::slice::from_ref(&layer), small)
            .unwrap_err();
        assert!(
            matches!(
                err.chain()
                    .find_map(|c| c.downcast_ref::<crate::layer::LayerError>()),
                Some(crate::layer::LayerError::TooLarge { limit: 16384 })
            ),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("Lambda's 10 GB uncompressed limit"));
        assert!(cached(cache.path(), &manifest).unwrap().is_none());
        let left: Vec<_> = fs::read_dir(rootfs_dir(cache.path())).unwrap().collect();
        assert!(left.is_empty(), "partial unpack left behind: {left:?}");
        // The same layer within the limit unpacks.
        unpack_within(cache.path(), &manifest, &[layer], Budget::new(1 << 20)).unwrap();
    }
}
