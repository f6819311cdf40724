//! `/scim/v2`: the SCIM 2.0 service provider identity providers (Okta, Microsoft Entra ID,
//! ...) provision the roster through. Users are kept in `invite_sync_scim_users`; an active
//! user with an address has a roster row (source `scim`), written in the same transaction,
//! whose change notifies the service like any roster change. Groups of those users are kept
//! in `invite_sync_scim_groups`, and a group's write brings the membership roster in line in
//! its transaction (`scim.groups`). Every refusal is a SCIM error and writes nothing.

mod discovery;
mod groups;
mod read;
mod request;
mod root_search;
mod write;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::service::state::{AppState, Limits, MAX_BODY, MAX_SCIM_CONCURRENT};
use discovery::{resource_type, resource_types, schema_list, schema_one, service_provider_config};
use read::{list, read, search};
use request::{not_allowed, not_found};
use write::{create, modify, remove, replace};

/// `/scim/v2`, with a concurrency limit of its own (more requests wait), like the operator
/// API's, the body limit and the request timeout.
pub fn router(limits: Limits) -> Router<AppState> {
    Router::new()
        .nest("/scim/v2", routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(GlobalConcurrencyLimitLayer::new(MAX_SCIM_CONCURRENT))
        .layer(limits.timeout())
}

fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/ServiceProviderConfig",
            get(service_provider_config).fallback(not_allowed),
        )
        .route("/ResourceTypes", get(resource_types).fallback(not_allowed))
        .route(
            "/ResourceTypes/{id}",
            get(resource_type).fallback(not_allowed),
        )
        .route("/Schemas", get(schema_list).fallback(not_allowed))
        .route("/Schemas/{id}", get(schema_one).fallback(not_allowed))
        .route("/Users", get(list).post(create).fallback(not_allowed))
        .route("/Users/.search", post(search).fallback(not_allowed))
        // A search at the root searches every resource type: Users, then Groups.
        .route("/.search", post(root_search::all).fallback(not_allowed))
        .route(
            "/Users/{id}",
            get(read)
                .put(replace)
                .patch(modify)
                .delete(remove)
                .fallback(not_allowed),
        )
        .route(
            "/Groups",
            get(groups::list).post(groups::create).fallback(not_allowed),
        )
        .route(
            "/Groups/.search",
            post(groups::search).fallback(not_allowed),
        )
        .route(
            "/Groups/{id}",
            get(groups::read)
                .put(groups::replace)
                .patch(groups::modify)
                .delete(groups::remove)
                .fallback(not_allowed),
        )
        .fallback(not_found)
}
