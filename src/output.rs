//! Pure formatters for what the user reads, in uv's style: sizes, durations, counts,
//! short digests. Printing is the command layer's ([`crate::commands::terminal`]);
//! library steps report through [`crate::report::Reporter`].

use std::time::Duration;

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
