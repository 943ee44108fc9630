//! The in-memory flattener: each layer's entries with what an audit needs of them (type,
//! mode, ownership, mtime, size, content digest, first bytes), and the merged view of the
//! image's files. Nothing is extracted to disk.

use super::elf;
use super::{Budget, Entry, Kind, Op, Strictness, Summary};
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// sha256 of the content (regular files only).
    pub sha256: Option<String>,
    /// Symlink target as written, or hard-link target cleaned.
    pub link: Option<String>,
    /// The first 16 bytes (for .pyc headers and ELF checks).
    pub head: Vec<u8>,
    /// Machine and glibc needs of ELF objects under /var/task and /opt (the function's own
    /// files: the base's objects match the runtime by construction, and are many).
    pub elf: Option<super::elf::Elf>,
    /// For a wheel's `*.dist-info/RECORD` under /var/task or /opt: the image paths it lists
    /// (which distribution installed a file).
    pub record: Option<Vec<String>>,
}

/// One entry of a layer: its cleaned path as written (whiteouts under their own names),
/// what it does, and its metadata.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub path: String,
    /// The path as written in the tar (for refused entries, the only name there is).
    pub raw: String,
    pub op: Op,
    pub info: FileInfo,
}

/// A layer read through: its entries in archive order, and its uncompressed tar.
pub struct LayerRead {
    pub entries: Vec<LayerEntry>,
    pub summary: Summary,
}

impl LayerRead {
    /// Every applicable entry by path (later entries of one path win, as when extracting).
    pub fn files(&self) -> BTreeMap<String, FileInfo> {
        self.entries
            .iter()
            .filter(|e| !matches!(e.op, Op::Refused(_)))
            .map(|e| (e.path.clone(), e.info.clone()))
            .collect()
    }
}

/// Read the layer blob at `path` into memory (metadata and content digests only).
pub fn read_layer(
    path: &Path,
    media_type: &str,
    budget: &mut Budget,
    strictness: Strictness,
) -> Result<LayerRead> {
    let file = std::fs::File::open(path)?;
    read_layer_from(
        std::io::BufReader::with_capacity(256 * 1024, file),
        media_type,
        budget,
        strictness,
    )
}

/// [`read_layer`] over a blob's bytes.
pub fn read_layer_from<R: std::io::BufRead>(
    blob: R,
    media_type: &str,
    budget: &mut Budget,
    strictness: Strictness,
) -> Result<LayerRead> {
    let mut entries = Vec::new();
    let summary = super::read(blob, media_type, budget, strictness, |e| {
        entries.push(entry(e)?);
        Ok(())
    })?;
    Ok(LayerRead { entries, summary })
}

