//! When a failed delivery is tried again: the retry schedule, a receiver's
//! `Retry-After`, and a little jitter.
//!
//! The schedule lists the waits before each retry; an event gets one attempt more than
//! it has waits. The default is the Standard Webhooks (Svix) one: at once, then after
//! 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h — eight attempts over about 27 hours.
//! A receiver's `Retry-After` (seconds or an HTTP date) lengthens a wait, never
//! shortens it, and is capped at [`RETRY_AFTER_MAX`] so a receiver cannot park a
//! subscription for longer. Each wait gets up to a tenth more at random, so that
//! subscriptions failing together do not retry in lockstep; never less.

use std::time::{Duration, SystemTime};

/// The default waits before each retry.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest `Retry-After` honoured.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// A `Retry-After` value: delay-seconds or an HTTP date (then measured from `now`; a
/// date in the past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How long to wait before the next attempt: the scheduled wait, lengthened to the
/// receiver's `Retry-After` (capped) if it asked for more, plus up to a tenth of jitter.
pub fn next_wait(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    let wait = match retry_after {
        Some(ra) => scheduled.max(ra.min(RETRY_AFTER_MAX)),
        None => scheduled,
    };
    wait + wait.mul_f64(rand::random::<f64>() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn a_wait_is_never_shorter_than_scheduled_or_asked_and_retry_after_is_capped() {
        let s = Duration::from_secs(10);
        for _ in 0..100 {
            let w = next_wait(s, None);
            assert!(w >= s && w <= s + s / 10, "{w:?}");
            let w = next_wait(s, Some(Duration::from_secs(30)));
            assert!(w >= Duration::from_secs(30), "{w:?}");
            assert!(next_wait(s, Some(Duration::from_secs(1))) >= s);
            let w = next_wait(s, Some(Duration::from_secs(365 * 24 * 3600)));
            assert!(
                w >= RETRY_AFTER_MAX && w <= RETRY_AFTER_MAX * 11 / 10,
                "{w:?}"
            );
        }
    }

    #[test]
    fn the_default_schedule_spans_more_than_a_day() {
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total > Duration::from_secs(24 * 3600), "{total:?}");
        assert_eq!(DEFAULT_SCHEDULE.len() + 1, 8, "eight attempts");
    }
}
