//! Clerk's random mutations (`mutate`) and the control API over the router.

use std::collections::{HashMap, HashSet};

use axum::http::Method;
use serde_json::json;
use tributary_sim::clerk::ClerkKind;

use crate::clerk_common::{clerk_error, control, get_ok, id, request, sim};

#[test]
fn clerk_mutate_is_deterministic_and_consistent() {
    let run = || {
        let (sim, _) = sim(5, 300);
        let events = sim.mutate(400, 9);
        (sim, events)
    };
    let (a, events) = run();
    let (b, again) = run();
    assert_eq!(events, again);
    assert_eq!(a.users(), b.users());
    assert_eq!(a.memberships(), b.memberships());
    let kinds: HashSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    for kind in [
        "user.created",
        "user.updated",
        "user.deleted",
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organizationMembership.created",
        "organizationMembership.updated",
        "organizationMembership.deleted",
        "organizationInvitation.created",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    assert!(events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    assert_eq!(a.events(), events);
    // Every surviving object's updated_at is its last event's timestamp (or generated).
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in &events {
        if let Some(id) = e.object_id() {
            last.insert(
                id.to_owned(),
                e.data["updated_at"].as_i64().unwrap_or(e.timestamp),
            );
        }
    }
    for u in a.users() {
        if let Some(at) = last.get(id(&u)) {
            assert_eq!(u["updated_at"].as_i64().unwrap(), *at, "{}", u["id"]);
        }
    }
    // Consistency: every membership points at live objects; no live organization is empty.
    let users: HashSet<String> = a.users().iter().map(|u| id(u).to_owned()).collect();
    let orgs = a.organizations();
    for m in a.memberships() {
        assert!(users.contains(m["public_user_data"]["user_id"].as_str().unwrap()));
    }
    assert!(
        orgs.iter()
            .all(|o| o["members_count"].as_u64().unwrap() > 0)
    );
    for deleted in a.deleted_ids(ClerkKind::User) {
        assert!(!users.contains(&deleted));
    }
    // Another seed, other mutations.
    let (c, _) = sim(5, 300);
    assert_ne!(c.mutate(400, 10), events);
}

#[tokio::test]
async fn clerk_control_api_mutates_and_dumps() {
    let (sim, _) = sim(6, 20);
    let router = sim.router();
    let user = control(
        &router,
        Method::POST,
        "/control/users",
        Some(json!({"first_name": "Björk", "email_address": ["bjork@example.com"]})),
    )
    .await;
    let uid = id(&user).to_owned();
    assert_eq!(get_ok(&router, &format!("/v1/users/{uid}")).await, user);
    let patched = control(
        &router,
        Method::PATCH,
        &format!("/control/users/{uid}"),
        Some(json!({"username": null, "banned": true})),
    )
    .await;
    assert!(patched["username"].is_null() && patched["banned"] == true);
    let org = control(
        &router,
        Method::POST,
        "/control/organizations",
        Some(json!({"name": "東京ラボ", "created_by": uid})),
    )
    .await;
    assert!(
        org["slug"].as_str().unwrap().starts_with("org"),
        "a CJK name has no ASCII slug"
    );
    let other = id(&sim.users()[0]).to_owned();
    let m = control(
        &router,
        Method::POST,
        "/control/memberships",
        Some(json!({"organization_id": id(&org), "user_id": other})),
    )
    .await;
    control(
        &router,
        Method::PATCH,
        &format!("/control/memberships/{}", id(&m)),
        Some(json!({"role": "org:admin"})),
    )
    .await;
    let mutated = control(
        &router,
        Method::POST,
        "/control/mutate",
        Some(json!({"count": 25, "seed": 3})),
    )
    .await;
    let events = mutated["events"].as_array().unwrap();
    assert!(events.len() >= 25);
    assert!(
        events
            .iter()
            .all(|e| e["object"] == "event" && e["svix_id"].is_string())
    );
    let dump = control(&router, Method::GET, "/control/dump", None).await;
    assert_eq!(dump["users"].as_array().unwrap(), &sim.users());
    assert_eq!(dump["memberships"].as_array().unwrap(), &sim.memberships());
    control(
        &router,
        Method::DELETE,
        &format!("/control/users/{uid}"),
        None,
    )
    .await;
    let dump = control(&router, Method::GET, "/control/dump", None).await;
    assert!(
        dump["deleted"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == uid.as_str())
    );
    // Bad bodies and unknown ids answer Clerk errors.
    let r = request(
        &router,
        Method::POST,
        "/control/users",
        None,
        Some(json!({"nickname": "x"})),
    )
    .await;
    clerk_error(&r, 400, "request_body_invalid");
    let r = request(
        &router,
        Method::DELETE,
        "/control/users/user_nope",
        None,
        None,
    )
    .await;
    clerk_error(&r, 404, "resource_not_found");
    let r = request(
        &router,
        Method::PATCH,
        &format!("/control/memberships/{}", id(&m)),
        None,
        Some(json!({"role": "boss"})),
    )
    .await;
    clerk_error(&r, 422, "form_param_value_invalid");
    let all = control(&router, Method::GET, "/control/events", None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), sim.events().len());
    let stats = control(&router, Method::GET, "/control/stats", None).await;
    assert!(stats["api"]["control_requests"].as_u64().unwrap() >= 10);
    assert_eq!(
        stats["webhooks"]["events"].as_u64().unwrap() as usize,
        sim.events().len()
    );
}
