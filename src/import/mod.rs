//! The CSV roster import: the HR export path into the roster relation, or, for a file
//! whose header has an `organization` column, into the membership roster ([`memberships`]).
//!
//! A file is read as a stream of records and written in batches inside one transaction, so
//! it either lands whole (the bad lines left out only when asked) or not at all. Memory
//! stays bounded by a batch plus the set of addresses seen, which duplicate detection and
//! `--replace` need anyway.

mod columns;
mod memberships;
mod records;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufReader, Read};
use std::path::Path;

use sqlx::PgPool;

use crate::domain::{DesiredInvitee, DesiredRow, Email, RowDefaults};
use crate::store::roster::{self, Batch, Writer};
use columns::Layout;
use records::{Record, RecordError, Records};

/// Rows per upsert statement.
const BATCH_ROWS: usize = 1000;

/// The membership roster relation [`import_reader`] and [`import_path`] write a membership
/// file into; [`import_reader_with_memberships`] names another.
pub const DEFAULT_MEMBERSHIPS_RELATION: &str = "desired_memberships";

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The roster relation (`name` or `schema.name`).
    pub relation: String,
    /// The file is the whole roster: rows it does not name are deleted.
    pub replace: bool,
    /// Compute the summary, write nothing.
    pub dry_run: bool,
    /// Write the good lines even when some are bad.
    pub skip_invalid: bool,
    /// Allow `replace` to delete more than `max_delete_ratio` of the roster.
    pub force: bool,
    pub max_delete_ratio: f64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Rows that exist with exactly the file's values: not written at all.
    pub unchanged: u64,
    pub invalid: u64,
    /// Rows the SCIM endpoint manages that the file named or `--replace` would have
    /// deleted: left as they are.
    pub kept_scim: u64,
    pub problems: Vec<LineProblem>,
    /// The file was a membership roster file (its header has an `organization` column): the
    /// counts are of (address, organization) rows of the membership roster.
    pub memberships: bool,
    /// Whether the import was committed; false for a dry run and a refused import, whose
    /// counts say what would have happened.
    pub written: bool,
}

/// A bad line: the physical line its record starts on (the header is line 1), and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineProblem {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the roster file could not be read: {0}")]
    Io(#[from] io::Error),
    /// The file cannot be imported at all: no header, a bad header, a runaway record.
    #[error("{0}")]
    Csv(String),
    #[error("the roster could not be written: {0}")]
    Database(#[from] sqlx::Error),
    /// `source.relation` is a view or does not exist: nothing can be imported into it.
    #[error("{0}")]
    NotATable(String),
    #[error(
        "the file would delete {would_delete} of the {}'s {roster} rows, more than the \
         allowed {}%; nothing was written (--force allows it)",
        if summary.memberships { "membership roster" } else { "roster" },
        max_ratio * 100.0
    )]
    RefusedDeletion {
        would_delete: u64,
        roster: u64,
        max_ratio: f64,
        /// What the import would have done.
        summary: ImportSummary,
    },
    /// Some lines are bad and `skip_invalid` is off: nothing was written. The summary holds
    /// every problem and the counts the import would have had.
    #[error(
        "{} bad line{}; nothing was written (--skip-invalid writes the good ones)\n{}",
        .0.invalid,
        if .0.invalid == 1 { "" } else { "s" },
        .0.render().trim_end()
    )]
    Invalid(ImportSummary),
}

impl ImportSummary {
    /// The counts on one line, then one line per problem.
    pub fn render(&self) -> String {
        let mut text = format!(
            "{}inserted {}, updated {}, deleted {}, unchanged {}, invalid {}{}{}\n",
            if self.memberships {
                "membership roster: "
            } else {
                ""
            },
            self.inserted,
            self.updated,
            self.deleted,
            self.unchanged,
            self.invalid,
            if self.kept_scim > 0 {
                format!(", left to SCIM {}", self.kept_scim)
            } else {
                String::new()
            },
            if self.written {
                ""
            } else {
                " (nothing written)"
            }
        );
        for problem in &self.problems {
            let _ = writeln!(text, "line {}: {}", problem.line, problem.reason);
        }
        text
    }
}

