//! End-to-end tests of `ocilambda invoke`: images built by the real `ocilambda build` on
//! a *runnable* stand-in base (testdata/runtime-base: Debian's python3.11 and AWS's
//! awslambdaric 4.2.2), run in the real bubblewrap sandbox, answered through our Runtime
//! API; `--serve` driven with curl. Layer application details (whiteouts, `..`) have
//! unit tests next to the code in src/invoke/rootfs.rs; here the base's whiteout layer
//! is checked from inside the function.
mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The ocilambda cache the built projects share (so each image is unpacked once for all
/// tests).
fn shared_cache() -> PathBuf {
    scratch_dir().join("cache")
}

/// The runnable base, pushed to the shared registry once per test binary; its OCI
/// layout is cached under target/ across runs (rebuilt when the recipe changes).
fn runtime_base() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let registry = shared_registry();
        let layouts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime-base");
        let mut script = Command::new("bash");
        script
            .arg(testdata().join("runtime-base/make-runtime-base.sh"))
            .arg(&registry.addr)
            .arg(&layouts);
        run_checked(script);
        format!("{}/runnable/lambda/python:3.11", registry.addr)
    })
}

/// `name` (an example or testdata project) built once on the runnable base; the
/// project directory, whose default layout `invoke --project` finds.
fn built(name: &'static str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, PathBuf>>> =
        OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = map.get(name) {
        return dir.clone();
    }
    let dir = scratch_dir().join("projects").join(name);
    copy_project(name, &dir);
    let out = ocilambda(&shared_cache())
        .arg("build")
        .arg(&dir)
        .args(["--base", runtime_base(), "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "build {name}: {}", stderr(&out));
    map.insert(name, dir.clone());
    dir
}

fn invoke(project: &Path, event: &str, args: &[&str]) -> Output {
    let event_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(event_file.path(), event).unwrap();
    ocilambda(&shared_cache())
        .arg("invoke")
        .arg("--project")
        .arg(project)
        .arg("--event")
        .arg(event_file.path())
        .args(args)
        .output()
        .unwrap()
}

/// The JSON on stdout, after checking the exit code.
fn answer(out: &Output, code: i32) -> Value {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    stdout_json(out)
}

#[test]
fn fastapi_example_answers_an_api_gateway_event() {
    let project = built("fastapi-app");
    let out = invoke(&project, API_GATEWAY_EVENT, &[]);
    let response = answer(&out, 0);
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], "\"Hello, world!\"", "{response}");
    let err = stderr(&out);
    assert!(err.contains("START RequestId: "), "{err}");
    assert!(err.contains("END RequestId: "), "{err}");
    assert!(err.contains("Init Duration: "), "a cold start:\n{err}");
}

