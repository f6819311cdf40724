//! The request and response shapes of Clerk's organization endpoints (organizations, their
//! invitations, memberships and roles), as the Backend API spec (version 2026-05-12) defines
//! them. Timestamps are Unix milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::model::InvitationStatus;

/// The role every organization has for its administrators.
pub const ROLE_ADMIN: &str = "org:admin";
/// The role every organization has for its ordinary members.
pub const ROLE_MEMBER: &str = "org:member";

/// An organization invitation's status: the same four values as an instance invitation's
/// (`pending`, `accepted`, `revoked`, `expired`).
pub type OrganizationInvitationStatus = InvitationStatus;

/// Clerk's `Organization` schema. `members_count` and `pending_invitations_count` are
/// present only when asked for (`include_members_count`); `max_allowed_memberships` 0 means
/// no limit, and counts members and pending invitations alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub object: String,
    pub id: String,
    pub name: String,
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default)]
    pub has_image: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_member_with_elevated_permissions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_invitations_count: Option<u64>,
    pub max_allowed_memberships: u64,
    #[serde(default)]
    pub admin_delete_enabled: bool,
    #[serde(default)]
    pub public_metadata: Map<String, Value>,
    #[serde(default)]
    pub private_metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_set_key: Option<String>,
}

impl Organization {
    /// How many more members and pending invitations the organization takes: `None` when it
    /// has no limit (`max_allowed_memberships` 0) or its counts were not asked for
    /// ([`Organization::room_known`] tells the two apart).
    pub fn room(&self) -> Option<u64> {
        if self.max_allowed_memberships == 0 {
            return None;
        }
        let used = self.members_count? + self.pending_invitations_count?;
        Some(self.max_allowed_memberships.saturating_sub(used))
    }

    /// Whether [`Organization::room`] can be read: the organization has no limit, or its
    /// counts came with it.
    pub fn room_known(&self) -> bool {
        self.max_allowed_memberships == 0
            || (self.members_count.is_some() && self.pending_invitations_count.is_some())
    }
}

/// Clerk's `OrganizationInvitationPublicUserData`: the inviter, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationInvitationPublicUserData {
    pub user_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[serde(default)]
    pub image_url: String,
    #[serde(default)]
    pub has_image: bool,
    #[serde(default)]
    pub identifier: String,
}

/// Clerk's `OrganizationInvitationPublicOrganizationData`, present on the invitations of the
/// instance-wide list (`GET /organization_invitations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationInvitationPublicOrganizationData {
    pub id: String,
    pub name: String,
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default)]
    pub has_image: bool,
}

/// Clerk's `OrganizationInvitation` schema (and, with `public_organization_data`, its
/// `OrganizationInvitationWithPublicOrganizationData`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationInvitation {
    pub object: String,
    pub id: String,
    pub email_address: String,
    pub role: String,
    #[serde(default)]
    pub role_name: String,
    #[serde(default)]
    pub organization_id: String,
    #[serde(default)]
    pub inviter_id: Option<String>,
    #[serde(default)]
    pub public_inviter_data: Option<OrganizationInvitationPublicUserData>,
    pub status: OrganizationInvitationStatus,
    #[serde(default)]
    pub public_metadata: Map<String, Value>,
    #[serde(default)]
    pub private_metadata: Map<String, Value>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_organization_data: Option<OrganizationInvitationPublicOrganizationData>,
}

/// Clerk's `OrganizationMembershipPublicUserData`: who the member is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationMembershipPublicUserData {
    pub user_id: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub profile_image_url: Option<String>,
    #[serde(default)]
    pub image_url: String,
    #[serde(default)]
    pub has_image: bool,
    /// The user's primary identifier: for an email sign-in, the primary email address.
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovisioned: Option<bool>,
}

