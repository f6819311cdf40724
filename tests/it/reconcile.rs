//! Reconcile cycles against real Postgres and the simulator over a socket.

use std::collections::BTreeMap;
use std::time::Duration;

use invite_sync::clerk::sim::{Fault, FaultKind, Operation as SimOp, SimOptions, SimStats};
use invite_sync::clerk::{Invitation, InvitationStatus};
use invite_sync::domain::{Email, LedgerEntry, LedgerState};
use invite_sync::reconcile::guard::HoldReason;
use invite_sync::reconcile::{CycleResult, Report, Request};
use invite_sync::service::Step;
use invite_sync::store::lock::LeaderLock;
use invite_sync::store::runs::{self, Outcome, RunRecord};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{
    assert_one_pending_each, capture_logs, count, free_port, people, refs, runs, wait_for, writes,
    Harness, Proc,
};

const TARGET: &str = "default";

async fn ledger(h: &Harness) -> Vec<LedgerEntry> {
    invite_sync::store::ledger::load(&h.db.pool, TARGET)
        .await
        .expect("the ledger loads")
}

/// The ledger's rows for one address.
async fn ledger_of(h: &Harness, email: &str) -> Vec<LedgerEntry> {
    ledger(h)
        .await
        .into_iter()
        .filter(|e| e.email.as_str() == email)
        .collect()
}

async fn run_of(h: &Harness, report: &Report) -> RunRecord {
    runs(h)
        .await
        .into_iter()
        .find(|r| r.id == report.run_id)
        .expect("the cycle recorded its run")
}

/// Every invitation the simulator holds for an address, in creation order.
fn invitations_of(h: &Harness, email: &str) -> Vec<Invitation> {
    h.sim
        .invitations()
        .into_iter()
        .filter(|i| i.email_address.eq_ignore_ascii_case(email))
        .collect()
}

fn pending_of(h: &Harness, email: &str) -> Vec<Invitation> {
    invitations_of(h, email)
        .into_iter()
        .filter(|i| i.status == InvitationStatus::Pending)
        .collect()
}

/// Creates an invitation the way someone working in Clerk's dashboard would: not through
/// invite-sync.
async fn create_in_clerk(h: &Harness, email: &str) -> Invitation {
    let response = reqwest::Client::new()
        .post(format!("{}/invitations", h.sim.base_url()))
        .bearer_auth(h.sim.secret_key())
        .json(&json!({ "email_address": email }))
        .send()
        .await
        .expect("the simulator answers");
    assert_eq!(response.status(), 200, "the invitation is created");
    response.json().await.expect("an invitation comes back")
}

async fn revoke_in_clerk(h: &Harness, invitation_id: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/invitations/{invitation_id}/revoke",
            h.sim.base_url()
        ))
        .bearer_auth(h.sim.secret_key())
        .send()
        .await
        .expect("the simulator answers");
    assert_eq!(response.status(), 200, "the invitation is revoked");
}

/// Many roster rows in one statement, one second apart in age, oldest first as listed.
async fn add_many(h: &Harness, emails: &[String]) {
    sqlx::query(
        "INSERT INTO desired_invitees (email, created_at)
         SELECT email, now() - make_interval(secs => count - ord)
         FROM unnest($1::text[]) WITH ORDINALITY AS t(email, ord),
              (SELECT cardinality($1::text[]) AS count) AS c",
    )
    .bind(emails)
    .execute(&h.db.pool)
    .await
    .expect("roster rows inserted");
}

async fn set_metadata(h: &Harness, email: &str, metadata: Value) {
    let updated = sqlx::query("UPDATE desired_invitees SET public_metadata = $2 WHERE email = $1")
        .bind(email)
        .bind(metadata)
        .execute(&h.db.pool)
        .await
        .expect("the roster row is updated");
    assert_eq!(updated.rows_affected(), 1);
}

fn short_hour(seconds: u64) -> SimOptions {
    SimOptions {
        hour: Duration::from_secs(seconds),
        ..SimOptions::default()
    }
}

fn dry(trigger: &str) -> Request {
    Request {
        dry_run: Some(true),
        ..Request::new(trigger)
    }
}

#[tokio::test]
async fn a_cold_start_of_60_people_takes_exactly_6_bulk_calls() {
    let h = Harness::new().await;
    let emails = people("cold", 60);
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    h.add_people(&refs).await;

    let report = h.cycle().await;

    assert_eq!(report.tally.created, 60);
    let stats = h.sim.stats();
    assert_eq!(stats.total(SimOp::CreateBulkInvitations), 6);
    assert_eq!(stats.total(SimOp::CreateInvitation), 0);
    let pending = h.pending();
    assert_eq!(pending.len(), 60);
    let mut invited: Vec<String> = pending.iter().map(|i| i.email_address.clone()).collect();
    invited.sort();
    assert_eq!(invited, emails, "one pending invitation each");

    let again = h.cycle().await;
    assert_eq!((again.tally.created, again.tally.revoked), (0, 0));
    let stats = h.sim.stats();
    assert_eq!(
        stats.total(SimOp::CreateBulkInvitations),
        6,
        "no create on the second cycle"
    );
    assert_eq!(stats.total(SimOp::RevokeInvitation), 0);
}

#[tokio::test]
async fn a_person_removed_from_the_roster_is_revoked_and_a_foreign_invitation_is_left_alone() {
    let h = Harness::new().await;
    let emails = people("staff", 6);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let leaver = emails[2].as_str();
    let leavers_invitation = pending_of(&h, leaver).remove(0);
    let foreign = create_in_clerk(&h, "outsider@partner.example").await;

    h.remove_people(&[leaver]).await;
    let report = h.cycle().await;

    assert_eq!(report.tally.revoked, 1);
    assert_eq!(count(&report, "revoke"), 1);
    assert_eq!(count(&report, "foreign"), 1);
    assert_eq!(report.outcome, Outcome::Succeeded);
    let stats = h.sim.stats();
    assert_eq!(stats.total(SimOp::RevokeInvitation), 1);
    let leavers = invitations_of(&h, leaver);
    assert_eq!(leavers.len(), 1);
    assert_eq!(leavers[0].id, leavers_invitation.id);
    assert_eq!(leavers[0].status, InvitationStatus::Revoked);
    let outsider = invitations_of(&h, "outsider@partner.example");
    assert_eq!(outsider.len(), 1);
    assert_eq!(outsider[0].id, foreign.id);
    assert_eq!(
        outsider[0].status,
        InvitationStatus::Pending,
        "never revoked"
    );
    let recorded = ledger_of(&h, leaver).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, LedgerState::Revoked);
    assert!(recorded[0].revoked_by_us);

    let again = h.cycle().await;
    assert_eq!(again.tally.revoked, 0);
    assert_eq!(count(&again, "foreign"), 1, "still reported");
    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 1);
    let mut rest: Vec<String> = emails.iter().filter(|e| *e != leaver).cloned().collect();
    rest.push("outsider@partner.example".to_owned());
    assert_one_pending_each(&h, &rest);
}

#[tokio::test]
async fn an_expired_invitation_is_replaced_by_a_new_one() {
    let h = Harness::new().await;
    let emails = people("exp", 3);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let person = emails[1].as_str();
    let old = pending_of(&h, person).remove(0);
    assert!(h.sim.expire(&old.id));
    let before = h.sim.stats();

    let report = h.cycle().await;

    assert_eq!(count(&report, "reinvite"), 1);
    assert_eq!(count(&report, "create"), 0);
    assert_eq!(report.tally.created, 1);
    let theirs = invitations_of(&h, person);
    assert_eq!(theirs.len(), 2);
    assert_eq!(theirs[0].id, old.id);
    assert_eq!(theirs[0].status, InvitationStatus::Expired);
    assert_eq!(theirs[1].status, InvitationStatus::Pending);
    let after = h.sim.stats();
    assert_eq!(
        writes(&after)[0] + writes(&after)[1],
        writes(&before)[0] + writes(&before)[1] + 1,
        "one create call for one person"
    );
    let states: Vec<(Option<String>, LedgerState)> = ledger_of(&h, person)
        .await
        .into_iter()
        .map(|e| (e.clerk_invitation_id, e.state))
        .collect();
    assert_eq!(
        states,
        [
            (Some(old.id.clone()), LedgerState::Expired),
            (Some(theirs[1].id.clone()), LedgerState::Pending)
        ]
    );

    let again = h.cycle().await;
    assert_eq!((count(&again, "reinvite"), again.tally.created), (0, 0));
    assert_one_pending_each(&h, &emails);
}

#[tokio::test]
async fn an_accepted_invitation_is_never_touched_again() {
    let h = Harness::new().await;
    let emails = people("acc", 6);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let person = emails[0].as_str();
    let invitation = pending_of(&h, person).remove(0);
    assert!(h.sim.accept(&invitation.id));

    let seen = h.cycle().await;
    assert_eq!(count(&seen, "accepted"), 1);
    assert_eq!(ledger_of(&h, person).await[0].state, LedgerState::Accepted);

    h.remove_people(&[person]).await;
    let before = writes(&h.sim.stats());
    let removed = h.cycle().await;
    assert_eq!((removed.tally.created, removed.tally.revoked), (0, 0));
    assert_eq!(count(&removed, "revoke"), 0);

    h.add_people(&[person]).await;
    let back = h.cycle().await;
    assert_eq!((back.tally.created, back.tally.revoked), (0, 0));
    assert_eq!(count(&back, "accepted"), 1);
    h.cycle().await;

    assert_eq!(writes(&h.sim.stats()), before, "no create and no revoke");
    let theirs = invitations_of(&h, person);
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].status, InvitationStatus::Accepted);
}

