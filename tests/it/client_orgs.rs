//! The Clerk client's organization calls against the simulator over a real socket.

use std::collections::HashSet;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use invite_sync::clerk::client::MAX_BULK;
use invite_sync::clerk::sim::{self, Fault, FaultKind, Operation as SimOp, SimHandle, SimOptions};
use invite_sync::clerk::{
    ClerkClient, ClientError, ClientOptions, CreateInvitation, CreateOrganizationInvitation,
    InvitationStatus, Operation, OrganizationRefusal, RequestRate, RetryPolicy,
};

fn options_for(sim: &SimHandle) -> ClientOptions {
    ClientOptions {
        api_url: sim.base_url(),
        secret_key: SecretString::from(sim.secret_key().to_owned()),
        timeout: Duration::from_secs(5),
        rate: None,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
    }
}

async fn sim_and_client() -> (SimHandle, ClerkClient) {
    let sim = sim::start(SimOptions::default()).await.expect("sim starts");
    let client = ClerkClient::new(options_for(&sim)).expect("client builds");
    (sim, client)
}

/// A simulator without rate limits and a client that does not pace itself: for lists long
/// enough to need many pages.
async fn unlimited_sim_and_client() -> (SimHandle, ClerkClient) {
    let sim = sim::start(SimOptions {
        rate_limits: false,
        ..SimOptions::default()
    })
    .await
    .expect("sim starts");
    let client = ClerkClient::new(ClientOptions {
        rate: Some(RequestRate {
            requests: 100_000,
            per: Duration::from_secs(1),
        }),
        ..options_for(&sim)
    })
    .expect("client builds");
    (sim, client)
}

