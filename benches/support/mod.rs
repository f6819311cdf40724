//! What the benchmarks share: the tests' scratch database, child processes, free port and
//! waiting (one definition, in the tests' `common/shared.rs`), and a simulated Clerk process.
// Each benchmark uses its own part of this.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

#[path = "../../tests/it/common/shared.rs"]
mod shared;
#[allow(unused_imports)]
pub use shared::{free_port, poll_until, Proc, TestDb, NEVER};

/// Runs `f` with the URL of a scratch database on the server of DATABASE_URL (else
/// 127.0.0.1:5432), dropped afterwards.
pub async fn with_database<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let db = TestDb::empty().await;
    f(db.url()).await
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
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(bin);
    command.env("RUST_LOG", "warn");
    let mut args = vec!["clerk-sim", "--listen", &listen, "--secret-key", key];
    args.extend(extra);
    let process = Proc::start(format!("{bin} {}", args.join(" ")), command, &args);
    let http = reqwest::Client::new();
    poll_until(
        "the simulator to answer",
        Duration::from_secs(10),
        Duration::from_millis(2),
        || {
            let request = http.get(format!("{root}/_sim/stats")).send();
            async move {
                request
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(())
            }
        },
    )
    .await;
    Ok((process, root))
}
