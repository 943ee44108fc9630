//! A hostile user and a hostile registry (issue 9, "Trust"): references carrying
//! credentials, and a registry answering with oversized or endless bodies. The registry
//! here is a few lines of std networking, so it can misbehave in ways a real one won't.
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ocilambda-adversarial-")
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Credentials in references (item 7)
// ---------------------------------------------------------------------------

fn assert_secret_hidden(out: &std::process::Output, shown: &str) {
    let err = assert_user_error(out, shown);
    assert!(!err.contains("secret"), "{err}");
    assert!(!stdout_raw(out).contains("secret"));
    assert!(
        err.contains("hint: an image reference holds no credentials"),
        "{err}"
    );
}

#[test]
fn credentials_in_a_reference_are_never_printed() {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let mut push = ocilambda(&cache);
    push.args(["push", "user:secret@host/repo:1"]);
    assert_secret_hidden(&run(push), "user:***@host/repo:1");

    let mut inspect = ocilambda(&cache);
    inspect.args(["inspect", "user:secret@127.0.0.1:5000/repo:1"]);
    assert_secret_hidden(&run(inspect), "user:***@127.0.0.1:5000/repo:1");

    let project = dir.path().join("p");
    copy_project("fastapi-app", &project);
    let mut build = ocilambda(&cache);
    build.args([
        "build",
        project.to_str().unwrap(),
        "--base",
        "https://user:secret@host/lambda/python:3.11",
    ]);
    assert_secret_hidden(&run(build), "https://user:***@host/lambda/python:3.11");
}

// ---------------------------------------------------------------------------
// A registry that answers too much (item 11)
// ---------------------------------------------------------------------------

/// What the fake registry does wrong.
#[derive(Clone, Copy, PartialEq)]
enum Misbehaviour {
    /// The manifest is 64 MiB, announced by Content-Length.
    HugeManifest,
    /// The manifest never ends (chunked).
    EndlessManifest,
    /// Every request needs a Bearer token, and the token endpoint never stops.
    EndlessToken,
    /// The config never ends.
    EndlessConfig,
    /// The one layer (1000 bytes by its descriptor) never ends.
    EndlessLayer,
}

/// "Endless" as far as a client can tell: a client without a cap reads this much and
/// fails the memory assertion, rather than exhausting the machine.
const ENDLESS: u64 = 256 << 20;

const CONFIG: &str =
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

fn manifest() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":1000}}]}}"#,
        sha256_hex(CONFIG.as_bytes()),
        CONFIG.len(),
        "1".repeat(64)
    )
}

/// Serve `mode` on a loopback port; returns "127.0.0.1:PORT".
fn hostile_registry(mode: Misbehaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let realm = realm.clone();
            std::thread::spawn(move || answer(stream, mode, &realm));
        }
    });
    addr
}

fn answer(stream: TcpStream, mode: Misbehaviour, realm: &str) {
    let mut first = [0u8; 1];
    // A TLS ClientHello: hang up, so the client falls back to plain HTTP at once.
    if stream.peek(&mut first).is_err() || first[0] == 0x16 {
        return;
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorised = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        authorised |= line.to_ascii_lowercase().starts_with("authorization:");
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let mut out = stream;
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n")
    };
    let chunked = "Transfer-Encoding: chunked\r\n";
    let _ = if path.starts_with("/token") {
        out.write_all(
            head(
                "200 OK",
                &format!("Content-Type: application/json\r\n{chunked}"),
            )
            .as_bytes(),
        )
        .and_then(|()| endless_chunks(&mut out, b"{\"token\":\""))
    } else if mode == Misbehaviour::EndlessToken && !authorised {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"x\"\r\nContent-Length: 0\r\n"
        );
        out.write_all(head("401 Unauthorized", &challenge).as_bytes())
    } else if path == "/v2/" {
        out.write_all(head("200 OK", "Content-Length: 0\r\n").as_bytes())
    } else if path.contains("/manifests/") {
        let media = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
        match mode {
            Misbehaviour::HugeManifest => {
                let size = 64u64 << 20;
                out.write_all(
                    head("200 OK", &format!("{media}Content-Length: {size}\r\n")).as_bytes(),
                )
                .and_then(|()| zeros(&mut out, size))
            }
            Misbehaviour::EndlessManifest => out
                .write_all(head("200 OK", &format!("{media}{chunked}")).as_bytes())
                .and_then(|()| endless_chunks(&mut out, b"{\"schemaVersion\":2,\"x\":\"")),
            _ => {
                let body = manifest();
                let len = body.len();
                out.write_all(
                    head("200 OK", &format!("{media}Content-Length: {len}\r\n")).as_bytes(),
                )
                .and_then(|()| out.write_all(body.as_bytes()))
            }
        }
    } else if path.contains("/blobs/") && mode != Misbehaviour::EndlessToken {
        let is_config = path.contains(&sha256_hex(CONFIG.as_bytes()));
        if is_config && mode != Misbehaviour::EndlessConfig {
            let len = CONFIG.len();
            out.write_all(head("200 OK", &format!("Content-Length: {len}\r\n")).as_bytes())
                .and_then(|()| out.write_all(CONFIG.as_bytes()))
        } else {
            out.write_all(head("200 OK", chunked).as_bytes())
                .and_then(|()| endless_chunks(&mut out, b""))
        }
    } else {
        out.write_all(head("404 Not Found", "Content-Length: 0\r\n").as_bytes())
    };
}

