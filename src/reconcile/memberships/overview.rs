//! The membership plan per organization, as people are shown it: `plan`'s organizations
//! section (a preview that asks Clerk as a cycle would but writes nothing and takes no lock),
//! the run record the `status` command reads, and the metrics (no label per organization:
//! their count is unbounded; the detail lives in `plan`, `status` and the API).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::guard::{self, Verdict};
use super::observe::{holding, invitation, member, removals};
use super::plan::{
    self, Category, Holdings, Invitation, InvitationStatus, Item, MembershipKind,
    MembershipLedgerEntry, MembershipRosterRow, MembershipState, Organization, Plan, Resolution,
    Room, Wait,
};
use super::{refused_credentials, MembershipReport};
use crate::clerk::budget::{bulk_reach, Budget, Invitations};
use crate::clerk::{ClientError, OrganizationRefusal};
use crate::domain::Email;
use crate::reconcile::Reconciler;
use crate::store::{budget as budget_store, membership_ledger, memberships, organizations, users};

/// What the next cycle's membership pass would do, per organization.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    /// Membership roster rows, valid or not.
    pub rows: usize,
    /// The plan's items by category, every organization together.
    pub counts: BTreeMap<&'static str, usize>,
    pub organizations: Vec<OrganizationPlan>,
    /// Removals the guard would hold, and why.
    pub held: usize,
    pub held_reason: Option<&'static str>,
    /// Organizations held because their roster emptied, by id.
    pub emptied: Vec<String>,
    /// The organization invitations' budget left now, across every organization.
    pub budget: Budget,
    /// Invitations to send (invite, reinvite, replace), every organization together.
    pub backlog: usize,
    /// Of those, how many the budget left now does not carry: they wait for it.
    pub waiting_for_budget: usize,
    /// How long the backlog takes at the organization budget's pace.
    pub eta_seconds: u64,
    /// Until when a 429 blocks an organization invitation endpoint, if one does.
    pub clerk_blocked_until: Option<DateTime<Utc>>,
    /// What could not be read (the plan goes on without it).
    pub errors: Vec<String>,
}

/// One organization of the preview.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrganizationPlan {
    /// The id, or for a reference Clerk did not resolve, the reference as the rows give it.
    pub organization: String,
    pub resolved: bool,
    pub slug: Option<String>,
    pub name: Option<String>,
    /// How many more members and pending invitations it takes; `None` when unlimited or
    /// not known.
    pub room: Option<usize>,
    pub full: bool,
    pub counts: BTreeMap<&'static str, usize>,
    /// Invitations to send (invite, reinvite, replace).
    pub backlog: usize,
    /// Waiting people by reason (`full`, `not_before`, `unsettled`, `refused`,
    /// `unavailable`, `instance_first`).
    pub waiting: BTreeMap<&'static str, usize>,
    /// Removals the guard would hold here.
    pub held: usize,
    pub items: Vec<Line>,
}

/// One item of an organization's plan that is not in sync.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub category: &'static str,
    pub email: String,
    /// What the item does or why it waits, in words.
    pub detail: Option<String>,
    /// Held by the guard.
    pub held: bool,
}

impl Preview {
    /// Whether the next cycle would change anything in Clerk's organizations, or hold a
    /// removal (what `plan --detailed-exitcode` counts).
    pub fn changes(&self) -> bool {
        self.held > 0
            || self
                .counts
                .iter()
                .any(|(category, n)| *n > 0 && is_change(category))
    }

    /// Whether there is anything to show: a roster row or something invite-sync holds.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 && self.organizations.is_empty() && self.errors.is_empty()
    }
}

/// The categories that change something in Clerk.
pub fn is_change(category: &str) -> bool {
    matches!(
        category,
        "revoke"
            | "remove_member"
            | "replace"
            | "invite"
            | "reinvite"
            | "add_member"
            | "change_role"
    )
}

/// The waiting reason of a wait, as the report and metrics name it.
pub fn wait_reason(wait: &Wait) -> &'static str {
    wait.reason()
}

