//! The guard over membership removals: revoking an organization invitation and removing a
//! member count in the same mass-revocation guard as instance revocations (its limits, its
//! protected addresses, its release), and an organization whose roster became empty while
//! it holds owned pending invitations or owned memberships is held like an empty roster.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::domain::Email;
use crate::reconcile::guard::{self, Revocation, RevocationLimits};

/// What a removal takes away.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A pending organization invitation, by id.
    Invitation(String),
    /// A membership, by user id.
    Member(String),
}

/// One removal the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Removal {
    pub organization_id: String,
    pub email: Email,
    pub target: Target,
}

/// Why membership removals were held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// An organization's roster is empty while it holds owned pending invitations or owned
    /// memberships.
    EmptyOrganization,
    /// The limits every roster's removals obey (empty roster, too many, too large a share).
    Roster(guard::HoldReason),
}

impl HoldReason {
    pub fn describe(self) -> &'static str {
        match self {
            HoldReason::EmptyOrganization => {
                "an organization's roster is empty while it holds owned invitations or memberships"
            }
            HoldReason::Roster(reason) => reason.describe(),
        }
    }
}

/// One organization's figures, before this cycle's removals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holding {
    /// Roster rows naming the organization, valid or not.
    pub rows: usize,
    /// Pending invitations and memberships invite-sync owns in it.
    pub owned: usize,
}

/// The guard's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub allowed: Vec<Removal>,
    pub held: Vec<Removal>,
    pub protected: Vec<Removal>,
    pub reason: Option<HoldReason>,
    /// How many the operator's release let through.
    pub released: usize,
    /// The organizations held for an empty roster, by id.
    pub emptied: Vec<String>,
}

/// Splits the removals into the allowed, the held and the protected. `rows` counts the
/// whole membership roster, `organizations` each organization's rows and owned holdings;
/// `allow` is `sync --allow-revocations N`.
pub fn check(
    removals: Vec<Removal>,
    rows: usize,
    organizations: &HashMap<String, Holding>,
    allow: usize,
    limits: &RevocationLimits,
) -> Verdict {
    let owned = organizations.values().map(|h| h.owned).sum();
    // The roster guard sees each removal under a key of its own.
    let keyed: Vec<Revocation> = removals
        .iter()
        .enumerate()
        .map(|(i, removal)| Revocation {
            email: removal.email.clone(),
            invitation_id: i.to_string(),
        })
        .collect();
    let verdict = guard::check(
        keyed,
        guard::Context {
            desired_rows: rows,
            owned_pending: owned,
            allow,
        },
        limits,
    );
    let mut slots: Vec<Option<Removal>> = removals.into_iter().map(Some).collect();
    let mut take = |revocations: Vec<Revocation>| -> Vec<Removal> {
        revocations
            .iter()
            .filter_map(|r| r.invitation_id.parse::<usize>().ok())
            .filter_map(|i| slots.get_mut(i).and_then(Option::take))
            .collect()
    };
    let allowed = take(verdict.allowed);
    let held = take(verdict.held);
    let protected = take(verdict.protected);
    if let Some(reason) = verdict.reason {
        return Verdict {
            allowed,
            held,
            protected,
            reason: Some(HoldReason::Roster(reason)),
            released: verdict.released,
            emptied: Vec::new(),
        };
    }
    let emptied = emptied(&allowed, organizations);
    if emptied.is_empty() {
        return Verdict {
            allowed,
            protected,
            ..Verdict::default()
        };
    }
    let mut allowed = allowed;
    let released = allow.min(allowed.len());
    let held = allowed.split_off(released);
    Verdict {
        allowed,
        held,
        protected,
        reason: Some(HoldReason::EmptyOrganization),
        released,
        emptied,
    }
}

