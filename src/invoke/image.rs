//! The image to invoke: an OCI layout on disk (as `build` writes it) or a registry
//! reference, read down to its manifest digest, config and layer descriptors, and the
//! layer blobs as local files when the rootfs has to be unpacked.
//!
//! A layout made without `--complete` lacks the base's layer blobs; they are fetched
//! (verified) from the base named in the manifest's `org.opencontainers.image.base.name`
//! annotation into the cache, as `build --complete` would.

use super::rootfs::LayerBlob;
use crate::base::{self, Descriptor};
use crate::cache::Cache;
use crate::error::hint;
use crate::registry::{Client, Reference};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Source {
    Layout {
        dir: PathBuf,
        /// The base the image was built on, for blobs the layout left out.
        base: Option<Reference>,
    },
    Registry(Reference),
}

#[derive(Debug, Clone)]
pub struct Image {
    /// How the user named it (for messages).
    pub name: String,
    pub manifest_digest: String,
    pub config: serde_json::Value,
    pub layers: Vec<Descriptor>,
    source: Source,
}

/// The OCI architecture of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn lambda_arch(oci: &str) -> &str {
    match oci {
        "amd64" => "x86_64",
        other => other,
    }
}

/// Where IMAGE points: a layout directory, else a registry reference.
pub async fn open(
    image: Option<&str>,
    project_dir: &Path,
    client: &dyn Fn() -> Result<Client>,
    cache: &Cache,
) -> Result<(Image, Option<Client>)> {
    let default = project_dir.join(".ocilambda").join("image");
    let text = match image {
        Some(t) => t.to_string(),
        None => default.display().to_string(),
    };
    let as_path = Path::new(&text);
    if as_path.join("index.json").is_file() {
        return Ok((open_layout(as_path)?, None));
    }
    let looks_like_path = image.is_none()
        || as_path.exists()
        || text.starts_with('.')
        || text.starts_with('/')
        || !text.contains('/');
    if looks_like_path {
        bail!(hint(
            format!("no OCI image layout at {text}"),
            if image.is_none() {
                "run `ocilambda build` first, or pass IMAGE (a layout directory or REGISTRY/REPOSITORY[:TAG])"
            } else {
                "pass a layout directory written by `ocilambda build`, or a registry reference REGISTRY/REPOSITORY[:TAG]"
            }
        ));
    }
    let reference = base::parse_reference(&text)?;
    let client = client()?;
    let image = open_registry(&client, cache, reference).await?;
    Ok((image, Some(client)))
}

fn read_verified(path: &Path, digest: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let got = crate::digest::of_bytes(&bytes);
    if got != digest {
        bail!("{} has digest {got}, not {digest}", path.display());
    }
    Ok(bytes)
}

fn layout_blob(dir: &Path, digest: &str) -> Result<PathBuf> {
    Ok(dir
        .join("blobs/sha256")
        .join(crate::digest::hex_part(digest)?))
}

