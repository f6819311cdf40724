//! What every HTTP handler shares: the service's state ([`AppState`]) and the limits that
//! bound the server.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tower_http::timeout::TimeoutLayer;

use super::worker::Triggers;
use crate::clerk::ClerkClient;
use crate::config::{self, ScimEmail, Settings};
use crate::reconcile::CycleConfig;
use crate::scim::{EmailSource, Mapping};
use crate::store::group_memberships::GroupMappings;
use crate::webhook_signature::Verifier;

/// Largest request body accepted (413 above).
pub const MAX_BODY: usize = 1024 * 1024;

/// `/v1/sync` and `/v1/status` requests handled at once; more wait.
pub const MAX_API_CONCURRENT: usize = 16;

/// SCIM requests handled at once; more wait.
pub const MAX_SCIM_CONCURRENT: usize = 16;

/// Connections open at once on the admin listener (probes and Prometheus only).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// What bounds the HTTP server, from the `http` settings. Each limit is documented in
/// config/default.toml and docs/operations.md.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Headers not all received within this time close the connection; so does a keep-alive
    /// connection idle for as long.
    pub header_read_timeout: Duration,
    /// A request (its body included, and the wait for a webhook slot) that takes longer is
    /// answered 408.
    pub request_timeout: Duration,
    /// Connections open at once on the main listener.
    pub max_connections: usize,
    /// Webhook requests handled at once. With [`MAX_BODY`] this bounds the memory bodies
    /// can take.
    pub webhook_concurrency: usize,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Limits {
        let http = &settings.http;
        Limits {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_seconds),
            request_timeout: Duration::from_secs(http.request_timeout_seconds),
            max_connections: usize::try_from(http.max_connections).unwrap_or(usize::MAX),
            webhook_concurrency: usize::try_from(http.webhook_concurrency).unwrap_or(usize::MAX),
        }
    }

    /// Answers 408 to a request that takes longer than [`Limits::request_timeout`].
    pub fn timeout(&self) -> TimeoutLayer {
        TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, self.request_timeout)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub triggers: Triggers,
    pub config: CycleConfig,
    /// `source.memberships_relation`: where the roster webhook writes memberships.
    pub memberships_relation: String,
    pub limits: Limits,
    /// The cycles' Clerk client, whose blocks `/readyz` reports.
    pub clerk_client: Option<ClerkClient>,
    pub(in crate::service) api_token: Option<Arc<SecretString>>,
    pub(in crate::service) roster: Option<Arc<Verifier>>,
    pub(in crate::service) clerk: Option<Arc<Verifier>>,
    /// `/scim/v2`, when `scim.token` is set.
    pub scim: Option<Arc<Scim>>,
}

impl AppState {
    pub fn new(pool: PgPool, triggers: Triggers, settings: &Settings) -> anyhow::Result<AppState> {
        let verifier =
            |secrets: &[config::Secret], key: &str| -> anyhow::Result<Option<Arc<Verifier>>> {
                if secrets.is_empty() {
                    return Ok(None);
                }
                let exposed: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
                Verifier::new(&exposed)
                    .map(|v| Some(Arc::new(v)))
                    .map_err(|e| anyhow::anyhow!("{key}: {e}"))
            };
        Ok(AppState {
            pool,
            triggers,
            config: CycleConfig::from_settings(settings),
            memberships_relation: settings.source.memberships_relation.clone(),
            limits: Limits::from_settings(settings),
            clerk_client: None,
            api_token: settings.http.api_token.clone().map(|t| Arc::new(t.into())),
            roster: verifier(
                &settings.http.roster_webhook_secret,
                "http.roster_webhook_secret",
            )?,
            clerk: verifier(
                &settings.http.clerk_webhook_secret,
                "http.clerk_webhook_secret",
            )?,
            scim: Scim::from_settings(settings)?.map(Arc::new),
        })
    }

    /// Lets `/readyz` see the blocks Clerk put on this client.
    pub fn with_clerk_client(self, client: ClerkClient) -> AppState {
        AppState {
            clerk_client: Some(client),
            ..self
        }
    }
}

/// The endpoint's configuration: its tokens, the roster mapping and the groups' mapping.
pub struct Scim {
    pub(in crate::service) tokens: Vec<SecretString>,
    pub(in crate::service) mapping: Mapping,
    /// `scim.groups`: what a group's members become on the membership roster.
    pub(crate) groups: Arc<GroupMappings>,
}

/// `scim.groups`, with where its rows go (`source.relation`, `source.memberships_relation`)
/// and how a SCIM user's instance roster row is written back when they leave every mapped
/// group.
pub fn group_mappings(settings: &Settings) -> anyhow::Result<GroupMappings> {
    let scim = &settings.scim;
    let email = match scim.email {
        ScimEmail::UserName => EmailSource::UserName,
        ScimEmail::WorkEmail => EmailSource::WorkEmail,
    };
    let users = Mapping::new(email, &scim.metadata).map_err(anyhow::Error::msg)?;
    Ok(GroupMappings::new(
        scim.groups.clone(),
        &settings.source.relation,
        &settings.source.memberships_relation,
        Some(users),
    ))
}

impl Scim {
    /// `None` when no token is set: the endpoint is off.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Scim>> {
        let scim = &settings.scim;
        if scim.token.is_empty() {
            return Ok(None);
        }
        let email = match scim.email {
            ScimEmail::UserName => EmailSource::UserName,
            ScimEmail::WorkEmail => EmailSource::WorkEmail,
        };
        let mapping = Mapping::new(email, &scim.metadata).map_err(anyhow::Error::msg)?;
        Ok(Some(Scim {
            tokens: scim.token.iter().cloned().map(Into::into).collect(),
            mapping,
            groups: Arc::new(group_mappings(settings)?),
        }))
    }
}
