//! The command layer's advice: turns typed library errors into the `hint:` line printed
//! under `error:`. This is the one place below `main` that may name a flag or a
//! subcommand; library modules describe what went wrong and leave the advice to it.

use crate::invoke::network::NetworkError;
use crate::layer::LayerError;
use crate::project::AppSourceError;
use crate::registry::{BodyKind, RegistryError};
use crate::sink::layout::LayoutError;
use crate::sink::zip::OutputError;
use crate::tree::LinkError;

/// The hint for a reference refused because it holds credentials
/// ([`crate::registry::name::NameError::Credentials`]), for the commands that parse one.
pub const CREDENTIALS_IN_REFERENCE: &str = "an image reference holds no credentials: log in with `ocilambda login REGISTRY --username ... --password-stdin` (or `docker login`) and use REGISTRY/REPOSITORY[:TAG]";

/// The hint for a command-line value refused by its type (`--arch`, `--python-version`).
pub fn value_hint(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if err
        .downcast_ref::<crate::oci::platform::UnknownArch>()
        .is_some()
    {
        return Some(ARCH_HINT.into());
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
        if let Some(e) = cause.downcast_ref::<crate::handler::NotDefined>() {
            return Some(handler_hint(e));
        }
        if cause.downcast_ref::<crate::source::MissingBlob>().is_some() {
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
    }
    crate::error::find_hint(err).map(str::to_string)
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

fn registry_hint(e: &RegistryError) -> String {
    use RegistryError::*;
    match e {
        NotAuthorised { registry, .. } if crate::registry::is_ecr(registry) => format!(
            "log in: `aws ecr get-login-password | ocilambda login {registry} --username AWS --password-stdin`"
        ),
        NotAuthorised { registry, .. } => format!(
            "log in first: `ocilambda login {registry} --username ... --password-stdin` (or `docker login`)"
        ),
        RepositoryUnknown { registry, repository, .. } if crate::registry::is_ecr(registry) => {
            format!("create it: `aws ecr create-repository --repository-name {repository}`")
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
