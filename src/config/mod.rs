//! Settings: layering, validation, secrets.
//!
//! Layers, lowest to highest: the built-in defaults (config/default.toml, compiled in) <
//! the `--config` file < `INVITE_SYNC__SECTION__KEY` variables < `DATABASE_URL` and
//! `CLERK_SECRET_KEY`. Loading takes the environment as a map, so tests never touch the
//! process environment; [`Settings::from_process_env`] is the service's entry point.
//!
//! Every problem is collected and reported at once, each naming its full dotted key and
//! where the value came from. Secrets (the Clerk key, the database password) never
//! appear in `Debug`, `Display`, an error, or [`Settings::effective_toml`].

mod checks;
mod env_file;
mod error;
mod file;
mod render;
mod schema;
mod secret;
mod sources;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use url::Url;

use crate::clerk::budget::Limits;
use crate::clerk::{ClientOptions, KeyKind, RequestRate, RetryPolicy, TemplateSlug};
use crate::domain::{check_role, RowDefaults};
use crate::scim::groups_map::GroupMapping;

pub use env_file::{parse_env_file, read_env_file};
pub use error::{ConfigError, Problem};
pub use file::{read_text, Limit, ReadError, CONFIG_FILE_LIMIT, ENV_FILE_LIMIT, SECRET_FILE_LIMIT};
pub use render::{check, Checked};
pub use secret::{redact_database_url, DatabaseUrl, Secret, REDACTED};
pub use sources::{
    env_var_name, process_env, CLERK_SECRET_KEY_VAR, CREDENTIALS_DIRECTORY_VAR, DATABASE_URL_VAR,
    ENV_PREFIX, ENV_SEPARATOR,
};

use checks::{
    check_api_token, check_api_url, check_database_url, check_filter, check_group_mappings,
    check_metadata_mapping, check_path, check_protected, check_redirect_url, check_relation,
    check_schedule, check_secret_key, check_socket_addr, check_target, check_webhook_secret,
};
use schema::{float, int, section, settings, Kind};
use sources::{EnvSource, TomlSource};

/// The built-in defaults: config/default.toml, embedded so the documented defaults and
/// the real ones cannot drift apart.
pub const DEFAULTS_TOML: &str = include_str!("../../config/default.toml");

// A key is a field of a section below: its type says whether it may be unset (`Option`)
// and whether it is secret (`Secret`, `DatabaseUrl`); after `=` comes its kind (range or
// check) unless the type implies one (a boolean, an enum). Its default and its description
// for operators go in config/default.toml.

settings! {
    /// The whole configuration.
    #[derive(Debug, Clone)]
    pub struct Settings {
        pub database: DatabaseSettings,
        pub clerk: ClerkSettings,
        pub source: SourceSettings,
        pub sync: SyncSettings,
        pub organizations: OrganizationsSettings,
        pub http: HttpSettings,
        pub scim: ScimSettings,
        pub log: LogSettings,
        pub retention: RetentionSettings,
        pub events: EventsSettings,
    }
}

section! {
    #[derive(Debug, Clone)]
    pub struct DatabaseSettings {
        pub url: DatabaseUrl = Kind::Text(check_database_url),
        pub max_connections: u32 = int(4, 1000),
        pub min_connections: Option<u32> = int(0, 1000),
        pub connect_timeout_seconds: u64 = int(1, 3600),
        pub migrate_on_start: bool,
    }
}

section! {
    #[derive(Debug, Clone)]
    pub struct ClerkSettings {
        pub api_url: Url = Kind::Text(check_api_url),
        pub secret_key: Option<Secret> = Kind::Text(check_secret_key),
        pub secret_key_file: Option<PathBuf> = Kind::Text(check_path),
        pub timeout_seconds: u64 = int(1, 600),
        /// `None`: by the key's kind (100 for `sk_test_`, 1000 for `sk_live_`).
        pub requests_per_window: Option<u32> = int(1, 100_000),
        pub request_window_seconds: u64 = int(1, 3600),
        pub bulk_create_per_window: u32 = int(1, 100_000),
        pub single_create_per_window: u32 = int(1, 100_000),
        pub create_window_seconds: u64 = int(1, 86_400),
        /// `POST /organizations/{id}/invitations/bulk` calls per create window, across all
        /// organizations.
        pub org_bulk_create_per_window: u32 = int(1, 100_000),
        /// `POST /organizations/{id}/invitations` calls per create window, across all
        /// organizations.
        pub org_single_create_per_window: u32 = int(1, 100_000),
        pub max_attempts: u32 = int(1, 20),
        /// A create whose outcome is unknown is looked up only this long after it was sent, so
        /// a request Clerk is still working on is not taken for one it never got.
        pub settle_after_seconds: u64 = int(0, 86_400),
        /// Clerk's answer that an address is not a user's holds this long; then it is asked
        /// again before a create is spent on it.
        pub user_check_max_age_seconds: u64 = int(0, 604_800),
        /// At most this many addresses are looked up in Clerk's users per cycle.
        pub user_checks_per_cycle: u32 = int(100, 1_000_000),
    }
}

section! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SourceSettings {
        /// `name` or `schema.name`, each part an SQL identifier (checked at load).
        pub relation: String = Kind::Text(check_relation),
        /// The membership roster: `name` or `schema.name`, like `relation`.
        pub memberships_relation: String = Kind::Text(check_relation),
    }
}

section! {
    #[derive(Debug, Clone, PartialEq)]
    pub struct SyncSettings {
        /// Cron with seconds, 6 or 7 fields.
        pub schedule: String = Kind::Text(check_schedule),
        /// Cron with seconds: the first cycle after each tick lists every invitation in Clerk.
        pub full_schedule: String = Kind::Text(check_schedule),
        pub dry_run: bool,
        pub notify: bool,
        pub ignore_existing: bool,
        pub expires_in_days: Option<u32> = int(1, 365),
        pub redirect_url: Option<String> = Kind::Text(check_redirect_url),
        pub template_slug: Option<TemplateSlug>,
        pub max_revocations: u32 = int(0, 1_000_000),
        pub max_revocation_ratio: f64 = float(0.0, 1.0),
        /// Lower-cased emails and `@domain` patterns.
        pub protected: Vec<String> = Kind::List(check_protected),
        pub ownership: Ownership,
        pub reinvite_expired: bool,
        pub on_change: OnChange,
        pub shutdown_timeout_seconds: u64 = int(1, 3600),
        pub target: String = Kind::Text(check_target),
        /// The least time from the end of a cycle to the start of one for roster change
        /// notifications (the first change after a quiet period starts one at once).
        pub debounce_seconds: f64 = float(0.0, 3600.0),
    }
}

section! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OrganizationsSettings {
        /// The role of a membership roster row that names none (`org:` and a key).
        pub default_role: String = Kind::Text(check_role),
        /// What a person who already has an account gets.
        pub existing_users: ExistingUsers,
        /// Whether a membership invite-sync made is removed when its row leaves the roster.
        pub remove_members: bool,
    }
}

section! {
    #[derive(Debug, Clone)]
    pub struct HttpSettings {
        pub listen: SocketAddr = Kind::Text(check_socket_addr),
        /// A second listener serving only `/healthz`, `/readyz` and `/metrics`, for the probes.
        pub admin_listen: Option<SocketAddr> = Kind::Text(check_socket_addr),
        /// How long a connection may take to send a request's headers, and how long it may
        /// sit idle between requests, before it is closed.
        pub header_read_timeout_seconds: u64 = int(1, 3600),
        /// How long one request may take, its body included, before it is answered 408.
        pub request_timeout_seconds: u64 = int(1, 3600),
        /// Connections open at once on the main listener; more wait to be accepted.
        pub max_connections: u32 = int(1, 1_000_000),
        /// Webhook requests handled at once; more wait (within the request timeout).
        pub webhook_concurrency: u32 = int(1, 100_000),
        /// Bearer token of the `/v1/` endpoints; unset turns them off.
        pub api_token: Option<Secret> = Kind::Text(check_api_token),
        /// Secrets of the roster webhook (several during a rotation); empty turns it off.
        pub roster_webhook_secret: Vec<Secret> = Kind::List(check_webhook_secret),
        /// Secrets of the Clerk (Svix) webhook; empty turns it off.
        pub clerk_webhook_secret: Vec<Secret> = Kind::List(check_webhook_secret),
    }
}

