//! When a cycle lists every invitation rather than the pending ones: the first cycle ever,
//! and the first after each tick of `sync.full_schedule`.

use chrono::{DateTime, Utc};

/// A six- or seven-field cron expression, read the way the scheduler reads `sync.schedule`.
pub fn parse_schedule(expression: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .ok()
}

/// Whether a cycle at `now` lists every invitation: the first cycle ever, and the first one
/// after each tick of the full schedule since the last full listing began.
pub fn full_listing_due(
    schedule: Option<&croner::Cron>,
    last_full: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let (Some(schedule), Some(last_full)) = (schedule, last_full) else {
        return true;
    };
    schedule
        .find_previous_occurrence(&now, true)
        .is_ok_and(|tick| tick > last_full)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, hour, minute, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn the_first_cycle_ever_lists_in_full() {
        let daily = parse_schedule("0 0 3 * * *");
        assert!(daily.is_some());
        assert!(full_listing_due(daily.as_ref(), None, at(12, 0)));
    }

    #[test]
    fn a_full_listing_is_due_once_after_each_tick_of_the_full_schedule() {
        let daily = parse_schedule("0 0 3 * * *");
        let yesterday_noon = at(12, 0) - chrono::Duration::days(1);
        assert!(full_listing_due(
            daily.as_ref(),
            Some(yesterday_noon),
            at(3, 0)
        ));
        assert!(full_listing_due(
            daily.as_ref(),
            Some(yesterday_noon),
            at(3, 5)
        ));
        assert!(!full_listing_due(daily.as_ref(), Some(at(3, 5)), at(3, 10)));
        assert!(!full_listing_due(
            daily.as_ref(),
            Some(at(3, 5)),
            at(23, 55)
        ));
        assert!(!full_listing_due(
            daily.as_ref(),
            Some(yesterday_noon),
            at(2, 55)
        ));
    }

    #[test]
    fn a_schedule_that_cannot_be_read_lists_in_full_every_cycle() {
        assert!(parse_schedule("not cron").is_none());
        assert!(full_listing_due(None, Some(at(3, 5)), at(3, 10)));
    }
}
