//! Fault injection: what a flaky API and the proxies in front of it do to a client (see
//! [`Faults`] for the kinds and the rules). Applied by [`inject_faults`] to API requests only,
//! below authentication and the real rate limit; hangs and latency end early when the server
//! shuts down, so shutdown stays fast.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Simulator;
use crate::error::{SimError, json_response};
use crate::ratelimit::too_many_requests;
use crate::rng::Rng;

/// `Rng` tag of fault decisions (distinct from the data generator's tags).
const FAULT_TAG: u64 = 0xFA17_5EED;

/// Which faults to inject into API requests (`/people/v2/...`), and how often. The default
/// injects nothing.
///
/// Every API request first waits [`Faults::latency`]; then its fate is decided:
///
/// | kind | probability | answer |
/// | --- | --- | --- |
/// | injected 429 | [`Faults::p429`] | `429`, `Retry-After: 1`, JSON:API error |
/// | 5xx | [`Faults::p5xx`] | 500, 502, 503 or 504; 502 is an HTML page (`text/html`) as a proxy sends it, the others JSON:API errors |
/// | timeout | [`Faults::timeout`] | nothing for [`Faults::hang`], then a JSON:API `504` |
/// | reset | [`Faults::reset`] | the real status and headers, half the body, then the connection breaks |
/// | malformed | [`Faults::malformed`] | the real status (200), `application/json`, the body cut to half (invalid JSON) |
///
/// Probabilities are per request, in `0.0..=1.0` (values outside are clamped); they are
/// tried in the order 429, 5xx, timeout, reset, malformed, so if they add up to more than 1
/// the later kinds get what is left.
///
/// The fate of a request is a pure function of the seed, the method, the path and query, and
/// how many times that exact method and URL had reached the fault layer before (the
/// attempt), so the k-th attempt of a URL always meets the same fate, whatever other
/// requests run concurrently. Requests refused by authentication or the real rate limit do
/// not reach the fault layer and are not attempts. Attempts from [`Faults::max_per_url`] on
/// are never faulted: every URL eventually succeeds.
///
/// Hangs and latency end early when the server shuts down. The control API (`/__sim/...`)
/// and OAuth (`/oauth/...`) are never faulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Probability of an injected `429 Too Many Requests` (`Retry-After: 1`).
    pub p429: f64,
    /// Probability of a 500, 502 (HTML), 503 or 504.
    pub p5xx: f64,
    /// Probability of a request hanging for [`Faults::hang`], then answering 504.
    pub timeout: f64,
    /// Probability of the connection breaking in the middle of the body.
    pub reset: f64,
    /// Probability of a body cut in half (invalid JSON).
    pub malformed: f64,
    /// Added to every API request.
    pub latency: Duration,
    /// How long a timeout hangs before answering 504.
    pub hang: Duration,
    /// Attempts of one URL from this one on (counting from 0) are never faulted.
    pub max_per_url: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            p429: 0.0,
            p5xx: 0.0,
            timeout: 0.0,
            reset: 0.0,
            malformed: 0.0,
            latency: Duration::ZERO,
            hang: Duration::from_secs(30),
            max_per_url: 5,
        }
    }
}

impl Faults {
    /// The probabilities in decision order, clamped to `0.0..=1.0`.
    fn probabilities(&self) -> [(f64, FaultKind); 5] {
        let p = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        [
            (p(self.p429), FaultKind::TooManyRequests),
            (p(self.p5xx), FaultKind::ServerError),
            (p(self.timeout), FaultKind::Timeout),
            (p(self.reset), FaultKind::Reset),
            (p(self.malformed), FaultKind::Malformed),
        ]
    }

    /// Whether any fault can be injected (latency aside).
    pub fn any(&self) -> bool {
        self.max_per_url > 0 && self.probabilities().iter().any(|(p, _)| *p > 0.0)
    }

