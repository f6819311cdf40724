//! The SCIM 2.0 protocol (RFC 7643, RFC 7644) as invite-sync serves it: the User schemas, the Group,
//! filters and paths, PATCH, and the mapping from a User to a roster row. Pure: the HTTP
//! surface is `service::http::scim`, the table `store::scim`.

pub mod error;
pub mod filter;
pub mod group;
pub mod groups_map;
pub mod mapping;
pub mod patch;
pub mod resource;
pub mod schema;

pub use error::ScimError;
pub use mapping::{EmailSource, Mapping, RosterEntry};

/// Checks a SCIM attribute path names a served attribute (for the configuration).
pub fn check_attribute_path(path: &str) -> Result<(), String> {
    filter::check_attribute_path(path)
}
