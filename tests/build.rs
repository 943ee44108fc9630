//! End-to-end tests of `ocilambda build` against a real registry (Debian's
//! docker-registry with stand-in Lambda bases), real uv, and independent readers
//! (skopeo, umoci, Python). See tests/common for the harness.
mod common;

use common::*;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

fn build_cmd(cache: &Path, project: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = ocilambda(cache);
    cmd.arg("build").arg(project).args(args);
    cmd
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(blob_path(layout, digest)).unwrap()
}

fn manifest(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

fn config(layout: &Path) -> Value {
    let m = manifest(layout);
    serde_json::from_slice(&blob(layout, m["config"]["digest"].as_str().unwrap())).unwrap()
}

fn layer_digests(layout: &Path) -> Vec<String> {
    manifest(layout)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// (path, mode, uid, gid, mtime, content) of every entry in a layer blob.
type Entry = (String, u32, u64, u64, u64, Vec<u8>);

fn layer_entries(layout: &Path, digest: &str) -> Vec<Entry> {
    let bytes = blob(layout, digest);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                content,
            )
        })
        .collect()
}

fn unpack(layout: &Path, dest: &Path) -> PathBuf {
    let bundle = dest.join("bundle");
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:latest", layout.display()),
        bundle.to_str().unwrap(),
    ]);
    bundle.join("rootfs")
}

struct Built {
    _dir: tempfile::TempDir,
    project: PathBuf,
    cache: PathBuf,
    layout: PathBuf,
    digest: String,
}

/// One complete build of the FastAPI example, shared by the tests that only read it.
fn fastapi_build() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("fastapi-app");
        copy_project("fastapi-app", &project);
        let cache = dir.path().join("cache");
        let layout = dir.path().join("layout");
        let out = run(build_cmd(
            &cache,
            &project,
            &[
                "--base",
                &stand_in_base("3.11"),
                "--complete",
                "--output",
                layout.to_str().unwrap(),
            ],
        ));
        let digest = assert_ok(&out);
        Built {
            project,
            cache,
            layout,
            digest,
            _dir: dir,
        }
    })
}

#[test]
fn fastapi_example_is_read_by_skopeo_umoci_and_the_schemas() {
    let b = fastapi_build();
    assert!(
        b.digest.starts_with("sha256:") && b.digest.len() == 71,
        "{}",
        b.digest
    );
    validate_layout(&b.layout);
    let index = std::fs::read(b.layout.join("index.json")).unwrap();
    validate(Schema::Index, &index);
    let m = manifest(&b.layout);
    validate(Schema::Manifest, &serde_json::to_vec(&m).unwrap());
    validate(
        Schema::Config,
        &blob(&b.layout, m["config"]["digest"].as_str().unwrap()),
    );
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&blob(&b.layout, &b.digest))),
        b.digest
    );

    let inspect = skopeo(&["inspect", &format!("oci:{}", b.layout.display())]);
    let inspect = stdout_json(&inspect);
    assert_eq!(inspect["Digest"], b.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:latest", b.layout.display()),
    ]);
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), b.digest);
}

#[test]
fn fastapi_example_handler_answers_from_the_unpacked_task_root() {
    let b = fastapi_build();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = unpack(&b.layout, tmp.path());
    let task = rootfs.join("var/task");
    assert!(task.join("app/main.py").is_file());
    assert!(task.join("fastapi/__init__.py").is_file());
    assert!(task.join("mangum").is_dir());
    // The base's files are there too: the layout is complete.
    assert!(rootfs.join("lambda-entrypoint.sh").is_file());
    let response = python_handler_response(&task, "app.main.handler", API_GATEWAY_EVENT);
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], "\"Hello, world!\"", "{response}");
}

