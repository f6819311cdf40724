//! The Clerk simulator over a real socket, driven with raw HTTP and checked
//! against Clerk's spec.

use std::net::SocketAddr;
use std::time::Duration;

use invite_sync::clerk::sim::{self, Fault, FaultKind, Operation, SimHandle, SimOptions, SimStats};
use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder};
use serde_json::{json, Value};

use crate::common::wait_for;

// ---------------------------------------------------------------------------
// The simulator alone, driven with raw HTTP

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "unexpected answer: {}", self.body);
        &self.body
    }

    /// Assert a ClerkErrors answer with one error of `code`, and return that error.
    pub(crate) fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        let errors = self.body["errors"].as_array().expect("an errors array");
        assert_eq!(errors.len(), 1, "{}", self.body);
        assert_eq!(errors[0]["code"], code, "{}", self.body);
        let trace_id = self.body["clerk_trace_id"]
            .as_str()
            .expect("a clerk_trace_id");
        assert_eq!(self.header("clerk-trace-id"), Some(trace_id));
        &errors[0]
    }

    /// Like `error`, and the error's `meta.param_name` is `param`.
    pub(crate) fn param_error(&self, status: u16, code: &str, param: &str) -> &Value {
        let error = self.error(status, code);
        assert_eq!(error["meta"]["param_name"], param, "{}", self.body);
        error
    }
}

/// A simulator and a plain HTTP client to call it: no database and no reconciler, unlike
/// the shared `common::Harness`.
pub(crate) struct RawSim {
    pub(crate) sim: SimHandle,
    pub(crate) http: Client,
}

impl RawSim {
    pub(crate) async fn start() -> Self {
        Self::with(SimOptions::default()).await
    }

    pub(crate) async fn with(options: SimOptions) -> Self {
        let sim = sim::start(options).await.expect("the simulator starts");
        RawSim {
            sim,
            http: Client::new(),
        }
    }

    pub(crate) fn v1(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub(crate) fn control(&self, path: &str) -> String {
        format!("http://{}/_sim{path}", self.sim.addr())
    }

    pub(crate) fn auth(&self, request: RequestBuilder) -> RequestBuilder {
        request.bearer_auth(self.sim.secret_key())
    }

    pub(crate) async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("an HTTP answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.auth(self.http.post(self.v1(path))).json(body))
            .await
    }

    pub(crate) async fn post_text(&self, path: &str, body: &str) -> Reply {
        let request = self
            .auth(self.http.post(self.v1(path)))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(self.auth(self.http.get(self.v1(path)))).await
    }

    pub(crate) async fn create(&self, email: &str) -> Value {
        self.create_with(json!({ "email_address": email })).await
    }

    pub(crate) async fn create_with(&self, body: Value) -> Value {
        self.post("/invitations", &body).await.ok().clone()
    }

    pub(crate) async fn bulk(&self, body: Value) -> Reply {
        self.post("/invitations/bulk", &body).await
    }

    pub(crate) async fn revoke(&self, id: &str) -> Reply {
        self.send(
            self.auth(
                self.http
                    .post(self.v1(&format!("/invitations/{id}/revoke"))),
            ),
        )
        .await
    }

    pub(crate) async fn list(&self, query: &str) -> Reply {
        self.get(&format!("/invitations?{query}")).await
    }

    pub(crate) async fn control_post(&self, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.http.post(self.control(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    pub(crate) async fn control_get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.control(path))).await
    }
}

fn emails(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of invitations")
        .iter()
        .map(|inv| inv["email_address"].as_str().expect("an email").to_owned())
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of invitations")
        .iter()
        .map(|inv| inv["id"].as_str().expect("an id").to_owned())
        .collect()
}

pub(crate) fn id_of(invitation: &Value) -> String {
    invitation["id"].as_str().expect("an id").to_owned()
}

pub(crate) fn live_key() -> SimOptions {
    SimOptions {
        secret_key: "sk_live_simulator".to_owned(),
        ..SimOptions::default()
    }
}

pub(crate) fn no_limits() -> SimOptions {
    SimOptions {
        rate_limits: false,
        ..SimOptions::default()
    }
}

// ---------------------------------------------------------------------------
// Auth, trace ids, routes, lifecycle

#[tokio::test]
async fn auth_missing_wrong_or_malformed_key_is_401() {
    let h = RawSim::start().await;
    let body = json!({ "email_address": "a@example.com" });
    let url = h.v1("/invitations");
    let attempts = [
        h.http.post(&url).json(&body),
        h.http.post(&url).json(&body).bearer_auth("sk_test_wrong"),
        h.http
            .post(&url)
            .json(&body)
            .header("authorization", format!("Basic {}", h.sim.secret_key())),
        h.http
            .post(&url)
            .json(&body)
            .header("authorization", h.sim.secret_key()),
    ];
    for attempt in attempts {
        let error = h
            .send(attempt)
            .await
            .error(401, "authentication_invalid")
            .clone();
        assert!(!error["long_message"].as_str().unwrap_or("").is_empty());
    }
    h.send(h.http.get(h.v1("/invitations")))
        .await
        .error(401, "authentication_invalid");
    h.send(h.http.post(h.v1("/invitations/bulk")).json(&json!([body])))
        .await
        .error(401, "authentication_invalid");
    h.send(h.http.post(h.v1("/invitations/inv_x/revoke")))
        .await
        .error(401, "authentication_invalid");

    assert!(h.sim.invitations().is_empty());
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::CreateInvitation, 401), 4);
    assert_eq!(stats.count(Operation::ListInvitations, 401), 1);
    assert_eq!(stats.count(Operation::CreateBulkInvitations, 401), 1);
    assert_eq!(stats.count(Operation::RevokeInvitation, 401), 1);

    // The control API needs no key, and a scheme in any case is accepted.
    assert_eq!(h.control_get("/stats").await.status, 200);
    let reply = h
        .send(
            h.http
                .get(h.v1("/invitations"))
                .header("authorization", format!("bearer {}", h.sim.secret_key())),
        )
        .await;
    reply.ok();
}

