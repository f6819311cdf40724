//! Clerk's JavaScript backend SDK, `@clerk/backend` from npm (the version tests/js/package.json
//! pins), drives the simulator over a real socket as an application would: invitations, users,
//! organizations, organization invitations and memberships, and refusals read through the
//! SDK's error. The script (tests/js/clerk-backend.mjs) checks each answer as the SDK returns
//! it and prints one JSON report; the tests assert on that report and on the simulator's state.
//! The second test also has the script receive the simulator's webhooks and verify each with the
//! SDK's `verifyWebhook`, as an application's webhook endpoint would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use invite_sync::clerk::sim::{self, Operation, SimHandle, SimOptions, WebhookTarget};
use invite_sync::clerk::InvitationStatus;
use serde_json::Value;

use crate::common::{free_port, repo_path, Finished, Proc};

/// Every step the script runs, in order: each call of issue 21's point 7 that the SDK has (it
/// has none for the instance-wide `GET /organization_invitations`), and the refusals a
/// membership roster meets, read through the SDK's error.
const STEPS: &[&str] = &[
    "seed users (control API)",
    "users.getUserList({ emailAddress })",
    "users.getUserList({ limit, offset })",
    "users.getUser",
    "users.getCount",
    "users.getUser refused: unknown id",
    "invitations.createInvitation",
    "invitations.createInvitationBulk",
    "invitations.getInvitationList({ status: pending })",
    "invitations.revokeInvitation",
    "invitations.createInvitation refused: a pending one exists",
    "organizations.createOrganization",
    "organizations.getOrganization({ organizationId })",
    "organizations.getOrganization({ slug })",
    "organizations.getOrganization refused: unknown slug",
    "organizations.getOrganizationList",
    "a 429 read through the SDK: Retry-After as retryAfter",
    "organizations.createOrganizationInvitation",
    "organizations.createOrganizationInvitation to an existing account",
    "organizations.createOrganizationInvitationBulk",
    "organizations.getOrganizationInvitationList({ status: [pending] })",
    "organizations.getOrganizationInvitation",
    "organizations.revokeOrganizationInvitation",
    "organizations.revokeOrganizationInvitation refused: not pending",
    "organizations.createOrganizationInvitation refused: a pending one exists",
    "organizations.createOrganizationInvitation refused: unknown role",
    "organization invitation accepted (control API), seen through the SDK",
    "organizations.getOrganization({ includeMembersCount })",
    "organizations.createOrganizationInvitationBulk up to the limit",
    "organizations.createOrganizationInvitation refused: the organization is full",
    "organizations.createOrganizationMembership",
    "organizations.getOrganizationMembershipList",
    "organizations.createOrganizationMembership refused: already a member",
    "organizations.createOrganizationMembership refused: unknown user",
    "organizations.updateOrganizationMembership",
    "organizations.deleteOrganizationMembership",
    "organizations.updateOrganizationMembership refused: the last admin",
    "a Directory Sync membership (control API), seen through the SDK",
    "organizations.deleteOrganizationMembership refused: managed by Directory Sync",
];

/// Installs tests/js's npm packages when missing or stale (scripts/lib/node-sdk.sh, from the
/// npm registry the first time) and returns the directory of the script.
async fn node_project() -> PathBuf {
    let setup = tokio::task::spawn_blocking({
        let script = repo_path("scripts/lib/node-sdk.sh");
        move || Command::new(script).stderr(Stdio::inherit()).output()
    })
    .await
    .expect("the setup task runs")
    .expect("scripts/lib/node-sdk.sh runs");
    assert!(setup.status.success(), "scripts/lib/node-sdk.sh failed");
    PathBuf::from(String::from_utf8_lossy(&setup.stdout).trim())
}

/// Runs the script against `sim`, with `extra` in its environment, and returns how it ended.
async fn run_script(dir: &std::path::Path, sim: &SimHandle, extra: &[(&str, &str)]) -> Finished {
    let root = sim.root_url().to_string();
    let root = root.trim_end_matches('/');
    let mut command = Command::new("node");
    // Only what the script needs: no key or URL of the test's own environment reaches it.
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CLERK_API_URL", root)
        .env("CLERK_SECRET_KEY", sim.secret_key())
        .env("CLERK_SIM_CONTROL_URL", format!("{root}/_sim"))
        .envs(extra.iter().copied())
        .current_dir(dir);
    let script = dir.join("clerk-backend.mjs");
    let script = script.to_str().expect("the script's path is UTF-8");
    let mut node = Proc::start(format!("node {script}"), command, &[script]);
    node.wait(Duration::from_secs(60)).await
}

/// The report the script printed last, or a failure showing everything it printed.
fn report(finished: &Finished) -> Value {
    finished
        .stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or_else(|| panic!("no JSON report from the script: {finished}"))
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name:?} in the report"))
}

fn detail_str<'a>(report: &'a Value, name: &str, pointer: &str) -> &'a str {
    step(report, name)["detail"]
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("step {name:?} has no {pointer} in its detail"))
}

