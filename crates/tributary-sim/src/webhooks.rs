//! PCO's webhooks: subscriptions (`/webhooks/v2/webhook_subscriptions`,
//! each with its own `authenticity_secret`) and, for every create, update
//! and delete the simulator makes, a signed `EventDelivery` POSTed to each
//! active subscription of that event — in order, retried while the
//! receiver does not answer 2xx, with knobs for duplicates, reordering,
//! delay and bad signatures ([`WebhookOptions`]).
//!
//! Event names: `{app}.v2.events.{type}.{created|updated|destroyed}`
//! (`people.v2.events.phone_number.updated`), and
//! `people.v2.events.person_merger.created` for [`Simulator::merge`]. A
//! created or updated event's payload is the resource as the API serves it
//! at delivery time; a destroyed one's is its type and id.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::Simulator;
use crate::error::SimError;
use crate::schema::ResourceKind;
use crate::store::{Action, Changed};

/// The URL prefix of the Webhooks API.
pub(crate) const WEBHOOKS_PREFIX: &str = "/webhooks/v2";

/// Knobs of the deliveries, each a probability per delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookOptions {
    /// A delivery is sent a second time once acknowledged (a sender's
    /// retry after a lost answer).
    pub duplicate: f64,
    /// A delivery is held back and sent after the next one.
    pub reorder: f64,
    /// A delivery is signed with a wrong secret.
    pub bad_signature: f64,
    /// Every delivery waits this long before it is sent.
    pub delay: Duration,
    /// Attempts at a delivery the receiver does not acknowledge (2xx).
    pub max_attempts: u32,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            duplicate: 0.0,
            reorder: 0.0,
            bad_signature: 0.0,
            delay: Duration::ZERO,
            max_attempts: 5,
        }
    }
}

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub id: u64,
    /// The event name it receives.
    pub name: String,
    pub url: String,
    pub active: bool,
    /// Keys the HMAC-SHA256 of each delivery's body.
    pub authenticity_secret: String,
}

/// Deliveries sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Deliveries the receiver acknowledged (2xx).
    pub acknowledged: u64,
    /// Attempts that were not acknowledged (another followed, up to the
    /// limit).
    pub failed_attempts: u64,
    /// Deliveries given up after every attempt failed.
    pub given_up: u64,
    /// Second copies sent (the `duplicate` knob).
    pub duplicates: u64,
    /// Deliveries signed with a wrong secret (the `bad_signature` knob).
    pub bad_signatures: u64,
}

