//! `explain`: everything invite-sync knows of one address and the decision the next cycle
//! would take about it, with the rule that decided. The decision is the plan's own item for
//! the address (the same planner and ladder a cycle runs, over the same inputs `plan`
//! reads); [`describe`] only puts into words why that item is what it is, together with the
//! guard's verdict on the whole plan and the create budget.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use super::guard::{HoldReason, RevocationLimits, Verdict};
use super::memberships::overview;
use super::plan::{self, Item, Plan};
use super::{CycleError, Reconciler};
use crate::clerk::budget::{Budget, Limits};
use crate::clerk::{Invitation, InvitationStatus};
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::store::explain::{self as store_explain, EventLine, KnownUser, MembershipHistory};
use crate::store::{desired, ledger, memberships, organizations};

/// The most outbound events shown, the newest.
const EVENTS_SHOWN: i64 = 20;
/// The most errors shown, the newest.
const ERRORS_SHOWN: usize = 5;

/// Everything known of one address, and what the next cycle would do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub email: String,
    pub target: String,
    pub explained_at: DateTime<Utc>,
    /// Whether Clerk was asked (not with `--offline`, nor when it could not be reached).
    pub clerk_asked: bool,
    /// Why Clerk could not be asked, when it could not.
    pub clerk_error: Option<String>,
    pub on_roster: bool,
    /// The instance roster's rows of the address.
    pub roster: Vec<RosterLine>,
    /// The next cycle's decision about the instance invitation, and why.
    pub decision: Decision,
    /// The membership roster's rows of the address.
    pub membership_rows: Vec<MembershipRowLine>,
    /// The next cycle's decision in each organization, and why (empty with `--offline`).
    pub memberships: Vec<MembershipDecision>,
    /// Why the membership decisions are missing, when they are.
    pub memberships_note: Option<String>,
    /// The instance ledger's history of the address, oldest first.
    pub ledger: Vec<LedgerLine>,
    /// The membership ledger's history of the address, oldest first.
    pub membership_ledger: Vec<MembershipHistory>,
    /// Whether invite-sync knows the address as a Clerk user's, and since when.
    pub user: Option<KnownUser>,
    /// What Clerk holds for the address now (one lookup), when asked.
    pub clerk: Option<ClerkState>,
    /// The outbound events written for the address (the newest), when the outbox exists.
    pub events: Option<Vec<EventLine>>,
    /// The last errors recorded for the address, newest first.
    pub last_errors: Vec<String>,
}

/// One roster row: readable, or why not.
#[derive(Debug, Clone, Serialize)]
pub struct RosterLine {
    pub email: String,
    pub source: Option<String>,
    pub public_metadata: serde_json::Value,
    pub not_before: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Why the row cannot be acted on, when it cannot.
    pub invalid: Option<String>,
}

/// One membership roster row.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipRowLine {
    pub organization: String,
    pub role: Option<String>,
    pub source: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub invalid: Option<String>,
}

/// One instance ledger entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerLine {
    pub id: i64,
    pub invitation_id: Option<String>,
    pub state: &'static str,
    pub owned: bool,
    pub attempts: i32,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub terminal: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub revoked_by_us: bool,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// When the entry last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

/// What Clerk holds for the address.
#[derive(Debug, Clone, Serialize)]
pub struct ClerkState {
    pub invitations: Vec<ClerkInvitation>,
    /// The ids of the users whose addresses include it.
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClerkInvitation {
    pub id: String,
    pub status: InvitationStatus,
    pub created_at: Option<DateTime<Utc>>,
    /// Whether invite-sync sent it.
    pub owned: bool,
}

/// A decision and the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The plan's category (`create`, `in_sync`, `revoke`, ...), or `not_on_roster` when the
    /// plan holds nothing for the address.
    pub category: String,
    /// The rule that decided, in words.
    pub rule: String,
    /// What the decision waits for, with its time when it has one.
    pub waits_for: Option<Wait>,
    pub invitation_id: Option<String>,
    /// Further items of the plan for the address (a second pending invitation, a duplicate
    /// row), each in words.
    pub also: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wait {
    /// `budget`, `clerk_block`, `not_before`, `guard`, `retry`, `row_change`, `lookup`.
    pub reason: &'static str,
    pub until: Option<DateTime<Utc>>,
}

/// The decision in one organization.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipDecision {
    pub organization_id: String,
    pub slug: Option<String>,
    pub category: String,
    pub rule: String,
    pub held: bool,
}

