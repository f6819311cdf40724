//! Organizations (B2B): a row of the membership roster, checked once at the edge, what the
//! membership ledger holds of each organization invitation and membership, and what invite-sync
//! last read of an organization.

use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value};

use super::invitee::{check_redirect, holds_nul, nul_reason, sha256_hex};
use super::{Email, MAX_METADATA_BYTES};

/// The prefix every organization role key carries (`org:admin`, `org:member`, `org:billing`).
pub const ROLE_PREFIX: &str = "org:";

/// The role a roster row names, checked for its shape only (`org:` then lower-case letters,
/// digits and underscores); whether the instance has that role is Clerk's to say. Spaces
/// around it are trimmed.
pub fn check_role(text: &str) -> Result<String, String> {
    let role = text.trim_matches(' ');
    let Some(key) = role.strip_prefix(ROLE_PREFIX) else {
        return Err("must be an organization role key: org: followed by its name".to_owned());
    };
    if key.is_empty() {
        return Err("names no role after org:".to_owned());
    }
    if key
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Ok(role.to_owned());
    }
    if key.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "must be lower case: Clerk's role keys are, so write {:?}",
            role.to_ascii_lowercase()
        ));
    }
    Err("after org: may hold only lower-case letters, digits and underscores".to_owned())
}

/// Whether an organization reference is an organization id rather than a slug.
pub fn is_organization_id(reference: &str) -> bool {
    reference.starts_with("org_")
}

/// The organization a roster row names, spaces around it trimmed (as the table's `btrim`
/// does): an id (`org_...`) or a slug, which Clerk's `GET /organizations/{id_or_slug}` takes.
pub fn check_organization(text: &str) -> Result<String, String> {
    let reference = text.trim_matches(' ');
    if reference.is_empty() {
        return Err("organization is empty".to_owned());
    }
    if reference.contains('\0') {
        return Err(nul_reason("organization"));
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!(
            "organization {reference:?} must be an organization id (org_...) or a slug, \
             without whitespace or /"
        ));
    }
    if reference.len() > 256 {
        return Err("organization is longer than 256 characters".to_owned());
    }
    Ok(reference.to_owned())
}

