//! Reading what the membership plan looks at: the roster, the live ledger, each organization
//! once (by the reference a row gives, or the id the ledger holds), its memberships and
//! pending invitations, the instance's roles, and the users among those who would be
//! invited. What the listings show of the ledger's entries is recorded first (not in a dry
//! run, whose plan sees it all the same): an owned invitation no longer pending (accepted,
//! expired or revoked: looked up by address, as no webhook tells of an expiry) and an owned
//! membership deleted in Clerk.

use std::collections::{HashMap, HashSet};

use chrono::Utc;

use super::guard::{self, Holding, Removal, Target};
use super::plan::{
    self, Holdings, Invitation, InvitationStatus, Item, Member, MembershipKind,
    MembershipLedgerEntry, MembershipRosterRow, MembershipState, Organization, Plan, Policy,
    Resolution, Room,
};
use super::{refused_credentials, Pass};
use crate::clerk::organization::{OrganizationInvitation, OrganizationMembership};
use crate::clerk::{ClientError, OrganizationRefusal};
use crate::domain::Email;
use crate::reconcile::execute::Stop;
use crate::reconcile::guard::RevocationLimits;
use crate::store::{membership_ledger, memberships, organizations, users};

/// What one pass read.
pub(super) struct State {
    pub(super) rows: Vec<MembershipRosterRow>,
    pub(super) ledger: Vec<MembershipLedgerEntry>,
    pub(super) resolved: HashMap<String, Resolution>,
    pub(super) holdings: HashMap<String, Holdings>,
    pub(super) users: HashMap<Email, String>,
    /// Of the rows' addresses not known as users with an id, those the instance roster names
    /// too (see [`plan::Inputs::instance_first`]).
    pub(super) instance_first: HashSet<Email>,
    pub(super) roles: Option<HashSet<String>>,
    /// What Clerk said of each organization found, by id.
    found: HashMap<String, crate::clerk::organization::Organization>,
}

/// A plan and the guard's verdict on its removals.
pub(super) struct Decision {
    pub(super) plan: Plan,
    pub(super) verdict: guard::Verdict,
}

impl State {
    pub(super) fn decide(
        &self,
        policy: &Policy,
        limits: &RevocationLimits,
        allow: usize,
    ) -> Decision {
        let plan = plan::plan(
            plan::Inputs {
                rows: &self.rows,
                resolved: &self.resolved,
                holdings: &self.holdings,
                ledger: &self.ledger,
                users: &self.users,
                instance_first: &self.instance_first,
                roles: self.roles.as_ref(),
                now: Utc::now(),
            },
            policy,
        );
        let verdict = guard::check(
            removals(&plan),
            self.rows.len(),
            &self.holding(),
            allow,
            limits,
        );
        Decision { plan, verdict }
    }

    /// Each organization's roster rows and what invite-sync owns in it.
    fn holding(&self) -> HashMap<String, Holding> {
        holding(&self.rows, &self.ledger, &self.resolved, &self.holdings)
    }

    /// The organizations the pass looked at, by id.
    pub(super) fn organizations(&self) -> usize {
        self.holdings.len()
    }
}

/// Each organization's roster rows and what invite-sync owns in it: what the guard weighs
/// the removals against (the pass's and the preview's).
pub(super) fn holding(
    rows: &[MembershipRosterRow],
    ledger: &[MembershipLedgerEntry],
    resolved: &HashMap<String, Resolution>,
    holdings: &HashMap<String, Holdings>,
) -> HashMap<String, Holding> {
    let mut holding: HashMap<String, Holding> = HashMap::new();
    for row in rows {
        let reference = match row {
            Ok(row) => row.organization.as_str(),
            Err(invalid) => invalid.organization.trim_matches(' '),
        };
        if let Some(Resolution::Found(organization)) = resolved.get(reference) {
            holding.entry(organization.id.clone()).or_default().rows += 1;
        }
    }
    for (id, held) in holdings {
        let owned_pending = held
            .invitations
            .iter()
            .filter(|i| i.status == InvitationStatus::Pending)
            .filter(|i| {
                ledger.iter().any(|e| {
                    e.owned
                        && e.kind == MembershipKind::Invitation
                        && e.clerk_id.as_deref() == Some(i.id.as_str())
                })
            })
            .count();
        let owned_members = ledger
            .iter()
            .filter(|e| e.owned && &e.organization_id == id)
            .filter(|e| matches!(e.state, MembershipState::Member | MembershipState::Accepted))
            .count();
        holding.entry(id.clone()).or_default().owned = owned_pending + owned_members;
    }
    holding
}

