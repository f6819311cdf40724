use std::fmt;

/// An email address, normalised once: surrounding whitespace trimmed, lower-cased. Two
/// spellings of one address are one `Email`.
///
/// [`Email::parse`] recognises an address as Clerk, the ledger or a Clerk webhook holds it;
/// [`Email::parse_invitable`] is the stricter rule a roster row's address must meet.
#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Clone for Email {
    fn clone(&self) -> Self {
        Email(self.0.clone())
    }

    /// Reuses this address's buffer: a planner noting the last address of a million rows
    /// allocates once.
    fn clone_from(&mut self, source: &Self) {
        self.0.clone_from(&source.0);
    }
}

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
    #[error("the part of the email before the @ is longer than 64 characters")]
    LocalTooLong,
    #[error(
        "the part of the email before the @ may hold letters, digits and !#$%&'*+/=?^_`{{|}}~- \
         and dots, but no dot first, last or twice in a row"
    )]
    LocalPart,
    #[error(
        "the email's domain must be a host name with a dot: labels of letters, digits and \
         hyphens (none first or last, at most 63 each), no IP address"
    )]
    Domain,
    #[error(
        "the email contains whitespace or a control character (only spaces around it are trimmed)"
    )]
    Whitespace,
    #[error("the email must be ASCII (write an internationalised domain in its xn-- form)")]
    NotAscii,
}

/// Characters a dot-atom local part may hold besides letters, digits and dots (RFC 5322).
const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

impl Email {
    /// Recognises an address invite-sync did not take from the roster (Clerk's invitations,
    /// the ledger, a Clerk webhook): one `@`, a dotted domain, no inner whitespace. An address
    /// the roster would refuse (an IP literal, a non-ASCII one made in Clerk's dashboard) is
    /// still recognised here, so it never stops the reading of the rest.
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        if raw.is_ascii() {
            return Email::parse_ascii(raw);
        }
        Email::parse_general(raw)
    }

    /// [`Email::parse`] of any text.
    fn parse_general(raw: &str) -> Result<Email, EmailError> {
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

    /// [`Email::parse`] of an ASCII text, byte by byte: the same answer, without the
    /// character decoding and the allocations the general rule needs. Every roster, ledger
    /// and Clerk address of a cycle passes here.
    fn parse_ascii(raw: &str) -> Result<Email, EmailError> {
        // In ASCII, `char::is_whitespace` is a space or 0x09 to 0x0D.
        let blank = |b: &u8| *b == b' ' || (0x09..=0x0d).contains(b);
        let bytes = raw.as_bytes();
        let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
        let end = bytes
            .iter()
            .rposition(|b| !blank(b))
            .map_or(start, |i| i + 1);
        let trimmed = &raw[start..end];
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let Some(at) = ascii_at(trimmed)? else {
            return Err(EmailError::At);
        };
        if at == 0 {
            return Err(EmailError::NoLocalPart);
        }
        if !dotted(&trimmed[at + 1..]) {
            return Err(EmailError::Domain);
        }
        Ok(Email(trimmed.to_ascii_lowercase()))
    }

    /// The address of a roster row: one Clerk will take. Surrounding spaces are trimmed (what
    /// the roster table's `btrim` trims, so the table and the service see one address) and it
    /// is lower-cased; other whitespace anywhere (a tab, U+00A0) makes it invalid rather than
    /// trimmed. ASCII, a dot-atom local part of at most 64 characters, a host name of letters,
    /// digits and hyphens with a dot (no IP literal), at most 254 characters in all. What
    /// passes here normalises exactly as [`Email::parse`] does.
    pub fn parse_invitable(raw: &str) -> Result<Email, EmailError> {
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if !trimmed.is_ascii() {
            if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(EmailError::Whitespace);
            }
            return Err(EmailError::NotAscii);
        }
        let at = ascii_at(trimmed)?;
        if trimmed.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let Some(at) = at else {
            return Err(EmailError::At);
        };
        let (local, domain) = (&trimmed[..at], &trimmed[at + 1..]);
        check_local(local)?;
        check_domain(domain)?;
        Ok(Email(trimmed.to_ascii_lowercase()))
    }

    /// The person a roster row names although its address breaks [`Email::parse_invitable`]
    /// (the row is then invalid): still on the roster, so their invitation is not revoked.
    /// None when whitespace other than spaces is involved, for the table's key (`btrim`) sees
    /// another address than the one the service would read.
    pub fn named_by_row(raw: &str, error: &EmailError) -> Option<Email> {
        match error {
            EmailError::Whitespace => None,
            _ => Email::parse(raw).ok(),
        }
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
        Email::redacted_text(&self.0)
    }

    /// The stand-in, in the same form, for a text that may not be an address: a hash of the
    /// text itself, so that two texts never share one by their length alone.
    pub fn redacted_text(text: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("email-{hex}")
    }
}

