//! `POST /v1/webhooks/roster`: the roster webhook's payloads, `invitee.upserted`,
//! `invitee.removed`, `membership.upserted`, `membership.removed` and `roster.batch` (whose
//! `memberships` object carries membership changes beside the instance roster's), checked
//! whole before anything is written, then applied in one transaction. The delivery's
//! signature ([`crate::webhook_signature`]) is checked before a payload is read here.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use tower::limit::GlobalConcurrencyLimitLayer;

use super::error::ApiError;
use super::signature::{guarded, verify};
use crate::domain::{
    DesiredInvitee, DesiredMembership, DesiredRow, Email, MembershipRow, RowDefaults,
};
use crate::service::state::AppState;
use crate::store::membership_roster::{self, MembershipBatch, MembershipColumns, MembershipWriter};
use crate::store::roster::{self, names_scim, SCIM_SOURCE};
use crate::store::webhooks;
use crate::webhook_signature::Scheme;

/// Most items one `roster.batch` may carry, memberships included.
pub const MAX_BATCH: usize = 1000;

/// One change to the roster or to the membership roster.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(DesiredRow),
    Remove(Email),
    /// A membership roster row, checked, stored as written here (the address normalised,
    /// the organization and role trimmed, a blank role NULL).
    UpsertMembership(Box<MembershipRow>),
    /// Out of one organization's roster.
    RemoveMembership {
        email: Email,
        organization: String,
    },
}

impl Change {
    /// Whether it changes the membership roster.
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Change::UpsertMembership(_) | Change::RemoveMembership { .. }
        )
    }
}

/// Why a webhook's changes were not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The changes touch rows the SCIM endpoint manages; nothing was applied.
    #[error(
        "{} managed through SCIM (source {SCIM_SOURCE:?}); change {} through the identity provider: {}",
        if .0.len() == 1 { "this address is" } else { "these addresses are" },
        if .0.len() == 1 { "it" } else { "them" },
        .0.join(", ")
    )]
    ScimManaged(Vec<String>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub upserted: u64,
    pub removed: u64,
    /// Membership roster rows upserted and removed.
    pub memberships_upserted: u64,
    pub memberships_removed: u64,
}

const UPSERT_FIELDS: [&str; 8] = [
    "email",
    "public_metadata",
    "redirect_url",
    "not_before",
    "notify",
    "expires_in_days",
    "template_slug",
    "source",
];

const MEMBERSHIP_FIELDS: [&str; 10] = [
    "email",
    "organization",
    "role",
    "public_metadata",
    "private_metadata",
    "redirect_url",
    "expires_in_days",
    "notify",
    "not_before",
    "source",
];

/// Parses and checks a payload; the error names the field at fault.
pub fn parse(body: &[u8]) -> Result<Vec<Change>, String> {
    let payload = match serde_json::from_slice::<Strict>(body) {
        Ok(Strict(payload)) => payload,
        Err(e) if e.is_data() => return Err(format!("the body is refused: {e}")),
        Err(e) => return Err(format!("the body is not valid JSON: {e}")),
    };
    let object = payload
        .as_object()
        .ok_or_else(|| "the body must be a JSON object with type and data".to_owned())?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !["type", "data"].contains(&k.as_str()))
    {
        return Err(format!(
            "{unknown}: unknown field; the body holds type and data"
        ));
    }
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| "type: missing or not a string".to_owned())?;
    let data = object
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| "data: missing or not an object".to_owned())?;
    match kind {
        "invitee.upserted" => Ok(vec![Change::Upsert(upsert(data, "data")?)]),
        "invitee.removed" => Ok(vec![Change::Remove(removal(data, "data")?)]),
        "membership.upserted" => Ok(vec![Change::UpsertMembership(Box::new(membership_upsert(
            data, "data",
        )?))]),
        "membership.removed" => {
            let (email, organization) = membership_removal(data, "data")?;
            Ok(vec![Change::RemoveMembership {
                email,
                organization,
            }])
        }
        "roster.batch" => batch(data),
        other => Err(format!(
            "type: unknown event type {other:?}; expected invitee.upserted, invitee.removed, \
             membership.upserted, membership.removed or roster.batch"
        )),
    }
}

