//! The checks of string values: each gives the normalised value, or why it is refused. None
//! of them repeats its input: for secret keys the walk shows no value.

use std::net::SocketAddr;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use url::Url;

use super::secret::scrub_password;
use crate::clerk::KeyKind;

/// The parameters sqlx reads from a connection URL. Refusing others also keeps sqlx from
/// logging an unrecognised parameter's value, which might be a mistyped password.
const PG_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// What to do instead of a libpq parameter the driver does not read.
fn unsupported_hint(name: &str) -> Option<&'static str> {
    match name {
        "connect_timeout" => Some("set database.connect_timeout_seconds instead of connect_timeout"),
        "target_session_attrs" => Some(
            "target_session_attrs is not supported: name the primary's address (a read-write service or DNS name) in the URL",
        ),
        _ => None,
    }
}

pub(crate) fn check_database_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err("must start with postgres:// or postgresql://".to_owned());
    }
    let mut unknown: Vec<String> = url
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .filter(|name| !PG_PARAMS.contains(&name.as_str()) && !name.starts_with("options["))
        .collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        let hints: Vec<&str> = unknown
            .iter()
            .filter_map(|name| unsupported_hint(name))
            .collect();
        return Err(format!(
            "has unknown connection parameters: {}{}",
            unknown.join(", "),
            if hints.is_empty() {
                String::new()
            } else {
                format!(" ({})", hints.join("; "))
            }
        ));
    }
    PgConnectOptions::from_str(text)
        .map_err(|e| scrub_password(&url, &format!("is not usable: {e}")))?;
    Ok(text.to_owned())
}

fn check_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".to_owned());
    }
    Ok(url)
}

pub(crate) fn check_api_url(text: &str) -> Result<String, String> {
    let url = check_http_url(text)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_owned());
    }
    Ok(text.to_owned())
}

/// An `events.endpoints` URL: http or https, with a host and no credentials (the URL is
/// shown in `status` and the logs; the endpoint's secret signs instead).
pub(crate) fn check_endpoint_url(text: &str) -> Result<String, String> {
    check_http_url(text.trim()).map(|_| text.trim().to_owned())
}

pub(crate) fn check_redirect_url(text: &str) -> Result<String, String> {
    check_http_url(text).map(|_| text.to_owned())
}

pub(crate) const SECRET_KEY_PREFIXES: [&str; 2] = ["sk_test_", "sk_live_"];

/// A Clerk secret key, trimmed. Reasons never include the key.
pub(crate) fn check_secret_key(text: &str) -> Result<String, String> {
    let key = text.trim();
    if key.is_empty() {
        return Err("is empty".to_owned());
    }
    let Some(rest) = SECRET_KEY_PREFIXES
        .iter()
        .find_map(|prefix| key.strip_prefix(prefix))
    else {
        return Err("does not start with sk_test_ or sk_live_ (value not shown)".to_owned());
    };
    if rest.is_empty() {
        return Err("has nothing after its sk_test_ or sk_live_ prefix".to_owned());
    }
    if KeyKind::of(key).is_none() {
        return Err("contains characters other than printable ASCII (value not shown)".to_owned());
    }
    Ok(key.to_owned())
}

pub(crate) fn check_path(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("is empty".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// An unquoted SQL identifier as PostgreSQL reads one, limited to ASCII.
pub(crate) fn is_sql_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && part.len() <= 63
}

pub(crate) fn check_relation(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 2 {
        return Err("must be `name` or `schema.name`, with at most one dot".to_owned());
    }
    if parts.iter().all(|part| is_sql_identifier(part)) {
        // The name is quoted in SQL, so `Desired_Invitees` would name another table than the
        // `desired_invitees` an unquoted CREATE TABLE Desired_Invitees made.
        if text.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "must be lower case: PostgreSQL folds unquoted names to lower case, so write {:?}",
                text.to_ascii_lowercase()
            ));
        }
        Ok(text.to_owned())
    } else {
        Err(
            "must be `name` or `schema.name`, each part an SQL identifier \
             ([A-Za-z_][A-Za-z0-9_]*, at most 63 characters)"
                .to_owned(),
        )
    }
}

