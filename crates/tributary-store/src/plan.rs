//! What a page changes, decided the same way by every backend.

use std::collections::HashMap;

use tributary_core::{ChangeKind, PreparedRecord};

/// A stored record's identity and content hash.
pub(crate) struct Existing {
    pub(crate) hash: String,
    pub(crate) deleted: bool,
}

/// The writes a page needs.
pub(crate) struct Plan<'a> {
    /// Records to write, with the change each one is.
    pub(crate) writes: Vec<(&'a PreparedRecord, ChangeKind)>,
    /// Records whose content is already stored.
    pub(crate) unchanged: u64,
}

impl Plan<'_> {
    /// The page's outcome once written.
    pub(crate) fn outcome(&self, quarantined: usize) -> crate::PageOutcome {
        let count = |kind| self.writes.iter().filter(|(_, k)| *k == kind).count() as u64;
        crate::PageOutcome {
            created: count(ChangeKind::Created),
            updated: count(ChangeKind::Updated),
            unchanged: self.unchanged,
            quarantined: quarantined as u64,
        }
    }
}

/// Compares a page with what is stored: new records are created, records
/// with another hash (or marked deleted) are written again, the rest are
/// unchanged. A repeated external id counts once, the last copy winning.
pub(crate) fn plan<'a>(
    records: &'a [PreparedRecord],
    existing: &HashMap<String, Existing>,
) -> Plan<'a> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        last.insert(r.external_id.as_str(), i);
    }
    let mut writes = Vec::new();
    let mut unchanged = 0;
    for (i, r) in records.iter().enumerate() {
        if last[r.external_id.as_str()] != i {
            continue;
        }
        match existing.get(&r.external_id) {
            None => writes.push((r, ChangeKind::Created)),
            Some(e) if e.deleted => writes.push((r, ChangeKind::Created)),
            Some(e) if *e.hash != *r.content_hash => writes.push((r, ChangeKind::Updated)),
            Some(_) => unchanged += 1,
        }
    }
    Plan { writes, unchanged }
}

/// Unique external ids of a page, in page order.
pub(crate) fn unique_ids(records: &[PreparedRecord]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    records
        .iter()
        .map(|r| r.external_id.as_str())
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Formats a timestamp for SQLite: UTC with microseconds, so text order is
/// time order.
pub(crate) fn sqlite_ts(t: &tributary_core::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Parses [`sqlite_ts`]'s output (or any RFC 3339 text).
pub(crate) fn parse_ts(s: &str) -> crate::Result<tributary_core::Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| crate::Error::Corrupt(format!("timestamp `{s}`: {e}")))
}
