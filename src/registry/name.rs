//! Image references (`registry/repository[:tag][@digest]`) parsed by hand, following
//! distribution's reference grammar and Docker's normalisation (no registry means
//! `docker.io`, a one-part Docker Hub name lives under `library/`).
//!
//! The same thing as `oci_spec::distribution::Reference`'s parser, without its regex:
//! compiling that regex costs ~30 ms, more than half of a no-op push.

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
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

pub fn parse(text: &str) -> Result<Name> {
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => {
            crate::digest::hex_part(d)?;
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
        bail!("invalid tag `{tag}`");
    }
    let (first, remainder) = match name.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    let (registry, repository) = match remainder {
        Some(r) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
            if !valid_domain(first) {
                bail!("invalid registry `{first}`");
            }
            (first.to_string(), r.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    if repository.is_empty() || !repository.split('/').all(valid_path_component) {
        bail!(
            "invalid repository name `{repository}` (lowercase letters, digits and separators `.`, `_`, `-`, `/`)"
        );
    }
    if repository.len() > 255 {
        bail!("repository name `{repository}` is longer than 255 characters");
    }
    Ok(Name {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest,
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
