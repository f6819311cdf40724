//! SCIM error answers (RFC 7644 §3.12): an HTTP status, a `scimType` where the RFC names one,
//! and a detail that says what is wrong.

use serde_json::{json, Value};

use super::schema::ERROR;

/// Most characters of client input an error detail quotes.
const QUOTED_CHARS: usize = 64;

/// Client input as an error detail quotes it: escaped (no control character, no line break
/// survives) and cut to [`QUOTED_CHARS`] characters, on a character boundary.
pub fn quoted(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(QUOTED_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}: {detail}", scim_type.unwrap_or("-"))]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidFilter"), detail)
    }

    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), detail)
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidPath"), detail)
    }

    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::new(400, Some("noTarget"), detail)
    }

    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(400, Some("mutability"), detail)
    }

    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(400, Some("tooMany"), detail)
    }

    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some("uniqueness"), detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, None, detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, None, "a valid bearer token is required")
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(405, None, "this endpoint does not accept that method")
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            None,
            "the body must be application/scim+json or application/json",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            None,
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn internal() -> Self {
        Self::new(500, None, "internal error")
    }

    /// The body of the answer.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(kind), Value::Object(fields)) = (self.scim_type, &mut body) {
            fields.insert("scimType".to_owned(), Value::String(kind.to_owned()));
        }
        body
    }
}
