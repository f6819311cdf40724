//! The Clerk simulator's organizations over a real socket: organizations, organization
//! invitations, memberships, roles and `GET /users/count`, driven with raw HTTP and checked
//! against Clerk's spec.

use std::time::Duration;

use invite_sync::clerk::sim::{Fault, FaultKind, Operation, SimOptions, SimStats};
use serde_json::{json, Value};

use crate::sim::{
    id_of, live_key, no_limits, sim_delivering_to, verified, RawSim, Receiver, Reply, Spec,
};

// ---------------------------------------------------------------------------
// Helpers

impl RawSim {
    async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(self.auth(self.http.patch(self.v1(path))).json(body))
            .await
    }

    /// `get` of a path it owns, so a closure can make the path and return the call.
    async fn get_owned(&self, path: String) -> Reply {
        self.get(&path).await
    }

    /// A new organization through `POST /v1/organizations`.
    async fn org(&self, body: Value) -> Value {
        self.post("/organizations", &body).await.ok().clone()
    }

    async fn invite(&self, org: &str, email: &str, role: &str) -> Reply {
        self.post(
            &format!("/organizations/{org}/invitations"),
            &json!({"email_address": email, "role": role}),
        )
        .await
    }

    async fn member(&self, org: &str, user_id: &str, role: &str) -> Reply {
        self.post(
            &format!("/organizations/{org}/memberships"),
            &json!({"user_id": user_id, "role": role}),
        )
        .await
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {value}"))
}

fn data(page: &Value) -> &Vec<Value> {
    page["data"].as_array().expect("a page's data")
}

fn field_of(page: &Value, key: &str) -> Vec<String> {
    data(page)
        .iter()
        .map(|item| str_of(item, key).to_owned())
        .collect()
}

