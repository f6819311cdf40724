//! The Clerk client against the simulator over a real socket.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use crate::common::{capture_logs, wait_for};
use invite_sync::clerk::model::codes;
use invite_sync::clerk::sim::{self, Fault, FaultKind, Operation as SimOp, SimHandle, SimOptions};
use invite_sync::clerk::{
    ClerkClient, ClientError, ClientOptions, CreateInvitation, InvitationStatus, ListQuery,
    Operation, OrderBy, RequestRate, RetryPolicy,
};

fn options_for(sim: &SimHandle) -> ClientOptions {
    ClientOptions {
        api_url: sim.base_url(),
        secret_key: SecretString::from(sim.secret_key().to_owned()),
        timeout: Duration::from_secs(5),
        rate: None,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
    }
}

async fn sim_and_client() -> (SimHandle, ClerkClient) {
    let sim = sim::start(SimOptions::default()).await.expect("sim starts");
    let client = ClerkClient::new(options_for(&sim)).expect("client builds");
    (sim, client)
}

fn create(email: &str) -> CreateInvitation {
    CreateInvitation::new(email)
}

#[tokio::test]
async fn creates_one_invitation_with_every_field_sent() {
    let (sim, client) = sim_and_client().await;
    let mut request = create("Ann@Example.com");
    request.public_metadata = Some(json!({"team": "ops"}).as_object().unwrap().clone());
    request.redirect_url = Some("https://app.example.com/welcome".to_owned());
    request.notify = Some(false);
    request.expires_in_days = Some(7);
    request.template_slug = Some(invite_sync::clerk::TemplateSlug::Invitation);
    let invitation = client.create_invitation(&request).await.expect("created");
    assert!(invitation.id.starts_with("inv_"));
    assert_eq!(invitation.email_address, "Ann@Example.com");
    assert_eq!(invitation.status, InvitationStatus::Pending);
    assert_eq!(invitation.public_metadata.get("team"), Some(&json!("ops")));
    let days = (invitation.expires_at.expect("expires") - invitation.created_at) / 86_400_000;
    assert_eq!(days, 7);
    assert_eq!(sim.stats().count(SimOp::CreateInvitation, 200), 1);
}

