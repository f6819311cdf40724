//! One reconcile cycle: read the roster, Clerk and the ledger; plan; guard; execute; report.
//! Level-triggered: every cycle recomputes the plan from the whole current state.

pub mod execute;
pub mod guard;
pub mod plan;
pub mod report;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::clerk::budget::{self, Budget};
use crate::clerk::{ClerkClient, ClientError, Invitation, InvitationStatus, Operation};
use crate::config::Settings;
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::store::{
    self, budget as budget_store, desired, ledger, listings, lock, people, runs, users,
};
use crate::telemetry::Chain;
use execute::{Executor, Stop, Tally};
use guard::{HoldReason, Revocation, Verdict};
use plan::{Item, Plan, Policy};
use report::Reporter;

/// What a cycle obeys, taken from the settings once.
#[derive(Debug, Clone)]
pub struct CycleConfig {
    pub target: String,
    pub relation: String,
    pub dry_run: bool,
    pub policy: Policy,
    pub guard: guard::RevocationLimits,
    pub budget: budget::Limits,
    pub reporter: Reporter,
    /// How long after it was sent an unconfirmed create is looked up.
    pub settle_after: Duration,
    pub drain: execute::Drain,
    /// `sync.full_schedule`: the first cycle after each tick lists every invitation.
    /// `None` (an expression the parser refuses; `config check` catches it) lists in full
    /// every cycle.
    pub full_schedule: Option<croner::Cron>,
}

impl CycleConfig {
    pub fn from_settings(settings: &Settings) -> CycleConfig {
        let sync = &settings.sync;
        let limits = budget::Limits {
            bulk_calls: settings.clerk.bulk_create_per_window,
            single_calls: settings.clerk.single_create_per_window,
            window: Duration::from_secs(settings.clerk.create_window_seconds),
        };
        CycleConfig {
            target: sync.target.clone(),
            relation: settings.source.relation.clone(),
            dry_run: sync.dry_run,
            policy: Policy {
                ownership: sync.ownership,
                on_change: sync.on_change,
                reinvite_expired: sync.reinvite_expired,
                defaults: sync.row_defaults(),
            },
            guard: guard::RevocationLimits {
                max_revocations: sync.max_revocations as usize,
                max_revocation_ratio: sync.max_revocation_ratio,
                protected: sync.protected.clone(),
            },
            budget: limits,
            reporter: Reporter {
                redact_emails: settings.log.redact_emails,
            },
            settle_after: settings.clerk.settle_after(),
            drain: execute::Drain::new(
                limits,
                Duration::from_secs(settings.clerk.user_check_max_age_seconds),
                settings.clerk.user_checks_per_cycle as usize,
            ),
            full_schedule: parse_schedule(&sync.full_schedule),
        }
    }
}

/// A six- or seven-field cron expression, read the way the scheduler reads `sync.schedule`.
pub fn parse_schedule(expression: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .ok()
}

/// Whether a cycle at `now` lists every invitation: the first cycle ever, and the first one
/// after each tick of the full schedule since the last full listing began.
pub fn full_listing_due(
    schedule: Option<&croner::Cron>,
    last_full: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let (Some(schedule), Some(last_full)) = (schedule, last_full) else {
        return true;
    };
    schedule
        .find_previous_occurrence(&now, true)
        .is_ok_and(|tick| tick > last_full)
}

/// What asked for a cycle, and how it should run.
#[derive(Debug, Clone)]
pub struct Request {
    pub trigger: String,
    /// Overrides `sync.dry_run` when set.
    pub dry_run: Option<bool>,
    /// `sync --allow-revocations N`.
    pub allow_revocations: usize,
    /// The id the run is to have (one was promised to whoever asked for it).
    pub run_id: Option<Uuid>,
    /// `sync --full`: list every invitation, whatever the full schedule says.
    pub full: bool,
}

impl Request {
    pub fn new(trigger: impl Into<String>) -> Request {
        Request {
            trigger: trigger.into(),
            dry_run: None,
            allow_revocations: 0,
            run_id: None,
            full: false,
        }
    }
}

/// What the next cycle would do: the plan, the guard's verdict, the budget and the backlog.
#[derive(Debug, Clone)]
pub struct Preview {
    pub plan: Plan,
    pub verdict: Verdict,
    pub budget: Budget,
    /// Creates waiting (all of them, before this cycle's budget is spent).
    pub queued: usize,
    /// Of those, people Clerk has not recently said are not users: each is looked up
    /// before a create is spent on them.
    pub awaiting_user_check: usize,
    /// How long the people known to be invitable take to drain at the budget's pace.
    pub eta: Duration,
    pub owned_pending: usize,
    pub desired_rows: usize,
    /// Creates whose outcome is unknown, waiting to be looked up.
    pub unsettled: Unsettled,
}

