//! Errors as JSON problem documents (RFC 9457): every refusal of a `/v1`
//! route is `application/problem+json` with a `title` a person can act on
//! and a `detail` that names the fix. A database error is logged in full
//! and answered with a generic 503: no SQL, table name or driver message
//! ever reaches a client.

use std::borrow::Cow;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Json, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// One refusal.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub title: Cow<'static, str>,
    pub detail: String,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        title: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            title: title.into(),
            detail: detail.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }

    /// 404: what the request names does not exist.
    pub fn not_found(title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, title, detail)
    }

    /// 503 for a store that failed: the error is logged, the client only
    /// hears that it may try again.
    pub fn store(context: &'static str, error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%error, context, "a request failed on the database");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable",
            "the database did not answer; try again",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            Json(json!({
                "type": "about:blank",
                "title": self.title,
                "status": self.status.as_u16(),
                "detail": self.detail,
            })),
        )
            .into_response()
    }
}

/// A page size asked for (`default` when none), refused unless 1 to `max`.
pub fn limit<T>(asked: Option<T>, default: T, max: T) -> Result<T, Problem>
where
    T: Copy + PartialOrd + From<u8> + std::fmt::Display,
{
    match asked.unwrap_or(default) {
        n if n >= T::from(1) && n <= max => Ok(n),
        n => Err(Problem::bad_request(format!(
            "limit {n} is out of range: ask for 1 to {max}"
        ))),
    }
}

/// A connection or entity filter, when given, must name one.
pub fn names_given(connection: Option<&str>, entity: Option<&str>) -> Result<(), Problem> {
    if connection == Some("") || entity == Some("") {
        return Err(Problem::bad_request(
            "connection and entity, when given, name one",
        ));
    }
    Ok(())
}

/// axum's `Path`, refusing a bad path parameter with a problem document
/// instead of plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(Problem::bad_request(rejection.body_text())),
        }
    }
}

/// axum's `Query`, refusing a bad query string with a problem document
/// instead of plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(Problem::bad_request(rejection.body_text())),
        }
    }
}
