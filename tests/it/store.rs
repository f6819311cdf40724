//! The schema and the store's queries against a fresh database each.

use std::collections::BTreeSet;

use chrono::{Duration as ChronoDuration, Utc};
use invite_sync::store::{self, budget};

use crate::common::TestDb;

/// The tables of the database but sqlx's own, by name.
async fn tables(db: &TestDb) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'
           AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&db.pool)
    .await
    .expect("the tables can be listed")
    .into_iter()
    .collect()
}

/// The tables the migrations' SQL creates (and does not drop again), by name.
fn tables_the_migrations_create() -> BTreeSet<String> {
    let name_after = |sql: &str, at: usize| -> String {
        let rest = sql[at..].trim_start();
        let rest = rest.strip_prefix("if not exists").unwrap_or(rest);
        let rest = rest.strip_prefix("if exists").unwrap_or(rest).trim_start();
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '"'))
            .filter(|c| *c != '"')
            .collect();
        name.rsplit('.').next().unwrap_or_default().to_owned()
    };
    let mut created = BTreeSet::new();
    for migration in store::MIGRATOR.iter() {
        let sql = migration.sql.to_lowercase();
        for (at, statement) in sql
            .match_indices("create table")
            .chain(sql.match_indices("drop table"))
        {
            let name = name_after(&sql, at + statement.len());
            if statement.starts_with("create") {
                created.insert(name);
            } else {
                created.remove(&name);
            }
        }
    }
    created
}

/// The schema as a list of lines: every column, constraint, index, trigger and function of
/// every table and schema but PostgreSQL's own.
async fn schema(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT line FROM (
           SELECT format('column %s.%s.%s %s %s %s', table_schema, table_name, column_name,
                         data_type, is_nullable, column_default) AS line
           FROM information_schema.columns
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
           UNION ALL
           SELECT format('constraint %s %s %s', conrelid::regclass, conname,
                         pg_get_constraintdef(c.oid))
           FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
           UNION ALL
           SELECT format('index %s', indexdef) FROM pg_indexes
           WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
           UNION ALL
           SELECT format('trigger %s', pg_get_triggerdef(oid)) FROM pg_trigger
           WHERE NOT tgisinternal
           UNION ALL
           SELECT format('function %s', pg_get_functiondef(p.oid))
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND p.prokind IN ('f', 'p')
         ) AS schema ORDER BY line",
    )
    .fetch_all(&db.pool)
    .await
    .expect("the schema can be read")
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_database_and_again_change_nothing() {
    let db = TestDb::empty().await;
    store::migrate(&db.pool).await.expect("first run applies");
    let first = schema(&db).await;
    store::migrate(&db.pool)
        .await
        .expect("second run is a no-op");
    assert_eq!(
        schema(&db).await,
        first,
        "the second run changed the schema"
    );

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, store::MIGRATOR.iter().count());

    // Every table there is, from the database's own list: a new one cannot be missed.
    let tables = tables(&db).await;
    assert_eq!(
        tables,
        tables_the_migrations_create(),
        "the tables are those the migrations create"
    );
    for table in [
        "desired_invitees",
        "invite_sync_ledger",
        "invite_sync_known_users",
        "invite_sync_runs",
        "invite_sync_clerk_calls",
        "invite_sync_rate_blocks",
        "invite_sync_webhook_deliveries",
        "invite_sync_user_checks",
        "invite_sync_scim_users",
        "invite_sync_lock_holders",
        "invite_sync_full_listings",
    ] {
        assert!(tables.contains(table), "{table} exists after migrating");
    }
    for table in &tables {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(exists, "{table} is found by the name the service uses");
        let columns = first
            .iter()
            .filter(|line| line.starts_with(&format!("column public.{table}.")))
            .count();
        assert!(columns > 0, "{table} has columns in the schema compared");
    }
}