/// Creates whose outcome is unknown (ledger rows left `sending` by a crash or a lost answer):
/// how many wait, and from when the first of them can be looked up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unsettled {
    pub creates: usize,
    pub settles_at: Option<DateTime<Utc>>,
}

impl Unsettled {
    /// The ledger's unsettled creates; each is looked up `settle_after` after it was sent.
    pub fn of(ledger: &[LedgerEntry], settle_after: Duration, now: DateTime<Utc>) -> Unsettled {
        let settle_after = chrono::Duration::from_std(settle_after).unwrap_or_default();
        let waiting = ledger.iter().filter(|e| e.state == LedgerState::Sending);
        Unsettled {
            creates: waiting.clone().count(),
            settles_at: waiting
                .map(|e| e.sent_at.map_or(now, |sent| sent + settle_after))
                .min(),
        }
    }

    /// These and `more` created now, whose outcome is unknown too.
    pub fn and_new(self, more: usize, settle_after: Duration, now: DateTime<Utc>) -> Unsettled {
        if more == 0 {
            return self;
        }
        let settles = now + chrono::Duration::from_std(settle_after).unwrap_or_default();
        Unsettled {
            creates: self.creates + more,
            settles_at: Some(self.settles_at.map_or(settles, |at| at.min(settles))),
        }
    }
}

/// The end of a cycle.
#[derive(Debug, Clone)]
pub enum CycleResult {
    /// Another process holds the lock.
    Skipped {
        holder: Option<lock::Holder>,
    },
    Ran(Box<Report>),
}

/// What one cycle did, as the run record stores it.
#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: Uuid,
    pub desired_rows: usize,
    pub owned_pending: usize,
    pub outcome: runs::Outcome,
    pub dry_run: bool,
    pub counts: BTreeMap<&'static str, usize>,
    /// What the executor did: the creates, revocations and calls, the user checks, the
    /// backlog it left, and the errors.
    pub tally: Tally,
    pub held_revocations: usize,
    pub hold_reason: Option<HoldReason>,
    pub protected: usize,
    pub eta_seconds: u64,
    pub budget_left: Budget,
    /// When more budget frees up, if the backlog waits for it.
    pub next_budget_at: Option<DateTime<Utc>>,
    /// Creates whose outcome is unknown (those the ledger held and those sent this cycle),
    /// looked up once they settle.
    pub unsettled: Unsettled,
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Roster(#[from] desired::ReadError),
    #[error("listing Clerk's invitations failed: {0}")]
    Clerk(#[from] ClientError),
}

/// Runs cycles against one target.
#[derive(Clone)]
pub struct Reconciler {
    pub pool: PgPool,
    pub clerk: ClerkClient,
    pub config: CycleConfig,
}

/// Everything a cycle reads but the roster, which is streamed through the planner.
struct State {
    clerk: Vec<Invitation>,
    /// The ledger entries Clerk can still change or that await settling; the rest of the
    /// ledger is streamed beside the roster.
    ledger: Vec<LedgerEntry>,
    /// Which of `clerk`'s invitations invite-sync created.
    owned_ids: HashSet<String>,
    /// When the listing began, if it listed every invitation; `None` for pending only.
    full_since: Option<DateTime<Utc>>,
    /// Invitations the ledger holds that a lookup found in no state.
    nowhere: HashSet<String>,
}

impl State {
    fn listing(&self) -> plan::Listing<'_> {
        match self.full_since {
            Some(_) => plan::Listing::Full,
            None => plan::Listing::Pending {
                found_nowhere: &self.nowhere,
            },
        }
    }
}

/// What the lookups of the ledger's missing invitations found.
struct Lookups {
    found: Vec<Invitation>,
    /// Ids found in no state at all.
    nowhere: HashSet<String>,
}

impl Reconciler {
    pub fn new(pool: PgPool, clerk: ClerkClient, config: CycleConfig) -> Reconciler {
        Reconciler {
            pool,
            clerk,
            config,
        }
    }

    /// Whether this cycle lists every invitation, and when its listing begins.
    async fn listing_start(&self, full: bool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let now = store::now(&self.pool).await?;
        if full {
            return Ok(Some(now));
        }
        let last = listings::last_full(&self.pool, &self.config.target).await?;
        Ok(full_listing_due(self.config.full_schedule.as_ref(), last, now).then_some(now))
    }

