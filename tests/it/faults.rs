//! The fault suite: the built binary killed with SIGKILL at random moments while the
//! simulator injects faults, a PostgreSQL restart in the middle of a cycle, and two `run`
//! replicas against one database. Each test prints its figures and its seed
//! (`FAULT_SEED=<n>` replays one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use invite_sync::clerk::sim::{Fault, FaultKind, Operation, SimOptions};
use invite_sync::clerk::{CreateInvitation, InvitationStatus};
use invite_sync::commands::private_postgres::PrivateCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{people, refs, wait_for, Harness, Proc, NEVER};

/// How long one phase may take to converge once faults stop.
pub(crate) const CONVERGE: Duration = Duration::from_secs(120);
/// How long a simulated hang (latency, then a dropped connection) lasts.
pub(crate) const HANG: Duration = Duration::from_millis(300);

pub(crate) fn seeded_rng(test: &str) -> (u64, StdRng) {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("{test}: seed {seed} (replay with FAULT_SEED={seed})");
    (seed, StdRng::seed_from_u64(seed))
}

/// Settings that make a backlog (a few creates per two-second window), let every revocation
/// through the guard, and settle unknown outcomes after a second.
pub(crate) fn overrides(target: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INVITE_SYNC__SYNC__TARGET", target.to_owned()),
        ("INVITE_SYNC__SYNC__SCHEDULE", NEVER.to_owned()),
        ("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "100000".to_owned()),
        ("INVITE_SYNC__SYNC__MAX_REVOCATION_RATIO", "1.0".to_owned()),
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.1".to_owned()),
        (
            "INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS",
            "5".to_owned(),
        ),
        ("INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW", "2".to_owned()),
        (
            "INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW",
            "4".to_owned(),
        ),
        ("INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS", "2".to_owned()),
        ("INVITE_SYNC__CLERK__SETTLE_AFTER_SECONDS", "1".to_owned()),
        ("INVITE_SYNC__CLERK__TIMEOUT_SECONDS", "2".to_owned()),
        ("INVITE_SYNC__CLERK__MAX_ATTEMPTS", "2".to_owned()),
        ("INVITE_SYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", "4".to_owned()),
        ("INVITE_SYNC__LOG__LEVEL", "warn".to_owned()),
    ]
}

async fn harness(target: &str) -> Harness {
    let overrides = overrides(target);
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Harness::with(
        SimOptions {
            rate_limits: false,
            hang: HANG,
            ..SimOptions::default()
        },
        &overrides,
    )
    .await
}

/// What the simulator holds against what should be, and the figures the suite prints.
#[derive(Debug, Default)]
struct Tally {
    kills: BTreeMap<&'static str, usize>,
    faults: BTreeMap<String, usize>,
}

impl Tally {
    fn kill(&mut self, what: &'static str) {
        *self.kills.entry(what).or_default() += 1;
    }

    /// Injects one fault of a random kind on a random operation that changes or reads Clerk.
    fn inject(&mut self, h: &Harness, rng: &mut StdRng) {
        let operation = [
            Operation::CreateBulkInvitations,
            Operation::CreateInvitation,
            Operation::ListInvitations,
            Operation::RevokeInvitation,
        ][rng.gen_range(0..4)];
        inject_fault(h, rng, operation, &mut self.faults);
    }

    fn injected(&self) -> usize {
        self.faults.values().sum()
    }
}

/// Injects one fault of a random kind on `operation` in the simulator, counting it in `faults`
/// by kind and operation: a 5xx before or after the call is applied, a connection dropped
/// after it is applied, latency then a dropped connection, or a 429 with `Retry-After`.
pub(crate) fn inject_fault(
    h: &Harness,
    rng: &mut StdRng,
    operation: Operation,
    faults: &mut BTreeMap<String, usize>,
) {
    let (name, kind) = match rng.gen_range(0..5) {
        0 => (
            "5xx before applying",
            FaultKind::Status {
                status: [500, 502, 503][rng.gen_range(0..3)],
                retry_after: None,
            },
        ),
        1 => (
            "5xx after applying",
            FaultKind::StatusAfterApply {
                status: [500, 502, 503][rng.gen_range(0..3)],
            },
        ),
        2 => ("dropped after applying", FaultKind::DropAfterApply),
        3 => ("latency, then dropped", FaultKind::Hang),
        _ => (
            "429 with Retry-After",
            FaultKind::Status {
                status: 429,
                retry_after: Some(1),
            },
        ),
    };
    h.sim.inject_fault(Fault::new(operation, 1, kind));
    *faults
        .entry(format!("{name} ({})", operation.as_str()))
        .or_default() += 1;
}

