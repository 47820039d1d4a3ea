//! Clerk webhooks through a real receiver on loopback: Svix signatures (verified here with an
//! independent HMAC), order, retries, and the duplicate / reorder / forged / stale knobs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tributary_sim::clerk::{ClerkConfig, ClerkSim, ClerkWebhookOptions, serve_clerk};
use tributary_sim::{Clock as _, ManualClock};

use crate::clerk_common::{config, sim_with};

/// Standard Webhooks verification, written here from the specification: the signed content is
/// `{id}.{timestamp}.{body}`, the key the base64 after `whsec_`, and any `v1,` entry may match.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

#[test]
fn clerk_the_test_verifier_matches_the_published_vectors() {
    assert!(verify(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    ));
    assert!(verify(
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        "1649367553",
        br#"{"email":"test@example.com","username":"test_user"}"#,
        "v1a,xyz v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    ));
    assert!(!verify(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265331",
        br#"{"test": 2432232314}"#,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    ));
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: i64,
    body: Value,
    signed: bool,
    fresh: bool,
    status: u16,
    content_type: String,
}

/// A receiver that verifies (unless `trusting`): bad signature or a timestamp more than
/// 5 minutes off → 401; it first refuses `refuse` requests with a 500.
#[derive(Clone)]
struct Receiver {
    secret: Arc<Mutex<String>>,
    clock: Arc<ManualClock>,
    got: Arc<Mutex<Vec<Got>>>,
    refuse: Arc<Mutex<usize>>,
    trusting: bool,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts) = (header("svix-id"), header("svix-timestamp"));
    let secret = r.secret.lock().unwrap().clone();
    let signed = verify(&secret, &id, &ts, &body, &header("svix-signature"));
    let timestamp: i64 = ts.parse().unwrap_or(0);
    let fresh = (r.clock.now().timestamp() - timestamp).abs() <= 300;
    let status = {
        let mut refuse = r.refuse.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            500
        } else if r.trusting || (signed && fresh) {
            204
        } else {
            401
        }
    };
    r.got.lock().unwrap().push(Got {
        id,
        timestamp,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed,
        fresh,
        status,
        content_type: header("content-type"),
    });
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(clock: Arc<ManualClock>, refuse: usize, trusting: bool) -> (Receiver, String) {
    let r = Receiver {
        secret: Arc::default(),
        clock,
        got: Arc::default(),
        refuse: Arc::new(Mutex::new(refuse)),
        trusting,
    };
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

/// A simulator with these knobs, a receiver registered as its endpoint.
async fn setup(
    webhooks: ClerkWebhookOptions,
    refuse: usize,
    trusting: bool,
) -> (ClerkSim, Receiver) {
    let (sim, clock) = sim_with(ClerkConfig {
        webhooks,
        ..config(21, 120)
    });
    let (r, url) = receiver(clock, refuse, trusting).await;
    let secret = sim.add_endpoint(&url).unwrap();
    assert!(secret.starts_with("whsec_"));
    *r.secret.lock().unwrap() = secret;
    (sim, r)
}

async fn idle_within(sim: &ClerkSim) {
    tokio::time::timeout(Duration::from_secs(30), sim.idle())
        .await
        .expect("the deliveries are not done within 30 s");
}

fn fast(options: ClerkWebhookOptions) -> ClerkWebhookOptions {
    ClerkWebhookOptions {
        retry_backoff: Duration::from_millis(5),
        ..options
    }
}

#[tokio::test]
async fn clerk_webhooks_are_signed_and_delivered_in_order() {
    let (sim, r) = setup(fast(ClerkWebhookOptions::default()), 0, false).await;
    let events = sim.mutate(40, 1);
    idle_within(&sim).await;
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), events.len());
    let now = r.clock.now().timestamp();
    for (g, e) in got.iter().zip(&events) {
        assert!(g.signed && g.fresh && g.status == 204, "{g:?}");
        assert_eq!(g.id, e.id);
        assert_eq!(g.body, e.envelope());
        assert_eq!(g.timestamp, now);
        assert_eq!(g.content_type, "application/json");
        assert_eq!(g.body["object"], "event");
        assert_eq!(g.body["instance_id"], sim.instance_id());
        assert_eq!(g.body["timestamp"], e.timestamp);
    }
    let stats = sim.webhook_stats();
    assert_eq!(stats.deliveries, events.len() as u64);
    assert_eq!(stats.acknowledged, events.len() as u64);
    assert_eq!((stats.failed, stats.retried, stats.refused), (0, 0, 0));
}

#[tokio::test]
async fn clerk_webhooks_retry_until_acknowledged_then_give_up() {
    let (sim, r) = setup(fast(ClerkWebhookOptions::default()), 3, false).await;
    let events = sim.mutate(5, 2);
    idle_within(&sim).await;
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), events.len() + 3);
    assert!(
        got[..3]
            .iter()
            .all(|g| g.status == 500 && g.id == events[0].id)
    );
    assert_eq!(sim.webhook_stats().retried, 3);
    assert_eq!(sim.webhook_stats().acknowledged, events.len() as u64);

    // A receiver that never acknowledges: every delivery fails after max_attempts.
    let (sim, r) = setup(
        fast(ClerkWebhookOptions {
            max_attempts: 2,
            ..ClerkWebhookOptions::default()
        }),
        usize::MAX,
        false,
    )
    .await;
    let events = sim.mutate(3, 3);
    idle_within(&sim).await;
    assert_eq!(r.got.lock().unwrap().len(), 2 * events.len());
    let stats = sim.webhook_stats();
    assert_eq!((stats.failed, stats.acknowledged), (events.len() as u64, 0));
}

