//! The one settings table shared by every command, and the one reader of it.
//!
//! Each setting is a CLI flag, an `OCILAMBDA_<NAME>` environment variable and a key of
//! `[tool.ocilambda]` in pyproject.toml; precedence is CLI > environment > pyproject >
//! built-in default. Values are typed here, once (an architecture is an [`Arch`], a
//! duration a [`Duration`]); what they mean is decided by the steps that use them. The
//! process environment is never read here: the command layer captures it once as an
//! [`Environment`] and passes it in.

use crate::target::{Arch, PyVersion};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every key `[tool.ocilambda]` accepts (also the environment variable names, upper-cased).
pub const KEYS: &[&str] = &[
    "base",
    "python-version",
    "handler",
    "arch",
    "include",
    "exclude",
    "compile-bytecode",
    "repository",
    "sbom",
    "base-ttl",
    "package",
    "extra",
    "all-extras",
    "group",
    "invoke-cache-size",
    "function",
    "layer",
    "create-repository",
    "s3-bucket",
    "allow-non-ecr",
];

/// `OCILAMBDA_*` variables that are not settings but are still ours (no warning).
const OTHER_VARS: &[&str] = &["OCILAMBDA_CACHE_DIR"];

/// The documented default for SOURCE_DATE_EPOCH: 1970-01-01T00:00:00Z, as ko uses.
pub const DEFAULT_EPOCH: u64 = 0;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub base: Option<String>,
    pub python_version: Option<PyVersion>,
    pub handler: Option<String>,
    pub arch: Option<Arch>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub compile_bytecode: Option<bool>,
    pub repository: Option<String>,
    pub sbom: Option<bool>,
    /// How long a cached base tag resolution is trusted, e.g. `24h`, `30m`, `0`.
    pub base_ttl: Option<Duration>,
    /// The workspace member whose Lambda this is.
    pub package: Option<String>,
    pub extras: Option<Vec<String>>,
    pub all_extras: Option<bool>,
    pub groups: Option<Vec<String>>,
    /// Bytes of unpacked layers `invoke` keeps cached, e.g. `2GiB`, `500MiB`.
    pub invoke_cache_size: Option<u64>,
    /// The Lambda function `deploy` updates: a name or an ARN.
    pub function: Option<String>,
    /// The Lambda layer `deploy` puts a zip function's dependencies in.
    pub layer: Option<String>,
    /// Create a missing ECR repository when pushing to it.
    pub create_repository: Option<bool>,
    /// Where `deploy` uploads zips too large for the Lambda API request.
    pub s3_bucket: Option<String>,
    /// Let `deploy` point an image function at a registry other than ECR of its region.
    pub allow_non_ecr: Option<bool>,
}

/// Which of the project's Lambdas and which of its optional dependencies to stage, and
/// whether the network may be used for it: what `build`, `zip` and `verify` pass down to
/// staging, taken from the merged [`Settings`] (and the `--offline` flag) once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub package: Option<String>,
    pub extras: Vec<String>,
    pub all_extras: bool,
    pub groups: Vec<String>,
    /// Not part of what is selected, but of how: never touch the network.
    #[serde(skip)]
    pub offline: bool,
}

impl Selection {
    pub fn new(settings: &Settings, offline: bool) -> Selection {
        Selection {
            package: settings.package.clone(),
            extras: settings.extras.clone().unwrap_or_default(),
            all_extras: settings.all_extras.unwrap_or(false),
            groups: settings.groups.clone().unwrap_or_default(),
            offline,
        }
    }

    /// Whether uv's dev group is asked for: `uv export --no-dev` would drop it.
    pub fn wants_dev(&self) -> bool {
        self.groups.iter().any(|g| g == "dev")
    }
}

