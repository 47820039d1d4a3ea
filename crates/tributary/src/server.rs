//! The HTTP face of `tributary serve`: one axum router over the service's
//! state. Health (`GET /healthz`: the process answers), readiness (`GET
//! /readyz`: the database answers, its schema is current, and the process
//! is not shutting down), counters (`GET /metrics`), and webhooks in (`POST /webhooks/{connection}`,
//! [`webhooks`]), and the change feed (`GET /v1/changes`, `GET
//! /v1/changes/stream`, `GET /v1/changes/ws`, [`feed`]), and the records
//! API and search (`GET /v1/records`, `GET
//! /v1/records/{connection}/{entity}/{external_id}`, `GET /v1/search`,
//! [`records`]). The dashboard joins this router.

pub mod api;
pub mod auth;
pub mod batches;
pub mod feed;
pub mod openapi;
pub mod problem;
pub mod records;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tributary_core::Clock;
use tributary_engine::ServiceHandle;
use tributary_store::Store;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub service: ServiceHandle,
    pub webhooks: Arc<webhooks::Ingest>,
    pub feed: tributary_feed::FeedHandle,
    /// The search indexer (what `GET /v1/search` reflects).
    pub search: tributary_feed::IndexerHandle,
    pub access: Arc<auth::Access>,
    /// The longest long poll granted (`GET /v1/changes?wait=`).
    pub max_wait: std::time::Duration,
    /// The feed's recent batches, rendered once for all subscribers.
    pub batches: Arc<batches::Batches>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        service: ServiceHandle,
        webhooks: webhooks::Ingest,
        feed: tributary_feed::FeedHandle,
        search: tributary_feed::IndexerHandle,
    ) -> Self {
        Self {
            search,
            access: Arc::new(auth::Access::new(store.clone(), clock.clone())),
            store,
            service,
            webhooks: Arc::new(webhooks),
            feed,
            max_wait: feed::MAX_WAIT,
            batches: Arc::default(),
        }
    }
}

/// The routes of `tributary serve`.
pub fn router(state: AppState) -> Router {
    let max_body = state.webhooks.max_body();
    // Every /v1 route needs an API token (see [`auth`]).
    let v1 = Router::new()
        .route("/v1/changes", get(feed::page))
        .route("/v1/changes/stream", get(feed::stream))
        .route("/v1/changes/ws", get(feed::socket))
        .route("/v1/connections", get(api::connections))
        .route("/v1/runs", get(api::runs).post(api::request_run))
        .route("/v1/runs/{id}", get(api::run))
        .route("/v1/runs/{id}/cancel", post(api::cancel_run))
        .route("/v1/audit", get(api::audit))
        .route("/v1/records", get(records::list))
        .route(
            "/v1/records/{connection}/{entity}/{external_id}",
            get(records::one),
        )
        .route("/v1/search", get(records::search))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/client.js", get(client_js))
        .route("/v1/openapi.json", get(openapi::document))
        .merge(v1)
        .route(
            "/webhooks/{connection}",
            post(webhooks::receive).layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}

/// The change-feed client (`assets/client.js`): a script tag or an
/// `import` cannot send a token, so it is served to anyone.
async fn client_js() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            // A module script is fetched with CORS: a page of another
            // origin may import it (it holds no secret).
            (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("server/assets/client.js"),
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Counters in Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.webhooks.metrics(),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response()
    };
    if state.service.is_stopping() {
        return not_ready("shutting down".into());
    }
    match state.store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => Json(json!({"status": "ready"})).into_response(),
        Ok(pending) => not_ready(format!(
            "the database lacks migrations {pending:?}: restart `tributary serve` to apply them"
        )),
        Err(error) => not_ready(format!("the database does not answer: {error}")),
    }
}
