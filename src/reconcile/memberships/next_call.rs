//! Which organization-invitation call goes out next, under the organization budget: Clerk
//! allows, per instance and across all organizations, `S` single calls (250) and `B` bulk
//! calls (50) an hour, and a bulk call carries at most 10 invitations of one organization.
//!
//! # The rule
//!
//! 1. While a bulk slot is free and some organization has 10 or more people waiting, a bulk
//!    call of 10 goes to the one among them whose first person has waited longest.
//! 2. Otherwise, while a single slot is free, a single call goes to the person who has
//!    waited longest among the organizations whose waiting count is not a multiple of 10
//!    (their remainder, which no full bulk call can carry), or, when every count is a
//!    multiple of 10, to the longest-waiting person of all.
//! 3. Otherwise, when a bulk slot is free and no single slot frees within the cycle's
//!    wait, the organization with the most people waiting (fewer than 10) gets a bulk
//!    call of all of them.
//! 4. Otherwise nothing goes out until a slot frees.
//!
//! # What it costs against the ideal
//!
//! The ideal spends every slot as soon as it frees and fills every bulk call: `10·B + S`
//! invitations a window (750), so `N` invitations drain in `⌈N / (10·B + S)⌉` windows, the
//! last one partly (memberships of existing accounts cost no organization budget and are
//! not counted in `N`). Under the rule a bulk call is full while any organization has 10
//! waiting (rule 1) and a single call carries its one (rule 2), so a window carries the
//! ideal's 750 until every organization has fewer than 10 waiting. Only that tail, fewer
//! than `10·K` people for `K` organizations, departs from the ideal: a bulk call then
//! carries an organization's whole remainder, fewer than 10 (rule 3), and only once the
//! single slots are spent. With `K ≤ B` organizations a window's bulk slots alone can empty
//! every remainder, so the tail ends in the window it starts in, or the next one when it
//! starts after that window's bulk slots were spent: at most one window more than the
//! ideal, and none when the last window's singles cover the remainders
//! (`Σ (nₒ mod 10) ≤ S`, true for any `K ≤ 27`) or its bulk slots are not yet spent. Many
//! organizations with a handful waiting each (`K > B`) drain at `S + B` organizations'
//! remainders a window instead.

/// What waits to be invited in one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgWaiting {
    /// People waiting for an invitation.
    pub waiting: usize,
    /// The rank of its first person in the queue of every organization (0 waited longest).
    pub first: usize,
}

/// The next call: which organization (its index among those given) and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextCall {
    Bulk { organization: usize, size: usize },
    Single { organization: usize },
}

/// A bulk call carries at most this many invitations.
pub const MAX_BULK: usize = 10;

