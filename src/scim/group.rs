//! A Group (RFC 7643 §4.2) as invite-sync keeps it: a `displayName` (required, unique
//! case-insensitively), an optional `externalId`, and `members`, each a SCIM user's id with
//! an optional `display`. Parsed from POST and PUT bodies, changed by PATCH (RFC 7644 §3.5.2,
//! with the identity providers' habits: Okta's `members[value eq "…"]` removals and
//! `replace` without a path naming the group's `id`, Microsoft Entra ID's capitalised
//! operations and removals by a list of values), and rendered. Pure: whether each member is
//! a SCIM user is the caller's to check.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::{quoted, ScimError};
use super::filter::{get_ci, item_matches, parse_path, PatchPath};
use super::patch::{for_each_operation, Op, Operation};
use super::resource::{check_text, Meta};
use super::schema::{Owner, GROUP, MAX_GROUP_MEMBERS, MAX_GROUP_NAME_CHARS, MAX_VALUES};

/// One member: a SCIM user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub value: Uuid,
    pub display: Option<String>,
}

/// A group's attributes as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub display_name: String,
    pub external_id: Option<String>,
    /// No two with one `value`, in the order they were added.
    pub members: Vec<Member>,
}

/// The refusal of a member value that names no SCIM user.
pub fn unknown_member(value: &str) -> ScimError {
    ScimError::invalid_value(format!(
        "members: {} is not the id of a SCIM user (a group's members are users provisioned \
         through /Users)",
        quoted(value)
    ))
}

/// The attribute a key or path names, without the Group schema's URN prefix.
fn strip_group_urn(path: &str) -> &str {
    path.get(..GROUP.len())
        .filter(|head| head.eq_ignore_ascii_case(GROUP))
        .and_then(|_| path.get(GROUP.len()..))
        .map_or(path, |rest| rest.strip_prefix(':').unwrap_or(rest))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    DisplayName,
    ExternalId,
    Members,
}

/// A Group attribute by name (case-insensitively); `Err` for `id` and `meta`, which are
/// read-only, `Ok(None)` for a name the schema does not define.
fn attr(name: &str) -> Result<Option<Attr>, ScimError> {
    let name = strip_group_urn(name);
    if ["id", "meta"].iter().any(|k| k.eq_ignore_ascii_case(name)) {
        return Err(ScimError::mutability(format!("{name} is read-only")));
    }
    Ok([
        ("displayName", Attr::DisplayName),
        ("externalId", Attr::ExternalId),
        ("members", Attr::Members),
    ]
    .into_iter()
    .find(|(known, _)| known.eq_ignore_ascii_case(name))
    .map(|(_, attr)| attr))
}

fn display_name(value: &Value) -> Result<String, ScimError> {
    let Value::String(text) = value else {
        return Err(ScimError::invalid_value("displayName: must be a string"));
    };
    if text.trim().is_empty() {
        return Err(ScimError::invalid_value("displayName is required"));
    }
    check_text(text, "displayName")?;
    if text.chars().nth(MAX_GROUP_NAME_CHARS).is_some() {
        return Err(ScimError::invalid_value(format!(
            "displayName: longer than {MAX_GROUP_NAME_CHARS} characters"
        )));
    }
    Ok(text.clone())
}

fn external_id(value: &Value) -> Result<Option<String>, ScimError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => {
            check_text(text, "externalId")?;
            if text.chars().nth(MAX_GROUP_NAME_CHARS).is_some() {
                return Err(ScimError::invalid_value(format!(
                    "externalId: longer than {MAX_GROUP_NAME_CHARS} characters"
                )));
            }
            Ok(Some(text.clone()))
        }
        _ => Err(ScimError::invalid_value("externalId: must be a string")),
    }
}

/// One member item: `value` a user's id; `display` kept; `$ref` and `type` are derived.
fn member(item: &Value) -> Result<Member, ScimError> {
    let Value::Object(fields) = item else {
        return Err(ScimError::invalid_value(
            "members: each member must be an object with a value",
        ));
    };
    let value = match get_ci(fields, "value") {
        Some(Value::String(value)) => value,
        Some(_) => return Err(ScimError::invalid_value("members.value: must be a string")),
        None => return Err(ScimError::invalid_value("members: a member has no value")),
    };
    if let Some(Value::String(kind)) = get_ci(fields, "type") {
        if !kind.eq_ignore_ascii_case("User") {
            return Err(ScimError::invalid_value(format!(
                "members: {} is of type {}; a group's members are users",
                quoted(value),
                quoted(kind)
            )));
        }
    }
    let id = Uuid::parse_str(value.trim()).map_err(|_| unknown_member(value))?;
    let display = match get_ci(fields, "display") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            check_text(text, "members.display")?;
            Some(text.clone())
        }
        Some(_) => {
            return Err(ScimError::invalid_value(
                "members.display: must be a string",
            ))
        }
    };
    Ok(Member { value: id, display })
}

