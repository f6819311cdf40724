//! Time from a row inserted into `desired_invitees` to the simulated Clerk holding its
//! invitation, with the service running as in production (LISTEN/NOTIFY, default debounce).
//!
//! `cargo bench --bench notify_latency` (uses DATABASE_URL, else 127.0.0.1:5432, else a private
//! cluster as the demo makes one; creates and drops a scratch database;
//! INVITE_SYNC__SYNC__DEBOUNCE_SECONDS sets another debounce).
//! Prints every sample, the median and the 90th percentile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

mod support;
use support::{poll_until, with_database, NEVER};

use invite_sync::clerk::sim::{self, SimOptions};
use invite_sync::config::Settings;
use invite_sync::{service, startup, store};

const SAMPLES: usize = 20;
/// How often the conditions are checked: a latency is measured to within this.
const POLL: Duration = Duration::from_millis(2);

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
        ("INVITE_SYNC__LOG__LEVEL", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // A debounce to measure with instead of the default 1 s.
    if let Ok(debounce) = std::env::var("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS") {
        env.insert("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS".to_owned(), debounce);
    }
    let settings = Settings::load(None, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let reconciler = startup::reconciler(&settings).await?;
    let pool = reconciler.pool.clone();
    store::migrate(&pool).await?;

    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
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

    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let email = format!("latency{i:02}@example.com");
        let started = Instant::now();
        sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
            .bind(&email)
            .execute(&pool)
            .await?;
        poll_until("the invitation", Duration::from_secs(30), POLL, || {
            let found = simulator
                .invitations()
                .iter()
                .any(|inv| inv.email_address == email);
            std::future::ready(found.then_some(()))
        })
        .await;
        let took = started.elapsed();
        println!(
            "sample {:>2}: {:>7.1} ms",
            i + 1,
            took.as_secs_f64() * 1000.0
        );
        samples.push(took);
    }
    shutdown.cancel();
    running.await??;
    simulator.shutdown().await;

    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "insert -> invitation in the simulator, {SAMPLES} samples (debounce {} s): median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        settings.sync.debounce_seconds,
        ms(samples[SAMPLES / 2]),
        ms(samples[SAMPLES * 9 / 10]),
        ms(samples[0]),
        ms(samples[SAMPLES - 1]),
    );
    Ok(())
}
