//! End-to-end tests of what `lint` catches that Lambda refuses or silently misreads, on
//! images derived from an `ocilambda build` the way other tools produce them (one layer
//! or one config change each), and of `push` refusing them before any upload.
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The src-layout project built once against the stand-in Python 3.11 base (amd64): each
/// test changes its own copy of the layout.
fn built() -> &'static (tempfile::TempDir, PathBuf) {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        copy_project("src-layout", &project);
        let layout = tmp.path().join("image");
        let out = ocilambda(&tmp.path().join("cache"))
            .args(["build", project.to_str().unwrap(), "--base"])
            .arg(stand_in_base("3.11"))
            .arg("--output")
            .arg(&layout)
            .output()
            .unwrap();
        assert_ok(&out);
        (tmp, layout)
    })
}

struct Case {
    tmp: tempfile::TempDir,
    layout: PathBuf,
}

impl Case {
    /// A fresh copy of the built layout.
    fn new() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("image");
        let status = Command::new("cp")
            .arg("-a")
            .arg(&built().1)
            .arg(&layout)
            .status()
            .unwrap();
        assert!(status.success());
        Case { tmp, layout }
    }

    fn cache(&self) -> PathBuf {
        // The build's cache, shared: lint fetches the base's layers into it once.
        built().0.path().join("cache")
    }

    fn with_layer(self, entries: &[TarEntry], parents: bool) -> Case {
        mutate_layout(&self.layout, |_, _| {}, Some(layer_tar(entries, parents)));
        self
    }

    fn lint(&self) -> (Option<i32>, Vec<Value>) {
        let out = ocilambda(&self.cache())
            .args(["lint", "--json"])
            .arg(&self.layout)
            .output()
            .unwrap();
        let findings = stdout_json(&out)["findings"].as_array().unwrap().clone();
        (out.status.code(), findings)
    }

    fn push(&self, repository: &str, extra: &[&str]) -> Output {
        let reference = format!("{}/{repository}:v1", shared_registry().addr);
        ocilambda(&self.cache())
            .args(["push", &reference, "--project"])
            .arg(self.tmp.path())
            .arg("--layout")
            .arg(&self.layout)
            .args(extra)
            .output()
            .unwrap()
    }
}

fn checks(findings: &[Value]) -> Vec<&str> {
    findings
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect()
}

