//! The change feed over HTTP.
//!
//! - `GET /v1/changes?after=SEQ&connection=&entity=&limit=&wait=`: the
//!   changes after `after` (default 0) in order, at most `limit` (1–1,000,
//!   default 100), and `next`, the cursor to ask after next (filtered-out
//!   changes move it too), with the feed's `head`. With `wait` (seconds, at
//!   most 60) an empty answer waits for the next change (long poll).
//! - `GET /v1/changes/stream?after=&connection=&entity=`: Server-Sent
//!   Events. The first event (`head`) tells the feed's head; then each
//!   change is an event `change` whose id is its sequence number, so a
//!   client that reconnects with `Last-Event-ID` (which takes precedence
//!   over `after`) receives every change it missed, in order, once.
//!
//! - `GET /v1/changes/ws`: a WebSocket. The client's first message
//!   subscribes — `{"type": "subscribe", "after": SEQ, "connection": ...,
//!   "entity": ...}` (all optional) — and is answered `{"type":
//!   "subscribed", "head": N, "after": SEQ}`; then `{"type": "changes",
//!   "changes": [...], "next": SEQ}` messages follow as changes are
//!   committed. A client that reconnects and subscribes after the last
//!   sequence number it received misses nothing and receives nothing twice.
//!
//! In every form the changes of one transaction arrive together, and a
//! reader pulls at its own pace (nothing is buffered for it: a slow one
//! slows nothing else). A cursor older than the feed's retention is
//! answered `410 Gone` (the stream: an `expired` event, then the end; the
//! socket: an `expired` message, then the close) saying to re-read the
//! records: never a silent gap. Errors are JSON problem documents.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use tributary_feed::{Entry, FeedError, FeedHandle, Filter};
use tributary_store::{Change, Store};

use super::AppState;
use super::batches::Batches;
use super::problem::{self, Problem, Query};

/// How long a stream stays silent before a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a WebSocket client may take to accept one batch.
const SLOW_CLIENT: Duration = Duration::from_secs(30);

/// Changes one answer (or one stream step) carries at most.
const MAX_LIMIT: usize = 1_000;

/// The longest long poll a server grants by default (`serve --max-wait`).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The last sequence number the client has (0: from the start).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Only this connection's changes (by name).
    #[param(min_length = 1)]
    connection: Option<String>,
    /// Only this entity's changes.
    #[param(min_length = 1)]
    entity: Option<String>,
    /// At most this many changes (1 to 1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Seconds to wait for a change when there is none yet (0 to the
    /// server's `--max-wait`, 60 by default).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<f64>,
}

fn expired(error: &FeedError) -> Response {
    Problem::new(StatusCode::GONE, "cursor expired", error.to_string()).into_response()
}

fn unavailable(error: &dyn std::fmt::Display) -> Response {
    Problem::store("the change feed", error).into_response()
}

/// Connection names by id, and the filter the query asks for (a
/// connection by name) — or the answer that refuses it.
async fn filter(
    state: &AppState,
    query: &FeedQuery,
) -> Result<(HashMap<i64, String>, Filter), Box<Response>> {
    if let Err(problem) = problem::names_given(query.connection.as_deref(), query.entity.as_deref())
    {
        return Err(Box::new(problem.into_response()));
    }
    if let Some(after) = query.after.filter(|after| *after < 0) {
        return Err(Box::new(
            Problem::bad_request(format!(
                "after {after} is not a sequence number: ask for 0 or more"
            ))
            .into_response(),
        ));
    }
    let names: HashMap<i64, String> = match state.store.connections().await {
        Ok(list) => list.into_iter().map(|c| (c.id, c.name)).collect(),
        Err(error) => {
            return Err(Box::new(unavailable(&error)));
        }
    };
    let connection_id = match &query.connection {
        None => None,
        Some(name) => match names.iter().find(|(_, n)| *n == name) {
            Some((id, _)) => Some(*id),
            None => {
                return Err(Box::new(
                    Problem::not_found(
                        "no such connection",
                        format!("there is no connection named `{name}`"),
                    )
                    .into_response(),
                ));
            }
        },
    };
    let filter = Filter {
        connection_id,
        entity: query.entity.clone(),
    };
    Ok((names, filter))
}

/// One change as the feed shows it.
fn change_json(change: &Change, names: &HashMap<i64, String>) -> Value {
    json!({
        "seq": change.seq,
        "connection": names.get(&change.connection_id),
        "entity": change.entity,
        "external_id": change.external_id,
        "kind": change.kind.as_str(),
        "content_hash": change.content_hash,
        "run_id": change.run_id,
        "changed_at": change.changed_at,
        "fields": change.fields,
    })
}

/// One change's JSON text.
fn change_json_text(change: &Change, names: &HashMap<i64, String>) -> String {
    change_json(change, names).to_string()
}

/// The changes' texts, each rendered once for every reader.
fn texts(changes: &[Arc<Entry>], names: &HashMap<i64, String>) -> Vec<Arc<str>> {
    changes
        .iter()
        .map(|entry| entry.text(|c| change_json(c, names).to_string()))
        .collect()
}

