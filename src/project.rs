//! The uv project on disk: pyproject.toml, uv.lock, workspace members, the handler and
//! the app sources that go into the app layer. Reads only; never runs uv.

use crate::config::{Settings, tool_settings};
use crate::target::{DEFAULT_PYTHON, LAMBDA_PYTHONS, PyVersion};
use crate::tree::Tree;
use anyhow::{Context, Result, bail};
use pep440_rs::{Operator, Version, VersionSpecifiers};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Directories never worth walking for app sources.
const PRUNED_DIRS: &[&str] = &[".git", ".venv", ".ocilambda", "__pycache__", "node_modules"];

/// Directories left out of the app layer unless an `include` glob selects them (or a
/// parent): development-only.
const SKIPPED_UNLESS_INCLUDED: &[&str] = &["tests"];

/// Directory levels below the task root an app source may sit at. Far deeper than any
/// real package, and far from where tools break: Python's bytecode compiler creates
/// `__pycache__` directories with `os.makedirs`, one stack frame per level, and fails
/// with a RecursionError near 1,000.
pub const MAX_APP_DEPTH: usize = 256;

/// Longest path (bytes) of an app source below the task root: `/var/task/` plus the path
/// plus the `__pycache__/NAME.cpython-3XX.pyc` of a module must fit in Linux's PATH_MAX
/// (4,096 bytes), or the runtime cannot open it.
pub const MAX_APP_PATH: usize = 3_800;

/// Why an app source cannot ship; the command layer words the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSourceError {
    /// A file or directory name that is not UTF-8: tar and zip entry names must be
    /// identical on every machine.
    NotUtf8(PathBuf),
    /// A directory deeper than [`MAX_APP_DEPTH`] levels below the task root.
    TooDeep(PathBuf),
    /// A path longer than [`MAX_APP_PATH`] bytes below the task root.
    TooLong { path: PathBuf, bytes: usize },
}

impl std::fmt::Display for AppSourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppSourceError::NotUtf8(p) => write!(
                f,
                "file name `{}` is not UTF-8, so it cannot be an entry name in the package",
                p.display()
            ),
            AppSourceError::TooDeep(path) => write!(
                f,
                "`{}` is more than {MAX_APP_DEPTH} directories deep below the task root",
                shortened(path)
            ),
            AppSourceError::TooLong { path, bytes } => write!(
                f,
                "the path `{}` is {bytes} bytes long below the task root (at most {MAX_APP_PATH} can ship)",
                shortened(path)
            ),
        }
    }
}

impl std::error::Error for AppSourceError {}

/// Why a project cannot be built as configured; the command layer words the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectError {
    NoPyproject(PathBuf),
    NoLock(PathBuf),
    /// `--package`/`package` names no project of the workspace; `members` are those it has.
    NotAMember {
        name: String,
        root: PathBuf,
        members: Vec<String>,
    },
    /// The target version is outside the project's requires-python.
    PythonUnsatisfied {
        version: PyVersion,
        requires: String,
    },
    /// The handler's top-level package is neither in the project nor in its src/.
    HandlerNotFound {
        module: String,
        top: String,
        dir: PathBuf,
    },
    /// The handler's module is not among the app files (excluded, or not there).
    HandlerNotShipped {
        module: String,
        file: String,
        root: PathBuf,
    },
    /// A handler that is not MODULE.FUNCTION.
    BadHandler(String),
}

impl std::fmt::Display for ProjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectError::NoPyproject(dir) => write!(f, "no pyproject.toml in {}", dir.display()),
            ProjectError::NoLock(root) => write!(f, "no uv.lock in {}", root.display()),
            ProjectError::NotAMember { name, root, .. } => write!(
                f,
                "`{name}` is not a member of the workspace at {}",
                root.display()
            ),
            ProjectError::PythonUnsatisfied { version, requires } => write!(
                f,
                "target Python {version} does not satisfy the project's requires-python `{requires}`"
            ),
            ProjectError::HandlerNotFound { module, top, dir } => write!(
                f,
                "handler module `{module}` not found: no `{top}/` or `{top}.py` in {} or its src/",
                dir.display()
            ),
            ProjectError::HandlerNotShipped { module, file, root } => write!(
                f,
                "handler module `{module}` is not in the app sources (no {file} under {})",
                root.display()
            ),
            ProjectError::BadHandler(s) => {
                write!(f, "handler `{s}` is not of the form MODULE.FUNCTION")
            }
        }
    }
}

