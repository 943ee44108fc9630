//! The command layer's advice: turns typed library errors into the `hint:` line printed
//! under `error:`. This is the one place below `main` that may name a flag or a
//! subcommand; library modules describe what went wrong and leave the advice to it.

use crate::aws::AwsError;
use crate::base::BaseError;
use crate::deploy::DeployError;
use crate::image::ImageError;
use crate::invoke::InvokeError;
use crate::invoke::network::NetworkError;
use crate::layer::LayerError;
use crate::login::LoginError;
use crate::oci::layout::LayoutError;
use crate::package::ZipError;
use crate::plan::PlanError;
use crate::project::{AppSourceError, ProjectError};
use crate::registry::{BodyKind, RegistryError};
use crate::sink::zip::OutputError;
use crate::target::VersionError;
use crate::tree::LinkError;

/// The hint for a reference refused because it holds credentials
/// ([`crate::registry::name::NameError::Credentials`]), for the commands that parse one.
const CREDENTIALS_IN_REFERENCE: &str = "an image reference holds no credentials: log in with `ocilambda login REGISTRY --username ... --password-stdin` (or `docker login`) and use REGISTRY/REPOSITORY[:TAG]";

/// The hint for a command-line value refused by its type (`--arch`, `--python-version`).
pub fn value_hint(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if err
        .downcast_ref::<crate::oci::platform::UnknownArch>()
        .is_some()
    {
        return Some(ARCH_HINT.into());
    }
    if let Some(e) = err.downcast_ref::<VersionError>() {
        return Some(version_hint(e).into());
    }
    err.downcast_ref::<crate::error::Hint>()
        .map(|h| h.hint.clone())
}

const ARCH_HINT: &str = "use x86_64 or arm64 (Lambda's names; amd64 and aarch64 are accepted too)";

/// The hint for an error: a typed kind anywhere in its chain, else a [`crate::error::Hint`].
pub fn hint(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<LayoutError>() {
            return Some(layout_hint(e).to_string());
        }
        if cause
            .downcast_ref::<crate::oci::platform::UnknownArch>()
            .is_some()
        {
            return Some(ARCH_HINT.into());
        }
        if let Some(e) = cause.downcast_ref::<crate::registry::name::InvalidReference>() {
            return Some(match e.error {
                crate::registry::name::NameError::Credentials => CREDENTIALS_IN_REFERENCE.into(),
                _ => "use REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. public.ecr.aws/lambda/python:3.13".into(),
            });
        }
        if cause
            .downcast_ref::<crate::sink::registry::LayoutChanged>()
            .is_some()
        {
            return Some(
                "push again once the build has finished (or push a copy: ocilambda build --output DIR, then ocilambda push --layout DIR)".into(),
            );
        }
        if let Some(e) = cause.downcast_ref::<crate::base::PythonMismatch>() {
            return Some(format!(
                "use the base of Python {t} (e.g. public.ecr.aws/lambda/python:{t}), or build for the base's Python with --python-version {b}",
                t = e.target,
                b = e.base_python
            ));
        }
        if let Some(e) = cause.downcast_ref::<crate::handler::NotDefined>() {
            return Some(handler_hint(e));
        }
        if cause.downcast_ref::<crate::image::MissingBlob>().is_some() {
            return Some(
                "build again with --complete to put every blob in the layout, or give the image's registry reference".into(),
            );
        }
        if let Some(e) = cause.downcast_ref::<OutputError>() {
            return Some(zip_output_hint(e).to_string());
        }
        if let Some(e) = cause.downcast_ref::<LayerError>() {
            return Some(layer_hint(e).to_string());
        }
        if let Some(e) = cause.downcast_ref::<LinkError>() {
            return Some(link_hint(e).to_string());
        }
        if let Some(e) = cause.downcast_ref::<NetworkError>() {
            return Some(network_hint(e).to_string());
        }
        if let Some(e) = cause.downcast_ref::<AppSourceError>() {
            return Some(app_source_hint(e).to_string());
        }
        if let Some(e) = cause.downcast_ref::<RegistryError>() {
            return Some(registry_hint(e));
        }
        if let Some(e) = cause.downcast_ref::<crate::stage::NoInterpreter>() {
            return Some(no_interpreter_hint(e));
        }
        if let Some(h) = command_hint(cause) {
            return Some(h);
        }
    }
    crate::error::find_hint(err).map(str::to_string)
}

