//! What the benchmarks share.

use std::time::{Duration, Instant};

/// Polls `check` every 2 ms until it holds, failing after `deadline`.
pub async fn wait<F, Fut>(deadline: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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
