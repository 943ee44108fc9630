//! End-to-end tests of the audit commands: `inspect`, `diff`, `lint`, on images built
//! by `ocilambda build` against the stand-in bases in a real registry, and on hand-made
//! bad images.
mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

fn cmd(cache: &Path, args: &[&str]) -> Output {
    ocilambda(cache).args(args).output().expect("run ocilambda")
}

fn build(cache: &Path, project: &Path, layout: &Path, extra: &[&str]) -> String {
    let base = stand_in_base("3.11");
    let mut args = vec![
        "build",
        project.to_str().unwrap(),
        "--base",
        &base,
        "--output",
        layout.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    assert_ok(&cmd(cache, &args))
}

struct Fixture {
    tmp: tempfile::TempDir,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    Fixture { tmp, cache }
}

impl Fixture {
    fn project(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        copy_project("src-layout", &p);
        p
    }
    fn layout(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

#[test]
fn independent_builds_diff_as_identical() {
    let f = fixture();
    let (a, b) = (f.layout("a"), f.layout("b"));
    let da = build(&f.cache, &f.project("p1"), &a, &[]);
    // Another copy, another cache: an independent rebuild.
    let other_cache = f.tmp.path().join("cache2");
    let db = build(&other_cache, &f.project("p2"), &b, &[]);
    assert_eq!(da, db);
    let out = cmd(
        &f.cache,
        &["diff", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout_raw(&out));
    assert!(stdout_raw(&out).starts_with("identical sha256:"));
}

#[test]
fn app_edit_diff_names_exactly_that_file() {
    let f = fixture();
    let p = f.project("p");
    let (a, b) = (f.layout("a"), f.layout("b"));
    build(&f.cache, &p, &a, &["--no-compile-bytecode"]);
    let handler = p.join("src/pkgapp/handler.py");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&handler)
        .unwrap();
    writeln!(file, "# edited").unwrap();
    build(&f.cache, &p, &b, &["--no-compile-bytecode"]);
    let out = cmd(
        &f.cache,
        &["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["identical"], false);
    let files: Vec<(String, String)> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["where"].as_str().unwrap().starts_with("layer"))
        .map(|d| {
            (
                d["item"].as_str().unwrap().to_string(),
                d["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [(
            "var/task/pkgapp/handler.py".to_string(),
            "content".to_string()
        )]
    );
    // The human table names it too.
    let out = cmd(
        &f.cache,
        &["diff", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert!(
        stdout_raw(&out).contains("var/task/pkgapp/handler.py"),
        "{}",
        stdout_raw(&out)
    );
}

#[test]
fn changed_file_mode_is_reported_as_a_mode_change() {
    let f = fixture();
    let p = f.project("p");
    let (a, b) = (f.layout("a"), f.layout("b"));
    build(&f.cache, &p, &a, &[]);
    use std::os::unix::fs::PermissionsExt;
    let handler = p.join("src/pkgapp/handler.py");
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    build(&f.cache, &p, &b, &[]);
    let out = cmd(
        &f.cache,
        &["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    let mode = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["item"] == "var/task/pkgapp/handler.py" && d["what"] == "mode")
        .unwrap_or_else(|| panic!("no mode change in {v}"));
    assert_eq!(mode["a"], "0644");
    assert_eq!(mode["b"], "0755");
}

#[test]
fn inspect_shows_platform_handler_base_and_layers() {
    let f = fixture();
    let layout = f.layout("img");
    let digest = build(&f.cache, &f.project("p"), &layout, &[]);
    let out = cmd(
        &f.cache,
        &["inspect", layout.to_str().unwrap(), "--json", "--files"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["platform"], "linux/amd64");
    assert_eq!(v["handler"], "pkgapp.handler.handler");
    assert_eq!(v["base_name"], stand_in_base("3.11").as_str());
    let layers = v["layers"].as_array().unwrap();
    let app = layers.last().unwrap();
    assert!(app["created_by"].as_str().unwrap().contains("app sources"));
    let files: Vec<&str> = app["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.contains(&"var/task/pkgapp/handler.py"), "{files:?}");
    // Base layers are not in the layout (no --complete): --files fetched them.
    let base_files: Vec<&Value> = layers[..layers.len() - 2]
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap())
        .collect();
    assert!(
        base_files.iter().any(|f| *f == "lambda-entrypoint.sh"),
        "{base_files:?}"
    );
    let out = cmd(&f.cache, &["inspect", &format!("oci:{}", layout.display())]);
    assert!(
        stdout_raw(&out).contains("Handler    pkgapp.handler.handler"),
        "{}",
        stdout_raw(&out)
    );
}

#[test]
fn lint_passes_on_our_images() {
    let f = fixture();
    let layout = f.layout("img");
    build(&f.cache, &f.project("p"), &layout, &[]);
    let out = cmd(&f.cache, &["lint", layout.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_raw(&out));
    assert_eq!(stdout_json(&out)["findings"], serde_json::json!([]));
}

#[test]
fn lint_flags_an_index() {
    let f = fixture();
    let out = cmd(&f.cache, &["lint", &stand_in_base("3.11"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["findings"][0]["check"], "single-platform");
    assert!(v["findings"][0]["fix"].as_str().unwrap().len() > 10);
}

// ---------------------------------------------------------------------------
// Hand-made bad images: a good layout, then one change each.
// ---------------------------------------------------------------------------

/// A layer of `files`, under their parent directories.
fn tar_with(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let entries: Vec<TarEntry> = files
        .iter()
        .map(|(p, m, c)| TarEntry::File(p, *m, c))
        .collect();
    layer_tar(&entries, true)
}

fn lint_checks(f: &Fixture, layout: &Path) -> Vec<String> {
    let out = cmd(&f.cache, &["lint", layout.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout_raw(&out));
    stdout_json(&out)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["check"].as_str().unwrap().to_string())
        .collect()
}

fn good(f: &Fixture, name: &str) -> PathBuf {
    let layout = f.layout(name);
    build(&f.cache, &f.project(&format!("{name}-src")), &layout, &[]);
    layout
}

#[test]
fn lint_flags_a_zstd_layer() {
    let f = fixture();
    let layout = good(&f, "zstd");
    mutate_layout(
        &layout,
        |m, _| {
            // A base layer: the app layer stays readable, so only this is reported.
            m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
        },
        None,
    );
    assert_eq!(lint_checks(&f, &layout), ["compression"]);
}

#[test]
fn lint_flags_a_file_lambda_cannot_read() {
    let f = fixture();
    let layout = good(&f, "perm");
    mutate_layout(
        &layout,
        |_, _| {},
        Some(tar_with(&[("var/task/secret.json", 0o600, b"{}")])),
    );
    let out = cmd(&f.cache, &["lint", layout.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout_raw(&out).contains("/var/task/secret.json (0600)"),
        "{}",
        stdout_raw(&out)
    );
    assert_eq!(lint_checks(&f, &layout), ["permissions"]);
}

#[test]
fn lint_flags_a_missing_handler_module() {
    let f = fixture();
    let layout = good(&f, "handler");
    mutate_layout(
        &layout,
        |_, c| c["config"]["Cmd"] = serde_json::json!(["nothere.handler"]),
        None,
    );
    assert_eq!(lint_checks(&f, &layout), ["handler"]);
}

#[test]
fn lint_flags_bytecode_of_another_python() {
    let f = fixture();
    let layout = good(&f, "pyc");
    // A Python 3.10 header (magic 3439, unchecked-hash flags) in a 3.11 image.
    let mut pyc = Vec::new();
    pyc.extend_from_slice(&3439u16.to_le_bytes());
    pyc.extend_from_slice(b"\r\n");
    pyc.extend_from_slice(&1u32.to_le_bytes());
    pyc.extend_from_slice(&[0; 8]);
    mutate_layout(
        &layout,
        |_, _| {},
        Some(tar_with(&[(
            "var/task/pkgapp/__pycache__/old.cpython-310.pyc",
            0o644,
            &pyc,
        )])),
    );
    assert_eq!(lint_checks(&f, &layout), ["bytecode-version"]);
}

#[test]
fn lint_flags_config_that_does_not_match_the_layers() {
    let f = fixture();
    let layout = good(&f, "diffids");
    mutate_layout(
        &layout,
        |_, c| {
            c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
        },
        None,
    );
    assert!(lint_checks(&f, &layout).contains(&"diff-ids".to_string()));
}

#[test]
fn audit_commands_report_bad_input_with_exit_2() {
    let f = fixture();
    let out = cmd(&f.cache, &["inspect", "/nonexistent/layout"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("hint: "), "{err}");
    let out = cmd(
        &f.cache,
        &["diff", &stand_in_base("3.11"), &stand_in_base("3.11")],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "an index cannot be diffed as an image"
    );
}

// ---------------------------------------------------------------------------
// verify and the SBOM
// ---------------------------------------------------------------------------

#[test]
fn verify_reproduces_a_build_and_names_a_tampered_file() {
    let f = fixture();
    let p = f.project("p");
    let layout = f.layout("img");
    // Built with a flag the project config does not carry: verify must replay it from
    // what the image records.
    let digest = build(
        &f.cache,
        &p,
        &layout,
        &["--handler", "pkgapp.handler.handler"],
    );
    let out = cmd(
        &f.cache,
        &["verify", layout.to_str().unwrap(), p.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout_raw(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), format!("reproducible {digest}"));

    let handler = p.join("src/pkgapp/handler.py");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&handler)
        .unwrap();
    writeln!(file, "TAMPERED = True").unwrap();
    let out = cmd(
        &f.cache,
        &["verify", layout.to_str().unwrap(), p.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout_raw(&out));
    assert!(
        stdout_raw(&out).contains("var/task/pkgapp/handler.py"),
        "{}",
        stdout_raw(&out)
    );
}

#[test]
fn verify_refuses_an_image_without_provenance() {
    let f = fixture();
    let layout = good(&f, "noprov");
    mutate_layout(
        &layout,
        |m, _| m["annotations"] = serde_json::json!({}),
        None,
    );
    let out = cmd(
        &f.cache,
        &[
            "verify",
            layout.to_str().unwrap(),
            f.project("q").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("records no"));
}

/// `verify IMAGE PROJECT` with no other flag, asserted reproducible.
fn assert_verifies(cache: &Path, layout: &Path, project: &Path, digest: &str) {
    let out = cmd(
        cache,
        &[
            "verify",
            layout.to_str().unwrap(),
            project.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout_raw(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), format!("reproducible {digest}"));
}

fn manifest_annotations(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(blob_path(
            layout,
            index["manifests"][0]["digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    m["annotations"].clone()
}

#[test]
fn verify_replays_include_and_exclude_without_repeating_them() {
    let f = fixture();
    let p = f.project("p");
    std::fs::create_dir_all(p.join("src/notes")).unwrap();
    std::fs::write(p.join("src/notes/readme.txt"), "shipped by --include\n").unwrap();
    std::fs::write(p.join("src/pkgapp/scratch.py"), "LEFT_OUT = True\n").unwrap();
    let layout = f.layout("img");
    let digest = build(
        &f.cache,
        &p,
        &layout,
        &["--include", "notes/**", "--exclude", "pkgapp/scratch.py"],
    );
    assert_eq!(
        manifest_annotations(&layout)["dev.ocilambda.settings"],
        r#"{"exclude":["pkgapp/scratch.py"],"include":["notes/**"]}"#
    );
    assert_verifies(&f.cache, &layout, &p, &digest);

    // A default build records no settings: its bytes are those of the pinned builds.
    let plain = f.layout("plain");
    build(&f.cache, &p, &plain, &[]);
    assert!(manifest_annotations(&plain)["dev.ocilambda.settings"].is_null());
}

#[test]
fn verify_replays_package_without_repeating_it() {
    let f = fixture();
    let ws = f.tmp.path().join("ws");
    copy_project("workspace", &ws);
    let layout = f.layout("img");
    let digest = build(
        &f.cache,
        &ws,
        &layout,
        &["--package", "library", "--handler", "library.hello"],
    );
    assert_eq!(
        manifest_annotations(&layout)["dev.ocilambda.settings"],
        r#"{"package":"library"}"#
    );
    assert_verifies(&f.cache, &layout, &ws, &digest);
}

#[test]
fn verify_refuses_an_unknown_recorded_architecture() {
    let f = fixture();
    let layout = good(&f, "sparc");
    mutate_layout(&layout, |_, c| c["architecture"] = "sparc".into(), None);
    let out = cmd(
        &f.cache,
        &[
            "verify",
            layout.to_str().unwrap(),
            f.project("q").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown architecture `sparc`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn provenance_annotations_record_the_build_without_machine_details() {
    let f = fixture();
    let p = f.project("p");
    let layout = f.layout("img");
    build(&f.cache, &p, &layout, &[]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(blob_path(
            &layout,
            index["manifests"][0]["digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    let a = &m["annotations"];
    let lock = std::fs::read(p.join("uv.lock")).unwrap();
    assert_eq!(a["dev.ocilambda.uv-lock.sha256"], sha256_hex(&lock));
    assert_eq!(a["dev.ocilambda.handler"], "pkgapp.handler.handler");
    assert_eq!(a["dev.ocilambda.python"], "3.11");
    assert!(a["dev.ocilambda.uv"].as_str().unwrap().starts_with("0."));
    assert!(
        a["dev.ocilambda.bytecode"]
            .as_str()
            .unwrap()
            .starts_with("3.11.")
    );
    let text = serde_json::to_string(&m).unwrap();
    for machine in [
        p.to_str().unwrap(),
        f.cache.to_str().unwrap(),
        "/tmp",
        "/root",
        "/home",
    ] {
        assert!(!text.contains(machine), "manifest mentions {machine}");
    }
}

#[test]
fn sbom_is_deterministic_and_lists_exactly_the_installed_distributions() {
    let f = fixture();
    let sboms: Vec<Vec<u8>> = ["a", "b"]
        .iter()
        .map(|n| {
            let dir = f.tmp.path().join(format!("fa-{n}"));
            copy_project("fastapi-app", &dir);
            let layout = f.layout(&format!("sbom-{n}"));
            let cache = f.tmp.path().join(format!("cache-{n}"));
            build(&cache, &dir, &layout, &["--sbom"]);
            validate_layout(&layout);
            let index: Value =
                serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
            let entry = &index["manifests"][1];
            assert_eq!(entry["artifactType"], "application/vnd.cyclonedx+json");
            let art: Value = serde_json::from_slice(
                &std::fs::read(blob_path(&layout, entry["digest"].as_str().unwrap())).unwrap(),
            )
            .unwrap();
            assert_eq!(art["subject"]["digest"], index["manifests"][0]["digest"]);
            std::fs::read(blob_path(
                &layout,
                art["layers"][0]["digest"].as_str().unwrap(),
            ))
            .unwrap()
        })
        .collect();
    assert_eq!(sboms[0], sboms[1], "two builds, byte-identical SBOMs");
    let sbom: Value = serde_json::from_slice(&sboms[0]).unwrap();
    assert_eq!(sbom["specVersion"], "1.5");
    let mut listed: Vec<String> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}=={}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    // Independently: what `uv export` says the lock installs for this project.
    let export = std::process::Command::new("uv")
        .args([
            "export",
            "--locked",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
        ])
        .current_dir(f.tmp.path().join("fa-a"))
        .output()
        .unwrap();
    let mut expected: Vec<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(';').next().unwrap().trim().to_string())
        .filter(|l| !l.starts_with("colorama")) // win32-only: never installed on Lambda
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    for c in sbom["components"].as_array().unwrap() {
        assert_eq!(c["hashes"][0]["alg"], "SHA-256", "{c}");
    }
}

#[test]
fn pushed_image_verifies_and_its_sbom_is_a_referrer_behind_the_fallback_tag() {
    let f = fixture();
    let p = f.project("p");
    let layout = f.layout("img");
    let digest = build(&f.cache, &p, &layout, &["--sbom"]);
    let repo = format!("{}/audit-tests/sbom", shared_registry().addr);
    let out = cmd(
        &f.cache,
        &[
            "push",
            &format!("{repo}:v1"),
            "--layout",
            layout.to_str().unwrap(),
            "--project",
            p.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{repo}@{digest}"));

    // The tag still names the single-platform image manifest, not an index.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{repo}:v1"),
    ]);
    let tagged: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(tagged["mediaType"], OCI_MANIFEST);
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), digest);
    // distribution 2.8 has no referrers API: the tag-schema fallback lists the SBOM.
    let fallback = format!("docker://{repo}:sha256-{}", &digest[7..]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &fallback]);
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    validate(Schema::Index, &raw.stdout);
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.cyclonedx+json"
    );
    let sbom_manifest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!(
            "docker://{repo}@{}",
            index["manifests"][0]["digest"].as_str().unwrap()
        ),
    ]);
    let sbom_manifest: Value = serde_json::from_slice(&sbom_manifest.stdout).unwrap();
    assert_eq!(sbom_manifest["subject"]["digest"], digest.as_str());

    // An auditor verifies the registry image against the project.
    let out = cmd(
        &f.cache,
        &["verify", &format!("{repo}:v1"), p.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout_raw(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), format!("reproducible {digest}"));
}

#[test]
fn git_revision_and_source_are_recorded_without_credentials() {
    let f = fixture();
    let p = f.project("p");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-C"])
            .arg(&p)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://ci-bot:s3cr3t-token@git.example.com/team/fn.git",
    ]);
    let head = git(&["rev-parse", "HEAD"]);
    let layout = f.layout("img");
    build(&f.cache, &p, &layout, &[]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = std::fs::read(blob_path(
        &layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        m["annotations"]["org.opencontainers.image.revision"],
        head.as_str()
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.source"],
        "https://git.example.com/team/fn"
    );
    assert!(
        !String::from_utf8_lossy(&manifest).contains("s3cr3t"),
        "no credentials in the manifest"
    );
}

#[test]
fn lint_flags_a_handler_function_the_module_does_not_define() {
    let f = fixture();
    let layout = good(&f, "handler-function");
    mutate_layout(
        &layout,
        |_, c| {
            let handler = c["config"]["Cmd"][0].as_str().unwrap().to_string();
            let module = handler.rsplit_once('.').unwrap().0.to_string();
            c["config"]["Cmd"] = serde_json::json!([format!("{module}.nosuchfunc")]);
        },
        None,
    );
    assert_eq!(lint_checks(&f, &layout), ["handler-function"]);
}
