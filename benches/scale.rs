//! What a cycle costs as the roster grows: for `plan --format json` over a roster of N rows
//! with Clerk holding nothing, and for a steady-state `sync` over N rows with Clerk holding
//! N/2 pending and N/2 accepted invitations (nothing changed since the last cycle), it prints
//! the wall time, the time of `COPY desired_invitees TO STDOUT` into /dev/null in the same run
//! (reading the table alone), the peak RSS of the invite-sync process (`/usr/bin/time -v`) and
//! Clerk's calls by operation (from the simulator's `/_sim/stats`).
//!
//! `accepted:N` measures `sync`s over N rows whose people all accepted long ago (ledger and
//! known users seeded by SQL, Clerk holding nothing pending): the first lists in full, the
//! next three are the steady state, each beside a `COPY` of its own, and their medians (of
//! the rounds' ratios, of the wall times and of the `COPY`s) are printed after them.
//!
//! `adoption:N` measures a company adopting invite-sync: Clerk holds N/2 pending and N/2
//! accepted invitations made before it (through Clerk's API, not by invite-sync), one for each
//! roster row; the first `sync` (a full listing), then the steady `plan --detailed-exitcode`
//! (which must exit 0: no create planned) and `sync` (no lookup, no write).
//!
//! `first:N` measures the first `sync` ever over N rows with Clerk's own budget and the default
//! user checks: everyone is queued, a cycle's worth is looked up and sent.
//!
//! `cargo bench --bench scale [-- plan:N ... steady:N ... accepted:N ... first:N ...]`; by
//! default plan:10000, plan:100000, plan:1000000, steady:10000, steady:100000, accepted:1000000,
//! adoption:100000 and first:1000000. A steady case seeds Clerk by
//! running cycles against a simulator without rate limits (about 3 minutes per 100,000
//! people, paced by invite-sync's own request limiter), so steady:1000000 takes long and is
//! only run when asked. It runs the built binary and its `clerk-sim` as processes, on the
//! PostgreSQL of DATABASE_URL (else 127.0.0.1:5432, else a private cluster as the demo makes
//! one) in a scratch database. `BENCH_SERVICE_BIN`
//! measures another build of invite-sync.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

mod support;
use support::{sim_invitations, start_simulator, with_database};

const BIN: &str = env!("CARGO_BIN_EXE_invite-sync");
/// A production key: invite-sync paces itself at 1000 requests per 10 s.
const KEY: &str = "sk_live_scale_bench";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Plan(usize),
    Steady(usize),
    /// Everyone accepted long ago: the ledger and the known users say so, Clerk holds no
    /// pending invitation. Seeded by SQL, so it is quick at any size.
    Accepted(usize),
    /// Clerk holds an invitation for everyone, made before invite-sync: half pending, half
    /// accepted.
    Adoption(usize),
    /// The first `sync` ever over the roster, with Clerk's own budget (350 invitations an
    /// hour) and user checks (5,000 a cycle): everyone is queued, a cycle's worth is sent.
    First(usize),
}

impl Case {
    fn parse(text: &str) -> anyhow::Result<Case> {
        let (kind, rows) = text.split_once(':').ok_or_else(|| {
            anyhow::anyhow!(
                "{text:?}: expected plan:N, steady:N, accepted:N, adoption:N or first:N"
            )
        })?;
        let rows: usize = rows.replace('_', "").parse()?;
        match kind {
            "plan" => Ok(Case::Plan(rows)),
            "steady" => Ok(Case::Steady(rows)),
            "accepted" => Ok(Case::Accepted(rows)),
            "adoption" => Ok(Case::Adoption(rows)),
            "first" => Ok(Case::First(rows)),
            _ => anyhow::bail!(
                "{text:?}: expected plan:N, steady:N, accepted:N, adoption:N or first:N"
            ),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let asked: Vec<Case> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| Case::parse(&a))
        .collect::<Result<_, _>>()?;
    let cases = if asked.is_empty() {
        vec![
            Case::Plan(10_000),
            Case::Plan(100_000),
            Case::Plan(1_000_000),
            Case::Steady(10_000),
            Case::Steady(100_000),
            Case::Accepted(1_000_000),
            Case::Adoption(100_000),
            Case::First(1_000_000),
        ]
    } else {
        asked
    };
    let service = std::env::var("BENCH_SERVICE_BIN").unwrap_or_else(|_| BIN.to_owned());
    println!("service binary: {service}");
    println!(
        "| case | roster rows | Clerk holds | wall | COPY of the table | wall / COPY | peak RSS | Clerk calls |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for case in cases {
        for line in with_database(|url| run(case, &service, url)).await? {
            println!("{line}");
        }
    }
    Ok(())
}

/// A finished process as `/usr/bin/time -v` saw it.
struct Measured {
    wall: Duration,
    peak_rss_kb: u64,
}

/// Runs `program args` under `/usr/bin/time -v`, its output into /dev/null.
fn measure(program: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "{program} {args:?} failed: {stderr}"
    );
    let peak_rss_kb = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
                .and_then(|n| n.trim().parse().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("no peak RSS in: {stderr}"))?;
    Ok(Measured { wall, peak_rss_kb })
}

