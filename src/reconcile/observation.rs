//! What Clerk's listing says of the ledger: each invitation the ledger holds as pending or
//! expired takes the status Clerk shows, and the changes are written back. The planner sees
//! each person's entries the same way.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

use crate::clerk::{Invitation, InvitationStatus};
use crate::domain::{LedgerEntry, LedgerState};
use crate::reconcile::plan::Listing;
use crate::store::ledger;

/// The ledger as Clerk's list shows it now: each invitation the ledger holds as pending or
/// expired takes the status Clerk reports. One missing from a full listing was revoked (by
/// someone else, unless invite-sync revoked it); one missing from a pending-only listing
/// keeps its state, unless a lookup found it nowhere.
pub fn observe(
    ledger: &[LedgerEntry],
    clerk: &[Invitation],
    listing: Listing<'_>,
) -> Vec<LedgerEntry> {
    let by_id: HashMap<&str, &Invitation> = clerk.iter().map(|i| (i.id.as_str(), i)).collect();
    ledger
        .iter()
        .map(|entry| observe_entry(entry.clone(), &by_id, listing))
        .collect()
}

/// One ledger entry as Clerk's listing (by invitation id) shows it now: see [`observe`].
pub fn observe_entry(
    mut entry: LedgerEntry,
    by_id: &HashMap<&str, &Invitation>,
    listing: Listing<'_>,
) -> LedgerEntry {
    if let (Some(id), LedgerState::Pending | LedgerState::Expired) =
        (entry.clerk_invitation_id.as_deref(), entry.state)
    {
        entry.state = match (by_id.get(id).map(|i| i.status), listing) {
            (Some(InvitationStatus::Pending), _) => LedgerState::Pending,
            (Some(InvitationStatus::Accepted), _) => LedgerState::Accepted,
            (Some(InvitationStatus::Expired), _) => LedgerState::Expired,
            (Some(InvitationStatus::Revoked), _) | (None, Listing::Full) => LedgerState::Revoked,
            (None, Listing::Pending { found_nowhere }) if found_nowhere.contains(id) => {
                LedgerState::Revoked
            }
            (None, Listing::Pending { .. }) => entry.state,
        };
    }
    entry
}

/// Stores what Clerk's listing shows: each ledger entry whose state [`observe`] changes, and
/// each accepted or expired invitation the ledger does not hold (made before invite-sync,
/// or by hand), an accepted one's address as a user's, so that every later cycle, full or
/// pending-only, reports the person as the full listing did: accepted (no create planned,
/// nobody looked up), or expired.
pub async fn record(
    pool: &PgPool,
    target: &str,
    entries: &[LedgerEntry],
    clerk: &[Invitation],
    listing: Listing<'_>,
) -> Result<(), sqlx::Error> {
    let observed = observe(entries, clerk, listing);
    for (before, after) in entries.iter().zip(&observed) {
        if before.state == after.state {
            continue;
        }
        match (after.state, after.clerk_invitation_id.as_deref()) {
            (LedgerState::Accepted, Some(id)) => {
                ledger::record_accepted(pool, target, id, &after.email).await?
            }
            _ => ledger::set_state(pool, after.id, after.state).await?,
        }
    }
    // An acceptance or an expiry the ledger never held is kept too: a pending-only listing
    // does not show it again. The entries at hand were just recorded above.
    let held: HashSet<&str> = entries
        .iter()
        .filter_map(|e| e.clerk_invitation_id.as_deref())
        .collect();
    let settled: Vec<&Invitation> = clerk
        .iter()
        .filter(|i| {
            matches!(
                i.status,
                InvitationStatus::Accepted | InvitationStatus::Expired
            )
        })
        .filter(|i| !held.contains(i.id.as_str()))
        .collect();
    if !settled.is_empty() {
        ledger::record_settled_seen(pool, target, &settled).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::reconcile::plan::tests::{entry, invitation};

    #[test]
    fn observe_takes_clerks_status_for_pending_and_expired_entries_and_marks_missing_ones_revoked()
    {
        let clerk = [
            invitation("inv_a", "a@x.com", InvitationStatus::Accepted),
            invitation("inv_b", "b@x.com", InvitationStatus::Expired),
            invitation("inv_c", "c@x.com", InvitationStatus::Pending),
            invitation("inv_d", "d@x.com", InvitationStatus::Revoked),
        ];
        let ledger = [
            entry(1, "a@x.com", Some("inv_a"), LedgerState::Pending),
            entry(2, "b@x.com", Some("inv_b"), LedgerState::Pending),
            entry(3, "c@x.com", Some("inv_c"), LedgerState::Expired),
            entry(4, "d@x.com", Some("inv_d"), LedgerState::Pending),
            entry(5, "e@x.com", Some("inv_gone"), LedgerState::Expired),
        ];
        let states: Vec<LedgerState> = observe(&ledger, &clerk, Listing::Full)
            .iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(
            states,
            [
                LedgerState::Accepted,
                LedgerState::Expired,
                LedgerState::Pending,
                LedgerState::Revoked,
                LedgerState::Revoked,
            ]
        );
    }

    #[test]
    fn a_pending_only_listing_takes_an_entry_for_revoked_only_when_a_lookup_found_it_nowhere() {
        let clerk = [
            invitation("inv_a", "a@x.com", InvitationStatus::Accepted),
            invitation("inv_b", "b@x.com", InvitationStatus::Expired),
            invitation("inv_c", "c@x.com", InvitationStatus::Pending),
        ];
        let ledger = [
            entry(1, "a@x.com", Some("inv_a"), LedgerState::Pending),
            entry(2, "b@x.com", Some("inv_b"), LedgerState::Pending),
            entry(3, "c@x.com", Some("inv_c"), LedgerState::Pending),
            entry(4, "d@x.com", Some("inv_d"), LedgerState::Pending),
            entry(5, "e@x.com", Some("inv_e"), LedgerState::Expired),
            entry(6, "f@x.com", Some("inv_f"), LedgerState::Pending),
        ];
        let found_nowhere: HashSet<String> = ["inv_f".to_owned()].into();
        let states: Vec<LedgerState> = observe(
            &ledger,
            &clerk,
            Listing::Pending {
                found_nowhere: &found_nowhere,
            },
        )
        .iter()
        .map(|e| e.state)
        .collect();
        assert_eq!(
            states,
            [
                LedgerState::Accepted,
                LedgerState::Expired,
                LedgerState::Pending,
                LedgerState::Pending,
                LedgerState::Expired,
                LedgerState::Revoked,
            ]
        );
    }

    #[test]
    fn observe_leaves_entries_in_other_states_or_without_an_id_alone() {
        let clerk = [invitation("inv_a", "a@x.com", InvitationStatus::Pending)];
        let ledger = [
            entry(1, "a@x.com", Some("inv_a"), LedgerState::Sending),
            entry(2, "a@x.com", Some("inv_a"), LedgerState::Failed),
            entry(3, "a@x.com", Some("inv_gone"), LedgerState::Accepted),
            entry(4, "a@x.com", None, LedgerState::Pending),
            LedgerEntry {
                revoked_by_us: true,
                ..entry(5, "a@x.com", Some("inv_a"), LedgerState::Revoked)
            },
        ];
        assert_eq!(observe(&ledger, &clerk, Listing::Full), ledger.to_vec());
    }
}
