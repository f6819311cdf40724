//! The plan: from the roster, Clerk's invitations and the ledger, what to do about each
//! email and each invitation. A pure function: no I/O, no clock (the caller passes `now`).
//!
//! Invariants (held by property tests): no email is both created and revoked; nothing
//! foreign is revoked; every create is desired; no create for an email with a pending
//! invitation.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clerk::{Invitation, InvitationStatus};
pub use crate::domain::Person;
use crate::domain::{
    roster_key, row_address, DesiredInvitee, DesiredRow, Email, InvalidRow, LedgerEntry,
    LedgerState, RowDefaults,
};

pub use crate::config::{OnChange, Ownership};

/// The settings the plan obeys.
#[derive(Debug, Clone)]
pub struct Policy {
    pub ownership: Ownership,
    pub on_change: OnChange,
    pub reinvite_expired: bool,
    pub defaults: RowDefaults,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ownership: Ownership::Owned,
            on_change: OnChange::Report,
            reinvite_expired: true,
            defaults: RowDefaults::default(),
        }
    }
}

/// Everything the plan looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The roster in its order; a row that could not be read carries its reason.
    pub desired: &'a [Result<DesiredRow, InvalidRow>],
    /// Clerk's invitations as the cycle read them: see `listing` (a full listing shows the
    /// pending, accepted and expired ones; a pending-only one the pending ones), and what
    /// lookups of the ledger's missing ones found.
    pub clerk: &'a [Invitation],
    pub ledger: &'a [LedgerEntry],
    /// People Clerk said are users.
    pub known_users: &'a HashSet<Email>,
    /// Users Clerk deleted: what they accepted before no longer counts.
    pub deleted_users: &'a HashSet<Email>,
    /// How much of Clerk `clerk` shows.
    pub listing: Listing<'a>,
    pub now: DateTime<Utc>,
}

/// How much of Clerk's invitations a cycle read.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// Every non-revoked invitation (and the lookups of the ledger's missing ones): an
    /// invitation missing from it was revoked.
    Full,
    /// Pending invitations only, plus what lookups found: an invitation missing from it says
    /// nothing, unless it is among `found_nowhere` (invitations a lookup found in no state at all).
    Pending { found_nowhere: &'a HashSet<String> },
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Invite: desired, no live invitation. `reinvite` when the last one expired.
    Create {
        invitee: DesiredInvitee,
        reinvite: bool,
    },
    /// The pending invitation is stale and `on_change = "replace"`: revoke it, then invite again.
    Replace {
        invitee: DesiredInvitee,
        invitation_id: String,
        differences: Vec<&'static str>,
    },
    /// Revoke: pending, not desired, owned (or `ownership = "all"`).
    Revoke {
        email: Email,
        invitation_id: String,
    },
    /// Pending, not desired, not ours: reported, left alone.
    Foreign {
        email: Email,
        invitation_id: String,
    },
    /// Pending and desired, but what it carries differs from the roster.
    Stale {
        email: Email,
        invitation_id: String,
        differences: Vec<&'static str>,
    },
    /// A roster row that can never succeed.
    Invalid {
        email: String,
        reason: String,
    },
    /// `not_before` is in the future.
    Deferred {
        email: Email,
        not_before: DateTime<Utc>,
    },
    Accepted {
        email: Email,
    },
    AlreadyUser {
        email: Email,
    },
    /// Revoked by someone else: not invited again until the roster row changes.
    RevokedExternally {
        email: Email,
        invitation_id: Option<String>,
    },
    /// Expired, and `reinvite_expired` is off.
    Expired {
        email: Email,
    },
    /// Clerk refused the last create: retried at `retry_at`, or when the row changes if `None`.
    Failed {
        email: Email,
        code: Option<String>,
        reason: Option<String>,
        retry_at: Option<DateTime<Utc>>,
    },
    /// A create whose outcome is not known yet; settled by a lookup before anything is sent.
    Unsettled {
        email: Email,
    },
    InSync {
        email: Email,
        invitation_id: String,
        owned: bool,
    },
}

/// The categories the run record and `plan` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Revoke,
    Replace,
    Create,
    Reinvite,
    Foreign,
    Stale,
    Invalid,
    Deferred,
    Accepted,
    AlreadyUser,
    RevokedExternally,
    Expired,
    Failed,
    Unsettled,
    InSync,
}

