//! Run requests through the engine's one entry point: an idempotency key
//! names one run (a repeated request returns it and sends nothing), and a
//! running run can be cancelled — it stops, ends `cancelled` and is never
//! resumed; a finished one cannot be.

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{RunKind, RunState, SystemClock};
use tributary_engine::{Engine, EngineOptions, Error, NoProgress, RunRequest};
use tributary_sim::SimConfig;
use tributary_source::Credentials;

fn request(url: &str, key: Option<&str>) -> RunRequest {
    RunRequest {
        base_url: Some(url.to_owned()),
        credentials: Some(Credentials::bearer("sim-token")),
        rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
        idempotency_key: key.map(str::to_owned),
        ..RunRequest::new(
            "pco",
            RunKind::Full,
            Arc::new(tributary_manifest::builtin("pco").unwrap().unwrap()),
        )
    }
}

async fn engine(dir: &tempfile::TempDir) -> Engine {
    let store = tributary_store::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    Engine::new(store, Arc::new(SystemClock), EngineOptions::default())
}

#[tokio::test]
async fn a_repeated_request_with_one_key_returns_the_run_it_made() {
    let sim = tributary_sim::serve(
        SimConfig {
            people: 200,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let url = sim.base_url();
    let first = engine
        .run_request(request(&url, Some("slot-1")), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(first.run.state, RunState::Succeeded);
    let served = sim.simulator().stats().total;
    let again = engine
        .run_request(request(&url, Some("slot-1")), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(again.run.id, first.run.id);
    assert_eq!(again.run.state, RunState::Succeeded);
    assert!(again.entities.is_empty(), "nothing ran");
    assert_eq!(sim.simulator().stats().total, served, "nothing was sent");
    // Another key is another run.
    let other = engine
        .run_request(request(&url, Some("slot-2")), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_ne!(other.run.id, first.run.id);
    assert_eq!(engine.store().runs(None, 10).await.unwrap().len(), 2);
    // The run records what it cost.
    let stored = engine.store().run(first.run.id).await.unwrap().unwrap();
    assert!(stored.counts.requests > 0);
    assert_eq!(
        stored.counts.requests as u64,
        first.entities.iter().map(|e| e.requests).sum::<u64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_and_is_never_resumed() {
    let sim = tributary_sim::serve(
        SimConfig {
            people: 3_000,
            faults: tributary_sim::Faults {
                latency: Duration::from_millis(20),
                ..tributary_sim::Faults::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let url = sim.base_url();
    let running = {
        let (engine, url) = (engine.clone(), url.clone());
        tokio::spawn(async move {
            engine
                .run_request(request(&url, None), Arc::new(NoProgress))
                .await
        })
    };
    let run = loop {
        let runs = engine.store().runs(None, 1).await.unwrap();
        if let Some(run) = runs.into_iter().find(|r| r.counts.pages >= 2) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cancelled = engine.cancel(run.id).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    let report = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the cancelled run stops")
        .unwrap()
        .unwrap();
    assert_eq!(report.run.id, run.id);
    assert_eq!(report.run.state, RunState::Cancelled, "{:?}", report.run);
    assert_eq!(report.run.error.as_deref(), Some("cancelled by a person"));
    // Ended: it cannot be cancelled again, and the next request starts anew.
    assert!(matches!(
        engine.cancel(run.id).await.unwrap_err(),
        Error::NotCancellable(_, "cancelled")
    ));
    let next = engine
        .run_request(request(&url, None), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_ne!(next.run.id, run.id);
    assert!(!next.resumed);
    assert_eq!(next.run.state, RunState::Succeeded);
}
