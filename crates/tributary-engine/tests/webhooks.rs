//! Applying webhook deliveries (a run of kind `webhook`): fetch-on-notify
//! after the simulator changed, in any order, with duplicates — the store
//! ends equal to the source for every record noticed, each record read
//! once; a delete is never undone by a late update; a person merger ends
//! as the source; a delivery whose record cannot be read is retried, then
//! a dead letter, and applied once replayed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{harness, pco};
use serde_json::{Value, json};
use tributary_core::{Clock, ManualClock, RunKind, RunState};
use tributary_engine::{Engine, EngineOptions, MAX_DELIVERY_ATTEMPTS, NoProgress, RunReport};
use tributary_sim::ResourceKind;
use tributary_store::{DeliveryQuery, DeliveryState, NewDelivery, Received};

/// Keeps a PCO delivery of `event` about `data` in the inbox, as `serve`
/// would after verifying it; returns its inbox id (`None`: a duplicate).
async fn deliver(h: &common::Harness, id: &str, event: &str, data: Value) -> Option<i64> {
    let payload = json!({"id": id, "type": "EventDelivery", "attributes": {
        "name": event, "attempt": 1, "payload": json!({"data": data}).to_string()}});
    let received = h
        .store
        .receive_deliveries(&[NewDelivery {
            connection_id: h.connection.id,
            delivery_id: id.into(),
            event: event.into(),
            sent_at: None,
            received_at: tributary_core::SystemClock.now(),
            payload: payload.to_string(),
        }])
        .await
        .unwrap();
    match received[0] {
        Received::Stored(id) => Some(id),
        Received::Duplicate => None,
    }
}

fn about(kind: ResourceKind, id: u64) -> Value {
    json!({"type": kind.type_name(), "id": id.to_string()})
}

async fn apply(engine: &Engine, h: &common::Harness) -> RunReport {
    let lock = engine.lock(&h.connection.name).await.unwrap();
    engine
        .sync_locked(
            &lock,
            &h.connection,
            &h.source,
            RunKind::Webhook,
            None,
            Arc::new(NoProgress),
        )
        .await
        .unwrap()
}

