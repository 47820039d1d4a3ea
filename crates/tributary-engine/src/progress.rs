//! Progress events, for progress bars and logs.

use std::time::Duration;

use tributary_source::RateStatus;
use tributary_store::{EntityState, PageOutcome};

/// Receives progress events from the engine. Every method has an empty
/// default; implement what you show.
pub trait Progress: Send + Sync {
    /// An entity starts (or resumes with `records` already committed).
    fn entity_started(&self, _entity: &str, _records: i64, _total: Option<i64>) {}
    /// A page committed; `records` is the entity's running total.
    fn page_committed(
        &self,
        _entity: &str,
        _outcome: &PageOutcome,
        _records: i64,
        _total: Option<i64>,
    ) {
    }
    /// A request failed and will be retried after `wait`.
    fn retrying(&self, _entity: &str, _error: &str, _wait: Duration) {}
    /// An entity ended.
    fn entity_finished(&self, _entity: &str, _state: EntityState, _error: Option<&str>) {}
    /// Where the connection's request budget stands; sent a few times a
    /// second during a run whose source has a rate limit.
    fn budget(&self, _status: &RateStatus) {}
}

/// Shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
