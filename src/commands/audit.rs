//! The audit commands' stdout: what `inspect`, `diff`, `lint` and `verify` returned, as
//! text for people or JSON for programs, and whether the verdict is positive (exit 0) or
//! negative (exit 1: images differ, lint errors, not reproducible).

use crate::audit::diff::Difference;
use crate::audit::inspect::Inspection;
use crate::audit::lint::Severity;
use crate::audit::verify::Verdict;
use crate::audit::{Comparison, LintReport};
use crate::output;
use anyhow::Result;
use serde_json::json;

/// What an audit command prints on stdout, and whether its verdict is positive.
pub struct Rendered {
    pub stdout: String,
    pub ok: bool,
}

fn json_line(value: &impl serde::Serialize) -> Result<String> {
    Ok(serde_json::to_string(value)? + "\n")
}

pub fn inspection(i: &Inspection, as_json: bool) -> Result<Rendered> {
    let stdout = if as_json {
        json_line(i)?
    } else {
        inspection_text(i)
    };
    Ok(Rendered { stdout, ok: true })
}

fn inspection_text(i: &Inspection) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: &str| s.push_str(&format!("{k:<10} {v}\n"));
    line(&mut s, "Image", &format!("{} ({})", i.image, i.digest));
    line(&mut s, "Platform", &i.platform);
    line(&mut s, "Handler", i.handler.as_deref().unwrap_or("-"));
    let base = match (&i.base_name, &i.base_digest) {
        (Some(n), Some(d)) => format!("{n} ({d})"),
        (Some(n), None) => n.clone(),
        _ => "-".into(),
    };
    line(&mut s, "Base", &base);
    line(&mut s, "Created", i.created.as_deref().unwrap_or("-"));
    s.push_str("Layers\n");
    for (n, l) in i.layers.iter().enumerate() {
        let unpacked = l
            .uncompressed_size
            .map(|u| format!(" ({} unpacked)", output::size(u)))
            .unwrap_or_default();
        s.push_str(&format!(
            "  {n:>2}  {}  {:>10}{unpacked}  {}\n",
            l.digest,
            output::size(l.size),
            l.created_by.as_deref().unwrap_or("-")
        ));
        for f in l.files.iter().flatten() {
            s.push_str(&format!("        {f}\n"));
        }
    }
    s
}

pub fn comparison(c: &Comparison, as_json: bool) -> Result<Rendered> {
    let stdout = if as_json {
        json_line(&json!({
            "identical": c.identical,
            "a": c.a,
            "b": c.b,
            "differences": c.differences,
        }))?
    } else if c.identical {
        format!("identical {}\n", c.a)
    } else {
        table(&c.differences)
    };
    Ok(Rendered {
        stdout,
        ok: c.identical,
    })
}

pub fn lint(r: &LintReport, as_json: bool) -> Result<Rendered> {
    let stdout = if as_json {
        json_line(&json!({"ok": r.ok, "findings": r.findings}))?
    } else if r.findings.is_empty() {
        "ok: no findings\n".to_string()
    } else {
        r.findings
            .iter()
            .map(|f| {
                let sev = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                format!("{sev}[{}]: {}\n  fix: {}\n", f.check, f.message, f.fix)
            })
            .collect()
    };
    Ok(Rendered { stdout, ok: r.ok })
}

pub fn verdict(v: &Verdict, as_json: bool) -> Result<Rendered> {
    let stdout = match v {
        Verdict::Reproducible { digest } if as_json => {
            json_line(&json!({"reproducible": true, "digest": digest}))?
        }
        Verdict::Reproducible { digest } => format!("reproducible {digest}\n"),
        Verdict::NotReproducible {
            digest,
            rebuilt,
            explained_by,
            differences,
        } if as_json => json_line(&json!({
            "reproducible": false,
            "digest": digest,
            "rebuilt": rebuilt,
            "explained_by": explained_by,
            "differences": differences,
        }))?,
        Verdict::NotReproducible {
            digest,
            rebuilt,
            explained_by,
            differences,
        } => {
            let mut s = format!("not reproducible: the image is {digest}, the rebuild {rebuilt}\n");
            for e in explained_by {
                s.push_str(&format!("  {e}\n"));
            }
            s.push_str(&table(differences));
            s
        }
    };
    let ok = matches!(v, Verdict::Reproducible { .. });
    Ok(Rendered { stdout, ok })
}

/// The differences as an aligned table, one per line.
pub fn table(diffs: &[Difference]) -> String {
    let width = |f: &dyn Fn(&Difference) -> usize| diffs.iter().map(f).max().unwrap_or(0);
    let (w1, w2, w3) = (
        width(&|d| d.location.len()),
        width(&|d| d.item.chars().count()),
        width(&|d| d.what.len()),
    );
    let mut s = String::new();
    for d in diffs {
        s.push_str(&format!(
            "{:<w1$}  {:<w2$}  {:<w3$}  {} → {}\n",
            d.location, d.item, d.what, d.a, d.b
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn difference(item: &str, what: &str, a: &str, b: &str) -> Difference {
        Difference {
            location: "layer 1".into(),
            item: item.into(),
            what: what.into(),
            a: a.into(),
            b: b.into(),
        }
    }

    #[test]
    fn differences_are_an_aligned_table() {
        let d = [
            difference("m", "mode", "0644", "0755"),
            difference("longer", "content", "x", "y"),
        ];
        let t = table(&d);
        assert!(t.contains("layer 1  m       mode     0644 → 0755"), "{t}");
        assert!(t.contains("layer 1  longer  content  x → y"), "{t}");
    }

    #[test]
    fn a_comparison_fails_only_when_something_differs() {
        let mut c = Comparison {
            identical: true,
            a: "sha256:a".into(),
            b: "sha256:a".into(),
            differences: vec![],
        };
        let r = comparison(&c, false).unwrap();
        assert_eq!((r.stdout.as_str(), r.ok), ("identical sha256:a\n", true));
        c.identical = false;
        c.differences.push(difference("m", "mode", "0644", "0755"));
        let r = comparison(&c, true).unwrap();
        assert!(!r.ok);
        // Keys in serde_json's order, as before the rendering moved here.
        assert!(
            r.stdout
                .starts_with(r#"{"a":"sha256:a","b":"sha256:a","differences":"#)
        );
    }

    #[test]
    fn lint_passes_with_warnings_only() {
        let warning = crate::audit::lint::Finding {
            severity: Severity::Warning,
            check: "size",
            message: "big".into(),
            fix: "smaller".into(),
        };
        let r = lint(
            &LintReport {
                ok: true,
                findings: vec![warning],
            },
            false,
        )
        .unwrap();
        assert_eq!(r.stdout, "warning[size]: big\n  fix: smaller\n");
        assert!(r.ok);
    }
}
