//! The simulator's users: one email address each, shown as Clerk's `User` schema.

use serde_json::{json, Map, Value};

use crate::clerk::model::{User, UserEmailAddress};

/// How a user's email address was verified: the way the user came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Created through the control API, as `POST /users` would (`verification_admin`).
    Admin,
    /// Signed up by accepting an invitation (`verification_ticket`).
    Ticket,
}

#[derive(Debug, Clone)]
pub struct StoredUser {
    pub id: String,
    pub email_id: String,
    pub email_address: String,
    pub email_key: String,
    pub verification: Verification,
    pub public_metadata: Map<String, Value>,
    pub created_at: i64,
}

impl StoredUser {
    /// The user as the client's model reads it.
    pub fn model(&self) -> User {
        User {
            id: self.id.clone(),
            email_addresses: vec![UserEmailAddress {
                id: Some(self.email_id.clone()),
                email_address: self.email_address.clone(),
            }],
            primary_email_address_id: Some(self.email_id.clone()),
        }
    }

    /// The user as Clerk's `User` schema: every required field, with the values of a
    /// user who has one verified email address and nothing else.
    pub fn view(&self) -> Value {
        let verification = match self.verification {
            Verification::Admin => json!({
                "object": "verification_admin", "status": "verified", "strategy": "admin",
                "attempts": null, "expire_at": null,
            }),
            Verification::Ticket => json!({
                "object": "verification_ticket", "status": "verified", "strategy": "ticket",
                "attempts": null, "expire_at": null,
            }),
        };
        // Two halves: one `json!` of every field exceeds the macro's recursion limit.
        let mut user = json!({
            "id": self.id,
            "object": "user",
            "external_id": null,
            "primary_email_address_id": self.email_id,
            "primary_phone_number_id": null,
            "primary_web3_wallet_id": null,
            "username": null,
            "first_name": null,
            "last_name": null,
            "image_url": "https://img.simulated.clerk.invalid/default.png",
            "has_image": false,
            "public_metadata": self.public_metadata,
            "private_metadata": {},
            "unsafe_metadata": {},
            "email_addresses": [{
                "id": self.email_id,
                "object": "email_address",
                "email_address": self.email_address,
                "reserved": false,
                "verification": verification,
                "linked_to": [],
                "matches_sso_connection": false,
                "created_at": self.created_at,
                "updated_at": self.created_at,
            }],
        });
        let rest = json!({
            "phone_numbers": [],
            "web3_wallets": [],
            "passkeys": [],
            "password_enabled": false,
            "two_factor_enabled": false,
            "totp_enabled": false,
            "backup_code_enabled": false,
            "mfa_enabled_at": null,
            "mfa_disabled_at": null,
            "password_last_updated_at": null,
            "external_accounts": [],
            "saml_accounts": [],
            "enterprise_accounts": [],
            "organization_memberships": [],
            "last_sign_in_at": null,
            "banned": false,
            "locked": false,
            "deprovisioned": false,
            "lockout_expires_in_seconds": null,
            "verification_attempts_remaining": null,
            "updated_at": self.created_at,
            "created_at": self.created_at,
            "delete_self_enabled": true,
            "create_organization_enabled": true,
            "create_organizations_limit": null,
            "last_active_at": null,
            "legal_accepted_at": null,
            "bypass_client_trust": false,
        });
        if let (Value::Object(user), Value::Object(rest)) = (&mut user, rest) {
            user.extend(rest);
        }
        user
    }
}
