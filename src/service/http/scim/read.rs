//! Reading users: one by id, a listing, a search, with filters, projections and pages.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::scim::error::quoted;
use crate::scim::filter::{self, Filter};
use crate::scim::resource::{self, Attributes, Meta};
use crate::scim::schema::{LIST_RESPONSE, MAX_PROJECTED, MAX_RESULTS, SEARCH_REQUEST};
use crate::scim::ScimError;
use crate::service::state::AppState;
use crate::store::scim::{self as store, Candidates, ScanKey, ScimUser};

use super::request::{
    base_url, body_of, internal, json_body, off_runtime, path_id, scim_json, Authorized,
    CONTENT_TYPE,
};

pub(super) fn user_id(raw: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(raw).map_err(|_| ScimError::not_found(format!("no user {}", quoted(raw))))
}

pub(super) fn attributes_of(user: &ScimUser) -> Attributes {
    match &user.attributes {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    }
}

fn rendered_user(user: &ScimUser, base: &str) -> Map<String, Value> {
    let id = user.id.to_string();
    resource::render(
        &id,
        &attributes_of(user),
        &Meta {
            created: user.created_at,
            last_modified: user.updated_at,
            version: user.version,
            location: format!("{base}/Users/{id}"),
        },
    )
}

/// `attributes` / `excludedAttributes`: comma-separated attribute paths.
#[derive(Debug, Clone, Default)]
pub(super) struct Projection {
    attributes: Vec<String>,
    excluded: Vec<String>,
}

impl Projection {
    fn split(text: Option<&str>) -> Vec<String> {
        text.map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Both lists, checked: each entry an attribute path (unknown attributes are ignored, as
    /// RFC 7644 §3.4.2.5 lets a server do), at most [`MAX_PROJECTED`] in each.
    pub(super) fn new(
        attributes: Vec<String>,
        excluded: Vec<String>,
    ) -> Result<Projection, ScimError> {
        for (name, paths) in [
            ("attributes", &attributes),
            ("excludedAttributes", &excluded),
        ] {
            if paths.len() > MAX_PROJECTED {
                return Err(ScimError::invalid_value(format!(
                    "{name}: more than {MAX_PROJECTED} attributes"
                )));
            }
            for path in paths {
                if path.eq_ignore_ascii_case("meta") {
                    continue;
                }
                filter::parse_path(path)
                    .map_err(|e| ScimError::invalid_value(format!("{name}: {}", e.detail)))?;
            }
        }
        Ok(Projection {
            attributes,
            excluded,
        })
    }

    pub(super) fn from_query(params: &HashMap<String, String>) -> Result<Projection, ScimError> {
        Projection::new(
            Projection::split(param(params, "attributes")),
            Projection::split(param(params, "excludedAttributes")),
        )
    }

    /// Whether the answer shows the core attribute `name` (`members` left out of a group
    /// needs no members read).
    pub(super) fn shows(&self, name: &str) -> bool {
        let names = |path: &String| {
            let path = path
                .rsplit_once(':')
                .map_or(path.as_str(), |(_, rest)| rest);
            let attr = path.split(['.', '[']).next().unwrap_or_default();
            attr.eq_ignore_ascii_case(name)
        };
        if !self.attributes.is_empty() {
            return self.attributes.iter().any(names);
        }
        !self
            .excluded
            .iter()
            .any(|path| names(path) && !path.contains(['.', '[']))
    }

    pub(super) fn apply(&self, resource: Map<String, Value>) -> Value {
        Value::Object(resource::project(
            resource,
            &self.attributes,
            &self.excluded,
        ))
    }
}

/// The query string's parameters. Bad percent-encoding is kept as it is, never an error:
/// what it spells is then judged like any other value.
pub(super) fn query_params(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A query parameter by name, case-insensitively.
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

pub(super) async fn read(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let params = query_params(query.as_deref());
    let projection = Projection::from_query(&params)?;
    let id = user_id(&path_id(id)?)?;
    let user = store::get(&state.pool, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    Ok(user_response(StatusCode::OK, &user, &headers, &projection))
}

pub(super) fn user_response(
    status: StatusCode,
    user: &ScimUser,
    headers: &HeaderMap,
    projection: &Projection,
) -> Response {
    let base = base_url(headers);
    let resource = rendered_user(user, &base);
    let mut response = scim_json(status, projection.apply(resource));
    if let Ok(location) = HeaderValue::from_str(&format!("{base}/Users/{}", user.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A search: from the query string or a `.search` body.
#[derive(Debug, Clone)]
pub(super) struct Search {
    pub(super) filter: Option<Filter>,
    pub(super) start_index: usize,
    pub(super) count: usize,
    pub(super) projection: Projection,
}

fn index(value: Option<&Value>, name: &str) -> Result<Option<i64>, ScimError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer"))),
        Some(Value::String(text)) => text
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer"))),
        Some(_) => Err(ScimError::invalid_value(format!(
            "{name} must be an integer"
        ))),
    }
}

impl Search {
    /// RFC 7644 §3.4.2.4: a `startIndex` below 1 is 1, a negative `count` is 0, and no page
    /// holds more than [`MAX_RESULTS`].
    fn new(
        filter: Option<&str>,
        start_index: Option<i64>,
        count: Option<i64>,
        projection: Projection,
    ) -> Result<Search, ScimError> {
        let filter = filter
            .filter(|f| !f.trim().is_empty())
            .map(filter::parse)
            .transpose()?;
        let start_index = usize::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(1);
        let count = usize::try_from(count.unwrap_or(MAX_RESULTS as i64).max(0))
            .unwrap_or(0)
            .min(MAX_RESULTS);
        Ok(Search {
            filter,
            start_index,
            count,
            projection,
        })
    }

    pub(super) fn from_query(params: &HashMap<String, String>) -> Result<Search, ScimError> {
        let number = |name: &str| {
            index(
                param(params, name)
                    .map(|v| Value::String(v.to_owned()))
                    .as_ref(),
                name,
            )
        };
        Search::new(
            param(params, "filter"),
            number("startIndex")?,
            number("count")?,
            Projection::from_query(params)?,
        )
    }

    pub(super) fn from_body(body: &Value) -> Result<Search, ScimError> {
        let Value::Object(fields) = body else {
            return Err(ScimError::invalid_syntax("the body must be a JSON object"));
        };
        if let Some(declared) = filter::get_ci(fields, "schemas") {
            let lists = declared
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(SEARCH_REQUEST)));
            if !lists {
                return Err(ScimError::invalid_syntax(format!(
                    "schemas must list {SEARCH_REQUEST}"
                )));
            }
        }
        let paths = |name: &str| -> Result<Vec<String>, ScimError> {
            match filter::get_ci(fields, name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            ScimError::invalid_value(format!("{name} must list strings"))
                        })
                    })
                    .collect(),
                Some(Value::String(text)) => Ok(Projection::split(Some(text))),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{name} must be an array of strings"
                ))),
            }
        };
        let filter_text = match filter::get_ci(fields, "filter") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.as_str()),
            Some(_) => return Err(ScimError::invalid_filter("filter must be a string")),
        };
        Search::new(
            filter_text,
            index(filter::get_ci(fields, "startIndex"), "startIndex")?,
            index(filter::get_ci(fields, "count"), "count")?,
            Projection::new(paths("attributes")?, paths("excludedAttributes")?)?,
        )
    }
}

