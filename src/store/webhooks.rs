//! Webhook deliveries already applied, so a redelivery is not applied twice.

use sqlx::PgExecutor;

/// Records a delivery; `false` when this sender's message id was applied before.
pub async fn record_delivery(
    db: impl PgExecutor<'_>,
    source: &str,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        r#"INSERT INTO invite_sync_webhook_deliveries (source, message_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING"#,
        source,
        message_id,
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
