//! Staging's side effects on the machine: a build that is killed leaves no uv running and
//! no staging directory behind for good, and the bytecode interpreter comes from uv or
//! the build fails, never silently changing what it ships.
mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn real_uv() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("uv"))
        .find(|p| p.is_file())
        .expect("uv on PATH")
}

/// A `uv` that behaves as the real one, except that `uv pip install` appends its pid to
/// `marker` and then hangs (as a slow install would), with `exec` so the pid stays its own.
fn hanging_uv(dir: &Path, marker: &Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("uv");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1 $2\" = \"pip install\" ]; then echo $$ >> '{}'; exec sleep 300; fi\nexec '{}' \"$@\"\n",
            marker.display(),
            real_uv().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var_os("PATH").unwrap();
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap().into()
}

/// Running, and not a zombie waiting to be reaped.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pids the fake uv recorded.
fn uv_pids(marker: &Path) -> Vec<i32> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn staging_dirs(cache: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cache.join("tmp"))
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Issue 9 item 14: uv used to run on, re-parented to init and writing into the cache,
/// and `cache/tmp/stage-*` stayed forever. Killed by SIGKILL (no handler runs) or SIGINT
/// (Ctrl-C), the build takes its uv along, and the next build sweeps the staging
/// directory it left.
#[test]
fn a_killed_build_leaves_no_uv_running_and_the_next_build_sweeps_its_staging_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let cache = tmp.path().join("cache");
    let mut stale: Vec<PathBuf> = Vec::new();
    for signal in [libc::SIGKILL, libc::SIGINT] {
        let marker = tmp.path().join(format!("uv-pids-{signal}"));
        let mut cmd = ocilambda(&cache);
        cmd.env("PATH", hanging_uv(tmp.path(), &marker))
            .arg("build")
            .arg(&project)
            .args(["--base", &stand_in_base("3.11")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. A test runner may
        // start us with SIGINT ignored, which the build would inherit.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut build = cmd.spawn().unwrap();
        wait_for("uv pip install to start", || !uv_pids(&marker).is_empty());
        assert!(uv_pids(&marker).iter().all(|&p| alive(p)), "installing");
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(build.id() as i32, signal);
        }
        let status = build.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(signal),
            "died of the signal: {status}"
        );
        for uv in uv_pids(&marker) {
            wait_for("uv to die with the build", || !alive(uv));
        }
        // What the previous killed build left was swept when this one started.
        let left = staging_dirs(&cache);
        assert_eq!(left.len(), 1, "a killed build leaves its own: {left:?}");
        assert!(stale.iter().all(|d| !d.exists()), "{stale:?} swept");
        stale = left;
    }
    let out = run({
        let mut cmd = ocilambda(&cache);
        cmd.arg("build")
            .arg(&project)
            .args(["--base", &stand_in_base("3.11")]);
        cmd
    });
    assert_ok(&out);
    let leftovers: Vec<String> = std::fs::read_dir(cache.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the next build removed {stale:?}, its lock and its own: {leftovers:?}"
    );
}

/// A build's staging directory is its own while it runs: another build sharing the cache
/// sweeps only what no live process holds.
#[test]
fn a_running_build_keeps_its_staging_dir_while_another_build_sweeps() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_project("src-layout", &a);
    copy_project("src-layout", &b);
    let cache = tmp.path().join("cache");
    let marker = tmp.path().join("uv-pid");
    let mut slow = ocilambda(&cache);
    slow.env("PATH", hanging_uv(tmp.path(), &marker))
        .arg("build")
        .arg(&a)
        .args(["--base", &stand_in_base("3.11")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut slow = slow.spawn().unwrap();
    wait_for("uv pip install to start", || marker.exists());
    let held = staging_dirs(&cache);
    assert_eq!(held.len(), 1, "{held:?}");
    let out = run({
        let mut cmd = ocilambda(&cache);
        cmd.arg("build")
            .arg(&b)
            .args(["--base", &stand_in_base("3.11")]);
        cmd
    });
    assert_ok(&out);
    assert!(held[0].is_dir(), "the running build's staging dir was kept");
    slow.kill().unwrap();
    slow.wait().unwrap();
}

/// An environment where uv can neither find nor install Python 3.13, whatever this
/// machine has: no interpreter on PATH, an empty managed-install directory, and a
/// download mirror that refuses connections.
fn without_python_313(cmd: &mut Command, tmp: &Path) {
    let bin = tmp.join("uv-only");
    std::fs::create_dir_all(&bin).unwrap();
    let _ = std::os::unix::fs::symlink(real_uv(), bin.join("uv"));
    cmd.env("PATH", &bin)
        .env("UV_PYTHON_INSTALL_DIR", tmp.join("managed-pythons"))
        .env("UV_PYTHON_INSTALL_MIRROR", "http://127.0.0.1:9/")
        .env_remove("UV_PYTHON_DOWNLOADS");
}

/// Issue 9 item 22: without an interpreter of the target version, a build used to warn
/// and ship without bytecode, so the same commit gave another digest on a machine with
/// that Python. Now uv is asked to install one, and when it cannot, the build fails and
/// writes nothing; `--no-compile-bytecode` still builds.
#[test]
fn no_interpreter_for_bytecode_is_an_error_not_a_different_image() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let cache = tmp.path().join("cache");
    let args = ["--base", &stand_in_base("3.13"), "--python-version", "3.13"];
    for extra in [&[][..], &["--offline"][..]] {
        let out = run({
            let mut cmd = ocilambda(&cache);
            without_python_313(&mut cmd, tmp.path());
            cmd.arg("build").arg(&project).args(args).args(extra);
            cmd
        });
        let err = assert_user_error(&out, "no Python 3.13 interpreter to compile bytecode");
        assert!(err.contains("`uv python install 3.13`"), "{err}");
        assert!(err.contains("--no-compile-bytecode"), "{err}");
        assert!(!err.contains("warning:"), "{err}");
        assert!(
            !project.join(".ocilambda").exists(),
            "nothing written:\n{err}"
        );
    }
    let out = run({
        let mut cmd = ocilambda(&cache);
        cmd.arg("build")
            .arg(&project)
            .args(args)
            .arg("--no-compile-bytecode");
        cmd
    });
    assert_ok(&out);
    assert!(project.join(".ocilambda/image/index.json").is_file());
}
