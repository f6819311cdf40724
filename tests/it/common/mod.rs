//! What the tests share: a fresh database per test, dropped afterwards; the application (a
//! database, a simulated Clerk and a reconciler wired to both); the service running on a
//! port of its own; the binary as a child process; the repository's files; and the looks at
//! the outcome that several areas take. Waiting is on a condition with a deadline, never a
//! bare sleep. The part the benchmarks use too is in `shared.rs`.
// Each test module uses its own part of this.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use invite_sync::clerk::sim::{Operation, SimHandle, SimOptions, SimStats};
use invite_sync::clerk::{Invitation, InvitationStatus};
use invite_sync::config::Settings;
use invite_sync::reconcile::{CycleResult, Reconciler, Report, Request};
use invite_sync::store::runs::RunRecord;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod shared;
pub use shared::{free_port, server_url, wait_for, Finished, Proc, TestDb, NEVER};

// ---------------------------------------------------------------------------
// The application: a database, a simulated Clerk, a reconciler

/// A fresh database, a simulated Clerk on its own port, and a reconciler wired to both.
pub struct Harness {
    pub db: TestDb,
    pub sim: SimHandle,
    pub reconciler: Reconciler,
    pub env: HashMap<String, String>,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with(SimOptions::default(), &[]).await
    }

    /// `overrides` are `INVITE_SYNC__SECTION__KEY` variables (or any the config reads).
    pub async fn with(options: SimOptions, overrides: &[(&str, &str)]) -> Harness {
        let db = TestDb::migrated().await;
        let sim = invite_sync::clerk::sim::start(options)
            .await
            .expect("the simulator starts");
        let mut env: HashMap<String, String> = [
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
        let settings = Settings::load(None, &env).expect("the test settings load");
        let reconciler = invite_sync::startup::reconciler(&settings)
            .await
            .expect("the reconciler builds");
        Harness {
            db,
            sim,
            reconciler,
            env,
        }
    }

    /// A harness for a service that runs while the test watches: its schedule never fires,
    /// its target is its own, and its pool stays small, as the whole suite shares one
    /// server's connection limit. `overrides` come on top.
    pub async fn serving(overrides: &[(&str, &str)]) -> Harness {
        let target = unique_target("service");
        let mut all: Vec<(&str, &str)> = vec![
            ("INVITE_SYNC__DATABASE__MAX_CONNECTIONS", "5"),
            ("INVITE_SYNC__SYNC__SCHEDULE", NEVER),
            ("INVITE_SYNC__SYNC__TARGET", &target),
        ];
        all.extend_from_slice(overrides);
        Harness::with(SimOptions::default(), &all).await
    }

    /// The settings the harness was built with.
    pub fn settings(&self) -> Settings {
        Settings::load(None, &self.env).expect("the test settings load")
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
    pub async fn cycle(&self) -> Report {
        self.cycle_with(Request::new("test")).await
    }

    pub async fn cycle_with(&self, request: Request) -> Report {
        match self
            .reconciler
            .run_cycle(&request, &CancellationToken::new())
            .await
            .expect("the cycle runs")
        {
            CycleResult::Ran(report) => *report,
            skipped => panic!("the cycle was skipped: {skipped:?}"),
        }
    }

    /// Pending invitations in the simulator, by lower-cased email.
    pub fn pending(&self) -> Vec<Invitation> {
        self.sim
            .invitations()
            .into_iter()
            .filter(|i| i.status == InvitationStatus::Pending)
            .collect()
    }

    /// The PostgreSQL session that listens for roster changes, if one does.
    pub async fn listener_pid(&self) -> Option<i32> {
        let mut admin = self.db.admin_connection().await;
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
             AND query ILIKE 'LISTEN%invite_sync%' ORDER BY backend_start DESC LIMIT 1",
        )
        .bind(&self.db.name)
        .fetch_optional(&mut admin)
        .await
        .expect("pg_stat_activity can be read")
    }

    /// Runs the binary with this harness's environment.
    pub fn command(&self) -> Command {
        let mut command = bare_command(&[]);
        command.envs(&self.env);
        command
    }
}