/// What the plan takes away: revocations (a replacement's too) and removals.
pub(super) fn removals(plan: &Plan) -> Vec<Removal> {
    plan.items
        .iter()
        .filter_map(|item| {
            let (organization_id, email, target) = match item {
                Item::Revoke {
                    organization_id,
                    email,
                    invitation_id,
                } => (
                    organization_id,
                    email.clone(),
                    Target::Invitation(invitation_id.clone()),
                ),
                Item::Replace {
                    organization_id,
                    row,
                    invitation_id,
                    ..
                } => (
                    organization_id,
                    row.email.clone(),
                    Target::Invitation(invitation_id.clone()),
                ),
                Item::RemoveMember {
                    organization_id,
                    email,
                    user_id,
                } => (
                    organization_id,
                    email.clone(),
                    Target::Member(user_id.clone()),
                ),
                _ => return None,
            };
            Some(Removal {
                organization_id: organization_id.clone(),
                email,
                target,
            })
        })
        .collect()
}

/// An invitation as the plan reads it; `None` for an address that does not parse.
pub(super) fn invitation(invitation: &OrganizationInvitation) -> Option<Invitation> {
    Some(Invitation {
        id: invitation.id.clone(),
        email: Email::parse(&invitation.email_address).ok()?,
        role: invitation.role.clone(),
        status: status(invitation.status),
        created_at: invitation.created_at,
    })
}

fn status(status: crate::clerk::InvitationStatus) -> InvitationStatus {
    use crate::clerk::InvitationStatus as S;
    match status {
        S::Pending => InvitationStatus::Pending,
        S::Accepted => InvitationStatus::Accepted,
        S::Revoked => InvitationStatus::Revoked,
        S::Expired => InvitationStatus::Expired,
    }
}

/// A membership as the plan reads it; `None` without a user.
pub(super) fn member(membership: &OrganizationMembership) -> Option<Member> {
    Some(Member {
        user_id: membership.user_id()?.to_owned(),
        email: membership.identifier().and_then(|i| Email::parse(i).ok()),
        role: membership.role.clone(),
    })
}

/// What one organization listing found.
struct Listed {
    members: Vec<OrganizationMembership>,
    pending: Vec<OrganizationInvitation>,
}

