//! The membership plan: from the membership roster, each organization's memberships and
//! invitations in Clerk, the membership ledger and the users known with their ids, what to
//! do about each (address, organization). Pure: no I/O, no clock (the caller passes `now`).
//!
//! Invariants (held by property tests): no (address, organization) is both created and
//! removed; nothing foreign is touched (revoked, removed, changed or replaced); every create
//! is desired; no create where a pending invitation or a membership exists; a full
//! organization never gets more creates than its room.

mod decide;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::Email;

/// What the plan obeys, from `[organizations]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The role of a row without one.
    pub default_role: String,
    pub existing_users: ExistingUsers,
    /// Whether a membership invite-sync made is removed when its row goes.
    pub remove_members: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_role: "org:member".to_owned(),
            existing_users: ExistingUsers::Membership,
            remove_members: false,
        }
    }
}

pub use crate::config::ExistingUsers;
pub use crate::domain::{
    DesiredMembership, InvalidMembership, MembershipKind, MembershipLedgerEntry,
    MembershipRosterRow, MembershipState,
};

/// What Clerk said of an organization a row or the ledger names.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Found(Organization),
    /// 404: its rows are invalid.
    Unknown,
    /// Clerk could not be asked (an error other than 404): the organization is left alone
    /// this cycle, its rows wait.
    Unavailable(String),
}

/// An organization as the cycle read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Organization {
    pub id: String,
    pub slug: String,
    pub room: Room,
}

/// How many more members and pending invitations an organization takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Unlimited,
    Left(usize),
}

impl Room {
    /// From Clerk's figures: `max_allowed_memberships` counts members and pending
    /// invitations; 0 means unlimited.
    pub fn of(max_allowed: i64, members: i64, pending: i64) -> Room {
        if max_allowed <= 0 {
            return Room::Unlimited;
        }
        let used = members.max(0).saturating_add(pending.max(0));
        Room::Left(usize::try_from(max_allowed.saturating_sub(used)).unwrap_or(0))
    }
}

/// A membership in Clerk.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: String,
    /// The address Clerk shows (`public_user_data.identifier`), when it is one.
    pub email: Option<Email>,
    pub role: String,
}

/// An organization invitation's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

/// An organization invitation in Clerk.
#[derive(Debug, Clone, PartialEq)]
pub struct Invitation {
    pub id: String,
    pub email: Email,
    pub role: String,
    pub status: InvitationStatus,
    /// Unix milliseconds: of several for one address, the newest counts.
    pub created_at: i64,
}

/// What Clerk holds for one organization: its memberships, its pending invitations, and
/// those of other states the cycle found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holdings {
    pub members: Vec<Member>,
    pub invitations: Vec<Invitation>,
}

/// Everything the plan looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub rows: &'a [MembershipRosterRow],
    /// Each organization reference of the roster and each organization id of the ledger,
    /// resolved once.
    pub resolved: &'a HashMap<String, Resolution>,
    /// By organization id.
    pub holdings: &'a HashMap<String, Holdings>,
    pub ledger: &'a [MembershipLedgerEntry],
    /// Addresses known to belong to users, with their user ids.
    pub users: &'a HashMap<Email, String>,
    /// Addresses the instance roster (`source.relation`) also names: one that is not a
    /// known user waits for its instance invitation to be accepted rather than getting an
    /// organization invitation too (one email per person), then becomes a member as any
    /// known user does.
    pub instance_first: &'a HashSet<Email>,
    /// The instance's roles; `None` when they could not be read (then no row is refused
    /// for its role).
    pub roles: Option<&'a HashSet<String>>,
    pub now: DateTime<Utc>,
}

