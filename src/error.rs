//! Error values that carry a user-facing hint.
//!
//! Everything below `main` returns `anyhow::Error` with context added at each level; a
//! [`Hint`] anywhere in the chain supplies the `hint:` line that `main` prints after the
//! one-line `error:`. Exit codes are decided in `main`, never here.

use std::fmt;

/// An error whose message is complete on its own, plus what the user should do about it.
#[derive(Debug)]
pub struct Hint {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hint {}

/// Build an `anyhow::Error` with a hint line.
pub fn hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hint {
        message: message.into(),
        hint: hint.into(),
    })
}

/// The hint attached anywhere in an error chain, if any.
pub fn find_hint(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Hint>())
        .map(|h| h.hint.as_str())
}

/// The whole chain on one line: `outer: inner: root cause`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // reqwest and io errors sometimes repeat their source in their own message.
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text.replace('\n', " "));
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn hint_is_found_below_context() {
        let err = Err::<(), _>(hint("no uv.lock found", "run `uv lock`"))
            .context("building /tmp/p")
            .unwrap_err();
        assert_eq!(find_hint(&err), Some("run `uv lock`"));
        assert_eq!(one_line(&err), "building /tmp/p: no uv.lock found");
    }
}
