//! The one layer reader: a layer blob (tar, or tar+gzip of any number of members) streamed
//! as entries whose paths are cleaned and whose whiteouts are classified here, once, with
//! the uncompressed bytes counted against a budget. It owns no filesystem: [`view`] is the
//! in-memory flattener (inspect, diff, lint), `invoke::rootfs` the on-disk one.
//!
//! Whiteouts follow the OCI image spec: `.wh.NAME` hides NAME and `.wh..wh..opq` hides its
//! directory's children, in *lower* layers only; entries of the same layer stay, whatever
//! their order in the tar. Flatteners get that rule from [`Op`] and apply it themselves.

pub mod elf;
pub mod view;

#[cfg(test)]
pub mod testing;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Lambda's limit on an image's uncompressed size: 10 GB, counted in bytes of layer tar.
pub const LAMBDA_UNCOMPRESSED_LIMIT: u64 = 10_737_418_240;

/// The name of an opaque whiteout: "hide what lower layers have in this directory".
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Why a layer cannot be read or flattened. Typed so the command layer can give advice and
/// lint can turn each refusal into a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerError {
    /// Neither tar nor tar+gzip.
    UnsupportedMediaType(String),
    /// The layers so far unpack to more than the budget's limit.
    TooLarge { limit: u64 },
    /// An entry no flattener may apply (`entry` is its path as written in the tar).
    Refused { entry: String, reason: Refusal },
}

/// What is wrong with a refused entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A `..` component: the entry would land outside the image root.
    ParentDir,
    /// A whiteout hiding `.`, `..` or nothing: applied, it would delete the whole root.
    BadWhiteout,
    /// A hard link whose target has a `..` component or is the root itself.
    LinkOutside,
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::UnsupportedMediaType(mt) => {
                write!(f, "layer media type `{mt}` is not a tar or tar+gzip layer")
            }
            LayerError::TooLarge { limit } => write!(
                f,
                "the image exceeds Lambda's 10 GB uncompressed limit (its layers unpack to more than {limit} bytes)"
            ),
            LayerError::Refused { entry, reason } => {
                write!(f, "refusing tar entry `{entry}`: {reason}")
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::ParentDir => "`..` would escape the image root",
            Refusal::BadWhiteout => {
                "a whiteout of `.`, `..` or nothing would delete the image root"
            }
            Refusal::LinkOutside => "its hard-link target is outside the image root",
        })
    }
}

impl std::error::Error for LayerError {}

/// The kind of a tar entry, devices and FIFOs told apart because flatteners drop them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Device,
    Fifo,
    Other,
}

/// What an entry does to the filesystem below it. Paths are relative to the image root,
/// normal components only (a leading `/` or `./` dropped, `..` refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace this path.
    Put(PathBuf),
    /// Hide this path (and what is under it) in lower layers.
    Whiteout(PathBuf),
    /// Hide the lower layers' children of this directory (empty: the root).
    Opaque(PathBuf),
    /// Only from [`Strictness::Report`]: an entry the strict reader refuses.
    Refused(Refusal),
}

/// One entry, its content readable through `content` (regular files only).
pub struct Entry<'a> {
    /// The path as written in the tar, for messages.
    pub raw: String,
    pub op: Op,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// A symlink's target as written (it is resolved inside the image, so never cleaned),
    /// or a hard link's target cleaned like an entry path.
    pub link: Option<PathBuf>,
    pub content: &'a mut dyn Read,
}

/// The uncompressed tar of one layer: its size and digest (the config's diff_id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub size: u64,
    pub diff_id: String,
}

/// Uncompressed bytes allowed across the layers read with it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    /// Lambda's 10 GB.
    pub fn lambda() -> Budget {
        Budget::new(LAMBDA_UNCOMPRESSED_LIMIT)
    }

    pub fn new(limit: u64) -> Budget {
        Budget { limit, used: 0 }
    }

    /// For reading without unpacking (inspect, diff): nothing lands on disk, so a large
    /// image only takes time.
    pub fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    /// Uncompressed bytes read so far.
    pub fn used(&self) -> u64 {
        self.used
    }
}

/// Whether entries the flatteners must not apply end the read or are handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// A [`LayerError::Refused`] error naming the entry.
    Refuse,
    /// Handed on as [`Op::Refused`], for lint to report.
    Report,
}

/// How a layer's bytes are compressed, decided by its media type alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

impl Compression {
    pub fn of(media_type: &str) -> Result<Compression, LayerError> {
        use crate::oci::media;
        if media::is_gzip_layer(media_type) {
            Ok(Compression::Gzip)
        } else if media::is_tar_layer(media_type) {
            Ok(Compression::None)
        } else {
            Err(LayerError::UnsupportedMediaType(media_type.to_string()))
        }
    }
}

/// Read the layer blob at `path`, strictly, calling `each` for every entry in tar order.
pub fn read_file(
    path: &Path,
    media_type: &str,
    budget: &mut Budget,
    each: impl FnMut(Entry<'_>) -> Result<()>,
) -> Result<Summary> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read(
        io::BufReader::with_capacity(256 * 1024, file),
        media_type,
        budget,
        Strictness::Refuse,
        each,
    )
    .with_context(|| format!("reading layer {}", path.display()))
}