impl Settings {
    /// `self` with every value that `higher` sets replaced by it.
    pub fn overlaid_with(self, higher: Settings) -> Settings {
        Settings {
            base: higher.base.or(self.base),
            python_version: higher.python_version.or(self.python_version),
            handler: higher.handler.or(self.handler),
            arch: higher.arch.or(self.arch),
            include: higher.include.or(self.include),
            exclude: higher.exclude.or(self.exclude),
            compile_bytecode: higher.compile_bytecode.or(self.compile_bytecode),
            repository: higher.repository.or(self.repository),
            sbom: higher.sbom.or(self.sbom),
            base_ttl: higher.base_ttl.or(self.base_ttl),
            package: higher.package.or(self.package),
            extras: higher.extras.or(self.extras),
            all_extras: higher.all_extras.or(self.all_extras),
            groups: higher.groups.or(self.groups),
            invoke_cache_size: higher.invoke_cache_size.or(self.invoke_cache_size),
            function: higher.function.or(self.function),
            layer: higher.layer.or(self.layer),
            create_repository: higher.create_repository.or(self.create_repository),
            s3_bucket: higher.s3_bucket.or(self.s3_bucket),
            allow_non_ecr: higher.allow_non_ecr.or(self.allow_non_ecr),
        }
    }

    /// Values of one source (environment or pyproject) read through `get`, which gives a
    /// key's raw value and the name to blame for it.
    fn read(get: &dyn Fn(&str) -> Option<(String, Raw)>) -> Result<Settings> {
        let string = |key: &str| -> Result<Option<String>> {
            get(key).map(|(name, raw)| raw.string(&name)).transpose()
        };
        let list = |key: &str| -> Result<Option<Vec<String>>> {
            get(key).map(|(name, raw)| raw.list(&name)).transpose()
        };
        let boolean = |key: &str| -> Result<Option<bool>> {
            get(key).map(|(name, raw)| raw.boolean(&name)).transpose()
        };
        let blame = |key: &str| get(key).map(|(name, _)| name).unwrap_or_default();
        let python_version = string("python-version")?
            .map(|v| v.parse::<PyVersion>())
            .transpose()
            .with_context(|| blame("python-version"))?;
        let arch = string("arch")?
            .map(|v| v.parse::<Arch>())
            .transpose()
            .with_context(|| blame("arch"))?;
        let base_ttl = string("base-ttl")?
            .map(|v| parse_duration(&v))
            .transpose()
            .with_context(|| blame("base-ttl"))?;
        let invoke_cache_size = string("invoke-cache-size")?
            .map(|v| parse_size(&v))
            .transpose()
            .with_context(|| blame("invoke-cache-size"))?;
        Ok(Settings {
            invoke_cache_size,
            base: string("base")?,
            python_version,
            handler: string("handler")?,
            arch,
            include: list("include")?,
            exclude: list("exclude")?,
            compile_bytecode: boolean("compile-bytecode")?,
            repository: string("repository")?,
            sbom: boolean("sbom")?,
            base_ttl,
            package: string("package")?,
            extras: list("extra")?,
            all_extras: boolean("all-extras")?,
            groups: list("group")?,
            function: string("function")?,
            layer: string("layer")?,
            create_repository: boolean("create-repository")?,
            s3_bucket: string("s3-bucket")?,
            allow_non_ecr: boolean("allow-non-ecr")?,
        })
    }

    /// Values from a `[tool.ocilambda]` table; unknown keys are an error with a suggestion.
    pub fn from_table(table: &toml::Table, file: &Path) -> Result<Settings> {
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                bail!(crate::error::hint(
                    format!(
                        "unknown key `{key}` in [tool.ocilambda] of {}",
                        file.display()
                    ),
                    suggestion(key, KEYS, "known keys")
                ));
            }
        }
        let place = format!("in [tool.ocilambda] of {}", file.display());
        Settings::read(&|key| {
            table
                .get(key)
                .map(|v| (format!("`{key}` {place}"), Raw::Toml(v.clone())))
        })
    }
}

/// "did you mean `x`? (known …: a, b)" for a name that is none of `known`.
fn suggestion(name: &str, known: &[&str], what: &str) -> String {
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(k, name), k))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.7);
    match best {
        Some((_, k)) => format!("did you mean `{k}`? ({what}: {})", known.join(", ")),
        None => format!("{what}: {}", known.join(", ")),
    }
}

