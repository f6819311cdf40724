//! The plan: from the roster, Clerk's invitations and the ledger, what to do about each
//! email and each invitation. Pure: no I/O, no clock (the caller passes `now`).
//!
//! This module holds what a plan is made of; the [`planner`] builds one from the roster a
//! row at a time, and the [`ladder`] decides each desired person's outcome.
//!
//! Invariants (held by property tests): no email is both created and revoked; nothing
//! foreign is revoked; every create is desired; no create for an email with a pending
//! invitation.

mod ladder;
pub mod planner;
#[cfg(test)]
pub(super) mod tests;
pub mod written;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clerk::Invitation;
pub use crate::domain::Person;
use crate::domain::{DesiredInvitee, DesiredRow, Email, InvalidRow, LedgerEntry, RowDefaults};

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

/// Whether a plan keeps an item for each person who needs nothing (accepted, already a user,
/// in sync), or only counts them: a cycle counts them, so its memory follows the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    Keep,
    Count,
}
