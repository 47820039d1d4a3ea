//! `tributary bench records`: the records API and search as a client sees
//! them. A full sync of a simulated PCO account (`tributary sync`, its own
//! process) into a fresh store, then `tributary serve` (its own process)
//! over it, and a client in this process that pages `GET /v1/records`
//! from the start to the end, `--runs` times, then sends `--searches`
//! searches (`GET /v1/search`, one at a time, for words taken from the
//! records). Reported: pages/s and records/s, searches/s and search
//! latency — the median run with the range of all runs. Every run must
//! page exactly the store's records.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tributary_secrets::SecretKey;
use tributary_sim::SimConfig;

use super::bench::{Backend, throwaway_postgres};
use super::bench_feed::{read_token, records_in, sync};
use super::bench_webhooks::{millis_at, start_serve};

#[derive(Debug, clap::Args)]
pub struct RecordsArgs {
    /// People in the simulated account (with their households, emails,
    /// phone numbers and addresses).
    #[arg(long, default_value_t = 10_000, value_parser = super::people(1))]
    people: usize,
    /// Records per page (1–1,000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    limit: u32,
    /// Times the client pages through every record (and sends its
    /// searches); the median run is shown with the range.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=25))]
    runs: u32,
    /// Searches per run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    searches: u32,
    /// Which store(s).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// The PostgreSQL database to use (an empty one). Without it, a build
    /// with the `throwaway-pg` feature starts a throwaway server.
    #[arg(long)]
    pg_url: Option<String>,
}

/// One run's figures.
struct Run {
    pages: u64,
    records: u64,
    paging_secs: f64,
    searches: u64,
    search_secs: f64,
    latencies: Vec<Duration>,
}

pub async fn records(args: RecordsArgs) -> anyhow::Result<ExitCode> {
    tributary_source::install_tls_provider();
    let exe = std::env::current_exe()?;
    let sim = tributary_sim::serve(
        SimConfig {
            seed: 11,
            people: args.people,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start the simulator")?;
    let backends: Vec<Backend> = match args.backend {
        Backend::Both => vec![Backend::Sqlite, Backend::Postgres],
        one => vec![one],
    };
    let pg = if backends.contains(&Backend::Postgres) && args.pg_url.is_none() {
        Some(throwaway_postgres().await?)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    crate::outln!(
        "| backend | people | records | page size | pages | pages/s | records/s | searches/s | search p50 / p99 (ms) | runs (pages/s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for backend in backends {
        let db = match backend {
            Backend::Postgres => match (&args.pg_url, &pg) {
                (Some(url), _) => url.clone(),
                (None, Some(pg)) => pg.database()?,
                (None, None) => unreachable!("a throwaway server was started"),
            },
            _ => dir.path().join("records.db").display().to_string(),
        };
        sync(&exe, &db, &sim.base_url(), "full")?;
        let expected = records_in(&db).await? as u64;
        let key = SecretKey::generate();
        let token = read_token(&db).await?;
        let (_serve, base) = start_serve(&exe, &db, &key).await?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()?;
        wait_for_index(&client, &base, &db).await?;
        let mut runs = Vec::new();
        let mut words = Vec::new();
        for _ in 0..args.runs {
            let run = run_once(&client, &base, &args, &mut words).await?;
            if run.records != expected {
                bail!(
                    "the client paged {} records; the store holds {expected}",
                    run.records
                );
            }
            runs.push(run);
        }
        let rate = |r: &Run| r.pages as f64 / r.paging_secs;
        runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        let median = &runs[runs.len() / 2];
        let mut latencies: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.clone()).collect();
        latencies.sort();
        let searches_per_sec = {
            let mut all: Vec<f64> = runs
                .iter()
                .map(|r| r.searches as f64 / r.search_secs.max(1e-9))
                .collect();
            all.sort_by(f64::total_cmp);
            all[all.len() / 2]
        };
        crate::outln!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {} |",
            match backend {
                Backend::Postgres => "PostgreSQL",
                _ => "SQLite",
            },
            super::thousands(args.people as i64),
            super::thousands(expected as i64),
            args.limit,
            super::thousands(median.pages as i64),
            super::thousands(rate(median) as i64),
            super::thousands((median.records as f64 / median.paging_secs) as i64),
            super::thousands(searches_per_sec as i64),
            millis_at(&latencies, 0.5),
            millis_at(&latencies, 0.99),
            runs.iter()
                .map(|r| super::thousands(rate(r) as i64))
                .collect::<Vec<_>>()
                .join(", "),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the search index has caught up with the store's feed.
async fn wait_for_index(client: &reqwest::Client, base: &str, db: &str) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(db).await?;
    let head = store.feed_head().await?;
    store.close().await;
    let started = Instant::now();
    loop {
        let answer: Value = client
            .get(format!("{base}/v1/search?q=a&limit=1"))
            .send()
            .await?
            .json()
            .await?;
        if answer["indexed_through"].as_i64().unwrap_or(0) >= head {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the search index did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pages through every record, then sends the searches (words gathered
/// from the records the first time).
async fn run_once(
    client: &reqwest::Client,
    base: &str,
    args: &RecordsArgs,
    words: &mut Vec<String>,
) -> anyhow::Result<Run> {
    let gather = words.is_empty();
    let mut cursor = 0;
    let mut pages = 0;
    let mut records = 0;
    let started = Instant::now();
    loop {
        let page: Value = client
            .get(format!(
                "{base}/v1/records?cursor={cursor}&limit={}",
                args.limit
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        pages += 1;
        let list = page["records"].as_array().context("no records")?;
        records += list.len() as u64;
        if gather && words.len() < 1_000 {
            // A word of each record's first text value.
            words.extend(list.iter().filter_map(|r| {
                r["canonical"]
                    .as_object()?
                    .values()
                    .find_map(|v| v.as_str())
                    .and_then(|s| tributary_store::search_words(s).into_iter().next())
            }));
        }
        cursor = page["next_cursor"].as_i64().context("no next_cursor")?;
        if cursor >= page["head"].as_i64().context("no head")? {
            break;
        }
    }
    let paging_secs = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let started = Instant::now();
    if !words.is_empty() {
        for n in 0..args.searches as usize {
            let word = &words[n * 7919 % words.len()];
            let sent = Instant::now();
            let answer: Value = client
                .get(format!("{base}/v1/search"))
                .query(&[("q", word.as_str()), ("limit", "20")])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            latencies.push(sent.elapsed());
            if answer["results"].as_array().is_none_or(|r| r.is_empty()) {
                bail!("the search for `{word}` (a word of a record) found nothing");
            }
        }
    }
    Ok(Run {
        pages,
        records,
        paging_secs,
        searches: latencies.len() as u64,
        search_secs: started.elapsed().as_secs_f64(),
        latencies,
    })
}