/// The hint for any error: its typed kind's, else a generic one that is still true. An
/// untyped error is one the library did not foresee (most often an I/O error on a path it
/// names), so the honest advice is to look at that path, or at the command's usage.
pub fn hint_or_fallback(err: &anyhow::Error) -> String {
    if let Some(h) = hint(err) {
        return h;
    }
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::NotFound => {
                    "check that the path named above exists (relative paths are from the current directory)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "check the permissions of the path named above, or choose another"
                }
                _ => "check the path named above: its file system refused the operation",
            }
            .into();
        }
        if cause.downcast_ref::<toml::de::Error>().is_some() {
            return "fix the TOML at the line and column shown".into();
        }
        if cause.downcast_ref::<serde_json::Error>().is_some() {
            return "the document named above is damaged or not what ocilambda expects there: check where it came from".into();
        }
    }
    "the message above says what failed; `ocilambda COMMAND --help` shows what a command expects"
        .into()
}

/// The kinds of the steps behind the commands (project, plan, zip, push, login, invoke).
fn command_hint(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(e) = cause.downcast_ref::<ProjectError>() {
        return Some(project_hint(e));
    }
    if let Some(e) = cause.downcast_ref::<PlanError>() {
        return Some(plan_hint(e));
    }
    if let Some(e) = cause.downcast_ref::<VersionError>() {
        return Some(version_hint(e).into());
    }
    if let Some(e) = cause.downcast_ref::<ZipError>() {
        return Some(zip_hint(e).into());
    }
    if cause.downcast_ref::<crate::push::NoRepository>().is_some() {
        return Some(NO_REPOSITORY.into());
    }
    if let Some(e) = cause.downcast_ref::<LoginError>() {
        return Some(login_hint(e).into());
    }
    if let Some(e) = cause.downcast_ref::<AwsError>() {
        return Some(aws_hint(e));
    }
    if let Some(e) = cause.downcast_ref::<DeployError>() {
        return Some(deploy_hint(e));
    }
    if let Some(e) = cause.downcast_ref::<InvokeError>() {
        return Some(invoke_hint(e));
    }
    if let Some(e) = cause.downcast_ref::<BaseError>() {
        return Some(base_hint(e).into());
    }
    if let Some(e) = cause.downcast_ref::<ImageError>() {
        return Some(image_hint(e).into());
    }
    if let Some(e) = cause.downcast_ref::<crate::audit::LintRefused>() {
        return Some(format!(
            "fix what `ocilambda lint {}` reports (each finding with its fix), or push anyway with --no-lint",
            e.image
        ));
    }
    None
}

fn base_hint(e: &BaseError) -> &'static str {
    match e {
        BaseError::NotCached { .. } => "run once without --offline to fill the cache",
        BaseError::NeverResolved { .. } => "run once without --offline, or pin the base by digest",
        BaseError::PlatformMissing { .. } => {
            "choose the other --arch, or a base image built for this architecture"
        }
        BaseError::WrongArch { .. } => {
            "use a multi-arch base (like public.ecr.aws/lambda/python:X.Y) or the matching --arch"
        }
        BaseError::UnsupportedManifest { .. } => "use an OCI or Docker v2 schema 2 image",
    }
}

fn image_hint(e: &ImageError) -> &'static str {
    match e {
        ImageError::NoLayout(_) => {
            "pass a layout directory written by `ocilambda build` (default .ocilambda/image), or a registry reference REGISTRY/REPOSITORY[:TAG]"
        }
        ImageError::NoIndex(_) => "build one with `ocilambda build`, or give a registry reference",
        ImageError::NothingBuilt(_) => {
            "run `ocilambda build` first (or pass --layout DIR where it wrote the image)"
        }
    }
}

const NO_REPOSITORY: &str = "pass one (`ocilambda push REGISTRY/REPOSITORY[:TAG]`), set OCILAMBDA_REPOSITORY, or set `repository` in [tool.ocilambda] of pyproject.toml";

fn project_hint(e: &ProjectError) -> String {
    match e {
        ProjectError::NoPyproject(_) => "run ocilambda in a uv project, or pass the project's directory: `ocilambda build path/to/project`".into(),
        ProjectError::NoLock(_) => "run `uv lock` to create it, then commit it with the project".into(),
        ProjectError::NotAMember { members, .. } => {
            format!("workspace members: {}", members.join(", "))
        }
        ProjectError::PythonUnsatisfied { .. } => "pass a --python-version (or base tag) that satisfies it, or widen requires-python in pyproject.toml".into(),
        ProjectError::HandlerNotFound { .. } => "check `handler` (MODULE.FUNCTION, e.g. app.main.handler) in [tool.ocilambda] or --handler".into(),
        ProjectError::HandlerNotShipped { .. } => {
            "check `handler`, and that `exclude` does not drop the module".into()
        }
        ProjectError::BadHandler(_) => {
            "e.g. `app.main.handler` for a function `handler` in app/main.py".into()
        }
    }
}

