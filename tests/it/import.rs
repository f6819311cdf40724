//! The CSV roster import against a real database.

use std::io::Read;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::common::TestDb;
use invite_sync::domain::DesiredRow;
use invite_sync::import::{
    import_path, import_reader, ImportError, ImportOptions, ImportSummary, LineProblem,
};
use invite_sync::store::{desired, people};

fn options() -> ImportOptions {
    ImportOptions {
        relation: "desired_invitees".to_owned(),
        replace: false,
        dry_run: false,
        skip_invalid: false,
        force: false,
        max_delete_ratio: 0.2,
    }
}

async fn import(
    db: &TestDb,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    import_reader(&db.pool, text.as_bytes(), options).await
}

async fn import_ok(db: &TestDb, text: &str) -> ImportSummary {
    import(db, text, &options())
        .await
        .expect("the import succeeds")
}

async fn rows(db: &TestDb) -> Vec<DesiredRow> {
    let mut rows: Vec<DesiredRow> = people::read_roster(&db.pool, "desired_invitees")
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.expect("every imported row reads back"))
        .collect();
    rows.sort_by(|a, b| a.email.cmp(&b.email));
    rows
}

async fn row(db: &TestDb, email: &str) -> DesiredRow {
    rows(db)
        .await
        .into_iter()
        .find(|row| row.email.eq_ignore_ascii_case(email))
        .unwrap_or_else(|| panic!("{email} is in the roster"))
}

async fn count(db: &TestDb) -> i64 {
    desired::count(&db.pool, "desired_invitees").await.unwrap()
}

