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
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn refused(error: sqlx::Error) -> WriteError {
    if let sqlx::Error::Database(db) = &error {
        match db.constraint() {
            Some("invite_sync_scim_users_user_name_key") => return WriteError::DuplicateUserName,
            Some("invite_sync_scim_users_email_key") => return WriteError::DuplicateEmail,
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

/// Which users a search reads before its filter is applied.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    All,
    Id(Uuid),
    UserName(&'a str),
    ExternalId(&'a str),
}

/// Users in creation order, narrowed by an indexed key when the filter names one.
pub async fn candidates(
    db: impl PgExecutor<'_>,
    which: Candidates<'_>,
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
           ORDER BY created_at, id"#,
        id,
        user_name,
        external_id,
    )
    .fetch_all(db)
    .await
}
