//! The HTTP surface: health, readiness, metrics, the operator API, and the signed roster and
//! Clerk webhooks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::roster_webhook;
use super::Triggers;
use crate::config::Settings;
use crate::domain::Email;
use crate::reconcile::CycleConfig;
use crate::store::{ledger, roster, runs, users, webhooks};
use crate::webhook::{Scheme, Verifier};

/// Largest request body accepted (413 above).
pub const MAX_BODY: usize = 1024 * 1024;
/// Requests handled at once; more wait. With the body limit, this bounds the memory
/// bodies can take (64 MiB).
pub const MAX_CONCURRENT: usize = 64;
/// A request that takes longer, a slowly sent body included, is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub triggers: Triggers,
    pub config: CycleConfig,
    api_token: Option<Arc<SecretString>>,
    roster: Option<Arc<Verifier>>,
    clerk: Option<Arc<Verifier>>,
    /// `/scim/v2`, when `scim.token` is set.
    pub scim: Option<Arc<super::scim::Scim>>,
}

impl AppState {
    pub fn new(pool: PgPool, triggers: Triggers, settings: &Settings) -> anyhow::Result<AppState> {
        let verifier =
            |secrets: &[SecretString], key: &str| -> anyhow::Result<Option<Arc<Verifier>>> {
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
            api_token: settings.http.api_token.clone().map(Arc::new),
            roster: verifier(
                &settings.http.roster_webhook_secret,
                "http.roster_webhook_secret",
            )?,
            clerk: verifier(
                &settings.http.clerk_webhook_secret,
                "http.clerk_webhook_secret",
            )?,
            scim: super::scim::Scim::from_settings(settings)?.map(Arc::new),
        })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/sync", post(trigger_sync))
        .route("/v1/status", get(status))
        .route("/v1/webhooks/roster", post(roster_hook))
        .route("/v1/webhooks/clerk", post(clerk_hook))
        .nest("/scim/v2", super::scim::router())
        .fallback(no_such_path)
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_CONCURRENT,
        ))
        .with_state(state)
}

/// Serves until `shutdown` fires, then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// An error answer: a status and a JSON reason. Internal details are logged, not returned.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(error: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %error, "HTTP request failed");
    Problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error".to_owned(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    match check {
        Ok(Ok(_)) => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Ok(Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": format!("the database does not answer: {}", database_reason(&error))})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": "the database did not answer within 2 s"})),
        )
            .into_response(),
    }
}

/// A database error without anything the connection string holds.
fn database_reason(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::PoolTimedOut => "no connection available",
        sqlx::Error::Io(_) => "connection failed",
        sqlx::Error::Database(_) => "query failed",
        _ => "error",
    }
}

/// 404 for a path the service does not serve, in JSON like every other error.
async fn no_such_path(uri: axum::http::Uri) -> Problem {
    Problem(
        StatusCode::NOT_FOUND,
        format!("no such path: {}", uri.path()),
    )
}

/// Gives every error answer a JSON body: those axum and tower make themselves (413 from the
/// body limit, 405, 408 from the timeout) come as plain text or empty. JSON bodies pass.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // application/json, or a JSON type of its own (SCIM's application/scim+json).
        .is_some_and(|v| {
            let media = v.split(';').next().unwrap_or("").trim();
            media == "application/json" || media.ends_with("+json")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let reason = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than {MAX_BODY} bytes")
        }
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path".to_owned(),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request took longer than {} s",
            REQUEST_TIMEOUT.as_secs()
        ),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        axum::body::Body::from(json!({ "error": reason }).to_string()),
    )
}

/// The metrics. Held revocations are the target's, not this process's: read from the shared
/// run history, so every replica exports the same value, whoever ran the last cycle.
async fn metrics(State(state): State<AppState>) -> Response {
    let held = tokio::time::timeout(
        Duration::from_secs(2),
        runs::held_revocations_now(&state.pool, &state.config.target),
    )
    .await;
    match held {
        Ok(Ok(held)) => {
            crate::metrics::metrics()
                .held_revocations
                .set(i64::from(held));
        }
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "held revocations could not be read for /metrics")
        }
        Err(_) => tracing::warn!("held revocations could not be read for /metrics within 2 s"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response()
}

/// 404 when no token is configured (the API is off), 401 unless the bearer token matches.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(token) = &state.api_token else {
        return Err(not_configured("the operator API", "http.api_token"));
    };
    // The scheme name is case-insensitive (RFC 7235); the token is not.
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    use subtle::ConstantTimeEq;
    let expected = token.expose_secret().as_bytes();
    let matches: bool = expected.ct_eq(presented.as_bytes()).into();
    if matches {
        Ok(())
    } else {
        Err(Problem(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".to_owned(),
        ))
    }
}

async fn trigger_sync(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&state, &headers)?;
    let run_id = state.triggers.request_run("api");
    Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": run_id }))).into_response())
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    authorize(&state, &headers)?;
    let status = crate::commands::status::collect(&state.pool, &state.config)
        .await
        .map_err(internal)?;
    Ok(Json(status).into_response())
}