#[tokio::test]
async fn an_existing_user_is_found_by_a_lookup_and_no_create_is_spent_on_them() {
    let h = Harness::new().await;
    let emails = people("new", 10);
    let user = emails[3].as_str();
    h.sim.seed_users(&[user]);
    h.add_people(&refs(&emails)).await;

    let report = h.cycle().await;

    assert_eq!(report.tally.created, 9);
    assert_eq!(
        (report.tally.user_check_calls, report.tally.user_checks),
        (1, 10)
    );
    assert_eq!(report.tally.users_found, 1);
    let stats = h.sim.stats();
    assert_eq!(stats.total(SimOp::ListUsers), 1);
    // Nine are fewer than a bulk call's ten: they go as single calls, none refused.
    assert_eq!(stats.total(SimOp::CreateBulkInvitations), 0);
    assert_eq!(stats.total(SimOp::CreateInvitation), 9);
    assert_eq!(stats.count(SimOp::CreateInvitation, 422), 0);
    let others: Vec<String> = emails.iter().filter(|e| *e != user).cloned().collect();
    assert_one_pending_each(&h, &others);
    assert!(invitations_of(&h, user).is_empty());
    let clerk_id = h
        .sim
        .users()
        .into_iter()
        .find(|u| u.emails().any(|e| e == user))
        .expect("the simulator has the user")
        .id;
    let known: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT email, seen_via, clerk_user_id FROM invite_sync_known_users WHERE target = $1",
    )
    .bind(TARGET)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        known,
        [(user.to_owned(), "lookup".to_owned(), Some(clerk_id))],
        "users are remembered with their Clerk user id"
    );
    assert!(
        ledger_of(&h, user).await.is_empty(),
        "no ledger row for someone never invited"
    );

    let again = h.cycle().await;
    assert_eq!(count(&again, "already_user"), 1);
    assert_eq!(
        (
            again.tally.created,
            again.tally.bulk_calls,
            again.tally.single_calls
        ),
        (0, 0, 0)
    );
    assert_eq!(again.tally.user_check_calls, 0, "nobody left to look up");
    assert_eq!(writes(&h.sim.stats()), writes(&stats));
}

#[tokio::test]
async fn a_roster_where_70_percent_are_users_invites_the_rest_without_a_refused_create() {
    let h = Harness::new().await;
    let emails = people("move", 300);
    let users: Vec<&str> = emails
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 < 7)
        .map(|(_, e)| e.as_str())
        .collect();
    h.sim.seed_users(&users);
    add_many(&h, &emails).await;

    let report = h.cycle().await;

    let invitable: Vec<String> = emails
        .iter()
        .filter(|e| !users.contains(&e.as_str()))
        .cloned()
        .collect();
    assert_eq!(invitable.len(), 90);
    assert_eq!((report.tally.created, report.tally.backlog), (90, 0));
    assert_eq!(
        (report.tally.user_check_calls, report.tally.users_found),
        (3, 210)
    );
    // 90 people: 9 bulk calls of 10, the fewest there can be.
    assert_eq!((report.tally.bulk_calls, report.tally.single_calls), (9, 0));
    let stats = h.sim.stats();
    for operation in [SimOp::CreateBulkInvitations, SimOp::CreateInvitation] {
        assert_eq!(stats.count(operation, 422), 0, "no create refused");
        assert_eq!(stats.count(operation, 400), 0, "no create refused");
    }
    assert_one_pending_each(&h, &invitable);
    let with_ids: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invite_sync_known_users WHERE clerk_user_id IS NOT NULL",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(with_ids, 210);
}

#[tokio::test]
async fn a_not_a_user_answer_is_trusted_until_it_is_older_than_its_max_age() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__CLERK__USER_CHECK_MAX_AGE_SECONDS", "600")],
    )
    .await;
    h.add_people(&["fresh@example.com", "stale@example.com"])
        .await;
    sqlx::query(
        "INSERT INTO invite_sync_user_checks (target, email, checked_at) VALUES
         ($1, 'fresh@example.com', now() - interval '599 seconds'),
         ($1, 'stale@example.com', now() - interval '601 seconds')",
    )
    .bind(TARGET)
    .execute(&h.db.pool)
    .await
    .unwrap();
    // Both signed up on their own since; only the stale answer is asked again.
    h.sim
        .seed_users(&["fresh@example.com", "stale@example.com"]);

    let preview = h.reconciler.preview(0).await.expect("the plan reads");
    assert_eq!((preview.queued, preview.awaiting_user_check), (2, 1));
    let report = h.cycle().await;

    assert_eq!(
        (report.tally.user_check_calls, report.tally.user_checks),
        (1, 1)
    );
    assert_eq!(
        report.tally.users_found, 1,
        "the stale answer was asked again"
    );
    // The fresh answer was trusted: its create was refused and marked the user, as before.
    assert_eq!(report.tally.created, 0);
    let stats = h.sim.stats();
    assert_eq!(stats.count(SimOp::CreateInvitation, 422), 1);
    let again = h.cycle().await;
    assert_eq!(count(&again, "already_user"), 2);
    assert_eq!(writes(&h.sim.stats()), writes(&stats));
}

#[tokio::test]
async fn a_backlog_drains_through_both_endpoints_as_slots_free_without_a_429() {
    const WINDOW: u64 = 2;
    let h = Harness::with(
        SimOptions {
            secret_key: "sk_live_simulator".to_owned(),
            ..short_hour(WINDOW)
        },
        &[
            ("INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS", "2"),
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "2"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "4"),
        ],
    )
    .await;
    let emails = people("drain", 60);
    add_many(&h, &emails).await;
    let token = CancellationToken::new();
    let (mut worker, triggers) = invite_sync::service::worker(h.reconciler.clone(), token.clone());

    triggers.request("start");
    let mut cycles = 0;
    loop {
        let step = tokio::time::timeout(Duration::from_secs(10), worker.step())
            .await
            .expect("the worker wakes for the backlog by itself");
        let report = ran(step);
        cycles += 1;
        assert!(cycles <= 6, "a few cycles drain 60 at 24 a window");
        if report.tally.backlog == 0 {
            break;
        }
        assert!(report.next_budget_at.is_some(), "{report:?}");
    }

    assert_one_pending_each(&h, &emails);
    let stats = h.sim.stats();
    for operation in [
        SimOp::CreateBulkInvitations,
        SimOp::CreateInvitation,
        SimOp::ListInvitations,
        SimOp::ListUsers,
    ] {
        assert_eq!(stats.count(operation, 429), 0, "{operation:?} answered 429");
    }
    // 24 a window: 2 bulk calls of 10 and 4 singles, twice; the last 12 as one bulk of 10
    // and 2 singles (a bulk call takes the stragglers instead when the single slots free
    // only after the cycle's wait). Never more than 15 calls; never a bulk call beyond the
    // two a window allows.
    let (bulk, single) = (
        stats.total(SimOp::CreateBulkInvitations),
        stats.total(SimOp::CreateInvitation),
    );
    assert!(bulk + single <= 15, "({bulk}, {single})");
    assert!(bulk <= 6, "({bulk}, {single})");
    token.cancel();
}

#[tokio::test]
async fn a_backfill_of_400_drains_at_the_budgets_pace_across_windows_without_a_429() {
    const HOUR: u64 = 5;
    // A production key, so the general 100-per-10-s limit does not pace 125 creates.
    let h = Harness::with(
        SimOptions {
            secret_key: "sk_live_simulator".to_owned(),
            ..short_hour(HOUR)
        },
        &[(
            "INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS",
            &HOUR.to_string(),
        )],
    )
    .await;
    let emails = people("fill", 400);
    add_many(&h, &emails).await;

    let started = std::time::Instant::now();
    let first = h.cycle().await;
    let took = started.elapsed();

    assert_eq!(first.tally.created, 350);
    assert_eq!(
        (first.tally.bulk_calls, first.tally.single_calls),
        (25, 100)
    );
    assert_eq!(first.tally.backlog, 50);
    let frees = first
        .next_budget_at
        .expect("the backlog says when budget frees");
    // The ETA was computed just before now, so it is at least what is left now.
    let left_now = (frees - chrono::Utc::now()).num_seconds();
    assert!(first.eta_seconds as i64 >= left_now, "{first:?}");
    // A cycle slowed past the window's edge finds budget again: then there is no wait to show.
    if took < Duration::from_secs(HOUR - 2) {
        assert!(
            first.eta_seconds > 0,
            "an ETA while the backlog waits: {first:?}"
        );
    }
    let recorded = run_of(&h, &first).await;
    assert_eq!(recorded.backlog, 50);
    assert_eq!(recorded.backlog_eta_seconds, Some(first.eta_seconds as i64));

    let mut report = first;
    let mut cycles = 1;
    while report.tally.backlog > 0 {
        assert!(cycles < 6, "the backlog drains in a few windows");
        let wanted = report.tally.backlog.min(350) as u64;
        let reconciler = &h.reconciler;
        wait_for(
            "the budget to free up",
            Duration::from_secs(2 * HOUR),
            || async move {
                let budget = reconciler.budget().await.expect("the budget reads");
                (budget.capacity_now() >= wanted).then_some(())
            },
        )
        .await;
        report = h.cycle().await;
        cycles += 1;
    }

    assert_one_pending_each(&h, &emails);
    assert_eq!(h.sim.invitations().len(), 400, "nobody invited twice");
    let stats = h.sim.stats();
    assert_eq!(stats.count(SimOp::CreateBulkInvitations, 429), 0);
    assert_eq!(stats.count(SimOp::CreateInvitation, 429), 0);
    assert_eq!(stats.total(SimOp::CreateBulkInvitations), 30);
    assert_eq!(stats.total(SimOp::CreateInvitation), 100);
}

