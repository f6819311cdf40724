//! Every HTTP surface but SCIM (tested in scim.rs), fed input a careful client never sends:
//! non-ASCII, NUL, over-long and malformed values, in the path, the headers and the signed
//! bodies. Each is answered with a 4xx whose JSON body names what is wrong, nothing is
//! written, and the service goes on answering.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{content_type, Harness, Service};

const API_TOKEN: &str = "operator-token-0123456789abcdef";
const ROSTER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLERK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Which listener a request goes to.
#[derive(Debug, Clone, Copy)]
enum Listener {
    Main,
    Admin,
}

/// One hostile request and what its answer must be.
struct Case {
    what: &'static str,
    listener: Listener,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    status: StatusCode,
    /// Words the JSON error must hold, ASCII case ignored.
    names: &'static [&'static str],
}

fn case(what: &'static str, method: Method, path: &str, status: StatusCode) -> Case {
    Case {
        what,
        listener: Listener::Main,
        method,
        path: path.to_owned(),
        headers: HeaderMap::new(),
        body: Vec::new(),
        status,
        names: &[],
    }
}

impl Case {
    fn naming(self, names: &'static [&'static str]) -> Case {
        Case { names, ..self }
    }

    fn on_admin(self) -> Case {
        Case {
            listener: Listener::Admin,
            ..self
        }
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Case {
        self.headers.insert(name, value);
        self
    }

    /// A body signed for a webhook (`webhook-` or `svix-` headers) with message id `id`.
    fn signed(mut self, prefix: &str, secret: &str, id: &str, body: Vec<u8>) -> Case {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = invite_sync::webhook_signature::sign(secret, id, timestamp, &body)
            .expect("the secret signs");
        for (name, value) in [
            ("id", id.to_owned()),
            ("timestamp", timestamp.to_string()),
            ("signature", signature),
        ] {
            self.headers.insert(
                HeaderName::try_from(format!("{prefix}{name}")).expect("a header name"),
                HeaderValue::try_from(value).expect("a header value"),
            );
        }
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body = body;
        self
    }

    fn roster(what: &'static str, body: Vec<u8>) -> Case {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        case(
            what,
            Method::POST,
            "/v1/webhooks/roster",
            StatusCode::BAD_REQUEST,
        )
        .signed("webhook-", ROSTER_SECRET, &id, body)
    }

    fn clerk(what: &'static str, body: Vec<u8>) -> Case {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        case(
            what,
            Method::POST,
            "/v1/webhooks/clerk",
            StatusCode::BAD_REQUEST,
        )
        .signed("svix-", CLERK_SECRET, &id, body)
    }
}

fn upsert(data: Value) -> Vec<u8> {
    json!({"type": "invitee.upserted", "data": data})
        .to_string()
        .into_bytes()
}

