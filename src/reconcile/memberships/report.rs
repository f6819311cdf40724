//! What a cycle's membership pass reports: what its plan found, what the guard held, and
//! what it sent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::guard::{HoldReason, Verdict};
use super::plan::{Item, Plan};
use crate::reconcile::redact::Reporter;

/// What one membership pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MembershipReport {
    /// Membership roster rows, valid or not.
    pub rows: usize,
    /// Organizations looked at: those the roster names and those the ledger holds.
    pub organizations: usize,
    /// The plan's items by category (`invite`, `add_member`, `change_role`, …).
    pub counts: BTreeMap<&'static str, usize>,
    /// Of the waiting items, by reason (`full`, `not_before`, …).
    pub waiting: BTreeMap<&'static str, usize>,
    pub invited: usize,
    pub members_added: usize,
    /// Roles set back to the roster's (drift: a role changed in Clerk).
    pub roles_changed: usize,
    pub revoked: usize,
    pub removed: usize,
    /// Creates of unknown outcome that a lookup found Clerk had made.
    pub adopted: usize,
    pub failed: usize,
    /// Creates whose outcome is unknown: settled by a lookup in a later cycle.
    pub unsettled: usize,
    pub bulk_calls: usize,
    pub single_calls: usize,
    /// Addresses looked up in Clerk's users, and of them the users found.
    pub user_checks: usize,
    pub users_found: usize,
    /// Memberships invite-sync made that were deleted in Clerk (made again while their row
    /// stays).
    pub memberships_gone: usize,
    pub held: usize,
    pub hold_reason: Option<HoldReason>,
    /// The organizations held because their roster emptied.
    pub emptied: Vec<String>,
    pub protected: usize,
    /// Invitations left for a later cycle: the budget, or a stop, ended this one first.
    pub backlog: usize,
    /// When the organization budget next frees a slot, while a backlog waits for it.
    pub next_budget_at: Option<DateTime<Utc>>,
    /// When creates of unknown outcome can be looked up, while some wait.
    pub settles_at: Option<DateTime<Utc>>,
    pub errors: Vec<String>,
    /// Why the pass stopped before its work was done.
    pub stopped: Option<String>,
}

impl MembershipReport {
    /// What the plan and the guard say, before anything is sent.
    pub(super) fn planned(&mut self, plan: &Plan, verdict: &Verdict) {
        self.counts = plan
            .counts()
            .into_iter()
            .map(|(category, n)| (category.as_str(), n))
            .collect();
        self.waiting = plan.waiting();
        self.held = verdict.held.len();
        self.hold_reason = verdict.reason.filter(|_| !verdict.held.is_empty());
        self.emptied = verdict.emptied.clone();
        self.protected = verdict.protected.len();
    }

    /// How long until a cycle has membership work it can do unasked: budget freeing for a
    /// backlog (a short pause when no time is known, so a failing Clerk is not called in a
    /// tight loop), or unsettled creates due for their lookup (half a minute when they are
    /// due already: their lookup failed). `None` when nothing waits.
    pub fn wake_in(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        const PAUSE: std::time::Duration = std::time::Duration::from_secs(5);
        let until = |at: DateTime<Utc>| (at - now).to_std().ok();
        let backlog =
            (self.backlog > 0).then(|| self.next_budget_at.and_then(until).unwrap_or(PAUSE));
        // One due already (its lookup failed) waits half a minute, as instance creates do.
        let settle = self.settles_at.map(|at| match until(at) {
            Some(wait) if at > now => wait + std::time::Duration::from_secs(1),
            _ => std::time::Duration::from_secs(30),
        });
        backlog.into_iter().chain(settle).min()
    }

    /// Whether the pass left something for an operator or a later cycle to look at.
    pub fn troubled(&self) -> bool {
        self.failed > 0 || self.unsettled > 0 || !self.errors.is_empty() || self.stopped.is_some()
    }
}

/// One event per item that is not in sync.
pub(super) fn log_drift(reporter: Reporter, plan: &Plan, dry_run: bool) {
    for item in &plan.items {
        let category = item.category().as_str();
        let email = reporter.email(item.email());
        let organization = item.organization();
        match item {
            Item::InSync { .. } => {}
            Item::Invalid { reason, .. } => tracing::warn!(
                category,
                email,
                organization,
                reason = %reporter.scrub(reason),
                dry_run,
                "membership roster row is invalid"
            ),
            Item::Waiting { wait, .. } => tracing::info!(
                category,
                email,
                organization,
                reason = %wait.describe(),
                dry_run,
                "membership waits"
            ),
            Item::Reported { note, .. } => tracing::info!(
                category,
                email,
                organization,
                note = ?note,
                dry_run,
                "membership drift reported, left alone"
            ),
            Item::ChangeRole { from, to, .. } => tracing::info!(
                category,
                email,
                organization,
                from = %from,
                to = %to,
                dry_run,
                "membership role differs from the roster; set back"
            ),
            _ => tracing::info!(category, email, organization, dry_run, "membership drift"),
        }
    }
}

/// One event per removal the guard held.
pub(super) fn log_verdict(reporter: Reporter, verdict: &Verdict, dry_run: bool) {
    for held in &verdict.held {
        tracing::error!(
            category = "membership_removal",
            outcome = "held",
            email = reporter.email(held.email.as_str()),
            organization = %held.organization_id,
            reason = verdict.reason.map(HoldReason::describe).unwrap_or(""),
            dry_run,
            "membership removal held by the guard; release with `invite-sync sync --allow-revocations N`"
        );
    }
}

/// The pass's closing log line.
pub(super) fn log_summary(report: &MembershipReport) {
    if report.rows == 0 && report.organizations == 0 {
        return;
    }
    let counts = serde_json::to_string(&report.counts).unwrap_or_default();
    tracing::info!(
        rows = report.rows,
        organizations = report.organizations,
        counts = %counts,
        invited = report.invited,
        members_added = report.members_added,
        roles_changed = report.roles_changed,
        revoked = report.revoked,
        removed = report.removed,
        held = report.held,
        failed = report.failed,
        backlog = report.backlog,
        "membership pass finished"
    );
    if report.held > 0 {
        tracing::error!(
            held = report.held,
            reason = report.hold_reason.map(HoldReason::describe).unwrap_or(""),
            organizations = %report.emptied.join(","),
            "membership removals held; review them, release with `invite-sync sync --allow-revocations N`"
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, second)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn a_backlog_wakes_a_cycle_when_budget_frees_and_unsettled_creates_when_due() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(MembershipReport::default().wake_in(at(0)), None);
        let waiting = MembershipReport {
            backlog: 3,
            next_budget_at: Some(at(20)),
            ..MembershipReport::default()
        };
        assert_eq!(waiting.wake_in(at(0)), Some(secs(20)));
        let unknown = MembershipReport {
            next_budget_at: None,
            ..waiting.clone()
        };
        assert_eq!(
            unknown.wake_in(at(0)),
            Some(secs(5)),
            "a pause, not a tight loop"
        );
        let settling = MembershipReport {
            settles_at: Some(at(9)),
            ..waiting
        };
        assert_eq!(settling.wake_in(at(0)), Some(secs(10)));
        let due = MembershipReport {
            settles_at: Some(at(0)),
            ..MembershipReport::default()
        };
        assert_eq!(due.wake_in(at(0)), Some(secs(30)));
    }
}
