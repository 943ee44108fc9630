//! Image assembly: a pure function from (base, new layers, settings) to the config and
//! manifest bytes, like go-containerregistry's `mutate.Append`. The base config is edited
//! as JSON so fields we do not know survive; output JSON has sorted keys, because
//! oci-spec keeps annotations in HashMaps and their order would otherwise change the
//! digest from run to run.

use crate::base::{BaseImage, Descriptor};
use crate::layers::Layer;
use anyhow::{Context, Result, bail};
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

/// The manifest size AWS recommends staying under "for optimal performance" of Lambda
/// container images; no AWS text says Lambda refuses a larger one, so it is a warning.
pub const MAX_MANIFEST_BYTES: usize = 25_400;

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer this build adds, with the history line that explains it.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub layer: Layer,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    /// Base layers then new layers, as the manifest lists them.
    pub layers: Vec<Descriptor>,
}

pub use crate::oci::{canonical_json, rfc3339};

/// An artifact that refers to the image (OCI 1.1 `subject`), e.g. its SBOM: listed in
/// `index.json` next to the image, as OCI layouts hold referrers.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub manifest: Vec<u8>,
    pub artifact_type: String,
    /// Every blob the manifest references (config and layers).
    pub blobs: Vec<Vec<u8>>,
}

pub fn assemble(
    base: &BaseImage,
    new_layers: &[NewLayer],
    handler: &str,
    epoch: u64,
    annotations: &BTreeMap<String, String>,
) -> Result<Image> {
    let config_bytes = config_on_base(base, new_layers, handler, &rfc3339(epoch)?)?;
    let config_digest = crate::digest::of_bytes(&config_bytes);
    let mut layers = base.layers.clone();
    for l in new_layers {
        layers.push(Descriptor {
            media_type: LAYER_MEDIA_TYPE.into(),
            digest: l.layer.digest.clone(),
            size: l.layer.size,
        });
    }
    let manifest_bytes = manifest(&config_digest, config_bytes.len(), &layers, annotations)?;
    Ok(Image {
        manifest_digest: crate::digest::of_bytes(&manifest_bytes),
        manifest: manifest_bytes,
        config: config_bytes,
        config_digest,
        layers,
    })
}

/// The base config with the handler as `Cmd`, the new layers' diff_ids and history lines,
/// and `created`; every field the base has and we do not know is kept as it is.
fn config_on_base(
    base: &BaseImage,
    new_layers: &[NewLayer],
    handler: &str,
    created: &str,
) -> Result<Vec<u8>> {
    let mut config: serde_json::Value =
        serde_json::from_slice(&base.config).context("base config is not JSON")?;
    let obj = config
        .as_object_mut()
        .context("base config is not a JSON object")?;
    obj.insert("created".into(), created.into());
    let inner = obj
        .entry("config")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .context("base config's `config` is not an object")?;
    inner.insert("Cmd".into(), serde_json::json!([handler]));
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs
        .get_mut("diff_ids")
        .and_then(|d| d.as_array_mut())
        .context("base config has no rootfs.diff_ids")?;
    if diff_ids.len() != base.layers.len() {
        bail!(
            "base config lists {} diff_ids but its manifest {} layers",
            diff_ids.len(),
            base.layers.len()
        );
    }
    for l in new_layers {
        diff_ids.push(l.layer.diff_id.clone().into());
    }
    let history = obj
        .entry("history")
        .or_insert_with(|| serde_json::json!([]))
        .as_array_mut()
        .context("base config's history is not a list")?;
    for l in new_layers {
        history.push(serde_json::json!({
            "created": created,
            "created_by": l.created_by,
            "comment": "ocilambda",
        }));
    }
    Ok(canonical_json(&config))
}

/// The OCI image manifest, through oci-spec's builder (which checks every descriptor).
fn manifest(
    config_digest: &str,
    config_len: usize,
    layers: &[Descriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let descriptor =
        |media_type: &str, digest: &str, size: u64| -> Result<oci_spec::image::Descriptor> {
            Ok(DescriptorBuilder::default()
                .media_type(MediaType::from(media_type))
                .digest(oci_spec::image::Digest::from_str(digest)?)
                .size(size)
                .build()?)
        };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            crate::oci::media::OCI_CONFIG,
            config_digest,
            config_len as u64,
        )?)
        .layers(
            layers
                .iter()
                .map(|d| descriptor(&d.media_type, &d.digest, d.size))
                .collect::<Result<Vec<_>>>()?,
        )
        .annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .build()?;
    Ok(canonical_json(&serde_json::to_value(&manifest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseImage {
        BaseImage {
            reference: "example.com/lambda/python:3.11".parse().unwrap(),
            top_digest: crate::digest::of_bytes(b"index"),
            manifest_digest: crate::digest::of_bytes(b"manifest"),
            config: serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Entrypoint": ["/lambda-entrypoint.sh"], "WorkingDir": "/var/task",
                           "Env": ["LAMBDA_TASK_ROOT=/var/task"], "Cmd": ["old"]},
                "rootfs": {"type": "layers", "diff_ids": [crate::digest::of_bytes(b"l1")]},
                "history": [{"created_by": "base"}],
                "x-unknown": {"kept": true}
            }))
            .unwrap(),
            layers: vec![Descriptor {
                media_type: LAYER_MEDIA_TYPE.into(),
                digest: crate::digest::of_bytes(b"g1"),
                size: 2,
            }],
            pinned: false,
            from_cache: false,
        }
    }

    fn layer(tag: &[u8]) -> NewLayer {
        NewLayer {
            layer: Layer {
                digest: crate::digest::of_bytes(tag),
                diff_id: crate::digest::of_bytes(&[tag, b"-diff"].concat()),
                size: 10,
                uncompressed_size: 20,
                files: 1,
            },
            created_by: "ocilambda: test".into(),
        }
    }

    #[test]
    fn assemble_appends_layers_and_keeps_base_fields() {
        let mut ann = BTreeMap::new();
        for i in 0..20 {
            ann.insert(format!("k{i}"), format!("v{i}"));
        }
        let a = assemble(
            &base(),
            &[layer(b"deps"), layer(b"app")],
            "app.main.handler",
            0,
            &ann,
        )
        .unwrap();
        // HashMap order inside oci-spec must not leak into the bytes.
        for _ in 0..5 {
            let b = assemble(
                &base(),
                &[layer(b"deps"), layer(b"app")],
                "app.main.handler",
                0,
                &ann,
            )
            .unwrap();
            assert_eq!(a.manifest_digest, b.manifest_digest);
        }
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!(["app.main.handler"])
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/lambda-entrypoint.sh"])
        );
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
        assert_eq!(config["history"].as_array().unwrap().len(), 3);
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert_eq!(config["x-unknown"]["kept"], true);
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
        assert_eq!(manifest["config"]["digest"], a.config_digest);
        let text = String::from_utf8(a.manifest.clone()).unwrap();
        let positions: Vec<usize> = (0..20)
            .map(|i| text.find(&format!("\"k{i}\"")).unwrap())
            .collect();
        let mut sorted_keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        sorted_keys.sort();
        let mut by_pos: Vec<(usize, String)> = positions
            .into_iter()
            .zip((0..20).map(|i| format!("k{i}")))
            .collect();
        by_pos.sort();
        assert_eq!(
            by_pos.into_iter().map(|(_, k)| k).collect::<Vec<_>>(),
            sorted_keys
        );
    }

    #[test]
    fn mismatched_base_is_refused() {
        let mut b = base();
        b.layers.clear();
        assert!(assemble(&b, &[], "a.b", 0, &BTreeMap::new()).is_err());
    }
}
