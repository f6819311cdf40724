//! Configuration: layering, env parsing, validation, secrets, `config check`.
//! Every test passes its environment as a map; none touches the process environment.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use invite_sync::clerk::{KeyKind, TemplateSlug};
use invite_sync::config::{
    check, Checked, ConfigError, ExistingUsers, LogFormat, OnChange, Ownership, Settings,
    DEFAULTS_TOML,
};
use secrecy::ExposeSecret;

use crate::common::{env, read, repo_path, Scratch};

const SECRET_KEY: &str = "sk_test_SUPERSECRETVALUE123";
const DB_PASSWORD: &str = "hunter2pass";

fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Settings {
    Settings::load(file, env).unwrap_or_else(|e| panic!("expected valid settings, got {e}"))
}

fn load_err(file: Option<&Path>, env: &HashMap<String, String>) -> ConfigError {
    match Settings::load(file, env) {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(e) => e,
    }
}

fn problem<'a>(error: &'a ConfigError, key: &str) -> &'a invite_sync::config::Problem {
    error
        .problems()
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem names {key}: {error}"))
}

fn assert_no_secrets(text: &str) {
    assert!(!text.contains("SUPERSECRET"), "secret key leaked: {text}");
    assert!(
        !text.contains(DB_PASSWORD),
        "database password leaked: {text}"
    );
}

#[test]
fn defaults_equal_default_toml() {
    let on_disk = read("config/default.toml");
    assert_eq!(DEFAULTS_TOML, on_disk);

    let defaults = load(None, &HashMap::new());
    let scratch = Scratch::new("config-test");
    let as_file = load(
        Some(&scratch.write("default.toml", &on_disk)),
        &HashMap::new(),
    );
    assert_eq!(defaults.effective_toml(), as_file.effective_toml());

    let s = defaults;
    assert_eq!(
        s.database.url.expose_secret(),
        "postgres://postgres@127.0.0.1:5432/invite_sync"
    );
    assert_eq!(s.database.max_connections, 10);
    assert_eq!(s.database.min_connections, None);
    assert_eq!(s.database.connect_timeout(), Duration::from_secs(10));
    assert!(s.database.migrate_on_start);
    assert_eq!(s.clerk.api_url.as_str(), "https://api.clerk.com/v1");
    assert!(s.clerk.secret_key.is_none());
    assert!(s.clerk.secret_key_file.is_none());
    assert_eq!(s.clerk.timeout(), Duration::from_secs(10));
    assert_eq!(s.clerk.requests_per_window, None);
    assert_eq!(s.clerk.request_window(), Duration::from_secs(10));
    assert_eq!(s.clerk.bulk_create_per_window, 25);
    assert_eq!(s.clerk.single_create_per_window, 100);
    assert_eq!(s.clerk.create_window(), Duration::from_secs(3600));
    assert_eq!(s.clerk.max_attempts, 4);
    assert_eq!(s.source.relation, "desired_invitees");
    assert_eq!(s.source.memberships_relation, "desired_memberships");
    assert_eq!(s.clerk.org_single_create_per_window, 250);
    assert_eq!(s.clerk.org_bulk_create_per_window, 50);
    assert_eq!(s.organizations.default_role, "org:member");
    assert_eq!(s.organizations.existing_users, ExistingUsers::Membership);
    assert!(!s.organizations.remove_members);
    assert_eq!(s.sync.schedule, "0 */5 * * * *");
    assert!(!s.sync.dry_run);
    assert!(s.sync.notify);
    assert!(s.sync.ignore_existing);
    assert_eq!(s.sync.expires_in_days, None);
    assert_eq!(s.sync.redirect_url, None);
    assert_eq!(s.sync.template_slug, None);
    assert_eq!(s.sync.max_revocations, 25);
    assert!((s.sync.max_revocation_ratio - 0.2).abs() < f64::EPSILON);
    assert!(s.sync.protected.is_empty());
    assert_eq!(s.sync.ownership, Ownership::Owned);
    assert!(s.sync.reinvite_expired);
    assert_eq!(s.sync.on_change, OnChange::Report);
    assert_eq!(s.sync.shutdown_timeout(), Duration::from_secs(30));
    assert_eq!(s.sync.target, "default");
    assert_eq!(s.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.log.format, LogFormat::Pretty);
    assert_eq!(s.log.level, "info");
    assert!(!s.log.redact_emails);
}

#[test]
fn file_overrides_defaults() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        r#"
[clerk]
timeout_seconds = 20
create_window_seconds = 2

