//! A CycloneDX 1.5 SBOM of the Python distributions actually installed in an image,
//! read from the `*.dist-info` directories inside its layers (so a cached layer gives the
//! same SBOM as a fresh one), with SHA-256 hashes from uv.lock for the wheel that was
//! installed. Deterministic: components sorted, timestamp = SOURCE_DATE_EPOCH, serial
//! number derived from the content. uv's own CycloneDX export is not used: it is
//! experimental, changes on every run and lists packages never installed (win32-only).

use anyhow::{Context, Result};
use cyclonedx_bom::external_models::normalized_string::NormalizedString;
use cyclonedx_bom::external_models::uri::Purl;
use cyclonedx_bom::models::bom::{Bom, SpecVersion, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::tool::{Tool, Tools};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;

pub const MEDIA_TYPE: &str = crate::oci::media::CYCLONEDX_JSON;

/// One installed distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    pub name: String,
    pub version: String,
    /// Wheel tags from the WHEEL file, to find the installed wheel's hash in uv.lock.
    pub tags: Vec<String>,
}

/// Parse RFC 822-style `Key: value` headers (METADATA, WHEEL).
fn headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Distributions installed in a gzip layer blob (dist-info directories under /var/task).
pub fn distributions_in_layer(blob: &Path) -> Result<Vec<Distribution>> {
    // dist-info directory -> ((name, version) from METADATA, tags from WHEEL)
    type Found = (Option<(String, String)>, Vec<String>);
    let mut metadata: BTreeMap<String, Found> = BTreeMap::new();
    let mut budget = crate::layer::Budget::lambda();
    crate::layer::read_file(
        blob,
        crate::oci::media::OCI_LAYER_GZIP,
        &mut budget,
        |entry| {
            let crate::layer::Op::Put(path) = &entry.op else {
                return Ok(());
            };
            let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
                return Ok(());
            };
            let dir = dir.to_string_lossy();
            if !dir.ends_with(".dist-info") || !(file == "METADATA" || file == "WHEEL") {
                return Ok(());
            }
            let mut text = String::new();
            entry.content.read_to_string(&mut text)?;
            let slot = metadata.entry(dir.into_owned()).or_default();
            let h = headers(&text);
            if file == "METADATA" {
                let get = |k: &str| h.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                if let (Some(n), Some(v)) = (get("Name"), get("Version")) {
                    slot.0 = Some((n, v));
                }
            } else {
                slot.1 = h
                    .into_iter()
                    .filter(|(k, _)| k == "Tag")
                    .map(|(_, v)| v)
                    .collect();
            }
            Ok(())
        },
    )?;
    Ok(metadata
        .into_values()
        .filter_map(|(nv, tags)| {
            nv.map(|(name, version)| Distribution {
                name,
                version,
                tags,
            })
        })
        .collect())
}

/// The sha256 uv.lock records for the artifact of `dist` that was installed: the wheel
/// whose file name carries one of its tags (or the sdist for a source build).
fn lock_hash(lock: &toml::Table, dist: &Distribution) -> Option<String> {
    let name = crate::project::normalize_name(&dist.name);
    let package = lock.get("package")?.as_array()?.iter().find(|p| {
        p.get("name")
            .and_then(|n| n.as_str())
            .map(crate::project::normalize_name)
            == Some(name.clone())
            && p.get("version").and_then(|v| v.as_str()) == Some(dist.version.as_str())
    })?;
    let wheels = package.get("wheels").and_then(|w| w.as_array());
    let wheel = wheels.into_iter().flatten().find(|w| {
        let url = w
            .get("url")
            .or_else(|| w.get("path"))
            .or_else(|| w.get("filename"))
            .and_then(|u| u.as_str())
            .unwrap_or("");
        let file = url
            .rsplit('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".whl");
        // A file name's tag triple may be compressed (`py2.py3-none-any`, `a.b` platforms).
        let parts: Vec<&str> = file.rsplitn(4, '-').collect();
        if parts.len() < 3 {
            return false;
        }
        let (plat, abi, py) = (parts[0], parts[1], parts[2]);
        dist.tags.iter().any(|t| {
            let mut it = t.split('-');
            let (tp, ta, tl) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            py.split('.').any(|x| x == tp)
                && abi.split('.').any(|x| x == ta)
                && plat.split('.').any(|x| x == tl)
        })
    });
    let hash = match wheel {
        Some(w) => w.get("hash"),
        None => package.get("sdist").and_then(|s| s.get("hash")),
    }?;
    hash.as_str()?.strip_prefix("sha256:").map(str::to_string)
}

/// The SBOM JSON for `dists` (deduplicated by name and version), described as belonging to
/// `project` at `version`.
pub fn generate(
    project: (&str, &str),
    dists: &[Distribution],
    lock: &[u8],
    epoch: u64,
) -> Result<Vec<u8>> {
    let lock: toml::Table =
        toml::from_str(&String::from_utf8_lossy(lock)).context("parsing uv.lock")?;
    let mut bom = Bom {
        serial_number: None,
        metadata: Some(metadata(project, epoch)?),
        components: Some(Components(components(dists, &lock))),
        spec_version: SpecVersion::V1_5,
        ..Bom::default()
    };
    bom.serial_number = Some(serial_number(&bom)?);
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out)
        .context("writing the SBOM")?;
    // Re-serialise through serde_json so key order is canonical (sorted), whatever the
    // crate's writer does.
    let value: serde_json::Value = serde_json::from_slice(&out)?;
    Ok(crate::oci::canonical_json(&value))
}