/// A call to the simulator's control API (`/_sim/...`); its JSON answer.
async fn control(sim: &SimHandle, method: reqwest::Method, path: &str, body: Value) -> Value {
    let url = sim
        .root_url()
        .join(path.trim_start_matches('/'))
        .expect("a control URL");
    let response = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect("the control API answers");
    let status = response.status();
    let text = response.text().await.expect("a control body");
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Creates an organization through the control API; its id.
async fn organization(sim: &SimHandle, name: &str, slug: &str, max: u64) -> String {
    let created = control(
        sim,
        reqwest::Method::POST,
        "_sim/organizations",
        json!({"name": name, "slug": slug, "max_allowed_memberships": max}),
    )
    .await;
    let id = created["id"]
        .as_str()
        .expect("an organization id")
        .to_owned();
    assert!(id.starts_with("org_"), "{created}");
    id
}

fn invite(email: &str, role: &str) -> CreateOrganizationInvitation {
    CreateOrganizationInvitation::new(email, role)
}

fn refusal_of<T: std::fmt::Debug>(outcome: Result<T, ClientError>) -> (OrganizationRefusal, u16) {
    let error = outcome.expect_err("Clerk refuses it");
    let refusal = error
        .organization_refusal()
        .unwrap_or_else(|| panic!("not an organization refusal: {error}"));
    (refusal, error.status().expect("Clerk answered"))
}

#[tokio::test]
async fn gets_an_organization_by_id_or_slug_with_the_counts_its_room_needs() {
    let (sim, client) = sim_and_client().await;
    let id = organization(&sim, "Acme", "acme", 5).await;
    let ann = sim.create_user("ann@example.com");
    client
        .create_membership(&id, &ann.id, "org:admin")
        .await
        .expect("a member");
    client
        .create_organization_invitation(&id, &invite("bob@example.com", "org:member"))
        .await
        .expect("an invitation");

    let by_slug = client.get_organization("acme").await.expect("by slug");
    let by_id = client.get_organization(&id).await.expect("by id");
    assert_eq!(by_slug.id, id);
    assert_eq!(by_id.slug, "acme");
    assert_eq!(by_id.members_count, Some(1));
    assert_eq!(by_id.pending_invitations_count, Some(1));
    assert_eq!(by_id.room(), Some(3), "5 less one member and one pending");

    let (refusal, status) = refusal_of(client.get_organization("nobody").await);
    assert_eq!((refusal, status), (OrganizationRefusal::NotFound, 404));
    // A slug is one path segment: a slash in it cannot reach another endpoint.
    let (refusal, _) = refusal_of(client.get_organization("acme/invitations").await);
    assert_eq!(refusal, OrganizationRefusal::NotFound);

    let calls = sim.stats().total(SimOp::GetOrganization);
    let error = client.get_organization("  ").await.expect_err("blank");
    assert!(
        matches!(
            &error,
            ClientError::InvalidRequest { operation: Operation::GetOrganization, reason }
                if reason.contains("organization id or slug")
        ),
        "{error}"
    );
    assert_eq!(sim.stats().total(SimOp::GetOrganization), calls, "no call");
}

#[tokio::test]
async fn creates_single_and_bulk_invitations_lists_them_and_revokes_one() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    let other = organization(&sim, "Other", "other", 0).await;

    let mut request = invite("Ann@Example.com", "org:admin");
    request.public_metadata = json!({"team": "ops"}).as_object().cloned();
    request.private_metadata = json!({"hr": 7}).as_object().cloned();
    request.redirect_url = Some("https://app.example.com/welcome".to_owned());
    request.expires_in_days = Some(7);
    request.notify = Some(false);
    let ann = client
        .create_organization_invitation(&acme, &request)
        .await
        .expect("created");
    assert!(ann.id.starts_with("orginv_"), "{}", ann.id);
    assert_eq!(ann.email_address, "Ann@Example.com");
    assert_eq!(ann.role, "org:admin");
    assert_eq!(ann.organization_id, acme);
    assert_eq!(ann.status, InvitationStatus::Pending);
    assert_eq!(ann.public_metadata.get("team"), Some(&json!("ops")));
    assert_eq!(ann.private_metadata.get("hr"), Some(&json!(7)));
    let days = (ann.expires_at.expect("expires") - ann.created_at) / 86_400_000;
    assert_eq!(days, 7);

    let bulk: Vec<_> = (0..3)
        .map(|i| invite(&format!("p{i}@example.com"), "org:member"))
        .collect();
    let created = client
        .create_organization_invitations_bulk(&acme, &bulk)
        .await
        .expect("bulk");
    let emails: Vec<_> = created.iter().map(|i| i.email_address.as_str()).collect();
    assert_eq!(
        emails,
        ["p0@example.com", "p1@example.com", "p2@example.com"]
    );
    client
        .create_organization_invitation(&other, &invite("zed@example.com", "org:member"))
        .await
        .expect("another organization's");

    // A page, oldest first.
    let page = client
        .list_organization_invitations(&acme, Some(InvitationStatus::Pending), 2, 1)
        .await
        .expect("a page");
    assert_eq!(page.total_count, 4);
    let emails: Vec<_> = page.data.iter().map(|i| i.email_address.as_str()).collect();
    assert_eq!(emails, ["p0@example.com", "p1@example.com"]);

    let revoked = client
        .revoke_organization_invitation(&acme, &created[0].id)
        .await
        .expect("revoked");
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    let (refusal, _) = refusal_of(
        client
            .revoke_organization_invitation(&acme, &created[0].id)
            .await,
    );
    assert_eq!(refusal, OrganizationRefusal::InvitationNotPending);

    let pending = client
        .list_all_organization_invitations(&acme, Some(InvitationStatus::Pending))
        .await
        .expect("pending");
    let ids: Vec<_> = pending.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, [&ann.id, &created[1].id, &created[2].id]);
    let every = client
        .list_all_organization_invitations(&acme, None)
        .await
        .expect("all");
    assert_eq!(every.len(), 4, "the revoked one too");

    let found = client
        .find_organization_invitations_by_email(&acme, "ANN@example.COM")
        .await
        .expect("by email");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ann.id);
    assert!(client
        .find_organization_invitations_by_email(&other, "ann@example.com")
        .await
        .expect("none there")
        .is_empty());

    let instance = client
        .list_instance_organization_invitations(Some(InvitationStatus::Pending))
        .await
        .expect("the instance's");
    let mut seen: Vec<(&str, &str)> = instance
        .iter()
        .map(|i| (i.organization_id.as_str(), i.email_address.as_str()))
        .collect();
    seen.sort_unstable();
    let mut expected = vec![
        (acme.as_str(), "Ann@Example.com"),
        (acme.as_str(), "p1@example.com"),
        (acme.as_str(), "p2@example.com"),
        (other.as_str(), "zed@example.com"),
    ];
    expected.sort_unstable();
    assert_eq!(seen, expected);

    let stats = sim.stats();
    assert_eq!(stats.count(SimOp::CreateOrganizationInvitation, 200), 2);
    assert_eq!(
        stats.count(SimOp::CreateOrganizationInvitationsBulk, 200),
        1
    );
    assert_eq!(stats.count(SimOp::RevokeOrganizationInvitation, 200), 1);
}

