//! The executor: carries out what the plan and the guard decided. It sends the guarded
//! revocations, then drains the create queue through Clerk's two create endpoints within the
//! hourly budget recorded in Postgres. Its decisions sit beside it, free of I/O: which create
//! call goes out next ([`next_call`](mod@next_call)) and how to read Clerk's refusal
//! ([`refusal`]); `settle` carries out the settling of creates whose outcome a crash or a
//! refusal left unknown.

pub mod next_call;
pub mod refusal;
mod settle;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clerk::client::MAX_BULK;
use crate::clerk::model::codes;
use crate::clerk::{
    budget::{self, Budget},
    ClerkClient, ClientError, Invitation,
};
use crate::domain::{DesiredInvitee, Email};
use crate::reconcile::guard::Revocation;
use crate::reconcile::redact::Reporter;
use crate::store::{self, budget as budget_store, ledger, lock::LeaderLock, users};
use crate::telemetry::Chain;

use next_call::{halves, next_call, CreateEndpoint, Outbox};
use refusal::{attribute, backoff_after, classify, users_among, Fate, Refusal};

/// Why the executor stopped before its work was done.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("shutdown requested")]
    Shutdown,
    #[error("the leader lock was lost: {0}")]
    LockLost(store::StoreError),
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("Clerk refused the credentials: {0}")]
    Unauthorized(ClientError),
}

/// What the executor did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub revoked: usize,
    pub created: usize,
    pub adopted: usize,
    pub failed: usize,
    /// Creates whose outcome is unknown: settled next cycle.
    pub unsettled: usize,
    pub bulk_calls: usize,
    pub single_calls: usize,
    /// Creates left for a later cycle (those awaiting a user check included); in a dry run,
    /// the whole queue.
    pub backlog: usize,
    /// Of the backlog, people not yet known not to be users.
    pub awaiting_user_check: usize,
    /// Addresses looked up in Clerk's users before a create, and the calls that took.
    pub user_checks: usize,
    pub user_check_calls: usize,
    /// Of those, the addresses that belong to users (no create is spent on them).
    pub users_found: usize,
    pub errors: Vec<String>,
}

/// How the executor drains the create queue.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub limits: budget::Limits,
    /// How long a cycle waits for the next create slot before it ends and the service
    /// wakes it again when the slot frees.
    pub linger: Duration,
    /// How long Clerk's "not a user" answer holds before it is asked again.
    pub user_check_max_age: Duration,
    /// At most this many addresses are looked up per cycle.
    pub user_checks_per_cycle: usize,
}

impl Drain {
    /// How many creates, first in queue order, a cycle holds: what it may look up, and two
    /// windows' worth of invitations; the rest of a backlog waits in the roster.
    pub fn cycle_head(&self) -> usize {
        let window = usize::try_from(self.limits.bulk_calls)
            .unwrap_or(usize::MAX)
            .saturating_mul(MAX_BULK)
            .saturating_add(usize::try_from(self.limits.single_calls).unwrap_or(usize::MAX));
        self.user_checks_per_cycle
            .saturating_add(window.saturating_mul(2))
    }

    pub fn new(limits: budget::Limits, user_check_max_age: Duration, per_cycle: usize) -> Drain {
        Drain {
            limits,
            // A quarter of the window, at most 30 s: slots that free one after another (as
            // they were spent) are used in the same cycle, and a cycle never waits long.
            linger: (limits.window / 4).min(Duration::from_secs(30)),
            user_check_max_age,
            user_checks_per_cycle: per_cycle,
        }
    }
}

pub struct Executor<'a> {
    pub pool: &'a PgPool,
    pub clerk: &'a ClerkClient,
    pub lock: &'a mut LeaderLock,
    pub shutdown: &'a CancellationToken,
    pub target: &'a str,
    pub run_id: Uuid,
    pub reporter: Reporter,
    pub settle_after: std::time::Duration,
    pub drain: Drain,
    pub tally: Tally,
}

/// What became of one create call.
enum Sent {
    /// Done; carry on.
    Done,
    /// Members to send again: each batch as one call, the others one by one.
    Retry {
        batches: Vec<Vec<DesiredInvitee>>,
        singly: Vec<DesiredInvitee>,
    },
    /// The endpoint cannot be used any more this cycle.
    EndpointClosed(Vec<DesiredInvitee>),
    /// Creates stop this cycle (Clerk unreachable, or an outcome unknown).
    Halt(Vec<DesiredInvitee>),
}

