//! The OCI vocabulary at the bottom of the house: media types with one predicate per
//! question, descriptors, annotation keys, platforms and the architecture mapping,
//! canonical JSON and timestamps, and reading OCI layouts. It imports nothing of
//! ocilambda's but [`crate::digest`], so every layer above can use it.

pub mod annotation;
pub mod layout;
pub mod media;
pub mod platform;

pub use platform::Arch;

use anyhow::{Context, Result};

/// A content descriptor: `{mediaType, digest, size}`, the media type in its OCI form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// A manifest's `{mediaType, digest, size}`, checked, with the OCI media type.
    pub fn from_json(v: &serde_json::Value) -> Result<Descriptor> {
        let digest = v["digest"].as_str().context("descriptor without digest")?;
        check_digest(digest)?;
        Ok(Descriptor {
            media_type: media::to_oci(v["mediaType"].as_str().unwrap_or_default()).to_string(),
            digest: digest.to_string(),
            size: v["size"].as_u64().context("descriptor without size")?,
        })
    }
}

/// A `sha256:<64 lowercase hex>` digest, the only algorithm ocilambda reads or writes.
/// Anything else (other algorithms, `../` tricks) is refused before it becomes a path.
pub fn check_digest(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest `{digest}` (only sha256 is supported)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        anyhow::bail!("malformed digest `{digest}`");
    }
    Ok(hex)
}

/// JSON with object keys sorted and no whitespace: the same value always gives the
/// same bytes (serde_json's default map is a BTreeMap; a test guards that).
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialising a JSON value cannot fail")
}

/// RFC 3339 timestamp for an epoch in seconds.
pub fn rfc3339(epoch: u64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch as i64)
        .with_context(|| format!("timestamp {epoch} is out of range"))?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}});
        assert_eq!(canonical_json(&v), br#"{"a":{"c":3,"d":2},"b":1}"#);
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn digests_are_sha256_hex_only() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(check_digest(&good).is_ok());
        assert!(check_digest(&format!("sha512:{}", "a".repeat(128))).is_err());
        assert!(check_digest("sha256:../../etc/passwd").is_err());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
