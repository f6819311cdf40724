//! The operator API's bearer token, checked before anything else is read.

use axum::http::{header, HeaderMap};
use secrecy::ExposeSecret;

use super::error::{not_configured, ApiError};
use crate::service::state::AppState;

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
