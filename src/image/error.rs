//! Why an image cannot be read; the command layer words the advice
//! ([`crate::diagnostics`]).

use std::path::PathBuf;

/// An IMAGE or layout argument that names no image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// IMAGE names a path (or a bare name) where there is no layout.
    NoLayout(String),
    /// A directory without index.json.
    NoIndex(PathBuf),
    /// Push's layout (the build output) is missing.
    NothingBuilt(PathBuf),
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::NoLayout(spec) => write!(f, "no OCI image layout at {spec}"),
            ImageError::NoIndex(dir) => write!(
                f,
                "{} is not an OCI image layout (no index.json)",
                dir.display()
            ),
            ImageError::NothingBuilt(dir) => write!(f, "no image layout at {}", dir.display()),
        }
    }
}

impl std::error::Error for ImageError {}
