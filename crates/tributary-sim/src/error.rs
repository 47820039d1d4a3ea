//! JSON:API errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered as a JSON:API error document
/// `{"errors":[{"status","code","title","detail"[,"source":{"parameter"}]}]}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {title}: {detail}")]
pub struct SimError {
    pub status: u16,
    pub code: String,
    pub title: String,
    pub detail: String,
    /// The offending query parameter, if any.
    pub parameter: Option<String>,
}

impl SimError {
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Self {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned();
        SimError {
            status,
            code: code.to_owned(),
            title,
            detail: detail.into(),
            parameter: None,
        }
    }

    pub(crate) fn bad_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        SimError {
            parameter: Some(parameter.to_owned()),
            ..SimError::new(400, "invalid_parameter", detail)
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        SimError::new(400, "bad_request", detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        SimError::new(404, "not_found", detail)
    }

    pub(crate) fn unauthorized(detail: impl Into<String>) -> Self {
        SimError::new(401, "unauthorized", detail)
    }

    pub(crate) fn unprocessable(detail: impl Into<String>) -> Self {
        SimError::new(422, "unprocessable_entity", detail)
    }

    pub(crate) fn method_not_allowed(detail: impl Into<String>) -> Self {
        SimError::new(405, "method_not_allowed", detail)
    }

    /// The JSON:API error document.
    pub fn to_json(&self) -> serde_json::Value {
        let mut err = json!({
            "status": self.status.to_string(),
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        });
        if let Some(p) = &self.parameter {
            err["source"] = json!({ "parameter": p });
        }
        json!({ "errors": [err] })
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, self.to_json().to_string().into_bytes())
    }
}

/// A response with an `application/json` body.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}
