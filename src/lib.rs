//! ocilambda: build AWS Lambda Python images and zips from a uv project, without Docker.
//!
//! The pipeline, one module per step: [`config`] (the settings, typed) → [`project`]
//! (pyproject, uv.lock) → [`plan`] (the staging plan: target, selection, parts staged by
//! [`stage`], uv export + uv pip install + bytecode) → [`layers`] (reproducible tar+gzip
//! blobs) → [`assemble`] (config and manifest on top of a [`base`], with [`provenance`])
//! → [`sink`] (OCI layout on disk, registry). [`registry`] talks to registries; [`build`]
//! and [`push`] wire the steps together for the CLI, [`package`] encodes the same plan as
//! Lambda zips, [`login`] keeps credentials, [`invoke`] runs a built image locally.
//! [`image`] is the one image model: an image from a layout, a registry or a build in
//! progress, with the one blob locator; the base, the audits, invoke and the sinks all
//! hold that type.

pub mod assemble;
pub mod audit;
pub mod aws;
pub mod base;
pub mod build;
pub mod cache;
pub mod children;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod diagnostics;
pub mod digest;
pub mod error;
pub mod fs;
pub mod handler;
pub mod image;
pub mod invoke;
pub mod layer;
pub mod layers;
pub mod login;
pub mod oci;
pub mod output;
pub mod package;
pub mod plan;
pub mod project;
pub mod provenance;
pub mod push;
pub mod registry;
pub mod report;
pub mod sbom;
pub mod sink;
pub mod stage;
pub mod target;
pub mod tree;
