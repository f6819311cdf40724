//! Carrying out the membership plan: the removals the guard allowed (revocations, then
//! memberships removed), the roles set back, the organization invitations (a replacement's
//! only once its old invitation is gone) drained under the organization budget, the next
//! call chosen by [`next_call`], then the memberships made for known users. Every create is
//! written `sending` in the ledger before it goes out.

use std::collections::{BTreeMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::guard::{Removal, Target};
use super::next_call::{next_call, NextCall, OrgWaiting};
use super::observe::{Decision, State};
use super::plan::{DesiredMembership, Item, MembershipKind, MembershipState};
use super::{refused_credentials, Pass};
use crate::clerk::budget::{Budget, Endpoint, Invitations, EDGE_MARGIN};
use crate::clerk::organization::CreateOrganizationInvitation;
use crate::clerk::{ClientError, Operation, OrganizationRefusal};
use crate::reconcile::execute::refusal::backoff_after;
use crate::reconcile::execute::Stop;
use crate::store::{self, budget as budget_store, membership_ledger, organizations};

/// One person to invite: the row and the role.
#[derive(Debug, Clone)]
struct Invitee {
    row: DesiredMembership,
    role: String,
}

impl Invitee {
    fn request(&self) -> CreateOrganizationInvitation {
        let object = |value: &Value| value.as_object().filter(|map| !map.is_empty()).cloned();
        CreateOrganizationInvitation {
            public_metadata: object(&self.row.public_metadata),
            private_metadata: object(&self.row.private_metadata),
            redirect_url: self.row.redirect_url.clone(),
            expires_in_days: self.row.expires_in_days,
            notify: self.row.notify,
            ..CreateOrganizationInvitation::new(self.row.email.as_str(), self.role.clone())
        }
    }
}

/// The invitations waiting, per organization, each queue in plan order; `first` is the
/// rank of each organization's head in the plan.
#[derive(Default)]
struct Queues {
    by_organization: BTreeMap<String, VecDeque<(usize, Invitee)>>,
    /// Members of a refused bulk call, to go again one by one.
    singly: VecDeque<(String, Invitee)>,
}

impl Queues {
    fn len(&self) -> usize {
        self.by_organization
            .values()
            .map(VecDeque::len)
            .sum::<usize>()
            + self.singly.len()
    }

    fn waiting(&self) -> (Vec<&String>, Vec<OrgWaiting>) {
        self.by_organization
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(id, queue)| {
                (
                    id,
                    OrgWaiting {
                        waiting: queue.len(),
                        first: queue.front().map_or(usize::MAX, |(rank, _)| *rank),
                    },
                )
            })
            .unzip()
    }

    fn put_back(&mut self, organization_id: &str, members: Vec<Invitee>) {
        let queue = self
            .by_organization
            .entry(organization_id.to_owned())
            .or_default();
        // They keep the head's rank: they waited longest.
        let rank = queue.front().map_or(0, |(rank, _)| rank.saturating_sub(1));
        for member in members.into_iter().rev() {
            queue.push_front((rank, member));
        }
    }
}

/// One endpoint's calls within the window, oldest first.
#[derive(Debug, Default)]
struct Calls {
    limit: u32,
    calls: Vec<DateTime<Utc>>,
    blocked_until: Option<DateTime<Utc>>,
}

/// The organization budget as a drain spends it: the window's calls read from Postgres once,
/// and the pass's own added at the times Postgres recorded them (one writer holds the lock),
/// so the budget at any moment is known without a read.
#[derive(Debug)]
struct Spent {
    window: std::time::Duration,
    bulk: Calls,
    single: Calls,
    /// Postgres's clock less this process's, never more than it is: the window is judged on
    /// Postgres's clock, where the calls are recorded.
    skew: chrono::Duration,
    /// A 429 stored a block: the window is to be read again.
    stale: bool,
}

