//! ocilambda: build AWS Lambda Python images and zips from a uv project, without Docker.
//!
//! The pipeline, one module per step: [`project`] (pyproject, uv.lock, settings) →
//! [`stage`] (uv export + uv pip install into staging dirs, bytecode) → [`layers`]
//! (reproducible tar+gzip blobs) → [`image`] (config and manifest on top of a [`base`])
//! → [`sink`] (OCI layout on disk). [`registry`] talks to registries; [`build`] wires
//! the steps together for the CLI.

pub mod base;
pub mod build;
pub mod cache;
pub mod config;
pub mod digest;
pub mod error;
pub mod image;
pub mod layers;
pub mod output;
pub mod project;
pub mod registry;
pub mod sink;
pub mod stage;
pub mod target;
pub mod tree;