#[tokio::test]
async fn every_answer_carries_a_clerk_trace_id() {
    let h = RawSim::start().await;
    let first = h
        .post("/invitations", &json!({"email_address": "t@example.com"}))
        .await;
    first.ok();
    let second = h.list("").await;
    second.ok();
    let third = h.post("/invitations", &json!({})).await;
    third.error(422, "form_param_missing");
    let trace_ids: Vec<&str> = [&first, &second, &third]
        .iter()
        .map(|reply| reply.header("clerk-trace-id").expect("a trace id header"))
        .collect();
    for trace_id in &trace_ids {
        assert_eq!(trace_id.len(), 32);
        assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_ne!(trace_ids[0], trace_ids[1]);
    assert_ne!(trace_ids[1], trace_ids[2]);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_clerk_errors() {
    let h = RawSim::start().await;
    h.get("/sessions").await.error(404, "resource_not_found");
    h.send(h.auth(h.http.post(h.v1("/users"))))
        .await
        .error(405, "method_not_allowed");
    h.send(h.auth(h.http.delete(h.v1("/invitations"))))
        .await
        .error(405, "method_not_allowed");
}

#[tokio::test]
async fn base_url_points_at_v1_and_start_on_serves_a_bound_listener() {
    let h = RawSim::start().await;
    let port = h.sim.addr().port();
    assert_ne!(port, 0);
    assert_eq!(
        h.sim.base_url().as_str(),
        format!("http://127.0.0.1:{port}/v1")
    );
    assert_eq!(h.sim.secret_key(), "sk_test_simulator");

    let wildcard = sim::start(SimOptions {
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        ..SimOptions::default()
    })
    .await
    .expect("binds the wildcard address");
    assert_eq!(
        wildcard.base_url().as_str(),
        format!("http://127.0.0.1:{}/v1", wildcard.addr().port())
    );
    wildcard.shutdown().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let on = sim::start_on(listener, SimOptions::default())
        .await
        .expect("serves");
    assert_eq!(on.addr(), addr);
    let reply = Client::new()
        .get(format!("{}/invitations", on.base_url()))
        .bearer_auth(on.secret_key())
        .send()
        .await
        .expect("an answer");
    assert_eq!(reply.status().as_u16(), 200);
    on.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let h = RawSim::start().await;
    h.list("").await.ok();
    let addr = h.sim.addr();
    tokio::time::timeout(Duration::from_secs(5), h.sim.shutdown())
        .await
        .expect("shutdown is prompt");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------
// POST /invitations

#[tokio::test]
async fn create_returns_a_clerk_shaped_invitation() {
    let h = RawSim::start().await;
    let before = chrono_ms();
    let inv = h.create("Alice@Example.com").await;
    let after = chrono_ms();

    assert_eq!(inv["object"], "invitation");
    let id = inv["id"].as_str().expect("id");
    let suffix = id.strip_prefix("inv_").expect("inv_ prefix");
    assert_eq!(suffix.len(), 27);
    assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(inv["email_address"], "Alice@Example.com");
    assert_eq!(inv["public_metadata"], json!({}));
    assert_eq!(inv["revoked"], false);
    assert_eq!(inv["status"], "pending");
    let url = inv["url"].as_str().expect("url");
    assert!(
        url.starts_with("https://accounts.simulated.clerk.invalid/sign-up?__clerk_ticket="),
        "{url}"
    );
    let created = inv["created_at"].as_i64().expect("created_at");
    assert!(
        (before..=after + 1).contains(&created),
        "created_at {created} is Unix ms"
    );
    assert_eq!(inv["updated_at"], created);
    assert_eq!(inv["expires_at"], created + 30 * 86_400_000);

    let stored = h.sim.invitations();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, id);
}

fn chrono_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

#[tokio::test]
async fn create_honours_optional_fields() {
    let h = RawSim::start().await;
    let inv = h
        .create_with(json!({
            "email_address": "bob@example.com",
            "public_metadata": {"team": "blue", "nested": {"level": 2}},
            "redirect_url": "https://app.example.com/welcome",
            "notify": false,
            "ignore_existing": false,
            "expires_in_days": 7,
            "template_slug": "waitlist_invitation",
        }))
        .await;
    assert_eq!(
        inv["public_metadata"],
        json!({"team": "blue", "nested": {"level": 2}})
    );
    let created = inv["created_at"].as_i64().expect("created_at");
    assert_eq!(inv["expires_at"], created + 7 * 86_400_000);
    assert!(inv["url"]
        .as_str()
        .expect("url")
        .contains("redirect_url=https%3A%2F%2Fapp.example.com%2Fwelcome"));

    // The nullable fields take null.
    let inv = h
        .create_with(json!({
            "email_address": "carol@example.com",
            "notify": null,
            "ignore_existing": null,
            "expires_in_days": null,
            "template_slug": "invitation",
        }))
        .await;
    let created = inv["created_at"].as_i64().expect("created_at");
    assert_eq!(inv["expires_at"], created + 30 * 86_400_000);
}

#[tokio::test]
async fn create_timestamps_strictly_increase() {
    let h = RawSim::start().await;
    let mut created = Vec::new();
    for n in 0..15 {
        let inv = h.create(&format!("user{n}@example.com")).await;
        created.push(inv["created_at"].as_i64().expect("created_at"));
    }
    assert!(
        created.windows(2).all(|pair| pair[0] < pair[1]),
        "{created:?}"
    );
}

#[tokio::test]
async fn create_rejects_a_body_that_is_not_a_json_object_with_400() {
    let h = RawSim::start().await;
    for body in [
        "",
        "{",
        "not json",
        "null",
        "42",
        "\"a@example.com\"",
        "[{\"email_address\": \"a@example.com\"}]",
    ] {
        h.post_text("/invitations", body)
            .await
            .error(400, "request_body_invalid");
    }
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn create_rejects_an_unknown_field_with_422() {
    let h = RawSim::start().await;
    let reply = h
        .post(
            "/invitations",
            &json!({"email_address": "a@example.com", "first_name": "Ann"}),
        )
        .await;
    let error = reply.param_error(422, "form_param_unknown", "first_name");
    assert_eq!(
        error["long_message"],
        "first_name is not a valid parameter for this request."
    );
    // An unknown field is reported before a missing one.
    h.post("/invitations", &json!({"emailAddress": "a@example.com"}))
        .await
        .param_error(422, "form_param_unknown", "emailAddress");
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn create_without_email_address_is_422_form_param_missing() {
    let h = RawSim::start().await;
    for body in [json!({}), json!({"notify": true, "expires_in_days": 3})] {
        h.post("/invitations", &body)
            .await
            .param_error(422, "form_param_missing", "email_address");
    }
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn create_with_a_wrong_json_type_is_422_form_param_value_invalid() {
    let h = RawSim::start().await;
    let cases = [
        ("email_address", json!(5)),
        ("email_address", json!(null)),
        ("public_metadata", json!("x")),
        ("public_metadata", json!([1])),
        ("public_metadata", json!(null)),
        ("redirect_url", json!(3)),
        ("redirect_url", json!(null)),
        ("notify", json!("yes")),
        ("ignore_existing", json!(1)),
        ("expires_in_days", json!("30")),
        ("expires_in_days", json!(1.5)),
        ("template_slug", json!(1)),
        ("template_slug", json!(null)),
    ];
    for (field, value) in cases {
        let mut body = json!({"email_address": "a@example.com"});
        body[field] = value.clone();
        let reply = h.post("/invitations", &body).await;
        let error = reply.param_error(422, "form_param_value_invalid", field);
        assert!(
            error["long_message"]
                .as_str()
                .expect("long_message")
                .starts_with(&format!("{field} is invalid.")),
            "{field} = {value}: {}",
            reply.body
        );
    }
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn create_with_a_bad_email_is_422_form_param_format_invalid() {
    let h = RawSim::start().await;
    for email in [
        "",
        "plain",
        "@example.com",
        "ann@",
        "ann@localhost",
        "ann@@example.com",
        "ann@b@example.com",
        "ann smith@example.com",
        "ann@example..com",
        " ann@example.com",
    ] {
        let reply = h
            .post("/invitations", &json!({"email_address": email}))
            .await;
        let error = reply.param_error(422, "form_param_format_invalid", "email_address");
        assert_eq!(
            error["long_message"],
            "email_address must be a valid email address."
        );
    }
    assert!(h.sim.invitations().is_empty());
    h.create("ann.smith+tag@mail.example.co.uk").await;
}

#[tokio::test]
async fn create_with_expires_in_days_outside_1_to_365_is_422() {
    let h = RawSim::start().await;
    for days in [0, 366, -1, 100_000_000_000_i64] {
        h.post(
            "/invitations",
            &json!({"email_address": "a@example.com", "expires_in_days": days}),
        )
        .await
        .param_error(422, "form_param_value_invalid", "expires_in_days");
    }
    assert!(h.sim.invitations().is_empty());
    let one = h
        .create_with(json!({"email_address": "one@example.com", "expires_in_days": 1}))
        .await;
    assert_eq!(
        one["expires_at"].as_i64().expect("expires_at")
            - one["created_at"].as_i64().expect("created_at"),
        86_400_000
    );
    let year = h
        .create_with(json!({"email_address": "year@example.com", "expires_in_days": 365}))
        .await;
    assert_eq!(
        year["expires_at"].as_i64().expect("expires_at")
            - year["created_at"].as_i64().expect("created_at"),
        365 * 86_400_000
    );
}

#[tokio::test]
async fn create_with_an_unknown_template_slug_is_422() {
    let h = RawSim::start().await;
    for slug in ["welcome", "Invitation", ""] {
        h.post(
            "/invitations",
            &json!({"email_address": "a@example.com", "template_slug": slug}),
        )
        .await
        .param_error(422, "form_param_value_invalid", "template_slug");
    }
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn create_for_an_existing_user_is_422_even_with_ignore_existing() {
    let h = RawSim::start().await;
    h.sim.seed_users(&["Dora@Example.com"]);
    for ignore_existing in [json!(null), json!(false), json!(true)] {
        let reply = h
            .post(
                "/invitations",
                &json!({"email_address": "dora@example.COM", "ignore_existing": ignore_existing}),
            )
            .await;
        let error = reply.param_error(422, "form_identifier_exists", "email_address");
        assert_eq!(
            error["meta"]["email_addresses"],
            json!(["dora@example.COM"])
        );
    }
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn accepting_an_invitation_makes_its_email_a_user() {
    let h = RawSim::start().await;
    let inv = h.create("erin@example.com").await;
    assert!(h.sim.accept(&id_of(&inv)));
    h.post(
        "/invitations",
        &json!({"email_address": "ERIN@example.com", "ignore_existing": true}),
    )
    .await
    .error(422, "form_identifier_exists");
    h.bulk(json!([{"email_address": "erin@example.com"}]))
        .await
        .error(422, "form_identifier_exists");
}

#[tokio::test]
async fn create_with_a_pending_invitation_is_400_duplicate_record() {
    let h = RawSim::start().await;
    h.create("Fay@Example.com").await;
    for ignore_existing in [json!(null), json!(false)] {
        let reply = h
            .post(
                "/invitations",
                &json!({"email_address": "fay@example.com", "ignore_existing": ignore_existing}),
            )
            .await;
        let error = reply.error(400, "duplicate_record");
        assert_eq!(
            error["long_message"],
            "There are already pending invitations for the following email addresses: fay@example.com"
        );
        assert_eq!(error["meta"]["email_addresses"], json!(["fay@example.com"]));
    }
    assert_eq!(h.sim.invitations().len(), 1);
}

#[tokio::test]
async fn create_with_ignore_existing_adds_a_second_pending_invitation() {
    let h = RawSim::start().await;
    let first = h.create("gus@example.com").await;
    let second = h
        .create_with(json!({"email_address": "GUS@example.com", "ignore_existing": true}))
        .await;
    assert_ne!(first["id"], second["id"]);
    let pending = h.list("status=pending").await.ok().clone();
    assert_eq!(ids(&pending), [id_of(&second), id_of(&first)]);
}

#[tokio::test]
async fn revoked_and_expired_invitations_do_not_block_a_new_one() {
    let h = RawSim::start().await;
    let revoked = h.create("hal@example.com").await;
    h.revoke(&id_of(&revoked)).await.ok();
    h.create("hal@example.com").await;

    let expired = h.create("ivy@example.com").await;
    assert!(h.sim.expire(&id_of(&expired)));
    h.create("ivy@example.com").await;
    assert_eq!(h.sim.invitations().len(), 4);
}

// ---------------------------------------------------------------------------
// POST /invitations/bulk

#[tokio::test]
async fn bulk_creates_every_item_in_order() {
    let h = RawSim::start().await;
    let reply = h
        .bulk(json!([
            {"email_address": "a1@example.com"},
            {"email_address": "a2@example.com", "public_metadata": null, "redirect_url": null,
             "notify": null, "ignore_existing": null, "expires_in_days": null},
            {"email_address": "a3@example.com", "public_metadata": {"k": 1}, "expires_in_days": 2,
             "template_slug": "invitation"},
        ]))
        .await;
    let created = reply.ok();
    assert_eq!(
        emails(created),
        ["a1@example.com", "a2@example.com", "a3@example.com"]
    );
    assert_eq!(created[1]["public_metadata"], json!({}));
    assert_eq!(created[2]["public_metadata"], json!({"k": 1}));
    let third_created = created[2]["created_at"].as_i64().expect("created_at");
    assert_eq!(created[2]["expires_at"], third_created + 2 * 86_400_000);
    let stamps: Vec<i64> = created
        .as_array()
        .expect("array")
        .iter()
        .map(|inv| inv["created_at"].as_i64().expect("created_at"))
        .collect();
    assert!(stamps.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(h.sim.invitations().len(), 3);
}

#[tokio::test]
async fn bulk_body_that_is_not_an_array_of_objects_is_400() {
    let h = RawSim::start().await;
    for body in [
        "",
        "[",
        "{\"email_address\": \"a@example.com\"}",
        "[1]",
        "[\"a@example.com\"]",
        "[{\"email_address\": \"a@example.com\"}, null]",
    ] {
        h.post_text("/invitations/bulk", body)
            .await
            .error(400, "request_body_invalid");
    }
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn bulk_with_no_items_is_422_form_param_value_invalid() {
    let h = RawSim::start().await;
    h.bulk(json!([]))
        .await
        .error(422, "form_param_value_invalid");
}

#[tokio::test]
async fn bulk_with_more_than_ten_items_is_400_bulk_size_exceeded() {
    let h = RawSim::start().await;
    let items = |n: usize, prefix: &str| -> Value {
        (0..n)
            .map(|i| json!({"email_address": format!("{prefix}{i}@example.com")}))
            .collect()
    };
    let reply = h.bulk(items(11, "over")).await;
    let error = reply.error(400, "bulk_size_exceeded");
    assert_eq!(
        error["long_message"],
        "Parameters exceed the maximum allowed bulk processing size of 10."
    );
    assert!(h.sim.invitations().is_empty());
    assert_eq!(
        h.bulk(items(10, "max")).await.ok().as_array().map(Vec::len),
        Some(10)
    );
}

#[tokio::test]
async fn bulk_item_errors_fail_the_whole_call() {
    let h = RawSim::start().await;
    let good = json!({"email_address": "ok@example.com"});
    h.bulk(json!([good, {"email_address": "b@example.com", "role": "admin"}]))
        .await
        .param_error(422, "form_param_unknown", "role");
    h.bulk(json!([good, {"notify": true}])).await.param_error(
        422,
        "form_param_missing",
        "email_address",
    );
    h.bulk(json!([good, {"email_address": "not-an-email"}]))
        .await
        .param_error(422, "form_param_format_invalid", "email_address");
    h.bulk(json!([good, {"email_address": "c@example.com", "notify": "no"}]))
        .await
        .param_error(422, "form_param_value_invalid", "notify");
    h.bulk(json!([good, {"email_address": "c@example.com", "expires_in_days": 400}]))
        .await
        .param_error(422, "form_param_value_invalid", "expires_in_days");
    h.bulk(json!([good, {"email_address": "c@example.com", "template_slug": null}]))
        .await
        .param_error(422, "form_param_value_invalid", "template_slug");
    assert!(h.sim.invitations().is_empty());
}

#[tokio::test]
async fn bulk_with_pending_invitations_fails_whole_call_and_lists_every_offender() {
    let h = RawSim::start().await;
    h.create("p1@example.com").await;
    h.create("p2@example.com").await;
    let reply = h
        .bulk(json!([
            {"email_address": "P1@example.com"},
            {"email_address": "new@example.com"},
            {"email_address": "p2@example.com"},
        ]))
        .await;
    let error = reply.error(400, "duplicate_record");
    assert_eq!(
        error["meta"]["email_addresses"],
        json!(["P1@example.com", "p2@example.com"])
    );
    assert_eq!(
        error["long_message"],
        "There are already pending invitations for the following email addresses: P1@example.com, p2@example.com"
    );
    assert_eq!(h.sim.invitations().len(), 2, "nothing was created");

    // ignore_existing applies per item.
    let reply = h
        .bulk(json!([
            {"email_address": "p1@example.com", "ignore_existing": true},
            {"email_address": "new@example.com"},
            {"email_address": "p2@example.com"},
        ]))
        .await;
    assert_eq!(
        reply.error(400, "duplicate_record")["meta"]["email_addresses"],
        json!(["p2@example.com"])
    );
    let reply = h
        .bulk(json!([
            {"email_address": "p1@example.com", "ignore_existing": true},
            {"email_address": "new@example.com"},
        ]))
        .await;
    assert_eq!(reply.ok().as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn bulk_repeating_an_email_counts_as_a_duplicate() {
    let h = RawSim::start().await;
    let reply = h
        .bulk(json!([
            {"email_address": "twin@example.com"},
            {"email_address": "Twin@Example.com"},
        ]))
        .await;
    assert_eq!(
        reply.error(400, "duplicate_record")["meta"]["email_addresses"],
        json!(["Twin@Example.com"])
    );
    assert!(h.sim.invitations().is_empty());

    let reply = h
        .bulk(json!([
            {"email_address": "twin@example.com"},
            {"email_address": "Twin@Example.com", "ignore_existing": true},
        ]))
        .await;
    assert_eq!(reply.ok().as_array().map(Vec::len), Some(2));
    let pending = h.list("status=pending").await.ok().clone();
    assert_eq!(pending.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn bulk_with_an_existing_user_is_422_and_beats_duplicates() {
    let h = RawSim::start().await;
    h.sim.seed_users(&["user@example.com", "other@example.com"]);
    h.create("pending@example.com").await;
    let reply = h
        .bulk(json!([
            {"email_address": "pending@example.com"},
            {"email_address": "USER@example.com", "ignore_existing": true},
            {"email_address": "fresh@example.com"},
            {"email_address": "other@example.com"},
        ]))
        .await;
    let error = reply.param_error(422, "form_identifier_exists", "email_address");
    assert_eq!(
        error["meta"]["email_addresses"],
        json!(["USER@example.com", "other@example.com"])
    );
    assert_eq!(h.sim.invitations().len(), 1);
}

// ---------------------------------------------------------------------------
// GET /invitations

/// Four invitations, one per status; returns their ids as (pending, accepted, revoked, expired).
async fn one_of_each_status(h: &RawSim) -> (String, String, String, String) {
    let pending = id_of(&h.create("pending@example.com").await);
    let accepted = id_of(&h.create("accepted@example.com").await);
    let revoked = id_of(&h.create("revoked@example.com").await);
    let expired = id_of(&h.create("expired@example.com").await);
    assert!(h.sim.accept(&accepted));
    h.revoke(&revoked).await.ok();
    assert!(h.sim.expire(&expired));
    (pending, accepted, revoked, expired)
}

#[tokio::test]
async fn list_is_a_bare_array_of_non_revoked_invitations_by_default() {
    let h = RawSim::start().await;
    let (pending, accepted, _revoked, expired) = one_of_each_status(&h).await;
    let reply = h.list("").await;
    let list = reply.ok();
    assert!(list.is_array(), "{list}");
    assert_eq!(ids(list), [expired, accepted, pending]);
    let statuses: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|inv| inv["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["expired", "accepted", "pending"]);
    assert!(h.list("paginated=false").await.ok().is_array());
}

#[tokio::test]
async fn list_filters_by_status() {
    let h = RawSim::start().await;
    let (pending, accepted, revoked, expired) = one_of_each_status(&h).await;
    for (status, id) in [
        ("pending", &pending),
        ("accepted", &accepted),
        ("revoked", &revoked),
        ("expired", &expired),
    ] {
        let list = h.list(&format!("status={status}")).await.ok().clone();
        assert_eq!(ids(&list), [id.as_str()], "status={status}");
        assert_eq!(list[0]["status"], status);
        assert_eq!(list[0]["revoked"], status == "revoked");
    }
    let both = h.list("status=pending&status=revoked").await.ok().clone();
    assert_eq!(ids(&both), [revoked, pending]);
}

#[tokio::test]
async fn list_paginated_wraps_data_with_total_count_and_pages_stably() {
    let h = RawSim::start().await;
    let mut created = Vec::new();
    for n in 0..23 {
        created.push(id_of(&h.create(&format!("page{n:02}@example.com")).await));
    }
    created.reverse();

    let bare = h.list("").await.ok().clone();
    assert_eq!(ids(&bare), &created[..10], "default limit is 10");

    let mut seen = Vec::new();
    for offset in [0, 10, 20] {
        let reply = h
            .list(&format!("paginated=true&limit=10&offset={offset}"))
            .await;
        let page = reply.ok();
        assert_eq!(page["total_count"], 23);
        let keys: Vec<&String> = page.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["data", "total_count"]);
        seen.extend(ids(&page["data"]));
    }
    assert_eq!(seen, created);

    let beyond = h.list("paginated=true&offset=100").await.ok().clone();
    assert_eq!(beyond["data"], json!([]));
    assert_eq!(beyond["total_count"], 23);
    let filtered = h
        .list("paginated=true&limit=2&query=page1")
        .await
        .ok()
        .clone();
    assert_eq!(filtered["total_count"], 10);
    assert_eq!(filtered["data"].as_array().map(Vec::len), Some(2));
    let all = h.list("limit=500").await.ok().clone();
    assert_eq!(ids(&all), created);
}

#[tokio::test]
async fn list_orders_by_each_field_with_ties_broken_by_id() {
    let h = RawSim::start().await;
    let b = h
        .create_with(json!({"email_address": "b@example.com", "expires_in_days": 3}))
        .await;
    let c = h
        .create_with(json!({"email_address": "C@example.com", "expires_in_days": 1}))
        .await;
    let a = h
        .create_with(json!({"email_address": "a@example.com", "expires_in_days": 2}))
        .await;
    let (a, b, c) = (id_of(&a), id_of(&b), id_of(&c));
    let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());
    let h = &h;
    let order = move |query: &'static str| async move { ids(h.list(query).await.ok()) };
    assert_eq!(order("").await, [a, c, b]);
    assert_eq!(order("order_by=-created_at").await, [a, c, b]);
    assert_eq!(order("order_by=created_at").await, [b, c, a]);
    assert_eq!(order("order_by=%2Bcreated_at").await, [b, c, a]);
    assert_eq!(order("order_by=email_address").await, [a, b, c]);
    assert_eq!(order("order_by=-email_address").await, [c, b, a]);
    assert_eq!(order("order_by=expires_at").await, [c, a, b]);
    assert_eq!(order("order_by=-expires_at").await, [b, a, c]);

    // Two invitations for one email tie on email_address: the id decides, both ways.
    let d1 = id_of(&h.create("d@example.com").await);
    let d2 = id_of(
        &h.create_with(json!({"email_address": "d@example.com", "ignore_existing": true}))
            .await,
    );
    let mut by_id = vec![d1, d2];
    by_id.sort();
    for query in [
        "order_by=email_address&query=d@",
        "order_by=-email_address&query=d@",
    ] {
        assert_eq!(ids(h.list(query).await.ok()), by_id, "{query}");
    }
}

#[tokio::test]
async fn list_filters_by_query_on_email_or_id() {
    let h = RawSim::start().await;
    let jo = h.create("Jo.Smith@Example.com").await;
    h.create("kim@other.org").await;
    h.create("lee@example.com").await;
    assert_eq!(
        emails(h.list("query=smith").await.ok()),
        ["Jo.Smith@Example.com"]
    );
    assert_eq!(
        emails(h.list("query=EXAMPLE.COM").await.ok()),
        ["lee@example.com", "Jo.Smith@Example.com"]
    );
    let id = id_of(&jo);
    assert_eq!(
        ids(h.list(&format!("query={id}")).await.ok()),
        [id.as_str()]
    );
    assert_eq!(
        ids(h.list(&format!("query={}", &id[4..20])).await.ok()),
        [id]
    );
    assert_eq!(h.list("query=nobody").await.ok(), &json!([]));
}

#[tokio::test]
async fn list_rejects_bad_parameters_with_422() {
    let h = RawSim::start().await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=-5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("order_by=name", "order_by"),
        ("order_by=*created_at", "order_by"),
        ("status=active", "status"),
        ("paginated=maybe", "paginated"),
    ] {
        h.list(query)
            .await
            .param_error(422, "form_param_value_invalid", param);
    }
    h.list("limit=1&offset=0&order_by=expires_at&status=pending&paginated=true")
        .await
        .ok();
}

// ---------------------------------------------------------------------------
// POST /invitations/{id}/revoke

#[tokio::test]
async fn revoke_a_pending_invitation_returns_it_revoked() {
    let h = RawSim::start().await;
    let inv = h.create("rev@example.com").await;
    let reply = h.revoke(&id_of(&inv)).await;
    let revoked = reply.ok();
    assert_eq!(revoked["id"], inv["id"]);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["created_at"], inv["created_at"]);
    assert!(revoked["updated_at"].as_i64() >= inv["updated_at"].as_i64());
    assert!(reply.header("clerk-trace-id").is_some());
    assert_eq!(h.list("").await.ok(), &json!([]));
    assert_eq!(ids(h.list("status=revoked").await.ok()), [id_of(&inv)]);
}

#[tokio::test]
async fn revoke_an_expired_invitation_is_allowed() {
    let h = RawSim::start().await;
    let inv = h.create("old@example.com").await;
    assert!(h.sim.expire(&id_of(&inv)));
    let revoked = h.revoke(&id_of(&inv)).await.ok().clone();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked"], true);
}

#[tokio::test]
async fn revoke_an_unknown_invitation_is_404() {
    let h = RawSim::start().await;
    let error = h
        .revoke("inv_doesnotexist")
        .await
        .error(404, "resource_not_found")
        .clone();
    assert_eq!(
        error["long_message"],
        "No invitation was found with id inv_doesnotexist."
    );
}

#[tokio::test]
async fn revoke_twice_is_400_invitation_already_revoked() {
    let h = RawSim::start().await;
    let id = id_of(&h.create("twice@example.com").await);
    h.revoke(&id).await.ok();
    h.revoke(&id).await.error(400, "invitation_already_revoked");
}

#[tokio::test]
async fn revoke_an_accepted_invitation_is_400_invitation_already_accepted() {
    let h = RawSim::start().await;
    let id = id_of(&h.create("taken@example.com").await);
    assert!(h.sim.accept(&id));
    h.revoke(&id)
        .await
        .error(400, "invitation_already_accepted");
    assert_eq!(h.sim.invitations()[0].status.as_str(), "accepted");
}

// ---------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn every_call_is_limited_to_100_per_10_s_with_a_test_key() {
    let h = RawSim::start().await;
    // Unauthenticated calls are refused before they count.
    for _ in 0..5 {
        h.send(h.http.get(h.v1("/invitations")))
            .await
            .error(401, "authentication_invalid");
    }
    for _ in 0..100 {
        h.list("").await.ok();
    }
    let reply = h.list("").await;
    reply.error(429, "too_many_requests");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    // The limit covers every operation.
    h.post("/invitations", &json!({"email_address": "x@example.com"}))
        .await
        .error(429, "too_many_requests");
    h.revoke("inv_x").await.error(429, "too_many_requests");
    assert!(h.sim.invitations().is_empty());
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::ListInvitations, 200), 100);
    assert_eq!(stats.count(Operation::ListInvitations, 429), 1);
    assert_eq!(stats.count(Operation::CreateInvitation, 429), 1);
}

#[tokio::test]
async fn a_live_key_allows_1000_per_10_s() {
    let h = RawSim::with(live_key()).await;
    for _ in 0..150 {
        h.list("").await.ok();
    }
}

#[tokio::test]
async fn create_is_limited_to_100_per_hour_with_retry_after() {
    let h = RawSim::with(live_key()).await;
    // Calls that fail validation count too.
    for _ in 0..100 {
        h.post("/invitations", &json!({}))
            .await
            .error(422, "form_param_missing");
    }
    let reply = h
        .post(
            "/invitations",
            &json!({"email_address": "late@example.com"}),
        )
        .await;
    reply.error(429, "too_many_requests");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    assert!(h.sim.invitations().is_empty());
    // Other operations are not blocked by it.
    h.list("").await.ok();
    h.bulk(json!([{"email_address": "bulk@example.com"}]))
        .await
        .ok();
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::CreateInvitation, 422), 100);
    assert_eq!(stats.count(Operation::CreateInvitation, 429), 1);
}

#[tokio::test]
async fn bulk_is_limited_to_25_per_hour_with_retry_after() {
    let h = RawSim::start().await;
    for n in 0..25 {
        let reply = h
            .bulk(json!([{"email_address": format!("b{n}@example.com")}]))
            .await;
        reply.ok();
    }
    let reply = h.bulk(json!([{"email_address": "late@example.com"}])).await;
    reply.error(429, "too_many_requests");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(h.sim.invitations().len(), 25);
    h.create("single@example.com").await;
}

#[tokio::test]
async fn an_hourly_limit_lifts_once_the_oldest_call_leaves_the_window() {
    let hour = Duration::from_secs(2);
    let h = RawSim::with(SimOptions {
        hour,
        ..SimOptions::default()
    })
    .await;
    let mut sent = 0;
    let retry_after = loop {
        let reply = h
            .bulk(json!([{"email_address": format!("w{sent}@example.com")}]))
            .await;
        sent += 1;
        if reply.status == 429 {
            reply.error(429, "too_many_requests");
            break reply.header("retry-after").map(str::to_owned);
        }
        reply.ok();
        assert!(sent < 500, "the bulk limit never applied");
    };
    let retry_after: u64 = retry_after
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    let created = wait_for(
        "the bulk limit to lift",
        Duration::from_secs(20),
        || async {
            let reply = h
                .bulk(json!([{"email_address": "after@example.com"}]))
                .await;
            (reply.status == 200).then_some(reply.body)
        },
    )
    .await;
    assert_eq!(emails(&created), ["after@example.com"]);
}

#[tokio::test]
async fn rate_limits_can_be_disabled() {
    let h = RawSim::with(no_limits()).await;
    for _ in 0..120 {
        h.post("/invitations", &json!({}))
            .await
            .error(422, "form_param_missing");
    }
    for n in 0..30 {
        h.bulk(json!([{"email_address": format!("n{n}@example.com")}]))
            .await
            .ok();
    }
    assert_eq!(h.sim.stats().count(Operation::CreateInvitation, 429), 0);
    assert_eq!(h.sim.invitations().len(), 30);
}

// ---------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn a_status_fault_answers_the_next_calls_without_applying_them() {
    let h = RawSim::start().await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        2,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let body = json!({"email_address": "f@example.com"});
    for _ in 0..2 {
        let reply = h.post("/invitations", &body).await;
        reply.error(503, "internal_clerk_error");
        assert!(reply.header("retry-after").is_none());
    }
    assert!(h.sim.invitations().is_empty());
    h.list("").await.ok();
    h.post("/invitations", &body).await.ok();
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::CreateInvitation, 503), 2);
    assert_eq!(stats.count(Operation::CreateInvitation, 200), 1);
    assert_eq!(stats.count(Operation::ListInvitations, 200), 1);
}

#[tokio::test]
async fn a_429_fault_carries_retry_after_and_others_are_fault_injected() {
    let h = RawSim::start().await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 429,
            retry_after: Some(7),
        },
    ));
    h.sim.inject_fault(Fault::new(
        Operation::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 418,
            retry_after: None,
        },
    ));
    let body = json!([{"email_address": "q@example.com"}]);
    let first = h.bulk(body.clone()).await;
    first.error(429, "too_many_requests");
    assert_eq!(first.header("retry-after"), Some("7"));
    let second = h.bulk(body.clone()).await;
    second.error(418, "fault_injected");
    assert!(second.header("retry-after").is_none());
    h.bulk(body).await.ok();
}

