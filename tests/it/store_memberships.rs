//! The membership roster, the membership ledger, the organizations and the organization
//! budget in the store, against a fresh database each.

use std::time::Duration;

use invite_sync::clerk::budget::{Invitations, Limits};
use invite_sync::clerk::Operation;
use invite_sync::domain::{Email, MembershipKind, MembershipRosterRow, MembershipState};
use invite_sync::store::membership_ledger::{self, SeenInvitation, Sending};
use invite_sync::store::memberships::{self, ReadError};
use invite_sync::store::organizations::{self, Resolved};
use invite_sync::store::{budget, users};
use sqlx::postgres::PgListener;

use crate::common::TestDb;

const TARGET: &str = "store-memberships";
const RELATION: &str = "desired_memberships";

fn email(address: &str) -> Email {
    Email::parse(address).expect("a test address")
}

async fn execute(db: &TestDb, sql: &str) {
    sqlx::query(sql)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Each row as `(organization, address or row text, Ok(role) | Err(reason))`.
fn summary(rows: &[MembershipRosterRow]) -> Vec<(String, String, Result<String, String>)> {
    rows.iter()
        .map(|row| match row {
            Ok(row) => (
                row.organization.clone(),
                row.email.to_string(),
                Ok(row.role_or("org:member").to_owned()),
            ),
            Err(invalid) => (
                invalid.organization.clone(),
                invalid.email.clone(),
                Err(invalid.reason.clone()),
            ),
        })
        .collect()
}

#[tokio::test]
async fn the_roster_streams_by_organization_then_address_and_a_bad_row_is_invalid_while_the_rest_go_on(
) {
    let db = TestDb::migrated().await;
    execute(
        &db,
        "INSERT INTO desired_memberships (email, organization, role, expires_in_days) VALUES
           ('zed@example.com', 'org_2', NULL, NULL),
           ('Bo@Example.com', ' acme', 'org:admin', NULL),
           ('ann@example.com', 'acme', '', NULL),
           ('cy@example.com', 'acme', 'Admin', NULL),
           ('dee@example.com', 'Zeta', NULL, 400),
           ('ann@example.com', 'org_2', 'org:billing_2', NULL)",
    )
    .await;
    memberships::check(&db.pool, RELATION)
        .await
        .expect("the default table has every column");
    assert_eq!(memberships::count(&db.pool, RELATION).await.unwrap(), 6);

    let rows = memberships::read_all(&db.pool, RELATION).await.unwrap();
    let ok = |org: &str, address: &str, role: &str| {
        (
            org.to_owned(),
            address.to_owned(),
            Ok::<String, String>(role.to_owned()),
        )
    };
    let summary = summary(&rows);
    // Byte order: upper case before lower case, "acme" before "org_2".
    assert_eq!(summary[0].0, "Zeta");
    assert!(
        summary[0]
            .2
            .as_ref()
            .is_err_and(|reason| reason.contains("expires_in_days is 400")),
        "{:?}",
        summary[0]
    );
    assert_eq!(summary[1], ok("acme", "ann@example.com", "org:member"));
    assert_eq!(summary[2], ok("acme", "bo@example.com", "org:admin"));
    assert_eq!(summary[3].1, "cy@example.com");
    assert!(
        summary[3]
            .2
            .as_ref()
            .is_err_and(|reason| reason.contains("role \"Admin\"")),
        "{:?}",
        summary[3]
    );
    assert_eq!(summary[4], ok("org_2", "ann@example.com", "org:billing_2"));
    assert_eq!(summary[5], ok("org_2", "zed@example.com", "org:member"));
    // The invalid row still names its person.
    let Err(invalid) = &rows[3] else {
        panic!("cy's row is invalid")
    };
    assert_eq!(invalid.parsed, Some(email("cy@example.com")));

    let mut groups = Vec::new();
    let count = memberships::for_each_organization(&db.pool, RELATION, |org, rows| {
        groups.push((org, rows.len()))
    })
    .await
    .unwrap();
    assert_eq!(count, 6);
    assert_eq!(
        groups,
        vec![
            ("Zeta".to_owned(), 1),
            ("acme".to_owned(), 3),
            ("org_2".to_owned(), 2)
        ]
    );
}

#[tokio::test]
async fn a_view_with_values_no_reader_can_take_makes_only_those_rows_invalid() {
    let db = TestDb::migrated().await;
    execute(
        &db,
        "CREATE VIEW hr_memberships AS SELECT * FROM (VALUES
           ('ann@example.com', 'acme', 'org:admin', '{}', '{\"k\": 1}', NULL::timestamptz),
           ('bo@example.com', 'acme', NULL, '{}', '{', NULL),
           ('cy@example.com', 'acme', NULL, '{}', '{}', 'infinity'),
           (NULL, 'acme', NULL, '{}', '{}', NULL),
           ('dee@example.com', NULL, NULL, '{}', '{}', NULL),
           ('eve@example.com', 'acme', NULL, '[1]', '{}', NULL)
         ) AS v(email, organization, role, public_metadata, private_metadata, not_before)
         CROSS JOIN (SELECT NULL::text AS redirect_url, NULL::int AS expires_in_days,
                            NULL::boolean AS notify, 'hr'::text AS source,
                            now() AS created_at, now() AS updated_at) AS fixed",
    )
    .await;
    memberships::check(&db.pool, "hr_memberships")
        .await
        .expect("the view has every column");
    let rows = memberships::read_all(&db.pool, "hr_memberships")
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    let reasons: Vec<Result<String, String>> = summary(&rows)
        .into_iter()
        .map(|(org, address, outcome)| outcome.map(|role| format!("{org} {address} {role}")))
        .collect();
    let expect_err = |index: usize, reason: &str| {
        assert!(
            reasons[index]
                .as_ref()
                .is_err_and(|text| text.contains(reason)),
            "row {index}: {:?} should say {reason}",
            reasons[index]
        );
    };
    // NULL organization sorts last, a NULL address last within acme.
    assert_eq!(reasons[0], Ok("acme ann@example.com org:admin".to_owned()));
    expect_err(1, "private_metadata cannot be read as JSON");
    expect_err(2, "not_before is infinity");
    expect_err(3, "public_metadata must be a JSON object");
    expect_err(4, "email is NULL");
    expect_err(5, "organization is NULL");
    let Ok(ann) = &rows[0] else {
        panic!("ann's row")
    };
    assert_eq!(ann.private_metadata["k"], 1);
    assert_eq!(ann.source.as_deref(), Some("hr"));
}

