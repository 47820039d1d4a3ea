//! Durable schedules driven by a `ManualClock`: slots fire when due, a
//! slot missed while no process ran fires once, and two processes on one
//! database never fire the same slot.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tributary_core::{ManualClock, RunKind, Timestamp};
use tributary_engine::schedule::{Due, Scheduler, new_schedule};
use tributary_store::{NewConnection, Store};

fn at(s: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

async fn store_with_schedule(path: &str, start: Timestamp) -> (Arc<dyn Store>, i64) {
    let store = tributary_store::open(path).await.unwrap();
    let connection = store
        .ensure_connection(
            NewConnection {
                name: "pco",
                adapter: "pco",
                base_url: "http://127.0.0.1:1",
            },
            start,
        )
        .await
        .unwrap();
    let schedule = new_schedule(
        connection.id,
        Some(Duration::from_secs(15 * 60)),
        Some("0 3 * * *"),
        start,
    )
    .unwrap();
    store.set_schedule(&schedule).await.unwrap();
    (store, connection.id)
}

fn kinds(fired: &[Due]) -> Vec<(RunKind, Timestamp)> {
    fired.iter().map(|d| (d.kind, d.slot)).collect()
}

#[tokio::test]
async fn slots_fire_when_due_and_a_missed_slot_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    let start = at("2026-12-07T01:00:00Z");
    let (store, connection) =
        store_with_schedule(dir.path().join("t.db").to_str().unwrap(), start).await;
    let clock = ManualClock::new(start);
    let scheduler = Scheduler::new(store.clone(), Arc::new(clock.clone()));

    // A new schedule's first delta is due at once; then every 15 minutes.
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(kinds(&fired), [(RunKind::Delta, start)]);
    assert_eq!(fired[0].connection_id, connection);
    assert_eq!(fired[0].key, "schedule delta 2026-12-07T01:00:00Z");
    assert!(scheduler.tick().await.unwrap().is_empty(), "fired once");
    clock.advance(TimeDelta::minutes(14));
    assert!(scheduler.tick().await.unwrap().is_empty(), "not due yet");
    clock.advance(TimeDelta::minutes(1));
    assert_eq!(
        kinds(&scheduler.tick().await.unwrap()),
        [(RunKind::Delta, at("2026-12-07T01:15:00Z"))]
    );

    // The process is down for three hours: twelve delta slots and the
    // 03:00 reconciliation go by. Each kind fires once.
    clock.set(at("2026-12-07T04:10:00Z"));
    assert_eq!(
        kinds(&scheduler.tick().await.unwrap()),
        [
            (RunKind::Delta, at("2026-12-07T01:30:00Z")),
            (RunKind::Reconcile, at("2026-12-07T03:00:00Z")),
        ]
    );
    assert!(scheduler.tick().await.unwrap().is_empty());
    // ... and the slots go on from now, not from the missed ones.
    let schedule = &store.schedules().await.unwrap()[0];
    assert_eq!(schedule.delta_next_at, Some(at("2026-12-07T04:15:00Z")));
    assert_eq!(schedule.reconcile_next_at, Some(at("2026-12-08T03:00:00Z")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_never_fire_one_slot_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db").display().to_string();
    let start = at("2026-12-07T01:00:00Z");
    let (first_store, _) = store_with_schedule(&path, start).await;
    // A second process: its own store handle on the same file.
    let second_store = tributary_store::open(&path).await.unwrap();
    let clock = ManualClock::new(start);
    let first = Scheduler::new(first_store, Arc::new(clock.clone()));
    let second = Scheduler::new(second_store, Arc::new(clock.clone()));
    let mut fired = Vec::new();
    for _ in 0..40 {
        let (a, b) = tokio::join!(first.tick(), second.tick());
        fired.extend(a.unwrap());
        fired.extend(b.unwrap());
        clock.advance(TimeDelta::minutes(5));
    }
    // 40 × 5 minutes: deltas at 01:00, 01:15, ... 04:15 (14 slots) and the
    // 03:00 reconciliation — each fired by exactly one of them.
    let mut slots: Vec<(&str, Timestamp)> =
        fired.iter().map(|d| (d.kind.as_str(), d.slot)).collect();
    slots.sort();
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!(slots, unique, "a slot fired twice");
    assert_eq!(slots.iter().filter(|(k, _)| *k == "delta").count(), 14);
    assert_eq!(slots.iter().filter(|(k, _)| *k == "reconcile").count(), 1);
}