/// A member list as a request writes it (a single object counts as a list of one), at most
/// [`MAX_VALUES`] members, each once.
fn member_list(value: &Value) -> Result<Vec<Member>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    if items.len() > MAX_VALUES {
        return Err(ScimError::invalid_value(format!(
            "members: more than {MAX_VALUES} values in one request (send a larger group in \
             several PATCH requests)"
        )));
    }
    let mut members: Vec<Member> = Vec::with_capacity(items.len());
    for item in items {
        merge(&mut members, member(item)?);
    }
    Ok(members)
}

/// Adds a member, or gives one already there the display sent.
fn merge(members: &mut Vec<Member>, new: Member) {
    match members.iter_mut().find(|m| m.value == new.value) {
        Some(existing) => {
            if new.display.is_some() {
                existing.display = new.display;
            }
        }
        None => members.push(new),
    }
}

/// The attributes of a POST or PUT body, checked. `id`, `meta` and attributes the Group
/// schema does not define are ignored.
pub fn from_request(body: &Value) -> Result<Group, ScimError> {
    let Value::Object(fields) = body else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    if let Some(declared) = get_ci(fields, "schemas") {
        let lists_group = declared.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(GROUP)))
        });
        if !lists_group {
            return Err(ScimError::invalid_value(format!(
                "schemas must list {GROUP}"
            )));
        }
    }
    let mut group = Group {
        display_name: String::new(),
        external_id: None,
        members: Vec::new(),
    };
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        match attr(key) {
            Err(_) | Ok(None) => continue,
            Ok(Some(Attr::DisplayName)) => group.display_name = display_name(value)?,
            Ok(Some(Attr::ExternalId)) => group.external_id = external_id(value)?,
            Ok(Some(Attr::Members)) => group.members = member_list(value)?,
        }
    }
    if group.display_name.is_empty() {
        return Err(ScimError::invalid_value("displayName is required"));
    }
    Ok(group)
}

/// Applies a PatchOp request body to `group`, or says what is wrong with it; nothing is
/// changed unless every operation succeeds.
pub fn patch(group: &Group, body: &Value) -> Result<Group, ScimError> {
    let mut patched = group.clone();
    for_each_operation(body, |operation| operate(&mut patched, operation))?;
    if patched.members.len() > MAX_GROUP_MEMBERS {
        return Err(ScimError::invalid_value(format!(
            "members: the group would have {} members, more than {MAX_GROUP_MEMBERS}",
            patched.members.len()
        )));
    }
    Ok(patched)
}

fn operate(group: &mut Group, operation: Operation<'_>) -> Result<(), ScimError> {
    let Operation { op, path, value } = operation;
    // A blank path is no path.
    let path = path.filter(|path| !path.trim().is_empty());
    match (path, op) {
        (Some(path), _) => at_path(group, op, &group_path(path)?, value),
        (None, Op::Remove) => Err(ScimError::no_target("remove needs a path")),
        (None, _) => {
            let Some(Value::Object(values)) = value else {
                return Err(ScimError::invalid_value(
                    "without a path, value must be an object of attributes",
                ));
            };
            for (key, value) in values {
                // Okta names the group's own id (and some clients `schemas`, `meta`) beside
                // what changes: read-only attributes are left as they are.
                if ["schemas", "id", "meta"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(strip_group_urn(key)))
                {
                    continue;
                }
                at_path(group, op, &group_path(key)?, Some(value))?;
            }
            Ok(())
        }
    }
}

/// A PATCH path of the Group schema (its URN prefix optional).
fn group_path(text: &str) -> Result<PatchPath, ScimError> {
    let rest = strip_group_urn(text.trim());
    let path = parse_path(rest)?;
    if path.owner != Owner::Core || path.attr.is_none() {
        return Err(ScimError::invalid_path(format!(
            "{} is not an attribute of Group",
            quoted(text)
        )));
    }
    Ok(path)
}

