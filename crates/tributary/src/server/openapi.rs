//! The OpenAPI 3.1 document of the `/v1` routes, served at
//! `GET /v1/openapi.json`: the paths and parameters come from the
//! handlers' `#[utoipa::path]` attributes and their query types; the
//! answers' shapes are the schemas below, which mirror the JSON the
//! handlers write (a schemathesis run in CI checks the answers against
//! them).

#![allow(dead_code)] // The schema types only describe; nothing builds them.

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;

/// An error: an RFC 9457 problem document (`application/problem+json`).
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    kind: String,
    /// What went wrong, in a few words.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What to do about it.
    detail: String,
}

/// One committed change of one record.
#[derive(Serialize, ToSchema)]
pub struct Change {
    /// The change's position in the feed (resume after it).
    seq: i64,
    /// The connection's name.
    connection: Option<String>,
    entity: String,
    /// The record's id at the source.
    external_id: String,
    /// `created`, `updated` or `deleted`.
    kind: String,
    /// The record's content hash after the change.
    content_hash: Option<String>,
    /// The run that committed it.
    run_id: Option<i64>,
    /// When it was committed (RFC 3339, UTC).
    changed_at: String,
    /// For an update, the canonical fields it changed.
    fields: Option<Vec<String>>,
}

/// A page of the change feed.
#[derive(Serialize, ToSchema)]
pub struct ChangesPage {
    /// In feed order; a transaction's changes are never split.
    changes: Vec<Change>,
    /// Ask again with `after` = this.
    next: i64,
    /// The newest sequence number when the page was read.
    head: i64,
}

/// Records of one entity of a connection.
#[derive(Serialize, ToSchema)]
pub struct EntityRecords {
    entity: String,
    live: i64,
    deleted: i64,
}

/// A connection.
#[derive(Serialize, ToSchema)]
pub struct ConnectionInfo {
    name: String,
    adapter: String,
    /// Where it reads from (a password in it is redacted).
    base_url: String,
    /// `active` or `needs_reauth`.
    status: String,
    status_reason: Option<String>,
    created_at: String,
    updated_at: String,
    entities: Vec<EntityRecords>,
}

/// Every connection.
#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    connections: Vec<ConnectionInfo>,
}

/// A run's figures.
#[derive(Serialize, ToSchema)]
pub struct RunCounts {
    pages: i64,
    created: i64,
    updated: i64,
    unchanged: i64,
    deleted: i64,
    quarantined: i64,
    restored: i64,
    requests: i64,
    retries: i64,
}

/// Where one entity of a run stands.
#[derive(Serialize, ToSchema)]
pub struct EntityCheckpoint {
    entity: String,
    state: String,
    records: i64,
    pages: i64,
    created: i64,
    updated: i64,
    unchanged: i64,
    deleted: i64,
    restored: i64,
    quarantined: i64,
    total: Option<i64>,
    /// The source's cursor (its shape is the source's own).
    #[schema(value_type = Option<Object>)]
    cursor: Option<serde_json::Value>,
    error: Option<String>,
    updated_at: String,
}

/// A sync run.
#[derive(Serialize, ToSchema)]
pub struct Run {
    id: i64,
    connection: String,
    /// `full`, `delta`, `reconcile` or `webhook`.
    kind: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or
    /// `waiting_approval`.
    state: String,
    /// A failed run that the next sync of its kind resumes.
    resumable: bool,
    scope: Option<String>,
    idempotency_key: Option<String>,
    started_at: String,
    updated_at: String,
    finished_at: Option<String>,
    counts: RunCounts,
    /// `manual`, `schedule` or `webhook`.
    trigger: String,
    error: Option<String>,
    /// Each entity (only from `GET /v1/runs/{id}`).
    #[schema(nullable = false)]
    entities: Option<Vec<EntityCheckpoint>>,
}

/// The latest runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunList {
    runs: Vec<Run>,
}

/// The kinds of run one may ask for.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AskedKind {
    Full,
    Delta,
    Reconcile,
}

/// A run asked for.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// The connection's name.
    #[schema(min_length = 1)]
    connection: String,
    kind: AskedKind,
    /// Asking again with the same key answers with the same run.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

/// A run's identity in an audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditRun {
    id: i64,
    kind: String,
    trigger: String,
    state: String,
    started_at: String,
}

/// A webhook delivery behind a change.
#[derive(Serialize, ToSchema)]
pub struct AuditDelivery {
    /// The inbox row.
    id: i64,
    /// The sender's id for it.
    delivery_id: String,
    event: String,
    sent_at: Option<String>,
    received_at: String,
}

/// One mutation of a record.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    seq: i64,
    kind: String,
    changed_at: String,
    fields: Option<Vec<String>>,
    content_hash: Option<String>,
    run: Option<AuditRun>,
    deliveries: Vec<AuditDelivery>,
}

/// A record's mutations, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditTrail {
    connection: String,
    entity: String,
    external_id: String,
    entries: Vec<AuditEntry>,
}

/// The bearer token every `/v1` route needs.
struct Tokens;

impl Modify for Tokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tributary",
        description = "Records kept current from SaaS APIs: the records, search, the change feed, runs and the audit trail. \
            Every route needs an API token (`tributary tokens create --role read|admin`): \
            `Authorization: Bearer <token>`, or `?access_token=` where a browser cannot set a header."
    ),
    paths(
        super::feed::page,
        super::feed::stream,
        super::feed::socket,
        super::api::connections,
        super::api::runs,
        super::api::run,
        super::api::request_run,
        super::api::cancel_run,
        super::api::audit,
        super::records::list,
        super::records::one,
        super::records::search,
    ),
    components(schemas(ProblemDoc, Change, ChangesPage, ConnectionList, RunList, Run, NewRun, AuditTrail)),
    modifiers(&Tokens),
    security(("token" = [])),
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`: the document, with this server's own longest
/// long poll as the `wait` parameter's maximum.
pub async fn document(State(state): State<AppState>) -> Response {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(parameters) = document
        .pointer_mut("/paths/~1v1~1changes/get/parameters")
        .and_then(|p| p.as_array_mut())
    {
        for parameter in parameters.iter_mut().filter(|p| p["name"] == "wait") {
            parameter["schema"]["maximum"] = state.max_wait.as_secs_f64().into();
        }
    }
    Json(document).into_response()
}
