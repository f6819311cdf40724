//! Writing the roster: batched upserts by case-insensitive email (an existing row is written
//! only when a value differs, so its `updated_at` keeps meaning something) and removals.
//! The CSV import and the roster webhook both write through here.

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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// A session-private table of the addresses an import named, for `--replace`.
const SEEN: &str = "invite_sync_import_seen";

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
        let on_conflict = if set.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            let list = |prefix: &str| {
                set.iter()
                    .map(|c| format!("{prefix}{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                set.iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                list("t."),
                list("EXCLUDED."),
            )
        };
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

    /// Writes a batch and empties it. Rows RETURNING does not name were left as they were.
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
        let inserted = returned.iter().filter(|inserted| **inserted).count() as u64;
        let counts = Counts {
            inserted,
            updated: returned.len() as u64 - inserted,
            unchanged: (batch.len() - returned.len()) as u64,
        };
        batch.clear();
        Ok(counts)
    }

    /// Deletes the rows of these normalised addresses.
    pub async fn delete(
        &self,
        conn: &mut PgConnection,
        emails: &[String],
    ) -> Result<u64, sqlx::Error> {
        if emails.is_empty() {
            return Ok(0);
        }
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} WHERE lower(btrim(email)) = ANY($1)",
            self.relation
        ))
        .bind(emails)
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

    /// Deletes the roster rows whose address the import did not name.
    pub async fn delete_unseen(&self, conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} AS r
             WHERE NOT EXISTS (SELECT 1 FROM {SEEN} AS s WHERE s.email = lower(btrim(r.email)))",
            self.relation
        ))
        .execute(&mut *conn)
        .await?;
        Ok(deleted.rows_affected())
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