/// A row of the membership roster as it is stored: nothing checked yet.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipRow {
    pub email: String,
    pub organization: String,
    pub role: Option<String>,
    pub public_metadata: Value,
    pub private_metadata: Value,
    pub redirect_url: Option<String>,
    pub expires_in_days: Option<i32>,
    pub notify: Option<bool>,
    pub not_before: Option<DateTime<Utc>>,
    pub source: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl MembershipRow {
    pub fn new(email: impl Into<String>, organization: impl Into<String>) -> Self {
        MembershipRow {
            email: email.into(),
            organization: organization.into(),
            role: None,
            public_metadata: Value::Object(Map::new()),
            private_metadata: Value::Object(Map::new()),
            redirect_url: None,
            expires_in_days: None,
            notify: None,
            not_before: None,
            source: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// A membership roster row that can be acted on: one person in one organization.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredMembership {
    pub email: Email,
    /// An organization id (`org_...`) or a slug, spaces around it trimmed.
    pub organization: String,
    /// The role the row names (shape checked); `None` takes `organizations.default_role`.
    pub role: Option<String>,
    /// A JSON object, copied onto the membership when the invitation is accepted.
    pub public_metadata: Value,
    /// A JSON object, copied onto the membership when the invitation is accepted.
    pub private_metadata: Value,
    pub redirect_url: Option<String>,
    /// 1 to 365.
    pub expires_in_days: Option<u32>,
    pub notify: Option<bool>,
    pub not_before: Option<DateTime<Utc>>,
    pub source: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// A digest of what the row asks Clerk for (role as written, metadata, redirect, expiry,
    /// notify): when it changes, a refused row is retried.
    pub digest: String,
}

/// A membership roster row that can never succeed, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidMembership {
    pub email: String,
    pub organization: String,
    /// The address, when it parses (another field is at fault): the person still counts as
    /// desired in that organization, so nothing of theirs there is removed.
    pub parsed: Option<Email>,
    pub reason: String,
}

/// A membership roster row as read: the row, or why it cannot be acted on.
pub type MembershipRosterRow = Result<DesiredMembership, InvalidMembership>;

impl DesiredMembership {
    /// Checks a row: its address, organization, role's shape, metadata (objects Clerk can
    /// keep), redirect, expiry and times.
    pub fn from_row(row: &MembershipRow) -> Result<Self, InvalidMembership> {
        let invalid = |parsed: Option<Email>, reason: String| InvalidMembership {
            email: row.email.clone(),
            organization: row.organization.clone(),
            parsed,
            reason,
        };
        let email = Email::parse_invitable(&row.email)
            .map_err(|e| invalid(Email::named_by_row(&row.email, &e), e.to_string()))?;
        let fail = |reason: String| invalid(Some(email.clone()), reason);
        let organization = check_organization(&row.organization).map_err(fail)?;
        let role = match row.role.as_deref().map(|role| role.trim_matches(' ')) {
            None | Some("") => None,
            Some(role) => Some(check_role(role).map_err(|e| fail(format!("role {role:?} {e}")))?),
        };
        for (name, value) in [
            ("public_metadata", &row.public_metadata),
            ("private_metadata", &row.private_metadata),
        ] {
            if !value.is_object() {
                return Err(fail(format!("{name} must be a JSON object")));
            }
            if holds_nul(value) {
                return Err(fail(nul_reason(name)));
            }
            let size = value.to_string().len();
            if size > MAX_METADATA_BYTES {
                return Err(fail(format!(
                    "{name} is {size} bytes; Clerk keeps at most {MAX_METADATA_BYTES}"
                )));
            }
        }
        for (name, value) in [("redirect_url", &row.redirect_url), ("source", &row.source)] {
            if value.as_deref().is_some_and(|text| text.contains('\0')) {
                return Err(fail(nul_reason(name)));
            }
        }
        if let Some(not_before) = row.not_before {
            if !(1..=9999).contains(&not_before.year()) {
                return Err(fail(format!(
                    "not_before {not_before} is outside the years 1 to 9999"
                )));
            }
        }
        let redirect_url = match &row.redirect_url {
            Some(url) => Some(check_redirect(url).map_err(fail)?),
            None => None,
        };
        let expires_in_days = match row.expires_in_days {
            Some(days @ 1..=365) => Some(days.unsigned_abs()),
            Some(days) => {
                return Err(fail(format!(
                    "expires_in_days is {days}; it must be between 1 and 365"
                )))
            }
            None => None,
        };
        let mut membership = DesiredMembership {
            email,
            organization,
            role,
            public_metadata: row.public_metadata.clone(),
            private_metadata: row.private_metadata.clone(),
            redirect_url,
            expires_in_days,
            notify: row.notify,
            not_before: row.not_before,
            source: row.source.clone(),
            created_at: row.created_at,
            digest: String::new(),
        };
        membership.digest = membership.compute_digest();
        Ok(membership)
    }

    /// The role this row asks for, `default_role` where it names none.
    pub fn role_or<'a>(&'a self, default_role: &'a str) -> &'a str {
        self.role.as_deref().unwrap_or(default_role)
    }

    /// SHA-256 of the request's canonical JSON (object keys sorted): the source and the times
    /// are not part of what the row asks Clerk for.
    fn compute_digest(&self) -> String {
        let canonical = serde_json::json!({
            "email_address": self.email.as_str(),
            "organization": self.organization,
            "role": self.role,
            "public_metadata": self.public_metadata,
            "private_metadata": self.private_metadata,
            "redirect_url": self.redirect_url,
            "expires_in_days": self.expires_in_days,
            "notify": self.notify,
        });
        sha256_hex(&serde_json::to_vec(&canonical).unwrap_or_default())
    }
}

/// The key the membership roster is read in the order of: the organization as written, spaces
/// trimmed, then the address, spaces trimmed and ASCII letters lower-cased, both in byte order
/// (PostgreSQL's `btrim(organization) COLLATE "C"`, `lower(btrim(email)) COLLATE "C"`).
pub fn membership_key(row: &MembershipRosterRow) -> (String, String) {
    let (organization, email) = match row {
        Ok(row) => (row.organization.as_str(), row.email.as_str()),
        Err(invalid) => (invalid.organization.as_str(), invalid.email.as_str()),
    };
    (
        organization.trim_matches(' ').to_owned(),
        email.trim_matches(' ').to_ascii_lowercase(),
    )
}

/// What the membership ledger holds: an organization invitation, or a membership created
/// directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipKind {
    /// `POST /organizations/{id}/invitations` (or its bulk form): `clerk_id` is `orginv_...`.
    Invitation,
    /// `POST /organizations/{id}/memberships`: `clerk_id` is the member's user id.
    Membership,
}

impl MembershipKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipKind::Invitation => "invitation",
            MembershipKind::Membership => "membership",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [MembershipKind::Invitation, MembershipKind::Membership]
            .into_iter()
            .find(|kind| kind.as_str() == s)
    }
}

