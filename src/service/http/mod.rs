//! The HTTP surface: the probes, the operator API, the signed roster and Clerk webhooks and
//! SCIM, each a module with its `router()`, composed here; the error layer both listeners
//! share; and the accept loop that serves them.

pub mod api;
pub mod clerk_webhook;
pub mod error;
pub mod people;
pub mod probes;
pub mod roster_webhook;
pub mod scim;
pub mod signature;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;

pub use crate::service::state::MAX_BODY;
use crate::service::state::{AppState, Limits, MAX_ADMIN_CONNECTIONS};
use crate::telemetry::Chain;
use error::answered_in_json;
pub use error::ApiError;

/// The main listener's routes: the probes, the operator API, both webhooks and SCIM.
pub fn router(state: AppState) -> Router {
    // Both webhooks share the slots; the timeout counts the wait for one.
    let slots = GlobalConcurrencyLimitLayer::new(state.limits.webhook_concurrency);
    let webhooks =
        roster_webhook::router(&state, slots.clone()).merge(clerk_webhook::router(&state, slots));
    let routes = probes::router()
        .merge(api::router(state.limits))
        .merge(webhooks)
        .merge(scim::router(state.limits));
    answered_in_json(routes).with_state(state)
}

/// The admin listener's routes: the probes alone, with errors in JSON like the main
/// listener's.
pub fn admin_router(state: AppState) -> Router {
    answered_in_json(probes::router()).with_state(state)
}

/// Serves until `shutdown` fires, then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_router(
        listener,
        router(state),
        limits,
        limits.max_connections,
        shutdown,
    )
    .await
}

/// Serves the probes alone (`http.admin_listen`) until `shutdown` fires.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_router(
        listener,
        admin_router(state),
        limits,
        MAX_ADMIN_CONNECTIONS,
        shutdown,
    )
    .await
}

/// The accept loop: at most `max_connections` open at once (the next connection is accepted
/// when one closes), each served over HTTP/1.1 with the header-read (and keep-alive idle)
/// timeout. On shutdown it stops accepting, lets requests in flight finish and closes idle
/// connections.
async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| {
            let mut router = router.clone();
            async move { tower::Service::call(&mut router, request).await }
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(error.message = %error, error.cause_chain = %Chain(&error), "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
