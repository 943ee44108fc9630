//! `ocilambda deploy`: build what a Lambda function runs and put it there. The function
//! (GetFunction) says what to build: an image function gets the image `build` makes,
//! pushed as `push` does, and is pointed at it by digest; a zip function gets the zip
//! `zip` makes (with a layer, the dependencies go to a Lambda layer version).
//!
//! Nothing is updated when the function already runs the same code (same image digest,
//! same CodeSha256), and nothing is half done: the build and the push (or the layer
//! publication) finish before the function is touched. Lambda is called through the AWS
//! SDK ([`crate::aws`]); settings, building and pushing are the other commands' modules.

use crate::aws::{Aws, AwsOptions};
use crate::build::{self, BuildRequest};
use crate::config::Settings;
use crate::output;
use crate::package::{self, ZipRequest};
use crate::push::{self, PushRequest};
use crate::report::{Event, Reporter};
use crate::target::{Arch, PyVersion};
use anyhow::{Context, Result};
use aws_sdk_lambda::types::{Architecture, LastUpdateStatus, PackageType, Runtime};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an update may take before we stop waiting (Lambda's own limit for an
/// image function's optimisation is well below this).
const WAIT_LIMIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub project_dir: PathBuf,
    /// Settings given on the command line (highest precedence).
    pub cli: Settings,
    /// Settings from the environment (`OCILAMBDA_*`).
    pub env: Settings,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: PathBuf,
    pub aws: AwsOptions,
    /// Return once Lambda accepted the update, without waiting for it to finish.
    pub no_wait: bool,
    /// Publish a version after the update.
    pub publish: bool,
    /// Point this alias at the published version.
    pub alias: Option<String>,
    /// Tags of a repository created here are immutable.
    pub immutable_tags: bool,
    pub offline: bool,
    pub pull: bool,
    pub insecure_registries: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    pub jobs: usize,
    pub epoch: u64,
    /// Zips above this go through S3 ([`package::DIRECT_UPLOAD_LIMIT`] unless a test
    /// lowers it).
    pub direct_upload_limit: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploySummary {
    pub function_arn: String,
    /// `Image` or `Zip`.
    pub package_type: String,
    /// Whether anything of the function was updated.
    pub changed: bool,
    /// The image deployed, `REGISTRY/REPOSITORY@sha256:…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    /// The zip deployed, as Lambda's CodeSha256 (base64 of its SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_sha256: Option<String>,
    pub layer_version_arn: Option<String>,
    /// The version published (`--publish`).
    pub version: Option<String>,
    pub millis: u64,
}

/// Why a deploy cannot go on; the command layer words the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployError {
    /// No `function` setting from any source.
    NoFunction,
    /// GetFunction: no such function in the region.
    FunctionNotFound { function: String, region: String },
    /// The image or zip would be built for another architecture than the function's.
    ArchMismatch {
        function: String,
        function_arch: String,
        build_arch: String,
    },
    /// A zip function whose runtime is another Python than the one built for.
    RuntimeMismatch {
        function: String,
        runtime: String,
        python: String,
    },
    /// A setting of the other package type given on the command line (a layer for an
    /// image function, a repository for a zip function).
    WrongPackageType {
        function: String,
        package_type: String,
        setting: &'static str,
    },
    /// A zip function whose runtime is not Python (or a container runtime).
    NotPython { function: String, runtime: String },
    /// The image's registry is not an ECR registry in the function's region.
    NotEcr { registry: String, region: String },
    /// Lambda reported the update as failed.
    UpdateFailed { function: String, reason: String },
    /// Lambda still reported the update in progress after [`WAIT_LIMIT`].
    WaitTimedOut { function: String },
    /// A zip above the direct-upload limit, and no S3 bucket to go through.
    NeedsBucket { size: u64, limit: u64 },
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use DeployError::*;
        match self {
            NoFunction => f.write_str("no function to deploy to"),
            FunctionNotFound { function, region } => {
                write!(f, "function {function} does not exist in {region}")
            }
            ArchMismatch {
                function,
                function_arch,
                build_arch,
            } => write!(
                f,
                "function {function} runs on {function_arch}, but the build is for {build_arch}"
            ),
            RuntimeMismatch {
                function,
                runtime,
                python,
            } => write!(
                f,
                "function {function} runs {runtime}, but the build is for Python {python}"
            ),
            WrongPackageType {
                function,
                package_type,
                setting,
            } => write!(
                f,
                "function {function} is packaged as {package_type}, which takes no `{setting}`"
            ),
            NotPython { function, runtime } => {
                write!(
                    f,
                    "function {function} runs {runtime}, not a Python runtime"
                )
            }
            NotEcr { registry, region } => write!(
                f,
                "{registry} is not an Amazon ECR registry in {region}, where the function is"
            ),
            UpdateFailed { function, reason } => {
                write!(f, "Lambda failed to update {function}: {reason}")
            }
            WaitTimedOut { function } => write!(
                f,
                "{function} was still updating after {}",
                output::duration(WAIT_LIMIT)
            ),
            NeedsBucket { size, limit } => write!(
                f,
                "the zip is {}, above the {} Lambda accepts in a request",
                output::size(*size),
                output::size(*limit)
            ),
        }
    }
}

