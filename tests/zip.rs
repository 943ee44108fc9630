//! End-to-end tests of `ocilambda zip`: real uv, the seed's FastAPI example, and Python's
//! zipfile as the independent reader (listing, attributes, extraction); handlers run with
//! real Python from the extracted zips. See tests/common for the harness.
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn zip_cmd(cache: &Path, project: &Path, args: &[&str]) -> Command {
    let mut cmd = ocilambda(cache);
    cmd.arg("zip").arg(project).args(args);
    cmd
}

const ZIP_READER: &str = r#"
import json, marshal, struct, sys, zipfile

z = zipfile.ZipFile(sys.argv[1])
raw = open(sys.argv[1], "rb").read()
out = []
for i in z.infolist():
    # The local header's own extra field length (zipfile only exposes the central one).
    local_extra = struct.unpack("<H", raw[i.header_offset + 28 : i.header_offset + 30])[0]
    e = {
        "name": i.filename,
        "date_time": list(i.date_time),
        "create_system": i.create_system,
        "mode": i.external_attr >> 16,
        "extra": i.extra.hex(),
        "local_extra_len": local_extra,
        "size": i.file_size,
        "compress_type": i.compress_type,
        "dir": i.is_dir(),
    }
    if i.filename.endswith(".so"):
        head = z.open(i).read(20)
        e["elf"] = head[:4] == b"\x7fELF"
        e["e_machine"] = int.from_bytes(head[18:20], "little")
    if i.filename.endswith(".pyc"):
        data = z.read(i)
        e["pyc_flags"] = int.from_bytes(data[4:8], "little")
        e["co_filename"] = marshal.loads(data[16:]).co_filename
    if i.filename.endswith("alias.py"):
        e["content"] = z.read(i).decode()
    out.append(e)
json.dump(out, sys.stdout)
"#;

/// Every entry of `zip` as Python's zipfile reads it.
fn listing(zip: &Path) -> Vec<Value> {
    let out = Command::new(host_python())
        .args(["-c", ZIP_READER])
        .arg(zip)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "reading {}: {}",
        zip.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn entry<'a>(entries: &'a [Value], name: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the zip"))
}

/// Unzip with Python's zipfile into `dest`.
fn extract(zip: &Path, dest: &Path) {
    let out = Command::new(host_python())
        .args(["-m", "zipfile", "-e"])
        .arg(zip)
        .arg(dest)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "extracting {}: {}",
        zip.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Zipped {
    _dir: tempfile::TempDir,
    project: PathBuf,
    cache: PathBuf,
    package: PathBuf,
    /// (layer_content.zip, app.zip), written next to package.zip.
    layer: (PathBuf, PathBuf),
}

/// The FastAPI example zipped once as a package and once as a layer, shared by the tests
/// that only read the zips.
fn fastapi_zips() -> &'static Zipped {
    static ZIPPED: OnceLock<Zipped> = OnceLock::new();
    ZIPPED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("fastapi-app");
        copy_project("fastapi-app", &project);
        let cache = dir.path().join("cache");
        let out = run(zip_cmd(&cache, &project, &[]));
        assert_ok(&out);
        let package = project.join(".ocilambda/package.zip");
        assert_eq!(stdout_raw(&out), format!("{}\n", package.display()));
        let out = run(zip_cmd(&cache, &project, &["--layer"]));
        assert_ok(&out);
        let layer = (
            project.join(".ocilambda/layer_content.zip"),
            project.join(".ocilambda/app.zip"),
        );
        assert_eq!(
            stdout_raw(&out),
            format!("{}\n{}\n", layer.0.display(), layer.1.display()),
            "one path per line"
        );
        Zipped {
            project,
            cache,
            package,
            layer,
            _dir: dir,
        }
    })
}

