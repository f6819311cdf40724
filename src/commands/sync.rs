//! `invite-sync sync`: one cycle, and an exit code that says how it went.

use tokio_util::sync::CancellationToken;

use anyhow::Context;

use crate::config::Settings;
use crate::domain::Email;
use crate::reconcile::{CycleResult, Request};
use crate::store::ledger;
use crate::store::runs::Outcome;

use super::Exit;

/// Which refused creates `--retry-failed` makes due again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryFailed {
    None,
    All,
    These(Vec<Email>),
}

pub async fn run(
    settings: &Settings,
    dry_run: bool,
    allow_revocations: usize,
    retry_failed: RetryFailed,
    full: bool,
) -> anyhow::Result<Exit> {
    let reconciler = crate::startup::reconciler(settings).await?;
    super::migrate_if_configured(&reconciler.pool, settings).await?;
    retry(&reconciler.pool, &settings.sync.target, &retry_failed).await?;
    // Registered before the cycle, so that the events it makes are due to each endpoint.
    let deliverer =
        crate::service::events::Deliverer::start(reconciler.pool.clone(), settings).await?;
    let shutdown = CancellationToken::new();
    crate::service::shutdown::cancel_on_signal(shutdown.clone());
    let request = Request {
        trigger: "sync".to_owned(),
        dry_run: dry_run.then_some(true),
        allow_revocations,
        run_id: None,
        full,
    };
    let result = reconciler.run_cycle(&request, &shutdown).await?;
    if deliverer.has_endpoints() && !shutdown.is_cancelled() {
        // One-shot modes have no delivery task: the events due are sent now, for at most
        // events.timeout_seconds; what is left waits for the next sync (or `run`).
        match deliverer.drain(settings.events.timeout()).await {
            Ok(pass) => println!(
                "events: {} delivered, {} failed (retried later), {} dead letters",
                pass.delivered, pass.failed, pass.dead
            ),
            Err(error) => tracing::warn!(
                error.message = %error,
                "the events could not be delivered; the next sync or run sends them"
            ),
        }
    }
    Ok(match result {
        CycleResult::Skipped { holder } => {
            let who = holder
                .map(|h| format!(" ({})", h.describe()))
                .unwrap_or_default();
            println!("skipped: another invite-sync holds the lock for this target{who}");
            Exit::Success
        }
        CycleResult::Ran(report) => {
            println!(
                "{}: {} created, {} revoked, {} held, {} failed, backlog {} (ETA {}){}",
                report.outcome.as_str(),
                report.tally.created,
                report.tally.revoked,
                report.held_revocations,
                report.tally.failed,
                report.tally.backlog,
                super::human_duration(report.eta_seconds),
                if report.dry_run {
                    " [dry run: nothing sent]"
                } else {
                    ""
                }
            );
            if let Some(at) = report.unsettled.settles_at {
                println!(
                    "  {} creates unsettled (outcome unknown; these people may have no invitation yet): looked up from {} (clerk.settle_after_seconds); run again then",
                    report.unsettled.creates,
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
            for error in &report.tally.errors {
                println!("  error: {error}");
            }
            if report.held_revocations > 0 {
                println!(
                    "  {} revocations held: {}. Review `invite-sync plan`, then release with `invite-sync sync --allow-revocations {}`",
                    report.held_revocations,
                    report.hold_reason.map(|r| r.describe()).unwrap_or(""),
                    report.held_revocations
                );
            }
            match report.outcome {
                Outcome::Succeeded | Outcome::Skipped => Exit::Success,
                Outcome::Held => Exit::Held,
                _ => Exit::Failed,
            }
        }
    })
}

/// Clears the refused creates `which` names so this cycle sends them again, and says so.
async fn retry(pool: &sqlx::PgPool, target: &str, which: &RetryFailed) -> anyhow::Result<()> {
    let emails: Option<Vec<String>> = match which {
        RetryFailed::None => return Ok(()),
        RetryFailed::All => None,
        RetryFailed::These(emails) => Some(emails.iter().map(|e| e.as_str().to_owned()).collect()),
    };
    let cleared = ledger::clear_terminal_failures(pool, target, emails.as_deref())
        .await
        .context("the refused creates could not be cleared for a retry")?;
    println!(
        "retrying {} refused create{}{}",
        cleared.len(),
        if cleared.len() == 1 { "" } else { "s" },
        if cleared.is_empty() {
            String::new()
        } else {
            format!(": {}", cleared.join(", "))
        }
    );
    for email in emails.iter().flatten() {
        if !cleared.contains(email) {
            println!("  {email}: no refused create to retry");
        }
    }
    Ok(())
}