/// Users a search reads from the database at a time.
pub(super) const SCAN_CHUNK: usize = 32;
/// Most bytes of users one list answer holds: a page stops early (fewer than `count`, as
/// RFC 7644 §3.4.2.4 allows; `itemsPerPage` says how many) rather than grow past it.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Which users a search reads before its filter is applied, narrowed by an indexed key when
/// the filter's top-level `and` chain names one. `None`: no user can match.
fn candidates(filter: Option<&Filter>) -> Option<Candidates<'_>> {
    let Some(filter) = filter else {
        return Some(Candidates::All);
    };
    if let Some(id) = filter::required_eq(filter, "id") {
        return Uuid::parse_str(id).ok().map(Candidates::Id);
    }
    if let Some(name) = filter::required_eq(filter, "userName") {
        return Some(Candidates::UserName(name));
    }
    if let Some(external) = filter::required_eq(filter, "externalId") {
        return Some(Candidates::ExternalId(external));
    }
    Some(Candidates::All)
}

/// A page being filled: the users rendered as JSON text, within [`MAX_PAGE_BYTES`].
#[derive(Default)]
pub(super) struct Page {
    pub(super) resources: Vec<String>,
    bytes: usize,
    pub(super) full: bool,
}

impl Page {
    /// Adds a rendered user unless the page is full; the first always fits.
    pub(super) fn push(&mut self, resource: String, count: usize) {
        if self.full || self.resources.len() >= count {
            self.full = true;
            return;
        }
        if !self.resources.is_empty() && self.bytes + resource.len() > MAX_PAGE_BYTES {
            self.full = true;
            return;
        }
        self.bytes += resource.len();
        self.resources.push(resource);
    }