impl Category {
    pub const ALL: [Category; 15] = [
        Category::Revoke,
        Category::Replace,
        Category::Create,
        Category::Reinvite,
        Category::Foreign,
        Category::Stale,
        Category::Invalid,
        Category::Deferred,
        Category::Accepted,
        Category::AlreadyUser,
        Category::RevokedExternally,
        Category::Expired,
        Category::Failed,
        Category::Unsettled,
        Category::InSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Revoke => "revoke",
            Category::Replace => "replace",
            Category::Create => "create",
            Category::Reinvite => "reinvite",
            Category::Foreign => "foreign",
            Category::Stale => "stale",
            Category::Invalid => "invalid",
            Category::Deferred => "deferred",
            Category::Accepted => "accepted",
            Category::AlreadyUser => "already_user",
            Category::RevokedExternally => "revoked_externally",
            Category::Expired => "expired",
            Category::Failed => "failed",
            Category::Unsettled => "unsettled",
            Category::InSync => "in_sync",
        }
    }
}

impl Item {
    pub fn category(&self) -> Category {
        match self {
            Item::Create {
                reinvite: false, ..
            } => Category::Create,
            Item::Create { reinvite: true, .. } => Category::Reinvite,
            Item::Replace { .. } => Category::Replace,
            Item::Revoke { .. } => Category::Revoke,
            Item::Foreign { .. } => Category::Foreign,
            Item::Stale { .. } => Category::Stale,
            Item::Invalid { .. } => Category::Invalid,
            Item::Deferred { .. } => Category::Deferred,
            Item::Accepted { .. } => Category::Accepted,
            Item::AlreadyUser { .. } => Category::AlreadyUser,
            Item::RevokedExternally { .. } => Category::RevokedExternally,
            Item::Expired { .. } => Category::Expired,
            Item::Failed { .. } => Category::Failed,
            Item::Unsettled { .. } => Category::Unsettled,
            Item::InSync { .. } => Category::InSync,
        }
    }

    /// The address the item is about, as normalised (or as written, for an unparseable row).
    pub fn email(&self) -> &str {
        match self {
            Item::Create { invitee, .. } | Item::Replace { invitee, .. } => invitee.email.as_str(),
            Item::Invalid { email, .. } => email,
            Item::Revoke { email, .. }
            | Item::Foreign { email, .. }
            | Item::Stale { email, .. }
            | Item::Deferred { email, .. }
            | Item::Accepted { email }
            | Item::AlreadyUser { email }
            | Item::RevokedExternally { email, .. }
            | Item::Expired { email }
            | Item::Failed { email, .. }
            | Item::Unsettled { email }
            | Item::InSync { email, .. } => email.as_str(),
        }
    }

    pub fn invitation_id(&self) -> Option<&str> {
        match self {
            Item::Replace { invitation_id, .. }
            | Item::Revoke { invitation_id, .. }
            | Item::Foreign { invitation_id, .. }
            | Item::Stale { invitation_id, .. }
            | Item::InSync { invitation_id, .. } => Some(invitation_id),
            Item::RevokedExternally { invitation_id, .. } => invitation_id.as_deref(),
            _ => None,
        }
    }
}

/// What the next cycle would do, item by item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Revocations first, then creates in queue order (oldest `not_before`, then oldest
    /// row), then everything else by category and email.
    pub items: Vec<Item>,
    /// Items counted by category where the plan kept none: people who need nothing, and the
    /// creates past a cycle's head of the queue.
    pub quiet: BTreeMap<Category, usize>,
}

impl Plan {
    pub fn counts(&self) -> BTreeMap<Category, usize> {
        let mut counts = self.quiet.clone();
        for item in &self.items {
            *counts.entry(item.category()).or_insert(0) += 1;
        }
        counts
    }

    /// The invitees to create (creates, reinvites and the create half of replacements), in
    /// queue order.
    pub fn creates(&self) -> impl Iterator<Item = &DesiredInvitee> {
        self.items.iter().filter_map(|item| match item {
            Item::Create { invitee, .. } | Item::Replace { invitee, .. } => Some(invitee),
            _ => None,
        })
    }

