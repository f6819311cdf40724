//! PATCH (RFC 7644 §3.5.2): `add`, `replace` and `remove`, with and without `path`, applied
//! to a copy of the stored attributes; the caller writes the result only when every
//! operation succeeded. Operation names are case-insensitive (Microsoft Entra ID sends
//! "Replace"), and a value filter naming no value yet in an `add` or `replace`
//! (`emails[type eq "work"].value`) creates the value it describes, as Entra expects.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{get_ci, item_matches, parse_path, pinned_values, PatchPath};
use super::resource::{base_mut, check, coerce, coerce_item, tidy, Attributes};
use super::schema::{schemas, Attribute, Mutability, Owner, ENTERPRISE, MAX_OPERATIONS, PATCH_OP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Replace,
    Remove,
}

/// One operation of a PatchOp body: what it does, its `path` (`None` when absent or null)
/// and its `value`.
pub(super) struct Operation<'a> {
    pub op: Op,
    pub path: Option<&'a str>,
    pub value: Option<&'a Value>,
}

/// Reads a PatchOp request body (its `schemas`, at most [`MAX_OPERATIONS`] `Operations`, each
/// an object with `op`, `path` and `value`) and hands each operation to `apply` in order; an
/// error, the body's or an operation's, names the operation it is in. Users and Groups share
/// it, each applying the operations to a copy of its own.
pub(super) fn for_each_operation<'a>(
    body: &'a Value,
    mut apply: impl FnMut(Operation<'a>) -> Result<(), ScimError>,
) -> Result<(), ScimError> {
    let Value::Object(fields) = body else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    if let Some(declared) = get_ci(fields, "schemas") {
        let lists = declared.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP)))
        });
        if !lists {
            return Err(ScimError::invalid_syntax(format!(
                "schemas must list {PATCH_OP}"
            )));
        }
    }
    let operations = match get_ci(fields, "Operations") {
        Some(Value::Array(operations)) if !operations.is_empty() => operations,
        _ => {
            return Err(ScimError::invalid_syntax(
                "Operations must be a non-empty array",
            ))
        }
    };
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::too_many(format!(
            "Operations: {} operations, more than {MAX_OPERATIONS} in one PATCH \
             (ServiceProviderConfig bulk.maxOperations)",
            operations.len()
        )));
    }
    for (index, operation) in operations.iter().enumerate() {
        let at = |e: ScimError| ScimError {
            detail: format!("Operations[{index}]: {}", e.detail),
            ..e
        };
        read_operation(operation).and_then(&mut apply).map_err(at)?;
    }
    Ok(())
}

fn read_operation(operation: &Value) -> Result<Operation<'_>, ScimError> {
    let Value::Object(fields) = operation else {
        return Err(ScimError::invalid_syntax("an operation must be an object"));
    };
    let op = match get_ci(fields, "op").and_then(Value::as_str) {
        Some(op) if op.eq_ignore_ascii_case("add") => Op::Add,
        Some(op) if op.eq_ignore_ascii_case("replace") => Op::Replace,
        Some(op) if op.eq_ignore_ascii_case("remove") => Op::Remove,
        _ => {
            return Err(ScimError::invalid_syntax(
                "op must be add, replace or remove",
            ))
        }
    };
    let value = get_ci(fields, "value");
    let path = match get_ci(fields, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) => Some(path.as_str()),
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    Ok(Operation { op, path, value })
}

/// Applies a PatchOp request body to `attributes`, or says what is wrong with it.
pub fn apply(attributes: &Attributes, body: &Value) -> Result<Attributes, ScimError> {
    let mut patched = attributes.clone();
    for_each_operation(body, |operation| operate(&mut patched, operation))?;
    tidy(&mut patched);
    check(&patched)?;
    Ok(patched)
}