/// Calls by operation (every status together), from `/_sim/stats`.
fn calls(stats: &Value) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for (operation, by_status) in stats.as_object().into_iter().flatten() {
        let Some(by_status) = by_status.as_object() else {
            continue;
        };
        let n: u64 = by_status.values().filter_map(Value::as_u64).sum();
        calls.insert(operation.clone(), n);
    }
    calls
}

fn difference(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> String {
    let shown: Vec<String> = after
        .iter()
        .map(|(op, n)| (op, n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    if shown.is_empty() {
        "none".to_owned()
    } else {
        shown.join(", ")
    }
}

async fn stats(http: &reqwest::Client, root: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let stats: Value = http
        .get(format!("{root}/_sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    Ok(calls(&stats))
}

/// Steady `sync`s of the `accepted` case, each beside a `COPY` of its own: one cycle is the
/// same work as the next, and the median of a few says more than any one on a machine whose
/// `COPY` alone moves by a quarter from run to run.
const STEADY_ROUNDS: usize = 3;

/// A line of the medians of `runs` (each a command and the `COPY` beside it): of the rounds'
/// ratios (each command against its own `COPY`), of the wall times and of the `COPY`s, and the
/// largest peak RSS.
fn medians(case: &str, runs: &[(Measured, Measured)]) -> String {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    let ratio = median(
        runs.iter()
            .map(|(run, copy)| run.wall.as_secs_f64() / copy.wall.as_secs_f64().max(0.001))
            .collect(),
    );
    let wall = median(runs.iter().map(|(run, _)| run.wall.as_secs_f64()).collect());
    let copy = median(
        runs.iter()
            .map(|(_, copy)| copy.wall.as_secs_f64())
            .collect(),
    );
    let peak = runs
        .iter()
        .map(|(run, _)| run.peak_rss_kb)
        .max()
        .unwrap_or_default();
    format!(
        "| {case}: median of {} rounds | | | {wall:.2} s | {copy:.2} s | {ratio:.2}x (of the rounds' ratios) | {} (largest) | |",
        runs.len(),
        mb(peak),
    )
}

fn mb(kb: u64) -> String {
    format!("{} MB", kb / 1024)
}

fn row(
    case: &str,
    rows: usize,
    holds: &str,
    run: &Measured,
    copy: &Measured,
    clerk: &str,
) -> String {
    format!(
        "| {case} | {rows} | {holds} | {:.2} s | {:.2} s ({}) | {:.1}x | {} | {clerk} |",
        run.wall.as_secs_f64(),
        copy.wall.as_secs_f64(),
        mb(copy.peak_rss_kb),
        run.wall.as_secs_f64() / copy.wall.as_secs_f64().max(0.001),
        mb(run.peak_rss_kb),
    )
}

async fn run(case: Case, service: &str, url: String) -> anyhow::Result<Vec<String>> {
    let (Case::Plan(rows)
    | Case::Steady(rows)
    | Case::Accepted(rows)
    | Case::Adoption(rows)
    | Case::First(rows)) = case;
    let (_sim, root) = start_simulator(BIN, KEY, &["--no-rate-limits"]).await?;
    let http = reqwest::Client::new();

    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.clone()),
        ("CLERK_SECRET_KEY", KEY.to_owned()),
        ("INVITE_SYNC__CLERK__API_URL", format!("{root}/v1")),
        (
            "INVITE_SYNC__CLERK__BULK_CREATE_PER_WINDOW",
            "100000".into(),
        ),
        (
            "INVITE_SYNC__CLERK__SINGLE_CREATE_PER_WINDOW",
            "100000".into(),
        ),
        (
            "INVITE_SYNC__CLERK__USER_CHECKS_PER_CYCLE",
            "1000000".into(),
        ),
        ("INVITE_SYNC__SYNC__MAX_REVOCATIONS", "0".into()),
        ("INVITE_SYNC__LOG__LEVEL", "warn".into()),
    ];
    if let Case::First(_) = case {
        // Clerk's own budget and the default user checks: what a first run really meets.
        env.retain(|(key, _)| !key.contains("_PER_WINDOW") && !key.contains("USER_CHECKS"));
    }
    let migrated = Command::new(service)
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    anyhow::ensure!(migrated.status.success(), "migrate: {migrated:?}");
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query(
        "INSERT INTO desired_invitees (email, created_at)
         SELECT 'person' || lpad(i::text, 7, '0') || '@example.com',
                now() - make_interval(secs => $1 - i)
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows as i32)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE desired_invitees")
        .execute(&pool)
        .await?;
    let copy = || {
        measure(
            "psql",
            &["-q", "-d", &url, "-c", "COPY desired_invitees TO STDOUT"],
            &[],
        )
    };

    match case {
        Case::Plan(_) => {
            let before = stats(&http, &root).await?;
            let copied = copy()?;
            let planned = measure(service, &["plan", "--format", "json"], &env)?;
            let clerk = difference(&stats(&http, &root).await?, &before);
            Ok(vec![row(
                "plan --format json",
                rows,
                "nothing",
                &planned,
                &copied,
                &clerk,
            )])
        }
        Case::Accepted(_) => {
            seed_accepted(&pool, rows).await?;
            let mut lines = Vec::new();
            let mut steady = Vec::new();
            let names = std::iter::once("sync (first: a full listing)".to_owned())
                .chain((1..=STEADY_ROUNDS).map(|k| format!("sync (steady state, round {k})")));
            for name in names {
                let before = stats(&http, &root).await?;
                let copied = copy()?;
                let synced = measure(service, &["sync"], &env)?;
                let clerk = difference(&stats(&http, &root).await?, &before);
                lines.push(row(
                    &name,
                    rows,
                    "nothing pending; everyone accepted",
                    &synced,
                    &copied,
                    &clerk,
                ));
                if name.starts_with("sync (steady") {
                    steady.push((synced, copied));
                }
            }
            lines.push(medians("sync (steady state)", &steady));
            Ok(lines)
        }
        Case::Adoption(_) => {
            adopt(&http, &root, rows).await?;
            let holds = format!(
                "{} pending + {} accepted, made before invite-sync",
                rows - rows / 2,
                rows / 2
            );
            let mut lines = Vec::new();
            for (name, args) in [
                ("sync (first: a full listing)", &["sync"][..]),
                (
                    "plan --detailed-exitcode (steady state)",
                    &["plan", "--detailed-exitcode"][..],
                ),
                ("sync (steady state)", &["sync"][..]),
            ] {
                let before = stats(&http, &root).await?;
                let copied = copy()?;
                // `measure` fails on any exit but 0: the plan exits 2 if it plans a change.
                let measured = measure(service, args, &env)?;
                let after = stats(&http, &root).await?;
                let clerk = difference(&after, &before);
                if name == "sync (steady state)" {
                    let spent: Vec<&String> = after
                        .keys()
                        .filter(|op| *op != "list_invitations")
                        .filter(|op| after[*op] != before.get(*op).copied().unwrap_or(0))
                        .collect();
                    anyhow::ensure!(
                        spent.is_empty(),
                        "the steady sync made calls other than listings: {clerk}"
                    );
                }
                lines.push(row(name, rows, &holds, &measured, &copied, &clerk));
            }
            let plan = Command::new(service)
                .args(["plan", "--format", "json"])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()?;
            let plan: Value = serde_json::from_slice(&plan.stdout)?;
            anyhow::ensure!(
                plan["creates"].as_array().is_some_and(Vec::is_empty) && plan["backlog"] == 0,
                "the steady plan plans creates: {}",
                plan["counts"]
            );
            Ok(lines)
        }
        Case::First(_) => {
            let before = stats(&http, &root).await?;
            let copied = copy()?;
            let synced = measure(service, &["sync"], &env)?;
            let clerk = difference(&stats(&http, &root).await?, &before);
            Ok(vec![row(
                "sync (first ever)",
                rows,
                "nothing",
                &synced,
                &copied,
                &clerk,
            )])
        }
        Case::Steady(_) => {
            seed(service, &env, &http, &root, rows).await?;
            let holds = format!("{} pending + {} accepted", rows - rows / 2, rows / 2);
            let mut lines = Vec::new();
            for (name, args) in [
                ("sync (steady state)", &["sync"][..]),
                ("sync --full", &["sync", "--full"][..]),
                ("sync (steady state, again)", &["sync"][..]),
            ] {
                let before = stats(&http, &root).await?;
                let copied = copy()?;
                let synced = measure(service, args, &env)?;
                let clerk = difference(&stats(&http, &root).await?, &before);
                lines.push(row(name, rows, &holds, &synced, &copied, &clerk));
            }
            Ok(lines)
        }
    }
}

/// Invites everyone on the roster through Clerk's API, as a company did before invite-sync
/// (bulk calls of 10), and accepts the first half of the invitations in the simulator.
async fn adopt(http: &reqwest::Client, root: &str, rows: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let bodies: Vec<Value> = (1..=rows)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|chunk| {
            Value::Array(
                chunk
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "email_address": format!("person{i:07}@example.com"),
                            "ignore_existing": true
                        })
                    })
                    .collect(),
            )
        })
        .collect();
    let created: Vec<bool> = futures_util::stream::iter(bodies)
        .map(|body| {
            let request = http
                .post(format!("{root}/v1/invitations/bulk"))
                .bearer_auth(KEY)
                .json(&body)
                .send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    anyhow::ensure!(created.iter().all(|c| *c), "a bulk create failed");
    let invitations = invitations_made(http, root, rows, "adoption").await?;
    let ids: Vec<String> = invitations
        .iter()
        .filter(|i| {
            i["email_address"].as_str() <= Some(&format!("person{:07}@example.com", rows / 2))
        })
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    let accepted = accept(http, root, ids).await?;
    anyhow::ensure!(
        accepted == rows / 2,
        "{accepted} invitations accepted, not {}",
        rows / 2
    );
    eprintln!(
        "made {rows} invitations before invite-sync ({} accepted) in {:.0} s",
        rows / 2,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Records everyone on the roster as invited by invite-sync and accepted a month ago, and as a
/// known user: the state of a roster that was drained long ago.
async fn seed_accepted(pool: &sqlx::PgPool, rows: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO invite_sync_ledger
             (target, email, clerk_invitation_id, state, owned, sent_at, settled_at)
         SELECT 'default', 'person' || lpad(i::text, 7, '0') || '@example.com',
                'inv_seeded_' || i, 'accepted', true,
                now() - interval '30 days', now() - interval '30 days'
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows as i32)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO invite_sync_known_users (target, email, seen_via)
         SELECT 'default', 'person' || lpad(i::text, 7, '0') || '@example.com', 'accepted'
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows as i32)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE invite_sync_ledger, invite_sync_known_users")
        .execute(pool)
        .await?;
    // The seeding's pages are written out now rather than by a checkpoint during the runs.
    sqlx::query("CHECKPOINT").execute(pool).await?;
    eprintln!(
        "seeded {rows} accepted people in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Invites everyone through cycles, accepts half of the invitations in the simulator, and
/// lets a full reconciliation and a cycle record it all.
async fn seed(
    service: &str,
    env: &[(&str, String)],
    http: &reqwest::Client,
    root: &str,
    rows: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let synced = Command::new(service)
        .arg("sync")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(synced.success(), "the seeding cycle failed: {synced:?}");
    let invitations = invitations_made(http, root, rows, "seeding").await?;
    let ids: Vec<String> = invitations
        .iter()
        .take(rows / 2)
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    accept(http, root, ids).await?;
    for args in [&["sync", "--full"][..], &["sync"][..]] {
        let status = Command::new(service)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "{args:?} failed while seeding: {status:?}"
        );
    }
    eprintln!(
        "seeded {rows} people ({} accepted) in {:.0} s",
        rows / 2,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The simulator's invitations, which `what` must have made one of for each of `rows` people.
async fn invitations_made(
    http: &reqwest::Client,
    root: &str,
    rows: usize,
    what: &str,
) -> anyhow::Result<Vec<Value>> {
    let invitations = sim_invitations(http, root).await?;
    anyhow::ensure!(
        invitations.len() == rows,
        "{what} made {} invitations for {rows} people",
        invitations.len()
    );
    Ok(invitations)
}

/// Accepts these invitations in the simulator, 16 at a time; how many it accepted (all, or
/// an error).
async fn accept(http: &reqwest::Client, root: &str, ids: Vec<String>) -> anyhow::Result<usize> {
    let accepted: Vec<bool> = futures_util::stream::iter(ids)
        .map(|id| {
            let request = http
                .post(format!("{root}/_sim/invitations/{id}/accept"))
                .send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    anyhow::ensure!(accepted.iter().all(|a| *a), "an acceptance failed");
    Ok(accepted.len())
}
