//! Upload bodies: a blob streamed from a file, or from another registry's response (and
//! kept in the cache on the way through), checked against its digest as it goes.
//!
//! The check happens before the last chunk leaves: the stream holds the blob's final
//! bytes back until the digest of everything matches, so a corrupted blob never reaches
//! the registry complete (the request is cut short and nothing is committed). Nothing
//! here holds more than one chunk in memory.
//!
//! Also the bodies that are read whole (manifests, configs, tokens, error answers), each
//! under a cap, so that a broken or hostile registry cannot fill memory.

use super::error::{BodyKind, RegistryError};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use sha2::{Digest as _, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read size for files: large enough that syscalls and hashing calls are few, small
/// enough that memory stays flat whatever the layer size.
const CHUNK: usize = 256 * 1024;

/// The most a manifest or index may hold: the OCI distribution spec lets registries refuse
/// larger ones ("at least 4 megabytes") and so do the large registries, so nothing we
/// could pull or push legitimately exceeds it.
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

/// The most an image config may hold when its size is not known in advance. The spec
/// sets no limit; real configs (environment, labels, a history line per layer) are a
/// few KiB to a few hundred, so 8 MiB is ample and still harmless to hold and parse.
pub const CONFIG_LIMIT: u64 = 8 * 1024 * 1024;

/// The most a token endpoint's answer may hold: a bearer token is a JWT of a few KiB
/// (registries with many scopes in one token stay under 100 KiB); 1 MiB is room enough.
pub const TOKEN_LIMIT: u64 = 1024 * 1024;

/// How much of an error answer we read: only its first `errors[]` entry is ever shown.
const ERROR_LIMIT: usize = 64 * 1024;

/// Read `response`'s body whole, failing with [`RegistryError::TooLarge`] as soon as it
/// exceeds `limit` (announced or actual), and when a chunk takes longer than the read
/// timeout: an endless answer stops at the cap, not at the timeout.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
    kind: BodyKind,
) -> anyhow::Result<Vec<u8>> {
    let too_large = || anyhow::Error::new(RegistryError::TooLarge { body: kind, limit });
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = super::within("reading the answer", response.chunk()).await? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The start of an error answer, as text; whatever fails to arrive is left out (the
/// status alone is enough to act on).
pub async fn error_text(mut response: reqwest::Response) -> String {
    let mut out = Vec::new();
    while out.len() < ERROR_LIMIT {
        match super::within("reading the error", response.chunk()).await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(ERROR_LIMIT);
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes sent so far in the current attempt, for progress bars.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// What one upload attempt learned while streaming, read by the caller afterwards.
pub struct Watch {
    started: Instant,
    /// Milliseconds after `started` when a chunk last moved: the idle timer's input.
    last_activity_ms: AtomicU64,
    /// Set when the content does not match its digest: not worth retrying.
    pub corrupt: Mutex<Option<String>>,
    /// Bytes read from another registry (a lazily fetched base layer).
    pub downloaded: AtomicU64,
}

impl Watch {
    pub fn new() -> Arc<Watch> {
        Arc::new(Watch {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            corrupt: Mutex::new(None),
            downloaded: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since bytes last moved (or since the attempt started).
    pub fn idle(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn refuse(&self, message: String) -> io::Error {
        *self.corrupt.lock().unwrap() = Some(message.clone());
        io::Error::new(io::ErrorKind::InvalidData, message)
    }
}

/// Where the bytes come from, and where to keep a copy.
struct Tee {
    file: tokio::fs::File,
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

struct Pipe {
    chunks: BoxStream<'static, io::Result<Bytes>>,
    what: String,
    digest: String,
    size: u64,
    hasher: Sha256,
    seen: u64,
    tee: Option<Tee>,
    watch: Arc<Watch>,
    progress: Progress,
    remote: bool,
    done: bool,
}

impl Pipe {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        let chunk = match self.chunks.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(e));
            }
            None => {
                self.done = true;
                if self.seen == self.size {
                    return None;
                }
                return Some(Err(self.watch.refuse(format!(
                    "{} holds {} bytes, but its descriptor says {}",
                    self.what, self.seen, self.size
                ))));
            }
        };
        self.watch.touch();
        if self.remote {
            self.watch
                .downloaded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        self.seen += chunk.len() as u64;
        self.hasher.update(&chunk);
        if self.seen > self.size {
            self.done = true;
            return Some(Err(self.watch.refuse(format!(
                "{} is larger than the {} bytes its descriptor says",
                self.what, self.size
            ))));
        }
        if let Some(tee) = &mut self.tee
            && let Err(e) = tee.file.write_all(&chunk).await
        {
            self.done = true;
            return Some(Err(e));
        }
        if self.seen == self.size {
            // The last chunk: it leaves only if everything matches.
            let got = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            if got != self.digest {
                self.done = true;
                return Some(Err(self.watch.refuse(format!(
                    "{} does not match its digest (its content hashes to {got}); refusing to upload it",
                    self.what
                ))));
            }
            if let Some(tee) = self.tee.take()
                && let Err(e) = keep(tee).await
            {
                self.done = true;
                return Some(Err(io::Error::other(e)));
            }
        }
        (self.progress)(self.seen);
        Some(Ok(chunk))
    }
}

/// Move a verified download into the cache.
async fn keep(mut tee: Tee) -> anyhow::Result<()> {
    tee.file.flush().await?;
    drop(tee.file);
    crate::fs::persist_readable(tee.tmp, &tee.dest)
}

fn into_body(pipe: Pipe) -> reqwest::Body {
    let stream = futures_util::stream::unfold(pipe, |mut pipe| async move {
        pipe.next().await.map(|item| (item, pipe))
    });
    reqwest::Body::wrap_stream(stream)
}

/// The chunks of a file, read asynchronously.
fn file_chunks(file: tokio::fs::File) -> BoxStream<'static, io::Result<Bytes>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = BytesMut::with_capacity(CHUNK);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

/// A blob's body from a file, checked against `digest` and `size` as it streams.
pub async fn from_file(
    path: &Path,
    what: String,
    digest: &str,
    size: u64,
    watch: Arc<Watch>,
    progress: Progress,
) -> anyhow::Result<reqwest::Body> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    let len = file.metadata().await?.len();
    if len != size {
        // Cheap to know before sending a byte.
        let message = format!("{what} holds {len} bytes, but its descriptor says {size}");
        return Err(anyhow::Error::new(watch.refuse(message)));
    }
    Ok(into_body(Pipe {
        chunks: file_chunks(file),
        what,
        digest: digest.to_string(),
        size,
        hasher: Sha256::new(),
        seen: 0,
        tee: None,
        watch,
        progress,
        remote: false,
        done: false,
    }))
}

/// A blob's body from another registry's response, written to `keep_at` (atomically, and
/// only once verified) as it passes through.
pub fn from_response(
    response: reqwest::Response,
    what: String,
    digest: &str,
    size: u64,
    keep_at: &Path,
    watch: Arc<Watch>,
    progress: Progress,
) -> anyhow::Result<reqwest::Body> {
    let dir = keep_at
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no parent", keep_at.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let file = tokio::fs::File::from_std(tmp.as_file().try_clone()?);
    let chunks = response.bytes_stream().map(|r| r.map_err(io::Error::other));
    Ok(into_body(Pipe {
        chunks: chunks.boxed(),
        what,
        digest: digest.to_string(),
        size,
        hasher: Sha256::new(),
        seen: 0,
        tee: Some(Tee {
            file,
            tmp,
            dest: keep_at.to_path_buf(),
        }),
        watch,
        progress,
        remote: true,
        done: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_over(data: Vec<Bytes>, digest: &str, size: u64, watch: Arc<Watch>) -> Pipe {
        Pipe {
            chunks: futures_util::stream::iter(data.into_iter().map(Ok)).boxed(),
            what: "blob".into(),
            digest: digest.into(),
            size,
            hasher: Sha256::new(),
            seen: 0,
            tee: None,
            watch,
            progress: Arc::new(|_| {}),
            remote: false,
            done: false,
        }
    }

    async fn drain(mut pipe: Pipe) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(item) = pipe.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_matching_blob_streams_whole() {
        let digest = crate::digest::of_bytes(b"hello world");
        let watch = Watch::new();
        let chunks = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let (out, err) = drain(pipe_over(chunks, &digest, 11, watch.clone())).await;
        assert!(err.is_none());
        assert_eq!(out, b"hello world");
        assert!(watch.corrupt.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_corrupted_blob_never_sends_its_last_chunk() {
        let digest = crate::digest::of_bytes(b"hello world");
        let watch = Watch::new();
        let chunks = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"w0rld")];
        let (out, err) = drain(pipe_over(chunks, &digest, 11, watch.clone())).await;
        assert_eq!(out, b"hello ", "the final chunk must be held back");
        assert!(err.is_some());
        assert!(
            watch
                .corrupt
                .lock()
                .unwrap()
                .as_deref()
                .unwrap()
                .contains("refusing to upload")
        );
    }

    #[tokio::test]
    async fn size_mismatches_are_refused() {
        let digest = crate::digest::of_bytes(b"abc");
        let watch = Watch::new();
        let (_, err) = drain(pipe_over(
            vec![Bytes::from_static(b"abcd")],
            &digest,
            3,
            watch.clone(),
        ))
        .await;
        assert!(err.is_some() && watch.corrupt.lock().unwrap().is_some());
        let watch = Watch::new();
        let (_, err) = drain(pipe_over(
            vec![Bytes::from_static(b"ab")],
            &digest,
            3,
            watch.clone(),
        ))
        .await;
        assert!(err.is_some() && watch.corrupt.lock().unwrap().is_some());
    }
}
