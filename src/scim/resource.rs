//! A User as stored and as served. Stored: the attributes a client may write, under their
//! schema's names (core at the top, the enterprise extension under its URN), without `id`,
//! `meta`, read-only or write-only attributes (a password is never kept). Served: that plus
//! `schemas`, `id` and `meta`, cut to `attributes` / `excludedAttributes` when asked.

use serde_json::{json, Map, Value};

use super::error::{quoted, ScimError};
use super::filter::{get_ci, parse_path, split_urn};
use super::schema::{
    is_attribute_name, schemas, Attribute, Mutability, Owner, Returned, Type, ENTERPRISE,
    MAX_STRING_CHARS, MAX_USER_BYTES, MAX_USER_NAME_CHARS, MAX_VALUES, USER,
};

/// The attributes of a stored User.
pub type Attributes = Map<String, Value>;

/// One value of a simple attribute, checked against its type. Booleans may come as the
/// strings "true" / "false" in any case (Microsoft Entra ID sends "False").
fn coerce_simple(attribute: &Attribute, value: &Value, path: &str) -> Result<Value, ScimError> {
    let wrong = |what: &str| ScimError::invalid_value(format!("{path}: must be {what}"));
    match attribute.kind {
        Type::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        Type::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            _ => Err(wrong("an integer")),
        },
        Type::Decimal => match value {
            Value::Number(_) => Ok(value.clone()),
            _ => Err(wrong("a number")),
        },
        Type::String | Type::Reference | Type::DateTime | Type::Binary => match value {
            Value::String(text) => {
                check_text(text, path)?;
                Ok(value.clone())
            }
            _ => Err(wrong("a string")),
        },
        Type::Complex => Err(wrong("a simple value")),
    }
}

/// A string value PostgreSQL can store and an index can hold: no NUL character (text and
/// jsonb refuse one), at most [`MAX_STRING_CHARS`] characters.
pub fn check_text(text: &str, path: &str) -> Result<(), ScimError> {
    if text.contains('\0') {
        return Err(ScimError::invalid_value(format!(
            "{path}: must not contain a NUL character"
        )));
    }
    if text.chars().nth(MAX_STRING_CHARS).is_some() {
        return Err(ScimError::invalid_value(format!(
            "{path}: longer than {MAX_STRING_CHARS} characters"
        )));
    }
    Ok(())
}

