//! The long-running service: cycles on a cron schedule, at start, on SIGHUP and on demand,
//! one at a time, sooner while a backlog waits for budget; a clean stop on SIGTERM / SIGINT.

pub mod events;
pub mod housekeeping;
pub mod http;
pub mod notify;
pub mod shutdown;
pub mod state;
pub mod worker;

pub use worker::{backlog_wake_in, next_wake, worker, Step, Triggers, Worker};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::reconcile::Reconciler;
use crate::telemetry::Chain;

/// Serves the HTTP endpoints alone, without the worker: a cycle they ask for is not run
/// (whoever calls this runs cycles itself), the webhooks and SCIM write as in `run`.
pub fn serve_http_alone(
    reconciler: &Reconciler,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let (_worker, triggers) = worker(reconciler.clone(), shutdown.clone());
    let state = state::AppState::new(reconciler.pool.clone(), triggers, settings)?
        .with_clerk_client(reconciler.clerk.clone());
    Ok(tokio::spawn(http::serve(listener, state, shutdown)))
}

/// Starts the cron schedule: each tick asks for a cycle.
pub async fn schedule(expression: &str, triggers: Triggers) -> anyhow::Result<JobScheduler> {
    let scheduler = JobScheduler::new()
        .await
        .context("the scheduler could not start")?;
    let job = Job::new_async(expression, move |_id, _scheduler| {
        let triggers = triggers.clone();
        Box::pin(async move { triggers.request("schedule") })
    })
    .with_context(|| {
        format!("sync.schedule {expression:?} is not a cron expression of 6 or 7 fields")
    })?;
    scheduler
        .add(job)
        .await
        .context("the schedule could not be added")?;
    scheduler
        .start()
        .await
        .context("the scheduler could not start")?;
    Ok(scheduler)
}

/// The listeners the HTTP server serves. Each one the caller did not bind (port 0 in tests)
/// is bound from the settings: `http.listen`, and `http.admin_listen` if set.
#[derive(Debug, Default)]
pub struct Listeners {
    pub main: Option<tokio::net::TcpListener>,
    pub admin: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// The main listener and the admin listener (if any), bound from the settings where the
    /// caller did not bind them.
    async fn bound(
        self,
        settings: &Settings,
    ) -> anyhow::Result<(tokio::net::TcpListener, Option<tokio::net::TcpListener>)> {
        let main = match self.main {
            Some(listener) => listener,
            None => tokio::net::TcpListener::bind(settings.http.listen)
                .await
                .with_context(|| format!("http.listen {} cannot be bound", settings.http.listen))?,
        };
        let admin = match (self.admin, settings.http.admin_listen) {
            (Some(listener), _) => Some(listener),
            (None, Some(address)) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("http.admin_listen {address} cannot be bound"))?,
            ),
            (None, None) => None,
        };
        Ok((main, admin))
    }
}

/// Waits for shutdown, or for the worker to end before it: the worker only ends on
/// shutdown; ending sooner (a panic) must stop the process, so that systemd or Kubernetes
/// restarts it rather than keep a service that runs no cycles. Returns whether it died.
async fn worker_died(shutdown: &CancellationToken, worker: &mut JoinHandle<()>) -> bool {
    tokio::select! {
        biased;
        _ = supervise(shutdown) => false,
        ended = worker => {
            if shutdown.is_cancelled() {
                false
            } else {
                tracing::error!(ended = ?ended.err(), "the cycle worker stopped unexpectedly; shutting down");
                shutdown.cancel();
                true
            }
        }
    }
}

/// Runs the service until `shutdown` fires: the worker, the schedule, the change listener
/// and the HTTP server, on `listeners`. Then the cycle in progress finishes its call and
/// records itself, within `sync.shutdown_timeout_seconds`.
pub async fn run(
    reconciler: Reconciler,
    settings: &Settings,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (http_listener, admin_listener) = listeners.bound(settings).await?;
    let pool = reconciler.pool.clone();
    let clerk = reconciler.clerk.clone();
    let (worker, triggers) = worker(reconciler, shutdown.clone());
    let worker = worker.with_gap(settings.sync.debounce());
    crate::store::group_memberships::recompute_at_start(
        &pool,
        &state::group_mappings(settings)?,
        &settings.sync.target,
    )
    .await
    .context("recomputing the membership roster's SCIM rows for scim.groups")?;
    let state =
        state::AppState::new(pool.clone(), triggers.clone(), settings)?.with_clerk_client(clerk);
    let schedule_expression = settings.sync.schedule.as_str();
    let mut scheduler = schedule(schedule_expression, triggers.clone()).await?;
    triggers.request("start");
    let hangups = spawn_hangup_listener(triggers.clone(), shutdown.clone());
    let housekeeping = tokio::spawn(housekeeping::run(
        pool.clone(),
        settings.retention.days,
        shutdown.clone(),
    ));
    let deliverer = events::Deliverer::start(pool.clone(), settings).await?;
    let deliveries = tokio::spawn(deliverer.run(shutdown.clone()));
    let notifications = tokio::spawn(notify::listen(pool, triggers.clone(), shutdown.clone()));
    let address = http_listener.local_addr().ok();
    let admin_address = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let admin = admin_listener
        .map(|listener| tokio::spawn(http::serve_admin(listener, state.clone(), shutdown.clone())));
    let server = tokio::spawn(http::serve(http_listener, state, shutdown.clone()));
    let worker: JoinHandle<()> = tokio::spawn(worker.run());
    tracing::info!(
        schedule = schedule_expression,
        http = %address.map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_address.map(|a| a.to_string()).unwrap_or_default(),
        "invite-sync is running"
    );

    let mut worker = worker;
    let died = worker_died(&shutdown, &mut worker).await;
    let shutdown_timeout = settings.sync.shutdown_timeout();
    tracing::info!(
        timeout_seconds = shutdown_timeout.as_secs(),
        "stopping: the cycle in progress finishes its call"
    );
    let _ = scheduler.shutdown().await;
    hangups.abort();
    let stopped = tokio::time::timeout(shutdown_timeout, async {
        if !worker.is_finished() {
            let _ = worker.await;
        }
        let _ = notifications.await;
        let _ = housekeeping.await;
        let _ = deliveries.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        server.await
    })
    .await;
    match stopped {
        _ if died => anyhow::bail!("the cycle worker stopped unexpectedly"),
        Ok(Ok(Ok(()))) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Ok(Err(error))) => Err(anyhow::Error::new(error).context("the HTTP server failed")),
        Ok(Err(error)) => Err(anyhow::Error::new(error).context("the HTTP server task failed")),
        Err(_) => anyhow::bail!(
            "the cycle in progress did not stop within sync.shutdown_timeout_seconds ({} s)",
            shutdown_timeout.as_secs()
        ),
    }
}

/// The main loop under systemd: says it is ready, pings the watchdog at half its interval
/// while the process is alive, and says it is stopping. Without systemd these are no-ops.
async fn supervise(shutdown: &CancellationToken) {
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "could not tell systemd the service is ready");
    }
    match sd_notify::watchdog_enabled() {
        Some(interval) => {
            let mut ticks = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        }
        None => shutdown.cancelled().await,
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

fn spawn_hangup_listener(triggers: Triggers, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = hangup.recv() => {
                        if received.is_none() {
                            return;
                        }
                        tracing::info!("SIGHUP: a cycle is requested");
                        triggers.request("sighup");
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (triggers, shutdown);
        }
    })
}
