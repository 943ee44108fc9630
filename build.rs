//! Sets VERSION_TEXT, what `ocilambda --version` prints after the name: the package version,
//! and, when built from a git checkout, the commit and its date (as uv does), so a bug report
//! names the exact source. A build without .git or without git (crates.io, an sdist, a
//! wheel built from one) prints the version alone rather than failing.
//!
//! The image annotations keep CARGO_PKG_VERSION alone: the commit must not change image bytes.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    println!("cargo:rerun-if-changed=build.rs");
    // Without this guard, git would find a checkout above an unpacked crate (a vendored
    // copy inside someone else's repository) and report that repository's commit.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let own_checkout = git(&["-C", &manifest_dir, "rev-parse", "--show-toplevel"])
        .is_some_and(|top| std::path::Path::new(&top) == std::path::Path::new(&manifest_dir));
    let commit = own_checkout
        .then(|| git(&["-C", &manifest_dir, "log", "-1", "--format=%h %cs"]))
        .flatten();
    match commit {
        Some(commit) => {
            // A commit moves the branch's ref, not HEAD; a checkout moves HEAD. Both paths
            // come from git because a worktree's .git is a file and its refs live elsewhere.
            for path in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["-C", &manifest_dir, "rev-parse", "--git-path", path]) {
                    watch(&absolute(&manifest_dir, &p));
                }
            }
            if let Some(r) = git(&["-C", &manifest_dir, "symbolic-ref", "-q", "HEAD"])
                && let Some(p) = git(&["-C", &manifest_dir, "rev-parse", "--git-path", &r])
            {
                watch(&absolute(&manifest_dir, &p));
            }
            println!("cargo:rustc-env=VERSION_TEXT={version} ({commit})");
        }
        None => println!("cargo:rustc-env=VERSION_TEXT={version}"),
    }
}

/// Rerun when `path` changes; a path that does not exist (no packed-refs yet, a packed
/// branch ref) is left out, since cargo would rerun the script on every build for it.
fn watch(path: &str) {
    if std::path::Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// `git rev-parse --git-path` answers relative to the directory it ran in.
fn absolute(dir: &str, path: &str) -> String {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        path.to_string()
    } else {
        std::path::Path::new(dir).join(p).display().to_string()
    }
}
