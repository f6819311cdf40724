//! `invite-sync migrate`: applies the database migrations (safe to run again).

use anyhow::Context;

use super::Exit;
use crate::config::Settings;
use crate::store;

pub async fn run(settings: &Settings) -> anyhow::Result<Exit> {
    let pool = crate::startup::connect(settings).await?;
    let pending = store::pending_migrations(&pool)
        .await
        .context("the schema version could not be read")?;
    store::migrate(&pool)
        .await
        .with_context(|| super::migrations_failed(settings))?;
    let total = store::MIGRATOR.iter().count();
    if pending == 0 {
        tracing::info!(migrations = total, "database schema was already up to date");
        println!("database schema was already up to date ({total} migrations)");
    } else {
        tracing::info!(applied = pending, migrations = total, "migrations applied");
        println!(
            "applied {pending} migrations; database schema is up to date ({total} migrations)"
        );
    }
    Ok(Exit::Success)
}
