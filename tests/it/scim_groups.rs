//! `/scim/v2/Groups` over HTTP, served by the real router on a real socket: the requests
//! Okta's Group Push and Microsoft Entra ID's group provisioning send, each checked against
//! the groups as stored; discovery of the Group resource type; searches; and the refusals
//! (an unknown member, a bad filter, a bad token, a PATCH path that does not exist), each of
//! which writes nothing. What a group means for the membership roster is tested in
//! scim_group_orgs.rs.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Harness, Service};

const TOKEN: &str = "scim-groups-token-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

async fn harness() -> Harness {
    Harness::serving(&[("INVITE_SYNC__SCIM__TOKEN", TOKEN)]).await
}

/// SCIM requests to a service started with `Service::http_alone`.
struct Scim<'a>(&'a Service);

impl Scim<'_> {
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        status: StatusCode,
    ) -> Value {
        let (got, answer) = self
            .0
            .scim_call(method.clone(), path, Some(TOKEN), body)
            .await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    /// Creates a SCIM user; its id.
    async fn user(&self, email: &str) -> String {
        let created = self
            .expect(
                Method::POST,
                "/Users",
                Some(&json!({"schemas": [USER], "userName": email,
                             "emails": [{"value": email, "type": "work", "primary": true}]})),
                StatusCode::CREATED,
            )
            .await;
        created["id"]
            .as_str()
            .expect("the user has an id")
            .to_owned()
    }
}

/// A request, and the status and `scimType` it is refused with.
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

fn member(id: &str) -> Value {
    json!({"value": id})
}

/// The groups as stored: each with its display name, external id and member ids in order.
async fn stored(h: &Harness) -> Value {
    sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'displayName', g.display_name,
                    'externalId', g.external_id,
                    'members', (SELECT coalesce(jsonb_agg(m.user_id::text ORDER BY m.added), '[]')
                                FROM invite_sync_scim_group_members m WHERE m.group_id = g.id))
                ORDER BY g.created_at, g.id), '[]')
         FROM invite_sync_scim_groups g",
    )
    .fetch_one(&h.db.pool)
    .await
    .expect("the groups can be read")
}