pub async fn import_path(
    pool: &PgPool,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    let file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    import_reader(pool, file, options).await
}

/// [`import_path`], a membership file going into `memberships_relation`.
pub async fn import_path_with_memberships(
    pool: &PgPool,
    path: &Path,
    options: &ImportOptions,
    memberships_relation: &str,
) -> Result<ImportSummary, ImportError> {
    let file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    import_reader_with_memberships(pool, file, options, memberships_relation).await
}

/// Imports CSV text. Reading is synchronous, a batch at a time between the awaited writes,
/// which suits a file or an in-memory buffer.
/// A membership file goes into [`DEFAULT_MEMBERSHIPS_RELATION`].
pub async fn import_reader<R: Read + Send>(
    pool: &PgPool,
    reader: R,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    import_reader_with_memberships(pool, reader, options, DEFAULT_MEMBERSHIPS_RELATION).await
}

/// [`import_reader`], a membership file (a header with an `organization` column) going into
/// `memberships_relation` (`source.memberships_relation`); any other file goes into
/// `options.relation`. `--replace` replaces only the roster the file is written into.
pub async fn import_reader_with_memberships<R: Read + Send>(
    pool: &PgPool,
    reader: R,
    options: &ImportOptions,
    memberships_relation: &str,
) -> Result<ImportSummary, ImportError> {
    let mut records = Records::new(BufReader::with_capacity(64 * 1024, reader));
    let mut record = Record::default();
    let names = read_header(&mut records, &mut record)?;
    if memberships::is_membership_header(&names) {
        return memberships::import(
            pool,
            &mut records,
            &mut record,
            &names,
            options,
            memberships_relation,
        )
        .await;
    }
    let layout = Layout::from_header(&names).map_err(ImportError::Csv)?;
    let kind = roster::relation_kind(pool, &options.relation).await?;
    if let Some(reason) = roster::not_writable_reason(&options.relation, kind) {
        return Err(ImportError::NotATable(reason));
    }
    let writer = Writer::new(&options.relation, layout.present);

    let mut tx = pool.begin().await?;
    let roster = if options.replace {
        writer.start_replace(&mut tx).await?
    } else {
        0
    };
    let mut summary = ImportSummary::default();
    let mut seen: HashMap<Email, u64> = HashMap::new();
    let mut batch = Batch::default();
    // Addresses named for the first time, waiting to be noted for `replace`.
    let mut named: Vec<String> = Vec::new();
    loop {
        let more = read(&mut records, &mut record)?;
        if more {
            match examine(&layout, &record, &mut seen, &mut named) {
                Examined::Blank => {}
                Examined::Good(row) => batch.push(row),
                Examined::Bad(reason) => {
                    summary.invalid += 1;
                    summary.problems.push(LineProblem {
                        line: record.line,
                        reason,
                    });
                }
            }
        }
        if batch.len() >= BATCH_ROWS || !more {
            let counts = writer.upsert(&mut tx, &mut batch).await?;
            summary.inserted += counts.inserted;
            summary.updated += counts.updated;
            summary.unchanged += counts.unchanged;
            summary.kept_scim += counts.kept_scim.len() as u64;
        }
        if !options.replace {
            named.clear();
        } else if named.len() >= BATCH_ROWS || !more {
            writer.note_seen(&mut tx, &mut named).await?;
        }
        if !more {
            break;
        }
    }
    if options.replace {
        let (deleted, kept) = writer.delete_unseen(&mut tx).await?;
        summary.deleted = deleted;
        summary.kept_scim += kept;
    }

    if summary.invalid > 0 && !options.skip_invalid {
        tx.rollback().await?;
        return Err(ImportError::Invalid(summary));
    }
    if options.replace
        && !options.force
        && summary.deleted as f64 > options.max_delete_ratio * roster as f64
    {
        tx.rollback().await?;
        return Err(ImportError::RefusedDeletion {
            would_delete: summary.deleted,
            roster,
            max_ratio: options.max_delete_ratio,
            summary,
        });
    }
    if options.dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
        summary.written = true;
    }
    log_finished(&summary);
    Ok(summary)
}

