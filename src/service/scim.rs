//! `/scim/v2`: the SCIM 2.0 service provider identity providers (Okta, Microsoft Entra ID,
//! ...) provision the roster through. Users are kept in `invite_sync_scim_users`; an active
//! user with an address has a roster row (source `scim`), written in the same transaction,
//! whose change notifies the service like any roster change. Every refusal is a SCIM error
//! and writes nothing.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
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
use crate::scim::filter::{self, Filter};
use crate::scim::resource::{self, Attributes, Meta};
use crate::scim::schema::{self, LIST_RESPONSE, MAX_RESULTS, SEARCH_REQUEST};
use crate::scim::{patch, EmailSource, Mapping, RosterEntry, ScimError};
use crate::store::roster::{Batch, Columns, Writer, SCIM_SOURCE};
use crate::store::scim::{self as store, Candidates, ScimUser, UserWrite, WriteError};
use crate::telemetry::Chain;

const CONTENT_TYPE: &str = "application/scim+json";

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

async fn service_provider_config(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
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

async fn resource_types(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    let types = vec![schema::user_resource_type(&base_url(&headers))];
    Ok(scim_json(StatusCode::OK, list_response(types, 1, 1)))
}

async fn resource_type(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    if id != "User" {
        return Err(ScimError::not_found(format!("no resource type {id}")));
    }
    Ok(scim_json(
        StatusCode::OK,
        schema::user_resource_type(&base_url(&headers)),
    ))
}

async fn schema_list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    let documents = schema::schema_documents(&base_url(&headers));
    let total = documents.len();
    Ok(scim_json(
        StatusCode::OK,
        list_response(documents, total, 1),
    ))
}

async fn schema_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    schema::schema_document(&base_url(&headers), &id)
        .map(|document| scim_json(StatusCode::OK, document))
        .ok_or_else(|| ScimError::not_found(format!("no schema {id}")))
}

// ---------------------------------------------------------------------------------------
// Reading

fn user_id(raw: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(raw).map_err(|_| ScimError::not_found(format!("no user {raw}")))
}

fn attributes_of(user: &ScimUser) -> Attributes {
    match &user.attributes {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    }
}

fn rendered(user: &ScimUser, base: &str) -> Map<String, Value> {
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
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    let params = query_params(query.as_deref());
    let id = user_id(&id)?;
    let user = store::get(&state.pool, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    let projection = Projection {
        attributes: Projection::split(param(&params, "attributes")),
        excluded: Projection::split(param(&params, "excludedAttributes")),
    };
    Ok(user_response(StatusCode::OK, &user, &headers, &projection))
}

fn user_response(
    status: StatusCode,
    user: &ScimUser,
    headers: &HeaderMap,
    projection: &Projection,
) -> Response {
    let base = base_url(headers);
    let resource = rendered(user, &base);
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
            Projection {
                attributes: Projection::split(param(params, "attributes")),
                excluded: Projection::split(param(params, "excludedAttributes")),
            },
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
            Projection {
                attributes: paths("attributes")?,
                excluded: paths("excludedAttributes")?,
            },
        )
    }
}

async fn run_search(
    state: &AppState,
    headers: &HeaderMap,
    search: Search,
) -> Result<Response, ScimError> {
    let candidates = match &search.filter {
        None => Candidates::All,
        Some(filter) => {
            if let Some(id) = filter::required_eq(filter, "id") {
                match Uuid::parse_str(id) {
                    Ok(id) => Candidates::Id(id),
                    Err(_) => {
                        return Ok(scim_json(
                            StatusCode::OK,
                            list_response(Vec::new(), 0, search.start_index),
                        ))
                    }
                }
            } else if let Some(name) = filter::required_eq(filter, "userName") {
                Candidates::UserName(name)
            } else if let Some(external) = filter::required_eq(filter, "externalId") {
                Candidates::ExternalId(external)
            } else {
                Candidates::All
            }
        }
    };
    let users = store::candidates(&state.pool, candidates)
        .await
        .map_err(internal)?;
    let base = base_url(headers);
    let matched: Vec<Map<String, Value>> = users
        .iter()
        .map(|user| rendered(user, &base))
        .filter(|resource| {
            search
                .filter
                .as_ref()
                .is_none_or(|f| filter::matches(f, resource))
        })
        .collect();
    let total = matched.len();
    let page: Vec<Value> = matched
        .into_iter()
        .skip(search.start_index - 1)
        .take(search.count)
        .map(|resource| search.projection.apply(resource))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        list_response(page, total, search.start_index),
    ))
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    let search = Search::from_query(&query_params(query.as_deref()))?;
    run_search(&state, &headers, search).await
}

async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    let search = Search::from_body(&json_body(&body)?)?;
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
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let scim = authorize(&state, &headers)?;
    let prepared = Prepared::new(scim, resource::from_request(&json_body(&body)?)?)?;
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

/// Replaces a user's attributes with what `change` makes of them, in one transaction.
async fn rewrite(
    state: &AppState,
    scim: &Scim,
    raw_id: &str,
    change: impl FnOnce(&Attributes) -> Result<Attributes, ScimError>,
) -> Result<ScimUser, ScimError> {
    let id = user_id(raw_id)?;
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let before = store::lock(&mut tx, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    let prepared = Prepared::new(scim, change(&attributes_of(&before))?)?;
    let user = store::update(&mut tx, id, &prepared.write())
        .await
        .map_err(refused)?;
    sync_roster(&mut tx, state, Some(&before), Some(&prepared)).await?;
    tx.commit().await.map_err(internal)?;
    log_write(state, "updated", id, Some(&prepared.entry));
    Ok(user)
}

async fn replace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let scim = authorize(&state, &headers)?;
    let body = json_body(&body)?;
    let user = rewrite(&state, scim, &id, |_| resource::from_request(&body)).await?;
    Ok(user_response(
        StatusCode::OK,
        &user,
        &headers,
        &Projection::default(),
    ))
}

async fn modify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let scim = authorize(&state, &headers)?;
    let body = json_body(&body)?;
    let user = rewrite(&state, scim, &id, |attributes| {
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
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    authorize(&state, &headers)?;
    let id = user_id(&id)?;
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
