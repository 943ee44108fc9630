//! Sinks: where a build goes. An OCI image layout on disk ([`layout`]) and Lambda zip
//! archives ([`zip`], written from the same trees); a registry repository ([`registry`],
//! pushing what the layout sink wrote).

pub mod layout;
pub mod registry;
pub mod zip;
