//! The errors the simulator answers with, each as Clerk words it.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::clerk::model::{codes, ClerkError, ClerkErrors};

/// The code of an error answered by an injected 5xx fault.
pub const INTERNAL_CLERK_ERROR: &str = "internal_clerk_error";
/// The code of an error answered by an injected non-429, non-5xx fault.
pub const FAULT_INJECTED: &str = "fault_injected";

/// One error answer: its status, its single ClerkError and an optional `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub long_message: String,
    pub meta: Option<Map<String, Value>>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        long_message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            long_message: long_message.into(),
            meta: None,
            retry_after: None,
        }
    }

    fn with_meta(mut self, meta: Value) -> Self {
        if let Value::Object(meta) = meta {
            self.meta = Some(meta);
        }
        self
    }

    pub fn body(&self, trace_id: &str) -> ClerkErrors {
        ClerkErrors {
            errors: vec![ClerkError {
                message: self.message.clone(),
                long_message: self.long_message.clone(),
                code: self.code.to_owned(),
                meta: self.meta.clone(),
            }],
            meta: None,
            clerk_trace_id: Some(trace_id.to_owned()),
        }
    }

    pub fn unauthenticated() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::AUTHENTICATION_INVALID,
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
        )
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::TOO_MANY_REQUESTS,
            "Too many requests, retry later",
            "Too many requests, retry later",
        );
        error.retry_after = Some(retry_after);
        error
    }

    pub fn request_body_invalid() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::REQUEST_BODY_INVALID,
            "Request body invalid",
            "The request body is invalid. Please consult the API documentation for more information.",
        )
    }

    pub fn param_unknown(name: &str) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_PARAM_UNKNOWN,
            "is unknown",
            format!("{name} is not a valid parameter for this request."),
        )
        .with_meta(json!({ "param_name": name }))
    }

    pub fn param_missing(name: &str) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_PARAM_MISSING,
            "is missing",
            format!("{name} must be included."),
        )
        .with_meta(json!({ "param_name": name }))
    }

    pub fn value_invalid(name: &str, long_message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_PARAM_VALUE_INVALID,
            "is invalid",
            long_message,
        )
        .with_meta(json!({ "param_name": name }))
    }

    pub fn wrong_type(name: &str, received: &Value, expected: &str) -> Self {
        ApiError::value_invalid(
            name,
            format!(
                "{name} is invalid. Received {}, must be of type {expected}.",
                json_type(received)
            ),
        )
    }

    pub fn bulk_empty() -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_PARAM_VALUE_INVALID,
            "is invalid",
            "The request body must be an array of 1 to 10 invitations.",
        )
    }

    pub fn bulk_size_exceeded(max: usize) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BULK_SIZE_EXCEEDED,
            "Bulk size exceeded",
            format!("Parameters exceed the maximum allowed bulk processing size of {max}."),
        )
    }

    pub fn email_format_invalid() -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_PARAM_FORMAT_INVALID,
            "is invalid",
            "email_address must be a valid email address.",
        )
        .with_meta(json!({ "param_name": "email_address" }))
    }

    pub fn identifier_exists(emails: &[String]) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_IDENTIFIER_EXISTS,
            "That email address is taken. Please try another.",
            format!(
                "There are already users with the following email addresses: {}",
                emails.join(", ")
            ),
        )
        .with_meta(json!({ "param_name": "email_address", "email_addresses": emails }))
    }

    pub fn duplicate_invitations(emails: &[String]) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::DUPLICATE_RECORD,
            "duplicate invitation",
            format!(
                "There are already pending invitations for the following email addresses: {}",
                emails.join(", ")
            ),
        )
        .with_meta(json!({ "email_addresses": emails }))
    }

    pub fn invitation_not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            format!("No invitation was found with id {id}."),
        )
    }

    pub fn user_not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            format!("No user was found with id {id}."),
        )
    }

    /// An array query parameter with more values than the spec allows.
    pub fn too_many_values(name: &str, max: usize) -> Self {
        ApiError::value_invalid(name, format!("{name} accepts at most {max} values."))
    }

    /// A control call named an address that is not an email address.
    pub fn control_email_invalid(email: &str) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_PARAM_FORMAT_INVALID,
            "is invalid",
            format!("{email:?} is not a valid email address."),
        )
        .with_meta(json!({ "param_name": "email_addresses" }))
    }

    pub fn route_not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            "The requested resource was not found.",
        )
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
            "The HTTP method is not allowed for this resource.",
        )
    }

    pub fn already_revoked() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVITATION_ALREADY_REVOKED,
            "Invitation is already revoked.",
            "Invitation is already revoked.",
        )
    }

    pub fn already_accepted() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVITATION_ALREADY_ACCEPTED,
            "Invitation is already accepted, try signing in instead.",
            "Invitation is already accepted, try signing in instead.",
        )
    }

    /// An invitation exists but is not pending (control API only).
    pub fn not_pending(id: &str, status: &str) -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            "invitation_not_pending",
            "Invitation is not pending.",
            format!("Invitation {id} is {status}, not pending."),
        )
    }

    /// An organization named by an id or slug that does not exist.
    pub fn organization_not_found(id_or_slug: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            format!("No organization was found with id or slug {id_or_slug}."),
        )
    }

    /// A role key that is not one of the instance's organization roles.
    pub fn role_not_found(role: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            format!("No organization role was found with key {role}."),
        )
        .with_meta(json!({ "param_name": "role" }))
    }

    pub fn organization_invitation_not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            format!("No organization invitation was found with id {id}."),
        )
    }

    /// The user is not a member of the organization.
    pub fn membership_not_found(user_id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::RESOURCE_NOT_FOUND,
            "not found",
            format!("No organization membership was found for user {user_id}."),
        )
    }

    pub fn slug_taken() -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::FORM_IDENTIFIER_EXISTS,
            "That slug is taken. Please try another.",
            "That slug is taken. Please try another.",
        )
        .with_meta(json!({ "param_name": "slug" }))
    }

    pub fn organization_duplicate_invitations(emails: &[String]) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::DUPLICATE_RECORD,
            "duplicate invitation",
            format!(
                "There are already pending organization invitations for the following email addresses: {}",
                emails.join(", ")
            ),
        )
        .with_meta(json!({ "email_addresses": emails }))
    }

    pub fn already_a_member(emails: &[String]) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::ALREADY_A_MEMBER_IN_ORGANIZATION,
            "Already a member",
            format!(
                "The following users are already members of this organization: {}",
                emails.join(", ")
            ),
        )
        .with_meta(json!({ "email_addresses": emails }))
    }

    pub fn membership_quota_exceeded(max: u64) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            codes::ORGANIZATION_MEMBERSHIP_QUOTA_EXCEEDED,
            "Membership quota exceeded",
            format!(
                "The organization has reached its limit of {max} memberships, pending invitations included."
            ),
        )
    }

    pub fn managed_by_scim() -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            codes::ORGANIZATION_MEMBERSHIP_MANAGED_BY_SCIM,
            "Membership managed by Directory Sync",
            "This organization membership is managed by Directory Sync and cannot be changed through the API.",
        )
    }

    pub fn minimum_permissions_needed() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::ORGANIZATION_MINIMUM_PERMISSIONS_NEEDED,
            "Minimum permissions needed",
            "There has to be at least one organization member with the administrator role.",
        )
    }

    /// Revoking an organization invitation that is no longer pending.
    pub fn organization_invitation_not_pending(id: &str, status: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::ORGANIZATION_INVITATION_NOT_PENDING,
            "Invitation is not pending",
            format!("Organization invitation {id} is {status}; only pending invitations can be revoked."),
        )
    }

    /// An inviter (or revoker) that is not an administrator of the organization.
    pub fn not_an_admin(user_id: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "not_an_admin_in_organization",
            "Not an administrator",
            format!("User {user_id} is not an administrator of this organization."),
        )
    }

    /// A control call would break a rule the control API keeps (409).
    pub fn control_conflict(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(StatusCode::CONFLICT, "conflict", message.clone(), message)
    }

    /// The answer of an injected `Status` fault.
    pub fn fault(status: u16, retry_after: Option<u64>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut error = if status == StatusCode::TOO_MANY_REQUESTS {
            ApiError::too_many_requests(0)
        } else if status.is_server_error() {
            ApiError::new(
                status,
                INTERNAL_CLERK_ERROR,
                "Oops, an unexpected error occurred",
                "There was an internal error on our servers. We've been notified and are working on fixing it.",
            )
        } else {
            ApiError::new(
                status,
                FAULT_INJECTED,
                "Injected fault",
                format!(
                    "The simulator was told to answer this call with status {}.",
                    status.as_u16()
                ),
            )
        };
        error.retry_after = retry_after;
        error
    }
}

/// The JSON type name of a value, for "Received X, must be of type Y" messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