impl std::error::Error for ProjectError {}

/// A path of up to 4 KiB cut to its first and last 60 bytes, so the error stays one line.
fn shortened(path: &Path) -> String {
    let chars: Vec<char> = path.to_string_lossy().chars().collect();
    if chars.len() <= 160 {
        return chars.into_iter().collect();
    }
    let head: String = chars[..60].iter().collect();
    let tail: String = chars[chars.len() - 60..].iter().collect();
    format!("{head}…{tail}")
}

/// The app sources as a tree relative to the task root, and what include globs brought
/// in beyond the handler's package that looks unintended (see [`AppSources::unintended`]),
/// for the command layer to warn about.
#[derive(Debug)]
pub struct AppTree {
    pub tree: Tree,
    pub unintended: Vec<String>,
}

/// A local package the project depends on: a workspace member or another local
/// directory, or a wheel/sdist file (then `dir` is that file).
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct Project {
    /// The workspace root: where uv.lock lives and uv runs.
    pub root: PathBuf,
    /// The project whose Lambda is built: the root, or the member named by `--package`.
    pub dir: PathBuf,
    pub name: String,
    /// `[project] version`, when static.
    pub version: Option<String>,
    /// `--package`, when building a workspace member.
    pub package: Option<String>,
    pub requires_python: Option<String>,
    /// Settings from `[tool.ocilambda]` (the root's, overlaid by the member's).
    pub settings: Settings,
    pub lock: Vec<u8>,
    /// Local packages other than the built project (workspace members, local
    /// directories and files): installed as wheels, in their own layer.
    pub members: Vec<Member>,
}

fn read_pyproject(dir: &Path) -> Result<(PathBuf, toml::Table)> {
    let path = dir.join("pyproject.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(ProjectError::NoPyproject(dir.to_path_buf()))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok((path, table))
}

/// Local packages from uv.lock: (name, path relative to the root). uv records a local
/// project's location as its `source` (`virtual`, `editable` or `directory`), and a local
/// wheel or sdist file as a `path` source. `uv export` emits them all as local paths,
/// which staging installs with the workspace members: leaving `path` out here would drop
/// such a dependency from the package without a word.
fn lock_local_packages(lock: &toml::Table) -> Vec<(String, String)> {
    let Some(packages) = lock.get("package").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    packages
        .iter()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let source = p.get("source")?.as_table()?;
            let path = ["virtual", "editable", "directory", "path"]
                .iter()
                .find_map(|k| source.get(*k)?.as_str())?;
            Some((normalize_name(name), path.to_string()))
        })
        .collect()
}