    async fn read_state(&self, full: bool) -> Result<State, CycleError> {
        let full_since = self.listing_start(full).await?;
        // A roster that cannot be read fails the cycle before Clerk is asked anything.
        desired::check(&self.pool, &self.config.relation).await?;
        let ledger = ledger::live(&self.pool, &self.config.target).await?;
        // Between full listings only pending invitations can change by themselves: the
        // ledger knows the rest.
        let status = match full_since {
            Some(_) => None,
            None => Some(InvitationStatus::Pending),
        };
        let mut clerk = self.clerk.list_all(status).await?;
        let lookups = self
            .look_up_missing(&ledger, &clerk, full_since.is_some())
            .await?;
        clerk.extend(lookups.found);
        let ids: Vec<String> = clerk.iter().map(|i| i.id.clone()).collect();
        let owned_ids = ledger::owned_among(&self.pool, &self.config.target, &ids).await?;
        Ok(State {
            clerk,
            ledger,
            owned_ids,
            full_since,
            nowhere: lookups.nowhere,
        })
    }

    /// The invitations the ledger holds as live that Clerk's list did not show, looked up
    /// by address: accepted, expired or revoked (then the plan sees that), or still pending
    /// and missed by the list. After a pending-only listing only pending entries are looked
    /// up (an expired one stays expired until the next full listing).
    async fn look_up_missing(
        &self,
        ledger: &[LedgerEntry],
        clerk: &[Invitation],
        full: bool,
    ) -> Result<Lookups, CycleError> {
        let listed: HashSet<&str> = clerk.iter().map(|i| i.id.as_str()).collect();
        let mut lookups = Lookups {
            found: Vec::new(),
            nowhere: HashSet::new(),
        };
        for entry in ledger {
            let Some(id) = entry.clerk_invitation_id.as_deref() else {
                continue;
            };
            let missing = match entry.state {
                LedgerState::Pending => true,
                LedgerState::Expired => full,
                _ => false,
            };
            if !missing || listed.contains(id) {
                continue;
            }
            let email = entry.email.as_str();
            // Not revoked (accepted, expired, still pending) first: the common fates.
            let mut invitation = None;
            for status in [None, Some(InvitationStatus::Revoked)] {
                let hits = self.clerk.find_by_email(email, status).await?;
                invitation = hits.into_iter().find(|i| i.id == id);
                if invitation.is_some() {
                    break;
                }
            }
            match invitation {
                Some(invitation) => lookups.found.push(invitation),
                None => {
                    lookups.nowhere.insert(id.to_owned());
                }
            }
        }
        Ok(lookups)
    }

    /// The budget left now, from the calls recorded in Postgres.
    pub async fn budget(&self) -> Result<Budget, sqlx::Error> {
        budget_store::current(&self.pool, &self.config.target, self.config.budget).await
    }

    /// Plans with the roster streamed through the planner, one row at a time.
    async fn decide(
        &self,
        state: &State,
        allow_revocations: usize,
        quiet: plan::Quiet,
    ) -> Result<Decision, CycleError> {
        let mut planner = plan::Planner::new(
            &state.clerk,
            &state.owned_ids,
            state.listing(),
            Utc::now(),
            &self.config.policy,
        );
        if quiet == plan::Quiet::Count {
            planner = planner
                .counting_quiet()
                .keeping_creates(self.config.drain.cycle_head());
        }
        let desired_rows = people::for_each(
            &self.pool,
            &self.config.relation,
            &self.config.target,
            |row, person| planner.add(&row, person),
        )
        .await?;
        let plan = planner.finish();
        let owned_pending = state
            .clerk
            .iter()
            .filter(|i| i.status == InvitationStatus::Pending)
            .filter(|i| state.owned_ids.contains(&i.id))
            .map(|i| i.id.as_str())
            .collect::<HashSet<_>>()
            .len();
        // Replacements revoke too: the guard and the protected list see them as well.
        let revocations = plan
            .revocations()
            .map(|(email, id)| Revocation {
                email: email.clone(),
                invitation_id: id.to_owned(),
            })
            .chain(replacements(&plan))
            .collect();
        let verdict = guard::check(
            revocations,
            guard::Context {
                desired_rows,
                owned_pending,
                allow: allow_revocations,
            },
            &self.config.guard,
        );
        Ok(Decision {
            plan,
            verdict,
            owned_pending,
            desired_rows,
        })
    }