    /// How many more of `count` resources the page takes: none once it is full.
    pub(super) fn room(&self, count: usize) -> usize {
        if self.full {
            0
        } else {
            count.saturating_sub(self.resources.len())
        }
    }

    pub(super) fn answer(self, total: usize, start_index: usize) -> Response {
        let mut body = format!(
            r#"{{"schemas":[{}],"totalResults":{total},"startIndex":{start_index},"itemsPerPage":{},"Resources":["#,
            Value::String(LIST_RESPONSE.to_owned()),
            self.resources.len()
        );
        body.reserve(self.bytes + self.resources.len() + 2);
        for (at, resource) in self.resources.iter().enumerate() {
            if at > 0 {
                body.push(',');
            }
            body.push_str(resource);
        }
        body.push_str("]}");
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response()
    }
}

/// A search, paged in the database: without a filter it reads only the page's users (and
/// counts the rest); with one it reads the (narrowed) users [`SCAN_CHUNK`] at a time,
/// filtering each chunk off the runtime and keeping only the page's. Memory stays within a
/// chunk and a page, whatever the number of users.
async fn run_search(
    state: &AppState,
    headers: &HeaderMap,
    search: Search,
) -> Result<Response, ScimError> {
    let start_index = search.start_index;
    let (total, page) = user_page(state, headers, search).await?;
    Ok(page.answer(total, start_index))
}

/// A search's page of users, and how many users match in all.
pub(super) async fn user_page(
    state: &AppState,
    headers: &HeaderMap,
    search: Search,
) -> Result<(usize, Page), ScimError> {
    let search = Arc::new(search);
    let start_index = search.start_index;
    let Some(which) = candidates(search.filter.as_ref()) else {
        return Ok((0, Page::default()));
    };
    let base: Arc<str> = base_url(headers).into();
    let mut tx = crate::store::read_only(&state.pool)
        .await
        .map_err(internal)?;
    let skip = start_index - 1;
    let mut page = Page::default();
    let mut after: Option<ScanKey> = None;
    let total = if search.filter.is_none() {
        let total = usize::try_from(store::count(&mut *tx).await.map_err(internal)?).unwrap_or(0);
        let mut offset = i64::try_from(skip).unwrap_or(i64::MAX);
        while !page.full && page.resources.len() < search.count {
            let want = (search.count - page.resources.len()).min(SCAN_CHUNK);
            let users = store::scan(&mut *tx, which, after, offset, want as i64)
                .await
                .map_err(internal)?;
            offset = 0;
            after = users.last().map(ScimUser::scan_key);
            let last_chunk = users.len() < want;
            let rendered = {
                let (search, base) = (search.clone(), base.clone());
                off_runtime(move || {
                    let users = users.iter().map(|user| rendered_user(user, &base));
                    Ok(render_matching(users, &search, 0, usize::MAX))
                })
                .await?
            };
            for resource in rendered.1 {
                page.push(resource, search.count);
            }
            if last_chunk {
                break;
            }
        }
        total
    } else {
        let mut matched = 0usize;
        loop {
            let users = store::scan(&mut *tx, which, after, 0, SCAN_CHUNK as i64)
                .await
                .map_err(internal)?;
            after = users.last().map(ScimUser::scan_key);
            let last_chunk = users.len() < SCAN_CHUNK;
            // The page's window of matches, as far as this chunk can reach it.
            let wanted = page.room(search.count);
            let first = skip.saturating_sub(matched);
            let (found, rendered) = {
                let (search, base) = (search.clone(), base.clone());
                off_runtime(move || {
                    let users = users.iter().map(|user| rendered_user(user, &base));
                    Ok(render_matching(users, &search, first, wanted))
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
        matched
    };
    tx.rollback().await.map_err(internal)?;
    Ok((total, page))
}

/// Of `resources` (users or groups, rendered as they come), how many match the search's
/// filter, and the matches from the `first`-th (of this chunk's matches) on, at most `wanted`
/// of them, projected and serialised.
pub(super) fn render_matching(
    resources: impl IntoIterator<Item = Map<String, Value>>,
    search: &Search,
    first: usize,
    wanted: usize,
) -> (usize, Vec<String>) {
    let mut found = 0;
    let mut rendered = Vec::new();
    for resource in resources {
        if !search
            .filter
            .as_ref()
            .is_none_or(|f| filter::matches(f, &resource))
        {
            continue;
        }
        if found >= first && rendered.len() < wanted {
            rendered.push(search.projection.apply(resource).to_string());
        }
        found += 1;
    }
    (found, rendered)
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
