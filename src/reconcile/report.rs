//! What a cycle reports: the drift log (one event per plan item), the guard's verdict, and
//! the cycle's `Report` with its run summary, gauges and log. The executor logs its actions.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::clerk::budget::{self, Budget};
use crate::clerk::Operation;
use crate::domain::{LedgerEntry, LedgerState};
use crate::reconcile::execute::{Stop, Tally};
use crate::reconcile::guard::{HoldReason, Verdict};
use crate::reconcile::plan::{Category, Item, Plan};
use crate::reconcile::redact::Reporter;
use crate::store::runs;

/// One event per item that is not in sync.
pub fn log_drift(reporter: Reporter, plan: &Plan, dry_run: bool) {
    for item in &plan.items {
        let category = item.category().as_str();
        let email = reporter.email(item.email());
        let invitation_id = item.invitation_id().unwrap_or("");
        match item {
            Item::InSync { .. } => {
                tracing::debug!(category, email, invitation_id, dry_run, "in sync")
            }
            Item::Invalid { reason, .. } => {
                tracing::warn!(category, email, reason = %reason, dry_run, "roster row is invalid")
            }
            Item::Failed {
                code,
                reason,
                retry_at,
                ..
            } => tracing::warn!(
                category,
                email,
                code = code.as_deref().unwrap_or(""),
                reason = reason.as_deref().unwrap_or(""),
                retry_at = retry_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "when the row changes".into()),
                dry_run,
                "an earlier create was refused"
            ),
            Item::Stale { differences, .. } | Item::Replace { differences, .. } => {
                tracing::info!(
                    category,
                    email,
                    invitation_id,
                    differences = differences.join(","),
                    dry_run,
                    "pending invitation differs from the roster"
                )
            }
            Item::Deferred { not_before, .. } => tracing::info!(
                category,
                email,
                not_before = %not_before.to_rfc3339(),
                dry_run,
                "not before its time"
            ),
            _ => tracing::info!(category, email, invitation_id, dry_run, "drift"),
        }
    }
}

/// One event per revocation the guard held, and per protected address it kept.
pub fn log_verdict(reporter: Reporter, verdict: &Verdict, dry_run: bool) {
    for held in &verdict.held {
        tracing::error!(
            category = "revoke",
            outcome = "held",
            email = reporter.email(held.email.as_str()),
            invitation_id = %held.invitation_id,
            reason = verdict.reason.map(HoldReason::describe).unwrap_or(""),
            dry_run,
            "revocation held by the guard; release with `invite-sync sync --allow-revocations N`"
        );
    }
    for protected in &verdict.protected {
        tracing::warn!(
            category = "revoke",
            outcome = "protected",
            email = reporter.email(protected.email.as_str()),
            invitation_id = %protected.invitation_id,
            dry_run,
            "protected address: never revoked"
        );
    }
}

/// What one cycle did, as the run record stores it.
#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: Uuid,
    pub desired_rows: usize,
    pub owned_pending: usize,
    pub outcome: runs::Outcome,
    pub dry_run: bool,
    pub counts: BTreeMap<&'static str, usize>,
    /// What the executor did: the creates, revocations and calls, the user checks, the
    /// backlog it left, and the errors.
    pub tally: Tally,
    pub held_revocations: usize,
    pub hold_reason: Option<HoldReason>,
    pub protected: usize,
    pub eta_seconds: u64,
    pub budget_left: Budget,
    /// When more budget frees up, if the backlog waits for it.
    pub next_budget_at: Option<DateTime<Utc>>,
    /// Creates whose outcome is unknown (those the ledger held and those sent this cycle),
    /// looked up once they settle.
    pub unsettled: Unsettled,
    /// What the membership pass did.
    pub memberships: crate::reconcile::memberships::MembershipReport,
}

/// Creates whose outcome is unknown (ledger rows left `sending` by a crash or a lost answer):
/// how many wait, and from when the first of them can be looked up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unsettled {
    pub creates: usize,
    pub settles_at: Option<DateTime<Utc>>,
}