#[test]
fn package_zip_handler_answers_the_api_gateway_event() {
    let z = fastapi_zips();
    let task = tempfile::tempdir().unwrap();
    extract(&z.package, task.path());
    assert!(task.path().join("app/main.py").is_file());
    assert!(task.path().join("fastapi/__init__.py").is_file());
    assert!(
        !task.path().join("app/__pycache__").exists(),
        "no bytecode by default"
    );
    let response = python_handler_response(task.path(), "app.main.handler", API_GATEWAY_EVENT);
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], "\"Hello, world!\"", "{response}");
}

#[test]
fn layer_and_app_zips_answer_with_lambdas_sys_path() {
    let z = fastapi_zips();
    let tmp = tempfile::tempdir().unwrap();
    let (opt, task) = (tmp.path().join("opt"), tmp.path().join("task"));
    extract(&z.layer.0, &opt);
    extract(&z.layer.1, &task);
    let site = opt.join("python/lib/python3.11/site-packages");
    assert!(site.join("fastapi/__init__.py").is_file());
    assert!(!opt.join("python/lib/python3.11/site-packages/bin").exists());
    let top: Vec<String> = std::fs::read_dir(&task)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["app"], "app.zip holds the app code only");
    let response = python_handler_response_on_path(
        &[task.clone(), site, opt.join("python")],
        "app.main.handler",
        API_GATEWAY_EVENT,
    );
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], "\"Hello, world!\"", "{response}");
}

#[test]
fn zip_entries_have_fixed_times_unix_modes_and_no_extra_fields() {
    let z = fastapi_zips();
    for zip in [&z.package, &z.layer.0, &z.layer.1] {
        let entries = listing(zip);
        assert!(!entries.is_empty());
        let names: Vec<&str> = entries
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_by_key(|n| n.trim_end_matches('/'));
        assert_eq!(names, sorted, "{}: entries sorted", zip.display());
        for e in &entries {
            let name = e["name"].as_str().unwrap();
            assert_eq!(
                e["date_time"],
                serde_json::json!([1980, 1, 1, 0, 0, 0]),
                "{name}"
            );
            assert_eq!(e["create_system"], 3, "{name}: made by Unix");
            assert_eq!(e["extra"], "", "{name}: no extra fields");
            assert_eq!(e["local_extra_len"], 0, "{name}: no local extra fields");
            let mode = e["mode"].as_u64().unwrap();
            if e["dir"].as_bool().unwrap() {
                assert_eq!(mode, 0o40755, "{name}");
            } else {
                assert!(mode == 0o100644 || mode == 0o100755, "{name}: {mode:o}");
                assert_eq!(e["compress_type"], 8, "{name}: deflated");
            }
        }
    }
    let package = listing(&z.package);
    assert_eq!(entry(&package, "bin/fastapi")["mode"], 0o100755);
    assert_eq!(entry(&package, "app/main.py")["mode"], 0o100644);
    assert_eq!(
        entry(&listing(&z.layer.0), "python/lib/python3.11/site-packages/")["mode"],
        0o40755
    );
}

fn set_all_mtimes(dir: &Path, secs: u64) {
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
}

#[test]
fn zips_are_byte_identical_across_paths_mtimes_umask_and_caches() {
    let z = fastapi_zips();
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("elsewhere/deeper/project");
    copy_project("fastapi-app", &project);
    set_all_mtimes(&project, 1_000_000_000);
    let out_dir = tmp.path().join("out");
    for args in [
        vec!["--output", out_dir.join("package.zip").to_str().unwrap()],
        vec!["--layer", "--output", out_dir.to_str().unwrap()],
    ] {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("umask 077; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_ocilambda"))
            .arg("zip")
            .arg(&project)
            .args(&args)
            .env("OCILAMBDA_CACHE_DIR", tmp.path().join("other-cache"))
            .env("NO_COLOR", "1");
        assert_ok(&run(cmd));
    }
    for (ours, theirs) in [
        (&z.package, out_dir.join("package.zip")),
        (&z.layer.0, out_dir.join("layer_content.zip")),
        (&z.layer.1, out_dir.join("app.zip")),
    ] {
        let (a, b) = (
            std::fs::read(ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
        );
        assert!(a == b, "{} and {} differ", ours.display(), theirs.display());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&theirs).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable zip despite umask 077");
    }
}

