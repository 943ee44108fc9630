//! Tiny layers for unit tests of the reader and its consumers: entries written with raw
//! name bytes, because the tar crate's safe setters refuse the `..` paths under test.

/// One tar entry: (path, mode, content) or (path, link target).
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a str),
    Bytes(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Device(&'a str),
}

/// An uncompressed tar of `entries`, in order.
pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            E::Dir(p, m) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                (p, b"")
            }
            E::File(p, m, c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                (p, c.as_bytes())
            }
            E::Bytes(p, m, c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                (p, c)
            }
            E::Device(p) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                (p, b"")
            }
            E::Symlink(p, t) | E::Hardlink(p, t) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
                (p, b"")
            }
        };
        h.set_size(data.len() as u64);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `bytes` as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}
