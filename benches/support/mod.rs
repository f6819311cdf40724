//! What the benchmarks share: the tests' scratch database, child processes, free port and
//! waiting (one definition, in the tests' `common/shared.rs`), the demo's private PostgreSQL
//! where no server answers, and a simulated Clerk process.
// Each benchmark uses its own part of this.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use invite_sync::commands::private_postgres::{self, PrivateCluster};

#[path = "../../tests/it/common/shared.rs"]
mod shared;
#[allow(unused_imports)]
pub use shared::{free_port, poll_until, Proc, TestDb, NEVER};

/// Runs `f` with the URL of a scratch database, dropped afterwards, on the server of
/// DATABASE_URL, else on 127.0.0.1:5432, else (when nothing answers there) on a private
/// cluster made from the machine's PostgreSQL binaries as the demo makes it.
pub async fn with_database<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut private = None;
    let server = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) if private_postgres::answers(private_postgres::LOCAL_SERVER).await => {
            private_postgres::LOCAL_SERVER.to_owned()
        }
        Err(_) => {
            let Some(bin) = PrivateCluster::find_binaries() else {
                anyhow::bail!(
                    "no PostgreSQL answers at 127.0.0.1:5432: {}",
                    private_postgres::HOW_TO_INSTALL
                );
            };
            let cluster =
                tokio::task::spawn_blocking(move || PrivateCluster::start(&bin)).await??;
            eprintln!("a private PostgreSQL at {}", cluster.url());
            private.insert(cluster).url()
        }
    };
    let db = TestDb::empty_on(&server).await;
    let result = f(db.url()).await;
    // The database goes before its server.
    drop(db);
    drop(private);
    result
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

/// Every invitation the simulator at `root` holds, as its control API lists them.
pub async fn sim_invitations(
    http: &reqwest::Client,
    root: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(http
        .get(format!("{root}/_sim/invitations"))
        .send()
        .await?
        .json()
        .await?)
}
