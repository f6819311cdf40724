//! The cycle worker: runs cycles one at a time, when asked ([`Triggers`]) and, while a
//! backlog waits for budget or creates wait to be settled, when that work can go on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
