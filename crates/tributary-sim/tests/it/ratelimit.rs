//! The rate limit, driven in paused tokio time through the in-process router.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use tokio::time::advance;
use tributary_sim::{RateLimit, SimConfig, Simulator};

use crate::common::*;

/// `sim-app:sim-secret`.
const BASIC: Auth = Auth::Basic("c2ltLWFwcDpzaW0tc2VjcmV0");

fn limited(rate_limit: RateLimit) -> Router {
    Simulator::new(SimConfig {
        rate_limit: Some(rate_limit),
        ..config(61, 20)
    })
    .router()
}

async fn people(router: &Router, auth: Auth) -> Resp {
    call(router, Method::GET, "/people/v2/people", auth, None).await
}

#[tokio::test(start_paused = true)]
async fn every_authenticated_api_response_carries_the_rate_headers() {
    let router = limited(RateLimit::pco());
    let requests = [
        (Method::GET, "/people/v2/people", 200),
        (Method::GET, "/people/v2", 200),
        (Method::GET, "/people/v2/people/1", 404),
        (Method::GET, "/people/v2/people?per_page=abc", 400),
        (Method::GET, "/people/v2/nope", 404),
        (Method::POST, "/people/v2/people", 405),
    ];
    for (i, (method, uri, status)) in requests.into_iter().enumerate() {
        let r = call(&router, method, uri, TOKEN, None).await;
        assert_eq!(r.status.as_u16(), status, "{uri}");
        assert_eq!(rate(&r), (i as u32 + 1, 100, 20), "{uri}");
    }
    // Another principal has its own window.
    assert_eq!(rate(&people(&router, BASIC).await), (1, 100, 20));

    // No principal, no rate headers: unauthenticated requests and the control API.
    let r = people(&router, Auth::Bearer("wrong")).await;
    r.error(401);
    assert!(r.headers.get("x-pco-api-request-rate-count").is_none());
    let r = call(&router, Method::GET, "/__sim/info", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("x-pco-api-request-rate-count").is_none());
    assert_eq!(r.json()["rate_limit"]["limit"], 100);

    // The default configuration has no rate limit at all.
    let (plain, _) = sim(61, 20);
    let r = people(&plain.router(), TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("x-pco-api-request-rate-limit").is_none());
}

#[tokio::test(start_paused = true)]
async fn the_101st_request_is_a_429_and_the_window_resets() {
    let sim = Simulator::new(SimConfig {
        rate_limit: Some(RateLimit::pco()),
        ..config(62, 20)
    });
    let router = sim.router();
    // The window starts at the first request, not at the 100th.
    assert_eq!(rate(&people(&router, TOKEN).await).0, 1);
    advance(Duration::from_secs(5)).await;
    for i in 2..=100 {
        let r = people(&router, TOKEN).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(rate(&r), (i, 100, 20));
    }

    let r = people(&router, TOKEN).await;
    let err = r.error(429);
    assert_eq!(err["title"], "Too Many Requests");
    assert_eq!(
        err["detail"],
        "Rate limit exceeded: 100 of 100 requests per 20 seconds"
    );
    assert_eq!(header_str(&r, "retry-after"), "15");
    assert_eq!(rate(&r), (100, 100, 20), "rejected requests do not count");

    // Still refused shortly before the window ends; Retry-After rounds up and stays >= 1.
    advance(Duration::from_millis(14_500)).await;
    let r = people(&router, TOKEN).await;
    r.error(429);
    assert_eq!(header_str(&r, "retry-after"), "1");
    assert_eq!(rate(&r).0, 100);
    // Other principals are not affected.
    assert_eq!(people(&router, BASIC).await.status, StatusCode::OK);

    // The window ends 20 s after its first request: a fresh budget, rejections forgotten.
    advance(Duration::from_millis(500)).await;
    let r = people(&router, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(rate(&r), (1, 100, 20));

    let stats = sim.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.by_status["429"], 2);
    assert_eq!(stats.faults.total(), 0);
}

#[tokio::test(start_paused = true)]
async fn rejected_requests_do_not_use_the_budget() {
    let router = limited(RateLimit::new(3, Duration::from_secs(2)));
    for round in 0..3 {
        for i in 1..=3 {
            let r = people(&router, TOKEN).await;
            assert_eq!(r.status, StatusCode::OK, "round {round}");
            assert_eq!(rate(&r), (i, 3, 2));
        }
        for _ in 0..10 {
            let r = people(&router, TOKEN).await;
            r.error(429);
            assert_eq!(rate(&r), (3, 3, 2));
            assert_eq!(
                r.json()["errors"][0]["detail"],
                "Rate limit exceeded: 3 of 3 requests per 2 seconds"
            );
        }
        advance(Duration::from_secs(2)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn deep_offsets_get_the_lower_limit() {
    let router = limited(RateLimit::pco());
    let deep = "/people/v2/people?per_page=100&offset=30100";
    for i in 1..=75 {
        let r = call(&router, Method::GET, deep, TOKEN, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["data"].as_array().unwrap().len(), 0);
        assert_eq!(rate(&r), (i, 75, 20));
    }
    let r = call(&router, Method::GET, deep, TOKEN, None).await;
    assert_eq!(
        r.error(429)["detail"],
        "Rate limit exceeded: 75 of 75 requests per 20 seconds"
    );
    assert_eq!(rate(&r), (75, 75, 20));

    // Shallow requests share the window's count but have the normal limit.
    let shallow = "/people/v2/people?per_page=100&offset=30000";
    for i in 76..=100 {
        let r = call(&router, Method::GET, shallow, TOKEN, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(rate(&r), (i, 100, 20));
    }
    call(&router, Method::GET, shallow, TOKEN, None)
        .await
        .error(429);
    let r = call(&router, Method::GET, deep, TOKEN, None).await;
    r.error(429);
    assert_eq!(rate(&r), (100, 75, 20));

    // Without a deep-offset limit, deep requests get the normal one.
    let router = limited(RateLimit::new(100, Duration::from_secs(20)));
    let r = call(&router, Method::GET, deep, TOKEN, None).await;
    assert_eq!(rate(&r), (1, 100, 20));
}