    /// The fate of the `attempt`-th request (from 0) of `method` `url` (path and query).
    pub(crate) fn fate(&self, seed: u64, method: &str, url: &str, attempt: u32) -> Option<Fate> {
        if attempt >= self.max_per_url {
            return None;
        }
        let mut rng = Rng::new(seed, FAULT_TAG ^ fnv1a(method, url), u64::from(attempt));
        // 53 random bits → uniform in [0, 1).
        let roll = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut edge = 0.0;
        for (p, kind) in self.probabilities() {
            edge += p;
            if roll < edge {
                return Some(match kind {
                    FaultKind::TooManyRequests => Fate::TooManyRequests,
                    FaultKind::ServerError => Fate::ServerError(*rng.pick(&[500, 502, 503, 504])),
                    FaultKind::Timeout => Fate::Timeout,
                    FaultKind::Reset => Fate::Reset,
                    FaultKind::Malformed => Fate::Malformed,
                });
            }
        }
        None
    }
}

/// FNV-1a over `method`, a separator and `url` (stable across versions and platforms).
fn fnv1a(method: &str, url: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in method.bytes().chain([b' ']).chain(url.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The kinds of injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FaultKind {
    TooManyRequests,
    ServerError,
    Timeout,
    Reset,
    Malformed,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    TooManyRequests,
    ServerError(u16),
    Timeout,
    Reset,
    Malformed,
}

impl Fate {
    pub(crate) fn kind(self) -> FaultKind {
        match self {
            Fate::TooManyRequests => FaultKind::TooManyRequests,
            Fate::ServerError(_) => FaultKind::ServerError,
            Fate::Timeout => FaultKind::Timeout,
            Fate::Reset => FaultKind::Reset,
            Fate::Malformed => FaultKind::Malformed,
        }
    }
}

/// The injector: the configuration and how often each URL has been attempted.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    seed: u64,
    config: Faults,
    active: bool,
    attempts: Mutex<HashMap<String, u32>>,
    /// API requests that reached the fault layer.
    seen: AtomicU64,
    /// From this many API requests on, every one answers 503 (an outage);
    /// `u64::MAX`: none.
    outage_after: AtomicU64,
}

impl FaultInjector {
    /// Starts an outage once `after` more API requests have been answered
    /// (0: now); `None` ends it.
    pub(crate) fn set_outage(&self, after: Option<u64>) {
        let at = after.map_or(u64::MAX, |after| {
            self.seen.load(Ordering::Relaxed).saturating_add(after)
        });
        self.outage_after.store(at, Ordering::Relaxed);
    }

    /// Counts an API request; true when it falls in an outage.
    fn in_outage(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed) >= self.outage_after.load(Ordering::Relaxed)
    }

    pub(crate) fn new(seed: u64, config: Faults) -> Self {
        FaultInjector {
            seed,
            active: config.any(),
            config,
            attempts: Mutex::new(HashMap::new()),
            seen: AtomicU64::new(0),
            outage_after: AtomicU64::new(u64::MAX),
        }
    }

    /// Counts an attempt of `method` `url` and decides its fate.
    fn decide(&self, method: &str, url: &str) -> Option<Fate> {
        if !self.active {
            return None;
        }
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(format!("{method} {url}")).or_insert(0);
            let attempt = *n;
            *n = n.saturating_add(1);
            attempt
        };
        self.config.fate(self.seed, method, url, attempt)
    }
}

