//! How the membership plan decides: rows are grouped by the organization they resolve to,
//! each organization is decided alone (its rows, then what Clerk holds that no row asks
//! for), and the creates of a full organization beyond its room wait.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{
    DesiredMembership, Holdings, Inputs, Invitation, InvitationStatus, Item, Member,
    MembershipKind, MembershipLedgerEntry, MembershipRosterRow, MembershipState, Note,
    Organization, Plan, Policy, Resolution, Room, Wait,
};
use crate::domain::Email;
use crate::reconcile::memberships::plan::ExistingUsers;

pub(super) fn plan(inputs: Inputs<'_>, policy: &Policy) -> Plan {
    let mut items = Vec::new();
    let grouped = group_rows(inputs, &mut items);
    let mut organizations: BTreeMap<&str, &Organization> = BTreeMap::new();
    for resolution in inputs.resolved.values() {
        if let Resolution::Found(organization) = resolution {
            organizations.insert(organization.id.as_str(), organization);
        }
    }
    let mut ledger: HashMap<&str, Vec<&MembershipLedgerEntry>> = HashMap::new();
    for entry in inputs.ledger {
        ledger
            .entry(entry.organization_id.as_str())
            .or_default()
            .push(entry);
    }
    let empty = Grouped::default();
    for (id, organization) in organizations {
        let rows = grouped.get(id).unwrap_or(&empty);
        let Some(holdings) = inputs.holdings.get(id) else {
            // Not listed: nothing is decided blind. Its rows wait.
            for (row, _) in &rows.valid {
                items.push(Item::Waiting {
                    organization: id.to_owned(),
                    email: row.email.clone(),
                    wait: Wait::Unavailable {
                        error: "its memberships and invitations were not listed".to_owned(),
                    },
                });
            }
            continue;
        };
        let view = View::new(
            organization,
            holdings,
            ledger.get(id).map(Vec::as_slice).unwrap_or_default(),
            inputs,
            policy,
        );
        view.decide(rows, &mut items);
    }
    items.sort_by(order);
    Plan { items }
}

/// The rows that resolved to one organization.
#[derive(Default)]
struct Grouped<'a> {
    /// Each with the reference it named the organization by, first row per address only.
    valid: Vec<(&'a DesiredMembership, &'a str)>,
    /// Addresses of rows that could not be read: what Clerk holds for them is left alone.
    unreadable: HashSet<Email>,
}

/// Sorts the roster's rows to their organizations. Rows naming an unknown organization,
/// rows that could not be read and second rows for one (address, organization) become
/// invalid items; rows of an organization Clerk could not be asked about wait.
fn group_rows<'a>(inputs: Inputs<'a>, items: &mut Vec<Item>) -> HashMap<&'a str, Grouped<'a>> {
    let mut grouped: HashMap<&str, Grouped<'_>> = HashMap::new();
    let mut rows: Vec<&MembershipRosterRow> = inputs.rows.iter().collect();
    // Of several rows for one address and organization the oldest counts.
    rows.sort_by_cached_key(|row| match row {
        Ok(row) => (
            row.email.as_str().to_owned(),
            row.created_at,
            row.organization.clone(),
        ),
        Err(unreadable) => (
            unreadable.email.clone(),
            None,
            unreadable.organization.clone(),
        ),
    });
    let mut seen: HashMap<(&str, Email), &str> = HashMap::new();
    for row in rows {
        let reference = match row {
            Ok(row) => row.organization.as_str(),
            Err(unreadable) => unreadable.organization.as_str(),
        };
        let organization = match inputs.resolved.get(reference) {
            Some(Resolution::Found(organization)) => organization,
            Some(Resolution::Unavailable(error)) => {
                if let Ok(row) = row {
                    items.push(Item::Waiting {
                        organization: reference.to_owned(),
                        email: row.email.clone(),
                        wait: Wait::Unavailable {
                            error: error.clone(),
                        },
                    });
                }
                continue;
            }
            Some(Resolution::Unknown) | None => {
                items.push(Item::Invalid {
                    organization: reference.to_owned(),
                    email: match row {
                        Ok(row) => row.email.to_string(),
                        Err(unreadable) => unreadable.email.clone(),
                    },
                    reason: format!("Clerk has no organization {reference:?} (id or slug)"),
                });
                continue;
            }
        };
        let id = organization.id.as_str();
        let group = grouped.entry(id).or_default();
        let row = match row {
            Ok(row) => row,
            Err(unreadable) => {
                group.unreadable.extend(unreadable.parsed.clone());
                items.push(Item::Invalid {
                    organization: reference.to_owned(),
                    email: unreadable.email.clone(),
                    reason: unreadable.reason.clone(),
                });
                continue;
            }
        };
        if let Some(first) = seen.get(&(id, row.email.clone())) {
            items.push(Item::Invalid {
                organization: reference.to_owned(),
                email: row.email.to_string(),
                reason: format!(
                    "another roster row names this organization for the address (as {first:?})"
                ),
            });
            continue;
        }
        seen.insert((id, row.email.clone()), reference);
        group.valid.push((row, reference));
    }
    grouped
}