/// How draining the outbox ended without a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Everyone was sent, or the budget is spent until later.
    Ended,
    /// Creates stopped for this cycle (Clerk unreachable, or an outcome unknown).
    Halted,
}

impl Executor<'_> {
    async fn checkpoint(&mut self) -> Result<(), Stop> {
        if self.shutdown.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        self.lock.ensure_held().await.map_err(Stop::LockLost)
    }

    /// Revokes what the guard allowed. Returns the invitation ids that are gone.
    pub async fn revoke(&mut self, revocations: &[Revocation]) -> Result<Vec<String>, Stop> {
        let mut gone = Vec::new();
        for revocation in revocations {
            self.checkpoint().await?;
            let email = self.reporter.email(revocation.email.as_str());
            let id = revocation.invitation_id.as_str();
            // Gone already counts as done: the goal is that the link no longer works.
            let outcome = match self.clerk.revoke_invitation(id).await {
                Ok(_) => Ok("revoked"),
                Err(error)
                    if error.has_code(codes::RESOURCE_NOT_FOUND)
                        || error.has_code(codes::INVITATION_ALREADY_REVOKED) =>
                {
                    Ok("already_gone")
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(outcome) => {
                    ledger::mark_revoked_by_us(self.pool, self.target, id).await?;
                    self.tally.revoked += 1;
                    gone.push(id.to_owned());
                    crate::metrics::metrics().action("revoke", outcome);
                    tracing::info!(
                        action = "revoke",
                        outcome,
                        email,
                        invitation_id = id,
                        "revoked"
                    );
                }
                Err(error) if error.has_code(codes::INVITATION_ALREADY_ACCEPTED) => {
                    ledger::record_accepted(self.pool, self.target, id, &revocation.email).await?;
                    crate::metrics::metrics().action("revoke", "accepted");
                    tracing::info!(
                        action = "revoke",
                        outcome = "accepted",
                        email,
                        invitation_id = id,
                        "already accepted; left alone"
                    );
                }
                Err(error) => {
                    if error.status() == Some(401) || error.status() == Some(403) {
                        return Err(Stop::Unauthorized(error));
                    }
                    self.tally.failed += 1;
                    self.note_error("revoke", &error);
                    crate::metrics::metrics().action("revoke", "failed");
                    tracing::warn!(action = "revoke", outcome = "failed", email, invitation_id = id, error.message = %self.shown(&error), error.cause_chain = %self.shown_chain(&error), "revoke failed");
                    if matches!(
                        error,
                        ClientError::RateLimited { .. } | ClientError::NeverSent { .. }
                    ) {
                        break;
                    }
                }
            }
        }
        Ok(gone)
    }

    /// Looks up, in calls of 100, the queued people Clerk has not recently said are not
    /// users (at most `user_checks_per_cycle` of them, in queue order): users are recorded
    /// with their Clerk user id and leave the queue; the rest are recorded as checked.
    /// Returns the queue of people known to be invitable, in queue order.
    async fn check_users(
        &mut self,
        queue: Vec<DesiredInvitee>,
    ) -> Result<VecDeque<DesiredInvitee>, Stop> {
        let max_age = i64::try_from(self.drain.user_check_max_age.as_secs()).unwrap_or(i64::MAX);
        let mut invitable = users::fresh_not_users(self.pool, self.target, max_age).await?;
        // Those this cycle found to be users: they leave the queue, and await nothing.
        let mut found_users: HashSet<Email> = HashSet::new();
        let unchecked: Vec<Email> = queue
            .iter()
            .filter(|m| !invitable.contains(&m.email))
            .map(|m| m.email.clone())
            .take(self.drain.user_checks_per_cycle)
            .collect();
        for chunk in unchecked.chunks(crate::clerk::client::USERS_PER_LOOKUP) {
            self.checkpoint().await?;
            let addresses: Vec<String> = chunk.iter().map(|e| e.as_str().to_owned()).collect();
            self.tally.user_check_calls += 1;
            let found = match self.clerk.users_by_email(&addresses).await {
                Ok(found) => found,
                Err(error) => {
                    if matches!(error.status(), Some(401 | 403))
                        || matches!(error, ClientError::InvalidKey(_))
                    {
                        return Err(Stop::Unauthorized(error));
                    }
                    // The rest wait, unchecked: no create is sent for them this cycle.
                    self.note_error("user lookup", &error);
                    break;
                }
            };
            let (known, not_users) = users_among(chunk, &found);
            users::record_users(self.pool, self.target, &known, "lookup").await?;
            users::record_not_users(self.pool, self.target, &not_users).await?;
            self.tally.user_checks += chunk.len();
            self.tally.users_found += known.len();
            let metrics = crate::metrics::metrics();
            for user in &known {
                metrics.action("user_check", "user");
                tracing::info!(
                    action = "user_check",
                    outcome = "user",
                    email = self.reporter.email(user.email.as_str()),
                    "already a user; no invitation is sent"
                );
            }
            for _ in &not_users {
                metrics.action("user_check", "not_user");
            }
            invitable.extend(not_users);
            found_users.extend(known.into_iter().map(|user| user.email));
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = queue
            .into_iter()
            .partition(|m| invitable.contains(&m.email));
        self.tally.awaiting_user_check = waiting
            .iter()
            .filter(|m| !found_users.contains(&m.email))
            .count();
        Ok(ready.into())
    }

    /// Sends the queue, oldest first, while the budget lasts: everyone is first known not to
    /// be a user; a call goes out as soon as a slot frees on either endpoint, waiting for a
    /// slot within the cycle while one frees within `linger`.
    pub async fn create(&mut self, queue: Vec<DesiredInvitee>, budget: Budget) -> Result<(), Stop> {
        let total = queue.len();
        let queue = match self.check_users(queue).await {
            Ok(queue) => queue,
            Err(stop) => {
                self.tally.backlog = total;
                self.tally.awaiting_user_check = total;
                return Err(stop);
            }
        };
        let mut outbox = Outbox {
            queue,
            ..Outbox::default()
        };
        let drained = self.drain(&mut outbox, budget).await;
        // Left for a later cycle: what was not sent, and those awaiting a user check.
        self.tally.backlog = outbox.len() + self.tally.awaiting_user_check;
        if let Ok(Drained::Halted) = drained {
            tracing::warn!(
                backlog = self.tally.backlog,
                "creates stopped for this cycle"
            );
        }
        drained.map(|_| ())
    }

    /// Sends what the outbox holds while the budget lasts; what is not sent stays in it.
    async fn drain(&mut self, outbox: &mut Outbox, mut budget: Budget) -> Result<Drained, Stop> {
        while !outbox.is_empty() {
            if budget.bulk.left == 0 {
                outbox.unbatch();
            }
            let single_soon = if budget.single.left == 0 {
                self.frees_soon(budget.single.frees_at).await?
            } else {
                false
            };
            let Some(call) = next_call(
                outbox.waiting(),
                budget.bulk.left,
                budget.single.left,
                single_soon,
            ) else {
                match self.wait_for_slot(&budget).await? {
                    Some(fresh) => {
                        budget = fresh;
                        continue;
                    }
                    None => break,
                }
            };
            let (endpoint, members) = outbox.take(call);
            if members.is_empty() {
                continue;
            }
            // Recorded only when it can go out at once, so the budget's window is Clerk's.
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = self.clerk.pace() => {}
            }
            if let Err(stop) = self.checkpoint().await {
                outbox.queue.extend(members);
                return Err(stop);
            }
            match endpoint {
                CreateEndpoint::Bulk => budget.bulk.left -= 1,
                CreateEndpoint::Single => budget.single.left -= 1,
            }
            match self.send(endpoint, members).await? {
                Sent::Done => {}
                Sent::Retry { batches, singly } => {
                    outbox.batches.extend(batches);
                    outbox.singly.extend(singly);
                }
                Sent::EndpointClosed(back) => {
                    match endpoint {
                        CreateEndpoint::Bulk => budget.bulk.left = 0,
                        CreateEndpoint::Single => budget.single.left = 0,
                    }
                    outbox.put_back(back);
                }
                Sent::Halt(back) => {
                    outbox.put_back(back);
                    return Ok(Drained::Halted);
                }
            }
        }
        Ok(Drained::Ended)
    }

    /// Whether an endpoint that frees at `frees_at` does so within `linger`.
    async fn frees_soon(&self, frees_at: Option<DateTime<Utc>>) -> Result<bool, sqlx::Error> {
        let Some(frees_at) = frees_at else {
            return Ok(false);
        };
        let now = store::now(self.pool).await?;
        Ok((frees_at - now).to_std().unwrap_or_default() <= self.drain.linger)
    }

    /// Waits, within the cycle, for the next create slot when it frees within `linger`, and
    /// returns the budget then; `None` when it frees later (the service wakes a cycle then).
    async fn wait_for_slot(&mut self, budget: &Budget) -> Result<Option<Budget>, Stop> {
        let Some(frees_at) = budget.next_free_at() else {
            return Ok(None);
        };
        let now = store::now(self.pool).await?;
        let wait = (frees_at - now).to_std().unwrap_or_default();
        if wait > self.drain.linger {
            return Ok(None);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
            _ = tokio::time::sleep(wait) => {}
        }
        self.checkpoint().await?;
        let fresh = budget_store::current(self.pool, self.target, self.drain.limits).await?;
        Ok(Some(fresh))
    }

    /// One create call: recorded and marked `sending` before it goes out, settled after.
    async fn send(
        &mut self,
        endpoint: CreateEndpoint,
        members: Vec<DesiredInvitee>,
    ) -> Result<Sent, Stop> {
        let call = self.record_sending(endpoint, &members).await?;
        match endpoint {
            CreateEndpoint::Bulk => self.tally.bulk_calls += 1,
            CreateEndpoint::Single => self.tally.single_calls += 1,
        }
        let result = match endpoint {
            CreateEndpoint::Bulk => {
                let requests: Vec<_> = members.iter().map(|m| m.request.clone()).collect();
                self.clerk.create_bulk_invitations(&requests).await
            }
            CreateEndpoint::Single => self
                .clerk
                .create_invitation(&members[0].request)
                .await
                .map(|invitation| vec![invitation]),
        };
        match result {
            Ok(invitations) => {
                budget_store::record_status(self.pool, call.id, 200).await?;
                self.created(endpoint, &members, call.ledger_ids, invitations)
                    .await?;
                Ok(Sent::Done)
            }
            Err(error) => self.refused(endpoint, call, members, error).await,
        }
    }

    /// Records the call against the budget and its members as `sending`, in one transaction.
    async fn record_sending(
        &self,
        endpoint: CreateEndpoint,
        members: &[DesiredInvitee],
    ) -> Result<Call, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let sent_at = store::now(&mut *tx).await?;
        let id = budget_store::record_call(
            &mut *tx,
            self.target,
            endpoint.operation().as_str(),
            members.len() as i32,
            Some(self.run_id),
        )
        .await?;
        let mut ledger_ids = Vec::with_capacity(members.len());
        for member in members {
            ledger_ids
                .push(ledger::start_sending(&mut tx, self.target, member, id, self.run_id).await?);
        }
        tx.commit().await?;
        Ok(Call {
            id,
            sent_at,
            ledger_ids,
        })
    }

    /// Records the invitations Clerk made for the members; one its answer left out is
    /// settled next cycle.
    async fn created(
        &mut self,
        endpoint: CreateEndpoint,
        members: &[DesiredInvitee],
        ledger_ids: Vec<i64>,
        invitations: Vec<Invitation>,
    ) -> Result<(), Stop> {
        let endpoint_name = endpoint.operation().as_str();
        let mut by_email: HashMap<String, Vec<Invitation>> = HashMap::new();
        for invitation in invitations {
            by_email
                .entry(invitation.email_address.trim().to_lowercase())
                .or_default()
                .push(invitation);
        }
        for (member, ledger_id) in members.iter().zip(ledger_ids) {
            let email = self.reporter.email(member.email.as_str());
            match by_email.get_mut(member.email.as_str()).and_then(Vec::pop) {
                Some(invitation) => {
                    ledger::mark_created(self.pool, ledger_id, &invitation).await?;
                    self.tally.created += 1;
                    let metrics = crate::metrics::metrics();
                    metrics.action("create", "created");
                    if let Some(due) = [member.not_before, member.created_at]
                        .into_iter()
                        .flatten()
                        .max()
                    {
                        let waited = (Utc::now() - due).to_std().unwrap_or_default();
                        metrics.invitation_wait.observe(waited.as_secs_f64());
                    }
                    tracing::info!(action = "create", outcome = "created", endpoint = endpoint_name, email, invitation_id = %invitation.id, "invited");
                }
                None => {
                    // Clerk answered without this address: the lookup next cycle settles it.
                    self.tally.unsettled += 1;
                    crate::metrics::metrics().action("create", "unconfirmed");
                    tracing::warn!(
                        action = "create",
                        outcome = "unconfirmed",
                        endpoint = endpoint_name,
                        email,
                        "Clerk's answer did not include this address; settled next cycle"
                    );
                }
            }
        }
        Ok(())
    }

    /// Takes a refused create apart.
    async fn refused(
        &mut self,
        endpoint: CreateEndpoint,
        call: Call,
        members: Vec<DesiredInvitee>,
        error: ClientError,
    ) -> Result<Sent, Stop> {
        let endpoint_name = endpoint.operation().as_str();
        if let Some(status) = error.status() {
            budget_store::record_status(self.pool, call.id, i32::from(status)).await?;
        }
        match classify(&error) {
            Refusal::NeverSent => {
                budget_store::forget_call(self.pool, call.id).await?;
                ledger::forget(self.pool, &call.ledger_ids).await?;
                self.note_error("create", &error);
                Ok(Sent::Halt(members))
            }
            Refusal::RateLimited { sent, wait } => {
                if !sent {
                    // The client's own record of the block stopped it: Clerk saw nothing.
                    budget_store::forget_call(self.pool, call.id).await?;
                }
                let until = budget_store::record_block(
                    self.pool,
                    self.target,
                    endpoint_name,
                    i64::try_from(wait).unwrap_or(i64::MAX),
                )
                .await?;
                ledger::forget(self.pool, &call.ledger_ids).await?;
                tracing::warn!(endpoint = endpoint_name, blocked_until = %until.to_rfc3339(), "Clerk rate-limited the endpoint; it is not called before the block ends");
                Ok(Sent::EndpointClosed(members))
            }
            Refusal::Unauthorized { forget } => {
                if forget {
                    ledger::forget(self.pool, &call.ledger_ids).await?;
                }
                Err(Stop::Unauthorized(error))
            }
            Refusal::OutcomeUnknown => {
                self.tally.unsettled += members.len();
                self.note_error("create", &error);
                tracing::warn!(endpoint = endpoint_name, members = members.len(), error.message = %self.shown(&error), error.cause_chain = %self.shown_chain(&error), "the outcome of a create is unknown; it is settled by a lookup next cycle, not sent again");
                Ok(Sent::Halt(Vec::new()))
            }
            Refusal::Refused { terminal } => {
                self.refused_members(endpoint, call, members, &error, terminal)
                    .await
            }
        }
    }

    /// Clerk refused the call and applied nothing: each member meets the fate the
    /// refusal names for them.
    async fn refused_members(
        &mut self,
        endpoint: CreateEndpoint,
        call: Call,
        members: Vec<DesiredInvitee>,
        error: &ClientError,
        terminal: bool,
    ) -> Result<Sent, Stop> {
        let endpoint_name = endpoint.operation().as_str();
        let fates = attribute(error.clerk_errors(), &members, endpoint);
        let unnamed_bulk = fates.contains(&Fate::LookUp);
        let mut batch = Vec::new();
        let mut unnamed = Vec::new();
        for ((member, ledger_id), fate) in members.into_iter().zip(call.ledger_ids).zip(fates) {
            let email = self.reporter.email(member.email.as_str());
            match fate {
                Fate::Duplicate => {
                    ledger::forget(self.pool, &[ledger_id]).await?;
                    self.adopt_pending(&member.email).await?;
                    crate::metrics::metrics().action("create", "duplicate");
                    tracing::info!(
                        action = "create",
                        outcome = "duplicate",
                        endpoint = endpoint_name,
                        email,
                        "a pending invitation already exists; recorded, not sent again"
                    );
                }
                Fate::User => {
                    ledger::forget(self.pool, &[ledger_id]).await?;
                    let user = users::KnownUser {
                        email: member.email.clone(),
                        clerk_user_id: None,
                    };
                    users::record_users(self.pool, self.target, &[user], "form_identifier_exists")
                        .await?;
                    crate::metrics::metrics().action("create", "already_user");
                    tracing::info!(
                        action = "create",
                        outcome = "already_user",
                        endpoint = endpoint_name,
                        email,
                        "already a user; marked, no budget spent on them again"
                    );
                }
                Fate::Resend => {
                    ledger::forget(self.pool, &[ledger_id]).await?;
                    batch.push(member);
                }
                Fate::LookUp => {
                    if self
                        .look_up_unnamed(ledger_id, &member, call.sent_at, endpoint_name)
                        .await?
                    {
                        unnamed.push(member);
                    }
                }
                Fate::Failed => {
                    let code = error
                        .clerk_errors()
                        .first()
                        .map(|e| e.code.as_str())
                        .unwrap_or("http_error");
                    let attempts = self.attempts(ledger_id).await?;
                    let next = (!terminal).then(|| backoff_after(attempts, Utc::now()));
                    let shown = self.shown(error);
                    ledger::mark_failed(self.pool, ledger_id, code, &shown, terminal, next).await?;
                    self.tally.failed += 1;
                    crate::metrics::metrics().action("create", "failed");
                    tracing::warn!(action = "create", outcome = "failed", endpoint = endpoint_name, email, code, terminal, error.message = %shown, error.cause_chain = %self.shown_chain(error), "create refused");
                }
            }
        }
        if unnamed_bulk {
            tracing::info!(members = unnamed.len(), error.message = %self.shown(error), error.cause_chain = %self.shown_chain(error), "a bulk create was refused for a reason no address was named for; its members go again in two halves");
        }
        let (mut batches, singly) = halves(unnamed);
        if !batch.is_empty() {
            batches.push(batch);
        }
        Ok(Sent::Retry { batches, singly })
    }

    async fn attempts(&self, ledger_id: i64) -> Result<i32, sqlx::Error> {
        ledger::attempts(self.pool, ledger_id).await
    }

    /// An error as logs and the run record show it: Clerk's messages name the addresses
    /// they refuse, which `log.redact_emails` hides.
    fn shown(&self, error: &ClientError) -> String {
        self.reporter.scrub(&error.to_string())
    }

    /// An error and its causes, as [`Chain`] writes them, scrubbed like [`Executor::shown`].
    fn shown_chain(&self, error: &ClientError) -> String {
        self.reporter.scrub(&Chain(error).to_string())
    }

    fn note_error(&mut self, what: &str, error: &ClientError) {
        let shown = self.shown(error);
        tracing::warn!(what, error.message = %shown, error.cause_chain = %self.shown_chain(error), "Clerk call failed");
        self.tally.errors.push(format!("{what}: {shown}"));
    }
}

