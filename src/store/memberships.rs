//! Reading the membership roster: `desired_memberships`, or the table or view
//! `source.memberships_relation` names.
//!
//! As for the instance roster ([`super::desired`]), a view can return anything, so every
//! column is read as text (the times as `timestamptz`, from their bytes) and decoded here row
//! by row: a value that cannot be read, or a row that cannot be acted on (a bad address, an
//! organization reference or a role of the wrong shape), makes that one row invalid with its
//! reason, never the whole roster. Rows stream in (organization, address) order, so a cycle
//! never holds the roster whole.

use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Row};

use super::desired::{self, pg_time, quote_relation, PgTime};
use crate::domain::{
    DesiredMembership, Email, InvalidMembership, MembershipRosterRow, MembershipRow,
};

/// Reading the membership roster failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The relation or one of its columns does not exist, or may not be read.
    #[error(
        "the membership roster relation {relation:?} (source.memberships_relation) cannot be \
         read: {message}"
    )]
    Relation { relation: String, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn relation_error(error: sqlx::Error, relation: &str) -> ReadError {
    match desired::relation_problem(&error) {
        Some(message) => ReadError::Relation {
            relation: relation.to_owned(),
            message,
        },
        None => ReadError::Database(error),
    }
}

/// The order a cycle reads the membership roster in: by organization as written (spaces
/// trimmed), then by address (spaces trimmed, ASCII letters lower-cased), both in byte order,
/// as the table's index holds them ([`crate::domain::membership_key`] computes the same key).
const BY_ORGANIZATION: &str = " ORDER BY btrim(organization::text) COLLATE \"C\", \
     lower(btrim(email::text)) COLLATE \"C\"";

/// The columns as the reader decodes them, by position, followed by `tail`.
fn select_times(relation: &str, tail: &str, time: impl Fn(&str) -> String) -> String {
    format!(
        "SELECT email::text, organization::text, role::text, public_metadata::text,
                private_metadata::text, redirect_url::text, expires_in_days::text,
                notify::text, source::text, {} AS not_before, {} AS created_at,
                {} AS updated_at
         FROM {}{tail}",
        time("not_before"),
        time("created_at"),
        time("updated_at"),
        quote_relation(relation)
    )
}

/// Fails naming the relation when it, or a column the reader takes, cannot be read; a time
/// column must be a time, checked whole before a cycle reads a row (as
/// [`super::desired::check`] does).
pub async fn check(db: impl PgExecutor<'_>, relation: &str) -> Result<(), ReadError> {
    let sql = select_times(relation, " LIMIT 0", |column| {
        format!("({column} + interval '0')::timestamptz")
    });
    sqlx::query(&sql)
        .persistent(false)
        .execute(db)
        .await
        .map_err(|e| relation_error(e, relation))?;
    Ok(())
}

/// How many membership roster rows there are.
pub async fn count(db: impl PgExecutor<'_>, relation: &str) -> Result<i64, ReadError> {
    let sql = format!("SELECT count(*) FROM {}", quote_relation(relation));
    sqlx::query_scalar::<_, i64>(&sql)
        .persistent(false)
        .fetch_one(db)
        .await
        .map_err(|e| relation_error(e, relation))
}

/// Hands every membership roster row, in (organization, address) order, read and checked on
/// its own, to `each`. Returns how many rows there were. The rows are read from one snapshot,
/// as they stream; the relation's shape is [`check`]ed first, by the caller.
pub async fn for_each(
    pool: &PgPool,
    relation: &str,
    mut each: impl FnMut(MembershipRosterRow),
) -> Result<usize, ReadError> {
    let mut tx = super::read_only(pool).await?;
    let sql = select_times(relation, BY_ORGANIZATION, |column| {
        format!("{column}::timestamptz")
    });
    let mut count = 0;
    {
        let mut rows = sqlx::query(&sql).persistent(false).fetch(&mut *tx);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| relation_error(e, relation))?
        {
            count += 1;
            each(decode(&row));
        }
    }
    tx.rollback().await?;
    Ok(count)
}