#[test]
fn json_summary_gives_each_zips_code_sha256() {
    let z = fastapi_zips();
    // Into a directory of its own: other tests read the shared zips meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let out = run(zip_cmd(
        &z.cache,
        &z.project,
        &[
            "--layer",
            "--json",
            "--output",
            dir.path().to_str().unwrap(),
        ],
    ));
    assert_ok(&out);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout");
    let s: Value = serde_json::from_str(lines[0]).unwrap();
    let zips = s["zips"].as_array().unwrap();
    assert_eq!(zips.len(), 2);
    for (z, kind) in zips.iter().zip(["layer", "app"]) {
        assert_eq!(z["kind"], kind);
        let bytes = std::fs::read(z["path"].as_str().unwrap()).unwrap();
        assert_eq!(z["size"], bytes.len() as u64);
        // What `aws lambda get-function` reports as CodeSha256.
        let expected = Command::new(host_python())
            .args([
                "-c",
                "import base64,hashlib,sys; print(base64.b64encode(hashlib.sha256(open(sys.argv[1],'rb').read()).digest()).decode())",
            ])
            .arg(z["path"].as_str().unwrap())
            .output()
            .unwrap();
        assert_eq!(
            z["code_sha256"],
            String::from_utf8_lossy(&expected.stdout).trim()
        );
        assert!(z["unzipped_size"].as_u64().unwrap() > 0);
    }
    assert_eq!(s["python"], "3.11");
    assert_eq!(s["arch"], "x86_64");
    assert_eq!(s["unzipped_limit"], 262_144_000);
    assert_eq!(s["parts"][0]["reused"], true, "{s}");
    let err = stderr(&out);
    assert!(err.contains("CodeSha256 "), "{err}");
    assert!(err.contains("unzipped"), "{err}");
}

#[test]
fn app_only_edit_reuses_the_deps_zip_without_uv() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let cache = tmp.path().join("cache");
    assert_ok(&run(zip_cmd(&cache, &project, &[])));
    let zip = project.join(".ocilambda/package.zip");
    let before = std::fs::read(&zip).unwrap();
    let main = project.join("app/main.py");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("Hello, world!", "Hello, edit!");
    std::fs::write(&main, text).unwrap();
    let out = run(zip_cmd(&cache, &project, &[]));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("Reused deps zip"), "{err}");
    assert!(
        !err.contains("Using uv"),
        "no uv process for an app-only edit:\n{err}"
    );
    assert_ne!(std::fs::read(&zip).unwrap(), before);
    let task = tmp.path().join("task");
    extract(&zip, &task);
    let response = python_handler_response(&task, "app.main.handler", API_GATEWAY_EVENT);
    assert_eq!(response["body"], "\"Hello, edit!\"", "{response}");
}

#[test]
fn bytecode_embeds_the_paths_lambda_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    assert_ok(&run(zip_cmd(
        &cache,
        &project,
        &[
            "--compile-bytecode",
            "--output",
            out.join("package.zip").to_str().unwrap(),
        ],
    )));
    assert_ok(&run(zip_cmd(
        &cache,
        &project,
        &[
            "--compile-bytecode",
            "--layer",
            "--output",
            out.to_str().unwrap(),
        ],
    )));
    let cases = [
        (
            "package.zip",
            "fastapi/__pycache__/__init__.cpython-311.pyc",
            "/var/task/fastapi/__init__.py",
        ),
        (
            "package.zip",
            "app/__pycache__/main.cpython-311.pyc",
            "/var/task/app/main.py",
        ),
        (
            "layer_content.zip",
            "python/lib/python3.11/site-packages/fastapi/__pycache__/__init__.cpython-311.pyc",
            "/opt/python/lib/python3.11/site-packages/fastapi/__init__.py",
        ),
        (
            "app.zip",
            "app/__pycache__/main.cpython-311.pyc",
            "/var/task/app/main.py",
        ),
    ];
    for (zip, pyc, source) in cases {
        let entries = listing(&out.join(zip));
        let e = entry(&entries, pyc);
        assert_eq!(e["co_filename"], source, "{zip}: {pyc}");
        assert_eq!(e["pyc_flags"], 1, "{zip}: {pyc} is unchecked-hash");
    }
}

