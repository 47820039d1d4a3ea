//! One entity's list, once the API has said how long it is, is fetched a
//! window of pages at once (their offsets are known) and still committed in
//! order: every record lands once and the checkpoint ends at the end.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tributary_core::SystemClock;
use tributary_engine::{Engine, EngineOptions, NoProgress};
use tributary_store::EntityState;

const TOTAL: u64 = 1_000;
const PAGE: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_list_is_fetched_a_window_at_a_time_and_commits_in_order() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (in_flight.clone(), most.clone());
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            let offset: u64 = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("offset=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(at_once, Ordering::SeqCst);
            // An API takes a moment to answer.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            let data: Vec<_> = (offset..(offset + PAGE).min(TOTAL))
                .map(|id| {
                    json!({"type": "Campus", "id": (id + 1).to_string(), "attributes": {
                        "name": format!("Campus {id}"), "created_at": "2024-01-01T00:00:00Z",
                        "updated_at": "2024-01-01T00:00:00Z"}})
                })
                .collect();
            let mut doc = json!({"data": data, "meta": {"total_count": TOTAL}});
            if offset + PAGE < TOTAL {
                doc["links"] = json!({"next": "more"});
                doc["meta"]["next"] = json!({"offset": offset + PAGE});
            }
            axum::response::Response::builder()
                .header("content-type", "application/vnd.api+json")
                .body(axum::body::Body::from(doc.to_string()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let source = common::pco_source(&url, "t");
    let (store, connection) = common::store_with_connection(&dir, "window", &url).await;
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions::default(),
    );
    let report = engine
        .full_sync_of(
            &connection,
            &source,
            Some(&["Campus".to_owned()]),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    let campus = &report.entities[0];
    assert_eq!(campus.state, EntityState::Done, "{campus:?}");
    assert_eq!(campus.records, TOTAL as i64);
    assert_eq!(campus.pages, (TOTAL / PAGE) as i64);
    assert_eq!(report.run.counts.created, TOTAL as i64, "every record once");
    let window = EngineOptions::default().list_window;
    let most = most.load(Ordering::SeqCst);
    assert!(
        (2..=window).contains(&most),
        "{most} requests at once (window {window})"
    );
    let checkpoint = store
        .checkpoints(report.run.id)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.entity == "Campus")
        .unwrap();
    assert_eq!(
        checkpoint.cursor.0["offset"], TOTAL,
        "{:?}",
        checkpoint.cursor
    );
    server.abort();
}
