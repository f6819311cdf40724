//! `/scim/v2`: the SCIM 2.0 service provider identity providers (Okta, Microsoft Entra ID,
//! ...) provision the roster through. Users are kept in `invite_sync_scim_users`; an active
//! user with an address has a roster row (source `scim`), written in the same transaction,
//! whose change notifies the service like any roster change. Every refusal is a SCIM error
//! and writes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::http::AppState;
use crate::config::{ScimEmail, Settings};
use crate::domain::{DesiredInvitee, DesiredRow, RowDefaults};
use crate::scim::error::quoted;
use crate::scim::filter::{self, Filter};
use crate::scim::resource::{self, Attributes, Meta};
use crate::scim::schema::{self, LIST_RESPONSE, MAX_PROJECTED, MAX_RESULTS, SEARCH_REQUEST};
use crate::scim::{patch, EmailSource, Mapping, RosterEntry, ScimError};
use crate::store::roster::{Batch, Columns, Writer, SCIM_SOURCE};
use crate::store::scim::{self as store, Candidates, ScanKey, ScimUser, UserWrite, WriteError};
use crate::telemetry::Chain;

const CONTENT_TYPE: &str = "application/scim+json";

// ServiceProviderConfig announces the body limit the HTTP layer enforces.
const _: () = assert!(schema::MAX_PAYLOAD_BYTES == super::http::MAX_BODY);

/// The endpoint's configuration: its tokens and the roster mapping.
pub struct Scim {
    tokens: Vec<SecretString>,
    mapping: Mapping,
}

impl Scim {
    /// `None` when no token is set: the endpoint is off.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Scim>> {
        let scim = &settings.scim;
        if scim.token.is_empty() {
            return Ok(None);
        }
        let email = match scim.email {
            ScimEmail::UserName => EmailSource::UserName,
            ScimEmail::WorkEmail => EmailSource::WorkEmail,
        };
        let mapping = Mapping::new(email, &scim.metadata).map_err(anyhow::Error::msg)?;
        Ok(Some(Scim {
            tokens: scim.token.iter().cloned().map(Into::into).collect(),
            mapping,
        }))
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_client_error() {
            // The detail may quote what the client sent (addresses included): not logged.
            tracing::info!(
                status = self.status,
                scim_type = self.scim_type.unwrap_or("-"),
                "SCIM request refused"
            );
        }
        let mut response = scim_json(status, self.body());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"invite-sync SCIM\""),
            );
            // Refused before its body was read: the connection closes, so that nothing
            // waits for (or reads) the rest of it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body.to_string(),
    )
        .into_response()
}

fn internal(error: impl std::error::Error + 'static) -> ScimError {
    tracing::error!(error.message = %error, error.cause_chain = %Chain(&error), "SCIM request failed");
    ScimError::internal()
}

pub fn router() -> Router<AppState> {
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
        // Users are the only resource type, so a search of them all is a search of Users.
        .route("/.search", post(search).fallback(not_allowed))
        .route(
            "/Users/{id}",
            get(read)
                .put(replace)
                .patch(modify)
                .delete(remove)
                .fallback(not_allowed),
        )
        .fallback(not_found)
}

/// A request that presented a configured token. Every handler takes it first, so a request
/// without one is refused from its headers alone: its body is never read, and it holds a
/// SCIM slot only for as long as the refusal takes.
struct Authorized(Arc<Scim>);

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ScimError> {
        authorize(state, &parts.headers)?;
        state
            .scim
            .clone()
            .map(Authorized)
            .ok_or_else(|| ScimError::not_found("not found"))
    }
}

/// The `{id}` of a path; one that is not text (bad percent-encoding) names no user.
fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ScimError> {
    id.map(|Path(id)| id)
        .map_err(|_| ScimError::not_found("no such resource: the id is not valid text"))
}

/// The request body, read only once the request is authorized.
fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ScimError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ScimError::payload_too_large(crate::service::http::MAX_BODY)
        } else {
            ScimError::invalid_syntax(format!("the body could not be read: {}", status.as_u16()))
        }
    })
}

