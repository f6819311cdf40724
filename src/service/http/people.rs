//! `GET /v1/people/{email}`: `invite-sync explain` over the operator API (`http.api_token`),
//! the same JSON. `?offline=true` asks Clerk nothing. One explanation is computed at a time
//! (each previews the whole plan, as `plan` does); others wait, within the request timeout.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::token::authorize;
use crate::domain::Email;
use crate::reconcile::explain::{self, ExplainError};
use crate::reconcile::Reconciler;
use crate::service::state::AppState;

/// Explanations computed at once.
static EXPLAINING: Semaphore = Semaphore::const_new(1);

#[derive(Debug, Deserialize)]
pub struct Options {
    #[serde(default)]
    offline: bool,
}

pub async fn person(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(email): Path<String>,
    Query(options): Query<Options>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let email = Email::parse(&email).map_err(|error| {
        ApiError::BadRequest(format!("{email:?} is not an email address: {error}"))
    })?;
    // Every service gives its endpoints the cycles' Clerk client.
    let (clerk, offline) = match &state.clerk_client {
        Some(clerk) => (clerk.clone(), options.offline),
        None => {
            return Err(ApiError::NotFound(
                "no Clerk client on this service".to_owned(),
            ))
        }
    };
    let _permit = EXPLAINING
        .acquire()
        .await
        .map_err(|_| ApiError::Conflict("the service is stopping".to_owned()))?;
    let reconciler = Reconciler::new(state.pool.clone(), clerk, state.config.clone());
    // On a task of its own: the plan it previews is computed between reads, and a client
    // that goes away does not cut a read in half.
    let task = tokio::spawn(async move { explain::explain(&reconciler, &email, offline).await });
    let explanation = match task.await {
        Ok(Ok(explanation)) => explanation,
        Ok(Err(ExplainError::Database(error))) => return Err(ApiError::Database(error)),
        Ok(Err(error)) => return Err(ApiError::Conflict(error.to_string())),
        Err(_) => return Err(ApiError::Conflict("the explanation failed".to_owned())),
    };
    Ok(Json(explanation).into_response())
}