/// A target name no other test uses: the advisory lock's key is derived from it alone.
pub fn unique_target(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------
// The service, running in the test

/// The service in a task of the test, its HTTP server on a port of its own (port 0), on
/// the harness's reconciler and so its pool. Dropping it cancels the service, so a failed
/// assertion leaves nothing running.
pub struct Service {
    pub addr: SocketAddr,
    /// The admin listener's address, when the service was started with one on port 0.
    pub admin_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    stop_within: Duration,
}

impl Service {
    /// A request to the SCIM endpoint (`/scim/v2{path}`), with `token` as its bearer and
    /// `body` as `application/scim+json`: the status and the answer's JSON (`Null` when
    /// empty), whose `Content-Type` must be `application/scim+json`.
    pub async fn scim_call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
        let mut request = self.client.request(
            method.clone(),
            format!("http://{}/scim/v2{path}", self.addr),
        );
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/scim+json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let content_type = content_type(&response);
        let text = response.text().await.expect("the body can be read");
        if text.is_empty() {
            return (status, serde_json::Value::Null);
        }
        assert_eq!(
            content_type, "application/scim+json",
            "{method} {path}: {status} {text}"
        );
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, body)
    }
}

impl Service {
    /// The whole service as `invite-sync run` serves it (`service::run`: the worker and its
    /// start cycle, the schedule, the change listener, housekeeping and HTTP); an admin
    /// listener only if the settings name one.
    pub async fn start(h: &Harness) -> Service {
        let settings = h.settings();
        let listener = bind().await;
        let addr = local_addr(&listener);
        let reconciler = h.reconciler.clone();
        let stop_within = stop_within(&settings);
        Service::spawn(addr, None, stop_within, move |shutdown| async move {
            let listeners = invite_sync::service::Listeners {
                main: Some(listener),
                admin: None,
            };
            invite_sync::service::run(reconciler, &settings, listeners, shutdown).await
        })
    }

    /// The whole service, with the admin listener (probes and metrics) on a port of its own
    /// too.
    pub async fn with_admin(h: &Harness) -> Service {
        let settings = h.settings();
        let main = bind().await;
        let admin = bind().await;
        let addr = local_addr(&main);
        let admin_addr = local_addr(&admin);
        let reconciler = h.reconciler.clone();
        let stop_within = stop_within(&settings);
        Service::spawn(addr, Some(admin_addr), stop_within, move |shutdown| {
            let listeners = invite_sync::service::Listeners {
                main: Some(main),
                admin: Some(admin),
            };
            async move { invite_sync::service::run(reconciler, &settings, listeners, shutdown).await }
        })
    }

    /// The HTTP endpoints alone, without the worker: the test drives cycles itself.
    pub async fn http_alone(h: &Harness) -> Service {
        Service::http_alone_on(h.reconciler.clone(), h.settings()).await
    }

    /// The HTTP endpoints alone, on any reconciler (one whose database may not answer).
    pub async fn http_alone_on(reconciler: Reconciler, settings: Settings) -> Service {
        let listener = bind().await;
        let addr = local_addr(&listener);
        let shutdown = CancellationToken::new();
        let server = invite_sync::service::serve_http_alone(
            &reconciler,
            &settings,
            listener,
            shutdown.clone(),
        )
        .expect("the endpoints start");
        let task = tokio::spawn(async move { Ok(server.await??) });
        Service {
            addr,
            admin_addr: None,
            client: http_client(),
            shutdown,
            task: Some(task),
            stop_within: stop_within(&settings),
        }
    }

