//! What invite-sync asks Clerk to create: the body of `POST /invitations` (and one item of
//! `POST /invitations/bulk`) as the Backend API spec (version 2026-05-12) defines it. A roster
//! row becomes one ([`super::DesiredInvitee`]); the Clerk client sends it as it is.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The email template a create request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSlug {
    Invitation,
    WaitlistInvitation,
}

impl TemplateSlug {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateSlug::Invitation => "invitation",
            TemplateSlug::WaitlistInvitation => "waitlist_invitation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [TemplateSlug::Invitation, TemplateSlug::WaitlistInvitation]
            .into_iter()
            .find(|slug| slug.as_str() == s)
    }
}

/// The body of `POST /invitations`, and one item of `POST /invitations/bulk`.
/// Fields left `None` are not sent, so Clerk applies its own defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateInvitation {
    pub email_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_existing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_slug: Option<TemplateSlug>,
}

impl CreateInvitation {
    pub fn new(email_address: impl Into<String>) -> Self {
        CreateInvitation {
            email_address: email_address.into(),
            public_metadata: None,
            redirect_url: None,
            notify: None,
            ignore_existing: None,
            expires_in_days: None,
            template_slug: None,
        }
    }
}
