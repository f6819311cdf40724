//! What the tests share: a fresh database per test, dropped afterwards, and waiting on a
//! condition with a deadline instead of sleeping.
// Each test module uses its own part of this.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

/// The server the tests use; `scripts/test` exports it.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, created empty and dropped when the value is dropped.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
    admin: PgConnectOptions,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        invite_sync::store::migrate(&db.pool)
            .await
            .expect("migrations apply to a fresh database");
        db
    }

    /// A fresh database with nothing in it.
    pub async fn empty() -> TestDb {
        let admin: PgConnectOptions = server_url().parse().expect("DATABASE_URL parses");
        let name = format!("invite_sync_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin
            .clone()
            .connect()
            .await
            .expect("the test server answers");
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("a test database can be created");
        let options = admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options.clone())
            .await
            .expect("the test database answers");
        TestDb {
            pool,
            name,
            options,
            admin,
        }
    }

    /// A connection to the server's maintenance database, outside this test's database.
    pub async fn admin_connection(&self) -> sqlx::PgConnection {
        self.admin
            .clone()
            .connect()
            .await
            .expect("the test server answers")
    }

    /// Ends every session of this database, as a server restart does; returns how many.
    pub async fn terminate_sessions(&self) -> usize {
        let mut admin = self.admin_connection().await;
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("the sessions can be terminated");
        ended.into_iter().filter(|ended| *ended).count()
    }

    /// A URL for this database, for subprocesses and settings.
    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be blocked here: use a thread with its
        // own runtime. FORCE ends the pool's connections, which the test's runtime can no
        // longer close.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut conn = admin.connect().await?;
                conn.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh database, a simulated Clerk on its own port, and a reconciler wired to both.
pub struct Harness {
    pub db: TestDb,
    pub sim: invite_sync::clerk::sim::SimHandle,
    pub reconciler: invite_sync::reconcile::Reconciler,
    pub env: std::collections::HashMap<String, String>,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with(invite_sync::clerk::sim::SimOptions::default(), &[]).await
    }

    /// `overrides` are `INVITE_SYNC__SECTION__KEY` variables (or any the config reads).
    pub async fn with(
        options: invite_sync::clerk::sim::SimOptions,
        overrides: &[(&str, &str)],
    ) -> Harness {
        let db = TestDb::migrated().await;
        let sim = invite_sync::clerk::sim::start(options)
            .await
            .expect("the simulator starts");
        let mut env: std::collections::HashMap<String, String> = [
            ("DATABASE_URL".to_owned(), db.url()),
            ("CLERK_SECRET_KEY".to_owned(), sim.secret_key().to_owned()),
            (
                "INVITE_SYNC__CLERK__API_URL".to_owned(),
                sim.base_url().to_string(),
            ),
            (
                "INVITE_SYNC__LOG__LEVEL".to_owned(),
                "info,sqlx=warn".to_owned(),
            ),
        ]
        .into_iter()
        .collect();
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let settings =
            invite_sync::config::Settings::load(None, &env).expect("the test settings load");
        let reconciler = invite_sync::reconcile::from_settings(&settings)
            .await
            .expect("the reconciler builds");
        Harness {
            db,
            sim,
            reconciler,
            env,
        }
    }

    pub async fn add_people(&self, emails: &[&str]) {
        for email in emails {
            sqlx::query("INSERT INTO desired_invitees (email) VALUES ($1)")
                .bind(email)
                .execute(&self.db.pool)
                .await
                .expect("roster row inserted");
        }
    }

    pub async fn remove_people(&self, emails: &[&str]) {
        let emails: Vec<String> = emails.iter().map(|e| e.to_lowercase()).collect();
        sqlx::query("DELETE FROM desired_invitees WHERE lower(btrim(email)) = ANY($1)")
            .bind(&emails)
            .execute(&self.db.pool)
            .await
            .expect("roster rows deleted");
    }

    /// A view `hostile_roster` over the roster that adds rows no reader can take as they are: times the service's
    /// clock cannot hold, JSON its reader refuses, NULLs where values belong.
    pub async fn hostile_roster(&self) -> usize {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let sql = format!(
            r#"CREATE VIEW hostile_roster AS
           SELECT email, public_metadata, redirect_url, notify, expires_in_days, template_slug,
                  not_before, source, created_at, updated_at FROM desired_invitees
           UNION ALL SELECT * FROM (VALUES
             ('inf@example.com', '{{}}'::jsonb, NULL::text, NULL::boolean, NULL::integer,
              NULL::text, 'infinity'::timestamptz, NULL::text, now(), now()),
             ('neginf@example.com', '{{}}', NULL, NULL, NULL, NULL, '-infinity', NULL, now(), now()),
             ('far@example.com', '{{}}', NULL, NULL, NULL, NULL, '270000-01-01 00:00:00+00', NULL,
              now(), now()),
             ('created@example.com', '{{}}', NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', now()),
             ('updated@example.com', '{{}}', NULL, NULL, NULL, NULL, NULL, NULL, now(), '-infinity'),
             ('huge@example.com', '{{"n": 1e400}}', NULL, NULL, NULL, NULL, NULL, NULL, now(), now()),
             ('deep@example.com', '{{"d": {deep}}}', NULL, NULL, NULL, NULL, NULL, NULL, now(), now()),
             (NULL, '{{}}', NULL, NULL, NULL, NULL, NULL, NULL, now(), now()),
             ('nullmeta@example.com', NULL, NULL, NULL, NULL, NULL, NULL, NULL, now(), now())
           ) AS hostile"#
        );
        sqlx::query(&sql)
            .execute(&self.db.pool)
            .await
            .expect("the hostile view is created");
        9
    }

    /// Runs one cycle and returns its report (panics if it was skipped).
    pub async fn cycle(&self) -> invite_sync::reconcile::Report {
        self.cycle_with(invite_sync::reconcile::Request::new("test"))
            .await
    }

    pub async fn cycle_with(
        &self,
        request: invite_sync::reconcile::Request,
    ) -> invite_sync::reconcile::Report {
        match self
            .reconciler
            .run_cycle(&request, &tokio_util::sync::CancellationToken::new())
            .await
            .expect("the cycle runs")
        {
            invite_sync::reconcile::CycleResult::Ran(report) => *report,
            skipped => panic!("the cycle was skipped: {skipped:?}"),
        }
    }

    /// Pending invitations in the simulator, by lower-cased email.
    pub fn pending(&self) -> Vec<invite_sync::clerk::Invitation> {
        self.sim
            .invitations()
            .into_iter()
            .filter(|i| i.status == invite_sync::clerk::InvitationStatus::Pending)
            .collect()
    }

    /// Runs the binary with this harness's environment.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_invite-sync"));
        command.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        command.envs(&self.env);
        command
    }
}

/// `count` addresses `prefix0000@example.com` ...
pub fn people(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{prefix}{i:04}@example.com"))
        .collect()
}