/// One library component per installed distribution, sorted by normalised name and
/// version, with uv.lock's sha256 of the file it was installed from when the lock has one.
fn components(dists: &[Distribution], lock: &toml::Table) -> Vec<Component> {
    let mut by_key: BTreeMap<(String, String), &Distribution> = BTreeMap::new();
    for d in dists {
        by_key.insert(
            (crate::project::normalize_name(&d.name), d.version.clone()),
            d,
        );
    }
    let mut components = Vec::new();
    for ((name, version), d) in &by_key {
        let mut c = Component::new(
            Classification::Library,
            name,
            version,
            Some(format!("pkg:pypi/{name}@{version}")),
        );
        c.purl = Purl::new("pypi", name, version).ok();
        c.hashes = lock_hash(lock, d).map(|h| {
            Hashes(vec![Hash {
                alg: HashAlgorithm::SHA_256,
                content: HashValue(h),
            }])
        });
        components.push(c);
    }
    components
}

/// The document's metadata: the build time (SOURCE_DATE_EPOCH, so it is reproducible),
/// ocilambda as the tool, and the project as the application it describes.
fn metadata(project: (&str, &str), epoch: u64) -> Result<Metadata> {
    let mut root = Component::new(Classification::Application, project.0, project.1, None);
    root.description = Some(NormalizedString::new(
        "AWS Lambda function image built by ocilambda",
    ));
    Ok(Metadata {
        timestamp: Some(
            crate::oci::rfc3339(epoch)?
                .try_into()
                .context("SBOM timestamp")?,
        ),
        tools: Some(Tools::List(vec![Tool::new(
            "ocilambda",
            "ocilambda",
            env!("CARGO_PKG_VERSION"),
        )])),
        authors: None,
        component: Some(root),
        manufacture: None,
        supplier: None,
        licenses: None,
        properties: None,
        lifecycles: None,
    })
}

/// A UUID derived from the rest of the document (`bom` without a serial), so the same
/// content always gets the same serial: a random one would change every build.
fn serial_number(bom: &Bom) -> Result<UrnUuid> {
    let mut body = Vec::new();
    bom.clone()
        .output_as_json_v1_5(&mut body)
        .context("writing the SBOM")?;
    let h = sha2::Sha256::digest(&body);
    let hex = hex::encode(&h[..16]);
    let uuid = format!(
        "urn:uuid:{}-{}-5{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][(h[8] & 3) as usize],
        &hex[17..20],
        &hex[20..32]
    );
    UrnUuid::new(uuid).map_err(|e| anyhow::anyhow!("SBOM serial number: {e:?}"))
}

/// The OCI 1.1 artifact manifest that attaches `sbom` to the image manifest `subject`
/// (digest, size): an empty config and the SBOM as its one layer.
pub fn referrer(
    sbom: &[u8],
    subject_digest: &str,
    subject_size: usize,
    epoch: u64,
) -> Result<crate::image::Referrer> {
    const EMPTY: &[u8] = b"{}";
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": crate::digest::of_bytes(EMPTY),
            "size": EMPTY.len(),
        },
        "layers": [{
            "mediaType": MEDIA_TYPE,
            "digest": crate::digest::of_bytes(sbom),
            "size": sbom.len(),
        }],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": subject_digest,
            "size": subject_size,
        },
        "annotations": {"org.opencontainers.image.created": crate::oci::rfc3339(epoch)?},
    });
    Ok(crate::image::Referrer {
        manifest: crate::oci::canonical_json(&manifest),
        artifact_type: MEDIA_TYPE.to_string(),
        blobs: vec![EMPTY.to_vec(), sbom.to_vec()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 1
[[package]]
name = "six"
version = "1.17.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://x/six-1.17.0.tar.gz", hash = "sha256:aaaa" }
wheels = [{ url = "https://x/six-1.17.0-py2.py3-none-any.whl", hash = "sha256:bbbb" }]
"#;

    #[test]
    fn sbom_is_deterministic_and_hashes_the_installed_wheel() {
        let dists = vec![Distribution {
            name: "six".into(),
            version: "1.17.0".into(),
            tags: vec!["py3-none-any".into()],
        }];
        let a = generate(("app", "0.1.0"), &dists, LOCK.as_bytes(), 0).unwrap();
        let b = generate(("app", "0.1.0"), &dists, LOCK.as_bytes(), 0).unwrap();
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["specVersion"], "1.5");
        assert_eq!(v["metadata"]["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(v["components"][0]["purl"], "pkg:pypi/six@1.17.0");
        assert_eq!(v["components"][0]["hashes"][0]["content"], "bbbb");
        assert!(v["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
        let other = generate(("app", "0.2.0"), &dists, LOCK.as_bytes(), 0).unwrap();
        let o: serde_json::Value = serde_json::from_slice(&other).unwrap();
        assert_ne!(o["serialNumber"], v["serialNumber"]);
    }
}
