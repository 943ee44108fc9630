//! A sorted, normalised file tree: what goes into one layer (or one zip).
//!
//! Both the layer writer and the zip writer read a [`Tree`], so the rules that make output
//! independent of the build machine live here once: sorted paths, parent directories made
//! explicit, modes reduced to 0755/0644, and one rule for symlinks ([`Tree::check_links`]):
//! a link ships only when, followed through the tree's other links as the kernel would,
//! it reaches a file or directory of the tree without leaving it, looping or enclosing itself.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Links followed while resolving one path before giving up: Linux's own limit
/// (MAXSYMLINKS), so a chain the kernel would follow is followed here too.
pub const MAX_LINK_HOPS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File {
        source: PathBuf,
        size: u64,
        executable: bool,
    },
    /// A symlink, kept as written; [`Tree::check_links`] decides whether it can ship.
    Symlink {
        target: String,
    },
}

/// Paths are relative, `/`-separated, without trailing slashes; a BTreeMap keeps them in
/// byte order, which is the order entries are written in (filesystem order varies by machine).
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
    /// The tree path links may not climb above: "" for a tree as walked, the prefix
    /// after [`Tree::prefixed`] (a link in /var/task must not reach /var).
    root: String,
}

/// Why a symlink cannot ship, in a layer or a zip alike. Paths are tree paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// It leads above the tree's root, or to an absolute path (whose meaning depends on
    /// where the tree is unpacked).
    Escapes { link: String, target: String },
    /// It leads to nothing in the tree.
    Dangling { link: String, target: String },
    /// Following it never ends (`a -> b -> a`, `self -> self`).
    Loop { link: String, target: String },
    /// It leads to a directory that contains the link, directly or through other
    /// directory links: that directory would contain itself without end.
    Cycle { link: String, target: String },
    /// Its target is not UTF-8 (entry names must be identical on every machine).
    TargetNotUtf8 { link: PathBuf },
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Escapes { link, target } => write!(
                f,
                "symlink `{link}` points outside the package root (to `{target}`)"
            ),
            LinkError::Dangling { link, target } => write!(
                f,
                "symlink `{link}` points to `{target}`, which is not in the package"
            ),
            LinkError::Loop { link, target } => write!(
                f,
                "symlink `{link}` (to `{target}`) is part of a loop of links"
            ),
            LinkError::Cycle { link, target } => write!(
                f,
                "symlink `{link}` points to `{target}`, a directory that contains the link"
            ),
            LinkError::TargetNotUtf8 { link } => {
                write!(f, "the target of symlink `{}` is not UTF-8", link.display())
            }
        }
    }
}

impl std::error::Error for LinkError {}

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
    /// where it is unpacked at run time, e.g. /var/task). Symlinks are kept as links;
    /// whether they can ship is decided on the whole tree ([`Tree::check_links`]), since
    /// where a link leads depends on the other links it passes through.
    pub fn add_path(&mut self, source: &Path, dest: &str) -> Result<()> {
        let meta = std::fs::symlink_metadata(source)
            .with_context(|| format!("reading {}", source.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            self.add_dir(dest);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(source)
                .with_context(|| format!("reading link {}", source.display()))?;
            let target =
                target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| LinkError::TargetNotUtf8 {
                        link: source.to_path_buf(),
                    })?;
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

    /// Merge another tree in (later entries win on collisions; links keep this tree's root).
    pub fn extend(&mut self, other: Tree) {
        self.entries.extend(other.entries);
    }

    /// A copy of this tree with every path placed under `prefix`.
    pub fn prefixed(&self, prefix: &str) -> Tree {
        let mut out = Tree {
            root: join(prefix, &self.root),
            ..Tree::new()
        };
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
                    h.update(file_sha256(source)?);
                }
            }
            h.update(b"\n");
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Where the symlink at tree path `link` leads, as a tree path ("" for the root),
    /// following the tree's links component by component as the kernel would at run
    /// time: `d/..` through a link `d -> .` is the parent of `d`'s directory, not `d`'s.
    pub fn resolve(&self, link: &str) -> Result<String, LinkError> {
        let target = match self.entries.get(link) {
            Some(Node::Symlink { target }) => target.as_str(),
            _ => "",
        };
        let fail = |kind: fn(String, String) -> LinkError| Err(kind(link.into(), target.into()));
        let floor = self.root.split('/').filter(|p| !p.is_empty()).count();
        let mut done: Vec<&str> = Vec::new();
        // A stack: the next component to resolve is at the end.
        let mut todo: Vec<&str> = link.split('/').rev().collect();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            match part {
                "" | "." => {}
                ".." if done.len() <= floor => {
                    return fail(|link, target| LinkError::Escapes { link, target });
                }
                ".." => {
                    done.pop();
                }
                name => {
                    done.push(name);
                    match self.entries.get(&done.join("/")) {
                        Some(Node::Symlink { target: next }) => {
                            hops += 1;
                            if hops > MAX_LINK_HOPS {
                                return fail(|link, target| LinkError::Loop { link, target });
                            }
                            if next.starts_with('/') {
                                return fail(|link, target| LinkError::Escapes { link, target });
                            }
                            done.pop();
                            todo.extend(next.split('/').rev());
                        }
                        Some(Node::Dir) => {}
                        // A file ends the path; `file/x` or `file/..` names nothing.
                        Some(Node::File { .. }) if todo.iter().all(|p| matches!(*p, "" | ".")) => {}
                        _ => return fail(|link, target| LinkError::Dangling { link, target }),
                    }
                }
            }
        }
        Ok(done.join("/"))
    }

    /// The one rule for links, shared by the layer and zip writers: every link resolves
    /// ([`Tree::resolve`]) to a file or directory inside the tree, and no directory link
    /// leads, directly or through other directory links, to a directory containing it
    /// (a zip stores such a link as a copy that would never end; in an image, walkers
    /// such as `compileall` or `find -L` would loop).
    pub fn check_links(&self) -> Result<(), LinkError> {
        // (link, what it resolves to) for links to directories, the root included.
        let mut dir_links: Vec<(&str, String)> = Vec::new();
        for (path, node) in &self.entries {
            if let Node::Symlink { .. } = node {
                let resolved = self.resolve(path)?;
                if resolved.is_empty() || matches!(self.entries.get(&resolved), Some(Node::Dir)) {
                    dir_links.push((path, resolved));
                }
            }
        }
        let inside = |path: &str, dir: &str| dir.is_empty() || path.starts_with(&format!("{dir}/"));
        // Expanding link i copies its directory, which expands every directory link in it:
        // an edge i -> j. A cycle in these edges is a directory that contains itself.
        let edges: Vec<Vec<usize>> = dir_links
            .iter()
            .map(|(_, dir)| {
                (0..dir_links.len())
                    .filter(|&j| inside(dir_links[j].0, dir))
                    .collect()
            })
            .collect();
        let mut state = vec![0u8; dir_links.len()]; // 0 new, 1 on the path, 2 done
        for start in 0..dir_links.len() {
            if let Some(i) = find_cycle(start, &edges, &mut state) {
                let (link, _) = dir_links[i];
                let target = match self.entries.get(link) {
                    Some(Node::Symlink { target }) => target.clone(),
                    _ => String::new(),
                };
                return Err(LinkError::Cycle {
                    link: link.to_string(),
                    target,
                });
            }
        }
        Ok(())
    }
}