/// The organizations among the removals' whose roster is empty while they hold something
/// invite-sync owns, sorted.
fn emptied(removals: &[Removal], organizations: &HashMap<String, Holding>) -> Vec<String> {
    let touched: HashSet<&str> = removals
        .iter()
        .map(|r| r.organization_id.as_str())
        .collect();
    let mut emptied: Vec<String> = touched
        .into_iter()
        .filter(|id| {
            organizations
                .get(*id)
                .is_some_and(|h| h.rows == 0 && h.owned > 0)
        })
        .map(str::to_owned)
        .collect();
    emptied.sort();
    emptied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(organization_id: &str, i: usize) -> Removal {
        Removal {
            organization_id: organization_id.to_owned(),
            email: Email::parse(&format!("p{i}@example.com")).unwrap(),
            target: Target::Invitation(format!("orginv_{organization_id}_{i}")),
        }
    }

    fn holdings(figures: &[(&str, usize, usize)]) -> HashMap<String, Holding> {
        figures
            .iter()
            .map(|(id, rows, owned)| {
                (
                    (*id).to_owned(),
                    Holding {
                        rows: *rows,
                        owned: *owned,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_few_removals_within_the_limits_are_allowed() {
        let orgs = holdings(&[("org_a", 50, 50), ("org_b", 50, 50)]);
        let verdict = check(
            vec![removal("org_a", 0), removal("org_b", 1)],
            100,
            &orgs,
            0,
            &RevocationLimits::default(),
        );
        assert_eq!((verdict.allowed.len(), verdict.held.len()), (2, 0));
        assert_eq!(verdict.reason, None);
    }

    #[test]
    fn an_organization_whose_roster_emptied_holds_the_removals_until_released() {
        let orgs = holdings(&[("org_a", 0, 3), ("org_b", 200, 200)]);
        let removals: Vec<Removal> = (0..3).map(|i| removal("org_a", i)).collect();
        let verdict = check(
            removals.clone(),
            200,
            &orgs,
            0,
            &RevocationLimits::default(),
        );
        assert_eq!((verdict.allowed.len(), verdict.held.len()), (0, 3));
        assert_eq!(verdict.reason, Some(HoldReason::EmptyOrganization));
        assert_eq!(verdict.emptied, ["org_a"]);
        let released = check(removals, 200, &orgs, 3, &RevocationLimits::default());
        assert_eq!(
            (
                released.allowed.len(),
                released.held.len(),
                released.released
            ),
            (3, 0, 3)
        );
    }

    #[test]
    fn removals_across_organizations_count_against_the_limits_together() {
        let orgs = holdings(&[("org_a", 500, 500), ("org_b", 500, 500)]);
        let removals: Vec<Removal> = (0..13)
            .map(|i| removal("org_a", i))
            .chain((13..26).map(|i| removal("org_b", i)))
            .collect();
        let verdict = check(removals, 1000, &orgs, 0, &RevocationLimits::default());
        assert_eq!(verdict.held.len(), 26);
        assert_eq!(
            verdict.reason,
            Some(HoldReason::Roster(guard::HoldReason::TooMany))
        );
    }

    #[test]
    fn an_empty_membership_roster_is_held_like_an_empty_instance_roster() {
        let orgs = holdings(&[("org_a", 0, 2)]);
        let verdict = check(
            vec![removal("org_a", 0), removal("org_a", 1)],
            0,
            &orgs,
            0,
            &RevocationLimits::default(),
        );
        assert_eq!(
            verdict.reason,
            Some(HoldReason::Roster(guard::HoldReason::EmptyRoster))
        );
        assert_eq!(verdict.held.len(), 2);
    }

    #[test]
    fn protected_addresses_are_never_removed() {
        let orgs = holdings(&[("org_a", 100, 100)]);
        let limits = RevocationLimits {
            protected: vec!["p0@example.com".into()],
            ..RevocationLimits::default()
        };
        let verdict = check(
            vec![removal("org_a", 0), removal("org_a", 1)],
            100,
            &orgs,
            0,
            &limits,
        );
        assert_eq!(verdict.protected, [removal("org_a", 0)]);
        assert_eq!(verdict.allowed, [removal("org_a", 1)]);
    }
}
