use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value};

use super::{CreateInvitation, Email, TemplateSlug};

/// Clerk keeps at most 8 KiB of public metadata.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// A roster row as it is stored: nothing checked yet.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DesiredRow {
    pub email: String,
    pub public_metadata: Value,
    pub redirect_url: Option<String>,
    pub notify: Option<bool>,
    pub expires_in_days: Option<i32>,
    pub template_slug: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub source: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl DesiredRow {
    pub fn new(email: impl Into<String>) -> Self {
        DesiredRow {
            email: email.into(),
            public_metadata: Value::Object(Map::new()),
            redirect_url: None,
            notify: None,
            expires_in_days: None,
            template_slug: None,
            not_before: None,
            source: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// What `sync.*` supplies where a row is silent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowDefaults {
    pub notify: bool,
    pub ignore_existing: bool,
    pub expires_in_days: Option<u32>,
    pub redirect_url: Option<String>,
    pub template_slug: Option<TemplateSlug>,
}

/// A roster row that can be sent to Clerk.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredInvitee {
    pub email: Email,
    /// The create request this row turns into, defaults applied.
    pub request: CreateInvitation,
    pub not_before: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A roster row that can never succeed, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    pub email: String,
    /// The address, when it parses (another field is at fault): it still counts as desired.
    pub parsed: Option<Email>,
    pub reason: String,
}

/// The key the roster is read in the order of: its address as written, spaces trimmed and
/// ASCII letters lower-cased, as PostgreSQL's `lower(btrim(email) COLLATE "C")` makes it
/// (the roster reader orders rows by that expression and compares them by this key, in byte
/// order). Rows of one address come together: an address Clerk would take is ASCII, so two
/// spellings of one such address always share this key.
pub fn roster_key(row: &Result<DesiredRow, InvalidRow>) -> String {
    let email = match row {
        Ok(row) => &row.email,
        Err(invalid) => &invalid.email,
    };
    email.trim_matches(' ').to_ascii_lowercase()
}

/// The address a roster row names, when it can be read: the row's, or an unreadable row's
/// parsed one.
pub fn row_address(row: &Result<DesiredRow, InvalidRow>) -> Option<Email> {
    match row {
        Ok(row) => Email::parse(&row.email).ok(),
        Err(invalid) => invalid.parsed.clone(),
    }
}

/// Why Clerk could not take a row whose address and metadata are readable: a NUL in its
/// text, a `not_before` outside the years 1 to 9999, or metadata larger than Clerk keeps.
fn unsendable(row: &DesiredRow) -> Option<String> {
    if holds_nul(&row.public_metadata) {
        return Some(nul_reason("public_metadata"));
    }
    for (name, value) in [
        ("redirect_url", &row.redirect_url),
        ("template_slug", &row.template_slug),
        ("source", &row.source),
    ] {
        if value.as_deref().is_some_and(|text| text.contains('\0')) {
            return Some(nul_reason(name));
        }
    }
    if let Some(not_before) = row.not_before {
        if !(1..=9999).contains(&not_before.year()) {
            return Some(format!(
                "not_before {not_before} is outside the years 1 to 9999"
            ));
        }
    }
    let size = json_len(&row.public_metadata);
    (size > MAX_METADATA_BYTES).then(|| {
        format!("public_metadata is {size} bytes; Clerk keeps at most {MAX_METADATA_BYTES}")
    })
}

/// The length of a value's compact JSON text, counted as it is written rather than held.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, nor can a `Value` fail to serialize.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl DesiredInvitee {
    /// Checks a row and applies the defaults.
    pub fn from_row(row: &DesiredRow, defaults: &RowDefaults) -> Result<Self, InvalidRow> {
        let invalid = |parsed: Option<Email>, reason: String| InvalidRow {
            email: row.email.clone(),
            parsed,
            reason,
        };
        let email = Email::parse_invitable(&row.email)
            .map_err(|e| invalid(Email::named_by_row(&row.email, &e), e.to_string()))?;
        let Value::Object(metadata) = &row.public_metadata else {
            return Err(invalid(
                Some(email),
                "public_metadata must be a JSON object".to_owned(),
            ));
        };
        if let Some(reason) = unsendable(row) {
            return Err(invalid(Some(email), reason));
        }
        let redirect_url = match &row.redirect_url {
            Some(url) => Some(check_redirect(url).map_err(|r| invalid(Some(email.clone()), r))?),
            None => defaults.redirect_url.clone(),
        };
        let expires_in_days = match row.expires_in_days {
            Some(days) if !(1..=365).contains(&days) => {
                return Err(invalid(
                    Some(email),
                    format!("expires_in_days is {days}; it must be between 1 and 365"),
                ))
            }
            Some(days) => Some(days as u32),
            None => defaults.expires_in_days,
        };
        let template_slug = match row.template_slug.as_deref() {
            Some(slug) => Some(TemplateSlug::parse(slug).ok_or_else(|| {
                invalid(
                    Some(email.clone()),
                    format!("template_slug {slug:?} is not invitation or waitlist_invitation"),
                )
            })?),
            None => defaults.template_slug,
        };
        let request = CreateInvitation {
            email_address: email.as_str().to_owned(),
            public_metadata: Some(metadata.clone()),
            redirect_url,
            notify: Some(row.notify.unwrap_or(defaults.notify)),
            ignore_existing: Some(defaults.ignore_existing),
            expires_in_days,
            template_slug,
        };
        Ok(DesiredInvitee {
            email,
            request,
            not_before: row.not_before,
            created_at: row.created_at,
        })
    }

    /// A digest of what the row asks Clerk for: when it changes, a held row is retried.
    /// Computed when asked (a ledger entry to compare with, a create to record), not for
    /// every row read.
    pub fn digest(&self) -> String {
        digest(&self.request)
    }

    pub fn metadata(&self) -> Map<String, Value> {
        self.request.public_metadata.clone().unwrap_or_default()
    }
}

