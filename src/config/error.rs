//! The configuration error: every problem found, each naming its key.

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The full dotted key, e.g. `sync.max_revocation_ratio`, or the config file's path for
    /// a problem with the file as a whole.
    pub key: String,
    /// Why the value is refused. Never contains a secret.
    pub reason: String,
    /// Where the value came from: a file path or `env NAME`, when known.
    pub origin: Option<String>,
}

impl Problem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
            origin: None,
        }
    }

    pub fn with_origin(mut self, origin: Option<String>) -> Self {
        self.origin = origin;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

/// The configuration is unusable; `problems` lists every reason, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// An error with the given problems. An empty list still makes an error, so that a
    /// caller can never build a silent one.
    pub fn new(problems: Vec<Problem>) -> Self {
        let problems = if problems.is_empty() {
            vec![Problem::new("configuration", "invalid")]
        } else {
            problems
        };
        ConfigError { problems }
    }

    pub fn single(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::new(vec![Problem::new(key, reason)])
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The keys named, in order, possibly repeated.
    pub fn keys(&self) -> Vec<&str> {
        self.problems.iter().map(|p| p.key.as_str()).collect()
    }

    /// Whether some problem names exactly this key.
    pub fn mentions(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

/// One problem per line, without a heading, so callers can add their own.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