fn member_emails(page: &Value) -> Vec<String> {
    data(page)
        .iter()
        .map(|m| str_of(&m["public_user_data"], "identifier").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// GET /users/count and the Content-Type of every answer

#[tokio::test]
async fn users_count_counts_what_get_users_finds_whatever_the_page() {
    let spec = Spec::load();
    let h = RawSim::start().await;
    h.sim
        .seed_users(&["a@example.com", "b@example.com", "c@other.org"]);
    let all = h.get("/users/count").await;
    spec.assert_conforms(
        &spec.response_schema("/users/count", "get", "200"),
        all.ok(),
        "users count",
    );
    assert_eq!(all.body, json!({"object": "total_count", "total_count": 3}));
    let two = h
        .get("/users/count?email_address=A%40example.com&email_address=b%40example.com&email_address=none%40x.com&limit=1&offset=1&order_by=-created_at")
        .await;
    assert_eq!(two.ok()["total_count"], 2, "limit and offset do not count");
    let query = h.get("/users/count?email_address_query=other").await;
    assert_eq!(query.ok()["total_count"], 1);
    let too_many: String = (0..101)
        .map(|i| format!("email_address=u{i}%40x.co&"))
        .collect();
    h.get(&format!("/users/count?{too_many}"))
        .await
        .param_error(422, "form_param_value_invalid", "email_address");
    assert_eq!(h.sim.stats().count(Operation::CountUsers, 200), 3);
}

#[tokio::test]
async fn every_json_answer_is_exactly_application_json() {
    let h = RawSim::start().await;
    let org = h.org(json!({"name": "Acme"})).await;
    let org_id = str_of(&org, "id");
    let answers = [
        h.get("/users/count").await,
        h.get("/users").await,
        h.get(&format!("/organizations/{org_id}")).await,
        h.get("/organizations").await,
        h.get("/organization_roles").await,
        h.invite(org_id, "a@example.com", "org:member").await,
        h.get(&format!("/organizations/{org_id}/invitations")).await,
        h.get("/organization_invitations").await,
        h.get(&format!("/organizations/{org_id}/memberships")).await,
        // Errors too: 404, 422, 400, 401.
        h.get("/organizations/no-such-org").await,
        h.post("/organizations", &json!({})).await,
        h.invite(org_id, "a@example.com", "org:member").await,
        h.send(h.http.get(h.v1("/users/count"))).await,
    ];
    for answer in answers {
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{}",
            answer.body
        );
        // A JSON body (the user list is a bare array), not a failed parse.
        assert!(
            answer.body.is_object() || answer.body.is_array(),
            "{}",
            answer.body
        );
    }
}

// ---------------------------------------------------------------------------
// Organizations

#[tokio::test]
async fn organizations_are_created_got_by_id_or_slug_and_listed() {
    let h = RawSim::start().await;
    let creator = h.sim.create_user("founder@example.com");
    let acme = h
        .org(
            json!({"name": "Acme", "slug": "acme", "max_allowed_memberships": 5,
                    "public_metadata": {"tier": "gold"}, "created_by": creator.id}),
        )
        .await;
    assert_eq!(acme["object"], "organization");
    assert!(str_of(&acme, "id").starts_with("org_"));
    assert_eq!(acme["max_allowed_memberships"], 5);
    assert_eq!(acme["public_metadata"], json!({"tier": "gold"}));
    assert!(
        acme.get("members_count").is_none(),
        "counts only when asked"
    );
    let id = str_of(&acme, "id");

    let by_slug = h.get("/organizations/acme").await.ok().clone();
    let by_id = h.get(&format!("/organizations/{id}")).await.ok().clone();
    assert_eq!(by_slug, by_id);
    let counted = h
        .get("/organizations/acme?include_members_count=true")
        .await
        .ok()
        .clone();
    assert_eq!(
        counted["members_count"], 1,
        "created_by is its first member"
    );
    assert_eq!(counted["pending_invitations_count"], 0);
    let admins = h
        .get(&format!("/organizations/{id}/memberships?role=org:admin"))
        .await
        .ok()
        .clone();
    assert_eq!(member_emails(&admins), ["founder@example.com"]);

    let named = h.org(json!({"name": "Beta Corp."})).await;
    assert_eq!(named["slug"], "beta-corp", "a slug made of the name");
    assert_eq!(named["max_allowed_memberships"], 0, "no limit unless set");
    h.org(json!({"name": "Gamma"})).await;

    let page = h.get("/organizations?limit=2").await.ok().clone();
    assert_eq!(page["total_count"], 3);
    assert_eq!(
        field_of(&page, "name"),
        ["Gamma", "Beta Corp."],
        "newest first"
    );
    let rest = h.get("/organizations?limit=2&offset=2").await.ok().clone();
    assert_eq!(field_of(&rest, "name"), ["Acme"]);
    let query = h.get("/organizations?query=BETA").await.ok().clone();
    assert_eq!(field_of(&query, "slug"), ["beta-corp"]);
    let by_name = h
        .get("/organizations?order_by=name&include_members_count=true")
        .await;
    assert_eq!(
        field_of(by_name.ok(), "name"),
        ["Acme", "Beta Corp.", "Gamma"]
    );
    assert_eq!(by_name.body["data"][0]["members_count"], 1);

    h.post("/organizations", &json!({"name": "Again", "slug": "acme"}))
        .await
        .param_error(422, "form_identifier_exists", "slug");
    h.post(
        "/organizations",
        &json!({"name": "Bad", "slug": "Not A Slug"}),
    )
    .await
    .param_error(422, "form_param_value_invalid", "slug");
    h.post("/organizations", &json!({"slug": "x"}))
        .await
        .param_error(422, "form_param_missing", "name");
    h.post("/organizations", &json!({"name": "x", "colour": "red"}))
        .await
        .param_error(422, "form_param_unknown", "colour");
    h.post(
        "/organizations",
        &json!({"name": "x", "max_allowed_memberships": -1}),
    )
    .await
    .param_error(422, "form_param_value_invalid", "max_allowed_memberships");
    h.post(
        "/organizations",
        &json!({"name": "x", "created_by": "user_nobody"}),
    )
    .await
    .error(404, "resource_not_found");
    h.get("/organizations/nobody")
        .await
        .error(404, "resource_not_found");
    assert_eq!(
        h.sim.organizations().len(),
        3,
        "refused creates made nothing"
    );
}

// ---------------------------------------------------------------------------
// Organization invitations

#[tokio::test]
async fn an_organization_invitation_is_created_for_new_and_existing_accounts_and_once_per_address()
{
    let h = RawSim::start().await;
    let org = h.org(json!({"name": "Acme", "slug": "acme"})).await;
    let org_id = str_of(&org, "id");
    let created = h
        .post(
            &format!("/organizations/{org_id}/invitations"),
            &json!({"email_address": "New@Example.com", "role": "org:admin",
                    "public_metadata": {"team": "a"}, "private_metadata": {"hr": 1},
                    "redirect_url": "https://app.example.com/welcome", "expires_in_days": 2,
                    "notify": false}),
        )
        .await
        .ok()
        .clone();
    assert!(str_of(&created, "id").starts_with("orginv_"));
    assert_eq!(created["object"], "organization_invitation");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["role"], "org:admin");
    assert_eq!(created["role_name"], "Admin");
    assert_eq!(created["organization_id"], org_id);
    assert_eq!(created["private_metadata"], json!({"hr": 1}));
    assert!(
        str_of(&created, "url").contains("redirect_url=https%3A%2F%2Fapp.example.com%2Fwelcome")
    );
    let lifetime = created["expires_at"].as_i64().expect("expires_at")
        - created["created_at"].as_i64().expect("created_at");
    assert_eq!(lifetime, 2 * 24 * 3600 * 1000);

    // Unlike an instance invitation, an address with an account may be invited.
    h.sim.seed_users(&["existing@example.com"]);
    h.invite(org_id, "existing@example.com", "org:member")
        .await
        .ok();

    let duplicate = h.invite(org_id, "new@example.com", "org:member").await;
    let error = duplicate.error(400, "duplicate_record");
    assert_eq!(error["meta"]["email_addresses"], json!(["new@example.com"]));
    // Another organization is another matter.
    let other = h.org(json!({"name": "Other"})).await;
    h.invite(str_of(&other, "id"), "new@example.com", "org:member")
        .await
        .ok();

    h.invite(org_id, "x@example.com", "org:nope")
        .await
        .param_error(404, "resource_not_found", "role");
    h.invite("org_unknown", "x@example.com", "org:member")
        .await
        .error(404, "resource_not_found");
    h.invite("acme", "x@example.com", "org:member")
        .await
        .error(404, "resource_not_found");
    h.post(
        &format!("/organizations/{org_id}/invitations"),
        &json!({"email_address": "x@example.com"}),
    )
    .await
    .param_error(422, "form_param_missing", "role");
    h.invite(org_id, "not-an-address", "org:member")
        .await
        .param_error(422, "form_param_format_invalid", "email_address");
    h.post(
        &format!("/organizations/{org_id}/invitations"),
        &json!({"email_address": "x@example.com", "role": "org:member",
                "inviter_user_id": h.sim.create_user("plain@example.com").id}),
    )
    .await
    .error(403, "not_an_admin_in_organization");
    assert_eq!(h.sim.organization_invitations().len(), 3);
}