/// Why a person waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Wait {
    /// The organization has no room: `max_allowed_memberships` is reached.
    Full,
    /// `not_before` is in the future.
    NotBefore { at: DateTime<Utc> },
    /// A create whose outcome is unknown: settled by a lookup before anything is sent.
    Unsettled,
    /// Clerk refused the last create; it is tried again then.
    Refused {
        code: Option<String>,
        retry_at: DateTime<Utc>,
    },
    /// Clerk could not be asked about the organization this cycle.
    Unavailable { error: String },
    /// The address is on the instance roster too and has no account yet: its instance
    /// invitation is the one email it gets; the membership follows once it is accepted.
    InstanceFirst,
}

impl Wait {
    pub fn describe(&self) -> String {
        match self {
            Wait::Full => "the organization is full (max_allowed_memberships)".to_owned(),
            Wait::NotBefore { at } => format!("not before {}", at.to_rfc3339()),
            Wait::Unsettled => "a create's outcome is not known yet".to_owned(),
            Wait::Refused { code, retry_at } => format!(
                "Clerk refused the last create ({}); tried again at {}",
                code.as_deref().unwrap_or("error"),
                retry_at.to_rfc3339()
            ),
            Wait::Unavailable { error } => format!("the organization could not be read: {error}"),
            Wait::InstanceFirst => "instance invitation first: on the instance roster too, \
                                    a member once that invitation is accepted"
                .to_owned(),
        }
    }

    /// The reason's name, as the report, the metrics and `plan` count it.
    pub fn reason(&self) -> &'static str {
        match self {
            Wait::Full => "full",
            Wait::NotBefore { .. } => "not_before",
            Wait::Unsettled => "unsettled",
            Wait::Refused { .. } => "refused",
            Wait::Unavailable { .. } => "unavailable",
            Wait::InstanceFirst => "instance_first",
        }
    }
}

/// Why something is reported and left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Note {
    /// A membership invite-sync did not make, for an address no row names.
    ForeignMember,
    /// A pending invitation invite-sync did not send, for an address no row names.
    ForeignInvitation,
    /// A membership invite-sync made, whose row went; `organizations.remove_members` is off.
    KeptMember,
    /// A membership or pending invitation invite-sync did not make has another role than
    /// the row.
    ForeignRole { have: String, want: String },
    /// Clerk refused the last create for good; tried again when the row changes.
    Refused { code: Option<String> },
}

/// One decision about an (address, organization).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An organization invitation; `reinvite` when the last one expired.
    Invite {
        organization_id: String,
        row: DesiredMembership,
        role: String,
        reinvite: bool,
    },
    /// A membership made at once for a known user.
    AddMember {
        organization_id: String,
        row: DesiredMembership,
        user_id: String,
        role: String,
    },
    /// A member invite-sync made has another role than the row: set back.
    ChangeRole {
        organization_id: String,
        email: Email,
        user_id: String,
        from: String,
        to: String,
    },
    /// A pending invitation invite-sync sent has another role: revoked, then sent again.
    Replace {
        organization_id: String,
        row: DesiredMembership,
        role: String,
        invitation_id: String,
        from: String,
    },
    /// A pending invitation invite-sync sent, whose row went.
    Revoke {
        organization_id: String,
        email: Email,
        invitation_id: String,
    },
    /// A membership invite-sync made, whose row went (`remove_members` is on).
    RemoveMember {
        organization_id: String,
        email: Email,
        user_id: String,
    },
    Reported {
        organization_id: String,
        email: Email,
        note: Note,
    },
    Waiting {
        organization: String,
        email: Email,
        wait: Wait,
    },
    Invalid {
        organization: String,
        email: String,
        reason: String,
    },
    InSync {
        organization_id: String,
        email: Email,
        owned: bool,
    },
}

/// The categories a run counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Revoke,
    RemoveMember,
    Replace,
    Invite,
    Reinvite,
    AddMember,
    ChangeRole,
    Reported,
    Waiting,
    Invalid,
    InSync,
}

