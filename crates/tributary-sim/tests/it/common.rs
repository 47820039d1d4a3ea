use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use tower::ServiceExt;
use tributary_sim::{ManualClock, SimConfig, Simulator};

pub const HOST: &str = "sim.test";
pub const BASE: &str = "http://sim.test";

pub fn config(seed: u64, people: usize) -> SimConfig {
    SimConfig {
        seed,
        people,
        ..SimConfig::default()
    }
}

pub fn clock_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
}

/// A simulator with a manual clock stopped at [`clock_start`].
pub fn sim(seed: u64, people: usize) -> (Simulator, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(clock_start()));
    (
        Simulator::with_clock(config(seed, people), clock.clone()),
        clock,
    )
}

#[derive(Debug, Clone, Copy)]
pub enum Auth {
    None,
    Bearer(&'static str),
    Basic(&'static str),
}

pub const TOKEN: Auth = Auth::Bearer("sim-token");

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }

    pub fn lines(&self) -> Vec<Value> {
        self.body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// Asserts a JSON:API error document with this status and returns its first error.
    pub fn error(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let ct = self.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with("application/json"), "{ct}");
        let err = self.json()["errors"][0].clone();
        assert_eq!(err["status"], Value::String(status.to_string()));
        assert!(err["title"].is_string() && err["detail"].is_string() && err["code"].is_string());
        err
    }
}

pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    auth: Auth,
    body: Option<Value>,
) -> Resp {
    let uri = uri
        .strip_prefix(BASE)
        .unwrap_or(uri)
        .replace('[', "%5B")
        .replace(']', "%5D")
        .replace(' ', "%20");
    let mut req = Request::builder()
        .method(method)
        .uri(uri.as_str())
        .header(header::HOST, HOST);
    match auth {
        Auth::None => {}
        Auth::Bearer(t) => req = req.header(header::AUTHORIZATION, format!("Bearer {t}")),
        Auth::Basic(b) => req = req.header(header::AUTHORIZATION, format!("Basic {b}")),
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    send(router, req.body(body).unwrap()).await
}

/// Sends a request through the router and collects the whole response.
pub async fn send(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// An authenticated GET that must succeed; returns the JSON document.
pub async fn get_ok(router: &Router, uri: &str) -> Value {
    let r = call(router, Method::GET, uri, TOKEN, None).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET {uri}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Follows `links.next` from `uri`; returns every resource and checks the paging metadata.
pub async fn walk(router: &Router, uri: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(uri.to_owned());
    let mut total = None;
    let mut pages = 0;
    while let Some(uri) = next {
        pages += 1;
        assert!(pages < 10_000, "paging does not terminate");
        let doc = get_ok(router, &uri).await;
        let data = doc["data"].as_array().unwrap().clone();
        let meta = &doc["meta"];
        assert_eq!(meta["count"].as_u64().unwrap() as usize, data.len());
        let t = meta["total_count"].as_u64().unwrap();
        assert_eq!(
            *total.get_or_insert(t),
            t,
            "total_count changed while paging"
        );
        next = doc["links"]["next"].as_str().map(str::to_owned);
        match &next {
            Some(n) => {
                assert!(n.starts_with(BASE), "next link must be absolute: {n}");
                let offset = meta["next"]["offset"].as_u64().unwrap();
                assert!(n.contains(&format!("offset={offset}")), "{n}");
            }
            None => assert!(meta.get("next").is_none(), "meta.next on the last page"),
        }
        out.extend(data);
    }
    assert_eq!(
        out.len() as u64,
        total.unwrap(),
        "walked count != total_count"
    );
    out
}

pub fn ids(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn assert_unique(ids: &[String]) {
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "duplicate ids");
}

pub fn id_num(v: &Value) -> u64 {
    v["id"].as_str().unwrap().parse().unwrap()
}

/// The dump as `Simulator::dump` reports it.
pub fn dump_of(sim: &Simulator, type_name: &str) -> Vec<Value> {
    sim.dump(Some(type_name.parse().unwrap()))
}

/// The id of the related resource named `rel` (to-one), if any.
pub fn rel_id(res: &Value, rel: &str) -> Option<String> {
    res["relationships"][rel]["data"]["id"]
        .as_str()
        .map(str::to_owned)
}

/// The ids of a to-many relationship.
pub fn rel_ids(res: &Value, rel: &str) -> Vec<String> {
    res["relationships"][rel]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no to-many relationship {rel} in {res}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Strips `links` from an API resource (so it can be compared with a dump line).
pub fn without_links(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("links");
    v
}

pub fn ts(v: &Value, attr: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["attributes"][attr].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

pub fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// A GET with `Authorization: Bearer <token>` for a token known only at run time.
pub async fn get_bearer(router: &Router, uri: &str, token: &str) -> Resp {
    let req = Request::get(uri)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(router, req).await
}

/// A form-encoded POST (`application/x-www-form-urlencoded`).
pub async fn post_form(router: &Router, uri: &str, form: &str) -> Resp {
    let req = Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    send(router, req).await
}

/// A header as a string (panics when missing).
pub fn header_str<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers))
        .to_str()
        .unwrap()
}

/// `(count, limit, period)` from the `X-PCO-API-Request-Rate-*` headers.
pub fn rate(r: &Resp) -> (u32, u32, u32) {
    let n = |name| header_str(r, name).parse().unwrap();
    (
        n("x-pco-api-request-rate-count"),
        n("x-pco-api-request-rate-limit"),
        n("x-pco-api-request-rate-period"),
    )
}

/// A reqwest client (reqwest is built without a TLS provider: install ring's once).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}