#[tokio::test]
async fn an_integrator_inserts_with_just_the_email_and_gets_the_defaults() {
    let db = TestDb::migrated().await;
    sqlx::query("INSERT INTO desired_invitees (email) VALUES ('ann@example.com')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (metadata, notify, created, updated): (
        serde_json::Value,
        Option<bool>,
        chrono::DateTime<Utc>,
        chrono::DateTime<Utc>,
    ) = sqlx::query_as(
        "SELECT public_metadata, notify, created_at, updated_at FROM desired_invitees",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(metadata, serde_json::json!({}));
    assert_eq!(notify, None);
    assert_eq!(created, updated);
}

#[tokio::test]
async fn a_second_spelling_of_the_same_email_is_rejected() {
    let db = TestDb::migrated().await;
    sqlx::query("INSERT INTO desired_invitees (email) VALUES ('Ann@Example.com')")
        .execute(&db.pool)
        .await
        .unwrap();
    for other in ["ann@example.com", "ANN@EXAMPLE.COM", " ann@example.com "] {
        let error = sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
            .bind(other)
            .execute(&db.pool)
            .await
            .expect_err("a second spelling must be rejected");
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("23505"), "{other}: unique violation");
    }
    // An upsert names the same conflict target.
    sqlx::query(
        "INSERT INTO desired_invitees (email, source) VALUES ('ANN@example.com', 'hr')
         ON CONFLICT ((lower(btrim(email)))) DO UPDATE SET source = EXCLUDED.source",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT email, source FROM desired_invitees")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("Ann@Example.com".to_owned(), Some("hr".to_owned()))]
    );
}

#[tokio::test]
async fn the_database_maintains_updated_at_on_change() {
    let db = TestDb::migrated().await;
    sqlx::query(
        "INSERT INTO desired_invitees (email, created_at, updated_at)
         VALUES ('bo@example.com', now() - interval '1 day', now() - interval '1 day')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE desired_invitees SET public_metadata = '{\"team\": \"ops\"}'")
        .execute(&db.pool)
        .await
        .unwrap();
    let age: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - updated_at)::float8 FROM desired_invitees",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(age < 60.0, "updated_at moved to now, was {age} s old");
}

#[tokio::test]
async fn a_blank_email_is_rejected() {
    let db = TestDb::migrated().await;
    let error = sqlx::query("INSERT INTO desired_invitees (email) VALUES ('  ')")
        .execute(&db.pool)
        .await
        .expect_err("blank email");
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23514")
    );
}

