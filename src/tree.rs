//! A sorted, normalised file tree: what goes into one layer (or one zip).
//!
//! Both the layer writer and the zip writer read a [`Tree`], so the rules that make output
//! independent of the build machine live here once: sorted paths, parent directories made
//! explicit, modes reduced to 0755/0644, symlinks kept only when they stay inside the root.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File {
        source: PathBuf,
        size: u64,
        executable: bool,
        /// (device, inode) when the file has other hard links, so writers can link duplicates.
        inode: Option<(u64, u64)>,
    },
    /// A symlink whose target resolves inside the tree (checked on insertion).
    Symlink {
        target: String,
    },
}

/// Paths are relative, `/`-separated, without trailing slashes; a BTreeMap keeps them in
/// byte order, which is the order entries are written in (filesystem order varies by machine).
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.entries.iter()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn file_count(&self) -> u64 {
        self.entries
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count() as u64
    }

    /// Sum of file sizes (what the tree takes unpacked).
    pub fn content_size(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// Add a directory and all its parents.
    pub fn add_dir(&mut self, path: &str) {
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !current.is_empty() {
                current.push('/');
            }
            current.push_str(part);
            self.entries.entry(current.clone()).or_insert(Node::Dir);
        }
    }

    fn add_parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_dir(parent);
        }
    }

    /// Add one filesystem object at `dest` (relative path inside the tree, whose root is
    /// where it is unpacked at run time, e.g. /var/task). Symlinks are kept as links only
    /// when they resolve inside that root; anything else is refused, because a link that
    /// leaves the task root points at whatever the runtime happens to have there.
    pub fn add_path(&mut self, source: &Path, dest: &str) -> Result<()> {
        let meta = std::fs::symlink_metadata(source)
            .with_context(|| format!("reading {}", source.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            self.add_dir(dest);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(source)
                .with_context(|| format!("reading link {}", source.display()))?;
            let target = target.to_string_lossy().into_owned();
            if !link_stays_inside(dest, &target) {
                bail!(crate::error::hint(
                    format!(
                        "symlink `{}` points outside the project tree (to `{target}`)",
                        source.display()
                    ),
                    "replace the link with a copy of its target, or exclude it with `exclude` in [tool.ocilambda]"
                ));
            }
            self.add_parents(dest);
            self.entries
                .insert(dest.to_string(), Node::Symlink { target });
        } else if ft.is_file() {
            use std::os::unix::fs::MetadataExt;
            self.add_parents(dest);
            self.entries.insert(
                dest.to_string(),
                Node::File {
                    source: source.to_path_buf(),
                    size: meta.len(),
                    executable: meta.mode() & 0o111 != 0,
                    inode: (meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
                },
            );
        } else {
            bail!(
                "`{}` is neither a file, a directory nor a symlink (sockets and devices cannot go into a Lambda package)",
                source.display()
            );
        }
        Ok(())
    }

    /// Add everything below `root` under the tree path `prefix` ("" for the top).
    pub fn add_dir_all(&mut self, root: &Path, prefix: &str) -> Result<()> {
        if !prefix.is_empty() {
            self.add_dir(prefix);
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .min_depth(1)
            .into_iter();
        for entry in walker {
            let entry = entry.with_context(|| format!("walking {}", root.display()))?;
            let rel = relative_slash_path(entry.path().strip_prefix(root)?)?;
            let dest = join(prefix, &rel);
            self.add_path(entry.path(), &dest)?;
        }
        Ok(())
    }

    /// Merge another tree in (later entries win on collisions).
    pub fn extend(&mut self, other: Tree) {
        self.entries.extend(other.entries);
    }

    /// A copy of this tree with every path placed under `prefix`.
    pub fn prefixed(&self, prefix: &str) -> Tree {
        let mut out = Tree::new();
        out.add_dir(prefix);
        for (path, node) in &self.entries {
            out.entries.insert(join(prefix, path), node.clone());
        }
        out
    }
}

pub fn join(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}/{rel}"),
    }
}

