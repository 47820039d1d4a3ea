//! Clerk through the engine, against the Clerk simulator.
//!
//! Payload-applied webhooks: deliveries carry the whole object and are
//! applied without a request, the newest winning — the simulator's own
//! events delivered in any order, with duplicates. The store ends equal to
//! the source; a deletion is never undone by a late update and deletes the
//! memberships; a membership of an unknown user reads the user; an older
//! version never overwrites a newer one; a bad object is quarantined; an
//! update names the fields it changed.
//!
//! Newest-first deltas: users changed since the last sync are found by
//! walking the list newest first, in a page or two instead of all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tributary_core::{ChangeKind, Clock, RunKind, SystemClock};
use tributary_engine::{Engine, EngineOptions, NoProgress, RunReport};
use tributary_manifest::Manifest;
use tributary_sim::clerk::{
    ClerkConfig, ClerkEvent, ClerkHandle, ClerkKind, NewMembership, NewUser, UserPatch, serve_clerk,
};
use tributary_source::{Credentials, Source, SourceOptions};
use tributary_store::{
    Connection, DeliveryQuery, DeliveryState, NewConnection, Received, RecordQuery, Store,
};

struct Clerk {
    sim: ClerkHandle,
    store: Arc<dyn Store>,
    engine: Engine,
    source: Source,
    connection: Connection,
    /// Events already delivered (or skipped) by the test.
    seen: usize,
    _dir: tempfile::TempDir,
}

fn clerk() -> Manifest {
    tributary_manifest::builtin("clerk").unwrap().unwrap()
}

