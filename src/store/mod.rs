//! PostgreSQL: the roster invite-sync reads and the state it keeps. One file per table or concern.

pub mod budget;
pub mod copy_out;
pub mod desired;
mod error;
pub mod explain;
pub mod group_memberships;
pub mod ledger;
pub mod listings;
pub mod lock;
pub mod membership_ledger;
pub mod membership_roster;
pub mod memberships;
pub mod organizations;
pub mod outbox;
pub mod people;
pub mod retention;
pub mod roster;
pub mod runs;
pub mod scim;
pub mod scim_groups;
pub mod status;
pub mod users;
pub mod webhooks;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgConnection, PgPool};

pub use error::{CorruptLedgerRow, StoreError};

/// A transaction that reads one unchanging snapshot and writes nothing: the parts of a read
/// (a cycle's roster and ledger, a SCIM search's count and pages) agree.
pub async fn read_only(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The schema, forward-only, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a pool. Fails when the database does not answer within the pool's acquire timeout.
pub async fn connect(
    pool: PgPoolOptions,
    options: PgConnectOptions,
) -> Result<PgPool, sqlx::Error> {
    pool.connect_with(options).await
}

/// Whether the database answers a query.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// Drops the database `name` if it exists, ending its sessions.
pub async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", identifier(name));
    conn.execute(statement.as_str()).await?;
    Ok(())
}

/// Creates an empty database `name`.
pub async fn create_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let statement = format!("CREATE DATABASE {}", identifier(name));
    conn.execute(statement.as_str()).await?;
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The database's clock: the one `called_at`, `sent_at` and the stored blocks are written by.
pub async fn now(
    db: impl sqlx::PgExecutor<'_>,
) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT now() AS "now!""#)
        .fetch_one(db)
        .await
}

/// Applies every migration not yet applied; running it again changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// How many of the embedded migrations the database has not applied; all of them when it
/// has none (no `_sqlx_migrations` table).
pub async fn pending_migrations(pool: &PgPool) -> Result<usize, sqlx::Error> {
    // sqlx's own table, which the offline query data cannot describe: checked at run time.
    let applied: Vec<i64> =
        match sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            // 42P01: undefined_table, a database never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e),
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count())
}
