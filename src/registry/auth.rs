//! Credentials and challenges: Docker's config.json (credHelpers → credsStore → auths) via
//! the `docker_credential` crate, the Basic scheme (ECR private) and the Bearer token flow
//! (realm/service/scope). Secrets live only in memory and in headers; errors name the
//! credential source, never its content.

use anyhow::{Context, Result};
use base64::Engine;
use reqwest::header::HeaderValue;
use std::collections::HashMap;
use std::path::PathBuf;

/// Split `Bearer realm="x",service="y"` into its scheme and parameters.
pub fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    (scheme.to_ascii_lowercase(), params)
}

fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// The server key Docker uses for a registry in config.json.
fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        other => other.into(),
    }
}

pub enum Credential {
    UsernamePassword(String, String),
    IdentityToken(String),
}

/// Look the registry up in the Docker config; `None` means anonymous.
async fn credential(registry: &str) -> Option<Credential> {
    let key = server_key(registry);
    tokio::task::spawn_blocking(move || match docker_credential::get_credential(&key) {
        Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
            Some(Credential::UsernamePassword(u, p))
        }
        Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
            Some(Credential::IdentityToken(t))
        }
        Err(_) => None,
    })
    .await
    .ok()
    .flatten()
}

/// Which credential source applies to `registry`, for error messages (no secrets).
pub fn describe_source(registry: &str) -> String {
    let Some(path) = docker_config_path() else {
        return "none (anonymous)".into();
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return format!("none (anonymous; no {})", path.display());
    };
    let config: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let key = server_key(registry);
    if let Some(helper) = config.pointer(&format!(
        "/credHelpers/{}",
        key.replace('~', "~0").replace('/', "~1")
    )) {
        return format!(
            "credential helper `docker-credential-{}`",
            helper.as_str().unwrap_or("?")
        );
    }
    if let Some(store) = config.get("credsStore").and_then(|s| s.as_str()) {
        return format!("credential store `docker-credential-{store}`");
    }
    if config.get("auths").and_then(|a| a.get(&key)).is_some() {
        return format!("`auths` in {}", path.display());
    }
    format!(
        "none (anonymous; no entry for {registry} in {})",
        path.display()
    )
}

fn basic(user: &str, password: &str) -> Result<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Answer a challenge: the Authorization header to retry with, or `None` when we have
/// nothing to offer (the caller then reports the 401).
pub async fn authorize(
    http: &reqwest::Client,
    registry: &str,
    _repo: &str,
    scope: &str,
    challenge: &str,
) -> Result<Option<HeaderValue>> {
    let (scheme, params) = parse_challenge(challenge);
    let cred = credential(registry).await;
    match scheme.as_str() {
        "basic" => match cred {
            Some(Credential::UsernamePassword(u, p)) => Ok(Some(basic(&u, &p)?)),
            _ => Ok(None),
        },
        "bearer" => {
            let realm = params
                .get("realm")
                .with_context(|| format!("{registry} sent a Bearer challenge without a realm"))?;
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(service) = params.get("service") {
                query.push(("service", service));
            }
            // Several scopes (e.g. for a cross-repository mount) are space-separated.
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                query.push(("scope", s));
            }
            let mut request = http.get(realm).query(&query);
            match &cred {
                Some(Credential::UsernamePassword(u, p)) => {
                    request = request.basic_auth(u, Some(p))
                }
                Some(Credential::IdentityToken(t)) => {
                    // An identity token is a refresh token for the OAuth2 endpoint.
                    let form = [
                        ("grant_type", "refresh_token"),
                        ("refresh_token", t.as_str()),
                        ("service", params.get("service").map_or("", String::as_str)),
                        ("scope", scope),
                        ("client_id", "ocilambda"),
                    ];
                    request = http.post(realm).form(&form);
                }
                None => {}
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("requesting a token from {realm}"))?;
            if !response.status().is_success() {
                return Ok(None);
            }
            let body: serde_json::Value = response
                .json()
                .await
                .with_context(|| format!("reading the token from {realm}"))?;
            let token = body
                .get("token")
                .or_else(|| body.get("access_token"))
                .and_then(|t| t.as_str())
                .with_context(|| format!("{realm} returned no token"))?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            Ok(Some(value))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="x""#);
        assert_eq!(scheme, "basic");
        assert_eq!(p["realm"], "x");
    }
}
