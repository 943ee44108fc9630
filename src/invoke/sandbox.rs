//! The sandbox a function runs in: bubblewrap (`bwrap`) with the unpacked image as a
//! read-only `/`, fresh `/proc`, `/dev` and a writable tmpfs `/tmp`, the function's user
//! (uid 993, as Lambda's sbx_user1051) in a user namespace, and only the environment it
//! is given. Its network is its own unless the host's is asked for ([`super::network`]),
//! and when it is, bwrap holds the function back (`--block-fd`) until that network and
//! the Runtime API socket inside it are ready. bwrap reads its options from a file (`--args`), so
//! the sandbox's PID 1, whose command line the function can read, names no host path.
//!
//! Also here: the memory limit, which needs a memory cgroup we may write to (cgroup v2
//! with the memory controller delegated to our cgroup, or a writable cgroup v1 memory
//! hierarchy, e.g. as root); elsewhere `--memory` only sets the variable. What the
//! function prints goes to our stderr; bwrap's own complaints are kept for the error.

use super::network::{self, Network, NetworkError, Provider};
use crate::error::hint;
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// Lambda runs functions as sbx_user1051 (993:990).
pub const FUNCTION_UID: u32 = 993;
pub const FUNCTION_GID: u32 = 990;

/// What to run, and in which root.
#[derive(Debug, Clone)]
pub struct Spec {
    pub rootfs: PathBuf,
    /// Entrypoint then Cmd.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub network: Network,
}

const INSTALL_HINT: &str = "install bubblewrap (`sudo apt-get install bubblewrap` on Debian/Ubuntu, `sudo dnf install bubblewrap` on Fedora)";

/// The executable `name` on `path` (a PATH-style list).
pub fn find_program(path: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.into_iter()
        .flat_map(std::env::split_paths)
        .find_map(|dir| {
            let candidate = dir.join(name);
            std::fs::metadata(&candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .then_some(candidate)
        })
}

/// `bwrap` on `path` (a PATH-style list), or a clear error saying how to install it.
pub fn find_bwrap(path: Option<&std::ffi::OsStr>) -> Result<PathBuf> {
    find_program(path, "bwrap").ok_or_else(|| {
        hint(
            "bwrap (bubblewrap) was not found on PATH: invoking runs the image in a bubblewrap sandbox",
            INSTALL_HINT,
        )
    })
}

/// The descriptors bwrap reports on and waits on while we connect a private network.
#[derive(Debug, Clone, Copy)]
pub struct GateFds {
    pub info: i32,
    pub block: i32,
}

/// bwrap's options for `spec` (the command follows them on bwrap's command line); `gate`
/// for a private network.
pub fn bwrap_args(spec: &Spec, gate: Option<GateFds>) -> Vec<OsString> {
    let (uid, gid) = (FUNCTION_UID.to_string(), FUNCTION_GID.to_string());
    let os = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
    // Every namespace (the network's too unless the host's is asked for); the user
    // namespace is required (not `-try`), so the function never runs with our own uid's
    // powers.
    let mut args = os(&["--unshare-all", "--unshare-user"]);
    if spec.network == Network::Host {
        args.extend(os(&["--share-net"]));
    }
    if let Some(g) = gate {
        let (info, block) = (g.info.to_string(), g.block.to_string());
        args.extend(os(&["--info-fd", &info, "--block-fd", &block]));
    }
    args.extend(os(&["--uid", &uid, "--gid", &gid]));
    // The sandbox dies with us, and cannot reach our terminal (TIOCSTI).
    args.extend(os(&["--die-with-parent", "--new-session"]));
    args.extend(["--ro-bind".into(), spec.rootfs.clone().into(), "/".into()]);
    args.extend(os(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]));
    if spec.rootfs.join("etc/resolv.conf").exists() {
        args.extend(os(&[
            "--ro-bind-try",
            "/etc/resolv.conf",
            "/etc/resolv.conf",
        ]));
    }
    args.extend(os(&["--chdir", &spec.workdir]));
    args
}