#[test]
fn fastapi_example_config_keeps_the_base_and_adds_two_layers() {
    let b = fastapi_build();
    let c = config(&b.layout);
    let base_raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--override-arch",
        "amd64",
        &format!("docker://{}", stand_in_base("3.11")),
    ]);
    let base_index: Value = serde_json::from_slice(&base_raw.stdout).unwrap();
    let amd64 = base_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["platform"]["architecture"] == "amd64")
        .unwrap();
    let base_config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!(
            "docker://{}/lambda/python@{}",
            shared_registry().addr,
            amd64["digest"].as_str().unwrap()
        ),
    ]);
    let base_config: Value = serde_json::from_slice(&base_config.stdout).unwrap();

    assert_eq!(c["config"]["Cmd"], serde_json::json!(["app.main.handler"]));
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["/lambda-entrypoint.sh"])
    );
    assert_eq!(c["config"]["WorkingDir"], "/var/task");
    assert_eq!(c["config"]["Env"], base_config["config"]["Env"]);
    let env: Vec<&str> = c["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"LAMBDA_TASK_ROOT=/var/task"));
    assert!(env.contains(&"LAMBDA_RUNTIME_DIR=/var/runtime"));
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["os"], "linux");
    assert_eq!(c["created"], "1970-01-01T00:00:00Z");

    let base_layers = base_config["rootfs"]["diff_ids"].as_array().unwrap().len();
    let diff_ids = c["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), base_layers + 2, "exactly two new layers");
    assert_eq!(
        &diff_ids[..base_layers],
        &base_config["rootfs"]["diff_ids"].as_array().unwrap()[..]
    );
    let history = c["history"].as_array().unwrap();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(non_empty, diff_ids.len(), "one history entry per layer");
    assert_eq!(layer_digests(&b.layout).len(), diff_ids.len());

    let m = manifest(&b.layout);
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.name"],
        stand_in_base("3.11").as_str()
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.digest"],
        amd64["digest"]
    );
    assert!(serde_json::to_vec(&m).unwrap().len() < 25_400);
}

#[test]
fn layers_are_normalised_tars_under_var_task() {
    let b = fastapi_build();
    let layers = layer_digests(&b.layout);
    for digest in &layers[layers.len() - 2..] {
        let entries = layer_entries(&b.layout, digest);
        assert!(!entries.is_empty());
        // Sorted by path (directory names without their trailing slash), which also
        // puts every directory before its contents.
        let paths: Vec<&str> = entries.iter().map(|e| e.0.trim_end_matches('/')).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "entries sorted by path");
        assert_eq!(entries[0].0, "var/");
        assert_eq!(entries[1].0, "var/task/");
        for (path, mode, uid, gid, mtime, _) in &entries {
            assert!(path.starts_with("var/"), "{path}");
            assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{path}");
            assert!(
                [0o755, 0o644, 0o777].contains(mode),
                "{path} has mode {mode:o}"
            );
            if path.ends_with('/') {
                assert_eq!(*mode, 0o755, "{path}");
            }
        }
    }
}

