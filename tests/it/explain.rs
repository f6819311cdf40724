//! `invite-sync explain EMAIL` and `GET /v1/people/{email}` over PostgreSQL and the
//! simulator: each case asks both, and both name the rule that decided.

use std::time::Duration;

use invite_sync::clerk::sim::{Fault, FaultKind, Operation, SimOptions};
use invite_sync::domain::CreateInvitation;
use reqwest::header::AUTHORIZATION;
use serde_json::Value;

use crate::common::{people, Harness, Proc, Service};

const API_TOKEN: &str = "operator-token-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(60);

async fn harness(overrides: &[(&str, &str)]) -> Harness {
    let mut all = vec![("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN)];
    all.extend_from_slice(overrides);
    Harness::with(SimOptions::default(), &all).await
}

/// The command's JSON and the endpoint's for one address; both must agree on the decision.
async fn explain(h: &Harness, service: &Service, email: &str) -> (Value, Value) {
    let finished = Proc::spawn(h.command(), &["explain", email, "--format", "json"])
        .wait(DEADLINE)
        .await;
    finished.assert_code(0);
    let command: Value = serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("explain prints JSON ({e}): {finished}"));
    let response = service
        .client
        .get(service.url(&format!("/v1/people/{email}")))
        .header(AUTHORIZATION, format!("Bearer {API_TOKEN}"))
        .send()
        .await
        .expect("the service answers");
    assert_eq!(response.status(), 200);
    let api: Value = response.json().await.expect("the endpoint answers JSON");
    assert_eq!(
        command["decision"]["category"], api["decision"]["category"],
        "the command and the endpoint decide alike"
    );
    assert_eq!(command["email"], api["email"]);
    (command, api)
}

fn rule(explanation: &Value) -> &str {
    explanation["decision"]["rule"].as_str().unwrap_or_default()
}

#[track_caller]
fn assert_rule(explanation: &Value, category: &str, starts: &str) {
    assert_eq!(
        explanation["decision"]["category"], category,
        "{explanation:#}"
    );
    assert!(
        rule(explanation).starts_with(starts),
        "rule {:?} should start with {starts:?}",
        rule(explanation)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_person_and_one_waiting_for_the_next_budget_window() {
    let h = harness(&[
        ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
        ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
    ])
    .await;
    let emails = people("wait", 15);
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    h.add_people(&refs).await;
    let report = h.cycle().await;
    assert_eq!(report.tally.created, 11);
    let service = Service::http_alone(&h).await;
    let pending: Vec<String> = h
        .pending()
        .into_iter()
        .map(|i| i.email_address.to_lowercase())
        .collect();
    let invited = pending.first().expect("someone was invited");
    let waiting = emails
        .iter()
        .find(|e| !pending.contains(e))
        .expect("someone waits");

    for explanation in <[Value; 2]>::from(explain(&h, &service, invited).await) {
        assert_rule(
            &explanation,
            "in_sync",
            "invited and pending: invitation inv_",
        );
        assert_eq!(explanation["on_roster"], true);
        assert_eq!(explanation["ledger"][0]["state"], "pending");
        assert_eq!(explanation["clerk"]["invitations"][0]["status"], "pending");
        assert_eq!(explanation["clerk"]["invitations"][0]["owned"], true);
    }
    for explanation in <[Value; 2]>::from(explain(&h, &service, waiting).await) {
        assert_rule(
            &explanation,
            "create",
            "waiting: the create budget is spent until ",
        );
        assert!(rule(&explanation).contains("(next free slot)"));
        let waits = &explanation["decision"]["waits_for"];
        assert_eq!(waits["reason"], "budget");
        let until: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(waits["until"].clone()).expect("a time to wait until");
        assert!(until > chrono::Utc::now() + chrono::Duration::minutes(30));
        assert!(explanation["ledger"].as_array().is_some_and(Vec::is_empty));
    }
    service.stop().await.expect("the service stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_create_an_existing_user_and_an_address_not_on_the_roster() {
    let h = harness(&[]).await;
    h.sim.seed_users(&["eve@example.com"]);
    h.reconciler
        .clerk
        .create_invitation(&CreateInvitation::new("stranger@example.com"))
        .await
        .expect("an invitation made by hand");
    h.add_people(&["solo@example.com", "eve@example.com"]).await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        1,
        FaultKind::Status {
            status: 422,
            retry_after: None,
        },
    ));
    let report = h.cycle().await;
    assert_eq!(report.tally.failed, 1);
    let service = Service::http_alone(&h).await;

    for explanation in <[Value; 2]>::from(explain(&h, &service, "solo@example.com").await) {
        assert_rule(&explanation, "failed", "refused by Clerk: fault_injected");
        assert!(rule(&explanation).contains("retried when the row changes"));
        assert_eq!(explanation["decision"]["waits_for"]["reason"], "row_change");
        assert!(explanation["last_errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("fault_injected")));
    }
    for explanation in <[Value; 2]>::from(explain(&h, &service, "EVE@example.com").await) {
        assert_rule(
            &explanation,
            "already_user",
            "already a user (seen via lookup, ",
        );
        assert_eq!(explanation["user"]["seen_via"], "lookup");
        assert_eq!(
            explanation["clerk"]["users"].as_array().map(Vec::len),
            Some(1)
        );
    }
    for explanation in <[Value; 2]>::from(explain(&h, &service, "stranger@example.com").await) {
        assert_rule(
            &explanation,
            "foreign",
            "not on the roster; Clerk holds a foreign pending invitation made on ",
        );
        assert_eq!(explanation["on_roster"], false);
        assert_eq!(explanation["clerk"]["invitations"][0]["owned"], false);
    }

    // A bad address: the command's usage error, the endpoint's 400, both naming it.
    let bad = Proc::spawn(h.command(), &["explain", "not-an-address"])
        .wait(DEADLINE)
        .await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("not-an-address"), "{bad}");
    let response = service
        .client
        .get(service.url("/v1/people/not-an-address"))
        .header(AUTHORIZATION, format!("Bearer {API_TOKEN}"))
        .send()
        .await
        .expect("the service answers");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("a JSON error");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("not-an-address")));
    let anonymous = service
        .client
        .get(service.url("/v1/people/solo@example.com"))
        .send()
        .await
        .expect("the service answers");
    assert_eq!(anonymous.status(), 401);

    // Offline: Clerk is not asked, and the refusal still decides.
    let offline = Proc::spawn(h.command(), &["explain", "solo@example.com", "--offline"])
        .wait(DEADLINE)
        .await;
    offline.assert_code(0);
    assert!(
        offline
            .stdout
            .contains("Decision: refused by Clerk: fault_injected")
            && offline.stdout.contains("Clerk was not asked (--offline)"),
        "{offline}"
    );
    service.stop().await.expect("the service stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_person_and_one_whose_revocation_the_guard_holds() {
    let h = harness(&[("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "2")]).await;
    let emails = people("guard", 12);
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    h.add_people(&refs).await;
    assert_eq!(h.cycle().await.tally.created, 12);
    h.remove_people(&refs[..1]).await;
    assert_eq!(h.cycle().await.tally.revoked, 1);
    h.remove_people(&refs[1..4]).await;
    let held = h.cycle().await;
    assert_eq!(held.tally.revoked, 0);
    let service = Service::http_alone(&h).await;

    for explanation in <[Value; 2]>::from(explain(&h, &service, refs[0]).await) {
        assert_rule(
            &explanation,
            "not_on_roster",
            "revoked: removed from the roster; invitation inv_",
        );
        assert!(rule(&explanation).contains(" revoked at "));
        assert_eq!(explanation["ledger"][0]["state"], "revoked");
    }
    for explanation in <[Value; 2]>::from(explain(&h, &service, refs[2]).await) {
        assert_rule(
            &explanation,
            "revoke",
            "held: 3 revocations exceed sync.max_revocations 2",
        );
        assert_eq!(explanation["decision"]["waits_for"]["reason"], "guard");
    }
    let text = Proc::spawn(h.command(), &["explain", refs[2]])
        .wait(DEADLINE)
        .await;
    text.assert_code(0);
    assert!(
        text.stdout
            .contains("Decision: held: 3 revocations exceed sync.max_revocations 2"),
        "{text}"
    );
    service.stop().await.expect("the service stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_membership_in_a_full_organization() {
    let h = harness(&[]).await;
    h.sim
        .create_organization("Acme", Some("acme"), 2)
        .expect("the organization is created");
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        sqlx::query("INSERT INTO desired_memberships (email, organization) VALUES ($1, 'acme')")
            .bind(email)
            .execute(&h.db.pool)
            .await
            .expect("a membership roster row");
    }
    let report = h.cycle().await;
    assert_eq!(report.memberships.invited, 2);
    let invited: Vec<String> = h
        .sim
        .organization_invitations()
        .into_iter()
        .map(|i| i.email_address.to_lowercase())
        .collect();
    let waiting = ["a@example.com", "b@example.com", "c@example.com"]
        .into_iter()
        .find(|e| !invited.iter().any(|i| i == e))
        .expect("one waits");
    let service = Service::http_alone(&h).await;

    for explanation in <[Value; 2]>::from(explain(&h, &service, waiting).await) {
        let memberships = explanation["memberships"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(memberships.len(), 1, "{explanation:#}");
        assert_eq!(memberships[0]["category"], "waiting");
        assert_eq!(
            memberships[0]["rule"], "waiting: organization acme is full (2 of 2)",
            "{explanation:#}"
        );
        assert_eq!(explanation["membership_rows"][0]["organization"], "acme");
        assert_eq!(explanation["on_roster"], false);
    }
    for explanation in <[Value; 2]>::from(explain(&h, &service, &invited[0]).await) {
        assert_eq!(
            explanation["membership_ledger"][0]["state"], "pending",
            "{explanation:#}"
        );
    }
    service.stop().await.expect("the service stops");
}
