//! The membership roster's writers against a real database: the CSV import of a file with an
//! `organization` column, the roster webhook's membership changes as they are applied, and
//! the examples of docs/hr-integration.md, run as written.

use serde_json::{json, Value};
use sqlx::Executor;

use crate::common::{read, Harness, Proc, Scratch, TestDb};
use invite_sync::import::{
    import_reader, import_reader_with_memberships, ImportError, ImportOptions, ImportSummary,
    LineProblem,
};
use invite_sync::service::http::roster_webhook::{self, ApplyError, Change};

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

fn counts(summary: &ImportSummary) -> (u64, u64, u64, u64, u64, u64) {
    (
        summary.inserted,
        summary.updated,
        summary.deleted,
        summary.unchanged,
        summary.invalid,
        summary.kept_scim,
    )
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

/// A membership roster row as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Stored {
    email: String,
    organization: String,
    role: Option<String>,
    public_metadata: Value,
    private_metadata: Value,
    redirect_url: Option<String>,
    expires_in_days: Option<i32>,
    notify: Option<bool>,
    not_before: Option<chrono::DateTime<chrono::Utc>>,
    source: Option<String>,
}

async fn memberships_in(db: &TestDb, relation: &str) -> Vec<Stored> {
    sqlx::query_as(&format!(
        "SELECT email, organization, role, public_metadata, private_metadata, redirect_url,
                expires_in_days, notify, not_before, source
         FROM {relation} ORDER BY organization, email"
    ))
    .fetch_all(&db.pool)
    .await
    .expect("the membership roster reads")
}

async fn memberships(db: &TestDb) -> Vec<Stored> {
    memberships_in(db, "desired_memberships").await
}

/// (email, organization, role) of every row, in (organization, email) order.
async fn pairs(db: &TestDb) -> Vec<(String, String, Option<String>)> {
    memberships(db)
        .await
        .into_iter()
        .map(|row| (row.email, row.organization, row.role))
        .collect()
}

fn pair(email: &str, organization: &str, role: Option<&str>) -> (String, String, Option<String>) {
    (
        email.to_owned(),
        organization.to_owned(),
        role.map(str::to_owned),
    )
}

