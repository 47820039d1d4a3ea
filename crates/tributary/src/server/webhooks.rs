//! `POST /webhooks/{connection}`: checks the signature over the raw body
//! bytes, keeps the deliveries in the inbox (committed before the answer)
//! and answers. Nothing else: applying them is the inbox worker's job.
//!
//! Answers: 200 with what was stored (a duplicate is a 200 too, stored
//! once); 401 for a missing or wrong signature, or a timestamp past the
//! tolerance; 400 for an authentic request that is no delivery; 404 for a
//! connection that does not exist or whose adapter sends no webhooks; 413
//! for a body over the limit; 503 when the store does not answer (the
//! sender retries). Every refusal is counted and logged with the connection
//! and the reason — never the secret or the body.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tributary_core::Clock;
use tributary_manifest::Manifest;
use tributary_secrets::{SecretKey, open_webhook_secret};
use tributary_store::{Connection, NewDelivery, Received, Store};
use tributary_webhooks::{DEFAULT_TOLERANCE, Rejection, Scheme, verify};

/// A connection's adapter manifest (`Err`: why there is none).
pub type Manifests = dyn Fn(&Connection) -> Result<Arc<Manifest>, String> + Send + Sync;

/// How long a connection's secrets are used before they are read again
/// (so a removed secret stops working within this time); a request no
/// secret matches looks at the stored secrets' ids at once (one indexed
/// query, nothing opened unless they changed), so a secret just added
/// works on its first delivery.
pub const SECRETS_FRESH_FOR: Duration = Duration::from_secs(10);

/// Options of [`Ingest`].
pub struct IngestOptions {
    /// How far a Standard Webhooks timestamp may be from now, either way.
    pub tolerance: Duration,
    /// The largest body read (a larger one is answered 413, unread).
    pub max_body: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            tolerance: DEFAULT_TOLERANCE,
            max_body: tributary_webhooks::DEFAULT_MAX_BODY,
        }
    }
}

/// Takes webhook deliveries in: verifies and stores them.
pub struct Ingest {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: Option<Arc<SecretKey>>,
    manifests: Arc<Manifests>,
    options: IngestOptions,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    stored: AtomicU64,
    duplicates: AtomicU64,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").finish_non_exhaustive()
    }
}

/// What a connection's endpoint checks against.
struct Endpoint {
    connection_id: i64,
    scheme: Scheme,
    secrets: Vec<tributary_webhooks::SecretKey>,
    loaded_at: Instant,
}

/// Why a connection's endpoint cannot take deliveries.
enum Unusable {
    /// 404: no such connection, or its adapter sends no webhooks.
    NotFound(String),
    /// 503: the store or the secret key is not there right now.
    Unavailable(String),
}

