//! The decision ladder for one desired person: the first rung that applies gives the outcome.
//! Unsettled, accepted or a user; pending (in sync, stale or replaced); deferred; refused
//! before; and last an expired invitation or a new one.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Item, OnChange, Ownership, Policy};
use crate::clerk::{Invitation, InvitationStatus};
use crate::domain::{AcceptedEntry, DesiredInvitee, Email, LedgerEntry, LedgerState};

/// Who is a user, and who was one until Clerk deleted them.
#[derive(Clone, Copy)]
pub(super) struct Users {
    pub(super) known: bool,
    pub(super) deleted: bool,
}

/// What is known of one desired person, gathered once for [`decide`].
pub(super) struct Facts<'a> {
    /// Clerk's invitations for the address, oldest first.
    pub(super) invitations: &'a [&'a Invitation],
    /// The ledger's entries for the address (as Clerk's listing shows them), oldest first,
    /// but those the ledger holds as accepted.
    pub(super) entries: &'a [&'a LedgerEntry],
    /// The entries the ledger holds as accepted.
    pub(super) accepted: &'a [AcceptedEntry],
    pub(super) users: Users,
    pub(super) owned_ids: &'a HashSet<String>,
    pub(super) now: DateTime<Utc>,
}

impl Facts<'_> {
    /// The newest pending invitation.
    fn pending(&self) -> Option<&Invitation> {
        self.invitations
            .iter()
            .rev()
            .find(|i| i.status == InvitationStatus::Pending)
            .copied()
    }
}

/// The outcome for one desired person: the first rung of the ladder that applies.
pub(super) fn decide(invitee: DesiredInvitee, facts: &Facts<'_>, policy: &Policy) -> Item {
    if let Some(item) = settled_or_user(&invitee.email, facts) {
        return item;
    }
    if let Some(pending) = facts.pending() {
        return pending_outcome(invitee, pending, facts, policy);
    }
    if let Some(not_before) = invitee.not_before.filter(|t| *t > facts.now) {
        return Item::Deferred {
            email: invitee.email,
            not_before,
        };
    }
    if let Some(item) = refused_before(&invitee, facts) {
        return item;
    }
    expired_or_new(invitee, facts, policy)
}

/// Unsettled while a create's outcome is unknown; then accepted, or already a user.
fn settled_or_user(email: &Email, facts: &Facts<'_>) -> Option<Item> {
    if facts
        .entries
        .iter()
        .any(|e| e.state == LedgerState::Sending)
    {
        return Some(Item::Unsettled {
            email: email.clone(),
        });
    }
    // A deleted user's acceptance is history: they are invited again.
    let accepted = !facts.users.deleted
        && (facts
            .invitations
            .iter()
            .any(|i| i.status == InvitationStatus::Accepted)
            || !facts.accepted.is_empty()
            || facts
                .entries
                .iter()
                .any(|e| e.state == LedgerState::Accepted));
    if accepted {
        return Some(Item::Accepted {
            email: email.clone(),
        });
    }
    facts.users.known.then(|| Item::AlreadyUser {
        email: email.clone(),
    })
}

/// A pending invitation is in sync with the row, or stale (replaced when the policy says
/// so and invite-sync may touch it).
fn pending_outcome(
    invitee: DesiredInvitee,
    pending: &Invitation,
    facts: &Facts<'_>,
    policy: &Policy,
) -> Item {
    let owned = facts.owned_ids.contains(pending.id.as_str());
    let recorded = facts
        .entries
        .iter()
        .rev()
        .find(|e| e.clerk_invitation_id.as_deref() == Some(pending.id.as_str()));
    let differences = changes(&invitee, pending, recorded.copied());
    let invitation_id = pending.id.clone();
    if differences.is_empty() {
        return Item::InSync {
            email: invitee.email,
            invitation_id,
            owned,
        };
    }
    let may_replace = owned || policy.ownership == Ownership::All;
    if policy.on_change == OnChange::Replace && may_replace {
        Item::Replace {
            invitation_id,
            invitee,
            differences,
        }
    } else {
        Item::Stale {
            email: invitee.email,
            invitation_id,
            differences,
        }
    }
}

/// What differs between the row and its pending invitation: the metadata, and the
/// redirect URL when invite-sync sent the invitation (`recorded` as owned).
fn changes(
    invitee: &DesiredInvitee,
    pending: &Invitation,
    recorded: Option<&LedgerEntry>,
) -> Vec<&'static str> {
    let mut differences = Vec::new();
    if pending.public_metadata != invitee.metadata() {
        differences.push("public_metadata");
    }
    if let Some(entry) = recorded.filter(|e| e.owned) {
        if entry.redirect_url != invitee.request.redirect_url {
            differences.push("redirect_url");
        }
    }
    differences
}

