//! Reading the bodies and queries of the organization endpoints the way Clerk validates them:
//! unknown field, missing required field, wrong JSON type, bad format, then out-of-range values.

use serde_json::{Map, Value};

use super::{
    bool_field, field, is_valid_email, limit, offset, parse_bool, parse_json, string_field,
    BULK_MAX, LIMIT_DEFAULT, USER_FILTER_MAX,
};
use crate::clerk::model::InvitationStatus;
use crate::clerk::organization::CreateOrganizationInvitation;
use crate::clerk::sim::errors::ApiError;

/// The body of `POST /organizations`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrganization {
    pub name: String,
    pub slug: Option<String>,
    pub created_by: Option<String>,
    pub max_allowed_memberships: Option<u64>,
    pub public_metadata: Map<String, Value>,
    pub private_metadata: Map<String, Value>,
}

const ORGANIZATION_FIELDS: [&str; 8] = [
    "name",
    "slug",
    "created_by",
    "max_allowed_memberships",
    "public_metadata",
    "private_metadata",
    "created_at",
    "role_set_key",
];

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match parse_json(body)? {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::request_body_invalid()),
    }
}

fn no_unknown(object: &Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
    match object.keys().find(|key| !fields.contains(&key.as_str())) {
        Some(unknown) => Err(ApiError::param_unknown(unknown)),
        None => Ok(()),
    }
}

fn required_string(object: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(ApiError::param_missing(name)),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(ApiError::wrong_type(name, other, "string")),
    }
}

fn metadata(
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<Map<String, Value>>, ApiError> {
    match field(object, name, true, "object")? {
        Some(Value::Object(metadata)) => Ok(Some(metadata.clone())),
        Some(other) => Err(ApiError::wrong_type(name, other, "object")),
        None => Ok(None),
    }
}

/// A non-negative integer field, `None` when absent or null.
fn count_field(object: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match field(object, name, true, "integer")? {
        Some(value) => match value.as_u64() {
            Some(count) => Ok(Some(count)),
            None if value.as_i64().is_some() => Err(ApiError::value_invalid(
                name,
                format!("{name} must be greater than or equal to 0."),
            )),
            None => Err(ApiError::wrong_type(name, value, "integer")),
        },
        None => Ok(None),
    }
}

/// A slug Clerk accepts: lowercase letters, digits and dashes.
pub fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An organization role key: `org:` then lowercase letters, digits and underscores.
pub fn is_valid_role_key(key: &str) -> bool {
    key.strip_prefix("org:").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

pub fn parse_new_organization(body: &[u8]) -> Result<NewOrganization, ApiError> {
    let object = object(body)?;
    no_unknown(&object, &ORGANIZATION_FIELDS)?;
    let name = required_string(&object, "name")?;
    let slug = string_field(&object, "slug", true)?;
    let created_by = string_field(&object, "created_by", true)?;
    let max_allowed_memberships = count_field(&object, "max_allowed_memberships")?;
    let public_metadata = metadata(&object, "public_metadata")?.unwrap_or_default();
    let private_metadata = metadata(&object, "private_metadata")?.unwrap_or_default();
    string_field(&object, "created_at", true)?;
    string_field(&object, "role_set_key", true)?;
    if name.trim().is_empty() || name.chars().count() > 256 {
        return Err(ApiError::value_invalid(
            "name",
            "name must be between 1 and 256 characters long.",
        ));
    }
    if let Some(slug) = &slug {
        if !is_valid_slug(slug) {
            return Err(ApiError::value_invalid(
                "slug",
                "slug can contain only lowercase alphanumeric characters and the dash \"-\".",
            ));
        }
    }
    Ok(NewOrganization {
        name,
        slug,
        created_by,
        max_allowed_memberships,
        public_metadata,
        private_metadata,
    })
}

const INVITATION_FIELDS: [&str; 8] = [
    "email_address",
    "role",
    "inviter_user_id",
    "public_metadata",
    "private_metadata",
    "redirect_url",
    "expires_in_days",
    "notify",
];

fn parse_invitation_item(
    object: &Map<String, Value>,
) -> Result<CreateOrganizationInvitation, ApiError> {
    no_unknown(object, &INVITATION_FIELDS)?;
    let email_address = required_string(object, "email_address")?;
    let role = required_string(object, "role")?;
    let inviter_user_id = string_field(object, "inviter_user_id", true)?;
    let public_metadata = metadata(object, "public_metadata")?;
    let private_metadata = metadata(object, "private_metadata")?;
    let redirect_url = string_field(object, "redirect_url", true)?;
    let expires_in_days = match field(object, "expires_in_days", true, "integer")? {
        Some(value) if value.is_i64() || value.is_u64() => Some(value.as_i64().unwrap_or(i64::MAX)),
        Some(other) => return Err(ApiError::wrong_type("expires_in_days", other, "integer")),
        None => None,
    };
    let notify = bool_field(object, "notify")?;
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
    Ok(CreateOrganizationInvitation {
        email_address,
        role,
        public_metadata,
        private_metadata,
        redirect_url,
        expires_in_days,
        notify,
        inviter_user_id,
    })
}

/// The body of `POST /organizations/{id}/invitations`.
pub fn parse_invitation(body: &[u8]) -> Result<CreateOrganizationInvitation, ApiError> {
    parse_invitation_item(&object(body)?)
}

/// The body of `POST /organizations/{id}/invitations/bulk`: 1 to 10 items, the first bad one
/// failing the call.
pub fn parse_invitation_bulk(body: &[u8]) -> Result<Vec<CreateOrganizationInvitation>, ApiError> {
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
    objects.into_iter().map(parse_invitation_item).collect()
}

/// The body of `POST /organizations/{id}/memberships`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMembership {
    pub user_id: String,
    pub role: String,
    pub public_metadata: Map<String, Value>,
    pub private_metadata: Map<String, Value>,
}

pub fn parse_new_membership(body: &[u8]) -> Result<NewMembership, ApiError> {
    let object = object(body)?;
    no_unknown(
        &object,
        &["user_id", "role", "public_metadata", "private_metadata"],
    )?;
    let user_id = required_string(&object, "user_id")?;
    let role = required_string(&object, "role")?;
    Ok(NewMembership {
        user_id,
        role,
        public_metadata: metadata(&object, "public_metadata")?.unwrap_or_default(),
        private_metadata: metadata(&object, "private_metadata")?.unwrap_or_default(),
    })
}

/// The body of `PATCH /organizations/{id}/memberships/{user_id}`: the new role.
pub fn parse_role_change(body: &[u8]) -> Result<String, ApiError> {
    let object = object(body)?;
    no_unknown(&object, &["role"])?;
    required_string(&object, "role")
}

/// The optional body of a revoke: `{"requesting_user_id": ...}`, or nothing at all.
pub fn parse_revoke(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let object = object(body)?;
    no_unknown(&object, &["requesting_user_id"])?;
    string_field(&object, "requesting_user_id", true)
}

/// A sort of a list: a field name the list knows, and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order<F> {
    pub field: F,
    pub descending: bool,
}