    /// What the next cycle would do, without the lock and without writing anything.
    pub async fn preview(&self, allow_revocations: usize) -> Result<Preview, CycleError> {
        let state = self.read_state(false).await?;
        let Decision {
            plan,
            verdict,
            owned_pending,
            desired_rows,
        } = self
            .decide(&state, allow_revocations, plan::Quiet::Keep)
            .await?;
        let unsettled = Unsettled::of(&state.ledger, self.config.settle_after, Utc::now());
        drop(state);
        let budget = self.budget().await?;
        let queued = plan.queued();
        let awaiting_user_check = self.awaiting_user_check(&plan).await?;
        let invitable = queued - awaiting_user_check;
        let eta = budget.eta(invitable as u64, &self.config.budget, Utc::now());
        Ok(Preview {
            desired_rows,
            plan,
            verdict,
            budget,
            queued,
            awaiting_user_check,
            eta,
            owned_pending,
            unsettled,
        })
    }

    /// How many of the plan's creates Clerk has not recently said are not users.
    async fn awaiting_user_check(&self, plan: &Plan) -> Result<usize, sqlx::Error> {
        let max_age =
            i64::try_from(self.config.drain.user_check_max_age.as_secs()).unwrap_or(i64::MAX);
        let checked = users::fresh_not_users(&self.pool, &self.config.target, max_age).await?;
        // Those past a cycle's head of the queue are not looked at: they await a check.
        let unchecked = if checked.is_empty() {
            plan.creates().count()
        } else {
            plan.creates()
                .filter(|i| !checked.contains(&i.email))
                .count()
        };
        Ok(unchecked + plan.past_head())
    }