fn operate(attributes: &mut Attributes, operation: Operation<'_>) -> Result<(), ScimError> {
    let Operation { op, path, value } = operation;
    match (path, op) {
        (Some(path), _) => at_path(attributes, op, &parse_path(path)?, value),
        (None, Op::Remove) => Err(ScimError::no_target("remove needs a path")),
        (None, _) => {
            let Some(Value::Object(values)) = value else {
                return Err(ScimError::invalid_value(
                    "without a path, value must be an object of attributes",
                ));
            };
            for (key, value) in values {
                if key.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                at_path(attributes, op, &parse_path(key)?, Some(value))?;
            }
            Ok(())
        }
    }
}

fn read_only(name: &str) -> ScimError {
    ScimError::mutability(format!("{name} is read-only"))
}

fn at_path(
    attributes: &mut Attributes,
    op: Op,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(name) = &path.attr else {
        return whole_extension(attributes, op, value);
    };
    if path.owner == Owner::Core && ["id", "meta"].iter().any(|k| k.eq_ignore_ascii_case(name)) {
        return Err(read_only(name));
    }
    let attribute = schemas()
        .attribute(path.owner, name)
        .ok_or_else(|| ScimError::invalid_path(format!("{name} is not an attribute of User")))?;
    let sub = match &path.sub {
        None => None,
        Some(sub) => Some(attribute.sub(sub).ok_or_else(|| {
            ScimError::invalid_path(format!("{} has no sub-attribute {sub}", attribute.name))
        })?),
    };
    if attribute.mutability == Mutability::ReadOnly
        || sub.is_some_and(|s| s.mutability == Mutability::ReadOnly)
    {
        return Err(read_only(&attribute.name));
    }
    if attribute.mutability == Mutability::WriteOnly {
        // A password is accepted and never kept.
        return Ok(());
    }
    if op != Op::Remove && value.is_none() {
        return Err(ScimError::invalid_value("value is missing"));
    }
    let value = value.unwrap_or(&Value::Null);
    let base = base_mut(attributes, path.owner);
    match (&path.filter, sub) {
        (None, None) => whole(base, op, attribute, value),
        (None, Some(sub)) => sub_attribute(base, op, attribute, sub, value),
        (Some(filter), sub) => {
            if !attribute.multi_valued || !attribute.is_complex() {
                return Err(ScimError::invalid_path(format!(
                    "{} is not a multi-valued complex attribute: it takes no value filter",
                    attribute.name
                )));
            }
            filtered(base, op, attribute, filter, sub, value)
        }
    }
}

fn whole_extension(
    attributes: &mut Attributes,
    op: Op,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == Op::Remove {
        attributes.remove(ENTERPRISE);
        return Ok(());
    }
    let Some(Value::Object(values)) = value else {
        return Err(ScimError::invalid_value(format!(
            "{ENTERPRISE}: value must be an object"
        )));
    };
    if op == Op::Replace {
        attributes.remove(ENTERPRISE);
    }
    for (name, value) in values {
        if name.eq_ignore_ascii_case("schemas") {
            continue;
        }
        let path = PatchPath {
            owner: Owner::Enterprise,
            attr: Some(name.clone()),
            filter: None,
            sub: None,
        };
        at_path(attributes, op, &path, Some(value))?;
    }
    Ok(())
}

