//! `tributary bench keep-current`: what staying current costs. A full sync
//! of a simulated account; then a share of every entity's records changes
//! at the source and a delta sync brings the store back to the source; then
//! some people leave and a reconciliation finds them. Requests are counted
//! per entity (the figure that matters under PCO's 100 requests per 20 s)
//! and the store is compared with the source record by record after each.
//! The syncs run as child processes (the real binary, as a user runs it).

use std::path::Path;
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tributary_sim::{ResourceKind, SimConfig, Simulator};

use super::thousands;

#[derive(Debug, clap::Args)]
pub struct KeepCurrentArgs {
    /// People in the simulated account.
    #[arg(long, default_value_t = 100_000, value_parser = super::people(100))]
    people: usize,
    /// Percentage of each entity's records that change before the delta.
    #[arg(long, default_value_t = 1.0, value_parser = percent)]
    changed_percent: f64,
    /// Percentage of people who leave before the reconciliation (their
    /// emails, phones, addresses and memberships go with them).
    #[arg(long, default_value_t = 0.5, value_parser = percent)]
    deleted_percent: f64,
}

fn percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=10.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage from 0 to 10")),
    }
}

/// What one sync did, from its `--stats-json`.
struct Figures {
    stats: Value,
    seconds: f64,
}

impl Figures {
    fn requests(&self, entity: &str) -> u64 {
        self.stats["entities"][entity]["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.stats["requests"].as_u64().unwrap_or(0)
    }
}

fn sync(exe: &Path, db: &str, url: &str, kind: &str, stats: &Path) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let status = Process::new(exe)
        .args([
            "sync",
            "--db",
            db,
            "--base-url",
            url,
            "--connection",
            "bench",
        ])
        .args(["--rate-limit", "off", "--kind", kind, "--stats-json"])
        .arg(stats)
        .env("TRIBUTARY_TOKEN", "sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run the sync")?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the {kind} sync failed ({status})");
    }
    let stats: Value = serde_json::from_slice(&std::fs::read(stats)?)?;
    Ok(Figures { stats, seconds })
}

/// Changes `share` of the records of `kind` (evenly spread), each by one
/// attribute.
fn change(
    sim: &Simulator,
    kind: ResourceKind,
    attribute: &str,
    share: f64,
) -> anyhow::Result<usize> {
    let count = sim.count(kind);
    let n = ((count as f64) * share / 100.0).round() as usize;
    let step = (count / n.max(1)).max(1);
    for i in 0..n {
        let id = sim.ids(kind, i * step, 1)[0];
        sim.update(
            kind,
            id,
            &json!({"attributes": {attribute: format!("changed {i}")}}),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(n)
}

const ENTITIES: [&str; 11] = [
    "Campus",
    "Person",
    "Household",
    "HouseholdMembership",
    "Email",
    "PhoneNumber",
    "Address",
    "GroupType",
    "Group",
    "Membership",
    "Event",
];

pub async fn keep_current(args: KeepCurrentArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let handle = tributary_sim::serve(
        SimConfig {
            seed: 3,
            people: args.people,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start the simulator")?;
    let sim = handle.simulator();
    let url = handle.base_url();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db").display().to_string();
    let stats = dir.path().join("stats.json");

    let full = sync(&exe, &db, &url, "full", &stats)?;
    super::bench_client::compare(&db, &sim).await?;

    let share = args.changed_percent;
    let mut changed = 0;
    changed += change(&sim, ResourceKind::Person, "nickname", share)?;
    changed += change(&sim, ResourceKind::Household, "name", share)?;
    changed += change(&sim, ResourceKind::Email, "location", share)?;
    changed += change(&sim, ResourceKind::PhoneNumber, "location", share)?;
    changed += change(&sim, ResourceKind::Address, "city", share)?;
    changed += change(&sim, ResourceKind::Group, "schedule", share)?;
    changed += change(&sim, ResourceKind::Event, "name", share)?;
    let delta = sync(&exe, &db, &url, "delta", &stats)?;
    let compared = super::bench_client::compare(&db, &sim).await?;

    let leavers =
        ((sim.count(ResourceKind::Person) as f64) * args.deleted_percent / 100.0).round() as usize;
    let step = (sim.count(ResourceKind::Person) / leavers.max(1)).max(1);
    let gone: Vec<u64> = (0..leavers)
        .map(|i| sim.ids(ResourceKind::Person, i * step, 1)[0])
        .collect();
    for id in gone {
        sim.delete(ResourceKind::Person, id)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let reconcile = sync(&exe, &db, &url, "reconcile", &stats)?;
    super::bench_client::compare(&db, &sim).await?;
    let deleted = reconcile.stats["deleted"].as_i64().unwrap_or(0);

    crate::outln!(
        "{} people; {} records changed ({}% of each entity but memberships and group types); {} people left ({}%)\n",
        thousands(args.people as i64),
        thousands(changed as i64),
        args.changed_percent,
        thousands(leavers as i64),
        args.deleted_percent
    )?;
    crate::outln!(
        "| entity | full: requests | delta: requests | delta ÷ full | reconcile: requests |"
    )?;
    crate::outln!("|---|---:|---:|---:|---:|")?;
    for entity in ENTITIES {
        let (f, d, r) = (
            full.requests(entity),
            delta.requests(entity),
            reconcile.requests(entity),
        );
        crate::outln!(
            "| {entity} | {} | {} | {:.1}% | {} |",
            thousands(f as i64),
            thousands(d as i64),
            d as f64 * 100.0 / f.max(1) as f64,
            thousands(r as i64)
        )?;
    }
    let (f, d, r) = (full.total(), delta.total(), reconcile.total());
    crate::outln!(
        "| **all** | **{}** | **{}** | **{:.1}%** | **{}** |\n",
        thousands(f as i64),
        thousands(d as i64),
        d as f64 * 100.0 / f.max(1) as f64,
        thousands(r as i64)
    )?;
    // PCO allows 100 requests per 20 s: a sync's floor is requests / 5 s.
    let at_limit = |requests: u64| format!("{:.1} min", requests as f64 / 5.0 / 60.0);
    crate::outln!("| sync | wall time here (no rate limit) | at PCO's limit (requests ÷ 5/s) |")?;
    crate::outln!("|---|---:|---:|")?;
    crate::outln!("| full | {:.1} s | {} |", full.seconds, at_limit(f))?;
    crate::outln!("| delta | {:.1} s | {} |", delta.seconds, at_limit(d))?;
    crate::outln!(
        "| reconcile ({} deleted) | {:.1} s | {} |",
        thousands(deleted),
        reconcile.seconds,
        at_limit(r)
    )?;
    crate::outln!(
        "\nAfter the delta the store equals the source ({} records compared); after the reconciliation its live records do.",
        thousands(compared as i64)
    )?;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