#[tokio::test]
async fn a_stored_retry_after_blocks_the_endpoint_until_it_passes() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "5")],
    )
    .await;
    let emails = people("blocked", 30);
    h.add_people(&refs(&emails)).await;
    h.sim.inject_fault(Fault::new(
        SimOp::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 429,
            retry_after: Some(2),
        },
    ));

    let first = h.cycle().await;

    let stats = h.sim.stats();
    assert_eq!(stats.total(SimOp::CreateBulkInvitations), 1);
    assert_eq!(stats.count(SimOp::CreateBulkInvitations, 429), 1);
    assert_eq!(first.tally.created, 5, "the single endpoint carries on");
    assert_eq!(first.tally.single_calls, 5);
    assert_eq!(first.tally.backlog, 25);
    let blocks: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT endpoint, blocked_until FROM invite_sync_rate_blocks WHERE target = $1",
    )
    .bind(TARGET)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, "create_bulk_invitations");
    let ahead = blocks[0].1 - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::zero() && ahead <= chrono::Duration::seconds(2),
        "blocked for the Retry-After: {ahead}"
    );
    assert!(
        ledger(&h)
            .await
            .iter()
            .all(|e| e.state == LedgerState::Pending),
        "the refused members are not left sending"
    );

    // The next cycle finds the block ending within its wait for a slot: it waits it out
    // and sends the rest through the bulk endpoint, not one call before the block ends.
    let second = h.cycle().await;
    assert_eq!(second.tally.created, 25);
    assert_eq!(second.tally.bulk_calls, 3);
    assert_eq!(second.tally.backlog, 0);
    let first_bulk_after: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT min(called_at) FROM invite_sync_clerk_calls
         WHERE endpoint = 'create_bulk_invitations' AND run_id = $1",
    )
    .bind(second.run_id)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(
        first_bulk_after >= blocks[0].1,
        "a bulk call at {first_bulk_after} before the block ended at {}",
        blocks[0].1
    );
    assert_one_pending_each(&h, &emails);
    let stats = h.sim.stats();
    assert_eq!(
        stats.count(SimOp::CreateBulkInvitations, 429),
        1,
        "only the injected one"
    );
    assert_eq!(stats.count(SimOp::CreateInvitation, 429), 0);
}

#[tokio::test]
async fn an_emptied_roster_holds_every_revocation_until_an_operator_releases_them() {
    let h = Harness::new().await;
    let emails = people("held", 30);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    assert_eq!(h.pending().len(), 30);

    h.remove_people(&refs(&emails)).await;
    let held = h.cycle().await;

    assert_eq!(held.held_revocations, 30);
    assert_eq!(held.hold_reason, Some(HoldReason::EmptyRoster));
    assert_eq!(held.outcome, Outcome::Held);
    assert_eq!(held.tally.revoked, 0);
    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 0);
    assert_eq!(h.pending().len(), 30);
    let recorded = run_of(&h, &held).await;
    assert_eq!(recorded.outcome, "held");
    assert_eq!(recorded.held_revocations, 30);

    let still = h.cycle().await;
    assert_eq!((still.held_revocations, still.tally.revoked), (30, 0));

    let released = h
        .cycle_with(Request {
            allow_revocations: 30,
            ..Request::new("operator")
        })
        .await;

    assert_eq!(released.tally.revoked, 30);
    assert_eq!(released.held_revocations, 0);
    assert_eq!(released.outcome, Outcome::Succeeded);
    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 30);
    assert!(h.pending().is_empty());
    let after = h.cycle().await;
    assert_eq!((after.tally.revoked, after.held_revocations), (0, 0));
}

#[tokio::test]
async fn a_sharply_shrunk_roster_holds_its_revocations_while_creates_proceed() {
    let h = Harness::new().await;
    let emails = people("shrink", 10);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;

    h.remove_people(&refs(&emails[..3])).await;
    let newcomers = people("joiner", 2);
    h.add_people(&refs(&newcomers)).await;
    let report = h.cycle().await;

    assert_eq!(report.held_revocations, 3);
    assert_eq!(report.hold_reason, Some(HoldReason::TooLargeAShare));
    assert_eq!(report.outcome, Outcome::Held);
    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 0);
    assert_eq!(report.tally.created, 2, "creates are not held");
    assert_eq!(pending_of(&h, &newcomers[1]).len(), 1);

    let released = h
        .cycle_with(Request {
            allow_revocations: 2,
            ..Request::new("operator")
        })
        .await;
    assert_eq!((released.tally.revoked, released.held_revocations), (2, 1));
    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 2);
}

#[tokio::test]
async fn a_protected_address_is_never_revoked() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__SYNC__PROTECTED", "@vip.example")],
    )
    .await;
    let mut emails = people("crew", 9);
    emails.push("boss@vip.example".to_owned());
    h.add_people(&refs(&emails)).await;
    h.cycle().await;

    h.remove_people(&["boss@vip.example"]).await;
    let report = h.cycle().await;
    assert_eq!(report.protected, 1);
    assert_eq!((report.tally.revoked, report.held_revocations), (0, 0));

    let released = h
        .cycle_with(Request {
            allow_revocations: 10,
            ..Request::new("operator")
        })
        .await;
    assert_eq!(released.tally.revoked, 0);
    assert_eq!(released.protected, 1);

    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 0);
    assert_eq!(pending_of(&h, "boss@vip.example").len(), 1);
}