#[tokio::test]
async fn creates_in_bulk_lists_and_revokes() {
    let (sim, client) = sim_and_client().await;
    let requests: Vec<_> = (0..10)
        .map(|i| create(&format!("p{i}@example.com")))
        .collect();
    let created = client
        .create_bulk_invitations(&requests)
        .await
        .expect("bulk");
    assert_eq!(created.len(), 10);

    let page = client
        .list_invitations(&ListQuery {
            status: Some(InvitationStatus::Pending),
            order_by: OrderBy::parse("+email_address"),
            limit: Some(3),
            offset: Some(2),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(page.total_count, 10);
    let emails: Vec<_> = page.data.iter().map(|i| i.email_address.as_str()).collect();
    assert_eq!(
        emails,
        ["p2@example.com", "p3@example.com", "p4@example.com"]
    );

    let revoked = client
        .revoke_invitation(&created[0].id)
        .await
        .expect("revoke");
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    assert_eq!(revoked.revoked, Some(true));
    let pending = client
        .list_all(Some(InvitationStatus::Pending))
        .await
        .unwrap();
    assert_eq!(pending.len(), 9);
    let found = client
        .find_by_email("P1@EXAMPLE.COM", None)
        .await
        .expect("lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, created[1].id);
    assert_eq!(sim.stats().count(SimOp::RevokeInvitation, 200), 1);
}

#[tokio::test]
async fn lists_every_one_of_1234_invitations_across_pages_once() {
    let sim = sim::start(SimOptions {
        rate_limits: false,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let client = ClerkClient::new(ClientOptions {
        rate: Some(RequestRate {
            requests: 10_000,
            per: Duration::from_secs(1),
        }),
        ..options_for(&sim)
    })
    .unwrap();
    let emails: Vec<String> = (0..1234)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    for chunk in emails.chunks(10) {
        let requests: Vec<_> = chunk.iter().map(|e| create(e)).collect();
        client.create_bulk_invitations(&requests).await.unwrap();
    }
    let listed = client
        .list_all(Some(InvitationStatus::Pending))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1234);
    let mut listed_emails: Vec<_> = listed.iter().map(|i| i.email_address.clone()).collect();
    listed_emails.sort();
    assert_eq!(listed_emails, emails, "none missing, none doubled");
    assert_eq!(
        sim.stats().count(SimOp::ListInvitations, 200),
        3,
        "pages of 500: 500 + 500 + 234"
    );
}

async fn clerk_error(
    result: Result<impl std::fmt::Debug, ClientError>,
) -> (u16, Vec<String>, ClientError) {
    let error = result.expect_err("Clerk refuses");
    match &error {
        ClientError::Clerk {
            status,
            errors,
            trace_id,
            ..
        } => {
            assert!(
                trace_id.as_deref().is_some_and(|t| !t.is_empty()),
                "trace id kept"
            );
            let codes = errors.iter().map(|e| e.code.clone()).collect();
            (*status, codes, error)
        }
        other => panic!("expected a Clerk error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_refusal_decodes_into_its_code() {
    let (sim, client) = sim_and_client().await;
    sim.seed_users(&["user@example.com"]);
    let first = client
        .create_invitation(&create("dup@example.com"))
        .await
        .unwrap();

    let (status, codes_seen, error) =
        clerk_error(client.create_invitation(&create("DUP@example.com")).await).await;
    assert_eq!(
        (status, codes_seen),
        (400, vec![codes::DUPLICATE_RECORD.to_owned()])
    );
    assert_eq!(
        error.clerk_errors()[0].email_addresses(),
        ["DUP@example.com"]
    );
    assert!(!error.may_have_applied());

    let (status, codes_seen, _) =
        clerk_error(client.create_invitation(&create("user@example.com")).await).await;
    assert_eq!(
        (status, codes_seen),
        (422, vec![codes::FORM_IDENTIFIER_EXISTS.to_owned()])
    );

    let (status, codes_seen, _) =
        clerk_error(client.create_invitation(&create("not-an-email")).await).await;
    assert_eq!(
        (status, codes_seen),
        (422, vec![codes::FORM_PARAM_FORMAT_INVALID.to_owned()])
    );

    let mut bad_days = create("days@example.com");
    bad_days.expires_in_days = Some(366);
    let (status, _, _) = clerk_error(client.create_invitation(&bad_days).await).await;
    assert_eq!(status, 422);

    let eleven: Vec<_> = (0..11)
        .map(|i| create(&format!("b{i}@example.com")))
        .collect();
    let (status, codes_seen, _) = clerk_error(client.create_bulk_invitations(&eleven).await).await;
    assert_eq!(
        (status, codes_seen),
        (400, vec![codes::BULK_SIZE_EXCEEDED.to_owned()])
    );

    let (status, _, _) = clerk_error(client.create_bulk_invitations(&[]).await).await;
    assert_eq!(status, 422);

    let (status, codes_seen, _) = clerk_error(client.revoke_invitation("inv_missing").await).await;
    assert_eq!(
        (status, codes_seen),
        (404, vec![codes::RESOURCE_NOT_FOUND.to_owned()])
    );

    client.revoke_invitation(&first.id).await.unwrap();
    let (status, codes_seen, _) = clerk_error(client.revoke_invitation(&first.id).await).await;
    assert_eq!(
        (status, codes_seen),
        (400, vec![codes::INVITATION_ALREADY_REVOKED.to_owned()])
    );

    let accepted = client
        .create_invitation(&create("acc@example.com"))
        .await
        .unwrap();
    assert!(sim.accept(&accepted.id));
    let (status, codes_seen, error) =
        clerk_error(client.revoke_invitation(&accepted.id).await).await;
    assert_eq!(
        (status, codes_seen),
        (400, vec![codes::INVITATION_ALREADY_ACCEPTED.to_owned()])
    );
    assert!(error.has_code(codes::INVITATION_ALREADY_ACCEPTED));

    let (status, _, _) = clerk_error(
        client
            .list_invitations(&ListQuery {
                limit: Some(501),
                ..ListQuery::default()
            })
            .await,
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_clerk_and_a_malformed_one_before_any_request() {
    let (sim, _) = sim_and_client().await;
    let wrong = ClerkClient::new(ClientOptions {
        secret_key: SecretString::from("sk_test_not_the_right_one".to_owned()),
        ..options_for(&sim)
    })
    .unwrap();
    let (status, codes_seen, _) = clerk_error(wrong.list_all(None).await).await;
    assert_eq!(
        (status, codes_seen),
        (401, vec![codes::AUTHENTICATION_INVALID.to_owned()])
    );

    for bad in [
        "",
        "   ",
        "pk_test_abc",
        "sk_prod_abc",
        "sk_test_",
        "sk_test_has space",
    ] {
        let error = ClerkClient::new(ClientOptions {
            secret_key: SecretString::from(bad.to_owned()),
            ..options_for(&sim)
        })
        .expect_err("refused");
        assert!(matches!(error, ClientError::InvalidKey(_)), "{bad:?}");
    }
    let before = sim.stats().total(SimOp::ListInvitations);
    assert_eq!(before, 1, "only the wrong-key call reached the simulator");
}

#[tokio::test]
async fn the_secret_key_appears_in_no_debug_or_error_output() {
    let (sim, _) = sim_and_client().await;
    let key = "sk_test_TOPSECRETvalue42";
    let client = ClerkClient::new(ClientOptions {
        secret_key: SecretString::from(key.to_owned()),
        ..options_for(&sim)
    })
    .unwrap();
    let error = client.list_all(None).await.expect_err("wrong key");
    for text in [
        format!("{client:?}"),
        format!("{error:?}"),
        error.to_string(),
    ] {
        assert!(!text.contains("TOPSECRET"), "leaked in {text}");
    }
    let error = ClerkClient::new(ClientOptions {
        secret_key: SecretString::from("xx_TOPSECRETvalue42".to_owned()),
        ..options_for(&sim)
    })
    .expect_err("bad prefix");
    assert!(!format!("{error:?} {error}").contains("TOPSECRET"));
}

#[tokio::test]
async fn a_429_on_a_read_is_waited_out_for_its_retry_after() {
    let (sim, client) = sim_and_client().await;
    sim.inject_fault(Fault {
        operation: SimOp::ListInvitations,
        times: 1,
        kind: FaultKind::Status {
            status: 429,
            retry_after: Some(1),
        },
    });
    let started = tokio::time::Instant::now();
    let listed = client
        .list_all(None)
        .await
        .expect("succeeds after the wait");
    assert!(listed.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the client waited the Retry-After before asking again"
    );
    let stats = sim.stats();
    assert_eq!(stats.count(SimOp::ListInvitations, 429), 1);
    assert_eq!(stats.count(SimOp::ListInvitations, 200), 1);
}

#[tokio::test]
async fn a_429_on_a_create_is_returned_and_blocks_the_endpoint_until_it_passes() {
    let (sim, client) = sim_and_client().await;
    sim.inject_fault(Fault {
        operation: SimOp::CreateInvitation,
        times: 1,
        kind: FaultKind::Status {
            status: 429,
            retry_after: Some(120),
        },
    });
    match client.create_invitation(&create("a@example.com")).await {
        Err(ClientError::RateLimited {
            retry_after: Some(wait),
            sent: true,
            ..
        }) => assert_eq!(wait, Duration::from_secs(120)),
        other => panic!("expected a 429, got {other:?}"),
    }
    match client.create_invitation(&create("b@example.com")).await {
        Err(ClientError::RateLimited {
            sent: false,
            retry_after: Some(wait),
            ..
        }) => {
            assert!(wait <= Duration::from_secs(120) && wait > Duration::from_secs(100))
        }
        other => panic!("expected the block to hold, got {other:?}"),
    }
    assert_eq!(
        sim.stats().total(SimOp::CreateInvitation),
        1,
        "the blocked call was not sent"
    );
    // Other endpoints are not blocked.
    client
        .create_bulk_invitations(&[create("c@example.com")])
        .await
        .unwrap();
}

/// The attempts the log says never reached Clerk and were retried.
fn never_sent_retries(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("Clerk call failed; retrying"))
        .filter(|line| line.contains("never reached Clerk"))
        .count()
}

#[tokio::test]
async fn a_request_that_never_reached_clerk_is_retried_until_it_does() {
    // A bound socket that does not listen yet: connections are refused until it does.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let options = SimOptions::default();
    let client = ClerkClient::new(ClientOptions {
        api_url: format!("http://{addr}/v1").parse().unwrap(),
        secret_key: SecretString::from(options.secret_key.clone()),
        timeout: Duration::from_secs(5),
        rate: None,
        retry: RetryPolicy {
            max_attempts: 50,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
    })
    .unwrap();
    let (logs, _guard) = capture_logs();
    let listing = tokio::spawn({
        let client = client.clone();
        async move { client.list_all(None).await }
    });
    wait_for("a refused attempt", Duration::from_secs(10), || {
        let refused = never_sent_retries(&logs.text());
        async move { (refused >= 1).then_some(()) }
    })
    .await;
    let sim = sim::start_on(socket.listen(64).unwrap(), options)
        .await
        .unwrap();
    let listed = listing
        .await
        .unwrap()
        .expect("a later attempt reaches Clerk");
    assert!(listed.is_empty());
    assert_eq!(sim.stats().count(SimOp::ListInvitations, 200), 1);
}

#[tokio::test]
async fn a_create_that_never_reached_clerk_reports_never_sent_after_its_attempts() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let client = ClerkClient::new(ClientOptions {
        api_url: format!("http://{addr}/v1").parse().unwrap(),
        secret_key: SecretString::from("sk_test_x".to_owned()),
        timeout: Duration::from_secs(5),
        rate: None,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
        },
    })
    .unwrap();
    let (logs, _guard) = capture_logs();
    match client.create_invitation(&create("a@example.com")).await {
        Err(ClientError::NeverSent {
            attempts: 3,
            operation: Operation::CreateInvitation,
            ..
        }) => {}
        other => panic!("expected never-sent after 3 attempts, got {other:?}"),
    }
    // The third attempt's refusal is the error; the two before it were retried.
    assert_eq!(never_sent_retries(&logs.text()), 2, "{}", logs.text());
    drop(socket);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_surfaced_as_unknown_and_not_retried() {
    let (sim, client) = sim_and_client().await;
    sim.inject_fault(Fault {
        operation: SimOp::CreateBulkInvitations,
        times: 1,
        kind: FaultKind::DropAfterApply,
    });
    let requests: Vec<_> = (0..3)
        .map(|i| create(&format!("lost{i}@example.com")))
        .collect();
    let error = client
        .create_bulk_invitations(&requests)
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            error,
            ClientError::OutcomeUnknown {
                operation: Operation::CreateBulkInvitations,
                ..
            }
        ),
        "got {error:?}"
    );
    assert!(error.may_have_applied());
    assert_eq!(
        sim.stats().total(SimOp::CreateBulkInvitations),
        1,
        "sent once, not retried"
    );
    assert_eq!(
        sim.invitations().len(),
        3,
        "Clerk applied it: only a lookup can tell"
    );
    let found = client
        .find_by_email("lost1@example.com", Some(InvitationStatus::Pending))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn a_create_that_hangs_past_the_timeout_is_unknown_and_not_retried() {
    let sim = sim::start(SimOptions::default()).await.unwrap();
    let client = ClerkClient::new(ClientOptions {
        timeout: Duration::from_millis(300),
        ..options_for(&sim)
    })
    .unwrap();
    sim.inject_fault(Fault {
        operation: SimOp::CreateInvitation,
        times: 1,
        kind: FaultKind::Hang,
    });
    let error = client
        .create_invitation(&create("slow@example.com"))
        .await
        .expect_err("timeout");
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "got {error:?}"
    );
    assert_eq!(sim.stats().total(SimOp::CreateInvitation), 1);
}

#[tokio::test]
async fn a_server_error_on_a_read_is_retried() {
    let (sim, client) = sim_and_client().await;
    sim.inject_fault(Fault {
        operation: SimOp::ListInvitations,
        times: 2,
        kind: FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    });
    client.list_all(None).await.expect("third attempt succeeds");
    assert_eq!(sim.stats().count(SimOp::ListInvitations, 503), 2);
    assert_eq!(sim.stats().count(SimOp::ListInvitations, 200), 1);
}

#[tokio::test]
async fn the_client_keeps_to_the_request_rate_of_a_test_key() {
    // 110 calls against a limit of 100 per 10 s: the client waits instead of drawing a 429.
    let (sim, client) = sim_and_client().await;
    for _ in 0..110 {
        client
            .list_invitations(&ListQuery::default())
            .await
            .expect("no call is refused");
    }
    let stats = sim.stats();
    assert_eq!(stats.count(SimOp::ListInvitations, 200), 110);
    assert_eq!(stats.count(SimOp::ListInvitations, 429), 0);
}

#[tokio::test]
async fn users_by_email_finds_users_in_calls_of_100_and_skips_an_empty_lookup() {
    let (sim, client) = sim_and_client().await;
    assert!(client
        .users_by_email(&[])
        .await
        .expect("no call")
        .is_empty());
    assert_eq!(sim.stats().total(SimOp::ListUsers), 0);

    let ada = sim.create_user("Ada@Example.com");
    let addresses: Vec<String> = (0..149)
        .map(|i| format!("nobody{i}@example.com"))
        .chain(["ada@example.COM".to_owned()])
        .collect();
    let users = client.users_by_email(&addresses).await.expect("users");
    assert_eq!(users, std::slice::from_ref(&ada));
    assert_eq!(users[0].primary_email(), Some("Ada@Example.com"));
    assert!(users[0].id.starts_with("user_"));
    let stats = sim.stats();
    assert_eq!(
        stats.count(SimOp::ListUsers, 200),
        2,
        "150 addresses, 2 calls"
    );
    assert_eq!(stats.user_lookup_addresses, 150);

    assert!(sim.delete_user(&ada.id));
    let gone = client
        .users_by_email(&["ada@example.com".to_owned()])
        .await
        .expect("users");
    assert!(gone.is_empty());
}

#[tokio::test]
async fn users_by_email_is_retried_on_5xx_like_a_list() {
    let (sim, client) = sim_and_client().await;
    let user = sim.create_user("retry@example.com");
    sim.inject_fault(Fault::new(
        SimOp::ListUsers,
        1,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let users = client
        .users_by_email(&["retry@example.com".to_owned()])
        .await
        .expect("users after a retry");
    assert_eq!(users, [user]);
    assert_eq!(sim.stats().count(SimOp::ListUsers, 503), 1);
    assert_eq!(sim.stats().count(SimOp::ListUsers, 200), 1);
    assert!(Operation::ListUsers.idempotent());
    assert!(!Operation::ListUsers.creates());
}
