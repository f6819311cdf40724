//! The executor: sends the guarded revocations, then drains the create queue through
//! Clerk's two create endpoints within the hourly budget recorded in Postgres.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clerk::model::codes;
use crate::clerk::{
    budget::{self, Budget},
    ClerkClient, ClientError, Invitation, InvitationStatus, Operation,
};
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::reconcile::guard::Revocation;
use crate::reconcile::report::Reporter;
use crate::store::{self, budget as budget_store, ledger, lock::LeaderLock, users};

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
    pub marked_users: usize,
    pub failed: usize,
    /// Creates whose outcome is unknown: settled next cycle.
    pub unsettled: usize,
    pub bulk_calls: usize,
    pub single_calls: usize,
    /// Creates left for a later cycle (those awaiting a user check included).
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

/// How a create call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Bulk,
    Single,
}

impl Endpoint {
    fn operation(self) -> Operation {
        match self {
            Endpoint::Bulk => Operation::CreateBulkInvitations,
            Endpoint::Single => Operation::CreateInvitation,
        }
    }
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

/// Which create call goes out next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextCall {
    /// A batch left by a refused bulk call, as one bulk call.
    RetryBatch,
    /// One that must go alone, as a single call.
    Alone,
    /// The next `n` of the queue as one bulk call.
    Bulk(usize),
    /// The next one of the queue as a single call.
    Single,
}

/// What waits to be sent, for [`next_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub retry_batches: usize,
    pub alone: usize,
    pub queue: usize,
}

/// Picks the next create call so the backlog drains soonest: every free slot of either
/// endpoint is used while anyone waits; bulk calls of 10 while 10 or more wait, single calls
/// for the rest, and a bulk call for stragglers when no single slot is left and none frees
/// soon (`single_soon`: within the cycle's wait). `None` when nothing can go out now.
pub fn next_call(
    waiting: Waiting,
    bulk_left: u32,
    single_left: u32,
    single_soon: bool,
) -> Option<NextCall> {
    if waiting.retry_batches > 0 && bulk_left > 0 {
        return Some(NextCall::RetryBatch);
    }
    if waiting.alone > 0 && single_left > 0 {
        return Some(NextCall::Alone);
    }
    match waiting.queue {
        0 => None,
        n if n >= MAX_BULK && bulk_left > 0 => Some(NextCall::Bulk(MAX_BULK)),
        _ if single_left > 0 => Some(NextCall::Single),
        n if bulk_left > 0 && !single_soon => Some(NextCall::Bulk(n.min(MAX_BULK))),
        _ => None,
    }
}

/// The most invitations one bulk call carries.
pub const MAX_BULK: usize = 10;

/// Splits the members of a bulk call Clerk refused without naming whom for into two halves
/// sent apart: a cause among them is found in at most 2 x ceil(log2 n) more calls (8 for a
/// full bulk of 10 with one cause), each half that succeeds inviting its members at once,
/// where sending them one by one cost n single calls. A half of one goes as a single call.
pub fn halves(mut members: Vec<DesiredInvitee>) -> (Vec<Vec<DesiredInvitee>>, Vec<DesiredInvitee>) {
    if members.len() <= 1 {
        return (Vec::new(), members);
    }
    let second = members.split_off(members.len().div_ceil(2));
    let mut batches = Vec::new();
    let mut singly = Vec::new();
    for half in [members, second] {
        if half.len() == 1 {
            singly.extend(half);
        } else {
            batches.push(half);
        }
    }
    (batches, singly)
}

