//! Retention: deleting what grows with time once it is older than `retention.days`, and
//! never what is still needed (the budget's window, the replay window, the ledger's latest
//! word on each person, an unsettled create's call).

use sqlx::PgPool;

/// Webhook deliveries younger than this are kept whatever `retention.days` says: senders
/// retry a message for about a day and a half, and a redelivery must still be recognised.
pub const REPLAY_WINDOW_DAYS: i32 = 3;

/// Rows deleted, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub clerk_calls: u64,
    pub webhook_deliveries: u64,
    pub rate_blocks: u64,
    pub ledger: u64,
    pub membership_ledger: u64,
    pub user_checks: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.runs
            + self.clerk_calls
            + self.webhook_deliveries
            + self.rate_blocks
            + self.ledger
            + self.membership_ledger
            + self.user_checks
    }
}

/// Deletes, in every target, what is older than `days` days (by the database's clock) and no
/// longer needed. `days` is at least 1, longer than any create window (at most a day), so the
/// budget always sees the calls inside its window.
pub async fn prune(pool: &PgPool, days: u32) -> Result<Pruned, sqlx::Error> {
    let days = i32::try_from(days.max(1)).unwrap_or(i32::MAX);
    // The latest run of each target stays, so `status` always has one to show.
    let runs = sqlx::query!(
        r#"DELETE FROM invite_sync_runs AS r
           WHERE r.started_at < now() - make_interval(days => $1)
             AND r.id <> (SELECT latest.id FROM invite_sync_runs AS latest
                          WHERE latest.target = r.target
                          ORDER BY latest.started_at DESC, latest.id DESC LIMIT 1)"#,
        days,
    )
    .execute(pool)
    .await?
    .rows_affected();
    // A create still `sending` is settled by the call that carried it.
    let clerk_calls = sqlx::query!(
        r#"DELETE FROM invite_sync_clerk_calls AS c
           WHERE c.called_at < now() - make_interval(days => $1)
             AND NOT EXISTS (SELECT 1 FROM invite_sync_ledger AS l
                             WHERE l.call_id = c.id AND l.state = 'sending')
             AND NOT EXISTS (SELECT 1 FROM invite_sync_membership_ledger AS m
                             WHERE m.call_id = c.id AND m.state = 'sending')"#,
        days,
    )
    .execute(pool)
    .await?
    .rows_affected();
    let webhook_deliveries = sqlx::query!(
        r#"DELETE FROM invite_sync_webhook_deliveries
           WHERE received_at < now() - make_interval(days => GREATEST($1::integer, $2::integer))"#,
        days,
        REPLAY_WINDOW_DAYS,
    )
    .execute(pool)
    .await?
    .rows_affected();
    let rate_blocks = sqlx::query!(
        r#"DELETE FROM invite_sync_rate_blocks
           WHERE blocked_until < now() - make_interval(days => $1)"#,
        days,
    )
    .execute(pool)
    .await?
    .rows_affected();
    // Only history: a settled row a newer row for the same person has superseded. The latest
    // row per person (what the plan reads), pending, accepted and sending rows all stay.
    let ledger = sqlx::query!(
        r#"DELETE FROM invite_sync_ledger AS l
           WHERE l.state IN ('revoked', 'expired', 'failed')
             AND l.updated_at < now() - make_interval(days => $1)
             AND EXISTS (SELECT 1 FROM invite_sync_ledger AS newer
                         WHERE newer.target = l.target AND newer.email = l.email
                           AND newer.id > l.id)"#,
        days,
    )
    .execute(pool)
    .await?
    .rows_affected();
    // The same for organizations: a settled row superseded by a newer one for the same person
    // in the same organization.
    let membership_ledger = sqlx::query!(
        r#"DELETE FROM invite_sync_membership_ledger AS l
           WHERE l.state IN ('revoked', 'expired', 'failed', 'removed')
             AND l.updated_at < now() - make_interval(days => $1)
             AND EXISTS (SELECT 1 FROM invite_sync_membership_ledger AS newer
                         WHERE newer.target = l.target
                           AND newer.organization_id = l.organization_id
                           AND newer.email = l.email
                           AND newer.id > l.id)"#,
        days,
    )
    .execute(pool)
    .await?
    .rows_affected();
    // A "not a user" answer this old is asked again before any create anyway.
    let user_checks = sqlx::query!(
        r#"DELETE FROM invite_sync_user_checks
           WHERE checked_at < now() - make_interval(days => $1)"#,
        days,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(Pruned {
        runs,
        clerk_calls,
        webhook_deliveries,
        rate_blocks,
        ledger,
        membership_ledger,
        user_checks,
    })
}