#[tokio::test]
async fn faults_come_after_auth_and_rate_limits_and_before_validation() {
    let h = RawSim::start().await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        1,
        FaultKind::Status {
            status: 500,
            retry_after: None,
        },
    ));
    h.send(h.http.post(h.v1("/invitations")).json(&json!({})))
        .await
        .error(401, "authentication_invalid");
    h.post("/invitations", &json!({}))
        .await
        .error(500, "internal_clerk_error");
    h.post("/invitations", &json!({}))
        .await
        .error(422, "form_param_missing");
}

#[tokio::test]
async fn a_hang_fault_holds_the_call_until_the_client_gives_up_and_applies_nothing() {
    let h = RawSim::start().await;
    h.sim
        .inject_fault(Fault::new(Operation::CreateInvitation, 1, FaultKind::Hang));
    let impatient = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("a client");
    let error = impatient
        .post(h.v1("/invitations"))
        .bearer_auth(h.sim.secret_key())
        .json(&json!({"email_address": "hang@example.com"}))
        .send()
        .await
        .expect_err("the call hangs");
    assert!(error.is_timeout(), "{error}");
    assert!(h.sim.invitations().is_empty());
    assert_eq!(
        h.sim
            .stats()
            .count(Operation::CreateInvitation, SimStats::NO_RESPONSE),
        1
    );
    // The next call is served normally, and shutdown ends the hang promptly.
    h.create("next@example.com").await;
    tokio::time::timeout(Duration::from_secs(5), h.sim.shutdown())
        .await
        .expect("shutdown ends the hang");
}