#[test]
fn a_handler_that_raises_exits_1_with_lambdas_error_json() {
    let out = invoke(&built("invoke-probe"), r#"{"action": "raise"}"#, &[]);
    let error = answer(&out, 1);
    assert_eq!(error["errorType"], "ValueError", "{error}");
    assert_eq!(error["errorMessage"], "something went wrong on purpose");
    let trace = error["stackTrace"].as_array().expect("a stackTrace list");
    assert!(
        trace
            .iter()
            .any(|t| t.as_str().unwrap().contains("app/main.py")),
        "{error}"
    );
}

#[test]
fn a_handler_past_its_timeout_is_killed_and_reported_as_lambda_does() {
    // Built first: the bound below is on the invocation, not on the shared build (which
    // other tests may be holding).
    let project = built("invoke-probe");
    let started = Instant::now();
    let out = invoke(
        &project,
        r#"{"action": "sleep", "seconds": 60}"#,
        &["--timeout", "1"],
    );
    let elapsed = started.elapsed();
    let error = answer(&out, 1);
    assert_eq!(error["errorType"], "Sandbox.Timedout", "{error}");
    let message = error["errorMessage"].as_str().unwrap();
    // "RequestId: <id> Error: Task timed out after 1.00 seconds", the measured time.
    let seconds: f64 = message
        .rsplit_once("Task timed out after ")
        .and_then(|(_, rest)| rest.strip_suffix(" seconds"))
        .unwrap_or_else(|| panic!("{message}"))
        .parse()
        .unwrap();
    assert!((1.0..1.5).contains(&seconds), "{message}");
    assert!(
        elapsed < Duration::from_secs(20),
        "the sandbox was killed, not waited for: {elapsed:?}"
    );
    let err = stderr(&out);
    assert!(err.contains("sleeping 60s"), "the function's log:\n{err}");
    assert!(err.contains(" Task timed out after "), "{err}");
}

#[test]
fn init_failures_are_reported_as_lambda_reports_them() {
    let project = built("invoke-probe");
    // An exception at import: the runtime's own init error.
    let out = invoke(&project, "{}", &["--env", "PROBE_INIT=raise"]);
    let error = answer(&out, 1);
    assert_eq!(error["errorType"], "RuntimeError", "{error}");
    assert_eq!(error["errorMessage"], "failing on purpose during init");
    // The runtime dies without a word: Lambda's Runtime.ExitError.
    let out = invoke(&project, "{}", &["--env", "PROBE_INIT=exit"]);
    let error = answer(&out, 1);
    assert_eq!(error["errorType"], "Runtime.ExitError", "{error}");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("RequestId: "), "{message}");
    assert!(
        message.ends_with("Error: Runtime exited with error: exit status 3"),
        "{message}"
    );
}

