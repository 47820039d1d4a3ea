//! `tributary bench full-sync`: end-to-end throughput and memory; `bench
//! resume`: what a `kill -9` costs. (`bench faults` and `bench rate-limit`
//! live in `bench_client.rs`.)
//!
//! The simulator and the sync each run as their own process (the real
//! binary), so the sync's peak RSS is its own and the simulator gets its own
//! core; PostgreSQL is a throwaway durable server started for the run (or a
//! URL you give).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as Process, ExitCode, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A full sync of simulated people into SQLite and/or PostgreSQL.
    FullSync(FullSyncArgs),
    /// How much a `kill -9` costs: API requests of a full sync killed and
    /// resumed several times, against the same sync uninterrupted (SQLite).
    Resume(ResumeArgs),
    /// A full sync through injected 429s, 5xx, timeouts, resets, garbled
    /// bodies and expiring OAuth2 tokens; checks the store equals the source.
    Faults(super::bench_client::FaultsArgs),
    /// A full sync under the simulator's real rate limit (100 requests per
    /// 20 s): budget efficiency, records/s and 429s met.
    RateLimit(super::bench_client::RateLimitArgs),
    /// Staying current: a full sync, then a delta after a share of the
    /// records changed, then a reconciliation after some people left —
    /// requests per entity and wall time, the store checked against the
    /// source after each.
    KeepCurrent(super::bench_current::KeepCurrentArgs),
    /// Webhook ingest: signed deliveries POSTed to `tributary serve` on
    /// loopback, many at once — deliveries/s, acknowledgement latency, and
    /// every acknowledged delivery found in the inbox.
    Webhooks(super::bench_webhooks::WebhooksArgs),
    /// The change feed: a full sync with and without `serve` feeding many
    /// SSE and WebSocket subscribers — the sync's records/s both ways,
    /// changes delivered per second, commit → subscriber latency.
    Feed(super::bench_feed::FeedArgs),
    /// The records API and search: a client pages `GET /v1/records` from
    /// `serve` over a synced store, start to end, and sends searches —
    /// pages/s, records/s, searches/s and search latency.
    Records(super::bench_records::RecordsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// People in the simulated account.
    #[arg(long, default_value_t = 20_000, value_parser = super::people(1))]
    people: usize,
    /// How many times the sync is killed (spread evenly over its duration).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    kills: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// SQLite file in a temporary directory.
    Sqlite,
    /// PostgreSQL (`--pg-url`, or a throwaway server in a build with the
    /// `throwaway-pg` feature).
    Postgres,
    /// Both, one after the other.
    Both,
}