#[tokio::test]
async fn a_bulk_call_of_none_or_more_than_ten_spends_no_call() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    let none = client
        .create_organization_invitations_bulk(&acme, &[])
        .await
        .expect("nothing to send");
    assert!(none.is_empty());
    let eleven: Vec<_> = (0..=MAX_BULK)
        .map(|i| invite(&format!("p{i}@example.com"), "org:member"))
        .collect();
    let error = client
        .create_organization_invitations_bulk(&acme, &eleven)
        .await
        .expect_err("too many");
    assert!(
        matches!(&error, ClientError::InvalidRequest { reason, .. } if reason.contains("11")),
        "{error}"
    );
    assert!(!error.may_have_applied());
    assert_eq!(
        sim.stats().total(SimOp::CreateOrganizationInvitationsBulk),
        0
    );
}

#[tokio::test]
async fn memberships_are_created_listed_changed_and_removed() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    let ann = sim.create_user("ann@example.com");
    let bob = sim.create_user("bob@example.com");

    let admin = client
        .create_membership(&acme, &ann.id, "org:admin")
        .await
        .expect("ann joins");
    assert_eq!(admin.role, "org:admin");
    assert_eq!(admin.user_id(), Some(ann.id.as_str()));
    assert_eq!(admin.organization.id, acme);
    client
        .create_membership(&acme, &bob.id, "org:member")
        .await
        .expect("bob joins");

    let members = client.list_memberships(&acme).await.expect("listed");
    let listed: Vec<_> = members
        .iter()
        .map(|m| (m.user_id(), m.identifier(), m.role.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (Some(ann.id.as_str()), Some("ann@example.com"), "org:admin"),
            (Some(bob.id.as_str()), Some("bob@example.com"), "org:member"),
        ]
    );
    let found = client
        .find_memberships_by_email(&acme, &["BOB@example.com".to_owned()])
        .await
        .expect("by email");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].user_id(), Some(bob.id.as_str()));
    assert!(client
        .find_memberships_by_email(&acme, &[])
        .await
        .expect("no call")
        .is_empty());

    let promoted = client
        .update_membership_role(&acme, &bob.id, "org:admin")
        .await
        .expect("promoted");
    assert_eq!(promoted.role, "org:admin");
    let removed = client
        .delete_membership(&acme, &ann.id)
        .await
        .expect("removed");
    assert_eq!(removed.user_id(), Some(ann.id.as_str()));
    let members = client.list_memberships(&acme).await.expect("listed");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user_id(), Some(bob.id.as_str()));
    assert_eq!(members[0].role, "org:admin");

    let stats = sim.stats();
    assert_eq!(stats.count(SimOp::CreateOrganizationMembership, 200), 2);
    assert_eq!(stats.count(SimOp::UpdateOrganizationMembership, 200), 1);
    assert_eq!(stats.count(SimOp::DeleteOrganizationMembership, 200), 1);
}