    /// How many the plan would create: the creates it holds and those past its head.
    pub fn queued(&self) -> usize {
        self.creates().count() + self.past_head()
    }

    /// How many creates were counted past the plan's head, not held.
    pub fn past_head(&self) -> usize {
        [Category::Create, Category::Reinvite]
            .iter()
            .filter_map(|category| self.quiet.get(category))
            .sum()
    }

    /// The invitees to create, in queue order, taken out of the plan.
    pub fn into_creates(self) -> Vec<DesiredInvitee> {
        self.items
            .into_iter()
            .filter_map(|item| match item {
                Item::Create { invitee, .. } | Item::Replace { invitee, .. } => Some(invitee),
                _ => None,
            })
            .collect()
    }

    /// The `(email, invitation id)` pairs to revoke because they are not desired.
    pub fn revocations(&self) -> impl Iterator<Item = (&Email, &str)> {
        self.items.iter().filter_map(|item| match item {
            Item::Revoke {
                email,
                invitation_id,
            } => Some((email, invitation_id.as_str())),
            _ => None,
        })
    }
}

/// Decides, for each desired row and each pending invitation, what the cycle does.
pub fn plan(inputs: Inputs<'_>, policy: &Policy) -> Plan {
    let owned_ids = owned_ids(inputs.ledger);
    let planner = Planner::new(inputs.clerk, &owned_ids, inputs.listing, inputs.now, policy);
    feed(inputs, planner)
}

/// The ids of the invitations the ledger says invite-sync created.
fn owned_ids(ledger: &[LedgerEntry]) -> HashSet<String> {
    ledger
        .iter()
        .filter(|entry| entry.owned)
        .filter_map(|entry| entry.clerk_invitation_id.clone())
        .collect()
}

/// Adds the roster of `inputs` to `planner`, in the reader's order, with each row's person.
fn feed(inputs: Inputs<'_>, mut planner: Planner<'_>) -> Plan {
    let mut people: HashMap<&Email, Vec<&LedgerEntry>> = HashMap::new();
    for entry in inputs.ledger {
        people.entry(&entry.email).or_default().push(entry);
    }
    // The planner takes rows by address; of several rows with one address the first counts.
    let mut rows: Vec<&Result<DesiredRow, InvalidRow>> = inputs.desired.iter().collect();
    rows.sort_by_cached_key(|row| roster_key(row));
    for row in rows {
        let person = match row_address(row) {
            Some(email) => {
                let mut entries: Vec<LedgerEntry> = people
                    .get(&email)
                    .map(|entries| entries.iter().map(|&e| e.clone()).collect())
                    .unwrap_or_default();
                entries.sort_by_key(|entry| entry.id);
                Person {
                    entries,
                    user: inputs.known_users.contains(&email),
                    deleted: inputs.deleted_users.contains(&email),
                }
            }
            None => Person::default(),
        };
        planner.add(row, person);
    }
    planner.finish()
}

/// Whether a plan keeps an item for each person who needs nothing (accepted, already a user,
/// in sync), or only counts them: a cycle counts them, so its memory follows the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    Keep,
    Count,
}

/// The plan built one roster row at a time, so neither the roster nor the ledger is ever
/// held whole: `add` each row with what is known of its person as it is read, then `finish`.
/// [`plan`] is the same over slices.
pub struct Planner<'a> {
    clerk_by_id: HashMap<&'a str, &'a Invitation>,
    listing: Listing<'a>,
    policy: &'a Policy,
    now: DateTime<Utc>,
    /// The ids of Clerk's listed invitations that invite-sync created.
    owned_ids: &'a HashSet<String>,
    clerk_by_email: HashMap<Email, Vec<&'a Invitation>>,
    /// The addresses of Clerk's pending invitations, and whether a roster row asked for them.
    pending_desired: HashMap<Email, bool>,
    /// The last address added: rows come ordered by address, so a repeat follows its first.
    last_email: Option<Email>,
    quiet: Quiet,
    /// Items counted but not kept, by category.
    quiet_counts: BTreeMap<Category, usize>,
    /// At most this many creates are kept, the first in queue order; the rest are counted.
    head: Option<usize>,
    creates: Vec<Item>,
    items: Vec<Item>,
    rows: usize,
}