/// A running sandbox.
pub struct Sandbox {
    child: tokio::process::Child,
    logs: Option<std::thread::JoinHandle<()>>,
    /// Our own end of the log pipe, for lines that must come after the function's.
    log_writer: Option<std::io::PipeWriter>,
    bwrap_said: Arc<Mutex<Vec<String>>>,
    memory: Option<MemoryCgroup>,
    status: Option<ExitStatus>,
    /// Until the private network is connected: bwrap's report and its brake.
    gate: Option<(std::io::PipeReader, std::io::PipeWriter)>,
    /// slirp4netns, which runs as our child; closing `provider_exit` ends it.
    provider: Option<tokio::process::Child>,
    provider_exit: Option<std::io::PipeWriter>,
}

/// Clear close-on-exec on `fds` in a child about to exec, so they are inherited.
fn inherit(fds: &[i32]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl on descriptors we own, between fork and exec.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Sandbox {
    pub fn spawn(
        bwrap: &Path,
        spec: &Spec,
        memory: Option<MemoryCgroup>,
        reporter: Arc<dyn crate::report::Reporter>,
    ) -> Result<Sandbox> {
        // One pipe for both streams keeps the function's stdout and stderr in the order
        // it wrote them.
        let (reader, writer) = std::io::pipe().context("creating a pipe")?;
        let log_writer = writer.try_clone()?;
        let gate = if spec.network == Network::Host {
            None
        } else {
            let (info_r, info_w) = std::io::pipe().context("creating a pipe")?;
            let (block_r, block_w) = std::io::pipe().context("creating a pipe")?;
            Some((info_r, info_w, block_r, block_w))
        };
        let gate_fds = gate.as_ref().map(|(_, info_w, block_r, _)| GateFds {
            info: info_w.as_raw_fd(),
            block: block_r.as_raw_fd(),
        });
        let args = args_file(&bwrap_args(spec, gate_fds))?;
        let mut inherited = vec![args.as_raw_fd()];
        inherited.extend(gate_fds.iter().flat_map(|g| [g.info, g.block]));
        let mut cmd = tokio::process::Command::new(bwrap);
        // bwrap takes only options from the file: the command stays on its command line.
        cmd.arg("--args")
            .arg(args.as_raw_fd().to_string())
            .arg("--")
            .args(&spec.argv)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .kill_on_drop(true);
        let procs = memory.as_ref().map(MemoryCgroup::procs_file).transpose()?;
        // SAFETY: only fcntl(2) and write(2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                inherit(&inherited)?;
                // "0" moves the writing process: bwrap and all it starts are in the
                // cgroup from their first instruction, with no window to escape it.
                match &procs {
                    Some(procs) => (&*procs).write_all(b"0"),
                    None => Ok(()),
                }
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bwrap.display()))?;
        // Our copies of the write end go with `cmd`, so the pump sees EOF once the
        // sandbox is gone; likewise bwrap's ends of the gate.
        drop(cmd);
        drop(args);
        let gate = gate.map(|(info_r, _, _, block_w)| (info_r, block_w));
        let bwrap_said = Arc::new(Mutex::new(Vec::new()));
        let said = bwrap_said.clone();
        let logs = std::thread::Builder::new()
            .name("function-logs".into())
            .spawn(move || pump(reader, &said, &*reporter))
            .context("starting the log thread")?;
        Ok(Sandbox {
            child,
            logs: Some(logs),
            log_writer: Some(log_writer),
            bwrap_said,
            memory,
            status: None,
            gate,
            provider: None,
            provider_exit: None,
        })
    }

    /// For a private network: connect it (through `provider`, or not at all for none),
    /// make the Runtime API's socket inside it, then let the function start.
    pub async fn connect(&mut self, provider: Option<&Provider>) -> Result<std::net::TcpListener> {
        let (info, mut block) = self
            .gate
            .take()
            .context("the sandbox has no private network")?;
        let pid = match tokio::task::spawn_blocking(move || child_pid(info)).await? {
            Some(pid) => pid,
            None => {
                let _ = self.wait().await;
                return Err(self
                    .setup_error()
                    .await
                    .unwrap_or_else(|| anyhow::anyhow!("the sandbox could not start")));
            }
        };
        let listener = self.listen_inside(pid).await?;
        if let Some(provider) = provider {
            self.start_provider(provider, pid).await?;
        }
        block.write_all(b"1").context("starting the function")?;
        Ok(listener)
    }

    /// The Runtime API's socket in the namespace of `pid`. bwrap reports the pid as soon
    /// as the namespace exists, before its loopback has an address: until then, binding
    /// fails with EADDRNOTAVAIL, and so we wait. A provider must not start earlier
    /// either: bwrap's own loopback set-up fails if someone else brought it up first.
    async fn listen_inside(&mut self, pid: u32) -> Result<std::net::TcpListener> {
        let deadline = tokio::time::Instant::now() + PROVIDER_READY;
        loop {
            let attempt = tokio::task::spawn_blocking(move || {
                network::listen_inside(pid, network::RUNTIME_API_PORT)
            })
            .await?;
            match attempt {
                Err(NetworkError::Listen { errno, .. })
                    if errno == Some(libc::EADDRNOTAVAIL)
                        && tokio::time::Instant::now() < deadline
                        && !self.exited() =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Run `provider` on the namespace of `pid`, as our child, and wait until it has
    /// configured it.
    async fn start_provider(&mut self, provider: &Provider, pid: u32) -> Result<()> {
        // SAFETY: geteuid cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        let owner = if as_root {
            None
        } else {
            Some(network::netns_owner(pid).context("finding the sandbox's user namespace")?)
        };
        let owner_fd = owner.as_ref().map(|o| o.as_raw_fd());
        let mut said = tempfile::tempfile().context("creating a temporary file")?;
        let program = provider.program();
        let (mut ready_r, ready_w) = std::io::pipe()?;
        let (exit_r, exit_w) = std::io::pipe()?;
        let mut fds = vec![ready_w.as_raw_fd(), exit_r.as_raw_fd()];
        fds.extend(owner_fd);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(provider.args(pid, owner_fd, fds[0], fds[1]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(said.try_clone()?)
            .kill_on_drop(true);
        // SAFETY: only fcntl(2) and prctl(2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                inherit(&fds)?;
                // pasta would outlive a killed ocilambda (slirp4netns ends when its exit
                // descriptor closes); this runs on a runtime thread, which lives as long
                // as we do.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.provider = Some(child);
        self.provider_exit = Some(exit_w);
        drop((cmd, ready_w, exit_r, owner));
        let ready = match provider {
            // slirp4netns says so on its ready descriptor.
            Provider::Slirp4netns(_) => {
                let byte = tokio::task::spawn_blocking(move || {
                    let mut b = [0u8; 1];
                    ready_r.read(&mut b).is_ok_and(|n| n == 1)
                });
                matches!(
                    tokio::time::timeout(PROVIDER_READY, byte).await,
                    Ok(Ok(true))
                )
            }
            // pasta (in the foreground) does not: its default route, set last, is.
            Provider::Pasta(_) => self.default_route(pid).await,
        };
        if !ready {
            let mut text = String::new();
            let _ = said.rewind().and_then(|_| said.read_to_string(&mut text));
            // pasta also says it cannot reach syslog, which is no news to anyone.
            let text: Vec<&str> = text
                .lines()
                .filter(|l| !l.is_empty() && !l.contains("syslog"))
                .collect();
            return Err(NetworkError::Provider {
                program: provider.name().into(),
                said: if text.is_empty() {
                    "it did not configure the network".into()
                } else {
                    text.join("; ")
                },
            }
            .into());
        }
        Ok(())
    }

    /// Whether the namespace of `pid` gets a default route within [`PROVIDER_READY`]
    /// while the provider runs.
    async fn default_route(&mut self, pid: u32) -> bool {
        let deadline = tokio::time::Instant::now() + PROVIDER_READY;
        while tokio::time::Instant::now() < deadline {
            let table = std::fs::read_to_string(format!("/proc/{pid}/net/route"));
            if table.is_ok_and(|t| has_default_route(&t)) {
                return true;
            }
            let running = self
                .provider
                .as_mut()
                .is_some_and(|p| matches!(p.try_wait(), Ok(None)));
            if !running {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        false
    }

    /// Whether the sandbox has ended on its own (without waiting).
    pub fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    /// Wait for the sandbox to end (cancel-safe).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self.child.wait().await?;
        self.status = Some(s);
        Ok(s)
    }

    /// Kill the sandbox (all of it: bwrap's --die-with-parent and the PID namespace take
    /// the function's processes along) and reap it.
    pub async fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.start_kill();
            let _ = self.wait().await;
        }
        self.provider_exit = None;
        if let Some(mut provider) = self.provider.take() {
            let _ = provider.start_kill();
            let _ = provider.wait().await;
        }
        self.finish_logs().await;
    }

    /// A status line (START, END, REPORT) in order with what the function wrote before
    /// it: through the same pipe, as Lambda's log stream has them.
    pub fn log(&mut self, line: &str, reporter: &dyn crate::report::Reporter) {
        if !reporter.shows_steps() {
            return;
        }
        // One write of less than PIPE_BUF bytes: never interleaved with the function's.
        let written = self
            .log_writer
            .as_mut()
            .is_some_and(|w| w.write_all(format!("{line}\n").as_bytes()).is_ok());
        if !written {
            reporter.event(crate::report::Event::Step(line.to_string()));
        }
    }

    /// Let the log pump reach the end, so the function's last lines come before ours.
    async fn finish_logs(&mut self) {
        self.log_writer = None;
        if let Some(handle) = self.logs.take() {
            // Bounded: a process that escaped the sandbox's death could hold the pipe.
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                tokio::task::spawn_blocking(move || handle.join()),
            )
            .await;
        }
    }

    /// Why the sandbox could not start, if bwrap said so (after it exited).
    pub async fn setup_error(&mut self) -> Option<anyhow::Error> {
        self.finish_logs().await;
        let said = self.bwrap_said.lock().ok()?.join("; ");
        (!said.is_empty()).then(|| setup_error(&said))
    }

    /// Whether the memory limit killed something.
    pub fn oom_killed(&self) -> bool {
        self.memory.as_ref().is_some_and(MemoryCgroup::oom_killed)
    }

    /// Peak memory use of the sandbox, where a memory cgroup measures it.
    pub fn peak_memory(&self) -> Option<u64> {
        self.memory.as_ref().and_then(MemoryCgroup::peak)
    }
}

/// How long a network provider may take to configure the namespace.
const PROVIDER_READY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a routing table (as /proc/net/route shows it) has a default route.
pub fn has_default_route(table: &str) -> bool {
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
}

/// bwrap's arguments in an unlinked file, for `--args`: NUL-separated, as it reads them.
fn args_file(args: &[OsString]) -> Result<std::fs::File> {
    use std::os::unix::ffi::OsStrExt;
    let mut file = tempfile::tempfile().context("creating a temporary file")?;
    for arg in args {
        file.write_all(arg.as_bytes())?;
        file.write_all(b"\0")?;
    }
    file.rewind()?;
    Ok(file)
}

/// The sandbox's first process, from bwrap's `--info-fd` report; None if bwrap ended
/// without one. Read until the JSON is whole: the pipe may stay open behind it.
fn child_pid(mut info: std::io::PipeReader) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
            return v.get("child-pid")?.as_u64()?.try_into().ok();
        }
        match info.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Pass the function's log stream to the reporter, line by line, keeping bwrap's own.
