//! Shared harness for the end-to-end tests: a throwaway local registry
//! (CNCF distribution, `docker-registry`) holding stand-in AWS Lambda Python
//! base images, the built `ocilambda` binary, the example projects, OCI schema
//! validation, and a way to call a Lambda handler with plain Python.
//!
//! Use it with `mod common;` at the top of a `tests/*.rs` file.
#![allow(dead_code)]

pub mod proxy;
pub mod tls;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The crate root (where Cargo.toml, testdata/ and examples/ are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `testdata/` in the crate root.
pub fn testdata() -> PathBuf {
    repo_root().join("testdata")
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

/// A `docker-registry serve` on a free loopback port, with a temporary
/// storage directory. Killed and reaped on drop.
pub struct Registry {
    /// "127.0.0.1:PORT"
    pub addr: String,
    child: Mutex<Option<Child>>,
    dir: PathBuf,
    /// Owns `dir` (None for the shared registry, whose files are removed at exit).
    tempdir: Option<tempfile::TempDir>,
}

const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(20);

impl Registry {
    /// Starts a fresh, empty registry. Its storage and log live in a tempdir.
    pub fn start() -> Registry {
        Self::start_with_env(&[])
    }

    /// Like [`Registry::start`], with extra `REGISTRY_*` configuration variables
    /// (distribution maps `REGISTRY_<SECTION>_<KEY>` onto its config file), e.g.
    /// `REGISTRY_HTTP_TLS_CERTIFICATE` or `REGISTRY_AUTH=htpasswd`. Such a registry
    /// counts as started once it answers `/v2/` at all (401 with auth, 400 to plain
    /// HTTP with TLS).
    pub fn start_with_env(env: &[(&str, String)]) -> Registry {
        let tempdir = tempfile::Builder::new()
            .prefix("ocilambda-registry-")
            .tempdir()
            .expect("create registry tempdir");
        let dir = tempdir.path().to_path_buf();
        let (addr, child) = start_registry_process_with(&dir, env);
        Registry {
            addr,
            child: Mutex::new(Some(child)),
            dir,
            tempdir: Some(tempdir),
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's storage root directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Everything the registry printed so far: its error log (logfmt lines on
    /// stderr) interleaved with its access log (one combined-log-format line
    /// per request on stdout, e.g. `"HEAD /v2/x/blobs/sha256:... HTTP/1.1" 200`).
    pub fn log(&self) -> String {
        let bytes = fs::read(self.dir.join("registry.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The access-log lines (requests) logged so far.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\" ") && l.contains(" HTTP/"))
            .map(str::to_owned)
            .collect()
    }

    fn shutdown(&self) {
        let mut guard = match self.child.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(mut child) = guard.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown();
        match self.tempdir.take() {
            Some(t) => {
                let _ = t.close();
            }
            None => {
                let _ = fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// Spawns `docker-registry serve` with its storage and log in `dir`, retrying
/// with another port if the one picked was taken in the meantime.
fn start_registry_process(dir: &Path) -> (String, Child) {
    start_registry_process_with(dir, &[])
}

fn start_registry_process_with(dir: &Path, env: &[(&str, String)]) -> (String, Child) {
    let config = testdata().join("registry/config.yml");
    let log_path = dir.join("registry.log");
    let mut last_log = String::new();
    for _attempt in 0..5 {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let log = fs::File::create(&log_path).expect("create registry log");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .env("REGISTRY_HTTP_ADDR", &addr)
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                dir.join("storage"),
            )
            .env("REGISTRY_LOG_ACCESSLOG_DISABLED", "false")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("cannot run docker-registry (is it installed?): {e}"));
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait docker-registry") {
                last_log = fs::read_to_string(&log_path).unwrap_or_default();
                if last_log.contains("address already in use") {
                    break; // lost the race for the port: pick another
                }
                panic!("docker-registry exited with {status} on {addr}:\n{last_log}");
            }
            let ready = match http_get_status(&addr, "/v2/") {
                Some(200) => true,
                Some(_) => !env.is_empty(),
                None => false,
            };
            if ready {
                return (addr, child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "docker-registry did not answer GET /v2/ on {addr} within {:?}:\n{}",
                    REGISTRY_START_TIMEOUT,
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    panic!("could not start docker-registry on a free port:\n{last_log}");
}

/// A minimal HTTP/1.0 GET returning the status code, or None if unreachable.
fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Spawns `cmd` so that the child gets SIGKILL when this test process dies,
/// even without destructors running (statics, panics in other threads, ^C).
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and
/// test threads come and go, so every such child is forked from one
/// long-lived spawner thread that only ends with the process.
fn spawn_tied_to_process(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let parent = std::process::id() as libc::pid_t;
                    // SAFETY: only async-signal-safe calls between fork and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            if libc::getppid() != parent {
                                libc::_exit(1); // the parent died before prctl
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static: this loop never ends, so the
                // thread lives as long as the process.
            })
            .expect("start child-spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .expect("child-spawner thread is gone");
    reply_rx.recv().expect("child-spawner thread is gone")
}

static SHARED: OnceLock<Registry> = OnceLock::new();

/// One registry per test binary, started on first use, with the stand-in
/// base images of `testdata/base/make-base.sh` already pushed:
/// `{addr}/lambda/python:{3.11,3.12,3.13}` (OCI index, linux/amd64 + linux/arm64/v8),
/// `{addr}/lambda/python-docker:3.11` (amd64 only, Docker v2 schema 2 media types),
/// `{addr}/lambda/python-arm64only:3.11` (OCI index with only linux/arm64/v8).
///
/// Tests share it, so they must push only to repositories of their own.
pub fn shared_registry() -> &'static Registry {
    SHARED.get_or_init(|| {
        // Under target/tmp, so that what a killed test run leaves stays there.
        let dir = tempfile::Builder::new()
            .prefix("shared-registry-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create registry tempdir")
            .keep();
        let (addr, child) = start_registry_process(&dir);
        let registry = Registry {
            addr,
            child: Mutex::new(Some(child)),
            dir,
            tempdir: None,
        };
        // Statics are never dropped: stop the registry and remove its files at
        // exit (PR_SET_PDEATHSIG is the backstop if the process dies harder).
        extern "C" fn at_exit() {
            if let Some(r) = SHARED.get() {
                r.shutdown();
                let _ = fs::remove_dir_all(&r.dir);
            }
        }
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(at_exit);
        }
        let script = testdata().join("base/make-base.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&registry.addr)
            .stdin(Stdio::null())
            .output()
            .expect("run testdata/base/make-base.sh");
        assert!(
            out.status.success(),
            "make-base.sh {} failed ({}):\nstdout:\n{}\nstderr:\n{}\nregistry log:\n{}",
            registry.addr,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            registry.log()
        );
        registry
    })
}

/// The stand-in `lambda/python:TAG` base (an index: amd64 and arm64) in the shared registry.
pub fn stand_in_base(tag: &str) -> String {
    format!("{}/lambda/python:{tag}", shared_registry().addr)
}

/// A minimal API Gateway (REST, payload 1.0) event.
pub const API_GATEWAY_EVENT: &str =
    r#"{"httpMethod": "GET", "path": "/", "requestContext": {}, "version": "1.0"}"#;

// ---------------------------------------------------------------------------
// The binary under test, projects
// ---------------------------------------------------------------------------

/// The built `ocilambda` binary with a private cache dir, no colours, and no
/// inherited `OCILAMBDA_*` variables.
pub fn ocilambda(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocilambda"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OCILAMBDA_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("OCILAMBDA_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` (an `ocilambda` command) to completion, capturing its output.
pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run ocilambda")
}

/// What `out` printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What `out` printed on stdout, trimmed.
pub fn stdout(out: &Output) -> String {
    stdout_raw(out).trim().to_string()
}

/// What `out` printed on stdout, exactly.
pub fn stdout_raw(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Success (else a panic showing the status and stderr); stdout, trimmed.
pub fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ocilambda failed ({}):\n{}",
        out.status,
        stderr(out)
    );
    stdout(out)
}

/// Exit 2, nothing on stdout, exactly one `error:` line, mentioning `needle`, and a
/// `hint:` line; stderr.
pub fn assert_user_error(out: &Output, needle: &str) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {}:\n{err}",
        out.status
    );
    assert!(out.stdout.is_empty(), "stdout must be empty on error");
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error_lines.len(), 1, "exactly one error line:\n{err}");
    assert!(
        error_lines[0].contains(needle),
        "the error should mention {needle:?}:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("hint: ")),
        "a hint line:\n{err}"
    );
    err
}

/// A directory for this test binary's shared files (builds, caches), under
/// `CARGO_TARGET_TMPDIR` and removed at exit.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-tests-", env!("CARGO_CRATE_NAME")))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        extern "C" fn remove() {
            if let Some(d) = DIR.get() {
                // Unpacked images keep their directory modes: remove_tree copes.
                let _ = ocilambda::invoke::rootfs::remove_tree(d);
            }
        }
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(remove);
        }
        dir
    })
}

/// Copies `examples/<name>` or else `testdata/projects/<name>` into `dest`
/// (created if needed), recursively, skipping `.venv`, `.ocilambda` and
/// `__pycache__` directories.
pub fn copy_project(name: &str, dest: &Path) {
    let src = [
        repo_root().join("examples").join(name),
        testdata().join("projects").join(name),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .unwrap_or_else(|| panic!("no project {name:?} in examples/ or testdata/projects/"));
    copy_tree(&src, dest);
}

fn copy_tree(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap_or_else(|e| panic!("mkdir {}: {e}", dest.display()));
    let mut entries: Vec<_> = fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display()))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let (from, to) = (entry.path(), dest.join(&name));
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            if [".venv", ".ocilambda", "__pycache__"]
                .iter()
                .any(|s| name == OsStr::new(s))
            {
                continue;
            }
            copy_tree(&from, &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", to.display()));
        } else {
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
        }
    }
}

// ---------------------------------------------------------------------------
// OCI schema validation
// ---------------------------------------------------------------------------

/// The OCI image-spec JSON schemas in `testdata/oci-image-spec-schema/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// image-manifest-schema.json
    Manifest,
    /// config-schema.json
    Config,
    /// image-index-schema.json
    Index,
    /// image-layout-schema.json (the `oci-layout` file)
    Layout,
}

impl Schema {
    pub fn file_name(self) -> &'static str {
        match self {
            Schema::Manifest => "image-manifest-schema.json",
            Schema::Config => "config-schema.json",
            Schema::Index => "image-index-schema.json",
            Schema::Layout => "image-layout-schema.json",
        }
    }
}

fn schema_dir() -> PathBuf {
    testdata().join("oci-image-spec-schema")
}

fn read_schema_file(file: &str) -> Value {
    let path = schema_dir().join(file);
    let text = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Resolves the schemas' relative `$ref`s ("defs-descriptor.json#/...").
/// Their draft-04 `id`s ("https://opencontainers.org/schema/image/manifest",
/// nested ones too) make those resolve against several different base URIs,
/// so this looks only at the file name, and only in the schema directory.
struct SchemaDirRetriever;

impl jsonschema::Retrieve for SchemaDirRetriever {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let s = s.split('#').next().unwrap_or(s);
        let file = s.rsplit('/').next().unwrap_or(s);
        if !file.ends_with(".json") || !schema_dir().join(file).is_file() {
            return Err(format!("schema {uri} is not in {}", schema_dir().display()).into());
        }
        Ok(read_schema_file(file))
    }
}

fn validator(kind: Schema) -> &'static jsonschema::Validator {
    static VALIDATORS: [OnceLock<jsonschema::Validator>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    VALIDATORS[kind as usize].get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .with_retriever(SchemaDirRetriever)
            .build(&read_schema_file(kind.file_name()))
            .unwrap_or_else(|e| panic!("compile {}: {e}", kind.file_name()))
    })
}

/// The schema violations of `json` (empty if valid). Panics if not JSON.
pub fn schema_errors(kind: Schema, json: &[u8]) -> Vec<String> {
    let value: Value = serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "not JSON ({kind:?}): {e}\n{}",
            String::from_utf8_lossy(json)
        )
    });
    validator(kind)
        .iter_errors(&value)
        .map(|e| format!("at {:?}: {e}", e.instance_path().as_str()))
        .collect()
}

