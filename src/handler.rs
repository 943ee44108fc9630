//! A static check that the handler's module defines the handler function, so a typo in
//! `handler` fails the build instead of every invocation (Lambda reports
//! `Runtime.HandlerNotFound` only when the function is first called).
//!
//! The module is not imported (that would run user code with the build machine's
//! packages); its top-level names are read from the source text: `def`, `async def`,
//! `class`, assignments and imports, including those inside top-level `if`/`try`/`with`
//! blocks. Anything it cannot see through (`from x import *`, `globals()[...] = ...`,
//! a module-level `__getattr__`) makes it answer "maybe", never a false refusal.

use crate::project::Handler;
use crate::tree::{Node, Tree};
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// The handler's module does not define its function.
#[derive(Debug)]
pub struct NotDefined {
    pub handler: String,
    pub module_file: String,
    /// The names the module does define.
    pub defined: Vec<String>,
}

impl std::fmt::Display for NotDefined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let function = self.handler.rsplit('.').next().unwrap_or_default();
        write!(
            f,
            "handler `{}`: {} defines no `{function}`",
            self.handler, self.module_file
        )
    }
}

impl std::error::Error for NotDefined {}

/// Refuse a handler whose module (in the app sources `app`) visibly lacks the function.
pub fn check(app: &Tree, handler: &Handler) -> Result<()> {
    let module_rel = handler.module.replace('.', "/");
    let file = [
        format!("{module_rel}.py"),
        format!("{module_rel}/__init__.py"),
    ]
    .into_iter()
    .find_map(|p| match app.get(&p) {
        Some(Node::File { source, .. }) => Some((p, source.clone())),
        _ => None,
    });
    // A module the tree holds as a link, or not at all, is the app walker's to report.
    let Some((rel, path)) = file else {
        return Ok(());
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    match defines(&String::from_utf8_lossy(&bytes), &handler.function) {
        Defined::Yes | Defined::Maybe => Ok(()),
        Defined::No(defined) => Err(NotDefined {
            handler: format!("{}.{}", handler.module, handler.function),
            module_file: rel,
            defined,
        }
        .into()),
    }
}

/// What the module's source says about a name.
#[derive(Debug, PartialEq, Eq)]
pub enum Defined {
    Yes,
    /// The module binds names in ways a reading of its text cannot follow.
    Maybe,
    /// The names the module does define (sorted), none of them the one asked for.
    No(Vec<String>),
}

/// Does `source` (a Python module) bind `name` at module level?
pub fn defines(source: &str, name: &str) -> Defined {
    let names = top_level_names(source);
    if names.dynamic {
        return Defined::Maybe;
    }
    if names.bound.contains(name) {
        Defined::Yes
    } else {
        Defined::No(names.bound.into_iter().collect())
    }
}

#[derive(Default)]
struct Names {
    bound: BTreeSet<String>,
    dynamic: bool,
}

/// Logical lines: `\`-continuations and open brackets joined, comments dropped, each with
/// its indentation. Triple-quoted strings are skipped wholesale so a docstring showing
/// `def handler` is not read as code.
fn logical_lines(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut indent = 0;
    let mut depth: i32 = 0;
    let mut in_triple: Option<&str> = None;
    for raw in source.lines() {
        let mut line = raw;
        if let Some(q) = in_triple {
            match line.find(q) {
                Some(i) => {
                    line = &line[i + 3..];
                    in_triple = None;
                }
                None => continue,
            }
        }
        let code = strip_strings_and_comment(line, &mut in_triple);
        if current.is_empty() && depth == 0 {
            if code.trim().is_empty() {
                continue;
            }
            indent = raw.len() - raw.trim_start().len();
        }
        depth += code.matches(['(', '[', '{']).count() as i32;
        depth -= code.matches([')', ']', '}']).count() as i32;
        let continued = code.trim_end().ends_with('\\');
        current.push_str(code.trim_end().trim_end_matches('\\'));
        current.push(' ');
        if depth <= 0 && !continued {
            depth = 0;
            out.push((indent, current.trim().to_string()));
            current.clear();
        }
    }
    out
}

/// The line with string literals blanked and any comment removed; sets `in_triple` when a
/// triple-quoted string opens and does not close on this line.
fn strip_strings_and_comment<'a>(line: &str, in_triple: &mut Option<&'a str>) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if c == '#' {
            break;
        }
        if c == '"' || c == '\'' {
            let triple: &'a str = if c == '"' { "\"\"\"" } else { "'''" };
            if rest.starts_with(triple) {
                match rest[3..].find(triple) {
                    Some(end) => rest = &rest[3 + end + 3..],
                    None => {
                        *in_triple = Some(triple);
                        break;
                    }
                }
            } else {
                let end = rest[1..].find(c).map_or(rest.len(), |e| e + 2);
                rest = &rest[end.min(rest.len())..];
            }
            out.push_str("''");
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn top_level_names(source: &str) -> Names {
    let mut names = Names::default();
    // Open blocks: (indentation, whether names bound inside are the module's). Names
    // bound in a `def` or `class` body are not; in an `if`/`try`/`with`/`for` body they are.
    let mut blocks: Vec<(usize, bool)> = Vec::new();
    for (indent, line) in logical_lines(source) {
        while blocks.last().is_some_and(|(i, _)| *i >= indent) {
            blocks.pop();
        }
        let module_level = blocks.iter().all(|(_, module)| *module);
        if module_level {
            bind(&line, &mut names);
            // `if X: handler = f` binds in its one-line body.
            if is_compound(&line)
                && !line.ends_with(':')
                && let Some((_, body)) = line.split_once(": ")
            {
                bind(body.trim(), &mut names);
            }
        }
        if line.ends_with(':') || line.contains(": ") && is_compound(&line) {
            let opaque = ["def ", "async def ", "class "]
                .iter()
                .any(|k| line.starts_with(k));
            blocks.push((indent, !opaque));
        }
    }
    names
}

