//! The layers above the built-in defaults: the `--config` file and the environment, as
//! `config` sources whose values remember exactly where they came from.

use std::collections::HashMap;
use std::path::Path;

use config::{Map, Source, Value, ValueKind};

use super::error::Problem;

/// Prefix of the variables that set any key: `INVITE_SYNC__SECTION__KEY`.
pub const ENV_PREFIX: &str = "INVITE_SYNC__";
/// Separator between the section and the key in a variable's name.
pub const ENV_SEPARATOR: &str = "__";
/// Conventional variables, applied above everything else.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";
pub const CLERK_SECRET_KEY_VAR: &str = "CLERK_SECRET_KEY";
/// Set by systemd for a unit with `LoadCredential=`; `%d` in `clerk.secret_key_file` stands for it.
pub const CREDENTIALS_DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";

const ENV_ORIGIN: &str = "env ";
const FILE_ORIGIN: &str = "file ";

pub(crate) fn is_env_origin(origin: Option<&str>) -> bool {
    origin.is_some_and(|o| o.starts_with(ENV_ORIGIN))
}

/// The variable that sets a dotted key: `sync.dry_run` → `INVITE_SYNC__SYNC__DRY_RUN`.
pub fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(ENV_SEPARATOR)
    )
}

/// The variables of the process that configuration reads: the prefixed ones, the
/// conventional ones, and `CREDENTIALS_DIRECTORY`. A value that is not UTF-8 is kept
/// lossily, so that validation refuses it rather than silently skipping it.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            let relevant = name.starts_with(ENV_PREFIX)
                || name == DATABASE_URL_VAR
                || name == CLERK_SECRET_KEY_VAR
                || name == CREDENTIALS_DIRECTORY_VAR;
            relevant.then(|| (name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// A TOML document as a `config` source, every value tagged with `origin`.
#[derive(Debug, Clone)]
pub(crate) struct TomlSource {
    origin: String,
    table: toml::Table,
}

impl TomlSource {
    /// Reads and parses the `--config` file. A syntax error is reported by position only:
    /// quoting the offending line could print a secret.
    pub(crate) fn read(path: &Path) -> Result<TomlSource, Problem> {
        let key = path.display().to_string();
        let text = super::file::read_text(path, super::file::CONFIG_FILE_LIMIT)
            .map_err(|e| Problem::new(key.clone(), format!("cannot read the config file: {e}")))?;
        let table = toml::from_str::<toml::Table>(&text).map_err(|e| {
            let position = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(&text, span.start);
                    format!(" at line {line}, column {column}")
                })
                .unwrap_or_default();
            Problem::new(
                key.clone(),
                format!("not valid TOML{position}: {}", e.message().trim()),
            )
        })?;
        Ok(TomlSource {
            origin: format!("{FILE_ORIGIN}{key}"),
            table,
        })
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

fn to_config_value(value: &toml::Value, origin: &String) -> Value {
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s.clone()),
        toml::Value::Integer(n) => ValueKind::I64(*n),
        toml::Value::Float(x) => ValueKind::Float(*x),
        toml::Value::Boolean(b) => ValueKind::Boolean(*b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => ValueKind::Array(
            items
                .iter()
                .map(|item| to_config_value(item, origin))
                .collect(),
        ),
        toml::Value::Table(table) => ValueKind::Table(
            table
                .iter()
                .map(|(k, v)| (k.clone(), to_config_value(v, origin)))
                .collect(),
        ),
    };
    Value::new(Some(origin), kind)
}

impl Source for TomlSource {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self
            .table
            .iter()
            .map(|(k, v)| (k.clone(), to_config_value(v, &self.origin)))
            .collect())
    }
}

/// Environment variables already mapped to dotted keys. Values stay text here; the
/// schema parses them to the key's type, so `INVITE_SYNC__SYNC__TARGET=123` stays a name.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvSource {
    entries: Vec<EnvEntry>,
}

