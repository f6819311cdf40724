//! `/Groups`: groups of SCIM users, kept per target in `invite_sync_scim_groups`. Every write
//! (create, replace, modify, delete) locks the group, checks that each new member is a SCIM
//! user, writes the group and its members, and has [`group_memberships::apply`] bring the
//! membership roster in line, all in one transaction: a refusal writes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::scim::error::quoted;
use crate::scim::filter::{self, Filter};
use crate::scim::group::{self, Group};
use crate::scim::resource::Meta;
use crate::scim::ScimError;
use crate::service::state::{AppState, Scim};
use crate::store::group_memberships;
use crate::store::scim_groups::{
    self as store, Candidates, Member, ScanKey, ScimGroup, WriteError,
};

use super::read::{query_params, render_matching, Page, Projection, Search, SCAN_CHUNK};
use super::request::{
    base_url, body_of, internal, json_body, off_runtime, path_id, scim_json, Authorized,
};

fn group_id(raw: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(raw).map_err(|_| ScimError::not_found(format!("no group {}", quoted(raw))))
}

fn no_group(id: Uuid) -> ScimError {
    ScimError::not_found(format!("no group {id}"))
}

/// The stored group and members as the protocol's Group.
fn as_group(group: &ScimGroup, members: &[Member]) -> Group {
    Group {
        display_name: group.display_name.clone(),
        external_id: group.external_id.clone(),
        members: members
            .iter()
            .map(|m| group::Member {
                value: m.user_id,
                display: m.display.clone(),
            })
            .collect(),
    }
}

fn stored_members(group: &Group) -> Vec<Member> {
    group
        .members
        .iter()
        .map(|m| Member {
            user_id: m.value,
            display: m.display.clone(),
        })
        .collect()
}

fn rendered(group: &ScimGroup, members: &[Member], base: &str) -> Map<String, Value> {
    let id = group.id.to_string();
    group::render(
        &id,
        &as_group(group, members),
        base,
        &Meta {
            created: group.created_at,
            last_modified: group.updated_at,
            version: group.version,
            location: format!("{base}/Groups/{id}"),
        },
    )
}