#[derive(Default)]
pub(crate) struct Webhooks {
    subscriptions: Mutex<Vec<Subscription>>,
    next_subscription: AtomicU64,
    next_delivery: AtomicU64,
    /// Whether the dispatcher runs (from the first subscription on).
    started: OnceLock<()>,
    stats: Mutex<WebhookStats>,
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The event name of a mutation.
pub fn event_name(kind: ResourceKind, action: &str) -> String {
    let app = kind
        .app()
        .prefix()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("people");
    format!("{app}.v2.events.{}.{action}", snake(kind.type_name()))
}

/// `secret`'s HMAC-SHA256 of `body`, in lowercase hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A deterministic 0..1 draw for delivery `n` and knob `salt`.
fn draw(seed: u64, n: u64, salt: u64) -> f64 {
    let mut x =
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Simulator {
    /// Subscribes `url` to event `name` (active), as `POST
    /// /webhooks/v2/webhook_subscriptions` does; its secret is new. Must be
    /// called inside a tokio runtime: the deliveries are sent from it.
    pub fn subscribe(&self, name: &str, url: &str) -> Subscription {
        let hooks = &self.inner.webhooks;
        let id = hooks.next_subscription.fetch_add(1, Ordering::Relaxed) + 1;
        let subscription = Subscription {
            id,
            name: name.to_owned(),
            url: url.to_owned(),
            active: true,
            authenticity_secret: sign(
                &format!("{}-{}", self.inner.config.seed, self.inner.config.org_id),
                format!("subscription {id} {name}").as_bytes(),
            ),
        };
        self.subscriptions_mut().push(subscription.clone());
        self.start_dispatcher();
        subscription
    }

    fn subscriptions_mut(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.inner
            .webhooks
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The subscriptions, oldest first.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.subscriptions_mut().clone()
    }

    /// Turns subscription `id` on or off; whether it exists.
    pub fn set_subscription_active(&self, id: u64, active: bool) -> bool {
        self.subscriptions_mut()
            .iter_mut()
            .find(|s| s.id == id)
            .map(|s| s.active = active)
            .is_some()
    }

    /// Removes subscription `id`; whether it existed.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut subs = self.subscriptions_mut();
        let before = subs.len();
        subs.retain(|s| s.id != id);
        subs.len() < before
    }

    /// The deliveries sent so far.
    pub fn webhook_stats(&self) -> WebhookStats {
        *self
            .inner
            .webhooks
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn start_dispatcher(&self) {
        if self.inner.webhooks.started.set(()).is_err() {
            return;
        }
        // The store's changes, in the order made.
        let (changes, mut received) = mpsc::unbounded_channel::<Changed>();
        self.inner.store.listen(changes);
        let sim = self.clone();
        tokio::spawn(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let Ok(client) = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            else {
                tracing::error!("the simulator cannot build its webhook client");
                return;
            };
            let mut held: VecDeque<(Subscription, String)> = VecDeque::new();
            while let Some(change) = received.recv().await {
                for (subscription, body) in sim.deliveries_of(change) {
                    let n = sim.inner.webhooks.next_delivery.load(Ordering::Relaxed);
                    let options = &sim.inner.config.webhooks;
                    if held.is_empty() && draw(sim.inner.config.seed, n, 1) < options.reorder {
                        held.push_back((subscription, body));
                        continue;
                    }
                    sim.deliver(&client, &subscription, &body).await;
                    while let Some((s, b)) = held.pop_front() {
                        sim.deliver(&client, &s, &b).await;
                    }
                }
                // Nothing follows (yet): a held delivery goes now.
                if received.is_empty() {
                    while let Some((s, b)) = held.pop_front() {
                        sim.deliver(&client, &s, &b).await;
                    }
                }
            }
        });
    }

    /// The delivery bodies of `event`, one per active subscription of it.
    fn deliveries_of(&self, Changed { kind, id, action }: Changed) -> Vec<(Subscription, String)> {
        let (name, payload) = match action {
            Action::Merged { keep } => (
                "people.v2.events.person_merger.created".to_owned(),
                json!({"data": {"type": "PersonMerger", "id": format!("{keep}-{id}"),
                    "attributes": {"person_to_keep_id": keep.to_string(),
                        "person_to_remove_id": id.to_string()}}}),
            ),
            _ => {
                let action = match action {
                    Action::Created => "created",
                    Action::Updated => "updated",
                    _ => "destroyed",
                };
                let data = match action {
                    "destroyed" => None,
                    _ => self.get(kind, id),
                }
                .unwrap_or_else(|| json!({"type": kind.type_name(), "id": id.to_string()}));
                (event_name(kind, action), json!({ "data": data }))
            }
        };
        self.subscriptions()
            .into_iter()
            .filter(|s| s.active && s.name == name)
            .map(|s| {
                let n = self
                    .inner
                    .webhooks
                    .next_delivery
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                let body = json!({"data": [{
                    "id": format!("delivery-{n}"),
                    "type": "EventDelivery",
                    "attributes": {"name": name, "attempt": 1, "payload": payload.to_string()},
                    "relationships": {"organization": {"data": {"type": "Organization",
                        "id": self.inner.config.org_id}}},
                }]});
                (s, body.to_string())
            })
            .collect()
    }

    /// Sends one delivery until acknowledged or out of attempts (each
    /// retry's body says its attempt), then perhaps a duplicate.
    async fn deliver(&self, client: &reqwest::Client, subscription: &Subscription, body: &str) {
        let options = self.inner.config.webhooks.clone();
        let seed = self.inner.config.seed;
        let n = self.inner.webhooks.next_delivery.load(Ordering::Relaxed);
        let mut body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let bump = |f: &dyn Fn(&mut WebhookStats)| {
            f(&mut self
                .inner
                .webhooks
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner()));
        };
        if !options.delay.is_zero() && !self.sleep(options.delay).await {
            return;
        }
        let bad = draw(seed, n, 2) < options.bad_signature;
        for attempt in 1..=options.max_attempts.max(1) {
            body["data"][0]["attributes"]["attempt"] = attempt.into();
            let text = body.to_string();
            let secret = match bad {
                true => format!("not-{}", subscription.authenticity_secret),
                false => subscription.authenticity_secret.clone(),
            };
            let sent = client
                .post(&subscription.url)
                .header("Content-Type", "application/json")
                .header(
                    "X-PCO-Webhooks-Authenticity",
                    sign(&secret, text.as_bytes()),
                )
                .body(text.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                bump(&|s| s.acknowledged += 1);
                if bad {
                    bump(&|s| s.bad_signatures += 1);
                }
                if draw(seed, n, 3) < options.duplicate {
                    let _ = client
                        .post(&subscription.url)
                        .header("Content-Type", "application/json")
                        .header(
                            "X-PCO-Webhooks-Authenticity",
                            sign(&secret, text.as_bytes()),
                        )
                        .body(text)
                        .send()
                        .await;
                    bump(&|s| s.duplicates += 1);
                }
                return;
            }
            bump(&|s| s.failed_attempts += 1);
            if attempt < options.max_attempts
                && !self
                    .sleep(Duration::from_millis(50 << attempt.min(6)))
                    .await
            {
                return;
            }
        }
        if bad {
            bump(&|s| s.bad_signatures += 1);
        }
        bump(&|s| s.given_up += 1);
    }
}

