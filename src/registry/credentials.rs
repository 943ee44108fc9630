//! Docker's credential store, read and written the way the `docker` CLI does: the
//! config file is `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; a registry's
//! credentials come from its `credHelpers` entry, else the `credsStore` helper, else its
//! `auths` entry (`auth` base64, `username`/`password`, `identitytoken`); otherwise the
//! registry is used anonymously.
//!
//! Helpers (`docker-credential-<name> get|store|erase`) run with a timeout, so a stuck
//! helper fails the command instead of hanging it. This module owns the secrets only in
//! memory: [`Credential`]'s `Debug` is redacted, errors and descriptions name the source
//! (file or helper), never its content.

use anyhow::{Context, Result, bail};
use base64::Engine;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long a credential helper may take: `docker-credential-ecr-login` may call STS,
/// which takes a few seconds on a cold start; a minute means something is stuck.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// The username helpers use to say "the secret is an identity (refresh) token".
const TOKEN_USERNAME: &str = "<token>";

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    UsernamePassword {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the Bearer realm for access tokens.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UsernamePassword { username, .. } => {
                write!(f, "UsernamePassword({username:?}, <redacted>)")
            }
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The outcome of a lookup: what to authenticate with (None: anonymous) and where it
/// came from, in words fit for an error message.
#[derive(Debug, Clone)]
pub struct Found {
    pub credential: Option<Credential>,
    pub source: String,
    /// The registry's `credHelpers` entry is `ecr-login` and no such helper is
    /// installed: the caller gets an ECR token in process ([`super::ecr`]).
    pub ecr_login: bool,
}

/// The helper ocilambda serves itself when its binary is missing.
pub const ECR_LOGIN: &str = "ecr-login";

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".docker"))
        })
        .map(|d| d.join("config.json"))
}

/// The key Docker uses for a registry in config.json and with helpers.
pub fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        other => other.into(),
    }
}

/// Docker's `ConvertToHostname`: `https://host:5000/v1/` → `host:5000`, so entries
/// written by older tools with a scheme or path still match.
fn hostname_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// The entry for `registry` in a config.json map (`auths` or `credHelpers`): the exact
/// key first, then any key with the same host name.
fn entry<'a>(
    map: Option<&'a serde_json::Value>,
    registry: &str,
) -> Option<(&'a String, &'a serde_json::Value)> {
    let map = map?.as_object()?;
    let key = server_key(registry);
    map.get_key_value(&key).or_else(|| {
        let host = hostname_of(&key);
        map.iter().find(|(k, _)| hostname_of(k) == host)
    })
}

