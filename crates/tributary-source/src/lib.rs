//! The generic, manifest-driven HTTP source.
//!
//! Given a [`Manifest`] and credentials, a [`Source`] fetches one page of an
//! entity from a [`Cursor`] and turns it into records, quarantined objects
//! and the cursor after the page. It never touches the store: the engine
//! commits what it yields.
//!
//! Architecture invariant: this is the only crate that speaks HTTP to
//! sources and knows their JSON documents.

mod auth;
mod delta;
mod newest;
mod ratelimit;
mod transform;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_core::{
    Borrowed, Clock, Cursor, QuarantinedRecord, SourceRecord, SystemClock, Timestamp,
};
pub use tributary_core::{Credentials, OAuth2Credentials};
use tributary_manifest::{Entity, Format, Manifest, PaginationStyle};

pub use auth::CredentialStore;
pub use newest::PAGE_OVERLAP;
pub use ratelimit::{LocalRateLimiter, Observation, Permit, RateLimiter, RateStatus, Unlimited};
pub use transform::{Shape, coerce, transform, transform_shaped};
use transform::{get, member};

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again after a backoff: 5xx, timeouts, resets, malformed bodies.
    Transient,
    /// Try again after the time the API asked for.
    RateLimited,
    /// The credentials were refused.
    Auth,
    /// Trying again will not help.
    Permanent,
}

/// Source errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error status.
    #[error("{method} {url} answered {status}: {detail}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// The URL (never with secrets: credentials travel in headers).
        url: String,
        /// Status code.
        status: u16,
        /// The API's own explanation, shortened.
        detail: String,
        /// `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The request failed before a whole answer (connect, reset, timeout).
    #[error("{method} {url} failed: {}", transport_detail(source))]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the document the manifest describes.
    #[error("GET {url} returned an unreadable document: {detail}")]
    Malformed {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The API broke its own paging contract.
    #[error("GET {url}: {detail}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The credentials were refused and cannot be refreshed: the connection
    /// needs re-authorisation.
    #[error("authentication failed: {detail}")]
    Auth {
        /// What happened (never a secret).
        detail: String,
    },
    /// The cursor does not belong to this entity's paging.
    #[error("checkpoint cursor {0} cannot resume this entity")]
    BadCursor(String),
    /// The source's configuration cannot work (a base URL that is not an
    /// http(s) URL, a page size the API does not serve): nothing was sent.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// How the engine should handle this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Status { status: 429, .. } => ErrorClass::RateLimited,
            Error::Status { status: 401, .. } => ErrorClass::Auth,
            Error::Status { status, .. } if *status >= 500 || *status == 408 => {
                ErrorClass::Transient
            }
            Error::Status { .. } => ErrorClass::Permanent,
            Error::Transport { .. } | Error::Malformed { .. } => ErrorClass::Transient,
            Error::Auth { .. } => ErrorClass::Auth,
            Error::Protocol { .. } | Error::BadCursor(_) | Error::Config(_) => {
                ErrorClass::Permanent
            }
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.class(),
            ErrorClass::Transient | ErrorClass::RateLimited
        )
    }

    /// The wait the API asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => retry_after.map(Duration::from_secs),
            _ => None,
        }
    }
}

/// `Result` with the source's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One fetched page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Transformed records, in source order.
    pub records: Vec<SourceRecord>,
    /// Objects that failed to transform.
    pub quarantined: Vec<QuarantinedRecord>,
    /// The cursor after this page.
    pub next: Cursor,
    /// Whether this was the last page.
    pub finished: bool,
    /// The collection's size, as the source reports it.
    pub total: Option<i64>,
    /// A delta page's high-water mark: the newest `updated_at` among the
    /// objects it read (of the parent, for a `parent_include` read); every
    /// change before it has been read once the page is (the list is read in
    /// `updated_at` order).
    pub high_water: Option<Timestamp>,
    /// The response bodies the page was read from, in order (one for a
    /// list page, one per page of children for a parent's children): what
    /// [`Source::parse_page`] and [`Source::parse_children`] read again, so
    /// a caller can keep a fetched page and apply it later without
    /// fetching it again.
    pub bodies: Vec<Vec<u8>>,
}

