//! Roster change notifications: the trigger on `desired_invitees` sends `NOTIFY invite_sync`;
//! the listener tells the worker of each one at once (the worker gathers a burst into a cycle:
//! [`super::worker::change_start`]). It reconnects after the database restarts, and tells the
//! worker then, since changes may have been missed.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::worker::Triggers;
use crate::telemetry::Chain;

/// The channel the roster trigger notifies.
pub const CHANNEL: &str = "invite_sync";

/// Listens until `shutdown` fires.
pub async fn listen(pool: PgPool, triggers: Triggers, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    // Set whenever changes may have gone unnoticed: a cycle catches up once listening again.
    let mut missed = false;
    loop {
        let listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            listener = subscribe(&pool) => listener,
        };
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                missed = true;
                tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), retry_in_ms = backoff.as_millis() as u64, "cannot listen for roster changes; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        if missed {
            tracing::info!(
                "listening for roster changes again; a cycle catches up on what was missed"
            );
            triggers.roster_changed();
            missed = false;
        }
        if let Err(error) = relay(&mut listener, &triggers, &shutdown).await {
            missed = true;
            tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "lost the roster change listener");
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Why the listener stopped relaying notifications.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("the connection was closed")]
    Closed,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Turns notifications into cycle requests until the connection is lost.
async fn relay(
    listener: &mut PgListener,
    triggers: &Triggers,
    shutdown: &CancellationToken,
) -> Result<(), Lost> {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = listener.try_recv() => received?,
        };
        if received.is_none() {
            return Err(Lost::Closed);
        }
        tracing::debug!("roster changed; a cycle is requested");
        triggers.roster_changed();
    }
}