#[tokio::test]
async fn a_bulk_invitation_creates_all_or_nothing() {
    let h = RawSim::start().await;
    let org = h.org(json!({"name": "Acme"})).await;
    let org_id = str_of(&org, "id");
    let path = format!("/organizations/{org_id}/invitations/bulk");
    let item = |email: &str, role: &str| json!({"email_address": email, "role": role});

    let page = h
        .post(
            &path,
            &json!([
                item("b1@example.com", "org:member"),
                item("b2@example.com", "org:admin")
            ]),
        )
        .await
        .ok()
        .clone();
    assert_eq!(page["total_count"], 2);
    assert_eq!(
        field_of(&page, "email_address"),
        ["b1@example.com", "b2@example.com"]
    );
    assert_eq!(field_of(&page, "role"), ["org:member", "org:admin"]);

    // One bad item fails the whole call, whatever it is.
    h.post(
        &path,
        &json!([
            item("c1@example.com", "org:member"),
            item("c2@example.com", "org:nope")
        ]),
    )
    .await
    .error(404, "resource_not_found");
    let duplicate = h
        .post(
            &path,
            &json!([
                item("c1@example.com", "org:member"),
                item("B1@example.com", "org:member")
            ]),
        )
        .await;
    assert_eq!(
        duplicate.error(400, "duplicate_record")["meta"]["email_addresses"],
        json!(["B1@example.com"])
    );
    h.post(
        &path,
        &json!([
            item("d@example.com", "org:member"),
            item("D@example.com", "org:member")
        ]),
    )
    .await
    .error(400, "duplicate_record");
    h.post(
        &path,
        &json!([item("e@example.com", "org:member"), {"email_address": "f@example.com"}]),
    )
    .await
    .param_error(422, "form_param_missing", "role");
    let eleven: Vec<Value> = (0..11)
        .map(|i| item(&format!("n{i}@example.com"), "org:member"))
        .collect();
    h.post(&path, &Value::Array(eleven))
        .await
        .error(400, "bulk_size_exceeded");
    h.post(&path, &json!([]))
        .await
        .error(422, "form_param_value_invalid");
    h.post(&path, &json!({"email_address": "x@example.com"}))
        .await
        .error(400, "request_body_invalid");
    assert_eq!(
        h.sim.organization_invitations().len(),
        2,
        "refused calls made nothing"
    );
}

#[tokio::test]
async fn organization_invitations_are_listed_per_organization_and_for_the_instance() {
    let h = RawSim::start().await;
    let acme = h.org(json!({"name": "Acme", "slug": "acme"})).await;
    let beta = h.org(json!({"name": "Beta", "slug": "beta"})).await;
    let (acme_id, beta_id) = (str_of(&acme, "id"), str_of(&beta, "id"));
    let mut ids = Vec::new();
    for email in [
        "c@example.com",
        "a@example.com",
        "b@example.com",
        "d@example.com",
    ] {
        ids.push(id_of(h.invite(acme_id, email, "org:member").await.ok()));
    }
    h.invite(beta_id, "a@example.com", "org:admin").await.ok();
    assert!(h.sim.accept_organization_invitation(&ids[1]));
    assert!(h.sim.expire_organization_invitation(&ids[2]));
    h.post(
        &format!("/organizations/{acme_id}/invitations/{}/revoke", ids[3]),
        &json!({}),
    )
    .await
    .ok();

    let list = |query: &str| h.get_owned(format!("/organizations/{acme_id}/invitations?{query}"));
    let all = list("").await.ok().clone();
    assert_eq!(all["total_count"], 4, "every status unless asked");
    assert_eq!(
        field_of(&all, "email_address"),
        [
            "d@example.com",
            "b@example.com",
            "a@example.com",
            "c@example.com"
        ],
        "newest first"
    );
    for (status, email) in [
        ("pending", "c@example.com"),
        ("accepted", "a@example.com"),
        ("expired", "b@example.com"),
        ("revoked", "d@example.com"),
    ] {
        let one = list(&format!("status={status}")).await.ok().clone();
        assert_eq!(field_of(&one, "email_address"), [email], "{status}");
        assert_eq!(field_of(&one, "status"), [status]);
    }
    let two = list("status=pending&status=expired&order_by=email_address")
        .await
        .ok()
        .clone();
    assert_eq!(
        field_of(&two, "email_address"),
        ["b@example.com", "c@example.com"]
    );
    let by_email = list("email_address=A%40Example.com").await.ok().clone();
    assert_eq!(field_of(&by_email, "id"), [ids[1].clone()]);
    let paged = list("order_by=%2Bcreated_at&limit=2&offset=1")
        .await
        .ok()
        .clone();
    assert_eq!(paged["total_count"], 4);
    assert_eq!(
        field_of(&paged, "email_address"),
        ["a@example.com", "b@example.com"]
    );
    list("limit=501")
        .await
        .param_error(422, "form_param_value_invalid", "limit");
    list("status=gone")
        .await
        .param_error(422, "form_param_value_invalid", "status");
    h.get("/organizations/org_unknown/invitations")
        .await
        .error(404, "resource_not_found");

    let instance = h
        .get("/organization_invitations?query=a%40&status=pending&status=accepted")
        .await
        .ok()
        .clone();
    assert_eq!(instance["total_count"], 2);
    let orgs: Vec<&str> = data(&instance)
        .iter()
        .map(|inv| str_of(&inv["public_organization_data"], "slug"))
        .collect();
    assert_eq!(orgs, ["beta", "acme"]);
    let everything = h
        .get("/organization_invitations?limit=500")
        .await
        .ok()
        .clone();
    assert_eq!(everything["total_count"], 5);

    let got = h
        .get(&format!("/organizations/{acme_id}/invitations/{}", ids[0]))
        .await
        .ok()
        .clone();
    assert_eq!(got["email_address"], "c@example.com");
    h.get(&format!("/organizations/{beta_id}/invitations/{}", ids[0]))
        .await
        .error(404, "resource_not_found");
}