/// Panics, listing the violations, unless `json` is valid against the schema.
pub fn validate(kind: Schema, json: &[u8]) {
    let errors = schema_errors(kind, json);
    assert!(
        errors.is_empty(),
        "invalid {kind:?} ({}):\n  {}\ndocument:\n{}",
        kind.file_name(),
        errors.join("\n  "),
        String::from_utf8_lossy(json)
    );
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Path of blob `digest` ("sha256:...") in an OCI layout.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("bad digest {digest:?}"));
    layout.join("blobs").join(alg).join(hex)
}

/// Validates an OCI image layout directory: `oci-layout`, `index.json`, every
/// manifest (and nested index) reachable from `index.json` and each manifest's
/// config, which must all be present with matching digests and sizes. Layer
/// blobs may be absent; every blob that is present must hash to its name.
pub fn validate_layout(dir: &Path) {
    let read = |p: PathBuf| fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    validate(Schema::Layout, &read(dir.join("oci-layout")));
    let index = read(dir.join("index.json"));
    validate(Schema::Index, &index);

    let mut seen = BTreeSet::new();
    let mut pending: Vec<(String, Value)> = descriptors(&index, "manifests")
        .into_iter()
        .map(|d| ("index.json".to_owned(), d))
        .collect();
    while let Some((from, desc)) = pending.pop() {
        let digest = desc["digest"].as_str().unwrap().to_owned();
        if !seen.insert(digest.clone()) {
            continue;
        }
        let media_type = desc["mediaType"].as_str().unwrap_or_default();
        let blob = read_verified_blob(dir, &desc, &from);
        let declared = serde_json::from_slice::<Value>(&blob).unwrap()["mediaType"].clone();
        if let Some(declared) = declared.as_str() {
            assert_eq!(
                declared, media_type,
                "mediaType of {digest} vs its descriptor in {from}"
            );
        }
        match media_type {
            OCI_INDEX => {
                validate(Schema::Index, &blob);
                for d in descriptors(&blob, "manifests") {
                    pending.push((digest.clone(), d));
                }
            }
            OCI_MANIFEST => {
                validate(Schema::Manifest, &blob);
                let manifest: Value = serde_json::from_slice(&blob).unwrap();
                let config = &manifest["config"];
                if config["mediaType"] == OCI_CONFIG {
                    validate(Schema::Config, &read_verified_blob(dir, config, &digest));
                }
            }
            other => panic!("{from} refers to {digest} with unexpected mediaType {other:?}"),
        }
    }

    // Every blob that is there (layers too) must hash to its name.
    let sha_dir = dir.join("blobs/sha256");
    if sha_dir.is_dir() {
        for entry in fs::read_dir(&sha_dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let actual = sha256_hex(&read(entry.path()));
            assert_eq!(actual, name, "blob blobs/sha256/{name} has sha256 {actual}");
        }
    }
}