section! {
    #[derive(Debug, Clone)]
    pub struct ScimSettings {
        /// Bearer tokens of `/scim/v2` (several during a rotation); empty turns it off.
        pub token: Vec<Secret> = Kind::List(check_api_token),
        /// Which SCIM attribute gives the roster address.
        pub email: ScimEmail,
        /// Metadata key → SCIM attribute path whose value it takes.
        pub metadata: BTreeMap<String, String> = Kind::Table(check_metadata_mapping),
        /// Groups to organizations and roles; a group no entry names is ignored.
        pub groups: Vec<GroupMapping> = Kind::Records(check_group_mappings),
    }
}

section! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogSettings {
        pub format: LogFormat,
        /// A tracing `EnvFilter` directive (checked at load).
        pub level: String = Kind::Text(check_filter),
        pub redact_emails: bool,
    }
}

section! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RetentionSettings {
        /// Run history, recorded Clerk calls and webhook deliveries older than this are pruned.
        pub days: u32 = int(1, 36_500),
    }
}

section! {
    #[derive(Debug, Clone)]
    pub struct EventsSettings {
        /// The receivers of the outbound events: `{ url, secret }` or `{ url, secret_file }`,
        /// the secret a `whsec_` key. Empty: events are recorded, and sent nowhere.
        pub endpoints: Vec<EventEndpoint>,
        /// How long one delivery may take before it counts as failed.
        pub timeout_seconds: u64 = int(1, 300),
        /// Deliveries in flight at once, across endpoints.
        pub concurrency: u32 = int(1, 1000),
        /// A delivery failing this many times becomes a dead letter.
        pub max_attempts: u32 = int(1, 1000),
        /// An event still undelivered this long after it was made becomes a dead letter.
        pub max_age_hours: u64 = int(1, 8760),
        /// The wait after a first failure; each further failure doubles it (with jitter).
        pub retry_min_seconds: f64 = float(0.0, 86_400.0),
        /// The longest wait between two attempts.
        pub retry_max_seconds: f64 = float(0.0, 86_400.0),
        /// How often the delivery task looks for due deliveries.
        pub poll_seconds: f64 = float(0.01, 3600.0),
    }
}

/// One receiver of the outbound events. Its secret is never shown: `Debug` and the
/// rendered configuration redact it.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventEndpoint {
    pub url: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl std::fmt::Debug for EventEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEndpoint")
            .field("url", &self.url.as_str())
            .field("secret", &REDACTED)
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

impl EventEndpoint {
    /// The signing secret, from `secret` or read from `secret_file` (trimmed), checked to be
    /// a `whsec_` key. Errors name the endpoint by its URL, never the secret.
    pub fn secret(&self) -> Result<SecretString, ConfigError> {
        let key = "events.endpoints";
        let text = match (&self.secret, &self.secret_file) {
            (Some(secret), None) => SecretString::from(secret.expose_secret()),
            (None, Some(path)) => {
                let text = file::read_text(path, SECRET_FILE_LIMIT).map_err(|e| {
                    ConfigError::single(
                        key,
                        format!(
                            "{}: cannot read secret_file {}: {e}",
                            self.url,
                            path.display()
                        ),
                    )
                })?;
                SecretString::from(text)
            }
            _ => {
                return Err(ConfigError::single(
                    key,
                    format!("{}: set exactly one of secret and secret_file", self.url),
                ))
            }
        };
        let checked = checks::check_webhook_secret(text.expose_secret())
            .map_err(|reason| ConfigError::single(key, format!("{}: secret {reason}", self.url)))?;
        Ok(SecretString::from(checked))
    }
}

impl EventsSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_hours.saturating_mul(3600))
    }

    pub fn poll(&self) -> Duration {
        Duration::from_secs_f64(self.poll_seconds)
    }

    /// The wait before attempt `attempts + 1` after `attempts` failures, without jitter.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = i32::try_from(attempts.saturating_sub(1).min(30)).unwrap_or(30);
        let wait = (self.retry_min_seconds * 2f64.powi(exponent)).min(self.retry_max_seconds);
        Duration::from_secs_f64(wait.max(0.0))
    }
}

/// Where a SCIM user's roster address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScimEmail {
    /// `userName` when it is an address, else the primary (then work, then first) email.
    UserName,
    /// The primary (then work, then first) email, else `userName`.
    WorkEmail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// What a person on the membership roster who already has a Clerk account gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingUsers {
    /// A membership, created directly: no email.
    Membership,
    /// An organization invitation, as a new person gets.
    Invite,
}

/// Which pending invitations a cycle may revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// Only those the ledger says invite-sync created.
    Owned,
    /// Any, including ones made by hand in Clerk.
    All,
}

