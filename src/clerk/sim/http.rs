//! The simulator's HTTP side: routes, the order Clerk checks a call in, and a
//! connection loop that can drop a connection without answering.

mod organizations;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::telemetry::Chain;

use super::errors::ApiError;
use super::input;
use super::state::{new_trace_id, Plan};
use super::{Fault, FaultKind, Operation, Sim};

const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const CLERK_TRACE_ID: HeaderName = HeaderName::from_static("clerk-trace-id");

/// Fired by a handler to close its connection without sending a response.
#[derive(Clone)]
struct ConnectionKill(CancellationToken);

type Shared = Arc<Sim>;

pub(super) async fn serve(listener: TcpListener, sim: Shared) {
    let router = router(Arc::clone(&sim));
    let shutdown = sim.shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shutdown.clone()));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "clerk simulator failed to accept a connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    let kill = CancellationToken::new();
    let extension = ConnectionKill(kill.clone());
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(extension.clone());
        let mut router = router.clone();
        router.call(request)
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // Returning drops the connection and its socket: the peer sees it closed, with no
    // response bytes for the call in flight.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = kill.cancelled() => return,
        _ = shutdown.cancelled() => {}
    }
    // Let calls in flight finish, but do not let a slow peer hold the shutdown up.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = kill.cancelled() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

fn router(sim: Shared) -> Router {
    organizations::routes(Router::new())
        .route("/v1/invitations", post(create).get(list))
        .route("/v1/invitations/bulk", post(create_bulk))
        .route("/v1/invitations/{invitation_id}/revoke", post(revoke))
        .route("/v1/users", get(list_users))
        .route("/v1/users/{user_id}", get(get_user).delete(delete_user))
        .route("/_sim/users", post(control_users).get(control_list_users))
        .route("/_sim/users/{user_id}", delete(control_delete_user))
        .route("/_sim/invitations", get(control_invitations))
        .route(
            "/_sim/invitations/{invitation_id}/accept",
            post(control_accept),
        )
        .route(
            "/_sim/invitations/{invitation_id}/expire",
            post(control_expire),
        )
        .route("/_sim/faults", post(control_faults))
        .route("/_sim/stats", get(control_stats))
        .route("/_sim/reset", post(control_reset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(sim)
}

/// A successful answer or an error, before headers are added.
/// The body is serialised JSON, so the fields keep the order of the shared model types.
type Outcome = Result<Vec<u8>, ApiError>;

fn json_value(value: impl Serialize) -> Outcome {
    serde_json::to_vec(&value).map_err(|error| {
        tracing::error!(error.message = %error, error.cause_chain = %Chain(&error), "clerk simulator failed to serialise a response");
        ApiError::fault(500, None)
    })
}

async fn create(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = input::parse_create(&body);
    call(&sim, Operation::CreateInvitation, &headers, kill, |state| {
        let invitation = state.create(vec![parsed?])?;
        json_value(invitation.first())
    })
    .await
}

async fn create_bulk(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = input::parse_bulk(&body);
    call(
        &sim,
        Operation::CreateBulkInvitations,
        &headers,
        kill,
        |state| json_value(state.create(parsed?)?),
    )
    .await
}

async fn list(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_list_query(query.as_deref());
    call(&sim, Operation::ListInvitations, &headers, kill, |state| {
        let query = parsed?;
        if query.paginated {
            json_value(state.list_page(&query))
        } else {
            json_value(state.list(&query).0)
        }
    })
    .await
}

async fn revoke(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    Path(invitation_id): Path<String>,
) -> Response {
    call(&sim, Operation::RevokeInvitation, &headers, kill, |state| {
        json_value(state.revoke(&invitation_id)?)
    })
    .await
}

async fn list_users(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_user_query(query.as_deref());
    call(&sim, Operation::ListUsers, &headers, kill, |state| {
        let query = parsed?;
        let users = state.list_users(&query)?;
        state.stats_mut().user_lookup_addresses += query.email_addresses.len() as u64;
        json_value(users)
    })
    .await
}

async fn get_user(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    call(&sim, Operation::GetUser, &headers, kill, |state| {
        json_value(state.user(&user_id)?)
    })
    .await
}

async fn delete_user(
    State(sim): State<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    call(&sim, Operation::DeleteUser, &headers, kill, |state| {
        json_value(state.delete_user(&user_id)?)
    })
    .await
}

/// What a call ends in once the state has had its say.
enum Ending {
    Answer(Outcome),
    Hang,
    Drop,
}

/// Run one `/v1` call in Clerk's order: auth, rate limits, faults, then the operation
/// (whose body or query was parsed beforehand but whose errors only count here).
async fn call(
    sim: &Sim,
    operation: Operation,
    headers: &HeaderMap,
    kill: Option<Extension<ConnectionKill>>,
    apply: impl FnOnce(&mut super::state::State) -> Outcome,
) -> Response {
    let trace_id = new_trace_id();
    let ending = {
        let mut state = sim.state();
        let (ending, status) = if !authorized(headers, &sim.options.secret_key) {
            let error = ApiError::unauthenticated();
            let status = error.status.as_u16();
            (Ending::Answer(Err(error)), status)
        } else if let Err(retry_after) = state.admit(operation, Instant::now()) {
            let error = ApiError::too_many_requests(retry_after);
            let status = error.status.as_u16();
            (Ending::Answer(Err(error)), status)
        } else {
            match state.plan(operation) {
                Plan::Normal => {
                    let outcome = apply(&mut state);
                    let status = outcome
                        .as_ref()
                        .map_or_else(|error| error.status.as_u16(), |_| StatusCode::OK.as_u16());
                    (Ending::Answer(outcome), status)
                }
                Plan::Fault(FaultKind::Status {
                    status,
                    retry_after,
                }) => {
                    let error = ApiError::fault(status, retry_after);
                    let status = error.status.as_u16();
                    (Ending::Answer(Err(error)), status)
                }
                Plan::Fault(FaultKind::Hang) => (Ending::Hang, super::SimStats::NO_RESPONSE),
                Plan::Fault(FaultKind::DropAfterApply) => {
                    let _lost = apply(&mut state);
                    (Ending::Drop, super::SimStats::NO_RESPONSE)
                }
                Plan::Fault(FaultKind::StatusAfterApply { status }) => {
                    let _hidden = apply(&mut state);
                    let error = ApiError::fault(status, None);
                    let status = error.status.as_u16();
                    (Ending::Answer(Err(error)), status)
                }
            }
        };
        state.record(operation, status);
        ending
    };
    tracing::debug!(%operation, trace_id, "clerk simulator call");
    match ending {
        Ending::Answer(outcome) => respond(outcome, &trace_id),
        Ending::Hang => {
            tokio::select! {
                _ = tokio::time::sleep(sim.options.hang) => {}
                _ = sim.shutdown.cancelled() => {}
            }
            close_without_answer(kill, &trace_id).await
        }
        Ending::Drop => close_without_answer(kill, &trace_id).await,
    }
}

/// Close the connection of the call in flight; never returns while a connection exists.
fn close_without_answer(
    kill: Option<Extension<ConnectionKill>>,
    trace_id: &str,
) -> impl Future<Output = Response> {
    let fallback = respond(Err(ApiError::fault(500, None)), trace_id);
    async move {
        match kill {
            Some(Extension(ConnectionKill(token))) => {
                token.cancel();
                std::future::pending::<Response>().await
            }
            // Only reachable when the router is served without our connection loop.
            None => fallback,
        }
    }
}

fn authorized(headers: &HeaderMap, secret_key: &str) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match value.trim().split_once(' ') {
        Some((scheme, key)) => scheme.eq_ignore_ascii_case("bearer") && key.trim() == secret_key,
        None => false,
    }
}

fn respond(outcome: Outcome, trace_id: &str) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(trace_id) {
        headers.insert(CLERK_TRACE_ID, value);
    }
    match outcome {
        Ok(body) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            (StatusCode::OK, headers, body).into_response()
        }
        Err(error) => {
            if let Some(seconds) = error.retry_after {
                headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            (error.status, headers, Json(error.body(trace_id))).into_response()
        }
    }
}

