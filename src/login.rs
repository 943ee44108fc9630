//! `ocilambda login` / `logout`: check credentials against a registry and keep them in
//! Docker's config (or its credential helper) exactly where `docker login` would, so
//! docker, skopeo and ocilambda share one login. The password comes from stdin only.

use crate::error::hint;
use crate::registry::{Client, Credential, credentials};
use crate::report::{Event, Reporter};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct LoginRequest {
    pub registry: String,
    pub username: String,
    pub insecure_registries: Vec<String>,
    pub ca_cert: Option<PathBuf>,
}

/// Credentials missing from the login command; the command layer says how to give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    NoPassword,
    NoUsername,
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoginError::NoPassword => "no password on stdin",
            LoginError::NoUsername => "no username given",
        })
    }
}

impl std::error::Error for LoginError {}

/// `https://reg.example/` or `reg.example/v2/` → `reg.example`, as docker accepts them.
pub fn normalize_registry(text: &str) -> Result<String> {
    let trimmed = text.trim();
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        bail!(hint(
            format!("invalid registry `{text}`"),
            "give the registry host, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com"
        ));
    }
    Ok(host.to_string())
}

/// The password as piped in: one trailing newline (from `echo` or a here-string) is not
/// part of it, as with `docker login --password-stdin`.
fn read_password(mut input: impl Read) -> Result<String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("reading the password from stdin")?;
    let password = text
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&text)
        .to_string();
    if password.is_empty() {
        bail!(LoginError::NoPassword);
    }
    Ok(password)
}

/// Verify the credentials with the registry, then store them.
pub async fn login(req: LoginRequest, password: impl Read, reporter: &dyn Reporter) -> Result<()> {
    let registry = normalize_registry(&req.registry)?;
    if req.username.is_empty() {
        bail!(LoginError::NoUsername);
    }
    let password = read_password(password)?;
    let client = Client::new(&req.insecure_registries, req.ca_cert.as_deref())?;
    client
        .use_credential(
            &registry,
            Credential::UsernamePassword {
                username: req.username.clone(),
                password: password.clone(),
            },
            &format!(
                "the username `{}` and the password given on stdin",
                req.username
            ),
        )
        .await;
    client.ping(&registry).await?;
    let stored = credentials::store(&registry, &req.username, &password)
        .await
        .with_context(|| format!("storing the credentials for {registry}"))?;
    reporter.event(Event::Step(format!(
        "Logged in to {registry} (credentials in {stored})"
    )));
    Ok(())
}

/// Forget the stored credentials; not being logged in is not an error.
pub async fn logout(registry: &str, reporter: &dyn Reporter) -> Result<()> {
    let registry = normalize_registry(registry)?;
    if credentials::erase(&registry).await? {
        reporter.event(Event::Step(format!(
            "Removed the credentials for {registry}"
        )));
    } else {
        reporter.event(Event::Step(format!("Not logged in to {registry}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_lose_one_trailing_newline_only() {
        assert_eq!(read_password("s3cret\n".as_bytes()).unwrap(), "s3cret");
        assert_eq!(read_password("s3cret\r\n".as_bytes()).unwrap(), "s3cret");
        assert_eq!(read_password("a b \n\n".as_bytes()).unwrap(), "a b \n");
        assert!(read_password("\n".as_bytes()).is_err());
    }

    #[test]
    fn registries_are_normalised_like_docker() {
        assert_eq!(
            normalize_registry("https://reg.example:5000/v2/").unwrap(),
            "reg.example:5000"
        );
        assert_eq!(
            normalize_registry("public.ecr.aws").unwrap(),
            "public.ecr.aws"
        );
        assert!(normalize_registry("").is_err());
        assert!(normalize_registry("user@host").is_err());
    }
}