/// Picks the next call by the rule above. `single_soon`: a single slot frees within the
/// cycle's wait. `None` when nothing can go out now.
pub fn next_call(
    organizations: &[OrgWaiting],
    bulk_left: u32,
    single_left: u32,
    single_soon: bool,
) -> Option<NextCall> {
    let waiting = || {
        organizations
            .iter()
            .enumerate()
            .filter(|(_, o)| o.waiting > 0)
    };
    if bulk_left > 0 {
        let full = waiting()
            .filter(|(_, o)| o.waiting >= MAX_BULK)
            .min_by_key(|(_, o)| o.first);
        if let Some((organization, _)) = full {
            return Some(NextCall::Bulk {
                organization,
                size: MAX_BULK,
            });
        }
    }
    if single_left > 0 {
        let remainder = waiting()
            .filter(|(_, o)| o.waiting % MAX_BULK != 0)
            .min_by_key(|(_, o)| o.first);
        let any = || waiting().min_by_key(|(_, o)| o.first);
        if let Some((organization, _)) = remainder.or_else(any) {
            return Some(NextCall::Single { organization });
        }
    }
    if bulk_left > 0 && !single_soon {
        let most = waiting().min_by_key(|(_, o)| (std::cmp::Reverse(o.waiting), o.first));
        if let Some((organization, o)) = most {
            return Some(NextCall::Bulk {
                organization,
                size: o.waiting.min(MAX_BULK),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orgs(figures: &[(usize, usize)]) -> Vec<OrgWaiting> {
        figures
            .iter()
            .map(|&(waiting, first)| OrgWaiting { waiting, first })
            .collect()
    }

    #[test]
    fn a_full_bulk_goes_to_the_organization_with_ten_waiting_whose_first_waited_longest() {
        let organizations = orgs(&[(9, 0), (25, 3), (10, 1)]);
        assert_eq!(
            next_call(&organizations, 5, 5, false),
            Some(NextCall::Bulk {
                organization: 2,
                size: 10
            })
        );
    }

    #[test]
    fn single_calls_take_the_remainders_no_full_bulk_can_carry_first() {
        // Bulk slots spent: the single goes to the organization of 13 (3 over), not to the
        // one of 20 whose first waited longer.
        let organizations = orgs(&[(20, 0), (13, 4)]);
        assert_eq!(
            next_call(&organizations, 0, 5, false),
            Some(NextCall::Single { organization: 1 })
        );
        let round = orgs(&[(20, 5), (10, 2)]);
        assert_eq!(
            next_call(&round, 0, 5, false),
            Some(NextCall::Single { organization: 1 })
        );
        // No organization has 10: singles, longest-waiting first.
        let small = orgs(&[(3, 7), (4, 2)]);
        assert_eq!(
            next_call(&small, 5, 5, false),
            Some(NextCall::Single { organization: 1 })
        );
    }

    #[test]
    fn with_the_singles_spent_the_largest_remainder_takes_a_partial_bulk_unless_one_frees_soon() {
        let small = orgs(&[(3, 0), (7, 5), (0, 9)]);
        assert_eq!(
            next_call(&small, 2, 0, false),
            Some(NextCall::Bulk {
                organization: 1,
                size: 7
            })
        );
        assert_eq!(next_call(&small, 2, 0, true), None);
        assert_eq!(next_call(&small, 0, 0, false), None);
        assert_eq!(next_call(&orgs(&[(0, 0)]), 5, 5, false), None);
    }

    /// Drains `sizes` window by window with the rule, returning the windows it took and
    /// the invitations each carried.
    fn drain(sizes: &[usize], bulk: u32, single: u32) -> Vec<usize> {
        let mut organizations: Vec<OrgWaiting> = sizes
            .iter()
            .enumerate()
            .map(|(first, &waiting)| OrgWaiting { waiting, first })
            .collect();
        let mut windows = Vec::new();
        while organizations.iter().any(|o| o.waiting > 0) {
            let (mut bulk_left, mut single_left) = (bulk, single);
            let mut carried = 0;
            while let Some(call) = next_call(&organizations, bulk_left, single_left, false) {
                let (organization, size) = match call {
                    NextCall::Bulk { organization, size } => {
                        bulk_left -= 1;
                        (organization, size)
                    }
                    NextCall::Single { organization } => {
                        single_left -= 1;
                        (organization, 1)
                    }
                };
                organizations[organization].waiting -= size;
                carried += size;
            }
            windows.push(carried);
        }
        windows
    }

    #[test]
    fn a_skewed_backlog_drains_in_as_many_windows_as_the_ideal() {
        // The benchmark's shape: 70% of 1,000, 9 x 100 and 30 x 37 invited, the rest members.
        let mut sizes = vec![700];
        sizes.extend([70; 9]);
        sizes.extend([26; 30]);
        let total: usize = sizes.iter().sum();
        let windows = drain(&sizes, 50, 250);
        let ideal = total.div_ceil(750);
        assert_eq!(windows.len(), ideal, "{windows:?}");
        assert!(windows[..windows.len() - 1].iter().all(|&w| w == 750));
    }

    #[test]
    fn every_window_but_the_last_carries_the_ideal() {
        for sizes in [
            vec![1],
            vec![9; 40],
            vec![11; 40],
            vec![1_000, 3, 3, 3],
            vec![37; 30],
            vec![123, 456, 789, 5, 5, 5, 5, 5],
        ] {
            let windows = drain(&sizes, 50, 250);
            let total: usize = sizes.iter().sum();
            assert_eq!(windows.iter().sum::<usize>(), total);
            assert!(
                windows.len() <= total.div_ceil(750) + 1,
                "{sizes:?}: {windows:?}"
            );
            assert!(
                windows[..windows.len() - 1].iter().all(|&w| w == 750),
                "{sizes:?}: {windows:?}"
            );
        }
    }
}