/// What to do with a pending invitation whose metadata or redirect differ from the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    Report,
    Replace,
}

/// Settings together with where each key's value came from.
pub(crate) struct Loaded {
    pub settings: Settings,
    /// Dotted key → origin (`file PATH` or `env NAME`); keys at their default are absent.
    pub origins: HashMap<String, String>,
    /// The layers that contributed, lowest first, for people to read.
    pub layers: Vec<String>,
}

impl Settings {
    /// Loads and validates the layers: defaults, `file` if given, then `env`.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        Settings::load_traced(file, env).map(|loaded| loaded.settings)
    }

    /// [`Settings::load`] with the process environment.
    pub fn from_process_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, &process_env())
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Settings::load(None, &HashMap::new())
    }

    pub(crate) fn load_traced(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Loaded, ConfigError> {
        let mut problems = Vec::new();
        let mut layers = vec!["built-in defaults".to_owned()];
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULTS_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            match TomlSource::read(path) {
                Ok(source) => {
                    layers.push(format!("file {}", path.display()));
                    builder = builder.add_source(source);
                }
                Err(problem) => problems.push(problem),
            }
        }
        let (prefixed, mut env_problems) = EnvSource::prefixed(env);
        problems.append(&mut env_problems);
        let conventional = EnvSource::conventional(env);
        layers.extend(
            prefixed
                .vars()
                .chain(conventional.vars())
                .map(|v| format!("env {v}")),
        );
        let merged = builder
            .add_source(prefixed)
            .add_source(conventional)
            .build()
            .map_err(|e| {
                let mut all = problems.clone();
                all.push(Problem::new(
                    "configuration",
                    format!("cannot merge the layers: {e}"),
                ));
                ConfigError::new(all)
            })?;

        let mut walked = schema::walk(&merged.cache, Settings::SECTIONS);
        problems.append(&mut walked.problems);
        expand_credentials_directory(&mut walked, env, &mut problems);
        cross_check(&walked, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        let settings = toml::Value::Table(walked.table)
            .try_into::<Settings>()
            .map_err(|e| ConfigError::single("configuration", e.to_string()))?;
        Ok(Loaded {
            settings,
            origins: walked.origins,
            layers,
        })
    }

    /// The whole effective configuration as TOML, secrets redacted. It loads back as a
    /// config file when no secret is set.
    pub fn effective_toml(&self) -> String {
        render::render(self, None)
    }
}

fn get<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (section, name) = key.split_once('.')?;
    table.get(section)?.as_table()?.get(name)
}

/// `%d/...` in `clerk.secret_key_file` means systemd's credentials directory, as it would
/// in the unit file itself.
fn expand_credentials_directory(
    walked: &mut schema::Walked,
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    const KEY: &str = "clerk.secret_key_file";
    let Some(toml::Value::Table(clerk)) = walked.table.get_mut("clerk") else {
        return;
    };
    let Some(toml::Value::String(path)) = clerk.get_mut("secret_key_file") else {
        return;
    };
    let Some(rest) = path.strip_prefix("%d/") else {
        return;
    };
    match env.get(CREDENTIALS_DIRECTORY_VAR).filter(|d| !d.is_empty()) {
        Some(directory) => *path = format!("{}/{rest}", directory.trim_end_matches('/')),
        None => problems.push(
            Problem::new(
                KEY,
                format!(
                    "uses %d but {CREDENTIALS_DIRECTORY_VAR} is not set \
                     (systemd sets it for a unit with LoadCredential=)"
                ),
            )
            .with_origin(walked.origins.get(KEY).cloned()),
        ),
    }
}

