//! Webhooks out against a real receiver (axum on 127.0.0.1) that fails,
//! throttles, hangs, goes away and recovers — time driven by a
//! `ManualClock` and the service's passes, never by sleeping. Every
//! request is checked by an independent verifier, the `standardwebhooks`
//! crate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tributary_core::{
    Clock as _, Cursor, ManualClock, PreparedRecord, RunKind, RunState, SourceRecord, Timestamp,
};
use tributary_outbound::{Outbound, OutboundOptions, Tick};
use tributary_secrets::SecretKey;
use tributary_store::{
    Attempted, MessageQuery, MessageState, NewConnection, NewSubscription, PageWrite, Store,
    Subscription, SubscriptionState,
};

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    /// 429 with this `Retry-After`.
    Throttle(&'static str),
    /// No answer for this long (past the client's timeout), then 200.
    Hang(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    id: String,
    timestamp: i64,
    body: Value,
    /// The status answered (0: it hung).
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    /// Per path: the answers to give, in order; then `then`.
    script: HashMap<String, VecDeque<Answer>>,
    then: HashMap<String, Answer>,
    /// Per path: the signing secret.
    secrets: HashMap<String, String>,
    requests: Vec<Request>,
}

#[derive(Clone, Default)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Receiver {
    fn state(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap()
    }

    fn expect(&self, path: &str, secret: &str, script: Vec<Answer>, then: Answer) {
        let mut state = self.state();
        state.secrets.insert(path.into(), secret.into());
        state.script.insert(path.into(), script.into());
        state.then.insert(path.into(), then);
    }

    fn then(&self, path: &str, then: Answer) {
        self.state().then.insert(path.into(), then);
    }

    fn requests(&self, path: &str) -> Vec<Request> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The bodies answered with a 2xx, once per message id (a receiver
    /// dedupes by `webhook-id`), in the order they arrived.
    fn delivered(&self, path: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.requests(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.status) && seen.insert(r.id.clone()))
            .map(|r| r.body)
            .collect()
    }

    async fn handle(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_owned();
        let (secret, answer) = {
            let mut state = self.state();
            let answer = match state.script.get_mut(&path).and_then(VecDeque::pop_front) {
                Some(answer) => answer,
                None => state
                    .then
                    .get(&path)
                    .cloned()
                    .unwrap_or(Answer::Status(404)),
            };
            (state.secrets.get(&path).cloned(), answer)
        };
        let secret = secret.expect("a path with a secret");
        check_signature(&secret, &headers, &body);
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let mut request = Request {
            path,
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp").parse().unwrap(),
            body: serde_json::from_slice(&body).unwrap(),
            status: 0,
        };
        let response = match answer {
            Answer::Status(status) => {
                request.status = status;
                StatusCode::from_u16(status).unwrap().into_response()
            }
            Answer::Throttle(after) => {
                request.status = 429;
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", after)]).into_response()
            }
            Answer::Hang(for_how_long) => {
                self.state().requests.push(request);
                self.arrived.notify_waiters();
                tokio::time::sleep(for_how_long).await;
                return StatusCode::OK.into_response();
            }
        };
        self.state().requests.push(request);
        self.arrived.notify_waiters();
        response
    }

    /// Serves on a free loopback port until the test ends (the runtime
    /// drops it); the base URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let receiver = self.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let receiver = receiver.clone();
            async move { receiver.handle(uri, headers, body).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }
}

/// Checks a request with the `standardwebhooks` crate: `verify` (which
/// reads the wall clock, so only for a timestamp within its 5 minutes of
/// it) or, for a timestamp the manual clock moved further, its `sign` of
/// the same id, timestamp and body against the header.
fn check_signature(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    let timestamp: i64 = headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "standardwebhooks' verify reads the wall clock"
    )]
    let wall = chrono::Utc::now().timestamp();
    if (wall - timestamp).abs() < 4 * 60 {
        webhook
            .verify(body, headers)
            .expect("the signature verifies");
    } else {
        let id = headers["webhook-id"].to_str().unwrap();
        let expected = webhook.sign(id, timestamp, body).unwrap();
        let given = headers["webhook-signature"].to_str().unwrap();
        assert!(
            given.split(' ').any(|s| s == expected),
            "{given} is not {expected}"
        );
    }
}