#[tokio::test]
async fn only_a_pending_organization_invitation_can_be_revoked() {
    let h = RawSim::start().await;
    let org = h.org(json!({"name": "Acme"})).await;
    let org_id = str_of(&org, "id");
    let pending = id_of(h.invite(org_id, "p@example.com", "org:member").await.ok());
    let expired = id_of(h.invite(org_id, "e@example.com", "org:member").await.ok());
    let accepted = id_of(h.invite(org_id, "a@example.com", "org:member").await.ok());
    assert!(h.sim.expire_organization_invitation(&expired));
    assert!(h.sim.accept_organization_invitation(&accepted));
    let revoke = |id: &str| {
        let url = h.v1(&format!("/organizations/{org_id}/invitations/{id}/revoke"));
        // As `@clerk/backend` sends it: a JSON content type and no body.
        h.send(
            h.auth(h.http.post(url))
                .header("content-type", "application/json"),
        )
    };
    let revoked = revoke(&pending).await.ok().clone();
    assert_eq!(revoked["status"], "revoked");
    for id in [&pending, &expired, &accepted] {
        revoke(id)
            .await
            .error(404, "organization_invitation_not_pending");
    }
    revoke("orginv_unknown")
        .await
        .error(404, "resource_not_found");
    // A revoked invitation no longer blocks a new one.
    h.invite(org_id, "p@example.com", "org:member").await.ok();
    let inviter = h.sim.create_user("plain@example.com");
    let another = id_of(h.invite(org_id, "q@example.com", "org:member").await.ok());
    h.post(
        &format!("/organizations/{org_id}/invitations/{another}/revoke"),
        &json!({"requesting_user_id": inviter.id}),
    )
    .await
    .error(403, "not_an_admin_in_organization");
}

// ---------------------------------------------------------------------------
// Memberships

#[tokio::test]
async fn memberships_are_created_listed_changed_and_deleted_with_clerks_refusals() {
    let h = RawSim::start().await;
    let org = h.org(json!({"name": "Acme", "slug": "acme"})).await;
    let org_id = str_of(&org, "id");
    let admin = h.sim.create_user("admin@example.com");
    let ann = h.sim.create_user("ann@example.com");
    let bob = h.sim.create_user("bob@example.com");

    let made = h.member(org_id, &admin.id, "org:admin").await.ok().clone();
    assert_eq!(made["object"], "organization_membership");
    assert_eq!(made["organization"]["id"], org_id);
    assert_eq!(made["public_user_data"]["user_id"], admin.id);
    assert_eq!(made["public_user_data"]["identifier"], "admin@example.com");
    assert!(made["permissions"]
        .as_array()
        .is_some_and(|p| p.contains(&json!("org:sys_memberships:manage"))));
    h.member(org_id, &ann.id, "org:member").await.ok();
    h.member(org_id, &bob.id, "org:member").await.ok();

    h.member(org_id, &ann.id, "org:admin")
        .await
        .error(400, "already_a_member_in_organization");
    h.member(org_id, "user_nobody", "org:member")
        .await
        .error(404, "resource_not_found");
    let carl = h.sim.create_user("carl@example.com");
    h.member(org_id, &carl.id, "org:nope")
        .await
        .error(404, "resource_not_found");
    h.member("org_unknown", &carl.id, "org:member")
        .await
        .error(404, "resource_not_found");
    // A member cannot be invited to the organization again.
    h.invite(org_id, "ANN@example.com", "org:member")
        .await
        .error(400, "already_a_member_in_organization");

    let list = |query: &str| h.get_owned(format!("/organizations/{org_id}/memberships?{query}"));
    let all = list("").await.ok().clone();
    assert_eq!(all["total_count"], 3);
    assert_eq!(
        member_emails(&all),
        ["bob@example.com", "ann@example.com", "admin@example.com"]
    );
    let by_email = list(
        "email_address=ann%40example.com&email_address=BOB%40example.com&order_by=email_address",
    )
    .await
    .ok()
    .clone();
    assert_eq!(
        member_emails(&by_email),
        ["ann@example.com", "bob@example.com"]
    );
    let by_id = list(&format!("user_id={}", admin.id)).await.ok().clone();
    assert_eq!(member_emails(&by_id), ["admin@example.com"]);
    let by_role = list("role=org:member&limit=1&offset=1").await.ok().clone();
    assert_eq!(by_role["total_count"], 2);
    assert_eq!(member_emails(&by_role), ["ann@example.com"]);
    let hundred_and_one: String = (0..101).map(|i| format!("role=org:r{i}&")).collect();
    list(&hundred_and_one)
        .await
        .param_error(422, "form_param_value_invalid", "role");

    let membership = |user: &str| format!("/organizations/{org_id}/memberships/{user}");
    let promoted = h
        .patch(&membership(&ann.id), &json!({"role": "org:admin"}))
        .await
        .ok()
        .clone();
    assert_eq!(promoted["role"], "org:admin");
    h.patch(&membership(&ann.id), &json!({"role": "org:nope"}))
        .await
        .error(404, "resource_not_found");
    h.patch(&membership(&carl.id), &json!({"role": "org:admin"}))
        .await
        .error(404, "resource_not_found");
    h.patch(&membership(&ann.id), &json!({}))
        .await
        .param_error(422, "form_param_missing", "role");

    // Two admins: one may go; the last one may neither be demoted nor removed.
    let removed = h.delete(&membership(&admin.id)).await.ok().clone();
    assert_eq!(removed["public_user_data"]["user_id"], admin.id);
    h.patch(&membership(&ann.id), &json!({"role": "org:member"}))
        .await
        .error(400, "organization_minimum_permissions_needed");
    h.delete(&membership(&ann.id))
        .await
        .error(400, "organization_minimum_permissions_needed");
    h.delete(&membership(&admin.id))
        .await
        .error(404, "resource_not_found");

    // Directory Sync's memberships refuse other writers.
    assert!(h.sim.set_membership_scim("acme", &bob.id, true));
    h.patch(&membership(&bob.id), &json!({"role": "org:admin"}))
        .await
        .error(409, "organization_membership_managed_by_scim");
    h.delete(&membership(&bob.id))
        .await
        .error(409, "organization_membership_managed_by_scim");
    assert_eq!(
        member_emails(list("").await.ok()),
        ["bob@example.com", "ann@example.com"]
    );

    // A deleted user leaves every organization.
    assert!(h.sim.delete_user(&bob.id));
    assert_eq!(member_emails(list("").await.ok()), ["ann@example.com"]);
}