impl<'a> Planner<'a> {
    /// `owned_ids`: which of `clerk`'s invitations invite-sync created (ids of others are
    /// ignored).
    pub fn new(
        clerk: &'a [Invitation],
        owned_ids: &'a HashSet<String>,
        listing: Listing<'a>,
        now: DateTime<Utc>,
        policy: &'a Policy,
    ) -> Planner<'a> {
        let clerk_by_id = clerk.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut clerk_by_email: HashMap<Email, Vec<&'a Invitation>> = HashMap::new();
        for invitation in clerk {
            if let Ok(email) = Email::parse(&invitation.email_address) {
                clerk_by_email.entry(email).or_default().push(invitation);
            }
        }
        for invitations in clerk_by_email.values_mut() {
            invitations.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        }
        let pending_desired = clerk_by_email
            .iter()
            .filter(|(_, invitations)| {
                invitations
                    .iter()
                    .any(|i| i.status == InvitationStatus::Pending)
            })
            .map(|(email, _)| (email.clone(), false))
            .collect();
        Planner {
            clerk_by_id,
            listing,
            policy,
            now,
            owned_ids,
            clerk_by_email,
            pending_desired,
            last_email: None,
            quiet: Quiet::Keep,
            quiet_counts: BTreeMap::new(),
            head: None,
            creates: Vec::new(),
            items: Vec::new(),
            rows: 0,
        }
    }

    /// Counts, rather than keeps, the items of people who need nothing.
    pub fn counting_quiet(mut self) -> Planner<'a> {
        self.quiet = Quiet::Count;
        self
    }

    /// Keeps only the first `head` creates in queue order, and counts the rest: a cycle sends
    /// no more than its budget allows, so a first run over a huge roster holds a cycle's worth.
    pub fn keeping_creates(mut self, head: usize) -> Planner<'a> {
        self.head = Some(head.max(1));
        self
    }

    /// Drops the creates past the head, counting them.
    fn trim_creates(&mut self, head: usize) {
        if self.creates.len() <= head {
            return;
        }
        self.creates.select_nth_unstable_by(head, plan_order);
        for item in self.creates.drain(head..) {
            *self.quiet_counts.entry(item.category()).or_insert(0) += 1;
        }
    }

    /// How many roster rows were added.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Notes that a roster row asks for `email`; `false` when the row before did already.
    fn desire(&mut self, email: &Email) -> bool {
        if let Some(asked) = self.pending_desired.get_mut(email) {
            *asked = true;
        }
        if self.last_email.as_ref() == Some(email) {
            return false;
        }
        self.last_email = Some(email.clone());
        true
    }

    fn push(&mut self, item: Item) {
        let quiet = matches!(
            item,
            Item::Accepted { .. } | Item::AlreadyUser { .. } | Item::InSync { .. }
        );
        if quiet && self.quiet == Quiet::Count {
            *self.quiet_counts.entry(item.category()).or_insert(0) += 1;
        } else if let (Item::Create { .. }, Some(head)) = (&item, self.head) {
            self.creates.push(item);
            // Trimmed when twice the head: amortised, the queue costs the head's memory.
            if self.creates.len() >= head.saturating_mul(2) {
                self.trim_creates(head);
            }
        } else {
            self.items.push(item);
        }
    }

    /// Decides one roster row, given what is known of the person its address names. Rows
    /// must come ordered by address (normalised), oldest first among rows of one address: of
    /// several rows with one address, the first counts.
    pub fn add(&mut self, row: &Result<DesiredRow, InvalidRow>, person: Person) {
        self.rows += 1;
        let checked = match row {
            Ok(row) => DesiredInvitee::from_row(row, &self.policy.defaults),
            Err(unreadable) => Err(unreadable.clone()),
        };
        let invitee = match checked {
            Ok(invitee) => invitee,
            Err(invalid) => {
                let email = match invalid.parsed {
                    Some(email) => {
                        self.desire(&email);
                        email.to_string()
                    }
                    None => invalid.email,
                };
                self.push(Item::Invalid {
                    email,
                    reason: invalid.reason,
                });
                return;
            }
        };
        if !self.desire(&invitee.email) {
            self.push(Item::Invalid {
                email: invitee.email.to_string(),
                reason: "another roster row has the same address".to_owned(),
            });
            return;
        }
        let invitations = self
            .clerk_by_email
            .get(&invitee.email)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let entries: Vec<LedgerEntry> = person
            .entries
            .into_iter()
            .map(|entry| observe_entry(entry, &self.clerk_by_id, self.listing))
            .collect();
        let entries: Vec<&LedgerEntry> = entries.iter().collect();
        let users = Users {
            known: person.user,
            deleted: person.deleted,
        };
        let facts = Facts {
            invitations,
            entries: &entries,
            users,
            owned_ids: self.owned_ids,
            now: self.now,
        };
        let item = decide(invitee, &facts, self.policy);
        self.push(item);
    }

    /// The pending invitations no roster row asked for, then everything in plan order.
    pub fn finish(mut self) -> Plan {
        if let Some(head) = self.head {
            self.trim_creates(head);
        }
        let creates = std::mem::take(&mut self.creates);
        self.items.extend(creates);
        let Planner {
            policy,
            owned_ids,
            clerk_by_email,
            pending_desired,
            quiet_counts,
            mut items,
            ..
        } = self;
        for (email, invitations) in &clerk_by_email {
            if pending_desired.get(email).copied().unwrap_or(true) {
                continue;
            }
            for invitation in invitations
                .iter()
                .filter(|i| i.status == InvitationStatus::Pending)
            {
                let (email, invitation_id) = (email.clone(), invitation.id.clone());
                let ours = owned_ids.contains(invitation.id.as_str());
                items.push(if ours || policy.ownership == Ownership::All {
                    Item::Revoke {
                        email,
                        invitation_id,
                    }
                } else {
                    Item::Foreign {
                        email,
                        invitation_id,
                    }
                });
            }
        }
        // One vector sorted in place (an unstable sort needs no scratch copy; the order is
        // total): revocations by address, then replacements and creates each in queue order,
        // then everything else by category and address.
        items.sort_unstable_by(plan_order);
        Plan {
            items,
            quiet: quiet_counts,
        }
    }
}