#[tokio::test]
async fn lists_the_roles_with_the_custom_ones() {
    let (sim, client) = sim_and_client().await;
    control(
        &sim,
        reqwest::Method::POST,
        "_sim/organization_roles",
        json!({"key": "org:billing_manager", "name": "Billing manager"}),
    )
    .await;
    let roles = client.list_organization_roles().await.expect("roles");
    let keys: HashSet<&str> = roles.iter().map(|r| r.key.as_str()).collect();
    for key in ["org:admin", "org:member", "org:billing_manager"] {
        assert!(keys.contains(key), "{key} in {keys:?}");
    }
    assert_eq!(keys.len(), roles.len(), "each role once");
}

#[tokio::test]
async fn clerks_refusals_read_as_organization_refusals() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 3).await;
    let ann = sim.create_user("ann@example.com");
    let bob = sim.create_user("bob@example.com");
    client
        .create_membership(&acme, &ann.id, "org:admin")
        .await
        .expect("ann joins");

    client
        .create_organization_invitation(&acme, &invite("cy@example.com", "org:member"))
        .await
        .expect("cy invited");
    let (refusal, status) = refusal_of(
        client
            .create_organization_invitation(&acme, &invite("CY@example.com", "org:member"))
            .await,
    );
    assert_eq!(
        (refusal, status),
        (OrganizationRefusal::PendingInvitationExists, 400)
    );

    let (refusal, status) =
        refusal_of(client.create_membership(&acme, &ann.id, "org:member").await);
    assert_eq!((refusal, status), (OrganizationRefusal::AlreadyMember, 400));

    let (refusal, status) = refusal_of(
        client
            .create_membership(&acme, "user_nobody", "org:member")
            .await,
    );
    assert_eq!((refusal, status), (OrganizationRefusal::NotFound, 404));

    let (refusal, _) = refusal_of(
        client
            .create_organization_invitation(&acme, &invite("dee@example.com", "org:nonesuch"))
            .await,
    );
    assert_eq!(refusal, OrganizationRefusal::NotFound, "an unknown role");

    // The last admin can be neither demoted nor removed.
    let (refusal, status) = refusal_of(
        client
            .update_membership_role(&acme, &ann.id, "org:member")
            .await,
    );
    assert_eq!((refusal, status), (OrganizationRefusal::LastAdmin, 400));
    let (refusal, _) = refusal_of(client.delete_membership(&acme, &ann.id).await);
    assert_eq!(refusal, OrganizationRefusal::LastAdmin);

    // One member and one pending of three: one place left, then full.
    client
        .create_membership(&acme, &bob.id, "org:member")
        .await
        .expect("bob takes the last place");
    let (refusal, status) = refusal_of(
        client
            .create_organization_invitation(&acme, &invite("eve@example.com", "org:member"))
            .await,
    );
    assert_eq!(
        (refusal, status),
        (OrganizationRefusal::OrganizationFull, 403)
    );
    let full = client
        .get_organization(&acme)
        .await
        .expect("the organization");
    assert_eq!(full.room(), Some(0));

    // A membership Directory Sync manages refuses other writers.
    control(
        &sim,
        reqwest::Method::POST,
        &format!("_sim/organizations/{acme}/memberships/{}/scim", bob.id),
        json!({"managed": true}),
    )
    .await;
    let (refusal, status) = refusal_of(client.delete_membership(&acme, &bob.id).await);
    assert_eq!(
        (refusal, status),
        (OrganizationRefusal::ManagedByDirectorySync, 409)
    );
    let members = client.list_memberships(&acme).await.expect("listed");
    assert_eq!(members.len(), 2, "nothing was removed");
}