fn message(findings: &[Value], check: &str) -> String {
    findings
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {findings:?}"))["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_clean_build_has_no_findings() {
    let (code, findings) = Case::new().lint();
    assert_eq!((code, findings), (Some(0), vec![]));
}

#[test]
fn a_layer_with_a_hard_link_is_an_error() {
    let case = Case::new().with_layer(
        &[
            TarEntry::File("var/task/data/a.json", 0o644, b"{}"),
            TarEntry::Hardlink("var/task/data/b.json", "var/task/data/a.json"),
        ],
        true,
    );
    let (code, findings) = case.lint();
    assert_eq!(code, Some(1));
    assert_eq!(checks(&findings), ["hardlink"]);
    assert!(
        message(&findings, "hardlink").contains("/var/task/data/b.json → /var/task/data/a.json")
    );
}

#[test]
fn an_entry_without_its_parent_directory_in_its_layer_is_an_error() {
    // /var/task exists in the app layer below; Lambda still wants it in this layer.
    let case = Case::new().with_layer(&[TarEntry::File("var/task/extra.txt", 0o644, b"x")], false);
    let (code, findings) = case.lint();
    assert_eq!(code, Some(1));
    assert_eq!(checks(&findings), ["parent-directory"]);
    assert!(
        message(&findings, "parent-directory")
            .contains("/var/task/extra.txt without /var/task before it")
    );
}

#[test]
fn a_pth_file_in_var_task_is_a_warning_naming_its_distribution() {
    let record = b"hook.pth,sha256=abc,12\nhook_pkg/__init__.py,,\nhook-1.0.dist-info/RECORD,,\n";
    let case = Case::new().with_layer(
        &[
            TarEntry::File("var/task/hook.pth", 0o644, b"import hook_pkg\n"),
            TarEntry::File("var/task/hook_pkg/__init__.py", 0o644, b""),
            TarEntry::File("var/task/hook-1.0.dist-info/RECORD", 0o644, record),
        ],
        true,
    );
    let (code, findings) = case.lint();
    assert_eq!(code, Some(0), "a warning alone passes");
    assert_eq!(checks(&findings), ["pth-file"]);
    assert_eq!(findings[0]["severity"], "warning");
    assert!(message(&findings, "pth-file").contains("/var/task/hook.pth (from hook 1.0)"));
}

/// A shared object built here (glibc 2.36) that needs `pthread_create@GLIBC_2.34`, as
/// anything linked against glibc 2.34+ calling it does.
fn needs_glibc_2_34(dir: &Path) -> Vec<u8> {
    let src = dir.join("needs234.c");
    std::fs::write(
        &src,
        "#include <pthread.h>\n\
         __asm__(\".symver pthread_create, pthread_create@GLIBC_2.34\");\n\
         static void *run(void *a) { return a; }\n\
         int start(void) { pthread_t t; return pthread_create(&t, 0, run, 0); }\n",
    )
    .unwrap();
    let so = dir.join("libneeds234.so");
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("gcc builds the test's shared object");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(so).unwrap()
}

#[test]
fn a_shared_object_needing_a_newer_glibc_than_python_3_11_is_an_error() {
    let case = Case::new();
    let so = needs_glibc_2_34(case.tmp.path());
    let record = b"fastz/_native.so,,\nfastz-2.1.dist-info/RECORD,,\n";
    let case = case.with_layer(
        &[
            TarEntry::File("var/task/fastz/_native.so", 0o755, &so),
            TarEntry::File("var/task/fastz-2.1.dist-info/RECORD", 0o644, record),
        ],
        true,
    );
    let (code, findings) = case.lint();
    assert_eq!(code, Some(1));
    assert_eq!(checks(&findings), ["glibc"]);
    let m = message(&findings, "glibc");
    assert!(
        m.contains("/var/task/fastz/_native.so (from fastz 2.1) needs GLIBC_2.34"),
        "{m}"
    );
    assert!(m.contains("Python 3.11 runtime's 2.26"), "{m}");
}

/// The 64-byte header of an aarch64 ELF shared object (no sections: nothing to link).
fn aarch64_elf() -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    h.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    h.extend_from_slice(&[0; 24]); // entry, phoff, shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 0, 64, 0, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(h.len(), 64);
    h
}

#[test]
fn an_aarch64_object_in_an_amd64_image_is_an_error() {
    let elf = aarch64_elf();
    let case = Case::new().with_layer(&[TarEntry::File("opt/lib/libfast.so.1", 0o755, &elf)], true);
    let (code, findings) = case.lint();
    assert_eq!(code, Some(1));
    assert_eq!(checks(&findings), ["elf-architecture"]);
    assert!(message(&findings, "elf-architecture").contains("/opt/lib/libfast.so.1 (aarch64)"));
}

#[test]
fn a_reserved_variable_in_the_env_is_a_warning() {
    let case = Case::new();
    mutate_layout(
        &case.layout,
        |_, c| {
            let env = c["config"]["Env"].as_array_mut().unwrap();
            env.push("AWS_REGION=eu-west-1".into());
            env.push("_HANDLER=other.handler".into());
        },
        None,
    );
    let (code, findings) = case.lint();
    assert_eq!(code, Some(0));
    assert_eq!(checks(&findings), ["reserved-env"]);
    let m = message(&findings, "reserved-env");
    assert!(m.contains("AWS_REGION") && m.contains("_HANDLER"), "{m}");
}

