//! Reading request bodies and query strings the way Clerk validates them.
//!
//! Precedence within a body: unknown field, missing `email_address`, wrong JSON type,
//! bad email format, then out-of-range values. In a bulk body the items are checked
//! in order and the first error found is the answer.

use serde_json::{Map, Value};

use super::errors::ApiError;
use crate::clerk::model::{CreateInvitation, InvitationStatus, OrderBy, OrderField, TemplateSlug};

/// The most items one bulk call may carry.
pub const BULK_MAX: usize = 10;

const FIELDS: [&str; 7] = [
    "email_address",
    "public_metadata",
    "redirect_url",
    "notify",
    "ignore_existing",
    "expires_in_days",
    "template_slug",
];

/// Which of the two create bodies an object belongs to: they differ in nullability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Single,
    Bulk,
}

/// The body of `POST /invitations`.
pub fn parse_create(body: &[u8]) -> Result<CreateInvitation, ApiError> {
    match parse_json(body)? {
        Value::Object(object) => parse_item(&object, Shape::Single),
        _ => Err(ApiError::request_body_invalid()),
    }
}

/// The body of `POST /invitations/bulk`.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<CreateInvitation>, ApiError> {
    let Value::Array(items) = parse_json(body)? else {
        return Err(ApiError::request_body_invalid());
    };
    let objects: Vec<&Map<String, Value>> = items
        .iter()
        .map(Value::as_object)
        .collect::<Option<_>>()
        .ok_or_else(ApiError::request_body_invalid)?;
    if objects.is_empty() {
        return Err(ApiError::bulk_empty());
    }
    if objects.len() > BULK_MAX {
        return Err(ApiError::bulk_size_exceeded(BULK_MAX));
    }
    objects
        .into_iter()
        .map(|object| parse_item(object, Shape::Bulk))
        .collect()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::request_body_invalid())
}

fn parse_item(object: &Map<String, Value>, shape: Shape) -> Result<CreateInvitation, ApiError> {
    if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(ApiError::param_unknown(unknown));
    }
    let nullable_in_bulk = shape == Shape::Bulk;

    let email_address = match object.get("email_address") {
        None => return Err(ApiError::param_missing("email_address")),
        Some(Value::String(email)) => email.clone(),
        Some(other) => return Err(ApiError::wrong_type("email_address", other, "string")),
    };
    let public_metadata = match field(object, "public_metadata", nullable_in_bulk, "object")? {
        Some(Value::Object(metadata)) => Some(metadata.clone()),
        Some(other) => return Err(ApiError::wrong_type("public_metadata", other, "object")),
        None => None,
    };
    let redirect_url = string_field(object, "redirect_url", nullable_in_bulk)?;
    let notify = bool_field(object, "notify")?;
    let ignore_existing = bool_field(object, "ignore_existing")?;
    let expires_in_days = match field(object, "expires_in_days", true, "integer")? {
        Some(value) => match value.as_i64() {
            Some(days) => Some(days),
            None if value.is_u64() => Some(i64::MAX),
            None => return Err(ApiError::wrong_type("expires_in_days", value, "integer")),
        },
        None => None,
    };
    let template_slug = string_field(object, "template_slug", false)?;

    if !is_valid_email(&email_address) {
        return Err(ApiError::email_format_invalid());
    }
    let expires_in_days = match expires_in_days {
        Some(days) => match u32::try_from(days) {
            Ok(days @ 1..=365) => Some(days),
            _ => {
                return Err(ApiError::value_invalid(
                    "expires_in_days",
                    "expires_in_days must be between 1 and 365.",
                ))
            }
        },
        None => None,
    };
    let template_slug = match template_slug {
        Some(slug) => Some(TemplateSlug::parse(&slug).ok_or_else(|| {
            ApiError::value_invalid(
                "template_slug",
                "template_slug must be one of: invitation, waitlist_invitation.",
            )
        })?),
        None => None,
    };

    Ok(CreateInvitation {
        email_address,
        public_metadata,
        redirect_url,
        notify,
        ignore_existing,
        expires_in_days,
        template_slug,
    })
}

/// A field's value, `None` when absent (or null where null is allowed).
fn field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    nullable: bool,
    expected: &str,
) -> Result<Option<&'a Value>, ApiError> {
    match object.get(name) {
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(None),
        Some(Value::Null) => Err(ApiError::wrong_type(name, &Value::Null, expected)),
        Some(value) => Ok(Some(value)),
    }
}