/// One value of an attribute (an item, for a multi-valued one). `None`: unassigned.
pub fn coerce_item(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if !attribute.is_complex() {
        return coerce_simple(attribute, value, path).map(Some);
    }
    let Value::Object(fields) = value else {
        return Err(ScimError::invalid_value(format!(
            "{path}: must be an object"
        )));
    };
    let mut out = Map::new();
    for (name, value) in fields {
        // Unknown sub-attributes are ignored, as RFC 7644 §3.3 lets a provider do.
        let Some(sub) = attribute.sub(name) else {
            continue;
        };
        if sub.mutability == Mutability::ReadOnly || value.is_null() {
            continue;
        }
        let value = coerce_simple(sub, value, &format!("{path}.{}", sub.name))?;
        out.insert(sub.name.clone(), value);
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// A whole attribute's value. `None`: unassigned (null, an empty list or object).
pub fn coerce(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if !attribute.multi_valued {
        return coerce_item(attribute, value, path);
    }
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    if items.len() > MAX_VALUES {
        return Err(too_many_values(path));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(item) = coerce_item(attribute, item, path)? {
            out.push(item);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

fn too_many_values(path: &str) -> ScimError {
    ScimError::invalid_value(format!("{path}: more than {MAX_VALUES} values"))
}

/// The object holding `owner`'s attributes, created when missing.
pub fn base_mut(attributes: &mut Attributes, owner: Owner) -> &mut Attributes {
    match owner {
        Owner::Core => attributes,
        Owner::Enterprise => {
            let entry = attributes
                .entry(ENTERPRISE.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            match entry {
                Value::Object(fields) => fields,
                _ => unreachable!("just made an object"),
            }
        }
    }
}

/// The object holding `owner`'s attributes, if any.
pub fn base(attributes: &Attributes, owner: Owner) -> Option<&Attributes> {
    match owner {
        Owner::Core => Some(attributes),
        Owner::Enterprise => get_ci(attributes, ENTERPRISE).and_then(Value::as_object),
    }
}

/// Drops an empty extension object.
pub fn tidy(attributes: &mut Attributes) {
    if attributes
        .get(ENTERPRISE)
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        attributes.remove(ENTERPRISE);
    }
}

/// The attributes of a POST or PUT body, checked. Read-only attributes (`id`, `meta`,
/// `groups`) are ignored, as are attributes no served schema defines; `password` is
/// accepted and dropped.
pub fn from_request(body: &Value) -> Result<Attributes, ScimError> {
    let Value::Object(fields) = body else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    if let Some(declared) = get_ci(fields, "schemas") {
        let lists_user = declared.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(USER)))
        });
        if !lists_user {
            return Err(ScimError::invalid_value(format!(
                "schemas must list {USER}"
            )));
        }
    }
    let mut out = Map::new();
    for (key, value) in fields {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
        {
            continue;
        }
        let Ok((owner, rest)) = split_urn(key) else {
            // An extension this server does not serve (RFC 7644 §3.3 lets it be ignored).
            if !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(not_a_name(key));
            }
            continue;
        };
        if rest.is_empty() {
            // The extension's object.
            let Value::Object(extension) = value else {
                if value.is_null() {
                    continue;
                }
                return Err(ScimError::invalid_value(format!(
                    "{key}: must be an object"
                )));
            };
            for (name, value) in extension {
                if !is_attribute_name(name) {
                    return Err(not_a_name(name));
                }
                set_from_request(&mut out, owner, name, value)?;
            }
            continue;
        }
        if !rest.split('.').all(is_attribute_name) {
            return Err(not_a_name(key));
        }
        set_from_request(&mut out, owner, rest, value)?;
    }
    tidy(&mut out);
    check(&out)?;
    Ok(out)
}

/// A body's key that cannot name any attribute. Unknown but well-formed names are ignored.
fn not_a_name(key: &str) -> ScimError {
    ScimError::invalid_syntax(format!(
        "{} is not an attribute name (RFC 7643 §2.1: a letter, then letters, digits, - or _)",
        quoted(key)
    ))
}

fn set_from_request(
    out: &mut Attributes,
    owner: Owner,
    name: &str,
    value: &Value,
) -> Result<(), ScimError> {
    let Some(attribute) = schemas().attribute(owner, name) else {
        return Ok(());
    };
    if matches!(
        attribute.mutability,
        Mutability::ReadOnly | Mutability::WriteOnly
    ) {
        return Ok(());
    }
    if let Some(value) = coerce(attribute, value, &attribute.name)? {
        base_mut(out, owner).insert(attribute.name.clone(), value);
    }
    Ok(())
}

/// The rules a stored User keeps: a non-empty `userName`; `userName` and `externalId` of at
/// most [`MAX_USER_NAME_CHARS`]; at most [`MAX_VALUES`] values and one primary value in a
/// multi-valued attribute; at most [`MAX_USER_BYTES`] in all.
pub fn check(attributes: &Attributes) -> Result<(), ScimError> {
    match attributes.get("userName") {
        Some(Value::String(name)) if !name.trim().is_empty() => {}
        _ => return Err(ScimError::invalid_value("userName is required")),
    }
    for name in ["userName", "externalId"] {
        if let Some(Value::String(text)) = attributes.get(name) {
            if text.chars().nth(MAX_USER_NAME_CHARS).is_some() {
                return Err(ScimError::invalid_value(format!(
                    "{name}: longer than {MAX_USER_NAME_CHARS} characters"
                )));
            }
        }
    }
    for (name, value) in attributes {
        if let Value::Array(items) = value {
            if items.len() > MAX_VALUES {
                return Err(too_many_values(name));
            }
            let primaries = items
                .iter()
                .filter(|item| item.get("primary") == Some(&Value::Bool(true)))
                .count();
            if primaries > 1 {
                return Err(ScimError::invalid_value(format!(
                    "{name}: more than one value is primary"
                )));
            }
        }
    }
    let size = serde_json::to_vec(attributes).map_or(usize::MAX, |json| json.len());
    if size > MAX_USER_BYTES {
        return Err(ScimError::invalid_value(format!(
            "the user's attributes take {size} bytes as JSON, more than {MAX_USER_BYTES}"
        )));
    }
    Ok(())
}

