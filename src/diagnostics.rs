//! The command layer's advice: turns typed library errors into the `hint:` line printed
//! under `error:`. This is the one place below `main` that may name a flag or a
//! subcommand; library modules describe what went wrong and leave the advice to it.

use crate::sink::layout::LayoutError;
use crate::sink::zip::OutputError;

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
        if let Some(e) = cause.downcast_ref::<OutputError>() {
            return Some(zip_output_hint(e).to_string());
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