/// The config file as JSON; a missing file is an empty config.
fn read_config(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
        Ok(bytes) => {
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {} (not valid JSON)", path.display()))?;
            if !value.is_object() {
                bail!("{} is not a JSON object", path.display());
            }
            Ok(value)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Decode an `auths` entry: `Ok(None)` when it holds no secret (docker leaves `{}` for a
/// registry whose secret is in a helper), an error naming what is wrong when it holds one
/// that cannot be decoded (never its content).
fn from_auths_entry(value: &serde_json::Value) -> Result<Option<Credential>, &'static str> {
    let field = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = field("identitytoken") {
        return Ok(Some(Credential::IdentityToken(token.to_string())));
    }
    if let Some(auth) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "its `auth` is not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "its `auth` does not decode to text")?;
        let (username, password) = text
            .split_once(':')
            .ok_or("its `auth` does not decode to USER:PASSWORD")?;
        return Ok(Some(Credential::UsernamePassword {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    Ok(match (field("username"), field("password")) {
        (Some(u), Some(p)) => Some(Credential::UsernamePassword {
            username: u.to_string(),
            password: p.to_string(),
        }),
        _ => None,
    })
}

/// What a helper printed, and whether it succeeded.
struct HelperOutput {
    success: bool,
    stdout: String,
}

/// Run `program action` with `input` on stdin, killed after `timeout`. The helper's
/// stderr is passed through (it explains its own failures); its stdout may hold a
/// secret and is only parsed, never shown.
async fn run_helper(
    program: &Path,
    action: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<HelperOutput> {
    let shown = program.display();
    let mut child = tokio::process::Command::new(program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running credential helper `{shown} {action}`"))?;
    let mut stdin = child.stdin.take().context("helper stdin")?;
    let input = input.to_vec();
    let run = async move {
        // A helper that exits without reading its input closes the pipe: not an error.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(timeout, run).await {
        Ok(result) => {
            result.with_context(|| format!("running credential helper `{shown} {action}`"))?
        }
        Err(_) => bail!(crate::error::hint(
            format!(
                "credential helper `{shown} {action}` did not answer within {}",
                crate::output::duration(timeout)
            ),
            "check the helper's own configuration (e.g. AWS credentials for docker-credential-ecr-login)"
        )),
    };
    Ok(HelperOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    })
}

/// How helpers are found and how long they may take.
#[derive(Debug, Clone)]
struct Helpers {
    /// None: `docker-credential-<name>` is looked up on PATH, as docker does.
    dir: Option<PathBuf>,
    timeout: Duration,
}

impl Helpers {
    fn system() -> Helpers {
        Helpers {
            dir: None,
            timeout: HELPER_TIMEOUT,
        }
    }

    fn program(&self, name: &str) -> PathBuf {
        let file = format!("docker-credential-{name}");
        match &self.dir {
            Some(dir) => dir.join(file),
            None => PathBuf::from(file),
        }
    }

    /// Whether `docker-credential-<name>` exists (on PATH, as docker looks it up).
    fn installed(&self, name: &str) -> bool {
        let program = self.program(name);
        if self.dir.is_some() {
            return program.is_file();
        }
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(&program).is_file())
        })
    }

    async fn run(&self, name: &str, action: &str, input: &[u8]) -> Result<HelperOutput> {
        run_helper(&self.program(name), action, input, self.timeout).await
    }
}

/// Ask a helper for `server`'s credentials; `Ok(None)` when it has none.
async fn helper_get(helpers: &Helpers, name: &str, server: &str) -> Result<Option<Credential>> {
    let out = helpers.run(name, "get", server.as_bytes()).await?;
    if !out.success {
        // The protocol's "not found" is this exact text on stdout; anything else is a
        // failure of the helper itself.
        if out.stdout.contains("credentials not found") {
            return Ok(None);
        }
        bail!(crate::error::hint(
            format!("credential helper `docker-credential-{name} get` failed"),
            "run it by hand (`echo <registry> | docker-credential-NAME get`) to see why"
        ));
    }
    let value: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("credential helper docker-credential-{name} printed no JSON"))?;
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let (username, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if username == TOKEN_USERNAME {
        Credential::IdentityToken(secret.to_string())
    } else {
        Credential::UsernamePassword {
            username: username.to_string(),
            password: secret.to_string(),
        }
    }))
}

/// Look `registry` up in Docker's order.
///
/// Where `credsStore` has nothing for the registry, the `auths` entry is used if it
/// holds a secret: docker would ignore it, but such entries are written by hand or by
/// other tools, and using them turns a certain 401 into a working push.
pub async fn lookup(registry: &str) -> Result<Found> {
    lookup_in(config_path().as_deref(), registry, &Helpers::system()).await
}

/// The credential `credHelpers` names for the registry in the config at `path`:
/// `ecr-login` without its helper binary is served in process (an ECR token from the AWS
/// credential chain), any other helper is run.
async fn from_cred_helper(path: &Path, name: &str, key: &str, helpers: &Helpers) -> Result<Found> {
    if name == ECR_LOGIN && !helpers.installed(name) {
        return Ok(Found {
            credential: None,
            source: format!(
                "{} (credHelpers `{ECR_LOGIN}` in {}, served in process)",
                super::ecr::TOKEN_SOURCE,
                path.display()
            ),
            ecr_login: true,
        });
    }
    let credential = helper_get(helpers, name, key).await?;
    Ok(Found {
        source: format!(
            "credential helper `docker-credential-{name}` (credHelpers in {}){}",
            path.display(),
            if credential.is_none() {
                ", which has none"
            } else {
                ""
            }
        ),
        credential,
        ecr_login: false,
    })
}

async fn lookup_in(path: Option<&Path>, registry: &str, helpers: &Helpers) -> Result<Found> {
    let Some(path) = path else {
        return Ok(Found {
            credential: None,
            source: "none (anonymous; neither DOCKER_CONFIG nor HOME is set)".into(),
            ecr_login: false,
        });
    };
    let config = read_config(path)?;
    let key = server_key(registry);
    if let Some((_, helper)) = entry(config.get("credHelpers"), registry) {
        let name = helper.as_str().unwrap_or_default();
        return from_cred_helper(path, name, &key, helpers).await;
    }
    let mut store_had_none = None;
    if let Some(store) = config
        .get("credsStore")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
    {
        if let Some(credential) = helper_get(helpers, store, &key).await? {
            return Ok(Found {
                credential: Some(credential),
                source: format!(
                    "credential store `docker-credential-{store}` (credsStore in {})",
                    path.display()
                ),
                ecr_login: false,
            });
        }
        store_had_none = Some(store.to_string());
    }
    if let Some((found_key, value)) = entry(config.get("auths"), registry) {
        let credential =
            from_auths_entry(value).map_err(|why| super::RegistryError::MalformedCredentials {
                file: path.to_path_buf(),
                key: found_key.clone(),
                why,
            })?;
        if let Some(credential) = credential {
            return Ok(Found {
                credential: Some(credential),
                source: format!("`auths.\"{found_key}\"` in {}", path.display()),
                ecr_login: false,
            });
        }
    }
    let source = match store_had_none {
        Some(store) => format!(
            "none (anonymous; credential store `docker-credential-{store}` has no entry for {registry})"
        ),
        None => format!(
            "none (anonymous; no entry for {registry} in {})",
            path.display()
        ),
    };
    Ok(Found {
        credential: None,
        source,
        ecr_login: false,
    })
}

/// Where `store` put the credentials, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    Helper(String),
    File(PathBuf),
}

