//! SCIM groups as membership roster rows (source `scim`), and what a person in a mapped group
//! gets from the instance roster.
//!
//! What the rows should be is worked out afresh for the people a write may have changed,
//! inside that write's transaction: a group's write (its members before and after it), a
//! user's write (their address before and after it), and once at start for everyone, so a
//! changed `scim.groups` takes effect. For each of those people:
//!
//! - the membership roster holds one SCIM row per organization a mapped group of theirs
//!   names, with the role of the highest-precedence mapping ([`crate::scim::groups_map`]);
//!   their other SCIM rows are deleted, so a removal flows through the cycle's guard as any
//!   removal does. Rows of other writers are neither deleted nor taken for SCIM's, except a
//!   row of the same address and organization, which SCIM takes over as it does an instance
//!   roster row (SCIM rows are SCIM's: [`super::roster::may_write`]);
//! - one email: a person in at least one mapped group gets their organization invitations
//!   and no instance invitation, so their SCIM row of the instance roster is withdrawn while
//!   they are in a mapped group; a person in no mapped group keeps it (active, with an
//!   address), as a SCIM user always has.
//!
//! Only users who are active and have an address count as members. People are locked
//! (`FOR NO KEY UPDATE`, in id order) before they are read, so a user's write and a group's
//! write that name one person take turns and the later one sees the earlier.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::desired::quote_relation;
use super::membership_roster::{MembershipColumns, MembershipWriter};
use super::roster::{Batch, Columns, Writer, SCIM_SOURCE};
use crate::domain::{DesiredInvitee, DesiredRow as InviteeRow, MembershipRow, RowDefaults};
use crate::scim::groups_map::{self, DesiredRow, GroupMapping, GroupName, Mappings};
use crate::scim::resource::Attributes;
use crate::scim::Mapping;

/// The configured mapping of groups to organizations and roles (`scim.groups`), with where
/// the rows go.
#[derive(Debug, Clone)]
pub struct GroupMappings {
    mappings: Mappings,
    /// `source.relation`: the instance roster.
    relation: String,
    /// `source.memberships_relation`: the membership roster.
    memberships_relation: String,
    /// How a SCIM user's attributes become their instance roster row's metadata; `None`
    /// when the SCIM endpoint is off (then an instance roster row is only ever withdrawn).
    users: Option<Mapping>,
}

impl GroupMappings {
    /// `mappings`: the checked `scim.groups` entries, in the order configured.
    pub fn new(
        mappings: Vec<GroupMapping>,
        relation: &str,
        memberships_relation: &str,
        users: Option<Mapping>,
    ) -> GroupMappings {
        GroupMappings {
            mappings: Mappings::new(mappings),
            relation: relation.to_owned(),
            memberships_relation: memberships_relation.to_owned(),
            users,
        }
    }

    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }
}

/// What a recompute changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recomputed {
    /// People whose rows were worked out.
    pub people: u64,
    /// Membership roster rows written (new, or a role changed).
    pub written: u64,
    /// Membership roster rows deleted.
    pub deleted: u64,
    /// Instance roster rows withdrawn (the person is in a mapped group).
    pub withdrawn: u64,
    /// Instance roster rows written back (the person left every mapped group).
    pub restored: u64,
}

/// After a write of group `group_id` (created, replaced, patched or deleted), in the same
/// transaction: `previous_members` are the SCIM user ids the group held before the write
/// (empty for a create); its members now are in `invite_sync_scim_group_members` (none once
/// deleted). Recomputes the previous and the current members.
pub async fn apply(
    conn: &mut PgConnection,
    mappings: &GroupMappings,
    target: &str,
    group_id: Uuid,
    previous_members: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut users: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM invite_sync_scim_group_members WHERE group_id = $1",
    )
    .bind(group_id)
    .fetch_all(&mut *conn)
    .await?;
    users.extend_from_slice(previous_members);
    let done = recompute(conn, mappings, target, Scope::Users(users), &[]).await?;
    log(group_id, "group", &done);
    Ok(())
}