[sync]
dry_run = true
ownership = "all"
template_slug = "waitlist_invitation"
"#,
    );
    let s = load(Some(&file), &HashMap::new());
    assert_eq!(s.clerk.timeout(), Duration::from_secs(20));
    assert_eq!(s.clerk.create_window(), Duration::from_secs(2));
    assert!(s.sync.dry_run);
    assert_eq!(s.sync.ownership, Ownership::All);
    assert_eq!(s.sync.template_slug, Some(TemplateSlug::WaitlistInvitation));
    // Keys the file leaves alone keep their defaults.
    assert_eq!(s.clerk.max_attempts, 4);
    assert!(s.sync.notify);
}

#[test]
fn env_overrides_file() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        "[clerk]\ntimeout_seconds = 20\n[sync]\ndry_run = false\ntarget = \"from-file\"\n",
    );
    let s = load(
        Some(&file),
        &env(&[
            ("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "5"),
            ("INVITE_SYNC__SYNC__DRY_RUN", "true"),
        ]),
    );
    assert_eq!(s.clerk.timeout(), Duration::from_secs(5));
    assert!(s.sync.dry_run);
    assert_eq!(s.sync.target, "from-file");
}

#[test]
fn conventional_vars_override_prefixed_ones() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        "[database]\nurl = \"postgres://file@db/from_file\"\n",
    );
    let s = load(
        Some(&file),
        &env(&[
            (
                "INVITE_SYNC__DATABASE__URL",
                "postgres://prefixed@db/from_prefixed",
            ),
            (
                "DATABASE_URL",
                "postgres://conventional@db/from_conventional",
            ),
            ("INVITE_SYNC__CLERK__SECRET_KEY", "sk_test_fromprefixed"),
            ("CLERK_SECRET_KEY", "sk_live_fromconventional"),
        ]),
    );
    assert_eq!(
        s.database.url.expose_secret(),
        "postgres://conventional@db/from_conventional"
    );
    let key = s.clerk.secret_key().expect("a key");
    assert_eq!(key.expose_secret(), "sk_live_fromconventional");

    // Without the conventional ones, the prefixed ones win over the file.
    let s = load(
        Some(&file),
        &env(&[(
            "INVITE_SYNC__DATABASE__URL",
            "postgres://prefixed@db/from_prefixed",
        )]),
    );
    assert_eq!(s.database.database_name().as_deref(), Some("from_prefixed"));
}

#[test]
fn empty_conventional_vars_count_as_unset() {
    let s = load(
        None,
        &env(&[("DATABASE_URL", ""), ("CLERK_SECRET_KEY", "  ")]),
    );
    assert_eq!(s.database.database_name().as_deref(), Some("invite_sync"));
    assert!(s.clerk.secret_key.is_none());
}

#[test]
fn env_values_are_parsed_to_each_type() {
    let s = load(
        None,
        &env(&[
            ("INVITE_SYNC__SYNC__DRY_RUN", "TRUE"),
            ("INVITE_SYNC__SYNC__NOTIFY", "false"),
            ("INVITE_SYNC__SYNC__REINVITE_EXPIRED", "0"),
            ("INVITE_SYNC__LOG__REDACT_EMAILS", "1"),
            ("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", "32"),
            ("INVITE_SYNC__DATABASE__MIN_CONNECTIONS", "2"),
            ("INVITE_SYNC__SYNC__EXPIRES_IN_DAYS", "7"),
            ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "0.5"),
            (
                "INVITE_SYNC__SYNC__PROTECTED",
                "CEO@Example.com, @board.example.com,,",
            ),
            ("INVITE_SYNC__SYNC__ON_CHANGE", "replace"),
            ("INVITE_SYNC__LOG__FORMAT", "json"),
            ("INVITE_SYNC__HTTP__LISTEN", "[::]:9090"),
            ("INVITE_SYNC__SYNC__TARGET", "123"),
            ("INVITE_SYNC__SOURCE__RELATION", "hr.people"),
        ]),
    );
    assert!(s.sync.dry_run);
    assert!(!s.sync.notify);
    assert!(!s.sync.reinvite_expired);
    assert!(s.log.redact_emails);
    assert_eq!(s.database.max_connections, 32);
    assert_eq!(s.database.min_connections, Some(2));
    assert_eq!(s.sync.expires_in_days, Some(7));
    assert!((s.sync.max_revocation_ratio - 0.5).abs() < f64::EPSILON);
    assert_eq!(s.sync.protected, ["ceo@example.com", "@board.example.com"]);
    assert_eq!(s.sync.on_change, OnChange::Replace);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.http.listen.port(), 9090);
    // A numeric-looking value for a text key stays text.
    assert_eq!(s.sync.target, "123");
    assert_eq!(
        invite_sync::store::desired::quote_relation(&s.source.relation),
        "\"hr\".\"people\""
    );
}