/// Clerk's `OrganizationMembership` schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationMembership {
    pub object: String,
    pub id: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub public_metadata: Map<String, Value>,
    #[serde(default)]
    pub private_metadata: Map<String, Value>,
    pub organization: Organization,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_user_data: Option<OrganizationMembershipPublicUserData>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OrganizationMembership {
    /// The member's user id, from `public_user_data`.
    pub fn user_id(&self) -> Option<&str> {
        self.public_user_data
            .as_ref()
            .map(|data| data.user_id.as_str())
    }

    /// The member's identifier (its primary email address for an email sign-in).
    pub fn identifier(&self) -> Option<&str> {
        self.public_user_data
            .as_ref()
            .and_then(|data| data.identifier.as_deref())
    }
}

/// Clerk's `Permission` schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub object: String,
    pub id: String,
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Clerk's `Role` schema: an organization role (`org:admin`, `org:member`, or a custom
/// `org:…` key), as `GET /organization_roles` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationRole {
    pub object: String,
    pub id: String,
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_creator_eligible: bool,
    #[serde(default)]
    pub permissions: Vec<Permission>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The body of `POST /organizations/{organization_id}/invitations`, and one item of the bulk
/// call's array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateOrganizationInvitation {
    pub email_address: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inviter_user_id: Option<String>,
}

impl CreateOrganizationInvitation {
    /// An invitation of `email_address` with `role` and nothing else set.
    pub fn new(email_address: impl Into<String>, role: impl Into<String>) -> Self {
        CreateOrganizationInvitation {
            email_address: email_address.into(),
            role: role.into(),
            public_metadata: None,
            private_metadata: None,
            redirect_url: None,
            expires_in_days: None,
            notify: None,
            inviter_user_id: None,
        }
    }
}

/// The body of `POST /organizations/{organization_id}/memberships`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOrganizationMembership {
    pub user_id: String,
    pub role: String,
}

/// The body of `PATCH /organizations/{organization_id}/memberships/{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOrganizationMembership {
    pub role: String,
}

/// A page of a list (`Organizations`, `OrganizationInvitations`, `OrganizationMemberships`,
/// `Roles`): the items and how many there are in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total_count: u64,
}

/// Clerk's `TotalCount` schema: the answer of `GET /users/count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalCount {
    pub object: String,
    pub total_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_organization_without_counts_has_no_known_room_unless_unlimited() {
        let mut org: Organization = serde_json::from_value(json!({
            "object": "organization", "id": "org_1", "name": "Acme", "slug": "acme",
            "has_image": false, "max_allowed_memberships": 5, "admin_delete_enabled": true,
            "public_metadata": {}, "created_at": 1, "updated_at": 1
        }))
        .expect("an organization");
        assert!(!org.room_known());
        assert_eq!(org.room(), None);
        org.members_count = Some(3);
        org.pending_invitations_count = Some(1);
        assert_eq!(org.room(), Some(1));
        org.pending_invitations_count = Some(4);
        assert_eq!(org.room(), Some(0));
        org.max_allowed_memberships = 0;
        assert!(org.room_known());
        assert_eq!(org.room(), None);
    }

    #[test]
    fn a_create_invitation_sends_only_what_is_set() {
        let body = serde_json::to_value(CreateOrganizationInvitation::new("a@x.com", ROLE_MEMBER))
            .expect("serialises");
        assert_eq!(
            body,
            json!({"email_address": "a@x.com", "role": "org:member"})
        );
    }

    #[test]
    fn an_invitation_keeps_its_nullable_fields_as_null() {
        let invitation: OrganizationInvitation = serde_json::from_value(json!({
            "object": "organization_invitation", "id": "orginv_1", "email_address": "a@x.com",
            "role": "org:admin", "role_name": "Admin", "organization_id": "org_1",
            "inviter_id": null, "public_inviter_data": null, "status": "pending",
            "public_metadata": {}, "private_metadata": {}, "url": null, "expires_at": null,
            "created_at": 1, "updated_at": 2
        }))
        .expect("an invitation");
        assert_eq!(invitation.status, InvitationStatus::Pending);
        let back = serde_json::to_value(&invitation).expect("serialises");
        for key in ["inviter_id", "public_inviter_data", "url", "expires_at"] {
            assert_eq!(back.get(key), Some(&Value::Null), "{key}");
        }
        assert!(back.get("public_organization_data").is_none());
    }
}