fn string_field(
    object: &Map<String, Value>,
    name: &str,
    nullable: bool,
) -> Result<Option<String>, ApiError> {
    match field(object, name, nullable, "string")? {
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(ApiError::wrong_type(name, other, "string")),
        None => Ok(None),
    }
}

fn bool_field(object: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match field(object, name, true, "boolean")? {
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => Err(ApiError::wrong_type(name, other, "boolean")),
        None => Ok(None),
    }
}

/// One `@`, a non-empty local part, a dotted domain without empty labels, no
/// whitespace or control characters.
pub fn is_valid_email(email: &str) -> bool {
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// The query of `GET /invitations`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Empty: every status but `revoked`.
    pub statuses: Vec<InvitationStatus>,
    pub query: Option<String>,
    pub order_by: OrderBy,
    pub paginated: bool,
    pub limit: usize,
    pub offset: usize,
}

pub const LIMIT_DEFAULT: usize = 10;
pub const LIMIT_MAX: usize = 500;

/// Parse a raw query string. Unknown parameters are ignored; `status` may repeat.
pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut list = ListQuery {
        statuses: Vec::new(),
        query: None,
        order_by: OrderBy {
            field: OrderField::CreatedAt,
            descending: true,
        },
        paginated: false,
        limit: LIMIT_DEFAULT,
        offset: 0,
    };
    let pairs = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes());
    for (name, value) in pairs {
        match name.as_ref() {
            "status" => {
                let status = InvitationStatus::parse(&value).ok_or_else(|| {
                    ApiError::value_invalid(
                        "status",
                        "status must be one of: pending, accepted, revoked, expired.",
                    )
                })?;
                if !list.statuses.contains(&status) {
                    list.statuses.push(status);
                }
            }
            "query" => list.query = (!value.is_empty()).then(|| value.into_owned()),
            "order_by" => {
                list.order_by = OrderBy::parse(&value).ok_or_else(|| {
                    ApiError::value_invalid(
                        "order_by",
                        "order_by must be created_at, email_address or expires_at, optionally prefixed with + or -.",
                    )
                })?;
            }
            "paginated" => {
                list.paginated = parse_bool(&value).ok_or_else(|| {
                    ApiError::value_invalid("paginated", "paginated must be true or false.")
                })?;
            }
            "limit" => {
                list.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=LIMIT_MAX).contains(limit))
                    .ok_or_else(|| {
                        ApiError::value_invalid(
                            "limit",
                            format!("limit must be an integer between 1 and {LIMIT_MAX}."),
                        )
                    })?;
            }
            "offset" => {
                list.offset = parse_offset(&value).ok_or_else(|| {
                    ApiError::value_invalid(
                        "offset",
                        "offset must be an integer greater than or equal to 0.",
                    )
                })?;
            }
            _ => {}
        }
    }
    Ok(list)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_offset(value: &str) -> Option<usize> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // An offset past any possible list is valid and yields an empty page.
    Some(digits.parse::<usize>().unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_check() {
        for good in ["a@b.co", "A.B+tag@sub.example.org", "x@y.z"] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@@b.co", "a@b@c.co", "a b@c.co", "a@b..co",
            "a@.b.co", "a@b.co.", "a@b.co\n",
        ] {
            assert!(!is_valid_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn list_query_defaults_and_errors() {
        let list = parse_list_query(None).expect("defaults");
        assert_eq!(list.limit, 10);
        assert_eq!(list.offset, 0);
        assert!(!list.paginated);
        assert_eq!(list.order_by.to_string(), "-created_at");
        let list = parse_list_query(Some(
            "status=pending&status=expired&limit=500&offset=99999999999999999999999&paginated=true",
        ))
        .expect("valid");
        assert_eq!(
            list.statuses,
            [InvitationStatus::Pending, InvitationStatus::Expired]
        );
        assert_eq!(list.offset, usize::MAX);
        for bad in [
            "limit=0",
            "limit=501",
            "limit=x",
            "offset=-1",
            "offset=",
            "order_by=name",
            "status=gone",
            "paginated=yes",
        ] {
            assert!(parse_list_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