fn parse_order<F>(value: &str, fields: &[(&str, F)], message: &str) -> Result<Order<F>, ApiError>
where
    F: Copy,
{
    let (descending, name) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    fields
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, field)| Order {
            field: *field,
            descending,
        })
        .ok_or_else(|| ApiError::value_invalid("order_by", message))
}

fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    parse_bool(value)
        .ok_or_else(|| ApiError::value_invalid(name, format!("{name} must be true or false.")))
}

fn non_empty(value: std::borrow::Cow<'_, str>) -> Option<String> {
    (!value.is_empty()).then(|| value.into_owned())
}

fn pairs(raw: Option<&str>) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
}

fn at_most_100(name: &str, values: &[String]) -> Result<(), ApiError> {
    if values.len() > USER_FILTER_MAX {
        return Err(ApiError::too_many_values(name, USER_FILTER_MAX));
    }
    Ok(())
}

/// What `GET /organizations` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrganizationOrder {
    CreatedAt,
    Name,
    MembersCount,
}

/// The query of `GET /organizations` (and `include_members_count` of a get).
#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationQuery {
    pub include_members_count: bool,
    pub query: Option<String>,
    pub organization_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub order_by: Order<OrganizationOrder>,
    pub limit: usize,
    pub offset: usize,
}