fn group_response(
    status: StatusCode,
    group: &ScimGroup,
    members: &[Member],
    headers: &HeaderMap,
    projection: &Projection,
) -> Response {
    let base = base_url(headers);
    let resource = rendered(group, members, &base);
    let mut response = scim_json(status, projection.apply(resource));
    if let Ok(location) = HeaderValue::from_str(&format!("{base}/Groups/{}", group.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn refused(error: WriteError) -> ScimError {
    match error {
        WriteError::DuplicateDisplayName => {
            ScimError::uniqueness("another group already has this displayName")
        }
        WriteError::UnknownMember => {
            ScimError::invalid_value("members: a member is no longer a SCIM user")
        }
        WriteError::TooLarge => ScimError::invalid_value(
            "a value is too large to store (displayName and externalId: at most 256 characters)",
        ),
        WriteError::Unstorable => {
            ScimError::invalid_value("a value holds a character that cannot be stored (NUL)")
        }
        WriteError::Database(e) => internal(e),
    }
}

/// Refuses the write unless every member in `new` is a SCIM user, naming the first that is
/// not (and how many others are not).
async fn check_members(conn: &mut PgConnection, new: &[Uuid]) -> Result<(), ScimError> {
    let missing = store::missing_users(conn, new).await.map_err(internal)?;
    match missing.split_first() {
        None => Ok(()),
        Some((first, [])) => Err(group::unknown_member(&first.to_string())),
        Some((first, others)) => {
            let error = group::unknown_member(&first.to_string());
            Err(ScimError {
                detail: format!(
                    "{}; {} other members are not either",
                    error.detail,
                    others.len()
                ),
                ..error
            })
        }
    }
}

/// Writes the group's members and has the membership roster follow, in the write's
/// transaction.
async fn write_members(
    conn: &mut PgConnection,
    scim: &Scim,
    state: &AppState,
    id: Uuid,
    members: &[Member],
    previous: &[Uuid],
) -> Result<(), ScimError> {
    store::set_members(conn, id, members)
        .await
        .map_err(refused)?;
    group_memberships::apply(conn, &scim.groups, &state.config.target, id, previous)
        .await
        .map_err(internal)?;
    Ok(())
}

fn log_write(what: &str, id: Uuid, members: usize) {
    tracing::info!(group = %id, members, "SCIM group {what}");
}

pub(super) async fn create(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = body_of(body)?;
    let group = off_runtime(move || group::from_request(&json_body(&body)?)).await?;
    let id = Uuid::new_v4();
    let members = stored_members(&group);
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let ids: Vec<Uuid> = members.iter().map(|m| m.user_id).collect();
    check_members(&mut tx, &ids).await?;
    let stored = store::insert(
        &mut tx,
        id,
        &state.config.target,
        store::GroupWrite {
            display_name: &group.display_name,
            external_id: group.external_id.as_deref(),
        },
    )
    .await
    .map_err(refused)?;
    write_members(&mut tx, &scim, &state, id, &members, &[]).await?;
    tx.commit().await.map_err(internal)?;
    log_write("created", id, members.len());
    Ok(group_response(
        StatusCode::CREATED,
        &stored,
        &members,
        &headers,
        &Projection::default(),
    ))
}

/// Replaces a group with what `change` makes of it (off the runtime), in one transaction.
async fn rewrite(
    state: &AppState,
    scim: Arc<Scim>,
    raw_id: &str,
    change: impl FnOnce(&Group) -> Result<Group, ScimError> + Send + 'static,
) -> Result<(ScimGroup, Vec<Member>), ScimError> {
    let id = group_id(raw_id)?;
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let before = store::lock(&mut tx, &state.config.target, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_group(id))?;
    let before_members = store::members(&mut *tx, id).await.map_err(internal)?;
    let current = as_group(&before, &before_members);
    let changed = off_runtime(move || change(&current)).await?;
    let members = stored_members(&changed);
    let previous: Vec<Uuid> = before_members.iter().map(|m| m.user_id).collect();
    let had: HashSet<Uuid> = previous.iter().copied().collect();
    let new: Vec<Uuid> = members
        .iter()
        .map(|m| m.user_id)
        .filter(|id| !had.contains(id))
        .collect();
    check_members(&mut tx, &new).await?;
    let stored = store::update(
        &mut tx,
        id,
        store::GroupWrite {
            display_name: &changed.display_name,
            external_id: changed.external_id.as_deref(),
        },
    )
    .await
    .map_err(refused)?;
    write_members(&mut tx, &scim, state, id, &members, &previous).await?;
    tx.commit().await.map_err(internal)?;
    log_write("updated", id, members.len());
    Ok((stored, members))
}

pub(super) async fn replace(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    let body = body_of(body)?;
    let group = off_runtime(move || group::from_request(&json_body(&body)?)).await?;
    let (stored, members) = rewrite(&state, scim, &id, move |_| Ok(group)).await?;
    Ok(group_response(
        StatusCode::OK,
        &stored,
        &members,
        &headers,
        &Projection::default(),
    ))
}

/// PATCH: answered with the group, cut to the query's `attributes` / `excludedAttributes`
/// (RFC 7644 §3.5.2), so a client changing a large group can leave its members out.
pub(super) async fn modify(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&query_params(query.as_deref()))?;
    let id = path_id(id)?;
    let body = body_of(body)?;
    let body = off_runtime(move || json_body(&body)).await?;
    let (stored, members) = rewrite(&state, scim, &id, move |current| {
        group::patch(current, &body)
    })
    .await?;
    Ok(group_response(
        StatusCode::OK,
        &stored,
        &members,
        &headers,
        &projection,
    ))
}

pub(super) async fn remove(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ScimError> {
    let id = group_id(&path_id(id)?)?;
    let mut tx = state.pool.begin().await.map_err(internal)?;
    store::lock(&mut tx, &state.config.target, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_group(id))?;
    let previous: Vec<Uuid> = store::members(&mut *tx, id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    store::delete(&mut tx, id).await.map_err(internal)?;
    group_memberships::apply(&mut tx, &scim.groups, &state.config.target, id, &previous)
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    log_write("deleted", id, 0);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn read(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&query_params(query.as_deref()))?;
    let id = group_id(&path_id(id)?)?;
    let mut tx = crate::store::read_only(&state.pool)
        .await
        .map_err(internal)?;
    let group = store::get(&mut *tx, &state.config.target, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_group(id))?;
    let members = if projection.shows("members") {
        store::members(&mut *tx, id).await.map_err(internal)?
    } else {
        Vec::new()
    };
    tx.rollback().await.map_err(internal)?;
    Ok(group_response(
        StatusCode::OK,
        &group,
        &members,
        &headers,
        &projection,
    ))
}

/// Which groups a search reads before its filter is applied. `None`: no group can match.
fn candidates(filter: Option<&Filter>) -> Option<Candidates<'_>> {
    let Some(filter) = filter else {
        return Some(Candidates::All);
    };
    if let Some(id) = filter::required_eq(filter, "id") {
        return Uuid::parse_str(id).ok().map(Candidates::Id);
    }
    if let Some(name) = filter::required_eq(filter, "displayName") {
        return Some(Candidates::DisplayName(name));
    }
    if let Some(external) = filter::required_eq(filter, "externalId") {
        return Some(Candidates::ExternalId(external));
    }
    Some(Candidates::All)
}

/// A search of groups, read [`SCAN_CHUNK`] at a time in creation order, each chunk's members
/// read with it unless neither the filter nor the answer needs them.
async fn run_search(
    state: &AppState,
    headers: &HeaderMap,
    search: Search,
) -> Result<Response, ScimError> {
    let start_index = search.start_index;
    let (total, page) = group_page(state, headers, search).await?;
    Ok(page.answer(total, start_index))
}

/// A search's page of groups, and how many groups match in all.
pub(super) async fn group_page(
    state: &AppState,
    headers: &HeaderMap,
    search: Search,
) -> Result<(usize, Page), ScimError> {
    let search = Arc::new(search);
    let start_index = search.start_index;
    let Some(which) = candidates(search.filter.as_ref()) else {
        return Ok((0, Page::default()));
    };
    let with_members = search.filter.is_some() || search.projection.shows("members");
    let base: Arc<str> = base_url(headers).into();
    let target = state.config.target.as_str();
    let mut tx = crate::store::read_only(&state.pool)
        .await
        .map_err(internal)?;
    let skip = start_index - 1;
    let mut page = Page::default();
    let mut after: Option<ScanKey> = None;
    let mut matched = 0usize;
    let total = if search.filter.is_none() {
        usize::try_from(store::count(&mut *tx, target).await.map_err(internal)?).unwrap_or(0)
    } else {
        0
    };
    // Without a filter the page's groups are read from its offset on; with one, every
    // candidate is read and counted.
    let mut offset = if search.filter.is_none() {
        matched = skip;
        i64::try_from(skip).unwrap_or(i64::MAX)
    } else {
        0
    };
    loop {
        if search.filter.is_none() && (page.full || page.resources.len() >= search.count) {
            break;
        }
        let groups = store::scan(&mut *tx, target, which, after, offset, SCAN_CHUNK as i64)
            .await
            .map_err(internal)?;
        offset = 0;
        after = groups.last().map(ScimGroup::scan_key);
        let last_chunk = groups.len() < SCAN_CHUNK;
        let mut members: HashMap<Uuid, Vec<Member>> = HashMap::new();
        if with_members && !groups.is_empty() {
            let ids: Vec<Uuid> = groups.iter().map(|g| g.id).collect();
            for (group, member) in store::members_of(&mut *tx, &ids).await.map_err(internal)? {
                members.entry(group).or_default().push(member);
            }
        }
        let wanted = page.room(search.count);
        let first = skip.saturating_sub(matched);
        let (found, rendered) = {
            let (search, base) = (search.clone(), base.clone());
            off_runtime(move || {
                let groups = groups.iter().map(|group| {
                    let members = members.get(&group.id).map_or(&[][..], Vec::as_slice);
                    rendered(group, members, &base)
                });
                Ok(render_matching(groups, &search, first, wanted))
            })
            .await?
        };
        matched += found;
        for resource in rendered {
            page.push(resource, search.count);
        }
        if last_chunk {
            break;
        }
    }
    tx.rollback().await.map_err(internal)?;
    let total = if search.filter.is_none() {
        total
    } else {
        matched
    };
    Ok((total, page))
}

pub(super) async fn list(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let search = Search::from_query(&query_params(query.as_deref()))?;
    run_search(&state, &headers, search).await
}

pub(super) async fn search(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = body_of(body)?;
    let search = off_runtime(move || Search::from_body(&json_body(&body)?)).await?;
    run_search(&state, &headers, search).await
}
