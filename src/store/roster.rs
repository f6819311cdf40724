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
    /// Rows the SCIM endpoint manages, left as they were (a writer keeping them only).
    pub kept_scim: u64,
}

/// A session-private table of the addresses an import named, for `--replace`.
const SEEN: &str = "invite_sync_import_seen";

/// The `source` of the rows the SCIM endpoint manages. Other writers leave them alone: the
/// import does not overwrite or delete them, the roster webhook is refused on them.
pub const SCIM_SOURCE: &str = "scim";

pub struct Writer {
    relation: String,
    upsert: String,
    /// Leave the rows of the SCIM endpoint as they are (the CSV import).
    keep_scim: bool,
}

impl Writer {
    pub fn new(relation: &str, columns: Columns) -> Writer {
        Writer::build(relation, columns, false)
    }

    /// A writer that never changes or deletes a row whose source is [`SCIM_SOURCE`].
    pub fn keeping_scim_rows(relation: &str, columns: Columns) -> Writer {
        Writer::build(relation, columns, true)
    }

    fn build(relation: &str, columns: Columns, keep_scim: bool) -> Writer {
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
                "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({}){}",
                set.iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                list("t."),
                list("EXCLUDED."),
                if keep_scim {
                    format!(" AND t.source IS DISTINCT FROM '{SCIM_SOURCE}'")
                } else {
                    String::new()
                },
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
        Writer {
            relation,
            upsert,
            keep_scim,
        }
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
        let kept_scim = if self.keep_scim {
            self.managed_by_scim(conn, &batch.email).await?.len() as u64
        } else {
            0
        };
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
            unchanged: (batch.len() - returned.len()) as u64 - kept_scim,
            kept_scim,
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

    /// Of these normalised addresses, those whose row the SCIM endpoint manages.
    pub async fn managed_by_scim(
        &self,
        conn: &mut PgConnection,
        emails: &[String],
    ) -> Result<Vec<String>, sqlx::Error> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(&format!(
            "SELECT lower(btrim(email)) FROM {} WHERE source = '{SCIM_SOURCE}'
               AND lower(btrim(email)) = ANY($1) ORDER BY 1",
            self.relation
        ))
        .bind(emails)
        .fetch_all(&mut *conn)
        .await
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

    /// Deletes the roster rows whose address the import did not name, except those the SCIM
    /// endpoint manages when this writer keeps them. Returns (deleted, SCIM rows kept).
    pub async fn delete_unseen(&self, conn: &mut PgConnection) -> Result<(u64, u64), sqlx::Error> {
        let unseen =
            format!("NOT EXISTS (SELECT 1 FROM {SEEN} AS s WHERE s.email = lower(btrim(r.email)))");
        let kept: i64 = if self.keep_scim {
            sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {} AS r WHERE {unseen} AND r.source = '{SCIM_SOURCE}'",
                self.relation
            ))
            .fetch_one(&mut *conn)
            .await?
        } else {
            0
        };
        let keep = if self.keep_scim {
            format!(" AND r.source IS DISTINCT FROM '{SCIM_SOURCE}'")
        } else {
            String::new()
        };
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} AS r WHERE {unseen}{keep}",
            self.relation
        ))
        .execute(&mut *conn)
        .await?;
        Ok((deleted.rows_affected(), u64::try_from(kept).unwrap_or(0)))
    }
}
