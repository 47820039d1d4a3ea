//! The HTTP client against scripted misbehaving servers: error pages,
//! garbage, paging loops, lying counts, 429s, rate headers, timeouts, and
//! OAuth2 refreshes that must happen exactly once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use tributary_core::{Credentials, Cursor, OAuth2Credentials};
use tributary_source::{CredentialStore, Error, ErrorClass, Source, SourceOptions};

/// What the scripted server sees of a request.
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: String,
}

type Script = dyn Fn(&Seen) -> Response<Body> + Send + Sync;

/// A scripted server on its own thread and runtime, so a script may block
/// (to simulate a slow or hanging server) without stalling the client.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn server(script: impl Fn(&Seen) -> Response<Body> + Send + Sync + 'static) -> Server {
    let script: Arc<Script> = Arc::new(script);
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let script = script.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method.to_string(),
                path_and_query: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            script(&seen)
        }
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = stopped => {}
            }
        });
    });
    Server {
        url,
        stop: Some(stop),
    }
}

fn respond(status: u16, content_type: &str, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body.into()))
        .unwrap()
}

fn jsonapi(doc: Value) -> Response<Body> {
    respond(200, "application/vnd.api+json", doc.to_string())
}

fn campus(id: u64) -> Value {
    json!({"type": "Campus", "id": id.to_string(), "attributes": {
        "name": format!("Campus {id}"), "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z"}})
}

fn source(url: &str, credentials: Credentials, options: SourceOptions) -> Source {
    let manifest = Arc::new(tributary_manifest::builtin("pco").unwrap().unwrap());
    Source::new(
        manifest,
        credentials,
        SourceOptions {
            base_url: Some(url.to_owned()),
            ..options
        },
    )
    .unwrap()
}

/// A source with a static token and default options.
fn plain_source(url: &str) -> Source {
    source(url, Credentials::bearer("t"), SourceOptions::default())
}

fn campus_entity() -> tributary_manifest::Entity {
    let manifest = tributary_manifest::builtin("pco").unwrap().unwrap();
    manifest.entities["Campus"].clone()
}

async fn first_page(source: &Source) -> Result<tributary_source::Page, Error> {
    source.fetch_page(&campus_entity(), &Cursor::start()).await
}

