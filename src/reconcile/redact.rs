//! How people are written into logs: addresses as they are or as a stable hash
//! (`log.redact_emails`), and Clerk's messages scrubbed of them.

use crate::domain::Email;

/// Writes addresses into logs as they are, or as a stable hash when `log.redact_emails` is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reporter {
    pub redact_emails: bool,
}

impl Reporter {
    pub fn email(&self, email: &str) -> String {
        if !self.redact_emails {
            return email.to_owned();
        }
        match Email::parse(email) {
            Ok(parsed) => parsed.redacted(),
            Err(_) => Email::redacted_text(email),
        }
    }

    /// `text` with every email address in it redacted, when addresses are; Clerk's error
    /// messages name the addresses they refuse.
    pub fn scrub(&self, text: &str) -> String {
        if !self.redact_emails {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('@') {
            let is_part = |c: char| !c.is_whitespace() && !",;:()[]<>\"'".contains(c);
            let start = rest[..at]
                .char_indices()
                .rev()
                .find(|(_, c)| !is_part(*c))
                .map_or(0, |(i, c)| i + c.len_utf8());
            let end = rest[at..]
                .char_indices()
                .find(|(_, c)| !is_part(*c))
                .map_or(rest.len(), |(i, _)| at + i);
            let candidate = rest[start..end].trim_end_matches('.');
            out.push_str(&rest[..start]);
            match Email::parse(candidate) {
                Ok(email) => {
                    out.push_str(&email.redacted());
                    out.push_str(&rest[start + candidate.len()..end]);
                }
                Err(_) => out.push_str(&rest[start..end]),
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reporter_redacts_an_address_to_a_stable_hash() {
        let reporter = Reporter {
            redact_emails: true,
        };
        let shown = reporter.email("Ann@x.com");
        assert_eq!(shown, reporter.email("Ann@x.com"));
        assert_eq!(shown, reporter.email("ann@X.COM"));
        assert_eq!(shown, reporter.email(" ann@x.com "));
        assert_ne!(shown, reporter.email("bob@x.com"));
        assert!(!shown.to_lowercase().contains("ann"), "{shown}");
        assert!(!shown.contains("x.com"), "{shown}");
        assert!(!reporter.email("not an address").contains("not an address"));
        let plain = Reporter::default();
        assert_eq!(plain.email("ann@x.com"), "ann@x.com");
    }

    #[test]
    fn two_unparsable_addresses_of_one_length_are_redacted_apart_in_the_form_of_an_address() {
        let reporter = Reporter {
            redact_emails: true,
        };
        let (one, other) = ("ann@@x.com", "bob@@y.org");
        assert_eq!(one.len(), other.len());
        assert!(Email::parse(one).is_err() && Email::parse(other).is_err());
        let shown = reporter.email(one);
        assert_ne!(
            shown,
            reporter.email(other),
            "two rows look like one in the log"
        );
        assert_eq!(
            shown,
            reporter.email(one),
            "one row looks like two in the log"
        );
        assert!(!shown.contains("ann"), "{shown}");
        let hex = shown.strip_prefix("email-").unwrap_or_default();
        assert_eq!(hex.len(), 12, "{shown}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{shown}");
        assert_ne!(shown, reporter.email("ann@x.com"));
    }

    #[test]
    fn scrubbing_hides_every_address_in_a_message_and_keeps_the_rest() {
        let reporter = Reporter {
            redact_emails: true,
        };
        let text = "duplicate_record (There are already pending invitations for the following email addresses: Ann@X.com, bob@y.org.)";
        let scrubbed = reporter.scrub(text);
        assert!(!scrubbed.to_lowercase().contains("ann@x.com"), "{scrubbed}");
        assert!(!scrubbed.contains("bob@y.org"), "{scrubbed}");
        assert!(scrubbed.contains(&Email::parse("ann@x.com").unwrap().redacted()));
        assert!(scrubbed.starts_with("duplicate_record (There are already"));
        assert!(scrubbed.ends_with(".)"), "{scrubbed}");
        assert_eq!(reporter.scrub("no address @ all"), "no address @ all");
        let plain = Reporter {
            redact_emails: false,
        };
        assert_eq!(plain.scrub(text), text);
    }
}