/// The array `name` of `object` (at `path`), empty when absent or null.
fn list<'a>(object: &'a Map<String, Value>, path: &str, name: &str) -> Result<&'a [Value], String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{path}.{name}: must be an array")),
    }
}

fn batch(data: &Map<String, Value>) -> Result<Vec<Change>, String> {
    if let Some(unknown) = data
        .keys()
        .find(|k| !["upserted", "removed", "memberships"].contains(&k.as_str()))
    {
        return Err(format!("data.{unknown}: unknown field"));
    }
    let upserted = list(data, "data", "upserted")?;
    let removed = list(data, "data", "removed")?;
    let empty = Map::new();
    let memberships = match data.get("memberships") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(memberships)) => memberships,
        Some(_) => return Err("data.memberships: must be an object".to_owned()),
    };
    if let Some(unknown) = memberships
        .keys()
        .find(|k| !["upserted", "removed"].contains(&k.as_str()))
    {
        return Err(format!("data.memberships.{unknown}: unknown field"));
    }
    let memberships_upserted = list(memberships, "data.memberships", "upserted")?;
    let memberships_removed = list(memberships, "data.memberships", "removed")?;
    let items =
        upserted.len() + removed.len() + memberships_upserted.len() + memberships_removed.len();
    if items > MAX_BATCH {
        return Err(format!(
            "data: {items} items; a batch carries at most {MAX_BATCH}"
        ));
    }
    let mut changes = Vec::with_capacity(items);
    // One person once per batch: two changes to the same address have no order to apply.
    let mut seen: std::collections::HashMap<Email, String> = std::collections::HashMap::new();
    let mut once = |email: &Email, path: &str| match seen.insert(email.clone(), path.to_owned()) {
        Some(first) => Err(format!("{path}.email: the same address as {first}")),
        None => Ok(()),
    };
    for (i, item) in upserted.iter().enumerate() {
        let path = format!("data.upserted[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| format!("{path}: must be an object"))?;
        let row = upsert(item, &path)?;
        once(&email(item, &path)?, &path)?;
        changes.push(Change::Upsert(row));
    }
    for (i, item) in removed.iter().enumerate() {
        let path = format!("data.removed[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| format!("{path}: must be an object"))?;
        let address = removal(item, &path)?;
        once(&address, &path)?;
        changes.push(Change::Remove(address));
    }
    // One (person, organization) once per batch; a person may also be named above, in the
    // instance roster, which is another roster.
    let mut pairs: std::collections::HashMap<(Email, String), String> =
        std::collections::HashMap::new();
    let mut pair_once = |email: Email, organization: String, path: &str| match pairs
        .insert((email, organization), path.to_owned())
    {
        Some(first) => Err(format!(
            "{path}: the same address and organization as {first}"
        )),
        None => Ok(()),
    };
    for (i, item) in memberships_upserted.iter().enumerate() {
        let path = format!("data.memberships.upserted[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| format!("{path}: must be an object"))?;
        let row = membership_upsert(item, &path)?;
        let email = Email::parse(&row.email).map_err(|e| format!("{path}.email: {e}"))?;
        pair_once(email, row.organization.clone(), &path)?;
        changes.push(Change::UpsertMembership(Box::new(row)));
    }
    for (i, item) in memberships_removed.iter().enumerate() {
        let path = format!("data.memberships.removed[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| format!("{path}: must be an object"))?;
        let (email, organization) = membership_removal(item, &path)?;
        pair_once(email.clone(), organization.clone(), &path)?;
        changes.push(Change::RemoveMembership {
            email,
            organization,
        });
    }
    Ok(changes)
}

fn organization(data: &Map<String, Value>, path: &str) -> Result<String, String> {
    let raw = data
        .get("organization")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}.organization: missing or not a string"))?;
    crate::domain::check_organization(raw).map_err(|e| format!("{path}.organization: {e}"))
}

fn membership_removal(data: &Map<String, Value>, path: &str) -> Result<(Email, String), String> {
    if let Some(unknown) = data
        .keys()
        .find(|k| !["email", "organization"].contains(&k.as_str()))
    {
        return Err(format!("{path}.{unknown}: unknown field"));
    }
    Ok((email(data, path)?, organization(data, path)?))
}

/// A membership roster row from a payload item: its fields typed, then the row rules of
/// [`DesiredMembership::from_row`].
fn membership_upsert(data: &Map<String, Value>, path: &str) -> Result<MembershipRow, String> {
    if let Some(unknown) = data
        .keys()
        .find(|k| !MEMBERSHIP_FIELDS.contains(&k.as_str()))
    {
        let hint = if unknown == "template_slug" {
            " (organization invitations have no template)"
        } else {
            ""
        };
        return Err(format!("{path}.{unknown}: unknown field{hint}"));
    }
    let email = email(data, path)?;
    let organization = organization(data, path)?;
    let text = |name: &str| -> Result<Option<String>, String> {
        match data.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{path}.{name}: must be a string")),
        }
    };
    let object = |name: &str| -> Result<Value, String> {
        match data.get(name) {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(value @ Value::Object(_)) => Ok(value.clone()),
            Some(_) => Err(format!("{path}.{name}: must be a JSON object")),
        }
    };
    let source = text("source")?.unwrap_or_else(|| "webhook".to_owned());
    if names_scim(&source) {
        return Err(format!(
            "{path}.source: {source:?} names {SCIM_SOURCE:?}, which is reserved for the rows \
             of the SCIM endpoint; change those through the identity provider"
        ));
    }
    let row = MembershipRow {
        email: email.as_str().to_owned(),
        organization,
        role: text("role")?,
        public_metadata: object("public_metadata")?,
        private_metadata: object("private_metadata")?,
        redirect_url: text("redirect_url")?,
        expires_in_days: expires_in_days(data, path)?,
        notify: notify(data, path)?,
        not_before: not_before(text("not_before")?, path)?,
        source: Some(source),
        created_at: None,
        updated_at: None,
    };
    let checked = DesiredMembership::from_row(&row).map_err(|invalid| {
        // The role's reason names it already; the others name their field.
        format!("{path}: {}", invalid.reason)
    })?;
    Ok(MembershipRow {
        role: checked.role,
        ..row
    })
}

fn not_before(
    raw: Option<String>,
    path: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    raw.map(|raw| {
        chrono::DateTime::parse_from_rfc3339(&raw)
            .map(|time| time.with_timezone(&chrono::Utc))
            .map_err(|e| format!("{path}.not_before: not an RFC 3339 time: {e}"))
    })
    .transpose()
}

fn notify(data: &Map<String, Value>, path: &str) -> Result<Option<bool>, String> {
    match data.get("notify") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{path}.notify: must be true or false")),
    }
}