#[tokio::test]
async fn a_missing_relation_or_column_is_named_with_the_key_that_names_it() {
    let db = TestDb::migrated().await;
    let error = memberships::check(&db.pool, "hr.nothing_here")
        .await
        .expect_err("no such relation");
    assert!(matches!(error, ReadError::Relation { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("\"hr.nothing_here\"") && text.contains("source.memberships_relation"),
        "{text}"
    );

    execute(
        &db,
        "CREATE VIEW no_role AS SELECT email, organization, public_metadata, private_metadata,
                redirect_url, expires_in_days, notify, not_before, source, created_at, updated_at
         FROM desired_memberships",
    )
    .await;
    let text = memberships::check(&db.pool, "no_role")
        .await
        .expect_err("no role column")
        .to_string();
    assert!(text.contains("role"), "{text}");
    let text = memberships::read_all(&db.pool, "no_role")
        .await
        .expect_err("a cycle cannot read it either")
        .to_string();
    assert!(text.contains("source.memberships_relation"), "{text}");

    // A time column of text is refused whole by the check.
    execute(
        &db,
        "CREATE VIEW text_time AS SELECT email, organization, role, public_metadata,
                private_metadata, redirect_url, expires_in_days, notify,
                not_before::text AS not_before, source, created_at, updated_at
         FROM desired_memberships",
    )
    .await;
    let error = memberships::check(&db.pool, "text_time")
        .await
        .expect_err("not_before is text");
    assert!(matches!(error, ReadError::Relation { .. }), "{error:?}");
}

#[tokio::test]
async fn one_row_per_address_and_organization_and_every_change_notifies() {
    let db = TestDb::migrated().await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("invite_sync").await.unwrap();

    execute(
        &db,
        "INSERT INTO desired_memberships (email, organization) VALUES ('Ann@Example.com', 'acme')",
    )
    .await;
    let duplicate = sqlx::query(
        "INSERT INTO desired_memberships (email, organization) VALUES (' ann@example.com', 'acme ')",
    )
    .execute(&db.pool)
    .await
    .expect_err("a second spelling of the same pair");
    assert!(
        duplicate
            .to_string()
            .contains("desired_memberships_email_organization_key"),
        "{duplicate}"
    );
    // The upsert the importer and webhook write names the conflict target.
    execute(
        &db,
        "INSERT INTO desired_memberships (email, organization, role)
         VALUES ('ann@example.com', 'acme', 'org:admin'), ('ann@example.com', 'other', NULL)
         ON CONFLICT ((lower(btrim(email))), (btrim(organization)))
         DO UPDATE SET role = EXCLUDED.role",
    )
    .await;
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM desired_memberships WHERE organization = 'acme'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(role.as_deref(), Some("org:admin"));
    let blank = sqlx::query(
        "INSERT INTO desired_memberships (email, organization) VALUES ('bo@example.com', '  ')",
    )
    .execute(&db.pool)
    .await
    .expect_err("a blank organization");
    assert!(
        blank.to_string().contains("organization_not_blank"),
        "{blank}"
    );
    execute(&db, "TRUNCATE desired_memberships").await;

    // The insert, the upsert and the truncate each notify once; the failed statements not.
    for statement in ["insert", "upsert", "truncate"] {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .unwrap_or_else(|_| panic!("no notification for the {statement}"))
            .unwrap();
        assert_eq!(notification.payload(), "desired_memberships");
    }
    let more = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await;
    assert!(more.is_err(), "one notification per statement: {more:?}");
}

fn invitation<'a>(email: &'a Email, organization_id: &'a str, role: &'a str) -> Sending<'a> {
    Sending {
        target: TARGET,
        email,
        organization_id,
        kind: MembershipKind::Invitation,
        role,
        row_digest: Some("digest-1"),
        user_id: None,
        call_id: None,
        run_id: None,
    }
}