/// Read a layer from its (compressed) bytes. The whole stream is consumed, trailing zero
/// blocks and the gzip trailer included, so a caller hashing `blob` sees every byte.
pub fn read<R: io::BufRead>(
    blob: R,
    media_type: &str,
    budget: &mut Budget,
    strictness: Strictness,
    each: impl FnMut(Entry<'_>) -> Result<()>,
) -> Result<Summary> {
    let inner: Box<dyn Read + '_> = match Compression::of(media_type)? {
        // Multi-member: pigz and some registries write concatenated gzip members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::None => Box::new(blob),
    };
    let mut counted = Counted {
        inner,
        used: budget.used,
        limit: budget.limit,
        over: false,
        hasher: Sha256::new(),
        start: budget.used,
    };
    let result = walk(&mut counted, strictness, each)
        .and_then(|()| Ok(io::copy(&mut counted, &mut io::sink()).map(drop)?));
    budget.used = counted.used;
    // Whatever the tar parser made of the refused read, the cause is the budget.
    if counted.over {
        return Err(LayerError::TooLarge {
            limit: budget.limit,
        }
        .into());
    }
    result?;
    Ok(Summary {
        size: counted.used - counted.start,
        diff_id: format!("sha256:{}", hex::encode(counted.hasher.finalize())),
    })
}

fn walk(
    tar: &mut dyn Read,
    strictness: Strictness,
    mut each: impl FnMut(Entry<'_>) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("reading the layer tar")? {
        let mut entry = entry.context("reading the layer tar")?;
        let header = entry.header();
        let raw_path = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = kind_of(header.entry_type());
        let (mode, uid, gid, mtime, size) = (
            header.mode().unwrap_or(0o644) & 0o7777,
            header.uid().unwrap_or(0),
            header.gid().unwrap_or(0),
            header.mtime().unwrap_or(0),
            header.size().unwrap_or(0),
        );
        let raw_link = entry.link_name_bytes().map(|l| bytes_path(&l));
        let classified = classify(&bytes_path(&raw_path)).and_then(|op| {
            let link = match (kind, raw_link) {
                (Kind::Hardlink, Some(l)) => Some(clean(&l)?.ok_or(Refusal::LinkOutside)?),
                (_, l) => l,
            };
            Ok((op, link))
        });
        let (op, link) = match classified {
            Ok((Some(op), link)) => (op, link),
            // The root itself: nothing to apply.
            Ok((None, _)) => continue,
            Err(reason) if strictness == Strictness::Report => (Op::Refused(reason), None),
            Err(reason) => return Err(LayerError::Refused { entry: raw, reason }.into()),
        };
        each(Entry {
            raw,
            op,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            link,
            content: &mut entry,
        })?;
    }
    Ok(())
}

fn kind_of(t: tar::EntryType) -> Kind {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous | T::GNUSparse => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink,
        T::Link => Kind::Hardlink,
        T::Char | T::Block => Kind::Device,
        T::Fifo => Kind::Fifo,
        _ => Kind::Other,
    }
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// The normal components of a path in a layer: a leading `/` and `.` are dropped, `..`
/// is refused (resolving it would need the tree, and no honest layer writes it).
/// `None` for the root itself.
pub fn clean(raw: &Path) -> Result<Option<PathBuf>, Refusal> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Refusal::ParentDir),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// What an entry at `raw` does: put a path, or one of the two whiteouts.
pub fn classify(raw: &Path) -> Result<Option<Op>, Refusal> {
    let Some(path) = clean(raw)? else {
        return Ok(None);
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE {
        return Ok(Some(Op::Opaque(dir)));
    }
    let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Some(Op::Put(path)));
    };
    // `.wh.`, `.wh..` and `.wh...` would hide nothing, the directory or its parent.
    if matches!(hidden, "" | "." | "..") {
        return Err(Refusal::BadWhiteout);
    }
    Ok(Some(Op::Whiteout(dir.join(hidden))))
}

