//! API tokens on every `/v1` route. A request names its token in
//! `Authorization: Bearer <token>` — or, where a browser cannot set a
//! header (`EventSource`, `WebSocket`), in the `access_token` query
//! parameter. A `read` token may `GET`; every other method needs an
//! `admin` token. No token, or one that is unknown or revoked: 401 with
//! `WWW-Authenticate: Bearer`; a read token on an admin route: 403. Tokens
//! are looked up by their SHA-256 (`tributary tokens create`); a lookup is
//! remembered for [`REMEMBER`], so a revoked token stops opening anything
//! within that long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tributary_core::{Clock, Timestamp};
use tributary_store::{Store, TokenRole};

use super::AppState;
use super::problem::Problem;

/// How long a token's lookup is remembered.
pub const REMEMBER: chrono::Duration = chrono::Duration::seconds(10);

/// The most lookups remembered (then the memory starts afresh).
const REMEMBERED: usize = 10_000;

/// Who may use the API: the store's tokens, with recent lookups remembered.
#[derive(Debug)]
pub struct Access {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// A token hash's role (`None`: no such live token) and when it was
    /// looked up.
    seen: Mutex<HashMap<String, (Option<TokenRole>, Timestamp)>>,
}

impl Access {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The role of `token`, if it is a live token.
    async fn role(&self, token: &str) -> Result<Option<TokenRole>, Problem> {
        let hash = tributary_secrets::api_token_hash(token);
        let now = self.clock.now();
        if let Some((role, at)) = self.remembered().get(&hash)
            && now - *at < REMEMBER
        {
            return Ok(*role);
        }
        let role = self
            .store
            .token_by_hash(&hash)
            .await
            .map_err(|error| Problem::store("checking an API token", &error))?
            .map(|token| token.role);
        let mut seen = self.remembered();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(hash, (role, now));
        Ok(role)
    }

    fn remembered(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Option<TokenRole>, Timestamp)>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The token a request carries.
fn token(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = request.uri().query()?;
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .ok()
        .filter(|_| !query.is_empty())
        .and_then(|axum::extract::Query(mut params)| params.remove("access_token"))
}

fn unauthorized(detail: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tributary\""),
    );
    response
}

/// The middleware of every `/v1` route.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = token(&request) else {
        return unauthorized(
            "send an API token: `Authorization: Bearer <token>` (create one with `tributary tokens create --role read`)",
        );
    };
    let role = match state.access.role(&token).await {
        Ok(Some(role)) => role,
        Ok(None) => return unauthorized("the API token is unknown or revoked"),
        Err(problem) => return problem.into_response(),
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && role != TokenRole::Admin {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route changes things and needs an admin token (`tributary tokens create --role admin`)",
        )
        .into_response();
    }
    next.run(request).await
}