#[tokio::test]
async fn lists_every_invitation_and_membership_across_pages_once() {
    let (sim, client) = unlimited_sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    let invitations = 1_234;
    let requests: Vec<_> = (0..invitations)
        .map(|i| invite(&format!("p{i:04}@example.com"), "org:member"))
        .collect();
    for chunk in requests.chunks(MAX_BULK) {
        client
            .create_organization_invitations_bulk(&acme, chunk)
            .await
            .expect("bulk");
    }
    let all = client
        .list_all_organization_invitations(&acme, Some(InvitationStatus::Pending))
        .await
        .expect("all");
    assert_eq!(all.len(), invitations);
    let distinct: HashSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(distinct.len(), invitations);
    assert!(
        all.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "oldest first"
    );
    let instance = client
        .list_instance_organization_invitations(None)
        .await
        .expect("the instance's");
    assert_eq!(instance.len(), invitations);
    assert_eq!(
        sim.stats().count(SimOp::ListOrganizationInvitations, 200),
        3,
        "pages of 500"
    );

    let members = 520;
    let emails: Vec<String> = (0..members)
        .map(|i| format!("m{i:03}@example.com"))
        .collect();
    for email in &emails {
        let user = sim.create_user(email);
        client
            .create_membership(&acme, &user.id, "org:member")
            .await
            .expect("a member");
    }
    let listed = client.list_memberships(&acme).await.expect("all members");
    assert_eq!(listed.len(), members);
    let distinct: HashSet<&str> = listed.iter().filter_map(|m| m.user_id()).collect();
    assert_eq!(distinct.len(), members);
    assert_eq!(
        sim.stats().count(SimOp::ListOrganizationMemberships, 200),
        2
    );
    // 150 addresses: two calls of at most 100 filter values each.
    let found = client
        .find_memberships_by_email(&acme, &emails[..150])
        .await
        .expect("by email");
    assert_eq!(found.len(), 150);
    assert_eq!(
        sim.stats().count(SimOp::ListOrganizationMemberships, 200),
        4
    );
}

#[tokio::test]
async fn a_429_on_an_organization_create_blocks_that_endpoint_only_until_it_passes() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    sim.inject_fault(Fault::new(
        SimOp::CreateOrganizationInvitationsBulk,
        1,
        FaultKind::Status {
            status: 429,
            retry_after: Some(120),
        },
    ));
    let batch = [invite("a@example.com", "org:member")];
    match client
        .create_organization_invitations_bulk(&acme, &batch)
        .await
    {
        Err(ClientError::RateLimited {
            operation: Operation::CreateOrganizationInvitationsBulk,
            retry_after: Some(wait),
            sent: true,
            ..
        }) => assert_eq!(wait, Duration::from_secs(120)),
        other => panic!("expected a 429, got {other:?}"),
    }
    match client
        .create_organization_invitations_bulk(&acme, &batch)
        .await
    {
        Err(ClientError::RateLimited {
            sent: false,
            retry_after: Some(wait),
            ..
        }) => assert!(wait <= Duration::from_secs(120) && wait > Duration::from_secs(100)),
        other => panic!("expected the block to hold, got {other:?}"),
    }
    assert_eq!(
        sim.stats().total(SimOp::CreateOrganizationInvitationsBulk),
        1,
        "neither retried nor sent while blocked"
    );
    assert!(client
        .blocked_for(Operation::CreateOrganizationInvitationsBulk)
        .is_some());
    for other in [
        Operation::CreateOrganizationInvitation,
        Operation::CreateBulkInvitations,
        Operation::CreateInvitation,
    ] {
        assert_eq!(client.blocked_for(other), None, "{other}");
    }
    client
        .create_organization_invitation(&acme, &invite("b@example.com", "org:member"))
        .await
        .expect("the single endpoint is not blocked");
    client
        .create_invitation(&CreateInvitation::new("c@example.com"))
        .await
        .expect("nor the instance's");
}