/// A create whose answer never arrives: the next cycle settles it by a lookup, adopting
/// what Clerk made and sending again only what it did not.
async fn an_unanswered_bulk_create_is_settled_without_a_duplicate(
    options: SimOptions,
    env: &[(&str, &str)],
    fault: FaultKind,
    applied: bool,
) {
    // Settled at the very next cycle: the grace before a lookup has its own test.
    let mut env = env.to_vec();
    env.push(("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "0"));
    let h = Harness::with(options, &env).await;
    let emails = people("crash", 30);
    h.add_people(&refs(&emails)).await;
    h.sim
        .inject_fault(Fault::new(SimOp::CreateBulkInvitations, 1, fault));

    let first = h.cycle().await;

    assert_eq!(
        first.tally.bulk_calls, 1,
        "creates stop at an unknown outcome"
    );
    assert_eq!(first.tally.backlog, 20);
    assert_eq!(first.outcome, Outcome::Partial);
    let sending: Vec<String> = ledger(&h)
        .await
        .into_iter()
        .filter(|e| e.state == LedgerState::Sending)
        .map(|e| e.email.as_str().to_owned())
        .collect();
    assert_eq!(sending, emails[..10], "the first batch is left sending");
    assert_eq!(ledger(&h).await.len(), 10);
    assert_eq!(h.sim.invitations().len(), if applied { 10 } else { 0 });
    let at_fault = h.sim.stats();

    let second = h.cycle().await;

    assert_eq!(second.tally.adopted, if applied { 10 } else { 0 });
    assert_eq!(second.tally.created, if applied { 20 } else { 30 });
    assert_one_pending_each(&h, &emails);
    assert_eq!(
        h.sim.invitations().len(),
        30,
        "no second invitation for anyone"
    );
    let stats = h.sim.stats();
    let needed = if applied { 2 } else { 3 };
    assert_eq!(
        stats.total(SimOp::CreateBulkInvitations) - at_fault.total(SimOp::CreateBulkInvitations),
        needed
    );
    assert_eq!(stats.total(SimOp::CreateInvitation), 0);
    let entries = ledger(&h).await;
    assert_eq!(entries.len(), 30);
    for entry in &entries {
        assert_eq!(entry.state, LedgerState::Pending, "{}", entry.email);
        let invitation = pending_of(&h, entry.email.as_str()).remove(0);
        assert_eq!(
            entry.clerk_invitation_id.as_deref(),
            Some(invitation.id.as_str())
        );
        assert!(entry.owned);
    }

    let third = h.cycle().await;
    assert_eq!(
        (
            third.tally.created,
            third.tally.adopted,
            third.tally.bulk_calls
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_bulk_create_applied_but_unanswered_is_adopted_next_cycle() {
    an_unanswered_bulk_create_is_settled_without_a_duplicate(
        SimOptions::default(),
        &[],
        FaultKind::DropAfterApply,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_bulk_create_that_timed_out_is_looked_up_and_sent_again() {
    an_unanswered_bulk_create_is_settled_without_a_duplicate(
        SimOptions {
            hang: Duration::from_secs(3),
            ..SimOptions::default()
        },
        &[("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "1")],
        FaultKind::Hang,
        false,
    )
    .await;
}

#[tokio::test]
async fn a_bulk_create_answered_503_is_looked_up_and_sent_again() {
    an_unanswered_bulk_create_is_settled_without_a_duplicate(
        SimOptions::default(),
        &[],
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
        false,
    )
    .await;
}

/// A roster of 12 with a cycle behind it, then one removed and three added: what a dry
/// run must show without doing.
async fn dry_run_shows_exactly_what_would_be_sent(h: &Harness, real: Request, dry: Request) {
    let emails = people("dry", 12);
    h.add_people(&refs(&emails)).await;
    let setup = h.cycle_with(real).await;
    assert_eq!(setup.tally.created, 12);
    let leaver = emails[4].clone();
    let leavers_invitation = pending_of(h, &leaver).remove(0);
    h.remove_people(&[leaver.as_str()]).await;
    let newcomers = people("late", 3);
    h.add_people(&refs(&newcomers)).await;
    let before = h.sim.stats();

    let report = h.cycle_with(dry).await;

    assert!(report.dry_run);
    assert_eq!((report.tally.created, report.tally.revoked), (0, 0));
    assert_eq!((count(&report, "create"), count(&report, "revoke")), (3, 1));
    assert_eq!(report.tally.backlog, 3);
    assert_eq!(writes(&h.sim.stats()), writes(&before), "nothing written");
    let recorded = run_of(h, &report).await;
    assert!(recorded.dry_run);
    assert_eq!(recorded.outcome, "succeeded");
    assert_eq!(pending_of(h, &leaver).len(), 1);

    let preview = h.reconciler.preview(0).await.expect("the preview reads");
    let plan = invite_sync::commands::plan::render_json(&preview, TARGET);
    let creates: Vec<&str> = plan["creates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["email"].as_str().unwrap())
        .collect();
    assert_eq!(creates, refs(&newcomers));
    assert_eq!(
        plan["revocations"],
        json!([{ "email": leaver, "invitation_id": leavers_invitation.id, "status": "revoke" }])
    );
    assert_eq!(
        writes(&h.sim.stats()),
        writes(&before),
        "the preview writes nothing"
    );
    assert_eq!(h.sim.invitations().len(), 12);
}

#[tokio::test]
async fn a_dry_run_request_calls_nothing_that_writes() {
    let h = Harness::new().await;
    dry_run_shows_exactly_what_would_be_sent(&h, Request::new("setup"), dry("dry")).await;
}

#[tokio::test]
async fn dry_run_in_the_configuration_calls_nothing_that_writes() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__SYNC__DRY_RUN", "true")],
    )
    .await;
    let fresh = people("cfg", 4);
    h.add_people(&refs(&fresh)).await;
    let first = h.cycle().await;
    assert!(first.dry_run);
    assert_eq!(writes(&h.sim.stats()), [0, 0, 0]);
    assert!(run_of(&h, &first).await.dry_run);
    h.remove_people(&refs(&fresh)).await;

    dry_run_shows_exactly_what_would_be_sent(
        &h,
        Request {
            dry_run: Some(false),
            ..Request::new("setup")
        },
        Request::new("scheduled"),
    )
    .await;
}

#[tokio::test]
async fn a_cycle_is_skipped_while_another_session_holds_the_targets_lock() {
    let h = Harness::new().await;
    let emails = people("lock", 3);
    h.add_people(&refs(&emails)).await;
    let lock = LeaderLock::try_acquire(&h.db.pool, TARGET)
        .await
        .unwrap()
        .expect("the lock is free");

    let result = h
        .reconciler
        .run_cycle(&Request::new("test"), &CancellationToken::new())
        .await
        .expect("a skip is not an error");

    match result {
        CycleResult::Skipped { holder } => {
            let holder = holder.expect("the holder is named");
            assert_eq!(
                holder.application_name.as_deref(),
                Some("invite-sync leader default")
            );
            // The process that took the lock (this test), not its PostgreSQL backend.
            assert_eq!(holder.pid, Some(std::process::id() as i32));
            assert_ne!(holder.pid, Some(holder.backend_pid));
            assert_eq!(
                holder.host.as_deref(),
                Some(invite_sync::store::lock::this_host().as_str())
            );
        }
        ran => panic!("the cycle ran while the lock was held: {ran:?}"),
    }
    assert_eq!(h.sim.stats(), SimStats::default(), "no call at all");
    assert!(ledger(&h).await.is_empty());

    lock.release().await.unwrap();
    let report = h.cycle().await;
    assert_eq!(report.tally.created, 3);
    assert_one_pending_each(&h, &emails);
}

#[tokio::test]
async fn the_lock_holder_is_looked_up_in_this_database_only() {
    let h = Harness::new().await;
    let elsewhere = Harness::new().await;
    let lock = LeaderLock::try_acquire(&elsewhere.db.pool, TARGET)
        .await
        .unwrap()
        .expect("the lock is free");

    let holder = invite_sync::store::lock::holder(&h.db.pool, TARGET)
        .await
        .unwrap();

    assert!(
        holder.is_none(),
        "a lock in another database is named as this one's holder: {holder:?}"
    );
    let report = h.cycle().await;
    assert_eq!(
        report.outcome,
        Outcome::Succeeded,
        "the lock itself is per database"
    );
    lock.release().await.unwrap();
}

#[tokio::test]
async fn every_cycle_leaves_a_run_record_with_its_counts_budget_and_backlog() {
    let h = Harness::with(
        SimOptions::default(),
        &[
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "2"),
        ],
    )
    .await;
    let emails = people("rec", 15);
    h.add_people(&refs(&emails)).await;

    let report = h.cycle_with(Request::new("record")).await;

    assert_eq!(report.tally.created, 12);
    assert_eq!(report.tally.backlog, 3);
    let recorded = run_of(&h, &report).await;
    assert_eq!(recorded.trigger, "record");
    assert_eq!(recorded.outcome, "succeeded");
    assert!(!recorded.dry_run);
    assert!(recorded.finished_at.is_some());
    assert_eq!(recorded.counts["create"], 15);
    assert_eq!(recorded.counts["created"], 12);
    assert_eq!(recorded.counts["bulk_calls"], 1);
    assert_eq!(recorded.counts["single_calls"], 2);
    assert_eq!(
        recorded.budget_left,
        json!({ "create_bulk_invitations": 0, "create_invitation": 0 })
    );
    assert_eq!(recorded.backlog, 3);
    let eta = recorded.backlog_eta_seconds.expect("an ETA is recorded");
    assert!(
        (3500..=3600).contains(&eta),
        "the backlog waits for the next hour: {eta}"
    );
    assert_eq!(eta as u64, report.eta_seconds);
    assert_eq!((recorded.errors, recorded.error.as_deref()), (0, None));
    assert_eq!(recorded.held_revocations, 0);
}

#[tokio::test]
async fn a_cycle_that_cannot_list_clerk_is_recorded_as_failed() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__CLERK__MAX_ATTEMPTS", "1")],
    )
    .await;
    h.add_people(&refs(&people("down", 2))).await;
    let Harness {
        db,
        sim,
        reconciler,
        ..
    } = h;
    sim.shutdown().await;

    let error = reconciler
        .run_cycle(&Request::new("test"), &CancellationToken::new())
        .await
        .expect_err("the cycle fails");

    assert!(
        error
            .to_string()
            .contains("listing Clerk's invitations failed"),
        "{error}"
    );
    let recorded = runs::recent(&db.pool, TARGET, 10).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].outcome, "failed");
    assert_eq!(recorded[0].errors, 1);
    assert_eq!(
        recorded[0].error.as_deref(),
        Some(error.to_string().as_str())
    );
    assert!(recorded[0].finished_at.is_some());
}

fn redact_env() -> [(&'static str, &'static str); 1] {
    [("INVITE_SYNC__LOG__REDACT_EMAILS", "true")]
}

#[tokio::test]
async fn with_redact_emails_no_address_reaches_the_log_of_a_cycle() {
    let h = Harness::with(SimOptions::default(), &redact_env()).await;
    assert!(h.reconciler.config.reporter.redact_emails);
    let emails = people("hidden", 12);
    h.add_people(&refs(&emails)).await;
    h.sim.seed_users(&[emails[5].as_str()]);
    let (logs, _guard) = capture_logs();

    h.cycle().await;
    h.remove_people(&[emails[0].as_str()]).await;
    let invitation = pending_of(&h, &emails[1]).remove(0);
    h.sim.expire(&invitation.id);
    h.cycle().await;
    h.remove_people(&refs(&emails)).await;
    h.cycle().await;

    let text = logs.text();
    assert!(text.contains("revocation held"), "the log was captured");
    assert!(
        text.contains(&Email::parse(&emails[2]).unwrap().redacted()),
        "addresses appear as their hashes"
    );
    let leaked: Vec<&str> = text.lines().filter(|l| l.contains("hidden")).collect();
    assert!(leaked.is_empty(), "addresses reached the log: {leaked:#?}");
}

#[tokio::test]
async fn with_redact_emails_a_failed_lookup_does_not_log_the_address() {
    let mut env = redact_env().to_vec();
    env.push(("INVITE_SYNC__CLERK__MAX_ATTEMPTS", "1"));
    env.push(("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "0"));
    let h = Harness::with(SimOptions::default(), &env).await;
    let emails = people("hidden", 10);
    h.add_people(&refs(&emails)).await;
    h.sim.inject_fault(Fault::new(
        SimOp::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    h.cycle().await;
    // The settle lookup of the first unconfirmed create gets no answer.
    h.sim.inject_fault(Fault::new(
        SimOp::ListInvitations,
        1,
        FaultKind::DropAfterApply,
    ));
    let (logs, _guard) = capture_logs();

    let report = h.cycle().await;

    assert_eq!(report.tally.errors.len(), 1, "{:?}", report.tally.errors);
    let text = logs.text();
    let leaked: Vec<&str> = text.lines().filter(|l| l.contains("hidden")).collect();
    assert!(leaked.is_empty(), "addresses reached the log: {leaked:#?}");
}

#[tokio::test]
async fn changed_metadata_is_reported_as_stale_and_nothing_is_sent() {
    let h = Harness::new().await;
    let emails = people("meta", 5);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let person = emails[2].as_str();
    let original = pending_of(&h, person).remove(0);
    set_metadata(&h, person, json!({ "team": "blue" })).await;
    let before = writes(&h.sim.stats());

    let report = h.cycle().await;

    assert_eq!(count(&report, "stale"), 1);
    assert_eq!((report.tally.created, report.tally.revoked), (0, 0));
    assert_eq!(writes(&h.sim.stats()), before);
    let theirs = invitations_of(&h, person);
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, original.id);
    assert_eq!(theirs[0].status, InvitationStatus::Pending);
}

#[tokio::test]
async fn with_on_change_replace_changed_metadata_replaces_the_invitation() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__SYNC__ON_CHANGE", "replace")],
    )
    .await;
    let emails = people("meta", 5);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let person = emails[2].as_str();
    let original = pending_of(&h, person).remove(0);
    set_metadata(&h, person, json!({ "team": "blue" })).await;
    let before = h.sim.stats();

    let report = h.cycle().await;

    assert_eq!(count(&report, "replace"), 1);
    assert_eq!((report.tally.revoked, report.tally.created), (1, 1));
    let after = h.sim.stats();
    assert_eq!(
        after.total(SimOp::RevokeInvitation) - before.total(SimOp::RevokeInvitation),
        1
    );
    let theirs = invitations_of(&h, person);
    assert_eq!(theirs.len(), 2);
    assert_eq!(theirs[0].id, original.id);
    assert_eq!(theirs[0].status, InvitationStatus::Revoked);
    assert_eq!(theirs[1].status, InvitationStatus::Pending);
    let expected: serde_json::Map<String, Value> =
        serde_json::from_value(json!({ "team": "blue" })).unwrap();
    assert_eq!(theirs[1].public_metadata, expected);

    let again = h.cycle().await;
    assert_eq!((count(&again, "replace"), count(&again, "in_sync")), (0, 5));
    assert_eq!((again.tally.created, again.tally.revoked), (0, 0));
    assert_one_pending_each(&h, &emails);
}

#[tokio::test]
async fn an_invitation_revoked_outside_invite_sync_is_not_reinvited_until_the_row_changes() {
    let h = Harness::new().await;
    let emails = people("ext", 5);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let person = emails[3].as_str();
    let invitation = pending_of(&h, person).remove(0);
    revoke_in_clerk(&h, &invitation.id).await;
    let before = writes(&h.sim.stats());

    let report = h.cycle().await;

    assert_eq!(count(&report, "revoked_externally"), 1);
    assert_eq!((report.tally.created, report.tally.revoked), (0, 0));
    let entry = ledger_of(&h, person).await.remove(0);
    assert_eq!(entry.state, LedgerState::Revoked);
    assert!(!entry.revoked_by_us);
    let again = h.cycle().await;
    assert_eq!(count(&again, "revoked_externally"), 1);
    assert_eq!(writes(&h.sim.stats()), before, "not invited again");

    set_metadata(&h, person, json!({ "rehired": true })).await;
    let changed = h.cycle().await;

    assert_eq!(count(&changed, "create"), 1);
    assert_eq!(changed.tally.created, 1);
    let now_pending = pending_of(&h, person);
    assert_eq!(now_pending.len(), 1);
    assert_ne!(now_pending[0].id, invitation.id);
    assert_eq!(now_pending[0].public_metadata["rehired"], json!(true));
    assert_one_pending_each(&h, &emails);
}

fn ran(step: Step) -> Report {
    match step {
        Step::Ran(CycleResult::Ran(report)) => *report,
        other => panic!("the worker did not run a cycle: {other:?}"),
    }
}

#[tokio::test]
async fn the_worker_runs_one_cycle_per_request_and_merges_queued_requests() {
    let h = Harness::new().await;
    h.add_people(&refs(&people("work", 3))).await;
    let token = CancellationToken::new();
    let (mut worker, triggers) = invite_sync::service::worker(h.reconciler.clone(), token.clone());

    triggers.request("x");
    let first = ran(worker.step().await);
    assert_eq!(first.tally.created, 3);
    assert_eq!(runs(&h).await.len(), 1);

    triggers.request("a");
    triggers.request("b");
    ran(worker.step().await);
    assert_eq!(runs(&h).await.len(), 2, "two requests, one cycle");
    // Had "b" stayed queued, the next cycle would be its, not "c"'s.
    triggers.request("c");
    ran(worker.step().await);
    let triggers_seen: Vec<String> = runs(&h).await.into_iter().map(|r| r.trigger).collect();
    assert_eq!(triggers_seen, ["c", "a", "x"]);

    token.cancel();
    triggers.request("late");
    assert!(matches!(worker.step().await, Step::Stopped));
    assert_eq!(runs(&h).await.len(), 3);
}

#[tokio::test]
async fn the_worker_runs_again_by_itself_once_the_backlogs_budget_frees() {
    let h = Harness::with(
        short_hour(2),
        &[
            ("INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS", "2"),
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
        ],
    )
    .await;
    let emails = people("later", 15);
    h.add_people(&refs(&emails)).await;
    let token = CancellationToken::new();
    let (mut worker, triggers) = invite_sync::service::worker(h.reconciler.clone(), token.clone());

    triggers.request("start");
    let first = ran(worker.step().await);
    assert_eq!((first.tally.created, first.tally.backlog), (11, 4));
    assert!(first.next_budget_at.is_some());

    let second = tokio::time::timeout(Duration::from_secs(8), worker.step())
        .await
        .expect("the worker wakes for the backlog without a request");
    let second = ran(second);
    assert_eq!((second.tally.created, second.tally.backlog), (4, 0));
    assert!(
        chrono::Utc::now() >= first.next_budget_at.unwrap(),
        "not before the budget frees"
    );
    let triggers_seen: Vec<String> = runs(&h).await.into_iter().map(|r| r.trigger).collect();
    assert_eq!(triggers_seen, ["backlog", "start"]);
    assert_one_pending_each(&h, &emails);
    let stats = h.sim.stats();
    assert_eq!(stats.count(SimOp::CreateBulkInvitations, 429), 0);
    assert_eq!(stats.count(SimOp::CreateInvitation, 429), 0);

    token.cancel();
    assert!(matches!(worker.step().await, Step::Stopped));
}

#[tokio::test]
async fn counts_by_category_add_up_to_the_roster_and_clerk() {
    let h = Harness::new().await;
    let emails = people("mix", 8);
    h.add_people(&refs(&emails)).await;
    h.add_people(&["not-an-address"]).await;
    h.cycle().await;
    create_in_clerk(&h, "stranger@else.example").await;
    let accepted = pending_of(&h, &emails[0]).remove(0);
    h.sim.accept(&accepted.id);

    let report = h.cycle().await;

    let expected: BTreeMap<&str, usize> = [
        ("accepted", 1),
        ("foreign", 1),
        ("in_sync", 7),
        ("invalid", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(report.counts, expected);
}

#[tokio::test]
async fn a_replacement_revokes_only_what_the_budget_can_invite_again() {
    let h = Harness::with(
        SimOptions::default(),
        &[
            ("INVITE_SYNC__SYNC__ON_CHANGE", "replace"),
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
        ],
    )
    .await;
    let emails = people("swap", 5);
    h.add_people(&refs(&emails)).await;
    let first = h.cycle().await;
    assert_eq!((first.tally.created, first.tally.bulk_calls), (5, 1));
    for email in &emails[..3] {
        set_metadata(&h, email, json!({ "team": "new" })).await;
    }

    let report = h.cycle().await;

    assert!(
        report.tally.revoked <= report.tally.created,
        "revoked {} but invited again only {}",
        report.tally.revoked,
        report.tally.created
    );
    assert_one_pending_each(&h, &emails);
}

#[tokio::test]
async fn replacing_every_invitation_at_once_is_held_by_the_guard() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__SYNC__ON_CHANGE", "replace")],
    )
    .await;
    let emails = people("mass", 30);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    sqlx::query("UPDATE desired_invitees SET public_metadata = '{\"source\": \"new-hr-system\"}'")
        .execute(&h.db.pool)
        .await
        .unwrap();

    let report = h.cycle().await;

    assert_eq!(
        h.sim.stats().total(SimOp::RevokeInvitation),
        0,
        "30 of 30 owned invitations revoked in one cycle"
    );
    assert_eq!(report.held_revocations, 30);
    assert_eq!(report.outcome, Outcome::Held);
}

#[tokio::test]
async fn a_protected_address_is_not_revoked_to_replace_its_invitation() {
    let h = Harness::with(
        SimOptions::default(),
        &[
            ("INVITE_SYNC__SYNC__ON_CHANGE", "replace"),
            ("INVITE_SYNC__SYNC__PROTECTED", "@vip.example"),
        ],
    )
    .await;
    let mut emails = people("crew", 5);
    emails.push("boss@vip.example".to_owned());
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let original = pending_of(&h, "boss@vip.example").remove(0);
    set_metadata(&h, "boss@vip.example", json!({ "title": "CEO" })).await;

    h.cycle().await;

    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 0);
    let theirs = invitations_of(&h, "boss@vip.example");
    assert_eq!(theirs[0].id, original.id);
    assert_eq!(theirs[0].status, InvitationStatus::Pending);
}

#[tokio::test]
async fn a_cycle_asked_to_stop_sends_nothing_more_and_records_that_it_was_interrupted() {
    let h = Harness::new().await;
    let emails = people("stop", 12);
    h.add_people(&refs(&emails)).await;
    let token = CancellationToken::new();
    token.cancel();

    let result = h
        .reconciler
        .run_cycle(&Request::new("test"), &token)
        .await
        .expect("the cycle ends cleanly");

    let CycleResult::Ran(report) = result else {
        panic!("the cycle was skipped");
    };
    assert_eq!(report.outcome, Outcome::Interrupted);
    assert_eq!((report.tally.created, report.tally.backlog), (0, 12));
    assert_eq!(writes(&h.sim.stats()), [0, 0, 0]);
    assert!(ledger(&h).await.is_empty(), "nothing left sending");
    let recorded = run_of(&h, &report).await;
    assert_eq!(recorded.outcome, "interrupted");
    assert!(recorded.error.unwrap_or_default().contains("shutdown"));

    let next = h.cycle().await;
    assert_eq!(next.tally.created, 12);
    assert_one_pending_each(&h, &emails);
}

/// Runs one cycle asked to stop before it begins.
async fn stopped_cycle(h: &Harness) -> Report {
    let token = CancellationToken::new();
    token.cancel();
    match h
        .reconciler
        .run_cycle(&Request::new("test"), &token)
        .await
        .expect("the cycle ends cleanly")
    {
        CycleResult::Ran(report) => *report,
        skipped => panic!("the cycle was skipped: {skipped:?}"),
    }
}

#[tokio::test]
async fn a_cycle_stopped_while_settling_leaves_the_gauges_as_the_last_plan_set_them() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "0")],
    )
    .await;
    let emails = people("gauge", 10);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    h.remove_people(&refs(&emails[..3])).await;
    h.add_people(&refs(&people("late", 10))).await;
    h.sim.inject_fault(Fault::new(
        SimOp::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let held = h.cycle().await;
    assert_eq!((held.held_revocations, held.desired_rows), (3, 17));
    assert_eq!(held.unsettled.creates, 10, "left sending, due at once");
    let metrics = invite_sync::metrics::metrics();
    let gauges = || {
        [
            metrics.held_revocations.get(),
            metrics.desired.get(),
            metrics.owned_pending.get(),
            metrics.unsettled_creates.get(),
        ]
    };
    let before = gauges();
    assert_eq!(before[..2], [3, 17]);

    let stopped = stopped_cycle(&h).await;

    assert_eq!(stopped.outcome, Outcome::Interrupted);
    assert_eq!(gauges(), before, "a stop while settling sets no gauge");
}

#[tokio::test]
async fn a_cycle_stopped_while_revoking_reports_the_creates_it_did_not_get_to() {
    let h = Harness::new().await;
    let emails = people("revstop", 10);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    h.remove_people(&refs(&emails[..1])).await;
    h.add_people(&refs(&people("newer", 5))).await;

    let stopped = stopped_cycle(&h).await;

    assert_eq!(stopped.outcome, Outcome::Interrupted);
    // The guard allowed the revocation: the stop came before it was sent.
    assert_eq!(stopped.held_revocations, 0);
    assert_eq!(h.sim.stats().total(SimOp::RevokeInvitation), 0);
    assert_eq!((stopped.tally.revoked, stopped.tally.created), (0, 0));
    assert_eq!(
        (stopped.tally.backlog, stopped.tally.awaiting_user_check),
        (5, 5)
    );
    let metrics = invite_sync::metrics::metrics();
    assert_eq!(metrics.backlog.get(), 5);
    assert_eq!(metrics.awaiting_user_check.get(), 5);
    assert_eq!(run_of(&h, &stopped).await.backlog, 5);
}

/// The backend holding the target's lock in this test's own database (tests share a server).
async fn lock_holder_in_this_database(h: &Harness) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('invite-sync:' || $1, 0)",
    )
    .bind(TARGET)
    .fetch_optional(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn losing_the_lock_connection_ends_the_cycle_before_its_next_call() {
    let h = Harness::with(
        SimOptions {
            hang: Duration::from_secs(3),
            ..SimOptions::default()
        },
        &[
            ("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "1"),
            ("INVITE_SYNC__CLERK__MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let emails = people("lost", 10);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    h.remove_people(&refs(&emails[..2])).await;
    let newcomers = people("late", 5);
    h.add_people(&refs(&newcomers)).await;
    h.sim
        .inject_fault(Fault::new(SimOp::RevokeInvitation, 1, FaultKind::Hang));
    let before = h.sim.stats();

    let reconciler = h.reconciler.clone();
    let cycle = tokio::spawn(async move {
        reconciler
            .run_cycle(&Request::new("test"), &CancellationToken::new())
            .await
    });
    let sim = &h.sim;
    wait_for(
        "the first revoke to hang",
        Duration::from_secs(5),
        || async move {
            (sim.stats()
                .count(SimOp::RevokeInvitation, SimStats::NO_RESPONSE)
                == 1)
                .then_some(())
        },
    )
    .await;
    let holder = lock_holder_in_this_database(&h)
        .await
        .expect("the cycle holds the lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let result = cycle.await.expect("the cycle task ends");

    let report = match result {
        Ok(CycleResult::Ran(report)) => report,
        other => panic!("the cycle did not report: {other:?}"),
    };
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!((report.tally.revoked, report.tally.created), (0, 0));
    let after = h.sim.stats();
    assert_eq!(
        after.total(SimOp::RevokeInvitation),
        before.total(SimOp::RevokeInvitation) + 1,
        "no call after the lock was lost"
    );
    assert_eq!(writes(&after)[..2], writes(&before)[..2]);
    let recorded = run_of(&h, &report).await;
    assert_eq!(recorded.outcome, "failed");
    assert!(
        recorded
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("leader lock was lost"),
        "{:?}",
        recorded.error
    );

    let next = h.cycle().await;
    assert_eq!((next.tally.revoked, next.tally.created), (2, 5));
    let mut staying = emails[2..].to_vec();
    staying.extend(newcomers);
    assert_one_pending_each(&h, &staying);
}

#[tokio::test]
async fn a_refused_create_waits_for_its_roster_row_to_change() {
    let h = Harness::new().await;
    h.add_people(&["solo@example.com"]).await;
    h.sim.inject_fault(Fault::new(
        SimOp::CreateInvitation,
        1,
        FaultKind::Status {
            status: 422,
            retry_after: None,
        },
    ));

    let refused = h.cycle().await;

    assert_eq!((refused.tally.created, refused.tally.failed), (0, 1));
    assert_eq!(refused.outcome, Outcome::Partial);
    let entry = ledger_of(&h, "solo@example.com").await.remove(0);
    assert_eq!(entry.state, LedgerState::Failed);
    assert!(entry.terminal);
    assert_eq!(entry.last_error_code.as_deref(), Some("fault_injected"));
    let before = writes(&h.sim.stats());
    let again = h.cycle().await;
    assert_eq!(count(&again, "failed"), 1);
    assert_eq!(writes(&h.sim.stats()), before, "not sent again unchanged");

    set_metadata(&h, "solo@example.com", json!({ "fixed": true })).await;
    let changed = h.cycle().await;

    assert_eq!(changed.tally.created, 1);
    assert_one_pending_each(&h, &["solo@example.com".to_owned()]);
    let entries = ledger_of(&h, "solo@example.com").await;
    assert_eq!(entries.len(), 1, "the failure gives way to the new attempt");
    assert_eq!(entries[0].attempts, 2);
}

#[tokio::test]
async fn a_bulk_refused_without_naming_anyone_is_sent_again_in_two_halves() {
    let h = Harness::new().await;
    let emails = people("split", 10);
    h.add_people(&refs(&emails)).await;
    h.sim.inject_fault(Fault::new(
        SimOp::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 400,
            retry_after: None,
        },
    ));

    let report = h.cycle().await;

    assert_eq!(report.tally.created, 10);
    // The refused call and its two halves of 5, where one by one took 10 single calls.
    assert_eq!((report.tally.bulk_calls, report.tally.single_calls), (3, 0));
    let stats = h.sim.stats();
    assert_eq!(stats.total(SimOp::CreateBulkInvitations), 3);
    assert_eq!(stats.count(SimOp::CreateBulkInvitations, 400), 1);
    assert_eq!(stats.total(SimOp::CreateInvitation), 0);
    assert_one_pending_each(&h, &emails);
}

#[tokio::test]
async fn a_429_from_clerks_own_count_blocks_the_endpoint_and_singles_carry_on() {
    let h = Harness::new().await;
    // Someone else spends the instance's bulk budget for the hour.
    let client = reqwest::Client::new();
    for i in 0..25 {
        let response = client
            .post(format!("{}/invitations/bulk", h.sim.base_url()))
            .bearer_auth(h.sim.secret_key())
            .json(&json!([{ "email_address": format!("other{i}@elsewhere.example") }]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let emails = people("ours", 30);
    h.add_people(&refs(&emails)).await;

    let first = h.cycle().await;

    assert_eq!(first.tally.created, 30);
    assert_eq!((first.tally.bulk_calls, first.tally.single_calls), (1, 30));
    let stats = h.sim.stats();
    assert_eq!(stats.count(SimOp::CreateBulkInvitations, 429), 1);
    assert_eq!(stats.count(SimOp::CreateInvitation, 429), 0);
    let budget = h.reconciler.budget().await.unwrap();
    let until = budget.bulk.blocked_until.expect("the block is stored");
    assert!(until > chrono::Utc::now() + chrono::Duration::minutes(55));
    assert_one_pending_each(
        &h,
        &emails
            .iter()
            .cloned()
            .chain((0..25).map(|i| format!("other{i}@elsewhere.example")))
            .collect::<Vec<_>>(),
    );

    h.add_people(&refs(&people("more", 12))).await;
    let second = h.cycle().await;
    assert_eq!(
        (second.tally.bulk_calls, second.tally.single_calls),
        (0, 12)
    );
    assert_eq!(h.sim.stats().count(SimOp::CreateBulkInvitations, 429), 1);
}

#[tokio::test]
async fn an_invalid_row_is_reported_keeps_its_invitation_and_the_rest_go_on() {
    let h = Harness::new().await;
    let emails = people("val", 6);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    set_metadata(&h, &emails[0], json!(["not", "an", "object"])).await;
    h.add_people(&["two@ats@example.com"]).await;
    let newcomer = people("fine", 1);
    h.add_people(&refs(&newcomer)).await;

    let report = h.cycle().await;

    assert_eq!(count(&report, "invalid"), 2);
    assert_eq!((report.tally.created, report.tally.revoked), (1, 0));
    assert_eq!(
        count(&report, "revoke"),
        0,
        "an invalid row still counts as desired"
    );
    let mut all = emails.clone();
    all.extend(newcomer);
    assert_one_pending_each(&h, &all);
}

#[tokio::test]
async fn a_row_is_not_invited_before_its_not_before() {
    let h = Harness::new().await;
    sqlx::query(
        "INSERT INTO desired_invitees (email, not_before) VALUES ('soon@example.com', now() + interval '1 hour')",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();

    let early = h.cycle().await;

    assert_eq!((count(&early, "deferred"), early.tally.created), (1, 0));
    assert_eq!(writes(&h.sim.stats()), [0, 0, 0]);
    sqlx::query("UPDATE desired_invitees SET not_before = now() - interval '1 second'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let due = h.cycle().await;
    assert_eq!(due.tally.created, 1);
    assert_one_pending_each(&h, &["soon@example.com".to_owned()]);
}

#[tokio::test]
async fn the_budget_goes_to_the_oldest_rows_first() {
    let h = Harness::with(
        SimOptions::default(),
        &[
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
        ],
    )
    .await;
    let emails = people("age", 13);
    // The alphabetically last row is the oldest: the queue follows age, not the address.
    sqlx::query(
        "INSERT INTO desired_invitees (email, created_at)
         SELECT email, now() - make_interval(mins => ord::int)
         FROM unnest($1::text[]) WITH ORDINALITY AS t(email, ord)",
    )
    .bind(&emails)
    .execute(&h.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE desired_invitees SET not_before = now() - interval '1 day' WHERE email = $1",
    )
    .bind(&emails[0])
    .execute(&h.db.pool)
    .await
    .unwrap();

    let report = h.cycle().await;

    assert_eq!((report.tally.created, report.tally.backlog), (11, 2));
    let waiting: Vec<&str> = emails
        .iter()
        .map(String::as_str)
        .filter(|e| pending_of(&h, e).is_empty())
        .collect();
    assert_eq!(
        waiting,
        [emails[1].as_str(), emails[2].as_str()],
        "the newest rows wait; a row due since yesterday goes first"
    );
}

#[tokio::test]
async fn an_address_is_matched_whatever_its_case_and_spacing() {
    let h = Harness::new().await;
    h.add_people(&[" Ann@Example.COM ", "bob@example.com"])
        .await;
    create_in_clerk(&h, "Bob@Example.com").await;

    let report = h.cycle().await;

    assert_eq!(report.tally.created, 1);
    assert_eq!(count(&report, "in_sync"), 1);
    let ann = pending_of(&h, "ann@example.com");
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].email_address, "ann@example.com");
    assert_eq!(
        pending_of(&h, "bob@example.com").len(),
        1,
        "no second invitation"
    );
    let again = h.cycle().await;
    assert_eq!((again.tally.created, again.tally.revoked), (0, 0));
    assert_eq!(count(&again, "in_sync"), 2);
}

async fn another_replica(h: &Harness) -> invite_sync::reconcile::Reconciler {
    let settings = invite_sync::config::Settings::load(None, &h.env).expect("the settings load");
    invite_sync::startup::reconciler(&settings)
        .await
        .expect("the reconciler builds")
}

#[tokio::test]
async fn two_replicas_cycling_at_once_never_invite_anyone_twice() {
    let h = Harness::new().await;
    let other = another_replica(&h).await;
    let emails = people("pair", 60);
    h.add_people(&refs(&emails)).await;
    let token = CancellationToken::new();

    let (first, second) = (Request::new("a"), Request::new("b"));
    let (a, b) = tokio::join!(
        h.reconciler.run_cycle(&first, &token),
        other.run_cycle(&second, &token),
    );

    let created: usize = [a.unwrap(), b.unwrap()]
        .into_iter()
        .map(|result| match result {
            CycleResult::Ran(report) => report.tally.created,
            CycleResult::Skipped { .. } => 0,
        })
        .sum();
    assert_eq!(created, 60);
    assert_one_pending_each(&h, &emails);
    assert_eq!(h.sim.invitations().len(), 60);
    assert_eq!(h.sim.stats().total(SimOp::CreateBulkInvitations), 6);
}

#[tokio::test]
async fn a_restarted_process_shares_the_budget_already_spent() {
    let env = [
        ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
        ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
    ];
    let h = Harness::with(SimOptions::default(), &env).await;
    let emails = people("again", 15);
    h.add_people(&refs(&emails)).await;
    let first = h.cycle().await;
    assert_eq!((first.tally.created, first.tally.backlog), (11, 4));
    let before = writes(&h.sim.stats());

    let restarted = another_replica(&h).await;
    let result = restarted
        .run_cycle(&Request::new("start"), &CancellationToken::new())
        .await
        .unwrap();

    let CycleResult::Ran(report) = result else {
        panic!("the cycle was skipped");
    };
    assert_eq!((report.tally.created, report.tally.backlog), (0, 4));
    assert_eq!(
        (report.budget_left.bulk.left, report.budget_left.single.left),
        (0, 0)
    );
    assert!(
        report.eta_seconds > 3000,
        "the next hour: {}",
        report.eta_seconds
    );
    assert_eq!(writes(&h.sim.stats()), before, "nothing over the budget");
}

#[tokio::test]
async fn an_unknown_outcome_is_not_looked_up_before_clerk_could_have_finished_it() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "2")],
    )
    .await;
    let emails = people("grace", 12);
    h.add_people(&refs(&emails)).await;
    h.sim.inject_fault(Fault::new(
        SimOp::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let first = h.cycle().await;
    assert_eq!(first.tally.bulk_calls, 1);

    // Right away: the ten are neither looked up nor sent again; the other two go out.
    let lists_before = h.sim.stats().total(SimOp::ListInvitations);
    let second = h.cycle().await;
    assert_eq!(second.tally.adopted, 0);
    assert_eq!(second.counts.get("unsettled"), Some(&10));
    assert_eq!(second.tally.created, 2);
    assert_eq!(
        h.sim.stats().total(SimOp::ListInvitations) - lists_before,
        1,
        "only the cycle's own listing, no lookup"
    );

    // Once the grace has passed, the lookup finds nothing and they are sent.
    let pool = h.db.pool.clone();
    crate::common::wait_for("the grace to pass", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let due: bool = sqlx::query_scalar(
                "SELECT bool_and(sent_at + interval '2 seconds' <= now()) FROM invite_sync_ledger WHERE state = 'sending'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            due.then_some(())
        }
    })
    .await;
    let third = h.cycle().await;
    assert_eq!(third.tally.created, 10);
    assert_one_pending_each(&h, &emails);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cycle_that_fails_because_the_database_is_gone_is_counted_as_failed() {
    let h = Harness::new().await;
    // A port nobody listens on any more: the database is down.
    let closed = free_port().expect("a port is free");
    let mut env = h.env.clone();
    env.insert(
        "DATABASE_URL".to_owned(),
        format!("postgres://postgres@127.0.0.1:{closed}/gone"),
    );
    env.insert(
        "INVITE_SYNC__DATABASE__CONNECT_TIMEOUT_SECONDS".to_owned(),
        "1".to_owned(),
    );
    let settings = invite_sync::config::Settings::load(None, &env).expect("the settings load");
    let pool = settings
        .database
        .pool_options()
        .connect_lazy_with(settings.database.connect_options().expect("options"));
    let reconciler = invite_sync::reconcile::Reconciler::new(
        pool,
        h.reconciler.clerk.clone(),
        invite_sync::reconcile::CycleConfig::from_settings(&settings),
    );
    let failed = || {
        invite_sync::metrics::metrics()
            .cycles
            .get_or_create(&invite_sync::metrics::OutcomeLabel {
                outcome: "failed".to_owned(),
            })
            .get()
    };
    let before = failed();
    let result = reconciler
        .run_cycle(&Request::new("test"), &CancellationToken::new())
        .await;
    assert!(result.is_err(), "the cycle cannot run without a database");
    assert!(
        failed() > before,
        "invite_sync_cycles_total{{outcome=\"failed\"}} did not move"
    );
}

#[tokio::test]
async fn rows_no_reader_can_take_are_reported_invalid_and_the_good_ones_beside_them_are_invited() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__SOURCE__RELATION", "hostile_roster")],
    )
    .await;
    let hostile = h.hostile_roster().await;
    let good = people("good", 3);
    h.add_people(&refs(&good)).await;
    let (logs, _guard) = capture_logs();

    let report = h.cycle().await;

    assert_eq!(count(&report, "invalid"), hostile, "{:?}", report.counts);
    assert_eq!(report.tally.created, good.len());
    assert_one_pending_each(&h, &good);
    let text = logs.text();
    for reason in [
        "not_before is infinity",
        "not_before is -infinity",
        "not_before is out of range",
        "created_at is infinity",
        "updated_at is -infinity",
        "public_metadata cannot be read as JSON",
        "email is NULL",
        "public_metadata is NULL",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("roster row is invalid") && l.contains(reason)),
            "the drift log names {reason:?}"
        );
    }
    // A second cycle reads the same roster: nothing stops, nothing is sent again.
    let again = h.cycle().await;
    assert_eq!(count(&again, "invalid"), hostile);
    assert_eq!(again.tally.created, 0);
}

#[tokio::test]
async fn addresses_clerk_would_refuse_are_invalid_before_any_create_is_spent() {
    let h = Harness::new().await;
    let long_local = format!("{}@example.com", "a".repeat(100));
    let long_total = format!("a@{}example.com", format!("{}.", "b".repeat(60)).repeat(4));
    let refused = [
        "ann@[127.0.0.1]",
        long_local.as_str(),
        long_total.as_str(),
        "ann@localhost",
        "ann@exa_mple.com",
        "ann@-example.com",
        ".ann@example.com",
        "ann..lee@example.com",
        "ann(comment)@example.com",
        "ännchen@example.com",
    ];
    h.add_people(&refused).await;
    h.add_people(&["fine+tag@sub.example.com"]).await;

    let report = h.cycle().await;

    assert_eq!(
        count(&report, "invalid"),
        refused.len(),
        "{:?}",
        report.counts
    );
    assert_one_pending_each(&h, &["fine+tag@sub.example.com".to_owned()]);
    assert_eq!(
        h.sim.invitations().len(),
        1,
        "no create was spent on a refused address"
    );
}

#[tokio::test]
async fn an_invitation_for_an_address_the_email_rule_now_refuses_is_reported_and_neither_revoked_nor_fatal(
) {
    let h = Harness::new().await;
    // Invited before the rule was strict: in Clerk, in the ledger as invite-sync's, on the roster.
    let address = "ann@[127.0.0.1]";
    let invitation = create_in_clerk(&h, address).await;
    invite_sync::store::ledger::record_seen(&h.db.pool, TARGET, &invitation, true)
        .await
        .expect("the ledger takes the address Clerk holds");
    h.add_people(&[address, "bo@example.com"]).await;

    let report = h.cycle().await;

    assert_eq!(count(&report, "invalid"), 1, "{:?}", report.counts);
    assert_eq!(report.tally.revoked, 0);
    assert_eq!(pending_of(&h, address).len(), 1, "the invitation stays");
    assert_one_pending_each(&h, &[address.to_owned(), "bo@example.com".to_owned()]);
}

fn list_calls(h: &Harness) -> u64 {
    h.sim.stats().total(SimOp::ListInvitations)
}

async fn set_ledger_state(h: &Harness, email: &str, state: &str) {
    sqlx::query("UPDATE invite_sync_ledger SET state = $2 WHERE email = $1")
        .bind(email)
        .bind(state)
        .execute(&h.db.pool)
        .await
        .expect("the ledger row is changed by hand");
}

#[tokio::test]
async fn with_pending_only_listing_an_invitation_accepted_expired_or_revoked_by_hand_is_seen_once()
{
    let h = Harness::new().await;
    let emails = people("fate", 4);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let quiet = list_calls(&h);
    h.cycle().await;
    assert_eq!(list_calls(&h) - quiet, 1, "one pending listing, no lookup");

    let [accepted, expired, revoked] = [0, 1, 2].map(|i| pending_of(&h, &emails[i]).remove(0));
    assert!(h.sim.accept(&accepted.id));
    assert!(h.sim.expire(&expired.id));
    revoke_in_clerk(&h, &revoked.id).await;
    let before = list_calls(&h);

    let seen = h.cycle().await;

    // The pending listing, then one lookup for the accepted and the expired invitation and
    // two (not revoked, then revoked) for the revoked one.
    assert_eq!(list_calls(&h) - before, 1 + 1 + 1 + 2);
    assert_eq!(count(&seen, "accepted"), 1);
    assert_eq!(count(&seen, "reinvite"), 1);
    assert_eq!(count(&seen, "revoked_externally"), 1);
    assert_eq!(
        seen.tally.created, 1,
        "only the expired one is invited again"
    );
    let states = |entries: Vec<LedgerEntry>| -> Vec<LedgerState> {
        entries.into_iter().map(|e| e.state).collect()
    };
    assert_eq!(
        states(ledger_of(&h, &emails[0]).await),
        [LedgerState::Accepted]
    );
    assert_eq!(
        states(ledger_of(&h, &emails[1]).await),
        [LedgerState::Expired, LedgerState::Pending]
    );
    assert_eq!(
        states(ledger_of(&h, &emails[2]).await),
        [LedgerState::Revoked]
    );
    assert_eq!(pending_of(&h, &emails[1]).len(), 1);
    assert!(pending_of(&h, &emails[2]).is_empty(), "not invited again");

    let writes_before = writes(&h.sim.stats());
    let before = list_calls(&h);
    let again = h.cycle().await;
    assert_eq!(list_calls(&h) - before, 1, "their fates are asked once");
    assert_eq!(writes(&h.sim.stats()), writes_before, "nothing sent");
    assert_eq!(
        (
            count(&again, "accepted"),
            count(&again, "revoked_externally"),
            count(&again, "in_sync")
        ),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn a_steady_state_of_pending_and_accepted_invitations_costs_a_list_call_per_500_pending() {
    const N: usize = 510;
    let h = Harness::with(
        SimOptions {
            secret_key: "sk_live_simulator".to_owned(),
            rate_limits: false,
            ..SimOptions::default()
        },
        &[
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "100000"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "100000"),
        ],
    )
    .await;
    let emails = people("steady", 2 * N);
    add_many(&h, &emails).await;
    let first = h.cycle().await;
    assert_eq!(first.tally.created, 2 * N);
    for email in &emails[..N] {
        let invitation = pending_of(&h, email).remove(0);
        assert!(h.sim.accept(&invitation.id));
    }
    let full = h
        .cycle_with(Request {
            full: true,
            ..Request::new("operator")
        })
        .await;
    assert_eq!(count(&full, "accepted"), N);

    let before = list_calls(&h);
    let steady = h.cycle().await;
    assert_eq!(
        list_calls(&h) - before,
        N.div_ceil(500) as u64,
        "the pending invitations alone are listed, no lookup"
    );
    assert_eq!(
        (count(&steady, "accepted"), count(&steady, "in_sync")),
        (N, N)
    );
    assert_eq!((steady.tally.created, steady.tally.revoked), (0, 0));

    let before = list_calls(&h);
    h.cycle_with(Request {
        full: true,
        ..Request::new("operator")
    })
    .await;
    assert_eq!(
        list_calls(&h) - before,
        (2 * N).div_ceil(500) as u64,
        "a full listing reads every invitation"
    );
}

#[tokio::test]
async fn the_scheduled_full_reconciliation_finds_what_pending_only_cycles_miss() {
    let h = Harness::new().await;
    let emails = people("full", 2);
    h.add_people(&refs(&emails)).await;
    h.cycle().await;
    let person = emails[0].as_str();
    let invitation = pending_of(&h, person).remove(0);
    assert!(h.sim.accept(&invitation.id));
    // The ledger changed by hand: it no longer says pending, so nothing looks it up.
    set_ledger_state(&h, person, "expired").await;

    let missed = h.cycle_with(dry("check")).await;
    assert_eq!(
        count(&missed, "reinvite"),
        1,
        "a pending-only cycle cannot see it"
    );

    // A tick of sync.full_schedule (daily) has passed since the last full listing.
    sqlx::query("UPDATE invite_sync_full_listings SET listed_at = listed_at - interval '25 hours'")
        .execute(&h.db.pool)
        .await
        .expect("the last full listing is moved back");
    let writes_before = writes(&h.sim.stats());
    let full = h.cycle().await;

    assert_eq!(count(&full, "accepted"), 1);
    assert_eq!((count(&full, "reinvite"), full.tally.created), (0, 0));
    assert_eq!(writes(&h.sim.stats()), writes_before, "nothing sent");
    assert_eq!(ledger_of(&h, person).await[0].state, LedgerState::Accepted);
    let listed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT listed_at FROM invite_sync_full_listings")
            .fetch_one(&h.db.pool)
            .await
            .expect("the full listing is recorded");
    assert!(listed_at > chrono::Utc::now() - chrono::Duration::minutes(1));

    let after = h.cycle().await;
    assert_eq!(
        count(&after, "accepted"),
        1,
        "and the pending-only cycles know it now"
    );
}

/// A company adopting invite-sync: half its roster holds pending invitations made by hand,
/// half accepted theirs long ago. The first cycle lists everything; from then on every
/// cycle, full or pending-only, and the plan report the same steady state and cost nothing.
#[tokio::test(flavor = "multi_thread")]
async fn accepted_invitations_made_before_invite_sync_are_users_to_every_later_cycle() {
    const N: usize = 40;
    let h = Harness::new().await;
    let emails = people("adopt", N);
    for email in &emails {
        create_in_clerk(&h, email).await;
    }
    for email in &emails[..N / 2] {
        let invitation = pending_of(&h, email).remove(0);
        assert!(h.sim.accept(&invitation.id));
    }
    add_many(&h, &emails).await;

    let first = h.cycle().await;
    assert_eq!(
        (count(&first, "accepted"), count(&first, "in_sync")),
        (N / 2, N / 2),
        "the first cycle lists every invitation"
    );
    assert_eq!(first.tally.created, 0);
    let known: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invite_sync_known_users \
         WHERE target = $1 AND seen_via = 'accepted' AND deleted_at IS NULL",
    )
    .bind(TARGET)
    .fetch_one(&h.db.pool)
    .await
    .expect("the known users count");
    assert_eq!(known, (N / 2) as i64, "each acceptance makes a known user");

    let preview = h.reconciler.preview(0).await.expect("the plan is made");
    assert_eq!(preview.plan.creates().count(), 0, "no create is planned");
    assert_eq!((preview.queued, preview.awaiting_user_check), (0, 0));
    let plan = Proc::spawn(h.command(), &["plan", "--detailed-exitcode"])
        .wait(Duration::from_secs(30))
        .await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("Creates (0)"), "{plan}");

    let before = h.sim.stats();
    let steady = h.cycle().await;
    assert_eq!(
        (count(&steady, "accepted"), count(&steady, "in_sync")),
        (N / 2, N / 2),
        "a pending-only cycle reports what the full one did"
    );
    assert_eq!(count(&steady, "create"), 0);
    assert_eq!(steady.tally.user_check_calls, 0, "nobody is looked up");
    let after = h.sim.stats();
    assert_eq!(
        after.total(SimOp::ListUsers),
        before.total(SimOp::ListUsers),
        "no user lookup"
    );
    assert_eq!(writes(&after), writes(&before), "no write call");

    let full = h
        .cycle_with(Request {
            full: true,
            ..Request::new("operator")
        })
        .await;
    assert_eq!(
        (count(&full, "accepted"), count(&full, "in_sync")),
        (N / 2, N / 2),
        "and so does the next full listing"
    );
    assert_eq!(writes(&h.sim.stats()), writes(&before), "no write call");
}

/// An invitation made by hand that expired before invite-sync was installed: with
/// `reinvite_expired = false` the full listing reports it, and so does every pending-only
/// cycle after it, which invites nobody.
#[tokio::test]
async fn an_expired_invitation_made_before_invite_sync_is_reported_by_every_later_cycle() {
    let h = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__SYNC__REINVITE_EXPIRED", "false")],
    )
    .await;
    let emails = people("lapsed", 4);
    for email in &emails[..2] {
        let invitation = create_in_clerk(&h, email).await;
        assert!(h.sim.expire(&invitation.id));
    }
    add_many(&h, &emails).await;

    let first = h.cycle().await;
    assert_eq!(
        (count(&first, "expired"), first.tally.created),
        (2, 2),
        "the first cycle lists every invitation"
    );

    let before = h.sim.stats();
    let steady = h.cycle().await;
    assert_eq!(
        (count(&steady, "expired"), count(&steady, "in_sync")),
        (2, 2),
        "a pending-only cycle reports what the full one did"
    );
    assert_eq!(count(&steady, "create"), 0);
    assert_eq!(writes(&h.sim.stats()), writes(&before), "no write call");
    for email in &emails[..2] {
        assert!(
            pending_of(&h, email).is_empty(),
            "{email} is not invited again"
        );
    }
}
