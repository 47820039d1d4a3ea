//! # tributary-sim — a Planning Center People and Groups API simulator
//!
//! A real HTTP server (axum on loopback) that serves a deterministic, generated church
//! database through the PCO People API (`/people/v2/...`) and Groups API (`/groups/v2/...`),
//! plus a control API (`/__sim/...`)
//! that tests use to mutate the data and to read back exactly what the API serves. It backs
//! Tributary's demo, its integration tests and its benchmarks.
//!
//! The [`clerk`] module is a second simulator, of Clerk's Backend API (users, organizations,
//! memberships) and its Svix-signed webhooks; it shares this crate's clock, randomness, name
//! lists and rate limiter, and nothing else.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tributary_sim::{SimConfig, serve};
//! let handle = serve(
//!     SimConfig { people: 5_000, ..SimConfig::default() },
//!     "127.0.0.1:0".parse().unwrap(),
//! )
//! .await?;
//! println!("PCO simulator at {}", handle.base_url());
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Data model
//!
//! Everything is a pure function of [`SimConfig::seed`] and [`SimConfig::people`] (`N`):
//!
//! | type | count | relationships |
//! | --- | --- | --- |
//! | `Campus` | 3–6 | `organization` |
//! | `Person` | `N` | `primary_campus` (about 10 % `null`) |
//! | `Household` | ≈ `N / 3` (1–6 members, mean ≈ 3) | `primary_contact`, `people` |
//! | `HouseholdMembership` | `N` (each person is in exactly one household) | `person`, `household` |
//! | `Email` | 1–2 per person, exactly one `primary` | `person` |
//! | `PhoneNumber` | 0–2 per person | `person` |
//! | `Address` | 0–1 per person (mostly the household's address) | `person` |
//! | `GroupType` | 3–6 | none |
//! | `Group` | ≈ `N / 20` (`(N + 10) / 20`; about 8 % archived) | `group_type` |
//! | `Membership` | 3–15 per group (distinct people; the first is a leader) | `group`, `person` |
//! | `Event` | 0–6 per group (all before 2025-06-01; about 6 % canceled) | `group` |
//!
//! Attribute names are PCO's (see [`ResourceKind::can_query_by`] and friends for what each
//! type can be filtered, ordered and included by). Values are realistic: names from built-in
//! lists, households sharing a last name, `child`/`grade`/`graduation_year` consistent with the
//! `birthdate` (ages are taken at 2025-06-01), `status` `"inactive"` with `inactivated_at`,
//! PCO-like `membership` values, phone numbers in all of PCO's formats, and so on.
//!
//! * Ids are numeric strings, unique per type, ascending with `created_at`. Generated ids of a
//!   type are `base + index + 1` with a per-type base (Person 10000001…, Email 20000001…,
//!   PhoneNumber 30000001…, Address 40000001…, Household 50000001…, HouseholdMembership
//!   60000001…, Campus 70001…, GroupType 80001…, Group 70000001…, Membership 80000001…,
//!   Event 90000001…); created resources get ids right above the generated range.
//! * Generated timestamps lie between 2019-01-01 and 2025-06-01 (UTC, whole seconds,
//!   `"2023-04-05T10:11:12Z"`), independent of the wall clock; `updated_at >= created_at`.
//!   HouseholdMembership has no timestamps (as in PCO). No Groups resource has `updated_at`
//!   (as in PCO): Group has `created_at` (ascending with its id), Membership `joined_at`
//!   (after its group and person were created), Event `starts_at`/`ends_at` (and
//!   `canceled_at`); GroupType has none.
//! * Randomness is a hand-rolled splitmix64 hash of `(seed, purpose, index)`, so a seed gives
//!   the same data set on every platform and version. Nothing is materialised: only per-person
//!   counts (prefix sums) and household boundaries are kept (≈ 20 MB for a million people,
//!   built in well under a second); each resource is generated from its index when served.
//!
//! ## Mutations
//!
//! Mutations form an overlay over the generated data. A mutated resource keeps its id; a
//! created one gets a new id; a deleted one disappears from lists, nested lists, includes and
//! single GETs (404). Every mutation takes its timestamp from the simulator's [`Clock`]
//! (default: the wall clock), but never less than 1 ms after the previous mutation and never
//! before the end of the generated data, so `updated_at` of mutated resources is strictly
//! increasing and newer than every generated one. Mutation timestamps carry milliseconds when
//! they are not whole seconds (`"2026-01-02T03:04:05.001Z"`). Use
//! [`Simulator::with_clock`] and a [`ManualClock`] for deterministic timestamps.
//!
//! Cascades: deleting a Person deletes its emails, phone numbers, addresses and household
//! memberships; deleting a Household deletes its memberships; creating or deleting a
//! membership (also through a person's deletion) updates the household's `member_count`, its
//! primary contact if that person left, and bumps its `updated_at`. Deleting a Campus does not
//! touch people whose `primary_campus` points at it (the reference dangles).
//!
//! Groups: deleting a Group deletes its memberships and events; deleting a Person also deletes
//! their group memberships; creating or deleting a Membership (also through a person's
//! deletion) sets its group's `memberships_count` to the number of its live memberships (the
//! group has no `updated_at` to bump). Deleting a GroupType leaves its groups' `group_type`
//! dangling. A person can be in a group only once (a second membership is a 422). Attributes are
//! never re-derived: patching `first_name` does not change `name`, a membership's
//! `person_name` or a household's `primary_contact_name`.
//!
//! [`Simulator::merge`] folds one person into another as PCO's person merger does (children
//! move to the kept person, the merged one is deleted).
//!
//! ## Control API (no auth)
//!
//! `{collection}` is one of `people`, `emails`, `phone_numbers`, `addresses`, `households`,
//! `household_memberships`, `campuses`, and for Groups `group_types`, `groups`,
//! `group_memberships` (the `Membership` type) and `events`.
//!
//! * `POST /__sim/{collection}` with `{"attributes": {...}, "relationships": {...}}` (the body
//!   may also be wrapped as `{"data": {...}}`) → `201 {"data": <resource>}`. Every attribute
//!   gets a default (a Person's `name` is `first_name last_name` unless given); given
//!   attributes are stored as-is. Relationship values are an id (`"123"` or `123`), `null`,
//!   `{"id": "123"}` or `{"data": {"type": "Person", "id": "123"}}`:
//!   - `emails`, `phone_numbers`, `addresses`: `person` (required);
//!   - `people`: `primary_campus`;
//!   - `households`: `primary_contact` and `people` (an array; a membership is created for each
//!     person, and the primary contact defaults to the first of them);
//!   - `household_memberships`: `person` and `household` (both required);
//!   - `campuses`, `group_types`: none;
//!   - `groups`: `group_type` (optional);
//!   - `group_memberships`: `group` and `person` (both required; `role` defaults to `member`,
//!     `joined_at` to the mutation time);
//!   - `events`: `group` (required; `starts_at` defaults to the mutation time, `ends_at` to an
//!     hour later).
//!
//!   A reference to a missing resource is a 422.
//! * `PATCH /__sim/{collection}/{id}` with `{"attributes": {...}}` sets those attributes to the
//!   given raw JSON values — any value, even invalid ones such as `"birthdate": "not-a-date"`,
//!   and unknown attribute names are added — bumps `updated_at` (unless it was given) and
//!   answers `200 {"data": <resource>}`. `relationships` may change `person` (emails, phone
//!   numbers, addresses), `primary_campus` (people), `primary_contact` (households) and
//!   `group_type` (groups). Groups resources have no `updated_at`, so nothing is bumped.
//! * `DELETE /__sim/{collection}/{id}` → 204 (404 if it does not exist).
//! * `GET /__sim/dump[?type=Person]` → JSON Lines (`application/x-ndjson`), one live resource
//!   per line, `{"type","id","attributes","relationships"}` exactly as the API serves it
//!   without `include` (and without `links`); types in the order Campus, Person, Household,
//!   HouseholdMembership, Email, PhoneNumber, Address, GroupType, Group, Membership, Event,
//!   each by id. `type` accepts a type or a collection name (`Membership` or
//!   `group_memberships`). The dump is streamed and is not a snapshot across concurrent mutations.
//! * `GET /__sim/stats` → [`StatsSnapshot`] as JSON (API requests by status, real 429s
//!   `rate_limited`, injected `faults` by kind, `oauth` grants/refreshes/errors, and
//!   `peak_in_flight`, the most API requests answered at once);
//!   `DELETE /__sim/stats` resets the counters.
//! * `GET /__sim/info` → seed, people, live and generated counts per type, mutation count, and
//!   the active rate limit, token TTL and faults.
//! * `POST /__sim/oauth/grant` → a fresh OAuth grant, `200` with the [`TokenResponse`] of
//!   `POST /oauth/token` (no client authentication: for tests and scripts).
//!
//! The same operations are available in-process on [`Simulator`] (and
//! [`Simulator::issue_grant`] for OAuth grants). The control API is never rate-limited or
//! faulted.
//!
//! ## API behaviour (`/people/v2` and `/groups/v2`)
//!
//! Both applications share one code path: the same auth, rate limit (one budget per
//! principal across both, as PCO's limit is per token), faults, documents, paging, ordering
//! and filter validation. Below, People routes are described first; see
//! [Groups](#groups-groupsv2) for what differs.
//!
//! * Auth on every `/people/v2` and `/groups/v2` route: `Authorization: Bearer <token>` (the configured static
//!   token, or an OAuth access token), or HTTP Basic `app_id:secret`; otherwise 401 with a
//!   JSON:API error body (`code` `"token_expired"` for an expired OAuth access token).
//! * `GET /people/v2` (the organization); collections `people`, `emails`, `phone_numbers`,
//!   `addresses`, `households`, `campuses`; nested `people/{id}/emails|phone_numbers|addresses|
//!   households|household_memberships`, `households/{id}/household_memberships|people`; single
//!   resources `/{collection}/{id}` and `/{parent}/{id}/{nested}/{id}` (e.g.
//!   `households/{hid}/household_memberships/{id}`).
//! * JSON:API documents: `data`, `included` (only with `include=`, deduplicated), `links.self`,
//!   `links.next` (absent on the last page; the request URL with the next `offset`),
//!   `meta.total_count`, `meta.count`, `meta.next.offset`, `meta.can_order_by`,
//!   `meta.can_query_by`, `meta.can_include` (what the simulator implements), `meta.parent`
//!   (the organization for top-level collections, the parent Person/Household for nested ones).
//!   Absolute URLs use the request's `Host` header.
//! * Paging: `per_page` (default 25, clamped to 1..=100, non-numeric → 400), `offset`.
//! * `order=attr` / `order=-attr` (comma-separated for several keys) among PCO's allowed values
//!   (else 400); default and tie-break: id ascending. Nulls sort last ascending.
//! * `where[attr]=value` (equality) for PCO's allowed attributes, `where[attr][gt|gte|lt|lte]`
//!   for timestamps, dates and numbers. Address and HouseholdMembership do not allow
//!   `updated_at` (400 naming the parameter, as in PCO). Person's `search_name*` and
//!   `search_phone_number*` are substring searches.
//! * `include`: people → `emails`, `phone_numbers`, `addresses`, `households`,
//!   `primary_campus`; households → `people`; household memberships → `household`, `person`.
//!   Anything else → 400.
//! * Errors are always `{"errors":[{"status","code","title","detail"}]}` (`application/json`),
//!   with `source.parameter` for bad parameters; unknown routes and ids are 404.
//!
//! ### Groups (`/groups/v2`)
//!
//! * `GET /groups/v2` (the organization); collections `group_types`, `groups`, `events`;
//!   nested `groups/{id}/memberships` and `groups/{id}/events` (`meta.parent` is the Group);
//!   single resources `/{collection}/{id}` and `groups/{gid}/memberships/{id}`. Memberships
//!   are listed only under their group (there is no `/groups/v2/memberships`, as in PCO).
//! * `where[...]` (PCO's): group types `id`; groups `name` and `archive_status` (`only`,
//!   `not_archived` or `include`; without it every group is listed, archived or not);
//!   memberships `role`; events `starts_at`, `ends_at` (with `gt|gte|lt|lte`) and `name`. No
//!   Groups resource can be filtered or ordered by `updated_at` (400 naming the parameter).
//! * `order` (PCO's): group types `name`, `position`; groups `chat_enabled`, `contact_email`,
//!   `created_at`, `enrollment_limit` (always null here), `listed`,
//!   `members_are_confidential`, `memberships_count`, `name`; memberships `first_name`,
//!   `last_name` (the member's), `joined_at`, `role`; events `ends_at`, `name`, `starts_at`.
//! * `include`: groups → `group_type`; memberships → `person`; events → `group` (PCO's
//!   `enrollment` and `location` are 400s).
//!
//! ## Rate limit and faults (off by default), OAuth2
//!
//! * [`SimConfig::rate_limit`]: PCO's fixed window per principal ([`RateLimit::pco`]: 100
//!   requests per 20 s, 75 for offsets above 30,000), with the `X-PCO-API-Request-Rate-*`
//!   headers on every authenticated API response and JSON:API 429s with `Retry-After`. The
//!   principal is the static token, the Basic application or the OAuth grant. See
//!   [`ratelimit`].
//! * OAuth2 (always on): `GET /oauth/authorize` (auto-approved), `POST /oauth/token`
//!   (authorization code and rotating refresh tokens), access tokens expiring after
//!   [`SimConfig::token_ttl`]. See [OAuth2](#oauth2).
//! * [`SimConfig::faults`]: latency and injected 429s, 5xx (502 as HTML), timeouts,
//!   connection resets and malformed bodies, each a deterministic function of the seed, the
//!   URL and the attempt number, so runs are reproducible and every URL eventually succeeds.
//!   See [`Faults`].
//! * Webhooks (PCO's shape): subscriptions at `/webhooks/v2/webhook_subscriptions` (list,
//!   create with `name` and `url`, get, patch `active`, delete; authenticated like the API;
//!   also [`Simulator::subscribe`]), each with its own `authenticity_secret`. Every create,
//!   update and delete (and [`Simulator::merge`]'s `person_merger.created`) is POSTed, in
//!   order, to each active subscription of its event as a signed `EventDelivery`, retried
//!   until acknowledged; [`SimConfig::webhooks`] adds duplicates, reordering, delay and bad
//!   signatures. See `webhooks.rs`.
//!
//! The router is layered (see [`middleware`]): auth, then the rate limit, then faults, then
//! the handlers; [`SimConfig`] grows with `..SimConfig::default()`.
//!
//! ### OAuth2
//!
//! * `GET /oauth/authorize?client_id&redirect_uri&response_type=code[&scope][&state]`
//!   approves at once and answers `302 Found` to `redirect_uri?code=...[&state=...]`.
//! * `POST /oauth/token`, `application/x-www-form-urlencoded`, client authentication by
//!   `client_id` and `client_secret` in the body ([`SimConfig::oauth_client_id`],
//!   [`SimConfig::oauth_client_secret`]; a `client_secret` in the URL is refused), and
//!   - `grant_type=authorization_code`, `code`, `redirect_uri` (codes are single-use and bound
//!     to the `redirect_uri` they were issued for), or
//!   - `grant_type=refresh_token`, `refresh_token`.
//!
//!   Success: `200 {"access_token","token_type":"bearer","expires_in","refresh_token",
//!   "scope","created_at"}` ([`TokenResponse`]; `created_at` from the simulator's [`Clock`]).
//!   Errors are `{"error","error_description"}`: `invalid_client` (401), `invalid_grant`
//!   (400: unknown, used or rotated code or refresh token, redirect mismatch),
//!   `unsupported_grant_type` (400), `invalid_request` (400).
//! * Refresh tokens rotate: a refresh answers a new access token and a new refresh token, and
//!   the old refresh token is `invalid_grant` from then on. Older access tokens stay valid
//!   until their own expiry. The grant stays the same, and so does its rate budget
//!   ([`Principal::Grant`]).
//! * Tokens and codes are 64 hex digits derived from the seed and a counter: deterministic for
//!   one sequence of requests, and never reused.

