//! `ocilambda diff`: what differs between two images, from the manifest down to single
//! files, like diffoci. Layers with equal digests are skipped; differing layers (paired by
//! position) are streamed and compared per path.

use crate::cache::Cache;
use crate::image::{Image, Remote};
use crate::layer::Kind;
use crate::layer::view::{self, FileInfo};
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// `manifest`, `config` or `layer N`.
    #[serde(rename = "where")]
    pub location: String,
    /// A field (`Cmd`, `annotations.x`) or a file path.
    pub item: String,
    /// `changed`, `added`, `removed`, `content`, `mode`, `uid/gid`, `mtime`, `symlink`, `type`.
    pub what: String,
    pub a: String,
    pub b: String,
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn field(
    out: &mut Vec<Difference>,
    location: &str,
    item: &str,
    a: Option<&Value>,
    b: Option<&Value>,
) {
    if a != b {
        out.push(Difference {
            location: location.into(),
            item: item.into(),
            what: "changed".into(),
            a: show(a),
            b: show(b),
        });
    }
}

fn map_fields(out: &mut Vec<Difference>, location: &str, prefix: &str, a: &Value, b: &Value) {
    let empty = serde_json::Map::new();
    let (am, bm) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = am.keys().chain(bm.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        field(out, location, &format!("{prefix}{k}"), am.get(k), bm.get(k));
    }
}

/// Manifest and config differences (no layer contents).
pub fn metadata(a: &Image, b: &Image) -> Vec<Difference> {
    let mut out = Vec::new();
    for key in ["mediaType", "artifactType"] {
        field(
            &mut out,
            "manifest",
            key,
            a.manifest.get(key),
            b.manifest.get(key),
        );
    }
    map_fields(
        &mut out,
        "manifest",
        "annotations.",
        &a.manifest["annotations"],
        &b.manifest["annotations"],
    );
    for key in ["architecture", "os", "variant", "created"] {
        field(
            &mut out,
            "config",
            key,
            a.config.get(key),
            b.config.get(key),
        );
    }
    for key in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
    ] {
        field(
            &mut out,
            "config",
            key,
            a.config["config"].get(key),
            b.config["config"].get(key),
        );
    }
    map_fields(
        &mut out,
        "config",
        "Labels.",
        &a.config["config"]["Labels"],
        &b.config["config"]["Labels"],
    );
    let list = |v: &Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
    let (ha, hb) = (list(&a.config, "history"), list(&b.config, "history"));
    for i in 0..ha.len().max(hb.len()) {
        field(
            &mut out,
            "config",
            &format!("history[{i}]"),
            ha.get(i),
            hb.get(i),
        );
    }
    let (da, db) = (
        list(&a.config["rootfs"], "diff_ids"),
        list(&b.config["rootfs"], "diff_ids"),
    );
    for i in 0..da.len().max(db.len()) {
        field(
            &mut out,
            "config",
            &format!("rootfs.diff_ids[{i}]"),
            da.get(i),
            db.get(i),
        );
    }
    out
}

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

