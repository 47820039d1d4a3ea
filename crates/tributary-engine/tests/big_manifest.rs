//! A manifest of 20,000 entities in one chain of hard dependencies whose
//! first entity fails for good: every other entity is skipped, each with
//! the entity it waited for, and the bookkeeping stays linear in the graph
//! (it was quadratic: about 0.75 s of CPU per skipped entity at this size,
//! hours in all; the timeout below would end such a run).

use std::fmt::Write as _;
use std::sync::Arc;

use tributary_core::{RunState, SystemClock};
use tributary_engine::{Engine, EngineOptions, NoProgress};
use tributary_source::{Credentials, Source, SourceOptions};
use tributary_store::{EntityState, NewConnection};

const ENTITIES: usize = 20_000;

fn chain_manifest() -> String {
    let mut text = String::from(
        "[adapter]\nname = \"chain\"\nbase_url = \"http://127.0.0.1:1\"\n\
         [auth]\nkinds = [\"bearer\"]\n\
         [pagination]\nstyle = \"jsonapi_offset\"\npage_size = 10\n\
         page_size_param = \"per_page\"\noffset_param = \"offset\"\n",
    );
    for i in 0..ENTITIES {
        write!(text, "[entity.E{i}]\nlist = \"/e{i}\"\n").unwrap();
        if i > 0 {
            write!(
                text,
                "[entity.E{i}.relationships]\nup = {{ to = \"E{}\", kind = \"hard\" }}\n",
                i - 1
            )
            .unwrap();
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_entity_skips_a_long_chain_in_linear_time() {
    // The first entity's list answers 403: a permanent failure.
    let app = axum::Router::new().fallback(|| async {
        axum::response::Response::builder()
            .status(403)
            .header("content-type", "application/vnd.api+json")
            .body(axum::body::Body::from(
                r#"{"errors":[{"title":"Forbidden","detail":"no access"}]}"#,
            ))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let manifest = Arc::new(tributary_manifest::parse("chain.toml", &chain_manifest()).unwrap());
    let source = Source::new(
        manifest,
        Credentials::bearer("t"),
        SourceOptions {
            base_url: Some(url.clone()),
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
                name: "chain",
                adapter: "chain",
                base_url: &url,
            },
            tributary_core::Clock::now(&SystemClock),
        )
        .await
        .unwrap();
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions::default(),
    );
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        engine.full_sync(&connection, &source, Arc::new(NoProgress)),
    )
    .await
    .expect("skipping is linear")
    .unwrap();

    assert_eq!(report.run.state, RunState::Failed);
    assert!(!report.run.resumable, "a 403 will happen again");
    assert_eq!(report.entities.len(), ENTITIES);
    let first = &report.entities[0];
    assert_eq!(first.entity, "E0");
    assert_eq!(first.state, EntityState::Failed);
    assert!(
        first.error.as_deref().unwrap().contains("answered 403"),
        "{first:?}"
    );
    for (i, entity) in report.entities.iter().enumerate().skip(1) {
        assert_eq!(entity.entity, format!("E{i}"));
        assert_eq!(entity.state, EntityState::Failed);
        assert_eq!(
            entity.error.as_deref(),
            Some(format!("skipped: it depends on E{}, which failed", i - 1).as_str())
        );
    }
    // Each entity's state is stored as reported.
    let checkpoints = store.checkpoints(report.run.id).await.unwrap();
    assert_eq!(checkpoints.len(), ENTITIES);
    assert!(checkpoints.iter().all(|c| c.state == EntityState::Failed));
    server.abort();
}