mod api;
pub mod clerk;
mod clock;
mod control;
mod error;
mod faults;
mod generate;
mod groups;
mod groups_store;
mod merge;
pub mod middleware;
mod names;
mod oauth;
mod query;
pub mod ratelimit;
mod record;
mod rng;
mod schema;
mod store;
mod time;
mod webhooks;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use serde_json::Value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::SimError;
pub use faults::Faults;
pub use middleware::{FaultStats, OAuthStats, Principal, StatsSnapshot};
pub use oauth::{DEFAULT_SCOPE, TokenResponse};
pub use ratelimit::RateLimit;
pub use schema::{App, ResourceKind};
pub use webhooks::{Subscription, WebhookOptions, WebhookStats, event_name, sign as sign_delivery};

use api::{Included, Renderer};
use faults::FaultInjector;
use generate::Dataset;
use middleware::{Auth, Stats};
use oauth::OAuth;
use ratelimit::RateLimiter;
use store::Store;

/// The simulator's configuration. Construct it with `..SimConfig::default()` so that new
/// fields do not break callers.
///
/// The default has no rate limit, no faults and no latency (demos, tests and throughput
/// benchmarks rely on that); [`RateLimit::pco`] is PCO's real limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the generated data set.
    pub seed: u64,
    /// Number of generated people (at most 100,000,000).
    pub people: usize,
    /// Accepted `Authorization: Bearer` token.
    pub token: String,
    /// HTTP Basic user name (a PCO application id).
    pub app_id: String,
    /// HTTP Basic password (a PCO secret).
    pub secret: String,
    /// The organization id (`meta.parent.id`).
    pub org_id: String,
    /// The rate limit per principal (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// The OAuth client id accepted by `/oauth/authorize` and `/oauth/token`.
    pub oauth_client_id: String,
    /// The OAuth client secret accepted by `/oauth/token`.
    pub oauth_client_secret: String,
    /// How long an OAuth access token is valid (reported in whole seconds as `expires_in`).
    pub token_ttl: Duration,
    /// Injected faults and latency.
    pub faults: Faults,
    /// Knobs of the webhook deliveries.
    pub webhooks: WebhookOptions,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            people: 1000,
            token: "sim-token".into(),
            app_id: "sim-app".into(),
            secret: "sim-secret".into(),
            org_id: "1".into(),
            rate_limit: None,
            oauth_client_id: "sim-client".into(),
            oauth_client_secret: "sim-client-secret".into(),
            token_ttl: Duration::from_secs(7200),
            faults: Faults::default(),
            webhooks: WebhookOptions::default(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) store: Store,
    pub(crate) stats: Stats,
    pub(crate) auth: Auth,
    pub(crate) oauth: OAuth,
    pub(crate) limiter: RateLimiter,
    pub(crate) faults: FaultInjector,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) webhooks: webhooks::Webhooks,
    /// Becomes `true` when a server of this simulator shuts down: hangs end early.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
}