/// 404 for an endpoint that is off because its key is not set.
fn not_configured(what: &str, key: &str) -> Problem {
    Problem(
        StatusCode::NOT_FOUND,
        format!("{what} is not configured on this service ({key} is not set)"),
    )
}

fn verify(
    verifier: &Option<Arc<Verifier>>,
    scheme: Scheme,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Problem> {
    let Some(verifier) = verifier else {
        return Err(match scheme {
            Scheme::StandardWebhooks => {
                not_configured("the roster webhook", "http.roster_webhook_secret")
            }
            Scheme::Svix => not_configured("the Clerk webhook", "http.clerk_webhook_secret"),
        });
    };
    let now = chrono::Utc::now().timestamp();
    verifier
        .verify(scheme, headers, body, now)
        .map(|delivery| delivery.id)
        .map_err(|e| Problem(StatusCode::UNAUTHORIZED, format!("signature rejected: {e}")))
}

async fn roster_hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let message_id = verify(&state.roster, Scheme::StandardWebhooks, &headers, &body)?;
    let changes = roster_webhook::parse(&body).map_err(|e| Problem(StatusCode::BAD_REQUEST, e))?;
    // A view cannot take the writes: a 4xx, so the sender stops retrying what cannot succeed.
    let kind = roster::relation_kind(&state.pool, &state.config.relation)
        .await
        .map_err(internal)?;
    if let Some(reason) = roster::not_writable_reason(&state.config.relation, kind) {
        return Err(Problem(StatusCode::CONFLICT, reason));
    }
    let mut tx = state.pool.begin().await.map_err(internal)?;
    if !webhooks::record_delivery(&mut *tx, "roster", &message_id)
        .await
        .map_err(internal)?
    {
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "duplicate", "applied": false})),
        )
            .into_response());
    }
    let applied = roster_webhook::apply(&mut tx, &state.config.relation, &changes)
        .await
        .map_err(|e| match e {
            roster_webhook::ApplyError::ScimManaged(_) => {
                Problem(StatusCode::CONFLICT, e.to_string())
            }
            roster_webhook::ApplyError::Database(e) => internal(e),
        })?;
    tx.commit().await.map_err(internal)?;
    tracing::info!(
        message_id,
        upserted = applied.upserted,
        removed = applied.removed,
        "roster webhook applied"
    );
    Ok((
        StatusCode::OK,
        Json(
            json!({"status": "applied", "upserted": applied.upserted, "removed": applied.removed}),
        ),
    )
        .into_response())
}

async fn clerk_hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let message_id = verify(&state.clerk, Scheme::Svix, &headers, &body)?;
    let event: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })?;
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "user.created" && kind != "user.deleted" {
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "ignored", "type": kind})),
        )
            .into_response());
    }
    let user_id = event
        .pointer("/data/id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Problem(
                StatusCode::BAD_REQUEST,
                format!("a {kind} event needs data.id"),
            )
        })?;
    let mut tx = state.pool.begin().await.map_err(internal)?;
    if !webhooks::record_delivery(&mut *tx, "clerk", &message_id)
        .await
        .map_err(internal)?
    {
        return Ok((StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response());
    }
    let target = state.config.target.as_str();
    let reporter = state.config.reporter;
    let (emails, said) = if kind == "user.deleted" {
        let emails = users::mark_deleted(&mut *tx, target, user_id)
            .await
            .map_err(internal)?;
        (
            emails,
            "Clerk deleted this user; invited again while on the roster",
        )
    } else {
        let emails = user_created(&mut tx, target, user_id, &event)
            .await
            .map_err(internal)?;
        (emails, "Clerk says this person is now a user")
    };
    tx.commit().await.map_err(internal)?;
    for email in &emails {
        tracing::info!(email = reporter.email(email.as_str()), "{said}");
    }
    if kind == "user.deleted" && !emails.is_empty() {
        state.triggers.request("clerk_webhook");
    }
    Ok((
        StatusCode::OK,
        Json(json!({"status": "applied", "users": emails.len()})),
    )
        .into_response())
}

/// Records the addresses of a `user.created` event as the user's, and their pending
/// invitations as accepted. Returns the addresses.
async fn user_created(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    target: &str,
    user_id: &str,
    event: &Value,
) -> Result<Vec<Email>, sqlx::Error> {
    let emails: Vec<Email> = event
        .pointer("/data/email_addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|address| address.get("email_address").and_then(Value::as_str))
        .filter_map(|address| Email::parse(address).ok())
        .collect();
    let known: Vec<users::KnownUser> = emails
        .iter()
        .map(|email| users::KnownUser {
            email: email.clone(),
            clerk_user_id: Some(user_id.to_owned()),
        })
        .collect();
    users::record_users(&mut **tx, target, &known, "user.created").await?;
    ledger::mark_accepted_by_email(&mut **tx, target, &emails).await?;
    Ok(emails)
}
