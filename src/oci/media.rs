//! Media types, and one predicate for each question ocilambda asks of one. Docker's types
//! are accepted where registries serve them and mapped to their OCI equivalents, because
//! skopeo and umoci refuse Docker types inside an OCI layout.

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The artifact type of the CycloneDX SBOM ocilambda attaches to its images.
pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// What a manifest request accepts: both index kinds and both manifest kinds.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A multi-platform index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// A single-platform image manifest (OCI or Docker schema 2).
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// An image config (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// A gzip-compressed tar layer: the only layer kind Lambda accepts.
pub fn is_gzip_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | DOCKER_LAYER_GZIP
            | DOCKER_FOREIGN_LAYER_GZIP
    )
}

/// An uncompressed tar layer (readable, but Lambda refuses it).
pub fn is_tar_layer(media_type: &str) -> bool {
    media_type == OCI_LAYER_TAR || media_type == DOCKER_LAYER_TAR
}

/// Whether the JSON of a manifest-or-index is an index: by its `mediaType` when it has
/// one, else by its shape (`manifests` rather than `layers`), as the image spec allows the
/// field to be absent.
pub fn json_is_index(value: &serde_json::Value) -> bool {
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => is_index(m),
        None => value.get("manifests").is_some() && value.get("layers").is_none(),
    }
}

/// The OCI equivalent of a Docker media type (the bytes and digests are the same).
pub fn to_oci(media_type: &str) -> &str {
    match media_type {
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_LAYER_TAR => OCI_LAYER_TAR,
        DOCKER_FOREIGN_LAYER_GZIP => OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_per_question() {
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_LIST) && !is_index(OCI_MANIFEST));
        assert!(is_gzip_layer(DOCKER_LAYER_GZIP) && !is_gzip_layer(OCI_LAYER_TAR));
        assert!(is_tar_layer(DOCKER_LAYER_TAR));
        assert_eq!(to_oci(DOCKER_LAYER_GZIP), OCI_LAYER_GZIP);
        assert!(json_is_index(&serde_json::json!({"manifests": []})));
        assert!(!json_is_index(
            &serde_json::json!({"mediaType": OCI_MANIFEST, "manifests": []})
        ));
        assert!(!json_is_index(
            &serde_json::json!({"layers": [], "manifests": []})
        ));
    }
}
