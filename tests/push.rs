//! End-to-end tests of `ocilambda push`, `login` and `logout` against real registries
//! (Debian's docker-registry: plain HTTP, TLS with htpasswd Basic auth, Bearer tokens
//! from a small token server started here), a fault-injecting proxy
//! (tests/common/proxy.rs), and independent readers (skopeo, umoci).
//!
//! The image pushed is the FastAPI example built once by `ocilambda build` against the
//! stand-in base in the shared registry; the layout holds only our layers, so every
//! push also exercises the lazy base layers. Each push runs with its own cache and
//! Docker config, so tests see only their own downloads and credentials.
mod common;

use base64::Engine;
use common::proxy::{Fault, FaultProxy, Rule};
use common::tls::{Tls, openssl};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const USER: &str = "ocilambda";
const PASSWORD: &str = "test-password-7Qx";
/// `htpasswd -nbB -C 10 ocilambda test-password-7Qx` (distribution accepts bcrypt only;
/// a fixed line keeps apache2-utils out of the test dependencies).
const HTPASSWD: &str = "ocilambda:$2y$10$R2q5qD5h84Z2oHCuOBnkpudGMHKtAUSUgPRVPjVSBl1E/nXH2d84i\n";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ocilambda-push-")
        .tempdir()
        .unwrap()
}

/// A private cache and Docker config for one or more pushes.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let dir = tempdir();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Home { dir }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    fn write_docker_config(&self, config: &Value) {
        std::fs::write(
            self.docker_config().join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    fn read_docker_config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.docker_config().join("config.json")).unwrap())
            .unwrap()
    }

    /// `ocilambda ARGS` with this cache and Docker config.
    fn ocilambda(&self, args: &[&str]) -> Command {
        let mut cmd = ocilambda(&self.cache());
        cmd.env("DOCKER_CONFIG", self.docker_config())
            .env_remove("SSL_CERT_FILE")
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run(self.ocilambda(args))
    }

    /// `ocilambda push --project <the built example> ARGS`.
    fn push(&self, args: &[&str]) -> Output {
        let mut all = vec!["push", "--project", built().project.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn login(&self, registry: &str, password: &str, extra: &[&str]) -> Output {
        let mut args = vec!["login", registry, "--username", USER, "--password-stdin"];
        args.extend_from_slice(extra);
        let mut child = self
            .ocilambda(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }
}

/// The FastAPI example, built once (against the shared registry's stand-in base, without
/// `--complete`) into `<project>/.ocilambda/image`, where push looks by default.
struct Built {
    project: PathBuf,
    layout: PathBuf,
    digest: String,
    manifest: Value,
}

impl Built {
    fn layers(&self) -> Vec<(String, u64)> {
        self.manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Layers whose blobs the layout leaves out: the base's.
    fn base_layers(&self) -> Vec<(String, u64)> {
        self.layers()
            .into_iter()
            .filter(|(d, _)| !blob_path(&self.layout, d).is_file())
            .collect()
    }

    /// The largest of our own layers (the dependencies).
    fn big_layer(&self) -> (String, u64) {
        self.layers()
            .into_iter()
            .filter(|(d, _)| blob_path(&self.layout, d).is_file())
            .max_by_key(|(_, s)| *s)
            .unwrap()
    }
}

/// Shared by every build here: uv and layer caching make builds after the first quick.
fn build_cache() -> PathBuf {
    scratch_dir().join("build-cache")
}

/// Copy the example to `project` and build it on `base`; the manifest digest.
fn build_example(project: &Path, base: &str) -> String {
    if !project.exists() {
        copy_project("fastapi-app", project);
    }
    let mut cmd = ocilambda(&build_cache());
    cmd.args(["build", project.to_str().unwrap(), "--base", base]);
    assert_ok(&run(cmd))
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let project = scratch_dir().join("fastapi-app");
        let digest = build_example(&project, &stand_in_base("3.11"));
        let layout = project.join(".ocilambda/image");
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(blob_path(&layout, &digest)).unwrap()).unwrap();
        Built {
            project,
            layout,
            digest,
            manifest,
        }
    })
}

