//! The drift log: one tracing event per action and per drift item, and a summary per cycle.

use crate::domain::Email;
use crate::reconcile::plan::{Item, Plan};

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
            Err(_) => Email::parse(&format!("invalid@{}.invalid", email.len()))
                .map(|e| e.redacted())
                .unwrap_or_else(|_| "email-invalid".to_owned()),
        }
    }

    /// One event per item that is not in sync.
    pub fn drift(&self, plan: &Plan, dry_run: bool) {
        for item in &plan.items {
            let category = item.category().as_str();
            let email = self.email(item.email());
            let invitation_id = item.invitation_id().unwrap_or("");
            match item {
                Item::InSync { .. } => {
                    tracing::debug!(category, email, invitation_id, dry_run, "in sync")
                }
                Item::Invalid { reason, .. } => {
                    tracing::warn!(category, email, reason = %reason, dry_run, "roster row is invalid")
                }
                Item::Failed {
                    code,
                    reason,
                    retry_at,
                    ..
                } => tracing::warn!(
                    category,
                    email,
                    code = code.as_deref().unwrap_or(""),
                    reason = reason.as_deref().unwrap_or(""),
                    retry_at = retry_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "when the row changes".into()),
                    dry_run,
                    "an earlier create was refused"
                ),
                Item::Stale { differences, .. } | Item::Replace { differences, .. } => {
                    tracing::info!(
                        category,
                        email,
                        invitation_id,
                        differences = differences.join(","),
                        dry_run,
                        "pending invitation differs from the roster"
                    )
                }
                Item::Deferred { not_before, .. } => tracing::info!(
                    category,
                    email,
                    not_before = %not_before.to_rfc3339(),
                    dry_run,
                    "not before its time"
                ),
                _ => tracing::info!(category, email, invitation_id, dry_run, "drift"),
            }
        }
    }
}
