//! What an image records about how it was made: the provenance annotations (base, lock,
//! handler, target, uv, bytecode, git facts, creation time) and the settings beyond the
//! lock, as a digest and (when not the defaults) as values `verify` can replay.
//!
//! Low in the house on purpose: reading an image (`verify`, `inspect`) needs this, not the
//! build command. It knows nothing of staging; the caller hands it plain facts.

pub use crate::oci::annotation::*;
use crate::oci::{canonical_json, rfc3339};
use crate::target::{Arch, PyVersion};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// SHA-256 of bytes, as hex.
pub fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A key from JSON inputs: the SHA-256 of their canonical form.
pub fn json_key(value: &serde_json::Value) -> String {
    sha_hex(&canonical_json(value))
}

/// The settings that shape the image beyond the lock and the recorded target: which app
/// files (include/exclude) and which of the project (package, extras, groups). A field
/// left out of the JSON is the default, so a default build records nothing new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extras: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_extras: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Choices {
    /// One digest of the choices and the architecture; its JSON is fixed by images already
    /// built (every field present, `null` for unset), so it must not change shape.
    pub fn digest(&self, arch: Arch) -> String {
        json_key(&serde_json::json!({
            "include": self.include, "exclude": self.exclude, "arch": arch.lambda_name(),
            "package": self.package, "extras": self.extras, "all_extras": self.all_extras,
            "groups": self.groups,
        }))
    }

    /// The [`CHOICES`] annotation value, or None for the defaults.
    pub fn annotation(&self) -> Option<String> {
        (*self != Choices::default()).then(|| {
            let value = serde_json::to_value(self).expect("plain data serialises");
            String::from_utf8(canonical_json(&value)).expect("JSON is UTF-8")
        })
    }

    /// The choices an image records in its [`CHOICES`] annotation (the defaults when it
    /// records none).
    pub fn from_annotation(text: Option<&str>) -> Result<Choices> {
        match text {
            None => Ok(Choices::default()),
            Some(text) => serde_json::from_str(text)
                .with_context(|| format!("reading the `{CHOICES}` annotation `{text}`")),
        }
    }
}

/// The facts a build hands over to be recorded.
pub struct Facts<'a> {
    pub base_name: &'a str,
    pub base_digest: &'a str,
    pub epoch: u64,
    pub uv_version: &'a str,
    pub lock: &'a [u8],
    pub handler: &'a str,
    pub python: PyVersion,
    pub arch: Arch,
    /// The bytecode interpreter's version; None: no bytecode.
    pub bytecode: Option<&'a str>,
    pub choices: &'a Choices,
    /// Where to look for git facts.
    pub project_root: &'a Path,
}

/// The manifest annotations for a build.
pub fn annotations(f: &Facts) -> Result<BTreeMap<String, String>> {
    let mut a = BTreeMap::new();
    a.insert(BASE_NAME.to_string(), f.base_name.to_string());
    a.insert(BASE_DIGEST.to_string(), f.base_digest.to_string());
    a.insert(CREATED.to_string(), rfc3339(f.epoch)?);
    a.insert(VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string());
    a.insert(LOCK.to_string(), sha_hex(f.lock));
    a.insert(HANDLER.to_string(), f.handler.to_string());
    a.insert(PYTHON.to_string(), f.python.to_string());
    a.insert(UV.to_string(), f.uv_version.to_string());
    a.insert(
        BYTECODE.to_string(),
        f.bytecode.unwrap_or("off").to_string(),
    );
    a.insert(SETTINGS.to_string(), f.choices.digest(f.arch));
    if let Some(choices) = f.choices.annotation() {
        a.insert(CHOICES.to_string(), choices);
    }
    let (revision, source) = git_facts(f.project_root);
    if let Some(r) = revision {
        a.insert(REVISION.to_string(), r);
    }
    if let Some(s) = source {
        a.insert(SOURCE.to_string(), s);
    }
    Ok(a)
}

/// `git` facts about the project, when it is in a repository: HEAD and the origin URL
/// with any `user:password@` removed (CI remotes often carry tokens). Outside a
/// repository no git process is started; inside, both queries run at once.
fn git_facts(dir: &Path) -> (Option<String>, Option<String>) {
    if !dir.ancestors().any(|d| d.join(".git").exists()) {
        return (None, None);
    }
    let spawn = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    };
    let finish = |child: Option<std::process::Child>| -> Option<String> {
        let out = child?.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let head = spawn(&["rev-parse", "HEAD"]);
    let origin = spawn(&["remote", "get-url", "origin"]);
    (finish(head), finish(origin).map(|u| strip_credentials(&u)))
}

/// The origin URL in one form whatever the clone used, without credentials or user:
/// `https://user:token@host/x.git`, `ssh://git@host/x` and `git@host:x.git` all become
/// `https://host/x`, so CI (https with a token) and a developer (ssh) record the same.
pub fn strip_credentials(url: &str) -> String {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (host.to_string(), path.to_string())
        }
        // scp-like `user@host:path`
        None => match url.split_once(':') {
            Some((authority, path)) if !authority.contains('/') => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                (host.to_string(), path.to_string())
            }
            _ => return url.to_string(),
        },
    };
    // An ssh port (`host:22`) means nothing for https.
    let host = host.split(':').next().unwrap_or(&host).to_string();
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    if path.is_empty() {
        format!("https://{host}")
    } else {
        format!("https://{host}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_source_urls() {
        for url in [
            "https://x-access-token:ghs_secret@github.com/org/repo.git",
            "https://github.com/org/repo",
            "git@github.com:org/repo.git",
            "ssh://git@github.com:22/org/repo.git",
        ] {
            assert_eq!(
                strip_credentials(url),
                "https://github.com/org/repo",
                "{url}"
            );
        }
        assert_eq!(strip_credentials("https://user@host"), "https://host");
    }

    #[test]
    fn default_choices_record_nothing_and_others_round_trip() {
        assert_eq!(Choices::default().annotation(), None);
        let c = Choices {
            include: Some(vec!["data/**".into()]),
            package: Some("api".into()),
            groups: vec!["dev".into()],
            ..Default::default()
        };
        let text = c.annotation().unwrap();
        assert_eq!(
            text,
            r#"{"groups":["dev"],"include":["data/**"],"package":"api"}"#
        );
        assert_eq!(Choices::from_annotation(Some(&text)).unwrap(), c);
        assert_eq!(Choices::from_annotation(None).unwrap(), Choices::default());
        assert!(Choices::from_annotation(Some("[1]")).is_err());
    }

    #[test]
    fn the_settings_digest_keeps_its_shape() {
        // The digest of a default x86_64 build, as images built before this module record.
        let legacy = json_key(&serde_json::json!({
            "include": null, "exclude": null, "arch": "x86_64", "package": null,
            "extras": [], "all_extras": false, "groups": [],
        }));
        assert_eq!(Choices::default().digest(Arch::X86_64), legacy);
        assert_ne!(Choices::default().digest(Arch::Arm64), legacy);
    }
}
