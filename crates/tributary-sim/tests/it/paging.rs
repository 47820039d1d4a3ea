use axum::http::Method;
use serde_json::Value;
use tributary_sim::ResourceKind;

use crate::common::*;

#[tokio::test]
async fn walking_links_next_covers_every_collection_exactly_once() {
    let (sim, _) = sim(3, 400);
    let router = sim.router();
    for (collection, kind) in [
        ("people", ResourceKind::Person),
        ("emails", ResourceKind::Email),
        ("phone_numbers", ResourceKind::PhoneNumber),
        ("addresses", ResourceKind::Address),
        ("households", ResourceKind::Household),
        ("campuses", ResourceKind::Campus),
    ] {
        let all = walk(&router, &format!("/people/v2/{collection}?per_page=100")).await;
        let got = ids(&all);
        assert_unique(&got);
        assert_eq!(got.len(), sim.count(kind), "{collection}");
        assert!(!got.is_empty());
        // Default order is id ascending.
        let nums: Vec<u64> = all.iter().map(id_num).collect();
        assert!(
            nums.windows(2).all(|w| w[0] < w[1]),
            "{collection} not in id order"
        );
        for res in &all {
            assert_eq!(res["type"], kind.type_name());
            assert!(res["attributes"].is_object());
            assert!(res["relationships"].is_object());
            let link = res["links"]["self"].as_str().unwrap();
            assert_eq!(
                link,
                format!(
                    "{BASE}/people/v2/{collection}/{}",
                    res["id"].as_str().unwrap()
                )
            );
        }
    }
    assert_eq!(sim.count(ResourceKind::Person), 400);
}

#[tokio::test]
async fn page_sizes_default_clamp_and_reject_garbage() {
    let (sim, _) = sim(3, 300);
    let router = sim.router();

    let doc = get_ok(&router, "/people/v2/people").await;
    assert_eq!(doc["data"].as_array().unwrap().len(), 25);
    assert_eq!(doc["meta"]["next"]["offset"], 25);
    assert_eq!(doc["meta"]["total_count"], 300);
    assert_eq!(doc["meta"]["parent"]["type"], "Organization");
    assert_eq!(doc["meta"]["parent"]["id"], "1");
    assert!(
        doc["meta"]["can_order_by"]
            .as_array()
            .unwrap()
            .contains(&Value::from("updated_at"))
    );
    assert!(
        doc["meta"]["can_query_by"]
            .as_array()
            .unwrap()
            .contains(&Value::from("updated_at"))
    );
    assert_eq!(doc["links"]["self"], format!("{BASE}/people/v2/people"));
    assert_eq!(
        doc["links"]["next"],
        format!("{BASE}/people/v2/people?offset=25")
    );

    let doc = get_ok(&router, "/people/v2/people?per_page=1000").await;
    assert_eq!(doc["data"].as_array().unwrap().len(), 100);
    assert_eq!(doc["meta"]["next"]["offset"], 100);

    let doc = get_ok(&router, "/people/v2/people?per_page=7&offset=296").await;
    assert_eq!(doc["data"].as_array().unwrap().len(), 4);
    assert!(doc["links"].get("next").is_none());
    assert!(doc["meta"].get("next").is_none());

    let doc = get_ok(&router, "/people/v2/people?offset=5000").await;
    assert_eq!(doc["data"].as_array().unwrap().len(), 0);
    assert_eq!(doc["meta"]["total_count"], 300);
    assert!(doc["links"].get("next").is_none());

    for bad in ["per_page=ten", "per_page=-1", "offset=x"] {
        let r = call(
            &router,
            Method::GET,
            &format!("/people/v2/people?{bad}"),
            TOKEN,
            None,
        )
        .await;
        let err = r.error(400);
        let param = bad.split('=').next().unwrap();
        assert_eq!(err["source"]["parameter"], param);
    }
}

#[tokio::test]
async fn next_links_keep_the_other_parameters() {
    let (sim, _) = sim(5, 120);
    let router = sim.router();
    let doc = get_ok(
        &router,
        "/people/v2/people?order=-updated_at&per_page=10&where%5Bstatus%5D=active&offset=10",
    )
    .await;
    let next = doc["links"]["next"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{BASE}/people/v2/people?")),
        "{next}"
    );
    assert!(next.contains("order=-updated_at"), "{next}");
    assert!(next.contains("per_page=10"), "{next}");
    assert!(next.contains("where%5Bstatus%5D=active"), "{next}");
    assert!(next.ends_with("offset=20"), "{next}");
    assert_eq!(next.matches("offset=").count(), 1, "{next}");
}

#[tokio::test]
async fn ordered_walks_are_sorted_and_complete() {
    let (sim, _) = sim(9, 250);
    let router = sim.router();

    let all = walk(&router, "/people/v2/people?order=-updated_at&per_page=33").await;
    assert_eq!(all.len(), 250);
    assert_unique(&ids(&all));
    let times: Vec<_> = all.iter().map(|p| ts(p, "updated_at")).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "not descending by updated_at"
    );

    let all = walk(
        &router,
        "/people/v2/people?order=last_name,first_name&per_page=100",
    )
    .await;
    let names: Vec<(String, String, u64)> = all
        .iter()
        .map(|p| {
            (
                p["attributes"]["last_name"].as_str().unwrap().to_owned(),
                p["attributes"]["first_name"].as_str().unwrap().to_owned(),
                id_num(p),
            )
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    let all = walk(&router, "/people/v2/emails?order=created_at&per_page=100").await;
    assert_eq!(all.len(), sim.count(ResourceKind::Email));
    let created: Vec<_> = all.iter().map(|e| ts(e, "created_at")).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]));
    // Ids ascend with created_at in the generated data.
    let nums: Vec<u64> = all.iter().map(id_num).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn deep_pages_of_a_large_data_set_are_cheap() {
    let (sim, _) = sim(1, 200_000);
    let router = sim.router();
    let started = std::time::Instant::now();
    let doc = get_ok(&router, "/people/v2/people?per_page=100&offset=199950").await;
    assert_eq!(doc["data"].as_array().unwrap().len(), 50);
    assert_eq!(doc["meta"]["total_count"], 200_000);
    assert_eq!(doc["data"][49]["id"], (10_000_000u64 + 200_000).to_string());
    assert!(doc["links"].get("next").is_none());
    assert!(started.elapsed().as_secs_f64() < 2.0);
}
