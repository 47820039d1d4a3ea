use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::common::*;

fn key(v: &Value) -> (String, String) {
    (
        v["type"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn people_includes_contain_exactly_the_referenced_children() {
    let (sim, _) = sim(41, 120);
    let router = sim.router();
    let mut by_person: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (type_name, rel) in [
        ("Email", "emails"),
        ("PhoneNumber", "phone_numbers"),
        ("Address", "addresses"),
    ] {
        for child in dump_of(&sim, type_name) {
            let pid = rel_id(&child, "person").unwrap();
            by_person
                .entry((pid, rel.to_owned()))
                .or_default()
                .push(child["id"].as_str().unwrap().to_owned());
        }
    }
    let dump: HashMap<(String, String), Value> =
        sim.dump(None).into_iter().map(|v| (key(&v), v)).collect();

    let doc = get_ok(
        &router,
        "/people/v2/people?per_page=50&offset=10&include=emails,phone_numbers,addresses,households,primary_campus",
    )
    .await;
    let people = doc["data"].as_array().unwrap();
    assert_eq!(people.len(), 50);
    let mut referenced = BTreeSet::new();
    for p in people {
        let pid = p["id"].as_str().unwrap().to_owned();
        for (rel, type_name) in [
            ("emails", "Email"),
            ("phone_numbers", "PhoneNumber"),
            ("addresses", "Address"),
        ] {
            let got = rel_ids(p, rel);
            let want = by_person
                .get(&(pid.clone(), rel.to_owned()))
                .cloned()
                .unwrap_or_default();
            assert_eq!(got, want, "{rel} of {pid}");
            referenced.extend(got.into_iter().map(|id| (type_name.to_owned(), id)));
        }
        let households = rel_ids(p, "households");
        assert_eq!(households.len(), 1);
        referenced.extend(
            households
                .into_iter()
                .map(|id| ("Household".to_owned(), id)),
        );
        if let Some(c) = rel_id(p, "primary_campus") {
            referenced.insert(("Campus".to_owned(), c));
        }
    }
    let included = doc["included"].as_array().unwrap();
    let keys: Vec<(String, String)> = included.iter().map(key).collect();
    let set: BTreeSet<(String, String)> = keys.iter().cloned().collect();
    assert_eq!(set.len(), keys.len(), "included has duplicates");
    assert_eq!(set, referenced);
    // Included resources are complete resources, equal to their dump lines.
    for inc in included {
        assert!(inc["links"]["self"].is_string());
        assert_eq!(&without_links(inc.clone()), &dump[&key(inc)]);
    }
    assert_eq!(doc["meta"]["can_include"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn without_include_there_is_no_included_and_only_default_relationships() {
    let (sim, _) = sim(42, 30);
    let router = sim.router();
    let doc = get_ok(&router, "/people/v2/people").await;
    assert!(doc.get("included").is_none());
    for p in doc["data"].as_array().unwrap() {
        let rels = p["relationships"].as_object().unwrap();
        assert_eq!(rels.keys().collect::<Vec<_>>(), vec!["primary_campus"]);
        let data = &rels["primary_campus"]["data"];
        assert!(data.is_null() || data["type"] == "Campus");
    }
    let doc = get_ok(&router, "/people/v2/people?include=emails").await;
    for p in doc["data"].as_array().unwrap() {
        let rels = p["relationships"].as_object().unwrap();
        assert_eq!(rels.len(), 2);
        assert!(!rel_ids(p, "emails").is_empty());
    }
    assert!(
        doc["included"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] == "Email")
    );
}

#[tokio::test]
async fn household_and_membership_includes() {
    let (sim, _) = sim(43, 80);
    let router = sim.router();
    let doc = get_ok(&router, "/people/v2/households?include=people&per_page=10").await;
    let mut want = BTreeSet::new();
    for h in doc["data"].as_array().unwrap() {
        want.extend(rel_ids(h, "people"));
    }
    let got: BTreeSet<String> = doc["included"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["type"], "Person");
            p["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(got, want);

    let hid = doc["data"][0]["id"].as_str().unwrap();
    let doc = get_ok(
        &router,
        &format!("/people/v2/households/{hid}/household_memberships?include=person,household"),
    )
    .await;
    let mut want = BTreeSet::from([("Household".to_owned(), hid.to_owned())]);
    for m in doc["data"].as_array().unwrap() {
        want.insert(("Person".to_owned(), rel_id(m, "person").unwrap()));
        assert_eq!(rel_id(m, "household").unwrap(), hid);
    }
    let got: BTreeSet<(String, String)> = doc["included"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn single_resources_accept_include() {
    let (sim, _) = sim(44, 20);
    let router = sim.router();
    let pid = sim.ids(tributary_sim::ResourceKind::Person, 4, 1)[0];
    let doc = get_ok(
        &router,
        &format!("/people/v2/people/{pid}?include=emails,households"),
    )
    .await;
    let emails = rel_ids(&doc["data"], "emails");
    let households = rel_ids(&doc["data"], "households");
    let included: BTreeSet<(String, String)> = doc["included"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    let mut want: BTreeSet<(String, String)> = emails
        .into_iter()
        .map(|e| ("Email".to_owned(), e))
        .collect();
    want.extend(households.into_iter().map(|h| ("Household".to_owned(), h)));
    assert_eq!(included, want);
}
