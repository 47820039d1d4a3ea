//! OAuth2 as PCO does it: authorization codes, expiring access tokens and rotating refresh
//! tokens (the behaviour is documented in the crate docs, section "OAuth2").
//!
//! One [`OAuth`] value holds every code, grant and token. A grant is one authorization of the
//! client; its id is the rate-limit principal of all its access tokens. Access tokens are kept
//! after they expire, so that the API can say "expired" rather than "invalid".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::error::{SimError, json_response};
use crate::middleware::Principal;
use crate::query::parse_pairs;
use crate::rng::Rng;
use crate::{SimConfig, Simulator};

/// The scope granted when none is asked for.
pub const DEFAULT_SCOPE: &str = "people";

/// `Rng` tag of OAuth tokens (distinct from the data generator's tags).
const TOKEN_TAG: u64 = 0x0A07_70CE_5EED;

/// A successful answer of `POST /oauth/token` (and of `POST /__sim/oauth/grant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token for the API.
    pub access_token: String,
    /// Always `"bearer"`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token (single use: refreshing rotates it).
    pub refresh_token: String,
    /// The granted scope (space-separated).
    pub scope: String,
    /// When the token was issued (Unix seconds, from the simulator's clock).
    pub created_at: i64,
}

/// An OAuth2 error answer (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed: unknown client or wrong client secret",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut resp = json_response(self.status, body.to_string().into_bytes());
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[derive(Debug)]
struct Code {
    redirect_uri: String,
    scope: String,
}

#[derive(Debug, Clone, Copy)]
struct Access {
    grant: u64,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Tokens {
    /// Tokens and codes handed out so far (the token derivation counter).
    issued: u64,
    /// Grants so far (grant ids are 1, 2, ...).
    grants: u64,
    /// Unredeemed authorization codes.
    codes: HashMap<String, Code>,
    /// The current refresh token of each grant → (grant, scope).
    refresh: HashMap<String, (u64, String)>,
    /// Every access token ever issued (expired ones are kept to answer "expired").
    access: HashMap<String, Access>,
}

impl Tokens {
    fn token(&mut self, seed: u64) -> String {
        self.issued += 1;
        let mut rng = Rng::new(seed, TOKEN_TAG, self.issued);
        (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect()
    }
}

/// The authorization server's state.
#[derive(Debug)]
pub(crate) struct OAuth {
    seed: u64,
    client_id: String,
    client_secret: String,
    ttl: Duration,
    state: Mutex<Tokens>,
}

/// What the OAuth state knows about a bearer token.
pub(crate) enum Lookup {
    Unknown,
    Valid(Principal),
    Expired,
}

impl OAuth {
    pub(crate) fn new(config: &SimConfig) -> Self {
        OAuth {
            seed: config.seed,
            client_id: config.oauth_client_id.clone(),
            client_secret: config.oauth_client_secret.clone(),
            ttl: config.token_ttl,
            state: Mutex::new(Tokens::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves an access token at `now`.
    pub(crate) fn lookup(&self, token: &str, now: Instant) -> Lookup {
        match self.lock().access.get(token) {
            None => Lookup::Unknown,
            Some(a) if now >= a.expires => Lookup::Expired,
            Some(a) => Lookup::Valid(Principal::Grant(a.grant)),
        }
    }

    /// Issues an access token and a refresh token for `grant`.
    fn issue(
        &self,
        state: &mut Tokens,
        grant: u64,
        scope: String,
        created_at: i64,
    ) -> TokenResponse {
        let access_token = state.token(self.seed);
        let refresh_token = state.token(self.seed);
        state.access.insert(
            access_token.clone(),
            Access {
                grant,
                expires: Instant::now() + self.ttl,
            },
        );
        state
            .refresh
            .insert(refresh_token.clone(), (grant, scope.clone()));
        TokenResponse {
            access_token,
            token_type: "bearer".into(),
            expires_in: self.ttl.as_secs(),
            refresh_token,
            scope,
            created_at,
        }
    }

    /// A new grant with a fresh token pair.
    pub(crate) fn new_grant(&self, scope: String, created_at: i64) -> TokenResponse {
        let mut state = self.lock();
        state.grants += 1;
        let grant = state.grants;
        self.issue(&mut state, grant, scope, created_at)
    }

    /// A new authorization code for `redirect_uri`.
    fn new_code(&self, redirect_uri: String, scope: String) -> String {
        let mut state = self.lock();
        let code = state.token(self.seed);
        state.codes.insert(
            code.clone(),
            Code {
                redirect_uri,
                scope,
            },
        );
        code
    }

    fn check_client(&self, form: &Form) -> Result<(), OAuthError> {
        match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) if id == self.client_id && secret == self.client_secret => {
                Ok(())
            }
            _ => Err(OAuthError::invalid_client()),
        }
    }

    /// Redeems an authorization code (single use).
    fn redeem_code(&self, form: &Form, created_at: i64) -> Result<TokenResponse, OAuthError> {
        let code = form.require("code")?;
        let redirect_uri = form.require("redirect_uri")?;
        let mut state = self.lock();
        let Some(issued) = state.codes.remove(code) else {
            return Err(OAuthError::invalid_grant(
                "the authorization code is invalid, expired or already used",
            ));
        };
        if issued.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "the redirect_uri does not match the one the code was issued for",
            ));
        }
        state.grants += 1;
        let grant = state.grants;
        Ok(self.issue(&mut state, grant, issued.scope, created_at))
    }

