//! AWS through the AWS SDK for Rust: the SDK configuration from the standard credential
//! chain (environment, shared config and credentials files with profiles, web identity,
//! ECS container credentials, EC2 instance metadata), and the one place where SDK errors
//! become typed kinds ([`AwsError`]) that the command layer advises on.
//!
//! Which services are called, and why, is the business of the modules that call them
//! (ECR in [`crate::registry`], Lambda in [`crate::deploy`]). Credentials never leave the
//! SDK, except an identity's access key ID, hashed, as a cache key.

use anyhow::Result;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_lambda::error::ProvideErrorMetadata;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::fmt;

/// Where the credential chain looks, in its order, for "no credentials" messages. Only
/// the names: a source's values are never shown.
pub const CHAIN: &str = "environment variables (AWS_ACCESS_KEY_ID), shared config and credentials files (AWS_PROFILE; SSO and credential_process profiles too), web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), ECS container credentials, EC2 instance metadata";

/// What the user chose about AWS access (flags); everything else comes from the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsOptions {
    /// Overrides the chain's region (AWS_REGION, the profile's `region`, IMDS).
    pub region: Option<String>,
    /// Overrides AWS_PROFILE.
    pub profile: Option<String>,
}

/// The SDK configuration, loaded once per command and shared by its clients.
#[derive(Clone)]
pub struct Aws {
    config: SdkConfig,
}

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.region())
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// Load the configuration from the chain. Nothing is resolved yet: credentials are
    /// fetched (and refreshed) by the SDK on the first call that needs them.
    pub async fn load(options: &AwsOptions) -> Aws {
        // rustls with ring, as the registry client: no second TLS stack, no aws-lc.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        Aws {
            config: loader.load().await,
        }
    }

    pub fn config(&self) -> &SdkConfig {
        &self.config
    }

    /// The region the chain settled on, if any.
    pub fn region(&self) -> Option<&str> {
        self.config.region().map(|r| r.as_ref())
    }

    /// The region, or [`AwsError::NoRegion`].
    pub fn require_region(&self) -> Result<&str, AwsError> {
        self.region().ok_or(AwsError::NoRegion)
    }

    /// The same configuration for another region (an ECR registry names its own).
    pub fn in_region(&self, region: &str) -> Aws {
        Aws {
            config: self
                .config
                .to_builder()
                .region(aws_config::Region::new(region.to_string()))
                .build(),
        }
    }

    /// Resolve the credentials once: the same configuration with them fixed (so the
    /// calls that follow do not resolve them again: with web identity, each resolution is
    /// an STS call), and a short, non-reversible name of the identity (a hash of its
    /// access key ID) to keep cached tokens of different identities apart — `None` for
    /// temporary credentials (a session token: web identity, SSO, roles), whose key ID is
    /// new each session, so a token cached under it would never be read again and would
    /// only sit on disk (or in a CI cache of the cache directory).
    pub async fn resolved(&self) -> Result<(Aws, Option<String>), AwsError> {
        let provider =
            self.config
                .credentials_provider()
                .ok_or_else(|| AwsError::NoCredentials {
                    detail: "no credential provider is configured".into(),
                })?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| credentials_error(&e))?;
        use sha2::Digest;
        let identity = credentials.session_token().is_none().then(|| {
            let hash = sha2::Sha256::digest(credentials.access_key_id().as_bytes());
            hex::encode(&hash[..8])
        });
        let fixed = Aws {
            config: self
                .config
                .to_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
                )
                .build(),
        };
        Ok((fixed, identity))
    }
}

/// What went wrong calling AWS, by kind. Messages name the action and carry AWS's own
/// words (which never hold a secret); none names a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsError {
    /// The chain found no credentials (or the source it found failed).
    NoCredentials { detail: String },
    /// Neither a region option nor the chain gave a region.
    NoRegion,
    /// The identity may not call `action` (AccessDenied, UnauthorizedOperation, …).
    AccessDenied { action: String, detail: String },
    /// Still throttled after the SDK's retries.
    Throttled { action: String, detail: String },
    /// No answer from the endpoint (connection refused, DNS, timeout).
    Unreachable { action: String, detail: String },
    /// The credentials were refused (expired, wrong secret, unknown key).
    BadCredentials { action: String, detail: String },
    /// Any other error AWS answered with.
    Service {
        action: String,
        code: String,
        detail: String,
    },
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AwsError::*;
        match self {
            NoCredentials { detail } => {
                write!(f, "no AWS credentials ({detail}); looked in: {CHAIN}")
            }
            NoRegion => f.write_str(
                "no AWS region: none given, and neither AWS_REGION nor the profile sets one",
            ),
            AccessDenied { action, detail } => {
                write!(f, "access denied to {action} ({detail})")
            }
            Throttled { action, detail } => {
                write!(f, "AWS throttled {action}, also on every retry ({detail})")
            }
            Unreachable { action, detail } => write!(f, "cannot reach AWS for {action}: {detail}"),
            BadCredentials { action, detail } => {
                write!(f, "AWS refused the credentials for {action} ({detail})")
            }
            Service {
                action,
                code,
                detail,
            } => write!(f, "{action} failed: {code}: {detail}"),
        }
    }
}

