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
            | ClientError::Decode { operation, .. } => Some(*operation),
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