impl Clerk {
    /// A Clerk instance of `users` users, fully synced into a fresh store.
    async fn new(users: usize) -> Self {
        let config = ClerkConfig {
            seed: 5,
            users,
            organizations: Some(users / 5),
            // Every membership change is an organization event too, so the
            // organizations' `members_count` is current without a listing.
            organization_updated_on_membership_change: true,
            ..ClerkConfig::default()
        };
        let key = config.secret_key.clone();
        let sim = serve_clerk(
            tributary_sim::clerk::ClerkSim::new(config),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let source = Source::new(
            Arc::new(clerk()),
            Credentials::bearer(key),
            SourceOptions {
                base_url: Some(sim.base_url()),
                rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
                ..SourceOptions::default()
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = tributary_store::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let connection = store
            .ensure_connection(
                NewConnection {
                    name: "clerk",
                    adapter: "clerk",
                    base_url: &sim.base_url(),
                },
                SystemClock.now(),
            )
            .await
            .unwrap();
        let engine = Engine::new(
            store.clone(),
            Arc::new(SystemClock),
            EngineOptions::default(),
        );
        let clerk = Clerk {
            seen: sim.simulator().events().len(),
            sim,
            store,
            engine,
            source,
            connection,
            _dir: dir,
        };
        let report = clerk.run(RunKind::Full).await;
        assert!(report.run.error.is_none(), "{:?}", report.run.error);
        clerk
    }

    async fn run(&self, kind: RunKind) -> RunReport {
        let lock = self.engine.lock(&self.connection.name).await.unwrap();
        self.engine
            .sync_locked(
                &lock,
                &self.connection,
                &self.source,
                kind,
                None,
                Arc::new(NoProgress),
            )
            .await
            .unwrap()
    }

    /// The events the simulator emitted since the last call.
    fn new_events(&mut self) -> Vec<ClerkEvent> {
        let events = self.sim.simulator().events();
        let new = events[self.seen..].to_vec();
        self.seen = events.len();
        new
    }

    /// Keeps `events` in the inbox as `serve` would after verifying them.
    async fn deliver(&self, events: &[ClerkEvent]) {
        let deliveries: Vec<_> = events
            .iter()
            .map(|e| tributary_store::NewDelivery {
                connection_id: self.connection.id,
                delivery_id: e.id.clone(),
                event: e.event_type.clone(),
                sent_at: None,
                received_at: SystemClock.now(),
                payload: e.envelope().to_string(),
            })
            .collect();
        let received = self.store.receive_deliveries(&deliveries).await.unwrap();
        assert_eq!(received.len(), events.len());
    }

    /// The live records of `entity` as (id → canonical).
    async fn stored(&self, entity: &str) -> BTreeMap<String, Value> {
        let records = self
            .store
            .records(&RecordQuery {
                connection_id: Some(self.connection.id),
                entity: Some(entity.into()),
                limit: 100_000,
                ..RecordQuery::default()
            })
            .await
            .unwrap();
        records
            .into_iter()
            .map(|r| (r.external_id, r.canonical))
            .collect()
    }

    /// The simulator's objects of `entity` as the adapter maps them.
    fn source_side(&self, entity: &str) -> BTreeMap<String, Value> {
        let sim = self.sim.simulator();
        let objects = match entity {
            "User" => sim.users(),
            "Organization" => sim.organizations(),
            _ => sim.memberships(),
        };
        let definition = self.source.manifest().entities[entity].clone();
        objects
            .iter()
            .map(|o| {
                let record = self.source.transform_object(&definition, o).unwrap();
                (record.external_id, record.canonical)
            })
            .collect()
    }

    async fn assert_equal_to_the_source(&self) {
        for entity in ["User", "Organization", "OrganizationMembership"] {
            let stored = self.stored(entity).await;
            let source = self.source_side(entity);
            assert_eq!(
                stored.keys().collect::<Vec<_>>(),
                source.keys().collect::<Vec<_>>(),
                "{entity}: the same records"
            );
            for (id, canonical) in &source {
                assert_eq!(&stored[id], canonical, "{entity} {id}");
            }
        }
    }

    /// Whether every delivery is applied (some with a note).
    async fn all_applied(&self) -> bool {
        let deliveries = self
            .store
            .deliveries(&DeliveryQuery::default())
            .await
            .unwrap();
        let pending: Vec<_> = deliveries
            .iter()
            .filter(|d| d.state != DeliveryState::Applied)
            .collect();
        assert!(pending.is_empty(), "{pending:?}");
        !deliveries.is_empty()
    }
}

/// A deterministic shuffle: each event swapped with one up to `reach`
/// places later, by `seed`.
fn shuffle(events: &mut [ClerkEvent], seed: u64, reach: usize) {
    let mut x = seed | 1;
    for i in 0..events.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (i + (x as usize % (reach + 1))).min(events.len() - 1);
        events.swap(i, j);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_any_order_with_duplicates_end_as_the_source() {
    for seed in [1u64, 2, 3] {
        let mut c = Clerk::new(60).await;
        let sim = c.sim.simulator();
        sim.mutate(120, seed);
        let mut events = c.new_events();
        assert!(events.len() >= 120, "{} events", events.len());
        let duplicates: Vec<ClerkEvent> = events.iter().step_by(5).cloned().collect();
        events.extend(duplicates);
        shuffle(&mut events, seed, 12);
        // In three bursts, each applied by its own run.
        for burst in events.chunks(events.len() / 3 + 1) {
            c.deliver(burst).await;
            let report = c.run(RunKind::Webhook).await;
            assert!(report.run.error.is_none(), "{:?}", report.run.error);
        }
        c.assert_equal_to_the_source().await;
        assert!(c.all_applied().await);
        // Every user deleted at the source is a tombstone here (stored
        // before, or buried when its deletion was heard), and no live
        // membership points at one.
        let deleted = sim.deleted_ids(ClerkKind::User);
        assert!(!deleted.is_empty());
        let stamps = c
            .store
            .stamps(c.connection.id, "User", &deleted)
            .await
            .unwrap();
        for user in &deleted {
            assert!(
                stamps.get(user).is_some_and(|s| s.deleted_at.is_some()),
                "user {user} is a tombstone here"
            );
        }
        let memberships = c.stored("OrganizationMembership").await;
        assert!(
            !memberships
                .values()
                .any(|m| deleted.iter().any(|u| m["user_id"] == u.as_str())),
            "no membership of a deleted user"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_is_never_undone_by_a_late_update_and_takes_the_memberships() {
    let mut c = Clerk::new(30).await;
    let sim = c.sim.simulator();
    let member = sim.memberships()[0].clone();
    let user = member["public_user_data"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let memberships_of = |list: &BTreeMap<String, Value>| {
        list.values()
            .filter(|m| m["user_id"] == user.as_str())
            .count()
    };
    assert!(memberships_of(&c.stored("OrganizationMembership").await) >= 1);
    sim.update_user(
        &user,
        UserPatch {
            first_name: Some(Some("Zoë".into())),
            ..UserPatch::default()
        },
    )
    .unwrap();
    sim.delete_user(&user).unwrap();
    let events = c.new_events();
    let (deleted, others): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| e.event_type == "user.deleted");
    // The deletion first, in a run of its own; the update after it.
    c.deliver(&deleted).await;
    c.run(RunKind::Webhook).await;
    c.deliver(&others).await;
    c.run(RunKind::Webhook).await;
    assert!(!c.stored("User").await.contains_key(&user), "stays deleted");
    assert_eq!(memberships_of(&c.stored("OrganizationMembership").await), 0);
    assert!(c.all_applied().await);
    let deliveries = c.store.deliveries(&DeliveryQuery::default()).await.unwrap();
    let update = deliveries
        .iter()
        .find(|d| d.event == "user.updated")
        .unwrap();
    assert!(
        format!("{update:?}").contains("no newer"),
        "the late update says why it was not applied: {update:?}"
    );
    c.assert_equal_to_the_source().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_of_an_unknown_user_reads_the_user() {
    let mut c = Clerk::new(20).await;
    let sim = c.sim.simulator();
    let organization = sim.organizations()[0]["id"].as_str().unwrap().to_owned();
    let user = sim
        .create_user(NewUser {
            first_name: Some("Łukasz".into()),
            email_address: vec!["lukasz@example.com".into()],
            ..NewUser::default()
        })
        .unwrap();
    let user = user["id"].as_str().unwrap().to_owned();
    let membership = sim
        .create_membership(NewMembership {
            organization_id: organization.clone(),
            user_id: user.clone(),
            ..NewMembership::default()
        })
        .unwrap();
    let events = c.new_events();
    // Only the membership's event arrives (the user's was lost).
    let only: Vec<ClerkEvent> = events
        .into_iter()
        .filter(|e| e.event_type == "organizationMembership.created")
        .collect();
    assert_eq!(only.len(), 1);
    c.deliver(&only).await;
    let report = c.run(RunKind::Webhook).await;
    assert!(report.run.error.is_none(), "{:?}", report.run.error);
    assert_eq!(c.stored("User").await[&user]["first_name"], "Łukasz");
    assert!(
        c.stored("OrganizationMembership")
            .await
            .contains_key(membership["id"].as_str().unwrap())
    );
    assert_eq!(report.run.counts.requests, 1, "one read: the user");

    // A membership of a user deleted at the source before its event is
    // applied: the user's read is a 404 and the membership stays out.
    let gone = sim
        .create_user(NewUser {
            email_address: vec!["gone@example.com".into()],
            ..NewUser::default()
        })
        .unwrap();
    let gone = gone["id"].as_str().unwrap().to_owned();
    sim.create_membership(NewMembership {
        organization_id: organization,
        user_id: gone.clone(),
        ..NewMembership::default()
    })
    .unwrap();
    let events = c.new_events();
    sim.delete_user(&gone).unwrap();
    let only: Vec<ClerkEvent> = events
        .into_iter()
        .filter(|e| e.event_type == "organizationMembership.created")
        .collect();
    c.deliver(&only).await;
    c.run(RunKind::Webhook).await;
    assert!(!c.stored("User").await.contains_key(&gone));
    assert!(
        !c.stored("OrganizationMembership")
            .await
            .values()
            .any(|m| m["user_id"] == gone.as_str())
    );
    let deliveries = c.store.deliveries(&DeliveryQuery::default()).await.unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| format!("{d:?}").contains("does not exist at the source")),
        "{deliveries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_never_overwrites_a_newer_one_and_updates_name_their_fields() {
    let mut c = Clerk::new(10).await;
    let sim = c.sim.simulator();
    let user = sim.users()[0]["id"].as_str().unwrap().to_owned();
    for name in ["Anna", "Björk"] {
        sim.update_user(
            &user,
            UserPatch {
                first_name: Some(Some(name.into())),
                ..UserPatch::default()
            },
        )
        .unwrap();
    }
    let events = c.new_events();
    assert_eq!(events.len(), 2);
    // The newer one first, the older one in a later run.
    c.deliver(&events[1..]).await;
    c.run(RunKind::Webhook).await;
    c.deliver(&events[..1]).await;
    c.run(RunKind::Webhook).await;
    assert_eq!(c.stored("User").await[&user]["first_name"], "Björk");
    let feed = c
        .store
        .changes(Some(c.connection.id), 0, 100_000)
        .await
        .unwrap();
    let updates: Vec<_> = feed
        .iter()
        .filter(|ch| ch.external_id == user && ch.kind == ChangeKind::Updated)
        .collect();
    assert_eq!(updates.len(), 1, "the older version changed nothing");
    assert_eq!(
        updates[0].fields.as_deref(),
        Some(&["first_name".to_owned(), "updated_at".to_owned()][..])
    );
    let deliveries = c.store.deliveries(&DeliveryQuery::default()).await.unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| format!("{d:?}").contains("is newer than this one")),
        "{deliveries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_object_is_quarantined_and_an_unmapped_event_kept() {
    let c = Clerk::new(10).await;
    let sim = c.sim.simulator();
    let mut user = sim.users()[1].clone();
    let id = user["id"].as_str().unwrap().to_owned();
    user["email_addresses"] = json!([]);
    user["updated_at"] = json!(user["updated_at"].as_i64().unwrap() + 1_000);
    let bad = json!({"data": user, "object": "event", "type": "user.updated",
        "timestamp": SystemClock.now().timestamp_millis()});
    let invitation = json!({"data": {"id": "orginv_1", "object": "organization_invitation"},
        "object": "event", "type": "organizationInvitation.created", "timestamp": 1});
    let received = c
        .store
        .receive_deliveries(&[
            tributary_store::NewDelivery {
                connection_id: c.connection.id,
                delivery_id: "msg_bad".into(),
                event: "user.updated".into(),
                sent_at: None,
                received_at: SystemClock.now(),
                payload: bad.to_string(),
            },
            tributary_store::NewDelivery {
                connection_id: c.connection.id,
                delivery_id: "msg_inv".into(),
                event: "organizationInvitation.created".into(),
                sent_at: None,
                received_at: SystemClock.now(),
                payload: invitation.to_string(),
            },
        ])
        .await
        .unwrap();
    assert!(received.iter().all(|r| matches!(r, Received::Stored(_))));
    let report = c.run(RunKind::Webhook).await;
    assert!(report.run.error.is_none(), "{:?}", report.run.error);
    let quarantined = c
        .store
        .quarantined(Some(c.connection.id), 10)
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].external_id, id);
    assert!(
        quarantined[0].error.contains("primary_email"),
        "{}",
        quarantined[0].error
    );
    assert!(
        c.stored("User").await.contains_key(&id),
        "the stored user stays"
    );
    assert!(c.all_applied().await);
    let deliveries = c.store.deliveries(&DeliveryQuery::default()).await.unwrap();
    let kept = deliveries
        .iter()
        .find(|d| d.delivery_id == "msg_inv")
        .unwrap();
    assert!(format!("{kept:?}").contains("not mapped"), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_walks_users_newest_first_and_stops_past_the_mark() {
    let mut c = Clerk::new(1_000).await;
    let sim = c.sim.simulator();
    let full_requests = c
        .store
        .runs(Some(c.connection.id), 10)
        .await
        .unwrap()
        .last()
        .unwrap()
        .counts
        .requests;
    // 1% of the users change.
    let users = sim.users();
    for (n, user) in users.iter().step_by(100).enumerate() {
        let id = user["id"].as_str().unwrap();
        sim.update_user(
            id,
            UserPatch {
                last_name: Some(Some(format!("Ńowak-{n}"))),
                ..UserPatch::default()
            },
        )
        .unwrap();
    }
    c.new_events();
    let report = c.run(RunKind::Delta).await;
    assert!(report.run.error.is_none(), "{:?}", report.run.error);
    assert!(!report.full_instead_of_delta);
    let users_entity = report.entities.iter().find(|e| e.entity == "User").unwrap();
    // 1,000 users are 2 pages of 500; the 10 changed ones are on the first.
    assert!(
        users_entity.requests <= 2,
        "users read in {} requests",
        users_entity.requests
    );
    let stored = c.stored("User").await;
    for user in users.iter().step_by(100) {
        let id = user["id"].as_str().unwrap();
        assert!(
            stored[id]["last_name"]
                .as_str()
                .unwrap()
                .starts_with("Ńowak-"),
            "{id}"
        );
    }
    c.assert_equal_to_the_source().await;
    eprintln!(
        "delta at 1% changed users: {} requests for users; the full sync took {full_requests} in all",
        users_entity.requests
    );

    // Nothing changed since: the walk reads one page and stops.
    let again = c.run(RunKind::Delta).await;
    let users_again = again.entities.iter().find(|e| e.entity == "User").unwrap();
    assert_eq!(users_again.requests, 1);
    assert_eq!(again.run.counts.updated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_update_of_a_deleted_organization_lets_no_membership_in() {
    let mut c = Clerk::new(20).await;
    let sim = c.sim.simulator();
    let organization = sim.organizations()[0]["id"].as_str().unwrap().to_owned();
    let user = sim
        .create_user(NewUser {
            email_address: vec!["late@example.com".into()],
            ..NewUser::default()
        })
        .unwrap();
    let user = user["id"].as_str().unwrap().to_owned();
    sim.create_membership(NewMembership {
        organization_id: organization.clone(),
        user_id: user.clone(),
        ..NewMembership::default()
    })
    .unwrap();
    sim.update_organization(
        &organization,
        tributary_sim::clerk::OrganizationPatch {
            name: Some("Zürich Ünited".into()),
            ..Default::default()
        },
    )
    .unwrap();
    sim.delete_organization(&organization).unwrap();
    let events = c.new_events();
    // The deletion first; then, in one burst, the user, the organization's
    // older update and the membership.
    let (deletion, rest): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| e.event_type == "organization.deleted");
    c.deliver(&deletion).await;
    c.run(RunKind::Webhook).await;
    c.deliver(&rest).await;
    let report = c.run(RunKind::Webhook).await;
    assert!(report.run.error.is_none(), "{:?}", report.run.error);
    assert!(!c.stored("Organization").await.contains_key(&organization));
    assert!(
        !c.stored("OrganizationMembership")
            .await
            .values()
            .any(|m| m["organization_id"] == organization.as_str()),
        "no membership of the deleted organization"
    );
    c.assert_equal_to_the_source().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_with_both_parents_unknown_reads_both() {
    let mut c = Clerk::new(20).await;
    let sim = c.sim.simulator();
    let user = sim
        .create_user(NewUser {
            first_name: Some("Ōta".into()),
            email_address: vec!["ota@example.com".into()],
            ..NewUser::default()
        })
        .unwrap();
    let user = user["id"].as_str().unwrap().to_owned();
    let organization = sim
        .create_organization(tributary_sim::clerk::NewOrganization {
            name: Some("Nordlicht".into()),
            created_by: Some(user.clone()),
            ..Default::default()
        })
        .unwrap();
    let organization = organization["id"].as_str().unwrap().to_owned();
    let only: Vec<ClerkEvent> = c
        .new_events()
        .into_iter()
        .filter(|e| e.event_type == "organizationMembership.created")
        .collect();
    assert_eq!(only.len(), 1);
    c.deliver(&only).await;
    let report = c.run(RunKind::Webhook).await;
    assert!(report.run.error.is_none(), "{:?}", report.run.error);
    assert_eq!(
        report.run.counts.requests, 2,
        "the user and the organization"
    );
    assert!(c.stored("User").await.contains_key(&user));
    assert_eq!(
        c.stored("Organization").await[&organization]["name"],
        "Nordlicht"
    );
    assert!(
        c.stored("OrganizationMembership")
            .await
            .values()
            .any(|m| m["organization_id"] == organization.as_str()
                && m["user_id"] == user.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_heard_before_the_creation_keeps_the_record_out() {
    let mut c = Clerk::new(10).await;
    let sim = c.sim.simulator();
    let user = sim
        .create_user(NewUser {
            email_address: vec!["brief@example.com".into()],
            ..NewUser::default()
        })
        .unwrap();
    let user = user["id"].as_str().unwrap().to_owned();
    sim.delete_user(&user).unwrap();
    let events = c.new_events();
    let (created, deleted): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| e.event_type == "user.created");
    // The deletion in one run, the creation (a sender's late retry) in
    // the next.
    c.deliver(&deleted).await;
    c.run(RunKind::Webhook).await;
    let stamps = c
        .store
        .stamps(c.connection.id, "User", std::slice::from_ref(&user))
        .await
        .unwrap();
    assert!(stamps[&user].deleted_at.is_some(), "a tombstone");
    c.deliver(&created).await;
    c.run(RunKind::Webhook).await;
    assert!(!c.stored("User").await.contains_key(&user));
    assert!(c.all_applied().await);
    c.assert_equal_to_the_source().await;
}