#[tokio::test]
async fn a_create_is_sending_once_per_person_and_organization_and_settles_with_its_id() {
    let db = TestDb::migrated().await;
    let ann = email("ann@example.com");
    let mut conn = db.pool.acquire().await.unwrap();

    let first =
        membership_ledger::start_sending(&mut conn, &invitation(&ann, "org_1", "org:admin"))
            .await
            .unwrap()
            .expect("nothing in flight yet");
    let again =
        membership_ledger::start_sending(&mut conn, &invitation(&ann, "org_1", "org:admin"))
            .await
            .unwrap();
    assert_eq!(again, None, "a second create for ann in org_1 is refused");
    let other_org =
        membership_ledger::start_sending(&mut conn, &invitation(&ann, "org_2", "org:member"))
            .await
            .unwrap();
    assert!(
        other_org.is_some(),
        "another organization is another create"
    );

    let sending = membership_ledger::sending(&db.pool, TARGET).await.unwrap();
    assert_eq!(sending.len(), 2);
    assert!(sending
        .iter()
        .all(|e| e.state == MembershipState::Sending && e.clerk_id.is_none() && e.owned));
    assert!(sending.iter().all(|e| e.sent_at.is_some()));

    assert!(membership_ledger::mark_invited(&db.pool, first, "orginv_1")
        .await
        .unwrap());
    assert!(
        !membership_ledger::mark_invited(&db.pool, first, "orginv_other")
            .await
            .unwrap(),
        "a settled entry is not settled twice"
    );
    let entries = membership_ledger::live_of_organization(&db.pool, TARGET, "org_1")
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.state, MembershipState::Pending);
    assert_eq!(entry.clerk_id.as_deref(), Some("orginv_1"));
    assert_eq!(entry.role, "org:admin");
    assert_eq!(entry.kind, MembershipKind::Invitation);
    assert_eq!(entry.row_digest.as_deref(), Some("digest-1"));
    assert_eq!(entry.attempts, 1);
    assert!(entry.settled_at.is_some());

    // Once settled, a new create may start (a replacement after a revocation).
    membership_ledger::mark_revoked(&db.pool, TARGET, "orginv_1")
        .await
        .unwrap();
    assert!(
        membership_ledger::start_sending(&mut conn, &invitation(&ann, "org_1", "org:member"))
            .await
            .unwrap()
            .is_some()
    );

    // A create known never to have reached Clerk is forgotten.
    let other_org = other_org.unwrap_or_default();
    membership_ledger::forget(&db.pool, &[other_org])
        .await
        .unwrap();
    assert!(
        membership_ledger::live_of_organization(&db.pool, TARGET, "org_2")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_refused_create_is_replaced_by_the_next_one_which_counts_the_attempts() {
    let db = TestDb::migrated().await;
    let bo = email("bo@example.com");
    let mut conn = db.pool.acquire().await.unwrap();
    let id = membership_ledger::start_sending(&mut conn, &invitation(&bo, "org_1", "org:member"))
        .await
        .unwrap()
        .unwrap();
    let retry_at = chrono::Utc::now() + chrono::Duration::minutes(5);
    membership_ledger::mark_failed(
        &db.pool,
        id,
        "organization_membership_quota_exceeded",
        "full",
        false,
        Some(retry_at),
    )
    .await
    .unwrap();
    let failed = membership_ledger::live(&db.pool, TARGET).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, MembershipState::Failed);
    assert_eq!(
        failed[0].last_error_code.as_deref(),
        Some("organization_membership_quota_exceeded")
    );
    assert!(failed[0].next_attempt_at.is_some());

    let second =
        membership_ledger::start_sending(&mut conn, &invitation(&bo, "org_1", "org:member"))
            .await
            .unwrap()
            .unwrap();
    let entries = membership_ledger::of_person(&db.pool, TARGET, "org_1", &bo)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "the failed row is replaced: {entries:?}");
    assert_eq!(entries[0].id, second);
    assert_eq!(entries[0].attempts, 2);

    membership_ledger::mark_failed(
        &db.pool,
        second,
        "resource_not_found",
        "no role",
        true,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        membership_ledger::clear_terminal_failures(&db.pool, TARGET, Some("org_other"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        membership_ledger::clear_terminal_failures(&db.pool, TARGET, Some("org_1"))
            .await
            .unwrap(),
        1
    );
    let entry = &membership_ledger::of_person(&db.pool, TARGET, "org_1", &bo)
        .await
        .unwrap()[0];
    assert!(!entry.terminal && entry.state == MembershipState::Failed);
}

#[tokio::test]
async fn only_a_membership_invite_sync_made_or_whose_invitation_it_sent_was_accepted_is_its_own() {
    let db = TestDb::migrated().await;
    let ann = email("ann@example.com");
    let bo = email("bo@example.com");
    let cy = email("cy@example.com");
    let mut conn = db.pool.acquire().await.unwrap();

    // ann: invited by invite-sync, then accepted (the webhook names the user).
    let id = membership_ledger::start_sending(&mut conn, &invitation(&ann, "org_1", "org:member"))
        .await
        .unwrap()
        .unwrap();
    membership_ledger::mark_invited(&db.pool, id, "orginv_ann")
        .await
        .unwrap();
    assert!(
        membership_ledger::mark_accepted(&db.pool, TARGET, "orginv_ann", Some("user_ann"))
            .await
            .unwrap()
    );
    // bo: an existing user added directly.
    let membership = Sending {
        kind: MembershipKind::Membership,
        user_id: Some("user_bo"),
        ..invitation(&bo, "org_1", "org:admin")
    };
    let id = membership_ledger::start_sending(&mut conn, &membership)
        .await
        .unwrap()
        .unwrap();
    assert!(membership_ledger::mark_member(&db.pool, id, "user_bo")
        .await
        .unwrap());
    // cy: an invitation made by hand, seen in a listing and later accepted.
    membership_ledger::record_seen_invitation(
        &db.pool,
        &SeenInvitation {
            target: TARGET,
            email: &cy,
            organization_id: "org_1",
            invitation_id: "orginv_cy",
            role: "org:member",
            state: MembershipState::Pending,
            owned: false,
            user_id: None,
        },
    )
    .await
    .unwrap();
    membership_ledger::mark_accepted(&db.pool, TARGET, "orginv_cy", Some("user_cy"))
        .await
        .unwrap();

    let owned = membership_ledger::owned_membership(&db.pool, TARGET, "org_1", &ann)
        .await
        .unwrap()
        .expect("ann's membership is invite-sync's");
    assert_eq!(owned.state, MembershipState::Accepted);
    assert_eq!(owned.user_id.as_deref(), Some("user_ann"));
    let owned = membership_ledger::owned_membership(&db.pool, TARGET, "org_1", &bo)
        .await
        .unwrap()
        .expect("bo's membership is invite-sync's");
    assert_eq!(owned.kind, MembershipKind::Membership);
    assert_eq!(owned.clerk_id.as_deref(), Some("user_bo"));
    assert_eq!(owned.user_id.as_deref(), Some("user_bo"));
    assert_eq!(
        membership_ledger::owned_membership(&db.pool, TARGET, "org_1", &cy)
            .await
            .unwrap(),
        None,
        "a hand-made invitation's membership is not invite-sync's"
    );
    assert_eq!(
        membership_ledger::owned_membership(&db.pool, TARGET, "org_2", &ann)
            .await
            .unwrap(),
        None,
        "ownership is per organization"
    );
    let owned_ids = membership_ledger::owned_invitations_among(
        &db.pool,
        TARGET,
        &["orginv_ann".to_owned(), "orginv_cy".to_owned()],
    )
    .await
    .unwrap();
    assert_eq!(owned_ids, vec!["orginv_ann".to_owned()]);

    // Seeing the hand-made invitation again never makes it invite-sync's own less; asking
    // for it makes it owned.
    membership_ledger::record_seen_invitation(
        &db.pool,
        &SeenInvitation {
            target: TARGET,
            email: &cy,
            organization_id: "org_1",
            invitation_id: "orginv_cy",
            role: "org:member",
            state: MembershipState::Accepted,
            owned: false,
            user_id: None,
        },
    )
    .await
    .unwrap();
    let cy_entries = membership_ledger::of_person(&db.pool, TARGET, "org_1", &cy)
        .await
        .unwrap();
    assert_eq!(cy_entries.len(), 1);
    assert_eq!(
        cy_entries[0].user_id.as_deref(),
        Some("user_cy"),
        "a known user id is kept"
    );

    // Removing ann's membership retires what made her a member; the others stay live.
    assert_eq!(
        membership_ledger::mark_removed(&db.pool, TARGET, "org_1", "user_ann")
            .await
            .unwrap(),
        1
    );
    let live = membership_ledger::live(&db.pool, TARGET).await.unwrap();
    let live: Vec<(&str, MembershipState)> =
        live.iter().map(|e| (e.email.as_str(), e.state)).collect();
    assert_eq!(
        live,
        vec![
            ("bo@example.com", MembershipState::Member),
            ("cy@example.com", MembershipState::Accepted)
        ]
    );
    assert!(
        membership_ledger::mark_expired(&db.pool, TARGET, "orginv_unknown")
            .await
            .is_ok_and(|held| !held),
        "an invitation the ledger never held changes nothing"
    );
}

fn acme(members: u32, pending: u32) -> Resolved<'static> {
    Resolved {
        organization_id: "org_acme",
        slug: Some("acme"),
        name: "Acme",
        max_allowed_memberships: 10,
        members_count: members,
        pending_invitations_count: pending,
    }
}