fn entry(e: Entry<'_>) -> Result<LayerEntry> {
    let path = match &e.op {
        Op::Put(p) => p.to_string_lossy().into_owned(),
        Op::Whiteout(p) => {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            join(
                &p.parent().unwrap_or(Path::new("")).to_string_lossy(),
                &format!(".wh.{name}"),
            )
        }
        Op::Opaque(d) => join(&d.to_string_lossy(), super::OPAQUE),
        Op::Refused(_) => e.raw.clone(),
    };
    // The function's own files (/var/task, /opt): the base's match the runtime by
    // construction, and are many, so only these are parsed beyond their head.
    let own = matches!(&e.op, Op::Put(p) if p.starts_with("var/task") || p.starts_with("opt"));
    let keep = if !own || e.kind != Kind::File {
        Keep::Head
    } else if path.ends_with(".dist-info/RECORD") && e.size <= MAX_RECORD {
        Keep::All
    } else {
        Keep::Elf
    };
    let (sha256, head, kept) = if e.kind == Kind::File {
        let (digest, head, kept) = digest_and_head(e.content, keep)?;
        (Some(digest), head, kept)
    } else {
        (None, Vec::new(), None)
    };
    let (elf, record) = match (keep, kept) {
        (Keep::All, Some(kept)) => (None, Some(record_paths(&path, &kept.head))),
        (Keep::Elf, Some(kept)) => (super::elf::parse(kept.as_elf()), None),
        _ => (None, None),
    };
    Ok(LayerEntry {
        path,
        raw: e.raw,
        op: e.op,
        info: FileInfo {
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            size: e.size,
            sha256,
            link: e.link.map(|l| l.to_string_lossy().into_owned()),
            head,
            elf,
            record,
        },
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A wheel's RECORD is a line per installed file; this is thousands of files' worth.
const MAX_RECORD: u64 = 16 << 20;

/// What of a file's content is kept besides its digest and head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Head,
    /// When it starts like ELF: its first [`elf::HEAD`] and last [`elf::TAIL`] bytes.
    Elf,
    /// All of it (in `head`).
    All,
}

/// The bytes [`Keep`] asked for, of content `len` bytes long.
struct Held {
    head: Vec<u8>,
    tail: Vec<u8>,
    len: u64,
}

impl Held {
    fn as_elf(&self) -> elf::Kept<'_> {
        elf::Kept {
            head: &self.head,
            tail: &self.tail,
            len: self.len,
        }
    }
}

/// The content's digest and first 16 bytes, and the bytes `keep` asks for. One pass:
/// an ELF object's version needs sit near its start and its section headers at its end,
/// so the middle (its code) streams through without being held.
fn digest_and_head(content: &mut dyn Read, keep: Keep) -> Result<(String, Vec<u8>, Option<Held>)> {
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut kept = (keep == Keep::All).then(|| Held {
        head: Vec::new(),
        tail: Vec::new(),
        len: 0,
    });
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = content.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if head.len() < 16 {
            let take = (16 - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
            if keep == Keep::Elf && kept.is_none() && elf::is_elf(&head) {
                kept = Some(Held {
                    head: Vec::new(),
                    tail: Vec::new(),
                    len: 0,
                });
            }
        }
        if let Some(k) = &mut kept {
            let room = if keep == Keep::All {
                n
            } else {
                elf::HEAD.saturating_sub(k.head.len()).min(n)
            };
            k.head.extend_from_slice(&chunk[..room]);
            k.tail.extend_from_slice(&chunk[room..]);
            if k.tail.len() > 2 * elf::TAIL {
                k.tail.drain(..k.tail.len() - elf::TAIL);
            }
            k.len += n as u64;
        }
        hasher.update(chunk);
    }
    if let Some(k) = &mut kept
        && k.tail.len() > elf::TAIL
    {
        k.tail.drain(..k.tail.len() - elf::TAIL);
    }
    Ok((
        format!("sha256:{}", hex::encode(hasher.finalize())),
        head,
        kept,
    ))
}

/// The image paths a `*.dist-info/RECORD` at `record` lists. Its paths (CSV, first
/// column) are relative to the directory holding the `.dist-info`, and may climb out of it
/// with `..` (scripts); paths that would leave the image root are dropped.
fn record_paths(record: &str, text: &[u8]) -> Vec<String> {
    let site = Path::new(record)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(text).lines() {
        let Some(rel) = record_path(line) else {
            continue;
        };
        let mut parts: Vec<&str> = site.to_str().unwrap_or("").split('/').collect();
        parts.retain(|p| !p.is_empty());
        let mut inside = true;
        for c in rel.split('/') {
            match c {
                "" | "." => {}
                ".." => inside &= parts.pop().is_some(),
                c => parts.push(c),
            }
        }
        if inside && !parts.is_empty() && !rel.starts_with('/') {
            out.push(parts.join("/"));
        }
    }
    out
}

/// The first CSV column of a RECORD line (quoted when the path holds a comma).
fn record_path(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut path = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    path.push('"');
                    chars.next();
                }
                '"' => return Some(path),
                c => path.push(c),
            }
        }
        None
    } else {
        let path = line.split(',').next()?;
        (!path.is_empty()).then(|| path.to_string())
    }
}

/// The merged files of the layers applied so far, by path (no leading `/`).
#[derive(Debug, Clone, Default)]
pub struct View {
    pub files: BTreeMap<String, FileInfo>,
}

impl View {
    pub fn new() -> View {
        View::default()
    }

    /// Apply one layer on top. Its whiteouts hide what the lower layers have, never what
    /// this layer adds, whatever the order of the tar: so they go first, then the entries
    /// in archive order. Refused entries are not applied.
    pub fn apply(&mut self, layer: &LayerRead) {
        for e in &layer.entries {
            match &e.op {
                Op::Whiteout(p) => self.hide(&p.to_string_lossy(), true),
                Op::Opaque(d) => self.hide(&d.to_string_lossy(), false),
                Op::Put(_) | Op::Refused(_) => {}
            }
        }
        for e in &layer.entries {
            if let Op::Put(_) = e.op {
                self.files.insert(e.path.clone(), e.info.clone());
            }
        }
    }

