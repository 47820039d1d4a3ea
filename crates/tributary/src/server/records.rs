//! The records API and full-text search over HTTP.
//!
//! - `GET /v1/records?connection=&entity=&modified_after=&cursor=&limit=&include_deleted=`:
//!   records in *version* order — a record's version is the change-feed
//!   position of its latest change — answered `{records, next_cursor,
//!   head}`. Ask again with `cursor=next_cursor` until `next_cursor >=
//!   head`. A record that changes while a client pages appears again at
//!   its new place (never skipped), and no version is handed out twice.
//!   `next_cursor` is a change-feed position: after the last page,
//!   `GET /v1/changes?after=NEXT_CURSOR` (or the stream or socket from it)
//!   carries on with exactly the changes the pages did not reflect — no
//!   gap, no duplicate. `include_deleted=true` lists tombstones (with
//!   `deleted_at`); `modified_after` (RFC 3339) keeps records whose content
//!   changed after that time. `limit` 1–1,000 (default 100).
//! - `GET /v1/records/{connection}/{entity}/{external_id}`: one record,
//!   canonical and raw, with its edges out and in (a tombstone too, with
//!   `deleted_at`); 404 when there is none.
//! - `GET /v1/search?q=&connection=&entity=&limit=`: live records whose
//!   canonical string values hold every word of `q` (each as the start of
//!   a word), best first, each with a `rank` (higher is better; comparable
//!   within one answer) and a `snippet` (matched words in `«` `»`);
//!   `indexed_through` is the change-feed position the index reflects (it
//!   follows the feed, about a fifth of a second behind). `limit` 1–100
//!   (default 20).
//!
//! Errors are JSON problem documents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary_core::Timestamp;
use tributary_store::{RecordVersion, RecordsPageQuery, SearchQuery};

use super::AppState;
use super::problem::{self, Path, Problem, Query};

/// Records one page carries at most.
const MAX_RECORDS: u32 = 1_000;

/// Search results one answer carries at most.
const MAX_RESULTS: u32 = 100;

/// The query of `GET /v1/records`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsParams {
    /// Only this connection's records (by name).
    #[param(min_length = 1)]
    pub connection: Option<String>,
    /// Only this entity's records.
    #[param(min_length = 1)]
    pub entity: Option<String>,
    /// Only records whose content changed after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub modified_after: Option<Timestamp>,
    /// The `next_cursor` of the page before (a change-feed position;
    /// absent or 0: from the start; negative: among the records older
    /// than the feed's retention, which come first).
    pub cursor: Option<i64>,
    /// At most this many records (1–1,000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// List deleted records (tombstones) too.
    pub include_deleted: Option<bool>,
}

/// One record in a page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordItem {
    pub connection: String,
    pub entity: String,
    pub external_id: String,
    pub canonical_entity: String,
    /// The record's canonical form.
    #[schema(value_type = Object)]
    pub canonical: Value,
    pub content_hash: String,
    /// The change-feed position of its latest change.
    pub version: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub source_updated_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub first_seen_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_modified_at: Timestamp,
    /// When it was found deleted at the source (a tombstone).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<Timestamp>,
}

impl From<RecordVersion> for RecordItem {
    fn from(r: RecordVersion) -> Self {
        Self {
            connection: r.connection,
            entity: r.entity,
            external_id: r.external_id,
            canonical_entity: r.canonical_entity,
            canonical: r.canonical,
            content_hash: r.content_hash,
            version: r.version,
            source_updated_at: r.source_updated_at,
            first_seen_at: r.first_seen_at,
            last_modified_at: r.last_modified_at,
            deleted_at: r.deleted_at,
        }
    }
}

/// The answer of `GET /v1/records`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordsPageBody {
    /// The records, in version order.
    pub records: Vec<RecordItem>,
    /// Where the next page starts: a change-feed position (the last
    /// record's version when the page is full, else the head).
    pub next_cursor: i64,
    /// The change feed's head when the page was read: pages are done when
    /// `next_cursor >= head`.
    pub head: i64,
}

