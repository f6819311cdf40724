//! Clerk's hourly create limits as a budget: what is left in the current window, when more
//! frees up, and how long a backlog takes to drain.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    /// Invitations one full window can carry.
    pub fn per_window(&self) -> u64 {
        u64::from(self.bulk_calls) * 10 + u64::from(self.single_calls)
    }
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
        let first = self
            .next_free_at()
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or_default();
        first + limits.window * (windows.saturating_sub(1) as u32)
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
    }
}