/// What [`describe`] looks at besides the plan's items for the address.
pub struct Facts<'a> {
    pub email: &'a Email,
    /// The plan's items for the address, in plan order.
    pub items: &'a [&'a Item],
    /// The guard's verdict on the whole plan; `None` when it was not computed (offline).
    pub verdict: Option<&'a Verdict>,
    pub guard: &'a RevocationLimits,
    pub owned_pending: usize,
    /// The address's place (from 0) among the plan's creates, in queue order.
    pub queue_place: Option<usize>,
    pub budget: &'a Budget,
    pub limits: &'a Limits,
    pub ledger: &'a [LedgerLine],
    /// Clerk's invitations of the address (its listing or lookup), for their times.
    pub clerk: &'a [Invitation],
    pub user: Option<&'a KnownUser>,
    pub now: DateTime<Utc>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn wait(reason: &'static str, until: Option<DateTime<Utc>>) -> Option<Wait> {
    Some(Wait { reason, until })
}

/// Puts the plan's decision for one address into words: the rule that decided, and what it
/// waits for. Pure.
pub fn describe(facts: &Facts<'_>) -> Decision {
    let mut items = facts.items.iter().copied();
    // A duplicate row's item says only that another row counts: the row that counts first.
    let primary = facts
        .items
        .iter()
        .copied()
        .find(|item| !is_duplicate(item))
        .or_else(|| items.next());
    let also = facts
        .items
        .iter()
        .copied()
        .filter(|item| Some(*item) != primary)
        .map(|item| describe_item(item, facts).1)
        .collect();
    let Some(item) = primary else {
        let (rule, waits_for, invitation_id) = not_planned(facts);
        return Decision {
            category: "not_on_roster".to_owned(),
            rule,
            waits_for,
            invitation_id,
            also,
        };
    };
    let (waits_for, rule) = describe_item(item, facts);
    Decision {
        category: item.category().as_str().to_owned(),
        rule,
        waits_for,
        invitation_id: item.invitation_id().map(str::to_owned),
        also,
    }
}

fn is_duplicate(item: &Item) -> bool {
    matches!(item, Item::Invalid { reason, .. } if reason == "another roster row has the same address")
}

/// When Clerk made an invitation, as its listing or the ledger says.
fn made_on(facts: &Facts<'_>, id: &str) -> Option<DateTime<Utc>> {
    facts
        .clerk
        .iter()
        .find(|i| i.id == id)
        .and_then(|i| millis(i.created_at))
        .or_else(|| {
            facts
                .ledger
                .iter()
                .find(|l| l.invitation_id.as_deref() == Some(id))
                .map(|l| l.created_at)
        })
}

