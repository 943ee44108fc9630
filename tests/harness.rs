//! Self-tests of the test harness (tests/common): the stand-in base images,
//! the registry, the schema validator and the handler runner. None of these
//! run the ocilambda binary.
mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const REQUIRED_ENV: &[&str] = &[
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LANG=en_US.UTF-8",
    "TZ=:/etc/localtime",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
];

fn inspect_raw(reference: &str, extra: &[&str]) -> (Vec<u8>, Value) {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(reference);
    let out = skopeo(&args);
    let v = stdout_json(&out);
    (out.stdout, v)
}

fn check_config(config_raw: &[u8], arch: &str) {
    validate(Schema::Config, config_raw);
    let config: Value = serde_json::from_slice(config_raw).unwrap();
    assert_eq!(config["architecture"], arch);
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/lambda-entrypoint.sh"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/var/task");
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for want in REQUIRED_ENV {
        assert!(env.contains(want), "{want} missing from Env {env:?}");
    }
}

#[test]
fn stand_in_base_is_a_multi_arch_index() {
    let reg = shared_registry();
    let addr = &reg.addr;
    for version in ["3.11", "3.12", "3.13"] {
        let reference = format!("docker://{addr}/lambda/python:{version}");
        let (raw, index) = inspect_raw(&reference, &[]);
        validate(Schema::Index, &raw);
        assert_eq!(index["mediaType"], OCI_INDEX, "{reference}");
        let manifests = index["manifests"].as_array().unwrap();
        let arches: BTreeSet<&str> = manifests
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(arches, BTreeSet::from(["amd64", "arm64"]), "{reference}");

        let mut layer_sets = Vec::new();
        for m in manifests {
            let arch = m["platform"]["architecture"].as_str().unwrap();
            assert_eq!(m["platform"]["os"], "linux");
            assert_eq!(m["mediaType"], OCI_MANIFEST);
            let by_digest = format!(
                "docker://{addr}/lambda/python@{}",
                m["digest"].as_str().unwrap()
            );
            let (raw, manifest) = inspect_raw(&by_digest, &[]);
            validate(Schema::Manifest, &raw);
            assert_eq!(
                format!("sha256:{}", sha256_hex(&raw)),
                m["digest"].as_str().unwrap()
            );
            let layers = manifest["layers"].as_array().unwrap();
            assert!(layers.len() >= 2, "{by_digest}: {layers:?}");
            for l in layers {
                assert_eq!(
                    l["mediaType"],
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                );
            }
            layer_sets.push(layers.clone());

            // What a client that picks by platform gets.
            let (config_raw, _) = inspect_raw(&reference, &["--config", "--override-arch", arch]);
            check_config(&config_raw, arch);
        }
        assert_ne!(
            layer_sets[0], layer_sets[1],
            "amd64 and arm64 layers must differ"
        );
    }

    // Docker v2 schema 2 flavour.
    let (raw, manifest) = inspect_raw(&format!("docker://{addr}/lambda/python-docker:3.11"), &[]);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    assert!(!raw.is_empty());
    let (config_raw, _) = inspect_raw(
        &format!("docker://{addr}/lambda/python-docker:3.11"),
        &["--config"],
    );
    check_config(&config_raw, "amd64");

    // arm64 only.
    let (raw, index) = inspect_raw(
        &format!("docker://{addr}/lambda/python-arm64only:3.11"),
        &[],
    );
    validate(Schema::Index, &raw);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["platform"]["architecture"], "arm64");

    // The access log is captured.
    assert!(
        reg.requests()
            .iter()
            .any(|l| l.contains("/v2/lambda/python/manifests/3.11")),
        "no access log lines in:\n{}",
        reg.log()
    );
}