#[test]
fn arm64_zip_has_aarch64_native_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let out = run(zip_cmd(
        &tmp.path().join("cache"),
        &project,
        &["--arch", "arm64", "--json"],
    ));
    assert_ok(&out);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["arch"], "arm64");
    let entries = listing(&project.join(".ocilambda/package.zip"));
    let so: Vec<&Value> = entries.iter().filter(|e| e.get("elf").is_some()).collect();
    assert!(!so.is_empty(), "pydantic-core ships a native module");
    for e in so {
        assert_eq!(e["elf"], true, "{}", e["name"]);
        assert_eq!(e["e_machine"], 183, "{} is not aarch64", e["name"]);
    }
}

#[test]
fn workspace_member_is_zipped_with_the_dependencies() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("ws");
    copy_project("workspace", &project);
    let cache = tmp.path().join("cache");
    assert_ok(&run(zip_cmd(&cache, &project, &[])));
    let task = tmp.path().join("task");
    extract(&project.join(".ocilambda/package.zip"), &task);
    let response = python_handler_response(&task, "app.main.handler", API_GATEWAY_EVENT);
    assert_eq!(response["body"], "\"Hello from library!\"", "{response}");

    assert_ok(&run(zip_cmd(&cache, &project, &["--layer"])));
    let entries = listing(&project.join(".ocilambda/layer_content.zip"));
    entry(
        &entries,
        "python/lib/python3.11/site-packages/library/__init__.py",
    );
}

#[test]
fn symlinked_app_file_is_stored_with_its_targets_content() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    std::os::unix::fs::symlink("main.py", project.join("app/alias.py")).unwrap();
    assert_ok(&run(zip_cmd(
        &tmp.path().join("cache"),
        &project,
        &["--layer"],
    )));
    let entries = listing(&project.join(".ocilambda/app.zip"));
    let alias = entry(&entries, "app/alias.py");
    assert_eq!(alias["mode"], 0o100644, "a regular file, not a link");
    let main = std::fs::read_to_string(project.join("app/main.py")).unwrap();
    assert_eq!(alias["content"], main.as_str());
}

