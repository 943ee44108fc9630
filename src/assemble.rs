//! Image assembly: a pure function from (base, new layers, settings) to the image a build
//! makes (an [`Image`] whose origin is the build), like go-containerregistry's
//! `mutate.Append`. The base config is edited as JSON so fields we do not know survive;
//! output JSON has sorted keys, because oci-spec keeps annotations in HashMaps and their
//! order would otherwise change the digest from run to run.

use crate::image::{Image, Origin};
use crate::layers::Layer;
use crate::oci::{Descriptor, canonical_json, rfc3339};
use anyhow::{Context, Result, bail};
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

/// The manifest size AWS recommends staying under "for optimal performance" of Lambda
/// container images; no AWS text says Lambda refuses a larger one, so it is a warning.
pub const MAX_MANIFEST_BYTES: usize = 25_400;

/// A layer this build adds, with the history line that explains it.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub layer: Layer,
    pub created_by: String,
}

/// The image on `base` with `new_layers` on top: `handler` as its command, `created` at
/// `epoch`, and `annotations` (provenance) on its manifest.
pub fn assemble(
    base: &Image,
    new_layers: &[NewLayer],
    handler: &str,
    epoch: u64,
    annotations: &BTreeMap<String, String>,
) -> Result<Image> {
    let base_layers = base.descriptors()?;
    let config_bytes = config_on_base(
        base,
        base_layers.len(),
        new_layers,
        handler,
        &rfc3339(epoch)?,
    )?;
    let config_digest = crate::digest::of_bytes(&config_bytes);
    let mut layers = base_layers;
    for l in new_layers {
        layers.push(Descriptor {
            media_type: crate::oci::media::OCI_LAYER_GZIP.into(),
            digest: l.layer.digest.clone(),
            size: l.layer.size,
        });
    }
    let manifest_bytes = manifest(&config_digest, config_bytes.len(), &layers, annotations)?;
    Image::from_bytes(
        "the new image".into(),
        Origin::Build,
        manifest_bytes,
        config_bytes,
    )
}

/// The base config with the handler as `Cmd`, the new layers' diff_ids and history lines,
/// and `created`; every field the base has and we do not know is kept as it is.
fn config_on_base(
    base: &Image,
    base_layers: usize,
    new_layers: &[NewLayer],
    handler: &str,
    created: &str,
) -> Result<Vec<u8>> {
    let mut config = base.config.clone();
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
    if diff_ids.len() != base_layers {
        bail!(
            "base config lists {} diff_ids but its manifest {base_layers} layers",
            diff_ids.len(),
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

    /// A base whose manifest lists `layers` layers (its config always one diff_id).
    fn base_with(layers: usize) -> Image {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/lambda-entrypoint.sh"], "WorkingDir": "/var/task",
                       "Env": ["LAMBDA_TASK_ROOT=/var/task"], "Cmd": ["old"]},
            "rootfs": {"type": "layers", "diff_ids": [crate::digest::of_bytes(b"l1")]},
            "history": [{"created_by": "base"}],
            "x-unknown": {"kept": true}
        }))
        .unwrap();
        let layer = serde_json::json!({"mediaType": crate::oci::media::OCI_LAYER_GZIP,
            "digest": crate::digest::of_bytes(b"g1"), "size": 2});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::oci::media::OCI_MANIFEST,
            "config": {"mediaType": crate::oci::media::OCI_CONFIG,
                       "digest": crate::digest::of_bytes(&config), "size": config.len()},
            "layers": vec![layer; layers],
        }))
        .unwrap();
        let reference = "example.com/lambda/python:3.11".parse().unwrap();
        Image::from_bytes("base".into(), Origin::Registry(reference), manifest, config).unwrap()
    }

    fn base() -> Image {
        base_with(1)
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
        assert!(matches!(a.origin, Origin::Build));
        let config = &a.config;
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
        let manifest = &a.manifest;
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
        assert_eq!(
            a.config_digest(),
            Some(crate::digest::of_bytes(&a.config_bytes).as_str())
        );
        assert_eq!(
            a.manifest_digest,
            crate::digest::of_bytes(&a.manifest_bytes)
        );
        let text = String::from_utf8(a.manifest_bytes.clone()).unwrap();
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
        assert!(assemble(&base_with(0), &[], "a.b", 0, &BTreeMap::new()).is_err());
        assert!(assemble(&base_with(2), &[], "a.b", 0, &BTreeMap::new()).is_err());
    }
}
