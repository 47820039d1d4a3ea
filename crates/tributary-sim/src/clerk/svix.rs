//! The Svix webhook sender: every event, to every endpoint registered when it was emitted, as
//! Clerk (through Svix) delivers it.
//!
//! * `POST {url}` with the event envelope as the JSON body and the headers `svix-id` (the
//!   event's `msg_…`, the same on a retry or a duplicate), `svix-timestamp` (Unix seconds of the
//!   attempt, from the simulator's [`Clock`]) and `svix-signature`
//!   (`v1,<base64 HMAC-SHA256 of "{svix-id}.{svix-timestamp}.{body}">`, keyed by the
//!   base64-decoded part of the endpoint's `whsec_…` secret).
//! * One background task sends the deliveries in the order the events were emitted. A
//!   delivery the receiver does not acknowledge (2xx) is retried up to
//!   [`ClerkWebhookOptions::max_attempts`] times, waiting `retry_backoff`, then twice as long,
//!   and so on; after the last attempt it counts as failed and the next one goes.
//!
//! The knobs ([`ClerkWebhookOptions`], each a probability per delivery, drawn from the seed):
//!
//! * `duplicate`: once acknowledged, the delivery is sent once more (same `svix-id`, same body,
//!   a fresh timestamp and signature) — a Svix retry after a lost answer.
//! * `reorder`: the delivery is held back and sent after the next one (when one is queued).
//! * `forged`: before the real delivery, an attacker's delivery with the same `svix-id` goes
//!   out, signed with a wrong secret, its body tampered: a created or updated user or
//!   organization becomes its `*.deleted` event, a created or updated membership becomes
//!   `organizationMembership.deleted` (other events keep their body). It is sent once; any
//!   non-2xx answer counts as `refused`, a 2xx as `accepted_forgeries`. The real delivery
//!   follows as usual, so nothing is lost by a receiver that refuses the forgery — and a
//!   receiver that marks the id as seen before verifying would drop the real one.
//! * `stale`: before the real delivery, the same delivery (same `svix-id` and body) signed
//!   correctly but with a timestamp 10 minutes old — a replay. Counted like a forgery; the real
//!   delivery follows.
//!
//! Events emitted while no endpoint is registered are not delivered (as with Svix, an
//! endpoint receives the messages sent after it was added).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

use super::error::ClerkError;
use super::events::ClerkEvent;
use crate::clock::Clock;
use crate::rng::{Rng, mix64};

/// How old a stale delivery's timestamp is.
pub const STALE_AGE: Duration = Duration::from_secs(600);

/// Knobs of the webhook deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct ClerkWebhookOptions {
    /// Share of acknowledged deliveries sent a second time.
    pub duplicate: f64,
    /// Share of deliveries held back and sent after the next one.
    pub reorder: f64,
    /// Share of deliveries preceded by a forged one (wrong secret, tampered body).
    pub forged: f64,
    /// Share of deliveries preceded by a stale replay (timestamp 10 minutes old).
    pub stale: f64,
    /// Attempts at a delivery the receiver does not acknowledge (at least 1).
    pub max_attempts: u32,
    /// Every delivery waits this long before it is sent.
    pub delay: Duration,
    /// The wait before the first retry (doubled for each further one).
    pub retry_backoff: Duration,
}

impl Default for ClerkWebhookOptions {
    fn default() -> Self {
        ClerkWebhookOptions {
            duplicate: 0.0,
            reorder: 0.0,
            forged: 0.0,
            stale: 0.0,
            max_attempts: 5,
            delay: Duration::ZERO,
            retry_backoff: Duration::from_millis(50),
        }
    }
}

/// The sender's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClerkWebhookStats {
    /// Events emitted (delivered or not).
    pub events: u64,
    /// Deliveries queued (one per event and endpoint).
    pub deliveries: u64,
    /// HTTP requests sent (every attempt, duplicate, forgery and replay).
    pub sent: u64,
    /// Deliveries the receiver acknowledged (2xx).
    pub acknowledged: u64,
    /// Attempts that were not acknowledged and retried.
    pub retried: u64,
    /// Deliveries given up after every attempt failed.
    pub failed: u64,
    /// Duplicate copies sent.
    pub duplicates: u64,
    /// Forged deliveries sent.
    pub forged: u64,
    /// Stale replays sent.
    pub stale: u64,
    /// Forged or stale deliveries the receiver refused (any non-2xx answer).
    pub refused: u64,
    /// Forged or stale deliveries the receiver acknowledged (it should not have).
    pub accepted_forgeries: u64,
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClerkEndpoint {
    /// `ep_…`
    pub id: String,
    pub url: String,
    /// `whsec_` and the base64 of the HMAC key.
    pub secret: String,
}

