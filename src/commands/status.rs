//! `invite-sync status`: the last runs, the backlog, the budget, held revocations, the lock holder.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::{human_duration, OutputFormat};
use crate::config::Settings;
use crate::reconcile::{self, CycleConfig};
use crate::store::{budget as budget_store, ledger, lock, runs};

pub async fn run(settings: &Settings, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let pool = reconcile::connect(settings).await?;
    let status = collect(&pool, &CycleConfig::from_settings(settings)).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", render_text(&status)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The status as JSON: the same document `status --format json` prints.
pub async fn collect(pool: &sqlx::PgPool, config: &CycleConfig) -> anyhow::Result<Value> {
    let recent = runs::recent(pool, &config.target, 10).await?;
    let budget = reconcile::budget_now(pool, &config.target, config.budget).await?;
    let holder = lock::holder(pool, &config.target).await?;
    let now = crate::store::now(pool).await?;
    let clerk_blocks: Vec<Value> = budget_store::blocks(pool, &config.target)
        .await?
        .into_iter()
        .map(|block| {
            json!({
                "operation": block.endpoint,
                "blocked_until": block.blocked_until,
                "seconds_left": (block.blocked_until - now).num_seconds().max(0),
            })
        })
        .collect();
    let (unsettled, oldest) = ledger::unsettled(pool, &config.target).await?;
    let settle_after = chrono::Duration::from_std(config.settle_after).unwrap_or_default();
    let settles_at = oldest.map(|sent| sent + settle_after);
    let latest = recent
        .iter()
        .find(|r| r.outcome != "running" && r.outcome != "skipped");
    let last_success = recent
        .iter()
        .find(|r| r.outcome == "succeeded")
        .map(|r| r.finished_at);
    Ok(json!({
        "target": config.target,
        "lock_holder": holder,
        "budget": budget,
        "backlog": latest.map(|r| r.backlog).unwrap_or(0),
        "backlog_eta_seconds": latest.and_then(|r| r.backlog_eta_seconds).unwrap_or(0),
        "awaiting_user_check": latest
            .and_then(|r| r.counts.get("awaiting_user_check").and_then(Value::as_u64))
            .unwrap_or(0),
        "held_revocations": latest.map(|r| r.held_revocations).unwrap_or(0),
        "clerk_blocks": clerk_blocks,
        "unsettled": {
            "creates": unsettled,
            "settles_at": settles_at,
            "settles_in_seconds": settles_at.map(|at| (at - now).num_seconds().max(0)),
        },
        "last_success_at": last_success.flatten(),
        "runs": recent,
    }))
}

pub fn render_text(status: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let get = |key: &str| status.get(key).cloned().unwrap_or(Value::Null);
    let _ = writeln!(out, "Target {}", get("target").as_str().unwrap_or(""));
    match get("lock_holder") {
        Value::Null => {
            let _ = writeln!(out, "Lock: free (no cycle running)");
        }
        holder => {
            let _ = writeln!(out, "Lock: held by {}", describe_holder(&holder));
        }
    }
    let budget = get("budget");
    let _ = writeln!(
        out,
        "Budget left this window: {} bulk calls, {} single calls",
        budget["bulk"]["left"], budget["single"]["left"]
    );
    let _ = writeln!(
        out,
        "Backlog: {} ({} awaiting a user check; ETA {} for those known to be invitable)",
        get("backlog"),
        get("awaiting_user_check"),
        human_duration(get("backlog_eta_seconds").as_u64().unwrap_or(0))
    );
    let held = get("held_revocations").as_i64().unwrap_or(0);
    if held > 0 {
        let _ = writeln!(
            out,
            "HELD REVOCATIONS: {held}. Review `invite-sync plan`, release with `invite-sync sync --allow-revocations {held}`"
        );
    } else {
        let _ = writeln!(out, "Held revocations: 0");
    }
    let blocks = get("clerk_blocks");
    let blocks = blocks.as_array().map(Vec::as_slice).unwrap_or_default();
    if blocks.is_empty() {
        let _ = writeln!(out, "Clerk blocks: none");
    }
    for block in blocks {
        let _ = writeln!(
            out,
            "CLERK BLOCKS {} (rate limited) until {} (in {})",
            block["operation"].as_str().unwrap_or(""),
            block["blocked_until"].as_str().unwrap_or(""),
            human_duration(block["seconds_left"].as_u64().unwrap_or(0))
        );
    }
    let unsettled = get("unsettled");
    match unsettled["creates"].as_u64().unwrap_or(0) {
        0 => {
            let _ = writeln!(out, "Unsettled creates: 0");
        }
        creates => {
            let _ = writeln!(
                out,
                "UNSETTLED CREATES: {creates} (outcome unknown; these people may have no invitation yet). Looked up from {} (in {})",
                unsettled["settles_at"].as_str().unwrap_or(""),
                human_duration(unsettled["settles_in_seconds"].as_u64().unwrap_or(0))
            );
        }
    }
    let _ = writeln!(out, "\nLast runs:");
    for run in get("runs").as_array().into_iter().flatten() {
        let counts = run["counts"].as_object().map(|c| {
            ["created", "revoked", "failed_items"]
                .iter()
                .map(|k| format!("{k}={}", c.get(*k).cloned().unwrap_or(json!(0))))
                .collect::<Vec<_>>()
                .join(" ")
        });
        let _ = writeln!(
            out,
            "  {}  {:<11} {:<8} {}{}",
            run["started_at"].as_str().unwrap_or(""),
            run["outcome"].as_str().unwrap_or(""),
            run["trigger"].as_str().unwrap_or(""),
            counts.unwrap_or_default(),
            if run["dry_run"].as_bool() == Some(true) {
                " (dry run)"
            } else {
                ""
            }
        );
        if let Some(error) = run["error"].as_str().filter(|e| !e.is_empty()) {
            let _ = writeln!(out, "      error: {error}");
        }
    }
    out
}

/// The lock holder as `lock::Holder::describe` words it, from the status document.
fn describe_holder(holder: &Value) -> String {
    serde_json::from_value::<lock::Holder>(holder.clone())
        .map(|h| h.describe())
        .unwrap_or_else(|_| holder.to_string())
}
