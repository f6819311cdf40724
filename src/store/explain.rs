//! What `explain` reads of one address, read-only: its roster rows, the times the ledgers
//! hold for it, what the known users say of it and the outbound events written for it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::desired::{decode_row, relation_error, select, ReadError, RosterRow};
use crate::domain::Email;

/// The instance roster's rows of one address (as the reader normalises it), oldest first.
pub async fn roster_rows(
    db: impl PgExecutor<'_>,
    relation: &str,
    email: &Email,
) -> Result<Vec<RosterRow>, ReadError> {
    let sql = select(
        relation,
        " WHERE lower(btrim(email::text)) = $1 ORDER BY created_at NULLS LAST",
    );
    let rows = sqlx::query(&sql)
        .bind(email.as_str())
        .fetch_all(db)
        .await
        .map_err(|e| relation_error(e, relation))?;
    Ok(rows.iter().map(decode_row).collect())
}

/// When each instance ledger entry of an address last changed, by entry id.
pub async fn ledger_times(
    db: impl PgExecutor<'_>,
    target: &str,
    email: &Email,
) -> Result<Vec<(i64, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, updated_at FROM invite_sync_ledger WHERE target = $1 AND email = $2 ORDER BY id",
    )
    .bind(target)
    .bind(email.as_str())
    .fetch_all(db)
    .await
}

/// One membership ledger entry, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MembershipHistory {
    pub id: i64,
    pub organization_id: String,
    pub kind: String,
    pub clerk_id: Option<String>,
    pub role: String,
    pub state: String,
    pub owned: bool,
    pub attempts: i32,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub terminal: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every membership ledger entry of an address, in every organization, oldest first.
pub async fn membership_history(
    db: impl PgExecutor<'_>,
    target: &str,
    email: &Email,
) -> Result<Vec<MembershipHistory>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, organization_id, kind, clerk_id, role, state, owned, attempts,
                last_error_code, last_error, terminal, next_attempt_at, created_at, updated_at
         FROM invite_sync_membership_ledger WHERE target = $1 AND email = $2 ORDER BY id",
    )
    .bind(target)
    .bind(email.as_str())
    .fetch_all(db)
    .await
}

/// What the known users say of an address.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct KnownUser {
    /// How invite-sync learned it (an accepted invitation, a lookup, a webhook).
    pub seen_via: String,
    pub seen_at: DateTime<Utc>,
    pub clerk_user_id: Option<String>,
    /// When Clerk deleted the user, if it did.
    pub deleted_at: Option<DateTime<Utc>>,
}

pub async fn known_user(
    db: impl PgExecutor<'_>,
    target: &str,
    email: &Email,
) -> Result<Option<KnownUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seen_via, seen_at, clerk_user_id, deleted_at FROM invite_sync_known_users
         WHERE target = $1 AND email = $2",
    )
    .bind(target)
    .bind(email.as_str())
    .fetch_optional(db)
    .await
}

/// One outbound event of an address and how its deliveries stand.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EventLine {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub delivered: i64,
    pub dead: i64,
    pub waiting: i64,
}

/// The outbound events of an address, oldest first (the last `limit`); `None` when the
/// database has no outbox.
pub async fn events(
    pool: &sqlx::PgPool,
    target: &str,
    email: &Email,
    limit: i64,
) -> Result<Option<Vec<EventLine>>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('invite_sync_outbox_deliveries') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    let mut lines: Vec<EventLine> = sqlx::query_as(
        "SELECT o.event_id, o.type AS kind, o.created_at,
                count(d.delivered_at) AS delivered,
                count(d.dead_at) AS dead,
                count(d.outbox_id) FILTER (WHERE d.delivered_at IS NULL AND d.dead_at IS NULL)
                    AS waiting
         FROM invite_sync_outbox o
         LEFT JOIN invite_sync_outbox_deliveries d ON d.outbox_id = o.id
         WHERE o.target = $1 AND o.email = $2
         GROUP BY o.id ORDER BY o.id DESC LIMIT $3",
    )
    .bind(target)
    .bind(email.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    lines.reverse();
    Ok(Some(lines))
}