#[test]
fn empty_env_value_unsets_an_optional_key_and_empties_a_list() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        "[sync]\nexpires_in_days = 14\nprotected = [\"a@example.com\"]\n",
    );
    let s = load(Some(&file), &HashMap::new());
    assert_eq!(s.sync.expires_in_days, Some(14));
    let s = load(
        Some(&file),
        &env(&[
            ("INVITE_SYNC__SYNC__EXPIRES_IN_DAYS", ""),
            ("INVITE_SYNC__SYNC__PROTECTED", ""),
        ]),
    );
    assert_eq!(s.sync.expires_in_days, None);
    assert!(s.sync.protected.is_empty());
}

#[test]
fn bad_env_values_name_key_and_variable() {
    let e = load_err(
        None,
        &env(&[
            ("INVITE_SYNC__SYNC__DRY_RUN", "maybe"),
            ("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "soon"),
            ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "lots"),
            ("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", ""),
        ]),
    );
    let dry_run = problem(&e, "sync.dry_run");
    assert_eq!(
        dry_run.origin.as_deref(),
        Some("env INVITE_SYNC__SYNC__DRY_RUN")
    );
    assert!(dry_run.reason.contains("true or false"), "{dry_run}");
    assert!(problem(&e, "clerk.timeout_seconds")
        .reason
        .contains("integer"));
    assert!(problem(&e, "sync.max_revocation_ratio")
        .reason
        .contains("number"));
    assert!(problem(&e, "database.max_connections")
        .reason
        .contains("empty"));
    assert_eq!(e.problems().len(), 4, "{e}");
}

#[test]
fn malformed_env_names_are_reported() {
    let e = load_err(
        None,
        &env(&[
            ("INVITE_SYNC__SYNC__DRY_RN", "true"),
            ("INVITE_SYNC__DRY_RUN", "true"),
            ("INVITE_SYNC_CONFIG", "/not/ours"),
        ]),
    );
    let unknown = problem(&e, "sync.dry_rn");
    assert!(unknown.reason.contains("unknown key"), "{unknown}");
    assert!(unknown.reason.contains("dry_run"), "{unknown}");
    assert_eq!(
        unknown.origin.as_deref(),
        Some("env INVITE_SYNC__SYNC__DRY_RN")
    );
    assert!(problem(&e, "dry_run").reason.contains("SECTION__KEY"));
    assert_eq!(e.problems().len(), 2, "{e}");
}

#[test]
fn secrets_appear_in_no_debug_toml_or_check_output() {
    let vars = env(&[
        ("CLERK_SECRET_KEY", SECRET_KEY),
        (
            "DATABASE_URL",
            "postgres://app:hunter2pass@db.internal:5432/invites?sslmode=require",
        ),
    ]);
    let s = load(None, &vars);
    assert_eq!(
        s.clerk.secret_key().expect("a key").expose_secret(),
        SECRET_KEY
    );

    let debug = format!("{s:?}");
    assert_no_secrets(&debug);
    assert!(debug.contains("db.internal"), "{debug}");
    let options = s.clerk.client_options().expect("options");
    assert_no_secrets(&format!("{:?}", options.secret_key));

    let toml = s.effective_toml();
    assert_no_secrets(&toml);
    assert!(toml.contains("secret_key = \"[redacted]\""), "{toml}");
    assert!(
        toml.contains(
            "url = \"postgres://app:[redacted]@db.internal:5432/invites?sslmode=require\""
        ),
        "{toml}"
    );
    assert_no_secrets(&s.database.redacted_url());

    let Checked { text, valid } = check(None, &vars);
    assert!(valid, "{text}");
    assert_no_secrets(&text);
    assert!(text.contains("env CLERK_SECRET_KEY"), "{text}");
}