fn describe_item(item: &Item, facts: &Facts<'_>) -> (Option<Wait>, String) {
    match item {
        Item::Create { reinvite, .. } => create_rule(*reinvite, facts),
        Item::Replace {
            invitation_id,
            differences,
            ..
        } => match held(facts, invitation_id) {
            Some((wait, rule)) => (
                wait,
                format!(
                    "{rule} (the pending invitation {invitation_id} differs from the row in {}: replacing it revokes it)",
                    differences.join(", ")
                ),
            ),
            None => (
                None,
                format!(
                    "replace: the pending invitation {invitation_id} differs from the row in {} (sync.on_change = \"replace\"): revoked and sent again",
                    differences.join(", ")
                ),
            ),
        },
        Item::Revoke { invitation_id, .. } => match held(facts, invitation_id) {
            Some((wait, rule)) => (
                wait,
                format!("{rule}; not on the roster, its invitation {invitation_id} would be revoked"),
            ),
            None => (
                None,
                format!(
                    "revoke: removed from the roster; invitation {invitation_id} is revoked by the next cycle"
                ),
            ),
        },
        Item::Foreign { invitation_id, .. } => {
            let made = made_on(facts, invitation_id)
                .map(|t| format!(" made on {}", date(t)))
                .unwrap_or_default();
            (
                None,
                format!(
                    "not on the roster; Clerk holds a foreign pending invitation{made} ({invitation_id}): not invite-sync's, left alone (sync.ownership = \"owned\")"
                ),
            )
        }
        Item::Stale {
            invitation_id,
            differences,
            ..
        } => (
            None,
            format!(
                "stale: the pending invitation {invitation_id} differs from the row in {}; reported, not replaced (sync.on_change = \"report\", or the invitation is not invite-sync's)",
                differences.join(", ")
            ),
        ),
        Item::Invalid { reason, .. } => (
            wait("row_change", None),
            format!("invalid: {reason}; nothing is sent until the row is fixed"),
        ),
        Item::Deferred { not_before, .. } => (
            wait("not_before", Some(*not_before)),
            format!("deferred: not_before {}", time(*not_before)),
        ),
        Item::Accepted { .. } => {
            let when = facts
                .ledger
                .iter()
                .rev()
                .find(|l| l.state == LedgerState::Accepted.as_str())
                .and_then(|l| l.updated_at)
                .map(|t| format!(" (recorded {})", date(t)))
                .unwrap_or_default();
            (None, format!("accepted: the invitation was accepted{when}"))
        }
        Item::AlreadyUser { .. } => {
            let seen = facts
                .user
                .map(|u| format!(" (seen via {}, {})", u.seen_via, date(u.seen_at)))
                .unwrap_or_default();
            (None, format!("already a user{seen}: no invitation is sent"))
        }
        Item::RevokedExternally { invitation_id, .. } => {
            let id = invitation_id.as_deref().unwrap_or("its invitation");
            (
                wait("row_change", None),
                format!(
                    "revoked in Clerk by someone else ({id}); not invited again until the roster row changes"
                ),
            )
        }
        Item::Expired { .. } => (
            wait("row_change", None),
            "expired: the invitation expired and sync.reinvite_expired is off".to_owned(),
        ),
        Item::Failed {
            code,
            reason,
            retry_at,
            ..
        } => {
            let mut refused = format!(
                "refused by Clerk: {}",
                code.as_deref().unwrap_or("an error")
            );
            if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
                refused.push_str(&format!(" ({reason})"));
            }
            match retry_at {
                Some(at) => (
                    wait("retry", Some(*at)),
                    format!("{refused}; retried at {}", time(*at)),
                ),
                None => (
                    wait("row_change", None),
                    format!(
                        "{refused}; retried when the row changes (or with `invite-sync sync --retry-failed {}`)",
                        facts.email
                    ),
                ),
            }
        }
        Item::Unsettled { .. } => (
            wait("lookup", None),
            "unsettled: a create's outcome is not known yet; it is looked up before anything else is sent".to_owned(),
        ),
        Item::InSync {
            invitation_id,
            owned,
            ..
        } => {
            let made = made_on(facts, invitation_id)
                .map(|t| format!(", sent {}", date(t)))
                .unwrap_or_default();
            let by = if *owned {
                "invite-sync's"
            } else {
                "made outside invite-sync"
            };
            (
                None,
                format!(
                    "invited and pending: invitation {invitation_id} ({by}{made}) matches the row; nothing to do"
                ),
            )
        }
    }
}

/// A create's rule: sent by the next cycle, or waiting for the budget or a block of Clerk's.
fn create_rule(reinvite: bool, facts: &Facts<'_>) -> (Option<Wait>, String) {
    let what = if reinvite {
        "reinvite: the last invitation expired"
    } else {
        "create: no invitation yet"
    };
    let budget = facts.budget;
    let now = facts.now;
    let place = facts.queue_place.unwrap_or(0);
    let capacity = usize::try_from(budget.capacity_now()).unwrap_or(usize::MAX);
    if place < capacity {
        return (
            None,
            format!(
                "{what}; sent by the next cycle (place {} in the queue, within the {capacity} creates the budget has left this window)",
                place + 1
            ),
        );
    }
    let blocked = [budget.bulk.blocked_until, budget.single.blocked_until]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .max();
    let both_blocked = budget.bulk.blocked_until.is_some_and(|t| t > now)
        && budget.single.blocked_until.is_some_and(|t| t > now);
    if both_blocked {
        let until = blocked.unwrap_or(now);
        return (
            wait("clerk_block", Some(until)),
            format!(
                "waiting: Clerk blocks creates (rate limited) until {}",
                time(until)
            ),
        );
    }
    let turn = now
        + chrono::Duration::from_std(budget.eta((place + 1) as u64, facts.limits, now))
            .unwrap_or_default();
    if capacity == 0 {
        let until = budget.next_slot_at(now);
        let later = if turn > until {
            format!(
                "; its turn (place {} in the queue) about {}",
                place + 1,
                time(turn)
            )
        } else {
            String::new()
        };
        return (
            wait("budget", Some(until.max(turn))),
            format!(
                "waiting: the create budget is spent until {} (next free slot){later}",
                time(until)
            ),
        );
    }
    (
        wait("budget", Some(turn)),
        format!(
            "waiting: the {capacity} creates the budget has left this window go to those ahead (place {} in the queue); its turn about {}",
            place + 1,
            time(turn)
        ),
    )
}

