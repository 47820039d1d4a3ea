use axum::http::Method;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::common::*;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test]
async fn updated_at_range_filters_respect_the_boundary() {
    let (sim, _) = sim(31, 300);
    let router = sim.router();
    let people = dump_of(&sim, "Person");
    let mut times: Vec<DateTime<Utc>> = people.iter().map(|p| ts(p, "updated_at")).collect();
    times.sort();
    let pivot = times[times.len() / 2];
    let count = |f: &dyn Fn(&DateTime<Utc>) -> bool| times.iter().filter(|t| f(t)).count();

    for (op, want) in [
        ("gte", count(&|t| *t >= pivot)),
        ("gt", count(&|t| *t > pivot)),
        ("lte", count(&|t| *t <= pivot)),
        ("lt", count(&|t| *t < pivot)),
    ] {
        let uri = format!(
            "/people/v2/people?where[updated_at][{op}]={}&per_page=100&order=updated_at",
            enc(&iso(pivot))
        );
        let all = walk(&router, &uri).await;
        assert_eq!(all.len(), want, "{op}");
        for p in &all {
            let t = ts(p, "updated_at");
            let ok = match op {
                "gte" => t >= pivot,
                "gt" => t > pivot,
                "lte" => t <= pivot,
                _ => t < pivot,
            };
            assert!(ok, "{op}: {t} vs {pivot}");
        }
    }
    // The boundary record itself: included by gte/lte, excluded by gt/lt.
    let exact = walk(
        &router,
        &format!("/people/v2/people?where[updated_at]={}", enc(&iso(pivot))),
    )
    .await;
    assert!(!exact.is_empty());
    assert!(exact.iter().all(|p| ts(p, "updated_at") == pivot));

    // Offsets in other notations mean the same instant.
    let shifted = (pivot + Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%S+02:00")
        .to_string();
    let doc = get_ok(
        &router,
        &format!("/people/v2/people?where[updated_at][gte]={}", enc(&shifted)),
    )
    .await;
    assert_eq!(doc["meta"]["total_count"], count(&|t| *t >= pivot));
}

#[tokio::test]
async fn timestamp_filters_on_other_resources() {
    let (sim, _) = sim(32, 200);
    let router = sim.router();
    for (collection, type_name) in [
        ("emails", "Email"),
        ("phone_numbers", "PhoneNumber"),
        ("households", "Household"),
        ("campuses", "Campus"),
    ] {
        let all = dump_of(&sim, type_name);
        let mut created: Vec<_> = all.iter().map(|r| ts(r, "created_at")).collect();
        created.sort();
        let pivot = created[created.len() / 3];
        let want = created.iter().filter(|t| **t > pivot).count();
        let doc = get_ok(
            &router,
            &format!(
                "/people/v2/{collection}?where[created_at][gt]={}",
                enc(&iso(pivot))
            ),
        )
        .await;
        assert_eq!(doc["meta"]["total_count"], want, "{collection}");
        let doc = get_ok(
            &router,
            &format!("/people/v2/{collection}?where[updated_at][gte]=2000-01-01T00:00:00Z"),
        )
        .await;
        assert_eq!(doc["meta"]["total_count"], all.len(), "{collection}");
    }
}

#[tokio::test]
async fn updated_at_is_not_a_filter_on_addresses_or_memberships() {
    let (sim, _) = sim(33, 50);
    let router = sim.router();
    let hid = dump_of(&sim, "Household")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = dump_of(&sim, "Person")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for uri in [
        "/people/v2/addresses?where[updated_at][gte]=2020-01-01T00:00:00Z".to_owned(),
        "/people/v2/addresses?where[updated_at]=2020-01-01T00:00:00Z".to_owned(),
        format!(
            "/people/v2/people/{pid}/addresses?where%5Bupdated_at%5D%5Bgt%5D=2020-01-01T00:00:00Z"
        ),
        format!(
            "/people/v2/households/{hid}/household_memberships?where[updated_at][gte]=2020-01-01T00:00:00Z"
        ),
        format!(
            "/people/v2/people/{pid}/household_memberships?where[created_at][lt]=2020-01-01T00:00:00Z"
        ),
    ] {
        let r = call(&router, Method::GET, &uri, TOKEN, None).await;
        let err = r.error(400);
        let param = err["source"]["parameter"].as_str().unwrap();
        assert!(
            param.starts_with("where[updated_at]") || param.starts_with("where[created_at]"),
            "{param}"
        );
        assert!(err["detail"].as_str().unwrap().contains(param), "{err}");
    }
    // Their own filters work.
    let doc = get_ok(
        &router,
        "/people/v2/addresses?where[primary]=true&per_page=100",
    )
    .await;
    assert_eq!(doc["meta"]["total_count"], dump_of(&sim, "Address").len());
}

#[tokio::test]
async fn invalid_parameters_are_400s() {
    let (sim, _) = sim(34, 20);
    let router = sim.router();
    for (uri, param) in [
        ("/people/v2/people?order=shoe_size", "order"),
        ("/people/v2/people?order=-shoe_size", "order"),
        ("/people/v2/emails?order=first_name", "order"),
        ("/people/v2/people?include=pets", "include"),
        ("/people/v2/people?include=emails,field_data", "include"),
        ("/people/v2/households?include=emails", "include"),
        ("/people/v2/emails?include=person", "include"),
        ("/people/v2/people?where[shoe_size]=9", "where[shoe_size]"),
        (
            "/people/v2/people?where[updated_at][gte]=last-tuesday",
            "where[updated_at][gte]",
        ),
        (
            "/people/v2/people?where[updated_at][after]=2020-01-01",
            "where[updated_at][after]",
        ),
        (
            "/people/v2/people?where[first_name][gt]=A",
            "where[first_name][gt]",
        ),
        ("/people/v2/people?where[grade]=senior", "where[grade]"),
    ] {
        let r = call(&router, Method::GET, uri, TOKEN, None).await;
        let err = r.error(400);
        assert_eq!(err["source"]["parameter"], param, "{uri}");
    }
    // Unknown plain parameters are ignored, as PCO does.
    get_ok(&router, "/people/v2/people?utm_source=test").await;
}

#[tokio::test]
async fn equality_filters_match_the_dump() {
    let (sim, _) = sim(35, 400);
    let router = sim.router();
    let people = dump_of(&sim, "Person");
    let count = |attr: &str, v: &Value| {
        people
            .iter()
            .filter(|p| &p["attributes"][attr] == v)
            .count()
    };

    let last = people[7]["attributes"]["last_name"].clone();
    let doc = get_ok(
        &router,
        &format!(
            "/people/v2/people?where[last_name]={}",
            last.as_str().unwrap().replace(' ', "%20")
        ),
    )
    .await;
    assert_eq!(doc["meta"]["total_count"], count("last_name", &last));

    let doc = get_ok(&router, "/people/v2/people?where[child]=true&per_page=100").await;
    let children = count("child", &Value::Bool(true));
    assert!(children > 0);
    assert_eq!(doc["meta"]["total_count"], children);

    let doc = get_ok(&router, "/people/v2/people?where[status]=inactive").await;
    assert_eq!(
        doc["meta"]["total_count"],
        count("status", &Value::from("inactive"))
    );
    for p in doc["data"].as_array().unwrap() {
        assert!(p["attributes"]["inactivated_at"].is_string());
    }

    let campus = rel_id(&people[0], "primary_campus")
        .or_else(|| rel_id(&people[1], "primary_campus"))
        .unwrap();
    let doc = get_ok(
        &router,
        &format!("/people/v2/people?where[primary_campus_id]={campus}"),
    )
    .await;
    let want = people
        .iter()
        .filter(|p| rel_id(p, "primary_campus").as_deref() == Some(&campus))
        .count();
    assert_eq!(doc["meta"]["total_count"], want);

    let pid = people[3]["id"].as_str().unwrap();
    let doc = get_ok(&router, &format!("/people/v2/people?where[id]={pid}")).await;
    assert_eq!(ids(doc["data"].as_array().unwrap()), vec![pid.to_owned()]);

    let name = people[5]["attributes"]["first_name"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let doc = get_ok(
        &router,
        &format!("/people/v2/people?where[search_name]={name}&per_page=100"),
    )
    .await;
    let want = people
        .iter()
        .filter(|p| {
            p["attributes"]["name"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&name)
        })
        .count();
    assert_eq!(doc["meta"]["total_count"], want);
}
