//! The cycle worker: runs cycles one at a time, when asked ([`Triggers`]) and, while a
//! backlog waits for budget or creates wait to be settled, when that work can go on.
//!
//! A roster change ([`Triggers::roster_changed`]) after a quiet period starts a cycle at
//! once; changes that arrive while a cycle runs, or soon after it, are gathered into the
//! next one, which starts `sync.debounce_seconds` after the last one ended ([`change_start`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;
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
    /// A roster change is queued and not yet taken by the worker: further changes add
    /// nothing to the queue, so a burst of them never fills it ahead of other triggers.
    change_queued: Arc<AtomicBool>,
}

/// The trigger of a cycle asked for by a roster change: it waits for the gap after the last
/// cycle ([`change_start`]); every other trigger runs at once.
pub const CHANGE: &str = "notify";

impl Triggers {
    /// The roster changed: a cycle runs at once after a quiet period, else once the gap
    /// after the last cycle has passed, gathering every change that arrived meanwhile.
    pub fn roster_changed(&self) {
        if !self.change_queued.swap(true, Ordering::AcqRel) {
            self.request(CHANGE);
        }
    }

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
    wake_at: Option<Instant>,
    /// The least time from the end of a cycle to the start of one for roster changes.
    gap: Duration,
    /// When the last cycle ended (failed or not).
    last_end: Option<Instant>,
    /// When the first roster change not yet served by a cycle arrived.
    first_change: Option<Instant>,
}

/// When a cycle for pending roster changes starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Now: no cycle ended within the gap.
    Now,
    /// Then: `gap` after the last cycle ended.
    At(Instant),
}

/// When a cycle for roster changes starts, given when the last cycle ended (`None`: none has
/// run), when the first change not yet served arrived, the least gap between cycles and the
/// time it is now: at once after a quiet period, else `gap` after the last cycle's end.
/// `None` when no change waits.
pub fn change_start(
    last_end: Option<Instant>,
    first_change: Option<Instant>,
    gap: Duration,
    now: Instant,
) -> Option<Start> {
    let first_change = first_change?;
    let earliest = match last_end {
        Some(end) => first_change.max(end + gap),
        None => first_change,
    };
    Some(if earliest <= now {
        Start::Now
    } else {
        Start::At(earliest)
    })
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
        change_queued: Arc::default(),
    };
    (
        Worker {
            reconciler,
            rx,
            triggers: triggers.clone(),
            shutdown,
            wake_at: None,
            gap: Duration::ZERO,
            last_end: None,
            first_change: None,
        },
        triggers,
    )
}

impl Worker {
    /// The least time from the end of a cycle to the start of one for roster changes
    /// (`sync.debounce_seconds`; none unless set).
    pub fn with_gap(mut self, gap: Duration) -> Self {
        self.gap = gap;
        self
    }