#[test]
fn the_function_sees_lambdas_environment_and_nothing_of_ours() {
    let project = built("invoke-probe");
    let mut cmd = ocilambda(&shared_cache());
    cmd.arg("invoke")
        .arg("--project")
        .arg(&project)
        .args([
            "--env",
            "FOO=bar",
            "--env",
            "PASSED_THROUGH",
            "--memory",
            "256",
        ])
        .env("PASSED_THROUGH", "from-host")
        .env("HOST_SECRET", "must-not-leak");
    let out = cmd.output().unwrap();
    let seen = answer(&out, 0);
    let env = &seen["env"];
    assert_eq!(env["FOO"], "bar");
    assert_eq!(env["PASSED_THROUGH"], "from-host");
    assert!(
        env.get("HOST_SECRET").is_none(),
        "host variables stay out: {env}"
    );
    assert!(env.get("HOME").is_none(), "{env}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(seen["memory_limit_in_mb"], "256");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "test_function");
    assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task", "the image's Env");
    assert_eq!(
        env["_HANDLER"], "app.main.handler",
        "set by /lambda-entrypoint.sh from Cmd"
    );
    assert!(
        env["AWS_LAMBDA_RUNTIME_API"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(
        seen["function_arn"],
        "arn:aws:lambda:us-east-1:012345678912:function:test_function"
    );
    let remaining = seen["remaining_ms"].as_u64().unwrap();
    assert!(
        remaining > 1000 && remaining <= 3000,
        "deadline from --timeout 3: {remaining}"
    );
    assert_eq!(seen["uid"], 993, "Lambda's sbx_user1051");
    assert_eq!(seen["cwd"], "/var/task", "the image's WorkingDir");
    assert_eq!(seen["tmp_writable"], true);
    assert_eq!(seen["task_writable"], false, "the root is read-only");
    // The base's third layer: a whiteout and an opaque directory.
    assert_eq!(seen["whiteout_removed"], true);
    assert_eq!(seen["kept"], true);
    assert_eq!(seen["opaque"], serde_json::json!(["new"]));

    // The unpacked image is reused by the next invocation.
    let again = invoke(&project, "{}", &[]);
    answer(&again, 0);
    assert!(
        stderr(&again).contains("Reused unpacked image"),
        "{}",
        stderr(&again)
    );
}

/// `ocilambda invoke --serve 127.0.0.1:0`, its stderr in a file; killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(project: &Path, args: &[&str]) -> Server {
        Server::start_with(&["--project".as_ref(), project.as_os_str()], args)
    }

    /// `ocilambda invoke BEFORE... --serve 127.0.0.1:0 ARGS...`.
    fn start_with(before: &[&std::ffi::OsStr], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr");
        let mut child = ocilambda(&shared_cache())
            .arg("invoke")
            .args(before)
            .args(["--serve", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // The bound endpoint is the one line on stdout, printed once it listens.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_default()
            .trim()
            .to_string();
        let server = Server {
            child,
            url,
            log,
            _dir: dir,
        };
        assert!(
            server
                .url
                .ends_with("/2015-03-31/functions/function/invocations"),
            "no endpoint on stdout ({:?}); stderr:\n{}",
            server.url,
            server.stderr()
        );
        server
    }

    /// (HTTP status, X-Amz-Function-Error, body) of a curl POST.
    fn post(&self, event: &str) -> (u16, Option<String>, Value) {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-X", "POST", "--data-binary", event, &self.url])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").expect("an HTTP response");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let error = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-amz-function-error")
                .then(|| value.trim().to_string())
        });
        let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, error, body)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A POST over a plain socket (no HTTP library to normalise the answer): the
    /// response head as sent, and the body.
    fn post_raw(&self, event: &str, headers: &[(&str, &str)]) -> (String, String) {
        use std::io::{Read, Write};
        let rest = self.url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            event.len()
        );
        for (name, value) in headers {
            request += &format!("{name}: {value}\r\n");
        }
        request += "\r\n";
        request += event;
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        (format!("{head}\r\n"), body.to_string())
    }

    /// The log once it holds `reports` REPORT lines: the server writes an invocation's
    /// REPORT after answering it, so reading right after a response can be too early.
    fn stderr_after_reports(&self, reports: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.matches("REPORT RequestId: ").count() >= reports || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C, as a user stops it; the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "--serve did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_three_invocations_from_one_warm_process() {
    let mut server = Server::start(&built("invoke-probe"), &[]);
    for expected in 1..=3 {
        let (status, error, body) = server.post(r#"{"action": "count"}"#);
        assert_eq!((status, error), (200, None), "{body}");
        assert_eq!(body["calls"], expected, "the same process answers: {body}");
    }
    let (status, error, body) = server.post(r#"{"action": "raise"}"#);
    assert_eq!(
        status, 200,
        "function errors are 200, as from Lambda's Invoke API"
    );
    assert_eq!(error.as_deref(), Some("Unhandled"));
    assert_eq!(body["errorType"], "ValueError");
    let (_, _, body) = server.post(r#"{"action": "count"}"#);
    assert_eq!(
        body["calls"], 5,
        "a function error keeps the environment: {body}"
    );
    assert!(server.interrupt().success());
    let log = server.stderr();
    assert_eq!(
        log.matches("Init Duration: ").count(),
        1,
        "one cold start:\n{log}"
    );
    assert_eq!(log.matches("END RequestId: ").count(), 5, "{log}");
}

#[test]
fn serve_starts_a_fresh_environment_after_a_timeout() {
    let server = Server::start(&built("invoke-probe"), &["--timeout", "1"]);
    let (_, _, body) = server.post(r#"{"action": "count"}"#);
    assert_eq!(body["calls"], 1);
    let (status, error, body) = server.post(r#"{"action": "sleep", "seconds": 60}"#);
    assert_eq!((status, error.as_deref()), (200, Some("Unhandled")));
    assert_eq!(body["errorType"], "Sandbox.Timedout", "{body}");
    // The timed-out sandbox was killed: a new process, after a second cold start.
    let (_, _, body) = server.post(r#"{"action": "count"}"#);
    assert_eq!(body["calls"], 1, "{body}");
    let log = server.stderr_after_reports(3);
    assert_eq!(log.matches("Init Duration: ").count(), 2, "{log}");
}

#[test]
fn a_registry_reference_is_pulled_and_run() {
    let project = built("invoke-probe");
    let reference = format!("{}/invoke-tests/probe:1", shared_registry().addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", project.join(".ocilambda/image").display()),
        &format!("docker://{reference}"),
    ]);
    // A cache of its own: every layer comes from the registry.
    let cache = tempfile::tempdir().unwrap();
    let out = ocilambda(cache.path())
        .args(["invoke", &reference])
        .output()
        .unwrap();
    let seen = answer(&out, 0);
    assert_eq!(seen["whiteout_removed"], true);
    let err = stderr(&out);
    assert!(err.contains("Fetched "), "{err}");
    assert!(err.contains("Unpacked image"), "{err}");
    let _ = ocilambda::invoke::rootfs::remove_tree(cache.path());
}

#[test]
fn an_image_for_another_architecture_is_a_clear_error() {
    let (other, other_lambda, ours) = if cfg!(target_arch = "x86_64") {
        ("arm64", "arm64", "x86_64")
    } else {
        ("amd64", "x86_64", "arm64")
    };
    // A layout built for the other architecture (on the multi-arch stand-in base).
    let dir = tempfile::tempdir().unwrap();
    copy_project("invoke-probe", dir.path());
    let cache = tempfile::tempdir().unwrap();
    let base = stand_in_base("3.11");
    let build = ocilambda(cache.path())
        .arg("build")
        .arg(dir.path())
        .args(["--base", &base, "--arch", other_lambda, "--quiet"])
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    let out = ocilambda(cache.path())
        .args(["invoke", "--project"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "is a linux/{other_lambda} image, but this machine runs linux/{ours}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "hint: build it for this machine with `ocilambda build --arch {ours}`"
        )),
        "{err}"
    );
    // An index without our platform.
    let only_other = if other == "arm64" {
        "python-arm64only"
    } else {
        "python-docker"
    };
    let out = ocilambda(cache.path())
        .args([
            "invoke",
            &format!("{}/lambda/{only_other}:3.11", shared_registry().addr),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn memory_limit_kills_as_lambda_does_where_a_memory_cgroup_can_be_made() {
    let out = invoke(
        &built("invoke-probe"),
        r#"{"action": "allocate", "mb": 400}"#,
        &["--memory", "128"],
    );
    let err = stderr(&out);
    if err.contains("warning: --memory 128 is not enforced") {
        // No writable memory cgroup here (e.g. cgroup v2 without delegation): the
        // function runs unbounded, and the user was told.
        assert_eq!(answer(&out, 0)["allocated"], 400 << 20);
        return;
    }
    let error = answer(&out, 1);
    assert_eq!(error["errorType"], "Runtime.OutOfMemory", "{error}\n{err}");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Error: Runtime exited with error: signal: killed"),
        "{error}"
    );
    assert!(err.contains("Max Memory Used: 128 MB"), "{err}");
}

#[test]
fn missing_bwrap_is_a_clear_error() {
    let project = built("invoke-probe");
    let empty = tempfile::tempdir().unwrap();
    let out = ocilambda(&shared_cache())
        .args(["invoke", "--project"])
        .arg(&project)
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("error: bwrap (bubblewrap) was not found on PATH"),
        "{err}"
    );
    assert!(
        err.contains("hint: install bubblewrap (`sudo apt-get install bubblewrap`"),
        "{err}"
    );
}

#[test]
fn missing_user_namespaces_are_a_clear_error() {
    // A bwrap that fails as the real one does where unprivileged user namespaces are off.
    let project = built("invoke-probe");
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // No network provider on this PATH: --network none gets as far as bwrap.
    let out = ocilambda(&shared_cache())
        .args(["invoke", "--network", "none", "--project"])
        .arg(&project)
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: the sandbox could not start: bwrap: setting up uid map: Permission denied"
        ),
        "{err}"
    );
    assert!(
        err.contains("hint: bubblewrap needs unprivileged user namespaces"),
        "{err}"
    );
}

#[test]
fn without_a_build_there_is_nothing_to_invoke() {
    let empty = tempfile::tempdir().unwrap();
    let out = ocilambda(&shared_cache())
        .args(["invoke", "--project"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("error: no OCI image layout at"), "{err}");
    assert!(err.contains("hint: run `ocilambda build` first"), "{err}");
}

/// What the probe answers to `event` with `args`, after checking it answered.
fn probe(event: Value, args: &[&str]) -> Value {
    let out = invoke(&built("invoke-probe"), &event.to_string(), args);
    answer(&out, 0)
}

/// A listener on `addr` that greets every connection, for as long as the test runs.
fn greeter(addr: &str) -> std::net::SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let bound = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"hello from the host");
        }
    });
    bound
}

