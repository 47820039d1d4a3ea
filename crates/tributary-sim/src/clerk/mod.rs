//! # A Clerk Backend API simulator
//!
//! A real HTTP server (axum on loopback) that serves a deterministic, generated Clerk instance
//! — users, organizations and organization memberships — through the Backend API (`/v1/...`,
//! Clerk's JSON shapes), sends Clerk's webhook events through a Svix-like sender, and offers a
//! control API (`/control/...`) to mutate the data and read back exactly what the API serves.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tributary_sim::clerk::{ClerkConfig, ClerkSim, serve_clerk};
//! let sim = ClerkSim::new(ClerkConfig { users: 5_000, ..ClerkConfig::default() });
//! let handle = serve_clerk(sim, "127.0.0.1:0".parse().unwrap()).await?;
//! println!("Clerk simulator at {}", handle.base_url()); // http://127.0.0.1:PORT/v1
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Data
//!
//! A pure function of [`ClerkConfig::seed`], [`ClerkConfig::users`] and
//! [`ClerkConfig::organizations`] (see `generate`): realistic and non-ASCII names, Clerk-shaped
//! ids (`user_`, `org_`, `orgmem_`, `idn_` and a KSUID), 1–3 e-mail addresses per user,
//! organizations with 1–20 distinct members (one `org:admin`, the others `org:member`),
//! timestamps in epoch milliseconds between 2024-01-01 and 2026-01-01. Everything lives in
//! memory.
//!
//! ## Backend API (`Authorization: Bearer <secret key>`)
//!
//! * `GET /v1/users` → a bare JSON array of `User`s; `order_by` (default `-created_at`) one of
//!   `created_at`, `updated_at`, `email_address`, `web3wallet`, `first_name`, `last_name`,
//!   `phone_number`, `username`, `last_active_at`, `last_sign_in_at`; filters `user_id`,
//!   `external_id`, `organization_id` (repeatable, `+`/`-` prefixes), `email_address`,
//!   `username` (repeatable), `banned`, `query`, `created_at_before`, `created_at_after`.
//! * `GET /v1/users/count` → `{"object": "total_count", "total_count": N}` (same filters).
//! * `GET /v1/users/{user_id}` → the `User`.
//! * `GET /v1/organizations` → `{"data": [Organization], "total_count": N}`; `order_by`
//!   (default `-created_at`) `created_at`, `name`, `members_count`; filters `query`,
//!   `organization_id`, `user_id`. As in Clerk, `members_count` and
//!   `missing_member_with_elevated_permissions` are included only with
//!   `include_members_count=true` and `include_missing_member_with_elevated_permissions=true`.
//! * `GET /v1/organizations/{organization_id}` (id or slug) → the `Organization` (same flags).
//! * `GET /v1/organization_memberships` (the whole instance) and
//!   `GET /v1/organizations/{organization_id}/memberships` → `{"data":
//!   [OrganizationMembership], "total_count": N}`; `order_by` (default `-created_at`)
//!   `created_at`, `first_name`, `last_name`, `username`, `email_address`, `phone_number`;
//!   filters `user_id`, `role`. A membership embeds its organization (with `members_count`)
//!   and its user's `public_user_data`, both as they are now.
//! * `limit` 1–500 (default 10), `offset` ≥ 0, else 422. Errors are Clerk's `ClerkErrors`
//!   ([`ClerkError`]): 401 `authentication_invalid`, 404 `resource_not_found`, 422
//!   `form_param_value_invalid` with `meta.param_name`, 429 `too_many_requests` with
//!   `Retry-After` (the fixed window of [`ClerkConfig::rate_limit`] per secret key).
//!
//! ## Mutations and events
//!
//! Library methods on [`ClerkSim`] and the control API (see `control`); the events and
//! cascades are tabled in `mutations`, the random mix of [`ClerkSim::mutate`] in `mutate`,
//! the webhook sender and its knobs in `svix`.

mod api;
mod control;
mod error;
mod events;
mod generate;
mod ids;
mod inputs;
mod middleware;
mod model;
mod mutate;
mod mutations;
mod organizations;
mod params;
mod store;
mod svix;
mod words;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde_json::Value;

pub use error::ClerkError;
pub use events::ClerkEvent;
pub use inputs::{
    MembershipPatch, NewMembership, NewOrganization, NewUser, OrganizationPatch, UserPatch,
};
pub use middleware::ClerkStats;
pub use store::ClerkKind;
pub use svix::{ClerkEndpoint, ClerkWebhookOptions, ClerkWebhookStats, STALE_AGE};

