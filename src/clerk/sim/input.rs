//! Reading request bodies and query strings the way Clerk validates them.
//!
//! Precedence within a body: unknown field, missing `email_address`, wrong JSON type,
//! bad email format, then out-of-range values. In a bulk body the items are checked
//! in order and the first error found is the answer.

pub mod organizations;

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
            "limit" => list.limit = limit(&value)?,
            "offset" => list.offset = offset(&value)?,
            _ => {}
        }
    }
    Ok(list)
}

/// The most values one repeated filter of `GET /users` may carry.
pub const USER_FILTER_MAX: usize = 100;

/// What `GET /users` orders by. The simulator's users have no names, phones or
/// wallets, so the spec's other fields are accepted and order nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOrder {
    CreatedAt,
    UpdatedAt,
    EmailAddress,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserOrderBy {
    pub field: UserOrder,
    pub descending: bool,
}

/// The query of `GET /users`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserQuery {
    /// Empty: no filter on email addresses.
    pub email_addresses: Vec<String>,
    /// Empty: no filter on ids.
    pub user_ids: Vec<String>,
    pub email_address_query: Option<String>,
    pub query: Option<String>,
    pub order_by: UserOrderBy,
    pub limit: usize,
    pub offset: usize,
    pub starting_after: Option<String>,
}

fn parse_user_order(value: &str) -> Option<UserOrderBy> {
    let (descending, name) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    let field = match name {
        "created_at" => UserOrder::CreatedAt,
        "updated_at" => UserOrder::UpdatedAt,
        "email_address" => UserOrder::EmailAddress,
        "web3wallet" | "first_name" | "last_name" | "phone_number" | "username"
        | "last_active_at" | "last_sign_in_at" => UserOrder::Other,
        _ => return None,
    };
    Some(UserOrderBy { field, descending })
}

/// Parse the raw query of `GET /users`. Array parameters repeat (`email_address=a&email_address=b`)
/// and take at most 100 values; only the first `order_by` counts; parameters the simulator does
/// not filter on are ignored.
pub fn parse_user_query(raw: Option<&str>) -> Result<UserQuery, ApiError> {
    let mut users = UserQuery {
        email_addresses: Vec::new(),
        user_ids: Vec::new(),
        email_address_query: None,
        query: None,
        order_by: UserOrderBy {
            field: UserOrder::CreatedAt,
            descending: true,
        },
        limit: LIMIT_DEFAULT,
        offset: 0,
        starting_after: None,
    };
    let mut order_seen = false;
    let pairs = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes());
    for (name, value) in pairs {
        match name.as_ref() {
            "email_address" => users.email_addresses.push(value.into_owned()),
            "user_id" => users.user_ids.push(value.into_owned()),
            "email_address_query" => {
                users.email_address_query = (!value.is_empty()).then(|| value.into_owned())
            }
            "query" => users.query = (!value.is_empty()).then(|| value.into_owned()),
            "order_by" if order_seen => {}
            "order_by" => {
                order_seen = true;
                users.order_by = parse_user_order(&value).ok_or_else(|| {
                    ApiError::value_invalid(
                        "order_by",
                        "order_by must be one of created_at, updated_at, email_address, web3wallet, first_name, last_name, phone_number, username, last_active_at, last_sign_in_at, optionally prefixed with + or -.",
                    )
                })?;
            }
            "limit" => users.limit = limit(&value)?,
            "offset" => users.offset = offset(&value)?,
            "starting_after" => {
                users.starting_after = (!value.is_empty()).then(|| value.into_owned())
            }
            _ => {}
        }
    }
    check_user_query(&users)?;
    Ok(users)
}

/// What `GET /users` refuses in a query whose parameters each parsed.
fn check_user_query(users: &UserQuery) -> Result<(), ApiError> {
    for (name, values) in [
        ("email_address", &users.email_addresses),
        ("user_id", &users.user_ids),
    ] {
        if values.len() > USER_FILTER_MAX {
            return Err(ApiError::too_many_values(name, USER_FILTER_MAX));
        }
    }
    if users.starting_after.is_some() {
        if !matches!(users.order_by.field, UserOrder::CreatedAt) {
            return Err(ApiError::value_invalid(
                "starting_after",
                "starting_after can only be used when ordering by created_at.",
            ));
        }
        if users.offset != 0 {
            return Err(ApiError::value_invalid(
                "starting_after",
                "starting_after cannot be combined with a non-zero offset.",
            ));
        }
    }
    Ok(())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A listing's `limit`: 1 to `LIMIT_MAX`, as Clerk checks it.
fn limit(value: &str) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|limit| (1..=LIMIT_MAX).contains(limit))
        .ok_or_else(|| {
            ApiError::value_invalid(
                "limit",
                format!("limit must be an integer between 1 and {LIMIT_MAX}."),
            )
        })
}

/// A listing's `offset`: any integer from 0, as Clerk checks it.
fn offset(value: &str) -> Result<usize, ApiError> {
    parse_offset(value).ok_or_else(|| {
        ApiError::value_invalid(
            "offset",
            "offset must be an integer greater than or equal to 0.",
        )
    })
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
    fn user_query_defaults_limits_and_errors() {
        let users = parse_user_query(None).expect("defaults");
        assert_eq!(users.limit, 10);
        assert_eq!(users.offset, 0);
        assert!(users.order_by.descending);
        assert_eq!(users.order_by.field, UserOrder::CreatedAt);
        let users = parse_user_query(Some(
            "email_address=A%40b.co&email_address=c%40d.co&order_by=email_address&order_by=-created_at&limit=500",
        ))
        .expect("valid");
        assert_eq!(users.email_addresses, ["A@b.co", "c@d.co"]);
        assert_eq!(
            users.order_by.field,
            UserOrder::EmailAddress,
            "the first order_by wins"
        );
        assert!(!users.order_by.descending);
        let hundred: String = (0..100)
            .map(|i| format!("email_address=u{i}%40x.co&"))
            .collect();
        assert_eq!(
            parse_user_query(Some(&hundred))
                .expect("100 is allowed")
                .email_addresses
                .len(),
            100
        );
        let too_many = format!("{hundred}email_address=last%40x.co");
        assert!(parse_user_query(Some(&too_many)).is_err());
        for bad in [
            "limit=0",
            "limit=501",
            "offset=-1",
            "order_by=name",
            "starting_after=user_x&order_by=email_address",
            "starting_after=user_x&offset=3",
        ] {
            assert!(parse_user_query(Some(bad)).is_err(), "{bad}");
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
