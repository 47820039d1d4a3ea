//! Shared by the engine tests: a PCO source pointed at a local server, and
//! a SQLite store in a temp dir with one connection.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tributary_core::{RunKind, RunState, SystemClock};
use tributary_engine::{Engine, EngineOptions, NoProgress, RunReport};
use tributary_manifest::Manifest;
use tributary_sim::{ResourceKind, SimConfig, SimHandle};
use tributary_source::{Credentials, Source, SourceOptions};
use tributary_store::{Connection, NewConnection, RecordQuery, Store};

/// The built-in PCO adapter at `url`, with a bearer token and no rate limit
/// (the local servers have none).
pub fn pco_source(url: &str, token: &str) -> Source {
    let manifest = Arc::new(tributary_manifest::builtin("pco").unwrap().unwrap());
    Source::new(
        manifest,
        Credentials::bearer(token),
        SourceOptions {
            base_url: Some(url.to_owned()),
            rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
            ..SourceOptions::default()
        },
    )
    .unwrap()
}

/// A SQLite store in `dir` with connection `name` to `url`.
pub async fn store_with_connection(
    dir: &tempfile::TempDir,
    name: &str,
    url: &str,
) -> (Arc<dyn Store>, Connection) {
    let store = tributary_store::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let connection = store
        .ensure_connection(
            NewConnection {
                name,
                adapter: "pco",
                base_url: url,
            },
            tributary_core::Clock::now(&tributary_core::SystemClock),
        )
        .await
        .unwrap();
    (store, connection)
}

/// A simulated PCO account, a source with a page size of its own, and a
/// SQLite store with one connection and an engine over it.
pub struct Harness {
    pub sim: SimHandle,
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub source: Source,
    pub connection: Connection,
    _dir: tempfile::TempDir,
}

pub fn pco() -> Manifest {
    tributary_manifest::builtin("pco").unwrap().unwrap()
}

pub async fn harness(
    people: usize,
    manifest: Manifest,
    page_size: u32,
    overlap: Duration,
) -> Harness {
    harness_with(
        people,
        manifest,
        page_size,
        EngineOptions {
            parent_batch: 16,
            delta_overlap: overlap,
            ..EngineOptions::default()
        },
    )
    .await
}

/// [`harness`] with engine options of the caller's.
pub async fn harness_with(
    people: usize,
    manifest: Manifest,
    page_size: u32,
    options: EngineOptions,
) -> Harness {
    let config = SimConfig {
        seed: 11,
        people,
        ..SimConfig::default()
    };
    harness_of(config, manifest, page_size, options).await
}

/// [`harness_with`] over a simulator of the caller's configuration.
pub async fn harness_of(
    config: SimConfig,
    manifest: Manifest,
    page_size: u32,
    options: EngineOptions,
) -> Harness {
    let token = config.token.clone();
    let sim = tributary_sim::serve(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = Source::new(
        Arc::new(manifest),
        Credentials::bearer(token),
        SourceOptions {
            base_url: Some(sim.base_url()),
            page_size: Some(page_size),
            rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
            ..SourceOptions::default()
        },
    )
    .unwrap();
    let (store, connection) = store_with_connection(&dir, "pco", &sim.base_url()).await;
    let engine = Engine::new(store.clone(), Arc::new(SystemClock), options);
    Harness {
        sim,
        store,
        engine,
        source,
        connection,
        _dir: dir,
    }
}

impl Harness {
    /// A sync of `kind` that must succeed.
    pub async fn sync(&self, kind: RunKind) -> RunReport {
        let report = self.try_sync(kind).await;
        assert_eq!(report.run.state, RunState::Succeeded, "{:?}", report.run);
        report
    }

    /// A sync of `kind`, however it ends.
    pub async fn try_sync(&self, kind: RunKind) -> RunReport {
        self.try_sync_of(kind, None).await
    }

    /// A sync of `kind` of some entities (`None`: all), however it ends.
    pub async fn try_sync_of(&self, kind: RunKind, only: Option<&[String]>) -> RunReport {
        let lock = self.engine.lock(&self.connection.name).await.unwrap();
        self.engine
            .sync_locked(
                &lock,
                &self.connection,
                &self.source,
                kind,
                only,
                Arc::new(NoProgress),
            )
            .await
            .unwrap()
    }

    /// Every live record as (entity, id) → raw.
    pub async fn stored(&self) -> BTreeMap<(String, String), Value> {
        stored(&self.store).await
    }

    /// Every record the simulator serves as (type, id) → raw.
    pub fn source(&self) -> BTreeMap<(String, String), Value> {
        source_dump(&self.sim)
    }

    /// The store holds every source record as the source serves it; the
    /// records it holds beyond those are exactly `deleted`.
    pub async fn assert_current(&self, deleted: &[(&str, String)]) {
        let stored = self.stored().await;
        let source = self.source();
        for (key, raw) in &source {
            assert_eq!(stored.get(key), Some(raw), "record {key:?} is not current");
        }
        let mut extra: Vec<(String, String)> = stored
            .keys()
            .filter(|k| !source.contains_key(*k))
            .cloned()
            .collect();
        extra.sort();
        let mut expected: Vec<(String, String)> = deleted
            .iter()
            .map(|(e, id)| ((*e).to_owned(), id.clone()))
            .collect();
        expected.sort();
        assert_eq!(extra, expected, "records the source no longer has");
    }

    pub fn id(&self, kind: ResourceKind, n: usize) -> u64 {
        self.sim.simulator().ids(kind, n, 1)[0]
    }
}

/// Every live record of `store` as (entity, id) → raw.
pub async fn stored(store: &Arc<dyn Store>) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    let mut after = 0;
    loop {
        let batch = store
            .records(&RecordQuery {
                after_id: after,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = batch.last() else { break };
        after = last.id;
        for r in batch {
            out.insert((r.entity, r.external_id), r.raw);
        }
    }
    out
}

/// Every record `sim` serves as (type, id) → raw.
pub fn source_dump(sim: &SimHandle) -> BTreeMap<(String, String), Value> {
    sim.simulator()
        .dump(None)
        .into_iter()
        .map(|v| {
            let key = (
                v["type"].as_str().unwrap().to_owned(),
                v["id"].as_str().unwrap().to_owned(),
            );
            (key, v)
        })
        .collect()
}
