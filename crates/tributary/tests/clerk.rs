//! Clerk end to end, through the real binary: a full sync from the Clerk
//! simulator, then 2,000 webhook events (creates, updates, deletes,
//! membership changes; 20% duplicated, 10% reordered, 1% forged, 1%
//! stale) sent by the simulator's Svix sender to `tributary serve`, then a
//! reconciliation — the database equals the simulator's final state,
//! cascades applied, nothing forged applied. And a connection's own
//! request budget is the one its syncs keep to. The records API paged
//! during syncs ends with the source's records, the change feed after its
//! last cursor carries on with no gap and no duplicate, and search finds a
//! record a webhook just changed, and forgets it once deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_sim::clerk::{
    ClerkConfig, ClerkHandle, ClerkKind, ClerkSim, ClerkWebhookOptions, UserPatch, serve_clerk,
};
use tributary_source::{Credentials, Source, SourceOptions};

mod common;
use common::BIN;

const KEY: &str = "sk_test_sim";

const ENTITIES: [&str; 3] = ["User", "Organization", "OrganizationMembership"];

/// Records as (entity, id) → (raw object, canonical form).
type Listed = BTreeMap<(String, String), (Value, Value)>;

/// The budget test counts 429s to the second: it runs alone (a write
/// lock), the others share (a read lock) — their syncs, servers and
/// clients on the same 2 cores bunched its requests into one of the
/// simulator's windows now and then.
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    db: String,
    key: String,
}

