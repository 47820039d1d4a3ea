//! Webhooks: subscriptions through PCO's Webhooks API, and signed
//! `EventDelivery` bodies POSTed to a receiver on loopback for every
//! mutation — in order, retried until acknowledged, with the knobs for
//! duplicates and bad signatures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tributary_sim::{ResourceKind, SimConfig, SimHandle, WebhookOptions, serve, sign_delivery};

/// What the receiver got: signature header and body, in arrival order;
/// it refuses the first `refuse` requests with a 500.
#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<(String, String)>>>,
    refuse: Arc<Mutex<usize>>,
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut refuse = inbox.refuse.lock().unwrap();
    if *refuse > 0 {
        *refuse -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let signature = headers
        .get("x-pco-webhooks-authenticity")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    inbox
        .got
        .lock()
        .unwrap()
        .push((signature, String::from_utf8_lossy(&body).into_owned()));
    StatusCode::NO_CONTENT
}

async fn receiver(refuse: usize) -> (Inbox, String) {
    let inbox = Inbox {
        refuse: Arc::new(Mutex::new(refuse)),
        ..Inbox::default()
    };
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (inbox, url)
}

/// Waits (bounded) until the receiver has `n` deliveries.
async fn wait_for(inbox: &Inbox, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = inbox.got.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A simulated account served on loopback with these delivery knobs.
async fn account(seed: u64, people: usize, webhooks: WebhookOptions) -> SimHandle {
    serve(
        SimConfig {
            seed,
            people,
            webhooks,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// The sender's counters once `done` holds of them (bounded wait).
async fn stats_when(
    sim: &tributary_sim::Simulator,
    done: impl Fn(&tributary_sim::WebhookStats) -> bool,
) -> tributary_sim::WebhookStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = sim.webhook_stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The delivery's event name and the JSON:API document its payload holds.
fn read(body: &str) -> (String, String, Value) {
    let doc: Value = serde_json::from_str(body).unwrap();
    let delivery = &doc["data"][0];
    assert_eq!(delivery["type"], "EventDelivery");
    let payload: Value =
        serde_json::from_str(delivery["attributes"]["payload"].as_str().unwrap()).unwrap();
    (
        delivery["id"].as_str().unwrap().to_owned(),
        delivery["attributes"]["name"].as_str().unwrap().to_owned(),
        payload,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_reach_each_subscription_signed_in_order_and_retried() {
    let handle = account(3, 20, WebhookOptions::default()).await;
    let base = handle.base_url();
    let sim = handle.simulator();
    // The receiver refuses the first two attempts: the sender retries.
    let (inbox, url) = receiver(2).await;
    let http = client();

    // Subscriptions through PCO's API (authenticated like the rest).
    let subscriptions = format!("{base}/webhooks/v2/webhook_subscriptions");
    let refused = http
        .post(&subscriptions)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let mut secrets = std::collections::HashMap::new();
    for event in [
        "people.v2.events.person.created",
        "people.v2.events.person.updated",
        "people.v2.events.email.destroyed",
        "people.v2.events.person_merger.created",
    ] {
        let created: Value = http
            .post(&subscriptions)
            .bearer_auth("sim-token")
            .json(&json!({"data": {"attributes": {"name": event, "url": url}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let attributes = &created["data"]["attributes"];
        assert_eq!(attributes["active"], true);
        secrets.insert(
            event.to_owned(),
            attributes["authenticity_secret"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let listed: Value = http
        .get(&subscriptions)
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["meta"]["total_count"], 4);
    // A subscription turned off gets nothing.
    let quiet = sim.subscribe("people.v2.events.phone_number.updated", &url);
    assert!(sim.set_subscription_active(quiet.id, false));

    let person = sim
        .create(
            ResourceKind::Person,
            &json!({"attributes": {"first_name": "Ada", "last_name": "Hook"}}),
        )
        .unwrap();
    let person_id: u64 = person["id"].as_str().unwrap().parse().unwrap();
    sim.update(
        ResourceKind::Person,
        person_id,
        &json!({"attributes": {"first_name": "Ada B."}}),
    )
    .unwrap();
    let email = sim.ids(ResourceKind::Email, 0, 1)[0];
    sim.delete(ResourceKind::Email, email).unwrap();
    let phone = sim.ids(ResourceKind::PhoneNumber, 0, 1)[0];
    sim.update(
        ResourceKind::PhoneNumber,
        phone,
        &json!({"attributes": {"number": "555"}}),
    )
    .unwrap();
    let (keep, merged) = {
        let people = sim.ids(ResourceKind::Person, 0, 2);
        (people[0], people[1])
    };
    sim.merge(keep, merged).unwrap();

    // Created, updated, the email's destruction, and the merger — in
    // order; the merger's own changes (moved children, the merged person's
    // destruction) only reach their subscribers (none here but updated).
    let got = wait_for(&inbox, 4).await;
    let events: Vec<(String, String, Value)> = got.iter().map(|(_, b)| read(b)).collect();
    let names: Vec<&str> = events.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "people.v2.events.person.created",
            "people.v2.events.person.updated",
            "people.v2.events.email.destroyed",
            "people.v2.events.person_merger.created",
        ]
    );
    for ((signature, body), (_, name, _)) in got.iter().zip(&events) {
        assert_eq!(signature, &sign_delivery(&secrets[name], body.as_bytes()));
    }
    assert_eq!(events[0].2["data"]["id"], person_id.to_string());
    assert_eq!(events[1].2["data"]["attributes"]["first_name"], "Ada B.");
    assert_eq!(
        events[2].2["data"],
        json!({"type": "Email", "id": email.to_string()})
    );
    assert_eq!(
        events[3].2["data"]["attributes"],
        json!({"person_to_keep_id": keep.to_string(), "person_to_remove_id": merged.to_string()})
    );
    // Every delivery has an id of its own; the retried one says its attempt.
    let mut ids: Vec<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let first: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(first["data"][0]["attributes"]["attempt"], 3);
    // The sender counts a delivery once its answer is back.
    let stats = stats_when(&sim, |s| s.acknowledged >= 4).await;
    assert_eq!(
        (stats.acknowledged, stats.failed_attempts, stats.given_up),
        (4, 2, 0)
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_bad_signature_knobs() {
    let handle = account(
        4,
        10,
        WebhookOptions {
            duplicate: 1.0,
            ..WebhookOptions::default()
        },
    )
    .await;
    let sim = handle.simulator();
    let (inbox, url) = receiver(0).await;
    let subscription = sim.subscribe("people.v2.events.person.updated", &url);
    let id = sim.ids(ResourceKind::Person, 0, 1)[0];
    sim.update(
        ResourceKind::Person,
        id,
        &json!({"attributes": {"first_name": "Twice"}}),
    )
    .unwrap();
    let got = wait_for(&inbox, 2).await;
    assert_eq!(got[0], got[1], "the same delivery, id and signature, twice");
    assert_eq!(
        got[0].0,
        sign_delivery(&subscription.authenticity_secret, got[0].1.as_bytes())
    );
    assert_eq!(stats_when(&sim, |s| s.duplicates >= 1).await.duplicates, 1);
    handle.shutdown().await;

    let handle = account(
        4,
        10,
        WebhookOptions {
            bad_signature: 1.0,
            max_attempts: 1,
            ..WebhookOptions::default()
        },
    )
    .await;
    let sim = handle.simulator();
    let (inbox, url) = receiver(0).await;
    let subscription = sim.subscribe("people.v2.events.person.updated", &url);
    sim.update(
        ResourceKind::Person,
        id,
        &json!({"attributes": {"first_name": "Forged"}}),
    )
    .unwrap();
    let got = wait_for(&inbox, 1).await;
    assert_ne!(
        got[0].0,
        sign_delivery(&subscription.authenticity_secret, got[0].1.as_bytes())
    );
    assert_eq!(
        stats_when(&sim, |s| s.bad_signatures >= 1)
            .await
            .bad_signatures,
        1
    );
    handle.shutdown().await;
}
