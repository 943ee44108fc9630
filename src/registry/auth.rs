//! Challenges: the Basic scheme (ECR private, htpasswd) and the Bearer token flow
//! (realm/service/scope), answered with a credential from [`super::credentials`] or
//! anonymously. Secrets live only in memory and in headers marked sensitive; errors name
//! the realm, never a secret.

use super::credentials::Credential;
use super::error::BodyKind;
use anyhow::{Context, Result};
use base64::Engine;
use reqwest::header::HeaderValue;
use std::collections::HashMap;

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

fn basic(user: &str, password: &str) -> Result<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// How an answered challenge applies: Basic credentials are good for every request to
/// the registry, a Bearer token only for the scope it was issued for.
pub enum Answer {
    Registry(HeaderValue),
    Scope(HeaderValue),
}

/// Answer a challenge: the Authorization header to retry with, or `None` when we have
/// nothing to offer (the caller then reports the 401).
pub async fn authorize(
    http: &reqwest::Client,
    registry: &str,
    scope: &str,
    challenge: &str,
    cred: Option<&Credential>,
) -> Result<Option<Answer>> {
    let (scheme, params) = parse_challenge(challenge);
    match scheme.as_str() {
        "basic" => match cred {
            Some(Credential::UsernamePassword { username, password }) => {
                Ok(Some(Answer::Registry(basic(username, password)?)))
            }
            _ => Ok(None),
        },
        "bearer" => {
            let realm = params
                .get("realm")
                .with_context(|| format!("{registry} sent a Bearer challenge without a realm"))?;
            let service = params.get("service").map_or("", String::as_str);
            let mut query: Vec<(&str, &str)> = Vec::new();
            if !service.is_empty() {
                query.push(("service", service));
            }
            // Several scopes (e.g. for a cross-repository mount) are space-separated.
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                query.push(("scope", s));
            }
            let request = match cred {
                Some(Credential::UsernamePassword { username, password }) => http
                    .get(realm)
                    .query(&query)
                    .basic_auth(username, Some(password)),
                Some(Credential::IdentityToken(token)) => {
                    // An identity token is a refresh token for the OAuth2 endpoint.
                    let form = [
                        ("grant_type", "refresh_token"),
                        ("refresh_token", token.as_str()),
                        ("service", service),
                        ("scope", scope),
                        ("client_id", "ocilambda"),
                    ];
                    http.post(realm).form(&form)
                }
                None => http.get(realm).query(&query),
            };
            let response = super::within(realm, request.send())
                .await
                .with_context(|| format!("requesting a token from {realm}"))?;
            if !response.status().is_success() {
                return Ok(None);
            }
            let body = super::within(
                realm,
                super::body::read_capped(response, super::TOKEN_LIMIT, BodyKind::Token),
            )
            .await
            .with_context(|| format!("reading the token from {realm}"))?;
            let body: serde_json::Value = serde_json::from_slice(&body)
                .with_context(|| format!("{realm} answered with something other than JSON"))?;
            let token = body
                .get("token")
                .or_else(|| body.get("access_token"))
                .and_then(|t| t.as_str())
                .with_context(|| format!("{realm} returned no token"))?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            Ok(Some(Answer::Scope(value)))
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
