//! The CSV import of the membership roster: a file whose header has an `organization`
//! column. One row per (address, organization); the same guarantees as the instance import
//! (one transaction, every bad line reported with its line and column, the SCIM rule,
//! `--replace` scoped to the membership roster, `--dry-run`).

use std::collections::HashMap;
use std::io;

use serde_json::{Map, Value};
use sqlx::PgPool;

use super::columns::{parse_flag, parse_time, typed};
use super::records::{Record, Records};
use super::{log_finished, read, ImportError, ImportOptions, ImportSummary, LineProblem};
use crate::domain::{check_organization, DesiredMembership, Email, MembershipRow};
use crate::store::membership_roster::{self, MembershipBatch, MembershipColumns, MembershipWriter};
use crate::store::roster::{self, names_scim};

/// Rows per upsert statement.
const BATCH_ROWS: usize = 1000;

const META_PREFIX: &str = "meta.";

const KNOWN: &str = "email, organization, role, public_metadata, meta.KEY, private_metadata, \
                     redirect_url, expires_in_days, notify, not_before, source";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Email,
    Organization,
    Role,
    PublicMetadata,
    PrivateMetadata,
    RedirectUrl,
    ExpiresInDays,
    Notify,
    NotBefore,
    Source,
    Meta(String),
}

impl Column {
    fn from_header(raw: &str) -> Result<Column, String> {
        let name = raw.trim();
        if let Some(prefix) = name.get(..META_PREFIX.len()) {
            if prefix.eq_ignore_ascii_case(META_PREFIX) {
                return Ok(Column::Meta(name[META_PREFIX.len()..].trim().to_owned()));
            }
        }
        Ok(match name.to_ascii_lowercase().as_str() {
            "email" => Column::Email,
            "organization" => Column::Organization,
            "role" => Column::Role,
            "public_metadata" => Column::PublicMetadata,
            "private_metadata" => Column::PrivateMetadata,
            "redirect_url" => Column::RedirectUrl,
            "expires_in_days" => Column::ExpiresInDays,
            "notify" => Column::Notify,
            "not_before" => Column::NotBefore,
            "source" => Column::Source,
            "template_slug" => {
                return Err(format!(
                    "{raw:?} (organization invitations have no template; the column belongs to \
                     an instance roster file, which has no organization column)"
                ))
            }
            _ => return Err(format!("{raw:?}")),
        })
    }

    fn name(&self) -> String {
        match self {
            Column::Email => "email".to_owned(),
            Column::Organization => "organization".to_owned(),
            Column::Role => "role".to_owned(),
            Column::PublicMetadata => "public_metadata".to_owned(),
            Column::PrivateMetadata => "private_metadata".to_owned(),
            Column::RedirectUrl => "redirect_url".to_owned(),
            Column::ExpiresInDays => "expires_in_days".to_owned(),
            Column::Notify => "notify".to_owned(),
            Column::NotBefore => "not_before".to_owned(),
            Column::Source => "source".to_owned(),
            Column::Meta(key) => format!("{META_PREFIX}{key}"),
        }
    }
}

/// A membership file's header, understood.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    columns: Vec<Column>,
    email: usize,
    organization: usize,
    present: MembershipColumns,
}

/// Whether a header names the membership roster: it has an `organization` column.
pub(super) fn is_membership_header(names: &[String]) -> bool {
    names
        .iter()
        .any(|name| name.trim().eq_ignore_ascii_case("organization"))
}

/// One record's outcome: the row when every cell is good, and the address and organization
/// whenever they read (a bad line still names a person, who must not be taken for absent).
#[derive(Debug)]
pub(super) struct Parsed {
    email: Option<Email>,
    organization: Option<String>,
    row: Result<MembershipRow, Vec<String>>,
}

