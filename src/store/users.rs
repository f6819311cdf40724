//! Who is a Clerk user: addresses known to belong to users (with their Clerk user id when
//! known, and when Clerk deleted them), and addresses Clerk said are not users, with the
//! time it said so. No create budget is spent on anyone not known to be invitable.

use std::collections::{HashMap, HashSet};

use sqlx::PgExecutor;

use crate::domain::Email;

/// An address Clerk says belongs to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub email: Email,
    pub clerk_user_id: Option<String>,
}

fn strings(emails: &[Email]) -> Vec<String> {
    emails.iter().map(|e| e.as_str().to_owned()).collect()
}

/// Remembers users (a user that was deleted and is seen again is live again). An id already
/// known is kept when the new sighting carries none.
pub async fn record_users(
    db: impl PgExecutor<'_>,
    target: &str,
    users: &[KnownUser],
    seen_via: &str,
) -> Result<(), sqlx::Error> {
    let emails: Vec<String> = users.iter().map(|u| u.email.as_str().to_owned()).collect();
    let ids: Vec<Option<String>> = users.iter().map(|u| u.clerk_user_id.clone()).collect();
    sqlx::query!(
        r#"WITH unchecked AS (
               DELETE FROM invite_sync_user_checks WHERE target = $1 AND email = ANY($2)
           )
           INSERT INTO invite_sync_known_users (target, email, seen_via, clerk_user_id)
           SELECT $1, email, $4, id FROM unnest($2::text[], $3::text[]) AS u(email, id)
           ON CONFLICT (target, email) DO UPDATE
           SET clerk_user_id = COALESCE(EXCLUDED.clerk_user_id, invite_sync_known_users.clerk_user_id),
               deleted_at = NULL,
               seen_via = EXCLUDED.seen_via,
               seen_at = now()"#,
        target,
        &emails,
        &ids as &[Option<String>],
        seen_via,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that Clerk deleted the user with this id, and returns their addresses. They are
/// not users any more (and known not to be, as of now): a person still on the roster is
/// invited again.
pub async fn mark_deleted(
    db: impl PgExecutor<'_>,
    target: &str,
    clerk_user_id: &str,
) -> Result<Vec<Email>, sqlx::Error> {
    let emails = sqlx::query_scalar!(
        r#"WITH deleted AS (
               UPDATE invite_sync_known_users SET deleted_at = now()
               WHERE target = $1 AND clerk_user_id = $2 AND deleted_at IS NULL
               RETURNING email
           ), checked AS (
               INSERT INTO invite_sync_user_checks (target, email, checked_at)
               SELECT $1, email, now() FROM deleted
               ON CONFLICT (target, email) DO UPDATE SET checked_at = now()
           )
           SELECT email AS "email!" FROM deleted"#,
        target,
        clerk_user_id,
    )
    .fetch_all(db)
    .await?;
    Ok(emails.iter().filter_map(|e| Email::parse(e).ok()).collect())
}

/// Every known user of the target (`$1`) by address in byte order (`COLLATE "C"`): the query
/// of a cursor whose rows are `email` and `deleted`.
pub const BY_EMAIL: &str = r#"SELECT email, deleted_at IS NOT NULL AS deleted FROM invite_sync_known_users
    WHERE target = $1 ORDER BY email COLLATE "C""#;

/// Whether the address is a known user's (`Some`), and whether Clerk deleted that user.
pub async fn of_email(
    db: impl PgExecutor<'_>,
    target: &str,
    email: &Email,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT deleted_at IS NOT NULL AS "deleted!" FROM invite_sync_known_users
           WHERE target = $1 AND email = $2"#,
        target,
        email.as_str()
    )
    .fetch_optional(db)
    .await
}

/// Which of these addresses are known users' (`Some`), and whether Clerk deleted them, by
/// address.
pub async fn of_emails(
    db: impl PgExecutor<'_>,
    target: &str,
    emails: &[&str],
) -> Result<HashMap<String, bool>, sqlx::Error> {
    if emails.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT email, deleted_at IS NOT NULL FROM invite_sync_known_users
         WHERE target = $1 AND email = ANY($2)",
    )
    .bind(target)
    .bind(emails)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Remembers that Clerk said these addresses are not users, now.
pub async fn record_not_users(
    db: impl PgExecutor<'_>,
    target: &str,
    emails: &[Email],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO invite_sync_user_checks (target, email, checked_at)
           SELECT $1, email, now() FROM unnest($2::text[]) AS email
           ON CONFLICT (target, email) DO UPDATE SET checked_at = now()"#,
        target,
        &strings(emails),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The addresses Clerk said are not users less than `max_age_seconds` ago.
pub async fn fresh_not_users(
    db: impl PgExecutor<'_>,
    target: &str,
    max_age_seconds: i64,
) -> Result<HashSet<Email>, sqlx::Error> {
    let rows = sqlx::query_scalar!(
        r#"SELECT email FROM invite_sync_user_checks
           WHERE target = $1
             AND checked_at > now() - make_interval(secs => $2::bigint::double precision)"#,
        target,
        max_age_seconds,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.iter().filter_map(|e| Email::parse(e).ok()).collect())
}

/// The Clerk user ids of those of these addresses that are known, live users with a known id:
/// an organization membership is created for a user id, so only these can be added directly.
pub async fn user_ids(
    db: impl PgExecutor<'_>,
    target: &str,
    emails: &[Email],
) -> Result<HashMap<Email, String>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT email, clerk_user_id AS "clerk_user_id!" FROM invite_sync_known_users
           WHERE target = $1 AND email = ANY($2)
             AND deleted_at IS NULL AND clerk_user_id IS NOT NULL"#,
        target,
        &strings(emails),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((Email::parse(&row.email).ok()?, row.clerk_user_id)))
        .collect())
}

/// The address of a known, live user with this Clerk user id (an organization webhook names
/// the user by id).
pub async fn email_of_user_id(
    db: impl PgExecutor<'_>,
    target: &str,
    clerk_user_id: &str,
) -> Result<Option<Email>, sqlx::Error> {
    let email = sqlx::query_scalar!(
        r#"SELECT email FROM invite_sync_known_users
           WHERE target = $1 AND clerk_user_id = $2 AND deleted_at IS NULL
           ORDER BY seen_at DESC LIMIT 1"#,
        target,
        clerk_user_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(email.and_then(|email| Email::parse(&email).ok()))
}