#[tokio::test]
async fn an_html_error_page_is_a_transient_error_with_its_title() {
    let server = server(|_| {
        respond(
            502,
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>",
        )
    })
    .await;
    let source = plain_source(&server.url);
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient);
    let shown = error.to_string();
    assert!(
        shown.contains("502") && shown.contains("`502 Bad Gateway`"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_wrong_content_type_or_garbage_is_a_clear_transient_error() {
    let server = server(|seen| {
        if seen.path_and_query.contains("offset=0") {
            respond(200, "text/html", "<html><title>Sign in</title></html>")
        } else {
            respond(200, "application/json", "{\"data\": [1, 2")
        }
    })
    .await;
    let source = plain_source(&server.url);
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(
        error
            .to_string()
            .contains("expected JSON, got content type `text/html`")
            && error.to_string().contains("`Sign in`"),
        "{error}"
    );
    let error = source
        .fetch_page(&campus_entity(), &Cursor(json!({"offset": 100})))
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(error.to_string().contains("invalid JSON"), "{error}");
}

#[tokio::test]
async fn a_links_next_loop_is_refused() {
    let server = server(|_| {
        jsonapi(json!({"data": [campus(1)], "links": {"next": "same"},
            "meta": {"total_count": 5, "next": {"offset": 0}}}))
    })
    .await;
    let source = plain_source(&server.url);
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(error.to_string().contains("refusing to loop"), "{error}");
}

#[tokio::test]
async fn paging_far_past_a_lying_total_count_stops() {
    // Every page has data and a next link that moves on, forever; the
    // server claims there are 5 campuses.
    let server = server(|seen| {
        let offset: u64 = seen
            .path_and_query
            .split("offset=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        jsonapi(
            json!({"data": [campus(offset + 1)], "links": {"next": "more"},
            "meta": {"total_count": 5, "next": {"offset": offset + 100}}}),
        )
    })
    .await;
    let source = source(
        &server.url,
        Credentials::bearer("t"),
        SourceOptions {
            rate_limiter: Some(Arc::new(tributary_source::Unlimited::default())),
            ..SourceOptions::default()
        },
    );
    let entity = campus_entity();
    let mut cursor = Cursor::start();
    let mut pages = 0;
    let error = loop {
        match source.fetch_page(&entity, &cursor).await {
            Ok(page) => {
                pages += 1;
                assert!(pages < 100, "paged forever");
                cursor = page.next;
            }
            Err(error) => break error,
        }
    };
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(error.to_string().contains("total_count 5"), "{error}");
}

#[tokio::test]
async fn a_429_pauses_the_budget_for_retry_after() {
    let server = server(|_| {
        Response::builder()
            .status(429)
            .header("content-type", "application/vnd.api+json")
            .header("retry-after", "3")
            .header("x-pco-api-request-rate-count", "100")
            .header("x-pco-api-request-rate-limit", "100")
            .header("x-pco-api-request-rate-period", "20")
            .body(Body::from(
                r#"{"errors":[{"status":"429","title":"Too Many Requests","detail":"Rate limit exceeded"}]}"#,
            ))
            .unwrap()
    })
    .await;
    let source = plain_source(&server.url);
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::RateLimited);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert!(error.to_string().contains("Too Many Requests"), "{error}");
    let status = source.rate_status();
    assert!(status.paused);
    assert_eq!(status.refusals, 1);
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped() {
    let server = server(|_| {
        Response::builder()
            .status(429)
            .header("content-type", "application/vnd.api+json")
            .header("retry-after", "99999999999999")
            .body(Body::from(r#"{"errors":[{"status":"429"}]}"#))
            .unwrap()
    })
    .await;
    let source = plain_source(&server.url);
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(600)));
}

#[tokio::test]
async fn rate_headers_correct_the_declared_budget() {
    let server = server(|_| {
        Response::builder()
            .status(200)
            .header("content-type", "application/vnd.api+json")
            .header("x-pco-api-request-rate-count", "1")
            .header("x-pco-api-request-rate-limit", "40")
            .header("x-pco-api-request-rate-period", "10")
            .body(Body::from(
                json!({"data": [campus(1)], "links": {}, "meta": {"total_count": 1}}).to_string(),
            ))
            .unwrap()
    })
    .await;
    let source = plain_source(&server.url);
    assert_eq!(
        source.rate_status().limit,
        100,
        "the manifest's declared limit"
    );
    first_page(&source).await.unwrap();
    let status = source.rate_status();
    assert_eq!((status.limit, status.period), (40, Duration::from_secs(10)));
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let server = server(|_| {
        std::thread::sleep(Duration::from_millis(1500));
        jsonapi(json!({"data": []}))
    })
    .await;
    let source = source(
        &server.url,
        Credentials::bearer("t"),
        SourceOptions {
            timeout: Duration::from_millis(300),
            ..SourceOptions::default()
        },
    );
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(error.to_string().contains("timed out"), "{error}");
}

#[tokio::test]
async fn a_static_token_refused_is_an_auth_error_without_the_token() {
    let server = server(|_| {
        respond(
            401,
            "application/vnd.api+json",
            r#"{"errors":[{"status":"401","title":"Unauthorized"}]}"#,
        )
    })
    .await;
    let source = source(
        &server.url,
        Credentials::bearer("s3cret-token"),
        SourceOptions::default(),
    );
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Auth);
    assert!(!format!("{error} {error:?}").contains("s3cret"));
}

/// A token endpoint with rotating refresh tokens, and an API that accepts
/// only the newest access token.
#[derive(Default)]
struct OAuthServer {
    refreshes: AtomicU32,
    token_requests: AtomicU32,
    /// (refresh token, access token) currently valid.
    valid: Mutex<(String, String)>,
    /// The API answers 401 to everything.
    refuse_api: std::sync::atomic::AtomicBool,
}

impl OAuthServer {
    fn new() -> Arc<Self> {
        let server = Self::default();
        *server.valid.lock().unwrap() = ("refresh-0".into(), "access-0".into());
        Arc::new(server)
    }

    fn handle(&self, seen: &Seen) -> Response<Body> {
        if seen.method == "POST" && seen.path_and_query.starts_with("/oauth/token") {
            self.token_requests.fetch_add(1, Ordering::SeqCst);
            assert!(
                !seen.path_and_query.contains("secret"),
                "the client secret must travel in the body"
            );
            let form: std::collections::HashMap<String, String> =
                url_form(&seen.body).into_iter().collect();
            assert_eq!(form["grant_type"], "refresh_token");
            assert_eq!(form["client_secret"], "client-secret");
            // Slow, so concurrent callers would overlap if not single flight.
            std::thread::sleep(Duration::from_millis(100));
            let mut valid = self.valid.lock().unwrap();
            if form["refresh_token"] != valid.0 {
                return respond(
                    400,
                    "application/json",
                    r#"{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}"#,
                );
            }
            let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
            *valid = (format!("refresh-{n}"), format!("access-{n}"));
            return respond(
                200,
                "application/json",
                json!({"access_token": valid.1, "token_type": "bearer", "expires_in": 7200,
                    "refresh_token": valid.0, "scope": "people", "created_at": 0})
                .to_string(),
            );
        }
        let expected = format!("Bearer {}", self.valid.lock().unwrap().1);
        let authorized = seen
            .headers
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap() == expected);
        if !authorized || self.refuse_api.load(Ordering::SeqCst) {
            return respond(
                401,
                "application/vnd.api+json",
                r#"{"errors":[{"status":"401","title":"Unauthorized","detail":"token expired"}]}"#,
            );
        }
        jsonapi(json!({"data": [campus(1)], "links": {}, "meta": {"total_count": 1}}))
    }
}