fn plan_hint(e: &PlanError) -> String {
    match e {
        PlanError::NoHandler => "pass --handler MODULE.FUNCTION (e.g. app.main.handler), or set `handler` in [tool.ocilambda]".into(),
    }
}

fn version_hint(e: &VersionError) -> &'static str {
    match e {
        VersionError::NotLambda(_) => "use one of 3.10, 3.11, 3.12, 3.13, 3.14",
        VersionError::NotAVersion(_) => "give MAJOR.MINOR, e.g. `--python-version 3.13`",
    }
}

fn zip_hint(e: &ZipError) -> &'static str {
    match e {
        ZipError::OutputIsFile(_) => {
            "with --layer, --output names the directory for layer_content.zip and app.zip"
        }
        ZipError::OutputIsDirectory(_) => {
            "--output names the zip file to write (e.g. dist/package.zip); with --layer it names a directory"
        }
        ZipError::TooLarge(_) => {
            "build a container image instead (`ocilambda build`: images may be up to 10 GB), or drop dependencies the function does not need at run time"
        }
    }
}

fn login_hint(e: &LoginError) -> &'static str {
    match e {
        LoginError::NoPassword => {
            "pipe it in, e.g. `aws ecr get-login-password | ocilambda login REGISTRY --username AWS --password-stdin`"
        }
        LoginError::NoUsername => "pass --username",
    }
}

fn invoke_hint(e: &InvokeError) -> String {
    use crate::invoke::image::lambda_name;
    match e {
        InvokeError::NoLayout(_) => "run `ocilambda build` first, or pass IMAGE (a layout directory or REGISTRY/REPOSITORY[:TAG])".into(),
        InvokeError::NoPlatform { arch, .. } => format!(
            "build one with `ocilambda build --arch {}`, or invoke on a machine of the image's architecture",
            lambda_name(arch)
        ),
        InvokeError::WrongPlatform { arch, host, .. } => format!(
            "build it for this machine with `ocilambda build --arch {host}`, or invoke it on a {arch} machine"
        ),
        InvokeError::EventTooLarge(_) => "pass a smaller event".into(),
        InvokeError::EventNotJson(_) => {
            "Lambda events are JSON documents, e.g. --event event.json with {\"key\": \"value\"}".into()
        }
        InvokeError::ClientContextTooLarge(_) => format!(
            "pass a client context of at most {} bytes of JSON",
            crate::invoke::MAX_CLIENT_CONTEXT / 4 * 3
        ),
        InvokeError::ClientContextNotJson(_) => {
            "the client context is a JSON object, e.g. --client-context context.json with {\"custom\": {\"key\": \"value\"}}".into()
        }
        InvokeError::CannotListen { .. } => "give --serve a free HOST:PORT, e.g. --serve 127.0.0.1:9001 (an IMAGE goes before --serve)".into(),
        InvokeError::BadVariable(_) => {
            "use --env KEY=VALUE, or --env KEY to pass your own value".into()
        }
        InvokeError::ReservedVariable => "leave out --env AWS_LAMBDA_RUNTIME_API".into(),
    }
}

fn layout_hint(e: &LayoutError) -> &'static str {
    match e {
        LayoutError::NotALayout(_) => {
            "choose another --output (the default is <PROJECT_DIR>/.ocilambda/image), or remove it yourself"
        }
        LayoutError::ForeignTag(_) => {
            "choose another --output, or retag that image in the layout (e.g. with skopeo copy) so `latest` is free"
        }
        LayoutError::CorruptBlob(_) => {
            "the layout is damaged: remove it (or the damaged blob) and build again"
        }
    }
}

fn zip_output_hint(e: &OutputError) -> &'static str {
    match e {
        OutputError::NotOurs(_) => {
            "choose another --output (the default is <PROJECT_DIR>/.ocilambda/package.zip), or remove it yourself"
        }
        OutputError::InAppSources(_) => {
            "write the zip outside the app sources (the default <PROJECT_DIR>/.ocilambda/ is never shipped)"
        }
    }
}