/// A wheel of `mib` MiB of zeros: cheap to make (it compresses to almost nothing), but
/// `mib` MiB once installed.
const BIG_WHEEL: &str = r#"
import base64, hashlib, sys, zipfile
path, mib = sys.argv[1], int(sys.argv[2])
blob = b"\0" * (mib * 1024 * 1024)
files = {
    "bigdata/__init__.py": b"",
    "bigdata/blob.bin": blob,
    "bigdata-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: bigdata\nVersion: 1.0\n",
    "bigdata-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def record(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"
lines = [record(n, d) for n, d in files.items()] + ["bigdata-1.0.dist-info/RECORD,,"]
files["bigdata-1.0.dist-info/RECORD"] = ("\n".join(lines) + "\n").encode()
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    for name, data in files.items():
        z.writestr(name, data)
"#;

#[test]
fn size_budget_error_names_the_largest_distribution_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("too-big");
    std::fs::create_dir_all(project.join("app")).unwrap();
    std::fs::create_dir_all(project.join("wheels")).unwrap();
    std::fs::write(project.join("app/__init__.py"), "").unwrap();
    std::fs::write(
        project.join("app/main.py"),
        "def handler(event, context):\n    return 1\n",
    )
    .unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        r#"[project]
name = "too-big"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["bigdata"]

[tool.uv.sources]
bigdata = { path = "wheels/bigdata-1.0-py3-none-any.whl" }

[tool.ocilambda]
handler = "app.main.handler"
python-version = "3.11"
"#,
    )
    .unwrap();
    let wheel = project.join("wheels/bigdata-1.0-py3-none-any.whl");
    let mut make = Command::new(host_python());
    make.args(["-c", BIG_WHEEL]).arg(&wheel).arg("251");
    run_checked(make);
    // A private uv cache: uv unpacks the 251 MiB wheel there, and it goes with the tempdir.
    let uv_cache = tmp.path().join("uv-cache");
    let mut lock = Command::new("uv");
    lock.args(["lock", "--offline", "--quiet"])
        .current_dir(&project)
        .env("UV_CACHE_DIR", &uv_cache);
    run_checked(lock);
    let cache = tmp.path().join("cache");
    let mut cmd = zip_cmd(&cache, &project, &["--layer"]);
    cmd.env("UV_CACHE_DIR", &uv_cache);
    let out = run(cmd);
    assert_user_error(&out, "over Lambda's limit of 250 MiB");
    let err = stderr(&out);
    assert!(err.contains("bigdata 1.0 (251.0 MiB)"), "{err}");
    assert!(err.contains("ocilambda build"), "suggests an image:\n{err}");
    assert!(
        !project.join(".ocilambda").exists(),
        "nothing written next to the project"
    );
    let blobs: Vec<_> = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "nothing compressed into the cache either");
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "staging cleaned up: {leftovers:?}");
}

// ---------------------------------------------------------------------------
// Bad input: one line of cause, a hint, exit 2, nothing written.
// ---------------------------------------------------------------------------

fn failing_zip(project: &Path, args: &[&str], needle: &str) -> Output {
    let cache = project.parent().unwrap().join("cache");
    let out = run(zip_cmd(&cache, project, args));
    assert_user_error(&out, needle);
    assert!(
        !project.join(".ocilambda/package.zip").exists(),
        "no zip written"
    );
    out
}

#[test]
fn bad_input_exits_2_with_one_error_and_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    failing_zip(&empty, &[], "no pyproject.toml");

    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    failing_zip(
        &project,
        &["--arch", "sparc"],
        "unknown architecture `sparc`",
    );
    let out = failing_zip(&project, &["--python-version", "3.10"], "3.10");
    assert!(stderr(&out).contains(">=3.11"));
    failing_zip(
        &project,
        &["--handler", "pkgapp.gone.handler"],
        "pkgapp.gone",
    );
    failing_zip(&project, &["--python-version", "3.9"], "3.9");
    std::fs::create_dir_all(project.join("adir")).unwrap();
    failing_zip(
        &project,
        &["--output", project.join("adir").to_str().unwrap()],
        "is a directory",
    );
    let py = std::fs::read_to_string(project.join("pyproject.toml")).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        py.replace("handler = \"pkgapp.handler.handler\"\n", ""),
    )
    .unwrap();
    failing_zip(&project, &[], "no handler configured");

    let usage = run({
        let mut c = ocilambda(tmp.path());
        c.args(["zip", "--no-such-flag"]);
        c
    });
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn src_layout_zip_runs_its_packaged_handler() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let zip = tmp.path().join("dist/fn.zip");
    let stdout = assert_ok(&run(zip_cmd(
        &tmp.path().join("cache"),
        &project,
        &["--output", zip.to_str().unwrap()],
    )));
    assert_eq!(stdout.trim(), zip.to_str().unwrap());
    let task = tmp.path().join("task");
    extract(&zip, &task);
    assert!(task.join("pkgapp/handler.py").is_file());
    let response = python_handler_response(&task, "pkgapp.handler.handler", "{}");
    assert_eq!(response, serde_json::json!({"ok": true, "six": "1.17.0"}));
}