#[tokio::test]
async fn pending_invitations_count_against_max_allowed_memberships() {
    let h = RawSim::start().await;
    let org = h
        .org(json!({"name": "Small", "slug": "small", "max_allowed_memberships": 3}))
        .await;
    let org_id = str_of(&org, "id");
    let member = h.sim.create_user("m@example.com");
    h.member(org_id, &member.id, "org:admin").await.ok();
    let pending = id_of(h.invite(org_id, "p@example.com", "org:member").await.ok());
    // Two places left would be needed for this bulk call: none of it is made.
    h.post(
        &format!("/organizations/{org_id}/invitations/bulk"),
        &json!([{"email_address": "b1@example.com", "role": "org:member"},
                {"email_address": "b2@example.com", "role": "org:member"}]),
    )
    .await
    .error(403, "organization_membership_quota_exceeded");
    h.invite(org_id, "last@example.com", "org:member")
        .await
        .ok();
    let counted = h
        .get(&format!(
            "/organizations/{org_id}?include_members_count=true"
        ))
        .await
        .ok()
        .clone();
    assert_eq!(
        (
            counted["members_count"].as_u64(),
            counted["pending_invitations_count"].as_u64()
        ),
        (Some(1), Some(2))
    );

    h.invite(org_id, "over@example.com", "org:member")
        .await
        .error(403, "organization_membership_quota_exceeded");
    let other = h.sim.create_user("other@example.com");
    h.member(org_id, &other.id, "org:member")
        .await
        .error(403, "organization_membership_quota_exceeded");

    // An accepted invitation turns a pending place into a member's: still full.
    assert!(h.sim.accept_organization_invitation(&pending));
    h.invite(org_id, "over@example.com", "org:member")
        .await
        .error(403, "organization_membership_quota_exceeded");
    // An expired one frees its place.
    let last = h
        .sim
        .organization_invitations()
        .into_iter()
        .find(|inv| inv.email_address == "last@example.com")
        .expect("the last invitation");
    assert!(h.sim.expire_organization_invitation(&last.id));
    h.invite(org_id, "over@example.com", "org:member")
        .await
        .ok();

    // 0 is no limit.
    assert!(h.sim.set_max_allowed_memberships("small", 0));
    for i in 0..5 {
        h.invite(org_id, &format!("many{i}@example.com"), "org:member")
            .await
            .ok();
    }
    h.member(org_id, &other.id, "org:member").await.ok();
    assert_eq!(
        h.sim
            .stats()
            .count(Operation::CreateOrganizationInvitation, 403),
        2
    );
}

// ---------------------------------------------------------------------------
// Roles and the control API

#[tokio::test]
async fn roles_are_listed_and_custom_roles_defined_through_the_control_api() {
    let spec = Spec::load();
    let h = RawSim::start().await;
    let org = h.org(json!({"name": "Acme"})).await;
    let org_id = str_of(&org, "id");
    h.invite(org_id, "a@example.com", "org:billing")
        .await
        .error(404, "resource_not_found");
    let defined = h
        .control_post(
            "/organization_roles",
            Some(json!({"key": "org:billing", "name": "Billing"})),
        )
        .await;
    assert_eq!(defined.ok()["key"], "org:billing");
    h.control_post("/organization_roles", Some(json!({"key": "org:billing"})))
        .await
        .error(409, "conflict");
    h.control_post("/organization_roles", Some(json!({"key": "billing"})))
        .await
        .param_error(422, "form_param_value_invalid", "key");
    let invited = h
        .invite(org_id, "a@example.com", "org:billing")
        .await
        .ok()
        .clone();
    assert_eq!(invited["role_name"], "Billing");

    let roles = h.get("/organization_roles?order_by=%2Bcreated_at").await;
    spec.assert_conforms(
        &spec.response_schema("/organization_roles", "get", "200"),
        roles.ok(),
        "roles",
    );
    assert_eq!(
        field_of(&roles.body, "key"),
        ["org:admin", "org:member", "org:billing"]
    );
    let one = h.get("/organization_roles?query=bill").await.ok().clone();
    assert_eq!(field_of(&one, "key"), ["org:billing"]);
}

