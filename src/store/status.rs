//! A target's status, as `status` and `GET /v1/status` show it: the last runs, the backlog,
//! the budget, held revocations, Clerk's blocks, unsettled creates and the lock holder.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::lock::{self, Holder};
use super::runs::{self, RunRecord};
use super::{budget, ledger};
use crate::clerk::budget::{Budget, Limits};

/// How many of the last runs the status lists.
const RUNS: i64 = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub target: String,
    pub lock_holder: Option<Holder>,
    pub budget: Budget,
    /// The backlog the latest finished cycle left, and when it would be done.
    pub backlog: i32,
    pub backlog_eta_seconds: i64,
    pub awaiting_user_check: u64,
    pub held_revocations: i32,
    pub clerk_blocks: Vec<ClerkBlock>,
    pub unsettled: UnsettledCreates,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last runs, newest first.
    pub runs: Vec<RunRecord>,
}

/// An operation Clerk's 429 blocks.
#[derive(Debug, Clone, Serialize)]
pub struct ClerkBlock {
    pub operation: String,
    pub blocked_until: DateTime<Utc>,
    pub seconds_left: i64,
}

/// Creates whose outcome is unknown, and when they are looked up.
#[derive(Debug, Clone, Serialize)]
pub struct UnsettledCreates {
    pub creates: i64,
    pub settles_at: Option<DateTime<Utc>>,
    pub settles_in_seconds: Option<i64>,
}

/// Reads the status of `target`. `settle_after` is how long after it was sent an
/// unconfirmed create is looked up.
pub async fn collect(
    pool: &PgPool,
    target: &str,
    limits: Limits,
    settle_after: Duration,
) -> Result<Status, sqlx::Error> {
    let runs = runs::recent(pool, target, RUNS).await?;
    let budget = budget::current(pool, target, limits).await?;
    let lock_holder = lock::holder(pool, target).await?;
    let now = super::now(pool).await?;
    let clerk_blocks = budget::blocks(pool, target)
        .await?
        .into_iter()
        .map(|block| ClerkBlock {
            seconds_left: (block.blocked_until - now).num_seconds().max(0),
            operation: block.endpoint,
            blocked_until: block.blocked_until,
        })
        .collect();
    let (creates, oldest) = ledger::unsettled(pool, target).await?;
    let settle_after = chrono::Duration::from_std(settle_after).unwrap_or_default();
    let settles_at = oldest.map(|sent| sent + settle_after);
    let latest = runs
        .iter()
        .find(|r| r.outcome != "running" && r.outcome != "skipped");
    let last_success_at = runs
        .iter()
        .find(|r| r.outcome == "succeeded")
        .and_then(|r| r.finished_at);
    Ok(Status {
        target: target.to_owned(),
        lock_holder,
        budget,
        backlog: latest.map(|r| r.backlog).unwrap_or(0),
        backlog_eta_seconds: latest.and_then(|r| r.backlog_eta_seconds).unwrap_or(0),
        awaiting_user_check: latest
            .and_then(|r| r.counts.get("awaiting_user_check").and_then(Value::as_u64))
            .unwrap_or(0),
        held_revocations: latest.map(|r| r.held_revocations).unwrap_or(0),
        clerk_blocks,
        unsettled: UnsettledCreates {
            creates,
            settles_at,
            settles_in_seconds: settles_at.map(|at| (at - now).num_seconds().max(0)),
        },
        last_success_at,
        runs,
    })
}