#[test]
fn the_hosts_loopback_is_out_of_reach_unless_the_host_network_is_asked_for() {
    let on_loopback = greeter("127.0.0.1:0");
    let event =
        serde_json::json!({"action": "connect", "host": "127.0.0.1", "port": on_loopback.port()});
    for network in [&[][..], &["--network", "none"]] {
        let seen = probe(event.clone(), network);
        assert_eq!(seen["connected"], false, "{network:?}: {seen}");
    }
    let seen = probe(event, &["--network", "host"]);
    assert_eq!(seen["reply"], "hello from the host", "{seen}");
}

/// The routing table the function sees (/proc/net/route), and whether it has a default
/// route (destination 00000000).
fn default_route(args: &[&str]) -> bool {
    let seen = probe(
        serde_json::json!({"action": "read", "path": "/proc/net/route"}),
        args,
    );
    let table = seen["text"].as_str().unwrap_or_else(|| panic!("{seen}"));
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
}

#[test]
fn a_private_network_goes_out_and_none_does_not() {
    // No internet here: going out means an interface with a default route, which pasta
    // or slirp4netns configures from the host's; none has only loopback.
    let host_has_route = std::fs::read_to_string("/proc/net/route")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
    if host_has_route {
        assert!(default_route(&[]), "the private network has a way out");
    }
    assert!(
        !default_route(&["--network", "none"]),
        "none has no way out"
    );
}

