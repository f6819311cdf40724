//! The schemas served: RFC 7643's User and its enterprise extension, and its Group
//! (`schemas.json`, the RFC's own representation), read once into attribute definitions that
//! drive the User's input checks, PATCH, filters and the discovery documents alike. A Group's
//! few attributes are handled by [`super::group`].

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{json, Value};

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SERVICE_PROVIDER_CONFIG: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most resources one list answer holds, whatever `count` asks for.
pub const MAX_RESULTS: usize = 500;
/// Most operations one PATCH request holds (`bulk.maxOperations` in ServiceProviderConfig).
pub const MAX_OPERATIONS: usize = 100;
/// Largest request body, in bytes (`bulk.maxPayloadSize`); the HTTP layer enforces it.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most values a multi-valued attribute (`emails`, `phoneNumbers`, ...) holds.
pub const MAX_VALUES: usize = 100;
/// Longest string value, in characters.
pub const MAX_STRING_CHARS: usize = 2048;
/// Longest `userName` and `externalId`, in characters: both are indexed, and an index entry
/// must stay far below PostgreSQL's limit of about 2.7 kB.
pub const MAX_USER_NAME_CHARS: usize = 256;
/// Largest User, its attributes as stored JSON, in bytes.
pub const MAX_USER_BYTES: usize = 64 * 1024;
/// Longest Group `displayName` and `externalId`, in characters (indexed, as `userName`).
pub const MAX_GROUP_NAME_CHARS: usize = 256;
/// Most members one group holds (a request's member list holds at most [`MAX_VALUES`]; a
/// larger group is built by several PATCH requests).
pub const MAX_GROUP_MEMBERS: usize = 50_000;
/// Most paths `attributes` or `excludedAttributes` may list.
pub const MAX_PROJECTED: usize = 64;

/// Whether `name` is an attribute name as RFC 7643 §2.1 spells them: a letter, then
/// letters, digits, `-` or `_` (or `$ref`).
pub fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    name == "$ref"
        || (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
}

const SCHEMAS_JSON: &str = include_str!("schemas.json");

/// An attribute's type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Type {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

/// One attribute definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Type,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub case_exact: bool,
    #[serde(default = "read_write")]
    pub mutability: Mutability,
    #[serde(default = "returned_default")]
    pub returned: Returned,
    #[serde(default)]
    pub sub_attributes: Vec<Attribute>,
}

fn read_write() -> Mutability {
    Mutability::ReadWrite
}

fn returned_default() -> Returned {
    Returned::Default
}

impl Attribute {
    /// A sub-attribute by name, case-insensitively (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn is_complex(&self) -> bool {
        self.kind == Type::Complex
    }
}

#[derive(Debug, Deserialize)]
struct SchemaDocument {
    id: String,
    attributes: Vec<Attribute>,
}

/// Which schema an attribute belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Core,
    Enterprise,
}

impl Owner {
    pub fn urn(self) -> &'static str {
        match self {
            Owner::Core => USER,
            Owner::Enterprise => ENTERPRISE,
        }
    }
}

pub struct Schemas {
    /// The documents as served (without `meta`, added per request).
    pub documents: Vec<Value>,
    pub core: Vec<Attribute>,
    pub enterprise: Vec<Attribute>,
    /// `externalId` (RFC 7643 §3.1), a common attribute no schema document lists.
    pub external_id: Attribute,
}

impl Schemas {
    pub fn attributes(&self, owner: Owner) -> &[Attribute] {
        match owner {
            Owner::Core => &self.core,
            Owner::Enterprise => &self.enterprise,
        }
    }

    /// An attribute of `owner` by name, case-insensitively; `externalId` counts as core.
    pub fn attribute(&self, owner: Owner, name: &str) -> Option<&Attribute> {
        if owner == Owner::Core && name.eq_ignore_ascii_case("externalId") {
            return Some(&self.external_id);
        }
        self.attributes(owner)
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// The served schemas. The file is part of the binary and checked by a unit test.
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
        let documents: Vec<Value> = serde_json::from_str(SCHEMAS_JSON).unwrap_or_default();
        let parsed: Vec<SchemaDocument> = serde_json::from_str(SCHEMAS_JSON).unwrap_or_default();
        let of = |id: &str| {
            parsed
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.attributes.clone())
                .unwrap_or_default()
        };
        Schemas {
            core: of(USER),
            enterprise: of(ENTERPRISE),
            documents,
            external_id: Attribute {
                name: "externalId".to_owned(),
                kind: Type::String,
                multi_valued: false,
                required: false,
                case_exact: true,
                mutability: Mutability::ReadWrite,
                returned: Returned::Default,
                sub_attributes: Vec::new(),
            },
        }
    });
    &SCHEMAS
}

/// `/ServiceProviderConfig`: what this server supports, exactly.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": {"supported": true},
        // RFC 7643 §5 gives PATCH no limits of its own, and its schema allows no others:
        // `bulk`'s (bulk itself is not supported) say what one request may hold, a PATCH's
        // operations and the body's bytes. The other limits are in the documentation and
        // in the refusals that quote them.
        "bulk": {
            "supported": false,
            "maxOperations": MAX_OPERATIONS,
            "maxPayloadSize": MAX_PAYLOAD_BYTES
        },
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "Authorization: Bearer with a token of scim.token",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig")
        }
    })
}

/// The User resource type, with the enterprise extension.
pub fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A person on the invitation roster",
        "schema": USER,
        "schemaExtensions": [{"schema": ENTERPRISE, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
    })
}

/// The Group resource type: groups of SCIM users.
pub fn group_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "A group of users, which the configuration may map to an organization",
        "schema": GROUP,
        "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
    })
}

/// A resource type by id (`User`, `Group`).
pub fn resource_type(base: &str, id: &str) -> Option<Value> {
    match id {
        "User" => Some(user_resource_type(base)),
        "Group" => Some(group_resource_type(base)),
        _ => None,
    }
}

/// A schema document by id, with its `meta`.
pub fn schema_document(base: &str, id: &str) -> Option<Value> {
    let mut document = schemas()
        .documents
        .iter()
        .find(|d| d.get("id").and_then(Value::as_str) == Some(id))?
        .clone();
    if let Value::Object(fields) = &mut document {
        fields.insert("schemas".to_owned(), json!([SCHEMA]));
        fields.insert(
            "meta".to_owned(),
            json!({"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}),
        );
    }
    Some(document)
}

/// Every schema document.
pub fn schema_documents(base: &str) -> Vec<Value> {
    [USER, ENTERPRISE, GROUP]
        .iter()
        .filter_map(|id| schema_document(base, id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schemas_parse_with_user_and_enterprise_attributes() {
        let schemas = schemas();
        assert_eq!(schemas.documents.len(), 3);
        assert!(schemas.attribute(Owner::Core, "USERNAME").is_some());
        assert!(schemas.attribute(Owner::Core, "externalid").is_some());
        let emails = schemas.attribute(Owner::Core, "emails").unwrap();
        assert!(emails.multi_valued && emails.sub("Value").is_some());
        assert!(schemas
            .attribute(Owner::Enterprise, "employeeNumber")
            .is_some());
        let password = schemas.attribute(Owner::Core, "password").unwrap();
        assert_eq!(password.mutability, Mutability::WriteOnly);
        assert_eq!(schema_documents("http://x/scim/v2").len(), 3);
        let group = schema_document("http://x/scim/v2", GROUP).unwrap();
        assert_eq!(group["attributes"][0]["name"], "displayName");
        assert_eq!(group["attributes"][1]["subAttributes"][0]["name"], "value");
    }
}
