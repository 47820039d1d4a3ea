//! `tributary demo --adapter clerk`: Clerk end to end on the embedded
//! default. A simulated Clerk instance is synced into a SQLite file (with
//! progress bars); then its Svix sender delivers a stream of changes —
//! with duplicates, reordering, forged and stale deliveries — to this
//! process's own webhook endpoint, which verifies, stores and applies them
//! as `tributary serve` does; a reconciliation ends it, and the records
//! are counted against the instance's. The simulated instance starts
//! afresh each time, and so does the demo's connection (`clerk-demo`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tributary_core::{Clock, Credentials, RunKind, SystemClock};
use tributary_engine::{Engine, EngineOptions, Resolver, RunRequest, Service, ServiceOptions};
use tributary_manifest::Manifest;
use tributary_secrets::{SecretKey, seal_webhook_secret};
use tributary_sim::clerk::{ClerkConfig, ClerkKind, ClerkSim, ClerkWebhookOptions, serve_clerk};
use tributary_store::{Connection, DeliveryQuery, DeliveryState, Store};

use super::sync::{FullSync, RateLimitSetting, full_sync};
use super::{load_manifest, thousands};
use crate::server::webhooks::{Ingest, IngestOptions};
use crate::server::{AppState, router};

/// The demo's connection.
const CONNECTION: &str = "clerk-demo";

/// What the demo is asked for.
pub struct ClerkDemo<'a> {
    pub users: usize,
    pub events: usize,
    pub seed: u64,
    pub db: &'a str,
}

/// Runs of the demo's connection use the simulator's secret key.
struct DemoResolver {
    manifest: Arc<Manifest>,
    credentials: Credentials,
}

impl Resolver for DemoResolver {
    fn request(&self, connection: &Connection, kind: RunKind) -> Result<RunRequest, String> {
        Ok(RunRequest {
            credentials: Some(self.credentials.clone()),
            rate_limiter: RateLimitSetting::Off.limiter(),
            ..RunRequest::new(&connection.name, kind, self.manifest.clone())
        })
    }
}