impl Spent {
    /// Postgres's clock now, never ahead of it.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.skew
    }

    fn budget(&self, now: DateTime<Utc>) -> Budget {
        let endpoint =
            |e: &Calls| Endpoint::from_calls(e.limit, self.window, &e.calls, e.blocked_until, now);
        Budget {
            bulk: endpoint(&self.bulk),
            single: endpoint(&self.single),
        }
    }

    fn record(&mut self, operation: Operation, at: DateTime<Utc>) {
        let calls = if operation == Operation::CreateOrganizationInvitationsBulk {
            &mut self.bulk
        } else {
            &mut self.single
        };
        let horizon = at
            - chrono::Duration::from_std(self.window + EDGE_MARGIN)
                .unwrap_or(chrono::Duration::hours(1));
        calls.calls.retain(|t| *t > horizon);
        let place = calls.calls.partition_point(|t| *t <= at);
        calls.calls.insert(place, at);
    }
}

/// What became of one invitation create call.
enum Sent {
    Done,
    /// The endpoint cannot be used again this cycle.
    EndpointClosed(Vec<Invitee>),
    /// The organization is full: its queue waits for a later cycle.
    Full,
    /// Members to send again one by one.
    Singly(Vec<Invitee>),
    /// Creates stop this cycle (Clerk unreachable, or an outcome unknown).
    Halt(Vec<Invitee>),
}

