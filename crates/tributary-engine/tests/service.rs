//! The service's queue: a run asked for while its connection is running
//! here waits (`queued`, when it has an idempotency key) and starts when
//! the run before it ends; a run left queued by a service that stopped is
//! started by the next one.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, harness_of, pco};
use tributary_core::{RunKind, RunState};
use tributary_engine::{EngineOptions, Resolver, RunRequest, Service, ServiceOptions};
use tributary_sim::{Faults, SimConfig};
use tributary_store::Connection;

/// Runs against the harness's simulator with its token, no budget.
struct ToSim {
    url: String,
}

impl Resolver for ToSim {
    fn request(&self, connection: &Connection, kind: RunKind) -> Result<RunRequest, String> {
        Ok(RunRequest {
            base_url: Some(self.url.clone()),
            credentials: Some(tributary_core::Credentials::bearer("sim-token")),
            rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
            ..RunRequest::new(&connection.name, kind, Arc::new(pco()))
        })
    }
}

/// An account whose every answer takes `latency`.
async fn slow_account(latency: Duration) -> Harness {
    let config = SimConfig {
        seed: 5,
        people: 60,
        faults: Faults {
            latency,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    harness_of(config, pco(), 10, EngineOptions::default()).await
}

fn service(h: &Harness) -> tributary_engine::ServiceHandle {
    Service::new(
        h.engine.clone(),
        Arc::new(ToSim {
            url: h.sim.base_url(),
        }),
        ServiceOptions {
            poll: Duration::from_millis(50),
            ..ServiceOptions::default()
        },
    )
    .start()
}

async fn wait_for_state(h: &Harness, run: i64, state: RunState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = h.store.run(run).await.unwrap().map(|r| r.state);
        if now == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} is {now:?}, not {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_asked_for_while_its_connection_runs_is_queued_then_runs() {
    // Every request takes 150 ms: the full sync outlasts the moment the
    // second run is asked for.
    let h = slow_account(Duration::from_millis(150)).await;
    let handle = service(&h);
    let resolver = ToSim {
        url: h.sim.base_url(),
    };
    let full = resolver.request(&h.connection, RunKind::Full).unwrap();
    let first = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.run(full).await })
    };
    // Once the full sync runs, a reconciliation is asked for by key.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.store.runs(None, 10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the full sync never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = RunRequest {
        idempotency_key: Some("operator reconcile 1".into()),
        ..resolver.request(&h.connection, RunKind::Reconcile).unwrap()
    };
    let waiting = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.run(second).await })
    };
    // It is a `queued` run while the full sync runs...
    let queued = loop {
        let runs = h.store.runs(None, 10).await.unwrap();
        if let Some(run) = runs
            .iter()
            .find(|r| r.idempotency_key.as_deref() == Some("operator reconcile 1"))
        {
            break run.clone();
        }
        assert!(Instant::now() < deadline, "never queued: {runs:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(queued.state, RunState::Queued, "{queued:?}");
    assert_eq!(queued.kind, RunKind::Reconcile);
    // ...then runs after it, as the same run.
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.run.state, RunState::Succeeded);
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.run.id, queued.id);
    assert_eq!(second.run.state, RunState::Succeeded, "{:?}", second.run);
    assert!(second.run.started_at >= first.run.finished_at.unwrap());
    h.assert_current(&[]).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_queued_by_a_stopped_service_is_started_by_the_next() {
    let h = slow_account(Duration::from_millis(5)).await;
    let queued = h
        .store
        .queue_run(
            h.connection.id,
            RunKind::Full,
            "schedule full 2026-12-07T03:00:00Z",
            tributary_core::Clock::now(&tributary_core::SystemClock),
        )
        .await
        .unwrap();
    assert_eq!(queued.state, RunState::Queued);
    let handle = service(&h);
    wait_for_state(&h, queued.id, RunState::Succeeded).await;
    h.assert_current(&[]).await;
    // A queued run cancelled before its turn never runs.
    let cancelled = h
        .store
        .queue_run(
            h.connection.id,
            RunKind::Delta,
            "schedule delta later",
            tributary_core::Clock::now(&tributary_core::SystemClock),
        )
        .await
        .unwrap();
    let run = h.engine.cancel(cancelled.id).await.unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    handle.shutdown().await;
    let handle = service(&h);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.store.run(cancelled.id).await.unwrap().unwrap().state,
        RunState::Cancelled
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_deliveries_past_their_retention_are_forgotten() {
    let h = slow_account(Duration::from_millis(5)).await;
    let now = tributary_core::Clock::now(&tributary_core::SystemClock);
    let delivery = |id: &str, days: i64| tributary_store::NewDelivery {
        connection_id: h.connection.id,
        delivery_id: id.into(),
        event: "people.v2.events.list.updated".into(),
        sent_at: None,
        received_at: now - chrono::Duration::days(days),
        payload: "{}".into(),
    };
    let stored = h
        .store
        .receive_deliveries(&[
            delivery("old", 8),
            delivery("recent", 1),
            delivery("old pending", 8),
        ])
        .await
        .unwrap();
    let ids: Vec<i64> = stored
        .iter()
        .map(|r| match r {
            tributary_store::Received::Stored(id) => *id,
            tributary_store::Received::Duplicate => unreachable!(),
        })
        .collect();
    let applied = tributary_store::Settled::Applied {
        run_id: 1,
        note: None,
    };
    h.store
        .settle_deliveries(&[(ids[0], 0, applied.clone()), (ids[1], 0, applied)], now)
        .await
        .unwrap();
    // Paused: the pending one stays pending while the service runs.
    h.store
        .set_webhooks_paused(h.connection.id, true, now)
        .await
        .unwrap();
    let handle = service(&h);
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<String> = h
            .store
            .deliveries(&tributary_store::DeliveryQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.delivery_id)
            .collect();
        if left.len() < 3 || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The week-old applied one is forgotten; the recent one and the one
    // still pending are kept.
    assert!(!left.contains(&"old".to_owned()), "{left:?}");
    assert!(left.contains(&"recent".to_owned()), "{left:?}");
    assert!(left.contains(&"old pending".to_owned()), "{left:?}");
    handle.shutdown().await;
}
