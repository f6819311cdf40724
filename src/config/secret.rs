//! Secrets in the settings: types that `Debug` and `Serialize` show redacted, so that
//! printing or rendering the settings cannot leak them, and the one redactor of a
//! database URL's password.

use std::borrow::Cow;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use url::{Position, Url};

/// What the secret key, the password and other secrets are replaced with when shown.
pub const REDACTED: &str = "[redacted]";

/// A secret value (a key, a token): serialised as [`REDACTED`], and shown by `Debug` as
/// secrecy shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<Secret> for SecretString {
    fn from(secret: Secret) -> SecretString {
        secret.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// A database URL: secret only in its password, so it is shown with the password
/// replaced by [`REDACTED`] (see [`redact_database_url`]).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn redacted(&self) -> String {
        redact_database_url(self.0.expose_secret())
    }
}

impl ExposeSecret<str> for DatabaseUrl {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> DatabaseUrl {
        DatabaseUrl(SecretString::from(url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// A database URL with its password replaced by [`REDACTED`], wherever it is: in the user
/// info (`user:password@`) or in a `password` parameter (`?password=`, `&password=`). A URL
/// that cannot be parsed is redacted whole.
pub fn redact_database_url(raw: &str) -> String {
    let Ok(url) = Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    let mut shown = match url.password() {
        Some(_) => format!(
            "{}{REDACTED}{}",
            &url[..Position::BeforePassword],
            &url[Position::AfterPassword..Position::AfterPath]
        ),
        None => url[..Position::AfterPath].to_owned(),
    };
    if let Some(query) = url.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                if percent_decode(name).as_deref() == Some("password") {
                    format!("{name}={REDACTED}")
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown.push_str(&url[Position::AfterQuery..]);
    shown
}

/// `message`, built from `url` (by the driver, say), with the URL's password taken out in
/// every form it may take there: as written, percent-decoded, or as a `password` parameter.
pub(crate) fn scrub_password(url: &Url, message: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some(password) = url.password() {
        secrets.push(password.to_owned());
        if let Some(decoded) = percent_decode(password) {
            secrets.push(decoded.into_owned());
        }
    }
    for (name, value) in url.query_pairs() {
        if name == "password" {
            secrets.push(value.into_owned());
        }
    }
    let mut scrubbed = message.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        scrubbed = scrubbed.replace(secret.as_str(), REDACTED);
    }
    scrubbed
}

/// `%XX` escapes decoded (others kept as written); `None` if the result is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_user_info_is_redacted() {
        assert_eq!(
            redact_database_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:[redacted]@db:5432/x"
        );
        assert_eq!(
            redact_database_url("postgres://:hunter2@db/x"),
            "postgres://:[redacted]@db/x"
        );
        assert_eq!(
            redact_database_url("postgres://app:hunter%40two@db/x?sslmode=require#f"),
            "postgres://app:[redacted]@db/x?sslmode=require#f"
        );
    }

    #[test]
    fn a_password_parameter_is_redacted_first_or_later_in_the_query() {
        assert_eq!(
            redact_database_url("postgres://app@db/x?sslmode=require&password=hunter2"),
            "postgres://app@db/x?sslmode=require&password=[redacted]"
        );
        assert_eq!(
            redact_database_url("postgres://app@db/x?password=hunter2&sslmode=require"),
            "postgres://app@db/x?password=[redacted]&sslmode=require"
        );
        assert_eq!(
            redact_database_url("postgres://app@db/x?pass%77ord=hunter2"),
            "postgres://app@db/x?pass%77ord=[redacted]"
        );
        assert_eq!(
            redact_database_url("postgres://app:one@db/x?password=two"),
            "postgres://app:[redacted]@db/x?password=[redacted]"
        );
    }

    #[test]
    fn a_url_without_a_password_is_kept_and_one_that_does_not_parse_is_hidden() {
        assert_eq!(
            redact_database_url("postgres://app@db/x"),
            "postgres://app@db/x"
        );
        assert_eq!(
            redact_database_url("postgres://app@db/x?sslmode=require&passwords=no"),
            "postgres://app@db/x?sslmode=require&passwords=no"
        );
        assert_eq!(redact_database_url("hunter2 not a url"), REDACTED);
    }

    #[test]
    fn a_message_loses_the_password_in_every_form() {
        let url = Url::parse("postgres://app:p%40ss@db/x?password=hunter2").unwrap();
        let scrubbed = scrub_password(&url, "p%40ss, p@ss and hunter2 were refused");
        assert_eq!(
            scrubbed,
            "[redacted], [redacted] and [redacted] were refused"
        );
    }

    #[test]
    fn secrets_are_shown_redacted() {
        let secret: Secret = serde_json::from_str("\"sk_test_hidden\"").unwrap();
        assert_eq!(secret.expose_secret(), "sk_test_hidden");
        assert!(!format!("{secret:?}").contains("hidden"));
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
        let url = DatabaseUrl::from("postgres://app:hunter2@db/x");
        assert_eq!(format!("{url:?}"), "\"postgres://app:[redacted]@db/x\"");
        assert_eq!(
            serde_json::to_string(&url).unwrap(),
            "\"postgres://app:[redacted]@db/x\""
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b").as_deref(), Some("a@b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    }
}
