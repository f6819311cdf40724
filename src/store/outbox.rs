//! The outbox of outbound events and their deliveries, one per event and endpoint.
//!
//! Events are written by triggers on the ledgers (migration `event_outbox`), in the same
//! transaction as the change that causes them; this module registers the endpoints and the
//! roster relations the triggers read, claims due deliveries, records their outcomes, sends
//! dead letters again, prunes, and counts for `status` and the metrics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Row as _};

/// Makes these endpoints the target's active ones (an endpoint dropped from the
/// configuration stays, inactive: the triggers give it no more deliveries) and records the
/// roster relations the events read the roster row from.
pub async fn register(
    pool: &PgPool,
    target: &str,
    endpoints: &[String],
    relation: &str,
    memberships_relation: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE invite_sync_event_endpoints SET active = false
         WHERE target = $1 AND active AND NOT (url = ANY($2))",
    )
    .bind(target)
    .bind(endpoints)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO invite_sync_event_endpoints (target, url)
         SELECT $1, url FROM unnest($2::text[]) AS e(url)
         ON CONFLICT (target, url) DO UPDATE SET active = true",
    )
    .bind(target)
    .bind(endpoints)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO invite_sync_event_rosters (target, relation, memberships_relation)
         VALUES ($1, $2, $3)
         ON CONFLICT (target) DO UPDATE
         SET relation = EXCLUDED.relation, memberships_relation = EXCLUDED.memberships_relation",
    )
    .bind(target)
    .bind(relation)
    .bind(memberships_relation)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub outbox_id: i64,
    pub endpoint: String,
    /// The `webhook-id`: the same on every attempt.
    pub event_id: String,
    pub event_type: String,
    /// The body, as sent on every attempt.
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries to these endpoints, oldest first and at most one per
/// person and endpoint: a person's delivery is due only once every earlier one of theirs to
/// that endpoint is delivered or dead. A claim counts an attempt and holds the delivery for
/// `lease` (so that another process does not send it meanwhile); a process that dies with it
/// leaves it due again when the lease lapses.
pub async fn claim(
    pool: &PgPool,
    target: &str,
    endpoints: &[String],
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    if endpoints.is_empty() || limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        r#"WITH due AS (
               SELECT d.outbox_id, d.endpoint FROM invite_sync_outbox_deliveries AS d
               WHERE d.target = $1 AND d.endpoint = ANY($2)
                 AND d.delivered_at IS NULL AND d.dead_at IS NULL
                 AND d.next_attempt_at <= now()
                 AND NOT EXISTS (
                     SELECT 1 FROM invite_sync_outbox_deliveries AS p
                     WHERE p.target = d.target AND p.endpoint = d.endpoint
                       AND p.person_key = d.person_key AND p.outbox_id < d.outbox_id
                       AND p.delivered_at IS NULL AND p.dead_at IS NULL)
               ORDER BY d.outbox_id
               LIMIT $3
               FOR UPDATE OF d SKIP LOCKED
           )
           UPDATE invite_sync_outbox_deliveries AS d
           SET attempts = d.attempts + 1,
               next_attempt_at = now() + make_interval(secs => $4)
           FROM due, invite_sync_outbox AS o
           WHERE d.outbox_id = due.outbox_id AND d.endpoint = due.endpoint AND o.id = d.outbox_id
           RETURNING d.outbox_id, d.endpoint, o.event_id, o.type, o.payload::text AS body,
                     d.attempts, o.created_at"#,
    )
    .bind(target)
    .bind(endpoints)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            Ok(Claimed {
                outbox_id: row.try_get("outbox_id")?,
                endpoint: row.try_get("endpoint")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("type")?,
                body: row.try_get("body")?,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|c| c.outbox_id);
    Ok(claimed)
}

/// Records a delivery the endpoint took (a 2xx answer).
pub async fn mark_delivered(
    db: impl PgExecutor<'_>,
    outbox_id: i64,
    endpoint: &str,
    status: u16,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE invite_sync_outbox_deliveries
         SET delivered_at = now(), last_status = $3, last_error = NULL
         WHERE outbox_id = $1 AND endpoint = $2",
    )
    .bind(outbox_id)
    .bind(endpoint)
    .bind(i32::from(status))
    .execute(db)
    .await?;
    Ok(())
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tried again later.
    Retry,
    /// A dead letter: too many attempts, or the event is too old.
    Dead,
}