fn url_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2D", "-").replace('+', " ")))
        .collect()
}

/// Remembers what was saved; can pretend another process rotated the pair.
#[derive(Debug, Default)]
struct MemoryStore {
    saved: Mutex<Vec<Credentials>>,
    persisted: Mutex<Option<Credentials>>,
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn load(&self) -> Result<Option<Credentials>, String> {
        Ok(self.persisted.lock().unwrap().clone())
    }
    async fn save(&self, credentials: &Credentials) -> Result<(), String> {
        self.saved.lock().unwrap().push(credentials.clone());
        *self.persisted.lock().unwrap() = Some(credentials.clone());
        Ok(())
    }
}

fn oauth(refresh: &str, access: Option<&str>, expires_in_secs: i64) -> Credentials {
    Credentials::OAuth2(OAuth2Credentials {
        client_id: "client".into(),
        client_secret: "client-secret".into(),
        refresh_token: refresh.into(),
        access_token: access.map(str::to_owned),
        expires_at: Some(
            tributary_core::Clock::now(&tributary_core::SystemClock)
                + chrono::Duration::seconds(expires_in_secs),
        ),
        token_url: None,
    })
}

async fn oauth_source(
    credentials: Credentials,
) -> (Arc<OAuthServer>, Server, Source, Arc<MemoryStore>) {
    let oauth = OAuthServer::new();
    let handler = oauth.clone();
    let server = server(move |seen| handler.handle(seen)).await;
    let store = Arc::new(MemoryStore::default());
    let source = source(
        &server.url,
        credentials,
        SourceOptions {
            credential_store: Some(store.clone()),
            ..SourceOptions::default()
        },
    );
    (oauth, server, source, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expiring_token_is_refreshed_once_for_many_concurrent_requests() {
    // Expires in 10 s: inside the refresh margin, so the first requests refresh.
    let (oauth, _server, source, store) =
        oauth_source(oauth("refresh-0", Some("access-0"), 10)).await;
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { first_page(&source).await.map(|p| p.records.len()) })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 1);
    }
    assert_eq!(oauth.refreshes.load(Ordering::SeqCst), 1, "single flight");
    let saved = store.saved.lock().unwrap().clone();
    assert_eq!(saved.len(), 1, "the new pair is persisted once");
    let Credentials::OAuth2(pair) = &saved[0] else {
        panic!("oauth2 expected")
    };
    assert_eq!(pair.refresh_token, "refresh-1");
    assert_eq!(pair.access_token.as_deref(), Some("access-1"));
    assert_eq!(source.credentials(), saved[0]);
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries() {
    // The token looks fresh, but the server already revoked it.
    let (oauth, _server, source, _store) =
        oauth_source(oauth("refresh-0", Some("stale"), 3600)).await;
    assert_eq!(first_page(&source).await.unwrap().records.len(), 1);
    assert_eq!(oauth.refreshes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn still_401_after_a_refresh_is_an_auth_error() {
    let (oauth, _server, source, _store) =
        oauth_source(oauth("refresh-0", Some("stale"), 3600)).await;
    oauth.refuse_api.store(true, Ordering::SeqCst);
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Auth);
    assert_eq!(
        oauth.refreshes.load(Ordering::SeqCst),
        1,
        "refreshed once, not in a loop"
    );
}

#[tokio::test]
async fn a_rejected_refresh_token_needs_reauthorisation() {
    let (oauth, _server, source, _store) = oauth_source(oauth("revoked", None, 0)).await;
    let error = first_page(&source).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Auth);
    let shown = error.to_string();
    assert!(
        shown.contains("invalid_grant") && shown.contains("re-authorise"),
        "{shown}"
    );
    assert!(
        !shown.contains("revoked") && !shown.contains("client-secret"),
        "{shown}"
    );
    assert_eq!(oauth.refreshes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_refresh_token_is_not_posted_again() {
    let (oauth, _server, source, _store) = oauth_source(oauth("revoked", None, 0)).await;
    assert_eq!(
        first_page(&source).await.unwrap_err().class(),
        ErrorClass::Auth
    );
    assert_eq!(
        first_page(&source).await.unwrap_err().class(),
        ErrorClass::Auth
    );
    assert_eq!(
        oauth.token_requests.load(Ordering::SeqCst),
        1,
        "the dead token is remembered"
    );
}

#[tokio::test]
async fn an_expired_pair_rotated_elsewhere_is_refreshed_with_its_own_token() {
    let (server, _http, source, store) = oauth_source(oauth("refresh-0", None, 0)).await;
    // Another process rotated the pair; its access token has expired since.
    *server.valid.lock().unwrap() = ("refresh-elsewhere".into(), "expired".into());
    *store.persisted.lock().unwrap() = Some(oauth("refresh-elsewhere", Some("expired"), -60));
    assert_eq!(first_page(&source).await.unwrap().records.len(), 1);
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.token_requests.load(Ordering::SeqCst),
        1,
        "no dead token posted"
    );
}

#[tokio::test]
async fn a_pair_rotated_by_another_process_is_adopted() {
    let (oauth, _server, source, store) = oauth_source(oauth("refresh-0", None, 0)).await;
    // Another process refreshed first and persisted its pair.
    {
        let mut valid = oauth.valid.lock().unwrap();
        *valid = ("refresh-elsewhere".into(), "access-elsewhere".into());
    }
    *store.persisted.lock().unwrap() = Some(oauth_pair("refresh-elsewhere", "access-elsewhere"));
    assert_eq!(first_page(&source).await.unwrap().records.len(), 1);
    assert_eq!(
        oauth.refreshes.load(Ordering::SeqCst),
        0,
        "no refresh of our own"
    );
    assert!(store.saved.lock().unwrap().is_empty());
}

fn oauth_pair(refresh: &str, access: &str) -> Credentials {
    oauth(refresh, Some(access), 3600)
}

#[tokio::test]
async fn status_code_classes() {
    let statuses = Arc::new(Mutex::new(vec![404u16, 503, 400]));
    let script = statuses.clone();
    let server = server(move |_| {
        let status = script.lock().unwrap().remove(0);
        respond(
            status,
            "application/vnd.api+json",
            json!({"errors": [{"status": status.to_string(), "title": StatusCode::from_u16(status).unwrap().canonical_reason().unwrap()}]}).to_string(),
        )
    })
    .await;
    let source = plain_source(&server.url);
    let classes: Vec<_> = futures_classes(&source, 3).await;
    assert_eq!(
        classes,
        vec![
            ErrorClass::Permanent,
            ErrorClass::Transient,
            ErrorClass::Permanent
        ]
    );
}

async fn futures_classes(source: &Source, n: usize) -> Vec<ErrorClass> {
    let mut classes = Vec::new();
    for _ in 0..n {
        classes.push(first_page(source).await.unwrap_err().class());
    }
    classes
}

#[test]
fn children_cursors_round_trip_and_a_foreign_one_is_refused() {
    let source = plain_source("http://127.0.0.1:1");
    assert_eq!(source.children_after(&Cursor::start()).unwrap(), None);
    let cursor = source.children_cursor(Some("4711"), false);
    assert_eq!(
        source.children_after(&cursor).unwrap().as_deref(),
        Some("4711")
    );
    // The shape stored by earlier versions reads the same.
    let stored = Cursor(json!({"after": "12", "done": true}));
    assert_eq!(
        source.children_after(&stored).unwrap().as_deref(),
        Some("12")
    );
    assert_eq!(
        source
            .children_after(&source.children_cursor(None, true))
            .unwrap(),
        None
    );
    assert!(source.children_after(&Cursor(json!({"after": 5}))).is_err());
    assert!(source.children_after(&Cursor(json!("x"))).is_err());
}

#[test]
fn pages_ahead_predicts_offsets_only_where_the_list_reports_its_size() {
    let source = plain_source("http://127.0.0.1:9");
    let offset = |n: u64| Cursor(json!({ "offset": n }));
    let page = |next: Cursor, total: Option<i64>, finished: bool| tributary_source::Page {
        next,
        total,
        finished,
        ..Default::default()
    };
    // The first page of 250: the next pages at the page's own stride, up to
    // the size the list reported.
    let first = page(offset(100), Some(250), false);
    assert_eq!(
        source.pages_ahead(&Cursor::start(), &first, 8),
        vec![offset(100), offset(200)]
    );
    assert_eq!(
        source.pages_ahead(&Cursor::start(), &first, 1),
        vec![offset(100)]
    );
    // A server that serves fewer objects than asked: its stride, not ours.
    let short = page(offset(125), Some(1000), false);
    assert_eq!(
        source.pages_ahead(&offset(100), &short, 3),
        vec![offset(125), offset(150), offset(175)]
    );
    // No reported size, or a cursor that is not a plain offset (a delta's):
    // only the page the list names.
    let unsized_page = page(offset(200), None, false);
    assert_eq!(
        source.pages_ahead(&offset(100), &unsized_page, 8),
        vec![offset(200)]
    );
    let delta = Cursor(json!({ "since": "2026-01-01T00:00:00Z", "offset": 100 }));
    let delta_page = page(delta.clone(), Some(1000), false);
    assert_eq!(
        source.pages_ahead(&Cursor::start(), &delta_page, 8),
        vec![delta]
    );
    // After the last page, nothing.
    let last = page(offset(250), Some(250), true);
    assert!(source.pages_ahead(&offset(200), &last, 8).is_empty());
}

#[tokio::test]
async fn fetch_one_reads_a_record_as_the_source_has_it_now() {
    let server = server(|seen| match seen.path_and_query.as_str() {
        "/people/v2/campuses/7" => jsonapi(json!({ "data": campus(7) })),
        "/people/v2/campuses/8" => respond(
            404,
            "application/vnd.api+json",
            r#"{"errors":[{"status":"404","title":"Not Found"}]}"#,
        ),
        "/people/v2/campuses/9" => jsonapi(json!({ "data": [campus(9)] })),
        "/people/v2/campuses/10" => jsonapi(json!({ "data": {"type": "Campus", "id": "10",
            "attributes": {"updated_at": "2024-01-01T00:00:00Z"}} })),
        other => respond(500, "text/plain", format!("unexpected {other}")),
    })
    .await;
    let source = plain_source(&server.url);
    let entity = campus_entity();
    let page = source.fetch_one(&entity, "7").await.unwrap().unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].external_id, "7");
    assert_eq!(page.records[0].canonical["name"], "Campus 7");
    assert!(page.finished && page.quarantined.is_empty());
    assert_eq!(page.bodies.len(), 1);
    // Gone at the source.
    assert!(source.fetch_one(&entity, "8").await.unwrap().is_none());
    // A list where one object belongs: a protocol error, not a record.
    assert!(source.fetch_one(&entity, "9").await.is_err());
    // An object that fails its mapping (no name) is quarantined.
    let bad = source.fetch_one(&entity, "10").await.unwrap().unwrap();
    assert_eq!((bad.records.len(), bad.quarantined.len()), (0, 1));
    // Ids that could leave the path are never requested.
    for id in ["", "..", "7/../8", "7?x=1", "7%2F", "a b"] {
        assert!(source.fetch_one(&entity, id).await.is_err(), "{id:?}");
    }
}