fn is_compound(line: &str) -> bool {
    let first = line.split([' ', ':', '(']).next().unwrap_or("");
    matches!(
        first,
        "if" | "elif"
            | "else"
            | "try"
            | "except"
            | "finally"
            | "with"
            | "for"
            | "while"
            | "def"
            | "class"
            | "async"
            | "match"
            | "case"
    )
}

fn identifier(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let id = &s[..end];
    (!id.is_empty() && !id.starts_with(|c: char| c.is_ascii_digit())).then_some(id)
}

/// Record the names one module-level logical line binds.
fn bind(line: &str, names: &mut Names) {
    if line.contains("globals()") || line.starts_with("def __getattr__") {
        names.dynamic = true;
    }
    for keyword in ["def ", "async def ", "class "] {
        if let Some(rest) = line.strip_prefix(keyword) {
            if let Some(id) = identifier(rest.trim_start()) {
                names.bound.insert(id.to_string());
            }
            return;
        }
    }
    if let Some(rest) = line.strip_prefix("from ") {
        let Some((_, imported)) = rest.split_once(" import ") else {
            return;
        };
        let imported = imported
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')');
        if imported.trim() == "*" {
            names.dynamic = true;
        }
        for item in imported.split(',') {
            bind_alias(item, false, names);
        }
        return;
    }
    if let Some(rest) = line.strip_prefix("import ") {
        for item in rest.split(',') {
            bind_alias(item, true, names);
        }
        return;
    }
    bind_assignment(line, names);
}

/// `a as b` binds b; `a` binds a (for `import a.b`, the top package a).
fn bind_alias(item: &str, dotted: bool, names: &mut Names) {
    let item = item.trim();
    let bound = match item.split_once(" as ") {
        Some((_, alias)) => alias.trim(),
        None if dotted => item.split('.').next().unwrap_or(""),
        None => item,
    };
    if let Some(id) = identifier(bound) {
        names.bound.insert(id.to_string());
    }
}

