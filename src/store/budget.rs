//! The shared hourly budget of Clerk's create endpoints: every call recorded in Postgres, so
//! restarts and replicas count the same calls, and a 429's `Retry-After` kept until it passes.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::clerk::budget::{Budget, Endpoint, Invitations, Limits, EDGE_MARGIN};
use crate::clerk::client::MAX_RETRY_AFTER;

/// Records a call before it is sent and returns its id.
pub async fn record_call(
    db: impl PgExecutor<'_>,
    target: &str,
    endpoint: &str,
    items: i32,
    run_id: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO invite_sync_clerk_calls (target, endpoint, items, run_id)
           VALUES ($1, $2, $3, $4) RETURNING id"#,
        target,
        endpoint,
        items,
        run_id,
    )
    .fetch_one(db)
    .await
}

/// Stores the HTTP status Clerk answered to a recorded call.
pub async fn record_status(
    db: impl PgExecutor<'_>,
    call_id: i64,
    status: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invite_sync_clerk_calls SET status = $2 WHERE id = $1",
        call_id,
        status,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The calls to `endpoint` made since `since`, oldest first (their times tell when the
/// window frees up).
pub async fn calls_since(
    db: impl PgExecutor<'_>,
    target: &str,
    endpoint: &str,
    since: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT called_at FROM invite_sync_clerk_calls
           WHERE target = $1 AND endpoint = $2 AND called_at > $3
           ORDER BY called_at"#,
        target,
        endpoint,
        since,
    )
    .fetch_all(db)
    .await
}

/// Keeps a 429's block: the endpoint is not called for `seconds` from now (the database's
/// clock), at most Clerk's longest window and a margin ([`MAX_RETRY_AFTER`]). A later block
/// wins.
pub async fn record_block(
    db: impl PgExecutor<'_>,
    target: &str,
    endpoint: &str,
    seconds: i64,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let longest = i64::try_from(MAX_RETRY_AFTER.as_secs()).unwrap_or(i64::MAX);
    let seconds = seconds.clamp(0, longest);
    sqlx::query_scalar!(
        r#"INSERT INTO invite_sync_rate_blocks (target, endpoint, blocked_until)
           VALUES ($1, $2, now() + make_interval(secs => $3::bigint::double precision))
           ON CONFLICT (target, endpoint) DO UPDATE
           SET blocked_until = GREATEST(invite_sync_rate_blocks.blocked_until, EXCLUDED.blocked_until),
               recorded_at = now()
           RETURNING blocked_until"#,
        target,
        endpoint,
        seconds,
    )
    .fetch_one(db)
    .await
}

/// When the endpoint's block ends, if it is blocked now.
pub async fn blocked_until(
    db: impl PgExecutor<'_>,
    target: &str,
    endpoint: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT blocked_until FROM invite_sync_rate_blocks
           WHERE target = $1 AND endpoint = $2 AND blocked_until > now()"#,
        target,
        endpoint,
    )
    .fetch_optional(db)
    .await
}

/// A block that has not passed yet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Block {
    pub endpoint: String,
    pub blocked_until: DateTime<Utc>,
}

/// Every endpoint of the target Clerk blocks now, soonest end first.
pub async fn blocks(db: impl PgExecutor<'_>, target: &str) -> Result<Vec<Block>, sqlx::Error> {
    sqlx::query_as!(
        Block,
        r#"SELECT endpoint, blocked_until FROM invite_sync_rate_blocks
           WHERE target = $1 AND blocked_until > now()
           ORDER BY blocked_until"#,
        target,
    )
    .fetch_all(db)
    .await
}

/// The budget left now for a target's instance invitations, from the calls recorded in
/// Postgres.
pub async fn current(pool: &PgPool, target: &str, limits: Limits) -> Result<Budget, sqlx::Error> {
    current_of(pool, target, Invitations::Instance, limits).await
}

/// The budget left now for a target's invitations of one kind: the instance's, or the
/// organizations' (across all of them, `limits` from `clerk.org_bulk_create_per_window` and
/// `clerk.org_single_create_per_window`). Each kind counts only the calls recorded under its
/// own endpoints' names.
pub async fn current_of(
    pool: &PgPool,
    target: &str,
    kind: Invitations,
    limits: Limits,
) -> Result<Budget, sqlx::Error> {
    let now = super::now(pool).await?;
    let since = now
        - chrono::Duration::from_std(limits.window + EDGE_MARGIN)
            .unwrap_or(chrono::Duration::hours(1));
    let mut endpoints = Vec::with_capacity(2);
    for (operation, limit) in kind.endpoints(&limits) {
        let name = operation.as_str();
        let calls = calls_since(pool, target, name, since).await?;
        let blocked = blocked_until(pool, target, name).await?;
        endpoints.push(Endpoint::from_calls(
            limit,
            limits.window,
            &calls,
            blocked,
            now,
        ));
    }
    Ok(Budget {
        bulk: endpoints[0],
        single: endpoints[1],
    })
}

/// Removes the record of a call that certainly never reached Clerk: it used no budget.
pub async fn forget_call(db: impl PgExecutor<'_>, call_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM invite_sync_clerk_calls WHERE id = $1", call_id)
        .execute(db)
        .await?;
    Ok(())
}