/// An adapter of plain JSON lists the way Clerk serves them: users as a
/// bare array, organizations as `{data, total_count}`, `limit`/`offset`
/// paging ordered by `order_by`, times in epoch milliseconds.
const PLAIN: &str = r#"
[adapter]
name = "plainish"
base_url = "https://api.example.com/v1"
format = "json"

[auth]
kinds = ["bearer"]

[pagination]
style = "limit_offset"
page_size = 2
max_page_size = 500
page_size_param = "limit"
offset_param = "offset"
order_param = "order_by"

[entity.User]
list = "/users"
get = "/users/{id}"
order = "+created_at"
updated_at = "updated_at"

[entity.User.fields]
first_name = { from = "first_name", type = "string", required = true }
email = "email_addresses.0.email_address"
updated_at = { from = "updated_at", type = "datetime" }

[entity.Organization]
list = "/organizations"
records_field = "data"
order = "+created_at"

[entity.Organization.fields]
name = { from = "name", type = "string", required = true }

[entity.Membership]
list = "/organization_memberships"
records_field = "data"

[entity.Membership.relationships]
organization = { to = "Organization", kind = "hard", source = "attribute", attribute = "organization.id" }
user = { to = "User", kind = "hard", source = "attribute", attribute = "public_user_data.user_id" }

