//! The generated Clerk instance: deterministic from the seed, and realistic.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tributary_sim::clerk::{ClerkConfig, ClerkKind, ClerkSim};

use crate::clerk_common::{config, id, sim};

/// 2024-01-01 and 2026-01-01 (UTC) in epoch milliseconds.
const START: i64 = 1_704_067_200_000;
const END: i64 = 1_767_225_600_000;

fn has_prefix(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| rest.len() == 27 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[test]
fn clerk_same_seed_same_instance_other_seed_other_instance() {
    let a = ClerkSim::new(config(7, 300));
    let b = ClerkSim::new(config(7, 300));
    let c = ClerkSim::new(config(8, 300));
    assert_eq!(a.users(), b.users());
    assert_eq!(a.organizations(), b.organizations());
    assert_eq!(a.memberships(), b.memberships());
    assert_eq!(a.instance_id(), b.instance_id());
    assert_ne!(a.users(), c.users());
    assert_ne!(a.instance_id(), c.instance_id());
    assert_eq!(a.count(ClerkKind::User), 300);
    assert_eq!(a.count(ClerkKind::Organization), 30);
    let more = ClerkSim::new(ClerkConfig {
        organizations: Some(55),
        ..config(7, 300)
    });
    assert_eq!(more.count(ClerkKind::Organization), 55);
    assert!(ClerkSim::new(config(1, 0)).users().is_empty());
}

#[test]
fn clerk_users_look_like_clerks() {
    let (sim, _) = sim(42, 1000);
    let users = sim.users();
    let mut emails = HashSet::new();
    let mut usernames = HashSet::new();
    let (mut non_ascii, mut cjk, mut no_username, mut banned, mut never_signed_in) =
        (0, 0, 0, 0, 0);
    let mut email_counts = HashMap::new();
    for u in &users {
        assert!(has_prefix(id(u), "user"), "{}", u["id"]);
        let (created, updated) = (
            u["created_at"].as_i64().unwrap(),
            u["updated_at"].as_i64().unwrap(),
        );
        assert!(
            (START..=END).contains(&created) && created <= updated && updated <= END,
            "{u}"
        );
        let addresses = u["email_addresses"].as_array().unwrap();
        *email_counts.entry(addresses.len()).or_insert(0) += 1;
        assert!((1..=3).contains(&addresses.len()));
        for e in addresses {
            assert!(has_prefix(id(e), "idn"));
            let address = e["email_address"].as_str().unwrap();
            assert!(address.contains("@") && address.is_ascii(), "{address}");
            assert!(
                emails.insert(address.to_lowercase()),
                "duplicate e-mail {address}"
            );
            let status = e["verification"]["status"].as_str().unwrap();
            assert!(["verified", "unverified"].contains(&status));
            assert!(e["verification"]["strategy"].is_string());
            assert!(e["created_at"].as_i64().unwrap() >= created);
        }
        let primary = u["primary_email_address_id"].as_str().unwrap();
        assert!(addresses.iter().any(|e| e["id"] == primary), "{u}");
        match u["username"].as_str() {
            Some(name) => assert!(usernames.insert(name.to_lowercase()), "duplicate {name}"),
            None => no_username += 1,
        }
        let name = format!(
            "{} {}",
            u["first_name"].as_str().unwrap_or(""),
            u["last_name"].as_str().unwrap_or("")
        );
        non_ascii += usize::from(!name.is_ascii());
        cjk += usize::from(name.chars().any(|c| {
            ('\u{3040}'..='\u{9FFF}').contains(&c) || ('\u{AC00}'..='\u{D7AF}').contains(&c)
        }));
        banned += usize::from(u["banned"] == true);
        never_signed_in += usize::from(u["last_sign_in_at"].is_null());
        assert!(u["public_metadata"].is_object() && u["private_metadata"].is_object());
        assert!(
            u["image_url"]
                .as_str()
                .unwrap()
                .starts_with("https://img.clerk.com/")
        );
    }
    assert!(non_ascii > 50, "{non_ascii} non-ASCII names");
    assert!(cjk > 5, "{cjk} CJK names");
    assert!((250..550).contains(&no_username), "{no_username}");
    assert!((5..60).contains(&banned), "{banned}");
    assert!((80..250).contains(&never_signed_in), "{never_signed_in}");
    assert!(email_counts[&1] > email_counts[&2] && email_counts[&2] > email_counts[&3]);
    for name in ["Zoë", "José", "Björk", "Łukasz"] {
        assert!(
            users.iter().any(|u| u["first_name"] == name),
            "no user named {name}"
        );
    }
}

#[test]
fn clerk_organizations_have_one_admin_and_distinct_members() {
    let (sim, _) = sim(42, 1000);
    let users: HashMap<String, Value> = sim
        .users()
        .into_iter()
        .map(|u| (id(&u).to_owned(), u))
        .collect();
    let orgs = sim.organizations();
    assert_eq!(orgs.len(), 100);
    let slugs: HashSet<&str> = orgs.iter().map(|o| o["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs.len(), orgs.len(), "slugs are unique");
    assert!(slugs.iter().all(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }));
    let memberships = sim.memberships();
    let mut by_org: HashMap<&str, Vec<&Value>> = HashMap::new();
    for m in &memberships {
        assert!(has_prefix(id(m), "orgmem"));
        by_org
            .entry(m["organization"]["id"].as_str().unwrap())
            .or_default()
            .push(m);
    }
    for o in &orgs {
        assert!(has_prefix(id(o), "org"));
        let members = &by_org[id(o)];
        assert!((1..=20).contains(&members.len()), "{}", members.len());
        assert_eq!(o["members_count"], members.len());
        let admins: Vec<_> = members
            .iter()
            .filter(|m| m["role"] == "org:admin")
            .collect();
        assert_eq!(admins.len(), 1);
        assert_eq!(admins[0]["public_user_data"]["user_id"], o["created_by"]);
        assert_eq!(o["missing_member_with_elevated_permissions"], false);
        let distinct: HashSet<&str> = members
            .iter()
            .map(|m| m["public_user_data"]["user_id"].as_str().unwrap())
            .collect();
        assert_eq!(distinct.len(), members.len());
        let org_created = o["created_at"].as_i64().unwrap();
        for m in members {
            let user = &users[m["public_user_data"]["user_id"].as_str().unwrap()];
            let created = m["created_at"].as_i64().unwrap();
            assert!(created >= org_created && created >= user["created_at"].as_i64().unwrap());
            assert!(m["updated_at"].as_i64().unwrap() >= created);
            assert_eq!(m["public_user_data"]["first_name"], user["first_name"]);
            assert_eq!(m["organization"]["id"], o["id"]);
            let role = m["role"].as_str().unwrap();
            assert_eq!(
                m["role_name"],
                if role == "org:admin" {
                    "Admin"
                } else {
                    "Member"
                }
            );
        }
    }
    assert!(orgs.iter().any(|o| !o["name"].as_str().unwrap().is_ascii()));
}