pub(crate) fn check_schedule(text: &str) -> Result<String, String> {
    let fields = text.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "must be a cron expression of 6 or 7 fields (sec min hour day-of-month month \
             day-of-week [year]), found {fields}"
        ));
    }
    // The scheduler's own parser, so that what passes here also runs.
    tokio_cron_scheduler::Job::new(text, |_, _| {})
        .map_err(|_| "is not a valid cron expression".to_owned())?;
    Ok(text.to_owned())
}

pub(crate) fn check_target(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && text.len() <= 63;
    if valid {
        Ok(text.to_owned())
    } else {
        Err(
            "must be 1 to 63 characters: ASCII letters, digits, `_`, `-`, `.`, \
             starting with a letter or digit"
                .to_owned(),
        )
    }
}

pub(crate) fn check_socket_addr(text: &str) -> Result<String, String> {
    text.parse::<SocketAddr>()
        .map(|_| text.to_owned())
        .map_err(|_| "must be an IP address and port, e.g. 127.0.0.1:8080 or [::]:8080".to_owned())
}

pub(crate) fn check_filter(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("is empty".to_owned());
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("is not a tracing filter directive: {e}"))
}

/// A bearer token for the `/v1/` endpoints. Reasons never include the token.
pub(crate) fn check_api_token(text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.chars().count() < 16 {
        return Err("must be at least 16 characters (value not shown)".to_owned());
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (value not shown)".to_owned());
    }
    Ok(token.to_owned())
}

/// One `scim.metadata` entry, `key=path`: a metadata key and the SCIM attribute path whose
/// value it takes. Returns the path, trimmed.
pub(crate) fn check_metadata_mapping(text: &str) -> Result<String, String> {
    let (key, path) = text.split_once('=').unwrap_or((text, ""));
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !key_ok {
        return Err(
            "the metadata key must be 1 to 64 ASCII letters, digits, `_` or `-`".to_owned(),
        );
    }
    crate::scim::check_attribute_path(path.trim())?;
    Ok(path.trim().to_owned())
}

/// The `scim.groups` entries, each a table `{ group, organization, role, precedence }`:
/// every problem, each naming its entry by position and group.
pub(crate) fn check_group_mappings(items: Vec<serde_json::Value>) -> Result<toml::Value, String> {
    use crate::scim::groups_map::{check_mappings, GroupMapping, FIELDS};
    let mut problems = Vec::new();
    let mut entries = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let group = item
            .get("group")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned();
        let named = GroupMapping::named(index, &group);
        let Some(fields) = item.as_object() else {
            problems.push(format!(
                "{named}: expected a table {{ group, organization, role, precedence }}"
            ));
            continue;
        };
        let mut unknown: Vec<&String> = fields
            .keys()
            .filter(|name| !FIELDS.contains(&name.as_str()))
            .collect();
        unknown.sort();
        if !unknown.is_empty() {
            let names: Vec<String> = unknown.iter().map(|name| format!("`{name}`")).collect();
            problems.push(format!(
                "{named}: unknown field {}; an entry has {}",
                names.join(", "),
                FIELDS.join(", ")
            ));
            continue;
        }
        let missing: Vec<&str> = ["group", "organization"]
            .into_iter()
            .filter(|name| !fields.contains_key(*name))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("{named}: {} must be set", missing.join(" and ")));
            continue;
        }
        match serde_json::from_value::<GroupMapping>(item) {
            Ok(entry) => entries.push(entry),
            Err(e) => problems.push(format!(
                "{named}: {e} (group, organization and role are strings, precedence an integer)"
            )),
        }
    }
    if problems.is_empty() {
        match check_mappings(&entries) {
            Ok(checked) => entries = checked,
            Err(mut found) => problems.append(&mut found),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    toml::Value::try_from(entries).map_err(|e| format!("cannot be stored: {e}"))
}

/// A webhook signing secret: `whsec_` and base64. Reasons never include the secret.
pub(crate) fn check_webhook_secret(text: &str) -> Result<String, String> {
    use base64::Engine;
    let secret = text.trim();
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(secret.to_owned()),
        _ => Err("must be whsec_ followed by base64 (value not shown)".to_owned()),
    }
}