/// Builds the per-organization view of a plan and the guard's verdict.
pub fn organizations(
    plan: &Plan,
    verdict: &Verdict,
    resolved: &HashMap<String, Resolution>,
    names: &HashMap<String, String>,
) -> Vec<OrganizationPlan> {
    let mut found: HashMap<&str, &Organization> = HashMap::new();
    for resolution in resolved.values() {
        if let Resolution::Found(organization) = resolution {
            found.insert(organization.id.as_str(), organization);
        }
    }
    let held: HashSet<(&str, &str)> = verdict
        .held
        .iter()
        .map(|r| (r.organization_id.as_str(), r.email.as_str()))
        .collect();
    let mut by_id: BTreeMap<String, OrganizationPlan> = BTreeMap::new();
    for organization in found.values() {
        by_id.insert(
            organization.id.clone(),
            of_organization(organization, names),
        );
    }
    for item in &plan.items {
        let id = item.organization();
        let entry = by_id
            .entry(id.to_owned())
            .or_insert_with(|| match found.get(id) {
                Some(organization) => of_organization(organization, names),
                None => OrganizationPlan {
                    organization: id.to_owned(),
                    ..OrganizationPlan::default()
                },
            });
        *entry.counts.entry(item.category().as_str()).or_insert(0) += 1;
        if item.sends_invitation() {
            entry.backlog += 1;
        }
        if let Item::Waiting { wait, .. } = item {
            *entry.waiting.entry(wait_reason(wait)).or_insert(0) += 1;
        }
        let is_held = is_removal(item) && held.contains(&(id, item.email()));
        if is_held {
            entry.held += 1;
        }
        if !matches!(item, Item::InSync { .. }) {
            entry.items.push(Line {
                category: item.category().as_str(),
                email: item.email().to_owned(),
                detail: detail(item),
                held: is_held,
            });
        }
    }
    by_id.into_values().collect()
}

fn of_organization(
    organization: &Organization,
    names: &HashMap<String, String>,
) -> OrganizationPlan {
    let room = match organization.room {
        Room::Unlimited => None,
        Room::Left(n) => Some(n),
    };
    OrganizationPlan {
        organization: organization.id.clone(),
        resolved: true,
        slug: Some(organization.slug.clone()).filter(|s| !s.is_empty()),
        name: names.get(&organization.id).cloned(),
        room,
        full: room == Some(0),
        ..OrganizationPlan::default()
    }
}

fn is_removal(item: &Item) -> bool {
    matches!(
        item,
        Item::Revoke { .. } | Item::Replace { .. } | Item::RemoveMember { .. }
    )
}

/// What an item does or why it waits, in words.
pub fn detail(item: &Item) -> Option<String> {
    match item {
        Item::Invite { role, .. } => Some(format!("as {role}")),
        Item::AddMember { role, .. } => Some(format!("as {role}, an existing account")),
        Item::ChangeRole { from, to, .. } => Some(format!("{from} -> {to}")),
        Item::Replace { from, role, .. } => Some(format!("{from} -> {role}, sent again")),
        Item::Revoke { invitation_id, .. } => Some(format!("{invitation_id}, its row went")),
        Item::RemoveMember { .. } => Some("its row went".to_owned()),
        Item::Reported { note, .. } => Some(note_text(note)),
        Item::Waiting { wait, .. } => Some(wait.describe()),
        Item::Invalid { reason, .. } => Some(reason.clone()),
        Item::InSync { .. } => None,
    }
}

fn note_text(note: &plan::Note) -> String {
    use plan::Note;
    match note {
        Note::ForeignMember => "a member invite-sync did not add; no row names them".to_owned(),
        Note::ForeignInvitation => {
            "a pending invitation invite-sync did not send; no row names it".to_owned()
        }
        Note::KeptMember => "its row went; kept as organizations.remove_members is off".to_owned(),
        Note::ForeignRole { have, want } => {
            format!("role {have}, the row wants {want}; not invite-sync's, left alone")
        }
        Note::Refused { code } => format!(
            "Clerk refused the create ({}); tried again when the row changes",
            code.as_deref().unwrap_or("error")
        ),
    }
}

/// What a run records of its membership pass (`invite_sync_runs.counts.memberships`, which
/// `status` reads): its report, with the hold reason in words. `None` when the pass had
/// nothing to look at.
pub fn record(report: &MembershipReport) -> Option<Value> {
    if report.rows == 0 && report.organizations == 0 && report.stopped.is_none() {
        return None;
    }
    let mut value = json!(report);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "hold_reason".to_owned(),
            json!(report.hold_reason.map(guard::HoldReason::describe)),
        );
    }
    Some(value)
}

