//! The long-running service: cycles on a cron schedule, at start, on SIGHUP and on demand,
//! one at a time, sooner while a backlog waits for budget; a clean stop on SIGTERM / SIGINT.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::reconcile::{CycleResult, Reconciler, Request};

/// Asks the worker for a cycle. Requests that arrive while one is queued are merged.
#[derive(Debug, Clone)]
pub struct Triggers {
    tx: mpsc::Sender<String>,
}

impl Triggers {
    pub fn request(&self, trigger: &str) {
        // A full queue already holds a request: the next cycle serves this one too.
        let _ = self.tx.try_send(trigger.to_owned());
    }
}

/// Runs cycles one at a time.
pub struct Worker {
    reconciler: Reconciler,
    rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
    /// When the backlog's budget frees up: a cycle runs then without being asked.
    wake_at: Option<tokio::time::Instant>,
}

/// What one step of the worker did.
#[derive(Debug)]
pub enum Step {
    Ran(CycleResult),
    Failed(String),
    Stopped,
}

pub fn worker(reconciler: Reconciler, shutdown: CancellationToken) -> (Worker, Triggers) {
    let (tx, rx) = mpsc::channel(4);
    (
        Worker {
            reconciler,
            rx,
            shutdown,
            wake_at: None,
        },
        Triggers { tx },
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
        match self
            .reconciler
            .run_cycle(&Request::new(trigger), &self.shutdown)
            .await
        {
            Ok(result) => {
                if let CycleResult::Ran(report) = &result {
                    if report.backlog > 0 {
                        let at = report
                            .next_budget_at
                            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                            .unwrap_or(Duration::from_secs(60));
                        // One second past the window's edge, so the freed budget is there.
                        self.wake_at =
                            Some(tokio::time::Instant::now() + at + Duration::from_secs(1));
                        tracing::info!(
                            backlog = report.backlog,
                            next_cycle_in_seconds = at.as_secs() + 1,
                            "backlog waits for budget; next cycle scheduled"
                        );
                    }
                }
                Step::Ran(result)
            }
            Err(error) => {
                tracing::error!(error = %error, "cycle failed; the next trigger retries");
                Step::Failed(error.to_string())
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

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
    .with_context(|| format!("sync.schedule {expression:?} is not a six-field cron expression"))?;
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

/// Runs the service until `shutdown` fires, then lets the cycle in progress finish its call
/// and record itself, within `shutdown_timeout`.
pub async fn run(
    reconciler: Reconciler,
    schedule_expression: &str,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    let (worker, triggers) = worker(reconciler, shutdown.clone());
    let mut scheduler = schedule(schedule_expression, triggers.clone()).await?;
    triggers.request("start");
    let hangups = spawn_hangup_listener(triggers.clone(), shutdown.clone());
    let worker: JoinHandle<()> = tokio::spawn(worker.run());
    tracing::info!(schedule = schedule_expression, "invite-sync is running");

    shutdown.cancelled().await;
    tracing::info!(
        timeout_seconds = shutdown_timeout.as_secs(),
        "stopping: the cycle in progress finishes its call"
    );
    let _ = scheduler.shutdown().await;
    hangups.abort();
    match tokio::time::timeout(shutdown_timeout, worker).await {
        Ok(_) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => anyhow::bail!(
            "the cycle in progress did not stop within sync.shutdown_timeout_seconds ({} s)",
            shutdown_timeout.as_secs()
        ),
    }
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

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        crate::cli::shutdown_signal().await;
        token.cancel();
    });
}
