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
use crate::clerk::ClerkClient;
use crate::config::{self, Settings};
use crate::domain::Email;
use crate::reconcile::CycleConfig;
use crate::store::{self, ledger, roster, runs, users, webhooks};
use crate::telemetry::Chain;
use crate::webhook_signature::{Scheme, Verifier, VerifyError};

/// Largest request body accepted (413 above).
pub const MAX_BODY: usize = 1024 * 1024;
/// `/v1/sync` and `/v1/status` requests handled at once; more wait.
pub const MAX_API_CONCURRENT: usize = 16;
/// SCIM requests handled at once; more wait.
pub const MAX_SCIM_CONCURRENT: usize = 16;
const ROSTER_WEBHOOK: &str = "/v1/webhooks/roster";
const CLERK_WEBHOOK: &str = "/v1/webhooks/clerk";
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
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub triggers: Triggers,
    pub config: CycleConfig,
    pub limits: Limits,
    /// The cycles' Clerk client, whose blocks `/readyz` reports.
    pub clerk_client: Option<ClerkClient>,
    api_token: Option<Arc<SecretString>>,
    roster: Option<Arc<Verifier>>,
    clerk: Option<Arc<Verifier>>,
    /// `/scim/v2`, when `scim.token` is set.
    pub scim: Option<Arc<super::scim::Scim>>,
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
            scim: super::scim::Scim::from_settings(settings)?.map(Arc::new),
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

/// The probes: answered at once, outside every concurrency limit, so that no client of the
/// other routes can starve them.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    let timeout = || {
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        )
    };
    let api = Router::new()
        .route("/v1/sync", post(trigger_sync))
        .route("/v1/status", get(status))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_API_CONCURRENT,
        ))
        .layer(timeout());
    // The signature headers are looked at first, before the body is read and before a
    // webhook slot is taken: a request without them is refused at once. Both webhooks share
    // the slots; the timeout counts the wait for one.
    let slots = tower::limit::GlobalConcurrencyLimitLayer::new(limits.webhook_concurrency);
    let webhook = |path: &str, handler: axum::routing::MethodRouter<AppState>| {
        Router::new()
            .route(path, handler)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(slots.clone())
            .layer(timeout())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                webhook_headers,
            ))
    };
    let webhooks =
        webhook(ROSTER_WEBHOOK, post(roster_hook)).merge(webhook(CLERK_WEBHOOK, post(clerk_hook)));
    // SCIM (an HR system's provisioning) has a limit of its own, like the operator API.
    let scim = Router::new()
        .nest("/scim/v2", super::scim::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_SCIM_CONCURRENT,
        ))
        .layer(timeout());
    answered_in_json(probes().merge(api).merge(webhooks).merge(scim)).with_state(state)
}

/// What both listeners do with every answer: an unknown path is a 404, a handler that
/// panicked a 500 on a connection that stays open, and every error comes in JSON.
fn answered_in_json<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .fallback(no_such_path)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::map_response(json_errors))
}

/// The answer to a request whose handler panicked: a 500 like any internal error, and the
/// connection kept. The panic's message is neither logged nor returned, for it may quote the
/// request.
fn panicked(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("an HTTP request's handler panicked; its message is withheld");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "internal error" })),
    )
        .into_response()
}

/// The admin listener's routes: the probes alone, with errors in JSON like the main
/// listener's.
pub fn admin_router(state: AppState) -> Router {
    answered_in_json(probes()).with_state(state)
}

/// Serves until `shutdown` fires, then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_router(
        listener,
        router(state),
        limits,
        limits.max_connections,
        shutdown,
    )
    .await
}

/// Serves the probes alone (`http.admin_listen`) until `shutdown` fires.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_router(
        listener,
        admin_router(state),
        limits,
        MAX_ADMIN_CONNECTIONS,
        shutdown,
    )
    .await
}

/// The accept loop: at most `max_connections` open at once (the next connection is accepted
/// when one closes), each served over HTTP/1.1 with the header-read (and keep-alive idle)
/// timeout. On shutdown it stops accepting, lets requests in flight finish and closes idle
/// connections.
async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| {
            let mut router = router.clone();
            async move { tower::Service::call(&mut router, request).await }
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(error.message = %error, error.cause_chain = %Chain(&error), "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// An error answer: a status and `{"error": reason}`. A failure of the service's own (the
/// database) is logged with its causes and answered 500 "internal error": its details never
/// reach the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the database failed")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = match &self {
            ApiError::Database(_) => {
                tracing::error!(
                    error.message = %self,
                    error.cause_chain = %Chain(&self),
                    "HTTP request failed"
                );
                "internal error".to_owned()
            }
            refused => refused.to_string(),
        };
        (self.status(), Json(json!({ "error": reason }))).into_response()
    }
}

