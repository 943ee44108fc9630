//! What library steps tell whoever runs them, as values: a step's summary line, a warning,
//! a transfer's progress. The command layer owns the [`Reporter`] and decides what reaches
//! the terminal (`--quiet`, colours, progress bars); nothing here writes to stderr, so the
//! library stays usable from tests and from other programs, and no setting is global.

use std::path::PathBuf;
use std::sync::Arc;

/// Fed the bytes done so far of one transfer.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// One thing a step has to say. Wording that names a flag or a subcommand is the command
/// layer's: those events carry data, not text.
#[derive(Debug)]
pub enum Event {
    /// A step finished (or a line of a running one), e.g. `Built deps layer (14.2 MiB,
    /// 1,932 files) in 310ms`. Progress: `--quiet` hides it.
    Step(String),
    /// Something the user should know even under `--quiet`.
    Warning(String),
    /// A transfer that had a [`Reporter::progress`] callback is over; `summary` says how.
    Transferred { key: String, summary: String },
    /// The base was named by a tag: the same build may use another base tomorrow.
    UnpinnedBase {
        registry: String,
        repository: String,
        digest: String,
    },
    /// A memory limit was asked for but cannot be enforced on this machine.
    MemoryNotEnforced { memory_mb: u32, why: String },
    /// A zip over the size Lambda accepts in a direct upload.
    OverDirectUpload { path: PathBuf, size: u64 },
    /// A request of a long-running step (invoke's server) failed; the step goes on.
    RequestFailed(anyhow::Error),
    /// A line of the invoked function's log stream (what it wrote, and the START, END and
    /// REPORT lines, in order), as Lambda's log has it. Shown under `--quiet` too: it is
    /// the function's output, not progress.
    FunctionLog(Vec<u8>),
}

/// Receives a step's events, from any thread.
pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);

    /// A transfer of `total` bytes, called `label`, is starting. The callback gets the
    /// bytes done so far; [`Event::Transferred`] with the same `key` ends it.
    fn progress(&self, _key: &str, _label: &str, _total: u64) -> Progress {
        Arc::new(|_| {})
    }

    /// Whether [`Event::Step`] lines are shown: a step may skip preparing lines no one
    /// will read (invoke writes its own into the function's log stream).
    fn shows_steps(&self) -> bool {
        true
    }
}

/// For the requests and plans that hold one.
impl std::fmt::Debug for dyn Reporter + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

/// Drops every event: for callers that want only the returned values.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event) {}
    fn shows_steps(&self) -> bool {
        false
    }
}

/// Keeps every event, for tests that assert on what a step reported.
#[cfg(test)]
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);

#[cfg(test)]
impl Reporter for Recorder {
    fn event(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}