/// The host's own address on its default route, if it has one (no packet is sent).
fn host_address() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    Some(probe.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback())
}

#[test]
fn slirp4netns_reaches_the_hosts_network_address_but_not_its_loopback() {
    // pasta gives the function the host's own address, so there the host's address is
    // the function's; slirp4netns gives it 10.0.2.100, and a service the host binds on
    // its network address is reached like any other machine's.
    // slirp4netns is one of the tools scripts/ensure-tools.sh installs.
    let slirp = which("slirp4netns");
    let Some(address) = host_address() else {
        eprintln!("skipped: this machine has no network address");
        return;
    };
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(which("bwrap"), bin.path().join("bwrap")).unwrap();
    std::os::unix::fs::symlink(slirp, bin.path().join("slirp4netns")).unwrap();
    let on_network = greeter(&format!("{address}:0"));
    let on_loopback = greeter("127.0.0.1:0");
    let connect = |to: std::net::SocketAddr| {
        let event = serde_json::json!({"action": "connect", "host": to.ip().to_string(), "port": to.port()});
        let out = ocilambda(&shared_cache())
            .arg("invoke")
            .arg("--project")
            .arg(built("invoke-probe"))
            .args(["--event", "-"])
            .env("PATH", bin.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(event.to_string().as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        answer(&out, 0)
    };
    let seen = connect(on_network);
    assert_eq!(seen["reply"], "hello from the host", "{seen}");
    let seen = connect(on_loopback);
    assert_eq!(seen["connected"], false, "{seen}");
}

#[test]
fn the_function_sees_no_host_socket_and_no_host_path() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ocilambda-probe-{}.sock", std::process::id());
    let _socket = std::os::unix::net::UnixListener::bind(dir.path().join(&name)).unwrap();
    let unix = |args: &[&str]| {
        let seen = probe(
            serde_json::json!({"action": "read", "path": "/proc/net/unix"}),
            args,
        );
        seen["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{seen}"))
            .to_string()
    };
    assert!(!unix(&[]).contains(&name), "host sockets are hidden");
    assert!(
        unix(&["--network", "host"]).contains(&name),
        "the host's network shows them"
    );
    let cache = shared_cache().canonicalize().unwrap();
    let cache = cache.to_str().unwrap();
    let cmdline = probe(
        serde_json::json!({"action": "read", "path": "/proc/1/cmdline"}),
        &[],
    );
    let cmdline = cmdline["text"].as_str().unwrap();
    assert!(cmdline.contains("\0--args\0"), "{cmdline:?}");

    assert!(!cmdline.contains(cache), "{cmdline:?} names {cache}");
}