/// What the simulator holds, checked against the roster and the invitations made by hand.
#[derive(Debug)]
struct Outcome {
    duplicates: usize,
    missing: usize,
    lost_revocations: usize,
    wrong_revocations: usize,
}

impl Outcome {
    fn of(
        h: &Harness,
        desired: &BTreeSet<String>,
        removed: &BTreeSet<String>,
        foreign: &[String],
    ) -> Outcome {
        let invitations = h.sim.invitations();
        let mut pending: HashMap<String, usize> = HashMap::new();
        let mut revoked: HashMap<String, usize> = HashMap::new();
        for invitation in &invitations {
            let email = invitation.email_address.to_lowercase();
            match invitation.status {
                InvitationStatus::Pending => *pending.entry(email).or_default() += 1,
                InvitationStatus::Revoked => *revoked.entry(email).or_default() += 1,
                _ => {}
            }
        }
        let foreign_revoked = foreign
            .iter()
            .filter(|email| revoked.contains_key(email.as_str()))
            .count();
        Outcome {
            duplicates: pending.values().filter(|n| **n > 1).count(),
            missing: desired.iter().filter(|e| !pending.contains_key(*e)).count(),
            lost_revocations: removed.iter().filter(|e| pending.contains_key(*e)).count(),
            wrong_revocations: foreign_revoked
                + desired.iter().filter(|e| revoked.contains_key(*e)).count(),
        }
    }

    fn assert_clean(&self) {
        assert_eq!(self.duplicates, 0, "emails with two pending invitations");
        assert_eq!(self.missing, 0, "desired people without an invitation");
        assert_eq!(self.lost_revocations, 0, "removed people still invited");
        assert_eq!(
            self.wrong_revocations, 0,
            "foreign or desired invitations revoked"
        );
    }
}

/// Spawns `invite-sync <command>` and kills it with SIGKILL once the simulator has seen a
/// random number of further calls (or it ends first). Whether it was killed.
async fn kill_at_random_moment(h: &Harness, rng: &mut StdRng, args: &[&str]) -> bool {
    kill_after_calls(h, rng.gen_range(0..8u64), args).await
}