/// Whether a domain has at least two labels and none empty.
fn dotted(domain: &str) -> bool {
    let mut dots = 0;
    let mut after_dot = true;
    for &b in domain.as_bytes() {
        if b == b'.' {
            if after_dot {
                return false;
            }
            dots += 1;
            after_dot = true;
        } else {
            after_dot = false;
        }
    }
    dots > 0 && !after_dot
}

/// Where the one `@` of an ASCII address is (`None` when there is none or more than one), once
/// it is known to hold no whitespace nor control character (in ASCII, `char::is_whitespace`
/// or `char::is_control`: below 0x21, or 0x7F).
fn ascii_at(text: &str) -> Result<Option<usize>, EmailError> {
    let mut at = None;
    let mut several = false;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if b <= b' ' || b == 0x7f {
            return Err(EmailError::Whitespace);
        }
        if b == b'@' {
            several |= at.is_some();
            at = at.or(Some(i));
        }
    }
    Ok(if several { None } else { at })
}

/// Whether a byte may stand in a dot-atom local part besides letters, digits and dots.
fn local_special(b: u8) -> bool {
    LOCAL_SPECIALS.as_bytes().contains(&b)
}

fn check_local(local: &str) -> Result<(), EmailError> {
    if local.is_empty() {
        return Err(EmailError::NoLocalPart);
    }
    if local.len() > 64 {
        return Err(EmailError::LocalTooLong);
    }
    // Atoms between the dots, none empty, of letters, digits and the specials.
    let mut after_dot = true;
    for &b in local.as_bytes() {
        if b == b'.' {
            if after_dot {
                return Err(EmailError::LocalPart);
            }
            after_dot = true;
        } else if b.is_ascii_alphanumeric() || local_special(b) {
            after_dot = false;
        } else {
            return Err(EmailError::LocalPart);
        }
    }
    if after_dot {
        Err(EmailError::LocalPart)
    } else {
        Ok(())
    }
}