/// The guard's word on a revocation: held (and why) or never sent (protected); `None` when
/// it is allowed.
fn held(facts: &Facts<'_>, invitation_id: &str) -> Option<(Option<Wait>, String)> {
    let Some(verdict) = facts.verdict else {
        return Some((
            None,
            "revoke (the guard's verdict needs Clerk's listing, not read offline)".to_owned(),
        ));
    };
    if verdict
        .protected
        .iter()
        .any(|r| r.invitation_id == invitation_id)
    {
        return Some((
            None,
            "kept: the address is protected (sync.protected); never revoked".to_owned(),
        ));
    }
    if !verdict
        .held
        .iter()
        .any(|r| r.invitation_id == invitation_id)
    {
        return None;
    }
    let count = verdict.allowed.len() + verdict.held.len();
    let limits = facts.guard;
    let why = match verdict.reason {
        Some(HoldReason::TooMany) => format!(
            "held: {count} revocations exceed sync.max_revocations {}",
            limits.max_revocations
        ),
        Some(HoldReason::TooLargeAShare) => format!(
            "held: {count} revocations are more than sync.max_revocation_ratio {} of the {} pending invitations invite-sync owns",
            limits.max_revocation_ratio, facts.owned_pending
        ),
        Some(HoldReason::EmptyRoster) => format!(
            "held: the roster is empty while {} invitations invite-sync owns are pending",
            facts.owned_pending
        ),
        None => "held by the guard".to_owned(),
    };
    Some((
        wait("guard", None),
        format!(
            "{why}; released with `invite-sync sync --allow-revocations {}`",
            verdict.held.len()
        ),
    ))
}

/// An address the plan holds nothing for: not on the roster, and no pending invitation.
fn not_planned(facts: &Facts<'_>) -> (String, Option<Wait>, Option<String>) {
    let last = facts
        .ledger
        .iter()
        .rev()
        .find(|l| l.invitation_id.is_some());
    if let Some(line) = last.filter(|l| l.state == LedgerState::Revoked.as_str()) {
        let id = line.invitation_id.clone();
        let at = line
            .updated_at
            .map(|t| format!(" at {}", time(t)))
            .unwrap_or_default();
        let rule = if line.revoked_by_us {
            format!(
                "revoked: removed from the roster; invitation {} revoked{at}",
                id.as_deref().unwrap_or("")
            )
        } else {
            format!(
                "not on the roster; invitation {} was revoked in Clerk by someone else{at}",
                id.as_deref().unwrap_or("")
            )
        };
        return (rule, None, id);
    }
    if let Some(user) = facts.user.filter(|u| u.deleted_at.is_none()) {
        return (
            format!(
                "not on the roster; already a user (seen via {}, {})",
                user.seen_via,
                date(user.seen_at)
            ),
            None,
            None,
        );
    }
    if let Some(line) = last {
        return (
            format!(
                "not on the roster; the ledger's last entry is {} ({})",
                line.state,
                line.invitation_id.as_deref().unwrap_or("")
            ),
            None,
            line.invitation_id.clone(),
        );
    }
    (
        "not on the roster; Clerk holds no pending invitation for it and invite-sync never invited it".to_owned(),
        None,
        None,
    )
}

/// Explaining failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Roster(#[from] desired::ReadError),
    #[error("{0}")]
    Cycle(CycleError),
}

/// What Clerk said, or why it could not be asked.
struct Asked {
    plan: Plan,
    verdict: Option<Verdict>,
    owned_pending: usize,
    clerk: Vec<Invitation>,
    users: Vec<String>,
}