/// Every package `root` depends on in uv.lock, transitively, counting optional and
/// dependency-group edges too (an over-approximation: the export decides what is
/// installed; this only decides what keys the workspace layer's cache).
fn reachable_from(lock: &toml::Table, root: &str) -> std::collections::HashSet<String> {
    let mut edges: std::collections::HashMap<String, Vec<String>> = Default::default();
    for p in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let Some(name) = p.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        let mut deps = Vec::new();
        let mut collect = |list: Option<&toml::Value>| {
            for d in list.and_then(|l| l.as_array()).into_iter().flatten() {
                if let Some(n) = d.get("name").and_then(|n| n.as_str()) {
                    deps.push(normalize_name(n));
                }
            }
        };
        collect(p.get("dependencies"));
        for key in ["optional-dependencies", "dev-dependencies"] {
            if let Some(groups) = p.get(key).and_then(|g| g.as_table()) {
                for list in groups.values() {
                    collect(Some(list));
                }
            }
        }
        edges.entry(normalize_name(name)).or_default().extend(deps);
    }
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(n) = stack.pop() {
        for d in edges.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

/// PEP 503 normalisation, so `My_Lib` and `my-lib` name the same package.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if matches!(c, '_' | '.') { '-' } else { c };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

impl Project {
    /// `package`: the member to build as given by a flag or the environment; without one,
    /// the root's `package` setting, else the root itself.
    pub fn load(dir: &Path, package: Option<&str>) -> Result<Project> {
        let root =
            std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let (root_path, root_table) = read_pyproject(&root)?;
        let lock_path = root.join("uv.lock");
        let lock = match std::fs::read(&lock_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(ProjectError::NoLock(root.clone()))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", lock_path.display())),
        };
        let lock_table: toml::Table =
            toml::from_str(std::str::from_utf8(&lock).context("uv.lock is not UTF-8")?)
                .with_context(|| format!("parsing {}", lock_path.display()))?;
        let locals = lock_local_packages(&lock_table);

        let mut settings = tool_settings(&root_table, &root_path)?;
        let package = package.map(str::to_string).or(settings.package.clone());
        let (dir, table) = match package.as_deref() {
            None => (root.clone(), root_table),
            Some(name) => {
                let wanted = normalize_name(name);
                // Only projects (directories) can be built as a Lambda, not wheel files.
                let projects: Vec<&(String, String)> = locals
                    .iter()
                    .filter(|(_, rel)| root.join(rel).is_dir())
                    .collect();
                let Some((_, rel)) = projects.iter().find(|(n, _)| *n == wanted) else {
                    bail!(ProjectError::NotAMember {
                        name: name.to_string(),
                        root: root.clone(),
                        members: projects.iter().map(|(n, _)| n.clone()).collect(),
                    });
                };
                let dir = root.join(rel);
                let (path, table) = read_pyproject(&dir)?;
                settings = settings.overlaid_with(tool_settings(&table, &path)?);
                (dir, table)
            }
        };
        let project = table.get("project").and_then(|p| p.as_table());
        let name = project
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .map(normalize_name)
            .with_context(|| format!("{}/pyproject.toml has no [project] name", dir.display()))?;
        let version = project
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let requires_python = project
            .and_then(|p| p.get("requires-python"))
            .and_then(|r| r.as_str())
            .map(str::to_string);
        // Only the local packages the built project depends on (through the lock's graph):
        // with --package, the workspace root and sibling Lambdas are not part of it.
        let needed = reachable_from(&lock_table, &name);
        let members = locals
            .into_iter()
            .filter(|(n, _)| *n != name && needed.contains(n))
            .map(|(name, rel)| Member {
                name,
                dir: root.join(rel),
            })
            .collect();
        Ok(Project {
            root,
            dir,
            name,
            version,
            package,
            requires_python,
            settings,
            lock,
            members,
        })
    }

    fn specifiers(&self) -> Result<Option<VersionSpecifiers>> {
        self.requires_python
            .as_deref()
            .map(|r| {
                VersionSpecifiers::from_str(r)
                    .with_context(|| format!("parsing requires-python `{r}`"))
            })
            .transpose()
    }

    /// `--python-version` > the version in a `.../lambda/python:X.Y` base tag > the lower
    /// bound of requires-python when it is a Lambda version > 3.13; it must satisfy
    /// requires-python.
    pub fn target_python(
        &self,
        explicit: Option<PyVersion>,
        base: Option<&str>,
    ) -> Result<PyVersion> {
        let specifiers = self.specifiers()?;
        let version = if let Some(v) = explicit {
            v
        } else if let Some(v) = base.and_then(version_from_base_tag) {
            v
        } else if let Some(v) = specifiers.as_ref().and_then(lower_bound) {
            v
        } else {
            DEFAULT_PYTHON
        };
        if let Some(spec) = &specifiers
            && !(0..=30).any(|patch| {
                spec.contains(&Version::new([version.0 as u64, version.1 as u64, patch]))
            })
        {
            bail!(ProjectError::PythonUnsatisfied {
                version,
                requires: self.requires_python.clone().unwrap_or_default(),
            });
        }
        Ok(version)
    }

    /// The rule that picks the app sources for `handler` (see [`AppSources`]).
    pub fn app_sources(
        &self,
        handler: &Handler,
        include: &[String],
        exclude: &[String],
    ) -> Result<AppSources> {
        let top = handler.top_level();
        let root = [self.dir.clone(), self.dir.join("src")]
            .into_iter()
            .find(|d| d.join(top).is_dir() || d.join(format!("{top}.py")).is_file())
            .ok_or_else(|| ProjectError::HandlerNotFound {
                module: handler.module.clone(),
                top: top.to_string(),
                dir: self.dir.clone(),
            })?;
        let default_prefix = if root.join(top).is_dir() {
            format!("{top}/")
        } else {
            format!("{top}.py")
        };
        // Globs that name `.env` files themselves (`app/.env.defaults`, `**/.env*`): the
        // only ones that may ship them.
        let env_globs: Vec<String> = include
            .iter()
            .filter(|g| {
                let last = g
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                last.starts_with(".env")
            })
            .cloned()
            .collect();
        Ok(AppSources {
            default_prefix,
            include: globs(include, "include")?,
            include_env: globs(&env_globs, "include")?,
            include_literal: include
                .iter()
                .filter(|g| !g.contains(['*', '?', '[', '{']))
                .map(|g| g.trim_start_matches("./").trim_end_matches('/').to_string())
                .collect(),
            exclude: globs(exclude, "exclude")?,
            walk_all: !include.is_empty(),
            root,
        })
    }

    /// The app sources for `handler` as a tree relative to the task root.
    pub fn app_tree(
        &self,
        handler: &Handler,
        include: &[String],
        exclude: &[String],
    ) -> Result<AppTree> {
        let sources = self.app_sources(handler, include, exclude)?;
        let app_root = &sources.root;
        let mut tree = Tree::new();
        let mut unintended = std::collections::BTreeSet::new();
        for (path, rel) in sources.walk()? {
            tree.add_path(&path, &rel)?;
            unintended.extend(sources.unintended(&rel));
        }
        // Checked here, before any uv work, with the rule the layer and zip writers apply.
        tree.check_links()?;
        let module_rel = handler.module.replace('.', "/");
        let found = [
            format!("{module_rel}.py"),
            format!("{module_rel}/__init__.py"),
        ]
        .iter()
        .any(|p| tree.get(p).is_some());
        if !found {
            bail!(ProjectError::HandlerNotShipped {
                module: handler.module.clone(),
                file: format!("{module_rel}.py"),
                root: app_root.to_path_buf(),
            });
        }
        Ok(AppTree {
            tree,
            unintended: unintended.into_iter().collect(),
        })
    }
}

/// Which files are app sources: the handler's top-level package or module under the app
/// root (the project or its `src/`), plus `include`, minus `exclude` and the files that
/// stay out unless a glob names them. One rule for walking the sources and for keeping
/// outputs out of them.
#[derive(Debug, Clone)]
pub struct AppSources {
    /// The directory holding the handler's package.
    pub root: PathBuf,
    default_prefix: String,
    include: globset::GlobSet,
    /// The include globs that may ship `.env` files (see [`is_secret`]).
    include_env: globset::GlobSet,
    /// Include globs without wildcards: what the user named file by file.
    include_literal: std::collections::HashSet<String>,
    exclude: globset::GlobSet,
    walk_all: bool,
}

impl AppSources {
    /// Whether the file at `rel` (slash-separated, relative to [`Self::root`]) is shipped.
    /// Raw bytes, which need not be UTF-8: globs match bytes, so `exclude` can drop a file
    /// whose name is not UTF-8.
    fn selects_bytes(&self, rel: &[u8]) -> bool {
        let explicit = matches_self_or_parent(&self.include, rel);
        let default = rel.starts_with(self.default_prefix.as_bytes());
        if !(explicit || default) || rel.ends_with(b".pyc") || self.excludes(rel) {
            return false;
        }
        let parts: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        if parts[..parts.len() - 1]
            .iter()
            .any(|d| is_pruned(os_str(d)))
        {
            return false;
        }
        if parts.iter().any(|p| is_secret(p)) {
            // A broad glob (`*`, `app`, `app/*`) never ships secrets, only a glob that
            // names them does.
            return matches_self_or_parent(&self.include_env, rel);
        }
        explicit
            || !parts.iter().any(|part| {
                SKIPPED_UNLESS_INCLUDED
                    .iter()
                    .any(|s| s.as_bytes() == *part)
            })
    }

    fn excludes(&self, rel: &[u8]) -> bool {
        matches_self_or_parent(&self.exclude, rel)
    }

    /// For a selected file at `rel`: what makes it look brought in by accident, when an
    /// include glob selected it beyond the handler's package without naming it (project
    /// metadata, dotfiles, tests); the path up to the first such component.
    pub fn unintended(&self, rel: &str) -> Option<String> {
        if rel.starts_with(&self.default_prefix) || self.include_literal.contains(rel) {
            return None;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let last = parts.len() - 1;
        parts.iter().enumerate().find_map(|(i, part)| {
            let suspicious = part.starts_with('.')
                || SKIPPED_UNLESS_INCLUDED.contains(part)
                || (i == last && matches!(*part, "pyproject.toml" | "uv.lock"));
            let shown = parts[..=i].join("/");
            suspicious.then(|| {
                if i == last {
                    shown
                } else {
                    format!("{shown}/")
                }
            })
        })
    }

    /// The selected files below [`Self::root`]: (path on disk, path relative to the root).
    /// Excluded directories are not entered; what remains must have a UTF-8 name and fit
    /// the depth and length limits, else the walk stops with an [`AppSourceError`].
    fn walk(&self) -> Result<Vec<(PathBuf, String)>> {
        use std::os::unix::ffi::OsStrExt;
        // Walk only the handler's package unless globs ask for more.
        let walk_root = if self.walk_all {
            self.root.clone()
        } else {
            self.root.join(self.default_prefix.trim_end_matches('/'))
        };
        let mut found = Vec::new();
        let mut walker = walkdir::WalkDir::new(&walk_root)
            .follow_links(false)
            .into_iter();
        while let Some(entry) = walker.next() {
            let entry = entry.with_context(|| format!("walking {}", walk_root.display()))?;
            let rel_path = entry.path().strip_prefix(&self.root)?;
            let rel = rel_path.as_os_str().as_bytes();
            if entry.file_type().is_dir() {
                if !rel.is_empty() && (is_pruned(entry.file_name()) || self.excludes(rel)) {
                    walker.skip_current_dir();
                } else {
                    // Checked on directories, so a deep chain stops the walk early.
                    check_limits(rel_path)?;
                }
                continue;
            }
            if !self.selects_bytes(rel) {
                continue;
            }
            check_limits(rel_path)?;
            let rel = rel_path
                .to_str()
                .ok_or_else(|| AppSourceError::NotUtf8(entry.path().to_path_buf()))?;
            found.push((entry.path().to_path_buf(), rel.to_string()));
        }
        Ok(found)
    }

    /// Whether a file at `path` (existing or not) would be shipped as an app source: an
    /// output written there would end up in the next build.
    pub fn would_ship(&self, path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let (Some(path), Ok(root)) = (resolve_lexically(path), self.root.canonicalize()) else {
            return false;
        };
        path.strip_prefix(&root)
            .is_ok_and(|rel| self.selects_bytes(rel.as_os_str().as_bytes()))
    }
}

/// `.env` and `.env.*` (`.env.production`): where secrets live by convention.
fn is_secret(name: &[u8]) -> bool {
    name == b".env" || name.starts_with(b".env.")
}

fn os_str(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

/// Refuse a path (relative to the task root) deeper or longer than can ship.
fn check_limits(rel: &Path) -> Result<(), AppSourceError> {
    let depth = rel.components().count();
    if depth > MAX_APP_DEPTH {
        return Err(AppSourceError::TooDeep(rel.to_path_buf()));
    }
    let bytes = rel.as_os_str().len();
    if bytes > MAX_APP_PATH {
        return Err(AppSourceError::TooLong {
            path: rel.to_path_buf(),
            bytes,
        });
    }
    Ok(())
}

fn is_pruned(name: &std::ffi::OsStr) -> bool {
    PRUNED_DIRS.iter().any(|d| name == std::ffi::OsStr::new(d))
}

/// `path` made absolute, with its deepest existing ancestor canonicalised (symlinks and
/// `..` resolved) and the rest appended: where a file written there would land.
fn resolve_lexically(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut cur = std::path::absolute(path).ok()?;
    loop {
        if let Ok(real) = cur.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p, c| p.join(c)));
        }
        rest.push(cur.file_name()?.to_os_string());
        cur = cur.parent()?.to_path_buf();
    }
}