/// A setting's value as its source gives it: environment text, or a TOML value.
enum Raw {
    Env(String),
    Toml(toml::Value),
}

impl Raw {
    fn string(self, name: &str) -> Result<String> {
        match self {
            Raw::Env(s) | Raw::Toml(toml::Value::String(s)) => Ok(s),
            Raw::Toml(_) => bail!("{name} must be a string"),
        }
    }

    /// Lists are comma-separated in the environment; one string is a list of one in TOML.
    fn list(self, name: &str) -> Result<Vec<String>> {
        match self {
            Raw::Env(v) => Ok(v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()),
            Raw::Toml(toml::Value::String(s)) => Ok(vec![s]),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .with_context(|| format!("{name} must be a list of strings"))
                })
                .collect(),
            Raw::Toml(_) => bail!("{name} must be a list of strings"),
        }
    }

    fn boolean(self, name: &str) -> Result<bool> {
        match self {
            Raw::Env(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => bail!("{name}=`{v}` is not a boolean (use true or false)"),
            },
            Raw::Toml(toml::Value::Boolean(b)) => Ok(b),
            Raw::Toml(_) => bail!("{name} must be true or false"),
        }
    }
}

/// The `[tool.ocilambda]` settings of a parsed pyproject.toml (none when it has no such
/// table; an error when `tool.ocilambda` is not a table).
pub fn tool_settings(pyproject: &toml::Table, path: &Path) -> Result<Settings> {
    match pyproject
        .get("tool")
        .and_then(|t| t.get("ocilambda"))
        .map(|t| t.as_table())
    {
        None => Ok(Settings::default()),
        Some(Some(t)) => Settings::from_table(t, path),
        Some(None) => bail!("[tool.ocilambda] in {} must be a table", path.display()),
    }
}