/// Rules that involve more than one key.
fn cross_check(walked: &schema::Walked, problems: &mut Vec<Problem>) {
    let origin = |key: &str| walked.origins.get(key).cloned();
    let describe = |key: &str| match walked.origins.get(key) {
        Some(origin) => format!("{key} ({origin})"),
        None => key.to_owned(),
    };
    if get(&walked.table, "clerk.secret_key").is_some()
        && get(&walked.table, "clerk.secret_key_file").is_some()
    {
        problems.push(
            Problem::new(
                "clerk.secret_key",
                format!(
                    "is set together with {}; set only one of them",
                    describe("clerk.secret_key_file")
                ),
            )
            .with_origin(origin("clerk.secret_key")),
        );
    }
    let address = |key: &str| {
        get(&walked.table, key)
            .and_then(toml::Value::as_str)
            .and_then(|text| text.parse::<SocketAddr>().ok())
    };
    if let (Some(listen), Some(admin)) = (address("http.listen"), address("http.admin_listen")) {
        if let Some(clash) = listeners_clash(listen, admin) {
            problems.push(
                Problem::new(
                    "http.admin_listen",
                    format!(
                        "{admin} {clash} http.listen {listen}{}: the probes need a listener \
                         of their own; give it another port, or leave it unset",
                        origin("http.listen")
                            .map(|o| format!(" (from {o})"))
                            .unwrap_or_default()
                    ),
                )
                .with_origin(origin("http.admin_listen")),
            );
        }
    }
    let text = |key: &str| get(&walked.table, key).and_then(toml::Value::as_str);
    if let (Some(invitees), Some(memberships)) =
        (text("source.relation"), text("source.memberships_relation"))
    {
        if invitees == memberships {
            problems.push(
                Problem::new(
                    "source.memberships_relation",
                    format!(
                        "is the same relation as {}: the membership roster (email, \
                         organization, role) needs a table or view of its own",
                        describe("source.relation")
                    ),
                )
                .with_origin(origin("source.memberships_relation")),
            );
        }
    }
    let int = |key: &str| get(&walked.table, key).and_then(toml::Value::as_integer);
    if let (Some(min), Some(max)) = (
        int("database.min_connections"),
        int("database.max_connections"),
    ) {
        if min > max {
            problems.push(
                Problem::new(
                    "database.min_connections",
                    format!("must not exceed database.max_connections ({max}), got {min}"),
                )
                .with_origin(origin("database.min_connections")),
            );
        }
    }
}

/// How two listeners' addresses would collide when both are bound, if they would: the same
/// address, or the same port where one is a wildcard (`0.0.0.0` takes the port on every IPv4
/// address, `[::]` on every address of both families). Port 0 never collides.
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> Option<&'static str> {
    if a.port() != b.port() || a.port() == 0 {
        return None;
    }
    if a.ip() == b.ip() {
        return Some("is the same address as");
    }
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    (covers(a, b) || covers(b, a)).then_some("takes the same port as")
}

impl DatabaseSettings {
    /// Connect options for sqlx. Fields the URL leaves out come from the `PG*` variables
    /// and `~/.pgpass`, as sqlx does; the application name defaults to `invite-sync`.
    /// The options' own `Debug` shows the password: log [`Self::redacted_url`] instead.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let url = self.url.expose_secret();
        checks::check_database_url(url)
            .map_err(|reason| ConfigError::single("database.url", reason))?;
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            let reason = match Url::parse(url) {
                Ok(parsed) => secret::scrub_password(&parsed, &format!("is not usable: {e}")),
                Err(_) => "is not usable".to_owned(),
            };
            ConfigError::single("database.url", reason)
        })?;
        Ok(if options.get_application_name().is_none() {
            options.application_name("invite-sync")
        } else {
            options
        })
    }

    /// A pool configured from these settings; connect it with `connect_with(connect_options()?)`.
    pub fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections.unwrap_or(0))
            .acquire_timeout(self.connect_timeout())
    }

    /// The database the URL names, if it names one.
    pub fn database_name(&self) -> Option<String> {
        let url = Url::parse(self.url.expose_secret()).ok();
        let from_query = url.as_ref().and_then(|u| {
            u.query_pairs()
                .find(|(name, _)| name == "dbname")
                .map(|(_, value)| value.into_owned())
        });
        let from_path = url.as_ref().and_then(|u| {
            let path = u.path().trim_start_matches('/');
            (!path.is_empty())
                .then(|| secret::percent_decode(path).map_or_else(|| path.to_owned(), Into::into))
        });
        from_query.or(from_path)
    }

    /// The URL with any password replaced by `[redacted]`, for logs and `config check`.
    pub fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }
}

