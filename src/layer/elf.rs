//! What lint needs of an ELF object: the machine it is built for and the newest glibc
//! symbol version it needs (its `.gnu.version_r` entries). Parsed from the bytes a layer
//! entry streams, never from an unpacked file, holding only the object's first and last
//! bytes ([`Kept`]); this module knows nothing of Lambda.

use object::read::ReadRef;
use object::read::elf::{FileHeader, SectionTable};
use object::{Endianness, elf};
use std::ops::Range;

/// Bytes kept from the start of an object: linkers put the dynamic string table and the
/// version needs (`.dynstr`, `.gnu.version_r`) right after the headers, before the code.
pub const HEAD: usize = 16 << 20;
/// Bytes kept from its end, where the section headers (and their names) are.
pub const TAIL: usize = 1 << 20;

/// An object's bytes as a stream leaves them: the first bytes and the last ones of an
/// object `len` bytes long (all of it when it is short). Reads that fall between the two
/// fail, and the object then has no facts: memory stays bounded for a 1 GB `.so`.
#[derive(Debug, Clone, Copy)]
pub struct Kept<'a> {
    pub head: &'a [u8],
    pub tail: &'a [u8],
    pub len: u64,
}

impl<'a> Kept<'a> {
    /// The kept bytes holding `offset`, and `offset` within them.
    fn at(self, offset: u64) -> Option<(&'a [u8], usize)> {
        if offset < self.head.len() as u64 {
            return Some((self.head, offset as usize));
        }
        let tail_start = self.len.checked_sub(self.tail.len() as u64)?;
        let i = usize::try_from(offset.checked_sub(tail_start)?).ok()?;
        (i < self.tail.len()).then_some((self.tail, i))
    }
}

impl<'a> ReadRef<'a> for Kept<'a> {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        let (bytes, i) = self.at(offset).ok_or(())?;
        let size = usize::try_from(size).map_err(|_| ())?;
        bytes.get(i..i.checked_add(size).ok_or(())?).ok_or(())
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        let (bytes, i) = self.at(range.start).ok_or(())?;
        let want = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| ())?;
        let within = bytes.get(i..).ok_or(())?;
        let within = &within[..want.min(within.len())];
        let end = within.iter().position(|b| *b == delimiter).ok_or(())?;
        Ok(&within[..end])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// `e_machine`: 62 for x86_64, 183 for aarch64, … (see [`machine_name`]).
    pub machine: u16,
    /// The newest `GLIBC_x.y` any of its version needs names, if it names one.
    pub glibc: Option<(u32, u32)>,
    /// An executable or shared object: what the loader maps. Relocatable objects (`.o`)
    /// and core dumps are data to it.
    pub loadable: bool,
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
pub fn parse(data: Kept<'_>) -> Option<Elf> {
    match data.head.get(4)? {
        1 => facts::<elf::FileHeader32<Endianness>>(data),
        2 => facts::<elf::FileHeader64<Endianness>>(data),
        _ => None,
    }
}

fn facts<H: FileHeader<Endian = Endianness>>(data: Kept<'_>) -> Option<Elf> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    Some(Elf {
        machine: header.e_machine(endian).0,
        glibc: newest_glibc(&sections, endian, data),
        loadable: matches!(header.e_type(endian), elf::ET_EXEC | elf::ET_DYN),
    })
}

fn newest_glibc<'d, H: FileHeader<Endian = Endianness>>(
    sections: &SectionTable<'d, H, Kept<'d>>,
    endian: Endianness,
    data: Kept<'d>,
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
        fn whole(b: &[u8]) -> Kept<'_> {
            Kept {
                head: b,
                tail: &[],
                len: b.len() as u64,
            }
        }
        let facts = parse(whole(&exe)).unwrap();
        let want = if cfg!(target_arch = "x86_64") {
            elf::EM_X86_64.0
        } else {
            elf::EM_AARCH64.0
        };
        assert_eq!(facts.machine, want);
        assert!(
            facts.loadable,
            "a test binary is an executable (PIE: ET_DYN)"
        );
        assert!(facts.glibc.is_some_and(|v| v >= (2, 2)));
        assert_eq!(parse(whole(&exe[..64])), None);
        // What a stream keeps of a large object (this binary is far over HEAD + TAIL) is
        // enough, and a stream that kept too little gives no facts rather than wrong ones.
        assert!(exe.len() > HEAD + TAIL, "{}", exe.len());
        let kept = Kept {
            head: &exe[..HEAD],
            tail: &exe[exe.len() - TAIL..],
            len: exe.len() as u64,
        };
        assert_eq!(parse(kept), Some(facts));
        let starved = Kept {
            head: &exe[..4096],
            tail: &exe[exe.len() - TAIL..],
            len: exe.len() as u64,
        };
        assert_eq!(parse(starved).and_then(|f| f.glibc), None);
    }
}