const BAD_GATEWAY_HTML: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Layer below rate limiting: latency, then the request's fate.
pub(crate) async fn inject_faults(
    State(sim): State<Simulator>,
    req: Request,
    next: Next,
) -> Response {
    let faults = &sim.inner.faults;
    if faults.in_outage() {
        return SimError::new(
            503,
            "server_error",
            "the service is down for maintenance (a simulated outage)",
        )
        .into_response();
    }
    if !faults.config.latency.is_zero() {
        sim.sleep(faults.config.latency).await;
    }
    let url = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let Some(fate) = faults.decide(req.method().as_str(), url) else {
        return next.run(req).await;
    };
    sim.inner.stats.fault(fate.kind());
    match fate {
        Fate::TooManyRequests => {
            let mut resp = too_many_requests(
                "Rate limit exceeded: too many requests, retry in a moment".into(),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Fate::ServerError(502) => {
            let mut resp = (StatusCode::BAD_GATEWAY, BAD_GATEWAY_HTML).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        }
        Fate::ServerError(status) => {
            let detail = match status {
                503 => "the service is temporarily unavailable",
                504 => "the upstream did not answer in time",
                _ => "something went wrong on our end",
            };
            SimError::new(status, "server_error", detail).into_response()
        }
        Fate::Timeout => {
            sim.sleep(faults.config.hang).await;
            SimError::new(
                504,
                "gateway_timeout",
                "the upstream did not answer in time",
            )
            .into_response()
        }
        Fate::Reset => {
            let (mut parts, body) = next.run(req).await.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, broken_body(body.slice(..body.len() / 2)))
        }
        Fate::Malformed => {
            let resp = next.run(req).await;
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            json_response(status, body[..body.len() / 2].to_vec())
        }
    }
}

/// A streamed body that sends `head`, then fails (the connection is aborted mid-body).
fn broken_body(head: Bytes) -> Body {
    enum Step {
        Head(Bytes),
        Break,
        Done,
    }
    let stream = futures_util::stream::unfold(Step::Head(head), |step| async move {
        match step {
            Step::Head(head) => Some((Ok::<_, std::io::Error>(head), Step::Break)),
            Step::Break => {
                // Let the server flush the head before the connection breaks.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated connection reset",
                    )),
                    Step::Done,
                ))
            }
            Step::Done => None,
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(p: f64) -> Faults {
        Faults {
            p429: p,
            p5xx: p,
            timeout: p,
            reset: p,
            malformed: p,
            ..Faults::default()
        }
    }

    #[test]
    fn fates_are_a_function_of_seed_url_and_attempt() {
        let f = faults(0.15);
        let seq = |seed: u64, url: &str| -> Vec<Option<Fate>> {
            (0..5).map(|k| f.fate(seed, "GET", url, k)).collect()
        };
        assert_eq!(seq(1, "/people/v2/people"), seq(1, "/people/v2/people"));
        let many = |seed| -> Vec<Vec<Option<Fate>>> {
            (0..50)
                .map(|i| seq(seed, &format!("/people/v2/people?offset={i}")))
                .collect()
        };
        assert_ne!(many(1), many(2));
        assert_eq!(many(3), many(3));
    }

    #[test]
    fn rates_are_roughly_the_probabilities_and_attempts_are_capped() {
        let f = Faults {
            p5xx: 0.2,
            malformed: 0.1,
            ..Faults::default()
        };
        let mut counts = HashMap::new();
        for i in 0..20_000 {
            if let Some(fate) = f.fate(7, "GET", &format!("/x?offset={i}"), 0) {
                *counts.entry(fate.kind()).or_insert(0) += 1;
            }
        }
        let n = |k| counts.get(&k).copied().unwrap_or(0);
        assert!(
            (3600..4400).contains(&n(FaultKind::ServerError)),
            "{counts:?}"
        );
        assert!(
            (1600..2400).contains(&n(FaultKind::Malformed)),
            "{counts:?}"
        );
        assert_eq!(n(FaultKind::Timeout) + n(FaultKind::TooManyRequests), 0);

        let always = faults(1.0);
        assert!(always.any());
        assert!(!Faults::default().any());
        for k in 0..always.max_per_url {
            assert_eq!(always.fate(1, "GET", "/x", k), Some(Fate::TooManyRequests));
        }
        assert_eq!(always.fate(1, "GET", "/x", always.max_per_url), None);
    }
}
