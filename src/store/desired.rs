//! Reading the roster: `desired_invitees`, or the table or view `source.relation` names.
//!
//! A view can return anything, so every column is read as text (the times as `timestamptz`,
//! from their bytes) and decoded here row by row:
//! an infinite or far-future time, JSON the reader refuses, a NULL where a value belongs make
//! that one row unreadable (reported as invalid with its reason), never the whole roster.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{PgExecutor, Row, ValueRef};

use super::copy_out::{row_fields, Tuple};
use crate::domain::{DesiredRow, Email, InvalidRow};

/// A roster row as read: the row, or why it could not be read.
pub type RosterRow = Result<DesiredRow, InvalidRow>;

/// Reading the roster failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The relation or one of its columns does not exist, or may not be read.
    #[error("the roster relation {relation:?} (source.relation) cannot be read: {message}")]
    Relation { relation: String, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The task reading the roster was stopped before the roster's end (the runtime is
    /// shutting down): what was read is not the whole roster.
    #[error("reading the roster was stopped before its end")]
    Interrupted,
}

/// Quotes a validated relation name (`name` or `schema.name`) for SQL.
pub fn quote_relation(relation: &str) -> String {
    relation
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Fails naming the relation when it, or a column the reader takes, cannot be read. A time
/// column must be a time (`timestamptz`, `timestamp` or `date`), which adding an interval
/// asks of it: text, which [`select`] would cast one value at a time, is refused here whole,
/// before a cycle reads a row.
pub async fn check(db: impl PgExecutor<'_>, relation: &str) -> Result<(), ReadError> {
    let sql = select_times(relation, " LIMIT 0", |column| {
        format!("({column} + interval '0')::timestamptz")
    });
    sqlx::query(&sql)
        .execute(db)
        .await
        .map_err(|e| relation_error(e, relation))?;
    Ok(())
}

/// The order a cycle reads the roster in: by address with spaces trimmed and ASCII letters
/// lower-cased, in byte order, which an index of the roster table gives without a sort. The
/// reader computes the same key of each row ([`crate::domain::roster_key`]) rather than
/// having the database send it.
pub(super) const BY_ADDRESS: &str = " ORDER BY lower(btrim(email::text) COLLATE \"C\")";

/// The roster's columns as the reader decodes them, followed by `tail` (an ORDER BY, a
/// LIMIT).
pub(super) fn select(relation: &str, tail: &str) -> String {
    select_times(relation, tail, |column| format!("{column}::timestamptz"))
}

/// [`select`] with each time column read through `time`.
fn select_times(relation: &str, tail: &str, time: impl Fn(&str) -> String) -> String {
    // The relation comes from the configuration, so this query is built at run time. Times
    // arrive as `timestamptz` in PostgreSQL's binary form, read from their bytes by
    // [`pg_time`], and the rest as text, so no value can make the driver's decoding fail or
    // panic.
    format!(
        "SELECT email::text, public_metadata::text, redirect_url::text, notify::text,
                expires_in_days::text, template_slug::text, {} AS not_before, source::text,
                {} AS created_at, {} AS updated_at
         FROM {}{tail}",
        time("not_before"),
        time("created_at"),
        time("updated_at"),
        quote_relation(relation)
    )
}

/// How many roster rows there are.
pub async fn count(db: impl PgExecutor<'_>, relation: &str) -> Result<i64, ReadError> {
    let sql = format!("SELECT count(*) FROM {}", quote_relation(relation));
    sqlx::query_scalar::<_, i64>(&sql)
        .fetch_one(db)
        .await
        .map_err(|e| relation_error(e, relation))
}

/// Undefined table, undefined column, undefined schema, insufficient privilege, wrong type.
pub(super) fn relation_error(error: sqlx::Error, relation: &str) -> ReadError {
    match relation_problem(&error) {
        Some(message) => ReadError::Relation {
            relation: relation.to_owned(),
            message,
        },
        None => ReadError::Database(error),
    }
}

/// The database's message when `error` says a relation cannot be read as the reader reads it
/// (undefined table, column or schema, insufficient privilege, wrong type).
pub(super) fn relation_problem(error: &sqlx::Error) -> Option<String> {
    let error = error.as_database_error()?;
    matches!(
        error.code().as_deref(),
        Some("42P01" | "42703" | "3F000" | "42501" | "42883" | "42846")
    )
    .then(|| error.message().to_owned())
}

/// The columns of one row: text, and the times as PostgreSQL keeps them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawRow {
    pub email: Option<String>,
    pub public_metadata: Option<String>,
    pub redirect_url: Option<String>,
    pub notify: Option<String>,
    pub expires_in_days: Option<String>,
    pub template_slug: Option<String>,
    pub not_before: Option<PgTime>,
    pub source: Option<String>,
    pub created_at: Option<PgTime>,
    pub updated_at: Option<PgTime>,
}

/// A time as PostgreSQL keeps a `timestamptz`: microseconds since 2000-01-01 UTC, its
/// largest and smallest values standing for `infinity` and `-infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgTime(pub i64);

