//! The executor: sends the guarded revocations, then drains the create queue through
//! Clerk's two create endpoints within the hourly budget recorded in Postgres.

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
    ClerkClient, ClerkError, ClientError, Invitation, InvitationStatus, Operation,
};
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::reconcile::guard::Revocation;
use crate::reconcile::report::Reporter;
use crate::store::{self, budget as budget_store, ledger, lock::LeaderLock, users};
use crate::telemetry::Chain;

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

/// How a create call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateEndpoint {
    Bulk,
    Single,
}

impl CreateEndpoint {
    fn operation(self) -> Operation {
        match self {
            CreateEndpoint::Bulk => Operation::CreateBulkInvitations,
            CreateEndpoint::Single => Operation::CreateInvitation,
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

/// What waits to be sent in a cycle: the queue, and what refused calls left to send again.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<DesiredInvitee>,
    /// Members of a refused bulk call, each batch to go again as one call.
    batches: Vec<Vec<DesiredInvitee>>,
    /// Members to go again one by one.
    singly: VecDeque<DesiredInvitee>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.batches.is_empty() && self.singly.is_empty()
    }

    /// Everyone waiting.
    fn len(&self) -> usize {
        self.queue.len() + self.singly.len() + self.batches.iter().map(Vec::len).sum::<usize>()
    }

    fn waiting(&self) -> Waiting {
        Waiting {
            retry_batches: self.batches.len(),
            alone: self.singly.len(),
            queue: self.queue.len(),
        }
    }

    /// The batches that cannot go out as one join the queue's head.
    fn unbatch(&mut self) {
        let batches: Vec<DesiredInvitee> = self.batches.drain(..).flatten().collect();
        self.put_back(batches);
    }

    /// Members back at the head of the queue, in their order.
    fn put_back(&mut self, members: Vec<DesiredInvitee>) {
        for member in members.into_iter().rev() {
            self.queue.push_front(member);
        }
    }

    /// The members of `call`, and the endpoint they go to.
    fn take(&mut self, call: NextCall) -> (CreateEndpoint, Vec<DesiredInvitee>) {
        match call {
            NextCall::RetryBatch => (CreateEndpoint::Bulk, self.batches.pop().unwrap_or_default()),
            NextCall::Alone => (
                CreateEndpoint::Single,
                self.singly.pop_front().into_iter().collect(),
            ),
            NextCall::Bulk(n) => (
                CreateEndpoint::Bulk,
                self.queue.drain(..n.min(self.queue.len())).collect(),
            ),
            NextCall::Single => (
                CreateEndpoint::Single,
                self.queue.pop_front().into_iter().collect(),
            ),
        }
    }
}

/// How draining the outbox ended without a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Everyone was sent, or the budget is spent until later.
    Ended,
    /// Creates stopped for this cycle (Clerk unreachable, or an outcome unknown).
    Halted,
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
                    let next = (!terminal).then(|| backoff_after(attempts));
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

    /// Whether Clerk made some of a bulk call it refused without naming anyone is not
    /// known: looks the member up before it is sent alone. Returns whether it is to be
    /// sent again (not when Clerk had invited it, nor when the lookup failed: then it is
    /// left sending, and the next cycles settle it by the same lookup).
    async fn look_up_unnamed(
        &mut self,
        ledger_id: i64,
        member: &DesiredInvitee,
        sent_at: DateTime<Utc>,
        endpoint_name: &str,
    ) -> Result<bool, Stop> {
        let found = match self.clerk.find_by_email(member.email.as_str(), None).await {
            Ok(found) => found,
            Err(lookup) => {
                self.note_error("lookup", &lookup);
                return Ok(false);
            }
        };
        match adoptable(found, &HashSet::new(), sent_at) {
            Some(invitation) => {
                self.adopt(ledger_id, &invitation).await?;
                crate::metrics::metrics().action("create", "adopted");
                let email = self.reporter.email(member.email.as_str());
                tracing::info!(action = "create", outcome = "adopted", endpoint = endpoint_name, email, invitation_id = %invitation.id, "the refused bulk call had invited this one");
                Ok(false)
            }
            None => {
                ledger::forget(self.pool, &[ledger_id]).await?;
                Ok(true)
            }
        }
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

/// What a refused create call means as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The call never reached Clerk: forgotten, and creates stop this cycle.
    NeverSent,
    /// The endpoint is rate-limited for `wait` seconds; `sent` says whether Clerk counted
    /// the call (not when the client's own record of a block stopped it).
    RateLimited { sent: bool, wait: u64 },
    /// The credentials were refused: the cycle stops, forgetting the call's rows first
    /// when Clerk answered 401 or 403.
    Unauthorized { forget: bool },
    /// Clerk may have applied it: settled by a lookup next cycle, not sent again.
    OutcomeUnknown,
    /// Clerk applied nothing: the refusal is [`attribute`]d to the members; `terminal`
    /// when one refused alone is not to be tried again.
    Refused { terminal: bool },
}

/// What a refused create call means.
pub fn classify(error: &ClientError) -> Refusal {
    match error {
        ClientError::NeverSent { .. } => Refusal::NeverSent,
        ClientError::RateLimited {
            retry_after, sent, ..
        } => Refusal::RateLimited {
            sent: *sent,
            wait: retry_after
                .map_or(60, |d| d.as_secs().max(1))
                .min(crate::clerk::client::MAX_RETRY_AFTER.as_secs()),
        },
        ClientError::InvalidKey(_) => Refusal::Unauthorized { forget: false },
        _ if error.may_have_applied() => Refusal::OutcomeUnknown,
        _ if matches!(error.status(), Some(401 | 403)) => Refusal::Unauthorized { forget: true },
        _ => Refusal::Refused {
            terminal: error.status() == Some(422),
        },
    }
}

/// What becomes of one member of a create call Clerk refused and applied nothing of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Named as having a pending invitation already: recorded, not sent again.
    Duplicate,
    /// Named as a user already: marked, no budget spent on them again.
    User,
    /// Not named by a bulk call that named others: sent again with the others not named.
    Resend,
    /// In a bulk call refused without naming anyone: looked up, then sent again in halves.
    LookUp,
    /// Refused alone: failed, tried again after a backoff unless the refusal is terminal.
    Failed,
}

