//! `POST /.search`: a search of every resource type at once (RFC 7644 §3.4.3), its results
//! the matching Users, then the matching Groups, paged as one list.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::scim::ScimError;
use crate::service::state::AppState;

use super::groups::group_page;
use super::read::{user_page, Search};
use super::request::{body_of, json_body, off_runtime, Authorized};

pub(super) async fn all(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = body_of(body)?;
    let search = off_runtime(move || Search::from_body(&json_body(&body)?)).await?;
    let (start_index, count) = (search.start_index, search.count);
    let (users, mut page) = user_page(&state, &headers, search.clone()).await?;
    // The groups' part of the page: from where the list reaches past the users, and only as
    // many as the users left room for (none, but counted, when they filled it).
    let room = page.room(count);
    let groups_search = Search {
        start_index: start_index.saturating_sub(users).max(1),
        count: room,
        ..search
    };
    let (groups, group_resources) = group_page(&state, &headers, groups_search).await?;
    for resource in group_resources.resources {
        page.push(resource, count);
    }
    Ok(page.answer(users + groups, start_index))
}