use crate::clock::{Clock, SystemClock};
use crate::ratelimit::{RateLimit, RateLimiter};
use store::State;

/// The simulator's configuration. Construct it with `..ClerkConfig::default()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClerkConfig {
    /// Seed of the generated data (and of ids, secrets and webhook knobs).
    pub seed: u64,
    /// Number of generated users.
    pub users: usize,
    /// Number of generated organizations (`None`: `users / 10`).
    pub organizations: Option<usize>,
    /// The accepted secret key (`Authorization: Bearer …`).
    pub secret_key: String,
    /// `(requests, period)` per secret key, a fixed window (`None`: unlimited). Clerk allows
    /// 100 requests per 10 s on development instances, 1,000 on production ones.
    pub rate_limit: Option<(u32, Duration)>,
    /// Whether adding or removing a member (also by a user's deletion) bumps the
    /// organization's `updated_at` and emits `organization.updated`. Off: Clerk computes
    /// `members_count` and leaves the organization alone.
    pub organization_updated_on_membership_change: bool,
    /// Knobs of the webhook deliveries.
    pub webhooks: ClerkWebhookOptions,
}

impl Default for ClerkConfig {
    fn default() -> Self {
        ClerkConfig {
            seed: 42,
            users: 1000,
            organizations: None,
            secret_key: "sk_test_sim".into(),
            rate_limit: None,
            organization_updated_on_membership_change: false,
            webhooks: ClerkWebhookOptions::default(),
        }
    }
}

impl ClerkConfig {
    /// The number of generated organizations.
    pub fn organization_count(&self) -> usize {
        self.organizations.unwrap_or(self.users / 10)
    }
}

pub(crate) struct Shared {
    pub(crate) config: ClerkConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) instance_id: String,
    pub(crate) state: Mutex<State>,
    pub(crate) stats: middleware::Stats,
    pub(crate) limiter: RateLimiter,
    pub(crate) webhooks: svix::Webhooks,
}

/// A handle on one simulated Clerk instance; cheap to clone (all clones share the data).
#[derive(Clone)]
pub struct ClerkSim {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for ClerkSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkSim")
            .field("seed", &self.inner.config.seed)
            .field("users", &self.inner.config.users)
            .finish_non_exhaustive()
    }
}

impl ClerkSim {
    /// A simulator whose mutations are timestamped by the wall clock.
    pub fn new(config: ClerkConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A simulator whose mutations and webhook timestamps come from `clock`.
    pub fn with_clock(config: ClerkConfig, clock: Arc<dyn Clock>) -> Self {
        let state = generate::generate(config.seed, config.users, config.organization_count());
        let limit = config
            .rate_limit
            .map(|(requests, period)| RateLimit::new(requests, period));
        ClerkSim {
            inner: Arc::new(Shared {
                instance_id: generate::instance_id(config.seed),
                state: Mutex::new(state),
                stats: middleware::Stats::default(),
                limiter: RateLimiter::new(limit),
                webhooks: svix::Webhooks::new(config.seed, config.webhooks.clone()),
                clock,
                config,
            }),
        }
    }

    pub fn config(&self) -> &ClerkConfig {
        &self.inner.config
    }

    /// The instance id (`ins_…`) of every event.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now().timestamp_millis()
    }