/// PostgreSQL's text and jsonb cannot hold U+0000, so such a value can never be stored.
pub(super) fn nul_reason(field: &str) -> String {
    format!("{field} contains a NUL character (U+0000), which cannot be stored")
}

pub(super) fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

pub(super) fn check_redirect(raw: &str) -> Result<String, String> {
    match url::Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(raw.trim().to_owned())
        }
        Ok(_) => Err(format!("redirect_url {raw:?} must be an http or https URL")),
        Err(e) => Err(format!("redirect_url {raw:?} is not a URL: {e}")),
    }
}

/// SHA-256 of the request's canonical JSON (object keys sorted), without `ignore_existing`,
/// which is how invite-sync sends rather than what the row asks for.
fn digest(request: &CreateInvitation) -> String {
    let mut canonical = request.clone();
    canonical.ignore_existing = None;
    sha256_hex(&serde_json::to_vec(&canonical).unwrap_or_default())
}

/// SHA-256 of `bytes`, in lower-case hex.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(bytes) {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> RowDefaults {
        RowDefaults {
            notify: true,
            ignore_existing: true,
            expires_in_days: Some(14),
            redirect_url: Some("https://app.example.com/in".to_owned()),
            template_slug: None,
        }
    }

    #[test]
    fn a_row_with_just_an_email_takes_the_defaults() {
        let invitee =
            DesiredInvitee::from_row(&DesiredRow::new(" Ann@Example.com"), &defaults()).unwrap();
        assert_eq!(invitee.email.as_str(), "ann@example.com");
        assert_eq!(invitee.request.email_address, "ann@example.com");
        assert_eq!(invitee.request.notify, Some(true));
        assert_eq!(invitee.request.ignore_existing, Some(true));
        assert_eq!(invitee.request.expires_in_days, Some(14));
        assert_eq!(
            invitee.request.redirect_url.as_deref(),
            Some("https://app.example.com/in")
        );
        assert_eq!(invitee.request.public_metadata, Some(Map::new()));
    }

    #[test]
    fn a_row_overrides_the_defaults() {
        let mut row = DesiredRow::new("bo@example.com");
        row.notify = Some(false);
        row.expires_in_days = Some(3);
        row.template_slug = Some("waitlist_invitation".to_owned());
        row.redirect_url = Some("https://other.example.com/".to_owned());
        row.public_metadata = json!({"team": "ops"});
        let invitee = DesiredInvitee::from_row(&row, &defaults()).unwrap();
        assert_eq!(invitee.request.notify, Some(false));
        assert_eq!(invitee.request.expires_in_days, Some(3));
        assert_eq!(
            invitee.request.template_slug,
            Some(TemplateSlug::WaitlistInvitation)
        );
        assert_eq!(
            invitee.request.redirect_url.as_deref(),
            Some("https://other.example.com/")
        );
        assert_eq!(invitee.metadata().get("team"), Some(&json!("ops")));
    }

    #[test]
    fn each_kind_of_bad_row_is_invalid_with_its_reason() {
        let cases: Vec<(DesiredRow, &str)> = vec![
            (DesiredRow::new("not an email"), "whitespace"),
            (
                DesiredRow {
                    public_metadata: json!([1, 2]),
                    ..DesiredRow::new("a@example.com")
                },
                "JSON object",
            ),
            (
                DesiredRow {
                    public_metadata: json!({"blob": "x".repeat(9000)}),
                    ..DesiredRow::new("a@example.com")
                },
                "at most",
            ),
            (
                DesiredRow {
                    redirect_url: Some("ftp://x.example".into()),
                    ..DesiredRow::new("a@example.com")
                },
                "http or https",
            ),
            (
                DesiredRow {
                    redirect_url: Some("not a url".into()),
                    ..DesiredRow::new("a@example.com")
                },
                "not a URL",
            ),
            (
                DesiredRow {
                    expires_in_days: Some(0),
                    ..DesiredRow::new("a@example.com")
                },
                "between 1 and 365",
            ),
            (
                DesiredRow {
                    expires_in_days: Some(366),
                    ..DesiredRow::new("a@example.com")
                },
                "between 1 and 365",
            ),
            (
                DesiredRow {
                    template_slug: Some("welcome".into()),
                    ..DesiredRow::new("a@example.com")
                },
                "template_slug",
            ),
            (
                DesiredRow {
                    source: Some("h\0r".into()),
                    ..DesiredRow::new("a@example.com")
                },
                "source contains a NUL",
            ),
            (
                DesiredRow {
                    redirect_url: Some("https://x.example/\0".into()),
                    ..DesiredRow::new("a@example.com")
                },
                "redirect_url contains a NUL",
            ),
            (
                DesiredRow {
                    public_metadata: json!({"a": [{"b\0": 1}]}),
                    ..DesiredRow::new("a@example.com")
                },
                "public_metadata contains a NUL",
            ),
            (
                DesiredRow {
                    not_before: Some(
                        chrono::TimeZone::with_ymd_and_hms(&Utc, 10000, 1, 1, 0, 0, 0).unwrap(),
                    ),
                    ..DesiredRow::new("a@example.com")
                },
                "years 1 to 9999",
            ),
        ];
        for (row, reason) in cases {
            let invalid = DesiredInvitee::from_row(&row, &defaults()).expect_err("invalid");
            assert!(
                invalid.reason.contains(reason),
                "{:?}: {}",
                row.email,
                invalid.reason
            );
        }
        let bad_field = DesiredRow {
            expires_in_days: Some(0),
            ..DesiredRow::new("A@example.com")
        };
        let invalid = DesiredInvitee::from_row(&bad_field, &defaults()).unwrap_err();
        assert_eq!(
            invalid.parsed.map(|e| e.to_string()).as_deref(),
            Some("a@example.com")
        );
    }

    #[test]
    fn the_digest_changes_with_what_the_row_asks_and_only_then() {
        let a = DesiredInvitee::from_row(&DesiredRow::new("a@example.com"), &defaults()).unwrap();
        let same = DesiredInvitee::from_row(
            &DesiredRow {
                source: Some("csv".into()),
                ..DesiredRow::new("A@example.com ")
            },
            &defaults(),
        )
        .unwrap();
        assert_eq!(a.digest(), same.digest());
        let changed = DesiredInvitee::from_row(
            &DesiredRow {
                public_metadata: json!({"t": 1}),
                ..DesiredRow::new("a@example.com")
            },
            &defaults(),
        )
        .unwrap();
        assert_ne!(a.digest(), changed.digest());
    }
}
