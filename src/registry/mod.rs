//! The registry client: the OCI distribution API over HTTP(S), with Docker's credential
//! lookup ([`credentials`]), the Basic/Bearer challenge flow, and retries.
//!
//! Pull side: manifests (keeping the served bytes) and blobs into files. Push side: HEAD
//! a blob, cross-repository mount, monolithic upload (POST, then one PUT with the body,
//! streamed from disk or from another registry), manifests and tags. A thin client on
//! reqwest rather than `oci-client`: oci-client (0.18) has no retries, no
//! re-authentication on 401, no identity tokens and no way to keep a pulled manifest's
//! raw bytes, and we need all of these (raw bytes because re-serialising a manifest
//! changes its digest). What to push and in which order is [`crate::sink::registry`]'s
//! business, not this module's.

mod auth;
mod body;
pub mod credentials;
pub mod ecr;
mod error;
pub mod name;
pub use name::parse_reference;
mod tls;

use anyhow::{Context, Result, bail};
pub use body::Progress;
use body::{CONFIG_LIMIT, MANIFEST_LIMIT, TOKEN_LIMIT};
pub use credentials::Credential;
pub use error::{BodyKind, RegistryError, find as find_error};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use oci_spec::distribution::Reference;

use crate::oci::media::{
    MANIFEST_ACCEPT, OCI_INDEX as MEDIA_OCI_INDEX, OCI_MANIFEST as MEDIA_OCI_MANIFEST,
};

/// Attempts per request for transient failures (connection errors, 408, 429, 5xx).
const ATTEMPTS: u32 = 5;

/// An upload that moves no byte for this long (and gets no answer) is abandoned and
/// retried. reqwest's read timeout cannot be used for uploads: it runs from the start of
/// the request, so it would cut off any layer that takes longer than it to send.
const UPLOAD_IDLE: Duration = Duration::from_secs(120);

/// How long to wait for an answer, or for the next chunk of a download.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// `fut`, failing after [`READ_TIMEOUT`] (as a transient error: it is retried).
pub(crate) async fn within<T, E: Into<anyhow::Error>>(
    what: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(READ_TIMEOUT, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => bail!("{what}: no answer within {}s", READ_TIMEOUT.as_secs()),
    }
}

/// A fetched manifest or index, with the exact bytes the registry served.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

/// Where a blob to upload comes from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A file holding exactly the blob (a layout or cache blob).
    File(PathBuf),
    /// A blob of another registry's repository (a base layer a layout left out), streamed
    /// through and kept at `keep_at`; used from there when already present.
    Remote {
        registry: String,
        repository: String,
        keep_at: PathBuf,
    },
}

/// One blob to put into a repository.
pub struct BlobPush<'a> {
    pub digest: &'a str,
    pub size: u64,
    pub source: &'a BlobSource,
    /// A repository of the same registry that probably holds the blob.
    pub mount_from: Option<&'a str>,
    /// Called with the bytes sent so far in the current attempt.
    pub progress: Progress,
}

/// What pushing a blob took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The repository had it.
    Existed,
    /// Mounted from another repository of the same registry: no bytes sent.
    Mounted,
    /// Sent; `downloaded` bytes of it were fetched from another registry first.
    Uploaded { downloaded: u64 },
}

/// How a request addresses the registry.
enum Endpoint<'a> {
    /// `/v2/`
    Root,
    /// `/v2/<repo>/<path>`
    Api { repo: &'a str, path: &'a str },
    /// A URL the registry gave us (an upload session's Location).
    Url(&'a Url),
}

type BodyFn<'a> = dyn Fn() -> BoxFuture<'a, Result<reqwest::Body>> + Send + Sync + 'a;

/// Whether `url` (perhaps from a Location header) points at `registry`'s own API host.
fn is_own_host(url: &reqwest::Url, registry: &str) -> bool {
    url.host_str().is_some_and(|h| {
        let with_port = match url.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        };
        with_port == api_host(registry) || h == api_host(registry)
    })
}

/// What [`Client::try_mount`] achieved.
enum Mount {
    /// The blob is in the repository now.
    Mounted,
    /// The registry opened an upload session instead (URL, the scope it was opened with).
    Session(Url, String),
    /// No mount tried, or refused.
    No,
}

/// How one PUT of [`Client::put_blob`] ended.
enum Put {
    Done {
        downloaded: u64,
    },
    Failed {
        failure: String,
        wait: Option<Duration>,
        downloaded: u64,
    },
}

/// How [`Client::send`] goes on after a request could not be sent.
enum AfterError {
    /// Send again over plain HTTP; not counted as an attempt.
    FallBackToHttp,
    /// Send again, after a backoff.
    Retry,
}

struct Request<'a> {
    method: Method,
    registry: &'a str,
    endpoint: Endpoint<'a>,
    headers: Vec<(HeaderName, String)>,
    /// Rebuilt for each attempt (after a scheme fallback or a fresh token).
    body: Option<&'a BodyFn<'a>>,
    scope: &'a str,
    /// Retry transient failures here; uploads decide for themselves (see `push_blob`).
    retry: bool,
    /// Upload watch: instead of [`READ_TIMEOUT`] on the answer, an idle timer on the
    /// body's progress.
    upload: Option<Arc<body::Watch>>,
}

