//! `POST /v1/webhooks/clerk`: Clerk's signed (Svix) `user.created` and `user.deleted`
//! events, which record who is a user now and who no longer is.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::limit::GlobalConcurrencyLimitLayer;

use super::error::ApiError;
use super::signature::{guarded, verify};
use crate::domain::Email;
use crate::service::state::AppState;
use crate::store::{ledger, users, webhooks};
use crate::webhook_signature::Scheme;

const PATH: &str = "/v1/webhooks/clerk";

/// The webhook's route behind its signature check, in the webhook `slots` it shares.
pub fn router(state: &AppState, slots: GlobalConcurrencyLimitLayer) -> Router<AppState> {
    guarded(
        Router::new().route(PATH, post(hook)),
        state,
        Scheme::Svix,
        slots,
    )
}

async fn hook(
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
