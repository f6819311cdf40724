//! One writer per target: a cycle runs only while its session holds a Postgres advisory lock.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use super::StoreError;

/// The lock key of a target: stable across processes and versions.
const KEY_SQL: &str = "hashtextextended('invite-sync:' || $1, 0)";

/// A held advisory lock. It lives on its own connection: if that connection is lost, the
/// lock is gone, and `ensure_held` says so.
pub struct LeaderLock {
    conn: PoolConnection<Postgres>,
    target: String,
}

/// Who holds a target's lock, as `status` shows it. `pid` and `host` are the invite-sync
/// process's own (what an operator would signal); `backend_pid` is its PostgreSQL session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: Option<i32>,
    pub host: Option<String>,
    pub backend_pid: i32,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Holder {
    /// "invite-sync pid 11952 on web-1 (PostgreSQL backend 11959)", or, for a holder that
    /// wrote no row (an older version), the backend and its connection's name.
    pub fn describe(&self) -> String {
        match (self.pid, &self.host) {
            (Some(pid), Some(host)) => format!(
                "invite-sync pid {pid} on {host} (PostgreSQL backend {})",
                self.backend_pid
            ),
            _ => format!(
                "PostgreSQL backend {} ({}), not an invite-sync process id",
                self.backend_pid,
                self.application_name.as_deref().unwrap_or("")
            ),
        }
    }
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
            record_holder(&mut conn, target).await?;
            Ok(Some(LeaderLock {
                conn,
                target: target.to_owned(),
            }))
        } else {
            Ok(None)
        }
    }

    /// Fails when the lock's connection is gone (and the lock with it).
    pub async fn ensure_held(&mut self) -> Result<(), StoreError> {
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
            Err(StoreError::LockLost)
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

/// Writes this process's pid and host for the lock just taken on `conn`.
async fn record_holder(conn: &mut sqlx::PgConnection, target: &str) -> Result<(), sqlx::Error> {
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    sqlx::query!(
        r#"INSERT INTO invite_sync_lock_holders (target, backend_pid, process_pid, host)
           VALUES ($1, pg_backend_pid(), $2, $3)
           ON CONFLICT (target) DO UPDATE
           SET backend_pid = EXCLUDED.backend_pid, process_pid = EXCLUDED.process_pid,
               host = EXCLUDED.host, acquired_at = now()"#,
        target,
        pid,
        this_host(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The name of the machine (or pod) this process runs on.
pub fn this_host() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    };
    // HOSTNAME first: a pod's name on Kubernetes, and what names a replica in tests.
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| read("/proc/sys/kernel/hostname"))
        .or_else(|| read("/etc/hostname"))
        .unwrap_or_else(|| "unknown".to_owned())
}

type HolderRow = (
    i32,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// The session holding a target's lock, if any.
pub async fn holder(pool: &PgPool, target: &str) -> Result<Option<Holder>, sqlx::Error> {
    let row: Option<HolderRow> = sqlx::query_as(&format!(
        "SELECT a.pid, h.process_pid, h.host, a.application_name, host(a.client_addr), a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             LEFT JOIN invite_sync_lock_holders h ON h.target = $1 AND h.backend_pid = a.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((l.classid::bigint << 32) | l.objid::bigint) = {KEY_SQL}"
    ))
    .bind(target)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(backend_pid, pid, host, application_name, client_addr, since)| Holder {
            pid,
            host,
            backend_pid,
            application_name,
            client_addr,
            since,
        },
    ))
}