/// One event for one endpoint.
#[derive(Debug)]
struct Delivery {
    /// Its place in the queue (the index of its knob draws).
    n: u64,
    endpoint: ClerkEndpoint,
    msg_id: String,
    body: String,
    forged_body: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    queued: u64,
    done: u64,
}

/// The sender's side kept by the simulator.
pub(crate) struct Webhooks {
    seed: u64,
    options: ClerkWebhookOptions,
    endpoints: Mutex<Vec<ClerkEndpoint>>,
    queue: mpsc::UnboundedSender<Delivery>,
    /// Taken by the dispatcher when the first endpoint is added.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    progress: Arc<watch::Sender<Progress>>,
    stats: Arc<Mutex<ClerkWebhookStats>>,
    next_delivery: AtomicU64,
}

/// Svix's `v1,` signature of one delivery, or `None` if `secret` is not `whsec_` + base64.
pub(crate) fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// A `whsec_` secret of 24 random bytes.
pub(crate) fn new_secret(rng: &mut Rng) -> String {
    let bytes: Vec<u8> = (0..3).flat_map(|_| rng.next_u64().to_be_bytes()).collect();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// A deterministic 0..1 draw for delivery `n` and knob `salt`.
fn draw(seed: u64, n: u64, salt: u64) -> f64 {
    let x = mix64(seed ^ mix64(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Webhooks {
    pub(crate) fn new(seed: u64, options: ClerkWebhookOptions) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        Webhooks {
            seed,
            options,
            endpoints: Mutex::new(Vec::new()),
            queue,
            pending: Mutex::new(Some(pending)),
            progress: Arc::new(watch::Sender::new(Progress::default())),
            stats: Arc::new(Mutex::new(ClerkWebhookStats::default())),
            next_delivery: AtomicU64::new(0),
        }
    }

    fn bump(&self, f: impl FnOnce(&mut ClerkWebhookStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn stats(&self) -> ClerkWebhookStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn endpoints(&self) -> Vec<ClerkEndpoint> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers an endpoint (with a new secret unless given) and starts the dispatcher.
    /// Must run inside a tokio runtime.
    pub(crate) fn add(
        &self,
        url: &str,
        secret: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<ClerkEndpoint, ClerkError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClerkError::invalid_param(
                "url",
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let n = endpoints.len() as u64 + 1;
        let mut rng = Rng::new(self.seed, 0x5356_4958, n);
        let secret = match secret {
            Some(secret) if sign(secret, "msg", 0, "").is_some() => secret.to_owned(),
            Some(_) => {
                return Err(ClerkError::invalid_param(
                    "secret",
                    "a webhook secret is whsec_ followed by base64",
                ));
            }
            None => new_secret(&mut rng),
        };
        let endpoint = ClerkEndpoint {
            id: format!(
                "ep_{}",
                super::ids::ksuid(super::ids::GENERATED_END_MS, &mut rng)
            ),
            url: url.to_owned(),
            secret,
        };
        endpoints.push(endpoint.clone());
        drop(endpoints);
        self.start(clock);
        Ok(endpoint)
    }

    /// Queues `event` for every endpoint.
    pub(crate) fn enqueue(&self, event: &ClerkEvent) {
        self.bump(|s| s.events += 1);
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return;
        }
        let body = event.envelope().to_string();
        let forged_body = event.forged_envelope().to_string();
        for endpoint in endpoints {
            let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
            self.progress.send_modify(|p| p.queued += 1);
            self.bump(|s| s.deliveries += 1);
            let delivery = Delivery {
                n,
                endpoint,
                msg_id: event.id.clone(),
                body: body.clone(),
                forged_body: forged_body.clone(),
            };
            if self.queue.send(delivery).is_err() {
                self.progress.send_modify(|p| p.done += 1);
            }
        }
    }

    /// Waits until every queued delivery has been answered (or given up).
    pub(crate) async fn idle(&self) {
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|p| p.done >= p.queued).await;
    }

    fn start(&self, clock: Arc<dyn Clock>) {
        let Some(received) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "the Clerk simulator cannot build its webhook client");
                return;
            }
        };
        let dispatcher = Dispatcher {
            client,
            clock,
            seed: self.seed,
            options: self.options.clone(),
            stats: self.stats.clone(),
            progress: self.progress.clone(),
        };
        tokio::spawn(dispatcher.run(received));
    }
}

/// The background task. It holds no handle on the simulator: it ends when the simulator (the
/// queue's sender) is dropped.
struct Dispatcher {
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    seed: u64,
    options: ClerkWebhookOptions,
    stats: Arc<Mutex<ClerkWebhookStats>>,
    progress: Arc<watch::Sender<Progress>>,
}

/// What kind of request one POST is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Real,
    Forged,
    Stale,
}

