//! Clerk mutations: the events they emit, in order, their cascades, `updated_at`, the random
//! mix and the control API.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use tributary_sim::clerk::{
    ClerkConfig, ClerkEvent, ClerkKind, MembershipPatch, NewMembership, NewOrganization, NewUser,
    OrganizationPatch, UserPatch,
};

use crate::clerk_common::{config, id, sim, sim_with};

fn types(events: &[ClerkEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[test]
fn clerk_user_mutations_emit_events_and_bump_updated_at() {
    let (sim, clock) = sim(1, 30);
    let user = sim
        .create_user(NewUser {
            first_name: Some("Zoë".into()),
            last_name: Some("Łukasz-Björk".into()),
            email_address: vec!["zoe@example.com".into()],
            ..NewUser::default()
        })
        .unwrap();
    let uid = id(&user).to_owned();
    assert_eq!(user["first_name"], "Zoë");
    assert_eq!(
        user["email_addresses"][0]["verification"]["status"],
        "verified"
    );
    assert_eq!(
        user["primary_email_address_id"],
        user["email_addresses"][0]["id"]
    );
    let created = user["created_at"].as_i64().unwrap();
    assert_eq!(created, user["updated_at"].as_i64().unwrap());
    assert_eq!(created, crate::common::clock_start().timestamp_millis());
    // The clock does not move: every mutation still gets a later timestamp.
    let renamed = sim
        .update_user(
            &uid,
            UserPatch {
                first_name: Some(Some("José".into())),
                last_name: Some(None),
                ..UserPatch::default()
            },
        )
        .unwrap();
    assert_eq!(
        (
            renamed["first_name"].as_str(),
            renamed["last_name"].as_str()
        ),
        (Some("José"), None)
    );
    assert_eq!(renamed["updated_at"].as_i64().unwrap(), created + 1);
    let added = sim
        .update_user(
            &uid,
            UserPatch {
                primary_email_address: Some("jose@example.org".into()),
                ..UserPatch::default()
            },
        )
        .unwrap();
    let emails = added["email_addresses"].as_array().unwrap();
    assert_eq!(emails.len(), 2);
    assert_eq!(added["primary_email_address_id"], emails[1]["id"]);
    clock.advance(chrono::Duration::seconds(5));
    let banned = sim
        .update_user(
            &uid,
            UserPatch {
                banned: Some(true),
                signed_in: true,
                ..UserPatch::default()
            },
        )
        .unwrap();
    assert_eq!(banned["banned"], true);
    assert_eq!(banned["updated_at"].as_i64().unwrap(), created + 5_000);
    assert_eq!(banned["last_sign_in_at"], banned["updated_at"]);
    // Taken identifiers and unknown ids are refused, and change nothing.
    let other = sim.users().into_iter().find(|u| id(u) != uid).unwrap();
    let taken = other["email_addresses"][0]["email_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = sim
        .update_user(
            &uid,
            UserPatch {
                add_email_address: Some(taken),
                ..UserPatch::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        (err.status, err.code.as_str()),
        (422, "form_identifier_exists")
    );
    assert_eq!(
        sim.update_user("user_nope", UserPatch::default())
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(sim.user(&uid).unwrap(), banned);
    let deleted = sim.delete_user(&uid).unwrap();
    assert_eq!(
        deleted,
        json!({"object": "user", "id": uid, "deleted": true})
    );
    assert!(sim.user(&uid).is_none());
    assert_eq!(sim.deleted_ids(ClerkKind::User), vec![uid.clone()]);
    let events = sim.events();
    assert_eq!(
        types(&events),
        [
            "user.created",
            "user.updated",
            "user.updated",
            "user.updated",
            "user.deleted"
        ]
    );
    assert_eq!(events[0].data, user);
    assert_eq!(events[3].data, banned);
    assert_eq!(events[4].data, deleted);
    let times: Vec<i64> = events.iter().map(|e| e.timestamp).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let svix_ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(svix_ids.len(), events.len());
    assert!(
        events
            .iter()
            .all(|e| e.id.starts_with("msg_") && e.instance_id == sim.instance_id())
    );
    assert_eq!(sim.stats().mutations, 5);
}

#[test]
fn clerk_deleting_a_user_cascades_without_membership_events() {
    let (sim, _) = sim(2, 200);
    let user = id(&sim.users()[0]).to_owned();
    // The user alone in one organization, and a member of another with others.
    let solo = sim
        .create_organization(NewOrganization {
            created_by: Some(user.clone()),
            ..NewOrganization::default()
        })
        .unwrap();
    let shared = sim
        .organizations()
        .into_iter()
        .find(|o| {
            o["members_count"].as_u64() > Some(1)
                && sim.memberships().iter().all(|m| {
                    m["organization"]["id"] != o["id"]
                        || m["public_user_data"]["user_id"] != user.as_str()
                })
        })
        .unwrap();
    sim.create_membership(NewMembership {
        organization_id: id(&shared).to_owned(),
        user_id: user.clone(),
        ..NewMembership::default()
    })
    .unwrap();
    let before: HashMap<String, Value> = sim
        .organizations()
        .into_iter()
        .map(|o| (id(&o).to_owned(), o))
        .collect();
    let orgs_of: Vec<String> = sim
        .memberships()
        .iter()
        .filter(|m| m["public_user_data"]["user_id"] == user.as_str())
        .map(|m| m["organization"]["id"].as_str().unwrap().to_owned())
        .collect();
    let emptied: HashSet<&str> = orgs_of
        .iter()
        .filter(|o| before[*o]["members_count"] == 1)
        .map(String::as_str)
        .collect();
    assert!(emptied.contains(id(&solo)));
    let user_memberships: Vec<String> = sim
        .memberships()
        .iter()
        .filter(|m| m["public_user_data"]["user_id"] == user.as_str())
        .map(|m| id(m).to_owned())
        .collect();
    let n = sim.events().len();

    sim.delete_user(&user).unwrap();
    let events = &sim.events()[n..];
    assert_eq!(events[0].event_type, "user.deleted");
    assert!(
        events[1..]
            .iter()
            .all(|e| e.event_type == "organization.deleted")
    );
    let deleted_orgs: HashSet<&str> = events[1..].iter().map(|e| e.object_id().unwrap()).collect();
    assert_eq!(deleted_orgs, emptied);
    for e in &events[1..] {
        assert_eq!(e.data["deleted"], true);
        assert!(e.data["slug"].is_string());
    }
    assert!(
        sim.memberships()
            .iter()
            .all(|m| m["public_user_data"]["user_id"] != user.as_str())
    );
    let mut gone = sim.deleted_ids(ClerkKind::OrganizationMembership);
    gone.sort();
    let mut want = user_memberships;
    want.sort();
    assert_eq!(gone, want);
    assert!(!orgs_of.is_empty());
    for org in orgs_of.iter().filter(|o| !emptied.contains(o.as_str())) {
        let now = sim.organization(org).unwrap();
        assert_eq!(
            now["members_count"].as_u64().unwrap() + 1,
            before[org]["members_count"].as_u64().unwrap()
        );
        assert_eq!(
            now["updated_at"], before[org]["updated_at"],
            "members_count is computed"
        );
    }
}

#[test]
fn clerk_organization_and_membership_mutations() {
    let (sim, _) = sim(3, 40);
    let users = sim.users();
    let (alice, bob) = (id(&users[0]).to_owned(), id(&users[1]).to_owned());
    let org = sim
        .create_organization(NewOrganization {
            name: Some("Café Zoë".into()),
            created_by: Some(alice.clone()),
            ..NewOrganization::default()
        })
        .unwrap();
    let oid = id(&org).to_owned();
    assert_eq!(org["slug"], "cafe-zoe");
    assert_eq!(org["members_count"], 1);
    let member = sim
        .create_membership(NewMembership {
            organization_id: "cafe-zoe".into(),
            user_id: bob.clone(),
            ..NewMembership::default()
        })
        .unwrap();
    assert_eq!(member["role"], "org:member");
    assert_eq!(member["organization"]["members_count"], 2);
    let again = sim.create_membership(NewMembership {
        organization_id: oid.clone(),
        user_id: bob.clone(),
        ..NewMembership::default()
    });
    assert_eq!(again.unwrap_err().code, "already_a_member_in_organization");
    let promoted = sim
        .update_membership(
            id(&member),
            MembershipPatch {
                role: Some("org:admin".into()),
                ..MembershipPatch::default()
            },
        )
        .unwrap();
    assert_eq!(
        (promoted["role"].as_str(), promoted["role_name"].as_str()),
        (Some("org:admin"), Some("Admin"))
    );
    assert!(promoted["updated_at"].as_i64() > member["updated_at"].as_i64());
    let renamed = sim
        .update_organization(
            &oid,
            OrganizationPatch {
                name: Some("Café Zoë & Co".into()),
                ..OrganizationPatch::default()
            },
        )
        .unwrap();
    assert_eq!(renamed["slug"], "cafe-zoe", "renaming keeps the slug");
    let taken = sim
        .organizations()
        .into_iter()
        .find(|o| id(o) != oid)
        .unwrap();
    let err = sim
        .update_organization(
            &oid,
            OrganizationPatch {
                slug: taken["slug"].as_str().map(str::to_owned),
                ..OrganizationPatch::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code, "form_identifier_exists");
    sim.invite(&oid, "new.person@example.com", "org:member")
        .unwrap();
    assert_eq!(
        sim.organization(&oid).unwrap()["members_count"],
        2,
        "an invitation changes nothing"
    );
    let removed = sim.delete_membership(id(&member)).unwrap();
    assert_eq!(removed["organization"]["members_count"], 1);
    let admin = sim
        .memberships()
        .into_iter()
        .find(|m| m["organization"]["id"] == oid.as_str())
        .unwrap();
    // The last member leaves: the organization goes too.
    sim.delete_membership(id(&admin)).unwrap();
    assert!(sim.organization(&oid).is_none());
    let events = sim.events();
    assert_eq!(
        types(&events),
        [
            "organization.created",
            "organizationMembership.created",
            "organizationMembership.created",
            "organizationMembership.updated",
            "organization.updated",
            "organizationInvitation.created",
            "organizationMembership.deleted",
            "organizationMembership.deleted",
            "organization.deleted",
        ]
    );
    assert_eq!(
        events[1].data["public_user_data"]["user_id"],
        alice.as_str()
    );
    assert_eq!(events[5].data["object"], "organization_invitation");
    assert_eq!(events[5].data["inviter_id"], alice.as_str());
    assert_eq!(
        events[8].data,
        json!({"object": "organization", "id": oid, "slug": "cafe-zoe", "deleted": true})
    );
    // Deleting an organization removes its memberships without membership events.
    let other = id(&sim.organizations()[0]).to_owned();
    let n = sim.events().len();
    sim.delete_organization(&other).unwrap();
    assert_eq!(types(&sim.events()[n..]), ["organization.deleted"]);
    assert!(
        sim.memberships()
            .iter()
            .all(|m| m["organization"]["id"] != other.as_str())
    );
}

#[test]
fn clerk_membership_changes_can_bump_the_organization() {
    let (sim, _) = sim_with(ClerkConfig {
        organization_updated_on_membership_change: true,
        ..config(4, 60)
    });
    let org = &sim.organizations()[0];
    let oid = id(org).to_owned();
    // A new user: a member of nothing yet.
    let outsider = id(&sim.create_user(NewUser::default()).unwrap()).to_owned();
    sim.create_membership(NewMembership {
        organization_id: oid.clone(),
        user_id: outsider.clone(),
        ..NewMembership::default()
    })
    .unwrap();
    sim.delete_user(&outsider).unwrap();
    let events = sim.events();
    assert_eq!(
        types(&events),
        [
            "user.created",
            "organizationMembership.created",
            "organization.updated",
            "user.deleted",
            "organization.updated"
        ]
    );
    assert_eq!(
        events[2].data["members_count"].as_u64().unwrap(),
        org["members_count"].as_u64().unwrap() + 1
    );
    assert_eq!(events[4].data["members_count"], org["members_count"]);
    assert_eq!(
        events[4].data["updated_at"].as_i64().unwrap(),
        events[4].timestamp
    );
}