/// Which member Clerk's errors name, and so the fate of each, in member order. A call of
/// one is named by any error with the code, whether it lists addresses or not.
pub fn attribute(
    errors: &[ClerkError],
    members: &[DesiredInvitee],
    endpoint: CreateEndpoint,
) -> Vec<Fate> {
    let named = |code: &str| -> Vec<Email> {
        let mut named: Vec<Email> = errors
            .iter()
            .filter(|e| e.code == code)
            .flat_map(|e| e.email_addresses())
            .filter_map(|e| Email::parse(&e).ok())
            .collect();
        if let [alone] = members {
            if named.is_empty() && errors.iter().any(|e| e.code == code) {
                named.push(alone.email.clone());
            }
        }
        named
    };
    let duplicates = named(codes::DUPLICATE_RECORD);
    let existing = named(codes::FORM_IDENTIFIER_EXISTS);
    let anyone_named = !duplicates.is_empty() || !existing.is_empty();
    members
        .iter()
        .map(|member| {
            if duplicates.contains(&member.email) {
                Fate::Duplicate
            } else if existing.contains(&member.email) {
                Fate::User
            } else if endpoint == CreateEndpoint::Single {
                Fate::Failed
            } else if anyone_named {
                Fate::Resend
            } else {
                Fate::LookUp
            }
        })
        .collect()
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

    fn answered(status: u16, errors: Vec<ClerkError>) -> ClientError {
        ClientError::Clerk {
            operation: Operation::CreateBulkInvitations,
            status,
            errors,
            trace_id: None,
        }
    }

    fn clerk_error(code: &str, addresses: &[&str]) -> ClerkError {
        ClerkError {
            message: code.to_owned(),
            long_message: String::new(),
            code: code.to_owned(),
            meta: (!addresses.is_empty()).then(|| {
                let mut meta = serde_json::Map::new();
                meta.insert("email_addresses".to_owned(), serde_json::json!(addresses));
                meta
            }),
        }
    }

    #[test]
    fn a_refusal_is_told_by_what_clerk_could_have_done() {
        let limited = |retry_after: Option<u64>, sent| ClientError::RateLimited {
            operation: Operation::CreateInvitation,
            retry_after: retry_after.map(Duration::from_secs),
            sent,
            trace_id: None,
        };
        assert_eq!(
            classify(&limited(Some(90), true)),
            Refusal::RateLimited {
                sent: true,
                wait: 90
            }
        );
        assert_eq!(
            classify(&limited(None, false)),
            Refusal::RateLimited {
                sent: false,
                wait: 60
            },
            "a minute when Clerk says nothing"
        );
        let longest = crate::clerk::client::MAX_RETRY_AFTER.as_secs();
        assert_eq!(
            classify(&limited(Some(longest * 10), true)),
            Refusal::RateLimited {
                sent: true,
                wait: longest
            }
        );
        assert_eq!(
            classify(&limited(Some(0), true)),
            Refusal::RateLimited {
                sent: true,
                wait: 1
            }
        );
        assert_eq!(
            classify(&ClientError::InvalidKey("empty")),
            Refusal::Unauthorized { forget: false }
        );
        for status in [401, 403] {
            assert_eq!(
                classify(&answered(status, Vec::new())),
                Refusal::Unauthorized { forget: true }
            );
        }
        for status in [500, 502, 503] {
            assert_eq!(
                classify(&answered(status, Vec::new())),
                Refusal::OutcomeUnknown
            );
        }
        let unreadable = ClientError::Decode {
            operation: Operation::CreateInvitation,
            status: 200,
            message: "not JSON".to_owned(),
        };
        assert_eq!(classify(&unreadable), Refusal::OutcomeUnknown);
        assert_eq!(
            classify(&answered(422, Vec::new())),
            Refusal::Refused { terminal: true }
        );
        assert_eq!(
            classify(&answered(400, Vec::new())),
            Refusal::Refused { terminal: false }
        );
    }

    #[test]
    fn a_refused_bulk_names_its_duplicates_and_users_and_sends_the_rest_again() {
        let members = invitees(4);
        let errors = [
            clerk_error(codes::DUPLICATE_RECORD, &["P1@example.com"]),
            clerk_error(codes::FORM_IDENTIFIER_EXISTS, &["p3@example.com", "nobody"]),
        ];
        assert_eq!(
            attribute(&errors, &members, CreateEndpoint::Bulk),
            [Fate::Resend, Fate::Duplicate, Fate::Resend, Fate::User]
        );
    }

    #[test]
    fn a_bulk_refused_without_naming_anyone_has_each_member_looked_up() {
        let members = invitees(3);
        // A code that names people, but no address: nobody is named.
        let errors = [clerk_error(codes::DUPLICATE_RECORD, &[])];
        assert_eq!(
            attribute(&errors, &members, CreateEndpoint::Bulk),
            [Fate::LookUp; 3]
        );
        assert_eq!(
            attribute(&[], &members, CreateEndpoint::Bulk),
            [Fate::LookUp; 3]
        );
        // Someone outside the call is named: the members were not the cause.
        let elsewhere = [clerk_error(codes::DUPLICATE_RECORD, &["else@example.com"])];
        assert_eq!(
            attribute(&elsewhere, &members, CreateEndpoint::Bulk),
            [Fate::Resend; 3]
        );
    }

    #[test]
    fn a_call_of_one_is_named_by_its_code_alone() {
        let one = invitees(1);
        let duplicate = [clerk_error(codes::DUPLICATE_RECORD, &[])];
        let user = [clerk_error(codes::FORM_IDENTIFIER_EXISTS, &[])];
        let other = [clerk_error("form_param_format_invalid", &[])];
        for endpoint in [CreateEndpoint::Single, CreateEndpoint::Bulk] {
            assert_eq!(attribute(&duplicate, &one, endpoint), [Fate::Duplicate]);
            assert_eq!(attribute(&user, &one, endpoint), [Fate::User]);
        }
        assert_eq!(
            attribute(&other, &one, CreateEndpoint::Single),
            [Fate::Failed]
        );
        assert_eq!(attribute(&[], &one, CreateEndpoint::Single), [Fate::Failed]);
        assert_eq!(
            attribute(&other, &one, CreateEndpoint::Bulk),
            [Fate::LookUp]
        );
        // Both codes: the pending invitation is what counts.
        let both = [duplicate[0].clone(), user[0].clone()];
        assert_eq!(
            attribute(&both, &one, CreateEndpoint::Single),
            [Fate::Duplicate]
        );
    }

    #[test]
    fn the_outbox_counts_everyone_waiting_and_puts_members_back_at_its_head_in_order() {
        let mut all = invitees(7);
        let singly: VecDeque<_> = all.split_off(6).into();
        let batches = vec![all.split_off(4), all.split_off(2)];
        let mut outbox = Outbox {
            queue: all.into(),
            batches,
            singly,
        };
        assert_eq!(outbox.len(), 7);
        assert_eq!(outbox.waiting(), waiting(2, 1, 2));
        outbox.unbatch();
        assert_eq!(outbox.waiting(), waiting(0, 1, 6));
        let order: Vec<&str> = outbox.queue.iter().map(|m| m.email.as_str()).collect();
        assert_eq!(
            order,
            [
                "p4@example.com",
                "p5@example.com",
                "p2@example.com",
                "p3@example.com",
                "p0@example.com",
                "p1@example.com"
            ]
        );
        let (endpoint, members) = outbox.take(NextCall::Bulk(10));
        assert_eq!((endpoint, members.len()), (CreateEndpoint::Bulk, 6));
        outbox.put_back(members);
        assert_eq!(
            outbox.queue.front().map(|m| m.email.as_str()),
            Some("p4@example.com")
        );
        let (endpoint, members) = outbox.take(NextCall::Alone);
        assert_eq!(endpoint, CreateEndpoint::Single);
        assert_eq!(members[0].email.as_str(), "p6@example.com");
        assert_eq!(outbox.len(), 6);
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
