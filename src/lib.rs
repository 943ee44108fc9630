//! ocilambda: build AWS Lambda Python images and zips from a uv project, without Docker.
//!
//! The pipeline, one module per step: [`project`] (pyproject, uv.lock, settings) →
//! [`stage`] (uv export + uv pip install into staging dirs, bytecode) → [`layers`]
//! (reproducible tar+gzip blobs) → [`image`] (config and manifest on top of a [`base`])
//! → [`sink`] (OCI layout on disk, registry). [`registry`] talks to registries; [`build`]
//! and [`push`] wire the steps together for the CLI, [`package`] makes Lambda zips from
//! the same staging, [`login`] keeps credentials, [`invoke`] runs a built image locally.
//! [`source`] reads an existing image (layout or registry) for [`audit`] and [`invoke`].

pub mod audit;
pub mod base;
pub mod build;
pub mod cache;
pub mod config;
pub mod diagnostics;
pub mod digest;
pub mod error;
pub mod handler;
pub mod image;
pub mod invoke;
pub mod layer;
pub mod layers;
pub mod login;
pub mod oci;
pub mod output;
pub mod package;
pub mod project;
pub mod push;
pub mod registry;
pub mod sbom;
pub mod sink;
pub mod source;
pub mod stage;
pub mod target;
pub mod tree;