fn invalid_reason(item: &Item) -> Option<&str> {
    match item {
        Item::Invalid { reason, .. } => Some(reason),
        _ => None,
    }
}

/// Where an item stands in a plan.
fn plan_order(a: &Item, b: &Item) -> std::cmp::Ordering {
    fn group(item: &Item) -> u8 {
        match item {
            Item::Revoke { .. } => 0,
            Item::Replace { .. } => 1,
            Item::Create { .. } => 2,
            _ => 3,
        }
    }
    match (a, b) {
        (Item::Revoke { .. }, Item::Revoke { .. }) => {
            (a.email(), a.invitation_id()).cmp(&(b.email(), b.invitation_id()))
        }
        (Item::Replace { invitee: a, .. }, Item::Replace { invitee: b, .. })
        | (Item::Create { invitee: a, .. }, Item::Create { invitee: b, .. }) => {
            queue_key(a).cmp(&queue_key(b))
        }
        _ if group(a) != group(b) => group(a).cmp(&group(b)),
        _ => (
            a.category(),
            a.email(),
            a.invitation_id(),
            invalid_reason(a),
        )
            .cmp(&(
                b.category(),
                b.email(),
                b.invitation_id(),
                invalid_reason(b),
            )),
    }
}

/// Queue order: oldest `not_before` (a row without one has waited since it was written),
/// then oldest row, then address.
fn queue_key(invitee: &DesiredInvitee) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>, &str) {
    (
        invitee.not_before.or(invitee.created_at),
        invitee.created_at,
        invitee.email.as_str(),
    )
}

/// Who is a user, and who was one until Clerk deleted them.
#[derive(Clone, Copy)]
struct Users {
    known: bool,
    deleted: bool,
}

/// What is known of one desired person, gathered once for [`decide`].
struct Facts<'a> {
    /// Clerk's invitations for the address, oldest first.
    invitations: &'a [&'a Invitation],
    /// The ledger's entries for the address (as Clerk's listing shows them), oldest first.
    entries: &'a [&'a LedgerEntry],
    users: Users,
    owned_ids: &'a HashSet<String>,
    now: DateTime<Utc>,
}

