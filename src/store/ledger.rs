//! The invitation ledger: what invite-sync created, is creating, and has seen.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::copy_out::{row_fields, Tuple};
use super::desired::PgTime;
use super::{CorruptLedgerRow, StoreError};
use crate::clerk::Invitation;
use crate::domain::{AcceptedEntry, DesiredInvitee, Email, LedgerEntry, LedgerState};

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    email: String,
    clerk_invitation_id: Option<String>,
    state: String,
    owned: bool,
    row_digest: Option<String>,
    redirect_url: Option<String>,
    attempts: i32,
    last_error_code: Option<String>,
    last_error: Option<String>,
    terminal: bool,
    next_attempt_at: Option<DateTime<Utc>>,
    revoked_by_us: bool,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_entry(self) -> Result<LedgerEntry, sqlx::Error> {
        let id = self.id;
        let corrupt =
            |reason: String| sqlx::Error::Decode(Box::new(CorruptLedgerRow { id, reason }));
        Ok(LedgerEntry {
            id: self.id,
            email: Email::parse(&self.email).map_err(|e| corrupt(e.to_string()))?,
            clerk_invitation_id: self.clerk_invitation_id,
            state: LedgerState::parse(&self.state)
                .ok_or_else(|| corrupt(format!("state {:?}", self.state)))?,
            owned: self.owned,
            row_digest: self.row_digest,
            redirect_url: self.redirect_url,
            attempts: self.attempts,
            last_error_code: self.last_error_code,
            last_error: self.last_error,
            terminal: self.terminal,
            next_attempt_at: self.next_attempt_at,
            revoked_by_us: self.revoked_by_us,
            created_at: self.created_at,
            sent_at: self.sent_at,
        })
    }
}

/// Every ledger entry of the target, oldest first.
pub async fn load(db: impl PgExecutor<'_>, target: &str) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, clerk_invitation_id, state, owned, row_digest, redirect_url, attempts,
                  last_error_code, last_error, terminal, next_attempt_at, revoked_by_us, created_at,
                  sent_at
           FROM invite_sync_ledger WHERE target = $1 ORDER BY id"#,
        target
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Row::into_entry).collect()
}

/// The ledger entries of the target that Clerk can still change or that await settling
/// (`sending`, `pending`, `expired`), oldest first: what a cycle holds, while the rest of the
/// ledger is streamed by address beside the roster ([`by_email`]).
pub async fn live(db: impl PgExecutor<'_>, target: &str) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, clerk_invitation_id, state, owned, row_digest, redirect_url, attempts,
                  last_error_code, last_error, terminal, next_attempt_at, revoked_by_us, created_at,
                  sent_at
           FROM invite_sync_ledger
           WHERE target = $1 AND state IN ('sending', 'pending', 'expired')
           ORDER BY id"#,
        target
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Row::into_entry).collect()
}

/// The ledger entries of the target (`$1`) in every state but `accepted`, by address in byte
/// order (`COLLATE "C"`), oldest first among one address's: the query of a stream or a cursor
/// whose rows decode with [`entry_from_tuple`]. An index holds these
/// rows alone, so a ledger of people who accepted long ago is not read again here.
pub const OPEN_BY_EMAIL: &str = r#"SELECT id, email, clerk_invitation_id, state, owned, row_digest,
           redirect_url, attempts, last_error_code, last_error, terminal, next_attempt_at,
           revoked_by_us, created_at, sent_at
    FROM invite_sync_ledger WHERE target = $1 AND state <> 'accepted'
    ORDER BY email COLLATE "C", id"#;

/// The target's (`$1`) accepted ledger entries, as much of each as decides anything (the
/// address, the id and whether invite-sync sent it), in [`OPEN_BY_EMAIL`]'s order: rows that
/// decode with [`accepted_from_tuple`]. An index holds all three, so the table is not read.
pub const ACCEPTED_BY_EMAIL: &str = r#"SELECT email, id, owned FROM invite_sync_ledger
    WHERE target = $1 AND state = 'accepted' ORDER BY email COLLATE "C", id"#;

