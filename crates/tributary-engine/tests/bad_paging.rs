//! An API whose paging never ends: the same page at ever higher offsets,
//! with no `meta.total_count` to notice it by. The engine must stop the
//! entity with a clear error after committing what it got, not page forever.

mod common;

use std::sync::Arc;

use serde_json::json;
use tributary_core::SystemClock;
use tributary_engine::{Engine, EngineOptions, NoProgress};
use tributary_store::EntityState;

#[tokio::test]
async fn the_same_page_served_forever_stops_the_entity() {
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let offset: u64 = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("offset=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let campus = |id: u32| {
            json!({"type": "Campus", "id": id.to_string(), "attributes": {
                "name": format!("Campus {id}"), "created_at": "2024-01-01T00:00:00Z",
                "updated_at": "2024-01-01T00:00:00Z"}})
        };
        axum::response::Response::builder()
            .header("content-type", "application/vnd.api+json")
            .body(axum::body::Body::from(
                json!({"data": [campus(1), campus(2)], "links": {"next": "more"},
                    "meta": {"next": {"offset": offset + 2}}})
                .to_string(),
            ))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let source = common::pco_source(&url, "t");
    let (store, connection) = common::store_with_connection(&dir, "loop", &url).await;
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions::default(),
    );
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        engine.full_sync_of(
            &connection,
            &source,
            Some(&["Campus".to_owned()]),
            Arc::new(NoProgress),
        ),
    )
    .await
    .expect("the sync ends by itself")
    .unwrap();
    let campus = &report.entities[0];
    assert_eq!(campus.state, EntityState::Failed);
    let error = campus.error.as_deref().unwrap();
    assert!(error.contains("same 2 records again"), "{error}");
    // What it got before noticing is committed, once.
    assert_eq!(campus.records, 2);
    server.abort();
}
