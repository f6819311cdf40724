//! The plan built one roster row at a time: the roster and the ledger are streamed through
//! it, and Clerk's invitations no row asked for are revoked or reported at the end.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::ladder::{decide, Facts, Users};
use super::{Category, Inputs, Item, Listing, Ownership, Plan, Policy, Quiet};
use crate::clerk::{Invitation, InvitationStatus};
use crate::domain::{
    roster_key, row_address, DesiredInvitee, DesiredRow, Email, InvalidRow, LedgerEntry, Person,
};
use crate::reconcile::observation::observe_entry;

/// Decides, for each desired row and each pending invitation, what the cycle does.
pub fn plan(inputs: Inputs<'_>, policy: &Policy) -> Plan {
    let owned_ids = owned_ids(inputs.ledger);
    let planner = Planner::new(inputs.clerk, &owned_ids, inputs.listing, inputs.now, policy);
    feed(inputs, planner)
}

/// The ids of the invitations the ledger says invite-sync created.
pub(super) fn owned_ids(ledger: &[LedgerEntry]) -> HashSet<String> {
    ledger
        .iter()
        .filter(|entry| entry.owned)
        .filter_map(|entry| entry.clerk_invitation_id.clone())
        .collect()
}

/// Adds the roster of `inputs` to `planner`, in the reader's order, with each row's person.
pub(super) fn feed(inputs: Inputs<'_>, mut planner: Planner<'_>) -> Plan {
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
                Person::of(
                    entries,
                    inputs.known_users.contains(&email),
                    inputs.deleted_users.contains(&email),
                )
            }
            None => Person::default(),
        };
        planner.add(row, person);
    }
    planner.finish()
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
    /// The last address added, and which row named it first when duplicates are noted: rows
    /// come ordered by address, so a repeat follows its first.
    last_email: Option<(Email, Option<RowId>)>,
    /// The addresses several rows name, with the row that counts (the first).
    duplicates: HashMap<Email, RowId>,
    /// Given for rows taken in another order than by address ([`Planner::decide_queued`]):
    /// the row that counts of each address several rows name, and whether it was seen.
    first_rows: HashMap<Email, (RowId, bool)>,
    quiet: Quiet,
    /// Counts every roster row's item but the replacements (which the guard sees), keeping none.
    count_all: bool,
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
            duplicates: HashMap::new(),
            first_rows: HashMap::new(),
            quiet: Quiet::Keep,
            count_all: false,
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

    /// Counts, rather than keeps, every roster row's item but the replacements: a plan that
    /// is written as the roster is read again keeps only what Clerk's listing and the guard
    /// need.
    pub fn counting_all(mut self) -> Planner<'a> {
        self.quiet = Quiet::Count;
        self.count_all = true;
        self
    }

    /// The addresses several roster rows name, each with the row that counts: what
    /// [`Planner::decide_queued`] needs to know of a roster read in another order.
    pub fn duplicates(&self) -> HashMap<Email, RowId> {
        self.duplicates.clone()
    }

    /// Decides rows taken in another order than by address, knowing the `duplicates` a read by
    /// address found.
    pub fn knowing_duplicates(mut self, duplicates: HashMap<Email, RowId>) -> Planner<'a> {
        self.first_rows = duplicates
            .into_iter()
            .map(|(email, first)| (email, (first, false)))
            .collect();
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

    /// Notes that the roster row `row` asks for `email`; `false` when the row before did
    /// already (and then notes the address as one several rows name).
    fn desire(&mut self, email: &Email, row: impl FnOnce() -> RowId) -> bool {
        if let Some(asked) = self.pending_desired.get_mut(email) {
            *asked = true;
        }
        if let Some((last, first)) = &self.last_email {
            if last == email {
                if let Some(first) = first {
                    self.duplicates
                        .entry(email.clone())
                        .or_insert_with(|| first.clone());
                }
                return false;
            }
        }
        // Only a plan read again in another order needs to know which row was first.
        let first = self.count_all.then(row);
        match &mut self.last_email {
            Some((last, slot)) => {
                last.clone_from(email);
                *slot = first;
            }
            None => self.last_email = Some((email.clone(), first)),
        }
        true
    }

    /// Keeps an item, or counts it.
    pub fn keep(&mut self, item: Item) {
        let quiet = matches!(
            item,
            Item::Accepted { .. } | Item::AlreadyUser { .. } | Item::InSync { .. }
        );
        let counted = self.count_all && !matches!(item, Item::Replace { .. });
        if counted || (quiet && self.quiet == Quiet::Count) {
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
        let item = self.decide(row, person);
        self.keep(item);
    }

    /// [`Planner::add`]'s decision, given back rather than kept (see [`Planner::keep`]).
    pub fn decide(&mut self, row: &Result<DesiredRow, InvalidRow>, person: Person) -> Item {
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
                        self.desire(&email, || RowId::of(row, false));
                        email.to_string()
                    }
                    None => invalid.email,
                };
                return Item::Invalid {
                    email,
                    reason: invalid.reason,
                };
            }
        };
        if !self.desire(&invitee.email, || RowId::of(row, true)) {
            return Item::Invalid {
                email: invitee.email.to_string(),
                reason: "another roster row has the same address".to_owned(),
            };
        }
        self.decide_person(invitee, person)
    }

    /// The item of a roster row taken in another order than by address (the create queue's):
    /// `None` for a row that cannot be read, or that another row of its address outranks
    /// (both invalid items, which a read by address reports). Needs
    /// [`Planner::knowing_duplicates`]; notes nothing.
    pub fn decide_queued(
        &mut self,
        row: &Result<DesiredRow, InvalidRow>,
        person: Person,
    ) -> Option<Item> {
        let Ok(desired) = row else {
            return None;
        };
        let invitee = DesiredInvitee::from_row(desired, &self.policy.defaults).ok()?;
        if let Some((first, seen)) = self.first_rows.get_mut(&invitee.email) {
            if *seen || *first != RowId::of(row, true) {
                return None;
            }
            *seen = true;
        }
        Some(self.decide_person(invitee, person))
    }

    /// The ladder's outcome for a readable row that counts for its address.
    fn decide_person(&self, invitee: DesiredInvitee, person: Person) -> Item {
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
            accepted: &person.accepted,
            users,
            owned_ids: self.owned_ids,
            now: self.now,
        };
        decide(invitee, &facts, self.policy)
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

