//! Showing the configuration to people: the effective TOML with secrets redacted, and the
//! `config check` report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::schema::Kind;
use super::{ConfigError, Settings};

/// What `config check` found: the text to print, and whether the configuration is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The effective configuration when valid, else one line per problem.
    pub text: String,
    /// False when the configuration has problems, each printed with its key.
    pub valid: bool,
}

/// The roster table the migrations create.
const DEFAULT_RELATION: &str = "desired_invitees";

/// Validates the configuration as the service would load it, and returns the text to
/// print: when valid, the effective configuration (secrets redacted, each value not at its
/// default annotated with its origin), else one line per problem.
///
/// Beyond loading, a configured secret key is read (from its file, if so) and checked.
/// A missing key is only a warning, since `migrate` and `import` run without one.
pub fn check(file: Option<&Path>, env: &HashMap<String, String>) -> Checked {
    let loaded = match Settings::load_traced(file, env) {
        Ok(loaded) => loaded,
        Err(e) => return invalid(&e),
    };
    let clerk = &loaded.settings.clerk;
    let mut out = String::from("# configuration is valid\n");
    let _ = writeln!(out, "# layers, lowest first: {}", loaded.layers.join(" < "));
    if clerk.secret_key.is_some() || clerk.secret_key_file.is_some() {
        if let Err(e) = clerk.secret_key() {
            return invalid(&e);
        }
    } else {
        out.push_str(
            "# warning: no Clerk secret key is set (clerk.secret_key, clerk.secret_key_file \
             or CLERK_SECRET_KEY); run, sync and plan need one\n",
        );
    }
    let relation = &loaded.settings.source.relation;
    if relation != DEFAULT_RELATION {
        let _ = writeln!(
            out,
            "# note: source.relation is \"{relation}\". If it is a view, invite-sync only reads it: \
             `import` and the roster webhook need a table (they refuse a view), and no change \
             trigger wakes the service unless you add one to the tables the view reads \
             (otherwise sync.schedule drives it)"
        );
    }
    out.push_str("# secrets are redacted; a comment after a value names where it came from\n\n");
    out.push_str(&render(&loaded.settings, Some(&loaded.origins)));
    Checked {
        text: out,
        valid: true,
    }
}

fn invalid(error: &ConfigError) -> Checked {
    let heading = match error.problems().len() {
        1 => "invalid configuration:".to_owned(),
        n => format!("invalid configuration ({n} problems):"),
    };
    let mut out = heading;
    for problem in error.problems() {
        let _ = write!(out, "\n  {problem}");
    }
    out.push('\n');
    Checked {
        text: out,
        valid: false,
    }
}

/// The effective configuration as TOML: every key of every section, in the order of
/// config/default.toml, each value as the settings serialise it (secrets redacted by their
/// type), unset keys as comments, and with `origins` each value's origin when it is not the
/// built-in default.
pub(crate) fn render(settings: &Settings, origins: Option<&HashMap<String, String>>) -> String {
    let values = match toml::Value::try_from(settings) {
        Ok(toml::Value::Table(values)) => values,
        Ok(_) => return "# the configuration cannot be shown: it is not a table\n".to_owned(),
        Err(e) => return format!("# the configuration cannot be shown: {e}\n"),
    };
    let defaults = toml::from_str::<toml::Table>(super::DEFAULTS_TOML).unwrap_or_default();
    let mut out = String::new();
    for (index, section) in Settings::SECTIONS.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "[{}]", section.name);
        for spec in section.keys {
            let key = format!("{}.{}", section.name, spec.name);
            let mut value = values
                .get(section.name)
                .and_then(|fields| fields.get(spec.name))
                .cloned();
            if let (Kind::Table(_), Some(toml::Value::Table(table))) = (&spec.kind, &mut value) {
                drop_again_the_defaults_left_out(table, super::get(&defaults, &key));
            }
            let origin = origins.and_then(|o| o.get(&key));
            let name = spec.name;
            let _ = match (value, origin) {
                (Some(value), None) => writeln!(out, "{name} = {value}"),
                (Some(value), Some(origin)) => writeln!(out, "{name} = {value}  # {origin}"),
                (None, None) => writeln!(out, "# {name} is not set"),
                (None, Some(origin)) => writeln!(out, "# {name} is not set ({origin})"),
            };
        }
    }
    out
}

/// A table key as a file would set it: a file's table joins the built-in one, so a
/// built-in entry that was dropped is written as `""`, which drops it again.
fn drop_again_the_defaults_left_out(table: &mut toml::Table, built_in: Option<&toml::Value>) {
    let Some(built_in) = built_in.and_then(toml::Value::as_table) else {
        return;
    };
    for name in built_in.keys() {
        table
            .entry(name.clone())
            .or_insert_with(|| toml::Value::String(String::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_rendered_in_schema_order() {
        let settings = match Settings::defaults() {
            Ok(settings) => settings,
            Err(e) => panic!("the built-in defaults are invalid: {e}"),
        };
        let mut rendered: Vec<String> = Vec::new();
        let mut section = "";
        for line in render(&settings, None).lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some(unset) = line.strip_prefix("# ") {
                let name = unset.split(" is not set").next().unwrap_or(unset);
                rendered.push(format!("{section}.{name}"));
            } else if let Some((name, _)) = line.split_once(" = ") {
                rendered.push(format!("{section}.{name}"));
            }
        }
        let known: Vec<String> = Settings::SECTIONS
            .iter()
            .flat_map(|section| {
                section
                    .keys
                    .iter()
                    .map(move |spec| format!("{}.{}", section.name, spec.name))
            })
            .collect();
        assert_eq!(rendered, known);
    }
}
