//! `invite-sync status`: the last runs, the backlog, the budget, held revocations, the lock holder.

use chrono::{DateTime, SecondsFormat, Utc};

use super::plan::backlog_text;
use super::{human_duration, Exit, OutputFormat};
use crate::config::Settings;
use crate::reconcile::CycleConfig;
use crate::store::runs::RunRecord;
use crate::store::status::{self, Status};

pub async fn run(settings: &Settings, format: OutputFormat) -> anyhow::Result<Exit> {
    let pool = crate::startup::connect(settings).await?;
    let status = collect(&pool, &CycleConfig::from_settings(settings)).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", render_text(&status)),
    }
    Ok(Exit::Success)
}

/// The status of the configured target.
pub async fn collect(pool: &sqlx::PgPool, config: &CycleConfig) -> Result<Status, sqlx::Error> {
    status::collect(pool, &config.target, config.budget, config.settle_after).await
}

/// A time as the JSON status writes it.
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn render_text(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Target {}", status.target);
    match &status.lock_holder {
        None => {
            let _ = writeln!(out, "Lock: free (no cycle running)");
        }
        Some(holder) => {
            let _ = writeln!(out, "Lock: held by {}", holder.describe());
        }
    }
    let _ = writeln!(
        out,
        "Budget left this window: {} bulk calls, {} single calls",
        status.budget.bulk.left, status.budget.single.left
    );
    let _ = writeln!(
        out,
        "{}",
        backlog_text(
            usize::try_from(status.backlog).unwrap_or(0),
            usize::try_from(status.awaiting_user_check).unwrap_or(0),
            u64::try_from(status.backlog_eta_seconds).unwrap_or(0),
        )
    );
    let held = status.held_revocations;
    if held > 0 {
        let _ = writeln!(
            out,
            "HELD REVOCATIONS: {held}. Review `invite-sync plan`, release with `invite-sync sync --allow-revocations {held}`"
        );
    } else {
        let _ = writeln!(out, "Held revocations: 0");
    }
    if status.clerk_blocks.is_empty() {
        let _ = writeln!(out, "Clerk blocks: none");
    }
    for block in &status.clerk_blocks {
        let _ = writeln!(
            out,
            "CLERK BLOCKS {} (rate limited) until {} (in {})",
            block.operation,
            time(block.blocked_until),
            human_duration(u64::try_from(block.seconds_left).unwrap_or(0))
        );
    }
    let unsettled = &status.unsettled;
    match unsettled.creates {
        0 => {
            let _ = writeln!(out, "Unsettled creates: 0");
        }
        creates => {
            let _ = writeln!(
                out,
                "UNSETTLED CREATES: {creates} (outcome unknown; these people may have no invitation yet). Looked up from {} (in {})",
                unsettled.settles_at.map(time).unwrap_or_default(),
                human_duration(
                    unsettled
                        .settles_in_seconds
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0)
                )
            );
        }
    }
    let _ = writeln!(out, "\nLast runs:");
    write_runs(&mut out, &status.runs);
    out
}

/// The runs, one a line, each with its error if it failed.
fn write_runs(out: &mut String, runs: &[RunRecord]) {
    use std::fmt::Write;
    for run in runs {
        let counts = run.counts.as_object().map(|c| {
            ["created", "revoked", "failed_items"]
                .iter()
                .map(|k| format!("{k}={}", c.get(*k).cloned().unwrap_or(0.into())))
                .collect::<Vec<_>>()
                .join(" ")
        });
        let _ = writeln!(
            out,
            "  {}  {:<11} {:<8} {}{}",
            time(run.started_at),
            run.outcome,
            run.trigger,
            counts.unwrap_or_default(),
            if run.dry_run { " (dry run)" } else { "" }
        );
        if let Some(error) = run.error.as_deref().filter(|e| !e.is_empty()) {
            let _ = writeln!(out, "      error: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn times_are_written_as_the_json_status_writes_them() {
        let whole = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 5).single();
        let times = whole.into_iter().flat_map(|t| {
            [0, 120_000_000, 123_456_000, 123_456_789].map(|n| t + chrono::Duration::nanoseconds(n))
        });
        for at in times {
            let json = serde_json::to_value(at).unwrap_or_default();
            assert_eq!(json.as_str(), Some(time(at).as_str()));
        }
    }
}
