//! The membership roster kept equal to Clerk's organizations, over PostgreSQL and the
//! simulator on a real socket: three organizations (one named by slug), admins and members,
//! existing accounts and new people; then a role change, a leaver and a membership deleted
//! in Clerk, each converging within one cycle; a steady cycle that writes nothing; and an
//! organization whose roster emptied, held by the guard until released.

use std::collections::BTreeSet;

use invite_sync::clerk::organization::Organization;
use invite_sync::clerk::sim::{Operation, SimOptions, SimStats};
use invite_sync::clerk::InvitationStatus;
use invite_sync::reconcile::memberships::guard::HoldReason;
use invite_sync::reconcile::memberships::overview;
use invite_sync::reconcile::{Report, Request};
use invite_sync::store::runs;

use crate::common::{http_client, wait_for, Harness, Service};

/// What Clerk holds of one person in one organization: a membership or a pending
/// invitation, with its role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    organization: String,
    email: String,
    role: String,
    kind: &'static str,
}

fn place(organization: &Organization, email: &str, role: &str, kind: &'static str) -> Place {
    Place {
        organization: organization.id.clone(),
        email: email.to_owned(),
        role: role.to_owned(),
        kind,
    }
}

/// Every membership and pending organization invitation in the simulator.
fn clerk_places(harness: &Harness) -> BTreeSet<Place> {
    let sim = &harness.sim;
    let users = sim.users();
    let email_of = |user_id: &str| {
        users
            .iter()
            .find(|u| u.id == user_id)
            .and_then(|u| u.email_addresses.first())
            .map(|a| a.email_address.to_lowercase())
            .unwrap_or_default()
    };
    let members = sim.memberships().into_iter().map(|m| Place {
        organization: m.organization.id.clone(),
        email: email_of(m.user_id().unwrap_or_default()),
        role: m.role.clone(),
        kind: "member",
    });
    let pending = sim
        .organization_invitations()
        .into_iter()
        .filter(|i| i.status == InvitationStatus::Pending)
        .map(|i| Place {
            organization: i.organization_id.clone(),
            email: i.email_address.to_lowercase(),
            role: i.role.clone(),
            kind: "invited",
        });
    members.chain(pending).collect()
}

/// The calls that change something in Clerk, counted so far.
fn writes(stats: &SimStats) -> u64 {
    [
        Operation::CreateInvitation,
        Operation::CreateBulkInvitations,
        Operation::RevokeInvitation,
        Operation::CreateOrganizationInvitation,
        Operation::CreateOrganizationInvitationsBulk,
        Operation::RevokeOrganizationInvitation,
        Operation::CreateOrganizationMembership,
        Operation::UpdateOrganizationMembership,
        Operation::DeleteOrganizationMembership,
    ]
    .into_iter()
    .map(|operation| stats.total(operation))
    .sum()
}

async fn add_row(harness: &Harness, email: &str, organization: &str, role: Option<&str>) {
    sqlx::query("INSERT INTO desired_memberships (email, organization, role) VALUES ($1, $2, $3)")
        .bind(email)
        .bind(organization)
        .bind(role)
        .execute(&harness.db.pool)
        .await
        .expect("a membership roster row is inserted");
}

async fn remove_row(harness: &Harness, email: &str) {
    sqlx::query("DELETE FROM desired_memberships WHERE email = $1")
        .bind(email)
        .execute(&harness.db.pool)
        .await
        .expect("a membership roster row is deleted");
}

async fn set_role(harness: &Harness, email: &str, role: &str) {
    sqlx::query("UPDATE desired_memberships SET role = $2 WHERE email = $1")
        .bind(email)
        .bind(role)
        .execute(&harness.db.pool)
        .await
        .expect("a membership roster row is updated");
}

fn pending_invitation_id(harness: &Harness, email: &str) -> String {
    harness
        .sim
        .organization_invitations()
        .into_iter()
        .find(|i| i.email_address == email && i.status == InvitationStatus::Pending)
        .map(|i| i.id)
        .unwrap_or_else(|| panic!("{email} has a pending organization invitation"))
}

fn assert_clean(report: &Report) {
    let memberships = &report.memberships;
    assert!(
        memberships.errors.is_empty() && memberships.stopped.is_none() && memberships.held == 0,
        "the membership pass went wrong: {memberships:#?}"
    );
}

