//! The zip sink: deterministic zip archives for Lambda (function packages and layers),
//! written from [`Tree`]s and from zips this module wrote before. It owns the archive
//! format only; what goes into each zip, and where, is decided by [`crate::package`].
//!
//! The same entries give the same bytes on any machine: entries sorted by path, every
//! timestamp 1980-01-01 00:00 (the earliest DOS time), "version made by" Unix with the
//! mode in the external attributes (directories 0755, files 0644, executables 0755), no
//! extra fields (no uid/gid, no extended timestamps), deflate level 6 on the zlib-rs
//! backend Cargo.toml pins. Those bytes are what Lambda's `CodeSha256` hashes.
//!
//! Symlinks (a [`Tree`] keeps only those that resolve inside it) are stored as regular
//! files with their target's content, and a link to a directory as a copy of that
//! directory: tools that unpack zips do not all restore links, and a copy can never point
//! outside the package.

use crate::tree::{self, Node, Tree};
use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use zip::write::{SimpleFileOptions, ZipFileBuilder};
use zip::{CompressionMethod, DateTime, System, ZipArchive, ZipWriter};

/// Bumped whenever the bytes written for the same entries change (a zip crate or flate2
/// update that changes them fails `zip_bytes_are_pinned` first), so cached zips from an
/// older ocilambda are not reused.
pub const FORMAT_VERSION: u32 = 1;

/// zlib's default level, as `zip -r` uses; fixed because the level changes the bytes.
const DEFLATE_LEVEL: i64 = 6;

/// Files up to this size are compressed on every core, a batch at a time, and appended in
/// path order; larger ones stream through one compressor. Both limits bound memory: a
/// batch's compressed files are held until appended.
const PARALLEL_MAX_FILE: u64 = 4 << 20;
const BATCH_BYTES: u64 = 32 << 20;

/// Directory links are expanded at most this deep; [`Tree::check_links`] has already
/// refused cycles, so this only guards against a bug there.
const MAX_LINK_DEPTH: usize = 40;

/// One archive to draw entries from, in the order given to [`Entries::from_parts`].
#[derive(Clone, Copy)]
pub enum Part<'a> {
    Tree(&'a Tree),
    /// A zip written by this module: its entries are copied as they are, without
    /// decompressing (already normalised, and much faster than compressing again).
    Zip(&'a Path),
}

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File {
        source: PathBuf,
        size: u64,
        executable: bool,
    },
    Copied {
        archive: usize,
        index: usize,
        size: u64,
        dir: bool,
    },
}

/// What a zip will hold, sorted by path, before any byte is written: the size budget is
/// checked on this.
pub struct Entries {
    /// Paths without a trailing slash, so directories sort as in [`Tree`] and in layers.
    entries: BTreeMap<String, Entry>,
    archives: Vec<(PathBuf, ZipArchive<BufReader<File>>)>,
}

/// A written zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// `sha256:<hex>` of the zip file.
    pub digest: String,
    /// Size of the zip file in bytes.
    pub size: u64,
    /// Sum of the file sizes once unzipped (what Lambda's 250 MB limit counts).
    pub unzipped_size: u64,
    pub files: u64,
}

