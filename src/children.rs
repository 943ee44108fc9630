//! Child processes that must not outlive us: uv and the bytecode compiler write into the
//! cache and the staging directory, so a build that is killed (SIGKILL, Ctrl-C, SIGTERM)
//! takes them along. This module owns how such children are started, registered and
//! reaped; what they run is the caller's business.
//!
//! Each child runs in its own process group (so one signal reaches whatever it starts,
//! such as a build backend) with `PR_SET_PDEATHSIG` = SIGKILL (so the kernel kills it
//! when we die, even by SIGKILL, which no handler sees). On SIGINT, SIGTERM and SIGHUP a
//! handler kills every registered group before we die of the signal.
//!
//! What this relies on: the kernel sends the death signal when the *thread* that forked
//! the child exits, not the process. Every child here is waited for on the thread that
//! spawned it ([`Running`] is not `Send`, and dropping it kills and reaps the child), so
//! that thread outlives its child unless the whole process dies, which is the case the
//! signal is for. Tokio's blocking threads qualify: one exits only when idle, never in
//! the middle of a closure that is waiting here.

use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// Process groups of live children, read by the signal handler (which may not lock or
/// allocate). 0 is a free slot. More children at once than slots only loses the group
/// kill on a signal for the extra ones: the death signal still applies to them.
static GROUPS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

static HANDLERS: Once = Once::new();

/// A started child, registered until it is reaped.
pub struct Running {
    child: Option<Child>,
    slot: Option<usize>,
    /// Not `Send`: the child must be waited for on the thread that spawned it (see the
    /// module's note on the death signal).
    _thread_bound: PhantomData<*const ()>,
}

/// Start `cmd` in its own process group, to die with this process.
pub fn spawn(cmd: &mut Command) -> io::Result<Running> {
    HANDLERS.call_once(install_handlers);
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid), touching no memory of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // We may have died between the fork and the prctl: then it would never fire.
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent exited while starting"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child leads its own group, so its pid is the group's id.
    let group = child.id() as i32;
    let slot = GROUPS.iter().position(|s| {
        s.compare_exchange(0, group, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    Ok(Running {
        child: Some(child),
        slot,
        _thread_bound: PhantomData,
    })
}

/// Run `cmd` to completion with stdin closed, capturing stdout and stderr, as
/// [`Command::output`] does, in its own group and bound to die with us.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)?.wait_with_output()
}

impl Running {
    /// The child's stdin, when it was piped (once).
    pub fn stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    /// Read stdout and stderr to their end, then reap the child.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        let child = self.child.as_mut().expect("a running child");
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map(|_| buf)
            })
        });
        let mut stdout = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_end(&mut stdout)?;
        }
        let stderr = match stderr {
            Some(reader) => reader
                .join()
                .map_err(|_| io::Error::other("reading a child's stderr panicked"))??,
            None => Vec::new(),
        };
        let mut child = self.child.take().expect("a running child");
        // Wait for the exit without reaping: until it is reaped the pid, and so the group
        // id, cannot be reused, so the signal handler never kills a stranger's group.
        // SAFETY: a plain waitid on our own child, with a zeroed out-parameter.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
        }
        self.release();
        let status = child.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            GROUPS[slot].store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for Running {
    /// A child not waited for (an error on the way) is killed with its group and reaped,
    /// so it never outlives the thread that spawned it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: the child is not reaped yet, so its group id is still ours.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
        self.release();
    }
}

/// On SIGINT, SIGTERM and SIGHUP: kill every child's group, then die of the signal as we
/// would have without the handler (exit status and shell reporting unchanged). A signal
/// someone else already handles (a server's graceful stop) is left to them; our children
/// still die with the process through the death signal.
fn install_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction with zeroed structures, installing a handler that only calls
        // async-signal-safe functions.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(signal, &new, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    for slot in &GROUPS {
        let group = slot.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: kill is async-signal-safe; a registered group is an unreaped child's.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    }
    // SAFETY: signal and raise are async-signal-safe. The signal is blocked while its
    // handler runs, so the raised one is delivered, with the default action, on return.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_captures_both_streams_and_the_status() {
        let out =
            output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    /// Registered while it runs, released once reaped. (Only this child's own slot is
    /// looked at: other tests start children in parallel.)
    #[test]
    fn a_child_is_registered_until_it_is_reaped() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 0"]).stdout(Stdio::piped());
        let running = spawn(&mut cmd).unwrap();
        let slot = running.slot.expect("a free slot");
        let group = running.child.as_ref().unwrap().id() as i32;
        assert_eq!(GROUPS[slot].load(Ordering::SeqCst), group);
        running.wait_with_output().unwrap();
        assert_ne!(GROUPS[slot].load(Ordering::SeqCst), group, "released");
    }

    /// The child leads its own group: a signal to the group reaches what it starts.
    #[test]
    fn a_child_runs_in_its_own_group() {
        let out = output(Command::new("sh").args(["-c", "cat /proc/$$/stat"])).unwrap();
        let stat = String::from_utf8(out.stdout).unwrap();
        let pid: i32 = stat.split(' ').next().unwrap().parse().unwrap();
        // After "(comm)": state, ppid, pgrp.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let pgrp: i32 = fields[2].parse().unwrap();
        assert_eq!(pgrp, pid, "group leader");
        // SAFETY: getpgrp has no preconditions.
        assert_ne!(pgrp, unsafe { libc::getpgrp() }, "not our group");
    }

    /// A child dropped without being waited for is killed and reaped, not left running.
    #[test]
    fn a_child_not_waited_for_is_killed_with_its_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo $!; wait"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut running = spawn(&mut cmd).unwrap();
        let mut line = String::new();
        let stdout = running.child.as_mut().unwrap().stdout.as_mut().unwrap();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let grandchild: i32 = line.trim().parse().unwrap();
        drop(running);
        // The grandchild is ours to wait for only if reparented to us; poll /proc.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(grandchild) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !alive(grandchild),
            "the sleep in the child's group was killed"
        );
    }

    /// Alive and not a zombie waiting for init to reap it.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }
}