fn pump(
    reader: std::io::PipeReader,
    bwrap_said: &Mutex<Vec<String>>,
    reporter: &dyn crate::report::Reporter,
) {
    let mut reader = std::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.starts_with(b"bwrap: ") {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if let Ok(mut said) = bwrap_said.lock() {
                said.push(text);
            }
            continue;
        }
        reporter.event(crate::report::Event::FunctionLog(std::mem::take(&mut line)));
    }
}

/// bwrap's complaint as our error, with what to do about the usual one.
fn setup_error(said: &str) -> anyhow::Error {
    let namespaces = [
        "namespace",
        "uid map",
        "setting up uid",
        "Operation not permitted",
        "Permission denied",
    ];
    if namespaces.iter().any(|n| said.contains(n)) {
        hint(
            format!("the sandbox could not start: {said}"),
            "bubblewrap needs unprivileged user namespaces: enable them with `sudo sysctl -w kernel.unprivileged_userns_clone=1` (Debian), `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 24.04+), or raise user.max_user_namespaces",
        )
    } else {
        anyhow::anyhow!("the sandbox could not start: {said}")
    }
}

/// How Lambda words a runtime's exit: `exit status 1`, `signal: killed` (bwrap passes a
/// signal death on as 128 + the signal number).
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal().or_else(|| {
        status
            .code()
            .filter(|c| (129..=159).contains(c))
            .map(|c| c - 128)
    });
    match signal {
        Some(s) => format!("signal: {}", signal_name(s)),
        None => format!("exit status {}", status.code().unwrap_or(-1)),
    }
}