/// The states of `invite_sync_membership_ledger.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipState {
    /// A create carrying it is in flight, or its outcome is unknown.
    Sending,
    /// An invitation Clerk holds as pending.
    Pending,
    /// An invitation accepted: its person is a member.
    Accepted,
    /// An invitation revoked (by invite-sync or in Clerk).
    Revoked,
    /// An invitation that expired unanswered.
    Expired,
    /// Clerk refused the create.
    Failed,
    /// A membership Clerk holds.
    Member,
    /// A membership removed (by invite-sync or in Clerk).
    Removed,
}

impl MembershipState {
    pub const ALL: [MembershipState; 8] = [
        MembershipState::Sending,
        MembershipState::Pending,
        MembershipState::Accepted,
        MembershipState::Revoked,
        MembershipState::Expired,
        MembershipState::Failed,
        MembershipState::Member,
        MembershipState::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MembershipState::Sending => "sending",
            MembershipState::Pending => "pending",
            MembershipState::Accepted => "accepted",
            MembershipState::Revoked => "revoked",
            MembershipState::Expired => "expired",
            MembershipState::Failed => "failed",
            MembershipState::Member => "member",
            MembershipState::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the entry still says something about the person's place in the organization:
    /// a create in flight or refused, an invitation pending or accepted, a membership. A
    /// revoked or expired invitation and a removed membership are history.
    pub fn is_live(self) -> bool {
        !matches!(
            self,
            MembershipState::Revoked | MembershipState::Expired | MembershipState::Removed
        )
    }
}

/// What invite-sync knows of one organization invitation or membership it created, is
/// creating, or has seen.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipLedgerEntry {
    pub id: i64,
    pub email: Email,
    pub organization_id: String,
    pub kind: MembershipKind,
    /// `orginv_...` for an invitation, the user id for a membership; `None` while sending.
    pub clerk_id: Option<String>,
    /// The member's user id, once known (a membership's, or whoever accepted the invitation).
    pub user_id: Option<String>,
    pub role: String,
    pub state: MembershipState,
    pub owned: bool,
    pub row_digest: Option<String>,
    pub attempts: i32,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub terminal: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The create call that carried it (`invite_sync_clerk_calls.id`), for an invitation.
    pub call_id: Option<i64>,
    pub run_id: Option<uuid::Uuid>,
    /// When its create was sent (the database's clock).
    pub sent_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An organization as invite-sync last read it from Clerk.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownOrganization {
    pub organization_id: String,
    pub slug: Option<String>,
    pub name: String,
    /// Members and pending invitations together may not exceed it; 0 means unlimited.
    pub max_allowed_memberships: u32,
    pub members_count: u32,
    pub pending_invitations_count: u32,
    /// When Clerk last refused a create because the organization was full.
    pub full_refused_at: Option<DateTime<Utc>>,
    pub seen_at: DateTime<Utc>,
}

impl KnownOrganization {
    /// How many more invitations or memberships it takes: `None` when unlimited.
    pub fn room(&self) -> Option<u32> {
        (self.max_allowed_memberships > 0).then(|| {
            self.max_allowed_memberships
                .saturating_sub(self.members_count)
                .saturating_sub(self.pending_invitations_count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn role_keys_are_org_then_lower_case_letters_digits_and_underscores() {
        for good in ["org:admin", "org:member", "org:billing_2", " org:x "] {
            assert_eq!(check_role(good), Ok(good.trim().to_owned()), "{good}");
        }
        for (bad, reason) in [
            ("admin", "org: followed"),
            ("org:", "names no role"),
            ("org:Admin", "write \"org:admin\""),
            ("org:bill-ing", "only lower-case"),
            ("org:a b", "only lower-case"),
            ("ORG:admin", "org: followed"),
        ] {
            let error = check_role(bad).expect_err(bad);
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }

    #[test]
    fn a_row_with_an_address_and_an_organization_is_a_membership_with_the_default_role() {
        let row = MembershipRow::new(" Ann@Example.com ", " acme ");
        let membership = DesiredMembership::from_row(&row).unwrap();
        assert_eq!(membership.email.as_str(), "ann@example.com");
        assert_eq!(membership.organization, "acme");
        assert_eq!(membership.role, None);
        assert_eq!(membership.role_or("org:member"), "org:member");
        let blank_role = MembershipRow {
            role: Some("  ".to_owned()),
            ..row.clone()
        };
        assert_eq!(DesiredMembership::from_row(&blank_role).unwrap().role, None);
        let admin = MembershipRow {
            role: Some("org:admin".to_owned()),
            ..row
        };
        assert_eq!(
            DesiredMembership::from_row(&admin)
                .unwrap()
                .role_or("org:member"),
            "org:admin"
        );
    }

    #[test]
    fn each_kind_of_bad_row_is_invalid_with_its_reason() {
        let base = || MembershipRow::new("a@example.com", "org_1");
        let cases: Vec<(MembershipRow, &str)> = vec![
            (MembershipRow::new("not an email", "acme"), "whitespace"),
            (
                MembershipRow::new("a@example.com", "  "),
                "organization is empty",
            ),
            (
                MembershipRow::new("a@example.com", "ac me"),
                "without whitespace",
            ),
            (
                MembershipRow::new("a@example.com", "a/b"),
                "without whitespace or /",
            ),
            (
                MembershipRow {
                    role: Some("admin".into()),
                    ..base()
                },
                "role \"admin\" must be an organization role key",
            ),
            (
                MembershipRow {
                    private_metadata: json!([1]),
                    ..base()
                },
                "private_metadata must be a JSON object",
            ),
            (
                MembershipRow {
                    public_metadata: json!({"blob": "x".repeat(9000)}),
                    ..base()
                },
                "public_metadata is",
            ),
            (
                MembershipRow {
                    private_metadata: json!({"k\0": 1}),
                    ..base()
                },
                "private_metadata contains a NUL",
            ),
            (
                MembershipRow {
                    redirect_url: Some("ftp://x.example".into()),
                    ..base()
                },
                "http or https",
            ),
            (
                MembershipRow {
                    expires_in_days: Some(0),
                    ..base()
                },
                "between 1 and 365",
            ),
            (
                MembershipRow {
                    expires_in_days: Some(-5),
                    ..base()
                },
                "between 1 and 365",
            ),
            (
                MembershipRow {
                    source: Some("h\0r".into()),
                    ..base()
                },
                "source contains a NUL",
            ),
        ];
        for (row, reason) in cases {
            let invalid = DesiredMembership::from_row(&row).expect_err(reason);
            assert!(
                invalid.reason.contains(reason),
                "{reason}: {}",
                invalid.reason
            );
            assert_eq!(invalid.organization, row.organization);
        }
        let bad_role = MembershipRow {
            role: Some("org:Admin".into()),
            ..MembershipRow::new("B@example.com", "acme")
        };
        let invalid = DesiredMembership::from_row(&bad_role).unwrap_err();
        assert_eq!(
            invalid.parsed.map(|e| e.to_string()).as_deref(),
            Some("b@example.com")
        );
    }

    #[test]
    fn the_digest_changes_with_what_the_row_asks_and_only_then() {
        let row = MembershipRow::new("a@example.com", "acme");
        let a = DesiredMembership::from_row(&row).unwrap();
        let same = DesiredMembership::from_row(&MembershipRow {
            source: Some("csv".into()),
            ..MembershipRow::new("A@example.com ", " acme")
        })
        .unwrap();
        assert_eq!(a.digest, same.digest);
        for changed in [
            MembershipRow {
                role: Some("org:admin".into()),
                ..row.clone()
            },
            MembershipRow {
                private_metadata: json!({"t": 1}),
                ..row.clone()
            },
            MembershipRow::new("a@example.com", "other"),
        ] {
            assert_ne!(
                a.digest,
                DesiredMembership::from_row(&changed).unwrap().digest
            );
        }
    }

    #[test]
    fn states_and_kinds_read_back_what_they_write() {
        for state in MembershipState::ALL {
            assert_eq!(MembershipState::parse(state.as_str()), Some(state));
        }
        assert_eq!(MembershipState::parse("gone"), None);
        for kind in [MembershipKind::Invitation, MembershipKind::Membership] {
            assert_eq!(MembershipKind::parse(kind.as_str()), Some(kind));
        }
        assert!(MembershipState::Member.is_live() && MembershipState::Sending.is_live());
        assert!(!MembershipState::Removed.is_live() && !MembershipState::Expired.is_live());
    }

    #[test]
    fn an_organizations_room_counts_members_and_pending_invitations_and_zero_is_unlimited() {
        let mut org = KnownOrganization {
            organization_id: "org_1".into(),
            slug: Some("acme".into()),
            name: "Acme".into(),
            max_allowed_memberships: 10,
            members_count: 6,
            pending_invitations_count: 3,
            full_refused_at: None,
            seen_at: Utc::now(),
        };
        assert_eq!(org.room(), Some(1));
        org.pending_invitations_count = 7;
        assert_eq!(org.room(), Some(0));
        org.max_allowed_memberships = 0;
        assert_eq!(org.room(), None);
    }
}
