//! The operator API: `POST /v1/sync` asks for a cycle, `GET /v1/status` reports; both need
//! `http.api_token`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::token::authorize;
use crate::service::state::{AppState, Limits, MAX_API_CONCURRENT};
use crate::store;

/// The API's routes, with a concurrency limit of their own (more requests wait) and the
/// request timeout.
pub fn router(limits: Limits) -> Router<AppState> {
    Router::new()
        .route("/v1/sync", post(trigger_sync))
        .route("/v1/status", get(status))
        .route("/v1/people/{email}", get(super::people::person))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_API_CONCURRENT,
        ))
        .layer(limits.timeout())
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
        store::status::MembershipScope {
            relation: &config.memberships.relation,
            limits: config.memberships.limits,
        },
    )
    .await?;
    let mut status = status;
    if let Some(scim) = &state.scim {
        status.unmapped_scim_groups =
            store::group_memberships::unmapped(&state.pool, scim.groups.mappings(), &config.target)
                .await?;
    }
    Ok(Json(status).into_response())
}