/// A store with connection `main`, a manual clock at the wall clock's now
/// (so `standardwebhooks` verifies the first attempts whole) and a key.
struct World {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: ManualClock,
    key: Arc<SecretKey>,
    conn: i64,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = tributary_store::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        #[allow(
            clippy::disallowed_methods,
            reason = "the manual clock starts at the wall clock's now"
        )]
        let start = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
        let clock = ManualClock::new(start);
        let conn = store
            .ensure_connection(
                NewConnection {
                    name: "main",
                    adapter: "pco",
                    base_url: "http://127.0.0.1:9",
                },
                start,
            )
            .await
            .unwrap()
            .id;
        Self {
            _dir: dir,
            store,
            clock,
            key: Arc::new(SecretKey::generate()),
            conn,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    /// A subscription to `url` (a new secret, sealed), from the feed's
    /// head; its secret.
    async fn subscribe(&self, url: &str, entity: Option<&str>) -> (Subscription, String) {
        self.subscribe_to(url, entity, true).await
    }

    /// [`World::subscribe`], to changes or to run ends only.
    async fn subscribe_to(
        &self,
        url: &str,
        entity: Option<&str>,
        wants_changes: bool,
    ) -> (Subscription, String) {
        let secret = tributary_secrets::generate_signing_secret();
        let sealed = tributary_secrets::seal_subscription_secret(&self.key, &secret, "main");
        let subscription = self
            .store
            .add_subscription(&NewSubscription {
                connection_id: self.conn,
                entity,
                url,
                sealed_secret: &sealed,
                wants_changes,
                wants_finished: true,
                cursor: self.store.feed_head().await.unwrap(),
                now: self.now(),
            })
            .await
            .unwrap();
        (subscription, secret.to_string())
    }

    async fn run(&self) -> i64 {
        self.store
            .start_run(self.conn, RunKind::Full, None, None, self.now())
            .await
            .unwrap()
            .run()
            .id
    }

    /// Commits one page (one transaction) of `entity` records.
    async fn commit(&self, run: i64, entity: &str, ids: &[&str]) {
        let records: Vec<PreparedRecord> = ids
            .iter()
            .map(|id| {
                PreparedRecord::new(SourceRecord {
                    entity: entity.into(),
                    external_id: (*id).into(),
                    source_updated_at: None,
                    raw: json!({"type": entity, "id": id}).into(),
                    canonical: json!({"name": id}),
                    edges: Vec::new(),
                })
            })
            .collect();
        let cursor = Cursor(json!({"after": ids.last()}));
        self.store
            .apply_page(PageWrite {
                connection_id: self.conn,
                run_id: run,
                entity,
                canonical_entity: entity,
                records: &records,
                quarantined: &[],
                cursor: &cursor,
                finished: false,
                total: None,
                mark: None,
                now: self.now(),
            })
            .await
            .unwrap();
        // The next page is another transaction (its own commit time).
        self.advance(1);
    }

    fn outbound(&self, options: OutboundOptions) -> Outbound {
        Outbound::new(
            self.store.clone(),
            Arc::new(self.clock.clone()),
            self.key.clone(),
            options,
        )
        .unwrap()
    }

    async fn messages(&self, subscription: i64) -> Vec<tributary_store::Message> {
        self.store
            .messages(&MessageQuery {
                subscription_id: Some(subscription),
                limit: 1_000,
                ..MessageQuery::default()
            })
            .await
            .unwrap()
    }
}

fn options() -> OutboundOptions {
    OutboundOptions {
        batch: 2,
        timeout: Duration::from_millis(300),
        ..OutboundOptions::default()
    }
}

/// Ticks until a pass neither enqueues nor attempts anything; every pass.
async fn settle(outbound: &Outbound) -> Vec<Tick> {
    let mut ticks = Vec::new();
    for _ in 0..50 {
        let tick = outbound.tick().await.unwrap();
        let idle = tick.enqueued == 0 && tick.attempts.is_empty();
        ticks.push(tick);
        if idle {
            return ticks;
        }
    }
    panic!("never idle: {ticks:?}");
}

