//! The membership ledger: every organization invitation and membership invite-sync created,
//! is creating, or has seen, per organization. A create is written `sending` before it goes
//! out (never a transaction held across the call), so a crash at any moment leaves a row that
//! the next cycle settles by listing the organization's invitations for the address, and
//! never a second create.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::CorruptLedgerRow;
use crate::domain::{Email, MembershipKind, MembershipLedgerEntry, MembershipState};

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    email: String,
    organization_id: String,
    kind: String,
    clerk_id: Option<String>,
    user_id: Option<String>,
    role: String,
    state: String,
    owned: bool,
    row_digest: Option<String>,
    attempts: i32,
    last_error_code: Option<String>,
    last_error: Option<String>,
    terminal: bool,
    next_attempt_at: Option<DateTime<Utc>>,
    call_id: Option<i64>,
    run_id: Option<Uuid>,
    sent_at: Option<DateTime<Utc>>,
    settled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_entry(self) -> Result<MembershipLedgerEntry, sqlx::Error> {
        let id = self.id;
        let corrupt = |reason: String| {
            sqlx::Error::Decode(Box::new(CorruptLedgerRow {
                id,
                reason: format!("(membership ledger) {reason}"),
            }))
        };
        Ok(MembershipLedgerEntry {
            id,
            email: Email::parse(&self.email).map_err(|e| corrupt(e.to_string()))?,
            organization_id: self.organization_id,
            kind: MembershipKind::parse(&self.kind)
                .ok_or_else(|| corrupt(format!("kind {:?}", self.kind)))?,
            clerk_id: self.clerk_id,
            user_id: self.user_id,
            role: self.role,
            state: MembershipState::parse(&self.state)
                .ok_or_else(|| corrupt(format!("state {:?}", self.state)))?,
            owned: self.owned,
            row_digest: self.row_digest,
            attempts: self.attempts,
            last_error_code: self.last_error_code,
            last_error: self.last_error,
            terminal: self.terminal,
            next_attempt_at: self.next_attempt_at,
            call_id: self.call_id,
            run_id: self.run_id,
            sent_at: self.sent_at,
            settled_at: self.settled_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn entries(rows: Vec<Row>) -> Result<Vec<MembershipLedgerEntry>, sqlx::Error> {
    rows.into_iter().map(Row::into_entry).collect()
}

/// A create about to go out: what its `sending` row records.
#[derive(Debug, Clone)]
pub struct Sending<'a> {
    pub target: &'a str,
    pub email: &'a Email,
    pub organization_id: &'a str,
    pub kind: MembershipKind,
    pub role: &'a str,
    /// The digest of the roster row it is made from.
    pub row_digest: Option<&'a str>,
    /// For a membership: the user it adds.
    pub user_id: Option<&'a str>,
    /// For an invitation: the recorded call to the hourly-limited endpoint that carries it.
    pub call_id: Option<i64>,
    pub run_id: Option<Uuid>,
}

/// Writes `sending` for a create before it goes out, carrying over the attempts of an earlier
/// refusal (whose row it replaces). `None` when a create for the same person and
/// organization is already in flight: nothing is written, and nothing may be sent.
pub async fn start_sending(
    conn: &mut PgConnection,
    sending: &Sending<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH in_flight AS (
               SELECT 1 FROM invite_sync_membership_ledger
               WHERE target = $1 AND organization_id = $2 AND email = $3 AND state = 'sending'
           ), earlier AS (
               DELETE FROM invite_sync_membership_ledger
               WHERE target = $1 AND organization_id = $2 AND email = $3 AND state = 'failed'
                 AND NOT EXISTS (SELECT 1 FROM in_flight)
               RETURNING attempts
           )
           INSERT INTO invite_sync_membership_ledger
             (target, email, organization_id, kind, user_id, role, state, owned, row_digest,
              attempts, call_id, run_id, sent_at)
           SELECT $1, $3, $2, $4, $5, $6, 'sending', true, $7,
                  COALESCE((SELECT max(attempts) FROM earlier), 0) + 1, $8, $9, now()
           WHERE NOT EXISTS (SELECT 1 FROM in_flight)
           ON CONFLICT (target, organization_id, email) WHERE state = 'sending' DO NOTHING
           RETURNING id"#,
        sending.target,
        sending.organization_id,
        sending.email.as_str(),
        sending.kind.as_str(),
        sending.user_id,
        sending.role,
        sending.row_digest,
        sending.call_id,
        sending.run_id,
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Records the invitation a create produced (or that a listing found for an unsettled
/// create): `pending`, with its `orginv_...` id. `false` when the entry is no longer
/// `sending`: another process settled it meanwhile.
pub async fn mark_invited(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    invitation_id: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger
           SET state = 'pending', clerk_id = $2, settled_at = now(), last_error_code = NULL,
               last_error = NULL, terminal = false, next_attempt_at = NULL
           WHERE id = $1 AND state = 'sending'"#,
        ledger_id,
        invitation_id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records the membership a create produced (or that a listing found): `member`, its
/// `clerk_id` and `user_id` the member's user id. `false` when the entry is no longer
/// `sending`.
pub async fn mark_member(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger
           SET state = 'member', clerk_id = $2, user_id = $2, settled_at = now(),
               last_error_code = NULL, last_error = NULL, terminal = false, next_attempt_at = NULL
           WHERE id = $1 AND state = 'sending'"#,
        ledger_id,
        user_id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records that Clerk refused a create. `terminal` refusals wait for the roster row to
/// change; the others are tried again at `next_attempt_at`.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    code: &str,
    message: &str,
    terminal: bool,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger
           SET state = 'failed', last_error_code = $2, last_error = $3, terminal = $4,
               next_attempt_at = $5, settled_at = now()
           WHERE id = $1"#,
        ledger_id,
        code,
        message,
        terminal,
        next_attempt_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets `sending` entries whose create certainly did not reach Clerk.
pub async fn forget(db: impl PgExecutor<'_>, ledger_ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM invite_sync_membership_ledger WHERE id = ANY($1) AND state = 'sending'",
        ledger_ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An organization invitation invite-sync did not create but now knows of (a duplicate it
/// stumbled on, one a listing showed for an address it had asked for).
#[derive(Debug, Clone)]
pub struct SeenInvitation<'a> {
    pub target: &'a str,
    pub email: &'a Email,
    pub organization_id: &'a str,
    pub invitation_id: &'a str,
    pub role: &'a str,
    /// Pending, accepted, revoked or expired.
    pub state: MembershipState,
    /// Only when invite-sync had asked for it.
    pub owned: bool,
    pub user_id: Option<&'a str>,
}

/// Records an invitation seen in Clerk: a new row, or the state of the one the ledger holds
/// (ownership is never taken away, and a known user id is kept).
pub async fn record_seen_invitation(
    db: impl PgExecutor<'_>,
    seen: &SeenInvitation<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO invite_sync_membership_ledger
             (target, email, organization_id, kind, clerk_id, user_id, role, state, owned,
              settled_at)
           VALUES ($1, $2, $3, 'invitation', $4, $5, $6, $7, $8, now())
           ON CONFLICT (target, clerk_id) WHERE kind = 'invitation' AND clerk_id IS NOT NULL
           DO UPDATE SET state = EXCLUDED.state,
                         owned = invite_sync_membership_ledger.owned OR EXCLUDED.owned,
                         user_id = COALESCE(EXCLUDED.user_id, invite_sync_membership_ledger.user_id)"#,
        seen.target,
        seen.email.as_str(),
        seen.organization_id,
        seen.invitation_id,
        seen.user_id,
        seen.role,
        seen.state.as_str(),
        seen.owned,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores the state Clerk showed for an entry the ledger holds (never over a `sending`
/// one, which only its settling changes).
pub async fn set_state(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    state: MembershipState,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger SET state = $2
           WHERE id = $1 AND state <> 'sending'"#,
        ledger_id,
        state.as_str(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that an organization invitation was revoked (by invite-sync, or Clerk says it
/// was). Returns whether the ledger held it.
pub async fn mark_revoked(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_id: &str,
) -> Result<bool, sqlx::Error> {
    set_invitation_state(db, target, invitation_id, MembershipState::Revoked, None).await
}

/// Records that an organization invitation expired unanswered (seen by listing: no webhook
/// says so). Returns whether the ledger held it.
pub async fn mark_expired(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_id: &str,
) -> Result<bool, sqlx::Error> {
    set_invitation_state(db, target, invitation_id, MembershipState::Expired, None).await
}

/// Records that an organization invitation was accepted, with the user who accepted it when
/// known (the `organizationInvitation.accepted` webhook names them): a membership whose
/// invitation invite-sync sent is its own. Returns whether the ledger held it.
pub async fn mark_accepted(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_id: &str,
    user_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    set_invitation_state(
        db,
        target,
        invitation_id,
        MembershipState::Accepted,
        user_id,
    )
    .await
}

async fn set_invitation_state(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_id: &str,
    state: MembershipState,
    user_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger
           SET state = $3, user_id = COALESCE($4, user_id)
           WHERE target = $1 AND kind = 'invitation' AND clerk_id = $2"#,
        target,
        invitation_id,
        state.as_str(),
        user_id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Records that a user's membership of an organization is gone (invite-sync removed it, or
/// Clerk says it was deleted): the entries that made them a member (a membership created,
/// an invitation accepted) become `removed`. Returns how many entries changed.
pub async fn mark_removed(
    db: impl PgExecutor<'_>,
    target: &str,
    organization_id: &str,
    user_id: &str,
) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger SET state = 'removed'
           WHERE target = $1 AND organization_id = $2 AND user_id = $3
             AND state IN ('member', 'accepted')"#,
        target,
        organization_id,
        user_id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// Records the role invite-sync set on a membership or sent an invitation with.
pub async fn set_role(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invite_sync_membership_ledger SET role = $2 WHERE id = $1",
        ledger_id,
        role,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Every live entry of the target (a create in flight or refused, an invitation pending or
/// accepted, a membership), by organization, then address, oldest first.
pub async fn live(
    db: impl PgExecutor<'_>,
    target: &str,
) -> Result<Vec<MembershipLedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, organization_id, kind, clerk_id, user_id, role, state, owned,
                  row_digest, attempts, last_error_code, last_error, terminal, next_attempt_at,
                  call_id, run_id, sent_at, settled_at, created_at, updated_at
           FROM invite_sync_membership_ledger
           WHERE target = $1 AND state NOT IN ('revoked', 'expired', 'removed')
           ORDER BY organization_id, email, id"#,
        target,
    )
    .fetch_all(db)
    .await?;
    entries(rows)
}

/// The live entries of one organization, by address, oldest first.
pub async fn live_of_organization(
    db: impl PgExecutor<'_>,
    target: &str,
    organization_id: &str,
) -> Result<Vec<MembershipLedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, organization_id, kind, clerk_id, user_id, role, state, owned,
                  row_digest, attempts, last_error_code, last_error, terminal, next_attempt_at,
                  call_id, run_id, sent_at, settled_at, created_at, updated_at
           FROM invite_sync_membership_ledger
           WHERE target = $1 AND organization_id = $2
             AND state NOT IN ('revoked', 'expired', 'removed')
           ORDER BY email, id"#,
        target,
        organization_id,
    )
    .fetch_all(db)
    .await?;
    entries(rows)
}

/// Every entry, live or not, of one person in one organization, oldest first.
pub async fn of_person(
    db: impl PgExecutor<'_>,
    target: &str,
    organization_id: &str,
    email: &Email,
) -> Result<Vec<MembershipLedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, organization_id, kind, clerk_id, user_id, role, state, owned,
                  row_digest, attempts, last_error_code, last_error, terminal, next_attempt_at,
                  call_id, run_id, sent_at, settled_at, created_at, updated_at
           FROM invite_sync_membership_ledger
           WHERE target = $1 AND organization_id = $2 AND email = $3
           ORDER BY id"#,
        target,
        organization_id,
        email.as_str(),
    )
    .fetch_all(db)
    .await?;
    entries(rows)
}

/// The creates of the target whose outcome is unknown (`sending`), oldest first.
pub async fn sending(
    db: impl PgExecutor<'_>,
    target: &str,
) -> Result<Vec<MembershipLedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, organization_id, kind, clerk_id, user_id, role, state, owned,
                  row_digest, attempts, last_error_code, last_error, terminal, next_attempt_at,
                  call_id, run_id, sent_at, settled_at, created_at, updated_at
           FROM invite_sync_membership_ledger
           WHERE target = $1 AND state = 'sending'
           ORDER BY sent_at, id"#,
        target,
    )
    .fetch_all(db)
    .await?;
    entries(rows)
}

/// The entry that makes a person's membership of an organization invite-sync's own, if one
/// does: a membership it created, or an invitation it sent that was accepted. Only such a
/// membership may be removed (with `organizations.remove_members`); any other is reported.
pub async fn owned_membership(
    db: impl PgExecutor<'_>,
    target: &str,
    organization_id: &str,
    email: &Email,
) -> Result<Option<MembershipLedgerEntry>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT id, email, organization_id, kind, clerk_id, user_id, role, state, owned,
                  row_digest, attempts, last_error_code, last_error, terminal, next_attempt_at,
                  call_id, run_id, sent_at, settled_at, created_at, updated_at
           FROM invite_sync_membership_ledger
           WHERE target = $1 AND organization_id = $2 AND email = $3 AND owned
             AND state IN ('member', 'accepted')
           ORDER BY id DESC
           LIMIT 1"#,
        target,
        organization_id,
        email.as_str(),
    )
    .fetch_optional(db)
    .await?;
    row.map(Row::into_entry).transpose()
}

/// Which of these organization invitation ids invite-sync created.
pub async fn owned_invitations_among(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT clerk_id AS "clerk_id!" FROM invite_sync_membership_ledger
           WHERE target = $1 AND kind = 'invitation' AND owned AND clerk_id = ANY($2)"#,
        target,
        invitation_ids,
    )
    .fetch_all(db)
    .await
}

/// Makes refused creates (terminal failures) due again: those of one organization, or every
/// one when `organization_id` is `None`. Returns how many were cleared.
pub async fn clear_terminal_failures(
    db: impl PgExecutor<'_>,
    target: &str,
    organization_id: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let cleared = sqlx::query!(
        r#"UPDATE invite_sync_membership_ledger
           SET terminal = false, next_attempt_at = NULL
           WHERE target = $1 AND state = 'failed' AND terminal
             AND ($2::text IS NULL OR organization_id = $2)"#,
        target,
        organization_id,
    )
    .execute(db)
    .await?;
    Ok(cleared.rows_affected())
}