fn at_path(
    group: &mut Group,
    op: Op,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = path.attr.as_deref().unwrap_or_default();
    let Some(attribute) = attr(name)? else {
        return Err(ScimError::invalid_path(format!(
            "{} is not an attribute of Group (displayName, externalId, members)",
            quoted(name)
        )));
    };
    if op != Op::Remove && value.is_none() {
        return Err(ScimError::invalid_value("value is missing"));
    }
    let value = value.unwrap_or(&Value::Null);
    if attribute != Attr::Members && (path.filter.is_some() || path.sub.is_some()) {
        return Err(ScimError::invalid_path(format!(
            "{} has no sub-attributes and takes no value filter",
            quoted(name)
        )));
    }
    match attribute {
        Attr::DisplayName => match op {
            Op::Remove => Err(ScimError::invalid_value("displayName is required")),
            _ => {
                group.display_name = display_name(value)?;
                Ok(())
            }
        },
        Attr::ExternalId => {
            group.external_id = match op {
                Op::Remove => None,
                _ => external_id(value)?,
            };
            Ok(())
        }
        Attr::Members => members(group, op, path, value),
    }
}

/// A member as a value filter sees it.
fn member_item(member: &Member) -> Map<String, Value> {
    let mut item = Map::new();
    item.insert("value".to_owned(), Value::String(member.value.to_string()));
    item.insert("type".to_owned(), Value::String("User".to_owned()));
    if let Some(display) = &member.display {
        item.insert("display".to_owned(), Value::String(display.clone()));
    }
    item
}

fn members(group: &mut Group, op: Op, path: &PatchPath, value: &Value) -> Result<(), ScimError> {
    let sub = match path.sub.as_deref() {
        None => None,
        Some(sub) if sub.eq_ignore_ascii_case("display") => Some(()),
        Some(sub)
            if ["value", "$ref", "type"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(sub)) =>
        {
            return Err(ScimError::mutability(format!(
                "members.{sub} is immutable: add or remove the member instead"
            )))
        }
        Some(sub) => {
            return Err(ScimError::invalid_path(format!(
                "members has no sub-attribute {}",
                quoted(sub)
            )))
        }
    };
    let matched: Vec<usize> = match &path.filter {
        None => (0..group.members.len()).collect(),
        Some(filter) => group
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| item_matches(filter, "members", &member_item(m)))
            .map(|(at, _)| at)
            .collect(),
    };
    if let Some(()) = sub {
        // members[…].display, or every member's display.
        let display = match (op, value) {
            (Op::Remove, _) | (_, Value::Null) => None,
            (_, Value::String(text)) => {
                check_text(text, "members.display")?;
                Some(text.clone())
            }
            _ => {
                return Err(ScimError::invalid_value(
                    "members.display: must be a string",
                ))
            }
        };
        if matched.is_empty() && op != Op::Remove && path.filter.is_some() {
            return Err(ScimError::no_target("no member matches the filter"));
        }
        for at in matched {
            group.members[at].display = display.clone();
        }
        return Ok(());
    }
    if path.filter.is_some() {
        return match op {
            Op::Remove => {
                let drop: std::collections::HashSet<usize> = matched.into_iter().collect();
                let mut at = 0;
                group.members.retain(|_| {
                    let keep = !drop.contains(&at);
                    at += 1;
                    keep
                });
                Ok(())
            }
            _ => {
                // A matched member's display from the value given; its value is immutable.
                if matched.is_empty() {
                    return Err(ScimError::no_target("no member matches the filter"));
                }
                let new = member(value)?;
                for at in matched {
                    if group.members[at].value != new.value {
                        return Err(ScimError::mutability(
                            "members.value is immutable: add or remove the member instead",
                        ));
                    }
                    group.members[at].display = new.display.clone();
                }
                Ok(())
            }
        };
    }
    match op {
        Op::Add => {
            for new in member_list(value)? {
                merge(&mut group.members, new);
            }
        }
        Op::Replace => group.members = member_list(value)?,
        Op::Remove => match value {
            Value::Null => group.members.clear(),
            Value::Array(items) if items.is_empty() => group.members.clear(),
            // Microsoft Entra ID removes members by listing their values.
            listed => {
                let listed: HashMap<Uuid, ()> = member_list(listed)?
                    .into_iter()
                    .map(|m| (m.value, ()))
                    .collect();
                group.members.retain(|m| !listed.contains_key(&m.value));
            }
        },
    }
    Ok(())
}