/// Hands the membership roster to `each` one organization at a time: the organization
/// reference as the rows write it (spaces trimmed) and its rows, in address order. An
/// organization is named by an id or a slug, so two references may be one organization:
/// resolving them is the caller's.
pub async fn for_each_organization(
    pool: &PgPool,
    relation: &str,
    mut each: impl FnMut(String, Vec<MembershipRosterRow>),
) -> Result<usize, ReadError> {
    let mut current: Option<(String, Vec<MembershipRosterRow>)> = None;
    let count = for_each(pool, relation, |row| {
        let (organization, _) = crate::domain::membership_key(&row);
        match &mut current {
            Some((name, rows)) if *name == organization => rows.push(row),
            _ => {
                if let Some((name, rows)) = current.replace((organization, vec![row])) {
                    each(name, rows);
                }
            }
        }
    })
    .await?;
    if let Some((name, rows)) = current {
        each(name, rows);
    }
    Ok(count)
}

/// Every membership roster row, in (organization, address) order.
pub async fn read_all(
    pool: &PgPool,
    relation: &str,
) -> Result<Vec<MembershipRosterRow>, ReadError> {
    let mut rows = Vec::new();
    for_each(pool, relation, |row| rows.push(row)).await?;
    Ok(rows)
}

/// Which of `emails` the instance roster (`source.relation`, a table or a view) also names,
/// in one read: a row's address is compared spaces trimmed and lower-cased, as the roster's
/// unique index holds it. A person on both rosters who has no account yet waits for the
/// instance invitation rather than getting an organization invitation too.
pub async fn on_instance_roster(
    db: impl PgExecutor<'_>,
    instance_relation: &str,
    emails: &[Email],
) -> Result<std::collections::HashSet<Email>, desired::ReadError> {
    if emails.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let addresses: Vec<&str> = emails.iter().map(Email::as_str).collect();
    let sql = format!(
        "SELECT DISTINCT lower(btrim(email::text)) FROM {} WHERE lower(btrim(email::text)) = ANY($1)",
        quote_relation(instance_relation)
    );
    let found: Vec<Option<String>> = sqlx::query_scalar(&sql)
        .persistent(false)
        .bind(&addresses)
        .fetch_all(db)
        .await
        .map_err(|e| desired::relation_error(e, instance_relation))?;
    // Answered in the addresses' own spelling: only those asked about count.
    let asked: std::collections::HashMap<&str, &Email> =
        emails.iter().map(|e| (e.as_str(), e)).collect();
    Ok(found
        .iter()
        .flatten()
        .filter_map(|address| asked.get(address.as_str()).map(|e| (*e).clone()))
        .collect())
}

/// The columns of one row: text, and the times as PostgreSQL keeps them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawMembershipRow {
    pub email: Option<String>,
    pub organization: Option<String>,
    pub role: Option<String>,
    pub public_metadata: Option<String>,
    pub private_metadata: Option<String>,
    pub redirect_url: Option<String>,
    pub expires_in_days: Option<String>,
    pub notify: Option<String>,
    pub source: Option<String>,
    pub not_before: Option<PgTime>,
    pub created_at: Option<PgTime>,
    pub updated_at: Option<PgTime>,
}

fn decode(row: &PgRow) -> MembershipRosterRow {
    let mut problems = Vec::new();
    // By position, in the order of `select_times`'s columns.
    let mut text = |index: usize, column: &str| -> Option<String> {
        row.try_get::<Option<String>, _>(index).unwrap_or_else(|e| {
            problems.push(format!("{column} cannot be read: {e}"));
            None
        })
    };
    let email = text(0, "email");
    let organization = text(1, "organization");
    let role = text(2, "role");
    let public_metadata = text(3, "public_metadata");
    let private_metadata = text(4, "private_metadata");
    let redirect_url = text(5, "redirect_url");
    let expires_in_days = text(6, "expires_in_days");
    let notify = text(7, "notify");
    let source = text(8, "source");
    let mut time = |index: usize, column: &str| -> Option<PgTime> {
        pg_time(row, index).unwrap_or_else(|e| {
            problems.push(format!("{column} cannot be read: {e}"));
            None
        })
    };
    let raw = RawMembershipRow {
        email,
        organization,
        role,
        public_metadata,
        private_metadata,
        redirect_url,
        expires_in_days,
        notify,
        source,
        not_before: time(9, "not_before"),
        created_at: time(10, "created_at"),
        updated_at: time(11, "updated_at"),
    };
    parse_with(raw, problems)
}

/// Decodes and checks one row. Every problem of the row is named in the reason.
pub fn parse(raw: RawMembershipRow) -> MembershipRosterRow {
    parse_with(raw, Vec::new())
}