impl Pass<'_> {
    pub(super) async fn execute(&mut self, decision: Decision, state: &State) -> Result<(), Stop> {
        let Decision { plan, verdict } = decision;
        let gone = self.remove(&verdict.allowed).await?;
        let mut queues = Queues::default();
        let mut members = Vec::new();
        for (rank, item) in plan.items.into_iter().enumerate() {
            match item {
                Item::ChangeRole {
                    organization_id,
                    email,
                    user_id,
                    from,
                    to,
                } => {
                    self.change_role(state, &organization_id, &email, &user_id, &from, &to)
                        .await?
                }
                Item::AddMember {
                    organization_id,
                    row,
                    user_id,
                    role,
                } => members.push((organization_id, row, user_id, role)),
                Item::Invite {
                    organization_id,
                    row,
                    role,
                    ..
                } => queues
                    .by_organization
                    .entry(organization_id)
                    .or_default()
                    .push_back((rank, Invitee { row, role })),
                // A replacement goes out only once its old invitation is gone.
                Item::Replace {
                    organization_id,
                    row,
                    role,
                    invitation_id,
                    ..
                } if gone.contains(&invitation_id) => queues
                    .by_organization
                    .entry(organization_id)
                    .or_default()
                    .push_back((rank, Invitee { row, role })),
                _ => {}
            }
        }
        // The invitations first: the organization budget's window starts with its first
        // call, while memberships cost only the request rate, so they go in the time the
        // budget leaves (next_call.rs measures the drain against that ideal).
        self.drain(&mut queues).await?;
        for (organization_id, row, user_id, role) in members {
            self.add_member(&organization_id, &row, &user_id, &role)
                .await?;
        }
        Ok(())
    }

    /// Carries out the removals the guard allowed; returns the invitation ids now gone.
    async fn remove(&mut self, removals: &[Removal]) -> Result<HashSet<String>, Stop> {
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        let reporter = self.reconciler.config.reporter;
        let mut gone = HashSet::new();
        for removal in removals {
            self.checkpoint().await?;
            let organization = removal.organization_id.as_str();
            let email = reporter.email(removal.email.as_str());
            match &removal.target {
                Target::Invitation(id) => {
                    match self
                        .clerk
                        .revoke_organization_invitation(organization, id)
                        .await
                    {
                        Ok(_) => {}
                        Err(error)
                            if error.organization_refusal()
                                == Some(OrganizationRefusal::NotFound) => {}
                        Err(error)
                            if error.organization_refusal()
                                == Some(OrganizationRefusal::InvitationNotPending) =>
                        {
                            // Accepted or expired meanwhile: the next listing says which.
                            tracing::info!(email, organization, invitation_id = %id, "no longer pending; left to the next cycle");
                            continue;
                        }
                        Err(error) => {
                            self.removal_failed(error)?;
                            continue;
                        }
                    }
                    membership_ledger::mark_revoked(pool, &target, id).await?;
                    self.report.revoked += 1;
                    gone.insert(id.clone());
                    tracing::info!(action = "revoke", email, organization, invitation_id = %id, "organization invitation revoked");
                }
                Target::Member(user_id) => {
                    match self.clerk.delete_membership(organization, user_id).await {
                        Ok(_) => {}
                        Err(error)
                            if error.organization_refusal()
                                == Some(OrganizationRefusal::NotFound) => {}
                        Err(error) => {
                            self.removal_failed(error)?;
                            continue;
                        }
                    }
                    membership_ledger::mark_removed(pool, &target, organization, user_id).await?;
                    self.report.removed += 1;
                    tracing::info!(
                        action = "remove_member",
                        email,
                        organization,
                        "membership removed"
                    );
                }
            }
        }
        Ok(gone)
    }

    /// A removal or role change Clerk refused: the pass stops for refused credentials, and
    /// otherwise notes it and goes on.
    fn removal_failed(&mut self, error: ClientError) -> Result<(), Stop> {
        if refused_credentials(&error) {
            return Err(Stop::Unauthorized(error));
        }
        self.report.failed += 1;
        self.note_error("membership change", &error);
        Ok(())
    }

    async fn change_role(
        &mut self,
        state: &State,
        organization_id: &str,
        email: &crate::domain::Email,
        user_id: &str,
        from: &str,
        to: &str,
    ) -> Result<(), Stop> {
        self.checkpoint().await?;
        match self
            .clerk
            .update_membership_role(organization_id, user_id, to)
            .await
        {
            Ok(_) => {}
            Err(error) => return self.removal_failed(error),
        }
        let entry = state.ledger.iter().find(|e| {
            e.owned
                && e.organization_id == organization_id
                && matches!(e.state, MembershipState::Member | MembershipState::Accepted)
                && (e.user_id.as_deref() == Some(user_id) || &e.email == email)
        });
        if let Some(entry) = entry {
            membership_ledger::set_role(&self.reconciler.pool, entry.id, to).await?;
        }
        self.report.roles_changed += 1;
        tracing::info!(
            action = "change_role",
            email = self.reconciler.config.reporter.email(email.as_str()),
            organization = organization_id,
            from,
            to,
            "membership role set back to the roster's"
        );
        Ok(())
    }

    /// Makes a known user a member: written `sending` first, settled after.
    async fn add_member(
        &mut self,
        organization_id: &str,
        row: &DesiredMembership,
        user_id: &str,
        role: &str,
    ) -> Result<(), Stop> {
        self.checkpoint().await?;
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        let mut conn = pool.acquire().await?;
        let ledger_id = membership_ledger::start_sending(
            &mut conn,
            &membership_ledger::Sending {
                target: &target,
                email: &row.email,
                organization_id,
                kind: MembershipKind::Membership,
                role,
                row_digest: Some(&row.digest),
                user_id: Some(user_id),
                call_id: None,
                run_id: Some(self.run_id),
            },
        )
        .await?;
        drop(conn);
        let Some(ledger_id) = ledger_id else {
            return Ok(());
        };
        let email = self.reconciler.config.reporter.email(row.email.as_str());
        match self
            .clerk
            .create_membership(organization_id, user_id, role)
            .await
        {
            Ok(_) => {
                membership_ledger::mark_member(pool, ledger_id, user_id).await?;
                self.report.members_added += 1;
                tracing::info!(
                    action = "add_member",
                    email,
                    organization = organization_id,
                    role,
                    "member added"
                );
            }
            Err(error) if error.may_have_applied() => {
                self.report.unsettled += 1;
                self.note_error("membership create", &error);
            }
            Err(error) => {
                let refusal = error.organization_refusal();
                if refusal == Some(OrganizationRefusal::OrganizationFull) {
                    organizations::mark_full(pool, &target, organization_id).await?;
                }
                match refusal {
                    // Someone made it meanwhile (the next listing shows it), or it could
                    // not be sent at all: nothing happened here.
                    Some(
                        OrganizationRefusal::AlreadyMember | OrganizationRefusal::OrganizationFull,
                    ) => membership_ledger::forget(pool, &[ledger_id]).await?,
                    _ if matches!(
                        error,
                        ClientError::NeverSent { .. } | ClientError::RateLimited { .. }
                    ) =>
                    {
                        membership_ledger::forget(pool, &[ledger_id]).await?
                    }
                    _ => {
                        if refused_credentials(&error) {
                            membership_ledger::forget(pool, &[ledger_id]).await?;
                            return Err(Stop::Unauthorized(error));
                        }
                        self.failed(ledger_id, organization_id, &row.email, &error)
                            .await?;
                    }
                }
                self.note_error("membership create", &error);
            }
        }
        Ok(())
    }

    /// Records a refused create: for good (until the row changes) when Clerk says the
    /// request itself is wrong (422, or a role or organization not found), else tried again
    /// after a backoff.
    async fn failed(
        &mut self,
        ledger_id: i64,
        organization_id: &str,
        email: &crate::domain::Email,
        error: &ClientError,
    ) -> Result<(), Stop> {
        let pool = &self.reconciler.pool;
        let code = error
            .clerk_errors()
            .first()
            .map(|e| e.code.clone())
            .unwrap_or_else(|| "http_error".to_owned());
        let terminal = error.status() == Some(422)
            || error.organization_refusal() == Some(OrganizationRefusal::NotFound);
        let attempts = membership_ledger::of_person(pool, self.target(), organization_id, email)
            .await?
            .iter()
            .find(|e| e.id == ledger_id)
            .map_or(1, |e| e.attempts);
        let next = (!terminal).then(|| backoff_after(attempts, Utc::now()));
        let shown = self.reconciler.config.reporter.scrub(&error.to_string());
        membership_ledger::mark_failed(pool, ledger_id, &code, &shown, terminal, next).await?;
        self.report.failed += 1;
        Ok(())
    }

    /// Sends the invitations while the budget lasts, each call chosen by [`next_call`];
    /// waits within the cycle for a slot that frees within the linger, waking the moment it
    /// frees: the window's calls are read from Postgres once ([`Spent`]) and this pass's own
    /// added as they are recorded, so following the previous window's calls as they age out
    /// costs no read.
    async fn drain(&mut self, queues: &mut Queues) -> Result<(), Stop> {
        if queues.len() == 0 {
            return Ok(());
        }
        let mut spent = self.spent().await?;
        let result = self.drain_with(queues, &mut spent).await;
        self.report.backlog = queues.len();
        if self.report.backlog > 0 {
            let budget = match self.budget().await {
                Ok(budget) => budget,
                Err(_) => spent.budget(spent.now()),
            };
            self.report.next_budget_at = Some(budget.next_slot_at(Utc::now()));
        }
        result
    }

    async fn drain_with(&mut self, queues: &mut Queues, spent: &mut Spent) -> Result<(), Stop> {
        while queues.len() > 0 {
            let budget = spent.budget(spent.now());
            let Some((organization, operation, members)) = self.next(queues, &budget, spent) else {
                if !self.wait_for_slot(&budget, spent).await? {
                    return Ok(());
                }
                continue;
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = self.clerk.pace() => {}
            }
            if let Err(stop) = self.checkpoint().await {
                queues.put_back(&organization, members);
                return Err(stop);
            }
            let sent = self.send(operation, &organization, members, spent).await?;
            if !self.after(sent, queues, &organization) {
                return Ok(());
            }
            if spent.stale {
                // A 429 stored a block: read the window again, block included.
                *spent = self.spent().await?;
            }
        }
        Ok(())
    }

    /// The next call's organization, endpoint and members, taken out of the queues: one a
    /// refused bulk call left goes first while a single slot is free, then what
    /// [`next_call`] picks. `None` when nothing can go out now.
    fn next(
        &self,
        queues: &mut Queues,
        budget: &Budget,
        spent: &Spent,
    ) -> Option<(String, Operation, Vec<Invitee>)> {
        if budget.single.left > 0 {
            if let Some((organization, member)) = queues.singly.pop_front() {
                let single = Operation::CreateOrganizationInvitation;
                return Some((organization, single, vec![member]));
            }
        }
        let (ids, waiting) = queues.waiting();
        let single_soon = budget.single.left == 0 && self.frees_soon(budget.single.frees_at, spent);
        let call = next_call(&waiting, budget.bulk.left, budget.single.left, single_soon)?;
        let (index, size, operation) = match call {
            NextCall::Bulk { organization, size } => (
                organization,
                size,
                Operation::CreateOrganizationInvitationsBulk,
            ),
            NextCall::Single { organization } => {
                (organization, 1, Operation::CreateOrganizationInvitation)
            }
        };
        let organization = ids[index].clone();
        let queue = queues
            .by_organization
            .entry(organization.clone())
            .or_default();
        let members: Vec<Invitee> = queue
            .drain(..size.min(queue.len()))
            .map(|(_, member)| member)
            .collect();
        Some((organization, operation, members))
    }

    /// Takes in what a call left; `false` when creates stop this cycle.
    fn after(&mut self, sent: Sent, queues: &mut Queues, organization: &str) -> bool {
        match sent {
            Sent::Done => true,
            Sent::EndpointClosed(back) => {
                // The block is stored: the window is read again before the next call.
                queues.put_back(organization, back);
                true
            }
            Sent::Full => {
                // Its people wait for room; the rest go on.
                let waiting = queues
                    .by_organization
                    .remove(organization)
                    .map_or(0, |q| q.len());
                queues.singly.retain(|(id, _)| id != organization);
                *self.report.waiting.entry("full").or_insert(0) += waiting;
                true
            }
            Sent::Singly(members) => {
                queues
                    .singly
                    .extend(members.into_iter().map(|m| (organization.to_owned(), m)));
                true
            }
            Sent::Halt(back) => {
                queues.put_back(organization, back);
                false
            }
        }
    }

    async fn budget(&self) -> Result<Budget, sqlx::Error> {
        budget_store::current_of(
            &self.reconciler.pool,
            self.target(),
            Invitations::Organization,
            self.config().limits,
        )
        .await
    }

    /// The organization budget's window as Postgres holds it now.
    async fn spent(&self) -> Result<Spent, sqlx::Error> {
        let pool = &self.reconciler.pool;
        let limits = self.config().limits;
        let db_now = store::now(pool).await?;
        // Read after the answer: the database's clock is taken as at most this far ahead,
        // so a slot is never thought free before Postgres's clock says so.
        let skew = db_now - Utc::now();
        let window = chrono::Duration::from_std(limits.window + EDGE_MARGIN)
            .unwrap_or(chrono::Duration::hours(1));
        let since = db_now - window;
        let mut endpoints = Vec::with_capacity(2);
        for (operation, limit) in Invitations::Organization.endpoints(&limits) {
            let name = operation.as_str();
            endpoints.push(Calls {
                limit,
                calls: budget_store::calls_since(pool, self.target(), name, since).await?,
                blocked_until: budget_store::blocked_until(pool, self.target(), name).await?,
            });
        }
        let single = endpoints.pop().unwrap_or_default();
        let bulk = endpoints.pop().unwrap_or_default();
        Ok(Spent {
            window: limits.window,
            bulk,
            single,
            skew,
            stale: false,
        })
    }

    fn frees_soon(&self, frees_at: Option<chrono::DateTime<Utc>>, spent: &Spent) -> bool {
        let Some(frees_at) = frees_at else {
            return false;
        };
        (frees_at - spent.now()).to_std().unwrap_or_default() <= self.linger()
    }

    /// Sleeps until the next slot frees, when it frees within the linger; `false` when it
    /// does not (the cycle ends and the worker comes back then).
    async fn wait_for_slot(&mut self, budget: &Budget, spent: &Spent) -> Result<bool, Stop> {
        let Some(frees_at) = budget.next_free_at() else {
            return Ok(false);
        };
        let wait = (frees_at - spent.now()).to_std().unwrap_or_default();
        if wait > self.linger() {
            return Ok(false);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
            _ = tokio::time::sleep(wait) => {}
        }
        Ok(true)
    }

    /// One invitation create call: the call and its members recorded (`sending`) in one
    /// transaction before it goes out, settled after.
    async fn send(
        &mut self,
        operation: Operation,
        organization_id: &str,
        members: Vec<Invitee>,
        spent: &mut Spent,
    ) -> Result<Sent, Stop> {
        let Some((call_id, members, ledger_ids)) = self
            .record_sending(operation, organization_id, members, spent)
            .await?
        else {
            return Ok(Sent::Done);
        };
        let requests: Vec<CreateOrganizationInvitation> =
            members.iter().map(Invitee::request).collect();
        let result = if operation == Operation::CreateOrganizationInvitationsBulk {
            self.report.bulk_calls += 1;
            self.clerk
                .create_organization_invitations_bulk(organization_id, &requests)
                .await
        } else {
            self.report.single_calls += 1;
            self.clerk
                .create_organization_invitation(organization_id, &requests[0])
                .await
                .map(|invitation| vec![invitation])
        };
        let pool = &self.reconciler.pool;
        match result {
            Ok(invitations) => {
                budget_store::record_status(pool, call_id, 200).await?;
                let reporter = self.reconciler.config.reporter;
                for (member, ledger_id) in members.iter().zip(ledger_ids) {
                    let made = invitations.iter().find(|i| {
                        i.email_address
                            .trim()
                            .eq_ignore_ascii_case(member.row.email.as_str())
                    });
                    let email = reporter.email(member.row.email.as_str());
                    match made {
                        Some(invitation) => {
                            membership_ledger::mark_invited(pool, ledger_id, &invitation.id)
                                .await?;
                            self.report.invited += 1;
                            tracing::info!(action = "invite", email, organization = organization_id, role = %member.role, invitation_id = %invitation.id, "organization invitation sent");
                        }
                        None => {
                            self.report.unsettled += 1;
                            tracing::warn!(
                                action = "invite",
                                outcome = "unconfirmed",
                                email,
                                organization = organization_id,
                                "Clerk's answer did not include this address; settled next cycle"
                            );
                        }
                    }
                }
                Ok(Sent::Done)
            }
            Err(error) => {
                if matches!(error, ClientError::RateLimited { .. }) {
                    spent.stale = true;
                }
                self.refused(
                    operation,
                    organization_id,
                    call_id,
                    members,
                    ledger_ids,
                    error,
                )
                .await
            }
        }
    }

    /// Records the call against the budget and its members `sending`, in one transaction,
    /// and in `spent` at the time Postgres recorded it. A member another process is creating
    /// already is left out; `None` when none is left.
    async fn record_sending(
        &mut self,
        operation: Operation,
        organization_id: &str,
        members: Vec<Invitee>,
        spent: &mut Spent,
    ) -> Result<Option<(i64, Vec<Invitee>, Vec<i64>)>, Stop> {
        let target = self.target().to_owned();
        let mut tx = self.reconciler.pool.begin().await?;
        let call_id = budget_store::record_call(
            &mut *tx,
            &target,
            operation.as_str(),
            i32::try_from(members.len()).unwrap_or(i32::MAX),
            Some(self.run_id),
        )
        .await?;
        let mut kept = Vec::with_capacity(members.len());
        let mut ledger_ids = Vec::with_capacity(members.len());
        for member in members {
            let sending = membership_ledger::Sending {
                target: &target,
                email: &member.row.email,
                organization_id,
                kind: MembershipKind::Invitation,
                role: &member.role,
                row_digest: Some(&member.row.digest),
                user_id: None,
                call_id: Some(call_id),
                run_id: Some(self.run_id),
            };
            if let Some(id) = membership_ledger::start_sending(&mut tx, &sending).await? {
                ledger_ids.push(id);
                kept.push(member);
            }
        }
        if kept.is_empty() {
            tx.rollback().await?;
            return Ok(None);
        }
        // now() is the transaction's start, the call's recorded time.
        let called_at = store::now(&mut *tx).await?;
        tx.commit().await?;
        spent.record(operation, called_at);
        Ok(Some((call_id, kept, ledger_ids)))
    }

    /// Takes a refused invitation create apart.
    async fn refused(
        &mut self,
        operation: Operation,
        organization_id: &str,
        call_id: i64,
        members: Vec<Invitee>,
        ledger_ids: Vec<i64>,
        error: ClientError,
    ) -> Result<Sent, Stop> {
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        if let Some(status) = error.status() {
            budget_store::record_status(pool, call_id, i32::from(status)).await?;
        }
        match &error {
            ClientError::NeverSent { .. } => {
                budget_store::forget_call(pool, call_id).await?;
                membership_ledger::forget(pool, &ledger_ids).await?;
                self.note_error("invitation create", &error);
                return Ok(Sent::Halt(members));
            }
            ClientError::RateLimited {
                retry_after, sent, ..
            } => {
                if !sent {
                    budget_store::forget_call(pool, call_id).await?;
                }
                let wait = retry_after
                    .map_or(60, |d| d.as_secs().max(1))
                    .min(crate::clerk::client::MAX_RETRY_AFTER.as_secs());
                budget_store::record_block(
                    pool,
                    &target,
                    operation.as_str(),
                    i64::try_from(wait).unwrap_or(i64::MAX),
                )
                .await?;
                membership_ledger::forget(pool, &ledger_ids).await?;
                return Ok(Sent::EndpointClosed(members));
            }
            _ => {}
        }
        if error.may_have_applied() {
            self.report.unsettled += members.len();
            self.note_error("invitation create", &error);
            return Ok(Sent::Halt(Vec::new()));
        }
        if refused_credentials(&error) {
            if error.status().is_some() {
                membership_ledger::forget(pool, &ledger_ids).await?;
            }
            return Err(Stop::Unauthorized(error));
        }
        let refusal = error.organization_refusal();
        if refusal == Some(OrganizationRefusal::OrganizationFull) {
            organizations::mark_full(pool, &target, organization_id).await?;
            membership_ledger::forget(pool, &ledger_ids).await?;
            tracing::warn!(
                organization = organization_id,
                "the organization is full; its people wait for room"
            );
            *self.report.waiting.entry("full").or_insert(0) += members.len();
            return Ok(Sent::Full);
        }
        if operation == Operation::CreateOrganizationInvitationsBulk && members.len() > 1 {
            // One bad item may fail the whole call: each goes again alone.
            membership_ledger::forget(pool, &ledger_ids).await?;
            self.note_error("bulk invitation create", &error);
            return Ok(Sent::Singly(members));
        }
        match refusal {
            // A pending invitation or a membership exists already: the next listing shows it.
            Some(
                OrganizationRefusal::PendingInvitationExists | OrganizationRefusal::AlreadyMember,
            ) => {
                membership_ledger::forget(pool, &ledger_ids).await?;
            }
            _ => {
                for (member, ledger_id) in members.iter().zip(&ledger_ids) {
                    self.failed(*ledger_id, organization_id, &member.row.email, &error)
                        .await?;
                }
            }
        }
        self.note_error("invitation create", &error);
        Ok(Sent::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    fn spent(bulk: u32, single: u32) -> Spent {
        let calls = |limit| Calls {
            limit,
            calls: Vec::new(),
            blocked_until: None,
        };
        Spent {
            window: std::time::Duration::from_secs(60),
            bulk: calls(bulk),
            single: calls(single),
            skew: chrono::Duration::zero(),
            stale: false,
        }
    }

    #[test]
    fn the_pass_s_own_calls_use_the_budget_and_free_it_one_window_and_the_margin_later() {
        let mut spent = spent(2, 3);
        let single = Operation::CreateOrganizationInvitation;
        let bulk = Operation::CreateOrganizationInvitationsBulk;
        spent.record(single, at(0));
        spent.record(single, at(20));
        spent.record(single, at(40));
        spent.record(bulk, at(50));
        let budget = spent.budget(at(100));
        assert_eq!((budget.bulk.left, budget.single.left), (1, 0));
        // The first single frees 61 s (the window and its edge margin) after it was made,
        // and not a moment sooner; then the next, 20 ms later.
        assert_eq!(budget.single.frees_at, Some(at(61_000)));
        assert_eq!(budget.next_free_at(), Some(at(61_000)));
        assert_eq!(spent.budget(at(60_999)).single.left, 0);
        assert_eq!(spent.budget(at(61_000)).single.left, 1);
        assert_eq!(spent.budget(at(61_000)).single.frees_at, None);
        spent.record(single, at(61_005));
        let budget = spent.budget(at(61_010));
        assert_eq!(budget.single.left, 0);
        assert_eq!(budget.single.frees_at, Some(at(61_020)));
        // Calls out of the window are forgotten as new ones are recorded.
        assert_eq!(spent.single.calls, vec![at(20), at(40), at(61_005)]);
    }

    #[test]
    fn a_stored_block_keeps_the_endpoint_closed_until_it_ends() {
        let mut spent = spent(2, 3);
        spent.single.blocked_until = Some(at(5_000));
        let budget = spent.budget(at(1_000));
        assert_eq!(budget.single.left, 0);
        assert_eq!(budget.single.frees_at, Some(at(5_000)));
        assert_eq!(spent.budget(at(5_001)).single.left, 3);
    }
}