struct Orgs {
    acme: Organization,
    beta: Organization,
    gamma: Organization,
}

/// Three organizations: Acme named by its slug, Beta and Gamma by id.
fn organizations(harness: &Harness) -> Orgs {
    let create = |name: &str, slug: &str| {
        harness
            .sim
            .create_organization(name, Some(slug), 0)
            .expect("the organization is created")
    };
    Orgs {
        acme: create("Acme", "acme"),
        beta: create("Beta", "beta"),
        gamma: create("Gamma", "gamma"),
    }
}

#[tokio::test]
async fn the_membership_roster_converges_and_each_change_takes_one_cycle() {
    // A handful of people: two leavers are more than the default share of what is owned.
    let harness = Harness::with(
        SimOptions::default(),
        &[
            ("INVITE_SYNC__ORGANIZATIONS__REMOVE_MEMBERS", "true"),
            ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1"),
        ],
    )
    .await;
    let orgs = organizations(&harness);
    harness.sim.create_user("old.admin@example.com");
    harness.sim.create_user("old.member@example.com");
    let (acme, beta, gamma) = (&orgs.acme, &orgs.beta, &orgs.gamma);
    add_row(&harness, "boss@example.com", "acme", Some("org:admin")).await;
    add_row(&harness, "old.member@example.com", "acme", None).await;
    add_row(&harness, "new.one@example.com", "acme", Some("org:member")).await;
    add_row(
        &harness,
        "old.admin@example.com",
        &beta.id,
        Some("org:admin"),
    )
    .await;
    add_row(&harness, "new.two@example.com", &beta.id, None).await;
    add_row(&harness, "new.three@example.com", &beta.id, None).await;
    add_row(
        &harness,
        "new.four@example.com",
        &gamma.id,
        Some("org:admin"),
    )
    .await;

    let first = harness.cycle().await;
    assert_clean(&first);
    assert_eq!(first.outcome, runs::Outcome::Succeeded, "{first:#?}");
    let mut roster: BTreeSet<Place> = [
        place(acme, "boss@example.com", "org:admin", "invited"),
        place(acme, "old.member@example.com", "org:member", "member"),
        place(acme, "new.one@example.com", "org:member", "invited"),
        place(beta, "old.admin@example.com", "org:admin", "member"),
        place(beta, "new.two@example.com", "org:member", "invited"),
        place(beta, "new.three@example.com", "org:member", "invited"),
        place(gamma, "new.four@example.com", "org:admin", "invited"),
    ]
    .into();
    assert_eq!(clerk_places(&harness), roster);
    assert_eq!(
        first.memberships.members_added, 2,
        "existing accounts, no email"
    );
    assert_eq!(first.memberships.invited, 5);

    // Two people accept; a steady cycle then writes nothing.
    for email in ["new.one@example.com", "boss@example.com"] {
        let id = pending_invitation_id(&harness, email);
        assert!(harness.sim.accept_organization_invitation(&id));
    }
    for email in ["new.one@example.com", "boss@example.com"] {
        let mut accepted = roster
            .iter()
            .find(|p| p.email == email)
            .cloned()
            .expect("on the roster");
        roster.remove(&accepted);
        accepted.kind = "member";
        roster.insert(accepted);
    }
    let before = writes(&harness.sim.stats());
    let steady = harness.cycle().await;
    assert_clean(&steady);
    assert_eq!(clerk_places(&harness), roster);
    assert_eq!(
        writes(&harness.sim.stats()),
        before,
        "a steady cycle writes nothing"
    );

    // A role change: a member's role and a pending invitation's.
    set_role(&harness, "old.member@example.com", "org:admin").await;
    set_role(&harness, "new.two@example.com", "org:admin").await;
    let changed = harness.cycle().await;
    assert_clean(&changed);
    for email in ["old.member@example.com", "new.two@example.com"] {
        let mut place = roster
            .iter()
            .find(|p| p.email == email)
            .cloned()
            .expect("on the roster");
        roster.remove(&place);
        place.role = "org:admin".to_owned();
        roster.insert(place);
    }
    assert_eq!(clerk_places(&harness), roster);
    assert_eq!(changed.memberships.roles_changed, 1);

    // A leaver who had accepted (removed: remove_members is on) and one still invited.
    remove_row(&harness, "new.one@example.com").await;
    remove_row(&harness, "new.three@example.com").await;
    let left = harness.cycle().await;
    assert_clean(&left);
    roster.retain(|p| p.email != "new.one@example.com" && p.email != "new.three@example.com");
    assert_eq!(clerk_places(&harness), roster);
    assert_eq!((left.memberships.removed, left.memberships.revoked), (1, 1));

    // A membership deleted in Clerk for someone on the roster is made again (Acme keeps
    // another admin, so Clerk allows it).
    let user_id = |email: &str| {
        harness
            .sim
            .users()
            .into_iter()
            .find(|u| u.email_addresses.iter().any(|a| a.email_address == email))
            .map(|u| u.id)
            .unwrap_or_else(|| panic!("{email} is a user"))
    };
    harness
        .reconciler
        .clerk
        .delete_membership(&acme.id, &user_id("old.member@example.com"))
        .await
        .expect("the membership is deleted in Clerk");
    let restored = harness.cycle().await;
    assert_clean(&restored);
    assert_eq!(restored.memberships.memberships_gone, 1);
    assert_eq!(restored.memberships.members_added, 1);
    assert_eq!(clerk_places(&harness), roster);

    // A role changed in Clerk is drift, set back.
    harness
        .reconciler
        .clerk
        .update_membership_role(&acme.id, &user_id("boss@example.com"), "org:member")
        .await
        .expect("the role is changed in Clerk");
    let drift = harness.cycle().await;
    assert_clean(&drift);
    assert_eq!(drift.memberships.roles_changed, 1);
    assert_eq!(clerk_places(&harness), roster);

    let before = writes(&harness.sim.stats());
    let steady = harness.cycle().await;
    assert_clean(&steady);
    assert_eq!(steady.outcome, runs::Outcome::Succeeded);
    assert_eq!(
        writes(&harness.sim.stats()),
        before,
        "a steady cycle writes nothing"
    );
    assert_eq!(clerk_places(&harness), roster);
}

