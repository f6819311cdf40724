//! `invite-sync sync`: one cycle, and an exit code that says how it went.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::reconcile::{self, CycleResult, Request};
use crate::store::runs::Outcome;

/// Exit code when the guard held revocations.
pub const EXIT_HELD: u8 = 3;

pub async fn run(
    settings: &Settings,
    dry_run: bool,
    allow_revocations: usize,
    full: bool,
) -> anyhow::Result<ExitCode> {
    let reconciler = reconcile::from_settings(settings).await?;
    super::migrate_if_configured(&reconciler.pool, settings).await?;
    let shutdown = CancellationToken::new();
    crate::service::cancel_on_signal(shutdown.clone());
    let request = Request {
        trigger: "sync".to_owned(),
        dry_run: dry_run.then_some(true),
        allow_revocations,
        run_id: None,
        full,
    };
    let result = reconciler.run_cycle(&request, &shutdown).await?;
    Ok(match result {
        CycleResult::Skipped { holder } => {
            let who = holder
                .map(|h| {
                    format!(
                        " (pid {} on {})",
                        h.pid,
                        h.client_addr.unwrap_or_else(|| "local socket".into())
                    )
                })
                .unwrap_or_default();
            println!("skipped: another invite-sync holds the lock for this target{who}");
            ExitCode::SUCCESS
        }
        CycleResult::Ran(report) => {
            println!(
                "{}: {} created, {} revoked, {} held, {} failed, backlog {} (ETA {}){}",
                report.outcome.as_str(),
                report.created,
                report.revoked,
                report.held_revocations,
                report.failed,
                report.backlog,
                super::human_duration(report.eta_seconds),
                if report.dry_run {
                    " [dry run: nothing sent]"
                } else {
                    ""
                }
            );
            for error in &report.errors {
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
                Outcome::Succeeded | Outcome::Skipped => ExitCode::SUCCESS,
                Outcome::Held => ExitCode::from(EXIT_HELD),
                _ => ExitCode::from(crate::cli::EXIT_FAILED),
            }
        }
    })
}