pub fn parse_organization_query(raw: Option<&str>) -> Result<OrganizationQuery, ApiError> {
    let mut parsed = OrganizationQuery {
        include_members_count: false,
        query: None,
        organization_ids: Vec::new(),
        user_ids: Vec::new(),
        order_by: Order {
            field: OrganizationOrder::CreatedAt,
            descending: true,
        },
        limit: LIMIT_DEFAULT,
        offset: 0,
    };
    for (name, value) in pairs(raw) {
        match name.as_ref() {
            "include_members_count" => parsed.include_members_count = flag(&name, &value)?,
            "include_missing_member_with_elevated_permissions" => {
                flag(&name, &value)?;
            }
            "query" => parsed.query = non_empty(value),
            "organization_id" => parsed.organization_ids.push(value.into_owned()),
            "user_id" => parsed.user_ids.push(value.into_owned()),
            "order_by" => {
                parsed.order_by = parse_order(
                    &value,
                    &[
                        ("created_at", OrganizationOrder::CreatedAt),
                        ("name", OrganizationOrder::Name),
                        ("members_count", OrganizationOrder::MembersCount),
                    ],
                    "order_by must be name, created_at or members_count, optionally prefixed with + or -.",
                )?
            }
            "limit" => parsed.limit = limit(&value)?,
            "offset" => parsed.offset = offset(&value)?,
            _ => {}
        }
    }
    at_most_100("organization_id", &parsed.organization_ids)?;
    at_most_100("user_id", &parsed.user_ids)?;
    Ok(parsed)
}

/// What an organization invitation list sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationOrder {
    CreatedAt,
    EmailAddress,
}

/// The query of `GET /organizations/{id}/invitations` and `GET /organization_invitations`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgInvitationQuery {
    /// Empty: every status.
    pub statuses: Vec<InvitationStatus>,
    /// Empty: every address.
    pub email_addresses: Vec<String>,
    /// A partial match on the address (instance-wide list).
    pub query: Option<String>,
    pub order_by: Order<InvitationOrder>,
    pub limit: usize,
    pub offset: usize,
}

pub fn parse_org_invitation_query(raw: Option<&str>) -> Result<OrgInvitationQuery, ApiError> {
    let mut parsed = OrgInvitationQuery {
        statuses: Vec::new(),
        email_addresses: Vec::new(),
        query: None,
        order_by: Order {
            field: InvitationOrder::CreatedAt,
            descending: true,
        },
        limit: LIMIT_DEFAULT,
        offset: 0,
    };
    for (name, value) in pairs(raw) {
        match name.as_ref() {
            "status" => {
                let status = InvitationStatus::parse(&value).ok_or_else(|| {
                    ApiError::value_invalid(
                        "status",
                        "status must be one of: pending, accepted, revoked, expired.",
                    )
                })?;
                if !parsed.statuses.contains(&status) {
                    parsed.statuses.push(status);
                }
            }
            "email_address" => parsed.email_addresses.push(value.into_owned()),
            "query" => parsed.query = non_empty(value),
            "order_by" => parsed.order_by = parse_order(
                &value,
                &[
                    ("created_at", InvitationOrder::CreatedAt),
                    ("email_address", InvitationOrder::EmailAddress),
                ],
                "order_by must be created_at or email_address, optionally prefixed with + or -.",
            )?,
            "limit" => parsed.limit = limit(&value)?,
            "offset" => parsed.offset = offset(&value)?,
            _ => {}
        }
    }
    at_most_100("email_address", &parsed.email_addresses)?;
    Ok(parsed)
}

/// What a membership list sorts by; the simulator's users have no names, phones or usernames,
/// so those orders are accepted and order by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipOrder {
    CreatedAt,
    EmailAddress,
    Other,
}

/// The query of `GET /organizations/{id}/memberships`.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipQuery {
    pub user_ids: Vec<String>,
    pub email_addresses: Vec<String>,
    pub roles: Vec<String>,
    pub query: Option<String>,
    pub email_address_query: Option<String>,
    pub order_by: Order<MembershipOrder>,
    pub limit: usize,
    pub offset: usize,
}

pub fn parse_membership_query(raw: Option<&str>) -> Result<MembershipQuery, ApiError> {
    let mut parsed = MembershipQuery {
        user_ids: Vec::new(),
        email_addresses: Vec::new(),
        roles: Vec::new(),
        query: None,
        email_address_query: None,
        order_by: Order {
            field: MembershipOrder::CreatedAt,
            descending: true,
        },
        limit: LIMIT_DEFAULT,
        offset: 0,
    };
    for (name, value) in pairs(raw) {
        match name.as_ref() {
            "user_id" => parsed.user_ids.push(value.into_owned()),
            "email_address" => parsed.email_addresses.push(value.into_owned()),
            "role" => parsed.roles.push(value.into_owned()),
            "query" => parsed.query = non_empty(value),
            "email_address_query" => parsed.email_address_query = non_empty(value),
            "order_by" => {
                parsed.order_by = parse_order(
                    &value,
                    &[
                        ("created_at", MembershipOrder::CreatedAt),
                        ("email_address", MembershipOrder::EmailAddress),
                        ("phone_number", MembershipOrder::Other),
                        ("first_name", MembershipOrder::Other),
                        ("last_name", MembershipOrder::Other),
                        ("username", MembershipOrder::Other),
                    ],
                    "order_by must be one of phone_number, email_address, created_at, first_name, last_name or username, optionally prefixed with + or -.",
                )?
            }
            "limit" => parsed.limit = limit(&value)?,
            "offset" => parsed.offset = offset(&value)?,
            _ => {}
        }
    }
    at_most_100("user_id", &parsed.user_ids)?;
    at_most_100("email_address", &parsed.email_addresses)?;
    at_most_100("role", &parsed.roles)?;
    Ok(parsed)
}