#[test]
fn zip_never_replaces_what_it_did_not_write_nor_writes_into_the_app() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let cache = tmp.path().join("cache");
    for name in ["pyproject.toml", "uv.lock"] {
        let file = project.join(name);
        let before = std::fs::read(&file).unwrap();
        let out = run(zip_cmd(
            &cache,
            &project,
            &["--output", file.to_str().unwrap()],
        ));
        assert_user_error(&out, "is not a zip ocilambda wrote");
        assert_eq!(std::fs::read(&file).unwrap(), before, "{name} untouched");
    }
    // A zip someone else made (real timestamps) is not ours to replace either.
    let theirs = tmp.path().join("theirs.zip");
    let made = Command::new(host_python())
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('a.txt', 'mine')",
        ])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(made.success());
    let before = std::fs::read(&theirs).unwrap();
    let out = run(zip_cmd(
        &cache,
        &project,
        &["--output", theirs.to_str().unwrap()],
    ));
    assert_user_error(&out, "is not a zip ocilambda wrote");
    assert_eq!(std::fs::read(&theirs).unwrap(), before);
    // A link is not replaced (nor followed).
    let link = tmp.path().join("link.zip");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    let out = run(zip_cmd(
        &cache,
        &project,
        &["--output", link.to_str().unwrap()],
    ));
    assert_user_error(&out, "is not a zip ocilambda wrote");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Into the handler's package, the zips would ship in the next build.
    let app = project.join("src/pkgapp");
    let out = run(zip_cmd(
        &cache,
        &project,
        &["--layer", "--output", app.to_str().unwrap()],
    ));
    assert_user_error(&out, "inside the app sources");
    assert!(!app.join("app.zip").exists() && !app.join("layer_content.zip").exists());
    // ... and so would a zip that an --include glob selects, even before it exists.
    let out = run(zip_cmd(
        &cache,
        &project,
        &[
            "--include",
            "*.zip",
            "--output",
            project.join("src/fn.zip").to_str().unwrap(),
        ],
    ));
    assert_user_error(&out, "inside the app sources");

    // A zip ocilambda wrote is replaced on the next run.
    let ours = tmp.path().join("dist/fn.zip");
    assert_ok(&run(zip_cmd(
        &cache,
        &project,
        &["--output", ours.to_str().unwrap()],
    )));
    assert_ok(&run(zip_cmd(
        &cache,
        &project,
        &["--output", ours.to_str().unwrap()],
    )));
}

// ---------------------------------------------------------------------------
// What the app sources may hold (issue 9: Trust)
// ---------------------------------------------------------------------------

fn names(zip: &Path) -> Vec<String> {
    listing(zip)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn broad_include_globs_never_ship_env_files_and_warn_about_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    for secret in [".env", "app/.env", "app/.env.prod", "app/.env.defaults"] {
        std::fs::write(project.join(secret), "TOKEN=secret\n").unwrap();
    }
    let cache = tmp.path().join("cache");
    let zip = project.join(".ocilambda/package.zip");
    let is_env = |n: &String| n.rsplit('/').next().unwrap().starts_with(".env");
    for broad in ["app", "app/*", "*"] {
        let out = run(zip_cmd(&cache, &project, &["--include", broad]));
        assert_ok(&out);
        let shipped = names(&zip);
        assert!(
            !shipped.iter().any(is_env),
            "--include {broad} shipped: {shipped:?}"
        );
        assert!(shipped.contains(&"app/main.py".to_string()));
        let warning = stderr(&out)
            .lines()
            .find(|l| l.starts_with("warning: "))
            .map(str::to_string);
        if broad == "*" {
            assert!(shipped.contains(&"pyproject.toml".to_string()));
            let warning = warning.expect("a warning for what `*` brought in");
            for name in ["pyproject.toml", "uv.lock", ".gitignore"] {
                assert!(warning.contains(name), "{warning}");
            }
        } else {
            assert_eq!(warning, None, "--include {broad} stays in the package");
        }
    }
    // A glob that names an env file ships that file, and only it.
    assert_ok(&run(zip_cmd(
        &cache,
        &project,
        &["--include", "app/.env.defaults"],
    )));
    let shipped: Vec<String> = names(&zip).into_iter().filter(is_env).collect();
    assert_eq!(shipped, ["app/.env.defaults"]);
}

