//! The control API under `/control/...` (no secret key, no rate limit): mutations, webhook
//! endpoints, the dump and the counters. Bodies are JSON; errors use Clerk's error shape.
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `POST /control/users` | [`NewUser`] | the user |
//! | `PATCH /control/users/{id}` | [`UserPatch`] | the user |
//! | `DELETE /control/users/{id}` | | the `DeletedObject` |
//! | `POST /control/organizations` | [`NewOrganization`] | the organization |
//! | `PATCH /control/organizations/{id}` | [`OrganizationPatch`] | the organization |
//! | `DELETE /control/organizations/{id}` | | the `DeletedObject` |
//! | `POST /control/memberships` | [`NewMembership`] | the membership |
//! | `PATCH /control/memberships/{id}` | [`MembershipPatch`] | the membership |
//! | `DELETE /control/memberships/{id}` | | the membership as it was |
//! | `POST /control/invitations` | `{"organization_id", "email_address", "role"?}` | the invitation |
//! | `POST /control/mutate` | `{"count": N, "seed": S}` | `{"events": [envelope + "svix_id"]}` |
//! | `POST /control/webhook_endpoints` | `{"url", "secret"?}` | `{"id", "url", "secret"}` |
//! | `GET /control/webhook_endpoints` | | the endpoints |
//! | `GET /control/events` | | every event emitted, as delivered (plus `svix_id`) |
//! | `GET /control/dump` | | `{"users", "organizations", "memberships", "deleted": {…}}` |
//! | `GET /control/stats`, `DELETE /control/stats` | | `{"api": …, "webhooks": …}`; reset the API counters |
//! | `POST /control/idle` | | waits (up to 30 s) until every queued delivery was answered; `{"idle": bool}` |

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ClerkSim;
use super::error::{ClerkError, json_response};
use super::events::ClerkEvent;
use super::inputs::{
    MembershipPatch, NewMembership, NewOrganization, NewUser, OrganizationPatch, UserPatch,
};
use super::store::ClerkKind;

pub(crate) fn routes(sim: &ClerkSim) -> Router<ClerkSim> {
    Router::new()
        .route("/control/users", post(create_user))
        .route(
            "/control/users/{id}",
            patch(update_user).delete(delete_user),
        )
        .route("/control/organizations", post(create_organization))
        .route(
            "/control/organizations/{id}",
            patch(update_organization).delete(delete_organization),
        )
        .route("/control/memberships", post(create_membership))
        .route(
            "/control/memberships/{id}",
            patch(update_membership).delete(delete_membership),
        )
        .route("/control/invitations", post(invite))
        .route("/control/mutate", post(mutate))
        .route(
            "/control/webhook_endpoints",
            post(add_endpoint).get(endpoints),
        )
        .route("/control/events", get(events))
        .route("/control/dump", get(dump))
        .route("/control/stats", get(stats).delete(reset_stats))
        .route("/control/idle", post(idle))
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            super::middleware::count_control,
        ))
}

/// The body as `T` (an empty body is `{}`).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ClerkError> {
    let bytes: &[u8] = match bytes.iter().all(u8::is_ascii_whitespace) {
        true => b"{}",
        false => bytes,
    };
    serde_json::from_slice(bytes).map_err(|e| ClerkError::bad_body(format!("invalid body: {e}")))
}

fn answer(result: Result<Value, ClerkError>) -> Response {
    match result {
        Ok(v) => json_response(StatusCode::OK, v.to_string()),
        Err(e) => e.into_response(),
    }
}

fn with_svix_id(event: &ClerkEvent) -> Value {
    let mut v = event.envelope();
    v["svix_id"] = json!(event.id);
    v
}

async fn create_user(State(sim): State<ClerkSim>, bytes: Bytes) -> Response {
    answer(body::<NewUser>(&bytes).and_then(|new| sim.create_user(new)))
}

async fn update_user(
    State(sim): State<ClerkSim>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    answer(body::<UserPatch>(&bytes).and_then(|p| sim.update_user(&id, p)))
}

async fn delete_user(State(sim): State<ClerkSim>, Path(id): Path<String>) -> Response {
    answer(sim.delete_user(&id))
}

async fn create_organization(State(sim): State<ClerkSim>, bytes: Bytes) -> Response {
    answer(body::<NewOrganization>(&bytes).and_then(|new| sim.create_organization(new)))
}

async fn update_organization(
    State(sim): State<ClerkSim>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    answer(body::<OrganizationPatch>(&bytes).and_then(|p| sim.update_organization(&id, p)))
}

async fn delete_organization(State(sim): State<ClerkSim>, Path(id): Path<String>) -> Response {
    answer(sim.delete_organization(&id))
}

async fn create_membership(State(sim): State<ClerkSim>, bytes: Bytes) -> Response {
    answer(body::<NewMembership>(&bytes).and_then(|new| sim.create_membership(new)))
}

async fn update_membership(
    State(sim): State<ClerkSim>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    answer(body::<MembershipPatch>(&bytes).and_then(|p| sim.update_membership(&id, p)))
}

async fn delete_membership(State(sim): State<ClerkSim>, Path(id): Path<String>) -> Response {
    answer(sim.delete_membership(&id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invitation {
    organization_id: String,
    email_address: String,
    role: Option<String>,
}

async fn invite(State(sim): State<ClerkSim>, bytes: Bytes) -> Response {
    answer(body::<Invitation>(&bytes).and_then(|i| {
        let role = i.role.as_deref().unwrap_or(super::model::MEMBER);
        sim.invite(&i.organization_id, &i.email_address, role)
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mutate {
    count: usize,
    #[serde(default)]
    seed: u64,
}

async fn mutate(State(sim): State<ClerkSim>, bytes: Bytes) -> Response {
    answer(body::<Mutate>(&bytes).map(|m| {
        let events: Vec<Value> = sim
            .mutate(m.count, m.seed)
            .iter()
            .map(with_svix_id)
            .collect();
        json!({"events": events})
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Endpoint {
    url: String,
    secret: Option<String>,
}

async fn add_endpoint(State(sim): State<ClerkSim>, bytes: Bytes) -> Response {
    answer(body::<Endpoint>(&bytes).and_then(|e| {
        let endpoint = sim.register_endpoint(&e.url, e.secret.as_deref())?;
        Ok(json!(endpoint))
    }))
}

async fn endpoints(State(sim): State<ClerkSim>) -> Response {
    Json(json!({"data": sim.endpoints()})).into_response()
}

async fn events(State(sim): State<ClerkSim>) -> Response {
    let events: Vec<Value> = sim.events().iter().map(with_svix_id).collect();
    Json(json!({"data": events})).into_response()
}

async fn dump(State(sim): State<ClerkSim>) -> Response {
    Json(json!({
        "users": sim.users(),
        "organizations": sim.organizations(),
        "memberships": sim.memberships(),
        "deleted": {
            "users": sim.deleted_ids(ClerkKind::User),
            "organizations": sim.deleted_ids(ClerkKind::Organization),
            "memberships": sim.deleted_ids(ClerkKind::OrganizationMembership),
        },
    }))
    .into_response()
}

async fn stats(State(sim): State<ClerkSim>) -> Response {
    Json(json!({"api": sim.stats(), "webhooks": sim.webhook_stats()})).into_response()
}

async fn reset_stats(State(sim): State<ClerkSim>) -> Response {
    sim.inner.stats.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn idle(State(sim): State<ClerkSim>) -> Response {
    let idle = tokio::time::timeout(Duration::from_secs(30), sim.idle())
        .await
        .is_ok();
    Json(json!({"idle": idle})).into_response()
}
