//! OAuth2: the authorization code flow, rotating refresh tokens, expiry, errors, and the rate
//! budget of a grant. In paused tokio time through the in-process router.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use serde_json::Value;
use tokio::time::advance;
use tributary_sim::{RateLimit, SimConfig, Simulator, TokenResponse};

use crate::common::*;

const CLIENT: &str = "client_id=sim-client&client_secret=sim-client-secret";
const REDIRECT: &str = "http://127.0.0.1:9999/callback";
const REDIRECT_ENC: &str = "http%3A%2F%2F127.0.0.1%3A9999%2Fcallback";

fn oauth_sim(config: SimConfig) -> (Simulator, Router) {
    let clock = std::sync::Arc::new(tributary_sim::ManualClock::new(clock_start()));
    let sim = Simulator::with_clock(config, clock);
    let router = sim.router();
    (sim, router)
}

/// Asserts an OAuth2 error document and returns its `error`.
fn oauth_error(r: &Resp, status: u16) -> String {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(header_str(r, "content-type").starts_with("application/json"));
    let body = r.json();
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().unwrap().to_owned()
}

fn token(r: &Resp) -> TokenResponse {
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

/// Authorizes (auto-approved) and returns the code from the redirect.
async fn authorize(router: &Router) -> String {
    let uri = format!(
        "/oauth/authorize?client_id=sim-client&redirect_uri={REDIRECT_ENC}&response_type=code&scope=people&state=a%20b"
    );
    let r = call(router, Method::GET, &uri, Auth::None, None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = header_str(&r, "location");
    let rest = location
        .strip_prefix(&format!("{REDIRECT}?code="))
        .unwrap_or_else(|| panic!("{location}"));
    let (code, state) = rest.split_once('&').unwrap();
    assert_eq!(state, "state=a%20b", "state comes back as sent");
    assert_eq!(code.len(), 64);
    code.to_owned()
}

async fn redeem(router: &Router, code: &str) -> Resp {
    let form =
        format!("grant_type=authorization_code&code={code}&redirect_uri={REDIRECT_ENC}&{CLIENT}");
    post_form(router, "/oauth/token", &form).await
}

async fn refresh(router: &Router, refresh_token: &str) -> Resp {
    let form = format!("grant_type=refresh_token&refresh_token={refresh_token}&{CLIENT}");
    post_form(router, "/oauth/token", &form).await
}

#[tokio::test(start_paused = true)]
async fn authorization_code_grant_and_rotating_refresh_tokens() {
    let (sim, router) = oauth_sim(config(71, 10));
    let code = authorize(&router).await;
    let r = redeem(&router, &code).await;
    assert_eq!(header_str(&r, "cache-control"), "no-store");
    let first = token(&r);
    assert_eq!(first.token_type, "bearer");
    assert_eq!(first.expires_in, 7200);
    assert_eq!(first.scope, "people");
    assert_eq!(first.created_at, clock_start().timestamp());
    assert_eq!(first.access_token.len(), 64);
    assert_ne!(first.access_token, first.refresh_token);
    let raw: Value = r.json();
    for field in [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "created_at",
    ] {
        assert!(raw.get(field).is_some(), "{field} missing: {raw}");
    }

    let r = get_bearer(&router, "/people/v2/people", &first.access_token).await;
    assert_eq!(r.status, StatusCode::OK);

    // Codes are single-use.
    assert_eq!(
        oauth_error(&redeem(&router, &code).await, 400),
        "invalid_grant"
    );
    // And bound to their redirect_uri.
    let other = authorize(&router).await;
    let form = format!(
        "grant_type=authorization_code&code={other}&redirect_uri=http%3A%2F%2Fevil.example&{CLIENT}"
    );
    let r = post_form(&router, "/oauth/token", &form).await;
    assert_eq!(oauth_error(&r, 400), "invalid_grant");

    // Refresh: new tokens, the old refresh token stops working, the old access token not.
    let second = token(&refresh(&router, &first.refresh_token).await);
    assert_ne!(second.access_token, first.access_token);
    assert_ne!(second.refresh_token, first.refresh_token);
    let r = refresh(&router, &first.refresh_token).await;
    assert_eq!(oauth_error(&r, 400), "invalid_grant");
    for access in [&first.access_token, &second.access_token] {
        let r = get_bearer(&router, "/people/v2/people", access).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let third = token(&refresh(&router, &second.refresh_token).await);
    assert_eq!(third.scope, "people");

    let stats = sim.stats();
    assert_eq!(stats.oauth.refreshes, 2);
    assert_eq!(stats.oauth.grants, 1);
    assert_eq!(stats.oauth.errors, 3);
    assert_eq!(stats.oauth.requests, 8);
    assert_eq!(stats.total, 3, "OAuth requests are not API requests");
}

#[tokio::test(start_paused = true)]
async fn access_tokens_expire() {
    let (_, router) = oauth_sim(SimConfig {
        token_ttl: Duration::from_secs(60),
        ..config(72, 10)
    });
    let r = post_form(&router, "/__sim/oauth/grant", "").await;
    let grant = token(&r);
    assert_eq!(grant.expires_in, 60);
    advance(Duration::from_secs(59)).await;
    let r = get_bearer(&router, "/people/v2/people", &grant.access_token).await;
    assert_eq!(r.status, StatusCode::OK);

    advance(Duration::from_secs(1)).await;
    let r = get_bearer(&router, "/people/v2/people", &grant.access_token).await;
    let err = r.error(401);
    assert_eq!(err["code"], "token_expired");
    assert!(err["detail"].as_str().unwrap().contains("expired"), "{err}");

    // The refresh token outlives the access token.
    let fresh = token(&refresh(&router, &grant.refresh_token).await);
    let r = get_bearer(&router, "/people/v2/people", &fresh.access_token).await;
    assert_eq!(r.status, StatusCode::OK);
    // An unknown token is "invalid", not "expired".
    let r = get_bearer(&router, "/people/v2/people", &"0".repeat(64)).await;
    assert_ne!(r.error(401)["code"], "token_expired");
}

#[tokio::test]
async fn token_endpoint_errors() {
    let (_, router) = oauth_sim(config(73, 10));
    let grant = token(&post_form(&router, "/__sim/oauth/grant", "").await);
    let rt = &grant.refresh_token;
    let cases = [
        (
            format!(
                "grant_type=refresh_token&refresh_token={rt}&client_id=sim-client&client_secret=wrong"
            ),
            401,
            "invalid_client",
        ),
        (
            format!(
                "grant_type=refresh_token&refresh_token={rt}&client_id=other&client_secret=sim-client-secret"
            ),
            401,
            "invalid_client",
        ),
        (
            format!("grant_type=refresh_token&refresh_token={rt}"),
            401,
            "invalid_client",
        ),
        (
            format!("grant_type=client_credentials&{CLIENT}"),
            400,
            "unsupported_grant_type",
        ),
        (CLIENT.to_owned(), 400, "invalid_request"),
        (
            format!("grant_type=refresh_token&{CLIENT}"),
            400,
            "invalid_request",
        ),
        (
            format!("grant_type=refresh_token&refresh_token=nope&{CLIENT}"),
            400,
            "invalid_grant",
        ),
        (
            format!("grant_type=authorization_code&code=nope&redirect_uri=x&{CLIENT}"),
            400,
            "invalid_grant",
        ),
    ];
    for (form, status, error) in cases {
        let r = post_form(&router, "/oauth/token", &form).await;
        assert_eq!(oauth_error(&r, status), error, "{form}");
    }

    // The form must be form-encoded, and the secret must not be in the URL.
    let json = serde_json::json!({"grant_type": "refresh_token", "refresh_token": rt});
    let r = call(
        &router,
        Method::POST,
        "/oauth/token",
        Auth::None,
        Some(json),
    )
    .await;
    assert_eq!(oauth_error(&r, 400), "invalid_request");
    let r = post_form(
        &router,
        "/oauth/token?client_secret=sim-client-secret",
        &format!("grant_type=refresh_token&refresh_token={rt}&{CLIENT}"),
    )
    .await;
    assert_eq!(oauth_error(&r, 400), "invalid_request");

    // The refresh token survived all of that.
    token(&refresh(&router, rt).await);

    // Authorization errors are not redirected.
    for uri in [
        format!("/oauth/authorize?client_id=other&redirect_uri={REDIRECT_ENC}&response_type=code"),
        "/oauth/authorize?client_id=sim-client&response_type=code".to_owned(),
        format!(
            "/oauth/authorize?client_id=sim-client&redirect_uri={REDIRECT_ENC}&response_type=token"
        ),
    ] {
        let r = call(&router, Method::GET, &uri, Auth::None, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.headers.get(header::LOCATION).is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn a_grant_keeps_its_rate_budget_across_refreshes() {
    let (sim, router) = oauth_sim(SimConfig {
        rate_limit: Some(RateLimit::new(5, Duration::from_secs(20))),
        oauth_client_id: "my-app".into(),
        oauth_client_secret: "s3cret".into(),
        ..config(74, 10)
    });
    let grant = sim.issue_grant();
    for i in 1..=3 {
        let r = get_bearer(&router, "/people/v2/people", &grant.access_token).await;
        assert_eq!(rate(&r), (i, 5, 20));
    }
    let form = format!(
        "grant_type=refresh_token&refresh_token={}&client_id=my-app&client_secret=s3cret",
        grant.refresh_token
    );
    let fresh = token(&post_form(&router, "/oauth/token", &form).await);
    for i in 4..=5 {
        let r = get_bearer(&router, "/people/v2/people", &fresh.access_token).await;
        assert_eq!(rate(&r), (i, 5, 20));
    }
    for access in [&fresh.access_token, &grant.access_token] {
        get_bearer(&router, "/people/v2/people", access)
            .await
            .error(429);
    }

    // Another grant, and the static token, have budgets of their own.
    let other = sim.issue_grant();
    let r = get_bearer(&router, "/people/v2/people", &other.access_token).await;
    assert_eq!(rate(&r), (1, 5, 20));
    let r = call(&router, Method::GET, "/people/v2/people", TOKEN, None).await;
    assert_eq!(rate(&r), (1, 5, 20));

    // Tokens are deterministic for a seed and a sequence of grants.
    let (again, _) = oauth_sim(SimConfig {
        oauth_client_id: "my-app".into(),
        ..config(74, 10)
    });
    assert_eq!(again.issue_grant().access_token, grant.access_token);
    let (other_seed, _) = oauth_sim(config(75, 10));
    assert_ne!(other_seed.issue_grant().access_token, grant.access_token);
}
