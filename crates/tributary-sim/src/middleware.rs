//! Request middleware: authentication, request counters, and the layering of the router.
//!
//! The router is layered like this (outermost first):
//!
//! ```text
//! count_requests                   every request is counted (API by status, control, OAuth)
//! ├─ /people/v2/...                the simulated API
//! │  └─ require_auth               401 unless a valid Bearer token (static or OAuth access
//! │     │                          token) or HTTP Basic app id/secret; stores the Principal
//! │     └─ ratelimit::rate_limit   fixed window per Principal, X-PCO-API-Request-Rate-*, 429
//! │        └─ faults::inject_faults  latency, injected 429/5xx/timeouts/resets/malformed bodies
//! │           └─ api::handle
//! ├─ /oauth/authorize, /oauth/token  the OAuth2 authorization server (see `oauth`)
//! └─ /__sim/...                    the control API (no auth, no limits, no faults)
//! ```
//!
//! `require_auth` stores the authenticated [`Principal`] in the request extensions; the rate
//! limiter keys its windows by it. An expired OAuth access token is a 401 whose JSON:API error
//! has `code` `"token_expired"`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use tokio::time::Instant;

use crate::Simulator;
use crate::error::SimError;
use crate::faults::FaultKind;
use crate::oauth::{Lookup, OAuth, expired};

/// Who made an API request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// HTTP Basic with this application id.
    App(String),
    /// An OAuth access token of this grant (every token of a grant shares one rate budget).
    Grant(u64),
}

/// Accepted credentials.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    token: String,
    app_id: String,
    /// `base64(app_id:secret)`.
    basic: String,
}

impl Auth {
    pub(crate) fn new(token: &str, app_id: &str, secret: &str) -> Self {
        Auth {
            token: token.to_owned(),
            app_id: app_id.to_owned(),
            basic: base64(format!("{app_id}:{secret}").as_bytes()),
        }
    }

    /// The principal behind an `Authorization` header; OAuth access tokens are resolved by
    /// `oauth` at `now`.
    pub(crate) fn check(
        &self,
        header: Option<&HeaderValue>,
        oauth: &OAuth,
        now: Instant,
    ) -> Result<Principal, SimError> {
        let Some(value) = header else {
            return Err(SimError::unauthorized(
                "missing Authorization header: send a Bearer token or HTTP Basic credentials",
            ));
        };
        let invalid = || SimError::unauthorized("invalid credentials");
        let value = value.to_str().map_err(|_| invalid())?;
        let (scheme, credentials) = value.trim().split_once(' ').ok_or_else(invalid)?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            if !self.token.is_empty() && credentials == self.token {
                return Ok(Principal::Token(credentials.to_owned()));
            }
            match oauth.lookup(credentials, now) {
                Lookup::Valid(principal) => return Ok(principal),
                Lookup::Expired => return Err(expired()),
                Lookup::Unknown => {}
            }
        } else if scheme.eq_ignore_ascii_case("basic") && credentials == self.basic {
            return Ok(Principal::App(self.app_id.clone()));
        }
        Err(invalid())
    }
}

/// Standard base64 with padding.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Request counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    total: AtomicU64,
    control: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
    rate_limited: AtomicU64,
    /// Injected faults, indexed like [`FaultKind`].
    faults: [AtomicU64; 5],
    oauth_requests: AtomicU64,
    oauth_grants: AtomicU64,
    oauth_refreshes: AtomicU64,
    oauth_errors: AtomicU64,
    /// API requests being answered now, and the most there were at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// Injected faults by kind (see [`Faults`](crate::Faults)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultStats {
    /// Injected `429 Too Many Requests`.
    pub too_many_requests: u64,
    /// Injected 500, 502, 503 and 504 (`by_status` tells them apart).
    pub server_error: u64,
    /// Requests that hung, then answered 504.
    pub timeout: u64,
    /// Connections broken in the middle of the body.
    pub reset: u64,
    /// Bodies cut in half.
    pub malformed: u64,
}

impl FaultStats {
    /// All injected faults.
    pub fn total(&self) -> u64 {
        self.too_many_requests + self.server_error + self.timeout + self.reset + self.malformed
    }
}

/// OAuth2 activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OAuthStats {
    /// Requests to `/oauth/...`.
    pub requests: u64,
    /// Grants issued (authorization codes redeemed, and control-API grants).
    pub grants: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Token requests answered with an OAuth error.
    pub errors: u64,
}

/// A snapshot of the simulator's counters (`GET /__sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// API requests (everything but `/__sim/...` and `/oauth/...`).
    pub total: u64,
    /// API requests by status class: `"2xx"`, `"4xx"`, ...
    pub by_status_class: BTreeMap<String, u64>,
    /// API requests by exact status code.
    pub by_status: BTreeMap<String, u64>,
    /// Control-API requests.
    pub control_requests: u64,
    /// Successful mutations so far.
    pub mutations: u64,
    /// API requests refused by the real rate limit (429). Injected 429s are in `faults`; both
    /// are in `by_status["429"]`.
    pub rate_limited: u64,
    /// Injected faults by kind.
    pub faults: FaultStats,
    /// OAuth2 activity.
    pub oauth: OAuthStats,
    /// The most API requests being answered at once (a client's
    /// concurrency, as the server saw it).
    pub peak_in_flight: u64,
}

