//! PCO's rate limit: a fixed window of `limit` requests per `period` for each [`Principal`].
//!
//! A principal's window starts at its first request after its previous window ended. Every
//! response to an authenticated API request carries
//!
//! * `X-PCO-API-Request-Rate-Count`: requests used in the current window, this one included;
//! * `X-PCO-API-Request-Rate-Limit`: the limit that applied to this request;
//! * `X-PCO-API-Request-Rate-Period`: the window length in whole seconds.
//!
//! A request over the limit is answered `429 Too Many Requests` with `Retry-After` (whole
//! seconds until the window ends, at least 1) and a JSON:API error body; it does not count.
//! Requests for an `offset` above [`DEEP_OFFSET`] are checked against (and report) the lower
//! [`RateLimit::deep_offset_limit`], sharing the window's count with the other requests.
//!
//! Time is [`tokio::time::Instant`], so tests can drive windows with `tokio::time::pause()`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::Simulator;
use crate::error::SimError;
use crate::middleware::Principal;
use crate::query::parse_pairs;

/// Requests for an `offset` above this are "deep" (see [`RateLimit::deep_offset_limit`]).
pub const DEEP_OFFSET: u64 = 30_000;

/// Header: requests used in the current window, including this one.
pub const HEADER_COUNT: &str = "x-pco-api-request-rate-count";
/// Header: the limit of the current window.
pub const HEADER_LIMIT: &str = "x-pco-api-request-rate-limit";
/// Header: the window length in seconds.
pub const HEADER_PERIOD: &str = "x-pco-api-request-rate-period";

/// A rate limit per principal (static token, HTTP Basic application, or OAuth grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u32,
    /// The window length (reported in whole seconds, rounded up).
    pub period: Duration,
    /// The lower limit for requests with an `offset` above [`DEEP_OFFSET`], if any.
    pub deep_offset_limit: Option<u32>,
}

impl RateLimit {
    /// `limit` requests per `period`, without a separate deep-offset limit.
    pub fn new(limit: u32, period: Duration) -> Self {
        RateLimit {
            limit,
            period,
            deep_offset_limit: None,
        }
    }

    /// PCO's limit: 100 requests per 20 seconds, 75 for offsets above 30,000.
    pub fn pco() -> Self {
        RateLimit {
            limit: 100,
            period: Duration::from_secs(20),
            deep_offset_limit: Some(75),
        }
    }

    /// The limit that applies to a request (deep or not).
    fn limit_for(&self, deep: bool) -> u32 {
        match self.deep_offset_limit {
            Some(l) if deep => l.min(self.limit),
            _ => self.limit,
        }
    }

    /// The period in whole seconds (rounded up, at least 1).
    fn period_secs(&self) -> u64 {
        ceil_secs(self.period)
    }
}

/// Whole seconds, rounded up, at least 1.
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// One principal's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u32,
}

/// The outcome of one request against the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Requests used in the window (including this one, if admitted).
    pub(crate) count: u32,
    /// The limit that applied.
    pub(crate) limit: u32,
    /// The window length in whole seconds.
    pub(crate) period_secs: u64,
    /// `Some(seconds until the window ends)` when refused.
    pub(crate) retry_after: Option<u64>,
}

impl Usage {
    fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            (HEADER_COUNT, u64::from(self.count)),
            (HEADER_LIMIT, u64::from(self.limit)),
            (HEADER_PERIOD, self.period_secs),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

/// The windows of every principal.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    config: Option<RateLimit>,
    windows: Mutex<HashMap<Principal, Window>>,
}

impl RateLimiter {
    pub(crate) fn new(config: Option<RateLimit>) -> Self {
        RateLimiter {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `principal` at `now` unless it is over the limit.
    pub(crate) fn acquire(&self, principal: &Principal, deep: bool, now: Instant) -> Option<Usage> {
        let config = self.config?;
        let limit = config.limit_for(deep);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(principal.clone()).or_insert(Window {
            start: now,
            used: 0,
        });
        if now.saturating_duration_since(window.start) >= config.period {
            *window = Window {
                start: now,
                used: 0,
            };
        }
        let retry_after = if window.used >= limit {
            let ends = window.start + config.period;
            Some(ceil_secs(ends.saturating_duration_since(now)))
        } else {
            window.used += 1;
            None
        };
        Some(Usage {
            count: window.used,
            limit,
            period_secs: config.period_secs(),
            retry_after,
        })
    }
}

/// Whether the query asks for an `offset` above [`DEEP_OFFSET`].
fn is_deep(raw_query: Option<&str>) -> bool {
    raw_query.is_some_and(|q| q.contains("offset"))
        && parse_pairs(raw_query)
            .iter()
            .any(|(k, v)| k == "offset" && v.trim().parse::<u64>().is_ok_and(|o| o > DEEP_OFFSET))
}

/// The 429 answer for a refused request.
pub(crate) fn too_many_requests(detail: String) -> Response {
    SimError::new(429, "too_many_requests", detail).into_response()
}

/// Layer below auth: counts the request against its principal's window, refuses it with a 429
/// when the window is full, and adds the rate headers to every response.
pub(crate) async fn rate_limit(State(sim): State<Simulator>, req: Request, next: Next) -> Response {
    let Some(principal) = req.extensions().get::<Principal>() else {
        return next.run(req).await;
    };
    let deep = is_deep(req.uri().query());
    let Some(usage) = sim.inner.limiter.acquire(principal, deep, Instant::now()) else {
        return next.run(req).await;
    };
    let mut resp = if usage.retry_after.is_some() {
        sim.inner.stats.rate_limited();
        too_many_requests(format!(
            "Rate limit exceeded: {} of {} requests per {} seconds",
            usage.count, usage.limit, usage.period_secs
        ))
    } else {
        next.run(req).await
    };
    usage.write_headers(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_offsets_are_recognised() {
        assert!(!is_deep(None));
        assert!(!is_deep(Some("per_page=100&offset=30000")));
        assert!(is_deep(Some("per_page=100&offset=30001")));
        assert!(is_deep(Some("offset=99999&order=id")));
        assert!(!is_deep(Some("offset=abc")));
        assert!(!is_deep(Some("where%5Boffset%5D=40000")));
    }

    #[test]
    fn fixed_windows_per_principal() {
        let limiter = RateLimiter::new(Some(RateLimit::new(2, Duration::from_secs(10))));
        let a = Principal::Token("a".into());
        let b = Principal::App("b".into());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let count = |u: Option<Usage>| u.map(|u| (u.count, u.retry_after));
        assert_eq!(count(limiter.acquire(&a, false, at(0))), Some((1, None)));
        assert_eq!(count(limiter.acquire(&a, false, at(3))), Some((2, None)));
        assert_eq!(count(limiter.acquire(&a, false, at(3))), Some((2, Some(7))));
        assert_eq!(count(limiter.acquire(&b, false, at(3))), Some((1, None)));
        // The window ends 10 s after its first request, not after the last one.
        assert_eq!(count(limiter.acquire(&a, false, at(10))), Some((1, None)));
        assert!(RateLimiter::new(None).acquire(&a, false, at(0)).is_none());
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(20)), 20);
    }
}
