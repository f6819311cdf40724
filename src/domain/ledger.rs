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
/// Clerk said of them as a user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Person {
    pub entries: Vec<LedgerEntry>,
    /// Clerk says the address is a user's.
    pub user: bool,
    /// Clerk deleted the user: what they accepted before does not count.
    pub deleted: bool,
}
