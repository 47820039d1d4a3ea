//! Shared by the engine tests: a PCO source pointed at a local server, and
//! a SQLite store in a temp dir with one connection.

#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;

use tributary_source::{Credentials, Source, SourceOptions};
use tributary_store::{Connection, NewConnection, Store};

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
