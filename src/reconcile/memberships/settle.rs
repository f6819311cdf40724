//! Settling membership creates of unknown outcome: a create left `sending` by a crash, a
//! dropped connection or a 5xx is looked up once `clerk.settle_after_seconds` has passed: the
//! organization's invitations for the address (an invitation), or its memberships of the
//! address (a membership). What Clerk made is adopted; otherwise the row is forgotten and
//! the plan queues the person again. Never a second create while the first may exist.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::Pass;
use crate::clerk::organization::{OrganizationInvitation, OrganizationMembership};
use crate::clerk::InvitationStatus;
use crate::domain::{MembershipKind, MembershipLedgerEntry, MembershipState};
use crate::reconcile::execute::Stop;
use crate::store::{self, membership_ledger};

/// How far Clerk's clock may trail the database's when telling a create of ours from an
/// invitation made by hand just before it.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The invitation a create sent at `sent_at` most likely made: not revoked, not one the
/// ledger holds already, and not older than the create. Pending ones first, then the newest.
pub(super) fn adoptable<'a>(
    found: &'a [OrganizationInvitation],
    known: &HashSet<&str>,
    sent_at: DateTime<Utc>,
) -> Option<&'a OrganizationInvitation> {
    let since = (sent_at - CLOCK_SKEW).timestamp_millis();
    found
        .iter()
        .filter(|i| i.status != InvitationStatus::Revoked)
        .filter(|i| !known.contains(i.id.as_str()))
        .filter(|i| i.created_at >= since)
        .max_by_key(|i| (i.status == InvitationStatus::Pending, i.created_at))
}

/// The membership a create for `user_id` made, if Clerk holds it.
fn membership_of<'a>(
    found: &'a [OrganizationMembership],
    user_id: &str,
) -> Option<&'a OrganizationMembership> {
    found.iter().find(|m| m.user_id() == Some(user_id))
}

impl Pass<'_> {
    /// Settles the creates left `sending` once `settle_after` has passed since they were
    /// sent; younger ones wait (the plan shows them waiting, unsettled).
    pub(super) async fn settle(&mut self) -> Result<(), Stop> {
        let pool = &self.reconciler.pool;
        let target = self.target().to_owned();
        let entries = membership_ledger::sending(pool, &target).await?;
        if entries.is_empty() {
            return Ok(());
        }
        let now = store::now(pool).await?;
        let settle_after =
            chrono::Duration::from_std(self.reconciler.config.settle_after).unwrap_or_default();
        for entry in entries
            .iter()
            .filter(|e| e.sent_at.is_none_or(|sent| sent + settle_after <= now))
        {
            self.checkpoint().await?;
            let settled = match entry.kind {
                MembershipKind::Invitation => self.settle_invitation(entry).await?,
                MembershipKind::Membership => self.settle_membership(entry).await?,
            };
            let email = self.reconciler.config.reporter.email(entry.email.as_str());
            match settled {
                Some(true) => {
                    self.report.adopted += 1;
                    tracing::info!(action = "adopt", email, organization = %entry.organization_id, "settled an unconfirmed membership create: Clerk has it");
                }
                Some(false) => {
                    membership_ledger::forget(pool, &[entry.id]).await?;
                    tracing::info!(action = "requeue", email, organization = %entry.organization_id, "settled an unconfirmed membership create: Clerk does not have it; queued again");
                }
                // The lookup failed: left sending, settled by a later cycle.
                None => {}
            }
        }
        Ok(())
    }

    /// Whether Clerk made the invitation (`None` when the lookup failed).
    async fn settle_invitation(
        &mut self,
        entry: &MembershipLedgerEntry,
    ) -> Result<Option<bool>, Stop> {
        let pool = &self.reconciler.pool;
        let found = match self
            .clerk
            .find_organization_invitations_by_email(&entry.organization_id, entry.email.as_str())
            .await
        {
            Ok(found) => found,
            Err(error) => {
                self.note_error("settle", &error);
                return Ok(None);
            }
        };
        let recorded =
            membership_ledger::of_person(pool, self.target(), &entry.organization_id, &entry.email)
                .await?;
        let known: HashSet<&str> = recorded
            .iter()
            .filter_map(|e| e.clerk_id.as_deref())
            .collect();
        let Some(invitation) = adoptable(&found, &known, entry.sent_at.unwrap_or(entry.created_at))
        else {
            return Ok(Some(false));
        };
        if membership_ledger::mark_invited(pool, entry.id, &invitation.id).await? {
            let state = match invitation.status {
                InvitationStatus::Accepted => Some(MembershipState::Accepted),
                InvitationStatus::Expired => Some(MembershipState::Expired),
                _ => None,
            };
            if let Some(state) = state {
                membership_ledger::set_state(pool, entry.id, state).await?;
            }
        }
        Ok(Some(true))
    }

    /// Whether Clerk made the membership (`None` when the lookup failed).
    async fn settle_membership(
        &mut self,
        entry: &MembershipLedgerEntry,
    ) -> Result<Option<bool>, Stop> {
        let Some(user_id) = entry.user_id.as_deref() else {
            return Ok(Some(false));
        };
        let found = match self
            .clerk
            .find_memberships_by_email(&entry.organization_id, &[entry.email.as_str().to_owned()])
            .await
        {
            Ok(found) => found,
            Err(error) => {
                self.note_error("settle", &error);
                return Ok(None);
            }
        };
        if membership_of(&found, user_id).is_none() {
            return Ok(Some(false));
        }
        membership_ledger::mark_member(&self.reconciler.pool, entry.id, user_id).await?;
        Ok(Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn invitation(
        id: &str,
        status: InvitationStatus,
        created: DateTime<Utc>,
    ) -> OrganizationInvitation {
        serde_json::from_value(serde_json::json!({
            "object": "organization_invitation",
            "id": id,
            "email_address": "ann@example.com",
            "role": "org:member",
            "status": status.as_str(),
            "created_at": created.timestamp_millis(),
            "updated_at": created.timestamp_millis(),
        }))
        .expect("an invitation")
    }

    #[test]
    fn the_invitation_a_create_made_is_the_newest_pending_one_not_older_than_the_create() {
        let sent = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let found = vec![
            invitation(
                "orginv_old",
                InvitationStatus::Pending,
                sent - chrono::Duration::hours(1),
            ),
            invitation("orginv_revoked", InvitationStatus::Revoked, sent),
            invitation(
                "orginv_ours",
                InvitationStatus::Pending,
                sent + chrono::Duration::seconds(1),
            ),
            invitation(
                "orginv_known",
                InvitationStatus::Pending,
                sent + chrono::Duration::seconds(2),
            ),
        ];
        let known: HashSet<&str> = ["orginv_known"].into();
        let adopted = adoptable(&found, &known, sent).map(|i| i.id.as_str());
        assert_eq!(adopted, Some("orginv_ours"));
        assert_eq!(adoptable(&found[..2], &HashSet::new(), sent), None);
    }
}
