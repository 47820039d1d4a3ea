//! The `/v1` routes over connections, runs and the audit trail:
//!
//! * `GET /v1/connections`: each connection, its state and its records
//!   per entity;
//! * `GET /v1/runs?connection=&limit=` and `GET /v1/runs/{id}` (with each
//!   entity's checkpoint);
//! * `POST /v1/runs` `{connection, kind, idempotency_key?}` (admin): asks
//!   for a run — `202` with the run, `queued` until its connection is
//!   free; a key asked for before answers with the run it made;
//! * `POST /v1/runs/{id}/cancel` (admin);
//! * `GET /v1/audit?connection=&entity=&external_id=&limit=`: a record's
//!   mutations, newest first — the change, the run that made it and the
//!   webhook deliveries behind it.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tributary_core::{RunKind, redact_url};
use tributary_engine::RequestError;
use tributary_store::{AuditEntry, Connection, Delivery};

use super::AppState;
use super::problem::{self, Path, Problem, Query};
use crate::cmd::runs::{checkpoint_json, run_json};

/// The most runs or audit entries one answer holds.
const MAX_LIMIT: u32 = 1_000;

type Answer = Result<Response, Problem>;

async fn names(state: &AppState) -> Result<Vec<Connection>, Problem> {
    state
        .store
        .connections()
        .await
        .map_err(|error| Problem::store("listing connections", &error))
}

fn find<'a>(connections: &'a [Connection], name: &str) -> Result<&'a Connection, Problem> {
    connections.iter().find(|c| c.name == name).ok_or_else(|| {
        Problem::not_found(
            "no such connection",
            format!("there is no connection named `{name}` (GET /v1/connections lists them)"),
        )
    })
}

fn id_names(connections: &[Connection]) -> Vec<(i64, String)> {
    connections.iter().map(|c| (c.id, c.name.clone())).collect()
}