#[tokio::test]
async fn memberships_made_by_hand_are_reported_and_never_touched() {
    let harness = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__ORGANIZATIONS__REMOVE_MEMBERS", "true")],
    )
    .await;
    let orgs = organizations(&harness);
    let hand = harness
        .sim
        .add_membership(&orgs.acme.id, "hand@example.com", "org:admin", false)
        .expect("a membership made by hand");
    harness
        .sim
        .add_membership(&orgs.acme.id, "scim@example.com", "org:member", true)
        .expect("a membership Directory Sync manages");
    add_row(&harness, "hand@example.com", "acme", Some("org:member")).await;
    add_row(&harness, "ann@example.com", "acme", None).await;
    let before = harness.sim.memberships();
    let report = harness.cycle().await;
    assert_clean(&report);
    assert_eq!(
        report.memberships.counts.get("reported"),
        Some(&2),
        "{report:#?}"
    );
    assert_eq!(report.memberships.invited, 1);
    let after = harness.sim.memberships();
    assert_eq!(before, after, "no membership was changed or removed");
    assert!(after
        .iter()
        .any(|m| m.id == hand.id && m.role == "org:admin"));
}

#[tokio::test]
async fn unknown_organizations_and_roles_are_invalid_and_the_rest_go_on() {
    let harness = Harness::new().await;
    organizations(&harness);
    add_row(&harness, "ann@example.com", "no-such-org", None).await;
    add_row(&harness, "bob@example.com", "acme", Some("org:nope")).await;
    add_row(&harness, "cy@example.com", "acme", None).await;
    let report = harness.cycle().await;
    assert_eq!(
        report.memberships.counts.get("invalid"),
        Some(&2),
        "{report:#?}"
    );
    assert_eq!(report.memberships.invited, 1);
    let invited: Vec<String> = harness
        .sim
        .organization_invitations()
        .into_iter()
        .map(|i| i.email_address)
        .collect();
    assert_eq!(invited, ["cy@example.com"]);
}