fn handler_hint(e: &crate::handler::NotDefined) -> String {
    const SHOWN: usize = 12;
    if e.defined.is_empty() {
        return "define the function in that module, or point --handler (or `handler` in [tool.ocilambda]) at the module that does".into();
    }
    let mut names = e.defined[..e.defined.len().min(SHOWN)].join(", ");
    if e.defined.len() > SHOWN {
        names.push_str(", …");
    }
    format!("it defines: {names}; fix --handler (or `handler` in [tool.ocilambda])")
}

fn layer_hint(e: &LayerError) -> &'static str {
    match e {
        LayerError::UnsupportedMediaType(_) => {
            "ocilambda reads tar and tar+gzip layers, as Lambda's base images use"
        }
        LayerError::TooLarge { .. } => {
            "move data out of the image (S3, EFS); Lambda would refuse it too"
        }
        LayerError::Refused { .. } => {
            "the image has a layer no safe unpacker applies; run `ocilambda lint` on it for details"
        }
    }
}

fn link_hint(e: &LinkError) -> &'static str {
    match e {
        LinkError::Escapes { .. } => {
            "replace the link with a copy of what it points to, or leave it out with --exclude"
        }
        LinkError::Dangling { .. } => {
            "ship the link's target too (--include), replace the link with a copy, or leave it out with --exclude"
        }
        LinkError::Loop { .. } => "break the loop, or leave the links out with --exclude",
        LinkError::Cycle { .. } => {
            "point the link at a directory that does not contain it, or leave it out with --exclude"
        }
        LinkError::TargetNotUtf8 { .. } => {
            "point the link at a UTF-8 name, or leave it out with --exclude"
        }
    }
}

fn app_source_hint(e: &AppSourceError) -> &'static str {
    match e {
        AppSourceError::NotUtf8(_) => {
            "rename it, or leave it out with --exclude (globs match names that are not UTF-8)"
        }
        AppSourceError::TooDeep(_) | AppSourceError::TooLong { .. } => {
            "flatten that directory, or leave it out with --exclude"
        }
    }
}

fn no_interpreter_hint(e: &crate::stage::NoInterpreter) -> String {
    let python = e.python;
    format!(
        "install one with `uv python install {python}`, or pass --no-compile-bytecode to ship without bytecode"
    )
}

fn registry_hint(e: &RegistryError) -> String {
    use RegistryError::*;
    match e {
        NotAuthorised { registry, tried, .. }
            if crate::registry::is_ecr(registry) || tried.contains(crate::registry::ecr::TOKEN_SOURCE) =>
        {
            "ECR refused the token of the AWS identity in use: give it ecr:GetAuthorizationToken and the push actions on the repository (ecr:BatchCheckLayerAvailability, ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload, ecr:PutImage), or pick another with --profile".into()
        }
        NotAuthorised { registry, .. } => format!(
            "log in first: `ocilambda login {registry} --username ... --password-stdin` (or `docker login`)"
        ),
        RepositoryUnknown { registry, .. } if crate::registry::is_ecr(registry) => {
            "pass --create-repository (or set `create-repository = true` in [tool.ocilambda]) to create it in ECR".into()
        }
        RepositoryUnknown { registry, .. } if registry == "public.ecr.aws" => {
            "create it: `aws ecr-public create-repository --repository-name NAME`".into()
        }
        RepositoryUnknown { .. } => {
            "create the repository in the registry first, or check the name".into()
        }
        NotFound { .. } => "check the repository name and tag".into(),
        TagImmutable { .. } => {
            "the repository's tags are immutable: push with a new tag (e.g. `--tag $(git rev-parse --short HEAD)`)".into()
        }
        UntrustedTls { ca_given: false, .. } => {
            "if the registry uses TLS with a private CA, pass --ca-cert FILE (or set SSL_CERT_FILE)".into()
        }
        UntrustedTls { ca_given: true, .. } => {
            "the certificate file given (--ca-cert or SSL_CERT_FILE) does not vouch for this server: pass the CA that signed its certificate, or the certificate itself".into()
        }
        Unreachable {
            plain_http_allowed: true,
            ..
        } => "check that the registry is running and the address is right".into(),
        Unreachable { registry, .. } => format!(
            "check the network; for a plain-HTTP registry pass `--insecure-registry {registry}`"
        ),
        Status { .. } => "check the registry's status and try again".into(),
        TooLarge {
            body: BodyKind::Blob,
            ..
        } => "the registry serves a blob that does not match the image's manifest: report it to the registry's operator".into(),
        TooLarge { .. } => {
            "the registry is broken or hostile: no valid image needs an answer that large; check the reference".into()
        }
        DamagedBlob(_) => {
            "the image on disk is damaged: run `ocilambda build` again (for a base layer, clear the cache entry or the base registry's copy)".into()
        }
        UploadFailed { .. } => "the registry or the network is failing; try again later".into(),
        MalformedCredentials { file, key, .. } => format!(
            "fix or remove `auths.\"{key}\"` in {} (its `auth` must be base64 of USER:PASSWORD), or log in again with `ocilambda login`",
            file.display()
        ),
    }
}

