//! One reconcile cycle: read the roster, Clerk and the ledger; plan; guard; execute; report.
//! Level-triggered: every cycle recomputes the plan from the whole current state.

pub mod execute;
pub mod explain;
pub mod guard;
pub mod memberships;
pub mod observation;
pub mod plan;
pub mod redact;
pub mod report;
pub mod schedule;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::clerk::budget::{self, Budget};
use crate::clerk::{ClerkClient, ClientError, Invitation, InvitationStatus};
use crate::config::Settings;
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::store::{
    self, budget as budget_store, desired, ledger, listings, lock, people, runs, users,
};
use crate::telemetry::Chain;
use execute::{Executor, Stop, Tally};
use guard::{Revocation, Verdict};
use plan::{Item, Plan, Policy};
use redact::Reporter;
use report::{count_cycle, log_summary, outcome_of, record_gauges, summary_of, Done};
pub use report::{Report, Unsettled};
use schedule::{full_listing_due, parse_schedule};

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
    /// The membership roster and `[organizations]`.
    pub memberships: memberships::Config,
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
            memberships: memberships::Config::from_settings(settings),
        }
    }
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

/// The end of a cycle.
#[derive(Debug, Clone)]
pub enum CycleResult {
    /// Another process holds the lock.
    Skipped {
        holder: Option<lock::Holder>,
    },
    Ran(Box<Report>),
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
        let mut planner = plan::planner::Planner::new(
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
        let (verdict, owned_pending) = self.judge(state, &plan, desired_rows, allow_revocations);
        Ok(Decision {
            plan,
            verdict,
            owned_pending,
            desired_rows,
        })
    }

    /// The guard's verdict on a plan's revocations (replacements revoke too: the guard and
    /// the protected list see them as well), and how many pending invitations are ours.
    fn judge(
        &self,
        state: &State,
        plan: &Plan,
        desired_rows: usize,
        allow_revocations: usize,
    ) -> (Verdict, usize) {
        let owned_pending = state
            .clerk
            .iter()
            .filter(|i| i.status == InvitationStatus::Pending)
            .filter(|i| state.owned_ids.contains(&i.id))
            .map(|i| i.id.as_str())
            .collect::<HashSet<_>>()
            .len();
        let revocations = plan
            .revocations()
            .map(|(email, id)| Revocation {
                email: email.clone(),
                invitation_id: id.to_owned(),
            })
            .chain(replacements(plan))
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
        (verdict, owned_pending)
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
        // What the instance guard let through of `--allow-revocations N`: the membership
        // guard gets the rest, so N is one allowance for the cycle.
        let mut released = 0;
        let result = self
            .cycle_steps(request, dry_run, &mut executor, &mut released)
            .instrument(span)
            .await;
        let tally = executor.tally;
        // Organization memberships, under the same lock, once the instance part ran whole.
        let memberships = match &result {
            Ok(done) if done.stop.is_none() => {
                let allow = request.allow_revocations.saturating_sub(released);
                let report = memberships::run(self, allow, dry_run, run_id, leader, shutdown).await;
                memberships::overview::record_metrics(self, &report).await;
                report
            }
            _ => memberships::MembershipReport::default(),
        };
        // A cycle stopped before its plan leaves the gauges as the last plan set them:
        // zeros would clear the held-revocations alert.
        let planned = matches!(&result, Ok(done) if done.planned);
        let (outcome, summary, report) = match result {
            Ok(done) => {
                let report = done.report(
                    run_id,
                    dry_run,
                    tally,
                    &self.config.budget,
                    self.config.settle_after,
                    Utc::now(),
                );
                let report = Report {
                    memberships,
                    ..report
                };
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
            record_gauges(&report, Utc::now());
        }
        log_summary(&report);
        Ok(report)
    }

    /// `released` is set to how many held revocations `--allow-revocations` let through.
    async fn cycle_steps(
        &self,
        request: &Request,
        dry_run: bool,
        executor: &mut Executor<'_>,
        released: &mut usize,
    ) -> Result<Done, CycleError> {
        if !dry_run {
            if let Err(stop) = executor.settle().await {
                return Ok(Done::stopped(stop));
            }
        }
        let state = self.read_state(request.full).await?;
        if !dry_run {
            observation::record(
                &self.pool,
                &self.config.target,
                &state.ledger,
                &state.clerk,
                state.listing(),
            )
            .await?;
            if let Some(since) = state.full_since {
                listings::record_full(&self.pool, &self.config.target, since).await?;
            }
        }
        let decision = self
            .decide(&state, request.allow_revocations, plan::Quiet::Count)
            .await?;
        *released = decision.verdict.released;
        let unsettled = Unsettled::of(&state.ledger, self.config.settle_after, Utc::now());
        drop(state);
        report::log_drift(self.config.reporter, &decision.plan, dry_run);
        report::log_verdict(self.config.reporter, &decision.verdict, dry_run);
        let budget = self.budget().await?;
        let mut done = Done::planned(
            &decision.plan,
            &decision.verdict,
            decision.desired_rows,
            decision.owned_pending,
            budget,
            unsettled,
        );
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

/// A plan, the guard's verdict on it, and what they were made from.
struct Decision {
    plan: Plan,
    verdict: Verdict,
    owned_pending: usize,
    desired_rows: usize,
}

use crate::store::lock::this_host as hostname;

#[cfg(test)]
mod tests {
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
}
