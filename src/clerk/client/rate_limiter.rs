//! The client's own request rate: a sliding window kept below Clerk's limit.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A sliding-window limiter: at most `rate.requests` calls start in any `rate.per`, less a
/// safety margin (see [`RequestRate::with_margin`]).
pub(super) struct RateLimiter {
    rate: RequestRate,
    started: Mutex<VecDeque<Instant>>,
}

/// A request rate: at most `requests` in any `per` interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    pub requests: u32,
    pub per: Duration,
}

impl RequestRate {
    /// The rate kept to so that Clerk's own count never reaches its limit: Clerk counts a
    /// request when it arrives, and arrivals bunch up when latency varies, so the limiter
    /// allows 1 in 20 fewer requests (at least one fewer when there are two or more) in a
    /// window 1/40 longer (95 in 10.25 s for Clerk's 100 in 10 s).
    pub fn with_margin(self) -> RequestRate {
        let spare = (self.requests / 20)
            .max(1)
            .min(self.requests.saturating_sub(1));
        RequestRate {
            requests: self.requests - spare,
            per: self.per + self.per / 40,
        }
    }
}

impl RateLimiter {
    pub(super) fn new(rate: RequestRate) -> Self {
        RateLimiter {
            rate: rate.with_margin(),
            started: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until a request could start now, without taking its place.
    pub(super) async fn wait_for_room(&self) {
        loop {
            let started = self.started.lock().await;
            let now = Instant::now();
            let live = started
                .iter()
                .filter(|t| now.duration_since(**t) < self.rate.per)
                .count();
            if live < self.rate.requests.max(1) as usize {
                return;
            }
            let free_at = started
                .iter()
                .find(|t| now.duration_since(**t) < self.rate.per)
                .map(|t| *t + self.rate.per);
            drop(started);
            if let Some(free_at) = free_at {
                tokio::time::sleep_until(free_at).await;
            }
        }
    }

    pub(super) async fn acquire(&self) {
        loop {
            let mut started = self.started.lock().await;
            let now = Instant::now();
            while started
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.rate.per)
            {
                started.pop_front();
            }
            if started.len() < self.rate.requests.max(1) as usize {
                started.push_back(now);
                return;
            }
            let free_at = started.front().map(|t| *t + self.rate.per);
            drop(started);
            if let Some(free_at) = free_at {
                tokio::time::sleep_until(free_at).await;
            }
        }
    }
}