/// A row of [`ACCEPTED_BY_EMAIL`]: its address and the entry.
pub fn accepted_from_tuple(row: &Tuple<'_>) -> Result<(String, AcceptedEntry), sqlx::Error> {
    let id = row.i64(1).ok().flatten().unwrap_or_default();
    let corrupt = |reason: String| sqlx::Error::Decode(Box::new(CorruptLedgerRow { id, reason }));
    let email = required(row.text(0), "email", corrupt)?;
    let id = required(row.i64(1), "id", corrupt)?;
    let owned = required(row.bool(2), "owned", corrupt)?;
    Ok((email.to_owned(), AcceptedEntry { id, owned }))
}

/// A field of a ledger row that may not be NULL, or why it is `corrupt`.
fn required<T>(
    value: Result<Option<T>, String>,
    column: &str,
    corrupt: impl Fn(String) -> sqlx::Error,
) -> Result<T, sqlx::Error> {
    value
        .map_err(|e| corrupt(format!("{column}: {e}")))?
        .ok_or_else(|| corrupt(format!("{column} is NULL")))
}

/// A row of [`OPEN_BY_EMAIL`] (or of any query of its columns).
pub fn entry_from_row(row: &sqlx::postgres::PgRow) -> Result<LedgerEntry, sqlx::Error> {
    entry_from_tuple(&Tuple::new(&row_fields(row)))
}

/// A row of [`OPEN_BY_EMAIL`] as a binary copy sends it ([`super::copy_out`]), or as the driver
/// read it ([`entry_from_row`]).
pub fn entry_from_tuple(row: &Tuple<'_>) -> Result<LedgerEntry, sqlx::Error> {
    let id = row.i64(0).ok().flatten().unwrap_or_default();
    let corrupt = |reason: String| sqlx::Error::Decode(Box::new(CorruptLedgerRow { id, reason }));
    let optional = |value: Result<Option<&str>, String>, column: &str| {
        value
            .map(|text| text.map(str::to_owned))
            .map_err(|e| corrupt(format!("{column}: {e}")))
    };
    let time = |value: Result<Option<i64>, String>, column: &str| {
        value
            .map_err(|e| corrupt(format!("{column}: {e}")))?
            .map(|micros| {
                PgTime(micros)
                    .to_utc()
                    .map_err(|e| corrupt(format!("{column} {e}")))
            })
            .transpose()
    };
    let email = required(row.text(1), "email", corrupt)?;
    let state = required(row.text(3), "state", corrupt)?;
    Ok(LedgerEntry {
        id: required(row.i64(0), "id", corrupt)?,
        email: Email::parse(email).map_err(|e| corrupt(e.to_string()))?,
        clerk_invitation_id: optional(row.text(2), "clerk_invitation_id")?,
        state: LedgerState::parse(state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
        owned: required(row.bool(4), "owned", corrupt)?,
        row_digest: optional(row.text(5), "row_digest")?,
        redirect_url: optional(row.text(6), "redirect_url")?,
        attempts: required(row.i32(7), "attempts", corrupt)?,
        last_error_code: optional(row.text(8), "last_error_code")?,
        last_error: optional(row.text(9), "last_error")?,
        terminal: required(row.bool(10), "terminal", corrupt)?,
        next_attempt_at: time(row.i64(11), "next_attempt_at")?,
        revoked_by_us: required(row.bool(12), "revoked_by_us", corrupt)?,
        created_at: time(row.i64(13), "created_at")?
            .ok_or_else(|| corrupt("created_at is NULL".to_owned()))?,
        sent_at: time(row.i64(14), "sent_at")?,
    })
}

/// The ledger entries of the target (`$1`) with these addresses (`$2`), by address and
/// oldest first among one address's: rows that decode with [`entry_from_row`].
const OF_EMAILS: &str = r#"SELECT id, email, clerk_invitation_id, state, owned, row_digest, redirect_url,
           attempts, last_error_code, last_error, terminal, next_attempt_at, revoked_by_us,
           created_at, sent_at
    FROM invite_sync_ledger WHERE target = $1 AND email = ANY($2)
    ORDER BY email COLLATE "C", id"#;

/// The ledger entries of these addresses, by address and oldest first among one address's.
pub async fn of_emails(
    db: impl PgExecutor<'_>,
    target: &str,
    emails: &[&str],
) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    if emails.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(OF_EMAILS)
        .bind(target)
        .bind(emails)
        .fetch_all(db)
        .await?;
    rows.iter().map(entry_from_row).collect()
}