fn parse_with(raw: RawMembershipRow, mut problems: Vec<String>) -> MembershipRosterRow {
    let mut required = |column: &str, value: Option<String>| {
        value.unwrap_or_else(|| {
            problems.push(format!("{column} is NULL"));
            String::new()
        })
    };
    let email = required("email", raw.email);
    let organization = required("organization", raw.organization);
    let public_metadata =
        desired::json_column("public_metadata", raw.public_metadata, &mut problems);
    let private_metadata =
        desired::json_column("private_metadata", raw.private_metadata, &mut problems);
    let notify = desired::notify_column(raw.notify, &mut problems);
    let expires_in_days = desired::days_column(raw.expires_in_days, &mut problems);
    let not_before = desired::time_column("not_before", raw.not_before, &mut problems);
    let created_at = desired::time_column("created_at", raw.created_at, &mut problems);
    let updated_at = desired::time_column("updated_at", raw.updated_at, &mut problems);
    let row = MembershipRow {
        email,
        organization,
        role: raw.role,
        public_metadata,
        private_metadata,
        redirect_url: raw.redirect_url,
        expires_in_days,
        notify,
        not_before,
        source: raw.source,
        created_at,
        updated_at,
    };
    if problems.is_empty() {
        return DesiredMembership::from_row(&row);
    }
    // The address still names the person, so nothing of theirs in the organization is
    // removed while their row cannot be read.
    let parsed = match Email::parse_invitable(&row.email) {
        Ok(parsed) => Some(parsed),
        Err(error) => Email::named_by_row(&row.email, &error),
    };
    Err(InvalidMembership {
        email: row.email,
        organization: row.organization.trim_matches(' ').to_owned(),
        parsed,
        reason: problems.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(email: &str, organization: &str) -> RawMembershipRow {
        RawMembershipRow {
            email: Some(email.to_owned()),
            organization: Some(organization.to_owned()),
            public_metadata: Some("{}".to_owned()),
            private_metadata: Some("{}".to_owned()),
            ..RawMembershipRow::default()
        }
    }

    #[test]
    fn a_plain_row_reads_back_whole() {
        let row = parse(RawMembershipRow {
            role: Some("org:admin".into()),
            notify: Some("false".into()),
            expires_in_days: Some("7".into()),
            private_metadata: Some(r#"{"cost_center":"42"}"#.into()),
            not_before: Some(PgTime::of("2026-01-01T00:00:00Z".parse().unwrap())),
            ..raw("Ann@Example.com", " acme ")
        })
        .unwrap();
        assert_eq!(row.email.as_str(), "ann@example.com");
        assert_eq!(row.organization, "acme");
        assert_eq!(row.role.as_deref(), Some("org:admin"));
        assert_eq!(row.notify, Some(false));
        assert_eq!(row.expires_in_days, Some(7));
        assert_eq!(row.private_metadata["cost_center"], "42");
        assert_eq!(
            row.not_before,
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn each_unreadable_value_names_its_column_and_keeps_the_address_and_organization() {
        let cases: Vec<(RawMembershipRow, &str)> = vec![
            (
                RawMembershipRow {
                    not_before: Some(PgTime(i64::MAX)),
                    ..raw("a@example.com", "acme")
                },
                "not_before is infinity",
            ),
            (
                RawMembershipRow {
                    private_metadata: Some("{".into()),
                    ..raw("a@example.com", "acme")
                },
                "private_metadata cannot be read as JSON",
            ),
            (
                RawMembershipRow {
                    public_metadata: None,
                    ..raw("a@example.com", "acme")
                },
                "public_metadata is NULL",
            ),
            (
                RawMembershipRow {
                    notify: Some("maybe".into()),
                    ..raw("a@example.com", "acme")
                },
                "notify \"maybe\"",
            ),
            (
                RawMembershipRow {
                    expires_in_days: Some("1.5".into()),
                    ..raw("a@example.com", "acme")
                },
                "expires_in_days \"1.5\"",
            ),
            (
                RawMembershipRow {
                    role: Some("Admin".into()),
                    ..raw("a@example.com", "acme")
                },
                "role \"Admin\"",
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
            assert_eq!(invalid.organization, "acme");
        }
        let invalid = parse(RawMembershipRow {
            organization: None,
            ..raw("a@example.com", "")
        })
        .unwrap_err();
        assert_eq!(invalid.reason, "organization is NULL");
    }
}
