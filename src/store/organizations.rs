//! The organizations the membership roster names, as invite-sync last read them from Clerk:
//! id, slug, name and room. `plan` and `status` read them without asking Clerk, and a full
//! organization's refusal is remembered, so it costs at most one refused call.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::KnownOrganization;

/// An organization as Clerk describes it (`GET /organizations/{id_or_slug}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub organization_id: &'a str,
    pub slug: Option<&'a str>,
    pub name: &'a str,
    /// 0 means unlimited.
    pub max_allowed_memberships: u32,
    pub members_count: u32,
    pub pending_invitations_count: u32,
}

fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn unsigned(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

struct Row {
    organization_id: String,
    slug: Option<String>,
    name: String,
    max_allowed_memberships: i32,
    members_count: i32,
    pending_invitations_count: i32,
    full_refused_at: Option<DateTime<Utc>>,
    seen_at: DateTime<Utc>,
}

impl From<Row> for KnownOrganization {
    fn from(row: Row) -> Self {
        KnownOrganization {
            organization_id: row.organization_id,
            slug: row.slug,
            name: row.name,
            max_allowed_memberships: unsigned(row.max_allowed_memberships),
            members_count: unsigned(row.members_count),
            pending_invitations_count: unsigned(row.pending_invitations_count),
            full_refused_at: row.full_refused_at,
            seen_at: row.seen_at,
        }
    }
}

/// Records organizations as just read from Clerk. A refusal for being full is kept until the
/// organization shows more room than it did (a member left, an invitation went, its limit
/// rose) or none at all: counts that claimed room before the refusal are not believed again,
/// so a full organization costs one refused call, not one a cycle.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    target: &str,
    organizations: &[Resolved<'_>],
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = organizations
        .iter()
        .map(|o| o.organization_id.to_owned())
        .collect();
    let slugs: Vec<Option<String>> = organizations
        .iter()
        .map(|o| o.slug.map(str::to_owned))
        .collect();
    let names: Vec<String> = organizations.iter().map(|o| o.name.to_owned()).collect();
    let max: Vec<i32> = organizations
        .iter()
        .map(|o| count(o.max_allowed_memberships))
        .collect();
    let members: Vec<i32> = organizations
        .iter()
        .map(|o| count(o.members_count))
        .collect();
    let pending: Vec<i32> = organizations
        .iter()
        .map(|o| count(o.pending_invitations_count))
        .collect();
    sqlx::query!(
        r#"INSERT INTO invite_sync_organizations AS o
             (target, organization_id, slug, name, max_allowed_memberships, members_count,
              pending_invitations_count, seen_at)
           SELECT $1, id, slug, name, max, members, pending, now()
           FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::int[])
                AS r(id, slug, name, max, members, pending)
           ON CONFLICT (target, organization_id) DO UPDATE
           SET slug = EXCLUDED.slug, name = EXCLUDED.name,
               max_allowed_memberships = EXCLUDED.max_allowed_memberships,
               members_count = EXCLUDED.members_count,
               pending_invitations_count = EXCLUDED.pending_invitations_count,
               seen_at = EXCLUDED.seen_at,
               full_refused_at = CASE
                   WHEN EXCLUDED.max_allowed_memberships = 0
                     OR EXCLUDED.max_allowed_memberships - EXCLUDED.members_count
                        - EXCLUDED.pending_invitations_count
                        > o.max_allowed_memberships - o.members_count - o.pending_invitations_count
                   THEN NULL
                   ELSE o.full_refused_at
               END"#,
        target,
        &ids,
        &slugs as &[Option<String>],
        &names,
        &max,
        &members,
        &pending,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that Clerk refused a create because the organization is full: it has no room,
/// whatever its counts said. Returns whether the organization was known.
pub async fn mark_full(
    db: impl PgExecutor<'_>,
    target: &str,
    organization_id: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE invite_sync_organizations SET full_refused_at = now()
           WHERE target = $1 AND organization_id = $2"#,
        target,
        organization_id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Every organization of the target, by id.
pub async fn all(
    db: impl PgExecutor<'_>,
    target: &str,
) -> Result<Vec<KnownOrganization>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT organization_id, slug, name, max_allowed_memberships, members_count,
                  pending_invitations_count, full_refused_at, seen_at
           FROM invite_sync_organizations WHERE target = $1
           ORDER BY organization_id"#,
        target,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(KnownOrganization::from).collect())
}

/// The organization a roster row names, by id (`org_...`) or by slug, as last read.
pub async fn find(
    db: impl PgExecutor<'_>,
    target: &str,
    id_or_slug: &str,
) -> Result<Option<KnownOrganization>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT organization_id, slug, name, max_allowed_memberships, members_count,
                  pending_invitations_count, full_refused_at, seen_at
           FROM invite_sync_organizations
           WHERE target = $1 AND (organization_id = $2 OR slug = $2)
           ORDER BY organization_id = $2 DESC, seen_at DESC
           LIMIT 1"#,
        target,
        id_or_slug,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(KnownOrganization::from))
}
