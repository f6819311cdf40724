//! Showing the configuration to people: the effective TOML with secrets redacted, and the
//! `config check` report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::{ConfigError, Settings, REDACTED};

/// `config check` exit code: the configuration is valid.
pub const CHECK_OK: i32 = 0;
/// `config check` exit code: the configuration has problems, each printed with its key.
pub const CHECK_INVALID: i32 = 2;

/// The roster table the migrations create.
const DEFAULT_RELATION: &str = "desired_invitees";

/// Validates the configuration as the service would load it, and returns the text to
/// print with the exit code: [`CHECK_OK`] and the effective configuration (secrets
/// redacted, each value not at its default annotated with its origin), or
/// [`CHECK_INVALID`] and one line per problem.
///
/// Beyond loading, a configured secret key is read (from its file, if so) and checked.
/// A missing key is only a warning, since `migrate` and `import` run without one.
pub fn check(file: Option<&Path>, env: &HashMap<String, String>) -> (String, i32) {
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
    (out, CHECK_OK)
}

fn invalid(error: &ConfigError) -> (String, i32) {
    let heading = match error.problems().len() {
        1 => "invalid configuration:".to_owned(),
        n => format!("invalid configuration ({n} problems):"),
    };
    let mut out = heading;
    for problem in error.problems() {
        let _ = write!(out, "\n  {problem}");
    }
    out.push('\n');
    (out, CHECK_INVALID)
}