impl From<roster_webhook::ApplyError> for ApiError {
    fn from(error: roster_webhook::ApplyError) -> ApiError {
        match error {
            roster_webhook::ApplyError::ScimManaged(_) => ApiError::Conflict(error.to_string()),
            roster_webhook::ApplyError::Database(error) => ApiError::Database(error),
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let check = tokio::time::timeout(Duration::from_secs(2), store::ping(&state.pool)).await;
    match check {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "/readyz: the database does not answer");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": format!("the database does not answer: {}", database_reason(&error))})),
            )
                .into_response()
        }
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "the database did not answer within 2 s"})),
            )
                .into_response()
        }
    }
    // Clerk blocking the listing stops every cycle until the block ends, but restarting or
    // taking the instance out of service helps nothing (webhooks are still taken): ready,
    // and degraded says why cycles fail.
    // This process's block, or one another replica recorded (it holds the same target).
    let listing = crate::clerk::Operation::ListInvitations;
    let here = state
        .clerk_client
        .as_ref()
        .and_then(|client| client.blocked_for(listing));
    let recorded =
        crate::store::budget::blocked_until(&state.pool, &state.config.target, listing.as_str())
            .await
            .ok()
            .flatten()
            .and_then(|until| (until - chrono::Utc::now()).to_std().ok());
    let listing_block = here.max(recorded);
    match listing_block {
        Some(left) => (
            StatusCode::OK,
            Json(json!({
                "status": "degraded",
                "reason": format!(
                    "Clerk rate-limited the invitation listing; cycles fail until the block ends in {} s",
                    left.as_secs().max(1)
                ),
                "blocked_seconds": left.as_secs().max(1),
            })),
        )
            .into_response(),
        None => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
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
async fn no_such_path(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such path: {}", uri.path()))
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
        StatusCode::REQUEST_TIMEOUT => {
            "the request took longer than http.request_timeout_seconds".to_owned()
        }
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
            tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "held revocations could not be read for /metrics")
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
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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
        Err(ApiError::Unauthorized(
            "a valid bearer token is required".to_owned(),
        ))
    }
}

async fn trigger_sync(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let run_id = state.triggers.request_run("api");
    Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": run_id }))).into_response())
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let config = &state.config;
    let status = store::status::collect(
        &state.pool,
        &config.target,
        config.budget,
        config.settle_after,
    )
    .await?;
    Ok(Json(status).into_response())
}

/// 404 for an endpoint that is off because its key is not set.
fn not_configured(what: &str, key: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{what} is not configured on this service ({key} is not set)"
    ))
}

fn verify(
    verifier: &Option<Arc<Verifier>>,
    scheme: Scheme,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, ApiError> {
    let Some(verifier) = verifier else {
        return Err(webhook_off(scheme));
    };
    let now = chrono::Utc::now().timestamp();
    verifier
        .verify(scheme, headers, body, now)
        .map(|delivery| delivery.id)
        .map_err(|e| match e {
            VerifyError::IdTooLong(_) => ApiError::BadRequest(e.to_string()),
            e => ApiError::Unauthorized(format!("signature rejected: {e}")),
        })
}

/// 404 for a webhook whose secret is not set.
fn webhook_off(scheme: Scheme) -> ApiError {
    match scheme {
        Scheme::StandardWebhooks => {
            not_configured("the roster webhook", "http.roster_webhook_secret")
        }
        Scheme::Svix => not_configured("the Clerk webhook", "http.clerk_webhook_secret"),
    }
}

/// Refuses a webhook request whose signature headers cannot be right (absent, an empty id, a
/// timestamp outside the tolerance, no `v1,` signature of the right length) before its body
/// is read; 404 when the webhook is off. The signature itself is checked over the body after.
fn precheck(
    verifier: &Option<Arc<Verifier>>,
    scheme: Scheme,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if verifier.is_none() {
        return Err(webhook_off(scheme));
    }
    let refuse = |reason: String| ApiError::Unauthorized(format!("signature rejected: {reason}"));
    let text = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| refuse(format!("missing webhook header `{name}`")))
    };
    if text(scheme.id_header())?.len() > crate::webhook_signature::MAX_ID_LEN {
        return Err(ApiError::BadRequest(
            VerifyError::IdTooLong(scheme.id_header()).to_string(),
        ));
    }
    let timestamp = text(scheme.timestamp_header())?;
    let signed_at: i64 = timestamp
        .parse()
        .map_err(|_| refuse("webhook timestamp is not a Unix time in seconds".to_owned()))?;
    let age = i128::from(chrono::Utc::now().timestamp()) - i128::from(signed_at);
    if age.unsigned_abs() > u128::from(crate::webhook_signature::TOLERANCE.as_secs()) {
        return Err(refuse(
            "webhook timestamp is outside the tolerance".to_owned(),
        ));
    }
    let signature_name = scheme.signature_header();
    // An HMAC-SHA256 signature is 32 bytes: 44 characters of base64.
    let plausible = headers
        .get_all(signature_name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(' '))
        .filter_map(|entry| entry.split_once(','))
        .any(|(version, signature)| version == "v1" && signature.len() == 44);
    if !plausible {
        return Err(refuse(format!("`{signature_name}` holds no v1 signature")));
    }
    Ok(())
}