/// The `[tool.ocilambda]` settings of `dir/pyproject.toml`, for commands that need no
/// project (push); a missing file has none.
pub fn read_pyproject(dir: &Path) -> Result<Settings> {
    let path = dir.join("pyproject.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            tool_settings(&table, &path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What the process environment gives the library, captured once by the command layer:
/// the `OCILAMBDA_*` settings, SOURCE_DATE_EPOCH, an extra CA file (SSL_CERT_FILE) and
/// where the cache goes (OCILAMBDA_CACHE_DIR, XDG_CACHE_HOME, HOME).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Non-empty `OCILAMBDA_*` variables by name.
    vars: BTreeMap<String, String>,
    source_date_epoch: Option<String>,
    ssl_cert_file: Option<PathBuf>,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Environment {
    /// From `(name, value)` pairs, e.g. `std::env::vars_os()`; non-UTF-8 values are skipped.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Environment
    where
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        let mut env = Environment::default();
        for (k, v) in vars {
            let (Ok(k), Ok(v)) = (k.into().into_string(), v.into().into_string()) else {
                continue;
            };
            if v.trim().is_empty() {
                continue;
            }
            match k.as_str() {
                "SOURCE_DATE_EPOCH" => env.source_date_epoch = Some(v),
                "SSL_CERT_FILE" => env.ssl_cert_file = Some(v.into()),
                "XDG_CACHE_HOME" => env.xdg_cache_home = Some(v.into()),
                "HOME" => env.home = Some(v.into()),
                _ if k.starts_with("OCILAMBDA_") => {
                    env.vars.insert(k, v);
                }
                _ => {}
            }
        }
        env
    }

    /// The variable that sets `key`.
    pub fn var_name(key: &str) -> String {
        format!("OCILAMBDA_{}", key.to_uppercase().replace('-', "_"))
    }

    /// Settings from `OCILAMBDA_*` variables. Lists are comma-separated.
    pub fn settings(&self) -> Result<Settings> {
        Settings::read(&|key| {
            let var = Environment::var_name(key);
            self.vars.get(&var).map(|v| (var, Raw::Env(v.clone())))
        })
    }

    /// `OCILAMBDA_*` variables that are no setting, each with a did-you-mean hint: a typo
    /// would otherwise be ignored without a word.
    pub fn unknown_vars(&self) -> Vec<(String, String)> {
        let known: Vec<String> = KEYS.iter().map(|k| Environment::var_name(k)).collect();
        let mut all: Vec<&str> = known.iter().map(String::as_str).collect();
        all.extend(OTHER_VARS);
        self.vars
            .keys()
            .filter(|k| !all.contains(&k.as_str()))
            .map(|k| (k.clone(), suggestion(k, &all, "known variables")))
            .collect()
    }

    /// SOURCE_DATE_EPOCH, or the documented default.
    pub fn source_date_epoch(&self) -> Result<u64> {
        match &self.source_date_epoch {
            None => Ok(DEFAULT_EPOCH),
            Some(v) => v.trim().parse().map_err(|_| {
                crate::error::hint(
                    format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"),
                    "set it to e.g. `$(git log -1 --format=%ct)`, or unset it",
                )
            }),
        }
    }

    /// The extra CA file from SSL_CERT_FILE, if set.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ssl_cert_file.as_deref()
    }

    /// The cache directory: OCILAMBDA_CACHE_DIR, else `$XDG_CACHE_HOME/ocilambda`, else
    /// `~/.cache/ocilambda`.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = self.vars.get("OCILAMBDA_CACHE_DIR") {
            Ok(PathBuf::from(dir))
        } else if let Some(dir) = &self.xdg_cache_home {
            Ok(dir.join("ocilambda"))
        } else if let Some(home) = &self.home {
            Ok(home.join(".cache").join("ocilambda"))
        } else {
            Err(crate::error::hint(
                "no cache directory: neither OCILAMBDA_CACHE_DIR, XDG_CACHE_HOME nor HOME is set",
                "set OCILAMBDA_CACHE_DIR to a writable directory",
            ))
        }
    }
}

/// Parse `24h`, `30m`, `90s`, `2d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a duration (examples: 24h, 30m, 0)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("`{text}` is not a duration (examples: 24h, 30m, 0)"),
    };
    Ok(Duration::from_secs(secs))
}