/// Per-file differences between two layers' contents.
pub fn files(
    location: &str,
    a: &[(String, FileInfo)],
    b: &[(String, FileInfo)],
) -> Vec<Difference> {
    // Later entries of one path win, as when extracting.
    let ma: BTreeMap<String, FileInfo> = a.iter().cloned().collect();
    let mb: BTreeMap<String, FileInfo> = b.iter().cloned().collect();
    let mut out = Vec::new();
    let mut push = |item: &str, what: &str, x: String, y: String| {
        out.push(Difference {
            location: location.into(),
            item: item.into(),
            what: what.into(),
            a: x,
            b: y,
        });
    };
    let mut paths: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        match (ma.get(path), mb.get(path)) {
            (Some(_), None) => push(path, "removed", "present".into(), "-".into()),
            (None, Some(_)) => push(path, "added", "-".into(), "present".into()),
            (Some(x), Some(y)) => {
                if x.kind != y.kind {
                    push(
                        path,
                        "type",
                        format!("{:?}", x.kind),
                        format!("{:?}", y.kind),
                    );
                    continue;
                }
                if x.sha256 != y.sha256 {
                    push(
                        path,
                        "content",
                        x.sha256.clone().unwrap_or_default(),
                        y.sha256.clone().unwrap_or_default(),
                    );
                }
                if x.mode != y.mode {
                    push(path, "mode", mode(x.mode), mode(y.mode));
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    push(
                        path,
                        "uid/gid",
                        format!("{}:{}", x.uid, x.gid),
                        format!("{}:{}", y.uid, y.gid),
                    );
                }
                if x.mtime != y.mtime {
                    push(path, "mtime", x.mtime.to_string(), y.mtime.to_string());
                }
                if x.link != y.link && matches!(x.kind, Kind::Symlink | Kind::Hardlink) {
                    push(
                        path,
                        "symlink",
                        x.link.clone().unwrap_or_default(),
                        y.link.clone().unwrap_or_default(),
                    );
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// A layer's entries by cleaned path, whiteouts under their own names.
fn entries(blob: &std::path::Path, media_type: &str) -> Result<Vec<(String, FileInfo)>> {
    let read = view::read_layer(
        blob,
        media_type,
        &mut crate::layer::Budget::unlimited(),
        crate::layer::Strictness::Refuse,
    )?;
    Ok(read
        .entries
        .into_iter()
        .filter(|e| !matches!(e.op, crate::layer::Op::Refused(_)))
        .map(|e| (e.path, e.info))
        .collect())
}

/// Everything that differs between `a` and `b`; empty when they are the same image.
pub async fn diff(a: &Image, b: &Image, remote: &Remote, cache: &Cache) -> Result<Vec<Difference>> {
    if a.manifest_digest == b.manifest_digest {
        return Ok(Vec::new());
    }
    let mut out = metadata(a, b);
    let (la, lb) = (a.layers(), b.layers());
    for i in 0..la.len().max(lb.len()) {
        let location = format!("layer {i}");
        match (la.get(i), lb.get(i)) {
            (Some(x), Some(y)) if x.1 == y.1 => {}
            (Some(x), Some(y)) => {
                let pa = a.blob(&x.1, remote, cache).await?.path;
                let pb = b.blob(&y.1, remote, cache).await?.path;
                let ea = entries(&pa, &x.0)?;
                let eb = entries(&pb, &y.0)?;
                let found = files(&location, &ea, &eb);
                if found.is_empty() {
                    // Same files, different bytes: compression or entry order.
                    out.push(Difference {
                        location,
                        item: "(layer blob)".into(),
                        what: "content".into(),
                        a: x.1.clone(),
                        b: y.1.clone(),
                    });
                } else {
                    out.extend(found);
                }
            }
            (Some(x), None) => out.push(Difference {
                location,
                item: "(layer)".into(),
                what: "removed".into(),
                a: x.1.clone(),
                b: "-".into(),
            }),
            (None, Some(y)) => out.push(Difference {
                location,
                item: "(layer)".into(),
                what: "added".into(),
                a: "-".into(),
                b: y.1.clone(),
            }),
            (None, None) => {}
        }
    }
    if out.is_empty() {
        // Same content, different manifest bytes (e.g. key order or whitespace).
        out.push(Difference {
            location: "manifest".into(),
            item: "(bytes)".into(),
            what: "content".into(),
            a: a.manifest_digest.clone(),
            b: b.manifest_digest.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sha: &str, mode: u32) -> FileInfo {
        FileInfo {
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 1,
            sha256: Some(sha.into()),
            link: None,
            head: vec![],
            elf: None,
            record: None,
        }
    }

    #[test]
    fn file_level_differences() {
        let a = vec![
            ("x".into(), f("1", 0o644)),
            ("gone".into(), f("1", 0o644)),
            ("m".into(), f("1", 0o644)),
        ];
        let b = vec![
            ("x".into(), f("2", 0o644)),
            ("new".into(), f("1", 0o644)),
            ("m".into(), f("1", 0o755)),
        ];
        let d = files("layer 1", &a, &b);
        let got: Vec<(&str, &str)> = d
            .iter()
            .map(|d| (d.item.as_str(), d.what.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("gone", "removed"),
                ("m", "mode"),
                ("new", "added"),
                ("x", "content")
            ]
        );
        assert_eq!(d[1].a, "0644");
        assert_eq!(d[1].b, "0755");
    }
}