/// Sets the membership metrics after a pass: the plan's gauges (a pass stopped before it
/// planned leaves them as the last plan set them: zeros would clear the held-removals
/// alert), the actions it counted, the organization budget left and the organizations full
/// as the store holds them.
pub async fn record_metrics(reconciler: &Reconciler, report: &MembershipReport) {
    use crate::metrics::{CategoryLabel, EndpointLabel, Metrics, ReasonLabel};
    let metrics = crate::metrics::metrics();
    if !(report.counts.is_empty() && report.stopped.is_some()) {
        for category in Category::ALL {
            let n = report.counts.get(category.as_str()).copied().unwrap_or(0);
            Metrics::gauge(
                &metrics.membership_items.get_or_create(&CategoryLabel {
                    category: category.as_str().to_owned(),
                }),
                n,
            );
        }
        for reason in crate::metrics::MEMBERSHIP_WAIT_REASONS {
            let n = report.waiting.get(reason).copied().unwrap_or(0);
            Metrics::gauge(
                &metrics.membership_waiting.get_or_create(&ReasonLabel {
                    reason: (*reason).to_owned(),
                }),
                n,
            );
        }
        Metrics::gauge(&metrics.membership_held, report.held);
        Metrics::gauge(&metrics.organizations_emptied_held, report.emptied.len());
        Metrics::gauge(&metrics.membership_backlog, report.backlog);
        Metrics::gauge(&metrics.organizations, report.organizations);
    }
    for (kind, outcome, n) in [
        ("invite", "done", report.invited),
        ("add_member", "done", report.members_added),
        ("change_role", "done", report.roles_changed),
        ("revoke", "done", report.revoked),
        ("remove_member", "done", report.removed),
        ("create", "adopted", report.adopted),
        ("create", "failed", report.failed),
    ] {
        metrics.membership_action(kind, outcome, n);
    }
    let pool = &reconciler.pool;
    let config = &reconciler.config;
    let read = async {
        let budget = budget_store::current_of(
            pool,
            &config.target,
            Invitations::Organization,
            config.memberships.limits,
        )
        .await?;
        let known = organizations::all(pool, &config.target).await?;
        Ok::<_, sqlx::Error>((budget, known))
    };
    match read.await {
        Ok((budget, known)) => {
            for (operation, left) in [
                (Invitations::Organization.bulk(), budget.bulk.left),
                (Invitations::Organization.single(), budget.single.left),
            ] {
                metrics
                    .budget_left
                    .get_or_create(&EndpointLabel {
                        endpoint: operation.as_str().to_owned(),
                    })
                    .set(i64::from(left));
            }
            let full = known
                .iter()
                .filter(|o| o.room() == Some(0) || o.full_refused_at.is_some())
                .count();
            Metrics::gauge(&metrics.organizations_full, full);
        }
        Err(error) => tracing::warn!(
            error.message = %error,
            "the organization budget could not be read for the metrics"
        ),
    }
}

