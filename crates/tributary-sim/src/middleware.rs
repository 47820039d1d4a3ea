//! Request middleware.
//!
//! The router is layered like this (outermost first):
//!
//! ```text
//! count_requests            every request (API and control) is counted by status
//! └─ /people/v2/...         the simulated API
//!    └─ require_auth        401 unless Bearer token or HTTP Basic app id/secret
//!       └─ (rate limiting)  future: 100 requests / 20 s per Principal, X-PCO-API-Request-Rate-*
//!          └─ (faults)      future: injected 429/5xx/timeouts/resets/malformed bodies, latency
//!             └─ api::handle
//! └─ /__sim/...             the control API (no auth)
//! ```
//!
//! `require_auth` stores the authenticated [`Principal`] in the request extensions, so a rate
//! limiter added below it can key its buckets by principal. OAuth2 (`/oauth/token`) would add
//! tokens to the accepted set of the (crate-private) `Auth` checker.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::Simulator;
use crate::error::SimError;

/// Who made an API request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// HTTP Basic with this application id.
    App(String),
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

    pub(crate) fn check(&self, header: Option<&HeaderValue>) -> Result<Principal, SimError> {
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
}

/// A snapshot of the simulator's counters (`GET /__sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// API requests (everything but `/__sim/...`).
    pub total: u64,
    /// API requests by status class: `"2xx"`, `"4xx"`, ...
    pub by_status_class: BTreeMap<String, u64>,
    /// API requests by exact status code.
    pub by_status: BTreeMap<String, u64>,
    /// Control-API requests.
    pub control_requests: u64,
    /// Successful mutations so far.
    pub mutations: u64,
}

impl Stats {
    fn record(&self, control: bool, status: StatusCode) {
        if control {
            self.control.fetch_add(1, Ordering::Relaxed);
            return;
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
        }
    }

    pub(crate) fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.control.store(0, Ordering::Relaxed);
        self.by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Outermost layer: counts every response by status.
pub(crate) async fn count_requests(
    State(sim): State<Simulator>,
    req: Request,
    next: Next,
) -> Response {
    let control = req.uri().path().starts_with("/__sim");
    let resp = next.run(req).await;
    sim.inner.stats.record(control, resp.status());
    resp
}

/// Rejects API requests without valid credentials (401, JSON:API body).
pub(crate) async fn require_auth(
    State(sim): State<Simulator>,
    mut req: Request,
    next: Next,
) -> Response {
    match sim
        .inner
        .auth
        .check(req.headers().get(axum::http::header::AUTHORIZATION))
    {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
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
    fn auth_accepts_bearer_and_basic_only() {
        let auth = Auth::new("tok", "app", "sec");
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            auth.check(Some(&h("Bearer tok"))),
            Ok(Principal::Token("tok".into()))
        );
        assert_eq!(
            auth.check(Some(&h(&format!("basic {}", base64(b"app:sec"))))),
            Ok(Principal::App("app".into()))
        );
        assert!(auth.check(None).is_err());
        assert!(auth.check(Some(&h("Bearer nope"))).is_err());
        assert!(auth.check(Some(&h("Bearer"))).is_err());
        assert!(
            auth.check(Some(&h(&format!("Basic {}", base64(b"app:bad")))))
                .is_err()
        );
        assert!(Auth::new("", "a", "b").check(Some(&h("Bearer "))).is_err());
    }
}