impl Ingest {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: Option<Arc<SecretKey>>,
        manifests: Arc<Manifests>,
        options: IngestOptions,
    ) -> Self {
        Self {
            store,
            clock,
            key,
            manifests,
            options,
            endpoints: Mutex::new(HashMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    /// The largest body read.
    pub fn max_body(&self) -> usize {
        self.options.max_body
    }

    /// The counters in Prometheus' text format: deliveries stored and
    /// duplicates, and refused requests by reason.
    pub fn metrics(&self) -> String {
        let mut out = String::from(
            "# HELP tributary_webhook_deliveries_total Verified webhook deliveries, by outcome.\n\
             # TYPE tributary_webhook_deliveries_total counter\n",
        );
        for (outcome, counter) in [("stored", &self.stored), ("duplicate", &self.duplicates)] {
            out.push_str(&format!(
                "tributary_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        out.push_str(
            "# HELP tributary_webhook_refused_total Webhook requests refused, by reason.\n\
             # TYPE tributary_webhook_refused_total counter\n",
        );
        for (reason, n) in self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "tributary_webhook_refused_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        out
    }

    fn count(&self, reason: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// The endpoint of connection `name`: cached, or read again when stale
    /// or `again`.
    async fn endpoint(&self, name: &str, again: bool) -> Result<Arc<Endpoint>, Unusable> {
        let cached = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if let Some(endpoint) = &cached
            && endpoint.loaded_at.elapsed() < SECRETS_FRESH_FOR
        {
            if !again {
                return Ok(endpoint.clone());
            }
            // Asked again (no secret matched): reopen only if the stored
            // secrets are not the ones held.
            let stored = self
                .store
                .webhook_secrets(endpoint.connection_id)
                .await
                .map_err(|e| Unusable::Unavailable(e.to_string()))?;
            let held: Vec<i64> = endpoint.secrets.iter().map(|s| s.id).collect();
            if stored.iter().map(|s| s.id).eq(held.iter().copied()) {
                return Ok(endpoint.clone());
            }
        }
        let endpoint = Arc::new(self.load(name).await?);
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), endpoint.clone());
        Ok(endpoint)
    }

    async fn load(&self, name: &str) -> Result<Endpoint, Unusable> {
        let unavailable = |e: tributary_store::Error| Unusable::Unavailable(e.to_string());
        let connection = self
            .store
            .connection(name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Unusable::NotFound(format!("no connection named `{name}`")))?;
        // This process's configuration, not the sender's mistake: 503, so
        // the sender retries once serve is started right.
        let manifest = (self.manifests)(&connection).map_err(Unusable::Unavailable)?;
        let scheme = manifest.webhook_scheme.ok_or_else(|| {
            Unusable::NotFound(format!(
                "adapter `{}` sends no webhooks (its manifest has no [webhooks] section)",
                connection.adapter
            ))
        })?;
        let scheme = crate::cmd::webhooks::scheme_of(scheme);
        let sealed = self
            .store
            .webhook_secrets(connection.id)
            .await
            .map_err(unavailable)?;
        let mut secrets = Vec::with_capacity(sealed.len());
        if !sealed.is_empty() {
            let key = self.key.as_ref().ok_or_else(|| {
                Unusable::Unavailable(
                    "no secret key (TRIBUTARY_SECRET_KEY or TRIBUTARY_SECRET_KEY_FILE) to open the webhook secrets".to_owned(),
                )
            })?;
            for secret in sealed {
                let text =
                    open_webhook_secret(key, &secret.sealed, &connection.name).map_err(|e| {
                        Unusable::Unavailable(format!("webhook secret {}: {e}", secret.id))
                    })?;
                let key = scheme.key(&text).map_err(|why| {
                    Unusable::Unavailable(format!("webhook secret {}: {why}", secret.id))
                })?;
                secrets.push(tributary_webhooks::SecretKey {
                    id: secret.id,
                    event: secret.event,
                    key,
                });
            }
        }
        Ok(Endpoint {
            connection_id: connection.id,
            scheme,
            secrets,
            loaded_at: Instant::now(),
        })
    }

    /// Verifies and stores one request; the response to send.
    async fn receive(
        &self,
        connection: &str,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let refuse = |status: StatusCode, reason: &'static str, message: String| {
            self.count(reason);
            tracing::warn!(connection, reason, status = status.as_u16(), %message, "webhook refused");
            (status, Json(json!({ "error": message }))).into_response()
        };
        let body = match body {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is over {} bytes", self.options.max_body),
                );
            }
            Err(rejection) => {
                return refuse(rejection.status(), "unreadable", rejection.body_text());
            }
        };
        let mut endpoint = match self.endpoint(connection, false).await {
            Ok(endpoint) => endpoint,
            Err(Unusable::NotFound(why)) => return refuse(StatusCode::NOT_FOUND, "not_found", why),
            Err(Unusable::Unavailable(why)) => {
                // The detail is the operator's (logged), not the caller's.
                tracing::error!(connection, %why, "webhook endpoint unavailable");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "unavailable for now; try again later".to_owned(),
                );
            }
        };
        let now = self.clock.now();
        let check = |endpoint: &Endpoint| {
            verify(
                endpoint.scheme,
                headers,
                &body,
                &endpoint.secrets,
                now,
                self.options.tolerance,
            )
        };
        let mut verified = check(&endpoint);
        // No secret matched: perhaps one was added since they were read.
        if matches!(verified, Err(Rejection::BadSignature | Rejection::NoSecret))
            && let Ok(fresh) = self.endpoint(connection, true).await
        {
            endpoint = fresh;
            verified = check(&endpoint);
        }
        let verified = match verified {
            Ok(verified) => verified,
            Err(rejection) => {
                let status =
                    StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                return refuse(status, rejection.reason(), rejection.to_string());
            }
        };
        let deliveries: Vec<NewDelivery> = verified
            .deliveries
            .into_iter()
            .map(|d| NewDelivery {
                connection_id: endpoint.connection_id,
                delivery_id: d.id,
                event: d.event,
                sent_at: d.sent_at,
                received_at: now,
                payload: d.payload,
            })
            .collect();
        match self.store.receive_deliveries(&deliveries).await {
            Ok(received) => {
                let stored: Vec<i64> = received
                    .iter()
                    .filter_map(|r| match r {
                        Received::Stored(id) => Some(*id),
                        Received::Duplicate => None,
                    })
                    .collect();
                let duplicates = received.len() - stored.len();
                self.stored
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                self.duplicates
                    .fetch_add(duplicates as u64, Ordering::Relaxed);
                tracing::debug!(
                    connection,
                    stored = stored.len(),
                    duplicates,
                    "webhook received"
                );
                Json(json!({ "stored": stored, "duplicates": duplicates })).into_response()
            }
            Err(error) => {
                tracing::error!(connection, %error, "a verified delivery could not be stored");
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store",
                    "the delivery could not be stored; try again later".to_owned(),
                )
            }
        }
    }
}

/// The handler of `POST /webhooks/{connection}`.
pub async fn receive(
    State(state): State<super::AppState>,
    Path(connection): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = state.webhooks.receive(&connection, &headers, body).await;
    if response.status() == StatusCode::OK {
        // Stored: the service applies them now, not at its next poll.
        state.service.wake();
    }
    response
}