#[tokio::test]
async fn the_control_api_creates_organizations_adds_members_and_accepts_or_expires_invitations() {
    let h = RawSim::start().await;
    let created = h
        .control_post(
            "/organizations",
            Some(json!({"name": "Acme", "slug": "acme"})),
        )
        .await
        .ok()
        .clone();
    let org_id = str_of(&created, "id").to_owned();
    h.send(
        h.http
            .patch(h.control("/organizations/acme"))
            .json(&json!({"max_allowed_memberships": 7})),
    )
    .await
    .ok();
    let hand = h
        .control_post(
            "/organizations/acme/memberships",
            Some(json!({"email_address": "hand@example.com", "role": "org:admin"})),
        )
        .await
        .ok()
        .clone();
    let hand_user = str_of(&hand["public_user_data"], "user_id").to_owned();
    h.control_post(
        &format!("/organizations/acme/memberships/{hand_user}/scim"),
        None,
    )
    .await
    .ok();
    h.control_post(
        "/organizations/acme/memberships",
        Some(json!({"user_id": hand_user, "role": "org:member"})),
    )
    .await
    .error(409, "conflict");
    h.control_post(
        "/organizations/nope/memberships",
        Some(json!({"email_address": "x@example.com"})),
    )
    .await
    .error(404, "resource_not_found");

    let invitation = h
        .post(
            &format!("/organizations/{org_id}/invitations"),
            &json!({"email_address": "joiner@example.com", "role": "org:admin",
                    "public_metadata": {"team": "x"}, "private_metadata": {"id": 9}}),
        )
        .await
        .ok()
        .clone();
    let accepted = h
        .control_post(
            &format!("/organization_invitations/{}/accept", id_of(&invitation)),
            None,
        )
        .await
        .ok()
        .clone();
    assert_eq!(accepted["status"], "accepted");
    h.control_post(
        &format!("/organization_invitations/{}/accept", id_of(&invitation)),
        None,
    )
    .await
    .error(409, "invitation_not_pending");
    let joiner = h
        .sim
        .users()
        .into_iter()
        .find(|user| user.primary_email() == Some("joiner@example.com"))
        .expect("accepting made the user");
    let members = h
        .get(&format!(
            "/organizations/{org_id}/memberships?user_id={}",
            joiner.id
        ))
        .await
        .ok()
        .clone();
    let membership = &data(&members)[0];
    assert_eq!(membership["role"], "org:admin");
    assert_eq!(membership["public_metadata"], json!({"team": "x"}));
    assert_eq!(membership["private_metadata"], json!({"id": 9}));

    let expiring = id_of(
        h.invite(&org_id, "late@example.com", "org:member")
            .await
            .ok(),
    );
    let expired = h
        .control_post(
            &format!("/organization_invitations/{expiring}/expire"),
            None,
        )
        .await
        .ok()
        .clone();
    assert_eq!(expired["status"], "expired");
    h.invite(&org_id, "late@example.com", "org:member")
        .await
        .ok();

    let orgs = h.control_get("/organizations").await.ok().clone();
    assert_eq!(orgs[0]["max_allowed_memberships"], 7);
    assert_eq!(orgs[0]["members_count"], 2);
    assert_eq!(orgs[0]["pending_invitations_count"], 1);
    let all = h
        .control_get("/organization_invitations")
        .await
        .ok()
        .clone();
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    let memberships = h
        .control_get("/organization_memberships")
        .await
        .ok()
        .clone();
    assert_eq!(memberships.as_array().map(Vec::len), Some(2));
    assert_eq!(h.sim.memberships().len(), 2);

    h.control_post("/reset", None).await.ok();
    assert!(h.sim.organizations().is_empty());
    assert!(h.sim.organization_invitations().is_empty());
}

// ---------------------------------------------------------------------------
// Limits, faults, counters

#[tokio::test]
async fn organization_invitations_have_their_own_hourly_limits_across_organizations() {
    let h = RawSim::with(live_key()).await;
    let acme = h.org(json!({"name": "Acme"})).await;
    let beta = h.org(json!({"name": "Beta"})).await;
    let orgs = [str_of(&acme, "id"), str_of(&beta, "id")];
    for i in 0..250 {
        h.invite(orgs[i % 2], &format!("s{i}@example.com"), "org:member")
            .await
            .ok();
    }
    let refused = h
        .invite(orgs[0], "one-more@example.com", "org:member")
        .await;
    refused.error(429, "too_many_requests");
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    // The bulk window and the instance's invitations are counted apart.
    for i in 0..50 {
        h.post(
            &format!("/organizations/{}/invitations/bulk", orgs[i % 2]),
            &json!([{"email_address": format!("b{i}@example.com"), "role": "org:member"}]),
        )
        .await
        .ok();
    }
    h.post(
        &format!("/organizations/{}/invitations/bulk", orgs[1]),
        &json!([{"email_address": "b-more@example.com", "role": "org:member"}]),
    )
    .await
    .error(429, "too_many_requests");
    h.post(
        "/invitations",
        &json!({"email_address": "instance@example.com"}),
    )
    .await
    .ok();
    // Memberships cost only the general limit.
    let user = h.sim.create_user("member@example.com");
    h.member(orgs[0], &user.id, "org:member").await.ok();
    let stats = h.sim.stats();
    assert_eq!(
        stats.count(Operation::CreateOrganizationInvitation, 200),
        250
    );
    assert_eq!(stats.count(Operation::CreateOrganizationInvitation, 429), 1);
    assert_eq!(
        stats.count(Operation::CreateOrganizationInvitationsBulk, 200),
        50
    );
    assert_eq!(
        stats.count(Operation::CreateOrganizationInvitationsBulk, 429),
        1
    );
    assert_eq!(h.sim.organization_invitations().len(), 300);
}

