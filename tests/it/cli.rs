//! The `invite-sync` binary as an operator runs it: exit codes, output, signals, and two
//! processes against one database. Each test starts the built binary against its own
//! database and an in-process simulated Clerk.

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

use invite_sync::clerk::sim::{Fault, FaultKind, Operation, SimOptions, SimStats};
use serde_json::Value;

use crate::common::{
    assert_one_pending_each_and_nothing_else, bare_command, free_port, people, read, repo_path,
    server_url, unique_target, wait_for, writes, Finished, Harness, Proc, TestDb, NEVER,
};

/// How long a one-shot command may take before the test gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(15);

const SIGHUP: u32 = 1;
const SIGINT: u32 = 2;
const SIGTERM: u32 = 15;

// ---------------------------------------------------------------------------
// Running the binary

/// Runs a command to its end.
async fn run(command: Command, args: &[&str]) -> Finished {
    Proc::spawn(command, args).wait(COMMAND_DEADLINE).await
}

/// Runs the binary with the harness's environment.
async fn invite_sync(h: &Harness, args: &[&str]) -> Finished {
    run(h.command(), args).await
}

/// Runs the binary with the harness's environment plus `extra`.
async fn invite_sync_with(h: &Harness, extra: &[(&str, &str)], args: &[&str]) -> Finished {
    let mut command = h.command();
    command.envs(extra.iter().copied());
    run(command, args).await
}

// ---------------------------------------------------------------------------
// Looking at the outcome

async fn harness(overrides: &[(&str, &str)]) -> Harness {
    Harness::with(SimOptions::default(), overrides).await
}

async fn add(h: &Harness, emails: &[String]) {
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    h.add_people(&emails).await;
}

/// Pending invitations in the simulator per email.
fn pending_per_email(h: &Harness) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for invitation in h.pending() {
        *counts
            .entry(invitation.email_address.to_lowercase())
            .or_insert(0) += 1;
    }
    counts
}

fn json(finished: &Finished) -> Value {
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {finished}"))
}

/// The `email` fields of a JSON array, sorted.
fn emails_of(list: &Value) -> Vec<String> {
    let mut emails: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|entry| entry["email"].as_str().expect("an email").to_owned())
        .collect();
    emails.sort();
    emails
}

fn sorted(emails: &[String]) -> Vec<String> {
    let mut emails = emails.to_vec();
    emails.sort();
    emails
}

// ---------------------------------------------------------------------------
// config check

