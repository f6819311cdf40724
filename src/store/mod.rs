//! PostgreSQL: the roster invite-sync reads and the state it keeps. One file per table or concern.

pub mod budget;
pub mod desired;
pub mod ledger;
pub mod listings;
pub mod lock;
pub mod people;
pub mod retention;
pub mod roster;
pub mod runs;
pub mod scim;
pub mod users;
pub mod webhooks;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The schema, forward-only, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a pool. Fails when the database does not answer within the pool's acquire timeout.
pub async fn connect(
    pool: PgPoolOptions,
    options: PgConnectOptions,
) -> Result<PgPool, sqlx::Error> {
    pool.connect_with(options).await
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