/// Explains one address: reads the database, asks Clerk as `plan` does (unless `offline`),
/// and decides with the plan's own planner.
pub async fn explain(
    reconciler: &Reconciler,
    email: &Email,
    offline: bool,
) -> Result<Explanation, ExplainError> {
    let pool = &reconciler.pool;
    let config = &reconciler.config;
    let target = config.target.as_str();
    let rows = store_explain::roster_rows(pool, &config.relation, email).await?;
    let entries = ledger::of_email(pool, target, email).await?;
    let times = store_explain::ledger_times(pool, target, email).await?;
    let user = store_explain::known_user(pool, target, email).await?;
    let membership_ledger = store_explain::membership_history(pool, target, email).await?;
    let events = store_explain::events(pool, target, email, EVENTS_SHOWN).await?;
    let ledger_lines: Vec<LedgerLine> = entries
        .iter()
        .map(|entry| ledger_line(entry, &times))
        .collect();

    let mut clerk_error = None;
    let mut asked = None;
    if !offline {
        match ask_clerk(reconciler, email).await {
            Ok(found) => asked = Some(found),
            Err(ExplainError::Cycle(error)) => clerk_error = Some(error.to_string()),
            Err(error) => return Err(error),
        }
    }
    let clerk_asked = asked.is_some();
    let asked = match asked {
        Some(asked) => asked,
        None => offline_plan(reconciler, email, &rows, &entries, user.as_ref()),
    };
    let budget = reconciler.budget().await?;
    let items: Vec<&Item> = asked
        .plan
        .items
        .iter()
        .filter(|item| item.email() == email.as_str())
        .collect();
    let queue_place = asked.plan.creates().position(|i| &i.email == email);
    let now = Utc::now();
    let decision = describe(&Facts {
        email,
        items: &items,
        verdict: asked.verdict.as_ref(),
        guard: &config.guard,
        owned_pending: asked.owned_pending,
        queue_place,
        budget: &budget,
        limits: &config.budget,
        ledger: &ledger_lines,
        clerk: &asked.clerk,
        user: user.as_ref(),
        now,
    });

    let membership_rows = membership_rows(reconciler, email).await?;
    let (memberships, memberships_note) = if !clerk_asked {
        let note = (!membership_rows.is_empty() || !membership_ledger.is_empty())
            .then(|| "the membership decisions need Clerk's organizations, not asked".to_owned());
        (Vec::new(), note)
    } else if membership_rows.is_empty()
        && membership_ledger
            .iter()
            .all(|m| m.state != "pending" && m.state != "member" && m.state != "sending")
    {
        (Vec::new(), None)
    } else {
        match overview::preview(reconciler).await {
            Ok(preview) => (
                membership_decisions(reconciler, &preview, email, &membership_rows).await?,
                None,
            ),
            Err(overview::PreviewError::Database(error)) => return Err(error.into()),
            Err(error) => (Vec::new(), Some(error.to_string())),
        }
    };

    let owned_ids: HashSet<&str> = entries
        .iter()
        .filter(|e| e.owned)
        .filter_map(|e| e.clerk_invitation_id.as_deref())
        .collect();
    let clerk = clerk_asked.then(|| ClerkState {
        invitations: asked
            .clerk
            .iter()
            .map(|i| ClerkInvitation {
                id: i.id.clone(),
                status: i.status,
                created_at: millis(i.created_at),
                owned: owned_ids.contains(i.id.as_str()),
            })
            .collect(),
        users: asked.users.clone(),
    });
    let last_errors = last_errors(&ledger_lines, &membership_ledger);
    Ok(Explanation {
        email: email.to_string(),
        target: target.to_owned(),
        explained_at: now,
        clerk_asked,
        clerk_error,
        on_roster: !rows.is_empty(),
        roster: rows.iter().map(roster_line).collect(),
        decision,
        membership_rows,
        memberships,
        memberships_note,
        ledger: ledger_lines,
        membership_ledger,
        user,
        clerk,
        events,
        last_errors,
    })
}

/// The whole plan and the guard's verdict as `plan` previews them, and one lookup of the
/// address's invitations and user.
async fn ask_clerk(reconciler: &Reconciler, email: &Email) -> Result<Asked, ExplainError> {
    let preview = reconciler.preview(0).await.map_err(|error| match error {
        CycleError::Database(error) => ExplainError::Database(error),
        CycleError::Roster(error) => ExplainError::Roster(error),
        clerk => ExplainError::Cycle(clerk),
    })?;
    let clerk = reconciler
        .clerk
        .find_by_email(email.as_str(), None)
        .await
        .map_err(|e| ExplainError::Cycle(e.into()))?;
    let users = reconciler
        .clerk
        .users_by_email(&[email.to_string()])
        .await
        .map_err(|e| ExplainError::Cycle(e.into()))?
        .into_iter()
        .map(|u| u.id)
        .collect();
    Ok(Asked {
        plan: preview.plan,
        verdict: Some(preview.verdict),
        owned_pending: preview.owned_pending,
        clerk,
        users,
    })
}