/// The ledger entries of one address, oldest first.
pub async fn of_email(
    db: impl PgExecutor<'_>,
    target: &str,
    email: &Email,
) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, email, clerk_invitation_id, state, owned, row_digest, redirect_url, attempts,
                  last_error_code, last_error, terminal, next_attempt_at, revoked_by_us, created_at,
                  sent_at
           FROM invite_sync_ledger WHERE target = $1 AND email = $2 ORDER BY id"#,
        target,
        email.as_str()
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Row::into_entry).collect()
}

/// Which of these invitation ids invite-sync created.
pub async fn owned_among(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let ids = sqlx::query_scalar!(
        r#"SELECT clerk_invitation_id AS "id!" FROM invite_sync_ledger
           WHERE target = $1 AND owned AND clerk_invitation_id = ANY($2)"#,
        target,
        invitation_ids
    )
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Marks an invitee `sending` before its create goes out, carrying over the attempts of an
/// earlier failure. Fails (unique violation) if a create for the address is already in flight.
pub async fn start_sending(
    conn: &mut PgConnection,
    target: &str,
    invitee: &DesiredInvitee,
    call_id: i64,
    run_id: Uuid,
) -> Result<i64, sqlx::Error> {
    let earlier = sqlx::query_scalar!(
        r#"DELETE FROM invite_sync_ledger
           WHERE target = $1 AND email = $2 AND state = 'failed'
           RETURNING attempts"#,
        target,
        invitee.email.as_str(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let attempts = earlier.into_iter().max().unwrap_or(0) + 1;
    sqlx::query_scalar!(
        r#"INSERT INTO invite_sync_ledger
             (target, email, state, owned, row_digest, public_metadata, redirect_url, attempts,
              call_id, run_id, sent_at)
           VALUES ($1, $2, 'sending', true, $3, $4, $5, $6, $7, $8, now())
           RETURNING id"#,
        target,
        invitee.email.as_str(),
        invitee.digest(),
        serde_json::Value::Object(invitee.metadata()),
        invitee.request.redirect_url,
        attempts,
        call_id,
        run_id,
    )
    .fetch_one(&mut *conn)
    .await
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// Records the invitation a create produced (or that a lookup found for an unsettled create).
/// `false` when the entry is gone: another process settled it meanwhile.
pub async fn mark_created(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    invitation: &Invitation,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE invite_sync_ledger
           SET state = 'pending', clerk_invitation_id = $2, clerk_created_at = $3, expires_at = $4,
               settled_at = now(), last_error_code = NULL, last_error = NULL, terminal = false,
               next_attempt_at = NULL
           WHERE id = $1"#,
        ledger_id,
        invitation.id,
        millis(invitation.created_at),
        invitation.expires_at.and_then(millis),
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records that Clerk refused a create. `terminal` failures wait for the roster row to change;
/// the others are retried at `next_attempt_at`.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    code: &str,
    message: &str,
    terminal: bool,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE invite_sync_ledger
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
        "DELETE FROM invite_sync_ledger WHERE id = ANY($1) AND state = 'sending'",
        ledger_ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records an invitation invite-sync did not create but now knows of (a duplicate it
/// stumbled on). `owned` only when invite-sync had asked for it.
pub async fn record_seen(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation: &Invitation,
    owned: bool,
) -> Result<(), StoreError> {
    let email =
        Email::parse(&invitation.email_address).map_err(|e| StoreError::InvalidAddress {
            invitation_id: invitation.id.clone(),
            reason: e.to_string(),
        })?;
    sqlx::query!(
        r#"INSERT INTO invite_sync_ledger
             (target, email, clerk_invitation_id, state, owned, public_metadata, clerk_created_at,
              expires_at, settled_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
           ON CONFLICT (target, clerk_invitation_id) WHERE clerk_invitation_id IS NOT NULL
           DO UPDATE SET state = EXCLUDED.state, owned = invite_sync_ledger.owned OR EXCLUDED.owned"#,
        target,
        email.as_str(),
        invitation.id,
        LedgerState::from(invitation.status).as_str(),
        owned,
        serde_json::Value::Object(invitation.public_metadata.clone()),
        millis(invitation.created_at),
        invitation.expires_at.and_then(millis),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores the state Clerk's list showed for an invitation the ledger holds.
pub async fn set_state(
    db: impl PgExecutor<'_>,
    ledger_id: i64,
    state: LedgerState,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invite_sync_ledger SET state = $2 WHERE id = $1 AND state <> 'sending'",
        ledger_id,
        state.as_str(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records a revocation invite-sync made (or that Clerk says was already made).
pub async fn mark_revoked_by_us(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE invite_sync_ledger SET state = 'revoked', revoked_by_us = true
           WHERE target = $1 AND clerk_invitation_id = $2"#,
        target,
        invitation_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that an invitation was accepted: its entry says so, and its address is a user's,
/// so no create is spent on it again.
pub async fn record_accepted(
    db: impl PgExecutor<'_>,
    target: &str,
    invitation_id: &str,
    email: &Email,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"WITH accepted AS (
               UPDATE invite_sync_ledger SET state = 'accepted'
               WHERE target = $1 AND clerk_invitation_id = $2 AND state <> 'sending'
           )
           INSERT INTO invite_sync_known_users (target, email, seen_via)
           VALUES ($1, $3, 'accepted')
           ON CONFLICT (target, email) DO UPDATE SET deleted_at = NULL"#,
        target,
        invitation_id,
        email.as_str(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// How many invitations [`record_settled_seen`] writes in one statement.
const SEEN_BATCH: usize = 5_000;

/// Records the accepted and expired invitations a listing showed that the ledger does not
/// hold (made before invite-sync, or by hand), as seen and not owned, so that a cycle that
/// lists pending invitations only knows them as a full listing does. The address of an
/// accepted one is a user's, as a user check would say: no later cycle plans a create for
/// them or looks them up. A user already known keeps what is known of them, a deletion
/// included. An address Clerk refuses is skipped (no roster row can name it), and so is an
/// invitation of another status. Returns how many invitations were new to the ledger.
pub async fn record_settled_seen(
    pool: &sqlx::PgPool,
    target: &str,
    invitations: &[&Invitation],
) -> Result<u64, sqlx::Error> {
    use crate::clerk::InvitationStatus;
    let mut recorded = 0;
    for batch in invitations.chunks(SEEN_BATCH) {
        let mut emails = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        let mut states = Vec::with_capacity(batch.len());
        let mut created = Vec::with_capacity(batch.len());
        let mut expires = Vec::with_capacity(batch.len());
        for invitation in batch {
            let state = match invitation.status {
                InvitationStatus::Accepted => LedgerState::Accepted,
                InvitationStatus::Expired => LedgerState::Expired,
                InvitationStatus::Pending | InvitationStatus::Revoked => continue,
            };
            let Ok(email) = Email::parse(&invitation.email_address) else {
                continue;
            };
            emails.push(email.as_str().to_owned());
            ids.push(invitation.id.clone());
            states.push(state.as_str().to_owned());
            created.push(millis(invitation.created_at));
            expires.push(invitation.expires_at.and_then(millis));
        }
        if ids.is_empty() {
            continue;
        }
        let new = sqlx::query_scalar!(
            r#"WITH seen AS (
                   INSERT INTO invite_sync_ledger
                     (target, email, clerk_invitation_id, state, owned, clerk_created_at,
                      expires_at, settled_at)
                   SELECT $1, l.email, l.id, l.state, false, l.created, l.expires, now()
                   FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[],
                               $6::timestamptz[])
                        AS l(email, id, state, created, expires)
                   WHERE NOT EXISTS (SELECT 1 FROM invite_sync_ledger AS x
                                     WHERE x.target = $1 AND x.clerk_invitation_id = l.id)
                   ON CONFLICT (target, clerk_invitation_id) WHERE clerk_invitation_id IS NOT NULL
                   DO NOTHING
                   RETURNING email, state
               ), users AS (
                   INSERT INTO invite_sync_known_users (target, email, seen_via)
                   SELECT DISTINCT $1, email, 'accepted' FROM seen WHERE state = 'accepted'
                   ON CONFLICT (target, email) DO NOTHING
               )
               SELECT count(*) AS "new!" FROM seen"#,
            target,
            &emails,
            &ids,
            &states,
            &created as &[Option<DateTime<Utc>>],
            &expires as &[Option<DateTime<Utc>>],
        )
        .fetch_one(pool)
        .await?;
        recorded += u64::try_from(new).unwrap_or(0);
    }
    Ok(recorded)
}

impl From<crate::clerk::InvitationStatus> for LedgerState {
    fn from(status: crate::clerk::InvitationStatus) -> Self {
        use crate::clerk::InvitationStatus as S;
        match status {
            S::Pending => LedgerState::Pending,
            S::Accepted => LedgerState::Accepted,
            S::Revoked => LedgerState::Revoked,
            S::Expired => LedgerState::Expired,
        }
    }
}

/// The attempts recorded on an entry.
pub async fn attempts(db: impl PgExecutor<'_>, ledger_id: i64) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT attempts FROM invite_sync_ledger WHERE id = $1",
        ledger_id
    )
    .fetch_one(db)
    .await
}

/// Marks the pending invitations of people Clerk says are users as accepted.
pub async fn mark_accepted_by_email(
    db: impl PgExecutor<'_>,
    target: &str,
    emails: &[Email],
) -> Result<u64, sqlx::Error> {
    let emails: Vec<String> = emails.iter().map(|e| e.as_str().to_owned()).collect();
    let done = sqlx::query!(
        r#"UPDATE invite_sync_ledger SET state = 'accepted'
           WHERE target = $1 AND email = ANY($2) AND state = 'pending'"#,
        target,
        &emails,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Makes refused creates (terminal failures) due again: those of `emails`, or every one when
/// `emails` is `None`. Returns the addresses cleared.
pub async fn clear_terminal_failures(
    db: impl PgExecutor<'_>,
    target: &str,
    emails: Option<&[String]>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE invite_sync_ledger
           SET terminal = false, next_attempt_at = NULL
           WHERE target = $1 AND state = 'failed' AND terminal
             AND ($2::text[] IS NULL OR email = ANY($2))
           RETURNING email"#,
        target,
        emails as Option<&[String]>,
    )
    .fetch_all(db)
    .await
}

/// The creates whose outcome is unknown (`sending`), and when the oldest of them was sent
/// (now, for one with no time), with the database's clock.
pub async fn unsettled(
    db: impl PgExecutor<'_>,
    target: &str,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "creates!", min(COALESCE(sent_at, now())) AS oldest
           FROM invite_sync_ledger WHERE target = $1 AND state = 'sending'"#,
        target,
    )
    .fetch_one(db)
    .await?;
    Ok((row.creates, row.oldest))
}