#[test]
fn links_that_escape_or_loop_are_refused_as_build_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let app = project.join("app");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("d", "."), ("t", "d/../..")], "points outside"),
        (&[("a", "b"), ("b", "a")], "loop of links"),
        (&[("self", "self")], "loop of links"),
        (&[("d", ".")], "contains the link"),
    ];
    for (links, needle) in cases {
        for (link, target) in links {
            std::os::unix::fs::symlink(target, app.join(link)).unwrap();
        }
        failing_zip(&project, &[], needle);
        for (link, _) in links {
            std::fs::remove_file(app.join(link)).unwrap();
        }
    }
}

#[test]
fn a_name_that_is_not_utf8_can_be_excluded() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("fastapi-app", &project);
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.bin");
    std::fs::write(project.join("app").join(name), b"latin-1").unwrap();
    let out = failing_zip(&project, &[], "not UTF-8");
    assert!(stderr(&out).contains("--exclude"), "{}", stderr(&out));
    assert_ok(&run(zip_cmd(
        &tmp.path().join("cache"),
        &project,
        &["--exclude", "app/*.bin"],
    )));
    assert!(
        !names(&project.join(".ocilambda/package.zip"))
            .iter()
            .any(|n| n.ends_with(".bin"))
    );
}

// ---------------------------------------------------------------------------
// Selection: dependency groups (issue 9 item 23)
// ---------------------------------------------------------------------------

/// src-layout with its one dependency moved into the `dev` group, locked offline.
fn dev_group_project(dest: &Path) {
    copy_project("src-layout", dest);
    let py = std::fs::read_to_string(dest.join("pyproject.toml")).unwrap();
    let py = py.replace(
        "dependencies = [\"six\"]",
        "dependencies = []\n\n[dependency-groups]\ndev = [\"six\"]",
    );
    std::fs::write(dest.join("pyproject.toml"), py).unwrap();
    let mut lock = Command::new("uv");
    lock.args(["lock", "--offline", "--quiet"])
        .current_dir(dest);
    run_checked(lock);
}

fn zipped_names(zip: &Path) -> Vec<String> {
    listing(zip)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn group_dev_installs_the_dev_groups_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    dev_group_project(&project);
    let cache = tmp.path().join("cache");
    let zip = project.join(".ocilambda/package.zip");

    assert_ok(&run(zip_cmd(&cache, &project, &[])));
    assert!(
        !zipped_names(&zip).contains(&"six.py".to_string()),
        "the dev group is left out by default"
    );
    assert_ok(&run(zip_cmd(&cache, &project, &["--group", "dev"])));
    assert!(
        zipped_names(&zip).contains(&"six.py".to_string()),
        "--group dev installs the dev group"
    );

    // The same from [tool.ocilambda] and from the environment, without flags.
    std::fs::remove_file(&zip).unwrap();
    let mut cmd = zip_cmd(&cache, &project, &[]);
    cmd.env("OCILAMBDA_GROUP", "dev");
    assert_ok(&run(cmd));
    assert!(zipped_names(&zip).contains(&"six.py".to_string()));
    let py = std::fs::read_to_string(project.join("pyproject.toml")).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        py.replace(
            "[tool.ocilambda]\n",
            "[tool.ocilambda]\ngroup = [\"dev\"]\n",
        ),
    )
    .unwrap();
    std::fs::remove_file(&zip).unwrap();
    assert_ok(&run(zip_cmd(&cache, &project, &[])));
    assert!(zipped_names(&zip).contains(&"six.py".to_string()));
}
