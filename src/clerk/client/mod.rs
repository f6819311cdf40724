//! The HTTP client for Clerk's four invitation operations, the user lookup by email and the
//! organization calls a membership roster needs (organizations.rs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

pub use super::model::Operation;
use super::model::{
    CreateInvitation, Invitation, InvitationPage, InvitationStatus, OrderBy, User, API_VERSION,
};
use crate::telemetry::Chain;

/// The most `email_address` values one `GET /users` call may carry (Clerk's limit).
pub const USERS_PER_LOOKUP: usize = 100;

/// What kind of Clerk instance a secret key belongs to, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `sk_test_`: a development instance, 100 requests per 10 s.
    Test,
    /// `sk_live_`: a production instance, 1000 requests per 10 s.
    Live,
}

/// How never-sent requests and lists are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Everything the client needs. `rate = None` means the default for the key's kind.
#[derive(Clone)]
pub struct ClientOptions {
    pub api_url: Url,
    pub secret_key: SecretString,
    pub timeout: Duration,
    pub rate: Option<RequestRate>,
    pub retry: RetryPolicy,
}

impl KeyKind {
    /// The kind of a secret key, or `None` when it is not a Clerk secret key at all.
    pub fn of(secret_key: &str) -> Option<KeyKind> {
        let kind = if secret_key.starts_with("sk_test_") {
            KeyKind::Test
        } else if secret_key.starts_with("sk_live_") {
            KeyKind::Live
        } else {
            return None;
        };
        let rest = &secret_key[8..];
        let well_formed = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic());
        well_formed.then_some(kind)
    }

    /// Clerk's documented Backend API limit for this kind of instance.
    pub fn default_rate(self) -> RequestRate {
        let requests = match self {
            KeyKind::Test => 100,
            KeyKind::Live => 1000,
        };
        RequestRate {
            requests,
            per: Duration::from_secs(10),
        }
    }
}

mod answer;
mod error;
mod organizations;
mod rate_limiter;
#[cfg(test)]
mod tests;

pub use answer::MAX_RETRY_AFTER;
use answer::{classify, header_trace_id, retry_after, unanswered, Answer};
pub use error::{ClientError, OrganizationRefusal};
pub use organizations::MEMBERSHIP_FILTER_VALUES;
use rate_limiter::RateLimiter;
pub use rate_limiter::RequestRate;

/// Largest page Clerk serves.
pub const MAX_PAGE: u32 = 500;
/// Most items one bulk create may carry.
pub const MAX_BULK: usize = 10;
/// Longest `Retry-After` the client sleeps through itself before giving up on a read.
const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(60);

/// Filters and page of one `GET /invitations` call.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<InvitationStatus>,
    pub query: Option<String>,
    pub order_by: Option<OrderBy>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

/// A client for Clerk's invitation endpoints.
///
/// It pins the API version, keeps to the request rate of the key's kind, retries what is
/// safe to retry, remembers a 429's `Retry-After` per operation, and never retries a create
/// whose outcome is unknown.
#[derive(Clone)]
pub struct ClerkClient {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    retry: RetryPolicy,
    limiter: Arc<RateLimiter>,
    blocked_until: Arc<std::sync::Mutex<HashMap<Operation, Instant>>>,
}

