//! Why a call to Clerk did not succeed.

use std::time::Duration;

use super::super::model::{codes, ClerkError, Operation};
/// Why a call to Clerk did not succeed. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The secret key is missing or not a Clerk secret key. No request was made.
    #[error("the Clerk secret key is not usable: {0}")]
    InvalidKey(&'static str),
    /// The Clerk API URL cannot take a request's path (it is not an http or https URL).
    /// No request was made.
    #[error("the Clerk API URL cannot carry a request path: it must be an http or https URL")]
    InvalidApiUrl,
    /// The HTTP client could not be built (its TLS backend did not start). No request was made.
    #[error("the HTTP client for Clerk could not be built: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// Clerk answered with an error status and a `ClerkErrors` body.
    #[error("Clerk answered {status} to {operation}: {}", summary(.errors))]
    Clerk {
        operation: Operation,
        status: u16,
        errors: Vec<ClerkError>,
        trace_id: Option<String>,
    },
    /// Clerk answered 429, or an earlier 429's `Retry-After` has not passed yet (then
    /// nothing was sent: `sent` is false).
    #[error("Clerk rate-limited {operation}; retry after {}", retry_after_text(*.retry_after))]
    RateLimited {
        operation: Operation,
        retry_after: Option<Duration>,
        sent: bool,
        trace_id: Option<String>,
    },
    /// The request never reached Clerk (the connection could not be made), even after retries.
    #[error("{operation} never reached Clerk after {attempts} attempt(s): {source}")]
    NeverSent {
        operation: Operation,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The request may have been applied: it was sent but no complete answer came back.
    #[error("the outcome of {operation} is unknown: {source}")]
    OutcomeUnknown {
        operation: Operation,
        #[source]
        source: reqwest::Error,
    },
    /// Clerk answered, but the body was not what the spec says.
    #[error("Clerk's answer {status} to {operation} could not be read: {message}")]
    Decode {
        operation: Operation,
        status: u16,
        message: String,
    },
    /// The call's arguments break a rule of the endpoint (an empty id, too many items in a
    /// bulk call). No request was made.
    #[error("{operation} was not sent: {reason}")]
    InvalidRequest {
        operation: Operation,
        reason: String,
    },
}

/// What Clerk's refusal of an organization call says, for the caller to branch on without
/// comparing codes itself. Read with [`ClientError::organization_refusal`] (the whole answer)
/// or [`OrganizationRefusal::of`] (one of its errors, e.g. per address of a bulk call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrganizationRefusal {
    /// A pending invitation of the address to the organization exists already: 400
    /// `duplicate_record`, or `organization_invitation_not_unique`.
    PendingInvitationExists,
    /// The user is a member already: 400 `already_a_member_in_organization`.
    AlreadyMember,
    /// The organization is full (pending invitations count against its
    /// `max_allowed_memberships`): 403 `organization_membership_quota_exceeded`. A 403 that
    /// is not an authorization failure.
    OrganizationFull,
    /// The organization, role, user, invitation or membership named does not exist: 404
    /// `resource_not_found`.
    NotFound,
    /// The membership is managed by Directory Sync and refuses other writers: 409
    /// `organization_membership_managed_by_scim`.
    ManagedByDirectorySync,
    /// The change would leave the organization without an admin: 400
    /// `organization_minimum_permissions_needed`.
    LastAdmin,
    /// Only a pending invitation can be revoked: `organization_invitation_not_pending`.
    InvitationNotPending,
}

impl OrganizationRefusal {
    /// The refusal one Clerk error code means, if it is one of these.
    pub fn from_code(code: &str) -> Option<OrganizationRefusal> {
        Some(match code {
            codes::DUPLICATE_RECORD | codes::ORGANIZATION_INVITATION_NOT_UNIQUE => {
                OrganizationRefusal::PendingInvitationExists
            }
            codes::ALREADY_A_MEMBER_IN_ORGANIZATION => OrganizationRefusal::AlreadyMember,
            codes::ORGANIZATION_MEMBERSHIP_QUOTA_EXCEEDED => OrganizationRefusal::OrganizationFull,
            codes::RESOURCE_NOT_FOUND => OrganizationRefusal::NotFound,
            codes::ORGANIZATION_MEMBERSHIP_MANAGED_BY_SCIM => {
                OrganizationRefusal::ManagedByDirectorySync
            }
            codes::ORGANIZATION_MINIMUM_PERMISSIONS_NEEDED => OrganizationRefusal::LastAdmin,
            codes::ORGANIZATION_INVITATION_NOT_PENDING => OrganizationRefusal::InvitationNotPending,
            _ => return None,
        })
    }

