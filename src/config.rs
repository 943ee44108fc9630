//! The one settings table shared by every command.
//!
//! Each setting is a CLI flag, an `OCILAMBDA_<NAME>` environment variable and a key of
//! `[tool.ocilambda]` in pyproject.toml; precedence is CLI > environment > pyproject >
//! built-in default. This module only gathers and type-checks values; what they mean is
//! decided by the steps that use them.

use anyhow::{Result, bail};
use std::path::Path;

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
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub base: Option<String>,
    pub python_version: Option<String>,
    pub handler: Option<String>,
    pub arch: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub compile_bytecode: Option<bool>,
    pub repository: Option<String>,
    pub sbom: Option<bool>,
    /// How long a cached base tag resolution is trusted, e.g. `24h`, `30m`, `0`.
    pub base_ttl: Option<String>,
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
        }
    }

    /// Values from `OCILAMBDA_*` variables. Lists are comma-separated.
    pub fn from_env() -> Result<Settings> {
        Self::from_lookup(|key| {
            let var = format!("OCILAMBDA_{}", key.to_uppercase().replace('-', "_"));
            std::env::var(&var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (var, v))
        })
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<(String, String)>) -> Result<Settings> {
        let string = |key: &str| lookup(key).map(|(_, v)| v);
        let list = |key: &str| {
            lookup(key).map(|(_, v)| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };
        let boolean = |key: &str| -> Result<Option<bool>> {
            match lookup(key) {
                None => Ok(None),
                Some((var, v)) => match v.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Ok(Some(true)),
                    "0" | "false" | "no" | "off" => Ok(Some(false)),
                    _ => bail!("{var}=`{v}` is not a boolean (use true or false)"),
                },
            }
        };
        Ok(Settings {
            base: string("base"),
            python_version: string("python-version"),
            handler: string("handler"),
            arch: string("arch"),
            include: list("include"),
            exclude: list("exclude"),
            compile_bytecode: boolean("compile-bytecode")?,
            repository: string("repository"),
            sbom: boolean("sbom")?,
            base_ttl: string("base-ttl"),
        })
    }

    /// Values from a `[tool.ocilambda]` table; unknown keys are an error with a suggestion.
    pub fn from_table(table: &toml::Table, file: &Path) -> Result<Settings> {
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                let best = KEYS
                    .iter()
                    .map(|k| (strsim::jaro_winkler(k, key), k))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .filter(|(score, _)| *score > 0.7);
                let hint = match best {
                    Some((_, k)) => {
                        format!("did you mean `{k}`? (known keys: {})", KEYS.join(", "))
                    }
                    None => format!("known keys: {}", KEYS.join(", ")),
                };
                bail!(crate::error::hint(
                    format!(
                        "unknown key `{key}` in [tool.ocilambda] of {}",
                        file.display()
                    ),
                    hint
                ));
            }
        }
        let wrong = |key: &str, what: &str| {
            anyhow::anyhow!(
                "`{key}` in [tool.ocilambda] of {} must be {what}",
                file.display()
            )
        };
        let string = |key: &str| -> Result<Option<String>> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(wrong(key, "a string")),
            }
        };
        let boolean = |key: &str| -> Result<Option<bool>> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
                Some(_) => Err(wrong(key, "true or false")),
            }
        };
        let list = |key: &str| -> Result<Option<Vec<String>>> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| wrong(key, "a list of strings"))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(_) => Err(wrong(key, "a list of strings")),
            }
        };
        Ok(Settings {
            base: string("base")?,
            python_version: string("python-version")?,
            handler: string("handler")?,
            arch: string("arch")?,
            include: list("include")?,
            exclude: list("exclude")?,
            compile_bytecode: boolean("compile-bytecode")?,
            repository: string("repository")?,
            sbom: boolean("sbom")?,
            base_ttl: string("base-ttl")?,
        })
    }
}

/// Parse `24h`, `30m`, `90s`, `2d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
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
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let env = Settings::from_lookup(|k| {
            (k == "arch").then(|| ("OCILAMBDA_ARCH".into(), "x86_64".into()))
        })
        .unwrap();
        let cli = Settings {
            handler: Some("c.d".into()),
            ..Default::default()
        };
        let s = py.overlaid_with(env).overlaid_with(cli);
        assert_eq!(s.handler.as_deref(), Some("c.d"));
        assert_eq!(s.arch.as_deref(), Some("x86_64"));
        assert_eq!(s.include, Some(vec!["x/**".to_string()]));
    }

    #[test]
    fn wrong_types_and_booleans() {
        let table: toml::Table = toml::from_str("compile-bytecode = 'yes'").unwrap();
        assert!(Settings::from_table(&table, Path::new("p")).is_err());
        let env = Settings::from_lookup(|k| {
            (k == "compile-bytecode").then(|| ("OCILAMBDA_COMPILE_BYTECODE".into(), "0".into()))
        })
        .unwrap();
        assert_eq!(env.compile_bytecode, Some(false));
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("soon").is_err());
    }
}
