//! The running service over a real socket: health and readiness, metrics, the operator API,
//! the signed roster and Clerk webhooks, roster change notifications, and a clean stop. Each
//! test runs the service (`common::Service`) on a port of its own against its own database
//! and simulator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use invite_sync::clerk::sim::Operation;
use invite_sync::clerk::{ClerkClient, InvitationStatus};
use invite_sync::config::Settings;
use invite_sync::reconcile::{CycleConfig, Reconciler};
use invite_sync::store::runs::RunRecord;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{content_type, count, free_port, people, runs, wait_for, Harness, Service};

const API_TOKEN: &str = "operator-token-0123456789abcdef";
const ROSTER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLERK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The second secret of a rotation: either may sign.
const ROTATED_SECRET: &str = "whsec_cm90YXRlZC1zZWNyZXQtZm9yLXRlc3Rz";
/// Signs nothing this service accepts.
const OTHER_SECRET: &str = "whsec_dGhpcmQtc2VjcmV0LW5vdC1jb25maWd1cmVk";
const SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;
/// How long a change may take to reach the simulator.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The service under test

/// A harness whose schedule never fires, on a target no other test uses.
async fn harness(extra: &[(&str, &str)]) -> Harness {
    let shutdown_timeout = SHUTDOWN_TIMEOUT_SECONDS.to_string();
    let mut overrides: Vec<(&str, &str)> = vec![(
        "INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS",
        &shutdown_timeout,
    )];
    overrides.extend_from_slice(extra);
    Harness::serving(&overrides).await
}

/// The requests of this file: the operator API and the signed webhooks.
impl Service {
    /// A request with `Authorization: Bearer <token>` when a token is given.
    async fn api(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        Answer::read(request.send().await.expect("the service answers")).await
    }

    /// POSTs `body` to `path` with `headers`.
    async fn post(&self, path: &str, headers: HeaderMap, body: Vec<u8>) -> Answer {
        let response = self
            .client
            .post(self.url(path))
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Answer::read(response).await
    }

    /// A roster webhook signed with the configured secret, timestamped now.
    async fn roster(&self, id: &str, body: &Value) -> Answer {
        let body = body.to_string().into_bytes();
        let headers = signed("webhook-", ROSTER_SECRET, id, now(), &body);
        self.post("/v1/webhooks/roster", headers, body).await
    }

    /// A Clerk (Svix) webhook signed with the configured secret, timestamped now.
    async fn clerk(&self, id: &str, body: &Value) -> Answer {
        let body = body.to_string().into_bytes();
        let headers = signed("svix-", CLERK_SECRET, id, now(), &body);
        self.post("/v1/webhooks/clerk", headers, body).await
    }
}

/// A response read whole.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let content_type = content_type(&response);
        let text = response.text().await.expect("the body can be read");
        Answer {
            status,
            content_type,
            text,
        }
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    #[track_caller]
    fn expect(&self, status: StatusCode) -> &Answer {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The three signature headers of `prefix` (`webhook-` or `svix-`), signed with `secret`.
fn signed(prefix: &str, secret: &str, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let signature = invite_sync::webhook_signature::sign(secret, id, timestamp, body)
        .expect("the secret is valid");
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("id", id.to_owned()),
        ("timestamp", timestamp.to_string()),
        ("signature", signature),
    ] {
        headers.insert(
            HeaderName::try_from(format!("{prefix}{name}")).expect("a header name"),
            HeaderValue::try_from(value).expect("a header value"),
        );
    }
    headers
}

fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------
// Looking at the outcome

/// Waits until at least `count` runs were recorded and none is running.
/// They come oldest first.
async fn wait_idle(h: &Harness, count: usize) -> Vec<RunRecord> {
    wait_for(&format!("{count} finished runs"), DEADLINE, || async {
        let mut runs = runs(h).await;
        runs.reverse();
        (runs.len() >= count && runs.iter().all(|r| r.outcome != "running")).then_some(runs)
    })
    .await
}

/// The roster's emails, sorted.
async fn roster(h: &Harness) -> Vec<String> {
    sqlx::query_scalar("SELECT email FROM desired_invitees ORDER BY email")
        .fetch_all(&h.db.pool)
        .await
        .expect("the roster loads")
}

/// The simulator's invitations for `email` in `status`.
fn invitations(h: &Harness, email: &str, status: InvitationStatus) -> usize {
    h.sim
        .invitations()
        .into_iter()
        .filter(|i| i.email_address.eq_ignore_ascii_case(email) && i.status == status)
        .count()
}

