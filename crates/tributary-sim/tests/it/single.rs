use axum::http::{Method, header};
use serde_json::Value;
use tributary_sim::ResourceKind;

use crate::common::*;

#[tokio::test]
async fn single_gets_serve_what_the_dump_lists() {
    let (sim, _) = sim(61, 40);
    let router = sim.router();
    for line in sim.dump(None) {
        let type_name = line["type"].as_str().unwrap();
        let kind: ResourceKind = type_name.parse().unwrap();
        let id = line["id"].as_str().unwrap();
        let uri = match kind {
            ResourceKind::HouseholdMembership => format!(
                "/people/v2/households/{}/household_memberships/{id}",
                rel_id(&line, "household").unwrap()
            ),
            ResourceKind::Membership => format!(
                "/groups/v2/groups/{}/memberships/{id}",
                rel_id(&line, "group").unwrap()
            ),
            _ => format!("{}/{}/{id}", kind.app().prefix(), kind.collection()),
        };
        let r = call(&router, Method::GET, &uri, TOKEN, None).await;
        assert_eq!(r.status, 200, "{uri}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let doc = r.json();
        assert_eq!(doc["data"]["links"]["self"], format!("{BASE}{uri}"));
        assert_eq!(without_links(doc["data"].clone()), line, "{uri}");
        assert!(doc.get("included").is_none());
    }
}

#[tokio::test]
async fn unknown_ids_and_routes_are_json_404s() {
    let (sim, _) = sim(62, 10);
    let router = sim.router();
    for uri in [
        "/people/v2/people/10000011",
        "/people/v2/people/1",
        "/people/v2/people/abc",
        "/people/v2/emails/99",
        "/people/v2/campuses/70099",
        "/people/v2/widgets",
        "/people/v2/people/10000001/pets",
        "/people/v2/people/10000001/emails/20000001/extra",
    ] {
        let r = call(&router, Method::GET, uri, TOKEN, None).await;
        r.error(404);
    }
    let r = call(&router, Method::GET, "/elsewhere", Auth::None, None).await;
    r.error(404);
    let r = call(
        &router,
        Method::POST,
        "/people/v2/people",
        TOKEN,
        Some(serde_json::json!({})),
    )
    .await;
    r.error(405);
    for (method, uri) in [
        (Method::GET, "/__sim/people"),
        (Method::POST, "/__sim/dump"),
        (Method::PUT, "/__sim/people/1"),
    ] {
        call(&router, method, uri, Auth::None, None)
            .await
            .error(405);
    }
}

#[tokio::test]
async fn organization_and_resource_shapes() {
    let (sim, _) = sim(63, 50);
    let router = sim.router();
    let org = get_ok(&router, "/people/v2").await;
    assert_eq!(org["data"]["type"], "Organization");
    assert_eq!(org["data"]["id"], "1");

    let person_attrs = [
        "accounting_administrator",
        "anniversary",
        "avatar",
        "birthdate",
        "can_create_forms",
        "can_email_lists",
        "child",
        "created_at",
        "demographic_avatar_url",
        "directory_shared_info",
        "directory_status",
        "first_name",
        "gender",
        "given_name",
        "grade",
        "graduation_year",
        "inactivated_at",
        "last_name",
        "login_identifier",
        "medical_notes",
        "membership",
        "mfa_configured",
        "middle_name",
        "name",
        "nickname",
        "passed_background_check",
        "people_permissions",
        "remote_id",
        "resource_permission_flags",
        "school_type",
        "site_administrator",
        "status",
        "stripe_customer_identifier",
        "updated_at",
    ];
    for p in dump_of(&sim, "Person") {
        let a = p["attributes"].as_object().unwrap();
        let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, person_attrs);
        assert!(["M", "F"].contains(&a["gender"].as_str().unwrap()));
        assert!(ts(&p, "updated_at") >= ts(&p, "created_at"));
        let birth = a["birthdate"].as_str().unwrap();
        assert_eq!(birth.len(), 10);
        if a["child"] == Value::Bool(false) {
            assert!(a["grade"].is_null() && a["graduation_year"].is_null());
        }
        assert_eq!(a["resource_permission_flags"], serde_json::json!({}));
    }
    for e in dump_of(&sim, "Email") {
        let a = &e["attributes"];
        assert!(a["address"].as_str().unwrap().contains('@'));
        assert!(["Home", "Work", "Other"].contains(&a["location"].as_str().unwrap()));
    }
    for ph in dump_of(&sim, "PhoneNumber") {
        let a = &ph["attributes"];
        assert!(a["e164"].as_str().unwrap().starts_with("+1"));
        assert_eq!(a["country_code"], "US");
    }
    let campuses = dump_of(&sim, "Campus");
    assert!((3..=6).contains(&campuses.len()));
    for c in &campuses {
        assert_eq!(
            c["relationships"]["organization"]["data"],
            serde_json::json!({"type": "Organization", "id": "1"})
        );
        assert!(c["attributes"]["latitude"].is_number());
    }
    for m in dump_of(&sim, "HouseholdMembership") {
        let a = m["attributes"].as_object().unwrap();
        assert_eq!(a.len(), 3, "memberships have no timestamps");
        assert!(
            [
                "adult",
                "child_or_dependent",
                "other_adult",
                "parent_guardian"
            ]
            .contains(&a["household_role"].as_str().unwrap())
        );
    }
}
