//! What the commands build from the settings before they run: the database pool and the
//! reconciler.

use anyhow::Context;
use sqlx::PgPool;

use crate::clerk::ClerkClient;
use crate::config::Settings;
use crate::reconcile::{CycleConfig, Reconciler};
use crate::store;

/// Connects to the database of the settings.
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    store::connect(
        settings.database.pool_options(),
        settings.database.connect_options()?,
    )
    .await
    .context("could not connect to the database")
}

/// Connects and builds a reconciler from the settings; the Clerk key is checked here.
pub async fn reconciler(settings: &Settings) -> anyhow::Result<Reconciler> {
    let clerk = ClerkClient::new(settings.clerk.client_options()?)?;
    let pool = connect(settings).await?;
    Ok(Reconciler::new(
        pool,
        clerk,
        CycleConfig::from_settings(settings),
    ))
}
