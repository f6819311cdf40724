//! What every SCIM handler shares: the token check, the request's parts, SCIM's answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::scim::schema::{self};
use crate::scim::ScimError;
use crate::service::state::{AppState, Scim, MAX_BODY};
use crate::telemetry::Chain;

pub(super) const CONTENT_TYPE: &str = "application/scim+json";

// ServiceProviderConfig announces the body limit the HTTP layer enforces.
const _: () = assert!(schema::MAX_PAYLOAD_BYTES == MAX_BODY);

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_client_error() {
            // The detail may quote what the client sent (addresses included): not logged.
            tracing::info!(
                status = self.status,
                scim_type = self.scim_type.unwrap_or("-"),
                "SCIM request refused"
            );
        }
        let mut response = scim_json(status, self.body());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"invite-sync SCIM\""),
            );
            // Refused before its body was read: the connection closes, so that nothing
            // waits for (or reads) the rest of it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub(super) fn scim_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn internal(error: impl std::error::Error + 'static) -> ScimError {
    tracing::error!(error.message = %error, error.cause_chain = %Chain(&error), "SCIM request failed");
    ScimError::internal()
}

/// A request that presented a configured token. Every handler takes it first, so a request
/// without one is refused from its headers alone: its body is never read, and it holds a
/// SCIM slot only for as long as the refusal takes.
pub(super) struct Authorized(pub(super) Arc<Scim>);

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ScimError> {
        authorize(state, &parts.headers)?;
        state
            .scim
            .clone()
            .map(Authorized)
            .ok_or_else(|| ScimError::not_found("not found"))
    }
}

/// The `{id}` of a path; one that is not text (bad percent-encoding) names no user.
pub(super) fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ScimError> {
    id.map(|Path(id)| id)
        .map_err(|_| ScimError::not_found("no such resource: the id is not valid text"))
}

/// The request body, read only once the request is authorized.
pub(super) fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ScimError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ScimError::payload_too_large(MAX_BODY)
        } else {
            ScimError::invalid_syntax(format!("the body could not be read: {}", status.as_u16()))
        }
    })
}

/// Runs the CPU work of a request (parsing a body, applying a PATCH, rendering and filtering
/// users) on the blocking pool, never on a runtime worker that other requests and the probes
/// share. A panic there is an internal error whose message (it may quote input) is not logged.
pub(super) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ScimError> + Send + 'static,
) -> Result<T, ScimError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(panicked = error.is_panic(), "SCIM request's work failed");
            Err(ScimError::internal())
        }
    }
}

/// 404 when the endpoint is off, 401 unless a configured token is presented.
fn authorize<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Scim, ScimError> {
    let Some(scim) = state.scim.as_deref() else {
        return Err(ScimError::not_found("not found"));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    use subtle::ConstantTimeEq;
    // Every token is compared, so the time taken does not tell which one nearly matched.
    let matched = scim
        .tokens
        .iter()
        .fold(subtle::Choice::from(0), |any, token| {
            any | token.expose_secret().as_bytes().ct_eq(presented.as_bytes())
        });
    if bool::from(matched) {
        Ok(scim)
    } else {
        Err(ScimError::unauthorized())
    }
}

/// The endpoint's own URL as the client reached it, for `meta.location`.
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/scim/v2")
}

pub(super) async fn not_allowed(State(state): State<AppState>, headers: HeaderMap) -> ScimError {
    match authorize(&state, &headers) {
        Ok(_) => ScimError::method_not_allowed(),
        Err(e) => e,
    }
}

pub(super) async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> ScimError {
    match authorize(&state, &headers) {
        Ok(_) => ScimError::not_found("no such SCIM endpoint"),
        Err(e) => e,
    }
}

pub(super) fn json_body(body: &[u8]) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}