fn aws_hint(e: &AwsError) -> String {
    use AwsError::*;
    match e {
        NoCredentials { .. } => "give AWS credentials one of these ways (in CI: GitHub's OIDC with aws-actions/configure-aws-credentials), or pick a profile with --profile".into(),
        NoRegion => "pass --region, or set AWS_REGION".into(),
        AccessDenied { action, .. } => format!(
            "allow `{action}` to the identity in use (its IAM policy), or use another with --profile"
        ),
        Throttled { .. } => "AWS is rate-limiting this account; try again in a minute".into(),
        Unreachable { .. } => {
            "check the network, and AWS_ENDPOINT_URL if it is set (a proxy or a local endpoint)".into()
        }
        BadCredentials { .. } => {
            "the credentials in use are expired or wrong: renew them (e.g. `aws sso login`, or a new role session)".into()
        }
        Service { .. } => "the message above is AWS's own; check the resource it names".into(),
    }
}

fn deploy_hint(e: &DeployError) -> String {
    use DeployError::*;
    match e {
        NoFunction => "pass --function NAME (or set `function` in [tool.ocilambda], or OCILAMBDA_FUNCTION)".into(),
        FunctionNotFound { function, region } => format!(
            "create it first, e.g. `aws lambda create-function --function-name {function} --region {region} --package-type Image --code ImageUri=... --role ARN` (or --runtime python3.X --handler ... --zip-file fileb://.ocilambda/package.zip), or check --region"
        ),
        ArchMismatch { function_arch, .. } => format!(
            "build for the function's architecture: drop --arch (deploy uses the function's) or pass --arch {function_arch}"
        ),
        RuntimeMismatch { runtime, .. } => format!(
            "build for the function's runtime: drop --python-version (deploy uses the function's) or change the function's runtime from {runtime}"
        ),
        NotPython { .. } => "deploy updates Python functions only: check --function".into(),
        WrongPackageType { setting, .. } => format!(
            "drop --{setting}, or check --function: image functions take --repository, zip functions --layer and --s3-bucket"
        ),
        NotEcr { .. } => "Lambda runs images from ECR in its own region: push to ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME (--repository), or pass --allow-non-ecr for a mirror Lambda can pull from".into(),
        UpdateFailed { .. } => "the reason above is Lambda's; fix it and deploy again (the function keeps running its previous code)".into(),
        WaitTimedOut { .. } => "check the function in the Lambda console; deploy again once it is Active".into(),
        NeedsBucket { .. } => "pass --s3-bucket BUCKET (a bucket in the function's region; or set `s3-bucket` in [tool.ocilambda]) to upload it through S3".into(),
    }
}