/// Runs the CPU work of a request (parsing a body, applying a PATCH, rendering and filtering
/// users) on the blocking pool, never on a runtime worker that other requests and the probes
/// share. A panic there is an internal error whose message (it may quote input) is not logged.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ScimError> + Send + 'static,
) -> Result<T, ScimError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(panicked = error.is_panic(), "SCIM request's work failed");
            Err(ScimError::internal())
        }
    }
}

/// 404 when the endpoint is off, 401 unless a configured token is presented.
fn authorize<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Scim, ScimError> {
    let Some(scim) = state.scim.as_deref() else {
        return Err(ScimError::not_found("not found"));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    use subtle::ConstantTimeEq;
    // Every token is compared, so the time taken does not tell which one nearly matched.
    let matched = scim
        .tokens
        .iter()
        .fold(subtle::Choice::from(0), |any, token| {
            any | token.expose_secret().as_bytes().ct_eq(presented.as_bytes())
        });
    if bool::from(matched) {
        Ok(scim)
    } else {
        Err(ScimError::unauthorized())
    }
}

/// The endpoint's own URL as the client reached it, for `meta.location`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/scim/v2")
}

async fn not_allowed(State(state): State<AppState>, headers: HeaderMap) -> ScimError {
    match authorize(&state, &headers) {
        Ok(_) => ScimError::method_not_allowed(),
        Err(e) => e,
    }
}