impl Pass<'_> {
    /// Reads what the plan looks at; `None` when there is nothing to do (no roster row and
    /// nothing in the ledger), so that a target without memberships asks Clerk nothing.
    pub(super) async fn observe(&mut self) -> Result<Option<State>, Stop> {
        let pool = &self.reconciler.pool;
        let relation = self.config().relation.clone();
        let rows = match memberships::check(pool, &relation).await {
            Ok(()) => memberships::read_all(pool, &relation).await,
            Err(error) => Err(error),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(memberships::ReadError::Database(error)) => return Err(Stop::Database(error)),
            Err(error) => {
                self.report.errors.push(error.to_string());
                return Ok(None);
            }
        };
        let ledger = membership_ledger::live(pool, self.target()).await?;
        self.report.rows = rows.len();
        if rows.is_empty() && ledger.is_empty() {
            return Ok(None);
        }
        let mut state = State {
            rows,
            ledger,
            resolved: HashMap::new(),
            holdings: HashMap::new(),
            users: HashMap::new(),
            instance_first: HashSet::new(),
            roles: None,
            found: HashMap::new(),
        };
        self.resolve(&mut state).await?;
        self.list(&mut state).await?;
        self.report.organizations = state.organizations();
        if state.rows.iter().any(Result::is_ok) {
            state.roles = self.roles().await?;
        }
        if !self.users(&mut state).await? {
            return Ok(None);
        }
        Ok(Some(state))
    }

    /// Resolves each reference once: the rows' (ids or slugs), then the ledger's ids not
    /// already found.
    async fn resolve(&mut self, state: &mut State) -> Result<(), Stop> {
        let mut references: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for row in &state.rows {
            let reference = match row {
                Ok(row) => row.organization.clone(),
                Err(invalid) => invalid.organization.trim_matches(' ').to_owned(),
            };
            if !reference.is_empty() && seen.insert(reference.clone()) {
                references.push(reference);
            }
        }
        for entry in &state.ledger {
            if seen.insert(entry.organization_id.clone()) {
                references.push(entry.organization_id.clone());
            }
        }
        for reference in references {
            if state.found.contains_key(&reference) {
                // A ledger id a row's slug already resolved to.
                continue;
            }
            self.checkpoint().await?;
            let resolution = match self.clerk.get_organization(&reference).await {
                Ok(organization) => {
                    let found = Organization {
                        id: organization.id.clone(),
                        slug: organization.slug.clone(),
                        // Set once its members and invitations are listed.
                        room: Room::Unlimited,
                    };
                    state.found.insert(organization.id.clone(), organization);
                    Resolution::Found(found)
                }
                Err(error)
                    if error.organization_refusal() == Some(OrganizationRefusal::NotFound) =>
                {
                    Resolution::Unknown
                }
                Err(error) if refused_credentials(&error) => return Err(Stop::Unauthorized(error)),
                Err(error) => {
                    self.note_error("organization", &error);
                    Resolution::Unavailable(
                        self.reconciler.config.reporter.scrub(&error.to_string()),
                    )
                }
            };
            state.resolved.insert(reference, resolution);
        }
        Ok(())
    }

    /// Lists each organization's memberships and pending invitations, records what they
    /// show of the ledger's entries, and its room.
    async fn list(&mut self, state: &mut State) -> Result<(), Stop> {
        let mut organizations: Vec<(String, Organization)> = Vec::new();
        let mut ids = HashSet::new();
        for resolution in state.resolved.values() {
            if let Resolution::Found(organization) = resolution {
                if ids.insert(organization.id.clone()) {
                    organizations.push((organization.id.clone(), organization.clone()));
                }
            }
        }
        organizations.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pending = self
            .pending_of_every_organization(organizations.len())
            .await?;
        for (id, _) in &organizations {
            self.checkpoint().await?;
            let known = pending
                .as_mut()
                .map(|all| all.remove(id).unwrap_or_default());
            let listed = match self.list_one(id, known).await {
                Ok(listed) => listed,
                Err(error) if refused_credentials(&error) => return Err(Stop::Unauthorized(error)),
                Err(error) => {
                    self.note_error("organization listing", &error);
                    continue;
                }
            };
            let mut holdings = Holdings {
                members: listed.members.iter().filter_map(member).collect(),
                invitations: listed.pending.iter().filter_map(invitation).collect(),
            };
            match self
                .observe_ledger(id, &mut state.ledger, &mut holdings)
                .await
            {
                Ok(()) => {}
                Err(ObserveError::Stop(stop)) => return Err(stop),
                Err(ObserveError::Lookup(error)) => {
                    // What became of an owned invitation is not known: nothing is decided
                    // for the organization blind.
                    self.note_error("invitation lookup", &error);
                    continue;
                }
            }
            state.holdings.insert(id.clone(), holdings);
        }
        self.record_rooms(state).await
    }

    /// The pending invitations of every organization of the instance, by organization, in
    /// one paged listing, when more than one organization is looked at (then it costs fewer
    /// calls than a listing each). `None` when each is to be listed on its own: one
    /// organization, or the instance's listing failed.
    async fn pending_of_every_organization(
        &mut self,
        organizations: usize,
    ) -> Result<Option<HashMap<String, Vec<OrganizationInvitation>>>, Stop> {
        if organizations < 2 {
            return Ok(None);
        }
        self.checkpoint().await?;
        let pending = crate::clerk::InvitationStatus::Pending;
        match self
            .clerk
            .list_instance_organization_invitations(Some(pending))
            .await
        {
            Ok(all) => {
                let mut by_organization: HashMap<String, Vec<OrganizationInvitation>> =
                    HashMap::new();
                for invitation in all {
                    by_organization
                        .entry(invitation.organization_id.clone())
                        .or_default()
                        .push(invitation);
                }
                Ok(Some(by_organization))
            }
            Err(error) if refused_credentials(&error) => Err(Stop::Unauthorized(error)),
            Err(error) => {
                self.note_error("organization invitations listing", &error);
                Ok(None)
            }
        }
    }

    /// An organization's memberships, and its pending invitations unless `pending` holds
    /// them already.
    async fn list_one(
        &self,
        id: &str,
        pending: Option<Vec<OrganizationInvitation>>,
    ) -> Result<Listed, ClientError> {
        let members = self.clerk.list_memberships(id).await?;
        let pending = match pending {
            Some(pending) => pending,
            None => {
                self.clerk
                    .list_all_organization_invitations(
                        id,
                        Some(crate::clerk::InvitationStatus::Pending),
                    )
                    .await?
            }
        };
        Ok(Listed { members, pending })
    }

    /// Sets each listed organization's room from its limit, what its listing counted and
    /// what the store remembers of a refusal for being full, and records the organizations.
    async fn record_rooms(&mut self, state: &mut State) -> Result<(), Stop> {
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        let mut figures: Vec<(&crate::clerk::organization::Organization, usize, usize)> =
            Vec::new();
        for (id, holdings) in &state.holdings {
            let Some(organization) = state.found.get(id) else {
                continue;
            };
            let pending = holdings
                .invitations
                .iter()
                .filter(|i| i.status == InvitationStatus::Pending)
                .count();
            figures.push((organization, holdings.members.len(), pending));
        }
        let resolved: Vec<organizations::Resolved<'_>> = figures
            .iter()
            .map(|(organization, members, pending)| organizations::Resolved {
                organization_id: &organization.id,
                slug: Some(&organization.slug),
                name: &organization.name,
                max_allowed_memberships: u32::try_from(organization.max_allowed_memberships)
                    .unwrap_or(u32::MAX),
                members_count: u32::try_from(*members).unwrap_or(u32::MAX),
                pending_invitations_count: u32::try_from(*pending).unwrap_or(u32::MAX),
            })
            .collect();
        if !self.dry_run {
            organizations::upsert(pool, &target, &resolved).await?;
        }
        let full: HashSet<String> = organizations::all(pool, &target)
            .await?
            .into_iter()
            .filter(|o| o.full_refused_at.is_some())
            .map(|o| o.organization_id)
            .collect();
        let rooms: HashMap<String, Room> = figures
            .iter()
            .map(|(organization, members, pending)| {
                let max = i64::try_from(organization.max_allowed_memberships).unwrap_or(i64::MAX);
                let room = if full.contains(&organization.id) && max > 0 {
                    Room::Left(0)
                } else {
                    Room::of(max, *members as i64, *pending as i64)
                };
                (organization.id.clone(), room)
            })
            .collect();
        for resolution in state.resolved.values_mut() {
            if let Resolution::Found(organization) = resolution {
                if let Some(room) = rooms.get(&organization.id) {
                    organization.room = *room;
                }
            }
        }
        Ok(())
    }

    /// Records what an organization's listing shows of the ledger's live entries there: an
    /// owned invitation no longer pending is looked up by address (accepted, expired or
    /// revoked); a membership invite-sync made that is gone was deleted in Clerk.
    async fn observe_ledger(
        &mut self,
        organization_id: &str,
        ledger: &mut [MembershipLedgerEntry],
        holdings: &mut Holdings,
    ) -> Result<(), ObserveError> {
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        let pending: HashSet<String> = holdings.invitations.iter().map(|i| i.id.clone()).collect();
        let members: HashSet<String> = holdings.members.iter().map(|m| m.user_id.clone()).collect();
        for entry in ledger.iter_mut() {
            if entry.organization_id != organization_id {
                continue;
            }
            match (entry.kind, entry.state, entry.clerk_id.clone()) {
                (MembershipKind::Invitation, MembershipState::Pending, Some(id))
                    if !pending.contains(&id) =>
                {
                    let found = self
                        .clerk
                        .find_organization_invitations_by_email(
                            organization_id,
                            entry.email.as_str(),
                        )
                        .await
                        .map_err(ObserveError::Lookup)?;
                    let fate = found.iter().find(|i| i.id == id).map(|i| status(i.status));
                    let state = match fate {
                        Some(InvitationStatus::Pending) => {
                            // Listed late: the plan sees it pending.
                            holdings
                                .invitations
                                .extend(found.iter().filter(|i| i.id == id).filter_map(invitation));
                            continue;
                        }
                        Some(InvitationStatus::Accepted) => MembershipState::Accepted,
                        Some(InvitationStatus::Expired) => {
                            holdings
                                .invitations
                                .extend(found.iter().filter(|i| i.id == id).filter_map(invitation));
                            MembershipState::Expired
                        }
                        Some(InvitationStatus::Revoked) | None => MembershipState::Revoked,
                    };
                    self.record_fate(&id, state).await.map_err(stop)?;
                    entry.state = state;
                }
                (_, MembershipState::Member | MembershipState::Accepted, _) if entry.owned => {
                    let Some(user_id) = entry.user_id.clone() else {
                        continue;
                    };
                    if members.contains(&user_id) {
                        continue;
                    }
                    if !self.dry_run {
                        membership_ledger::mark_removed(pool, &target, organization_id, &user_id)
                            .await
                            .map_err(stop)?;
                    }
                    self.report.memberships_gone += 1;
                    tracing::info!(
                        email = self.reconciler.config.reporter.email(entry.email.as_str()),
                        organization = organization_id,
                        "a membership invite-sync made was deleted in Clerk"
                    );
                    entry.state = MembershipState::Removed;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records what became of an owned invitation that left the pending list (nothing in a
    /// dry run: the plan sees it all the same).
    async fn record_fate(
        &self,
        invitation_id: &str,
        state: MembershipState,
    ) -> Result<(), sqlx::Error> {
        if self.dry_run {
            return Ok(());
        }
        let (pool, target) = (&self.reconciler.pool, self.target());
        match state {
            MembershipState::Accepted => {
                membership_ledger::mark_accepted(pool, target, invitation_id, None).await?
            }
            MembershipState::Expired => {
                membership_ledger::mark_expired(pool, target, invitation_id).await?
            }
            _ => membership_ledger::mark_revoked(pool, target, invitation_id).await?,
        };
        Ok(())
    }

    /// The instance's organization role keys; `None` when they could not be read (no row
    /// is then refused for its role).
    async fn roles(&mut self) -> Result<Option<HashSet<String>>, Stop> {
        self.checkpoint().await?;
        match self.clerk.list_organization_roles().await {
            Ok(roles) => Ok(Some(roles.into_iter().map(|r| r.key).collect())),
            Err(error) if refused_credentials(&error) => Err(Stop::Unauthorized(error)),
            Err(error) => {
                self.note_error("organization roles", &error);
                Ok(None)
            }
        }
    }

    /// The users among the rows' addresses: those the store knows with their ids; which of
    /// the rest the instance roster names, in one read; and those Clerk's users show (100 a
    /// call, at most `clerk.user_checks_per_cycle`), looked up among those who would be
    /// sent something: every one when existing accounts become members at once, otherwise
    /// only those waiting for their instance invitation. An address Clerk recently said is
    /// not a user is not asked again, except one waiting for its instance invitation: it
    /// becomes a user by accepting it, which no listing of pending invitations shows, so it
    /// is asked every cycle until then. `false` when the instance roster cannot be read:
    /// nothing is decided blind, and the pass ends with the error shown.
    async fn users(&mut self, state: &mut State) -> Result<bool, Stop> {
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        let mut emails: Vec<Email> = state
            .rows
            .iter()
            .filter_map(|row| row.as_ref().ok().map(|r| r.email.clone()))
            .collect();
        emails.sort();
        emails.dedup();
        state.users = users::user_ids(pool, &target, &emails).await?;
        let unknown: Vec<Email> = emails
            .into_iter()
            .filter(|e| !state.users.contains_key(e))
            .collect();
        if !self.instance_first(state, &unknown).await? {
            return Ok(false);
        }
        let membership = self.config().policy.existing_users == plan::ExistingUsers::Membership;
        if !membership && state.instance_first.is_empty() {
            return Ok(true);
        }
        let drain = self.reconciler.config.drain;
        let max_age = i64::try_from(drain.user_check_max_age.as_secs()).unwrap_or(i64::MAX);
        let not_users = users::fresh_not_users(pool, &target, max_age).await?;
        let candidates: Vec<Email> = self
            .candidates(state)
            .into_iter()
            .filter(|e| membership || state.instance_first.contains(e))
            .filter(|e| !state.users.contains_key(e))
            .filter(|e| !not_users.contains(e) || state.instance_first.contains(e))
            .take(drain.user_checks_per_cycle)
            .collect();
        for chunk in candidates.chunks(crate::clerk::client::USERS_PER_LOOKUP) {
            self.checkpoint().await?;
            let addresses: Vec<String> = chunk.iter().map(|e| e.as_str().to_owned()).collect();
            let found = match self.clerk.users_by_email(&addresses).await {
                Ok(found) => found,
                Err(error) if refused_credentials(&error) => return Err(Stop::Unauthorized(error)),
                Err(error) => {
                    // The rest are invited rather than made members: an invitation reaches
                    // an existing account too.
                    self.note_error("user lookup", &error);
                    break;
                }
            };
            let (known, not) = crate::reconcile::execute::refusal::users_among(chunk, &found);
            if !self.dry_run {
                users::record_users(pool, &target, &known, "lookup").await?;
                users::record_not_users(pool, &target, &not).await?;
            }
            self.report.user_checks += chunk.len();
            self.report.users_found += known.len();
            for user in known {
                if let Some(id) = user.clerk_user_id {
                    state.instance_first.remove(&user.email);
                    state.users.insert(user.email, id);
                }
            }
        }
        Ok(true)
    }

    /// Which of `unknown` the instance roster names too, into `state.instance_first`; `false`
    /// (the error noted) when the instance roster cannot be read.
    async fn instance_first(&mut self, state: &mut State, unknown: &[Email]) -> Result<bool, Stop> {
        let relation = &self.reconciler.config.relation;
        match memberships::on_instance_roster(&self.reconciler.pool, relation, unknown).await {
            Ok(found) => {
                state.instance_first = found;
                Ok(true)
            }
            Err(crate::store::desired::ReadError::Database(error)) => Err(Stop::Database(error)),
            Err(error) => {
                self.report.errors.push(error.to_string());
                Ok(false)
            }
        }
    }

    /// The addresses the plan may create something for: rows of a listed organization
    /// whose address is neither a member (as Clerk shows it) nor pending there.
    fn candidates(&self, state: &State) -> Vec<Email> {
        let mut candidates: Vec<Email> = state
            .rows
            .iter()
            .filter_map(|row| row.as_ref().ok())
            .filter(|row| {
                let Some(Resolution::Found(organization)) = state.resolved.get(&row.organization)
                else {
                    return false;
                };
                let Some(holdings) = state.holdings.get(&organization.id) else {
                    return false;
                };
                !holdings
                    .members
                    .iter()
                    .any(|m| m.email.as_ref() == Some(&row.email))
                    && !holdings
                        .invitations
                        .iter()
                        .any(|i| i.email == row.email && i.status == InvitationStatus::Pending)
            })
            .map(|row| row.email.clone())
            .collect();
        candidates.sort();
        candidates.dedup();
        candidates
    }
}

enum ObserveError {
    Stop(Stop),
    Lookup(ClientError),
}

fn stop(error: sqlx::Error) -> ObserveError {
    ObserveError::Stop(Stop::Database(error))
}