impl ClerkSettings {
    /// The secret key, from `secret_key` or read from `secret_key_file` (trimmed), checked
    /// to be an `sk_test_` or `sk_live_` key. Errors never contain the key.
    pub fn secret_key(&self) -> Result<SecretString, ConfigError> {
        let (key, text) = match (&self.secret_key, &self.secret_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::single(
                    "clerk.secret_key",
                    "is set together with clerk.secret_key_file; set only one of them",
                ))
            }
            (Some(key), None) => ("clerk.secret_key", SecretString::from(key.expose_secret())),
            (None, Some(path)) => {
                let text = file::read_text(path, SECRET_FILE_LIMIT).map_err(|e| {
                    ConfigError::single(
                        "clerk.secret_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                ("clerk.secret_key_file", SecretString::from(text))
            }
            (None, None) => {
                return Err(ConfigError::single(
                    "clerk.secret_key",
                    format!(
                        "is not set: set clerk.secret_key or clerk.secret_key_file in the \
                         config file, or the {CLERK_SECRET_KEY_VAR} (or {}) environment variable",
                        env_var_name("clerk.secret_key")
                    ),
                ))
            }
        };
        let checked = checks::check_secret_key(text.expose_secret()).map_err(|reason| {
            let reason = if key == "clerk.secret_key_file" {
                format!("the file's content {reason}")
            } else {
                reason
            };
            ConfigError::single(key, reason)
        })?;
        Ok(SecretString::from(checked))
    }

    /// Everything the Clerk client needs. Requires the secret key.
    pub fn client_options(&self) -> Result<ClientOptions, ConfigError> {
        let secret_key = self.secret_key()?;
        let kind = KeyKind::of(secret_key.expose_secret()).unwrap_or(KeyKind::Test);
        Ok(ClientOptions {
            api_url: self.api_url.clone(),
            secret_key,
            timeout: self.timeout(),
            rate: Some(self.request_rate(kind)),
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                ..RetryPolicy::default()
            },
        })
    }

