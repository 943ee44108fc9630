//! Amazon ECR credentials in process, as `docker-credential-ecr-login` gives them: a token
//! from ECR GetAuthorizationToken, asked with the AWS credential chain ([`crate::aws`]),
//! for ECR registries that Docker's config gives no credential for and for registries
//! whose `credHelpers` entry is `ecr-login` when that helper is not installed.
//!
//! Tokens are kept in memory for the command and, for long-term credentials, in the
//! cache directory (a file per registry and identity, mode 0600) until five minutes before
//! they expire, so a machine with a profile's keys asks ECR once per 12 hours, not once per
//! push. Temporary credentials (a session token) get no file: the next session is another
//! identity, so the file would never be read, only left on disk or in a CI cache. This module also creates repositories
//! (CreateRepository) on request. A token is never logged, printed or put in an error.

use super::credentials::Credential;
use crate::aws::{Aws, AwsOptions};
use anyhow::{Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, OnceCell};

/// How credentials from here are named in messages (never the token itself).
pub const TOKEN_SOURCE: &str = "an Amazon ECR token from the AWS credential chain";

/// A cached token is used only while it has at least this long to live: a push that
/// starts with a token about to expire would fail halfway.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

/// The region of an Amazon ECR private registry,
/// `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]` (also `dkr.ecr-fips.`); None for any other
/// host.
pub fn region_of(registry: &str) -> Option<&str> {
    let rest = registry
        .strip_suffix(".amazonaws.com")
        .or_else(|| registry.strip_suffix(".amazonaws.com.cn"))?;
    let mut labels = rest.split('.');
    let account = labels.next()?;
    let (dkr, ecr, region) = (labels.next()?, labels.next()?, labels.next()?);
    let ok = !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && matches!(ecr, "ecr" | "ecr-fips")
        && !region.is_empty()
        && labels.next().is_none();
    ok.then_some(region)
}

/// The account ID of an ECR private registry host.
pub fn account_of(registry: &str) -> Option<&str> {
    region_of(registry)?;
    registry.split('.').next()
}

/// What the token cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    registry: String,
    username: String,
    password: String,
    /// Unix seconds.
    expires_at: i64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token worth using at `now`.
fn fresh(expires_at: i64, now: i64) -> bool {
    expires_at - EXPIRY_MARGIN.as_secs() as i64 > now
}

/// A token and where it came from: one read from the cache file may have been revoked
/// since, so a 401 to it earns one fresh token.
#[derive(Clone)]
pub struct Token {
    pub credential: Credential,
    pub from_cache: bool,
}

