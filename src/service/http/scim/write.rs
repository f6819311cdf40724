//! Writing users: create, replace, modify (PATCH), delete, each with its roster row in the
//! same transaction.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DesiredInvitee, DesiredRow, RowDefaults};
use crate::scim::resource::{self, Attributes};
use crate::scim::{patch, RosterEntry, ScimError};
use crate::service::state::{AppState, Scim};
use crate::store::group_memberships;
use crate::store::roster::{Batch, Columns, Writer, SCIM_SOURCE};
use crate::store::scim::{self as store, ScimUser, UserWrite, WriteError};

use super::read::{attributes_of, user_id, user_response, Projection};
use super::request::{body_of, internal, json_body, off_runtime, path_id, Authorized};

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

/// After a user's write, in its transaction: the membership roster rows of the groups the
/// user is in follow the user's address and state.
async fn groups_follow(
    conn: &mut PgConnection,
    scim: &Scim,
    state: &AppState,
    id: Uuid,
    before: Option<&ScimUser>,
) -> Result<(), ScimError> {
    group_memberships::user_written(
        conn,
        &scim.groups,
        &state.config.target,
        id,
        before.and_then(|u| u.email.as_deref()),
    )
    .await
    .map_err(internal)
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

pub(super) async fn create(
    Authorized(scim): Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let body = body_of(body)?;
    let scim_groups = scim.clone();
    let prepared =
        off_runtime(move || Prepared::new(&scim, resource::from_request(&json_body(&body)?)?))
            .await?;
    let id = Uuid::new_v4();
    let mut tx = state.pool.begin().await.map_err(internal)?;
    let user = store::insert(&mut tx, id, &prepared.write())
        .await
        .map_err(refused)?;
    sync_roster(&mut tx, &state, None, Some(&prepared)).await?;
    groups_follow(&mut tx, &scim_groups, &state, id, None).await?;
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
    let scim_groups = scim.clone();
    let prepared = off_runtime(move || Prepared::new(&scim, change(&attributes)?)).await?;
    let user = store::update(&mut tx, id, &prepared.write())
        .await
        .map_err(refused)?;
    sync_roster(&mut tx, state, Some(&before), Some(&prepared)).await?;
    groups_follow(&mut tx, &scim_groups, state, id, Some(&before)).await?;
    tx.commit().await.map_err(internal)?;
    log_write(state, "updated", id, Some(&prepared.entry));
    Ok(user)
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
    let body = off_runtime(move || json_body(&body)).await?;
    let user = rewrite(&state, scim, &id, move |_| resource::from_request(&body)).await?;
    Ok(user_response(
        StatusCode::OK,
        &user,
        &headers,
        &Projection::default(),
    ))
}

pub(super) async fn modify(
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

pub(super) async fn remove(
    Authorized(scim): Authorized,
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
    groups_follow(&mut tx, &scim, &state, id, Some(&before)).await?;
    tx.commit().await.map_err(internal)?;
    log_write(&state, "deleted", id, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}