async fn seed(db: &TestDb, rows: &[(&str, &str, Option<&str>, &str)]) {
    for (email, organization, role, source) in rows {
        sqlx::query(
            "INSERT INTO desired_memberships (email, organization, role, source)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(email)
        .bind(organization)
        .bind(role)
        .bind(source)
        .execute(&db.pool)
        .await
        .expect("a seed row is written");
    }
}

// ---------------------------------------------------------------------------
// The CSV import

#[tokio::test]
async fn a_file_with_an_organization_column_fills_the_membership_roster_and_nothing_else() {
    let db = TestDb::migrated().await;
    let text = "\
Email,Organization,role,public_metadata,private_metadata,redirect_url,expires_in_days,notify,not_before,source
 Ann@Example.com , acme ,org:admin,\"{\"\"team\"\": \"\"ops\"\"}\",\"{\"\"id\"\": 7}\",https://app.example.com/in,14,no,2026-03-01,hr
ann@example.com,org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m,,,,,,,,
bo@example.com,acme, ,,,,,,,
";
    let summary = import_ok(&db, text).await;
    assert!(summary.memberships && summary.written);
    assert_eq!(counts(&summary), (3, 0, 0, 0, 0, 0));
    assert_eq!(
        summary.render(),
        "membership roster: inserted 3, updated 0, deleted 0, unchanged 0, invalid 0\n"
    );
    let rows = memberships(&db).await;
    assert_eq!(
        rows[0],
        Stored {
            email: "ann@example.com".into(),
            organization: "acme".into(),
            role: Some("org:admin".into()),
            public_metadata: json!({"team": "ops"}),
            private_metadata: json!({"id": 7}),
            redirect_url: Some("https://app.example.com/in".into()),
            expires_in_days: Some(14),
            notify: Some(false),
            not_before: Some("2026-03-01T00:00:00Z".parse().unwrap()),
            source: Some("hr".into()),
        }
    );
    assert_eq!(
        pairs(&db).await,
        [
            pair("ann@example.com", "acme", Some("org:admin")),
            pair("bo@example.com", "acme", None),
            pair("ann@example.com", "org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m", None),
        ],
        "one row per address and organization; an empty role is NULL, the default role"
    );
    assert_eq!(
        (rows[1].public_metadata.clone(), rows[1].notify),
        (json!({}), None)
    );
    let instance: i64 = db.scalar("SELECT count(*) FROM desired_invitees").await;
    assert_eq!(instance, 0, "the instance roster is not written");

    // The same file again writes nothing; a role changed is one update, and a file without
    // a column leaves that column as it is.
    let again = import_ok(&db, text).await;
    assert_eq!(counts(&again), (0, 0, 0, 3, 0, 0));
    let changed = import_ok(
        &db,
        "email,organization,role\nann@example.com,acme,org:member\nbo@example.com,acme,\n",
    )
    .await;
    assert_eq!(counts(&changed), (0, 1, 0, 1, 0, 0));
    let ann = &memberships(&db).await[0];
    assert_eq!(ann.role.as_deref(), Some("org:member"));
    assert_eq!(
        ann.private_metadata,
        json!({"id": 7}),
        "not in the file: kept"
    );
    assert_eq!(ann.source.as_deref(), Some("hr"));
}

#[tokio::test]
async fn every_bad_line_is_reported_with_its_line_and_column_and_nothing_is_written() {
    let db = TestDb::migrated().await;
    let text = "\
email,organization,role,private_metadata,expires_in_days,source
ann@example.com,acme,org:admin,,,
ANN@example.com , acme,org:member,,,
bo@example.com,ac me,,,,
cy@example.com,acme,admin,,,
dee@example.com,acme,org:Admin,[1],,
eve@example.com,,,,,
fay@example.com,acme,,,400,
gus@example.com,acme,,,, Scim
ann@example.com,globex,,,,
hal@example.com,acme
not-an-email,acme,,,,
";
    let summary = invalid(import(&db, text, &options()).await);
    assert!(summary.memberships && !summary.written);
    let mut found = problems(&summary);
    let (last_line, last) = found.pop().expect("the bad address is reported");
    assert_eq!(last_line, 12);
    assert!(last.starts_with("email \"not-an-email\": "), "{last}");
    let expected: Vec<(u64, &str)> = vec![
        (
            3,
            "ann@example.com in organization acme already appears on line 2; the roster \
             holds one row per address and organization",
        ),
        (
            4,
            "organization \"ac me\" must be an organization id (org_...) or a slug, \
             without whitespace or /",
        ),
        (
            5,
            "role \"admin\" must be an organization role key: org: followed by its name",
        ),
        (
            6,
            "role \"org:Admin\" must be lower case: Clerk's role keys are, so write \
             \"org:admin\"",
        ),
        (7, "organization is empty"),
        (8, "expires_in_days is 400; it must be between 1 and 365"),
        (
            9,
            "source \"Scim\" is reserved for the rows of SCIM users, which are written \
             through the identity provider, not imported",
        ),
        (11, "the line has 2 fields but the header has 6"),
    ];
    assert_eq!(
        found,
        expected
            .into_iter()
            .map(|(line, reason)| (line, reason.to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(summary.invalid, 9);
    assert!(memberships(&db).await.is_empty(), "nothing was written");

    // --skip-invalid writes the good lines and still lists the bad ones.
    let written = import(
        &db,
        text,
        &ImportOptions {
            skip_invalid: true,
            ..options()
        },
    )
    .await
    .expect("the good lines are written");
    assert_eq!(counts(&written), (2, 0, 0, 0, 9, 0));
    assert_eq!(
        pairs(&db).await,
        [
            pair("ann@example.com", "acme", Some("org:admin")),
            pair("ann@example.com", "globex", None),
        ]
    );
}

#[tokio::test]
async fn a_bad_header_refuses_the_file_naming_every_problem() {
    let db = TestDb::migrated().await;
    for (header, expected) in [
        (
            "organization,role",
            "the header of the membership roster file is not usable: the header has no email column",
        ),
        (
            "email,organization,template_slug",
            "organization invitations have no template",
        ),
        (
            "email,organization,department",
            "unknown column \"department\"; the columns of a membership roster file are",
        ),
        (
            "email,organization,role,ROLE",
            "column role appears more than once",
        ),
    ] {
        let error = import(&db, &format!("{header}\nann@example.com,acme,x\n"), &options())
            .await
            .expect_err(header);
        assert!(
            matches!(&error, ImportError::Csv(text) if text.contains(expected)),
            "{header}: {error}"
        );
    }
    assert!(memberships(&db).await.is_empty());
}

#[tokio::test]
async fn replace_is_scoped_to_the_membership_roster_and_keeps_what_bad_lines_name() {
    let db = TestDb::migrated().await;
    sqlx::query("INSERT INTO desired_invitees (email) VALUES ('kept@example.com')")
        .execute(&db.pool)
        .await
        .unwrap();
    seed(
        &db,
        &[
            ("ann@example.com", "acme", None, "hr"),
            ("ann@example.com", "globex", None, "hr"),
            ("bo@example.com", "acme", None, "hr"),
            ("bo@example.com", "globex", None, "hr"),
            ("cy@example.com", "acme", None, "hr"),
            ("cy@example.com", "globex", None, "hr"),
            ("dee@example.com", "acme", None, "scim"),
            ("eve@example.com", "acme", None, "hr"),
            ("fay@example.com", "acme", None, "hr"),
            ("gus@example.com", "acme", None, "hr"),
        ],
    )
    .await;
    // Ann stays in acme only; Bo's globex line is bad (a bad role): the pair is kept; Cy's
    // line has an organization that cannot be read: every row of Cy is kept.
    let text = "\
email,organization,role
ann@example.com,acme,
bo@example.com,globex,admin
cy@example.com,a/b,
eve@example.com,acme,
fay@example.com,acme,
gus@example.com,acme,
";
    let replace = ImportOptions {
        replace: true,
        skip_invalid: true,
        ..options()
    };
    let dry = import(
        &db,
        text,
        &ImportOptions {
            dry_run: true,
            ..replace.clone()
        },
    )
    .await
    .expect("a dry run of a small deletion succeeds");
    assert!(!dry.written);
    assert!(dry.render().ends_with("(nothing written)\nline 3: role \"admin\" must be an organization role key: org: followed by its name\nline 4: organization \"a/b\" must be an organization id (org_...) or a slug, without whitespace or /\n"), "{}", dry.render());
    assert_eq!(pairs(&db).await.len(), 10, "a dry run writes nothing");
    let summary = import(&db, text, &replace)
        .await
        .expect("the replace succeeds");
    assert_eq!(
        counts(&summary),
        (0, 0, 2, 4, 2, 1),
        "Ann in globex and Bo in acme deleted; Dee's row is SCIM's"
    );
    assert_eq!(
        ImportSummary {
            written: false,
            ..summary.clone()
        },
        dry
    );
    assert!(summary.render().starts_with(
        "membership roster: inserted 0, updated 0, deleted 2, unchanged 4, invalid 2, left to SCIM 1\n"
    ));
    let left: Vec<(String, String)> = pairs(&db)
        .await
        .into_iter()
        .map(|(email, organization, _)| (email, organization))
        .collect();
    let expected: Vec<(String, String)> = [
        ("ann@example.com", "acme"),
        ("cy@example.com", "acme"),
        ("dee@example.com", "acme"),
        ("eve@example.com", "acme"),
        ("fay@example.com", "acme"),
        ("gus@example.com", "acme"),
        ("bo@example.com", "globex"),
        ("cy@example.com", "globex"),
    ]
    .iter()
    .map(|(e, o)| ((*e).to_owned(), (*o).to_owned()))
    .collect();
    assert_eq!(left, expected);
    let instance: i64 = db.scalar("SELECT count(*) FROM desired_invitees").await;
    assert_eq!(instance, 1, "the instance roster is another roster");

    // Deleting more than the ratio is refused, naming the membership roster; --force does it.
    let one = "email,organization\nann@example.com,acme\n";
    let error = import(&db, one, &options_replace())
        .await
        .expect_err("six of eight is too many");
    match &error {
        ImportError::RefusedDeletion {
            would_delete,
            roster,
            summary,
            ..
        } => {
            assert_eq!((*would_delete, *roster), (6, 8));
            assert!(summary.memberships);
        }
        other => panic!("expected a refused deletion, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("the file would delete 6 of the membership roster's 8 rows"),
        "{error}"
    );
    assert_eq!(pairs(&db).await.len(), 8, "nothing was written");
    let forced = import(
        &db,
        one,
        &ImportOptions {
            force: true,
            ..options_replace()
        },
    )
    .await
    .expect("--force deletes");
    assert_eq!(counts(&forced), (0, 0, 6, 1, 0, 1));
    assert_eq!(
        pairs(&db).await,
        [
            pair("ann@example.com", "acme", None),
            pair("dee@example.com", "acme", None),
        ]
    );
}

fn options_replace() -> ImportOptions {
    ImportOptions {
        replace: true,
        ..options()
    }
}

#[tokio::test]
async fn scim_rows_of_the_membership_roster_are_left_alone() {
    let db = TestDb::migrated().await;
    seed(
        &db,
        &[("dee@example.com", "acme", Some("org:admin"), "scim")],
    )
    .await;
    let summary = import_ok(
        &db,
        "email,organization,role,source\nDee@example.com,acme,org:member,hr\nann@example.com,acme,,hr\n",
    )
    .await;
    assert_eq!(counts(&summary), (1, 0, 0, 0, 0, 1));
    assert!(summary.render().contains("left to SCIM 1"));
    let dee = &memberships(&db).await[1];
    assert_eq!(
        (dee.role.as_deref(), dee.source.as_deref()),
        (Some("org:admin"), Some("scim"))
    );
}

#[tokio::test]
async fn the_configured_relation_is_written_when_it_is_a_table_and_a_view_is_refused() {
    let db = TestDb::migrated().await;
    db.pool
        .execute(
            "CREATE SCHEMA b2b;
             CREATE TABLE b2b.members (LIKE desired_memberships INCLUDING ALL);
             CREATE VIEW b2b.members_view AS SELECT * FROM desired_memberships;",
        )
        .await
        .unwrap();
    let text = "email,organization\nann@example.com,acme\n";
    let summary =
        import_reader_with_memberships(&db.pool, text.as_bytes(), &options(), "b2b.members")
            .await
            .expect("a table of one's own takes the rows");
    assert_eq!(summary.inserted, 1);
    assert_eq!(memberships_in(&db, "b2b.members").await.len(), 1);
    assert!(memberships(&db).await.is_empty());

    for options in [
        options(),
        ImportOptions {
            dry_run: true,
            ..options()
        },
    ] {
        let error =
            import_reader_with_memberships(&db.pool, text.as_bytes(), &options, "b2b.members_view")
                .await
                .expect_err("a view cannot be written");
        assert!(
            matches!(&error, ImportError::NotATable(reason) if reason.starts_with(
                "source.memberships_relation \"b2b.members_view\" is a view; importing \
                 memberships and the roster webhook's memberships write rows, which needs a table"
            )),
            "{error}"
        );
    }
    let error =
        import_reader_with_memberships(&db.pool, text.as_bytes(), &options(), "b2b.nothing")
            .await
            .expect_err("a missing relation cannot be written");
    assert!(error.to_string().contains("does not exist"), "{error}");
    // An instance roster file does not look at the membership relation at all.
    let instance = import_reader_with_memberships(
        &db.pool,
        "email\nann@example.com\n".as_bytes(),
        &options(),
        "b2b.members_view",
    )
    .await
    .expect("an instance file goes to source.relation");
    assert!(!instance.memberships && instance.inserted == 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_import_command_writes_the_configured_membership_roster_and_refuses_a_view() {
    let h = Harness::new().await;
    let scratch = Scratch::new("membership-import");
    let file = scratch.write(
        "memberships.csv",
        "email,organization,role\nann@example.com,acme,org:admin\nbo@example.com,acme,\n",
    );
    let file = file.to_str().expect("a UTF-8 path");
    let run = |extra: &[(&str, &str)], args: &[&str]| {
        let mut command = h.command();
        command.envs(extra.iter().copied());
        let mut process = Proc::spawn(command, args);
        async move { process.wait(std::time::Duration::from_secs(60)).await }
    };
    let dry = run(&[], &["import", file, "--dry-run"]).await;
    dry.assert_code(0);
    assert!(
        dry.stdout.contains(
            "membership roster: inserted 2, updated 0, deleted 0, unchanged 0, invalid 0 (nothing written)"
        ),
        "{dry}"
    );
    assert!(memberships(&h.db).await.is_empty());
    let done = run(&[], &["import", file]).await;
    done.assert_code(0);
    assert_eq!(
        pairs(&h.db).await,
        [
            pair("ann@example.com", "acme", Some("org:admin")),
            pair("bo@example.com", "acme", None)
        ]
    );

    h.db.pool
        .execute("CREATE VIEW members_view AS SELECT * FROM desired_memberships")
        .await
        .unwrap();
    let refused = run(
        &[("INVITE_SYNC__SOURCE__MEMBERSHIPS_RELATION", "members_view")],
        &["import", file],
    )
    .await;
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("import failed: source.memberships_relation \"members_view\" is a view"),
        "{refused}"
    );
}

// ---------------------------------------------------------------------------
// The roster webhook's membership changes, applied

async fn apply(db: &TestDb, body: &str) -> Result<roster_webhook::Applied, ApplyError> {
    let changes = roster_webhook::parse(body.as_bytes()).expect("the payload parses");
    let mut tx = db.pool.begin().await.unwrap();
    let applied =
        roster_webhook::apply(&mut tx, "desired_invitees", "desired_memberships", &changes).await?;
    tx.commit().await.unwrap();
    Ok(applied)
}

#[tokio::test]
async fn webhook_membership_changes_upsert_replace_whole_and_remove_one_organization() {
    let db = TestDb::migrated().await;
    seed(&db, &[("ann@example.com", "globex", None, "hr")]).await;
    let applied = apply(
        &db,
        r#"{"type":"membership.upserted","data":{"email":"Ann@Example.com","organization":"acme",
            "role":"org:admin","private_metadata":{"id":1}}}"#,
    )
    .await
    .unwrap();
    assert_eq!((applied.memberships_upserted, applied.upserted), (1, 0));
    // Replaced whole: a field left out is stored empty.
    apply(
        &db,
        r#"{"type":"membership.upserted","data":{"email":"ann@example.com","organization":"acme"}}"#,
    )
    .await
    .unwrap();
    let rows = memberships(&db).await;
    assert_eq!(
        (
            rows[0].role.clone(),
            rows[0].private_metadata.clone(),
            rows[0].source.clone()
        ),
        (None, json!({}), Some("webhook".to_owned()))
    );
    let removed = apply(
        &db,
        r#"{"type":"membership.removed","data":{"email":"ANN@example.com","organization":"acme"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(removed.memberships_removed, 1);
    assert_eq!(
        pairs(&db).await,
        [pair("ann@example.com", "globex", None)],
        "the other organization stays"
    );
}

#[tokio::test]
async fn a_webhook_touching_a_scim_membership_row_is_refused_whole() {
    let db = TestDb::migrated().await;
    seed(&db, &[("dee@example.com", "acme", None, "scim")]).await;
    let error = apply(
        &db,
        r#"{"type":"roster.batch","data":{"upserted":[{"email":"new@example.com"}],
            "memberships":{"upserted":[{"email":"ann@example.com","organization":"acme"}],
                           "removed":[{"email":"dee@example.com","organization":"acme"}]}}}"#,
    )
    .await
    .expect_err("SCIM's row is not the webhook's to remove");
    assert_eq!(
        error.to_string(),
        "this address is managed through SCIM (source \"scim\"); change it through the \
         identity provider: dee@example.com in acme"
    );
}

// ---------------------------------------------------------------------------
// The examples of docs/hr-integration.md

/// The fenced block of `lang` that follows `marker` in docs/hr-integration.md.
fn block(marker: &str, lang: &str) -> String {
    let text = read("docs/hr-integration.md");
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in hr-integration.md"));
    let fence = format!("```{lang}\n");
    let open = at
        + text[at..]
            .find(&fence)
            .unwrap_or_else(|| panic!("a {lang} block follows {marker:?}"));
    let body = &text[open + fence.len()..];
    body[..body.find("```").expect("the block ends")].to_owned()
}

#[tokio::test]
async fn the_membership_examples_of_the_docs_work_as_written() {
    let db = TestDb::migrated().await;

    db.pool
        .execute(block("<!-- memberships: sql rows -->", "sql").as_str())
        .await
        .expect("the SQL rows block runs");
    assert_eq!(
        pairs(&db).await,
        [
            pair("ann@example.com", "acme", None),
            pair("Bob@Example.com", "org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m", None),
        ]
    );

    db.pool
        .execute(
            "CREATE TABLE hr_membership_export (email text, customer text, org_role text);
             INSERT INTO hr_membership_export VALUES
                 ('ann@example.com', 'acme', 'org:admin'),
                 (' Ann@example.com', 'acme ', 'org:admin'),
                 ('cy@example.com', 'globex', '');",
        )
        .await
        .unwrap();
    let load = block("<!-- memberships: sql load -->", "sql");
    db.pool.execute(load.as_str()).await.expect("the load runs");
    let loaded = pairs(&db).await;
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert_eq!(loaded[0].1, "acme");
    assert_eq!(loaded[1], pair("cy@example.com", "globex", None));
    let updated_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT updated_at FROM desired_memberships WHERE organization = 'globex'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    db.pool.execute(load.as_str()).await.expect("it runs again");
    assert_eq!(pairs(&db).await, loaded, "a second load changes nothing");
    let again: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT updated_at FROM desired_memberships WHERE organization = 'globex'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(updated_at, again, "an unchanged row is not written");

    db.pool
        .execute("TRUNCATE desired_memberships")
        .await
        .unwrap();
    let csv = block("<!-- memberships: csv -->", "csv");
    let summary = import_ok(&db, &csv).await;
    assert_eq!(counts(&summary), (3, 0, 0, 0, 0, 0));
    assert_eq!(
        summary.render(),
        block("<!-- memberships: summary -->", "text")
    );
    assert_eq!(
        pairs(&db).await,
        [
            pair("ada@example.com", "acme", Some("org:admin")),
            pair("alan@example.com", "acme", None),
            pair(
                "ada@example.com",
                "org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m",
                Some("org:member")
            ),
        ]
    );

    let upserted = block("<!-- memberships: webhook upserted -->", "json");
    let changes = roster_webhook::parse(upserted.as_bytes()).expect("the upsert parses");
    assert!(matches!(changes.as_slice(), [Change::UpsertMembership(row)]
        if row.role.as_deref() == Some("org:admin") && row.private_metadata["employee_id"] == "E-1042"));
    apply(&db, &upserted).await.expect("the upsert applies");
    apply(&db, &block("<!-- memberships: webhook removed -->", "json"))
        .await
        .expect("the removal applies");
    let batch = block("<!-- memberships: webhook batch -->", "json");
    let applied = apply(&db, &batch).await.expect("the batch applies");
    assert_eq!(
        (
            applied.upserted,
            applied.memberships_upserted,
            applied.memberships_removed
        ),
        (1, 2, 1)
    );
    let organizations_of_cy: Vec<(String, Option<String>)> = pairs(&db)
        .await
        .into_iter()
        .filter(|(email, _, _)| email == "cy@example.com")
        .map(|(_, organization, role)| (organization, role))
        .collect();
    assert_eq!(
        organizations_of_cy,
        [
            ("acme".to_owned(), None),
            (
                "org_2yqfP1uXWkT0rEc3F6hHjO1Lp7m".to_owned(),
                Some("org:admin".to_owned())
            ),
        ]
    );
    assert!(
        !pairs(&db)
            .await
            .iter()
            .any(|(email, organization, _)| email == "ann@example.com" && organization == "acme"),
        "the batch removed Ann from acme"
    );
}