fn descriptors(json: &[u8], field: &str) -> Vec<Value> {
    let v: Value = serde_json::from_slice(json).unwrap();
    v[field].as_array().cloned().unwrap_or_default()
}

/// Reads the blob of `desc`, which must exist with the declared size and digest.
fn read_verified_blob(layout: &Path, desc: &Value, referrer: &str) -> Vec<u8> {
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let path = blob_path(layout, digest);
    let data = fs::read(&path)
        .unwrap_or_else(|e| panic!("{referrer} refers to {digest}, but {}: {e}", path.display()));
    assert_eq!(
        digest.strip_prefix("sha256:").map(str::to_owned),
        Some(sha256_hex(&data)),
        "blob {} does not match its digest",
        path.display()
    );
    assert_eq!(
        desc["size"].as_u64(),
        Some(data.len() as u64),
        "size of {digest} in {referrer}"
    );
    data
}

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// Runs `cmd` with no stdin, asserting success (else a panic showing the command, its
/// status, stdout and stderr).
pub fn run_checked(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `skopeo --insecure-policy ARGS...`, asserting success. Talking to the test
/// registry needs `--tls-verify=false` (inspect) or `--src-tls-verify=false` /
/// `--dest-tls-verify=false` (copy).
pub fn skopeo(args: &[&str]) -> Output {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args);
    run_checked(cmd)
}