/// Reads the header line: the names of its columns.
fn read_header<R: io::BufRead>(
    records: &mut Records<R>,
    record: &mut Record,
) -> Result<Vec<String>, ImportError> {
    if !read(records, record)? {
        return Err(ImportError::Csv(
            "the file is empty; its first line must be a header naming the columns \
             (email at least)"
                .to_owned(),
        ));
    }
    let names = record
        .fields()
        .map(|field| std::str::from_utf8(field).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ImportError::Csv("the header is not valid UTF-8".to_owned()))?;
    Ok(names)
}

fn log_finished(summary: &ImportSummary) {
    tracing::info!(
        inserted = summary.inserted,
        updated = summary.updated,
        deleted = summary.deleted,
        unchanged = summary.unchanged,
        invalid = summary.invalid,
        kept_scim = summary.kept_scim,
        written = summary.written,
        memberships = summary.memberships,
        "roster import finished"
    );
}

fn read<R: io::BufRead>(
    records: &mut Records<R>,
    record: &mut Record,
) -> Result<bool, ImportError> {
    records.read(record).map_err(|error| match error {
        RecordError::Io(error) => ImportError::Io(error),
        RecordError::TooLong { line } => ImportError::Csv(format!(
            "line {line}: the record runs past {} MiB; is a quote left open?",
            records::MAX_RECORD_BYTES / (1024 * 1024)
        )),
    })
}

enum Examined {
    /// Every cell empty: a spreadsheet's trailing filler, not a line to judge.
    Blank,
    Good(DesiredRow),
    Bad(String),
}

/// Judges one record: its cells, the row rules of `DesiredInvitee::from_row`, and whether
/// an earlier line already named the address. An address read for the first time goes to
/// `named`, whether or not its line is good: a person on a bad line is still in the file.
fn examine(
    layout: &Layout,
    record: &Record,
    seen: &mut HashMap<Email, u64>,
    named: &mut Vec<String>,
) -> Examined {
    let cells: Vec<Option<&str>> = record
        .fields()
        .map(|field| std::str::from_utf8(field).ok())
        .collect();
    if cells
        .iter()
        .all(|cell| cell.is_some_and(|c| c.trim().is_empty()))
    {
        return Examined::Blank;
    }
    let mut reasons = Vec::new();
    let (email, row) = if cells.len() != layout.width() {
        reasons.push(format!(
            "the line has {} field{} but the header has {}",
            cells.len(),
            if cells.len() == 1 { "" } else { "s" },
            layout.width()
        ));
        (layout.email_of(&cells), None)
    } else if let Some(column) = cells.iter().position(Option::is_none) {
        reasons.push(format!("field {} is not valid UTF-8", column + 1));
        (layout.email_of(&cells), None)
    } else {
        let text: Vec<&str> = cells.iter().map(|cell| cell.unwrap_or_default()).collect();
        let parsed = layout.parse(&text);
        match parsed.row {
            Ok(row) => (parsed.email, Some(row)),
            Err(problems) => {
                reasons.extend(problems);
                (parsed.email, None)
            }
        }
    };
    if let Some(email) = email {
        match seen.get(&email) {
            Some(first) => reasons.insert(0, format!("{email} already appears on line {first}")),
            None => {
                named.push(email.as_str().to_owned());
                seen.insert(email, record.line);
            }
        }
    }
    match row {
        Some(row) if reasons.is_empty() => {
            match DesiredInvitee::from_row(&row, &RowDefaults::default()) {
                Ok(_) => Examined::Good(row),
                Err(invalid) => Examined::Bad(invalid.reason),
            }
        }
        _ => Examined::Bad(reasons.join("; ")),
    }
}
