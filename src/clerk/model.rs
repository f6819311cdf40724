//! The request and response shapes of Clerk's invitation endpoints, as the
//! Backend API spec (version 2026-05-12) defines them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::domain::{CreateInvitation, TemplateSlug};

/// The Backend API version every request pins with the `Clerk-API-Version` header.
pub const API_VERSION: &str = "2026-05-12";

/// The Backend API operations invite-sync and its simulator know: the four invitation
/// operations, the user lookups (`ListUsers` is the spec's `GetUserList`) and the
/// organization operations a membership roster needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    CreateInvitation,
    CreateBulkInvitations,
    ListInvitations,
    RevokeInvitation,
    ListUsers,
    GetUser,
    DeleteUser,
    /// `GET /users/count`.
    CountUsers,
    /// `POST /organizations`.
    CreateOrganization,
    /// `GET /organizations`.
    ListOrganizations,
    /// `GET /organizations/{id_or_slug}`.
    GetOrganization,
    /// `GET /organization_roles`.
    ListOrganizationRoles,
    /// `POST /organizations/{id}/invitations`: hourly-limited like `CreateInvitation`.
    CreateOrganizationInvitation,
    /// `POST /organizations/{id}/invitations/bulk`: hourly-limited like `CreateBulkInvitations`.
    CreateOrganizationInvitationsBulk,
    /// `GET /organizations/{id}/invitations`.
    ListOrganizationInvitations,
    /// `GET /organization_invitations`: every organization's.
    ListInstanceOrganizationInvitations,
    /// `GET /organizations/{id}/invitations/{invitation_id}`.
    GetOrganizationInvitation,
    /// `POST /organizations/{id}/invitations/{invitation_id}/revoke`.
    RevokeOrganizationInvitation,
    /// `POST /organizations/{id}/memberships`.
    CreateOrganizationMembership,
    /// `GET /organizations/{id}/memberships`.
    ListOrganizationMemberships,
    /// `PATCH /organizations/{id}/memberships/{user_id}`.
    UpdateOrganizationMembership,
    /// `DELETE /organizations/{id}/memberships/{user_id}`.
    DeleteOrganizationMembership,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateInvitation => "create_invitation",
            Operation::CreateBulkInvitations => "create_bulk_invitations",
            Operation::ListInvitations => "list_invitations",
            Operation::RevokeInvitation => "revoke_invitation",
            Operation::ListUsers => "list_users",
            Operation::GetUser => "get_user",
            Operation::DeleteUser => "delete_user",
            Operation::CountUsers => "count_users",
            Operation::CreateOrganization => "create_organization",
            Operation::ListOrganizations => "list_organizations",
            Operation::GetOrganization => "get_organization",
            Operation::ListOrganizationRoles => "list_organization_roles",
            Operation::CreateOrganizationInvitation => "create_organization_invitation",
            Operation::CreateOrganizationInvitationsBulk => "create_organization_invitations_bulk",
            Operation::ListOrganizationInvitations => "list_organization_invitations",
            Operation::ListInstanceOrganizationInvitations => {
                "list_instance_organization_invitations"
            }
            Operation::GetOrganizationInvitation => "get_organization_invitation",
            Operation::RevokeOrganizationInvitation => "revoke_organization_invitation",
            Operation::CreateOrganizationMembership => "create_organization_membership",
            Operation::ListOrganizationMemberships => "list_organization_memberships",
            Operation::UpdateOrganizationMembership => "update_organization_membership",
            Operation::DeleteOrganizationMembership => "delete_organization_membership",
        }
    }

    /// Whether sending the request twice does no harm: a second list or get reads again, a
    /// second revoke answers `invitation_already_revoked` (`organization_invitation_not_pending`),
    /// a second delete 404, a second role change sets the same role. A second create invites
    /// (or adds) twice, or is refused where the first was not.
    pub fn idempotent(self) -> bool {
        !self.creates()
            && !matches!(
                self,
                Operation::CreateOrganization | Operation::CreateOrganizationMembership
            )
    }

    /// Whether the operation spends one of the hourly create limits: the instance's
    /// invitations (single and bulk) or the organization invitations (single and bulk).
    pub fn creates(self) -> bool {
        matches!(
            self,
            Operation::CreateInvitation
                | Operation::CreateBulkInvitations
                | Operation::CreateOrganizationInvitation
                | Operation::CreateOrganizationInvitationsBulk
        )
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Clerk's `Invitation` schema. Timestamps are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    pub object: String,
    pub id: String,
    pub email_address: String,
    pub public_metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    pub status: InvitationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl InvitationStatus {
    pub const ALL: [InvitationStatus; 4] = [
        InvitationStatus::Pending,
        InvitationStatus::Accepted,
        InvitationStatus::Revoked,
        InvitationStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Revoked => "revoked",
            InvitationStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl std::fmt::Display for InvitationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The order of a list: a field and a direction, e.g. `+created_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBy {
    pub field: OrderField,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    CreatedAt,
    EmailAddress,
    ExpiresAt,
}

impl OrderBy {
    pub fn parse(s: &str) -> Option<Self> {
        let (descending, name) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let field = match name {
            "created_at" => OrderField::CreatedAt,
            "email_address" => OrderField::EmailAddress,
            "expires_at" => OrderField::ExpiresAt,
            _ => return None,
        };
        Some(OrderBy { field, descending })
    }
}

impl std::fmt::Display for OrderBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.descending { '-' } else { '+' };
        let name = match self.field {
            OrderField::CreatedAt => "created_at",
            OrderField::EmailAddress => "email_address",
            OrderField::ExpiresAt => "expires_at",
        };
        write!(f, "{sign}{name}")
    }
}

/// Clerk's `User` schema, as far as invite-sync reads it; every other field is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub email_addresses: Vec<UserEmailAddress>,
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
}

/// One entry of `User.email_addresses` (Clerk's `EmailAddress` schema), as far as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEmailAddress {
    #[serde(default)]
    pub id: Option<String>,
    pub email_address: String,
}

impl User {
    /// The user's primary email address, if it is among its addresses.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|address| address.id.as_deref() == Some(primary))
            .map(|address| address.email_address.as_str())
    }

    /// Every email address of the user.
    pub fn emails(&self) -> impl Iterator<Item = &str> {
        self.email_addresses
            .iter()
            .map(|address| address.email_address.as_str())
    }
}

/// Clerk's `DeletedObject` schema: the answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedObject {
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub deleted: bool,
}

/// The body of `GET /invitations?paginated=true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationPage {
    pub data: Vec<Invitation>,
    pub total_count: u64,
}

/// Clerk's `ClerkErrors` schema: the body of every error response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClerkErrors {
    pub errors: Vec<ClerkError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk_trace_id: Option<String>,
}

/// One entry of `ClerkErrors.errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClerkError {
    pub message: String,
    pub long_message: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Map<String, Value>>,
}

impl ClerkError {
    /// The addresses Clerk names in `meta.email_addresses` (a `duplicate_record` error).
    pub fn email_addresses(&self) -> Vec<String> {
        self.meta
            .as_ref()
            .and_then(|meta| meta.get("email_addresses"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The error codes invite-sync branches on.
pub mod codes {
    pub const DUPLICATE_RECORD: &str = "duplicate_record";
    pub const FORM_IDENTIFIER_EXISTS: &str = "form_identifier_exists";
    pub const FORM_PARAM_FORMAT_INVALID: &str = "form_param_format_invalid";
    pub const FORM_PARAM_UNKNOWN: &str = "form_param_unknown";
    pub const FORM_PARAM_VALUE_INVALID: &str = "form_param_value_invalid";
    pub const FORM_PARAM_MISSING: &str = "form_param_missing";
    pub const REQUEST_BODY_INVALID: &str = "request_body_invalid";
    pub const BULK_SIZE_EXCEEDED: &str = "bulk_size_exceeded";
    pub const INVITATION_ALREADY_REVOKED: &str = "invitation_already_revoked";
    pub const INVITATION_ALREADY_ACCEPTED: &str = "invitation_already_accepted";
    pub const RESOURCE_NOT_FOUND: &str = "resource_not_found";
    pub const TOO_MANY_REQUESTS: &str = "too_many_requests";
    pub const AUTHENTICATION_INVALID: &str = "authentication_invalid";
    // Organizations (NOTES.md section 9).
    pub const ORGANIZATION_INVITATION_NOT_UNIQUE: &str = "organization_invitation_not_unique";
    pub const ALREADY_A_MEMBER_IN_ORGANIZATION: &str = "already_a_member_in_organization";
    pub const ORGANIZATION_MEMBERSHIP_QUOTA_EXCEEDED: &str =
        "organization_membership_quota_exceeded";
    pub const ORGANIZATION_MEMBERSHIP_MANAGED_BY_SCIM: &str =
        "organization_membership_managed_by_scim";
    pub const ORGANIZATION_MINIMUM_PERMISSIONS_NEEDED: &str =
        "organization_minimum_permissions_needed";
    pub const ORGANIZATION_INVITATION_NOT_PENDING: &str = "organization_invitation_not_pending";
}