fn whole(
    base: &mut Attributes,
    op: Op,
    attribute: &Attribute,
    value: &Value,
) -> Result<(), ScimError> {
    let name = attribute.name.clone();
    if op == Op::Remove {
        match (value, base.get_mut(&name)) {
            // Remove the listed values only.
            (Value::Array(_) | Value::Object(_), Some(Value::Array(items)))
                if attribute.multi_valued =>
            {
                let listed = coerce(attribute, value, &name)?.unwrap_or(Value::Array(Vec::new()));
                let listed: HashSet<String> = listed
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(value_key)
                    .collect();
                items.retain(|item| !listed.contains(&value_key(item)));
                if items.is_empty() {
                    base.remove(&name);
                }
            }
            _ => {
                base.remove(&name);
            }
        }
        return Ok(());
    }
    let Some(coerced) = coerce(attribute, value, &name)? else {
        if op == Op::Replace {
            base.remove(&name);
        }
        return Ok(());
    };
    match (op, coerced, base.get_mut(&name)) {
        (Op::Add, Value::Array(new), Some(Value::Array(items))) => {
            let mut present: HashSet<String> = items.iter().map(fingerprint).collect();
            for item in new {
                if item.get("primary") == Some(&Value::Bool(true)) {
                    for other in items.iter_mut() {
                        if let Some(fields) = other.as_object_mut() {
                            fields.remove("primary");
                        }
                    }
                }
                if present.insert(fingerprint(&item)) {
                    items.push(item);
                }
            }
        }
        // A complex attribute: the sub-attributes given replace or join the others.
        (_, Value::Object(new), Some(Value::Object(existing))) if !attribute.multi_valued => {
            existing.extend(new);
        }
        (_, coerced, _) => {
            base.insert(name, coerced);
        }
    }
    Ok(())
}

/// A value as a key that equal values share, whatever the order of their fields.
fn fingerprint(value: &Value) -> String {
    match value {
        Value::Object(fields) => {
            let mut entries: Vec<(&String, String)> = fields
                .iter()
                .map(|(key, value)| (key, fingerprint(value)))
                .collect();
            entries.sort();
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(key, value)| format!("{}:{value}", Value::String(key.clone())))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(fingerprint).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// What names an item in a `remove` listing values: its `value`, else the whole item.
/// A listed value and an item are the same when their keys are (as `value` with `value`,
/// or the whole item with the whole item).
fn value_key(item: &Value) -> String {
    match item.get("value") {
        Some(value) => format!("value {}", fingerprint(value)),
        None => format!("item {}", fingerprint(item)),
    }
}

fn sub_attribute(
    base: &mut Attributes,
    op: Op,
    attribute: &Attribute,
    sub: &Attribute,
    value: &Value,
) -> Result<(), ScimError> {
    let name = attribute.name.clone();
    let path = format!("{name}.{}", sub.name);
    let coerced = if op == Op::Remove || value.is_null() {
        None
    } else {
        Some(coerce_simple_sub(sub, value, &path)?)
    };
    let set = |item: &mut Map<String, Value>| match &coerced {
        Some(v) => {
            item.insert(sub.name.clone(), v.clone());
        }
        None => {
            item.remove(&sub.name);
        }
    };
    if attribute.multi_valued {
        let items = match base.get_mut(&name) {
            Some(Value::Array(items)) => items,
            _ if coerced.is_none() => return Ok(()),
            _ => {
                base.insert(name.clone(), Value::Array(vec![Value::Object(Map::new())]));
                match base.get_mut(&name) {
                    Some(Value::Array(items)) => items,
                    _ => unreachable!("just inserted an array"),
                }
            }
        };
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            set(item);
        }
        items.retain(|item| item.as_object().is_some_and(|f| !f.is_empty()));
        if items.is_empty() {
            base.remove(&name);
        }
        return Ok(());
    }
    let entry = base
        .entry(name.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(fields) = entry.as_object_mut() {
        set(fields);
        if fields.is_empty() {
            base.remove(&name);
        }
    }
    Ok(())
}

fn coerce_simple_sub(sub: &Attribute, value: &Value, path: &str) -> Result<Value, ScimError> {
    coerce_item(sub, value, path)?
        .ok_or_else(|| ScimError::invalid_value(format!("{path}: value is missing")))
}

fn filtered(
    base: &mut Attributes,
    op: Op,
    attribute: &Attribute,
    filter: &super::filter::Filter,
    sub: Option<&Attribute>,
    value: &Value,
) -> Result<(), ScimError> {
    let name = attribute.name.clone();
    let mut items = match base.remove(&name) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| {
            item.as_object()
                .is_some_and(|fields| item_matches(filter, &name, fields))
        })
        .map(|(index, _)| index)
        .collect();
    // The patched copy is dropped on any error, so nothing needs putting back here.
    let touched: Vec<usize> = match op {
        Op::Remove => {
            for &index in matched.iter().rev() {
                match sub {
                    Some(sub) => {
                        if let Some(fields) = items[index].as_object_mut() {
                            fields.remove(&sub.name);
                        }
                    }
                    None => {
                        items.remove(index);
                    }
                }
            }
            Vec::new()
        }
        _ if matched.is_empty() => {
            let pinned = pinned_values(filter).ok_or_else(|| {
                ScimError::no_target(format!("no value of {name} matches the filter"))
            })?;
            let mut item = Map::new();
            for (key, pinned_value) in pinned {
                let sub_attribute = attribute.sub(&key).ok_or_else(|| {
                    ScimError::invalid_path(format!("{name} has no sub-attribute {key}"))
                })?;
                let coerced =
                    coerce_simple_sub(sub_attribute, &pinned_value, &format!("{name}.{key}"))?;
                item.insert(sub_attribute.name.clone(), coerced);
            }
            set_item(&mut item, attribute, sub, op, value)?;
            items.push(Value::Object(item));
            vec![items.len() - 1]
        }
        _ => {
            for &index in &matched {
                if let Some(fields) = items[index].as_object_mut() {
                    set_item(fields, attribute, sub, op, value)?;
                }
            }
            matched
        }
    };
    // One primary value at most (RFC 7643 §2.4): the one just made primary wins.
    let primary = |item: &Value| item.get("primary") == Some(&Value::Bool(true));
    if touched.iter().any(|&index| primary(&items[index])) {
        let touched: HashSet<usize> = touched.into_iter().collect();
        for (index, item) in items.iter_mut().enumerate() {
            if !touched.contains(&index) {
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("primary");
                }
            }
        }
    }
    items.retain(|item| item.as_object().is_some_and(|f| !f.is_empty()));
    if !items.is_empty() {
        base.insert(name, Value::Array(items));
    }
    Ok(())
}