/// Options of a [`Source`].
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Overrides the manifest's base URL.
    pub base_url: Option<String>,
    /// Per-request timeout (the whole request, body included).
    pub timeout: Duration,
    /// Overrides the manifest's page size (bounded by it).
    pub page_size: Option<u32>,
    /// Where wall time comes from (token expiry).
    pub clock: Arc<dyn Clock>,
    /// Where refreshed OAuth2 tokens are persisted.
    pub credential_store: Option<Arc<dyn CredentialStore>>,
    /// The request budget. `None`: a [`LocalRateLimiter`] from the
    /// manifest's `[rate_limit]`, or [`Unlimited`] without one.
    pub rate_limiter: Option<Arc<dyn RateLimiter>>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            base_url: None,
            timeout: Duration::from_secs(30),
            page_size: None,
            clock: Arc::new(SystemClock),
            credential_store: None,
            rate_limiter: None,
        }
    }
}

/// A manifest-driven source for one connection. Cheap to clone: clones
/// share the connection's credentials and request budget.
#[derive(Debug, Clone)]
pub struct Source {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    manifest: Arc<Manifest>,
    http: reqwest::Client,
    base_url: String,
    auth: auth::Authenticator,
    limiter: Arc<dyn RateLimiter>,
    page_size: u32,
    clock: Arc<dyn Clock>,
}

/// Installs the process-wide TLS crypto provider (ring); idempotent.
pub fn install_tls_provider() {
    // Err means one is installed already, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A base URL every request can be built on: absolute, http or https,
/// with a host. Checked before any request, since a URL that cannot work
/// would otherwise fail every request as if the network were down.
pub fn check_base_url(base_url: &str) -> Result<()> {
    let invalid = |why: String| {
        Err(Error::Config(format!(
            "invalid base URL `{}`: {why}; give an absolute http:// or https:// URL, \
             e.g. https://api.example.com",
            tributary_core::redact_url(base_url)
        )))
    };
    match reqwest::Url::parse(base_url) {
        Err(error) => invalid(error.to_string()),
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            invalid(format!("the scheme `{}` is not supported", url.scheme()))
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => invalid("it has no host".into()),
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            invalid("it has a query or fragment, which request paths cannot follow".into())
        }
        Ok(_) => Ok(()),
    }
}

/// The page size a connection asks for: the manifest's, or `asked` if the
/// API serves that many (1 to its `max_page_size`).
pub fn check_page_size(manifest: &Manifest, asked: Option<u32>) -> Result<u32> {
    let max = manifest.pagination.max_page_size;
    match asked {
        None => Ok(manifest.pagination.page_size),
        Some(size) if (1..=max).contains(&size) => Ok(size),
        Some(size) => Err(Error::Config(format!(
            "page size {size} is outside 1..={max}: the `{}` API serves 1 to {max} records per \
             request",
            manifest.name
        ))),
    }
}

