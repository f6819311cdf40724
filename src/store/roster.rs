//! Writing the roster: batched upserts by case-insensitive email (an existing row is written
//! only when a value differs, so its `updated_at` keeps meaning something) and removals.
//! The CSV import, the roster webhook and the SCIM endpoint all write through here, under
//! one rule of ownership ([`may_write`]) carried by every statement that writes.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::desired::quote_relation;
use crate::domain::DesiredRow;

/// Which optional columns a writer sets on an existing row (new rows get every column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub public_metadata: bool,
    pub redirect_url: bool,
    pub notify: bool,
    pub expires_in_days: bool,
    pub template_slug: bool,
    pub not_before: bool,
    pub source: bool,
}

impl Columns {
    pub const ALL: Columns = Columns {
        public_metadata: true,
        redirect_url: true,
        notify: true,
        expires_in_days: true,
        template_slug: true,
        not_before: true,
        source: true,
    };
}

/// The rows of one upsert, column by column, as `UNNEST` takes them.
#[derive(Debug, Default)]
pub struct Batch {
    email: Vec<String>,
    public_metadata: Vec<Value>,
    redirect_url: Vec<Option<String>>,
    notify: Vec<Option<bool>>,
    expires_in_days: Vec<Option<i32>>,
    template_slug: Vec<Option<String>>,
    not_before: Vec<Option<DateTime<Utc>>>,
    source: Vec<Option<String>>,
}

impl Batch {
    pub fn push(&mut self, row: DesiredRow) {
        self.email.push(row.email);
        self.public_metadata.push(row.public_metadata);
        self.redirect_url.push(row.redirect_url);
        self.notify.push(row.notify);
        self.expires_in_days.push(row.expires_in_days);
        self.template_slug.push(row.template_slug);
        self.not_before.push(row.not_before);
        self.source.push(row.source);
    }

    pub fn len(&self) -> usize {
        self.email.len()
    }

    pub fn is_empty(&self) -> bool {
        self.email.is_empty()
    }

    fn clear(&mut self) {
        *self = Batch::default();
    }
}

/// What an upsert did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// The addresses (normalised) of the rows the SCIM endpoint owns that this write, not in
    /// SCIM's name, named and left as they were.
    pub kept_scim: Vec<String>,
}

/// What a removal did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub deleted: u64,
    /// The addresses (normalised) named whose rows the SCIM endpoint owns: not deleted.
    pub kept_scim: Vec<String>,
}

/// A session-private table of the addresses an import named, for `--replace`.
const SEEN: &str = "invite_sync_import_seen";

/// The `source` of the rows the SCIM endpoint owns.
pub const SCIM_SOURCE: &str = "scim";

/// Whether a `source` given by a writer other than the SCIM endpoint (a webhook payload, an
/// import's cell) names SCIM's, however it is spelled: such a writer may not claim SCIM's
/// rows, nor make rows that look like them.
pub fn names_scim(source: &str) -> bool {
    let significant = source
        .chars()
        .filter(|c| !(c.is_whitespace() || c.is_control() || is_invisible(*c)))
        .flat_map(char::to_lowercase);
    significant.eq(SCIM_SOURCE.chars())
}

/// Characters that show nothing: zero-width spaces and joiners, the word joiner, the BOM.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

/// The rule of ownership, and the one place it is written: a row whose source is
/// [`SCIM_SOURCE`] is written or deleted only by a write in SCIM's name (one whose own
/// source is SCIM's), while the SCIM endpoint may take over any other writer's row. `row` is
/// the existing row's alias, `incoming` the SQL of the writer's source (`NULL` for a
/// removal). Every statement that writes the roster carries it in its own WHERE, so a check
/// made before the write can never be overtaken by a concurrent writer.
pub(super) fn may_write(row: &str, incoming: &str) -> String {
    format!(
        "({row}.source IS DISTINCT FROM '{SCIM_SOURCE}' \
          OR {incoming} IS NOT DISTINCT FROM '{SCIM_SOURCE}')"
    )
}

