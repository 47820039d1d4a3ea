use axum::http::{Method, StatusCode};

use crate::common::*;

#[tokio::test]
async fn api_requires_a_token_or_basic_credentials() {
    let (sim, _) = sim(51, 10);
    let router = sim.router();
    for auth in [
        Auth::None,
        Auth::Bearer("wrong"),
        Auth::Basic("c2ltLWFwcDp3cm9uZw=="), // sim-app:wrong
        Auth::Basic("not base64 at all"),
    ] {
        for uri in [
            "/people/v2/people",
            "/people/v2",
            "/people/v2/people/10000001",
            "/people/v2/nope",
        ] {
            let r = call(&router, Method::GET, uri, auth, None).await;
            let err = r.error(401);
            assert_eq!(err["title"], "Unauthorized");
        }
    }
    // sim-app:sim-secret
    let r = call(
        &router,
        Method::GET,
        "/people/v2/people",
        Auth::Basic("c2ltLWFwcDpzaW0tc2VjcmV0"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&router, Method::GET, "/people/v2/people", TOKEN, None).await;
    assert_eq!(r.status, StatusCode::OK);

    // The control API needs no credentials.
    let r = call(&router, Method::GET, "/__sim/stats", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let stats = r.json();
    assert_eq!(stats["by_status"]["401"], 16);
    assert_eq!(stats["by_status_class"]["2xx"], 2);
    assert_eq!(stats["total"], 18);
}

#[tokio::test]
async fn configured_credentials_are_used() {
    let sim = tributary_sim::Simulator::new(tributary_sim::SimConfig {
        token: "other".into(),
        ..config(1, 5)
    });
    let router = sim.router();
    let r = call(&router, Method::GET, "/people/v2/people", TOKEN, None).await;
    r.error(401);
    let r = call(
        &router,
        Method::GET,
        "/people/v2/people",
        Auth::Bearer("other"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}