/// An edge of a record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgeItem {
    /// The relationship's name (on the record it leaves).
    pub rel: String,
    /// The record at the other end.
    pub entity: String,
    pub external_id: String,
    /// Whether the source record belongs to the target (deletions cascade).
    pub hard: bool,
}

/// A record's edges.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgesBody {
    /// The edges leaving the record (to the records it points at).
    pub outgoing: Vec<EdgeItem>,
    /// The edges pointing at the record (from the records that point at it).
    pub incoming: Vec<EdgeItem>,
}

/// The answer of `GET /v1/records/{connection}/{entity}/{external_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordBody {
    pub connection: String,
    pub entity: String,
    pub external_id: String,
    pub canonical_entity: String,
    /// The record's canonical form.
    #[schema(value_type = Object)]
    pub canonical: Value,
    /// The object as the source sent it.
    #[schema(value_type = Object)]
    pub raw: Value,
    pub content_hash: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub source_updated_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub first_seen_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_modified_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<Timestamp>,
    pub edges: EdgesBody,
}

/// The query of `GET /v1/search`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The words to find (at least one word of letters or digits).
    #[param(pattern = "[\\p{L}\\p{N}]")]
    pub q: String,
    /// Only this connection's records (by name).
    #[param(min_length = 1)]
    pub connection: Option<String>,
    /// Only this entity's records.
    #[param(min_length = 1)]
    pub entity: Option<String>,
    /// At most this many results (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// One search result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub connection: String,
    pub entity: String,
    pub external_id: String,
    /// The record's canonical form.
    #[schema(value_type = Object)]
    pub canonical: Value,
    /// How well it matches: higher is better, within one answer.
    pub rank: f64,
    /// The matching text, matched words between `«` and `»`.
    pub snippet: String,
}

/// The answer of `GET /v1/search`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchBody {
    /// Best first.
    pub results: Vec<SearchResult>,
    /// The change-feed position the index reflects: every change up to
    /// it is searchable.
    pub indexed_through: i64,
}

/// The id of the connection called `name`, or the answer that refuses.
async fn connection_id(state: &AppState, name: &str) -> Result<i64, Response> {
    match state.store.connection(name).await {
        Ok(Some(connection)) => Ok(connection.id),
        Ok(None) => Err(Problem::not_found(
            "no such connection",
            format!("there is no connection named `{name}`"),
        )
        .into_response()),
        Err(error) => Err(Problem::store("the records", &error).into_response()),
    }
}