impl PgTime {
    /// Microseconds from the Unix epoch to PostgreSQL's.
    const EPOCH_2000: i64 = 946_684_800_000_000;

    /// The time it names, or why it names none that can be read.
    pub fn to_utc(self) -> Result<DateTime<Utc>, String> {
        match self.0 {
            i64::MAX => Err("is infinity".to_owned()),
            i64::MIN => Err("is -infinity".to_owned()),
            micros => micros
                .checked_add(Self::EPOCH_2000)
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| {
                    "is out of range (years 262143 BC to 262143 AD can be read)".to_owned()
                }),
        }
    }

    /// The `timestamptz` of a time.
    pub fn of(time: DateTime<Utc>) -> PgTime {
        PgTime(time.timestamp_micros() - Self::EPOCH_2000)
    }
}

/// A row of [`select`], as a binary copy sends it ([`super::copy_out`]).
pub(super) fn decode(row: &Tuple<'_>) -> RosterRow {
    let mut problems = Vec::new();
    // By position, in the order of `select`'s columns. Every column but the times is cast to
    // text by `select`: its bytes are read as UTF-8 directly.
    let mut text = |index: usize, column: &str| -> Option<String> {
        row.text(index)
            .map(|text| text.map(str::to_owned))
            .unwrap_or_else(|e| {
                problems.push(format!("{column} cannot be read: {e}"));
                None
            })
    };
    let email = text(0, "email");
    let public_metadata = text(1, "public_metadata");
    let redirect_url = text(2, "redirect_url");
    let notify = text(3, "notify");
    let expires_in_days = text(4, "expires_in_days");
    let template_slug = text(5, "template_slug");
    let source = text(7, "source");
    let mut time = |index: usize, column: &str| -> Option<PgTime> {
        tuple_time(row, index).unwrap_or_else(|e| {
            problems.push(format!("{column} cannot be read: {e}"));
            None
        })
    };
    let raw = RawRow {
        email,
        public_metadata,
        redirect_url,
        notify,
        expires_in_days,
        template_slug,
        not_before: time(6, "not_before"),
        source,
        created_at: time(8, "created_at"),
        updated_at: time(9, "updated_at"),
    };
    match parse(raw) {
        Ok(row) if problems.is_empty() => Ok(row),
        Ok(row) => Err(unreadable(row.email, problems)),
        Err(mut invalid) => {
            problems.push(invalid.reason);
            invalid.reason = problems.join("; ");
            Err(invalid)
        }
    }
}

/// A row of [`select`] as the driver reads it (all in binary form, as a copy's): the same row
/// [`decode`] makes of it.
pub(super) fn decode_row(row: &PgRow) -> RosterRow {
    decode(&Tuple::new(&row_fields(row)))
}

/// When a row read by [`select`] was written, if that can be read.
pub(super) fn created_at(row: &Tuple<'_>) -> Option<PgTime> {
    tuple_time(row, 8).ok().flatten()
}

/// A `timestamptz` field of a binary copy.
fn tuple_time(row: &Tuple<'_>, index: usize) -> Result<Option<PgTime>, String> {
    Ok(row.i64(index)?.map(PgTime))
}

/// A `timestamptz` column's value, from the eight bytes PostgreSQL sends.
pub(super) fn pg_time(row: &PgRow, index: usize) -> Result<Option<PgTime>, String> {
    let value = row.try_get_raw(index).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Ok(None);
    }
    if value.format() != PgValueFormat::Binary {
        return Err("the value did not arrive in binary".to_owned());
    }
    let bytes = value.as_bytes().map_err(|e| e.to_string())?;
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("a time of {} bytes", bytes.len()))?;
    Ok(Some(PgTime(i64::from_be_bytes(bytes))))
}

/// Decodes one row's text. Every problem of the row is named in the reason.
pub fn parse(raw: RawRow) -> RosterRow {
    let mut problems = Vec::new();
    let email = raw.email.unwrap_or_else(|| {
        problems.push("email is NULL".to_owned());
        String::new()
    });
    let public_metadata = json_column("public_metadata", raw.public_metadata, &mut problems);
    let notify = notify_column(raw.notify, &mut problems);
    let expires_in_days = days_column(raw.expires_in_days, &mut problems);
    let not_before = time_column("not_before", raw.not_before, &mut problems);
    let created_at = time_column("created_at", raw.created_at, &mut problems);
    let updated_at = time_column("updated_at", raw.updated_at, &mut problems);
    let row = DesiredRow {
        email,
        public_metadata,
        redirect_url: raw.redirect_url,
        notify,
        expires_in_days,
        template_slug: raw.template_slug,
        not_before,
        source: raw.source,
        created_at,
        updated_at,
    };
    if problems.is_empty() {
        Ok(row)
    } else {
        Err(unreadable(row.email, problems))
    }
}

