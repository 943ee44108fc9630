//! Staging with uv: `uv export` splits the lock into third-party requirements and local
//! workspace members, `uv pip install --target` installs each set for the Lambda
//! platform into its own staging directory, and the staged trees are made
//! machine-independent (console-script shebangs, installer leftovers) and compiled to
//! hash-based bytecode. uv is always a subprocess: we never resolve or install ourselves.

use crate::config::Selection;
use crate::error::hint;
use crate::project::Project;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use base64::Engine;
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bumped when staging changes what it produces for the same inputs.
pub const STAGE_VERSION: u32 = 1;

const COMPILE_SCRIPT: &str = include_str!("compile_pyc.py");

#[derive(Debug, Clone)]
pub struct Uv {
    pub path: PathBuf,
    pub version: String,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Uv {
    /// uv from `PATH`, and an identity that keys caches so a cached layer is reused
    /// without starting uv: (path, size, mtime) of a real binary. A wrapper script
    /// (pyenv's shim, for one) is rewritten on every `pyenv rehash` and hides which uv
    /// runs behind it, so for those the identity is what `uv --version` prints, and that
    /// answer is returned too, so nothing asks again.
    pub fn locate() -> Result<(PathBuf, String, Option<Uv>)> {
        let path = which("uv").ok_or_else(|| {
            hint(
                "uv is not installed (no `uv` on PATH)",
                "install it: `pip install uv` or `curl -LsSf https://astral.sh/uv/install.sh | sh`",
            )
        })?;
        let mut head = [0u8; 2];
        let is_script = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && &head == b"#!";
        if is_script {
            let uv = Self::version_of(&path)?;
            return Ok((path, format!("uv {}", uv.version), Some(uv)));
        }
        let meta = std::fs::metadata(&path)?;
        use std::os::unix::fs::MetadataExt;
        let identity = format!("{}:{}:{}", path.display(), meta.size(), meta.mtime());
        Ok((path, identity, None))
    }

    pub fn version_of(path: &Path) -> Result<Uv> {
        let out = crate::children::output(Command::new(path).arg("--version"))
            .with_context(|| format!("running {} --version", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .split_whitespace()
            .nth(1)
            .context("`uv --version` printed nothing useful")?
            .to_string();
        Ok(Uv {
            path: path.to_path_buf(),
            version,
        })
    }

    fn command(&self, cwd: &Path) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.current_dir(cwd)
            .env("UV_NO_PROGRESS", "1")
            .env("NO_COLOR", "1")
            // Errors on one line each: their text is read (see [`wheel_less_names`]).
            .env("UV_NO_WRAP", "1")
            // Our own flags decide these; a user's environment must not change the layer.
            .env_remove("UV_COMPILE_BYTECODE")
            .env_remove("UV_LINK_MODE")
            .env_remove("VIRTUAL_ENV");
        cmd
    }
}

/// The requirement sets `uv export` gives for the built project.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Third-party requirements (with hashes and index options).
    pub third_party: String,
    /// Local workspace members, as requirement lines (`./library`).
    pub members: Vec<String>,
    /// Names of the pinned third-party packages.
    pub packages: Vec<String>,
}

/// Run `uv export --locked` (a stale lock is an error, unlike `--frozen`).
pub fn export(uv: &Uv, project: &Project, sel: &Selection) -> Result<Export> {
    let mut cmd = uv.command(&project.root);
    if sel.offline {
        cmd.arg("--offline");
    }
    cmd.args([
        "export",
        "--locked",
        "--no-editable",
        "--no-emit-project",
        "--emit-index-url",
        "--format",
        "requirements.txt",
        "--no-header",
        "--quiet",
    ]);
    // uv includes the dev group unless told otherwise, and `--no-dev` wins over
    // `--group dev`: leave it out only when dev is asked for.
    if !sel.wants_dev() {
        cmd.arg("--no-dev");
    }
    if let Some(p) = &project.package {
        cmd.args(["--package", p]);
    }
    for e in &sel.extras {
        cmd.args(["--extra", e]);
    }
    if sel.all_extras {
        cmd.arg("--all-extras");
    }
    for g in &sel.groups {
        cmd.args(["--group", g]);
    }
    let out = crate::children::output(&mut cmd).context("running `uv export`")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("needs to be updated") || stderr.contains("--locked") {
            bail!(hint(
                format!(
                    "uv.lock in {} is out of date with pyproject.toml",
                    project.root.display()
                ),
                "run `uv lock` and commit the updated uv.lock"
            ));
        }
        bail!("`uv export` failed: {}", last_error_line(&stderr));
    }
    Ok(split_export(&String::from_utf8_lossy(&out.stdout)))
}