/// The last create for the row failed (for good, or until its backoff passes), or its
/// invitation was revoked by someone else and the row has not changed since. Invitations
/// invite-sync only saw (made by hand) are not its creates: one seen later does not hide
/// a failure.
fn refused_before(invitee: &DesiredInvitee, facts: &Facts<'_>) -> Option<Item> {
    let last = facts.entries.iter().rev().find(|e| e.owned)?;
    // An accepted create after it (the user since deleted) is the last one: nothing failed.
    if facts.accepted.iter().any(|a| a.owned && a.id > last.id) {
        return None;
    }
    let email = invitee.email.clone();
    // The digest is computed only for the states that ask for it.
    let same_row = || last.row_digest.as_deref() == Some(invitee.digest().as_str());
    match last.state {
        LedgerState::Failed if last.terminal && same_row() => Some(Item::Failed {
            email,
            code: last.last_error_code.clone(),
            reason: last.last_error.clone(),
            retry_at: None,
        }),
        LedgerState::Failed
            if !last.terminal && last.next_attempt_at.is_some_and(|t| t > facts.now) =>
        {
            Some(Item::Failed {
                email,
                code: last.last_error_code.clone(),
                reason: last.last_error.clone(),
                retry_at: last.next_attempt_at,
            })
        }
        LedgerState::Revoked if !last.revoked_by_us && same_row() => {
            Some(Item::RevokedExternally {
                email,
                invitation_id: last.clerk_invitation_id.clone(),
            })
        }
        _ => None,
    }
}