async fn not_found() -> Response {
    respond(Err(ApiError::route_not_found()), &new_trace_id())
}

async fn method_not_allowed() -> Response {
    respond(Err(ApiError::method_not_allowed()), &new_trace_id())
}

fn control_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::request_body_invalid())
}

fn control_respond(outcome: Outcome) -> Response {
    respond(outcome, &new_trace_id())
}

#[derive(Debug, Deserialize)]
struct SeedUsers {
    email_addresses: Vec<String>,
}

/// Each address becomes a user of its own (unless it is one already). The answer has the
/// user of every address, in order, and the ids of those created by this call.
async fn control_users(State(sim): State<Shared>, body: Bytes) -> Response {
    let outcome = control_body::<SeedUsers>(&body).and_then(|seed| {
        if let Some(bad) = seed
            .email_addresses
            .iter()
            .find(|email| !input::is_valid_email(email))
        {
            return Err(ApiError::control_email_invalid(bad));
        }
        let mut state = sim.state();
        let mut users = Vec::new();
        let mut created = Vec::new();
        for email in &seed.email_addresses {
            let (user, new) = state.add_user(email);
            if new {
                created.push(user.id.clone());
            }
            users.push(user.view());
        }
        json_value(json!({
            "email_addresses": seed.email_addresses,
            "users": users,
            "created": created,
        }))
    });
    control_respond(outcome)
}

async fn control_list_users(State(sim): State<Shared>) -> Response {
    let users: Vec<_> = sim
        .state()
        .all_users()
        .into_iter()
        .map(|user| user.view())
        .collect();
    control_respond(json_value(users))
}

async fn control_delete_user(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    let outcome = sim.state().delete_user(&id);
    control_respond(outcome.and_then(json_value))
}

async fn control_invitations(State(sim): State<Shared>) -> Response {
    control_respond(json_value(sim.state().all_invitations()))
}

async fn control_accept(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    let outcome = sim.state().accept(&id);
    control_respond(outcome.and_then(json_value))
}

async fn control_expire(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    let outcome = sim.state().expire(&id);
    control_respond(outcome.and_then(json_value))
}

async fn control_faults(State(sim): State<Shared>, body: Bytes) -> Response {
    let outcome = control_body::<Fault>(&body).and_then(|fault| {
        if let FaultKind::Status { status, .. } = fault.kind {
            if !(100..=599).contains(&status) {
                return Err(ApiError::value_invalid(
                    "status",
                    "status must be an HTTP status code between 100 and 599.",
                ));
            }
        }
        sim.state().inject_fault(fault.clone());
        json_value(fault)
    });
    control_respond(outcome)
}

async fn control_stats(State(sim): State<Shared>) -> Response {
    let stats = sim.state().stats().clone();
    control_respond(json_value(stats))
}

async fn control_reset(State(sim): State<Shared>) -> Response {
    sim.state().reset();
    control_respond(json_value(json!({})))
}