#[tokio::test]
async fn an_organizations_refusal_as_full_holds_until_it_shows_more_room() {
    let db = TestDb::migrated().await;
    let unlimited = Resolved {
        organization_id: "org_big",
        slug: None,
        name: "Big",
        max_allowed_memberships: 0,
        members_count: 5000,
        pending_invitations_count: 20,
    };
    organizations::upsert(&db.pool, TARGET, &[acme(6, 3), unlimited])
        .await
        .unwrap();
    let by_slug = organizations::find(&db.pool, TARGET, "acme")
        .await
        .unwrap()
        .expect("found by slug");
    let by_id = organizations::find(&db.pool, TARGET, "org_acme")
        .await
        .unwrap()
        .expect("found by id");
    assert_eq!(by_slug, by_id);
    assert_eq!(by_id.room(), Some(1));
    assert_eq!(by_id.name, "Acme");
    assert_eq!(by_id.full_refused_at, None);
    assert_eq!(
        organizations::find(&db.pool, "another-target", "acme")
            .await
            .unwrap(),
        None
    );
    let all = organizations::all(&db.pool, TARGET).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].organization_id, "org_big");
    assert_eq!(all[1].room(), None, "0 means unlimited");

    // Clerk refused a create although the counts showed room for one.
    assert!(organizations::mark_full(&db.pool, TARGET, "org_acme")
        .await
        .unwrap());
    let full = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            organizations::find(&pool, TARGET, "org_acme")
                .await
                .unwrap()
                .expect("acme")
                .full_refused_at
        }
    };
    // The same counts again, or less room: the refusal stands.
    organizations::upsert(&db.pool, TARGET, &[acme(6, 3)])
        .await
        .unwrap();
    assert!(
        full(&db).await.is_some(),
        "the same counts are not believed"
    );
    organizations::upsert(&db.pool, TARGET, &[acme(7, 3)])
        .await
        .unwrap();
    assert!(full(&db).await.is_some(), "less room");
    // A member left: more room than at the refusal.
    organizations::upsert(&db.pool, TARGET, &[acme(5, 3)])
        .await
        .unwrap();
    assert_eq!(full(&db).await, None, "more room clears the refusal");
    assert!(!organizations::mark_full(&db.pool, TARGET, "org_unknown")
        .await
        .unwrap());
}