/// A handle on one simulated PCO account; cheap to clone (all clones share the data).
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("seed", &self.inner.config.seed)
            .field("people", &self.inner.config.people)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator whose mutations are timestamped by the wall clock.
    pub fn new(config: SimConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A simulator whose mutations are timestamped by `clock`.
    pub fn with_clock(config: SimConfig, clock: Arc<dyn Clock>) -> Self {
        let data = Dataset::new(config.seed, config.people);
        let auth = Auth::new(&config.token, &config.app_id, &config.secret);
        Simulator {
            inner: Arc::new(Shared {
                store: Store::new(data, clock.clone()),
                stats: Stats::default(),
                auth,
                oauth: OAuth::new(&config),
                limiter: RateLimiter::new(config.rate_limit),
                faults: FaultInjector::new(config.seed, config.faults.clone()),
                clock,
                webhooks: webhooks::Webhooks::default(),
                shutdown: tokio::sync::watch::Sender::new(false),
                config,
            }),
        }
    }

    /// The configuration this simulator was built with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Sleeps for `duration`, or less if a server of this simulator shuts down meanwhile;
    /// returns whether it slept the whole duration.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = shutdown.wait_for(|down| *down) => false,
        }
    }

    /// A simulated outage: once `after` more API requests have been answered
    /// (0: at once), every API request answers `503 Service Unavailable`
    /// until `set_outage(None)` (also `POST /__sim/outage {"after": N}` and
    /// `DELETE /__sim/outage`). Authentication and the rate limit still
    /// answer first; the control API and OAuth are never down.
    pub fn set_outage(&self, after: Option<u64>) {
        self.inner.faults.set_outage(after);
    }

    /// Ends every hang and latency wait now and from now on (the server is going down).
    fn signal_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// The HTTP application: `/people/v2/...` (authenticated, rate-limited, faulty as
    /// configured), `/oauth/...` and `/__sim/...` (control). See [`middleware`] for the layers.
    pub fn router(&self) -> Router {
        // Layers run outermost last-added: auth, then the rate limit, then faults.
        let api = Router::new()
            .route(api::API_PREFIX, any(api::handle))
            .route(&format!("{}/{{*rest}}", api::API_PREFIX), any(api::handle))
            .route(
                &format!("{}/webhook_subscriptions", webhooks::WEBHOOKS_PREFIX),
                get(webhooks::list).post(webhooks::create),
            )
            .route(
                &format!("{}/webhook_subscriptions/{{id}}", webhooks::WEBHOOKS_PREFIX),
                get(webhooks::get)
                    .patch(webhooks::patch)
                    .delete(webhooks::delete),
            )
            .route(api::GROUPS_PREFIX, any(api::handle))
            .route(
                &format!("{}/{{*rest}}", api::GROUPS_PREFIX),
                any(api::handle),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                faults::inject_faults,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                ratelimit::rate_limit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::require_auth,
            ));
        Router::new()
            .merge(api)
            .merge(oauth::routes())
            .merge(control::routes())
            .fallback(api::not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::count_requests,
            ))
            .with_state(self.clone())
    }

    fn to_json(&self, rec: &record::Record) -> Value {
        let guard = self.inner.store.read();
        let snap = guard.snap();
        let r = Renderer {
            snap: &snap,
            org_id: &self.inner.config.org_id,
            base: None,
        };
        let rec = snap.get(rec.kind, rec.id).unwrap_or_else(|| rec.clone());
        let mut out = Vec::new();
        r.write(&mut out, &rec, &[], &mut Included::default());
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }

    /// Creates a resource (body as for `POST /__sim/{collection}`); returns it as the dump
    /// shows it.
    pub fn create(&self, kind: ResourceKind, body: &Value) -> Result<Value, SimError> {
        let rec = self.inner.store.create(kind, body)?;
        Ok(self.to_json(&rec))
    }

    /// Updates a resource (body as for `PATCH /__sim/{collection}/{id}`).
    pub fn update(&self, kind: ResourceKind, id: u64, body: &Value) -> Result<Value, SimError> {
        let rec = self.inner.store.update(kind, id, body)?;
        Ok(self.to_json(&rec))
    }

    /// Deletes a resource (with the cascades described in the crate docs).
    pub fn delete(&self, kind: ResourceKind, id: u64) -> Result<(), SimError> {
        self.inner.store.delete(kind, id)
    }

    /// One live resource as the dump shows it, if it exists.
    pub fn get(&self, kind: ResourceKind, id: u64) -> Option<Value> {
        let rec = self.inner.store.read().snap().get(kind, id)?;
        Some(self.to_json(&rec))
    }

    /// Live ids of `kind` in id order, `offset..offset + limit`.
    pub fn ids(&self, kind: ResourceKind, offset: usize, limit: usize) -> Vec<u64> {
        self.inner
            .store
            .read()
            .snap()
            .page_default(kind, offset, limit)
    }

    /// How many live resources of `kind` there are.
    pub fn count(&self, kind: ResourceKind) -> usize {
        self.inner.store.read().snap().live_count(kind)
    }

    /// Every live resource (of `kind`, or of all kinds), as `GET /__sim/dump` lists them.
    /// Materialises everything: meant for small data sets.
    pub fn dump(&self, kind: Option<ResourceKind>) -> Vec<Value> {
        let kinds = kind.map_or_else(|| ResourceKind::ALL.to_vec(), |k| vec![k]);
        let mut out = Vec::new();
        for kind in kinds {
            let mut offset = 0;
            loop {
                let (chunk, n) = control::dump_chunk(self, kind, offset, 4096);
                out.extend(
                    chunk
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .filter_map(|l| serde_json::from_slice::<Value>(l).ok()),
                );
                if n < 4096 {
                    break;
                }
                offset += n;
            }
        }
        out
    }

    /// The request counters.
    pub fn stats(&self) -> StatsSnapshot {
        let mutations = self.inner.store.read().snap().mutations();
        self.inner.stats.snapshot(mutations)
    }
}

/// Starts `config`'s simulator on `addr` (port 0 picks a free port) in a background task.
pub async fn serve(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    serve_simulator(Simulator::new(config), addr).await
}

/// Serves an existing simulator on `addr` in a background task.
pub async fn serve_simulator(sim: Simulator, addr: SocketAddr) -> std::io::Result<SimHandle> {
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
    tracing::info!(%addr, seed = sim.config().seed, people = sim.config().people, "PCO simulator listening");
    Ok(SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// A running simulator server. Dropping it stops the server abruptly; [`SimHandle::shutdown`]
/// stops it gracefully. Either way, injected hangs and latency of its [`Simulator`] end at
/// once, now and for any later use of that simulator.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Simulator,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (loopback when bound to an unspecified address).
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The simulator behind the server (for mutations and inspection).
    pub fn simulator(&self) -> Simulator {
        self.sim.clone()
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 5 s; injected hangs
    /// and latency end at once), then stops.
    pub async fn shutdown(mut self) {
        self.sim.signal_shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) => tracing::warn!("simulator server failed: {e}"),
                Ok(_) => {}
                Err(_) => abort.abort(),
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.sim.signal_shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