/// A minimal HTTP/1.0 request on loopback: the status code.
fn http_status(addr: &str, method: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn count(requests: &[String], needle: &str) -> usize {
    requests.iter().filter(|l| l.contains(needle)).count()
}

/// Requests that carried a blob's bytes to the registry.
fn blob_bodies(requests: &[String]) -> usize {
    requests
        .iter()
        .filter(|l| {
            (l.contains("\"PUT ") || l.contains("\"PATCH ")) && l.contains("/blobs/uploads/")
        })
        .count()
}

/// Pull `reference` (`REG/REPO@sha256:…`) with skopeo into an OCI layout, unpack it with
/// umoci, and check the files of every layer are there.
fn assert_pullable(reference: &str, skopeo_extra: &[&str]) {
    let dir = tempdir();
    let oci = dir.path().join("oci");
    let mut args = vec!["copy", "--src-tls-verify=false"];
    args.extend_from_slice(skopeo_extra);
    let src = format!("docker://{reference}");
    let dest = format!("oci:{}:pulled", oci.display());
    args.extend_from_slice(&[&src, &dest]);
    skopeo(&args);
    validate_layout(&oci);
    let bundle = dir.path().join("bundle");
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:pulled", oci.display()),
        bundle.to_str().unwrap(),
    ]);
    let rootfs = bundle.join("rootfs");
    for file in [
        "etc/os-release",               // base layer 1
        "lambda-entrypoint.sh",         // base layer 2
        "var/task/fastapi/__init__.py", // dependencies
        "var/task/mangum/__init__.py",
        "var/task/app/main.py", // the app
    ] {
        assert!(
            rootfs.join(file).is_file(),
            "{file} missing from the unpacked {reference}"
        );
    }
    assert_eq!(
        std::fs::read(rootfs.join("var/task/app/main.py")).unwrap(),
        std::fs::read(repo_root().join("examples/fastapi-app/app/main.py")).unwrap()
    );
}