/// A create, a re-invitation of an expired invitation, or the expired one reported. An
/// expired invitation counts whether Clerk's listing shows it (a full one does) or the
/// ledger holds it (what a pending-only cycle knows), so that both say the same.
fn expired_or_new(invitee: DesiredInvitee, facts: &Facts<'_>, policy: &Policy) -> Item {
    let expired = facts
        .invitations
        .iter()
        .any(|i| i.status == InvitationStatus::Expired)
        || facts
            .entries
            .iter()
            .any(|e| e.state == LedgerState::Expired);
    match (expired, policy.reinvite_expired) {
        (true, false) => Item::Expired {
            email: invitee.email,
        },
        (reinvite, _) => Item::Create { invitee, reinvite },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DesiredRow;

    fn invitee() -> DesiredInvitee {
        DesiredInvitee::from_row(&DesiredRow::new("ann@example.com"), &Default::default())
            .expect("a valid row")
    }

    /// An invitation to ann@example.com, as the property tests build one.
    fn invitation(id: &str, status: InvitationStatus) -> Invitation {
        crate::reconcile::plan::tests::invitation(id, "ann@example.com", status)
    }

    fn entry(state: LedgerState) -> LedgerEntry {
        LedgerEntry {
            id: 1,
            email: Email::parse("ann@example.com").expect("an address"),
            clerk_invitation_id: Some("inv_1".to_owned()),
            state,
            owned: true,
            row_digest: None,
            redirect_url: None,
            attempts: 1,
            last_error_code: Some("form_param_format_invalid".to_owned()),
            last_error: None,
            terminal: false,
            next_attempt_at: None,
            revoked_by_us: false,
            created_at: Utc::now(),
            sent_at: None,
        }
    }

    fn facts<'a>(
        invitations: &'a [&'a Invitation],
        entries: &'a [&'a LedgerEntry],
        users: Users,
        owned_ids: &'a HashSet<String>,
    ) -> Facts<'a> {
        Facts {
            invitations,
            entries,
            accepted: &[],
            users,
            owned_ids,
            now: Utc::now(),
        }
    }

    const NOBODY: Users = Users {
        known: false,
        deleted: false,
    };

    #[test]
    fn a_deleted_users_acceptance_is_history_and_a_sending_row_comes_first() {
        let accepted = invitation("inv_1", InvitationStatus::Accepted);
        let owned = HashSet::new();
        let email = invitee().email;
        let deleted = Users {
            known: false,
            deleted: true,
        };
        assert_eq!(
            settled_or_user(&email, &facts(&[&accepted], &[], deleted, &owned)),
            None
        );
        assert_eq!(
            settled_or_user(&email, &facts(&[&accepted], &[], NOBODY, &owned)),
            Some(Item::Accepted {
                email: email.clone()
            })
        );
        let sending = entry(LedgerState::Sending);
        assert_eq!(
            settled_or_user(&email, &facts(&[&accepted], &[&sending], NOBODY, &owned)),
            Some(Item::Unsettled {
                email: email.clone()
            })
        );
        let user = Users {
            known: true,
            deleted: false,
        };
        assert_eq!(
            settled_or_user(&email, &facts(&[], &[], user, &owned)),
            Some(Item::AlreadyUser { email })
        );
    }

    #[test]
    fn an_accepted_entry_counts_as_accepted_and_as_the_last_create_it_follows() {
        let owned = HashSet::new();
        let invitee = invitee();
        let email = invitee.email.clone();
        let accepted = [AcceptedEntry { id: 2, owned: true }];
        let read = Facts {
            accepted: &accepted,
            ..facts(&[], &[], NOBODY, &owned)
        };
        assert_eq!(
            settled_or_user(&email, &read),
            Some(Item::Accepted {
                email: email.clone()
            })
        );
        // The user accepted a later create, then Clerk deleted them: the failure before is
        // history, and they are invited again.
        let mut failed = entry(LedgerState::Failed);
        failed.terminal = true;
        failed.row_digest = Some(invitee.digest());
        let deleted = Users {
            known: false,
            deleted: true,
        };
        let entries = [&failed];
        let later = Facts {
            accepted: &accepted,
            ..facts(&[], &entries, deleted, &owned)
        };
        assert_eq!(settled_or_user(&email, &later), None);
        assert_eq!(refused_before(&invitee, &later), None);
        let before = [AcceptedEntry { id: 0, owned: true }];
        let earlier = Facts {
            accepted: &before,
            ..facts(&[], &entries, deleted, &owned)
        };
        assert!(matches!(
            refused_before(&invitee, &earlier),
            Some(Item::Failed { retry_at: None, .. })
        ));
        let by_hand = [AcceptedEntry {
            id: 2,
            owned: false,
        }];
        let seen = Facts {
            accepted: &by_hand,
            ..facts(&[], &entries, deleted, &owned)
        };
        assert!(
            matches!(refused_before(&invitee, &seen), Some(Item::Failed { .. })),
            "an invitation made by hand and accepted does not hide a refusal"
        );
    }

    #[test]
    fn only_the_redirect_of_an_owned_entry_is_compared() {
        let pending = invitation("inv_1", InvitationStatus::Pending);
        let mut recorded = entry(LedgerState::Pending);
        recorded.redirect_url = Some("https://elsewhere.example".to_owned());
        assert_eq!(
            changes(&invitee(), &pending, Some(&recorded)),
            ["redirect_url"]
        );
        recorded.owned = false;
        assert!(changes(&invitee(), &pending, Some(&recorded)).is_empty());
        let mut changed = pending.clone();
        changed
            .public_metadata
            .insert("team".to_owned(), serde_json::json!("blue"));
        assert_eq!(changes(&invitee(), &changed, None), ["public_metadata"]);
    }

    #[test]
    fn a_failure_holds_until_its_backoff_passes_or_for_good_until_the_row_changes() {
        let owned = HashSet::new();
        let invitee = invitee();
        let mut failed = entry(LedgerState::Failed);
        failed.next_attempt_at = Some(Utc::now() + chrono::Duration::minutes(5));
        let held = refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned));
        assert!(matches!(
            held,
            Some(Item::Failed {
                retry_at: Some(_),
                ..
            })
        ));
        failed.next_attempt_at = Some(Utc::now() - chrono::Duration::minutes(5));
        assert_eq!(
            refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned)),
            None
        );

        failed.terminal = true;
        assert_eq!(
            refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned)),
            None,
            "another row than the one refused"
        );
        failed.row_digest = Some(invitee.digest());
        let terminal = refused_before(&invitee, &facts(&[], &[&failed], NOBODY, &owned));
        assert!(matches!(
            terminal,
            Some(Item::Failed { retry_at: None, .. })
        ));

        let mut revoked = entry(LedgerState::Revoked);
        revoked.row_digest = Some(invitee.digest());
        let by_hand = refused_before(&invitee, &facts(&[], &[&revoked], NOBODY, &owned));
        assert!(matches!(by_hand, Some(Item::RevokedExternally { .. })));
        revoked.revoked_by_us = true;
        assert_eq!(
            refused_before(&invitee, &facts(&[], &[&revoked], NOBODY, &owned)),
            None
        );

        let seen_later = LedgerEntry {
            id: 2,
            owned: false,
            ..entry(LedgerState::Expired)
        };
        let held = refused_before(
            &invitee,
            &facts(&[], &[&failed, &seen_later], NOBODY, &owned),
        );
        assert!(
            matches!(held, Some(Item::Failed { retry_at: None, .. })),
            "an invitation made by hand and seen later does not hide a refusal"
        );
    }

    #[test]
    fn an_expired_invitation_is_invited_again_only_when_the_policy_says_so() {
        let owned = HashSet::new();
        let expired = invitation("inv_1", InvitationStatus::Expired);
        let reinvite = Policy {
            reinvite_expired: true,
            ..Policy::default()
        };
        let keep = Policy {
            reinvite_expired: false,
            ..Policy::default()
        };
        let shown = [&expired];
        let seen = facts(&shown, &[], NOBODY, &owned);
        assert!(matches!(
            expired_or_new(invitee(), &seen, &reinvite),
            Item::Create { reinvite: true, .. }
        ));
        assert!(matches!(
            expired_or_new(invitee(), &seen, &keep),
            Item::Expired { .. }
        ));
        let ledger_expired = entry(LedgerState::Expired);
        let entries = [&ledger_expired];
        let recorded = facts(&[], &entries, NOBODY, &owned);
        assert!(matches!(
            expired_or_new(invitee(), &recorded, &keep),
            Item::Expired { .. }
        ));
        let fresh = facts(&[], &[], NOBODY, &owned);
        assert!(matches!(
            expired_or_new(invitee(), &fresh, &keep),
            Item::Create {
                reinvite: false,
                ..
            }
        ));
    }
}