impl fmt::Display for StoredIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredIn::Helper(name) => write!(f, "credential helper docker-credential-{name}"),
            StoredIn::File(path) => write!(f, "{}", path.display()),
        }
    }
}

fn require_path() -> Result<PathBuf> {
    config_path().ok_or_else(|| {
        crate::error::hint(
            "cannot locate the Docker config: neither DOCKER_CONFIG nor HOME is set",
            "set DOCKER_CONFIG to a directory for config.json",
        )
    })
}

/// Store credentials as `docker login` does: with the registry's `credHelpers` entry or
/// the `credsStore` helper when configured (leaving an empty `auths` entry for the
/// `credsStore` case, as docker does), else base64 in `auths`.
pub async fn store(registry: &str, username: &str, password: &str) -> Result<StoredIn> {
    store_in(
        &require_path()?,
        registry,
        username,
        password,
        &Helpers::system(),
    )
    .await
}

async fn store_in(
    path: &Path,
    registry: &str,
    username: &str,
    password: &str,
    helpers: &Helpers,
) -> Result<StoredIn> {
    let mut config = read_config(path)?;
    let key = server_key(registry);
    let helper = entry(config.get("credHelpers"), registry)
        .and_then(|(_, h)| h.as_str().map(str::to_string))
        .map(|h| (h, false))
        .or_else(|| {
            config
                .get("credsStore")
                .and_then(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .map(|s| (s.to_string(), true))
        });
    let auths = config
        .as_object_mut()
        .expect("read_config returns an object")
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        bail!("`auths` in {} is not a JSON object", path.display());
    }
    // One entry per host: drop older spellings of the same registry (with a scheme).
    let host = hostname_of(&key).to_string();
    auths
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == &key || hostname_of(k) != host);
    if let Some((name, is_store)) = helper {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
        let out = helpers
            .run(&name, "store", input.to_string().as_bytes())
            .await?;
        if !out.success {
            bail!(crate::error::hint(
                format!("credential helper `docker-credential-{name} store` failed"),
                "check that the helper works, or remove credsStore/credHelpers from the Docker config"
            ));
        }
        if is_store {
            auths
                .as_object_mut()
                .unwrap()
                .insert(key, serde_json::json!({}));
            write_config(path, &config)?;
        }
        return Ok(StoredIn::Helper(name));
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths
        .as_object_mut()
        .unwrap()
        .insert(key, serde_json::json!({ "auth": encoded }));
    write_config(path, &config)?;
    Ok(StoredIn::File(path.to_path_buf()))
}

/// Remove stored credentials as `docker logout` does; `false` when there were none.
pub async fn erase(registry: &str) -> Result<bool> {
    erase_in(&require_path()?, registry, &Helpers::system()).await
}

