//! What the image runs on: the Lambda Python version and architecture, and what follows
//! from them (runtime glibc, the wheel platform uv installs for, the interpreter path).

use anyhow::{Result, bail};
use std::fmt;

pub use crate::oci::Arch;

/// Python versions AWS Lambda offers as `public.ecr.aws/lambda/python:X.Y`.
pub const LAMBDA_PYTHONS: &[(u32, u32)] = &[(3, 10), (3, 11), (3, 12), (3, 13), (3, 14)];

/// Used when neither flag, base tag nor requires-python decide.
pub const DEFAULT_PYTHON: PyVersion = PyVersion(3, 13);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PyVersion(pub u32, pub u32);

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A Python version Lambda does not run, or no version at all; the command layer words
/// the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    NotLambda(PyVersion),
    NotAVersion(String),
}

impl std::fmt::Display for VersionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionError::NotLambda(v) => write!(f, "Python {v} is not a Lambda Python runtime"),
            VersionError::NotAVersion(s) => write!(f, "`{s}` is not a Python version"),
        }
    }
}

impl std::error::Error for VersionError {}

impl std::str::FromStr for PyVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parsed = s
            .split_once('.')
            .and_then(|(a, b)| Some(PyVersion(a.parse().ok()?, b.parse().ok()?)));
        match parsed {
            Some(v) if LAMBDA_PYTHONS.contains(&(v.0, v.1)) => Ok(v),
            Some(v) => bail!(VersionError::NotLambda(v)),
            None => bail!(VersionError::NotAVersion(s.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub python: PyVersion,
    pub arch: Arch,
}

impl Target {
    /// Python 3.12+ images are Amazon Linux 2023; 3.10 and 3.11 are Amazon Linux 2.
    pub fn is_al2023(&self) -> bool {
        self.python >= PyVersion(3, 12)
    }

    pub fn os_name(&self) -> &'static str {
        if self.is_al2023() {
            "Amazon Linux 2023"
        } else {
            "Amazon Linux 2"
        }
    }

    pub fn glibc(&self) -> &'static str {
        if self.is_al2023() { "2.34" } else { "2.26" }
    }

    /// The `--python-platform` value for uv. Amazon Linux 2 has glibc 2.26, but uv offers
    /// no manylinux_2_26 target (it jumps from 2_17 to 2_28), so AL2 gets manylinux2014
    /// (glibc 2.17): never a wheel the runtime cannot load, at the cost of the rare
    /// wheel tagged exactly 2_24/2_26.
    pub fn uv_platform(&self) -> String {
        let m = self.arch.machine();
        if self.is_al2023() {
            format!("{m}-manylinux_2_34")
        } else {
            format!("{m}-manylinux2014")
        }
    }

    /// Where the Lambda image keeps the interpreter (console-script shebangs point here).
    pub fn interpreter_path(&self) -> String {
        format!("/var/lang/bin/python{}", self.python)
    }

    pub fn describe(&self) -> String {
        format!(
            "Python {} on {} ({}, glibc {})",
            self.python,
            self.arch.lambda_name(),
            self.os_name(),
            self.glibc()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_follows_the_runtime_os() {
        let t = Target {
            python: "3.11".parse().unwrap(),
            arch: "aarch64".parse().unwrap(),
        };
        assert_eq!(t.uv_platform(), "aarch64-manylinux2014");
        assert_eq!(t.glibc(), "2.26");
        let t = Target {
            python: "3.13".parse().unwrap(),
            arch: "amd64".parse().unwrap(),
        };
        assert_eq!(t.uv_platform(), "x86_64-manylinux_2_34");
        assert_eq!(t.interpreter_path(), "/var/lang/bin/python3.13");
        assert!("3.9".parse::<PyVersion>().is_err());
        assert!("three".parse::<PyVersion>().is_err());
        assert!("sparc".parse::<Arch>().is_err());
    }
}