impl Unsettled {
    /// The ledger's unsettled creates; each is looked up `settle_after` after it was sent.
    pub fn of(ledger: &[LedgerEntry], settle_after: Duration, now: DateTime<Utc>) -> Unsettled {
        let settle_after = chrono::Duration::from_std(settle_after).unwrap_or_default();
        let waiting = ledger.iter().filter(|e| e.state == LedgerState::Sending);
        Unsettled {
            creates: waiting.clone().count(),
            settles_at: waiting
                .map(|e| e.sent_at.map_or(now, |sent| sent + settle_after))
                .min(),
        }
    }

    /// These and `more` created now, whose outcome is unknown too.
    pub fn and_new(self, more: usize, settle_after: Duration, now: DateTime<Utc>) -> Unsettled {
        if more == 0 {
            return self;
        }
        let settles = now + chrono::Duration::from_std(settle_after).unwrap_or_default();
        Unsettled {
            creates: self.creates + more,
            settles_at: Some(self.settles_at.map_or(settles, |at| at.min(settles))),
        }
    }
}

/// What the steps of a cycle leave for its report.
#[derive(Default)]
pub(super) struct Done {
    pub(super) desired_rows: usize,
    pub(super) owned_pending: usize,
    pub(super) counts: BTreeMap<&'static str, usize>,
    pub(super) held: usize,
    pub(super) hold_reason: Option<HoldReason>,
    pub(super) protected: usize,
    pub(super) budget: Budget,
    /// The creates still unsettled when the cycle read the ledger (after settling).
    pub(super) unsettled: Unsettled,
    /// Whether the cycle read its state and made a plan: one stopped while settling did
    /// not, and its figures above are not the target's.
    pub(super) planned: bool,
    pub(super) stop: Option<Stop>,
}

impl Done {
    /// What a plan and its verdict say, before anything is sent.
    pub(super) fn planned(
        plan: &Plan,
        verdict: &Verdict,
        desired_rows: usize,
        owned_pending: usize,
        budget: Budget,
        unsettled: Unsettled,
    ) -> Done {
        Done {
            desired_rows,
            owned_pending,
            counts: plan
                .counts()
                .into_iter()
                .map(|(c, n)| (c.as_str(), n))
                .collect(),
            held: verdict.held.len(),
            hold_reason: verdict.reason.filter(|_| !verdict.held.is_empty()),
            protected: verdict.protected.len(),
            budget,
            unsettled,
            planned: true,
            stop: None,
        }
    }

    /// A cycle stopped before it made its plan: it knows none of the target's figures.
    pub(super) fn stopped(stop: Stop) -> Done {
        Done {
            stop: Some(stop),
            ..Done::default()
        }
    }

    /// The report of a cycle that ran: what it planned, and what `tally` says the executor
    /// did by `now`.
    pub(super) fn report(
        &self,
        run_id: Uuid,
        dry_run: bool,
        tally: Tally,
        limits: &budget::Limits,
        settle_after: Duration,
        now: DateTime<Utc>,
    ) -> Report {
        let done = self;
        // Only people known to be invitable: those awaiting a user check may be users.
        let invitable = tally.backlog.saturating_sub(tally.awaiting_user_check);
        let eta = done.budget.eta(invitable as u64, limits, now);
        Report {
            run_id,
            desired_rows: done.desired_rows,
            owned_pending: done.owned_pending,
            outcome: runs::Outcome::Succeeded,
            dry_run,
            counts: done.counts.clone(),
            held_revocations: done.held,
            hold_reason: done.hold_reason,
            protected: done.protected,
            eta_seconds: eta.as_secs(),
            budget_left: done.budget,
            next_budget_at: (tally.backlog > 0).then(|| done.budget.next_slot_at(now)),
            unsettled: done.unsettled.and_new(tally.unsettled, settle_after, now),
            memberships: Default::default(),
            tally,
        }
    }
}