#[derive(Debug, clap::Args)]
pub struct FullSyncArgs {
    /// People in the simulated account; repeat for a series (e.g. --people 10000 --people 100000).
    #[arg(long, default_values_t = [100_000usize], value_parser = super::people(1))]
    people: Vec<usize>,
    /// Which store(s).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// The PostgreSQL database to sync into (an empty one; each run uses a
    /// connection of its own). Without it, a build with the `throwaway-pg`
    /// feature starts a throwaway server; the shipped binary refuses.
    #[arg(long)]
    pg_url: Option<String>,
    /// Syncs per dataset and backend, each into a fresh database; the row
    /// shown is the median run (by records/s), with the range of all runs.
    /// The machine is shared: one run can be off by a tenth either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=25))]
    runs: u32,
    /// Sync only these entities (comma-separated), e.g. `Person` for one
    /// entity's own pipeline.
    #[arg(long, value_delimiter = ',')]
    entities: Option<Vec<String>>,
    /// Milliseconds the simulator waits before answering each request (a
    /// real API's round trip: PCO's is 100–300 ms).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    latency_ms: u64,
    /// Another `tributary` binary (an earlier build) to run against: each
    /// run syncs with both, in turns, against the same simulator, and the
    /// table shows both and the ratio.
    #[arg(long)]
    against: Option<std::path::PathBuf>,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim(exe: &Path, people: usize, latency_ms: u64) -> anyhow::Result<(Killed, String)> {
    let mut child = Process::new(exe)
        .args([
            "sim",
            "pco",
            "--people",
            &people.to_string(),
            "--seed",
            "42",
            "--rate-limit",
            "off",
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the simulator")?;
    let stdout = child.stdout.take().context("no simulator stdout")?;
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().to_owned();
    if !url.starts_with("http://") {
        bail!("the simulator did not print its URL (got `{url}`)");
    }
    Ok((child, url))
}

/// A throwaway *durable* PostgreSQL server (`fsync=on`,
/// `shared_buffers=256MB`) for the benchmark, stopped when dropped.
#[cfg(feature = "throwaway-pg")]
pub(super) struct Throwaway(tributary_testkit::PgServer);

#[cfg(feature = "throwaway-pg")]
impl Throwaway {
    /// A fresh database on it.
    pub(super) fn database(&self) -> anyhow::Result<String> {
        Ok(self.0.create_database("bench")?)
    }
}

#[cfg(feature = "throwaway-pg")]
pub(super) async fn throwaway_postgres() -> anyhow::Result<Throwaway> {
    let server = tokio::task::spawn_blocking(|| {
        tributary_testkit::PgServer::start_with(
            tributary_testkit::PgOptions::new()
                .durable(true)
                .shared_buffers("256MB"),
        )
    })
    .await??;
    Ok(Throwaway(server))
}

/// Without the `throwaway-pg` feature the binary starts no server of its
/// own: the benchmark needs `--pg-url`.
#[cfg(not(feature = "throwaway-pg"))]
pub(super) struct Throwaway;

#[cfg(not(feature = "throwaway-pg"))]
impl Throwaway {
    pub(super) fn database(&self) -> anyhow::Result<String> {
        unreachable!("never made without the throwaway-pg feature")
    }
}

#[cfg(not(feature = "throwaway-pg"))]
pub(super) async fn throwaway_postgres() -> anyhow::Result<Throwaway> {
    anyhow::bail!(
        "the PostgreSQL benchmark needs a database: pass --pg-url postgres://... (an empty \
         database), or build with `--features throwaway-pg` to have it start a throwaway \
         server of its own"
    )
}

/// Bytes a SQLite sync has on disk: the database, its write-ahead log and
/// shared memory, and its spool.
fn disk_use(db: &str) -> u64 {
    fn size(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| size(&e.path())).sum())
                .unwrap_or(0),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        }
    }
    ["", "-wal", "-shm", ".spool"]
        .iter()
        .map(|suffix| size(Path::new(&format!("{db}{suffix}"))))
        .sum()
}