/// Go's names for signals (Lambda's messages come from Go's `os.ProcessState`).
fn signal_name(signal: i32) -> String {
    match signal {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        4 => "illegal instruction".into(),
        6 => "aborted".into(),
        7 => "bus error".into(),
        8 => "floating point exception".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// A memory cgroup made for one sandbox, removed when dropped.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// A child of our own memory cgroup limited to `mb` MiB, or why there cannot be one.
    pub fn create(mb: u32) -> std::result::Result<MemoryCgroup, String> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let (parent, v2) = memory_cgroup_dir(&cgroups, &mountinfo)
            .ok_or("no memory cgroup controller is available to this process")?;
        sweep(&parent);
        let dir = parent.join(format!(
            "ocilambda-invoke-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2 };
        let bytes = u64::from(mb) * 1024 * 1024;
        let limit = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cg.dir.join(limit), bytes.to_string())
            .map_err(|e| format!("cannot write {}: {e}", cg.dir.join(limit).display()))?;
        // No swap, as on Lambda (where the files exist).
        if v2 {
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        } else {
            let _ = std::fs::write(
                cg.dir.join("memory.memsw.limit_in_bytes"),
                bytes.to_string(),
            );
        }
        Ok(cg)
    }

    fn procs_file(&self) -> Result<std::fs::File> {
        let path = self.dir.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    }

    fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file)).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The kernel refuses to remove a cgroup until its last process is gone, which
        // can trail the sandbox's reaping by a moment.
        for _ in 0..20 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Remove empty cgroups that killed runs left behind. Only those of processes that are
