//! A target's status, as `status` and `GET /v1/status` show it: the last runs, the backlog,
//! the budget, held revocations, Clerk's blocks, unsettled creates, the lock holder, and the
//! organizations of the membership roster. Read from the database alone: nothing asks Clerk.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::lock::{self, Holder};
use super::runs::{self, RunRecord};
use super::{budget, ledger, membership_ledger, memberships, organizations};
use crate::clerk::budget::{Budget, Invitations, Limits};
use crate::domain::{KnownOrganization, MembershipState};

/// How many of the last runs the status lists.
const RUNS: i64 = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub target: String,
    pub lock_holder: Option<Holder>,
    pub budget: Budget,
    /// The backlog the latest finished cycle left, and when it would be done.
    pub backlog: i32,
    pub backlog_eta_seconds: i64,
    pub awaiting_user_check: u64,
    pub held_revocations: i32,
    pub clerk_blocks: Vec<ClerkBlock>,
    pub unsettled: UnsettledCreates,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last runs, newest first.
    pub runs: Vec<RunRecord>,
    /// The outbound events: retained, pending and dead deliveries per endpoint.
    pub events: super::outbox::OutboxState,
    /// The membership roster's organizations.
    pub memberships: MembershipStatus,
    /// SCIM groups no `scim.groups` entry names (filled by the caller, which knows the
    /// mapping: [`super::group_memberships::unmapped`]).
    pub unmapped_scim_groups: Vec<super::group_memberships::UnmappedGroup>,
}

/// Where the membership roster is and what its invitations may spend.
#[derive(Debug, Clone, Copy)]
pub struct MembershipScope<'a> {
    /// `source.memberships_relation`.
    pub relation: &'a str,
    /// The organization invitations' hourly limits.
    pub limits: Limits,
}

/// How many invalid rows the status lists (all are counted).
const INVALID_LISTED: usize = 50;

/// The membership roster's organizations as the database knows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MembershipStatus {
    /// Membership roster rows, valid or not.
    pub rows: u64,
    /// The organization invitations' budget left now, across every organization.
    pub budget: Budget,
    /// Organization invitations the latest finished cycle left for the budget, and how long
    /// they take at its pace.
    pub backlog: u64,
    pub backlog_eta_seconds: u64,
    /// Membership removals the guard held in the latest finished cycle, and why.
    pub held_removals: u64,
    pub held_reason: Option<String>,
    /// Organizations held because their roster emptied, by id.
    pub emptied: Vec<String>,
    /// What the latest finished cycle's membership pass recorded (its plan's counts, the
    /// waiting by reason, what it did), if it ran.
    pub last_pass: Option<Value>,
    pub organizations: Vec<OrganizationStatus>,
    /// Rows that cannot be acted on, with the reason (the first 50).
    pub invalid: Vec<InvalidRow>,
    pub invalid_rows: u64,
    /// Why the membership roster could not be read, if it could not.
    pub error: Option<String>,
}

/// One organization of the membership roster, or one invite-sync holds something in.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrganizationStatus {
    /// The id, or for a reference no cycle has resolved, the reference as the rows give it.
    pub organization: String,
    /// Whether a cycle has read it from Clerk.
    pub resolved: bool,
    pub slug: Option<String>,
    pub name: Option<String>,
    /// Roster rows naming it (by id or slug), valid or not.
    pub rows: u64,
    /// Rows invite-sync has not yet invited or added, whose `not_before` has passed: the
    /// next cycles invite them, add them, or find them members already (a membership made
    /// outside invite-sync is counted here until then; `plan` tells them apart).
    pub to_send: u64,
    /// Invitations invite-sync sent that are pending.
    pub invited: u64,
    /// Members invite-sync added, or whose invitation it sent was accepted.
    pub members: u64,
    /// Creates whose outcome is unknown.
    pub unsettled: u64,
    /// Creates Clerk refused: tried again later, or when the row changes.
    pub refused: u64,
    /// Rows whose `not_before` is in the future.
    pub not_before: u64,
    pub invalid: u64,
    /// As last read: 0 means unlimited.
    pub max_allowed_memberships: Option<u32>,
    pub members_count: Option<u32>,
    pub pending_invitations_count: Option<u32>,
    /// How many more members and pending invitations it takes, as last read less what
    /// invite-sync created there since; `None` when unlimited or not known.
    pub room: Option<u32>,
    /// No room left, or Clerk refused a create for being full since it last showed room.
    pub full: bool,
    /// Why its people wait, with how many: `full`, `not_before`, `unsettled`, `refused`,
    /// `budget` (none left this window), `clerk_block` (a 429 blocks the endpoints),
    /// `unresolved` (no cycle has found the organization in Clerk: unknown, or not read yet).
    pub waiting: BTreeMap<&'static str, u64>,
    pub seen_at: Option<DateTime<Utc>>,
}