/// Depth-first search from `node`: a node of a cycle, if one is reachable.
fn find_cycle(node: usize, edges: &[Vec<usize>], state: &mut [u8]) -> Option<usize> {
    match state[node] {
        1 => return Some(node),
        2 => return None,
        _ => {}
    }
    state[node] = 1;
    for &next in &edges[node] {
        if let Some(found) = find_cycle(next, edges, state) {
            return Some(found);
        }
    }
    state[node] = 2;
    None
}

/// SHA-256 of a file's content, read in fixed-size chunks: app files can be larger than
/// memory, and hashing must not hold them whole.
fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of `files` and `links` (path, target) made on disk and walked.
    fn tree_of(files: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        for (link, target) in links {
            let path = dir.path().join(link);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }
        let mut tree = Tree::new();
        tree.add_dir_all(dir.path(), "").unwrap();
        (dir, tree)
    }

    fn kind(tree: &Tree) -> Option<&'static str> {
        tree.check_links().err().map(|e| match e {
            LinkError::Escapes { .. } => "escapes",
            LinkError::Dangling { .. } => "dangling",
            LinkError::Loop { .. } => "loop",
            LinkError::Cycle { .. } => "cycle",
            LinkError::TargetNotUtf8 { .. } => "utf8",
        })
    }

    #[test]
    fn links_resolve_through_other_links_as_the_kernel_does() {
        let files = ["app/a.py", "app/sub/b.py", "lib/c.py"];
        let ok = [
            ("app/alias.py", "a.py"),
            ("app/up", "../lib"),
            ("app/chain.py", "up/c.py"),
            ("app/s", "sub"),
        ];
        let (_d, tree) = tree_of(&files, &ok);
        assert_eq!(kind(&tree), None);
        assert_eq!(tree.resolve("app/chain.py").unwrap(), "lib/c.py");
        assert_eq!(tree.resolve("app/s").unwrap(), "app/sub");
        assert_eq!(tree.prefixed("var/task").check_links(), Ok(()));
        assert_eq!(
            tree.prefixed("var/task").resolve("var/task/app/chain.py"),
            Ok("var/task/lib/c.py".into())
        );
        for (links, expected) in [
            // `d/..` is app's parent through `d -> .`: `t` leaves the root.
            (&[("app/d", "."), ("app/t", "d/../..")][..], "escapes"),
            (&[("app/t", "../../x")][..], "escapes"),
            (&[("pw", "/etc/passwd")][..], "escapes"),
            (&[("app/a", "b"), ("app/b", "a")][..], "loop"),
            (&[("app/self", "self")][..], "loop"),
            (&[("app/gone.py", "nope.py")][..], "dangling"),
            (&[("app/x", "a.py/..")][..], "dangling"),
            (&[("app/d", ".")][..], "cycle"),
            (&[("app/sub/up", "..")][..], "cycle"),
            (&[("top", ".")][..], "cycle"),
            // Neither contains itself, but each copies the other without end.
            (
                &[("app/sub/l", "../../lib"), ("lib/m", "../app")][..],
                "cycle",
            ),
        ] {
            let (_d, tree) = tree_of(&files, links);
            assert_eq!(kind(&tree), Some(expected), "{links:?}");
        }
        // Inside a prefixed tree, the prefix is the root: /var/task/.. is outside.
        let (_d, tree) = tree_of(&files, &[("app/t", "../..")]);
        assert_eq!(kind(&tree.prefixed("var/task")), Some("escapes"));
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
    fn content_key_follows_contents_and_modes() {
        let (d, tree) = tree_of(&["app/a.py"], &[]);
        let before = tree.content_key().unwrap();
        assert_eq!(before, tree.clone().content_key().unwrap());
        std::fs::write(d.path().join("app/a.py"), b"y").unwrap();
        assert_ne!(tree.content_key().unwrap(), before);
    }
}
