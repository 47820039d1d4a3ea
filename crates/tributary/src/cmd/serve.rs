//! `tributary serve`: the long-running process. It fires each connection's
//! schedule (`tributary schedules set`), runs the syncs through the
//! engine's service, keeps the search index current (a consumer of the
//! change feed), sends the subscriptions' webhooks (webhooks out), and
//! answers HTTP (`server.rs`). On
//! SIGTERM or Ctrl-C it stops starting work, lets the pages in flight
//! commit, leaves its runs resumable and exits — within 10 seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tributary_core::{RunKind, SystemClock};
use tributary_engine::{Engine, EngineOptions, Resolver, RunRequest, Service, ServiceOptions};
use tributary_manifest::Manifest;
use tributary_outbound::{Outbound, OutboundHandle, OutboundOptions};
use tributary_secrets::SecretKey;
use tributary_store::Connection;

use crate::server::webhooks::{Ingest, IngestOptions};
use crate::server::{AppState, router};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Where the HTTP endpoints listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A manifest file for connections of its adapter (others use the
    /// built-in adapters).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Where fetched pages wait for their commit (default: beside a SQLite
    /// file; for PostgreSQL, in the user's cache directory).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Days the change feed keeps its rows (deletions included); a reader
    /// whose cursor is older is told to re-read the records. 0 keeps them
    /// for ever.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    feed_retention_days: u32,
    /// The longest long poll a client may ask for (`GET /v1/changes?wait=`),
    /// in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=600))]
    max_wait: u32,
}

/// Stored connections' runs: their adapter's manifest, and the key that
/// opens their sealed credentials.
struct StoredConnections {
    manifest: Option<Arc<Manifest>>,
    key: Result<Arc<SecretKey>, String>,
}

/// The manifest of `connection`'s adapter: `manifest` if it is that
/// adapter's, else the built-in one.
fn manifest_for(
    manifest: Option<&Arc<Manifest>>,
    connection: &Connection,
) -> Result<Arc<Manifest>, String> {
    match manifest {
        Some(manifest) if manifest.name == connection.adapter => Ok(manifest.clone()),
        _ => Ok(Arc::new(
            tributary_manifest::builtin(&connection.adapter)
                .ok_or_else(|| {
                    format!(
                        "adapter `{}` is not built in: start serve with --manifest FILE",
                        connection.adapter
                    )
                })?
                .map_err(|error| error.to_string())?,
        )),
    }
}

impl Resolver for StoredConnections {
    fn request(&self, connection: &Connection, kind: RunKind) -> Result<RunRequest, String> {
        let manifest = manifest_for(self.manifest.as_ref(), connection)?;
        Ok(RunRequest {
            secret_key: self.key.clone(),
            ..RunRequest::new(&connection.name, kind, manifest)
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let manifest = args
        .manifest
        .as_deref()
        .map(tributary_manifest::load)
        .transpose()?
        .map(Arc::new);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let store = tributary_store::open(&args.db).await?;
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions {
            spool_dir: Some(
                args.spool_dir
                    .clone()
                    .unwrap_or_else(|| super::sync::default_spool_dir(&args.db)),
            ),
            ..EngineOptions::default()
        },
    );
    let resolver = StoredConnections {
        manifest: manifest.clone(),
        key: SecretKey::from_env()
            .map(Arc::new)
            .map_err(|error| error.to_string()),
    };
    if let Err(why) = &resolver.key {
        tracing::warn!(%why, "no secret key: connections with stored credentials cannot sync");
    }
    let schedules = store.schedules().await?;
    for connection in store.connections().await? {
        if !schedules.iter().any(|s| s.connection_id == connection.id) {
            tracing::warn!(connection = %connection.name, "no schedule: set one with `tributary schedules set {}`", connection.name);
        }
    }
    let resolver_key = resolver.key.as_ref().ok().cloned();
    let resolver_key_for_outbound = resolver_key.clone();
    let service = Service::new(engine, Arc::new(resolver), ServiceOptions::default()).start();
    let address = listener.local_addr()?;
    crate::output::note(&format!(
        "serving on http://{address} (GET /healthz, /readyz, /v1/changes, /v1/changes/stream, /v1/records, /v1/search; POST /webhooks/CONNECTION); {} scheduled connection(s); stop with Ctrl-C or SIGTERM",
        schedules.len()
    ));
    let ingest = Ingest::new(
        store.clone(),
        Arc::new(SystemClock),
        resolver_key,
        Arc::new(move |connection: &Connection| manifest_for(manifest.as_ref(), connection)),
        IngestOptions::default(),
    );
    let feed = tributary_feed::Feed::new(
        store.clone(),
        Arc::new(SystemClock),
        tributary_feed::FeedOptions {
            retention: (args.feed_retention_days > 0).then(|| {
                std::time::Duration::from_secs(u64::from(args.feed_retention_days) * 24 * 3_600)
            }),
            ..tributary_feed::FeedOptions::default()
        },
    )
    .start()
    .await
    .context("cannot start the change feed")?;
    // Webhooks out: beside the feed, woken whenever its head moves.
    let outbound = start_outbound(&store, resolver_key_for_outbound.clone(), &feed).await?;
    let search =
        tributary_feed::Indexer::new(store.clone(), tributary_feed::IndexerOptions::default())
            .start()
            .await
            .context("cannot start the search indexer")?;
    let app = router(AppState {
        max_wait: std::time::Duration::from_secs(u64::from(args.max_wait)),
        ..AppState::new(
            store.clone(),
            Arc::new(SystemClock),
            service.clone(),
            ingest,
            feed.clone(),
            search.clone(),
        )
    });
    let stopping = service.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            // Runs stop first (the HTTP side closes as they do).
            stopping.shutdown().await;
        })
        .await
        .context("the HTTP server failed")?;
    service.shutdown().await;
    if let Some((outbound, waker)) = &outbound {
        waker.abort();
        outbound.shutdown().await;
    }
    feed.shutdown();
    search.shutdown();
    store.close().await;
    crate::output::note("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Starts the webhooks-out service (when there is a key to open the
/// subscriptions' secrets with) and a task that wakes it whenever the
/// change feed's head moves.
async fn start_outbound(
    store: &Arc<dyn tributary_store::Store>,
    key: Option<Arc<SecretKey>>,
    feed: &tributary_feed::FeedHandle,
) -> anyhow::Result<Option<(OutboundHandle, tokio::task::JoinHandle<()>)>> {
    let Some(key) = key else {
        if !store.subscriptions().await?.is_empty() {
            tracing::warn!(
                "no secret key: subscriptions' messages are not sent (set TRIBUTARY_SECRET_KEY or TRIBUTARY_SECRET_KEY_FILE)"
            );
        }
        return Ok(None);
    };
    let outbound = Outbound::new(
        store.clone(),
        Arc::new(SystemClock),
        key,
        OutboundOptions::default(),
    )
    .context("cannot start webhooks out")?
    .start();
    let waker = {
        let outbound = outbound.clone();
        let feed = feed.clone();
        tokio::spawn(async move {
            loop {
                let head = feed.head();
                if feed.wait(head, std::time::Duration::from_secs(60)).await {
                    outbound.wake();
                }
            }
        })
    };
    Ok(Some((outbound, waker)))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
