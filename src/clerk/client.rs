//! The HTTP client for Clerk's four invitation operations.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// What kind of Clerk instance a secret key belongs to, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `sk_test_`: a development instance, 100 requests per 10 s.
    Test,
    /// `sk_live_`: a production instance, 1000 requests per 10 s.
    Live,
}

/// A request rate: at most `requests` in any `per` interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    pub requests: u32,
    pub per: Duration,
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
