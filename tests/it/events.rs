//! Outbound events: a receiver on a real socket verifies every delivery with the Standard
//! Webhooks algorithm (written here from the specification, not the crate's signer); the
//! events of a backlog survive SIGKILLs of `run`, each ledger change with exactly one event
//! id, delivered at least once, none invented, in order per person; a receiver that answers
//! 500 for a while gets everything afterwards; one that never recovers leaves dead letters
//! that `events replay` delivers once it is back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use invite_sync::clerk::sim::{Fault, FaultKind, Operation, SimOptions};
use invite_sync::clerk::InvitationStatus;
use rand::Rng;
use sha2::Sha256;

use crate::common::{people, refs, unique_target, wait_for, Harness, Proc, Service};
use crate::faults::{overrides, seeded_rng};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    Fail,
}

/// One delivery the receiver took (answered 200), its signature verified.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    body: String,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    accepted: Vec<Got>,
    refused: usize,
    /// Deliveries whose signature, timestamp or headers did not verify: must stay empty.
    bad: Vec<String>,
}

/// An HR system's endpoint: verifies each delivery per Standard Webhooks, then answers per
/// its mode.
#[derive(Clone)]
struct Receiver {
    inner: Arc<Mutex<Inner>>,
    key: Arc<Vec<u8>>,
    secret: String,
    addr: SocketAddr,
}

