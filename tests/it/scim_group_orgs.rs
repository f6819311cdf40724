//! SCIM groups become organizations (`scim.groups`), over HTTP on a real socket with cycles
//! driven against the simulator: an Okta-style and an Entra-style group sequence (a group
//! created with members, a member added, one removed, the group renamed, a role group added,
//! a group deleted), each ending with the simulator's memberships and pending organization
//! invitations equal to the groups with roles by precedence, a member of a mapped group
//! holding no instance invitation, and another writer's membership row untouched. Also: the
//! recompute at start after `scim.groups` changes, and the unmapped groups `status` lists.

use std::collections::BTreeSet;

use invite_sync::clerk::sim::{Operation, SimStats};
use invite_sync::clerk::InvitationStatus;
use invite_sync::reconcile::memberships::guard::HoldReason;
use invite_sync::reconcile::Request;
use invite_sync::store::group_memberships;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{bare_command, Harness, Service};

const TOKEN: &str = "scim-group-orgs-token-0123456789";
/// The operator API's token, for `GET /v1/status`.
const API_TOKEN: &str = "group-orgs-operator-token-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// On the instance roster beside the people provisioned, so the guard has something kept.
const ANCHOR: &str = "anchor@example.com";
/// Another writer's membership roster row in Acme: never touched by the groups.
const HR_PERSON: &str = "hr.only@example.com";

/// Acme by slug (members, and admins with a higher precedence), Globex by its group's
/// externalId (Entra sends the object id) or display name.
const MAPPINGS: &str = r#"[
  {"group": "Acme", "organization": "acme"},
  {"group": "Acme admins", "organization": "acme", "role": "org:admin", "precedence": 10},
  {"group": "Globex Staff", "organization": "globex", "role": "org:member"},
  {"group": "6f1c2e9a-0000-4000-8000-00000000e1d1", "organization": "globex", "role": "org:admin", "precedence": 5}
]"#;

