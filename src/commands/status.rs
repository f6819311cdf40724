//! `invite-sync status`: the last runs, the backlog, the budget, held revocations, the lock holder.

use chrono::{DateTime, SecondsFormat, Utc};

use super::plan::backlog_text;
use super::{human_duration, Exit, OutputFormat};
use crate::config::Settings;
use crate::reconcile::CycleConfig;
use crate::scim::groups_map::Mappings;
use crate::store::runs::RunRecord;
use crate::store::status::{self, MembershipStatus, OrganizationStatus, Status};

pub async fn run(settings: &Settings, format: OutputFormat) -> anyhow::Result<Exit> {
    let pool = crate::startup::connect(settings).await?;
    let config = CycleConfig::from_settings(settings);
    let mut status = collect(&pool, &config).await?;
    status.unmapped_scim_groups = crate::store::group_memberships::unmapped(
        &pool,
        &Mappings::new(settings.scim.groups.clone()),
        &config.target,
    )
    .await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", render_text(&status)),
    }
    Ok(Exit::Success)
}

/// The status of the configured target.
pub async fn collect(pool: &sqlx::PgPool, config: &CycleConfig) -> Result<Status, sqlx::Error> {
    status::collect(
        pool,
        &config.target,
        config.budget,
        config.settle_after,
        scope(config),
    )
    .await
}

/// Where the membership roster is and what its invitations may spend.
pub fn scope(config: &CycleConfig) -> status::MembershipScope<'_> {
    status::MembershipScope {
        relation: &config.memberships.relation,
        limits: config.memberships.limits,
    }
}

/// A time as the JSON status writes it.
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The outbound events' lines of the text status: one for the outbox, one per endpoint.
fn events_text(events: &crate::store::outbox::OutboxState) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let configured: Vec<_> = events.endpoints.iter().filter(|e| e.active).collect();
    if configured.is_empty() {
        let _ = writeln!(
            out,
            "Events: {} retained, no endpoint configured",
            events.events
        );
        return out;
    }
    let _ = writeln!(
        out,
        "Events: {} retained, {} deliveries pending, {} dead letters{}",
        events.events,
        events.pending,
        events.dead_letters,
        if events.dead_letters > 0 {
            " (invite-sync events replay sends them again)"
        } else {
            ""
        }
    );
    for endpoint in configured {
        let _ = write!(
            out,
            "  {}: {} delivered, {} pending, {} dead",
            endpoint.url, endpoint.delivered, endpoint.pending, endpoint.dead
        );
        if let Some(at) = endpoint.oldest_pending_at {
            let _ = write!(out, ", oldest pending since {}", time(at));
        }
        if let Some(error) = &endpoint.last_error {
            let _ = write!(out, ", last error: {error}");
        }
        out.push('\n');
    }
    out
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
    out.push_str(&events_text(&status.events));
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
    write_organizations(&mut out, &status.memberships);
    for line in crate::store::group_memberships::unmapped_text(&status.unmapped_scim_groups) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\nLast runs:");
    write_runs(&mut out, &status.runs);
    out
}

/// The membership roster's organizations: nothing when there is no membership roster and
/// invite-sync holds nothing in any organization.
fn write_organizations(out: &mut String, memberships: &MembershipStatus) {
    use std::fmt::Write;
    if memberships.rows == 0 && memberships.organizations.is_empty() && memberships.error.is_none()
    {
        return;
    }
    let _ = writeln!(
        out,
        "\nOrganizations ({}), {} membership roster rows:",
        memberships.organizations.len(),
        memberships.rows
    );
    if let Some(error) = &memberships.error {
        let _ = writeln!(out, "  MEMBERSHIP ROSTER UNREADABLE: {error}");
    }
    for organization in &memberships.organizations {
        let _ = writeln!(out, "  {}", organization_heading(organization));
        let _ = writeln!(
            out,
            "    rows {}: to send {}, invited {}, members {}, unsettled {}, refused {}, not before {}, invalid {}",
            organization.rows,
            organization.to_send,
            organization.invited,
            organization.members,
            organization.unsettled,
            organization.refused,
            organization.not_before,
            organization.invalid,
        );
        if !organization.waiting.is_empty() {
            let waiting: Vec<String> = organization
                .waiting
                .iter()
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect();
            let _ = writeln!(out, "    waiting: {}", waiting.join(" "));
        }
    }
    for row in &memberships.invalid {
        let _ = writeln!(
            out,
            "  invalid  {}  {}  ({})",
            row.email, row.organization, row.reason
        );
    }
    if memberships.invalid_rows > memberships.invalid.len() as u64 {
        let _ = writeln!(
            out,
            "  ... {} more invalid rows",
            memberships.invalid_rows - memberships.invalid.len() as u64
        );
    }
    let budget = &memberships.budget;
    let _ = writeln!(
        out,
        "Organization budget left this window: {} bulk calls, {} single calls",
        budget.bulk.left, budget.single.left
    );
    let _ = writeln!(
        out,
        "{}",
        membership_backlog_text(memberships.backlog, memberships.backlog_eta_seconds)
    );
    let held = memberships.held_removals;
    if held > 0 {
        let _ = writeln!(
            out,
            "HELD MEMBERSHIP REMOVALS: {held} ({}{}). Review `invite-sync plan`, release with `invite-sync sync --allow-revocations {held}`",
            memberships.held_reason.as_deref().unwrap_or("held by the guard"),
            if memberships.emptied.is_empty() {
                String::new()
            } else {
                format!("; emptied: {}", memberships.emptied.join(", "))
            }
        );
    } else {
        let _ = writeln!(out, "Held membership removals: 0");
    }
}

/// An organization's heading line: its slug, id, name and room.
pub fn organization_heading(organization: &OrganizationStatus) -> String {
    let mut heading = match (&organization.slug, organization.resolved) {
        (Some(slug), true) => format!("{slug} ({})", organization.organization),
        (_, true) => organization.organization.clone(),
        (_, false) => format!(
            "{} (not found in Clerk by a cycle)",
            organization.organization
        ),
    };
    if let Some(name) = organization.name.as_deref().filter(|n| !n.is_empty()) {
        heading.push_str(&format!(" \"{name}\""));
    }
    match (organization.max_allowed_memberships, organization.room) {
        _ if organization.full => heading.push_str(" FULL"),
        (Some(max), Some(room)) if max > 0 => {
            heading.push_str(&format!(" room {room} of {max}"));
        }
        (Some(_), _) => heading.push_str(" unlimited"),
        _ => {}
    }
    heading
}

/// The membership backlog line: the invitations left and when the organization budget
/// carries them.
pub fn membership_backlog_text(backlog: u64, eta_seconds: u64) -> String {
    match backlog {
        0 => "Membership backlog 0: no organization invitation waits for budget.".to_owned(),
        n if eta_seconds == 0 => {
            format!("Membership backlog {n}, all within the organization budget left this window.")
        }
        n => format!(
            "Membership backlog {n}, ETA {} at the organization budget's pace.",
            human_duration(eta_seconds)
        ),
    }
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