#[test]
fn bytecode_is_unchecked_hash_for_the_target_version_with_task_root_paths() {
    let b = fastapi_build();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = unpack(&b.layout, tmp.path());
    let task = rootfs.join("var/task");
    let pyc = task.join("app/__pycache__/main.cpython-311.pyc");
    assert!(pyc.is_file(), "app bytecode present");
    assert!(
        task.join("fastapi/__pycache__/__init__.cpython-311.pyc")
            .is_file()
    );
    // Python itself reads the headers and the embedded path.
    let check = r#"
import importlib.util, marshal, sys, pathlib
bad = []
for p in pathlib.Path(sys.argv[1]).rglob("*.pyc"):
    data = p.read_bytes()
    if data[:4] != importlib.util.MAGIC_NUMBER:
        bad.append(f"{p}: magic")
    if int.from_bytes(data[4:8], "little") != 1:
        bad.append(f"{p}: flags {int.from_bytes(data[4:8], 'little')} (want unchecked-hash)")
code = marshal.loads(pathlib.Path(sys.argv[2]).read_bytes()[16:])
print(code.co_filename)
print(len(bad))
print("\n".join(bad[:5]))
"#;
    let out = std::process::Command::new(host_python())
        .args(["-c", check])
        .arg(&task)
        .arg(&pyc)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("/var/task/app/main.py"), "{text}");
    assert_eq!(lines.next(), Some("0"), "{text}");
    // No .pyc of another Python version.
    let foreign = walk(&task)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pyc"))
        .filter(|p| !p.to_string_lossy().contains(".cpython-311."))
        .count();
    assert_eq!(foreign, 0);

    // Importing loads the shipped bytecode instead of recompiling.
    let out = std::process::Command::new(host_python())
        .current_dir(&task)
        .env("PYTHONPATH", &task)
        .args(["-S", "-v", "-c", "import app.main"])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{verbose}");
    let main_pyc = format!("code object from '{}'", pyc.display());
    assert!(
        verbose.contains(&main_pyc),
        "app.main not loaded from its .pyc"
    );
    assert!(!verbose.contains("# wrote"), "something was recompiled");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn no_file_contains_a_build_machine_path() {
    let b = fastapi_build();
    let python_prefix = std::process::Command::new(host_python())
        .args(["-c", "import sys; print(sys.base_prefix)"])
        .output()
        .unwrap();
    let python_prefix = stdout(&python_prefix);
    let needles = [
        b.project.to_string_lossy().into_owned(),
        b.cache.to_string_lossy().into_owned(),
        python_prefix,
        "/tmp/".to_string(),
    ];
    let layers = layer_digests(&b.layout);
    let mut checked = 0;
    for digest in &layers[layers.len() - 2..] {
        for (path, _, _, _, _, content) in layer_entries(&b.layout, digest) {
            let text = String::from_utf8_lossy(&content);
            for n in &needles {
                assert!(
                    !text.contains(n.as_str()),
                    "{path} contains the build-machine path {n}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "checked {checked} entries");
    let script = layer_entries(&b.layout, &layers[layers.len() - 2])
        .into_iter()
        .find(|e| e.0 == "var/task/bin/fastapi")
        .expect("console script");
    assert!(String::from_utf8_lossy(&script.5).starts_with("#!/var/lang/bin/python3.11\n"));
}

#[test]
fn builds_are_reproducible_across_paths_mtimes_umask_and_caches() {
    let b = fastapi_build();
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("elsewhere/deeper/project");
    copy_project("fastapi-app", &project);
    // Different mtimes and a different umask than the shared build.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for f in walk(&project) {
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("umask 077; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_ocilambda"))
        .args([
            "build",
            project.to_str().unwrap(),
            "--base",
            &stand_in_base("3.11"),
        ])
        .env("OCILAMBDA_CACHE_DIR", tmp.path().join("other-cache"))
        .env("NO_COLOR", "1");
    let digest = assert_ok(&run(cmd));
    assert_eq!(
        digest, b.digest,
        "same project, other path/mtimes/umask/cache: same digest"
    );
    // Without --complete the layout lacks base blobs but names the same manifest.
    let layout = project.join(".ocilambda/image");
    assert!(!blob_path(&layout, &layer_digests(&layout)[0]).exists());
    validate_layout(&layout);
}

#[test]
fn app_only_edit_changes_only_the_app_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let cache = tmp.path().join("cache");
    let first = assert_ok(&run(build_cmd(
        &cache,
        &project,
        &["--base", &stand_in_base("3.11")],
    )));
    let layout = project.join(".ocilambda/image");
    let before = layer_digests(&layout);
    let main = project.join("app/main.py");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("Hello, world!", "Hello, edit!");
    std::fs::write(&main, text).unwrap();
    let out = run(build_cmd(
        &cache,
        &project,
        &["--base", &stand_in_base("3.11")],
    ));
    let second = assert_ok(&out);
    assert_ne!(first, second);
    let after = layer_digests(&layout);
    assert_eq!(before.len(), after.len());
    assert_eq!(
        before[..before.len() - 1],
        after[..after.len() - 1],
        "only the app layer differs"
    );
    assert_ne!(before.last(), after.last());
    let err = stderr(&out);
    assert!(err.contains("Reused deps layer"), "{err}");
    assert!(
        !err.contains("Using uv"),
        "no uv process for an app-only edit:\n{err}"
    );
    // A no-change rebuild gives the same digest.
    assert_eq!(
        assert_ok(&run(build_cmd(
            &cache,
            &project,
            &["--base", &stand_in_base("3.11")]
        ))),
        second
    );
}

#[test]
fn workspace_member_gets_its_own_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("ws");
    copy_project("workspace", &project);
    let layout = tmp.path().join("layout");
    let out = run(build_cmd(
        &tmp.path().join("cache"),
        &project,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--complete",
            "--output",
            layout.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_ok(&out);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deps", "workspace", "app"]);
    validate_layout(&layout);
    let layers = layer_digests(&layout);
    let members = layer_entries(&layout, &layers[layers.len() - 2]);
    assert!(
        members
            .iter()
            .any(|e| e.0 == "var/task/library/__init__.py"),
        "library in the members layer"
    );
    let deps = layer_entries(&layout, &layers[layers.len() - 3]);
    assert!(
        !deps.iter().any(|e| e.0.starts_with("var/task/library")),
        "library not in the deps layer"
    );
    let rootfs = unpack(&layout, tmp.path());
    let response = python_handler_response(
        &rootfs.join("var/task"),
        "app.main.handler",
        API_GATEWAY_EVENT,
    );
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], "\"Hello from library!\"", "{response}");
}

#[test]
fn src_layout_packaged_project_is_copied_as_app_code() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("pkg");
    copy_project("src-layout", &project);
    let layout = tmp.path().join("layout");
    assert_ok(&run(build_cmd(
        &tmp.path().join("cache"),
        &project,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--complete",
            "--output",
            layout.to_str().unwrap(),
        ],
    )));
    let rootfs = unpack(&layout, tmp.path());
    let task = rootfs.join("var/task");
    assert!(task.join("pkgapp/handler.py").is_file());
    assert!(!task.join("src").exists());
    let response = python_handler_response(&task, "pkgapp.handler.handler", "{}");
    assert_eq!(response, serde_json::json!({"ok": true, "six": "1.17.0"}));
}

