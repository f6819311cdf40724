//! SCIM groups as membership roster rows (source `scim`): recomputed, inside a group's write,
//! for the people the write may have changed. Until the mapping of groups to organizations
//! (`scim.groups`) is in place, this writes nothing.

use sqlx::PgConnection;
use uuid::Uuid;

/// The configured mapping of groups to organizations and roles (`scim.groups`).
#[derive(Debug, Clone, Default)]
pub struct GroupMappings;

/// After a write of group `group_id` (created, replaced, patched or deleted), in the same
/// transaction: `previous_members` are the SCIM user ids the group held before the write
/// (empty for a create); its members now are in `invite_sync_scim_group_members` (none once
/// deleted).
pub async fn apply(
    _conn: &mut PgConnection,
    _mappings: &GroupMappings,
    _target: &str,
    _group_id: Uuid,
    _previous_members: &[Uuid],
) -> Result<(), sqlx::Error> {
    Ok(())
}

/// After a write of SCIM user `user_id` (created, replaced, patched or deleted), in the same
/// transaction, after its instance roster row was written: `previous_email` is the roster
/// address it had before the write (if any); its row in `invite_sync_scim_users` is the one
/// now (none once deleted, and then its group memberships are gone too).
pub async fn user_written(
    _conn: &mut PgConnection,
    _mappings: &GroupMappings,
    _target: &str,
    _user_id: Uuid,
    _previous_email: Option<&str>,
) -> Result<(), sqlx::Error> {
    Ok(())
}