/// Runs one sync; for a SQLite file its stats gain `peak_disk_ratio`, the
/// most disk the sync used at once (sampled every 20 ms) over the final
/// database's size.
fn sync(
    exe: &Path,
    db: &str,
    url: &str,
    connection: &str,
    entities: Option<&[String]>,
    stats: &Path,
) -> anyhow::Result<Value> {
    let sqlite = !db.starts_with("postgres");
    let mut command = Process::new(exe);
    command
        .args([
            "sync",
            "--db",
            db,
            "--base-url",
            url,
            "--connection",
            connection,
            // The benchmark's simulator has no rate limit.
            "--rate-limit",
            "off",
        ])
        .arg("--stats-json")
        .arg(stats)
        .env("TRIBUTARY_TOKEN", "sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(entities) = entities {
        command.arg("--entities").arg(entities.join(","));
    }
    let mut child = command.spawn().context("cannot run the sync")?;
    let mut peak = 0;
    let status = loop {
        if sqlite {
            peak = peak.max(disk_use(db));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if !status.success() {
        bail!("the sync failed ({status}); run it by hand to see why");
    }
    let mut stats: Value = serde_json::from_slice(&std::fs::read(stats)?)?;
    if sqlite {
        let database = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0).max(1);
        stats["peak_disk_bytes"] = peak.into();
        stats["database_bytes"] = database.into();
        stats["peak_disk_ratio"] = (peak as f64 / database as f64).into();
    }
    Ok(stats)
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let args = match command {
        Command::FullSync(args) => args,
        Command::Resume(args) => return resume(args).await,
        Command::Faults(args) => return super::bench_client::faults(args).await,
        Command::RateLimit(args) => return super::bench_client::rate_limit(args).await,
        Command::KeepCurrent(args) => return super::bench_current::keep_current(args).await,
        Command::Webhooks(args) => return super::bench_webhooks::webhooks(args).await,
        Command::Feed(args) => return super::bench_feed::feed(args).await,
        Command::Records(args) => return super::bench_records::records(args).await,
    };
    let exe = std::env::current_exe()?;
    // The binaries to sync with: this one, and the one to run against.
    let mut binaries = vec![("this", exe.clone())];
    if let Some(against) = &args.against {
        if !against.is_file() {
            bail!(
                "--against {}: no such file; give the path of another tributary binary",
                against.display()
            );
        }
        binaries.insert(0, ("against", against.clone()));
    }
    let backends: Vec<Backend> = match args.backend {
        Backend::Both => vec![Backend::Sqlite, Backend::Postgres],
        one => vec![one],
    };
    let pg = if backends.contains(&Backend::Postgres) && args.pg_url.is_none() {
        Some(throwaway_postgres().await?)
    } else {
        None
    };
    let compared = binaries.len() > 1;
    crate::outln!(
        "| {}backend | people | records | pages | seconds | records/s | pages/s | peak RSS (MiB) | peak disk ÷ database | runs (records/s) |\n|{}---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        if compared { "binary | " } else { "" },
        if compared { "---|" } else { "" },
    )?;
    let rate = |stats: &Value| stats["records_per_sec"].as_f64().unwrap_or_default();
    for &people in &args.people {
        let (_sim, url) = start_sim(&exe, people, args.latency_ms)?;
        for &backend in &backends {
            // Per binary, its runs; the binaries take turns, each going
            // first in every other run.
            let mut runs: Vec<Vec<Value>> = vec![Vec::new(); binaries.len()];
            for run in 1..=args.runs {
                let mut order: Vec<usize> = (0..binaries.len()).collect();
                if run % 2 == 0 {
                    order.reverse();
                }
                for i in order {
                    let (label, binary) = &binaries[i];
                    let dir = tempfile::tempdir()?;
                    let db = match backend {
                        Backend::Sqlite => dir.path().join("bench.db").display().to_string(),
                        _ => match (&args.pg_url, &pg) {
                            (Some(url), _) => url.clone(),
                            (None, Some(server)) => server.database()?,
                            (None, None) => unreachable!("a server is started when none is given"),
                        },
                    };
                    // A database given by URL is shared by the runs: each
                    // syncs a connection of its own, so each starts from
                    // nothing.
                    let connection = format!("bench-{label}-{run}");
                    runs[i].push(sync(
                        binary,
                        &db,
                        &url,
                        &connection,
                        args.entities.as_deref(),
                        &dir.path().join("stats.json"),
                    )?);
                }
            }
            for (i, (label, _)) in binaries.iter().enumerate() {
                let mut sorted = runs[i].clone();
                sorted.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
                let row = table_row(backend, people, &sorted)?;
                match compared {
                    true => crate::outln!("| {label} {row}")?,
                    false => crate::outln!("{row}")?,
                }
            }
            if compared {
                // Each run's pair: this binary's records/s over the other's.
                let mut ratios: Vec<f64> = runs[1]
                    .iter()
                    .zip(&runs[0])
                    .map(|(this, against)| rate(this) / rate(against).max(f64::MIN_POSITIVE))
                    .collect();
                ratios.sort_by(f64::total_cmp);
                crate::outln!(
                    "\nthis ÷ against, records/s of each run's pair: median {:.2} (range {:.2}–{:.2})\n",
                    ratios[ratios.len() / 2],
                    ratios[0],
                    ratios[ratios.len() - 1]
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One table row (from `| backend` on) for `runs`, sorted by records/s:
/// the median run, with the range of all.
fn table_row(backend: Backend, people: usize, runs: &[Value]) -> anyhow::Result<String> {
    let rate = |stats: &Value| stats["records_per_sec"].as_f64().unwrap_or_default();
    let range = match runs.len() {
        0 => bail!("no runs"),
        1 => "1".to_owned(),
        n => format!(
            "{n}: {}–{}",
            super::thousands(rate(&runs[0]) as i64),
            super::thousands(rate(&runs[n - 1]) as i64)
        ),
    };
    let stats = &runs[runs.len() / 2];
    let f = |k: &str| stats[k].as_f64().unwrap_or_default();
    let disk = stats["peak_disk_ratio"]
        .as_f64()
        .map_or("—".to_owned(), |ratio| format!("{ratio:.2}"));
    Ok(format!(
        "| {} | {} | {} | {} | {:.1} | {} | {:.0} | {:.1} | {disk} | {range} |",
        match backend {
            Backend::Sqlite => "SQLite",
            _ => "PostgreSQL",
        },
        super::thousands(people as i64),
        super::thousands(f("records") as i64),
        super::thousands(f("pages") as i64),
        f("elapsed_secs"),
        super::thousands(f("records_per_sec") as i64),
        f("pages_per_sec"),
        f("peak_rss_kib") / 1024.0,
    ))
}

async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let sim = tributary_sim::serve(
        tributary_sim::SimConfig {
            people: args.people,
            ..tributary_sim::SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let url = sim.base_url();
    let requests = || sim.simulator().stats().total;
    let dir = tempfile::tempdir()?;

    // Uninterrupted.
    let before = requests();
    let clean_db = dir.path().join("clean.db").display().to_string();
    let clean = sync(
        &exe,
        &clean_db,
        &url,
        "bench",
        None,
        &dir.path().join("clean.json"),
    )?;
    let clean_requests = requests() - before;
    let clean_secs = clean["elapsed_secs"].as_f64().unwrap_or(1.0);

    // Killed `kills` times at evenly spread moments, then run to the end.
    let before = requests();
    let db = dir.path().join("killed.db").display().to_string();
    let slice = std::time::Duration::from_secs_f64(clean_secs / f64::from(args.kills + 1));
    let mut kills = 0;
    for _ in 0..args.kills {
        let mut child = Process::new(&exe)
            .args([
                "sync",
                "--db",
                &db,
                "--base-url",
                &url,
                "--connection",
                "bench",
                // The benchmark's simulator has no rate limit.
                "--rate-limit",
                "off",
            ])
            .env("TRIBUTARY_TOKEN", "sim-token")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        tokio::time::sleep(slice).await;
        if child.try_wait()?.is_none() {
            child.kill()?; // SIGKILL
            kills += 1;
        }
        child.wait()?;
    }
    let resumed = sync(
        &exe,
        &db,
        &url,
        "bench",
        None,
        &dir.path().join("killed.json"),
    )?;
    let killed_requests = requests() - before;
    let store = tributary_store::open(&db).await?;
    let runs = store.runs(None, 10).await?;
    sim.shutdown().await;

    let extra = killed_requests.saturating_sub(clean_requests);
    crate::outln!(
        "| people | kills | runs | requests, uninterrupted | requests, killed and resumed | extra requests | extra per kill |"
    )?;
    crate::outln!("|---:|---:|---:|---:|---:|---:|---:|")?;
    crate::outln!(
        "| {} | {} | {} | {} | {} | {} | {:.1} |",
        super::thousands(args.people as i64),
        kills,
        runs.len(),
        super::thousands(clean_requests as i64),
        super::thousands(killed_requests as i64),
        super::thousands(extra as i64),
        extra as f64 / f64::from(kills.max(1)),
    )?;
    if resumed["records"] != clean["records"] || runs.len() != 1 {
        bail!("the resumed sync differs from the uninterrupted one: {resumed} vs {clean}");
    }
    Ok(ExitCode::SUCCESS)
}