#[tokio::test]
async fn faults_apply_to_the_organization_endpoints() {
    let h = RawSim::with(no_limits()).await;
    let org = h.org(json!({"name": "Acme"})).await;
    let org_id = str_of(&org, "id");
    let ann = h.sim.create_user("ann@example.com");

    h.sim.inject_fault(Fault::new(
        Operation::CreateOrganizationInvitation,
        1,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    h.invite(org_id, "a@example.com", "org:member")
        .await
        .error(503, "internal_clerk_error");
    assert!(
        h.sim.organization_invitations().is_empty(),
        "nothing applied"
    );

    h.sim.inject_fault(Fault::new(
        Operation::CreateOrganizationMembership,
        1,
        FaultKind::DropAfterApply,
    ));
    let dropped = h
        .auth(
            h.http
                .post(h.v1(&format!("/organizations/{org_id}/memberships"))),
        )
        .json(&json!({"user_id": ann.id, "role": "org:admin"}))
        .send()
        .await;
    assert!(dropped.is_err(), "the connection closes unanswered");
    assert_eq!(h.sim.memberships().len(), 1, "applied before the drop");

    let bob = h.sim.create_user("bob@example.com");
    h.member(org_id, &bob.id, "org:member").await.ok();
    h.sim.inject_fault(Fault::new(
        Operation::DeleteOrganizationMembership,
        1,
        FaultKind::StatusAfterApply { status: 502 },
    ));
    h.delete(&format!("/organizations/{org_id}/memberships/{}", bob.id))
        .await
        .error(502, "internal_clerk_error");
    assert_eq!(h.sim.memberships().len(), 1, "deleted before the 502");

    h.sim.inject_fault(Fault::new(
        Operation::CreateOrganizationInvitationsBulk,
        1,
        FaultKind::StatusAfterApply { status: 500 },
    ));
    h.post(
        &format!("/organizations/{org_id}/invitations/bulk"),
        &json!([{"email_address": "b@example.com", "role": "org:member"}]),
    )
    .await
    .error(500, "internal_clerk_error");
    assert_eq!(h.sim.organization_invitations().len(), 1);

    // Injected through the control API by name, as the fault suite does.
    h.control_post(
        "/faults",
        Some(json!({"operation": "list_organization_memberships", "kind": {"type": "status", "status": 429, "retry_after": 7}})),
    )
    .await
    .ok();
    let limited = h.get(&format!("/organizations/{org_id}/memberships")).await;
    limited.error(429, "too_many_requests");
    assert_eq!(limited.header("retry-after"), Some("7"));

    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::CreateOrganizationInvitation, 503), 1);
    assert_eq!(
        stats.count(
            Operation::CreateOrganizationMembership,
            SimStats::NO_RESPONSE
        ),
        1
    );
    assert_eq!(stats.count(Operation::DeleteOrganizationMembership, 502), 1);
    assert_eq!(stats.count(Operation::ListOrganizationMemberships, 429), 1);
    let json = h.control_get("/stats").await.ok().clone();
    assert_eq!(json["create_organization_membership"]["200"], 1);
    assert_eq!(json["create_organization_invitations_bulk"]["500"], 1);
}

// ---------------------------------------------------------------------------
// Webhooks

