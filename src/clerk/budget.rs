//! Clerk's hourly create limits as a budget: what is left in the current window, when more
//! frees up, and how long a backlog takes to drain. Instance invitations and organization
//! invitations each have a budget of their own ([`Invitations`]), of the same shape: a single
//! and a bulk endpoint, each with its calls per window.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::model::Operation;

/// Most invitations one bulk call carries, on either kind of invitation.
pub const BULK_ITEMS: u64 = 10;

/// Which pair of hourly-limited create endpoints a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invitations {
    /// `POST /invitations` and `POST /invitations/bulk`.
    Instance,
    /// `POST /organizations/{id}/invitations` and `…/invitations/bulk`, counted across every
    /// organization of the instance; a bulk call serves one organization.
    Organization,
}

impl Invitations {
    /// The single create's operation; its `as_str` is the endpoint's name where calls are
    /// recorded.
    pub fn single(self) -> Operation {
        match self {
            Invitations::Instance => Operation::CreateInvitation,
            Invitations::Organization => Operation::CreateOrganizationInvitation,
        }
    }

    /// The bulk create's operation.
    pub fn bulk(self) -> Operation {
        match self {
            Invitations::Instance => Operation::CreateBulkInvitations,
            Invitations::Organization => Operation::CreateOrganizationInvitationsBulk,
        }
    }

    /// Each endpoint with its limit from `limits`, bulk first (the order of [`Budget`]'s
    /// fields).
    pub fn endpoints(self, limits: &Limits) -> [(Operation, u32); 2] {
        [
            (self.bulk(), limits.bulk_calls),
            (self.single(), limits.single_calls),
        ]
    }

    /// Clerk's documented limits for this kind: 100 single and 25 bulk calls an hour for
    /// instance invitations, 250 and 50 for organization invitations.
    pub fn default_limits(self) -> Limits {
        match self {
            Invitations::Instance => Limits::default(),
            Invitations::Organization => Limits::organizations(),
        }
    }

    /// The kind whose create `operation` is, if it is one.
    pub fn of(operation: Operation) -> Option<Invitations> {
        [Invitations::Instance, Invitations::Organization]
            .into_iter()
            .find(|kind| kind.single() == operation || kind.bulk() == operation)
    }
}

/// How long past the window's edge a call still counts: invite-sync records a call just
/// before it is sent and Clerk counts it when it arrives, so a slot is taken as free only
/// this long after Clerk's own window lets it go.
pub const EDGE_MARGIN: Duration = Duration::from_secs(1);

/// The hourly limits of the two create endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bulk_calls: u32,
    pub single_calls: u32,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_calls: 25,
            single_calls: 100,
            window: Duration::from_secs(3600),
        }
    }
}

impl Limits {
    /// Clerk's limits on organization invitations, per instance and across all
    /// organizations: 250 single and 50 bulk calls an hour.
    pub fn organizations() -> Limits {
        Limits {
            bulk_calls: 50,
            single_calls: 250,
            window: Duration::from_secs(3600),
        }
    }

    /// Invitations one full window can carry.
    pub fn per_window(&self) -> u64 {
        u64::from(self.bulk_calls) * BULK_ITEMS + u64::from(self.single_calls)
    }
}

/// The most invitations `calls` bulk calls can carry to groups waiting `backlogs` people each,
/// when one call serves one group (an organization) and carries at most [`BULK_ITEMS`]: each
/// backlog cut into tens and a remainder, the `calls` largest parts. Full tens first, then the
/// largest remainders, is the best any choice of calls does.
pub fn bulk_reach(backlogs: &[u64], calls: u64) -> u64 {
    let tens: u64 = backlogs.iter().map(|b| b / BULK_ITEMS).sum();
    if calls <= tens {
        return calls * BULK_ITEMS;
    }
    let mut remainders: Vec<u64> = backlogs
        .iter()
        .map(|b| b % BULK_ITEMS)
        .filter(|r| *r > 0)
        .collect();
    remainders.sort_unstable_by(|a, b| b.cmp(a));
    let extra = usize::try_from(calls - tens).unwrap_or(usize::MAX);
    tens * BULK_ITEMS + remainders.iter().take(extra).sum::<u64>()
}

/// One endpoint's state in the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Calls still allowed now.
    pub left: u32,
    /// When the oldest counted call leaves the window (or a stored block ends), if the
    /// endpoint is used up or blocked.
    pub frees_at: Option<DateTime<Utc>>,
    /// Until when a 429 blocks the endpoint.
    pub blocked_until: Option<DateTime<Utc>>,
}

/// The budget as the calls recorded in Postgres say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub bulk: Endpoint,
    pub single: Endpoint,
}

