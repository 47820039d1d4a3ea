//! Webhooks in: the signature schemes Tributary accepts, checked over the
//! raw request body, and the deliveries a verified request carries.
//!
//! * [`Scheme::Pco`]: `X-PCO-Webhooks-Authenticity` is the lowercase hex
//!   HMAC-SHA256 of the body keyed with the subscription's
//!   `authenticity_secret`; the body is `{"data": [EventDelivery, ...]}`,
//!   each delivery with its id and event name.
//! * [`Scheme::StandardWebhooks`] (Svix, and so Clerk): `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature` (or the same as `svix-*`);
//!   the signed content is `{id}.{timestamp}.{body}`, each `v1,<base64>`
//!   entry of the signature header a candidate (secret rotation), the
//!   secret `whsec_<base64 key>`, and the timestamp within a tolerance
//!   either way of the clock's now.
//!
//! [`sign_standard`] signs a message the same way (webhooks out).
//!
//! Nothing here reads the wall clock, a store or the network: the caller
//! passes the connection's secrets and the time.

mod delivery;
mod scheme;

pub use delivery::Delivery;
pub use scheme::{Scheme, SecretKey, Verified, sign_standard, verify};

use std::time::Duration;

/// How far a Standard Webhooks timestamp may be from now, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The largest body accepted by default (a larger one is refused unread).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Why a request was refused. Nothing of a refused request is stored as a
/// delivery; the reason is counted and logged (never the secret or body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme needs is missing (401).
    #[error("missing the `{0}` header")]
    MissingHeader(&'static str),
    /// The connection has no webhook secret to check against (401).
    #[error("the connection has no webhook secret (add one: `tributary webhooks secrets add`)")]
    NoSecret,
    /// No signature matches any of the connection's secrets (401).
    #[error("no signature matches the connection's secrets")]
    BadSignature,
    /// The sender's timestamp is older than the tolerance (401).
    #[error("the timestamp is {0} s old, past the tolerance")]
    Stale(i64),
    /// The sender's timestamp is ahead of now by more than the tolerance
    /// (401).
    #[error("the timestamp is {0} s in the future, past the tolerance")]
    Future(i64),
    /// The signature is right, but the secret belongs to another event
    /// (PCO: one secret per subscription) (401).
    #[error("the secret that signed it is for event `{secret}`, not `{event}`")]
    WrongEvent { secret: String, event: String },
    /// A header or the body is not what the scheme sends (400).
    #[error("malformed: {0}")]
    Malformed(String),
}

impl Rejection {
    /// The HTTP status the request is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Malformed(_) => 400,
            _ => 401,
        }
    }

    /// A short, stable name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::NoSecret => "no_secret",
            Rejection::BadSignature => "bad_signature",
            Rejection::Stale(_) => "stale",
            Rejection::Future(_) => "future",
            Rejection::WrongEvent { .. } => "wrong_event",
            Rejection::Malformed(_) => "malformed",
        }
    }
}
