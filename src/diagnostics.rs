//! The command layer's advice: turns typed library errors into the `hint:` line printed
//! under `error:`. This is the one place below `main` that may name a flag or a
//! subcommand; library modules describe what went wrong and leave the advice to it.

use crate::layer::LayerError;
use crate::project::AppSourceError;
use crate::sink::layout::LayoutError;
use crate::sink::zip::OutputError;
use crate::tree::LinkError;

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
            return Some(
                "use x86_64 or arm64 (Lambda's names; amd64 and aarch64 are accepted too)".into(),
            );
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
        if let Some(e) = cause.downcast_ref::<AppSourceError>() {
            return Some(app_source_hint(e).to_string());
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