fn expires_in_days(data: &Map<String, Value>, path: &str) -> Result<Option<i32>, String> {
    match data.get("expires_in_days") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{path}.expires_in_days: must be an integer")),
    }
}

fn email(data: &Map<String, Value>, path: &str) -> Result<Email, String> {
    let raw = data
        .get("email")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}.email: missing or not a string"))?;
    Email::parse_invitable(raw).map_err(|e| format!("{path}.email: {e}"))
}

fn removal(data: &Map<String, Value>, path: &str) -> Result<Email, String> {
    if let Some(unknown) = data.keys().find(|k| k.as_str() != "email") {
        return Err(format!("{path}.{unknown}: unknown field"));
    }
    email(data, path)
}

fn upsert(data: &Map<String, Value>, path: &str) -> Result<DesiredRow, String> {
    if let Some(unknown) = data.keys().find(|k| !UPSERT_FIELDS.contains(&k.as_str())) {
        return Err(format!("{path}.{unknown}: unknown field"));
    }
    let email = email(data, path)?;
    let text = |name: &str| -> Result<Option<String>, String> {
        match data.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{path}.{name}: must be a string")),
        }
    };
    let not_before = not_before(text("not_before")?, path)?;
    let notify = notify(data, path)?;
    let expires_in_days = expires_in_days(data, path)?;
    let public_metadata = match data.get("public_metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(value @ Value::Object(_)) => value.clone(),
        Some(_) => return Err(format!("{path}.public_metadata: must be a JSON object")),
    };
    let source = text("source")?.unwrap_or_else(|| "webhook".to_owned());
    if names_scim(&source) {
        return Err(format!(
            "{path}.source: {source:?} names {SCIM_SOURCE:?}, which is reserved for the rows \
             of the SCIM endpoint; change those through the identity provider"
        ));
    }
    let row = DesiredRow {
        email: email.as_str().to_owned(),
        public_metadata,
        redirect_url: text("redirect_url")?,
        notify,
        expires_in_days,
        template_slug: text("template_slug")?,
        not_before,
        source: Some(source),
        created_at: None,
        updated_at: None,
    };
    DesiredInvitee::from_row(&row, &RowDefaults::default())
        .map_err(|invalid| format!("{path}: {}", invalid.reason))?;
    Ok(row)
}