/// Parse a size: `2GiB`, `500MiB`, `64KiB`, `1G` / `1GB` (powers of 1000), or bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("`{text}` is not a size (examples: 2GiB, 500MiB, 1GB)");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("500 MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "lots", "2XB", "99999999999999999999TiB", "-1G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let table: toml::Table = toml::from_str("invoke-cache-size = '1GiB'").unwrap();
        let s = Settings::from_table(&table, Path::new("p")).unwrap();
        assert_eq!(s.invoke_cache_size, Some(1 << 30));
        let err = env(&[("OCILAMBDA_INVOKE_CACHE_SIZE", "big")])
            .settings()
            .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("OCILAMBDA_INVOKE_CACHE_SIZE: "),
            "{err:#}"
        );
    }

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let table: toml::Table = toml::from_str("handlr = 'app.main.handler'").unwrap();
        let err = Settings::from_table(&table, Path::new("pyproject.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key `handlr` in [tool.ocilambda] of pyproject.toml"
        );
        assert!(
            crate::error::find_hint(&err)
                .unwrap()
                .starts_with("did you mean `handler`?")
        );
    }

    #[test]
    fn precedence_is_cli_env_pyproject() {
        let table: toml::Table =
            toml::from_str("handler = 'a.b'\narch = 'arm64'\ninclude = ['x/**']").unwrap();
        let py = Settings::from_table(&table, Path::new("p")).unwrap();
        let env = env(&[("OCILAMBDA_ARCH", "x86_64")]).settings().unwrap();
        let cli = Settings {
            handler: Some("c.d".into()),
            ..Default::default()
        };
        let s = py.overlaid_with(env).overlaid_with(cli);
        assert_eq!(s.handler.as_deref(), Some("c.d"));
        assert_eq!(s.arch, Some(Arch::X86_64));
        assert_eq!(s.include, Some(vec!["x/**".to_string()]));
    }

    #[test]
    fn wrong_types_and_booleans() {
        let table: toml::Table = toml::from_str("compile-bytecode = 'yes'").unwrap();
        assert!(Settings::from_table(&table, Path::new("p")).is_err());
        let env = env(&[("OCILAMBDA_COMPILE_BYTECODE", "0")]);
        assert_eq!(env.settings().unwrap().compile_bytecode, Some(false));
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn values_are_typed_where_they_are_read() {
        let table: toml::Table = toml::from_str("arch = 'sparc'").unwrap();
        let err = Settings::from_table(&table, Path::new("p")).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown architecture `sparc`"),
            "{err:#}"
        );
        let err = env(&[("OCILAMBDA_BASE_TTL", "soon")])
            .settings()
            .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("OCILAMBDA_BASE_TTL: "),
            "{err:#}"
        );
        let err = env(&[("OCILAMBDA_PYTHON_VERSION", "3.9")])
            .settings()
            .unwrap_err();
        assert!(crate::diagnostics::hint(&err).is_some());
        let s = env(&[("OCILAMBDA_ARCH", "aarch64"), ("OCILAMBDA_BASE_TTL", "30m")])
            .settings()
            .unwrap();
        assert_eq!(s.arch, Some(Arch::Arm64));
        assert_eq!(s.base_ttl, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn selection_is_a_setting_like_any_other() {
        let table: toml::Table =
            toml::from_str("package = 'api'\nextra = ['s3']\ngroup = 'dev'").unwrap();
        let py = Settings::from_table(&table, Path::new("p")).unwrap();
        let env = env(&[
            ("OCILAMBDA_ALL_EXTRAS", "true"),
            ("OCILAMBDA_GROUP", "dev,ops"),
        ]);
        let s = py.overlaid_with(env.settings().unwrap());
        let sel = Selection::new(&s, true);
        assert_eq!(sel.package.as_deref(), Some("api"));
        assert_eq!(sel.extras, ["s3"]);
        assert!(sel.all_extras && sel.offline && sel.wants_dev());
        assert_eq!(sel.groups, ["dev", "ops"]);
    }

    #[test]
    fn misspelled_variables_are_named_with_a_suggestion() {
        let env = env(&[
            ("OCILAMBDA_HANDLR", "a.b"),
            ("OCILAMBDA_CACHE_DIR", "/c"),
            ("OCILAMBDA_ARCH", "arm64"),
            ("PATH", "/bin"),
        ]);
        let unknown = env.unknown_vars();
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert_eq!(unknown[0].0, "OCILAMBDA_HANDLR");
        assert!(
            unknown[0]
                .1
                .starts_with("did you mean `OCILAMBDA_HANDLER`?")
        );
    }

    #[test]
    fn source_date_epoch_is_an_input() {
        assert_eq!(env(&[]).source_date_epoch().unwrap(), DEFAULT_EPOCH);
        assert_eq!(
            env(&[("SOURCE_DATE_EPOCH", "1700000000")])
                .source_date_epoch()
                .unwrap(),
            1_700_000_000
        );
        assert!(
            env(&[("SOURCE_DATE_EPOCH", "yesterday")])
                .source_date_epoch()
                .is_err()
        );
        assert_eq!(
            env(&[("SSL_CERT_FILE", "/ca.pem")]).ca_cert(),
            Some(Path::new("/ca.pem"))
        );
    }

    #[test]
    fn a_tool_value_that_is_not_a_table_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = 'x'\n[tool]\nocilambda = 'reg.example/fn'\n",
        )
        .unwrap();
        let err = read_pyproject(dir.path()).unwrap_err();
        assert!(err.to_string().contains("must be a table"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(read_pyproject(empty.path()).unwrap(), Settings::default());
    }
}
