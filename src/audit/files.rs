//! The files of a layer, read straight from its compressed tar: path, type, mode,
//! ownership, mtime, size, content digest, link target. One streaming pass per layer;
//! nothing is extracted to disk.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// sha256 of the content (regular files only).
    pub sha256: Option<String>,
    /// Symlink or hard-link target.
    pub link: Option<String>,
    /// The first 16 bytes (for .pyc headers and ELF checks).
    pub head: Vec<u8>,
}

/// Layer path normalised: no leading `./` or `/`, no trailing `/`.
pub fn normalise(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// Is this a layer media type we can read (plain or gzip tar)?
pub fn readable_media_type(media_type: &str) -> bool {
    media_type.ends_with("tar+gzip")
        || media_type.ends_with(".tar.gzip")
        || media_type.ends_with("layer.v1.tar")
        || media_type.ends_with("diff.tar")
}

/// A layer read through: its entries in archive order, and the uncompressed tar's size
/// and digest (the config's diff_id).
pub struct LayerRead {
    pub entries: Vec<(String, FileInfo)>,
    pub size: u64,
    pub diff_id: String,
}

/// Read the layer blob at `path`.
pub fn read_layer(path: &Path, media_type: &str) -> Result<LayerRead> {
    if !readable_media_type(media_type) {
        bail!("layer media type `{media_type}` is not a (gzip) tar");
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let buffered = std::io::BufReader::new(file);
    let reader: Box<dyn Read> = if media_type.contains("gzip") {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut size_probe = SizeReader {
        inner: reader,
        count: 0,
        hasher: Sha256::new(),
    };
    let mut out = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut size_probe);
        for entry in archive
            .entries()
            .with_context(|| format!("reading {}", path.display()))?
        {
            let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let header = entry.header().clone();
            let name = normalise(&entry.path()?.to_string_lossy());
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink,
                tar::EntryType::Link => Kind::Hardlink,
                _ => Kind::Other,
            };
            let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
            let (sha256, head) = if kind == Kind::File {
                let mut hasher = Sha256::new();
                let mut head = Vec::new();
                let mut buf = [0u8; 64 * 1024];
                loop {
                    let n = entry.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if head.len() < 16 {
                        let take = (16 - head.len()).min(n);
                        head.extend_from_slice(&buf[..take]);
                    }
                    hasher.update(&buf[..n]);
                }
                (
                    Some(format!("sha256:{}", hex::encode(hasher.finalize()))),
                    head,
                )
            } else {
                (None, Vec::new())
            };
            out.push((
                name,
                FileInfo {
                    kind,
                    mode: header.mode().unwrap_or(0) & 0o7777,
                    uid: header.uid().unwrap_or(0),
                    gid: header.gid().unwrap_or(0),
                    mtime: header.mtime().unwrap_or(0),
                    size: header.size().unwrap_or(0),
                    sha256,
                    link,
                    head,
                },
            ));
        }
    }
    // Drain the padding after the end-of-archive blocks so the size is the whole tar.
    std::io::copy(&mut size_probe, &mut std::io::sink())?;
    Ok(LayerRead {
        entries: out,
        size: size_probe.count,
        diff_id: format!("sha256:{}", hex::encode(size_probe.hasher.finalize())),
    })
}

/// The layer as a map (later entries of the same path win, as when extracting).
pub fn layer_map(entries: Vec<(String, FileInfo)>) -> BTreeMap<String, FileInfo> {
    entries.into_iter().collect()
}

/// Counts and hashes the uncompressed bytes read through it.
struct SizeReader<R> {
    inner: R,
    count: u64,
    hasher: Sha256,
}

impl<R: Read> Read for SizeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Apply a layer to a merged view of the image's files, honouring OCI whiteouts
/// (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties its directory).
pub fn apply(view: &mut BTreeMap<String, FileInfo>, layer: Vec<(String, FileInfo)>) {
    for (path, info) in layer {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            view.retain(|p, _| !(p.starts_with(&prefix) && p.len() > prefix.len()));
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            let victim = if dir.is_empty() {
                target.to_string()
            } else {
                format!("{dir}/{target}")
            };
            let children = format!("{victim}/");
            view.retain(|p, _| *p != victim && !p.starts_with(&children));
            continue;
        }
        view.insert(path, info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: Kind) -> FileInfo {
        FileInfo {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            sha256: None,
            link: None,
            head: vec![],
        }
    }

    #[test]
    fn whiteouts_delete_and_opaque_dirs_empty() {
        let mut view = BTreeMap::new();
        for p in ["etc", "etc/a", "etc/b", "opt", "opt/x", "opt/x/y"] {
            view.insert(p.to_string(), info(Kind::File));
        }
        apply(
            &mut view,
            vec![
                ("etc/.wh.a".into(), info(Kind::File)),
                ("opt/.wh..wh..opq".into(), info(Kind::File)),
            ],
        );
        let left: Vec<&str> = view.keys().map(String::as_str).collect();
        assert_eq!(left, ["etc", "etc/b", "opt"]);
    }

    #[test]
    fn reads_a_layer_we_wrote() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("app")).unwrap();
        std::fs::write(src.path().join("app/x.py"), b"print(1)\n").unwrap();
        let mut tree = crate::tree::Tree::new();
        tree.add_dir_all(src.path(), "").unwrap();
        let blobs = tempfile::tempdir().unwrap();
        let layer = crate::layers::write(&tree.prefixed("var/task"), 0, blobs.path()).unwrap();
        let read = read_layer(
            &blobs.path().join(&layer.digest[7..]),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .unwrap();
        assert_eq!(read.size, layer.uncompressed_size);
        assert_eq!(read.diff_id, layer.diff_id);
        let map = layer_map(read.entries);
        let f = &map["var/task/app/x.py"];
        assert_eq!(f.kind, Kind::File);
        assert_eq!(
            f.sha256.as_deref(),
            Some(crate::digest::of_bytes(b"print(1)\n").as_str())
        );
        assert_eq!(map["var/task/app"].kind, Kind::Dir);
    }
}