#[test]
fn arm64_build_picks_the_arm64_base_and_aarch64_wheels() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let out = run(build_cmd(
        &tmp.path().join("cache"),
        &project,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--arch",
            "arm64",
            "--json",
        ],
    ));
    assert_ok(&out);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layout = project.join(".ocilambda/image");
    let c = config(&layout);
    assert_eq!(c["architecture"], "arm64");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", stand_in_base("3.11")),
    ]);
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["platform"]["architecture"] == "arm64")
        .unwrap();
    assert_eq!(summary["base"]["digest"], arm["digest"]);
    assert_eq!(
        manifest(&layout)["annotations"]["org.opencontainers.image.base.digest"],
        arm["digest"]
    );
    let layers = layer_digests(&layout);
    let deps = layer_entries(&layout, &layers[layers.len() - 2]);
    let so: Vec<&Entry> = deps.iter().filter(|e| e.0.ends_with(".so")).collect();
    assert!(!so.is_empty(), "pydantic-core ships a native module");
    for (path, .., content) in so {
        assert_eq!(&content[..4], b"\x7fELF", "{path}");
        let machine = u16::from_le_bytes([content[18], content[19]]);
        assert_eq!(machine, 183, "{path} is not aarch64 (e_machine {machine})");
    }
}

#[test]
fn docker_schema2_base_is_accepted_and_converted_to_oci_types() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let layout = tmp.path().join("layout");
    let docker_base = format!("{}/lambda/python-docker:3.11", shared_registry().addr);
    assert_ok(&run(build_cmd(
        &tmp.path().join("cache"),
        &project,
        &[
            "--base",
            &docker_base,
            "--complete",
            "--output",
            layout.to_str().unwrap(),
        ],
    )));
    validate_layout(&layout);
    let m = manifest(&layout);
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG);
    skopeo(&["inspect", &format!("oci:{}", layout.display())]);
}

#[test]
fn offline_build_uses_the_cache_and_fails_clearly_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let cache = tmp.path().join("cache");
    let online = assert_ok(&run(build_cmd(
        &cache,
        &project,
        &["--base", &stand_in_base("3.11")],
    )));
    let offline = assert_ok(&run(build_cmd(
        &cache,
        &project,
        &["--base", &stand_in_base("3.11"), "--offline"],
    )));
    assert_eq!(online, offline);
    let out = run(build_cmd(
        &tmp.path().join("empty-cache"),
        &project,
        &["--base", &stand_in_base("3.11"), "--offline"],
    ));
    assert_user_error(&out, "never been resolved");
}