/// Which part of the server a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Api,
    Control,
    OAuth,
}

impl Area {
    fn of(path: &str) -> Self {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/__sim") {
            Area::Control
        } else if under("/oauth") {
            Area::OAuth
        } else {
            Area::Api
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn rate_limited(&self) {
        bump(&self.rate_limited);
    }

    pub(crate) fn fault(&self, kind: FaultKind) {
        bump(&self.faults[kind as usize]);
    }

    pub(crate) fn oauth_grant(&self) {
        bump(&self.oauth_grants);
    }

    pub(crate) fn oauth_refresh(&self) {
        bump(&self.oauth_refreshes);
    }

    pub(crate) fn oauth_error(&self) {
        bump(&self.oauth_errors);
    }

    fn record(&self, area: Area, status: StatusCode) {
        match area {
            Area::Control => return bump(&self.control),
            Area::OAuth => return bump(&self.oauth_requests),
            Area::Api => {}
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status.as_u16())
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self, mutations: u64) -> StatsSnapshot {
        let by_status = self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut by_status_class: BTreeMap<String, u64> = ["2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .map(|c| (c.to_owned(), 0))
            .collect();
        for (code, n) in &by_status {
            *by_status_class
                .entry(format!("{}xx", code / 100))
                .or_default() += n;
        }
        StatsSnapshot {
            total: self.total.load(Ordering::Relaxed),
            by_status_class,
            by_status: by_status
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            control_requests: self.control.load(Ordering::Relaxed),
            mutations,
            rate_limited: load(&self.rate_limited),
            faults: FaultStats {
                too_many_requests: load(&self.faults[FaultKind::TooManyRequests as usize]),
                server_error: load(&self.faults[FaultKind::ServerError as usize]),
                timeout: load(&self.faults[FaultKind::Timeout as usize]),
                reset: load(&self.faults[FaultKind::Reset as usize]),
                malformed: load(&self.faults[FaultKind::Malformed as usize]),
            },
            oauth: OAuthStats {
                requests: load(&self.oauth_requests),
                grants: load(&self.oauth_grants),
                refreshes: load(&self.oauth_refreshes),
                errors: load(&self.oauth_errors),
            },
            peak_in_flight: load(&self.peak_in_flight),
        }
    }

    pub(crate) fn reset(&self) {
        for counter in [
            &self.total,
            &self.control,
            &self.rate_limited,
            &self.oauth_requests,
            &self.oauth_grants,
            &self.oauth_refreshes,
            &self.oauth_errors,
            &self.peak_in_flight,
        ]
        .into_iter()
        .chain(&self.faults)
        {
            counter.store(0, Ordering::Relaxed);
        }
        self.by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// An API request being answered; leaves the count when dropped, also if
/// the client gave up on it.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Outermost layer: counts every response by status.
pub(crate) async fn count_requests(
    State(sim): State<Simulator>,
    req: Request,
    next: Next,
) -> Response {
    let area = Area::of(req.uri().path());
    let stats = &sim.inner.stats;
    let _answering = (area == Area::Api).then(|| InFlight::enter(stats));
    let resp = next.run(req).await;
    stats.record(area, resp.status());
    resp
}

/// Rejects API requests without valid credentials (401, JSON:API body).
pub(crate) async fn require_auth(
    State(sim): State<Simulator>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req.headers().get(axum::http::header::AUTHORIZATION);
    match sim
        .inner
        .auth
        .check(header, &sim.inner.oauth, Instant::now())
    {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn auth_accepts_bearer_basic_and_oauth_tokens() {
        let oauth = OAuth::new(&crate::SimConfig::default());
        let auth = Auth::new("tok", "app", "sec");
        let now = Instant::now();
        let check = |auth: &Auth, s: Option<&str>| {
            auth.check(
                s.map(|s| HeaderValue::from_str(s).unwrap()).as_ref(),
                &oauth,
                now,
            )
        };
        assert_eq!(
            check(&auth, Some("Bearer tok")),
            Ok(Principal::Token("tok".into()))
        );
        assert_eq!(
            check(&auth, Some(&format!("basic {}", base64(b"app:sec")))),
            Ok(Principal::App("app".into()))
        );
        assert!(check(&auth, None).is_err());
        assert!(check(&auth, Some("Bearer nope")).is_err());
        assert!(check(&auth, Some("Bearer")).is_err());
        assert!(check(&auth, Some(&format!("Basic {}", base64(b"app:bad")))).is_err());
        assert!(check(&Auth::new("", "a", "b"), Some("Bearer ")).is_err());

        let grant = oauth.new_grant("people".into(), 0);
        let bearer = format!("Bearer {}", grant.access_token);
        assert_eq!(check(&auth, Some(&bearer)), Ok(Principal::Grant(1)));
        let later = Instant::now() + crate::SimConfig::default().token_ttl;
        let err = auth
            .check(
                Some(&HeaderValue::from_str(&bearer).unwrap()),
                &oauth,
                later,
            )
            .unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (401, "token_expired"));
    }
}