async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> ScimError {
    match authorize(&state, &headers) {
        Ok(_) => ScimError::not_found("no such SCIM endpoint"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// Discovery

async fn service_provider_config(_: Authorized, headers: HeaderMap) -> Result<Response, ScimError> {
    Ok(scim_json(
        StatusCode::OK,
        schema::service_provider_config(&base_url(&headers)),
    ))
}

fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

async fn resource_types(_: Authorized, headers: HeaderMap) -> Result<Response, ScimError> {
    let types = vec![schema::user_resource_type(&base_url(&headers))];
    Ok(scim_json(StatusCode::OK, list_response(types, 1, 1)))
}

async fn resource_type(
    _: Authorized,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    if id != "User" {
        return Err(ScimError::not_found(format!(
            "no resource type {}",
            quoted(&id)
        )));
    }
    Ok(scim_json(
        StatusCode::OK,
        schema::user_resource_type(&base_url(&headers)),
    ))
}

async fn schema_list(_: Authorized, headers: HeaderMap) -> Result<Response, ScimError> {
    let documents = schema::schema_documents(&base_url(&headers));
    let total = documents.len();
    Ok(scim_json(
        StatusCode::OK,
        list_response(documents, total, 1),
    ))
}

async fn schema_one(
    _: Authorized,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    schema::schema_document(&base_url(&headers), &id)
        .map(|document| scim_json(StatusCode::OK, document))
        .ok_or_else(|| ScimError::not_found(format!("no schema {}", quoted(&id))))
}

// ---------------------------------------------------------------------------------------
// Reading

fn user_id(raw: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(raw).map_err(|_| ScimError::not_found(format!("no user {}", quoted(raw))))
}

fn attributes_of(user: &ScimUser) -> Attributes {
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
#[derive(Debug, Default)]
struct Projection {
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
    fn new(attributes: Vec<String>, excluded: Vec<String>) -> Result<Projection, ScimError> {
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

    fn from_query(params: &HashMap<String, String>) -> Result<Projection, ScimError> {
        Projection::new(
            Projection::split(param(params, "attributes")),
            Projection::split(param(params, "excludedAttributes")),
        )
    }

    fn apply(&self, resource: Map<String, Value>) -> Value {
        Value::Object(resource::project(
            resource,
            &self.attributes,
            &self.excluded,
        ))
    }
}

/// The query string's parameters. Bad percent-encoding is kept as it is, never an error:
/// what it spells is then judged like any other value.
fn query_params(query: Option<&str>) -> HashMap<String, String> {
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

async fn read(
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

fn user_response(
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
#[derive(Debug)]
struct Search {
    filter: Option<Filter>,
    start_index: usize,
    count: usize,
    projection: Projection,
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

    fn from_query(params: &HashMap<String, String>) -> Result<Search, ScimError> {
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

    fn from_body(body: &Value) -> Result<Search, ScimError> {
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
const SCAN_CHUNK: usize = 32;
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
struct Page {
    resources: Vec<String>,
    bytes: usize,
    full: bool,
}

impl Page {
    /// Adds a rendered user unless the page is full; the first always fits.
    fn push(&mut self, resource: String, count: usize) {
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

    fn answer(self, total: usize, start_index: usize) -> Response {
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
    let search = Arc::new(search);
    let start_index = search.start_index;
    let Some(which) = candidates(search.filter.as_ref()) else {
        return Ok(Page::default().answer(0, start_index));
    };
    let base: Arc<str> = base_url(headers).into();
    let mut tx = store::snapshot(&state.pool).await.map_err(internal)?;
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
                off_runtime(move || Ok(render_matching(&users, &base, &search, 0, usize::MAX)))
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
            let wanted = if page.full {
                0
            } else {
                search.count - page.resources.len()
            };
            let first = skip.saturating_sub(matched);
            let (found, rendered) = {
                let (search, base) = (search.clone(), base.clone());
                off_runtime(move || Ok(render_matching(&users, &base, &search, first, wanted)))
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
    Ok(page.answer(total, start_index))
}

/// Of `users`, how many match the search's filter, and the matches from the `first`-th (of
/// this chunk's matches) on, at most `wanted` of them, rendered, projected and serialised.
fn render_matching(
    users: &[ScimUser],
    base: &str,
    search: &Search,
    first: usize,
    wanted: usize,
) -> (usize, Vec<String>) {
    let mut found = 0;
    let mut rendered = Vec::new();
    for user in users {
        let resource = rendered_user(user, base);
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

async fn list(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let search = Search::from_query(&query_params(query.as_deref()))?;
    run_search(&state, &headers, search).await
}

async fn search(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = body_of(body)?;
    let search = off_runtime(move || Search::from_body(&json_body(&body)?)).await?;
    run_search(&state, &headers, search).await
}

// ---------------------------------------------------------------------------------------
// Writing

fn json_body(body: &[u8]) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

/// A user's attributes as written, with what they mean for the roster.
struct Prepared {
    attributes: Value,
    user_name: String,
    external_id: Option<String>,
    entry: RosterEntry,
    /// The roster row, when the user belongs on the roster; checked before anything is written.
    row: Option<DesiredRow>,
}

impl Prepared {
    fn new(scim: &Scim, attributes: Attributes) -> Result<Prepared, ScimError> {
        let entry = scim.mapping.entry(&attributes);
        let row = match (&entry.email, entry.active) {
            (Some(email), true) => {
                let row = DesiredRow {
                    public_metadata: Value::Object(entry.public_metadata.clone()),
                    source: Some(SCIM_SOURCE.to_owned()),
                    ..DesiredRow::new(email.as_str())
                };
                DesiredInvitee::from_row(&row, &RowDefaults::default())
                    .map_err(|invalid| ScimError::invalid_value(invalid.reason))?;
                Some(row)
            }
            _ => None,
        };
        Ok(Prepared {
            user_name: attributes
                .get("userName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            external_id: attributes
                .get("externalId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            attributes: Value::Object(attributes),
            entry,
            row,
        })
    }

    fn write(&self) -> UserWrite<'_> {
        UserWrite {
            user_name: &self.user_name,
            external_id: self.external_id.as_deref(),
            email: self.entry.email.as_ref().map(|e| e.as_str()),
            active: self.entry.active,
            attributes: &self.attributes,
        }
    }
}

fn refused(error: WriteError) -> ScimError {
    match error {
        WriteError::DuplicateUserName => {
            ScimError::uniqueness("another user already has this userName")
        }
        WriteError::DuplicateEmail => {
            ScimError::uniqueness("another user already has this email address")
        }
        WriteError::TooLarge => ScimError::invalid_value(
            "a value is too large to store (userName and externalId: at most 256 characters)",
        ),
        WriteError::Unstorable => {
            ScimError::invalid_value("a value holds a character that cannot be stored (NUL)")
        }
        WriteError::Database(e) => internal(e),
    }
}

/// Brings the roster in line with a write: the row of the address the user had (if active)
/// goes when the user is no longer on the roster under it; the new row is upserted. Rows
/// other writers own are never deleted here.
async fn sync_roster(
    conn: &mut PgConnection,
    state: &AppState,
    before: Option<&ScimUser>,
    after: Option<&Prepared>,
) -> Result<(), ScimError> {
    let writer = Writer::new(
        &state.config.relation,
        Columns {
            public_metadata: true,
            source: true,
            redirect_url: false,
            notify: false,
            expires_in_days: false,
            template_slug: false,
            not_before: false,
        },
    );
    let old = before.filter(|u| u.active).and_then(|u| u.email.as_deref());
    let new = after.and_then(|p| p.row.as_ref());
    if let Some(old) = old {
        if new.is_none_or(|row| row.email != old) {
            writer.delete_scim_row(conn, old).await.map_err(internal)?;
        }
    }
    if let Some(row) = new {
        let mut batch = Batch::default();
        batch.push(row.clone());
        writer.upsert(conn, &mut batch).await.map_err(internal)?;
    }
    Ok(())
}

fn log_write(state: &AppState, what: &str, id: Uuid, entry: Option<&RosterEntry>) {
    let reporter = state.config.reporter;
    let email = entry
        .and_then(|e| e.email.as_ref())
        .map(|e| reporter.email(e.as_str()));
    tracing::info!(
        user = %id,
        email = email.as_deref().unwrap_or("-"),
        on_roster = entry.is_some_and(|e| e.active && e.email.is_some()),
        "SCIM user {what}"
    );
}

async fn create(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = body_of(body)?;
    let prepared =
        off_runtime(move || Prepared::new(&scim, resource::from_request(&json_body(&body)?)?))
            .await?;
    let id = Uuid::new_v4();
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let user = store::insert(&mut tx, id, &prepared.write())
        .await
        .map_err(refused)?;
    sync_roster(&mut tx, &state, None, Some(&prepared)).await?;
    tx.commit().await.map_err(internal)?;
    log_write(&state, "created", id, Some(&prepared.entry));
    Ok(user_response(
        StatusCode::CREATED,
        &user,
        &headers,
        &Projection::default(),
    ))
}

/// Replaces a user's attributes with what `change` makes of them (off the runtime), in one
/// transaction.
async fn rewrite(
    state: &AppState,
    scim: Arc<Scim>,
    raw_id: &str,
    change: impl FnOnce(&Attributes) -> Result<Attributes, ScimError> + Send + 'static,
) -> Result<ScimUser, ScimError> {
    let id = user_id(raw_id)?;
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let before = store::lock(&mut tx, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    let attributes = attributes_of(&before);
    let prepared = off_runtime(move || Prepared::new(&scim, change(&attributes)?)).await?;
    let user = store::update(&mut tx, id, &prepared.write())
        .await
        .map_err(refused)?;
    sync_roster(&mut tx, state, Some(&before), Some(&prepared)).await?;
    tx.commit().await.map_err(internal)?;
    log_write(state, "updated", id, Some(&prepared.entry));
    Ok(user)
}

async fn replace(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    let body = body_of(body)?;
    let body = off_runtime(move || json_body(&body)).await?;
    let user = rewrite(&state, scim, &id, move |_| resource::from_request(&body)).await?;
    Ok(user_response(
        StatusCode::OK,
        &user,
        &headers,
        &Projection::default(),
    ))
}

async fn modify(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    let body = body_of(body)?;
    let body = off_runtime(move || json_body(&body)).await?;
    let user = rewrite(&state, scim, &id, move |attributes| {
        patch::apply(attributes, &body)
    })
    .await?;
    Ok(user_response(
        StatusCode::OK,
        &user,
        &headers,
        &Projection::default(),
    ))
}

async fn remove(
    _: Authorized,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ScimError> {
    let id = user_id(&path_id(id)?)?;
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let before = store::lock(&mut tx, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    store::delete(&mut tx, id).await.map_err(internal)?;
    sync_roster(&mut tx, &state, Some(&before), None).await?;
    tx.commit().await.map_err(internal)?;
    log_write(&state, "deleted", id, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}