#[test]
fn two_builds_sharing_a_cache_at_once_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut children = Vec::new();
    for i in 0..2 {
        let project = tmp.path().join(format!("p{i}"));
        copy_project("src-layout", &project);
        children.push(
            build_cmd(&cache, &project, &["--base", &stand_in_base("3.11")])
                .spawn()
                .unwrap(),
        );
    }
    let digests: Vec<String> = children
        .into_iter()
        .map(|c| assert_ok(&c.wait_with_output().unwrap()))
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn json_summary_lists_digest_layers_base_and_timings() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let out = run(build_cmd(
        &tmp.path().join("cache"),
        &project,
        &["--base", &stand_in_base("3.11"), "--json"],
    ));
    assert_ok(&out);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout");
    let s: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        s["digest"],
        layer_manifest_digest(&project.join(".ocilambda/image"))
    );
    assert_eq!(s["python"], "3.11");
    assert_eq!(s["arch"], "x86_64");
    assert_eq!(s["base"]["name"], stand_in_base("3.11").as_str());
    for l in s["layers"].as_array().unwrap() {
        assert!(l["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(l["size"].as_u64().unwrap() > 0);
    }
    assert!(s["timings_ms"]["total"].as_u64().is_some());
}

fn layer_manifest_digest(layout: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------
// Bad input: one line of cause, a hint, exit 2, nothing written.
// ---------------------------------------------------------------------------

/// Run a build expected to fail and check that it wrote no layout.
fn failing_build(project: &Path, args: &[&str], needle: &str) -> Output {
    let cache = project.parent().unwrap().join("cache");
    let out = run(build_cmd(&cache, project, args));
    assert_user_error(&out, needle);
    assert!(
        !project.join(".ocilambda/image").exists(),
        "no partial output"
    );
    out
}

fn project_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project(name, &project);
    (tmp, project)
}

#[test]
fn missing_pyproject_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("empty");
    std::fs::create_dir(&project).unwrap();
    failing_build(&project, &[], "no pyproject.toml");
}

#[test]
fn missing_lock_is_an_error() {
    let (_t, p) = project_copy("src-layout");
    std::fs::remove_file(p.join("uv.lock")).unwrap();
    let out = failing_build(&p, &["--base", &stand_in_base("3.11")], "no uv.lock");
    assert!(stderr(&out).contains("uv lock"));
}

#[test]
fn stale_lock_is_an_error_that_says_to_relock() {
    let (_t, p) = project_copy("src-layout");
    let py = std::fs::read_to_string(p.join("pyproject.toml")).unwrap();
    std::fs::write(
        p.join("pyproject.toml"),
        py.replace(
            "dependencies = [\"six\"]",
            "dependencies = [\"six\", \"idna\"]",
        ),
    )
    .unwrap();
    let out = failing_build(&p, &["--base", &stand_in_base("3.11")], "out of date");
    assert!(stderr(&out).contains("uv lock"));
}

#[test]
fn missing_handler_and_missing_module_are_errors() {
    let (_t, p) = project_copy("src-layout");
    let py = std::fs::read_to_string(p.join("pyproject.toml")).unwrap();
    std::fs::write(
        p.join("pyproject.toml"),
        py.replace("handler = \"pkgapp.handler.handler\"\n", ""),
    )
    .unwrap();
    failing_build(
        &p,
        &["--base", &stand_in_base("3.11")],
        "no handler configured",
    );
    failing_build(
        &p,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--handler",
            "pkgapp.nothere.handler",
        ],
        "pkgapp.nothere",
    );
    failing_build(
        &p,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--handler",
            "missing.handler",
        ],
        "`missing`",
    );
}

#[test]
fn target_outside_requires_python_names_both() {
    let (_t, p) = project_copy("src-layout");
    let out = failing_build(
        &p,
        &["--base", &stand_in_base("3.11"), "--python-version", "3.10"],
        "3.10",
    );
    assert!(stderr(&out).contains(">=3.11"));
}