/// A JSON column's value; a NULL or unparsable one is a problem of the row (and `null`).
pub(super) fn json_column(column: &str, text: Option<String>, problems: &mut Vec<String>) -> Value {
    match text.as_deref().map(|text| match text {
        // The roster's default, on nearly every row: read without the parser.
        "{}" => Ok(Value::Object(serde_json::Map::new())),
        text => serde_json::from_str(text),
    }) {
        Some(Ok(value)) => value,
        Some(Err(e)) => {
            problems.push(format!("{column} cannot be read as JSON: {e}"));
            Value::Null
        }
        None => {
            problems.push(format!("{column} is NULL"));
            Value::Null
        }
    }
}

/// `notify` as text: `true`, `false` or NULL; anything else is a problem of the row.
pub(super) fn notify_column(text: Option<String>, problems: &mut Vec<String>) -> Option<bool> {
    match text.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            problems.push(format!("notify {other:?} is not a boolean"));
            None
        }
    }
}

/// `expires_in_days` as text: a whole number or NULL; anything else is a problem of the row.
pub(super) fn days_column<T: std::str::FromStr>(
    text: Option<String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    text.and_then(|text| match text.parse() {
        Ok(days) => Some(days),
        Err(_) => {
            problems.push(format!("expires_in_days {text:?} is not a whole number"));
            None
        }
    })
}

/// A time column; one out of chrono's range is a problem of the row.
pub(super) fn time_column(
    column: &str,
    time: Option<PgTime>,
    problems: &mut Vec<String>,
) -> Option<DateTime<Utc>> {
    time.and_then(|time| match time.to_utc() {
        Ok(time) => Some(time),
        Err(reason) => {
            problems.push(format!("{column} {reason}"));
            None
        }
    })
}

fn unreadable(email: String, problems: Vec<String>) -> InvalidRow {
    InvalidRow {
        parsed: match Email::parse_invitable(&email) {
            Ok(parsed) => Some(parsed),
            Err(error) => Email::named_by_row(&email, &error),
        },
        email,
        reason: problems.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(email: &str) -> RawRow {
        RawRow {
            email: Some(email.to_owned()),
            public_metadata: Some("{}".to_owned()),
            ..RawRow::default()
        }
    }

    #[test]
    fn a_plain_row_reads_back_whole() {
        let row = parse(RawRow {
            notify: Some("false".into()),
            expires_in_days: Some("7".into()),
            not_before: Some(PgTime::of("2026-01-01T00:00:00Z".parse().unwrap())),
            created_at: Some(PgTime(-PgTime::EPOCH_2000 - 1_000_000)),
            public_metadata: Some(r#"{"team":"ops"}"#.into()),
            ..raw("ann@example.com")
        })
        .unwrap();
        assert_eq!(row.notify, Some(false));
        assert_eq!(row.expires_in_days, Some(7));
        assert_eq!(
            row.not_before,
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            row.created_at,
            Some("1969-12-31T23:59:59Z".parse().unwrap())
        );
        assert_eq!(row.public_metadata["team"], "ops");
    }

    #[test]
    fn each_unreadable_value_names_its_column_and_keeps_the_address() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let cases: Vec<(RawRow, &str)> = vec![
            (
                RawRow {
                    not_before: Some(PgTime(i64::MAX)),
                    ..raw("a@example.com")
                },
                "not_before is infinity",
            ),
            (
                RawRow {
                    created_at: Some(PgTime(i64::MIN)),
                    ..raw("a@example.com")
                },
                "created_at is -infinity",
            ),
            (
                RawRow {
                    updated_at: Some(PgTime(i64::MAX - 1)),
                    ..raw("a@example.com")
                },
                "updated_at is out of range",
            ),
            (
                RawRow {
                    not_before: Some(PgTime(8_300_000_000_000_000_000)),
                    ..raw("a@example.com")
                },
                "not_before is out of range",
            ),
            (
                RawRow {
                    public_metadata: Some(r#"{"n": 1e400}"#.into()),
                    ..raw("a@example.com")
                },
                "public_metadata cannot be read as JSON",
            ),
            (
                RawRow {
                    public_metadata: Some(deep),
                    ..raw("a@example.com")
                },
                "public_metadata cannot be read as JSON",
            ),
            (
                RawRow {
                    public_metadata: None,
                    ..raw("a@example.com")
                },
                "public_metadata is NULL",
            ),
            (
                RawRow {
                    notify: Some("maybe".into()),
                    ..raw("a@example.com")
                },
                "notify \"maybe\"",
            ),
            (
                RawRow {
                    expires_in_days: Some("99999999999".into()),
                    ..raw("a@example.com")
                },
                "expires_in_days",
            ),
        ];
        for (row, reason) in cases {
            let invalid = parse(row).expect_err(reason);
            assert!(
                invalid.reason.contains(reason),
                "{reason}: {}",
                invalid.reason
            );
            assert_eq!(
                invalid.parsed.as_ref().map(Email::as_str),
                Some("a@example.com")
            );
        }
        let invalid = parse(RawRow {
            email: None,
            ..raw("")
        })
        .unwrap_err();
        assert_eq!(invalid.reason, "email is NULL");
        assert_eq!(invalid.parsed, None);
    }
}