impl<'a> Request<'a> {
    /// `method` on `/v2/<repo>/<path>`: no body, transient failures retried.
    fn api(
        method: Method,
        registry: &'a str,
        repo: &'a str,
        path: &'a str,
        scope: &'a str,
    ) -> Request<'a> {
        Request {
            method,
            registry,
            endpoint: Endpoint::Api { repo, path },
            headers: Vec::new(),
            body: None,
            scope,
            retry: true,
            upload: None,
        }
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Request<'a> {
        self.headers.push((name, value.into()));
        self
    }
}

pub struct Client {
    /// One client, one connection pool: loading the system's CA roots and setting up
    /// TLS happen once per command. It has no read timeout of its own (see
    /// [`UPLOAD_IDLE`]); [`within`] bounds the waits instead.
    http: reqwest::Client,
    /// `--insecure-registry` entries: `HOST` (any port) or `HOST:PORT`.
    insecure: Vec<String>,
    /// The user named certificates to trust (a CA file or SSL_CERT_FILE).
    ca_given: bool,
    schemes: Mutex<HashMap<String, Scheme>>,
    /// Why HTTPS failed for a registry we then tried over plain HTTP: a registry that
    /// does speak TLS (with a CA we do not trust) answers plain HTTP with 400.
    https_errors: Mutex<HashMap<String, String>>,
    /// Bearer tokens per (registry, scope); they never leave memory.
    scoped: Mutex<HashMap<(String, String), HeaderValue>>,
    /// Basic credentials, good for every request to the registry.
    registry_wide: Mutex<HashMap<String, HeaderValue>>,
    /// Credential lookups per registry: a helper runs at most once per command.
    creds: tokio::sync::Mutex<HashMap<String, credentials::Found>>,
    /// ECR tokens from the AWS credential chain.
    ecr: ecr::Ecr,
    /// Registries whose ECR token came from the token cache: a 401 to it earns one
    /// fresh token (it may have been revoked since it was cached).
    ecr_cached: Mutex<std::collections::HashSet<String>>,
    /// How many times each registry's ECR token was refreshed. Requests run in parallel
    /// (tags, blobs): one refreshes, the others, sent with the old token, see the count
    /// moved on and retry with the new one instead of failing.
    ecr_refreshes: tokio::sync::Mutex<HashMap<String, u64>>,
}

/// Docker's rule: loopback registries may fall back to plain HTTP without being listed.
fn is_loopback(host: &str) -> bool {
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.split(']').next())
        .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `registry` without its port: `host:5000` → `host`, `[::1]:5000` → `[::1]`.
fn without_port(registry: &str) -> &str {
    match registry.rsplit_once(':') {
        // A colon inside brackets is part of an IPv6 address, not a port separator.
        Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => registry,
    }
}

/// Docker's matching of an insecure-registry entry: `HOST` covers every port of the host,
/// `HOST:PORT` that port only. Host names compare case-insensitively; a scheme or a
/// trailing slash (as users copy URLs) is ignored.
fn insecure_matches(entry: &str, registry: &str) -> bool {
    let entry = entry
        .strip_prefix("http://")
        .or_else(|| entry.strip_prefix("https://"))
        .unwrap_or(entry)
        .trim_end_matches('/');
    if entry.eq_ignore_ascii_case(registry) {
        return true;
    }
    without_port(entry) == entry && without_port(registry).eq_ignore_ascii_case(entry)
}

/// Where the registry API actually lives (Docker Hub's API host differs from its name).
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// The registry's `{"errors":[{"code","message"}]}` body: (code, message).
fn error_parts(body: &str) -> (Option<String>, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.get(0));
    match first {
        Some(e) => (
            e.get("code").and_then(|c| c.as_str()).map(str::to_string),
            e.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string(),
        ),
        None => (
            None,
            body.chars()
                .take(200)
                .collect::<String>()
                .replace('\n', " ")
                .trim()
                .to_string(),
        ),
    }
}

