//! The delivery of outbound events: a task of its own in `run` (a cycle never waits for
//! it), which claims due deliveries from the outbox, signs each per Standard Webhooks and
//! POSTs it, at most `events.concurrency` at once, each within `events.timeout_seconds`,
//! and records the outcome: delivered, retried with backoff, or a dead letter after
//! `events.max_attempts` attempts or `events.max_age_hours`.
//!
//! At least once: a delivery is marked delivered only after a 2xx answer, so a process that
//! dies between the answer and the mark sends it again (with the same `webhook-id`). In
//! order per person and endpoint: the outbox hands out a person's next event only once the
//! previous one is delivered or dead.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{EventsSettings, Settings};
use crate::store::outbox::{self, AfterFailure, Claimed};
use crate::telemetry::Chain;

/// One receiver, its secret read.
struct Endpoint {
    url: String,
    secret: SecretString,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub delivered: usize,
    pub failed: usize,
    pub dead: usize,
}

/// Sends the outbox's events to the configured endpoints.
pub struct Deliverer {
    pool: PgPool,
    target: String,
    endpoints: Vec<Endpoint>,
    urls: Vec<String>,
    http: reqwest::Client,
    settings: EventsSettings,
}

impl Deliverer {
    /// Reads each endpoint's secret (from the configuration or its file) and registers the
    /// endpoints and the roster relations with the database, so that the ledger's triggers
    /// give each event a delivery per endpoint.
    pub async fn start(pool: PgPool, settings: &Settings) -> anyhow::Result<Deliverer> {
        let mut endpoints = Vec::with_capacity(settings.events.endpoints.len());
        for endpoint in &settings.events.endpoints {
            endpoints.push(Endpoint {
                url: endpoint.url.to_string(),
                secret: endpoint.secret()?,
            });
        }
        let urls: Vec<String> = endpoints.iter().map(|e| e.url.clone()).collect();
        let target = settings.sync.target.clone();
        outbox::register(
            &pool,
            &target,
            &urls,
            &settings.source.relation,
            &settings.source.memberships_relation,
        )
        .await
        .context("the event endpoints could not be registered")?;
        let http = reqwest::Client::builder()
            .timeout(settings.events.timeout())
            .user_agent(concat!("invite-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("the HTTP client for events could not be built")?;
        Ok(Deliverer {
            pool,
            target,
            endpoints,
            urls,
            http,
            settings: settings.events.clone(),
        })
    }

    /// Whether any endpoint is configured.
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Claims what is due and delivers it, at most `events.concurrency` at once.
    pub async fn pass(&self) -> Result<Pass, sqlx::Error> {
        let concurrency = usize::try_from(self.settings.concurrency.max(1)).unwrap_or(1);
        let lease = self.settings.timeout() + Duration::from_secs(30);
        let limit = i64::try_from(concurrency.saturating_mul(4)).unwrap_or(i64::MAX);
        let claimed = outbox::claim(&self.pool, &self.target, &self.urls, limit, lease).await?;
        let mut pass = Pass {
            claimed: claimed.len(),
            ..Pass::default()
        };
        let outcomes: Vec<Result<Outcome, sqlx::Error>> =
            futures_util::stream::iter(claimed.into_iter().map(|c| self.deliver(c)))
                .buffer_unordered(concurrency)
                .collect()
                .await;
        for outcome in outcomes {
            match outcome? {
                Outcome::Delivered => pass.delivered += 1,
                Outcome::Failed => pass.failed += 1,
                Outcome::Dead => pass.dead += 1,
            }
        }
        self.refresh_gauge().await;
        Ok(pass)
    }

    /// Passes until every delivery to the configured endpoints is delivered or dead, or
    /// `deadline` passes (a failed one is tried again after its backoff meanwhile): for
    /// commands that deliver without the service (`events replay`). Returns the passes'
    /// sums.
    pub async fn drain(&self, deadline: Duration) -> Result<Pass, sqlx::Error> {
        let until = tokio::time::Instant::now() + deadline;
        let mut total = Pass::default();
        while tokio::time::Instant::now() < until {
            let pass = self.pass().await?;
            total.claimed += pass.claimed;
            total.delivered += pass.delivered;
            total.failed += pass.failed;
            total.dead += pass.dead;
            if pass.claimed == 0 {
                if outbox::state(&self.pool, &self.target).await?.pending == 0 {
                    break;
                }
                tokio::time::sleep(self.settings.poll()).await;
            }
        }
        Ok(total)
    }

    async fn refresh_gauge(&self) {
        if let Ok(dead) = outbox::dead_letters(&self.pool, &self.target).await {
            crate::metrics::metrics().event_dead_letters.set(dead);
        }
    }

    async fn deliver(&self, claimed: Claimed) -> Result<Outcome, sqlx::Error> {
        let claimed = &claimed;
        let Some(endpoint) = self.endpoints.iter().find(|e| e.url == claimed.endpoint) else {
            // Claimed only for configured endpoints; nothing to send with otherwise.
            return Ok(Outcome::Failed);
        };
        let (status, error) = match self.send(endpoint, claimed).await {
            Ok(status) if (200..300).contains(&status) => {
                outbox::mark_delivered(&self.pool, claimed.outbox_id, &claimed.endpoint, status)
                    .await?;
                crate::metrics::metrics().event_delivery("delivered");
                tracing::debug!(
                    event_id = %claimed.event_id,
                    event_type = %claimed.event_type,
                    endpoint = %claimed.endpoint,
                    status,
                    "event delivered"
                );
                return Ok(Outcome::Delivered);
            }
            Ok(status) => (Some(status), format!("the endpoint answered {status}")),
            Err(error) => (None, error),
        };
        let attempts = u32::try_from(claimed.attempts.max(1)).unwrap_or(1);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        let wait = self.settings.backoff(attempts).mul_f64(jitter);
        let after = outbox::mark_failed(
            &self.pool,
            claimed.outbox_id,
            &claimed.endpoint,
            &outbox::Failure {
                status,
                error: &error,
                wait,
                max_attempts: self.settings.max_attempts,
                max_age: self.settings.max_age(),
            },
        )
        .await?;
        let outcome = match after {
            AfterFailure::Retry => Outcome::Failed,
            AfterFailure::Dead => Outcome::Dead,
        };
        let label = if outcome == Outcome::Dead {
            "dead"
        } else {
            "failed"
        };
        crate::metrics::metrics().event_delivery(label);
        tracing::warn!(
            event_id = %claimed.event_id,
            event_type = %claimed.event_type,
            endpoint = %claimed.endpoint,
            attempts = claimed.attempts,
            error.message = %error,
            dead_letter = outcome == Outcome::Dead,
            retry_in_seconds = wait.as_secs_f64(),
            "event delivery failed"
        );
        Ok(outcome)
    }

    /// POSTs one event, signed; the answer's status, or why there was none.
    async fn send(&self, endpoint: &Endpoint, claimed: &Claimed) -> Result<u16, String> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = crate::webhook_signature::sign(
            endpoint.secret.expose_secret(),
            &claimed.event_id,
            timestamp,
            claimed.body.as_bytes(),
        )
        .map_err(|_| "the endpoint's secret cannot sign".to_owned())?;
        let answer = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &claimed.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(claimed.body.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!(
                        "no answer within events.timeout_seconds ({} s)",
                        self.settings.timeout_seconds
                    )
                } else {
                    format!("{}", Chain(&e))
                }
            })?;
        Ok(answer.status().as_u16())
    }

    /// Runs until `shutdown` fires: a pass, again at once while there was work, else after
    /// `events.poll_seconds`. A failed pass (the database away) is logged and tried again.
    pub async fn run(self, shutdown: CancellationToken) {
        if !self.has_endpoints() {
            return;
        }
        loop {
            let busy = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                pass = self.pass() => match pass {
                    Ok(pass) => pass.claimed > 0,
                    Err(error) => {
                        tracing::warn!(
                            error.message = %error,
                            error.cause_chain = %Chain(&error),
                            "event delivery could not read the outbox; trying again"
                        );
                        false
                    }
                },
            };
            if !busy {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.settings.poll()) => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Failed,
    Dead,
}
