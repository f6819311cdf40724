//! Discovery: ServiceProviderConfig, ResourceTypes and Schemas.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::scim::error::quoted;
use crate::scim::schema::{self, LIST_RESPONSE};
use crate::scim::ScimError;

use super::request::{base_url, path_id, scim_json, Authorized};

pub(super) async fn service_provider_config(
    _: Authorized,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
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

pub(super) async fn resource_types(
    _: Authorized,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let base = base_url(&headers);
    let types = vec![
        schema::user_resource_type(&base),
        schema::group_resource_type(&base),
    ];
    let total = types.len();
    Ok(scim_json(StatusCode::OK, list_response(types, total, 1)))
}

pub(super) async fn resource_type(
    _: Authorized,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    schema::resource_type(&base_url(&headers), &id)
        .map(|document| scim_json(StatusCode::OK, document))
        .ok_or_else(|| ScimError::not_found(format!("no resource type {}", quoted(&id))))
}

pub(super) async fn schema_list(_: Authorized, headers: HeaderMap) -> Result<Response, ScimError> {
    let documents = schema::schema_documents(&base_url(&headers));
    let total = documents.len();
    Ok(scim_json(
        StatusCode::OK,
        list_response(documents, total, 1),
    ))
}

pub(super) async fn schema_one(
    _: Authorized,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ScimError> {
    let id = path_id(id)?;
    schema::schema_document(&base_url(&headers), &id)
        .map(|document| scim_json(StatusCode::OK, document))
        .ok_or_else(|| ScimError::not_found(format!("no schema {}", quoted(&id))))
}