/// The error body condensed to one line: `NAME_UNKNOWN: repository name not known`.
fn error_summary(body: &str) -> String {
    match error_parts(body) {
        (Some(code), message) => format!("{code}: {message}"),
        (None, message) if message.is_empty() => "no error details".into(),
        (None, message) => message,
    }
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = when - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// An Amazon ECR private registry (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`).
pub fn is_ecr(registry: &str) -> bool {
    ecr::region_of(registry).is_some()
}

/// The scope that covers everything a push to `repo` does.
fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    pub fn new(insecure: &[String], ca_cert: Option<&Path>) -> Result<Client> {
        install_tls_provider();
        // SSL_CERT_FILE arrives here through the command layer's settings, as `ca_cert`.
        let ca = ca_cert.map(Path::to_path_buf);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ocilambda/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15));
        if let Some(ca) = &ca {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let pem =
                std::fs::read(ca).with_context(|| format!("reading CA file {}", ca.display()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("parsing CA file {}", ca.display()))?;
            if certs.is_empty() {
                bail!("parsing CA file {}: no PEM certificate in it", ca.display());
            }
            builder = builder.tls_backend_preconfigured(tls::client_config(certs)?);
        }
        Ok(Client {
            http: builder.build().context("creating the HTTP client")?,
            insecure: insecure.to_vec(),
            ca_given: ca.is_some(),
            schemes: Mutex::new(HashMap::new()),
            https_errors: Mutex::new(HashMap::new()),
            scoped: Mutex::new(HashMap::new()),
            registry_wide: Mutex::new(HashMap::new()),
            creds: tokio::sync::Mutex::new(HashMap::new()),
            ecr: ecr::Ecr::new(crate::aws::AwsOptions::default(), None, None),
            ecr_cached: Mutex::new(Default::default()),
            ecr_refreshes: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Get ECR tokens with these AWS options (or this configuration, already loaded),
    /// keeping them in `token_cache` (a directory) between commands.
    pub fn with_aws(
        mut self,
        options: crate::aws::AwsOptions,
        loaded: Option<crate::aws::Aws>,
        token_cache: Option<PathBuf>,
    ) -> Client {
        self.ecr = ecr::Ecr::new(options, loaded, token_cache);
        self
    }

    /// The ECR access of this client (to create a repository a push found missing).
    pub fn ecr(&self) -> &ecr::Ecr {
        &self.ecr
    }

    /// Whether `registry` is ECR: an ECR host name, or a host Docker's config sends to the
    /// `ecr-login` helper (a private endpoint or mirror the user declares to be ECR).
    pub async fn is_ecr_registry(&self, registry: &str) -> Result<bool> {
        Ok(is_ecr(registry) || self.credential_for(registry).await?.ecr_login)
    }

    /// Use `credential` for `registry` instead of looking it up (to check a login).
    pub async fn use_credential(&self, registry: &str, credential: Credential, source: &str) {
        self.creds.lock().await.insert(
            registry.to_string(),
            credentials::Found {
                credential: Some(credential),
                source: source.to_string(),
                ecr_login: false,
            },
        );
    }

    async fn credential_for(&self, registry: &str) -> Result<credentials::Found> {
        let mut creds = self.creds.lock().await;
        if let Some(found) = creds.get(registry) {
            return Ok(found.clone());
        }
        let mut found = credentials::lookup(registry)
            .await
            .with_context(|| format!("looking up credentials for {registry}"))?;
        // As docker-credential-ecr-login would: an ECR registry Docker's config has no
        // credential for, or one whose ecr-login helper is not installed.
        if found.credential.is_none() && (found.ecr_login || is_ecr(registry)) {
            let token = self.ecr.token(registry, false).await?;
            if token.from_cache {
                self.ecr_cached.lock().unwrap().insert(registry.to_string());
            }
            if !found.ecr_login {
                found.source = format!("{} (Docker's config: {})", ecr::TOKEN_SOURCE, found.source);
            }
            found.credential = Some(token.credential);
        }
        creds.insert(registry.to_string(), found.clone());
        Ok(found)
    }

    /// Replace a cached ECR token that `registry` refused with a fresh one; false when
    /// the credential in use is not such a token (or was refreshed already).
    async fn refresh_ecr(&self, registry: &str, sent_after: u64) -> Result<bool> {
        // Held across the refresh: a parallel request waits here, then retries with it.
        let mut refreshes = self.ecr_refreshes.lock().await;
        let count = refreshes.entry(registry.to_string()).or_default();
        if *count != sent_after {
            return Ok(true);
        }
        if !self.ecr_cached.lock().unwrap().remove(registry) {
            return Ok(false);
        }
        *count += 1;
        let token = self.ecr.token(registry, true).await?;
        if let Some(found) = self.creds.lock().await.get_mut(registry) {
            found.credential = Some(token.credential);
        }
        self.registry_wide.lock().unwrap().remove(registry);
        self.scoped
            .lock()
            .unwrap()
            .retain(|(r, _), _| r != registry);
        Ok(true)
    }

    fn may_use_http(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure.iter().any(|h| insecure_matches(h, registry))
    }

    fn url(&self, scheme: Scheme, registry: &str, endpoint: &Endpoint) -> Result<Url> {
        let s = match scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        let host = api_host(registry);
        let text = match endpoint {
            Endpoint::Root => format!("{s}://{host}/v2/"),
            Endpoint::Api { repo, path } => format!("{s}://{host}/v2/{repo}/{path}"),
            Endpoint::Url(url) => return Ok((*url).clone()),
        };
        Url::parse(&text).with_context(|| format!("invalid registry URL {text}"))
    }

    /// The HTTP request for `req` over `scheme`, with its URL; whether it goes to the
    /// registry itself, and whether it carries a token scoped to `scope_key`.
    async fn request(
        &self,
        req: &Request<'_>,
        scheme: Scheme,
        scope_key: &(String, String),
    ) -> Result<(reqwest::RequestBuilder, reqwest::Url, bool, bool)> {
        let url = self.url(scheme, req.registry, &req.endpoint)?;
        let mut builder = self.http.request(req.method.clone(), url.clone());
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        // Credentials go only to the registry itself, never to a host a Location
        // header points elsewhere (e.g. a storage backend).
        let own_host = is_own_host(&url, req.registry);
        let sent_scoped = own_host && {
            let (b, scoped) = self.with_credentials(builder, req.registry, scope_key);
            builder = b;
            scoped
        };
        if let Some(body) = req.body {
            builder = builder.body(body().await?);
        }
        Ok((builder, url, own_host, sent_scoped))
    }

    /// How many times `registry`'s ECR token has been refreshed (see `ecr_refreshes`).
    async fn ecr_refreshes(&self, registry: &str) -> u64 {
        let refreshes = self.ecr_refreshes.lock().await;
        refreshes.get(registry).copied().unwrap_or(0)
    }

    /// Send a request, handling scheme fallback, authentication and (with `retry`)
    /// transient failures.
    async fn send(&self, req: Request<'_>) -> Result<reqwest::Response> {
        let registry = req.registry;
        let scope_key = (registry.to_string(), req.scope.to_string());
        let mut authenticated_once = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let scheme = *self
                .schemes
                .lock()
                .unwrap()
                .get(registry)
                .unwrap_or(&Scheme::Https);
            let refreshes = self.ecr_refreshes(registry).await;
            let (builder, url, own_host, sent_scoped) =
                self.request(&req, scheme, &scope_key).await?;
            let sent = match &req.upload {
                Some(watch) => idle_guarded(watch, builder.send()).await,
                None => within(&format!("{} {url}", req.method), builder.send()).await,
            };
            let response = match sent {
                Ok(r) => r,
                Err(e) => match self.after_send_error(e, scheme, &req, attempt).await? {
                    AfterError::FallBackToHttp => {
                        attempt -= 1;
                        continue;
                    }
                    AfterError::Retry => continue,
                },
            };
            self.schemes
                .lock()
                .unwrap()
                .entry(registry.to_string())
                .or_insert(scheme);
            let status = response.status();
            // public.ecr.aws answers an expired bearer token with 400, not 401. Only
            // bodiless requests are re-sent for it: a 400 to an upload is about the data.
            let expired = status == StatusCode::BAD_REQUEST && sent_scoped && req.body.is_none();
            if (status == StatusCode::UNAUTHORIZED || expired) && !authenticated_once && own_host {
                authenticated_once = true;
                self.scoped.lock().unwrap().remove(&scope_key);
                if !self
                    .answer_challenge(&response, registry, req.scope, &scope_key)
                    .await?
                {
                    return Ok(response);
                }
                attempt -= 1;
                continue;
            }
            // ECR answers an expired token with 403 ("Your authorization token has
            // expired"), not only 401; refresh_ecr acts on cached ECR tokens alone.
            if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN)
                && authenticated_once
                && own_host
                && self.refresh_ecr(registry, refreshes).await?
            {
                authenticated_once = false;
                attempt -= 1;
                continue;
            }
            if req.retry && is_transient(status) && attempt < ATTEMPTS {
                backoff(attempt, retry_after(response.headers())).await;
                continue;
            }
            return Ok(response);
        }
    }

    /// `builder` with the credential this client holds for `scope_key` (else for the whole
    /// registry); whether it was a scoped (token) credential.
    fn with_credentials(
        &self,
        builder: reqwest::RequestBuilder,
        registry: &str,
        scope_key: &(String, String),
    ) -> (reqwest::RequestBuilder, bool) {
        let scoped = self.scoped.lock().unwrap().get(scope_key).cloned();
        let header = scoped
            .clone()
            .or_else(|| self.registry_wide.lock().unwrap().get(registry).cloned());
        match header {
            Some(h) => (builder.header(AUTHORIZATION, h), scoped.is_some()),
            None => (builder, false),
        }
    }

    /// What to do after `req` could not be sent over `scheme` (attempt `attempt`): fall
    /// back to plain HTTP (Docker's rule for loopback and --insecure-registry hosts, once,
    /// before any answer decided the scheme), retry with backoff, or fail with a typed
    /// [`RegistryError::Unreachable`].
    async fn after_send_error(
        &self,
        e: anyhow::Error,
        scheme: Scheme,
        req: &Request<'_>,
        attempt: u32,
    ) -> Result<AfterError> {
        let registry = req.registry;
        let decided = self.schemes.lock().unwrap().contains_key(registry);
        if scheme == Scheme::Https && !decided && self.may_use_http(registry) {
            self.schemes
                .lock()
                .unwrap()
                .insert(registry.to_string(), Scheme::Http);
            self.https_errors
                .lock()
                .unwrap()
                .insert(registry.to_string(), crate::error::one_line(&e));
            return Ok(AfterError::FallBackToHttp);
        }
        if !req.retry {
            return Err(e);
        }
        if attempt < ATTEMPTS {
            backoff(attempt, None).await;
            return Ok(AfterError::Retry);
        }
        let connect = e
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|e| e.is_connect());
        Err(anyhow::Error::new(RegistryError::Unreachable {
            registry: registry.to_string(),
            detail: crate::error::one_line(&e),
            attempts: ATTEMPTS,
            connect,
            plain_http_allowed: self.may_use_http(registry),
        }))
    }

    /// Answer the registry's challenge in `response` (Basic or Bearer) with the
    /// credential found for `registry`, storing what it gives for the next attempts;
    /// false when there is nothing to answer with (the response stands).
    async fn answer_challenge(
        &self,
        response: &reqwest::Response,
        registry: &str,
        scope: &str,
        scope_key: &(String, String),
    ) -> Result<bool> {
        let Some(challenge) = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            return Ok(false);
        };
        let found = self.credential_for(registry).await?;
        let answer = auth::authorize(
            &self.http,
            registry,
            scope,
            &challenge,
            found.credential.as_ref(),
        )
        .await?;
        match answer {
            Some(auth::Answer::Registry(h)) => {
                self.registry_wide
                    .lock()
                    .unwrap()
                    .insert(registry.to_string(), h);
            }
            Some(auth::Answer::Scope(h)) => {
                self.scoped.lock().unwrap().insert(scope_key.clone(), h);
            }
            None => return Ok(false),
        }
        Ok(true)
    }

    /// Turn an unexpected answer into a typed error (see [`RegistryError`]), with `what`
    /// as its context.
    async fn fail(
        &self,
        what: String,
        registry: &str,
        repo: &str,
        response: reqwest::Response,
    ) -> anyhow::Error {
        let status = response.status();
        let body = body::error_text(response).await;
        let (code, message) = error_parts(&body);
        let detail = error_summary(&body);
        let code = code.as_deref().unwrap_or("");
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let tried = match self.creds.lock().await.get(registry) {
                    Some(found) => found.source.clone(),
                    None => match credentials::lookup(registry).await {
                        Ok(found) => found.source,
                        // A malformed entry is the answer to "why not authorised".
                        Err(e) => return e.context(what),
                    },
                };
                RegistryError::NotAuthorised {
                    registry: registry.to_string(),
                    status: status.as_u16(),
                    detail,
                    tried,
                }
            }
            StatusCode::NOT_FOUND if code == "NAME_UNKNOWN" => RegistryError::RepositoryUnknown {
                registry: registry.to_string(),
                repository: repo.to_string(),
                detail,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound { detail },
            // Distribution says TAG_INVALID; ECR answers an immutable tag with 400 and a
            // message (`ImageTagAlreadyExistsException`, "...is immutable") and no code
            // of the spec's, so its message is all there is to go on.
            StatusCode::BAD_REQUEST
                if code == "TAG_INVALID" || message.to_lowercase().contains("immutable") =>
            {
                RegistryError::TagImmutable { detail }
            }
            StatusCode::BAD_REQUEST if self.https_errors.lock().unwrap().contains_key(registry) => {
                let https_error = self.https_errors.lock().unwrap()[registry].clone();
                RegistryError::UntrustedTls {
                    registry: registry.to_string(),
                    https_error,
                    detail,
                    ca_given: self.ca_given,
                }
            }
            _ => RegistryError::Status {
                status: status.as_u16(),
                detail,
            },
        };
        anyhow::Error::new(kind).context(what)
    }

    /// Check that the registry accepts our credentials (`GET /v2/`), for `login`.
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let what = format!("logging in to {registry}");
        let response = self
            .send(Request {
                method: Method::GET,
                registry,
                endpoint: Endpoint::Root,
                headers: Vec::new(),
                body: None,
                scope: "",
                retry: true,
                upload: None,
            })
            .await
            .with_context(|| what.clone())?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.fail(what, registry, "", response).await)
    }

    /// Fetch a manifest or index by tag or digest, verified against the digest when one is
    /// known (the reference's own, or the registry's `Docker-Content-Digest`).
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Manifest> {
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let scope = format!("repository:{}:pull", reference.repository());
        let what = format!("fetching manifest {}", reference.whole());
        let path = format!("manifests/{target}");
        let response = self
            .send(
                Request::api(
                    Method::GET,
                    reference.registry(),
                    reference.repository(),
                    &path,
                    &scope,
                )
                .header(ACCEPT, MANIFEST_ACCEPT),
            )
            .await
            .with_context(|| what.clone())?;
        if !response.status().is_success() {
            return Err(self
                .fail(what, reference.registry(), reference.repository(), response)
                .await);
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let served_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // One timeout over the whole body too: a registry dripping bytes stays under the
        // per-chunk timeout forever.
        let bytes = within(
            &what,
            body::read_capped(response, MANIFEST_LIMIT, BodyKind::Manifest),
        )
        .await
        .with_context(|| what.clone())?;
        let digest = crate::digest::of_bytes(&bytes);
        for expected in [reference.digest().map(str::to_string), served_digest]
            .into_iter()
            .flatten()
        {
            if expected != digest {
                bail!("{what}: content digest {digest} does not match {expected}");
            }
        }
        // Some registries omit or generalise Content-Type; the manifest says what it is.
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .or(media_type)
            .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string());
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// GET a blob, the response ready to stream.
    async fn blob_response(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        what: &str,
    ) -> Result<reqwest::Response> {
        let path = format!("blobs/{digest}");
        let scope = format!("repository:{repo}:pull");
        let response = self
            .send(Request::api(Method::GET, registry, repo, &path, &scope))
            .await
            .with_context(|| what.to_string())?;
        if !response.status().is_success() {
            return Err(self.fail(what.to_string(), registry, repo, response).await);
        }
        Ok(response)
    }

    /// Stream a blob into `dest` (created atomically), verifying its digest. A download
    /// cut off in the middle is started again, up to the usual number of attempts.
    /// `max` is the descriptor's size (or a cap when it is not known): a body that runs
    /// past it is refused there, so an endless answer cannot fill the disk.
    pub async fn get_blob_to(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        max: u64,
        dest: &Path,
    ) -> Result<u64> {
        self.download(registry, repo, digest, (BodyKind::Blob, max), dest)
            .await
    }

    /// [`Client::get_blob_to`] for an image config, whose size is not always known
    /// where it is fetched: bounded by [`CONFIG_LIMIT`] instead.
    pub async fn get_config_to(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        dest: &Path,
    ) -> Result<u64> {
        let bound = (BodyKind::Config, CONFIG_LIMIT);
        self.download(registry, repo, digest, bound, dest).await
    }

    async fn download(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        (kind, max): (BodyKind, u64),
        dest: &Path,
    ) -> Result<u64> {
        let what = format!("fetching blob {digest} from {registry}/{repo}");
        let dir = dest.parent().context("blob destination has no parent")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self.blob_response(registry, repo, digest, &what).await?;
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            let mut writer = crate::digest::HashingWriter::new(std::io::BufWriter::new(
                tmp.as_file().try_clone()?,
            ));
            let mut stream = response.bytes_stream();
            let mut received = 0u64;
            let mut cut = None;
            loop {
                let next = within(&what, async { Ok::<_, anyhow::Error>(stream.next().await) });
                match next.await {
                    Ok(Some(Ok(chunk))) => {
                        received += chunk.len() as u64;
                        if received > max {
                            let kind = RegistryError::TooLarge {
                                body: kind,
                                limit: max,
                            };
                            return Err(anyhow::Error::new(kind).context(what));
                        }
                        writer.write_all(&chunk)?
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        cut = Some(anyhow::Error::from(e));
                        break;
                    }
                    Err(e) => {
                        cut = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = cut {
                if attempt < ATTEMPTS {
                    backoff(attempt, None).await;
                    continue;
                }
                return Err(e.context(what));
            }
            let (mut file, got, len) = writer.finish();
            file.flush()?;
            drop(file);
            if got != digest {
                bail!("{what}: content digest {got} does not match; refusing the download");
            }
            crate::fs::persist_readable(tmp, dest)?;
            return Ok(len);
        }
    }

    /// Whether `repo` holds the blob (`HEAD`).
    pub async fn blob_exists(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        scope: &str,
    ) -> Result<bool> {
        let path = format!("blobs/{digest}");
        let what = format!("checking for blob {digest} in {registry}/{repo}");
        let response = self
            .send(Request::api(Method::HEAD, registry, repo, &path, scope))
            .await
            .with_context(|| what.clone())?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(what, registry, repo, response).await),
        }
    }

    /// The digest a tag (or digest) resolves to in `repo`, if it exists (`HEAD`).
    pub async fn manifest_digest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<Option<String>> {
        let path = format!("manifests/{reference}");
        let scope = push_scope(repo);
        let what = format!("checking for manifest {registry}/{repo}:{reference}");
        let response = self
            .send(
                Request::api(Method::HEAD, registry, repo, &path, &scope)
                    .header(ACCEPT, MANIFEST_ACCEPT),
            )
            .await
            .with_context(|| what.clone())?;
        match response.status() {
            s if s.is_success() => Ok(response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.fail(what, registry, repo, response).await),
        }
    }

    /// Whether the repository serves the OCI 1.1 referrers API for `digest`. Registries
    /// without it (distribution 2.8 answers 404) need the tag-schema fallback.
    pub async fn referrers_api(&self, registry: &str, repo: &str, digest: &str) -> Result<bool> {
        let path = format!("referrers/{digest}");
        let scope = push_scope(repo);
        let what = format!("asking {registry}/{repo} for the referrers of {digest}");
        let response = self
            .send(
                Request::api(Method::GET, registry, repo, &path, &scope)
                    .header(ACCEPT, MEDIA_OCI_INDEX),
            )
            .await
            .with_context(|| what.clone())?;
        let is_index = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(MEDIA_OCI_INDEX));
        Ok(response.status().is_success() && is_index)
    }

    /// The Location of an upload session response, made absolute.
    fn session_url(response: &reqwest::Response, what: &str) -> Result<Url> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("{what}: the registry gave no upload Location"))?;
        response
            .url()
            .join(location)
            .with_context(|| format!("{what}: invalid upload Location `{location}`"))
    }

    /// Start an upload session (`POST .../blobs/uploads/`), optionally as a mount.
    /// Returns `None` when the mount succeeded outright (201), else the session URL.
    async fn start_upload(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        mount_from: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Result<Option<Url>> {
        let path = match mount_from {
            Some(from) => format!("blobs/uploads/?mount={digest}&from={from}"),
            None => "blobs/uploads/".to_string(),
        };
        let response = self
            .send(
                Request::api(Method::POST, registry, repo, &path, scope)
                    .header(CONTENT_LENGTH, "0"),
            )
            .await
            .with_context(|| what.to_string())?;
        match response.status() {
            StatusCode::CREATED if mount_from.is_some() => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(Self::session_url(&response, what)?)),
            _ => Err(self.fail(what.to_string(), registry, repo, response).await),
        }
    }

    /// The upload body for one attempt.
    async fn open_body(
        &self,
        blob: &BlobPush<'_>,
        watch: Arc<body::Watch>,
    ) -> Result<reqwest::Body> {
        match blob.source {
            BlobSource::File(path) => {
                body::from_file(
                    path,
                    format!("the file {}", path.display()),
                    blob.digest,
                    blob.size,
                    watch,
                    blob.progress.clone(),
                )
                .await
            }
            BlobSource::Remote { keep_at, .. } if keep_at.is_file() => {
                body::from_file(
                    keep_at,
                    format!("the cached file {}", keep_at.display()),
                    blob.digest,
                    blob.size,
                    watch,
                    blob.progress.clone(),
                )
                .await
            }
            BlobSource::Remote {
                registry,
                repository,
                keep_at,
            } => {
                let fetching =
                    format!("fetching blob {} from {registry}/{repository}", blob.digest);
                let response = self
                    .blob_response(registry, repository, blob.digest, &fetching)
                    .await?;
                body::from_response(
                    response,
                    format!("the download from {registry}/{repository}"),
                    blob.digest,
                    blob.size,
                    keep_at,
                    watch,
                    blob.progress.clone(),
                )
            }
        }
    }

    /// Mount `blob` into `repo` from the repository it names, when it names another one.
    /// A mount refused outright (no pull access to the source, say) is only a missed
    /// shortcut: the caller uploads normally.
    async fn try_mount(
        &self,
        registry: &str,
        repo: &str,
        blob: &BlobPush<'_>,
        scope: &str,
    ) -> Mount {
        let Some(from) = blob.mount_from.filter(|f| *f != repo) else {
            return Mount::No;
        };
        // One token for both repositories: pull from the source, push to the target.
        let mount_scope = format!("{scope} repository:{from}:pull");
        let starting = format!("mounting it from {registry}/{from}");
        match self
            .start_upload(
                registry,
                repo,
                blob.digest,
                Some(from),
                &mount_scope,
                &starting,
            )
            .await
        {
            Ok(None) => Mount::Mounted,
            // 202: the registry could not mount; upload into the session it opened.
            Ok(Some(url)) => Mount::Session(url, mount_scope),
            Err(_) => Mount::No,
        }
    }

    /// One monolithic PUT of `blob` into the upload session `url`: done, or a failure
    /// worth retrying (with the registry's Retry-After); a damaged source, an unreadable
    /// source or a refusal is an error.
    async fn put_blob(
        &self,
        registry: &str,
        repo: &str,
        blob: &BlobPush<'_>,
        url: Url,
        put_scope: &str,
    ) -> Result<Put> {
        let mut url = url;
        url.query_pairs_mut().append_pair("digest", blob.digest);
        let watch = body::Watch::new();
        let source_failed = std::sync::atomic::AtomicBool::new(false);
        let make_body = || -> BoxFuture<'_, Result<reqwest::Body>> {
            let watch = watch.clone();
            let source_failed = &source_failed;
            Box::pin(async move {
                let body = self.open_body(blob, watch).await;
                if body.is_err() {
                    source_failed.store(true, Ordering::Relaxed);
                }
                body
            })
        };
        let sent = self
            .send(Request {
                method: Method::PUT,
                registry,
                endpoint: Endpoint::Url(&url),
                headers: vec![
                    (CONTENT_TYPE, "application/octet-stream".into()),
                    (CONTENT_LENGTH, blob.size.to_string()),
                ],
                body: Some(&make_body),
                scope: put_scope,
                retry: false,
                upload: Some(watch.clone()),
            })
            .await;
        if let Some(why) = watch.corrupt.lock().unwrap().take() {
            return Err(RegistryError::DamagedBlob(why).into());
        }
        let downloaded = watch.downloaded.load(Ordering::Relaxed);
        let (failure, wait) = match sent {
            Ok(r) if r.status().is_success() => return Ok(Put::Done { downloaded }),
            Ok(r) if is_transient(r.status()) => {
                let wait = retry_after(r.headers());
                let status = r.status().as_u16();
                let detail = error_summary(&body::error_text(r).await);
                (format!("registry answered {status} ({detail})"), wait)
            }
            Ok(r) => {
                return Err(self.fail("uploading".to_string(), registry, repo, r).await);
            }
            Err(e) if source_failed.load(Ordering::Relaxed) => return Err(e),
            Err(e) => (crate::error::one_line(&e), None),
        };
        Ok(Put::Failed {
            failure,
            wait,
            downloaded,
        })
    }

    /// Put a blob into `repo`: skip it if present, else mount it from `mount_from`, else
    /// upload it monolithically (POST, then one PUT with the body: ECR's chunked PATCH
    /// is unreliable). A PUT that fails or whose answer is lost is followed by a HEAD
    /// before retrying, because the registry may have committed the blob anyway.
    pub async fn push_blob(
        &self,
        registry: &str,
        repo: &str,
        blob: BlobPush<'_>,
    ) -> Result<Pushed> {
        let scope = push_scope(repo);
        if self
            .blob_exists(registry, repo, blob.digest, &scope)
            .await?
        {
            return Ok(Pushed::Existed);
        }
        let mut session = match self.try_mount(registry, repo, &blob, &scope).await {
            Mount::Mounted => return Ok(Pushed::Mounted),
            Mount::Session(url, scope) => Some((url, scope)),
            Mount::No => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (url, put_scope) = match session.take() {
                Some(s) => s,
                None => {
                    let starting = "starting the upload".to_string();
                    let url = self
                        .start_upload(registry, repo, blob.digest, None, &scope, &starting)
                        .await?
                        .context("the registry answered an upload with a mount")?;
                    (url, scope.clone())
                }
            };
            let (failure, wait, downloaded) = match self
                .put_blob(registry, repo, &blob, url, &put_scope)
                .await?
            {
                Put::Done { downloaded } => return Ok(Pushed::Uploaded { downloaded }),
                Put::Failed {
                    failure,
                    wait,
                    downloaded,
                } => (failure, wait, downloaded),
            };
            // The answer may have been lost after the registry committed the blob.
            if self
                .blob_exists(registry, repo, blob.digest, &scope)
                .await
                .unwrap_or(false)
            {
                return Ok(Pushed::Uploaded { downloaded });
            }
            if attempt >= ATTEMPTS {
                return Err(RegistryError::UploadFailed {
                    attempts: ATTEMPTS,
                    last: failure,
                }
                .into());
            }
            backoff(attempt, wait).await;
        }
    }

    /// PUT a manifest under `reference` (a tag or its digest). The registry's
    /// `Docker-Content-Digest` must equal `digest`: anything else means it stored
    /// different bytes than ours.
    pub async fn put_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
        digest: &str,
    ) -> Result<()> {
        let path = format!("manifests/{reference}");
        let scope = push_scope(repo);
        let what = format!("pushing manifest {registry}/{repo}:{reference}");
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        let make_body = || -> BoxFuture<'_, Result<reqwest::Body>> {
            let bytes = bytes.clone();
            Box::pin(async move { Ok(reqwest::Body::from(bytes)) })
        };
        let response = self
            .send(Request {
                body: Some(&make_body),
                ..Request::api(Method::PUT, registry, repo, &path, &scope)
                    .header(CONTENT_TYPE, media_type)
            })
            .await
            .with_context(|| what.clone())?;
        if !response.status().is_success() {
            return Err(self.fail(what, registry, repo, response).await);
        }
        if let Some(stored) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && stored != digest
        {
            bail!(
                "{what}: the registry stored it as {stored}, not {digest} (it rewrote the manifest)"
            );
        }
        Ok(())
    }
}