/// Waits until `email` holds a pending invitation.
async fn wait_invited(h: &Harness, email: &str) {
    wait_for(&format!("an invitation for {email}"), DEADLINE, || async {
        (invitations(h, email, InvitationStatus::Pending) > 0).then_some(())
    })
    .await
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// What `/metrics` exposes: each family's type, and the samples.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the Prometheus / OpenMetrics text format, panicking on the first line that is
    /// not one of `# HELP`, `# TYPE`, `# UNIT`, a sample, or the final `# EOF`.
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "no final # EOF:\n{text}");
        for line in &lines[..lines.len() - 1] {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                let (keyword, name, rest) = (parts.next(), parts.next(), parts.next());
                match (keyword, name, rest) {
                    (Some("HELP"), Some(name), Some(_)) | (Some("UNIT"), Some(name), Some(_)) => {
                        assert!(is_metric_name(name), "bad name in {line:?}");
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        assert!(is_metric_name(name), "bad name in {line:?}");
                        assert!(
                            [
                                "counter",
                                "gauge",
                                "histogram",
                                "summary",
                                "info",
                                "stateset",
                                "gaugehistogram",
                                "unknown"
                            ]
                            .contains(&kind),
                            "unknown type in {line:?}"
                        );
                        let before = exposition.types.insert(name.to_owned(), kind.to_owned());
                        assert!(before.is_none(), "a second # TYPE for {name}");
                    }
                    _ => panic!("unexpected comment line {line:?}"),
                }
                continue;
            }
            exposition.samples.push(parse_sample(line));
        }
        exposition
    }

    /// The family a sample belongs to: its name, or its name less a type's suffix.
    fn family_of(&self, sample: &str) -> Option<(&str, &str)> {
        if let Some((family, kind)) = self.types.get_key_value(sample) {
            return Some((family, kind));
        }
        ["_total", "_created", "_bucket", "_sum", "_count", "_info"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find_map(|family| self.types.get_key_value(family))
            .map(|(family, kind)| (family.as_str(), kind.as_str()))
    }

    /// The sum of a sample over all its label sets.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "bad sample name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inside
                .find("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            let key = &inside[..eq];
            assert!(is_metric_name(key), "bad label name in {line:?}");
            let mut value = String::new();
            let mut chars = inside[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break eq + 2 + i + 1,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            labels.insert(key.to_owned(), value);
            inside = &inside[end..];
            inside = inside.strip_prefix(',').unwrap_or(inside);
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value in {line:?}"))
        .split(' ');
    let value = fields
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("bad value in {line:?}"));
    if let Some(timestamp) = fields.next() {
        assert!(
            timestamp.parse::<f64>().is_ok(),
            "bad timestamp in {line:?}"
        );
    }
    assert!(fields.next().is_none(), "trailing text in {line:?}");
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

async fn scrape(service: &Service) -> Exposition {
    let answer = Answer::read(service.get("/metrics").await).await;
    answer.expect(StatusCode::OK);
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text")
            || answer.content_type.starts_with("text/plain"),
        "content type {:?}",
        answer.content_type
    );
    Exposition::parse(&answer.text)
}

// ---------------------------------------------------------------------------
// Health and readiness

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_readyz_answer_200_while_the_database_is_there_and_readyz_503_once_it_is_gone()
{
    let h = harness(&[]).await;
    let service = Service::start(&h).await;

    let health = Answer::read(service.get("/healthz").await).await;
    health.expect(StatusCode::OK);
    assert_eq!(health.text.trim(), "ok");
    let ready = Answer::read(service.get("/readyz").await).await;
    assert_eq!(
        ready.expect(StatusCode::OK).json(),
        json!({"status": "ready"})
    );
    wait_idle(&h, 1).await;

    let mut admin = h.db.admin_connection().await;
    sqlx::query(&format!(r#"DROP DATABASE "{}" WITH (FORCE)"#, h.db.name))
        .execute(&mut admin)
        .await
        .expect("the test database can be dropped");

    let gone = Answer::read(service.get("/readyz").await).await;
    let body = gone.expect(StatusCode::SERVICE_UNAVAILABLE).json();
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(reason.contains("database"), "{reason}");
    assert!(
        !reason.contains(&h.db.name),
        "the reason names the database: {reason}"
    );
    // Liveness does not depend on the database: restarting would not bring it back.
    Answer::read(service.get("/healthz").await)
        .await
        .expect(StatusCode::OK);
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_answers_503_with_a_reason_when_the_database_server_cannot_be_reached() {
    // A port nobody listens on any more.
    let closed = free_port().expect("a loopback port is free");
    let env: std::collections::HashMap<String, String> = [
        (
            "DATABASE_URL",
            format!("postgres://invite:s3cret-password@127.0.0.1:{closed}/roster"),
        ),
        ("CLERK_SECRET_KEY", "sk_test_unused".to_owned()),
        (
            "INVITE_SYNC__DATABASE__CONNECT_TIMEOUT_SECONDS",
            "1".to_owned(),
        ),
        // The server stops within 5 s.
        (
            "INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS",
            "4".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::load(None, &env).expect("the settings load");
    let pool = settings
        .database
        .pool_options()
        .connect_lazy_with(settings.database.connect_options().unwrap());
    let clerk = ClerkClient::new(settings.clerk.client_options().unwrap()).unwrap();
    let reconciler = Reconciler::new(pool, clerk, CycleConfig::from_settings(&settings));
    let service = Service::http_alone_on(reconciler, settings).await;

    let health = service.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let ready = Answer::read(service.get("/readyz").await).await;
    let body = ready.expect(StatusCode::SERVICE_UNAVAILABLE).json();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness took {:?}",
        started.elapsed()
    );
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(!reason.is_empty());
    for secret in ["s3cret-password", "invite:", &closed.to_string()] {
        assert!(
            !reason.contains(secret),
            "the reason leaks {secret}: {reason}"
        );
    }

    service.stop().await.expect("the server stops cleanly");
}

// ---------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_openmetrics_with_prefixed_names_and_cycle_counters_that_move() {
    let h = harness(&[("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.1")]).await;
    h.add_people(&["metered@example.com"]).await;
    let service = Service::start(&h).await;
    wait_invited(&h, "metered@example.com").await;
    wait_idle(&h, 1).await;

    let before = scrape(&service).await;
    assert!(!before.types.is_empty(), "no metric families");
    for family in before.types.keys() {
        assert!(family.starts_with("invite_sync_"), "family {family}");
    }
    for sample in &before.samples {
        assert!(sample.name.starts_with("invite_sync_"), "{sample:?}");
        let (family, kind) = before
            .family_of(&sample.name)
            .unwrap_or_else(|| panic!("no # TYPE for {sample:?}"));
        match kind {
            "counter" => assert!(
                sample.name == format!("{family}_total")
                    || sample.name == format!("{family}_created"),
                "a counter sample not ending in _total: {sample:?}"
            ),
            "gauge" => assert_eq!(sample.name, family, "{sample:?}"),
            "histogram" => {
                assert!(
                    ["_bucket", "_sum", "_count", "_created"]
                        .iter()
                        .any(|s| sample.name == format!("{family}{s}")),
                    "{sample:?}"
                );
                if sample.name.ends_with("_bucket") {
                    assert!(sample.labels.contains_key("le"), "{sample:?}");
                }
            }
            _ => {}
        }
    }
    for (family, kind) in [
        ("invite_sync_cycles", "counter"),
        ("invite_sync_clerk_calls", "counter"),
        ("invite_sync_actions", "counter"),
        ("invite_sync_cycle_duration_seconds", "histogram"),
        ("invite_sync_backlog_invitations", "gauge"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let cycles_before = before.sum("invite_sync_cycles_total");
    let calls_before = before.sum("invite_sync_clerk_calls_total");
    assert!(cycles_before >= 1.0, "the start cycle is counted");
    assert!(calls_before >= 1.0, "the start cycle's calls are counted");
    assert!(before
        .samples
        .iter()
        .any(|s| s.name == "invite_sync_clerk_calls_total"
            && s.labels.contains_key("operation")
            && s.labels.contains_key("status")));

    h.add_people(&["metered-too@example.com"]).await;
    wait_invited(&h, "metered-too@example.com").await;
    let after = wait_for("the cycle counters to move", DEADLINE, || async {
        let after = scrape(&service).await;
        (after.sum("invite_sync_cycles_total") > cycles_before
            && after.sum("invite_sync_clerk_calls_total") > calls_before)
            .then_some(after)
    })
    .await;
    // Every labelled series only grows, whatever other tests in this process do.
    for sample in before.samples.iter().filter(|s| s.name.ends_with("_total")) {
        let later = after
            .samples
            .iter()
            .find(|s| s.name == sample.name && s.labels == sample.labels)
            .unwrap_or_else(|| panic!("{sample:?} disappeared"));
        assert!(later.value >= sample.value, "{sample:?} -> {later:?}");
    }
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// The operator API

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_or_webhook_secrets_the_api_and_the_webhooks_answer_404() {
    let h = harness(&[]).await;
    let service = Service::start(&h).await;
    for token in [None, Some(API_TOKEN)] {
        service
            .api(reqwest::Method::POST, "/v1/sync", token)
            .await
            .expect(StatusCode::NOT_FOUND);
        service
            .api(reqwest::Method::GET, "/v1/status", token)
            .await
            .expect(StatusCode::NOT_FOUND);
    }
    let api = service.api(reqwest::Method::GET, "/v1/status", None).await;
    assert_eq!(
        api.json()["error"],
        "the operator API is not configured on this service (http.api_token is not set)"
    );
    let upsert = json!({"type": "invitee.upserted", "data": {"email": "ann@example.com"}});
    let roster_hook = service.roster(&message_id(), &upsert).await;
    roster_hook.expect(StatusCode::NOT_FOUND);
    assert_eq!(
        roster_hook.json()["error"],
        "the roster webhook is not configured on this service (http.roster_webhook_secret is not set)"
    );
    let created = json!({"type": "user.created", "data": {"email_addresses": [{"email_address": "ann@example.com"}]}});
    let clerk_hook = service.clerk(&message_id(), &created).await;
    clerk_hook.expect(StatusCode::NOT_FOUND);
    assert_eq!(
        clerk_hook.json()["error"],
        "the Clerk webhook is not configured on this service (http.clerk_webhook_secret is not set)"
    );
    wait_idle(&h, 1).await;
    assert!(roster(&h).await.is_empty());
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_wants_the_bearer_token_starts_a_run_by_id_and_reports_the_status_json() {
    let h = harness(&[("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN)]).await;
    h.add_people(&["api@example.com"]).await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;

    for path in ["/v1/sync", "/v1/status"] {
        let method = if path == "/v1/sync" {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let answer = service.api(method.clone(), path, token).await;
            answer.expect(StatusCode::UNAUTHORIZED);
            assert!(answer.json()["error"].is_string(), "{answer:?}");
        }
        // The token alone, without the scheme, is not a bearer token.
        let bare = service
            .client
            .request(method, service.url(path))
            .header(AUTHORIZATION, API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(runs(&h).await.len(), 1, "a refused request started a run");

    let accepted = service
        .api(reqwest::Method::POST, "/v1/sync", Some(API_TOKEN))
        .await;
    let body = accepted.expect(StatusCode::ACCEPTED).json();
    let run_id: uuid::Uuid = body["run_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id: {body}"));
    let run = wait_for("the requested run to finish", DEADLINE, || async {
        runs(&h)
            .await
            .into_iter()
            .find(|r| r.id == run_id && r.outcome != "running")
    })
    .await;
    assert_eq!(run.trigger, "api");
    assert_eq!(run.outcome, "succeeded", "{run:?}");
    let settled = wait_idle(&h, 2).await;

    let status = service
        .api(reqwest::Method::GET, "/v1/status", Some(API_TOKEN))
        .await;
    status.expect(StatusCode::OK);
    assert!(status.content_type.starts_with("application/json"));
    let status = status.json();
    for key in [
        "target",
        "lock_holder",
        "budget",
        "backlog",
        "backlog_eta_seconds",
        "held_revocations",
        "runs",
    ] {
        assert!(status.get(key).is_some(), "no {key}: {status}");
    }
    assert_eq!(
        status["target"],
        h.env["INVITE_SYNC__SYNC__TARGET"].as_str()
    );
    assert_eq!(status["lock_holder"], Value::Null);
    let listed: Vec<&str> = status["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(listed.len(), settled.len(), "{status}");
    assert!(listed.contains(&run_id.to_string().as_str()), "{status}");

    // The same document the CLI prints, nothing changed in between.
    let mut command = h.command();
    command.args(["status", "--format", "json"]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("status prints JSON");
    assert_eq!(status, printed);
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// Change notifications

#[tokio::test(flavor = "multi_thread")]
async fn roster_changes_are_invited_and_revoked_without_the_schedule_even_across_a_database_restart(
) {
    let h = harness(&[
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.2"),
        ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1"),
    ])
    .await;
    // An empty roster would hold the revocation.
    h.add_people(&["stays@example.com"]).await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;
    wait_for("the change listener", DEADLINE, || h.listener_pid()).await;

    h.add_people(&["first@example.com"]).await;
    wait_invited(&h, "first@example.com").await;
    h.remove_people(&["first@example.com"]).await;
    wait_for("the revocation of first@example.com", DEADLINE, || async {
        (invitations(&h, "first@example.com", InvitationStatus::Revoked) == 1
            && invitations(&h, "first@example.com", InvitationStatus::Pending) == 0)
            .then_some(())
    })
    .await;
    let before = wait_idle(&h, 1).await.len();

    let old_listener = h.listener_pid().await.expect("a listening session");
    assert!(h.db.terminate_sessions().await > 0);
    wait_for("the listener to reconnect", DEADLINE, || async {
        h.listener_pid().await.filter(|pid| *pid != old_listener)
    })
    .await;
    // Reconnecting asks for a catch-up cycle; once it is done, only a notification can
    // bring the next row in.
    wait_idle(&h, before + 1).await;
    let invited_before = h.sim.stats().total(Operation::CreateBulkInvitations)
        + h.sim.stats().total(Operation::CreateInvitation);

    h.add_people(&["after-restart@example.com"]).await;
    wait_invited(&h, "after-restart@example.com").await;
    let invited_after = h.sim.stats().total(Operation::CreateBulkInvitations)
        + h.sim.stats().total(Operation::CreateInvitation);
    assert!(invited_after > invited_before);
    assert_eq!(
        invitations(&h, "first@example.com", InvitationStatus::Pending),
        0
    );
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_twenty_inserts_is_served_by_at_most_two_cycles() {
    let h = harness(&[("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.5")]).await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;
    wait_for("the change listener", DEADLINE, || h.listener_pid()).await;

    let people = people("burst", 20);
    let mut conn = h.db.pool.acquire().await.unwrap();
    for email in &people {
        // One statement each: twenty notifications, not one.
        sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
            .bind(email)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    drop(conn);
    wait_for("all twenty invited", DEADLINE, || async {
        people
            .iter()
            .all(|email| invitations(&h, email, InvitationStatus::Pending) == 1)
            .then_some(())
    })
    .await;
    let runs = wait_idle(&h, 2).await;
    let notified: Vec<&RunRecord> = runs.iter().filter(|r| r.trigger != "start").collect();
    // The first insert starts a cycle at once; the rest are gathered into the next one.
    assert!(
        !notified.is_empty() && notified.len() <= 2,
        "{} cycles for one burst: {runs:?}",
        notified.len()
    );
    assert!(notified.iter().all(|r| r.trigger == "notify"), "{runs:?}");
    service.stop().await.expect("the service stops cleanly");
}

/// Waits until no cycle runs and none ended within `gap` (and a margin): the next change is
/// the first after a quiet period.
async fn quiet(h: &Harness, gap: Duration) -> Vec<RunRecord> {
    let quiet = chrono::Duration::from_std(gap + Duration::from_millis(200)).unwrap();
    wait_for("a quiet period", gap + DEADLINE, || async {
        let runs = wait_idle(h, 1).await;
        let last = runs.iter().filter_map(|r| r.finished_at).max()?;
        (chrono::Utc::now() - last >= quiet).then_some(runs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_roster_change_is_served_at_once_and_a_change_soon_after_a_cycle_waits_for_the_gap()
{
    const GAP: Duration = Duration::from_secs(3);
    let h = harness(&[("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "3")]).await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;
    wait_for("the change listener", DEADLINE, || h.listener_pid()).await;
    let before = quiet(&h, GAP).await.len();

    // The first change after a quiet period: its cycle does not wait for the gap.
    let changed = std::time::Instant::now();
    h.add_people(&["lone@example.com"]).await;
    wait_invited(&h, "lone@example.com").await;
    let took = changed.elapsed();
    assert!(
        took < GAP / 2,
        "a lone change took {took:?} to be invited; the gap is {GAP:?}"
    );

    // A change right after that cycle waits for the gap after its end.
    wait_idle(&h, before + 1).await;
    h.add_people(&["soon@example.com"]).await;
    wait_invited(&h, "soon@example.com").await;
    let runs = wait_idle(&h, before + 2).await;
    let notified: Vec<&RunRecord> = runs.iter().filter(|r| r.trigger == "notify").collect();
    assert_eq!(notified.len(), 2, "{runs:?}");
    let between = notified[1].started_at - notified[0].finished_at.expect("it finished");
    let slack = chrono::Duration::milliseconds(50);
    assert!(
        between >= chrono::Duration::from_std(GAP).unwrap() - slack,
        "the second cycle started {between} after the first ended; the gap is {GAP:?}: {runs:?}"
    );
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test]
async fn the_worker_runs_a_lone_change_at_once_gathers_later_ones_after_the_gap_and_lets_other_triggers_through(
) {
    const GAP: Duration = Duration::from_secs(1);
    let h = Harness::new().await;
    let token = tokio_util::sync::CancellationToken::new();
    let (worker, triggers) = invite_sync::service::worker(h.reconciler.clone(), token.clone());
    let mut worker = worker.with_gap(GAP);
    let ran = |step: invite_sync::service::Step| {
        assert!(
            matches!(step, invite_sync::service::Step::Ran(_)),
            "the worker did not run a cycle: {step:?}"
        );
    };

    h.add_people(&["one@example.com"]).await;
    triggers.roster_changed();
    let asked = std::time::Instant::now();
    ran(worker.step().await);
    assert!(asked.elapsed() < GAP, "the first change waited for the gap");

    // Three changes right after it: one cycle, the gap after the first one's end.
    h.add_people(&["two@example.com", "three@example.com"])
        .await;
    for _ in 0..3 {
        triggers.roster_changed();
    }
    ran(worker.step().await);
    let recorded = runs(&h).await;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let between = recorded[0].started_at - recorded[1].finished_at.expect("it finished");
    assert!(
        between >= chrono::Duration::from_std(GAP).unwrap() - chrono::Duration::milliseconds(50),
        "started {between} after the last cycle ended: {recorded:?}"
    );
    for email in ["two@example.com", "three@example.com"] {
        assert_eq!(
            invitations(&h, email, InvitationStatus::Pending),
            1,
            "{email}"
        );
    }

    // Another trigger does not wait for the gap, and serves the changes waiting for it: a
    // burst of them, more than the worker's queue holds, takes one place in it.
    for _ in 0..10 {
        triggers.roster_changed();
    }
    triggers.request("api");
    let asked = std::time::Instant::now();
    ran(worker.step().await);
    assert!(asked.elapsed() < GAP, "the API request waited for the gap");
    let recorded = runs(&h).await;
    assert_eq!(recorded[0].trigger, "api", "{recorded:?}");
    assert!(
        tokio::time::timeout(GAP * 2, worker.step()).await.is_err(),
        "the waiting change was served by the API's cycle, yet another ran"
    );
    assert_eq!(runs(&h).await.len(), 3);

    token.cancel();
    assert!(matches!(
        worker.step().await,
        invite_sync::service::Step::Stopped
    ));
}

// ---------------------------------------------------------------------------
// The roster webhook

#[tokio::test(flavor = "multi_thread")]
async fn signed_roster_webhooks_upsert_remove_and_batch_and_a_replay_is_not_applied_twice() {
    let secrets = format!("{ROSTER_SECRET},{ROTATED_SECRET}");
    let h = harness(&[
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", &secrets),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.2"),
    ])
    .await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;

    let upsert = json!({"type": "invitee.upserted", "data": {
        "email": " Ann@Example.com", "public_metadata": {"team": "ops"}}});
    let answer = service.roster(&message_id(), &upsert).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "upserted": 1, "removed": 0})
    );
    assert_eq!(roster(&h).await, ["ann@example.com"]);
    let source: Option<String> = sqlx::query_scalar("SELECT source FROM desired_invitees")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(source.as_deref(), Some("webhook"));
    wait_invited(&h, "ann@example.com").await;

    // Signed with the other secret of the rotation.
    let removal = json!({"type": "invitee.removed", "data": {"email": "ANN@example.com"}})
        .to_string()
        .into_bytes();
    let headers = signed("webhook-", ROTATED_SECRET, &message_id(), now(), &removal);
    let answer = service.post("/v1/webhooks/roster", headers, removal).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "upserted": 0, "removed": 1})
    );
    assert!(roster(&h).await.is_empty());

    h.add_people(&["bob@example.com", "cara@example.com"]).await;
    let batch = json!({"type": "roster.batch", "data": {
        "upserted": [{"email": "dan@example.com"}, {"email": "eve@example.com", "notify": false}],
        "removed": [{"email": "bob@example.com"}]}});
    let answer = service.roster(&message_id(), &batch).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "upserted": 2, "removed": 1})
    );
    assert_eq!(
        roster(&h).await,
        ["cara@example.com", "dan@example.com", "eve@example.com"]
    );

    // A redelivery of a message already applied is acknowledged and not applied again.
    let replayed_id = message_id();
    let fay = json!({"type": "invitee.upserted", "data": {"email": "fay@example.com"}});
    let body = fay.to_string().into_bytes();
    let headers = signed("webhook-", ROSTER_SECRET, &replayed_id, now(), &body);
    service
        .post("/v1/webhooks/roster", headers.clone(), body.clone())
        .await
        .expect(StatusCode::OK);
    h.remove_people(&["fay@example.com"]).await;
    let replay = service.post("/v1/webhooks/roster", headers, body).await;
    assert_eq!(replay.expect(StatusCode::OK).json()["applied"], false);
    // Signed anew, the same message id is still the same message.
    let replay = service.roster(&replayed_id, &fay).await;
    assert_eq!(replay.expect(StatusCode::OK).json()["status"], "duplicate");
    assert!(!roster(&h).await.contains(&"fay@example.com".to_owned()));

    for email in ["dan@example.com", "eve@example.com", "cara@example.com"] {
        wait_invited(&h, email).await;
    }
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn roster_webhooks_with_a_bad_signature_or_payload_are_refused_and_change_nothing() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    h.add_people(&["kept@example.com"]).await;
    let service = Service::start(&h).await;
    let path = "/v1/webhooks/roster";
    let upsert = json!({"type": "invitee.upserted", "data": {"email": "gus@example.com"}});
    let body = upsert.to_string().into_bytes();

    let mut refusals: Vec<(&str, HeaderMap)> = vec![
        (
            "another secret",
            signed("webhook-", OTHER_SECRET, &message_id(), now(), &body),
        ),
        (
            "ten minutes old",
            signed("webhook-", ROSTER_SECRET, &message_id(), now() - 600, &body),
        ),
        (
            "ten minutes ahead",
            signed("webhook-", ROSTER_SECRET, &message_id(), now() + 600, &body),
        ),
        (
            "svix headers",
            signed("svix-", ROSTER_SECRET, &message_id(), now(), &body),
        ),
    ];
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &body);
        headers.remove(name);
        refusals.push((name, headers));
    }
    let id = message_id();
    let mut tampered = signed("webhook-", ROSTER_SECRET, &id, now(), &body);
    tampered.insert("webhook-id", HeaderValue::from_static("msg_someone_else"));
    refusals.push(("another id", tampered));
    for (case, headers) in refusals {
        let answer = service.post(path, headers, body.clone()).await;
        answer.expect(StatusCode::UNAUTHORIZED);
        assert!(answer.json()["error"].is_string(), "{case}: {answer:?}");
    }
    // The body the signature covers, one byte changed.
    let headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &body);
    let altered = upsert.to_string().replace("gus", "gut").into_bytes();
    service
        .post(path, headers, altered)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    let rejections = [
        (
            r#"{"type": "invitee.upserted", "data": "#.to_owned(),
            "JSON",
        ),
        (
            json!({"type": "invitee.created", "data": {"email": "gus@example.com"}}).to_string(),
            "type",
        ),
        (
            json!({"type": "invitee.upserted", "data": {"email": "not-an-email"}}).to_string(),
            "data.email",
        ),
        (
            json!({"type": "roster.batch", "data": {
                "upserted": [{"email": "gus@example.com"}, {"email": "nope"}],
                "removed": [{"email": "kept@example.com"}]}})
            .to_string(),
            "data.upserted[1].email",
        ),
        (
            json!({"type": "roster.batch", "data": {
                "upserted": [{"email": "gus@example.com"}],
                "removed": [{"email": "kept@example.com", "why": "left"}]}})
            .to_string(),
            "data.removed[0].why",
        ),
    ];
    for (payload, named) in rejections {
        let body = payload.into_bytes();
        let headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &body);
        let answer = service.post(path, headers, body).await;
        answer.expect(StatusCode::BAD_REQUEST);
        let error = answer.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.contains(named), "{named}: {error}");
    }

    // Just over the limit, correctly signed.
    let padding = "x".repeat(invite_sync::service::http::MAX_BODY);
    let big = json!({"type": "invitee.upserted", "data": {
        "email": "gus@example.com", "public_metadata": {"padding": padding}}})
    .to_string()
    .into_bytes();
    let headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &big);
    service
        .post(path, headers, big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(roster(&h).await, ["kept@example.com"]);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_webhook_deliveries")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a refused delivery was recorded");

    // A refused message may be sent again once it is right.
    let answer = service.roster(&id, &upsert).await;
    answer.expect(StatusCode::OK);
    assert_eq!(roster(&h).await, ["gus@example.com", "kept@example.com"]);
    service.stop().await.expect("the service stops cleanly");
}

/// The membership roster's (email, organization, role, source), sorted.
async fn membership_roster(h: &Harness) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT email, organization, role, source FROM desired_memberships
         ORDER BY organization, email",
    )
    .fetch_all(&h.db.pool)
    .await
    .expect("the membership roster loads")
}

fn member(
    email: &str,
    organization: &str,
    role: Option<&str>,
    source: &str,
) -> (String, String, Option<String>, Option<String>) {
    (
        email.to_owned(),
        organization.to_owned(),
        role.map(str::to_owned),
        Some(source.to_owned()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_roster_webhooks_write_the_membership_roster_and_refuse_bad_items_whole() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let service = Service::start(&h).await;
    let path = "/v1/webhooks/roster";

    let upsert = json!({"type": "membership.upserted", "data": {
        "email": " Ann@Example.com", "organization": " acme ", "role": "org:admin",
        "private_metadata": {"employee_id": "E-1"}}});
    let answer = service.roster(&message_id(), &upsert).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "upserted": 0, "removed": 0,
               "memberships": {"upserted": 1, "removed": 0}})
    );
    assert_eq!(
        membership_roster(&h).await,
        [member(
            "ann@example.com",
            "acme",
            Some("org:admin"),
            "webhook"
        )]
    );
    assert!(
        roster(&h).await.is_empty(),
        "the instance roster is another roster"
    );

    let batch = json!({"type": "roster.batch", "data": {
        "upserted": [{"email": "cy@example.com"}],
        "memberships": {
            "upserted": [
                {"email": "cy@example.com", "organization": "acme", "source": "hr"},
                {"email": "ann@example.com", "organization": "org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m",
                 "role": ""}],
            "removed": [{"email": "ANN@example.com", "organization": "acme"}]}}});
    let answer = service.roster(&message_id(), &batch).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "upserted": 1, "removed": 0,
               "memberships": {"upserted": 2, "removed": 1}})
    );
    assert_eq!(
        membership_roster(&h).await,
        [
            member("cy@example.com", "acme", None, "hr"),
            member(
                "ann@example.com",
                "org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m",
                None,
                "webhook"
            ),
        ]
    );
    assert_eq!(roster(&h).await, ["cy@example.com"]);
    let removal = json!({"type": "membership.removed", "data": {
        "email": "cy@example.com", "organization": "acme"}});
    let answer = service.roster(&message_id(), &removal).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json()["memberships"],
        json!({"upserted": 0, "removed": 1})
    );
    let before = membership_roster(&h).await;

    // The signature is checked before the body is read, memberships or not.
    let body = json!({"type": "membership.upserted", "data": {
        "email": "gus@example.com", "organization": "acme"}})
    .to_string()
    .into_bytes();
    let forged = signed("webhook-", OTHER_SECRET, &message_id(), now(), &body);
    service
        .post(path, forged, body.clone())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let mut unsigned = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &body);
    unsigned.remove("webhook-signature");
    service
        .post(path, unsigned, body)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // A bad item refuses the whole payload, naming the item and its field.
    let rejections = [
        (
            json!({"type": "roster.batch", "data": {
                "upserted": [{"email": "hal@example.com"}],
                "memberships": {"upserted": [
                    {"email": "hal@example.com", "organization": "acme"},
                    {"email": "ivy@example.com", "organization": "acme", "role": "admin"}]}}}),
            "data.memberships.upserted[1]: role \"admin\" must be an organization role key",
        ),
        (
            json!({"type": "roster.batch", "data": {"memberships": {
                "upserted": [{"email": "hal@example.com", "organization": "acme"}],
                "removed": [{"email": "Hal@example.com", "organization": "acme"}]}}}),
            "data.memberships.removed[0]: the same address and organization as \
             data.memberships.upserted[0]",
        ),
        (
            json!({"type": "membership.upserted", "data": {
                "email": "hal@example.com", "organization": "a b"}}),
            "data.organization: organization \"a b\" must be",
        ),
        (
            json!({"type": "membership.removed", "data": {"email": "hal@example.com"}}),
            "data.organization: missing or not a string",
        ),
        (
            json!({"type": "membership.upserted", "data": {
                "email": "hal@example.com", "organization": "acme", "source": "SCIM"}}),
            "data.source: \"SCIM\" names \"scim\"",
        ),
    ];
    for (payload, named) in rejections {
        let answer = service.roster(&message_id(), &payload).await;
        answer.expect(StatusCode::BAD_REQUEST);
        let error = answer.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.contains(named), "{named}: {error}");
    }
    let padding = "x".repeat(invite_sync::service::http::MAX_BODY);
    let big = json!({"type": "membership.upserted", "data": {
        "email": "hal@example.com", "organization": "acme",
        "private_metadata": {"padding": padding}}})
    .to_string()
    .into_bytes();
    let headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &big);
    service
        .post(path, headers, big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(membership_roster(&h).await, before, "nothing was applied");
    assert_eq!(roster(&h).await, ["cy@example.com"]);

    // A membership row SCIM owns refuses the payload whole.
    sqlx::query(
        "INSERT INTO desired_memberships (email, organization, source)
         VALUES ('dee@example.com', 'acme', 'scim')",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let scim = json!({"type": "roster.batch", "data": {
        "upserted": [{"email": "jo@example.com"}],
        "memberships": {"removed": [{"email": "dee@example.com", "organization": "acme"}]}}});
    let answer = service.roster(&message_id(), &scim).await;
    answer.expect(StatusCode::CONFLICT);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("through the identity provider: dee@example.com in acme")),
        "{answer:?}"
    );
    assert_eq!(roster(&h).await, ["cy@example.com"], "nothing was applied");
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_membership_roster_that_is_a_view_refuses_memberships_and_not_the_instance_roster() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__SOURCE__MEMBERSHIPS_RELATION", "members_view"),
    ])
    .await;
    sqlx::query("CREATE VIEW members_view AS SELECT * FROM desired_memberships")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let service = Service::start(&h).await;
    let membership = json!({"type": "roster.batch", "data": {
        "upserted": [{"email": "ann@example.com"}],
        "memberships": {"upserted": [{"email": "ann@example.com", "organization": "acme"}]}}});
    let answer = service.roster(&message_id(), &membership).await;
    answer.expect(StatusCode::CONFLICT);
    assert!(
        answer.json()["error"].as_str().is_some_and(
            |e| e.starts_with("source.memberships_relation \"members_view\" is a view")
        ),
        "{answer:?}"
    );
    assert!(
        roster(&h).await.is_empty(),
        "nothing of the payload was applied"
    );
    let instance = json!({"type": "invitee.upserted", "data": {"email": "ann@example.com"}});
    let answer = service.roster(&message_id(), &instance).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "upserted": 1, "removed": 0})
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_webhook_deliveries")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 1, "the refused delivery was not recorded");
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// The Clerk webhook