/// The feed sequence numbers of the changes in delivered bodies, in order.
fn seqs(bodies: &[Value]) -> Vec<i64> {
    bodies
        .iter()
        .filter(|b| b["type"] == "changes")
        .flat_map(|b| b["data"]["changes"].as_array().unwrap().clone())
        .map(|c| c["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_arrives_once_in_order_through_failures_on_the_svix_schedule() {
    let world = World::new().await;
    let receiver = Receiver::default();
    let base = receiver.serve().await;
    let (subscription, secret) = world.subscribe(&format!("{base}/hooks"), None).await;
    let (_ends, ends_secret) = world
        .subscribe_to(&format!("{base}/ends"), None, false)
        .await;
    receiver.expect("/ends", &ends_secret, vec![], Answer::Status(200));
    receiver.expect(
        "/hooks",
        &secret,
        vec![
            Answer::Status(500),
            Answer::Throttle("600"),
            Answer::Hang(Duration::from_secs(3)),
        ],
        Answer::Status(204),
    );
    // Three transactions (3, 1 and 2 changes), then the run's end.
    let run = world.run().await;
    world.commit(run, "Person", &["a", "b", "c"]).await;
    world.commit(run, "Person", &["d"]).await;
    world.commit(run, "Household", &["h1", "h2"]).await;
    world
        .store
        .finish_run(run, RunState::Succeeded, None, false, world.now())
        .await
        .unwrap();
    let head = world.store.feed_head().await.unwrap();
    let outbound = world.outbound(options());
    let t0 = world.now();

    // Batches of at most 2, whole transactions only: [a b c] (one
    // transaction larger than the limit), [d], [h1 h2]; then the run's end.
    let first = outbound.tick().await.unwrap();
    // 4 for /hooks, and the run's end for /ends (which wants only those).
    assert_eq!(first.enqueued, 5, "{first:?}");
    let queued = world.messages(subscription.id).await;
    let events: Vec<&str> = queued.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(events, ["changes", "changes", "changes", "sync.finished"]);
    let sizes: Vec<usize> = queued
        .iter()
        .filter(|m| m.event == "changes")
        .map(|m| {
            serde_json::from_str::<Value>(&m.body).unwrap()["data"]["changes"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [3, 1, 2]);
    // Attempt 1: 500 → again 5 s later.
    let ours: Vec<_> = first
        .attempts
        .iter()
        .filter(|a| a.subscription_id == subscription.id)
        .collect();
    assert!(
        matches!(
            &ours[..],
            [a] if a.attempt == 1 && matches!(&a.outcome, Attempted::Retry { status: Some(500), at, .. } if *at == t0 + chrono::Duration::seconds(5))
        ),
        "{first:?}"
    );
    // Nothing else goes meanwhile: a subscription's messages go in order.
    assert!(outbound.tick().await.unwrap().attempts.is_empty());
    world.advance(4);
    assert!(outbound.tick().await.unwrap().attempts.is_empty());

    // Attempt 2 at +5 s: 429 with Retry-After 600 s, later than the
    // schedule's 5 min: the next attempt waits 600 s.
    world.advance(1);
    let second = outbound.tick().await.unwrap();
    let t2 = world.now();
    assert!(
        matches!(
            &second.attempts[..],
            [a] if a.attempt == 2 && matches!(&a.outcome, Attempted::Retry { status: Some(429), at, .. } if *at == t2 + chrono::Duration::seconds(600))
        ),
        "{second:?}"
    );
    world.advance(599);
    assert!(outbound.tick().await.unwrap().attempts.is_empty());

    // Attempt 3 at +605 s hangs past the timeout: again after 30 min.
    world.advance(1);
    let third = outbound.tick().await.unwrap();
    let t3 = world.now();
    assert!(
        matches!(
            &third.attempts[..],
            [a] if a.attempt == 3 && matches!(&a.outcome, Attempted::Retry { status: None, at, error } if *at == t3 + chrono::Duration::minutes(30) && error.contains("no answer within"))
        ),
        "{third:?}"
    );

    // Attempt 4 at +30 min is answered; the rest follow, one per pass.
    world.advance(30 * 60);
    let rest = settle(&outbound).await;
    let delivered: Vec<i64> = rest
        .iter()
        .flat_map(|t| &t.attempts)
        .map(|a| {
            assert!(matches!(a.outcome, Attempted::Delivered { status: 204 }));
            a.attempt
        })
        .collect();
    assert_eq!(delivered, [4, 1, 1, 1]);

    // The attempts' times, as the receiver saw them.
    let times: Vec<i64> = receiver
        .requests("/hooks")
        .iter()
        .map(|r| r.timestamp - t0.timestamp())
        .collect();
    assert_eq!(times[..4], [0, 5, 605, 605 + 1_800]);
    // Every message under one id on every attempt; each change once, in
    // feed order; the run's end last, with its counts and the cursor.
    let requests = receiver.requests("/hooks");
    assert!(requests[..4].iter().all(|r| r.id == requests[0].id));
    assert!(requests[0].id.starts_with("msg_"));
    let bodies = receiver.delivered("/hooks");
    assert_eq!(bodies.len(), 4);
    let all = world.store.changes(Some(world.conn), 0, 100).await.unwrap();
    assert_eq!(seqs(&bodies), all.iter().map(|c| c.seq).collect::<Vec<_>>());
    let finished = &bodies[3];
    assert_eq!(finished["type"], "sync.finished");
    assert_eq!(finished["data"]["run"]["id"], run);
    assert_eq!(finished["data"]["run"]["state"], "succeeded");
    assert_eq!(finished["data"]["counts"]["created"], 6);
    assert_eq!(finished["data"]["entities"]["Person"]["created"], 4);
    assert_eq!(finished["data"]["entities"]["Household"]["created"], 2);
    assert_eq!(finished["data"]["cursor"], head);
    assert_eq!(bodies[2]["data"]["cursor"], head);
    let stored = world.messages(subscription.id).await;
    assert!(stored.iter().all(|m| m.state == MessageState::Delivered));
    // Run ends only: one message, at once, telling the same cursor.
    let ends = receiver.delivered("/ends");
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["type"], "sync.finished");
    assert_eq!(ends[0]["data"]["cursor"], head);
    assert_eq!(
        world
            .store
            .subscription(subscription.id)
            .await
            .unwrap()
            .unwrap()
            .cursor,
        head
    );

    // New changes later: only they are sent.
    let next = world.run().await;
    world.commit(next, "Person", &["z"]).await;
    settle(&outbound).await;
    let bodies = receiver.delivered("/hooks");
    assert_eq!(bodies.len(), 5);
    let new: Vec<i64> = world
        .store
        .changes(Some(world.conn), head, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs(&bodies[4..]), new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_last_failure_dead_letters_and_replay_redelivers() {
    let world = World::new().await;
    let receiver = Receiver::default();
    let base = receiver.serve().await;
    let (failing, failing_secret) = world.subscribe(&format!("{base}/failing"), None).await;
    let (gone, gone_secret) = world
        .subscribe(&format!("{base}/gone"), Some("Person"))
        .await;
    receiver.expect("/failing", &failing_secret, vec![], Answer::Status(503));
    receiver.expect("/gone", &gone_secret, vec![], Answer::Status(410));
    let run = world.run().await;
    world.commit(run, "Person", &["a"]).await;
    let outbound = world.outbound(options());

    // 410 Gone: the subscription is disabled, its message waits.
    let first = outbound.tick().await.unwrap();
    assert_eq!(first.attempts.len(), 2);
    let disabled = world.store.subscription(gone.id).await.unwrap().unwrap();
    assert_eq!(disabled.state, SubscriptionState::Disabled);
    assert!(
        disabled
            .disabled_reason
            .as_deref()
            .unwrap()
            .contains("410 Gone"),
        "{disabled:?}"
    );

    // The other fails every attempt on the schedule, then is dead.
    for delay in [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000] {
        world.advance(delay);
        let tick = outbound.tick().await.unwrap();
        assert_eq!(tick.attempts.len(), 1, "{tick:?}");
        assert_eq!(tick.attempts[0].subscription_id, failing.id);
    }
    let dead = world.messages(failing.id).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].state, dead[0].attempts), (MessageState::Dead, 8));
    assert_eq!(dead[0].last_status, Some(503));
    assert_eq!(receiver.requests("/failing").len(), 8);
    assert_eq!(
        receiver.requests("/gone").len(),
        1,
        "disabled: not tried again"
    );
    world.advance(100_000);
    assert!(outbound.tick().await.unwrap().attempts.is_empty());

    // Replayed once the receiver is back: delivered under the same id.
    receiver.then("/failing", Answer::Status(200));
    assert_eq!(
        world
            .store
            .replay_messages(failing.id, &[], world.now())
            .await
            .unwrap(),
        1
    );
    let replayed = outbound.tick().await.unwrap();
    assert!(
        matches!(
            &replayed.attempts[..],
            [a] if a.attempt == 1 && a.message_id == dead[0].message_id && matches!(a.outcome, Attempted::Delivered { status: 200 })
        ),
        "{replayed:?}"
    );
    assert_eq!(receiver.delivered("/failing").len(), 1);

    // Enabled again: the waiting message (and what came meanwhile) goes.
    world.commit(run, "Person", &["b"]).await;
    world.commit(run, "Household", &["h"]).await;
    receiver.then("/gone", Answer::Status(200));
    world
        .store
        .set_subscription_state(gone.id, SubscriptionState::Active, None, world.now())
        .await
        .unwrap();
    settle(&outbound).await;
    let bodies = receiver.delivered("/gone");
    let ids: Vec<&str> = bodies
        .iter()
        .flat_map(|b| b["data"]["changes"].as_array().unwrap())
        .map(|c| c["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "its entity only, each change once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_pending_deliveries_without_duplicates() {
    let world = World::new().await;
    let receiver = Receiver::default();
    let base = receiver.serve().await;
    let (subscription, secret) = world.subscribe(&format!("{base}/hooks"), None).await;
    receiver.expect(
        "/hooks",
        &secret,
        vec![Answer::Status(500), Answer::Hang(Duration::from_secs(20))],
        Answer::Status(200),
    );
    let run = world.run().await;
    for page in [["a", "b"], ["c", "d"], ["e", "f"]] {
        world.commit(run, "Person", &page).await;
    }
    let long = OutboundOptions {
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(20),
        ..options()
    };

    // The first process: attempt 1 fails; it stops.
    let first = world.outbound(long.clone());
    let tick = first.tick().await.unwrap();
    assert_eq!((tick.enqueued, tick.attempts.len()), (3, 1));
    drop(first);

    // The second runs its loop; attempt 2 hangs, and it is stopped in the
    // middle of it: the claim is given back, the attempt uncounted.
    world.advance(5);
    let second = world.outbound(long.clone()).start();
    let arrived = receiver.arrived.notified();
    second.wake();
    tokio::time::timeout(Duration::from_secs(10), arrived)
        .await
        .expect("attempt 2 arrives");
    second.shutdown().await;
    let waiting = world.messages(subscription.id).await;
    assert_eq!(
        waiting
            .iter()
            .map(|m| (m.state, m.attempts))
            .collect::<Vec<_>>(),
        [
            (MessageState::Pending, 1),
            (MessageState::Pending, 0),
            (MessageState::Pending, 0)
        ]
    );
    assert_eq!(waiting[0].next_attempt_at, world.now(), "due at once");

    // More changes while nothing runs; a third process resumes: every
    // message once (the interrupted one again, under its id), the new
    // changes enqueued once, nothing enqueued twice.
    world.commit(run, "Person", &["g"]).await;
    let third = world.outbound(long);
    settle(&third).await;
    let bodies = receiver.delivered("/hooks");
    let all = world.store.changes(Some(world.conn), 0, 100).await.unwrap();
    assert_eq!(seqs(&bodies), all.iter().map(|c| c.seq).collect::<Vec<_>>());
    let stored = world.messages(subscription.id).await;
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|m| m.state == MessageState::Delivered));
    let ids: Vec<String> = receiver
        .requests("/hooks")
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids[0], ids[1], "the interrupted attempt's message, again");
    assert_eq!(ids[1], ids[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_holds_up_another_subscription() {
    let world = World::new().await;
    let receiver = Receiver::default();
    let base = receiver.serve().await;
    let (_slow, slow_secret) = world.subscribe(&format!("{base}/slow"), None).await;
    let (fast, fast_secret) = world.subscribe(&format!("{base}/fast"), None).await;
    receiver.expect(
        "/slow",
        &slow_secret,
        vec![],
        Answer::Hang(Duration::from_secs(20)),
    );
    receiver.expect("/fast", &fast_secret, vec![], Answer::Status(200));
    let run = world.run().await;
    world.commit(run, "Person", &["a"]).await;
    let handle = world
        .outbound(OutboundOptions {
            timeout: Duration::from_secs(30),
            poll: Duration::from_millis(20),
            ..options()
        })
        .start();
    handle.wake();
    // The fast one's message is delivered while the slow one's request
    // is still open; more changes follow it, and go too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.delivered("/fast").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fast receiver waited"
        );
        let arrived = receiver.arrived.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
    }
    world.commit(run, "Person", &["b"]).await;
    handle.wake();
    while receiver.delivered("/fast").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fast receiver waited"
        );
        let arrived = receiver.arrived.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
    }
    assert_eq!(
        receiver.requests("/slow").len(),
        1,
        "still in its first attempt"
    );
    assert_eq!(seqs(&receiver.delivered("/fast")).len(), 2);
    // Recorded as delivered (the answer reaches the service just after the
    // receiver counts it).
    loop {
        let fast_messages = world.messages(fast.id).await;
        if fast_messages
            .iter()
            .all(|m| m.state == MessageState::Delivered)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{fast_messages:?}");
        tokio::task::yield_now().await;
    }
    handle.shutdown().await;
}
