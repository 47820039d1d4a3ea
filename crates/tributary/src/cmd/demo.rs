//! `tributary demo`: the main job on the embedded default — a simulated
//! Planning Center account synced into a SQLite file, with progress bars
//! (`--adapter clerk`: Clerk end to end, see `demo_clerk`).

use std::process::ExitCode;

use anyhow::Context as _;
use tributary_core::RunState;
use tributary_sim::SimConfig;
use tributary_source::Credentials;

use super::sync::{FullSync, RateLimitSetting, full_sync};
use super::{load_manifest, thousands};

/// The APIs the demo can simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoAdapter {
    /// Planning Center People: a full sync.
    Pco,
    /// Clerk: a full sync, then a stream of Svix-signed webhooks applied as they arrive, then
    /// a reconciliation.
    Clerk,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The simulated API.
    #[arg(long, value_enum, default_value = "pco")]
    adapter: DemoAdapter,
    /// Clerk: users in the simulated instance (with a tenth as many organizations).
    #[arg(long, default_value_t = 2_000, value_parser = super::people(1))]
    users: usize,
    /// Clerk: changes the instance makes after the full sync (each one or more webhook
    /// events).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    events: u32,
    /// People in the simulated account (with about a third as many households,
    /// and their emails, phone numbers and addresses).
    #[arg(long, default_value_t = 10_000, value_parser = super::people(1))]
    people: usize,
    /// Seed of the simulated data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The SQLite file to sync into.
    #[arg(long, default_value = "./tributary.db")]
    db: String,
    /// Stop after the sync instead of keeping the simulator up (the Clerk demo always stops).
    #[arg(long)]
    exit: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.adapter == DemoAdapter::Clerk {
        return super::demo_clerk::run(super::demo_clerk::ClerkDemo {
            users: args.users,
            events: args.events as usize,
            seed: args.seed,
            db: &args.db,
        })
        .await;
    }
    let config = SimConfig {
        seed: args.seed,
        people: args.people,
        ..SimConfig::default()
    };
    let token = config.token.clone();
    let sim = tributary_sim::serve(config, "127.0.0.1:0".parse()?)
        .await
        .context("cannot start the simulator")?;
    crate::output::note(&format!(
        "Simulated Planning Center account with {} people at {}",
        thousands(args.people as i64),
        sim.base_url()
    ));
    crate::output::note(&format!("Syncing into {} ...\n", args.db));
    let manifest = load_manifest("pco", None)?;
    let progress = crate::progress::for_stderr(&manifest);
    let report = full_sync(
        FullSync {
            base_url: Some(sim.base_url()),
            // The demo's simulator has no rate limit.
            rate_limit: RateLimitSetting::Off,
            ..FullSync::new(
                &args.db,
                manifest.clone(),
                Some(Credentials::bearer(token)),
                "demo",
            )
        },
        progress,
    )
    .await?;

    let c = report.run.counts;
    let total = c.created + c.updated + c.unchanged + c.quarantined;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let store = tributary_store::open(&args.db).await?;
    let connection = store
        .connection("demo")
        .await?
        .context("the demo connection vanished")?;
    let counts = store.entity_counts(connection.id).await?;
    crate::outln!()?;
    crate::outln!(
        "{:<6} {:<22} {:>10} {:>8} {:>10}",
        "wave",
        "entity",
        "records",
        "pages",
        "state"
    )?;
    for (i, wave) in manifest.graph.waves().iter().enumerate() {
        for entity in wave {
            let live = counts
                .iter()
                .find(|c| &c.entity == entity)
                .map_or(0, |c| c.live);
            let entity_report = report.entities.iter().find(|e| &e.entity == entity);
            crate::outln!(
                "{:<6} {:<22} {:>10} {:>8} {:>10}",
                i + 1,
                entity,
                thousands(live),
                thousands(entity_report.map_or(0, |e| e.pages)),
                entity_report.map_or("-", |e| e.state.as_str()),
            )?;
        }
    }
    crate::outln!(
        "\n{} created, {} updated, {} unchanged, {} quarantined",
        thousands(c.created),
        thousands(c.updated),
        thousands(c.unchanged),
        thousands(c.quarantined)
    )?;
    crate::outln!(
        "\nrun {}{}: {} records in {} pages, {:.1}s ({} records/s)",
        report.run.id,
        if report.resumed { " (resumed)" } else { "" },
        thousands(total),
        thousands(c.pages),
        secs,
        thousands((total as f64 / secs) as i64),
    )?;
    if let Some(error) = &report.run.error {
        crate::outln!("error: {error}")?;
    }
    crate::outln!(
        "Database: {}  (try: tributary status --db {}; tributary records export --db {} --entity Person | head)",
        args.db,
        args.db,
        args.db
    )?;

    let ok = report.run.state == RunState::Succeeded;
    if !args.exit {
        crate::output::note(&format!(
            "\nThe simulator stays up at {} (token `sim-token`); press Ctrl-C to stop.",
            sim.base_url()
        ));
        tokio::signal::ctrl_c().await?;
    }
    sim.shutdown().await;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::FAILED)
    })
}
