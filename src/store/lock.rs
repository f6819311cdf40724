//! One writer per target: a cycle runs only while its session holds a Postgres advisory lock.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// The lock key of a target: stable across processes and versions.
const KEY_SQL: &str = "hashtextextended('invite-sync:' || $1, 0)";

/// A held advisory lock. It lives on its own connection: if that connection is lost, the
/// lock is gone, and `ensure_held` says so.
pub struct LeaderLock {
    conn: PoolConnection<Postgres>,
    target: String,
}

/// Who holds a target's lock, as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Holder {
    pub pid: i32,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

impl LeaderLock {
    /// Takes the lock if nobody holds it. `None` when another session does.
    pub async fn try_acquire(
        pool: &PgPool,
        target: &str,
    ) -> Result<Option<LeaderLock>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let label = format!("invite-sync leader {target}");
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(&label)
            .execute(&mut *conn)
            .await?;
        let got: bool = sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
            .bind(target)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            Ok(Some(LeaderLock {
                conn,
                target: target.to_owned(),
            }))
        } else {
            Ok(None)
        }
    }

    /// Fails when the lock's connection is gone (and the lock with it).
    pub async fn ensure_held(&mut self) -> Result<(), sqlx::Error> {
        let held: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
                 AND granted AND ((classid::bigint << 32) | objid::bigint) = {KEY_SQL})"
        ))
        .bind(&self.target)
        .fetch_one(&mut *self.conn)
        .await?;
        if held {
            Ok(())
        } else {
            Err(sqlx::Error::Protocol(
                "the leader lock is no longer held".into(),
            ))
        }
    }

    /// Releases the lock and returns the connection to the pool.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("SELECT pg_advisory_unlock({KEY_SQL})"))
            .bind(&self.target)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

type HolderRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// The session holding a target's lock, if any.
pub async fn holder(pool: &PgPool, target: &str) -> Result<Option<Holder>, sqlx::Error> {
    let row: Option<HolderRow> = sqlx::query_as(&format!(
        "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((l.classid::bigint << 32) | l.objid::bigint) = {KEY_SQL}"
    ))
    .bind(target)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(pid, application_name, client_addr, since)| Holder {
            pid,
            application_name,
            client_addr,
            since,
        }),
    )
}