impl Endpoint {
    /// From the call times within the window (oldest first) and a stored block.
    pub fn from_calls(
        limit: u32,
        window: Duration,
        calls: &[DateTime<Utc>],
        blocked_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Endpoint {
        let window =
            chrono::Duration::from_std(window + EDGE_MARGIN).unwrap_or(chrono::Duration::hours(1));
        let used = calls.iter().filter(|t| **t > now - window).count() as u32;
        let mut left = limit.saturating_sub(used);
        let blocked = blocked_until.filter(|until| *until > now);
        if blocked.is_some() {
            left = 0;
        }
        let used_up_until = if limit.saturating_sub(used) == 0 {
            // The call that must leave before one more is allowed.
            let excess = (used - limit) as usize;
            calls
                .iter()
                .filter(|t| **t > now - window)
                .nth(excess)
                .map(|t| *t + window)
        } else {
            None
        };
        Endpoint {
            left,
            frees_at: match (used_up_until, blocked) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            blocked_until: blocked,
        }
    }
}

impl Budget {
    /// Invitations that can still be sent in this window.
    pub fn capacity_now(&self) -> u64 {
        u64::from(self.bulk.left) * 10 + u64::from(self.single.left)
    }

    /// The earliest time more capacity frees up, when some endpoint is used up.
    pub fn next_free_at(&self) -> Option<DateTime<Utc>> {
        match (self.bulk.frees_at, self.single.frees_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When a create can next go out on either endpoint: now while one has a slot left,
    /// else when the first frees.
    pub fn next_slot_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.bulk.left > 0 || self.single.left > 0 {
            return now;
        }
        self.next_free_at().unwrap_or(now).max(now)
    }

    /// How long `backlog` invitations take at most to drain at the limits' pace.
    pub fn eta(&self, backlog: u64, limits: &Limits, now: DateTime<Utc>) -> Duration {
        if backlog == 0 {
            return Duration::ZERO;
        }
        let now_capacity = self.capacity_now();
        if backlog <= now_capacity {
            return Duration::ZERO;
        }
        let rest = backlog - now_capacity;
        let per_window = limits.per_window().max(1);
        let windows = rest.div_ceil(per_window);
        // When no endpoint is used up, the calls sent now free their slots a whole window
        // later (at most): that is when the next window's worth can go.
        let first = self
            .next_free_at()
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or(limits.window);
        first + limits.window * (windows.saturating_sub(1) as u32)
    }

    /// How long the backlogs of several groups take at most to drain when a bulk call serves
    /// one group only (organization invitations: `backlogs` holds each organization's
    /// waiting people). The least whole number of windows after the first frees in which the
    /// calls left now and each later window's calls can carry everyone, bulk calls spent as
    /// [`bulk_reach`] says and single calls on the rest: the ideal no choice of calls beats.
    /// When no endpoint is used up, the calls sent now free their window's slots a whole
    /// window later, so that is when the first window after this one starts.
    pub fn eta_grouped(&self, backlogs: &[u64], limits: &Limits, now: DateTime<Utc>) -> Duration {
        let total: u64 = backlogs.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let bulk = u64::from(limits.bulk_calls);
        let single = u64::from(limits.single_calls);
        let carries = |windows: u64| {
            bulk_reach(backlogs, u64::from(self.bulk.left) + windows * bulk)
                + u64::from(self.single.left)
                + windows * single
        };
        if carries(0) >= total {
            return Duration::ZERO;
        }
        // Every call carries at least one person while anyone waits, so this many windows
        // are always enough (when any call is allowed at all).
        let mut high = total.div_ceil((bulk + single).max(1));
        let mut low = 1;
        while low < high {
            let middle = low + (high - low) / 2;
            if carries(middle) >= total {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        let first = self
            .next_free_at()
            .map_or(limits.window, |t| (t - now).to_std().unwrap_or_default());
        first + limits.window * (low.saturating_sub(1).min(u64::from(u32::MAX)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn calls_inside_the_window_use_it_up_and_the_oldest_frees_it() {
        let window = Duration::from_secs(3600);
        let calls: Vec<_> = (0..25).map(|i| at(i * 10)).collect();
        let endpoint = Endpoint::from_calls(25, window, &calls, None, at(600));
        assert_eq!(endpoint.left, 0);
        assert_eq!(
            endpoint.frees_at,
            Some(at(3601)),
            "the window plus its edge margin"
        );
        let later = Endpoint::from_calls(25, window, &calls, None, at(3606));
        assert_eq!(later.left, 1, "the first call left the window");
    }

    #[test]
    fn a_stored_block_empties_the_endpoint_until_it_ends() {
        let endpoint =
            Endpoint::from_calls(100, Duration::from_secs(3600), &[], Some(at(90)), at(0));
        assert_eq!((endpoint.left, endpoint.frees_at), (0, Some(at(90))));
        let passed =
            Endpoint::from_calls(100, Duration::from_secs(3600), &[], Some(at(90)), at(91));
        assert_eq!((passed.left, passed.blocked_until), (100, None));
    }

    #[test]
    fn the_eta_counts_whole_windows_after_the_first_frees() {
        let limits = Limits::default();
        let used_up = Budget {
            bulk: Endpoint {
                left: 0,
                frees_at: Some(at(1800)),
                blocked_until: None,
            },
            single: Endpoint {
                left: 0,
                frees_at: Some(at(1800)),
                blocked_until: None,
            },
        };
        assert_eq!(used_up.eta(0, &limits, at(0)), Duration::ZERO);
        assert_eq!(used_up.eta(350, &limits, at(0)), Duration::from_secs(1800));
        assert_eq!(
            used_up.eta(351, &limits, at(0)),
            Duration::from_secs(1800 + 3600)
        );
        let fresh = Budget {
            bulk: Endpoint {
                left: 25,
                frees_at: None,
                blocked_until: None,
            },
            single: Endpoint {
                left: 100,
                frees_at: None,
                blocked_until: None,
            },
        };
        assert_eq!(fresh.eta(350, &limits, at(0)), Duration::ZERO);
        // Past a fresh window's worth, the rest waits for the calls sent now to age out.
        assert_eq!(fresh.eta(351, &limits, at(0)), Duration::from_secs(3600));
        assert_eq!(fresh.eta(700, &limits, at(0)), Duration::from_secs(3600));
        assert_eq!(fresh.eta(701, &limits, at(0)), Duration::from_secs(7200));
    }

    fn left(bulk: u32, single: u32, frees_at: Option<DateTime<Utc>>) -> Budget {
        let endpoint = |left: u32| Endpoint {
            left,
            frees_at: if left == 0 { frees_at } else { None },
            blocked_until: None,
        };
        Budget {
            bulk: endpoint(bulk),
            single: endpoint(single),
        }
    }

    #[test]
    fn each_kind_counts_its_own_endpoints_under_the_names_calls_are_recorded_by() {
        let names = |kind: Invitations| {
            kind.endpoints(&kind.default_limits())
                .map(|(operation, limit)| (operation.as_str(), limit))
        };
        assert_eq!(
            names(Invitations::Instance),
            [("create_bulk_invitations", 25), ("create_invitation", 100)]
        );
        assert_eq!(
            names(Invitations::Organization),
            [
                ("create_organization_invitations_bulk", 50),
                ("create_organization_invitation", 250)
            ]
        );
        assert_eq!(Limits::organizations().per_window(), 750);
        assert_eq!(
            Invitations::of(Operation::CreateOrganizationInvitationsBulk),
            Some(Invitations::Organization)
        );
        assert_eq!(
            Invitations::of(Operation::CreateInvitation),
            Some(Invitations::Instance)
        );
        assert_eq!(
            Invitations::of(Operation::CreateOrganizationMembership),
            None
        );
    }

    #[test]
    fn bulk_calls_reach_full_tens_first_then_the_largest_remainders() {
        let backlogs = [25, 7, 3, 0];
        let reach: Vec<u64> = (0..=7).map(|calls| bulk_reach(&backlogs, calls)).collect();
        assert_eq!(reach, [0, 10, 20, 27, 32, 35, 35, 35]);
        assert_eq!(bulk_reach(&[], 5), 0);
    }

    #[test]
    fn the_grouped_eta_counts_what_bulk_calls_of_one_organization_each_can_carry() {
        let limits = Limits::organizations();
        let fresh = left(50, 250, None);
        // Forty organizations of nine: each bulk call carries nine, 450 + 250 singles.
        assert_eq!(fresh.eta_grouped(&[9; 40], &limits, at(0)), Duration::ZERO);
        assert_eq!(fresh.eta_grouped(&[], &limits, at(0)), Duration::ZERO);
        // A thousand organizations of one: 300 a window, so three more windows after this
        // one, the first starting when this one's calls leave it.
        let ones = vec![1; 1000];
        assert_eq!(
            fresh.eta_grouped(&ones, &limits, at(0)),
            Duration::from_secs(3 * 3600)
        );
        // The same thousand in one organization fill their bulk calls: 750 a window.
        assert_eq!(
            fresh.eta_grouped(&[1000], &limits, at(0)),
            Duration::from_secs(3600)
        );
        let used_up = left(0, 0, Some(at(1800)));
        assert_eq!(
            used_up.eta_grouped(&[750], &limits, at(0)),
            Duration::from_secs(1800)
        );
        assert_eq!(
            used_up.eta_grouped(&[751], &limits, at(0)),
            Duration::from_secs(1800 + 3600)
        );
        assert_eq!(
            used_up.eta_grouped(&ones, &limits, at(0)),
            Duration::from_secs(1800 + 3 * 3600)
        );
    }
}
