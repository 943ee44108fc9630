//! Terminal output in uv's style: results on stdout, everything else on stderr.
//!
//! `error:`/`warning:`/`hint:` prefixes are coloured only when stderr is a terminal and
//! `NO_COLOR` is unset, so logs in CI stay plain text. The printers are the command
//! layer's ([`crate::commands`], `main`); library steps report through
//! [`crate::report::Reporter`] and use only the pure formatters (`size`, `duration`, …).

use std::io::{IsTerminal, Write};
use std::time::Duration;

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

/// `883ms` below a second, `1.42s` above, as uv prints durations.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// Binary units with one decimal: `14.2 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Thousands separators: `1,932`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `sha256:3f2a9c1b…` for summaries; full digests go to stdout and JSON only.
pub fn short_digest(digest: &str) -> String {
    let cut = digest.find(':').map_or(0, |i| i + 1) + 12;
    if digest.len() > cut {
        format!("{}…", &digest[..cut])
    } else {
        digest.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_uv() {
        assert_eq!(duration(Duration::from_millis(883)), "883ms");
        assert_eq!(duration(Duration::from_millis(1420)), "1.42s");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(14_889_779), "14.2 MiB");
        assert_eq!(count(1932), "1,932");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(
            short_digest("sha256:3f2a9c1b77aa00112233"),
            "sha256:3f2a9c1b77aa…"
        );
    }
}
