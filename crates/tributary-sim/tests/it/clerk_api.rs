//! The Clerk Backend API through the router: paging, ordering, filters, validation, auth, 404s
//! and the rate limit.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::time::Duration;

use axum::http::Method;
use serde_json::Value;
use tributary_sim::clerk::ClerkConfig;

use crate::clerk_common::{
    KEY, clerk_error, config, get_ok, id, ids, request, sim, sim_with, walk,
};

/// Compares two JSON sort values: numbers and strings, nulls last.
fn cmp_json(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Number(a), Value::Number(b)) => a.as_i64().cmp(&b.as_i64()),
        (Value::String(a), Value::String(b)) => a.cmp(b),
        _ => panic!("incomparable {a} {b}"),
    }
}

/// Asserts `items` are sorted by `key` (ties by id) in the given direction.
fn assert_sorted(items: &[Value], key: impl Fn(&Value) -> Value, desc: bool) {
    for w in items.windows(2) {
        let ord = cmp_json(&key(&w[0]), &key(&w[1])).then_with(|| id(&w[0]).cmp(id(&w[1])));
        let ord = if desc { ord.reverse() } else { ord };
        assert_eq!(ord, Ordering::Less, "{} then {}", w[0]["id"], w[1]["id"]);
    }
}

fn assert_complete(items: &[Value], expected: usize) {
    let set: HashSet<String> = ids(items).into_iter().collect();
    assert_eq!(set.len(), items.len(), "duplicates while paging");
    assert_eq!(items.len(), expected);
}

