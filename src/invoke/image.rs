//! The image to invoke, read through [`crate::image`]: IMAGE or the project's build
//! output, this machine's platform picked from an index, the architecture checked (no
//! emulation), and every layer blob as a local file for the rootfs. A layout made without
//! `--complete` lacks the base's layer blobs; they are fetched into the cache as
//! `build --complete` would.

use super::InvokeError;
use super::rootfs::LayerBlob;
use crate::cache::Cache;
use crate::error::hint;
use crate::image::{self, Image, Opened, Origin, Remote};
use crate::oci::Arch;
use anyhow::{Result, bail};
use std::path::Path;

/// This machine's architecture as OCI names it (its raw name where Lambda has none).
fn host_oci() -> &'static str {
    Arch::host().map_or(std::env::consts::ARCH, Arch::oci_name)
}

/// An OCI architecture name in Lambda's words, where Lambda has it.
pub fn lambda_name(oci: &str) -> &str {
    match Arch::from_oci(oci) {
        Some(arch) => arch.lambda_name(),
        None => oci,
    }
}

/// IMAGE (a layout directory or a registry reference), else the project's build output;
/// from an index, this machine's platform.
pub async fn open(
    image: Option<&str>,
    project_dir: &Path,
    remote: &Remote,
    cache: &Cache,
) -> Result<Image> {
    let spec = match image {
        Some(text) => text.to_string(),
        None => {
            let default = project_dir.join(".ocilambda").join("image");
            if !image::is_layout(&default) {
                bail!(InvokeError::NoLayout(default));
            }
            default.display().to_string()
        }
    };
    // A bare name is a mistyped directory rather than a Docker Hub image: Lambda does not
    // run images from Docker Hub.
    if !spec.contains('/') && matches!(image::origin_of(&spec)?, Origin::Registry(_)) {
        return Err(image::not_a_layout(&spec));
    }
    let index = match image::open(&spec, remote, cache).await? {
        Opened::Image(image) => return Ok(*image),
        Opened::Index(index) => index,
    };
    let arch = host_oci();
    index
        .platform(arch, remote, cache, |have| {
            InvokeError::NoPlatform {
                spec: spec.clone(),
                arch: arch.to_string(),
                have: have.to_vec(),
            }
            .into()
        })
        .await
}

/// An image for another architecture cannot run here (no emulation).
pub fn check_arch(image: &Image) -> Result<()> {
    let os = image.config["os"].as_str().unwrap_or("linux");
    let arch = image.config["architecture"].as_str().unwrap_or("?");
    if os != "linux" || arch != host_oci() {
        bail!(InvokeError::WrongPlatform {
            label: image.label.clone(),
            os: os.to_string(),
            arch: lambda_name(arch).to_string(),
            host: lambda_name(host_oci()).to_string(),
        });
    }
    Ok(())
}

/// The image's diff_ids (bottom first), one per layer, from its config.
pub fn diff_ids(image: &Image) -> Result<Vec<String>> {
    let layers = image.descriptors()?.len();
    let ids: Vec<String> = image.config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if ids.len() != layers || ids.iter().any(|d| crate::digest::hex_part(d).is_err()) {
        bail!(
            "{}: the config's rootfs.diff_ids ({}) do not match its {layers} layers",
            image.label,
            ids.len()
        );
    }
    Ok(ids)
}

/// The blobs of the layers whose diff_ids are in `wanted`, each as a local file (see
/// [`Image::blob`]); also how many blobs were fetched, and their bytes.
pub async fn layer_blobs(
    image: &Image,
    wanted: &[String],
    remote: &Remote,
    cache: &Cache,
) -> Result<(Vec<LayerBlob>, usize, u64)> {
    let mut out = Vec::new();
    let (mut count, mut fetched) = (0, 0);
    for (layer, diff_id) in image.descriptors()?.into_iter().zip(diff_ids(image)?) {
        if !wanted.contains(&diff_id) || out.iter().any(|b: &LayerBlob| b.diff_id == diff_id) {
            continue;
        }
        let blob = image.blob(&layer.digest, remote, cache).await?;
        if let Some(bytes) = blob.fetched {
            count += 1;
            fetched += bytes;
        }
        out.push(LayerBlob {
            digest: layer.digest,
            diff_id,
            media_type: layer.media_type,
            path: blob.path,
        });
    }
    Ok((out, count, fetched))
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
        let other = if Arch::host() == Some(Arch::X86_64) {
            "arm64"
        } else {
            "amd64"
        };
        let config = serde_json::json!({"os": "linux", "architecture": other});
        let image = Image::from_bytes(
            "img".into(),
            Origin::Build,
            b"{}".to_vec(),
            config.to_string().into_bytes(),
        )
        .unwrap();
        let err = check_arch(&image).unwrap_err();
        assert!(err.to_string().contains("but this machine runs"), "{err}");
        assert!(
            crate::diagnostics::hint(&err)
                .unwrap()
                .contains("ocilambda build --arch")
        );
    }
}
