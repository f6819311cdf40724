//! Writing the membership roster: batched upserts keyed by (case-insensitive address,
//! organization as written), written only where a value differs, and removals. The CSV
//! import and the roster webhook write through here, under the same rule of ownership as the
//! instance roster ([`super::roster`]): a row whose `source` is SCIM's is left alone.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::desired::quote_relation;
use super::roster::{may_write, on_conflict, Counts, RelationKind, Removed};
use crate::domain::MembershipRow;

/// Which optional columns a writer sets on an existing row (new rows get every column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipColumns {
    pub role: bool,
    pub public_metadata: bool,
    pub private_metadata: bool,
    pub redirect_url: bool,
    pub expires_in_days: bool,
    pub notify: bool,
    pub not_before: bool,
    pub source: bool,
}

impl MembershipColumns {
    pub const ALL: MembershipColumns = MembershipColumns {
        role: true,
        public_metadata: true,
        private_metadata: true,
        redirect_url: true,
        expires_in_days: true,
        notify: true,
        not_before: true,
        source: true,
    };
}

/// The rows of one upsert, column by column, as `UNNEST` takes them.
#[derive(Debug, Default)]
pub struct MembershipBatch {
    email: Vec<String>,
    organization: Vec<String>,
    role: Vec<Option<String>>,
    public_metadata: Vec<Value>,
    private_metadata: Vec<Value>,
    redirect_url: Vec<Option<String>>,
    expires_in_days: Vec<Option<i32>>,
    notify: Vec<Option<bool>>,
    not_before: Vec<Option<DateTime<Utc>>>,
    source: Vec<Option<String>>,
}

impl MembershipBatch {
    /// Adds a row. Two rows of one batch must not share an (address, organization) key:
    /// PostgreSQL refuses an upsert that would write one row twice.
    pub fn push(&mut self, row: MembershipRow) {
        self.email.push(row.email);
        self.organization.push(row.organization);
        self.role.push(row.role);
        self.public_metadata.push(row.public_metadata);
        self.private_metadata.push(row.private_metadata);
        self.redirect_url.push(row.redirect_url);
        self.expires_in_days.push(row.expires_in_days);
        self.notify.push(row.notify);
        self.not_before.push(row.not_before);
        self.source.push(row.source);
    }

    pub fn len(&self) -> usize {
        self.email.len()
    }

    pub fn is_empty(&self) -> bool {
        self.email.is_empty()
    }
}

/// A session-private table of the (address, organization) pairs an import named, for
/// `--replace`. A NULL organization stands for every organization of the address: a bad
/// line whose organization cannot be read still keeps that person's rows.
const SEEN: &str = "invite_sync_import_seen_memberships";

/// The key the table's unique index holds.
const KEY: &str = "(lower(btrim(email))), (btrim(organization))";

/// How a kept row is named in a report: `address in organization`.
fn named(email: &str, organization: &str) -> String {
    format!("{email} in {organization}")
}

pub struct MembershipWriter {
    relation: String,
    upsert: String,
}