fn deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn cases() -> Vec<Case> {
    let long = "a".repeat(10_000);
    // Random, so that PostgreSQL cannot compress it below what an index entry may hold.
    let random: String = (0..320)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let long_id = format!("msg_{random}");
    let not_utf8 = HeaderValue::from_bytes(b"Bearer tok\xc3\xa9\xff").expect("obs-text is allowed");
    let mut cases = vec![
        // The probes and the metrics, on both listeners.
        case("a NUL in a probe's path", Method::GET, "/healthz/%00", StatusCode::NOT_FOUND)
            .naming(&["no such path"]),
        case("non-ASCII after a probe's path", Method::GET, "/readyz%C3%A9", StatusCode::NOT_FOUND)
            .naming(&["no such path"]),
        case("an over-long path", Method::GET, &format!("/metrics/{long}"), StatusCode::NOT_FOUND)
            .naming(&["no such path"]),
        case("a probe POSTed to", Method::POST, "/healthz", StatusCode::METHOD_NOT_ALLOWED)
            .naming(&["method not allowed"]),
        case("the metrics deleted", Method::DELETE, "/metrics", StatusCode::METHOD_NOT_ALLOWED)
            .naming(&["method not allowed"]),
        case("a NUL path on the admin listener", Method::GET, "/nothing%00", StatusCode::NOT_FOUND)
            .naming(&["no such path"])
            .on_admin(),
        case("non-ASCII on the admin listener", Method::GET, "/healthz/%C3%A9", StatusCode::NOT_FOUND)
            .naming(&["no such path"])
            .on_admin(),
        case("a probe POSTed to on the admin listener", Method::POST, "/readyz", StatusCode::METHOD_NOT_ALLOWED)
            .naming(&["method not allowed"])
            .on_admin(),
        // The operator API.
        case("a sync without a token", Method::POST, "/v1/sync?x=%00", StatusCode::UNAUTHORIZED)
            .naming(&["bearer token"]),
        case("a token that is not UTF-8", Method::POST, "/v1/sync", StatusCode::UNAUTHORIZED)
            .naming(&["bearer token"])
            .header("authorization", not_utf8),
        case("an over-long token", Method::GET, "/v1/status", StatusCode::UNAUTHORIZED)
            .naming(&["bearer token"])
            .header(
                "authorization",
                HeaderValue::try_from(format!("Bearer {long}")).expect("a header value"),
            ),
        case("the status PUT to", Method::PUT, "/v1/status", StatusCode::METHOD_NOT_ALLOWED)
            .naming(&["method not allowed"]),
        // The roster webhook, signed: the signature is right, the payload is not.
        Case::roster("a NUL in the address", upsert(json!({"email": "a\u{0}b@example.com"})))
            .naming(&["data.email"]),
        Case::roster("non-ASCII in the address", upsert(json!({"email": "é@example.com"})))
            .naming(&["data.email"]),
        Case::roster("an over-long address", upsert(json!({"email": format!("{long}@example.com")})))
            .naming(&["data.email"]),
        Case::roster(
            "a NUL in a metadata value",
            upsert(json!({"email": "a@example.com", "public_metadata": {"team": "o\u{0}ps"}})),
        )
        .naming(&["public_metadata", "NUL"]),
        Case::roster(
            "a NUL in a metadata key",
            upsert(json!({"email": "a@example.com", "public_metadata": {"te\u{0}am": 1}})),
        )
        .naming(&["public_metadata", "NUL"]),
        Case::roster(
            "a NUL in the redirect",
            upsert(json!({"email": "a@example.com", "redirect_url": "https://x.example/\u{0}"})),
        )
        .naming(&["redirect_url"]),
        Case::roster("SCIM's source in capitals", upsert(json!({"email": "a@example.com", "source": "SCIM"})))
            .naming(&["data.source", "scim"]),
        Case::roster("SCIM's source after a space", upsert(json!({"email": "a@example.com", "source": " scim"})))
            .naming(&["data.source", "scim"]),
        Case::roster("a NUL in the event type", json!({"type": "invitee.\u{0}", "data": {}}).to_string().into_bytes())
            .naming(&["type"]),
        Case::roster("a body that is not UTF-8", b"{\"type\": \"\xff\xfe\"}".to_vec()).naming(&["JSON"]),
        Case::roster("a body nested 100,000 deep", deep(100_000).into_bytes()).naming(&["JSON"]),
        Case::roster(
            "metadata nested 1,000 deep",
            format!(r#"{{"type":"invitee.upserted","data":{{"email":"a@example.com","public_metadata":{{"d":{}}}}}}}"#, deep(1_000)).into_bytes(),
        )
        .naming(&["JSON"]),
        case("an over-long webhook-id", Method::POST, "/v1/webhooks/roster", StatusCode::BAD_REQUEST)
            .signed("webhook-", ROSTER_SECRET, &long_id, upsert(json!({"email": "a@example.com"})))
            .naming(&["webhook-id"]),
        // The Clerk webhook, signed.
        Case::clerk(
            "a NUL in a deleted user's id",
            json!({"type": "user.deleted", "data": {"deleted": true, "id": "user_\u{0}x"}}).to_string().into_bytes(),
        )
        .naming(&["data.id", "NUL"]),
        Case::clerk(
            "a NUL in a created user's id",
            json!({"type": "user.created", "data": {"id": "user_\u{0}x",
                   "email_addresses": [{"email_address": "a@example.com"}]}}).to_string().into_bytes(),
        )
        .naming(&["data.id", "NUL"]),
        Case::clerk(
            "an over-long user id",
            json!({"type": "user.deleted", "data": {"deleted": true, "id": format!("user_{long}")}}).to_string().into_bytes(),
        )
        .naming(&["data.id"]),
        Case::clerk(
            "an over-long created user's id",
            json!({"type": "user.created", "data": {"id": format!("user_{random}"),
                   "email_addresses": [{"email_address": "a@example.com"}]}}).to_string().into_bytes(),
        )
        .naming(&["data.id"]),
        Case::clerk(
            "non-ASCII in a user id",
            json!({"type": "user.deleted", "data": {"deleted": true, "id": "user_é"}}).to_string().into_bytes(),
        )
        .naming(&["data.id"]),
        Case::clerk(
            "data that is not an object",
            json!({"type": "user.deleted", "data": "user_1"}).to_string().into_bytes(),
        )
        .naming(&["data.id"]),
        Case::clerk("a body that is not UTF-8", b"{\"type\": \"user.deleted\xff\"}".to_vec()).naming(&["JSON"]),
        Case::clerk("a body nested 100,000 deep", deep(100_000).into_bytes()).naming(&["JSON"]),
        case("an over-long svix-id", Method::POST, "/v1/webhooks/clerk", StatusCode::BAD_REQUEST)
            .signed(
                "svix-",
                CLERK_SECRET,
                &long_id,
                json!({"type": "user.deleted", "data": {"id": "user_1"}}).to_string().into_bytes(),
            )
            .naming(&["svix-id"]),
    ];
    // Without a token the API is still refused whatever the method's input.
    cases.push(
        case(
            "a status without a token",
            Method::GET,
            "/v1/status",
            StatusCode::UNAUTHORIZED,
        )
        .naming(&["bearer token"]),
    );
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_input_to_the_probes_the_api_and_the_webhooks_is_a_4xx_json_naming_the_problem(
) {
    let h = Harness::serving(&[
        ("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN),
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__HTTP__CLERK_WEBHOOK_SECRET", CLERK_SECRET),
    ])
    .await;
    let service = Service::with_admin(&h).await;
    let mut wrong = Vec::new();
    for case in cases() {
        let url = match case.listener {
            Listener::Main => service.url(&case.path),
            Listener::Admin => service.admin_url(&case.path),
        };
        let response = service
            .client
            .request(case.method.clone(), url)
            .headers(case.headers.clone())
            .body(case.body.clone())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                wrong.push(format!("{}: no answer: {error}", case.what));
                continue;
            }
        };
        let status = response.status();
        let content_type = content_type(&response);
        let text = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|body| body["error"].as_str().map(str::to_owned));
        let names_all = error.as_deref().is_some_and(|error| {
            let error = error.to_ascii_lowercase();
            case.names
                .iter()
                .all(|name| error.contains(&name.to_ascii_lowercase()))
        });
        if status != case.status || !content_type.starts_with("application/json") || !names_all {
            let shown: String = text.chars().take(300).collect();
            wrong.push(format!(
                "{}: expected {} naming {:?}, got {status} ({content_type:?}) {shown:?}",
                case.what, case.status, case.names
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nothing was written, and both listeners still answer.
    for table in [
        "desired_invitees",
        "invite_sync_webhook_deliveries",
        "invite_sync_known_users",
    ] {
        assert_eq!(
            h.db.scalar(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    for url in [service.url("/healthz"), service.admin_url("/healthz")] {
        let status = service
            .client
            .get(&url)
            .header(AUTHORIZATION, "none")
            .send()
            .await
            .expect("the service still answers")
            .status();
        assert_eq!(status, StatusCode::OK, "{url}");
    }
    service.stop().await.expect("the service stops cleanly");
}