#[tokio::test]
async fn a_hang_fault_ends_by_closing_the_connection_without_an_answer() {
    let h = RawSim::with(SimOptions {
        hang: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await;
    h.sim
        .inject_fault(Fault::new(Operation::ListInvitations, 1, FaultKind::Hang));
    let error = h
        .auth(h.http.get(h.v1("/invitations")))
        .send()
        .await
        .expect_err("no answer");
    assert!(!error.is_timeout(), "{error}");
    h.list("").await.ok();
}

#[tokio::test]
async fn drop_after_apply_creates_then_closes_without_an_answer() {
    let h = RawSim::start().await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        1,
        FaultKind::DropAfterApply,
    ));
    let error = h
        .auth(h.http.post(h.v1("/invitations")))
        .json(&json!({"email_address": "drop@example.com"}))
        .send()
        .await
        .expect_err("the connection is dropped");
    assert!(!error.is_timeout(), "{error}");
    let stored = h.sim.invitations();
    assert_eq!(stored.len(), 1, "the create was applied");
    assert_eq!(stored[0].email_address, "drop@example.com");
    // A retry now meets the invitation the lost answer would have reported.
    h.post(
        "/invitations",
        &json!({"email_address": "drop@example.com"}),
    )
    .await
    .error(400, "duplicate_record");
    let stats = h.sim.stats();
    assert_eq!(
        stats.count(Operation::CreateInvitation, SimStats::NO_RESPONSE),
        1
    );
    assert_eq!(stats.count(Operation::CreateInvitation, 400), 1);
}

#[tokio::test]
async fn status_after_apply_creates_then_answers_the_error() {
    let h = RawSim::start().await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        1,
        FaultKind::StatusAfterApply { status: 503 },
    ));
    h.post(
        "/invitations",
        &json!({"email_address": "late@example.com"}),
    )
    .await
    .error(503, "internal_clerk_error");
    let stored = h.sim.invitations();
    assert_eq!(stored.len(), 1, "the create was applied");
    assert_eq!(stored[0].email_address, "late@example.com");
    assert_eq!(h.sim.stats().count(Operation::CreateInvitation, 503), 1);
}