/// `GET /v1/changes`: a page of changes after a sequence number, or a long
/// poll for the next ones.
#[utoipa::path(get, path = "/v1/changes", tag = "changes", params(FeedQuery),
    responses(
        (status = 200, description = "Changes after `after`, in feed order", body = super::openapi::ChangesPage),
        (status = 400, description = "A bad parameter", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connection", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 410, description = "The cursor is older than the feed's retention: re-read the records", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database did not answer", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn page(State(state): State<AppState>, Query(query): Query<FeedQuery>) -> Response {
    let (names, filter) = match filter(&state, &query).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let (limit, wait) = match page_bounds(&query, state.max_wait) {
        Ok(bounds) => bounds,
        Err(problem) => return problem.into_response(),
    };
    let feed = &state.feed;
    let deadline = tokio::time::Instant::now() + wait;
    let mut after = query.after.unwrap_or(0);
    let read = loop {
        let read = match feed.read(&filter, after, limit).await {
            Ok(read) => read,
            Err(error @ FeedError::Expired { .. }) => return expired(&error),
            Err(FeedError::Store(error)) => {
                return unavailable(&error);
            }
        };
        let now = tokio::time::Instant::now();
        if !read.changes.is_empty() || now >= deadline {
            break read;
        }
        after = read.next;
        feed.wait(after, deadline - now).await;
    };
    let body = format!(
        r#"{{"changes":[{}],"next":{},"head":{}}}"#,
        texts(&read.changes, &names).join(","),
        read.next,
        read.head
    );
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A page's size and long poll, or the problem with them.
fn page_bounds(query: &FeedQuery, max_wait: Duration) -> Result<(usize, Duration), Problem> {
    let limit = problem::limit(query.limit, 100, MAX_LIMIT)?;
    let wait = match query.wait {
        None => Duration::ZERO,
        Some(wait) if (0.0..=max_wait.as_secs_f64()).contains(&wait) => {
            Duration::from_secs_f64(wait)
        }
        Some(wait) => {
            return Err(Problem::bad_request(format!(
                "wait {wait} is out of range: ask for 0 to {} seconds",
                max_wait.as_secs_f64()
            )));
        }
    };
    Ok((limit, wait))
}

/// Where a stream stands.
struct Cursor {
    feed: FeedHandle,
    store: Arc<dyn Store>,
    batches: Arc<Batches>,
    filter: Filter,
    names: HashMap<i64, String>,
    after: i64,
    started: bool,
    ended: bool,
    /// When the stream last wrote (a keep-alive is due 15 s later).
    written: tokio::time::Instant,
}

/// `GET /v1/changes/stream`: the feed as Server-Sent Events (`event:
/// change`, `id:` its sequence number; `Last-Event-ID` resumes).
#[utoipa::path(get, path = "/v1/changes/stream", tag = "changes", params(FeedQuery),
    responses(
        (status = 200, description = "A `head` event, then one `change` event per change, for as long as the client stays", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad parameter", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such connection", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 410, description = "The cursor is older than the feed's retention", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
) -> Response {
    let (names, filter) = match filter(&state, &query).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume.or(query.after).unwrap_or(0);
    if after < state.feed.horizon() {
        return expired(&FeedError::Expired {
            after,
            horizon: state.feed.horizon(),
        });
    }
    let cursor = Cursor {
        feed: state.feed.clone(),
        store: state.store.clone(),
        batches: state.batches.clone(),
        filter,
        names,
        after,
        started: false,
        ended: false,
        written: tokio::time::Instant::now(),
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events(cursor)),
    )
        .into_response()
}

/// One event of a stream: `event: NAME`, the data, and the blank line.
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The events of a stream: the head, then the changes as they come (each
/// batch's events rendered once for every subscriber at the same place),
/// and a comment line when nothing happened for 15 s (a keep-alive).
fn events(cursor: Cursor) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::unfold(cursor, |mut cursor| async move {
        if cursor.ended {
            return None;
        }
        if !cursor.started {
            cursor.started = true;
            let head = event(
                "head",
                &json!({"head": cursor.feed.head(), "after": cursor.after}),
            );
            return Some((Ok(head), cursor));
        }
        loop {
            let from = cursor.after;
            let read = match cursor
                .feed
                .read(&cursor.filter, cursor.after, MAX_LIMIT)
                .await
            {
                Ok(read) => read,
                Err(error) => {
                    cursor.ended = true;
                    let (name, status) = match error {
                        FeedError::Expired { .. } => ("expired", 410),
                        FeedError::Store(_) => ("unavailable", 503),
                    };
                    let said = event(
                        name,
                        &json!({"status": status, "detail": error.to_string()}),
                    );
                    return Some((Ok(said), cursor));
                }
            };
            cursor.after = read.next;
            if read.changes.is_empty() {
                // A keep-alive comment 15 s after the last bytes, however
                // often other connections' changes wake a filtered stream.
                let quiet = KEEP_ALIVE.saturating_sub(cursor.written.elapsed());
                if quiet.is_zero() || !cursor.feed.wait(cursor.after, quiet).await {
                    cursor.written = tokio::time::Instant::now();
                    return Some((Ok(Bytes::from_static(b":\n\n")), cursor));
                }
                continue;
            }
            // A connection added since the stream began.
            if read
                .changes
                .iter()
                .any(|c| !cursor.names.contains_key(&c.connection_id))
                && let Ok(list) = cursor.store.connections().await
            {
                cursor.names = list.into_iter().map(|c| (c.id, c.name)).collect();
            }
            let batch =
                cursor
                    .batches
                    .batch(&cursor.filter, from, &read, &cursor.names, change_json_text);
            cursor.written = tokio::time::Instant::now();
            return Some((Ok(batch.events()), cursor));
        }
    })
}

/// A WebSocket client's subscription.
#[derive(Debug, Default, Deserialize)]
struct Subscribe {
    #[serde(rename = "type")]
    kind: String,
    after: Option<i64>,
    connection: Option<String>,
    entity: Option<String>,
}

/// `GET /v1/changes/ws`: the feed over a WebSocket. The client sends
/// `{"type": "subscribe", "after": N, "connection"?, "entity"?}`; the
/// server answers `{"type": "subscribed", "head", "after"}`, then
/// `{"type": "changes", "changes": [...], "next"}` messages; an expired
/// cursor is `{"type": "expired"}`.
#[utoipa::path(get, path = "/v1/changes/ws", tag = "changes",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 426, description = "The connection cannot be upgraded", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn socket(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| session(socket, state)),
        Err(rejection) => Problem::new(
            rejection.status(),
            "not a WebSocket request",
            format!("{}: connect with a WebSocket client", rejection.body_text()),
        )
        .into_response(),
    }
}