#[tokio::test]
async fn config_check_exits_2_and_names_each_bad_key() {
    let dir = std::env::temp_dir().join(format!(
        "invite-sync-cli-config-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invite-sync.toml");
    std::fs::write(&file, "[sync]\nmax_revocatons = 3\n").unwrap();
    let file_arg = file.display().to_string();

    let finished = run(
        bare_command(&[("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "2")]),
        &["--config", &file_arg, "config", "check"],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);

    finished.assert_code(2);
    for key in ["sync.max_revocation_ratio", "sync.max_revocatons"] {
        assert!(
            finished.stderr.contains(key),
            "{key} is not named: {finished}"
        );
    }
    assert!(
        finished
            .stderr
            .contains("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO"),
        "the variable the bad value came from is not named: {finished}"
    );
    assert!(finished.stdout.is_empty(), "{finished}");
}

#[tokio::test]
async fn config_check_and_run_refuse_an_admin_listener_on_the_main_listeners_address() {
    let env = [
        ("INVITE_SYNC__HTTP__ADMIN_LISTEN", "127.0.0.1:8080"),
        ("CLERK_SECRET_KEY", "sk_test_listenersclash"),
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/never_reached",
        ),
    ];
    for args in [&["config", "check"][..], &["run"][..]] {
        let finished = run(bare_command(&env), args).await;
        finished.assert_code(2);
        assert!(
            finished
                .stderr
                .contains("http.admin_listen: 127.0.0.1:8080 is the same address as http.listen 127.0.0.1:8080"),
            "{finished}"
        );
    }
}

#[tokio::test]
async fn config_check_prints_the_effective_toml_without_the_secret_key_or_the_password() {
    let finished = run(
        bare_command(&[
            (
                "DATABASE_URL",
                "postgres://app:hunter2pass@127.0.0.1:5432/invite_sync",
            ),
            ("CLERK_SECRET_KEY", "sk_test_VERYSECRET123"),
            ("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "7"),
        ]),
        &["config", "check"],
    )
    .await;
    finished.assert_code(0);
    for secret in ["VERYSECRET", "hunter2pass"] {
        assert!(
            !finished.stdout.contains(secret) && !finished.stderr.contains(secret),
            "{secret} leaked: {finished}"
        );
    }
    // The output is the effective configuration: it parses as TOML and carries the values.
    let parsed: toml::Table = finished
        .stdout
        .parse()
        .unwrap_or_else(|e| panic!("not TOML ({e}): {finished}"));
    assert_eq!(parsed["sync"]["max_revocations"].as_integer(), Some(7));
    assert_eq!(
        parsed["database"]["url"].as_str(),
        Some("postgres://app:[redacted]@127.0.0.1:5432/invite_sync")
    );
    assert_eq!(parsed["clerk"]["secret_key"].as_str(), Some("[redacted]"));
}

#[tokio::test]
async fn config_check_keeps_secrets_written_in_the_config_file_out_of_its_output() {
    let dir = std::env::temp_dir().join(format!(
        "invite-sync-cli-config-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invite-sync.toml");
    std::fs::write(
        &file,
        "[database]\nurl = \"postgres://app:hunter2pass@db.internal/app\"\n\n\
         [clerk]\nsecret_key = \"sk_live_VERYSECRET123\"\n",
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let finished = run(bare_command(&[]), &["-c", &file_arg, "config", "check"]).await;
    let _ = std::fs::remove_dir_all(&dir);

    finished.assert_code(0);
    for secret in ["VERYSECRET", "hunter2pass"] {
        assert!(
            !finished.stdout.contains(secret) && !finished.stderr.contains(secret),
            "{secret} leaked: {finished}"
        );
    }
    assert!(finished.stdout.contains("[redacted]"), "{finished}");
}

// ---------------------------------------------------------------------------
// migrate

#[tokio::test]
async fn migrate_applied_twice_on_a_fresh_database_succeeds_both_times() {
    let db = TestDb::empty().await;
    let url = db.url();
    let total = invite_sync::store::MIGRATOR.iter().count();
    for (round, said) in [
        ("first", format!("applied {total} migrations")),
        (
            "second",
            format!("database schema was already up to date ({total} migrations)"),
        ),
    ] {
        let finished = run(bare_command(&[("DATABASE_URL", &url)]), &["migrate"]).await;
        assert_eq!(finished.code(), Some(0), "{round} migrate: {finished}");
        assert!(finished.stdout.contains(&said), "{round}: {finished}");
        // PostgreSQL's "relation ... already exists, skipping" notice is not logged.
        assert!(!finished.stderr.contains("already exists"), "{finished}");
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'
           AND table_name IN ('desired_invitees', 'invite_sync_ledger', 'invite_sync_runs',
                              'invite_sync_clerk_calls', 'invite_sync_rate_blocks',
                              'invite_sync_known_users')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 6);
}

// ---------------------------------------------------------------------------
// sync

#[tokio::test(flavor = "multi_thread")]
async fn sync_invites_everyone_once_and_a_second_sync_creates_nothing() {
    let h = harness(&[]).await;
    let roster = people("sync", 12);
    add(&h, &roster).await;

    let first = invite_sync(&h, &["sync"]).await;
    first.assert_code(0);
    assert!(
        first
            .stdout
            .contains("succeeded: 12 created, 0 revoked, 0 held, 0 failed, backlog 0"),
        "{first}"
    );
    assert_one_pending_each_and_nothing_else(&h, &roster);
    let after_first = writes(&h.sim.stats());

    let second = invite_sync(&h, &["sync"]).await;
    second.assert_code(0);
    assert!(
        second
            .stdout
            .contains("succeeded: 0 created, 0 revoked, 0 held, 0 failed"),
        "{second}"
    );
    assert_eq!(
        writes(&h.sim.stats()),
        after_first,
        "the second sync wrote to Clerk"
    );
    assert_one_pending_each_and_nothing_else(&h, &roster);
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_exits_3_while_revocations_are_held_and_allow_revocations_releases_them() {
    let h = harness(&[]).await;
    let roster = people("held", 30);
    add(&h, &roster).await;
    invite_sync(&h, &["sync"]).await.assert_code(0);
    assert_one_pending_each_and_nothing_else(&h, &roster);

    sqlx::query("DELETE FROM desired_invitees")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let held = invite_sync(&h, &["sync"]).await;
    held.assert_code(3);
    assert_eq!(
        h.sim.stats().total(Operation::RevokeInvitation),
        0,
        "a held revocation reached Clerk: {held}"
    );
    assert!(held.stdout.contains("30 held"), "{held}");
    assert!(
        held.stdout
            .contains("invite-sync sync --allow-revocations 30"),
        "the output does not say how to release them: {held}"
    );
    assert_eq!(h.pending().len(), 30);
    let plan = invite_sync(&h, &["plan", "--detailed-exitcode"]).await;
    plan.assert_code(2);
    assert!(
        plan.stdout.contains("! held")
            && plan
                .stdout
                .contains("invite-sync sync --allow-revocations 30"),
        "{plan}"
    );

    let released = invite_sync(&h, &["sync", "--allow-revocations", "30"]).await;
    released.assert_code(0);
    assert!(released.stdout.contains("30 revoked, 0 held"), "{released}");
    let stats = h.sim.stats();
    assert_eq!(stats.total(Operation::RevokeInvitation), 30);
    assert_eq!(stats.count(Operation::RevokeInvitation, 200), 30);
    assert!(h.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_revocations_releases_at_most_n_and_only_this_once() {
    let h = harness(&[]).await;
    add(&h, &people("once", 30)).await;
    invite_sync(&h, &["sync"]).await.assert_code(0);
    sqlx::query("DELETE FROM desired_invitees")
        .execute(&h.db.pool)
        .await
        .unwrap();

    let partly = invite_sync(&h, &["sync", "--allow-revocations", "5"]).await;
    partly.assert_code(3);
    assert!(partly.stdout.contains("5 revoked, 25 held"), "{partly}");
    assert_eq!(h.sim.stats().count(Operation::RevokeInvitation, 200), 5);

    let again = invite_sync(&h, &["sync"]).await;
    again.assert_code(3);
    assert!(again.stdout.contains("0 revoked, 25 held"), "{again}");
    assert_eq!(h.sim.stats().total(Operation::RevokeInvitation), 5);
    assert_eq!(h.pending().len(), 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_exits_1_when_an_item_fails() {
    let h = harness(&[]).await;
    let roster = people("fail", 1);
    add(&h, &roster).await;
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        1,
        FaultKind::Status {
            status: 400,
            retry_after: None,
        },
    ));

    let finished = invite_sync(&h, &["sync"]).await;
    finished.assert_code(1);
    assert!(
        finished.stdout.contains("partial: 0 created") && finished.stdout.contains("1 failed"),
        "{finished}"
    );
    assert!(h.pending().is_empty());
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_ledger WHERE state = 'failed'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_exits_2_on_a_usage_error_or_a_bad_configuration() {
    let h = harness(&[]).await;
    let usage = invite_sync(&h, &["sync", "--allow-revocations", "notanumber"]).await;
    usage.assert_code(2);
    assert!(usage.stderr.contains("--allow-revocations"), "{usage}");

    let config = invite_sync_with(
        &h,
        &[("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "2")],
        &["sync"],
    )
    .await;
    config.assert_code(2);
    assert!(
        config.stderr.contains("sync.max_revocation_ratio"),
        "{config}"
    );
    assert_eq!(writes(&h.sim.stats()), [0, 0, 0]);
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_reads_the_secret_key_from_a_systemd_credential_file() {
    let h = harness(&[]).await;
    add(&h, &people("cred", 2)).await;
    let dir = std::env::temp_dir().join(format!(
        "invite-sync-cli-credentials-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("clerk-secret-key"),
        format!("{}\n", h.sim.secret_key()),
    )
    .unwrap();
    let mut command = h.command();
    command
        .env_remove("CLERK_SECRET_KEY")
        .env("CREDENTIALS_DIRECTORY", &dir)
        .env("INVITE_SYNC__CLERK__SECRET_KEY_FILE", "%d/clerk-secret-key");
    let finished = run(command, &["sync"]).await;
    let _ = std::fs::remove_dir_all(&dir);
    finished.assert_code(0);
    assert!(finished.stdout.contains("2 created"), "{finished}");
    assert!(!finished.stderr.contains(h.sim.secret_key()), "{finished}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_without_a_usable_secret_key_is_a_configuration_error() {
    let h = harness(&[]).await;
    let mut missing = h.command();
    missing.env_remove("CLERK_SECRET_KEY");
    let missing = run(missing, &["sync"]).await;
    missing.assert_code(2);
    assert!(missing.stderr.contains("clerk.secret_key"), "{missing}");

    let mut unreadable = h.command();
    unreadable.env_remove("CLERK_SECRET_KEY").env(
        "INVITE_SYNC__CLERK__SECRET_KEY_FILE",
        "/nonexistent/clerk-secret-key",
    );
    let unreadable = run(unreadable, &["plan", "--detailed-exitcode"]).await;
    // plan's 2 means "changes": a configuration error there is 1 by its own contract.
    unreadable.assert_code(1);
    let mut unreadable_sync = h.command();
    unreadable_sync.env_remove("CLERK_SECRET_KEY").env(
        "INVITE_SYNC__CLERK__SECRET_KEY_FILE",
        "/nonexistent/clerk-secret-key",
    );
    let unreadable_sync = run(unreadable_sync, &["sync"]).await;
    unreadable_sync.assert_code(2);
    assert!(
        unreadable_sync.stderr.contains("clerk.secret_key_file"),
        "{unreadable_sync}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_dry_run_sends_no_write_call() {
    let h = harness(&[]).await;
    let roster = people("dry", 12);
    add(&h, &roster).await;

    let finished = invite_sync(&h, &["sync", "--dry-run"]).await;
    finished.assert_code(0);
    assert!(
        finished.stdout.contains("[dry run: nothing sent]"),
        "{finished}"
    );
    assert_eq!(
        writes(&h.sim.stats()),
        [0, 0, 0],
        "a dry run wrote to Clerk"
    );
    assert!(h.sim.invitations().is_empty());
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_ledger").await,
        0
    );
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_clerk_calls")
            .await,
        0,
        "a dry run spent budget"
    );
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE dry_run")
            .await,
        1
    );
}

// ---------------------------------------------------------------------------
// plan

/// Ten people synced, then two removed and three added.
async fn synced_then_changed(prefix: &str) -> (Harness, Vec<String>, Vec<String>) {
    let h = harness(&[]).await;
    let first = people(prefix, 10);
    add(&h, &first).await;
    invite_sync(&h, &["sync"]).await.assert_code(0);
    let removed = vec![first[3].clone(), first[7].clone()];
    let removed_refs: Vec<&str> = removed.iter().map(String::as_str).collect();
    h.remove_people(&removed_refs).await;
    let added = people(&format!("{prefix}new"), 3);
    add(&h, &added).await;
    (h, removed, added)
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_json_lists_the_exact_emails_to_create_and_to_revoke() {
    let h = harness(&[]).await;
    let roster = people("pj", 4);
    add(&h, &roster).await;
    let before = invite_sync(&h, &["plan", "--format", "json"]).await;
    before.assert_code(0);
    let plan = json(&before);
    assert_eq!(emails_of(&plan["creates"]), sorted(&roster), "{before}");
    assert_eq!(emails_of(&plan["revocations"]), Vec::<String>::new());
    assert_eq!(plan["backlog"], 4);
    drop(h);

    let (h, removed, added) = synced_then_changed("pjc").await;
    let calls_before = h.sim.stats();
    let after = invite_sync(&h, &["plan", "--format", "json"]).await;
    after.assert_code(0);
    let plan = json(&after);
    assert_eq!(emails_of(&plan["creates"]), sorted(&added), "{after}");
    assert_eq!(emails_of(&plan["revocations"]), sorted(&removed), "{after}");
    for revocation in plan["revocations"].as_array().unwrap() {
        assert_eq!(revocation["status"], "revoke", "{after}");
        let id = revocation["invitation_id"].as_str().unwrap();
        assert!(
            h.pending().iter().any(|i| i.id == id),
            "{id} is not a pending invitation"
        );
    }
    assert_eq!(plan["counts"]["in_sync"], 8, "{after}");
    assert_eq!(
        writes(&h.sim.stats()),
        writes(&calls_before),
        "plan wrote to Clerk"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_text_lists_revocations_before_creates() {
    let (h, removed, added) = synced_then_changed("pt").await;
    let finished = invite_sync(&h, &["plan"]).await;
    finished.assert_code(0);
    let text = &finished.stdout;
    let line_of = |needle: &str| {
        text.lines()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {finished}"))
    };
    let revocations_heading = line_of("Revocations (2)");
    let creates_heading = line_of("Creates (3)");
    assert!(revocations_heading < creates_heading, "{finished}");
    for email in &removed {
        let line = line_of(&format!("revoke     {email}"));
        assert!(
            revocations_heading < line && line < creates_heading,
            "{finished}"
        );
    }
    for email in &added {
        assert!(line_of(&format!("create     {email}")) > creates_heading);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_detailed_exitcode_is_2_with_changes_and_0_when_in_sync() {
    let h = harness(&[]).await;
    add(&h, &people("pd", 5)).await;

    invite_sync(&h, &["plan"]).await.assert_code(0);
    let changes = invite_sync(&h, &["plan", "--detailed-exitcode"]).await;
    changes.assert_code(2);
    assert!(changes.stdout.contains("Creates (5)"), "{changes}");

    invite_sync(&h, &["sync"]).await.assert_code(0);
    let in_sync = invite_sync(&h, &["plan", "--detailed-exitcode"]).await;
    in_sync.assert_code(0);
    assert!(in_sync.stdout.contains("Creates (0)"), "{in_sync}");

    h.remove_people(&["pd0002@example.com"]).await;
    invite_sync(&h, &["plan", "--detailed-exitcode", "--format", "json"])
        .await
        .assert_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_detailed_exitcode_reports_a_bad_configuration_as_an_error_not_as_changes() {
    let h = harness(&[]).await;
    let finished = invite_sync_with(
        &h,
        &[("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "2")],
        &["plan", "--detailed-exitcode"],
    )
    .await;
    assert!(
        finished.stderr.contains("sync.max_revocation_ratio"),
        "{finished}"
    );
    finished.assert_code(1);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_detailed_exitcode_is_1_when_clerk_cannot_be_reached() {
    let h = harness(&[]).await;
    add(&h, &people("pe", 2)).await;
    // Nothing listens on port 9 of the loopback address.
    let finished = invite_sync_with(
        &h,
        &[
            ("INVITE_SYNC__CLERK__API_URL", "http://127.0.0.1:9/v1"),
            ("INVITE_SYNC__CLERK__MAX_ATTEMPTS", "1"),
        ],
        &["plan", "--detailed-exitcode"],
    )
    .await;
    finished.assert_code(1);
    assert!(finished.stderr.contains("error:"), "{finished}");
}

// ---------------------------------------------------------------------------
// status

#[tokio::test(flavor = "multi_thread")]
async fn status_json_shows_the_last_run_the_budget_the_backlog_and_held_revocations() {
    let target = unique_target("cli");
    let h = harness(&[
        ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
        ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
        ("INVITE_SYNC__SYNC__TARGET", &target),
    ])
    .await;
    add(&h, &people("st", 15)).await;
    let synced = invite_sync(&h, &["sync"]).await;
    synced.assert_code(0);
    assert!(
        synced.stdout.contains("11 created") && synced.stdout.contains("backlog 4"),
        "{synced}"
    );

    let finished = invite_sync(&h, &["status", "--format", "json"]).await;
    finished.assert_code(0);
    let status = json(&finished);
    assert_eq!(status["target"], target.as_str(), "{finished}");
    assert_eq!(status["lock_holder"], Value::Null, "{finished}");
    assert_eq!(status["backlog"], 4, "{finished}");
    assert!(
        status["backlog_eta_seconds"].as_u64().unwrap() > 0,
        "{finished}"
    );
    assert_eq!(status["held_revocations"], 0, "{finished}");
    assert_eq!(status["budget"]["bulk"]["left"], 0, "{finished}");
    assert_eq!(status["budget"]["single"]["left"], 0, "{finished}");
    assert!(
        status["budget"]["bulk"]["frees_at"].is_string(),
        "{finished}"
    );
    assert!(status["last_success_at"].is_string(), "{finished}");
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{finished}");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert_eq!(runs[0]["trigger"], "sync");
    assert_eq!(runs[0]["counts"]["created"], 11);
    assert_eq!(runs[0]["backlog"], 4);

    let text = invite_sync(&h, &["status"]).await;
    text.assert_code(0);
    for expected in [
        &format!("Target {target}"),
        "Lock: free",
        "Budget left this window: 0 bulk calls, 0 single calls",
        "Backlog 4,",
        "Held revocations: 0",
        "created=11",
    ] {
        assert!(text.stdout.contains(expected), "no {expected:?}: {text}");
    }

    sqlx::query("DELETE FROM desired_invitees")
        .execute(&h.db.pool)
        .await
        .unwrap();
    invite_sync(&h, &["sync"]).await.assert_code(3);
    let finished = invite_sync(&h, &["status", "--format", "json"]).await;
    finished.assert_code(0);
    let status = json(&finished);
    assert_eq!(status["held_revocations"], 11, "{finished}");
    assert_eq!(status["runs"][0]["outcome"], "held", "{finished}");
    assert_eq!(status["runs"].as_array().unwrap().len(), 2);
    let text = invite_sync(&h, &["status"]).await;
    text.assert_code(0);
    assert!(
        text.stdout.contains("HELD REVOCATIONS: 11")
            && text.stdout.contains("--allow-revocations 11"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// One writer

#[tokio::test(flavor = "multi_thread")]
async fn of_two_syncs_at_once_one_runs_and_the_other_skips() {
    let target = unique_target("cli");
    let h = Harness::with(
        SimOptions {
            hang: Duration::from_secs(5),
            ..SimOptions::default()
        },
        &[("INVITE_SYNC__SYNC__TARGET", &target)],
    )
    .await;
    let roster = people("two", 12);
    add(&h, &roster).await;
    // A's list hangs, then the connection closes without an answer; the client (timeout
    // 10 s, longer than the hang) retries the list, which is safe to repeat, and goes on.
    h.sim
        .inject_fault(Fault::new(Operation::ListInvitations, 1, FaultKind::Hang));

    let mut a = Proc::spawn(h.command(), &["sync"]);
    let holder = || async {
        invite_sync::store::lock::holder(&h.db.pool, &target)
            .await
            .expect("the lock holder can be read")
    };
    // The lock is taken first and the holder's pid written just after: wait for both.
    a.wait_until("A to hold the lock", Duration::from_secs(10), || async {
        holder().await.is_some_and(|h| h.pid.is_some())
    })
    .await;
    let holder = holder().await.expect("A holds the lock");
    // The holder named is the invite-sync process A, not A's PostgreSQL backend.
    assert_eq!(holder.pid, Some(a.pid() as i32));
    assert_ne!(holder.backend_pid as u32, a.pid());
    let host = invite_sync::store::lock::this_host();
    assert_eq!(holder.host.as_deref(), Some(host.as_str()));

    let status = invite_sync(&h, &["status", "--format", "json"]).await;
    status.assert_code(0);
    assert_eq!(json(&status)["lock_holder"]["pid"], a.pid(), "{status}");
    assert_eq!(json(&status)["lock_holder"]["host"], host, "{status}");
    let text = invite_sync(&h, &["status"]).await;
    text.assert_code(0);
    assert!(
        text.stdout.contains(&format!(
            "Lock: held by invite-sync pid {} on {host} (PostgreSQL backend {})",
            a.pid(),
            holder.backend_pid
        )),
        "{text}"
    );

    let b = invite_sync(&h, &["sync"]).await;
    b.assert_code(0);
    assert!(b.stdout.contains("skipped"), "{b}");
    assert!(
        b.stdout
            .contains(&format!("invite-sync pid {} on {host}", a.pid())),
        "B does not name the holder: {b}"
    );
    assert!(
        a.exited().is_none(),
        "A finished before B did: the race was not tested"
    );

    let a = a.wait(COMMAND_DEADLINE).await;
    a.assert_code(0);
    assert!(a.stdout.contains("12 created"), "{a}");
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs").await,
        1
    );
    assert_one_pending_each_and_nothing_else(&h, &roster);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_no_lock_holder_when_only_another_database_holds_the_same_target() {
    let h = harness(&[]).await;
    // Advisory locks are per database: this one does not stop a cycle in `h`'s database.
    let other = TestDb::empty().await;
    let mut other_session = other.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('invite-sync:' || $1, 0))")
        .bind("default")
        .execute(&mut *other_session)
        .await
        .unwrap();

    let synced = invite_sync(&h, &["sync"]).await;
    synced.assert_code(0);
    assert!(synced.stdout.starts_with("succeeded"), "{synced}");

    let finished = invite_sync(&h, &["status", "--format", "json"]).await;
    finished.assert_code(0);
    assert_eq!(json(&finished)["lock_holder"], Value::Null, "{finished}");
}

// ---------------------------------------------------------------------------
// The service: signals

/// `invite-sync run`, its HTTP server on a port of its own.
fn service(h: &Harness) -> Proc {
    let mut command = h.command();
    command.env("INVITE_SYNC__HTTP__LISTEN", "127.0.0.1:0");
    Proc::spawn(command, &["run"])
}

/// Expires `email`'s pending invitation in Clerk: a change no roster notification reports,
/// which only a cycle that lists Clerk notices (and answers with a new invitation).
fn expire_in_clerk(h: &Harness, email: &str) -> String {
    let invitation = h
        .pending()
        .into_iter()
        .find(|i| i.email_address == email)
        .unwrap_or_else(|| panic!("{email} has no pending invitation"));
    assert!(h.sim.expire(&invitation.id));
    invitation.id
}

/// Whether `email` holds a pending invitation other than `old_id`.
fn reinvited(h: &Harness, email: &str, old_id: &str) -> bool {
    h.pending()
        .iter()
        .any(|i| i.email_address == email && i.id != old_id)
}

async fn finished_runs(h: &Harness) -> i64 {
    h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE finished_at IS NOT NULL")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stops_cleanly_on_sigterm_with_a_backlog_and_a_fresh_start_resumes_it() {
    let h = Harness::with(
        SimOptions {
            hour: Duration::from_secs(1),
            ..SimOptions::default()
        },
        &[
            ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "2"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS", "3600"),
            ("INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS", "10"),
        ],
    )
    .await;
    let roster = people("term", 60);
    add(&h, &roster).await;

    let mut service = service(&h);
    service
        .wait_until(
            "the start cycle to finish",
            Duration::from_secs(10),
            || async { finished_runs(&h).await >= 1 },
        )
        .await;
    let (outcome, backlog): (String, i32) =
        sqlx::query_as("SELECT outcome, backlog FROM invite_sync_runs")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), backlog), ("succeeded", 39));
    assert_eq!(h.pending().len(), 21);

    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    let stopped = service.wait(Duration::from_secs(12)).await;
    stopped.assert_code(0);
    assert_eq!(
        finished_runs(&h).await,
        h.db.scalar("SELECT count(*) FROM invite_sync_runs").await,
        "a run was left open: {stopped}"
    );

    // The ledger agrees with Clerk: nothing in flight, and the same pending invitations.
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_ledger WHERE state = 'sending'")
            .await,
        0
    );
    let ledger_pending: BTreeSet<String> = sqlx::query_scalar(
        "SELECT clerk_invitation_id FROM invite_sync_ledger WHERE state = 'pending'",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let sim_pending: BTreeSet<String> = h.pending().into_iter().map(|i| i.id).collect();
    assert_eq!(ledger_pending, sim_pending);
    assert_eq!(ledger_pending.len(), 21);

    // A fresh start with a one-second window drains the rest, a window's worth per sync
    // (a slot frees one second after the window lets it go).
    let short_window = [("INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS", "1")];
    for _ in 0..3 {
        if h.pending().len() == roster.len() {
            break;
        }
        wait_for(
            "the create window to pass",
            Duration::from_secs(5),
            || async {
                let recent =
                    h.db.scalar(
                        "SELECT count(*) FROM invite_sync_clerk_calls
                       WHERE called_at > now() - interval '2100 milliseconds'",
                    )
                    .await;
                (recent == 0).then_some(())
            },
        )
        .await;
        let resumed = invite_sync_with(&h, &short_window, &["sync"]).await;
        resumed.assert_code(0);
        assert!(!resumed.stdout.contains(" 0 created"), "{resumed}");
    }
    assert_one_pending_each_and_nothing_else(&h, &roster);
    let stats = h.sim.stats();
    assert_eq!(
        stats.total(Operation::CreateBulkInvitations) + stats.total(Operation::CreateInvitation),
        stats.count(Operation::CreateBulkInvitations, 200)
            + stats.count(Operation::CreateInvitation, 200),
        "a create was refused: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_makes_run_start_a_cycle_and_sigint_stops_it() {
    let h = harness(&[("INVITE_SYNC__SYNC__SCHEDULE", NEVER)]).await;
    h.add_people(&["late@example.com"]).await;
    let mut service = service(&h);
    service
        .wait_until(
            "the start cycle to finish",
            Duration::from_secs(10),
            || async { finished_runs(&h).await >= 1 },
        )
        .await;
    service.wait_for_handler(SIGHUP).await;

    let expired = expire_in_clerk(&h, "late@example.com");
    service.signal("HUP");
    service
        .wait_until(
            "a new invitation for late@example.com",
            Duration::from_secs(10),
            || std::future::ready(reinvited(&h, "late@example.com", &expired)),
        )
        .await;
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE trigger = 'sighup'")
            .await,
        1
    );

    // Ctrl-C stops it as cleanly as SIGTERM.
    service.wait_for_handler(SIGINT).await;
    service.signal("INT");
    service.wait(Duration::from_secs(10)).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_follows_its_cron_schedule() {
    let h = harness(&[("INVITE_SYNC__SYNC__SCHEDULE", "* * * * * *")]).await;
    h.add_people(&["ticked@example.com"]).await;
    let mut service = service(&h);
    service
        .wait_until(
            "the start cycle to finish",
            Duration::from_secs(10),
            || async { finished_runs(&h).await >= 1 },
        )
        .await;

    let expired = expire_in_clerk(&h, "ticked@example.com");
    service
        .wait_until(
            "a new invitation for ticked@example.com",
            Duration::from_secs(10),
            || std::future::ready(reinvited(&h, "ticked@example.com", &expired)),
        )
        .await;
    assert!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE trigger = 'schedule'")
            .await
            >= 1
    );
    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    service.wait(Duration::from_secs(10)).await.assert_code(0);
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE finished_at IS NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roster_change_wakes_run_within_seconds() {
    let h = harness(&[
        ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.2"),
    ])
    .await;
    let mut service = service(&h);
    service
        .wait_until(
            "the start cycle to finish",
            Duration::from_secs(10),
            || async { finished_runs(&h).await >= 1 },
        )
        .await;
    service
        .wait_until(
            "the service to listen for roster changes",
            Duration::from_secs(10),
            || async { h.listener_pid().await.is_some() },
        )
        .await;

    h.add_people(&["woken@example.com"]).await;
    service
        .wait_until(
            "an invitation for woken@example.com",
            Duration::from_secs(10),
            || {
                std::future::ready(
                    h.pending()
                        .iter()
                        .any(|i| i.email_address == "woken@example.com"),
                )
            },
        )
        .await;
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE trigger = 'notify'")
            .await,
        1
    );
    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    service.wait(Duration::from_secs(10)).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_drains_a_backlog_by_itself_as_the_budget_frees_up() {
    let h = Harness::with(
        SimOptions {
            hour: Duration::from_secs(1),
            ..SimOptions::default()
        },
        &[
            ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
            ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW", "1"),
            ("INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS", "1"),
        ],
    )
    .await;
    let roster = people("drain", 25);
    add(&h, &roster).await;
    let mut service = service(&h);
    service
        .wait_until("the backlog to drain", Duration::from_secs(14), || {
            std::future::ready(h.pending().len() >= roster.len())
        })
        .await;
    let backlog_cycles =
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE trigger = 'backlog'")
            .await;
    assert!(backlog_cycles >= 2, "{backlog_cycles} backlog cycles");
    assert!(service.exited().is_none());
    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    service.wait(Duration::from_secs(10)).await.assert_code(0);
    assert_one_pending_each_and_nothing_else(&h, &roster);
}

fn revocation_in_flight(h: &Harness) -> bool {
    h.sim
        .stats()
        .count(Operation::RevokeInvitation, SimStats::NO_RESPONSE)
        == 1
}

/// Ten people synced by a first `sync`, then two removed and twelve added; the next
/// revocation hangs for `hang`.
async fn revocation_will_hang(
    hang: Duration,
    overrides: &[(&str, &str)],
) -> (Harness, Vec<String>) {
    let h = Harness::with(
        SimOptions {
            hang,
            ..SimOptions::default()
        },
        overrides,
    )
    .await;
    let first = people("stay", 10);
    add(&h, &first).await;
    invite_sync(&h, &["sync"]).await.assert_code(0);
    h.remove_people(&[first[0].as_str(), first[1].as_str()])
        .await;
    let added = people("join", 12);
    add(&h, &added).await;
    h.sim
        .inject_fault(Fault::new(Operation::RevokeInvitation, 1, FaultKind::Hang));
    let mut roster: Vec<String> = first[2..].to_vec();
    roster.extend(added);
    (h, roster)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_revocation_lets_that_call_finish_and_sends_nothing_after_it() {
    let (h, roster) = revocation_will_hang(
        Duration::from_secs(2),
        &[
            ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
            ("INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS", "10"),
        ],
    )
    .await;
    let creates_before = writes(&h.sim.stats());

    let mut service = service(&h);
    service
        .wait_until(
            "a revocation to be in flight",
            Duration::from_secs(10),
            || std::future::ready(revocation_in_flight(&h)),
        )
        .await;
    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    let stopped = service.wait(Duration::from_secs(10)).await;
    stopped.assert_code(0);

    // The revoke in flight was retried to its end (a revoke is safe to repeat); the
    // second revoke and the creates were not sent.
    let stats = h.sim.stats();
    assert_eq!(
        stats.count(Operation::RevokeInvitation, 200),
        1,
        "{stats:?}"
    );
    assert_eq!(stats.total(Operation::RevokeInvitation), 2, "{stats:?}");
    assert_eq!(
        (
            stats.total(Operation::CreateInvitation),
            stats.total(Operation::CreateBulkInvitations)
        ),
        (creates_before[0], creates_before[1]),
        "a create was sent after SIGTERM: {stopped}"
    );
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM invite_sync_runs WHERE trigger = 'start'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "interrupted", "{stopped}");
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_ledger WHERE revoked_by_us")
            .await,
        1
    );

    let resumed = invite_sync(&h, &["sync"]).await;
    resumed.assert_code(0);
    assert!(
        resumed.stdout.contains("12 created, 1 revoked"),
        "{resumed}"
    );
    let pending: BTreeSet<String> = h
        .pending()
        .into_iter()
        .map(|i| i.email_address.to_lowercase())
        .collect();
    assert_eq!(pending, roster.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(pending_per_email(&h).values().max(), Some(&1));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_exits_1_when_the_cycle_in_progress_outlasts_the_shutdown_timeout() {
    let (h, roster) = revocation_will_hang(
        Duration::from_secs(8),
        &[
            ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
            ("INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let mut service = service(&h);
    service
        .wait_until(
            "a revocation to be in flight",
            Duration::from_secs(10),
            || std::future::ready(revocation_in_flight(&h)),
        )
        .await;
    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    let stopped = service.wait(Duration::from_secs(4)).await;
    stopped.assert_code(1);
    assert!(
        stopped.stderr.contains("shutdown_timeout_seconds"),
        "{stopped}"
    );

    // The next start closes the run the stopped process left open, and does the work.
    let resumed = invite_sync(&h, &["sync"]).await;
    resumed.assert_code(0);
    assert!(
        resumed.stdout.contains("12 created, 2 revoked"),
        "{resumed}"
    );
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM invite_sync_runs WHERE outcome = 'running' OR finished_at IS NULL"
        )
        .await,
        0
    );
    let abandoned: String =
        sqlx::query_scalar("SELECT outcome FROM invite_sync_runs WHERE trigger = 'start'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(abandoned, "interrupted");
    assert_one_pending_each_and_nothing_else(&h, &roster);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_interrupted_by_sigterm_exits_1_after_the_call_in_flight() {
    let (h, _) = revocation_will_hang(Duration::from_secs(2), &[]).await;
    let mut sync = Proc::spawn(h.command(), &["sync"]);
    sync.wait_until(
        "a revocation to be in flight",
        Duration::from_secs(10),
        || std::future::ready(revocation_in_flight(&h)),
    )
    .await;
    sync.wait_for_handler(SIGTERM).await;
    sync.signal("TERM");
    let stopped = sync.wait(Duration::from_secs(10)).await;
    stopped.assert_code(1);
    assert!(stopped.stdout.contains("interrupted"), "{stopped}");
    assert_eq!(h.sim.stats().count(Operation::RevokeInvitation, 200), 1);
}

// ---------------------------------------------------------------------------
// import

#[tokio::test(flavor = "multi_thread")]
async fn import_refuses_a_file_with_a_bad_line_unless_told_to_skip_it() {
    let h = harness(&[]).await;
    let dir = std::env::temp_dir().join(format!(
        "invite-sync-cli-import-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("roster.csv");
    std::fs::write(
        &file,
        "email,meta.team\nAnn@Example.com,red\nnot-an-email,blue\nbob@example.com,green\n",
    )
    .unwrap();
    let path = file.display().to_string();

    let refused = invite_sync(&h, &["import", &path]).await;
    let skipped = invite_sync(&h, &["import", "--skip-invalid", &path]).await;
    let _ = std::fs::remove_dir_all(&dir);

    refused.assert_code(1);
    assert!(refused.stderr.contains("line 3"), "{refused}");
    skipped.assert_code(0);
    assert!(skipped.stdout.contains("line 3"), "{skipped}");
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT lower(email) FROM desired_invitees ORDER BY 1")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(emails, ["ann@example.com", "bob@example.com"]);

    invite_sync(&h, &["sync"]).await.assert_code(0);
    let ann = h
        .pending()
        .into_iter()
        .find(|i| i.email_address.eq_ignore_ascii_case("ann@example.com"))
        .expect("ann is invited");
    assert_eq!(ann.public_metadata["team"], "red");
}

// ---------------------------------------------------------------------------
// Logs

#[tokio::test(flavor = "multi_thread")]
async fn sync_logs_neither_the_secret_key_nor_the_database_password_even_at_trace_level() {
    const KEY: &str = "sk_test_LEAKCANARY0123";
    const WRONG_KEY: &str = "sk_test_WRONGCANARY0123";
    let h = Harness::with(
        SimOptions {
            secret_key: KEY.to_owned(),
            ..SimOptions::default()
        },
        &[("RUST_LOG", "trace")],
    )
    .await;
    add(&h, &people("leak", 3)).await;
    // The test server trusts local connections, so a password in the URL is carried
    // through every layer without being needed.
    let mut url = url::Url::parse(&h.db.url()).unwrap();
    let password = match url.password() {
        Some(password) => password.to_owned(),
        None => {
            url.set_password(Some("hunter2pass")).unwrap();
            "hunter2pass".to_owned()
        }
    };
    let url = url.to_string();

    let ok = invite_sync_with(&h, &[("DATABASE_URL", &url)], &["sync"]).await;
    ok.assert_code(0);
    let refused = invite_sync_with(
        &h,
        &[("DATABASE_URL", &url), ("CLERK_SECRET_KEY", WRONG_KEY)],
        &["sync"],
    )
    .await;
    refused.assert_code(1);
    assert!(refused.stderr.contains("401"), "{refused}");
    for finished in [&ok, &refused] {
        assert!(
            finished.stderr.lines().count() > 20,
            "trace logging is off: {finished}"
        );
        for secret in [KEY, WRONG_KEY, "LEAKCANARY", "WRONGCANARY", &password] {
            assert!(
                !finished.stdout.contains(secret) && !finished.stderr.contains(secret),
                "{secret} leaked: {finished}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pretty_logs_to_a_file_carry_no_terminal_escape_codes() {
    let h = harness(&[]).await;
    add(&h, &people("ansi", 1)).await;
    let finished = invite_sync(&h, &["sync"]).await;
    finished.assert_code(0);
    assert!(finished.stderr.contains("cycle finished"), "{finished}");
    assert!(
        !finished.stderr.contains('\u{1b}'),
        "escape codes in a log file: {:?}",
        finished.stderr.lines().next()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_with_json_logs_keeps_stdout_for_the_summary_and_writes_json_lines_to_stderr() {
    let h = harness(&[("INVITE_SYNC__LOG__FORMAT", "json")]).await;
    add(&h, &people("json", 3)).await;
    let finished = invite_sync(&h, &["sync"]).await;
    finished.assert_code(0);
    let lines: Vec<&str> = finished.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{finished}");
    assert!(lines[0].starts_with("succeeded: 3 created"), "{finished}");
    assert!(finished.stderr.lines().count() > 0, "{finished}");
    for line in finished.stderr.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(event["level"].is_string(), "{line}");
    }
}

// ---------------------------------------------------------------------------
// demo and clerk-sim

#[tokio::test(flavor = "multi_thread")]
async fn demo_once_shows_the_plan_the_creates_the_revocations_and_the_reinvite_with_port_8080_taken(
) {
    // The port the demo's service once took: another server holding it may not stand in the
    // way of the simulated Clerk's webhooks.
    let _holder = match std::net::TcpListener::bind("127.0.0.1:8080") {
        Ok(listener) => Some(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(e) => panic!("127.0.0.1:8080 cannot be held: {e}"),
    };
    let server = server_url();
    let finished = run(
        bare_command(&[("DATABASE_URL", &server)]),
        &["demo", "--once"],
    )
    .await;
    finished.assert_code(0);
    let out = &finished.stdout;
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the output: {finished}"))
    };
    // The plan, before anything is sent.
    let plan = at("The plan before the first cycle");
    assert!(at("+ create     ada@example.com") > plan);
    // The first cycle creates everyone but the three who already have an account.
    let first_cycle = at("First cycle");
    assert!(
        out[first_cycle..].contains("cycle succeeded: 37 created, 0 revoked"),
        "{finished}"
    );
    // The leavers' invitations are planned for revocation and then revoked.
    let leave = at("people leave");
    for leaver in ["alan@example.com", "jean@example.com", "tim@example.com"] {
        assert!(
            at(&format!("- revoke     {leaver}")) > leave,
            "{leaver}: {finished}"
        );
    }
    assert!(
        out[leave..].contains("cycle succeeded: 0 created, 3 revoked"),
        "{finished}"
    );
    // Clerk deletes a user who accepted: its user.deleted webhook reaches the demo's service
    // and the next cycle invites her again.
    let deleted = at("Clerk deletes ada's account");
    assert!(
        out[deleted..].contains("cycle succeeded: 1 created, 0 revoked"),
        "{finished}"
    );
    assert!(out[deleted..].contains(r#""user.deleted":1"#), "{finished}");
    // The organizations: planned before the first cycle (Acme by its slug, an admin, the
    // existing accounts made members at once), done by it, then a role change and a leaver.
    let organizations = at("Organizations (2), 7 membership roster rows:");
    assert!(
        plan < organizations && organizations < first_cycle,
        "{finished}"
    );
    for line in [
        "+ invite        mia@example.com  (as org:admin)",
        "+ add_member    grace@example.com  (as org:member, an existing account)",
        "+ add_member    ken@example.com  (as org:admin, an existing account)",
    ] {
        let shown = at(line);
        assert!(plan < shown && shown < first_cycle, "{line}: {finished}");
    }
    assert!(
        out[first_cycle..].contains("organizations: 4 invited, 3 made members at once"),
        "{finished}"
    );
    let changes = at("becomes an admin of Acme");
    for line in [
        "~ change_role   grace@example.com  (org:member -> org:admin)",
        "- remove_member vint@example.com  (its row went)",
        "1 roles changed, 0 revoked, 1 removed",
        "grace@example.com is an admin of Acme",
        "vint@example.com is no longer a member of Globex",
    ] {
        assert!(out[changes..].contains(line), "{line}: {finished}");
    }
    assert!(!finished.stderr.trim().is_empty(), "no log lines");
    for line in finished.stderr.lines() {
        assert!(
            line.starts_with("[simulated Clerk]"),
            "a log line is not marked as simulated: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clerk_sim_serves_the_invitation_api_until_sigterm() {
    // A port that was free a moment ago; the simulator binds it itself.
    let port = free_port().expect("a loopback port is free");
    let listen = format!("127.0.0.1:{port}");
    let mut sim = Proc::spawn(
        bare_command(&[]),
        &[
            "clerk-sim",
            "--listen",
            &listen,
            "--secret-key",
            "sk_test_cli",
            "--hour-seconds",
            "5",
        ],
    );
    let http = reqwest::Client::new();
    let root = format!("http://{listen}");
    sim.wait_until("the simulator to answer", Duration::from_secs(10), || {
        let request = http.get(format!("{root}/_sim/stats")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    let created = http
        .post(format!("{root}/v1/invitations"))
        .bearer_auth("sk_test_cli")
        .json(&serde_json::json!({"email_address": "cli@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let invitation: Value = created.json().await.unwrap();
    assert_eq!(invitation["email_address"], "cli@example.com");
    assert_eq!(invitation["status"], "pending");

    let refused = http
        .post(format!("{root}/v1/invitations"))
        .bearer_auth("sk_test_other")
        .json(&serde_json::json!({"email_address": "other@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let stats: Value = http
        .get(format!("{root}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["create_invitation"]["200"], 1, "{stats}");
    assert_eq!(stats["create_invitation"]["401"], 1, "{stats}");

    sim.wait_for_handler(SIGTERM).await;
    sim.signal("TERM");
    let stopped = sim.wait(Duration::from_secs(10)).await;
    stopped.assert_code(0);
    assert!(
        stopped.stderr.contains("simulated Clerk stopped"),
        "{stopped}"
    );
}

#[tokio::test]
async fn clerk_sim_refuses_a_secret_key_that_is_not_a_clerk_key() {
    let finished = run(
        bare_command(&[]),
        &[
            "clerk-sim",
            "--listen",
            "127.0.0.1:0",
            "--secret-key",
            "not-a-key",
        ],
    )
    .await;
    finished.assert_code(2);
    assert!(finished.stderr.contains("--secret-key"), "{finished}");
}

#[tokio::test]
async fn clerk_sim_refuses_a_webhook_url_without_a_usable_secret() {
    let secret = "whsec_not*base64!";
    let bad_secret = run(
        bare_command(&[]),
        &[
            "clerk-sim",
            "--listen",
            "127.0.0.1:0",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            secret,
        ],
    )
    .await;
    bad_secret.assert_code(2);
    assert!(
        bad_secret.stderr.contains("--webhook-secret"),
        "{bad_secret}"
    );
    assert!(!bad_secret.stderr.contains("not*base64"), "{bad_secret}");

    let no_secret = run(
        bare_command(&[]),
        &[
            "clerk-sim",
            "--listen",
            "127.0.0.1:0",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
        ],
    )
    .await;
    no_secret.assert_code(2);
    assert!(no_secret.stderr.contains("--webhook-secret"), "{no_secret}");
}

#[tokio::test(flavor = "multi_thread")]
async fn clerk_sim_delivers_signed_user_webhooks_to_its_webhook_url() {
    use invite_sync::webhook_signature::{Scheme, Verifier};
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // The receiving end: every delivery goes to the test.
    let (sender, mut deliveries) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(receiver, app).await });

    let port = free_port().expect("a loopback port is free");
    let listen = format!("127.0.0.1:{port}");
    let mut sim = Proc::spawn(
        bare_command(&[("CLERK_SIM_WEBHOOK_SECRET", SECRET)]),
        &["clerk-sim", "--listen", &listen, "--webhook-url", &hook],
    );
    let http = reqwest::Client::new();
    let root = format!("http://{listen}");
    sim.wait_until("the simulator to answer", Duration::from_secs(10), || {
        let request = http.get(format!("{root}/_sim/stats")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    let seeded: Value = http
        .post(format!("{root}/_sim/users"))
        .json(&serde_json::json!({"email_addresses": ["hook@example.com"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = seeded["created"][0]
        .as_str()
        .expect("a new user id")
        .to_owned();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("the receiver runs");
    let verifier = Verifier::new(&[SECRET]).unwrap();
    verifier
        .verify(
            Scheme::Svix,
            &headers,
            &body,
            chrono::Utc::now().timestamp(),
        )
        .expect("signed with the secret");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "user.created");
    assert_eq!(event["data"]["id"], id.as_str());
    assert!(!sim.stderr().contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));

    sim.wait_for_handler(SIGTERM).await;
    sim.signal("TERM");
    let stopped = sim.wait(Duration::from_secs(10)).await;
    stopped.assert_code(0);
    assert!(
        !stopped.stderr.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{stopped}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_tells_systemd_it_is_ready_and_pings_the_watchdog() {
    let h = harness(&[("INVITE_SYNC__SYNC__SCHEDULE", NEVER)]).await;
    let dir = std::env::temp_dir().join(format!(
        "invite-sync-notify-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let socket_path = dir.join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("a notify socket");
    let mut command = h.command();
    command
        .env("INVITE_SYNC__HTTP__LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000");
    let mut service = Proc::spawn(command, &["run"]);

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let mut buffer = [0u8; 256];
        let received = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no READY=1 and two WATCHDOG=1 within 10 s: {seen:?}"))
            .expect("a datagram");
        seen.push(String::from_utf8_lossy(&buffer[..received]).into_owned());
    }
    assert!(
        seen.iter().position(|m| m.contains("READY=1"))
            < seen.iter().position(|m| m.contains("WATCHDOG=1")),
        "ready before the first watchdog ping: {seen:?}"
    );

    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    service.wait(Duration::from_secs(10)).await.assert_code(0);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Clerk's blocks and unsettled creates, as status, plan and sync show them

#[tokio::test(flavor = "multi_thread")]
async fn a_create_blocked_for_a_day_is_held_an_hour_at_most_and_status_shows_the_block() {
    let target = unique_target("cli");
    let h = harness(&[("INVITE_SYNC__SYNC__TARGET", &target)]).await;
    add(&h, &people("blocked", 3)).await;
    for operation in [
        Operation::CreateBulkInvitations,
        Operation::CreateInvitation,
    ] {
        h.sim.inject_fault(Fault::new(
            operation,
            1,
            FaultKind::Status {
                status: 429,
                retry_after: Some(86_400),
            },
        ));
    }
    h.cycle().await;
    let longest: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM blocked_until - now()))::float8 FROM invite_sync_rate_blocks",
    )
    .fetch_one(&h.db.pool)
    .await
    .expect("the blocks load");
    assert!(
        (3000.0..=3660.0).contains(&longest),
        "a Retry-After of a day blocks for {longest} s"
    );

    let json = invite_sync(&h, &["status", "--format", "json"]).await;
    json.assert_code(0);
    let status: Value = serde_json::from_str(&json.stdout).expect("status JSON");
    let blocks = status["clerk_blocks"].as_array().expect("clerk_blocks");
    assert!(!blocks.is_empty(), "{status}");
    for block in blocks {
        let left = block["seconds_left"].as_i64().expect("seconds_left");
        assert!((3000..=3660).contains(&left), "{block}");
        assert!(
            block["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("create_")),
            "{block}"
        );
    }
    let text = invite_sync(&h, &["status"]).await;
    text.assert_code(0);
    assert!(text.stdout.contains("CLERK BLOCKS create_"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_crash_unsettled_creates_are_shown_by_sync_status_and_plan_and_sync_does_not_exit_0(
) {
    let target = unique_target("cli");
    let h = harness(&[
        ("INVITE_SYNC__SYNC__TARGET", &target),
        ("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "3600"),
    ])
    .await;
    let emails = people("unsettled", 3);
    add(&h, &emails).await;
    // The creates reach Clerk but their answers are lost: as after a crash, the ledger holds
    // them `sending` and nobody knows whether they were made.
    for operation in [
        Operation::CreateBulkInvitations,
        Operation::CreateInvitation,
    ] {
        h.sim
            .inject_fault(Fault::new(operation, 1, FaultKind::DropAfterApply));
    }
    invite_sync(&h, &["sync"]).await;
    let sending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invite_sync_ledger WHERE state = 'sending'")
            .fetch_one(&h.db.pool)
            .await
            .expect("the ledger loads");
    assert!(sending > 0, "no create was left unsettled");

    // The clean sync right after: nothing to send, but the unsettled are not settled yet.
    let again = invite_sync(&h, &["sync"]).await;
    assert_ne!(again.code(), Some(0), "{again}");
    assert!(
        again
            .stdout
            .contains(&format!("{sending} creates unsettled")),
        "{again}"
    );

    let status = invite_sync(&h, &["status", "--format", "json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["unsettled"]["creates"], sending, "{status}");
    let left = status["unsettled"]["settles_in_seconds"]
        .as_i64()
        .expect("settles_in_seconds");
    assert!((3000..=3600).contains(&left), "{status}");
    let text = invite_sync(&h, &["status"]).await;
    assert!(
        text.stdout
            .contains(&format!("UNSETTLED CREATES: {sending}")),
        "{text}"
    );

    let plan = invite_sync(&h, &["plan", "--format", "json"]).await;
    let plan: Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    assert_eq!(plan["unsettled"]["creates"], sending, "{plan}");
    assert!(plan["unsettled"]["settles_at"].is_string(), "{plan}");
    let text = invite_sync(&h, &["plan"]).await;
    assert!(
        text.stdout
            .contains(&format!("Unsettled creates: {sending}")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// An operator's first hour: errors that say what to do

#[tokio::test(flavor = "multi_thread")]
async fn a_create_clerk_refused_is_sent_again_only_with_retry_failed() {
    let h = harness(&[]).await;
    let roster = people("refused", 2);
    add(&h, &roster).await;
    // Clerk refuses both creates (one bulk call) with a 422: a terminal failure.
    h.sim.inject_fault(Fault::new(
        Operation::CreateBulkInvitations,
        1,
        FaultKind::Status {
            status: 422,
            retry_after: None,
        },
    ));
    h.sim.inject_fault(Fault::new(
        Operation::CreateInvitation,
        2,
        FaultKind::Status {
            status: 422,
            retry_after: None,
        },
    ));
    invite_sync(&h, &["sync"]).await.assert_code(1);
    assert!(h.pending().is_empty());
    // The cause is fixed on Clerk's side; a plain sync does not try again.
    let again = invite_sync(&h, &["sync"]).await;
    assert!(again.stdout.contains("0 created"), "{again}");
    assert!(h.pending().is_empty(), "{again}");

    let bad = invite_sync(&h, &["sync", "--retry-failed", "not-an-address"]).await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("not-an-address"), "{bad}");

    let first = roster[0].to_uppercase();
    let one = invite_sync(
        &h,
        &["sync", "--retry-failed", &first, "nobody@example.com"],
    )
    .await;
    one.assert_code(0);
    assert!(
        one.stdout
            .contains(&format!("retrying 1 refused create: {}", roster[0])),
        "{one}"
    );
    assert!(
        one.stdout
            .contains("nobody@example.com: no refused create to retry"),
        "{one}"
    );
    assert!(one.stdout.contains("1 created"), "{one}");
    assert_eq!(pending_per_email(&h).get(&roster[0]), Some(&1));
    assert_eq!(pending_per_email(&h).get(&roster[1]), None);

    let all = invite_sync(&h, &["sync", "--retry-failed"]).await;
    all.assert_code(0);
    assert!(
        all.stdout
            .contains(&format!("retrying 1 refused create: {}", roster[1])),
        "{all}"
    );
    assert_one_pending_each_and_nothing_else(&h, &roster);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_status_shows_why_a_cycle_failed() {
    let h = harness(&[]).await;
    add(&h, &people("why", 1)).await;
    let failed = invite_sync_with(
        &h,
        &[
            ("INVITE_SYNC__CLERK__API_URL", "http://127.0.0.1:9/v1"),
            ("INVITE_SYNC__CLERK__MAX_ATTEMPTS", "1"),
        ],
        &["sync"],
    )
    .await;
    failed.assert_code(1);
    let error: String = sqlx::query_scalar("SELECT error FROM invite_sync_runs")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(!error.is_empty());

    let status = invite_sync(&h, &["status"]).await;
    status.assert_code(0);
    assert!(
        status.stdout.contains(&format!("      error: {error}")),
        "the run's error is not shown: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_and_its_dry_run_into_a_view_say_a_table_is_needed() {
    let h = harness(&[("INVITE_SYNC__SOURCE__RELATION", "roster_view")]).await;
    sqlx::query("CREATE VIEW roster_view AS SELECT * FROM desired_invitees")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("view-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("roster.csv");
    std::fs::write(&file, "email\nann@example.com\n").unwrap();
    let path = file.to_str().unwrap();
    for args in [vec!["import", path], vec!["import", "--dry-run", path]] {
        let finished = invite_sync(&h, &args).await;
        finished.assert_code(1);
        assert!(
            finished
                .stderr
                .contains("source.relation \"roster_view\" is a view")
                && finished.stderr.contains("needs a table"),
            "{finished}"
        );
        assert!(!finished.stderr.contains("xmax"), "{finished}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        h.db.scalar("SELECT count(*) FROM desired_invitees").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_migrate_on_start_an_unmigrated_database_is_refused_with_the_command_to_run() {
    let h = harness(&[]).await;
    let empty = TestDb::empty().await;
    let env = [
        ("DATABASE_URL", empty.url()),
        (
            "INVITE_SYNC__DATABASE__MIGRATE_ON_START",
            "false".to_owned(),
        ),
        ("INVITE_SYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for command in ["sync", "run"] {
        let finished = invite_sync_with(&h, &env, &[command]).await;
        finished.assert_code(1);
        assert!(
            finished.stderr.contains("run `invite-sync migrate`"),
            "{command}: {finished}"
        );
        assert!(
            !finished.stderr.contains("does not exist"),
            "{command}: {finished}"
        );
    }
    invite_sync_with(&h, &env, &["migrate"])
        .await
        .assert_code(0);
    invite_sync_with(&h, &env, &["sync"]).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_commands_that_call_clerk_need_a_readable_secret_key_file() {
    let h = harness(&[]).await;
    // As docs/configuration.md's table of commands says.
    for (args, code) in [
        (vec!["config", "check"], 2),
        (vec!["sync"], 2),
        (vec!["plan"], 2),
        (vec!["migrate"], 0),
        (vec!["status"], 0),
    ] {
        let mut command = h.command();
        command.env_remove("CLERK_SECRET_KEY");
        command.env(
            "INVITE_SYNC__CLERK__SECRET_KEY_FILE",
            "/nonexistent/clerk-secret-key",
        );
        let finished = run(command, &args).await;
        finished.assert_code(code);
        if code == 2 {
            assert!(
                finished.stderr.contains("clerk.secret_key"),
                "{args:?}: {finished}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// demo on a machine where no PostgreSQL answers

/// Runs `invite-sync demo --once` in a network namespace of its own (loopback up, nothing
/// listening), with no DATABASE_URL unless given, after `setup` (shell) ran in it. `None`
/// where namespaces cannot be made (not root).
async fn demo_alone(setup: &str, database_url: Option<&str>) -> Option<Finished> {
    let probe = std::process::Command::new("unshare")
        .args(["-n", "-m", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare -n -m` is not available here (it needs root)");
        return None;
    }
    let mut command = Command::new("unshare");
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let script = format!("ip link set lo up && {setup} exec \"$0\" demo --once",);
    let args = [
        "-n",
        "-m",
        "sh",
        "-c",
        &script,
        env!("CARGO_BIN_EXE_invite-sync"),
    ];
    Some(
        Proc::spawn(command, &args)
            .wait(Duration::from_secs(120))
            .await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_once_starts_a_private_postgresql_where_none_answers_and_removes_it() {
    if invite_sync::commands::private_postgres::PrivateCluster::find_binaries().is_none() {
        eprintln!("skipped: no PostgreSQL binaries in /usr/lib/postgresql/*/bin");
        return;
    }
    let Some(finished) = demo_alone("", None).await else {
        return;
    };
    finished.assert_code(0);
    let out = &finished.stdout;
    assert!(
        out.contains("No PostgreSQL answers at 127.0.0.1:5432 and DATABASE_URL is not set"),
        "{finished}"
    );
    for step in [
        "The sample roster goes into desired_invitees",
        "cycle succeeded: 37 created, 0 revoked",
        "cycle succeeded: 0 created, 3 revoked",
        "radia@example.com: invitation",
        "Simulated Clerk received",
    ] {
        assert!(out.contains(step), "no {step:?}: {finished}");
    }
    let removed = out
        .lines()
        .find_map(|line| {
            line.strip_prefix("The private PostgreSQL was stopped and ")
                .and_then(|rest| rest.strip_suffix(" removed."))
        })
        .unwrap_or_else(|| panic!("the demo does not say it removed its cluster: {finished}"));
    assert!(
        !std::path::Path::new(removed).exists(),
        "{removed} is left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_once_without_postgresql_binaries_says_in_one_line_how_to_get_them() {
    let Some(finished) = demo_alone(
        "{ [ ! -d /usr/lib/postgresql ] || mount -t tmpfs none /usr/lib/postgresql; } &&",
        None,
    )
    .await
    else {
        return;
    };
    finished.assert_code(1);
    let said: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(said.len(), 1, "{finished}");
    assert!(
        said[0].contains("no PostgreSQL answers at 127.0.0.1:5432")
            && said[0].contains("apt-get install postgresql")
            && said[0].contains("DATABASE_URL"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_once_with_a_database_url_that_does_not_answer_is_an_error() {
    let Some(finished) = demo_alone("", Some("postgres://postgres@127.0.0.1:5432/postgres")).await
    else {
        return;
    };
    finished.assert_code(1);
    assert!(
        finished
            .stderr
            .contains("no PostgreSQL answers at DATABASE_URL"),
        "{finished}"
    );
    assert!(!finished.stdout.contains("private"), "{finished}");
}

#[tokio::test(flavor = "multi_thread")]
async fn env_file_is_read_as_systemd_reads_it_keeping_an_ampersand_in_the_database_url() {
    let h = harness(&[]).await;
    let roster = people("envfile", 2);
    add(&h, &roster).await;
    // The path names a database that does not exist; the parameter after `&` names the
    // test's. A shell's `. file` would cut the URL at the `&`.
    let mut url = url::Url::parse(&server_url()).unwrap();
    url.set_path("/no_such_database_here");
    url.set_query(Some(&format!("sslmode=disable&dbname={}", h.db.name)));
    let dir = std::env::temp_dir().join(format!("env-file-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invite-sync.env");
    std::fs::write(
        &file,
        format!("# as deploy/systemd/etc/invite-sync/invite-sync.env\nDATABASE_URL={url}\n"),
    )
    .unwrap();

    let mut command = h.command();
    // The environment's value is replaced by the file's, as the service would see it.
    command.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/elsewhere");
    let finished = run(command, &["--env-file", file.to_str().unwrap(), "sync"]).await;
    finished.assert_code(0);
    assert!(finished.stdout.contains("2 created"), "{finished}");
    assert_one_pending_each_and_nothing_else(&h, &roster);

    std::fs::write(&file, "DATABASE_URL=\"unterminated\n").unwrap();
    let bad = invite_sync(&h, &["--env-file", file.to_str().unwrap(), "status"]).await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("line 1: a quote is left open"), "{bad}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// Files an operator names: read with a bound, never waited on

/// Address space the binary may take in the tests below: far more than it needs, far less
/// than reading an endless file whole would take.
const ADDRESS_SPACE_KIB: u64 = 1024 * 1024;

/// `invite-sync ARGS` with `env` alone, under [`ADDRESS_SPACE_KIB`] (and two malloc arenas,
/// so that the limit does not depend on the machine's count of processors), to its end
/// within 10 s.
async fn bounded_invite_sync(env: &[(&str, &str)], args: &[&str]) -> Finished {
    let mut command = Command::new("sh");
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command
        .env("MALLOC_ARENA_MAX", "2")
        .envs(env.iter().copied());
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\"");
    let mut all = vec!["-c", script.as_str(), env!("CARGO_BIN_EXE_invite-sync")];
    all.extend_from_slice(args);
    Proc::start(format!("invite-sync {}", args.join(" ")), command, &all)
        .wait(Duration::from_secs(10))
        .await
}

#[track_caller]
fn assert_refused_naming(finished: &Finished, needles: &[&str]) {
    finished.assert_code(2);
    for needle in needles {
        assert!(
            finished.stderr.contains(needle),
            "no {needle:?}: {finished}"
        );
    }
    assert!(!finished.stderr.contains("out of memory"), "{finished}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_env_file_config_file_or_secret_key_file_is_refused_at_its_limit() {
    let finished = bounded_invite_sync(&[], &["--env-file", "/dev/zero", "config", "check"]).await;
    assert_refused_naming(&finished, &["--env-file /dev/zero", "larger than 1 MiB"]);

    for device in ["/dev/zero", "/dev/urandom"] {
        let finished = bounded_invite_sync(&[], &["--config", device, "config", "check"]).await;
        assert_refused_naming(&finished, &[device, "the config file", "larger than 1 MiB"]);

        let finished = bounded_invite_sync(
            &[("INVITE_SYNC__CLERK__SECRET_KEY_FILE", device)],
            &["config", "check"],
        )
        .await;
        assert_refused_naming(
            &finished,
            &["clerk.secret_key_file", device, "larger than 4 KiB"],
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_over_the_limit_a_fifo_or_a_directory_is_refused_at_once() {
    let dir = std::env::temp_dir().join(format!(
        "invite-sync-cli-files-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let huge = dir.join("huge.toml");
    std::fs::File::create(&huge)
        .and_then(|file| file.set_len(64 * 1024 * 1024 * 1024))
        .unwrap();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    let (huge, fifo, directory) = (
        huge.display().to_string(),
        fifo.display().to_string(),
        dir.display().to_string(),
    );

    let finished = bounded_invite_sync(&[], &["--config", &huge, "config", "check"]).await;
    assert_refused_naming(&finished, &[&huge, "larger than 1 MiB"]);
    for option in ["--config", "--env-file"] {
        let finished = bounded_invite_sync(&[], &[option, &fifo, "config", "check"]).await;
        assert_refused_naming(&finished, &[&fifo, "FIFO"]);
        let finished = bounded_invite_sync(&[], &[option, &directory, "config", "check"]).await;
        assert_refused_naming(&finished, &[&directory, "a directory"]);
    }
    let finished = bounded_invite_sync(
        &[("INVITE_SYNC__CLERK__SECRET_KEY_FILE", &fifo)],
        &["config", "check"],
    )
    .await;
    assert_refused_naming(&finished, &["clerk.secret_key_file", &fifo, "FIFO"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// docs/operations.md "Database prerequisites", run as written

/// The SQL block that follows `<!-- prerequisites: NAME -->` in docs/operations.md, or the
/// first block of `doc` holding `needle`, with the list's indentation removed.
fn sql_block(doc: &str, needle: &str) -> String {
    let text = read(&format!("docs/{doc}"));
    let start = text
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in {doc}"));
    let open = text[..start]
        .rfind("```sql")
        .filter(|_| !needle.starts_with("<!--"))
        .unwrap_or_else(|| start + text[start..].find("```sql").expect("a sql block follows"));
    let body = &text[open + "```sql".len()..];
    let body = &body[..body.find("```").expect("the block ends")];
    body.lines()
        .map(|line| line.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_prerequisites_of_the_docs_work_as_written() {
    use sqlx::{ConnectOptions, Executor};
    let admin_options: sqlx::postgres::PgConnectOptions = server_url().parse().unwrap();
    let mut admin = admin_options.connect().await.expect("the server answers");
    // The roles are the cluster's: one run of this test at a time.
    admin
        .execute("SELECT pg_advisory_lock(hashtext('invite-sync docs prerequisites'))")
        .await
        .unwrap();
    let _ = admin
        .execute("DROP ROLE IF EXISTS invite_migrator, invite_sync")
        .await;
    let roles = sql_block("operations.md", "<!-- prerequisites: roles -->");
    admin
        .execute(roles.as_str())
        .await
        .expect("the roles block runs");

    let result =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(prerequisites_hold()))
            .await;
    admin
        .execute("DROP ROLE IF EXISTS invite_migrator, invite_sync")
        .await
        .expect("the roles can be dropped once their database is gone");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn prerequisites_hold() {
    use sqlx::Executor;
    let db = TestDb::empty().await;
    let grants = sql_block("operations.md", "<!-- prerequisites: grants -->");
    db.pool
        .execute(grants.as_str())
        .await
        .expect("the grants block runs");
    let sim = invite_sync::clerk::sim::start(SimOptions::default())
        .await
        .unwrap();
    let url_as = |user: &str, password: &str| {
        let mut url = url::Url::parse(&db.url()).unwrap();
        url.set_username(user).unwrap();
        url.set_password(Some(password)).unwrap();
        url.to_string()
    };
    let migrator = url_as("invite_migrator", "CHANGE-ME-MIGRATOR");
    let runner = url_as("invite_sync", "CHANGE-ME");
    let api_url = sim.base_url().to_string();
    let command = |url: &str, extra: &[(&str, &str)]| {
        let mut env = vec![
            ("DATABASE_URL", url),
            ("CLERK_SECRET_KEY", sim.secret_key()),
            ("INVITE_SYNC__CLERK__API_URL", api_url.as_str()),
        ];
        env.extend_from_slice(extra);
        bare_command(&env)
    };

    // A run-only role under the default migrate_on_start = true.
    let refused = run(command(&runner, &[]), &["sync"]).await;
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("permission denied for schema public"),
        "{refused}"
    );
    run(command(&migrator, &[]), &["migrate"])
        .await
        .assert_code(0);

    // The view of hr-integration.md over the operator's own table, after the migration.
    db.pool
        .execute(
            "CREATE SCHEMA hr;
             CREATE TABLE hr.people (work_email text, department text, hired_on date,
                                     status text, created timestamptz DEFAULT now());
             INSERT INTO hr.people (work_email, department, status)
                 VALUES ('Viewed@Example.com', 'ops', 'active'), ('gone@example.com', 'ops', 'left');",
        )
        .await
        .unwrap();
    let view = sql_block("hr-integration.md", "CREATE VIEW hr.desired_invitees");
    db.pool
        .execute(view.as_str())
        .await
        .expect("the view block runs");
    let trigger = sql_block(
        "hr-integration.md",
        "CREATE TRIGGER people_notify_invite_sync",
    );
    db.pool
        .execute(trigger.as_str())
        .await
        .expect("the trigger block runs after the migration");

    let run_only = [("INVITE_SYNC__DATABASE__MIGRATE_ON_START", "false")];
    let synced = run(command(&runner, &run_only), &["sync"]).await;
    synced.assert_code(0);
    let from_view = [
        ("INVITE_SYNC__DATABASE__MIGRATE_ON_START", "false"),
        ("INVITE_SYNC__SOURCE__RELATION", "hr.desired_invitees"),
    ];
    let synced = run(command(&runner, &from_view), &["sync"]).await;
    synced.assert_code(0);
    assert!(synced.stdout.contains("1 created"), "{synced}");
    let status = run(command(&runner, &run_only), &["status"]).await;
    status.assert_code(0);
    sim.shutdown().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_says_what_a_view_as_the_roster_disables() {
    let h = harness(&[("INVITE_SYNC__SOURCE__RELATION", "hr.desired_invitees")]).await;
    let finished = invite_sync(&h, &["config", "check"]).await;
    finished.assert_code(0);
    assert!(
        finished.stdout.contains(
            "# note: source.relation is \"hr.desired_invitees\". If it is a view, invite-sync only reads it: `import` and the roster webhook need a table"
        ),
        "{finished}"
    );
    let default = invite_sync(&harness(&[]).await, &["config", "check"]).await;
    assert!(
        !default.stdout.contains("# note: source.relation"),
        "{default}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_error_is_said_once() {
    let db = TestDb::empty().await;
    let mut url = url::Url::parse(&db.url()).unwrap();
    url.set_path("/invite_sync_no_such_database");
    let finished = run(bare_command(&[("DATABASE_URL", url.as_str())]), &["status"]).await;
    finished.assert_code(1);
    let said = "database \"invite_sync_no_such_database\" does not exist";
    let line = finished
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {finished}"));
    assert_eq!(line.matches(said).count(), 1, "{line}");
}

// ---------------------------------------------------------------------------
// Hostile rows and names

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_sync_report_rows_no_reader_can_take_and_go_on_with_the_others() {
    let relation = [("INVITE_SYNC__SOURCE__RELATION", "hostile_roster")];
    let h = harness(&relation).await;
    let hostile = h.hostile_roster().await;
    let good = people("good", 2);
    add(&h, &good).await;

    let plan = invite_sync(&h, &["plan", "--format", "json"]).await;
    plan.assert_code(0);
    let plan = json(&plan);
    assert_eq!(plan["counts"]["invalid"], hostile, "{plan}");
    assert_eq!(emails_of(&plan["creates"]), sorted(&good));
    let reasons: Vec<&str> = plan["drift"]
        .as_array()
        .expect("drift is a list")
        .iter()
        .filter(|entry| entry["category"] == "invalid")
        .filter_map(|entry| entry["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"not_before is infinity"), "{reasons:#?}");

    invite_sync(&h, &["sync"]).await.assert_code(0);
    assert_one_pending_each_and_nothing_else(&h, &good);
}

#[tokio::test]
async fn a_relation_name_postgresql_would_fold_is_refused_by_config_check() {
    let finished = run(
        bare_command(&[("INVITE_SYNC__SOURCE__RELATION", "Desired_Invitees")]),
        &["config", "check"],
    )
    .await;
    finished.assert_code(2);
    assert!(
        finished.stderr.contains("source.relation") && finished.stderr.contains("lower case"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relation_that_does_not_exist_fails_the_cycle_naming_it() {
    let h = harness(&[("INVITE_SYNC__SOURCE__RELATION", "hr.missing_people")]).await;
    let finished = invite_sync(&h, &["sync"]).await;
    assert_eq!(finished.code(), Some(1), "{finished}");
    assert!(
        finished.stderr.contains("source.relation")
            && finished.stderr.contains("hr.missing_people"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roster_view_whose_time_column_is_text_fails_the_cycle_naming_it_before_clerk_is_asked() {
    let h = harness(&[("INVITE_SYNC__SOURCE__RELATION", "text_times")]).await;
    add(&h, &people("texttime", 1)).await;
    sqlx::query(
        "CREATE VIEW text_times AS
         SELECT email, public_metadata, redirect_url, notify, expires_in_days, template_slug,
                not_before, source, created_at::text AS created_at, updated_at
         FROM desired_invitees",
    )
    .execute(&h.db.pool)
    .await
    .expect("the view is created");
    let finished = invite_sync(&h, &["sync"]).await;
    assert_eq!(finished.code(), Some(1), "{finished}");
    assert!(
        finished.stderr.contains("source.relation") && finished.stderr.contains("text_times"),
        "{finished}"
    );
    let calls: u64 = h.sim.stats().counts.values().flat_map(|c| c.values()).sum();
    assert_eq!(calls, 0, "Clerk was asked: {finished}");
}

// ---------------------------------------------------------------------------
// The SCIM endpoint of `run`, against python-scim's conformance checker

/// The address `run` logged that its HTTP server listens on (JSON log lines).
fn listening_on(service: &Proc) -> Option<String> {
    service
        .stdout()
        .lines()
        .chain(service.stderr().lines())
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| {
            entry.get("message").and_then(Value::as_str) == Some("invite-sync is running")
        })
        .and_then(|entry| entry.get("http")?.as_str().map(str::to_owned))
        .filter(|address| !address.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn scim2_tester_passes_every_user_group_and_discovery_check_against_run() {
    // The checker lives in a virtual environment the script makes (from PyPI, the first time).
    let setup = tokio::task::spawn_blocking({
        let script = repo_path("scripts/lib/scim-tester.sh");
        move || Command::new(script).stderr(Stdio::inherit()).output()
    })
    .await
    .expect("the setup task runs")
    .expect("scripts/lib/scim-tester.sh runs");
    assert!(setup.status.success(), "scripts/lib/scim-tester.sh failed");
    let python = String::from_utf8_lossy(&setup.stdout).trim().to_owned();

    let token = "scim-conformance-token-0123456789";
    let h = harness(&[
        ("INVITE_SYNC__SYNC__TARGET", &unique_target("cli")),
        ("INVITE_SYNC__SCIM__TOKEN", token),
        ("INVITE_SYNC__LOG__FORMAT", "json"),
    ])
    .await;
    let mut service = service(&h);
    let address = wait_for(
        "run to log its HTTP address",
        Duration::from_secs(10),
        || std::future::ready(listening_on(&service)),
    )
    .await;
    let base_url = format!("http://{address}/scim/v2");

    let checker = repo_path("scripts/lib/scim-conformance.py");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(checker)
            .arg(&base_url)
            .arg(token)
            .args(["User", "Group"])
            .output()
    })
    .await
    .expect("the checker task runs")
    .expect("the checker runs");
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    let summary: Value = report
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary from the checker\n{report}\n{}",
                String::from_utf8_lossy(&run.stderr)
            )
        });
    println!("scim2-tester: {summary}");
    let checks = summary["checks"].as_u64().unwrap_or(0);
    // scim2-server, the reference server, passes 135 checks of Users and Groups.
    assert!(
        run.status.success() && checks >= 135 && summary["passed"] == checks,
        "not every check passed:\n{report}\n--- service ---\n{}",
        service.stderr()
    );

    service.wait_for_handler(SIGTERM).await;
    service.signal("TERM");
    service.wait(Duration::from_secs(10)).await.assert_code(0);
}

// ---------------------------------------------------------------------------
// Organizations in plan and status

/// The calls that change something in Clerk's organizations, counted so far.
fn organization_writes(stats: &SimStats) -> u64 {
    [
        Operation::CreateOrganizationInvitation,
        Operation::CreateOrganizationInvitationsBulk,
        Operation::RevokeOrganizationInvitation,
        Operation::CreateOrganizationMembership,
        Operation::UpdateOrganizationMembership,
        Operation::DeleteOrganizationMembership,
    ]
    .into_iter()
    .map(|operation| stats.total(operation))
    .sum()
}

async fn add_membership_row(
    h: &Harness,
    email: &str,
    organization: &str,
    role: Option<&str>,
    not_before: Option<&str>,
) {
    sqlx::query(
        "INSERT INTO desired_memberships (email, organization, role, not_before) \
         VALUES ($1, $2, $3, $4::timestamptz)",
    )
    .bind(email)
    .bind(organization)
    .bind(role)
    .bind(not_before)
    .execute(&h.db.pool)
    .await
    .expect("a membership roster row is inserted");
}

/// The organization of a plan's or a status's `organizations` array.
fn organization<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|o| o["organization"] == id)
        .unwrap_or_else(|| panic!("no organization {id} in {list}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_status_show_each_organization_its_backlog_waits_invalid_rows_and_held_removals() {
    // The share limit off: emptying Acme is held for being emptied, not for the share.
    let token = "operator-token-0123456789abcdef";
    let h = harness(&[
        ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1"),
        ("INVITE_SYNC__HTTP__API_TOKEN", token),
    ])
    .await;
    // Acme takes 3 members and pending invitations; Globex has no limit.
    let acme = h
        .sim
        .create_organization("Acme", Some("acme"), 3)
        .expect("Acme is created");
    let globex = h
        .sim
        .create_organization("Globex", Some("globex"), 0)
        .expect("Globex is created");
    h.sim.seed_users(&["old@example.com"]);
    for (email, role) in [
        ("oa1@example.com", Some("org:admin")),
        ("oa2@example.com", None),
        ("oa3@example.com", None),
        ("oa4@example.com", None),
    ] {
        add_membership_row(&h, email, "acme", role, None).await;
    }
    add_membership_row(&h, "old@example.com", &globex.id, None, None).await;
    add_membership_row(&h, "og1@example.com", &globex.id, None, None).await;
    add_membership_row(&h, "og2@example.com", &globex.id, Some("org:wizard"), None).await;
    add_membership_row(
        &h,
        "og3@example.com",
        &globex.id,
        None,
        Some("2999-01-01T00:00:00Z"),
    )
    .await;
    add_membership_row(&h, "on1@example.com", "no-such-org", None, None).await;

    // plan: the instance roster is empty, so only the organizations make changes.
    let before = h.sim.stats();
    let planned = invite_sync(&h, &["plan", "--format", "json", "--detailed-exitcode"]).await;
    planned.assert_code(2);
    let plan = json(&planned);
    let memberships = &plan["memberships"];
    assert_eq!(memberships["rows"], 9, "{planned}");
    let acme_plan = organization(&memberships["organizations"], &acme.id);
    assert_eq!(acme_plan["slug"], "acme", "{planned}");
    assert_eq!(acme_plan["counts"]["invite"], 3, "{planned}");
    assert_eq!(acme_plan["counts"]["waiting"], 1, "{planned}");
    assert_eq!(acme_plan["waiting"]["full"], 1, "{planned}");
    assert_eq!(acme_plan["backlog"], 3, "{planned}");
    assert_eq!(acme_plan["room"], 3, "{planned}");
    let globex_plan = organization(&memberships["organizations"], &globex.id);
    assert_eq!(globex_plan["counts"]["add_member"], 1, "{planned}");
    assert_eq!(globex_plan["counts"]["invite"], 1, "{planned}");
    assert_eq!(globex_plan["counts"]["invalid"], 1, "{planned}");
    assert_eq!(globex_plan["waiting"]["not_before"], 1, "{planned}");
    assert_eq!(globex_plan["room"], Value::Null, "{planned}");
    let wizard = globex_plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == "og2@example.com")
        .unwrap_or_else(|| panic!("og2 is not listed: {planned}"));
    assert_eq!(wizard["category"], "invalid", "{planned}");
    assert!(
        wizard["detail"].as_str().unwrap().contains("org:wizard"),
        "{planned}"
    );
    let unknown = organization(&memberships["organizations"], "no-such-org");
    assert_eq!(unknown["resolved"], false, "{planned}");
    assert_eq!(unknown["counts"]["invalid"], 1, "{planned}");
    assert_eq!(memberships["backlog"], 4, "{planned}");
    assert_eq!(memberships["held"], 0, "{planned}");
    assert_eq!(
        organization_writes(&h.sim.stats()),
        organization_writes(&before),
        "plan wrote to Clerk"
    );

    let text = invite_sync(&h, &["plan"]).await;
    text.assert_code(0);
    for expected in [
        "Organizations (3), 9 membership roster rows:",
        &format!("acme ({}) \"Acme\" room 3", acme.id),
        "+ invite        oa1@example.com  (as org:admin)",
        "+ add_member    old@example.com  (as org:member, an existing account)",
        "* waiting       oa4@example.com  (the organization is full",
        "* invalid       on1@example.com  (Clerk has no organization \"no-such-org\"",
        "no-such-org (not resolved)",
        "Membership backlog 4, all within the organization budget left this window.",
    ] {
        assert!(text.stdout.contains(expected), "no {expected:?}: {text}");
    }
    let instance_end = text.stdout.find("Backlog 0").expect("the instance plan");
    let organizations = text.stdout.find("Organizations (3)").unwrap();
    assert!(instance_end < organizations, "{text}");

    // A cycle invites and adds; status then reads the database alone.
    invite_sync(&h, &["sync"]).await.assert_code(0);
    let calls = serde_json::to_string(&h.sim.stats()).unwrap();
    let finished = invite_sync(&h, &["status", "--format", "json"]).await;
    finished.assert_code(0);
    assert_eq!(
        serde_json::to_string(&h.sim.stats()).unwrap(),
        calls,
        "status asked Clerk"
    );
    let status = json(&finished);
    let memberships = &status["memberships"];
    assert_eq!(memberships["rows"], 9, "{finished}");
    let acme_status = organization(&memberships["organizations"], &acme.id);
    assert_eq!(acme_status["invited"], 3, "{finished}");
    assert_eq!(acme_status["to_send"], 1, "{finished}");
    assert_eq!(acme_status["full"], true, "{finished}");
    assert_eq!(acme_status["waiting"]["full"], 1, "{finished}");
    let globex_status = organization(&memberships["organizations"], &globex.id);
    assert_eq!(globex_status["members"], 1, "{finished}");
    assert_eq!(globex_status["not_before"], 1, "{finished}");
    assert_eq!(globex_status["waiting"]["not_before"], 1, "{finished}");
    let unknown = organization(&memberships["organizations"], "no-such-org");
    assert_eq!(unknown["resolved"], false, "{finished}");
    assert_eq!(unknown["waiting"]["unresolved"], 1, "{finished}");
    assert_eq!(memberships["held_removals"], 0, "{finished}");
    assert!(memberships["last_pass"].is_object(), "{finished}");
    // The operator API serves the same organizations.
    let service = crate::common::Service::http_alone(&h).await;
    let answer = service
        .client
        .get(format!("http://{}/v1/status", service.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("the service answers");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let api: Value = answer.json().await.expect("the status is JSON");
    assert_eq!(
        api["memberships"]["organizations"], memberships["organizations"],
        "{api:#}"
    );
    service.stop().await.expect("the service stops cleanly");

    let text = invite_sync(&h, &["status"]).await;
    text.assert_code(0);
    for expected in [
        "Organizations (3), 9 membership roster rows:",
        &format!("acme ({}) \"Acme\" FULL", acme.id),
        "rows 4: to send 1, invited 3, members 0",
        "waiting: full=1",
        "Held membership removals: 0",
    ] {
        assert!(text.stdout.contains(expected), "no {expected:?}: {text}");
    }

    // Acme's roster empties: its three owned invitations are held, shown, and released.
    sqlx::query("DELETE FROM desired_memberships WHERE organization = 'acme'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let planned = invite_sync(&h, &["plan", "--detailed-exitcode"]).await;
    planned.assert_code(2);
    assert!(
        planned.stdout.contains("! held revoke   oa1@example.com")
            && planned
                .stdout
                .contains("Release with `invite-sync sync --allow-revocations 3`"),
        "{planned}"
    );
    invite_sync(&h, &["sync"]).await.assert_code(3);
    let finished = invite_sync(&h, &["status", "--format", "json"]).await;
    let status = json(&finished);
    assert_eq!(status["memberships"]["held_removals"], 3, "{finished}");
    assert_eq!(
        status["memberships"]["emptied"],
        serde_json::json!([acme.id]),
        "{finished}"
    );
    let text = invite_sync(&h, &["status"]).await;
    assert!(
        text.stdout.contains("HELD MEMBERSHIP REMOVALS: 3")
            && text.stdout.contains("--allow-revocations 3"),
        "{text}"
    );
    invite_sync(&h, &["sync", "--allow-revocations", "3"])
        .await
        .assert_code(0);
    let finished = invite_sync(&h, &["status", "--format", "json"]).await;
    assert_eq!(
        json(&finished)["memberships"]["held_removals"],
        0,
        "{finished}"
    );
    let acme_pending = h
        .sim
        .organization_invitations()
        .into_iter()
        .filter(|i| {
            i.organization_id == acme.id
                && i.status == invite_sync::clerk::InvitationStatus::Pending
        })
        .count();
    assert_eq!(acme_pending, 0);
    // Waiting and invalid rows are no change: nothing is left to do.
    let steady = invite_sync(&h, &["plan", "--detailed-exitcode"]).await;
    steady.assert_code(0);
    assert!(
        steady
            .stdout
            .contains("* waiting       og3@example.com  (not before"),
        "{steady}"
    );
}