/// What `meta` says about a stored User.
#[derive(Debug, Clone)]
pub struct Meta {
    pub created: chrono::DateTime<chrono::Utc>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    pub version: i64,
    pub location: String,
}

/// The User as served.
pub fn render(id: &str, attributes: &Attributes, meta: &Meta) -> Map<String, Value> {
    let mut schemas = vec![Value::String(USER.to_owned())];
    if attributes.contains_key(ENTERPRISE) {
        schemas.push(Value::String(ENTERPRISE.to_owned()));
    }
    let mut out = Map::new();
    out.insert("schemas".to_owned(), Value::Array(schemas));
    out.insert("id".to_owned(), Value::String(id.to_owned()));
    for (name, value) in attributes {
        out.insert(name.clone(), value.clone());
    }
    out.insert(
        "meta".to_owned(),
        json!({
            "resourceType": "User",
            "created": meta.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": meta.location,
            "version": format!("W/\"{}\"", meta.version),
        }),
    );
    out
}

/// A served User cut to `attributes` (plus those always returned), or without
/// `excluded` (RFC 7644 §3.4.2.5). Unknown names are ignored.
pub fn project(
    resource: Map<String, Value>,
    attributes: &[String],
    excluded: &[String],
) -> Map<String, Value> {
    if !attributes.is_empty() {
        let mut out = Map::new();
        for name in ["schemas", "id"] {
            if let Some(value) = resource.get(name) {
                out.insert(name.to_owned(), value.clone());
            }
        }
        for requested in attributes {
            copy_path(&resource, &mut out, requested);
        }
        return out;
    }
    let mut out = resource;
    for name in excluded {
        remove_path(&mut out, name);
    }
    out
}

/// Whether an attribute is returned even when not asked for (`id`, `schemas` are handled
/// by the caller).
fn always(attribute: &Attribute) -> bool {
    attribute.returned == Returned::Always
}