/// After a write of SCIM user `user_id` (created, replaced, patched or deleted), in the same
/// transaction, after its instance roster row was written: `previous_email` is the roster
/// address it had before the write (if any); its row in `invite_sync_scim_users` is the one
/// now (none once deleted, and then its group memberships are gone too). The SCIM rows of
/// the previous address go unless the user still has it.
pub async fn user_written(
    conn: &mut PgConnection,
    mappings: &GroupMappings,
    target: &str,
    user_id: Uuid,
    previous_email: Option<&str>,
) -> Result<(), sqlx::Error> {
    let previous: Vec<String> = previous_email.map(normalise).into_iter().collect();
    let done = recompute(
        conn,
        mappings,
        target,
        Scope::Users(vec![user_id]),
        &previous,
    )
    .await?;
    log(user_id, "user", &done);
    Ok(())
}

/// Every SCIM user and every SCIM row of the membership roster, at start: a changed
/// `scim.groups` re-maps everyone, in one transaction.
pub async fn recompute_all(
    conn: &mut PgConnection,
    mappings: &GroupMappings,
    target: &str,
) -> Result<Recomputed, sqlx::Error> {
    recompute(conn, mappings, target, Scope::All, &[]).await
}

/// [`recompute_all`] in a transaction of its own, logged: what `invite-sync run` does once
/// at start, before it serves SCIM requests.
pub async fn recompute_at_start(
    pool: &sqlx::PgPool,
    mappings: &GroupMappings,
    target: &str,
) -> Result<Recomputed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = recompute_all(&mut tx, mappings, target).await?;
    tx.commit().await?;
    tracing::info!(
        mappings = mappings.mappings.entries().len(),
        people = done.people,
        memberships_written = done.written,
        memberships_deleted = done.deleted,
        instance_rows_withdrawn = done.withdrawn,
        instance_rows_restored = done.restored,
        "SCIM group memberships recomputed for scim.groups"
    );
    Ok(done)
}

fn log(id: Uuid, what: &str, done: &Recomputed) {
    if done.written + done.deleted + done.withdrawn + done.restored > 0 {
        tracing::info!(
            %id,
            people = done.people,
            memberships_written = done.written,
            memberships_deleted = done.deleted,
            instance_rows_withdrawn = done.withdrawn,
            instance_rows_restored = done.restored,
            "SCIM {what} write: group memberships recomputed"
        );
    }
}

fn normalise(email: &str) -> String {
    email.trim().to_lowercase()
}

enum Scope {
    All,
    Users(Vec<Uuid>),
}

/// A SCIM user as the recompute reads it.
#[derive(sqlx::FromRow)]
struct Person {
    id: Uuid,
    email: Option<String>,
    active: bool,
    attributes: Value,
}

impl Person {
    /// The address the person counts under as a member: active, with an address.
    fn member_email(&self) -> Option<String> {
        self.email.as_deref().filter(|_| self.active).map(normalise)
    }
}

/// A (group, member) pair.
#[derive(sqlx::FromRow)]
struct Membership {
    group_id: Uuid,
    display_name: String,
    external_id: Option<String>,
    user_id: Uuid,
}