/// How a cycle that ran ended: stopped, holding revocations, with failures or doubts, or
/// with everything done.
pub(super) fn outcome_of(stop: Option<&Stop>, report: &Report) -> runs::Outcome {
    match stop {
        Some(Stop::Shutdown) => runs::Outcome::Interrupted,
        Some(_) => runs::Outcome::Failed,
        None if report.held_revocations > 0 || report.memberships.held > 0 => runs::Outcome::Held,
        None if report.tally.failed > 0
            || !report.tally.errors.is_empty()
            || report.unsettled.creates > 0
            || report.memberships.troubled() =>
        {
            runs::Outcome::Partial
        }
        None => runs::Outcome::Succeeded,
    }
}

/// What the run record keeps of a cycle.
pub(super) fn summary_of(report: &Report, stop: Option<&Stop>) -> runs::Summary {
    let mut counts = json!(report.counts);
    if let Some(map) = counts.as_object_mut() {
        for (key, value) in [
            ("created", report.tally.created),
            ("revoked", report.tally.revoked),
            ("adopted", report.tally.adopted),
            ("failed_items", report.tally.failed),
            ("bulk_calls", report.tally.bulk_calls),
            ("single_calls", report.tally.single_calls),
            ("awaiting_user_check", report.tally.awaiting_user_check),
            ("user_checks", report.tally.user_checks),
            ("user_check_calls", report.tally.user_check_calls),
            ("users_found", report.tally.users_found),
            ("unsettled_creates", report.unsettled.creates),
        ] {
            map.insert(key.to_owned(), json!(value));
        }
        if let Some(memberships) =
            crate::reconcile::memberships::overview::record(&report.memberships)
        {
            map.insert("memberships".to_owned(), memberships);
        }
    }
    let mut errors = report.tally.errors.clone();
    if let Some(stop) = stop {
        errors.push(stop.to_string());
    }
    runs::Summary {
        counts,
        held_revocations: report.held_revocations as i32,
        errors: errors.len() as i32,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        budget_left: json!({
            "create_bulk_invitations": report.budget_left.bulk.left,
            "create_invitation": report.budget_left.single.left,
        }),
        backlog: report.tally.backlog as i32,
        backlog_eta_seconds: Some(report.eta_seconds as i64),
    }
}

/// Counts a cycle that ended as `outcome`.
pub(super) fn count_cycle(outcome: runs::Outcome) {
    crate::metrics::metrics()
        .cycles
        .get_or_create(&crate::metrics::OutcomeLabel {
            outcome: outcome.as_str().to_owned(),
        })
        .inc();
}

/// Sets the gauges from the report of a cycle that planned, finished at `now`.
pub(super) fn record_gauges(report: &Report, now: DateTime<Utc>) {
    use crate::metrics::{CategoryLabel, EndpointLabel, Metrics};
    let metrics = crate::metrics::metrics();
    for category in Category::ALL {
        let count = report.counts.get(category.as_str()).copied().unwrap_or(0);
        Metrics::gauge(
            &metrics.drift.get_or_create(&CategoryLabel {
                category: category.as_str().to_owned(),
            }),
            count,
        );
    }
    Metrics::gauge(&metrics.desired, report.desired_rows);
    Metrics::gauge(&metrics.owned_pending, report.owned_pending);
    Metrics::gauge(&metrics.backlog, report.tally.backlog);
    Metrics::gauge(
        &metrics.awaiting_user_check,
        report.tally.awaiting_user_check,
    );
    Metrics::gauge(&metrics.backlog_eta, report.eta_seconds as usize);
    Metrics::gauge(&metrics.held_revocations, report.held_revocations);
    Metrics::gauge(&metrics.unsettled_creates, report.unsettled.creates);
    metrics.unsettled_settle_at.set(
        report
            .unsettled
            .settles_at
            .map_or(0.0, |at| at.timestamp_millis() as f64 / 1000.0),
    );
    for (operation, endpoint) in [
        (Operation::CreateBulkInvitations, &report.budget_left.bulk),
        (Operation::CreateInvitation, &report.budget_left.single),
    ] {
        if let Some(until) = endpoint.blocked_until {
            metrics.clerk_blocked(operation.as_str(), until);
        }
    }
    for (endpoint, left) in [
        (
            Operation::CreateBulkInvitations,
            report.budget_left.bulk.left,
        ),
        (Operation::CreateInvitation, report.budget_left.single.left),
    ] {
        Metrics::gauge(
            &metrics.budget_left.get_or_create(&EndpointLabel {
                endpoint: endpoint.as_str().to_owned(),
            }),
            left as usize,
        );
    }
    if !report.dry_run
        && matches!(
            report.outcome,
            runs::Outcome::Succeeded | runs::Outcome::Held | runs::Outcome::Partial
        )
        && report.tally.errors.is_empty()
    {
        metrics
            .last_success
            .set(now.timestamp_millis() as f64 / 1000.0);
    }
}

