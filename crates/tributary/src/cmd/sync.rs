//! `tributary sync`: one run of one connection, for scripts and schedulers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use tributary_core::{Clock, RunState, SystemClock};
use tributary_engine::{Engine, EngineOptions, Progress, RunReport};
use tributary_manifest::Manifest;
use tributary_source::{Credentials, Source, SourceOptions};
use tributary_store::NewConnection;

use super::{load_manifest, thousands};

/// The kinds of sync this command runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Every record of every entity, resumable.
    Full,
}

/// How the token is sent.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AuthMode {
    /// `Authorization: Bearer TOKEN`.
    Bearer,
    /// HTTP Basic; the token is `USER:PASSWORD` (PCO: `APP_ID:SECRET`).
    Basic,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a SQLite file path (created if missing) or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Built-in adapter name.
    #[arg(long, default_value = "pco")]
    adapter: String,
    /// Load the adapter from this manifest file instead of a built-in one.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The API's base URL (defaults to the manifest's).
    #[arg(long)]
    base_url: Option<String>,
    /// The API token; prefer the TRIBUTARY_TOKEN environment variable, which
    /// other users of the machine cannot see in the process list.
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    token: String,
    /// How the token is sent.
    #[arg(long, value_enum, default_value_t = AuthMode::Bearer)]
    auth: AuthMode,
    /// The kind of sync.
    #[arg(long, value_enum, default_value_t = Kind::Full)]
    kind: Kind,
    /// The connection's name (defaults to the adapter's name).
    #[arg(long)]
    connection: Option<String>,
    /// Records per request (at most the manifest's page size).
    #[arg(long)]
    page_size: Option<u32>,
    /// Write the run's figures (records/s, pages/s, peak RSS) as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
}

pub fn credentials(token: &str, auth: AuthMode) -> anyhow::Result<Credentials> {
    Ok(match auth {
        AuthMode::Bearer => Credentials::bearer(token),
        AuthMode::Basic => {
            let (user, password) = token
                .split_once(':')
                .context("--auth basic needs the token as USER:PASSWORD")?;
            Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }
        }
    })
}

/// What a full sync needs.
pub struct FullSync<'a> {
    pub db: &'a str,
    pub manifest: Arc<Manifest>,
    pub base_url: Option<String>,
    pub credentials: Credentials,
    pub connection: &'a str,
    pub page_size: Option<u32>,
}

/// Opens the store, ensures the connection and runs (or resumes) a full sync.
pub async fn full_sync(
    request: FullSync<'_>,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<RunReport> {
    let store = tributary_store::open(request.db)
        .await
        .with_context(|| format!("cannot open the store `{}`", request.db))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = Source::new(
        request.manifest.clone(),
        request.credentials,
        SourceOptions {
            base_url: request.base_url,
            page_size: request.page_size,
            ..SourceOptions::default()
        },
    )?;
    let connection = store
        .ensure_connection(
            NewConnection {
                name: request.connection,
                adapter: &request.manifest.name,
                base_url: source.base_url(),
            },
            clock.now(),
        )
        .await?;
    let engine = Engine::new(store, clock, EngineOptions::default());
    Ok(engine.full_sync(&connection, &source, progress).await?)
}

/// Peak resident set size of this process in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Kind::Full = args.kind;
    let manifest = load_manifest(&args.adapter, args.manifest.as_deref())?;
    let connection = args
        .connection
        .clone()
        .unwrap_or_else(|| manifest.name.clone());
    let progress = crate::progress::for_stderr(&manifest);
    let report = full_sync(
        FullSync {
            db: &args.db,
            manifest,
            base_url: args.base_url.clone(),
            credentials: credentials(&args.token, args.auth)?,
            connection: &connection,
            page_size: args.page_size,
        },
        progress,
    )
    .await?;
    let c = report.run.counts;
    let records = c.created + c.updated + c.unchanged + c.quarantined;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "run {} {}{}: {} records ({} created, {} updated, {} unchanged, {} quarantined) in {} pages, {:.1}s",
        report.run.id,
        report.run.state.as_str(),
        if report.resumed { " (resumed)" } else { "" },
        thousands(records),
        thousands(c.created),
        thousands(c.updated),
        thousands(c.unchanged),
        thousands(c.quarantined),
        thousands(c.pages),
        secs,
    );
    if let Some(error) = &report.run.error {
        eprintln!("error: {error}");
    }
    if let Some(path) = &args.stats_json {
        let stats = json!({
            "run_id": report.run.id,
            "state": report.run.state.as_str(),
            "resumed": report.resumed,
            "records": records,
            "pages": c.pages,
            "elapsed_secs": secs,
            "records_per_sec": records as f64 / secs,
            "pages_per_sec": c.pages as f64 / secs,
            "peak_rss_kib": peak_rss_kib(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&stats)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.run.state == RunState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
