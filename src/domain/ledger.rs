use chrono::{DateTime, Utc};

use super::Email;

/// What invite-sync knows of one invitation it created, is creating, or has seen.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub id: i64,
    pub email: Email,
    pub clerk_invitation_id: Option<String>,
    pub state: LedgerState,
    pub owned: bool,
    pub row_digest: Option<String>,
    pub redirect_url: Option<String>,
    pub attempts: i32,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub terminal: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub revoked_by_us: bool,
    pub created_at: DateTime<Utc>,
    /// When its create was sent (the database's clock).
    pub sent_at: Option<DateTime<Utc>>,
}

/// The states of `invite_sync_ledger.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerState {
    /// A create carrying it is in flight, or its outcome is unknown.
    Sending,
    Pending,
    Accepted,
    Revoked,
    Expired,
    /// Clerk refused the create.
    Failed,
}

impl LedgerState {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerState::Sending => "sending",
            LedgerState::Pending => "pending",
            LedgerState::Accepted => "accepted",
            LedgerState::Revoked => "revoked",
            LedgerState::Expired => "expired",
            LedgerState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            LedgerState::Sending,
            LedgerState::Pending,
            LedgerState::Accepted,
            LedgerState::Revoked,
            LedgerState::Expired,
            LedgerState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// What the plan knows of one person besides their roster row: their ledger entries, oldest
/// first (as the ledger holds them; the planner applies what Clerk's listing shows), and what
/// Clerk said of them as a user. Unless Clerk deleted the user, of an accepted entry only that
/// it exists, how old it is (its id) and whether invite-sync sent it decide anything, so a
/// read of the whole ledger takes no more of it ([`AcceptedEntry`]); a deleted user's accepted
/// entries are history, weighed like the others (a pending invitation's recorded redirect, the
/// last create), and are read in full. Build one with [`Person::of`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Person {
    /// The entries read in full: every entry of a deleted user, else those in every state
    /// but `accepted`.
    pub entries: Vec<LedgerEntry>,
    /// The entries the ledger holds as accepted, unless they are in `entries`.
    pub accepted: Vec<AcceptedEntry>,
    /// Clerk says the address is a user's.
    pub user: bool,
    /// Clerk deleted the user: what they accepted before does not count.
    pub deleted: bool,
}

impl Person {
    /// The person of these entries (oldest first), the accepted ones as [`AcceptedEntry`]s
    /// unless Clerk deleted the user, as a cycle reads them.
    pub fn of(entries: Vec<LedgerEntry>, user: bool, deleted: bool) -> Person {
        if deleted {
            return Person {
                entries,
                accepted: Vec::new(),
                user,
                deleted,
            };
        }
        let (accepted, entries): (Vec<LedgerEntry>, Vec<LedgerEntry>) = entries
            .into_iter()
            .partition(|entry| entry.state == LedgerState::Accepted);
        Person {
            entries,
            accepted: accepted.iter().map(AcceptedEntry::of).collect(),
            user,
            deleted,
        }
    }
}

/// A ledger entry in the `accepted` state, as the plan reads it: which it is (ids grow with
/// age) and whether invite-sync sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedEntry {
    pub id: i64,
    pub owned: bool,
}

impl AcceptedEntry {
    pub fn of(entry: &LedgerEntry) -> AcceptedEntry {
        AcceptedEntry {
            id: entry.id,
            owned: entry.owned,
        }
    }
}