#[tokio::test]
async fn drop_after_apply_works_for_bulk_and_revoke() {
    let h = RawSim::start().await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateBulkInvitations,
        1,
        FaultKind::DropAfterApply,
    ));
    let sent = h
        .auth(h.http.post(h.v1("/invitations/bulk")))
        .json(&json!([{"email_address": "d1@example.com"}, {"email_address": "d2@example.com"}]))
        .send()
        .await;
    assert!(sent.is_err());
    assert_eq!(h.sim.invitations().len(), 2);

    let id = h.sim.invitations()[0].id.clone();
    h.sim.inject_fault(Fault::new(
        Operation::RevokeInvitation,
        1,
        FaultKind::DropAfterApply,
    ));
    assert!(h
        .auth(h.http.post(h.v1(&format!("/invitations/{id}/revoke"))))
        .send()
        .await
        .is_err());
    assert_eq!(h.sim.invitations()[0].status.as_str(), "revoked");
    h.revoke(&id).await.error(400, "invitation_already_revoked");
}

#[tokio::test]
async fn faults_queue_in_the_order_they_were_injected() {
    let h = RawSim::start().await;
    for status in [502, 504] {
        h.sim.inject_fault(Fault::new(
            Operation::RevokeInvitation,
            1,
            FaultKind::Status {
                status,
                retry_after: None,
            },
        ));
    }
    let id = id_of(&h.create("order@example.com").await);
    h.revoke(&id).await.error(502, "internal_clerk_error");
    h.revoke(&id).await.error(504, "internal_clerk_error");
    h.revoke(&id).await.ok();
}

// ---------------------------------------------------------------------------
// Control API and handle

#[tokio::test]
async fn control_api_seeds_users_accepts_and_expires() {
    let h = RawSim::start().await;
    let seeded = h
        .control_post(
            "/users",
            Some(json!({"email_addresses": ["seed@example.com"]})),
        )
        .await;
    assert_eq!(seeded.status, 200, "{}", seeded.body);
    h.post(
        "/invitations",
        &json!({"email_address": "Seed@example.com"}),
    )
    .await
    .error(422, "form_identifier_exists");
    assert_eq!(h.control_post("/users", Some(json!({}))).await.status, 400);

    let accept_id = id_of(&h.create("acc@example.com").await);
    let accepted = h
        .control_post(&format!("/invitations/{accept_id}/accept"), None)
        .await;
    assert_eq!(accepted.ok()["status"], "accepted");
    assert_eq!(
        h.control_post(&format!("/invitations/{accept_id}/accept"), None)
            .await
            .status,
        409
    );
    assert_eq!(
        h.control_post("/invitations/inv_nope/accept", None)
            .await
            .status,
        404
    );

    let expire_id = id_of(&h.create("exp@example.com").await);
    let expired = h
        .control_post(&format!("/invitations/{expire_id}/expire"), None)
        .await;
    let expired = expired.ok();
    assert_eq!(expired["status"], "expired");
    assert!(expired["expires_at"].as_i64() <= Some(chrono_ms()));
    assert_eq!(
        h.control_post("/invitations/inv_nope/expire", None)
            .await
            .status,
        404
    );
    assert_eq!(ids(h.list("status=expired").await.ok()), [expire_id]);
}

#[tokio::test]
async fn control_api_lists_every_invitation_of_every_status() {
    let h = RawSim::start().await;
    let (pending, accepted, revoked, expired) = one_of_each_status(&h).await;
    let all = h.control_get("/invitations").await.ok().clone();
    assert_eq!(ids(&all), [pending, accepted, revoked, expired]);
    let typed: Vec<invite_sync::clerk::model::Invitation> =
        serde_json::from_value(all).expect("Invitations");
    assert_eq!(typed, h.sim.invitations());
}