/// The query of `GET /organization_roles`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleQuery {
    pub query: Option<String>,
    pub descending: bool,
    pub limit: usize,
    pub offset: usize,
}

pub fn parse_role_query(raw: Option<&str>) -> Result<RoleQuery, ApiError> {
    let mut parsed = RoleQuery {
        query: None,
        descending: true,
        limit: LIMIT_DEFAULT,
        offset: 0,
    };
    for (name, value) in pairs(raw) {
        match name.as_ref() {
            "query" => parsed.query = non_empty(value),
            "order_by" => {
                parsed.descending = parse_order(
                    &value,
                    &[("created_at", ())],
                    "order_by must be created_at, optionally prefixed with + or -.",
                )?
                .descending
            }
            "limit" => parsed.limit = limit(&value)?,
            "offset" => parsed.offset = offset(&value)?,
            _ => {}
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_role_keys() {
        assert!(is_valid_slug("acme-2"));
        for bad in ["", "Acme", "org_1", "a b", "a.b"] {
            assert!(!is_valid_slug(bad), "{bad:?}");
        }
        assert!(is_valid_role_key("org:billing_admin2"));
        for bad in ["org:", "admin", "org:Admin", "org:a-b", "org:a:b"] {
            assert!(!is_valid_role_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn invitation_bodies_are_checked_in_clerks_order() {
        let good = br#"{"email_address": "a@x.com", "role": "org:member", "notify": null}"#;
        let parsed = parse_invitation(good).expect("valid");
        assert_eq!(parsed.role, "org:member");
        for (body, code) in [
            (
                &br#"{"email_address": "a@x.com", "role": "org:member", "x": 1}"#[..],
                "form_param_unknown",
            ),
            (br#"{"email_address": "a@x.com"}"#, "form_param_missing"),
            (br#"{"role": "org:member"}"#, "form_param_missing"),
            (
                br#"{"email_address": 1, "role": "org:member"}"#,
                "form_param_value_invalid",
            ),
            (
                br#"{"email_address": "nope", "role": "org:member"}"#,
                "form_param_format_invalid",
            ),
            (
                br#"{"email_address": "a@x.com", "role": "org:member", "expires_in_days": 0}"#,
                "form_param_value_invalid",
            ),
            (br#"[]"#, "request_body_invalid"),
        ] {
            let error = parse_invitation(body).expect_err("invalid");
            assert_eq!(error.code, code, "{}", String::from_utf8_lossy(body));
        }
        let eleven = format!(
            "[{}]",
            [r#"{"email_address": "a@x.com", "role": "org:member"}"#; 11].join(",")
        );
        assert_eq!(
            parse_invitation_bulk(eleven.as_bytes())
                .expect_err("too many")
                .code,
            "bulk_size_exceeded"
        );
    }

    #[test]
    fn queries_take_repeated_filters_and_refuse_bad_values() {
        let q = parse_membership_query(Some(
            "role=org%3Aadmin&role=org%3Amember&user_id=u1&limit=500",
        ))
        .expect("valid");
        assert_eq!(q.roles, ["org:admin", "org:member"]);
        assert_eq!(q.limit, 500);
        let q = parse_org_invitation_query(Some(
            "status=pending&status=expired&order_by=email_address",
        ))
        .expect("valid");
        assert_eq!(q.statuses.len(), 2);
        assert!(!q.order_by.descending);
        for bad in ["limit=501", "status=gone", "order_by=name", "offset=-1"] {
            assert!(parse_org_invitation_query(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_organization_query(Some("include_members_count=maybe")).is_err());
        assert!(
            parse_organization_query(Some("include_members_count=true"))
                .expect("valid")
                .include_members_count
        );
    }
}