async fn harness() -> Harness {
    let h = Harness::serving(&[
        ("INVITE_SYNC__SCIM__TOKEN", TOKEN),
        ("INVITE_SYNC__SCIM__GROUPS", MAPPINGS),
        ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1.0"),
        ("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "1000"),
        ("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN),
    ])
    .await;
    h.add_people(&[ANCHOR]).await;
    for (name, slug) in [("Acme", "acme"), ("Globex", "globex")] {
        h.sim
            .create_organization(name, Some(slug), 0)
            .expect("the organization is created");
    }
    sqlx::query(
        "INSERT INTO desired_memberships (email, organization, role, source)
         VALUES ($1, 'acme', 'org:member', 'hr')",
    )
    .bind(HR_PERSON)
    .execute(&h.db.pool)
    .await
    .expect("another writer's membership row is inserted");
    h
}

async fn call(
    scim: &Service,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    scim.scim_call(method, path, Some(TOKEN), body).await
}

async fn expect(
    scim: &Service,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: StatusCode,
) -> Value {
    let (got, answer) = call(scim, method.clone(), path, body.as_ref()).await;
    assert_eq!(got, status, "{method} {path}: {answer}");
    answer
}

/// Creates a SCIM user; returns its id.
async fn user(scim: &Service, email: &str) -> String {
    let created = expect(
        scim,
        Method::POST,
        "/Users",
        Some(json!({"schemas": [USER], "userName": email, "active": true,
                    "emails": [{"primary": true, "value": email, "type": "work"}]})),
        StatusCode::CREATED,
    )
    .await;
    created["id"]
        .as_str()
        .expect("the user has an id")
        .to_owned()
}

fn patch(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

fn members(ids: &[&String]) -> Value {
    Value::Array(ids.iter().map(|id| json!({"value": id})).collect())
}

/// What Clerk holds of one person in one organization (by slug): a membership or a pending
/// invitation, with its role.
type Place = (String, String, String);

fn place(organization: &str, email: &str, role: &str) -> Place {
    (organization.to_owned(), email.to_owned(), role.to_owned())
}

/// Every membership and pending organization invitation in the simulator.
fn clerk_places(h: &Harness) -> BTreeSet<Place> {
    let sim = &h.sim;
    let slug_of = |id: &str| {
        sim.organizations()
            .into_iter()
            .find(|o| o.id == id)
            .map_or_else(|| id.to_owned(), |o| o.slug)
    };
    let users = sim.users();
    let email_of = |user_id: &str| {
        users
            .iter()
            .find(|u| u.id == user_id)
            .and_then(|u| u.email_addresses.first())
            .map(|a| a.email_address.to_lowercase())
            .unwrap_or_default()
    };
    let members = sim.memberships().into_iter().map(|m| {
        (
            slug_of(&m.organization.id),
            email_of(m.user_id().unwrap_or_default()),
            m.role.clone(),
        )
    });
    let pending = sim
        .organization_invitations()
        .into_iter()
        .filter(|i| i.status == InvitationStatus::Pending)
        .map(|i| {
            (
                slug_of(&i.organization_id),
                i.email_address.to_lowercase(),
                i.role.clone(),
            )
        });
    members.chain(pending).collect()
}

/// The addresses with a pending instance invitation.
fn instance_pending(h: &Harness) -> BTreeSet<String> {
    h.pending()
        .into_iter()
        .map(|i| i.email_address.to_lowercase())
        .collect()
}

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

/// Cycles until one changes nothing in Clerk (at most four), each without errors. A removal
/// goes through the guard as any removal: an organization whose roster emptied is held, and
/// only `release` (the operator's `--allow-revocations`) lets it through.
async fn settle(h: &Harness, step: &str, release: bool) {
    for _ in 0..4 {
        let before = writes(&h.sim.stats());
        let report = h.cycle().await;
        let memberships = &report.memberships;
        assert!(
            memberships.errors.is_empty() && memberships.stopped.is_none(),
            "{step}: the membership pass went wrong: {memberships:#?}"
        );
        if memberships.held > 0 {
            assert!(release, "{step}: removals held: {memberships:#?}");
            assert_eq!(
                memberships.hold_reason,
                Some(HoldReason::EmptyOrganization),
                "{step}"
            );
            let released = h
                .cycle_with(Request {
                    allow_revocations: memberships.held,
                    ..Request::new("test")
                })
                .await;
            assert_eq!(released.memberships.held, 0, "{step}: released");
            continue;
        }
        if writes(&h.sim.stats()) == before {
            return;
        }
    }
    panic!("{step}: four cycles did not settle");
}

/// Clerk after the cycles: the organizations' people and the instance invitations.
async fn assert_clerk(h: &Harness, step: &str, places: &[Place], instance: &[&str]) {
    settle(h, step, false).await;
    check_clerk(h, step, places, instance);
}

/// [`assert_clerk`] where an organization's roster emptied: held by the guard, then released.
async fn assert_clerk_released(h: &Harness, step: &str, places: &[Place], instance: &[&str]) {
    settle(h, step, true).await;
    check_clerk(h, step, places, instance);
}

fn check_clerk(h: &Harness, step: &str, places: &[Place], instance: &[&str]) {
    let mut expected: BTreeSet<Place> = places.iter().cloned().collect();
    expected.insert(place("acme", HR_PERSON, "org:member"));
    assert_eq!(clerk_places(h), expected, "{step}: organizations");
    let mut pending: BTreeSet<String> = instance.iter().map(|e| (*e).to_owned()).collect();
    pending.insert(ANCHOR.to_owned());
    assert_eq!(instance_pending(h), pending, "{step}: instance invitations");
}

/// `invite-sync config check`, off the runtime's threads.
async fn config_check(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.args(["config", "check"]).output())
        .await
        .expect("the blocking task ends")
        .expect("config check runs")
}

/// The membership roster's other writer's row, as it was.
async fn assert_hr_row_untouched(h: &Harness) {
    let row: (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT organization, role, source FROM desired_memberships WHERE email = $1",
    )
    .bind(HR_PERSON)
    .fetch_one(&h.db.pool)
    .await
    .expect("the other writer's row is still there");
    assert_eq!(
        row,
        (
            "acme".to_owned(),
            Some("org:member".to_owned()),
            Some("hr".to_owned())
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_okta_group_push_sequence_ends_with_clerk_equal_to_the_groups() {
    let h = harness().await;
    let scim = Service::http_alone(&h).await;
    let (ann, bob, cy, dan) = (
        "ann@example.com",
        "bob@example.com",
        "cy@example.com",
        "dan@example.com",
    );
    let ann_id = user(&scim, ann).await;
    let bob_id = user(&scim, bob).await;
    let cy_id = user(&scim, cy).await;
    let _dan_id = user(&scim, dan).await;

    // Okta looks the group up, then pushes it with its members.
    let found = expect(
        &scim,
        Method::GET,
        "/Groups?filter=displayName%20eq%20%22Acme%22",
        None,
        StatusCode::OK,
    )
    .await;
    assert_eq!(found["totalResults"], 0);
    let acme = expect(
        &scim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Acme",
                    "members": members(&[&ann_id, &bob_id])})),
        StatusCode::CREATED,
    )
    .await;
    let acme_id = acme["id"].as_str().expect("the group has an id").to_owned();
    assert_clerk(
        &h,
        "created",
        &[
            place("acme", ann, "org:member"),
            place("acme", bob, "org:member"),
        ],
        &[cy, dan],
    )
    .await;

    // A member added.
    expect(
        &scim,
        Method::PATCH,
        &format!("/Groups/{acme_id}"),
        Some(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": cy_id}]}]),
        )),
        StatusCode::OK,
    )
    .await;
    // A member removed: bob leaves Acme and, in no mapped group now, gets the instance
    // invitation as any SCIM user does.
    expect(
        &scim,
        Method::PATCH,
        &format!("/Groups/{acme_id}"),
        Some(patch(json!([{"op": "remove",
                           "path": format!("members[value eq \"{bob_id}\"]")}]))),
        StatusCode::OK,
    )
    .await;
    assert_clerk(
        &h,
        "added and removed",
        &[
            place("acme", ann, "org:member"),
            place("acme", cy, "org:member"),
        ],
        &[bob, dan],
    )
    .await;

    // A role group: ann is an admin of Acme, the higher precedence.
    expect(
        &scim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Acme admins",
                    "members": members(&[&ann_id])})),
        StatusCode::CREATED,
    )
    .await;
    assert_clerk(
        &h,
        "role group",
        &[
            place("acme", ann, "org:admin"),
            place("acme", cy, "org:member"),
        ],
        &[bob, dan],
    )
    .await;

    // Renamed by a PUT of the whole group: Acme's members move to Globex.
    expect(
        &scim,
        Method::PUT,
        &format!("/Groups/{acme_id}"),
        Some(
            json!({"schemas": [GROUP], "id": acme_id, "displayName": "Globex Staff",
                    "members": members(&[&ann_id, &cy_id])}),
        ),
        StatusCode::OK,
    )
    .await;
    assert_clerk(
        &h,
        "renamed",
        &[
            place("acme", ann, "org:admin"),
            place("globex", ann, "org:member"),
            place("globex", cy, "org:member"),
        ],
        &[bob, dan],
    )
    .await;

    // The role group deleted: ann leaves Acme.
    let admins = expect(
        &scim,
        Method::GET,
        "/Groups?filter=displayName%20eq%20%22Acme%20admins%22",
        None,
        StatusCode::OK,
    )
    .await;
    let admins_id = admins["Resources"][0]["id"]
        .as_str()
        .expect("the role group is found")
        .to_owned();
    expect(
        &scim,
        Method::DELETE,
        &format!("/Groups/{admins_id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_clerk(
        &h,
        "role group deleted",
        &[
            place("globex", ann, "org:member"),
            place("globex", cy, "org:member"),
        ],
        &[bob, dan],
    )
    .await;
    assert_hr_row_untouched(&h).await;

    // The group itself deleted: its members are in no mapped group and get the instance
    // invitation.
    expect(
        &scim,
        Method::DELETE,
        &format!("/Groups/{acme_id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_clerk_released(&h, "group deleted", &[], &[ann, bob, cy, dan]).await;
    assert_hr_row_untouched(&h).await;
    let scim_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM desired_memberships WHERE source = 'scim'")
            .fetch_one(&h.db.pool)
            .await
            .expect("the membership roster can be read");
    assert_eq!(
        scim_rows, 0,
        "every SCIM membership row went with its group"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entra_id_sequence_ends_with_clerk_equal_to_the_groups() {
    let h = harness().await;
    let scim = Service::http_alone(&h).await;
    let people: Vec<String> = (0..6).map(|n| format!("p{n}@example.com")).collect();
    let mut ids = Vec::new();
    for email in &people {
        ids.push(user(&scim, email).await);
    }
    let email = |n: usize| people[n].as_str();

    // Entra creates the group empty, named by its object id, then adds members in several
    // PATCH requests with capitalised ops.
    let group = expect(
        &scim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Contractors",
                    "externalId": "6f1c2e9a-0000-4000-8000-00000000e1d1", "members": []})),
        StatusCode::CREATED,
    )
    .await;
    let group_id = group["id"]
        .as_str()
        .expect("the group has an id")
        .to_owned();
    for chunk in [[0, 1], [2, 3]] {
        expect(
            &scim,
            Method::PATCH,
            &format!("/Groups/{group_id}"),
            Some(patch(json!([{"op": "Add", "path": "members",
                               "value": members(&[&ids[chunk[0]], &ids[chunk[1]]])}]))),
            StatusCode::OK,
        )
        .await;
    }
    let read = expect(
        &scim,
        Method::GET,
        &format!("/Groups/{group_id}?excludedAttributes=members"),
        None,
        StatusCode::OK,
    )
    .await;
    assert!(read.get("members").is_none(), "{read}");
    // Matched by its externalId: Globex admins, though its name is no entry's.
    assert_clerk(
        &h,
        "created in several PATCHes",
        &(0..4)
            .map(|n| place("globex", email(n), "org:admin"))
            .collect::<Vec<_>>(),
        &[email(4), email(5)],
    )
    .await;

    // Removed by a value list.
    expect(
        &scim,
        Method::PATCH,
        &format!("/Groups/{group_id}"),
        Some(patch(json!([{"op": "Remove", "path": "members",
                           "value": members(&[&ids[0], &ids[1]])}]))),
        StatusCode::OK,
    )
    .await;
    // A second group by display name, a lower precedence for Globex: p3 stays an admin.
    expect(
        &scim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Globex Staff",
                    "externalId": "0a0a0a0a-0000-4000-8000-000000000002",
                    "members": members(&[&ids[3], &ids[4]])})),
        StatusCode::CREATED,
    )
    .await;
    assert_clerk(
        &h,
        "removed by a value list, staff group added",
        &[
            place("globex", email(2), "org:admin"),
            place("globex", email(3), "org:admin"),
            place("globex", email(4), "org:member"),
        ],
        &[email(0), email(1), email(5)],
    )
    .await;

    // displayName replaced: a group matched by its externalId keeps its mapping; the staff
    // group renamed "Acme admins" becomes Acme's admins.
    let staff = expect(
        &scim,
        Method::GET,
        "/Groups?filter=externalId%20eq%20%220a0a0a0a-0000-4000-8000-000000000002%22&excludedAttributes=members",
        None,
        StatusCode::OK,
    )
    .await;
    let staff_id = staff["Resources"][0]["id"]
        .as_str()
        .expect("the staff group is found")
        .to_owned();
    for (id, name) in [
        (&group_id, "Contractors (EMEA)"),
        (&staff_id, "Acme admins"),
    ] {
        expect(
            &scim,
            Method::PATCH,
            &format!("/Groups/{id}"),
            Some(patch(
                json!([{"op": "Replace", "path": "displayName", "value": name}]),
            )),
            StatusCode::OK,
        )
        .await;
    }
    assert_clerk(
        &h,
        "renamed",
        &[
            place("globex", email(2), "org:admin"),
            place("globex", email(3), "org:admin"),
            place("acme", email(3), "org:admin"),
            place("acme", email(4), "org:admin"),
        ],
        &[email(0), email(1), email(5)],
    )
    .await;

    // The first group deleted.
    expect(
        &scim,
        Method::DELETE,
        &format!("/Groups/{group_id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_clerk_released(
        &h,
        "deleted",
        &[
            place("acme", email(3), "org:admin"),
            place("acme", email(4), "org:admin"),
        ],
        &[email(0), email(1), email(2), email(5)],
    )
    .await;
    assert_hr_row_untouched(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_mapping_is_applied_at_start_and_unmapped_groups_are_listed() {
    let h = harness().await;
    let scim = Service::http_alone(&h).await;
    let ann_id = user(&scim, "ann@example.com").await;
    let bob_id = user(&scim, "bob@example.com").await;
    expect(
        &scim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Acme", "members": members(&[&ann_id])})),
        StatusCode::CREATED,
    )
    .await;
    expect(
        &scim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Everyone",
                    "members": members(&[&ann_id, &bob_id])})),
        StatusCode::CREATED,
    )
    .await;
    let rows = || async {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT email, organization, role FROM desired_memberships WHERE source = 'scim'
             ORDER BY 1, 2",
        )
        .fetch_all(&h.db.pool)
        .await
        .expect("the membership roster can be read");
        rows
    };
    let on_roster = || async {
        let emails: Vec<String> =
            sqlx::query_scalar("SELECT email FROM desired_invitees ORDER BY 1")
                .fetch_all(&h.db.pool)
                .await
                .expect("the roster can be read");
        emails
    };
    assert_eq!(
        rows().await,
        [("ann@example.com".to_owned(), "acme".to_owned(), None)]
    );
    assert_eq!(on_roster().await, [ANCHOR, "bob@example.com"]);

    let settings = h.settings();
    let unmapped = group_memberships::unmapped(
        &h.db.pool,
        &invite_sync::scim::groups_map::Mappings::new(settings.scim.groups.clone()),
        &settings.sync.target,
    )
    .await
    .expect("the groups can be read");
    assert_eq!(unmapped.len(), 1, "{unmapped:?}");
    assert_eq!(unmapped[0].display_name, "Everyone");
    assert_eq!(unmapped[0].members, 2);
    assert_eq!(
        group_memberships::unmapped_text(&unmapped),
        [
            "SCIM groups no scim.groups entry names (ignored): 1",
            "  \"Everyone\": 2 members"
        ]
    );

    // `GET /v1/status` and `status`'s text list them too.
    let status: Value = scim
        .client
        .get(format!("http://{}/v1/status", scim.addr))
        .header(AUTHORIZATION, format!("Bearer {API_TOKEN}"))
        .send()
        .await
        .expect("the status answers")
        .json()
        .await
        .expect("the status is JSON");
    assert_eq!(
        status["unmapped_scim_groups"],
        json!([{"id": unmapped[0].id, "display_name": "Everyone", "external_id": null,
                "members": 2}]),
        "{status}"
    );
    let config = invite_sync::reconcile::CycleConfig::from_settings(&settings);
    let mut collected = invite_sync::commands::status::collect(&h.db.pool, &config)
        .await
        .expect("the status is read");
    collected.unmapped_scim_groups = unmapped.clone();
    let text = invite_sync::commands::status::render_text(&collected);
    assert!(
        text.contains(
            "SCIM groups no scim.groups entry names (ignored): 1\n  \"Everyone\": 2 members\n"
        ),
        "{text}"
    );

    // `config check` lists them as comments after the configuration, reading the database.
    let url = h.db.url();
    let target = settings.sync.target.clone();
    let check_env = [
        ("DATABASE_URL", url.as_str()),
        ("INVITE_SYNC__SYNC__TARGET", target.as_str()),
        ("INVITE_SYNC__SCIM__TOKEN", TOKEN),
        ("INVITE_SYNC__SCIM__GROUPS", MAPPINGS),
    ];
    let checked = config_check(bare_command(&check_env)).await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "\n# SCIM groups no scim.groups entry names (ignored): 1\n#   \"Everyone\": 2 members\n"
        ),
        "{stdout}"
    );
    let mut bad_env = check_env.to_vec();
    bad_env.pop();
    bad_env.push((
        "INVITE_SYNC__SCIM__GROUPS",
        r#"[{"group": "Acme", "organisation": "acme"}]"#,
    ));
    let refused = config_check(bare_command(&bad_env)).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("scim.groups: entry 1 (group \"Acme\"): unknown field `organisation`"),
        "{stderr}"
    );

    // The mapping changes: Everyone now names Globex, Acme no longer maps. What `run` does
    // at start brings the rows and the instance roster in line.
    let changed = group_memberships::GroupMappings::new(
        vec![invite_sync::scim::groups_map::GroupMapping {
            group: "everyone".to_owned(),
            organization: "globex".to_owned(),
            role: None,
            precedence: 0,
        }],
        "desired_invitees",
        "desired_memberships",
        None,
    );
    let done = group_memberships::recompute_at_start(&h.db.pool, &changed, &settings.sync.target)
        .await
        .expect("the recompute succeeds");
    assert_eq!((done.written, done.deleted, done.withdrawn), (2, 1, 1));
    assert_eq!(
        rows().await,
        [
            ("ann@example.com".to_owned(), "globex".to_owned(), None),
            ("bob@example.com".to_owned(), "globex".to_owned(), None),
        ]
    );
    assert_eq!(on_roster().await, [ANCHOR]);
    let again = group_memberships::recompute_at_start(&h.db.pool, &changed, &settings.sync.target)
        .await
        .expect("the recompute succeeds");
    assert_eq!(
        (
            again.written,
            again.deleted,
            again.withdrawn,
            again.restored
        ),
        (0, 0, 0, 0),
        "a second recompute changes nothing"
    );
    assert_hr_row_untouched(&h).await;
}