#[tokio::test]
async fn control_api_injects_faults_and_reports_stats() {
    let h = RawSim::start().await;
    let injected = h
        .control_post(
            "/faults",
            Some(json!({
                "operation": "create_invitation",
                "times": 1,
                "kind": {"type": "status", "status": 503, "retry_after": 2}
            })),
        )
        .await;
    assert_eq!(injected.status, 200, "{}", injected.body);
    let reply = h
        .post("/invitations", &json!({"email_address": "s@example.com"}))
        .await;
    reply.error(503, "internal_clerk_error");
    assert_eq!(reply.header("retry-after"), Some("2"));
    h.post("/invitations", &json!({"email_address": "s@example.com"}))
        .await
        .ok();
    h.post("/invitations", &json!({"email_address": "s@example.com"}))
        .await
        .error(400, "duplicate_record");
    h.list("").await.ok();

    let stats = h.control_get("/stats").await.ok().clone();
    assert_eq!(
        stats,
        json!({
            "create_invitation": {"200": 1, "400": 1, "503": 1},
            "list_invitations": {"200": 1},
        })
    );
    let typed: SimStats = serde_json::from_value(stats).expect("SimStats");
    assert_eq!(typed, h.sim.stats());
    assert_eq!(typed.total(Operation::CreateInvitation), 3);
    assert_eq!(typed.total(Operation::RevokeInvitation), 0);

    for hang in [
        json!({"operation": "list_invitations", "kind": {"type": "hang"}}),
        json!({"operation": "revoke_invitation", "times": 3, "kind": {"type": "drop_after_apply"}}),
    ] {
        assert_eq!(h.control_post("/faults", Some(hang)).await.status, 200);
    }
    assert_eq!(
        h.control_post(
            "/faults",
            Some(json!({"operation": "delete_invitation", "kind": {"type": "hang"}}))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        h.control_post(
            "/faults",
            Some(
                json!({"operation": "list_invitations", "kind": {"type": "status", "status": 42}})
            )
        )
        .await
        .status,
        422
    );
}

#[tokio::test]
async fn control_api_reset_forgets_everything() {
    let h = RawSim::start().await;
    h.create("r1@example.com").await;
    h.sim.seed_users(&["user@example.com"]);
    h.sim.inject_fault(Fault::new(
        Operation::ListInvitations,
        5,
        FaultKind::Status {
            status: 500,
            retry_after: None,
        },
    ));
    for n in 0..25 {
        h.bulk(json!([{"email_address": format!("r{n}x@example.com")}]))
            .await
            .ok();
    }
    h.bulk(json!([{"email_address": "blocked@example.com"}]))
        .await
        .error(429, "too_many_requests");

    let reset = h.control_post("/reset", None).await;
    assert_eq!(reset.status, 200);
    assert!(h.sim.invitations().is_empty());
    assert_eq!(h.sim.stats(), SimStats::default());
    h.list("").await.ok();
    h.create("user@example.com").await;
    h.create("r1@example.com").await;
    h.bulk(json!([{"email_address": "unblocked@example.com"}]))
        .await
        .ok();
}

#[tokio::test]
async fn handle_controls_report_what_they_did() {
    let h = RawSim::start().await;
    let a = id_of(&h.create("ha@example.com").await);
    let b = id_of(&h.create("hb@example.com").await);
    assert!(!h.sim.accept("inv_unknown"));
    assert!(!h.sim.expire("inv_unknown"));
    assert!(h.sim.accept(&a));
    assert!(!h.sim.accept(&a), "already accepted");
    assert!(!h.sim.expire(&a), "accepted is not pending");
    assert!(h.sim.expire(&b));
    assert!(!h.sim.expire(&b), "already expired");
    assert!(!h.sim.accept(&b), "expired cannot be accepted");
    let statuses: Vec<&str> = h
        .sim
        .invitations()
        .iter()
        .map(|inv| inv.status.as_str())
        .collect();
    assert_eq!(statuses, ["accepted", "expired"]);
    h.sim.reset();
    assert!(h.sim.invitations().is_empty());
}

#[test]
fn fault_and_stats_serialise_as_documented() {
    let fault = Fault::new(
        Operation::CreateBulkInvitations,
        2,
        FaultKind::Status {
            status: 429,
            retry_after: Some(30),
        },
    );
    assert_eq!(
        serde_json::to_value(&fault).expect("json"),
        json!({"operation": "create_bulk_invitations", "times": 2,
               "kind": {"type": "status", "status": 429, "retry_after": 30}})
    );
    let parsed: Fault = serde_json::from_value(
        json!({"operation": "revoke_invitation", "kind": {"type": "drop_after_apply"}}),
    )
    .expect("times defaults to 1");
    assert_eq!(
        parsed,
        Fault::new(Operation::RevokeInvitation, 1, FaultKind::DropAfterApply)
    );
    let stats: SimStats = serde_json::from_value(json!({
        "create_invitation": {"200": 3, "422": 1},
        "list_invitations": {"0": 2}
    }))
    .expect("SimStats");
    assert_eq!(stats.count(Operation::CreateInvitation, 200), 3);
    assert_eq!(stats.total(Operation::CreateInvitation), 4);
    assert_eq!(
        stats.count(Operation::ListInvitations, SimStats::NO_RESPONSE),
        2
    );
    assert_eq!(stats.total(Operation::RevokeInvitation), 0);
}

// ---------------------------------------------------------------------------
// Conformance with Clerk's spec

pub(crate) struct Spec {
    root: serde_yaml::Value,
}

impl Spec {
    pub(crate) fn load() -> Self {
        Spec {
            root: crate::common::yaml("tests/fixtures/clerk-bapi-2026-05-12.yml"),
        }
    }

    /// The node at a `#/a/b/c` pointer, as JSON.
    fn resolve(&self, pointer: &str) -> Value {
        let mut node = &self.root;
        for part in pointer.trim_start_matches("#/").split('/') {
            node = node
                .get(part)
                .unwrap_or_else(|| panic!("{pointer}: no {part}"));
        }
        serde_json::to_value(node).expect("a JSON-compatible schema")
    }

    pub(crate) fn schema(&self, name: &str) -> Value {
        self.resolve(&format!("#/components/schemas/{name}"))
    }

    /// The JSON schema of an operation's response, following the spec's `$ref`s.
    pub(crate) fn response_schema(&self, path: &str, method: &str, status: &str) -> Value {
        let op = self.root["paths"][path][method].clone();
        let response = serde_json::to_value(&op["responses"][status])
            .unwrap_or_else(|_| panic!("{method} {path} {status}"));
        let response = match response.get("$ref").and_then(Value::as_str) {
            Some(pointer) => self.resolve(pointer),
            None => response,
        };
        response["content"]["application/json"]["schema"].clone()
    }

    /// Every way `value` breaks `schema`, each with its JSON path.
    pub(crate) fn check(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        self.check_into(schema, value, at, &mut problems);
        problems
    }

    fn check_into(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        if let Some(pointer) = schema.get("$ref").and_then(Value::as_str) {
            let target = self.resolve(pointer);
            return self.check_into(&target, value, at, problems);
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.check_into(part, value, at, problems);
            }
        }
        if value.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) && schema.get("type").is_some() {
                problems.push(format!("{at}: null but not nullable"));
            }
            return;
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let fitting = options
                .iter()
                .filter(|option| self.check(option, value, at).is_empty())
                .count();
            if fitting != 1 {
                problems.push(format!(
                    "{at}: {value} fits {fitting} of the oneOf schemas, not exactly 1"
                ));
            }
        }
        if let Some(kind) = schema.get("type").and_then(Value::as_str) {
            let fits = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                other => {
                    problems.push(format!("{at}: schema type {other} unknown to the checker"));
                    true
                }
            };
            if !fits {
                problems.push(format!("{at}: {value} is not of type {kind}"));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                problems.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("email") {
            if let Some(text) = value.as_str() {
                if !text.contains('@') {
                    problems.push(format!("{at}: {text} is not an email"));
                }
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(required) {
                    problems.push(format!("{at}: required {required} is missing"));
                }
            }
            for (key, field) in object {
                match properties.and_then(|props| props.get(key)) {
                    Some(field_schema) => {
                        self.check_into(field_schema, field, &format!("{at}.{key}"), problems)
                    }
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        problems.push(format!("{at}: {key} is not a declared property"));
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(schema_items)) = (value.as_array(), schema.get("items")) {
            for (index, item) in items.iter().enumerate() {
                self.check_into(schema_items, item, &format!("{at}[{index}]"), problems);
            }
        }
    }

    pub(crate) fn assert_conforms(&self, schema: &Value, value: &Value, what: &str) {
        let problems = self.check(schema, value, "$");
        assert!(
            problems.is_empty(),
            "{what} breaks the spec: {problems:#?}\n{value:#}"
        );
    }
}

#[test]
fn the_schema_checker_catches_violations() {
    let spec = Spec::load();
    let invitation = spec.schema("Invitation");
    let good = json!({
        "object": "invitation", "id": "inv_1", "email_address": "a@b.co",
        "public_metadata": {}, "revoked": false, "status": "pending", "url": "https://x",
        "expires_at": null, "created_at": 1, "updated_at": 1
    });
    assert_eq!(spec.check(&invitation, &good, "$"), Vec::<String>::new());
    let broken = [
        ("extra", json!(1)),
        ("status", json!("active")),
        ("created_at", json!("1")),
        ("public_metadata", json!(null)),
        ("revoked", json!("no")),
        ("object", json!("user")),
    ];
    for (field, value) in broken {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(!spec.check(&invitation, &bad, "$").is_empty(), "{field}");
    }
    let mut missing = good.clone();
    missing
        .as_object_mut()
        .expect("object")
        .remove("updated_at");
    assert!(!spec.check(&invitation, &missing, "$").is_empty());
    let address = spec.schema("EmailAddress");
    let good_address = json!({
        "id": "idn_1", "object": "email_address", "email_address": "a@b.co", "reserved": false,
        "verification": {"object": "verification_admin", "status": "verified", "strategy": "admin",
                         "attempts": null, "expire_at": null},
        "linked_to": [], "created_at": 1, "updated_at": 1
    });
    assert_eq!(
        spec.check(&address, &good_address, "$"),
        Vec::<String>::new()
    );
    for verification in [
        json!({"object": "verification_admin", "status": "pending", "strategy": "admin",
               "attempts": null, "expire_at": null}),
        json!({"object": "verification_nope", "status": "verified", "strategy": "admin",
               "attempts": null, "expire_at": null}),
        json!({"object": "verification_ticket", "status": "verified", "strategy": "ticket"}),
    ] {
        let mut bad = good_address.clone();
        bad["verification"] = verification;
        assert!(!spec.check(&address, &bad, "$").is_empty(), "{bad}");
    }
    let errors = spec.schema("ClerkErrors");
    assert!(!spec
        .check(
            &errors,
            &json!({"errors": [{"message": "m", "code": "c"}]}),
            "$"
        )
        .is_empty());
}

#[tokio::test]
async fn answers_conform_to_the_spec() {
    let spec = Spec::load();
    let invitation_schema = spec.schema("Invitation");
    let errors_schema = spec.schema("ClerkErrors");
    // The operations' responses point at the schemas we check against.
    let create_ok = spec.response_schema("/invitations", "post", "200");
    let list_ok = spec.response_schema("/invitations", "get", "200");
    let bulk_ok = spec.response_schema("/invitations/bulk", "post", "200");
    let revoke_ok = spec.response_schema("/invitations/{invitation_id}/revoke", "post", "200");
    assert_eq!(
        create_ok,
        json!({"$ref": "#/components/schemas/Invitation"})
    );
    assert_eq!(list_ok["type"], "array");
    assert_eq!(bulk_ok["type"], "array");
    assert!(revoke_ok["allOf"].is_array());

    let h = RawSim::start().await;
    h.sim.seed_users(&["user@example.com"]);

    let created = h
        .create_with(
            json!({"email_address": "c@example.com", "public_metadata": {"a": [1, {"b": null}]}}),
        )
        .await;
    spec.assert_conforms(&create_ok, &created, "create");
    let bulk = h
        .bulk(json!([{"email_address": "b1@example.com"}, {"email_address": "b2@example.com"}]))
        .await
        .ok()
        .clone();
    spec.assert_conforms(&bulk_ok, &bulk, "bulk");
    let accepted = id_of(&bulk[0]);
    assert!(h.sim.accept(&accepted));
    let expired = h.create("e@example.com").await;
    assert!(h.sim.expire(&id_of(&expired)));

    let revoked = h.revoke(&id_of(&bulk[1])).await.ok().clone();
    spec.assert_conforms(&revoke_ok, &revoked, "revoke");
    assert_eq!(revoked["revoked"], true);
    assert_eq!(revoked["status"], "revoked");

    let bare = h.list("limit=500").await.ok().clone();
    assert_eq!(bare.as_array().map(Vec::len), Some(3));
    spec.assert_conforms(&list_ok, &bare, "list");
    for status in ["pending", "accepted", "revoked", "expired"] {
        let one = h.list(&format!("status={status}")).await.ok().clone();
        assert_eq!(one.as_array().map(Vec::len), Some(1), "{status}");
        spec.assert_conforms(&list_ok, &one, status);
    }
    // The paginated wrapper is not in the spec; its items are Invitations.
    let page_schema = json!({
        "type": "object", "additionalProperties": false, "required": ["data", "total_count"],
        "properties": {"data": {"type": "array", "items": invitation_schema}, "total_count": {"type": "integer"}}
    });
    let page = h
        .list("paginated=true&status=revoked&status=pending")
        .await
        .ok()
        .clone();
    spec.assert_conforms(&page_schema, &page, "paginated list");
    spec.assert_conforms(
        &invitation_schema,
        &h.control_get("/invitations").await.ok()[0],
        "control list",
    );

    // Every kind of error answer is a ClerkErrors.
    let error_400 = spec.response_schema("/invitations", "post", "400");
    let error_422 = spec.response_schema("/invitations", "post", "422");
    let error_404 = spec.response_schema("/invitations/{invitation_id}/revoke", "post", "404");
    for schema in [&error_400, &error_422, &error_404] {
        assert_eq!(schema, &json!({"$ref": "#/components/schemas/ClerkErrors"}));
    }
    let mut errors = vec![
        h.send(h.http.get(h.v1("/invitations"))).await,
        h.post_text("/invitations", "{").await,
        h.post(
            "/invitations",
            &json!({"email_address": "x@example.com", "x": 1}),
        )
        .await,
        h.post("/invitations", &json!({})).await,
        h.post("/invitations", &json!({"email_address": 1})).await,
        h.post("/invitations", &json!({"email_address": "bad"}))
            .await,
        h.post(
            "/invitations",
            &json!({"email_address": "x@example.com", "expires_in_days": 0}),
        )
        .await,
        h.post(
            "/invitations",
            &json!({"email_address": "x@example.com", "template_slug": "x"}),
        )
        .await,
        h.post(
            "/invitations",
            &json!({"email_address": "user@example.com"}),
        )
        .await,
        h.post("/invitations", &json!({"email_address": "c@example.com"}))
            .await,
        h.bulk(json!([])).await,
        h.bulk(json!((0..11)
            .map(|i| json!({"email_address": format!("{i}@example.com")}))
            .collect::<Vec<_>>()))
            .await,
        h.revoke("inv_missing").await,
        h.revoke(&id_of(&bulk[1])).await,
        h.revoke(&accepted).await,
        h.list("limit=0").await,
    ];
    h.sim.inject_fault(Fault::new(
        Operation::ListInvitations,
        1,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    errors.push(h.list("").await);
    let statuses: Vec<u16> = errors.iter().map(|reply| reply.status).collect();
    assert_eq!(
        statuses,
        [401, 400, 422, 422, 422, 422, 422, 422, 422, 400, 422, 400, 404, 400, 400, 422, 503]
    );

    let limited = RawSim::with(SimOptions {
        secret_key: "sk_live_x".to_owned(),
        ..SimOptions::default()
    })
    .await;
    for _ in 0..25 {
        limited.bulk(json!([])).await;
    }
    errors.push(limited.bulk(json!([])).await);
    assert_eq!(errors.last().map(|reply| reply.status), Some(429));

    for reply in &errors {
        spec.assert_conforms(
            &errors_schema,
            &reply.body,
            &format!("error {}", reply.status),
        );
        let first = &reply.body["errors"][0];
        assert!(first["code"].as_str().is_some_and(|code| !code.is_empty()));
        assert!(first["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(first["long_message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(
            reply.header("clerk-trace-id"),
            reply.body["clerk_trace_id"].as_str()
        );
    }
}

// ---------------------------------------------------------------------------
// Users: GET /users, GET and DELETE /users/{id}, the control calls, webhooks

/// A query string naming each address once as `email_address`.
fn email_query(emails: &[&str]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for email in emails {
        query.append_pair("email_address", email);
    }
    query.finish()
}

fn user_emails(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of users")
        .iter()
        .map(|user| {
            user["email_addresses"][0]["email_address"]
                .as_str()
                .expect("an email")
                .to_owned()
        })
        .collect()
}

impl RawSim {
    async fn users(&self, query: &str) -> Reply {
        self.get(&format!("/users?{query}")).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        self.send(self.auth(self.http.delete(self.v1(path)))).await
    }

    /// Create users through the control API; their ids, in order.
    async fn seed(&self, emails: &[&str]) -> Vec<String> {
        let reply = self
            .control_post("/users", Some(json!({ "email_addresses": emails })))
            .await;
        reply.ok()["users"]
            .as_array()
            .expect("the users")
            .iter()
            .map(id_of)
            .collect()
    }
}

#[tokio::test]
async fn users_are_found_by_email_case_insensitively() {
    let h = RawSim::start().await;
    let ids = h
        .seed(&["Ada@Example.com", "bob@example.com", "carol@example.com"])
        .await;
    assert!(ids
        .iter()
        .all(|id| id.starts_with("user_") && id.len() > 10));

    let found = h
        .users(&email_query(&[
            "ada@EXAMPLE.com",
            "CAROL@example.com",
            "nobody@example.com",
        ]))
        .await
        .ok()
        .clone();
    // Newest first by default; each address as it was created.
    assert_eq!(
        user_emails(&found),
        ["carol@example.com", "Ada@Example.com"]
    );
    assert_eq!(found[1]["id"], ids[0].as_str());
    assert_eq!(
        found[1]["primary_email_address_id"],
        found[1]["email_addresses"][0]["id"]
    );
    // No filter: every user (up to the limit).
    assert_eq!(user_emails(h.users("").await.ok()).len(), 3);
    // An address nobody has finds nothing, not everyone.
    assert_eq!(
        h.users(&email_query(&["x@example.com"])).await.ok(),
        &json!([])
    );
    // A repeated address finds its user once.
    let twice = h
        .users(&email_query(&["bob@example.com", "BOB@example.com"]))
        .await;
    assert_eq!(user_emails(twice.ok()), ["bob@example.com"]);
    // Other filters narrow the same way.
    let by_id = h.users(&format!("user_id={}", ids[1])).await;
    assert_eq!(user_emails(by_id.ok()), ["bob@example.com"]);
    let partial = h.users("email_address_query=AROL").await;
    assert_eq!(user_emails(partial.ok()), ["carol@example.com"]);
}

#[tokio::test]
async fn users_lookup_takes_at_most_100_addresses() {
    let h = RawSim::with(no_limits()).await;
    let addresses: Vec<String> = (0..101).map(|i| format!("u{i}@example.com")).collect();
    let seeded: Vec<&str> = addresses.iter().map(String::as_str).collect();
    h.seed(&seeded).await;

    let hundred = h
        .users(&format!("{}&limit=500", email_query(&seeded[..100])))
        .await;
    assert_eq!(hundred.ok().as_array().map(Vec::len), Some(100));
    let refused = h
        .users(&format!("{}&limit=500", email_query(&seeded)))
        .await;
    let error = refused.param_error(422, "form_param_value_invalid", "email_address");
    assert!(error["long_message"]
        .as_str()
        .is_some_and(|m| m.contains("100")));
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::ListUsers, 200), 1);
    assert_eq!(stats.count(Operation::ListUsers, 422), 1);
    assert_eq!(
        stats.user_lookup_addresses, 100,
        "refused calls look nobody up"
    );
}

#[tokio::test]
async fn users_list_pages_orders_and_rejects_bad_parameters() {
    let h = RawSim::start().await;
    let emails: Vec<String> = (0..15).map(|i| format!("p{i:02}@example.com")).collect();
    // Created in reverse alphabetical order, so creation and email order differ.
    let reversed: Vec<&str> = emails.iter().rev().map(String::as_str).collect();
    let ids = h.seed(&reversed).await;

    let first = h.users("").await.ok().clone();
    assert_eq!(
        first.as_array().map(Vec::len),
        Some(10),
        "limit defaults to 10"
    );
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(self::ids(&first), newest_first[..10]);
    let second = h.users("offset=10").await.ok().clone();
    assert_eq!(self::ids(&second), newest_first[10..]);
    assert_eq!(h.users("offset=15").await.ok(), &json!([]));
    let oldest = h.users("order_by=created_at&limit=3&offset=1").await;
    assert_eq!(self::ids(oldest.ok()), ids[1..4]);
    let by_email = h.users("order_by=email_address&limit=500").await;
    assert_eq!(user_emails(by_email.ok()), emails);
    let by_email_desc = h
        .users("order_by=-email_address&order_by=created_at&limit=2")
        .await;
    assert_eq!(
        user_emails(by_email_desc.ok()),
        ["p14@example.com", "p13@example.com"]
    );
    let after = h
        .users(&format!(
            "order_by=%2Bcreated_at&starting_after={}&limit=2",
            ids[4]
        ))
        .await;
    assert_eq!(self::ids(after.ok()), ids[5..7]);

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("order_by=shoe_size", "order_by"),
        ("starting_after=user_nope", "starting_after"),
        (
            "starting_after=user_x&order_by=email_address",
            "starting_after",
        ),
        ("starting_after=user_x&offset=2", "starting_after"),
    ] {
        h.users(query)
            .await
            .param_error(422, "form_param_value_invalid", param);
    }
}

#[tokio::test]
async fn a_user_is_read_and_deleted_by_id_and_its_address_is_free_again() {
    let h = RawSim::start().await;
    let id = h.seed(&["gone@example.com"]).await.remove(0);
    h.post(
        "/invitations",
        &json!({"email_address": "gone@example.com"}),
    )
    .await
    .error(422, "form_identifier_exists");

    let user = h.get(&format!("/users/{id}")).await.ok().clone();
    assert_eq!(user["id"], id.as_str());
    assert_eq!(
        h.users(&email_query(&["gone@example.com"])).await.ok()[0],
        user
    );
    let deleted = h.delete(&format!("/users/{id}")).await.ok().clone();
    assert_eq!(
        deleted,
        json!({"object": "user", "id": id, "deleted": true})
    );

    h.get(&format!("/users/{id}"))
        .await
        .error(404, "resource_not_found");
    h.delete(&format!("/users/{id}"))
        .await
        .error(404, "resource_not_found");
    assert_eq!(
        h.users(&email_query(&["gone@example.com"])).await.ok(),
        &json!([])
    );
    h.create("gone@example.com").await;
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::GetUser, 200), 1);
    assert_eq!(stats.count(Operation::GetUser, 404), 1);
    assert_eq!(stats.count(Operation::DeleteUser, 200), 1);
    assert_eq!(stats.count(Operation::DeleteUser, 404), 1);
    // A user made again for the address is a new user with a new id.
    let again = h.sim.create_user("GONE@example.com");
    assert_ne!(again.id, id);
}