/// A JSON value read like `serde_json::Value`, except that an object naming a key twice is
/// refused: which of the two values would count is not something to guess.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Writes the changes in the caller's transaction: the instance roster's into `relation`,
/// the membership roster's into `memberships_relation`. A change to a row the SCIM endpoint owns
/// refuses the whole request (the caller rolls the transaction back): the identity provider
/// owns that person, and a webhook silently undoing its work (or being undone by it) would
/// leave nobody in charge. The writes themselves never touch such a row
/// ([`crate::store::roster`]'s rule of ownership), whatever SCIM writes meanwhile.
pub async fn apply(
    conn: &mut PgConnection,
    relation: &str,
    memberships_relation: &str,
    changes: &[Change],
) -> Result<Applied, ApplyError> {
    let mut batch = crate::store::roster::Batch::default();
    let mut removals = Vec::new();
    let mut memberships = MembershipBatch::default();
    let mut membership_removals = Vec::new();
    for change in changes {
        match change {
            Change::Upsert(row) => batch.push(row.clone()),
            Change::Remove(email) => removals.push(email.as_str().to_owned()),
            Change::UpsertMembership(row) => memberships.push((**row).clone()),
            Change::RemoveMembership {
                email,
                organization,
            } => membership_removals.push((email.as_str().to_owned(), organization.clone())),
        }
    }
    let mut applied = Applied {
        upserted: batch.len() as u64,
        memberships_upserted: memberships.len() as u64,
        ..Applied::default()
    };
    let mut managed = Vec::new();
    if !batch.is_empty() || !removals.is_empty() {
        let writer =
            crate::store::roster::Writer::new(relation, crate::store::roster::Columns::ALL);
        let written = writer.upsert(conn, &mut batch).await?;
        let removed = writer.delete(conn, &removals).await?;
        managed.extend(written.kept_scim);
        managed.extend(removed.kept_scim);
        applied.removed = removed.deleted;
    }
    if !memberships.is_empty() || !membership_removals.is_empty() {
        let writer = MembershipWriter::new(memberships_relation, MembershipColumns::ALL);
        let written = writer.upsert(conn, &mut memberships).await?;
        let removed = writer.delete(conn, &membership_removals).await?;
        managed.extend(written.kept_scim);
        managed.extend(removed.kept_scim);
        applied.memberships_removed = removed.deleted;
    }
    if !managed.is_empty() {
        managed.sort();
        managed.dedup();
        return Err(ApplyError::ScimManaged(managed));
    }
    Ok(applied)
}

