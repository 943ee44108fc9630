//! `lint`: what makes Lambda reject an image, start it slowly, or what `invoke` refuses or
//! drops. The image is read once into a [`Subject`] (manifest, config, every layer through
//! the one layer reader, the flattened view); the checks are small functions over it, one
//! row each in [`CHECKS`] with an id, a severity and a one-line fix.

use crate::cache::Cache;
use crate::image::{Image, Index, Opened, Remote};
use crate::layer::view::{FileInfo, LayerRead, View};
use crate::layer::{Budget, Kind, LayerError, Op, Refusal, Strictness};
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: &'static str,
    pub message: String,
    pub fix: String,
}

/// One check: a function from the subject to its findings' messages (none: it passes).
/// Some ids have two rows (two situations with different fixes), as they always had.
pub struct Check {
    pub id: &'static str,
    pub severity: Severity,
    pub fix: &'static str,
    pub run: fn(&Subject) -> Vec<String>,
}

/// What lint knows of one layer.
pub enum LayerState {
    Read(LayerRead),
    /// Not a tar or tar+gzip media type: not read.
    Unsupported,
    /// Labelled gzip, but the bytes are not gzip.
    NotGzip,
    /// The bytes could not be read as a layer (corrupt gzip or tar).
    Unreadable(String),
    /// Not read: the layers below already exceeded Lambda's uncompressed limit.
    NotReached,
    /// Not read: a base layer, and the check reads the image's own layers only ([`Reach`]).
    Base,
}

/// Which layer blobs lint reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every layer, fetched when neither the layout nor the cache holds it.
    All,
    /// Only these layers (by digest): `push` checks the layers an image adds to its base,
    /// which are on this machine, without downloading the base's; the base's are as its
    /// publisher made them, and `lint IMAGE` reads them.
    Only(std::collections::BTreeSet<String>),
}

pub struct LayerFacts {
    pub digest: String,
    pub media_type: String,
    pub state: LayerState,
}

/// Everything the checks look at.
pub struct Subject {
    pub manifest: Value,
    pub manifest_len: usize,
    pub config: Value,
    pub layers: Vec<LayerFacts>,
    /// Uncompressed bytes read so far, against Lambda's limit.
    pub budget: Budget,
    /// Reading stopped at Lambda's limit.
    pub over_limit: bool,
    /// The flattened filesystem of the layers that could be read.
    pub view: View,
    /// The source of the handler's module, when it is a `.py` file of the image.
    pub handler_source: Option<String>,
}

impl Subject {
    /// Start with the manifest and config; add layers in order with [`Subject::add_layer`].
    pub fn new(manifest: Value, manifest_len: usize, config: Value) -> Subject {
        Subject {
            manifest,
            manifest_len,
            config,
            layers: Vec::new(),
            budget: Budget::lambda(),
            over_limit: false,
            view: View::new(),
            handler_source: None,
        }
    }

    /// Read the next layer (bottom first) from its blob's bytes.
    pub fn add_layer<R: BufRead>(&mut self, digest: &str, media_type: &str, mut blob: R) {
        let state = if self.over_limit {
            LayerState::NotReached
        } else if crate::layer::Compression::of(media_type).is_err() {
            LayerState::Unsupported
        } else if crate::oci::media::is_gzip_layer(media_type)
            && !blob.fill_buf().is_ok_and(|b| b.starts_with(&[0x1f, 0x8b]))
        {
            LayerState::NotGzip
        } else {
            self.read(media_type, blob)
        };
        if let LayerState::Read(read) = &state {
            self.view.apply(read);
        }
        self.layers.push(LayerFacts {
            digest: digest.to_string(),
            media_type: media_type.to_string(),
            state,
        });
    }

    fn read<R: BufRead>(&mut self, media_type: &str, blob: R) -> LayerState {
        // One budget for all layers: Lambda's limit is on the whole image.
        let read = crate::layer::view::read_layer_from(
            blob,
            media_type,
            &mut self.budget,
            Strictness::Report,
        );
        match read {
            Ok(read) => LayerState::Read(read),
            Err(e) if matches!(e.downcast_ref(), Some(LayerError::TooLarge { .. })) => {
                self.over_limit = true;
                LayerState::NotReached
            }
            Err(e) => LayerState::Unreadable(format!("{e:#}")),
        }
    }

    /// Every layer was read: a path missing from the view is missing from the image.
    fn complete(&self) -> bool {
        self.layers
            .iter()
            .all(|l| matches!(l.state, LayerState::Read(_)))
    }

    /// The layers that were read, with their index.
    fn read_layers(&self) -> impl Iterator<Item = (usize, &LayerRead)> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.state {
                LayerState::Read(r) => Some((i, r)),
                _ => None,
            })
    }
}

/// The one check of an index: Lambda takes a single image manifest.
pub const SINGLE_PLATFORM: Check = Check {
    id: "single-platform",
    severity: Severity::Error,
    fix: "push one platform's manifest (ocilambda never writes an index; disable provenance attestations in docker buildx)",
    run: |_| Vec::new(),
};

