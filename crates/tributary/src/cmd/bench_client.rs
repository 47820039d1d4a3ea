//! `tributary bench faults` and `tributary bench rate-limit`: the resilient
//! API client under fire.
//!
//! Both run the simulator in this process and the sync as a child process
//! (the real binary, as a user runs it), then read the simulator's own
//! counters: what it served, which faults it injected, how many requests
//! its rate limit refused.

use std::path::Path;
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tributary_sim::{Faults, RateLimit, SimConfig, Simulator};
use tributary_store::RecordQuery;

use super::thousands;

#[derive(Debug, clap::Args)]
pub struct FaultsArgs {
    /// People in the simulated account.
    #[arg(long, default_value_t = 20_000, value_parser = super::people(1))]
    people: usize,
    /// Share of requests answered 429 (with Retry-After: 1).
    #[arg(long, default_value_t = 0.05, value_parser = super::probability)]
    fault_429: f64,
    /// Share answered 500/502 (HTML)/503/504.
    #[arg(long, default_value_t = 0.05, value_parser = super::probability)]
    fault_5xx: f64,
    /// Share that hang past the client's timeout.
    #[arg(long, default_value_t = 0.01, value_parser = super::probability)]
    fault_timeout: f64,
    /// Share whose connection breaks mid-body.
    #[arg(long, default_value_t = 0.01, value_parser = super::probability)]
    fault_reset: f64,
    /// Share with a truncated, invalid JSON body.
    #[arg(long, default_value_t = 0.01, value_parser = super::probability)]
    fault_malformed: f64,
    /// OAuth2 access-token lifetime, in seconds (shorter than the sync).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    token_ttl: u64,
    /// The client's per-request timeout, in seconds.
    #[arg(long, default_value_t = 1.0, value_parser = super::sync::parse_timeout)]
    request_timeout: f64,
}

#[derive(Debug, clap::Args)]
pub struct RateLimitArgs {
    /// People in the simulated account.
    #[arg(long, default_value_t = 12_000, value_parser = super::people(1))]
    people: usize,
    /// Requests per window the simulator allows.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// The window, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    period: u64,
}

/// The entities listed a full page (100) at a time; the per-household
/// memberships (a few records per request) are left out so that the figure
/// compares with the 100-records-per-request ceiling.
const FULL_PAGE_ENTITIES: &str = "Campus,Person,Email,PhoneNumber,Address,Household";