    /// Waits for the next reason to run, runs one cycle, and returns what it did.
    pub async fn step(&mut self) -> Step {
        let trigger = loop {
            let change_at =
                match change_start(self.last_end, self.first_change, self.gap, Instant::now()) {
                    Some(Start::Now) => break CHANGE.to_owned(),
                    Some(Start::At(at)) => Some(at),
                    None => None,
                };
            let wake = self.wake_at;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Step::Stopped,
                trigger = self.rx.recv() => match trigger {
                    // Decided on the next turn: at once, or after the gap.
                    Some(trigger) if trigger == CHANGE => {
                        self.triggers.change_queued.store(false, Ordering::Release);
                        self.first_change.get_or_insert_with(Instant::now);
                    }
                    Some(trigger) => break trigger,
                    None => return Step::Stopped,
                },
                _ = sleep_until(change_at) => break CHANGE.to_owned(),
                _ = sleep_until(wake) => break "backlog".to_owned(),
            }
        };
        // Requests queued meanwhile, and changes waiting for the gap, are served by this cycle:
        // a change after this point queues again, for the next one.
        self.triggers.change_queued.store(false, Ordering::Release);
        while self.rx.try_recv().is_ok() {}
        self.wake_at = None;
        self.first_change = None;
        let request = Request {
            run_id: self.triggers.take_run_id(),
            ..Request::new(trigger)
        };
        let result = self.reconciler.run_cycle(&request, &self.shutdown).await;
        self.last_end = Some(Instant::now());
        match result {
            Ok(result) => {
                if let CycleResult::Ran(report) = &result {
                    let lead = organization_lead(self.reconciler.config.memberships.limits.window);
                    self.wake_at =
                        next_wake(report, Utc::now(), lead).map(|after| Instant::now() + after);
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

/// How long before the organization budget frees a slot for a waiting backlog the cycle
/// starts: a cycle reads the rosters and every organization before it sends, so starting
/// early lets it send the moment the slot frees (its drain waits for it within its linger, a
/// quarter of the window and at most 30 s). An eighth of the window, at most 5 s: always
/// within the linger.
pub fn organization_lead(window: Duration) -> Duration {
    (window / 8).min(Duration::from_secs(5))
}

/// When the worker runs a cycle unasked after `report`: when budget frees up for a backlog
/// (`lead` before it for organization invitations, see [`organization_lead`]), or when
/// unsettled creates can be looked up, whichever comes first.
pub fn next_wake(
    report: &crate::reconcile::Report,
    now: chrono::DateTime<Utc>,
    lead: Duration,
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
    // Organization invitations waiting for their budget (the cycle starts `lead` early when
    // the slot frees later than now), or membership creates to settle.
    let early = organization_wake(&report.memberships, now, lead);
    let wake = wake
        .into_iter()
        .chain(report.memberships.wake_in(now))
        .chain(early)
        .min();
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

/// When a cycle starts for the organization invitations a pass left waiting for a slot that
/// frees later than `now`: `lead` before the slot frees, or at once when it frees sooner.
pub fn organization_wake(
    memberships: &crate::reconcile::memberships::MembershipReport,
    now: chrono::DateTime<Utc>,
    lead: Duration,
) -> Option<Duration> {
    memberships
        .next_budget_at
        .filter(|at| memberships.backlog > 0 && *at > now)
        .map(|at| (at - now).to_std().unwrap_or_default().saturating_sub(lead))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_cycle_for_waiting_organization_invitations_starts_early_enough_to_send_as_the_slot_frees()
    {
        use crate::reconcile::memberships::MembershipReport;
        let now = Utc::now();
        let lead = organization_lead(Duration::from_secs(60));
        assert_eq!(lead, Duration::from_secs(5));
        // Within the drain's linger (a quarter of the window, at most 30 s) at any window.
        for window in [4, 60, 3600] {
            let window = Duration::from_secs(window);
            assert!(organization_lead(window) <= (window / 4).min(Duration::from_secs(30)));
        }
        let waiting = |backlog, after_ms: i64| MembershipReport {
            backlog,
            next_budget_at: Some(now + chrono::Duration::milliseconds(after_ms)),
            ..MembershipReport::default()
        };
        assert_eq!(
            organization_wake(&waiting(10, 55_000), now, lead),
            Some(Duration::from_secs(50))
        );
        // A slot freeing within the lead: at once, the drain waits for it.
        assert_eq!(
            organization_wake(&waiting(10, 2_000), now, lead),
            Some(Duration::ZERO)
        );
        // A slot free already, or nothing waiting: the usual wake decides (a pause).
        assert_eq!(organization_wake(&waiting(10, 0), now, lead), None);
        assert_eq!(organization_wake(&waiting(0, 55_000), now, lead), None);
    }

    #[test]
    fn without_a_pending_change_nothing_starts() {
        let t0 = Instant::now();
        assert_eq!(change_start(None, None, GAP, t0), None);
        assert_eq!(change_start(Some(t0), None, GAP, t0 + ms(10)), None);
    }

    #[test]
    fn the_first_change_ever_starts_a_cycle_at_once() {
        let t0 = Instant::now();
        assert_eq!(change_start(None, Some(t0), GAP, t0), Some(Start::Now));
    }

    #[test]
    fn a_change_after_a_quiet_period_starts_a_cycle_at_once() {
        let t0 = Instant::now();
        let ended = t0;
        // The last cycle ended a gap ago, or longer.
        for quiet in [GAP, GAP + ms(1), GAP * 60] {
            let now = ended + quiet;
            assert_eq!(
                change_start(Some(ended), Some(now), GAP, now),
                Some(Start::Now),
                "{quiet:?} after the last cycle"
            );
        }
    }

    #[test]
    fn a_change_soon_after_a_cycle_waits_for_the_gap_after_its_end() {
        let t0 = Instant::now();
        let ended = t0;
        let changed = ended + ms(300);
        assert_eq!(
            change_start(Some(ended), Some(changed), GAP, changed),
            Some(Start::At(ended + GAP))
        );
        // Later changes of the burst do not push it back: the first one counts.
        assert_eq!(
            change_start(Some(ended), Some(changed), GAP, ended + ms(900)),
            Some(Start::At(ended + GAP))
        );
        assert_eq!(
            change_start(Some(ended), Some(changed), GAP, ended + GAP),
            Some(Start::Now)
        );
    }

    #[test]
    fn a_change_that_arrived_while_a_cycle_ran_waits_for_the_gap_after_its_end() {
        let t0 = Instant::now();
        // The change came before the cycle's end (while it ran).
        let changed = t0;
        let ended = t0 + ms(500);
        assert_eq!(
            change_start(Some(ended), Some(changed), GAP, ended),
            Some(Start::At(ended + GAP))
        );
    }

    #[test]
    fn without_a_gap_every_change_starts_at_once() {
        let t0 = Instant::now();
        assert_eq!(
            change_start(Some(t0), Some(t0), Duration::ZERO, t0),
            Some(Start::Now)
        );
    }
}