#[test]
fn stand_in_base_layers_hold_the_lambda_files() {
    let reg = shared_registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layout_s = layout.to_str().unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/lambda/python:3.12", reg.addr),
        &format!("oci:{layout_s}:3.12"),
    ]);
    validate_layout(&layout);

    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let image_index = &index["manifests"][0];
    assert_eq!(image_index["mediaType"], OCI_INDEX);
    let image_index: Value = serde_json::from_slice(
        &std::fs::read(blob_path(&layout, image_index["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    for m in image_index["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(blob_path(&layout, m["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let mut listing = String::new();
        for l in manifest["layers"].as_array().unwrap() {
            let blob = blob_path(&layout, l["digest"].as_str().unwrap());
            let out = Command::new("tar")
                .arg("-tvzf")
                .arg(&blob)
                .output()
                .unwrap();
            assert!(out.status.success(), "tar -tvzf {}", blob.display());
            listing.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        let line = |path: &str| {
            listing
                .lines()
                .find(|l| l.split_whitespace().nth(5) == Some(path))
                .unwrap_or_else(|| panic!("{arch}: no {path} in\n{listing}"))
                .to_owned()
        };
        assert!(
            line("etc/shadow").starts_with("-rw------- root/root"),
            "{}",
            line("etc/shadow")
        );
        assert!(line("lambda-entrypoint.sh").starts_with("-rwxr-xr-x"));
        assert!(line("var/runtime/bootstrap").starts_with("-rwxr-xr-x"));
        assert!(line("var/lang/bin/").starts_with('d'));
        assert!(line("var/task/").starts_with('d'));
        line("etc/ocilambda-stand-in-arch");
        assert!(
            !listing
                .lines()
                .any(|l| l.ends_with(" /") || l.contains(" ./")),
            "{listing}"
        );
    }
}

#[test]
fn schemas_reject_an_invalid_manifest() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let good = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": 7023},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": 32654
        }]
    });
    validate(Schema::Manifest, good.to_string().as_bytes());

    let mut no_config = good.clone();
    no_config.as_object_mut().unwrap().remove("config");
    let errors = schema_errors(Schema::Manifest, no_config.to_string().as_bytes());
    assert!(errors.iter().any(|e| e.contains("config")), "{errors:?}");
    let panicked = std::panic::catch_unwind(|| {
        validate(Schema::Manifest, no_config.to_string().as_bytes());
    });
    assert!(
        panicked.is_err(),
        "validate() accepted a manifest without config"
    );

    // Checks that come from the $ref'd sibling files (defs-descriptor.json).
    let mut bad_digest = good.clone();
    bad_digest["config"]["digest"] = json!("sha256:not/a/digest");
    assert!(!schema_errors(Schema::Manifest, bad_digest.to_string().as_bytes()).is_empty());
    let mut bad_media_type = good.clone();
    bad_media_type["layers"][0]["mediaType"] = json!("not a media type");
    assert!(!schema_errors(Schema::Manifest, bad_media_type.to_string().as_bytes()).is_empty());
    let mut bad_size = good.clone();
    bad_size["layers"][0]["size"] = json!("32654");
    assert!(!schema_errors(Schema::Manifest, bad_size.to_string().as_bytes()).is_empty());

    // The other schemas.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": digest, "size": 1,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
        }]
    });
    validate(Schema::Index, index.to_string().as_bytes());
    assert!(!schema_errors(Schema::Index, br#"{"schemaVersion": 2}"#).is_empty());
    let mut no_os = index.clone();
    no_os["manifests"][0]["platform"]
        .as_object_mut()
        .unwrap()
        .remove("os");
    assert!(!schema_errors(Schema::Index, no_os.to_string().as_bytes()).is_empty());

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["A=b"], "Entrypoint": ["/x"], "WorkingDir": "/var/task"},
        "rootfs": {"type": "layers", "diff_ids": [digest]}
    });
    validate(Schema::Config, config.to_string().as_bytes());
    let mut no_arch = config.clone();
    no_arch.as_object_mut().unwrap().remove("architecture");
    assert!(!schema_errors(Schema::Config, no_arch.to_string().as_bytes()).is_empty());

    validate(Schema::Layout, br#"{"imageLayoutVersion": "1.0.0"}"#);
    assert!(!schema_errors(Schema::Layout, b"{}").is_empty());
}

#[test]
fn validate_layout_catches_a_corrupt_blob() {
    let reg = shared_registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/lambda/python-docker:3.11", reg.addr),
        &format!("oci:{}:x", layout.display()),
    ]);
    validate_layout(&layout);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_path = blob_path(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();

    // Layer blobs may be missing...
    for l in manifest["layers"].as_array().unwrap() {
        std::fs::remove_file(blob_path(&layout, l["digest"].as_str().unwrap())).unwrap();
    }
    validate_layout(&layout);
    // ...but not be corrupt.
    let first_layer = blob_path(&layout, manifest["layers"][0]["digest"].as_str().unwrap());
    std::fs::write(&first_layer, b"not the layer").unwrap();
    let layout2 = layout.clone();
    assert!(std::panic::catch_unwind(move || validate_layout(&layout2)).is_err());
    std::fs::remove_file(&first_layer).unwrap();
    // And the config must be present.
    std::fs::remove_file(blob_path(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert!(std::panic::catch_unwind(move || validate_layout(&layout)).is_err());
}

#[test]
fn registry_starts_and_stops() {
    let reg = Registry::start();
    let addr = reg.addr.clone();
    assert!(addr.starts_with("127.0.0.1:"));
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{addr}/nothing/here:latest"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        reg.requests()
            .iter()
            .any(|l| l.contains("/v2/nothing/here/manifests/latest"))
    );
    drop(reg);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "registry still listening on {addr}"
    );
}

#[test]
fn python_handler_response_calls_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("pkg/__init__.py"), "").unwrap();
    std::fs::write(
        dir.path().join("pkg/fn.py"),
        "import os\n\
         def handler(event, context):\n\
         \x20   print('noise on stdout')\n\
         \x20   return {'event': event, 'name': context.function_name,\n\
         \x20           'left': context.get_remaining_time_in_millis(),\n\
         \x20           'cwd': os.getcwd()}\n",
    )
    .unwrap();
    let got = python_handler_response(dir.path(), "pkg.fn.handler", r#"{"x": [1, 2]}"#);
    assert_eq!(got["event"], json!({"x": [1, 2]}));
    assert_eq!(got["name"], "ocilambda-test");
    assert_eq!(got["left"], 30000);
    assert_eq!(
        std::fs::canonicalize(got["cwd"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    assert!(
        !dir.path().join("pkg/__pycache__").exists(),
        "wrote bytecode"
    );
}

#[test]
fn copy_project_copies_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["fastapi-app", "workspace", "src-layout"] {
        let dest = dir.path().join(name);
        copy_project(name, &dest);
        assert!(dest.join("pyproject.toml").is_file(), "{name}");
        assert!(dest.join("uv.lock").is_file(), "{name}");
        assert!(!dest.join(".venv").exists(), "{name}");
    }
    assert!(
        dir.path()
            .join("workspace/library/pyproject.toml")
            .is_file()
    );
    assert!(
        dir.path()
            .join("src-layout/src/pkgapp/handler.py")
            .is_file()
    );
}
