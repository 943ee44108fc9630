//! Sinks: where a built image goes. Today an OCI image layout on disk; the registry push
//! and zip archives build on the same [`crate::image::Image`] and trees.

pub mod layout;