/// Writes `value` into one matched item: its sub-attribute, or the whole item
/// (`replace` swaps it, `add` merges into it).
fn set_item(
    item: &mut Map<String, Value>,
    attribute: &Attribute,
    sub: Option<&Attribute>,
    op: Op,
    value: &Value,
) -> Result<(), ScimError> {
    match sub {
        Some(sub) => {
            if value.is_null() {
                item.remove(&sub.name);
            } else {
                let path = format!("{}.{}", attribute.name, sub.name);
                item.insert(sub.name.clone(), coerce_simple_sub(sub, value, &path)?);
            }
        }
        None => {
            let Some(Value::Object(new)) = coerce_item(attribute, value, &attribute.name)? else {
                return Err(ScimError::invalid_value(format!(
                    "{}: value must be an object",
                    attribute.name
                )));
            };
            if op == Op::Replace {
                item.clear();
            }
            item.extend(new);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(value: Value) -> Attributes {
        match value {
            Value::Object(fields) => fields,
            _ => unreachable!(),
        }
    }

    fn patch(attributes: &Attributes, operations: Value) -> Result<Value, ScimError> {
        apply(
            attributes,
            &json!({"schemas": [PATCH_OP], "Operations": operations}),
        )
        .map(Value::Object)
    }

    #[test]
    fn entra_sends_capitalised_operations_and_booleans_as_strings() {
        let ann = user(json!({"userName": "ann@example.com", "active": true}));
        let patched = patch(
            &ann,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .unwrap();
        assert_eq!(patched["active"], json!(false));
        let patched = patch(
            &ann,
            json!([{"op": "replace", "value": {"active": "True"}}]),
        )
        .unwrap();
        assert_eq!(patched["active"], json!(true));
    }

    #[test]
    fn a_filtered_path_naming_no_value_yet_creates_it_and_then_changes_it() {
        let ann = user(json!({"userName": "ann"}));
        let patched = patch(
            &ann,
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ann@example.com"}]),
        )
        .unwrap();
        assert_eq!(
            patched["emails"],
            json!([{"type": "work", "value": "ann@example.com"}])
        );
        let again = patch(
            &user(patched.clone()),
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ann@corp.example"}]),
        )
        .unwrap();
        assert_eq!(
            again["emails"],
            json!([{"type": "work", "value": "ann@corp.example"}])
        );
    }

    #[test]
    fn paths_without_filters_and_without_path_add_replace_and_remove() {
        let ann = user(
            json!({"userName": "ann", "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "a@x.com", "primary": true}]}),
        );
        let patched = patch(
            &ann,
            json!([
                {"op": "add", "value": {"name.middleName": "J", "displayName": "Ann Lee",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops"}},
                {"op": "replace", "path": "name", "value": {"givenName": "Annie"}},
                {"op": "add", "path": "emails", "value": [{"value": "b@x.com", "primary": true}]},
                {"op": "remove", "path": "name.familyName"}
            ]),
        )
        .unwrap();
        assert_eq!(
            patched["name"],
            json!({"givenName": "Annie", "middleName": "J"})
        );
        assert_eq!(patched["displayName"], json!("Ann Lee"));
        assert_eq!(patched[ENTERPRISE]["department"], json!("Ops"));
        assert_eq!(
            patched["emails"],
            json!([{"value": "a@x.com"}, {"value": "b@x.com", "primary": true}])
        );
        let removed = patch(
            &user(patched.clone()),
            json!([{"op": "remove", "path": "emails[value eq \"a@x.com\"]"},
                   {"op": "remove", "path": ENTERPRISE}]),
        )
        .unwrap();
        assert_eq!(
            removed["emails"],
            json!([{"value": "b@x.com", "primary": true}])
        );
        assert!(removed.get(ENTERPRISE).is_none());
    }

    #[test]
    fn refusals_name_their_scim_type() {
        let ann = user(json!({"userName": "ann"}));
        for (operations, kind) in [
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "replace", "path": "id", "value": "x"}]),
                "mutability",
            ),
            (
                json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
                "mutability",
            ),
            (
                json!([{"op": "add", "path": "favouriteColour", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "add", "path": "emails[type is \"work\"].value", "value": "x"}]),
                "invalidFilter",
            ),
            (
                json!([{"op": "add", "path": "emails[type eq", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "path": "active", "value": "nope"}]),
                "invalidValue",
            ),
            (
                json!([{"op": "remove", "path": "userName"}]),
                "invalidValue",
            ),
            (json!([{"op": "move", "path": "userName"}]), "invalidSyntax"),
            (json!([]), "invalidSyntax"),
            (
                json!([{"op": "replace", "path": "emails[value co \"x\"].value", "value": "y"}]),
                "noTarget",
            ),
        ] {
            let error = patch(&ann, operations.clone()).expect_err(&operations.to_string());
            assert_eq!(error.scim_type, Some(kind), "{operations}: {error}");
            assert_eq!(error.status, 400);
        }
    }

    #[test]
    fn making_a_value_primary_through_a_filter_clears_the_other_primary() {
        let ann = user(json!({"userName": "ann", "emails": [
            {"value": "home@x.com", "type": "home", "primary": true},
            {"value": "work@x.com", "type": "work"}]}));
        let patched = patch(
            &ann,
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].primary", "value": "True"}]),
        )
        .unwrap();
        assert_eq!(
            patched["emails"],
            json!([{"value": "home@x.com", "type": "home"},
                   {"value": "work@x.com", "type": "work", "primary": true}])
        );
    }

    #[test]
    fn a_password_is_accepted_and_never_kept() {
        let ann = user(json!({"userName": "ann"}));
        let patched = patch(
            &ann,
            json!([{"op": "add", "path": "password", "value": "hunter2"}]),
        )
        .unwrap();
        assert!(patched.get("password").is_none());
    }
}