#[tokio::test]
async fn control_api_creates_lists_and_deletes_users_with_their_ids() {
    let h = RawSim::start().await;
    let first = h
        .control_post(
            "/users",
            Some(json!({"email_addresses": ["c1@example.com", "C2@example.com"]})),
        )
        .await
        .ok()
        .clone();
    assert_eq!(
        first["email_addresses"],
        json!(["c1@example.com", "C2@example.com"])
    );
    let ids = self::ids(&first["users"]);
    assert_eq!(first["created"], json!(ids));
    assert_eq!(
        user_emails(&first["users"]),
        ["c1@example.com", "C2@example.com"]
    );

    // An address that is a user already keeps its user; nothing is created.
    let again = h
        .control_post(
            "/users",
            Some(json!({"email_addresses": ["c2@example.com"]})),
        )
        .await
        .ok()
        .clone();
    assert_eq!(self::ids(&again["users"]), ids[1..]);
    assert_eq!(again["created"], json!([]));
    h.control_post("/users", Some(json!({"email_addresses": ["no-at-sign"]})))
        .await
        .param_error(422, "form_param_format_invalid", "email_addresses");

    let listed = h.control_get("/users").await.ok().clone();
    assert_eq!(self::ids(&listed), ids);
    let typed: Vec<String> = h.sim.users().into_iter().map(|u| u.id).collect();
    assert_eq!(typed, ids);

    let deleted = h
        .send(h.http.delete(h.control(&format!("/users/{}", ids[0]))))
        .await;
    assert_eq!(deleted.ok()["deleted"], true);
    let missing = h
        .send(h.http.delete(h.control(&format!("/users/{}", ids[0]))))
        .await;
    missing.error(404, "resource_not_found");
    assert!(!h.sim.delete_user(&ids[0]));
    assert!(h.sim.delete_user(&ids[1]));
    assert!(h.sim.users().is_empty());
    // Control calls are not Clerk calls: nothing counted.
    assert_eq!(h.sim.stats(), SimStats::default());
    h.create("c1@example.com").await;
    h.create("c2@example.com").await;
}

#[tokio::test]
async fn an_accepted_invitation_becomes_a_ticket_verified_user_with_its_metadata() {
    let h = RawSim::start().await;
    let invitation = h
        .create_with(
            json!({"email_address": "Joiner@example.com", "public_metadata": {"team": "ops"}}),
        )
        .await;
    assert!(h.sim.accept(&id_of(&invitation)));
    let users = h
        .users(&email_query(&["joiner@example.com"]))
        .await
        .ok()
        .clone();
    assert_eq!(user_emails(&users), ["Joiner@example.com"]);
    assert_eq!(users[0]["public_metadata"], json!({"team": "ops"}));
    assert_eq!(
        users[0]["email_addresses"][0]["verification"]["strategy"],
        "ticket"
    );
}

#[tokio::test]
async fn user_lookups_count_against_the_request_limit_but_not_the_create_limits() {
    let h = RawSim::start().await;
    for _ in 0..99 {
        h.users(&email_query(&["a@example.com", "b@example.com"]))
            .await
            .ok();
    }
    h.create("one@example.com").await;
    let limited = h.users(&email_query(&["a@example.com"])).await;
    limited.error(429, "too_many_requests");
    assert!(limited.header("retry-after").is_some());
    let stats = h.sim.stats();
    assert_eq!(stats.count(Operation::ListUsers, 200), 99);
    assert_eq!(stats.count(Operation::ListUsers, 429), 1);
    assert_eq!(stats.user_lookup_addresses, 198);
    assert_eq!(stats.total(Operation::ListInvitations), 0);
    let json = serde_json::to_value(&stats).expect("json");
    assert_eq!(json["list_users"], json!({"200": 99, "429": 1}));
    assert_eq!(json["user_lookup_addresses"], 198);

    // With the production limit, lookups leave all 100 hourly single creates free.
    let live = RawSim::with(live_key()).await;
    for _ in 0..150 {
        live.users(&email_query(&["x@example.com"])).await.ok();
    }
    for n in 0..100 {
        live.create(&format!("live{n}@example.com")).await;
    }
    live.post(
        "/invitations",
        &json!({"email_address": "over@example.com"}),
    )
    .await
    .error(429, "too_many_requests");
}