/// A create call as the database recorded it before it went out.
struct Call {
    id: i64,
    sent_at: DateTime<Utc>,
    /// The `sending` ledger rows of its members, in member order.
    ledger_ids: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queued invitees `p0@example.com`, `p1@example.com`, ..., for the decisions' tests.
    pub(super) fn invitees(n: usize) -> Vec<DesiredInvitee> {
        (0..n)
            .map(|i| {
                let row = crate::domain::DesiredRow::new(format!("p{i}@example.com"));
                DesiredInvitee::from_row(&row, &crate::domain::RowDefaults::default())
                    .expect("a valid row")
            })
            .collect()
    }

    #[test]
    fn a_cycle_holds_what_it_may_look_up_and_two_windows_of_invitations() {
        let limits = budget::Limits::default();
        let drain = Drain::new(limits, Duration::from_secs(3600), 500);
        // 25 bulk calls of 10 and 100 single calls a window.
        assert_eq!(drain.cycle_head(), 500 + 2 * (25 * 10 + 100));
        assert_eq!(
            Drain::new(limits, Duration::ZERO, usize::MAX).cycle_head(),
            usize::MAX,
            "no overflow"
        );
    }

    #[test]
    fn a_cycle_lingers_a_quarter_of_the_window_and_never_more_than_thirty_seconds() {
        let drain = |window: u64| {
            let limits = budget::Limits {
                window: Duration::from_secs(window),
                ..budget::Limits::default()
            };
            Drain::new(limits, Duration::ZERO, 0).linger
        };
        assert_eq!(drain(3600), Duration::from_secs(30));
        assert_eq!(drain(60), Duration::from_secs(15));
    }
}