impl Layout {
    /// Reads the header's names. The error says everything wrong with it at once.
    pub(super) fn from_header(names: &[String]) -> Result<Layout, String> {
        let mut columns = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        let mut problems = Vec::new();
        for (index, raw) in names.iter().enumerate() {
            match Column::from_header(raw) {
                Ok(Column::Meta(key)) if key.is_empty() => problems.push(format!(
                    "column {} ({raw:?}) names no metadata key",
                    index + 1
                )),
                Ok(column) => {
                    if columns.contains(&column) {
                        problems.push(format!("column {} appears more than once", column.name()));
                    }
                    columns.push(column);
                }
                Err(name) => unknown.push(name),
            }
        }
        if !unknown.is_empty() {
            problems.insert(
                0,
                format!(
                    "unknown column{} {}; the columns of a membership roster file are {KNOWN}",
                    if unknown.len() == 1 { "" } else { "s" },
                    unknown.join(", ")
                ),
            );
        }
        let email = columns.iter().position(|c| *c == Column::Email);
        if email.is_none() {
            problems.insert(0, "the header has no email column".to_owned());
        }
        let organization = columns.iter().position(|c| *c == Column::Organization);
        let has_meta = columns.iter().any(|c| matches!(c, Column::Meta(_)));
        if has_meta && columns.contains(&Column::PublicMetadata) {
            problems.push(
                "the header has both public_metadata and meta.* columns; use one or the other"
                    .to_owned(),
            );
        }
        match (email, organization) {
            (Some(email), Some(organization)) if problems.is_empty() => {
                let present = MembershipColumns {
                    role: columns.contains(&Column::Role),
                    public_metadata: has_meta || columns.contains(&Column::PublicMetadata),
                    private_metadata: columns.contains(&Column::PrivateMetadata),
                    redirect_url: columns.contains(&Column::RedirectUrl),
                    expires_in_days: columns.contains(&Column::ExpiresInDays),
                    notify: columns.contains(&Column::Notify),
                    not_before: columns.contains(&Column::NotBefore),
                    source: columns.contains(&Column::Source),
                };
                Ok(Layout {
                    columns,
                    email,
                    organization,
                    present,
                })
            }
            _ => Err(format!(
                "the header of the membership roster file is not usable: {}",
                problems.join("; ")
            )),
        }
    }

    fn width(&self) -> usize {
        self.columns.len()
    }

    /// The address and organization of a record whose cells cannot all be read, when they
    /// can.
    fn key_of(&self, cells: &[Option<&str>]) -> (Option<Email>, Option<String>) {
        let cell = |index: usize| cells.get(index).copied().flatten();
        (
            cell(self.email).and_then(|raw| Email::parse_invitable(raw).ok()),
            cell(self.organization).and_then(|raw| check_organization(raw).ok()),
        )
    }