fn globs(patterns: &[String], what: &str) -> Result<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p.trim_end_matches('/'))
            .literal_separator(true)
            .build()
            .with_context(|| format!("invalid {what} glob `{p}`"))?;
        builder.add(glob);
    }
    Ok(builder.build()?)
}

/// A glob naming a directory selects everything below it. Matched on bytes (globset
/// matches a path's raw bytes on Unix), so names that are not UTF-8 can be matched too.
fn matches_self_or_parent(set: &globset::GlobSet, rel: &[u8]) -> bool {
    if set.is_empty() {
        return false;
    }
    let mut path = rel;
    loop {
        if set.is_match(Path::new(os_str(path))) {
            return true;
        }
        match path.iter().rposition(|b| *b == b'/') {
            Some(slash) => path = &path[..slash],
            None => return false,
        }
    }
}

pub fn version_from_base_tag(base: &str) -> Option<PyVersion> {
    let base = base.split('@').next()?;
    let (name, tag) = base.rsplit_once(':')?;
    if !name.ends_with("lambda/python") {
        return None;
    }
    let mut parts = tag.split(['.', '-']);
    let v = PyVersion(parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    LAMBDA_PYTHONS.contains(&(v.0, v.1)).then_some(v)
}

fn lower_bound(spec: &VersionSpecifiers) -> Option<PyVersion> {
    spec.iter()
        .filter(|s| {
            matches!(
                s.operator(),
                Operator::GreaterThanEqual
                    | Operator::GreaterThan
                    | Operator::Equal
                    | Operator::EqualStar
                    | Operator::TildeEqual
                    | Operator::ExactEqual
            )
        })
        .filter_map(|s| {
            let r = s.version().release();
            Some(PyVersion(
                *r.first()? as u32,
                *r.get(1).unwrap_or(&0) as u32,
            ))
        })
        .max()
        .filter(|v| LAMBDA_PYTHONS.contains(&(v.0, v.1)))
}

/// `MODULE.FUNCTION` as Lambda's Python runtime reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub module: String,
    pub function: String,
}