    /// The general request rate for a key of this kind: `requests_per_window` if set,
    /// else Clerk's limit for the kind.
    pub fn request_rate(&self, kind: KeyKind) -> RequestRate {
        RequestRate {
            requests: self
                .requests_per_window
                .unwrap_or(kind.default_rate().requests),
            per: self.request_window(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub fn request_window(&self) -> Duration {
        Duration::from_secs(self.request_window_seconds)
    }

    pub fn settle_after(&self) -> Duration {
        Duration::from_secs(self.settle_after_seconds)
    }

    /// The organization invitations' budget: `org_bulk_create_per_window` and
    /// `org_single_create_per_window` over the create window, across all organizations.
    pub fn organization_limits(&self) -> Limits {
        Limits {
            bulk_calls: self.org_bulk_create_per_window,
            single_calls: self.org_single_create_per_window,
            window: self.create_window(),
        }
    }

    /// The window the create budgets (`bulk_create_per_window`, `single_create_per_window`) refill over.
    pub fn create_window(&self) -> Duration {
        Duration::from_secs(self.create_window_seconds)
    }
}

impl SyncSettings {
    pub fn debounce(&self) -> Duration {
        Duration::from_secs_f64(self.debounce_seconds)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }

    /// What a create request carries where the roster row is silent.
    pub fn row_defaults(&self) -> RowDefaults {
        RowDefaults {
            notify: self.notify,
            ignore_existing: self.ignore_existing,
            expires_in_days: self.expires_in_days,
            redirect_url: self.redirect_url.clone(),
            template_slug: self.template_slug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        match Settings::defaults() {
            Ok(settings) => settings,
            Err(e) => panic!("the built-in defaults are invalid: {e}"),
        }
    }

    #[test]
    fn every_key_is_documented_in_default_toml() {
        for section in Settings::SECTIONS {
            for spec in section.keys {
                let set = format!("\n{} = ", spec.name);
                let commented = format!("\n# {} = ", spec.name);
                assert!(
                    DEFAULTS_TOML.contains(&set)
                        || (spec.optional && DEFAULTS_TOML.contains(&commented)),
                    "{}.{} is not in config/default.toml",
                    section.name,
                    spec.name
                );
            }
        }
    }

    #[test]
    fn key_kinds_and_rates() {
        let clerk = defaults().clerk;
        assert_eq!(clerk.request_rate(KeyKind::Test).requests, 100);
        assert_eq!(clerk.request_rate(KeyKind::Live).requests, 1000);
        assert_eq!(
            clerk.request_rate(KeyKind::Live).per,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn listeners_clash_on_one_address_or_on_one_port_under_a_wildcard() {
        let clash = |a: &str, b: &str| listeners_clash(a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(
            clash("127.0.0.1:8080", "127.0.0.1:8080"),
            Some("is the same address as")
        );
        assert_eq!(
            clash("0.0.0.0:8080", "127.0.0.1:8080"),
            Some("takes the same port as")
        );
        assert_eq!(
            clash("127.0.0.1:8080", "[::]:8080"),
            Some("takes the same port as")
        );
        assert_eq!(
            clash("[::]:8080", "[::1]:8080"),
            Some("takes the same port as")
        );
        assert_eq!(clash("127.0.0.1:8080", "127.0.0.1:9090"), None);
        assert_eq!(clash("127.0.0.1:8080", "10.0.0.1:8080"), None);
        assert_eq!(clash("0.0.0.0:8080", "[::1]:8080"), None);
        assert_eq!(clash("127.0.0.1:0", "127.0.0.1:0"), None);
    }

    fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(None, &env)
    }

    #[test]
    fn scim_groups_load_from_a_file_and_from_the_environment_as_json() {
        assert!(defaults().scim.groups.is_empty());
        let path = std::env::temp_dir().join(format!("scim-groups-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[scim.groups]]\ngroup = \"Acme\"\norganization = \"acme\"\n\n\
             [[scim.groups]]\ngroup = \" Acme admins \"\norganization = \"acme\"\n\
             role = \"org:admin\"\nprecedence = 10\n",
        )
        .unwrap();
        let loaded = Settings::load(Some(&path), &HashMap::new());
        let _ = std::fs::remove_file(&path);
        let groups = loaded.unwrap().scim.groups;
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].group, "Acme admins", "trimmed");
        assert_eq!(
            (groups[1].role.as_deref(), groups[1].precedence),
            (Some("org:admin"), 10)
        );
        assert_eq!((groups[0].role.as_deref(), groups[0].precedence), (None, 0));

        let env = with_env(&[(
            "INVITE_SYNC__SCIM__GROUPS",
            r#"[{"group": "00g1", "organization": "org_2abc", "role": "org:billing"}]"#,
        )])
        .unwrap();
        assert_eq!(env.scim.groups[0].organization, "org_2abc");
        let rendered = env.effective_toml();
        let again: toml::Table = toml::from_str(&rendered).unwrap();
        assert_eq!(
            again["scim"]["groups"][0]["group"].as_str(),
            Some("00g1"),
            "{rendered}"
        );
    }

    #[test]
    fn bad_scim_groups_are_named_entry_by_entry() {
        let error = with_env(&[(
            "INVITE_SYNC__SCIM__GROUPS",
            r#"[{"group": "Acme", "organization": "acme"},
                {"group": "Typo", "organization": "acme", "rol": "org:admin"},
                {"group": "No org"},
                {"group": "Bad role", "organization": "acme", "role": "Admin", "precedence": 1},
                {"group": "Words", "organization": "acme", "precedence": "high"}]"#,
        )])
        .unwrap_err()
        .to_string();
        for expected in [
            "scim.groups",
            "entry 2 (group \"Typo\"): unknown field `rol`",
            "entry 3 (group \"No org\"): organization must be set",
            "entry 5 (group \"Words\"):",
        ] {
            assert!(error.contains(expected), "{expected:?} in {error}");
        }
        let error = with_env(&[(
            "INVITE_SYNC__SCIM__GROUPS",
            r#"[{"group": "A", "organization": "acme", "role": "org:Admin"},
                {"group": "B", "organization": "acme", "role": "org:admin"},
                {"group": "C", "organization": "acme"}]"#,
        )])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("entry 1 (group \"A\"): role \"org:Admin\" must be lower case"),
            "{error}"
        );
        assert!(
            error.contains("entry 3 (group \"C\"): has precedence 0 like entry 2"),
            "{error}"
        );
        let not_json = with_env(&[("INVITE_SYNC__SCIM__GROUPS", "Acme=acme")])
            .unwrap_err()
            .to_string();
        assert!(
            not_json.contains("expected a JSON array of objects"),
            "{not_json}"
        );
    }

    #[test]
    fn database_names() {
        let mut database = defaults().database;
        assert_eq!(database.database_name().as_deref(), Some("invite_sync"));
        database.url = DatabaseUrl::from("postgres://u@h/my%20db");
        assert_eq!(database.database_name().as_deref(), Some("my db"));
        database.url = DatabaseUrl::from("postgres://u@h/?dbname=other");
        assert_eq!(database.database_name().as_deref(), Some("other"));
        database.url = DatabaseUrl::from("postgres://u@h");
        assert_eq!(database.database_name(), None);
    }
}