/// Sends `value` as a text message; whether the client is still there.
async fn send(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// One WebSocket client: its subscription, then the changes.
async fn session(mut socket: WebSocket, state: AppState) {
    let refuse = |detail: String| json!({"type": "error", "detail": detail});
    let first = tokio::time::timeout(Duration::from_secs(30), socket.recv()).await;
    let subscribe = match first {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<Subscribe>(&text) {
            Ok(subscribe) if subscribe.kind == "subscribe" => subscribe,
            Ok(_) => {
                send(
                    &mut socket,
                    refuse("the first message must be {\"type\": \"subscribe\", ...}".into()),
                )
                .await;
                return;
            }
            Err(error) => {
                send(&mut socket, refuse(format!("not a subscription: {error}"))).await;
                return;
            }
        },
        _ => return,
    };
    let query = FeedQuery {
        after: subscribe.after,
        connection: subscribe.connection,
        entity: subscribe.entity,
        limit: None,
        wait: None,
    };
    let (mut names, filter) = match filter(&state, &query).await {
        Ok(found) => found,
        Err(_) => {
            let detail = format!(
                "there is no connection named `{}` (or the database did not answer)",
                query.connection.as_deref().unwrap_or("")
            );
            send(&mut socket, refuse(detail)).await;
            return;
        }
    };
    let feed = state.feed.clone();
    let mut after = query.after.unwrap_or(0);
    if !send(
        &mut socket,
        json!({"type": "subscribed", "head": feed.head(), "after": after}),
    )
    .await
    {
        return;
    }
    loop {
        let read = tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                // Pings are answered by the socket itself; anything else
                // the client says changes nothing.
                Some(Ok(_)) => continue,
            },
            read = next_batch(&feed, &filter, after) => read,
        };
        let (from, read) = match read {
            Ok(read) => read,
            Err(error) => {
                let kind = match error {
                    FeedError::Expired { .. } => "expired",
                    FeedError::Store(_) => "unavailable",
                };
                send(
                    &mut socket,
                    json!({"type": kind, "detail": error.to_string()}),
                )
                .await;
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        };
        after = read.next;
        if read
            .changes
            .iter()
            .any(|c| !names.contains_key(&c.connection_id))
            && let Ok(list) = state.store.connections().await
        {
            names = list.into_iter().map(|c| (c.id, c.name)).collect();
        }
        let message = state
            .batches
            .batch(&filter, from, &read, &names, change_json_text)
            .socket_message();
        // A client that does not take a batch within the limit has
        // fallen behind: the socket closes (nothing is buffered for it),
        // and it resumes after the last sequence it received.
        match tokio::time::timeout(SLOW_CLIENT, socket.send(Message::Text(message))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(
                    after,
                    "a WebSocket subscriber fell behind: closed, to resume after its last sequence"
                );
                return;
            }
        }
    }
}

/// The next changes after `after` that pass `filter`, waiting for them,
/// and the cursor they were read after.
async fn next_batch(
    feed: &FeedHandle,
    filter: &Filter,
    mut after: i64,
) -> Result<(i64, tributary_feed::Read), FeedError> {
    loop {
        let read = feed.read(filter, after, MAX_LIMIT).await?;
        if !read.changes.is_empty() {
            return Ok((after, read));
        }
        after = read.next;
        feed.wait(after, Duration::from_secs(15)).await;
    }
}
