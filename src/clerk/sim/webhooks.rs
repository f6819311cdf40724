//! Clerk's webhooks, as Svix delivers them: `user.created`, `user.deleted` and the organization
//! invitation and membership events posted
//! to one endpoint, signed with its `whsec_` secret, retried a few times on failure.
//!
//! Events are raised while the state is locked and queued on a channel; one task delivers
//! them in order, so an answer never waits for a delivery.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use url::Url;

use crate::telemetry::Chain;

use super::clock::now_ms;
use super::Sim;

/// Waits before each retry of a failed delivery; after the last, the event is abandoned.
/// (Svix waits 5 s, 5 min, 30 min, ...; a rehearsal cannot wait that long.)
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// How long one delivery attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the simulator delivers its webhooks, and the secret it signs them with.
#[derive(Clone)]
pub struct WebhookTarget {
    url: Url,
    secret: SecretString,
}

/// A webhook target that cannot be used. Never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookTargetError {
    #[error("the webhook URL must be an http or https URL")]
    Url,
    #[error("the webhook secret must be `whsec_` followed by non-empty base64")]
    Secret,
}

impl WebhookTarget {
    /// `url` receives the deliveries; `secret` is a Svix endpoint secret, `whsec_<base64>`.
    pub fn new(url: &str, secret: &str) -> Result<Self, WebhookTargetError> {
        let url = Url::parse(url).map_err(|_| WebhookTargetError::Url)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(WebhookTargetError::Url);
        }
        if !secret.starts_with("whsec_")
            || crate::webhook_signature::sign(secret, "msg", 0, b"").is_err()
        {
            return Err(WebhookTargetError::Secret);
        }
        Ok(WebhookTarget {
            url,
            secret: SecretString::from(secret.to_owned()),
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url.as_str())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One event waiting for delivery.
#[derive(Debug, Clone)]
pub struct Event {
    /// The Svix message id, the same on every attempt.
    pub id: String,
    pub kind: &'static str,
    pub data: Value,
    /// When it happened, Unix milliseconds.
    pub timestamp: i64,
}

impl Event {
    fn new(kind: &'static str, data: Value) -> Self {
        Event {
            id: format!("msg_{}", random_id()),
            kind,
            data,
            timestamp: now_ms(),
        }
    }

    /// `data` is the new user, as Clerk's `User` schema.
    pub fn user_created(user: Value) -> Self {
        Event::new("user.created", user)
    }

    /// `data` is `{"deleted": true, "id": ..., "object": "user"}`.
    pub fn user_deleted(deleted: Value) -> Self {
        Event::new("user.deleted", deleted)
    }

    /// An organization event (`organizationInvitation.*`, `organizationMembership.*`); `data`
    /// is the invitation or membership as the Backend API shows it.
    pub fn organization(kind: &'static str, data: Value) -> Self {
        Event::new(kind, data)
    }

    /// The body Clerk posts: its webhook envelope around `data`.
    fn body(&self, instance_id: &str) -> Vec<u8> {
        let envelope = json!({
            "data": self.data,
            "event_attributes": {
                "http_request": {"client_ip": "127.0.0.1", "user_agent": "invite-sync clerk-sim"}
            },
            "instance_id": instance_id,
            "object": "event",
            "timestamp": self.timestamp,
            "type": self.kind,
        });
        // A `Value` always serialises.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

fn random_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(27)
        .map(char::from)
        .collect()
}

/// A new Clerk-like instance id, `ins_...`.
pub fn new_instance_id() -> String {
    format!("ins_{}", random_id())
}

/// What happened to webhook events so far.
///
/// JSON: `{"raised": 3, "delivered": {"user.created": 2, "user.deleted": 1},
/// "failed_attempts": 1, "abandoned": 0}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// Events queued for delivery.
    #[serde(default)]
    pub raised: u64,
    /// Events delivered (answered 2xx), per event type.
    #[serde(default)]
    pub delivered: std::collections::BTreeMap<String, u64>,
    /// Attempts that failed (no answer, or not 2xx); each is retried until the last.
    #[serde(default)]
    pub failed_attempts: u64,
    /// Events given up on after the last attempt failed.
    #[serde(default)]
    pub abandoned: u64,
}

impl WebhookStats {
    /// Events delivered, of every type.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.values().sum()
    }

    /// Events of `kind` delivered.
    pub fn delivered(&self, kind: &str) -> u64 {
        self.delivered.get(kind).copied().unwrap_or(0)
    }

    /// Whether every raised event was delivered or abandoned.
    pub fn settled(&self) -> bool {
        self.delivered_total() + self.abandoned >= self.raised
    }

    pub fn is_empty(&self) -> bool {
        *self == WebhookStats::default()
    }
}

/// Deliver queued events one at a time until the simulator shuts down.
pub(super) async fn deliver(
    sim: Arc<Sim>,
    target: WebhookTarget,
    mut queue: mpsc::UnboundedReceiver<Event>,
) {
    let http = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error.message = %error, error.cause_chain = %Chain(&error), "clerk simulator cannot build its webhook client");
            return;
        }
    };
    loop {
        let event = tokio::select! {
            _ = sim.shutdown.cancelled() => return,
            event = queue.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let body = event.body(&sim.instance_id);
        let mut delivered = false;
        for attempt in 0..=RETRY_DELAYS.len() {
            if attempt > 0 {
                let wait = RETRY_DELAYS[attempt - 1];
                tokio::select! {
                    _ = sim.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let sent = tokio::select! {
                _ = sim.shutdown.cancelled() => return,
                sent = send(&http, &target, &event, &body) => sent,
            };
            if sent {
                delivered = true;
                break;
            }
            sim.state().stats_mut().webhooks.failed_attempts += 1;
            sim.webhook_progress.notify_waiters();
        }
        {
            let mut state = sim.state();
            let stats = &mut state.stats_mut().webhooks;
            if delivered {
                *stats.delivered.entry(event.kind.to_owned()).or_insert(0) += 1;
            } else {
                stats.abandoned += 1;
                tracing::warn!(
                    kind = event.kind,
                    message_id = %event.id,
                    "clerk simulator gave up delivering a webhook"
                );
            }
        }
        sim.webhook_progress.notify_waiters();
    }
}

/// One signed attempt; `true` on a 2xx answer.
async fn send(http: &reqwest::Client, target: &WebhookTarget, event: &Event, body: &[u8]) -> bool {
    let timestamp = now_ms() / 1000;
    let signature = match crate::webhook_signature::sign(
        target.secret.expose_secret(),
        &event.id,
        timestamp,
        body,
    ) {
        Ok(signature) => signature,
        // Checked when the target was made.
        Err(_) => return false,
    };
    let answer = http
        .post(target.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", "invite-sync clerk-sim")
        .header("svix-id", &event.id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::debug!(
                status = response.status().as_u16(),
                kind = event.kind,
                "webhook refused"
            );
            false
        }
        Err(error) => {
            tracing::debug!(error = %error.without_url(), kind = event.kind, "webhook not delivered");
            false
        }
    }
}
