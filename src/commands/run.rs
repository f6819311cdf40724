//! `invite-sync run`: the service.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::{reconcile, service};

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let reconciler = reconcile::from_settings(settings).await?;
    super::migrate_if_configured(&reconciler.pool, settings).await?;
    let shutdown = CancellationToken::new();
    service::cancel_on_signal(shutdown.clone());
    service::run(reconciler, settings, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