#[tokio::test]
async fn a_full_organizations_people_wait_at_the_cost_of_no_refused_call() {
    let harness = Harness::new().await;
    let full = harness
        .sim
        .create_organization("Full", Some("full"), 2)
        .expect("the organization is created");
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        add_row(&harness, email, &full.id, None).await;
    }
    let report = harness.cycle().await;
    assert_eq!(report.memberships.invited, 2);
    assert_eq!(
        report.memberships.waiting.get("full"),
        Some(&1),
        "{report:#?}"
    );
    let again = harness.cycle().await;
    assert_eq!(again.memberships.invited, 0);
    let stats = harness.sim.stats();
    assert_eq!(
        stats.count(Operation::CreateOrganizationInvitation, 403)
            + stats.count(Operation::CreateOrganizationInvitationsBulk, 403),
        0,
        "the room was read before sending"
    );
}

#[tokio::test]
async fn emptying_one_organizations_roster_is_held_until_released() {
    let harness = Harness::new().await;
    let orgs = organizations(&harness);
    for i in 0..20 {
        add_row(&harness, &format!("a{i}@example.com"), "acme", None).await;
    }
    for i in 0..2 {
        add_row(&harness, &format!("g{i}@example.com"), &orgs.gamma.id, None).await;
    }
    let first = harness.cycle().await;
    assert_clean(&first);
    assert_eq!(first.memberships.invited, 22);

    sqlx::query("DELETE FROM desired_memberships WHERE organization = $1")
        .bind(&orgs.gamma.id)
        .execute(&harness.db.pool)
        .await
        .expect("the organization's rows are deleted");
    let held = harness.cycle().await;
    assert_eq!(held.outcome, runs::Outcome::Held, "{held:#?}");
    assert_eq!(held.memberships.held, 2);
    assert_eq!(
        held.memberships.hold_reason,
        Some(HoldReason::EmptyOrganization)
    );
    assert_eq!(
        held.memberships.emptied,
        std::slice::from_ref(&orgs.gamma.id)
    );
    let gamma_pending = |harness: &Harness| {
        harness
            .sim
            .organization_invitations()
            .into_iter()
            .filter(|i| i.organization_id == orgs.gamma.id)
            .filter(|i| i.status == InvitationStatus::Pending)
            .count()
    };
    assert_eq!(gamma_pending(&harness), 2, "nothing was revoked");
    let still = harness.cycle().await;
    assert_eq!(still.memberships.held, 2, "held until released");

    let released = harness
        .cycle_with(Request {
            allow_revocations: 2,
            ..Request::new("test")
        })
        .await;
    assert_eq!(released.memberships.revoked, 2, "{released:#?}");
    assert_eq!(gamma_pending(&harness), 0);
    let after = harness.cycle().await;
    assert_eq!(after.outcome, runs::Outcome::Succeeded);
    assert_eq!(after.memberships.held, 0);
}

/// The addresses of every instance invitation and every organization invitation, of any
/// status, in the simulator.
fn emails_sent(harness: &Harness) -> (Vec<String>, Vec<String>) {
    let instance = harness
        .sim
        .invitations()
        .into_iter()
        .map(|i| i.email_address.to_lowercase())
        .collect();
    let organization = harness
        .sim
        .organization_invitations()
        .into_iter()
        .map(|i| i.email_address.to_lowercase())
        .collect();
    (instance, organization)
}