    /// Runs one cycle under the target's lock. Shutdown is checked between Clerk calls: the
    /// call in flight finishes and is recorded.
    pub async fn run_cycle(
        &self,
        request: &Request,
        shutdown: &CancellationToken,
    ) -> Result<CycleResult, CycleError> {
        let target = self.config.target.as_str();
        // A database that does not answer fails the cycle before it holds the lock: counted
        // like any other failed cycle.
        let acquired = lock::LeaderLock::try_acquire(&self.pool, target)
            .await
            .inspect_err(|_| count_cycle(runs::Outcome::Failed))?;
        let Some(mut leader) = acquired else {
            let holder = lock::holder(&self.pool, target).await.ok().flatten();
            tracing::info!(
                target,
                holder = holder.as_ref().map(lock::Holder::describe).as_deref(),
                "another invite-sync holds the lock for this target; this cycle is skipped"
            );
            // Someone was promised this run's id (POST /v1/sync): leave a record of it.
            if let Some(run_id) = request.run_id {
                runs::record_skipped(&self.pool, run_id, target, &request.trigger, &hostname())
                    .await?;
            }
            return Ok(CycleResult::Skipped { holder });
        };
        let metrics = crate::metrics::metrics();
        metrics.lock_held.set(1);
        let started = std::time::Instant::now();
        let outcome = self.locked_cycle(request, shutdown, &mut leader).await;
        if let Err(error) = &outcome {
            self.remember_clerk_block(error).await;
        }
        metrics
            .cycle_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.lock_held.set(0);
        count_cycle(match &outcome {
            Ok(report) => report.outcome,
            Err(_) => runs::Outcome::Failed,
        });
        if let Err(error) = leader.release().await {
            tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "the leader lock could not be released; it ends with its connection");
        }
        outcome.map(|report| CycleResult::Ran(Box::new(report)))
    }

    /// Keeps the block of a 429 that failed the cycle (the listing's) in the database, so
    /// that `status` and `/v1/status` show it; the creates' blocks are recorded where they
    /// are sent.
    async fn remember_clerk_block(&self, error: &CycleError) {
        let CycleError::Clerk(ClientError::RateLimited {
            operation,
            retry_after: Some(wait),
            sent: true,
            ..
        }) = error
        else {
            return;
        };
        let seconds = i64::try_from(wait.as_secs().max(1)).unwrap_or(i64::MAX);
        if let Err(error) =
            budget_store::record_block(&self.pool, &self.config.target, operation.as_str(), seconds)
                .await
        {
            tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "the block of Clerk's 429 could not be recorded");
        }
    }

    async fn locked_cycle(
        &self,
        request: &Request,
        shutdown: &CancellationToken,
        leader: &mut lock::LeaderLock,
    ) -> Result<Report, CycleError> {
        let target = self.config.target.as_str();
        let dry_run = request.dry_run.unwrap_or(self.config.dry_run);
        let run_id = request.run_id.unwrap_or_else(Uuid::new_v4);
        let abandoned = runs::close_abandoned(&self.pool, target).await?;
        if abandoned > 0 {
            tracing::warn!(runs = abandoned, "closed runs a stopped process left open");
        }
        let host = hostname();
        runs::start(&self.pool, run_id, target, &request.trigger, dry_run, &host).await?;
        let span =
            tracing::info_span!("cycle", run_id = %run_id, trigger = %request.trigger, dry_run);

        let mut executor = Executor {
            pool: &self.pool,
            clerk: &self.clerk,
            lock: leader,
            shutdown,
            target,
            run_id,
            reporter: self.config.reporter,
            settle_after: self.config.settle_after,
            drain: self.config.drain,
            tally: Tally::default(),
        };
        let result = self
            .cycle_steps(request, dry_run, &mut executor)
            .instrument(span)
            .await;
        let tally = executor.tally;
        // A cycle stopped before its plan leaves the gauges as the last plan set them:
        // zeros would clear the held-revocations alert.
        let planned = matches!(&result, Ok(done) if done.planned);
        let (outcome, summary, report) = match result {
            Ok(done) => {
                let report = self.report(run_id, dry_run, &done, tally);
                let outcome = outcome_of(done.stop.as_ref(), &report);
                let report = Report { outcome, ..report };
                (outcome, summary_of(&report, done.stop.as_ref()), report)
            }
            Err(error) => {
                let summary = runs::Summary {
                    errors: 1,
                    error: Some(error.to_string()),
                    ..runs::Summary::default()
                };
                runs::finish(&self.pool, run_id, runs::Outcome::Failed, &summary).await?;
                tracing::error!(run_id = %run_id, error = %error, "cycle failed");
                return Err(error);
            }
        };
        runs::finish(&self.pool, run_id, outcome, &summary).await?;
        if planned {
            record_gauges(&report);
        }
        log_summary(&report);
        Ok(report)
    }

    async fn cycle_steps(
        &self,
        request: &Request,
        dry_run: bool,
        executor: &mut Executor<'_>,
    ) -> Result<Done, CycleError> {
        if !dry_run {
            if let Err(stop) = executor.settle().await {
                return Ok(Done::stopped(stop));
            }
        }
        let state = self.read_state(request.full).await?;
        if !dry_run {
            self.store_observations(&state).await?;
            if let Some(since) = state.full_since {
                listings::record_full(&self.pool, &self.config.target, since).await?;
            }
        }
        let decision = self
            .decide(&state, request.allow_revocations, plan::Quiet::Count)
            .await?;
        let unsettled = Unsettled::of(&state.ledger, self.config.settle_after, Utc::now());
        drop(state);
        self.config.reporter.drift(&decision.plan, dry_run);
        self.log_verdict(&decision.verdict, dry_run);
        let budget = self.budget().await?;
        let mut done = Done::planned(&decision, budget, unsettled);
        if dry_run {
            // Nothing is sent: the whole queue is the backlog, as the next cycle finds it.
            executor.tally.backlog = decision.plan.queued();
            executor.tally.awaiting_user_check = self.awaiting_user_check(&decision.plan).await?;
            return Ok(done);
        }
        done.stop = self.execute(decision, budget, executor).await.err();
        // What the calls left, as the database records them.
        done.budget = self.budget().await.unwrap_or(done.budget);
        Ok(done)
    }

    /// Sends what the guard allowed: the revocations, then the creates. A stop leaves the
    /// creates not reached in the executor's backlog.
    async fn execute(
        &self,
        decision: Decision,
        budget: Budget,
        executor: &mut Executor<'_>,
    ) -> Result<(), Stop> {
        let Decision { plan, verdict, .. } = decision;
        // A replacement's old invitation is revoked only when the guard allows it and the
        // budget can send its new one now; otherwise it stays, reported as stale.
        let replacing: Vec<Revocation> = replacements(&plan).collect();
        // The creates move out of the plan: no second copy of the queue.
        let past_head = plan.past_head();
        let queue = plan.into_creates();
        let room = usize::try_from(budget.capacity_now()).unwrap_or(usize::MAX);
        let revocations = revocations_to_send(&verdict.allowed, &replacing, room);
        let gone = match executor.revoke(&revocations).await {
            Ok(gone) => gone,
            Err(stop) => {
                // The creates it did not get to wait, none of them checked.
                let waiting = queue.len() + past_head;
                executor.tally.backlog = waiting;
                executor.tally.awaiting_user_check = waiting;
                return Err(stop);
            }
        };
        // A replacement whose old invitation is still there gets no second one.
        let kept: HashSet<Email> = replacing
            .into_iter()
            .filter(|r| !gone.contains(&r.invitation_id))
            .map(|r| r.email)
            .collect();
        let queue: Vec<DesiredInvitee> = queue
            .into_iter()
            .filter(|i| !kept.contains(&i.email))
            .collect();
        let created = executor.create(queue, budget).await;
        // Those past the head wait for later cycles, unchecked.
        executor.tally.backlog += past_head;
        executor.tally.awaiting_user_check += past_head;
        created
    }

    /// Stores what Clerk's list shows of the ledger's invitations.
    async fn store_observations(&self, state: &State) -> Result<(), sqlx::Error> {
        let observed = plan::observe(&state.ledger, &state.clerk, state.listing());
        for (before, after) in state.ledger.iter().zip(&observed) {
            if before.state == after.state {
                continue;
            }
            match (after.state, after.clerk_invitation_id.as_deref()) {
                (LedgerState::Accepted, Some(id)) => {
                    ledger::record_accepted(&self.pool, &self.config.target, id, &after.email)
                        .await?
                }
                _ => ledger::set_state(&self.pool, after.id, after.state).await?,
            }
        }
        Ok(())
    }

    fn log_verdict(&self, verdict: &Verdict, dry_run: bool) {
        let reporter = self.config.reporter;
        for held in &verdict.held {
            tracing::error!(
                category = "revoke",
                outcome = "held",
                email = reporter.email(held.email.as_str()),
                invitation_id = %held.invitation_id,
                reason = verdict.reason.map(HoldReason::describe).unwrap_or(""),
                dry_run,
                "revocation held by the guard; release with `invite-sync sync --allow-revocations N`"
            );
        }
        for protected in &verdict.protected {
            tracing::warn!(
                category = "revoke",
                outcome = "protected",
                email = reporter.email(protected.email.as_str()),
                invitation_id = %protected.invitation_id,
                dry_run,
                "protected address: never revoked"
            );
        }
    }

    fn report(&self, run_id: Uuid, dry_run: bool, done: &Done, tally: Tally) -> Report {
        let now = Utc::now();
        // Only people known to be invitable: those awaiting a user check may be users.
        let invitable = tally.backlog.saturating_sub(tally.awaiting_user_check);
        let eta = done.budget.eta(invitable as u64, &self.config.budget, now);
        Report {
            run_id,
            desired_rows: done.desired_rows,
            owned_pending: done.owned_pending,
            outcome: runs::Outcome::Succeeded,
            dry_run,
            counts: done.counts.clone(),
            held_revocations: done.held,
            hold_reason: done.hold_reason,
            protected: done.protected,
            eta_seconds: eta.as_secs(),
            budget_left: done.budget,
            next_budget_at: (tally.backlog > 0).then(|| done.budget.next_slot_at(now)),
            unsettled: done
                .unsettled
                .and_new(tally.unsettled, self.config.settle_after, now),
            tally,
        }
    }
}

