//! How well `invite-sync run` spends Clerk's hourly create budget, with the hour scaled down:
//!
//! - `backlog`: 1,400 people and no existing users: the drain time against the ideal
//!   ((windows - 1) x hour + the time the last window's invitations took to send, in the same
//!   run), the most
//!   invitations created in any one-hour span (Clerk allows 350), and 429 answers;
//! - `users`: 1,000 people of whom 70% already have Clerk accounts: refused create calls,
//!   user-lookup calls, and the time until every non-user is invited.
//!
//! `cargo bench --bench backlog [-- backlog|users]` (both by default). It runs the built
//! binary as the service and its `clerk-sim` as Clerk, each a process of its own, over real
//! sockets, on the PostgreSQL of DATABASE_URL (else 127.0.0.1:5432, else a private cluster as
//! the demo makes one) in a scratch database.
//! `BENCH_HOUR_SECONDS` sets the scaled hour (default 60); `BENCH_SERVICE_BIN` runs another
//! build of invite-sync as the service (to compare two versions against the same simulator).

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod support;
use support::{free_port, sim_invitations, start_simulator, with_database, Proc, NEVER};

const BIN: &str = env!("CARGO_BIN_EXE_invite-sync");
const KEY: &str = "sk_test_backlog_bench";
/// Clerk's budget per window: 25 bulk calls of 10 and 100 single calls.
const PER_WINDOW: usize = 350;

