//! Output pins: the bytes a build writes for fixed inputs. Refactors must not move them;
//! a change that means to (a new normalisation, a new annotation) updates the pins and
//! says so in its commit message. The layer digests depend only on the project, uv.lock
//! and the target; the config and manifest also record the ocilambda and uv versions and
//! the stand-in base, so they are pinned for the versions named here and skipped (with a
//! note) under others.
mod common;

use common::*;
use serde_json::Value;

/// The uv version the config and manifest pins were taken with (the one scripts/test installs).
const PINNED_UV: &str = "0.13.9";
/// The ocilambda version they were taken with (recorded in the manifest's annotations).
const PINNED_VERSION: &str = "0.2.0";

struct Pins {
    project: &'static str,
    layers: &'static [(&'static str, &'static str)],
    config: &'static str,
    manifest: &'static str,
}

fn check(pins: &Pins) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join(pins.project);
    copy_project(pins.project, &project);
    let mut cmd = ocilambda(&tmp.path().join("cache"));
    cmd.arg("build")
        .arg(&project)
        .args(["--base", &stand_in_base("3.11"), "--json"])
        .env("SOURCE_DATE_EPOCH", "0");
    let out = run(cmd);
    assert_ok(&out);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers: Vec<(String, String)> = summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let layout = project.join(".ocilambda/image");
    let manifest_digest = summary["digest"].as_str().unwrap().to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob_path(&layout, &manifest_digest)).unwrap())
            .unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    // The base is named with the test registry's address, a new port each run: pin the
    // manifest bytes with that address replaced by a fixed one.
    let bytes = std::fs::read(blob_path(&layout, &manifest_digest)).unwrap();
    let fixed = String::from_utf8(bytes)
        .unwrap()
        .replace(&shared_registry().addr, "registry.test");
    let manifest_digest = format!("sha256:{}", sha256_hex(fixed.as_bytes()));
    eprintln!(
        "{}: layers {layers:?} config {config_digest} manifest {manifest_digest}",
        pins.project
    );
    let expected: Vec<(String, String)> = pins
        .layers
        .iter()
        .map(|(k, d)| (k.to_string(), d.to_string()))
        .collect();
    assert_eq!(layers, expected, "layer bytes moved");
    let uv = manifest["annotations"]["dev.ocilambda.uv"]
        .as_str()
        .unwrap_or_default();
    let version = manifest["annotations"]["dev.ocilambda.version"]
        .as_str()
        .unwrap_or_default();
    if uv == PINNED_UV && version == PINNED_VERSION {
        assert_eq!(config_digest, pins.config, "config bytes moved");
        assert_eq!(manifest_digest, pins.manifest, "manifest bytes moved");
    } else {
        eprintln!(
            "config/manifest pins are for uv {PINNED_UV} and ocilambda {PINNED_VERSION}, not uv {uv} and {version}: not compared"
        );
    }
}

#[test]
fn fastapi_example_bytes_are_pinned() {
    check(&Pins {
        project: "fastapi-app",
        layers: &[
            (
                "deps",
                "sha256:235f87406527616545c31c243572ae6ddb2ba2dfc006aebc9aba8a3fac44adca",
            ),
            (
                "app",
                "sha256:5ede92f1213ea77cb08f627963e8f9313da833e75752984da912f2d5aa990998",
            ),
        ],
        config: "sha256:981d38864e18c2e0cbaffcf7ba622bd100cc15b6123d531474061f86e03ce66d",
        manifest: "sha256:88ba264e4c2531b073e4241bc04b6c550182c66309ec3889af7cf39d4b0f1f4c",
    });
}

#[test]
fn workspace_fixture_bytes_are_pinned() {
    check(&Pins {
        project: "workspace",
        layers: &[
            (
                "deps",
                "sha256:235f87406527616545c31c243572ae6ddb2ba2dfc006aebc9aba8a3fac44adca",
            ),
            (
                "workspace",
                "sha256:10e9b3a32c725083742d793826924260e9bd6ad7d902f84d850a8b6d34c55d8c",
            ),
            (
                "app",
                "sha256:10d041274b39c30a169741c7c6bb586a5eb35b50b92eead48a9b78ea309db2b4",
            ),
        ],
        config: "sha256:18c7d5604651ef88427d0745bc34421a6f9f4b92b0acd3298d01752f87bd4589",
        manifest: "sha256:ae9a0b6b55620bbefd935bc6ae9d2939e860f26b2b9d6a7aeacead108dace350",
    });
}