impl Setup {
    /// A database with connection `clerk` (the built-in adapter, bearer
    /// secret key) to `base_url`.
    fn new(base_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db").display().to_string();
        let setup = Self {
            _dir: dir,
            db,
            key: common::keygen(),
        };
        let add = setup.run(
            &[
                "connections",
                "add",
                "clerk",
                "--adapter",
                "clerk",
                "--auth",
                "bearer",
                "--base-url",
                base_url,
            ],
            None,
        );
        assert!(add.status.success(), "{}", text(&add));
        setup
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--db", &self.db])
            .env("TRIBUTARY_SECRET_KEY", &self.key)
            .env("TRIBUTARY_TOKEN", KEY)
            .env_remove("TRIBUTARY_WEBHOOK_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(stdin) = stdin {
            input.write_all(stdin.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn serve(&self) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let created = self.run(&["tokens", "create", "--role", "read"], None);
        assert!(created.status.success(), "{}", text(&created));
        let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
        self.serve_at(&address, &token)
    }

    /// `serve` listening at `address`; `token` is a read token of it.
    fn serve_at(&self, address: &str, token: &str) -> Serve {
        let (address, token) = (address.to_owned(), token.to_owned());
        let child = Command::new(BIN)
            .args(["serve", "--db", &self.db, "--listen", &address])
            .env("TRIBUTARY_SECRET_KEY", &self.key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "serve never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve {
            child,
            address,
            token,
        }
    }

    /// `records export` as (entity, id) → (raw, canonical), live ones, and
    /// the deleted ones' keys.
    fn exported(&self) -> (Listed, BTreeSet<(String, String)>) {
        let out = self.run(&["records", "export", "--include-deleted"], None);
        assert!(out.status.success(), "{}", text(&out));
        let mut live = BTreeMap::new();
        let mut deleted = BTreeSet::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = (
                v["entity"].as_str().unwrap().to_owned(),
                v["external_id"].as_str().unwrap().to_owned(),
            );
            if v["deleted_at"].is_null() {
                live.insert(key, (v["data"].clone(), v["canonical"].clone()));
            } else {
                deleted.insert(key);
            }
        }
        (live, deleted)
    }

    fn deliveries(&self) -> Vec<Value> {
        let list = self.run(&["webhooks", "list", "--json", "--limit", "100000"], None);
        assert!(list.status.success(), "{}", text(&list));
        serde_json::from_slice(&list.stdout).unwrap()
    }
}

struct Serve {
    child: Child,
    address: String,
    /// A read token for its /v1 routes.
    token: String,
}

impl Serve {
    /// An HTTP client that sends the read token.
    fn client(&self) -> reqwest::Client {
        tributary_source::install_tls_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the simulator's API serves now, as (entity, id) → (raw object,
/// canonical form), listed and mapped by the built-in adapter itself.
async fn source_side(handle: &ClerkHandle) -> Listed {
    let source = Source::new(
        Arc::new(tributary_manifest::builtin("clerk").unwrap().unwrap()),
        Credentials::bearer(KEY),
        SourceOptions {
            base_url: Some(handle.base_url()),
            rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
            ..SourceOptions::default()
        },
    )
    .unwrap();
    let mut all = BTreeMap::new();
    for entity in ENTITIES {
        let definition = source.manifest().entities[entity].clone();
        let mut cursor = tributary_core::Cursor::start();
        loop {
            let page = source.fetch_page(&definition, &cursor).await.unwrap();
            assert!(page.quarantined.is_empty(), "{:?}", page.quarantined);
            for record in page.records {
                let raw: Value = serde_json::from_str(record.raw.as_str()).unwrap();
                all.insert(
                    (entity.to_owned(), record.external_id),
                    (raw, record.canonical),
                );
            }
            if page.finished {
                break;
            }
            cursor = page.next;
        }
    }
    all
}

/// Asserts the database holds exactly the simulator's live records —
/// compared by canonical form, and (`raw`) by the object as served too.
async fn assert_same(setup: &Setup, handle: &ClerkHandle, entities: &[&str], raw: bool) {
    let sim = handle.simulator();
    let (live, deleted) = setup.exported();
    let expected = source_side(handle).await;
    for entity in entities {
        let ours: BTreeMap<_, _> = live.iter().filter(|(k, _)| k.0 == *entity).collect();
        let theirs: BTreeMap<_, _> = expected.iter().filter(|(k, _)| k.0 == *entity).collect();
        let missing: Vec<_> = theirs
            .keys()
            .filter(|k| !ours.contains_key(*k))
            .take(3)
            .collect();
        let extra: Vec<_> = ours
            .keys()
            .filter(|k| !theirs.contains_key(*k))
            .take(3)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{entity}: missing {missing:?}, extra {extra:?} ({} here, {} at the source)",
            ours.len(),
            theirs.len()
        );
        for (key, (object, canonical)) in theirs {
            let (stored_raw, stored_canonical) = &ours[key];
            assert_eq!(stored_canonical, canonical, "{key:?}");
            if raw {
                assert_eq!(stored_raw, object, "{key:?}");
            }
        }
    }
    // What the source deleted is deleted (or was never stored) here.
    let mut tombstones = 0;
    for (kind, entity) in [
        (ClerkKind::User, "User"),
        (ClerkKind::Organization, "Organization"),
    ] {
        for id in sim.deleted_ids(kind) {
            let key = (entity.to_owned(), id);
            assert!(!live.contains_key(&key), "{key:?} is deleted at the source");
            tombstones += usize::from(deleted.contains(&key));
        }
    }
    // The deleted records that were stored are kept as tombstones.
    assert!(tombstones > 0 || sim.deleted_ids(ClerkKind::User).is_empty());
}

async fn clerk(webhooks: ClerkWebhookOptions, users: usize) -> ClerkHandle {
    let config = ClerkConfig {
        seed: 21,
        users,
        webhooks,
        ..ClerkConfig::default()
    };
    serve_clerk(ClerkSim::new(config), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_then_2000_webhook_events_then_reconcile_equal_the_source() {
    let _shared = TIMING.read().await;
    let handle = clerk(
        ClerkWebhookOptions {
            duplicate: 0.2,
            reorder: 0.1,
            forged: 0.01,
            stale: 0.01,
            ..ClerkWebhookOptions::default()
        },
        300,
    )
    .await;
    let sim = handle.simulator();
    let setup = Setup::new(&handle.base_url());
    let full = setup.run(
        &["sync", "--connection", "clerk", "--rate-limit", "off"],
        None,
    );
    assert!(full.status.success(), "{}", text(&full));
    assert_same(&setup, &handle, &ENTITIES, true).await;

    // The simulator's Svix sender delivers to `serve`, whose secret is the
    // endpoint's.
    let serve = setup.serve();
    let secret = sim
        .add_endpoint(&format!("http://{}/webhooks/clerk", serve.address))
        .unwrap();
    let add = setup.run(&["webhooks", "secrets", "add", "clerk"], Some(&secret));
    assert!(add.status.success(), "{}", text(&add));

    let before = sim.events().len();
    let mut seed = 100;
    while sim.events().len() - before < 2_000 {
        sim.mutate(100, seed);
        seed += 1;
    }
    let events = sim.events().len() - before;
    tokio::time::timeout(Duration::from_secs(240), sim.idle())
        .await
        .expect("the sender delivers everything within 4 minutes");
    let stats = sim.webhook_stats();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.accepted_forgeries, 0, "{stats:?}");
    assert!(
        stats.duplicates > 0 && stats.forged > 0 && stats.stale > 0,
        "{stats:?}"
    );
    assert_eq!(stats.refused, stats.forged + stats.stale, "{stats:?}");

    // Every event stored once, all applied.
    eventually("every delivery applied", Duration::from_secs(120), || {
        let deliveries = setup.deliveries();
        deliveries.len() == events && deliveries.iter().all(|d| d["state"] == "applied")
    })
    .await;

    // Users and memberships are current from the events alone (an
    // organization's member count changes without an event of its own:
    // the reconciliation's listing brings it).
    assert_same(&setup, &handle, &["User", "OrganizationMembership"], false).await;
    drop(serve);

    // The audit trail names the webhook delivery behind a user's update.
    let sim = handle.simulator();
    let updated = sim
        .events()
        .into_iter()
        .rev()
        .filter(|e| e.event_type == "user.updated")
        .map(|e| e.data["id"].as_str().unwrap().to_owned())
        .find(|id| sim.users().iter().any(|u| u["id"] == id.as_str()))
        .expect("a user updated by an event still exists");
    let audit = setup.run(&["audit", "clerk", "User", &updated, "--json"], None);
    assert!(audit.status.success(), "{}", text(&audit));
    let trail: Vec<Value> = serde_json::from_slice(&audit.stdout).unwrap();
    let by_webhook = trail
        .iter()
        .find(|e| e["run"]["kind"] == "webhook")
        .unwrap_or_else(|| panic!("no webhook run in the trail: {trail:?}"));
    let deliveries = by_webhook["deliveries"].as_array().unwrap();
    assert!(
        deliveries.iter().any(|d| d["event"] == "user.updated"),
        "{by_webhook}"
    );

    let reconcile = setup.run(
        &[
            "sync",
            "--connection",
            "clerk",
            "--kind",
            "reconcile",
            "--rate-limit",
            "off",
        ],
        None,
    );
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    assert_same(&setup, &handle, &ENTITIES, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_own_budget_is_the_one_its_syncs_keep_to() {
    // Alone: the other tests' syncs and clients on the same cores would
    // bunch its requests into one of the simulator's windows.
    let _quiet = TIMING.write().await;
    // Clerk's development-instance limit at the server; the manifest's own
    // policy (100 per 10 s) would send a burst of 100 at once.
    let config = ClerkConfig {
        seed: 3,
        users: 1_000,
        rate_limit: Some((20, Duration::from_secs(1))),
        ..ClerkConfig::default()
    };
    let handle = serve_clerk(ClerkSim::new(config), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let setup = Setup::new(&handle.base_url());
    let budget = setup.run(&["connections", "rate-limit", "clerk", "18/1s"], None);
    assert!(budget.status.success(), "{}", text(&budget));
    let full = setup.run(
        &["sync", "--connection", "clerk", "--page-size", "10"],
        None,
    );
    assert!(full.status.success(), "{}", text(&full));
    let stats = handle.simulator().stats();
    assert!(stats.requests > 100, "{stats:?}");
    assert_eq!(
        stats.rate_limited, 0,
        "no 429 within the connection's budget: {stats:?}"
    );
}

/// An SSE client of `/v1/changes/stream` that drops its connection after
/// a pseudo-random number of events and comes back with `Last-Event-ID`,
/// until it has seen `until`; the sequence numbers it received, in order.
async fn follow_with_disconnects(
    address: String,
    client: reqwest::Client,
    seed: u64,
    until: Arc<std::sync::atomic::AtomicI64>,
) -> (Vec<i64>, usize) {
    let mut received: Vec<i64> = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut reconnects = 0;
    loop {
        let target = until.load(std::sync::atomic::Ordering::SeqCst);
        if target > 0 && received.last().copied().unwrap_or(0) >= target {
            return (received, reconnects);
        }
        assert!(
            Instant::now() < deadline,
            "the stream delivered {} changes",
            received.len()
        );
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = 1 + (x % 12) as usize;
        let mut request = client.get(format!("http://{address}/v1/changes/stream"));
        if let Some(last) = received.last() {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let Ok(mut response) = request.send().await else {
            continue;
        };
        assert_eq!(response.status(), 200);
        reconnects += 1;
        let mut text = String::new();
        let mut taken = 0;
        'read: while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(2), response.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let mut kind = "";
                let mut id = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = if v.trim() == "change" {
                            "change"
                        } else {
                            "other"
                        };
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<i64>().ok();
                    }
                }
                if kind == "change" {
                    received.push(id.expect("a change event has an id"));
                    taken += 1;
                    if taken >= take {
                        break 'read;
                    }
                }
            }
        }
        drop(response);
    }
}

/// A WebSocket client of `/v1/changes/ws` that closes its socket after a
/// pseudo-random number of messages and subscribes again after the last
/// sequence number it received, until it has seen `until`; the sequence
/// numbers it received, in order, and whether each batch held whole
/// transactions.
async fn follow_socket_with_disconnects(
    address: String,
    token: String,
    seed: u64,
    until: Arc<std::sync::atomic::AtomicI64>,
) -> (Vec<i64>, usize) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let mut received: Vec<i64> = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ seed;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut reconnects = 0;
    loop {
        let target = until.load(std::sync::atomic::Ordering::SeqCst);
        if target > 0 && received.last().copied().unwrap_or(0) >= target {
            return (received, reconnects);
        }
        assert!(
            Instant::now() < deadline,
            "the socket delivered {} changes",
            received.len()
        );
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // The client keeps this many changes, then drops the socket — in
        // the middle of a batch, even — and resumes after the last it kept.
        let take = 1 + (x % 12) as usize;
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(format!(
            "ws://{address}/v1/changes/ws?access_token={token}"
        ))
        .await
        else {
            continue;
        };
        reconnects += 1;
        let after = received.last().copied().unwrap_or(0);
        let subscribe = serde_json::json!({"type": "subscribe", "after": after});
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .unwrap();
        let mut taken = 0;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(2), socket.next()).await
        {
            let Message::Text(text) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["type"].as_str() {
                Some("subscribed") => assert_eq!(message["after"], after),
                Some("changes") => {
                    let batch = message["changes"].as_array().unwrap();
                    let kept = batch.len().min(take - taken);
                    received.extend(batch[..kept].iter().map(|c| c["seq"].as_i64().unwrap()));
                    taken += kept;
                    if taken >= take {
                        break;
                    }
                }
                other => panic!("unexpected message {other:?}: {message}"),
            }
        }
        let _ = socket.close(None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_resumes_exactly_across_disconnects_during_syncs() {
    let _shared = TIMING.read().await;
    let handle = clerk(
        ClerkWebhookOptions {
            duplicate: 0.1,
            reorder: 0.1,
            ..ClerkWebhookOptions::default()
        },
        400,
    )
    .await;
    let sim = handle.simulator();
    let setup = Setup::new(&handle.base_url());
    let serve = setup.serve();
    let until = Arc::new(std::sync::atomic::AtomicI64::new(0));
    // Six SSE and four WebSocket clients, each dropping its connection
    // after 1 to 12 changes and resuming after the last it received.
    let mut clients = Vec::new();
    for n in 0..10u64 {
        let until = until.clone();
        clients.push(match n < 6 {
            true => tokio::spawn(follow_with_disconnects(
                serve.address.clone(),
                serve.client(),
                n,
                until,
            )),
            false => tokio::spawn(follow_socket_with_disconnects(
                serve.address.clone(),
                serve.token.clone(),
                n,
                until,
            )),
        });
    }
    // A full sync, changes at the source, and a reconciliation, while the
    // clients come and go.
    let full = setup.run(
        &[
            "sync",
            "--connection",
            "clerk",
            "--rate-limit",
            "off",
            "--page-size",
            "50",
        ],
        None,
    );
    assert!(full.status.success(), "{}", text(&full));
    sim.mutate(150, 7);
    let reconcile = setup.run(
        &[
            "sync",
            "--connection",
            "clerk",
            "--kind",
            "reconcile",
            "--rate-limit",
            "off",
            "--page-size",
            "50",
        ],
        None,
    );
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    // Then webhook bursts, applied by `serve` as they arrive.
    let secret = sim
        .add_endpoint(&format!("http://{}/webhooks/clerk", serve.address))
        .unwrap();
    let add = setup.run(&["webhooks", "secrets", "add", "clerk"], Some(&secret));
    assert!(add.status.success(), "{}", text(&add));
    let before = sim.events().len();
    for seed in 0..6 {
        sim.mutate(100, 200 + seed);
    }
    let events = sim.events().len() - before;
    tokio::time::timeout(Duration::from_secs(120), sim.idle())
        .await
        .expect("the sender delivers everything");
    eventually("every delivery applied", Duration::from_secs(120), || {
        let deliveries = setup.deliveries();
        deliveries.len() == events && deliveries.iter().all(|d| d["state"] == "applied")
    })
    .await;

    // Everything the feed has, read by pages of the long-poll endpoint,
    // once the feed has seen the last commit.
    let http = serve.client();
    let store = tributary_store::open_read_only(&setup.db).await.unwrap();
    let last = store.feed_head().await.unwrap();
    store.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page: Value = http
            .get(format!("http://{}/v1/changes?after={last}", serve.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["head"].as_i64().unwrap() >= last {
            break;
        }
        assert!(Instant::now() < deadline, "the feed follows the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut expected: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = http
            .get(format!(
                "http://{}/v1/changes?after={after}&limit=1000",
                serve.address
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let changes = page["changes"].as_array().unwrap();
        expected.extend(changes.iter().map(|c| c["seq"].as_i64().unwrap()));
        after = page["next"].as_i64().unwrap();
        if after >= page["head"].as_i64().unwrap() {
            break;
        }
    }
    assert!(expected.len() > 1_000, "{} changes", expected.len());
    until.store(
        *expected.last().unwrap(),
        std::sync::atomic::Ordering::SeqCst,
    );
    let mut disconnects = 0;
    for (n, client) in clients.into_iter().enumerate() {
        let (received, reconnects) = client.await.unwrap();
        let how = if n < 6 { "SSE" } else { "WebSocket" };
        assert_eq!(
            received, expected,
            "every change once, in order ({how} client {n})"
        );
        disconnects += reconnects;
    }
    assert!(disconnects >= 1_000, "{disconnects} disconnects");

    // A filtered page names the fields an update changed; a long poll
    // waits for the next change.
    let updates: Value = http
        .get(format!(
            "http://{}/v1/changes?connection=clerk&entity=User&limit=1000",
            serve.address
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let updated = updates["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "updated")
        .expect("the reconciliation updated users");
    assert!(
        updated["fields"].as_array().is_some_and(|f| !f.is_empty()),
        "{updated}"
    );
    assert_eq!(updated["connection"], "clerk");
    let head = *expected.last().unwrap();
    let waiting = {
        let (http, address) = (http.clone(), serve.address.clone());
        tokio::spawn(async move {
            http.get(format!("http://{address}/v1/changes?after={head}&wait=30"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The source changes; its webhooks reach `serve`, whose run commits
    // them (a `sync` here could meet that run and be refused as busy).
    sim.mutate(20, 8);
    let woke = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        woke["changes"].as_array().is_some_and(|c| !c.is_empty()),
        "{woke}"
    );
    let unknown = http
        .get(format!(
            "http://{}/v1/changes?connection=nobody",
            serve.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_retention_is_told_to_reread_the_records() {
    let _shared = TIMING.read().await;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let handle = clerk(ClerkWebhookOptions::default(), 60).await;
    let setup = Setup::new(&handle.base_url());
    let full = setup.run(
        &["sync", "--connection", "clerk", "--rate-limit", "off"],
        None,
    );
    assert!(full.status.success(), "{}", text(&full));
    // The feed's rows are made 40 days old; `serve` keeps 30 days and
    // applies its retention as it starts.
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", setup.db))
            .await
            .unwrap();
        sqlx::query("UPDATE changes SET changed_at = '2020-01-01T00:00:00.000000Z'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let serve = setup.serve();
    let http = serve.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let expired = loop {
        let answer = http
            .get(format!("http://{}/v1/changes?after=0", serve.address))
            .send()
            .await
            .unwrap();
        if answer.status() == 410 {
            break answer;
        }
        assert!(Instant::now() < deadline, "the retention never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        expired.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = expired.json().await.unwrap();
    assert_eq!(problem["title"], "cursor expired", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("re-read"),
        "{problem}"
    );
    // At the horizon the feed answers again: nothing after it yet.
    let page: Value = http
        .get(format!(
            "http://{}/v1/changes?after=0&limit=1",
            serve.address
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["status"], 410);
    let store = tributary_store::open_read_only(&setup.db).await.unwrap();
    let horizon = store.feed_horizon().await.unwrap();
    store.close().await;
    assert!(horizon > 0);
    let current: Value = http
        .get(format!(
            "http://{}/v1/changes?after={horizon}",
            serve.address
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["changes"].as_array().unwrap().len(), 0, "{current}");
    // The stream and the socket say the same of an old cursor.
    let stream = http
        .get(format!("http://{}/v1/changes/stream", serve.address))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 410);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/changes/ws?access_token={}",
        serve.address, serve.token
    ))
    .await
    .unwrap();
    socket
        .send(Message::Text(r#"{"type": "subscribe", "after": 1}"#.into()))
        .await
        .unwrap();
    let mut said = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        let message: Value = serde_json::from_str(&text).unwrap();
        let kind = message["type"].as_str().unwrap().to_owned();
        said.push(kind.clone());
        if kind != "subscribed" {
            break;
        }
    }
    assert_eq!(said, ["subscribed", "expired"]);
}

/// `serve` on a database: its child process, address and an admin token.
fn serve_on(url: &str, key: &str, token: &str) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["serve", "--db", url, "--listen", &address])
        .env("TRIBUTARY_SECRET_KEY", key)
        .env("TRIBUTARY_TOKEN", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "serve never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve {
        child,
        address,
        token: token.to_owned(),
    }
}

/// Asks `serve` for a run; waits for it to succeed.
async fn run_through(serve: &Serve, connection: &str, kind: &str) {
    let http = serve.client();
    let asked: Value = http
        .post(format!("http://{}/v1/runs", serve.address))
        .json(&serde_json::json!({"connection": connection, "kind": kind}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = asked["id"].as_i64().unwrap_or_else(|| panic!("{asked}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run: Value = http
            .get(format!("http://{}/v1/runs/{id}", serve.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match run["state"].as_str() {
            Some("queued" | "running") => {}
            Some("succeeded") => return,
            _ => panic!("run {id} of {connection} did not succeed: {run}"),
        }
        assert!(Instant::now() < deadline, "run {id} did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_on_postgres_feed_every_change_once_in_commit_order() {
    let _shared = TIMING.read().await;
    let handle = clerk(ClerkWebhookOptions::default(), 1_500).await;
    let sim = handle.simulator();
    let url = tributary_testkit::shared()
        .create_database("two_serves_feed")
        .unwrap();
    let key = common::keygen();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--db", &url])
            .env("TRIBUTARY_SECRET_KEY", &key)
            .env("TRIBUTARY_TOKEN", KEY)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    for name in ["clerk-a", "clerk-b"] {
        cli(&[
            "connections",
            "add",
            name,
            "--adapter",
            "clerk",
            "--auth",
            "bearer",
            "--base-url",
            &handle.base_url(),
        ]);
    }
    let token = cli(&["tokens", "create", "--role", "admin"])
        .trim()
        .to_owned();
    let one = serve_on(&url, &key, &token);
    let two = serve_on(&url, &key, &token);

    // Readers on either process: SSE on the first, a WebSocket on the
    // second, both dropping their connections and resuming.
    let until = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sse = tokio::spawn(follow_with_disconnects(
        one.address.clone(),
        one.client(),
        1,
        until.clone(),
    ));
    let socket = tokio::spawn(follow_socket_with_disconnects(
        two.address.clone(),
        token.clone(),
        2,
        until.clone(),
    ));
    // Each process writes one connection, at the same time: full syncs,
    // then (after changes at the source) reconciliations and deltas.
    tokio::join!(
        run_through(&one, "clerk-a", "full"),
        run_through(&two, "clerk-b", "full")
    );
    for (round, kind) in ["reconcile", "delta", "reconcile"].into_iter().enumerate() {
        sim.mutate(200, 40 + round as u64);
        tokio::join!(
            run_through(&one, "clerk-a", kind),
            run_through(&two, "clerk-b", kind)
        );
    }

    // The whole feed, by pages, from either process once it has seen the
    // last commit.
    let http = one.client();
    let mut expected: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = http
            .get(format!(
                "http://{}/v1/changes?after={after}&limit=1000&wait=1",
                one.address
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let changes = page["changes"].as_array().unwrap();
        if changes.is_empty() {
            break;
        }
        expected.extend(changes.iter().map(|c| c["seq"].as_i64().unwrap()));
        after = page["next"].as_i64().unwrap();
    }
    let names: BTreeSet<String> = {
        let store = tributary_store::open_read_only(&url).await.unwrap();
        let changes = store.changes(None, 0, u32::MAX).await.unwrap();
        store.close().await;
        assert_eq!(
            changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            expected,
            "the feed as served is the table's, in commit order"
        );
        changes
            .iter()
            .map(|c| c.connection_id.to_string())
            .collect()
    };
    assert_eq!(names.len(), 2, "both processes wrote");
    assert!(expected.len() > 3_000, "{} changes", expected.len());
    until.store(
        *expected.last().unwrap(),
        std::sync::atomic::Ordering::SeqCst,
    );
    let (received, _) = sse.await.unwrap();
    assert_eq!(
        received, expected,
        "every change once, in order (SSE on the first)"
    );
    let (received, _) = socket.await.unwrap();
    assert_eq!(
        received, expected,
        "every change once, in order (WebSocket on the second)"
    );
}

/// What a records client has read: (entity, id) → (canonical, deleted,
/// version).
type Paged = BTreeMap<(String, String), (Value, bool, i64)>;

/// A client of `GET /v1/records` that pages (tombstones included) from
/// the start while syncs run, polling once caught up, until its cursor
/// reaches `until`: the latest of every record it read, and its cursor.
/// Versions must grow strictly: a version is never handed out twice; a
/// record changed after it was read is read again (counted).
async fn page_records(
    address: String,
    http: reqwest::Client,
    until: Arc<std::sync::atomic::AtomicI64>,
) -> (Paged, i64, usize) {
    tributary_source::install_tls_provider();

    let mut paged = Paged::new();
    let mut cursor = 0;
    let mut last_version = 0;
    let mut pages = 0;
    let mut again = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let target = until.load(std::sync::atomic::Ordering::SeqCst);
        if target > 0 && cursor >= target {
            assert!(pages > 5, "{pages} pages");
            return (paged, cursor, again);
        }
        assert!(Instant::now() < deadline, "the pages never caught up");
        let page: Value = http
            .get(format!(
                "http://{address}/v1/records?cursor={cursor}&limit=37&include_deleted=true"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for record in page["records"].as_array().unwrap() {
            let version = record["version"].as_i64().unwrap();
            assert!(
                version > last_version,
                "version {version} after {last_version}"
            );
            last_version = version;
            again += usize::from(paged.contains_key(&(
                record["entity"].as_str().unwrap().to_owned(),
                record["external_id"].as_str().unwrap().to_owned(),
            )));
            paged.insert(
                (
                    record["entity"].as_str().unwrap().to_owned(),
                    record["external_id"].as_str().unwrap().to_owned(),
                ),
                (
                    record["canonical"].clone(),
                    !record["deleted_at"].is_null(),
                    version,
                ),
            );
        }
        let next = page["next_cursor"].as_i64().unwrap();
        assert!(next >= cursor);
        cursor = next;
        if cursor >= page["head"].as_i64().unwrap() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A GET of `path` on `serve`: status and JSON body.
async fn get_json(http: &reqwest::Client, serve: &Serve, path: &str) -> (u16, Value) {
    let response = http
        .get(format!("http://{}{path}", serve.address))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_paged_during_syncs_end_as_the_source_then_the_feed_and_search_follow() {
    let _quiet = TIMING.read().await;
    let handle = clerk(ClerkWebhookOptions::default(), 300).await;
    let sim = handle.simulator();
    let setup = Setup::new(&handle.base_url());
    let serve = setup.serve();
    let secret = sim
        .add_endpoint(&format!("http://{}/webhooks/clerk", serve.address))
        .unwrap();
    let add = setup.run(&["webhooks", "secrets", "add", "clerk"], Some(&secret));
    assert!(add.status.success(), "{}", text(&add));
    let until = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let pager = tokio::spawn(page_records(
        serve.address.clone(),
        serve.client(),
        until.clone(),
    ));

    // A full sync, changes applied by webhooks, and a reconciliation,
    // while the client pages.
    let sync = |kind: &str| {
        setup.run(
            &[
                "sync",
                "--connection",
                "clerk",
                "--kind",
                kind,
                "--rate-limit",
                "off",
                "--page-size",
                "50",
            ],
            None,
        )
    };
    let full = sync("full");
    assert!(full.status.success(), "{}", text(&full));
    let events = sim.mutate(120, 5).len();
    tokio::time::timeout(Duration::from_secs(120), sim.idle())
        .await
        .expect("the sender delivers everything");
    eventually("every delivery applied", Duration::from_secs(120), || {
        let deliveries = setup.deliveries();
        deliveries.len() >= events && deliveries.iter().all(|d| d["state"] == "applied")
    })
    .await;
    let reconcile = sync("reconcile");
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    assert_same(&setup, &handle, &ENTITIES, true).await;

    // The client's pages end with exactly what the database holds: the
    // source's records, and the tombstones of what it deleted.
    let store = tributary_store::open_read_only(&setup.db).await.unwrap();
    let head = store.feed_head().await.unwrap();
    store.close().await;
    until.store(head, std::sync::atomic::Ordering::SeqCst);
    let (paged, cursor, again) = pager.await.unwrap();
    assert!(again > 0, "records changed after the client read them");
    let (live, deleted) = setup.exported();
    let paged_live: BTreeMap<_, _> = paged
        .iter()
        .filter(|(_, (_, gone, _))| !gone)
        .map(|(k, (canonical, _, _))| (k.clone(), canonical.clone()))
        .collect();
    let live_canonical: BTreeMap<_, _> = live
        .iter()
        .map(|(k, (_, canonical))| (k.clone(), canonical.clone()))
        .collect();
    assert_eq!(paged_live.len(), live_canonical.len());
    assert!(paged_live == live_canonical, "the pages hold the records");
    let paged_deleted: BTreeSet<_> = paged
        .iter()
        .filter(|(_, (_, gone, _))| *gone)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(paged_deleted, deleted);
    assert!(!deleted.is_empty(), "the mutations deleted records");

    // Records, then the feed from the records' last cursor: nothing in
    // between, and the next change once, in both.
    let http = serve.client();
    let (status, feed) = get_json(&http, &serve, &format!("/v1/changes?after={cursor}")).await;
    assert_eq!(status, 200);
    assert_eq!(feed["changes"], serde_json::json!([]), "{feed}");
    let user = paged
        .iter()
        .find(|((entity, _), (_, gone, _))| entity == "User" && !gone)
        .map(|((_, id), _)| id.clone())
        .unwrap();
    sim.update_user(
        &user,
        UserPatch {
            first_name: Some(Some("Quetzalcoatl".into())),
            ..UserPatch::default()
        },
    )
    .unwrap();
    let (_, feed) = get_json(
        &http,
        &serve,
        &format!("/v1/changes?after={cursor}&wait=30"),
    )
    .await;
    let seen = Instant::now();
    let changes = feed["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{feed}");
    assert_eq!(changes[0]["external_id"], user.as_str());
    let (_, records) = get_json(&http, &serve, &format!("/v1/records?cursor={cursor}")).await;
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["canonical"]["first_name"], "Quetzalcoatl");
    assert_eq!(records[0]["version"], changes[0]["seq"]);

    // Search finds it at once (the indexer follows the feed).
    let mut found = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (status, answer) =
            get_json(&http, &serve, "/v1/search?q=quetzalc&connection=clerk").await;
        assert_eq!(status, 200, "{answer}");
        if !answer["results"].as_array().unwrap().is_empty() {
            found = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = seen.elapsed();
    let results = found["results"].as_array().expect("search found the user");
    assert_eq!(results.len(), 1, "{found}");
    assert_eq!(results[0]["external_id"], user.as_str());
    assert_eq!(results[0]["entity"], "User");
    assert!(
        results[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("«Quetzalcoatl»")
    );
    assert!(
        took < Duration::from_secs(3),
        "searchable {took:?} after the change"
    );
    eprintln!("searchable {took:?} after the change reached the feed");

    // One record, with its edges out and in.
    let membership = paged
        .iter()
        .find(|((entity, _), (_, gone, _))| entity == "OrganizationMembership" && !gone)
        .map(|((_, id), _)| id.clone())
        .unwrap();
    let (status, one) = get_json(
        &http,
        &serve,
        &format!("/v1/records/clerk/OrganizationMembership/{membership}"),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert!(
        one["raw"].is_object() && one["canonical"].is_object(),
        "{one}"
    );
    let to_user = one["edges"]["outgoing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == "User")
        .unwrap_or_else(|| panic!("{one}"));
    let (status, member) = get_json(
        &http,
        &serve,
        &format!(
            "/v1/records/clerk/User/{}",
            to_user["external_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 200, "{member}");
    assert!(
        member["edges"]["incoming"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entity"] == "OrganizationMembership"
                && e["external_id"] == membership.as_str()),
        "{member}"
    );

    // Deleted: gone from search, a tombstone in the records.
    sim.delete_user(&user).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, answer) = get_json(&http, &serve, "/v1/search?q=Quetzalcoatl").await;
        if answer["results"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "search forgets the deleted user");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, tombstone) =
        get_json(&http, &serve, &format!("/v1/records/clerk/User/{user}")).await;
    assert_eq!(status, 200);
    assert!(!tombstone["deleted_at"].is_null(), "{tombstone}");

    // Refusals are problem documents.
    for (path, status) in [
        ("/v1/records/clerk/User/nobody", 404),
        ("/v1/records/nope/User/1", 404),
        ("/v1/records?connection=nope", 404),
        ("/v1/records?cursor=abc", 400),
        ("/v1/records?modified_after=yesterday", 400),
        ("/v1/search?q=%20-%20", 400),
        ("/v1/search", 400),
    ] {
        let response = http
            .get(format!("http://{}{path}", serve.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_resumes_across_a_restart_of_serve() {
    let _shared = TIMING.read().await;
    use std::io::BufRead as _;
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no Node.js on this machine to run /v1/client.js in");
        return;
    }
    let handle = clerk(ClerkWebhookOptions::default(), 200).await;
    let sim = handle.simulator();
    let setup = Setup::new(&handle.base_url());
    let serve = setup.serve();
    // The client as served, run by Node (its WebSocket) as a page would.
    let script = serve
        .client()
        .get(format!("http://{}/v1/client.js", serve.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.mjs"), script.text().await.unwrap()).unwrap();
    std::fs::write(
        dir.path().join("follow.mjs"),
        format!(
            r#"import {{ subscribe }} from "./client.mjs";
subscribe({{
  url: "http://{address}",
  token: "{token}",
  after: 0,
  onChanges(changes, next) {{ for (const c of changes) console.log(c.seq); }},
  onStatus(status) {{ console.error(JSON.stringify(status)); }},
  onExpired() {{ console.log("expired"); }},
}});
"#,
            address = serve.address,
            token = serve.token
        ),
    )
    .unwrap();
    let mut node = Command::new("node")
        .arg("--experimental-websocket")
        .arg(dir.path().join("follow.mjs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    // Changes, then `serve` goes away and comes back at the same address,
    // then more changes: the client reconnects and resumes.
    let full = setup.run(
        &[
            "sync",
            "--connection",
            "clerk",
            "--rate-limit",
            "off",
            "--page-size",
            "50",
        ],
        None,
    );
    assert!(full.status.success(), "{}", text(&full));
    let address = serve.address.clone();
    let token = serve.token.clone();
    drop(serve);
    sim.mutate(80, 3);
    let reconcile = setup.run(
        &[
            "sync",
            "--connection",
            "clerk",
            "--kind",
            "reconcile",
            "--rate-limit",
            "off",
            "--max-delete-percent",
            "100",
        ],
        None,
    );
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    let _again = setup.serve_at(&address, &token);

    let store = tributary_store::open_read_only(&setup.db).await.unwrap();
    let expected: Vec<String> = store
        .changes(None, 0, u32::MAX)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq.to_string())
        .collect();
    store.close().await;
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while received.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => received.push(line),
            Err(_) => break,
        }
    }
    let _ = node.kill();
    let output = node.wait_with_output().unwrap();
    assert_eq!(
        received,
        expected,
        "every change once, in order, across the restart; the client said: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("reconnecting"), "{said}");
}