impl Facts<'_> {
    /// The newest pending invitation.
    fn pending(&self) -> Option<&Invitation> {
        self.invitations
            .iter()
            .rev()
            .find(|i| i.status == InvitationStatus::Pending)
            .copied()
    }
}

/// The outcome for one desired person: the first rung of the ladder that applies.
fn decide(invitee: DesiredInvitee, facts: &Facts<'_>, policy: &Policy) -> Item {
    if let Some(item) = settled_or_user(&invitee.email, facts) {
        return item;
    }
    if let Some(pending) = facts.pending() {
        return pending_outcome(invitee, pending, facts, policy);
    }
    if let Some(not_before) = invitee.not_before.filter(|t| *t > facts.now) {
        return Item::Deferred {
            email: invitee.email,
            not_before,
        };
    }
    if let Some(item) = refused_before(&invitee, facts) {
        return item;
    }
    expired_or_new(invitee, facts, policy)
}

/// Unsettled while a create's outcome is unknown; then accepted, or already a user.
fn settled_or_user(email: &Email, facts: &Facts<'_>) -> Option<Item> {
    let email = email.clone();
    if facts
        .entries
        .iter()
        .any(|e| e.state == LedgerState::Sending)
    {
        return Some(Item::Unsettled { email });
    }
    // A deleted user's acceptance is history: they are invited again.
    let accepted = !facts.users.deleted
        && (facts
            .invitations
            .iter()
            .any(|i| i.status == InvitationStatus::Accepted)
            || facts
                .entries
                .iter()
                .any(|e| e.state == LedgerState::Accepted));
    if accepted {
        return Some(Item::Accepted { email });
    }
    facts.users.known.then_some(Item::AlreadyUser { email })
}

/// A pending invitation is in sync with the row, or stale (replaced when the policy says
/// so and invite-sync may touch it).
fn pending_outcome(
    invitee: DesiredInvitee,
    pending: &Invitation,
    facts: &Facts<'_>,
    policy: &Policy,
) -> Item {
    let owned = facts.owned_ids.contains(pending.id.as_str());
    let recorded = facts
        .entries
        .iter()
        .rev()
        .find(|e| e.clerk_invitation_id.as_deref() == Some(pending.id.as_str()));
    let differences = changes(&invitee, pending, recorded.copied());
    let invitation_id = pending.id.clone();
    if differences.is_empty() {
        return Item::InSync {
            email: invitee.email,
            invitation_id,
            owned,
        };
    }
    let may_replace = owned || policy.ownership == Ownership::All;
    if policy.on_change == OnChange::Replace && may_replace {
        Item::Replace {
            invitation_id,
            invitee,
            differences,
        }
    } else {
        Item::Stale {
            email: invitee.email,
            invitation_id,
            differences,
        }
    }
}

/// What differs between the row and its pending invitation: the metadata, and the
/// redirect URL when invite-sync sent the invitation (`recorded` as owned).
fn changes(
    invitee: &DesiredInvitee,
    pending: &Invitation,
    recorded: Option<&LedgerEntry>,
) -> Vec<&'static str> {
    let mut differences = Vec::new();
    if pending.public_metadata != invitee.metadata() {
        differences.push("public_metadata");
    }
    if let Some(entry) = recorded.filter(|e| e.owned) {
        if entry.redirect_url != invitee.request.redirect_url {
            differences.push("redirect_url");
        }
    }
    differences
}

/// The last create for the row failed (for good, or until its backoff passes), or its
/// invitation was revoked by someone else and the row has not changed since.
fn refused_before(invitee: &DesiredInvitee, facts: &Facts<'_>) -> Option<Item> {
    let last = facts.entries.last()?;
    let email = invitee.email.clone();
    let same_row = last.row_digest.as_deref() == Some(invitee.digest.as_str());
    match last.state {
        LedgerState::Failed if last.terminal && same_row => Some(Item::Failed {
            email,
            code: last.last_error_code.clone(),
            reason: last.last_error.clone(),
            retry_at: None,
        }),
        LedgerState::Failed
            if !last.terminal && last.next_attempt_at.is_some_and(|t| t > facts.now) =>
        {
            Some(Item::Failed {
                email,
                code: last.last_error_code.clone(),
                reason: last.last_error.clone(),
                retry_at: last.next_attempt_at,
            })
        }
        LedgerState::Revoked if !last.revoked_by_us && same_row => Some(Item::RevokedExternally {
            email,
            invitation_id: last.clerk_invitation_id.clone(),
        }),
        _ => None,
    }
}