/// The revocations that replacements (stale, `on_change = "replace"`) ask for.
fn replacements(plan: &Plan) -> impl Iterator<Item = Revocation> + '_ {
    plan.items.iter().filter_map(|item| match item {
        Item::Replace {
            invitee,
            invitation_id,
            ..
        } => Some(Revocation {
            email: invitee.email.clone(),
            invitation_id: invitation_id.clone(),
        }),
        _ => None,
    })
}

/// The revocations sent this cycle: every one the guard allowed, but of the replacements
/// only as many as the budget (`room`) can invite again now, in the guard's order.
fn revocations_to_send(
    allowed: &[Revocation],
    replacing: &[Revocation],
    mut room: usize,
) -> Vec<Revocation> {
    let replaced: HashSet<&str> = replacing.iter().map(|r| r.invitation_id.as_str()).collect();
    allowed
        .iter()
        .filter(|r| {
            if !replaced.contains(r.invitation_id.as_str()) {
                return true;
            }
            let fits = room > 0;
            room = room.saturating_sub(1);
            fits
        })
        .cloned()
        .collect()
}

/// How a cycle that ran ended: stopped, holding revocations, with failures or doubts, or
/// with everything done.
fn outcome_of(stop: Option<&Stop>, report: &Report) -> runs::Outcome {
    match stop {
        Some(Stop::Shutdown) => runs::Outcome::Interrupted,
        Some(_) => runs::Outcome::Failed,
        None if report.held_revocations > 0 => runs::Outcome::Held,
        None if report.tally.failed > 0
            || !report.tally.errors.is_empty()
            || report.unsettled.creates > 0 =>
        {
            runs::Outcome::Partial
        }
        None => runs::Outcome::Succeeded,
    }
}

/// A plan, the guard's verdict on it, and what they were made from.
struct Decision {
    plan: Plan,
    verdict: Verdict,
    owned_pending: usize,
    desired_rows: usize,
}

