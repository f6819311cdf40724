//! The simulator's wall clock: Unix milliseconds, as Clerk's timestamps are.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (0 before the epoch, `i64::MAX` past its range).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