/// Spawns `invite-sync <command>` and kills it with SIGKILL once the simulator has seen
/// `after` further calls (or it ends first). Whether it was killed.
pub(crate) async fn kill_after_calls(h: &Harness, after: u64, args: &[&str]) -> bool {
    let calls = |h: &Harness| -> u64 {
        let stats = h.sim.stats();
        stats.counts.values().flat_map(BTreeMap::values).sum()
    };
    let start = calls(h);
    let mut process = Proc::spawn(h.command(), args);
    // An idle `run` makes no further call: it is killed after a while anyway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if process.exited().is_some() {
            return false;
        }
        if calls(h) >= start + after || tokio::time::Instant::now() >= deadline {
            return process.kill();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs clean `sync`s (faults left over are used up by them) until one exits 0 with no
/// backlog: nothing failed, nothing unsettled, nothing waits for budget. How many it took.
async fn converge(h: &Harness) -> usize {
    let give_up = tokio::time::Instant::now() + CONVERGE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let finished = Proc::spawn(h.command(), &["sync"])
            .wait(Duration::from_secs(30))
            .await;
        if finished.code() == Some(0) && finished.stdout.contains(", backlog 0 (") {
            return attempts;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "no clean sync within {CONVERGE:?}; last:\n{}\n{}",
            finished.stdout,
            finished.stderr
        );
        // Unsettled creates wait clerk.settle_after_seconds; a backlog waits for budget.
        let pool = h.db.pool.clone();
        wait_for(
            "the unsettled creates to be due",
            Duration::from_secs(10),
            || {
                let pool = pool.clone();
                async move {
                    let due: Option<bool> = sqlx::query_scalar(
                        "SELECT bool_and(sent_at + interval '1 second' <= now()) \
                     FROM invite_sync_ledger WHERE state = 'sending'",
                    )
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                    due.unwrap_or(true).then_some(())
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Invitations someone made by hand, for addresses not on the roster: never revoked.
async fn make_foreign(h: &Harness, count: usize) -> Vec<String> {
    let emails = people("by-hand", count);
    for email in &emails {
        h.reconciler
            .clerk
            .create_invitation(&CreateInvitation::new(email.clone()))
            .await
            .expect("a foreign invitation is made");
    }
    emails
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_sync_and_run_under_injected_faults_leaves_no_duplicate_no_miss_and_no_wrong_revocation(
) {
    let (seed, mut rng) = seeded_rng("kill storm");
    let target = format!("faults-{}", uuid::Uuid::new_v4().simple());
    let h = harness(&target).await;
    let foreign = make_foreign(&h, 5).await;
    let mut desired: BTreeSet<String> = people("backlog", 60).into_iter().collect();
    let mut removed = BTreeSet::new();
    h.add_people(&refs(&desired.iter().cloned().collect::<Vec<_>>()))
        .await;
    let mut tally = Tally::default();

    // A create backlog: 60 people, a dozen creates per window at most.
    for round in 0..14 {
        for _ in 0..rng.gen_range(1..=3) {
            tally.inject(&h, &mut rng);
        }
        let command = if round % 2 == 0 { "sync" } else { "run" };
        if kill_at_random_moment(&h, &mut rng, &[command]).await {
            tally.kill(if command == "sync" { "sync" } else { "run" });
        }
    }
    let settled_creates = converge(&h).await;
    let creates = Outcome::of(&h, &desired, &removed, &foreign);

    // Revocations: a third of the roster leaves.
    let leaving: Vec<String> = desired.iter().step_by(3).cloned().collect();
    h.remove_people(&refs(&leaving)).await;
    for email in leaving {
        desired.remove(&email);
        removed.insert(email);
    }
    for round in 0..10 {
        for _ in 0..rng.gen_range(1..=3) {
            tally.inject(&h, &mut rng);
        }
        let command = if round % 2 == 0 { "run" } else { "sync" };
        if kill_at_random_moment(&h, &mut rng, &[command]).await {
            tally.kill(if command == "sync" { "sync" } else { "run" });
        }
    }
    let settled_revocations = converge(&h).await;
    let outcome = Outcome::of(&h, &desired, &removed, &foreign);

    println!(
        "kill storm (seed {seed}): kills {:?}; faults injected {} {:?}; clean syncs to converge: {settled_creates} after the creates, {settled_revocations} after the revocations",
        tally.kills,
        tally.injected(),
        tally.faults
    );
    println!(
        "kill storm (seed {seed}): after the creates {creates:?}; at the end {outcome:?} ({} desired, {} removed, {} foreign)",
        desired.len(),
        removed.len(),
        foreign.len()
    );
    assert!(
        tally.kills.values().sum::<usize>() > 0,
        "no process was killed: the storm tested nothing"
    );
    creates.assert_clean();
    outcome.assert_clean();
}

// ---------------------------------------------------------------------------
// A PostgreSQL restart in the middle of a cycle

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_restart_in_the_middle_of_a_cycle_is_survived_and_the_service_converges() {
    let Some(bin) = PrivateCluster::find_binaries() else {
        panic!("no PostgreSQL binaries under /usr/lib/postgresql: the fault suite needs them");
    };
    let cluster = PrivateCluster::start(&bin)
        .unwrap_or_else(|e| panic!("a private cluster starts from {}: {e:#}", bin.display()));
    let (seed, mut rng) = seeded_rng("postgres restart");
    // The harness's database is only the simulator's bookkeeping here; the service uses the
    // private cluster.
    let target = format!("faults-{}", uuid::Uuid::new_v4().simple());
    let h = harness(&target).await;
    let url = cluster.url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("the private cluster answers");
    invite_sync::store::migrate(&pool)
        .await
        .expect("the migrations apply");
    let emails = people("restart", 40);
    for email in &emails {
        sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
            .bind(email)
            .execute(&pool)
            .await
            .expect("a roster row");
    }
    // Latency on every create: a cycle lasts long enough to be caught in the middle.
    for _ in 0..6 {
        h.sim.inject_fault(Fault::new(
            Operation::CreateBulkInvitations,
            1,
            FaultKind::Hang,
        ));
    }
    let mut command = h.command();
    command.env("DATABASE_URL", &url);
    let mut service = Proc::spawn(command, &["run"]);

    // Restart the server while a cycle is running.
    let delay = rng.gen_range(0..200u64);
    wait_for("a cycle in progress", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM invite_sync_runs WHERE outcome = 'running'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (running > 0).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    pool.close().await;
    cluster
        .restart()
        .unwrap_or_else(|e| panic!("the private cluster restarts: {e:#}"));
    let restarted_at = chrono::Utc::now();

    // The service stays up, and every person ends with exactly one invitation.
    let desired: BTreeSet<String> = emails.iter().cloned().collect();
    wait_for(
        "the service to converge after the restart",
        CONVERGE,
        || {
            let outcome = Outcome::of(&h, &desired, &BTreeSet::new(), &[]);
            std::future::ready((outcome.missing == 0).then_some(()))
        },
    )
    .await;
    assert!(
        service.exited().is_none(),
        "the service stopped after the restart: {}",
        service.stderr()
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("the restarted cluster answers");
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invite_sync_runs WHERE started_at > $1")
            .bind(restarted_at)
            .fetch_one(&pool)
            .await
            .expect("the runs load");
    let outcomes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM invite_sync_runs GROUP BY outcome ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("the runs load");
    let outcome = Outcome::of(&h, &desired, &BTreeSet::new(), &[]);
    println!(
        "postgres restart (seed {seed}, {delay} ms into a cycle): runs by outcome {outcomes:?}, {after} cycles after the restart; {outcome:?}"
    );
    outcome.assert_clean();
    assert!(after > 0, "no cycle ran after the restart");
    service.kill();
}

// ---------------------------------------------------------------------------
// Two replicas, one writer

#[tokio::test(flavor = "multi_thread")]
async fn two_run_replicas_under_a_stream_of_roster_changes_never_both_write() {
    let (seed, mut rng) = seeded_rng("two replicas");
    let target = format!("faults-{}", uuid::Uuid::new_v4().simple());
    let h = harness(&target).await;
    // Each replica names itself in the run log by its host name.
    let replica = |name: &str| {
        let mut command = h.command();
        command.env("HOSTNAME", name);
        Proc::spawn(command, &["run"])
    };
    let mut first = replica("replica-a");
    let mut second = replica("replica-b");

    let mut desired = BTreeSet::new();
    let mut removed = BTreeSet::new();
    let all = people("stream", 60);
    let mut next = 0;
    let mut changes = 0;
    for _ in 0..30 {
        // Mostly arrivals, sometimes a departure of someone already invited or not.
        if rng.gen_bool(0.75) || desired.is_empty() {
            let count = rng.gen_range(1..=3).min(all.len() - next);
            let batch: Vec<String> = all[next..next + count].to_vec();
            next += count;
            h.add_people(&refs(&batch)).await;
            changes += batch.len();
            desired.extend(batch);
        } else {
            let leaving = desired
                .iter()
                .nth(rng.gen_range(0..desired.len()))
                .cloned()
                .unwrap_or_default();
            h.remove_people(&[leaving.as_str()]).await;
            changes += 1;
            desired.remove(&leaving);
            removed.insert(leaving);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..150))).await;
        if next >= all.len() {
            break;
        }
    }
    wait_for("both replicas to converge", CONVERGE, || {
        let outcome = Outcome::of(&h, &desired, &removed, &[]);
        std::future::ready((outcome.missing == 0 && outcome.lost_revocations == 0).then_some(()))
    })
    .await;
    for (name, process) in [("first", &mut first), ("second", &mut second)] {
        assert!(
            process.exited().is_none(),
            "the {name} replica stopped: {}",
            process.stderr()
        );
    }

    // One writer: the cycles that ran (not skipped) never overlap in time.
    type Run = (
        String,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
    );
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT outcome, started_at, finished_at, host FROM invite_sync_runs \
             WHERE target = $1 AND outcome <> 'skipped' ORDER BY started_at",
    )
    .bind(&target)
    .fetch_all(&h.db.pool)
    .await
    .expect("the runs load");
    let overlaps = runs
        .windows(2)
        .filter(|pair| pair[0].2.is_none_or(|finished| finished > pair[1].1))
        .count();
    let skipped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invite_sync_runs WHERE target = $1 AND outcome = 'skipped'",
    )
    .bind(&target)
    .fetch_one(&h.db.pool)
    .await
    .expect("the runs load");
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    for run in &runs {
        *by_replica
            .entry(run.3.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let outcome = Outcome::of(&h, &desired, &removed, &[]);
    println!(
        "two replicas (seed {seed}): {changes} roster changes, {} cycles ran {by_replica:?}, {skipped} skipped, {overlaps} overlapping; {outcome:?}",
        runs.len()
    );
    assert_eq!(overlaps, 0, "two cycles ran at once: {runs:?}");
    outcome.assert_clean();
    first.kill();
    second.kill();
}