/// Which roster row is which, among rows of one address: whether it could be read, whether
/// it is a valid invitee, its address as written, and when it was written. Two rows of one
/// address alike in all of these decide alike, so either may stand for the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowId {
    readable: bool,
    valid: bool,
    text: String,
    created_at: Option<DateTime<Utc>>,
    /// A hash of the rest of the row, so that rows alike in the fields above but not in
    /// what they ask for are told apart.
    content: u64,
}

/// Feeds a JSON value to a hasher without serialising it.
fn hash_value(value: &serde_json::Value, hasher: &mut impl std::hash::Hasher) {
    use serde_json::Value;
    use std::hash::Hash;
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => (2u8, n.to_string()).hash(hasher),
        Value::String(text) => (3u8, text).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(hasher);
            for (key, item) in map {
                key.hash(hasher);
                hash_value(item, hasher);
            }
        }
    }
}

fn content_of(row: &DesiredRow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hash_value(&row.public_metadata, &mut hasher);
    (
        &row.redirect_url,
        row.notify,
        row.expires_in_days,
        &row.template_slug,
        row.not_before,
        &row.source,
        row.updated_at,
    )
        .hash(&mut hasher);
    hasher.finish()
}

impl RowId {
    fn of(row: &Result<DesiredRow, InvalidRow>, valid: bool) -> RowId {
        match row {
            Ok(row) => RowId {
                readable: true,
                valid,
                text: row.email.clone(),
                created_at: row.created_at,
                content: content_of(row),
            },
            Err(invalid) => RowId {
                readable: false,
                valid: false,
                text: invalid.email.clone(),
                created_at: None,
                content: 0,
            },
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
