use std::fmt;

/// An email address, normalised once: surrounding whitespace trimmed, lower-cased. Two
/// spellings of one address are one `Email`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the email is empty")]
    Empty,
    #[error("the email is longer than 254 characters")]
    TooLong,
    #[error("the email must contain exactly one @")]
    At,
    #[error("the email has nothing before the @")]
    NoLocalPart,
    #[error("the email's domain must contain a dot and no empty label")]
    Domain,
    #[error("the email contains whitespace or a control character")]
    Whitespace,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Whitespace);
        }
        let (local, domain) = match trimmed.split_once('@') {
            Some((local, domain)) if !domain.contains('@') => (local, domain),
            _ => return Err(EmailError::At),
        };
        if local.is_empty() {
            return Err(EmailError::NoLocalPart);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
            return Err(EmailError::Domain);
        }
        Ok(Email(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }

    /// Whether a protection pattern covers this address: an address, or `@domain`.
    pub fn matches_pattern(&self, pattern: &str) -> bool {
        let pattern = pattern.trim().to_lowercase();
        match pattern.strip_prefix('@') {
            Some(domain) => self.domain() == domain,
            None => self.0 == pattern,
        }
    }

    /// A stable, short stand-in for the address in logs when emails are redacted.
    pub fn redacted(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("email-{hex}")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_normalise_to_one_email() {
        let a = Email::parse("  Ann.Lee@Example.COM ").unwrap();
        let b = Email::parse("ann.lee@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "ann.lee@example.com");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn malformed_addresses_are_refused_with_their_reason() {
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        assert_eq!(Email::parse("ann"), Err(EmailError::At));
        assert_eq!(Email::parse("a@b@c.com"), Err(EmailError::At));
        assert_eq!(Email::parse("@example.com"), Err(EmailError::NoLocalPart));
        assert_eq!(Email::parse("ann@example"), Err(EmailError::Domain));
        assert_eq!(Email::parse("ann@example..com"), Err(EmailError::Domain));
        assert_eq!(
            Email::parse("ann lee@example.com"),
            Err(EmailError::Whitespace)
        );
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn protection_patterns_match_an_address_or_a_whole_domain() {
        let email = Email::parse("ceo@Corp.example").unwrap();
        assert!(email.matches_pattern("CEO@corp.example"));
        assert!(email.matches_pattern("@corp.example"));
        assert!(!email.matches_pattern("@example"));
        assert!(!email.matches_pattern("cfo@corp.example"));
    }

    #[test]
    fn the_redacted_form_is_stable_and_hides_the_address() {
        let email = Email::parse("ann@example.com").unwrap();
        assert_eq!(
            email.redacted(),
            Email::parse("ANN@example.com").unwrap().redacted()
        );
        assert!(!email.redacted().contains("ann"));
    }
}