pub async fn run(demo: ClerkDemo<'_>) -> anyhow::Result<ExitCode> {
    let config = ClerkConfig {
        seed: demo.seed,
        users: demo.users,
        webhooks: ClerkWebhookOptions {
            duplicate: 0.2,
            reorder: 0.1,
            forged: 0.01,
            stale: 0.01,
            ..ClerkWebhookOptions::default()
        },
        ..ClerkConfig::default()
    };
    let credentials = Credentials::bearer(&config.secret_key);
    let sim = serve_clerk(ClerkSim::new(config), "127.0.0.1:0".parse()?)
        .await
        .context("cannot start the simulator")?;
    let instance = sim.simulator();
    crate::output::note(&format!(
        "Simulated Clerk instance with {} users and {} organizations at {}",
        thousands(instance.count(ClerkKind::User) as i64),
        thousands(instance.count(ClerkKind::Organization) as i64),
        sim.base_url()
    ));
    // The simulated instance starts afresh each time (the same ids, the
    // same event ids): so does the demo's connection.
    {
        let store = tributary_store::open(demo.db).await?;
        store.remove_connection(CONNECTION).await?;
        store.close().await;
    }
    crate::output::note(&format!("Syncing into {} ...\n", demo.db));
    let manifest = load_manifest("clerk", None)?;
    let sync = |kind: RunKind| {
        full_sync(
            FullSync {
                base_url: Some(sim.base_url()),
                rate_limit: RateLimitSetting::Off,
                kind,
                ..FullSync::new(
                    demo.db,
                    manifest.clone(),
                    Some(credentials.clone()),
                    CONNECTION,
                )
            },
            crate::progress::for_stderr(&manifest),
        )
    };
    let full = sync(RunKind::Full).await?;
    let c = full.run.counts;
    crate::outln!(
        "\nfull sync: {} records in {} pages, {:.1}s",
        thousands(c.created + c.updated + c.unchanged),
        thousands(c.pages),
        full.elapsed.as_secs_f64()
    )?;

    // This process's own webhook endpoint, as `serve` runs it.
    let store = tributary_store::open(demo.db).await?;
    let connection = store
        .connection(CONNECTION)
        .await?
        .context("the demo connection vanished")?;
    let key = Arc::new(SecretKey::generate());
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions::default(),
    );
    let service = Service::new(
        engine,
        Arc::new(DemoResolver {
            manifest: manifest.clone(),
            credentials: credentials.clone(),
        }),
        ServiceOptions::default(),
    )
    .start();
    let for_ingest = manifest.clone();
    let ingest = Ingest::new(
        store.clone(),
        Arc::new(SystemClock),
        Some(key.clone()),
        Arc::new(move |_: &Connection| Ok(for_ingest.clone())),
        IngestOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let feed = tributary_feed::Feed::new(
        store.clone(),
        Arc::new(SystemClock),
        tributary_feed::FeedOptions::default(),
    )
    .start()
    .await
    .context("cannot start the change feed")?;
    let search =
        tributary_feed::Indexer::new(store.clone(), tributary_feed::IndexerOptions::default())
            .start()
            .await
            .context("cannot start the search indexer")?;
    let app = router(AppState::new(
        store.clone(),
        Arc::new(SystemClock),
        service.clone(),
        ingest,
        feed.clone(),
        search.clone(),
    ));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = format!("http://{address}/webhooks/{CONNECTION}");
    let secret = instance
        .add_endpoint(&endpoint)
        .map_err(|e| anyhow::anyhow!("cannot add the webhook endpoint: {e}"))?;
    store
        .add_webhook_secret(
            connection.id,
            None,
            &seal_webhook_secret(&key, &secret, CONNECTION),
            SystemClock.now(),
        )
        .await?;

    crate::output::note(&format!(
        "\nThe instance changes {} times; its Svix sender delivers each change to {endpoint}\n\
         (20% twice, 10% out of order, 1% forged, 1% replayed stale) ...",
        thousands(demo.events as i64)
    ));
    let before = instance.events().len();
    instance.mutate(demo.events, demo.seed ^ 0x5eed);
    let events = instance.events().len() - before;
    let applied = wait_applied(&*store, connection.id, events).await;
    tokio::time::timeout(Duration::from_secs(60), instance.idle())
        .await
        .context("the simulator's sender did not finish within a minute")?;
    service.shutdown().await;
    feed.shutdown();
    search.shutdown();
    server.abort();
    let stats = instance.webhook_stats();
    crate::outln!(
        "webhooks: {} events sent as {} requests ({} duplicates, {} forged, {} stale); \
         {} stored once each and applied, {} refused (401)",
        thousands(events as i64),
        thousands(stats.sent as i64),
        thousands(stats.duplicates as i64),
        thousands(stats.forged as i64),
        thousands(stats.stale as i64),
        thousands(applied as i64),
        thousands(stats.refused as i64),
    )?;

    // The nightly repair, run now: what the events did not carry (an
    // organization's member count) comes from the listing.
    crate::output::note("\nReconciling ...");
    let reconcile = sync(RunKind::Reconcile).await?;
    let r = reconcile.run.counts;
    crate::outln!(
        "reconciliation: {} updated, {} created, {} deleted",
        thousands(r.updated),
        thousands(r.created),
        thousands(
            reconcile
                .deletions
                .as_ref()
                .map_or(0, |d| d.deleted.values().sum::<i64>())
        ),
    )?;
    let counts = store.entity_counts(connection.id).await?;
    let mut same = true;
    crate::outln!("\n{:<24} {:>10} {:>10}", "entity", "here", "instance")?;
    for (entity, kind) in [
        ("User", ClerkKind::User),
        ("Organization", ClerkKind::Organization),
        ("OrganizationMembership", ClerkKind::OrganizationMembership),
    ] {
        let here = counts
            .iter()
            .find(|c| c.entity == entity)
            .map_or(0, |c| c.live);
        let there = instance.count(kind) as i64;
        same &= here == there;
        crate::outln!(
            "{:<24} {:>10} {:>10}",
            entity,
            thousands(here),
            thousands(there)
        )?;
    }
    crate::outln!(
        "Database: {}  (try: tributary webhooks list --db {}; tributary runs list --db {})",
        demo.db,
        demo.db,
        demo.db
    )?;
    store.close().await;
    sim.shutdown().await;
    Ok(if same && stats.accepted_forgeries == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::FAILED)
    })
}

/// Waits (at most two minutes) until `events` deliveries of `connection`
/// are applied, showing how many are; the number applied.
async fn wait_applied(store: &dyn Store, connection: i64, events: usize) -> usize {
    let bar = indicatif::ProgressBar::new(events as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:<24} {bar:40} {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("webhook deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let applied = loop {
        let query = DeliveryQuery {
            connection_id: Some(connection),
            state: Some(DeliveryState::Applied),
            limit: 1_000_000,
            ..DeliveryQuery::default()
        };
        let applied = store.deliveries(&query).await.map_or(0, |d| d.len());
        bar.set_position(applied as u64);
        if applied >= events || tokio::time::Instant::now() >= deadline {
            break applied;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish();
    applied
}
