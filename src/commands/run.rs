//! `invite-sync run`: the service.

use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::config::Settings;
use crate::service;

pub async fn run(settings: &Settings) -> anyhow::Result<Exit> {
    let reconciler = crate::startup::reconciler(settings).await?;
    super::migrate_if_configured(&reconciler.pool, settings).await?;
    let shutdown = CancellationToken::new();
    service::shutdown::cancel_on_signal(shutdown.clone());
    service::run(
        reconciler,
        settings,
        service::Listeners::default(),
        shutdown,
    )
    .await?;
    Ok(Exit::Success)
}