#[tokio::test]
async fn clerk_users_page_completely_in_every_order() {
    let (sim, _) = sim(3, 237);
    let router = sim.router();
    let first = get_ok(&router, "/v1/users").await;
    assert_eq!(first.as_array().unwrap().len(), 10, "default limit 10");
    // Default: newest first.
    let all = walk(&router, "/v1/users", 50).await;
    assert_complete(&all, 237);
    assert_sorted(&all, |u| u["created_at"].clone(), true);
    let primary = |u: &Value| {
        let pid = u["primary_email_address_id"].clone();
        u["email_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == pid)
            .map_or(Value::Null, |e| e["email_address"].clone())
    };
    for field in [
        "created_at",
        "updated_at",
        "first_name",
        "last_name",
        "username",
        "last_sign_in_at",
        "last_active_at",
        "email_address",
    ] {
        for (prefix, desc) in [("", false), ("+", false), ("-", true)] {
            let items = walk(&router, &format!("/v1/users?order_by={prefix}{field}"), 23).await;
            assert_complete(&items, 237);
            match field {
                "email_address" => assert_sorted(&items, primary, desc),
                _ => assert_sorted(&items, |u| u[field].clone(), desc),
            }
        }
    }
    // A raw `+` decodes to a space: still ascending.
    let spaced = get_ok(&router, "/v1/users?order_by=%20created_at&limit=500").await;
    let plus = get_ok(&router, "/v1/users?order_by=+created_at&limit=500").await;
    assert_eq!(spaced, plus);
    // The first order_by wins.
    let twice = get_ok(
        &router,
        "/v1/users?order_by=username&order_by=-created_at&limit=500",
    )
    .await;
    assert_eq!(
        twice,
        get_ok(&router, "/v1/users?order_by=username&limit=500").await
    );
}

#[tokio::test]
async fn clerk_organizations_and_memberships_page_completely() {
    let (sim, _) = sim(5, 400);
    let router = sim.router();
    let doc = get_ok(&router, "/v1/organizations").await;
    assert_eq!(doc["total_count"], 40);
    assert_eq!(doc["data"].as_array().unwrap().len(), 10);
    assert!(
        doc["data"][0].get("members_count").is_none(),
        "only with include_members_count"
    );
    let all = walk(&router, "/v1/organizations?include_members_count=true", 7).await;
    assert_complete(&all, 40);
    assert_sorted(&all, |o| o["created_at"].clone(), true);
    for field in ["created_at", "name", "members_count"] {
        for (prefix, desc) in [("+", false), ("-", true)] {
            let items = walk(
                &router,
                &format!("/v1/organizations?include_members_count=true&order_by={prefix}{field}"),
                9,
            )
            .await;
            assert_complete(&items, 40);
            assert_sorted(&items, |o| o[field].clone(), desc);
        }
    }
    let memberships = sim.memberships().len();
    for order in [
        "+created_at",
        "-created_at",
        "first_name",
        "-last_name",
        "username",
        "email_address",
        "phone_number",
    ] {
        let items = walk(
            &router,
            &format!("/v1/organization_memberships?order_by={order}"),
            61,
        )
        .await;
        assert_complete(&items, memberships);
        if order.ends_with("created_at") {
            assert_sorted(&items, |m| m["created_at"].clone(), order.starts_with('-'));
        }
        if order == "first_name" {
            assert_sorted(
                &items,
                |m| m["public_user_data"]["first_name"].clone(),
                false,
            );
        }
    }
    // One organization's members, by id and by slug.
    let org = &all[0];
    let path = format!("/v1/organizations/{}/memberships", id(org));
    let members = walk(&router, &path, 3).await;
    assert_eq!(members.len() as u64, org["members_count"].as_u64().unwrap());
    assert!(members.iter().all(|m| m["organization"]["id"] == org["id"]));
    let by_slug = walk(
        &router,
        &format!(
            "/v1/organizations/{}/memberships",
            org["slug"].as_str().unwrap()
        ),
        3,
    )
    .await;
    assert_eq!(ids(&members), ids(&by_slug));
    let admins = get_ok(&router, &format!("{path}?role=org:admin")).await;
    assert_eq!(admins["total_count"], 1);
}

#[tokio::test]
async fn clerk_single_objects_and_404s() {
    let (sim, _) = sim(9, 50);
    let router = sim.router();
    let user = &sim.users()[7];
    assert_eq!(
        &get_ok(&router, &format!("/v1/users/{}", id(user))).await,
        user
    );
    let org = &sim.organizations()[2];
    let by_id = get_ok(&router, &format!("/v1/organizations/{}", id(org))).await;
    let by_slug = get_ok(
        &router,
        &format!("/v1/organizations/{}", org["slug"].as_str().unwrap()),
    )
    .await;
    assert_eq!(by_id, by_slug);
    assert!(by_id.get("members_count").is_none());
    let with = get_ok(&router, &format!("/v1/organizations/{}?include_members_count=true&include_missing_member_with_elevated_permissions=true", id(org))).await;
    assert_eq!(&with, org);
    for path in [
        "/v1/users/user_nope",
        "/v1/organizations/org_nope",
        "/v1/organizations/org_nope/memberships",
        "/v1/nothing",
    ] {
        let r = request(&router, Method::GET, path, Some(KEY), None).await;
        clerk_error(&r, 404, "resource_not_found");
    }
    let count = get_ok(&router, "/v1/users/count").await;
    assert_eq!(
        count,
        serde_json::json!({"object": "total_count", "total_count": 50})
    );
}

#[tokio::test]
async fn clerk_filters_select_users() {
    let (sim, _) = sim(11, 120);
    let router = sim.router();
    let users = sim.users();
    let (a, b) = (id(&users[3]).to_owned(), id(&users[9]).to_owned());
    let picked = get_ok(&router, &format!("/v1/users?user_id={a}&user_id={b}")).await;
    let mut got = ids(picked.as_array().unwrap());
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want);
    let without = get_ok(&router, &format!("/v1/users?user_id=-{a}&limit=500")).await;
    assert_eq!(without.as_array().unwrap().len(), 119);
    let email = users[5]["email_addresses"][0]["email_address"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let found = get_ok(&router, &format!("/v1/users?email_address={email}")).await;
    assert_eq!(
        ids(found.as_array().unwrap()),
        vec![id(&users[5]).to_owned()]
    );
    let banned = get_ok(&router, "/v1/users?banned=true&limit=500").await;
    assert!(
        banned
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["banned"] == true)
    );
    let org = &sim.organizations()[0];
    let members = get_ok(
        &router,
        &format!("/v1/users?organization_id={}&limit=500", id(org)),
    )
    .await;
    assert_eq!(
        members.as_array().unwrap().len() as u64,
        org["members_count"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn clerk_invalid_parameters_are_422s() {
    let (sim, _) = sim(1, 20);
    let router = sim.router();
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("order_by=-banned", "order_by"),
        ("order_by=", "order_by"),
    ] {
        for path in [
            "/v1/users",
            "/v1/organizations",
            "/v1/organization_memberships",
        ] {
            let r = request(
                &router,
                Method::GET,
                &format!("{path}?{query}"),
                Some(KEY),
                None,
            )
            .await;
            let err = clerk_error(&r, 422, "form_param_value_invalid");
            assert_eq!(err["meta"]["param_name"], param, "{path}?{query}");
        }
    }
    assert_eq!(
        get_ok(&router, "/v1/users?limit=500")
            .await
            .as_array()
            .unwrap()
            .len(),
        20
    );
    assert_eq!(
        get_ok(&router, "/v1/users?limit=1&offset=19")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        get_ok(&router, "/v1/users?offset=20")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let stats = sim.stats();
    assert_eq!(stats.unprocessable, 18);
    assert_eq!(stats.by_route["GET /v1/users"], 9);
}

#[tokio::test]
async fn clerk_requests_need_the_secret_key() {
    let (sim, _) = sim(1, 5);
    let router = sim.router();
    for key in [None, Some("sk_test_wrong"), Some("")] {
        for path in [
            "/v1/users",
            "/v1/organizations",
            "/v1/users/user_x",
            "/v1/organization_memberships",
        ] {
            let r = request(&router, Method::GET, path, key, None).await;
            clerk_error(&r, 401, "authentication_invalid");
        }
    }
    let basic = axum::http::Request::get("/v1/users")
        .header("authorization", "Basic c2tfdGVzdF9zaW06")
        .body(axum::body::Body::empty())
        .unwrap();
    clerk_error(
        &crate::common::send(&router, basic).await,
        401,
        "authentication_invalid",
    );
    assert_eq!(sim.stats().unauthorized, 13);
    // The control API needs no key.
    let r = request(&router, Method::GET, "/control/stats", None, None).await;
    assert_eq!(r.status.as_u16(), 200);
}

#[tokio::test(start_paused = true)]
async fn clerk_rate_limit_answers_429_with_retry_after() {
    let (sim, _) = sim_with(ClerkConfig {
        rate_limit: Some((3, Duration::from_secs(10))),
        ..config(1, 5)
    });
    let router = sim.router();
    for _ in 0..3 {
        get_ok(&router, "/v1/users").await;
    }
    tokio::time::advance(Duration::from_secs(4)).await;
    let r = request(&router, Method::GET, "/v1/organizations", Some(KEY), None).await;
    clerk_error(&r, 429, "too_many_requests");
    assert_eq!(r.headers["retry-after"], "6");
    // Unauthenticated requests are refused before they count.
    let r = request(&router, Method::GET, "/v1/users", None, None).await;
    assert_eq!(r.status.as_u16(), 401);
    tokio::time::advance(Duration::from_secs(6)).await;
    get_ok(&router, "/v1/users").await;
    let stats = sim.stats();
    assert_eq!((stats.rate_limited, stats.requests), (1, 6));
}