#[tokio::test]
async fn a_known_users_id_is_what_a_membership_is_created_for() {
    let db = TestDb::migrated().await;
    let known = |address: &str, id: Option<&str>| users::KnownUser {
        email: email(address),
        clerk_user_id: id.map(str::to_owned),
    };
    users::record_users(
        &db.pool,
        TARGET,
        &[
            known("ann@example.com", Some("user_ann")),
            known("bo@example.com", None),
            known("cy@example.com", Some("user_cy")),
        ],
        "test",
    )
    .await
    .unwrap();
    // A later sighting without the id keeps it.
    users::record_users(&db.pool, TARGET, &[known("ann@example.com", None)], "test")
        .await
        .unwrap();
    users::mark_deleted(&db.pool, TARGET, "user_cy")
        .await
        .unwrap();
    let asked = [
        email("ann@example.com"),
        email("bo@example.com"),
        email("cy@example.com"),
        email("dee@example.com"),
    ];
    let ids = users::user_ids(&db.pool, TARGET, &asked).await.unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        ids.get(&email("ann@example.com")).map(String::as_str),
        Some("user_ann")
    );
    assert!(users::user_ids(&db.pool, "another-target", &asked)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        users::email_of_user_id(&db.pool, TARGET, "user_ann")
            .await
            .unwrap(),
        Some(email("ann@example.com"))
    );
    assert_eq!(
        users::email_of_user_id(&db.pool, TARGET, "user_cy")
            .await
            .unwrap(),
        None,
        "a deleted user"
    );
}