impl Written {
    /// Lambda's `CodeSha256`: the base64 of the SHA-256 of the zip file.
    pub fn code_sha256(&self) -> Result<String> {
        let bytes = hex::decode(crate::digest::hex_part(&self.digest)?)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl Entries {
    /// Merge `parts` by path; on a collision the later part wins (as with [`Tree::extend`]).
    pub fn from_parts(parts: &[Part]) -> Result<Entries> {
        let mut out = Entries {
            entries: BTreeMap::new(),
            archives: Vec::new(),
        };
        for part in parts {
            match part {
                Part::Tree(tree) => out.add_tree(tree)?,
                Part::Zip(path) => out.add_zip(path)?,
            }
        }
        Ok(out)
    }

    fn add_tree(&mut self, tree: &Tree) -> Result<()> {
        // The layer writer's rule: links that escape, dangle, loop or contain themselves.
        tree.check_links()?;
        for (path, node) in tree.entries() {
            self.add_node(tree, path, path, node, 0)?;
        }
        Ok(())
    }

    /// Add `node` (found at `source_path` in `tree`) at `path`, following symlinks.
    fn add_node(
        &mut self,
        tree: &Tree,
        path: &str,
        source_path: &str,
        node: &Node,
        depth: usize,
    ) -> Result<()> {
        match node {
            Node::Dir => {
                self.entries.insert(path.to_string(), Entry::Dir);
            }
            Node::File {
                source,
                size,
                executable,
                ..
            } => {
                self.entries.insert(
                    path.to_string(),
                    Entry::File {
                        source: source.clone(),
                        size: *size,
                        executable: *executable,
                    },
                );
            }
            Node::Symlink { .. } => {
                if depth >= MAX_LINK_DEPTH {
                    bail!("symlink `{source_path}` is part of a cycle of links");
                }
                // Fully resolved: a file or a directory (only the root, a cycle that
                // check_links refused, is not an entry).
                let resolved = tree.resolve(source_path)?;
                let target_node = tree.get(&resolved).cloned().unwrap_or(Node::Dir);
                if let Node::Dir = target_node {
                    self.entries.insert(path.to_string(), Entry::Dir);
                    let prefix = format!("{resolved}/");
                    let below: Vec<(String, Node)> = tree
                        .entries()
                        .filter(|(p, _)| p.starts_with(&prefix))
                        .map(|(p, n)| (p.clone(), n.clone()))
                        .collect();
                    for (p, n) in below {
                        let dest = tree::join(path, &p[prefix.len()..]);
                        self.add_node(tree, &dest, &p, &n, depth + 1)?;
                    }
                } else {
                    self.add_node(tree, path, &resolved, &target_node, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn add_zip(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut archive = ZipArchive::new(BufReader::new(file))
            .with_context(|| format!("reading {}", path.display()))?;
        let archive_index = self.archives.len();
        for index in 0..archive.len() {
            let entry = archive.by_index_raw(index)?;
            let name = entry.name()?.trim_end_matches('/').to_string();
            let copied = Entry::Copied {
                archive: archive_index,
                index,
                size: entry.size(),
                dir: entry.is_dir(),
            };
            self.entries.insert(name, copied);
        }
        self.archives.push((path.to_path_buf(), archive));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn files(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| match e {
                Entry::Dir => false,
                Entry::File { .. } => true,
                Entry::Copied { dir, .. } => !dir,
            })
            .count() as u64
    }

    /// Sum of file sizes once unzipped.
    pub fn unzipped_size(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::Dir => 0,
                Entry::File { size, .. } | Entry::Copied { size, .. } => *size,
            })
            .sum()
    }

    /// Write the zip to a temporary file next to `dest`; [`Pending::persist`] puts it in
    /// place. Several zips that belong together are all written before any is renamed.
    pub fn write_pending(mut self, dest: &Path) -> Result<Pending> {
        let (dir, name) = super::staging(dest)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let written = self
            .write_to(tmp.as_file().try_clone()?, threads)
            .with_context(|| format!("writing {}", dest.display()))?;
        let digest = crate::digest::of_file(tmp.path())?;
        Ok(Pending {
            tmp,
            dest: dest.to_path_buf(),
            written: Written { digest, ..written },
        })
    }

    /// Write the zip to `dest` atomically (temporary file, then rename).
    pub fn write(self, dest: &Path) -> Result<Written> {
        self.write_pending(dest)?.persist()
    }

    /// Write the zip into `blob_dir` under the hex of its SHA-256 (the cache's blob store):
    /// concurrent writers of the same zip agree on the name, and a rename is atomic.
    pub fn write_to_blobs(self, blob_dir: &Path) -> Result<Written> {
        let mut pending = self.write_pending(&blob_dir.join("zip"))?;
        pending.dest = blob_dir.join(crate::digest::hex_part(&pending.written.digest)?);
        pending.persist()
    }

    fn write_to(&mut self, file: File, threads: usize) -> Result<Written> {
        let unzipped_size = self.unzipped_size();
        let files = self.files();
        let mut zip = ZipWriter::new(BufWriter::with_capacity(256 * 1024, file));
        let options = entry_options();
        let Entries { entries, archives } = self;
        let mut batch: Vec<(&str, &Path, bool)> = Vec::new();
        let mut batch_bytes = 0;
        for (path, entry) in entries.iter() {
            if let Entry::File {
                source,
                size,
                executable,
            } = entry
                && *size <= PARALLEL_MAX_FILE
            {
                batch.push((path, source, *executable));
                batch_bytes += size;
                if batch_bytes >= BATCH_BYTES {
                    for prepared in compress_batch(&batch, threads)? {
                        zip.add_prepared_file(prepared)?;
                    }
                    (batch, batch_bytes) = (Vec::new(), 0);
                }
                continue;
            }
            for prepared in compress_batch(&batch, threads)? {
                zip.add_prepared_file(prepared)?;
            }
            (batch, batch_bytes) = (Vec::new(), 0);
            match entry {
                Entry::Dir => {
                    zip.add_directory(format!("{path}/"), options.unix_permissions(0o755))?;
                }
                Entry::File {
                    source, executable, ..
                } => {
                    // Large files stream through one compressor, so memory stays bounded.
                    zip.start_file(path.as_str(), options.unix_permissions(mode(*executable)))?;
                    let mut reader = File::open(source)
                        .with_context(|| format!("reading {}", source.display()))?;
                    std::io::copy(&mut reader, &mut zip)
                        .with_context(|| format!("adding {} to a zip", source.display()))?;
                }
                Entry::Copied { archive, index, .. } => {
                    let (from, archive) = &mut archives[*archive];
                    let entry = archive
                        .by_index_raw(*index)
                        .with_context(|| format!("reading {}", from.display()))?;
                    zip.raw_copy_file(entry)?;
                }
            }
        }
        for prepared in compress_batch(&batch, threads)? {
            zip.add_prepared_file(prepared)?;
        }
        let mut out = zip.finish()?;
        out.flush()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        Ok(Written {
            digest: String::new(),
            size: file.metadata()?.len(),
            unzipped_size,
            files,
        })
    }
}

/// Every field that could carry the build machine's state is fixed here: the time
/// (DateTime::default() is 1980-01-01 00:00), the system (Unix, so readers honour the
/// modes), the compression level; `large_file(false)` keeps zip64 extra fields out.
fn entry_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .system(System::Unix)
        .last_modified_time(DateTime::default())
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(DEFLATE_LEVEL))
        .large_file(false)
}

/// Lambda runs functions as an unprivileged user: files must be world-readable, and only
/// the execute bit survives from the source.
fn mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

/// Compress `batch` (tree path, source, executable) on up to `threads` threads, returned in
/// the batch's order. Each file is compressed on its own, so the bytes do not depend on
/// how many threads there were or which took which file.
fn compress_batch(
    batch: &[(&str, &Path, bool)],
    threads: usize,
) -> Result<Vec<zip::write::PreparedZipFile>> {
    let compress = |(path, source, executable): &(&str, &Path, bool)| -> Result<_> {
        let mut builder =
            ZipFileBuilder::new(path, entry_options().unix_permissions(mode(*executable)))?;
        let mut reader =
            File::open(source).with_context(|| format!("reading {}", source.display()))?;
        std::io::copy(&mut reader, &mut builder)
            .with_context(|| format!("adding {} to a zip", source.display()))?;
        Ok(builder.finish()?)
    };
    let threads = threads.min(batch.len());
    if threads <= 1 {
        return batch.iter().map(compress).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<zip::write::PreparedZipFile>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = batch.get(i) else {
                            return mine;
                        };
                        mine.push((i, compress(job)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("compression thread"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Why a zip cannot be written where it was asked to go; the command layer words the advice.
#[derive(Debug)]
pub enum OutputError {
    /// Something is there that ocilambda did not write (a user's file, a link, another zip).
    NotOurs(PathBuf),
    /// The zip would land among the app sources and ship in the next build.
    InAppSources(PathBuf),
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputError::NotOurs(p) => write!(
                f,
                "{} exists and is not a zip ocilambda wrote; refusing to replace it",
                p.display()
            ),
            OutputError::InAppSources(p) => write!(
                f,
                "{} is inside the app sources: the zip would ship in the next build",
                p.display()
            ),
        }
    }
}

impl std::error::Error for OutputError {}

/// Refuse to write a zip over anything but a zip ocilambda wrote (or nothing).
pub fn check_replaceable(dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dest.display())),
        Ok(meta) if meta.is_file() && is_own_zip(dest) => Ok(()),
        Ok(_) => Err(OutputError::NotOurs(dest.to_path_buf()).into()),
    }
}

/// Whether `path` is a zip as this module writes them: every entry made on Unix, dated
/// 1980-01-01 00:00 and without extra fields. `zip -r`, Python's zipfile and other
/// archivers record real timestamps (and usually extra fields), so a zip a user made is
/// never taken for ours.
fn is_own_zip(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(mut archive) = zip::ZipArchive::new(std::io::BufReader::new(file)) else {
        return false;
    };
    (0..archive.len()).all(|i| {
        archive.by_index_raw(i).is_ok_and(|f| {
            f.last_modified() == Some(DateTime::default())
                && f.system() == System::Unix
                && f.extra_data_fields().next().is_none()
        })
    })
}

/// A zip written to a temporary file, waiting to be renamed into place.
pub struct Pending {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    pub written: Written,
}

impl Pending {
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Rename into place (0644: tempfile creates 0600, and whoever uploads may be another user).
    pub fn persist(self) -> Result<Written> {
        crate::fs::persist_readable(self.tmp, &self.dest)?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn sample(root: &Path) -> Tree {
        std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
        std::fs::write(root.join("pkg/mod.py"), b"print('hi')\n".repeat(50)).unwrap();
        std::fs::write(root.join("pkg/run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(root.join("pkg/sub/data.txt"), b"data").unwrap();
        std::fs::write(root.join("pkg/empty"), b"").unwrap();
        std::fs::set_permissions(
            root.join("pkg/run.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(
            root.join("pkg/mod.py"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("mod.py", root.join("pkg/alias.py")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("pkg/linked")).unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(root, "").unwrap();
        tree
    }

    /// (name, external attributes >> 16, content) of every entry.
    fn read(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut archive = ZipArchive::new(File::open(path).unwrap()).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut e = archive.by_index(i).unwrap();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (
                    e.name().unwrap().to_string(),
                    e.unix_mode().unwrap(),
                    content,
                )
            })
            .collect()
    }

    #[test]
    fn zip_is_sorted_normalised_and_links_become_copies() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let tree = sample(src.path());
        let entries = Entries::from_parts(&[Part::Tree(&tree)]).unwrap();
        assert_eq!(entries.files(), 6);
        let dest = out.path().join("a.zip");
        let written = entries.write(&dest).unwrap();
        assert_eq!(written.size, std::fs::metadata(&dest).unwrap().len());
        assert_eq!(
            written.digest,
            crate::digest::of_file(&dest).unwrap(),
            "digest of the file on disk"
        );
        let got: Vec<(String, u32)> = read(&dest).into_iter().map(|(n, m, _)| (n, m)).collect();
        assert_eq!(
            got,
            [
                ("pkg/".to_string(), 0o40755),
                ("pkg/alias.py".into(), 0o100644),
                ("pkg/empty".into(), 0o100644),
                ("pkg/linked/".into(), 0o40755),
                ("pkg/linked/data.txt".into(), 0o100644),
                ("pkg/mod.py".into(), 0o100644),
                ("pkg/run.sh".into(), 0o100755),
                ("pkg/sub/".into(), 0o40755),
                ("pkg/sub/data.txt".into(), 0o100644),
            ]
        );
        let contents = read(&dest);
        assert_eq!(
            contents[1].2, contents[5].2,
            "link stored with its target's content"
        );
        assert_eq!(written.unzipped_size, 600 * 2 + 10 + 4 * 2);
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn copied_entries_merge_in_order_and_later_parts_win() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("lib")).unwrap();
        std::fs::write(a.path().join("lib/x.py"), b"deps").unwrap();
        std::fs::write(a.path().join("shared.py"), b"from deps").unwrap();
        std::fs::create_dir_all(b.path().join("app")).unwrap();
        std::fs::write(b.path().join("app/main.py"), b"app").unwrap();
        std::fs::write(b.path().join("shared.py"), b"from app").unwrap();
        let (mut ta, mut tb) = (Tree::new(), Tree::new());
        ta.add_dir_all(a.path(), "").unwrap();
        tb.add_dir_all(b.path(), "").unwrap();
        let deps = out.path().join("deps.zip");
        Entries::from_parts(&[Part::Tree(&ta)])
            .unwrap()
            .write(&deps)
            .unwrap();
        let entries = Entries::from_parts(&[Part::Zip(&deps), Part::Tree(&tb)]).unwrap();
        assert_eq!(entries.unzipped_size(), 4 + 3 + 8);
        let merged = out.path().join("merged.zip");
        entries.write(&merged).unwrap();
        let got: Vec<(String, Vec<u8>)> =
            read(&merged).into_iter().map(|(n, _, c)| (n, c)).collect();
        assert_eq!(
            got,
            [
                ("app/".to_string(), vec![]),
                ("app/main.py".into(), b"app".to_vec()),
                ("lib/".into(), vec![]),
                ("lib/x.py".into(), b"deps".to_vec()),
                ("shared.py".into(), b"from app".to_vec()),
            ]
        );
    }

    #[test]
    fn same_tree_elsewhere_gives_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let out = tempfile::tempdir().unwrap();
        let ta = sample(a.path());
        let tb = sample(b.path());
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345);
        File::options()
            .write(true)
            .open(b.path().join("pkg/mod.py"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let wa = Entries::from_parts(&[Part::Tree(&ta)])
            .unwrap()
            .write(&out.path().join("a.zip"))
            .unwrap();
        let wb = Entries::from_parts(&[Part::Tree(&tb)])
            .unwrap()
            .write(&out.path().join("b.zip"))
            .unwrap();
        assert_eq!(wa, wb);
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_threads() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let tree = sample(src.path());
        // One file above the parallel limit streams between the batched ones.
        let mut big = Vec::new();
        for i in 0..800_000u32 {
            big.extend_from_slice(format!("{i}\n").as_bytes());
        }
        assert!(big.len() as u64 > PARALLEL_MAX_FILE);
        std::fs::write(src.path().join("pkg/big.txt"), &big).unwrap();
        let mut tree2 = tree.clone();
        tree2
            .add_path(&src.path().join("pkg/big.txt"), "pkg/big.txt")
            .unwrap();
        let written: Vec<Vec<u8>> = [1, 3]
            .iter()
            .map(|&threads| {
                let path = out.path().join(format!("{threads}.zip"));
                let mut entries = Entries::from_parts(&[Part::Tree(&tree2)]).unwrap();
                entries
                    .write_to(File::create(&path).unwrap(), threads)
                    .unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(written[0] == written[1], "same bytes on 1 and 3 threads");
        let entries = read(&out.path().join("3.zip"));
        let big_entry = entries.iter().find(|e| e.0 == "pkg/big.txt").unwrap();
        assert_eq!(big_entry.2, big);
    }

    #[test]
    fn dangling_and_cyclic_links_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("gone.py", dir.path().join("d/a.py")).unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(dir.path(), "").unwrap();
        let err = Entries::from_parts(&[Part::Tree(&tree)]).err().unwrap();
        assert!(err.to_string().contains("not in the package"), "{err}");

        std::fs::remove_file(dir.path().join("d/a.py")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("d/up")).unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(dir.path(), "x").unwrap();
        let err = Entries::from_parts(&[Part::Tree(&tree)]).err().unwrap();
        assert!(err.to_string().contains("contains the link"), "{err}");
    }

    #[test]
    fn code_sha256_is_base64_of_the_digest() {
        let w = Written {
            digest: crate::digest::of_bytes(b""),
            size: 0,
            unzipped_size: 0,
            files: 0,
        };
        assert_eq!(
            w.code_sha256().unwrap(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    /// The zip bytes are what Lambda reports as CodeSha256 and what CI compares to skip
    /// deploys: if a zip crate or flate2 update changes them, this fails first.
    #[test]
    fn zip_bytes_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        let mut text = Vec::new();
        for i in 0..5_000u32 {
            text.extend_from_slice(format!("line {i} {}\n", i * 7919 % 1000).as_bytes());
        }
        std::fs::write(dir.path().join("app/data.txt"), &text).unwrap();
        std::fs::write(dir.path().join("app/run"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("app/run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(dir.path(), "").unwrap();
        let w = Entries::from_parts(&[Part::Tree(&tree)])
            .unwrap()
            .write(&out.path().join("p.zip"))
            .unwrap();
        assert_eq!(
            w.digest, "sha256:7bd68df22056b8a923a508456c01f6405ed748305840d8e89cb32a43c033ce30",
            "zip output changed: bump sink::zip::FORMAT_VERSION and say so in the changelog"
        );
    }
}