fn check_domain(domain: &str) -> Result<(), EmailError> {
    let label_ok = |label: &[u8]| {
        (1..=63).contains(&label.len())
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.as_bytes().split(|&b| b == b'.') {
        if !label_ok(label) {
            return Err(EmailError::Domain);
        }
        labels += 1;
        last = label;
    }
    // A last label of digits alone would make 127.0.0.1 a host name.
    if labels >= 2 && !last.iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(EmailError::Domain)
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

    /// The rules as first written, character by character: what the byte-by-byte checks
    /// must agree with.
    fn check_local_by_chars(local: &str) -> Result<(), EmailError> {
        if local.is_empty() {
            return Err(EmailError::NoLocalPart);
        }
        if local.len() > 64 {
            return Err(EmailError::LocalTooLong);
        }
        let atoms_ok = local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        });
        if atoms_ok {
            Ok(())
        } else {
            Err(EmailError::LocalPart)
        }
    }

    fn check_domain_by_chars(domain: &str) -> Result<(), EmailError> {
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        let top_level_ok = labels
            .last()
            .is_some_and(|label| !label.chars().all(|c| c.is_ascii_digit()));
        if labels.len() >= 2 && labels.iter().all(label_ok) && top_level_ok {
            Ok(())
        } else {
            Err(EmailError::Domain)
        }
    }

    /// [`Email::parse_invitable`] as first written.
    fn parse_invitable_by_chars(raw: &str) -> Result<Email, EmailError> {
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Whitespace);
        }
        if !trimmed.is_ascii() {
            return Err(EmailError::NotAscii);
        }
        if trimmed.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = match trimmed.split_once('@') {
            Some((local, domain)) if !domain.contains('@') => (local, domain),
            _ => return Err(EmailError::At),
        };
        check_local_by_chars(local)?;
        check_domain_by_chars(domain)?;
        Ok(Email(trimmed.to_ascii_lowercase()))
    }

    proptest::proptest! {
        #[test]
        fn a_roster_address_is_judged_as_the_rules_by_characters_judge_it(
            raw in "[ \\t\\x0bé\u{a0}a-cA-C0-9.@_!-]{0,20}",
            long in proptest::bool::ANY,
        ) {
            let raw = if long { format!("{raw}{}", "a".repeat(250)) } else { raw };
            proptest::prop_assert_eq!(Email::parse_invitable(&raw), parse_invitable_by_chars(&raw));
        }

        #[test]
        fn the_local_part_and_domain_checks_agree_with_the_rules_by_characters(
            text in "[a-cA-C0-9.!#$%&'*+/=?^_`{|}~ @-]{0,12}",
        ) {
            proptest::prop_assert_eq!(check_local(&text), check_local_by_chars(&text));
            proptest::prop_assert_eq!(check_domain(&text), check_domain_by_chars(&text));
            let dotted_by_chars = {
                let labels: Vec<&str> = text.split('.').collect();
                labels.len() >= 2 && labels.iter().all(|label| !label.is_empty())
            };
            proptest::prop_assert_eq!(dotted(&text), dotted_by_chars);
        }

        #[test]
        fn an_ascii_text_parses_byte_by_byte_as_the_general_rule_parses_it(
            raw in "[ \t\n\x0b\x0c\r\x00-\x1f\x7fa-cA-C0-9.@_-]{0,24}",
        ) {
            proptest::prop_assert_eq!(Email::parse_ascii(&raw), Email::parse_general(&raw));
        }

        #[test]
        fn an_ascii_address_parses_byte_by_byte_as_the_general_rule_parses_it(
            local in "[a-zA-Z0-9._-]{0,6}",
            domain in "[a-zA-Z0-9.-]{0,8}",
            pad in "[ \t\x0b]{0,2}",
        ) {
            let raw = format!("{pad}{local}@{domain}{pad}");
            proptest::prop_assert_eq!(Email::parse_ascii(&raw), Email::parse_general(&raw));
        }
    }

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
    fn addresses_clerk_would_refuse_are_refused_with_their_reason() {
        let label = "b".repeat(63);
        let long_total = format!("a@{label}.{label}.{label}.{label}.com");
        let long_label = format!("ann@{}.com", "c".repeat(64));
        let long_local = format!("{}@example.com", "a".repeat(65));
        let cases: [(&str, EmailError); 20] = [
            ("ann@[127.0.0.1]", EmailError::Domain),
            ("ann@127.0.0.1", EmailError::Domain),
            ("ann@localhost", EmailError::Domain),
            ("ann@exa_mple.com", EmailError::Domain),
            ("ann@-example.com", EmailError::Domain),
            ("ann@example-.com", EmailError::Domain),
            ("ann@example.com.", EmailError::Domain),
            (&long_label, EmailError::Domain),
            (&long_local, EmailError::LocalTooLong),
            (&long_total, EmailError::TooLong),
            (".ann@example.com", EmailError::LocalPart),
            ("ann.@example.com", EmailError::LocalPart),
            ("ann..lee@example.com", EmailError::LocalPart),
            ("ann(x)@example.com", EmailError::LocalPart),
            ("\"ann\"@example.com", EmailError::LocalPart),
            ("ännchen@example.com", EmailError::NotAscii),
            ("ann@bücher.example", EmailError::NotAscii),
            ("ann@example.com\u{a0}", EmailError::Whitespace),
            ("\tann@example.com", EmailError::Whitespace),
            ("ann\u{0}@example.com", EmailError::Whitespace),
        ];
        for (raw, error) in cases {
            assert_eq!(Email::parse_invitable(raw), Err(error), "{raw:?}");
        }
        let longest_local = format!("{}@example.com", "a".repeat(64));
        let longest_label = format!("a@{}.com", "c".repeat(63));
        for good in [
            "a@b.co",
            "fine+tag@sub.example.com",
            "o'brien@example.ie",
            "x_y-z@xn--bcher-kva.example",
            "1@123.example",
            &longest_local,
            &longest_label,
        ] {
            let email = Email::parse_invitable(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(Ok(&email), Email::parse(good).as_ref(), "one normal form");
        }
    }

    #[test]
    fn only_spaces_are_trimmed_as_the_tables_btrim_does() {
        assert_eq!(
            Email::parse_invitable("  Dan@Example.com  ")
                .unwrap()
                .as_str(),
            "dan@example.com"
        );
        assert_eq!(
            Email::parse_invitable("dan@example.com\u{a0}"),
            Err(EmailError::Whitespace)
        );
        assert_eq!(
            Email::parse_invitable("dan@example.com\n"),
            Err(EmailError::Whitespace)
        );
    }

    #[test]
    fn an_address_clerk_holds_is_recognised_even_where_the_roster_would_refuse_it() {
        let long_local = format!("{}@x.com", "a".repeat(100));
        for held in ["ann@[127.0.0.1]", "Ännchen@Example.com", &long_local] {
            assert!(Email::parse(held).is_ok(), "{held}");
            assert!(Email::parse_invitable(held).is_err(), "{held}");
        }
        assert_eq!(
            Email::parse("Ännchen@Example.com").unwrap().as_str(),
            "ännchen@example.com"
        );
        let named = |raw: &str| {
            let error = Email::parse_invitable(raw).unwrap_err();
            Email::named_by_row(raw, &error).map(|e| e.to_string())
        };
        assert_eq!(named("Ann@[127.0.0.1]").as_deref(), Some("ann@[127.0.0.1]"));
        assert_eq!(named("dan@example.com\u{a0}"), None);
        assert_eq!(named("not an address"), None);
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