async fn recompute(
    conn: &mut PgConnection,
    mappings: &GroupMappings,
    target: &str,
    scope: Scope,
    clear: &[String],
) -> Result<Recomputed, sqlx::Error> {
    let all = matches!(scope, Scope::All);
    let ids: Option<Vec<Uuid>> = match scope {
        Scope::All => None,
        Scope::Users(mut ids) => {
            ids.sort_unstable();
            ids.dedup();
            Some(ids)
        }
    };
    let people: Vec<Person> = sqlx::query_as(
        "SELECT id, email, active, attributes FROM invite_sync_scim_users
         WHERE $1::uuid[] IS NULL OR id = ANY($1)
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = people.iter().map(|p| p.id).collect();
    let memberships: Vec<Membership> = sqlx::query_as(
        "SELECT g.id AS group_id, g.display_name, g.external_id, m.user_id
         FROM invite_sync_scim_group_members m
         JOIN invite_sync_scim_groups g ON g.id = m.group_id
         WHERE g.target = $1 AND m.user_id = ANY($2)
         ORDER BY g.id, m.user_id",
    )
    .bind(target)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;

    let by_id: HashMap<Uuid, &Person> = people.iter().map(|p| (p.id, p)).collect();
    // Each group once, with its members among these people.
    let mut groups: BTreeMap<Uuid, (GroupName<'_>, Vec<Uuid>)> = BTreeMap::new();
    for m in &memberships {
        groups
            .entry(m.group_id)
            .or_insert_with(|| {
                (
                    GroupName {
                        display_name: &m.display_name,
                        external_id: m.external_id.as_deref(),
                    },
                    Vec::new(),
                )
            })
            .1
            .push(m.user_id);
    }
    let in_mapped_group: BTreeSet<Uuid> = groups
        .values()
        .filter(|(name, _)| mappings.mappings.maps(name))
        .flat_map(|(_, members)| members.iter().copied())
        .collect();
    let member_emails: Vec<(GroupName<'_>, Vec<String>)> = groups
        .values()
        .map(|(name, members)| {
            let emails = members
                .iter()
                .filter_map(|id| by_id.get(id)?.member_email())
                .collect();
            (name.clone(), emails)
        })
        .collect();
    let desired = groups_map::desired(
        &mappings.mappings,
        member_emails
            .iter()
            .map(|(name, emails)| (name.clone(), emails.iter().map(String::as_str))),
    );

    let mut done = Recomputed {
        people: people.len() as u64,
        ..Recomputed::default()
    };
    let (written, deleted) =
        write_memberships(conn, mappings, &people, clear, &desired, all).await?;
    done.written = written;
    done.deleted = deleted;
    let (withdrawn, restored) =
        write_instance_rows(conn, mappings, &people, &in_mapped_group).await?;
    done.withdrawn = withdrawn;
    done.restored = restored;
    Ok(done)
}

/// Makes the SCIM rows of the membership roster for these people (and the `clear`ed
/// addresses; with `Scope::All`, every SCIM row) equal `desired`. Returns (written, deleted).
async fn write_memberships(
    conn: &mut PgConnection,
    mappings: &GroupMappings,
    people: &[Person],
    clear: &[String],
    desired: &[DesiredRow],
    all: bool,
) -> Result<(u64, u64), sqlx::Error> {
    let mut emails: Vec<String> = people
        .iter()
        .filter_map(|p| p.email.as_deref().map(normalise))
        .collect();
    emails.extend_from_slice(clear);
    emails.sort_unstable();
    emails.dedup();
    if emails.is_empty() && !all {
        return Ok((0, 0));
    }
    let relation = quote_relation(&mappings.memberships_relation);
    // With every person in scope, every SCIM row is: one whose user is gone goes too.
    let existing: Vec<(String, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT lower(btrim(email)), btrim(organization), NULLIF(btrim(role), '')
         FROM {relation}
         WHERE source = '{SCIM_SOURCE}' AND ($2 OR lower(btrim(email)) = ANY($1))"
    ))
    .bind(&emails)
    .bind(all)
    .fetch_all(&mut *conn)
    .await?;
    let wanted: BTreeMap<(&str, &str), &Option<String>> = desired
        .iter()
        .map(|r| ((r.email.as_str(), r.organization.as_str()), &r.role))
        .collect();
    let held: BTreeMap<(&str, &str), &Option<String>> = existing
        .iter()
        .map(|(email, organization, role)| ((email.as_str(), organization.as_str()), role))
        .collect();
    let gone: Vec<(String, String)> = held
        .keys()
        .filter(|key| !wanted.contains_key(key))
        .map(|(email, organization)| ((*email).to_owned(), (*organization).to_owned()))
        .collect();
    let mut deleted = 0;
    if !gone.is_empty() {
        let (emails, organizations): (Vec<String>, Vec<String>) = gone.into_iter().unzip();
        deleted = sqlx::query(&format!(
            "DELETE FROM {relation} AS t
             USING UNNEST($1::text[], $2::text[]) AS w (email, organization)
             WHERE lower(btrim(t.email)) = w.email AND btrim(t.organization) = w.organization
               AND t.source = '{SCIM_SOURCE}'"
        ))
        .bind(&emails)
        .bind(&organizations)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    let writer = MembershipWriter::new(
        &mappings.memberships_relation,
        MembershipColumns {
            role: true,
            source: true,
            public_metadata: false,
            private_metadata: false,
            redirect_url: false,
            expires_in_days: false,
            notify: false,
            not_before: false,
        },
    );
    let mut batch = super::membership_roster::MembershipBatch::default();
    for row in desired {
        let key = (row.email.as_str(), row.organization.as_str());
        if held.get(&key) == Some(&&row.role) {
            continue;
        }
        batch.push(MembershipRow {
            role: row.role.clone(),
            source: Some(SCIM_SOURCE.to_owned()),
            ..MembershipRow::new(row.email.clone(), row.organization.clone())
        });
    }
    let counts = writer.upsert(conn, &mut batch).await?;
    Ok((counts.inserted + counts.updated, deleted))
}

/// One email per person: withdraws the SCIM row of the instance roster of a person in a
/// mapped group, and writes it back for one in none (active, with an address Clerk can
/// invite). Returns (withdrawn, restored).
async fn write_instance_rows(
    conn: &mut PgConnection,
    mappings: &GroupMappings,
    people: &[Person],
    in_mapped_group: &BTreeSet<Uuid>,
) -> Result<(u64, u64), sqlx::Error> {
    let writer = Writer::new(
        &mappings.relation,
        Columns {
            public_metadata: true,
            source: true,
            redirect_url: false,
            notify: false,
            expires_in_days: false,
            template_slug: false,
            not_before: false,
        },
    );
    let mut withdraw: Vec<String> = Vec::new();
    let mut batch = Batch::default();
    for person in people {
        let Some(email) = person.member_email() else {
            continue;
        };
        if in_mapped_group.contains(&person.id) {
            withdraw.push(email);
            continue;
        }
        let Some(users) = &mappings.users else {
            continue;
        };
        let Value::Object(attributes) = &person.attributes else {
            continue;
        };
        if let Some(row) = instance_row(users, attributes, &email) {
            batch.push(row);
        }
    }
    let mut withdrawn = 0;
    if !withdraw.is_empty() {
        withdrawn = sqlx::query(&format!(
            "DELETE FROM {} WHERE lower(btrim(email)) = ANY($1) AND source = '{SCIM_SOURCE}'",
            quote_relation(&mappings.relation)
        ))
        .bind(&withdraw)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    let restored = if batch.is_empty() {
        0
    } else {
        writer.upsert(conn, &mut batch).await?.inserted
    };
    Ok((withdrawn, restored))
}

/// The instance roster row a SCIM user in no mapped group has, as the Users endpoint writes
/// it; `None` when it would not be written (an address Clerk cannot invite).
fn instance_row(users: &Mapping, attributes: &Attributes, email: &str) -> Option<InviteeRow> {
    let entry = users.entry(attributes);
    let address = entry.email.filter(|e| e.as_str() == email)?;
    let row = InviteeRow {
        public_metadata: Value::Object(entry.public_metadata),
        source: Some(SCIM_SOURCE.to_owned()),
        ..InviteeRow::new(address.as_str())
    };
    DesiredInvitee::from_row(&row, &RowDefaults::default()).ok()?;
    Some(row)
}

/// A stored SCIM group no `scim.groups` entry names: ignored, and shown by `config check`
/// and `status` (identity providers push every group assigned to the application).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnmappedGroup {
    pub id: Uuid,
    pub display_name: String,
    pub external_id: Option<String>,
    /// Its members (SCIM users, active or not).
    pub members: i64,
}

/// The groups of `target` no mapping names, by display name.
pub async fn unmapped(
    db: impl sqlx::PgExecutor<'_>,
    mappings: &Mappings,
    target: &str,
) -> Result<Vec<UnmappedGroup>, sqlx::Error> {
    let groups: Vec<(Uuid, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT g.id, g.display_name, g.external_id,
                (SELECT count(*) FROM invite_sync_scim_group_members m WHERE m.group_id = g.id)
         FROM invite_sync_scim_groups g
         WHERE g.target = $1
         ORDER BY lower(g.display_name), g.id",
    )
    .bind(target)
    .fetch_all(db)
    .await?;
    Ok(groups
        .into_iter()
        .filter(|(_, display_name, external_id, _)| {
            !mappings.maps(&GroupName {
                display_name,
                external_id: external_id.as_deref(),
            })
        })
        .map(|(id, display_name, external_id, members)| UnmappedGroup {
            id,
            display_name,
            external_id,
            members,
        })
        .collect())
}

/// How `config check` and `status` write the unmapped groups: a line each, or nothing.
pub fn unmapped_text(groups: &[UnmappedGroup]) -> Vec<String> {
    if groups.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "SCIM groups no scim.groups entry names (ignored): {}",
        groups.len()
    )];
    for group in groups {
        let external = group
            .external_id
            .as_deref()
            .map(|id| format!(", externalId {id:?}"))
            .unwrap_or_default();
        lines.push(format!(
            "  {:?}{external}: {} member{}",
            group.display_name,
            group.members,
            if group.members == 1 { "" } else { "s" }
        ));
    }
    lines
}