/// A create, a re-invitation of an expired invitation, or the expired one reported.
fn expired_or_new(invitee: DesiredInvitee, facts: &Facts<'_>, policy: &Policy) -> Item {
    let expired = facts
        .invitations
        .iter()
        .any(|i| i.status == InvitationStatus::Expired)
        || facts
            .entries
            .last()
            .is_some_and(|e| e.state == LedgerState::Expired);
    match (expired, policy.reinvite_expired) {
        (true, false) => Item::Expired {
            email: invitee.email,
        },
        (reinvite, _) => Item::Create { invitee, reinvite },
    }
}

/// The ledger as Clerk's list shows it now: each invitation the ledger holds as pending or
/// expired takes the status Clerk reports. One missing from a full listing was revoked (by
/// someone else, unless invite-sync revoked it); one missing from a pending-only listing
/// keeps its state, unless a lookup found it nowhere.
pub fn observe(
    ledger: &[LedgerEntry],
    clerk: &[Invitation],
    listing: Listing<'_>,
) -> Vec<LedgerEntry> {
    let by_id: HashMap<&str, &Invitation> = clerk.iter().map(|i| (i.id.as_str(), i)).collect();
    ledger
        .iter()
        .map(|entry| observe_entry(entry.clone(), &by_id, listing))
        .collect()
}