/// The plan of the address alone from the database: Clerk's invitations as the ledger last
/// saw them, through the same planner. No guard verdict (it needs Clerk's whole listing).
fn offline_plan(
    reconciler: &Reconciler,
    email: &Email,
    rows: &[desired::RosterRow],
    entries: &[LedgerEntry],
    user: Option<&KnownUser>,
) -> Asked {
    let policy = &reconciler.config.policy;
    let invitee = rows
        .iter()
        .filter_map(|row| row.as_ref().ok())
        .find_map(|row| DesiredInvitee::from_row(row, &policy.defaults).ok());
    let clerk: Vec<Invitation> = entries
        .iter()
        .filter_map(|entry| as_seen(entry, invitee.as_ref()))
        .collect();
    let mut known = HashSet::new();
    let mut deleted = HashSet::new();
    if let Some(user) = user {
        if user.deleted_at.is_some() {
            deleted.insert(email.clone());
        } else {
            known.insert(email.clone());
        }
    }
    let nowhere = HashSet::new();
    let plan = plan::planner::plan(
        plan::Inputs {
            desired: rows,
            clerk: &clerk,
            ledger: entries,
            known_users: &known,
            deleted_users: &deleted,
            listing: plan::Listing::Pending {
                found_nowhere: &nowhere,
            },
            now: Utc::now(),
        },
        policy,
    );
    Asked {
        plan,
        verdict: None,
        owned_pending: 0,
        clerk,
        users: Vec::new(),
    }
}

/// A ledger entry's invitation as the ledger last saw it in Clerk: carrying the row's
/// metadata when the entry was made from the row as it is now (or is not known to differ).
fn as_seen(entry: &LedgerEntry, invitee: Option<&DesiredInvitee>) -> Option<Invitation> {
    let id = entry.clerk_invitation_id.clone()?;
    let status = match entry.state {
        LedgerState::Pending => InvitationStatus::Pending,
        LedgerState::Accepted => InvitationStatus::Accepted,
        LedgerState::Expired => InvitationStatus::Expired,
        _ => return None,
    };
    let same = match (invitee, entry.row_digest.as_deref()) {
        (Some(invitee), Some(digest)) => invitee.digest() == digest,
        _ => true,
    };
    let public_metadata = match invitee {
        Some(invitee) if same => invitee.metadata(),
        _ => serde_json::Map::new(),
    };
    let created = entry.sent_at.unwrap_or(entry.created_at).timestamp_millis();
    Some(Invitation {
        object: "invitation".to_owned(),
        id,
        email_address: entry.email.to_string(),
        public_metadata,
        revoked: None,
        status,
        url: None,
        expires_at: None,
        created_at: created,
        updated_at: created,
    })
}

fn ledger_line(entry: &LedgerEntry, times: &[(i64, DateTime<Utc>)]) -> LedgerLine {
    LedgerLine {
        id: entry.id,
        invitation_id: entry.clerk_invitation_id.clone(),
        state: entry.state.as_str(),
        owned: entry.owned,
        attempts: entry.attempts,
        last_error_code: entry.last_error_code.clone(),
        last_error: entry.last_error.clone(),
        terminal: entry.terminal,
        next_attempt_at: entry.next_attempt_at,
        revoked_by_us: entry.revoked_by_us,
        created_at: entry.created_at,
        sent_at: entry.sent_at,
        updated_at: times
            .iter()
            .find(|(id, _)| *id == entry.id)
            .map(|(_, t)| *t),
    }
}

fn roster_line(row: &desired::RosterRow) -> RosterLine {
    match row {
        Ok(row) => RosterLine {
            email: row.email.clone(),
            source: row.source.clone(),
            public_metadata: row.public_metadata.clone(),
            not_before: row.not_before,
            created_at: row.created_at,
            updated_at: row.updated_at,
            invalid: None,
        },
        Err(invalid) => RosterLine {
            email: invalid.email.clone(),
            source: None,
            public_metadata: serde_json::Value::Null,
            not_before: None,
            created_at: None,
            updated_at: None,
            invalid: Some(invalid.reason.clone()),
        },
    }
}

