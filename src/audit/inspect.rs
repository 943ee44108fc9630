//! `ocilambda inspect`: what an image is (platform, handler, base) and, per layer, its
//! digest, sizes and what produced it (the config history); `--files` lists each layer's
//! paths.

use crate::cache::Cache;
use crate::image::{Image, Remote};
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Option<String>,
    /// Only known when the layer was read (`--files`).
    pub uncompressed_size: Option<u64>,
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub image: String,
    pub digest: String,
    pub platform: String,
    pub handler: Option<String>,
    pub entrypoint: Option<serde_json::Value>,
    pub base_name: Option<String>,
    pub base_digest: Option<String>,
    pub created: Option<String>,
    pub annotations: serde_json::Value,
    pub layers: Vec<LayerInfo>,
}

pub async fn inspect(
    image: &Image,
    with_files: bool,
    remote: &Remote,
    cache: &Cache,
) -> Result<Inspection> {
    let c = &image.config;
    let history = layer_history(c);
    let diff_ids = c["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut layers = Vec::new();
    for (i, (media_type, digest, size)) in image.layers().into_iter().enumerate() {
        let (uncompressed_size, files) = if with_files {
            let blob = image.blob(&digest, remote, cache).await?;
            let read = crate::layer::view::read_layer(
                &blob.path,
                &media_type,
                &mut crate::layer::Budget::unlimited(),
                crate::layer::Strictness::Refuse,
            )?;
            (
                Some(read.summary.size),
                Some(read.entries.into_iter().map(|e| e.path).collect()),
            )
        } else {
            (None, None)
        };
        layers.push(LayerInfo {
            digest,
            media_type,
            size,
            diff_id: diff_ids.get(i).and_then(|d| d.as_str()).map(str::to_string),
            uncompressed_size,
            created_by: history.get(i).cloned().flatten(),
            files,
        });
    }
    Ok(Inspection {
        image: image.label.clone(),
        digest: image.manifest_digest.clone(),
        platform: platform(c),
        handler: c["config"]["Cmd"][0].as_str().map(str::to_string),
        entrypoint: c["config"].get("Entrypoint").cloned(),
        base_name: image
            .annotation("org.opencontainers.image.base.name")
            .map(str::to_string),
        base_digest: image
            .annotation("org.opencontainers.image.base.digest")
            .map(str::to_string),
        created: c["created"].as_str().map(str::to_string),
        annotations: image
            .manifest
            .get("annotations")
            .cloned()
            .unwrap_or_default(),
        layers,
    })
}

/// The config's `os/architecture[/variant]`, `?` for a part it lacks.
fn platform(c: &serde_json::Value) -> String {
    let os = c["os"].as_str().unwrap_or("?");
    let arch = c["architecture"].as_str().unwrap_or("?");
    match c["variant"].as_str() {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// The `created_by` of each layer, in layer order: history entries marked `empty_layer`
/// produce no layer, the rest pair with the layers one to one.
fn layer_history(c: &serde_json::Value) -> Vec<Option<String>> {
    c["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| e["empty_layer"] != true)
                .map(|e| e["created_by"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
