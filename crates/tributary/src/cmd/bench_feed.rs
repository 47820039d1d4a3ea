//! `tributary bench feed`: the change feed as its subscribers see it. A
//! full sync of a simulated PCO account runs (`tributary sync`, its own
//! process) into a fresh SQLite file, first with nobody watching, then
//! while `tributary serve` (its own process) feeds `--subscribers`
//! clients — half Server-Sent Events, half WebSocket — in this process.
//! Reported: the sync's records/s with and without them, changes
//! delivered per second to all subscribers, and commit → subscriber
//! latency (a change's commit time to its arrival), p50 and p99, per
//! transport. Every subscriber must receive every change.

use std::process::{Command as Process, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::Mutex;
use tributary_core::{Clock as _, SystemClock};
use tributary_secrets::SecretKey;
use tributary_sim::SimConfig;

use super::bench_webhooks::{millis_at, start_serve};

#[derive(Debug, clap::Args)]
pub struct FeedArgs {
    /// People in the simulated account (with their households, emails,
    /// phone numbers and addresses).
    #[arg(long, default_value_t = 10_000, value_parser = super::people(1))]
    people: usize,
    /// Subscribers of `serve`'s change feed during the second sync.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    subscribers: u64,
    /// One change in this many has its latency measured (the others are
    /// only counted), so the clients' own work stays small.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    sample: u64,
    /// After the full sync, this many delta syncs, one at a time, each
    /// bringing one changed person: commit → subscriber latency when the
    /// store is not busy (every one of these changes is measured).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    trickle: u64,
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    changes: u64,
    /// The last sequence number received.
    last: i64,
    latencies: Vec<Duration>,
    /// While set, every change's latency is measured.
    every: bool,
}

/// Waits until every subscriber has received the changes up to `head`.
async fn caught_up(clients: &[(bool, Arc<Mutex<Seen>>, Client)], head: i64) -> anyhow::Result<()> {
    let waiting = Instant::now();
    for (_, seen, _) in clients {
        while seen.lock().await.last < head {
            if waiting.elapsed() > Duration::from_secs(300) {
                bail!("a subscriber did not receive every change within 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// The latencies of `clients` (SSE, WebSocket), sorted, taken out.
async fn latencies(clients: &[(bool, Arc<Mutex<Seen>>, Client)]) -> (Vec<Duration>, Vec<Duration>) {
    let (mut sse, mut ws) = (Vec::new(), Vec::new());
    for (websocket, seen, _) in clients {
        let taken = std::mem::take(&mut seen.lock().await.latencies);
        match websocket {
            true => ws.extend(taken),
            false => sse.extend(taken),
        }
    }
    sse.sort();
    ws.sort();
    (sse, ws)
}

type Client = tokio::task::JoinHandle<anyhow::Result<()>>;

pub async fn feed(args: FeedArgs) -> anyhow::Result<ExitCode> {
    tributary_source::install_tls_provider();
    let exe = std::env::current_exe()?;
    let sim = tributary_sim::serve(
        SimConfig {
            seed: 7,
            people: args.people,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start the simulator")?;
    let dir = tempfile::tempdir()?;

    // Nobody watching.
    let quiet_db = dir.path().join("quiet.db").display().to_string();
    let quiet_secs = sync(&exe, &quiet_db, &sim.base_url(), "full")?;
    let quiet_records = records_in(&quiet_db).await?;

    // Watched: serve, its subscribers, then the same sync.
    let db = dir.path().join("watched.db").display().to_string();
    let token = read_token(&db).await?;
    let key = SecretKey::generate();
    let (_serve, base) = start_serve(&exe, &db, &key).await?;
    let address = base.trim_start_matches("http://").to_owned();
    let until = Arc::new(AtomicI64::new(0));
    let connected = Arc::new(AtomicI64::new(0));
    let mut clients = Vec::new();
    for n in 0..args.subscribers {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let websocket = n % 2 == 1;
        let task = {
            let (address, until, seen) = (address.clone(), until.clone(), seen.clone());
            let token = token.clone();
            let (sample, connected) = (args.sample, connected.clone());
            tokio::spawn(async move {
                match websocket {
                    true => by_websocket(&address, &token, until, seen, sample, connected).await,
                    false => by_sse(&address, &token, until, seen, sample, connected).await,
                }
            })
        };
        clients.push((websocket, seen, task));
    }
    // Every subscriber connected before the sync begins.
    let waiting = Instant::now();
    while connected.load(Ordering::SeqCst) < args.subscribers as i64 {
        if waiting.elapsed() > Duration::from_secs(30) {
            bail!("the subscribers did not connect");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let secs = sync(&exe, &db, &sim.base_url(), "full")?;
    let records = records_in(&db).await?;
    let head = feed_head(&db).await?;
    caught_up(&clients, head).await?;
    let delivered_secs = started.elapsed().as_secs_f64();
    let mut total = 0;
    for (_, seen, _) in &clients {
        let mut seen = seen.lock().await;
        total = total.max(seen.changes);
        seen.every = true;
    }
    let (sse, ws) = latencies(&clients).await;

    crate::outln!(
        "| people | subscribers | records | sync alone (records/s) | sync watched (records/s) | ratio | changes | delivered (changes/s, all subscribers) | SSE p50 / p99 (ms) | WebSocket p50 / p99 (ms) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let quiet_rate = quiet_records as f64 / quiet_secs;
    let watched_rate = records as f64 / secs;
    crate::outln!(
        "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} |",
        super::thousands(args.people as i64),
        args.subscribers,
        super::thousands(records),
        super::thousands(quiet_rate as i64),
        super::thousands(watched_rate as i64),
        watched_rate / quiet_rate,
        super::thousands(total as i64),
        super::thousands(((total * args.subscribers) as f64 / delivered_secs) as i64),
        millis_at(&sse, 0.5),
        millis_at(&sse, 0.99),
        millis_at(&ws, 0.5),
        millis_at(&ws, 0.99),
    )?;

    // The trickle: one changed person at a time, each a delta sync's
    // commit, every change measured.
    if args.trickle > 0 {
        let source = sim.simulator();
        let people = source.ids(
            tributary_sim::ResourceKind::Person,
            0,
            args.trickle as usize,
        );
        for (n, id) in people.iter().enumerate() {
            source
                .update(
                    tributary_sim::ResourceKind::Person,
                    *id,
                    &serde_json::json!({"attributes": {"last_name": format!("Trickle {n}")}}),
                )
                .map_err(|e| anyhow::anyhow!("cannot change person {id}: {e:?}"))?;
            sync(&exe, &db, &sim.base_url(), "delta")?;
            caught_up(&clients, feed_head(&db).await?).await?;
        }
        let (sse, ws) = latencies(&clients).await;
        crate::outln!(
            "\n| trickle: changes, one delta sync each | subscribers | measured (SSE / WebSocket) | SSE p50 / p99 (ms) | WebSocket p50 / p99 (ms) |\n|---:|---:|---:|---:|---:|\n| {} | {} | {} / {} | {:.1} / {:.1} | {:.1} / {:.1} |",
            people.len(),
            args.subscribers,
            sse.len(),
            ws.len(),
            millis_at(&sse, 0.5),
            millis_at(&sse, 0.99),
            millis_at(&ws, 0.5),
            millis_at(&ws, 0.99),
        )?;
    }
    until.store(feed_head(&db).await?, Ordering::SeqCst);
    for (_, _, task) in &mut clients {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .context("a subscriber did not end")???;
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// A new read token of the store at `db` (created if missing).
pub(super) async fn read_token(db: &str) -> anyhow::Result<String> {
    let store = tributary_store::open(db).await?;
    let (token, hash) = tributary_secrets::new_api_token();
    let created = store
        .create_token(
            "bench",
            tributary_store::TokenRole::Read,
            &hash,
            SystemClock.now(),
        )
        .await;
    store.close().await;
    created?;
    Ok(token.to_string())
}

/// The newest change's sequence number in `db`.
async fn feed_head(db: &str) -> anyhow::Result<i64> {
    let store = tributary_store::open_read_only(db).await?;
    let head = store.feed_head().await;
    store.close().await;
    Ok(head?)
}

/// A sync (`kind`) of the simulator at `url` into `db`: its seconds.
pub(super) fn sync(exe: &std::path::Path, db: &str, url: &str, kind: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Process::new(exe)
        .args([
            "sync",
            "--db",
            db,
            "--base-url",
            url,
            "--rate-limit",
            "off",
            "--kind",
            kind,
        ])
        .env("TRIBUTARY_TOKEN", "sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run `tributary sync`")?;
    if !out.status.success() {
        bail!("the sync failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The live records in `db`.
pub(super) async fn records_in(db: &str) -> anyhow::Result<i64> {
    let store = tributary_store::open_read_only(db).await?;
    let mut records = 0;
    for connection in store.connections().await? {
        records += store
            .entity_counts(connection.id)
            .await?
            .iter()
            .map(|c| c.live)
            .sum::<i64>();
    }
    store.close().await;
    Ok(records)
}

/// The latency of a change committed at `changed_at` (RFC 3339) and
/// received at `at`.
fn latency(changed_at: &serde_json::Value, at: tributary_core::Timestamp) -> Option<Duration> {
    let committed = chrono::DateTime::parse_from_rfc3339(changed_at.as_str()?).ok()?;
    (at - committed.to_utc()).to_std().ok()
}

/// Follows the feed over Server-Sent Events until `until` is reached.
async fn by_sse(
    address: &str,
    token: &str,
    until: Arc<AtomicI64>,
    seen: Arc<Mutex<Seen>>,
    sample: u64,
    connected: Arc<AtomicI64>,
) -> anyhow::Result<()> {
    let mut response = reqwest::Client::new()
        .get(format!("http://{address}/v1/changes/stream"))
        .bearer_auth(token)
        .send()
        .await?;
    connected.fetch_add(1, Ordering::SeqCst);
    let mut text = String::new();
    let mut last = 0;
    loop {
        let target = until.load(Ordering::SeqCst);
        if target > 0 && last >= target {
            return Ok(());
        }
        let Ok(chunk) = tokio::time::timeout(Duration::from_secs(1), response.chunk()).await else {
            continue;
        };
        let Some(chunk) = chunk? else {
            bail!("the stream ended");
        };
        let at = SystemClock.now();
        text.push_str(&String::from_utf8_lossy(&chunk));
        // The whole events in the buffer, looked at in one go (counted,
        // the last id found from the end; parsed only when measured).
        let Some(end) = text.rfind("\n\n").map(|i| i + 2) else {
            continue;
        };
        let whole = &text[..end];
        let count = whole.matches("event: change\n").count() as u64;
        let mut guard = seen.lock().await;
        let before = guard.changes;
        guard.changes += count;
        if let Some(id) = whole
            .rfind("\nid: ")
            .and_then(|i| whole[i + 5..].split('\n').next())
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            last = id;
            guard.last = id;
        }
        if guard.every || before / sample != guard.changes / sample {
            let blocks = whole.split("\n\n").filter(|b| b.contains("event: change"));
            for (n, block) in blocks.enumerate() {
                if (guard.every || (before + n as u64 + 1).is_multiple_of(sample))
                    && let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:"))
                    && let Ok(change) = serde_json::from_str::<serde_json::Value>(data.trim())
                    && let Some(took) = latency(&change["changed_at"], at)
                {
                    guard.latencies.push(took);
                }
            }
        }
        drop(guard);
        text.drain(..end);
    }
}

/// Follows the feed over a WebSocket until `until` is reached.
async fn by_websocket(
    address: &str,
    token: &str,
    until: Arc<AtomicI64>,
    seen: Arc<Mutex<Seen>>,
    sample: u64,
    connected: Arc<AtomicI64>,
) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{address}/v1/changes/ws?access_token={token}"
    ))
    .await?;
    socket
        .send(Message::Text(r#"{"type": "subscribe", "after": 0}"#.into()))
        .await?;
    connected.fetch_add(1, Ordering::SeqCst);
    let mut last = 0;
    loop {
        let target = until.load(Ordering::SeqCst);
        if target > 0 && last >= target {
            return Ok(());
        }
        let Ok(message) = tokio::time::timeout(Duration::from_secs(1), socket.next()).await else {
            continue;
        };
        let Some(message) = message else {
            bail!("the socket closed");
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let at = SystemClock.now();
        if !text.starts_with(r#"{"type":"changes""#) {
            continue;
        }
        // Counted without parsing (a real subscriber is elsewhere: the
        // clients' own work should stay small); parsed only to measure.
        let count = text.matches(r#""seq":"#).count() as u64;
        let mut guard = seen.lock().await;
        let before = guard.changes;
        guard.changes += count;
        if guard.every || before / sample != guard.changes / sample {
            let message: serde_json::Value = serde_json::from_str(&text)?;
            for (n, change) in message["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if (guard.every || (before + n as u64 + 1).is_multiple_of(sample))
                    && let Some(took) = latency(&change["changed_at"], at)
                {
                    guard.latencies.push(took);
                }
            }
        }
        if let Some(next) = text
            .rfind(r#""next":"#)
            .and_then(|i| text[i + 7..].trim_end_matches('}').parse::<i64>().ok())
        {
            last = next;
            guard.last = next;
        }
    }
}