/// The `ON CONFLICT` action of a roster writer's upsert that sets the columns `set`, only where
/// they differ and SCIM's rows are not overwritten by another writer. Even a writer that sets no
/// column takes the DO UPDATE path (with a WHERE that is never true): unlike DO NOTHING, it
/// locks every conflicting row until the transaction ends, so what the writer reports of them
/// afterwards holds.
pub(super) fn on_conflict(set: &[&str]) -> String {
    if set.is_empty() {
        return "DO UPDATE SET email = t.email WHERE false".to_owned();
    }
    let list = |prefix: &str| {
        set.iter()
            .map(|c| format!("{prefix}{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({}) AND {}",
        set.iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        list("t."),
        list("EXCLUDED."),
        may_write("t", "EXCLUDED.source"),
    )
}

pub struct Writer {
    relation: String,
    upsert: String,
}

impl Writer {
    pub fn new(relation: &str, columns: Columns) -> Writer {
        let relation = quote_relation(relation);
        let set: Vec<&str> = [
            (columns.public_metadata, "public_metadata"),
            (columns.redirect_url, "redirect_url"),
            (columns.notify, "notify"),
            (columns.expires_in_days, "expires_in_days"),
            (columns.template_slug, "template_slug"),
            (columns.not_before, "not_before"),
            (columns.source, "source"),
        ]
        .into_iter()
        .filter_map(|(set, column)| set.then_some(column))
        .collect();
        let on_conflict = on_conflict(&set);
        let upsert = format!(
            "INSERT INTO {relation} AS t
                 (email, public_metadata, redirect_url, notify, expires_in_days, template_slug,
                  not_before, source)
             SELECT * FROM UNNEST($1::text[], $2::jsonb[], $3::text[], $4::boolean[],
                                  $5::integer[], $6::text[], $7::timestamptz[], $8::text[])
             ON CONFLICT ((lower(btrim(email)))) {on_conflict}
             RETURNING (t.xmax = 0) AS inserted"
        );
        Writer { relation, upsert }
    }

    /// Writes a batch and empties it. Rows RETURNING does not name were left as they were:
    /// unchanged, or SCIM's and this write not in SCIM's name ([`may_write`]).
    pub async fn upsert(
        &self,
        conn: &mut PgConnection,
        batch: &mut Batch,
    ) -> Result<Counts, sqlx::Error> {
        if batch.is_empty() {
            return Ok(Counts::default());
        }
        let returned: Vec<bool> = sqlx::query_scalar(&self.upsert)
            .bind(&batch.email)
            .bind(&batch.public_metadata)
            .bind(&batch.redirect_url)
            .bind(&batch.notify)
            .bind(&batch.expires_in_days)
            .bind(&batch.template_slug)
            .bind(&batch.not_before)
            .bind(&batch.source)
            .fetch_all(&mut *conn)
            .await?;
        // The upsert locked every row it left as it was, so which of them are SCIM's cannot
        // change before the transaction ends.
        let kept_scim = if returned.len() < batch.len() {
            self.scim_rows_named(conn, &batch.email, &batch.source)
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
        batch.clear();
        Ok(counts)
    }

    /// Of the rows these writes named, those SCIM owns where the write was not in its name.
    async fn scim_rows_named(
        &self,
        conn: &mut PgConnection,
        emails: &[String],
        sources: &[Option<String>],
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(&format!(
            "SELECT DISTINCT lower(btrim(t.email)) FROM {} AS t
             JOIN UNNEST($1::text[], $2::text[]) AS w (email, source)
               ON lower(btrim(t.email)) = lower(btrim(w.email))
             WHERE NOT {}
             ORDER BY 1",
            self.relation,
            may_write("t", "w.source"),
        ))
        .bind(emails)
        .bind(sources)
        .fetch_all(&mut *conn)
        .await
    }

    /// Deletes the rows of these normalised addresses, except those SCIM owns.
    pub async fn delete(
        &self,
        conn: &mut PgConnection,
        emails: &[String],
    ) -> Result<Removed, sqlx::Error> {
        if emails.is_empty() {
            return Ok(Removed::default());
        }
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} AS t WHERE lower(btrim(t.email)) = ANY($1) AND {}",
            self.relation,
            may_write("t", "NULL"),
        ))
        .bind(emails)
        .execute(&mut *conn)
        .await?;
        let none: Vec<Option<String>> = vec![None; emails.len()];
        let kept_scim = self.scim_rows_named(conn, emails, &none).await?;
        Ok(Removed {
            deleted: deleted.rows_affected(),
            kept_scim,
        })
    }

    /// Deletes the row of this normalised address if the SCIM endpoint manages it.
    pub async fn delete_scim_row(
        &self,
        conn: &mut PgConnection,
        email: &str,
    ) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} WHERE lower(btrim(email)) = $1 AND source = '{SCIM_SOURCE}'",
            self.relation
        ))
        .bind(email)
        .execute(&mut *conn)
        .await?;
        Ok(deleted.rows_affected())
    }

    /// The roster's size before a replacing import, and a place to note its addresses.
    pub async fn start_replace(&self, conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE {SEEN} (email text PRIMARY KEY) ON COMMIT DROP"
        ))
        .execute(&mut *conn)
        .await?;
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", self.relation))
            .fetch_one(&mut *conn)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Notes normalised addresses the import names, and empties the list.
    pub async fn note_seen(
        &self,
        conn: &mut PgConnection,
        emails: &mut Vec<String>,
    ) -> Result<(), sqlx::Error> {
        if emails.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {SEEN} (email) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING"
        ))
        .bind(&*emails)
        .execute(&mut *conn)
        .await?;
        emails.clear();
        Ok(())
    }

    /// Deletes the roster rows whose address the import did not name, except those SCIM
    /// owns. Returns (deleted, SCIM rows kept).
    pub async fn delete_unseen(&self, conn: &mut PgConnection) -> Result<(u64, u64), sqlx::Error> {
        let unseen =
            format!("NOT EXISTS (SELECT 1 FROM {SEEN} AS s WHERE s.email = lower(btrim(t.email)))");
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

/// What `source.relation` names. Only a table can be written: `import` and the roster
/// webhook need one; a cycle only reads, so a view serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    /// A view, a materialized view, or anything else that cannot take the upserts.
    View,
    Missing,
}

