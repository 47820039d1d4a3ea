//! The control API under `/__sim/` (no PCO auth): mutations, the dump, counters.
//! See the crate documentation for the request and response shapes.

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use crate::Simulator;
use crate::api::{Included, Renderer, base_url};
use crate::error::{SimError, json_response};
use crate::query::parse_pairs;
use crate::record::Record;
use crate::schema::ResourceKind;

/// Resources per chunk of the streamed dump.
const DUMP_CHUNK: usize = 512;

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/__sim/dump", get(dump))
        .route("/__sim/stats", get(stats).delete(reset_stats))
        .route("/__sim/info", get(info))
        .route("/__sim/outage", post(start_outage).delete(end_outage))
        .route("/__sim/oauth/grant", post(crate::oauth::control_grant))
        .route("/__sim/{collection}", post(create))
        .route("/__sim/{collection}/{id}", patch(update).delete(delete))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed(req: axum::extract::Request) -> Response {
    SimError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

fn kind_of(collection: &str) -> Result<ResourceKind, SimError> {
    ResourceKind::from_collection(collection)
        .ok_or_else(|| SimError::not_found(format!("unknown collection {collection:?}")))
}

fn id_of(kind: ResourceKind, id: &str) -> Result<u64, SimError> {
    id.parse()
        .map_err(|_| SimError::not_found(format!("{kind} {id:?} not found")))
}

fn body_json(body: &Bytes) -> Result<Value, SimError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| SimError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// `{"data": <resource>}` as the API would serve it.
fn resource_doc(sim: &Simulator, rec: &Record, base: &str) -> Vec<u8> {
    let guard = sim.inner.store.read();
    let snap = guard.snap();
    let r = Renderer {
        snap: &snap,
        org_id: &sim.inner.config.org_id,
        base: Some(base),
    };
    // Re-read so derived relationships (household people) reflect the stored state.
    let rec = snap.get(rec.kind, rec.id).unwrap_or_else(|| rec.clone());
    let mut out = b"{\"data\":".to_vec();
    r.write(&mut out, &rec, &[], &mut Included::default());
    out.push(b'}');
    out
}

async fn create(
    State(sim): State<Simulator>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let kind = kind_of(&collection)?;
        let json = body_json(&body)?;
        sim.inner.store.create(kind, &json)
    })();
    match result {
        Ok(rec) => json_response(
            StatusCode::CREATED,
            resource_doc(&sim, &rec, &base_url(&headers)),
        ),
        Err(e) => e.into_response(),
    }
}

async fn update(
    State(sim): State<Simulator>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let kind = kind_of(&collection)?;
        let id = id_of(kind, &id)?;
        let json = body_json(&body)?;
        sim.inner.store.update(kind, id, &json)
    })();
    match result {
        Ok(rec) => json_response(
            StatusCode::OK,
            resource_doc(&sim, &rec, &base_url(&headers)),
        ),
        Err(e) => e.into_response(),
    }
}

async fn delete(
    State(sim): State<Simulator>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    let result = (|| {
        let kind = kind_of(&collection)?;
        let id = id_of(kind, &id)?;
        sim.inner.store.delete(kind, id)
    })();
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The kinds selected by `?type=` (a type or collection name; all kinds when absent).
pub(crate) fn dump_kinds(raw_query: Option<&str>) -> Result<Vec<ResourceKind>, SimError> {
    match parse_pairs(raw_query)
        .into_iter()
        .find(|(k, _)| k == "type")
    {
        Some((_, v)) => v
            .parse::<ResourceKind>()
            .map(|k| vec![k])
            .map_err(|e| SimError::bad_parameter("type", e)),
        None => Ok(ResourceKind::ALL.to_vec()),
    }
}

/// One chunk of the dump: up to `limit` live resources of `kind` from `offset` (id order).
pub(crate) fn dump_chunk(
    sim: &Simulator,
    kind: ResourceKind,
    offset: usize,
    limit: usize,
) -> (Vec<u8>, usize) {
    let guard = sim.inner.store.read();
    let snap = guard.snap();
    let r = Renderer {
        snap: &snap,
        org_id: &sim.inner.config.org_id,
        base: None,
    };
    let ids = snap.page_default(kind, offset, limit);
    let mut out = Vec::with_capacity(ids.len() * 1024);
    for id in &ids {
        if let Some(rec) = snap.get(kind, *id) {
            r.dump_line(&mut out, &rec);
        }
    }
    (out, ids.len())
}

async fn dump(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let kinds = match dump_kinds(query.as_deref()) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let stream = futures_util::stream::unfold(
        (sim, kinds, 0usize, 0usize),
        |(sim, kinds, ki, offset)| async move {
            let &kind = kinds.get(ki)?;
            let (chunk, n) = dump_chunk(&sim, kind, offset, DUMP_CHUNK);
            let (ki, offset) = if n < DUMP_CHUNK {
                (ki + 1, 0)
            } else {
                (ki, offset + n)
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(chunk)),
                (sim, kinds, ki, offset),
            ))
        },
    );
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

async fn stats(State(sim): State<Simulator>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&sim.stats()).unwrap_or_default(),
    )
}

/// `POST /__sim/outage` with `{"after": N}` (optional; 0 = now): API
/// requests answer 503 once N more have been answered.
async fn start_outage(State(sim): State<Simulator>, body: Bytes) -> Response {
    let after = if body.is_empty() {
        Some(0)
    } else {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| match v.get("after") {
                None => Some(0),
                Some(after) => after.as_u64(),
            })
    };
    match after {
        Some(after) => {
            sim.set_outage(Some(after));
            StatusCode::NO_CONTENT.into_response()
        }
        None => SimError::bad_request(
            "body must be {\"after\": N} with N a whole number of API requests (or empty)",
        )
        .into_response(),
    }
}

/// `DELETE /__sim/outage`: the API answers again.
async fn end_outage(State(sim): State<Simulator>) -> Response {
    sim.set_outage(None);
    StatusCode::NO_CONTENT.into_response()
}

async fn reset_stats(State(sim): State<Simulator>) -> Response {
    sim.inner.stats.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn info(State(sim): State<Simulator>) -> Response {
    let guard = sim.inner.store.read();
    let snap = guard.snap();
    let mut live = serde_json::Map::new();
    let mut generated = serde_json::Map::new();
    for kind in ResourceKind::ALL {
        live.insert(kind.type_name().into(), json!(snap.live_count(kind)));
        generated.insert(kind.type_name().into(), json!(snap.data.count(kind)));
    }
    let cfg = &sim.inner.config;
    let body = json!({
        "seed": cfg.seed,
        "people": cfg.people,
        "org_id": cfg.org_id,
        "live": live,
        "generated": generated,
        "mutations": snap.mutations(),
        "version": snap.version(),
        "rate_limit": cfg.rate_limit.map(|r| json!({
            "limit": r.limit,
            "period_secs": r.period.as_secs_f64(),
            "deep_offset_limit": r.deep_offset_limit,
        })),
        "token_ttl_secs": cfg.token_ttl.as_secs(),
        "faults": {
            "p429": cfg.faults.p429,
            "p5xx": cfg.faults.p5xx,
            "timeout": cfg.faults.timeout,
            "reset": cfg.faults.reset,
            "malformed": cfg.faults.malformed,
            "latency_ms": cfg.faults.latency.as_millis() as u64,
            "hang_ms": cfg.faults.hang.as_millis() as u64,
            "max_per_url": cfg.faults.max_per_url,
        },
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}