/// Reads what the next cycle's membership pass would plan, asking Clerk as it does (each
/// organization once, its memberships and pending invitations, the roles), and writes
/// nothing: no ledger change, no user recorded (the users it looks up, as the cycle would, are
/// used in memory only), no lock.
pub async fn preview(reconciler: &Reconciler) -> Result<Preview, PreviewError> {
    let pool = &reconciler.pool;
    let config = &reconciler.config;
    let target = config.target.as_str();
    let relation = config.memberships.relation.as_str();
    let mut preview = Preview::default();
    let rows = match memberships::check(pool, relation).await {
        Ok(()) => memberships::read_all(pool, relation).await,
        Err(error) => Err(error),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(memberships::ReadError::Database(error)) => return Err(error.into()),
        Err(error) => {
            preview.errors.push(error.to_string());
            Vec::new()
        }
    };
    let mut ledger = membership_ledger::live(pool, target).await?;
    preview.rows = rows.len();
    preview.budget = budget_store::current_of(
        pool,
        target,
        Invitations::Organization,
        config.memberships.limits,
    )
    .await?;
    if rows.is_empty() && ledger.is_empty() {
        return Ok(preview);
    }
    let mut read = Read {
        reconciler,
        errors: Vec::new(),
    };
    let (resolved, names) = read.resolve(&rows, &ledger).await?;
    let mut holdings = HashMap::new();
    let mut listed: Vec<(String, usize, usize, i64)> = Vec::new();
    let mut ids: Vec<(&str, i64)> = resolved
        .values()
        .filter_map(|r| match r {
            Resolution::Found(o) => Some(o.id.as_str()),
            _ => None,
        })
        .map(|id| (id, names.max_allowed.get(id).copied().unwrap_or(0)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for (id, max) in ids {
        if let Some(found) = read.list(id, &mut ledger).await? {
            let pending = found
                .invitations
                .iter()
                .filter(|i| i.status == InvitationStatus::Pending)
                .count();
            listed.push((id.to_owned(), found.members.len(), pending, max));
            holdings.insert(id.to_owned(), found);
        }
    }
    let full: HashSet<String> = organizations::all(pool, target)
        .await?
        .into_iter()
        .filter(|o| o.full_refused_at.is_some())
        .map(|o| o.organization_id)
        .collect();
    let rooms: HashMap<String, Room> = listed
        .iter()
        .map(|(id, members, pending, max)| {
            let room = if full.contains(id) && *max > 0 {
                Room::Left(0)
            } else {
                Room::of(*max, *members as i64, *pending as i64)
            };
            (id.clone(), room)
        })
        .collect();
    let mut resolved = resolved;
    for resolution in resolved.values_mut() {
        if let Resolution::Found(organization) = resolution {
            if let Some(room) = rooms.get(&organization.id) {
                organization.room = *room;
            }
        }
    }
    let roles = if rows.iter().any(Result::is_ok) {
        read.roles().await?
    } else {
        None
    };
    let mut emails: Vec<Email> = rows
        .iter()
        .filter_map(|row| row.as_ref().ok().map(|r| r.email.clone()))
        .collect();
    emails.sort();
    emails.dedup();
    let mut known = users::user_ids(pool, target, &emails).await?;
    // As the cycle reads them: those on the instance roster too wait for that invitation
    // (looked up in Clerk's users whatever the policy, and every cycle until they are).
    let unknown: Vec<Email> = emails
        .iter()
        .filter(|e| !known.contains_key(*e))
        .cloned()
        .collect();
    let mut instance_first =
        match memberships::on_instance_roster(pool, &config.relation, &unknown).await {
            Ok(found) => found,
            Err(crate::store::desired::ReadError::Database(error)) => return Err(error.into()),
            Err(error) => {
                read.errors.push(error.to_string());
                HashSet::new()
            }
        };
    let lookup: Vec<Email> =
        if config.memberships.policy.existing_users == plan::ExistingUsers::Membership {
            emails.clone()
        } else {
            emails
                .iter()
                .filter(|e| instance_first.contains(*e))
                .cloned()
                .collect()
        };
    if !lookup.is_empty() {
        read.users(&lookup, &instance_first, &mut known).await?;
    }
    instance_first.retain(|e| !known.contains_key(e));
    let plan = plan::plan(
        plan::Inputs {
            rows: &rows,
            resolved: &resolved,
            holdings: &holdings,
            ledger: &ledger,
            users: &known,
            instance_first: &instance_first,
            roles: roles.as_ref(),
            now: Utc::now(),
        },
        &config.memberships.policy,
    );
    let verdict = guard::check(
        removals(&plan),
        rows.len(),
        &holding(&rows, &ledger, &resolved, &holdings),
        0,
        &config.guard,
    );
    preview.counts = plan
        .counts()
        .into_iter()
        .map(|(category, n)| (category.as_str(), n))
        .collect();
    preview.held = verdict.held.len();
    preview.held_reason = verdict
        .reason
        .filter(|_| !verdict.held.is_empty())
        .map(guard::HoldReason::describe);
    preview.emptied = verdict.emptied.clone();
    preview.organizations = organizations(&plan, &verdict, &resolved, &names.names);
    let backlogs: Vec<u64> = preview
        .organizations
        .iter()
        .map(|o| o.backlog as u64)
        .filter(|n| *n > 0)
        .collect();
    preview.backlog = backlogs.iter().sum::<u64>() as usize;
    let budget = preview.budget;
    let carried =
        bulk_reach(&backlogs, u64::from(budget.bulk.left)) + u64::from(budget.single.left);
    preview.waiting_for_budget = (preview.backlog as u64).saturating_sub(carried) as usize;
    let now = Utc::now();
    preview.eta_seconds = budget
        .eta_grouped(&backlogs, &config.memberships.limits, now)
        .as_secs();
    preview.clerk_blocked_until = [budget.bulk.blocked_until, budget.single.blocked_until]
        .into_iter()
        .flatten()
        .filter(|until| *until > now)
        .max();
    preview.errors.extend(read.errors);
    Ok(preview)
}

/// Reading the preview failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Clerk refused the secret key: {0}")]
    Unauthorized(ClientError),
}

/// The names and limits of the organizations found, by id.
#[derive(Default)]
struct Names {
    names: HashMap<String, String>,
    max_allowed: HashMap<String, i64>,
}

struct Read<'a> {
    reconciler: &'a Reconciler,
    errors: Vec<String>,
}