fn subscription_json(s: &Subscription) -> Value {
    json!({"type": "WebhookSubscription", "id": s.id.to_string(), "attributes": {
        "name": s.name, "url": s.url, "active": s.active,
        "authenticity_secret": s.authenticity_secret}})
}

fn id_of(id: &str) -> Result<u64, SimError> {
    id.parse()
        .map_err(|_| SimError::not_found(format!("WebhookSubscription {id:?} not found")))
}

/// `GET /webhooks/v2/webhook_subscriptions`
pub(crate) async fn list(State(sim): State<Simulator>) -> Response {
    let data: Vec<Value> = sim.subscriptions().iter().map(subscription_json).collect();
    let total = data.len();
    Json(json!({"data": data, "meta": {"total_count": total, "count": total}})).into_response()
}

/// `POST /webhooks/v2/webhook_subscriptions` with `data.attributes.name`
/// and `url` (and `active`, default true).
pub(crate) async fn create(State(sim): State<Simulator>, body: Bytes) -> Response {
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(doc) => doc,
        Err(e) => {
            return SimError::bad_request(format!("the body is not valid JSON: {e}"))
                .into_response();
        }
    };
    let attributes = &doc["data"]["attributes"];
    let (Some(name), Some(url)) = (attributes["name"].as_str(), attributes["url"].as_str()) else {
        return SimError::bad_request("data.attributes.name and data.attributes.url are required")
            .into_response();
    };
    let subscription = sim.subscribe(name, url);
    if attributes["active"] == Value::Bool(false) {
        sim.set_subscription_active(subscription.id, false);
    }
    let stored = sim
        .subscriptions()
        .into_iter()
        .find(|s| s.id == subscription.id)
        .unwrap_or(subscription);
    (
        axum::http::StatusCode::CREATED,
        Json(json!({"data": subscription_json(&stored)})),
    )
        .into_response()
}

/// `GET /webhooks/v2/webhook_subscriptions/{id}`
pub(crate) async fn get(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    let found = id_of(&id).map(|id| sim.subscriptions().into_iter().find(|s| s.id == id));
    match found {
        Ok(Some(s)) => Json(json!({"data": subscription_json(&s)})).into_response(),
        Ok(None) => {
            SimError::not_found(format!("WebhookSubscription {id} not found")).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `PATCH /webhooks/v2/webhook_subscriptions/{id}` (`active`).
pub(crate) async fn patch(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(active) = doc["data"]["attributes"]["active"].as_bool()
        && !sim.set_subscription_active(id, active)
    {
        return SimError::not_found(format!("WebhookSubscription {id} not found")).into_response();
    }
    get(State(sim), Path(id.to_string())).await
}

/// `DELETE /webhooks/v2/webhook_subscriptions/{id}`
pub(crate) async fn delete(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    match id_of(&id) {
        Ok(id) if sim.unsubscribe(id) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Ok(id) => {
            SimError::not_found(format!("WebhookSubscription {id} not found")).into_response()
        }
        Err(e) => e.into_response(),
    }
}
