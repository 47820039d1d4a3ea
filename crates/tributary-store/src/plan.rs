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
    /// Of the created, records stored as deleted (brought back).
    pub(crate) restored: u64,
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
            restored: self.restored,
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
    let mut restored = 0;
    for (i, r) in records.iter().enumerate() {
        if last[r.external_id.as_str()] != i {
            continue;
        }
        match existing.get(&r.external_id) {
            None => writes.push((r, ChangeKind::Created)),
            Some(e) if e.deleted => {
                restored += 1;
                writes.push((r, ChangeKind::Created));
            }
            Some(e) if *e.hash != *r.content_hash => writes.push((r, ChangeKind::Updated)),
            Some(_) => unchanged += 1,
        }
    }
    Plan {
        writes,
        unchanged,
        restored,
    }
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

/// The pages of a batch in groups that one set of statements can write:
/// pages of the same connection, run and entity, in batch order. A page
/// that names an id (of a record, or of a quarantined object) that an
/// earlier page of its group names starts a new group, so no two pages of
/// a group touch the same row and the group's statements may run in any
/// order — the same result as writing its pages one by one. Groups are
/// written in the order they were opened, which keeps every row's writes in
/// batch order; pages of different entities touch different rows.
pub(crate) fn groups(pages: &[crate::PageWrite<'_>]) -> Vec<Vec<usize>> {
    use std::borrow::Cow;
    use std::collections::HashSet;

    let mut groups: Vec<(Vec<usize>, HashSet<Cow<'_, str>>)> = Vec::new();
    let mut open: HashMap<(i64, i64, &str), usize> = HashMap::new();
    for (i, page) in pages.iter().enumerate() {
        let ids: Vec<Cow<'_, str>> = page
            .records
            .iter()
            .map(|r| Cow::Borrowed(r.external_id.as_str()))
            .chain(
                page.quarantined
                    .iter()
                    .map(|q| Cow::Owned(crate::quarantine_key(q))),
            )
            .collect();
        let key = (page.connection_id, page.run_id, page.entity);
        match open.get(&key) {
            Some(&g) if !ids.iter().any(|id| groups[g].1.contains(id)) => {
                groups[g].0.push(i);
                groups[g].1.extend(ids);
            }
            _ => {
                open.insert(key, groups.len());
                groups.push((vec![i], ids.into_iter().collect()));
            }
        }
    }
    groups.into_iter().map(|(pages, _)| pages).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tributary_core::{Cursor, QuarantinedRecord, SourceRecord};

    fn record(id: &str) -> PreparedRecord {
        PreparedRecord::new(SourceRecord {
            entity: "E".into(),
            external_id: id.into(),
            source_updated_at: None,
            raw: json!({"id": id}).into(),
            canonical: json!({}),
            edges: vec![],
        })
    }

    #[test]
    fn pages_group_by_entity_until_one_repeats_an_id() {
        let cursor = Cursor::start();
        let now = tributary_core::Clock::now(&tributary_core::SystemClock);
        let a1 = [record("1"), record("2")];
        let a2 = [record("3")];
        let b = [record("1")];
        let a3 = [record("2"), record("4")];
        let a4 = [record("5")];
        let bad = [QuarantinedRecord {
            entity: "A".into(),
            external_id: Some("5".into()),
            raw: json!({"id": "5"}),
            error: "bad".into(),
        }];
        let page = |entity, records, quarantined| crate::PageWrite {
            connection_id: 1,
            run_id: 1,
            entity,
            canonical_entity: "c",
            records,
            quarantined,
            cursor: &cursor,
            finished: false,
            total: None,
            mark: None,
            now,
        };
        let pages = [
            page("A", &a1[..], &[][..]),
            page("A", &a2[..], &[][..]),
            page("B", &b[..], &[][..]),
            page("A", &a3[..], &[][..]), // repeats 2: a new group of A
            page("A", &a4[..], &[][..]),
            page("A", &[][..], &bad[..]), // quarantines 5, which a4 wrote
        ];
        assert_eq!(groups(&pages), [vec![0, 1], vec![2], vec![3, 4], vec![5]]);
    }
}