impl MembershipWriter {
    pub fn new(relation: &str, columns: MembershipColumns) -> MembershipWriter {
        let relation = quote_relation(relation);
        let set: Vec<&str> = [
            (columns.role, "role"),
            (columns.public_metadata, "public_metadata"),
            (columns.private_metadata, "private_metadata"),
            (columns.redirect_url, "redirect_url"),
            (columns.expires_in_days, "expires_in_days"),
            (columns.notify, "notify"),
            (columns.not_before, "not_before"),
            (columns.source, "source"),
        ]
        .into_iter()
        .filter_map(|(set, column)| set.then_some(column))
        .collect();
        let on_conflict = on_conflict(&set);
        let upsert = format!(
            "INSERT INTO {relation} AS t
                 (email, organization, role, public_metadata, private_metadata, redirect_url,
                  expires_in_days, notify, not_before, source)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[],
                                  $6::text[], $7::integer[], $8::boolean[],
                                  $9::timestamptz[], $10::text[])
             ON CONFLICT ({KEY}) {on_conflict}
             RETURNING (t.xmax = 0) AS inserted"
        );
        MembershipWriter { relation, upsert }
    }

    /// Writes a batch and empties it. Rows RETURNING does not name were left as they were:
    /// unchanged, or SCIM's and this write not in SCIM's name.
    pub async fn upsert(
        &self,
        conn: &mut PgConnection,
        batch: &mut MembershipBatch,
    ) -> Result<Counts, sqlx::Error> {
        if batch.is_empty() {
            return Ok(Counts::default());
        }
        let returned: Vec<bool> = sqlx::query_scalar(&self.upsert)
            .bind(&batch.email)
            .bind(&batch.organization)
            .bind(&batch.role)
            .bind(&batch.public_metadata)
            .bind(&batch.private_metadata)
            .bind(&batch.redirect_url)
            .bind(&batch.expires_in_days)
            .bind(&batch.notify)
            .bind(&batch.not_before)
            .bind(&batch.source)
            .fetch_all(&mut *conn)
            .await?;
        let kept_scim = if returned.len() < batch.len() {
            self.scim_rows_named(conn, &batch.email, &batch.organization, &batch.source)
                .await?
        } else {
            Vec::new()
        };
        let inserted = returned.iter().filter(|inserted| **inserted).count() as u64;
        let counts = Counts {
            inserted,
            updated: returned.len() as u64 - inserted,
            unchanged: ((batch.len() - returned.len()) as u64)
                .saturating_sub(kept_scim.len() as u64),
            kept_scim,
        };
        *batch = MembershipBatch::default();
        Ok(counts)
    }

    /// Of the rows these writes named, those SCIM owns where the write was not in its name,
    /// each as `address in organization`.
    async fn scim_rows_named(
        &self,
        conn: &mut PgConnection,
        emails: &[String],
        organizations: &[String],
        sources: &[Option<String>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT DISTINCT lower(btrim(t.email)), btrim(t.organization) FROM {} AS t
             JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS w (email, organization, source)
               ON lower(btrim(t.email)) = lower(btrim(w.email))
              AND btrim(t.organization) = btrim(w.organization)
             WHERE NOT {}
             ORDER BY 1, 2",
            self.relation,
            may_write("t", "w.source"),
        ))
        .bind(emails)
        .bind(organizations)
        .bind(sources)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .map(|(email, organization)| named(email, organization))
            .collect())
    }

    /// Deletes the rows of these (normalised address, organization) pairs, except those
    /// SCIM owns.
    pub async fn delete(
        &self,
        conn: &mut PgConnection,
        pairs: &[(String, String)],
    ) -> Result<Removed, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(Removed::default());
        }
        let (emails, organizations): (Vec<String>, Vec<String>) = pairs.iter().cloned().unzip();
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} AS t
             USING UNNEST($1::text[], $2::text[]) AS w (email, organization)
             WHERE lower(btrim(t.email)) = w.email AND btrim(t.organization) = w.organization
               AND {}",
            self.relation,
            may_write("t", "NULL"),
        ))
        .bind(&emails)
        .bind(&organizations)
        .execute(&mut *conn)
        .await?;
        let none: Vec<Option<String>> = vec![None; pairs.len()];
        let kept_scim = self
            .scim_rows_named(conn, &emails, &organizations, &none)
            .await?;
        Ok(Removed {
            deleted: deleted.rows_affected(),
            kept_scim,
        })
    }

    /// The membership roster's size before a replacing import, and a place to note the
    /// pairs the file names.
    pub async fn start_replace(&self, conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE {SEEN} (email text NOT NULL, organization text) \
             ON COMMIT DROP"
        ))
        .execute(&mut *conn)
        .await?;
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", self.relation))
            .fetch_one(&mut *conn)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Notes (normalised address, organization) pairs the import names, an organization of
    /// `None` keeping every row of the address, and empties the list.
    pub async fn note_seen(
        &self,
        conn: &mut PgConnection,
        pairs: &mut Vec<(String, Option<String>)>,
    ) -> Result<(), sqlx::Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        let (emails, organizations): (Vec<String>, Vec<Option<String>>) =
            std::mem::take(pairs).into_iter().unzip();
        sqlx::query(&format!(
            "INSERT INTO {SEEN} (email, organization)
             SELECT * FROM UNNEST($1::text[], $2::text[])"
        ))
        .bind(&emails)
        .bind(&organizations)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Deletes the membership roster rows whose pair the import did not name, except those
    /// SCIM owns. Returns (deleted, SCIM rows kept).
    pub async fn delete_unseen(&self, conn: &mut PgConnection) -> Result<(u64, u64), sqlx::Error> {
        let unseen = format!(
            "NOT EXISTS (SELECT 1 FROM {SEEN} AS s WHERE s.email = lower(btrim(t.email))
                           AND (s.organization IS NULL
                                OR s.organization = btrim(t.organization)))"
        );
        let kept: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} AS t WHERE {unseen} AND NOT {}",
            self.relation,
            may_write("t", "NULL"),
        ))
        .fetch_one(&mut *conn)
        .await?;
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} AS t WHERE {unseen} AND {}",
            self.relation,
            may_write("t", "NULL"),
        ))
        .execute(&mut *conn)
        .await?;
        Ok((deleted.rows_affected(), u64::try_from(kept).unwrap_or(0)))
    }
}

