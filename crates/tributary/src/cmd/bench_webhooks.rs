//! `tributary bench webhooks`: webhook ingest as a sender sees it. The real
//! binary serves (`tributary serve`, its own process) a connection with a
//! webhook secret; this process signs PCO deliveries beforehand, then POSTs
//! them over loopback, `--concurrency` at once, timing each from send to
//! acknowledgement. Afterwards the inbox must hold every acknowledged
//! delivery once.

use std::process::{Command as Process, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tributary_core::{Clock as _, SystemClock};
use tributary_secrets::{SecretKey, seal_webhook_secret};
use tributary_store::{DeliveryQuery, NewConnection};

use super::bench::{Backend, throwaway_postgres};

#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    /// Distinct deliveries sent.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    deliveries: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Share of deliveries sent a second time (a sender's retry), which
    /// must be acknowledged and not stored again.
    #[arg(long, default_value_t = 0.1, value_parser = super::probability)]
    duplicates: f64,
    /// Which store(s).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// The PostgreSQL database to use (else a throwaway server in a build
    /// with the `throwaway-pg` feature).
    #[arg(long)]
    pg_url: Option<String>,
    /// Then this many changes at a simulated PCO account (`--apply-rate`
    /// a second), each announced by the simulator's webhook and applied by
    /// `serve` (fetch-on-notify, within PCO's request budget): delivery
    /// received → change committed, p50/p99.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    apply: u64,
    /// Changes a second with --apply (PCO's budget is 5 requests a second).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    apply_rate: u64,
}

const SECRET: &str = "bench-webhook-secret";
const EVENT: &str = "people.v2.events.person.updated";

/// A signed PCO delivery: body and `X-PCO-Webhooks-Authenticity`.
fn signed(id: u64) -> (String, String) {
    let payload = serde_json::json!({"data": {"type": "Person", "id": (id % 50_000).to_string(),
        "attributes": {"first_name": "Ann", "last_name": "Example",
        "updated_at": "2026-12-07T10:00:00Z"}}})
    .to_string();
    let body = serde_json::json!({"data": [{"id": format!("bench-{id}"), "type": "EventDelivery",
        "attributes": {"name": EVENT, "attempt": 1, "payload": payload},
        "relationships": {"organization": {"data": {"type": "Organization", "id": "1"}}}}]})
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    (body, hex::encode(mac.finalize().into_bytes()))
}

pub(super) struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One backend's figures.
struct Figures {
    seconds: f64,
    latencies: Vec<Duration>,
    acknowledged: usize,
    duplicates_answered: u64,
    failed: usize,
    stored: usize,
}

