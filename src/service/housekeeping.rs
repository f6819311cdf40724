//! The housekeeping job: prunes old history (`store::retention`) at start and then hourly,
//! logging what it pruned; a failed pass is logged and the next one tries again.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::retention;
use crate::telemetry::Chain;

/// How often the job runs.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown` fires: a pass now, then one every [`EVERY`].
pub async fn run(pool: PgPool, days: u32, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            biased;
            // A DELETE cut short is rolled back; the next start prunes it.
            _ = shutdown.cancelled() => return,
            _ = prune(&pool, days) => {}
        }
    }
}

/// One pass, logged: the history, then the outbound events.
pub async fn prune(pool: &PgPool, days: u32) -> Option<retention::Pruned> {
    match crate::store::outbox::prune(pool, days).await {
        Ok(events) => tracing::info!(
            retention_days = days,
            events,
            "housekeeping pruned old events"
        ),
        Err(error) => tracing::warn!(
            error.message = %error,
            error.cause_chain = %Chain(&error),
            "housekeeping could not prune old events; the next pass tries again"
        ),
    }
    match retention::prune(pool, days).await {
        Ok(pruned) => {
            tracing::info!(
                retention_days = days,
                runs = pruned.runs,
                clerk_calls = pruned.clerk_calls,
                webhook_deliveries = pruned.webhook_deliveries,
                rate_blocks = pruned.rate_blocks,
                ledger = pruned.ledger,
                membership_ledger = pruned.membership_ledger,
                user_checks = pruned.user_checks,
                "housekeeping pruned old rows"
            );
            Some(pruned)
        }
        Err(error) => {
            tracing::warn!(
                error.message = %error,
                error.cause_chain = %Chain(&error),
                "housekeeping could not prune; the next pass tries again"
            );
            None
        }
    }
}