#[tokio::test(flavor = "multi_thread")]
async fn a_clerk_user_created_webhook_marks_the_person_as_a_user_and_no_invitation_is_spent_on_them(
) {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__CLERK_WEBHOOK_SECRET", CLERK_SECRET),
        ("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.1"),
    ])
    .await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;

    let created = json!({"type": "user.created", "object": "event", "data": {
        "id": "user_2abc", "email_addresses": [{"email_address": "Ann@Example.com"}]}});
    let answer = service.clerk(&message_id(), &created).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "users": 1})
    );
    let known: Vec<(String, String)> =
        sqlx::query_as("SELECT email, seen_via FROM invite_sync_known_users ORDER BY email")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        known,
        [("ann@example.com".to_owned(), "user.created".to_owned())]
    );

    let updated = json!({"type": "user.updated", "data": {
        "email_addresses": [{"email_address": "bob@example.com"}]}});
    let answer = service.clerk(&message_id(), &updated).await;
    assert_eq!(answer.expect(StatusCode::OK).json()["status"], "ignored");
    let body = created.to_string().into_bytes();
    let forged = signed("svix-", OTHER_SECRET, &message_id(), now(), &body);
    service
        .post("/v1/webhooks/clerk", forged, body.clone())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // Clerk signs with svix-* headers; webhook-* ones are not what it sends.
    let standard = signed("webhook-", CLERK_SECRET, &message_id(), now(), &body);
    service
        .post("/v1/webhooks/clerk", standard, body)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let malformed = br#"{"type": "user.created", "data": "#.to_vec();
    let headers = signed("svix-", CLERK_SECRET, &message_id(), now(), &malformed);
    service
        .post("/v1/webhooks/clerk", headers, malformed)
        .await
        .expect(StatusCode::BAD_REQUEST);
    let big = json!({"type": "user.created", "data": {
        "email_addresses": [{"email_address": "big@example.com"}],
        "padding": "x".repeat(invite_sync::service::http::MAX_BODY)}})
    .to_string()
    .into_bytes();
    let headers = signed("svix-", CLERK_SECRET, &message_id(), now(), &big);
    service
        .post("/v1/webhooks/clerk", headers, big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_known_users")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(known, 1);

    h.add_people(&["ann@example.com"]).await;
    let run_id = service
        .api(reqwest::Method::POST, "/v1/sync", Some(API_TOKEN))
        .await
        .expect(StatusCode::ACCEPTED)
        .json()["run_id"]
        .as_str()
        .and_then(|id| id.parse::<uuid::Uuid>().ok())
        .expect("a run id");
    let run = wait_for("the requested run", DEADLINE, || async {
        runs(&h)
            .await
            .into_iter()
            .find(|r| r.id == run_id && r.outcome != "running")
    })
    .await;
    let runs = wait_idle(&h, 2).await;
    assert_eq!(run.outcome, "succeeded", "{run:?}");
    assert_eq!(
        count(&run, "already_user") + count(&run, "accepted"),
        1,
        "{run:?}"
    );
    for run in &runs {
        assert_eq!(count(run, "create"), 0, "{run:?}");
        assert_eq!(count(run, "created"), 0, "{run:?}");
    }
    let stats = h.sim.stats();
    assert_eq!(stats.total(Operation::CreateInvitation), 0);
    assert_eq!(stats.total(Operation::CreateBulkInvitations), 0);
    assert!(h.sim.invitations().is_empty());
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// Stopping

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_user_still_on_the_roster_is_invited_again_within_one_cycle_of_the_webhooks() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__CLERK_WEBHOOK_SECRET", CLERK_SECRET),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.1"),
    ])
    .await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;
    h.add_people(&["ann@example.com", "bob@example.com"]).await;
    wait_invited(&h, "ann@example.com").await;
    wait_invited(&h, "bob@example.com").await;

    // Ann accepts: Clerk makes her a user and says so.
    let first = h
        .sim
        .invitations()
        .into_iter()
        .find(|i| i.email_address == "ann@example.com")
        .expect("ann was invited");
    assert!(h.sim.accept(&first.id));
    let ann = h
        .sim
        .users()
        .into_iter()
        .find(|u| u.emails().any(|e| e == "ann@example.com"))
        .expect("accepting made ann a user");
    let created = json!({"type": "user.created", "object": "event", "data": {
        "id": ann.id, "email_addresses": [{"email_address": "ann@example.com"}]}});
    service
        .clerk(&message_id(), &created)
        .await
        .expect(StatusCode::OK);
    let idle = wait_idle(&h, 2).await.len();

    // Clerk deletes her account while she is still on the roster.
    assert!(h.sim.delete_user(&ann.id));
    let deleted = json!({"type": "user.deleted", "object": "event", "data": {
        "deleted": true, "id": ann.id, "object": "user"}});
    let answer = service.clerk(&message_id(), &deleted).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "users": 1})
    );
    // The webhook asks for the cycle itself: the schedule never fires in this test.
    wait_for("ann invited again", DEADLINE, || async {
        (invitations(&h, "ann@example.com", InvitationStatus::Pending) == 1).then_some(())
    })
    .await;
    let runs = wait_idle(&h, idle + 1).await;
    assert_eq!(runs.len(), idle + 1, "one cycle invited her again");
    assert_eq!(
        invitations(&h, "ann@example.com", InvitationStatus::Accepted),
        1
    );
    assert_eq!(
        invitations(&h, "bob@example.com", InvitationStatus::Pending),
        1
    );
    assert_eq!(h.sim.invitations().len(), 3, "no duplicate");
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT deleted_at FROM invite_sync_known_users WHERE email = 'ann@example.com'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(deleted_at.is_some());

    // A deletion for an id nobody here has, and an event without an id, change nothing.
    let stranger = json!({"type": "user.deleted", "data": {"deleted": true, "id": "user_none"}});
    let answer = service.clerk(&message_id(), &stranger).await;
    assert_eq!(
        answer.expect(StatusCode::OK).json(),
        json!({"status": "applied", "users": 0})
    );
    let no_id = json!({"type": "user.deleted", "data": {"deleted": true}});
    service
        .clerk(&message_id(), &no_id)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(h.sim.invitations().len(), 3);
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_the_token_stops_the_service_in_time_and_closes_the_port() {
    let h = harness(&[]).await;
    let service = Service::start(&h).await;
    Answer::read(service.get("/healthz").await)
        .await
        .expect(StatusCode::OK);
    wait_idle(&h, 1).await;
    let addr = service.addr;
    let client = service.client.clone();

    let started = std::time::Instant::now();
    service.stop().await.expect("service::run returns Ok");
    assert!(
        started.elapsed() < Duration::from_secs(SHUTDOWN_TIMEOUT_SECONDS),
        "stopping took {:?}",
        started.elapsed()
    );
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the port still accepts after the stop");
    assert!(client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());
    let runs = runs(&h).await;
    assert!(runs.iter().all(|r| r.outcome != "running"), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roster_batch_naming_one_person_twice_is_refused_or_applied_once_never_a_server_error() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let service = Service::start(&h).await;
    let batch = json!({"type": "roster.batch", "data": {"upserted": [
        {"email": "dup@example.com", "public_metadata": {"n": 1}},
        {"email": "DUP@example.com", "public_metadata": {"n": 2}}]}});
    let answer = service.roster(&message_id(), &batch).await;
    match answer.status {
        StatusCode::OK => assert_eq!(roster(&h).await, ["dup@example.com"]),
        StatusCode::BAD_REQUEST => {
            let error = answer.json()["error"].as_str().unwrap_or("").to_owned();
            assert!(error.contains("data.upserted[1]"), "{error}");
            assert!(roster(&h).await.is_empty());
        }
        _ => panic!("{answer:?}"),
    }
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requested_run_that_another_holder_of_the_lock_skips_is_still_recorded() {
    let h = harness(&[("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN)]).await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;
    let target = h.env["INVITE_SYNC__SYNC__TARGET"].clone();
    let elsewhere = invite_sync::store::lock::LeaderLock::try_acquire(&h.db.pool, &target)
        .await
        .unwrap()
        .expect("the lock is free between cycles");

    let body = service
        .api(reqwest::Method::POST, "/v1/sync", Some(API_TOKEN))
        .await
        .expect(StatusCode::ACCEPTED)
        .json();
    let run_id: uuid::Uuid = body["run_id"].as_str().unwrap().parse().unwrap();
    let run = wait_for("the requested run to be recorded", DEADLINE, || async {
        runs(&h).await.into_iter().find(|r| r.id == run_id)
    })
    .await;
    assert_eq!(run.outcome, "skipped", "{run:?}");
    elsewhere.release().await.unwrap();
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// Limits no client can get around: probes outside the webhooks' limit, signature headers
// before the body, header-read and keep-alive idle timeouts, a bound on connections

/// A raw connection that sends `head` (and nothing more unless told).
async fn raw(addr: SocketAddr, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the service accepts");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("the head is sent");
    stream
}

/// Reads until `needle` arrives; the text read, or `None` when the peer closes first.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.contains(needle) {
            return Some(text);
        }
    }
}

/// Whether the peer closes the connection within `deadline` (reading and dropping anything
/// it sends first).
async fn closed_within(stream: &mut tokio::net::TcpStream, deadline: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The head of a signed roster webhook announcing a body of `length` bytes, asking for
/// `100 Continue` so that the test sees when the handler starts reading the body.
fn slow_webhook_head(length: usize) -> String {
    let id = message_id();
    let timestamp = now();
    let body = vec![b' '; length];
    let signature = invite_sync::webhook_signature::sign(ROSTER_SECRET, &id, timestamp, &body)
        .expect("the secret is valid");
    format!(
        "POST /v1/webhooks/roster HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nExpect: 100-continue\r\nwebhook-id: {id}\r\n\
         webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_readyz_and_metrics_answer_within_a_second_while_64_slow_webhook_bodies_are_open() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let service = Service::start(&h).await;
    wait_idle(&h, 1).await;

    // 64 webhooks whose handlers are reading a body that never comes: each has been told
    // `100 Continue`, so each holds its place in the webhooks' limit.
    let mut slow = Vec::new();
    for _ in 0..64 {
        use tokio::io::AsyncWriteExt;
        let mut stream = raw(service.addr, &slow_webhook_head(4096)).await;
        let answer = tokio::time::timeout(DEADLINE, read_until(&mut stream, "\r\n\r\n"))
            .await
            .expect("the handler starts reading the body");
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 100")),
            "{answer:?}"
        );
        stream
            .write_all(b"{\"upsert\": [")
            .await
            .expect("a part of the body is sent");
        slow.push(stream);
    }

    let probe = probe_client();
    assert_probes_answer(&probe, |path| service.url(path)).await;
    // A webhook without signature headers waits for no slot: it is refused at once.
    let unsigned = probe
        .post(service.url("/v1/webhooks/roster"))
        .body("{}")
        .send()
        .await
        .expect("an unsigned webhook is answered within 1 s while every slot is taken");
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    // Routes that are not webhooks are not taken for ones.
    let unknown = probe
        .get(service.url("/no-such-route"))
        .send()
        .await
        .expect("an unknown route is answered");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    drop(slow);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_without_signature_headers_is_refused_before_its_body_is_read() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__HTTP__CLERK_WEBHOOK_SECRET", CLERK_SECRET),
    ])
    .await;
    let service = Service::start(&h).await;
    let bad_signature = "x".repeat(44);
    let heads = [
        // No signature header at all.
        "POST /v1/webhooks/roster HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n".to_owned(),
        "POST /v1/webhooks/clerk HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n".to_owned(),
        // An empty id.
        format!(
            "POST /v1/webhooks/roster HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\
             webhook-id: \r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,{bad_signature}\r\n\r\n",
            now()
        ),
        // A timestamp a day old.
        format!(
            "POST /v1/webhooks/clerk HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\
             svix-id: msg_1\r\nsvix-timestamp: {}\r\nsvix-signature: v1,{bad_signature}\r\n\r\n",
            now() - 86_400
        ),
        // No v1 signature.
        format!(
            "POST /v1/webhooks/roster HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\
             webhook-id: msg_2\r\nwebhook-timestamp: {}\r\nwebhook-signature: v2,abc\r\n\r\n",
            now()
        ),
    ];
    for head in heads {
        // The body is never sent: the answer comes from the headers alone, well before the
        // request timeout (15 s) would end the wait for the body.
        let mut stream = raw(service.addr, &head).await;
        let answer =
            tokio::time::timeout(Duration::from_secs(5), read_until(&mut stream, "\r\n\r\n"))
                .await
                .unwrap_or_else(|_| panic!("no answer without the body to {head:?}"))
                .unwrap_or_else(|| panic!("closed without an answer to {head:?}"));
        assert!(answer.starts_with("HTTP/1.1 401"), "{head:?}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_header_and_an_idle_keep_alive_connection_are_closed_within_the_header_read_timeout(
) {
    let h = harness(&[("INVITE_SYNC__HTTP__HEADER_READ_TIMEOUT_SECONDS", "1")]).await;
    let service = Service::start(&h).await;

    let mut silent = raw(service.addr, "").await;
    let mut half = raw(service.addr, "GET /healthz HTTP/1.1\r\nHost: te").await;
    let mut idle = raw(service.addr, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let answer = read_until(&mut idle, "ok\n")
        .await
        .expect("/healthz answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    for (what, stream) in [
        ("a connection that sends nothing", &mut silent),
        ("a half-sent header", &mut half),
        ("an idle keep-alive connection", &mut idle),
    ] {
        assert!(
            closed_within(stream, DEADLINE).await,
            "{what} was still open after {DEADLINE:?} with a 1 s header-read timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__MAX_CONNECTIONS", "2"),
        ("INVITE_SYNC__HTTP__HEADER_READ_TIMEOUT_SECONDS", "600"),
    ])
    .await;
    let service = Service::start(&h).await;
    let mut first = raw(service.addr, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let mut second = raw(service.addr, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    for stream in [&mut first, &mut second] {
        read_until(stream, "ok\n").await.expect("/healthz answers");
    }
    // Both stay open (keep-alive): a third is not served while they are.
    let mut third = raw(service.addr, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), read_until(&mut third, "ok\n"))
            .await
            .is_err(),
        "a third connection was served beyond http.max_connections = 2"
    );
    drop(first);
    let answer = tokio::time::timeout(DEADLINE, read_until(&mut third, "ok\n"))
        .await
        .expect("the third is served once one closes");
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_serves_the_probes_alone_even_while_the_main_listener_is_full() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__MAX_CONNECTIONS", "1"),
        ("INVITE_SYNC__HTTP__HEADER_READ_TIMEOUT_SECONDS", "600"),
    ])
    .await;
    let service = Service::with_admin(&h).await;
    // The one connection the main listener allows, held open.
    let mut holder = raw(service.addr, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    read_until(&mut holder, "ok\n")
        .await
        .expect("/healthz answers");

    let probe = probe_client();
    assert_probes_answer(&probe, |path| service.admin_url(path)).await;
    for path in ["/v1/status", "/v1/webhooks/roster"] {
        let answer = probe
            .post(service.admin_url(path))
            .send()
            .await
            .expect("the admin listener answers");
        assert!(
            matches!(
                answer.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{path} on the admin listener: {}",
            answer.status()
        );
    }
    drop(holder);
    service.stop().await.expect("a clean stop");
}

// ---------------------------------------------------------------------------
// Clerk's 429 blocks: capped, and visible

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_blocked_for_a_day_is_held_an_hour_at_most_and_shown_by_readyz_status_and_a_metric(
) {
    use invite_sync::clerk::sim::{Fault, FaultKind};
    let h = harness(&[("INVITE_SYNC__HTTP__API_TOKEN", API_TOKEN)]).await;
    h.sim.inject_fault(Fault::new(
        Operation::ListInvitations,
        1,
        FaultKind::Status {
            status: 429,
            retry_after: Some(86_400),
        },
    ));
    let service = Service::start(&h).await;
    let finished = wait_idle(&h, 1).await;
    assert_eq!(finished[0].outcome, "failed", "the start cycle cannot list");
    let now = chrono::Utc::now().timestamp() as f64;

    let ready = Answer::read(service.get("/readyz").await).await;
    let ready = ready.expect(StatusCode::OK).json();
    assert_eq!(ready["status"], "degraded", "{ready}");
    let left = ready["blocked_seconds"]
        .as_u64()
        .expect("the block's length");
    assert!((3000..=3660).contains(&left), "{ready}");

    let listing = wait_for("the listing's block in /v1/status", DEADLINE, || async {
        let status = service
            .api(reqwest::Method::GET, "/v1/status", Some(API_TOKEN))
            .await;
        let status = status.expect(StatusCode::OK).json();
        status["clerk_blocks"]
            .as_array()
            .expect("clerk_blocks")
            .iter()
            .find(|b| b["operation"] == "list_invitations")
            .cloned()
    })
    .await;
    let seconds = listing["seconds_left"].as_i64().expect("seconds_left");
    assert!((3000..=3660).contains(&seconds), "{listing}");

    let metrics = scrape(&service).await;
    let until = metrics
        .samples
        .iter()
        .find(|s| {
            s.name == "invite_sync_clerk_blocked_until_timestamp_seconds"
                && s.labels.get("operation").map(String::as_str) == Some("list_invitations")
        })
        .expect("the block's metric")
        .value;
    assert!(
        until > now + 3000.0 && until <= now + 3661.0,
        "blocked until {until}, now {now}"
    );
    service.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_runs_a_cycle_unasked_once_unsettled_creates_can_be_looked_up() {
    use invite_sync::clerk::sim::{Fault, FaultKind};
    let h = harness(&[("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "2")]).await;
    h.add_people(&["lost-answer@example.com"]).await;
    // The create reaches Clerk, its answer is lost: the start cycle leaves it unsettled.
    for operation in [
        Operation::CreateBulkInvitations,
        Operation::CreateInvitation,
    ] {
        h.sim
            .inject_fault(Fault::new(operation, 1, FaultKind::DropAfterApply));
    }
    let service = Service::start(&h).await;
    let first = wait_idle(&h, 1).await;
    assert_eq!(first[0].outcome, "partial", "{:?}", first[0]);

    // No schedule, no change, no request: the service wakes up by itself once the create
    // can be looked up, and adopts the invitation Clerk made.
    let pool = h.db.pool.clone();
    wait_for("the unsettled create to be settled", DEADLINE, || {
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM invite_sync_ledger WHERE state = 'sending'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (waiting == 0).then_some(())
        }
    })
    .await;
    let runs = wait_idle(&h, 2).await;
    assert!(
        runs.iter().skip(1).all(|r| r.trigger == "backlog"),
        "{runs:?}"
    );
    assert_eq!(
        invitations(&h, "lost-answer@example.com", InvitationStatus::Pending),
        1
    );
    service.stop().await.expect("a clean stop");
}

// ---------------------------------------------------------------------------
// Errors in JSON, a view as the roster, held revocations on every replica

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_json_a_413_an_unknown_path_and_a_wrong_method_included() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let service = Service::start(&h).await;

    let unknown = Answer::read(service.get("/v1/nothing-here").await).await;
    unknown.expect(StatusCode::NOT_FOUND);
    assert_eq!(unknown.content_type, "application/json");
    assert_eq!(unknown.json()["error"], "no such path: /v1/nothing-here");

    let wrong_method = Answer::read(service.get("/v1/webhooks/roster").await).await;
    wrong_method.expect(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.content_type, "application/json");
    assert_eq!(
        wrong_method.json()["error"],
        "method not allowed on this path"
    );

    let big = vec![b'x'; invite_sync::service::http::MAX_BODY + 1];
    let headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &big);
    let too_large = service.post("/v1/webhooks/roster", headers, big).await;
    too_large.expect(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.content_type, "application/json");
    assert_eq!(
        too_large.json()["error"],
        format!(
            "the request body is larger than {} bytes",
            invite_sync::service::http::MAX_BODY
        )
    );
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roster_webhook_into_a_view_is_refused_with_a_4xx_that_says_a_table_is_needed() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__SOURCE__RELATION", "roster_view"),
    ])
    .await;
    sqlx::query("CREATE VIEW roster_view AS SELECT * FROM desired_invitees")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let service = Service::start(&h).await;
    let upsert = json!({"type": "invitee.upserted", "data": {"email": "ann@example.com"}});
    let answer = service.roster(&message_id(), &upsert).await;
    answer.expect(StatusCode::CONFLICT);
    let error = answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("source.relation \"roster_view\" is a view")
            && error.contains("needs a table"),
        "{error}"
    );
    assert!(roster(&h).await.is_empty());
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_exports_held_revocations_from_the_shared_state_after_another_released_them() {
    let h = harness(&[]).await;
    let emails: Vec<String> = people("held", 30);
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    h.add_people(&refs).await;
    h.cycle().await;
    h.remove_people(&refs).await;
    assert_eq!(h.cycle().await.held_revocations, 30);

    // This process is the replica that saw the hold; it serves /metrics.
    let service = Service::start(&h).await;
    wait_idle(&h, 3).await;
    let held = scrape(&service).await.sum("invite_sync_held_revocations");
    assert_eq!(held, 30.0);

    // Another process releases them.
    let mut command = h.command();
    command.args(["sync", "--allow-revocations", "30"]);
    let released = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("invite-sync runs");
    let stdout = String::from_utf8_lossy(&released.stdout);
    assert!(stdout.contains("30 revoked, 0 held"), "{stdout}");

    let held = scrape(&service).await.sum("invite_sync_held_revocations");
    assert_eq!(
        held, 0.0,
        "the gauge is stale on the replica that did not release"
    );
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// Hostile roster webhooks

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_character_in_a_signed_roster_webhook_is_a_400_naming_the_field() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let service = Service::start(&h).await;
    let nul = "a\u{0}b";
    let cases = [
        (json!({"email": "nul@example.com", "source": nul}), "source"),
        (
            json!({"email": "nul@example.com", "public_metadata": {"team": nul}}),
            "public_metadata",
        ),
        (
            json!({"email": "nul@example.com", "public_metadata": {nul: 1}}),
            "public_metadata",
        ),
        (
            json!({"email": "nul@example.com", "redirect_url": format!("https://x.example/{nul}")}),
            "redirect_url",
        ),
        (json!({"email": format!("nul{nul}@example.com")}), "email"),
        (
            json!({"email": "nul@example.com", "template_slug": nul}),
            "template_slug",
        ),
    ];
    for (data, field) in cases {
        let upsert = json!({"type": "invitee.upserted", "data": data});
        let answer = service.roster(&message_id(), &upsert).await;
        answer.expect(StatusCode::BAD_REQUEST);
        let error = answer.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.contains(field), "{field}: {error}");
    }
    assert!(roster(&h).await.is_empty());
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_webhook_deliveries")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a refused delivery was recorded");
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_webhook_id_unknown_fields_and_repeated_keys_are_refused_by_name() {
    let h = harness(&[("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET)]).await;
    let service = Service::start(&h).await;
    let path = "/v1/webhooks/roster";

    let upsert = json!({"type": "invitee.upserted", "data": {"email": "gus@example.com"}});
    let answer = service.roster("", &upsert).await;
    answer.expect(StatusCode::UNAUTHORIZED);
    assert!(answer.text.contains("webhook-id"), "{answer:?}");

    let refused = [
        (
            r#"{"type": "invitee.upserted", "data": {"email": "gus@example.com"}, "extra": 1}"#,
            "extra: unknown field",
        ),
        (
            r#"{"type": "invitee.upserted", "type": "invitee.removed", "data": {"email": "gus@example.com"}}"#,
            r#""type""#,
        ),
        (
            r#"{"type": "invitee.upserted", "data": {"email": "gus@example.com", "email": "hal@example.com"}}"#,
            r#""email""#,
        ),
    ];
    for (payload, named) in refused {
        let body = payload.as_bytes().to_vec();
        let headers = signed("webhook-", ROSTER_SECRET, &message_id(), now(), &body);
        let answer = service.post(path, headers, body).await;
        answer.expect(StatusCode::BAD_REQUEST);
        let error = answer.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.contains(named), "{named}: {error}");
    }
    assert!(roster(&h).await.is_empty());
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_webhook_deliveries")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a refused delivery was recorded");

    // Two honest deliveries with their own ids are both applied.
    for email in ["gus@example.com", "hal@example.com"] {
        let upsert = json!({"type": "invitee.upserted", "data": {"email": email}});
        let answer = service.roster(&message_id(), &upsert).await;
        assert_eq!(answer.expect(StatusCode::OK).json()["status"], "applied");
    }
    assert_eq!(roster(&h).await, ["gus@example.com", "hal@example.com"]);
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_with_unicode_whitespace_is_one_rule_for_the_table_the_webhook_and_the_cycle() {
    let h = harness(&[
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.2"),
        ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1"),
    ])
    .await;
    h.add_people(&["stays@example.com", "dan@example.com"])
        .await;
    let nbsp = "dan@example.com\u{a0}";
    h.add_people(&[nbsp]).await;
    let service = Service::start(&h).await;
    let runs = wait_idle(&h, 1).await;
    wait_invited(&h, "dan@example.com").await;
    assert_eq!(count(&runs[0], "invalid"), 1, "{:?}", runs[0].counts);

    // The webhook takes the address by the same rule as the cycle: refused, not removed: 0.
    let removal = json!({"type": "invitee.removed", "data": {"email": nbsp}});
    let answer = service.roster(&message_id(), &removal).await;
    answer.expect(StatusCode::BAD_REQUEST);
    assert!(answer.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("data.email"));

    let removal = json!({"type": "invitee.removed", "data": {"email": "dan@example.com"}});
    let answer = service.roster(&message_id(), &removal).await;
    assert_eq!(answer.expect(StatusCode::OK).json()["removed"], 1);
    // What the cycle saw as dan is gone, so dan's invitation is revoked.
    wait_for("the revocation of dan@example.com", DEADLINE, || async {
        (invitations(&h, "dan@example.com", InvitationStatus::Pending) == 0).then_some(())
    })
    .await;
    service.stop().await.expect("the service stops cleanly");
}

// ---------------------------------------------------------------------------
// Housekeeping

#[tokio::test(flavor = "multi_thread")]
async fn the_service_prunes_history_older_than_retention_days_when_it_starts() {
    let h = harness(&[("INVITE_SYNC__RETENTION__DAYS", "7")]).await;
    for sql in [
        "INSERT INTO invite_sync_webhook_deliveries (source, message_id, received_at)
         VALUES ('roster', 'msg_old', now() - interval '8 days'),
                ('roster', 'msg_recent', now() - interval '6 days')",
        "INSERT INTO invite_sync_clerk_calls (target, endpoint, items, called_at)
         VALUES ('default', 'create_invitation', 1, now() - interval '8 days')",
    ] {
        sqlx::query(sql).execute(&h.db.pool).await.unwrap();
    }
    let service = Service::start(&h).await;

    let left: Vec<String> = wait_for("the housekeeping pass", DEADLINE, || async {
        let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM invite_sync_clerk_calls")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT message_id FROM invite_sync_webhook_deliveries")
                .fetch_all(&h.db.pool)
                .await
                .unwrap();
        (calls == 0 && ids.len() == 1).then_some(ids)
    })
    .await;
    assert_eq!(left, ["msg_recent"]);
    service.stop().await.expect("the service stops cleanly");
}

/// A client that gives up after 1 s: what a Kubernetes probe allows.
fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("an HTTP client builds")
}

/// `/healthz`, `/readyz` and `/metrics` each answer 200 within the client's timeout.
async fn assert_probes_answer(probe: &reqwest::Client, url: impl Fn(&str) -> String) {
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = probe
            .get(url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} did not answer within 1 s: {e}", url(path)));
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
}