impl Dispatcher {
    fn bump(&self, f: impl FnOnce(&mut ClerkWebhookStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn run(self, mut received: mpsc::UnboundedReceiver<Delivery>) {
        let mut held: VecDeque<Delivery> = VecDeque::new();
        while let Some(delivery) = received.recv().await {
            if held.is_empty() && draw(self.seed, delivery.n, 1) < self.options.reorder {
                held.push_back(delivery);
            } else {
                self.deliver(&delivery).await;
                while let Some(d) = held.pop_front() {
                    self.deliver(&d).await;
                }
            }
            // Nothing follows (yet): a held delivery goes now.
            if received.is_empty() {
                while let Some(d) = held.pop_front() {
                    self.deliver(&d).await;
                }
            }
        }
    }

    /// One delivery with its knobs: forgery, replay, the real one (retried), duplicate.
    async fn deliver(&self, d: &Delivery) {
        if !self.options.delay.is_zero() {
            tokio::time::sleep(self.options.delay).await;
        }
        let now = self.clock.now().timestamp();
        if draw(self.seed, d.n, 2) < self.options.forged {
            let mut rng = Rng::new(self.seed, 0x464F_5247, d.n);
            let wrong = new_secret(&mut rng);
            self.bump(|s| s.forged += 1);
            self.post(d, Kind::Forged, &wrong, now, &d.forged_body)
                .await;
        }
        if draw(self.seed, d.n, 3) < self.options.stale {
            self.bump(|s| s.stale += 1);
            let then = now - STALE_AGE.as_secs() as i64;
            self.post(d, Kind::Stale, &d.endpoint.secret, then, &d.body)
                .await;
        }
        let attempts = self.options.max_attempts.max(1);
        let mut acknowledged = false;
        for attempt in 1..=attempts {
            let now = self.clock.now().timestamp();
            if self
                .post(d, Kind::Real, &d.endpoint.secret, now, &d.body)
                .await
            {
                acknowledged = true;
                break;
            }
            if attempt < attempts {
                self.bump(|s| s.retried += 1);
                tokio::time::sleep(self.options.retry_backoff * (1 << (attempt - 1).min(10))).await;
            }
        }
        if acknowledged {
            self.bump(|s| s.acknowledged += 1);
            if draw(self.seed, d.n, 4) < self.options.duplicate {
                self.bump(|s| s.duplicates += 1);
                let now = self.clock.now().timestamp();
                self.post(d, Kind::Real, &d.endpoint.secret, now, &d.body)
                    .await;
            }
        } else {
            self.bump(|s| s.failed += 1);
        }
        self.progress.send_modify(|p| p.done += 1);
    }

    /// POSTs one request; whether the receiver acknowledged it (2xx).
    async fn post(
        &self,
        d: &Delivery,
        kind: Kind,
        secret: &str,
        timestamp: i64,
        body: &str,
    ) -> bool {
        let signature = sign(secret, &d.msg_id, timestamp, body).unwrap_or_default();
        self.bump(|s| s.sent += 1);
        let answer = self
            .client
            .post(&d.endpoint.url)
            .header("content-type", "application/json")
            .header("user-agent", "Svix-Webhooks/1.0 (tributary-sim)")
            .header("svix-id", &d.msg_id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        let ok = answer.is_ok_and(|r| r.status().is_success());
        match kind {
            Kind::Real => {}
            Kind::Forged | Kind::Stale if ok => self.bump(|s| s.accepted_forgeries += 1),
            Kind::Forged | Kind::Stale => self.bump(|s| s.refused += 1),
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_published_standard_webhooks_vector() {
        assert_eq!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            )
            .as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign("not-a-secret", "msg", 0, ""), None);
        let secret = new_secret(&mut Rng::new(1, 2, 3));
        assert!(secret.starts_with("whsec_") && sign(&secret, "m", 1, "b").is_some());
    }

    #[test]
    fn draws_are_uniform_enough() {
        let below = (0..10_000).filter(|&n| draw(7, n, 1) < 0.25).count();
        assert!((2_200..2_800).contains(&below), "{below}");
    }
}