/// Every connection: its adapter, where it reads from, its state, and its
/// records per entity.
#[utoipa::path(get, path = "/v1/connections", tag = "connections",
    responses(
        (status = 200, description = "Every connection", body = super::openapi::ConnectionList),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer, or the server is stopping", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn connections(State(state): State<AppState>) -> Answer {
    let connections = names(&state).await?;
    let mut list = Vec::with_capacity(connections.len());
    for c in &connections {
        let counts = state
            .store
            .entity_counts(c.id)
            .await
            .map_err(|error| Problem::store("counting records", &error))?;
        list.push(json!({
            "name": c.name,
            "adapter": c.adapter,
            "base_url": redact_url(&c.base_url),
            "status": c.status.as_str(),
            "status_reason": c.status_reason,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "entities": counts.iter().map(|e| json!({
                "entity": e.entity, "live": e.live, "deleted": e.deleted,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({ "connections": list })).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this connection's runs (by name).
    #[param(min_length = 1)]
    connection: Option<String>,
    /// At most this many (1 to 1,000; default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The latest runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunsQuery),
    responses(
        (status = 200, description = "The latest runs, newest first", body = super::openapi::RunList),
        (status = 400, description = "A bad parameter or body", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer, or the server is stopping", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn runs(State(state): State<AppState>, Query(query): Query<RunsQuery>) -> Answer {
    let limit = problem::limit(query.limit, 20, MAX_LIMIT)?;
    let connections = names(&state).await?;
    let connection_id = match &query.connection {
        Some(name) => Some(find(&connections, name)?.id),
        None => None,
    };
    let runs = state
        .store
        .runs(connection_id, limit)
        .await
        .map_err(|error| Problem::store("listing runs", &error))?;
    let names = id_names(&connections);
    let runs: Vec<Value> = runs.iter().map(|run| run_json(run, &names)).collect();
    Ok(Json(json!({ "runs": runs })).into_response())
}

fn no_run(id: i64) -> Problem {
    Problem::not_found(
        "no such run",
        format!("there is no run {id} (GET /v1/runs lists them)"),
    )
}

/// One run, with where each of its entities stands.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run and its entities", body = super::openapi::Run),
        (status = 400, description = "A bad parameter or body", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer, or the server is stopping", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn run(State(state): State<AppState>, Path(id): Path<i64>) -> Answer {
    let run = state
        .store
        .run(id)
        .await
        .map_err(|error| Problem::store("reading a run", &error))?
        .ok_or_else(|| no_run(id))?;
    let checkpoints = state
        .store
        .checkpoints(id)
        .await
        .map_err(|error| Problem::store("reading a run", &error))?;
    let connections = names(&state).await?;
    let mut value = run_json(&run, &id_names(&connections));
    value["entities"] = checkpoints.iter().map(checkpoint_json).collect();
    Ok(Json(value).into_response())
}

/// What `POST /v1/runs` asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    connection: String,
    kind: String,
    idempotency_key: Option<String>,
}

/// Asks for a run of a connection; it starts as soon as the connection is
/// free (admin).
#[utoipa::path(post, path = "/v1/runs", tag = "runs",
    request_body = super::openapi::NewRun,
    responses(
        (status = 202, description = "The run, queued until its connection is free (or the run the key named before)", body = super::openapi::Run),
        (status = 400, description = "A bad parameter or body", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A read token on a route that changes things", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer, or the server is stopping", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn request_run(
    State(state): State<AppState>,
    body: Result<Json<NewRun>, JsonRejection>,
) -> Answer {
    let Json(asked) = body.map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
    let kind = match RunKind::parse(&asked.kind) {
        Some(kind @ (RunKind::Full | RunKind::Delta | RunKind::Reconcile)) => kind,
        _ => {
            return Err(Problem::bad_request(format!(
                "unknown kind `{}`: ask for `full`, `delta` or `reconcile`",
                asked.kind
            )));
        }
    };
    let key = match asked.idempotency_key {
        Some(key) if key.is_empty() || key.chars().count() > 200 => {
            return Err(Problem::bad_request(
                "idempotency_key must be 1 to 200 characters",
            ));
        }
        Some(key) => format!("api {key}"),
        // A fresh random key: two requests are two runs.
        None => format!("api {}", &tributary_secrets::new_api_token().1[..32]),
    };
    let connections = names(&state).await?;
    let connection = find(&connections, &asked.connection)?;
    let run = state
        .service
        .request(connection, kind, &key)
        .await
        .map_err(|error| match error {
            RequestError::Engine(tributary_engine::Error::Stopping) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down",
                "the server is stopping; ask again once it is back",
            ),
            error => Problem::store("requesting a run", &error),
        })?;
    let value = run_json(&run, &id_names(&connections));
    Ok((StatusCode::ACCEPTED, Json(value)).into_response())
}

/// Cancels a run that is queued, running or waiting for approval (admin).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run, cancelled", body = super::openapi::Run),
        (status = 400, description = "A bad parameter or body", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "A read token on a route that changes things", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The run is not in a state that allows it", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer, or the server is stopping", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn cancel_run(State(state): State<AppState>, Path(id): Path<i64>) -> Answer {
    let run = state.service.cancel(id).await.map_err(|error| match error {
        tributary_engine::Error::RunNotFound(id) => no_run(id),
        tributary_engine::Error::NotCancellable(id, run_state) => Problem::new(
            StatusCode::CONFLICT,
            "the run cannot be cancelled",
            format!("run {id} is {run_state}: only a queued, running or waiting run can be cancelled"),
        ),
        error => Problem::store("cancelling a run", &error),
    })?;
    let connections = names(&state).await?;
    Ok(Json(run_json(&run, &id_names(&connections))).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The connection's name.
    #[param(min_length = 1)]
    connection: String,
    /// The record's entity.
    #[param(min_length = 1)]
    entity: String,
    /// The record's id at the source.
    #[param(min_length = 1)]
    external_id: String,
    /// At most this many changes (1 to 1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A record's mutations, newest first: each change, the run that made it
/// and the webhook deliveries behind it.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses(
        (status = 200, description = "The record's audit trail", body = super::openapi::AuditTrail),
        (status = 400, description = "A bad parameter or body", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer, or the server is stopping", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn audit(State(state): State<AppState>, Query(query): Query<AuditQuery>) -> Answer {
    let limit = problem::limit(query.limit, 100, MAX_LIMIT)?;
    let connections = names(&state).await?;
    let connection = find(&connections, &query.connection)?;
    let record = state
        .store
        .record(connection.id, &query.entity, &query.external_id)
        .await
        .map_err(|error| Problem::store("reading a record", &error))?;
    if record.is_none() {
        return Err(Problem::not_found(
            "no such record",
            format!(
                "connection `{}` has no {} `{}`",
                connection.name, query.entity, query.external_id
            ),
        ));
    }
    let entries = tributary_store::audit(
        state.store.as_ref(),
        connection.id,
        &query.entity,
        &query.external_id,
        limit,
    )
    .await
    .map_err(|error| Problem::store("reading the audit trail", &error))?;
    let names = id_names(&connections);
    Ok(Json(json!({
        "connection": connection.name,
        "entity": query.entity,
        "external_id": query.external_id,
        "entries": entries.iter().map(|e| audit_json(e, &names)).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// One audit entry as the API and `tributary audit --json` show it.
pub fn audit_json(entry: &AuditEntry, names: &[(i64, String)]) -> Value {
    let change = &entry.change;
    json!({
        "seq": change.seq,
        "kind": change.kind.as_str(),
        "changed_at": change.changed_at,
        "fields": change.fields,
        "content_hash": change.content_hash,
        "run": entry.run.as_ref().map(|run| {
            let value = run_json(run, names);
            json!({
                "id": run.id,
                "kind": value["kind"],
                "trigger": value["trigger"],
                "state": value["state"],
                "started_at": run.started_at,
            })
        }),
        "deliveries": entry.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

fn delivery_json(delivery: &Delivery) -> Value {
    json!({
        "id": delivery.id,
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "sent_at": delivery.sent_at,
        "received_at": delivery.received_at,
    })
}
