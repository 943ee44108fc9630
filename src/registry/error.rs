//! What can go wrong talking to a registry, as kinds the command layer advises on
//! (`crate::diagnostics`). Messages say what happened and carry the registry's own
//! words; none names a flag or a subcommand, and none holds a secret.

use std::fmt;
use std::path::PathBuf;

/// A body we read whole into memory, each with its own cap (see [`super::body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Manifest,
    Config,
    Token,
    /// A blob streamed to disk, bounded by its descriptor's size.
    Blob,
}

impl fmt::Display for BodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyKind::Manifest => "manifest",
            BodyKind::Config => "image config",
            BodyKind::Token => "token response",
            BodyKind::Blob => "blob",
        })
    }
}

#[derive(Debug)]
pub enum RegistryError {
    /// 401 or 403. `tried` says which credentials were offered, in words.
    NotAuthorised {
        registry: String,
        status: u16,
        detail: String,
        tried: String,
    },
    /// `NAME_UNKNOWN`: the repository does not exist.
    RepositoryUnknown {
        registry: String,
        repository: String,
        detail: String,
    },
    /// Any other 404 (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, …).
    NotFound { detail: String },
    /// The registry would not move or create the tag (`TAG_INVALID`, immutable tags).
    TagImmutable { detail: String },
    /// HTTPS failed and the plain-HTTP fallback got 400: the registry speaks TLS with a
    /// certificate we do not trust. `ca_given`: the user already named certificates.
    UntrustedTls {
        registry: String,
        https_error: String,
        detail: String,
        ca_given: bool,
    },
    /// No usable answer after every attempt.
    Unreachable {
        registry: String,
        detail: String,
        attempts: u32,
        /// Nothing answered at all (as opposed to a request that failed midway).
        connect: bool,
        /// Plain HTTP was allowed (and tried) for this registry.
        plain_http_allowed: bool,
    },
    /// Any other unexpected status.
    Status { status: u16, detail: String },
    /// A body larger than we accept for its kind: a broken or hostile registry.
    TooLarge { body: BodyKind, limit: u64 },
    /// A blob to upload whose bytes do not match its descriptor: the copy on disk is bad.
    DamagedBlob(String),
    /// An upload that kept failing for transient reasons.
    UploadFailed { attempts: u32, last: String },
    /// A Docker config `auths` entry that cannot be decoded.
    MalformedCredentials {
        file: PathBuf,
        key: String,
        why: &'static str,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RegistryError::*;
        match self {
            NotAuthorised {
                status,
                detail,
                tried,
                ..
            } => write!(
                f,
                "not authorised ({status}, {detail}); credentials tried: {tried}"
            ),
            RepositoryUnknown {
                registry,
                repository,
                detail,
            } => write!(
                f,
                "repository {repository} does not exist in {registry} ({detail})"
            ),
            NotFound { detail } => write!(f, "not found ({detail})"),
            TagImmutable { detail } => write!(f, "the registry refused the tag ({detail})"),
            UntrustedTls {
                https_error,
                detail,
                ..
            } => write!(
                f,
                "registry answered 400 ({detail}) over plain HTTP, after HTTPS failed: {https_error}"
            ),
            Unreachable {
                registry,
                detail,
                attempts,
                connect,
                ..
            } => {
                let what = if *connect {
                    "cannot reach"
                } else {
                    "request to"
                };
                write!(
                    f,
                    "{what} registry {registry}: {detail} (after {attempts} attempts)"
                )
            }
            Status { status, detail } => write!(f, "registry answered {status} ({detail})"),
            TooLarge {
                body: BodyKind::Blob,
                limit,
            } => write!(
                f,
                "the registry sent more than the {limit} bytes the blob's descriptor says (refusing to read more)"
            ),
            TooLarge { body, limit } => write!(
                f,
                "the registry sent a {body} larger than {} (refusing to read more)",
                crate::output::size(*limit)
            ),
            DamagedBlob(why) => f.write_str(why),
            UploadFailed { attempts, last } => {
                write!(f, "the upload failed {attempts} times; last: {last}")
            }
            MalformedCredentials { file, key, why } => write!(
                f,
                "the credentials for `{key}` in {} are malformed: {why}",
                file.display()
            ),
        }
    }
}

impl std::error::Error for RegistryError {}

/// The registry error anywhere in `err`'s chain.
pub fn find(err: &anyhow::Error) -> Option<&RegistryError> {
    err.chain().find_map(|e| e.downcast_ref::<RegistryError>())
}