impl Executor<'_> {
    async fn checkpoint(&mut self) -> Result<(), Stop> {
        if self.shutdown.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        self.lock.ensure_held().await.map_err(Stop::LockLost)
    }

    /// Settles creates left `sending` by a crash or an unknown outcome, once
    /// `settle_after` has passed since they were sent: adopts the invitation Clerk made for
    /// the address, or forgets the row so the plan queues the person again. Younger ones
    /// wait (the plan reports them unsettled), since Clerk may still be working on them.
    pub async fn settle(&mut self) -> Result<(), Stop> {
        let entries = ledger::live(self.pool, self.target).await?;
        let now = store::now(self.pool).await?;
        let settle_after = chrono::Duration::from_std(self.settle_after).unwrap_or_default();
        let due: Vec<&LedgerEntry> = entries
            .iter()
            .filter(|e| e.state == LedgerState::Sending)
            .filter(|e| e.sent_at.is_none_or(|sent| sent + settle_after <= now))
            .collect();
        for entry in due {
            self.checkpoint().await?;
            // The invitations the ledger already holds for the address are not this create's.
            let recorded = ledger::of_email(self.pool, self.target, &entry.email).await?;
            let known: HashSet<&str> = recorded
                .iter()
                .filter_map(|e| e.clerk_invitation_id.as_deref())
                .collect();
            let found = match self.clerk.find_by_email(entry.email.as_str(), None).await {
                Ok(found) => found,
                Err(error) => {
                    self.note_error("settle", &error);
                    continue;
                }
            };
            let email = self.reporter.email(entry.email.as_str());
            match adoptable(found, &known, entry.sent_at.unwrap_or(entry.created_at)) {
                Some(invitation) => {
                    self.adopt(entry.id, &invitation).await?;
                    crate::metrics::metrics().action("settle", "adopted");
                    tracing::info!(action = "adopt", email, invitation_id = %invitation.id, "settled an unconfirmed create: Clerk has it");
                }
                None => {
                    ledger::forget(self.pool, &[entry.id]).await?;
                    crate::metrics::metrics().action("settle", "requeued");
                    tracing::info!(
                        action = "requeue",
                        email,
                        "settled an unconfirmed create: Clerk does not have it; queued again"
                    );
                }
            }
        }
        Ok(())
    }

    /// Records `invitation` as what the ledger entry's create produced. When the entry is
    /// gone (another process settled it meanwhile) the invitation is still recorded as ours.
    async fn adopt(&mut self, ledger_id: i64, invitation: &Invitation) -> Result<(), Stop> {
        if ledger::mark_created(self.pool, ledger_id, invitation).await? {
            if invitation.status != InvitationStatus::Pending {
                ledger::set_state(self.pool, ledger_id, invitation.status.into()).await?;
            }
        } else {
            ledger::record_seen(self.pool, self.target, invitation, true).await?;
        }
        self.tally.adopted += 1;
        Ok(())
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
                    tracing::warn!(action = "revoke", outcome = "failed", email, invitation_id = id, error = %self.shown(&error), "revoke failed");
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
    pub async fn create(
        &mut self,
        queue: Vec<DesiredInvitee>,
        mut budget: Budget,
    ) -> Result<(), Stop> {
        let total = queue.len();
        let mut main = match self.check_users(queue).await {
            Ok(main) => main,
            Err(stop) => {
                self.tally.backlog = total;
                self.tally.awaiting_user_check = total;
                return Err(stop);
            }
        };
        let awaiting = self.tally.awaiting_user_check;
        let mut batches: Vec<Vec<DesiredInvitee>> = Vec::new();
        let mut singly: VecDeque<DesiredInvitee> = VecDeque::new();
        let mut halted = false;
        let backlog = |main: &VecDeque<DesiredInvitee>,
                       singly: &VecDeque<DesiredInvitee>,
                       batches: &Vec<Vec<DesiredInvitee>>| {
            main.len() + singly.len() + batches.iter().map(Vec::len).sum::<usize>() + awaiting
        };

        loop {
            if main.is_empty() && batches.is_empty() && singly.is_empty() {
                break;
            }
            if budget.bulk.left == 0 {
                // A batch that cannot go out as one joins the queue's head.
                for member in batches.drain(..).flatten().rev() {
                    main.push_front(member);
                }
            }
            let waiting = Waiting {
                retry_batches: batches.len(),
                alone: singly.len(),
                queue: main.len(),
            };
            let single_soon = if budget.single.left == 0 {
                self.frees_soon(budget.single.frees_at).await?
            } else {
                false
            };
            let Some(call) = next_call(waiting, budget.bulk.left, budget.single.left, single_soon)
            else {
                match self.wait_for_slot(&budget).await? {
                    Some(fresh) => {
                        budget = fresh;
                        continue;
                    }
                    None => break,
                }
            };
            let (endpoint, members): (Endpoint, Vec<DesiredInvitee>) = match call {
                NextCall::RetryBatch => (Endpoint::Bulk, batches.pop().unwrap_or_default()),
                NextCall::Alone => (Endpoint::Single, singly.pop_front().into_iter().collect()),
                NextCall::Bulk(n) => (Endpoint::Bulk, main.drain(..n.min(main.len())).collect()),
                NextCall::Single => (Endpoint::Single, main.pop_front().into_iter().collect()),
            };
            if members.is_empty() {
                continue;
            }
            // Recorded only when it can go out at once, so the budget's window is Clerk's.
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = self.clerk.pace() => {}
            }
            if let Err(stop) = self.checkpoint().await {
                main.extend(members);
                self.tally.backlog = backlog(&main, &singly, &batches);
                return Err(stop);
            }
            match endpoint {
                Endpoint::Bulk => budget.bulk.left -= 1,
                Endpoint::Single => budget.single.left -= 1,
            }
            let sent = match self.send(endpoint, members).await {
                Ok(sent) => sent,
                Err(stop) => {
                    self.tally.backlog = backlog(&main, &singly, &batches);
                    return Err(stop);
                }
            };
            match sent {
                Sent::Done => {}
                Sent::Retry {
                    batches: again,
                    singly: one_by_one,
                } => {
                    batches.extend(again);
                    singly.extend(one_by_one);
                }
                Sent::EndpointClosed(back) => {
                    match endpoint {
                        Endpoint::Bulk => budget.bulk.left = 0,
                        Endpoint::Single => budget.single.left = 0,
                    }
                    for member in back.into_iter().rev() {
                        main.push_front(member);
                    }
                }
                Sent::Halt(back) => {
                    for member in back.into_iter().rev() {
                        main.push_front(member);
                    }
                    halted = true;
                    break;
                }
            }
        }
        self.tally.backlog = backlog(&main, &singly, &batches);
        if halted {
            tracing::warn!(
                backlog = self.tally.backlog,
                "creates stopped for this cycle"
            );
        }
        Ok(())
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
        let fresh = super::budget_now(self.pool, self.target, self.drain.limits).await?;
        Ok(Some(fresh))
    }

    /// One create call: recorded and marked `sending` before it goes out, settled after.
    async fn send(
        &mut self,
        endpoint: Endpoint,
        members: Vec<DesiredInvitee>,
    ) -> Result<Sent, Stop> {
        let operation = endpoint.operation();
        let endpoint_name = operation.as_str();
        let mut tx = self.pool.begin().await?;
        let sent_at = store::now(&mut *tx).await?;
        let call_id = budget_store::record_call(
            &mut *tx,
            self.target,
            endpoint_name,
            members.len() as i32,
            Some(self.run_id),
        )
        .await?;
        let mut ledger_ids = Vec::with_capacity(members.len());
        for member in &members {
            ledger_ids.push(
                ledger::start_sending(&mut tx, self.target, member, call_id, self.run_id).await?,
            );
        }
        tx.commit().await?;
        match endpoint {
            Endpoint::Bulk => self.tally.bulk_calls += 1,
            Endpoint::Single => self.tally.single_calls += 1,
        }

        let result = match endpoint {
            Endpoint::Bulk => {
                let requests: Vec<_> = members.iter().map(|m| m.request.clone()).collect();
                self.clerk.create_bulk_invitations(&requests).await
            }
            Endpoint::Single => self
                .clerk
                .create_invitation(&members[0].request)
                .await
                .map(|invitation| vec![invitation]),
        };

        let invitations = match result {
            Ok(invitations) => invitations,
            Err(error) => {
                return self
                    .refused(endpoint, call_id, sent_at, members, ledger_ids, error)
                    .await;
            }
        };
        budget_store::record_status(self.pool, call_id, 200).await?;
        let mut by_email: HashMap<String, Vec<crate::clerk::Invitation>> = HashMap::new();
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
        Ok(Sent::Done)
    }

    /// Takes a refused create apart.
    async fn refused(
        &mut self,
        endpoint: Endpoint,
        call_id: i64,
        sent_at: DateTime<Utc>,
        members: Vec<DesiredInvitee>,
        ledger_ids: Vec<i64>,
        error: ClientError,
    ) -> Result<Sent, Stop> {
        let endpoint_name = endpoint.operation().as_str();
        if let Some(status) = error.status() {
            budget_store::record_status(self.pool, call_id, i32::from(status)).await?;
        }
        match &error {
            ClientError::NeverSent { .. } => {
                budget_store::forget_call(self.pool, call_id).await?;
                ledger::forget(self.pool, &ledger_ids).await?;
                self.note_error("create", &error);
                return Ok(Sent::Halt(members));
            }
            ClientError::RateLimited {
                retry_after, sent, ..
            } => {
                if !*sent {
                    // The client's own record of the block stopped it: Clerk saw nothing.
                    budget_store::forget_call(self.pool, call_id).await?;
                }
                let wait = retry_after
                    .map_or(60, |d| d.as_secs().max(1))
                    .min(crate::clerk::client::MAX_RETRY_AFTER.as_secs());
                let until = budget_store::record_block(
                    self.pool,
                    self.target,
                    endpoint_name,
                    i64::try_from(wait).unwrap_or(i64::MAX),
                )
                .await?;
                ledger::forget(self.pool, &ledger_ids).await?;
                tracing::warn!(endpoint = endpoint_name, blocked_until = %until.to_rfc3339(), "Clerk rate-limited the endpoint; it is not called before the block ends");
                return Ok(Sent::EndpointClosed(members));
            }
            ClientError::InvalidKey(_) => return Err(Stop::Unauthorized(error)),
            _ if error.may_have_applied() => {
                self.tally.unsettled += members.len();
                self.note_error("create", &error);
                tracing::warn!(endpoint = endpoint_name, members = members.len(), error = %self.shown(&error), "the outcome of a create is unknown; it is settled by a lookup next cycle, not sent again");
                return Ok(Sent::Halt(Vec::new()));
            }
            _ => {}
        }
        if matches!(error.status(), Some(401 | 403)) {
            ledger::forget(self.pool, &ledger_ids).await?;
            return Err(Stop::Unauthorized(error));
        }

        // Clerk refused the call and applied nothing: attribute the refusal to its members.
        let errors = error.clerk_errors();
        let named = |code: &str| -> Vec<Email> {
            errors
                .iter()
                .filter(|e| e.code == code)
                .flat_map(|e| e.email_addresses())
                .filter_map(|e| Email::parse(&e).ok())
                .collect()
        };
        let mut duplicates = named(codes::DUPLICATE_RECORD);
        let mut existing = named(codes::FORM_IDENTIFIER_EXISTS);
        if members.len() == 1 {
            if error.has_code(codes::DUPLICATE_RECORD) && duplicates.is_empty() {
                duplicates.push(members[0].email.clone());
            }
            if error.has_code(codes::FORM_IDENTIFIER_EXISTS) && existing.is_empty() {
                existing.push(members[0].email.clone());
            }
        }
        let attributed = !duplicates.is_empty() || !existing.is_empty();
        let mut batch = Vec::new();
        let mut unnamed = Vec::new();
        for (member, ledger_id) in members.into_iter().zip(ledger_ids) {
            let email = self.reporter.email(member.email.as_str());
            if duplicates.contains(&member.email) {
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
            } else if existing.contains(&member.email) {
                ledger::forget(self.pool, &[ledger_id]).await?;
                let user = users::KnownUser {
                    email: member.email.clone(),
                    clerk_user_id: None,
                };
                users::record_users(self.pool, self.target, &[user], "form_identifier_exists")
                    .await?;
                self.tally.marked_users += 1;
                crate::metrics::metrics().action("create", "already_user");
                tracing::info!(
                    action = "create",
                    outcome = "already_user",
                    endpoint = endpoint_name,
                    email,
                    "already a user; marked, no budget spent on them again"
                );
            } else if endpoint == Endpoint::Bulk && attributed {
                ledger::forget(self.pool, &[ledger_id]).await?;
                batch.push(member);
            } else if endpoint == Endpoint::Bulk {
                // Whether Clerk made some of a bulk call it refused without naming anyone is
                // not known: look each one up before sending it alone.
                match self.clerk.find_by_email(member.email.as_str(), None).await {
                    Ok(found) => match adoptable(found, &HashSet::new(), sent_at) {
                        Some(invitation) => {
                            self.adopt(ledger_id, &invitation).await?;
                            crate::metrics::metrics().action("create", "adopted");
                            tracing::info!(action = "create", outcome = "adopted", endpoint = endpoint_name, email, invitation_id = %invitation.id, "the refused bulk call had invited this one");
                        }
                        None => {
                            ledger::forget(self.pool, &[ledger_id]).await?;
                            unnamed.push(member);
                        }
                    },
                    // Left sending: the next cycles settle it by the same lookup.
                    Err(lookup) => self.note_error("lookup", &lookup),
                }
            } else {
                let code = errors
                    .first()
                    .map(|e| e.code.as_str())
                    .unwrap_or("http_error");
                let terminal = error.status() == Some(422);
                let attempts = self.attempts(ledger_id).await?;
                let next = (!terminal).then(|| backoff_after(attempts));
                ledger::mark_failed(
                    self.pool,
                    ledger_id,
                    code,
                    &self.shown(&error),
                    terminal,
                    next,
                )
                .await?;
                self.tally.failed += 1;
                crate::metrics::metrics().action("create", "failed");
                tracing::warn!(action = "create", outcome = "failed", endpoint = endpoint_name, email, code, terminal, error = %self.shown(&error), "create refused");
            }
        }
        if endpoint == Endpoint::Bulk && !attributed {
            tracing::info!(members = unnamed.len(), error = %self.shown(&error), "a bulk create was refused for a reason no address was named for; its members go again in two halves");
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

    /// Records the pending invitation Clerk already has for the address, as not ours.
    async fn adopt_pending(&mut self, email: &Email) -> Result<(), Stop> {
        match self
            .clerk
            .find_by_email(email.as_str(), Some(InvitationStatus::Pending))
            .await
        {
            Ok(found) => {
                for invitation in found {
                    ledger::record_seen(self.pool, self.target, &invitation, false).await?;
                }
                self.tally.adopted += 1;
            }
            Err(error) => self.note_error("lookup", &error),
        }
        Ok(())
    }

    /// An error as logs and the run record show it: Clerk's messages name the addresses
    /// they refuse, which `log.redact_emails` hides.
    fn shown(&self, error: &ClientError) -> String {
        self.reporter.scrub(&error.to_string())
    }

    fn note_error(&mut self, what: &str, error: &ClientError) {
        let error = self.shown(error);
        tracing::warn!(what, error = %error, "Clerk call failed");
        self.tally.errors.push(format!("{what}: {error}"));
    }
}

/// Splits the addresses asked about into the users Clerk answered with (each with its user
/// id) and the rest, who are not users.
pub fn users_among(
    asked: &[Email],
    found: &[crate::clerk::User],
) -> (Vec<users::KnownUser>, Vec<Email>) {
    let mut ids: HashMap<Email, &str> = HashMap::new();
    for user in found {
        for address in &user.email_addresses {
            if let Ok(email) = Email::parse(&address.email_address) {
                ids.entry(email).or_insert(user.id.as_str());
            }
        }
    }
    let mut known = Vec::new();
    let mut not_users = Vec::new();
    for email in asked {
        match ids.get(email) {
            Some(id) => known.push(users::KnownUser {
                email: email.clone(),
                clerk_user_id: Some((*id).to_owned()),
            }),
            None => not_users.push(email.clone()),
        }
    }
    (known, not_users)
}

/// How far Clerk's clock may trail the database's when telling a create of ours from an
/// invitation made by hand just before it.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The invitation a create sent at `sent_at` most likely made: not revoked, not already in
/// the ledger, and not older than the create (an older one was made by someone else).
/// Pending ones first, then the newest.
fn adoptable(
    found: Vec<Invitation>,
    known: &HashSet<&str>,
    sent_at: DateTime<Utc>,
) -> Option<Invitation> {
    let since = (sent_at - CLOCK_SKEW).timestamp_millis();
    found
        .into_iter()
        .filter(|i| i.status != InvitationStatus::Revoked)
        .filter(|i| !known.contains(i.id.as_str()))
        .filter(|i| i.created_at >= since)
        .max_by_key(|i| (i.status == InvitationStatus::Pending, i.created_at))
}

/// When to try a refused create again: 1 minute doubling per attempt, at most 6 hours.
pub fn backoff_after(attempts: i32) -> DateTime<Utc> {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    let minutes = 2i64.saturating_pow(exponent).min(360);
    Utc::now() + chrono::Duration::minutes(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clerk::InvitationStatus as S;

    fn invitation(id: &str, status: S, created_at: DateTime<Utc>) -> Invitation {
        Invitation {
            object: "invitation".to_owned(),
            id: id.to_owned(),
            email_address: "ann@example.com".to_owned(),
            public_metadata: serde_json::Map::new(),
            revoked: Some(status == S::Revoked),
            status,
            url: None,
            expires_at: None,
            created_at: created_at.timestamp_millis(),
            updated_at: created_at.timestamp_millis(),
        }
    }

    fn waiting(retry_batches: usize, alone: usize, queue: usize) -> Waiting {
        Waiting {
            retry_batches,
            alone,
            queue,
        }
    }

    #[test]
    fn bulk_calls_carry_the_queue_while_ten_or_more_wait_and_singles_the_rest() {
        assert_eq!(
            next_call(waiting(0, 0, 25), 3, 5, false),
            Some(NextCall::Bulk(10))
        );
        assert_eq!(
            next_call(waiting(0, 0, 9), 3, 5, false),
            Some(NextCall::Single)
        );
        assert_eq!(next_call(waiting(0, 0, 0), 3, 5, false), None);
    }

    #[test]
    fn every_free_slot_of_either_endpoint_is_used_while_anyone_waits() {
        // Bulk used up: singles go on with a long queue.
        assert_eq!(
            next_call(waiting(0, 0, 1000), 0, 1, false),
            Some(NextCall::Single)
        );
        // Singles used up and none freeing soon: stragglers go as one bulk call.
        assert_eq!(
            next_call(waiting(0, 0, 4), 2, 0, false),
            Some(NextCall::Bulk(4))
        );
        assert_eq!(next_call(waiting(0, 0, 4), 0, 0, false), None);
    }

    #[test]
    fn stragglers_wait_for_a_single_slot_that_frees_soon_rather_than_take_a_bulk_one() {
        assert_eq!(next_call(waiting(0, 0, 4), 2, 0, true), None);
        assert_eq!(
            next_call(waiting(0, 0, 12), 2, 0, true),
            Some(NextCall::Bulk(10))
        );
    }

    #[test]
    fn what_a_refusal_left_goes_before_the_queue() {
        assert_eq!(
            next_call(waiting(1, 1, 50), 1, 1, false),
            Some(NextCall::RetryBatch)
        );
        assert_eq!(
            next_call(waiting(1, 1, 50), 0, 1, false),
            Some(NextCall::Alone)
        );
        // One that must go alone waits for a single slot; the queue uses the bulk one.
        assert_eq!(
            next_call(waiting(0, 1, 50), 1, 0, false),
            Some(NextCall::Bulk(10))
        );
        assert_eq!(next_call(waiting(0, 1, 0), 1, 0, false), None);
    }

    fn invitees(n: usize) -> Vec<DesiredInvitee> {
        (0..n)
            .map(|i| {
                let row = crate::domain::DesiredRow::new(format!("p{i}@example.com"));
                DesiredInvitee::from_row(&row, &crate::domain::RowDefaults::default())
                    .expect("a valid row")
            })
            .collect()
    }

    #[test]
    fn a_refused_bulk_is_halved_and_a_half_of_one_goes_alone() {
        let (batches, singly) = halves(invitees(10));
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
        assert!(singly.is_empty());
        let (batches, singly) = halves(invitees(3));
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2]);
        assert_eq!(singly.len(), 1);
        let (batches, singly) = halves(invitees(1));
        assert!(batches.is_empty());
        assert_eq!(singly.len(), 1);
    }

    #[test]
    fn halving_finds_one_cause_among_ten_in_at_most_eight_calls() {
        // Every half holding the cause is refused and halved again; the others succeed.
        for cause in 0..10 {
            let mut calls = 0;
            let mut refused = vec![invitees(10)];
            let bad = format!("p{cause}@example.com");
            while let Some(members) = refused.pop() {
                let (batches, singly) = halves(members);
                for part in batches
                    .into_iter()
                    .chain(singly.into_iter().map(|m| vec![m]))
                {
                    calls += 1;
                    if part.len() > 1 && part.iter().any(|m| m.email.as_str() == bad) {
                        refused.push(part);
                    }
                }
            }
            assert!(calls <= 8, "cause {cause}: {calls} calls");
        }
    }

    #[test]
    fn users_are_told_apart_by_any_of_their_addresses() {
        let user = |id: &str, addresses: &[&str]| -> crate::clerk::User {
            serde_json::from_value(serde_json::json!({
                "id": id,
                "email_addresses": addresses
                    .iter()
                    .map(|a| serde_json::json!({"email_address": a}))
                    .collect::<Vec<_>>(),
            }))
            .expect("a user")
        };
        let asked: Vec<Email> = ["ann@example.com", "bob@example.com", "cy@example.com"]
            .iter()
            .map(|a| Email::parse(a).expect("an address"))
            .collect();
        let found = [
            user("user_1", &["other@example.com", "Ann@Example.com"]),
            user("user_2", &["cy@example.com"]),
        ];
        let (known, not_users) = users_among(&asked, &found);
        let known: Vec<_> = known
            .iter()
            .map(|u| (u.email.as_str(), u.clerk_user_id.as_deref()))
            .collect();
        assert_eq!(
            known,
            [
                ("ann@example.com", Some("user_1")),
                ("cy@example.com", Some("user_2"))
            ]
        );
        assert_eq!(
            not_users,
            [Email::parse("bob@example.com").expect("an address")]
        );
    }

    #[test]
    fn a_lookup_adopts_only_what_the_create_could_have_made() {
        let sent = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let known: HashSet<&str> = ["inv_known"].into_iter().collect();
        let minutes = chrono::Duration::minutes;
        let found = vec![
            invitation("inv_by_hand", S::Pending, sent - minutes(30)),
            invitation("inv_known", S::Pending, sent + minutes(1)),
            invitation("inv_revoked", S::Revoked, sent + minutes(1)),
            invitation("inv_ours", S::Pending, sent + chrono::Duration::seconds(2)),
        ];
        let adopted = adoptable(found, &known, sent).map(|i| i.id);
        assert_eq!(adopted.as_deref(), Some("inv_ours"));

        let only_by_hand = vec![invitation("inv_by_hand", S::Pending, sent - minutes(30))];
        assert_eq!(
            adoptable(only_by_hand, &known, sent),
            None,
            "made by hand before the create"
        );

        // Clerk's clock may trail: a few minutes before the send still counts.
        let skewed = vec![invitation("inv_skewed", S::Pending, sent - minutes(2))];
        assert!(adoptable(skewed, &known, sent).is_some());

        let pending_first = vec![
            invitation("inv_accepted", S::Accepted, sent + minutes(2)),
            invitation("inv_pending", S::Pending, sent + minutes(1)),
        ];
        assert_eq!(
            adoptable(pending_first, &known, sent)
                .map(|i| i.id)
                .as_deref(),
            Some("inv_pending")
        );
    }
}