/// `skopeo inspect --raw` of a tag: the exact manifest bytes it resolves to.
fn raw_manifest(reference: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.extend_from_slice(extra);
    let r = format!("docker://{reference}");
    args.push(&r);
    skopeo(&args).stdout
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// TLS, htpasswd and token-server fixtures
// ---------------------------------------------------------------------------

/// A registry over TLS (our CA) with htpasswd Basic auth for USER/PASSWORD.
fn basic_auth_registry() -> (Registry, Tls) {
    let tls = Tls::new();
    let htpasswd = tls.dir.path().join("htpasswd");
    std::fs::write(&htpasswd, HTPASSWD).unwrap();
    let mut env = tls.env();
    env.push(("REGISTRY_AUTH", "htpasswd".into()));
    env.push(("REGISTRY_AUTH_HTPASSWD_REALM", "ocilambda-test".into()));
    env.push((
        "REGISTRY_AUTH_HTPASSWD_PATH",
        htpasswd.display().to_string(),
    ));
    (Registry::start_with_env(&env), tls)
}

fn basic_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The scopes of one token request, and whether it carried valid credentials.
type TokenRequest = (Vec<String>, bool);

const TOKEN_SERVICE: &str = "ocilambda-test-registry";
const TOKEN_ISSUER: &str = "ocilambda-test-issuer";

/// A Docker token server (the Bearer flow's realm): checks Basic credentials and issues
/// RS256 JWTs with an `x5c` header that distribution verifies against the signing
/// certificate in its `rootcertbundle`. Signing uses the openssl CLI.
struct TokenServer {
    addr: String,
    dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    fn start() -> TokenServer {
        let dir = tempdir();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "sign.key",
                "-out",
                "sign.pem",
                "-days",
                "2",
                "-subj",
                "/CN=ocilambda token signer",
            ],
            dir.path(),
        );
        openssl(
            &[
                "x509", "-in", "sign.pem", "-outform", "DER", "-out", "sign.der",
            ],
            dir.path(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (reqs, key_dir) = (requests.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (reqs, key_dir) = (reqs.clone(), key_dir.clone());
                std::thread::spawn(move || {
                    let _ = answer_token_request(conn, &key_dir, &reqs);
                });
            }
        });
        TokenServer {
            addr,
            dir,
            requests,
        }
    }

    fn registry_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REGISTRY_AUTH", "token".into()),
            (
                "REGISTRY_AUTH_TOKEN_REALM",
                format!("http://{}/token", self.addr),
            ),
            ("REGISTRY_AUTH_TOKEN_SERVICE", TOKEN_SERVICE.into()),
            ("REGISTRY_AUTH_TOKEN_ISSUER", TOKEN_ISSUER.into()),
            (
                "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE",
                self.dir.path().join("sign.pem").display().to_string(),
            ),
        ]
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn answer_token_request(
    conn: TcpStream,
    key_dir: &Path,
    requests: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut authorized = false;
    let mut wrong_credentials = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorized = v.trim() == format!("Basic {}", basic_auth(USER, PASSWORD));
            wrong_credentials = !authorized;
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    requests.lock().unwrap().push((scopes.clone(), authorized));
    let mut conn = conn;
    if wrong_credentials {
        let body = r#"{"details":"incorrect username or password"}"#;
        return write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    // Anonymous callers get a token that grants nothing, as Docker Hub's server does.
    let access: Vec<Value> = if authorized {
        scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({
                    "type": kind, "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect()
    } else {
        Vec::new()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let der = std::fs::read(key_dir.join("sign.der"))?;
    let header = serde_json::json!({
        "typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": USER, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", requests.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut sign = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key_dir.join("sign.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sign.stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = sign.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64url(&signature));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Anonymous push over plain HTTP
// ---------------------------------------------------------------------------

#[test]
fn push_prints_the_pushed_digest_and_the_image_is_pullable() {
    let registry = Registry::start();
    let home = Home::new();
    let b = built();
    let reference = format!("{}/team/app", registry.addr);
    let out = home.push(&[&reference, "--tag", "v1"]);
    let printed = assert_ok(&out);
    assert_eq!(printed, format!("{reference}@{}", b.digest));
    assert_eq!(out.stdout.iter().filter(|c| **c == b'\n').count(), 1);

    // The tag and the extra tag resolve to our exact manifest, a single-platform one.
    for tag in ["latest", "v1"] {
        let raw = raw_manifest(&format!("{reference}:{tag}"), &[]);
        assert_eq!(raw, std::fs::read(blob_path(&b.layout, &b.digest)).unwrap());
        let manifest: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    }
    let inspect = stdout_json(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}:latest"),
    ]));
    assert_eq!(inspect["Digest"], b.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_pullable(&printed, &[]);
}

#[test]
fn second_push_sends_no_blob_bodies_and_takes_one_request() {
    let registry = Registry::start();
    let home = Home::new();
    let reference = format!("{}/app", registry.addr);
    assert_ok(&home.push(&[&reference]));
    let first = registry.requests();
    assert!(blob_bodies(&first) > 0);

    let out = home.push(&[&reference]);
    assert_ok(&out);
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
    let all = registry.requests();
    let again = &all[first.len()..];
    assert_eq!(blob_bodies(again), 0, "{again:#?}");
    assert_eq!(
        count(again, "\"PUT "),
        0,
        "no manifest PUT either: {again:#?}"
    );
    assert_eq!(again.len(), 1, "one HEAD on the tag: {again:#?}");
}

#[test]
fn repository_comes_from_pyproject_then_environment() {
    let registry = Registry::start();
    let home = Home::new();
    let b = built();
    // A project whose pyproject names the repository, using the built layout.
    let project = tempdir();
    std::fs::write(
        project.path().join("pyproject.toml"),
        format!(
            "[project]\nname = \"x\"\nversion = \"0\"\n\n[tool.ocilambda]\nrepository = \"{}/from-pyproject:prod\"\n",
            registry.addr
        ),
    )
    .unwrap();
    let layout = b.layout.to_str().unwrap();
    let project_dir = project.path().to_str().unwrap();
    let out = home.run(&["push", "--project", project_dir, "--layout", layout]);
    assert_eq!(
        assert_ok(&out),
        format!("{}/from-pyproject@{}", registry.addr, b.digest)
    );
    assert_eq!(
        raw_manifest(&format!("{}/from-pyproject:prod", registry.addr), &[]),
        std::fs::read(blob_path(&b.layout, &b.digest)).unwrap()
    );

    let out = home
        .ocilambda(&["push", "--project", project_dir, "--layout", layout])
        .env(
            "OCILAMBDA_REPOSITORY",
            format!("{}/from-env", registry.addr),
        )
        .output()
        .unwrap();
    assert_eq!(
        assert_ok(&out),
        format!("{}/from-env@{}", registry.addr, b.digest)
    );
}

#[test]
fn json_and_quiet_output() {
    let registry = Registry::start();
    let home = Home::new();
    let b = built();
    let reference = format!("{}/app", registry.addr);
    let out = home.push(&[&reference, "--json", "--jobs", "2"]);
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(
        summary["reference"],
        format!("{reference}@{}", b.digest).as_str()
    );
    assert_eq!(summary["tags"], serde_json::json!(["latest"]));
    let blobs = summary["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), b.layers().len() + 1, "config and every layer");
    for blob in blobs {
        assert_eq!(blob["action"], "uploaded", "{blob}");
    }
    // The base layers came from the base's registry, through the push.
    let base_bytes: u64 = b.base_layers().iter().map(|(_, s)| s).sum();
    assert!(base_bytes > 0);
    assert_eq!(summary["downloaded_bytes"], base_bytes);

    let out = home.push(&[&reference, "--quiet", "--tag", "quiet"]);
    assert_eq!(assert_ok(&out), format!("{reference}@{}", b.digest));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------
// Credentials: Basic over TLS, Bearer tokens
// ---------------------------------------------------------------------------

#[test]
fn login_then_push_over_tls_with_basic_auth_then_logout() {
    let (registry, tls) = basic_auth_registry();
    let home = Home::new();
    let b = built();
    let ca = tls.ca();
    let ca = ca.to_str().unwrap();
    // Other keys of the Docker config survive a login.
    home.write_docker_config(&serde_json::json!({"proxies": {"default": {"noProxy": "x"}}}));

    let out = home.login(&registry.addr, PASSWORD, &["--ca-cert", ca]);
    assert_ok(&out);
    assert!(out.stdout.is_empty());
    assert!(!stderr(&out).contains(PASSWORD));
    let path = home.docker_config().join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = home.read_docker_config();
    assert_eq!(config["proxies"]["default"]["noProxy"], "x");
    assert_eq!(
        config["auths"][registry.addr.as_str()]["auth"],
        basic_auth(USER, PASSWORD).as_str()
    );

    let reference = format!("{}/app", registry.addr);
    let out = home.push(&[&reference, "--ca-cert", ca]);
    let printed = assert_ok(&out);
    assert_eq!(printed, format!("{reference}@{}", b.digest));
    let creds = format!("{USER}:{PASSWORD}");
    assert_pullable(&printed, &["--src-creds", &creds]);

    let out = home.run(&["logout", &registry.addr]);
    assert_ok(&out);
    assert!(
        home.read_docker_config()["auths"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let out = home.push(&[&reference, "--ca-cert", ca]);
    let err = assert_user_error(&out, "not authorised");
    assert!(err.contains("credentials tried: none"), "{err}");
    assert!(err.contains("ocilambda login"), "{err}");
}

#[test]
fn login_with_a_wrong_password_is_refused_and_stores_nothing() {
    let (registry, tls) = basic_auth_registry();
    let home = Home::new();
    let out = home.login(
        &registry.addr,
        "not-the-password",
        &["--ca-cert", tls.ca().to_str().unwrap()],
    );
    let err = assert_user_error(&out, "not authorised");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(!home.docker_config().join("config.json").exists());
}

#[test]
fn push_reads_credentials_from_docker_config_and_trusts_ssl_cert_file() {
    let (registry, tls) = basic_auth_registry();
    let home = Home::new();
    let reference = format!("{}/app", registry.addr);
    home.write_docker_config(&serde_json::json!({
        "auths": {registry.addr.as_str(): {"auth": basic_auth(USER, PASSWORD)}}
    }));
    let out = home
        .ocilambda(&[
            "push",
            "--project",
            built().project.to_str().unwrap(),
            &reference,
        ])
        .env("SSL_CERT_FILE", tls.ca())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(!stderr(&out).contains(PASSWORD));

    // A wrong password: the error names the source, never the secret.
    home.write_docker_config(&serde_json::json!({
        "auths": {registry.addr.as_str(): {"username": USER, "password": "wrong-secret-123"}}
    }));
    let out = home
        .ocilambda(&[
            "push",
            "--project",
            built().project.to_str().unwrap(),
            &format!("{reference}:2"),
        ])
        .env("SSL_CERT_FILE", tls.ca())
        .output()
        .unwrap();
    let err = assert_user_error(&out, "not authorised");
    assert!(err.contains("auths"), "{err}");
    assert!(!err.contains("wrong-secret-123"), "{err}");
}

#[test]
fn push_to_a_tls_registry_with_an_untrusted_ca_suggests_ca_cert() {
    let (registry, _tls) = basic_auth_registry();
    let home = Home::new();
    let out = home.push(&[&format!("{}/app", registry.addr)]);
    let err = assert_user_error(&out, "after HTTPS failed");
    assert!(
        err.contains("hint: if the registry uses TLS with a private CA, pass --ca-cert"),
        "{err}"
    );
}

/// A registry serving a plain `openssl req -x509` certificate: self-signed, `CA:TRUE`,
/// used directly as the server's certificate (curl accepts it with `--cacert`).
fn self_signed_registry() -> (Registry, tempfile::TempDir) {
    let dir = tempdir();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        dir.path(),
    );
    let d = dir.path();
    let registry = Registry::start_with_env(&[
        (
            "REGISTRY_HTTP_TLS_CERTIFICATE",
            d.join("server.pem").display().to_string(),
        ),
        (
            "REGISTRY_HTTP_TLS_KEY",
            d.join("server.key").display().to_string(),
        ),
    ]);
    (registry, dir)
}

#[test]
fn push_trusts_a_self_signed_ca_certificate_named_with_ca_cert() {
    let (registry, certs) = self_signed_registry();
    let cert = certs.path().join("server.pem");
    let home = Home::new();
    let reference = format!("{}/app:v1", registry.addr);
    let out = home.push(&[&reference, "--ca-cert", cert.to_str().unwrap()]);
    // Over TLS: the registry answers plain HTTP with 400, so a fallback would fail.
    let pushed = assert_ok(&out);
    assert!(pushed.contains("/app@sha256:"), "{pushed}");

    // Another certificate with the same name is not that one: still refused, and the
    // hint does not tell the user to pass what they passed.
    let (_, other) = self_signed_registry();
    let out = home.push(&[
        &reference,
        "--ca-cert",
        other.path().join("server.pem").to_str().unwrap(),
    ]);
    let err = assert_user_error(&out, "after HTTPS failed");
    assert!(
        !err.contains("hint: if the registry uses TLS with a private CA, pass --ca-cert"),
        "{err}"
    );
}

#[test]
fn push_runs_the_configured_credential_helper() {
    let (registry, tls) = basic_auth_registry();
    let home = Home::new();
    let bin = home.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = home.dir.path().join("helper-calls");
    let helper = bin.join("docker-credential-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{calls}'\nread server\nif [ \"$1\" = get ] && [ \"$server\" = '{addr}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            calls = calls.display(),
            addr = registry.addr
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    home.write_docker_config(&serde_json::json!({
        "credHelpers": {registry.addr.as_str(): "test"},
        // credHelpers win over auths, as in docker.
        "auths": {registry.addr.as_str(): {"auth": basic_auth(USER, "stale")}},
    }));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let reference = format!("{}/app", registry.addr);
    let out = home
        .ocilambda(&[
            "push",
            "--project",
            built().project.to_str().unwrap(),
            &reference,
            "--ca-cert",
            tls.ca().to_str().unwrap(),
        ])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_ok(&out);
    // One lookup per command, however many requests needed it.
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "get\n");
}

#[test]
fn push_with_bearer_tokens_from_a_token_server() {
    let tokens = TokenServer::start();
    let registry = Registry::start_with_env(&tokens.registry_env());
    let home = Home::new();
    let b = built();
    let reference = format!("{}/app", registry.addr);

    // Anonymous: the token server grants nothing, the registry refuses.
    let out = home.push(&[&reference]);
    assert_user_error(&out, "not authorised");

    // `login` checks the password with the token server before storing it.
    let out = home.login(&registry.addr, "not-the-password", &[]);
    assert_user_error(&out, "not authorised");
    assert_ok(&home.login(&registry.addr, PASSWORD, &[]));
    tokens.requests.lock().unwrap().clear();
    let out = home.push(&[&reference]);
    let printed = assert_ok(&out);
    assert_eq!(printed, format!("{reference}@{}", b.digest));
    // Tokens are cached per scope: a handful of token requests for the whole push.
    let requests = tokens.requests.lock().unwrap().clone();
    let authorized: Vec<_> = requests.iter().filter(|(_, ok)| *ok).collect();
    assert!(
        !authorized.is_empty() && authorized.len() <= 3,
        "{requests:#?}"
    );
    assert!(
        authorized
            .iter()
            .any(|(scopes, _)| scopes.iter().any(|s| s == "repository:app:pull,push")),
        "{requests:#?}"
    );
    let creds = format!("{USER}:{PASSWORD}");
    assert_eq!(
        raw_manifest(&format!("{reference}:latest"), &["--creds", &creds]),
        std::fs::read(blob_path(&b.layout, &b.digest)).unwrap()
    );
}

// ---------------------------------------------------------------------------
// Faults between ocilambda and the registry
// ---------------------------------------------------------------------------

#[test]
fn push_survives_503s_and_honours_retry_after_on_429() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    proxy.add(Rule::new(
        "HEAD",
        "/blobs/",
        Fault::status(503, "UNAVAILABLE"),
        2,
    ));
    proxy.add(Rule::new(
        "POST",
        "/blobs/uploads/",
        Fault::Status {
            code: 429,
            error_code: "TOOMANYREQUESTS",
            retry_after: Some(1),
        },
        1,
    ));
    proxy.add(Rule::new(
        "PUT",
        "/manifests/",
        Fault::status(503, "UNAVAILABLE"),
        1,
    ));
    let home = Home::new();
    let b = built();
    // One blob at a time, so that the POST after the 429 is its retry.
    let out = home.push(&[&format!("{}/app", proxy.addr), "--jobs", "1"]);
    assert_eq!(assert_ok(&out), format!("{}/app@{}", proxy.addr, b.digest));

    let log = proxy.log();
    let faulted: Vec<_> = log.iter().filter(|e| e.fault.is_some()).collect();
    assert_eq!(faulted.len(), 4, "every fault was hit: {log:#?}");
    // The request after the 429 on the same path waited at least Retry-After.
    let (i, limited) = log
        .iter()
        .enumerate()
        .find(|(_, e)| matches!(e.fault, Some(Fault::Status { code: 429, .. })))
        .unwrap();
    let retried = log[i + 1..]
        .iter()
        .find(|e| e.method == "POST" && e.target == limited.target)
        .expect("the POST was retried");
    assert!(
        retried.at.duration_since(limited.at) >= Duration::from_millis(950),
        "retried after {:?}",
        retried.at.duration_since(limited.at)
    );
    assert_pullable(&format!("{}/app@{}", registry.addr, b.digest), &[]);
}

#[test]
fn push_survives_a_reset_in_the_middle_of_a_blob() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let b = built();
    let (big, size) = b.big_layer();
    proxy.add(Rule::new("PUT", "/blobs/uploads/", Fault::ResetMidBody, 1).min_body(size));
    let home = Home::new();
    let out = home.push(&[&format!("{}/app", proxy.addr)]);
    assert_ok(&out);
    let log = proxy.log();
    let puts = log
        .iter()
        .filter(|e| e.method == "PUT" && e.target.contains(big.trim_start_matches("sha256:")))
        .count();
    assert_eq!(
        puts, 2,
        "the big layer was sent again after the reset: {log:#?}"
    );
    assert_pullable(&format!("{}/app@{}", registry.addr, b.digest), &[]);
}

#[test]
fn push_survives_a_lost_answer_to_the_finalising_put() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let b = built();
    let (big, size) = b.big_layer();
    proxy.add(Rule::new("PUT", "/blobs/uploads/", Fault::LoseResponse, 1).min_body(size));
    let home = Home::new();
    let out = home.push(&[&format!("{}/app", proxy.addr)]);
    assert_ok(&out);
    let log = proxy.log();
    let puts: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| e.method == "PUT" && e.target.contains(big.trim_start_matches("sha256:")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(puts.len(), 1, "committed once, not sent again: {log:#?}");
    // A HEAD after the lost answer found the blob committed.
    assert!(
        log[puts[0] + 1..]
            .iter()
            .any(|e| e.method == "HEAD" && e.target.ends_with(&format!("/blobs/{big}"))),
        "{log:#?}"
    );
    assert_pullable(&format!("{}/app@{}", registry.addr, b.digest), &[]);
}

#[test]
fn push_fails_cleanly_when_faults_never_stop() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    proxy.add(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::status(503, "UNAVAILABLE"),
        usize::MAX,
    ));
    let home = Home::new();
    let started = Instant::now();
    let out = home.push(&[&format!("{}/app", proxy.addr)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(60));
    // The error names the blob, the registry's code and message.
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("sha256:"), "{err}");
    assert!(line.contains("503"), "{err}");
    assert!(
        line.contains("UNAVAILABLE: injected by the test proxy"),
        "{err}"
    );
    assert_eq!(
        http_status(&registry.addr, "HEAD", "/v2/app/manifests/latest"),
        404
    );
    assert_eq!(
        count(&registry.requests(), "/manifests/latest HTTP/1.1\" 201"),
        0
    );
}

#[test]
fn unknown_repository_gets_a_create_repository_hint() {
    // ECR answers an upload to a repository that does not exist with 404 NAME_UNKNOWN
    // (docker-registry creates repositories on push, so the proxy answers for it).
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    proxy.add(Rule::new(
        "POST",
        "/blobs/uploads/",
        Fault::status(404, "NAME_UNKNOWN"),
        usize::MAX,
    ));
    let home = Home::new();
    let out = home.push(&[&format!("{}/missing", proxy.addr)]);
    let err = assert_user_error(&out, "repository missing does not exist");
    assert!(err.contains("hint: create the repository"), "{err}");
}

#[test]
fn immutable_tag_is_reported_with_a_hint() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    proxy.add(Rule::new(
        "PUT",
        "/manifests/",
        Fault::status(400, "TAG_INVALID"),
        usize::MAX,
    ));
    let home = Home::new();
    let out = home.push(&[&format!("{}/app:v1", proxy.addr)]);
    let err = assert_user_error(&out, "refused the tag");
    assert!(err.contains("immutable"), "{err}");
}

#[test]
fn build_pulls_the_base_through_503s_and_a_download_cut_in_the_middle() {
    // The pull side shares the client: `build --complete` fetches every base blob.
    let proxy = FaultProxy::start(&shared_registry().addr);
    proxy.add(Rule::new(
        "GET",
        "/manifests/",
        Fault::status(503, "UNAVAILABLE"),
        1,
    ));
    proxy.add(Rule::new(
        "GET",
        "/blobs/",
        Fault::status(502, "UNAVAILABLE"),
        1,
    ));
    proxy.add(Rule::new("GET", "/blobs/", Fault::CutResponse, 2));
    let dir = tempdir();
    let project = dir.path().join("fastapi-app");
    copy_project("fastapi-app", &project);
    let out = ocilambda(&build_cache())
        .args([
            "build",
            project.to_str().unwrap(),
            "--base",
            &format!("{}/lambda/python:3.11", proxy.addr),
            "--complete",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let log = proxy.log();
    assert_eq!(
        log.iter().filter(|e| e.fault.is_some()).count(),
        4,
        "every fault was hit: {log:#?}"
    );
    validate_layout(&project.join(".ocilambda/image"));
}

// ---------------------------------------------------------------------------
// Lazy base layers across registries
// ---------------------------------------------------------------------------

#[test]
fn base_layers_stream_from_the_base_registry_only_when_the_target_lacks_them() {
    // Registry A holds the base (copied from the shared registry); B is the target.
    let a = Registry::start();
    let b = Registry::start();
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/lambda/python:3.11", shared_registry().addr),
        &format!("docker://{}/lambda/python:3.11", a.addr),
    ]);
    let dir = tempdir();
    let project = dir.path().join("fastapi-app");
    let digest = build_example(&project, &format!("{}/lambda/python:3.11", a.addr));
    let layout = project.join(".ocilambda/image");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob_path(&layout, &digest)).unwrap()).unwrap();
    let base_layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .filter(|d| !blob_path(&layout, d).is_file())
        .collect();
    assert_eq!(base_layers.len(), 2);
    let fetched_from_a = || {
        let requests = a.requests();
        base_layers
            .iter()
            .map(|d| count(&requests, &format!("\"GET /v2/lambda/python/blobs/{d}")))
            .sum::<usize>()
    };
    let home = Home::new();
    let push = |reference: String| {
        let out = home.run(&[
            "push",
            "--project",
            project.to_str().unwrap(),
            &reference,
            "--json",
        ]);
        assert_ok(&out);
        stdout_json(&out)
    };
    let actions = |summary: &Value| -> Vec<(String, String)> {
        summary["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["digest"].as_str().unwrap().to_string(),
                    b["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    // B lacks the base layers: each is fetched from A once, streamed through.
    assert_eq!(fetched_from_a(), 0);
    let first = push(format!("{}/app", b.addr));
    assert_eq!(fetched_from_a(), 2);
    assert!(first["downloaded_bytes"].as_u64().unwrap() > 0);
    assert_pullable(&format!("{}/app@{digest}", b.addr), &[]);

    // Another repository of B: everything is mounted from the first, nothing downloaded.
    let second = push(format!("{}/other", b.addr));
    assert_eq!(fetched_from_a(), 2);
    assert_eq!(second["downloaded_bytes"], 0);
    for (d, action) in actions(&second) {
        assert_eq!(action, "mounted", "{d}");
    }
    assert_eq!(
        count(&b.requests(), "&from=app HTTP/1.1\" 201"),
        manifest["layers"].as_array().unwrap().len() + 1
    );

    // Within A, the base layers are mounted from the base's repository.
    let home_a = Home::new();
    let out = home_a.run(&[
        "push",
        "--project",
        project.to_str().unwrap(),
        &format!("{}/app", a.addr),
        "--json",
    ]);
    assert_ok(&out);
    let within = stdout_json(&out);
    for (d, action) in actions(&within) {
        let expected = if base_layers.contains(&d) {
            "mounted"
        } else {
            "uploaded"
        };
        assert_eq!(action, expected, "{d}");
    }
    assert_eq!(fetched_from_a(), 2);

    // An app-only change pushed to B with an empty cache: base and dependency layers
    // are already there, so only the app layer and the config travel, and nothing is
    // fetched from A.
    std::fs::write(project.join("app/extra.py"), "GREETING = 'changed'\n").unwrap();
    let changed = build_example(&project, &format!("{}/lambda/python:3.11", a.addr));
    assert_ne!(changed, digest);
    let home_c = Home::new();
    let out = home_c.run(&[
        "push",
        "--project",
        project.to_str().unwrap(),
        &format!("{}/app", b.addr),
        "--json",
    ]);
    assert_ok(&out);
    let third = stdout_json(&out);
    let uploaded: Vec<_> = third["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uploaded.len(), 2, "{third:#}");
    assert!(uploaded.contains(&"config".to_string()), "{third:#}");
    assert_eq!(third["downloaded_bytes"], 0);
    assert_eq!(fetched_from_a(), 2);
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[test]
fn push_without_a_layout_says_to_run_build() {
    let home = Home::new();
    let project = tempdir();
    let out = home.run(&[
        "push",
        "127.0.0.1:1/app",
        "--project",
        project.path().to_str().unwrap(),
    ]);
    let err = assert_user_error(&out, "no image layout at");
    assert!(err.contains("hint: run `ocilambda build` first"), "{err}");
}

#[test]
fn push_without_a_repository_says_how_to_configure_one() {
    let home = Home::new();
    let project = tempdir();
    std::fs::write(
        project.path().join("pyproject.toml"),
        "[project]\nname = \"x\"\n[tool.ocilambda]\nhandler = \"app.main.handler\"\n",
    )
    .unwrap();
    let out = home.run(&["push", "--project", project.path().to_str().unwrap()]);
    let err = assert_user_error(&out, "no repository to push to");
    assert!(err.contains("OCILAMBDA_REPOSITORY"), "{err}");
}

#[test]
fn push_refuses_a_malformed_reference() {
    let home = Home::new();
    for bad in [
        "127.0.0.1:5000/App",
        "127.0.0.1:5000/app:bad:tag",
        "127.0.0.1:5000/app@sha256:00",
    ] {
        let out = home.push(&[bad]);
        assert_user_error(&out, bad);
    }
}

#[test]
fn push_refuses_to_upload_a_corrupted_blob() {
    let registry = Registry::start();
    let b = built();
    let dir = tempdir();
    let layout = dir.path().join("layout");
    copy_dir(&b.layout, &layout);
    let (app, _) = b
        .layers()
        .into_iter()
        .rfind(|(d, _)| blob_path(&layout, d).is_file())
        .unwrap();
    let path = blob_path(&layout, &app);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let home = Home::new();
    let push = |extra: &[&str]| {
        let reference = format!("{}/app", registry.addr);
        let mut args = vec!["push", &reference, "--layout", layout.to_str().unwrap()];
        args.extend_from_slice(extra);
        home.run(&args)
    };
    // The check before any upload reads (and so verifies) every layout blob.
    let err = assert_user_error(&push(&[]), "does not match its digest");
    assert!(err.contains(app.trim_start_matches("sha256:")), "{err}");
    assert_eq!(
        http_status(&registry.addr, "HEAD", "/v2/app/manifests/latest"),
        404
    );
    // Without it, the upload itself refuses the blob.
    let err = assert_user_error(&push(&["--no-lint"]), "does not match its digest");
    assert!(err.contains(&app), "{err}");
    assert!(err.contains("refusing to upload"), "{err}");
    assert_eq!(
        http_status(&registry.addr, "HEAD", &format!("/v2/app/blobs/{app}")),
        404
    );
    assert_eq!(
        http_status(&registry.addr, "HEAD", "/v2/app/manifests/latest"),
        404
    );
}

#[test]
fn push_to_an_unreachable_registry_fails_with_a_hint() {
    // A port nothing listens on (bound, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::new();
    let out = home.push(&[&format!("127.0.0.1:{port}/app")]);
    assert_user_error(&out, "cannot reach registry");
}

#[test]
fn build_with_a_base_that_needs_credentials_says_not_authorised_until_login() {
    let (registry, tls) = basic_auth_registry();
    let creds = format!("{USER}:{PASSWORD}");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("docker://{}", stand_in_base("3.11")),
        &format!("docker://{}/lambda/python:3.11", registry.addr),
    ]);
    let home = Home::new();
    let project = home.dir.path().join("p");
    copy_project("src-layout", &project);
    let base = format!("{}/lambda/python:3.11", registry.addr);
    let build = || {
        let mut cmd = home.ocilambda(&["build", project.to_str().unwrap(), "--base", &base]);
        cmd.env("SSL_CERT_FILE", tls.ca());
        run(cmd)
    };
    let err = assert_user_error(&build(), "not authorised");
    assert!(err.contains("credentials tried: none"), "{err}");
    assert!(
        !project.join(".ocilambda/image").exists(),
        "no partial output"
    );
    assert_ok(&home.login(
        &registry.addr,
        PASSWORD,
        &["--ca-cert", tls.ca().to_str().unwrap()],
    ));
    assert_ok(&build());
}