#[tokio::test]
async fn organization_webhooks_are_svix_signed_and_none_fires_on_expiry() {
    let mut receiver = Receiver::start(0, false).await;
    let h = sim_delivering_to(&receiver).await;
    let org = h.org(json!({"name": "Acme"})).await;
    let org_id = str_of(&org, "id").to_owned();
    let admin = h.sim.create_user("admin@example.com");
    assert_eq!(verified(&receiver.next().await)["type"], "user.created");

    h.member(&org_id, &admin.id, "org:admin").await.ok();
    let created = verified(&receiver.next().await);
    assert_eq!(created["type"], "organizationMembership.created");
    assert_eq!(created["data"]["public_user_data"]["user_id"], admin.id);
    assert_eq!(created["data"]["organization"]["id"], org_id.as_str());

    let invitation = id_of(
        h.invite(&org_id, "joiner@example.com", "org:member")
            .await
            .ok(),
    );
    let raised = verified(&receiver.next().await);
    assert_eq!(raised["type"], "organizationInvitation.created");
    assert_eq!(raised["data"]["id"], invitation.as_str());

    assert!(h.sim.accept_organization_invitation(&invitation));
    let user_created = verified(&receiver.next().await);
    assert_eq!(user_created["type"], "user.created");
    let joiner_id = str_of(&user_created["data"], "id").to_owned();
    let accepted = verified(&receiver.next().await);
    assert_eq!(accepted["type"], "organizationInvitation.accepted");
    assert_eq!(accepted["data"]["status"], "accepted");
    assert_eq!(accepted["data"]["user_id"], joiner_id.as_str());
    let joined = verified(&receiver.next().await);
    assert_eq!(joined["type"], "organizationMembership.created");
    assert_eq!(
        joined["data"]["public_user_data"]["user_id"],
        joiner_id.as_str()
    );

    let membership = format!("/organizations/{org_id}/memberships/{joiner_id}");
    h.patch(&membership, &json!({"role": "org:admin"}))
        .await
        .ok();
    let updated = verified(&receiver.next().await);
    assert_eq!(updated["type"], "organizationMembership.updated");
    assert_eq!(updated["data"]["role"], "org:admin");
    h.delete(&membership).await.ok();
    let deleted = verified(&receiver.next().await);
    assert_eq!(deleted["type"], "organizationMembership.deleted");
    assert_eq!(
        deleted["data"]["public_user_data"]["user_id"],
        joiner_id.as_str()
    );

    let revoked = id_of(h.invite(&org_id, "r@example.com", "org:member").await.ok());
    assert_eq!(
        verified(&receiver.next().await)["type"],
        "organizationInvitation.created"
    );
    let expiring = id_of(h.invite(&org_id, "e@example.com", "org:member").await.ok());
    assert_eq!(
        verified(&receiver.next().await)["type"],
        "organizationInvitation.created"
    );
    assert!(h.sim.expire_organization_invitation(&expiring));
    h.post(
        &format!("/organizations/{org_id}/invitations/{revoked}/revoke"),
        &json!({}),
    )
    .await
    .ok();
    let revocation = verified(&receiver.next().await);
    assert_eq!(
        revocation["type"], "organizationInvitation.revoked",
        "the expiry before it raised nothing"
    );
    assert_eq!(revocation["data"]["id"], revoked.as_str());
    assert!(h.sim.webhooks_settled(Duration::from_secs(10)).await);
    assert!(receiver.nothing_more());
    let webhooks = h.sim.stats().webhooks;
    assert_eq!(webhooks.delivered("organizationInvitation.created"), 3);
    assert_eq!(webhooks.delivered("organizationMembership.created"), 2);
    assert_eq!(webhooks.raised, webhooks.delivered_total());
}

// ---------------------------------------------------------------------------
// Conformance with Clerk's spec

#[tokio::test]
async fn organization_answers_conform_to_the_spec() {
    let spec = Spec::load();
    let h = RawSim::with(SimOptions::default()).await;
    let creator = h.sim.create_user("founder@example.com");
    let check = |path: &str, method: &str, value: &Value, what: &str| {
        spec.assert_conforms(&spec.response_schema(path, method, "200"), value, what);
    };

    let org = h
        .org(json!({"name": "Acme", "slug": "acme", "created_by": creator.id, "max_allowed_memberships": 10}))
        .await;
    check("/organizations", "post", &org, "create organization");
    let org_id = str_of(&org, "id").to_owned();
    let counted = h
        .get("/organizations/acme?include_members_count=true")
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}",
        "get",
        &counted,
        "get organization",
    );
    let listed = h
        .get("/organizations?include_members_count=true")
        .await
        .ok()
        .clone();
    check("/organizations", "get", &listed, "list organizations");

    let single = h
        .post(
            &format!("/organizations/{org_id}/invitations"),
            &json!({"email_address": "a@example.com", "role": "org:member",
                    "inviter_user_id": creator.id, "public_metadata": {"x": [1]}}),
        )
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/invitations",
        "post",
        &single,
        "create invitation",
    );
    assert_eq!(
        single["public_inviter_data"]["identifier"],
        "founder@example.com"
    );
    let bulk = h
        .post(
            &format!("/organizations/{org_id}/invitations/bulk"),
            &json!([{"email_address": "b@example.com", "role": "org:admin"}]),
        )
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/invitations/bulk",
        "post",
        &bulk,
        "bulk",
    );
    let listed = h
        .get(&format!("/organizations/{org_id}/invitations"))
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/invitations",
        "get",
        &listed,
        "list invitations",
    );
    let got = h
        .get(&format!(
            "/organizations/{org_id}/invitations/{}",
            id_of(&single)
        ))
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/invitations/{invitation_id}",
        "get",
        &got,
        "get invitation",
    );
    let revoked = h
        .post(
            &format!(
                "/organizations/{org_id}/invitations/{}/revoke",
                id_of(&single)
            ),
            &json!({}),
        )
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/invitations/{invitation_id}/revoke",
        "post",
        &revoked,
        "revoke",
    );
    let instance = h.get("/organization_invitations").await.ok().clone();
    check(
        "/organization_invitations",
        "get",
        &instance,
        "instance invitations",
    );

    let ann = h.sim.create_user("ann@example.com");
    let member = h.member(&org_id, &ann.id, "org:member").await.ok().clone();
    check(
        "/organizations/{organization_id}/memberships",
        "post",
        &member,
        "create membership",
    );
    let members = h
        .get(&format!("/organizations/{org_id}/memberships"))
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/memberships",
        "get",
        &members,
        "list memberships",
    );
    let path = format!("/organizations/{org_id}/memberships/{}", ann.id);
    let changed = h
        .patch(&path, &json!({"role": "org:admin"}))
        .await
        .ok()
        .clone();
    check(
        "/organizations/{organization_id}/memberships/{user_id}",
        "patch",
        &changed,
        "update membership",
    );
    let deleted = h.delete(&path).await.ok().clone();
    check(
        "/organizations/{organization_id}/memberships/{user_id}",
        "delete",
        &deleted,
        "delete membership",
    );

    let refused = h.invite(&org_id, "founder@example.com", "org:member").await;
    refused.error(400, "already_a_member_in_organization");
    spec.assert_conforms(
        &spec.schema("ClerkErrors"),
        &refused.body,
        "an organization refusal",
    );
}
