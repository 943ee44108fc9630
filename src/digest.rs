//! SHA-256 content digests (`sha256:<hex>`) and a writer that hashes what passes through it.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// `sha256:<hex>` of a byte slice.
pub fn of_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha256:<hex>` of a file, streamed.
pub fn of_file(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The hex part of a `sha256:` digest, after checking its shape (it becomes a file name,
/// so anything else could escape the blob directory).
pub fn hex_part(digest: &str) -> anyhow::Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => anyhow::bail!("unsupported or malformed digest `{digest}` (expected sha256:<64 hex>)"),
    }
}

/// A writer that counts and hashes every byte before passing it on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the digest and the byte count of everything written.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, len) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(len, 11);
        assert_eq!(digest, of_bytes(b"hello world"));
        assert_eq!(
            digest,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn hex_part_refuses_path_tricks() {
        assert!(hex_part("sha256:../../etc/passwd").is_err());
        assert!(hex_part("sha512:abcd").is_err());
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(hex_part(&ok).unwrap(), "a".repeat(64));
    }
}
