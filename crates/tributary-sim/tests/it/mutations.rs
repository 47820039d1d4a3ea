use axum::http::{Method, StatusCode};
use chrono::{Duration, SecondsFormat};
use serde_json::{Value, json};
use tributary_sim::ResourceKind;

use crate::common::*;

fn iso_ms(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test]
async fn update_sets_raw_attributes_and_bumps_updated_at() {
    let (sim, clock) = sim(71, 100);
    let router = sim.router();
    let pid = sim.ids(ResourceKind::Person, 10, 1)[0];
    let before = sim.get(ResourceKind::Person, pid).unwrap();

    let r = call(
        &router,
        Method::PATCH,
        &format!("/__sim/people/{pid}"),
        Auth::None,
        Some(json!({"attributes": {"first_name": "Zed", "birthdate": "not-a-date", "shoe_size": 44}})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let patched = r.json()["data"].clone();
    assert_eq!(patched["id"], pid.to_string());
    assert_eq!(patched["attributes"]["first_name"], "Zed");
    assert_eq!(patched["attributes"]["birthdate"], "not-a-date");
    assert_eq!(patched["attributes"]["shoe_size"], 44);
    // Not re-derived.
    assert_eq!(patched["attributes"]["name"], before["attributes"]["name"]);
    assert_eq!(
        patched["attributes"]["created_at"],
        before["attributes"]["created_at"]
    );
    assert_eq!(ts(&patched, "updated_at"), clock_start());

    // The API serves the same thing, and the gte filter finds exactly it.
    let doc = get_ok(&router, &format!("/people/v2/people/{pid}")).await;
    assert_eq!(
        without_links(doc["data"].clone()),
        without_links(patched.clone())
    );
    let uri = format!(
        "/people/v2/people?where[updated_at][gte]={}",
        enc(&iso_ms(clock_start()))
    );
    let doc = get_ok(&router, &uri).await;
    assert_eq!(ids(doc["data"].as_array().unwrap()), vec![pid.to_string()]);

    // With the clock standing still, the next mutation is still 1 ms later...
    let second = sim
        .update(
            ResourceKind::Person,
            pid + 1,
            &json!({"attributes": {"nickname": "Bo"}}),
        )
        .unwrap();
    assert_eq!(
        ts(&second, "updated_at"),
        clock_start() + Duration::milliseconds(1)
    );
    assert_eq!(
        second["attributes"]["updated_at"],
        "2026-01-02T03:04:05.001Z"
    );
    // ...and it follows the clock when the clock moves on.
    clock.advance(Duration::minutes(5));
    let third = sim
        .update(
            ResourceKind::Email,
            sim.ids(ResourceKind::Email, 0, 1)[0],
            &json!({"attributes": {"blocked": true}}),
        )
        .unwrap();
    assert_eq!(
        ts(&third, "updated_at"),
        clock_start() + Duration::minutes(5)
    );

    let doc = get_ok(&router, &format!("{uri}&order=updated_at")).await;
    assert_eq!(doc["meta"]["total_count"], 2, "people only");
    assert_eq!(
        ids(doc["data"].as_array().unwrap()),
        vec![pid.to_string(), (pid + 1).to_string()]
    );
    let doc = get_ok(
        &router,
        &format!(
            "/people/v2/people?where[updated_at][gt]={}",
            enc(&iso_ms(clock_start()))
        ),
    )
    .await;
    assert_eq!(doc["meta"]["total_count"], 1, "gt excludes the boundary");

    // The dump reflects the overlay.
    let dumped = dump_of(&sim, "Person");
    let pid_s = pid.to_string();
    let line = dumped.iter().find(|p| p["id"] == pid_s.as_str()).unwrap();
    assert_eq!(line, &without_links(patched));

    // Explicit updated_at wins.
    let v = sim
        .update(
            ResourceKind::Person,
            pid,
            &json!({"attributes": {"updated_at": "garbage"}}),
        )
        .unwrap();
    assert_eq!(v["attributes"]["updated_at"], "garbage");
    let r = call(
        &router,
        Method::PATCH,
        "/__sim/people/1",
        Auth::None,
        Some(json!({"attributes": {}})),
    )
    .await;
    r.error(404);
    let r = call(
        &router,
        Method::PATCH,
        &format!("/__sim/people/{pid}"),
        Auth::None,
        Some(json!([1])),
    )
    .await;
    r.error(400);
    assert_eq!(sim.stats().mutations, 4);
}

#[tokio::test]
async fn deleting_a_person_cascades() {
    let (sim, _) = sim(72, 60);
    let router = sim.router();
    // A person in a household of at least two, with emails.
    let memberships = dump_of(&sim, "HouseholdMembership");
    let mut pick = None;
    for m in &memberships {
        let hid = rel_id(m, "household").unwrap();
        let size = memberships
            .iter()
            .filter(|x| rel_id(x, "household").as_deref() == Some(&hid))
            .count();
        if size >= 2 {
            pick = Some((rel_id(m, "person").unwrap(), hid, size));
            break;
        }
    }
    let (pid, hid, size) = pick.expect("some household has two members");
    let children: Vec<(String, String)> = sim
        .dump(None)
        .into_iter()
        .filter(|r| rel_id(r, "person").as_deref() == Some(&pid))
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(children.iter().any(|(t, _)| t == "Email"));
    assert!(children.iter().any(|(t, _)| t == "HouseholdMembership"));
    let people_before = sim.count(ResourceKind::Person);
    let emails_before = sim.count(ResourceKind::Email);

    let r = call(
        &router,
        Method::DELETE,
        &format!("/__sim/people/{pid}"),
        Auth::None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());

    call(
        &router,
        Method::GET,
        &format!("/people/v2/people/{pid}"),
        TOKEN,
        None,
    )
    .await
    .error(404);
    call(
        &router,
        Method::GET,
        &format!("/people/v2/people/{pid}/emails"),
        TOKEN,
        None,
    )
    .await
    .error(404);
    let dump = sim.dump(None);
    assert!(
        !dump
            .iter()
            .any(|r| r["type"] == "Person" && r["id"] == pid.as_str())
    );
    assert!(
        !dump
            .iter()
            .any(|r| rel_id(r, "person").as_deref() == Some(&pid))
    );
    for (type_name, id) in &children {
        let kind: ResourceKind = type_name.parse().unwrap();
        if kind != ResourceKind::HouseholdMembership {
            call(
                &router,
                Method::GET,
                &format!("/people/v2/{}/{id}", kind.collection()),
                TOKEN,
                None,
            )
            .await
            .error(404);
        }
    }
    let email_count = children.iter().filter(|(t, _)| t == "Email").count();
    assert_eq!(sim.count(ResourceKind::Person), people_before - 1);
    assert_eq!(sim.count(ResourceKind::Email), emails_before - email_count);
    let people = walk(&router, "/people/v2/people?per_page=7").await;
    assert_eq!(people.len(), people_before - 1);
    assert!(!ids(&people).contains(&pid));
    let emails = walk(&router, "/people/v2/emails?per_page=9").await;
    assert_eq!(emails.len(), emails_before - email_count);

    // The household lost a member and changed.
    let hh = get_ok(&router, &format!("/people/v2/households/{hid}")).await["data"].clone();
    assert_eq!(hh["attributes"]["member_count"], size - 1);
    assert!(!rel_ids(&hh, "people").contains(&pid));
    assert_ne!(
        rel_id(&hh, "primary_contact").as_deref(),
        Some(pid.as_str())
    );
    assert_eq!(ts(&hh, "updated_at"), clock_start());
    let members = get_ok(
        &router,
        &format!("/people/v2/households/{hid}/household_memberships"),
    )
    .await;
    assert_eq!(members["meta"]["total_count"], size - 1);

    call(
        &router,
        Method::DELETE,
        &format!("/__sim/people/{pid}"),
        Auth::None,
        None,
    )
    .await
    .error(404);
    call(
        &router,
        Method::DELETE,
        "/__sim/widgets/1",
        Auth::None,
        None,
    )
    .await
    .error(404);
}

#[tokio::test]
async fn created_resources_appear_in_lists_dump_and_includes() {
    let (sim, _) = sim(73, 30);
    let router = sim.router();
    let campus = sim.ids(ResourceKind::Campus, 0, 1)[0];

    let r = call(
        &router,
        Method::POST,
        "/__sim/people",
        Auth::None,
        Some(json!({
            "attributes": {"first_name": "Ada", "last_name": "Lovelace", "birthdate": "1815-12-10"},
            "relationships": {"primary_campus": {"data": {"type": "Campus", "id": campus.to_string()}}}
        })),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let person = r.json()["data"].clone();
    let pid = id_num(&person);
    assert_eq!(
        pid,
        10_000_000 + 30 + 1,
        "new ids follow the generated range"
    );
    assert_eq!(person["attributes"]["name"], "Ada Lovelace");
    assert_eq!(
        person["attributes"]["created_at"],
        person["attributes"]["updated_at"]
    );
    assert_eq!(ts(&person, "created_at"), clock_start());
    assert_eq!(rel_id(&person, "primary_campus"), Some(campus.to_string()));
    assert_eq!(
        person["links"]["self"],
        format!("{BASE}/people/v2/people/{pid}")
    );

    let email = sim
        .create(ResourceKind::Email, &json!({"attributes": {"address": "ada@example.com"}, "relationships": {"person": pid.to_string()}}))
        .unwrap();
    assert_eq!(
        email["attributes"]["primary"], true,
        "the first email is primary"
    );
    let second = sim
        .create(
            ResourceKind::Email,
            &json!({"relationships": {"person": pid}}),
        )
        .unwrap();
    assert_eq!(second["attributes"]["primary"], false);

    let people = walk(&router, "/people/v2/people?per_page=100").await;
    assert_eq!(people.len(), 31);
    assert_eq!(id_num(people.last().unwrap()), pid);
    let doc = get_ok(&router, &format!("/people/v2/people/{pid}?include=emails")).await;
    assert_eq!(
        rel_ids(&doc["data"], "emails"),
        vec![
            email["id"].as_str().unwrap().to_owned(),
            second["id"].as_str().unwrap().to_owned()
        ]
    );
    assert_eq!(doc["included"].as_array().unwrap().len(), 2);
    let nested = get_ok(&router, &format!("/people/v2/people/{pid}/emails")).await;
    assert_eq!(nested["meta"]["total_count"], 2);
    let dump = dump_of(&sim, "Email");
    assert_eq!(dump.last().unwrap(), &second);

    // A household for two people creates their memberships.
    let other = sim.ids(ResourceKind::Person, 0, 1)[0];
    let hh = sim
        .create(
            ResourceKind::Household,
            &json!({"relationships": {"people": [pid.to_string(), other.to_string()]}}),
        )
        .unwrap();
    assert_eq!(hh["attributes"]["name"], "Lovelace Household");
    assert_eq!(hh["attributes"]["member_count"], 2);
    assert_eq!(hh["attributes"]["primary_contact_id"], pid.to_string());
    assert_eq!(
        rel_ids(&hh, "people"),
        vec![pid.to_string(), other.to_string()]
    );
    let hid = hh["id"].as_str().unwrap();
    let mems = get_ok(
        &router,
        &format!("/people/v2/households/{hid}/household_memberships"),
    )
    .await;
    assert_eq!(mems["meta"]["total_count"], 2);
    assert_eq!(mems["data"][0]["attributes"]["person_name"], "Ada Lovelace");
    let households = get_ok(&router, &format!("/people/v2/people/{other}/households")).await;
    assert_eq!(
        households["meta"]["total_count"], 2,
        "generated household plus the new one"
    );

    // New resources show up in updated_at filters; deleting a created one removes it.
    let uri = format!(
        "/people/v2/emails?where[updated_at][gte]={}",
        enc(&iso_ms(clock_start()))
    );
    assert_eq!(get_ok(&router, &uri).await["meta"]["total_count"], 2);
    sim.delete(ResourceKind::Email, id_num(&email)).unwrap();
    assert_eq!(get_ok(&router, &uri).await["meta"]["total_count"], 1);
    assert!(sim.get(ResourceKind::Email, id_num(&email)).is_none());

    // Bad references and bodies.
    let r = call(
        &router,
        Method::POST,
        "/__sim/emails",
        Auth::None,
        Some(json!({"relationships": {"person": "1"}})),
    )
    .await;
    r.error(422);
    let r = call(
        &router,
        Method::POST,
        "/__sim/emails",
        Auth::None,
        Some(json!({})),
    )
    .await;
    r.error(422);
    let r = call(
        &router,
        Method::POST,
        "/__sim/people",
        Auth::None,
        Some(json!({"relationships": {"pets": "1"}})),
    )
    .await;
    r.error(400);
    let r = call(
        &router,
        Method::POST,
        "/__sim/widgets",
        Auth::None,
        Some(json!({})),
    )
    .await;
    r.error(404);
    let r = call(
        &router,
        Method::POST,
        "/__sim/household_memberships",
        Auth::None,
        Some(json!({"relationships": {"person": other, "household": hid}})),
    )
    .await;
    r.error(422);
}

#[tokio::test]
async fn mutations_are_deterministic_with_a_manual_clock() {
    async fn run() -> Vec<Value> {
        let (sim, clock) = sim(74, 40);
        let p = sim.ids(ResourceKind::Person, 3, 1)[0];
        sim.update(
            ResourceKind::Person,
            p,
            &json!({"attributes": {"status": "inactive"}}),
        )
        .unwrap();
        clock.advance(Duration::seconds(3));
        sim.create(
            ResourceKind::Campus,
            &json!({"attributes": {"name": "Harbor"}}),
        )
        .unwrap();
        sim.delete(ResourceKind::Person, sim.ids(ResourceKind::Person, 7, 1)[0])
            .unwrap();
        sim.dump(None)
    }
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(
        a.iter()
            .any(|r| r["type"] == "Campus" && r["attributes"]["name"] == "Harbor")
    );
}

#[tokio::test]
async fn paging_stays_consistent_after_many_deletions() {
    let (sim, _) = sim(75, 200);
    let router = sim.router();
    let victims: Vec<u64> = sim
        .ids(ResourceKind::Person, 0, 200)
        .into_iter()
        .step_by(3)
        .collect();
    for v in &victims {
        sim.delete(ResourceKind::Person, *v).unwrap();
    }
    for per_page in [1, 7, 25, 100] {
        let all = walk(&router, &format!("/people/v2/people?per_page={per_page}")).await;
        assert_eq!(all.len(), 200 - victims.len());
        let got: Vec<u64> = all.iter().map(id_num).collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert!(got.iter().all(|id| !victims.contains(id)));
    }
    let memberships = walk(&router, "/people/v2/households?per_page=100").await;
    let total: u64 = memberships
        .iter()
        .map(|h| h["attributes"]["member_count"].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, 200 - victims.len());
}

#[tokio::test]
async fn relationships_move_and_memberships_track_households() {
    let (sim, clock) = sim(76, 40);
    let router = sim.router();
    let people = sim.ids(ResourceKind::Person, 0, 40);
    let (a, b) = (people[0], people[39]);
    let email = get_ok(&router, &format!("/people/v2/people/{a}/emails")).await["data"][0].clone();
    let eid = id_num(&email);

    // Move an email to another person.
    clock.advance(Duration::seconds(1));
    let r = call(
        &router,
        Method::PATCH,
        &format!("/__sim/emails/{eid}"),
        Auth::None,
        Some(
            json!({"relationships": {"person": {"data": {"type": "Person", "id": b.to_string()}}}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(rel_id(&r.json()["data"], "person"), Some(b.to_string()));
    let of_a = ids(
        get_ok(&router, &format!("/people/v2/people/{a}/emails")).await["data"]
            .as_array()
            .unwrap(),
    );
    let of_b = ids(
        get_ok(&router, &format!("/people/v2/people/{b}/emails")).await["data"]
            .as_array()
            .unwrap(),
    );
    assert!(!of_a.contains(&eid.to_string()));
    assert!(of_b.contains(&eid.to_string()));
    // Memberships cannot be moved.
    let mid = sim.ids(ResourceKind::HouseholdMembership, 0, 1)[0];
    let r = call(
        &router,
        Method::PATCH,
        &format!("/__sim/household_memberships/{mid}"),
        Auth::None,
        Some(json!({"relationships": {"household": "50000002"}})),
    )
    .await;
    r.error(400);

    // Adding b to a's household: member count, people and b's households follow.
    let hid = get_ok(&router, &format!("/people/v2/people/{a}/households")).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = get_ok(&router, &format!("/people/v2/households/{hid}")).await["data"].clone();
    let r = call(
        &router,
        Method::POST,
        "/__sim/household_memberships",
        Auth::None,
        Some(json!({"attributes": {"household_role": "other_adult"}, "relationships": {"person": b, "household": hid}})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let membership = r.json()["data"].clone();
    assert_eq!(membership["attributes"]["household_role"], "other_adult");
    assert_eq!(
        membership["links"]["self"],
        format!(
            "{BASE}/people/v2/households/{hid}/household_memberships/{}",
            membership["id"].as_str().unwrap()
        )
    );
    let after = get_ok(&router, &format!("/people/v2/households/{hid}")).await["data"].clone();
    let count = |h: &Value| h["attributes"]["member_count"].as_u64().unwrap();
    assert_eq!(count(&after), count(&before) + 1);
    assert!(rel_ids(&after, "people").contains(&b.to_string()));
    assert!(ts(&after, "updated_at") > ts(&before, "updated_at"));
    let households = get_ok(&router, &format!("/people/v2/people/{b}/households")).await;
    assert_eq!(households["meta"]["total_count"], 2);

    // Deleting the household removes its memberships but not its people.
    let r = call(
        &router,
        Method::DELETE,
        &format!("/__sim/households/{hid}"),
        Auth::None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let households = get_ok(&router, &format!("/people/v2/people/{b}/households")).await;
    assert_eq!(households["meta"]["total_count"], 1);
    assert!(
        !sim.dump(Some(ResourceKind::HouseholdMembership))
            .iter()
            .any(|m| rel_id(m, "household").as_deref() == Some(hid.as_str()))
    );
    assert!(sim.get(ResourceKind::Person, a).is_some());

    // Info and stats endpoints.
    let info = call(&router, Method::GET, "/__sim/info", Auth::None, None)
        .await
        .json();
    assert_eq!(info["live"]["Person"], 40);
    assert_eq!(info["mutations"], 3);
    let r = call(&router, Method::DELETE, "/__sim/stats", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let stats = call(&router, Method::GET, "/__sim/stats", Auth::None, None)
        .await
        .json();
    assert_eq!(stats["total"], 0);
    assert_eq!(stats["mutations"], 3);
}
