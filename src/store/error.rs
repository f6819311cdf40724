//! The store's failures: the database's, and the conditions the store finds itself.

/// Why a store function failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The session no longer holds the target's advisory lock (its connection was lost).
    #[error("the leader lock is no longer held")]
    LockLost,
    /// An invitation's address is not one the ledger can hold.
    #[error("invitation {invitation_id}: {reason}")]
    InvalidAddress {
        invitation_id: String,
        reason: String,
    },
}

/// A ledger row holding what invite-sync never writes. Rows are read through sqlx, so it
/// reaches callers as the source of a `sqlx::Error::Decode`, like any value that does not
/// decode.
#[derive(Debug, thiserror::Error)]
#[error("ledger row {id} is corrupt: {reason}")]
pub struct CorruptLedgerRow {
    pub id: i64,
    pub reason: String,
}