/// The membership roster's rows of the address.
async fn membership_rows(
    reconciler: &Reconciler,
    email: &Email,
) -> Result<Vec<MembershipRowLine>, ExplainError> {
    let relation = &reconciler.config.memberships.relation;
    let rows = match memberships::check(&reconciler.pool, relation).await {
        Ok(()) => memberships::read_all(&reconciler.pool, relation).await,
        Err(error) => Err(error),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(memberships::ReadError::Database(error)) => return Err(error.into()),
        // No membership roster to read (the relation is missing): none of its rows.
        Err(_) => return Ok(Vec::new()),
    };
    Ok(rows
        .into_iter()
        .filter_map(|row| match row {
            Ok(row) if &row.email == email => Some(MembershipRowLine {
                organization: row.organization,
                role: row.role,
                source: row.source,
                not_before: row.not_before,
                invalid: None,
            }),
            Err(invalid) if invalid.parsed.as_ref() == Some(email) => Some(MembershipRowLine {
                organization: invalid.organization,
                role: None,
                source: None,
                not_before: None,
                invalid: Some(invalid.reason),
            }),
            _ => None,
        })
        .collect())
}

/// The membership plan's word on the address in each organization, from the membership
/// preview (`plan`'s organizations section).
async fn membership_decisions(
    reconciler: &Reconciler,
    preview: &overview::Preview,
    email: &Email,
    rows: &[MembershipRowLine],
) -> Result<Vec<MembershipDecision>, ExplainError> {
    let known = organizations::all(&reconciler.pool, &reconciler.config.target).await?;
    let mut decisions = Vec::new();
    for organization in &preview.organizations {
        let name = organization
            .slug
            .clone()
            .unwrap_or_else(|| organization.organization.clone());
        let named = |reference: &str| {
            reference == organization.organization
                || organization.slug.as_deref() == Some(reference)
        };
        let lines: Vec<&overview::Line> = organization
            .items
            .iter()
            .filter(|line| line.email == email.as_str())
            .collect();
        let row = rows.iter().find(|r| named(&r.organization));
        if lines.is_empty() {
            if row.is_some() {
                decisions.push(MembershipDecision {
                    organization_id: organization.organization.clone(),
                    slug: organization.slug.clone(),
                    category: "in_sync".to_owned(),
                    rule: format!("in sync in organization {name}: nothing to do"),
                    held: false,
                });
            }
            continue;
        }
        for line in lines {
            let detail = line.detail.clone().unwrap_or_default();
            let rule = if line.held {
                format!(
                    "held: {} ({detail})",
                    preview.held_reason.unwrap_or("held by the guard")
                )
            } else if line.category == "waiting" && organization.full {
                let max = known
                    .iter()
                    .find(|k| k.organization_id == organization.organization)
                    .map(|k| k.max_allowed_memberships as usize)
                    .filter(|max| *max > 0);
                match (max, organization.room) {
                    (Some(max), Some(room)) => format!(
                        "waiting: organization {name} is full ({} of {max})",
                        max.saturating_sub(room)
                    ),
                    _ => format!("waiting: organization {name} is full"),
                }
            } else if line.category == "waiting" {
                format!("waiting in organization {name}: {detail}")
            } else if detail.is_empty() {
                format!("{} in organization {name}", line.category)
            } else {
                format!("{} in organization {name}: {detail}", line.category)
            };
            decisions.push(MembershipDecision {
                organization_id: organization.organization.clone(),
                slug: organization.slug.clone(),
                category: line.category.to_owned(),
                rule,
                held: line.held,
            });
        }
    }
    if let Some(until) = preview.clerk_blocked_until {
        for decision in decisions
            .iter_mut()
            .filter(|d| overview::is_change(&d.category) && !d.held)
        {
            decision.rule.push_str(&format!(
                "; Clerk blocks organization invitations (rate limited) until {}",
                time(until)
            ));
        }
    }
    Ok(decisions)
}