impl std::fmt::Debug for ClerkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkClient")
            .field("base", &self.base.as_str())
            .field("secret_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl ClerkClient {
    /// Builds a client. A missing or malformed secret key is refused here, before any request.
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        let key = options.secret_key.expose_secret();
        if key.trim().is_empty() {
            return Err(ClientError::InvalidKey("it is empty"));
        }
        let kind = KeyKind::of(key).ok_or(ClientError::InvalidKey(
            "it must start with sk_test_ or sk_live_ followed by printable characters",
        ))?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            ClientError::InvalidKey("it contains characters not allowed in a header")
        })?;
        authorization.set_sensitive(true);

        let mut headers = HeaderMap::new();
        headers.insert("Clerk-API-Version", HeaderValue::from_static(API_VERSION));
        let http = reqwest::Client::builder()
            .user_agent(concat!("invite-sync/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(ClientError::HttpClient)?;

        let mut base = options.api_url;
        if base.cannot_be_a_base() {
            return Err(ClientError::InvalidApiUrl);
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(ClerkClient {
            http,
            base,
            authorization,
            retry: options.retry,
            limiter: Arc::new(RateLimiter::new(
                options.rate.unwrap_or_else(|| kind.default_rate()),
            )),
            blocked_until: Arc::default(),
        })
    }

    /// Waits until the request limiter would let a request start now. A create is recorded
    /// against the hourly budget just before it is sent: waiting here first keeps the
    /// recorded time that of the request's arrival at Clerk, not of a wait before it.
    pub async fn pace(&self) {
        self.limiter.wait_for_room().await;
    }

    /// `POST /invitations`.
    pub async fn create_invitation(
        &self,
        request: &CreateInvitation,
    ) -> Result<Invitation, ClientError> {
        self.call(
            Operation::CreateInvitation,
            Method::POST,
            "invitations",
            &[],
            Some(request),
        )
        .await
    }

    /// `POST /invitations/bulk` with 1 to 10 items. All or nothing, as far as Clerk says.
    pub async fn create_bulk_invitations(
        &self,
        requests: &[CreateInvitation],
    ) -> Result<Vec<Invitation>, ClientError> {
        self.call(
            Operation::CreateBulkInvitations,
            Method::POST,
            "invitations/bulk",
            &[],
            Some(requests),
        )
        .await
    }

    /// `POST /invitations/{id}/revoke`.
    pub async fn revoke_invitation(&self, invitation_id: &str) -> Result<Invitation, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ClientError::InvalidApiUrl)?
            .pop_if_empty()
            .extend(["invitations", invitation_id, "revoke"]);
        self.call_url::<Invitation, ()>(Operation::RevokeInvitation, Method::POST, url, None)
            .await
    }

    /// One page of `GET /invitations?paginated=true`.
    pub async fn list_invitations(&self, query: &ListQuery) -> Result<InvitationPage, ClientError> {
        let mut params: Vec<(&str, String)> = vec![("paginated", "true".to_owned())];
        if let Some(status) = query.status {
            params.push(("status", status.as_str().to_owned()));
        }
        if let Some(q) = &query.query {
            params.push(("query", q.clone()));
        }
        if let Some(order_by) = query.order_by {
            params.push(("order_by", order_by.to_string()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(offset) = query.offset {
            params.push(("offset", offset.to_string()));
        }
        self.call::<InvitationPage, ()>(
            Operation::ListInvitations,
            Method::GET,
            "invitations",
            &params,
            None,
        )
        .await
    }

    /// The users owning any of `emails` (`GET /users?email_address=...`), matched
    /// case-insensitively by Clerk; addresses of no user are simply absent from the answer.
    /// One call per [`USERS_PER_LOOKUP`] addresses (callers normally pass at most that many);
    /// no call at all for an empty slice, which Clerk would read as "every user". Each user
    /// appears once. The calls cost the general request limit only, not the create budget.
    pub async fn users_by_email(&self, emails: &[String]) -> Result<Vec<User>, ClientError> {
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for chunk in emails.chunks(USERS_PER_LOOKUP) {
            let mut params: Vec<(&str, String)> = chunk
                .iter()
                .map(|email| ("email_address", email.clone()))
                .collect();
            // A user may own several of the addresses, so there are never more users than this.
            params.push(("limit", chunk.len().to_string()));
            let found: Vec<User> = self
                .call::<Vec<User>, ()>(Operation::ListUsers, Method::GET, "users", &params, None)
                .await?;
            for user in found {
                if seen.insert(user.id.clone()) {
                    users.push(user);
                }
            }
        }
        Ok(users)
    }

    /// Every invitation with this status (all non-revoked ones for `None`), across as many
    /// pages of 500 as it takes, oldest first. Each id appears once.
    pub async fn list_all(
        &self,
        status: Option<InvitationStatus>,
    ) -> Result<Vec<Invitation>, ClientError> {
        self.every_page(status, None).await
    }

    /// The invitations whose email address equals `email`, case-insensitively, of any status
    /// but revoked ones only when `status` asks for them.
    pub async fn find_by_email(
        &self,
        email: &str,
        status: Option<InvitationStatus>,
    ) -> Result<Vec<Invitation>, ClientError> {
        let mut found = self.every_page(status, Some(email.to_owned())).await?;
        // `query` matches substrings: keep the address itself only.
        found.retain(|i| i.email_address.eq_ignore_ascii_case(email));
        Ok(found)
    }

    async fn every_page(
        &self,
        status: Option<InvitationStatus>,
        query: Option<String>,
    ) -> Result<Vec<Invitation>, ClientError> {
        // Offset paging skips an invitation when one before it leaves the list between two
        // pages (a revocation). A changed total_count shows that happened: list again.
        const ATTEMPTS: u32 = 5;
        let mut attempt = 0;
        'listing: loop {
            attempt += 1;
            let mut seen = HashSet::new();
            let mut all = Vec::new();
            let mut offset: u64 = 0;
            let mut total: Option<u64> = None;
            loop {
                let page = self
                    .list_invitations(&ListQuery {
                        status,
                        query: query.clone(),
                        order_by: OrderBy::parse("+created_at"),
                        limit: Some(MAX_PAGE),
                        offset: Some(offset),
                    })
                    .await?;
                if total.is_some_and(|t| t != page.total_count) && attempt < ATTEMPTS {
                    tracing::debug!(
                        attempt,
                        "the invitation list changed while it was paged; listing again"
                    );
                    continue 'listing;
                }
                total = Some(page.total_count);
                let received = page.data.len() as u64;
                for invitation in page.data {
                    if seen.insert(invitation.id.clone()) {
                        all.push(invitation);
                    }
                }
                offset += received;
                if received < u64::from(MAX_PAGE) || offset >= page.total_count {
                    return Ok(all);
                }
            }
        }
    }

    async fn call<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        operation: Operation,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|_| ClientError::InvalidApiUrl)?;
        if !params.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.call_url(operation, method, url, body).await
    }

    async fn call_url<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.check_not_blocked(operation)?;
            self.limiter.acquire().await;
            let span = tracing::info_span!(
                "clerk_call",
                operation = operation.as_str(),
                attempt,
                status = tracing::field::Empty,
                clerk_trace_id = tracing::field::Empty,
            );
            let outcome = self
                .send_once::<T, B>(operation, method.clone(), url.clone(), body, attempt)
                .instrument(span.clone())
                .await;
            let retry_in = match &outcome {
                Ok(_) => None,
                Err(error) => self.retry_delay(operation, error, attempt),
            };
            match (outcome, retry_in) {
                (Err(error), Some(delay)) => {
                    tracing::warn!(
                        parent: &span,
                        operation = operation.as_str(),
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        error.message = %error,
                        error.cause_chain = %Chain(&error),
                        "Clerk call failed; retrying",
                    );
                    tokio::time::sleep(delay).await;
                }
                (outcome, _) => return outcome,
            }
        }
    }

    async fn send_once<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: Option<&B>,
        attempt: u32,
    ) -> Result<T, ClientError> {
        let span = tracing::Span::current();
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let metrics = crate::metrics::metrics();
        let response = match request.send().await {
            Ok(response) => response,
            Err(source) => {
                let kind = if source.is_timeout() {
                    "timeout"
                } else {
                    "transport_error"
                };
                metrics.clerk_call(operation.as_str(), kind, started.elapsed());
                return Err(unanswered(operation, source, attempt));
            }
        };
        let status = response.status();
        span.record("status", status.as_u16());
        metrics.clerk_call(operation.as_str(), status.as_str(), started.elapsed());
        let trace_id = header_trace_id(response.headers());
        let retry_after = retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|source| ClientError::OutcomeUnknown {
                operation,
                source: source.without_url(),
            })?;
        let answer = Answer {
            status,
            trace_id: trace_id.as_deref(),
            retry_after,
            body: &body,
        };
        let outcome = classify(operation, answer);
        let trace_id = match &outcome {
            Err(error) => error.trace_id().or(answer.trace_id),
            Ok(_) => answer.trace_id,
        };
        if let Some(id) = trace_id {
            span.record("clerk_trace_id", id);
        }
        if let Err(ClientError::RateLimited {
            retry_after: Some(wait),
            sent: true,
            ..
        }) = &outcome
        {
            self.block(operation, *wait);
        }
        outcome
    }

    /// How long to wait before trying again, or `None` when the error is final.
    fn retry_delay(
        &self,
        operation: Operation,
        error: &ClientError,
        attempt: u32,
    ) -> Option<Duration> {
        if attempt >= self.retry.max_attempts {
            return None;
        }
        let retryable = match error {
            ClientError::NeverSent { .. } => true,
            ClientError::OutcomeUnknown { .. } => operation.idempotent(),
            ClientError::Clerk { status, .. } => *status >= 500 && operation.idempotent(),
            // The hourly create limits (the instance's and the organizations') can block for
            // up to an hour: the caller records the wait and moves on. Everything else sits
            // out a short block here: a 429 applied nothing, so even a membership create may
            // go again.
            ClientError::RateLimited {
                retry_after: Some(wait),
                sent: true,
                ..
            } => {
                return (!operation.creates() && *wait <= MAX_RETRY_AFTER_WAIT).then_some(*wait);
            }
            _ => false,
        };
        retryable.then(|| self.backoff(attempt))
    }

    /// Exponential backoff with full jitter: a random wait up to `initial * 2^(attempt-1)`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.retry.max_backoff);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis))
    }

    fn block(&self, operation: Operation, wait: Duration) {
        if let Ok(mut blocked) = self.blocked_until.lock() {
            blocked.insert(operation, Instant::now() + wait);
        }
        crate::metrics::metrics().clerk_blocked(
            operation.as_str(),
            chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        );
    }

    /// How long Clerk's last 429 still blocks `operation` in this process, if it does.
    pub fn blocked_for(&self, operation: Operation) -> Option<Duration> {
        let until = self.blocked_until.lock().ok()?.get(&operation).copied()?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    fn check_not_blocked(&self, operation: Operation) -> Result<(), ClientError> {
        let until = match self.blocked_until.lock() {
            Ok(blocked) => blocked.get(&operation).copied(),
            Err(_) => None,
        };
        match until {
            Some(until) if until > Instant::now() => Err(ClientError::RateLimited {
                operation,
                retry_after: Some(until - Instant::now()),
                sent: false,
                trace_id: None,
            }),
            _ => Ok(()),
        }
    }
}
