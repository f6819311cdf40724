//! How soon a roster change reaches Clerk, with the service running as in production
//! (LISTEN/NOTIFY, the default gap between cycles of `sync.debounce_seconds`):
//!
//! - a lone `INSERT` into `desired_invitees` after a quiet period, to the simulated Clerk
//!   holding its invitation;
//! - a lone signed roster webhook (`POST /v1/webhooks/roster`, `invitee.upserted`), from the
//!   request to the invitation;
//! - a burst of 1,000 `INSERT`s (one statement each, so 1,000 notifications): how many cycles
//!   the run log (`invite_sync_runs`) records for it, and by which trigger.
//!
//! `cargo bench --bench notify_latency` (uses DATABASE_URL, else 127.0.0.1:5432, else a private
//! cluster as the demo makes one; creates and drops a scratch database;
//! INVITE_SYNC__SYNC__DEBOUNCE_SECONDS sets another gap). Before each lone change the run
//! waits until no cycle ran for the gap (plus 200 ms), so each one is the first after a quiet
//! period. Prints every sample, the median and the 90th percentile, and the burst's cycles.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

mod support;
use support::{poll_until, with_database, NEVER};

use invite_sync::clerk::sim::{self, SimHandle, SimOptions};
use invite_sync::config::Settings;
use invite_sync::{service, startup, store};

const SAMPLES: usize = 20;
const WEBHOOK_SAMPLES: usize = 10;
const BURST: usize = 1_000;
/// How often the conditions are checked: a latency is measured to within this.
const POLL: Duration = Duration::from_millis(2);
/// The roster webhook's signing secret in this run.
const ROSTER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Beyond the gap, how long no cycle runs before a lone change.
const QUIET_MARGIN: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    with_database(measure).await
}

async fn measure(url: String) -> anyhow::Result<()> {
    let simulator = sim::start(SimOptions::default()).await?;
    let mut env: HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SECRET_KEY", simulator.secret_key()),
        ("INVITE_SYNC__CLERK__API_URL", simulator.base_url().as_str()),
        ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
        ("INVITE_SYNC__HTTP__ROSTER_WEBHOOK_SECRET", ROSTER_SECRET),
        ("INVITE_SYNC__LOG__LEVEL", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // A gap to measure with instead of the default 1 s.
    if let Ok(debounce) = std::env::var("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS") {
        env.insert("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS".to_owned(), debounce);
    }
    let settings = Settings::load(None, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gap = settings.sync.debounce();
    let reconciler = startup::reconciler(&settings).await?;
    let pool = reconciler.pool.clone();
    store::migrate(&pool).await?;

    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let running = tokio::spawn({
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        let listeners = service::Listeners {
            main: Some(listener),
            admin: None,
        };
        async move { service::run(reconciler, &settings, listeners, shutdown).await }
    });
    // The start cycle runs first; samples begin once it is recorded.
    poll_until("the start cycle", Duration::from_secs(30), POLL, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM invite_sync_runs WHERE finished_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .is_ok_and(|n| n >= 1)
        .then_some(())
    })
    .await;

    let mut inserts = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        quiet(&pool, gap).await;
        let email = format!("latency{i:02}@example.com");
        let started = Instant::now();
        sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
            .bind(&email)
            .execute(&pool)
            .await?;
        invited(&simulator, &email).await;
        let took = started.elapsed();
        println!("insert sample {:>2}: {:>7.1} ms", i + 1, ms(took));
        inserts.push(took);
    }

    let http = reqwest::Client::new();
    let webhook = format!("http://{address}/v1/webhooks/roster");
    let mut webhooks = Vec::with_capacity(WEBHOOK_SAMPLES);
    for i in 0..WEBHOOK_SAMPLES {
        quiet(&pool, gap).await;
        let email = format!("webhook{i:02}@example.com");
        let body = serde_json::json!({"type": "invitee.upserted", "data": {"email": email}})
            .to_string()
            .into_bytes();
        let started = Instant::now();
        let answer = http
            .post(&webhook)
            .headers(signed(&format!("msg_bench_{i}"), &body)?)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "the roster webhook answered {}",
            answer.status()
        );
        invited(&simulator, &email).await;
        let took = started.elapsed();
        println!("webhook sample {:>2}: {:>7.1} ms", i + 1, ms(took));
        webhooks.push(took);
    }

    quiet(&pool, gap).await;
    let burst = burst(&pool, gap).await?;

    shutdown.cancel();
    running.await??;
    simulator.shutdown().await;

    let debounce = settings.sync.debounce_seconds;
    summary(
        &format!("insert -> invitation in the simulator, {SAMPLES} samples (gap {debounce} s)"),
        inserts,
    );
    summary(
        &format!(
            "signed roster webhook -> invitation in the simulator, {WEBHOOK_SAMPLES} samples (gap {debounce} s)"
        ),
        webhooks,
    );
    println!(
        "burst of {BURST} inserts (one statement each) in {:.1} ms: {} cycles ({}), the last ended {:.1} ms after the first insert",
        ms(burst.inserting),
        burst.cycles.values().sum::<usize>(),
        burst
            .cycles
            .iter()
            .map(|(trigger, n)| format!("{n} {trigger}"))
            .collect::<Vec<_>>()
            .join(", "),
        ms(burst.served),
    );
    Ok(())
}

