//! What each subcommand does. `cli` parses; these run.

pub mod clerk_sim;
pub mod config_check;
pub mod demo;
pub mod events;
mod exit;
pub mod explain;
pub mod import;
pub mod migrate;
pub mod plan;
pub mod private_postgres;
pub mod run;
pub mod status;
pub mod sync;

use anyhow::Context;
use sqlx::PgPool;

use crate::config::Settings;
use crate::store;

pub use exit::Exit;

/// Applies the migrations unless `database.migrate_on_start = false`; then it fails, saying
/// what to run, when the schema lacks a migration this version needs.
pub async fn migrate_if_configured(pool: &PgPool, settings: &Settings) -> anyhow::Result<()> {
    if settings.database.migrate_on_start {
        store::migrate(pool)
            .await
            .with_context(|| migrations_failed(settings))?;
        return Ok(());
    }
    let pending = store::pending_migrations(pool)
        .await
        .context("the schema version could not be read")?;
    if pending > 0 {
        anyhow::bail!(
            "the database schema lacks {pending} of this version's {} migrations and \
             database.migrate_on_start is false: run `invite-sync migrate` (with a role that \
             may create tables), then start again",
            store::MIGRATOR.iter().count()
        );
    }
    Ok(())
}

/// The context of a failed migration: it names the role it connected as and where, since
/// the usual cause is a role that may not change the schema. Never the password.
pub fn migrations_failed(settings: &Settings) -> String {
    match settings.database.connect_options() {
        Ok(options) => format!(
            "the migrations could not be applied as database user {:?} (database {:?} on {}); \
             migrating needs a role that may create tables in the schema, such as the schema's \
             owner",
            options.get_username(),
            options.get_database().unwrap_or(options.get_username()),
            options.get_host()
        ),
        Err(_) => "the migrations could not be applied".to_owned(),
    }
}

/// Output format of `plan` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// A duration as people read it: `0 s`, `42 min`, `3 h 20 min`.
pub fn human_duration(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min", seconds.div_ceil(60)),
        _ => {
            let minutes = seconds.div_ceil(60);
            format!("{} h {} min", minutes / 60, minutes % 60)
        }
    }
}
