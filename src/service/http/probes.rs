//! The probes: `/healthz`, `/readyz` and `/metrics`, served on both listeners, answered at
//! once and outside every concurrency limit.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::service::state::AppState;
use crate::store::{self, runs};
use crate::telemetry::Chain;

/// The probes: answered at once, outside every concurrency limit, so that no client of the
/// other routes can starve them.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
