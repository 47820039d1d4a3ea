//! The layers of the `/v1` routes, outermost first:
//!
//! ```text
//! count        every answer, by route (its pattern, e.g. "GET /v1/users/{user_id}") and status
//! └─ auth      401 authentication_invalid unless `Authorization: Bearer <secret key>`
//!    └─ limit  fixed window per secret key (when configured): 429 with Retry-After
//!       └─ the handler
//! ```
//!
//! The control API (`/control/...`) has none of them (it is counted separately).

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;

use super::ClerkSim;
use super::error::ClerkError;
use crate::middleware::Principal;

/// A snapshot of the API counters (`GET /control/stats` → `api`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClerkStats {
    /// Requests to `/v1/...`, whatever the answer.
    pub requests: u64,
    /// Requests by route pattern (`"GET /v1/users"`, `"GET /v1/users/{user_id}"`, …; unknown
    /// paths under `"unmatched"`).
    pub by_route: BTreeMap<String, u64>,
    /// Requests by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// 401s (missing or wrong secret key).
    pub unauthorized: u64,
    /// 422s (invalid parameters).
    pub unprocessable: u64,
    /// 429s (the rate limit).
    pub rate_limited: u64,
    /// 404s.
    pub not_found: u64,
    /// Requests to the control API.
    pub control_requests: u64,
    /// Successful mutations so far.
    pub mutations: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    api: Mutex<ClerkStats>,
}

impl Stats {
    pub(crate) fn record(&self, route: &str, status: u16) {
        let mut s = self.api.lock().unwrap_or_else(|e| e.into_inner());
        s.requests += 1;
        *s.by_route.entry(route.to_owned()).or_default() += 1;
        *s.by_status.entry(status).or_default() += 1;
        match status {
            401 => s.unauthorized += 1,
            404 => s.not_found += 1,
            422 => s.unprocessable += 1,
            429 => s.rate_limited += 1,
            _ => {}
        }
    }

    pub(crate) fn control(&self) {
        self.api
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .control_requests += 1;
    }

    pub(crate) fn snapshot(&self, mutations: u64) -> ClerkStats {
        ClerkStats {
            mutations,
            ..self.api.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    pub(crate) fn reset(&self) {
        *self.api.lock().unwrap_or_else(|e| e.into_inner()) = ClerkStats::default();
    }
}

/// Counts every `/v1` answer by its route pattern.
pub(crate) async fn count(State(sim): State<ClerkSim>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", req.method(), path.as_str()),
        None => "unmatched".to_owned(),
    };
    let resp = next.run(req).await;
    sim.inner.stats.record(&route, resp.status().as_u16());
    resp
}

/// Counts control-API requests.
pub(crate) async fn count_control(
    State(sim): State<ClerkSim>,
    req: Request,
    next: Next,
) -> Response {
    sim.inner.stats.control();
    next.run(req).await
}

/// 401 unless `Authorization: Bearer <secret key>`.
pub(crate) async fn require_secret_key(
    State(sim): State<ClerkSim>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    match given {
        Some(key) if !key.is_empty() && key == sim.inner.config.secret_key => next.run(req).await,
        _ => ClerkError::unauthenticated().into_response(),
    }
}

/// The fixed-window rate limit of the secret key.
pub(crate) async fn rate_limit(State(sim): State<ClerkSim>, req: Request, next: Next) -> Response {
    let principal = Principal::Token(sim.inner.config.secret_key.clone());
    let usage = sim.inner.limiter.acquire(&principal, false, Instant::now());
    match usage.and_then(|u| u.retry_after) {
        Some(secs) => ClerkError::too_many_requests(secs).into_response(),
        None => next.run(req).await,
    }
}