async fn states(h: &common::Harness) -> Vec<(String, DeliveryState)> {
    h.store
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.delivery_id, d.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_any_order_end_as_the_source_each_record_read_once() {
    let h = harness(30, pco(), 25, Duration::from_secs(5)).await;
    h.sync(RunKind::Full).await;
    let sim = h.sim.simulator();
    let person = |n| h.id(ResourceKind::Person, n);

    // Changes at the source.
    let changed = person(0);
    sim.update(
        ResourceKind::Person,
        changed,
        &json!({"attributes": {"first_name": "Webhooked"}}),
    )
    .unwrap();
    let created = sim
        .create(
            ResourceKind::Person,
            &json!({"attributes": {"first_name": "New", "last_name": "Person"}}),
        )
        .unwrap();
    let created: u64 = created["id"].as_str().unwrap().parse().unwrap();
    let email = h.id(ResourceKind::Email, 0);
    sim.delete(ResourceKind::Email, email).unwrap();
    // Updated, then deleted: the `updated` delivery arrives last.
    let short_lived = person(1);
    sim.update(
        ResourceKind::Person,
        short_lived,
        &json!({"attributes": {"first_name": "Gone"}}),
    )
    .unwrap();
    sim.delete(ResourceKind::Person, short_lived).unwrap();
    let (keep, merged) = (person(2), person(3));
    sim.merge(keep, merged).unwrap();

    let updated = "people.v2.events.person.updated";
    let mut inbox = vec![
        deliver(&h, "d1", updated, about(ResourceKind::Person, changed)).await,
        // The same record twice more (a burst): read once.
        deliver(&h, "d2", updated, about(ResourceKind::Person, changed)).await,
        deliver(
            &h,
            "d3",
            "people.v2.events.person.created",
            about(ResourceKind::Person, created),
        )
        .await,
        deliver(
            &h,
            "d4",
            "people.v2.events.email.destroyed",
            about(ResourceKind::Email, email),
        )
        .await,
        deliver(
            &h,
            "d5",
            "people.v2.events.person.destroyed",
            about(ResourceKind::Person, short_lived),
        )
        .await,
        deliver(&h, "d6", updated, about(ResourceKind::Person, short_lived)).await,
        deliver(
            &h,
            "d7",
            "people.v2.events.person_merger.created",
            json!({"type": "PersonMerger", "id": "m", "attributes": {
                "person_to_keep_id": keep.to_string(), "person_to_remove_id": merged.to_string()}}),
        )
        .await,
        deliver(
            &h,
            "d8",
            "people.v2.events.list.created",
            json!({"type": "List", "id": "9"}),
        )
        .await,
        deliver(&h, "d9", updated, json!({"type": "Person"})).await,
    ];
    // A sender's retry of d1 is not stored again.
    inbox.push(deliver(&h, "d1", updated, about(ResourceKind::Person, changed)).await);
    assert_eq!(inbox.iter().filter(|d| d.is_some()).count(), 9);

    let children_of_merged: Vec<(String, String)> = h
        .stored()
        .await
        .into_iter()
        .filter(|(_, raw)| {
            raw.pointer("/relationships/person/data/id")
                .and_then(Value::as_str)
                == Some(merged.to_string().as_str())
        })
        .map(|(key, _)| key)
        .collect();
    assert!(
        !children_of_merged.is_empty(),
        "the merged person had records"
    );
    let report = apply(&h.engine, &h).await;
    assert_eq!(report.run.kind, RunKind::Webhook);
    // One read per record noticed: changed, created, email, short-lived,
    // and the merger's two people.
    assert_eq!(report.run.counts.requests, 6, "{:?}", report.run);
    let stored = h.stored().await;
    let source = h.source();
    for (kind, id) in [
        (ResourceKind::Person, changed),
        (ResourceKind::Person, created),
        (ResourceKind::Person, keep),
    ] {
        let key = (kind.type_name().to_owned(), id.to_string());
        assert_eq!(stored.get(&key), source.get(&key), "{key:?}");
    }
    assert_eq!(
        stored[&("Person".to_owned(), changed.to_string())]["attributes"]["first_name"],
        "Webhooked"
    );
    for gone in [
        ("Email", email),
        ("Person", short_lived),
        ("Person", merged),
    ] {
        assert!(
            !stored.contains_key(&(gone.0.to_owned(), gone.1.to_string())),
            "{gone:?} is still stored"
        );
    }
    // A merger deletes the merged person without its cascade: what was
    // theirs moved to the kept person at the source, and nothing of it is
    // lost here (their own events or the next delta move it over).
    for key in &children_of_merged {
        assert!(stored.contains_key(key), "{key:?} was lost with the merger");
    }
    // Every delivery settled: applied (the unmapped one with a note), the
    // unreadable one dead; the applied ones name the run.
    let all = h.store.deliveries(&DeliveryQuery::default()).await.unwrap();
    for d in &all {
        let expected = match d.delivery_id.as_str() {
            "d9" => DeliveryState::Dead,
            _ => DeliveryState::Applied,
        };
        assert_eq!(d.state, expected, "{d:?}");
        if expected == DeliveryState::Applied {
            assert_eq!(d.run_id, Some(report.run.id));
        }
    }
    let unmapped = all.iter().find(|d| d.delivery_id == "d8").unwrap();
    assert!(
        unmapped.error.as_deref().unwrap().contains("not mapped"),
        "{unmapped:?}"
    );
    let unreadable = all.iter().find(|d| d.delivery_id == "d9").unwrap();
    assert!(
        unreadable.error.as_deref().unwrap().contains("no `id`"),
        "{unreadable:?}"
    );
    assert_eq!(
        report.run.state,
        RunState::Failed,
        "a dead letter fails the run"
    );
    assert!(
        report
            .run
            .error
            .as_deref()
            .unwrap()
            .contains("1 are dead letters")
    );

    // Per entity, what the run did.
    let checkpoints = h.store.checkpoints(report.run.id).await.unwrap();
    let of = |entity: &str| {
        checkpoints
            .iter()
            .find(|c| c.entity == entity)
            .map(|c| c.counts)
            .unwrap_or_default()
    };
    assert!(of("Email").deleted >= 1, "{checkpoints:?}");
    assert_eq!(of("Person").created, 1, "{checkpoints:?}");
    assert_eq!(
        (of("Person").updated, of("Person").unchanged),
        (1, 1),
        "{checkpoints:?}"
    );
    assert!(of("Person").deleted >= 2, "{checkpoints:?}");

    // The change feed names the webhook run.
    let feed = h
        .store
        .changes(Some(h.connection.id), 0, 10_000)
        .await
        .unwrap();
    assert!(feed.iter().any(|c| c.run_id == Some(report.run.id)));

    // A late `updated` of the deleted person, later still: it stays deleted.
    deliver(&h, "d10", updated, about(ResourceKind::Person, short_lived)).await;
    let late = apply(&h.engine, &h).await;
    assert_eq!(late.run.state, RunState::Succeeded);
    assert!(
        !h.stored()
            .await
            .contains_key(&("Person".to_owned(), short_lived.to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_is_retried_then_dead_then_replayed() {
    let h = harness(10, pco(), 25, Duration::from_secs(5)).await;
    h.sync(RunKind::Full).await;
    let clock = Arc::new(ManualClock::new(tributary_core::SystemClock.now()));
    // One attempt per request: the API's outage fails the read at once.
    let engine = Engine::new(
        h.store.clone(),
        clock.clone(),
        EngineOptions {
            max_attempts: 1,
            ..EngineOptions::default()
        },
    );
    let sim = h.sim.simulator();
    let person = h.id(ResourceKind::Person, 0);
    sim.update(
        ResourceKind::Person,
        person,
        &json!({"attributes": {"first_name": "Later"}}),
    )
    .unwrap();
    deliver(
        &h,
        "x1",
        "people.v2.events.person.updated",
        about(ResourceKind::Person, person),
    )
    .await;
    sim.set_outage(Some(0));

    let first = apply(&engine, &h).await;
    assert_eq!(first.run.state, RunState::Failed);
    let d = &h.store.deliveries(&DeliveryQuery::default()).await.unwrap()[0];
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1));
    assert!(d.error.as_deref().unwrap().contains("503"), "{d:?}");
    // Not due again until its backoff has passed.
    assert!(
        h.store
            .due_deliveries(h.connection.id, clock.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Retried for a day (the senders' horizon) and at least 8 times.
    for _ in 1..MAX_DELIVERY_ATTEMPTS {
        clock.advance(chrono::Duration::hours(4));
        apply(&engine, &h).await;
    }
    assert_eq!(states(&h).await, [("x1".to_owned(), DeliveryState::Dead)]);
    let dead = &h.store.deliveries(&DeliveryQuery::default()).await.unwrap()[0];
    assert!(
        dead.error.as_deref().unwrap().contains("after 8 attempts"),
        "{dead:?}"
    );

    // The API is back; an operator replays the dead letters.
    sim.set_outage(None);
    assert_eq!(h.store.replay_deliveries(&[], None).await.unwrap(), 1);
    let replayed = apply(&engine, &h).await;
    assert_eq!(
        replayed.run.state,
        RunState::Succeeded,
        "{:?}",
        replayed.run
    );
    assert_eq!(
        states(&h).await,
        [("x1".to_owned(), DeliveryState::Applied)]
    );
    assert_eq!(
        h.stored().await[&("Person".to_owned(), person.to_string())]["attributes"]["first_name"],
        "Later"
    );
}

/// One step of a sender and a source: a change to one of three people (its
/// delivery joins the sender's queue), the sender sending one queued
/// delivery (any of them: out of order), or a webhook run.
#[derive(Debug, Clone)]
enum Step {
    Rename(usize),
    Delete(usize),
    Send(usize),
    Apply,
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        prop_oneof![
            4 => (0..3usize).prop_map(Step::Rename),
            1 => (0..3usize).prop_map(Step::Delete),
            4 => (0..8usize).prop_map(Step::Send),
            2 => Just(Step::Apply),
        ],
        1..24,
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Changes and deletions, their deliveries sent in any order, applied
    /// in runs at any moment: once every delivery is in and applied, each
    /// person is as the source has it — a deleted one never comes back.
    #[test]
    fn deliveries_in_any_order_converge_and_deletions_stay(steps in steps()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let h = harness(6, pco(), 25, Duration::from_secs(5)).await;
            h.sync(RunKind::Full).await;
            let sim = h.sim.simulator();
            let people: Vec<u64> = (0..3).map(|n| h.id(ResourceKind::Person, n)).collect();
            let mut queue: Vec<(String, u64)> = Vec::new();
            let mut sent = 0;
            let mut send = async |h: &common::Harness, event: String, id: u64| {
                sent += 1;
                deliver(h, &format!("p{sent}"), &event, about(ResourceKind::Person, id)).await;
            };
            for (n, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Rename(i) => {
                        let renamed = sim.update(
                            ResourceKind::Person,
                            people[i],
                            &json!({"attributes": {"first_name": format!("Step {n}")}}),
                        );
                        if renamed.is_ok() {
                            queue.push(("people.v2.events.person.updated".into(), people[i]));
                        }
                    }
                    Step::Delete(i) => {
                        if sim.delete(ResourceKind::Person, people[i]).is_ok() {
                            queue.push(("people.v2.events.person.destroyed".into(), people[i]));
                        }
                    }
                    Step::Send(j) if !queue.is_empty() => {
                        let (event, id) = queue.remove(j % queue.len());
                        send(&h, event, id).await;
                    }
                    Step::Send(_) => {}
                    Step::Apply => {
                        apply(&h.engine, &h).await;
                    }
                }
            }
            for (event, id) in std::mem::take(&mut queue) {
                send(&h, event, id).await;
            }
            apply(&h.engine, &h).await;
            let stored = h.stored().await;
            let source = h.source();
            for id in &people {
                let key = ("Person".to_owned(), id.to_string());
                assert_eq!(stored.get(&key), source.get(&key), "person {id}");
            }
            assert!(states(&h).await.iter().all(|(_, s)| *s == DeliveryState::Applied));
        });
    }
}