impl Category {
    pub const ALL: [Category; 11] = [
        Category::Revoke,
        Category::RemoveMember,
        Category::Replace,
        Category::Invite,
        Category::Reinvite,
        Category::AddMember,
        Category::ChangeRole,
        Category::Reported,
        Category::Waiting,
        Category::Invalid,
        Category::InSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Revoke => "revoke",
            Category::RemoveMember => "remove_member",
            Category::Replace => "replace",
            Category::Invite => "invite",
            Category::Reinvite => "reinvite",
            Category::AddMember => "add_member",
            Category::ChangeRole => "change_role",
            Category::Reported => "reported",
            Category::Waiting => "waiting",
            Category::Invalid => "invalid",
            Category::InSync => "in_sync",
        }
    }
}

impl Item {
    pub fn category(&self) -> Category {
        match self {
            Item::Invite {
                reinvite: false, ..
            } => Category::Invite,
            Item::Invite { reinvite: true, .. } => Category::Reinvite,
            Item::AddMember { .. } => Category::AddMember,
            Item::ChangeRole { .. } => Category::ChangeRole,
            Item::Replace { .. } => Category::Replace,
            Item::Revoke { .. } => Category::Revoke,
            Item::RemoveMember { .. } => Category::RemoveMember,
            Item::Reported { .. } => Category::Reported,
            Item::Waiting { .. } => Category::Waiting,
            Item::Invalid { .. } => Category::Invalid,
            Item::InSync { .. } => Category::InSync,
        }
    }

    /// The address, as normalised (or as written, for a row that could not be read).
    pub fn email(&self) -> &str {
        match self {
            Item::Invite { row, .. } | Item::AddMember { row, .. } | Item::Replace { row, .. } => {
                row.email.as_str()
            }
            Item::Invalid { email, .. } => email,
            Item::ChangeRole { email, .. }
            | Item::Revoke { email, .. }
            | Item::RemoveMember { email, .. }
            | Item::Reported { email, .. }
            | Item::Waiting { email, .. }
            | Item::InSync { email, .. } => email.as_str(),
        }
    }

    /// The organization: its id, or the reference a row gave when it did not resolve.
    pub fn organization(&self) -> &str {
        match self {
            Item::Invite {
                organization_id, ..
            }
            | Item::AddMember {
                organization_id, ..
            }
            | Item::ChangeRole {
                organization_id, ..
            }
            | Item::Replace {
                organization_id, ..
            }
            | Item::Revoke {
                organization_id, ..
            }
            | Item::RemoveMember {
                organization_id, ..
            }
            | Item::Reported {
                organization_id, ..
            }
            | Item::InSync {
                organization_id, ..
            } => organization_id,
            Item::Waiting { organization, .. } | Item::Invalid { organization, .. } => organization,
        }
    }

    /// Whether the item takes room in its organization (a new member or pending invitation).
    pub fn takes_room(&self) -> bool {
        matches!(self, Item::Invite { .. } | Item::AddMember { .. })
    }

    /// Whether the item sends an organization invitation (what the hourly budget counts).
    pub fn sends_invitation(&self) -> bool {
        matches!(self, Item::Invite { .. } | Item::Replace { .. })
    }
}

/// What the membership pass would do, item by item: removals first (by organization and
/// address), then the creates in queue order, then the rest by category, organization and
/// address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub items: Vec<Item>,
}

impl Plan {
    pub fn counts(&self) -> BTreeMap<Category, usize> {
        let mut counts = BTreeMap::new();
        for item in &self.items {
            *counts.entry(item.category()).or_insert(0) += 1;
        }
        counts
    }

    /// The waiting items by reason (`full`, `not_before`, …).
    pub fn waiting(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for item in &self.items {
            if let Item::Waiting { wait, .. } = item {
                *counts.entry(wait.reason()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// Decides every (address, organization) of the roster, and every membership and pending
/// invitation of the organizations the roster or the ledger names.
pub fn plan(inputs: Inputs<'_>, policy: &Policy) -> Plan {
    decide::plan(inputs, policy)
}