/// Select rustls' ring provider for the process. reqwest is built without a default one
/// (see Cargo.toml), so every `reqwest::Client` must be built after this has run.
pub fn install_tls_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain reqwest client (for code that talks HTTP outside the registry API).
pub fn http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::new()
}

/// Await `request`, failing if its body has not moved for [`UPLOAD_IDLE`].
async fn idle_guarded(
    watch: &body::Watch,
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> Result<reqwest::Response> {
    tokio::pin!(request);
    loop {
        tokio::select! {
            result = &mut request => return result.map_err(anyhow::Error::from),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if watch.idle() > UPLOAD_IDLE {
                    bail!("no progress for {}s", UPLOAD_IDLE.as_secs());
                }
            }
        }
    }
}

/// Exponential backoff with jitter, or the server's Retry-After when it gives one.
async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    tokio::time::sleep(backoff_delay(attempt, retry_after)).await;
}

fn backoff_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let delay = retry_after.unwrap_or_else(|| {
        let base = 200u64 << (attempt.max(1) - 1).min(5);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Duration::from_millis(base + nanos % base)
    });
    delay.min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("public.ecr.aws"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn error_bodies_are_condensed() {
        assert_eq!(
            error_summary(
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#
            ),
            "NAME_UNKNOWN: repository name not known to registry"
        );
        assert_eq!(error_summary(""), "no error details");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 1..=4 {
            let d = backoff_delay(attempt, None);
            let base = Duration::from_millis(200 << (attempt - 1));
            assert!(d >= base && d < base * 2, "attempt {attempt}: {d:?}");
        }
        assert_eq!(
            backoff_delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn insecure_registry_hosts_match_any_port_as_docker_does() {
        for (entry, registry) in [
            ("reg.internal", "reg.internal"),
            ("reg.internal", "reg.internal:5000"),
            ("reg.internal:5000", "reg.internal:5000"),
            ("REG.internal", "reg.internal:443"),
            ("http://reg.internal/", "reg.internal:5000"),
            ("10.0.0.7", "10.0.0.7:5000"),
            ("[fd00::7]", "[fd00::7]:5000"),
        ] {
            assert!(insecure_matches(entry, registry), "{entry} vs {registry}");
        }
        for (entry, registry) in [
            ("reg.internal:5000", "reg.internal"),
            ("reg.internal:5000", "reg.internal:5001"),
            ("reg.internal", "reg.internal.evil.example"),
            ("reg", "reg.internal:5000"),
            ("[fd00::7]:5000", "[fd00::7]:5001"),
        ] {
            assert!(!insecure_matches(entry, registry), "{entry} vs {registry}");
        }
        let client = Client::new(&["reg.internal".into()], None).unwrap();
        assert!(client.may_use_http("reg.internal:5000"));
        assert!(!client.may_use_http("other.internal:5000"));
    }

    #[test]
    fn ecr_hosts_are_recognised() {
        assert!(is_ecr("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert!(!is_ecr("public.ecr.aws"));
        assert!(!is_ecr("127.0.0.1:5000"));
    }
}