/// Counts (against the budget) and hashes the uncompressed bytes read through it.
struct Counted<R> {
    inner: R,
    used: u64,
    limit: u64,
    over: bool,
    hasher: Sha256,
    start: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never hand on more than the budget allows: a gzip bomb stops here, not on disk.
        let room = self.limit.saturating_sub(self.used);
        let want = buf
            .len()
            .min(usize::try_from(room.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > room {
            self.over = true;
            return Err(io::Error::other(LayerError::TooLarge { limit: self.limit }));
        }
        self.used += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{E, gzip, tar_of};
    use super::*;

    fn ops(tar: &[u8], strictness: Strictness) -> Result<Vec<(String, Op, Kind)>> {
        let mut out = Vec::new();
        read(
            tar,
            crate::oci::media::OCI_LAYER_TAR,
            &mut Budget::lambda(),
            strictness,
            |e| {
                out.push((e.raw.clone(), e.op.clone(), e.kind));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn paths_are_cleaned_and_whiteouts_classified() {
        let tar = tar_of(&[
            E::Dir("./", 0o755),
            E::File("/abs/file", 0o644, "x"),
            E::File("./a/./b", 0o644, "x"),
            E::File("etc/.wh.gone", 0o644, ""),
            E::File(".wh.top", 0o644, ""),
            E::File("opt/.wh..wh..opq", 0o644, ""),
            E::File(".wh..wh..opq", 0o644, ""),
        ]);
        let got: Vec<Op> = ops(&tar, Strictness::Refuse)
            .unwrap()
            .into_iter()
            .map(|(_, op, _)| op)
            .collect();
        assert_eq!(
            got,
            [
                Op::Put(p("abs/file")),
                Op::Put(p("a/b")),
                Op::Whiteout(p("etc/gone")),
                Op::Whiteout(p("top")),
                Op::Opaque(p("opt")),
                Op::Opaque(p("")),
            ]
        );
    }

    #[test]
    fn dotdot_entries_and_whiteouts_of_the_root_are_refused_by_name() {
        for evil in [
            "../escaped",
            "a/../../x",
            ".wh..",
            ".wh...",
            "etc/.wh..",
            ".wh.",
        ] {
            let tar = tar_of(&[E::File(evil, 0o644, "")]);
            let err = ops(&tar, Strictness::Refuse).unwrap_err();
            let layer = err.downcast_ref::<LayerError>().expect("typed");
            assert!(
                matches!(layer, LayerError::Refused { entry, .. } if entry == evil),
                "{evil}: {err:#}"
            );
            assert!(format!("{err:#}").contains(evil), "{err:#}");
            let reported = ops(&tar, Strictness::Report).unwrap();
            assert!(matches!(reported[0].1, Op::Refused(_)), "{evil}");
        }
    }

    #[test]
    fn hard_link_targets_are_cleaned_and_checked() {
        let mut links = Vec::new();
        let tar = tar_of(&[E::Hardlink("l", "/usr/bin/python3")]);
        read(
            &tar[..],
            crate::oci::media::OCI_LAYER_TAR,
            &mut Budget::lambda(),
            Strictness::Refuse,
            |e| {
                links.push(e.link.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(links, [Some(p("usr/bin/python3"))]);
        for target in ["../../etc/passwd", "/"] {
            let tar = tar_of(&[E::Hardlink("l", target)]);
            let err = ops(&tar, Strictness::Refuse).unwrap_err();
            assert!(
                matches!(
                    err.downcast_ref::<LayerError>(),
                    Some(LayerError::Refused { .. })
                ),
                "{target}: {err:#}"
            );
        }
    }

    #[test]
    fn symlink_targets_are_kept_as_written_and_devices_told_apart() {
        let tar = tar_of(&[E::Symlink("lib64", "/usr/lib64"), E::Device("dev/null")]);
        let got = ops(&tar, Strictness::Refuse).unwrap();
        assert_eq!(got[0].2, Kind::Symlink);
        assert_eq!(got[1].2, Kind::Device);
    }

    #[test]
    fn multi_member_gzip_is_read_whole_and_summarised() {
        let tar = tar_of(&[E::File("a", 0o644, "one"), E::File("b", 0o644, "two")]);
        let (first, second) = tar.split_at(1024);
        let mut blob = gzip(first);
        blob.extend(gzip(second));
        let mut names = Vec::new();
        let summary = read(
            &blob[..],
            crate::oci::media::OCI_LAYER_GZIP,
            &mut Budget::lambda(),
            Strictness::Refuse,
            |e| {
                names.push(e.raw);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(summary.size, tar.len() as u64);
        assert_eq!(summary.diff_id, crate::digest::of_bytes(&tar));
    }

    #[test]
    fn the_budget_stops_reading_across_layers_with_a_typed_error() {
        let tar = tar_of(&[E::File("big", 0o644, &"x".repeat(10_000))]);
        let mut budget = Budget::new(tar.len() as u64 + 100);
        let media = crate::oci::media::OCI_LAYER_GZIP;
        let blob = gzip(&tar);
        read(
            &blob[..],
            media,
            &mut budget,
            Strictness::Refuse,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(budget.used(), tar.len() as u64);
        let err = read(&blob[..], media, &mut budget, Strictness::Refuse, |e| {
            io::copy(e.content, &mut io::sink())?;
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<LayerError>(),
                Some(LayerError::TooLarge { .. })
            ),
            "{err:#}"
        );
        assert!(format!("{err}").contains("Lambda's 10 GB uncompressed limit"));
        assert!(budget.used() <= tar.len() as u64 + 100);
    }

    #[test]
    fn media_types_are_judged_by_the_oci_vocabulary() {
        use crate::oci::media;
        assert_eq!(
            Compression::of(media::DOCKER_LAYER_GZIP),
            Ok(Compression::Gzip)
        );
        assert_eq!(Compression::of(media::OCI_LAYER_TAR), Ok(Compression::None));
        let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
        assert_eq!(
            Compression::of(zstd),
            Err(LayerError::UnsupportedMediaType(zstd.into()))
        );
    }
}