#[derive(Debug, Clone)]
struct EnvEntry {
    key: String,
    var: String,
    value: String,
}

impl EnvSource {
    /// The `INVITE_SYNC__SECTION__KEY` layer, and a problem for each variable with the
    /// prefix that names no `section.key`, or that another variable already sets.
    pub(crate) fn prefixed(env: &HashMap<String, String>) -> (EnvSource, Vec<Problem>) {
        let mut names: Vec<&String> = env.keys().filter(|n| n.starts_with(ENV_PREFIX)).collect();
        names.sort();
        let mut source = EnvSource::default();
        let mut problems = Vec::new();
        let mut seen: HashMap<String, &str> = HashMap::new();
        for name in names {
            let rest = &name[ENV_PREFIX.len()..];
            let parts: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
            let key = parts.join(".");
            let origin = Some(format!("{ENV_ORIGIN}{name}"));
            if parts.len() != 2 || parts.iter().any(String::is_empty) {
                problems.push(
                    Problem::new(
                        key,
                        format!(
                            "is not a configuration key: expected {ENV_PREFIX}SECTION{ENV_SEPARATOR}KEY"
                        ),
                    )
                    .with_origin(origin),
                );
                continue;
            }
            if let Some(first) = seen.get(&key) {
                problems.push(
                    Problem::new(key, format!("also set by {first}; set it once"))
                        .with_origin(origin),
                );
                continue;
            }
            seen.insert(key.clone(), name);
            source.entries.push(EnvEntry {
                key,
                var: name.clone(),
                value: env.get(name).cloned().unwrap_or_default(),
            });
        }
        (source, problems)
    }

    /// The conventional `DATABASE_URL` and `CLERK_SECRET_KEY`. Empty ones count as unset,
    /// as deployment templates often leave them blank.
    pub(crate) fn conventional(env: &HashMap<String, String>) -> EnvSource {
        let entries = [
            (DATABASE_URL_VAR, "database.url"),
            (CLERK_SECRET_KEY_VAR, "clerk.secret_key"),
        ]
        .into_iter()
        .filter_map(|(var, key)| {
            let value = env.get(var)?;
            (!value.trim().is_empty()).then(|| EnvEntry {
                key: key.to_owned(),
                var: var.to_owned(),
                value: value.clone(),
            })
        })
        .collect();
        EnvSource { entries }
    }

    pub(crate) fn vars(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.var.as_str())
    }
}

impl Source for EnvSource {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self
            .entries
            .iter()
            .map(|entry| {
                let origin = format!("{ENV_ORIGIN}{}", entry.var);
                let value = Value::new(Some(&origin), ValueKind::String(entry.value.clone()));
                (entry.key.clone(), value)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_map_to_keys() {
        let (source, problems) = EnvSource::prefixed(&env(&[
            ("INVITE_SYNC__SYNC__DRY_RUN", "true"),
            ("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "5"),
            ("UNRELATED", "x"),
            ("INVITE_SYNC_CONFIG", "/etc/x.toml"),
        ]));
        assert!(problems.is_empty());
        let keys: Vec<&str> = source.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["clerk.timeout_seconds", "sync.dry_run"]);
        assert_eq!(env_var_name("sync.dry_run"), "INVITE_SYNC__SYNC__DRY_RUN");
    }

    #[test]
    fn malformed_names_are_problems() {
        let (source, problems) = EnvSource::prefixed(&env(&[
            ("INVITE_SYNC__SYNC", "x"),
            ("INVITE_SYNC__SYNC__DRY__RUN", "x"),
            ("INVITE_SYNC__SYNC__", "x"),
        ]));
        assert!(source.entries.is_empty());
        assert_eq!(problems.len(), 3);
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_column("a = 1\nb = ?", 10), (2, 5));
        assert_eq!(line_column("x", 0), (1, 1));
    }
}
