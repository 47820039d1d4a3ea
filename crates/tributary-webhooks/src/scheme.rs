//! Signature schemes: which headers, which bytes are signed, how a secret
//! is written.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tributary_core::Timestamp;

use crate::{Delivery, Rejection};

type HmacSha256 = Hmac<Sha256>;

/// A webhook signature scheme, named in the adapter's manifest
/// (`[webhooks] scheme = "pco" | "standard_webhooks"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Planning Center: `X-PCO-Webhooks-Authenticity`, hex HMAC-SHA256 of
    /// the body.
    Pco,
    /// Standard Webhooks / Svix (Clerk): `webhook-*` or `svix-*` headers.
    StandardWebhooks,
}

impl Scheme {
    /// The scheme a manifest names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pco" => Some(Scheme::Pco),
            "standard_webhooks" | "svix" => Some(Scheme::StandardWebhooks),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Pco => "pco",
            Scheme::StandardWebhooks => "standard_webhooks",
        }
    }

    /// The HMAC key a secret, as the sender shows it, stands for. PCO's
    /// `authenticity_secret` is used as it is written; a Standard Webhooks
    /// secret is `whsec_` and the base64 of the key.
    pub fn key(self, secret: &str) -> Result<Vec<u8>, String> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err("the secret is empty".to_owned());
        }
        match self {
            Scheme::Pco => Ok(secret.as_bytes().to_vec()),
            Scheme::StandardWebhooks => {
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                let key = STANDARD.decode(encoded).map_err(|_| {
                    "a Standard Webhooks secret is `whsec_` followed by base64 (as the sender shows it)"
                        .to_owned()
                })?;
                if key.is_empty() {
                    return Err("the secret's key is empty".to_owned());
                }
                Ok(key)
            }
        }
    }
}

/// One of a connection's webhook secrets, as its HMAC key.
#[derive(Clone)]
pub struct SecretKey {
    /// The secret's id in the store.
    pub id: i64,
    /// The only event it signs (PCO: a subscription's secret); `None`:
    /// any.
    pub event: Option<String>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// A request whose signature checked out: its deliveries, and the secret
/// that signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub secret_id: i64,
    pub deliveries: Vec<Delivery>,
}

/// Checks a request signed by `scheme` against `secrets` over the raw
/// `body`, at `now` (Standard Webhooks timestamps must lie within
/// `tolerance` of it, either way), and reads its deliveries.
pub fn verify(
    scheme: Scheme,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretKey],
    now: Timestamp,
    tolerance: std::time::Duration,
) -> Result<Verified, Rejection> {
    match scheme {
        Scheme::Pco => verify_pco(headers, body, secrets),
        Scheme::StandardWebhooks => verify_standard(headers, body, secrets, now, tolerance),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` header value a Standard Webhooks sender puts on
/// a message: `v1,` and the base64 of HMAC-SHA256 under `key` (the bytes a
/// `whsec_` secret stands for, see [`Scheme::key`]) of
/// `{id}.{timestamp}.{body}` — what [`verify`] checks.
pub fn sign_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let signature = mac(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(signature))
}

fn verify_pco(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretKey],
) -> Result<Verified, Rejection> {
    const HEADER: &str = "x-pco-webhooks-authenticity";
    let given =
        header(headers, HEADER).ok_or(Rejection::MissingHeader("X-PCO-Webhooks-Authenticity"))?;
    if secrets.is_empty() {
        return Err(Rejection::NoSecret);
    }
    // Not hex, or not 32 bytes: it matches no secret.
    let given = hex::decode(given.trim()).unwrap_or_default();
    let secret = secrets
        .iter()
        .find(|s| bool::from(mac(&s.key, &[body]).as_slice().ct_eq(&given)))
        .ok_or(Rejection::BadSignature)?;
    let deliveries = Delivery::read_pco(body)?;
    if let Some(scope) = &secret.event
        && let Some(other) = deliveries.iter().find(|d| &d.event != scope)
    {
        return Err(Rejection::WrongEvent {
            secret: scope.clone(),
            event: other.event.clone(),
        });
    }
    Ok(Verified {
        secret_id: secret.id,
        deliveries,
    })
}

fn verify_standard(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretKey],
    now: Timestamp,
    tolerance: std::time::Duration,
) -> Result<Verified, Rejection> {
    // Both spellings: `webhook-*` (the standard) and `svix-*` (Svix, Clerk).
    let either = |name: &'static str| {
        header(headers, &format!("webhook-{name}"))
            .or_else(|| header(headers, &format!("svix-{name}")))
    };
    let id = either("id").ok_or(Rejection::MissingHeader("webhook-id"))?;
    let timestamp = either("timestamp").ok_or(Rejection::MissingHeader("webhook-timestamp"))?;
    let signatures = either("signature").ok_or(Rejection::MissingHeader("webhook-signature"))?;
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::Malformed("webhook-timestamp is not whole seconds".to_owned()))?;
    // Any timestamp a header can carry, however far off, without overflow.
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    match now.timestamp().checked_sub(seconds) {
        Some(age) if age > tolerance => return Err(Rejection::Stale(age)),
        Some(age) if age < -tolerance => return Err(Rejection::Future(age.saturating_neg())),
        Some(_) => {}
        None if seconds < 0 => return Err(Rejection::Stale(i64::MAX)),
        None => return Err(Rejection::Future(i64::MAX)),
    }
    if secrets.is_empty() {
        return Err(Rejection::NoSecret);
    }
    // Every `v1,` entry is a candidate (several while a secret rotates);
    // other versions (`v1a,`: ed25519) are not ours to check.
    let candidates: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    let secret = secrets
        .iter()
        .find(|s| {
            let expected = mac(
                &s.key,
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            candidates
                .iter()
                .any(|c| bool::from(expected.as_slice().ct_eq(c)))
        })
        .ok_or(Rejection::BadSignature)?;
    let sent_at = chrono::DateTime::from_timestamp(seconds, 0);
    let delivery = Delivery::read_standard(id, sent_at, body)?;
    if let Some(scope) = &secret.event
        && &delivery.event != scope
    {
        return Err(Rejection::WrongEvent {
            secret: scope.clone(),
            event: delivery.event,
        });
    }
    Ok(Verified {
        secret_id: secret.id,
        deliveries: vec![delivery],
    })
}
