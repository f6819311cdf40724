//! Settling after a crash: a create left `sending`, whose outcome is unknown, is settled by
//! looking its address up in Clerk and adopting the invitation the create made, or by
//! forgetting the row so the plan queues the person again.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::refusal::adoptable;
use super::{Executor, Stop};
use crate::clerk::{Invitation, InvitationStatus};
use crate::domain::{DesiredInvitee, Email, LedgerEntry, LedgerState};
use crate::store::{self, ledger};

impl Executor<'_> {
    /// Settles creates left `sending` by a crash or an unknown outcome, once
    /// `settle_after` has passed since they were sent: adopts the invitation Clerk made for
    /// the address, or forgets the row so the plan queues the person again. Younger ones
    /// wait (the plan reports them unsettled), since Clerk may still be working on them.
    pub async fn settle(&mut self) -> Result<(), Stop> {
        let entries = ledger::live(self.pool, self.target).await?;
        let now = store::now(self.pool).await?;
        let settle_after = chrono::Duration::from_std(self.settle_after).unwrap_or_default();
        let due: Vec<&LedgerEntry> = entries
            .iter()
            .filter(|e| e.state == LedgerState::Sending)
            .filter(|e| e.sent_at.is_none_or(|sent| sent + settle_after <= now))
            .collect();
        for entry in due {
            self.checkpoint().await?;
            // The invitations the ledger already holds for the address are not this create's.
            let recorded = ledger::of_email(self.pool, self.target, &entry.email).await?;
            let known: HashSet<&str> = recorded
                .iter()
                .filter_map(|e| e.clerk_invitation_id.as_deref())
                .collect();
            let found = match self.clerk.find_by_email(entry.email.as_str(), None).await {
                Ok(found) => found,
                Err(error) => {
                    self.note_error("settle", &error);
                    continue;
                }
            };
            let email = self.reporter.email(entry.email.as_str());
            match adoptable(found, &known, entry.sent_at.unwrap_or(entry.created_at)) {
                Some(invitation) => {
                    self.adopt(entry.id, &invitation).await?;
                    crate::metrics::metrics().action("settle", "adopted");
                    tracing::info!(action = "adopt", email, invitation_id = %invitation.id, "settled an unconfirmed create: Clerk has it");
                }
                None => {
                    ledger::forget(self.pool, &[entry.id]).await?;
                    crate::metrics::metrics().action("settle", "requeued");
                    tracing::info!(
                        action = "requeue",
                        email,
                        "settled an unconfirmed create: Clerk does not have it; queued again"
                    );
                }
            }
        }
        Ok(())
    }

    /// Records `invitation` as what the ledger entry's create produced. When the entry is
    /// gone (another process settled it meanwhile) the invitation is still recorded as ours.
    async fn adopt(&mut self, ledger_id: i64, invitation: &Invitation) -> Result<(), Stop> {
        if ledger::mark_created(self.pool, ledger_id, invitation).await? {
            if invitation.status != InvitationStatus::Pending {
                ledger::set_state(self.pool, ledger_id, invitation.status.into()).await?;
            }
        } else {
            ledger::record_seen(self.pool, self.target, invitation, true).await?;
        }
        self.tally.adopted += 1;
        Ok(())
    }

    /// Whether Clerk made some of a bulk call it refused without naming anyone is not
    /// known: looks the member up before it is sent alone. Returns whether it is to be
    /// sent again (not when Clerk had invited it, nor when the lookup failed: then it is
    /// left sending, and the next cycles settle it by the same lookup).
    pub(super) async fn look_up_unnamed(
        &mut self,
        ledger_id: i64,
        member: &DesiredInvitee,
        sent_at: DateTime<Utc>,
        endpoint_name: &str,
    ) -> Result<bool, Stop> {
        let found = match self.clerk.find_by_email(member.email.as_str(), None).await {
            Ok(found) => found,
            Err(lookup) => {
                self.note_error("lookup", &lookup);
                return Ok(false);
            }
        };
        match adoptable(found, &HashSet::new(), sent_at) {
            Some(invitation) => {
                self.adopt(ledger_id, &invitation).await?;
                crate::metrics::metrics().action("create", "adopted");
                let email = self.reporter.email(member.email.as_str());
                tracing::info!(action = "create", outcome = "adopted", endpoint = endpoint_name, email, invitation_id = %invitation.id, "the refused bulk call had invited this one");
                Ok(false)
            }
            None => {
                ledger::forget(self.pool, &[ledger_id]).await?;
                Ok(true)
            }
        }
    }

    /// Records the pending invitation Clerk already has for the address, as not ours.
    pub(super) async fn adopt_pending(&mut self, email: &Email) -> Result<(), Stop> {
        match self
            .clerk
            .find_by_email(email.as_str(), Some(InvitationStatus::Pending))
            .await
        {
            Ok(found) => {
                for invitation in found {
                    ledger::record_seen(self.pool, self.target, &invitation, false).await?;
                }
                self.tally.adopted += 1;
            }
            Err(error) => self.note_error("lookup", &error),
        }
        Ok(())
    }
}
