//! Clerk's error answers: `ClerkErrors`,
//!
//! ```json
//! {"errors": [{"message": "is invalid", "long_message": "…", "code": "form_param_value_invalid",
//!   "meta": {"param_name": "limit"}}], "clerk_trace_id": "…"}
//! ```
//!
//! Codes used: `authentication_invalid` (401), `resource_not_found` (404),
//! `form_param_value_invalid`, `form_identifier_exists`,
//! `already_a_member_in_organization` (422), `organization_membership_quota_exceeded` (403),
//! `too_many_requests` (429, with `Retry-After`) and `request_body_invalid` (400, control API).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ids::trace_id;

/// Errors answered so far (each gets its own `clerk_trace_id`).
static ERRORS: AtomicU64 = AtomicU64::new(0);

/// An error as Clerk answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {long_message}")]
pub struct ClerkError {
    /// The HTTP status.
    pub status: u16,
    /// Clerk's machine-readable code.
    pub code: String,
    /// The short message.
    pub message: String,
    /// The long message.
    pub long_message: String,
    /// `meta.param_name`: the offending parameter, if any.
    pub param_name: Option<String>,
    /// `Retry-After` in seconds (429s).
    pub retry_after: Option<u64>,
}

impl ClerkError {
    pub fn new(status: u16, code: &str, message: &str, long_message: impl Into<String>) -> Self {
        ClerkError {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            long_message: long_message.into(),
            param_name: None,
            retry_after: None,
        }
    }

    /// 422 `form_param_value_invalid` for `param`.
    pub fn invalid_param(param: &str, long_message: impl Into<String>) -> Self {
        ClerkError {
            param_name: Some(param.to_owned()),
            ..Self::new(422, "form_param_value_invalid", "is invalid", long_message)
        }
    }

    /// 422 `form_identifier_exists` for `param` (an e-mail address, username or slug in use).
    pub fn identifier_exists(param: &str, long_message: impl Into<String>) -> Self {
        ClerkError {
            param_name: Some(param.to_owned()),
            ..Self::new(
                422,
                "form_identifier_exists",
                "That identifier is taken. Please try another.",
                long_message,
            )
        }
    }

    /// 401 `authentication_invalid`.
    pub fn unauthenticated() -> Self {
        Self::new(
            401,
            "authentication_invalid",
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
        )
    }

    /// 404 `resource_not_found`.
    pub fn not_found() -> Self {
        Self::new(404, "resource_not_found", "not found", "Resource not found")
    }

    /// 429 `too_many_requests` with `Retry-After: retry_after`.
    pub fn too_many_requests(retry_after: u64) -> Self {
        ClerkError {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                "too_many_requests",
                "Too many requests",
                "Too many requests, please try again later.",
            )
        }
    }

    /// 400 `request_body_invalid` (a control-API body that is not what it should be).
    pub fn bad_body(long_message: impl Into<String>) -> Self {
        Self::new(
            400,
            "request_body_invalid",
            "Request body invalid",
            long_message,
        )
    }

    /// The `ClerkErrors` body.
    pub fn to_json(&self, trace_id: &str) -> Value {
        let mut error = json!({
            "message": self.message,
            "long_message": self.long_message,
            "code": self.code,
        });
        if let Some(param) = &self.param_name {
            error["meta"] = json!({"param_name": param});
        }
        json!({"errors": [error], "clerk_trace_id": trace_id})
    }
}

impl IntoResponse for ClerkError {
    fn into_response(self) -> Response {
        let n = ERRORS.fetch_add(1, Ordering::Relaxed);
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = json_response(status, self.to_json(&trace_id(n)).to_string());
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A response with an `application/json` body.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}
