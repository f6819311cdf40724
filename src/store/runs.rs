//! The run history: one row per reconcile cycle.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// How a cycle ended, as `invite_sync_runs.outcome` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    /// Everything planned was done (or is waiting for budget).
    Succeeded,
    /// Some items failed.
    Partial,
    /// The cycle could not complete.
    Failed,
    /// Revocations were held by the guard.
    Held,
    /// Another process holds the lock.
    Skipped,
    /// Shutdown stopped it between calls.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Held => "held",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What a finished cycle records.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Value,
    pub held_revocations: i32,
    pub errors: i32,
    pub error: Option<String>,
    pub budget_left: Value,
    pub backlog: i32,
    pub backlog_eta_seconds: Option<i64>,
}

/// A run as `status` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub id: Uuid,
    pub trigger: String,
    pub dry_run: bool,
    pub outcome: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: Value,
    pub held_revocations: i32,
    pub errors: i32,
    pub error: Option<String>,
    pub budget_left: Value,
    pub backlog: i32,
    pub backlog_eta_seconds: Option<i64>,
    pub host: Option<String>,
}

pub async fn start(
    db: impl PgExecutor<'_>,
    id: Uuid,
    target: &str,
    trigger: &str,
    dry_run: bool,
    host: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO invite_sync_runs (id, target, trigger, dry_run, host)
           VALUES ($1, $2, $3, $4, $5)"#,
        id,
        target,
        trigger,
        dry_run,
        host,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records, in one statement, a cycle that did not run because another process holds the
/// lock (someone was promised its id).
pub async fn record_skipped(
    db: impl PgExecutor<'_>,
    id: Uuid,
    target: &str,
    trigger: &str,
    host: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO invite_sync_runs (id, target, trigger, dry_run, host, outcome, finished_at, error)
           VALUES ($1, $2, $3, false, $4, 'skipped', now(), 'another process holds the lock')"#,
        id,
        target,
        trigger,
        host,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn finish(
    db: impl PgExecutor<'_>,
    id: Uuid,
    outcome: Outcome,
    summary: &Summary,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE invite_sync_runs
           SET outcome = $2, finished_at = now(), counts = $3, held_revocations = $4, errors = $5,
               error = $6, budget_left = $7, backlog = $8, backlog_eta_seconds = $9
           WHERE id = $1"#,
        id,
        outcome.as_str(),
        summary.counts,
        summary.held_revocations,
        summary.errors,
        summary.error,
        summary.budget_left,
        summary.backlog,
        summary.backlog_eta_seconds,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The latest runs, newest first.
pub async fn recent(
    db: impl PgExecutor<'_>,
    target: &str,
    limit: i64,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        r#"SELECT id, trigger, dry_run, outcome, started_at, finished_at, counts, held_revocations,
                  errors, error, budget_left, backlog, backlog_eta_seconds, host
           FROM invite_sync_runs WHERE target = $1
           ORDER BY started_at DESC LIMIT $2"#,
        target,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Marks runs left `running` by a process that died as interrupted.
pub async fn close_abandoned(db: impl PgExecutor<'_>, target: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE invite_sync_runs SET outcome = 'interrupted', finished_at = now(),
               error = 'the process ended before the cycle finished'
           WHERE target = $1 AND outcome = 'running'"#,
        target
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The revocations the guard holds for a target now: those of its latest finished cycle,
/// whichever replica ran it (the same run `status` reads).
pub async fn held_revocations_now(
    db: impl PgExecutor<'_>,
    target: &str,
) -> Result<i32, sqlx::Error> {
    let held = sqlx::query_scalar!(
        r#"SELECT held_revocations FROM invite_sync_runs
           WHERE target = $1 AND outcome NOT IN ('running', 'skipped')
           ORDER BY started_at DESC LIMIT 1"#,
        target,
    )
    .fetch_optional(db)
    .await?;
    Ok(held.unwrap_or(0))
}