/// One ledger entry as Clerk's listing (by invitation id) shows it now: see [`observe`].
pub fn observe_entry(
    mut entry: LedgerEntry,
    by_id: &HashMap<&str, &Invitation>,
    listing: Listing<'_>,
) -> LedgerEntry {
    if let (Some(id), LedgerState::Pending | LedgerState::Expired) =
        (entry.clerk_invitation_id.as_deref(), entry.state)
    {
        entry.state = match (by_id.get(id).map(|i| i.status), listing) {
            (Some(InvitationStatus::Pending), _) => LedgerState::Pending,
            (Some(InvitationStatus::Accepted), _) => LedgerState::Accepted,
            (Some(InvitationStatus::Expired), _) => LedgerState::Expired,
            (Some(InvitationStatus::Revoked), _) | (None, Listing::Full) => LedgerState::Revoked,
            (None, Listing::Pending { found_nowhere }) if found_nowhere.contains(id) => {
                LedgerState::Revoked
            }
            (None, Listing::Pending { .. }) => entry.state,
        };
    }
    entry
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
mod ladder_tests {
    use super::*;

    fn invitee() -> DesiredInvitee {
        DesiredInvitee::from_row(&DesiredRow::new("ann@example.com"), &Default::default())
            .expect("a valid row")
    }

    /// An invitation to ann@example.com, as the property tests build one.
    fn invitation(id: &str, status: InvitationStatus) -> Invitation {
        super::tests::invitation(id, "ann@example.com", status)
    }

    fn entry(state: LedgerState) -> LedgerEntry {
        LedgerEntry {
            id: 1,
            email: Email::parse("ann@example.com").expect("an address"),
            clerk_invitation_id: Some("inv_1".to_owned()),
            state,
            owned: true,
            row_digest: None,
            redirect_url: None,
            attempts: 1,
            last_error_code: Some("form_param_format_invalid".to_owned()),
            last_error: None,
            terminal: false,
            next_attempt_at: None,
            revoked_by_us: false,
            created_at: Utc::now(),
            sent_at: None,
        }
    }

    fn facts<'a>(
        invitations: &'a [&'a Invitation],
        entries: &'a [&'a LedgerEntry],
        users: Users,
        owned_ids: &'a HashSet<String>,
    ) -> Facts<'a> {
        Facts {
            invitations,
            entries,
            users,
            owned_ids,
            now: Utc::now(),
        }
    }

    const NOBODY: Users = Users {
        known: false,
        deleted: false,
    };

    #[test]
    fn a_deleted_users_acceptance_is_history_and_a_sending_row_comes_first() {
        let accepted = invitation("inv_1", InvitationStatus::Accepted);
        let owned = HashSet::new();
        let email = invitee().email;
        let deleted = Users {
            known: false,
            deleted: true,
        };
        assert_eq!(
            settled_or_user(&email, &facts(&[&accepted], &[], deleted, &owned)),
            None
        );
        assert_eq!(
            settled_or_user(&email, &facts(&[&accepted], &[], NOBODY, &owned)),
            Some(Item::Accepted {
                email: email.clone()
            })
        );
        let sending = entry(LedgerState::Sending);
        assert_eq!(
            settled_or_user(&email, &facts(&[&accepted], &[&sending], NOBODY, &owned)),
            Some(Item::Unsettled {
                email: email.clone()
            })
        );
        let user = Users {
            known: true,
            deleted: false,
        };
        assert_eq!(
            settled_or_user(&email, &facts(&[], &[], user, &owned)),
            Some(Item::AlreadyUser { email })
        );
    }

    #[test]
    fn only_the_redirect_of_an_owned_entry_is_compared() {
        let pending = invitation("inv_1", InvitationStatus::Pending);
        let mut recorded = entry(LedgerState::Pending);
        recorded.redirect_url = Some("https://elsewhere.example".to_owned());
        assert_eq!(
            changes(&invitee(), &pending, Some(&recorded)),
            ["redirect_url"]
        );
        recorded.owned = false;
        assert!(changes(&invitee(), &pending, Some(&recorded)).is_empty());
        let mut changed = pending.clone();
        changed
            .public_metadata
            .insert("team".to_owned(), serde_json::json!("blue"));
        assert_eq!(changes(&invitee(), &changed, None), ["public_metadata"]);
    }

    #[test]
    fn a_failure_holds_until_its_backoff_passes_or_for_good_until_the_row_changes() {
        let owned = HashSet::new();
        let invitee = invitee();
        let mut failed = entry(LedgerState::Failed);
        failed.next_attempt_at = Some(Utc::now() + chrono::Duration::minutes(5));
        let held = refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned));
        assert!(matches!(
            held,
            Some(Item::Failed {
                retry_at: Some(_),
                ..
            })
        ));
        failed.next_attempt_at = Some(Utc::now() - chrono::Duration::minutes(5));
        assert_eq!(
            refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned)),
            None
        );

        failed.terminal = true;
        assert_eq!(
            refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned)),
            None,
            "another row than the one refused"
        );
        failed.row_digest = Some(invitee.digest.clone());
        let terminal = refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned));
        assert!(matches!(
            terminal,
            Some(Item::Failed { retry_at: None, .. })
        ));

        let mut revoked = entry(LedgerState::Revoked);
        revoked.row_digest = Some(invitee.digest.clone());
        let by_hand = refused_before(&invitee, &facts(&[], &[&revoked], NOBODY, &owned));
        assert!(matches!(by_hand, Some(Item::RevokedExternally { .. })));
        revoked.revoked_by_us = true;
        assert_eq!(
            refused_before(&invitee, &facts(&[], &[&revoked], NOBODY, &owned)),
            None
        );
    }

    #[test]
    fn an_expired_invitation_is_invited_again_only_when_the_policy_says_so() {
        let owned = HashSet::new();
        let expired = invitation("inv_1", InvitationStatus::Expired);
        let reinvite = Policy {
            reinvite_expired: true,
            ..Policy::default()
        };
        let keep = Policy {
            reinvite_expired: false,
            ..Policy::default()
        };
        let shown = [&expired];
        let seen = facts(&shown, &[], NOBODY, &owned);
        assert!(matches!(
            expired_or_new(invitee(), &seen, &reinvite),
            Item::Create { reinvite: true, .. }
        ));
        assert!(matches!(
            expired_or_new(invitee(), &seen, &keep),
            Item::Expired { .. }
        ));
        let ledger_expired = entry(LedgerState::Expired);
        let entries = [&ledger_expired];
        let recorded = facts(&[], &entries, NOBODY, &owned);
        assert!(matches!(
            expired_or_new(invitee(), &recorded, &keep),
            Item::Expired { .. }
        ));
        let fresh = facts(&[], &[], NOBODY, &owned);
        assert!(matches!(
            expired_or_new(invitee(), &fresh, &keep),
            Item::Create {
                reinvite: false,
                ..
            }
        ));
    }
}