type Fields = Vec<(&'static str, Option<toml::Value>)>;

/// Every key with its value, in the order of config/default.toml; `None` when unset.
pub(crate) fn entries(settings: &Settings) -> Vec<(&'static str, Fields)> {
    use toml::Value as V;
    let text = |s: &str| Some(V::String(s.to_owned()));
    let int = |n: u64| Some(V::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
    let boolean = |b: bool| Some(V::Boolean(b));
    let Settings {
        database,
        clerk,
        source,
        sync,
        http,
        scim,
        log,
        retention,
    } = settings;
    vec![
        (
            "database",
            vec![
                ("url", text(&database.redacted_url())),
                ("max_connections", int(database.max_connections.into())),
                (
                    "min_connections",
                    database.min_connections.and_then(|n| int(n.into())),
                ),
                (
                    "connect_timeout_seconds",
                    int(database.connect_timeout_seconds),
                ),
                ("migrate_on_start", boolean(database.migrate_on_start)),
            ],
        ),
        (
            "clerk",
            vec![
                ("api_url", text(clerk.api_url.as_str())),
                ("secret_key", clerk.secret_key.as_ref().and(text(REDACTED))),
                (
                    "secret_key_file",
                    clerk
                        .secret_key_file
                        .as_ref()
                        .and_then(|p| text(&p.display().to_string())),
                ),
                ("timeout_seconds", int(clerk.timeout_seconds)),
                (
                    "requests_per_window",
                    clerk.requests_per_window.and_then(|n| int(n.into())),
                ),
                ("request_window_seconds", int(clerk.request_window_seconds)),
                (
                    "bulk_create_per_window",
                    int(clerk.bulk_create_per_window.into()),
                ),
                (
                    "single_create_per_window",
                    int(clerk.single_create_per_window.into()),
                ),
                ("create_window_seconds", int(clerk.create_window_seconds)),
                ("max_attempts", int(clerk.max_attempts.into())),
                ("settle_after_seconds", int(clerk.settle_after_seconds)),
                (
                    "user_check_max_age_seconds",
                    int(clerk.user_check_max_age_seconds),
                ),
                (
                    "user_checks_per_cycle",
                    int(clerk.user_checks_per_cycle.into()),
                ),
            ],
        ),
        ("source", vec![("relation", text(&source.relation))]),
        (
            "sync",
            vec![
                ("schedule", text(&sync.schedule)),
                ("full_schedule", text(&sync.full_schedule)),
                ("dry_run", boolean(sync.dry_run)),
                ("notify", boolean(sync.notify)),
                ("ignore_existing", boolean(sync.ignore_existing)),
                (
                    "expires_in_days",
                    sync.expires_in_days.and_then(|n| int(n.into())),
                ),
                ("redirect_url", sync.redirect_url.as_deref().and_then(text)),
                (
                    "template_slug",
                    sync.template_slug.and_then(|slug| text(slug.as_str())),
                ),
                ("max_revocations", int(sync.max_revocations.into())),
                (
                    "max_revocation_ratio",
                    Some(V::Float(sync.max_revocation_ratio)),
                ),
                (
                    "protected",
                    Some(V::Array(
                        sync.protected
                            .iter()
                            .map(|p| V::String(p.clone()))
                            .collect(),
                    )),
                ),
                ("ownership", text(sync.ownership.as_str())),
                ("reinvite_expired", boolean(sync.reinvite_expired)),
                ("on_change", text(sync.on_change.as_str())),
                (
                    "shutdown_timeout_seconds",
                    int(sync.shutdown_timeout_seconds),
                ),
                ("target", text(&sync.target)),
                ("debounce_seconds", Some(V::Float(sync.debounce_seconds))),
            ],
        ),
        (
            "http",
            vec![
                ("listen", text(&http.listen.to_string())),
                (
                    "admin_listen",
                    http.admin_listen
                        .map(|a| toml::Value::String(a.to_string())),
                ),
                (
                    "header_read_timeout_seconds",
                    int(http.header_read_timeout_seconds),
                ),
                ("request_timeout_seconds", int(http.request_timeout_seconds)),
                ("max_connections", int(u64::from(http.max_connections))),
                (
                    "webhook_concurrency",
                    int(u64::from(http.webhook_concurrency)),
                ),
                ("api_token", http.api_token.as_ref().and(text(REDACTED))),
                (
                    "roster_webhook_secret",
                    redacted_list(http.roster_webhook_secret.len()),
                ),
                (
                    "clerk_webhook_secret",
                    redacted_list(http.clerk_webhook_secret.len()),
                ),
            ],
        ),
        (
            "scim",
            vec![
                ("token", redacted_list(scim.token.len())),
                ("email", text(scim.email.as_str())),
                ("metadata", Some(V::Table(metadata_table(&scim.metadata)))),
            ],
        ),
        (
            "log",
            vec![
                ("format", text(log.format.as_str())),
                ("level", text(&log.level)),
                ("redact_emails", boolean(log.redact_emails)),
            ],
        ),
        ("retention", vec![("days", int(retention.days.into()))]),
    ]
}

/// `scim.metadata` as a file would set it: a file's table joins the built-in one, so a
/// built-in entry that was dropped is written as `""`, which drops it again.
fn metadata_table(metadata: &std::collections::BTreeMap<String, String>) -> toml::Table {
    let built_in: Vec<String> = toml::from_str::<toml::Table>(super::DEFAULTS_TOML)
        .ok()
        .and_then(|defaults| {
            let table = defaults.get("scim")?.get("metadata")?.as_table()?.clone();
            Some(table.keys().cloned().collect())
        })
        .unwrap_or_default();
    let mut table: toml::Table = metadata
        .iter()
        .map(|(key, path)| (key.clone(), toml::Value::String(path.clone())))
        .collect();
    for key in built_in {
        table
            .entry(key)
            .or_insert_with(|| toml::Value::String(String::new()));
    }
    table
}

fn redacted_list(count: usize) -> Option<toml::Value> {
    Some(toml::Value::Array(
        (0..count)
            .map(|_| toml::Value::String(REDACTED.to_owned()))
            .collect(),
    ))
}

pub(crate) fn render(settings: &Settings, origins: Option<&HashMap<String, String>>) -> String {
    let mut out = String::new();
    for (index, (section, fields)) in entries(settings).into_iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "[{section}]");
        for (name, value) in fields {
            let origin = origins.and_then(|o| o.get(&format!("{section}.{name}")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::SPECS;

    #[test]
    fn every_key_is_rendered_in_schema_order() {
        let settings = match Settings::defaults() {
            Ok(settings) => settings,
            Err(e) => panic!("the built-in defaults are invalid: {e}"),
        };
        let rendered: Vec<String> = entries(&settings)
            .into_iter()
            .flat_map(|(section, fields)| {
                fields
                    .into_iter()
                    .map(move |(name, _)| format!("{section}.{name}"))
            })
            .collect();
        let known: Vec<String> = SPECS
            .iter()
            .map(|spec| format!("{}.{}", spec.section, spec.name))
            .collect();
        assert_eq!(rendered, known);
    }
}