/// A failed attempt and the rules of what follows it.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// The endpoint's answer, when it answered.
    pub status: Option<u16>,
    pub error: &'a str,
    /// The wait before the next attempt.
    pub wait: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
}

/// Records a failed attempt: due again after `wait`, or a dead letter once it has had
/// `max_attempts` attempts or its event is older than `max_age`.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    outbox_id: i64,
    endpoint: &str,
    failure: &Failure<'_>,
) -> Result<AfterFailure, sqlx::Error> {
    let dead: Option<bool> = sqlx::query_scalar(
        r#"UPDATE invite_sync_outbox_deliveries AS d
           SET last_status = $3, last_error = $4,
               dead_at = CASE WHEN d.attempts >= $6
                                OR o.created_at < now() - make_interval(secs => $7)
                              THEN now() END,
               next_attempt_at = now() + make_interval(secs => $5)
           FROM invite_sync_outbox AS o
           WHERE d.outbox_id = $1 AND d.endpoint = $2 AND o.id = d.outbox_id
           RETURNING d.dead_at IS NOT NULL"#,
    )
    .bind(outbox_id)
    .bind(endpoint)
    .bind(failure.status.map(i32::from))
    .bind(failure.error)
    .bind(failure.wait.as_secs_f64())
    .bind(i32::try_from(failure.max_attempts).unwrap_or(i32::MAX))
    .bind(failure.max_age.as_secs_f64())
    .fetch_optional(db)
    .await?;
    Ok(if dead == Some(true) {
        AfterFailure::Dead
    } else {
        AfterFailure::Retry
    })
}

/// Which deliveries `events replay` sends again.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only to this endpoint.
    pub endpoint: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events of this address.
    pub email: Option<String>,
    /// Only events made at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this event (`msg_...`).
    pub event_id: Option<String>,
    /// Every retained event that matches, not only dead letters: those already delivered, and
    /// those made before an endpoint was added (which it never had), are sent again.
    pub all: bool,
}

/// Makes the matching dead letters (with `all`, every matching retained event) due again
/// for the target's active endpoints, with their attempts counted afresh. Returns how many
/// deliveries were made due.
pub async fn replay(
    pool: &PgPool,
    target: &str,
    filter: &ReplayFilter,
) -> Result<u64, sqlx::Error> {
    let query = if filter.all {
        r#"INSERT INTO invite_sync_outbox_deliveries (outbox_id, endpoint, target, person_key)
           SELECT o.id, e.url, o.target, o.person_key
           FROM invite_sync_outbox AS o
           JOIN invite_sync_event_endpoints AS e ON e.target = o.target AND e.active
           WHERE o.target = $1
             AND ($2::text IS NULL OR e.url = $2)
             AND ($3::text IS NULL OR o.type = $3)
             AND ($4::text IS NULL OR o.email = $4)
             AND ($5::timestamptz IS NULL OR o.created_at >= $5)
             AND ($6::text IS NULL OR o.event_id = $6)
           ON CONFLICT (outbox_id, endpoint) DO UPDATE
           SET delivered_at = NULL, dead_at = NULL, attempts = 0, next_attempt_at = now()"#
    } else {
        r#"UPDATE invite_sync_outbox_deliveries AS d
           SET dead_at = NULL, attempts = 0, next_attempt_at = now()
           FROM invite_sync_outbox AS o, invite_sync_event_endpoints AS e
           WHERE o.id = d.outbox_id AND e.target = d.target AND e.url = d.endpoint AND e.active
             AND d.target = $1 AND d.dead_at IS NOT NULL
             AND ($2::text IS NULL OR d.endpoint = $2)
             AND ($3::text IS NULL OR o.type = $3)
             AND ($4::text IS NULL OR o.email = $4)
             AND ($5::timestamptz IS NULL OR o.created_at >= $5)
             AND ($6::text IS NULL OR o.event_id = $6)"#
    };
    let done = sqlx::query(query)
        .bind(target)
        .bind(filter.endpoint.as_deref())
        .bind(filter.event_type.as_deref())
        .bind(filter.email.as_deref())
        .bind(filter.since)
        .bind(filter.event_id.as_deref())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes the events (and their deliveries) older than `days` days, in every target,
/// delivered or not: what an instance without endpoints records is bounded, and a dead
/// letter older than the retention is given up.
pub async fn prune(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let days = i32::try_from(days.max(1)).unwrap_or(i32::MAX);
    let done = sqlx::query(
        "DELETE FROM invite_sync_outbox WHERE created_at < now() - make_interval(days => $1)",
    )
    .bind(days)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// One endpoint's deliveries, for `status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EndpointState {
    pub url: String,
    /// Whether the configuration names it (an inactive one gets no new deliveries).
    pub active: bool,
    /// Deliveries not yet made (due, waiting for a retry, or in flight).
    pub pending: i64,
    /// Dead letters: given up, waiting for `events replay`.
    pub dead: i64,
    pub delivered: i64,
    /// When the oldest pending delivery's event was made.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// The error of the latest failed attempt still pending or dead.
    pub last_error: Option<String>,
}

/// The outbox of a target, for `status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OutboxState {
    /// Events retained (delivered or not).
    pub events: i64,
    /// Deliveries to the configured endpoints not yet made.
    pub pending: i64,
    /// Dead letters to the configured endpoints.
    pub dead_letters: i64,
    /// Every endpoint ever configured; those no longer configured are `active: false`.
    pub endpoints: Vec<EndpointState>,
}