/// `umoci ARGS...`, asserting success.
pub fn umoci(args: &[&str]) -> Output {
    let mut cmd = Command::new("umoci");
    cmd.args(args);
    run_checked(cmd)
}

/// The stdout of `output` as JSON.
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON: {e}\n{}\nstderr:\n{}",
            stdout_raw(output),
            stderr(output)
        )
    })
}

// ---------------------------------------------------------------------------
// Running a handler
// ---------------------------------------------------------------------------

/// `python3.11` if on PATH, else `python3`.
pub fn host_python() -> &'static str {
    static PY: OnceLock<&'static str> = OnceLock::new();
    PY.get_or_init(|| {
        let ok = Command::new("python3.11")
            .args(["-c", "pass"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok { "python3.11" } else { "python3" }
    })
}

const HANDLER_RUNNER: &str = r#"
import importlib, json, sys

handler, event_json, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
module_name, _, func_name = handler.rpartition(".")
func = getattr(importlib.import_module(module_name), func_name)


class Context:
    function_name = "ocilambda-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ocilambda-test"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/ocilambda-test"
    log_stream_name = "2024/01/01/[$LATEST]00000000000000000000000000000000"

    def get_remaining_time_in_millis(self):
        return 30000


result = func(json.loads(event_json), Context())
with open(out_path, "w") as f:
    json.dump(result, f)
"#;

/// Imports `handler` ("pkg.module.func") from `task_root` the way the Lambda
/// Python runtime does (task root on sys.path), calls it with `event_json` and
/// a minimal fake context, and returns its result as JSON.
///
/// Python runs with `-S` (no site-packages), so only the standard library and
/// what is in `task_root` can be imported: dependencies must have been
/// installed there. Runs with the host's python3.11 (or python3), so native
/// wheels in `task_root` must be for this machine.
pub fn python_handler_response(task_root: &Path, handler: &str, event_json: &str) -> Value {
    python_handler_response_on_path(&[task_root.to_path_buf()], handler, event_json)
}

/// Like [`python_handler_response`], but with several import roots, in order,
/// as Lambda orders them for a function with layers: the task root, then
/// `/opt/python/lib/python3.X/site-packages`, then `/opt/python`. Python runs
/// in `path[0]` (the task root) with `-S`, so only the standard library and
/// these directories can be imported.
pub fn python_handler_response_on_path(path: &[PathBuf], handler: &str, event_json: &str) -> Value {
    let task_root = path.first().expect("at least the task root");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("result.json");
    let joined = std::env::join_paths(path).expect("paths without ':'");
    let mut cmd = Command::new(host_python());
    cmd.current_dir(task_root)
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .env_remove("VIRTUAL_ENV")
        .env("PYTHONPATH", joined)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("LAMBDA_TASK_ROOT", task_root)
        .args(["-S", "-c", HANDLER_RUNNER, handler, event_json])
        .arg(&out_path);
    let out = run_checked(cmd);
    let text = fs::read(&out_path).unwrap_or_else(|e| {
        panic!(
            "handler {handler} wrote no result ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_slice(&text).expect("handler result JSON")
}

// ---------------------------------------------------------------------------
// Hand-made images: a layout `build` wrote, then one change
// ---------------------------------------------------------------------------

/// Write `bytes` as a blob of `layout`; its digest.
pub fn write_layout_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Rewrite the layout's image: `extra` adds a layer on top (uncompressed tar bytes,
/// gzip-compressed here, with its diff_id and a history line); then `edit` changes the
/// manifest and the config. The index names the new manifest.
pub fn mutate_layout(
    layout: &Path,
    edit: impl FnOnce(&mut Value, &mut Value),
    extra: Option<Vec<u8>>,
) {
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob_path(layout, &digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value =
        serde_json::from_slice(&fs::read(blob_path(layout, &config_digest)).unwrap()).unwrap();
    if let Some(tar) = extra {
        let diff_id = format!("sha256:{}", sha256_hex(&tar));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let d = write_layout_blob(layout, &gz);
        manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()
        }));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(diff_id.into());
        config["history"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"created_by": "test"}));
    }
    edit(&mut manifest, &mut config);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = write_layout_blob(layout, &config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = write_layout_blob(layout, &manifest_bytes).into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// One entry of a hand-made layer.
pub enum TarEntry<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8]),
    Hardlink(&'a str, &'a str),
}