/// ECR access for one command: the AWS configuration (loaded on first use, since most
/// pushes go to registries that need none), and the tokens got so far.
pub struct Ecr {
    options: AwsOptions,
    /// Where tokens are kept between commands; None: memory only.
    cache_dir: Option<PathBuf>,
    aws: OnceCell<Aws>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl Ecr {
    /// `aws`: a configuration already loaded (by `deploy`), else one is loaded from
    /// `options` when a token is first needed.
    pub fn new(options: AwsOptions, aws: Option<Aws>, cache_dir: Option<PathBuf>) -> Ecr {
        Ecr {
            options,
            cache_dir,
            aws: OnceCell::new_with(aws),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration for `registry`: its own region for an ECR host, else the chain's.
    async fn aws_for(&self, registry: &str) -> Aws {
        let aws = self
            .aws
            .get_or_init(|| Aws::load(&self.options))
            .await
            .clone();
        match region_of(registry) {
            Some(region) if aws.region() != Some(region) => aws.in_region(region),
            _ => aws,
        }
    }

    /// The cache file of `registry`'s token for `identity`.
    fn cache_file(&self, registry: &str, identity: &str) -> Option<PathBuf> {
        use sha2::Digest;
        let dir = self.cache_dir.as_ref()?;
        let key = sha2::Sha256::digest(format!("{registry}\n{identity}").as_bytes());
        Some(dir.join(format!("{}.json", hex::encode(&key[..16]))))
    }

    /// A token for `registry`: from memory, else the cache file, else ECR. `refresh`
    /// skips both caches (the token we had was refused).
    pub async fn token(&self, registry: &str, refresh: bool) -> Result<Token> {
        let mut tokens = self.tokens.lock().await;
        if !refresh && let Some(t) = tokens.get(registry) {
            return Ok(t.clone());
        }
        let (aws, identity) = self
            .aws_for(registry)
            .await
            .resolved()
            .await
            .with_context(|| format!("getting an ECR token for {registry}"))?;
        let file = identity
            .as_deref()
            .and_then(|identity| self.cache_file(registry, identity));
        if !refresh
            && let Some(file) = &file
            && let Some(cached) = read_cached(file, registry)
        {
            let token = Token {
                credential: Credential::UsernamePassword {
                    username: cached.username,
                    password: cached.password,
                },
                from_cache: true,
            };
            tokens.insert(registry.to_string(), token.clone());
            return Ok(token);
        }
        let (username, password, expires_at) = get_authorization_token(&aws)
            .await
            .with_context(|| format!("getting an ECR token for {registry}"))?;
        if let Some(file) = &file
            && fresh(expires_at, now())
        {
            // A cache we cannot write costs a token request next time, nothing more.
            let _ = write_cached(
                file,
                &Cached {
                    registry: registry.to_string(),
                    username: username.clone(),
                    password: password.clone(),
                    expires_at,
                },
            );
        }
        let token = Token {
            credential: Credential::UsernamePassword { username, password },
            from_cache: false,
        };
        tokens.insert(registry.to_string(), token.clone());
        Ok(token)
    }

    /// Create `repository` in ECR registry `registry` (scan on push; immutable tags on
    /// request), for a push that found it missing. One that exists already is fine.
    pub async fn create_repository(
        &self,
        registry: &str,
        repository: &str,
        immutable_tags: bool,
    ) -> Result<()> {
        use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
        let aws = self.aws_for(registry).await;
        let client = aws_sdk_ecr::Client::new(aws.config());
        let mut request = client
            .create_repository()
            .repository_name(repository)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .image_tag_mutability(if immutable_tags {
                ImageTagMutability::Immutable
            } else {
                ImageTagMutability::Mutable
            });
        if let Some(account) = account_of(registry) {
            request = request.registry_id(account);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if crate::aws::code(&e) == Some("RepositoryAlreadyExistsException") => Ok(()),
            Err(e) => Err(anyhow::Error::new(crate::aws::classify(
                "ecr:CreateRepository",
                &e,
            )))
            .with_context(|| format!("creating repository {repository} in {registry}")),
        }
    }
}

/// (user, password, expires_at) from ECR GetAuthorizationToken.
async fn get_authorization_token(aws: &Aws) -> Result<(String, String, i64)> {
    let client = aws_sdk_ecr::Client::new(aws.config());
    let answer = client
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| crate::aws::classify("ecr:GetAuthorizationToken", &e))?;
    let data = answer
        .authorization_data()
        .first()
        .context("ECR returned no authorization data")?;
    let encoded = data
        .authorization_token()
        .context("ECR returned no authorization token")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .context("ECR's authorization token is not base64 text")?;
    let (user, password) = decoded
        .split_once(':')
        .context("ECR's authorization token is not USER:PASSWORD")?;
    let expires_at = data.expires_at().map_or(0, |t| t.secs());
    Ok((user.to_string(), password.to_string(), expires_at))
}

/// The cached token for `registry` in `file`, if it is still fresh.
fn read_cached(file: &Path, registry: &str) -> Option<Cached> {
    let bytes = std::fs::read(file).ok()?;
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    (cached.registry == registry && fresh(cached.expires_at, now())).then_some(cached)
}

/// Write the token file atomically, readable by its owner only.
fn write_cached(file: &Path, cached: &Cached) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = file.parent().context("token cache path has no parent")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".token.")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(&serde_json::to_vec(cached)?)?;
    tmp.persist(file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn regions_and_accounts_come_from_ecr_hosts_only() {
        assert_eq!(
            region_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some("us-east-1")
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some("cn-north-1")
        );
        assert_eq!(
            account_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("123456789012")
        );
        assert_eq!(region_of("public.ecr.aws"), None);
        assert_eq!(region_of("127.0.0.1:5000"), None);
        assert_eq!(region_of("ghcr.io"), None);
    }

    #[test]
    fn tokens_are_reused_until_five_minutes_before_expiry() {
        let now = 1_000_000;
        assert!(fresh(now + 301, now));
        assert!(!fresh(now + 300, now));
        assert!(!fresh(now - 10, now));
        // moto hands out tokens that expired in 2015: never cached.
        assert!(!fresh(1_420_070_400, now + 1_420_070_400));
    }

    #[test]
    fn the_token_file_is_private_and_bound_to_its_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ecr").join("t.json");
        let cached = Cached {
            registry: "r.example".into(),
            username: "AWS".into(),
            password: "s3cret".into(),
            expires_at: now() + 3600,
        };
        write_cached(&file, &cached).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(read_cached(&file, "r.example").unwrap().password, "s3cret");
        assert!(read_cached(&file, "other.example").is_none());
        let stale = Cached {
            expires_at: now() + 60,
            ..cached
        };
        write_cached(&file, &stale).unwrap();
        assert!(read_cached(&file, "r.example").is_none());
    }
}