/// Why the membership roster `relation` cannot be written, or `None` when it is a table.
pub fn not_writable_reason(relation: &str, kind: RelationKind) -> Option<String> {
    match kind {
        RelationKind::Table => None,
        RelationKind::View => Some(format!(
            "source.memberships_relation \"{relation}\" is a view; importing memberships and \
             the roster webhook's memberships write rows, which needs a table: write to the \
             table the view reads (or point source.memberships_relation at a table)"
        )),
        RelationKind::Missing => Some(format!(
            "source.memberships_relation \"{relation}\" does not exist: run `invite-sync \
             migrate` to create desired_memberships, or create the relation it names"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_writer_keys_on_address_and_organization_and_carries_the_rule_of_ownership() {
        let rule = may_write("t", "EXCLUDED.source");
        let writer = MembershipWriter::new("desired_memberships", MembershipColumns::ALL);
        assert!(writer.upsert.contains(&rule), "{}", writer.upsert);
        assert!(
            writer
                .upsert
                .contains("ON CONFLICT ((lower(btrim(email))), (btrim(organization)))"),
            "{}",
            writer.upsert
        );
        let none = MembershipColumns {
            role: false,
            public_metadata: false,
            private_metadata: false,
            redirect_url: false,
            expires_in_days: false,
            notify: false,
            not_before: false,
            source: false,
        };
        let writer = MembershipWriter::new("desired_memberships", none);
        assert!(writer.upsert.contains("WHERE false"), "{}", writer.upsert);
        let role_only = MembershipColumns { role: true, ..none };
        let writer = MembershipWriter::new("desired_memberships", role_only);
        assert!(
            writer.upsert.contains("SET role = EXCLUDED.role WHERE"),
            "{}",
            writer.upsert
        );
    }

    #[test]
    fn a_view_or_a_missing_relation_is_refused_naming_the_membership_key() {
        assert_eq!(
            not_writable_reason("desired_memberships", RelationKind::Table),
            None
        );
        let view = not_writable_reason("hr.memberships", RelationKind::View).unwrap();
        assert!(
            view.starts_with("source.memberships_relation \"hr.memberships\" is a view"),
            "{view}"
        );
        let missing = not_writable_reason("nope", RelationKind::Missing).unwrap();
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