/// `GET /v1/records`: a page of records in version order after a cursor.
#[utoipa::path(get, path = "/v1/records", tag = "records", params(RecordsParams),
    responses(
        (status = 200, description = "A page of records in version order", body = RecordsPageBody),
        (status = 400, description = "A bad parameter", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, Query(params): Query<RecordsParams>) -> Response {
    if let Err(problem) =
        problem::names_given(params.connection.as_deref(), params.entity.as_deref())
    {
        return problem.into_response();
    }
    let limit = match problem::limit(params.limit, 100, MAX_RECORDS) {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    let connection_id = match &params.connection {
        Some(name) => match connection_id(&state, name).await {
            Ok(id) => Some(id),
            Err(response) => return response,
        },
        None => None,
    };
    let after = params.cursor.unwrap_or(0);
    let query = RecordsPageQuery {
        connection_id,
        entity: params.entity,
        modified_after: params.modified_after,
        after,
        limit,
        include_deleted: params.include_deleted.unwrap_or(false),
    };
    match state.store.records_page(&query).await {
        Ok(page) => Json(RecordsPageBody {
            records: page.records.into_iter().map(RecordItem::from).collect(),
            next_cursor: page.next,
            head: page.head,
        })
        .into_response(),
        Err(error) => Problem::store("the records", &error).into_response(),
    }
}

/// `GET /v1/records/{connection}/{entity}/{external_id}`: one record,
/// canonical and raw, with its edges out and in.
#[utoipa::path(get, path = "/v1/records/{connection}/{entity}/{external_id}", tag = "records",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        ("entity" = String, Path, description = "The record's entity"),
        ("external_id" = String, Path, description = "The record's id at the source"),
    ),
    responses(
        (status = 200, description = "The record", body = RecordBody),
        (status = 400, description = "A bad parameter", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn one(
    State(state): State<AppState>,
    Path((connection, entity, external_id)): Path<(String, String, String)>,
) -> Response {
    let id = match connection_id(&state, &connection).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let found = async {
        let Some(record) = state.store.record(id, &entity, &external_id).await? else {
            return Ok(None);
        };
        let outgoing = state.store.edges_from(id, &entity, &external_id).await?;
        let incoming = state.store.edges_to(id, &entity, &external_id).await?;
        Ok::<_, tributary_store::Error>(Some((record, outgoing, incoming)))
    }
    .await;
    match found {
        Ok(Some((record, outgoing, incoming))) => Json(RecordBody {
            connection: record.connection,
            entity: record.entity,
            external_id: record.external_id,
            canonical_entity: record.canonical_entity,
            canonical: record.canonical,
            raw: record.raw,
            content_hash: record.content_hash,
            source_updated_at: record.source_updated_at,
            first_seen_at: record.first_seen_at,
            last_modified_at: record.last_modified_at,
            deleted_at: record.deleted_at,
            edges: EdgesBody {
                outgoing: outgoing
                    .into_iter()
                    .map(|e| EdgeItem {
                        rel: e.rel,
                        entity: e.to_entity,
                        external_id: e.to_external_id,
                        hard: e.hard,
                    })
                    .collect(),
                incoming: incoming
                    .into_iter()
                    .map(|e| EdgeItem {
                        rel: e.rel,
                        entity: e.from_entity,
                        external_id: e.from_external_id,
                        hard: e.hard,
                    })
                    .collect(),
            },
        })
        .into_response(),
        Ok(None) => Problem::not_found(
            "no such record",
            format!("connection `{connection}` has no {entity} record `{external_id}`"),
        )
        .into_response(),
        Err(error) => Problem::store("the record", &error).into_response(),
    }
}

/// `GET /v1/search`: live records matching every word of `q`, best first.
#[utoipa::path(get, path = "/v1/search", tag = "records", params(SearchParams),
    responses(
        (status = 200, description = "The matching records, best first", body = SearchBody),
        (status = 400, description = "A bad parameter", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn search(State(state): State<AppState>, Query(params): Query<SearchParams>) -> Response {
    if let Err(problem) =
        problem::names_given(params.connection.as_deref(), params.entity.as_deref())
    {
        return problem.into_response();
    }
    let limit = match problem::limit(params.limit, 20, MAX_RESULTS) {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    let words = tributary_store::search_words(&params.q);
    if words.is_empty() {
        return Problem::bad_request("`q` must hold at least one word (letters or digits)")
            .into_response();
    }
    let connection_id = match &params.connection {
        Some(name) => match connection_id(&state, name).await {
            Ok(id) => Some(id),
            Err(response) => return response,
        },
        None => None,
    };
    // Read before the search: the results reflect at least this much.
    let indexed_through = state.search.cursor();
    let query = SearchQuery {
        words,
        connection_id,
        entity: params.entity,
        limit,
    };
    match state.store.search(&query).await {
        Ok(hits) => (
            StatusCode::OK,
            Json(SearchBody {
                results: hits
                    .into_iter()
                    .map(|hit| SearchResult {
                        connection: hit.connection,
                        entity: hit.entity,
                        external_id: hit.external_id,
                        canonical: hit.canonical,
                        rank: hit.rank,
                        snippet: hit.snippet,
                    })
                    .collect(),
                indexed_through,
            }),
        )
            .into_response(),
        Err(error) => Problem::store("the search", &error).into_response(),
    }
}
