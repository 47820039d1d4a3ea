//! The Groups API (`/groups/v2`): listings, nesting, filters and orders, mutations with their
//! cascades, the dump and the shared rate limit.

use std::collections::HashMap;

use axum::http::Method;
use serde_json::{Value, json};
use tributary_sim::{RateLimit, ResourceKind, SimConfig, Simulator};

use crate::common::*;

fn stripped(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter().map(without_links).collect()
}

fn group_of(v: &Value) -> String {
    rel_id(v, "group").unwrap()
}

#[tokio::test]
async fn groups_collections_page_and_match_the_dump() {
    let (sim, _) = sim(91, 400);
    let router = sim.router();
    let types = dump_of(&sim, "GroupType");
    let groups = dump_of(&sim, "Group");
    let events = dump_of(&sim, "Event");
    assert!((3..=6).contains(&types.len()), "{}", types.len());
    assert_eq!(groups.len(), 20, "about one group per 20 people");

    for (uri, want) in [
        ("/groups/v2/group_types?per_page=2", &types),
        ("/groups/v2/groups?per_page=7", &groups),
        ("/groups/v2/events?per_page=25", &events),
    ] {
        let got = walk(&router, uri).await;
        assert_eq!(&stripped(got.clone()), want, "{uri}");
        assert_unique(&ids(&got));
        // Self links point at the Groups API.
        let link = got[0]["links"]["self"].as_str().unwrap();
        assert!(link.starts_with(&format!("{BASE}/groups/v2/")), "{link}");
    }

    let doc = get_ok(&router, "/groups/v2/groups?per_page=5").await;
    assert_eq!(doc["meta"]["total_count"], 20);
    assert_eq!(doc["meta"]["next"]["offset"], 5);
    assert_eq!(
        doc["links"]["next"],
        format!("{BASE}/groups/v2/groups?per_page=5&offset=5")
    );
    assert_eq!(
        doc["meta"]["parent"],
        json!({"id": "1", "type": "Organization"})
    );
    assert_eq!(
        doc["meta"]["can_query_by"],
        json!(["archive_status", "name"])
    );
    // Default order is by id.
    let page = ids(doc["data"].as_array().unwrap());
    let mut sorted = page.clone();
    sorted.sort_by_key(|id| id.parse::<u64>().unwrap());
    assert_eq!(page, sorted);

    // Every group points at a group type; every type is named and positioned.
    for g in &groups {
        let t = rel_id(g, "group_type").unwrap();
        assert!(types.iter().any(|ty| ty["id"] == t.as_str()));
        assert!(g["attributes"]["created_at"].is_string());
        assert!(g["attributes"].get("updated_at").is_none());
    }
    for (i, t) in types.iter().enumerate() {
        assert_eq!(t["attributes"]["position"], i + 1);
        assert!(t["relationships"].as_object().unwrap().is_empty());
    }
    // Single resources, and the Groups organization.
    let gid = groups[3]["id"].as_str().unwrap();
    let one = get_ok(
        &router,
        &format!("/groups/v2/groups/{gid}?include=group_type"),
    )
    .await;
    assert_eq!(without_links(one["data"].clone()), groups[3]);
    assert_eq!(one["included"][0]["type"], "GroupType");
    let org = get_ok(&router, "/groups/v2").await;
    assert_eq!(org["data"]["type"], "Organization");
    assert_eq!(org["data"]["links"]["self"], format!("{BASE}/groups/v2"));
}