/// The cycle's closing log lines.
pub(super) fn log_summary(report: &Report) {
    let counts = serde_json::to_string(&report.counts).unwrap_or_default();
    tracing::info!(
        run_id = %report.run_id,
        outcome = report.outcome.as_str(),
        dry_run = report.dry_run,
        counts = %counts,
        created = report.tally.created,
        revoked = report.tally.revoked,
        held_revocations = report.held_revocations,
        failed = report.tally.failed,
        backlog = report.tally.backlog,
        eta_seconds = report.eta_seconds,
        unsettled_creates = report.unsettled.creates,
        unsettled_settle_at = ?report.unsettled.settles_at.map(|at| at.to_rfc3339()),
        "cycle finished"
    );
    if let Some(at) = report.unsettled.settles_at {
        tracing::warn!(
            run_id = %report.run_id,
            unsettled_creates = report.unsettled.creates,
            settle_at = %at.to_rfc3339(),
            "creates whose outcome is unknown wait for clerk.settle_after_seconds before they are looked up; these people may have no invitation yet"
        );
    }
    if report.held_revocations > 0 {
        tracing::error!(
            run_id = %report.run_id,
            held_revocations = report.held_revocations,
            reason = report.hold_reason.map(HoldReason::describe).unwrap_or(""),
            "revocations held; review `invite-sync plan`, release with `invite-sync sync --allow-revocations N`"
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, minute, 0)
            .single()
            .unwrap_or_default()
    }

    fn report_at(now: DateTime<Utc>, tally: Tally) -> Report {
        let done = Done {
            planned: true,
            ..Done::default()
        };
        done.report(
            Uuid::nil(),
            false,
            tally,
            &budget::Limits::default(),
            Duration::from_secs(60),
            now,
        )
    }

    #[test]
    fn a_report_takes_its_times_from_the_instant_it_is_given() {
        let tally = Tally {
            backlog: 3,
            unsettled: 2,
            ..Tally::default()
        };
        let report = report_at(at(0), tally);
        assert_eq!(report.next_budget_at, Some(at(0)));
        assert_eq!(
            report.unsettled,
            Unsettled {
                creates: 2,
                settles_at: Some(at(1)),
            }
        );
        let later = report_at(at(10), report.tally.clone());
        assert_eq!(later.unsettled.settles_at, Some(at(11)));
        assert_eq!(report_at(at(0), Tally::default()).next_budget_at, None);
    }

    #[test]
    fn a_cycle_ends_interrupted_failed_held_partial_or_succeeded_in_that_order() {
        let done = report_at(at(0), Tally::default());
        assert_eq!(outcome_of(None, &done), runs::Outcome::Succeeded);
        let doubtful = Report {
            unsettled: Unsettled {
                creates: 1,
                settles_at: None,
            },
            ..done.clone()
        };
        assert_eq!(outcome_of(None, &doubtful), runs::Outcome::Partial);
        let held = Report {
            held_revocations: 1,
            ..doubtful
        };
        assert_eq!(outcome_of(None, &held), runs::Outcome::Held);
        let failed = Stop::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(outcome_of(Some(&failed), &held), runs::Outcome::Failed);
        assert_eq!(
            outcome_of(Some(&Stop::Shutdown), &held),
            runs::Outcome::Interrupted
        );
    }
}