fn network_hint(e: &NetworkError) -> &'static str {
    match e {
        NetworkError::NoProvider => {
            "install passt (`sudo apt-get install passt`, which provides pasta) or slirp4netns; or pass --network none (no network) or --network host (the host's, loopback included)"
        }
        NetworkError::Provider { .. } | NetworkError::Listen { .. } => {
            "pass --network none to run without a network, or --network host to share the host's"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The hint `main` prints for `e`, which must be there and say something.
    fn hint_of<E: std::error::Error + Send + Sync + 'static>(e: E) -> String {
        let shown = e.to_string();
        let h = hint(&anyhow::Error::new(e).context("doing something"))
            .unwrap_or_else(|| panic!("no hint for `{shown}`"));
        assert!(!h.trim().is_empty(), "empty hint for `{shown}`");
        h
    }

    fn p() -> PathBuf {
        PathBuf::from("/x")
    }

    fn s() -> String {
        "x".to_string()
    }

    // Each `every_*` lists one value of every variant. The match without a wildcard makes
    // a new variant fail to compile until it is listed, and so checked for a hint.

    fn every_layout() -> Vec<LayoutError> {
        match LayoutError::NotALayout(p()) {
            LayoutError::NotALayout(_)
            | LayoutError::ForeignTag(_)
            | LayoutError::CorruptBlob(_) => {}
        }
        vec![
            LayoutError::NotALayout(p()),
            LayoutError::ForeignTag(p()),
            LayoutError::CorruptBlob(p()),
        ]
    }

    fn every_output() -> Vec<OutputError> {
        match OutputError::NotOurs(p()) {
            OutputError::NotOurs(_) | OutputError::InAppSources(_) => {}
        }
        vec![OutputError::NotOurs(p()), OutputError::InAppSources(p())]
    }

    fn every_layer() -> Vec<LayerError> {
        let sample = LayerError::TooLarge { limit: 1 };
        match sample {
            LayerError::UnsupportedMediaType(_)
            | LayerError::TooLarge { .. }
            | LayerError::Refused { .. } => {}
        }
        vec![
            LayerError::UnsupportedMediaType(s()),
            LayerError::TooLarge { limit: 1 },
            LayerError::Refused {
                entry: s(),
                reason: crate::layer::Refusal::ParentDir,
            },
        ]
    }

    fn every_link() -> Vec<LinkError> {
        let (link, target) = (s(), s());
        let sample = LinkError::TargetNotUtf8 { link: p() };
        match sample {
            LinkError::Escapes { .. }
            | LinkError::Dangling { .. }
            | LinkError::Loop { .. }
            | LinkError::Cycle { .. }
            | LinkError::TargetNotUtf8 { .. } => {}
        }
        vec![
            LinkError::Escapes {
                link: link.clone(),
                target: target.clone(),
            },
            LinkError::Dangling {
                link: link.clone(),
                target: target.clone(),
            },
            LinkError::Loop {
                link: link.clone(),
                target: target.clone(),
            },
            LinkError::Cycle { link, target },
            LinkError::TargetNotUtf8 { link: p() },
        ]
    }

    fn every_app_source() -> Vec<AppSourceError> {
        match AppSourceError::TooDeep(p()) {
            AppSourceError::NotUtf8(_)
            | AppSourceError::TooDeep(_)
            | AppSourceError::TooLong { .. } => {}
        }
        vec![
            AppSourceError::NotUtf8(p()),
            AppSourceError::TooDeep(p()),
            AppSourceError::TooLong {
                path: p(),
                bytes: 1,
            },
        ]
    }

    /// Registries with guards in their hint: ECR, ECR Public and any other.
    fn every_registry() -> Vec<RegistryError> {
        use RegistryError::*;
        match DamagedBlob(s()) {
            NotAuthorised { .. }
            | RepositoryUnknown { .. }
            | NotFound { .. }
            | TagImmutable { .. }
            | UntrustedTls { .. }
            | Unreachable { .. }
            | Status { .. }
            | TooLarge { .. }
            | DamagedBlob(_)
            | UploadFailed { .. }
            | MalformedCredentials { .. } => {}
        }
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com".to_string();
        let mut all = Vec::new();
        for registry in [ecr, "public.ecr.aws".into(), "reg.example".into()] {
            all.push(NotAuthorised {
                registry: registry.clone(),
                status: 401,
                detail: s(),
                tried: s(),
            });
            all.push(RepositoryUnknown {
                registry,
                repository: s(),
                detail: s(),
            });
        }
        for ca_given in [false, true] {
            all.push(UntrustedTls {
                registry: s(),
                https_error: s(),
                detail: s(),
                ca_given,
            });
        }
        for plain_http_allowed in [false, true] {
            all.push(Unreachable {
                registry: s(),
                detail: s(),
                attempts: 1,
                connect: true,
                plain_http_allowed,
            });
        }
        for body in [
            BodyKind::Manifest,
            BodyKind::Config,
            BodyKind::Token,
            BodyKind::Blob,
        ] {
            all.push(TooLarge { body, limit: 1 });
        }
        all.extend([
            NotFound { detail: s() },
            TagImmutable { detail: s() },
            Status {
                status: 500,
                detail: s(),
            },
            DamagedBlob(s()),
            UploadFailed {
                attempts: 1,
                last: s(),
            },
            MalformedCredentials {
                file: p(),
                key: s(),
                why: "why",
            },
        ]);
        all
    }

    fn every_project() -> Vec<ProjectError> {
        use ProjectError::*;
        match NoLock(p()) {
            NoPyproject(_)
            | NoLock(_)
            | NotAMember { .. }
            | PythonUnsatisfied { .. }
            | HandlerNotFound { .. }
            | HandlerNotShipped { .. }
            | BadHandler(_) => {}
        }
        vec![
            NoPyproject(p()),
            NoLock(p()),
            NotAMember {
                name: s(),
                root: p(),
                members: vec![s()],
            },
            PythonUnsatisfied {
                version: crate::target::DEFAULT_PYTHON,
                requires: s(),
            },
            HandlerNotFound {
                module: s(),
                top: s(),
                dir: p(),
            },
            HandlerNotShipped {
                module: s(),
                file: s(),
                root: p(),
            },
            BadHandler(s()),
        ]
    }

    fn every_invoke() -> Vec<InvokeError> {
        use InvokeError::*;
        match ReservedVariable {
            NoLayout(_)
            | NoPlatform { .. }
            | WrongPlatform { .. }
            | EventTooLarge(_)
            | EventNotJson(_)
            | ClientContextTooLarge(_)
            | ClientContextNotJson(_)
            | CannotListen { .. }
            | BadVariable(_)
            | ReservedVariable => {}
        }
        vec![
            NoLayout(p()),
            NoPlatform {
                spec: s(),
                arch: "amd64".into(),
                have: vec![s()],
            },
            WrongPlatform {
                label: s(),
                os: "linux".into(),
                arch: "arm64".into(),
                host: "x86_64".into(),
            },
            EventTooLarge(1),
            EventNotJson(serde_json::from_str::<u8>("x").unwrap_err()),
            ClientContextTooLarge(4000),
            ClientContextNotJson(s()),
            CannotListen {
                addr: s(),
                error: std::io::Error::other("busy"),
            },
            BadVariable(s()),
            ReservedVariable,
        ]
    }

    fn every_base() -> Vec<BaseError> {
        use BaseError::*;
        match (NotCached { what: s() }) {
            NotCached { .. }
            | NeverResolved { .. }
            | PlatformMissing { .. }
            | WrongArch { .. }
            | UnsupportedManifest { .. } => {}
        }
        vec![
            NotCached { what: s() },
            NeverResolved { name: s() },
            PlatformMissing {
                name: s(),
                want: s(),
                have: vec![s()],
            },
            WrongArch {
                name: s(),
                image_arch: s(),
                target: crate::oci::Arch::X86_64,
            },
            UnsupportedManifest {
                name: s(),
                media_type: s(),
            },
        ]
    }

    fn every_source() -> Vec<ImageError> {
        use ImageError::*;
        match NoLayout(s()) {
            NoLayout(_) | NoIndex(_) | NothingBuilt(_) => {}
        }
        vec![NoLayout(s()), NoIndex(p()), NothingBuilt(p())]
    }

    fn every_aws() -> Vec<AwsError> {
        use AwsError::*;
        let all = vec![
            NoCredentials { detail: s() },
            NoRegion,
            AccessDenied {
                action: s(),
                detail: s(),
            },
            Throttled {
                action: s(),
                detail: s(),
            },
            Unreachable {
                action: s(),
                detail: s(),
            },
            BadCredentials {
                action: s(),
                detail: s(),
            },
            Service {
                action: s(),
                code: s(),
                detail: s(),
            },
        ];
        for e in &all {
            // A new kind must be listed here (and get its hint).
            match e {
                NoCredentials { .. }
                | NoRegion
                | AccessDenied { .. }
                | Throttled { .. }
                | Unreachable { .. }
                | BadCredentials { .. }
                | Service { .. } => {}
            }
        }
        all
    }

    fn every_deploy() -> Vec<DeployError> {
        use DeployError::*;
        let all = vec![
            NoFunction,
            FunctionNotFound {
                function: s(),
                region: s(),
            },
            ArchMismatch {
                function: s(),
                function_arch: s(),
                build_arch: s(),
            },
            RuntimeMismatch {
                function: s(),
                runtime: s(),
                python: s(),
            },
            NotPython {
                function: s(),
                runtime: s(),
            },
            NotEcr {
                registry: s(),
                region: s(),
            },
            UpdateFailed {
                function: s(),
                reason: s(),
            },
            WaitTimedOut { function: s() },
            NeedsBucket { size: 1, limit: 1 },
        ];
        for e in &all {
            match e {
                NoFunction
                | FunctionNotFound { .. }
                | ArchMismatch { .. }
                | RuntimeMismatch { .. }
                | NotPython { .. }
                | WrongPackageType { .. }
                | NotEcr { .. }
                | UpdateFailed { .. }
                | WaitTimedOut { .. }
                | NeedsBucket { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_error_kind_has_a_hint() {
        every_base().into_iter().for_each(|e| drop(hint_of(e)));
        every_source().into_iter().for_each(|e| drop(hint_of(e)));
        every_layout().into_iter().for_each(|e| drop(hint_of(e)));
        every_output().into_iter().for_each(|e| drop(hint_of(e)));
        every_layer().into_iter().for_each(|e| drop(hint_of(e)));
        every_link().into_iter().for_each(|e| drop(hint_of(e)));
        every_app_source()
            .into_iter()
            .for_each(|e| drop(hint_of(e)));
        every_registry().into_iter().for_each(|e| drop(hint_of(e)));
        every_project().into_iter().for_each(|e| drop(hint_of(e)));
        every_invoke().into_iter().for_each(|e| drop(hint_of(e)));
        // The single-variant kinds raised below the commands.
        hint_of(crate::handler::NotDefined {
            handler: "app.main.h".into(),
            module_file: "app/main.py".into(),
            defined: vec!["handler".into()],
        });
        hint_of(crate::base::PythonMismatch {
            base: s(),
            base_python: crate::target::PyVersion(3, 11),
            target: crate::target::PyVersion(3, 12),
        });
        hint_of(crate::registry::name::InvalidReference {
            text: s(),
            error: crate::registry::name::NameError::Credentials,
        });
        hint_of(crate::image::MissingBlob {
            digest: s(),
            image: s(),
        });
        hint_of(crate::sink::registry::LayoutChanged {
            dir: p(),
            pushing: s(),
            now: s(),
        });
        hint_of(crate::oci::platform::UnknownArch(s()));
        hint_of(NetworkError::NoProvider);
        match PlanError::NoHandler {
            e @ PlanError::NoHandler => drop(hint_of(e)),
        }
        hint_of(crate::stage::NoInterpreter {
            python: crate::target::DEFAULT_PYTHON,
            install_failed: None,
        });
        for e in [
            VersionError::NotLambda(crate::target::DEFAULT_PYTHON),
            VersionError::NotAVersion(s()),
        ] {
            match e {
                VersionError::NotLambda(_) | VersionError::NotAVersion(_) => hint_of(e),
            };
        }
        for e in [
            ZipError::OutputIsFile(p()),
            ZipError::OutputIsDirectory(p()),
            ZipError::TooLarge(s()),
        ] {
            match e {
                ZipError::OutputIsFile(_)
                | ZipError::OutputIsDirectory(_)
                | ZipError::TooLarge(_) => hint_of(e),
            };
        }
        for e in [LoginError::NoPassword, LoginError::NoUsername] {
            match e {
                LoginError::NoPassword | LoginError::NoUsername => hint_of(e),
            };
        }
        hint_of(crate::push::NoRepository);
        for e in every_aws() {
            hint_of(e);
        }
        for e in every_deploy() {
            hint_of(e);
        }
        hint_of(crate::oci::platform::UnknownArch(s()));
        hint_of(NetworkError::NoProvider);
        hint_of(crate::image::MissingBlob {
            digest: s(),
            image: s(),
        });
        assert!(
            hint_of(crate::audit::LintRefused {
                image: s(),
                errors: vec![],
            })
            .contains("--no-lint")
        );
        for defined in [vec![], vec![s()]] {
            hint_of(crate::handler::NotDefined {
                handler: s(),
                module_file: s(),
                defined,
            });
        }
    }

    #[test]
    fn hints_follow_the_kind_through_context() {
        let e = anyhow::Error::new(ProjectError::NoLock(p())).context("building /x");
        assert_eq!(hint(&e).unwrap(), project_hint(&ProjectError::NoLock(p())));
        let wrong = InvokeError::WrongPlatform {
            label: s(),
            os: "linux".into(),
            arch: "arm64".into(),
            host: "x86_64".into(),
        };
        assert!(hint_of(wrong).contains("ocilambda build --arch x86_64"));
    }

    #[test]
    fn untyped_errors_get_an_honest_fallback() {
        let missing = std::fs::read("/nonexistent/ocilambda-test").unwrap_err();
        let e = anyhow::Error::new(missing).context("reading the event /nonexistent/…");
        assert!(hint(&e).is_none());
        assert!(
            hint_or_fallback(&e).contains("exists"),
            "{}",
            hint_or_fallback(&e)
        );
        let plain = anyhow::anyhow!("something odd");
        assert!(hint_or_fallback(&plain).contains("--help"));
        let toml = toml::from_str::<toml::Table>("not toml [").unwrap_err();
        let e = anyhow::Error::new(toml).context("parsing pyproject.toml");
        assert!(hint_or_fallback(&e).contains("TOML"));
        let typed = anyhow::Error::new(LoginError::NoUsername);
        assert_eq!(hint_or_fallback(&typed), "pass --username");
    }
}