#[tokio::test]
async fn memberships_and_events_nest_under_their_group() {
    let (sim, _) = sim(92, 300);
    let router = sim.router();
    let people: Vec<String> = ids(&dump_of(&sim, "Person"));
    let memberships = dump_of(&sim, "Membership");
    let events = dump_of(&sim, "Event");
    let groups = dump_of(&sim, "Group");
    for g in &groups {
        let gid = g["id"].as_str().unwrap();
        let want: Vec<Value> = memberships
            .iter()
            .filter(|m| group_of(m) == gid)
            .cloned()
            .collect();
        assert!((3..=15).contains(&want.len()), "{gid}: {}", want.len());
        assert_eq!(g["attributes"]["memberships_count"], want.len());
        let mut members: Vec<String> = want.iter().map(|m| rel_id(m, "person").unwrap()).collect();
        assert!(members.iter().all(|p| people.contains(p)));
        members.sort();
        members.dedup();
        assert_eq!(members.len(), want.len(), "a person is in a group once");
        assert!(want.iter().any(|m| m["attributes"]["role"] == "leader"));

        let uri = format!("/groups/v2/groups/{gid}/memberships?per_page=4");
        let got = walk(&router, &uri).await;
        assert_eq!(stripped(got.clone()), want, "{uri}");
        for m in &got {
            let link = format!(
                "{BASE}/groups/v2/groups/{gid}/memberships/{}",
                m["id"].as_str().unwrap()
            );
            assert_eq!(m["links"]["self"], link);
            let one = get_ok(&router, &link).await;
            assert_eq!(one["data"], *m);
            assert_eq!(one["meta"]["parent"], json!({"id": gid, "type": "Group"}));
        }
        let doc = get_ok(&router, &format!("/groups/v2/groups/{gid}/events")).await;
        assert_eq!(doc["meta"]["parent"], json!({"id": gid, "type": "Group"}));
        let want: Vec<&Value> = events.iter().filter(|e| group_of(e) == gid).collect();
        assert!(want.len() <= 6);
        let got = stripped(doc["data"].as_array().unwrap().clone());
        assert_eq!(got.iter().collect::<Vec<_>>(), want);
    }
    // Memberships are listed only under their group; a membership of another group is a 404.
    let other = groups[1]["id"].as_str().unwrap();
    let foreign = memberships.iter().find(|m| group_of(m) != other).unwrap();
    for uri in [
        "/groups/v2/memberships".to_owned(),
        "/groups/v2/groups/1/memberships".to_owned(),
        "/groups/v2/groups/70000001/widgets".to_owned(),
        format!(
            "/groups/v2/groups/{other}/memberships/{}",
            foreign["id"].as_str().unwrap()
        ),
    ] {
        call(&router, Method::GET, &uri, TOKEN, None)
            .await
            .error(404);
    }
    // include=person side-loads the member.
    let gid = groups[0]["id"].as_str().unwrap();
    let doc = get_ok(
        &router,
        &format!("/groups/v2/groups/{gid}/memberships?include=person"),
    )
    .await;
    let included = doc["included"].as_array().unwrap();
    assert_eq!(included.len(), doc["data"].as_array().unwrap().len());
    assert!(included.iter().all(|p| p["type"] == "Person"));
    // Auth applies to Groups as to People.
    let r = call(&router, Method::GET, "/groups/v2/groups", Auth::None, None).await;
    r.error(401);
}

