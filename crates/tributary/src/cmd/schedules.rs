//! `tributary schedules set | list`: when `tributary serve` runs each
//! connection's syncs — a delta every N minutes and a reconciliation by
//! cron (UTC) — kept in the database.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use tributary_core::{Clock as _, SystemClock};
use tributary_engine::schedule::{
    DEFAULT_DELTA_EVERY, DEFAULT_RECONCILE_CRON, check_cron, new_schedule, parse_every,
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sets a connection's schedule (its first delta is due at once).
    Set(SetArgs),
    /// Every connection's schedule and its next slots.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The connection (`tributary connections list` shows them).
    connection: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// A delta sync this often (e.g. 15m, 90s, 1h; 10s to 31d), or `off`.
    #[arg(long, default_value = "15m", value_parser = every)]
    delta_every: Every,
    /// A reconciliation at the times of this cron expression, in UTC (five
    /// fields: minute hour day-of-month month day-of-week), or `off`.
    #[arg(long, default_value = DEFAULT_RECONCILE_CRON, value_parser = cron)]
    reconcile_cron: Cron,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// As a JSON array.
    #[arg(long)]
    json: bool,
}

/// `--delta-every`: an interval, or off.
#[derive(Debug, Clone, Copy)]
pub struct Every(Option<std::time::Duration>);

/// `--reconcile-cron`: an expression, or off.
#[derive(Debug, Clone)]
pub struct Cron(Option<String>);

fn every(text: &str) -> Result<Every, String> {
    if text.trim() == "off" {
        return Ok(Every(None));
    }
    parse_every(text).map(|d| Every(Some(d)))
}

fn cron(text: &str) -> Result<Cron, String> {
    if text.trim() == "off" {
        return Ok(Cron(None));
    }
    check_cron(text.trim()).map(|()| Cron(Some(text.trim().to_owned())))
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Set(args) => set(args).await?,
        Command::List(args) => list(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let store = tributary_store::open(&args.db).await?;
    let result = async {
        let connection = store.connection(&args.connection).await?.with_context(|| {
            format!(
                "no connection named `{}`: add it with `tributary connections add {} --auth ...`",
                args.connection, args.connection
            )
        })?;
        let schedule = new_schedule(
            connection.id,
            args.delta_every.0,
            args.reconcile_cron.0.as_deref(),
            SystemClock.now(),
        )
        .map_err(anyhow::Error::msg)?;
        store.set_schedule(&schedule).await?;
        anyhow::Ok(describe(&connection.name, &schedule))
    }
    .await;
    store.close().await;
    crate::output::note(&format!("{}; `tributary serve` runs them", result?));
    Ok(())
}

fn describe(name: &str, schedule: &tributary_store::Schedule) -> String {
    let delta = match schedule.delta_every_secs {
        Some(secs) => format!("a delta every {}", human(secs)),
        None => "no scheduled deltas".to_owned(),
    };
    let reconcile = match &schedule.reconcile_cron {
        Some(cron) => format!("a reconciliation at \"{cron}\" (UTC)"),
        None => "no scheduled reconciliations".to_owned(),
    };
    format!("connection `{name}`: {delta}, {reconcile}")
}

fn human(secs: i64) -> String {
    match secs {
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let schedules = store.schedules().await?;
    let connections = store.connections().await?;
    let name = |id: i64| {
        connections
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_string(), |c| c.name.clone())
    };
    if args.json {
        let list: Vec<_> = schedules
            .iter()
            .map(|s| {
                json!({
                    "connection": name(s.connection_id),
                    "delta_every_secs": s.delta_every_secs,
                    "delta_next_at": s.delta_next_at,
                    "reconcile_cron": s.reconcile_cron,
                    "reconcile_next_at": s.reconcile_next_at,
                })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if schedules.is_empty() {
        crate::outln!(
            "no schedules yet (set one with `tributary schedules set CONNECTION`: a delta every {}, a reconciliation at \"{}\" UTC)",
            human(DEFAULT_DELTA_EVERY.as_secs() as i64),
            DEFAULT_RECONCILE_CRON
        )?;
        return Ok(());
    }
    crate::outln!(
        "{:<16} {:>11} {:<22} {:<16} {:<22}",
        "CONNECTION",
        "DELTA EVERY",
        "NEXT DELTA (UTC)",
        "RECONCILE CRON",
        "NEXT RECONCILE (UTC)"
    )?;
    let at = |t: Option<tributary_core::Timestamp>| {
        t.map_or("—".to_owned(), |t| {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        })
    };
    for s in &schedules {
        crate::outln!(
            "{:<16} {:>11} {:<22} {:<16} {:<22}",
            name(s.connection_id),
            s.delta_every_secs.map_or("off".to_owned(), human),
            at(s.delta_next_at),
            s.reconcile_cron.as_deref().unwrap_or("off"),
            at(s.reconcile_next_at)
        )?;
    }
    Ok(())
}