/// What the burst cost.
struct Burst {
    /// How long the inserts took.
    inserting: Duration,
    /// The cycles that started from the first insert on, by trigger.
    cycles: BTreeMap<String, usize>,
    /// From the first insert to the end of the last of those cycles.
    served: Duration,
}

/// Inserts `BURST` rows, one statement each on one connection, waits until a cycle that
/// started after the last one committed has ended and then for a quiet gap (a late
/// notification would have started another cycle by then), and counts the cycles.
async fn burst(pool: &PgPool, gap: Duration) -> anyhow::Result<Burst> {
    let mut conn = pool.acquire().await?;
    let first: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *conn)
        .await?;
    let started = Instant::now();
    for i in 0..BURST {
        sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
            .bind(format!("burst{i:04}@example.com"))
            .execute(&mut *conn)
            .await?;
    }
    let inserting = started.elapsed();
    let last: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *conn)
        .await?;
    drop(conn);
    poll_until(
        "a cycle that read the whole burst",
        Duration::from_secs(60),
        POLL,
        || async {
            sqlx::query_scalar::<_, Option<bool>>(
                "SELECT bool_and(finished_at IS NOT NULL) AND bool_or(started_at > $1) \
                 FROM invite_sync_runs WHERE started_at >= $2",
            )
            .bind(last)
            .bind(first)
            .fetch_one(pool)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
            .then_some(())
        },
    )
    .await;
    quiet(pool, gap).await;
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT trigger, count(*), \
         extract(epoch FROM max(finished_at) - $1)::float8 \
         FROM invite_sync_runs WHERE started_at >= $1 GROUP BY trigger",
    )
    .bind(first)
    .fetch_all(pool)
    .await?;
    let served = rows.iter().map(|(_, _, s)| *s).fold(0.0, f64::max);
    Ok(Burst {
        inserting,
        cycles: rows
            .into_iter()
            .map(|(trigger, n, _)| (trigger, n as usize))
            .collect(),
        served: Duration::from_secs_f64(served.max(0.0)),
    })
}

/// Waits until no cycle runs and none ended within the gap (plus a margin): the next
/// change is the first after a quiet period.
async fn quiet(pool: &PgPool, gap: Duration) {
    let quiet = (gap + QUIET_MARGIN).as_secs_f64();
    poll_until("a quiet period", Duration::from_secs(60), POLL, || async {
        sqlx::query_scalar::<_, Option<bool>>(
            "SELECT bool_and(finished_at IS NOT NULL) \
             AND clock_timestamp() - max(finished_at) >= make_interval(secs => $1) \
             FROM invite_sync_runs",
        )
        .bind(quiet)
        .fetch_one(pool)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
        .then_some(())
    })
    .await;
}

/// Waits until the simulated Clerk holds an invitation for `email`.
async fn invited(simulator: &SimHandle, email: &str) {
    poll_until("the invitation", Duration::from_secs(30), POLL, || {
        let found = simulator
            .invitations()
            .iter()
            .any(|inv| inv.email_address == email);
        std::future::ready(found.then_some(()))
    })
    .await;
}

/// The three `webhook-` signature headers of `body`, signed with the roster secret.
fn signed(id: &str, body: &[u8]) -> anyhow::Result<HeaderMap> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = invite_sync::webhook_signature::sign(ROSTER_SECRET, id, timestamp, body)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::try_from(value)?);
    }
    Ok(headers)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    println!(
        "{what}: median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(samples[n / 2]),
        ms(samples[n * 9 / 10]),
        ms(samples[0]),
        ms(samples[n - 1]),
    );
}
