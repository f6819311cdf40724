//! Who owns a roster row: a row the SCIM endpoint wrote (source `scim`) is SCIM's alone. The
//! roster webhook and the CSV import never overwrite nor delete it, even while SCIM writes
//! the same addresses at the same moment; SCIM takes over the rows of other writers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{Harness, Service};

const SCIM_TOKEN: &str = "scim-token-0123456789abcdef";
const ROSTER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// People both writers name, and the pairs of clients (one SCIM, one webhook) sending them.
const PEOPLE: usize = 300;
const PAIRS: usize = 16;

async fn harness() -> Harness {
    Harness::serving(&[
        ("INVITE_SYNC__SCIM__TOKEN", SCIM_TOKEN),
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", "24"),
    ])
    .await
}

fn person(n: usize) -> String {
    format!("p{n}@example.com")
}

async fn scim_create(client: &reqwest::Client, base: &str, email: &str) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/scim/v2/Users"))
        .header(AUTHORIZATION, format!("Bearer {SCIM_TOKEN}"))
        .header(CONTENT_TYPE, "application/scim+json")
        .body(json!({"schemas": [USER], "userName": email}).to_string())
        .send()
        .await
        .expect("the service answers a SCIM create");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn roster_upsert(client: &reqwest::Client, base: &str, email: &str) -> StatusCode {
    let body = json!({"type": "invitee.upserted", "data": {
        "email": email, "public_metadata": {"team": "hr"}}})
    .to_string();
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let timestamp = chrono::Utc::now().timestamp();
    let signature =
        invite_sync::webhook_signature::sign(ROSTER_SECRET, &id, timestamp, body.as_bytes())
            .expect("the secret signs");
    client
        .post(format!("{base}/v1/webhooks/roster"))
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .expect("the service answers a roster webhook")
        .status()
}

/// Active SCIM users with an address whose roster row is not SCIM's (another writer's, or
/// none): people the identity provider can no longer remove.
async fn active_scim_users_without_their_row(h: &Harness) -> i64 {
    h.db.scalar(
        "SELECT count(*) FROM invite_sync_scim_users u
         WHERE u.active AND u.email IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM desired_invitees d
             WHERE lower(btrim(d.email)) = u.email AND d.source = 'scim')",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn scim_creates_racing_roster_upserts_for_the_same_people_leave_every_scim_user_its_row() {
    let h = harness().await;
    let service = Service::start(&h).await;
    let base = format!("http://{}", service.addr);

    // Each pair of clients sends one person's SCIM create and roster upsert at once.
    let next = Arc::new(AtomicUsize::new(0));
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let (client, base, next) = (service.client.clone(), base.clone(), next.clone());
        pairs.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= PEOPLE {
                    return answers;
                }
                let email = person(n);
                let ((status, user), hook) = tokio::join!(
                    scim_create(&client, &base, &email),
                    roster_upsert(&client, &base, &email)
                );
                assert_eq!(status, StatusCode::CREATED, "SCIM create {n}: {user}");
                let id = user["id"].as_str().expect("a user id").to_owned();
                answers.push((id, hook));
            }
        }));
    }
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    for pair in pairs {
        for (id, hook) in pair.await.expect("a pair of clients finishes") {
            ids.push(id);
            statuses.push(hook);
        }
    }
    assert_eq!(ids.len(), PEOPLE);
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "a roster upsert is applied (200) or refused on a SCIM row (409): {statuses:?}"
    );
    eprintln!(
        "roster upserts applied {}, refused on a SCIM row {refused}",
        PEOPLE - refused
    );

    let orphaned = active_scim_users_without_their_row(&h).await;
    assert_eq!(
        orphaned, 0,
        "active SCIM users whose roster row is not SCIM's"
    );
    let scim_rows =
        h.db.scalar("SELECT count(*) FROM desired_invitees WHERE source = 'scim'")
            .await;
    assert_eq!(scim_rows, PEOPLE as i64);

    // The identity provider can take every one of them off the roster again: half by
    // deactivation, half by deletion.
    for (n, id) in ids.iter().enumerate() {
        let path = format!("{base}/scim/v2/Users/{id}");
        let request = if n % 2 == 0 {
            service.client.patch(&path).body(
                json!({"schemas": [PATCH_OP],
                       "Operations": [{"op": "replace", "path": "active", "value": false}]})
                .to_string(),
            )
        } else {
            service.client.delete(&path)
        };
        let status = request
            .header(AUTHORIZATION, format!("Bearer {SCIM_TOKEN}"))
            .header(CONTENT_TYPE, "application/scim+json")
            .send()
            .await
            .expect("the service answers")
            .status();
        assert!(status.is_success(), "removing user {n}: {status}");
    }
    let left =
        h.db.scalar("SELECT count(*) FROM desired_invitees WHERE email LIKE 'p%@example.com'")
            .await;
    assert_eq!(left, 0, "rows the identity provider could not remove");
    service.stop().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn replacing_imports_racing_scim_creates_never_take_or_delete_a_scim_row() {
    let h = harness().await;
    let service = Service::http_alone(&h).await;
    let base = format!("http://{}", service.addr);
    let file: String = std::iter::once("email,source,meta.team".to_owned())
        .chain((0..PEOPLE).map(|n| format!("{},hr,csv", person(n))))
        .collect::<Vec<_>>()
        .join("\n");
    let options = invite_sync::import::ImportOptions {
        relation: "desired_invitees".to_owned(),
        replace: true,
        dry_run: false,
        skip_invalid: false,
        force: true,
        max_delete_ratio: 0.2,
    };

    let next = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..PAIRS {
        let (client, base, next) = (service.client.clone(), base.clone(), next.clone());
        creators.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= PEOPLE {
                    return;
                }
                let (status, user) = scim_create(&client, &base, &person(n)).await;
                assert_eq!(status, StatusCode::CREATED, "SCIM create {n}: {user}");
            }
        }));
    }
    // Whole replacing imports of the same people, one after another while SCIM creates them.
    let mut imports = Vec::new();
    while next.load(Ordering::SeqCst) < PEOPLE || imports.is_empty() {
        let summary = invite_sync::import::import_reader(&h.db.pool, file.as_bytes(), &options)
            .await
            .expect("the import runs");
        imports.push(summary);
    }
    for creator in creators {
        creator.await.expect("a SCIM client finishes");
    }
    for summary in &imports {
        assert_eq!(
            summary.inserted + summary.updated + summary.unchanged + summary.kept_scim,
            PEOPLE as u64,
            "every line is counted once: {summary:?}"
        );
        assert_eq!(summary.deleted, 0, "{summary:?}");
    }
    assert_eq!(active_scim_users_without_their_row(&h).await, 0);

    // A file that names none of them leaves every SCIM row, and says so.
    let summary = invite_sync::import::import_reader(
        &h.db.pool,
        "email\nnew@example.com\n".as_bytes(),
        &options,
    )
    .await
    .expect("the import runs");
    assert_eq!((summary.inserted, summary.kept_scim), (1, PEOPLE as u64));
    assert!(
        summary.render().contains(&format!("left to SCIM {PEOPLE}")),
        "{}",
        summary.render()
    );
    assert_eq!(active_scim_users_without_their_row(&h).await, 0);
    eprintln!("{} imports raced the SCIM creates", imports.len());
}