fn open_layout(dir: &Path) -> Result<Image> {
    let name = dir.display().to_string();
    let manifest_digest = crate::sink::layout::read_manifest_digest(dir)?;
    let manifest = read_verified(&layout_blob(dir, &manifest_digest)?, &manifest_digest)
        .with_context(|| format!("reading the manifest of {name}"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)
        .with_context(|| format!("{name}: the manifest is not JSON"))?;
    let (config_desc, layers) = descriptors(&manifest, &name)?;
    let config = read_verified(&layout_blob(dir, &config_desc.digest)?, &config_desc.digest)
        .with_context(|| format!("reading the config of {name}"))?;
    let base = manifest
        .pointer("/annotations/org.opencontainers.image.base.name")
        .and_then(|b| b.as_str())
        .and_then(|b| b.parse::<Reference>().ok());
    Ok(Image {
        name,
        manifest_digest,
        config: serde_json::from_slice(&config).context("the image config is not JSON")?,
        layers,
        source: Source::Layout {
            dir: dir.to_path_buf(),
            base,
        },
    })
}

fn descriptors(manifest: &serde_json::Value, name: &str) -> Result<(Descriptor, Vec<Descriptor>)> {
    let descriptor = |v: &serde_json::Value| -> Result<Descriptor> {
        let digest = v["digest"].as_str().context("descriptor without digest")?;
        crate::digest::hex_part(digest)?;
        Ok(Descriptor {
            media_type: base::oci_media_type(v["mediaType"].as_str().unwrap_or_default()),
            digest: digest.to_string(),
            size: v["size"].as_u64().context("descriptor without size")?,
        })
    };
    let config = descriptor(&manifest["config"]).with_context(|| format!("{name}: config"))?;
    let layers = manifest["layers"]
        .as_array()
        .with_context(|| format!("{name}: the manifest lists no layers"))?
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>>>()?;
    Ok((config, layers))
}

async fn open_registry(client: &Client, cache: &Cache, reference: Reference) -> Result<Image> {
    let name = reference.whole();
    let top = client.get_manifest(&reference).await?;
    let value: serde_json::Value =
        serde_json::from_slice(&top.bytes).with_context(|| format!("{name}: not JSON"))?;
    let (manifest_digest, manifest) = if value.get("manifests").is_some() {
        let arch = host_arch();
        let entries = value["manifests"].as_array().cloned().unwrap_or_default();
        let platform = |d: &serde_json::Value| {
            (
                d.pointer("/platform/os")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string(),
                d.pointer("/platform/architecture")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string(),
            )
        };
        let Some(chosen) = entries
            .iter()
            .find(|d| platform(d) == ("linux".into(), arch.into()))
        else {
            let have: Vec<String> = entries
                .iter()
                .map(|d| {
                    let (os, a) = platform(d);
                    format!("{os}/{a}")
                })
                .collect();
            bail!(hint(
                format!(
                    "{name} has no image for this machine's linux/{arch} (it has: {})",
                    have.join(", ")
                ),
                format!(
                    "build one with `ocilambda build --arch {}`, or invoke on a machine of the image's architecture",
                    lambda_arch(arch)
                )
            ));
        };
        let digest = chosen["digest"]
            .as_str()
            .context("index entry without digest")?;
        let pinned = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            digest.to_string(),
        );
        let m = client.get_manifest(&pinned).await?;
        (m.digest, m.bytes)
    } else {
        (top.digest, top.bytes)
    };
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let (config_desc, layers) = descriptors(&manifest, &name)?;
    let config = match cache.read_blob(&config_desc.digest) {
        Some(bytes) => bytes,
        None => {
            let path = cache.blob_path(&config_desc.digest)?;
            client
                .get_blob_to(
                    reference.registry(),
                    reference.repository(),
                    &config_desc.digest,
                    &path,
                )
                .await
                .with_context(|| format!("fetching the config of {name}"))?;
            std::fs::read(&path)?
        }
    };
    Ok(Image {
        name,
        manifest_digest,
        config: serde_json::from_slice(&config).context("the image config is not JSON")?,
        layers,
        source: Source::Registry(reference),
    })
}

impl Image {
    /// An image for another architecture cannot run here (no emulation).
    pub fn check_arch(&self) -> Result<()> {
        let os = self.config["os"].as_str().unwrap_or("linux");
        let arch = self.config["architecture"].as_str().unwrap_or("?");
        if os != "linux" || arch != host_arch() {
            bail!(hint(
                format!(
                    "{} is a {os}/{} image, but this machine runs linux/{}",
                    self.name,
                    lambda_arch(arch),
                    lambda_arch(host_arch())
                ),
                format!(
                    "build it for this machine with `ocilambda build --arch {}`, or invoke it on a {} machine",
                    lambda_arch(host_arch()),
                    lambda_arch(arch)
                )
            ));
        }
        Ok(())
    }