    fn spawn<F, Fut>(
        addr: SocketAddr,
        admin_addr: Option<SocketAddr>,
        stop_within: Duration,
        run: F,
    ) -> Service
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Service {
            addr,
            admin_addr,
            client: http_client(),
            shutdown,
            task: Some(task),
            stop_within,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin_addr.expect("the service has an admin listener");
        format!("http://{admin}{path}")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Cancels the service and waits for it to return, at most its shutdown timeout plus a
    /// little.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("the service runs");
        tokio::time::timeout(self.stop_within, task)
            .await
            .expect("the service returns within its shutdown timeout")
            .expect("the service task does not panic")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How long the service may take to stop: its shutdown timeout, and a little.
fn stop_within(settings: &Settings) -> Duration {
    settings.sync.shutdown_timeout() + Duration::from_secs(1)
}

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port is free")
}

fn local_addr(listener: &tokio::net::TcpListener) -> SocketAddr {
    listener.local_addr().expect("the listener has an address")
}

/// A response's `Content-Type`, or "" when it has none (or none readable).
pub fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// An HTTP client that gives up on a service that does not answer.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client builds")
}

// ---------------------------------------------------------------------------
// Child processes

/// The binary with nothing in its environment but PATH and `env`.
pub fn bare_command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invite-sync"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied());
    command
}

// ---------------------------------------------------------------------------
// Files

/// A file or directory of the repository, by its path relative to the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A file of the repository, read whole.
pub fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("{relative} cannot be read: {e}"))
}

/// A YAML file of the repository.
pub fn yaml(relative: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative} is not YAML: {e}"))
}

/// An environment of its own, for `Settings::load`.
pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "invite-sync-{what}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory can be made");
        Scratch(dir)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{name} cannot be written: {e}"));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Looking at the outcome

/// `count` addresses `prefix0000@example.com` ...
pub fn people(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{prefix}{i:04}@example.com"))
        .collect()
}

pub fn refs(emails: &[String]) -> Vec<&str> {
    emails.iter().map(String::as_str).collect()
}

/// Every call that can change Clerk, by operation: single creates, bulk creates, revocations.
pub fn writes(stats: &SimStats) -> [u64; 3] {
    [
        stats.total(Operation::CreateInvitation),
        stats.total(Operation::CreateBulkInvitations),
        stats.total(Operation::RevokeInvitation),
    ]
}

/// The recorded runs of the harness's target, newest first.
pub async fn runs(h: &Harness) -> Vec<RunRecord> {
    invite_sync::store::runs::recent(&h.db.pool, &h.reconciler.config.target, 100)
        .await
        .expect("the runs load")
}

/// What a cycle counted by category: its report, or the run it recorded.
pub trait Counts {
    fn count(&self, category: &str) -> usize;
}

impl Counts for Report {
    fn count(&self, category: &str) -> usize {
        self.counts.get(category).copied().unwrap_or(0)
    }
}

impl Counts for RunRecord {
    fn count(&self, category: &str) -> usize {
        self.counts
            .get(category)
            .and_then(serde_json::Value::as_u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// How many items of `category` a cycle counted.
pub fn count(cycle: &impl Counts, category: &str) -> usize {
    cycle.count(category)
}

/// Asserts that each address holds exactly one pending invitation and that nobody else holds
/// one.
#[track_caller]
pub fn assert_one_pending_each(h: &Harness, emails: &[String]) {
    let mut pending: Vec<String> = h
        .pending()
        .iter()
        .map(|i| i.email_address.to_lowercase())
        .collect();
    pending.sort();
    let mut expected: Vec<String> = emails.iter().map(|e| e.to_lowercase()).collect();
    expected.sort();
    assert_eq!(pending, expected, "exactly one pending invitation each");
}

/// [`assert_one_pending_each`], and every other invitation the simulator holds is revoked:
/// none accepted or expired beside them.
#[track_caller]
pub fn assert_one_pending_each_and_nothing_else(h: &Harness, emails: &[String]) {
    assert_one_pending_each(h, emails);
    let live = h
        .sim
        .invitations()
        .into_iter()
        .filter(|i| i.status != InvitationStatus::Revoked)
        .count();
    assert_eq!(
        live,
        emails.len(),
        "the simulator holds invitations beyond one per person"
    );
}

/// Log lines, as the service would write them, into a buffer the test reads.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures every event and span of invite-sync itself (the simulator stands for Clerk)
/// on this thread until the guard drops: under `#[tokio::test]`'s single-threaded runtime,
/// those of the tasks the test spawns too.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "invite_sync=trace,invite_sync::clerk::sim=off",
        ))
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