/// A relative path as a `/`-separated UTF-8 string; refuses `..` and non-UTF-8 names
/// (entry names must be identical on every machine).
pub fn relative_slash_path(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .with_context(|| format!("file name `{}` is not UTF-8", path.display()))?,
            ),
            Component::CurDir => {}
            _ => bail!("path `{}` is not a plain relative path", path.display()),
        }
    }
    Ok(parts.join("/"))
}

/// Where a symlink at tree path `link` with `target` points, as a tree path; None when
/// it leaves the tree (climbs above the root, or is absolute: where an absolute target
/// lands depends on where the tree is unpacked, so it counts as leaving).
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl Tree {
    /// A digest of everything a writer takes from this tree (paths, kinds, the execute
    /// bit, contents, link targets): equal keys give equal layers and zips.
    pub fn content_key(&self) -> Result<String> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (path, node) in &self.entries {
            h.update(path.as_bytes());
            match node {
                Node::Dir => h.update(b"\0d\0"),
                Node::Symlink { target } => {
                    h.update(b"\0l\0");
                    h.update(target.as_bytes());
                }
                Node::File {
                    source, executable, ..
                } => {
                    h.update(if *executable { b"\0x\0" } else { b"\0f\0" });
                    let content = std::fs::read(source)
                        .with_context(|| format!("reading {}", source.display()))?;
                    h.update(sha2::Sha256::digest(&content));
                }
            }
            h.update(b"\n");
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The first symlink whose target is not in this tree: shipped as is, it would dangle
    /// at run time (the zip writer refuses the same links when it follows them).
    pub fn dangling_link(&self) -> Option<(&str, &str)> {
        self.entries.iter().find_map(|(path, node)| match node {
            Node::Symlink { target } => {
                let resolved = resolve_link(path, target)?;
                (!self.entries.contains_key(&resolved)).then_some((path.as_str(), target.as_str()))
            }
            _ => None,
        })
    }
}

/// Does a symlink at tree path `link` with `target` resolve inside the tree?
fn link_stays_inside(link: &str, target: &str) -> bool {
    resolve_link(link, target).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_escape_rules() {
        assert!(link_stays_inside("a/b/link", "../c"));
        assert!(link_stays_inside("a/link", "b/c"));
        assert!(!link_stays_inside("a/link", "../../etc/passwd"));
        assert!(!link_stays_inside("link", "/etc/passwd"));
    }

    #[test]
    fn walk_is_sorted_with_parents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
        std::fs::write(root.join("pkg/sub/z.py"), b"z").unwrap();
        std::fs::write(root.join("pkg/a.py"), b"a").unwrap();
        std::os::unix::fs::symlink("a.py", root.join("pkg/alias.py")).unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(root, "var/task").unwrap();
        let paths: Vec<&str> = tree.entries().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "var",
                "var/task",
                "var/task/pkg",
                "var/task/pkg/a.py",
                "var/task/pkg/alias.py",
                "var/task/pkg/sub",
                "var/task/pkg/sub/z.py"
            ]
        );
        assert_eq!(tree.file_count(), 2);
        assert_eq!(tree.content_size(), 2);
    }

    #[test]
    fn dangling_links_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/a.py"), b"").unwrap();
        std::os::unix::fs::symlink("a.py", dir.path().join("app/ok.py")).unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(dir.path(), "").unwrap();
        assert_eq!(tree.dangling_link(), None);
        assert_eq!(tree.prefixed("var/task").dangling_link(), None);
        std::os::unix::fs::symlink("../shared/y.py", dir.path().join("app/bad.py")).unwrap();
        let mut tree = Tree::new();
        tree.add_dir_all(dir.path(), "").unwrap();
        assert_eq!(tree.dangling_link(), Some(("app/bad.py", "../shared/y.py")));
    }

    #[test]
    fn escaping_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("pw")).unwrap();
        let err = Tree::new().add_dir_all(dir.path(), "").unwrap_err();
        assert!(err.to_string().contains("points outside"), "{err}");
    }
}
