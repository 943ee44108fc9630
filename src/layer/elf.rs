//! What lint needs of an ELF object: the machine it is built for and the newest glibc
//! symbol version it needs (its `.gnu.version_r` entries). Parsed from the bytes a layer
//! entry streams, never from an unpacked file; this module knows nothing of Lambda.

use object::read::elf::{FileHeader, SectionTable};
use object::{Endianness, elf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// `e_machine`: 62 for x86_64, 183 for aarch64, … (see [`machine_name`]).
    pub machine: u16,
    /// The newest `GLIBC_x.y` any of its version needs names, if it names one.
    pub glibc: Option<(u32, u32)>,
}

/// The machine name (`uname -m` style) of an `e_machine` value, as far as Linux on
/// Lambda's or common build hosts goes; `None` for the rest.
pub fn machine_name(machine: u16) -> Option<&'static str> {
    match elf::Machine(machine) {
        elf::EM_X86_64 => Some("x86_64"),
        elf::EM_AARCH64 => Some("aarch64"),
        elf::EM_386 => Some("i386"),
        elf::EM_ARM => Some("arm"),
        elf::EM_PPC64 => Some("ppc64"),
        elf::EM_S390 => Some("s390x"),
        elf::EM_RISCV => Some("riscv"),
        _ => None,
    }
}

/// Whether `head` (a file's first bytes) starts an ELF object.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// The facts of the ELF object `data`; `None` when it cannot be parsed (a truncated or
/// foreign file that only starts like ELF is not a finding of its own).
pub fn parse(data: &[u8]) -> Option<Elf> {
    match data.get(4)? {
        1 => facts::<elf::FileHeader32<Endianness>>(data),
        2 => facts::<elf::FileHeader64<Endianness>>(data),
        _ => None,
    }
}

fn facts<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Option<Elf> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    Some(Elf {
        machine: header.e_machine(endian).0,
        glibc: newest_glibc(&sections, endian, data),
    })
}

fn newest_glibc<'d, H: FileHeader<Endian = Endianness>>(
    sections: &SectionTable<'d, H, &'d [u8]>,
    endian: Endianness,
    data: &'d [u8],
) -> Option<(u32, u32)> {
    let (mut needs, link) = sections.gnu_verneed(endian, data).ok()??;
    let strings = sections.strings(endian, data, link).ok()?;
    let mut newest = None;
    while let Ok(Some((_, mut aux))) = needs.next() {
        while let Ok(Some(a)) = aux.next() {
            let version = a.name(endian, strings).ok().and_then(glibc_version);
            newest = newest.max(version);
        }
    }
    newest
}

/// `GLIBC_2.34` → (2, 34); `GLIBC_PRIVATE` and other names → `None`.
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    let v = std::str::from_utf8(name.strip_prefix(b"GLIBC_")?).ok()?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions_are_read_from_their_names() {
        assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version(b"GCC_3.0"), None);
    }

    /// A real object of the host: the test binary itself is ELF for this machine and needs
    /// some GLIBC version.
    #[test]
    fn the_running_binary_is_read() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_elf(&exe));
        let facts = parse(&exe).unwrap();
        let want = if cfg!(target_arch = "x86_64") {
            elf::EM_X86_64.0
        } else {
            elf::EM_AARCH64.0
        };
        assert_eq!(facts.machine, want);
        assert!(facts.glibc.is_some_and(|v| v >= (2, 2)));
        assert_eq!(parse(&exe[..64]), None);
    }
}
