//! Trust: what ocilambda reuses, copies or certifies always matches its digest. A damaged
//! cache entry is dropped and rebuilt or fetched again, a layout never shares bytes with
//! the cache, and the audits refuse a layout whose blobs do not match their names.
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn build(cache: &Path, project: &Path, args: &[&str]) -> Command {
    let mut cmd = ocilambda(cache);
    cmd.arg("build")
        .arg(project)
        .args(["--base", &stand_in_base("3.11"), "--json"])
        .args(args);
    cmd
}

fn summary(cmd: Command) -> (Value, String) {
    let out = run(cmd);
    assert_ok(&out);
    (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
}

fn layer_of(summary: &Value, kind: &str) -> String {
    summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} layer"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Overwrite 7 bytes in place, as `dd conv=notrunc` would.
fn corrupt(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let at = (f.metadata().unwrap().len() / 2).min(100_000);
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(b"CORRUPT").unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    copy_project("src-layout", &project);
    let cache = tmp.path().join("cache");
    (tmp, project, cache)
}

#[test]
fn a_corrupted_cached_layer_is_rebuilt_not_reused_and_earlier_layouts_keep_their_bytes() {
    let (tmp, project, cache) = setup();
    let first_layout = tmp.path().join("first");
    let (first, _) = summary(build(
        &cache,
        &project,
        &["--output", first_layout.to_str().unwrap()],
    ));
    let deps = layer_of(&first, "deps");
    corrupt(&blob_path(&cache, &deps));
    let (second, err) = summary(build(&cache, &project, &["--pull"]));
    assert!(
        err.contains("does not match its digest"),
        "a warning names the damaged entry:\n{err}"
    );
    assert!(!err.contains("Reused deps"), "{err}");
    assert_eq!(
        second["digest"], first["digest"],
        "rebuilt to the same bytes"
    );
    // The first layout was never linked to the cache entry that was damaged.
    validate_layout(&first_layout);
    validate_layout(&project.join(".ocilambda/image"));
}

#[test]
fn audits_refuse_a_layout_blob_that_does_not_match_its_name() {
    let (tmp, project, cache) = setup();
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    summary(build(
        &cache,
        &project,
        &["--output", good.to_str().unwrap()],
    ));
    let (s, _) = summary(build(
        &cache,
        &project,
        &["--output", bad.to_str().unwrap()],
    ));
    corrupt(&blob_path(&bad, &layer_of(&s, "app")));
    let out = run({
        let mut c = ocilambda(&cache);
        c.arg("diff").arg(&good).arg(&bad);
        c
    });
    assert_user_error(&out, "does not match its digest");
    let out = run({
        let mut c = ocilambda(&cache);
        c.arg("verify").arg(&bad).arg(&project);
        c
    });
    assert_user_error(&out, "does not match its digest");
    let out = run({
        let mut c = ocilambda(&cache);
        c.arg("lint").arg(&bad);
        c
    });
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
}

#[test]
fn a_garbage_base_manifest_in_the_cache_is_repaired_by_the_next_online_build() {
    let (_tmp, project, cache) = setup();
    let (first, _) = summary(build(&cache, &project, &[]));
    let base = first["base"]["digest"].as_str().unwrap();
    std::fs::write(blob_path(&cache, base), br#"{"garbage":1}"#).unwrap();
    let (second, _) = summary(build(&cache, &project, &[]));
    assert_eq!(second["digest"], first["digest"]);
    let (offline, _) = summary(build(&cache, &project, &["--offline"]));
    assert_eq!(offline["digest"], first["digest"]);
}

#[test]
fn a_damaged_cached_base_layer_is_fetched_again_for_complete() {
    let (tmp, project, cache) = setup();
    let layout = tmp.path().join("complete");
    let args = ["--complete", "--output", layout.to_str().unwrap()];
    summary(build(&cache, &project, &args));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob_path(&layout, &{
            let index: Value =
                serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
            index["manifests"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string()
        }))
        .unwrap(),
    )
    .unwrap();
    let base_layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let size = std::fs::metadata(blob_path(&cache, base_layer))
        .unwrap()
        .len();
    let random: Vec<u8> = (0..size).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(blob_path(&cache, base_layer), random).unwrap();
    std::fs::remove_dir_all(&layout).unwrap();
    summary(build(&cache, &project, &args));
    validate_layout(&layout);
    assert!(blob_path(&layout, base_layer).is_file());
}

#[test]
fn a_handler_function_the_module_does_not_define_is_refused_naming_what_it_does_define() {
    let (_tmp, project, cache) = setup();
    let out = run(build(
        &cache,
        &project,
        &["--handler", "pkgapp.handler.nosuchfunc"],
    ));
    let err = assert_user_error(&out, "defines no `nosuchfunc`");
    let hint = err.lines().find(|l| l.starts_with("hint: ")).unwrap();
    assert!(hint.contains("handler"), "{hint}");
    assert!(
        !project.join(".ocilambda/image").exists(),
        "nothing written"
    );
}

#[test]
fn a_base_of_another_python_than_the_target_is_refused_by_tag_and_by_its_files() {
    let (_tmp, project, cache) = setup();
    let mut cmd = ocilambda(&cache);
    cmd.arg("build").arg(&project).args([
        "--base",
        &stand_in_base("3.11"),
        "--python-version",
        "3.12",
        "--no-compile-bytecode",
    ]);
    assert_user_error(
        &run(cmd),
        "runs Python 3.11, but the build targets Python 3.12",
    );
    assert!(
        !project.join(".ocilambda/image").exists(),
        "nothing written"
    );

    // Pinned by digest, the name says nothing: the base's interpreter does.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", stand_in_base("3.11")),
    ]);
    let pinned = format!(
        "{}/lambda/python@sha256:{}",
        shared_registry().addr,
        sha256_hex(&raw.stdout)
    );
    let mut cmd = ocilambda(&cache);
    cmd.arg("build").arg(&project).args([
        "--base",
        &pinned,
        "--python-version",
        "3.12",
        "--no-compile-bytecode",
    ]);
    assert_user_error(
        &run(cmd),
        "runs Python 3.11, but the build targets Python 3.12",
    );
    // The same pin for the Python it runs builds.
    let mut cmd = ocilambda(&cache);
    cmd.arg("build")
        .arg(&project)
        .args(["--base", &pinned, "--python-version", "3.11"]);
    assert_ok(&run(cmd));
}
