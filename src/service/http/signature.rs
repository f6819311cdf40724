//! What both webhooks share: their signature checked ([`crate::webhook_signature`]), from
//! the headers before the body is read and over the body after, and the bounds they run in.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;

use super::error::{not_configured, ApiError};
use crate::service::state::{AppState, MAX_BODY};
use crate::webhook_signature::{Scheme, Verifier, VerifyError};

/// A webhook's routes behind their signature check. The signature headers are looked at
/// first, before the body is read and before a webhook slot is taken: a request without
/// them is refused at once. Both webhooks share the `slots`; the timeout counts the wait for
/// one.
pub(super) fn guarded(
    routes: Router<AppState>,
    state: &AppState,
    scheme: Scheme,
    slots: GlobalConcurrencyLimitLayer,
) -> Router<AppState> {
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(slots)
        .layer(state.limits.timeout())
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), scheme),
            webhook_headers,
        ))
}

/// The delivery's id, once its signature over `body` checks out; 404 when the webhook is off.
pub(super) fn verify(
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
    State((state, scheme)): State<(AppState, Scheme)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Another method than POST is answered by the routes (405), with nothing to read.
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (webhook, verifier) = match scheme {
        Scheme::StandardWebhooks => ("roster", &state.roster),
        Scheme::Svix => ("clerk", &state.clerk),
    };
    let response = match precheck(verifier, scheme, request.headers()) {
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