#[tokio::test]
async fn someone_on_both_rosters_gets_one_email_then_the_membership_without_another() {
    let harness = Harness::new().await;
    let orgs = organizations(&harness);
    harness.add_people(&["both@example.com"]).await;
    add_row(&harness, "both@example.com", "acme", Some("org:admin")).await;
    add_row(&harness, "solo@example.com", "acme", None).await;

    // The instance invitation is the one email; the membership roster alone invites solo.
    for _ in 0..2 {
        let report = harness.cycle().await;
        assert_clean(&report);
        assert_eq!(
            report.memberships.waiting.get("instance_first"),
            Some(&1),
            "{report:#?}"
        );
        assert_eq!(
            emails_sent(&harness),
            (
                vec!["both@example.com".to_owned()],
                vec!["solo@example.com".to_owned()]
            )
        );
    }
    // plan shows the reason.
    let preview = overview::preview(&harness.reconciler)
        .await
        .expect("the preview reads");
    let acme = preview
        .organizations
        .iter()
        .find(|o| o.organization == orgs.acme.id)
        .expect("acme is previewed");
    assert_eq!(acme.waiting.get("instance_first"), Some(&1), "{acme:#?}");
    let line = acme
        .items
        .iter()
        .find(|l| l.email == "both@example.com")
        .expect("both is a line of the plan");
    assert_eq!(line.category, "waiting");
    assert!(
        line.detail
            .as_deref()
            .is_some_and(|d| d.starts_with("instance invitation first")),
        "{line:?}"
    );

    // Accepted through the simulator's control API: an account, and then a membership with
    // the row's role, made directly.
    let invitation = harness
        .sim
        .invitations()
        .into_iter()
        .find(|i| i.email_address == "both@example.com")
        .expect("both's instance invitation");
    let accepted = http_client()
        .post(
            harness
                .sim
                .base_url()
                .join(&format!("_sim/invitations/{}/accept", invitation.id))
                .expect("the control URL"),
        )
        .send()
        .await
        .expect("the simulator answers");
    assert!(accepted.status().is_success(), "{accepted:?}");
    let joined = harness.cycle().await;
    assert_clean(&joined);
    assert_eq!(joined.memberships.members_added, 1, "{joined:#?}");
    assert_eq!(joined.memberships.waiting.get("instance_first"), None);
    assert!(clerk_places(&harness).contains(&place(
        &orgs.acme,
        "both@example.com",
        "org:admin",
        "member"
    )));
    assert_eq!(
        emails_sent(&harness),
        (
            vec!["both@example.com".to_owned()],
            vec!["solo@example.com".to_owned()]
        ),
        "no organization invitation was ever created for both"
    );
    let before = writes(&harness.sim.stats());
    let steady = harness.cycle().await;
    assert_clean(&steady);
    assert_eq!(
        writes(&harness.sim.stats()),
        before,
        "a steady cycle writes nothing"
    );
}

#[tokio::test]
async fn with_existing_users_invite_the_organization_invitation_follows_the_acceptance() {
    let harness = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__ORGANIZATIONS__EXISTING_USERS", "invite")],
    )
    .await;
    organizations(&harness);
    harness.add_people(&["both@example.com"]).await;
    add_row(&harness, "both@example.com", "acme", None).await;
    let first = harness.cycle().await;
    assert_clean(&first);
    assert_eq!(first.memberships.waiting.get("instance_first"), Some(&1));
    assert_eq!(first.memberships.invited, 0);
    let invitation = harness
        .sim
        .invitations()
        .into_iter()
        .next()
        .expect("the instance invitation");
    assert!(harness.sim.accept(&invitation.id));
    // An account now: the operator asked for organization invitations to existing accounts.
    let after = harness.cycle().await;
    assert_clean(&after);
    assert_eq!(after.memberships.invited, 1, "{after:#?}");
    assert_eq!(
        emails_sent(&harness).1,
        ["both@example.com"],
        "the organization invitation, sent to the account"
    );
}

#[tokio::test]
async fn allow_revocations_is_one_allowance_shared_by_the_instance_and_the_membership_guards() {
    let harness = Harness::new().await;
    let orgs = organizations(&harness);
    let instance = ["i0@example.com", "i1@example.com", "i2@example.com"];
    harness.add_people(&instance).await;
    for i in 0..3 {
        add_row(&harness, &format!("a{i}@example.com"), "acme", None).await;
    }
    for i in 0..2 {
        add_row(&harness, &format!("g{i}@example.com"), &orgs.gamma.id, None).await;
    }
    let first = harness.cycle().await;
    assert_clean(&first);
    assert_eq!(first.memberships.invited, 5);

    // The instance roster emptied (3 held) and Gamma's membership roster (2 held).
    harness.remove_people(&instance).await;
    sqlx::query("DELETE FROM desired_memberships WHERE organization = $1")
        .bind(&orgs.gamma.id)
        .execute(&harness.db.pool)
        .await
        .expect("the organization's rows are deleted");
    let held = harness.cycle().await;
    assert_eq!(
        (held.held_revocations, held.memberships.held),
        (3, 2),
        "{held:#?}"
    );

    // N = 4: the instance guard takes 3, the membership guard the 1 left.
    let released = harness
        .cycle_with(Request {
            allow_revocations: 4,
            ..Request::new("test")
        })
        .await;
    assert_eq!(released.tally.revoked, 3, "{released:#?}");
    assert_eq!(
        (released.memberships.revoked, released.memberships.held),
        (1, 1),
        "{released:#?}"
    );
    let gamma_pending = harness
        .sim
        .organization_invitations()
        .into_iter()
        .filter(|i| i.organization_id == orgs.gamma.id)
        .filter(|i| i.status == InvitationStatus::Pending)
        .count();
    assert_eq!(gamma_pending, 1);
    let still = harness.cycle().await;
    assert_eq!(still.memberships.held, 1, "held until released");
}

