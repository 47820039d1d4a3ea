//! When an attempt is tried again: Svix's schedule, a receiver's
//! `Retry-After`, and what each answer means.

use std::time::Duration;

use tributary_core::Timestamp;
use tributary_store::Attempted;

/// Svix's retry schedule: the delay before each attempt — the first at
/// once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the
/// attempt before (eight attempts in all, about 27.6 hours).
pub const SVIX_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3_600),
    Duration::from_secs(5 * 3_600),
    Duration::from_secs(10 * 3_600),
    Duration::from_secs(10 * 3_600),
];

/// What an answer (or its absence) means for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: delivered.
    Delivered(u16),
    /// 410 Gone: the receiver wants no more; the subscription is disabled.
    Gone,
    /// Anything else — a timeout, a refused connection, 429, 5xx or any
    /// other status: tried again, not before `not_before` if the receiver
    /// said so (`Retry-After`).
    Failed {
        status: Option<u16>,
        error: String,
        not_before: Option<Timestamp>,
    },
}

impl Verdict {
    /// The verdict on an HTTP answer with `status`, whose `Retry-After`
    /// header (if any) is `retry_after`, at `now`.
    pub fn of_status(status: u16, retry_after_header: Option<&str>, now: Timestamp) -> Self {
        match status {
            200..=299 => Verdict::Delivered(status),
            410 => Verdict::Gone,
            _ => {
                let reason = http_reason(status);
                let not_before = retry_after_header.and_then(|value| retry_after(value, now));
                let error = match retry_after_header {
                    Some(value) => format!("HTTP {status}{reason} (Retry-After: {value})"),
                    None => format!("HTTP {status}{reason}"),
                };
                Verdict::Failed {
                    status: Some(status),
                    error,
                    not_before,
                }
            }
        }
    }

    /// What the store records of attempt number `attempt` (1 = the first)
    /// ending with this verdict at `now`: the next attempt by `schedule`
    /// (its delay after this one, or the receiver's `Retry-After` if later,
    /// up to `max_retry_after`), or a dead letter after the last.
    pub fn settle(
        self,
        attempt: i64,
        now: Timestamp,
        schedule: &[Duration],
        max_retry_after: Duration,
    ) -> Attempted {
        match self {
            Verdict::Delivered(status) => Attempted::Delivered { status },
            Verdict::Gone => Attempted::Gone {
                error: format!(
                    "the receiver answered 410 Gone at {}: it wants no more messages",
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            },
            Verdict::Failed {
                status,
                error,
                not_before,
            } => {
                let next = usize::try_from(attempt)
                    .ok()
                    .and_then(|n| schedule.get(n))
                    .copied();
                let Some(delay) = next else {
                    return Attempted::Dead {
                        status,
                        error: format!("{error}; attempt {attempt} was the last"),
                    };
                };
                let later = |by: Duration| {
                    now.checked_add_signed(to_chrono(by))
                        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
                };
                let mut at = later(delay);
                if let Some(asked) = not_before {
                    at = at.max(asked.min(later(max_retry_after)));
                }
                Attempted::Retry { status, error, at }
            }
        }
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// When a `Retry-After` value (whole seconds, or an HTTP date) says to try
/// again, at `now`; `None` when it is neither.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        // Any number a receiver sends: past the end of time is the end of
        // time (the caller caps it anyway).
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        return Some(
            chrono::TimeDelta::try_seconds(seconds)
                .and_then(|delay| now.checked_add_signed(delay))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        );
    }
    // An HTTP date (IMF-fixdate, e.g. `Wed, 21 Oct 2026 07:28:00 GMT`) is
    // an RFC 2822 date.
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|at| at.to_utc())
}

fn http_reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or_else(String::new, |reason| format!(" {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_retry_after_is_no_panic() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .unwrap()
            .to_utc();
        for value in [
            "10000000000000",
            "18446744073709551615",
            "9223372036854775807",
        ] {
            let at = retry_after(value, now).unwrap();
            assert!(at > now, "{value}");
        }
    }

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn next_at(attempt: i64, verdict: Verdict) -> Attempted {
        verdict.settle(
            attempt,
            t0(),
            &SVIX_SCHEDULE,
            Duration::from_secs(24 * 3_600),
        )
    }

    #[test]
    fn failures_follow_svix_schedule_then_die() {
        let failed = || Verdict::of_status(500, None, t0());
        let waits: Vec<i64> = (1..=7)
            .map(|attempt| match next_at(attempt, failed()) {
                Attempted::Retry { at, status, error } => {
                    assert_eq!(status, Some(500));
                    assert_eq!(error, "HTTP 500 Internal Server Error");
                    (at - t0()).num_seconds()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            waits,
            [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000],
            "5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h"
        );
        assert!(matches!(
            next_at(8, failed()),
            Attempted::Dead { status: Some(500), ref error } if error.contains("attempt 8 was the last")
        ));
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(Verdict::of_status(204, None, t0()), Verdict::Delivered(204));
        assert_eq!(Verdict::of_status(410, None, t0()), Verdict::Gone);
        assert!(matches!(
            next_at(1, Verdict::Gone),
            Attempted::Gone { ref error } if error.contains("410 Gone")
        ));
        // Every other status is a failure, retried: 3xx (redirects are not
        // followed), 4xx, 5xx.
        for status in [301, 400, 401, 404, 429, 502, 503] {
            assert!(matches!(
                Verdict::of_status(status, None, t0()),
                Verdict::Failed { status: Some(s), .. } if s == status
            ));
        }
    }

    #[test]
    fn retry_after_is_obeyed_when_later_than_the_schedule() {
        // Seconds: 90 s after attempt 1 (the schedule says 5 s).
        let asked = Verdict::of_status(429, Some("90"), t0());
        assert!(matches!(
            next_at(1, asked),
            Attempted::Retry { at, ref error, .. }
                if (at - t0()).num_seconds() == 90 && error == "HTTP 429 Too Many Requests (Retry-After: 90)"
        ));
        // Shorter than the schedule: the schedule wins.
        let asked = Verdict::of_status(429, Some("1"), t0());
        assert!(matches!(
            next_at(3, asked),
            Attempted::Retry { at, .. } if (at - t0()).num_seconds() == 1_800
        ));
        // An HTTP date.
        let asked = Verdict::of_status(503, Some("Fri, 01 May 2026 12:10:00 GMT"), t0());
        assert!(matches!(
            next_at(2, asked),
            Attempted::Retry { at, .. } if (at - t0()).num_seconds() == 600
        ));
        // Unreadable: the schedule; absurdly far: cut to a day.
        assert_eq!(retry_after("soon", t0()), None);
        let asked = Verdict::of_status(429, Some("99999999"), t0());
        assert!(matches!(
            next_at(1, asked),
            Attempted::Retry { at, .. } if (at - t0()).num_seconds() == 86_400
        ));
    }
}
