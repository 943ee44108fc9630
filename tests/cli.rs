//! The CLI describing itself: `completions` scripts a shell accepts, `manpage` pages for
//! ocilambda and each command, and `--version`. No registry, no project.
mod common;

use std::process::Command;

use common::*;

fn ocilambda_in(dir: &std::path::Path) -> Command {
    ocilambda(&dir.join("cache"))
}

#[test]
fn bash_accepts_the_bash_completions_and_they_complete_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ocilambda_in(dir.path());
    cmd.args(["completions", "bash"]);
    let script = assert_ok(&run(cmd));
    for word in [
        "build",
        "push",
        "inspect",
        "--python-version",
        "--insecure-registry",
    ] {
        assert!(script.contains(word), "bash completions lack {word}");
    }
    let file = dir.path().join("ocilambda.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));

    // Sourced, it registers a completion function that answers `ocilambda bu<TAB>`.
    let probe = format!(
        "source {}; COMP_WORDS=(ocilambda bu); COMP_CWORD=1; COMP_LINE='ocilambda bu'; \
         COMP_POINT=${{#COMP_LINE}}; _ocilambda ocilambda bu ocilambda; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "build", "{}", stderr(&out));
}

#[test]
fn every_shell_gets_a_script_naming_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let mut cmd = ocilambda_in(dir.path());
        cmd.args(["completions", shell]);
        let script = assert_ok(&run(cmd));
        assert!(
            script.contains("verify") && script.contains("handler"),
            "{shell}"
        );
    }
    let mut cmd = ocilambda_in(dir.path());
    cmd.args(["completions", "tcsh"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn man_pages_exist_for_ocilambda_and_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ocilambda_in(dir.path());
    cmd.arg("manpage");
    let top = assert_ok(&run(cmd));
    assert!(top.contains(".TH ocilambda 1"), "{top}");
    for sub in [
        "build", "zip", "push", "inspect", "lint", "invoke", "verify",
    ] {
        assert!(
            top.contains(&format!("ocilambda\\-{sub}")),
            "top page lacks {sub}"
        );
        let mut cmd = ocilambda_in(dir.path());
        cmd.args(["manpage", sub]);
        let page = assert_ok(&run(cmd));
        assert!(page.contains(&format!(".TH ocilambda-{sub} 1 ")), "{page}");
    }
    let mut cmd = ocilambda_in(dir.path());
    cmd.args(["manpage", "bild"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no command `bild`") && err.contains("build"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn version_names_the_package_version_and_the_commit_of_a_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ocilambda_in(dir.path());
    cmd.arg("--version");
    let line = assert_ok(&run(cmd));
    let expected = format!("ocilambda {}", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected), "{line}");
    // Built from a git checkout (this repository), the commit follows: `(abcdef1 2026-12-07)`.
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "log", "-1", "--format=%h"])
        .output();
    if let Ok(head) = head
        && head.status.success()
    {
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(
            line.contains(&format!("({commit} ")),
            "{line} lacks {commit}"
        );
    }
}