pub async fn webhooks(args: WebhooksArgs) -> anyhow::Result<ExitCode> {
    tributary_source::install_tls_provider();
    let exe = std::env::current_exe()?;
    let backends: Vec<Backend> = match args.backend {
        Backend::Both => vec![Backend::Sqlite, Backend::Postgres],
        one => vec![one],
    };
    let pg = if backends.contains(&Backend::Postgres) && args.pg_url.is_none() {
        Some(throwaway_postgres().await?)
    } else {
        None
    };
    let mut applied: Vec<(Backend, Vec<Duration>)> = Vec::new();
    crate::outln!(
        "| backend | deliveries sent | concurrency | seconds | deliveries/s | ack p50 (ms) | ack p99 (ms) | ack max (ms) | stored | duplicates answered | failed | lost |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for backend in backends {
        let dir = tempfile::tempdir()?;
        let db = match backend {
            Backend::Sqlite => dir.path().join("bench.db").display().to_string(),
            _ => match (&args.pg_url, &pg) {
                (Some(url), _) => url.clone(),
                (None, Some(server)) => server.database()?,
                (None, None) => unreachable!("a server is started when none is given"),
            },
        };
        let f = run_one(&exe, &db, &args).await?;
        let mut sorted = f.latencies.clone();
        sorted.sort();
        let at = |q| millis_at(&sorted, q);
        let unique = f.acknowledged - f.duplicates_answered as usize;
        crate::outln!(
            "| {} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            match backend {
                Backend::Sqlite => "SQLite",
                _ => "PostgreSQL",
            },
            super::thousands(f.latencies.len() as i64),
            args.concurrency,
            f.seconds,
            super::thousands((f.latencies.len() as f64 / f.seconds) as i64),
            at(0.5),
            at(0.99),
            at(1.0),
            super::thousands(f.stored as i64),
            super::thousands(f.duplicates_answered as i64),
            f.failed,
            unique.saturating_sub(f.stored),
        )?;
        if f.failed > 0 || f.stored != unique {
            bail!(
                "{} requests failed, {} acknowledged deliveries are not in the inbox",
                f.failed,
                unique.saturating_sub(f.stored)
            );
        }
        if args.apply > 0 {
            applied.push((
                backend,
                apply_latency(&exe, &db, args.apply, args.apply_rate).await?,
            ));
        }
    }
    if !applied.is_empty() {
        crate::outln!(
            "\n| backend | changes | applied | delivery → committed p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|---:|---:|"
        )?;
        for (backend, mut latencies) in applied {
            latencies.sort();
            let at = |q| millis_at(&latencies, q);
            crate::outln!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} |",
                match backend {
                    Backend::Sqlite => "SQLite",
                    _ => "PostgreSQL",
                },
                args.apply,
                latencies.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `q` quantile (0–1) of `sorted` durations, in milliseconds (0 if
/// there are none).
pub(super) fn millis_at(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `changes` updates of simulated people, `rate` a second, each delivered by
/// the simulator's webhook to a `serve` of `db` and applied there; the
/// time from each delivery's receipt to its commit.
async fn apply_latency(
    exe: &std::path::Path,
    db: &str,
    changes: u64,
    rate: u64,
) -> anyhow::Result<Vec<Duration>> {
    let people = 1_000usize;
    let sim = tributary_sim::serve(
        tributary_sim::SimConfig {
            people,
            ..tributary_sim::SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let name = format!("bench-apply-{}", SystemClock.now().timestamp_micros());
    let key = SecretKey::generate();
    let store = tributary_store::open(db).await?;
    let connection = store
        .ensure_connection(
            NewConnection {
                name: &name,
                adapter: "pco",
                base_url: &sim.base_url(),
            },
            SystemClock.now(),
        )
        .await?;
    let credentials = tributary_core::Credentials::bearer("sim-token");
    store
        .set_credentials(
            connection.id,
            "bearer",
            &tributary_secrets::seal_credentials(&key, &credentials, &name),
            None,
            SystemClock.now(),
        )
        .await?;
    let (serve, base) = start_serve(exe, db, &key).await?;
    let event = "people.v2.events.person.updated";
    let simulator = sim.simulator();
    let subscription = simulator.subscribe(event, &format!("{base}/webhooks/{name}"));
    store
        .add_webhook_secret(
            connection.id,
            Some(event),
            &seal_webhook_secret(&key, &subscription.authenticity_secret, &name),
            SystemClock.now(),
        )
        .await?;
    let ids = simulator.ids(tributary_sim::ResourceKind::Person, 0, people);
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for n in 0..changes {
        pace.tick().await;
        let id = ids[(n as usize * 7919) % ids.len()];
        simulator.update(
            tributary_sim::ResourceKind::Person,
            id,
            &serde_json::json!({"attributes": {"nickname": format!("change {n}")}}),
        )?;
    }
    // Every delivery applied (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    let latencies = loop {
        let query = DeliveryQuery {
            connection_id: Some(connection.id),
            limit: 100_000,
            ..DeliveryQuery::default()
        };
        let applied: Vec<Duration> = store
            .deliveries(&query)
            .await?
            .iter()
            .filter_map(|d| (d.applied_at? - d.received_at).to_std().ok())
            .collect();
        if applied.len() as u64 >= changes {
            break applied;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {changes} changes applied after two minutes",
                applied.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(serve);
    store.close().await;
    sim.shutdown().await;
    Ok(latencies)
}

/// Starts `tributary serve` of `db` on a free loopback port with `key`;
/// returns it (killed when dropped) and its base URL once it is ready.
pub(super) async fn start_serve(
    exe: &std::path::Path,
    db: &str,
    key: &SecretKey,
) -> anyhow::Result<(Serve, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let serve = Serve(
        Process::new(exe)
            .args([
                "serve",
                "--db",
                db,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("TRIBUTARY_SECRET_KEY", key.to_base64().as_str())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `tributary serve`")?,
    );
    let client = reqwest::Client::new();
    let ready = Instant::now();
    loop {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return Ok((serve, base));
        }
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("`tributary serve` did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_one(exe: &std::path::Path, db: &str, args: &WebhooksArgs) -> anyhow::Result<Figures> {
    // A connection of its own (a given PostgreSQL database may be shared),
    // with one secret sealed under a fresh key.
    let name = format!("bench-webhooks-{}", SystemClock.now().timestamp_micros());
    let key = SecretKey::generate();
    let store = tributary_store::open(db).await?;
    let connection = store
        .ensure_connection(
            NewConnection {
                name: &name,
                adapter: "pco",
                base_url: "http://127.0.0.1:9",
            },
            SystemClock.now(),
        )
        .await?;
    store
        .add_webhook_secret(
            connection.id,
            None,
            &seal_webhook_secret(&key, SECRET, &name),
            SystemClock.now(),
        )
        .await?;

    let (_serve, base) = start_serve(exe, db, &key).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;

    // Signed beforehand (the sender's work); the retries are sent after
    // their first copy, spread through the run.
    let every = match args.duplicates {
        p if p > 0.0 => (1.0 / p).round().max(1.0) as u64,
        _ => 0,
    };
    let mut requests: Vec<(String, String)> = Vec::new();
    for id in 0..args.deliveries {
        requests.push(signed(id));
        if every > 0 && id % every == every - 1 {
            requests.push(signed(id - every / 2));
        }
    }
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let url = Arc::new(format!("{base}/webhooks/{name}"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, requests, next, url) =
            (client.clone(), requests.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut failed, mut duplicates) = (0usize, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, signature)) = requests.get(i) else {
                    break;
                };
                let sent = Instant::now();
                let answer = client
                    .post(url.as_str())
                    .header("Content-Type", "application/json")
                    .header("X-PCO-Webhooks-Authenticity", signature)
                    .body(body.clone())
                    .send()
                    .await;
                let ok = match answer {
                    Ok(answer) if answer.status().is_success() => {
                        let reply: serde_json::Value = answer.json().await.unwrap_or_default();
                        duplicates += reply["duplicates"].as_u64().unwrap_or(0);
                        true
                    }
                    _ => false,
                };
                latencies.push(sent.elapsed());
                if !ok {
                    failed += 1;
                }
            }
            (latencies, failed, duplicates)
        }));
    }
    let mut figures = Figures {
        seconds: 0.0,
        latencies: Vec::with_capacity(requests.len()),
        acknowledged: 0,
        duplicates_answered: 0,
        failed: 0,
        stored: 0,
    };
    for task in tasks {
        let (latencies, failed, duplicates) = task.await?;
        figures.latencies.extend(latencies);
        figures.failed += failed;
        figures.duplicates_answered += duplicates;
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures.acknowledged = figures.latencies.len() - figures.failed;

    // Count the inbox.
    let mut query = DeliveryQuery {
        connection_id: Some(connection.id),
        limit: 100_000,
        ..DeliveryQuery::default()
    };
    loop {
        let page = store.deliveries(&query).await?;
        let Some(last) = page.last() else { break };
        query.after_id = last.id;
        figures.stored += page.len();
    }
    store.close().await;
    Ok(figures)
}