    /// The refusal one error of Clerk's answer means.
    pub fn of(error: &ClerkError) -> Option<OrganizationRefusal> {
        OrganizationRefusal::from_code(&error.code)
    }

    /// A short name, for logs, metrics and the reason a row waits.
    pub fn as_str(self) -> &'static str {
        match self {
            OrganizationRefusal::PendingInvitationExists => "pending_invitation_exists",
            OrganizationRefusal::AlreadyMember => "already_member",
            OrganizationRefusal::OrganizationFull => "organization_full",
            OrganizationRefusal::NotFound => "not_found",
            OrganizationRefusal::ManagedByDirectorySync => "managed_by_directory_sync",
            OrganizationRefusal::LastAdmin => "last_admin",
            OrganizationRefusal::InvitationNotPending => "invitation_not_pending",
        }
    }
}

impl std::fmt::Display for OrganizationRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn summary(errors: &[ClerkError]) -> String {
    if errors.is_empty() {
        return "no error detail".to_owned();
    }
    errors
        .iter()
        .map(|e| {
            let text = if e.long_message.is_empty() {
                &e.message
            } else {
                &e.long_message
            };
            format!("{} ({text})", e.code)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("{} s", d.as_secs()),
        None => "an unspecified time".to_owned(),
    }
}

impl ClientError {
    /// The operation that failed.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            ClientError::InvalidKey(_)
            | ClientError::InvalidApiUrl
            | ClientError::HttpClient(_) => None,
            ClientError::Clerk { operation, .. }
            | ClientError::RateLimited { operation, .. }
            | ClientError::NeverSent { operation, .. }
            | ClientError::OutcomeUnknown { operation, .. }
            | ClientError::Decode { operation, .. }
            | ClientError::InvalidRequest { operation, .. } => Some(*operation),
        }
    }

    /// The HTTP status Clerk answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Clerk { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            ClientError::RateLimited { sent: true, .. } => Some(429),
            _ => None,
        }
    }

    /// Every error code in Clerk's answer.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            ClientError::Clerk { errors, .. } => errors.iter().map(|e| e.code.as_str()).collect(),
            ClientError::RateLimited { sent: true, .. } => vec![codes::TOO_MANY_REQUESTS],
            _ => Vec::new(),
        }
    }

    /// Whether Clerk's answer carries this error code.
    pub fn has_code(&self, code: &str) -> bool {
        self.codes().contains(&code)
    }

    /// The Clerk errors of the answer (empty when Clerk did not answer with errors).
    pub fn clerk_errors(&self) -> &[ClerkError] {
        match self {
            ClientError::Clerk { errors, .. } => errors,
            _ => &[],
        }
    }

    /// The trace id Clerk gave the failed request, when it gave one.
    pub fn trace_id(&self) -> Option<&str> {
        match self {
            ClientError::Clerk { trace_id, .. } | ClientError::RateLimited { trace_id, .. } => {
                trace_id.as_deref()
            }
            _ => None,
        }
    }

    /// What Clerk's refusal says when it is one of the organization refusals: the first
    /// error of the answer that is. `None` for any other error (a 403 without
    /// `organization_membership_quota_exceeded` is an authorization failure, not a full
    /// organization).
    pub fn organization_refusal(&self) -> Option<OrganizationRefusal> {
        self.clerk_errors().iter().find_map(OrganizationRefusal::of)
    }

    /// Whether a create that failed this way may still have created invitations, so
    /// that it must be settled by looking the email up before it is sent again.
    pub fn may_have_applied(&self) -> bool {
        match self {
            ClientError::OutcomeUnknown { .. } | ClientError::Decode { .. } => true,
            ClientError::Clerk { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