/// Every check of an image, in the order findings are reported.
pub static CHECKS: &[Check] = &[
    Check {
        id: "media-types",
        severity: Severity::Error,
        fix: "use an OCI or Docker v2 schema 2 image manifest",
        run: manifest_media_type,
    },
    Check {
        id: "media-types",
        severity: Severity::Error,
        fix: "use an OCI or Docker image config",
        run: config_media_type,
    },
    Check {
        id: "manifest-size",
        severity: Severity::Warning,
        fix: "use fewer layers (a base image with fewer layers, or a flattened one)",
        run: manifest_size,
    },
    Check {
        id: "architecture",
        severity: Severity::Error,
        fix: "build for linux x86_64 or arm64",
        run: architecture,
    },
    Check {
        id: "entrypoint",
        severity: Severity::Error,
        fix: "build on a Lambda base image (public.ecr.aws/lambda/python), whose entrypoint runs the runtime interface client",
        run: entrypoint,
    },
    Check {
        id: "diff-ids",
        severity: Severity::Error,
        fix: "rebuild the image; its config does not match its layers",
        run: diff_id_count,
    },
    Check {
        id: "history",
        severity: Severity::Warning,
        fix: "rebuild with a tool that records one history entry per layer",
        run: history,
    },
    Check {
        id: "compression",
        severity: Severity::Error,
        fix: "recompress the layer with gzip (ocilambda writes gzip layers)",
        run: compression,
    },
    Check {
        id: "layer-format",
        severity: Severity::Error,
        fix: "rebuild or re-push the image; the layer blob is damaged",
        run: layer_format,
    },
    Check {
        id: "diff-ids",
        severity: Severity::Error,
        fix: "rebuild the image; its config does not match its layers",
        run: diff_id_values,
    },
    Check {
        id: "size",
        severity: Severity::Error,
        fix: "move data out of the image (S3, EFS)",
        run: size,
    },
    Check {
        id: "reserved-env",
        severity: Severity::Warning,
        fix: "remove them from the image's Env: Lambda sets these variables itself (set your own under other names)",
        run: reserved_env,
    },
    Check {
        id: "handler",
        severity: Severity::Error,
        fix: "set CMD to MODULE.FUNCTION (ocilambda's `handler` setting)",
        run: handler_cmd,
    },
    Check {
        id: "handler",
        severity: Severity::Error,
        fix: "check the handler (CMD) and that the app code is in the image",
        run: handler_module,
    },
    Check {
        id: "permissions",
        severity: Severity::Error,
        fix: "make them readable (chmod o+r, o+rx for directories); ocilambda writes 0644/0755",
        run: permissions,
    },
    Check {
        id: "bytecode-version",
        severity: Severity::Error,
        fix: "compile bytecode with an interpreter of the image's version (as ocilambda does)",
        run: bytecode_version,
    },
    Check {
        id: "handler-function",
        severity: Severity::Error,
        fix: "point CMD at a function the module defines (MODULE.FUNCTION)",
        run: handler_function,
    },
    Check {
        id: "python-version",
        severity: Severity::Error,
        fix: "build for the base's Python (its tag python:X.Y), or use the base of the Python you target",
        run: python_version,
    },
    Check {
        id: "bytecode-hash",
        severity: Severity::Warning,
        fix: "compile unchecked-hash .pyc (as ocilambda does)",
        run: bytecode_hash,
    },
    Check {
        id: "path-escape",
        severity: Severity::Error,
        fix: "rebuild the layer with paths inside the image root; an unpacker must refuse `..` entries",
        run: path_escape,
    },
    Check {
        id: "whiteout-name",
        severity: Severity::Error,
        fix: "rebuild the layer; a whiteout of `.` or `..` would delete the whole root, so it is refused",
        run: whiteout_name,
    },
    Check {
        id: "hardlink",
        severity: Severity::Error,
        fix: "write a full copy of the file instead of a hard link (as ocilambda does)",
        run: hardlink,
    },
    Check {
        id: "parent-directory",
        severity: Severity::Error,
        fix: "write an entry for every parent directory into the same layer, before what it holds (as ocilambda does)",
        run: parent_directory,
    },
    Check {
        id: "elf-architecture",
        severity: Severity::Error,
        fix: "install wheels and binaries for the image's architecture (ocilambda selects them by its `arch` setting)",
        run: elf_architecture,
    },
    Check {
        id: "glibc",
        severity: Severity::Error,
        fix: "install a wheel built for the runtime's glibc (manylinux2014 for Python 3.10-3.11, up to manylinux_2_34 for 3.12+, as ocilambda selects), or target Python 3.12+",
        run: glibc,
    },
    Check {
        id: "pth-file",
        severity: Severity::Warning,
        fix: "run its setup from your code, or drop the package that needs it: Python reads .pth files only in site directories, and /var/task and /opt/python are not",
        run: pth_file,
    },
    Check {
        id: "symlink-escape",
        severity: Severity::Warning,
        fix: "write files at their real path, not through a symlink: a naive unpacker follows it onto the host",
        run: symlink_escape,
    },
    Check {
        id: "device",
        severity: Severity::Warning,
        fix: "remove device nodes and FIFOs from the image; the runtime provides /dev and unpacking skips them",
        run: device,
    },
    Check {
        id: "setuid",
        severity: Severity::Warning,
        fix: "drop the setuid/setgid bits (chmod u-s,g-s); functions run unprivileged and local unpacking drops them",
        run: setuid,
    },
];

/// AWS's figure for the manifest, given "for optimal performance" (Lambda is not documented
/// to refuse a larger one).
fn manifest_size(s: &Subject) -> Vec<String> {
    let max = crate::assemble::MAX_MANIFEST_BYTES;
    when(
        s.manifest_len > max,
        format!(
            "manifest is {} bytes, over the {max} AWS recommends for Lambda",
            s.manifest_len
        ),
    )
}

fn when(cond: bool, message: String) -> Vec<String> {
    if cond { vec![message] } else { Vec::new() }
}

/// Up to three examples and how many more, for findings that collect paths.
fn some(v: &[String]) -> String {
    let mut s = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > 3 {
        s.push_str(&format!(" and {} more", v.len() - 3));
    }
    s
}

/// One finding listing `paths`, if any.
fn listing(paths: Vec<String>, what: impl FnOnce(usize, String) -> String) -> Vec<String> {
    when(!paths.is_empty(), what(paths.len(), some(&paths)))
}

/// Run every check on `subject`.
pub fn run(subject: &Subject) -> Vec<Finding> {
    CHECKS
        .iter()
        .flat_map(|check| {
            (check.run)(subject).into_iter().map(|message| Finding {
                severity: check.severity,
                check: check.id,
                message,
                fix: check.fix.to_string(),
            })
        })
        .collect()
}

pub async fn lint(opened: Opened, remote: &Remote, cache: &Cache) -> Result<Vec<Finding>> {
    lint_reaching(opened, remote, cache, Reach::All).await
}

/// [`lint`], reading the layers `reach` allows.
pub async fn lint_reaching(
    opened: Opened,
    remote: &Remote,
    cache: &Cache,
    reach: Reach,
) -> Result<Vec<Finding>> {
    let image: Image = match opened {
        Opened::Index(Index { label, .. }) => {
            return Ok(vec![Finding {
                severity: SINGLE_PLATFORM.severity,
                check: SINGLE_PLATFORM.id,
                message: format!(
                    "{label} is an image index; Lambda accepts only a single-platform image manifest"
                ),
                fix: SINGLE_PLATFORM.fix.to_string(),
            }]);
        }
        Opened::Image(i) => *i,
    };
    let mut subject = Subject::new(
        image.manifest.clone(),
        image.manifest_bytes.len(),
        image.config.clone(),
    );
    let mut read = Vec::new();
    for (media_type, digest, _) in image.layers() {
        if crate::layer::Compression::of(&media_type).is_err() || subject.over_limit {
            // Not readable, or not reached: no need to fetch the blob.
            subject.add_layer(&digest, &media_type, std::io::empty());
            continue;
        }
        if let Reach::Only(own) = &reach
            && !own.contains(&digest)
        {
            subject.layers.push(LayerFacts {
                digest,
                media_type,
                state: LayerState::Base,
            });
            continue;
        }
        let blob = image.blob(&digest, remote, cache).await?;
        let file = std::fs::File::open(&blob.path)?;
        let reader = std::io::BufReader::with_capacity(256 * 1024, file);
        subject.add_layer(&digest, &media_type, reader);
        read.push((media_type, blob.path));
    }
    if subject.complete() {
        subject.handler_source = handler_source(&subject, &read);
    }
    Ok(run(&subject))
}