/// `x = …`, `x: T = …`, `x: T`, `a, b = …`, `x = y = …`, `x += …`, and the targets of
/// `for x in …:` / `with … as x:` at module level.
fn bind_assignment(line: &str, names: &mut Names) {
    if let Some(rest) = line.strip_prefix("for ") {
        if let Some((targets, _)) = rest.split_once(" in ") {
            bind_targets(targets, names);
        }
        return;
    }
    if line.starts_with("with ") {
        for part in line.split(" as ").skip(1) {
            bind_targets(part.split([',', ':', ')']).next().unwrap_or(""), names);
        }
        return;
    }
    let mut parts: Vec<&str> = split_top_level_eq(line);
    if parts.len() < 2 {
        // An annotation without a value (`x: int`) binds too.
        if let Some((target, _)) = line.split_once(':')
            && identifier(target.trim()) == Some(target.trim())
            && !is_compound(line)
        {
            names.bound.insert(target.trim().to_string());
        }
        return;
    }
    parts.pop();
    for target in parts {
        let target = target.split(':').next().unwrap_or("");
        bind_targets(
            target.trim_end_matches(['+', '-', '*', '/', '|', '&', '%', '^', '@', '<', '>']),
            names,
        );
    }
}

fn bind_targets(targets: &str, names: &mut Names) {
    for t in targets.split(',') {
        let t = t.trim().trim_matches(['(', ')', '[', ']', '*']).trim();
        if identifier(t) == Some(t) {
            names.bound.insert(t.to_string());
        }
    }
}

/// Split on `=` that are assignments (not `==`, `<=`, `>=`, `!=`, nor inside brackets).
fn split_top_level_eq(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'=' if depth == 0 => {
                let prev = if i > 0 { bytes[i - 1] } else { b' ' };
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                if next != b'=' && !matches!(prev, b'=' | b'<' | b'>' | b'!') {
                    parts.push(&line[start..i]);
                    start = i + 1;
                }
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(source: &str, name: &str) -> Vec<String> {
        match defines(source, name) {
            Defined::No(names) => names,
            other => panic!("expected No for {name}, got {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_module_level_binding_counts() {
        let src = r#"
"""A module.

def nosuchfunc(event, context):  # in the docstring: not code
"""
import json, os.path as osp
from mangum import Mangum
from .routes import (
    router,
    other as renamed,
)
from fastapi import FastAPI

app = FastAPI()
handler = Mangum(app, lifespan="off")
typed: int = 3
a, b = 1, 2
x = y = 0

def plain(event, context):
    inner = 1
    return {"ok": inner == 1}

async def coro(event, context):
    pass

class Klass:
    def method(self):
        pass

if os.environ.get("X"):
    def conditional(event, context):
        pass
else:
    conditional_else = None

try:
    import orjson as fast_json
except ImportError:
    fast_json = None
"#;
        for name in [
            "json",
            "osp",
            "Mangum",
            "router",
            "renamed",
            "FastAPI",
            "app",
            "handler",
            "typed",
            "a",
            "b",
            "x",
            "y",
            "plain",
            "coro",
            "Klass",
            "conditional",
            "conditional_else",
            "fast_json",
        ] {
            assert_eq!(defines(src, name), Defined::Yes, "{name}");
        }
        let names = no(src, "nosuchfunc");
        assert!(names.contains(&"handler".to_string()));
        for local in ["inner", "method", "other", "nosuchfunc"] {
            assert!(!names.contains(&local.to_string()), "{local}");
        }
    }

    #[test]
    fn what_text_cannot_follow_is_a_maybe() {
        assert_eq!(defines("from x import *\n", "handler"), Defined::Maybe);
        assert_eq!(
            defines("globals()['handler'] = make()\n", "handler"),
            Defined::Maybe
        );
        assert_eq!(
            defines("def __getattr__(name):\n    return 1\n", "handler"),
            Defined::Maybe
        );
    }

    #[test]
    fn comparisons_and_keyword_arguments_bind_nothing() {
        let names = no("if a == b:\n    pass\nf(key=1)\nassert x >= 2\n", "handler");
        assert!(names.is_empty(), "{names:?}");
    }
}