#[test]
fn without_pasta_or_slirp4netns_the_private_network_is_a_clear_error() {
    let project = built("invoke-probe");
    let bin = tempfile::tempdir().unwrap();
    let bwrap = which("bwrap");
    std::os::unix::fs::symlink(bwrap, bin.path().join("bwrap")).unwrap();
    let out = ocilambda(&shared_cache())
        .args(["invoke", "--project"])
        .arg(&project)
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: the function's private network needs pasta or slirp4netns"),
        "{err}"
    );
    assert!(err.contains("hint: install passt"), "{err}");
    assert!(err.contains("--network none"), "{err}");
}

/// `name` on our PATH.
fn which(name: &str) -> PathBuf {
    which_opt(name).unwrap_or_else(|| panic!("{name} on PATH"))
}

fn which_opt(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn the_client_context_reaches_the_function_as_on_lambda() {
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context.json");
    std::fs::write(
        &context,
        r#"{"custom": {"tenant": "t-1"}, "env": {}, "client": {}}"#,
    )
    .unwrap();
    let project = built("invoke-probe");
    let out = invoke(
        &project,
        "{}",
        &["--client-context", context.to_str().unwrap()],
    );
    let seen = answer(&out, 0);
    assert_eq!(
        seen["client_context_custom"],
        serde_json::json!({"tenant": "t-1"}),
        "{seen}"
    );
    // Not a JSON object: refused before anything runs, as the Invoke API would.
    std::fs::write(&context, "[1, 2]").unwrap();
    let out = invoke(
        &project,
        "{}",
        &["--client-context", context.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: the client context is not a JSON object"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn serve_answers_function_errors_with_the_invoke_apis_headers_byte_for_byte() {
    let server = Server::start(&built("invoke-probe"), &[]);
    let (head, body) = server.post_raw(r#"{"action": "raise"}"#, &[]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for line in [
        "X-Amz-Function-Error: Unhandled",
        "X-Amz-Executed-Version: $LATEST",
        "Content-Type: application/json",
    ] {
        assert!(
            head.contains(&format!("\r\n{line}\r\n")),
            "{line:?} in\n{head}"
        );
    }
    assert!(
        body.contains("\"errorType\": \"ValueError\"")
            || body.contains("\"errorType\":\"ValueError\""),
        "{body}"
    );
    // The caller's client context (base64, as the Invoke API takes it) and trace header.
    let (head, body) = server.post_raw(
        "{}",
        &[
            // {"custom": {"k": "v"}}
            ("X-Amz-Client-Context", "eyJjdXN0b20iOiB7ImsiOiAidiJ9fQ=="),
            (
                "X-Amzn-Trace-Id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
            ),
        ],
    );
    assert!(!head.contains("X-Amz-Function-Error"), "{head}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["client_context_custom"],
        serde_json::json!({"k": "v"}),
        "{seen}"
    );
    assert_eq!(
        seen["trace_id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    let (head, body) = server.post_raw("{}", &[("X-Amz-Client-Context", "not base64!")]);
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(
        body.contains("Client context must be a valid Base64-encoded JSON object."),
        "{body}"
    );
}

#[test]
fn a_custom_runtime_that_reads_headers_case_sensitively_runs_as_on_lambda() {
    // The probe's image with its hand-written runtime (app/bootstrap.py) as the
    // entrypoint instead of awslambdaric, changed with umoci as a user might.
    let project = built("invoke-probe");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("custom");
    // Through the registry: the build's layout leaves out the base's blobs.
    let reference = format!("{}/invoke-tests/custom-runtime:1", shared_registry().addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", project.join(".ocilambda/image").display()),
        &format!("docker://{reference}"),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:custom", layout.display()),
    ]);
    let image = format!("{}:custom", layout.display());
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/var/lang/bin/python3.11",
        "--config.entrypoint",
        "/var/task/app/bootstrap.py",
        "--clear=config.cmd",
    ]);
    umoci(&["gc", "--layout", layout.to_str().unwrap()]);
    let server = Server::start_with(&[layout.as_os_str()], &["--timeout", "5"]);
    let (status, error, seen) = server.post(r#"{"hello": "world"}"#);
    assert_eq!((status, error), (200, None), "{seen}\n{}", server.stderr());
    assert_eq!(seen["event"], serde_json::json!({"hello": "world"}));
    let headers = seen["headers"].as_object().unwrap();
    for name in [
        "Content-Type",
        "Lambda-Runtime-Aws-Request-Id",
        "Lambda-Runtime-Deadline-Ms",
        "Lambda-Runtime-Invoked-Function-Arn",
        "Lambda-Runtime-Trace-Id",
    ] {
        assert!(headers.contains_key(name), "{name} in {headers:?}");
    }
    assert_eq!(headers["Content-Type"], "application/json");
    assert_eq!(
        headers["Lambda-Runtime-Invoked-Function-Arn"],
        "arn:aws:lambda:us-east-1:012345678912:function:test_function"
    );
    assert!(
        !headers.keys().any(|k| k.starts_with("lambda-runtime")),
        "{headers:?}"
    );
    assert_eq!(seen["unknown_id"]["status"], 400);
    assert_eq!(
        seen["unknown_id"]["body"],
        "{\"errorMessage\":\"Invalid request ID\",\"errorType\":\"InvalidRequestID\"}\n"
    );
    // The runtime logs its second answer to the first invocation before it asks for the
    // next one: after a second invocation, the line is in the log.
    let (status, _, _) = server.post("{}");
    assert_eq!(status, 200);
    let log = server.stderr_after_reports(2);
    assert!(
        log.contains("second answer: 403 {\"errorMessage\":\"State transition from RuntimeResponseSentState to InvocationResponse failed for runtime. Error: State transition is not allowed\",\"errorType\":\"InvalidStateTransition\"} / first: 202 {\"status\":\"OK\"}"),
        "{log}"
    );
    assert_eq!(
        log.matches("Init Duration: ").count(),
        1,
        "one process: {log}"
    );
}

#[test]
fn after_an_app_only_rebuild_only_the_app_layer_is_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("probe");
    copy_project("invoke-probe", &project);
    let build = || {
        let out = ocilambda(&shared_cache())
            .arg("build")
            .arg(&project)
            .args(["--base", runtime_base(), "--quiet"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    build();
    answer(&invoke(&project, r#"{"action": "count"}"#, &[]), 0);
    let main = project.join("app/main.py");
    let mut source = std::fs::read_to_string(&main).unwrap();
    source += "\n\ndef edited():\n    return 'edited'\n";
    std::fs::write(&main, source).unwrap();
    build();
    let out = invoke(&project, r#"{"action": "count"}"#, &[]);
    assert_eq!(answer(&out, 0)["calls"], 1);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("Unpacked image "))
        .unwrap_or_else(|| panic!("a new image is composed:\n{err}"));
    assert!(line.contains("(1 of "), "only the app layer is new: {line}");
}