/// A membership roster row that cannot be acted on.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidRow {
    pub email: String,
    pub organization: String,
    pub reason: String,
}

/// An operation Clerk's 429 blocks.
#[derive(Debug, Clone, Serialize)]
pub struct ClerkBlock {
    pub operation: String,
    pub blocked_until: DateTime<Utc>,
    pub seconds_left: i64,
}

/// Creates whose outcome is unknown, and when they are looked up.
#[derive(Debug, Clone, Serialize)]
pub struct UnsettledCreates {
    pub creates: i64,
    pub settles_at: Option<DateTime<Utc>>,
    pub settles_in_seconds: Option<i64>,
}

/// Reads the status of `target`. `settle_after` is how long after it was sent an
/// unconfirmed create is looked up.
pub async fn collect(
    pool: &PgPool,
    target: &str,
    limits: Limits,
    settle_after: Duration,
    memberships: MembershipScope<'_>,
) -> Result<Status, sqlx::Error> {
    let runs = runs::recent(pool, target, RUNS).await?;
    let budget = budget::current(pool, target, limits).await?;
    let lock_holder = lock::holder(pool, target).await?;
    let now = super::now(pool).await?;
    let clerk_blocks = budget::blocks(pool, target)
        .await?
        .into_iter()
        .map(|block| ClerkBlock {
            seconds_left: (block.blocked_until - now).num_seconds().max(0),
            operation: block.endpoint,
            blocked_until: block.blocked_until,
        })
        .collect();
    let (creates, oldest) = ledger::unsettled(pool, target).await?;
    let settle_after = chrono::Duration::from_std(settle_after).unwrap_or_default();
    let settles_at = oldest.map(|sent| sent + settle_after);
    let latest = runs
        .iter()
        .find(|r| r.outcome != "running" && r.outcome != "skipped");
    let last_success_at = runs
        .iter()
        .find(|r| r.outcome == "succeeded")
        .and_then(|r| r.finished_at);
    Ok(Status {
        target: target.to_owned(),
        lock_holder,
        budget,
        backlog: latest.map(|r| r.backlog).unwrap_or(0),
        backlog_eta_seconds: latest.and_then(|r| r.backlog_eta_seconds).unwrap_or(0),
        awaiting_user_check: latest
            .and_then(|r| r.counts.get("awaiting_user_check").and_then(Value::as_u64))
            .unwrap_or(0),
        held_revocations: latest.map(|r| r.held_revocations).unwrap_or(0),
        clerk_blocks,
        unsettled: UnsettledCreates {
            creates,
            settles_at,
            settles_in_seconds: settles_at.map(|at| (at - now).num_seconds().max(0)),
        },
        memberships: membership_status(pool, target, memberships, latest, now).await?,
        last_success_at,
        runs,
        events: super::outbox::state(pool, target).await?,
        unmapped_scim_groups: Vec::new(),
    })
}