#[test]
fn unknown_config_key_suggests_the_right_one() {
    let (_t, p) = project_copy("src-layout");
    let py = std::fs::read_to_string(p.join("pyproject.toml")).unwrap();
    std::fs::write(
        p.join("pyproject.toml"),
        py.replace("python-version =", "pyhton-version ="),
    )
    .unwrap();
    let out = failing_build(&p, &["--base", &stand_in_base("3.11")], "pyhton-version");
    assert!(
        stderr(&out).contains("did you mean `python-version`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn base_problems_are_errors() {
    let (_t, p) = project_copy("src-layout");
    let reg = &shared_registry().addr;
    failing_build(
        &p,
        &["--base", &format!("{reg}/lambda/nothing:3.11")],
        "not found",
    );
    failing_build(
        &p,
        &["--base", &format!("{reg}/lambda/python-arm64only:3.11")],
        "no manifest for linux/amd64",
    );
    failing_build(
        &p,
        &["--base", "Not A Reference"],
        "invalid image reference",
    );
}

#[test]
fn no_wheel_for_the_runtime_glibc_names_package_glibc_and_fix() {
    // numpy 2.4 publishes only manylinux_2_27+ aarch64 wheels for cp311; Lambda
    // python3.11 (Amazon Linux 2, glibc 2.26) cannot load them.
    let (_t, p) = project_copy("numpy-arm64");
    let out = failing_build(
        &p,
        &["--base", &stand_in_base("3.11")],
        "no wheel of `numpy`",
    );
    let err = stderr(&out);
    assert!(err.contains("glibc 2.26"), "{err}");
    assert!(err.contains("Python 3.12+"), "{err}");
}

/// uv names the requirement with its marker (`numpy{python_full_version < '3.12'}==2.4.1
/// has no usable wheels`): the hint must survive that form too (issue 9 item 20).
#[test]
fn no_wheel_for_the_runtime_glibc_is_recognised_behind_a_marker() {
    let (_t, p) = project_copy("numpy-arm64-marker");
    let out = failing_build(
        &p,
        &["--base", &stand_in_base("3.11")],
        "no wheel of `numpy`",
    );
    assert!(stderr(&out).contains("glibc 2.26"), "{}", stderr(&out));
}

#[test]
fn native_source_build_is_refused_naming_the_package() {
    let (_t, p) = project_copy("native-member");
    let out = failing_build(
        &p,
        &["--base", &stand_in_base("3.11")],
        "`cext-0.1.0` was built from source",
    );
    assert!(stderr(&out).contains("linux_x86_64"));
}

#[test]
fn symlink_escaping_the_project_is_refused() {
    let (_t, p) = project_copy("src-layout");
    std::os::unix::fs::symlink("/etc/passwd", p.join("src/pkgapp/passwd")).unwrap();
    failing_build(&p, &["--base", &stand_in_base("3.11")], "points outside");
}

#[test]
fn missing_uv_is_an_error() {
    let (_t, p) = project_copy("src-layout");
    let mut cmd = build_cmd(
        &p.parent().unwrap().join("cache"),
        &p,
        &["--base", &stand_in_base("3.11")],
    );
    cmd.env("PATH", "/nonexistent");
    let out = run(cmd);
    assert_user_error(&out, "uv is not installed");
}

#[test]
fn failed_rebuild_keeps_the_previous_layout() {
    let (_t, p) = project_copy("src-layout");
    let cache = p.parent().unwrap().join("cache");
    let digest = assert_ok(&run(build_cmd(
        &cache,
        &p,
        &["--base", &stand_in_base("3.11")],
    )));
    let out = run(build_cmd(
        &cache,
        &p,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--handler",
            "pkgapp.gone.handler",
        ],
    ));
    assert_user_error(&out, "pkgapp.gone");
    assert_eq!(layer_manifest_digest(&p.join(".ocilambda/image")), digest);
    validate_layout(&p.join(".ocilambda/image"));
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run({
        let mut c = ocilambda(tmp.path());
        c.args(["build", "--no-such-flag"]);
        c
    });
    assert_eq!(out.status.code(), Some(2));
    let (_t, p) = project_copy("src-layout");
    failing_build(
        &p,
        &["--base", &stand_in_base("3.11"), "--arch", "sparc"],
        "unknown architecture `sparc`",
    );
}

#[test]
fn cached_tag_resolution_is_reused_until_pull_or_ttl() {
    let reg = &shared_registry().addr;
    let moving = format!("{reg}/build-tests/moving:3.11");
    let copy = |from: &str| {
        skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/lambda/{from}"),
            &format!("docker://{moving}"),
        ]);
    };
    let (_t, p) = project_copy("src-layout");
    let cache = p.parent().unwrap().join("cache");
    let base_of = |args: &[&str]| -> String {
        let mut all = vec!["--base", moving.as_str(), "--json"];
        all.extend_from_slice(args);
        let out = run(build_cmd(&cache, &p, &all));
        assert_ok(&out);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        s["base"]["resolved"].as_str().unwrap().to_string()
    };
    // The tag moves between two different images of the same Python (a base of another
    // Python is refused, whatever the cache says): the multi-arch index and the
    // single-arch Docker-format image.
    copy("python:3.11");
    let first = base_of(&[]);
    copy("python-docker:3.11");
    assert_eq!(
        base_of(&[]),
        first,
        "within the TTL the cached resolution is used"
    );
    let pulled = base_of(&["--pull"]);
    assert_ne!(pulled, first, "--pull resolves the tag again");
    copy("python:3.11");
    assert_eq!(
        base_of(&["--base-ttl", "0"]),
        first,
        "a zero TTL always re-resolves"
    );
}