/// What the steps of a cycle leave for its report.
#[derive(Default)]
struct Done {
    desired_rows: usize,
    owned_pending: usize,
    counts: BTreeMap<&'static str, usize>,
    held: usize,
    hold_reason: Option<HoldReason>,
    protected: usize,
    budget: Budget,
    /// The creates still unsettled when the cycle read the ledger (after settling).
    unsettled: Unsettled,
    /// Whether the cycle read its state and made a plan: one stopped while settling did
    /// not, and its figures above are not the target's.
    planned: bool,
    stop: Option<Stop>,
}

impl Done {
    /// What a plan and its verdict say, before anything is sent.
    fn planned(decision: &Decision, budget: Budget, unsettled: Unsettled) -> Done {
        let Decision { plan, verdict, .. } = decision;
        Done {
            desired_rows: decision.desired_rows,
            owned_pending: decision.owned_pending,
            counts: plan
                .counts()
                .into_iter()
                .map(|(c, n)| (c.as_str(), n))
                .collect(),
            held: verdict.held.len(),
            hold_reason: verdict.reason.filter(|_| !verdict.held.is_empty()),
            protected: verdict.protected.len(),
            budget,
            unsettled,
            planned: true,
            stop: None,
        }
    }

    /// A cycle stopped before it made its plan: it knows none of the target's figures.
    fn stopped(stop: Stop) -> Done {
        Done {
            stop: Some(stop),
            ..Done::default()
        }
    }
}

fn summary_of(report: &Report, stop: Option<&Stop>) -> runs::Summary {
    let mut counts = json!(report.counts);
    if let Some(map) = counts.as_object_mut() {
        for (key, value) in [
            ("created", report.tally.created),
            ("revoked", report.tally.revoked),
            ("adopted", report.tally.adopted),
            ("failed_items", report.tally.failed),
            ("bulk_calls", report.tally.bulk_calls),
            ("single_calls", report.tally.single_calls),
            ("awaiting_user_check", report.tally.awaiting_user_check),
            ("user_checks", report.tally.user_checks),
            ("user_check_calls", report.tally.user_check_calls),
            ("users_found", report.tally.users_found),
            ("unsettled_creates", report.unsettled.creates),
        ] {
            map.insert(key.to_owned(), json!(value));
        }
    }
    let mut errors = report.tally.errors.clone();
    if let Some(stop) = stop {
        errors.push(stop.to_string());
    }
    runs::Summary {
        counts,
        held_revocations: report.held_revocations as i32,
        errors: errors.len() as i32,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        budget_left: json!({
            "create_bulk_invitations": report.budget_left.bulk.left,
            "create_invitation": report.budget_left.single.left,
        }),
        backlog: report.tally.backlog as i32,
        backlog_eta_seconds: Some(report.eta_seconds as i64),
    }
}

fn count_cycle(outcome: runs::Outcome) {
    crate::metrics::metrics()
        .cycles
        .get_or_create(&crate::metrics::OutcomeLabel {
            outcome: outcome.as_str().to_owned(),
        })
        .inc();
}

fn record_gauges(report: &Report) {
    use crate::metrics::{CategoryLabel, EndpointLabel, Metrics};
    let metrics = crate::metrics::metrics();
    for category in plan::Category::ALL {
        let count = report.counts.get(category.as_str()).copied().unwrap_or(0);
        Metrics::gauge(
            &metrics.drift.get_or_create(&CategoryLabel {
                category: category.as_str().to_owned(),
            }),
            count,
        );
    }
    Metrics::gauge(&metrics.desired, report.desired_rows);
    Metrics::gauge(&metrics.owned_pending, report.owned_pending);
    Metrics::gauge(&metrics.backlog, report.tally.backlog);
    Metrics::gauge(
        &metrics.awaiting_user_check,
        report.tally.awaiting_user_check,
    );
    Metrics::gauge(&metrics.backlog_eta, report.eta_seconds as usize);
    Metrics::gauge(&metrics.held_revocations, report.held_revocations);
    Metrics::gauge(&metrics.unsettled_creates, report.unsettled.creates);
    metrics.unsettled_settle_at.set(
        report
            .unsettled
            .settles_at
            .map_or(0.0, |at| at.timestamp_millis() as f64 / 1000.0),
    );
    for (operation, endpoint) in [
        (Operation::CreateBulkInvitations, &report.budget_left.bulk),
        (Operation::CreateInvitation, &report.budget_left.single),
    ] {
        if let Some(until) = endpoint.blocked_until {
            metrics.clerk_blocked(operation.as_str(), until);
        }
    }
    for (endpoint, left) in [
        (
            Operation::CreateBulkInvitations,
            report.budget_left.bulk.left,
        ),
        (Operation::CreateInvitation, report.budget_left.single.left),
    ] {
        Metrics::gauge(
            &metrics.budget_left.get_or_create(&EndpointLabel {
                endpoint: endpoint.as_str().to_owned(),
            }),
            left as usize,
        );
    }
    if !report.dry_run
        && matches!(
            report.outcome,
            runs::Outcome::Succeeded | runs::Outcome::Held | runs::Outcome::Partial
        )
        && report.tally.errors.is_empty()
    {
        metrics
            .last_success
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    }
}

