//! From a SCIM User to a roster row: the address, whether it belongs on the roster, and the
//! public metadata the configured mapping takes from its attributes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::filter::{get_ci, item_matches, parse_path, PatchPath};
use super::resource::{base, Attributes};
use crate::domain::Email;

/// Where the roster address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailSource {
    /// `userName` when it is an address, else the emails.
    UserName,
    /// The emails (primary, then work, then the first), else `userName`.
    WorkEmail,
}

/// What a User means for the roster.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterEntry {
    /// `None`: no attribute holds an address Clerk can invite (a user name that is no address,
    /// or one Clerk refuses, such as a non-ASCII one); the user is kept off the roster.
    pub email: Option<Email>,
    pub active: bool,
    pub public_metadata: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    email: EmailSource,
    metadata: Vec<(String, PatchPath)>,
}

impl Mapping {
    /// `metadata`: metadata key → SCIM attribute path (checked when the configuration loads).
    pub fn new(email: EmailSource, metadata: &BTreeMap<String, String>) -> Result<Mapping, String> {
        let metadata = metadata
            .iter()
            .map(|(key, path)| {
                parse_path(path)
                    .map(|parsed| (key.clone(), parsed))
                    .map_err(|e| format!("scim.metadata.{key}: {}", e.detail))
            })
            .collect::<Result<_, _>>()?;
        Ok(Mapping { email, metadata })
    }

    pub fn entry(&self, attributes: &Attributes) -> RosterEntry {
        let from_user_name = || {
            attributes
                .get("userName")
                .and_then(Value::as_str)
                .and_then(|name| Email::parse_invitable(name).ok())
        };
        let email = match self.email {
            EmailSource::UserName => from_user_name().or_else(|| from_emails(attributes)),
            EmailSource::WorkEmail => from_emails(attributes).or_else(from_user_name),
        };
        let active = attributes
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let public_metadata = self
            .metadata
            .iter()
            .filter_map(|(key, path)| Some((key.clone(), value_at(attributes, path)?)))
            .collect();
        RosterEntry {
            email,
            active,
            public_metadata,
        }
    }
}

/// The primary email, else the work one, else the first that is an address.
fn from_emails(attributes: &Attributes) -> Option<Email> {
    let items = attributes.get("emails")?.as_array()?;
    let rank = |item: &Value| {
        if item.get("primary") == Some(&Value::Bool(true)) {
            0
        } else if item
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("work"))
        {
            1
        } else {
            2
        }
    };
    let mut ranked: Vec<&Value> = items.iter().collect();
    ranked.sort_by_key(|item| rank(item));
    ranked
        .into_iter()
        .filter_map(|item| item.get("value")?.as_str())
        .find_map(|value| Email::parse_invitable(value).ok())
}

/// The value a path names, if the user has one (the first, for a multi-valued attribute).
pub fn value_at(attributes: &Attributes, path: &PatchPath) -> Option<Value> {
    let holder = base(attributes, path.owner)?;
    let Some(name) = &path.attr else {
        return Some(Value::Object(holder.clone()));
    };
    let value = get_ci(holder, name)?;
    let items: Vec<&Value> = match (value, &path.filter) {
        (Value::Array(items), Some(filter)) => items
            .iter()
            .filter(|item| {
                item.as_object()
                    .is_some_and(|fields| item_matches(filter, name, fields))
            })
            .collect(),
        (Value::Array(items), None) if path.sub.is_some() => items.iter().collect(),
        (value, _) => vec![value],
    };
    match &path.sub {
        None => match (value, &path.filter) {
            (Value::Array(_), Some(_)) => items.first().map(|v| (*v).clone()),
            _ => Some(value.clone()),
        },
        Some(sub) => items
            .into_iter()
            .filter_map(|item| get_ci(item.as_object()?, sub))
            .next()
            .cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attributes(value: Value) -> Attributes {
        match value {
            Value::Object(fields) => fields,
            _ => unreachable!(),
        }
    }

    fn defaults() -> BTreeMap<String, String> {
        [
            ("external_id", "externalId"),
            ("given_name", "name.givenName"),
            (
                "department",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            ),
            ("work_email", "emails[type eq \"work\"].value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn the_address_comes_from_user_name_or_the_emails_as_configured() {
        let user = attributes(json!({"userName": "jdoe@corp.onmicrosoft.com",
            "emails": [{"value": "home@example.org", "type": "home"},
                       {"value": "John.Doe@Corp.example", "type": "work"}]}));
        let by_name = Mapping::new(EmailSource::UserName, &BTreeMap::new()).unwrap();
        assert_eq!(
            by_name.entry(&user).email.unwrap().as_str(),
            "jdoe@corp.onmicrosoft.com"
        );
        let by_email = Mapping::new(EmailSource::WorkEmail, &BTreeMap::new()).unwrap();
        assert_eq!(
            by_email.entry(&user).email.unwrap().as_str(),
            "john.doe@corp.example"
        );
        let no_address = attributes(json!({"userName": "jdoe"}));
        assert_eq!(by_name.entry(&no_address).email, None);
        assert!(
            by_name.entry(&no_address).active,
            "active is true unless said otherwise"
        );
    }

    #[test]
    fn metadata_takes_the_mapped_attributes_that_are_present() {
        let mapping = Mapping::new(EmailSource::UserName, &defaults()).unwrap();
        let entry = mapping.entry(&attributes(json!({
            "userName": "ann@example.com", "externalId": "E-7", "active": false,
            "name": {"givenName": "Ann"},
            "emails": [{"value": "ann@example.com", "type": "work"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"}
        })));
        assert!(!entry.active);
        assert_eq!(
            Value::Object(entry.public_metadata),
            json!({"external_id": "E-7", "given_name": "Ann", "department": "Ops",
                   "work_email": "ann@example.com"})
        );
    }
}
