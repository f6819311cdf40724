//! Groups provisioned through SCIM: `invite_sync_scim_groups` and their members,
//! `invite_sync_scim_group_members`, per target. A group's write calls
//! [`super::group_memberships::apply`] in the same transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A stored SCIM group, without its members.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScimGroup {
    pub id: Uuid,
    pub target: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One member of a group: a SCIM user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub display: Option<String>,
}

/// What a write sets on the group's own row.
#[derive(Debug, Clone, Copy)]
pub struct GroupWrite<'a> {
    pub display_name: &'a str,
    pub external_id: Option<&'a str>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("another group has this displayName")]
    DuplicateDisplayName,
    /// A member that is no SCIM user (a user deleted since it was checked).
    #[error("a member is not a SCIM user")]
    UnknownMember,
    #[error("a value is too large to store")]
    TooLarge,
    #[error("a value holds a character that cannot be stored")]
    Unstorable,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn refused(error: sqlx::Error) -> WriteError {
    if let sqlx::Error::Database(db) = &error {
        match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("invite_sync_scim_groups_display_name_key")) => {
                return WriteError::DuplicateDisplayName
            }
            (Some("23503"), _) => return WriteError::UnknownMember,
            (Some("54000"), _) => return WriteError::TooLarge,
            (Some("22021" | "22P05"), _) => return WriteError::Unstorable,
            _ => {}
        }
    }
    WriteError::Database(error)
}

const COLUMNS: &str = "id, target, display_name, external_id, version, created_at, updated_at";

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    target: &str,
    group: GroupWrite<'_>,
) -> Result<ScimGroup, WriteError> {
    sqlx::query_as(&format!(
        "INSERT INTO invite_sync_scim_groups (id, target, display_name, external_id)
         VALUES ($1, $2, $3, $4)
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(target)
    .bind(group.display_name)
    .bind(group.external_id)
    .fetch_one(conn)
    .await
    .map_err(refused)
}

/// Sets the group's own attributes, a new version and `lastModified`.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    group: GroupWrite<'_>,
) -> Result<ScimGroup, WriteError> {
    sqlx::query_as(&format!(
        "UPDATE invite_sync_scim_groups
         SET display_name = $2, external_id = $3, version = version + 1, updated_at = now()
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(group.display_name)
    .bind(group.external_id)
    .fetch_one(conn)
    .await
    .map_err(refused)
}

pub async fn get(
    db: impl PgExecutor<'_>,
    target: &str,
    id: Uuid,
) -> Result<Option<ScimGroup>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invite_sync_scim_groups WHERE id = $1 AND target = $2"
    ))
    .bind(id)
    .bind(target)
    .fetch_optional(db)
    .await
}

/// The group, locked until the transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    target: &str,
    id: Uuid,
) -> Result<Option<ScimGroup>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invite_sync_scim_groups WHERE id = $1 AND target = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(target)
    .fetch_optional(conn)
    .await
}

/// Deletes the group and its members.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM invite_sync_scim_groups WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// A group's members, in the order they were added.
pub async fn members(db: impl PgExecutor<'_>, group_id: Uuid) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, display FROM invite_sync_scim_group_members
         WHERE group_id = $1 ORDER BY added",
    )
    .bind(group_id)
    .fetch_all(db)
    .await
}

/// The members of several groups, each group's in the order they were added.
pub async fn members_of(
    db: impl PgExecutor<'_>,
    group_ids: &[Uuid],
) -> Result<Vec<(Uuid, Member)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, Option<String>)> = sqlx::query_as(
        "SELECT group_id, user_id, display FROM invite_sync_scim_group_members
         WHERE group_id = ANY($1) ORDER BY group_id, added",
    )
    .bind(group_ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(group, user_id, display)| (group, Member { user_id, display }))
        .collect())
}