/// One organization as the plan sees it.
struct View<'a> {
    organization: &'a Organization,
    holdings: &'a Holdings,
    ledger: &'a [&'a MembershipLedgerEntry],
    inputs: Inputs<'a>,
    policy: &'a Policy,
    /// Each member by each address it is known by: the one Clerk shows, and those the
    /// known users give its user id.
    members: HashMap<Email, &'a Member>,
    /// The newest pending invitation per address.
    pending: HashMap<&'a Email, &'a Invitation>,
    owned_invitations: HashSet<&'a str>,
}

impl<'a> View<'a> {
    fn new(
        organization: &'a Organization,
        holdings: &'a Holdings,
        ledger: &'a [&'a MembershipLedgerEntry],
        inputs: Inputs<'a>,
        policy: &'a Policy,
    ) -> View<'a> {
        let mut by_user: HashMap<&str, Vec<&Email>> = HashMap::new();
        for (email, user_id) in inputs.users {
            by_user.entry(user_id.as_str()).or_default().push(email);
        }
        // The addresses the ledger recorded memberships it made under.
        for entry in ledger
            .iter()
            .filter(|e| e.kind == MembershipKind::Membership)
        {
            if let Some(user_id) = entry.clerk_id.as_deref() {
                by_user.entry(user_id).or_default().push(&entry.email);
            }
        }
        let mut members = HashMap::new();
        for member in &holdings.members {
            let known = by_user.get(member.user_id.as_str()).into_iter().flatten();
            for email in member.email.iter().chain(known.copied()) {
                members.entry(email.clone()).or_insert(member);
            }
        }
        let mut pending: HashMap<&Email, &Invitation> = HashMap::new();
        for invitation in &holdings.invitations {
            if invitation.status != InvitationStatus::Pending {
                continue;
            }
            let newest = pending.entry(&invitation.email).or_insert(invitation);
            if (invitation.created_at, &invitation.id) > (newest.created_at, &newest.id) {
                *newest = invitation;
            }
        }
        let owned_invitations = ledger
            .iter()
            .filter(|e| e.owned && e.kind == MembershipKind::Invitation)
            .filter_map(|e| e.clerk_id.as_deref())
            .collect();
        View {
            organization,
            holdings,
            ledger,
            inputs,
            policy,
            members,
            pending,
            owned_invitations,
        }
    }

    fn id(&self) -> String {
        self.organization.id.clone()
    }

    /// Whether invite-sync made the membership: it created it, or a person accepted an
    /// invitation it sent.
    fn owns_member(&self, member: &Member) -> bool {
        self.ledger.iter().any(|e| {
            e.owned
                && match (e.kind, e.state) {
                    (MembershipKind::Membership, MembershipState::Member) => {
                        e.clerk_id.as_deref() == Some(member.user_id.as_str())
                    }
                    (MembershipKind::Invitation, MembershipState::Accepted) => {
                        e.user_id.as_deref() == Some(member.user_id.as_str())
                            || self.members.get(&e.email).map(|m| &m.user_id)
                                == Some(&member.user_id)
                    }
                    _ => false,
                }
        })
    }

    fn entries_for<'e>(
        &'e self,
        email: &'e Email,
    ) -> impl Iterator<Item = &'a MembershipLedgerEntry> + 'e {
        self.ledger
            .iter()
            .copied()
            .filter(move |e| &e.email == email)
    }

    /// Every row of the organization, then what Clerk holds that no row asks for; the
    /// creates beyond the organization's room wait.
    fn decide(&self, rows: &Grouped<'_>, items: &mut Vec<Item>) {
        let mut creates = Vec::new();
        for (row, reference) in &rows.valid {
            let item = self.decide_row(row, reference);
            if item.takes_room() {
                creates.push((&row.email, item));
            } else {
                items.push(item);
            }
        }
        creates.sort_by(|(_, a), (_, b)| queue_key(a).cmp(&queue_key(b)));
        let room = match self.organization.room {
            Room::Unlimited => usize::MAX,
            Room::Left(n) => n,
        };
        for (n, (email, item)) in creates.into_iter().enumerate() {
            if n < room {
                items.push(item);
            } else {
                items.push(Item::Waiting {
                    organization: self.id(),
                    email: email.clone(),
                    wait: Wait::Full,
                });
            }
        }
        let asked: HashSet<&Email> = rows
            .valid
            .iter()
            .map(|(row, _)| &row.email)
            .chain(rows.unreadable.iter())
            .collect();
        self.unasked(&asked, items);
    }

    fn decide_row(&self, row: &DesiredMembership, reference: &str) -> Item {
        let role = row
            .role
            .clone()
            .unwrap_or_else(|| self.policy.default_role.clone());
        if let Some(roles) = self.inputs.roles {
            if !roles.contains(&role) {
                return Item::Invalid {
                    organization: reference.to_owned(),
                    email: row.email.to_string(),
                    reason: format!("Clerk has no organization role {role:?}"),
                };
            }
        }
        let email = row.email.clone();
        let organization_id = self.id();
        if self
            .entries_for(&email)
            .any(|e| e.state == MembershipState::Sending)
        {
            return Item::Waiting {
                organization: organization_id,
                email,
                wait: Wait::Unsettled,
            };
        }
        if let Some(member) = self.members.get(&email) {
            return self.member_outcome(row, member, role);
        }
        if let Some(pending) = self.pending.get(&email) {
            return self.pending_outcome(row, pending, role);
        }
        if let Some(at) = row.not_before.filter(|t| *t > self.inputs.now) {
            return Item::Waiting {
                organization: organization_id,
                email,
                wait: Wait::NotBefore { at },
            };
        }
        if let Some(item) = self.refused_before(row) {
            return item;
        }
        let user = self.inputs.users.get(&email);
        if user.is_none() && self.inputs.instance_first.contains(&email) {
            // One email: the instance invitation. The membership follows its acceptance.
            return Item::Waiting {
                organization: organization_id,
                email,
                wait: Wait::InstanceFirst,
            };
        }
        match (user, self.policy.existing_users) {
            (Some(user_id), ExistingUsers::Membership) => Item::AddMember {
                organization_id,
                row: row.clone(),
                user_id: user_id.clone(),
                role,
            },
            _ => Item::Invite {
                organization_id,
                reinvite: self.expired_before(&email),
                row: row.clone(),
                role,
            },
        }
    }

    fn member_outcome(&self, row: &DesiredMembership, member: &Member, role: String) -> Item {
        let owned = self.owns_member(member);
        if member.role == role {
            return Item::InSync {
                organization_id: self.id(),
                email: row.email.clone(),
                owned,
            };
        }
        if owned {
            Item::ChangeRole {
                organization_id: self.id(),
                email: row.email.clone(),
                user_id: member.user_id.clone(),
                from: member.role.clone(),
                to: role,
            }
        } else {
            Item::Reported {
                organization_id: self.id(),
                email: row.email.clone(),
                note: Note::ForeignRole {
                    have: member.role.clone(),
                    want: role,
                },
            }
        }
    }

    fn pending_outcome(&self, row: &DesiredMembership, pending: &Invitation, role: String) -> Item {
        let owned = self.owned_invitations.contains(pending.id.as_str());
        if pending.role == role {
            return Item::InSync {
                organization_id: self.id(),
                email: row.email.clone(),
                owned,
            };
        }
        if owned {
            Item::Replace {
                organization_id: self.id(),
                row: row.clone(),
                role,
                invitation_id: pending.id.clone(),
                from: pending.role.clone(),
            }
        } else {
            Item::Reported {
                organization_id: self.id(),
                email: row.email.clone(),
                note: Note::ForeignRole {
                    have: pending.role.clone(),
                    want: role,
                },
            }
        }
    }

    /// Clerk refused a create for the row: for good while the row is unchanged, or until
    /// its backoff passes.
    fn refused_before(&self, row: &DesiredMembership) -> Option<Item> {
        let failed: Vec<&MembershipLedgerEntry> = self
            .entries_for(&row.email)
            .filter(|e| e.state == MembershipState::Failed)
            .collect();
        if let Some(entry) = failed
            .iter()
            .find(|e| e.terminal && e.row_digest.as_deref() == Some(row.digest.as_str()))
        {
            return Some(Item::Reported {
                organization_id: self.id(),
                email: row.email.clone(),
                note: Note::Refused {
                    code: entry.last_error_code.clone(),
                },
            });
        }
        let (entry, retry_at) = failed
            .iter()
            .filter(|e| !e.terminal)
            .filter_map(|e| e.next_attempt_at.map(|at| (e, at)))
            .filter(|(_, at)| *at > self.inputs.now)
            .max_by_key(|(_, at)| *at)?;
        Some(Item::Waiting {
            organization: self.id(),
            email: row.email.clone(),
            wait: Wait::Refused {
                code: entry.last_error_code.clone(),
                retry_at,
            },
        })
    }

    /// Whether the address's last invitation to the organization expired.
    fn expired_before(&self, email: &Email) -> bool {
        self.holdings
            .invitations
            .iter()
            .any(|i| &i.email == email && i.status == InvitationStatus::Expired)
            || self
                .entries_for(email)
                .any(|e| e.state == MembershipState::Expired)
    }

    /// The pending invitations and memberships no row asks for: invite-sync's are revoked
    /// (removed, when `remove_members` is on), everyone else's reported.
    fn unasked(&self, asked: &HashSet<&Email>, items: &mut Vec<Item>) {
        let mut pending: Vec<&Invitation> = self
            .pending
            .iter()
            .filter(|(email, _)| !asked.contains(*email))
            .map(|(_, invitation)| *invitation)
            .collect();
        pending.sort_by(|a, b| (&a.email, &a.id).cmp(&(&b.email, &b.id)));
        for invitation in pending {
            // Older pending ones for the same address are left to Clerk: only the newest
            // is looked at.
            let email = invitation.email.clone();
            items.push(if self.owned_invitations.contains(invitation.id.as_str()) {
                Item::Revoke {
                    organization_id: self.id(),
                    email,
                    invitation_id: invitation.id.clone(),
                }
            } else {
                Item::Reported {
                    organization_id: self.id(),
                    email,
                    note: Note::ForeignInvitation,
                }
            });
        }
        for member in &self.holdings.members {
            let emails: BTreeSet<&Email> = self
                .members
                .iter()
                .filter(|(_, m)| m.user_id == member.user_id)
                .map(|(email, _)| email)
                .collect();
            if emails.iter().any(|email| asked.contains(*email)) {
                continue;
            }
            // A member known by no address is no roster row's and not invite-sync's: it
            // is left out of the plan.
            let Some(email) = emails.first().map(|email| (*email).clone()) else {
                continue;
            };
            let owned = self.owns_member(member);
            items.push(match (owned, self.policy.remove_members) {
                (true, true) => Item::RemoveMember {
                    organization_id: self.id(),
                    email,
                    user_id: member.user_id.clone(),
                },
                (true, false) => Item::Reported {
                    organization_id: self.id(),
                    email,
                    note: Note::KeptMember,
                },
                (false, _) => Item::Reported {
                    organization_id: self.id(),
                    email,
                    note: Note::ForeignMember,
                },
            });
        }
    }
}

