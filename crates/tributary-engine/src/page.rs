//! The page as the engine hands it from fetch to commit: fetched,
//! prepared for the store (serialised, hashed) and de-duplicated.

use std::collections::HashSet;

use tributary_core::{Cursor, PreparedRecord};
use tributary_source::Page;

/// A page fetched and prepared for the store.
pub(crate) struct PreparedPage {
    pub(crate) records: Vec<PreparedRecord>,
    pub(crate) quarantined: Vec<tributary_core::QuarantinedRecord>,
    /// The entity's checkpoint once this page has committed.
    pub(crate) cursor_after: Cursor,
    pub(crate) finished: bool,
    pub(crate) total: Option<i64>,
    /// The entity's high-water mark once this page has committed (set by
    /// the entity task: see `Scan`).
    pub(crate) mark: Option<tributary_core::Timestamp>,
    /// The source's high-water mark of a delta page.
    pub(crate) high_water: Option<tributary_core::Timestamp>,
    /// The spool entries the page was fetched as (its cursor; its
    /// parents' ids for children), removed once it has committed.
    pub(crate) spool_keys: Vec<String>,
}

impl PreparedPage {
    pub(crate) fn new(page: Page, spool_keys: Vec<String>) -> Self {
        Self {
            records: dedupe(page.records.into_iter().map(PreparedRecord::new).collect()),
            quarantined: page.quarantined,
            cursor_after: page.next,
            finished: page.finished,
            total: page.total,
            mark: None,
            high_water: page.high_water,
            spool_keys,
        }
    }
}

/// Keeps the last copy of each external id (offset paging over a changing
/// collection can repeat an object within a page).
fn dedupe(records: Vec<PreparedRecord>) -> Vec<PreparedRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut out: Vec<PreparedRecord> = records
        .into_iter()
        .rev()
        .filter(|r| seen.insert(r.external_id.clone()))
        .collect();
    out.reverse();
    out
}