#[tokio::test]
async fn the_simulators_hourly_bulk_limit_answers_429_and_the_client_keeps_it() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    for i in 0..50 {
        client
            .create_organization_invitations_bulk(
                &acme,
                &[invite(&format!("p{i}@example.com"), "org:member")],
            )
            .await
            .unwrap_or_else(|e| panic!("bulk call {i} of 50: {e}"));
    }
    let error = client
        .create_organization_invitations_bulk(&acme, &[invite("late@example.com", "org:member")])
        .await
        .expect_err("the 51st in the hour");
    assert!(
        matches!(
            error,
            ClientError::RateLimited {
                sent: true,
                retry_after: Some(_),
                ..
            }
        ),
        "{error}"
    );
    let blocked = client
        .blocked_for(Operation::CreateOrganizationInvitationsBulk)
        .expect("blocked");
    assert!(blocked > Duration::from_secs(60), "{blocked:?}");
    assert_eq!(
        sim.stats()
            .count(SimOp::CreateOrganizationInvitationsBulk, 429),
        1,
        "not retried"
    );
    client
        .create_organization_invitation(&acme, &invite("single@example.com", "org:member"))
        .await
        .expect("the single endpoint has its own limit");
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_sent_again_and_is_found_by_looking_up() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    sim.inject_fault(Fault::new(
        SimOp::CreateOrganizationInvitation,
        1,
        FaultKind::DropAfterApply,
    ));
    let error = client
        .create_organization_invitation(&acme, &invite("ann@example.com", "org:member"))
        .await
        .expect_err("no answer");
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "{error}"
    );
    assert!(error.may_have_applied());
    assert_eq!(error.organization_refusal(), None);
    assert_eq!(sim.stats().total(SimOp::CreateOrganizationInvitation), 1);
    let found = client
        .find_organization_invitations_by_email(&acme, "ann@example.com")
        .await
        .expect("looked up");
    assert_eq!(found.len(), 1, "Clerk applied it");

    let bob = sim.create_user("bob@example.com");
    sim.inject_fault(Fault::new(
        SimOp::CreateOrganizationMembership,
        1,
        FaultKind::StatusAfterApply { status: 502 },
    ));
    let error = client
        .create_membership(&acme, &bob.id, "org:member")
        .await
        .expect_err("a 502 after applying");
    assert!(error.may_have_applied(), "{error}");
    assert_eq!(
        sim.stats().total(SimOp::CreateOrganizationMembership),
        1,
        "a membership create is not retried"
    );
    let found = client
        .find_memberships_by_email(&acme, &["bob@example.com".to_owned()])
        .await
        .expect("looked up");
    assert_eq!(found.len(), 1, "Clerk applied it");
}

#[tokio::test]
async fn reads_role_changes_and_removals_are_retried_after_a_server_error() {
    let (sim, client) = sim_and_client().await;
    let acme = organization(&sim, "Acme", "acme", 0).await;
    let ann = sim.create_user("ann@example.com");
    let bob = sim.create_user("bob@example.com");
    for (user, role) in [(&ann, "org:admin"), (&bob, "org:member")] {
        client
            .create_membership(&acme, &user.id, role)
            .await
            .expect("a member");
    }
    for operation in [
        SimOp::GetOrganization,
        SimOp::ListOrganizationMemberships,
        SimOp::UpdateOrganizationMembership,
        SimOp::DeleteOrganizationMembership,
    ] {
        sim.inject_fault(Fault::new(
            operation,
            1,
            FaultKind::Status {
                status: 503,
                retry_after: None,
            },
        ));
    }
    client.get_organization("acme").await.expect("got");
    assert_eq!(
        client.list_memberships(&acme).await.expect("listed").len(),
        2
    );
    client
        .update_membership_role(&acme, &bob.id, "org:admin")
        .await
        .expect("changed");
    client
        .delete_membership(&acme, &bob.id)
        .await
        .expect("removed");
    let stats = sim.stats();
    for operation in [
        SimOp::GetOrganization,
        SimOp::ListOrganizationMemberships,
        SimOp::UpdateOrganizationMembership,
        SimOp::DeleteOrganizationMembership,
    ] {
        assert_eq!(stats.count(operation, 503), 1, "{operation}");
        assert_eq!(stats.count(operation, 200), 1, "{operation}");
    }
}