struct Scenario {
    name: &'static str,
    people: usize,
    /// Every n-th person in ten is a user when n < this.
    users_in_ten: usize,
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "backlog",
        people: 1400,
        users_in_ten: 0,
    },
    Scenario {
        name: "users",
        people: 1000,
        users_in_ten: 7,
    },
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let hour: u64 = std::env::var("BENCH_HOUR_SECONDS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(60);
    let service = std::env::var("BENCH_SERVICE_BIN").unwrap_or_else(|_| BIN.to_owned());
    println!("service binary: {service}; hour scaled to {hour} s; Clerk key kind: sk_test_ (100 requests per 10 s)");
    for scenario in SCENARIOS
        .iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.name))
    {
        let figures = with_database(|url| run(scenario, &service, hour, url)).await?;
        println!("{figures}");
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn run(scenario: &Scenario, service: &str, hour: u64, url: String) -> anyhow::Result<String> {
    let (_sim, root) = start_simulator(BIN, KEY, &["--hour-seconds", &hour.to_string()]).await?;
    let http = reqwest::Client::new();

    let emails: Vec<String> = (0..scenario.people)
        .map(|i| format!("{}{i:05}@example.com", scenario.name))
        .collect();
    let users: Vec<&String> = emails
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 < scenario.users_in_ten)
        .map(|(_, e)| e)
        .collect();
    for chunk in users.chunks(500) {
        let seeded = http
            .post(format!("{root}/_sim/users"))
            .json(&serde_json::json!({ "email_addresses": chunk }))
            .send()
            .await?;
        anyhow::ensure!(seeded.status().is_success(), "seeding users: {seeded:?}");
    }
    let invitable = emails.len() - users.len();

    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.clone()),
        ("CLERK_SECRET_KEY", KEY.to_owned()),
        ("INVITE_SYNC__CLERK__API_URL", format!("{root}/v1")),
        (
            "INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS",
            hour.to_string(),
        ),
        ("INVITE_SYNC__SYNC__SCHEDULE", NEVER.to_owned()),
        (
            "INVITE_SYNC__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        ),
        ("INVITE_SYNC__LOG__LEVEL", "warn".to_owned()),
    ];
    let migrated = Command::new(service)
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    anyhow::ensure!(migrated.status.success(), "migrate: {migrated:?}");
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query(
        "INSERT INTO desired_invitees (email, created_at)
         SELECT email, now() - make_interval(secs => count - ord)
         FROM unnest($1::text[]) WITH ORDINALITY AS t(email, ord),
              (SELECT cardinality($1::text[]) AS count) AS c",
    )
    .bind(&emails)
    .execute(&pool)
    .await?;

    let started_ms = now_ms();
    let started = Instant::now();
    let mut command = Command::new(service);
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let _service = Proc::start(format!("{service} run"), command, &["run"]);
    let give_up = Duration::from_secs(hour * (scenario.people / PER_WINDOW + 4) as u64);
    let mut created: Vec<i64>;
    loop {
        let invitations = sim_invitations(&http, &root).await?;
        created = invitations
            .iter()
            .filter_map(|i| i["created_at"].as_i64())
            .collect();
        if created.len() >= invitable || started.elapsed() > give_up {
            let mut per_email: HashMap<String, usize> = HashMap::new();
            for invitation in &invitations {
                let email = invitation["email_address"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                *per_email.entry(email).or_default() += 1;
            }
            let duplicates = per_email.values().filter(|n| **n > 1).count();
            let stats: Value = http
                .get(format!("{root}/_sim/stats"))
                .send()
                .await?
                .json()
                .await?;
            created.sort_unstable();
            return Ok(report(
                scenario, hour, started_ms, &created, invitable, duplicates, &stats,
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn report(
    scenario: &Scenario,
    hour: u64,
    started_ms: i64,
    created: &[i64],
    invitable: usize,
    duplicates: usize,
    stats: &Value,
) -> String {
    let hour_ms = hour as i64 * 1000;
    let secs = |ms: i64| ms as f64 / 1000.0;
    let drained_ms = created.last().map_or(0, |last| last - started_ms);
    // The most invitations created in any span of one (scaled) hour.
    let mut most_in_a_window = 0;
    let mut first = 0;
    for (last, at) in created.iter().enumerate() {
        while created[first] <= at - hour_ms {
            first += 1;
        }
        most_in_a_window = most_in_a_window.max(last + 1 - first);
    }
    // The ideal: every window before the last used whole, then the last window's
    // invitations sent as fast as this run sent them (its first to its last).
    let windows = invitable.div_ceil(PER_WINDOW).max(1);
    let last_window = invitable - (windows - 1) * PER_WINDOW;
    let last_window_send_ms = match (created.len().checked_sub(last_window), created.last()) {
        (Some(first), Some(last)) => last - created[first],
        _ => 0,
    };
    let ideal_ms = (windows as i64 - 1) * hour_ms + last_window_send_ms;
    // The floor no service can beat: the last window's calls (25 bulk of 10, then singles)
    // at Clerk's 100 requests per 10 s.
    let bulk = (last_window / 10).min(25);
    let calls = bulk + (last_window - bulk * 10);
    let floor_ms = (windows as i64 - 1) * hour_ms + (calls.saturating_sub(1) / 100) as i64 * 10_000;
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for at in created {
        *per_window.entry((at - started_ms) / hour_ms).or_default() += 1;
    }
    let mut calls: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut too_many = 0;
    let mut refused_creates = 0;
    // Operation -> status -> calls, beside a few other counters.
    if let Some(counts) = stats.as_object() {
        for (operation, by_status) in counts {
            for (status, n) in by_status.as_object().into_iter().flatten() {
                let n = n.as_u64().unwrap_or(0);
                calls
                    .entry(operation.clone())
                    .or_default()
                    .insert(status.clone(), n);
                if status == "429" {
                    too_many += n;
                }
                if operation.starts_with("create") && (status == "400" || status == "422") {
                    refused_creates += n;
                }
            }
        }
    }
    let lookups: u64 = calls
        .get("list_users")
        .map(|s| s.values().sum())
        .unwrap_or(0);
    format!(
        "== {name}: {people} people, {users} already users, {invitable} invitable, hour = {hour} s ==\n\
         invited {invited} of {invitable}; duplicates {duplicates}\n\
         drained in {drain:.1} s; ideal {ideal:.1} s ({windows} window(s): {before} x {hour} s + {send:.1} s to send the last window's {last_window}); ratio {ratio:.3}\n\
         floor at Clerk's request limit {floor:.1} s; ratio to it {floor_ratio}\n\
         invitations per window since the start: {per_window:?}\n\
         most invitations in any {hour}-s span: {most} (Clerk allows {PER_WINDOW})\n\
         429 answers: {too_many}; refused create calls: {refused_creates}; user-lookup calls: {lookups}\n\
         calls by operation and status: {calls:?}\n",
        name = scenario.name,
        people = scenario.people,
        users = scenario.people - invitable,
        invited = created.len(),
        drain = secs(drained_ms),
        ideal = secs(ideal_ms),
        before = windows - 1,
        send = secs(last_window_send_ms),
        ratio = drained_ms as f64 / ideal_ms.max(1) as f64,
        floor = secs(floor_ms),
        floor_ratio = if floor_ms > 0 {
            format!("{:.3}", drained_ms as f64 / floor_ms as f64)
        } else {
            "n/a (one window's calls fit the request limit)".to_owned()
        },
        most = most_in_a_window,
    )
}