#[test]
fn push_refuses_an_image_with_lint_errors_before_uploading_anything() {
    let case = Case::new().with_layer(
        &[
            TarEntry::File("var/task/a.txt", 0o644, b"a"),
            TarEntry::Hardlink("var/task/b.txt", "var/task/a.txt"),
        ],
        true,
    );
    let out = case.push("lint-refused", &[]);
    let err = assert_user_error(&out, "hardlink");
    assert!(err.contains("--no-lint"), "{err}");
    assert!(stdout(&out).is_empty());
    // Nothing reached the registry: not even the repository exists.
    let tags = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/lint-refused", shared_registry().addr))
        .output()
        .unwrap();
    assert!(!tags.status.success(), "the repository was created");
    // --no-lint pushes it as it is.
    let out = case.push("lint-refused", &["--no-lint"]);
    let pushed = assert_ok(&out);
    assert!(pushed.contains("/lint-refused@sha256:"), "{pushed}");
}

#[test]
fn push_passes_a_clean_build_and_warnings_alone() {
    let case = Case::new();
    mutate_layout(
        &case.layout,
        |_, c| {
            let env = c["config"]["Env"].as_array_mut().unwrap();
            env.push("AWS_REGION=eu-west-1".into());
        },
        None,
    );
    let out = case.push("lint-warned", &[]);
    assert_ok(&out);
}

/// The entries of a gzip layer blob: (path without trailing `/`, entry type, content).
fn layer_entries(blob: &Path) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let file = std::fs::File::open(blob).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let kind = e.header().entry_type();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            (path, kind, content)
        })
        .collect()
}

/// Lambda refuses hard links and entries without their parent directory in the same layer:
/// no layer kind `build` writes (deps, workspace members, app) has either, even when the
/// project's files share an inode, and lint passes the image.
#[test]
fn build_writes_no_hard_link_and_every_parent_in_every_layer_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("ws");
    copy_project("workspace", &project);
    std::fs::write(project.join("app/util.py"), "SHARED = 1\n").unwrap();
    std::fs::hard_link(
        project.join("app/util.py"),
        project.join("app/util_copy.py"),
    )
    .unwrap();
    let layout = tmp.path().join("image");
    let cache = tmp.path().join("cache");
    let out = ocilambda(&cache)
        .args(["build", project.to_str().unwrap(), "--json", "--base"])
        .arg(stand_in_base("3.11"))
        .arg("--output")
        .arg(&layout)
        .output()
        .unwrap();
    let summary: Value = serde_json::from_str(&assert_ok(&out)).unwrap();
    let layers = summary["layers"].as_array().unwrap();
    let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["deps", "workspace", "app"]);
    for layer in layers {
        let kind = layer["kind"].as_str().unwrap();
        let entries = layer_entries(&blob_path(&layout, layer["digest"].as_str().unwrap()));
        assert!(entries.len() > 3, "{kind}: {} entries", entries.len());
        let mut dirs = std::collections::HashSet::new();
        for (path, entry_type, _) in &entries {
            assert_ne!(
                *entry_type,
                tar::EntryType::Link,
                "{kind}: {path} is a hard link"
            );
            if let Some((parent, _)) = path.rsplit_once('/') {
                assert!(
                    dirs.contains(parent),
                    "{kind}: {path} comes without {parent}"
                );
            }
            if *entry_type == tar::EntryType::Directory {
                dirs.insert(path.clone());
            }
        }
        if kind == "app" {
            for name in ["var/task/app/util.py", "var/task/app/util_copy.py"] {
                let (_, t, content) = entries.iter().find(|e| e.0 == name).unwrap();
                assert_eq!(
                    (*t, content.as_slice()),
                    (tar::EntryType::Regular, &b"SHARED = 1\n"[..])
                );
            }
        }
    }
    let out = ocilambda(&cache)
        .args(["lint", "--json"])
        .arg(&layout)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_raw(&out));
    assert_eq!(stdout_json(&out)["findings"], serde_json::json!([]));
}