fn sync_child(exe: &Path, db: &str, args: &[&str], key: &str, stats: &Path) -> Process {
    let mut child = Process::new(exe);
    child
        .args(["sync", "--db", db])
        .args(args)
        .arg("--stats-json")
        .arg(stats)
        .env_remove("TRIBUTARY_TOKEN")
        .env_remove("TRIBUTARY_SECRET_KEY_FILE")
        .env("TRIBUTARY_SECRET_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    child
}

/// Every live record in the store equals the simulator's copy, and nothing
/// is missing or extra. Returns the number of records compared.
pub(super) async fn compare(db: &str, sim: &Simulator) -> anyhow::Result<usize> {
    use std::collections::BTreeMap;
    let mut expected: BTreeMap<(String, String), (Value, Value)> = sim
        .dump(None)
        .into_iter()
        .map(|v| {
            (
                (
                    v["type"].as_str().unwrap_or_default().to_owned(),
                    v["id"].as_str().unwrap_or_default().to_owned(),
                ),
                (v["attributes"].clone(), v["relationships"].clone()),
            )
        })
        .collect();
    let store = tributary_store::open(db).await?;
    let mut query = RecordQuery {
        limit: 5_000,
        ..RecordQuery::default()
    };
    let mut compared = 0;
    loop {
        let page = store.records(&query).await?;
        let Some(last) = page.last() else { break };
        query.after_id = last.id;
        for record in page {
            let key = (record.entity.clone(), record.external_id.clone());
            let Some((attributes, relationships)) = expected.remove(&key) else {
                bail!("{key:?} is stored but not served by the source");
            };
            let raw_relationships = record
                .raw
                .get("relationships")
                .cloned()
                .unwrap_or(Value::Null);
            if record.raw.get("attributes") != Some(&attributes)
                || raw_relationships != relationships
            {
                bail!("{key:?} differs from the source");
            }
            compared += 1;
        }
    }
    if let Some((key, _)) = expected.into_iter().next() {
        bail!("{key:?} is served by the source but missing from the store");
    }
    Ok(compared)
}

/// A full sync of a simulator that injects every kind of fault, through
/// OAuth2 tokens that expire during the sync; the store must equal the
/// source exactly.
pub async fn faults(args: FaultsArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let config = SimConfig {
        seed: 7,
        people: args.people,
        token_ttl: Duration::from_secs(args.token_ttl.max(1)),
        faults: Faults {
            p429: args.fault_429,
            p5xx: args.fault_5xx,
            timeout: args.fault_timeout,
            reset: args.fault_reset,
            malformed: args.fault_malformed,
            hang: Duration::from_secs_f64(args.request_timeout * 3.0),
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let sim = tributary_sim::serve(config, "127.0.0.1:0".parse()?).await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("faults.db").display().to_string();
    let key = tributary_secrets::SecretKey::generate().to_base64();
    let grant = sim.simulator().issue_grant();
    let config = sim.simulator().config().clone();
    let status = Process::new(&exe)
        .args([
            "connections",
            "add",
            "bench",
            "--db",
            &db,
            "--auth",
            "oauth2",
        ])
        .args(["--client-id", &config.oauth_client_id])
        .args(["--base-url", &sim.base_url()])
        .env("TRIBUTARY_SECRET_KEY", key.as_str())
        .env("TRIBUTARY_CLIENT_SECRET", &config.oauth_client_secret)
        .env("TRIBUTARY_REFRESH_TOKEN", &grant.refresh_token)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("cannot add the connection ({status})");
    }
    let stats_path = dir.path().join("stats.json");
    let timeout = args.request_timeout.to_string();
    let status = sync_child(
        &exe,
        &db,
        &[
            "--connection",
            "bench",
            "--rate-limit",
            "off",
            "--request-timeout",
            &timeout,
        ],
        &key,
        &stats_path,
    )
    .status()?;
    if !status.success() {
        bail!("the sync failed under faults ({status}); run it by hand to see why");
    }
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats_path)?)?;
    let compared = compare(&db, &sim.simulator()).await?;
    let served = sim.simulator().stats();
    sim.shutdown().await;

    let f = served.faults;
    let secs = stats["elapsed_secs"].as_f64().unwrap_or_default();
    crate::outln!(
        "| people | records | equal to source | API requests | 429 | 5xx | timeouts | resets | malformed | token refreshes | retries | seconds | records/s |"
    )?;
    crate::outln!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    crate::outln!(
        "| {} | {} | yes, record by record | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} |",
        thousands(args.people as i64),
        thousands(compared as i64),
        thousands(served.total as i64),
        f.too_many_requests,
        f.server_error,
        f.timeout,
        f.reset,
        f.malformed,
        served.oauth.refreshes,
        stats["retries"].as_u64().unwrap_or_default(),
        secs,
        compared as f64 / secs.max(1e-9),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A full sync under the simulator's real rate limit: how close the client
/// runs to the ceiling, and how many 429s it meets.
pub async fn rate_limit(args: RateLimitArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let period = Duration::from_secs(args.period.max(1));
    let config = SimConfig {
        seed: 7,
        people: args.people,
        rate_limit: Some(RateLimit {
            limit: args.limit,
            period,
            ..RateLimit::pco()
        }),
        ..SimConfig::default()
    };
    let sim = tributary_sim::serve(config, "127.0.0.1:0".parse()?).await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("limited.db").display().to_string();
    let stats_path = dir.path().join("stats.json");
    let started = Instant::now();
    let status = sync_child(
        &exe,
        &db,
        &[
            "--connection",
            "bench",
            "--base-url",
            &sim.base_url(),
            "--rate-limit",
            "auto",
            "--entities",
            FULL_PAGE_ENTITIES,
        ],
        "",
        &stats_path,
    )
    .env("TRIBUTARY_TOKEN", &sim.simulator().config().token)
    .status()
    .context("cannot run the sync")?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the sync failed ({status})");
    }
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats_path)?)?;
    let served = sim.simulator().stats();
    sim.shutdown().await;

    let requests = served.total;
    let records = stats["records"].as_f64().unwrap_or_default();
    let secs = stats["elapsed_secs"].as_f64().unwrap_or(wall);
    let per_window = f64::from(args.limit);
    // The limit forces this long at best: the last request's window can
    // open no sooner than one period per full window before it.
    let forced = ((requests.saturating_sub(1)) as f64 / per_window).floor() * period.as_secs_f64();
    let ceiling = per_window * 100.0 / period.as_secs_f64();
    crate::outln!(
        "| people | records | API requests | records/request | 429s | seconds | time the limit forces | budget efficiency | records/s | ceiling (records/s) |"
    )?;
    crate::outln!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    crate::outln!(
        "| {} | {} | {} | {:.1} | {} | {:.1} | {:.0} | {:.1}% | {:.0} | {:.0} |",
        thousands(args.people as i64),
        thousands(records as i64),
        thousands(requests as i64),
        records / requests.max(1) as f64,
        served.rate_limited,
        secs,
        forced,
        100.0 * forced / secs.max(1e-9),
        records / secs.max(1e-9),
        ceiling,
    )?;
    Ok(ExitCode::SUCCESS)
}