impl std::error::Error for DeployError {}

/// What GetFunction told us, reduced to what a deploy decides on.
struct Current {
    arn: String,
    package_type: PackageType,
    arch: Arch,
    /// python3.X for a zip function.
    runtime: Option<String>,
    handler: Option<String>,
    /// Image functions: REPOSITORY@sha256:… as the function runs it.
    image: Option<String>,
    code_sha256: Option<String>,
    /// Layer version ARNs, in order.
    layers: Vec<String>,
}

/// The image a function runs, by digest: ImageUri when it names one (we always deploy
/// by digest), else ResolvedImageUri (a function deployed by tag).
fn running_image(image_uri: Option<&str>, resolved: Option<&str>) -> Option<String> {
    match image_uri {
        Some(uri) if uri.contains("@sha256:") => Some(uri.to_string()),
        _ => resolved.map(str::to_string),
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION` without its version.
fn layer_unversioned(arn: &str) -> &str {
    match arn.rsplit_once(':') {
        Some((base, version)) if version.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => arn,
    }
}

/// The function's layers with `new` in place of any version of the same layer (kept at
/// its position; appended when the function had none of it).
fn layers_with(current: &[String], new: &str) -> Vec<String> {
    let name = layer_unversioned(new);
    let mut out = Vec::new();
    let mut placed = false;
    for arn in current {
        if layer_unversioned(arn) == name {
            if !placed {
                out.push(new.to_string());
                placed = true;
            }
        } else {
            out.push(arn.clone());
        }
    }
    if !placed {
        out.push(new.to_string());
    }
    out
}

fn lambda_arch(arch: Arch) -> Architecture {
    match arch {
        Arch::Arm64 => Architecture::Arm64,
        _ => Architecture::X8664,
    }
}

/// `python3.12` → 3.12.
fn runtime_python(runtime: &str) -> Option<PyVersion> {
    runtime.strip_prefix("python")?.parse().ok()
}

struct Deployer {
    lambda: aws_sdk_lambda::Client,
    s3: aws_sdk_s3::Client,
    function: String,
    reporter: Arc<dyn Reporter>,
}

impl Deployer {
    async fn current(&self, region: &str) -> Result<Current> {
        let answer = match self
            .lambda
            .get_function()
            .function_name(&self.function)
            .send()
            .await
        {
            Ok(a) => a,
            Err(e) if crate::aws::code(&e) == Some("ResourceNotFoundException") => {
                return Err(DeployError::FunctionNotFound {
                    function: self.function.clone(),
                    region: region.to_string(),
                }
                .into());
            }
            Err(e) => return Err(crate::aws::classify("lambda:GetFunction", &e).into()),
        };
        let config = answer
            .configuration()
            .context("GetFunction returned no configuration")?;
        let arch = match config.architectures().first() {
            Some(Architecture::Arm64) => Arch::Arm64,
            _ => Arch::X86_64,
        };
        let code = answer.code();
        Ok(Current {
            arn: config.function_arn().unwrap_or(&self.function).to_string(),
            package_type: config.package_type().cloned().unwrap_or(PackageType::Zip),
            arch,
            runtime: config.runtime().map(|r| r.as_str().to_string()),
            handler: config.handler().map(str::to_string),
            image: running_image(
                code.and_then(|c| c.image_uri()),
                code.and_then(|c| c.resolved_image_uri()),
            ),
            code_sha256: config.code_sha256().map(str::to_string),
            layers: config
                .layers()
                .iter()
                .filter_map(|l| l.arn().map(str::to_string))
                .collect(),
        })
    }

    /// Poll until the last update is no longer in progress, with growing pauses.
    async fn wait(&self, what: &str) -> Result<()> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        let mut announced = false;
        loop {
            let config = self
                .lambda
                .get_function_configuration()
                .function_name(&self.function)
                .send()
                .await
                .map_err(|e| crate::aws::classify("lambda:GetFunctionConfiguration", &e))?;
            match config.last_update_status() {
                Some(LastUpdateStatus::InProgress) => {
                    if !announced {
                        announced = true;
                        self.reporter.event(Event::Step(format!(
                            "Waiting for Lambda to apply {what} to {}…",
                            self.function
                        )));
                    }
                }
                Some(LastUpdateStatus::Failed) => {
                    return Err(DeployError::UpdateFailed {
                        function: self.function.clone(),
                        reason: config
                            .last_update_status_reason()
                            .unwrap_or("no reason given")
                            .to_string(),
                    }
                    .into());
                }
                _ => {
                    self.reporter.event(Event::Step(format!(
                        "Updated {what} of {} in {}",
                        self.function,
                        output::duration(started.elapsed())
                    )));
                    return Ok(());
                }
            }
            if started.elapsed() > WAIT_LIMIT {
                return Err(DeployError::WaitTimedOut {
                    function: self.function.clone(),
                }
                .into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }

    /// Publish a version of the code just deployed (`code_sha256`, which Lambda checks
    /// did not change under us), or, when nothing changed (`reuse`: the function's current
    /// CodeSha256), the newest published version holding that code if there is one: Lambda
    /// itself publishes no new version for unchanged code. Then point `alias` at it.
    async fn publish(
        &self,
        code_sha256: Option<&str>,
        reuse: Option<&str>,
        alias: Option<&str>,
    ) -> Result<String> {
        let existing = match reuse {
            Some(sha) => self.published_with(sha).await?,
            None => None,
        };
        let version = match existing {
            Some(version) => version,
            None => self.publish_version(code_sha256).await?,
        };
        if let Some(alias) = alias {
            self.point_alias(alias, &version).await?;
        }
        Ok(version)
    }

    /// The newest published version (not $LATEST) whose code is `code_sha256`.
    async fn published_with(&self, code_sha256: &str) -> Result<Option<String>> {
        let mut newest: Option<(u64, String)> = None;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .lambda
                .list_versions_by_function()
                .function_name(&self.function)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| crate::aws::classify("lambda:ListVersionsByFunction", &e))?;
            for v in page.versions() {
                let (Some(version), Some(sha)) = (v.version(), v.code_sha256()) else {
                    continue;
                };
                if let Ok(n) = version.parse::<u64>()
                    && sha == code_sha256
                    && newest.as_ref().is_none_or(|(m, _)| n > *m)
                {
                    newest = Some((n, version.to_string()));
                }
            }
            match page.next_marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(newest.map(|(_, v)| v))
    }

    async fn publish_version(&self, code_sha256: Option<&str>) -> Result<String> {
        let mut request = self.lambda.publish_version().function_name(&self.function);
        // Lambda refuses to publish if the code changed under us since the update.
        if let Some(sha) = code_sha256 {
            request = request.code_sha256(sha);
        }
        let published = request
            .send()
            .await
            .map_err(|e| crate::aws::classify("lambda:PublishVersion", &e))?;
        let version = published
            .version()
            .context("PublishVersion returned no version")?
            .to_string();
        self.reporter.event(Event::Step(format!(
            "Published version {version} of {}",
            self.function
        )));
        Ok(version)
    }

    /// Point `alias` at `version`, creating the alias when the function has none by
    /// that name; nothing is called when it points there already.
    async fn point_alias(&self, alias: &str, version: &str) -> Result<()> {
        let current = self
            .lambda
            .get_alias()
            .function_name(&self.function)
            .name(alias)
            .send()
            .await;
        match current {
            Ok(a) if a.function_version() == Some(version) => return Ok(()),
            Ok(_) => {
                self.lambda
                    .update_alias()
                    .function_name(&self.function)
                    .name(alias)
                    .function_version(version)
                    .send()
                    .await
                    .map_err(|e| crate::aws::classify("lambda:UpdateAlias", &e))?;
            }
            Err(e) if crate::aws::code(&e) == Some("ResourceNotFoundException") => {
                self.lambda
                    .create_alias()
                    .function_name(&self.function)
                    .name(alias)
                    .function_version(version)
                    .send()
                    .await
                    .map_err(|e| crate::aws::classify("lambda:CreateAlias", &e))?;
            }
            Err(e) => return Err(crate::aws::classify("lambda:GetAlias", &e).into()),
        }
        self.reporter.event(Event::Step(format!(
            "Pointed alias {alias} of {} at version {version}",
            self.function
        )));
        Ok(())
    }
}

/// The settings a deploy works with: pyproject.toml < environment < command line.
fn merged_settings(req: &DeployRequest) -> Result<Settings> {
    Ok(crate::config::read_pyproject(&req.project_dir)?
        .overlaid_with(req.env.clone())
        .overlaid_with(req.cli.clone()))
}

/// The build settings for `current`: its architecture unless the settings name one (a
/// different one is refused before anything is built), and a refusal of settings given
/// explicitly for the other package type (from pyproject.toml they may serve another
/// function of the project).
fn checked_settings(
    req: &DeployRequest,
    settings: &Settings,
    function: &str,
    current: &Current,
) -> Result<Settings> {
    // Build for the function's architecture unless told otherwise; told otherwise is a
    // mistake caught before anything is built.
    let mut cli = req.cli.clone();
    match settings.arch {
        Some(arch) if arch != current.arch => {
            return Err(DeployError::ArchMismatch {
                function: function.to_string(),
                function_arch: current.arch.lambda_name().to_string(),
                build_arch: arch.lambda_name().to_string(),
            }
            .into());
        }
        Some(_) => {}
        None => cli.arch = Some(current.arch),
    }
    // Settings for the other kind of function are refused when given explicitly; from
    // pyproject.toml they may serve another function of the project.
    let misplaced = if current.package_type == PackageType::Image {
        [
            ("layer", req.cli.layer.is_some()),
            ("s3-bucket", req.cli.s3_bucket.is_some()),
        ]
    } else {
        [
            ("repository", req.cli.repository.is_some()),
            ("create-repository", req.cli.create_repository.is_some()),
        ]
    };
    if let Some((setting, _)) = misplaced.into_iter().find(|(_, given)| *given) {
        return Err(DeployError::WrongPackageType {
            function: function.to_string(),
            package_type: current.package_type.as_str().to_string(),
            setting,
        }
        .into());
    }
    Ok(cli)
}

pub async fn deploy(req: DeployRequest, reporter: Arc<dyn Reporter>) -> Result<DeploySummary> {
    let started = Instant::now();
    let settings = merged_settings(&req)?;
    let function = settings.function.clone().ok_or(DeployError::NoFunction)?;
    let aws = Aws::load(&req.aws).await;
    let region = aws.require_region()?.to_string();
    let deployer = Deployer {
        lambda: aws_sdk_lambda::Client::new(aws.config()),
        s3: aws_sdk_s3::Client::new(aws.config()),
        function: function.clone(),
        reporter: reporter.clone(),
    };
    let current = deployer.current(&region).await?;
    let cli = checked_settings(&req, &settings, &function, &current)?;
    let mut summary = DeploySummary {
        function_arn: current.arn.clone(),
        package_type: current.package_type.as_str().to_string(),
        changed: false,
        image_uri: None,
        code_sha256: None,
        layer_version_arn: None,
        version: None,
        millis: 0,
    };
    let req = DeployRequest { cli, ..req };
    let code_sha256 = if current.package_type == PackageType::Image {
        deploy_image(
            &req,
            &settings,
            &aws,
            &region,
            &deployer,
            &current,
            &mut summary,
        )
        .await?
    } else {
        deploy_zip(&req, &settings, &deployer, &current, &mut summary).await?
    };
    if !summary.changed {
        reporter.event(Event::Step(format!(
            "{function} is unchanged ({})",
            summary
                .image_uri
                .as_deref()
                .map(|i| output::short_digest(i.rsplit('@').next().unwrap_or(i)))
                .or(summary.code_sha256.clone())
                .unwrap_or_default()
        )));
    }
    // Also when nothing changed: a run whose update landed but whose publish failed is
    // repaired by running it again, and `--alias prod` promotes code already deployed.
    // Lambda publishes no new version for unchanged code; it answers with the latest.
    if req.publish || req.alias.is_some() {
        summary.version = Some(
            deployer
                .publish(
                    code_sha256.as_deref(),
                    (!summary.changed)
                        .then_some(current.code_sha256.as_deref())
                        .flatten(),
                    req.alias.as_deref(),
                )
                .await?,
        );
    }
    summary.millis = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Build, push, compare, update. Returns the function's CodeSha256 after the update.
async fn deploy_image(
    req: &DeployRequest,
    settings: &Settings,
    aws: &Aws,
    region: &str,
    deployer: &Deployer,
    current: &Current,
    summary: &mut DeploySummary,
) -> Result<Option<String>> {
    let repository = settings.repository.clone().ok_or(push::NoRepository)?;
    let push_request = PushRequest {
        project_dir: req.project_dir.clone(),
        reference: Some(repository),
        layout: None,
        tags: Vec::new(),
        jobs: req.jobs,
        insecure_registries: req.insecure_registries.clone(),
        ca_cert: req.ca_cert.clone(),
        env: req.env.clone(),
        cache_dir: req.cache_dir.clone(),
        create_repository: settings.create_repository,
        immutable_tags: req.immutable_tags,
        aws: req.aws.clone(),
        aws_loaded: Some(aws.clone()),
    };
    // Checked before building: a wrong registry is known without it.
    let dest = push::destination(&push_request)?;
    if !settings.allow_non_ecr.unwrap_or(false)
        && crate::registry::ecr::region_of(&dest.registry) != Some(region)
    {
        return Err(DeployError::NotEcr {
            registry: dest.registry,
            region: region.to_string(),
        }
        .into());
    }
    build::build(
        BuildRequest {
            project_dir: req.project_dir.clone(),
            cli: req.cli.clone(),
            env: req.env.clone(),
            cache_dir: req.cache_dir.clone(),
            output: None,
            complete: false,
            pull: req.pull,
            offline: req.offline,
            insecure_registries: req.insecure_registries.clone(),
            ca_cert: req.ca_cert.clone(),
            epoch: req.epoch,
            base_digest: None,
        },
        deployer.reporter.clone(),
    )
    .await?;
    let pushed = push::push(push_request, deployer.reporter.clone()).await?;
    summary.image_uri = Some(pushed.reference.clone());
    if current.image.as_deref() == Some(pushed.reference.as_str()) {
        return Ok(None);
    }
    let updated = deployer
        .lambda
        .update_function_code()
        .function_name(&deployer.function)
        .image_uri(&pushed.reference)
        .send()
        .await
        .map_err(|e| crate::aws::classify("lambda:UpdateFunctionCode", &e))?;
    summary.changed = true;
    deployer.reporter.event(Event::Step(format!(
        "Pointed {} at {}",
        deployer.function,
        output::short_digest(&pushed.digest)
    )));
    if !req.no_wait {
        deployer.wait("the code").await?;
    }
    Ok(updated.code_sha256().map(str::to_string))
}

/// The settings a zip for `current` is built with: the function's Python (a project
/// that names another is refused) and, unless the project names its own, the function's
/// handler (a warning when the two differ: Lambda calls the function's). Also the runtime.
fn zip_settings(
    req: &DeployRequest,
    settings: &Settings,
    deployer: &Deployer,
    current: &Current,
) -> Result<(Settings, String)> {
    let runtime = current.runtime.clone().unwrap_or_default();
    let Some(function_python) = runtime_python(&runtime) else {
        return Err(DeployError::NotPython {
            function: deployer.function.clone(),
            runtime,
        }
        .into());
    };
    let mut cli = req.cli.clone();
    match settings.python_version {
        Some(p) if p != function_python => {
            return Err(DeployError::RuntimeMismatch {
                function: deployer.function.clone(),
                runtime,
                python: p.to_string(),
            }
            .into());
        }
        Some(_) => {}
        None => cli.python_version = Some(function_python),
    }
    // The function's handler is the one Lambda calls: check the zip against it unless
    // the project names its own, and say so when the two differ.
    match (&settings.handler, &current.handler) {
        (None, _) => cli.handler = current.handler.clone(),
        (Some(ours), Some(theirs)) if ours != theirs => {
            deployer.reporter.event(Event::Warning(format!(
                "function {} calls the handler {theirs}, the project names {ours}",
                deployer.function
            )));
        }
        _ => {}
    }
    Ok((cli, runtime))
}

/// Put layer version `arn` into the function's layers (keeping its others) when it is not
/// there yet, and wait for that update: the code update after it would be refused while
/// it is in progress. Whether anything changed.
async fn use_layer(deployer: &Deployer, current: &Current, arn: &str) -> Result<bool> {
    if current.layers.iter().any(|l| l == arn) {
        return Ok(false);
    }
    let layers = layers_with(&current.layers, arn);
    deployer
        .lambda
        .update_function_configuration()
        .function_name(&deployer.function)
        .set_layers(Some(layers))
        .send()
        .await
        .map_err(|e| crate::aws::classify("lambda:UpdateFunctionConfiguration", &e))?;
    deployer.wait("the layers").await?;
    Ok(true)
}

/// Zip, compare, (publish the layer, point the function at it), update the code.
async fn deploy_zip(
    req: &DeployRequest,
    settings: &Settings,
    deployer: &Deployer,
    current: &Current,
    summary: &mut DeploySummary,
) -> Result<Option<String>> {
    let (cli, runtime) = zip_settings(req, settings, deployer, current)?;
    let layer = settings.layer.clone();
    let zipped = package::zip(
        ZipRequest {
            project_dir: req.project_dir.clone(),
            cli,
            env: req.env.clone(),
            cache_dir: req.cache_dir.clone(),
            output: None,
            layer: layer.is_some(),
            offline: req.offline,
        },
        deployer.reporter.clone(),
    )?;
    let code = zipped
        .zips
        .iter()
        .find(|z| z.kind != "layer")
        .context("zip wrote no function package")?;
    let limit = req
        .direct_upload_limit
        .unwrap_or(package::DIRECT_UPLOAD_LIMIT);
    let code_changed = current.code_sha256.as_deref() != Some(code.code_sha256.as_str());
    // The code's way to Lambda (its bytes read, or put in S3, or refused for want of a
    // bucket) is settled before the function's layers change: nothing half done.
    let upload = if code_changed {
        Some(upload(deployer, code, settings.s3_bucket.as_deref(), limit).await?)
    } else {
        None
    };
    if let Some(name) = &layer {
        let layer_zip = zipped
            .zips
            .iter()
            .find(|z| z.kind == "layer")
            .context("zip wrote no layer")?;
        let arn = layer_version(
            deployer,
            name,
            layer_zip,
            &runtime,
            current.arch,
            settings.s3_bucket.as_deref(),
            limit,
        )
        .await?;
        summary.layer_version_arn = Some(arn.clone());
        summary.changed |= use_layer(deployer, current, &arn).await?;
    }
    summary.code_sha256 = Some(code.code_sha256.clone());
    let Some(upload) = upload else {
        return Ok(None);
    };
    summary.changed = true;
    send_code(deployer, code, upload, req.no_wait).await
}

/// UpdateFunctionCode with the zip's upload, then wait for it unless told not to; the
/// CodeSha256 Lambda reports.
async fn send_code(
    deployer: &Deployer,
    code: &package::ZipOutput,
    upload: Upload,
    no_wait: bool,
) -> Result<Option<String>> {
    let request = deployer
        .lambda
        .update_function_code()
        .function_name(&deployer.function);
    let request = match upload {
        Upload::Direct(blob) => request.zip_file(blob),
        Upload::S3 { bucket, key } => request.s3_bucket(bucket).s3_key(key),
    };
    let updated = request
        .send()
        .await
        .map_err(|e| crate::aws::classify("lambda:UpdateFunctionCode", &e))?;
    deployer.reporter.event(Event::Step(format!(
        "Sent {} ({}) to {}",
        code.path.display(),
        output::size(code.size),
        deployer.function
    )));
    if !no_wait {
        deployer.wait("the code").await?;
    }
    Ok(updated
        .code_sha256()
        .map(str::to_string)
        .or(Some(code.code_sha256.clone())))
}

/// How a zip reaches Lambda: in the request itself, or by way of an S3 object.
enum Upload {
    Direct(aws_sdk_lambda::primitives::Blob),
    S3 { bucket: String, key: String },
}

/// The zip as the request carries it: bytes when Lambda takes them directly (up to
/// `limit`), else an S3 object under a key named by its content, put there first.
async fn upload(
    deployer: &Deployer,
    zip: &package::ZipOutput,
    bucket: Option<&str>,
    limit: u64,
) -> Result<Upload> {
    if zip.size <= limit {
        let bytes =
            std::fs::read(&zip.path).with_context(|| format!("reading {}", zip.path.display()))?;
        return Ok(Upload::Direct(aws_sdk_lambda::primitives::Blob::new(bytes)));
    }
    let Some(bucket) = bucket else {
        return Err(DeployError::NeedsBucket {
            size: zip.size,
            limit,
        }
        .into());
    };
    let started = Instant::now();
    // Content-addressed: a key names its bytes, so objects of earlier deploys are never
    // overwritten with something else, and S3 checks the bytes against our SHA-256.
    let key = format!("ocilambda/{}.zip", zip.digest.trim_start_matches("sha256:"));
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&zip.path)
        .await
        .with_context(|| format!("reading {}", zip.path.display()))?;
    deployer
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(body)
        .checksum_sha256(&zip.code_sha256)
        .send()
        .await
        .map_err(|e| crate::aws::classify("s3:PutObject", &e))
        .with_context(|| format!("uploading {} to s3://{bucket}/{key}", zip.path.display()))?;
    deployer.reporter.event(Event::Step(format!(
        "Uploaded {} ({}) to s3://{bucket}/{key} in {}",
        zip.path.display(),
        output::size(zip.size),
        output::duration(started.elapsed())
    )));
    Ok(Upload::S3 {
        bucket: bucket.to_string(),
        key,
    })
}

/// The ARN of a version of layer `name` holding exactly `zip`: the newest version when
/// it does (same CodeSha256), else a new one.
async fn layer_version(
    deployer: &Deployer,
    name: &str,
    zip: &package::ZipOutput,
    runtime: &str,
    arch: Arch,
    bucket: Option<&str>,
    limit: u64,
) -> Result<String> {
    let lambda = &deployer.lambda;
    let listed = lambda
        .list_layer_versions()
        .layer_name(name)
        .compatible_runtime(Runtime::from(runtime))
        .compatible_architecture(lambda_arch(arch))
        .max_items(1)
        .send()
        .await;
    let newest = match listed {
        Ok(l) => l.layer_versions().first().map(|v| v.version()),
        Err(e) if crate::aws::code(&e) == Some("ResourceNotFoundException") => None,
        Err(e) => return Err(crate::aws::classify("lambda:ListLayerVersions", &e).into()),
    };
    if let Some(version) = newest {
        let got = lambda
            .get_layer_version()
            .layer_name(name)
            .version_number(version)
            .send()
            .await
            .map_err(|e| crate::aws::classify("lambda:GetLayerVersion", &e))?;
        if got.content().and_then(|c| c.code_sha256()) == Some(zip.code_sha256.as_str())
            && let Some(arn) = got.layer_version_arn()
        {
            deployer.reporter.event(Event::Step(format!(
                "Layer {name} is unchanged (version {version})"
            )));
            return Ok(arn.to_string());
        }
    }
    let content = match upload(deployer, zip, bucket, limit).await? {
        Upload::Direct(blob) => aws_sdk_lambda::types::LayerVersionContentInput::builder()
            .zip_file(blob)
            .build(),
        Upload::S3 { bucket, key } => aws_sdk_lambda::types::LayerVersionContentInput::builder()
            .s3_bucket(bucket)
            .s3_key(key)
            .build(),
    };
    let published = lambda
        .publish_layer_version()
        .layer_name(name)
        .content(content)
        .compatible_runtimes(Runtime::from(runtime))
        .compatible_architectures(lambda_arch(arch))
        .send()
        .await
        .map_err(|e| crate::aws::classify("lambda:PublishLayerVersion", &e))?;
    let arn = published
        .layer_version_arn()
        .context("PublishLayerVersion returned no ARN")?
        .to_string();
    deployer.reporter.event(Event::Step(format!(
        "Published layer {name} version {} ({})",
        published.version(),
        output::size(zip.size)
    )));
    Ok(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_image_is_the_digest_deployed_else_the_resolved_one() {
        let d = format!("sha256:{}", "a".repeat(64));
        let by_digest = format!("1.dkr.ecr.us-east-1.amazonaws.com/fn@{d}");
        assert_eq!(
            running_image(Some(&by_digest), Some("ignored")),
            Some(by_digest.clone())
        );
        let resolved = format!("1.dkr.ecr.us-east-1.amazonaws.com/fn@{d}");
        assert_eq!(
            running_image(
                Some("1.dkr.ecr.us-east-1.amazonaws.com/fn:latest"),
                Some(&resolved)
            ),
            Some(resolved)
        );
        assert_eq!(running_image(None, None), None);
    }

    #[test]
    fn a_new_layer_version_replaces_its_older_one_and_keeps_the_others() {
        let a1 = "arn:aws:lambda:us-east-1:1:layer:deps:1";
        let a2 = "arn:aws:lambda:us-east-1:1:layer:deps:2";
        let other = "arn:aws:lambda:us-east-1:1:layer:ext:7";
        assert_eq!(
            layers_with(&[other.into(), a1.into()], a2),
            vec![other.to_string(), a2.to_string()]
        );
        assert_eq!(
            layers_with(&[a1.into(), other.into()], a2),
            vec![a2.to_string(), other.to_string()]
        );
        assert_eq!(layers_with(&[], a2), vec![a2.to_string()]);
        assert_eq!(
            layers_with(&[other.into()], a2),
            vec![other.to_string(), a2.to_string()]
        );
    }

    #[test]
    fn runtimes_name_their_python() {
        assert_eq!(runtime_python("python3.12"), Some(PyVersion(3, 12)));
        assert_eq!(runtime_python("nodejs20.x"), None);
    }
}