/// An email or an `@domain`, normalised like the roster's emails: trimmed, lower-cased.
pub(crate) fn check_protected(text: &str) -> Result<String, String> {
    let entry = text.trim().to_lowercase();
    let valid_domain = |domain: &str| {
        !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.chars().any(char::is_whitespace)
    };
    let valid = match entry.split_once('@') {
        Some(("", domain)) => valid_domain(domain),
        Some((local, domain)) => !local.chars().any(char::is_whitespace) && valid_domain(domain),
        None => false,
    };
    if valid {
        Ok(entry)
    } else {
        Err("is neither an email address nor an @domain".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_names() {
        for good in ["desired_invitees", "hr.people", "_x", "a1.b_2"] {
            assert!(check_relation(good).is_ok(), "{good}");
        }
        for folded in ["Desired_Invitees", "HR.people", "A1.b_2"] {
            let error = check_relation(folded).unwrap_err();
            assert!(error.contains("lower case"), "{folded}: {error}");
            assert!(error.contains(&folded.to_ascii_lowercase()), "{error}");
        }
        for bad in [
            "", "a.b.c", "1abc", "a-b", "a b", "a.", ".a", "a;drop", "\"a\"",
        ] {
            assert!(check_relation(bad).is_err(), "{bad}");
        }
        assert!(check_relation(&"a".repeat(64)).is_err());
    }

    #[test]
    fn schedules() {
        assert!(check_schedule("0 */5 * * * *").is_ok());
        assert!(check_schedule("0 0 3 * * Mon").is_ok());
        assert!(check_schedule("*/5 * * * *").is_err());
        assert!(check_schedule("0 */5 * * * * * *").is_err());
        assert!(check_schedule("0 */5 * * * nope").is_err());
    }

    #[test]
    fn secret_keys() {
        assert_eq!(
            check_secret_key(" sk_test_abc\n").as_deref(),
            Ok("sk_test_abc")
        );
        assert!(check_secret_key("sk_live_abc").is_ok());
        assert!(check_secret_key("sk_test_").is_err());
        assert!(check_secret_key("pk_test_abc").is_err());
        assert!(check_secret_key("sk_test_a b").is_err());
        let reason = check_secret_key("xx_SUPERSECRET").unwrap_err();
        assert!(!reason.contains("SUPERSECRET"));
    }

    #[test]
    fn protected_entries() {
        assert_eq!(
            check_protected(" CEO@Example.com ").as_deref(),
            Ok("ceo@example.com")
        );
        assert_eq!(
            check_protected("@Board.example.com").as_deref(),
            Ok("@board.example.com")
        );
        for bad in ["", "example.com", "@", "a@", "a@b@c", "@.com", "a b@x.com"] {
            assert!(check_protected(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_urls() {
        assert!(check_database_url("postgres://u:p@localhost:5432/db?sslmode=require").is_ok());
        assert!(check_database_url("postgresql:///db?host=/run/postgresql").is_ok());
        assert!(check_database_url("mysql://localhost/db").is_err());
        assert!(check_database_url("not a url").is_err());
        let reason = check_database_url("postgres://u:p@h/db?pasword=hunter2").unwrap_err();
        assert!(reason.contains("pasword") && !reason.contains("hunter2"));
        let reason = check_database_url("postgres://u:hunter2@h/db?sslmode=bogus").unwrap_err();
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn http_urls() {
        assert!(check_api_url("https://api.clerk.com/v1").is_ok());
        assert!(check_api_url("http://127.0.0.1:4000/v1").is_ok());
        assert!(check_api_url("ftp://x/v1").is_err());
        assert!(check_api_url("/v1").is_err());
        assert!(check_api_url("https://u:p@x/v1").is_err());
        assert!(check_redirect_url("https://app.example.com/welcome?from=invite").is_ok());
    }
}
