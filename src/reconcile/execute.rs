//! The executor: sends the guarded revocations, then drains the create queue through
//! Clerk's two create endpoints within the hourly budget recorded in Postgres.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clerk::model::codes;
use crate::clerk::{
    budget::Budget, ClerkClient, ClientError, Invitation, InvitationStatus, Operation,
};
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::reconcile::guard::Revocation;
use crate::reconcile::report::Reporter;
use crate::store::{self, budget as budget_store, ledger, lock::LeaderLock};

/// Why the executor stopped before its work was done.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("shutdown requested")]
    Shutdown,
    #[error("the leader lock was lost: {0}")]
    LockLost(sqlx::Error),
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
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
    /// Creates left for a later cycle.
    pub backlog: usize,
    pub errors: Vec<String>,
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
    /// Members to send again: as a batch (bulk), or one by one.
    Retry {
        batch: Vec<DesiredInvitee>,
        singly: Vec<DesiredInvitee>,
    },
    /// The endpoint cannot be used any more this cycle.
    EndpointClosed(Vec<DesiredInvitee>),
    /// Creates stop this cycle (Clerk unreachable, or an outcome unknown).
    Halt(Vec<DesiredInvitee>),
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
        let entries = ledger::load(self.pool, self.target).await?;
        let now = store::now(self.pool).await?;
        let settle_after = chrono::Duration::from_std(self.settle_after).unwrap_or_default();
        let known: HashSet<&str> = entries
            .iter()
            .filter_map(|e| e.clerk_invitation_id.as_deref())
            .collect();
        let due: Vec<&LedgerEntry> = entries
            .iter()
            .filter(|e| e.state == LedgerState::Sending)
            .filter(|e| e.sent_at.is_none_or(|sent| sent + settle_after <= now))
            .collect();
        for entry in due {
            self.checkpoint().await?;
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

    /// Sends the queue, oldest first, while the budget lasts. The queue is in plan order.
    pub async fn create(
        &mut self,
        queue: Vec<DesiredInvitee>,
        mut budget: Budget,
    ) -> Result<(), Stop> {
        let mut main: VecDeque<DesiredInvitee> = queue.into();
        let mut batches: Vec<Vec<DesiredInvitee>> = Vec::new();
        let mut singly: VecDeque<DesiredInvitee> = VecDeque::new();
        let mut halted = false;

        loop {
            if main.is_empty() && batches.is_empty() && singly.is_empty() {
                break;
            }
            let (endpoint, members) = if let Some(batch) = batches.pop() {
                if budget.bulk.left > 0 {
                    (Endpoint::Bulk, batch)
                } else {
                    for member in batch.into_iter().rev() {
                        main.push_front(member);
                    }
                    continue;
                }
            } else if !singly.is_empty() && budget.single.left > 0 {
                (Endpoint::Single, singly.pop_front().into_iter().collect())
            } else if !main.is_empty() {
                let remaining = main.len();
                let single_left = budget.single.left as usize;
                if budget.bulk.left > 0 && (remaining >= 10 || single_left < remaining) {
                    let take = remaining.min(10);
                    (Endpoint::Bulk, main.drain(..take).collect())
                } else if budget.single.left > 0 {
                    (Endpoint::Single, main.pop_front().into_iter().collect())
                } else {
                    break;
                }
            } else {
                break;
            };
            if let Err(stop) = self.checkpoint().await {
                main.extend(members);
                self.tally.backlog =
                    main.len() + singly.len() + batches.iter().map(Vec::len).sum::<usize>();
                return Err(stop);
            }
            match endpoint {
                Endpoint::Bulk => budget.bulk.left -= 1,
                Endpoint::Single => budget.single.left -= 1,
            }
            let sent = match self.send(endpoint, members).await {
                Ok(sent) => sent,
                Err(stop) => {
                    self.tally.backlog =
                        main.len() + singly.len() + batches.iter().map(Vec::len).sum::<usize>();
                    return Err(stop);
                }
            };
            match sent {
                Sent::Done => {}
                Sent::Retry {
                    batch,
                    singly: one_by_one,
                } => {
                    if !batch.is_empty() {
                        batches.push(batch);
                    }
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
        self.tally.backlog =
            main.len() + singly.len() + batches.iter().map(Vec::len).sum::<usize>();
        if halted {
            tracing::warn!(
                backlog = self.tally.backlog,
                "creates stopped for this cycle"
            );
        }
        Ok(())
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
                    crate::metrics::metrics().action("create", "created");
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
                let wait = retry_after.map_or(60, |d| d.as_secs().max(1));
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
        let mut users = named(codes::FORM_IDENTIFIER_EXISTS);
        if members.len() == 1 {
            if error.has_code(codes::DUPLICATE_RECORD) && duplicates.is_empty() {
                duplicates.push(members[0].email.clone());
            }
            if error.has_code(codes::FORM_IDENTIFIER_EXISTS) && users.is_empty() {
                users.push(members[0].email.clone());
            }
        }
        let attributed = !duplicates.is_empty() || !users.is_empty();
        let mut batch = Vec::new();
        let mut singly = Vec::new();
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
            } else if users.contains(&member.email) {
                ledger::forget(self.pool, &[ledger_id]).await?;
                ledger::add_known_users(
                    self.pool,
                    self.target,
                    std::slice::from_ref(&member.email),
                    "form_identifier_exists",
                )
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
                            singly.push(member);
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
            tracing::info!(members = singly.len(), error = %self.shown(&error), "a bulk create was refused for a reason no address was named for; its members go one by one");
        }
        Ok(Sent::Retry { batch, singly })
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