impl Read<'_> {
    fn note(&mut self, what: &str, error: &ClientError) {
        let shown = self.reconciler.config.reporter.scrub(&error.to_string());
        self.errors.push(format!("{what}: {shown}"));
    }

    /// Each reference once: the rows' (ids or slugs), then the ledger's ids.
    async fn resolve(
        &mut self,
        rows: &[MembershipRosterRow],
        ledger: &[MembershipLedgerEntry],
    ) -> Result<(HashMap<String, Resolution>, Names), PreviewError> {
        let mut references: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for row in rows {
            let reference = match row {
                Ok(row) => row.organization.clone(),
                Err(invalid) => invalid.organization.trim_matches(' ').to_owned(),
            };
            if !reference.is_empty() && seen.insert(reference.clone()) {
                references.push(reference);
            }
        }
        for entry in ledger {
            if seen.insert(entry.organization_id.clone()) {
                references.push(entry.organization_id.clone());
            }
        }
        let mut resolved = HashMap::new();
        let mut names = Names::default();
        for reference in references {
            if names.names.contains_key(&reference) {
                continue;
            }
            let resolution = match self.reconciler.clerk.get_organization(&reference).await {
                Ok(organization) => {
                    names
                        .names
                        .insert(organization.id.clone(), organization.name.clone());
                    names.max_allowed.insert(
                        organization.id.clone(),
                        i64::try_from(organization.max_allowed_memberships).unwrap_or(i64::MAX),
                    );
                    Resolution::Found(Organization {
                        id: organization.id.clone(),
                        slug: organization.slug.clone(),
                        room: Room::Unlimited,
                    })
                }
                Err(error)
                    if error.organization_refusal() == Some(OrganizationRefusal::NotFound) =>
                {
                    Resolution::Unknown
                }
                Err(error) if refused_credentials(&error) => {
                    return Err(PreviewError::Unauthorized(error))
                }
                Err(error) => {
                    self.note("organization", &error);
                    Resolution::Unavailable(
                        self.reconciler.config.reporter.scrub(&error.to_string()),
                    )
                }
            };
            resolved.insert(reference, resolution);
        }
        Ok((resolved, names))
    }

    /// An organization's memberships and pending invitations, with what they show of the
    /// ledger's entries applied to the entries in memory only; `None` when it could not be
    /// read.
    async fn list(
        &mut self,
        id: &str,
        ledger: &mut [MembershipLedgerEntry],
    ) -> Result<Option<Holdings>, PreviewError> {
        let clerk = &self.reconciler.clerk;
        let listed = match clerk.list_memberships(id).await {
            Ok(members) => clerk
                .list_all_organization_invitations(
                    id,
                    Some(crate::clerk::InvitationStatus::Pending),
                )
                .await
                .map(|pending| (members, pending)),
            Err(error) => Err(error),
        };
        let (members, pending) = match listed {
            Ok(listed) => listed,
            Err(error) if refused_credentials(&error) => {
                return Err(PreviewError::Unauthorized(error))
            }
            Err(error) => {
                self.note("organization listing", &error);
                return Ok(None);
            }
        };
        let mut holdings = Holdings {
            members: members.iter().filter_map(member).collect(),
            invitations: pending.iter().filter_map(invitation).collect(),
        };
        let pending: HashSet<String> = holdings.invitations.iter().map(|i| i.id.clone()).collect();
        let members: HashSet<String> = holdings.members.iter().map(|m| m.user_id.clone()).collect();
        for entry in ledger.iter_mut().filter(|e| e.organization_id == id) {
            match (entry.kind, entry.state, entry.clerk_id.clone()) {
                (MembershipKind::Invitation, MembershipState::Pending, Some(clerk_id))
                    if !pending.contains(&clerk_id) =>
                {
                    let found = match clerk
                        .find_organization_invitations_by_email(id, entry.email.as_str())
                        .await
                    {
                        Ok(found) => found,
                        Err(error) => {
                            self.note("invitation lookup", &error);
                            return Ok(None);
                        }
                    };
                    let this: Vec<Invitation> = found
                        .iter()
                        .filter(|i| i.id == clerk_id)
                        .filter_map(invitation)
                        .collect();
                    entry.state = match this.first().map(|i| i.status) {
                        Some(InvitationStatus::Pending) => MembershipState::Pending,
                        Some(InvitationStatus::Accepted) => MembershipState::Accepted,
                        Some(InvitationStatus::Expired) => MembershipState::Expired,
                        Some(InvitationStatus::Revoked) | None => MembershipState::Revoked,
                    };
                    if matches!(
                        entry.state,
                        MembershipState::Pending | MembershipState::Expired
                    ) {
                        holdings.invitations.extend(this);
                    }
                }
                (_, MembershipState::Member | MembershipState::Accepted, _)
                    if entry.owned
                        && entry
                            .user_id
                            .as_ref()
                            .is_some_and(|user_id| !members.contains(user_id)) =>
                {
                    entry.state = MembershipState::Removed;
                }
                _ => {}
            }
        }
        Ok(Some(holdings))
    }

    /// Looks up in Clerk's users, as the cycle does (100 a call, at most
    /// `clerk.user_checks_per_cycle`), the rows' addresses not known to be users and not
    /// recently found not to be (those waiting for their instance invitation are asked
    /// whatever Clerk said before); what it finds is used, not recorded.
    async fn users(
        &mut self,
        emails: &[Email],
        recheck: &HashSet<Email>,
        known: &mut HashMap<Email, String>,
    ) -> Result<(), PreviewError> {
        let pool = &self.reconciler.pool;
        let config = &self.reconciler.config;
        let max_age = i64::try_from(config.drain.user_check_max_age.as_secs()).unwrap_or(i64::MAX);
        let not_users = users::fresh_not_users(pool, &config.target, max_age).await?;
        let candidates: Vec<Email> = emails
            .iter()
            .filter(|e| {
                !known.contains_key(*e) && (!not_users.contains(*e) || recheck.contains(*e))
            })
            .take(config.drain.user_checks_per_cycle)
            .cloned()
            .collect();
        for chunk in candidates.chunks(crate::clerk::client::USERS_PER_LOOKUP) {
            let addresses: Vec<String> = chunk.iter().map(|e| e.as_str().to_owned()).collect();
            let found = match self.reconciler.clerk.users_by_email(&addresses).await {
                Ok(found) => found,
                Err(error) if refused_credentials(&error) => {
                    return Err(PreviewError::Unauthorized(error))
                }
                Err(error) => {
                    self.note("user lookup", &error);
                    return Ok(());
                }
            };
            let (users, _) = crate::reconcile::execute::refusal::users_among(chunk, &found);
            for user in users {
                if let Some(id) = user.clerk_user_id {
                    known.insert(user.email, id);
                }
            }
        }
        Ok(())
    }

    async fn roles(&mut self) -> Result<Option<HashSet<String>>, PreviewError> {
        match self.reconciler.clerk.list_organization_roles().await {
            Ok(roles) => Ok(Some(roles.into_iter().map(|r| r.key).collect())),
            Err(error) if refused_credentials(&error) => Err(PreviewError::Unauthorized(error)),
            Err(error) => {
                self.note("organization roles", &error);
                Ok(None)
            }
        }
    }
}