/// The groups of `target` that `user_id` is a member of.
pub async fn groups_of_user(
    db: impl PgExecutor<'_>,
    target: &str,
    user_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT m.group_id FROM invite_sync_scim_group_members m
         JOIN invite_sync_scim_groups g ON g.id = m.group_id
         WHERE m.user_id = $1 AND g.target = $2
         ORDER BY m.group_id",
    )
    .bind(user_id)
    .bind(target)
    .fetch_all(db)
    .await
}

/// Of `ids`, those that are no SCIM user, in the order given. The others are locked against
/// deletion until the transaction ends, so that they are still users when they are written
/// as members.
pub async fn missing_users(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM invite_sync_scim_users WHERE id = ANY($1) ORDER BY id FOR SHARE",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let found: HashSet<Uuid> = found.into_iter().collect();
    Ok(ids
        .iter()
        .filter(|id| !found.contains(id))
        .copied()
        .collect())
}

/// Brings a group's members to `members` (in their order): members not listed are removed,
/// new ones added after the others, and a kept member's `display` set.
pub async fn set_members(
    conn: &mut PgConnection,
    group_id: Uuid,
    members: &[Member],
) -> Result<(), WriteError> {
    let ids: Vec<Uuid> = members.iter().map(|m| m.user_id).collect();
    let displays: Vec<Option<String>> = members.iter().map(|m| m.display.clone()).collect();
    sqlx::query(
        "DELETE FROM invite_sync_scim_group_members
         WHERE group_id = $1 AND NOT (user_id = ANY($2))",
    )
    .bind(group_id)
    .bind(&ids)
    .execute(&mut *conn)
    .await
    .map_err(refused)?;
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO invite_sync_scim_group_members (group_id, user_id, display)
         SELECT $1, m.user_id, m.display
         FROM UNNEST($2::uuid[], $3::text[]) WITH ORDINALITY AS m (user_id, display, at)
         ORDER BY m.at
         ON CONFLICT (group_id, user_id) DO UPDATE SET display = EXCLUDED.display
         WHERE invite_sync_scim_group_members.display IS DISTINCT FROM EXCLUDED.display",
    )
    .bind(group_id)
    .bind(&ids)
    .bind(&displays)
    .execute(&mut *conn)
    .await
    .map_err(refused)?;
    Ok(())
}

/// How many groups `target` has.
pub async fn count(db: impl PgExecutor<'_>, target: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM invite_sync_scim_groups WHERE target = $1")
        .bind(target)
        .fetch_one(db)
        .await
}

/// Where a scan in creation order goes on from: the last group it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl ScimGroup {
    pub fn scan_key(&self) -> ScanKey {
        ScanKey {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Which groups a search reads before its filter is applied.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    All,
    Id(Uuid),
    DisplayName(&'a str),
    ExternalId(&'a str),
}

/// Up to `limit` groups of `target` in creation order, narrowed by an indexed key when the
/// filter names one: those after `after`, skipping `offset` first.
pub async fn scan(
    db: impl PgExecutor<'_>,
    target: &str,
    which: Candidates<'_>,
    after: Option<ScanKey>,
    offset: i64,
    limit: i64,
) -> Result<Vec<ScimGroup>, sqlx::Error> {
    let (id, display_name, external_id) = match which {
        Candidates::All => (None, None, None),
        Candidates::Id(id) => (Some(id), None, None),
        Candidates::DisplayName(name) => (None, Some(name), None),
        Candidates::ExternalId(external) => (None, None, Some(external)),
    };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invite_sync_scim_groups
         WHERE target = $1
           AND ($2::uuid IS NULL OR id = $2)
           AND ($3::text IS NULL OR lower(display_name) = lower($3))
           AND ($4::text IS NULL OR external_id = $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid))
         ORDER BY created_at, id
         OFFSET $7 LIMIT $8"
    ))
    .bind(target)
    .bind(id)
    .bind(display_name)
    .bind(external_id)
    .bind(after.map(|key| key.created_at))
    .bind(after.map(|key| key.id))
    .bind(offset)
    .bind(limit)
    .fetch_all(db)
    .await
}