/// The target's events and each endpoint's deliveries.
pub async fn state(db: &PgPool, target: &str) -> Result<OutboxState, sqlx::Error> {
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invite_sync_outbox WHERE target = $1")
            .bind(target)
            .fetch_one(db)
            .await?;
    let rows = sqlx::query(
        r#"SELECT e.url, e.active,
                  count(*) FILTER (WHERE d.outbox_id IS NOT NULL AND d.delivered_at IS NULL
                                   AND d.dead_at IS NULL) AS pending,
                  count(*) FILTER (WHERE d.dead_at IS NOT NULL) AS dead,
                  count(*) FILTER (WHERE d.delivered_at IS NOT NULL) AS delivered,
                  min(o.created_at) FILTER (WHERE d.delivered_at IS NULL AND d.dead_at IS NULL)
                      AS oldest_pending_at,
                  (SELECT x.last_error FROM invite_sync_outbox_deliveries AS x
                   WHERE x.target = e.target AND x.endpoint = e.url AND x.delivered_at IS NULL
                     AND x.last_error IS NOT NULL
                   ORDER BY x.outbox_id DESC LIMIT 1) AS last_error
           FROM invite_sync_event_endpoints AS e
           LEFT JOIN invite_sync_outbox_deliveries AS d
                  ON d.target = e.target AND d.endpoint = e.url
           LEFT JOIN invite_sync_outbox AS o ON o.id = d.outbox_id
           WHERE e.target = $1
           GROUP BY e.target, e.url, e.active
           ORDER BY e.url"#,
    )
    .bind(target)
    .fetch_all(db)
    .await?;
    let endpoints = rows
        .iter()
        .map(|row| {
            Ok(EndpointState {
                url: row.try_get("url")?,
                active: row.try_get("active")?,
                pending: row.try_get("pending")?,
                dead: row.try_get("dead")?,
                delivered: row.try_get("delivered")?,
                oldest_pending_at: row.try_get("oldest_pending_at")?,
                last_error: row.try_get("last_error")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let active = endpoints.iter().filter(|e| e.active);
    Ok(OutboxState {
        events,
        pending: active.clone().map(|e| e.pending).sum(),
        dead_letters: active.map(|e| e.dead).sum(),
        endpoints,
    })
}

/// Dead letters to the target's active endpoints: the metrics' gauge.
pub async fn dead_letters(db: impl PgExecutor<'_>, target: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        r#"SELECT count(*) FROM invite_sync_outbox_deliveries AS d
           JOIN invite_sync_event_endpoints AS e ON e.target = d.target AND e.url = d.endpoint
           WHERE d.target = $1 AND e.active AND d.dead_at IS NOT NULL"#,
    )
    .bind(target)
    .fetch_one(db)
    .await
}