/// The Group as served.
pub fn render(id: &str, group: &Group, base: &str, meta: &Meta) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("schemas".to_owned(), json!([GROUP]));
    out.insert("id".to_owned(), Value::String(id.to_owned()));
    if let Some(external) = &group.external_id {
        out.insert("externalId".to_owned(), Value::String(external.clone()));
    }
    out.insert(
        "displayName".to_owned(),
        Value::String(group.display_name.clone()),
    );
    if !group.members.is_empty() {
        let members = group
            .members
            .iter()
            .map(|m| {
                let mut item = Map::new();
                item.insert("value".to_owned(), Value::String(m.value.to_string()));
                item.insert(
                    "$ref".to_owned(),
                    Value::String(format!("{base}/Users/{}", m.value)),
                );
                item.insert("type".to_owned(), Value::String("User".to_owned()));
                if let Some(display) = &m.display {
                    item.insert("display".to_owned(), Value::String(display.clone()));
                }
                Value::Object(item)
            })
            .collect();
        out.insert("members".to_owned(), Value::Array(members));
    }
    out.insert(
        "meta".to_owned(),
        json!({
            "resourceType": "Group",
            "created": meta.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": meta.location,
            "version": format!("W/\"{}\"", meta.version),
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{MAX_OPERATIONS, PATCH_OP};

    const ANN: &str = "6f1c1f5e-0a4b-4c55-9d0e-6a1d3b2f0a01";
    const BOB: &str = "6f1c1f5e-0a4b-4c55-9d0e-6a1d3b2f0a02";
    const CAT: &str = "6f1c1f5e-0a4b-4c55-9d0e-6a1d3b2f0a03";

    fn ids(group: &Group) -> Vec<String> {
        group.members.iter().map(|m| m.value.to_string()).collect()
    }

    fn acme() -> Group {
        from_request(&json!({
            "schemas": [GROUP],
            "displayName": "Acme",
            "externalId": "okta-1",
            "members": [{"value": ANN, "display": "ann@example.com"}, {"value": BOB}]
        }))
        .unwrap()
    }

    fn patch_ops(group: &Group, operations: Value) -> Result<Group, ScimError> {
        patch(
            group,
            &json!({"schemas": [PATCH_OP], "Operations": operations}),
        )
    }

    #[test]
    fn a_request_keeps_display_name_external_id_and_members_once_each() {
        let group = from_request(&json!({
            "schemas": [GROUP],
            "id": "client-chosen",
            "DISPLAYNAME": "Acme",
            "favouriteColour": "green",
            "members": [{"value": ANN, "display": "Ann", "$ref": "x", "type": "User"},
                        {"value": ANN.to_uppercase()}]
        }))
        .unwrap();
        assert_eq!(group.display_name, "Acme");
        assert_eq!(group.external_id, None);
        assert_eq!(
            group.members,
            vec![Member {
                value: Uuid::parse_str(ANN).unwrap(),
                display: Some("Ann".to_owned())
            }]
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (body, kind) in [
            (json!({"schemas": [GROUP]}), "invalidValue"),
            (json!({"displayName": " "}), "invalidValue"),
            (json!({"displayName": 3}), "invalidValue"),
            (
                json!({"schemas": ["urn:other"], "displayName": "x"}),
                "invalidValue",
            ),
            (
                json!({"displayName": "x", "members": [{"value": "not-a-user"}]}),
                "invalidValue",
            ),
            (
                json!({"displayName": "x", "members": [{"display": "no value"}]}),
                "invalidValue",
            ),
            (
                json!({"displayName": "x", "members": [{"value": ANN, "type": "Group"}]}),
                "invalidValue",
            ),
            (json!([]), "invalidSyntax"),
        ] {
            let error = from_request(&body).expect_err(&body.to_string());
            assert_eq!(error.scim_type, Some(kind), "{body}: {error}");
        }
        let many: Vec<Value> = (0..=MAX_VALUES)
            .map(|_| json!({"value": Uuid::new_v4().to_string()}))
            .collect();
        let error = from_request(&json!({"displayName": "x", "members": many})).unwrap_err();
        assert!(error.detail.contains("more than"), "{error}");
        let error = from_request(&json!({"displayName": "x", "members": [{"value": "nobody"}]}))
            .unwrap_err();
        assert!(error.detail.contains("\"nobody\""), "{error}");
    }

    #[test]
    fn okta_adds_removes_by_filter_and_renames_naming_the_id() {
        let group = acme();
        let added = patch_ops(
            &group,
            json!([{"op": "add", "path": "members", "value": [{"value": CAT, "display": "cat"}]}]),
        )
        .unwrap();
        assert_eq!(ids(&added), vec![ANN, BOB, CAT]);
        let removed = patch_ops(
            &added,
            json!([{"op": "remove", "path": format!("members[value eq \"{BOB}\"]")}]),
        )
        .unwrap();
        assert_eq!(ids(&removed), vec![ANN, CAT]);
        let renamed = patch_ops(
            &removed,
            json!([{"op": "replace", "value": {"id": "whatever", "displayName": "Acme Corp"}}]),
        )
        .unwrap();
        assert_eq!(renamed.display_name, "Acme Corp");
        assert_eq!(ids(&renamed), vec![ANN, CAT]);
    }

    #[test]
    fn entra_capitalises_operations_and_removes_by_a_list_of_values() {
        let group = acme();
        let patched = patch_ops(
            &group,
            json!([
                {"op": "Add", "path": "members", "value": [{"value": CAT}]},
                {"op": "Remove", "path": "members", "value": [{"value": ANN}, {"value": BOB}]},
                {"op": "Replace", "path": "displayName", "value": "Acme admins"},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:externalId",
                 "value": "entra-9"}
            ]),
        )
        .unwrap();
        assert_eq!(ids(&patched), vec![CAT]);
        assert_eq!(patched.display_name, "Acme admins");
        assert_eq!(patched.external_id.as_deref(), Some("entra-9"));
        let emptied = patch_ops(&patched, json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(emptied.members.is_empty());
        let replaced = patch_ops(
            &group,
            json!([{"op": "replace", "path": "members", "value": [{"value": CAT}]}]),
        )
        .unwrap();
        assert_eq!(ids(&replaced), vec![CAT]);
    }

    #[test]
    fn a_display_is_set_through_a_filter_and_values_stay_immutable() {
        let group = acme();
        let patched = patch_ops(
            &group,
            json!([{"op": "replace", "path": format!("members[value eq \"{BOB}\"].display"),
                    "value": "Bob"}]),
        )
        .unwrap();
        assert_eq!(patched.members[1].display.as_deref(), Some("Bob"));
        let error = patch_ops(
            &group,
            json!([{"op": "replace", "path": "members.value", "value": CAT}]),
        )
        .unwrap_err();
        assert_eq!(error.scim_type, Some("mutability"));
    }

    #[test]
    fn refusals_name_their_scim_type_and_change_nothing() {
        let group = acme();
        for (operations, kind) in [
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "add", "path": "owners", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "add", "path": "displayName.x", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "add", "path": "members.nickname", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "add", "path": "members[value eq", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "path": "members[value eq \"nobody\"].display", "value": "x"}]),
                "noTarget",
            ),
            (
                json!([{"op": "replace", "path": "id", "value": "x"}]),
                "mutability",
            ),
            (
                json!([{"op": "remove", "path": "displayName"}]),
                "invalidValue",
            ),
            (
                json!([{"op": "add", "path": "members", "value": [{"value": "nobody"}]}]),
                "invalidValue",
            ),
            (
                json!([{"op": "move", "path": "displayName"}]),
                "invalidSyntax",
            ),
            (json!([]), "invalidSyntax"),
        ] {
            let error = patch_ops(&group, operations.clone()).expect_err(&operations.to_string());
            assert_eq!(error.scim_type, Some(kind), "{operations}: {error}");
            assert_eq!(error.status, 400);
        }
        let too_many: Vec<Value> = (0..=MAX_OPERATIONS)
            .map(|_| json!({"op": "add", "path": "externalId", "value": "x"}))
            .collect();
        let error = patch_ops(&group, Value::Array(too_many)).unwrap_err();
        assert_eq!(error.scim_type, Some("tooMany"));
    }

    #[test]
    fn rendering_gives_each_member_its_reference_and_type() {
        let now = chrono::Utc::now();
        let rendered = render(
            "g1",
            &acme(),
            "http://h/scim/v2",
            &Meta {
                created: now,
                last_modified: now,
                version: 2,
                location: "http://h/scim/v2/Groups/g1".to_owned(),
            },
        );
        assert_eq!(rendered["displayName"], "Acme");
        assert_eq!(rendered["externalId"], "okta-1");
        assert_eq!(
            rendered["members"][0],
            json!({"value": ANN, "$ref": format!("http://h/scim/v2/Users/{ANN}"),
                   "type": "User", "display": "ann@example.com"})
        );
        assert_eq!(rendered["meta"]["resourceType"], "Group");
        assert_eq!(rendered["meta"]["version"], "W/\"2\"");
    }
}
