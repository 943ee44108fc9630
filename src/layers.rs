//! Reproducible layer blobs: a [`Tree`] becomes tar → gzip → content-addressed file in one
//! streaming pass, hashing the uncompressed (diff_id) and compressed (digest) streams on
//! the way, so no layer is ever held in memory or read twice.
//!
//! Every field that could carry the build machine's state is fixed here; the gzip
//! backend and level are part of the digest, so Cargo.toml pins flate2 to zlib-rs.

use crate::digest::HashingWriter;
use crate::tree::{Node, Tree};
use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Bumped whenever the bytes this module writes for the same tree change, so cached
/// layers from an older ocilambda are not reused under a key they no longer match.
/// 2: files sharing an inode are full copies, no longer tar hard links.
pub const FORMAT_VERSION: u32 = 2;

/// gzip level 6: zlib's default, the usual speed/size balance; fixed because the level
/// changes the compressed bytes and therefore the digest.
const GZIP_LEVEL: u32 = 6;

/// A written layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// sha256 of the gzip stream: the blob's name and the manifest's layer digest.
    pub digest: String,
    /// sha256 of the uncompressed tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Uncompressed tar size in bytes.
    pub uncompressed_size: u64,
    pub files: u64,
}

/// One tree entry as a normalised tar entry: uid/gid 0, `mtime`, fixed modes. Files that
/// share an inode are written as full copies each: Lambda refuses a layer holding a hard
/// link (UnsupportedImageLayerDetected), and a copy depends only on the path and the bytes.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    node: &Node,
    mtime: u64,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    match node {
        Node::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            // Fixed modes, so the layer is not sensitive to the umask it was built under.
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
        }
        Node::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, path, target)?;
        }
        Node::File {
            source,
            size,
            executable,
        } => {
            // Lambda runs functions as an unprivileged user: files must be
            // world-readable, and only the execute bit survives from the source.
            header.set_mode(if *executable { 0o755 } else { 0o644 });
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(*size);
            let file = std::fs::File::open(source)
                .with_context(|| format!("reading {}", source.display()))?;
            builder
                .append_data(&mut header, path, file)
                .with_context(|| format!("adding {} to a layer", source.display()))?;
        }
    }
    Ok(())
}

/// Write `tree` as a gzip-compressed tar into `blob_dir/<hex>`, every entry stamped with
/// `mtime` (SOURCE_DATE_EPOCH). Safe to run concurrently with other writers of the same
/// directory: the blob appears by rename, and identical content gives the identical name.
pub fn write(tree: &Tree, mtime: u64, blob_dir: &Path) -> Result<Layer> {
    // The rule the zip writer applies too: a link that escapes, dangles or loops fails
    // here, before any byte is written.
    tree.check_links()?;
    std::fs::create_dir_all(blob_dir)
        .with_context(|| format!("creating {}", blob_dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(blob_dir)
        .with_context(|| format!("creating a temporary file in {}", blob_dir.display()))?;
    let file = BufWriter::with_capacity(256 * 1024, tmp.as_file().try_clone()?);
    let compressed = HashingWriter::new(file);
    // A fixed gzip header: no file name, mtime 0, OS "unknown", so the header says
    // nothing about where or when the layer was made.
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, Compression::new(GZIP_LEVEL));
    let uncompressed = HashingWriter::new(gz);
    let mut builder = tar::Builder::new(uncompressed);
    builder.mode(tar::HeaderMode::Deterministic);

    for (path, node) in tree.entries() {
        append(&mut builder, path, node, mtime)?;
    }
    let uncompressed = builder.into_inner()?;
    let (gz, diff_id, uncompressed_size) = uncompressed.finish();
    let compressed = gz.finish()?;
    let (mut file, digest, size) = compressed.finish();
    file.flush()?;
    drop(file);
    let target = blob_dir.join(crate::digest::hex_part(&digest)?);
    crate::fs::persist_readable(tmp, &target)?;
    Ok(Layer {
        digest,
        diff_id,
        size,
        uncompressed_size,
        files: tree.file_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample_tree(root: &Path) -> Tree {
        std::fs::create_dir_all(root.join("pkg")).unwrap();
        std::fs::write(root.join("pkg/mod.py"), b"print('hi')\n").unwrap();
        std::fs::write(root.join("pkg/run.sh"), b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
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
        let mut tree = Tree::new();
        tree.add_dir_all(root, "var/task").unwrap();
        tree
    }

    #[test]
    fn layer_is_byte_identical_and_normalised() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let blobs = tempfile::tempdir().unwrap();
        let la = write(&sample_tree(a.path()), 1, blobs.path()).unwrap();
        // Different mtimes on the second copy must not matter.
        let tb = sample_tree(b.path());
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345);
        std::fs::File::options()
            .write(true)
            .open(b.path().join("pkg/mod.py"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let lb = write(&tb, 1, blobs.path()).unwrap();
        assert_eq!(la, lb);

        let blob = std::fs::read(blobs.path().join(&la.digest[7..])).unwrap();
        assert_eq!(crate::digest::of_bytes(&blob), la.digest);
        assert_eq!(blob.len() as u64, la.size);
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(crate::digest::of_bytes(&tar_bytes), la.diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let got: Vec<(String, u32, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("var/".into(), 0o755, 1, 0),
                ("var/task/".into(), 0o755, 1, 0),
                ("var/task/pkg/".into(), 0o755, 1, 0),
                ("var/task/pkg/mod.py".into(), 0o644, 1, 0),
                ("var/task/pkg/run.sh".into(), 0o755, 1, 0),
            ]
        );
    }

    /// Lambda refuses layers with hard links or entries whose parent directory is not in
    /// the same layer: files sharing an inode are full copies, every parent is an entry.
    #[test]
    fn hard_linked_files_are_written_as_copies_under_their_parents() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/deep/er")).unwrap();
        std::fs::write(src.path().join("a/deep/er/one.so"), b"same bytes").unwrap();
        std::fs::hard_link(
            src.path().join("a/deep/er/one.so"),
            src.path().join("two.so"),
        )
        .unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(src.path(), "opt/python").unwrap();
        let blobs = tempfile::tempdir().unwrap();
        let layer = write(&tree, 0, blobs.path()).unwrap();
        let blob = std::fs::read(blobs.path().join(&layer.digest[7..])).unwrap();
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen: Vec<String> = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let kind = e.header().entry_type();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            assert_ne!(kind, tar::EntryType::Link, "{path} is a hard link");
            if let Some((parent, _)) = path.rsplit_once('/') {
                assert!(seen.iter().any(|s| s == parent), "{path} before its parent");
            }
            if path.ends_with(".so") {
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                assert_eq!(content, b"same bytes", "{path}");
            }
            seen.push(path);
        }
        assert!(seen.contains(&"opt/python/two.so".to_string()));
    }

    /// The compressor's bytes are part of every digest we publish: if a dependency update
    /// or cargo feature unification swaps the deflate backend or its settings, this fails
    /// before users see digests change between ocilambda versions.
    #[test]
    fn gzip_bytes_are_pinned() {
        let mut input = Vec::new();
        for i in 0..20_000u32 {
            input.extend_from_slice(format!("line {i} {}\n", i * 7919 % 1000).as_bytes());
        }
        let mut gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::new(GZIP_LEVEL));
        gz.write_all(&input).unwrap();
        let out = gz.finish().unwrap();
        assert_eq!(
            crate::digest::of_bytes(&out),
            "sha256:329714031bc19402f6e482984c1bee5aea557b69d489aaa86241e450dc0b8f71",
            "gzip output changed: bump layers::FORMAT_VERSION and say so in the changelog"
        );
    }
}
