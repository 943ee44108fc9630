//! File-system writes every writer shares: a finished temporary file renamed into place,
//! so a reader sees the old file or the new one, never half of one.

use anyhow::{Context, Result};
use std::path::Path;

/// Rename a finished temp file into place as 0644: tempfile creates 0600, and layout
/// blobs (hard links to cache blobs) must be readable by whoever unpacks or pushes them.
pub fn persist_readable(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
