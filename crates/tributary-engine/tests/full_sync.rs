//! The engine against the real simulator over loopback: a full sync equals
//! the source record by record, a second one changes nothing, a bad record
//! is quarantined while the rest of its page lands, and changes at the
//! source are picked up by the next full sync.

mod common;

use common::{source_dump, stored};

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tributary_core::{ChangeKind, RunState, SystemClock};
use tributary_engine::{Engine, EngineOptions, NoProgress};
use tributary_sim::{SimConfig, SimHandle};
use tributary_source::Source;
use tributary_store::{Connection, EntityState, Store};

struct Harness {
    sim: SimHandle,
    store: Arc<dyn Store>,
    engine: Engine,
    source: Source,
    connection: Connection,
    _dir: tempfile::TempDir,
}

async fn harness(people: usize) -> Harness {
    let config = SimConfig {
        seed: 7,
        people,
        ..SimConfig::default()
    };
    let token = config.token.clone();
    let sim = tributary_sim::serve(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = common::pco_source(&sim.base_url(), &token);
    let (store, connection) = common::store_with_connection(&dir, "pco", &sim.base_url()).await;
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions {
            parent_batch: 16,
            ..EngineOptions::default()
        },
    );
    Harness {
        sim,
        store,
        engine,
        source,
        connection,
        _dir: dir,
    }
}

fn assert_same(
    store: &BTreeMap<(String, String), Value>,
    source: &BTreeMap<(String, String), Value>,
) {
    let missing: Vec<_> = source
        .keys()
        .filter(|k| !store.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = store
        .keys()
        .filter(|k| !source.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (key, raw) in source {
        assert_eq!(&store[key], raw, "record {key:?} differs");
    }
}

#[tokio::test]
async fn full_sync_equals_the_source_and_repeats_as_a_no_op() {
    let h = harness(300).await;
    let report = h
        .engine
        .full_sync(&h.connection, &h.source, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.run.state, RunState::Succeeded, "{report:?}");
    assert!(report.entities.iter().all(|e| e.state == EntityState::Done));
    let source = source_dump(&h.sim);
    let types: std::collections::BTreeSet<&str> = source.keys().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        [
            "Address",
            "Campus",
            "Email",
            "Event",
            "Group",
            "GroupType",
            "Household",
            "HouseholdMembership",
            "Membership",
            "Person",
            "PhoneNumber"
        ]
    );
    assert_same(&stored(&h.store).await, &source);
    assert_eq!(report.run.counts.created as usize, source.len());

    // edges: every email points at its person, every membership at household and person
    let email = source.keys().find(|(t, _)| t == "Email").unwrap();
    let edges = h
        .store
        .edges_from(h.connection.id, "Email", &email.1)
        .await
        .unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].to_entity, "Person");
    assert_eq!(
        edges[0].to_external_id,
        source[email]["relationships"]["person"]["data"]["id"]
            .as_str()
            .unwrap()
    );
    let membership = source
        .keys()
        .find(|(t, _)| t == "HouseholdMembership")
        .unwrap();
    let rels: Vec<String> = h
        .store
        .edges_from(h.connection.id, "HouseholdMembership", &membership.1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.rel)
        .collect();
    assert_eq!(rels, ["household", "person"]);

    let changes_before = h.store.changes(None, 0, 100_000).await.unwrap().len();
    assert_eq!(changes_before, source.len());
    let again = h
        .engine
        .full_sync(&h.connection, &h.source, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(again.run.state, RunState::Succeeded);
    assert_ne!(again.run.id, report.run.id);
    assert_eq!(again.run.counts.created + again.run.counts.updated, 0);
    assert_eq!(again.run.counts.unchanged as usize, source.len());
    assert_eq!(
        h.store.changes(None, 0, 100_000).await.unwrap().len(),
        changes_before,
        "no changes in the feed"
    );
}

