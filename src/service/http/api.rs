//! The operator API: `POST /v1/sync` asks for a cycle, `GET /v1/status` reports; both need
//! `http.api_token`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde_json::json;

use super::error::{not_configured, ApiError};
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

/// 404 when no token is configured (the API is off), 401 unless the bearer token matches.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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