/// uv's most useful error line, for a one-line message.
fn last_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.starts_with("error:"))
        .map(|l| {
            let idx = lines.iter().position(|x| x == l).unwrap_or(0);
            lines[idx..].join(" ")
        })
        .unwrap_or_else(|| lines.join(" "))
        .trim_start_matches("error: ")
        .to_string()
}

/// Split requirements text into third-party entries and local paths.
fn split_export(text: &str) -> Export {
    let mut export = Export::default();
    // Logical lines: backslash continuations joined.
    let mut logical: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim_end();
        if let Some(stripped) = trimmed.strip_suffix('\\') {
            current.push_str(stripped);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        logical.push(std::mem::take(&mut current));
    }
    for line in logical {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let body = l.strip_prefix("-e ").unwrap_or(l).trim();
        let is_local = body.starts_with("./")
            || body.starts_with("../")
            || body.starts_with('/')
            || body.starts_with("file:")
            || body == ".";
        if is_local {
            export
                .members
                .push(body.split_whitespace().next().unwrap_or(body).to_string());
        } else {
            if !l.starts_with('-')
                && let Some(name) = l
                    .split(['=', ' ', ';', '[', '<', '>', '~', '!', '@'])
                    .next()
            {
                export.packages.push(crate::project::normalize_name(name));
            }
            export.third_party.push_str(&line);
            export.third_party.push('\n');
        }
    }
    export
}

/// Packages uv.lock knows wheels for (on any platform): for these a missing wheel means
/// a native package without a build for the runtime, not a pure sdist.
fn packages_with_wheels(lock: &[u8]) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(&String::from_utf8_lossy(lock)) else {
        return Vec::new();
    };
    table
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("wheels")
                .and_then(|w| w.as_array())
                .is_some_and(|w| !w.is_empty())
        })
        .filter_map(|p| p.get("name")?.as_str().map(crate::project::normalize_name))
        .collect()
}

/// Names uv reports as lacking a usable wheel, among `candidates`.
fn packages_without_wheels(stderr: &str, candidates: &[String]) -> Vec<String> {
    let named = wheel_less_names(stderr);
    candidates
        .iter()
        .filter(|c| named.contains(c))
        .cloned()
        .collect()
}

/// Whether `rest`, what follows "has " or "have " in uv's resolver text, says a package
/// has no wheel it can use (uv-distribution-types' `IncompatibleDist`): "no usable wheels"
/// when an sdist exists but building is off (`--no-build`); "no wheels with a matching
/// platform tag (e.g. …)" and its kin when there is no sdist; "no Linux-compatible wheels"
/// or "no `MARKER`-compatible wheels" when the lock's wheels cover no such platform.
fn says_wheel_less(rest: &str) -> bool {
    let Some(rest) = rest.strip_prefix("no ") else {
        return false;
    };
    if ["usable wheels", "wheels with ", "compatible wheels"]
        .iter()
        .any(|p| rest.starts_with(p))
    {
        return true;
    }
    let platform_end = match rest.strip_prefix('`') {
        Some(marker) => marker.find('`').map(|i| i + 2),
        None => rest.find([' ', '-']),
    };
    platform_end.is_some_and(|i| rest[i..].starts_with("-compatible wheels"))
}

/// Every package uv's error text names as having no wheel for the target, normalised. The
/// subject of each such clause is read back from the phrase, so that extras, markers
/// (`numpy[dev]{python_full_version < '3.12'}==2.4.6`, spaces inside the braces) and
/// version ranges do not hide the name, and a name elsewhere in the sentence ("Because
/// six==1 is available and numpy==2 has no usable wheels") is not taken for it. uv's
/// hint "Wheels are required for `x` because building from source is disabled" is not
/// such a clause: it follows any `--no-build` failure, also for a pure sdist.
fn wheel_less_names(stderr: &str) -> Vec<String> {
    // uv wraps long lines at the terminal width: words of one clause may be on two lines.
    // The box-drawing gutter of its graphical reports (`╰─▶`, `│`) is not part of a clause.
    let text = stderr
        .split_whitespace()
        .filter(|w| {
            !w.chars()
                .all(|c| matches!(c, '\u{2500}'..='\u{257f}' | '▶' | '×'))
        })
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    let mut names = Vec::new();
    let mut add = |subject: &str| {
        let end = subject
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
            .unwrap_or(subject.len());
        let name = &subject[..end];
        if name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            let name = crate::project::normalize_name(name);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    };
    for verb in [" has no ", " have no "] {
        for (at, _) in text.match_indices(verb) {
            if says_wheel_less(&text[at + verb.len() - "no ".len()..]) {
                add(subject_before(&text[..at]));
            }
        }
    }
    // A lock-based install: "Distribution `numpy==2.4.6 @ registry+…` can't be installed
    // because it doesn't have a source distribution or wheel for the current platform".
    for (at, _) in text.match_indices(
        "` can't be installed because it doesn't have a source distribution or wheel",
    ) {
        let before = &text[..at];
        add(before.rsplit('`').next().unwrap_or(before));
    }
    // uv's hints after a tag mismatch name packages that have wheels, only not this one.
    for lead in ["wheels are available for `", "we only found wheels for `"] {
        for (at, _) in text.match_indices(lead) {
            add(&text[at + lead.len()..]);
        }
    }
    names
}

