use axum::http::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn nested_person_collections_match_the_dump() {
    let (sim, _) = sim(21, 60);
    let router = sim.router();
    let people = dump_of(&sim, "Person");
    for (collection, type_name) in [
        ("emails", "Email"),
        ("phone_numbers", "PhoneNumber"),
        ("addresses", "Address"),
        ("household_memberships", "HouseholdMembership"),
    ] {
        let children = dump_of(&sim, type_name);
        let mut seen = 0;
        for person in people.iter().take(25) {
            let pid = person["id"].as_str().unwrap();
            let doc = get_ok(
                &router,
                &format!("/people/v2/people/{pid}/{collection}?per_page=100"),
            )
            .await;
            assert_eq!(
                doc["meta"]["parent"],
                serde_json::json!({"id": pid, "type": "Person"})
            );
            let got: Vec<Value> = doc["data"]
                .as_array()
                .unwrap()
                .iter()
                .cloned()
                .map(without_links)
                .collect();
            let want: Vec<Value> = children
                .iter()
                .filter(|c| rel_id(c, "person").as_deref() == Some(pid))
                .cloned()
                .collect();
            assert_eq!(got, want, "{collection} of {pid}");
            assert_eq!(doc["meta"]["total_count"], want.len());
            seen += want.len();
        }
        if type_name != "Address" && type_name != "PhoneNumber" {
            assert!(seen >= 25, "{collection}: every person has at least one");
        }
    }
}

#[tokio::test]
async fn household_members_and_person_households() {
    let (sim, _) = sim(22, 90);
    let router = sim.router();
    let memberships = dump_of(&sim, "HouseholdMembership");
    let households = dump_of(&sim, "Household");
    assert_eq!(memberships.len(), 90, "one membership per person");

    let mut covered = 0;
    for hh in &households {
        let hid = hh["id"].as_str().unwrap();
        let members: Vec<&Value> = memberships
            .iter()
            .filter(|m| rel_id(m, "household").as_deref() == Some(hid))
            .collect();
        let size = members.len();
        assert!((1..=6).contains(&size));
        assert_eq!(hh["attributes"]["member_count"], size);
        covered += size;

        let people = walk(
            &router,
            &format!("/people/v2/households/{hid}/people?per_page=2"),
        )
        .await;
        let person_ids = ids(&people);
        let want: Vec<String> = members
            .iter()
            .map(|m| rel_id(m, "person").unwrap())
            .collect();
        assert_eq!(person_ids, want);
        assert_eq!(rel_ids(hh, "people"), want);
        assert_eq!(rel_id(hh, "primary_contact").unwrap(), want[0]);
        assert_eq!(hh["attributes"]["primary_contact_id"], want[0].as_str());

        let mems = walk(
            &router,
            &format!("/people/v2/households/{hid}/household_memberships?per_page=1"),
        )
        .await;
        assert_eq!(mems.len(), size);
        for m in &mems {
            let link = m["links"]["self"].as_str().unwrap();
            assert_eq!(
                link,
                format!(
                    "{BASE}/people/v2/households/{hid}/household_memberships/{}",
                    m["id"].as_str().unwrap()
                )
            );
            // Single membership through its household.
            let one = get_ok(&router, link).await;
            assert_eq!(one["data"]["id"], m["id"]);
        }

        for pid in &want {
            let doc = get_ok(&router, &format!("/people/v2/people/{pid}/households")).await;
            assert_eq!(ids(doc["data"].as_array().unwrap()), vec![hid.to_owned()]);
        }
    }
    assert_eq!(covered, 90, "each person is in exactly one household");
}

#[tokio::test]
async fn nested_routes_404_for_missing_parents_and_foreign_children() {
    let (sim, _) = sim(23, 30);
    let router = sim.router();
    let r = call(
        &router,
        Method::GET,
        "/people/v2/people/99999999/emails",
        TOKEN,
        None,
    )
    .await;
    r.error(404);
    let hh = dump_of(&sim, "Household");
    let (h0, h1) = (hh[0]["id"].as_str().unwrap(), hh[1]["id"].as_str().unwrap());
    let mem = get_ok(
        &router,
        &format!("/people/v2/households/{h0}/household_memberships"),
    )
    .await;
    let mid = mem["data"][0]["id"].as_str().unwrap();
    let r = call(
        &router,
        Method::GET,
        &format!("/people/v2/households/{h1}/household_memberships/{mid}"),
        TOKEN,
        None,
    )
    .await;
    r.error(404);
    let r = call(
        &router,
        Method::GET,
        "/people/v2/household_memberships",
        TOKEN,
        None,
    )
    .await;
    r.error(404);
    let r = call(
        &router,
        Method::GET,
        &format!("/people/v2/households/{h0}/emails"),
        TOKEN,
        None,
    )
    .await;
    r.error(404);
}
