//! Sinks: where a build goes. An OCI image layout on disk ([`layout`]) and Lambda zip
//! archives ([`zip`], written from the same trees); a registry repository ([`registry`],
//! pushing what the layout sink wrote).

pub mod layout;
pub mod registry;
pub mod zip;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where an output at `dest` is staged: its directory (created if needed) and its file
/// name. Sinks write a temporary `.NAME.tmp-*` sibling there and rename it into place, so
/// readers see the old output or the new one, never half of one.
pub(crate) fn staging(dest: &Path) -> Result<(PathBuf, String)> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dest
        .file_name()
        .context("the output path has no file name")?
        .to_string_lossy()
        .into_owned();
    Ok((dir, name))
}