    /// The HTTP application: `/v1/...` (secret key, rate limit) and `/control/...`.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(api::routes(self))
            .merge(control::routes(self))
            .fallback(api::fallback)
            .with_state(self.clone())
    }

    /// One user as `GET /v1/users/{id}` serves it.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.state().users.get(id).map(model::User::to_json)
    }

    /// One organization (by id or slug), with `members_count` and
    /// `missing_member_with_elevated_permissions`.
    pub fn organization(&self, id_or_slug: &str) -> Option<Value> {
        let state = self.state();
        state.org(id_or_slug).map(|o| state.org_json(o))
    }

    /// One membership as the lists serve it.
    pub fn membership(&self, id: &str) -> Option<Value> {
        let state = self.state();
        state.memberships.get(id).map(|m| state.membership_json(m))
    }

    /// Every user as the API serves it, by id.
    pub fn users(&self) -> Vec<Value> {
        let state = self.state();
        let mut users: Vec<&model::User> = state.users.iter().collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users.into_iter().map(model::User::to_json).collect()
    }

    /// Every organization, by id, with both computed properties (as with
    /// `include_members_count=true&include_missing_member_with_elevated_permissions=true`).
    pub fn organizations(&self) -> Vec<Value> {
        let state = self.state();
        let mut orgs: Vec<&model::Organization> = state.orgs.iter().collect();
        orgs.sort_by(|a, b| a.id.cmp(&b.id));
        orgs.into_iter().map(|o| state.org_json(o)).collect()
    }

    /// Every membership as the lists serve it, by id.
    pub fn memberships(&self) -> Vec<Value> {
        let state = self.state();
        let mut memberships: Vec<&model::Membership> = state.memberships.iter().collect();
        memberships.sort_by(|a, b| a.id.cmp(&b.id));
        memberships
            .into_iter()
            .map(|m| state.membership_json(m))
            .collect()
    }

    /// How many objects of `kind` exist.
    pub fn count(&self, kind: ClerkKind) -> usize {
        let state = self.state();
        match kind {
            ClerkKind::User => state.users.len(),
            ClerkKind::Organization => state.orgs.len(),
            ClerkKind::OrganizationMembership => state.memberships.len(),
        }
    }

    /// Ids of the deleted objects of `kind`, in deletion order (memberships removed along with
    /// their user or organization included).
    pub fn deleted_ids(&self, kind: ClerkKind) -> Vec<String> {
        let state = self.state();
        match kind {
            ClerkKind::User => state.deleted.users.clone(),
            ClerkKind::Organization => state.deleted.organizations.clone(),
            ClerkKind::OrganizationMembership => state.deleted.memberships.clone(),
        }
    }

    /// Every event emitted so far, in order.
    pub fn events(&self) -> Vec<ClerkEvent> {
        self.state().events.clone()
    }

    /// The API counters.
    pub fn stats(&self) -> ClerkStats {
        let mutations = self.state().mutations;
        self.inner.stats.snapshot(mutations)
    }

    /// The webhook sender's counters.
    pub fn webhook_stats(&self) -> ClerkWebhookStats {
        self.inner.webhooks.stats()
    }

    /// Registers a webhook endpoint with a new secret and returns the secret (`whsec_…`). Must
    /// be called inside a tokio runtime (the deliveries are sent from it).
    pub fn add_endpoint(&self, url: &str) -> Result<String, ClerkError> {
        self.register_endpoint(url, None).map(|e| e.secret)
    }

    /// Registers a webhook endpoint signed with `secret` (`whsec_` + base64).
    pub fn add_endpoint_with_secret(&self, url: &str, secret: &str) -> Result<(), ClerkError> {
        self.register_endpoint(url, Some(secret)).map(drop)
    }

    /// Registers a webhook endpoint (with `secret`, else a new one).
    pub fn register_endpoint(
        &self,
        url: &str,
        secret: Option<&str>,
    ) -> Result<ClerkEndpoint, ClerkError> {
        self.inner
            .webhooks
            .add(url, secret, self.inner.clock.clone())
    }

    /// The registered webhook endpoints.
    pub fn endpoints(&self) -> Vec<ClerkEndpoint> {
        self.inner.webhooks.endpoints()
    }

    /// Waits until every queued webhook delivery has been answered or given up. Unbounded:
    /// wrap it in `tokio::time::timeout`.
    pub async fn idle(&self) {
        self.inner.webhooks.idle().await;
    }
}

/// Serves `sim` on `addr` (port 0 picks a free port) in a background task.
pub async fn serve_clerk(sim: ClerkSim, addr: SocketAddr) -> std::io::Result<ClerkHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = sim.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, seed = sim.config().seed, users = sim.config().users, "Clerk simulator listening");
    Ok(ClerkHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// A running Clerk simulator. Dropping it stops the server abruptly; [`ClerkHandle::shutdown`]
/// stops it gracefully. Webhook deliveries go on while the simulator lives.
#[derive(Debug)]
pub struct ClerkHandle {
    addr: SocketAddr,
    sim: ClerkSim,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ClerkHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (loopback when bound to an unspecified address).
    pub fn root_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The Backend API's base URL: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root_url())
    }

    /// The control API's base URL: `http://127.0.0.1:PORT/control`.
    pub fn control_url(&self) -> String {
        format!("{}/control", self.root_url())
    }

    /// The simulator behind the server.
    pub fn simulator(&self) -> ClerkSim {
        self.sim.clone()
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 5 s), then stops.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) => tracing::warn!("Clerk simulator server failed: {e}"),
                Ok(_) => {}
                Err(_) => abort.abort(),
            }
        }
    }
}

impl Drop for ClerkHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