#[tokio::test]
async fn groups_filters_and_orders_are_pcos() {
    let (sim, _) = sim(93, 600);
    let router = sim.router();
    let groups = dump_of(&sim, "Group");
    let gid = groups[0]["id"].as_str().unwrap();
    // No updated_at filter or order anywhere in Groups, and nothing else PCO does not allow.
    for (uri, param) in [
        (
            "/groups/v2/groups?where[updated_at][gte]=2020-01-01T00:00:00Z",
            "where[updated_at][gte]",
        ),
        (
            "/groups/v2/groups?where[created_at][gte]=2020-01-01T00:00:00Z",
            "where[created_at][gte]",
        ),
        (
            "/groups/v2/events?where[updated_at][gte]=2020-01-01T00:00:00Z",
            "where[updated_at][gte]",
        ),
        ("/groups/v2/group_types?where[name]=Classes", "where[name]"),
        ("/groups/v2/groups?order=updated_at", "order"),
        ("/groups/v2/group_types?order=created_at", "order"),
        ("/groups/v2/events?order=-created_at", "order"),
        (
            "/groups/v2/groups?where[archive_status]=sometimes",
            "where[archive_status]",
        ),
        ("/groups/v2/groups?where[name][gt]=A", "where[name][gt]"),
        ("/groups/v2/groups?include=people", "include"),
        ("/groups/v2/groups?per_page=many", "per_page"),
    ] {
        let err = call(&router, Method::GET, uri, TOKEN, None)
            .await
            .error(400);
        assert_eq!(err["source"]["parameter"], param, "{uri}");
    }
    for q in [
        "where[updated_at][gte]=2020-01-01T00:00:00Z",
        "where[person_id]=1",
        "order=updated_at",
    ] {
        let uri = format!("/groups/v2/groups/{gid}/memberships?{q}");
        call(&router, Method::GET, &uri, TOKEN, None)
            .await
            .error(400);
    }

    // Groups by memberships_count, descending, ties by id.
    let got = walk(
        &router,
        "/groups/v2/groups?order=-memberships_count&per_page=100",
    )
    .await;
    let counts: Vec<u64> = got
        .iter()
        .map(|g| g["attributes"]["memberships_count"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    // Archive status.
    let archived = groups
        .iter()
        .filter(|g| !g["attributes"]["archived_at"].is_null())
        .count();
    let only = walk(
        &router,
        "/groups/v2/groups?where[archive_status]=only&per_page=100",
    )
    .await;
    assert_eq!(only.len(), archived);
    let not = walk(
        &router,
        "/groups/v2/groups?where[archive_status]=not_archived&per_page=100",
    )
    .await;
    assert_eq!(not.len(), groups.len() - archived);
    let name = groups[2]["attributes"]["name"].as_str().unwrap();
    let named = walk(
        &router,
        &format!("/groups/v2/groups?where[name]={}", enc(name)),
    )
    .await;
    assert!(!named.is_empty() && named.iter().all(|g| g["attributes"]["name"] == name));

    // Group types by position (descending) and by id.
    let types = walk(&router, "/groups/v2/group_types?order=-position").await;
    assert_eq!(types[0]["attributes"]["position"], types.len());
    let first = types[0]["id"].as_str().unwrap();
    let one = walk(
        &router,
        &format!("/groups/v2/group_types?where[id]={first}"),
    )
    .await;
    assert_eq!(ids(&one), [first]);

    // Events by start, within a window.
    let events = walk(
        &router,
        "/groups/v2/events?order=starts_at&where[starts_at][gte]=2023-01-01T00:00:00Z&per_page=100",
    )
    .await;
    assert!(!events.is_empty());
    let starts: Vec<_> = events.iter().map(|e| ts(e, "starts_at")).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    let floor: chrono::DateTime<chrono::Utc> = "2023-01-01T00:00:00Z".parse().unwrap();
    assert!(starts[0] >= floor);
    for e in &events {
        assert!(ts(e, "ends_at") > ts(e, "starts_at"));
    }

    // Memberships by role and by the member's last name.
    let leaders = walk(
        &router,
        &format!("/groups/v2/groups/{gid}/memberships?where[role]=leader"),
    )
    .await;
    assert!(!leaders.is_empty() && leaders.iter().all(|m| m["attributes"]["role"] == "leader"));
    let people: HashMap<String, Value> = dump_of(&sim, "Person")
        .into_iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p))
        .collect();
    let by_last = walk(
        &router,
        &format!("/groups/v2/groups/{gid}/memberships?order=last_name"),
    )
    .await;
    let last: Vec<String> = by_last
        .iter()
        .map(|m| {
            people[&rel_id(m, "person").unwrap()]["attributes"]["last_name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(last.windows(2).all(|w| w[0] <= w[1]), "{last:?}");
}

#[tokio::test]
async fn dump_and_info_include_groups_after_people() {
    let (sim, _) = sim(95, 120);
    let router = sim.router();
    let dump = sim.dump(None);
    let mut order: Vec<&str> = Vec::new();
    for line in &dump {
        let t = line["type"].as_str().unwrap();
        if order.last() != Some(&t) {
            order.push(t);
        }
    }
    assert_eq!(
        order,
        [
            "Campus",
            "Person",
            "Household",
            "HouseholdMembership",
            "Email",
            "PhoneNumber",
            "Address",
            "GroupType",
            "Group",
            "Membership",
            "Event"
        ]
    );
    let r = call(
        &router,
        Method::GET,
        "/__sim/dump?type=group_memberships",
        Auth::None,
        None,
    )
    .await;
    assert_eq!(r.lines(), dump_of(&sim, "Membership"));
    let info = call(&router, Method::GET, "/__sim/info", Auth::None, None)
        .await
        .json();
    for kind in [
        ResourceKind::GroupType,
        ResourceKind::Group,
        ResourceKind::Membership,
        ResourceKind::Event,
    ] {
        assert_eq!(info["live"][kind.type_name()], sim.count(kind), "{kind}");
        assert_eq!(
            info["generated"][kind.type_name()],
            sim.count(kind),
            "{kind}"
        );
    }
    assert_eq!(info["live"]["Group"], 6);

    // Same seed, same Groups data; another seed, other data.
    let again = Simulator::new(config(95, 120));
    let groups_of = |s: &Simulator| {
        [
            ResourceKind::GroupType,
            ResourceKind::Group,
            ResourceKind::Membership,
            ResourceKind::Event,
        ]
        .into_iter()
        .flat_map(|k| s.dump(Some(k)))
        .collect::<Vec<_>>()
    };
    assert_eq!(groups_of(&again), groups_of(&sim));
    assert_ne!(groups_of(&Simulator::new(config(96, 120))), groups_of(&sim));
}

#[tokio::test(start_paused = true)]
async fn people_and_groups_share_one_rate_budget() {
    let router = Simulator::new(SimConfig {
        rate_limit: Some(RateLimit::pco()),
        ..config(97, 40)
    })
    .router();
    for (i, uri) in [
        "/people/v2/people",
        "/groups/v2/groups",
        "/groups/v2/group_types",
        "/people/v2/campuses",
        "/groups/v2/events?order=nope",
    ]
    .into_iter()
    .enumerate()
    {
        let r = call(&router, Method::GET, uri, TOKEN, None).await;
        assert_eq!(rate(&r), (i as u32 + 1, 100, 20), "{uri}");
    }
}