/// The membership roster's organizations: the rows (streamed, each checked as a cycle checks
/// it), the membership ledger, the organizations as last read, the organization budget, and
/// what the latest finished cycle recorded of its membership pass.
async fn membership_status(
    pool: &PgPool,
    target: &str,
    scope: MembershipScope<'_>,
    latest: Option<&RunRecord>,
    now: DateTime<Utc>,
) -> Result<MembershipStatus, sqlx::Error> {
    let mut status = MembershipStatus {
        budget: budget::current_of(pool, target, Invitations::Organization, scope.limits).await?,
        ..MembershipStatus::default()
    };
    let known = organizations::all(pool, target).await?;
    let ledger = membership_ledger::live(pool, target).await?;
    let mut tally = Tally::new(&known, &ledger);
    let read = match memberships::check(pool, scope.relation).await {
        Ok(()) => memberships::for_each(pool, scope.relation, |row| tally.row(row, now)).await,
        Err(error) => Err(error),
    };
    match read {
        Ok(rows) => status.rows = rows as u64,
        Err(memberships::ReadError::Database(error)) => return Err(error),
        Err(error) => status.error = Some(error.to_string()),
    }
    tally.ledger_only();
    status.invalid_rows = tally.invalid_rows;
    status.invalid = tally.invalid;
    let blocked = [status.budget.bulk, status.budget.single]
        .iter()
        .any(|e| e.blocked_until.is_some_and(|until| until > now));
    let spent = status.budget.bulk.left == 0 && status.budget.single.left == 0;
    if let Some(last) = latest
        .and_then(|r| r.counts.get("memberships"))
        .filter(|m| m.is_object())
    {
        let number = |key: &str| last.get(key).and_then(Value::as_u64).unwrap_or(0);
        status.backlog = number("backlog");
        status.held_removals = number("held");
        status.held_reason = last
            .get("hold_reason")
            .and_then(Value::as_str)
            .filter(|_| status.held_removals > 0)
            .map(str::to_owned);
        status.emptied = last
            .get("emptied")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        status.last_pass = Some(last.clone());
    }
    let mut organizations = tally.organizations;
    // The room as last listed, less what invite-sync created there since (the listing came
    // before the cycle's creates).
    for organization in organizations.values_mut() {
        let (Some(room), Some(seen_at)) = (organization.room, organization.seen_at) else {
            continue;
        };
        let since = ledger
            .iter()
            .filter(|e| e.organization_id == organization.organization)
            .filter(|e| e.created_at > seen_at)
            .filter(|e| {
                matches!(
                    e.state,
                    MembershipState::Sending
                        | MembershipState::Pending
                        | MembershipState::Member
                        | MembershipState::Accepted
                )
            })
            .count();
        let room = room.saturating_sub(u32::try_from(since).unwrap_or(u32::MAX));
        organization.room = Some(room);
        organization.full |= room == 0;
    }
    for organization in organizations.values_mut().filter(|o| !o.resolved) {
        // No cycle has found it in Clerk (yet): nothing is sent for its rows.
        let valid = organization.rows - organization.invalid;
        organization.to_send = 0;
        organization.not_before = 0;
        if valid > 0 {
            organization.waiting.insert("unresolved", valid);
        }
    }
    for organization in organizations.values_mut().filter(|o| o.resolved) {
        let waiting = &mut organization.waiting;
        let to_send = organization.to_send;
        for (reason, n) in [
            ("full", if organization.full { to_send } else { 0 }),
            ("not_before", organization.not_before),
            ("unsettled", organization.unsettled),
            ("refused", organization.refused),
            (
                "budget",
                if spent && !organization.full {
                    to_send
                } else {
                    0
                },
            ),
            (
                "clerk_block",
                if blocked && !organization.full {
                    to_send
                } else {
                    0
                },
            ),
        ] {
            if n > 0 {
                waiting.insert(reason, n);
            }
        }
    }
    let backlogs: Vec<u64> = organizations
        .values()
        .map(|o| o.to_send)
        .filter(|n| *n > 0)
        .collect();
    // The latest cycle's backlog at the organization budget's pace, a bulk call serving
    // one organization: as the organizations' rows to send share it out now.
    if status.backlog > 0 {
        let spread: Vec<u64> = if backlogs.iter().sum::<u64>() == status.backlog {
            backlogs
        } else {
            vec![status.backlog]
        };
        status.backlog_eta_seconds = status
            .budget
            .eta_grouped(&spread, &scope.limits, now)
            .as_secs();
    }
    status.organizations = organizations.into_values().collect();
    Ok(status)
}

/// Counts the roster's rows and the ledger's entries per organization.
struct Tally<'a> {
    /// Each known organization by id and by slug.
    by_reference: HashMap<&'a str, &'a KnownOrganization>,
    /// The live ledger entries by (organization id, address).
    entries: HashMap<(String, String), MembershipState>,
    /// Entries a row was found for.
    matched: std::collections::HashSet<(String, String)>,
    ledger: &'a [crate::domain::MembershipLedgerEntry],
    organizations: BTreeMap<String, OrganizationStatus>,
    invalid: Vec<InvalidRow>,
    invalid_rows: u64,
}

