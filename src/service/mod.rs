//! The long-running service: cycles on a cron schedule, at start, on SIGHUP and on demand,
//! one at a time, sooner while a backlog waits for budget; a clean stop on SIGTERM / SIGINT.

pub mod housekeeping;
pub mod http;
pub mod notify;
pub mod roster_webhook;
pub mod scim;
pub mod shutdown;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::reconcile::{CycleError, CycleResult, Reconciler, Request};
use crate::telemetry::Chain;

/// Asks the worker for a cycle. Requests that arrive while one is queued are merged.
#[derive(Debug, Clone)]
pub struct Triggers {
    tx: mpsc::Sender<String>,
    /// The run id of the next cycle, once someone asked for it: every request before that
    /// cycle starts is answered with the same id.
    next_run: Arc<Mutex<Option<uuid::Uuid>>>,
}

impl Triggers {
    pub fn request(&self, trigger: &str) {
        // A full queue already holds a request: the next cycle serves this one too.
        let _ = self.tx.try_send(trigger.to_owned());
    }

    /// Requests a cycle and returns the id its run will have.
    pub fn request_run(&self, trigger: &str) -> uuid::Uuid {
        let id = match self.next_run.lock() {
            Ok(mut next) => *next.get_or_insert_with(uuid::Uuid::new_v4),
            Err(_) => uuid::Uuid::new_v4(),
        };
        self.request(trigger);
        id
    }

    fn take_run_id(&self) -> Option<uuid::Uuid> {
        self.next_run.lock().ok().and_then(|mut next| next.take())
    }
}

/// Runs cycles one at a time.
pub struct Worker {
    reconciler: Reconciler,
    rx: mpsc::Receiver<String>,
    triggers: Triggers,
    shutdown: CancellationToken,
    /// When the backlog's budget frees up: a cycle runs then without being asked.
    wake_at: Option<tokio::time::Instant>,
}

/// What one step of the worker did.
#[derive(Debug)]
pub enum Step {
    Ran(CycleResult),
    Failed(CycleError),
    Stopped,
}

pub fn worker(reconciler: Reconciler, shutdown: CancellationToken) -> (Worker, Triggers) {
    let (tx, rx) = mpsc::channel(4);
    let triggers = Triggers {
        tx,
        next_run: Arc::default(),
    };
    (
        Worker {
            reconciler,
            rx,
            triggers: triggers.clone(),
            shutdown,
            wake_at: None,
        },
        triggers,
    )
}

impl Worker {
    /// Waits for the next reason to run, runs one cycle, and returns what it did.
    pub async fn step(&mut self) -> Step {
        let wake = self.wake_at;
        let trigger = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Step::Stopped,
            trigger = self.rx.recv() => match trigger {
                Some(trigger) => trigger,
                None => return Step::Stopped,
            },
            _ = sleep_until(wake) => "backlog".to_owned(),
        };
        // Requests queued meanwhile are served by this cycle.
        while self.rx.try_recv().is_ok() {}
        self.wake_at = None;
        let request = Request {
            run_id: self.triggers.take_run_id(),
            ..Request::new(trigger)
        };
        match self.reconciler.run_cycle(&request, &self.shutdown).await {
            Ok(result) => {
                if let CycleResult::Ran(report) = &result {
                    self.wake_at = next_wake(report, Utc::now())
                        .map(|after| tokio::time::Instant::now() + after);
                }
                Step::Ran(result)
            }
            Err(error) => {
                tracing::error!(error.message = %error, error.cause_chain = %Chain(&error), "cycle failed; the next trigger retries");
                Step::Failed(error)
            }
        }
    }

    pub async fn run(mut self) {
        loop {
            if let Step::Stopped = self.step().await {
                return;
            }
        }
    }
}