#[test]
fn output_that_is_not_a_layout_is_never_replaced() {
    let (_t, p) = project_copy("src-layout");
    let keep = p.parent().unwrap().join("dist");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("important.txt"), b"keep me").unwrap();
    let out = run(build_cmd(
        &p.parent().unwrap().join("cache"),
        &p,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--output",
            keep.to_str().unwrap(),
        ],
    ));
    assert_user_error(&out, "is not an OCI image layout");
    assert_eq!(
        std::fs::read(keep.join("important.txt")).unwrap(),
        b"keep me"
    );
    // The project directory itself, as --output, is refused too.
    let out = run(build_cmd(
        &p.parent().unwrap().join("cache"),
        &p,
        &[
            "--base",
            &stand_in_base("3.11"),
            "--output",
            p.to_str().unwrap(),
        ],
    ));
    assert_user_error(&out, "is not an OCI image layout");
    assert!(p.join("pyproject.toml").is_file());
}

#[test]
fn package_builds_a_workspace_members_lambda_into_the_project_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("ws");
    copy_project("workspace", &project);
    let cache = tmp.path().join("cache");
    let args = [
        "--base",
        &stand_in_base("3.11"),
        "--package",
        "library",
        "--handler",
        "library.hello",
        "--json",
    ];
    let out = run(build_cmd(&cache, &project, &args));
    assert_ok(&out);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    // library depends on no other member (the workspace root is not its dependency).
    assert_eq!(kinds, ["deps", "app"]);
    // Written where push and invoke look: <PROJECT_DIR>/.ocilambda/image.
    let layout = project.join(".ocilambda/image");
    assert_eq!(
        layer_manifest_digest(&layout),
        summary["digest"].as_str().unwrap()
    );
    assert!(!project.join("library/.ocilambda").exists());
    let layers = layer_digests(&layout);
    let app = layer_entries(&layout, layers.last().unwrap());
    assert!(
        app.iter().any(|e| e.0 == "var/task/library/__init__.py"),
        "member sources from its src/"
    );
    assert!(
        !app.iter().any(|e| e.0.starts_with("var/task/app/")),
        "not the root's app"
    );
    // An app-only edit of the member starts no uv process.
    let init = project.join("library/src/library/__init__.py");
    let text = std::fs::read_to_string(&init).unwrap() + "\n# edited\n";
    std::fs::write(&init, text).unwrap();
    let out = run(build_cmd(&cache, &project, &args));
    assert_ok(&out);
    assert!(!stderr(&out).contains("Using uv"), "{}", stderr(&out));
}