/// A layer tar of `entries`, in order. With `parents`, each path's parent directories are
/// written before it (once), as Lambda requires and every honest layer does.
pub fn layer_tar(entries: &[TarEntry], parents: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut written: BTreeSet<String> = BTreeSet::new();
    for e in entries {
        let path = match e {
            TarEntry::Dir(p) | TarEntry::File(p, ..) | TarEntry::Hardlink(p, _) => *p,
        };
        if parents {
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                let dir = &path[..at + i];
                if written.insert(dir.to_string()) {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{dir}/"), std::io::empty())
                        .unwrap();
                }
                at += i + 1;
            }
        }
        let mut h = tar::Header::new_gnu();
        match e {
            TarEntry::Dir(p) => {
                if written.insert(p.to_string()) {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{p}/"), std::io::empty())
                        .unwrap();
                }
            }
            TarEntry::File(p, mode, content) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, p, *content).unwrap();
            }
            TarEntry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------------------
// AWS: moto's server
// ---------------------------------------------------------------------------

/// Fake AWS keys for moto (which checks no signature). Tests assert that neither ever
/// appears in ocilambda's output.
pub const AWS_TEST_KEY_ID: &str = "AKIAOCILAMBDATEST0001";
pub const AWS_TEST_SECRET: &str = "ocilambda-test-secret-key-0123456789abcdef";
pub const AWS_TEST_REGION: &str = "us-east-1";