async fn seed(db: &TestDb, emails: &[&str]) {
    for email in emails {
        sqlx::query("INSERT INTO desired_invitees (email, source) VALUES ($1, 'hr')")
            .bind(email)
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

fn time(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn problem(line: u64, reason: &str) -> (u64, String) {
    (line, reason.to_owned())
}

fn problems(summary: &ImportSummary) -> Vec<(u64, String)> {
    summary
        .problems
        .iter()
        .map(|LineProblem { line, reason }| (*line, reason.clone()))
        .collect()
}

fn invalid(result: Result<ImportSummary, ImportError>) -> ImportSummary {
    match result {
        Err(ImportError::Invalid(summary)) => summary,
        other => panic!("expected bad lines, got {other:?}"),
    }
}

#[tokio::test]
async fn every_optional_column_is_read_and_an_empty_cell_is_null() {
    let db = TestDb::migrated().await;
    let text = "\
email,redirect_url,not_before,expires_in_days,notify,template_slug,source,public_metadata
Ann@Example.com,https://app.example.com/welcome,2026-03-01T09:30:00+02:00,14,yes,waitlist_invitation,hr,\"{\"\"team\"\": \"\"ops\"\", \"\"level\"\": 3}\"
bo@example.com,http://app.example.com/,2026-03-02,365,0,invitation,hr,{}
cy@example.com,,,,,,,
";
    let summary = import_ok(&db, text).await;
    assert_eq!(
        (
            summary.inserted,
            summary.updated,
            summary.unchanged,
            summary.invalid
        ),
        (3, 0, 0, 0)
    );
    assert!(summary.written);

    let ann = row(&db, "ann@example.com").await;
    assert_eq!(ann.email, "ann@example.com", "stored normalised");
    assert_eq!(
        ann.redirect_url.as_deref(),
        Some("https://app.example.com/welcome")
    );
    assert_eq!(ann.not_before, Some(time("2026-03-01T07:30:00Z")));
    assert_eq!(ann.expires_in_days, Some(14));
    assert_eq!(ann.notify, Some(true));
    assert_eq!(ann.template_slug.as_deref(), Some("waitlist_invitation"));
    assert_eq!(ann.source.as_deref(), Some("hr"));
    assert_eq!(ann.public_metadata, json!({"team": "ops", "level": 3}));

    let bo = row(&db, "bo@example.com").await;
    assert_eq!(
        bo.not_before,
        Some(time("2026-03-02T00:00:00Z")),
        "a date is midnight UTC"
    );
    assert_eq!(bo.expires_in_days, Some(365));
    assert_eq!(bo.notify, Some(false));
    assert_eq!(bo.template_slug.as_deref(), Some("invitation"));

    let cy = row(&db, "cy@example.com").await;
    assert_eq!(
        (
            cy.redirect_url,
            cy.not_before,
            cy.expires_in_days,
            cy.notify,
            cy.template_slug,
            cy.source
        ),
        (None, None, None, None, None, None)
    );
    assert_eq!(cy.public_metadata, json!({}));
}

#[tokio::test]
async fn meta_columns_gather_into_public_metadata_with_typed_values() {
    let db = TestDb::migrated().await;
    let text = "\
email,meta.team,meta.level,meta.admin,meta.zip,meta.ratio
ann@example.com,ops,3,true,02139,0.5
bo@example.com,,,FALSE,,
cy@example.com,,,,,
";
    let summary = import_ok(&db, text).await;
    assert_eq!(summary.inserted, 3);
    assert_eq!(
        row(&db, "ann@example.com").await.public_metadata,
        json!({"team": "ops", "level": 3, "admin": true, "zip": "02139", "ratio": 0.5})
    );
    assert_eq!(
        row(&db, "bo@example.com").await.public_metadata,
        json!({"admin": false})
    );
    assert_eq!(row(&db, "cy@example.com").await.public_metadata, json!({}));
}

#[tokio::test]
async fn a_bom_and_crlf_line_ends_are_read() {
    let db = TestDb::migrated().await;
    let text = "\u{feff}email,source\r\nAnn@Example.com,hr\r\nbo@example.com,hr\r\n\r\ncy@example.com,x\r\n";
    let summary = import_ok(&db, text).await;
    assert_eq!((summary.inserted, summary.invalid), (3, 0));
    assert_eq!(
        row(&db, "cy@example.com").await.source.as_deref(),
        Some("x")
    );

    let db = TestDb::migrated().await;
    let text = "\u{feff}email,notify\r\nann@example.com,maybe\r\n\"bo@example.com\",no\r\ncy@example.com,true";
    let summary = invalid(import(&db, text, &options()).await);
    assert_eq!(
        problems(&summary),
        [problem(
            2,
            r#"notify "maybe" must be true, false, yes, no, 1 or 0"#
        )]
    );
}

#[tokio::test]
async fn quoted_fields_keep_their_commas_quotes_and_line_breaks() {
    let db = TestDb::migrated().await;
    let text = "email,source,meta.note\n\
                ann@example.com,\"Smith, Jane\",\"first line\nsecond, line\"\n\
                \"bo@example.com\",\"say \"\"hi\"\"\",\"a\r\nb\"\n";
    let summary = import_ok(&db, text).await;
    assert_eq!(summary.inserted, 2);
    let ann = row(&db, "ann@example.com").await;
    assert_eq!(ann.source.as_deref(), Some("Smith, Jane"));
    assert_eq!(
        ann.public_metadata,
        json!({"note": "first line\nsecond, line"})
    );
    let bo = row(&db, "bo@example.com").await;
    assert_eq!(bo.source.as_deref(), Some("say \"hi\""));
    assert_eq!(bo.public_metadata, json!({"note": "a\r\nb"}));
}

#[tokio::test]
async fn bad_lines_are_reported_at_their_physical_line_and_nothing_is_written() {
    let db = TestDb::migrated().await;
    let text = "\
email,expires_in_days,template_slug,redirect_url,not_before,notify,source
ann@example.com,10,invitation,https://a.example.com,2026-01-01,true,\"a source
over three
lines\"
not-an-email,,,,,,
bo@example.com,0,,,,,
cy@example.com,,welcome,,,,

dee@example.com,,,ftp://files.example.com,,,
eve@example.com,ten,,,soon,perhaps,
fay@example.com,5
gus@example.com,5,invitation,,,,hr
";
    let summary = invalid(import(&db, text, &options()).await);
    assert_eq!(
        problems(&summary),
        [
            problem(
                5,
                r#"email "not-an-email": the email must contain exactly one @"#
            ),
            problem(6, "expires_in_days is 0; it must be between 1 and 365"),
            problem(
                7,
                r#"template_slug "welcome" is not invitation or waitlist_invitation"#
            ),
            problem(
                9,
                r#"redirect_url "ftp://files.example.com" must be an http or https URL"#
            ),
            problem(
                10,
                "expires_in_days \"ten\" is not a whole number between 1 and 365; \
                 not_before \"soon\" is not an RFC 3339 time (2026-01-31T09:00:00Z) or a date \
                 (2026-01-31); notify \"perhaps\" must be true, false, yes, no, 1 or 0"
            ),
            problem(11, "the line has 2 fields but the header has 7"),
        ]
    );
    assert_eq!(summary.invalid, 6);
    assert_eq!(
        summary.inserted, 2,
        "the counts say what the import would have done"
    );
    assert!(!summary.written);
    assert_eq!(count(&db).await, 0, "nothing is written");

    let message = ImportError::Invalid(summary).to_string();
    assert!(
        message.contains("6 bad lines; nothing was written"),
        "{message}"
    );
    assert!(
        message.contains("line 11: the line has 2 fields"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_json_metadata_and_bad_utf8_are_bad_lines() {
    let db = TestDb::migrated().await;
    let text = "email,public_metadata\nann@example.com,\"[1, 2]\"\nbo@example.com,{oops\n";
    let summary = invalid(import(&db, text, &options()).await);
    assert_eq!(
        summary.problems[0],
        LineProblem {
            line: 2,
            reason: "public_metadata must be a JSON object".to_owned()
        }
    );
    assert_eq!(summary.problems[1].line, 3);
    assert!(summary.problems[1]
        .reason
        .starts_with("public_metadata is not valid JSON"));

    let mut bytes = b"email,source\nann@example.com,\xff\xfe\n".to_vec();
    bytes.extend_from_slice(b"bo@example.com,ok\n");
    let result = import_reader(&db.pool, bytes.as_slice(), &options()).await;
    let summary = invalid(result);
    assert_eq!(
        problems(&summary),
        [problem(2, "field 2 is not valid UTF-8")]
    );
}

#[tokio::test]
async fn skip_invalid_writes_the_good_lines_and_reports_the_bad_ones() {
    let db = TestDb::migrated().await;
    let text =
        "email,notify\nann@example.com,yes\nbad,yes\nbo@example.com,sometimes\ncy@example.com,no\n";
    let summary = import(
        &db,
        text,
        &ImportOptions {
            skip_invalid: true,
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!((summary.inserted, summary.invalid), (2, 2));
    assert!(summary.written);
    assert_eq!(
        summary.problems.iter().map(|p| p.line).collect::<Vec<_>>(),
        [3, 4]
    );
    let emails: Vec<String> = rows(&db).await.into_iter().map(|r| r.email).collect();
    assert_eq!(emails, ["ann@example.com", "cy@example.com"]);

    let rendered = summary.render();
    assert_eq!(
        rendered.lines().next(),
        Some("inserted 2, updated 0, deleted 0, unchanged 0, invalid 2")
    );
    assert!(rendered.contains("line 3: email \"bad\": the email must contain exactly one @\n"));
    assert!(rendered.contains("line 4: notify \"sometimes\""));
}

#[tokio::test]
async fn the_same_address_twice_is_a_bad_line_whatever_its_spelling() {
    let db = TestDb::migrated().await;
    let text = "email,source\nAnn@Example.com,a\nbo@example.com,b\n  ann@EXAMPLE.com ,c\n";
    let summary = invalid(import(&db, text, &options()).await);
    assert_eq!(
        problems(&summary),
        [problem(4, "ann@example.com already appears on line 2")]
    );
    assert_eq!(count(&db).await, 0);

    let summary = import(
        &db,
        text,
        &ImportOptions {
            skip_invalid: true,
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!((summary.inserted, summary.invalid), (2, 1));
    assert_eq!(
        row(&db, "ann@example.com").await.source.as_deref(),
        Some("a"),
        "the first line wins"
    );
}

#[tokio::test]
async fn replace_deletes_the_rows_the_file_does_not_name() {
    let db = TestDb::migrated().await;
    let roster: Vec<String> = (0..10).map(|i| format!("p{i}@example.com")).collect();
    seed(&db, &roster.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // p0..p8 stay (one in another spelling), p9 goes, new@ arrives: 1 of 10 deleted.
    let mut text = String::from("email,source\n");
    for i in 0..9 {
        let email = if i == 0 {
            "P0@Example.COM".to_owned()
        } else {
            format!("p{i}@example.com")
        };
        text.push_str(&format!("{email},hr\n"));
    }
    text.push_str("new@example.com,hr\n");
    let summary = import(
        &db,
        &text,
        &ImportOptions {
            replace: true,
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            summary.inserted,
            summary.updated,
            summary.deleted,
            summary.unchanged
        ),
        (1, 0, 1, 9)
    );
    let emails: Vec<String> = rows(&db).await.into_iter().map(|r| r.email).collect();
    assert!(!emails.contains(&"p9@example.com".to_owned()));
    assert!(emails.contains(&"new@example.com".to_owned()));
    assert_eq!(emails.len(), 10);
}

#[tokio::test]
async fn replace_keeps_people_named_on_skipped_bad_lines() {
    let db = TestDb::migrated().await;
    seed(
        &db,
        &["ann@example.com", "bo@example.com", "cy@example.com"],
    )
    .await;
    let text = "email,notify\nann@example.com,yes\nbo@example.com,sometimes\ncy@example.com\n";
    let summary = import(
        &db,
        text,
        &ImportOptions {
            replace: true,
            skip_invalid: true,
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!((summary.deleted, summary.invalid), (0, 2));
    assert_eq!(count(&db).await, 3);
}

#[tokio::test]
async fn replace_refuses_to_delete_more_than_the_ratio_unless_forced() {
    let db = TestDb::migrated().await;
    let roster: Vec<String> = (0..10).map(|i| format!("p{i}@example.com")).collect();
    seed(&db, &roster.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // Keeping 7 of 10 deletes 3: 30% > 20%.
    let text = format!("email\n{}\n", roster[..7].join("\n"));
    let replace = ImportOptions {
        replace: true,
        ..options()
    };
    match import(&db, &text, &replace).await {
        Err(ImportError::RefusedDeletion {
            would_delete,
            roster,
            max_ratio,
            summary,
        }) => {
            assert_eq!((would_delete, roster), (3, 10));
            assert_eq!(max_ratio, 0.2);
            // What it would have done, for `import --replace --dry-run` to print.
            assert_eq!((summary.deleted, summary.unchanged), (3, 7));
            assert!(!summary.written);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(count(&db).await, 10, "nothing is deleted");

    // Exactly at the ratio is allowed: keeping 8 deletes 2 of 10.
    let dry = ImportOptions {
        dry_run: true,
        ..replace.clone()
    };
    let at_limit = format!("email\n{}\n", roster[..8].join("\n"));
    assert_eq!(import(&db, &at_limit, &dry).await.unwrap().deleted, 2);

    // An empty file would delete everyone.
    assert!(matches!(
        import(&db, "email\n", &replace).await,
        Err(ImportError::RefusedDeletion {
            would_delete: 10,
            ..
        })
    ));

    let forced = import(
        &db,
        &text,
        &ImportOptions {
            force: true,
            ..replace
        },
    )
    .await
    .unwrap();
    assert_eq!((forced.deleted, forced.unchanged), (3, 7));
    assert_eq!(count(&db).await, 7);
}

#[tokio::test]
async fn importing_the_same_file_again_changes_nothing() {
    let db = TestDb::migrated().await;
    let text = "\
email,redirect_url,not_before,expires_in_days,notify,template_slug,source,meta.team,meta.level
Ann@Example.com,https://app.example.com/,2026-03-01T09:30:00Z,14,yes,invitation,hr,ops,3
bo@example.com,,2026-03-02,,no,,hr,,
cy@example.com,,,,,,,,
";
    assert_eq!(import_ok(&db, text).await.inserted, 3);
    let before: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT email, updated_at FROM desired_invitees ORDER BY email")
            .fetch_all(&db.pool)
            .await
            .unwrap();

    let again = import(
        &db,
        text,
        &ImportOptions {
            replace: true,
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            again.inserted,
            again.updated,
            again.deleted,
            again.unchanged,
            again.invalid
        ),
        (0, 0, 0, 3, 0)
    );
    let after: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT email, updated_at FROM desired_invitees ORDER BY email")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(before, after, "updated_at is untouched");
}

#[tokio::test]
async fn an_existing_row_in_another_case_is_updated_not_duplicated() {
    let db = TestDb::migrated().await;
    seed(&db, &["Ann@Example.com"]).await;
    let summary = import_ok(&db, "email,source,meta.team\n ann@example.COM ,csv,ops\n").await;
    assert_eq!(
        (summary.inserted, summary.updated, summary.unchanged),
        (0, 1, 0)
    );
    let rows = rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].source.as_deref(), Some("csv"));
    assert_eq!(rows[0].public_metadata, json!({"team": "ops"}));
    assert!(rows[0].updated_at > rows[0].created_at);
}

#[tokio::test]
async fn columns_the_file_lacks_are_left_as_they_are() {
    let db = TestDb::migrated().await;
    sqlx::query(
        "INSERT INTO desired_invitees (email, source, notify, public_metadata)
         VALUES ('ann@example.com', 'webhook', false, '{\"team\": \"ops\"}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let summary = import_ok(&db, "email,expires_in_days\nann@example.com,7\n").await;
    assert_eq!(summary.updated, 1);
    let ann = row(&db, "ann@example.com").await;
    assert_eq!(ann.expires_in_days, Some(7));
    assert_eq!(ann.source.as_deref(), Some("webhook"));
    assert_eq!(ann.notify, Some(false));
    assert_eq!(ann.public_metadata, json!({"team": "ops"}));

    let summary = import_ok(&db, "email\nann@example.com\nbo@example.com\n").await;
    assert_eq!((summary.inserted, summary.unchanged), (1, 1));
}

#[tokio::test]
async fn a_dry_run_reports_what_the_import_would_do_and_writes_nothing() {
    let db = TestDb::migrated().await;
    seed(
        &db,
        &[
            "keep@example.com",
            "change@example.com",
            "p1@example.com",
            "p2@example.com",
            "p3@example.com",
            "gone@example.com",
        ],
    )
    .await;
    let mut text = String::from(
        "email,source\nkeep@example.com,hr\nCHANGE@example.com,csv\nnew@example.com,csv\nbad,csv\n",
    );
    for i in 1..=3 {
        text.push_str(&format!("p{i}@example.com,hr\n"));
    }
    let snapshot = rows(&db).await;
    let base = ImportOptions {
        replace: true,
        skip_invalid: true,
        ..options()
    };
    let dry = import(
        &db,
        &text,
        &ImportOptions {
            dry_run: true,
            ..base.clone()
        },
    )
    .await
    .unwrap();
    assert!(!dry.written);
    assert!(dry.render().contains("(nothing written)"));
    assert_eq!(rows(&db).await, snapshot, "a dry run writes nothing");

    let real = import(&db, &text, &base).await.unwrap();
    assert!(real.written);
    assert_eq!(
        ImportSummary {
            written: false,
            ..real.clone()
        },
        dry
    );
    assert_eq!(
        (
            real.inserted,
            real.updated,
            real.deleted,
            real.unchanged,
            real.invalid
        ),
        (1, 1, 1, 4, 1)
    );
}

#[tokio::test]
async fn an_unknown_column_or_a_missing_email_column_is_refused_by_name() {
    let db = TestDb::migrated().await;
    let error = import(
        &db,
        "email,Name,dept\nann@example.com,Ann,ops\n",
        &options(),
    )
    .await
    .unwrap_err();
    let ImportError::Csv(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains(r#"unknown columns "Name", "dept""#),
        "{message}"
    );

    let error = import(&db, "mail,source\nann@example.com,hr\n", &options())
        .await
        .unwrap_err();
    let ImportError::Csv(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains("no email column"), "{message}");
    assert!(message.contains(r#"unknown column "mail""#), "{message}");

    let error = import(&db, "email,public_metadata,meta.team\n", &options())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("both public_metadata and meta.*"),
        "{error}"
    );

    let error = import(&db, "", &options()).await.unwrap_err();
    assert!(error.to_string().contains("the file is empty"), "{error}");
    assert_eq!(count(&db).await, 0);
}

#[tokio::test]
async fn a_file_is_read_from_its_path_and_a_missing_one_is_an_io_error() {
    let db = TestDb::migrated().await;
    let path = std::env::temp_dir().join(format!("roster-{}.csv", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, "email\nann@example.com\n").unwrap();
    let summary = import_path(&db.pool, &path, &options()).await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(summary.unwrap().inserted, 1);

    let error = import_path(&db.pool, &path, &options()).await.unwrap_err();
    assert!(matches!(error, ImportError::Io(_)), "{error:?}");
    assert!(error.to_string().contains("roster-"), "{error}");
}

/// A roster of `rows` people written as it is read, so the whole file never exists in memory.
pub struct GeneratedRoster {
    next: u64,
    rows: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl GeneratedRoster {
    pub fn new(rows: u64) -> Self {
        let header = "email,redirect_url,not_before,expires_in_days,notify,template_slug,source,meta.team,meta.number\r\n";
        GeneratedRoster {
            next: 0,
            rows,
            buffer: header.as_bytes().to_vec(),
            at: 0,
        }
    }
}

impl Read for GeneratedRoster {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buffer.len() && self.next < self.rows {
            let i = self.next;
            self.next += 1;
            self.buffer.clear();
            self.at = 0;
            self.buffer.extend_from_slice(
                format!(
                    "Person.{i}@Example.com,https://app.example.com/welcome,2026-0{}-01,{},{},invitation,\"hr, batch {}\",team {},{i}\r\n",
                    i % 9 + 1,
                    i % 365 + 1,
                    i % 2 == 0,
                    i / 1000,
                    i % 7
                )
                .as_bytes(),
            );
        }
        let n = out.len().min(self.buffer.len() - self.at);
        out[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[tokio::test]
async fn a_hundred_thousand_line_file_imports_in_one_pass() {
    let db = TestDb::migrated().await;
    let rows = 100_000;
    let summary = import_reader(&db.pool, GeneratedRoster::new(rows), &options())
        .await
        .unwrap();
    assert_eq!(
        (
            summary.inserted,
            summary.updated,
            summary.unchanged,
            summary.invalid
        ),
        (rows, 0, 0, 0)
    );
    assert_eq!(count(&db).await, rows as i64);
    let last = row(&db, &format!("person.{}@example.com", rows - 1)).await;
    assert_eq!(
        last.public_metadata,
        json!({"team": "team 4", "number": rows - 1})
    );
    assert_eq!(last.source.as_deref(), Some("hr, batch 99"));

    // A full replace with the same file touches nothing.
    let again = import_reader(
        &db.pool,
        GeneratedRoster::new(rows),
        &ImportOptions {
            replace: true,
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            again.inserted,
            again.updated,
            again.deleted,
            again.unchanged
        ),
        (0, 0, 0, rows)
    );
}

/// Writes a generated roster for measuring an import from outside the tests:
/// `IMPORT_SAMPLE_PATH=/tmp/roster.csv IMPORT_SAMPLE_ROWS=100000 cargo nextest run --test it
/// import::write_a_sample_roster --run-ignored only`, then `invite-sync import /tmp/roster.csv`.
#[test]
#[ignore = "writes a file for measurement; run on demand"]
fn write_a_sample_roster() {
    let path = std::env::var("IMPORT_SAMPLE_PATH")
        .unwrap_or_else(|_| "/tmp/invite-sync-roster.csv".to_owned());
    let rows = std::env::var("IMPORT_SAMPLE_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    std::io::copy(&mut GeneratedRoster::new(rows), &mut file).unwrap();
    println!("wrote {rows} rows to {path}");
}

#[tokio::test]
async fn a_nul_character_in_a_cell_is_a_bad_line_that_skip_invalid_can_skip() {
    let db = TestDb::migrated().await;
    let text = "email,source,meta.team\n\
                ann@example.com,hr,ops\n\
                bo@example.com,h\u{0}r,ops\n\
                cy@example.com,hr,o\u{0}ps\n\
                dan\u{0}@example.com,hr,ops\n";

    let summary = invalid(import(&db, text, &options()).await);
    let lines: Vec<u64> = summary.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [3, 4, 5], "{:?}", summary.problems);
    for (problem, field) in summary
        .problems
        .iter()
        .zip(["source", "public_metadata", "email"])
    {
        assert!(problem.reason.contains(field), "{problem:?}");
    }
    assert_eq!(count(&db).await, 0);

    let summary = import(
        &db,
        text,
        &ImportOptions {
            skip_invalid: true,
            ..options()
        },
    )
    .await
    .expect("the good lines are written");
    assert_eq!((summary.inserted, summary.invalid), (1, 3));
    let emails: Vec<String> = rows(&db).await.into_iter().map(|r| r.email).collect();
    assert_eq!(emails, ["ann@example.com"]);
}

#[tokio::test]
async fn an_address_padded_with_whitespace_other_than_spaces_is_a_bad_line() {
    let db = TestDb::migrated().await;
    let text = "email,source\n  ann@example.com ,hr\ndan@example.com\u{a0},hr\n";
    let summary = invalid(import(&db, text, &options()).await);
    assert_eq!(problems(&summary).len(), 1, "{:?}", summary.problems);
    assert_eq!(summary.problems[0].line, 3);
    assert!(
        summary.problems[0].reason.contains("whitespace"),
        "{:?}",
        summary.problems
    );
}

#[tokio::test]
async fn a_row_claiming_scims_source_in_any_spelling_is_a_bad_line_and_never_written() {
    let db = TestDb::migrated().await;
    let text = "email,source\n\
                orphan@example.com,scim\n\
                ann@example.com,SCIM\n\
                bo@example.com,\" sCiM \"\n\
                cy@example.com,\u{200b}scim\n\
                dan@example.com,hr\n\
                eve@example.com,scimitar\n";

    let summary = invalid(import(&db, text, &options()).await);
    let lines: Vec<u64> = summary.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4, 5], "{:?}", summary.problems);
    for problem in &summary.problems {
        assert!(
            problem.reason.contains("source") && problem.reason.contains("SCIM users"),
            "{problem:?}"
        );
    }
    assert_eq!(count(&db).await, 0);

    let summary = import(
        &db,
        text,
        &ImportOptions {
            skip_invalid: true,
            ..options()
        },
    )
    .await
    .expect("the good lines are written");
    assert_eq!((summary.inserted, summary.invalid), (2, 4));
    let sources: Vec<(String, Option<String>)> = rows(&db)
        .await
        .into_iter()
        .map(|r| (r.email, r.source))
        .collect();
    assert_eq!(
        sources,
        [
            ("dan@example.com".to_owned(), Some("hr".to_owned())),
            ("eve@example.com".to_owned(), Some("scimitar".to_owned())),
        ]
    );
}