    /// Turns a record's cells (one per column) into a row; cells are trimmed and an empty
    /// cell means NULL. The row rules are `DesiredMembership::from_row`'s, applied after.
    fn parse(&self, cells: &[&str]) -> Parsed {
        let mut problems = Vec::new();
        let mut row = MembershipRow::new(String::new(), String::new());
        let mut metadata = Map::new();
        let mut email = None;
        let mut organization = None;
        for (column, cell) in self.columns.iter().zip(cells) {
            let value = cell.trim();
            if value.is_empty() && !matches!(column, Column::Email | Column::Organization) {
                continue;
            }
            match column {
                Column::Email => match Email::parse_invitable(cell) {
                    Ok(parsed) => {
                        row.email = parsed.as_str().to_owned();
                        email = Some(parsed);
                    }
                    Err(e) if value.is_empty() => problems.push(e.to_string()),
                    Err(e) => problems.push(format!("email {value:?}: {e}")),
                },
                Column::Organization => match check_organization(cell) {
                    Ok(reference) => {
                        row.organization = reference.clone();
                        organization = Some(reference);
                    }
                    Err(e) if e.starts_with("organization") => problems.push(e),
                    Err(e) => problems.push(format!("organization: {e}")),
                },
                Column::Role => row.role = Some(value.to_owned()),
                Column::PublicMetadata | Column::PrivateMetadata => {
                    let name = if *column == Column::PublicMetadata {
                        "public_metadata"
                    } else {
                        "private_metadata"
                    };
                    match serde_json::from_str::<Value>(value) {
                        Ok(json) if *column == Column::PublicMetadata => row.public_metadata = json,
                        Ok(json) => row.private_metadata = json,
                        Err(e) => problems.push(format!("{name} is not valid JSON: {e}")),
                    }
                }
                Column::RedirectUrl => row.redirect_url = Some(value.to_owned()),
                Column::ExpiresInDays => match value.parse::<i32>() {
                    Ok(days) => row.expires_in_days = Some(days),
                    Err(_) => problems.push(format!(
                        "expires_in_days {value:?} is not a whole number between 1 and 365"
                    )),
                },
                Column::Notify => match parse_flag(value) {
                    Some(flag) => row.notify = Some(flag),
                    None => problems.push(format!(
                        "notify {value:?} must be true, false, yes, no, 1 or 0"
                    )),
                },
                Column::NotBefore => match parse_time(value) {
                    Some(time) => row.not_before = Some(time),
                    None => problems.push(format!(
                        "not_before {value:?} is not an RFC 3339 time (2026-01-31T09:00:00Z) \
                         or a date (2026-01-31)"
                    )),
                },
                Column::Source if names_scim(value) => problems.push(format!(
                    "source {value:?} is reserved for the rows of SCIM users, which are \
                     written through the identity provider, not imported"
                )),
                Column::Source => row.source = Some(value.to_owned()),
                Column::Meta(key) => {
                    metadata.insert(key.clone(), typed(value));
                }
            }
        }
        if !metadata.is_empty() {
            row.public_metadata = Value::Object(metadata);
        }
        Parsed {
            email,
            organization,
            row: if problems.is_empty() {
                Ok(row)
            } else {
                Err(problems)
            },
        }
    }
}

