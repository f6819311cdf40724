//! Reading what Clerk answered to one request, or why it did not answer.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::super::model::{ClerkErrors, Operation};
use super::error::ClientError;

/// What Clerk answered to one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer<'a> {
    pub(super) status: StatusCode,
    /// The `Clerk-Trace-Id` header's.
    pub(super) trace_id: Option<&'a str>,
    pub(super) retry_after: Option<Duration>,
    pub(super) body: &'a [u8],
}

/// Longest `Retry-After` taken from Clerk; anything longer is read as this: Clerk's longest
/// rate-limit window (an hour) and a minute's margin.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600 + 60);

/// Reads an answer: the value of a success, or the error it says.
pub(super) fn classify<T: DeserializeOwned>(
    operation: Operation,
    answer: Answer<'_>,
) -> Result<T, ClientError> {
    let status = answer.status;
    if status.is_success() {
        return serde_json::from_slice(answer.body).map_err(|e| ClientError::Decode {
            operation,
            status: status.as_u16(),
            message: e.to_string(),
        });
    }
    let errors: Option<ClerkErrors> = serde_json::from_slice(answer.body).ok();
    let trace_id = errors
        .as_ref()
        .and_then(|e| e.clerk_trace_id.clone())
        .or(answer.trace_id.map(str::to_owned));
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ClientError::RateLimited {
            operation,
            retry_after: answer.retry_after,
            sent: true,
            trace_id,
        });
    }
    match errors {
        Some(errors) => Err(ClientError::Clerk {
            operation,
            status: status.as_u16(),
            errors: errors.errors,
            trace_id,
        }),
        None if status.is_server_error() => Err(ClientError::Clerk {
            operation,
            status: status.as_u16(),
            errors: Vec::new(),
            trace_id,
        }),
        None => Err(ClientError::Decode {
            operation,
            status: status.as_u16(),
            message: "the error body is not a ClerkErrors object".to_owned(),
        }),
    }
}

/// The error of a request that got no answer: never sent when the connection was not made,
/// otherwise of unknown outcome. The URL is left out: its query can carry an email address.
pub(super) fn unanswered(
    operation: Operation,
    source: reqwest::Error,
    attempt: u32,
) -> ClientError {
    let source = source.without_url();
    if source.is_connect() || source.is_builder() {
        ClientError::NeverSent {
            operation,
            attempts: attempt,
            source,
        }
    } else {
        ClientError::OutcomeUnknown { operation, source }
    }
}

pub(super) fn header_trace_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("clerk-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`]: a wild value must not overflow a
/// clock.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs())))
}
