//! The SCIM endpoint over HTTP, served by the real router on a real socket, with cycles
//! driven one at a time against the simulator: the provisioning sequences Okta and Microsoft
//! Entra ID send, the refusals (and that they write nothing), and the rule between SCIM rows
//! and the CSV import and the roster webhook. The scim2-tester conformance run against
//! `invite-sync run` is in cli.rs, beside the other tests of the binary.

use invite_sync::clerk::InvitationStatus;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{wait_for, Harness, Service};

const TOKEN: &str = "scim-token-0123456789abcdef";
/// The second token of a rotation: either is accepted.
const ROTATED_TOKEN: &str = "scim-token-rotated-0123456789";
const ROSTER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// On the roster beside the people provisioned: the guard holds every revocation while the
/// roster is empty, and each sequence removes its only SCIM user.
const ANCHOR: &str = "anchor@example.com";

/// A harness whose schedule never fires, with the SCIM endpoint on (two tokens, a rotation).
///
/// Revocations go through the guard, as always. Removing the one person a sequence provisions
/// revokes all of the (one or two) owned pending invitations, a share of up to 1.0 that the
/// default `max_revocation_ratio` of 0.2 would hold; the guard is set to let that through so the
/// test sees the revocation itself. The guard's own behaviour is tested in reconcile.rs.
async fn harness(extra: &[(&str, &str)]) -> Harness {
    let tokens = format!("{TOKEN},{ROTATED_TOKEN}");
    let mut overrides: Vec<(&str, &str)> = vec![
        ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1.0"),
        ("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "1000"),
        ("INVITE_SYNC__SCIM__TOKEN", &tokens),
    ];
    overrides.extend_from_slice(extra);
    let h = Harness::serving(&overrides).await;
    h.add_people(&[ANCHOR]).await;
    h
}

/// The SCIM requests, to a service started with `Service::http_alone` (no worker runs: the
/// test drives cycles) or `Service::start`.
impl Service {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        self.scim_call(method, path, Some(TOKEN), body).await
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        status: StatusCode,
    ) -> Value {
        let (got, answer) = self.call(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }
}

/// A roster row: its metadata and source.
async fn roster_row(h: &Harness, email: &str) -> Option<(Value, Option<String>)> {
    sqlx::query_as("SELECT public_metadata, source FROM desired_invitees WHERE email = $1")
        .bind(email)
        .fetch_optional(&h.db.pool)
        .await
        .expect("the roster can be read")
}

/// The simulator's invitations for `email`, oldest first, by status.
fn statuses(h: &Harness, email: &str) -> Vec<InvitationStatus> {
    let mut invitations: Vec<_> = h
        .sim
        .invitations()
        .into_iter()
        .filter(|i| i.email_address == email)
        .collect();
    invitations.sort_by_key(|i| i.created_at);
    invitations.into_iter().map(|i| i.status).collect()
}

fn pending_metadata(h: &Harness, email: &str) -> Value {
    let pending: Vec<_> = h
        .pending()
        .into_iter()
        .filter(|i| i.email_address == email)
        .collect();
    assert_eq!(
        pending.len(),
        1,
        "one pending invitation for {email}: {pending:?}"
    );
    Value::Object(pending[0].public_metadata.clone())
}

/// Everything the endpoint may write: the SCIM users and the roster.
async fn snapshot(h: &Harness) -> (Value, Value) {
    let users: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(u) ORDER BY id), '[]') FROM invite_sync_scim_users u",
    )
    .fetch_one(&h.db.pool)
    .await
    .expect("the SCIM users can be read");
    let roster: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY email), '[]') FROM desired_invitees r",
    )
    .fetch_one(&h.db.pool)
    .await
    .expect("the roster can be read");
    (users, roster)
}

/// A request, and the status and `scimType` it is refused with. A POST without a body sends
/// one that is not JSON.
type Refusal = (
    Method,
    String,
    Option<Value>,
    StatusCode,
    Option<&'static str>,
);