#[tokio::test]
async fn organization_invitations_spend_a_budget_of_their_own() {
    let db = TestDb::migrated().await;
    let single = Operation::CreateOrganizationInvitation.as_str();
    let bulk = Operation::CreateOrganizationInvitationsBulk.as_str();
    for _ in 0..3 {
        budget::record_call(&db.pool, TARGET, single, 1, None)
            .await
            .expect("the organization single create is an endpoint the calls table takes");
    }
    budget::record_call(&db.pool, TARGET, bulk, 10, None)
        .await
        .expect("so is the bulk one");
    budget::record_call(&db.pool, TARGET, "create_invitation", 1, None)
        .await
        .unwrap();
    let refused = budget::record_call(&db.pool, TARGET, "create_organization", 1, None).await;
    assert!(refused.is_err(), "only hourly-limited creates are recorded");

    let limits = Limits {
        bulk_calls: 5,
        single_calls: 4,
        window: Duration::from_secs(3600),
    };
    let organizations = budget::current_of(&db.pool, TARGET, Invitations::Organization, limits)
        .await
        .unwrap();
    assert_eq!(organizations.single.left, 1);
    assert_eq!(organizations.bulk.left, 4);
    let instance = budget::current(&db.pool, TARGET, limits).await.unwrap();
    assert_eq!(instance.single.left, 3);
    assert_eq!(instance.bulk.left, 5);

    // A 429 on an organization create blocks that endpoint only.
    budget::record_block(&db.pool, TARGET, bulk, 60)
        .await
        .unwrap();
    let organizations = budget::current_of(&db.pool, TARGET, Invitations::Organization, limits)
        .await
        .unwrap();
    assert!(organizations.bulk.blocked_until.is_some());
    assert!(organizations.single.blocked_until.is_none());
    let instance = budget::current(&db.pool, TARGET, limits).await.unwrap();
    assert!(instance.bulk.blocked_until.is_none());
}