impl Source {
    /// A source for `manifest` with `credentials`. A base URL or page size
    /// that cannot work is an [`Error::Config`], before any request.
    pub fn new(
        manifest: Arc<Manifest>,
        credentials: Credentials,
        options: SourceOptions,
    ) -> Result<Self> {
        install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(Duration::from_secs(10).min(options.timeout))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Config(format!("cannot build the HTTP client: {error}")))?;
        let base_url = options
            .base_url
            .unwrap_or_else(|| manifest.base_url.clone())
            .trim_end_matches('/')
            .to_owned();
        check_base_url(&base_url)?;
        let page_size = check_page_size(&manifest, options.page_size)?;
        let token_url = manifest.auth.token_url.as_ref().map(|url| {
            if url.starts_with("http://") || url.starts_with("https://") {
                url.clone()
            } else {
                format!("{base_url}{url}")
            }
        });
        let limiter = options
            .rate_limiter
            .unwrap_or_else(|| match &manifest.rate_limit {
                Some(policy) => Arc::new(LocalRateLimiter::new(
                    policy.requests,
                    Duration::from_secs(u64::from(policy.period_secs)),
                )),
                None => Arc::new(Unlimited::default()),
            });
        let auth = auth::Authenticator::new(
            credentials,
            options.credential_store,
            token_url,
            options.clock.clone(),
            http.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                manifest,
                http,
                base_url,
                auth,
                limiter,
                page_size,
                clock: options.clock,
            }),
        })
    }

    /// The credentials now held: after an OAuth2 refresh, the new pair.
    pub fn credentials(&self) -> Credentials {
        self.inner.auth.credentials()
    }

    /// Whether the credentials are the connection's stored ones (refreshed
    /// pairs are persisted), rather than given for this process only.
    pub fn persists_credentials(&self) -> bool {
        self.inner.auth.persists()
    }

    /// Where the request budget stands.
    pub fn rate_status(&self) -> RateStatus {
        self.inner.limiter.status()
    }

    /// The manifest.
    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.inner.manifest
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Objects per page requested.
    pub fn page_size(&self) -> u32 {
        self.inner.page_size
    }

    /// Fetches the page of a top-level entity that `cursor` points at.
    /// Cursors are `null` (the start) or `{"offset": N}`.
    pub async fn fetch_page(&self, entity: &Entity, cursor: &Cursor) -> Result<Page> {
        if let Some(at) = newest::NewestCursor::parse(cursor)? {
            return self.fetch_newest(entity, at).await;
        }
        if let Some(at) = delta::DeltaCursor::parse(cursor)? {
            let request = self.delta_request(entity, at)?;
            let body = self.get_json(&request.url).await?;
            let mut page = self.delta_page(entity, &request, &body)?;
            page.bodies = vec![body];
            return Ok(page);
        }
        let offset = offset_of(cursor)?;
        let path = entity.list.clone();
        self.fetch_offset(entity, &path, offset, None).await
    }

    /// The cursors of up to `n` pages that follow `page` (read at `cursor`)
    /// in its list, `page.next` first: pages a caller may fetch at once and
    /// apply in order. Further pages are predicted only for a list paged by
    /// offset that reports its size (`page.total`), a stride of the page's
    /// own length, up to that size; a prediction the next page's own
    /// `next` contradicts (the list shrank or grew meanwhile) is the
    /// caller's to drop. Otherwise only `page.next`; nothing after the last
    /// page.
    pub fn pages_ahead(&self, cursor: &Cursor, page: &Page, n: usize) -> Vec<Cursor> {
        if page.finished {
            return Vec::new();
        }
        let plain_offset = |c: &Cursor| match &c.0 {
            Value::Null => Some(0),
            Value::Object(o) if o.len() == 1 => o.get("offset").and_then(Value::as_u64),
            _ => None,
        };
        let mut ahead = vec![page.next.clone()];
        let (Some(at), Some(next), Some(total)) =
            (plain_offset(cursor), plain_offset(&page.next), page.total)
        else {
            return ahead;
        };
        let stride = next.saturating_sub(at);
        if stride == 0 {
            return ahead;
        }
        let total = total.max(0) as u64;
        ahead.extend(
            (1..n as u64)
                .map(|k| next + k * stride)
                .take_while(|&offset| offset < total)
                .map(|offset| Cursor(json!({ "offset": offset }))),
        );
        ahead
    }

    /// The cursor of an entity listed under a parent once the children of
    /// every parent up to `last` (in the order the parents are walked) are
    /// read; `finished` once that was the last parent. Like every cursor,
    /// its shape is the source's: the engine stores it and hands it back.
    pub fn children_cursor(&self, last: Option<&str>, finished: bool) -> Cursor {
        Cursor(json!({ "after": last, "done": finished }))
    }

    /// The last parent whose children [`Source::children_cursor`]'s
    /// `cursor` covers (`None`: none yet, the start).
    pub fn children_after(&self, cursor: &Cursor) -> Result<Option<String>> {
        match &cursor.0 {
            Value::Null => Ok(None),
            Value::Object(o) => match o.get("after") {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(after)) => Ok(Some(after.clone())),
                Some(_) => Err(Error::BadCursor(cursor.0.to_string())),
            },
            _ => Err(Error::BadCursor(cursor.0.to_string())),
        }
    }

    /// Reads again a page [`Source::fetch_page`] fetched at `cursor`, from
    /// the body it kept (`Page::bodies`): the same page, without a request.
    pub fn parse_page(&self, entity: &Entity, cursor: &Cursor, body: Vec<u8>) -> Result<Page> {
        if let Some(at) = delta::DeltaCursor::parse(cursor)? {
            let request = self.delta_request(entity, at)?;
            let mut page = self.delta_page(entity, &request, &body)?;
            page.bodies = vec![body];
            return Ok(page);
        }
        let offset = offset_of(cursor)?;
        let url = self.page_url(entity, &entity.list, offset);
        let mut page = self.parse_body(entity, &url, &body, offset, None)?;
        page.bodies = vec![body];
        Ok(page)
    }

    /// Reads again the children of `parent_id` that
    /// [`Source::fetch_children`] fetched, from the bodies it kept.
    pub fn parse_children(
        &self,
        entity: &Entity,
        parent_id: &str,
        bodies: Vec<Vec<u8>>,
    ) -> Result<Page> {
        let path = entity.list.replace("{parent_id}", parent_id);
        let mut all = Page::default();
        let mut offset = 0;
        let count = bodies.len();
        for (i, body) in bodies.into_iter().enumerate() {
            let url = self.page_url(entity, &path, offset);
            let page = self.parse_body(entity, &url, &body, offset, Some(parent_id))?;
            all.records.extend(page.records);
            all.quarantined.extend(page.quarantined);
            all.total = page.total;
            all.bodies.push(body);
            if page.finished != (i + 1 == count) {
                return Err(malformed(
                    &url,
                    "the kept pages of children do not end where they should",
                ));
            }
            all.finished = page.finished;
            if !page.finished {
                offset = offset_of(&page.next)?;
            }
        }
        if !all.finished {
            return Err(malformed(&path, "no kept pages of children"));
        }
        Ok(all)
    }

    /// Whether the record `id` of `entity` still exists at the source, by
    /// its single-record path (`get`): `false` on a 404. What confirms a
    /// record absent from a listing as deleted — a listing by offset over a
    /// changing collection can pass a record by. An entity without a `get`
    /// path cannot be asked (`None`).
    pub async fn exists(&self, entity: &Entity, id: &str) -> Option<Result<bool>> {
        let path = entity.get.as_ref()?.replace("{id}", id);
        let url = format!("{}{path}", self.inner.base_url);
        Some(match self.get_json(&url).await {
            Ok(_) => Ok(true),
            Err(Error::Status { status: 404, .. }) => Ok(false),
            Err(error) => Err(error),
        })
    }

    /// The record `id` of `entity` as the source has it now, by its
    /// single-record path (`get`): a page of that one record (or of its
    /// quarantine entry), `None` on a 404. What a webhook's notice is
    /// checked against (fetch-on-notify). An entity without a `get` path
    /// cannot be asked (`Err`), nor can an id that is not a plain path
    /// segment (letters, digits, `-`, `_`, `.`; never `..`).
    pub async fn fetch_one(&self, entity: &Entity, id: &str) -> Result<Option<Page>> {
        let get = entity.get.as_ref().ok_or_else(|| Error::Protocol {
            url: entity.list.clone(),
            detail: format!("entity {} has no single-record path (`get`)", entity.name),
        })?;
        let plain = !id.is_empty()
            && id != "."
            && id != ".."
            && id.len() <= 255
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain {
            return Err(Error::Protocol {
                url: get.clone(),
                detail: format!("`{id}` is not an id that can go in a path"),
            });
        }
        let url = format!("{}{}", self.inner.base_url, get.replace("{id}", id));
        let body = match self.get_json(&url).await {
            Ok(body) => body,
            Err(Error::Status { status: 404, .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut page = self.parse_one(entity, &url, &body)?;
        page.bodies = vec![body];
        Ok(Some(page))
    }

    /// One object of `entity` as the API would serve it (a webhook's
    /// payload: a JSON:API resource object or a plain object, by the
    /// manifest's format), transformed like a listed one: the record, or
    /// its quarantine entry saying why it cannot be stored.
    pub fn transform_object(
        &self,
        entity: &Entity,
        object: &Value,
    ) -> std::result::Result<SourceRecord, QuarantinedRecord> {
        let shape = match self.inner.manifest.format {
            Format::Jsonapi => Shape::JsonApi,
            Format::Json => Shape::Plain,
        };
        transform_shaped(entity, &Borrowed::from(object), None, shape)
    }

    /// The page of one record from a single-record body: JSON:API
    /// `{"data": {...}}`, or the plain object.
    fn parse_one(&self, entity: &Entity, url: &str, body: &[u8]) -> Result<Page> {
        let doc: Borrowed<'_> = serde_json::from_slice(body)
            .map_err(|e| malformed(url, &format!("invalid JSON: {e}")))?;
        let object = match (self.inner.manifest.format, doc) {
            (Format::Jsonapi, Borrowed::Object(doc)) => match member(&doc, "data") {
                Some(data @ Borrowed::Object(_)) => data.clone(),
                _ => return Err(malformed(url, "`data` is not an object")),
            },
            (Format::Json, item @ Borrowed::Object(_)) => item,
            _ => return Err(malformed(url, "the document is not a JSON object")),
        };
        let mut page = Page {
            finished: true,
            ..Page::default()
        };
        let shape = match self.inner.manifest.format {
            Format::Jsonapi => Shape::JsonApi,
            Format::Json => Shape::Plain,
        };
        match transform_shaped(entity, &object, None, shape) {
            Ok(record) => page.records.push(record),
            Err(bad) => page.quarantined.push(bad),
        }
        Ok(page)
    }

    /// Fetches every object of `entity` listed under parent `parent_id`,
    /// following the pages to the end.
    pub async fn fetch_children(&self, entity: &Entity, parent_id: &str) -> Result<Page> {
        let path = entity.list.replace("{parent_id}", parent_id);
        let mut all = Page::default();
        let mut offset = 0;
        for _ in 0..MAX_CHILD_PAGES {
            let page = self
                .fetch_offset(entity, &path, offset, Some(parent_id))
                .await?;
            all.records.extend(page.records);
            all.quarantined.extend(page.quarantined);
            all.bodies.extend(page.bodies);
            all.total = page.total;
            if page.finished {
                all.finished = true;
                return Ok(all);
            }
            offset = offset_of(&page.next)?;
        }
        Err(Error::Protocol {
            url: format!("{}{path}", self.inner.base_url),
            detail: format!(
                "more than {MAX_CHILD_PAGES} pages of children under one parent: refusing to page on"
            ),
        })
    }

    async fn fetch_offset(
        &self,
        entity: &Entity,
        path: &str,
        offset: u64,
        parent_id: Option<&str>,
    ) -> Result<Page> {
        let url = self.page_url(entity, path, offset);
        let body = self.get_json(&url).await?;
        let mut page = self.parse_body(entity, &url, &body, offset, parent_id)?;
        page.bodies = vec![body];
        Ok(page)
    }

    /// The URL of the page at `offset` of the list at `path`.
    fn page_url(&self, entity: &Entity, path: &str, offset: u64) -> String {
        self.list_url(path, offset, entity.order.as_deref())
    }

    /// The URL of the page at `offset` of the list at `path`, in `order`.
    fn list_url(&self, path: &str, offset: u64, order: Option<&str>) -> String {
        let p = &self.inner.manifest.pagination;
        let mut url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.inner.base_url, path)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!(
            "{}={}&{}={}",
            p.page_size_param, self.inner.page_size, p.offset_param, offset
        ));
        if let Some(order) = order {
            url.push('&');
            url.push_str(&p.order_param);
            url.push('=');
            // `+created_at` keeps its `+` (a bare one reads as a space).
            url.extend(form_urlencoded::byte_serialize(order.as_bytes()));
        }
        url
    }

    /// Parses a response body where it lies (strings without escapes are
    /// not copied) and reads the page from it.
    fn parse_body(
        &self,
        entity: &Entity,
        url: &str,
        body: &[u8],
        offset: u64,
        parent_id: Option<&str>,
    ) -> Result<Page> {
        let body: Borrowed<'_> = serde_json::from_slice(body)
            .map_err(|e| malformed(url, &format!("invalid JSON: {e}")))?;
        match self.inner.manifest.format {
            Format::Jsonapi => self.jsonapi_page(entity, url, body, offset, parent_id),
            Format::Json => self.json_page(entity, url, body, offset, parent_id),
        }
    }

    fn jsonapi_page(
        &self,
        entity: &Entity,
        url: &str,
        body: Borrowed<'_>,
        offset: u64,
        parent_id: Option<&str>,
    ) -> Result<Page> {
        let Borrowed::Object(doc) = body else {
            return Err(malformed(url, "the document is not a JSON object"));
        };
        let data = match member(&doc, "data") {
            Some(Borrowed::Array(items)) => items,
            Some(_) => return Err(malformed(url, "`data` is not an array")),
            None => return Err(malformed(url, "the document has no `data`")),
        };
        let meta = member(&doc, "meta");
        let total = meta
            .and_then(|m| get(m, "total_count"))
            .and_then(Borrowed::as_i64);
        let has_next = member(&doc, "links")
            .and_then(|l| get(l, "next"))
            .is_some_and(Borrowed::is_string);
        let count = data.len() as u64;
        let mut page = Page {
            total,
            ..Page::default()
        };
        for object in data {
            match transform(entity, object, parent_id) {
                Ok(record) => page.records.push(record),
                Err(bad) => page.quarantined.push(bad),
            }
        }
        if has_next {
            let next = meta
                .and_then(|m| get(m, "next"))
                .and_then(|n| get(n, "offset"))
                .and_then(Borrowed::as_u64)
                .unwrap_or(offset + count);
            if next <= offset || count == 0 {
                return Err(Error::Protocol {
                    url: url.to_owned(),
                    detail: format!(
                        "links.next does not move forward (offset {offset}, next {next}, {count} objects): refusing to loop"
                    ),
                });
            }
            // An endless `links.next` that does move (a server repeating
            // itself at ever higher offsets) would never end: stop well past
            // the size the API itself reports.
            if let Some(total) = total {
                let bound = (total.max(0) as u64) * 2 + 10 * u64::from(self.inner.page_size);
                if next > bound {
                    return Err(Error::Protocol {
                        url: url.to_owned(),
                        detail: format!(
                            "links.next goes on to offset {next}, far past meta.total_count {total}: refusing to page forever"
                        ),
                    });
                }
            }
            page.next = Cursor(json!({ "offset": next }));
        } else {
            page.finished = true;
            page.next = Cursor(json!({ "offset": offset + count, "done": true }));
        }
        Ok(page)
    }

    fn json_page(
        &self,
        entity: &Entity,
        url: &str,
        body: Borrowed<'_>,
        offset: u64,
        parent_id: Option<&str>,
    ) -> Result<Page> {
        let p = &self.inner.manifest.pagination;
        let (items, total) = match (&entity.records_field, body) {
            (None, Borrowed::Array(items)) => (items, None),
            (Some(field), Borrowed::Object(doc)) => {
                let total = member(&doc, "total_count").and_then(Borrowed::as_i64);
                // The last member of that name, as serde_json would keep it.
                let records = doc.into_vec().into_iter().rev().find(|(k, _)| k == field);
                match records {
                    Some((_, Borrowed::Array(items))) => (items, total),
                    _ => return Err(malformed(url, &format!("`{field}` is not an array"))),
                }
            }
            _ => {
                return Err(malformed(
                    url,
                    "the document is not the list the manifest describes",
                ));
            }
        };
        debug_assert_eq!(p.style, PaginationStyle::LimitOffset);
        let count = items.len() as u64;
        let mut page = Page {
            total,
            ..Page::default()
        };
        for item in items {
            // Plain JSON objects carry their attributes at the top level,
            // and are kept as sent.
            match transform_shaped(entity, &item, parent_id, Shape::Plain) {
                Ok(record) => page.records.push(record),
                Err(bad) => page.quarantined.push(bad),
            }
        }
        page.finished = count < u64::from(self.inner.page_size);
        page.next = Cursor(if page.finished {
            json!({ "offset": offset + count, "done": true })
        } else {
            json!({ "offset": offset + count })
        });
        Ok(page)
    }

    /// One GET within the request budget: a 429 pauses the budget for
    /// `Retry-After`; a 401 with refreshable credentials refreshes them once
    /// and tries again. Retries of anything else are the engine's to decide.
    async fn get_json(&self, url: &str) -> Result<Vec<u8>> {
        let mut refreshed = false;
        loop {
            // The slot first: waiting for it can outlast a token.
            let permit = self.inner.limiter.acquire().await;
            let (authorization, generation) = self.inner.auth.authorization().await?;
            let request = self
                .inner
                .http
                .get(url)
                .header("accept", "application/vnd.api+json, application/json");
            let transport = |source| Error::Transport {
                method: "GET",
                url: url.to_owned(),
                source,
            };
            let response = authorization
                .apply(request)
                .send()
                .await
                .map_err(transport)?;
            self.observe_budget(permit, response.headers()).await;
            let status = response.status();
            if status.as_u16() == 401 && !refreshed && self.inner.auth.can_refresh() {
                tracing::info!(url, "401 with an oauth2 token: refreshing it once");
                self.inner.auth.refresh(generation).await?;
                refreshed = true;
                continue;
            }
            if !status.is_success() {
                let retry_after = self.retry_after(response.headers());
                if status.as_u16() == 429 {
                    let wait = retry_after.map_or_else(
                        || {
                            self.inner
                                .limiter
                                .status()
                                .period
                                .max(Duration::from_secs(1))
                        },
                        Duration::from_secs,
                    );
                    self.inner.limiter.pause(wait).await;
                }
                let body = response.text().await.unwrap_or_default();
                return Err(Error::Status {
                    method: "GET",
                    url: url.to_owned(),
                    status: status.as_u16(),
                    detail: error_detail(&body),
                    retry_after,
                });
            }
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let bytes = read_body(response, url).await?;
            if !content_type.contains("json") {
                let shown = if content_type.is_empty() {
                    "no content type".to_owned()
                } else {
                    format!("content type `{content_type}`")
                };
                return Err(malformed(
                    url,
                    &format!("expected JSON, got {shown}: {}", error_detail_bytes(&bytes)),
                ));
            }
            return Ok(bytes);
        }
    }

    /// Feeds the answer, and the budget headers the manifest declares, to
    /// the rate limiter.
    async fn observe_budget(&self, permit: Permit, headers: &reqwest::header::HeaderMap) {
        let policy = self.inner.manifest.rate_limit.as_ref();
        let number = |name: Option<&String>| {
            name.and_then(|n| headers.get(n.as_str()))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        // Every answer is observed, headers or not: it also tells the
        // limiter that the request is no longer in flight.
        let observation = Observation {
            count: number(policy.and_then(|p| p.count_header.as_ref())),
            limit: number(policy.and_then(|p| p.limit_header.as_ref())),
            // A nonsensical period is ignored rather than trusted.
            period: number(policy.and_then(|p| p.period_header.as_ref()))
                .filter(|s| (1..=MAX_WAIT_SECS as u32).contains(s))
                .map(|s| Duration::from_secs(u64::from(s))),
            received: tokio::time::Instant::now(),
        };
        self.inner.limiter.observe(permit, observation).await;
    }

    /// `Retry-After` in seconds (a number; an HTTP date counts as unknown).
    fn retry_after(&self, headers: &reqwest::header::HeaderMap) -> Option<u64> {
        let name = self
            .inner
            .manifest
            .rate_limit
            .as_ref()
            .and_then(|p| p.retry_after_header.as_deref())
            .unwrap_or("retry-after");
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            // An absurd wait is not obeyed for years: it is capped.
            .map(|secs| secs.min(MAX_WAIT_SECS))
    }
}

/// The longest `Retry-After` or rate-limit period obeyed, in seconds.
const MAX_WAIT_SECS: u64 = 600;
/// The largest response body read; a larger one is an error, not an OOM.
const MAX_BODY_BYTES: usize = 64 << 20;
/// Pages of one parent's children; an endless child list is an error
/// rather than unbounded memory.
const MAX_CHILD_PAGES: u32 = 1_000;

/// Reads a body, refusing one larger than [`MAX_BODY_BYTES`].
async fn read_body(mut response: reqwest::Response, url: &str) -> Result<Vec<u8>> {
    let transport = |source| Error::Transport {
        method: "GET",
        url: url.to_owned(),
        source,
    };
    let mut body = Vec::with_capacity(
        response
            .content_length()
            .map_or(64 << 10, |n| n as usize)
            .min(MAX_BODY_BYTES),
    );
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Error::Protocol {
                url: url.to_owned(),
                detail: format!(
                    "the response body is larger than {} MiB: refusing it",
                    MAX_BODY_BYTES >> 20
                ),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn malformed(url: &str, detail: &str) -> Error {
    Error::Malformed {
        url: url.to_owned(),
        detail: detail.to_owned(),
    }
}

fn offset_of(cursor: &Cursor) -> Result<u64> {
    match &cursor.0 {
        Value::Null => Ok(0),
        Value::Object(o) => o
            .get("offset")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::BadCursor(cursor.0.to_string())),
        _ => Err(Error::BadCursor(cursor.0.to_string())),
    }
}

/// A short explanation from an error body: JSON:API `errors[0]`'s detail or
/// title, or the start of the text.
fn error_detail(body: &str) -> String {
    if let Ok(doc) = serde_json::from_str::<Value>(body)
        && let Some(first) = doc.get("errors").and_then(|e| e.get(0))
    {
        let text = |key: &str| first.get(key).and_then(Value::as_str).unwrap_or("");
        // JSON:API `title`/`detail`; else Clerk's `message`/`long_message`
        // and its `code`.
        let (title, detail, code) = match (text("title"), text("detail")) {
            ("", "") => (text("message"), text("long_message"), text("code")),
            (title, detail) => (title, detail, ""),
        };
        let said = match (title.is_empty(), detail.is_empty()) {
            (false, false) if title != detail => format!("{title}: {detail}"),
            (false, _) => title.to_owned(),
            _ => detail.to_owned(),
        };
        if !said.is_empty() || !code.is_empty() {
            return match code {
                "" => said,
                code if said.is_empty() => code.to_owned(),
                code => format!("{said} ({code})"),
            };
        }
    }
    if let Some(title) = html_title(body) {
        return format!("an HTML page titled `{title}`");
    }
    if body.trim_start().starts_with('<') {
        return "an HTML page".into();
    }
    let text: String = body.trim().chars().take(200).collect();
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

/// [`error_detail`] of a body that may not be UTF-8.
fn error_detail_bytes(body: &[u8]) -> String {
    error_detail(&String::from_utf8_lossy(&body[..body.len().min(4096)]))
}

/// The `<title>` of an HTML page.
fn html_title(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = body.get(start..end)?.trim();
    (!title.is_empty()).then(|| title.chars().take(120).collect())
}

/// A transport error in words: timeouts and broken connections named.
fn transport_detail(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the connection broke while reading the body"
    } else {
        "request failed"
    };
    let mut detail = kind.to_owned();
    let mut cause = error.source();
    while let Some(c) = cause {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let status = |status| Error::Status {
            method: "GET",
            url: "u".into(),
            status,
            detail: String::new(),
            retry_after: Some(3),
        };
        assert_eq!(status(429).class(), ErrorClass::RateLimited);
        assert_eq!(status(401).class(), ErrorClass::Auth);
        assert_eq!(status(503).class(), ErrorClass::Transient);
        assert_eq!(status(404).class(), ErrorClass::Permanent);
        assert!(status(500).is_retryable());
        assert!(!status(400).is_retryable());
        assert_eq!(status(429).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(malformed("u", "x").class(), ErrorClass::Transient);
    }

    #[test]
    fn error_detail_reads_jsonapi_errors() {
        assert_eq!(
            error_detail(
                r#"{"errors":[{"status":"400","title":"Bad Request","detail":"bad where"}]}"#
            ),
            "Bad Request: bad where"
        );
        assert_eq!(
            error_detail(
                "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
            ),
            "an HTML page titled `502 Bad Gateway`"
        );
        assert_eq!(error_detail("<html>oops</html>"), "an HTML page");
        // A JSON:API error's own `code` is not part of its message.
        assert_eq!(
            error_detail(
                r#"{"errors":[{"status":"503","title":"Service Unavailable","detail":"down","code":"server_error"}]}"#
            ),
            "Service Unavailable: down"
        );
        // Clerk's error shape.
        assert_eq!(
            error_detail(
                r#"{"errors":[{"message":"Unauthorized request","long_message":"The Authorization header is missing","code":"authentication_invalid"}]}"#
            ),
            "Unauthorized request: The Authorization header is missing (authentication_invalid)"
        );
        assert_eq!(
            error_detail(r#"{"errors":[{"code":"form_param_missing"}]}"#),
            "form_param_missing"
        );
        assert_eq!(error_detail(""), "(empty body)");
    }

    #[test]
    fn cursors() {
        assert_eq!(offset_of(&Cursor::start()).unwrap(), 0);
        assert_eq!(offset_of(&Cursor(json!({"offset": 200}))).unwrap(), 200);
        assert!(offset_of(&Cursor(json!("x"))).is_err());
    }
}
