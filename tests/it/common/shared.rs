//! What the tests and the benchmarks share (the benchmarks include this file by its path): a
//! scratch database per test or benchmark, dropped afterwards; child processes that are
//! killed and reaped when dropped; and waiting on a condition with a deadline, never a bare
//! sleep. A free port comes from the library, which the demo's private PostgreSQL uses too.
// Each test module and benchmark uses its own part of this.
#![allow(dead_code)]

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

pub use invite_sync::commands::private_postgres::free_port;

/// A cron expression that does not fire during a test or a benchmark: cycles come from the
/// start, notifications, the API, webhooks and signals only.
pub const NEVER: &str = "0 0 0 1 1 *";

// ---------------------------------------------------------------------------
// The database

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
    server: String,
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
        TestDb::empty_on(&server_url()).await
    }

    /// A fresh database with nothing in it, on the server whose maintenance database is at
    /// `server`.
    pub async fn empty_on(server: &str) -> TestDb {
        let admin: PgConnectOptions = server.parse().expect("DATABASE_URL parses");
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
            server: server.to_owned(),
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
        let mut url = url::Url::parse(&self.server).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }

    /// The one number `sql` selects, e.g. a `count(*)`.
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
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

// ---------------------------------------------------------------------------
// Waiting

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(what, deadline, Duration::from_millis(20), check).await
}

/// Polls `check` every `every` until it returns `Some`, failing after `deadline`: a
/// benchmark that measures a latency polls more often than a test needs to.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> T
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
        tokio::time::sleep(every).await;
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// A running `invite-sync` (or another program a test needs). Its output goes to files, so a
/// chatty child never blocks on a full pipe; dropping it kills and reaps the child, so a
/// failed assertion leaves nothing running.
pub struct Proc {
    label: String,
    child: Child,
    dir: PathBuf,
}

/// How a process ended, and what it printed.
pub struct Finished {
    label: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit of {self}");
        self
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label, self.status, self.stdout, self.stderr
        )
    }
}

impl Proc {
    pub fn spawn(command: Command, args: &[&str]) -> Proc {
        Proc::start(format!("invite-sync {}", args.join(" ")), command, args)
    }

    /// Starts `command` with `args`; `label` names it in failure messages.
    pub fn start(label: String, mut command: Command, args: &[&str]) -> Proc {
        let dir = std::env::temp_dir().join(format!(
            "invite-sync-cli-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory for the child's output");
        let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("`{label}` could not start: {e}"));
        Proc { label, child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        self.read("stdout")
    }

    pub fn stderr(&self) -> String {
        self.read("stderr")
    }

    /// SIGKILL, as a crash or an OOM kill; whether the process was still running.
    pub fn kill(&mut self) -> bool {
        if self.exited().is_some() {
            return false;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        true
    }

    /// Whether the child has exited (and is reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .expect("the child's status can be read")
    }

    /// Waits for the child to exit, failing the test (and killing it) after `deadline`.
    pub async fn wait(&mut self, deadline: Duration) -> Finished {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.exited() {
                return Finished {
                    label: self.label.clone(),
                    status,
                    stdout: self.stdout(),
                    stderr: self.stderr(),
                };
            }
            if tokio::time::Instant::now() >= give_up {
                panic!(
                    "`{}` did not exit within {deadline:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.label,
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `ready` says so while the child keeps running; fails the test, showing
    /// the child's output, if it exits first or `deadline` passes.
    pub async fn wait_until<F, Fut>(&mut self, what: &str, deadline: Duration, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            if ready().await {
                return;
            }
            let state = match self.exited() {
                Some(status) => format!("exited ({status})"),
                None if tokio::time::Instant::now() >= give_up => {
                    format!("timed out after {deadline:?}")
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            panic!(
                "`{}` {state} while waiting for {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.label,
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Sends a signal with kill(1): the crate has no libc binding.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits until the child has installed a handler for `signal`: sending it earlier would
    /// get the default action (SIGHUP and SIGTERM kill) instead of the service's.
    pub async fn wait_for_handler(&self, signal: u32) {
        let pid = self.pid();
        wait_for(
            &format!("pid {pid} to catch signal {signal}"),
            Duration::from_secs(10),
            || std::future::ready(catches(pid, signal).then_some(())),
        )
        .await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `/proc/PID/status` says the process catches `signal`.
fn catches(pid: u32, signal: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}