#[test]
fn secrets_appear_in_no_error() {
    let scratch = Scratch::new("config-test");
    let mut errors: Vec<String> = Vec::new();
    let record = |errors: &mut Vec<String>, e: ConfigError| {
        errors.push(format!("{e}"));
        errors.push(format!("{e:?}"));
    };

    // A key with a bad prefix, inline: refused at load.
    let bad_key = env(&[("CLERK_SECRET_KEY", "xx_SUPERSECRETVALUE123")]);
    let e = load_err(None, &bad_key);
    assert!(problem(&e, "clerk.secret_key").reason.contains("sk_test_"));
    record(&mut errors, e);
    let Checked { text, valid } = check(None, &bad_key);
    assert!(!valid);
    errors.push(text);

    // The same in a file: refused when the key is needed.
    let key_file = scratch.write("key", "xx_SUPERSECRETVALUE123\n");
    let s = load(
        None,
        &env(&[(
            "INVITE_SYNC__CLERK__SECRET_KEY_FILE",
            key_file.to_str().expect("utf-8 path"),
        )]),
    );
    let e = s.clerk.secret_key().expect_err("a bad key");
    assert!(e.mentions("clerk.secret_key_file"), "{e}");
    record(&mut errors, e);
    match s.clerk.client_options() {
        Ok(_) => panic!("client options with a bad key"),
        Err(e) => record(&mut errors, e),
    }

    // Whitespace inside a key.
    record(
        &mut errors,
        load_err(
            None,
            &env(&[("CLERK_SECRET_KEY", "sk_test_SUPERSECRET VALUE")]),
        ),
    );

    // A database URL with a password and a bad parameter, or a mistyped parameter name.
    for url in [
        "postgres://app:hunter2pass@db/x?sslmode=bogus",
        "postgres://app@db/x?pasword=hunter2pass",
        "mysql://app:hunter2pass@db/x",
    ] {
        let e = load_err(None, &env(&[("DATABASE_URL", url)]));
        assert!(e.mentions("database.url"), "{e}");
        record(&mut errors, e);
    }

    // A config file that does not parse, with the secret on the bad line.
    let broken = scratch.write(
        "broken.toml",
        "[clerk]\nsecret_key = \"sk_test_SUPERSECRETVALUE123\n",
    );
    let e = load_err(Some(&broken), &HashMap::new());
    assert!(e.to_string().contains("line 2"), "{e}");
    record(&mut errors, e);

    // Both a key and a key file.
    record(
        &mut errors,
        load_err(
            None,
            &env(&[
                ("CLERK_SECRET_KEY", SECRET_KEY),
                ("INVITE_SYNC__CLERK__SECRET_KEY_FILE", "/run/secrets/key"),
            ]),
        ),
    );

    assert!(errors.len() >= 10);
    for text in &errors {
        assert_no_secrets(text);
    }
}

#[test]
fn secret_key_file_is_read_and_trimmed() {
    let scratch = Scratch::new("config-test");
    let key_file = scratch.write("clerk-secret-key", "  sk_live_abc123XYZ \n\n");
    let file = scratch.write(
        "c.toml",
        &format!(
            "[clerk]\nsecret_key_file = {:?}\napi_url = \"http://127.0.0.1:4010/v1\"\nmax_attempts = 2\n",
            key_file.to_str().expect("utf-8 path")
        ),
    );
    let s = load(Some(&file), &HashMap::new());
    assert_eq!(
        s.clerk.secret_key().expect("a key").expose_secret(),
        "sk_live_abc123XYZ"
    );
    let options = s.clerk.client_options().expect("client options");
    assert_eq!(options.secret_key.expose_secret(), "sk_live_abc123XYZ");
    assert_eq!(options.api_url.as_str(), "http://127.0.0.1:4010/v1");
    assert_eq!(options.timeout, Duration::from_secs(10));
    let rate = options.rate.expect("a rate");
    assert_eq!((rate.requests, rate.per), (1000, Duration::from_secs(10)));
    assert_eq!(options.retry.max_attempts, 2);
}

#[test]
fn secret_key_file_may_use_the_systemd_credentials_directory() {
    let scratch = Scratch::new("config-test");
    scratch.write("clerk-secret-key", "sk_test_fromcredentials\n");
    let file = scratch.write(
        "c.toml",
        "[clerk]\nsecret_key_file = \"%d/clerk-secret-key\"\n",
    );
    let directory = scratch.0.to_str().expect("utf-8 path");
    let s = load(Some(&file), &env(&[("CREDENTIALS_DIRECTORY", directory)]));
    assert_eq!(
        s.clerk.secret_key().expect("a key").expose_secret(),
        "sk_test_fromcredentials"
    );
    let e = load_err(Some(&file), &HashMap::new());
    assert!(problem(&e, "clerk.secret_key_file")
        .reason
        .contains("CREDENTIALS_DIRECTORY"));
}

#[test]
fn key_and_key_file_together_are_an_error() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        "[clerk]\nsecret_key_file = \"/run/secrets/clerk\"\n",
    );
    let e = load_err(Some(&file), &env(&[("CLERK_SECRET_KEY", SECRET_KEY)]));
    let both = problem(&e, "clerk.secret_key");
    assert!(both.reason.contains("clerk.secret_key_file"), "{both}");
    assert_eq!(both.origin.as_deref(), Some("env CLERK_SECRET_KEY"));
    assert_no_secrets(&e.to_string());
}

#[test]
fn missing_key_is_fine_to_load_but_not_for_the_client() {
    let s = load(None, &HashMap::new());
    let e = s.clerk.secret_key().expect_err("no key");
    let text = e.to_string();
    for name in [
        "clerk.secret_key",
        "clerk.secret_key_file",
        "CLERK_SECRET_KEY",
    ] {
        assert!(text.contains(name), "{text}");
    }
    assert!(s.clerk.client_options().is_err());
    let Checked { text, valid } = check(None, &HashMap::new());
    assert!(valid);
    assert!(text.contains("warning"), "{text}");
}