fn copy_path(from: &Map<String, Value>, to: &mut Map<String, Value>, requested: &str) {
    if requested.eq_ignore_ascii_case("meta") {
        if let Some(meta) = from.get("meta") {
            to.insert("meta".to_owned(), meta.clone());
        }
        return;
    }
    let Ok(path) = parse_path(requested) else {
        return;
    };
    let Some(source) = base(from, path.owner) else {
        return;
    };
    let Some(name) = &path.attr else {
        if let Some(extension) = from.get(ENTERPRISE) {
            to.insert(ENTERPRISE.to_owned(), extension.clone());
        }
        return;
    };
    let Some((key, value)) = source
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
    else {
        return;
    };
    let value = match &path.sub {
        None => value.clone(),
        Some(sub) => {
            let keep = |item: &Value| -> Option<Value> {
                let fields = item.as_object()?;
                let (k, v) = fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(sub))?;
                let mut kept = Map::new();
                kept.insert(k.clone(), v.clone());
                Some(Value::Object(kept))
            };
            match value {
                Value::Array(items) => Value::Array(items.iter().filter_map(keep).collect()),
                other => match keep(other) {
                    Some(kept) => kept,
                    None => return,
                },
            }
        }
    };
    let target = match path.owner {
        Owner::Core => to,
        Owner::Enterprise => {
            let entry = to
                .entry(ENTERPRISE.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry.as_object_mut() {
                Some(fields) => fields,
                None => return,
            }
        }
    };
    match (target.get_mut(key), value) {
        (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
        (_, value) => {
            target.insert(key.clone(), value);
        }
    }
}

fn remove_path(resource: &mut Map<String, Value>, excluded: &str) {
    let Ok(path) = parse_path(excluded) else {
        return;
    };
    let Some(name) = &path.attr else {
        resource.remove(ENTERPRISE);
        return;
    };
    if path.owner == Owner::Core
        && ["id", "schemas"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(name))
    {
        return;
    }
    if let Some(attribute) = schemas().attribute(path.owner, name) {
        if always(attribute) {
            return;
        }
    }
    let target = match path.owner {
        Owner::Core => Some(&mut *resource),
        Owner::Enterprise => resource.get_mut(ENTERPRISE).and_then(Value::as_object_mut),
    };
    let Some(target) = target else {
        return;
    };
    let Some(key) = target
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))
        .cloned()
    else {
        return;
    };
    match &path.sub {
        None => {
            target.remove(&key);
        }
        Some(sub) => {
            let strip = |item: &mut Value| {
                if let Some(fields) = item.as_object_mut() {
                    fields.retain(|k, _| !k.eq_ignore_ascii_case(sub));
                }
            };
            match target.get_mut(&key) {
                Some(Value::Array(items)) => items.iter_mut().for_each(strip),
                Some(other) => strip(other),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_schema_names_drops_read_only_write_only_and_unknown_attributes() {
        let attributes = from_request(&json!({
            "schemas": [USER, ENTERPRISE],
            "id": "client-chosen",
            "USERNAME": "ann@example.com",
            "password": "hunter2",
            "groups": [{"value": "g"}],
            "favouriteColour": "green",
            "active": "False",
            "name": {"givenname": "Ann", "nickname": 3},
            ENTERPRISE: {"department": "Ops", "manager": {"value": "m", "displayName": "Boss"}}
        }))
        .unwrap();
        assert_eq!(
            Value::Object(attributes),
            json!({
                "userName": "ann@example.com",
                "active": false,
                "name": {"givenName": "Ann"},
                ENTERPRISE: {"department": "Ops", "manager": {"value": "m"}}
            })
        );
    }

    #[test]
    fn a_request_with_a_wrong_type_or_no_user_name_is_invalid_value() {
        for body in [
            json!({"schemas": [USER], "name": {"givenName": "x"}}),
            json!({"schemas": [USER], "userName": ""}),
            json!({"schemas": [USER], "userName": "a", "active": "maybe"}),
            json!({"schemas": [USER], "userName": "a", "emails": [{"value": 1}]}),
            json!({"schemas": ["urn:other"], "userName": "a"}),
            json!({"schemas": [USER], "userName": "a", "emails": [
                {"value": "a@x.com", "primary": true}, {"value": "b@x.com", "primary": true}]}),
        ] {
            let error = from_request(&body).expect_err(&body.to_string());
            assert_eq!(error.scim_type, Some("invalidValue"), "{body}");
        }
    }

    #[test]
    fn projection_keeps_id_and_schemas_and_honours_both_parameters() {
        let resource = render(
            "abc",
            &from_request(
                &json!({"userName": "a@x.com", "displayName": "A", "title": "T",
                ENTERPRISE: {"department": "D", "costCenter": "C"}}),
            )
            .unwrap(),
            &Meta {
                created: chrono::Utc::now(),
                last_modified: chrono::Utc::now(),
                version: 1,
                location: "http://h/scim/v2/Users/abc".to_owned(),
            },
        );
        let only = project(
            resource.clone(),
            &["displayName".to_owned(), format!("{ENTERPRISE}:department")],
            &[],
        );
        assert_eq!(
            Value::Object(only),
            json!({"schemas": [USER, ENTERPRISE], "id": "abc", "displayName": "A",
                   ENTERPRISE: {"department": "D"}})
        );
        let without = project(resource, &[], &["title".to_owned(), "id".to_owned()]);
        assert!(without.contains_key("id") && without.contains_key("displayName"));
        assert!(!without.contains_key("title"));
    }
}