/// The script's report once every step in `expected` ran and passed, in that order.
fn passed(finished: &Finished, expected: &[&str]) -> Value {
    let report = report(finished);
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, expected, "the script ran other steps: {finished}");
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| s["ok"] != true)
        .map(|s| format!("  {}: {}", s["name"], s["error"]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} steps failed with {}:\n{}\n--- stderr ---\n{}",
        failed.len(),
        steps.len(),
        report["sdk"],
        failed.join("\n"),
        finished.stderr
    );
    finished.assert_code(0);
    println!(
        "{}: {} steps passed against the simulator (node {})",
        report["sdk"].as_str().unwrap_or("@clerk/backend"),
        steps.len(),
        report["node"].as_str().unwrap_or("?")
    );
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn clerk_backend_sdk_gets_what_it_expects_from_the_simulator_for_every_call_it_makes() {
    let dir = node_project().await;
    // The default simulator: the development key's request limit, no webhooks.
    let sim = sim::start(SimOptions::default())
        .await
        .expect("the simulator starts");

    let finished = run_script(&dir, &sim, &[]).await;
    let report = passed(&finished, STEPS);

    // What the SDK was told happened is what the simulator holds.
    assert_instance_invitations(&sim, &report);
    assert_organizations(&sim, &report);
    let count_calls = sim.stats().total(Operation::CountUsers);
    assert!(
        count_calls > 0 && sim.stats().count(Operation::CountUsers, 200) == count_calls,
        "getUserList and getCount reach GET /users/count, answered 200: {:?}",
        sim.stats()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clerk_backend_verify_webhook_accepts_every_event_the_simulator_signs() {
    let dir = node_project().await;
    let port = free_port().expect("a free port for the script's webhook endpoint");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let target = WebhookTarget::new(&format!("http://127.0.0.1:{port}/clerk"), secret)
        .expect("a webhook target");
    let sim = sim::start(SimOptions::default().with_webhook(target))
        .await
        .expect("the simulator starts");

    let port = port.to_string();
    let extra = [
        ("WEBHOOK_LISTEN_PORT", port.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret),
    ];
    let finished = run_script(&dir, &sim, &extra).await;
    let mut expected = STEPS.to_vec();
    expected.push("webhooks.verifyWebhook accepts every event");
    let report = passed(&finished, &expected);
    println!(
        "verifyWebhook: {}",
        step(&report, "webhooks.verifyWebhook accepts every event")["detail"]
    );
    assert!(
        sim.webhooks_settled(Duration::from_secs(10)).await,
        "the simulator's deliveries did not settle: {:?}",
        sim.stats().webhooks
    );
    let webhooks = sim.stats().webhooks;
    let delivered: u64 = webhooks.delivered.values().sum();
    assert_eq!(
        (delivered, webhooks.failed_attempts, webhooks.abandoned),
        (webhooks.raised, 0, 0),
        "every event was delivered and answered 2xx at once: {webhooks:?}"
    );
}

fn assert_instance_invitations(sim: &SimHandle, report: &Value) {
    let invitations = sim.invitations();
    let status_of = |id: &str| {
        invitations
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.status)
            .unwrap_or_else(|| panic!("the simulator holds no invitation {id}"))
    };
    let revoked = detail_str(report, "invitations.revokeInvitation", "/id");
    assert_eq!(status_of(revoked), InvitationStatus::Revoked);
    let bulk = step(report, "invitations.createInvitationBulk")["detail"]["ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(bulk.len(), 2, "{report}");
    for id in bulk.iter().filter_map(Value::as_str) {
        assert_eq!(status_of(id), InvitationStatus::Pending, "{id}");
    }
    assert_eq!(invitations.len(), 3, "{invitations:?}");
}

/// Acme: one member (who accepted), four pending invitations filling its five places, one
/// revoked. Globex: its admin, and a member Directory Sync manages; the member deleted is gone.
fn assert_organizations(sim: &SimHandle, report: &Value) {
    let acme = detail_str(report, "organizations.createOrganization", "/acme");
    let globex = detail_str(report, "organizations.createOrganization", "/globex");
    let user = |prefix: &str| -> String {
        step(report, "seed users (control API)")["detail"]["users"]
            .as_object()
            .and_then(|users| users.iter().find(|(email, _)| email.starts_with(prefix)))
            .and_then(|(_, id)| id.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no seeded user {prefix}… in the report"))
    };

    let organizations = sim.organizations();
    let max_of = |id: &str| {
        organizations
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.max_allowed_memberships)
            .unwrap_or_else(|| panic!("the simulator holds no organization {id}"))
    };
    assert_eq!(max_of(acme), 5);
    assert_eq!(max_of(globex), 0, "no limit unless one is given");

    let invitations = sim.organization_invitations();
    let mut statuses: BTreeMap<InvitationStatus, usize> = BTreeMap::new();
    for invitation in &invitations {
        assert_eq!(invitation.organization_id, acme, "{invitation:?}");
        *statuses.entry(invitation.status).or_default() += 1;
    }
    let expected = BTreeMap::from([
        (InvitationStatus::Pending, 4),
        (InvitationStatus::Accepted, 1),
        (InvitationStatus::Revoked, 1),
    ]);
    assert_eq!(statuses, expected, "{invitations:?}");

    let roles_in = |organization: &str| -> BTreeMap<String, String> {
        sim.memberships()
            .into_iter()
            .filter(|m| m.organization.id == organization)
            .map(|m| (m.user_id().unwrap_or_default().to_owned(), m.role))
            .collect()
    };
    let (ada, cyd) = (user("ada."), user("cyd."));
    assert_eq!(
        roles_in(acme),
        BTreeMap::from([(cyd.clone(), "org:member".to_owned())])
    );
    assert_eq!(
        roles_in(globex),
        BTreeMap::from([
            (ada, "org:admin".to_owned()),
            (cyd, "org:member".to_owned())
        ])
    );
}