fn patch(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_okta_provisioning_sequence_invites_revokes_invites_again_and_revokes_on_delete() {
    let h = harness(&[]).await;
    let scim = Service::http_alone(&h).await;
    let ann = "ann.lee@example.com";

    // Okta looks the person up first, with its paging parameters.
    let found = scim
        .expect(
            Method::GET,
            "/Users?filter=userName%20eq%20%22ann.lee%40example.com%22&startIndex=1&count=100",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 0);

    let created = scim
        .expect(
            Method::POST,
            "/Users",
            Some(&json!({
                "schemas": [USER, ENTERPRISE],
                "userName": ann,
                "externalId": "00u1okta",
                "name": {"givenName": "Ann", "familyName": "Lee"},
                "emails": [{"primary": true, "value": ann, "type": "work"}],
                "active": true,
                "password": "never-kept-1!",
                ENTERPRISE: {"department": "Sales", "employeeNumber": "701"}
            })),
            StatusCode::CREATED,
        )
        .await;
    let id = created["id"]
        .as_str()
        .expect("the user has an id")
        .to_owned();
    assert!(created.get("password").is_none());
    let mapped = json!({"external_id": "00u1okta", "given_name": "Ann", "family_name": "Lee",
        "department": "Sales", "employee_number": "701"});
    assert_eq!(
        roster_row(&h, ann).await,
        Some((mapped.clone(), Some("scim".to_owned())))
    );
    let found = scim
        .expect(
            Method::GET,
            "/Users?filter=userName%20eq%20%22ANN.LEE%40example.com%22&startIndex=1&count=100",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], id.as_str());

    h.cycle().await;
    assert_eq!(statuses(&h, ann), [InvitationStatus::Pending]);
    assert_eq!(pending_metadata(&h, ann), mapped);

    // Okta deactivates with a PATCH replacing active, without a path.
    let user = format!("/Users/{id}");
    let deactivated = scim
        .expect(
            Method::PATCH,
            &user,
            Some(&patch(
                json!([{"op": "replace", "value": {"active": false}}]),
            )),
            StatusCode::OK,
        )
        .await;
    assert_eq!(deactivated["active"], false);
    assert_eq!(roster_row(&h, ann).await, None);
    let read = scim.expect(Method::GET, &user, None, StatusCode::OK).await;
    assert_eq!(
        (read["active"].clone(), read["userName"].clone()),
        (json!(false), json!(ann))
    );
    h.cycle().await;
    assert_eq!(statuses(&h, ann), [InvitationStatus::Revoked]);

    let reactivated = scim
        .expect(
            Method::PATCH,
            &user,
            Some(&patch(
                json!([{"op": "replace", "value": {"active": true}}]),
            )),
            StatusCode::OK,
        )
        .await;
    assert_eq!(reactivated["active"], true);
    assert_eq!(
        roster_row(&h, ann).await,
        Some((mapped.clone(), Some("scim".to_owned())))
    );
    h.cycle().await;
    h.cycle().await;
    assert_eq!(
        statuses(&h, ann),
        [InvitationStatus::Revoked, InvitationStatus::Pending],
        "invited again, once"
    );

    scim.expect(Method::DELETE, &user, None, StatusCode::NO_CONTENT)
        .await;
    scim.expect(Method::GET, &user, None, StatusCode::NOT_FOUND)
        .await;
    assert_eq!(roster_row(&h, ann).await, None);
    h.cycle().await;
    assert_eq!(
        statuses(&h, ann),
        [InvitationStatus::Revoked, InvitationStatus::Revoked]
    );
    assert_eq!(statuses(&h, ANCHOR), [InvitationStatus::Pending]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entra_provisioning_sequence_with_its_habits_invites_revokes_invites_again_and_revokes_on_delete(
) {
    let h = harness(&[]).await;
    let scim = Service::http_alone(&h).await;
    let bo = "bo.chen@contoso.example";

    let found = scim
        .expect(
            Method::GET,
            "/Users?filter=userName+eq+%22bo.chen%40contoso.example%22",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 0);
    let created = scim
        .expect(
            Method::POST,
            "/Users",
            Some(&json!({
                "schemas": [USER, ENTERPRISE],
                "externalId": "bo.chen",
                "userName": bo,
                "active": true,
                "displayName": "Bo Chen",
                "emails": [{"primary": true, "type": "work", "value": bo}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "Bo Chen", "familyName": "Chen", "givenName": "Bo"},
                ENTERPRISE: {"department": "Finance", "employeeNumber": "1001"}
            })),
            StatusCode::CREATED,
        )
        .await;
    let user = format!("/Users/{}", created["id"].as_str().expect("an id"));
    h.cycle().await;
    assert_eq!(statuses(&h, bo), [InvitationStatus::Pending]);

    // Entra: capitalised operations, booleans as strings, filtered paths.
    scim.expect(
        Method::PATCH,
        &user,
        Some(&patch(json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": bo},
            {"op": "Replace", "path": "active", "value": "False"}
        ]))),
        StatusCode::OK,
    )
    .await;
    assert_eq!(roster_row(&h, bo).await, None);
    h.cycle().await;
    assert_eq!(statuses(&h, bo), [InvitationStatus::Revoked]);

    let reactivated = scim
        .expect(
            Method::PATCH,
            &user,
            Some(&patch(json!([
                {"op": "Add", "path": format!("{ENTERPRISE}:department"), "value": "Treasury"},
                {"op": "Replace", "path": "active", "value": "True"}
            ]))),
            StatusCode::OK,
        )
        .await;
    assert_eq!(reactivated["active"], true);
    assert_eq!(reactivated[ENTERPRISE]["department"], "Treasury");
    let mapped = json!({"external_id": "bo.chen", "given_name": "Bo", "family_name": "Chen",
        "department": "Treasury", "employee_number": "1001"});
    assert_eq!(
        roster_row(&h, bo).await,
        Some((mapped.clone(), Some("scim".to_owned())))
    );
    h.cycle().await;
    h.cycle().await;
    assert_eq!(
        statuses(&h, bo),
        [InvitationStatus::Revoked, InvitationStatus::Pending]
    );
    assert_eq!(pending_metadata(&h, bo), mapped);

    scim.expect(Method::DELETE, &user, None, StatusCode::NO_CONTENT)
        .await;
    h.cycle().await;
    assert_eq!(
        statuses(&h, bo),
        [InvitationStatus::Revoked, InvitationStatus::Revoked]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_scim_errors_with_the_right_status_and_write_nothing() {
    let h = harness(&[]).await;
    let scim = Service::http_alone(&h).await;
    let cy = json!({"schemas": [USER], "userName": "cy@example.com", "externalId": "cy-1",
        "emails": [{"value": "cy@example.com", "type": "work", "primary": true}]});
    let created = scim
        .expect(Method::POST, "/Users", Some(&cy), StatusCode::CREATED)
        .await;
    let user = format!("/Users/{}", created["id"].as_str().expect("an id"));
    let before = snapshot(&h).await;

    // Tokens: none or a wrong one is 401; the rotated one works.
    for token in [None, Some("scim-token-wrong-0123456789")] {
        let (status, body) = scim.scim_call(Method::GET, "/Users", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["schemas"], json!([ERROR]));
    }
    let (status, _) = scim
        .scim_call(
            Method::POST,
            "/Users",
            None,
            Some(&json!({"schemas": [USER], "userName": "x@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = scim
        .scim_call(Method::GET, &user, Some(ROTATED_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let refusals: Vec<Refusal> = vec![
        (
            Method::GET,
            "/Users?filter=userName%20eq".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
        ),
        (
            Method::GET,
            "/Users?filter=userName%20eq%20%ZZ".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
        ),
        (
            Method::GET,
            "/Users?filter=userName%20equals%20%22a%22".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
        ),
        (
            Method::GET,
            "/Users?count=many".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        // A second user with the same userName, in another case, or with the same address.
        (
            Method::POST,
            "/Users".to_owned(),
            Some(json!({"schemas": [USER], "userName": "CY@example.com"})),
            StatusCode::CONFLICT,
            Some("uniqueness"),
        ),
        (
            Method::POST,
            "/Users".to_owned(),
            Some(json!({"schemas": [USER], "userName": "cy-two",
            "emails": [{"value": "cy@example.com", "primary": true}]})),
            StatusCode::CONFLICT,
            Some("uniqueness"),
        ),
        (
            Method::POST,
            "/Users".to_owned(),
            Some(json!({"schemas": [USER], "displayName": "no userName"})),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::POST,
            "/Users".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
        ),
        (
            Method::PUT,
            user.clone(),
            Some(json!({"schemas": [USER], "userName": "cy@example.com", "active": "maybe"})),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        // The first operation is valid; the second is not: neither is applied.
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([
            {"op": "replace", "path": "active", "value": false},
            {"op": "replace", "path": "id", "value": "mine"}]))),
            StatusCode::BAD_REQUEST,
            Some("mutability"),
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([
            {"op": "replace", "path": "displayName", "value": "Cy"},
            {"op": "remove", "path": "emails[type eq"}]))),
            StatusCode::BAD_REQUEST,
            Some("invalidPath"),
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([{"op": "remove"}]))),
            StatusCode::BAD_REQUEST,
            Some("noTarget"),
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(
                json!([{"op": "replace", "path": "active", "value": "perhaps"}]),
            )),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            "/Users/00000000-0000-0000-0000-000000000000".to_owned(),
            Some(patch(
                json!([{"op": "replace", "path": "active", "value": false}]),
            )),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::DELETE,
            "/Users/not-an-id".to_owned(),
            None,
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::POST,
            "/ServiceProviderConfig".to_owned(),
            Some(json!({})),
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::GET,
            "/Roles".to_owned(),
            None,
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (method, path, body, status, scim_type) in refusals {
        let (got, answer) = match &body {
            Some(body) => scim.call(method.clone(), &path, Some(body)).await,
            // A body that is not JSON.
            None if method == Method::POST => {
                let response = scim
                    .client
                    .post(format!("http://{}/scim/v2{path}", scim.addr))
                    .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .body("{not json")
                    .send()
                    .await
                    .expect("the service answers");
                let status = response.status();
                (
                    status,
                    serde_json::from_str(&response.text().await.expect("a body")).expect("JSON"),
                )
            }
            None => scim.call(method.clone(), &path, None).await,
        };
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["schemas"], json!([ERROR]), "{method} {path}");
        assert_eq!(
            answer["status"],
            status.as_u16().to_string(),
            "{method} {path}"
        );
        assert_eq!(
            answer["scimType"].as_str(),
            scim_type,
            "{method} {path}: {answer}"
        );
        assert!(answer["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(
            snapshot(&h).await,
            before,
            "{method} {path} wrote something"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_scim_endpoint_answers_404() {
    let h = Harness::serving(&[]).await;
    let scim = Service::http_alone(&h).await;
    for path in ["/Users", "/ServiceProviderConfig", "/Schemas"] {
        let (status, _) = scim.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_csv_import_leaves_scim_rows_alone_and_the_roster_webhook_is_refused_on_them() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let scim = Service::http_alone(&h).await;
    let di = "di@example.com";
    scim.expect(
        Method::POST,
        "/Users",
        Some(&json!({"schemas": [USER], "userName": di, "externalId": "di-1"})),
        StatusCode::CREATED,
    )
    .await;
    let scim_row = Some((json!({"external_id": "di-1"}), Some("scim".to_owned())));

    // A replacing import that does not name di, and one that names di with other metadata.
    let options = invite_sync::import::ImportOptions {
        relation: "desired_invitees".to_owned(),
        replace: true,
        dry_run: false,
        skip_invalid: false,
        force: true,
        max_delete_ratio: 0.5,
    };
    let summary = invite_sync::import::import_reader(
        &h.db.pool,
        "email\nnew@example.com\n".as_bytes(),
        &options,
    )
    .await
    .expect("the import runs");
    assert_eq!(
        (summary.inserted, summary.deleted, summary.kept_scim),
        (1, 1, 1),
        "{summary:?}"
    );
    assert!(
        summary.render().contains("left to SCIM 1"),
        "{}",
        summary.render()
    );
    assert_eq!(roster_row(&h, di).await, scim_row);
    assert_eq!(
        roster_row(&h, ANCHOR).await,
        None,
        "the anchor was not in the file"
    );
    let summary = invite_sync::import::import_reader(
        &h.db.pool,
        "email,public_metadata\ndi@example.com,\"{\"\"team\"\":\"\"csv\"\"}\"\nnew@example.com,\n"
            .as_bytes(),
        &options,
    )
    .await
    .expect("the import runs");
    assert_eq!(summary.kept_scim, 1, "{summary:?}");
    assert_eq!(roster_row(&h, di).await, scim_row);

    // The roster webhook may not remove or overwrite a SCIM row: 409, nothing applied.
    let base = format!("http://{}", scim.addr);
    for (n, body) in [
        json!({"type": "invitee.removed", "data": {"email": di}}),
        json!({"type": "roster.batch", "data": {"upserted": [{"email": "eve@example.com"}, {"email": di}]}}),
    ]
    .into_iter()
    .enumerate()
    {
        let body = body.to_string();
        let id = format!("msg_scim_{n}");
        let timestamp = chrono::Utc::now().timestamp();
        let signature = invite_sync::webhook_signature::sign(ROSTER_SECRET, &id, timestamp, body.as_bytes())
            .expect("the secret signs");
        let response = scim
            .client
            .post(format!("{base}/v1/webhooks/roster"))
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .expect("the service answers");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let text = response.text().await.expect("a body");
        assert!(text.contains(di) && text.contains("SCIM"), "{text}");
        assert_eq!(roster_row(&h, di).await, scim_row);
        assert_eq!(roster_row(&h, "eve@example.com").await, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scim_write_wakes_the_running_service_like_any_roster_change() {
    let h = harness(&[("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.2")]).await;
    let scim = Service::start(&h).await;
    let deadline = std::time::Duration::from_secs(10);
    wait_for(
        "the start cycle and the roster listener",
        deadline,
        || async {
            let listening = h.listener_pid().await.is_some();
            let finished: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM invite_sync_runs WHERE finished_at IS NOT NULL",
            )
            .fetch_one(&h.db.pool)
            .await
            .expect("the runs can be read");
            (listening && finished > 0).then_some(())
        },
    )
    .await;

    let gil = "gil@example.com";
    scim.expect(
        Method::POST,
        "/Users",
        Some(&json!({"schemas": [USER], "userName": gil})),
        StatusCode::CREATED,
    )
    .await;
    wait_for("an invitation for gil", deadline, || {
        std::future::ready((statuses(&h, gil) == [InvitationStatus::Pending]).then_some(()))
    })
    .await;
    let woken: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invite_sync_runs WHERE trigger = 'notify'")
            .fetch_one(&h.db.pool)
            .await
            .expect("the runs can be read");
    assert!(
        woken >= 1,
        "the cycle was started by the roster notification"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scim_user_takes_over_an_existing_row_and_never_deletes_another_writers_row() {
    let h = harness(&[]).await;
    let scim = Service::http_alone(&h).await;
    for email in ["fay@example.com", "gus@example.com"] {
        sqlx::query(
            "INSERT INTO desired_invitees (email, public_metadata, redirect_url, source)
             VALUES ($1, '{\"team\": \"hr\"}', 'https://app.example.com/in', 'hr')",
        )
        .bind(email)
        .execute(&h.db.pool)
        .await
        .expect("a row from another writer");
    }
    let hr_row = Some((json!({"team": "hr"}), Some("hr".to_owned())));

    // An inactive SCIM user leaves the other writer's row as it is, even when deleted.
    let gus = scim
        .expect(
            Method::POST,
            "/Users",
            Some(&json!({"schemas": [USER], "userName": "gus@example.com", "active": false})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(roster_row(&h, "gus@example.com").await, hr_row);
    let gus = format!("/Users/{}", gus["id"].as_str().expect("an id"));
    scim.expect(Method::DELETE, &gus, None, StatusCode::NO_CONTENT)
        .await;
    assert_eq!(roster_row(&h, "gus@example.com").await, hr_row);

    // An active one takes the row over: metadata and source become SCIM's, the rest stays.
    scim.expect(
        Method::POST,
        "/Users",
        Some(&json!({"schemas": [USER], "userName": "fay@example.com", "externalId": "fay-9"})),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        roster_row(&h, "fay@example.com").await,
        Some((json!({"external_id": "fay-9"}), Some("scim".to_owned())))
    );
    let redirect: Option<String> = sqlx::query_scalar(
        "SELECT redirect_url FROM desired_invitees WHERE email = 'fay@example.com'",
    )
    .fetch_one(&h.db.pool)
    .await
    .expect("the row can be read");
    assert_eq!(redirect.as_deref(), Some("https://app.example.com/in"));
}

#[tokio::test(flavor = "multi_thread")]
async fn users_are_found_by_each_filter_and_paged_by_start_index_and_count() {
    let h = harness(&[]).await;
    let scim = Service::http_alone(&h).await;
    let mut ids = Vec::new();
    for (n, name) in ["hal", "ida", "jon"].iter().enumerate() {
        let created = scim
            .expect(
                Method::POST,
                "/Users",
                Some(
                    &json!({"schemas": [USER], "userName": format!("{name}@example.com"),
                    "externalId": format!("ext-{n}"), "active": n != 1,
                    "emails": [{"value": format!("{name}.work@example.com"), "type": "work"}]}),
                ),
                StatusCode::CREATED,
            )
            .await;
        ids.push(created["id"].as_str().expect("an id").to_owned());
    }
    let found = |answer: &Value| -> Vec<String> {
        answer["Resources"]
            .as_array()
            .expect("Resources")
            .iter()
            .map(|r| r["id"].as_str().expect("an id").to_owned())
            .collect()
    };
    let search = |filter: &str| {
        format!(
            "/Users?filter={}",
            url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
        )
    };
    for (filter, expected) in [
        (r#"userName eq "IDA@example.com""#.to_owned(), vec![1]),
        (r#"externalId eq "ext-2""#.to_owned(), vec![2]),
        (
            r#"emails.value eq "hal.work@example.com""#.to_owned(),
            vec![0],
        ),
        (format!(r#"id eq "{}""#, ids[2]), vec![2]),
        (r#"id eq "not-a-uuid""#.to_owned(), vec![]),
        (
            r#"active eq true and emails[type eq "work" and value sw "jon"]"#.to_owned(),
            vec![2],
        ),
        (
            r#"active eq false or externalId eq "ext-0""#.to_owned(),
            vec![0, 1],
        ),
    ] {
        let answer = scim
            .expect(Method::GET, &search(&filter), None, StatusCode::OK)
            .await;
        let expected: Vec<String> = expected
            .into_iter()
            .map(|i: usize| ids[i].clone())
            .collect();
        assert_eq!(found(&answer), expected, "{filter}");
        assert_eq!(answer["totalResults"], expected.len(), "{filter}");
    }

    let page = scim
        .expect(
            Method::GET,
            "/Users?startIndex=2&count=1",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found(&page), [ids[1].clone()]);
    assert_eq!(
        (
            page["totalResults"].clone(),
            page["startIndex"].clone(),
            page["itemsPerPage"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    let counted = scim
        .expect(Method::GET, "/Users?count=0", None, StatusCode::OK)
        .await;
    assert_eq!(
        (counted["totalResults"].clone(), found(&counted).len()),
        (json!(3), 0)
    );
    let past = scim
        .expect(Method::GET, "/Users?startIndex=9", None, StatusCode::OK)
        .await;
    assert_eq!(
        (past["totalResults"].clone(), found(&past).len()),
        (json!(3), 0)
    );

    let searched = scim
        .expect(
            Method::POST,
            "/Users/.search",
            Some(
                &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "externalId eq \"ext-0\"", "attributes": ["userName"]}),
            ),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        searched["Resources"],
        json!([{"schemas": [USER], "id": ids[0], "userName": "hal@example.com"}])
    );
}
