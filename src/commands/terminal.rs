//! Progress and warnings on stderr, as uv prints them: a summary line per finished step,
//! `warning:`/`hint:` prefixes, and with [`Terminal::with_bars`] a progress bar per
//! transfer on a terminal. `--quiet` hides steps and bars, never warnings.
//!
//! `error:`/`warning:`/`hint:` prefixes are coloured only when stderr is a terminal and
//! `NO_COLOR` is unset, so logs in CI stay plain text.

use crate::output;
use crate::report::{Event, Progress, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn prefixed(prefix: &str, ansi: &str, message: &str) {
    let mut err = std::io::stderr().lock();
    if color() {
        let _ = writeln!(
            err,
            "\x1b[1;{ansi}m{prefix}\x1b[0m\x1b[1m:\x1b[0m {message}"
        );
    } else {
        let _ = writeln!(err, "{prefix}: {message}");
    }
}

pub fn error(message: &str) {
    prefixed("error", "31", message);
}

/// Printed under `--quiet` too: quiet hides progress, not what the user should know.
pub fn warning(message: &str) {
    prefixed("warning", "33", message);
}

pub fn hint(message: &str) {
    prefixed("hint", "36", message);
}

/// The reporter a command owns for its run.
pub struct Terminal {
    quiet: bool,
    /// Drawn only on a terminal, and only by commands with transfers worth a bar (push).
    /// Bars are plain (no colour), so `NO_COLOR` has nothing to switch off.
    bars: Option<MultiProgress>,
    active: Arc<Mutex<HashMap<String, ProgressBar>>>,
}

impl Terminal {
    /// Lines only.
    pub fn new(quiet: bool) -> Arc<Terminal> {
        Arc::new(Terminal {
            quiet,
            bars: None,
            active: Arc::default(),
        })
    }

    /// Lines, and a bar per transfer when stderr is a terminal and not `--quiet`.
    pub fn with_bars(quiet: bool) -> Arc<Terminal> {
        let tty = !quiet && std::io::stderr().is_terminal();
        Arc::new(Terminal {
            quiet,
            bars: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            active: Arc::default(),
        })
    }

    /// Bars still drawn (after an error) go before the error is printed.
    pub fn clear(&self) {
        if let Some(multi) = &self.bars {
            let _ = multi.clear();
        }
    }

    /// A step line, above the bars when there are any.
    fn line(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(multi) => {
                let _ = multi.println(message);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{message}");
            }
        }
    }

    /// A prefixed line (`warning:`, `hint:`) that must not be drawn over by a bar.
    fn above(&self, print: impl FnOnce()) {
        match &self.bars {
            Some(multi) => multi.suspend(print),
            None => print(),
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Reporter for Terminal {
    fn event(&self, event: Event) {
        match event {
            Event::Step(line) => self.line(&line),
            Event::FunctionLog(line) => self.above(|| {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&line);
                let _ = err.flush();
            }),
            Event::Warning(message) => self.above(|| warning(&message)),
            Event::Transferred { key, summary } => {
                if let Some(bar) = self.active.lock().unwrap().remove(&key) {
                    bar.finish_and_clear();
                    if let Some(multi) = &self.bars {
                        multi.remove(&bar);
                    }
                }
                self.line(&summary);
            }
            // Advice, not a warning: --quiet drops it with the line it follows.
            Event::UnpinnedBase {
                registry,
                repository,
                digest,
            } if !self.quiet => self.above(|| {
                hint(&format!(
                    "pin the base for reproducible rebuilds: --base {registry}/{repository}@{digest}"
                ))
            }),
            Event::UnpinnedBase { .. } => {}
            Event::MemoryNotEnforced { memory_mb, why } => self.above(|| {
                warning(&format!(
                    "--memory {memory_mb} is not enforced ({why}); it only sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
                ))
            }),
            Event::OverDirectUpload { path, size } => self.above(|| {
                warning(&format!(
                    "{} is {}, over the 50 MiB limit for direct uploads: upload it to S3 and deploy it from there (--s3-bucket/--s3-key)",
                    path.display(),
                    output::size(size)
                ))
            }),
            Event::RequestFailed(err) => self.above(|| {
                error(&crate::error::one_line(&err));
                hint(&crate::diagnostics::hint_or_fallback(&err));
            }),
        }
    }

    fn progress(&self, key: &str, label: &str, total: u64) -> Progress {
        let Some(multi) = self.bars.clone() else {
            return Arc::new(|_| {});
        };
        let active = self.active.clone();
        let (key, label) = (key.to_string(), label.to_string());
        // The bar appears with the first byte sent: blobs the registry has never get one.
        Arc::new(move |sent| {
            let mut active = active.lock().unwrap();
            let bar = active.entry(key.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:<28} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
                    )
                    .expect("a valid progress template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(label.clone());
                bar
            });
            bar.set_position(sent);
        })
    }

    fn shows_steps(&self) -> bool {
        !self.quiet
    }
}