    /// Remove `path`'s descendants, and `path` itself when `itself`.
    fn hide(&mut self, path: &str, itself: bool) {
        if itself {
            self.files.remove(path);
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let doomed: BTreeSet<String> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.files.remove(&p);
        }
    }

    pub fn get(&self, path: &str) -> Option<&FileInfo> {
        self.files.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{E, tar_of};
    use super::*;
    use crate::oci::media::OCI_LAYER_TAR;

    fn layer(entries: &[E]) -> LayerRead {
        read_layer_from(
            &tar_of(entries)[..],
            OCI_LAYER_TAR,
            &mut Budget::lambda(),
            Strictness::Refuse,
        )
        .unwrap()
    }

    fn flatten(layers: &[&[E]]) -> Vec<String> {
        let mut view = View::new();
        for l in layers {
            view.apply(&layer(l));
        }
        view.files.into_keys().collect()
    }

    const BASE: &[E] = &[
        E::Dir("etc/", 0o755),
        E::File("etc/a", 0o644, "a"),
        E::File("etc/b", 0o644, "b"),
        E::Dir("opt/", 0o755),
        E::Dir("opt/x/", 0o755),
        E::File("opt/x/y", 0o644, "y"),
        E::File("optional", 0o644, "sibling with a common prefix"),
    ];

    #[test]
    fn whiteout_hides_a_lower_file_and_a_lower_directory() {
        let upper: &[E] = &[
            E::File("etc/.wh.a", 0o644, ""),
            E::File("opt/.wh.x", 0o644, ""),
        ];
        assert_eq!(flatten(&[BASE, upper]), ["etc", "etc/b", "opt", "optional"]);
    }

    #[test]
    fn opaque_whiteout_empties_the_lower_directory_only() {
        let upper: &[E] = &[E::File("opt/.wh..wh..opq", 0o644, "")];
        assert_eq!(
            flatten(&[BASE, upper]),
            ["etc", "etc/a", "etc/b", "opt", "optional"]
        );
    }

    #[test]
    fn an_entry_and_its_whiteout_in_one_layer_keep_the_entry_in_either_order() {
        let after: &[E] = &[
            E::File("etc/a", 0o600, "new"),
            E::File("etc/.wh.a", 0o644, ""),
        ];
        let before: &[E] = &[
            E::File("etc/.wh.a", 0o644, ""),
            E::File("etc/a", 0o600, "new"),
        ];
        for upper in [after, before] {
            let mut view = View::new();
            view.apply(&layer(BASE));
            view.apply(&layer(upper));
            assert_eq!(view.get("etc/a").unwrap().mode, 0o600);
        }
        // And with no lower file, the whiteout hides nothing of its own layer.
        assert_eq!(flatten(&[after]), ["etc/a"]);
    }

    #[test]
    fn opaque_whiteout_keeps_its_own_layers_entries_in_either_order() {
        for marker_first in [true, false] {
            let mut upper = vec![E::Dir("opt/x/", 0o755), E::File("opt/x/new", 0o644, "n")];
            let marker = E::File("opt/.wh..wh..opq", 0o644, "");
            if marker_first {
                upper.insert(0, marker);
            } else {
                upper.push(marker);
            }
            assert_eq!(
                flatten(&[BASE, &upper]),
                [
                    "etc",
                    "etc/a",
                    "etc/b",
                    "opt",
                    "opt/x",
                    "opt/x/new",
                    "optional"
                ],
                "marker first: {marker_first}"
            );
        }
    }

    #[test]
    fn absolute_paths_and_links_land_in_the_image() {
        let l: &[E] = &[
            E::File("/etc/abs", 0o644, "x"),
            E::Symlink("lib64", "/usr/lib64"),
            E::Hardlink("python", "/usr/bin/python3.11"),
        ];
        let read = layer(l);
        let files = read.files();
        assert_eq!(files["lib64"].link.as_deref(), Some("/usr/lib64"));
        assert_eq!(files["python"].link.as_deref(), Some("usr/bin/python3.11"));
        assert_eq!(flatten(&[l]), ["etc/abs", "lib64", "python"]);
    }

    #[test]
    fn dotdot_entries_are_refused_or_reported_never_applied() {
        let evil = tar_of(&[
            E::File("../escaped", 0o644, "x"),
            E::File(".wh..", 0o644, ""),
        ]);
        let strict = read_layer_from(
            &evil[..],
            OCI_LAYER_TAR,
            &mut Budget::lambda(),
            Strictness::Refuse,
        );
        assert!(format!("{:#}", strict.err().unwrap()).contains("../escaped"));
        let reported = read_layer_from(
            &evil[..],
            OCI_LAYER_TAR,
            &mut Budget::lambda(),
            Strictness::Report,
        )
        .unwrap();
        assert!(
            reported
                .entries
                .iter()
                .all(|e| matches!(e.op, Op::Refused(_)))
        );
        let mut view = View::new();
        view.apply(&layer(BASE));
        view.apply(&reported);
        assert_eq!(view.files.len(), 7, "nothing hidden, nothing added");
    }

    #[test]
    fn a_record_lists_image_paths_relative_to_its_site_directory() {
        let text = b"pkg/__init__.py,sha256=abc,12\n\"odd,name.py\",,\n../../bin/tool,,\npkg-1.0.dist-info/RECORD,,\n../../../../../../etc/x,,\n";
        assert_eq!(
            record_paths("var/task/pkg-1.0.dist-info/RECORD", text),
            [
                "var/task/pkg/__init__.py",
                "var/task/odd,name.py",
                "bin/tool",
                "var/task/pkg-1.0.dist-info/RECORD"
            ]
        );
        // Read while streaming, for RECORDs of the function's own directories only.
        let l = layer(&[
            E::File("var/task/pkg-1.0.dist-info/RECORD", 0o644, "pkg/a.py,,\n"),
            E::File("usr/lib/python3/x-1.dist-info/RECORD", 0o644, "x.py,,\n"),
        ]);
        let files = l.files();
        assert_eq!(
            files["var/task/pkg-1.0.dist-info/RECORD"].record.as_deref(),
            Some(&["var/task/pkg/a.py".to_string()][..])
        );
        assert_eq!(files["usr/lib/python3/x-1.dist-info/RECORD"].record, None);
    }

    #[test]
    fn elf_objects_of_the_function_are_parsed_while_streaming() {
        // A real object far larger than what is kept of it (this test binary), and an
        // aarch64 ELF header (no sections).
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(exe.len() > elf::HEAD + elf::TAIL);
        let mut arm = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        arm.extend_from_slice(&3u16.to_le_bytes());
        arm.extend_from_slice(&183u16.to_le_bytes());
        arm.extend_from_slice(&1u32.to_le_bytes());
        arm.extend_from_slice(&[0; 28]);
        for v in [64u16, 56, 0, 64, 0, 0] {
            arm.extend_from_slice(&v.to_le_bytes());
        }
        let l = layer(&[
            E::Bytes("var/task/tool", 0o755, &exe),
            E::Bytes("opt/lib/arm.so", 0o755, &arm),
            E::Bytes("usr/lib/arm.so", 0o755, &arm),
        ]);
        let files = l.files();
        let tool = files["var/task/tool"].elf.as_ref().expect("parsed");
        assert_eq!(
            Some(tool),
            elf::parse(elf::Kept {
                head: &exe,
                tail: &[],
                len: exe.len() as u64
            })
            .as_ref()
        );
        assert!(tool.glibc.is_some() && tool.loadable);
        assert_eq!(files["var/task/tool"].head, exe[..16]);
        assert_eq!(
            files["var/task/tool"].sha256.as_deref(),
            Some(crate::digest::of_bytes(&exe).as_str())
        );
        let own = files["opt/lib/arm.so"].elf.as_ref().expect("parsed");
        assert_eq!((own.machine, own.glibc, own.loadable), (183, None, true));
        assert_eq!(
            files["usr/lib/arm.so"].elf, None,
            "the base's files are not parsed"
        );
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
            crate::oci::media::OCI_LAYER_GZIP,
            &mut Budget::lambda(),
            Strictness::Refuse,
        )
        .unwrap();
        assert_eq!(read.summary.size, layer.uncompressed_size);
        assert_eq!(read.summary.diff_id, layer.diff_id);
        let files = read.files();
        let f = &files["var/task/app/x.py"];
        assert_eq!(f.kind, Kind::File);
        assert_eq!(
            f.sha256.as_deref(),
            Some(crate::digest::of_bytes(b"print(1)\n").as_str())
        );
        assert_eq!(files["var/task/app"].kind, Kind::Dir);
    }
}