const PATH: &str = "/v1/webhooks/roster";

/// The webhook's route behind its signature check, in the webhook `slots` it shares.
pub fn router(state: &AppState, slots: GlobalConcurrencyLimitLayer) -> Router<AppState> {
    guarded(
        Router::new().route(PATH, post(hook)),
        state,
        Scheme::StandardWebhooks,
        slots,
    )
}

async fn hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let message_id = verify(&state.roster, Scheme::StandardWebhooks, &headers, &body)?;
    let changes = parse(&body).map_err(ApiError::BadRequest)?;
    // A view cannot take the writes: a 4xx, so the sender stops retrying what cannot succeed.
    // Each roster is checked when the payload writes it (an empty batch checks the instance
    // roster, as it always has).
    let memberships = changes.iter().any(Change::is_membership);
    if !memberships || changes.iter().any(|change| !change.is_membership()) {
        let kind = roster::relation_kind(&state.pool, &state.config.relation).await?;
        if let Some(reason) = roster::not_writable_reason(&state.config.relation, kind) {
            return Err(ApiError::Conflict(reason));
        }
    }
    if memberships {
        let relation = &state.memberships_relation;
        let kind = roster::relation_kind(&state.pool, relation).await?;
        if let Some(reason) = membership_roster::not_writable_reason(relation, kind) {
            return Err(ApiError::Conflict(reason));
        }
    }
    let mut tx = state.pool.begin().await?;
    if !webhooks::record_delivery(&mut *tx, "roster", &message_id).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "duplicate", "applied": false})),
        )
            .into_response());
    }
    let applied = apply(
        &mut tx,
        &state.config.relation,
        &state.memberships_relation,
        &changes,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        message_id,
        upserted = applied.upserted,
        removed = applied.removed,
        memberships_upserted = applied.memberships_upserted,
        memberships_removed = applied.memberships_removed,
        "roster webhook applied"
    );
    let mut answer =
        json!({"status": "applied", "upserted": applied.upserted, "removed": applied.removed});
    // Said when the payload carried memberships, so an answer to an instance roster payload
    // is what it always was.
    if memberships {
        answer["memberships"] = json!({
            "upserted": applied.memberships_upserted,
            "removed": applied.memberships_removed,
        });
    }
    Ok((StatusCode::OK, Json(answer)).into_response())
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> ApiError {
        match error {
            ApplyError::ScimManaged(_) => ApiError::Conflict(error.to_string()),
            ApplyError::Database(error) => ApiError::Database(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str) -> Result<Vec<Change>, String> {
        parse(body.as_bytes())
    }

    #[test]
    fn an_upsert_carries_every_field() {
        let changes = parse_str(
            r#"{"type":"invitee.upserted","data":{"email":" Ann@X.com","public_metadata":{"team":"ops"},
                "redirect_url":"https://app.example.com/in","not_before":"2030-01-01T00:00:00Z","notify":false}}"#,
        )
        .unwrap();
        let [Change::Upsert(row)] = changes.as_slice() else {
            panic!("one upsert: {changes:?}");
        };
        assert_eq!(row.email, "ann@x.com");
        assert_eq!(row.public_metadata["team"], "ops");
        assert_eq!(row.notify, Some(false));
        assert_eq!(row.source.as_deref(), Some("webhook"));
        assert!(row.not_before.is_some());
    }

    #[test]
    fn a_batch_keeps_upserts_and_removals() {
        let changes = parse_str(
            r#"{"type":"roster.batch","data":{"upserted":[{"email":"a@x.com"}],"removed":[{"email":"B@x.com"}]}}"#,
        )
        .unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1], Change::Remove(Email::parse("b@x.com").unwrap()));
    }

    #[test]
    fn each_rejection_names_the_field_at_fault() {
        let cases = [
            ("not json", "not valid JSON"),
            (
                r#"{"type":"invitee.created","data":{}}"#,
                "type: unknown event type",
            ),
            (r#"{"data":{}}"#, "type: missing"),
            (r#"{"type":"invitee.upserted"}"#, "data: missing"),
            (
                r#"{"type":"invitee.upserted","data":{"email":"nope"}}"#,
                "data.email:",
            ),
            (
                r#"{"type":"invitee.upserted","data":{"email":"a@x.com","public_metadata":[1]}}"#,
                "data.public_metadata: must be a JSON object",
            ),
            (
                r#"{"type":"invitee.upserted","data":{"email":"a@x.com","nickname":"a"}}"#,
                "data.nickname: unknown field",
            ),
            (
                r#"{"type":"invitee.upserted","data":{"email":"a@x.com","not_before":"tomorrow"}}"#,
                "data.not_before",
            ),
            (
                r#"{"type":"invitee.upserted","data":{"email":"a@x.com","redirect_url":"ftp://x.example"}}"#,
                "data: redirect_url",
            ),
            (
                r#"{"type":"roster.batch","data":{"upserted":[{"email":"a@x.com"},{"email":"bad"}]}}"#,
                "data.upserted[1].email",
            ),
            (
                r#"{"type":"roster.batch","data":{"removed":[{"email":"a@x.com","why":1}]}}"#,
                "data.removed[0].why: unknown field",
            ),
            (
                r#"{"type":"invitee.removed","data":{"email":"a@x.com"},"id":"x"}"#,
                "id: unknown field",
            ),
            (
                r#"{"type":"invitee.removed","data":{"email":"a@x.com","email":"b@x.com"}}"#,
                r#"the key "email" appears twice"#,
            ),
            (
                r#"{"type":"roster.batch","data":{"upserted":[{"email":"a@x.com","public_metadata":{"t":1,"t":2}}]}}"#,
                r#"the key "t" appears twice"#,
            ),
            (
                r#"{"type":"invitee.upserted","data":{"email":"a@x.com","source":"h\u0000r"}}"#,
                "data: source contains a NUL",
            ),
            (
                r#"{"type":"invitee.upserted","data":{"email":"a@x.com","source":"SCIM"}}"#,
                r#"data.source: "SCIM" names "scim""#,
            ),
            (
                r#"{"type":"roster.batch","data":{"upserted":[{"email":"a@x.com","source":" scim"}]}}"#,
                r#"data.upserted[0].source: " scim" names "scim""#,
            ),
        ];
        for (body, expected) in cases {
            let error = parse_str(body).expect_err(body);
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn a_membership_upsert_carries_every_field_and_a_removal_names_the_organization() {
        let changes = parse_str(
            r#"{"type":"membership.upserted","data":{"email":" Ann@X.com","organization":" acme ",
                "role":" org:admin ","public_metadata":{"team":"ops"},"private_metadata":{"id":7},
                "redirect_url":"https://app.example.com/in","expires_in_days":14,"notify":false,
                "not_before":"2030-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        let [Change::UpsertMembership(row)] = changes.as_slice() else {
            panic!("one membership upsert: {changes:?}");
        };
        assert_eq!(
            (
                row.email.as_str(),
                row.organization.as_str(),
                row.role.as_deref()
            ),
            ("ann@x.com", "acme", Some("org:admin"))
        );
        assert_eq!(row.private_metadata["id"], 7);
        assert_eq!(row.public_metadata["team"], "ops");
        assert_eq!((row.expires_in_days, row.notify), (Some(14), Some(false)));
        assert_eq!(row.source.as_deref(), Some("webhook"));
        assert!(row.not_before.is_some());
        let blank = parse_str(
            r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"org_1","role":""}}"#,
        )
        .unwrap();
        let [Change::UpsertMembership(row)] = blank.as_slice() else {
            panic!("one membership upsert: {blank:?}");
        };
        assert_eq!(row.role, None, "a blank role is the default role");
        let removal = parse_str(
            r#"{"type":"membership.removed","data":{"email":"B@x.com","organization":"org_1"}}"#,
        )
        .unwrap();
        assert_eq!(
            removal,
            vec![Change::RemoveMembership {
                email: Email::parse("b@x.com").unwrap(),
                organization: "org_1".to_owned()
            }]
        );
    }

    #[test]
    fn a_batch_carries_memberships_beside_the_instance_roster() {
        let changes = parse_str(
            r#"{"type":"roster.batch","data":{"upserted":[{"email":"a@x.com"}],
                "memberships":{"upserted":[{"email":"a@x.com","organization":"acme"},
                                           {"email":"a@x.com","organization":"beta"}],
                               "removed":[{"email":"c@x.com","organization":"acme"}]}}}"#,
        )
        .unwrap();
        assert_eq!(changes.len(), 4);
        assert_eq!(changes.iter().filter(|c| c.is_membership()).count(), 3);
    }

    #[test]
    fn each_membership_rejection_names_the_item_and_field_at_fault() {
        let cases = [
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com"}}"#,
                "data.organization: missing",
            ),
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"ac me"}}"#,
                "data.organization: organization \"ac me\" must be",
            ),
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"acme","role":"admin"}}"#,
                "data: role \"admin\" must be an organization role key",
            ),
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"acme","private_metadata":[1]}}"#,
                "data.private_metadata: must be a JSON object",
            ),
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"acme","template_slug":"invitation"}}"#,
                "data.template_slug: unknown field (organization invitations have no template)",
            ),
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"acme","source":"Scim"}}"#,
                r#"data.source: "Scim" names "scim""#,
            ),
            (
                r#"{"type":"membership.upserted","data":{"email":"a@x.com","organization":"acme","expires_in_days":400}}"#,
                "data: expires_in_days is 400",
            ),
            (
                r#"{"type":"membership.removed","data":{"email":"a@x.com","organization":"acme","role":"org:admin"}}"#,
                "data.role: unknown field",
            ),
            (
                r#"{"type":"roster.batch","data":{"memberships":[]}}"#,
                "data.memberships: must be an object",
            ),
            (
                r#"{"type":"roster.batch","data":{"memberships":{"added":[]}}}"#,
                "data.memberships.added: unknown field",
            ),
            (
                r#"{"type":"roster.batch","data":{"memberships":{"upserted":[{"email":"a@x.com","organization":"acme"},{"email":"bad","organization":"acme"}]}}}"#,
                "data.memberships.upserted[1].email",
            ),
            (
                r#"{"type":"roster.batch","data":{"memberships":{"upserted":[{"email":"a@x.com","organization":"acme"}],"removed":[{"email":"A@X.com","organization":" acme"}]}}}"#,
                "data.memberships.removed[0]: the same address and organization as data.memberships.upserted[0]",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_str(body).expect_err(body);
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn a_batch_of_more_than_1000_items_is_refused() {
        let items: Vec<String> = (0..1001)
            .map(|i| format!(r#"{{"email":"p{i}@x.com"}}"#))
            .collect();
        let body = format!(
            r#"{{"type":"roster.batch","data":{{"upserted":[{}]}}}}"#,
            items.join(",")
        );
        assert!(parse_str(&body).unwrap_err().contains("at most 1000"));
        // Memberships count towards the same bound.
        let members: Vec<String> = (0..2)
            .map(|i| format!(r#"{{"email":"p{i}@x.com","organization":"acme"}}"#))
            .collect();
        let body = format!(
            r#"{{"type":"roster.batch","data":{{"upserted":[{}],"memberships":{{"upserted":[{}]}}}}}}"#,
            items[..999].join(","),
            members.join(",")
        );
        assert!(parse_str(&body).unwrap_err().contains("data: 1001 items"));
    }
}
