//! The architecture, the one place that maps between its names: Lambda's (`x86_64`,
//! `arm64`), OCI's (`amd64`, `arm64`, in configs and index platforms), the machine name in
//! wheel tags and ELF terms (`x86_64`, `aarch64`), and the host's (Rust's `consts::ARCH`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
}

/// A name that is no Lambda architecture (kept for the caller's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown architecture `{}`", self.0)
    }
}

impl std::error::Error for UnknownArch {}

impl std::str::FromStr for Arch {
    type Err = UnknownArch;
    /// Lambda's names, and the OCI and machine names as synonyms.
    fn from_str(s: &str) -> Result<Self, UnknownArch> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            _ => Err(UnknownArch(s.to_string())),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.lambda_name())
    }
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// Lambda's name for the architecture.
    pub fn lambda_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The OCI/Go name used in image configs and index platforms.
    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The name in wheel tags and ELF terms.
    pub fn machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The architecture of an image config or index platform (OCI names only: a config
    /// that says `x86_64` is not one Lambda or containerd would run as amd64).
    pub fn from_oci(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.oci_name() == name)
    }

    /// The machine ocilambda runs on, if Lambda has such an architecture.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mapping_between_the_names() {
        for a in Arch::ALL {
            assert_eq!(a.lambda_name().parse::<Arch>(), Ok(a));
            assert_eq!(a.oci_name().parse::<Arch>(), Ok(a));
            assert_eq!(a.machine().parse::<Arch>(), Ok(a));
            assert_eq!(Arch::from_oci(a.oci_name()), Some(a));
        }
        assert_eq!(Arch::from_oci("x86_64"), None);
        assert!("sparc".parse::<Arch>().is_err());
    }
}