/// The requirement a clause ending at `before`'s end is about: back to the previous space
/// outside `{…}` and `[…]` (markers hold spaces).
fn subject_before(before: &str) -> &str {
    let mut depth = 0i32;
    for (i, c) in before.char_indices().rev() {
        match c {
            '}' | ']' => depth += 1,
            '{' | '[' => depth -= 1,
            ' ' | '`' | '(' if depth <= 0 => return &before[i + 1..],
            _ => {}
        }
    }
    before
}

/// What `install` installs: third-party wheels or workspace members.
pub struct InstallOptions<'a> {
    /// Names of the exported third-party packages (to recognise them in uv's errors).
    pub packages: &'a [String],
    /// Workspace members are always built from source, then checked for purity.
    pub members: bool,
    pub offline: bool,
    /// Hard-link files from uv's cache instead of copying them (uv copies anyway when
    /// the cache is on another filesystem). Safe because nothing here writes into a
    /// staged file in place: [`fix_scripts`] replaces files by rename, and bytecode goes
    /// to new files.
    pub hardlink: bool,
}

/// `uv pip install` the `requirements` into `dest` for the target platform, with
/// `--no-deps` because the export is already the complete, locked set.
pub fn install(
    uv: &Uv,
    project: &Project,
    target: &Target,
    requirements: &str,
    dest: &Path,
    opts: &InstallOptions,
) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let req_file = dest.with_extension("requirements.txt");
    std::fs::write(&req_file, requirements)?;
    let run = |no_build: bool| -> Result<std::process::Output> {
        let mut cmd = uv.command(&project.root);
        cmd.args([
            "pip",
            "install",
            "--no-deps",
            "--no-installer-metadata",
            "--link-mode",
            if opts.hardlink { "hardlink" } else { "copy" },
            "--no-compile-bytecode",
        ])
        .arg("--target")
        .arg(dest)
        .args(["--python-version", &target.python.to_string()])
        .args(["--python-platform", &target.uv_platform()])
        .arg("-r")
        .arg(&req_file);
        if no_build {
            cmd.arg("--no-build");
        }
        if opts.offline {
            cmd.arg("--offline");
        }
        crate::children::output(&mut cmd).context("running `uv pip install`")
    };
    // Third-party packages: wheels only at first, so a package without a wheel for the
    // runtime fails fast here instead of being compiled for the wrong machine.
    let out = run(!opts.members)?;
    let mut built_from_source: Vec<String> = Vec::new();
    if !out.status.success() && opts.members {
        bail!(
            "`uv pip install` of workspace members failed: {}",
            last_error_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    if !out.status.success() {
        let missing = sdist_only(&String::from_utf8_lossy(&out.stderr), project, target, opts)?;
        // Only source distributions: let uv build them, then insist the result is pure.
        built_from_source = missing.clone();
        let out = run(false)?;
        if !out.status.success() {
            bail!(
                "`uv pip install` failed building {}: {}",
                missing.join(", "),
                last_error_line(&String::from_utf8_lossy(&out.stderr))
            );
        }
    }
    let _ = std::fs::remove_file(&req_file);
    // uv's lock file for the target directory is not part of what we ship.
    let _ = std::fs::remove_file(dest.join(".lock"));
    check_pure(dest, opts.members, &built_from_source)?;
    Ok(())
}

/// After a wheels-only install failed with `stderr`: the packages that have only source
/// distributions, which may be built here (the caller then checks they are pure). A package
/// that ships wheels, none of them for the runtime, is an error naming it: building it on
/// this machine would compile it for the wrong glibc or CPU.
fn sdist_only(
    stderr: &str,
    project: &Project,
    target: &Target,
    opts: &InstallOptions,
) -> Result<Vec<String>> {
    let missing = packages_without_wheels(stderr, opts.packages);
    let native = packages_with_wheels(&project.lock);
    if let Some(name) = missing.iter().find(|m| native.contains(m)) {
        bail!(hint(
            format!(
                "no wheel of `{name}` fits the Lambda runtime: {} (uv platform {})",
                target.describe(),
                target.uv_platform()
            ),
            if target.is_al2023() {
                format!("pin an older `{name}` that ships wheels for this platform")
            } else {
                format!(
                    "pin an older `{name}` that ships manylinux2014 {} wheels, or target Python 3.12+ (glibc 2.34)",
                    target.arch.machine()
                )
            }
        ));
    }
    if missing.is_empty() {
        bail!("`uv pip install` failed: {}", last_error_line(stderr));
    }
    Ok(missing)
}

/// What was built on this machine (workspace members, and `built_from_source`) must be
/// pure: every wheel tag's platform `any`, since a host build targets the host, not
/// Lambda. Anything else is refused when it carries a `linux_<arch>` tag, which only a
/// host build produces (wheels from an index carry manylinux/musllinux tags).
pub fn check_pure(dir: &Path, members: bool, built_from_source: &[String]) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(dist) = name.strip_suffix(".dist-info") else {
            continue;
        };
        let Ok(wheel) = std::fs::read_to_string(entry.path().join("WHEEL")) else {
            continue;
        };
        let name = crate::project::normalize_name(dist.split('-').next().unwrap_or(dist));
        let host_built = members || built_from_source.contains(&name);
        for tag in wheel.lines().filter_map(|l| l.strip_prefix("Tag:")) {
            let platform = tag.trim().rsplit('-').next().unwrap_or("");
            if platform.starts_with("linux_") || (host_built && platform != "any") {
                bail!(hint(
                    format!(
                        "`{dist}` was built from source on this machine into a platform-specific wheel ({}) that cannot run on Lambda",
                        tag.trim()
                    ),
                    if members {
                        "workspace members are built on this machine, so they must be pure Python; publish the extension as manylinux wheels (e.g. with cibuildwheel) and depend on those"
                    } else {
                        "pin a version of it that publishes manylinux wheels, or replace it with a pure-Python alternative"
                    }
                ));
            }
        }
    }
    Ok(())
}