#[test]
fn request_rate_follows_key_kind_unless_set() {
    let s = load(None, &env(&[("CLERK_SECRET_KEY", "sk_test_x1")]));
    let rate = s
        .clerk
        .client_options()
        .expect("options")
        .rate
        .expect("rate");
    assert_eq!(rate.requests, 100);
    let s = load(
        None,
        &env(&[
            ("CLERK_SECRET_KEY", "sk_live_x1"),
            ("INVITE_SYNC__CLERK__REQUESTS_PER_WINDOW", "50"),
            ("INVITE_SYNC__CLERK__REQUEST_WINDOW_SECONDS", "1"),
        ]),
    );
    let rate = s
        .clerk
        .client_options()
        .expect("options")
        .rate
        .expect("rate");
    assert_eq!((rate.requests, rate.per), (50, Duration::from_secs(1)));
    assert_eq!(s.clerk.request_rate(KeyKind::Test).requests, 50);
}

#[test]
fn unknown_key_in_file_is_named_with_its_file() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write("c.toml", "[sync]\ndry_rn = true\n");
    let e = load_err(Some(&file), &HashMap::new());
    let unknown = problem(&e, "sync.dry_rn");
    assert!(unknown.reason.contains("unknown key"), "{unknown}");
    assert!(unknown.reason.contains("`dry_run`"), "{unknown}");
    let origin = unknown.origin.as_deref().expect("an origin");
    assert!(
        origin.contains(file.to_str().expect("utf-8 path")),
        "{origin}"
    );
    assert_eq!(e.problems().len(), 1, "{e}");
}

#[test]
fn every_bad_key_is_reported_at_once() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        r#"
[database]
max_connections = "ten"
min_connections = 0

[clerk]
api_url = "ftp://api.clerk.com/v1"
timeout_seconds = 0

[source]
relation = "hr.people;drop"

[sync]
dry_rn = true
schedule = "*/5 * * * *"
max_revocation_ratio = 1.5
expires_in_days = 366
redirect_url = "/welcome"
protected = ["ceo@example.com", "nobody"]
ownership = "mine"
on_change = 1
template_slug = "welcome"
target = "has space"

[http]
listen = "localhost"

[log]
format = "xml"
redact_emails = "yes"

