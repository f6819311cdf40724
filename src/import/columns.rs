//! What the header's columns mean, and turning one record's cells into a roster row.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::domain::{DesiredRow, Email};
use crate::store::roster::{self, Columns};

const META_PREFIX: &str = "meta.";

const KNOWN: &str = "email, redirect_url, not_before, expires_in_days, notify, template_slug, \
                     source, public_metadata, meta.KEY";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Email,
    RedirectUrl,
    NotBefore,
    ExpiresInDays,
    Notify,
    TemplateSlug,
    Source,
    PublicMetadata,
    Meta(String),
}

impl Column {
    fn from_header(raw: &str) -> Option<Column> {
        let name = raw.trim();
        if let Some(prefix) = name.get(..META_PREFIX.len()) {
            if prefix.eq_ignore_ascii_case(META_PREFIX) {
                return Some(Column::Meta(name[META_PREFIX.len()..].trim().to_owned()));
            }
        }
        Some(match name.to_ascii_lowercase().as_str() {
            "email" => Column::Email,
            "redirect_url" => Column::RedirectUrl,
            "not_before" => Column::NotBefore,
            "expires_in_days" => Column::ExpiresInDays,
            "notify" => Column::Notify,
            "template_slug" => Column::TemplateSlug,
            "source" => Column::Source,
            "public_metadata" => Column::PublicMetadata,
            _ => return None,
        })
    }

    fn name(&self) -> String {
        match self {
            Column::Email => "email".to_owned(),
            Column::RedirectUrl => "redirect_url".to_owned(),
            Column::NotBefore => "not_before".to_owned(),
            Column::ExpiresInDays => "expires_in_days".to_owned(),
            Column::Notify => "notify".to_owned(),
            Column::TemplateSlug => "template_slug".to_owned(),
            Column::Source => "source".to_owned(),
            Column::PublicMetadata => "public_metadata".to_owned(),
            Column::Meta(key) => format!("{META_PREFIX}{key}"),
        }
    }
}

/// The header, understood.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: Vec<Column>,
    email: usize,
    /// The roster columns the file sets. A column the file does not have is left as it is
    /// on rows that already exist; the file only speaks for the columns it names.
    pub present: Columns,
}

/// One record's outcome: the row when every cell is good, and the address whenever it
/// parses (a bad line still names a person, who must not be taken for absent).
#[derive(Debug)]
pub struct Parsed {
    pub email: Option<Email>,
    pub row: Result<DesiredRow, Vec<String>>,
}