type QueueKey<'a> = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
    &'a str,
    &'a str,
);

/// Queue order: oldest `not_before` (a row without one has waited since it was written),
/// then oldest row, then address and organization.
fn queue_key(item: &Item) -> QueueKey<'_> {
    match item {
        Item::Invite { row, .. } | Item::AddMember { row, .. } | Item::Replace { row, .. } => (
            row.not_before.or(row.created_at),
            row.created_at,
            row.email.as_str(),
            item.organization(),
        ),
        _ => (None, None, item.email(), item.organization()),
    }
}

/// Where an item stands in a plan: removals, replacements, creates (in queue order), role
/// changes, then the rest.
fn order(a: &Item, b: &Item) -> std::cmp::Ordering {
    fn group(item: &Item) -> u8 {
        match item {
            Item::Revoke { .. } | Item::RemoveMember { .. } => 0,
            Item::Replace { .. } => 1,
            Item::Invite { .. } | Item::AddMember { .. } => 2,
            Item::ChangeRole { .. } => 3,
            _ => 4,
        }
    }
    let (ga, gb) = (group(a), group(b));
    if ga != gb {
        return ga.cmp(&gb);
    }
    match ga {
        1 | 2 => queue_key(a).cmp(&queue_key(b)),
        _ => (a.category(), a.organization(), a.email(), detail(a)).cmp(&(
            b.category(),
            b.organization(),
            b.email(),
            detail(b),
        )),
    }
}

/// What tells apart two items of one category, organization and address.
fn detail(item: &Item) -> String {
    match item {
        Item::Invalid { reason, .. } => reason.clone(),
        Item::Reported { note, .. } => format!("{note:?}"),
        Item::Waiting { wait, .. } => format!("{wait:?}"),
        Item::Revoke { invitation_id, .. } => invitation_id.clone(),
        Item::RemoveMember { user_id, .. } => user_id.clone(),
        _ => String::new(),
    }
}