async fn erase_in(path: &Path, registry: &str, helpers: &Helpers) -> Result<bool> {
    let mut config = read_config(path)?;
    let key = server_key(registry);
    let helper = entry(config.get("credHelpers"), registry)
        .and_then(|(_, h)| h.as_str().map(str::to_string))
        .or_else(|| {
            config
                .get("credsStore")
                .and_then(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        });
    let mut removed = false;
    if let Some(name) = helper {
        let out = helpers.run(&name, "erase", key.as_bytes()).await?;
        removed |= out.success;
    }
    let host = hostname_of(&key).to_string();
    if let Some(auths) = config.get_mut("auths").and_then(|a| a.as_object_mut()) {
        let before = auths.len();
        auths.retain(|k, _| hostname_of(k) != host);
        if auths.len() != before {
            removed = true;
            write_config(path, &config)?;
        }
    }
    Ok(removed)
}

/// Replace the config file atomically (temp file in the same directory, renamed over it),
/// mode 0600 because it may hold secrets. A symlinked config.json (dotfile managers) is
/// written through to its target, as docker does.
fn write_config(path: &Path, config: &serde_json::Value) -> Result<()> {
    use serde::Serialize;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    let dir = path
        .parent()
        .context("the Docker config path has no parent")?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // Tab-indented, as docker writes it, so a diff of the file stays readable.
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
    config.serialize(&mut ser)?;
    text.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(&text)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_helper(dir: &Path, name: &str, script: &str) -> PathBuf {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn auths_entries_decode_every_docker_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {
                "https://reg.example:5000/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "other.example": {"username": "u2", "password": "p2"},
                "token.example": {"identitytoken": "refresh"}
            }}"#,
        )
        .unwrap();
        let rt = rt();
        let t = &Helpers::system();
        let found = rt
            .block_on(lookup_in(Some(&path), "reg.example:5000", t))
            .unwrap();
        assert_eq!(
            found.credential,
            Some(Credential::UsernamePassword {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert!(found.source.contains("auths"), "{}", found.source);
        let found = rt
            .block_on(lookup_in(Some(&path), "other.example", t))
            .unwrap();
        assert!(matches!(
            found.credential,
            Some(Credential::UsernamePassword { .. })
        ));
        let found = rt
            .block_on(lookup_in(Some(&path), "token.example", t))
            .unwrap();
        assert_eq!(
            found.credential,
            Some(Credential::IdentityToken("refresh".into()))
        );
        let found = rt
            .block_on(lookup_in(Some(&path), "nowhere.example", t))
            .unwrap();
        assert!(found.credential.is_none());
        assert!(found.source.starts_with("none (anonymous"));
    }

    #[test]
    fn an_undecodable_auths_entry_is_reported_as_malformed_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let rt = rt();
        let t = &Helpers::system();
        // `c2VjcmV0` is base64 of "secret" (no colon).
        for (auth, why) in [
            ("not base64 !!", "not base64"),
            ("c2VjcmV0", "USER:PASSWORD"),
            ("//79", "text"),
        ] {
            let config = serde_json::json!({"auths": {"reg.example": {"auth": auth}}});
            std::fs::write(&path, config.to_string()).unwrap();
            let err = rt
                .block_on(lookup_in(Some(&path), "reg.example", t))
                .unwrap_err();
            let Some(super::super::RegistryError::MalformedCredentials { file, key, .. }) =
                err.downcast_ref()
            else {
                panic!("{err:#}");
            };
            assert_eq!(
                (file.as_path(), key.as_str()),
                (path.as_path(), "reg.example")
            );
            let text = err.to_string();
            assert!(text.contains(why), "{text}");
            assert!(!text.contains(auth) && !text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_or_sources() {
        let c = Credential::UsernamePassword {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok"));
    }

    #[test]
    fn cred_helpers_come_before_auths_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        write_helper(
            bin,
            "ok",
            r#"read server; echo "{\"ServerURL\":\"$server\",\"Username\":\"<token>\",\"Secret\":\"idt\"}""#,
        );
        write_helper(bin, "slow", "exec sleep 30");
        write_helper(
            bin,
            "empty",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        let path = bin.join("config.json");
        let config = serde_json::json!({
            "credHelpers": {"a.example": "ok", "b.example": "slow"},
            "credsStore": "empty",
            "auths": {"a.example": {"auth": "dTpw"}, "c.example": {"auth": "dTpw"}},
        });
        std::fs::write(&path, config.to_string()).unwrap();
        let helpers = Helpers {
            dir: Some(bin.to_path_buf()),
            timeout: Duration::from_secs(10),
        };
        let rt = rt();
        let found = rt
            .block_on(lookup_in(Some(&path), "a.example", &helpers))
            .unwrap();
        assert_eq!(
            found.credential,
            Some(Credential::IdentityToken("idt".into()))
        );
        assert!(found.source.contains("docker-credential-ok"));
        // The store has nothing for c.example: its auths entry is used.
        let found = rt
            .block_on(lookup_in(Some(&path), "c.example", &helpers))
            .unwrap();
        assert!(matches!(
            found.credential,
            Some(Credential::UsernamePassword { .. })
        ));
        let quick = Helpers {
            timeout: Duration::from_millis(300),
            ..helpers
        };
        let started = std::time::Instant::now();
        let err = rt
            .block_on(lookup_in(Some(&path), "b.example", &quick))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("did not answer"), "{err}");
    }

    #[test]
    fn an_ecr_login_entry_without_its_helper_is_served_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let path = bin.join("config.json");
        let config = serde_json::json!({"credHelpers": {"reg.example": "ecr-login"}});
        std::fs::write(&path, config.to_string()).unwrap();
        let helpers = Helpers {
            dir: Some(bin.to_path_buf()),
            timeout: Duration::from_secs(10),
        };
        let rt = rt();
        let found = rt
            .block_on(lookup_in(Some(&path), "reg.example", &helpers))
            .unwrap();
        assert!(found.ecr_login && found.credential.is_none());
        assert!(found.source.contains("in process"), "{}", found.source);
        // An installed helper is run, as docker would.
        write_helper(
            bin,
            "ecr-login",
            r#"echo '{"Username":"AWS","Secret":"from-the-helper"}'"#,
        );
        let found = rt
            .block_on(lookup_in(Some(&path), "reg.example", &helpers))
            .unwrap();
        assert!(!found.ecr_login);
        assert_eq!(
            found.credential,
            Some(Credential::UsernamePassword {
                username: "AWS".into(),
                password: "from-the-helper".into()
            })
        );
    }

    #[test]
    fn login_with_a_creds_store_goes_through_its_helper() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let kept = bin.join("kept");
        write_helper(
            bin,
            "file",
            &format!(
                "echo \"$1\" >> '{0}.calls'; cat > \"{0}.$1\"",
                kept.display()
            ),
        );
        let path = bin.join("config.json");
        std::fs::write(&path, r#"{"credsStore": "file", "currentContext": "x"}"#).unwrap();
        let helpers = Helpers {
            dir: Some(bin.to_path_buf()),
            timeout: Duration::from_secs(10),
        };
        let rt = rt();
        let stored = rt
            .block_on(store_in(&path, "reg.example", "u", "s3cret", &helpers))
            .unwrap();
        assert_eq!(stored, StoredIn::Helper("file".into()));
        let sent: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bin.join("kept.store")).unwrap()).unwrap();
        assert_eq!(sent["ServerURL"], "reg.example");
        assert_eq!(sent["Secret"], "s3cret");
        // The file keeps an empty entry and no secret, as docker leaves it.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"));
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(config["auths"]["reg.example"], serde_json::json!({}));
        assert_eq!(config["currentContext"], "x");
        assert!(
            rt.block_on(erase_in(&path, "reg.example", &helpers))
                .unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(bin.join("kept.erase")).unwrap(),
            "reg.example"
        );
        assert_eq!(
            std::fs::read_to_string(bin.join("kept.calls")).unwrap(),
            "store\nerase\n"
        );
    }

    #[test]
    fn login_writes_auths_atomically_keeping_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker").join("config.json");
        let rt = rt();
        let t = &Helpers::system();
        rt.block_on(store_in(&path, "reg.example", "u", "p", t))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(config["auths"]["reg.example"]["auth"], "dTpw");
        config["proxies"] = serde_json::json!({"default": {"httpProxy": "x"}});
        config["auths"]["https://reg.example/v1/"] = serde_json::json!({"auth": "b2xkOm9sZA=="});
        std::fs::write(&path, config.to_string()).unwrap();
        rt.block_on(store_in(&path, "reg.example", "u2", "p2", t))
            .unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(config["proxies"]["default"]["httpProxy"], "x");
        assert_eq!(config["auths"].as_object().unwrap().len(), 1);
        assert!(rt.block_on(erase_in(&path, "reg.example", t)).unwrap());
        assert!(!rt.block_on(erase_in(&path, "reg.example", t)).unwrap());
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(config["auths"].as_object().unwrap().is_empty());
        assert_eq!(config["proxies"]["default"]["httpProxy"], "x");
    }
}