impl<'a> Tally<'a> {
    fn new(
        known: &'a [KnownOrganization],
        ledger: &'a [crate::domain::MembershipLedgerEntry],
    ) -> Tally<'a> {
        let mut by_reference = HashMap::new();
        for organization in known {
            if let Some(slug) = organization.slug.as_deref().filter(|s| !s.is_empty()) {
                by_reference.insert(slug, organization);
            }
        }
        // An id wins over a slug spelled like it.
        for organization in known {
            by_reference.insert(organization.organization_id.as_str(), organization);
        }
        let mut entries = HashMap::new();
        for entry in ledger {
            let key = (
                entry.organization_id.clone(),
                entry.email.as_str().to_owned(),
            );
            // Of several, the one that says most: a membership, then a pending invitation.
            let rank = |state: MembershipState| match state {
                MembershipState::Member | MembershipState::Accepted => 3,
                MembershipState::Pending => 2,
                MembershipState::Sending => 1,
                _ => 0,
            };
            let keep = entries
                .get(&key)
                .is_none_or(|have: &MembershipState| rank(entry.state) > rank(*have));
            if keep {
                entries.insert(key, entry.state);
            }
        }
        Tally {
            by_reference,
            entries,
            matched: std::collections::HashSet::new(),
            ledger,
            organizations: BTreeMap::new(),
            invalid: Vec::new(),
            invalid_rows: 0,
        }
    }

    fn organization(&mut self, reference: &str) -> (&mut OrganizationStatus, Option<&'a str>) {
        let known = self.by_reference.get(reference).copied();
        let key = known.map_or(reference, |o| o.organization_id.as_str());
        let status = self
            .organizations
            .entry(key.to_owned())
            .or_insert_with(|| of_known(key, known));
        (status, known.map(|o| o.organization_id.as_str()))
    }

    fn row(&mut self, row: crate::domain::MembershipRosterRow, now: DateTime<Utc>) {
        let (reference, _) = crate::domain::membership_key(&row);
        let row = match row {
            Ok(row) => row,
            Err(invalid) => {
                self.invalid_rows += 1;
                let (status, _) = self.organization(&reference);
                status.rows += 1;
                status.invalid += 1;
                if self.invalid.len() < INVALID_LISTED {
                    self.invalid.push(InvalidRow {
                        email: invalid.email,
                        organization: reference,
                        reason: invalid.reason,
                    });
                }
                return;
            }
        };
        let (status, id) = self.organization(&reference);
        status.rows += 1;
        let key = id.map(|id| (id.to_owned(), row.email.as_str().to_owned()));
        let state = key.as_ref().and_then(|key| self.entries.get(key).copied());
        let (status, _) = self.organization(&reference);
        match state {
            Some(MembershipState::Member | MembershipState::Accepted) => status.members += 1,
            Some(MembershipState::Pending) => status.invited += 1,
            Some(MembershipState::Sending) => status.unsettled += 1,
            Some(MembershipState::Failed) => status.refused += 1,
            _ if row.not_before.is_some_and(|at| at > now) => status.not_before += 1,
            _ => status.to_send += 1,
        }
        if let (Some(key), Some(_)) = (key, state) {
            self.matched.insert(key);
        }
    }

    /// Counts what the ledger holds in organizations no row names any more (a leaver's
    /// membership, an invitation to revoke).
    fn ledger_only(&mut self) {
        for entry in self.ledger {
            let key = (
                entry.organization_id.clone(),
                entry.email.as_str().to_owned(),
            );
            if self.matched.contains(&key) {
                continue;
            }
            let (status, _) = self.organization(&entry.organization_id);
            match entry.state {
                MembershipState::Member | MembershipState::Accepted => status.members += 1,
                MembershipState::Pending => status.invited += 1,
                MembershipState::Sending => status.unsettled += 1,
                _ => {}
            }
        }
    }
}

fn of_known(key: &str, known: Option<&KnownOrganization>) -> OrganizationStatus {
    let Some(known) = known else {
        return OrganizationStatus {
            organization: key.to_owned(),
            ..OrganizationStatus::default()
        };
    };
    OrganizationStatus {
        organization: known.organization_id.clone(),
        resolved: true,
        slug: known.slug.clone(),
        name: Some(known.name.clone()),
        max_allowed_memberships: Some(known.max_allowed_memberships),
        members_count: Some(known.members_count),
        pending_invitations_count: Some(known.pending_invitations_count),
        room: known.room(),
        full: known.room() == Some(0) || known.full_refused_at.is_some(),
        seen_at: Some(known.seen_at),
        ..OrganizationStatus::default()
    }
}
