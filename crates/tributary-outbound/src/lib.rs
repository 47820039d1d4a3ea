//! Webhooks out: applications subscribe URLs to a connection's changes
//! and to the ends of its runs.
//!
//! [`Outbound`] (built from [`OutboundOptions`], owning its loop, reached
//! through a cheap [`OutboundHandle`]) does two things, each durable in
//! the store:
//!
//! * **follow** (`follow.rs`): for every active subscription it reads the
//!   change feed after the subscription's cursor (`Store::changes`, the
//!   connection's changes, the subscription's entity only if it names
//!   one), cuts them into batches (≤ [`OutboundOptions::batch`] changes,
//!   never splitting one transaction's changes), adds a `sync.finished`
//!   message for each run of the connection that ended (the store keeps
//!   each end for each subscription, written in the transaction that ends
//!   the run) once every change committed before it is enqueued, and
//!   enqueues them all and moves the cursor in ONE transaction that only
//!   succeeds from the cursor it read after — nothing is enqueued twice,
//!   nothing skipped after a crash, whatever the number of processes;
//! * **deliver** (`deliver.rs`): it claims due messages — each the oldest
//!   pending message of its subscription, so a subscription's messages
//!   arrive in order, one at a time — counting the attempt and leasing it
//!   (on PostgreSQL the claim locks `FOR UPDATE SKIP LOCKED`, so several
//!   processes never take one message), POSTs each signed with the
//!   subscription's secret (Standard Webhooks: `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`), at most
//!   [`OutboundOptions::concurrency`] at once, each within
//!   [`OutboundOptions::timeout`], and settles it: delivered (2xx), tried
//!   again on Svix's schedule (`schedule.rs`: at once, then 5 s, 5 min,
//!   30 min, 2 h, 5 h, 10 h, 10 h; a 429's `Retry-After` respected), dead
//!   after the last attempt (replayable), or — 410 Gone — the subscription
//!   disabled.
//!
//! Time comes only from the [`tributary_core::Clock`]: tests drive it
//! with a `ManualClock` and [`Outbound::tick`].

mod deliver;
mod follow;
mod render;
mod schedule;
mod service;

use std::time::Duration;

pub use render::{message_id, render_change};
pub use schedule::{SVIX_SCHEDULE, Verdict, retry_after};
pub use service::{Attempt, Outbound, OutboundHandle, Tick};

/// How an [`Outbound`] behaves.
#[derive(Debug, Clone)]
pub struct OutboundOptions {
    /// How often it looks for new changes and due messages when nothing
    /// wakes it.
    pub poll: Duration,
    /// Changes per message, at most — more only when one transaction has
    /// more (a transaction's changes are never split).
    pub batch: usize,
    /// Changes read from the feed at once per subscription.
    pub read: u32,
    /// Deliveries in flight at once (every subscription together).
    pub concurrency: usize,
    /// How long one delivery may take, connecting included.
    pub timeout: Duration,
    /// The delay before each attempt, the first's included (its length is
    /// the number of attempts); [`SVIX_SCHEDULE`] by default.
    pub schedule: Vec<Duration>,
    /// The longest `Retry-After` obeyed (a longer one is cut to this).
    pub max_retry_after: Duration,
    /// How long delivered messages are kept.
    pub retention: Duration,
    /// How often the retention is applied.
    pub expire_every: Duration,
}

impl Default for OutboundOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            batch: 100,
            read: 1_000,
            concurrency: 16,
            timeout: Duration::from_secs(15),
            schedule: SVIX_SCHEDULE.to_vec(),
            max_retry_after: Duration::from_secs(24 * 3_600),
            retention: Duration::from_secs(7 * 24 * 3_600),
            expire_every: Duration::from_secs(3_600),
        }
    }
}

impl OutboundOptions {
    /// How long a claimed message is held by its claimer: the request's
    /// timeout and a minute, so it is never taken again while an attempt
    /// may still be in flight — and taken again by anyone once its
    /// claimer died.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(60)
    }
}

/// What can stop a pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tributary_store::Error),
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A subscription URL that can be POSTed to: absolute, http or https, with
/// a host. `Err` says what is wrong and how to write it.
pub fn check_url(url: &str) -> Result<(), String> {
    let invalid = |why: String| {
        Err(format!(
            "invalid URL `{}`: {why}; give an absolute http:// or https:// URL, e.g. https://app.example.com/hooks/tributary",
            tributary_core::redact_url(url)
        ))
    };
    match reqwest::Url::parse(url) {
        Err(error) => invalid(error.to_string()),
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
            invalid(format!("the scheme `{}` is not supported", parsed.scheme()))
        }
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
            invalid("it has no host".into())
        }
        Ok(parsed) if parsed.fragment().is_some() => {
            invalid("it has a fragment, which is never sent".into())
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://app.example.com/hooks?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "app.example.com/hooks",
            "ftp://x/y",
            "http://",
            "https://x/#f",
        ] {
            let error = check_url(bad).unwrap_err();
            assert!(error.contains("give an absolute http"), "{error}");
        }
    }
}