[sycn]
dry_run = true
"#,
    );
    let e = load_err(
        Some(&file),
        &env(&[("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "-1")]),
    );
    let expected = [
        (
            "database.max_connections",
            "expected an integer, found a string",
        ),
        ("clerk.api_url", "http"),
        ("clerk.timeout_seconds", "between 1 and 600"),
        ("source.relation", "SQL identifier"),
        ("sync.dry_rn", "unknown key"),
        ("sync.schedule", "6 or 7 fields"),
        ("sync.max_revocation_ratio", "between 0 and 1"),
        ("sync.expires_in_days", "between 1 and 365"),
        ("sync.redirect_url", "absolute URL"),
        ("sync.protected", "\"nobody\""),
        ("sync.ownership", "\"owned\", \"all\""),
        ("sync.on_change", "expected a string"),
        (
            "sync.template_slug",
            "\"invitation\", \"waitlist_invitation\"",
        ),
        ("sync.target", "letters"),
        ("sync.max_revocations", "between 0 and"),
        ("http.listen", "IP address and port"),
        ("log.format", "\"pretty\", \"json\""),
        ("log.redact_emails", "expected a boolean"),
        ("sycn", "unknown section (did you mean `sync`?)"),
    ];
    for (key, reason) in expected {
        let p = problem(&e, key);
        assert!(p.reason.contains(reason), "{key}: {p}");
    }
    assert_eq!(e.problems().len(), expected.len(), "{e}");
    // One line per problem.
    assert_eq!(e.to_string().lines().count(), expected.len(), "{e}");
    assert_eq!(
        problem(&e, "sync.max_revocations").origin.as_deref(),
        Some("env INVITE_SYNC__SYNC__MAX_REVOCATIONS")
    );
}

#[test]
fn cross_key_rules() {
    let e = load_err(
        None,
        &env(&[
            ("INVITE_SYNC__DATABASE__MIN_CONNECTIONS", "20"),
            ("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", "5"),
        ]),
    );
    assert!(problem(&e, "database.min_connections")
        .reason
        .contains("database.max_connections"));
}

#[test]
fn the_admin_listener_may_not_take_the_main_listeners_address_or_port() {
    for (listen, admin) in [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("0.0.0.0:9090", "127.0.0.1:9090"),
        ("127.0.0.1:9090", "[::]:9090"),
    ] {
        let e = load_err(
            None,
            &env(&[
                ("INVITE_SYNC__HTTP__LISTEN", listen),
                ("INVITE_SYNC__HTTP__ADMIN_LISTEN", admin),
            ]),
        );
        let refused = problem(&e, "http.admin_listen");
        assert!(
            refused.reason.contains("http.listen")
                && refused.reason.contains(listen)
                && refused.reason.contains(admin),
            "{listen} and {admin}: {e}"
        );
        assert_eq!(
            refused.origin.as_deref(),
            Some("env INVITE_SYNC__HTTP__ADMIN_LISTEN")
        );
    }
    for (listen, admin) in [
        ("127.0.0.1:8080", "127.0.0.1:9090"),
        ("127.0.0.1:9090", "10.0.0.1:9090"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let settings = load(
            None,
            &env(&[
                ("INVITE_SYNC__HTTP__LISTEN", listen),
                ("INVITE_SYNC__HTTP__ADMIN_LISTEN", admin),
            ]),
        );
        assert_eq!(settings.http.admin_listen, admin.parse().ok());
    }
}

#[test]
fn a_pool_too_small_for_a_cycle_is_refused() {
    // Under `run`, the roster-change listener, the target's lock, the roster's stream and the
    // ledger's cursors hold a connection each while a cycle reads.
    let e = load_err(
        None,
        &env(&[("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", "3")]),
    );
    let reason = &problem(&e, "database.max_connections").reason;
    assert!(reason.contains('4') && reason.contains('3'), "{reason}");
}

#[test]
fn missing_config_file_is_a_problem() {
    let scratch = Scratch::new("config-test");
    let path = scratch.0.join("absent.toml");
    let e = load_err(Some(&path), &env(&[("INVITE_SYNC__LOG__FORMAT", "xml")]));
    assert!(e.to_string().contains("cannot read"), "{e}");
    // The other layers are still checked.
    assert!(e.mentions("log.format"), "{e}");
}

#[test]
fn check_reports_validity_and_names_every_key() {
    let scratch = Scratch::new("config-test");
    let good = scratch.write("good.toml", "[sync]\ndry_run = true\n");
    let Checked { text, valid } = check(
        Some(&good),
        &env(&[("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "5")]),
    );
    assert!(valid, "{text}");
    assert!(text.contains("[sync]"), "{text}");
    assert!(text.contains("dry_run = true  # file "), "{text}");
    assert!(
        text.contains("timeout_seconds = 5  # env INVITE_SYNC__CLERK__TIMEOUT_SECONDS"),
        "{text}"
    );

    let bad = scratch.write(
        "bad.toml",
        "[sync]\ndry_rn = true\nmax_revocation_ratio = 2.0\n[log]\nformat = \"xml\"\n",
    );
    let Checked { text, valid } = check(
        Some(&bad),
        &env(&[("INVITE_SYNC__SOURCE__RELATION", "a.b.c")]),
    );
    assert!(!valid);
    for key in [
        "sync.dry_rn",
        "sync.max_revocation_ratio",
        "log.format",
        "source.relation",
    ] {
        assert!(text.contains(key), "{key} missing from: {text}");
    }

    let unreadable_key = env(&[("INVITE_SYNC__CLERK__SECRET_KEY_FILE", "/nonexistent/key")]);
    let Checked { text, valid } = check(None, &unreadable_key);
    assert!(!valid);
    assert!(text.contains("clerk.secret_key_file"), "{text}");
}

#[test]
fn effective_toml_loads_back_to_the_same_settings() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        r#"
[database]
url = "postgres://app@db.internal:6543/invites"
min_connections = 1

[clerk]
requests_per_window = 20

[source]
relation = "hr.desired"

[sync]
expires_in_days = 10
redirect_url = "https://app.example.com/welcome"
template_slug = "invitation"
protected = ["ceo@example.com", "@board.example.com"]
max_revocation_ratio = 1

[log]
level = "invite_sync=debug,sqlx=warn"
"#,
    );
    let first = load(Some(&file), &HashMap::new());
    let rendered = first.effective_toml();
    let again = load(
        Some(&scratch.write("effective.toml", &rendered)),
        &HashMap::new(),
    );
    assert_eq!(again.effective_toml(), rendered);
    assert!(
        rendered.contains("max_revocation_ratio = 1.0"),
        "{rendered}"
    );
    assert!(rendered.contains("# secret_key is not set"), "{rendered}");
}

#[test]
fn database_connect_options() {
    let s = load(
        None,
        &env(&[(
            "DATABASE_URL",
            "postgres://app:hunter2pass@db.internal:6543/invites?sslmode=disable",
        )]),
    );
    let options = s.database.connect_options().expect("connect options");
    assert_eq!(options.get_host(), "db.internal");
    assert_eq!(options.get_port(), 6543);
    assert_eq!(options.get_username(), "app");
    assert_eq!(options.get_database(), Some("invites"));
    assert_eq!(options.get_application_name(), Some("invite-sync"));
    assert_eq!(s.database.database_name().as_deref(), Some("invites"));
}

#[test]
fn row_defaults_carry_sync_options() {
    let s = load(
        None,
        &env(&[
            ("INVITE_SYNC__SYNC__EXPIRES_IN_DAYS", "3"),
            ("INVITE_SYNC__SYNC__NOTIFY", "false"),
            ("INVITE_SYNC__SYNC__TEMPLATE_SLUG", "invitation"),
        ]),
    );
    let defaults = s.sync.row_defaults();
    assert_eq!(defaults.expires_in_days, Some(3));
    assert!(!defaults.notify);
    assert!(defaults.ignore_existing);
    assert_eq!(defaults.template_slug, Some(TemplateSlug::Invitation));
    assert_eq!(defaults.redirect_url, None);
}

#[test]
fn example_config_is_valid() {
    let path = repo_path("config/example.toml");
    let s = load(Some(&path), &HashMap::new());
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.sync.target, "production");
    assert_eq!(
        s.source.relation.split_once('.').map(|(schema, _)| schema),
        Some("hr")
    );
    assert_eq!(s.source.memberships_relation, "hr.desired_memberships");
    assert_eq!(s.organizations.existing_users, ExistingUsers::Membership);
    assert!(s.clerk.secret_key_file.is_some());
    assert!(s.database.connect_options().is_ok());
    assert!(s.scim.metadata.contains_key("cost_center"));
    assert!(
        s.scim.metadata.contains_key("external_id"),
        "the defaults stay"
    );
}

#[test]
fn a_bad_webhook_secret_is_named_by_position_not_by_value() {
    let error = Settings::load(
        None,
        &env(&[(
            "INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_NEARLYsecret!!",
        )]),
    )
    .expect_err("the second secret is not base64");
    let text = error.to_string();
    assert!(text.contains("http.roster_webhook_secret"), "{text}");
    assert!(text.contains("item 2"), "{text}");
    assert!(!text.contains("NEARLYsecret"), "{text}");
    assert!(!text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{text}");
}

#[test]
fn libpq_parameters_the_driver_does_not_read_say_what_to_use_instead() {
    let e = load_err(
        None,
        &env(&[(
            "DATABASE_URL",
            "postgres://app@db/x?sslmode=require&connect_timeout=5&target_session_attrs=read-write",
        )]),
    );
    let reason = &problem(&e, "database.url").reason;
    assert!(
        reason.contains("connect_timeout, target_session_attrs"),
        "{reason}"
    );
    assert!(
        reason.contains("set database.connect_timeout_seconds instead of connect_timeout"),
        "{reason}"
    );
    assert!(reason.contains("name the primary's address"), "{reason}");
}

#[test]
fn scim_tokens_are_a_rotation_list_kept_out_of_debug_toml_check_and_errors() {
    let first = "scim-SUPERSECRET-token-one";
    let second = "scim-SUPERSECRET-token-two";
    let vars = env(&[("INVITE_SYNC__SCIM__TOKEN", &format!("{first}, {second}"))]);
    let s = load(None, &vars);
    let tokens: Vec<&str> = s.scim.token.iter().map(|t| t.expose_secret()).collect();
    assert_eq!(tokens, [first, second]);
    assert_no_secrets(&format!("{s:?}"));
    let toml = s.effective_toml();
    assert_no_secrets(&toml);
    assert!(
        toml.contains(r#"token = ["[redacted]", "[redacted]"]"#),
        "{toml}"
    );
    let Checked { text, valid } = check(None, &vars);
    assert!(valid, "{text}");
    assert_no_secrets(&text);
    assert!(
        load(None, &HashMap::new()).scim.token.is_empty(),
        "off by default"
    );

    let error = load_err(
        None,
        &env(&[(
            "INVITE_SYNC__SCIM__TOKEN",
            "SUPERSECRET-ok-token-1,SUPERSECRET",
        )]),
    );
    let reason = &problem(&error, "scim.token").reason;
    assert!(
        reason.contains("item 2") && reason.contains("16"),
        "{reason}"
    );
    assert_no_secrets(&error.to_string());
}

#[test]
fn scim_metadata_joins_the_defaults_from_a_file_and_is_replaced_by_the_variable() {
    let defaults = load(None, &HashMap::new()).scim.metadata;
    assert_eq!(
        defaults.get("external_id").map(String::as_str),
        Some("externalId")
    );
    assert_eq!(defaults.len(), 5);

    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "scim.toml",
        r#"
[scim]
email = "work_email"

[scim.metadata]
costCenter = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter"
given_name = ""
"#,
    );
    let s = load(Some(&file), &HashMap::new());
    assert_eq!(s.scim.email, invite_sync::config::ScimEmail::WorkEmail);
    assert!(
        s.scim.metadata.contains_key("costCenter"),
        "{:?}",
        s.scim.metadata
    );
    assert!(!s.scim.metadata.contains_key("given_name"));
    assert!(s.scim.metadata.contains_key("department"));
    let again = load(
        Some(&scratch.write("effective.toml", &s.effective_toml())),
        &HashMap::new(),
    );
    assert_eq!(again.scim.metadata, s.scim.metadata);

    let s = load(
        None,
        &env(&[(
            "INVITE_SYNC__SCIM__METADATA",
            "team=urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department, \
             work=emails[type eq \"work\"].value",
        )]),
    );
    let keys: Vec<&str> = s.scim.metadata.keys().map(String::as_str).collect();
    assert_eq!(keys, ["team", "work"]);

    for (value, named) in [
        ("team=favouriteColour", "favouriteColour"),
        ("bad key=externalId", "metadata key"),
        ("team", "name=value"),
    ] {
        let error = load_err(None, &env(&[("INVITE_SYNC__SCIM__METADATA", value)]));
        let reason = &problem(&error, "scim.metadata").reason;
        assert!(reason.contains(named), "{value}: {reason}");
    }
}

#[test]
fn the_organization_keys_are_read_from_a_file_and_the_environment() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        r#"
[source]
memberships_relation = "hr.memberships"

[organizations]
default_role = "org:viewer_2"
existing_users = "invite"
"#,
    );
    let s = load(
        Some(&file),
        &env(&[
            ("INVITE_SYNC__ORGANIZATIONS__REMOVE_MEMBERS", "true"),
            ("INVITE_SYNC__CLERK__ORG_SINGLE_CREATE_PER_WINDOW", "20"),
            ("INVITE_SYNC__CLERK__ORG_BULK_CREATE_PER_WINDOW", "4"),
        ]),
    );
    assert_eq!(s.source.memberships_relation, "hr.memberships");
    assert_eq!(s.organizations.default_role, "org:viewer_2");
    assert_eq!(s.organizations.existing_users, ExistingUsers::Invite);
    assert!(s.organizations.remove_members);
    assert_eq!(s.clerk.org_single_create_per_window, 20);
    assert_eq!(s.clerk.org_bulk_create_per_window, 4);
    // The instance invitations' budget is its own.
    assert_eq!(s.clerk.single_create_per_window, 100);
    assert_eq!(s.clerk.bulk_create_per_window, 25);
}

#[test]
fn bad_organization_keys_are_each_named_with_the_reason() {
    let scratch = Scratch::new("config-test");
    let file = scratch.write(
        "c.toml",
        r#"
[clerk]
org_bulk_create_per_window = 0

[source]
memberships_relation = "Desired_Memberships"

[organizations]
default_role = "admin"
existing_users = "always"
remove_members = "yes"
"#,
    );
    let e = load_err(
        Some(&file),
        &env(&[("INVITE_SYNC__CLERK__ORG_SINGLE_CREATE_PER_WINDOW", "-3")]),
    );
    let expected = [
        ("clerk.org_bulk_create_per_window", "between 1 and"),
        ("clerk.org_single_create_per_window", "between 1 and"),
        ("source.memberships_relation", "lower case"),
        ("organizations.default_role", "org: followed by"),
        ("organizations.existing_users", "\"membership\", \"invite\""),
        ("organizations.remove_members", "expected a boolean"),
    ];
    for (key, reason) in expected {
        let p = problem(&e, key);
        assert!(p.reason.contains(reason), "{key}: {p}");
    }
    assert_eq!(e.problems().len(), expected.len(), "{e}");

    for (role, reason) in [
        ("org:Admin", "write \"org:admin\""),
        ("org:", "names no role"),
        (
            "org:read-only",
            "lower-case letters, digits and underscores",
        ),
    ] {
        let e = load_err(
            None,
            &env(&[("INVITE_SYNC__ORGANIZATIONS__DEFAULT_ROLE", role)]),
        );
        let p = problem(&e, "organizations.default_role");
        assert!(p.reason.contains(reason), "{role}: {p}");
    }
}

#[test]
fn the_membership_roster_may_not_be_the_invitation_roster() {
    let e = load_err(
        None,
        &env(&[(
            "INVITE_SYNC__SOURCE__MEMBERSHIPS_RELATION",
            "desired_invitees",
        )]),
    );
    let p = problem(&e, "source.memberships_relation");
    assert!(p.reason.contains("source.relation"), "{p}");
    assert_eq!(
        p.origin.as_deref(),
        Some("env INVITE_SYNC__SOURCE__MEMBERSHIPS_RELATION")
    );
    // Another schema's table of the same name is another relation.
    let s = load(
        None,
        &env(&[(
            "INVITE_SYNC__SOURCE__MEMBERSHIPS_RELATION",
            "hr.desired_invitees",
        )]),
    );
    assert_eq!(s.source.memberships_relation, "hr.desired_invitees");
}