// ---------------------------------------------------------------------------
// Clerk's organization webhooks, through the running service

const CLERK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// POSTs a Clerk (Svix) event signed with the configured secret; returns the status and body.
async fn clerk_event(service: &Service, event: &serde_json::Value) -> (u16, serde_json::Value) {
    let body = event.to_string().into_bytes();
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let timestamp = chrono::Utc::now().timestamp();
    let signature = invite_sync::webhook_signature::sign(CLERK_SECRET, &id, timestamp, &body)
        .expect("the secret is valid");
    let response = service
        .client
        .post(service.url("/v1/webhooks/clerk"))
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("the body reads");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_invitation_is_recorded_and_a_membership_deleted_in_clerk_is_made_again() {
    let harness = Harness::serving(&[
        ("INVITE_SYNC__HTTP__CLERK_WEBHOOK_SECRET", CLERK_SECRET),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.1"),
    ])
    .await;
    let acme = harness
        .sim
        .create_organization("Acme", Some("acme"), 0)
        .expect("the organization is created");
    add_row(&harness, "ann@example.com", "acme", Some("org:admin")).await;
    add_row(&harness, "bob@example.com", "acme", Some("org:admin")).await;
    let service = Service::start(&harness).await;
    let sim = &harness.sim;
    let invitation = wait_for("ann's organization invitation", DEADLINE, || async {
        sim.organization_invitations()
            .into_iter()
            .find(|i| i.email_address == "ann@example.com")
    })
    .await;
    // Accepted once the cycle recorded what it sent.
    let pool = &harness.db.pool;
    wait_for("the invitation recorded", DEADLINE, || async {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM invite_sync_membership_ledger WHERE clerk_id = $1",
        )
        .bind(&invitation.id)
        .fetch_optional(pool)
        .await
        .expect("the ledger reads")
        .filter(|state| state == "pending")
    })
    .await;
    assert!(sim.accept_organization_invitation(&invitation.id));
    let ann = sim
        .users()
        .into_iter()
        .find(|u| {
            u.email_addresses
                .iter()
                .any(|a| a.email_address == "ann@example.com")
        })
        .expect("ann became a user");

    let accepted = serde_json::json!({"type": "organizationInvitation.accepted", "object": "event",
        "data": {"object": "organization_invitation", "id": invitation.id,
                 "email_address": "Ann@Example.com", "organization_id": acme.id,
                 "role": "org:admin", "status": "accepted", "user_id": ann.id}});
    let (status, body) = clerk_event(&service, &accepted).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    let (state, user_id): (String, Option<String>) = sqlx::query_as(
        "SELECT state, user_id FROM invite_sync_membership_ledger WHERE clerk_id = $1",
    )
    .bind(&invitation.id)
    .fetch_one(&harness.db.pool)
    .await
    .expect("the ledger holds the invitation");
    assert_eq!(
        (state.as_str(), user_id.as_deref()),
        ("accepted", Some(ann.id.as_str()))
    );
    let known: Option<String> = sqlx::query_scalar(
        "SELECT clerk_user_id FROM invite_sync_known_users WHERE email = 'ann@example.com'",
    )
    .fetch_one(&harness.db.pool)
    .await
    .expect("ann is a known user");
    assert_eq!(known.as_deref(), Some(ann.id.as_str()));

    let broken = serde_json::json!({"type": "organizationInvitation.accepted",
        "data": {"id": invitation.id, "email_address": "ann@example.com"}});
    let (status, body) = clerk_event(&service, &broken).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("data.user_id"), "{body}");

    // Bob is invited too (another admin): ann's membership may go.
    wait_for("bob's organization invitation", DEADLINE, || async {
        sim.organization_invitations()
            .into_iter()
            .find(|i| i.email_address == "bob@example.com")
            .map(|i| sim.accept_organization_invitation(&i.id))
    })
    .await;
    harness
        .reconciler
        .clerk
        .delete_membership(&acme.id, &ann.id)
        .await
        .expect("the membership is deleted in Clerk");
    let deleted = serde_json::json!({"type": "organizationMembership.deleted",
        "data": {"object": "organization_membership", "role": "org:admin",
                 "organization": {"id": acme.id}, "public_user_data": {"user_id": ann.id}}});
    let (status, _) = clerk_event(&service, &deleted).await;
    assert_eq!(status, 200);
    let restored = wait_for("ann's membership made again", DEADLINE, || async {
        sim.memberships()
            .into_iter()
            .find(|m| m.user_id() == Some(ann.id.as_str()))
    })
    .await;
    assert_eq!(restored.role, "org:admin");
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// Crash safety: creates whose answer was lost