    /// Rotates a refresh token: the old one stops working.
    fn refresh(&self, form: &Form, created_at: i64) -> Result<TokenResponse, OAuthError> {
        let token = form.require("refresh_token")?;
        let mut state = self.lock();
        let Some((grant, scope)) = state.refresh.remove(token) else {
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, revoked or already used",
            ));
        };
        Ok(self.issue(&mut state, grant, scope, created_at))
    }
}

/// Decoded form fields (the first value of each name wins).
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/authorize", get(authorize))
}

fn token_response(resp: &TokenResponse) -> Response {
    let mut out = json_response(StatusCode::OK, serde_json::to_vec(resp).unwrap_or_default());
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}

/// `POST /oauth/token`.
async fn token(
    State(sim): State<Simulator>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = exchange(&sim, query.as_deref(), &headers, &body);
    match result {
        Ok(resp) => token_response(&resp),
        Err(e) => {
            sim.inner.stats.oauth_error();
            e.into_response()
        }
    }
}

fn exchange(
    sim: &Simulator,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, OAuthError> {
    if parse_pairs(query).iter().any(|(k, _)| k == "client_secret") {
        return Err(OAuthError::invalid_request(
            "send client_secret in the request body, never in the URL",
        ));
    }
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_encoded {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let body = String::from_utf8_lossy(body);
    let form = Form(parse_pairs(Some(body.trim())));
    let oauth = &sim.inner.oauth;
    oauth.check_client(&form)?;
    let created_at = sim.inner.clock.now().timestamp();
    match form.get("grant_type") {
        Some("authorization_code") => {
            let resp = oauth.redeem_code(&form, created_at)?;
            sim.inner.stats.oauth_grant();
            Ok(resp)
        }
        Some("refresh_token") => {
            let resp = oauth.refresh(&form, created_at)?;
            sim.inner.stats.oauth_refresh();
            Ok(resp)
        }
        Some(other) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant type {other:?} is not supported (use authorization_code or refresh_token)"
            ),
        )),
        None => Err(OAuthError::invalid_request("missing parameter grant_type")),
    }
}

/// `GET /oauth/authorize`: approves at once and redirects back with a code.
async fn authorize(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let form = Form(parse_pairs(query.as_deref()));
    let oauth = &sim.inner.oauth;
    if form.get("client_id") != Some(oauth.client_id.as_str()) {
        return OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "unknown client_id",
        )
        .into_response();
    }
    let redirect_uri = match form.require("redirect_uri") {
        Ok(r) => r.to_owned(),
        Err(e) => return e.into_response(),
    };
    if form.get("response_type") != Some("code") {
        return OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "only response_type=code is supported",
        )
        .into_response();
    }
    let scope = form.get("scope").unwrap_or(DEFAULT_SCOPE).to_owned();
    let code = oauth.new_code(redirect_uri.clone(), scope);
    let mut location = redirect_uri;
    location.push(if location.contains('?') { '&' } else { '?' });
    location.push_str("code=");
    location.push_str(&code);
    // `state` goes back exactly as it came (still URL-encoded).
    if let Some(state) = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("state="))
    {
        location.push_str("&state=");
        location.push_str(state);
    }
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(_) => OAuthError::invalid_request("redirect_uri is not a valid URL").into_response(),
    }
}

/// `POST /__sim/oauth/grant`: a fresh grant (control API, no client authentication).
pub(crate) async fn control_grant(State(sim): State<Simulator>) -> Response {
    token_response(&sim.issue_grant())
}

impl Simulator {
    /// Issues a new OAuth grant (scope [`DEFAULT_SCOPE`]) as if the user had authorized the
    /// client and the code had been redeemed: the same as `POST /__sim/oauth/grant`.
    pub fn issue_grant(&self) -> TokenResponse {
        let created_at = self.inner.clock.now().timestamp();
        let resp = self
            .inner
            .oauth
            .new_grant(DEFAULT_SCOPE.to_owned(), created_at);
        self.inner.stats.oauth_grant();
        resp
    }
}

/// An expired access token's answer.
pub(crate) fn expired() -> SimError {
    SimError::new(
        401,
        "token_expired",
        "the access token expired: refresh it with its refresh token",
    )
}
