//! The SCIM endpoint against hostile and careless clients: every handler answers non-ASCII,
//! NUL, over-long and malformed input with a 4xx SCIM error that says what is wrong, and the
//! service stays up; no request holds a runtime worker long enough to stall the probes, nor
//! reads more users than its page; a request without the token never waits for its body.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{content_type, Harness, Service};

const TOKEN: &str = "scim-token-0123456789abcdef";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

async fn harness() -> Harness {
    Harness::serving(&[("INVITE_SYNC__SCIM__TOKEN", TOKEN)]).await
}

/// One SCIM request with a raw body; the status, the content type and the body as JSON
/// (`Null` when empty or not JSON).
async fn send(
    service: &Service,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (StatusCode, String, Value) {
    let mut request = service
        .client
        .request(method.clone(), service.url(&format!("/scim/v2{path}")))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request
            .header(CONTENT_TYPE, "application/scim+json")
            .body(body);
    }
    let short: String = path.chars().take(80).collect();
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {short}: no answer: {e}"));
    let status = response.status();
    let content_type = content_type(&response);
    let text = response.text().await.unwrap_or_default();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn patch(operations: Value) -> String {
    json!({"schemas": [PATCH_OP], "Operations": operations}).to_string()
}

/// Letters that do not repeat, so that PostgreSQL cannot compress them into an index entry.
fn random_text(chars: usize) -> String {
    (0..chars)
        .map(|i| {
            let n = (i as u64)
                .wrapping_mul(6_364_136_223_846_793_005)
                .rotate_left(17)
                % 52;
            char::from(if n < 26 {
                b'a' + n as u8
            } else {
                b'A' + (n - 26) as u8
            })
        })
        .collect()
}

async fn create(service: &Service, user: Value) -> String {
    let (status, _, body) = send(service, Method::POST, "/Users", Some(user.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("an id").to_owned()
}

async fn assert_healthy(service: &Service) {
    let health = service.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    let (status, _, body) = send(service, Method::GET, "/Users?count=1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_handler_answers_hostile_input_with_a_scim_error_naming_the_problem_and_stays_up() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let id = create(
        &service,
        json!({"schemas": [USER], "userName": "ann@example.com"}),
    )
    .await;
    let user = format!("/Users/{id}");
    let long = random_text(3000);
    let longer = random_text(10_000);
    let nul_user = r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a\u0000b@example.com"}"#;
    let nul_nick = r#"{"userName": "nick@example.com", "nickName": "a\u0000b"}"#;
    let huge_filter = vec![r#"title pr"#; 600].join(" and ");
    let emails: Vec<Value> = (0..101)
        .map(|i| json!({"value": format!("e{i}@example.com")}))
        .collect();
    let operations: Vec<Value> = (0..101)
        .map(|i| json!({"op": "replace", "path": "displayName", "value": format!("d{i}")}))
        .collect();

    // (method, path, body, status, scimType, words the detail holds)
    type Case = (
        Method,
        String,
        Option<String>,
        u16,
        Option<&'static str>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        // Non-ASCII attribute names and paths.
        (
            Method::POST,
            "/Users".into(),
            Some(r#"{"userName": "b@example.com", "abcé": 1}"#.into()),
            400,
            Some("invalidSyntax"),
            vec!["abcé", "attribute name"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(r#"{"userName": "b@example.com", "a\n{\"level\":\"ERROR\"}": 1}"#.into()),
            400,
            Some("invalidSyntax"),
            vec!["attribute name"],
        ),
        (
            Method::PUT,
            user.clone(),
            Some(r#"{"userName": "ann@example.com", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"départment": "x"}}"#.into()),
            400,
            Some("invalidSyntax"),
            vec!["départment"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([{"op": "add", "path": "abcé", "value": 1}]))),
            400,
            Some("invalidPath"),
            vec!["abcé"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:Useré", "value": 1}]))),
            400,
            Some("invalidPath"),
            vec!["Useré"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([{"op": "add", "value": {"abcé": 1}}]))),
            400,
            Some("invalidPath"),
            vec!["abcé"],
        ),
        (
            Method::GET,
            "/Users?attributes=abc%C3%A9".into(),
            None,
            400,
            Some("invalidValue"),
            vec!["attributes", "abcé"],
        ),
        (
            Method::GET,
            format!("{user}?excludedAttributes=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9"),
            None,
            400,
            Some("invalidValue"),
            vec!["excludedAttributes"],
        ),
        (
            Method::POST,
            "/Users/.search".into(),
            Some(json!({"schemas": [SEARCH], "attributes": ["abcé"]}).to_string()),
            400,
            Some("invalidValue"),
            vec!["abcé"],
        ),
        (
            Method::GET,
            "/Users?filter=abc%C3%A9%20eq%20%22x%22".into(),
            None,
            400,
            Some("invalidFilter"),
            vec!["é"],
        ),
        // Over-long values: refused before the database, by name and limit.
        (
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": long}).to_string()),
            400,
            Some("invalidValue"),
            vec!["userName", "characters"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": longer}).to_string()),
            400,
            Some("invalidValue"),
            vec!["userName", "2048"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": "c@example.com", "externalId": random_text(1000)}).to_string()),
            400,
            Some("invalidValue"),
            vec!["externalId", "256"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([{"op": "replace", "path": "userName", "value": random_text(300)}]))),
            400,
            Some("invalidValue"),
            vec!["userName", "256"],
        ),
        // NUL, which PostgreSQL cannot store.
        (
            Method::POST,
            "/Users".into(),
            Some(nul_user.into()),
            400,
            Some("invalidValue"),
            vec!["userName", "NUL"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(nul_nick.into()),
            400,
            Some("invalidValue"),
            vec!["nickName", "NUL"],
        ),
        (
            Method::PUT,
            user.clone(),
            Some(nul_nick.into()),
            400,
            Some("invalidValue"),
            vec!["nickName", "NUL"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(patch(json!([{"op": "replace", "path": "nickName", "value": "a\u{0}b"}]))),
            400,
            Some("invalidValue"),
            vec!["nickName", "NUL"],
        ),
        (
            Method::GET,
            "/Users?filter=userName%20eq%20%22a%5Cu0000b%22".into(),
            None,
            400,
            Some("invalidValue"),
            vec!["userName", "NUL"],
        ),
        (
            Method::POST,
            "/.search".into(),
            Some(
                json!({"schemas": [SEARCH], "filter": "externalId eq \"a\\u0000\""}).to_string(),
            ),
            400,
            Some("invalidValue"),
            vec!["externalId", "NUL"],
        ),
        // Limits of PATCH and of multi-valued attributes.
        (
            Method::PATCH,
            user.clone(),
            Some(patch(Value::Array(operations))),
            400,
            Some("tooMany"),
            vec!["100", "operations"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": "d@example.com", "emails": emails}).to_string()),
            400,
            Some("invalidValue"),
            vec!["emails", "100"],
        ),
        // Malformed bodies, wrong types, odd paths and parameters.
        (
            Method::POST,
            "/Users".into(),
            Some("{\"userName\": ".into()),
            400,
            Some("invalidSyntax"),
            vec!["JSON"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some("[1, 2".into()),
            400,
            Some("invalidSyntax"),
            vec!["JSON"],
        ),
        (
            Method::PUT,
            user.clone(),
            Some("\"a string\"".into()),
            400,
            Some("invalidSyntax"),
            vec!["object"],
        ),
        (
            Method::POST,
            "/Users/.search".into(),
            Some("not json".into()),
            400,
            Some("invalidSyntax"),
            vec!["JSON"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": 5}).to_string()),
            400,
            Some("invalidValue"),
            vec!["userName"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": "e@example.com", "emails": [5]}).to_string()),
            400,
            Some("invalidValue"),
            vec!["emails"],
        ),
        (
            Method::PATCH,
            user.clone(),
            Some(json!({"schemas": [PATCH_OP], "Operations": "replace"}).to_string()),
            400,
            Some("invalidSyntax"),
            vec!["Operations"],
        ),
        (
            Method::GET,
            format!("/Users?filter={huge_filter}"),
            None,
            400,
            Some("invalidFilter"),
            vec!["terms"],
        ),
        (
            Method::GET,
            "/Users?count=abc".into(),
            None,
            400,
            Some("invalidValue"),
            vec!["count"],
        ),
        (
            Method::GET,
            "/Users?startIndex=-99999999999999999999999".into(),
            None,
            400,
            Some("invalidValue"),
            vec!["startIndex"],
        ),
        (
            Method::POST,
            "/Users".into(),
            Some(format!(
                r#"{{"userName": "f@example.com", "nickName": "{}"}}"#,
                "n".repeat(1024 * 1024)
            )),
            413,
            None,
            vec!["bytes"],
        ),
        (Method::GET, "/Users/%FF".into(), None, 404, None, vec!["id"]),
        (
            Method::DELETE,
            "/Users/no-such-user%C3%A9".into(),
            None,
            404,
            None,
            vec!["no user"],
        ),
        (
            Method::GET,
            "/ResourceTypes/%C3%A9".into(),
            None,
            404,
            None,
            vec!["resource type"],
        ),
        (
            Method::GET,
            "/Schemas/%00".into(),
            None,
            404,
            None,
            vec!["schema"],
        ),
        (Method::GET, "/Schemas/%FF%FE".into(), None, 404, None, vec!["id"]),
        (Method::GET, "/Gröups".into(), None, 404, None, vec!["endpoint"]),
        (
            Method::POST,
            "/ServiceProviderConfig".into(),
            Some("{}".into()),
            405,
            None,
            vec!["method"],
        ),
        (
            Method::DELETE,
            "/ResourceTypes".into(),
            None,
            405,
            None,
            vec!["method"],
        ),
        (Method::PUT, "/Schemas".into(), None, 405, None, vec!["method"]),
        (
            Method::PATCH,
            "/Users".into(),
            Some(patch(json!([]))),
            405,
            None,
            vec!["method"],
        ),
    ];
    for (method, path, body, status, scim_type, words) in cases {
        let short: String = path.chars().take(80).collect();
        let started = Instant::now();
        let (got, content_type, answer) = send(&service, method.clone(), &path, body).await;
        let what = format!("{method} {short}: {got} {answer}");
        assert_eq!(got.as_u16(), status, "{what}");
        assert_eq!(content_type, "application/scim+json", "{what}");
        assert_eq!(answer["schemas"], json!([ERROR]), "{what}");
        assert_eq!(answer["status"], json!(status.to_string()), "{what}");
        assert_eq!(answer["scimType"].as_str(), scim_type, "{what}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        for word in words {
            assert!(detail.contains(word), "{what}: the detail names {word}");
        }
        assert!(
            detail.chars().count() < 400,
            "{what}: the detail quotes too much"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: answered in {:?}",
            started.elapsed()
        );
    }

    // Nothing was written, and the service is up.
    let users: i64 =
        h.db.scalar("SELECT count(*) FROM invite_sync_scim_users")
            .await;
    assert_eq!(users, 1);
    assert_healthy(&service).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_name_clerk_cannot_invite_is_kept_without_a_roster_row() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let id = create(
        &service,
        json!({"schemas": [USER], "userName": "jöe@exämple.com"}),
    )
    .await;
    let (status, _, body) = send(&service, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["userName"], json!("jöe@exämple.com"));
    let rows = h.db.scalar("SELECT count(*) FROM desired_invitees").await;
    assert_eq!(rows, 0, "no roster row for an address Clerk refuses");
    // Its work email, when it has one Clerk takes, is the roster address.
    create(
        &service,
        json!({"schemas": [USER], "userName": "zoë@exämple.com",
               "emails": [{"value": "zoe@example.com", "type": "work"}]}),
    )
    .await;
    let rows = h
        .db
        .scalar("SELECT count(*) FROM desired_invitees WHERE email = 'zoe@example.com' AND source = 'scim'")
        .await;
    assert_eq!(rows, 1);
}

/// The longest `/healthz` took while `work` ran, polled every few milliseconds.
async fn worst_probe_during<F: std::future::Future>(
    service: &Service,
    work: F,
) -> (Duration, F::Output) {
    let url = service.url("/healthz");
    let client = reqwest::Client::new();
    let done = tokio_util::sync::CancellationToken::new();
    let probing = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut answered = 0;
            while !done.is_cancelled() || answered == 0 {
                let started = Instant::now();
                let ok = client
                    .get(&url)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                assert!(ok, "/healthz answered");
                answered += 1;
                worst = worst.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        })
    };
    let output = work.await;
    done.cancel();
    let worst = probing.await.expect("the probe task ends");
    (worst, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_at_the_limits_is_applied_one_above_is_refused_at_once_and_the_probes_answer_throughout(
) {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let emails = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"value": format!("{prefix}{i}@example.com")}))
            .collect()
    };
    let id = create(
        &service,
        json!({"schemas": [USER], "userName": "ann@example.com", "emails": emails("a", 60)}),
    )
    .await;
    let user = format!("/Users/{id}");

    // 10,000 addresses onto the user: refused whole and at once.
    let (worst, (status, _, body, took)) = worst_probe_during(&service, async {
        let started = Instant::now();
        let (status, content_type, body) = send(
            &service,
            Method::PATCH,
            &user,
            Some(patch(
                json!([{"op": "add", "path": "emails", "value": emails("b", 10_000)}]),
            )),
        )
        .await;
        (status, content_type, body, started.elapsed())
    })
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["scimType"], json!("invalidValue"));
    assert!(took < Duration::from_secs(1), "refused in {took:?}");
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");

    // Adding 40 to 60 reaches the limit of 100; 100 operations is the most a PATCH holds.
    let mut operations = vec![json!({"op": "add", "path": "emails", "value": emails("c", 40)})];
    operations.extend(
        (1..100).map(|i| json!({"op": "replace", "path": "displayName", "value": format!("d{i}")})),
    );
    let (worst, (status, _, body)) = worst_probe_during(
        &service,
        send(
            &service,
            Method::PATCH,
            &user,
            Some(patch(Value::Array(operations))),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["emails"].as_array().map(Vec::len), Some(100));
    assert_eq!(body["displayName"], json!("d99"));
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");

    // One more address is one too many, whichever way it comes.
    let (status, _, body) = send(
        &service,
        Method::PATCH,
        &user,
        Some(patch(json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "z@example.com"}]))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("100"),
        "{body}"
    );

    // ServiceProviderConfig announces the limit of operations and of the body.
    let (status, _, config) = send(&service, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["bulk"]["maxOperations"], json!(100));
    assert_eq!(config["bulk"]["maxPayloadSize"], json!(1024 * 1024));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_token_are_refused_before_their_body_and_never_hold_up_one_with_it() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    create(
        &service,
        json!({"schemas": [USER], "userName": "ann@example.com"}),
    )
    .await;
    // 40 clients send headers without a token and trickle a body that never ends.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(service.addr)
            .await
            .expect("a connection");
        stream
            .write_all(
                b"POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nContent-Type: application/scim+json\r\nContent-Length: 100000\r\n\r\n{\"userName\"",
            )
            .await
            .expect("the headers are sent");
        slow.push(stream);
    }
    let started = Instant::now();
    let (status, _, body) = send(&service, Method::GET, "/Users?count=1", None).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    // Each of them was answered 401 without its body.
    for mut stream in slow {
        let mut answer = vec![0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered without the rest of the body")
            .expect("the answer can be read");
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_reads_its_page_only_and_a_page_of_very_large_users_stops_early() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    // Users as large as a body allows, written before the limits on stored users existed.
    sqlx::query(
        "INSERT INTO invite_sync_scim_users (id, user_name, active, attributes, created_at)
         SELECT gen_random_uuid(), 'u' || i || '@example.com', false,
                jsonb_build_object('userName', 'u' || i || '@example.com',
                                   'nickName', repeat(md5(i::text), 28000)),
                now() + i * interval '1 ms'
         FROM generate_series(1, 20) AS i",
    )
    .execute(&h.db.pool)
    .await
    .expect("the users are written");

    let (status, _, body) = send(&service, Method::GET, "/Users?count=1&startIndex=20", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalResults"], json!(20));
    assert_eq!(body["itemsPerPage"], json!(1));
    assert_eq!(body["Resources"][0]["userName"], json!("u20@example.com"));

    // A page of all 20 would be 18 MB: it stops early, and the rest follows by startIndex.
    for query in [
        "/Users?count=20".to_owned(),
        "/Users?count=20&filter=nickName%20pr".to_owned(),
    ] {
        let mut seen = Vec::new();
        let mut start = 1;
        while start <= 20 {
            let (status, _, body) = send(
                &service,
                Method::GET,
                &format!("{query}&startIndex={start}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{query}");
            assert_eq!(body["totalResults"], json!(20), "{query}");
            let items = body["itemsPerPage"].as_u64().unwrap_or(0) as usize;
            assert!((1..20).contains(&items), "{query}: {items} users in a page");
            let resources = body["Resources"].as_array().cloned().unwrap_or_default();
            assert_eq!(resources.len(), items);
            seen.extend(resources.iter().map(|r| r["userName"].clone()));
            start += items;
        }
        let expected: Vec<Value> = (1..=20)
            .map(|i| json!(format!("u{i}@example.com")))
            .collect();
        assert_eq!(seen, expected, "{query}");
    }
}