fn zeros(out: &mut TcpStream, mut left: u64) -> std::io::Result<()> {
    let buf = vec![b' '; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// `prefix`, then spaces in 64 KiB chunks up to [`ENDLESS`] bytes, or until the client
/// hangs up.
fn endless_chunks(out: &mut TcpStream, prefix: &[u8]) -> std::io::Result<()> {
    if !prefix.is_empty() {
        write!(out, "{:x}\r\n", prefix.len())?;
        out.write_all(prefix)?;
        out.write_all(b"\r\n")?;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < ENDLESS {
        write!(out, "{:x}\r\n", chunk.len())?;
        out.write_all(&chunk)?;
        out.write_all(b"\r\n")?;
        sent += chunk.len() as u64;
    }
    out.write_all(b"0\r\n\r\n")
}

/// Run `cmd` to the end: (exit code, stderr, peak RSS in KiB, time taken).
// The child is reaped by wait4, which std's wait cannot replace: it also gives the
// child's own resource usage.
#[allow(clippy::zombie_processes)]
fn run_measured(mut cmd: Command) -> (i32, String, i64, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        reader.join().unwrap(),
        usage.ru_maxrss,
        started.elapsed(),
    )
}

fn assert_refused_quickly(mode: Misbehaviour, args: &[&str], needle: &str) {
    let addr = hostile_registry(mode);
    let dir = tempdir();
    let mut cmd = ocilambda(&dir.path().join("cache"));
    cmd.env("DOCKER_CONFIG", dir.path().join("docker"))
        .env_remove("SSL_CERT_FILE")
        .args(args)
        .arg(format!("{addr}/x:1"));
    let (code, err, max_rss_kib, took) = run_measured(cmd);
    eprintln!("{args:?}: exit {code}, peak RSS {max_rss_kib} KiB, {took:?}");
    assert_eq!(code, 2, "{err}");
    let error = err.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
    assert!(error.contains(needle), "{err}");
    assert!(err.contains("hint: "), "{err}");
    // Well under the 120 s read timeout: the cap stopped it, not the clock.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // The answers are 64-256 MiB: holding one would show here.
    assert!(max_rss_kib < 48 * 1024, "peak RSS {max_rss_kib} KiB\n{err}");
}

#[test]
fn an_oversized_manifest_is_refused_without_reading_it() {
    assert_refused_quickly(
        Misbehaviour::HugeManifest,
        &["inspect"],
        "manifest larger than 4.0 MiB",
    );
}

#[test]
fn an_endless_manifest_stops_at_the_cap() {
    assert_refused_quickly(
        Misbehaviour::EndlessManifest,
        &["inspect"],
        "manifest larger than 4.0 MiB",
    );
}

#[test]
fn an_endless_token_answer_stops_at_the_cap() {
    assert_refused_quickly(
        Misbehaviour::EndlessToken,
        &["inspect"],
        "token response larger than 1.0 MiB",
    );
}

#[test]
fn an_endless_config_stops_at_the_cap() {
    assert_refused_quickly(
        Misbehaviour::EndlessConfig,
        &["inspect"],
        "image config larger than",
    );
}

#[test]
fn a_layer_longer_than_its_descriptor_is_cut_off() {
    assert_refused_quickly(
        Misbehaviour::EndlessLayer,
        &["inspect", "--files"],
        "more than the 1000 bytes",
    );
}

// ---------------------------------------------------------------------------
// Every error has a hint (issue 9, item 21): failures no kind foresaw get one too.

#[test]
fn untyped_failures_still_print_a_hint() {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let project = dir.path().join("broken-project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("pyproject.toml"), "not toml [").unwrap();
    let layout = dir.path().join("broken-layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(layout.join("index.json"), r#"{"garbage""#).unwrap();
    let missing = dir.path().join("no-such-event.json");

    let mut invoke = ocilambda(&cache);
    invoke.arg("invoke").arg("--event").arg(&missing);
    let err = assert_user_error(&run(invoke), "no-such-event.json");
    assert!(
        err.contains("hint: check that the path named above exists"),
        "{err}"
    );

    let mut zip = ocilambda(&cache);
    zip.arg("zip").arg(&project);
    let err = assert_user_error(&run(zip), "pyproject.toml");
    assert!(err.contains("hint: fix the TOML"), "{err}");

    for command in ["inspect", "lint"] {
        let mut audit = ocilambda(&cache);
        audit.arg(command).arg(&layout);
        assert_user_error(&run(audit), "index.json");
    }
}