/// Rewrite console-script shebangs in `bin/` to the image's interpreter, and their
/// RECORD entries to match: uv writes the build host's interpreter path there.
pub fn fix_scripts(dir: &Path, target: &Target) -> Result<()> {
    let bin = dir.join("bin");
    let Ok(entries) = std::fs::read_dir(&bin) else {
        return Ok(());
    };
    let shebang = format!("#!{}", target.interpreter_path());
    let mut changed: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let content = std::fs::read(&path)?;
        if !content.starts_with(b"#!") {
            continue;
        }
        let end = content
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(content.len());
        let first = String::from_utf8_lossy(&content[..end]);
        if !first.contains("python") || first == shebang {
            continue;
        }
        let mut new = shebang.as_bytes().to_vec();
        new.extend_from_slice(&content[end..]);
        replace_file(&path, &new)?;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        changed.push((format!("bin/{name}"), new));
    }
    if changed.is_empty() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let record = entry?.path().join("RECORD");
        let Ok(text) = std::fs::read_to_string(&record) else {
            continue;
        };
        let mut touched = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let path = line.split(',').next().unwrap_or("");
                let normalized = path.trim_start_matches("../").to_string();
                match changed.iter().find(|(p, _)| *p == normalized || p == path) {
                    Some((_, content)) => {
                        touched = true;
                        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(sha2::Sha256::digest(content));
                        format!("{path},sha256={hash},{}", content.len())
                    }
                    None => line.to_string(),
                }
            })
            .collect();
        if touched {
            replace_file(&record, (lines.join("\n") + "\n").as_bytes())?;
        }
    }
    Ok(())
}

/// Replace `path` with `content` by writing a new file and renaming it over: a staged file
/// may be a hard link into uv's cache, which writing in place would corrupt. Keeps the
/// file's permissions (scripts stay executable).
fn replace_file(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path.parent().context("a staged file has a parent")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(content)?;
    tmp.as_file()
        .set_permissions(std::fs::metadata(path)?.permissions())?;
    tmp.persist(path)
        .with_context(|| format!("rewriting {}", path.display()))?;
    Ok(())
}

/// An interpreter of the target version, for bytecode.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Interpreter {
    pub path: PathBuf,
    /// Size and mtime of the binary behind `path`: a patch upgrade in place changes it,
    /// and with it the recorded version (part of cache keys and provenance).
    #[serde(default)]
    pub stamp: String,
    /// Full version, e.g. 3.11.7 (recorded; .pyc can differ across patch releases).
    pub version: String,
}

