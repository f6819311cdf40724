//! The error layer: the one error answer handlers return ([`ApiError`]), and what both
//! listeners do with every answer (an unknown path, a handler that panicked, errors in JSON).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::service::state::MAX_BODY;
use crate::telemetry::Chain;

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

/// 404 for an endpoint that is off because its key is not set.
pub(super) fn not_configured(what: &str, key: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{what} is not configured on this service ({key} is not set)"
    ))
}

/// What both listeners do with every answer: an unknown path is a 404, a handler that
/// panicked a 500 on a connection that stays open, and every error comes in JSON.
pub(super) fn answered_in_json<S>(routes: Router<S>) -> Router<S>
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

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use serde_json::Value;

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