/// gone: a live invoke's cgroup is empty between its creation and the sandbox joining
/// it, and rmdir would take it from under that invoke (rmdir fails only on busy ones).
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ocilambda-invoke-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Our memory cgroup's directory and whether it is cgroup v2, from `/proc/self/cgroup`
/// and `/proc/self/mountinfo`; v2 only where the memory controller is enabled for our
/// children (otherwise their `memory.max` does not exist).
fn memory_cgroup_dir(cgroups: &str, mountinfo: &str) -> Option<(PathBuf, bool)> {
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            // (root within the hierarchy, mount point, fs type, super options)
            Some((
                *f.get(3)?,
                *f.get(4)?,
                *r.first()?,
                *r.get(2).unwrap_or(&""),
            ))
        })
        .collect();
    let under = |root: &str, mount: &str, path: &str| -> Option<PathBuf> {
        let rel = path.strip_prefix(root).unwrap_or(path);
        Some(Path::new(mount).join(rel.trim_start_matches('/')))
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if id == "0" && controllers.is_empty() {
            for (root, mount, fstype, _) in &mounts {
                if *fstype == "cgroup2" {
                    let dir = under(root, mount, path)?;
                    let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                        .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"));
                    if delegated {
                        return Some((dir, true));
                    }
                }
            }
        }
    }
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            for (root, mount, fstype, options) in &mounts {
                if *fstype == "cgroup" && options.split(',').any(|o| o == "memory") {
                    return Some((under(root, mount, path)?, false));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bwrap_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_bwrap(Some(empty.path().as_os_str())).unwrap_err();
        assert!(err.to_string().contains("bwrap (bubblewrap) was not found"));
        assert!(
            crate::error::find_hint(&err)
                .unwrap()
                .contains("apt-get install bubblewrap")
        );
        assert!(find_bwrap(None).is_err());
    }

    fn spec(network: Network) -> Spec {
        Spec {
            rootfs: PathBuf::from("/cache/rootfs/abc"),
            argv: vec!["/lambda-entrypoint.sh".into(), "app.handler".into()],
            env: vec![],
            workdir: "/var/task".into(),
            network,
        }
    }

    fn joined(args: Vec<OsString>) -> String {
        let args: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        args.join(" ")
    }

    #[test]
    fn sandbox_is_read_only_root_with_its_own_tmp_and_user() {
        let joined = joined(bwrap_args(&spec(Network::Host), None));
        for expected in [
            "--unshare-all --unshare-user --share-net",
            "--uid 993 --gid 990",
            "--die-with-parent",
            "--ro-bind /cache/rootfs/abc /",
            "--proc /proc --dev /dev --tmpfs /tmp",
        ] {
            assert!(joined.contains(expected), "{expected:?} in {joined}");
        }
        assert!(joined.ends_with("--chdir /var/task"), "{joined}");
    }

    #[test]
    fn a_private_network_is_unshared_and_held_until_connected() {
        for network in [Network::Private, Network::None] {
            let gate = GateFds { info: 7, block: 8 };
            let joined = joined(bwrap_args(&spec(network), Some(gate)));
            assert!(!joined.contains("--share-net"), "{joined}");
            assert!(joined.contains("--info-fd 7 --block-fd 8"), "{joined}");
        }
    }

    #[test]
    fn bwrap_reads_its_arguments_from_a_file_not_its_command_line() {
        let args = bwrap_args(&spec(Network::Host), None);
        let mut file = args_file(&args).unwrap();
        let mut text = Vec::new();
        file.read_to_end(&mut text).unwrap();
        let parts: Vec<&[u8]> = text.split(|b| *b == 0).collect();
        assert_eq!(parts.len(), args.len() + 1, "NUL-terminated");
        assert!(text.windows(17).any(|w| w == b"/cache/rootfs/abc"));
    }

    #[test]
    fn exits_are_worded_as_lambda_words_them() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(137 << 8)),
            "signal: killed"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(11)),
            "signal: segmentation fault"
        );
    }

    #[test]
    fn user_namespace_failures_get_a_hint() {
        let e = setup_error("bwrap: setting up uid map: Permission denied");
        assert!(
            crate::error::find_hint(&e)
                .unwrap()
                .contains("user namespaces")
        );
        let e = setup_error("bwrap: Can't find source path /x: No such file or directory");
        assert!(crate::error::find_hint(&e).is_none());
    }

    #[test]
    fn sweep_leaves_the_cgroups_of_live_processes() {
        let parent = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let ours = parent
            .path()
            .join(format!("ocilambda-invoke-{}-0", std::process::id()));
        let dead = parent.path().join(format!("ocilambda-invoke-{gone}-0"));
        let other = parent.path().join("someone-else");
        for d in [&ours, &dead, &other] {
            std::fs::create_dir(d).unwrap();
        }
        sweep(parent.path());
        assert!(ours.exists(), "a live invoke's empty cgroup was removed");
        assert!(!dead.exists(), "a dead invoke's cgroup was left");
        assert!(other.exists());
    }

    #[test]
    fn finds_the_memory_cgroup_of_either_version() {
        let mountinfo_v1 = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let cgroups_v1 = "4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            memory_cgroup_dir(cgroups_v1, mountinfo_v1),
            Some((
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
                false
            ))
        );
        let mountinfo_nested =
            "35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            memory_cgroup_dir("4:memory:/docker/x/sub\n", mountinfo_nested),
            Some((PathBuf::from("/sys/fs/cgroup/memory/sub"), false))
        );
        assert_eq!(memory_cgroup_dir("1:cpu:/\n", mountinfo_v1), None);
    }
}
