//! `tributary runs list | show | approve | reject`: the history of runs, as
//! stored, and the decision a held reconciliation waits for.
//!
//! `list` and `show` only read (a read-only database works). A run is a
//! row: its kind, state, counters, error, timings, whether a failed run
//! will be resumed, and — for `show` — where each of its entities stands.
//! `approve` applies the deletions a reconciliation's mass-delete guard
//! held back; `reject` drops them.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use tributary_store::{Checkpoint, Run};

use super::thousands;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The latest runs, newest first.
    List(ListArgs),
    /// One run and each of its entities.
    Show(ShowArgs),
    /// Apply the deletions a reconciliation's mass-delete guard held back
    /// (the run ends `succeeded`).
    Approve(DecideArgs),
    /// Drop the deletions a reconciliation's mass-delete guard held back
    /// (the run ends `cancelled`; nothing is deleted).
    Reject(DecideArgs),
    /// Cancel a run that is running or waiting for approval: it ends
    /// `cancelled` and is never resumed (a process running it stops at its
    /// next commit).
    Cancel(DecideArgs),
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The run's id (`runs list` shows those `waiting_approval`).
    run: i64,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// The adapter's manifest file, for a connection whose adapter is not
    /// built in (what belongs to what: deletion cascades along its hard
    /// relationships).
    #[arg(long)]
    manifest: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Only this connection's runs.
    #[arg(long)]
    connection: Option<String>,
    /// How many (1 to 10,000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// As a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run's id (`runs list` shows them).
    run: i64,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// As a JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List(args) => list(args).await?,
        Command::Show(args) => show(args).await?,
        Command::Approve(args) => decide(args, true).await?,
        Command::Reject(args) => decide(args, false).await?,
        Command::Cancel(args) => cancel(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(args: DecideArgs) -> anyhow::Result<()> {
    let store = tributary_store::open(&args.db).await?;
    let engine = tributary_engine::Engine::new(
        store.clone(),
        std::sync::Arc::new(tributary_core::SystemClock),
        tributary_engine::EngineOptions::default(),
    );
    let result = engine.cancel(args.run).await;
    store.close().await;
    let run = result?;
    crate::output::note(&format!(
        "run {}: cancelled; it will not be resumed",
        run.id
    ));
    Ok(())
}

async fn decide(args: DecideArgs, approve: bool) -> anyhow::Result<()> {
    let store = tributary_store::open(&args.db).await?;
    let engine = tributary_engine::Engine::new(
        store.clone(),
        std::sync::Arc::new(tributary_core::SystemClock),
        tributary_engine::EngineOptions::default(),
    );
    let result = async {
        let run = if approve {
            let run = store
                .run(args.run)
                .await?
                .ok_or(tributary_engine::Error::RunNotFound(args.run))?;
            let adapter = store
                .connections()
                .await?
                .into_iter()
                .find(|c| c.id == run.connection_id)
                .map(|c| c.adapter)
                .unwrap_or_default();
            let manifest = super::load_manifest(&adapter, args.manifest.as_deref())?;
            engine.approve(args.run, &manifest).await?
        } else {
            engine.reject(args.run).await?
        };
        anyhow::Ok(run)
    }
    .await;
    store.close().await;
    let run = result?;
    crate::output::note(&format!(
        "run {}: {} ({} records deleted)",
        run.id,
        if approve {
            "deletions approved and applied"
        } else {
            "deletions rejected; nothing was deleted"
        },
        thousands(run.counts.deleted)
    ));
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let connection_id = super::connection_id(store.as_ref(), args.connection.as_deref()).await?;
    let runs = store.runs(connection_id, args.limit).await?;
    let names = super::connection_names(store.as_ref()).await?;
    if args.json {
        let list: Vec<Value> = runs.iter().map(|r| run_json(r, &names)).collect();
        crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if runs.is_empty() {
        crate::outln!("no runs yet (start one with `tributary sync`)")?;
        return Ok(());
    }
    crate::outln!(
        "{:>6}  {:<16} {:<6} {:<18} {:<20} {:>9} {:>10} {:>10} {:>10} {:>11}",
        "RUN",
        "CONNECTION",
        "KIND",
        "STATE",
        "STARTED (UTC)",
        "SECONDS",
        "CREATED",
        "UPDATED",
        "UNCHANGED",
        "QUARANTINED"
    )?;
    for run in &runs {
        let c = run.counts;
        crate::outln!(
            "{:>6}  {:<16} {:<6} {:<18} {:<20} {:>9} {:>10} {:>10} {:>10} {:>11}",
            run.id,
            super::connection_name(&names, run.connection_id),
            run.kind.as_str(),
            state_text(run),
            run.started_at.format("%Y-%m-%d %H:%M:%S"),
            seconds(run).map_or("-".to_owned(), |s| format!("{s:.1}")),
            thousands(c.created),
            thousands(c.updated),
            thousands(c.unchanged),
            thousands(c.quarantined),
        )?;
    }
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let run = store
        .run(args.run)
        .await?
        .with_context(|| format!("no run {} (see `tributary runs list`)", args.run))?;
    let checkpoints = store.checkpoints(run.id).await?;
    let names = super::connection_names(store.as_ref()).await?;
    if args.json {
        let mut value = run_json(&run, &names);
        value["entities"] = checkpoints.iter().map(checkpoint_json).collect();
        crate::outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let c = run.counts;
    crate::outln!(
        "run {} of connection `{}`: {} sync, {}",
        run.id,
        super::connection_name(&names, run.connection_id),
        run.kind.as_str(),
        state_text(&run)
    )?;
    crate::outln!(
        "  started {}{}",
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        match (run.finished_at, seconds(&run)) {
            (Some(at), Some(secs)) => format!(
                ", finished {} ({secs:.1} s)",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            _ => String::new(),
        }
    )?;
    crate::outln!(
        "  {} pages: {} created ({} restored), {} updated, {} unchanged, {} deleted, {} quarantined",
        thousands(c.pages),
        thousands(c.created),
        thousands(c.restored),
        thousands(c.updated),
        thousands(c.unchanged),
        thousands(c.deleted),
        thousands(c.quarantined)
    )?;
    crate::outln!(
        "  {} requests, {} retries; trigger: {}{}",
        thousands(c.requests),
        thousands(c.retries),
        trigger(&run),
        run.idempotency_key
            .as_deref()
            .map_or(String::new(), |key| format!(" (key `{key}`)"))
    )?;
    if let Some(error) = &run.error {
        crate::outln!("  error: {error}")?;
    }
    if run.resumable {
        crate::outln!("  resumable: the next sync of its kind resumes it from its checkpoints")?;
    }
    crate::outln!("  entities:")?;
    for cp in &checkpoints {
        let total = cp
            .total
            .map_or(String::new(), |t| format!(" of {}", thousands(t)));
        let c = cp.counts;
        crate::outln!(
            "    {:<22} {:<8} {} records{total} in {} pages: {} created ({} restored), {} updated, {} unchanged, {} deleted, {} quarantined{}",
            cp.entity,
            cp.state.as_str(),
            thousands(cp.records),
            thousands(cp.pages),
            thousands(c.created),
            thousands(c.restored),
            thousands(c.updated),
            thousands(c.unchanged),
            thousands(c.deleted),
            thousands(c.quarantined),
            cp.error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        )?;
    }
    Ok(())
}

/// The state, and for a failed run whether it will be resumed.
fn state_text(run: &Run) -> String {
    if run.resumable {
        format!("{} (resumable)", run.state.as_str())
    } else {
        run.state.as_str().to_owned()
    }
}

fn seconds(run: &Run) -> Option<f64> {
    run.finished_at
        .map(|f| (f - run.started_at).as_seconds_f64())
}

pub(crate) fn run_json(run: &Run, names: &[(i64, String)]) -> Value {
    let c = run.counts;
    json!({
        "id": run.id,
        "connection": super::connection_name(names, run.connection_id),
        "kind": run.kind.as_str(),
        "state": run.state.as_str(),
        "resumable": run.resumable,
        "scope": run.scope,
        "idempotency_key": run.idempotency_key,
        "started_at": run.started_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "counts": {
            "pages": c.pages,
            "created": c.created,
            "updated": c.updated,
            "unchanged": c.unchanged,
            "deleted": c.deleted,
            "quarantined": c.quarantined,
            "restored": c.restored,
            "requests": c.requests,
            "retries": c.retries,
        },
        "trigger": trigger(run),
        "error": run.error,
    })
}

/// What started a run: a schedule's slot (its key names the slot), or a
/// person or program asking.
fn trigger(run: &Run) -> &'static str {
    match &run.idempotency_key {
        _ if run.kind == tributary_core::RunKind::Webhook => "webhook",
        Some(key) if key.starts_with("schedule ") => "schedule",
        _ => "manual",
    }
}

pub(crate) fn checkpoint_json(cp: &Checkpoint) -> Value {
    let c = cp.counts;
    json!({
        "entity": cp.entity,
        "state": cp.state.as_str(),
        "records": cp.records,
        "pages": cp.pages,
        "created": c.created,
        "updated": c.updated,
        "unchanged": c.unchanged,
        "deleted": c.deleted,
        "restored": c.restored,
        "quarantined": c.quarantined,
        "total": cp.total,
        "cursor": cp.cursor.0,
        "error": cp.error,
        "updated_at": cp.updated_at,
    })
}