impl Layout {
    /// Reads the header's names. The error says everything wrong with it at once.
    pub fn from_header(names: &[String]) -> Result<Layout, String> {
        let mut columns = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        let mut problems = Vec::new();
        for (index, raw) in names.iter().enumerate() {
            match Column::from_header(raw) {
                Some(Column::Meta(key)) if key.is_empty() => problems.push(format!(
                    "column {} ({raw:?}) names no metadata key",
                    index + 1
                )),
                Some(column) => {
                    if columns.contains(&column) {
                        problems.push(format!("column {} appears more than once", column.name()));
                    }
                    columns.push(column);
                }
                None => unknown.push(format!("{raw:?}")),
            }
        }
        if !unknown.is_empty() {
            problems.insert(
                0,
                format!(
                    "unknown column{} {}; the columns are {KNOWN}",
                    if unknown.len() == 1 { "" } else { "s" },
                    unknown.join(", ")
                ),
            );
        }
        let email = columns.iter().position(|c| *c == Column::Email);
        if email.is_none() {
            problems.insert(0, "the header has no email column".to_owned());
        }
        let has_meta = columns.iter().any(|c| matches!(c, Column::Meta(_)));
        if has_meta && columns.contains(&Column::PublicMetadata) {
            problems.push(
                "the header has both public_metadata and meta.* columns; use one or the other"
                    .to_owned(),
            );
        }
        match email {
            Some(email) if problems.is_empty() => {
                let present = Columns {
                    public_metadata: has_meta || columns.contains(&Column::PublicMetadata),
                    redirect_url: columns.contains(&Column::RedirectUrl),
                    notify: columns.contains(&Column::Notify),
                    expires_in_days: columns.contains(&Column::ExpiresInDays),
                    template_slug: columns.contains(&Column::TemplateSlug),
                    not_before: columns.contains(&Column::NotBefore),
                    source: columns.contains(&Column::Source),
                };
                Ok(Layout {
                    columns,
                    email,
                    present,
                })
            }
            _ => Err(format!("the header is not usable: {}", problems.join("; "))),
        }
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The address in a record whose cells cannot all be read, when that one can.
    pub fn email_of(&self, cells: &[Option<&str>]) -> Option<Email> {
        cells
            .get(self.email)
            .copied()
            .flatten()
            .and_then(|raw| Email::parse_invitable(raw).ok())
    }

    /// Turns a record's cells (one per column) into a row; cells are trimmed and an empty
    /// cell means NULL. What the roster accepts is decided afterwards by
    /// `DesiredInvitee::from_row`; this only reads the text.
    pub fn parse(&self, cells: &[&str]) -> Parsed {
        let mut problems = Vec::new();
        let mut row = DesiredRow::new(String::new());
        let mut metadata = Map::new();
        let mut email = None;
        for (column, cell) in self.columns.iter().zip(cells) {
            let value = cell.trim();
            if value.is_empty() && *column != Column::Email {
                continue;
            }
            match column {
                // The email rule trims spaces only, as the table does: other whitespace
                // around an address makes the line bad rather than silently another person.
                Column::Email => match Email::parse_invitable(cell) {
                    Ok(parsed) => {
                        row.email = parsed.as_str().to_owned();
                        email = Some(parsed);
                    }
                    Err(e) if value.is_empty() => problems.push(e.to_string()),
                    Err(e) => problems.push(format!("email {value:?}: {e}")),
                },
                Column::RedirectUrl => row.redirect_url = Some(value.to_owned()),
                Column::NotBefore => match parse_time(value) {
                    Some(time) => row.not_before = Some(time),
                    None => problems.push(format!(
                        "not_before {value:?} is not an RFC 3339 time (2026-01-31T09:00:00Z) \
                         or a date (2026-01-31)"
                    )),
                },
                Column::ExpiresInDays => match value.parse::<i32>() {
                    Ok(days) => row.expires_in_days = Some(days),
                    Err(_) => problems.push(format!(
                        "expires_in_days {value:?} is not a whole number between 1 and 365"
                    )),
                },
                Column::Notify => match parse_flag(value) {
                    Some(flag) => row.notify = Some(flag),
                    None => problems.push(format!(
                        "notify {value:?} must be true, false, yes, no, 1 or 0"
                    )),
                },
                Column::TemplateSlug => row.template_slug = Some(value.to_owned()),
                Column::Source if roster::names_scim(value) => problems.push(format!(
                    "source {value:?} is reserved for the rows of SCIM users, which are \
                     written through the identity provider, not imported"
                )),
                Column::Source => row.source = Some(value.to_owned()),
                Column::PublicMetadata => match serde_json::from_str::<Value>(value) {
                    Ok(json) => row.public_metadata = json,
                    Err(e) => problems.push(format!("public_metadata is not valid JSON: {e}")),
                },
                Column::Meta(key) => {
                    metadata.insert(key.clone(), typed(value));
                }
            }
        }
        if !metadata.is_empty() {
            row.public_metadata = Value::Object(metadata);
        }
        Parsed {
            email,
            row: if problems.is_empty() {
                Ok(row)
            } else {
                Err(problems)
            },
        }
    }
}

/// RFC 3339, or a bare date meaning midnight UTC.
pub(super) fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Some(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

pub(super) fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A `meta.KEY` cell: a number or a boolean when it is exactly one, else the text. A number
/// is taken only when it reads back unchanged, so `02139`, `1e3` or a 25-digit id keep the
/// spelling the file gave them.
pub(super) fn typed(value: &str) -> Value {
    // Spreadsheets write booleans as TRUE and FALSE.
    if value.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if value.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if let Ok(Value::Number(number)) = serde_json::from_str::<Value>(value) {
        if number.to_string() == value {
            return Value::Number(number);
        }
    }
    Value::String(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layout(names: &[&str]) -> Result<Layout, String> {
        Layout::from_header(&names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn header_names_are_matched_loosely_and_problems_reported_together() {
        let ok = layout(&[" Email ", "NOTIFY", "Meta.Team"]).unwrap();
        assert!(ok.present.notify && ok.present.public_metadata && !ok.present.source);
        let error = layout(&["mail", "notify", "dept"]).unwrap_err();
        assert!(error.contains("no email column"), "{error}");
        assert!(
            error.contains(r#"unknown columns "mail", "dept""#),
            "{error}"
        );
        let error = layout(&["email", "public_metadata", "meta.team"]).unwrap_err();
        assert!(error.contains("both public_metadata and meta.*"), "{error}");
        let error = layout(&["email", "Email"]).unwrap_err();
        assert!(error.contains("email appears more than once"), "{error}");
        let error = layout(&["email", "meta."]).unwrap_err();
        assert!(error.contains("names no metadata key"), "{error}");
    }

    #[test]
    fn meta_cells_are_typed_only_when_they_read_back_unchanged() {
        assert_eq!(typed("42"), json!(42));
        assert_eq!(typed("-1.5"), json!(-1.5));
        assert_eq!(typed("true"), json!(true));
        assert_eq!(typed("false"), json!(false));
        assert_eq!(typed("02139"), json!("02139"));
        assert_eq!(typed("1e3"), json!("1e3"));
        assert_eq!(
            typed("12345678901234567890123"),
            json!("12345678901234567890123")
        );
        assert_eq!(typed("TRUE"), json!(true));
        assert_eq!(typed("yes"), json!("yes"));
        assert_eq!(typed("ops"), json!("ops"));
    }

    #[test]
    fn times_and_flags_have_their_spellings() {
        assert_eq!(
            parse_time("2026-03-01"),
            Some("2026-03-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_time("2026-03-01T10:00:00+02:00"),
            Some("2026-03-01T08:00:00Z".parse().unwrap())
        );
        assert_eq!(parse_time("01/03/2026"), None);
        for (text, flag) in [
            ("YES", true),
            ("1", true),
            ("True", true),
            ("no", false),
            ("0", false),
        ] {
            assert_eq!(parse_flag(text), Some(flag), "{text}");
        }
        assert_eq!(parse_flag("maybe"), None);
    }

    #[test]
    fn every_bad_cell_of_a_line_is_reported_and_the_address_still_known() {
        let layout = layout(&["email", "notify", "expires_in_days", "not_before"]).unwrap();
        let parsed = layout.parse(&["Ann@Example.com", "maybe", "ten", "soon"]);
        assert_eq!(parsed.email.unwrap().as_str(), "ann@example.com");
        let problems = parsed.row.unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        let parsed = layout.parse(&["", "", "", ""]);
        assert_eq!(
            parsed.row.unwrap_err(),
            vec!["the email is empty".to_owned()]
        );
    }
}