/// When the next cycle runs while a backlog waits: as soon as a create slot frees on either
/// endpoint (the budget's edge margin already covers Clerk's clock). When a slot is free
/// already, the cycle stopped for another reason (an error, the lookups' per-cycle limit): a
/// short pause, so a failing Clerk is not called in a tight loop.
pub fn backlog_wake_in(
    next_slot_at: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Duration {
    const PAUSE: Duration = Duration::from_secs(5);
    match next_slot_at {
        Some(at) if at > now => (at - now).to_std().unwrap_or(PAUSE),
        _ => PAUSE,
    }
}

/// When the worker runs a cycle unasked after `report`: when budget frees up for a backlog,
/// or when unsettled creates can be looked up, whichever comes first.
pub fn next_wake(
    report: &crate::reconcile::Report,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    let until = |at: chrono::DateTime<Utc>| (at - now).to_std().unwrap_or_default();
    let backlog = (report.tally.backlog > 0).then(|| backlog_wake_in(report.next_budget_at, now));
    // A lookup that failed leaves its create due already: not sooner than half a minute.
    let unsettled = report.unsettled.settles_at.map(|at| {
        (until(at) + Duration::from_secs(1)).max(if at <= now {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        })
    });
    let wake = match (backlog, unsettled) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(after) = wake {
        tracing::info!(
            backlog = report.tally.backlog,
            unsettled_creates = report.unsettled.creates,
            next_cycle_in_ms = after.as_millis() as u64,
            "work waits for budget or for unsettled creates to settle; next cycle scheduled"
        );
    }
    wake
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Serves the HTTP endpoints alone, without the worker: a cycle they ask for is not run
/// (whoever calls this runs cycles itself), the webhooks and SCIM write as in `run`.
pub fn serve_http_alone(
    reconciler: &Reconciler,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let (_worker, triggers) = worker(reconciler.clone(), shutdown.clone());
    let state = http::AppState::new(reconciler.pool.clone(), triggers, settings)?;
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

/// Runs the service until `shutdown` fires: the worker, the schedule, the change listener
/// and the HTTP server. Then the cycle in progress finishes its call and records itself,
/// within `sync.shutdown_timeout_seconds`.
pub async fn run(
    reconciler: Reconciler,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .with_context(|| format!("http.listen {} cannot be bound", settings.http.listen))?;
    run_on(reconciler, settings, listener, shutdown).await
}

/// The listeners the HTTP server serves: `http.listen`, and `http.admin_listen` if set.
pub struct Listeners {
    pub main: tokio::net::TcpListener,
    pub admin: Option<tokio::net::TcpListener>,
}

/// [`run`] with the HTTP server on a listener the caller bound (port 0 in tests); the admin
/// listener is bound from the settings.
pub async fn run_on(
    reconciler: Reconciler,
    settings: &Settings,
    http_listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admin = match settings.http.admin_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("http.admin_listen {address} cannot be bound"))?,
        ),
        None => None,
    };
    let listeners = Listeners {
        main: http_listener,
        admin,
    };
    run_with(reconciler, settings, listeners, shutdown).await
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

/// [`run`] on listeners the caller bound.
pub async fn run_with(
    reconciler: Reconciler,
    settings: &Settings,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Listeners {
        main: http_listener,
        admin: admin_listener,
    } = listeners;
    let pool = reconciler.pool.clone();
    let clerk = reconciler.clerk.clone();
    let (worker, triggers) = worker(reconciler, shutdown.clone());
    let state =
        http::AppState::new(pool.clone(), triggers.clone(), settings)?.with_clerk_client(clerk);
    let schedule_expression = settings.sync.schedule.as_str();
    let mut scheduler = schedule(schedule_expression, triggers.clone()).await?;
    triggers.request("start");
    let hangups = spawn_hangup_listener(triggers.clone(), shutdown.clone());
    let housekeeping = tokio::spawn(housekeeping::run(
        pool.clone(),
        settings.retention.days,
        shutdown.clone(),
    ));
    let notifications = tokio::spawn(notify::listen(
        pool,
        triggers.clone(),
        settings.sync.debounce(),
        shutdown.clone(),
    ));
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