/// The handler module's text, from the topmost layer that holds it (the app layer, for
/// images ocilambda builds: one small layer read again). Capped: a module is source code.
fn handler_source(s: &Subject, layers: &[(String, std::path::PathBuf)]) -> Option<String> {
    const MAX: u64 = 4 << 20;
    let module = handler_module_file(s)?;
    for (media_type, path) in layers.iter().rev() {
        let mut found = None;
        let _ = crate::layer::read_file(
            path,
            media_type,
            &mut crate::layer::Budget::unlimited(),
            |entry| {
                if matches!(&entry.op, crate::layer::Op::Put(p) if p.to_str() == Some(module.as_str()))
                    && entry.size <= MAX
                {
                    let mut text = String::new();
                    if std::io::Read::read_to_string(entry.content, &mut text).is_ok() {
                        found = Some(text);
                    }
                }
                Ok(())
            },
        );
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The `.py` file of the handler's module in the image, if the image has it as a file.
fn handler_module_file(s: &Subject) -> Option<String> {
    let handler = s.config["config"]["Cmd"][0].as_str()?;
    let (module, _) = handler.rsplit_once('.')?;
    let rel = module.replace('.', "/");
    [
        format!("var/task/{rel}.py"),
        format!("var/task/{rel}/__init__.py"),
    ]
    .into_iter()
    .find(|p| s.view.files.get(p).is_some_and(|i| i.kind == Kind::File))
}

/// The handler's module defines its function (a static reading, as `build` does).
fn handler_function(s: &Subject) -> Vec<String> {
    let (Some(source), Some(handler)) = (&s.handler_source, s.config["config"]["Cmd"][0].as_str())
    else {
        return Vec::new();
    };
    let Some((_, function)) = handler.rsplit_once('.') else {
        return Vec::new();
    };
    match crate::handler::defines(source, function) {
        crate::handler::Defined::No(names) => vec![format!(
            "the handler module of `{handler}` defines no `{function}` (it defines: {})",
            some(&names)
        )],
        _ => Vec::new(),
    }
}

fn manifest_media_type(s: &Subject) -> Vec<String> {
    let mt = s.manifest["mediaType"].as_str().unwrap_or("");
    when(
        !crate::oci::media::is_image_manifest(mt),
        format!("manifest media type `{mt}` is not supported by Lambda"),
    )
}

fn config_media_type(s: &Subject) -> Vec<String> {
    let mt = s.manifest["config"]["mediaType"].as_str().unwrap_or("");
    when(
        !crate::oci::media::is_config(mt),
        format!("config media type `{mt}` is not supported by Lambda"),
    )
}

fn architecture(s: &Subject) -> Vec<String> {
    let arch = s.config["architecture"].as_str().unwrap_or("");
    when(
        crate::oci::Arch::from_oci(arch).is_none() || s.config["os"] != "linux",
        format!(
            "platform {}/{arch} is not one Lambda runs",
            s.config["os"].as_str().unwrap_or("?")
        ),
    )
}

fn entrypoint(s: &Subject) -> Vec<String> {
    let ok = s.config["config"]["Entrypoint"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    when(!ok, "the image has no ENTRYPOINT".into())
}

fn diff_ids(s: &Subject) -> Vec<Value> {
    s.config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn diff_id_count(s: &Subject) -> Vec<String> {
    let (ids, layers) = (diff_ids(s).len(), s.layers.len());
    when(
        ids != layers,
        format!("config lists {ids} diff_ids for {layers} layers"),
    )
}

/// Each layer read unpacks to the diff_id the config gives it.
fn diff_id_values(s: &Subject) -> Vec<String> {
    let ids = diff_ids(s);
    s.read_layers()
        .filter_map(|(i, read)| {
            let want = ids.get(i)?.as_str()?;
            let got = &read.summary.diff_id;
            (want != got).then(|| {
                format!(
                    "layer {i} ({}) unpacks to {got} but the config says {want}",
                    s.layers[i].digest
                )
            })
        })
        .collect()
}

fn history(s: &Subject) -> Vec<String> {
    let entries = s.config["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| e["empty_layer"] != true).count())
        .unwrap_or(0);
    let layers = s.layers.len();
    when(
        entries != layers,
        format!("config history has {entries} layer entries for {layers} layers"),
    )
}

/// Lambda takes gzip layers only, and the bytes must be what the label says.
fn compression(s: &Subject) -> Vec<String> {
    let mut out = Vec::new();
    for (i, l) in s.layers.iter().enumerate() {
        let (digest, mt) = (&l.digest, &l.media_type);
        let gzip = crate::oci::media::is_gzip_layer(mt);
        if !gzip && !matches!(l.state, LayerState::NotReached) {
            out.push(format!(
                "layer {i} ({digest}) has media type `{mt}`; Lambda supports only gzip layers"
            ));
        } else if matches!(l.state, LayerState::NotGzip) {
            out.push(format!(
                "layer {i} ({digest}) is labelled `{mt}` but its bytes are not gzip"
            ));
        }
    }
    out
}

fn layer_format(s: &Subject) -> Vec<String> {
    s.layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match &l.state {
            LayerState::Unreadable(e) => {
                Some(format!("layer {i} ({}) cannot be read: {e}", l.digest))
            }
            _ => None,
        })
        .collect()
}

fn size(s: &Subject) -> Vec<String> {
    when(
        s.over_limit,
        format!(
            "uncompressed size exceeds Lambda's 10 GB (stopped reading after {})",
            crate::output::size(s.budget.used())
        ),
    )
}

fn handler_cmd(s: &Subject) -> Vec<String> {
    when(
        s.config["config"]["Cmd"][0].as_str().is_none(),
        "the image has no CMD naming a handler".into(),
    )
}

/// The handler's module is under /var/task. Only judged when every layer was read: a
/// layer that could not be read may well hold it.
fn handler_module(s: &Subject) -> Vec<String> {
    let Some(handler) = s.config["config"]["Cmd"][0].as_str() else {
        return Vec::new();
    };
    if !s.complete() {
        return Vec::new();
    }
    let module = handler
        .rsplit_once('.')
        .map(|(m, _)| m)
        .unwrap_or(handler)
        .replace('.', "/");
    let found = s.view.contains(&format!("var/task/{module}.py"))
        || s.view.contains(&format!("var/task/{module}/__init__.py"))
        || s.view.files.keys().any(|k| {
            k.starts_with(&format!("var/task/{module}."))
                && (k.ends_with(".so") || k.ends_with(".pyc"))
        });
    when(
        !found,
        format!("the handler module of `{handler}` is not under /var/task (no {module}.py)"),
    )
}

/// The function's own files: where Lambda's unprivileged user must read.
fn function_files(s: &Subject) -> impl Iterator<Item = (&String, &FileInfo)> {
    s.view
        .files
        .iter()
        .filter(|(p, _)| p.starts_with("var/task/") || p.starts_with("opt/"))
}

/// Lambda runs the function as an unprivileged user: files need o+r, dirs o+rx.
fn permissions(s: &Subject) -> Vec<String> {
    let unreadable = function_files(s)
        .filter(|(_, info)| {
            let need = if info.kind == Kind::Dir { 0o005 } else { 0o004 };
            matches!(info.kind, Kind::File | Kind::Dir) && info.mode & need != need
        })
        .map(|(path, info)| format!("/{path} ({:04o})", info.mode & 0o7777))
        .collect();
    listing(unreadable, |n, some| {
        format!("{n} paths under /var/task or /opt are not world-readable: {some}")
    })
}

/// The .pyc magic number (first two bytes, little endian) of each Lambda Python version
/// we could check against a real interpreter; 3.14's is not verified here, so for 3.14
/// only the cache tag is checked.
fn pyc_magic(minor: u32) -> Option<u16> {
    match minor {
        10 => Some(3439),
        11 => Some(3495),
        12 => Some(3531),
        13 => Some(3571),
        _ => None,
    }
}

/// The image's Python minor version: the interpreter in /var/lang/bin, else the most
/// common cache tag of the .pyc under /var/task.
fn python_minor(view: &View) -> Option<u32> {
    let from_bin = view
        .files
        .keys()
        .filter_map(|p| p.strip_prefix("var/lang/bin/python3."))
        .find_map(|v| v.parse().ok());
    from_bin.or_else(|| {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for p in view.files.keys().filter(|p| p.starts_with("var/task/")) {
            if let Some(minor) = cache_tag_minor(p) {
                *counts.entry(minor).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(m, _)| m)
    })
}

/// The image was built for the Python its base runs: the target recorded by ocilambda, and
/// the CPython tags of extension modules under /var/task (`*.cpython-312-….so`), against
/// the interpreter in /var/lang/bin. A cp312 wheel on a 3.11 base fails at import.
fn python_version(s: &Subject) -> Vec<String> {
    let Some(base) = s
        .view
        .files
        .keys()
        .filter_map(|p| p.strip_prefix("var/lang/bin/python3."))
        .find_map(|v| v.parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let recorded = s.manifest["annotations"][crate::oci::annotation::PYTHON].as_str();
    if let Some(target) = recorded
        && target != format!("3.{base}")
    {
        found.push(format!(
            "the image was built for Python {target}, but its base runs Python 3.{base}"
        ));
    }
    let foreign: Vec<String> = function_files(s)
        .filter(|(p, i)| i.kind == Kind::File && p.ends_with(".so"))
        .filter(|(p, _)| cache_tag_minor(p).is_some_and(|m| m != base))
        .map(|(p, _)| format!("/{p}"))
        .collect();
    found.extend(listing(foreign, |n, some| {
        format!(
            "{n} extension modules are built for another Python than the base's 3.{base}: {some}"
        )
    }));
    found
}

/// The minor version in a CPython tag: `x.cpython-311.pyc`, `x.cpython-312-x86_64-linux-gnu.so`.
fn cache_tag_minor(path: &str) -> Option<u32> {
    let tag = path.split(".cpython-3").nth(1)?;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn pycs(s: &Subject) -> impl Iterator<Item = (&String, &FileInfo)> {
    function_files(s).filter(|(p, i)| i.kind == Kind::File && p.ends_with(".pyc"))
}

/// Whether a .pyc (by cache tag and magic number) is for Python 3.`minor`.
fn pyc_is_for(path: &str, info: &FileInfo, minor: u32) -> bool {
    let magic = (info.head.len() >= 2).then(|| u16::from_le_bytes([info.head[0], info.head[1]]));
    cache_tag_minor(path).is_none_or(|t| t == minor)
        && pyc_magic(minor).is_none_or(|want| magic == Some(want))
}

fn bytecode_version(s: &Subject) -> Vec<String> {
    let Some(minor) = python_minor(&s.view) else {
        return Vec::new();
    };
    let wrong = pycs(s)
        .filter(|(p, i)| !pyc_is_for(p, i, minor))
        .map(|(p, _)| format!("/{p}"))
        .collect();
    listing(wrong, |n, some| {
        format!("{n} .pyc files are not for the image's Python 3.{minor}: {some}")
    })
}

/// Timestamp-based .pyc (flags bit 0 clear) of the right version.
fn bytecode_hash(s: &Subject) -> Vec<String> {
    let minor = python_minor(&s.view);
    let stale = pycs(s)
        .filter(|(p, i)| minor.is_none_or(|m| pyc_is_for(p, i, m)))
        .filter(|(_, i)| {
            i.head.len() >= 8
                && u32::from_le_bytes([i.head[4], i.head[5], i.head[6], i.head[7]]) & 1 == 0
        })
        .map(|(p, _)| format!("/{p}"))
        .collect();
    listing(stale, |n, some| {
        format!(
            "{n} .pyc files are timestamp-based and go stale once mtimes are normalised: {some}"
        )
    })
}

/// The entries of every layer read, with the layer's index.
fn entries(s: &Subject) -> impl Iterator<Item = (usize, &crate::layer::view::LayerEntry)> {
    s.read_layers()
        .flat_map(|(i, r)| r.entries.iter().map(move |e| (i, e)))
}

fn refused(s: &Subject, reasons: &[Refusal]) -> Vec<String> {
    entries(s)
        .filter(|(_, e)| matches!(e.op, Op::Refused(r) if reasons.contains(&r)))
        .map(|(i, e)| format!("`{}` (layer {i})", e.raw))
        .collect()
}

/// What the layer reader refuses to apply: `..` in a path or a hard-link target.
fn path_escape(s: &Subject) -> Vec<String> {
    listing(
        refused(s, &[Refusal::ParentDir, Refusal::LinkOutside]),
        |n, some| format!("{n} entries point outside the image root: {some}"),
    )
}

/// Whiteouts of `.`/`..`/nothing, which the reader refuses (applied, they empty the root).
fn whiteout_name(s: &Subject) -> Vec<String> {
    listing(refused(s, &[Refusal::BadWhiteout]), |n, some| {
        format!("{n} whiteout entries hide `.` or `..`: {some}")
    })
}

/// Hard links: Lambda refuses a layer holding one (UnsupportedImageLayerDetected), and
/// one that names no file of the image at that point cannot be unpacked anywhere.
fn hardlink(s: &Subject) -> Vec<String> {
    let mut view = View::new();
    let mut links = Vec::new();
    for (i, read) in s.read_layers() {
        view.apply(read);
        for e in &read.entries {
            let Some(target) = e
                .info
                .link
                .as_deref()
                .filter(|_| e.info.kind == Kind::Hardlink && matches!(e.op, Op::Put(_)))
            else {
                continue;
            };
            let dangling = view.get(target).is_none_or(|t| t.kind == Kind::Dir);
            let note = if dangling { ", names no file" } else { "" };
            links.push(format!("/{} → /{target} (layer {i}{note})", e.path));
        }
    }
    listing(links, |n, some| {
        format!("{n} hard links, which Lambda refuses in a layer: {some}")
    })
}

/// Entries whose parent directory is not an entry of the same layer, written before them:
/// Lambda refuses the image (InvalidImage, MissingParentDirectory), whatever lower layers
/// hold, and a directory entry after its contents counts as missing (nix2container#54).
fn parent_directory(s: &Subject) -> Vec<String> {
    let mut missing = Vec::new();
    for (i, read) in s.read_layers() {
        let mut dirs: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for e in read
            .entries
            .iter()
            .filter(|e| !matches!(e.op, Op::Refused(_)))
        {
            if let Some((parent, _)) = e.path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                missing.push(format!(
                    "/{} without /{parent} before it (layer {i})",
                    e.path
                ));
            }
            if e.info.kind == Kind::Dir && matches!(e.op, Op::Put(_)) {
                dirs.insert(e.path.as_str());
            }
        }
    }
    listing(missing, |n, some| {
        format!(
            "{n} entries come without an entry for their parent directory before them in their layer: {some}"
        )
    })
}

/// The distribution that installed each file, from the RECORD files of the image:
/// `zstandard 0.22.0` by path.
fn owners(s: &Subject) -> std::collections::HashMap<&str, String> {
    let mut owners = std::collections::HashMap::new();
    for (path, info) in &s.view.files {
        let Some(listed) = &info.record else {
            continue;
        };
        let dist_info = path
            .strip_suffix("/RECORD")
            .and_then(|d| d.rsplit('/').next())
            .and_then(|d| d.strip_suffix(".dist-info"))
            .unwrap_or_default();
        let name = match dist_info.split_once('-') {
            Some((name, version)) => format!("{name} {version}"),
            None => dist_info.to_string(),
        };
        for p in listed {
            owners.insert(p.as_str(), name.clone());
        }
    }
    owners
}

/// `/path` and, when a RECORD lists it, the distribution that installed it.
fn with_owner(owners: &std::collections::HashMap<&str, String>, path: &str) -> String {
    match owners.get(path) {
        Some(dist) => format!("/{path} (from {dist})"),
        None => format!("/{path}"),
    }
}

/// `.pth` files where Python never reads them: `site` processes .pth files only in site
/// directories, and Lambda puts /var/task and /opt/python on the path through PYTHONPATH
/// and the runtime, not as site directories, so a package's start-up hook never runs.
fn pth_file(s: &Subject) -> Vec<String> {
    let owners = owners(s);
    let found = function_files(s)
        .filter(|(p, i)| i.kind == Kind::File && p.ends_with(".pth"))
        .filter(|(p, _)| {
            let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
            dir == "var/task"
                || dir == "opt/python"
                || dir
                    .strip_prefix("opt/python/lib/python3.")
                    .is_some_and(|rest| rest.ends_with("/site-packages"))
        })
        .map(|(p, _)| with_owner(&owners, p))
        .collect();
    listing(found, |n, some| {
        format!("{n} .pth files that Python will not read on Lambda: {some}")
    })
}

/// The image's architecture, when it is one Lambda runs.
fn image_arch(s: &Subject) -> Option<crate::target::Arch> {
    crate::target::Arch::from_oci(s.config["architecture"].as_str()?)
}

/// ELF objects of the function (/var/task, /opt) built for another machine than the
/// image's: the loader refuses them at import.
fn elf_architecture(s: &Subject) -> Vec<String> {
    let Some(arch) = image_arch(s) else {
        return Vec::new();
    };
    let foreign = function_files(s)
        .filter_map(|(p, i)| Some((p, i.elf.as_ref().filter(|e| e.loadable)?.machine)))
        .filter(|(_, m)| crate::layer::elf::machine_name(*m) != Some(arch.machine()))
        .map(|(p, m)| {
            let name = crate::layer::elf::machine_name(m)
                .map_or_else(|| format!("machine {m}"), str::to_string);
            format!("/{p} ({name})")
        })
        .collect();
    listing(foreign, |n, some| {
        format!(
            "{n} ELF objects are not for the image's {}: {some}",
            arch.machine()
        )
    })
}

/// ELF objects of the function that need a newer glibc than the runtime has: the import
/// fails with "GLIBC_2.34 not found". The runtime's glibc follows from its Python.
fn glibc(s: &Subject) -> Vec<String> {
    let Some(minor) = base_python_minor(s) else {
        return Vec::new();
    };
    let target = crate::target::Target {
        python: crate::target::PyVersion(3, minor),
        arch: image_arch(s).unwrap_or(crate::target::Arch::X86_64),
    };
    let Some(have) = glibc_of(target.glibc()) else {
        return Vec::new();
    };
    let owners = owners(s);
    let too_new = function_files(s)
        .filter_map(|(p, i)| Some((p, i.elf.as_ref().filter(|e| e.loadable)?.glibc?)))
        .filter(|(_, need)| *need > have)
        .map(|(p, (major, minor))| {
            format!("{} needs GLIBC_{major}.{minor}", with_owner(&owners, p))
        })
        .collect();
    listing(too_new, |n, some| {
        format!(
            "{n} ELF objects need a newer glibc than the Python 3.{minor} runtime's {} ({}): {some}",
            target.glibc(),
            target.os_name()
        )
    })
}

/// `2.34` → (2, 34).
fn glibc_of(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The Python the image's base runs: its interpreter in /var/lang/bin, else the version
/// ocilambda recorded.
fn base_python_minor(s: &Subject) -> Option<u32> {
    s.view
        .files
        .keys()
        .filter_map(|p| p.strip_prefix("var/lang/bin/python3."))
        .find_map(|v| v.parse().ok())
        .or_else(|| {
            s.manifest["annotations"][crate::oci::annotation::PYTHON]
                .as_str()?
                .strip_prefix("3.")?
                .parse()
                .ok()
        })
}

/// Variables Lambda sets itself and reserves, from the Lambda developer guide ("Defined
/// runtime environment variables"), with the value a Lambda base image declares in its own
/// config for the few it does (that is Lambda's value, not a finding).
const RESERVED_ENV: &[(&str, Option<&str>)] = &[
    ("_HANDLER", None),
    ("_X_AMZN_TRACE_ID", None),
    ("AWS_DEFAULT_REGION", None),
    ("AWS_REGION", None),
    ("AWS_EXECUTION_ENV", None),
    ("AWS_LAMBDA_FUNCTION_NAME", None),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", None),
    ("AWS_LAMBDA_FUNCTION_VERSION", None),
    ("AWS_LAMBDA_INITIALIZATION_TYPE", None),
    ("AWS_LAMBDA_LOG_GROUP_NAME", None),
    ("AWS_LAMBDA_LOG_STREAM_NAME", None),
    ("AWS_ACCESS_KEY", None),
    ("AWS_ACCESS_KEY_ID", None),
    ("AWS_SECRET_ACCESS_KEY", None),
    ("AWS_SESSION_TOKEN", None),
    ("AWS_LAMBDA_RUNTIME_API", None),
    ("LAMBDA_TASK_ROOT", Some("/var/task")),
    ("LAMBDA_RUNTIME_DIR", Some("/var/runtime")),
    ("TZ", Some(":/etc/localtime")),
];

/// Reserved variables in the image's Env: Lambda overrides them, so the image's value
/// is not what the function sees on Lambda (though `invoke` and `docker run` show it).
fn reserved_env(s: &Subject) -> Vec<String> {
    let env = s.config["config"]["Env"].as_array();
    let set = env
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| {
            RESERVED_ENV
                .iter()
                .any(|(name, lambdas)| name == k && *lambdas != Some(*v))
        })
        .map(|(k, _)| k.to_string())
        .collect();
    listing(set, |n, some| {
        format!("{n} variables of the image's Env are reserved by Lambda: {some}")
    })
}

/// Entries written through a symlink (`hostdir -> /etc`, then `hostdir/passwd`), and
/// symlinks whose `..` climb above the root. The image's own resolution keeps both inside
/// the root; an unpacker that resolves on the host writes outside it.
fn symlink_escape(s: &Subject) -> Vec<String> {
    let mut view = View::new();
    let mut bad = Vec::new();
    for (i, read) in s.read_layers() {
        view.apply(read);
        for e in read.entries.iter().filter(|e| matches!(e.op, Op::Put(_))) {
            if let Some((link, target)) = symlink_on_the_way(&view, &e.path) {
                bad.push(format!(
                    "/{} through /{link} → {target} (layer {i})",
                    e.path
                ));
            } else if e.info.kind == Kind::Symlink && climbs_above_root(&e.path, &e.info) {
                let target = e.info.link.as_deref().unwrap_or_default();
                bad.push(format!("/{} → {target} (layer {i})", e.path));
            }
        }
    }
    listing(bad, |n, some| {
        format!("{n} entries lead outside the image through a symlink: {some}")
    })
}

/// The first proper ancestor of `path` that is a symlink in `view`, with its target.
fn symlink_on_the_way<'v>(view: &'v View, path: &str) -> Option<(&'v str, &'v str)> {
    let mut end = 0;
    while let Some(slash) = path[end..].find('/') {
        end += slash;
        if let Some((ancestor, info)) = view.files.get_key_value(&path[..end])
            && info.kind == Kind::Symlink
        {
            return Some((ancestor, info.link.as_deref().unwrap_or_default()));
        }
        end += 1;
    }
    None
}

/// A relative symlink target with more `..` than the link has parent directories.
fn climbs_above_root(path: &str, info: &FileInfo) -> bool {
    let Some(target) = info.link.as_deref().filter(|t| !t.starts_with('/')) else {
        return false;
    };
    let mut depth = path.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Device nodes and FIFOs: unpacking without privileges cannot make them, so they are
/// skipped, and the runtime brings its own /dev.
fn device(s: &Subject) -> Vec<String> {
    let found = s
        .view
        .files
        .iter()
        .filter(|(_, i)| matches!(i.kind, Kind::Device | Kind::Fifo))
        .map(|(p, _)| format!("/{p}"))
        .collect();
    listing(found, |n, some| {
        format!("{n} device nodes or FIFOs: {some}")
    })
}

/// setuid/setgid files and directories: the bits are dropped when unpacked locally, and
/// give nothing to a function that runs unprivileged.
fn setuid(s: &Subject) -> Vec<String> {
    let found = s
        .view
        .files
        .iter()
        .filter(|(_, i)| matches!(i.kind, Kind::File | Kind::Dir) && i.mode & 0o6000 != 0)
        .map(|(p, i)| format!("/{p} ({:04o})", i.mode))
        .collect();
    listing(found, |n, some| {
        format!("{n} paths are setuid or setgid: {some}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::testing::{E, gzip, tar_of};
    use crate::oci::media;
    use serde_json::json;

    const APP: &[E] = &[
        E::Dir("var/task/", 0o755),
        E::File("var/task/app.py", 0o644, "def handler(e, c): pass\n"),
        E::File("var/lang/bin/python3.11", 0o755, "elf"),
    ];

    /// A good image of `layers` (tars), with `edit` applied to the subject before the
    /// layers are read.
    fn image_with(layers: &[Vec<u8>], edit: impl FnOnce(&mut Subject)) -> Subject {
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/lambda-entrypoint.sh"], "Cmd": ["app.handler"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|t| crate::digest::of_bytes(t)).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| json!({"created_by": "test"})).collect::<Vec<_>>(),
        });
        let manifest =
            json!({"mediaType": media::OCI_MANIFEST, "config": {"mediaType": media::OCI_CONFIG}});
        let mut s = Subject::new(manifest, 500, config);
        edit(&mut s);
        for tar in layers {
            let gz = gzip(tar);
            s.add_layer(
                &crate::digest::of_bytes(&gz),
                media::OCI_LAYER_GZIP,
                &gz[..],
            );
        }
        s
    }

    /// `entries` as a tar, each path's parent directories written before it (as every
    /// honest layer has them), so each case shows only its own finding.
    fn tar_with_parents(entries: &[E]) -> Vec<u8> {
        let path = |e: &E| match e {
            E::Dir(p, _) | E::File(p, ..) | E::Bytes(p, ..) | E::Symlink(p, _) => p.to_string(),
            E::Hardlink(p, _) | E::Device(p) => p.to_string(),
        };
        let mut dirs: Vec<String> = Vec::new();
        for e in entries {
            let p = path(e);
            let p = p.trim_end_matches('/');
            if p.split('/').any(|c| c == "..") {
                continue;
            }
            let mut at = 0;
            while let Some(i) = p[at..].find('/') {
                let dir = format!("{}/", &p[..at + i]);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
                at += i + 1;
            }
        }
        let mut all: Vec<E> = dirs.iter().map(|d| E::Dir(d, 0o755)).collect();
        for e in entries {
            all.push(match e {
                E::Dir(p, m) => E::Dir(p, *m),
                E::File(p, m, c) => E::File(p, *m, c),
                E::Bytes(p, m, c) => E::Bytes(p, *m, c),
                E::Symlink(p, t) => E::Symlink(p, t),
                E::Hardlink(p, t) => E::Hardlink(p, t),
                E::Device(p) => E::Device(p),
            });
        }
        tar_of(&all)
    }

    fn image(layers: &[&[E]]) -> Subject {
        image_with(
            &layers
                .iter()
                .map(|l| tar_with_parents(l))
                .collect::<Vec<_>>(),
            |_| {},
        )
    }

    fn ids(s: &Subject) -> Vec<&'static str> {
        run(s).into_iter().map(|f| f.check).collect()
    }

    #[test]
    fn a_good_image_has_no_findings() {
        assert_eq!(ids(&image(&[APP])), Vec::<&str>::new());
    }

    #[test]
    fn manifest_and_config_checks() {
        type Edit = fn(&mut Subject);
        let cases: [(&str, Edit); 7] = [
            ("media-types", |s| {
                s.manifest["mediaType"] = json!("text/plain")
            }),
            ("media-types", |s| {
                s.manifest["config"]["mediaType"] = json!("x")
            }),
            ("manifest-size", |s| s.manifest_len = 25_401),
            ("architecture", |s| {
                s.config["architecture"] = json!("s390x")
            }),
            ("entrypoint", |s| {
                s.config["config"]["Entrypoint"] = json!([])
            }),
            ("diff-ids", |s| s.config["rootfs"]["diff_ids"] = json!([])),
            ("history", |s| s.config["history"] = json!([])),
        ];
        for (id, edit) in cases {
            let s = image_with(&[tar_with_parents(APP)], edit);
            assert_eq!(ids(&s), [id]);
        }
    }

    #[test]
    fn a_handler_function_its_module_does_not_define_is_reported() {
        let s = image_with(&[tar_with_parents(APP)], |s| {
            s.handler_source = Some("def other(event, context):\n    pass\n".into())
        });
        assert_eq!(ids(&s), ["handler-function"]);
        let ok = image_with(&[tar_with_parents(APP)], |s| {
            s.handler_source = Some("def handler(event, context):\n    pass\n".into())
        });
        assert_eq!(ids(&ok), Vec::<&str>::new());
        // What lint() reads: the module file of the view, from the topmost layer.
        let s = image(&[APP]);
        assert_eq!(handler_module_file(&s).as_deref(), Some("var/task/app.py"));
    }

    #[test]
    fn an_image_built_for_another_python_than_its_base_is_reported() {
        let s = image_with(&[tar_with_parents(APP)], |s| {
            s.manifest["annotations"] = json!({crate::oci::annotation::PYTHON: "3.12"})
        });
        assert_eq!(ids(&s), ["python-version"]);
        let same = image_with(&[tar_with_parents(APP)], |s| {
            s.manifest["annotations"] = json!({crate::oci::annotation::PYTHON: "3.11"})
        });
        assert_eq!(ids(&same), Vec::<&str>::new());
        let wheel: &[E] = &[E::File(
            "var/task/numpy/_core.cpython-312-x86_64-linux-gnu.so",
            0o755,
            "elf",
        )];
        assert_eq!(ids(&image(&[APP, wheel])), ["python-version"]);
    }

    #[test]
    fn a_wrong_diff_id_is_reported() {
        let s = image_with(&[tar_with_parents(APP)], |s| {
            s.config["rootfs"]["diff_ids"][0] = json!(crate::digest::of_bytes(b"other"))
        });
        assert_eq!(ids(&s), ["diff-ids"]);
    }

    #[test]
    fn handler_checks() {
        let s = image_with(&[tar_with_parents(APP)], |s| {
            s.config["config"]["Cmd"] = json!(null)
        });
        assert_eq!(ids(&s), ["handler"]);
        let s = image_with(&[tar_with_parents(APP)], |s| {
            s.config["config"]["Cmd"] = json!(["nothere.h"])
        });
        assert_eq!(ids(&s), ["handler"]);
    }

    #[test]
    fn a_layer_lambda_cannot_take_is_one_finding_without_a_false_missing_handler() {
        // The app layer itself mislabelled: the handler may be in it, so no handler error.
        let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
        let mut s = image_with(&[], |_| {});
        s.config = image(&[APP]).config;
        s.add_layer("sha256:x", zstd, &gzip(&tar_of(APP))[..]);
        assert_eq!(ids(&s), ["compression"]);
        // Labelled gzip, but plain tar bytes: a finding, not an error ending lint.
        let mut s = image_with(&[], |_| {});
        s.config = image(&[APP]).config;
        s.add_layer("sha256:x", media::OCI_LAYER_GZIP, &tar_of(APP)[..]);
        assert_eq!(ids(&s), ["compression"]);
        assert!(run(&s)[0].message.contains("not gzip"));
        // A gzip header with a damaged body.
        let mut gz = gzip(&tar_of(APP));
        let n = gz.len();
        gz[n / 2..].fill(0xff);
        let mut s = image_with(&[], |_| {});
        s.config = image(&[APP]).config;
        s.add_layer("sha256:x", media::OCI_LAYER_GZIP, &gz[..]);
        assert_eq!(ids(&s), ["layer-format"]);
    }

    #[test]
    fn past_lambdas_uncompressed_limit_is_a_size_finding() {
        let s = image_with(&[tar_with_parents(APP), tar_with_parents(APP)], |s| {
            s.budget = Budget::new(4096)
        });
        assert_eq!(ids(&s), ["size"]);
    }

    #[test]
    fn function_file_checks() {
        let unreadable: &[E] = &[E::File("var/task/secret.json", 0o600, "{}")];
        assert_eq!(ids(&image(&[APP, unreadable])), ["permissions"]);
        let pyc = |magic: u16, flags: u32| {
            let mut h = magic.to_le_bytes().to_vec();
            h.extend_from_slice(b"\r\n");
            h.extend_from_slice(&flags.to_le_bytes());
            h.extend_from_slice(&[0; 8]);
            h
        };
        let (old, stamped) = (pyc(3439, 1), pyc(3495, 0));
        let old: &[E] = &[E::Bytes(
            "var/task/__pycache__/m.cpython-310.pyc",
            0o644,
            &old,
        )];
        assert_eq!(ids(&image(&[APP, old])), ["bytecode-version"]);
        let stale: &[E] = &[E::Bytes(
            "var/task/__pycache__/m.cpython-311.pyc",
            0o644,
            &stamped,
        )];
        assert_eq!(ids(&image(&[APP, stale])), ["bytecode-hash"]);
    }

    #[test]
    fn what_unpacking_refuses_or_drops_is_reported() {
        let cases: [(&str, &[E]); 8] = [
            ("path-escape", &[E::File("../escaped", 0o644, "x")]),
            ("path-escape", &[E::Hardlink("l", "../../etc/passwd")]),
            ("whiteout-name", &[E::File(".wh..", 0o644, "")]),
            ("whiteout-name", &[E::File("var/.wh...", 0o644, "")]),
            ("hardlink", &[E::Hardlink("l", "missing")]),
            ("device", &[E::Device("var/task/null")]),
            ("setuid", &[E::File("usr/bin/su", 0o4755, "elf")]),
            ("symlink-escape", &[E::Symlink("up", "../../..")]),
        ];
        for (id, layer) in cases {
            let s = image(&[APP, layer]);
            assert_eq!(ids(&s), [id], "{id}");
        }
        let through: &[E] = &[
            E::Symlink("hostdir", "/etc"),
            E::File("hostdir/passwd", 0o644, "x"),
        ];
        let s = image(&[APP, through]);
        assert_eq!(ids(&s), ["symlink-escape"]);
        assert!(
            run(&s)[0]
                .message
                .contains("/hostdir/passwd through /hostdir → /etc")
        );
        // Absolute symlinks as every rootfs has them are fine.
        assert!(ids(&image(&[APP, &[E::Symlink("lib64", "/usr/lib64")]])).is_empty());
    }

    #[test]
    fn every_hard_link_is_reported_as_lambda_refuses_them() {
        let linked: &[E] = &[
            E::File("var/task/a.py", 0o644, "x = 1\n"),
            E::Hardlink("var/task/b.py", "var/task/a.py"),
        ];
        let s = image(&[APP, linked]);
        assert_eq!(ids(&s), ["hardlink"]);
        assert!(
            run(&s)[0]
                .message
                .contains("/var/task/b.py → /var/task/a.py")
        );
    }

    #[test]
    fn an_entry_without_its_parent_directory_in_the_same_layer_is_reported() {
        // The parent exists in a lower layer: Lambda still wants it in this one.
        let s = image_with(
            &[
                tar_with_parents(APP),
                tar_of(&[E::File("var/task/extra.py", 0o644, "")]),
            ],
            |_| {},
        );
        assert_eq!(ids(&s), ["parent-directory"]);
        assert!(
            run(&s)[0]
                .message
                .contains("/var/task/extra.py without /var/task before it (layer 1)")
        );
        // A directory entry after its contents is as missing to Lambda.
        let late: &[E] = &[
            E::Dir("var/", 0o755),
            E::File("var/task/late.py", 0o644, ""),
            E::Dir("var/task/", 0o755),
        ];
        let s = image_with(&[tar_with_parents(APP), tar_of(late)], |_| {});
        assert_eq!(ids(&s), ["parent-directory"]);
        // Whiteouts are entries too.
        let s = image_with(
            &[
                tar_with_parents(APP),
                tar_of(&[E::File("var/task/.wh.app.py", 0o644, "")]),
            ],
            |_| {},
        );
        assert!(ids(&s).contains(&"parent-directory"));
    }

    #[test]
    fn pth_files_where_python_ignores_them_name_their_distribution() {
        let record = "hook.pth,sha256=x,10\nhook/__init__.py,,\nhook-1.2.dist-info/RECORD,,\n";
        let dist: &[E] = &[
            E::File("var/task/hook.pth", 0o644, "import hook\n"),
            E::File("var/task/hook/__init__.py", 0o644, ""),
            E::File("var/task/hook-1.2.dist-info/RECORD", 0o644, record),
            // Data that happens to end in .pth, below the top: not a site hook.
            E::File("var/task/hook/models/x.pth", 0o644, "weights"),
            E::File(
                "opt/python/lib/python3.11/site-packages/layer.pth",
                0o644,
                "x",
            ),
        ];
        let s = image(&[APP, dist]);
        assert_eq!(ids(&s), ["pth-file"]);
        let message = &run(&s)[0].message;
        assert!(message.starts_with("2 .pth files"), "{message}");
        assert!(
            message.contains("/var/task/hook.pth (from hook 1.2)"),
            "{message}"
        );
        assert!(message.contains("site-packages/layer.pth"), "{message}");
    }

    /// An image with `/var/task/lib.so` whose ELF facts are `elf`, on a base running `python`.
    fn with_elf(python: &'static str, arch: &str, elf: crate::layer::elf::Elf) -> Subject {
        let layer: &[E] = &[
            E::Dir("var/task/", 0o755),
            E::File("var/task/app.py", 0o644, "def handler(e, c): pass\n"),
            E::Bytes("var/task/lib.so", 0o755, b"\x7fELF"),
            E::File(python, 0o755, "elf"),
        ];
        let mut s = image_with(&[tar_with_parents(layer)], |s| {
            s.config["architecture"] = json!(arch)
        });
        s.view.files.get_mut("var/task/lib.so").unwrap().elf = Some(elf);
        s
    }

    #[test]
    fn elf_objects_needing_a_newer_glibc_than_the_runtime_are_reported() {
        use crate::layer::elf::Elf;
        let x86 = |glibc| Elf {
            machine: object::elf::EM_X86_64.0,
            glibc,
            loadable: true,
        };
        let on_311 = with_elf("var/lang/bin/python3.11", "amd64", x86(Some((2, 34))));
        assert_eq!(ids(&on_311), ["glibc"]);
        let message = &run(&on_311)[0].message;
        assert!(
            message.contains("/var/task/lib.so needs GLIBC_2.34"),
            "{message}"
        );
        assert!(message.contains("Python 3.11 runtime's 2.26"), "{message}");
        // What the runtime has is fine, and 3.12 runs glibc 2.34.
        let old = with_elf("var/lang/bin/python3.11", "amd64", x86(Some((2, 26))));
        assert!(ids(&old).is_empty());
        let on_312 = with_elf("var/lang/bin/python3.12", "amd64", x86(Some((2, 34))));
        assert!(ids(&on_312).is_empty());
        let newer = with_elf("var/lang/bin/python3.12", "amd64", x86(Some((2, 38))));
        assert_eq!(ids(&newer), ["glibc"]);
    }

    #[test]
    fn elf_objects_for_another_architecture_are_reported() {
        use crate::layer::elf::Elf;
        let arm = Elf {
            machine: object::elf::EM_AARCH64.0,
            glibc: None,
            loadable: true,
        };
        let s = with_elf("var/lang/bin/python3.11", "amd64", arm.clone());
        assert_eq!(ids(&s), ["elf-architecture"]);
        assert!(run(&s)[0].message.contains("/var/task/lib.so (aarch64)"));
        assert!(ids(&with_elf("var/lang/bin/python3.11", "arm64", arm.clone())).is_empty());
        // A relocatable object (a test fixture, say) is not loaded: not a finding.
        let object_file = Elf {
            loadable: false,
            ..arm
        };
        assert!(ids(&with_elf("var/lang/bin/python3.11", "amd64", object_file)).is_empty());
    }

    #[test]
    fn reserved_variables_in_the_env_are_reported_except_lambdas_own_values() {
        let s = image_with(&[tar_with_parents(APP)], |s| {
            s.config["config"]["Env"] = json!([
                "PATH=/var/lang/bin:/usr/bin",
                "LAMBDA_TASK_ROOT=/var/task",
                "TZ=:/etc/localtime",
                "AWS_REGION=eu-west-1",
                "LAMBDA_RUNTIME_DIR=/elsewhere",
                "AWS_LAMBDA_EXEC_WRAPPER=/opt/wrapper",
            ])
        });
        assert_eq!(ids(&s), ["reserved-env"]);
        let message = &run(&s)[0].message;
        assert!(message.starts_with("2 variables"), "{message}");
        assert!(
            message.contains("AWS_REGION, LAMBDA_RUNTIME_DIR"),
            "{message}"
        );
    }

    #[test]
    fn the_readme_lists_every_check() {
        let readme = include_str!("../../README.md");
        for check in CHECKS.iter().chain([&SINGLE_PLATFORM]) {
            let row = format!(
                "| `{}` | {} |",
                check.id,
                match check.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                }
            );
            assert!(readme.contains(&row), "README lacks {row}");
        }
    }
}