fn log_summary(report: &Report) {
    let counts = serde_json::to_string(&report.counts).unwrap_or_default();
    tracing::info!(
        run_id = %report.run_id,
        outcome = report.outcome.as_str(),
        dry_run = report.dry_run,
        counts = %counts,
        created = report.tally.created,
        revoked = report.tally.revoked,
        held_revocations = report.held_revocations,
        failed = report.tally.failed,
        backlog = report.tally.backlog,
        eta_seconds = report.eta_seconds,
        unsettled_creates = report.unsettled.creates,
        unsettled_settle_at = ?report.unsettled.settles_at.map(|at| at.to_rfc3339()),
        "cycle finished"
    );
    if let Some(at) = report.unsettled.settles_at {
        tracing::warn!(
            run_id = %report.run_id,
            unsettled_creates = report.unsettled.creates,
            settle_at = %at.to_rfc3339(),
            "creates whose outcome is unknown wait for clerk.settle_after_seconds before they are looked up; these people may have no invitation yet"
        );
    }
    if report.held_revocations > 0 {
        tracing::error!(
            run_id = %report.run_id,
            held_revocations = report.held_revocations,
            reason = report.hold_reason.map(HoldReason::describe).unwrap_or(""),
            "revocations held; review `invite-sync plan`, release with `invite-sync sync --allow-revocations N`"
        );
    }
}

use crate::store::lock::this_host as hostname;

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn revocation(id: &str) -> Revocation {
        Revocation {
            email: Email::parse(&format!("{id}@example.com")).expect("an address"),
            invitation_id: id.to_owned(),
        }
    }

    #[test]
    fn a_replacement_is_revoked_only_while_the_budget_can_invite_again() {
        let allowed: Vec<Revocation> = ["gone", "old1", "old2", "left", "old3"]
            .into_iter()
            .map(revocation)
            .collect();
        let replacing: Vec<Revocation> = ["old1", "old2", "old3"]
            .into_iter()
            .map(revocation)
            .collect();
        let ids = |room| -> Vec<String> {
            revocations_to_send(&allowed, &replacing, room)
                .into_iter()
                .map(|r| r.invitation_id)
                .collect()
        };
        assert_eq!(ids(0), ["gone", "left"]);
        assert_eq!(ids(2), ["gone", "old1", "old2", "left"]);
        assert_eq!(ids(10), ["gone", "old1", "old2", "left", "old3"]);
        assert!(revocations_to_send(&[], &replacing, 10).is_empty());
    }

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, hour, minute, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn the_first_cycle_ever_lists_in_full() {
        let daily = parse_schedule("0 0 3 * * *");
        assert!(daily.is_some());
        assert!(full_listing_due(daily.as_ref(), None, at(12, 0)));
    }

    #[test]
    fn a_full_listing_is_due_once_after_each_tick_of_the_full_schedule() {
        let daily = parse_schedule("0 0 3 * * *");
        let yesterday_noon = at(12, 0) - chrono::Duration::days(1);
        assert!(full_listing_due(
            daily.as_ref(),
            Some(yesterday_noon),
            at(3, 0)
        ));
        assert!(full_listing_due(
            daily.as_ref(),
            Some(yesterday_noon),
            at(3, 5)
        ));
        assert!(!full_listing_due(daily.as_ref(), Some(at(3, 5)), at(3, 10)));
        assert!(!full_listing_due(
            daily.as_ref(),
            Some(at(3, 5)),
            at(23, 55)
        ));
        assert!(!full_listing_due(
            daily.as_ref(),
            Some(yesterday_noon),
            at(2, 55)
        ));
    }

    #[test]
    fn a_schedule_that_cannot_be_read_lists_in_full_every_cycle() {
        assert!(parse_schedule("not cron").is_none());
        assert!(full_listing_due(None, Some(at(3, 5)), at(3, 10)));
    }
}