#[tokio::test]
async fn bad_record_is_quarantined_and_the_rest_lands() {
    let h = harness(120).await;
    let sim = h.sim.simulator();
    let victim = sim.dump(Some(tributary_sim::ResourceKind::Person))[5]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.update(
        tributary_sim::ResourceKind::Person,
        victim.parse().unwrap(),
        &json!({"attributes": {"birthdate": "not-a-date"}}),
    )
    .unwrap();
    let report = h
        .engine
        .full_sync(&h.connection, &h.source, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.run.state, RunState::Succeeded);
    assert_eq!(report.run.counts.quarantined, 1);
    let q = h.store.quarantined(None, 10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].external_id, victim);
    assert_eq!(
        q[0].error,
        "field `birthdate` (from `birthdate`): expected a date YYYY-MM-DD, got \"not-a-date\""
    );
    let mut source = source_dump(&h.sim);
    source.remove(&("Person".to_owned(), victim.clone()));
    assert_same(&stored(&h.store).await, &source);

    // fixed at the source: the next sync applies it and clears the quarantine
    sim.update(
        tributary_sim::ResourceKind::Person,
        victim.parse().unwrap(),
        &json!({"attributes": {"birthdate": "1990-01-01"}}),
    )
    .unwrap();
    let report = h
        .engine
        .full_sync(&h.connection, &h.source, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.run.counts.created, 1);
    assert!(h.store.quarantined(None, 10).await.unwrap().is_empty());
    assert_same(&stored(&h.store).await, &source_dump(&h.sim));
}

#[tokio::test]
async fn changes_at_the_source_are_applied_by_the_next_full_sync() {
    let h = harness(90).await;
    h.engine
        .full_sync(&h.connection, &h.source, Arc::new(NoProgress))
        .await
        .unwrap();
    let sim = h.sim.simulator();
    let person = sim.dump(Some(tributary_sim::ResourceKind::Person))[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.update(
        tributary_sim::ResourceKind::Person,
        person.parse().unwrap(),
        &json!({"attributes": {"first_name": "Zelda"}}),
    )
    .unwrap();
    let after = h
        .store
        .changes(None, 0, 100_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    let report = h
        .engine
        .full_sync(&h.connection, &h.source, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.run.counts.updated, 1);
    let changes = h.store.changes(None, after, 100).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].kind, changes[0].external_id.as_str()),
        (ChangeKind::Updated, person.as_str())
    );
    let record = h
        .store
        .record(h.connection.id, "Person", &person)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.canonical["first_name"], "Zelda");
    assert_same(&stored(&h.store).await, &source_dump(&h.sim));
}

/// Records which entities started and finished, in order.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<String>>);

impl tributary_engine::Progress for Events {
    fn entity_started(&self, entity: &str, _records: i64, _total: Option<i64>) {
        self.0.lock().unwrap().push(format!("start {entity}"));
    }

    fn entity_finished(&self, entity: &str, _state: EntityState, _error: Option<&str>) {
        self.0.lock().unwrap().push(format!("done {entity}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_start_only_after_their_own_dependencies_finish() {
    let h = harness(300).await;
    let events = Arc::new(Events::default());
    let report = h
        .engine
        .full_sync(&h.connection, &h.source, events.clone())
        .await
        .unwrap();
    assert_eq!(report.run.state, RunState::Succeeded, "{report:?}");
    let events = events.0.lock().unwrap().clone();
    let at = |event: String| {
        events
            .iter()
            .position(|e| *e == event)
            .unwrap_or_else(|| panic!("no `{event}` in {events:?}"))
    };
    // Every dependency of the PCO manifest, hard and soft.
    for (entity, dependencies) in [
        ("Person", &["Campus"][..]),
        ("Household", &["Person"]),
        ("Email", &["Person"]),
        ("PhoneNumber", &["Person"]),
        ("Address", &["Person"]),
        ("HouseholdMembership", &["Household", "Person"]),
        ("Group", &["GroupType"]),
        ("Membership", &["Group", "Person"]),
        ("Event", &["Group"]),
    ] {
        for dependency in dependencies {
            assert!(
                at(format!("done {dependency}")) < at(format!("start {entity}")),
                "{entity} started before {dependency} finished: {events:?}"
            );
        }
    }
    // The report lists entities in wave order, whatever order they ended in.
    let order: Vec<&str> = report.entities.iter().map(|e| e.entity.as_str()).collect();
    let waves: Vec<String> = h
        .source
        .manifest()
        .graph
        .waves()
        .iter()
        .flatten()
        .cloned()
        .collect();
    assert_eq!(order, waves);
}
