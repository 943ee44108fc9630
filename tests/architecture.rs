//! The module layering of ARCHITECTURE.md, checked against the code: every `crate::X` a
//! library module uses (outside its tests and comments) must be of a lower layer. An
//! import that points up or sideways is how cycles start.

use std::collections::BTreeMap;
use std::path::Path;

/// Layer of each top-level module, bottom first (see ARCHITECTURE.md).
const LAYERS: &[(u32, &[&str])] = &[
    (
        0,
        &[
            "layer", "tree", "digest", "fs", "error", "output", "children", "report",
        ],
    ),
    (1, &["oci"]),
    (2, &["target"]),
    (3, &["config", "layers", "provenance"]),
    (4, &["project", "cache", "aws"]),
    (5, &["stage", "registry", "handler"]),
    (6, &["image", "plan"]),
    (7, &["base"]),
    (8, &["assemble"]),
    (9, &["sink", "sbom"]),
    (10, &["build", "package", "push", "login", "invoke"]),
    (11, &["audit", "deploy"]),
    (12, &["diagnostics"]),
    (13, &["commands"]),
];

fn layer_of(module: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(_, mods)| mods.contains(&module))
        .map(|(n, _)| *n)
}

/// The code of a file without its `#[cfg(test)]` module and comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn imports(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = BTreeMap::new();
    let mut seen = 0;
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            panic!("module `{module}` is in no layer of tests/architecture.rs and ARCHITECTURE.md");
        };
        seen += 1;
        for dep in imports(&code(&entry)) {
            if dep == module {
                continue;
            }
            let Some(theirs) = layer_of(&dep) else {
                panic!("{} imports unknown module `{dep}`", rel.display());
            };
            if theirs >= own {
                violations
                    .entry(format!("{} (layer {own})", rel.display()))
                    .or_insert_with(Vec::new)
                    .push(format!("{dep} (layer {theirs})"));
            }
        }
    }
    assert!(seen > 20, "read the library's modules");
    assert!(
        violations.is_empty(),
        "imports that do not point down the layers:\n{violations:#?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