#[tokio::test]
async fn user_answers_conform_to_the_spec() {
    let spec = Spec::load();
    let list_ok = spec.response_schema("/users", "get", "200");
    assert_eq!(
        list_ok,
        json!({"type": "array", "items": {"$ref": "#/components/schemas/User"}})
    );
    let get_ok = spec.response_schema("/users/{user_id}", "get", "200");
    assert_eq!(get_ok, json!({"$ref": "#/components/schemas/User"}));
    let delete_ok = spec.response_schema("/users/{user_id}", "delete", "200");
    assert_eq!(
        delete_ok,
        json!({"$ref": "#/components/schemas/DeletedObject"})
    );

    let h = RawSim::start().await;
    h.seed(&["admin@example.com"]).await;
    let invitation = h
        .create_with(json!({"email_address": "ticket@example.com", "public_metadata": {"a": [1]}}))
        .await;
    assert!(h.sim.accept(&id_of(&invitation)));
    let users = h.users("limit=500").await.ok().clone();
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    spec.assert_conforms(&list_ok, &users, "user list");
    let id = id_of(&users[0]);
    let user = h.get(&format!("/users/{id}")).await.ok().clone();
    spec.assert_conforms(&get_ok, &user, "user");
    spec.assert_conforms(
        &list_ok,
        &h.control_get("/users").await.ok().clone(),
        "control users",
    );
    let deleted = h.delete(&format!("/users/{id}")).await.ok().clone();
    spec.assert_conforms(&delete_ok, &deleted, "deleted user");

    let errors = [
        (
            spec.response_schema("/users", "get", "422"),
            h.users("limit=0").await,
        ),
        (
            spec.response_schema("/users", "get", "401"),
            h.send(h.http.get(h.v1("/users"))).await,
        ),
        (
            spec.response_schema("/users/{user_id}", "get", "404"),
            h.get(&format!("/users/{id}")).await,
        ),
        (
            spec.response_schema("/users/{user_id}", "delete", "404"),
            h.delete(&format!("/users/{id}")).await,
        ),
    ];
    for (schema, reply) in &errors {
        spec.assert_conforms(schema, &reply.body, &format!("error {}", reply.status));
    }
    let statuses: Vec<u16> = errors.iter().map(|(_, reply)| reply.status).collect();
    assert_eq!(statuses, [422, 401, 404, 404]);
}

// --- Webhooks

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One delivery as the receiver saw it.
pub(crate) struct Received {
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }
}

/// A webhook endpoint on its own port: every delivery is passed on; the first `fail`
/// are answered 500, and while `hold` has no permit each answer waits for one.
pub(crate) struct Receiver {
    url: String,
    deliveries: tokio::sync::mpsc::UnboundedReceiver<Received>,
    hold: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Receiver {
    pub(crate) async fn start(fail: u32, held: bool) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let (sender, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let failures = Arc::new(AtomicU32::new(fail));
        let hold = Arc::new(tokio::sync::Semaphore::new(if held {
            0
        } else {
            tokio::sync::Semaphore::MAX_PERMITS
        }));
        let gate = Arc::clone(&hold);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let sender = sender.clone();
                    let failures = Arc::clone(&failures);
                    let gate = Arc::clone(&gate);
                    async move {
                        let _ = sender.send(Received { headers, body });
                        if let Ok(permit) = gate.acquire().await {
                            permit.forget();
                        }
                        let failing = failures
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if failing {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            axum::http::StatusCode::NO_CONTENT
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            deliveries,
            hold,
        }
    }

    pub(crate) async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.deliveries.recv())
            .await
            .expect("a delivery within 10 s")
            .expect("the receiver is running")
    }

    pub(crate) fn nothing_more(&mut self) -> bool {
        self.deliveries.try_recv().is_err()
    }
}

pub(crate) async fn sim_delivering_to(receiver: &Receiver) -> RawSim {
    let target =
        sim::WebhookTarget::new(&receiver.url, WEBHOOK_SECRET).expect("a valid webhook target");
    RawSim::with(SimOptions::default().with_webhook(target)).await
}

/// Verify a delivery with the project's own verifier and return its payload.
pub(crate) fn verified(delivery: &Received) -> Value {
    use invite_sync::webhook_signature::{Scheme, Verifier, VerifyError};
    let now = chrono::Utc::now().timestamp();
    let verifier = Verifier::new(&[WEBHOOK_SECRET]).expect("the secret is valid");
    let checked = verifier
        .verify(Scheme::Svix, &delivery.headers, &delivery.body, now)
        .expect("a valid Svix signature");
    assert_eq!(checked.id, delivery.header("svix-id"));
    assert!(checked.id.starts_with("msg_"));
    let other = Verifier::new(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]).expect("valid");
    assert_eq!(
        other.verify(Scheme::Svix, &delivery.headers, &delivery.body, now),
        Err(VerifyError::Mismatch)
    );
    let payload = delivery.json();
    assert_eq!(payload["object"], "event");
    assert!(payload["instance_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("ins_")));
    let timestamp = payload["timestamp"].as_i64().expect("a timestamp");
    assert!(
        (timestamp - chrono_ms()).abs() < 60_000,
        "milliseconds, now"
    );
    payload
}

#[tokio::test]
async fn user_webhooks_are_svix_signed_for_created_and_deleted() {
    let spec = Spec::load();
    let user_schema = spec.schema("User");
    let mut receiver = Receiver::start(0, false).await;
    let h = sim_delivering_to(&receiver).await;

    // Created through the control API.
    let seeded = h.seed(&["hooked@example.com"]).await.remove(0);
    let created = verified(&receiver.next().await);
    assert_eq!(created["type"], "user.created");
    assert_eq!(created["data"]["id"], seeded.as_str());
    spec.assert_conforms(&user_schema, &created["data"], "user.created data");
    assert_eq!(
        created["data"]["email_addresses"][0]["email_address"],
        "hooked@example.com"
    );

    // Created by accepting an invitation.
    let invitation = h.create("joined@example.com").await;
    assert!(h.sim.accept(&id_of(&invitation)));
    let joined = verified(&receiver.next().await);
    assert_eq!(joined["type"], "user.created");
    spec.assert_conforms(&user_schema, &joined["data"], "user.created data");
    let joined_id = id_of(&joined["data"]);
    assert_eq!(
        h.users(&email_query(&["joined@example.com"])).await.ok()[0]["id"],
        joined_id.as_str()
    );

    // Deleted through Clerk's API, then through the control API.
    h.delete(&format!("/users/{seeded}")).await.ok();
    let deleted = verified(&receiver.next().await);
    assert_eq!(deleted["type"], "user.deleted");
    assert_eq!(
        deleted["data"],
        json!({"deleted": true, "id": seeded, "object": "user"})
    );
    assert!(h.sim.delete_user(&joined_id));
    let deleted = verified(&receiver.next().await);
    assert_eq!(deleted["type"], "user.deleted");
    assert_eq!(deleted["data"]["id"], joined_id.as_str());

    assert!(h.sim.webhooks_settled(Duration::from_secs(10)).await);
    assert!(receiver.nothing_more());
    let stats = h.control_get("/stats").await.ok().clone();
    assert_eq!(
        stats["webhooks"],
        json!({"raised": 4, "delivered": {"user.created": 2, "user.deleted": 2},
               "failed_attempts": 0, "abandoned": 0})
    );
    // Re-seeding an existing user raises nothing.
    h.seed(&["joined@example.com"]).await;
    assert!(h.sim.webhooks_settled(Duration::from_secs(10)).await);
    assert_eq!(h.sim.stats().webhooks.raised, 5);
}

#[tokio::test]
async fn a_failed_webhook_is_retried_with_the_same_id_and_never_holds_an_answer() {
    let mut receiver = Receiver::start(1, true).await;
    let h = sim_delivering_to(&receiver).await;

    // The answer comes back while the delivery is still held by the receiver.
    let id = h.seed(&["retry@example.com"]).await.remove(0);
    let first = receiver.next().await;
    assert_eq!(h.sim.stats().webhooks.delivered_total(), 0);
    assert!(!h.sim.webhooks_settled(Duration::from_millis(1)).await);
    receiver
        .hold
        .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);

    // The first attempt was answered 500: the same message comes again.
    let second = receiver.next().await;
    assert_eq!(first.header("svix-id"), second.header("svix-id"));
    assert_eq!(first.body, second.body);
    assert_eq!(verified(&second)["data"]["id"], id.as_str());
    assert!(h.sim.webhooks_settled(Duration::from_secs(10)).await);
    let webhooks = h.sim.stats().webhooks;
    assert_eq!(webhooks.failed_attempts, 1);
    assert_eq!(webhooks.delivered("user.created"), 1);
    assert_eq!(webhooks.abandoned, 0);
}

#[test]
fn a_webhook_target_needs_an_http_url_and_a_whsec_secret_and_hides_it() {
    let target = sim::WebhookTarget::new("http://127.0.0.1:9/hook", WEBHOOK_SECRET).expect("valid");
    let debug = format!(
        "{target:?} {:?}",
        SimOptions::default().with_webhook(target.clone())
    );
    assert!(
        !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{debug}"
    );
    assert!(debug.contains("127.0.0.1:9"), "{debug}");
    for (url, secret, error) in [
        ("not a url", WEBHOOK_SECRET, sim::WebhookTargetError::Url),
        (
            "ftp://x.example/hook",
            WEBHOOK_SECRET,
            sim::WebhookTargetError::Url,
        ),
        (
            "http://x.example/hook",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            sim::WebhookTargetError::Secret,
        ),
        (
            "http://x.example/hook",
            "whsec_not*base64",
            sim::WebhookTargetError::Secret,
        ),
        (
            "http://x.example/hook",
            "whsec_",
            sim::WebhookTargetError::Secret,
        ),
    ] {
        let refused = sim::WebhookTarget::new(url, secret).expect_err(url);
        assert_eq!(refused, error);
        assert!(!refused.to_string().contains("not*base64"), "{refused}");
    }
}

#[tokio::test]
async fn without_a_webhook_target_nothing_is_raised() {
    let h = RawSim::start().await;
    let id = h.seed(&["quiet@example.com"]).await.remove(0);
    assert!(h.sim.delete_user(&id));
    assert!(h.sim.webhooks_settled(Duration::from_millis(1)).await);
    assert_eq!(h.sim.stats().webhooks, sim::WebhookStats::default());
    assert!(h.control_get("/stats").await.ok().get("webhooks").is_none());
}