/// Everything a group's write may touch, whole: groups, members, SCIM users and both rosters.
async fn dump(h: &Harness) -> Value {
    let mut tables = serde_json::Map::new();
    for (name, query) in [
        ("groups", "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM invite_sync_scim_groups t"),
        ("members", "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY group_id, user_id), '[]') FROM invite_sync_scim_group_members t"),
        ("users", "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM invite_sync_scim_users t"),
        ("roster", "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY email), '[]') FROM desired_invitees t"),
        ("memberships", "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY email, organization), '[]') FROM desired_memberships t"),
    ] {
        let value: Value = sqlx::query_scalar(query)
            .fetch_one(&h.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{name} can be read: {e}"));
        tables.insert(name.to_owned(), value);
    }
    Value::Object(tables)
}

fn ids_of(group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| m["value"].as_str().expect("a member value").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn okta_group_push_creates_adds_removes_by_filter_replaces_renames_and_deletes() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let scim = Scim(&service);
    let ann = scim.user("ann@example.com").await;
    let bob = scim.user("bob@example.com").await;
    let cat = scim.user("cat@example.com").await;

    // Okta looks the group up by name before it creates it.
    let found = scim
        .expect(
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22Acme%22&startIndex=1&count=100",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 0);

    let created = scim
        .expect(
            Method::POST,
            "/Groups",
            Some(&json!({
                "schemas": [GROUP],
                "displayName": "Acme",
                "members": [{"value": ann, "display": "ann@example.com"}, {"value": bob}]
            })),
            StatusCode::CREATED,
        )
        .await;
    let id = created["id"]
        .as_str()
        .expect("the group has an id")
        .to_owned();
    assert_eq!(ids_of(&created), [ann.clone(), bob.clone()]);
    assert_eq!(created["members"][0]["display"], "ann@example.com");
    assert_eq!(created["members"][0]["type"], "User");
    assert!(created["members"][0]["$ref"]
        .as_str()
        .is_some_and(|r| r.ends_with(&format!("/Users/{ann}"))));
    assert_eq!(created["meta"]["resourceType"], "Group");
    assert_eq!(
        stored(&h).await,
        json!([{"displayName": "Acme", "externalId": null, "members": [ann, bob]}])
    );

    let found = scim
        .expect(
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22ACME%22",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], id.as_str());

    let group = format!("/Groups/{id}");
    scim.expect(
        Method::PATCH,
        &group,
        Some(&patch(json!([{"op": "add", "path": "members",
                            "value": [{"value": cat, "display": "cat@example.com"}]}]))),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        stored(&h).await,
        json!([{"displayName": "Acme", "externalId": null, "members": [ann, bob, cat]}])
    );

    let removed = scim
        .expect(
            Method::PATCH,
            &group,
            Some(&patch(
                json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]),
            )),
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids_of(&removed), [ann.clone(), cat.clone()]);
    assert_eq!(
        stored(&h).await,
        json!([{"displayName": "Acme", "externalId": null, "members": [ann, cat]}])
    );

    // Okta renames with a replace without a path that names the group's id.
    scim.expect(
        Method::PATCH,
        &group,
        Some(&patch(
            json!([{"op": "replace", "value": {"id": id, "displayName": "Acme Inc"}}]),
        )),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        stored(&h).await,
        json!([{"displayName": "Acme Inc", "externalId": null, "members": [ann, cat]}])
    );

    // A PUT of the whole group.
    let replaced = scim
        .expect(
            Method::PUT,
            &group,
            Some(
                &json!({"schemas": [GROUP], "id": id, "displayName": "Acme Inc",
                         "externalId": "00g1okta", "members": [member(&bob), member(&ann)]}),
            ),
            StatusCode::OK,
        )
        .await;
    assert_eq!(replaced["externalId"], "00g1okta");
    assert_eq!(replaced["meta"]["version"], "W/\"5\"");
    let mut members = stored(&h).await[0]["members"].clone();
    let mut kept: Vec<Value> = members.as_array_mut().expect("members").drain(..).collect();
    kept.sort_by_key(|v| v.as_str().map(str::to_owned));
    let mut expected = vec![json!(ann), json!(bob)];
    expected.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(kept, expected);
    let found = scim
        .expect(
            Method::GET,
            "/Groups?filter=externalId%20eq%20%2200g1okta%22",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 1);

    scim.expect(Method::DELETE, &group, None, StatusCode::NO_CONTENT)
        .await;
    scim.expect(Method::GET, &group, None, StatusCode::NOT_FOUND)
        .await;
    assert_eq!(stored(&h).await, json!([]));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_scim_users")
        .fetch_one(&h.db.pool)
        .await
        .expect("users counted");
    assert_eq!(users, 3, "deleting a group deletes no user");
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_capitalises_operations_removes_by_values_renames_and_sends_a_large_group_in_parts() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let scim = Scim(&service);
    let mut people = Vec::new();
    for n in 0..230 {
        people.push(scim.user(&format!("person{n:03}@contoso.example")).await);
    }

    // Entra creates the group empty, reading it back without its members.
    let created = scim
        .expect(
            Method::POST,
            "/Groups",
            Some(&json!({"schemas": [GROUP], "externalId": "e5f1-entra",
                         "displayName": "Contoso", "members": []})),
            StatusCode::CREATED,
        )
        .await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let group = format!("/Groups/{id}");

    // Members in parts of at most 100.
    for part in people.chunks(100) {
        let values: Vec<Value> = part.iter().map(|p| member(p)).collect();
        scim.expect(
            Method::PATCH,
            &format!("{group}?excludedAttributes=members"),
            Some(&patch(
                json!([{"op": "Add", "path": "members", "value": values}]),
            )),
            StatusCode::OK,
        )
        .await;
    }
    let all = stored(&h).await;
    assert_eq!(all[0]["members"], json!(people));

    let read = scim
        .expect(
            Method::GET,
            &format!("{group}?excludedAttributes=members"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(read.get("members").is_none(), "{read}");
    assert_eq!(read["displayName"], "Contoso");
    let listed = scim
        .expect(
            Method::GET,
            "/Groups?excludedAttributes=members&filter=externalId%20eq%20%22e5f1-entra%22",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["totalResults"], 1);
    assert!(listed["Resources"][0].get("members").is_none());
    let whole = scim.expect(Method::GET, &group, None, StatusCode::OK).await;
    assert_eq!(ids_of(&whole), people);

    // Removed by a list of values, renamed, in one request.
    let leaving: Vec<Value> = people[..3].iter().map(|p| member(p)).collect();
    scim.expect(
        Method::PATCH,
        &group,
        Some(&patch(json!([
            {"op": "Remove", "path": "members", "value": leaving},
            {"op": "Replace", "path": "displayName", "value": "Contoso Admins"}
        ]))),
        StatusCode::OK,
    )
    .await;
    let after = stored(&h).await;
    assert_eq!(after[0]["displayName"], "Contoso Admins");
    assert_eq!(after[0]["members"], json!(people[3..]));

    // More than 100 values in one request is refused, writing nothing.
    let before = dump(&h).await;
    let too_many: Vec<Value> = people.iter().take(101).map(|p| member(p)).collect();
    let refused = scim
        .expect(
            Method::PATCH,
            &group,
            Some(&patch(
                json!([{"op": "Add", "path": "members", "value": too_many}]),
            )),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(refused["scimType"], "invalidValue");
    assert_eq!(dump(&h).await, before);

    // A user deleted leaves the group.
    scim.expect(
        Method::DELETE,
        &format!("/Users/{}", people[3]),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(stored(&h).await[0]["members"], json!(people[4..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lists_the_group_resource_type_and_schema() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let scim = Scim(&service);
    let types = scim
        .expect(Method::GET, "/ResourceTypes", None, StatusCode::OK)
        .await;
    assert_eq!(types["totalResults"], 2);
    let ids: Vec<&str> = types["Resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["User", "Group"]);
    let group = scim
        .expect(Method::GET, "/ResourceTypes/Group", None, StatusCode::OK)
        .await;
    assert_eq!(
        (group["endpoint"].clone(), group["schema"].clone()),
        (json!("/Groups"), json!(GROUP))
    );
    let schema = scim
        .expect(
            Method::GET,
            &format!("/Schemas/{GROUP}"),
            None,
            StatusCode::OK,
        )
        .await;
    let names: Vec<&str> = schema["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["displayName", "members"]);
    let schemas = scim
        .expect(Method::GET, "/Schemas", None, StatusCode::OK)
        .await;
    assert_eq!(schemas["totalResults"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_paged_projected_and_searched() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let scim = Scim(&service);
    let ann = scim.user("ann@example.com").await;
    for n in 0..5 {
        scim.expect(
            Method::POST,
            "/Groups",
            Some(&json!({"displayName": format!("Team {n}"), "members": [member(&ann)]})),
            StatusCode::CREATED,
        )
        .await;
    }
    let page = scim
        .expect(
            Method::GET,
            "/Groups?startIndex=2&count=2&attributes=displayName",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (
            page["totalResults"].clone(),
            page["startIndex"].clone(),
            page["itemsPerPage"].clone()
        ),
        (json!(5), json!(2), json!(2))
    );
    assert_eq!(page["Resources"][0]["displayName"], "Team 1");
    assert!(page["Resources"][0].get("members").is_none());
    let found = scim
        .expect(
            Method::POST,
            "/Groups/.search",
            Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                         "filter": format!("members[value eq \"{ann}\"] and displayName sw \"team\""),
                         "startIndex": 4, "count": 10})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["totalResults"], 5);
    assert_eq!(found["itemsPerPage"], 2);
    assert_eq!(found["Resources"][1]["displayName"], "Team 4");

    // A search at the root lists the users, then the groups, as one list.
    let everything = |start: u32, count: u32| {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
               "startIndex": start, "count": count, "excludedAttributes": ["members"]})
    };
    let first = scim
        .expect(
            Method::POST,
            "/.search",
            Some(&everything(1, 3)),
            StatusCode::OK,
        )
        .await;
    assert_eq!(first["totalResults"], 6);
    let kinds: Vec<(&str, &str)> = first["Resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                r["meta"]["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("User", ann.as_str()));
    assert_eq!((kinds[1].0, kinds[2].0), ("Group", "Group"));
    let rest = scim
        .expect(
            Method::POST,
            "/.search",
            Some(&everything(3, 10)),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (rest["totalResults"].clone(), rest["itemsPerPage"].clone()),
        (json!(6), json!(4))
    );
    assert_eq!(rest["Resources"][0]["displayName"], "Team 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_is_a_scim_error_and_writes_nothing() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let scim = Scim(&service);
    let ann = scim.user("ann@example.com").await;
    let created = scim
        .expect(
            Method::POST,
            "/Groups",
            Some(&json!({"displayName": "Acme", "members": [member(&ann)]})),
            StatusCode::CREATED,
        )
        .await;
    let group = format!("/Groups/{}", created["id"].as_str().expect("an id"));
    scim.expect(
        Method::POST,
        "/Groups",
        Some(&json!({"displayName": "Globex"})),
        StatusCode::CREATED,
    )
    .await;
    let before = dump(&h).await;
    let stranger = "0d6f3c1e-9b8a-4f57-8e2d-1c3b5a7f9e01";

    // A bad token, before any body is read.
    for (method, path) in [
        (Method::GET, "/Groups".to_owned()),
        (Method::POST, "/Groups".to_owned()),
        (Method::PATCH, group.clone()),
        (Method::PUT, group.clone()),
        (Method::DELETE, group.clone()),
    ] {
        for token in [None, Some("scim-groups-token-wrong-0000")] {
            let (status, body) = scim
                .0
                .scim_call(
                    method.clone(),
                    &path,
                    token,
                    Some(&json!({"displayName": "x"})),
                )
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["schemas"], json!([ERROR]));
        }
    }

    let unknown = |detail: &Value| {
        assert!(
            detail.as_str().is_some_and(|d| d.contains(stranger)),
            "the refusal names the member: {detail}"
        )
    };
    let refusals: Vec<(Method, String, Value, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/Groups".to_owned(),
            json!({"displayName": "Initech", "members": [member(&ann), member(stranger)]}),
            StatusCode::BAD_REQUEST,
            "invalidValue",
        ),
        (
            Method::PATCH,
            group.clone(),
            patch(json!([{"op": "add", "path": "members", "value": [member(stranger)]}])),
            StatusCode::BAD_REQUEST,
            "invalidValue",
        ),
        (
            Method::PUT,
            group.clone(),
            json!({"displayName": "Acme", "members": [member(stranger)]}),
            StatusCode::BAD_REQUEST,
            "invalidValue",
        ),
    ];
    for (method, path, body, status, kind) in &refusals {
        let answer = scim.expect(method.clone(), path, Some(body), *status).await;
        assert_eq!(answer["scimType"], *kind, "{method} {path}: {answer}");
        unknown(&answer["detail"]);
    }

    let refusals: Vec<Refusal> = vec![
        (
            Method::GET,
            "/Groups?filter=displayName%20eq".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
        ),
        (
            Method::POST,
            "/Groups/.search".to_owned(),
            Some(json!({"filter": "displayName eq \"unterminated"})),
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(json!([
                {"op": "replace", "path": "displayName", "value": "Renamed"},
                {"op": "add", "path": "owners", "value": [member(&ann)]}
            ]))),
            StatusCode::BAD_REQUEST,
            Some("invalidPath"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(json!([
                {"op": "Remove", "path": "members", "value": [member(&ann)]},
                {"op": "Replace", "path": format!("members[value eq \"{stranger}\"].display"),
                 "value": "nobody"}
            ]))),
            StatusCode::BAD_REQUEST,
            Some("noTarget"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(json!([{"op": "remove", "path": "displayName"}]))),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(
                json!([{"op": "replace", "path": "id", "value": "x"}]),
            )),
            StatusCode::BAD_REQUEST,
            Some("mutability"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(Value::Array(
                (0..101)
                    .map(|_| json!({"op": "add", "path": "externalId", "value": "x"}))
                    .collect(),
            ))),
            StatusCode::BAD_REQUEST,
            Some("tooMany"),
        ),
        (
            Method::POST,
            "/Groups".to_owned(),
            Some(json!({"displayName": "ACME"})),
            StatusCode::CONFLICT,
            Some("uniqueness"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(
                json!([{"op": "replace", "path": "displayName", "value": "globex"}]),
            )),
            StatusCode::CONFLICT,
            Some("uniqueness"),
        ),
        (
            Method::POST,
            "/Groups".to_owned(),
            Some(json!({"members": [member(&ann)]})),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            format!("/Groups/{stranger}"),
            Some(patch(
                json!([{"op": "add", "path": "members", "value": [member(&ann)]}]),
            )),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::POST,
            "/Groups".to_owned(),
            Some(json!({"displayName": "nul\u{0}name"})),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::POST,
            "/Groups".to_owned(),
            Some(json!({"displayName": "x".repeat(257)})),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            group.clone(),
            Some(patch(json!([{"op": "add", "path": "members",
                               "value": [{"value": ann, "display": "nul\u{0}"}]}]))),
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22a%5Cu0000%22".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        ),
        (
            Method::DELETE,
            "/Groups/not-a-group".to_owned(),
            None,
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (method, path, body, status, kind) in refusals {
        let (got, answer) = scim
            .0
            .scim_call(method.clone(), &path, Some(TOKEN), body.as_ref())
            .await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["schemas"], json!([ERROR]), "{method} {path}");
        assert_eq!(
            answer.get("scimType").and_then(Value::as_str),
            kind,
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(dump(&h).await, before, "a refusal wrote something");
}