/// `moto_server` (moto's stand-alone server: Lambda, ECR, S3, IAM, STS) on a free
/// loopback port, killed on drop. Installed by scripts/ensure-tools.sh.
pub struct Moto {
    /// "127.0.0.1:PORT"
    pub addr: String,
    child: Mutex<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("ocilambda-moto-")
            .tempdir()
            .unwrap();
        let log_path = dir.path().join("moto.log");
        for _attempt in 0..5 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
                l.local_addr().unwrap().port()
            };
            let addr = format!("127.0.0.1:{port}");
            let log = fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new("moto_server");
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let mut child = spawn_tied_to_process(cmd).unwrap_or_else(|e| {
                panic!("cannot run moto_server (scripts/ensure-tools.sh installs it): {e}")
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if log.contains("in use") {
                        break;
                    }
                    panic!("moto_server exited with {status}:\n{log}");
                }
                if http_get_status(&addr, "/moto-api/").is_some() {
                    return Moto {
                        addr,
                        child: Mutex::new(Some(child)),
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "moto_server did not answer on {addr}:\n{}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start moto_server on a free port");
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment of a CI job whose AWS access is moto: fake keys, a region, the
    /// endpoint, and a HOME without ~/.aws.
    pub fn env(&self, home: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", AWS_TEST_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", AWS_TEST_SECRET.into()),
            ("AWS_REGION", AWS_TEST_REGION.into()),
            ("AWS_ENDPOINT_URL", self.url()),
            ("HOME", home.display().to_string()),
        ]
    }

    /// An AWS query-protocol call (IAM, STS) by plain HTTP: moto checks no signature,
    /// and the Authorization header's scope tells it the service. The response body.
    pub fn query(&self, service: &str, params: &[(&str, &str)]) -> String {
        let body: String = params
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential={AWS_TEST_KEY_ID}/20260101/{AWS_TEST_REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
            addr = self.addr
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{service} {params:?}: {out}"
        );
        out
    }

    /// An IAM role Lambda may assume (moto's CreateFunction checks that it exists).
    pub fn create_role(&self, name: &str) -> String {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        self.query(
            "iam",
            &[
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", name),
                ("AssumeRolePolicyDocument", policy),
            ],
        );
        format!("arn:aws:iam::123456789012:role/{name}")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