#[tokio::test]
async fn creates_whose_answer_was_lost_are_settled_without_a_second_invitation_or_membership() {
    use invite_sync::clerk::sim::{Fault, FaultKind};
    let harness = Harness::with(
        SimOptions::default(),
        &[("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "0")],
    )
    .await;
    organizations(&harness);
    harness.sim.create_user("old@example.com");
    add_row(&harness, "new@example.com", "acme", None).await;
    add_row(&harness, "old@example.com", "acme", None).await;
    harness.sim.inject_fault(Fault::new(
        Operation::CreateOrganizationInvitation,
        1,
        FaultKind::DropAfterApply,
    ));
    harness.sim.inject_fault(Fault::new(
        Operation::CreateOrganizationMembership,
        1,
        FaultKind::StatusAfterApply { status: 502 },
    ));
    let first = harness.cycle().await;
    assert_eq!(first.memberships.unsettled, 2, "{first:#?}");
    assert_eq!(first.outcome, runs::Outcome::Partial);
    // The next cycle looks them up first: Clerk has both, so nothing is sent again.
    let settled = harness.cycle().await;
    assert_eq!(settled.memberships.adopted, 2, "{settled:#?}");
    assert_eq!(
        settled.memberships.invited + settled.memberships.members_added,
        0
    );
    assert!(settled.memberships.errors.is_empty(), "{settled:#?}");
    let stats = harness.sim.stats();
    assert_eq!(stats.total(Operation::CreateOrganizationInvitation), 1);
    assert_eq!(stats.total(Operation::CreateOrganizationMembership), 1);
    assert_eq!(harness.sim.organization_invitations().len(), 1);
    assert_eq!(harness.sim.memberships().len(), 1);
    let before = writes(&harness.sim.stats());
    let steady = harness.cycle().await;
    assert_clean(&steady);
    assert_eq!(steady.outcome, runs::Outcome::Succeeded);
    assert_eq!(writes(&harness.sim.stats()), before);
}

#[tokio::test]
async fn a_dry_run_plans_the_memberships_and_writes_nothing() {
    let harness = Harness::new().await;
    organizations(&harness);
    harness.sim.create_user("old@example.com");
    add_row(&harness, "new@example.com", "acme", Some("org:admin")).await;
    add_row(&harness, "old@example.com", "acme", None).await;
    let report = harness
        .cycle_with(Request {
            dry_run: Some(true),
            ..Request::new("test")
        })
        .await;
    let counts = &report.memberships.counts;
    assert_eq!(
        (counts.get("invite"), counts.get("add_member")),
        (Some(&1), Some(&1)),
        "{report:#?}"
    );
    assert_eq!(
        report.memberships.backlog, 1,
        "the invitation it would send"
    );
    assert_eq!(writes(&harness.sim.stats()), 0);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM invite_sync_membership_ledger)
              + (SELECT count(*) FROM invite_sync_organizations)",
    )
    .fetch_one(&harness.db.pool)
    .await
    .expect("the state reads");
    assert_eq!(recorded, 0, "a dry run records nothing");
}
