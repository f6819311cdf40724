//! When a target last listed every invitation in Clerk (a full reconciliation).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// When the target's last full listing began, if it ever had one.
pub async fn last_full(
    db: impl PgExecutor<'_>,
    target: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT listed_at FROM invite_sync_full_listings WHERE target = $1",
        target
    )
    .fetch_optional(db)
    .await
}

/// Records a full listing that began at `listed_at` and whose observations are stored.
pub async fn record_full(
    db: impl PgExecutor<'_>,
    target: &str,
    listed_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO invite_sync_full_listings (target, listed_at) VALUES ($1, $2)
           ON CONFLICT (target) DO UPDATE
           SET listed_at = GREATEST(invite_sync_full_listings.listed_at, EXCLUDED.listed_at)"#,
        target,
        listed_at,
    )
    .execute(db)
    .await?;
    Ok(())
}