/// Every blob file in a layout.
fn blob_names(layout: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn build_into_a_shared_layout_keeps_other_images_and_files() {
    let reg = &shared_registry().addr;
    let (_t, p) = project_copy("src-layout");
    let cache = p.parent().unwrap().join("cache");
    let dir = p.parent().unwrap().join("shared-layout");
    let dir_s = dir.to_str().unwrap();
    for (from, tag) in [("3.11", "base311"), ("3.12", "myapp-v1")] {
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reg}/lambda/python:{from}"),
            &format!("oci:{dir_s}:{tag}"),
        ]);
    }
    std::fs::write(dir.join("NOTES.txt"), b"mine").unwrap();
    let theirs = blob_names(&dir);
    let build = |handler_edit: &str| {
        std::fs::write(p.join("src/pkgapp/edit.py"), handler_edit).unwrap();
        assert_ok(&run(build_cmd(
            &cache,
            &p,
            &["--base", &stand_in_base("3.11"), "--output", dir_s],
        )))
    };
    let first = build("A = 1\n");
    let after_first = blob_names(&dir);
    assert!(
        after_first.is_superset(&theirs),
        "no blob of theirs removed"
    );
    let second = build("A = 2\n");
    assert_ne!(first, second);
    let after_second = blob_names(&dir);
    assert!(
        after_second.is_superset(&theirs),
        "no blob of theirs removed"
    );
    // The first build's own blobs (its manifest, config, app layer) are gone with it.
    assert!(!after_second.contains(first.trim().trim_start_matches("sha256:")));
    assert_eq!(std::fs::read(dir.join("NOTES.txt")).unwrap(), b"mine");
    for tag in ["base311", "myapp-v1", "latest"] {
        skopeo(&["inspect", &format!("oci:{dir_s}:{tag}")]);
    }
    let inspected = skopeo(&["inspect", "--raw", &format!("oci:{dir_s}:latest")]);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&inspected.stdout)),
        second.trim()
    );
    validate_layout(&dir);

    // A `latest` that another tool put there is not ocilambda's to replace.
    let foreign = p.parent().unwrap().join("foreign-latest");
    let foreign_s = foreign.to_str().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reg}/lambda/python:3.11"),
        &format!("oci:{foreign_s}:latest"),
    ]);
    let index_before = std::fs::read(foreign.join("index.json")).unwrap();
    let out = run(build_cmd(
        &cache,
        &p,
        &["--base", &stand_in_base("3.11"), "--output", foreign_s],
    ));
    assert_user_error(&out, "that ocilambda did not build");
    assert_eq!(
        std::fs::read(foreign.join("index.json")).unwrap(),
        index_before
    );
}

// ---------------------------------------------------------------------------
// What the app sources may hold (issue 9: Trust)
// ---------------------------------------------------------------------------

#[test]
fn links_resolving_outside_the_task_root_or_looping_are_refused() {
    let (_t, p) = project_copy("src-layout");
    let pkg = p.join("src/pkgapp");
    let base = stand_in_base("3.11");
    let cases: [(&[(&str, &str)], &str); 4] = [
        // Lexically `d/../..` is the package's parent; through `d -> .` it is /var/task/..
        (&[("d", "."), ("t", "d/../..")], "points outside"),
        (&[("a", "b"), ("b", "a")], "loop of links"),
        (&[("self", "self")], "loop of links"),
        (&[("d", ".")], "contains the link"),
    ];
    for (links, needle) in cases {
        for (link, target) in links {
            std::os::unix::fs::symlink(target, pkg.join(link)).unwrap();
        }
        failing_build(&p, &["--base", &base], needle);
        for (link, _) in links {
            std::fs::remove_file(pkg.join(link)).unwrap();
        }
    }
}

#[test]
fn a_name_that_is_not_utf8_can_be_excluded() {
    use std::os::unix::ffi::OsStrExt;
    let (_t, p) = project_copy("src-layout");
    let dir = p
        .join("src/pkgapp")
        .join(std::ffi::OsStr::from_bytes(b"d\xe9j\xe0"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    let base = stand_in_base("3.11");
    let out = failing_build(&p, &["--base", &base], "not UTF-8");
    assert!(stderr(&out).contains("--exclude"), "{}", stderr(&out));
    let cache = p.parent().unwrap().join("cache");
    let out = run(build_cmd(
        &cache,
        &p,
        &["--base", &base, "--exclude", "pkgapp/d*"],
    ));
    assert_ok(&out);
}

#[test]
fn too_deep_a_tree_is_refused_in_one_line_without_a_traceback() {
    let (_t, p) = project_copy("src-layout");
    // 1,500 levels: under PATH_MAX, so it reaches the bytecode compiler unless refused.
    let make = std::process::Command::new(host_python())
        .arg("-c")
        .arg("import os, sys\nos.chdir(sys.argv[1])\nfor _ in range(1500):\n    os.mkdir('d'); os.chdir('d')\nopen('deep.py', 'w').close()")
        .arg(p.join("src/pkgapp"))
        .status()
        .unwrap();
    assert!(make.success());
    let out = failing_build(&p, &["--base", &stand_in_base("3.11")], "directories deep");
    let err = stderr(&out);
    assert!(
        !err.contains("Traceback") && !err.contains("RecursionError"),
        "{err}"
    );
    assert!(err.lines().all(|l| l.len() < 400), "short lines:\n{err}");
}