pub async fn relation_kind(
    db: impl sqlx::PgExecutor<'_>,
    relation: &str,
) -> Result<RelationKind, sqlx::Error> {
    let kind = sqlx::query_scalar!(
        r#"SELECT c.relkind::text AS "kind!" FROM pg_class c WHERE c.oid = to_regclass($1)"#,
        crate::store::desired::quote_relation(relation),
    )
    .fetch_optional(db)
    .await?;
    Ok(match kind.as_deref() {
        None => RelationKind::Missing,
        Some("r" | "p" | "f") => RelationKind::Table,
        Some(_) => RelationKind::View,
    })
}

/// Why `relation` cannot be written, or `None` when it is a table.
pub fn not_writable_reason(relation: &str, kind: RelationKind) -> Option<String> {
    match kind {
        RelationKind::Table => None,
        RelationKind::View => Some(format!(
            "source.relation \"{relation}\" is a view; importing and the roster webhook write \
             rows, which needs a table: write to the table the view reads (or point \
             source.relation at a table)"
        )),
        RelationKind::Missing => Some(format!(
            "source.relation \"{relation}\" does not exist: run `invite-sync migrate` to create \
             desired_invitees, or create the relation it names"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_scims_source_names_it_and_nothing_else_does() {
        for spelling in [
            "scim",
            "SCIM",
            " scim",
            "scim\t",
            "S c I m",
            "\u{200b}scim\u{feff}",
            "sc\u{0}im",
        ] {
            assert!(names_scim(spelling), "{spelling:?}");
        }
        for other in ["", "hr", "scimitar", "scim2", "webhook", "s-cim"] {
            assert!(!names_scim(other), "{other:?}");
        }
    }

    #[test]
    fn every_writer_carries_the_rule_of_ownership_in_its_upsert() {
        let rule = may_write("t", "EXCLUDED.source");
        for columns in [
            Columns::ALL,
            Columns {
                public_metadata: true,
                redirect_url: false,
                notify: false,
                expires_in_days: false,
                template_slug: false,
                not_before: false,
                source: false,
            },
        ] {
            let writer = Writer::new("desired_invitees", columns);
            assert!(writer.upsert.contains(&rule), "{}", writer.upsert);
        }
        let none = Columns {
            public_metadata: false,
            redirect_url: false,
            notify: false,
            expires_in_days: false,
            template_slug: false,
            not_before: false,
            source: false,
        };
        let writer = Writer::new("desired_invitees", none);
        assert!(writer.upsert.contains("WHERE false"), "{}", writer.upsert);
    }
}