/// Imports a membership roster file whose header has been read into `names`.
pub(super) async fn import<R: io::BufRead>(
    pool: &PgPool,
    records: &mut Records<R>,
    record: &mut Record,
    names: &[String],
    options: &ImportOptions,
    relation: &str,
) -> Result<ImportSummary, ImportError> {
    let layout = Layout::from_header(names).map_err(ImportError::Csv)?;
    let kind = roster::relation_kind(pool, relation).await?;
    if let Some(reason) = membership_roster::not_writable_reason(relation, kind) {
        return Err(ImportError::NotATable(reason));
    }
    let writer = MembershipWriter::new(relation, layout.present);

    let mut tx = pool.begin().await?;
    let roster = if options.replace {
        writer.start_replace(&mut tx).await?
    } else {
        0
    };
    let mut summary = ImportSummary {
        memberships: true,
        ..ImportSummary::default()
    };
    let mut seen: HashMap<(Email, String), u64> = HashMap::new();
    let mut batch = MembershipBatch::default();
    // Pairs named for the first time, waiting to be noted for `replace`.
    let mut named: Vec<(String, Option<String>)> = Vec::new();
    loop {
        let more = read(records, record)?;
        if more {
            match examine(&layout, record, &mut seen, &mut named) {
                Examined::Blank => {}
                Examined::Good(row) => batch.push(*row),
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

enum Examined {
    /// Every cell empty: a spreadsheet's trailing filler, not a line to judge.
    Blank,
    Good(Box<MembershipRow>),
    Bad(String),
}

/// Judges one record: its cells, the row rules of `DesiredMembership::from_row`, and whether
/// an earlier line already named the (address, organization) pair. What a line names goes
/// to `named` whether or not the line is good: the pair when both read, else every row of
/// the address.
fn examine(
    layout: &Layout,
    record: &Record,
    seen: &mut HashMap<(Email, String), u64>,
    named: &mut Vec<(String, Option<String>)>,
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
    let (email, organization, row) = if cells.len() != layout.width() {
        reasons.push(format!(
            "the line has {} field{} but the header has {}",
            cells.len(),
            if cells.len() == 1 { "" } else { "s" },
            layout.width()
        ));
        let (email, organization) = layout.key_of(&cells);
        (email, organization, None)
    } else if let Some(column) = cells.iter().position(Option::is_none) {
        reasons.push(format!("field {} is not valid UTF-8", column + 1));
        let (email, organization) = layout.key_of(&cells);
        (email, organization, None)
    } else {
        let text: Vec<&str> = cells.iter().map(|cell| cell.unwrap_or_default()).collect();
        let parsed = layout.parse(&text);
        match parsed.row {
            Ok(row) => (parsed.email, parsed.organization, Some(row)),
            Err(problems) => {
                reasons.extend(problems);
                (parsed.email, parsed.organization, None)
            }
        }
    };
    match (email, organization) {
        (Some(email), Some(organization)) => {
            let key = (email, organization);
            match seen.get(&key) {
                Some(first) => reasons.insert(
                    0,
                    format!(
                        "{} in organization {} already appears on line {first}; the roster \
                         holds one row per address and organization",
                        key.0, key.1
                    ),
                ),
                None => {
                    named.push((key.0.as_str().to_owned(), Some(key.1.clone())));
                    seen.insert(key, record.line);
                }
            }
        }
        (Some(email), None) => named.push((email.as_str().to_owned(), None)),
        (None, _) => {}
    }
    match row {
        Some(row) if reasons.is_empty() => match DesiredMembership::from_row(&row) {
            // Stored as checked: the address normalised, the organization and role trimmed,
            // a blank role NULL (the default role).
            Ok(checked) => Examined::Good(Box::new(MembershipRow {
                email: checked.email.as_str().to_owned(),
                organization: checked.organization,
                role: checked.role,
                ..row
            })),
            Err(invalid) => Examined::Bad(invalid.reason),
        },
        _ => Examined::Bad(reasons.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layout(names: &[&str]) -> Result<Layout, String> {
        Layout::from_header(&names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn a_header_with_an_organization_column_is_a_membership_file() {
        let names = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(is_membership_header(&names(&["email", " Organization "])));
        assert!(!is_membership_header(&names(&["email", "org"])));
        let ok = layout(&["Email", "ORGANIZATION", "role", "private_metadata"]).unwrap();
        assert!(ok.present.role && ok.present.private_metadata && !ok.present.public_metadata);
        let error = layout(&["organization", "role", "template_slug", "dept"]).unwrap_err();
        assert!(error.contains("no email column"), "{error}");
        assert!(
            error.contains("organization invitations have no template"),
            "{error}"
        );
        assert!(error.contains("\"dept\""), "{error}");
        let error = layout(&["email", "organization", "role", "Role"]).unwrap_err();
        assert!(error.contains("role appears more than once"), "{error}");
    }

    #[test]
    fn every_bad_cell_of_a_line_is_reported_and_the_pair_still_known() {
        let layout = layout(&[
            "email",
            "organization",
            "role",
            "private_metadata",
            "notify",
            "meta.team",
        ])
        .unwrap();
        let parsed = layout.parse(&["Ann@Example.com", " acme ", "org:admin", "[", "maybe", "7"]);
        assert_eq!(parsed.email.unwrap().as_str(), "ann@example.com");
        assert_eq!(parsed.organization.as_deref(), Some("acme"));
        let problems = parsed.row.unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("private_metadata is not valid JSON"));
        let parsed = layout.parse(&["a@x.com", "ac me", "", "", "", ""]);
        assert!(parsed.organization.is_none());
        assert!(parsed.row.unwrap_err()[0].starts_with("organization \"ac me\""));
        let parsed = layout.parse(&["a@x.com", "org_1", "", "{\"k\":1}", "no", "ops"]);
        let row = parsed.row.unwrap();
        assert_eq!(row.private_metadata, json!({"k": 1}));
        assert_eq!(row.public_metadata, json!({"team": "ops"}));
        assert_eq!((row.role, row.notify), (None, Some(false)));
        let parsed = layout.parse(&["a@x.com", "", "", "", "", ""]);
        assert_eq!(parsed.row.unwrap_err(), vec!["organization is empty"]);
    }
}