[entity.Membership.fields]
role = "role"
"#;

fn user(n: u64) -> Value {
    json!({"id": format!("user_{n}"), "object": "user", "first_name": format!("Zoë {n}"),
        "email_addresses": [{"email_address": format!("z{n}@example.com")}],
        "updated_at": 1_700_000_000_000u64 + n, "links": {"x": 1}})
}

#[tokio::test]
async fn plain_json_lists_keep_each_object_as_sent() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = server(move |req| {
        log.lock().unwrap().push(req.path_and_query.clone());
        let (path, query) = req
            .path_and_query
            .split_once('?')
            .unwrap_or((&req.path_and_query, ""));
        let offset: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("offset="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match path {
            "/v1/users" => {
                let all: Vec<Value> = (1..=3).map(user).collect();
                let page: Vec<Value> = all.into_iter().skip(offset).take(2).collect();
                jsonapi(Value::Array(page))
            }
            "/v1/users/user_9" => jsonapi(user(9)),
            "/v1/organizations" => {
                jsonapi(json!({"data": [{"id": "org_1", "object": "organization",
                "name": "Ørsted"}], "total_count": 1}))
            }
            "/v1/organization_memberships" => jsonapi(json!({"data": [{"id": "orgmem_1",
                "role": "org:admin", "organization": {"id": "org_1", "name": "Ørsted"},
                "public_user_data": {"user_id": "user_1"}}], "total_count": 1})),
            _ => respond(
                404,
                "application/json",
                r#"{"errors":[{"message":"not found","code":"resource_not_found"}]}"#,
            ),
        }
    })
    .await;
    let manifest = Arc::new(tributary_manifest::parse("plain.toml", PLAIN).unwrap());
    let source = Source::new(
        manifest.clone(),
        Credentials::bearer("sk_test"),
        SourceOptions {
            base_url: Some(format!("{}/v1", server.url)),
            ..SourceOptions::default()
        },
    )
    .unwrap();
    let users = &manifest.entities["User"];
    let first = source.fetch_page(users, &Cursor::start()).await.unwrap();
    assert_eq!(first.records.len(), 2);
    assert!(!first.finished);
    let second = source.fetch_page(users, &first.next).await.unwrap();
    assert_eq!(second.records.len(), 1);
    assert!(second.finished);
    // The order parameter is named by the manifest, its `+` kept.
    assert!(
        seen.lock().unwrap()[0].contains("limit=2&offset=0&order_by=%2Bcreated_at"),
        "{:?}",
        seen.lock().unwrap()
    );
    // The raw object is the one sent — `links` too, nothing wrapped.
    let zoe = &first.records[0];
    let raw: Value = serde_json::from_str(zoe.raw.as_str()).unwrap();
    assert_eq!(raw, user(1));
    assert_eq!(zoe.canonical["email"], "z1@example.com");
    assert_eq!(zoe.canonical["updated_at"], "2023-11-14T22:13:20.001Z");
    assert_eq!(
        zoe.source_updated_at.unwrap().timestamp_millis(),
        1_700_000_000_001
    );

    // `{data, total_count}` lists, and ids inside nested objects.
    let orgs = source
        .fetch_page(&manifest.entities["Organization"], &Cursor::start())
        .await
        .unwrap();
    assert_eq!((orgs.records.len(), orgs.total), (1, Some(1)));
    let members = source
        .fetch_page(&manifest.entities["Membership"], &Cursor::start())
        .await
        .unwrap();
    let edges: Vec<(&str, &str)> = members.records[0]
        .edges
        .iter()
        .map(|e| (e.rel.as_str(), e.to_external_id.as_str()))
        .collect();
    assert_eq!(edges, [("organization", "org_1"), ("user", "user_1")]);

    // One record by its path; a 404 in Clerk's error shape is "gone".
    let one = source.fetch_one(users, "user_9").await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(one.records[0].raw.as_str()).unwrap(),
        user(9)
    );
    assert!(source.fetch_one(users, "user_0").await.unwrap().is_none());
}
