//! Image references (`registry/repository[:tag][@digest]`) parsed by hand, following
//! distribution's reference grammar and Docker's normalisation (no registry means
//! `docker.io`, a one-part Docker Hub name lives under `library/`).
//!
//! The same thing as `oci_spec::distribution::Reference`'s parser, without its regex:
//! compiling that regex costs ~30 ms, more than half of a no-op push.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a reference does not parse. The text itself is left to the caller, who shows it
/// through [`redact`]; no variant holds a part of it that could be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// `user:password@host/…`: credentials where the registry belongs.
    Credentials,
    /// Something after `@` that is not a digest we support.
    Digest,
    Tag(String),
    Registry(String),
    Repository(String),
    TooLong,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Credentials => f.write_str("it holds credentials"),
            NameError::Digest => {
                f.write_str("unsupported or malformed digest (expected sha256:<64 hex>)")
            }
            NameError::Tag(tag) => write!(f, "invalid tag `{tag}`"),
            NameError::Registry(r) => write!(f, "invalid registry `{r}`"),
            NameError::Repository(r) => write!(
                f,
                "invalid repository name `{r}` (lowercase letters, digits and separators `.`, `_`, `-`, `/`)"
            ),
            NameError::TooLong => f.write_str("the repository name is longer than 255 characters"),
        }
    }
}

impl std::error::Error for NameError {}

/// Whether `after` (what follows an `@`) is a digest: `algorithm:encoded` with an
/// algorithm registries use, and no path after it.
fn is_digest(after: &str) -> bool {
    after.split_once(':').is_some_and(|(alg, enc)| {
        matches!(alg, "sha256" | "sha384" | "sha512" | "blake3")
            && !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    })
}

/// `text` as it may be shown or recorded: credentials (`user:password@` or `token@`,
/// after an optional `scheme://`) are replaced by `user:***@` / `***@`. The one function
/// through which every reference a user typed reaches an error or a log.
///
/// Any `@` not followed by a digest ends a user-info part; so a password may itself hold
/// `@`, `:` or `/`. Over-redacting a malformed reference is harmless; leaking is not.
pub fn redact(text: &str) -> Cow<'_, str> {
    let start = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[start..];
    let Some(end) = rest
        .rmatch_indices('@')
        .map(|(i, _)| i)
        .find(|&i| !is_digest(&rest[i + 1..]))
    else {
        return Cow::Borrowed(text);
    };
    let shown = match rest[..end].split_once(':') {
        Some((user, _)) if !user.is_empty() => format!("{user}:***"),
        _ => "***".to_string(),
    };
    Cow::Owned(format!("{}{shown}{}", &text[..start], &rest[end..]))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or any number of `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A host name or IPv4 address with an optional port, or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    }) || host.is_empty() && d.starts_with('[')
}

/// `[\w][\w.-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && tag.len() <= 128
}

pub fn parse(text: &str) -> Result<Name, NameError> {
    if redact(text) != text {
        return Err(NameError::Credentials);
    }
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => {
            crate::digest::hex_part(d).map_err(|_| NameError::Digest)?;
            (r, Some(d.to_string()))
        }
        None => (text, None),
    };
    // A `:` after the last `/` starts the tag; one before it is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(NameError::Tag(tag.to_string()));
    }
    let (first, remainder) = match name.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    let (registry, repository) = match remainder {
        Some(r) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
            if !valid_domain(first) {
                return Err(NameError::Registry(first.to_string()));
            }
            (first.to_string(), r.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    if repository.is_empty() || !repository.split('/').all(valid_path_component) {
        return Err(NameError::Repository(repository));
    }
    if repository.len() > 255 {
        return Err(NameError::TooLong);
    }
    Ok(Name {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest,
    })
}

/// An image reference that does not parse, with its text already redacted.
#[derive(Debug)]
pub struct InvalidReference {
    pub text: String,
    pub error: NameError,
}

impl fmt::Display for InvalidReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid image reference `{}`: {}", self.text, self.error)
    }
}

impl std::error::Error for InvalidReference {}

/// [`parse`], with the error typed for the command layer.
pub fn parse_checked(text: &str) -> Result<Name, InvalidReference> {
    parse(text).map_err(|error| InvalidReference {
        text: redact(text).into_owned(),
        error,
    })
}

/// A reference for the registry client: a missing tag means `latest`. Our own parser, not
/// oci-spec's: compiling oci-spec's reference regex costs ~30 ms, most of an app-only
/// rebuild.
pub fn parse_reference(text: &str) -> anyhow::Result<super::Reference> {
    use super::Reference;
    let n = parse_checked(text)?;
    Ok(match (n.tag, n.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(n.registry, n.repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(n.registry, n.repository, digest),
        (tag, None) => Reference::with_tag(
            n.registry,
            n.repository,
            tag.unwrap_or_else(|| "latest".into()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_distribution() {
        let n = parse("127.0.0.1:5000/team/app:v1.2").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str(), n.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("v1.2"))
        );
        let n = parse("python:3.13").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str()),
            ("docker.io", "library/python")
        );
        let n = parse("public.ecr.aws/lambda/python").unwrap();
        assert_eq!(n.tag, None);
        assert_eq!(parse("localhost/app").unwrap().registry, "localhost");
        assert_eq!(parse("[::1]:5000/app").unwrap().registry, "[::1]:5000");
        let d = format!("reg.example/a@sha256:{}", "0".repeat(64));
        assert!(parse(&d).unwrap().digest.is_some());
    }

    #[test]
    fn credentials_are_redacted_and_refused() {
        for (text, shown) in [
            ("user:secret@host/repo:1", "user:***@host/repo:1"),
            (
                "https://user:secret@host/lambda/python:3.11",
                "https://user:***@host/lambda/python:3.11",
            ),
            ("ghp_secret@host/repo", "***@host/repo"),
            ("u:p@ss/w:rd@host:5000/repo", "u:***@host:5000/repo"),
            ("user:secret@host:5000", "user:***@host:5000"),
            (
                "user:secret@host/repo@sha256:00",
                "user:***@host/repo@sha256:00",
            ),
        ] {
            assert_eq!(redact(text), shown, "{text}");
            assert_eq!(parse(text), Err(NameError::Credentials), "{text}");
        }
        let digest = format!("reg.example/a@sha256:{}", "0".repeat(64));
        for plain in [
            "python:3.13",
            "host/repo@sha256:00",
            &digest,
            "https://host/a",
        ] {
            assert_eq!(redact(plain), plain);
        }
    }

    #[test]
    fn agrees_with_oci_spec_on_valid_and_invalid_names() {
        for text in [
            "127.0.0.1:5000/a/b:latest",
            "reg.example/a__b/c-d/e.f",
            "reg.example/a---b",
            "docker.io/library/x",
            "x",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/my-fn:abc_1",
        ] {
            let ours = parse(text).unwrap();
            let theirs: oci_spec::distribution::Reference = text.parse().unwrap();
            assert_eq!(ours.registry, theirs.registry(), "{text}");
            assert_eq!(ours.repository, theirs.repository(), "{text}");
        }
        for bad in [
            "",
            "App",
            "reg.example/App",
            "reg.example/a b",
            "reg.example/a::b",
            "reg.example/a:-x",
            "reg.example/a_.b",
            "reg.example/-a",
            "reg.example/a/",
            "reg.example:/a",
            "reg.example/a@sha256:abc",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
            assert!(
                bad.parse::<oci_spec::distribution::Reference>().is_err(),
                "oci-spec accepts {bad}"
            );
        }
    }
}
