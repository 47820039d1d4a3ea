//! Helpers of the Clerk simulator's tests: a simulator on a manual clock, authenticated
//! requests through the router, and paging through a whole list.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::Value;
use tributary_sim::ManualClock;
use tributary_sim::clerk::{ClerkConfig, ClerkSim};

use crate::common::{Resp, clock_start, send};

pub const KEY: &str = "sk_test_sim";

pub fn config(seed: u64, users: usize) -> ClerkConfig {
    ClerkConfig {
        seed,
        users,
        ..ClerkConfig::default()
    }
}

/// A simulator with a manual clock stopped at `common::clock_start`.
pub fn sim(seed: u64, users: usize) -> (ClerkSim, Arc<ManualClock>) {
    sim_with(config(seed, users))
}

pub fn sim_with(config: ClerkConfig) -> (ClerkSim, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(clock_start()));
    (ClerkSim::with_clock(config, clock.clone()), clock)
}

/// A request with `Authorization: Bearer <key>` (none when `key` is `None`).
pub async fn request(
    router: &Router,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let uri = uri.replace('+', "%2B");
    let mut req = Request::builder().method(method).uri(uri.as_str());
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    send(router, req.body(body).unwrap()).await
}

/// An authenticated GET that must answer 200; its JSON.
pub async fn get_ok(router: &Router, uri: &str) -> Value {
    let r = request(router, Method::GET, uri, Some(KEY), None).await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "GET {uri}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// A control-API call that must answer 200; its JSON.
pub async fn control(router: &Router, method: Method, uri: &str, body: Option<Value>) -> Value {
    let r = request(router, method.clone(), uri, None, body).await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "{method} {uri}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Every item of a list, page by page (`limit` per page); `path` may carry parameters. Users
/// are a bare array; the others `{data, total_count}` whose `total_count` must not change
/// and must match the number walked.
pub async fn walk(router: &Router, path: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut total = None;
    for page in 0.. {
        assert!(page < 10_000, "paging does not terminate");
        let doc = get_ok(
            router,
            &format!("{path}{sep}limit={limit}&offset={}", out.len()),
        )
        .await;
        let items = match &doc {
            Value::Array(items) => items.clone(),
            _ => {
                let t = doc["total_count"].as_u64().unwrap();
                assert_eq!(*total.get_or_insert(t), t, "total_count changed");
                doc["data"].as_array().unwrap().clone()
            }
        };
        assert!(items.len() <= limit);
        let last = items.len() < limit;
        out.extend(items);
        if last {
            break;
        }
    }
    if let Some(total) = total {
        assert_eq!(out.len() as u64, total, "walked != total_count");
    }
    out
}

pub fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|v| id(v).to_owned()).collect()
}

/// Asserts a Clerk error answer with this status and code; returns the first error.
pub fn clerk_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let ct = r.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc = r.json();
    assert!(doc["clerk_trace_id"].is_string(), "{doc}");
    let err = doc["errors"][0].clone();
    assert_eq!(err["code"], code, "{doc}");
    assert!(
        err["message"].is_string() && err["long_message"].is_string(),
        "{doc}"
    );
    err
}