/// The stamp of the interpreter binary `path` resolves to.
pub fn interpreter_stamp(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::canonicalize(path)
        .and_then(std::fs::metadata)
        .map(|m| format!("{}:{}", m.size(), m.mtime()))
        .unwrap_or_default()
}

/// `uv python find X.Y`, outside any project so a local .venv does not answer.
pub fn find_interpreter(uv: &Uv, target: &Target) -> Option<PathBuf> {
    let mut cmd = uv.command(Path::new("/"));
    cmd.args(["python", "find", "--no-project", "--system"])
        .arg(target.python.to_string());
    let out = crate::children::output(&mut cmd).ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_file().then_some(path)
}

/// `uv python install X.Y`: one of uv's managed builds, which for a given uv version are
/// the same on every machine. `--no-bin`: nothing is put on the user's PATH for us. On
/// failure, uv's own line says why (no network, no such build).
pub fn install_interpreter(uv: &Uv, target: &Target) -> std::result::Result<(), String> {
    let mut cmd = uv.command(Path::new("/"));
    cmd.args(["python", "install", "--no-bin"])
        .arg(target.python.to_string());
    let out = crate::children::output(&mut cmd).map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    Err(last_error_line(&String::from_utf8_lossy(&out.stderr)))
}

/// No interpreter of the target version could be had to compile bytecode: shipping
/// without it would make the image's digest depend on the machine, so it is an error.
#[derive(Debug)]
pub struct NoInterpreter {
    pub python: crate::target::PyVersion,
    /// Why uv could not install one; None when installing was not tried (offline).
    pub install_failed: Option<String>,
}

impl std::fmt::Display for NoInterpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let python = self.python;
        match &self.install_failed {
            Some(why) => write!(
                f,
                "no Python {python} interpreter to compile bytecode: uv found none and could not install one ({why})"
            ),
            None => write!(
                f,
                "no Python {python} interpreter to compile bytecode: uv found none, and installing one needs the network"
            ),
        }
    }
}

impl std::error::Error for NoInterpreter {}

/// Compile `files` (relative path, source file) into `out_root`'s `__pycache__` dirs
/// with embedded paths under `dest_root`. Returns the interpreter's full version.
pub fn compile(
    python: &Path,
    target: &Target,
    out_root: &Path,
    dest_root: &str,
    files: &[(String, PathBuf)],
) -> Result<String> {
    let mut cmd = Command::new(python);
    // No `-E`: it would also drop PYTHONHASHSEED. The user's PYTHON* variables are
    // removed instead, so PYTHONPATH or PYTHONSTARTUP cannot change what is compiled.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(key);
        }
    }
    // `-S`: no `site` at start. A Python whose site-packages holds .pth hooks (pyenv's
    // imports certifi) spends most of its start-up there, and the script needs only the
    // stdlib; `-s` stays, so a user site directory cannot matter even if `site` ran.
    cmd.args(["-S", "-s", "-c", COMPILE_SCRIPT])
        .arg(target.python.to_string())
        .arg(out_root)
        .arg(dest_root)
        // String hashing is randomised per process, and Python 3.10 marshals frozenset
        // constants (`x in {"a", "b"}`) in hash order: without a fixed seed its .pyc
        // differ from run to run (3.11+ happen to sort them).
        .env("PYTHONHASHSEED", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = crate::children::spawn(&mut cmd)
        .with_context(|| format!("starting {}", python.display()))?;
    {
        let mut stdin = child.stdin().context("no stdin")?;
        for (rel, source) in files {
            writeln!(stdin, "{rel}\t{}", source.display())?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "compiling bytecode with {} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Every `.py` file under `dir`, relative, sorted.
pub fn python_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "py") {
            files.push(crate::tree::relative_slash_path(
                entry.path().strip_prefix(dir)?,
            )?);
        }
    }
    files.sort();
    Ok(files)
}

/// An installed distribution and what it takes on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Distribution {
    /// `name version`, from the `.dist-info` directory name.
    pub name: String,
    pub bytes: u64,
}