    /// Every layer blob as a local file: from the layout, else the cache, else fetched
    /// (verified) into the cache from the image's registry or its base's. Also returns
    /// how many blobs were fetched, and their bytes.
    pub async fn layer_blobs(
        &self,
        client: &mut Option<Client>,
        make_client: &dyn Fn() -> Result<Client>,
        cache: &Cache,
    ) -> Result<(Vec<LayerBlob>, usize, u64)> {
        let mut out = Vec::new();
        let (mut count, mut fetched) = (0, 0);
        for layer in &self.layers {
            let blob = |path: PathBuf| LayerBlob {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                path,
            };
            if let Source::Layout { dir, .. } = &self.source {
                let path = layout_blob(dir, &layer.digest)?;
                if path.is_file() {
                    out.push(blob(path));
                    continue;
                }
            }
            let path = cache.blob_path(&layer.digest)?;
            if !cache.has_blob(&layer.digest) {
                let from = match &self.source {
                    Source::Registry(r) => r.clone(),
                    Source::Layout { base: Some(b), .. } => b.clone(),
                    Source::Layout { base: None, .. } => bail!(hint(
                        format!(
                            "layer {} is missing from {} and the manifest names no base to fetch it from",
                            layer.digest, self.name
                        ),
                        "build with --complete, or invoke the image from its registry"
                    )),
                };
                if client.is_none() {
                    *client = Some(make_client()?);
                }
                let c = client.as_ref().expect("just made");
                fetched += c
                    .get_blob_to(from.registry(), from.repository(), &layer.digest, &path)
                    .await
                    .with_context(|| {
                        format!("fetching layer {} from {}", layer.digest, from.whole())
                    })?;
                count += 1;
            }
            out.push(blob(path));
        }
        Ok((out, count, fetched))
    }
}

/// What to run, from the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
}

impl RunConfig {
    pub fn of(config: &serde_json::Value, name: &str) -> Result<RunConfig> {
        let strings = |key: &str| -> Vec<String> {
            config["config"][key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut argv = strings("Entrypoint");
        argv.extend(strings("Cmd"));
        if argv.is_empty() {
            bail!(hint(
                format!("{name} has neither an Entrypoint nor a Cmd: nothing to run"),
                "build it on a Lambda base image (public.ecr.aws/lambda/python:X.Y)"
            ));
        }
        let env = strings("Env")
            .into_iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let workdir = config["config"]["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(RunConfig { argv, env, workdir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_config_is_entrypoint_then_cmd() {
        let config = serde_json::json!({"config": {
            "Entrypoint": ["/lambda-entrypoint.sh"], "Cmd": ["app.main.handler"],
            "Env": ["PATH=/var/lang/bin:/usr/bin", "LAMBDA_TASK_ROOT=/var/task"],
            "WorkingDir": "/var/task"}});
        let run = RunConfig::of(&config, "img").unwrap();
        assert_eq!(run.argv, ["/lambda-entrypoint.sh", "app.main.handler"]);
        assert_eq!(run.env[1], ("LAMBDA_TASK_ROOT".into(), "/var/task".into()));
        assert_eq!(run.workdir, "/var/task");
        assert!(RunConfig::of(&serde_json::json!({"config": {}}), "img").is_err());
    }

    #[test]
    fn an_image_of_another_architecture_is_refused() {
        let other = if host_arch() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let image = Image {
            name: "img".into(),
            manifest_digest: String::new(),
            config: serde_json::json!({"os": "linux", "architecture": other}),
            layers: vec![],
            source: Source::Layout {
                dir: PathBuf::new(),
                base: None,
            },
        };
        let err = image.check_arch().unwrap_err();
        assert!(err.to_string().contains("but this machine runs"), "{err}");
        assert!(crate::error::find_hint(&err).unwrap().contains("--arch"));
    }
}