impl Receiver {
    async fn start() -> Receiver {
        let key: Vec<u8> = (0..32).map(|_| rand::thread_rng().gen()).collect();
        let secret = format!("whsec_{}", B64.encode(&key));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port is free");
        let addr = listener.local_addr().expect("the listener has an address");
        let receiver = Receiver {
            inner: Arc::new(Mutex::new(Inner {
                mode: Mode::Accept,
                accepted: Vec::new(),
                refused: 0,
                bad: Vec::new(),
            })),
            key: Arc::new(key),
            secret,
            addr,
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// `INVITE_SYNC__EVENTS__ENDPOINTS` naming this receiver.
    fn endpoints(&self) -> String {
        format!(
            "[{{ url = \"{}\", secret = \"{}\" }}]",
            self.url(),
            self.secret
        )
    }

    fn set(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accepted(&self) -> Vec<Got> {
        self.lock().accepted.clone()
    }

    fn refused(&self) -> usize {
        self.lock().refused
    }

    fn assert_all_verified(&self) {
        let bad = self.lock().bad.clone();
        assert!(bad.is_empty(), "deliveries that did not verify: {bad:?}");
    }

    /// The Standard Webhooks check: `webhook-id`, `webhook-timestamp` within five minutes,
    /// and a `v1,` signature among `webhook-signature`'s that is the base64 HMAC-SHA256, keyed
    /// with the secret's base64-decoded bytes, of `{id}.{timestamp}.{body}`.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name} header"))
        };
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?;
        let signatures = header("webhook-signature")?;
        let seconds: i64 = timestamp
            .parse()
            .map_err(|_| format!("webhook-timestamp {timestamp:?} is not a number"))?;
        if (chrono::Utc::now().timestamp() - seconds).abs() > 300 {
            return Err(format!(
                "webhook-timestamp {seconds} is not within 5 minutes"
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(|e| e.to_string())?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = B64.encode(mac.finalize().into_bytes());
        let matched = signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .any(|s| s == expected);
        if !matched {
            return Err(format!("no v1 signature of {id} matches"));
        }
        if headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| !v.starts_with("application/json"))
        {
            return Err(format!("{id}: content-type is not application/json"));
        }
        Ok(id)
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verified = r.verify(&headers, &body);
    let mut inner = r.lock();
    let id = match verified {
        Ok(id) => id,
        Err(reason) => {
            inner.bad.push(reason);
            return StatusCode::BAD_REQUEST;
        }
    };
    match inner.mode {
        Mode::Fail => {
            inner.refused += 1;
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Mode::Accept => {
            inner.accepted.push(Got {
                id,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            StatusCode::OK
        }
    }
}

/// One row of the outbox.
#[derive(Debug, Clone)]
struct Event {
    id: i64,
    event_id: String,
    event_type: String,
    person_key: String,
    payload: serde_json::Value,
}

async fn outbox(h: &Harness) -> Vec<Event> {
    let rows: Vec<(i64, String, String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT id, event_id, type, person_key, payload FROM invite_sync_outbox ORDER BY id",
    )
    .fetch_all(&h.db.pool)
    .await
    .expect("the outbox can be read");
    rows.into_iter()
        .map(|(id, event_id, event_type, person_key, payload)| Event {
            id,
            event_id,
            event_type,
            person_key,
            payload,
        })
        .collect()
}

async fn undelivered(h: &Harness) -> i64 {
    h.db.scalar("SELECT count(*) FROM invite_sync_outbox_deliveries WHERE delivered_at IS NULL")
        .await
}

async fn dead(h: &Harness) -> i64 {
    h.db.scalar("SELECT count(*) FROM invite_sync_outbox_deliveries WHERE dead_at IS NOT NULL")
        .await
}

/// Every event of the outbox was received at least once with the body written; nothing was
/// received that the outbox does not hold; each person's events arrived (first arrivals) in
/// the order they were written.
fn assert_delivered_in_order(events: &[Event], receiver: &Receiver) {
    receiver.assert_all_verified();
    let by_id: HashMap<&str, &Event> = events.iter().map(|e| (e.event_id.as_str(), e)).collect();
    let accepted = receiver.accepted();
    let mut first_arrival: Vec<&Event> = Vec::new();
    let mut seen = BTreeSet::new();
    for got in &accepted {
        let Some(event) = by_id.get(got.id.as_str()) else {
            panic!(
                "received {} which the outbox does not hold (invented)",
                got.id
            );
        };
        let body: serde_json::Value =
            serde_json::from_str(&got.body).expect("a delivery's body is JSON");
        assert_eq!(
            body, event.payload,
            "{}: the body sent is the one written",
            got.id
        );
        if seen.insert(got.id.clone()) {
            first_arrival.push(event);
        }
    }
    let missing: Vec<&str> = events
        .iter()
        .filter(|e| !seen.contains(&e.event_id))
        .map(|e| e.event_id.as_str())
        .collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    let mut last: HashMap<&str, i64> = HashMap::new();
    for event in first_arrival {
        if let Some(before) = last.insert(&event.person_key, event.id) {
            assert!(
                before < event.id,
                "{}: event {} arrived after the later event {before}",
                event.person_key,
                event.id
            );
        }
    }
}

fn fast_delivery(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("INVITE_SYNC__EVENTS__ENDPOINTS", receiver.endpoints()),
        ("INVITE_SYNC__EVENTS__POLL_SECONDS", "0.05".to_owned()),
        ("INVITE_SYNC__EVENTS__RETRY_MIN_SECONDS", "0.05".to_owned()),
        ("INVITE_SYNC__EVENTS__RETRY_MAX_SECONDS", "0.2".to_owned()),
        ("INVITE_SYNC__EVENTS__TIMEOUT_SECONDS", "2".to_owned()),
    ]
}

async fn harness_with(receiver: &Receiver, extra: &[(&'static str, &str)]) -> Harness {
    let target = unique_target("events");
    let mut all: Vec<(&'static str, String)> = overrides(&target);
    all.extend(fast_delivery(receiver));
    for (key, value) in extra {
        all.push((key, (*value).to_owned()));
    }
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Harness::with(
        SimOptions {
            rate_limits: false,
            ..SimOptions::default()
        },
        &all,
    )
    .await
}

async fn add_with_source(h: &Harness, emails: &[String]) {
    for (n, email) in emails.iter().enumerate() {
        sqlx::query(
            "INSERT INTO desired_invitees (email, source, public_metadata) VALUES ($1, 'workday', $2)",
        )
        .bind(email)
        .bind(serde_json::json!({ "employee_id": n }))
        .execute(&h.db.pool)
        .await
        .expect("roster row inserted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_invitation_and_revocation_is_one_signed_event_with_the_roster_rows_source_and_metadata(
) {
    let receiver = Receiver::start().await;
    let h = harness_with(&receiver, &[]).await;
    let emails = people("shape", 3);
    add_with_source(&h, &emails).await;
    let service = Service::start(&h).await;
    wait_for(
        "three person.invited delivered",
        Duration::from_secs(60),
        || {
            let accepted = receiver.accepted().len();
            async move { (accepted >= 3).then_some(()) }
        },
    )
    .await;
    h.remove_people(&refs(&emails[..1])).await;
    wait_for(
        "the person.revoked delivered",
        Duration::from_secs(60),
        || {
            let got = receiver.accepted();
            async move {
                got.iter()
                    .any(|g| g.body.contains("\"person.revoked\""))
                    .then_some(())
            }
        },
    )
    .await;
    service.stop().await.expect("the service stops");
    let events = outbox(&h).await;
    assert_delivered_in_order(&events, &receiver);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "person.invited").count(),
        3,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "person.revoked").count(),
        1,
        "{types:?}"
    );
    let pending: BTreeMap<String, String> = h
        .sim
        .invitations()
        .into_iter()
        .filter(|i| i.status == InvitationStatus::Pending)
        .map(|i| (i.email_address.clone(), i.id.clone()))
        .collect();
    for event in &events {
        let body = &event.payload;
        assert_eq!(body["type"], event.event_type.as_str());
        let stamp = body["timestamp"].as_str().expect("a timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "timestamp {stamp:?} is RFC 3339"
        );
        let data = &body["data"];
        let email = data["email_address"].as_str().expect("an address");
        let n = emails
            .iter()
            .position(|e| e == email)
            .expect("an address of the roster");
        assert_eq!(data["source"], "workday", "{body}");
        assert_eq!(data["metadata"]["employee_id"], n, "{body}");
        assert!(
            data["invitation_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{body}"
        );
        if event.event_type == "person.invited" && email != emails[0] {
            assert_eq!(
                data["invitation_id"].as_str(),
                pending.get(email).map(String::as_str),
                "the invitation Clerk holds"
            );
        }
        if event.event_type == "person.revoked" {
            assert_eq!(email, emails[0]);
            assert_eq!(data["revoked_by_us"], true);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_of_run_lose_no_event_invent_none_and_keep_each_persons_order() {
    let (seed, mut rng) = seeded_rng("events kill storm");
    let receiver = Receiver::start().await;
    let h = harness_with(&receiver, &[]).await;
    let mut desired: Vec<String> = people("storm", 30);
    add_with_source(&h, &desired).await;
    let mut kills = 0;
    let mut rounds = 0;
    for round in 0..16 {
        if round % 3 == 0 {
            h.sim.inject_fault(Fault::new(
                [
                    Operation::CreateBulkInvitations,
                    Operation::CreateInvitation,
                ][round % 2],
                1,
                FaultKind::StatusAfterApply { status: 502 },
            ));
        }
        kills += usize::from(kill_at_random(&h, &receiver, &mut rng).await);
        rounds += 1;
    }
    let service = Service::start(&h).await;
    converge(&h, &receiver, &desired).await;
    service.stop().await.expect("the service stops");

    // A third of the roster leaves: revocations, each the person's second event.
    let leaving: Vec<String> = desired.iter().step_by(3).cloned().collect();
    h.remove_people(&refs(&leaving)).await;
    desired.retain(|e| !leaving.contains(e));
    for _ in 0..8 {
        kills += usize::from(kill_at_random(&h, &receiver, &mut rng).await);
        rounds += 1;
    }
    let service = Service::start(&h).await;
    converge(&h, &receiver, &desired).await;
    service.stop().await.expect("the service stops");
    println!(
        "events kill storm (seed {seed}): {kills} of {rounds} runs killed; {} deliveries taken for {} events",
        receiver.accepted().len(),
        outbox(&h).await.len()
    );
    assert!(kills > 0, "no run was killed: the storm tested nothing");

    let events = outbox(&h).await;
    assert_delivered_in_order(&events, &receiver);
    // Exactly one event id per ledger change: one person.invited per invitation invite-sync
    // made, one person.revoked per one it revoked, and no event for an invitation Clerk
    // does not hold.
    let invitations: HashMap<String, InvitationStatus> = h
        .sim
        .invitations()
        .into_iter()
        .map(|i| (i.id.clone(), i.status))
        .collect();
    let owned: Vec<(String, String)> = sqlx::query_as(
        "SELECT clerk_invitation_id, state FROM invite_sync_ledger
         WHERE owned AND clerk_invitation_id IS NOT NULL",
    )
    .fetch_all(&h.db.pool)
    .await
    .expect("the ledger can be read");
    let of_type = |kind: &str| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for event in events.iter().filter(|e| e.event_type == kind) {
            let id = event.payload["data"]["invitation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *counts.entry(id).or_default() += 1;
        }
        counts
    };
    let invited = of_type("person.invited");
    let revoked = of_type("person.revoked");
    for (id, state) in &owned {
        assert_eq!(invited.get(id), Some(&1), "{id}: one person.invited");
        let expected = usize::from(state == "revoked");
        assert_eq!(
            revoked.get(id).copied().unwrap_or(0),
            expected,
            "{id} ({state}): person.revoked events"
        );
    }
    for id in invited.keys().chain(revoked.keys()) {
        assert!(
            invitations.contains_key(id),
            "an event names {id}, which Clerk never made (invented)"
        );
    }
    assert_eq!(
        invited.len(),
        owned.len(),
        "no person.invited without a ledger entry"
    );
    assert_eq!(
        revoked.len(),
        leaving.len(),
        "one person.revoked per person who left"
    );
}

/// Spawns `run` and kills it with SIGKILL after a random number of Clerk calls or event
/// deliveries (or a random short while). Whether it was killed.
async fn kill_at_random(h: &Harness, receiver: &Receiver, rng: &mut rand::rngs::StdRng) -> bool {
    let calls = |h: &Harness| -> u64 {
        let stats = h.sim.stats();
        stats.counts.values().flat_map(BTreeMap::values).sum()
    };
    let after_calls = rng.gen_range(0..6u64);
    let after_deliveries = rng.gen_range(0..6usize);
    let within = Duration::from_millis(rng.gen_range(200..2500));
    let start_calls = calls(h);
    let start_deliveries = receiver.accepted().len();
    let mut process = Proc::spawn(h.command(), &["run"]);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if process.exited().is_some() {
            return false;
        }
        if (calls(h) >= start_calls + after_calls && after_calls > 0)
            || receiver.accepted().len() >= start_deliveries + after_deliveries.max(1)
            || tokio::time::Instant::now() >= deadline
        {
            return process.kill();
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Waits until each desired person has one pending invitation, nothing is unsettled, and
/// every event is delivered.
async fn converge(h: &Harness, receiver: &Receiver, desired: &[String]) {
    let want: BTreeSet<String> = desired.iter().cloned().collect();
    wait_for(
        "the roster invited and every event delivered",
        Duration::from_secs(180),
        || {
            let pending: BTreeSet<String> = h
                .pending()
                .into_iter()
                .map(|i| i.email_address.to_lowercase())
                .collect();
            let want = want.clone();
            let receiver = receiver.clone();
            async move {
                let sending =
                    h.db.scalar("SELECT count(*) FROM invite_sync_ledger WHERE state = 'sending'")
                        .await;
                let open = undelivered(h).await;
                let events = outbox(h).await.len();
                let got: BTreeSet<String> = receiver.accepted().into_iter().map(|g| g.id).collect();
                (pending == want && sending == 0 && open == 0 && got.len() >= events).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_500_for_a_while_gets_everything_afterwards() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Fail);
    let h = harness_with(&receiver, &[]).await;
    let emails = people("flaky", 4);
    add_with_source(&h, &emails).await;
    let service = Service::start(&h).await;
    wait_for(
        "a dozen refused deliveries",
        Duration::from_secs(60),
        || {
            let refused = receiver.refused();
            async move { (refused >= 12).then_some(()) }
        },
    )
    .await;
    assert!(receiver.accepted().is_empty());
    let attempts =
        h.db.scalar("SELECT max(attempts)::bigint FROM invite_sync_outbox_deliveries")
            .await;
    assert!(
        attempts >= 2,
        "deliveries were retried ({attempts} attempts)"
    );
    receiver.set(Mode::Accept);
    h.remove_people(&refs(&emails[..2])).await;
    wait_for("every event delivered", Duration::from_secs(60), || async {
        let events = outbox(&h).await.len();
        let open = undelivered(&h).await;
        (events >= 6 && open == 0).then_some(())
    })
    .await;
    service.stop().await.expect("the service stops");
    assert_eq!(
        dead(&h).await,
        0,
        "no dead letter while the receiver recovered"
    );
    assert_delivered_in_order(&outbox(&h).await, &receiver);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_recovers_leaves_dead_letters_that_replay_delivers() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Fail);
    let h = harness_with(&receiver, &[("INVITE_SYNC__EVENTS__MAX_ATTEMPTS", "3")]).await;
    let emails = people("dead", 3);
    add_with_source(&h, &emails).await;
    let service = Service::start(&h).await;
    wait_for("three dead letters", Duration::from_secs(60), || async {
        (dead(&h).await >= 3).then_some(())
    })
    .await;
    let attempts = h
        .db
        .scalar("SELECT min(attempts)::bigint FROM invite_sync_outbox_deliveries WHERE dead_at IS NOT NULL")
        .await;
    assert_eq!(attempts, 3, "given up after events.max_attempts");
    service.stop().await.expect("the service stops");

    let status = Proc::spawn(h.command(), &["status", "--format", "json"])
        .wait(Duration::from_secs(30))
        .await;
    let json: serde_json::Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(json["events"]["dead_letters"], 3, "{}", json["events"]);
    let text = Proc::spawn(h.command(), &["status"])
        .wait(Duration::from_secs(30))
        .await;
    assert!(
        text.stdout.contains("3 dead letters"),
        "status names the dead letters:\n{text}"
    );

    // Still down: replay sends them, they fail, and they stay dead letters (exit 1).
    let again = Proc::spawn(
        h.command(),
        &["events", "replay", "--send-for", "5", "--format", "json"],
    )
    .wait(Duration::from_secs(60))
    .await;
    again.assert_code(1);
    assert!(receiver.accepted().is_empty());

    receiver.set(Mode::Accept);
    let bad = Proc::spawn(h.command(), &["events", "replay", "--since", "yesterday"])
        .wait(Duration::from_secs(30))
        .await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("--since \"yesterday\""), "{bad}");
    let replayed = Proc::spawn(h.command(), &["events", "replay"])
        .wait(Duration::from_secs(60))
        .await;
    replayed.assert_code(0);
    assert!(
        replayed.stdout.contains("replayed: 3 deliveries")
            && replayed.stdout.contains("dead letters left: 0"),
        "{replayed}"
    );
    assert_eq!(dead(&h).await, 0);
    assert_delivered_in_order(&outbox(&h).await, &receiver);
    assert_eq!(
        receiver.accepted().len(),
        3,
        "each dead letter delivered once"
    );
}

#[tokio::test]
async fn membership_ledger_changes_are_events_in_their_transaction() {
    use invite_sync::domain::{Email, MembershipKind};
    use invite_sync::store::membership_ledger as ledger;
    let h = Harness::new().await;
    let target = "memberships-events";
    let email = Email::parse("ann@example.com").expect("an address");
    sqlx::query(
        "INSERT INTO desired_memberships (email, organization, source, public_metadata)
         VALUES ('Ann@example.com', 'acme', 'hris', '{\"team\": \"ops\"}')",
    )
    .execute(&h.db.pool)
    .await
    .expect("a membership roster row");
    sqlx::query(
        "INSERT INTO invite_sync_organizations (target, organization_id, slug, name)
         VALUES ($1, 'org_1', 'acme', 'Acme')",
    )
    .bind(target)
    .execute(&h.db.pool)
    .await
    .expect("an organization");
    let mut conn = h.db.pool.acquire().await.expect("a connection");
    let sending = ledger::Sending {
        target,
        email: &email,
        organization_id: "org_1",
        kind: MembershipKind::Invitation,
        role: "org:member",
        row_digest: None,
        user_id: None,
        call_id: None,
        run_id: None,
    };
    let id = ledger::start_sending(&mut conn, &sending)
        .await
        .expect("sending written")
        .expect("nothing in flight");
    // A change rolled back leaves no event.
    let mut tx = h.db.pool.begin().await.expect("a transaction");
    ledger::mark_invited(&mut *tx, id, "orginv_1")
        .await
        .expect("invited");
    tx.rollback().await.expect("rolled back");
    assert_eq!(
        outbox(&h).await.len(),
        0,
        "no event for a change rolled back"
    );
    ledger::mark_invited(&mut *conn, id, "orginv_1")
        .await
        .expect("invited");
    ledger::set_role(&mut *conn, id, "org:admin")
        .await
        .expect("role");
    ledger::mark_accepted(&mut *conn, target, "orginv_1", Some("user_1"))
        .await
        .expect("accepted");
    ledger::mark_removed(&mut *conn, target, "org_1", "user_1")
        .await
        .expect("removed");
    let events = outbox(&h).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "membership.invited",
            "membership.role_changed",
            "membership.accepted",
            "membership.removed"
        ]
    );
    for event in &events {
        let data = &event.payload["data"];
        assert_eq!(data["email_address"], "ann@example.com");
        assert_eq!(data["organization_id"], "org_1");
        assert_eq!(data["invitation_id"], "orginv_1");
        assert_eq!(data["source"], "hris", "{data}");
        assert_eq!(data["metadata"]["team"], "ops", "{data}");
        assert_eq!(event.person_key, "ann@example.com org_1");
    }
    assert_eq!(events[1].payload["data"]["previous_role"], "org:member");
    assert_eq!(events[2].payload["data"]["user_id"], "user_1");
}

/// The fenced block of `lang` that follows `marker` in docs/hr-integration.md.
fn doc_block(marker: &str, lang: &str) -> String {
    let text = crate::common::read("docs/hr-integration.md");
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in hr-integration.md"));
    let fence = format!("```{lang}\n");
    let open = at
        + text[at..]
            .find(&fence)
            .unwrap_or_else(|| panic!("a {lang} block follows {marker:?}"));
    let body = &text[open + fence.len()..];
    body[..body.find("```").expect("the block ends")].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_of_the_hr_guide_verifies_each_event_and_refuses_a_forged_one() {
    let scratch = crate::common::Scratch::new("events-receiver");
    let script = scratch.write("receiver.py", &doc_block("### A receiver", "python"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let key: Vec<u8> = (0..32).map(|_| rand::thread_rng().gen()).collect();
    let secret = format!("whsec_{}", B64.encode(&key));
    let mut python = std::process::Command::new("python3");
    python
        .env("INVITE_SYNC_EVENTS_SECRET", &secret)
        .env("PORT", port.to_string());
    let script = script.to_string_lossy().into_owned();
    let mut receiver = Proc::start("python3 receiver.py".to_owned(), python, &[&script]);
    let url = format!("http://127.0.0.1:{port}/hooks");
    wait_for("the receiver listens", Duration::from_secs(20), || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { up.then_some(()) }
    })
    .await;

    // A forged delivery (signed with another key) is refused.
    let forged = crate::common::http_client()
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("webhook-signature", "v1,c2lnbmVkIHdpdGggYW5vdGhlciBrZXk=")
        .body(
            r#"{"type":"person.invited","timestamp":"","data":{"email_address":"x@example.com"}}"#,
        )
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(forged.status().as_u16(), 400);

    let endpoints = format!("[{{ url = \"{url}\", secret = \"{secret}\" }}]");
    let target = unique_target("events-doc");
    let h = Harness::serving(&[
        ("INVITE_SYNC__SYNC__TARGET", &target),
        ("INVITE_SYNC__EVENTS__ENDPOINTS", &endpoints),
        ("INVITE_SYNC__EVENTS__POLL_SECONDS", "0.05"),
    ])
    .await;
    let emails = people("doc-receiver", 2);
    add_with_source(&h, &emails).await;
    let service = Service::start(&h).await;
    let printed = wait_for(
        "the receiver printed both events",
        Duration::from_secs(60),
        || {
            let out = receiver.stdout();
            async move { (out.lines().count() >= 2).then_some(out) }
        },
    )
    .await;
    service.stop().await.expect("the service stops");
    let mut lines: Vec<&str> = printed.lines().collect();
    lines.sort_unstable();
    let mut want: Vec<String> = emails
        .iter()
        .map(|e| format!("person.invited {e}"))
        .collect();
    want.sort();
    assert_eq!(lines, want, "stderr:\n{}", receiver.stderr());
    assert_eq!(
        undelivered(&h).await,
        0,
        "the receiver answered 204 to each"
    );
    assert!(receiver.kill(), "the receiver was still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_sync_sends_the_events_its_cycle_made() {
    let receiver = Receiver::start().await;
    let h = harness_with(&receiver, &[]).await;
    let emails = people("one-shot", 2);
    add_with_source(&h, &emails).await;
    let finished = Proc::spawn(h.command(), &["sync"])
        .wait(Duration::from_secs(60))
        .await;
    finished.assert_code(0);
    assert!(
        finished.stdout.contains("events: 2 delivered, 0 failed"),
        "{finished}"
    );
    assert_eq!(undelivered(&h).await, 0);
    assert_delivered_in_order(&outbox(&h).await, &receiver);
    assert_eq!(receiver.accepted().len(), 2);
}

#[test]
fn events_endpoints_are_checked_item_by_item_and_never_show_a_secret() {
    use invite_sync::config::Settings;
    use secrecy::ExposeSecret;
    let scratch = crate::common::Scratch::new("events-config");
    let secret = "whsec_c2VjcmV0IG9mIHRoZSBldmVudHMgZW5kcG9pbnQ=";
    let file = scratch.write("events.secret", &format!("{secret}\n"));
    let endpoints = format!(
        "[{{ url = \"https://hr.example.com/hooks\", secret = \"{secret}\" }}, \
         {{ url = \"https://audit.example.com/in\", secret_file = \"{}\" }}]",
        file.display()
    );
    let env = crate::common::env(&[
        ("DATABASE_URL", "postgres://invite@localhost/invite"),
        ("INVITE_SYNC__EVENTS__ENDPOINTS", &endpoints),
    ]);
    let settings = Settings::load(None, &env).expect("two endpoints load");
    let loaded = &settings.events.endpoints;
    assert_eq!(loaded.len(), 2);
    for endpoint in loaded {
        let read = endpoint.secret().expect("the secret is read");
        assert_eq!(read.expose_secret(), secret);
        assert!(
            !format!("{endpoint:?}").contains("c2VjcmV0"),
            "{endpoint:?}"
        );
    }
    assert!(!format!("{settings:?}").contains("c2VjcmV0"));

    let bad = format!(
        "[{{ url = \"ftp://hr.example.com\", secret = \"{}\" }}, {{ secret = \"{secret}\" }}, \
         {{ url = \"https://a.example.com\", secret = \"{secret}\", secret_file = \"/x\" }}, \
         {{ url = \"https://a.example.com\", secret = \"{secret}\", colour = \"red\" }}]",
        "not base64 but secret!"
    );
    let env = crate::common::env(&[
        ("DATABASE_URL", "postgres://invite@localhost/invite"),
        ("INVITE_SYNC__EVENTS__ENDPOINTS", &bad),
    ]);
    let error = Settings::load(None, &env)
        .expect_err("bad endpoints are refused")
        .to_string();
    for expected in [
        "item 1: secret must be whsec_",
        "url must be an http:// or https:// URL",
        "item 2: url must be set",
        "item 3: set secret or secret_file, not both",
        "item 4: unknown key \"colour\"",
    ] {
        assert!(error.contains(expected), "{expected:?} in:\n{error}");
    }
    assert!(
        !error.contains("c2VjcmV0") && !error.contains("but secret!"),
        "{error}"
    );

    let missing = crate::common::env(&[
        ("DATABASE_URL", "postgres://invite@localhost/invite"),
        (
            "INVITE_SYNC__EVENTS__ENDPOINTS",
            "[{ url = \"https://hr.example.com/hooks\", secret_file = \"/nonexistent/events\" }]",
        ),
    ]);
    let settings = Settings::load(None, &missing).expect("a file is read when used");
    let error = settings.events.endpoints[0]
        .secret()
        .expect_err("a missing file is an error")
        .to_string();
    assert!(
        error.contains("https://hr.example.com/hooks") && error.contains("/nonexistent/events"),
        "{error}"
    );
}