/// The distributions installed in `dir`, largest first, each sized by the files its
/// `.dist-info/RECORD` lists (plus their compiled `.pyc`, which RECORD does not list as
/// we compile after installing): what to name when a package is too large.
pub fn distribution_sizes(dir: &Path, target: &Target) -> Result<Vec<Distribution>> {
    let pyc_tag = format!("cpython-{}{}", target.python.0, target.python.1);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".dist-info") else {
            continue;
        };
        let Ok(record) = std::fs::read_to_string(entry.path().join("RECORD")) else {
            continue;
        };
        let size_of = |rel: &str| {
            std::fs::symlink_metadata(dir.join(rel))
                .ok()
                .filter(|m| m.is_file())
                .map_or(0, |m| m.len())
        };
        let mut bytes = 0;
        for line in record.lines() {
            let Some(path) = record_path(line) else {
                continue;
            };
            // Paths outside the install root (`../../bin/x`) are not ours to count.
            if path.split('/').any(|p| p == "..") || path.starts_with('/') {
                continue;
            }
            bytes += size_of(&path);
            if let Some(py) = path.strip_suffix(".py") {
                let (parent, name) = py.rsplit_once('/').unwrap_or(("", py));
                let pyc = crate::tree::join(parent, &format!("__pycache__/{name}.{pyc_tag}.pyc"));
                bytes += size_of(&pyc);
            }
        }
        let name = match stem.split_once('-') {
            Some((n, v)) => format!("{n} {v}"),
            None => stem.to_string(),
        };
        out.push(Distribution { name, bytes });
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The path field of a RECORD line (CSV: quoted when it holds a comma or a quote).
fn record_path(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut path = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    path.push('"');
                } else {
                    return Some(path);
                }
            } else {
                path.push(c);
            }
        }
        return None;
    }
    // The hash and size fields never hold commas, so split from the right.
    let mut fields = line.rsplitn(3, ',');
    let (_size, _hash, path) = (fields.next()?, fields.next()?, fields.next()?);
    (!path.is_empty()).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_split_into_third_party_and_members() {
        let text = "--index-url https://pypi.org/simple\n./library\nannotated-types==0.7.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via pydantic\n-e ./other\nfastapi[standard]==0.1 ; python_full_version >= '3.11'\n";
        let e = split_export(text);
        assert_eq!(e.members, ["./library", "./other"]);
        assert_eq!(e.packages, ["annotated-types", "fastapi"]);
        assert!(
            e.third_party
                .starts_with("--index-url https://pypi.org/simple\n")
        );
        assert!(e.third_party.contains("--hash=sha256:bb"));
        assert!(!e.third_party.contains("library"));
    }

    #[test]
    fn missing_wheels_are_found_in_uv_errors() {
        let stderr = "  × No solution found when resolving dependencies:\n  ╰─▶ Because numpy==2.4.0 has no usable wheels and you require numpy==2.4.0, we can conclude that your requirements are unsatisfiable.";
        let got = packages_without_wheels(stderr, &["numpy".into(), "six".into()]);
        assert_eq!(got, ["numpy"]);
    }

    /// Every form of uv's "no wheel" clause seen from `uv pip install --no-build` (0.13)
    /// and read in uv's resolver sources: the subject may carry extras, a marker in braces
    /// (with spaces), a range, or be "all versions of"; the clause may be wrapped.
    #[test]
    fn missing_wheels_are_found_in_every_form_uv_prints() {
        let cases: &[(&str, &[&str])] = &[
            (
                "error: No solution found when resolving dependencies\n  cause: Because numpy==2.4.1 has no usable wheels and you require numpy==2.4.1, we can conclude that your requirements are unsatisfiable.\n\nhint: Wheels are required for `numpy` because building from source is disabled for all packages (i.e., with `--no-build`)",
                &["numpy"],
            ),
            (
                "  cause: Because numpy{python_full_version < '3.12'}==2.4.6 has no usable wheels and you require numpy{python_full_version < '3.12'}==2.4.6, we can conclude that your requirements are unsatisfiable.",
                &["numpy"],
            ),
            (
                "  cause: Because numpy[dev]==2.4.1 has no usable wheels and you require numpy[dev]==2.4.1, we can conclude that your requirements are unsatisfiable.",
                &["numpy"],
            ),
            (
                "Because Pydantic_Core[timezone]{python_full_version < '3.12' and platform_machine == 'aarch64'}>=2.0,<3 has no usable wheels and you require it",
                &["pydantic-core"],
            ),
            (
                "╰─▶ Because all versions of anyio have no usable wheels and you require anyio, we can conclude that your requirements are unsatisfiable.",
                &["anyio"],
            ),
            (
                "╰─▶ Because all versions of numpy{python_full_version < '3.12'} have no usable wheels and you require numpy",
                &["numpy"],
            ),
            // Wrapped at the terminal width, inside the clause.
            (
                "  ╰─▶ Because numpy{python_full_version < '3.12'}==2.4.6 has no\n      usable wheels and you require numpy==2.4.6, we can conclude that your\n      requirements are unsatisfiable.",
                &["numpy"],
            ),
            // No sdist at all: the wheels' tags are what does not fit.
            (
                "Because cryptography==44.0.0 has no wheels with a matching platform tag (e.g., `manylinux_2_17_aarch64`) and you require cryptography==44.0.0, we can conclude that your requirements are unsatisfiable.",
                &["cryptography"],
            ),
            (
                "Because numpy==2.4.1 has no wheels with a matching Python ABI tag (e.g., `cp311`) and you require numpy==2.4.1",
                &["numpy"],
            ),
            (
                "Because all versions of torch have no wheels with a matching Python implementation tag",
                &["torch"],
            ),
            (
                "Because numpy==2.4.1 has no Linux-compatible wheels and you require numpy",
                &["numpy"],
            ),
            (
                "Because numpy==2.4.1 has no `sys_platform == 'linux' and platform_machine == 'aarch64'`-compatible wheels",
                &["numpy"],
            ),
            // Another package named in the same sentence is not the one without wheels.
            (
                "Because only six==1.16.0 is available and numpy==2.4.1 has no usable wheels, we can conclude that all versions of six depend on numpy",
                &["numpy"],
            ),
            (
                "Because orjson==3.10.0 has no usable wheels and pandas==2.2.0 has no wheels with a matching platform tag, we can conclude …",
                &["orjson", "pandas"],
            ),
            // Installing from a lock.
            (
                "error: Distribution `numpy==2.4.6 @ registry+https://pypi.org/simple` can't be installed because it doesn't have a source distribution or wheel for the current platform",
                &["numpy"],
            ),
            // uv's hints after a tag mismatch.
            (
                "hint: Wheels are available for `numpy` (v2.4.1) on the following platforms: `manylinux_2_27_aarch64`, `macosx_14_0_arm64`",
                &["numpy"],
            ),
            (
                "hint: You require CPython 3.11 (`cp311`), but we only found wheels for `numpy` (v2.4.1) with the following Python ABI tags: `cp312`, `cp313`",
                &["numpy"],
            ),
            // Failures that are not about wheels name nothing.
            (
                "hint: Wheels are required for `six` because building from source is disabled for all packages (i.e., with `--no-build`)",
                &[],
            ),
            (
                "Because six==9.9 was not found in the package registry and you require six==9.9, we can conclude that your requirements are unsatisfiable.",
                &[],
            ),
            (
                "Because numpy==2.4.1 has no versions in the range and you require numpy",
                &[],
            ),
        ];
        for (stderr, want) in cases {
            assert_eq!(wheel_less_names(stderr), *want, "{stderr}");
        }
    }

    #[test]
    fn distributions_are_sized_from_record_with_their_bytecode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, bytes: usize| {
            std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
            std::fs::write(root.join(rel), vec![b'x'; bytes]).unwrap();
        };
        write("big/__init__.py", 1000);
        write("big/__pycache__/__init__.cpython-311.pyc", 500);
        write("big/data, with comma.bin", 3000);
        write("small.py", 10);
        write("bin/tool", 99);
        std::fs::create_dir_all(root.join("big-2.0.dist-info")).unwrap();
        std::fs::write(
            root.join("big-2.0.dist-info/RECORD"),
            "big/__init__.py,sha256=a,1000\n\"big/data, with comma.bin\",sha256=b,3000\n../../bin/tool,,\nbig-2.0.dist-info/RECORD,,\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("small-1.0.dist-info")).unwrap();
        std::fs::write(
            root.join("small-1.0.dist-info/RECORD"),
            "small.py,sha256=c,10\n",
        )
        .unwrap();
        let target = Target {
            python: "3.11".parse().unwrap(),
            arch: crate::target::Arch::X86_64,
        };
        let record_len = std::fs::metadata(root.join("big-2.0.dist-info/RECORD"))
            .unwrap()
            .len();
        assert_eq!(
            distribution_sizes(root, &target).unwrap(),
            [
                Distribution {
                    name: "big 2.0".into(),
                    bytes: 1000 + 500 + 3000 + record_len
                },
                Distribution {
                    name: "small 1.0".into(),
                    bytes: 10
                },
            ]
        );
    }

    #[test]
    fn host_builds_are_impure() {
        let dir = tempfile::tempdir().unwrap();
        let di = dir.path().join("thing-1.0.dist-info");
        std::fs::create_dir(&di).unwrap();
        std::fs::write(di.join("WHEEL"), "Tag: py3-none-any\n").unwrap();
        check_pure(dir.path(), false, &[]).unwrap();
        std::fs::write(di.join("WHEEL"), "Tag: cp311-cp311-manylinux_2_17_x86_64\n").unwrap();
        check_pure(dir.path(), false, &[]).unwrap();
        // The same tag on something this machine built is refused: only `any` is pure.
        assert!(check_pure(dir.path(), true, &[]).is_err());
        assert!(check_pure(dir.path(), false, &["thing".into()]).is_err());
        std::fs::write(di.join("WHEEL"), "Tag: cp311-cp311-linux_x86_64\n").unwrap();
        let err = check_pure(dir.path(), false, &[]).unwrap_err();
        assert!(err.to_string().contains("`thing-1.0`"), "{err}");
    }

    /// The compiler runs with a fixed hash seed whatever the caller's environment says
    /// (the script refuses to run otherwise), and gives the same bytes twice.
    #[test]
    fn bytecode_is_compiled_with_a_fixed_hash_seed() {
        let python = std::path::PathBuf::from(
            String::from_utf8(
                Command::new("python3")
                    .args(["-c", "import sys; print(sys.executable)"])
                    .output()
                    .expect("python3 on PATH")
                    .stdout,
            )
            .unwrap()
            .trim(),
        );
        let version = String::from_utf8(
            Command::new(&python)
                .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let target = Target {
            python: version.trim().parse().unwrap(),
            arch: crate::target::Arch::X86_64,
        };
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.py");
        std::fs::write(
            &src,
            "def f(x):\n    return x in {'alpha', 'beta', 'gamma', 'delta'}\n",
        )
        .unwrap();
        let mut outputs = Vec::new();
        for (i, seed) in ["random", "123"].iter().enumerate() {
            let out = dir.path().join(format!("out{i}"));
            // SAFETY: tests in this module do not read PYTHONHASHSEED concurrently.
            unsafe { std::env::set_var("PYTHONHASHSEED", seed) };
            let got = compile(
                &python,
                &target,
                &out,
                "/var/task",
                &[("m.py".into(), src.clone())],
            )
            .unwrap();
            assert!(got.starts_with(&version.trim().to_string()), "{got}");
            let pyc = std::fs::read_dir(out.join("__pycache__"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            outputs.push(std::fs::read(pyc).unwrap());
        }
        unsafe { std::env::remove_var("PYTHONHASHSEED") };
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(
            u32::from_le_bytes(outputs[0][4..8].try_into().unwrap()),
            1,
            "unchecked-hash"
        );
    }

    #[test]
    fn shebangs_and_record_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("tool-1.0.dist-info")).unwrap();
        std::fs::write(
            root.join("bin/tool"),
            "#!/home/me/.venv/bin/python3\nimport tool\n",
        )
        .unwrap();
        std::fs::write(
            root.join("tool-1.0.dist-info/RECORD"),
            "tool.py,sha256=x,1\n../../bin/tool,sha256=old,40\n",
        )
        .unwrap();
        let target = Target {
            python: "3.11".parse().unwrap(),
            arch: crate::target::Arch::X86_64,
        };
        fix_scripts(root, &target).unwrap();
        let script = std::fs::read_to_string(root.join("bin/tool")).unwrap();
        assert_eq!(script, "#!/var/lang/bin/python3.11\nimport tool\n");
        let record = std::fs::read_to_string(root.join("tool-1.0.dist-info/RECORD")).unwrap();
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(script.as_bytes()));
        assert!(
            record.contains(&format!("../../bin/tool,sha256={hash},{}", script.len())),
            "{record}"
        );
        assert!(record.starts_with("tool.py,sha256=x,1\n"));
    }

    #[test]
    fn rewriting_a_script_leaves_its_hard_linked_original_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stage");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        // As if uv had hard-linked the script from its cache.
        let original = dir.path().join("uv-cache-tool");
        std::fs::write(&original, "#!/home/me/.venv/bin/python3\nimport tool\n").unwrap();
        std::fs::set_permissions(&original, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::hard_link(&original, root.join("bin/tool")).unwrap();
        let target = Target {
            python: "3.12".parse().unwrap(),
            arch: crate::target::Arch::X86_64,
        };
        fix_scripts(&root, &target).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("bin/tool")).unwrap(),
            "#!/var/lang/bin/python3.12\nimport tool\n"
        );
        assert_eq!(
            std::fs::read_to_string(&original).unwrap(),
            "#!/home/me/.venv/bin/python3\nimport tool\n",
            "uv's cached copy is untouched"
        );
        let mode = std::fs::metadata(root.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "still executable");
    }
}
