//! What the benchmarks share: a scratch database, child processes, a simulated Clerk process.
// Each benchmark uses its own part of this.
#![allow(dead_code)]

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor};

/// A cron expression that does not fire during a benchmark: cycles come from the start,
/// notifications and the backlog only.
pub const NEVER: &str = "0 0 0 1 1 *";

/// Polls `check` every 2 ms until it holds, failing after `deadline`.
pub async fn wait<F, Fut>(deadline: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + deadline;
    while !check().await {
        if Instant::now() > give_up {
            anyhow::bail!("timed out after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Runs `f` with the URL of a scratch database on the server of DATABASE_URL (else
/// 127.0.0.1:5432), dropped afterwards.
pub async fn with_database<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let server_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let server: PgConnectOptions = server_url.parse()?;
    let name = format!("invite_sync_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = server.clone().database("postgres").connect().await?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let mut url = url::Url::parse(&server_url)?;
    url.set_path(&format!("/{name}"));
    let result = f(url.to_string()).await;
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await?;
    result
}

/// A child process stopped with SIGTERM when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `clerk-sim` of the built binary `bin` with `key` and the `extra` flags, on a free port,
/// once it answers. Returns the process and the simulator's root URL.
pub async fn start_simulator(
    bin: &str,
    key: &str,
    extra: &[&str],
) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let root = format!("http://127.0.0.1:{port}");
    let process = Proc(
        Command::new(bin)
            .args(["clerk-sim", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--secret-key", key])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let http = reqwest::Client::new();
    wait(Duration::from_secs(10), || {
        let request = http.get(format!("{root}/_sim/stats")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await?;
    Ok((process, root))
}