#[tokio::test]
async fn the_budget_records_calls_per_target_and_endpoint() {
    let db = TestDb::migrated().await;
    let before = Utc::now() - ChronoDuration::seconds(5);
    for _ in 0..3 {
        let id = budget::record_call(&db.pool, "default", "create_bulk_invitations", 10, None)
            .await
            .unwrap();
        budget::record_status(&db.pool, id, 200).await.unwrap();
    }
    budget::record_call(&db.pool, "default", "create_invitation", 1, None)
        .await
        .unwrap();
    budget::record_call(&db.pool, "staging", "create_bulk_invitations", 10, None)
        .await
        .unwrap();

    let bulk = budget::calls_since(&db.pool, "default", "create_bulk_invitations", before)
        .await
        .unwrap();
    assert_eq!(bulk.len(), 3);
    assert!(bulk.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let later = budget::calls_since(&db.pool, "default", "create_bulk_invitations", Utc::now())
        .await
        .unwrap();
    assert!(later.is_empty());

    let over_ten = sqlx::query(
        "INSERT INTO invite_sync_clerk_calls (target, endpoint, items) VALUES ('default', 'create_bulk_invitations', 11)",
    )
    .execute(&db.pool)
    .await;
    assert!(over_ten.is_err(), "a bulk call carries at most 10 items");
}

#[tokio::test]
async fn a_stored_block_holds_until_it_passes_and_the_later_one_wins() {
    let db = TestDb::migrated().await;
    assert_eq!(
        budget::blocked_until(&db.pool, "default", "create_invitation")
            .await
            .unwrap(),
        None
    );
    let later = budget::record_block(&db.pool, "default", "create_invitation", 300)
        .await
        .unwrap();
    let kept = budget::record_block(&db.pool, "default", "create_invitation", 30)
        .await
        .unwrap();
    assert_eq!(kept, later, "a shorter block does not shorten a longer one");
    let until = budget::blocked_until(&db.pool, "default", "create_invitation")
        .await
        .unwrap()
        .expect("blocked");
    assert_eq!(until, later);
    let now = invite_sync::store::now(&db.pool).await.unwrap();
    assert!(
        (until - now).num_seconds() > 290,
        "about 300 s from the database's now"
    );

    // A block of zero seconds has already passed when it is read.
    budget::record_block(&db.pool, "default", "create_bulk_invitations", 0)
        .await
        .unwrap();
    assert_eq!(
        budget::blocked_until(&db.pool, "default", "create_bulk_invitations")
            .await
            .unwrap(),
        None,
        "a block in the past no longer holds"
    );
}

#[tokio::test]
async fn only_one_create_per_person_can_be_in_flight() {
    let db = TestDb::migrated().await;
    let insert = "INSERT INTO invite_sync_ledger (target, email, state, owned) VALUES ('default', 'cy@example.com', 'sending', true)";
    sqlx::query(insert).execute(&db.pool).await.unwrap();
    let second = sqlx::query(insert).execute(&db.pool).await;
    assert!(
        second.is_err(),
        "a second in-flight create for one email is refused"
    );
    let not_normalised = sqlx::query(
        "INSERT INTO invite_sync_ledger (target, email, state, owned) VALUES ('default', 'Cy@example.com', 'pending', true)",
    )
    .execute(&db.pool)
    .await;
    assert!(
        not_normalised.is_err(),
        "the ledger holds normalised emails only"
    );
}

#[tokio::test]
async fn the_roster_table_refuses_times_outside_the_years_1_to_9999() {
    let db = TestDb::migrated().await;
    for (column, value) in [
        ("not_before", "infinity"),
        ("not_before", "-infinity"),
        ("not_before", "270000-01-01 00:00:00+00"),
        ("not_before", "10000-01-01 00:00:00+00"),
        ("created_at", "infinity"),
        ("updated_at", "-infinity"),
    ] {
        let error = sqlx::query(&format!(
            "INSERT INTO desired_invitees (email, {column}) VALUES ('t@example.com', $1::timestamptz)"
        ))
        .bind(value)
        .execute(&db.pool)
        .await
        .expect_err(value);
        let constraint = error
            .as_database_error()
            .and_then(|e| e.constraint())
            .unwrap_or_default()
            .to_owned();
        assert!(constraint.contains(column), "{column} = {value}: {error}");
    }
    sqlx::query(
        "INSERT INTO desired_invitees (email, not_before) VALUES ('t@example.com', '9999-12-31')",
    )
    .execute(&db.pool)
    .await
    .expect("a time within the years 1 to 9999 is kept");
}

/// Runs `sql` with the interval `ago` (e.g. "40 days") bound as $1.
async fn insert_aged(db: &TestDb, sql: &str, ago: &str) {
    sqlx::query(sql)
        .bind(ago)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn housekeeping_prunes_old_history_and_keeps_what_is_still_needed() {
    let db = TestDb::migrated().await;
    let run = "INSERT INTO invite_sync_runs (id, target, trigger, dry_run, outcome, started_at)
               VALUES (gen_random_uuid(), $2, 'test', false, 'succeeded', now() - $1::interval)";
    for (target, ago) in [
        ("a", "40 days"),
        ("a", "35 days"),
        ("a", "1 hour"),
        ("b", "40 days"),
    ] {
        sqlx::query(run)
            .bind(ago)
            .bind(target)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let call = "INSERT INTO invite_sync_clerk_calls (target, endpoint, items, called_at)
                VALUES ('a', 'create_invitation', 1, now() - $1::interval)";
    for ago in ["40 days", "40 days", "2 days", "10 minutes"] {
        insert_aged(&db, call, ago).await;
    }
    let unsettled_call = db
        .scalar("SELECT min(id) FROM invite_sync_clerk_calls")
        .await;
    let ledger = "INSERT INTO invite_sync_ledger (target, email, state, owned, call_id, updated_at)
                  VALUES ('a', $2, $3, true, $4, now() - $1::interval)";
    for (email, state, call_id, ago) in [
        // Superseded history: pruned.
        ("x@example.com", "revoked", None, "40 days"),
        ("x@example.com", "expired", None, "39 days"),
        ("x@example.com", "pending", None, "38 days"),
        // The latest word on y: kept however old.
        ("y@example.com", "revoked", None, "40 days"),
        // An unsettled create keeps its call.
        ("z@example.com", "sending", Some(unsettled_call), "40 days"),
        // Accepted stays.
        ("w@example.com", "accepted", None, "40 days"),
        ("w@example.com", "failed", None, "1 day"),
    ] {
        sqlx::query(ledger)
            .bind(ago)
            .bind(email)
            .bind(state)
            .bind(call_id)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let delivery = "INSERT INTO invite_sync_webhook_deliveries (source, message_id, received_at)
                    VALUES ('roster', gen_random_uuid()::text, now() - $1::interval)";
    for ago in ["40 days", "2 days", "1 minute"] {
        insert_aged(&db, delivery, ago).await;
    }
    let block = "INSERT INTO invite_sync_rate_blocks (target, endpoint, blocked_until)
                 VALUES ('a', $2, now() - $1::interval)";
    for (ago, endpoint) in [
        ("40 days", "create_invitation"),
        ("-1 hour", "create_bulk_invitations"),
    ] {
        sqlx::query(block)
            .bind(ago)
            .bind(endpoint)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let check = "INSERT INTO invite_sync_user_checks (target, email, checked_at)
                 VALUES ('a', $2, now() - $1::interval)";
    for (ago, email) in [
        ("40 days", "old@example.com"),
        ("1 hour", "new@example.com"),
    ] {
        sqlx::query(check)
            .bind(ago)
            .bind(email)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let pruned = store::retention::prune(&db.pool, 30).await.unwrap();

    assert_eq!(
        pruned,
        store::retention::Pruned {
            runs: 2,
            clerk_calls: 1,
            webhook_deliveries: 1,
            rate_blocks: 1,
            ledger: 2,
            membership_ledger: 0,
            user_checks: 1,
        }
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM invite_sync_runs WHERE target = 'b'")
            .await,
        1,
        "the latest run of a target stays"
    );
    let kept: Vec<(String, String)> =
        sqlx::query_as("SELECT email, state FROM invite_sync_ledger ORDER BY email, id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let kept: Vec<(&str, &str)> = kept.iter().map(|(e, s)| (e.as_str(), s.as_str())).collect();
    assert_eq!(
        kept,
        [
            ("w@example.com", "accepted"),
            ("w@example.com", "failed"),
            ("x@example.com", "pending"),
            ("y@example.com", "revoked"),
            ("z@example.com", "sending"),
        ]
    );

    // The shortest retention still keeps the budget's window and the replay window.
    let pruned = store::retention::prune(&db.pool, 1).await.unwrap();
    assert_eq!((pruned.clerk_calls, pruned.webhook_deliveries), (1, 0));
    assert_eq!(
        db.scalar("SELECT count(*) FROM invite_sync_clerk_calls")
            .await,
        2,
        "the unsettled create's call and the one inside the hour stay"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM invite_sync_webhook_deliveries")
            .await,
        2
    );
    let again = store::retention::prune(&db.pool, 1).await.unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
}

/// Whether each of the roster table's time constraints is validated, by name.
async fn time_constraints(db: &TestDb) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT conname::text, convalidated FROM pg_constraint
         WHERE conrelid = 'desired_invitees'::regclass AND conname LIKE '%_in_range'
         ORDER BY conname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_time_constraints_migrate_over_rows_written_before_them_which_are_reported_not_fatal() {
    let db = TestDb::migrated().await;
    assert!(
        time_constraints(&db).await.iter().all(|(_, valid)| *valid),
        "on a clean table the constraints hold for every row"
    );
    // A roster that took an infinite time before the constraints existed.
    for (name, _) in time_constraints(&db).await {
        sqlx::query(&format!(
            "ALTER TABLE desired_invitees DROP CONSTRAINT {name}"
        ))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO desired_invitees (email, not_before) VALUES
         ('old@example.com', 'infinity'), ('fine@example.com', NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    sqlx::raw_sql(include_str!(
        "../../migrations/20261128100000_roster_times_in_range.sql"
    ))
    .execute(&db.pool)
    .await
    .expect("the migration applies over rows out of range");

    let constraints = time_constraints(&db).await;
    assert_eq!(constraints.len(), 3);
    assert!(
        constraints.iter().all(|(_, valid)| !valid),
        "{constraints:?}"
    );
    let rows = store::people::read_roster(&db.pool, "desired_invitees")
        .await
        .expect("the roster reads");
    let invalid: Vec<String> = rows
        .iter()
        .filter_map(|row| row.as_ref().err())
        .map(|invalid| format!("{}: {}", invalid.email, invalid.reason))
        .collect();
    assert_eq!(invalid, ["old@example.com: not_before is infinity"]);
    assert_eq!(rows.iter().filter(|row| row.is_ok()).count(), 1);
}

#[tokio::test]
async fn the_roster_is_read_beside_each_persons_ledger_entries_and_user_status_across_batches() {
    let db = TestDb::migrated().await;
    // A pool of five reads the ledger and the users through cursors on one connection; one of
    // eight streams each on a connection of its own. Both give every person alike.
    let streaming = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    // 2,500 roster rows (more than two of the reader's batches), written in mixed case; the
    // ledger and the known users also hold addresses no row names, sorting between them.
    sqlx::query(
        "INSERT INTO desired_invitees (email)
         SELECT CASE WHEN i % 3 = 0 THEN ' P' ELSE 'p' END || lpad(i::text, 5, '0') || '@Example.com'
         FROM generate_series(1, 2500) AS i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Every even person has two entries (the older first); every fifth an off-roster neighbour
    // `p00005-x@` (which sorts after `p00005@` in byte order but before it in some locales).
    for state in ["revoked", "pending"] {
        sqlx::query(
            "INSERT INTO invite_sync_ledger (target, email, state, owned, clerk_invitation_id)
             SELECT 't', 'p' || lpad(i::text, 5, '0') || '@example.com', $1, true,
                    'inv_' || i || '_' || $1
             FROM generate_series(2, 2500, 2) AS i",
        )
        .bind(state)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // Every third person accepted a later invitation (sent by invite-sync for the even ones,
    // made by hand for the odd), read apart from the other entries.
    sqlx::query(
        "INSERT INTO invite_sync_ledger (target, email, state, owned, clerk_invitation_id)
         SELECT 't', 'p' || lpad(i::text, 5, '0') || '@example.com', 'accepted', i % 2 = 0,
                'inv_' || i || '_accepted'
         FROM generate_series(3, 2500, 3) AS i
         UNION ALL
         SELECT 't', 'p' || lpad(i::text, 5, '0') || '-x@example.com', 'accepted', true,
                'inv_x' || i || '_accepted'
         FROM generate_series(4, 2500, 8) AS i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO invite_sync_ledger (target, email, state, owned, clerk_invitation_id)
         SELECT 't', 'p' || lpad(i::text, 5, '0') || '-x@example.com', 'pending', true,
                'inv_x' || i
         FROM generate_series(5, 2500, 5) AS i
         UNION ALL
         SELECT 'other', 'p00002@example.com', 'accepted', true, 'inv_other'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO invite_sync_known_users (target, email, seen_via, deleted_at)
         SELECT 't', 'p' || lpad(i::text, 5, '0') || '@example.com', 'lookup',
                CASE WHEN i % 14 = 0 THEN now() END
         FROM generate_series(7, 2500, 7) AS i
         UNION ALL
         SELECT 't', 'p00001-x@example.com', 'lookup', NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    for pool in [&db.pool, &streaming] {
        let mut seen = Vec::new();
        let rows = store::people::for_each(pool, "desired_invitees", "t", |row, person| {
            seen.push((row.expect("every row reads").email, person));
        })
        .await
        .unwrap();

        assert_eq!(rows, 2500);
        assert_eq!(seen.len(), 2500);
        let max = pool.options().get_max_connections();
        for (index, (written, person)) in seen.iter().enumerate() {
            let i = index + 1;
            let address = format!("p{i:05}@example.com");
            assert_eq!(
                written.trim().to_lowercase(),
                address,
                "pool of {max}: row {i} out of order"
            );
            let states: Vec<(&str, &str)> = person
                .entries
                .iter()
                .map(|e| (e.email.as_str(), e.state.as_str()))
                .collect();
            let mut expected: Vec<(&str, &str)> = if i % 2 == 0 {
                vec![(address.as_str(), "revoked"), (address.as_str(), "pending")]
            } else {
                Vec::new()
            };
            // A deleted user's accepted entries are history, read in full with the others.
            let deleted_accepted = i % 3 == 0 && i % 14 == 0;
            if deleted_accepted {
                expected.push((address.as_str(), "accepted"));
            }
            assert_eq!(states, expected, "pool of {max}: row {i}: ledger entries");
            let accepted: Vec<bool> = person.accepted.iter().map(|a| a.owned).collect();
            let expected: Vec<bool> = if i % 3 == 0 && !deleted_accepted {
                vec![i % 2 == 0]
            } else {
                vec![]
            };
            assert_eq!(accepted, expected, "pool of {max}: row {i}: accepted");
            if let (Some(accepted), Some(last)) = (person.accepted.first(), person.entries.last()) {
                assert!(accepted.id > last.id, "pool of {max}: row {i}: ids");
            }
            assert_eq!(
                person.user,
                i % 7 == 0 && i % 14 != 0,
                "pool of {max}: row {i}: user"
            );
            assert_eq!(
                person.deleted,
                i % 14 == 0,
                "pool of {max}: row {i}: deleted"
            );
        }
    }
}

#[tokio::test]
async fn rows_of_one_address_in_a_roster_view_come_together_oldest_first_and_only_the_first_is_given_the_person(
) {
    let db = TestDb::migrated().await;
    // A relation without the roster table's unique key: four spellings of one address, written
    // at different times (one at no known time), among 1,500 other rows across batches.
    for sql in [
        "CREATE TABLE hr_roster (LIKE desired_invitees INCLUDING DEFAULTS)",
        "ALTER TABLE hr_roster ALTER COLUMN created_at DROP NOT NULL",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO hr_roster (email, created_at)
         SELECT 'p' || lpad(i::text, 5, '0') || '@example.com', now()
         FROM generate_series(1, 1500) AS i
         UNION ALL VALUES ('p00700-ANN@example.com', '2021-01-01T00:00:00Z'::timestamptz),
                          (' p00700-ann@example.com', NULL),
                          ('P00700-Ann@example.com', '2019-01-01T00:00:00Z'),
                          ('p00700-ann@EXAMPLE.com', '2019-01-01T00:00:00Z')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO invite_sync_ledger (target, email, state, owned, clerk_invitation_id)
         VALUES ('t', 'p00700-ann@example.com', 'pending', true, 'inv_ann')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let mut seen = Vec::new();
    let rows = store::people::for_each(&db.pool, "hr_roster", "t", |row, person| {
        let ids: Vec<String> = person
            .entries
            .iter()
            .filter_map(|e| e.clerk_invitation_id.clone())
            .collect();
        seen.push((row.expect("every row reads").email, ids));
    })
    .await
    .unwrap();

    assert_eq!(rows, 1504);
    let ann: Vec<(String, Vec<String>)> = seen
        .iter()
        .skip_while(|(email, _)| !email.to_lowercase().contains("ann"))
        .take(4)
        .cloned()
        .collect();
    assert_eq!(
        ann,
        [
            (
                " p00700-ann@example.com".to_owned(),
                vec!["inv_ann".to_owned()]
            ),
            ("P00700-Ann@example.com".to_owned(), vec![]),
            ("p00700-ann@EXAMPLE.com".to_owned(), vec![]),
            ("p00700-ANN@example.com".to_owned(), vec![]),
        ]
    );
    let position = seen
        .iter()
        .position(|(email, _)| email.contains("p00700-ann"))
        .unwrap();
    // In byte order '-' comes before '@'.
    assert_eq!(seen[position - 1].0, "p00699@example.com");
    assert_eq!(seen[position + 4].0, "p00700@example.com");
}
