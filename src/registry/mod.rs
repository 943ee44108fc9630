//! The registry client: the OCI distribution API over HTTP(S), with Docker's credential
//! lookup and the Basic/Bearer challenge flow.
//!
//! A thin client on reqwest rather than `oci-client`: oci-client (0.18) has no retries,
//! no re-authentication on 401, no identity tokens and no way to keep a pulled manifest's
//! raw bytes, and we need all of these (raw bytes because re-serialising a manifest
//! changes its digest).

mod auth;

use crate::error::hint;
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use oci_spec::distribution::Reference;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Attempts per request for transient failures (connection errors, 408, 429, 5xx).
const ATTEMPTS: u32 = 5;

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

pub struct Client {
    http: reqwest::Client,
    insecure: Vec<String>,
    schemes: Mutex<HashMap<String, Scheme>>,
    /// Authorization header values per (registry, scope); tokens never leave memory.
    auth: Mutex<HashMap<(String, String), HeaderValue>>,
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

/// Where the registry API actually lives (Docker Hub's API host differs from its name).
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// The registry's `{"errors":[{"code","message"}]}` body, condensed to one line.
fn error_summary(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.get(0));
    match first {
        Some(e) => format!(
            "{}: {}",
            e.get("code").and_then(|c| c.as_str()).unwrap_or("UNKNOWN"),
            e.get("message").and_then(|m| m.as_str()).unwrap_or("")
        ),
        None => body
            .chars()
            .take(200)
            .collect::<String>()
            .replace('\n', " "),
    }
}

impl Client {
    pub fn new(insecure: &[String], ca_cert: Option<&Path>) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ocilambda/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120));
        let ca = ca_cert
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SSL_CERT_FILE").map(Into::into));
        if let Some(ca) = ca {
            let pem =
                std::fs::read(&ca).with_context(|| format!("reading CA file {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing CA file {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Client {
            http: builder.build().context("creating the HTTP client")?,
            insecure: insecure.to_vec(),
            schemes: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
        })
    }

    fn may_use_http(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure.iter().any(|h| h == registry)
    }

    fn url(&self, scheme: Scheme, registry: &str, repo: &str, path: &str) -> String {
        let s = match scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        format!("{s}://{}/v2/{repo}/{path}", api_host(registry))
    }

    /// Send a request, handling scheme fallback, authentication and transient failures.
    /// `body` is rebuilt for each attempt.
    async fn send(
        &self,
        method: Method,
        registry: &str,
        repo: &str,
        path: &str,
        headers: &[(reqwest::header::HeaderName, &str)],
        scope: &str,
    ) -> Result<reqwest::Response> {
        let scope_key = (registry.to_string(), scope.to_string());
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
            let mut req = self
                .http
                .request(method.clone(), self.url(scheme, registry, repo, path));
            for (name, value) in headers {
                req = req.header(name, *value);
            }
            if let Some(auth) = self.auth.lock().unwrap().get(&scope_key) {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            let response = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let decided = self.schemes.lock().unwrap().contains_key(registry);
                    if scheme == Scheme::Https && !decided && self.may_use_http(registry) {
                        // Docker's fallback for loopback and --insecure-registry hosts.
                        self.schemes
                            .lock()
                            .unwrap()
                            .insert(registry.to_string(), Scheme::Http);
                        attempt -= 1;
                        continue;
                    }
                    if attempt < ATTEMPTS && (e.is_connect() || e.is_timeout() || e.is_request()) {
                        backoff(attempt, None).await;
                        continue;
                    }
                    let what = if e.is_connect() {
                        "cannot reach"
                    } else {
                        "request to"
                    };
                    return Err(hint(
                        format!(
                            "{what} registry {registry}: {}",
                            crate::error::one_line(&e.into())
                        ),
                        if self.may_use_http(registry) {
                            "check that the registry is running and the address is right"
                                .to_string()
                        } else {
                            format!(
                                "check the network; for a plain-HTTP registry pass `--insecure-registry {registry}`"
                            )
                        },
                    ));
                }
            };
            self.schemes
                .lock()
                .unwrap()
                .entry(registry.to_string())
                .or_insert(scheme);
            let status = response.status();
            // public.ecr.aws answers an expired bearer token with 400, not 401.
            let expired = status == StatusCode::BAD_REQUEST
                && self.auth.lock().unwrap().contains_key(&scope_key);
            if (status == StatusCode::UNAUTHORIZED || expired) && !authenticated_once {
                authenticated_once = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                self.auth.lock().unwrap().remove(&scope_key);
                let Some(challenge) = challenge else {
                    return Ok(response);
                };
                let header = auth::authorize(&self.http, registry, repo, scope, &challenge).await?;
                if let Some(header) = header {
                    self.auth.lock().unwrap().insert(scope_key.clone(), header);
                    attempt -= 1;
                    continue;
                }
                return Ok(response);
            }
            let transient = matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504);
            if transient && attempt < ATTEMPTS {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                backoff(attempt, retry_after).await;
                continue;
            }
            return Ok(response);
        }
    }

    async fn fail(
        &self,
        what: String,
        registry: &str,
        response: reqwest::Response,
    ) -> anyhow::Error {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = error_summary(&body);
        match status {
            StatusCode::NOT_FOUND => hint(
                format!("{what}: not found ({detail})"),
                "check the repository name and tag",
            ),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => hint(
                format!(
                    "{what}: not authorised ({}, {detail}); credentials tried: {}",
                    status.as_u16(),
                    auth::describe_source(registry)
                ),
                format!(
                    "log in first: `ocilambda login {registry} --username ... --password-stdin` (or `docker login`)"
                ),
            ),
            _ => anyhow::anyhow!("{what}: registry answered {} ({detail})", status.as_u16()),
        }
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
        let response = self
            .send(
                Method::GET,
                reference.registry(),
                reference.repository(),
                &format!("manifests/{target}"),
                &[(ACCEPT, MANIFEST_ACCEPT)],
                &scope,
            )
            .await
            .with_context(|| what.clone())?;
        if !response.status().is_success() {
            return Err(self.fail(what, reference.registry(), response).await);
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
        let bytes = response
            .bytes()
            .await
            .with_context(|| what.clone())?
            .to_vec();
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

    /// Stream a blob into `dest` (created atomically), verifying its digest.
    pub async fn get_blob_to(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        dest: &Path,
    ) -> Result<u64> {
        let what = format!("fetching blob {digest} from {registry}/{repo}");
        let response = self
            .send(
                Method::GET,
                registry,
                repo,
                &format!("blobs/{digest}"),
                &[],
                &format!("repository:{repo}:pull"),
            )
            .await
            .with_context(|| what.clone())?;
        if !response.status().is_success() {
            return Err(self.fail(what, registry, response).await);
        }
        let dir = dest.parent().context("blob destination has no parent")?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut writer =
            crate::digest::HashingWriter::new(std::io::BufWriter::new(tmp.as_file().try_clone()?));
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| what.clone())?;
            writer.write_all(&chunk)?;
        }
        let (mut file, got, len) = writer.finish();
        file.flush()?;
        drop(file);
        if got != digest {
            bail!("{what}: content digest {got} does not match; refusing the download");
        }
        crate::cache::persist_readable(tmp, dest)?;
        Ok(len)
    }
}

/// Exponential backoff with jitter, or the server's Retry-After when it gives one.
async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let delay = retry_after.unwrap_or_else(|| {
        let base = 200u64 << (attempt - 1).min(5);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Duration::from_millis(base + nanos % base.max(1))
    });
    tokio::time::sleep(delay.min(Duration::from_secs(30))).await;
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
    }
}
