//! Groups mutations through the in-process and control APIs, with their cascades and the
//! groups' `memberships_count`.

use axum::http::Method;
use serde_json::{Value, json};
use tributary_sim::ResourceKind;

use crate::common::*;

fn group_of(v: &Value) -> String {
    rel_id(v, "group").unwrap()
}

fn id_of(v: &Value) -> u64 {
    v["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn mutations_cascade_and_keep_memberships_count() {
    let (sim, _) = sim(94, 200);
    let router = sim.router();
    let t = id_of(&dump_of(&sim, "GroupType")[0]);
    let people = dump_of(&sim, "Person");
    let (p1, p2) = (id_of(&people[0]), id_of(&people[1]));

    // Create through the control API.
    let r = call(
        &router,
        Method::POST,
        "/__sim/groups",
        Auth::None,
        Some(json!({"attributes": {"name": "Test Group"}, "relationships": {"group_type": t.to_string()}})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let group = r.json()["data"].clone();
    let g = id_of(&group);
    assert_eq!(group["attributes"]["memberships_count"], 0);
    assert_eq!(group["attributes"]["created_at"], "2026-01-02T03:04:05Z");
    assert_eq!(
        group["links"]["self"],
        format!("{BASE}/groups/v2/groups/{g}")
    );
    assert_eq!(rel_id(&group, "group_type"), Some(t.to_string()));

    let join = |p: u64| json!({"relationships": {"group": g, "person": p}});
    let m1 = sim.create(ResourceKind::Membership, &join(p1)).unwrap();
    assert_eq!(m1["attributes"]["role"], "member");
    assert!(
        m1["attributes"]["joined_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-02T03:04:05")
    );
    let r = call(
        &router,
        Method::POST,
        "/__sim/group_memberships",
        Auth::None,
        Some(join(p2)),
    )
    .await;
    assert_eq!(r.status, 201);
    let m2 = r.json()["data"].clone();
    assert_eq!(
        m2["links"]["self"],
        format!("{BASE}/groups/v2/groups/{g}/memberships/{}", id_of(&m2))
    );
    assert_eq!(
        sim.get(ResourceKind::Group, g).unwrap()["attributes"]["memberships_count"],
        2
    );
    // A person joins a group once; references must exist.
    assert_eq!(
        sim.create(ResourceKind::Membership, &join(p1))
            .unwrap_err()
            .status,
        422
    );
    let missing = json!({"relationships": {"group": 1, "person": p1}});
    assert_eq!(
        sim.create(ResourceKind::Membership, &missing)
            .unwrap_err()
            .status,
        422
    );
    let no_group = json!({"relationships": {"person": p1}});
    assert_eq!(
        sim.create(ResourceKind::Membership, &no_group)
            .unwrap_err()
            .status,
        422
    );
    let event = sim
        .create(
            ResourceKind::Event,
            &json!({"attributes": {"name": "Kickoff"}, "relationships": {"group": g}}),
        )
        .unwrap();
    assert_eq!(rel_id(&event, "group"), Some(g.to_string()));
    let doc = get_ok(&router, &format!("/groups/v2/groups/{g}/events")).await;
    assert_eq!(doc["data"][0]["id"], event["id"]);

    // Updates keep ids and store attributes as given (no updated_at in Groups).
    let m1 = sim
        .update(
            ResourceKind::Membership,
            id_of(&m1),
            &json!({"attributes": {"role": "leader"}}),
        )
        .unwrap();
    assert_eq!(m1["attributes"]["role"], "leader");
    assert!(m1["attributes"].get("updated_at").is_none());
    let moved = sim.update(
        ResourceKind::Membership,
        id_of(&m1),
        &json!({"relationships": {"group": "1"}}),
    );
    assert_eq!(moved.unwrap_err().status, 400);

    // Deleting a membership moves the count; deleting a person takes their memberships.
    let r = call(
        &router,
        Method::DELETE,
        &format!("/__sim/group_memberships/{}", id_of(&m2)),
        Auth::None,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        sim.get(ResourceKind::Group, g).unwrap()["attributes"]["memberships_count"],
        1
    );
    let generated = dump_of(&sim, "Membership")
        .into_iter()
        .find(|m| {
            let p = rel_id(m, "person").unwrap();
            group_of(m) != g.to_string() && p != p1.to_string() && p != p2.to_string()
        })
        .unwrap();
    let (other_group, member) = (
        group_of(&generated).parse::<u64>().unwrap(),
        rel_id(&generated, "person")
            .unwrap()
            .parse::<u64>()
            .unwrap(),
    );
    let before =
        sim.get(ResourceKind::Group, other_group).unwrap()["attributes"]["memberships_count"]
            .as_u64()
            .unwrap();
    sim.delete(ResourceKind::Person, member).unwrap();
    assert!(
        dump_of(&sim, "Membership")
            .iter()
            .all(|m| rel_id(m, "person") != Some(member.to_string()))
    );
    assert_eq!(
        sim.get(ResourceKind::Group, other_group).unwrap()["attributes"]["memberships_count"],
        before - 1
    );
    sim.delete(ResourceKind::Person, p1).unwrap();
    assert_eq!(
        sim.get(ResourceKind::Group, g).unwrap()["attributes"]["memberships_count"],
        0
    );

    // Deleting a group deletes its memberships and events.
    let victim = id_of(&dump_of(&sim, "Group")[0]);
    let r = call(
        &router,
        Method::DELETE,
        &format!("/__sim/groups/{victim}"),
        Auth::None,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let victim_s = victim.to_string();
    assert!(
        dump_of(&sim, "Membership")
            .iter()
            .all(|m| group_of(m) != victim_s)
    );
    assert!(
        dump_of(&sim, "Event")
            .iter()
            .all(|e| group_of(e) != victim_s)
    );
    for uri in [
        format!("/groups/v2/groups/{victim}"),
        format!("/groups/v2/groups/{victim}/memberships"),
        format!("/groups/v2/groups/{victim}/events"),
    ] {
        call(&router, Method::GET, &uri, TOKEN, None)
            .await
            .error(404);
    }
    let total: usize = dump_of(&sim, "Group")
        .iter()
        .map(|g| g["attributes"]["memberships_count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(total, sim.count(ResourceKind::Membership));
    // A group type can be created, and deleting one leaves its groups' references dangling.
    let ty = sim
        .create(
            ResourceKind::GroupType,
            &json!({"attributes": {"name": "Retreats"}}),
        )
        .unwrap();
    assert_eq!(
        ty["attributes"]["position"],
        dump_of(&sim, "GroupType").len()
    );
    sim.delete(ResourceKind::GroupType, t).unwrap();
    assert_eq!(
        sim.get(ResourceKind::Group, g).unwrap()["relationships"]["group_type"]["data"]["id"],
        t.to_string()
    );
}

#[tokio::test]
async fn a_person_merger_moves_children_households_and_groups_to_the_kept_person() {
    let (sim, _) = sim(95, 200);
    let members = dump_of(&sim, "Membership");
    let merged_membership = &members[0];
    let merged: u64 = rel_id(merged_membership, "person")
        .unwrap()
        .parse()
        .unwrap();
    let group = group_of(merged_membership);
    // Someone who is in none of the merged person's groups.
    let merged_groups: Vec<String> = members
        .iter()
        .filter(|m| rel_id(m, "person").as_deref() == Some(&merged.to_string()))
        .map(group_of)
        .collect();
    let keep = dump_of(&sim, "Person")
        .iter()
        .map(id_of)
        .find(|p| {
            *p != merged
                && !members.iter().any(|m| {
                    rel_id(m, "person").as_deref() == Some(&p.to_string())
                        && merged_groups.contains(&group_of(m))
                })
        })
        .unwrap();
    let children_of = |person: u64, kind: &str| {
        dump_of(&sim, kind)
            .iter()
            .filter(|v| rel_id(v, "person").as_deref() == Some(&person.to_string()))
            .count()
    };
    let (emails, kept_emails) = (children_of(merged, "Email"), children_of(keep, "Email"));
    sim.merge(keep, merged).unwrap();
    assert!(sim.get(ResourceKind::Person, merged).is_none());
    assert_eq!(children_of(merged, "Email"), 0);
    assert_eq!(children_of(keep, "Email"), emails + kept_emails);
    let moved = dump_of(&sim, "Membership")
        .into_iter()
        .find(|m| rel_id(m, "person").as_deref() == Some(&keep.to_string()) && group_of(m) == group)
        .expect("the kept person joined the merged person's group");
    assert_eq!(
        moved["attributes"]["role"],
        merged_membership["attributes"]["role"]
    );
    assert_eq!(
        moved["attributes"]["joined_at"],
        merged_membership["attributes"]["joined_at"]
    );
    assert_eq!(children_of(merged, "Membership"), 0);
}