/// The newest errors of both ledgers, in words.
fn last_errors(ledger: &[LedgerLine], memberships: &[MembershipHistory]) -> Vec<String> {
    let mut errors: Vec<(DateTime<Utc>, String)> = Vec::new();
    for line in ledger {
        if line.last_error_code.is_none() && line.last_error.is_none() {
            continue;
        }
        let at = line.updated_at.unwrap_or(line.created_at);
        errors.push((
            at,
            format!(
                "{} invitation: {}{}",
                time(at),
                line.last_error_code.as_deref().unwrap_or("error"),
                line.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ));
    }
    for entry in memberships {
        if entry.last_error_code.is_none() && entry.last_error.is_none() {
            continue;
        }
        errors.push((
            entry.updated_at,
            format!(
                "{} {} in {}: {}{}",
                time(entry.updated_at),
                entry.kind,
                entry.organization_id,
                entry.last_error_code.as_deref().unwrap_or("error"),
                entry
                    .last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ));
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.0));
    errors
        .into_iter()
        .take(ERRORS_SHOWN)
        .map(|(_, text)| text)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clerk::budget::Endpoint;
    use crate::reconcile::guard::Revocation;

    fn email() -> Email {
        Email::parse("ann@example.com").expect("an address")
    }

    fn facts<'a>(
        email: &'a Email,
        items: &'a [&'a Item],
        verdict: Option<&'a Verdict>,
        budget: &'a Budget,
        limits: &'a RevocationLimits,
    ) -> Facts<'a> {
        Facts {
            email,
            items,
            verdict,
            guard: limits,
            owned_pending: 40,
            queue_place: Some(0),
            budget,
            limits: &DEFAULT_LIMITS,
            ledger: &[],
            clerk: &[],
            user: None,
            now: Utc::now(),
        }
    }

    static DEFAULT_LIMITS: Limits = Limits {
        bulk_calls: 1,
        single_calls: 1,
        window: std::time::Duration::from_secs(3600),
    };

    #[test]
    fn a_held_revocation_names_the_count_and_the_limit() {
        let email = email();
        let revoke = Item::Revoke {
            email: email.clone(),
            invitation_id: "inv_1".to_owned(),
        };
        let held: Vec<Revocation> = (0..31)
            .map(|i| Revocation {
                email: email.clone(),
                invitation_id: format!("inv_{i}"),
            })
            .collect();
        let verdict = Verdict {
            held,
            reason: Some(HoldReason::TooMany),
            ..Verdict::default()
        };
        let budget = Budget::default();
        let limits = RevocationLimits::default();
        let items = [&revoke];
        let decision = describe(&facts(&email, &items, Some(&verdict), &budget, &limits));
        assert_eq!(decision.category, "revoke");
        assert!(
            decision
                .rule
                .starts_with("held: 31 revocations exceed sync.max_revocations 25"),
            "{}",
            decision.rule
        );
        assert_eq!(decision.waits_for.map(|w| w.reason), Some("guard"));
    }

    #[test]
    fn a_create_past_a_spent_budget_waits_for_the_next_free_slot() {
        let email = email();
        let invitee = DesiredInvitee::from_row(
            &crate::domain::DesiredRow::new("ann@example.com"),
            &Default::default(),
        )
        .expect("a valid row");
        let create = Item::Create {
            invitee,
            reinvite: false,
        };
        let frees = Utc::now() + chrono::Duration::minutes(20);
        let spent = Endpoint {
            left: 0,
            frees_at: Some(frees),
            blocked_until: None,
        };
        let budget = Budget {
            bulk: spent,
            single: spent,
        };
        let limits = RevocationLimits::default();
        let items = [&create];
        let decision = describe(&facts(&email, &items, None, &budget, &limits));
        assert_eq!(decision.category, "create");
        assert!(
            decision.rule.starts_with(&format!(
                "waiting: the create budget is spent until {} (next free slot)",
                time(frees)
            )),
            "{}",
            decision.rule
        );
        let waits = decision.waits_for.expect("a wait");
        assert_eq!(waits.reason, "budget");
        assert!(waits.until.is_some_and(|t| t >= frees));

        let free = Budget {
            bulk: Endpoint {
                left: 1,
                ..Endpoint::default()
            },
            single: Endpoint::default(),
        };
        let decision = describe(&facts(&email, &items, None, &free, &limits));
        assert!(
            decision.rule.contains("sent by the next cycle"),
            "{}",
            decision.rule
        );
        assert_eq!(decision.waits_for, None);
    }

    #[test]
    fn an_address_the_plan_holds_nothing_for_is_not_on_the_roster() {
        let email = email();
        let budget = Budget::default();
        let limits = RevocationLimits::default();
        let decision = describe(&facts(&email, &[], None, &budget, &limits));
        assert_eq!(decision.category, "not_on_roster");
        assert!(decision.rule.starts_with("not on the roster;"));
    }
}