#[tokio::test]
async fn clerk_webhook_knobs_never_lose_a_real_event() {
    let knobs = fast(ClerkWebhookOptions {
        duplicate: 0.3,
        reorder: 0.3,
        forged: 0.3,
        stale: 0.3,
        ..ClerkWebhookOptions::default()
    });
    let (sim, r) = setup(knobs, 0, false).await;
    let events = sim.mutate(120, 4);
    idle_within(&sim).await;
    let got = r.got.lock().unwrap().clone();
    let by_id: HashMap<&str, &tributary_sim::clerk::ClerkEvent> =
        events.iter().map(|e| (e.id.as_str(), e)).collect();
    let now = r.clock.now().timestamp();
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    let (mut forged, mut stale) = (0, 0);
    for g in &got {
        let event = by_id[g.id.as_str()];
        if g.status == 204 {
            // Whatever was accepted is genuine and fresh.
            assert_eq!(g.body, event.envelope());
            *accepted.entry(&g.id).or_default() += 1;
        } else if !g.signed {
            forged += 1;
            assert_eq!(g.status, 401);
        } else {
            stale += 1;
            assert!(!g.fresh && g.timestamp == now - 600, "{g:?}");
            assert_eq!(g.body, event.envelope(), "a replay carries the real body");
        }
    }
    // Every real event arrived correctly at least once; duplicates kept their svix-id.
    assert_eq!(accepted.len(), events.len());
    let stats = sim.webhook_stats();
    assert_eq!(
        accepted.values().sum::<usize>() as u64,
        stats.acknowledged + stats.duplicates
    );
    assert!(stats.duplicates > 10, "{stats:?}");
    assert!(
        accepted.values().any(|n| *n > 1),
        "a duplicate keeps its svix-id"
    );
    assert_eq!((stats.forged, stats.stale), (forged, stale));
    assert!(forged > 10 && stale > 10, "{stats:?}");
    assert_eq!(stats.refused, forged + stale);
    assert_eq!((stats.accepted_forgeries, stats.failed), (0, 0));
    // A forgery turns creations and updates into deletions.
    let tampered = got.iter().filter(|g| !g.signed).any(|g| {
        g.body["type"].as_str().unwrap().ends_with(".deleted")
            && by_id[g.id.as_str()].event_type.ends_with(".updated")
    });
    assert!(tampered);
    // Some deliveries were held back behind the next one.
    let order: Vec<usize> = got
        .iter()
        .filter(|g| g.status == 204)
        .map(|g| events.iter().position(|e| e.id == g.id).unwrap())
        .collect();
    assert!(order.windows(2).any(|w| w[0] > w[1]), "nothing reordered");
    let firsts: Vec<usize> = {
        let mut seen = HashSet::new();
        order.iter().copied().filter(|i| seen.insert(*i)).collect()
    };
    assert_eq!(firsts.len(), events.len());
}

#[tokio::test]
async fn clerk_a_trusting_receiver_accepts_forgeries() {
    let (sim, _r) = setup(
        fast(ClerkWebhookOptions {
            forged: 1.0,
            ..ClerkWebhookOptions::default()
        }),
        0,
        true,
    )
    .await;
    let events = sim.mutate(5, 5);
    idle_within(&sim).await;
    let stats = sim.webhook_stats();
    assert_eq!(stats.accepted_forgeries, events.len() as u64);
    assert_eq!(stats.acknowledged, events.len() as u64);
}

#[tokio::test]
async fn clerk_endpoints_with_a_given_secret_and_over_http() {
    let (sim, clock) = sim_with(config(22, 30));
    let (r, url) = receiver(clock, 0, false).await;
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert!(sim.add_endpoint_with_secret(&url, "not-a-secret").is_err());
    sim.add_endpoint_with_secret(&url, secret).unwrap();
    *r.secret.lock().unwrap() = secret.to_owned();
    let handle = serve_clerk(sim.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(handle.base_url().ends_with("/v1"));
    let client = crate::common::client();
    // A second endpoint over the control API: both get every event.
    let (r2, url2) = receiver(r.clock.clone(), 0, false).await;
    let created: Value = client
        .post(format!("{}/webhook_endpoints", handle.control_url()))
        .json(&json!({"url": url2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("ep_"));
    *r2.secret.lock().unwrap() = created["secret"].as_str().unwrap().to_owned();
    let mutated: Value = client
        .post(format!("{}/mutate", handle.control_url()))
        .json(&json!({"count": 6, "seed": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = mutated["events"].as_array().unwrap().len();
    let idle: Value = client
        .post(format!("{}/idle", handle.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(idle["idle"], true);
    for r in [&r, &r2] {
        let got = r.got.lock().unwrap().clone();
        assert_eq!(got.len(), n);
        assert!(got.iter().all(|g| g.signed && g.status == 204));
    }
    // The API answers over the socket too.
    let users = client
        .get(format!("{}/users?limit=3", handle.base_url()))
        .bearer_auth("sk_test_sim")
        .send()
        .await
        .unwrap();
    assert_eq!(users.status().as_u16(), 200);
    assert_eq!(
        users
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    handle.shutdown().await;
    // The sender does not depend on the server: deliveries go on after it stopped.
    let more = sim.mutate(2, 9).len();
    idle_within(&sim).await;
    assert_eq!(sim.webhook_stats().acknowledged, 2 * (n + more) as u64);
}
