//! Why a base image cannot be resolved or used; the command layer words the advice
//! ([`crate::diagnostics`]). Kept apart from the resolver so both read on their own.

/// A base that cannot be had (offline) or does not fit the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseError {
    /// Offline, and `what` (the base's manifest, config or a layer, named) was never
    /// fetched.
    NotCached(String),
    /// Offline, and the tag was never resolved on this machine.
    NeverResolved(String),
    /// An index without the target platform; `have` lists what it has.
    NoPlatform {
        name: String,
        platform: String,
        have: Vec<String>,
    },
    /// A single-platform base for another architecture (Lambda's name in `target`).
    WrongArch {
        name: String,
        arch: String,
        target: String,
    },
    /// Neither an OCI nor a Docker v2 schema 2 manifest.
    UnsupportedManifest { name: String, media_type: String },
}

impl std::fmt::Display for BaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseError::NotCached(what) => write!(f, "{what} is not in the cache"),
            BaseError::NeverResolved(name) => {
                write!(f, "base {name} has never been resolved on this machine")
            }
            BaseError::NoPlatform {
                name,
                platform,
                have,
            } => write!(
                f,
                "base {name} has no manifest for {platform} (it has: {})",
                have.join(", ")
            ),
            BaseError::WrongArch { name, arch, target } => write!(
                f,
                "base {name} is a {arch} image, but the target architecture is {target}"
            ),
            BaseError::UnsupportedManifest { name, media_type } => {
                write!(
                    f,
                    "base {name} has an unsupported manifest type `{media_type}`"
                )
            }
        }
    }
}

impl std::error::Error for BaseError {}