/// Checks a webhook request's signature headers ([`precheck`]) before anything else.
async fn webhook_headers(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Another method than POST is answered by the routes (405), with nothing to read.
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (webhook, checked) = if request.uri().path() == ROSTER_WEBHOOK {
        let checked = precheck(&state.roster, Scheme::StandardWebhooks, request.headers());
        ("roster", checked)
    } else {
        (
            "clerk",
            precheck(&state.clerk, Scheme::Svix, request.headers()),
        )
    };
    let response = match checked {
        Ok(()) => next.run(request).await,
        Err(error) => refuse_unread(error),
    };
    crate::metrics::metrics().webhook_delivery(webhook, response.status().as_u16());
    response
}

/// The answer to a request whose body was not read: the connection closes after it, so that
/// nothing waits for (or reads) the rest of the body.
fn refuse_unread(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

async fn roster_hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let message_id = verify(&state.roster, Scheme::StandardWebhooks, &headers, &body)?;
    let changes = roster_webhook::parse(&body).map_err(ApiError::BadRequest)?;
    // A view cannot take the writes: a 4xx, so the sender stops retrying what cannot succeed.
    let kind = roster::relation_kind(&state.pool, &state.config.relation).await?;
    if let Some(reason) = roster::not_writable_reason(&state.config.relation, kind) {
        return Err(ApiError::Conflict(reason));
    }
    let mut tx = state.pool.begin().await?;
    if !webhooks::record_delivery(&mut *tx, "roster", &message_id).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "duplicate", "applied": false})),
        )
            .into_response());
    }
    let applied = roster_webhook::apply(&mut tx, &state.config.relation, &changes).await?;
    tx.commit().await?;
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
) -> Result<Response, ApiError> {
    let message_id = verify(&state.clerk, Scheme::Svix, &headers, &body)?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "user.created" && kind != "user.deleted" {
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "ignored", "type": kind})),
        )
            .into_response());
    }
    let user_id = clerk_user_id(&event, kind).map_err(ApiError::BadRequest)?;
    let mut tx = state.pool.begin().await?;
    if !webhooks::record_delivery(&mut *tx, "clerk", &message_id).await? {
        return Ok((StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response());
    }
    let target = state.config.target.as_str();
    let reporter = state.config.reporter;
    let (emails, said) = if kind == "user.deleted" {
        let emails = users::mark_deleted(&mut *tx, target, user_id).await?;
        (
            emails,
            "Clerk deleted this user; invited again while on the roster",
        )
    } else {
        let emails = user_created(&mut tx, target, user_id, &event).await?;
        (emails, "Clerk says this person is now a user")
    };
    tx.commit().await?;
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

/// The longest Clerk user id taken; Clerk's are `user_` and 27 characters.
const MAX_USER_ID_LEN: usize = 128;

/// The Clerk user id a `user.*` event is about (`data.id`), or why it cannot be one. Clerk's
/// ids are short printable ASCII; anything else could not match a user recorded here, and a
/// NUL could not even be looked up.
fn clerk_user_id<'a>(event: &'a Value, kind: &str) -> Result<&'a str, String> {
    let id = event
        .pointer("/data/id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("a {kind} event needs data.id, a non-empty string"))?;
    if id.contains('\0') {
        return Err("data.id contains a NUL character (U+0000); it is not a Clerk user id".into());
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(format!(
            "data.id is {} bytes long; a Clerk user id has at most {MAX_USER_ID_LEN}",
            id.len()
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "data.id holds characters other than printable ASCII; it is not a Clerk user id".into(),
        );
    }
    Ok(id)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_refusal_is_answered_with_its_status_and_reason() {
        let (status, body) = answer(ApiError::Conflict("a view cannot take writes".into())).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body, json!({"error": "a view cannot take writes"}));
    }

    #[tokio::test]
    async fn a_database_failure_is_a_500_that_says_nothing_of_its_cause() {
        let failure = sqlx::Error::Protocol("password authentication failed for hr_admin".into());
        let (status, body) = answer(ApiError::from(failure)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({"error": "internal error"}));
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_a_json_500_that_quotes_nothing_of_the_panic() {
        let mut routes = answered_in_json(Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("quoted input\n{{\"level\":\"INFO\"}}");
                }
                "unreachable"
            }),
        ));
        let request = axum::http::Request::get("/boom")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        let response = match tower::Service::call(&mut routes, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .unwrap_or_default();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap_or_default(),
            json!({"error": "internal error"})
        );
    }
}