impl std::error::Error for AwsError {}

/// The AWS error anywhere in `err`'s chain.
pub fn find(err: &anyhow::Error) -> Option<&AwsError> {
    err.chain().find_map(|e| e.downcast_ref::<AwsError>())
}

fn credentials_error(e: &CredentialsError) -> AwsError {
    AwsError::NoCredentials {
        detail: crate::error::one_line(&anyhow::anyhow!(
            "{}",
            source_chain(e as &dyn std::error::Error)
        )),
    }
}

/// `e` and its sources, `: `-joined (the SDK's Display shows only the outermost).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        next = s.source();
    }
    text
}

/// The error code of an SDK error, if AWS answered with one.
pub fn code<E: ProvideErrorMetadata>(e: &E) -> Option<&str> {
    e.code()
}

/// Type an SDK error of `action` (e.g. `lambda:GetFunction`). Service-specific codes
/// the caller cares about (ResourceNotFoundException, …) are for it to check first.
pub fn classify<E>(
    action: &str,
    err: &aws_sdk_lambda::error::SdkError<E, aws_sdk_lambda::config::http::HttpResponse>,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_lambda::error::SdkError;
    let action = action.to_string();
    // A failed credential lookup surfaces inside a dispatch or construction failure.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(ce) = c.downcast_ref::<CredentialsError>() {
            return credentials_error(ce);
        }
        cause = c.source();
    }
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            // An answer whose body names no code (a proxy's, or a stand-in's XML for a
            // JSON service) still says something by its status.
            let fallback = match status {
                403 => "AccessDenied",
                429 => "TooManyRequestsException",
                _ => "Unknown",
            };
            let code = err.code().unwrap_or(fallback).to_string();
            let message = err
                .message()
                .map_or_else(|| format!("HTTP {status}"), str::to_string);
            let detail = format!("{code}: {message}");
            match code.as_str() {
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "UnauthorizedException"
                | "AuthorizationError" => AwsError::AccessDenied { action, detail },
                "Throttling"
                | "ThrottlingException"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "ThrottledException" => AwsError::Throttled { action, detail },
                "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidAccessKeyId" => AwsError::BadCredentials { action, detail },
                _ => AwsError::Service {
                    action,
                    code,
                    detail: message,
                },
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => AwsError::Unreachable {
            action,
            detail: source_chain(err),
        },
        _ => AwsError::Service {
            action,
            code: "Unknown".into(),
            detail: source_chain(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_keys(session_token: Option<&str>) -> Aws {
        let credentials = aws_credential_types::Credentials::new(
            "AKIAEXAMPLEKEY00001",
            "secret",
            session_token.map(str::to_string),
            None,
            "test",
        );
        Aws {
            config: SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
                )
                .build(),
        }
    }

    #[tokio::test]
    async fn only_long_term_keys_name_an_identity_to_cache_tokens_under() {
        let (_, identity) = with_keys(None).resolved().await.unwrap();
        let identity = identity.expect("long-term keys have an identity");
        assert_eq!(identity.len(), 16);
        assert!(
            !identity.contains("AKIA"),
            "the key ID itself is never used"
        );
        // A session token (web identity, SSO, a role): nothing to cache under.
        let (_, identity) = with_keys(Some("session")).resolved().await.unwrap();
        assert_eq!(identity, None);
    }

    #[test]
    fn no_credentials_names_every_source_of_the_chain_and_no_value() {
        let e = AwsError::NoCredentials {
            detail: "the credential provider was not enabled".into(),
        };
        let text = e.to_string();
        for source in [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "ECS",
            "EC2",
        ] {
            assert!(text.contains(source), "{text}");
        }
    }
}
