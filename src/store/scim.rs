//! Users provisioned through SCIM: `invite_sync_scim_users`. The roster rows they map to are
//! written through [`super::roster`], in the same transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A stored SCIM user.
#[derive(Debug, Clone)]
pub struct ScimUser {
    pub id: Uuid,
    pub user_name: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub active: bool,
    pub attributes: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a write sets.
#[derive(Debug, Clone)]
pub struct UserWrite<'a> {
    pub user_name: &'a str,
    pub external_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub active: bool,
    pub attributes: &'a Value,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("another user has this userName")]
    DuplicateUserName,
    #[error("another user has this address")]
    DuplicateEmail,
    /// A value too large for an index entry (SQLSTATE 54000), which the checks before the
    /// write should have stopped.
    #[error("a value is too large to store")]
    TooLarge,
    /// Text PostgreSQL cannot hold (a NUL character: SQLSTATE 22021, 22P05).
    #[error("a value holds a character that cannot be stored")]
    Unstorable,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A refusal by its SQLSTATE first: a unique violation by the index it names (another error,
/// such as an index entry too large, names the index too).
fn refused(error: sqlx::Error) -> WriteError {
    if let sqlx::Error::Database(db) = &error {
        match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("invite_sync_scim_users_user_name_key")) => {
                return WriteError::DuplicateUserName
            }
            (Some("23505"), Some("invite_sync_scim_users_email_key")) => {
                return WriteError::DuplicateEmail
            }
            (Some("54000"), _) => return WriteError::TooLarge,
            (Some("22021" | "22P05"), _) => return WriteError::Unstorable,
            _ => {}
        }
    }
    WriteError::Database(error)
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    user: &UserWrite<'_>,
) -> Result<ScimUser, WriteError> {
    sqlx::query_as!(
        ScimUser,
        r#"INSERT INTO invite_sync_scim_users (id, user_name, external_id, email, active, attributes)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, user_name, external_id, email, active, attributes, version, created_at,
                     updated_at"#,
        id,
        user.user_name,
        user.external_id,
        user.email,
        user.active,
        user.attributes,
    )
    .fetch_one(conn)
    .await
    .map_err(refused)
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    user: &UserWrite<'_>,
) -> Result<ScimUser, WriteError> {
    sqlx::query_as!(
        ScimUser,
        r#"UPDATE invite_sync_scim_users
           SET user_name = $2, external_id = $3, email = $4, active = $5, attributes = $6,
               version = version + 1, updated_at = now()
           WHERE id = $1
           RETURNING id, user_name, external_id, email, active, attributes, version, created_at,
                     updated_at"#,
        id,
        user.user_name,
        user.external_id,
        user.email,
        user.active,
        user.attributes,
    )
    .fetch_one(conn)
    .await
    .map_err(refused)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ScimUser>, sqlx::Error> {
    sqlx::query_as!(
        ScimUser,
        r#"SELECT id, user_name, external_id, email, active, attributes, version, created_at,
                  updated_at
           FROM invite_sync_scim_users WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// The user, locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<ScimUser>, sqlx::Error> {
    sqlx::query_as!(
        ScimUser,
        r#"SELECT id, user_name, external_id, email, active, attributes, version, created_at,
                  updated_at
           FROM invite_sync_scim_users WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!("DELETE FROM invite_sync_scim_users WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// How many users there are.
pub async fn count(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    let count = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM invite_sync_scim_users"#)
        .fetch_one(db)
        .await?;
    Ok(count)
}

/// Where a scan in creation order goes on from: the last user it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl ScimUser {
    pub fn scan_key(&self) -> ScanKey {
        ScanKey {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Up to `limit` users in creation order, narrowed by an indexed key when the filter names
/// one: those after `after`, skipping `offset` first. A search reads its users a few at a
/// time, so that neither a page nor a filter over every user holds them all at once.
pub async fn scan(
    db: impl PgExecutor<'_>,
    which: Candidates<'_>,
    after: Option<ScanKey>,
    offset: i64,
    limit: i64,
) -> Result<Vec<ScimUser>, sqlx::Error> {
    let (id, user_name, external_id) = match which {
        Candidates::All => (None, None, None),
        Candidates::Id(id) => (Some(id), None, None),
        Candidates::UserName(name) => (None, Some(name), None),
        Candidates::ExternalId(external) => (None, None, Some(external)),
    };
    sqlx::query_as!(
        ScimUser,
        r#"SELECT id, user_name, external_id, email, active, attributes, version, created_at,
                  updated_at
           FROM invite_sync_scim_users
           WHERE ($1::uuid IS NULL OR id = $1)
             AND ($2::text IS NULL OR lower(user_name) = lower($2))
             AND ($3::text IS NULL OR external_id = $3)
             AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
           ORDER BY created_at, id
           OFFSET $6 LIMIT $7"#,
        id,
        user_name,
        external_id,
        after.map(|key| key.created_at),
        after.map(|key| key.id),
        offset,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Which users a search reads before its filter is applied.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    All,
    Id(Uuid),
    UserName(&'a str),
    ExternalId(&'a str),
}
