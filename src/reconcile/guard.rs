//! The guard: a cycle that would revoke too much, or revoke against an empty roster, holds
//! its revocations, whole, until an operator releases them. Protected addresses are never
//! revoked.

use serde::Serialize;

use crate::domain::Email;

/// The limits, from `sync.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct RevocationLimits {
    pub max_revocations: usize,
    pub max_revocation_ratio: f64,
    /// Addresses and `@domain` patterns never revoked.
    pub protected: Vec<String>,
}

impl Default for RevocationLimits {
    fn default() -> Self {
        RevocationLimits {
            max_revocations: 25,
            max_revocation_ratio: 0.2,
            protected: Vec::new(),
        }
    }
}

/// Why revocations were held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The roster is empty while owned invitations are pending.
    EmptyRoster,
    /// More than `max_revocations`.
    TooMany,
    /// More than `max_revocation_ratio` of the owned pending invitations.
    TooLargeAShare,
}

impl HoldReason {
    pub fn describe(self) -> &'static str {
        match self {
            HoldReason::EmptyRoster => "the roster is empty while owned invitations are pending",
            HoldReason::TooMany => "more revocations than sync.max_revocations",
            HoldReason::TooLargeAShare => {
                "a larger share of the owned pending invitations than sync.max_revocation_ratio"
            }
        }
    }
}

/// A revocation the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub email: Email,
    pub invitation_id: String,
}

/// The guard's verdict.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Sent this cycle.
    pub allowed: Vec<Revocation>,
    /// Not sent: waiting for an operator.
    pub held: Vec<Revocation>,
    /// Never sent: the address is protected.
    pub protected: Vec<Revocation>,
    pub reason: Option<HoldReason>,
    /// How many the operator's release let through.
    pub released: usize,
}

/// What the guard looks at besides the revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Roster rows, valid or not.
    pub desired_rows: usize,
    /// Pending invitations invite-sync owns (before this cycle's revocations).
    pub owned_pending: usize,
    /// `sync --allow-revocations N`: up to N held revocations are sent this once.
    pub allow: usize,
}

/// Splits the plan's revocations into the allowed, the held and the protected.
pub fn check(revocations: Vec<Revocation>, context: Context, limits: &RevocationLimits) -> Verdict {
    let (protected, wanted): (Vec<_>, Vec<_>) = revocations.into_iter().partition(|r| {
        limits
            .protected
            .iter()
            .any(|pattern| r.email.matches_pattern(pattern))
    });
    let reason = hold_reason(wanted.len(), context, limits);
    let (allowed, held, released) = match reason {
        None => (wanted, Vec::new(), 0),
        Some(_) => {
            let released = context.allow.min(wanted.len());
            let mut wanted = wanted;
            let held = wanted.split_off(released);
            (wanted, held, released)
        }
    };
    Verdict {
        allowed,
        held,
        protected,
        reason,
        released,
    }
}

fn hold_reason(count: usize, context: Context, limits: &RevocationLimits) -> Option<HoldReason> {
    if count == 0 {
        return None;
    }
    if context.desired_rows == 0 && context.owned_pending > 0 {
        return Some(HoldReason::EmptyRoster);
    }
    if count > limits.max_revocations {
        return Some(HoldReason::TooMany);
    }
    let share_limit = limits.max_revocation_ratio * context.owned_pending as f64;
    if count as f64 > share_limit {
        return Some(HoldReason::TooLargeAShare);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocations(n: usize) -> Vec<Revocation> {
        (0..n)
            .map(|i| Revocation {
                email: Email::parse(&format!("p{i}@example.com")).unwrap(),
                invitation_id: format!("inv_{i}"),
            })
            .collect()
    }

    fn context(desired_rows: usize, owned_pending: usize, allow: usize) -> Context {
        Context {
            desired_rows,
            owned_pending,
            allow,
        }
    }

    #[test]
    fn a_few_revocations_within_the_limits_are_allowed() {
        let verdict = check(
            revocations(2),
            context(98, 100, 0),
            &RevocationLimits::default(),
        );
        assert_eq!((verdict.allowed.len(), verdict.held.len()), (2, 0));
        assert_eq!(verdict.reason, None);
    }

    #[test]
    fn an_empty_roster_holds_every_revocation() {
        let verdict = check(
            revocations(3),
            context(0, 3, 0),
            &RevocationLimits::default(),
        );
        assert_eq!((verdict.allowed.len(), verdict.held.len()), (0, 3));
        assert_eq!(verdict.reason, Some(HoldReason::EmptyRoster));
    }

    #[test]
    fn more_than_the_maximum_is_held_whole() {
        let verdict = check(
            revocations(26),
            context(1000, 1000, 0),
            &RevocationLimits::default(),
        );
        assert_eq!((verdict.allowed.len(), verdict.held.len()), (0, 26));
        assert_eq!(verdict.reason, Some(HoldReason::TooMany));
    }

    #[test]
    fn more_than_the_ratio_is_held_whole() {
        let verdict = check(
            revocations(21),
            context(79, 100, 0),
            &RevocationLimits::default(),
        );
        assert_eq!((verdict.allowed.len(), verdict.held.len()), (0, 21));
        assert_eq!(verdict.reason, Some(HoldReason::TooLargeAShare));
        let at_the_ratio = check(
            revocations(20),
            context(80, 100, 0),
            &RevocationLimits::default(),
        );
        assert_eq!(at_the_ratio.allowed.len(), 20);
    }

    #[test]
    fn a_release_lets_up_to_n_through_once() {
        let all = check(
            revocations(30),
            context(0, 30, 30),
            &RevocationLimits::default(),
        );
        assert_eq!(
            (all.allowed.len(), all.held.len(), all.released),
            (30, 0, 30)
        );
        let some = check(
            revocations(30),
            context(0, 30, 10),
            &RevocationLimits::default(),
        );
        assert_eq!(
            (some.allowed.len(), some.held.len(), some.released),
            (10, 20, 10)
        );
    }

    #[test]
    fn protected_addresses_and_domains_are_never_revoked() {
        let limits = RevocationLimits {
            protected: vec!["p0@example.com".into(), "@corp.example".into()],
            ..RevocationLimits::default()
        };
        let mut wanted = revocations(2);
        wanted.push(Revocation {
            email: Email::parse("boss@corp.example").unwrap(),
            invitation_id: "inv_boss".into(),
        });
        let verdict = check(wanted, context(100, 100, 0), &limits);
        let protected: Vec<_> = verdict.protected.iter().map(|r| r.email.as_str()).collect();
        assert_eq!(protected, ["p0@example.com", "boss@corp.example"]);
        assert_eq!(verdict.allowed.len(), 1);
        let released = check(
            revocations(1),
            context(0, 1, 5),
            &RevocationLimits {
                protected: vec!["@example.com".into()],
                ..RevocationLimits::default()
            },
        );
        assert!(
            released.allowed.is_empty(),
            "a release does not override protection"
        );
    }
}