#[tokio::test]
async fn housekeeping_prunes_superseded_membership_history_and_keeps_an_unsettled_creates_call() {
    let db = TestDb::migrated().await;
    // An old call carrying a create still `sending`, and an old call nothing needs.
    let needed = budget::record_call(
        &db.pool,
        TARGET,
        Operation::CreateOrganizationInvitation.as_str(),
        1,
        None,
    )
    .await
    .unwrap();
    budget::record_call(
        &db.pool,
        TARGET,
        Operation::CreateOrganizationInvitationsBulk.as_str(),
        3,
        None,
    )
    .await
    .unwrap();
    execute(
        &db,
        "UPDATE invite_sync_clerk_calls SET called_at = now() - interval '40 days'",
    )
    .await;
    // Old history, written first: ann's revoked invitation in org_1 and bo's removed
    // membership there are superseded by the newer rows below; bo's expired invitation in
    // org_2 is his latest word there, and stays.
    for (email, organization, state, clerk_id) in [
        ("ann@example.com", "org_1", "revoked", "orginv_old_ann"),
        ("bo@example.com", "org_2", "expired", "orginv_old_bo"),
        ("bo@example.com", "org_1", "removed", "user_bo"),
    ] {
        sqlx::query(
            "INSERT INTO invite_sync_membership_ledger
               (target, email, organization_id, kind, clerk_id, role, state, owned, created_at,
                updated_at)
             VALUES ($1, $2, $3,
                     CASE WHEN $5 LIKE 'orginv_%' THEN 'invitation' ELSE 'membership' END,
                     $5, 'org:member', $4, true, now() - interval '50 days',
                     now() - interval '40 days')",
        )
        .bind(TARGET)
        .bind(email)
        .bind(organization)
        .bind(state)
        .bind(clerk_id)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let ann = email("ann@example.com");
    let mut conn = db.pool.acquire().await.unwrap();
    let sending = Sending {
        call_id: Some(needed),
        ..invitation(&ann, "org_1", "org:member")
    };
    membership_ledger::start_sending(&mut conn, &sending)
        .await
        .unwrap()
        .unwrap();
    let bo = email("bo@example.com");
    let id = membership_ledger::start_sending(&mut conn, &invitation(&bo, "org_1", "org:admin"))
        .await
        .unwrap()
        .unwrap();
    membership_ledger::mark_invited(&db.pool, id, "orginv_new_bo")
        .await
        .unwrap();

    let pruned = invite_sync::store::retention::prune(&db.pool, 30)
        .await
        .unwrap();
    assert_eq!(pruned.membership_ledger, 2, "{pruned:?}");
    assert_eq!(pruned.clerk_calls, 1, "{pruned:?}");
    let kept: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT email, organization_id, state FROM invite_sync_membership_ledger ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let kept: Vec<(&str, &str, &str)> = kept
        .iter()
        .map(|(e, o, s)| (e.as_str(), o.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("bo@example.com", "org_2", "expired"),
            ("ann@example.com", "org_1", "sending"),
            ("bo@example.com", "org_1", "pending"),
        ]
    );
    let calls: Vec<i64> = sqlx::query_scalar("SELECT id FROM invite_sync_clerk_calls")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(calls, vec![needed], "the unsettled create's call stays");
}
