//! `POST /v1/webhooks/clerk`: Clerk's signed (Svix) `user.created` and `user.deleted`
//! events, which record who is a user now and who no longer is, and its organization events:
//! `organizationInvitation.accepted` records the invitation accepted and its person a user
//! (with the id membership creation needs); `organizationMembership.deleted` and `.updated`
//! ask for a cycle, which makes a deleted membership of someone on the roster again and sets a
//! changed role back (level-triggered: the event only says when to look).

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
use crate::store::{ledger, membership_ledger, users, webhooks};
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
    if ORGANIZATION_EVENTS.contains(&kind) {
        return organization_event(&state, &message_id, kind, &event).await;
    }
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

/// The organization events the webhook takes.
const ORGANIZATION_EVENTS: [&str; 3] = [
    "organizationInvitation.accepted",
    "organizationMembership.deleted",
    "organizationMembership.updated",
];

/// An organization event: an accepted invitation is recorded at once; a membership deleted
/// or changed in Clerk asks for a cycle.
async fn organization_event(
    state: &AppState,
    message_id: &str,
    kind: &str,
    event: &Value,
) -> Result<Response, ApiError> {
    let accepted = match kind {
        "organizationInvitation.accepted" => {
            Some(accepted_invitation(event).map_err(ApiError::BadRequest)?)
        }
        _ => None,
    };
    let target = state.config.target.as_str();
    let mut tx = state.pool.begin().await?;
    if !webhooks::record_delivery(&mut *tx, "clerk", message_id).await? {
        return Ok((StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response());
    }
    if let Some(accepted) = &accepted {
        let known = users::KnownUser {
            email: accepted.email.clone(),
            clerk_user_id: Some(accepted.user_id.to_owned()),
        };
        users::record_users(&mut *tx, target, &[known], kind).await?;
        membership_ledger::mark_accepted(
            &mut *tx,
            target,
            accepted.invitation_id,
            Some(accepted.user_id),
        )
        .await?;
    }
    tx.commit().await?;
    match &accepted {
        Some(accepted) => tracing::info!(
            email = state.config.reporter.email(accepted.email.as_str()),
            invitation_id = accepted.invitation_id,
            "Clerk says this organization invitation was accepted"
        ),
        None => {
            tracing::info!(kind, "a membership changed in Clerk; a cycle looks at it");
            state.triggers.request("clerk_webhook");
        }
    }
    Ok((
        StatusCode::OK,
        Json(json!({"status": "applied", "type": kind})),
    )
        .into_response())
}

/// What an `organizationInvitation.accepted` event says.
struct Accepted<'a> {
    invitation_id: &'a str,
    user_id: &'a str,
    email: Email,
}

/// Reads an `organizationInvitation.accepted` event (`data.id`, `data.user_id`,
/// `data.email_address`), or says what is wrong with it.
fn accepted_invitation(event: &Value) -> Result<Accepted<'_>, String> {
    let kind = "organizationInvitation.accepted";
    let invitation_id = clerk_id(event, "/data/id", kind)?;
    let user_id = clerk_id(event, "/data/user_id", kind)?;
    let address = event
        .pointer("/data/email_address")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a {kind} event needs data.email_address, a string"))?;
    let email = Email::parse(address)
        .map_err(|e| format!("data.email_address of a {kind} event is not an address: {e}"))?;
    Ok(Accepted {
        invitation_id,
        user_id,
        email,
    })
}

/// The longest Clerk user id taken; Clerk's are `user_` and 27 characters.
const MAX_USER_ID_LEN: usize = 128;

/// The Clerk user id a `user.*` event is about (`data.id`), or why it cannot be one. Clerk's
/// ids are short printable ASCII; anything else could not match a user recorded here, and a
/// NUL could not even be looked up.
fn clerk_user_id<'a>(event: &'a Value, kind: &str) -> Result<&'a str, String> {
    clerk_id(event, "/data/id", kind)
}

/// The Clerk id at `pointer` (`/data/id`), or why it cannot be one.
fn clerk_id<'a>(event: &'a Value, pointer: &str, kind: &str) -> Result<&'a str, String> {
    let field = pointer.trim_start_matches('/').replace('/', ".");
    let id = event
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("a {kind} event needs {field}, a non-empty string"))?;
    if id.contains('\0') {
        return Err(format!(
            "{field} contains a NUL character (U+0000); it is not a Clerk id"
        ));
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(format!(
            "{field} is {} bytes long; a Clerk id has at most {MAX_USER_ID_LEN}",
            id.len()
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field} holds characters other than printable ASCII; it is not a Clerk id"
        ));
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