impl Handler {
    pub fn top_level(&self) -> &str {
        self.module.split('.').next().unwrap_or(&self.module)
    }
}

impl FromStr for Handler {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let valid_ident = |p: &str| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars().all(|c| c.is_alphanumeric() || c == '_')
        };
        match s.rsplit_once('.') {
            Some((module, function))
                if module.split('.').all(valid_ident) && valid_ident(function) =>
            {
                Ok(Handler {
                    module: module.to_string(),
                    function: function.to_string(),
                })
            }
            _ => bail!(ProjectError::BadHandler(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(requires: Option<&str>) -> Project {
        Project {
            root: PathBuf::from("/p"),
            dir: PathBuf::from("/p"),
            name: "p".into(),
            version: None,
            package: None,
            requires_python: requires.map(str::to_string),
            settings: Settings::default(),
            lock: Vec::new(),
            members: Vec::new(),
        }
    }

    #[test]
    fn target_python_precedence() {
        let p = project(Some(">=3.11"));
        assert_eq!(
            p.target_python(Some(PyVersion(3, 12)), None).unwrap(),
            PyVersion(3, 12)
        );
        assert_eq!(
            p.target_python(None, Some("public.ecr.aws/lambda/python:3.12-arm64"))
                .unwrap(),
            PyVersion(3, 12)
        );
        assert_eq!(
            p.target_python(None, Some("x/other:3.10")).unwrap(),
            PyVersion(3, 11)
        );
        assert_eq!(
            project(Some(">=3.8")).target_python(None, None).unwrap(),
            PyVersion(3, 13)
        );
        assert_eq!(
            project(None).target_python(None, None).unwrap(),
            PyVersion(3, 13)
        );
        let err = project(Some(">=3.12"))
            .target_python(Some(PyVersion(3, 11)), None)
            .unwrap_err();
        assert!(err.to_string().contains("`>=3.12`"), "{err}");
        assert!(err.to_string().contains("3.11"), "{err}");
    }

    #[test]
    fn handler_syntax() {
        let h: Handler = "app.main.handler".parse().unwrap();
        assert_eq!(h.module, "app.main");
        assert_eq!(h.top_level(), "app");
        assert!("handler".parse::<Handler>().is_err());
        assert!("app..handler".parse::<Handler>().is_err());
        assert!("app.main-x.handler".parse::<Handler>().is_err());
    }

    #[test]
    fn app_tree_takes_the_handler_package_and_skips_tests_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "app/__init__.py",
            "app/main.py",
            "app/tests/test_x.py",
            "app/.env",
            "app/.env.production",
            "app/data.json",
            "other.py",
        ] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let mut p = project(None);
        p.dir = root.to_path_buf();
        let h: Handler = "app.main.handler".parse().unwrap();
        let paths = |t: &Tree| t.entries().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        let t = p.app_tree(&h, &[], &[]).unwrap().tree;
        assert_eq!(
            paths(&t),
            ["app", "app/__init__.py", "app/data.json", "app/main.py"]
        );
        let t = p
            .app_tree(
                &h,
                &["other.py".into(), "app/tests".into()],
                &["*.json".into(), "app/*.json".into()],
            )
            .unwrap()
            .tree;
        assert_eq!(
            paths(&t),
            [
                "app",
                "app/__init__.py",
                "app/main.py",
                "app/tests",
                "app/tests/test_x.py",
                "other.py"
            ]
        );
        let err = p.app_tree(&h, &[], &["app/main.py".into()]).unwrap_err();
        assert!(err.to_string().contains("not in the app sources"), "{err}");
        let err = p
            .app_tree(&"nope.handler".parse().unwrap(), &[], &[])
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    fn write_files(root: &Path, files: &[&str]) {
        for f in files {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"x").unwrap();
        }
    }

    #[test]
    fn broad_globs_never_ship_env_files_and_name_what_else_they_bring() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_files(
            root,
            &[
                "app/__init__.py",
                "app/main.py",
                "app/.env",
                "app/.env.prod",
                "app/.env.defaults",
                ".env",
                "pyproject.toml",
                "uv.lock",
                ".github/ci.yml",
                "lib/x.py",
            ],
        );
        let mut p = project(None);
        p.dir = root.to_path_buf();
        let h: Handler = "app.main.handler".parse().unwrap();
        let app = |include: &[&str]| {
            let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
            let t = p.app_tree(&h, &include, &[]).unwrap();
            let files: Vec<String> = t
                .tree
                .entries()
                .filter(|(_, n)| matches!(n, crate::tree::Node::File { .. }))
                .map(|(p, _)| p.clone())
                .collect();
            (files, t.unintended)
        };
        let handler_only = ["app/__init__.py", "app/main.py"];
        for broad in [&["app"][..], &["app/*"], &["app/**"]] {
            assert_eq!(
                app(broad),
                (handler_only.map(String::from).to_vec(), vec![])
            );
        }
        for broad in [&["*"][..], &["**"]] {
            let (files, unintended) = app(broad);
            assert_eq!(
                files,
                [
                    ".github/ci.yml",
                    "app/__init__.py",
                    "app/main.py",
                    "lib/x.py",
                    "pyproject.toml",
                    "uv.lock"
                ]
            );
            assert_eq!(unintended, [".github/", "pyproject.toml", "uv.lock"]);
        }
        // Named, they ship, and naming is not a warning.
        let (files, unintended) = app(&["app/.env.defaults", "pyproject.toml"]);
        assert_eq!(
            files,
            [
                "app/.env.defaults",
                "app/__init__.py",
                "app/main.py",
                "pyproject.toml"
            ]
        );
        assert!(unintended.is_empty(), "{unintended:?}");
        let (files, _) = app(&["app/.env*"]);
        assert_eq!(
            files,
            [
                "app/.env",
                "app/.env.defaults",
                "app/.env.prod",
                "app/__init__.py",
                "app/main.py"
            ]
        );
    }

    #[test]
    fn exclusion_comes_before_the_utf8_check() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_files(root, &["app/__init__.py", "app/main.py"]);
        let bad = std::ffi::OsStr::from_bytes(b"data-\xff.bin");
        std::fs::write(root.join("app").join(bad), b"x").unwrap();
        std::fs::create_dir(root.join("app").join(bad).with_extension("d")).unwrap();
        let mut p = project(None);
        p.dir = root.to_path_buf();
        let h: Handler = "app.main.handler".parse().unwrap();
        let err = p.app_tree(&h, &[], &[]).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(AppSourceError::NotUtf8(_))),
            "{err}"
        );
        let t = p.app_tree(&h, &[], &["app/data-*".into()]).unwrap();
        assert_eq!(t.tree.file_count(), 2);
    }

    #[test]
    fn too_deep_or_too_long_paths_are_refused_unless_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_files(root, &["app/__init__.py", "app/main.py"]);
        let deep = root.join("app").join("d/".repeat(MAX_APP_DEPTH));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.py"), b"").unwrap();
        let mut p = project(None);
        p.dir = root.to_path_buf();
        let h: Handler = "app.main.handler".parse().unwrap();
        let err = p.app_tree(&h, &[], &[]).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(AppSourceError::TooDeep(_))),
            "{err}"
        );
        assert!(err.to_string().len() < 300, "one short line: {err}");
        assert!(p.app_tree(&h, &[], &["app/d".into()]).is_ok());
        std::fs::remove_dir_all(root.join("app/d")).unwrap();
        let long = root
            .join("app")
            .join(format!("{}/", "l".repeat(255)).repeat(15));
        std::fs::create_dir_all(&long).unwrap();
        std::fs::write(long.join("x.py"), b"").unwrap();
        let err = p.app_tree(&h, &[], &[]).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(AppSourceError::TooLong { .. })),
            "{err}"
        );
    }

    #[test]
    fn local_wheels_count_as_local_packages() {
        let lock: toml::Table = toml::from_str(
            r#"
[[package]]
name = "Big_Data"
version = "1.0"
source = { path = "wheels/big_data-1.0-py3-none-any.whl" }

[[package]]
name = "library"
version = "0.1.0"
source = { editable = "library" }

[[package]]
name = "six"
version = "1.17.0"
source = { registry = "https://pypi.org/simple" }
"#,
        )
        .unwrap();
        assert_eq!(
            lock_local_packages(&lock),
            [
                (
                    "big-data".to_string(),
                    "wheels/big_data-1.0-py3-none-any.whl".to_string()
                ),
                ("library".into(), "library".into()),
            ]
        );
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize_name("My_Lib.x"), "my-lib-x");
    }
}
