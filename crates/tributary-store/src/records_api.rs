//! The records API and full-text search, as stored.
//!
//! **Versions.** Every record has a *version*: the feed position of its
//! latest change (`record_versions`; SQLite: the `seq` of the feed row,
//! set by a trigger on `changes`; PostgreSQL: the `pos` the feed's
//! sequencer gives the row once it is committed, written in the same
//! transaction). [`crate::Store::records_page`] lists records in version
//! order after a cursor, which is itself a feed position:
//!
//! - a record that changes while a client pages gets a version above
//!   every version handed out before, so it appears (again) at its new
//!   place, never skipped, and a version is never handed out twice;
//! - a page that reaches the end answers the feed's head as its cursor:
//!   every change up to it is in what was read, every change after it is
//!   in the feed after it (`GET /v1/changes?after=CURSOR`), so reading the
//!   records and then following the feed has no gap and no duplicate.
//!
//! On PostgreSQL a record whose newest change is committed but has no
//! feed position yet (it committed after the page's sequencing) is left
//! out of the page: it gets a position above the page's head, so it comes
//! in the next page (and in the feed after the cursor).
//!
//! **Search.** The index holds the string values of each live record's
//! canonical JSON. It is kept by a consumer of the change feed in the same
//! store ([`crate::Store::index_search`]): it reads the changes after its
//! durable cursor, re-indexes the records they name (or drops them when
//! deleted) and moves the cursor in the same transaction. A cursor below
//! the feed's retention horizon rebuilds the index from the records.

use serde_json::Value;
use tributary_core::Timestamp;

use crate::Result;
use crate::rows::Columns;

/// A page of records to list, in version order.
#[derive(Debug, Clone, Default)]
pub struct RecordsPageQuery {
    /// Only this connection's.
    pub connection_id: Option<i64>,
    /// Only this entity's.
    pub entity: Option<String>,
    /// Only records whose content last changed after this time.
    pub modified_after: Option<Timestamp>,
    /// Records whose version is above this feed position (0: from the
    /// start, records of every version).
    pub after: i64,
    /// At most this many.
    pub limit: u32,
    /// Include records marked deleted (tombstones).
    pub include_deleted: bool,
}

/// A record as the records API lists it: its canonical form, no raw.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordVersion {
    /// The feed position of its latest change.
    pub version: i64,
    /// Connection id.
    pub connection_id: i64,
    /// Connection name.
    pub connection: String,
    /// Entity (source type).
    pub entity: String,
    /// Source id.
    pub external_id: String,
    /// Canonical entity.
    pub canonical_entity: String,
    /// Canonical projection.
    pub canonical: Value,
    /// Content hash.
    pub content_hash: String,
    /// Source last-modified time.
    pub source_updated_at: Option<Timestamp>,
    /// First seen.
    pub first_seen_at: Timestamp,
    /// Last content change.
    pub last_modified_at: Timestamp,
    /// When it was found deleted at the source.
    pub deleted_at: Option<Timestamp>,
}

/// One page of [`crate::Store::records_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsPage {
    /// The records, in version order.
    pub records: Vec<RecordVersion>,
    /// The cursor to ask after next, a feed position: the last record's
    /// version when the page is full, else the head (the end was reached).
    pub next: i64,
    /// The feed's head when the page was read (same snapshot).
    pub head: i64,
}

impl RecordsPage {
    /// The page of `records` read after `after` with `limit`, at `head`.
    pub(crate) fn new(records: Vec<RecordVersion>, after: i64, limit: u32, head: i64) -> Self {
        let next = match records.last() {
            Some(last) if records.len() >= limit as usize => last.version,
            _ => head.max(after),
        };
        Self {
            records,
            next,
            head,
        }
    }
}

/// An edge pointing at a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEdge {
    /// The relationship's name (on the source record).
    pub rel: String,
    /// The source record's entity.
    pub from_entity: String,
    /// The source record's id.
    pub from_external_id: String,
    /// Whether the source record belongs to this one (deletions cascade).
    pub hard: bool,
}

/// A full-text search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The words to find (see [`search_words`]): a record matches when
    /// each is the start of one of its words.
    pub words: Vec<String>,
    /// Only this connection's.
    pub connection_id: Option<i64>,
    /// Only this entity's.
    pub entity: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Connection id.
    pub connection_id: i64,
    /// Connection name.
    pub connection: String,
    /// Entity.
    pub entity: String,
    /// Source id.
    pub external_id: String,
    /// Canonical projection.
    pub canonical: Value,
    /// How well it matches: higher is better (comparable within one
    /// answer only; each backend ranks its own way).
    pub rank: f64,
    /// The matching text, the matched words between `«` and `»` (not
    /// brackets: a URL with a bracketed word is no longer a URL).
    pub snippet: String,
}

/// What one step of [`crate::Store::index_search`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchIndexStep {
    /// The index's cursor after the step: every change up to this feed
    /// position is in the index.
    pub cursor: i64,
    /// Changes read.
    pub changes: u64,
    /// Whether the index was rebuilt from the records (its cursor was
    /// below the feed's retention horizon).
    pub rebuilt: bool,
}

/// The words of a search text: its runs of letters and digits (any
/// script), at most 32 of them. Both backends index the same runs.
pub fn search_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(str::to_owned)
        .collect()
}

/// The columns of a [`RecordVersion`], from `record_versions v JOIN
/// records r JOIN connections c`.
pub(crate) const VERSION_COLUMNS: &str = "v.version, r.connection_id, c.name AS connection, \
     r.entity, r.external_id, r.canonical_entity, r.canonical, r.content_hash, \
     r.source_updated_at, r.first_seen_at, r.last_modified_at, r.deleted_at";

/// A row of [`VERSION_COLUMNS`].
pub(crate) fn version_row(row: &impl Columns) -> Result<RecordVersion> {
    Ok(RecordVersion {
        version: row.value("version")?,
        connection_id: row.value("connection_id")?,
        connection: row.value("connection")?,
        entity: row.value("entity")?,
        external_id: row.value("external_id")?,
        canonical_entity: row.value("canonical_entity")?,
        canonical: row.json("canonical")?,
        content_hash: row.value("content_hash")?,
        source_updated_at: row.opt_ts("source_updated_at")?,
        first_seen_at: row.ts("first_seen_at")?,
        last_modified_at: row.ts("last_modified_at")?,
        deleted_at: row.opt_ts("deleted_at")?,
    })
}

/// A row of `from_entity, from_external_id, rel, hard` of `edges`.
pub(crate) fn incoming_row(row: &impl Columns) -> Result<IncomingEdge> {
    Ok(IncomingEdge {
        from_entity: row.value_at(0)?,
        from_external_id: row.value_at(1)?,
        rel: row.value_at(2)?,
        hard: row.value_at(3)?,
    })
}

/// Changes the indexer reads at most per step.
pub(crate) fn index_batch(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 10_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits() {
        assert_eq!(
            search_words("  ada@example.com, Zoë-Ann 42 "),
            ["ada", "example", "com", "Zoë", "Ann", "42"]
        );
        assert!(search_words(" -- ").is_empty());
    }

    #[test]
    fn a_full_page_ends_at_its_last_version_a_short_one_at_the_head() {
        let record = |version| RecordVersion {
            version,
            connection_id: 1,
            connection: "c".into(),
            entity: "E".into(),
            external_id: version.to_string(),
            canonical_entity: "E".into(),
            canonical: Value::Null,
            content_hash: String::new(),
            source_updated_at: None,
            first_seen_at: Timestamp::default(),
            last_modified_at: Timestamp::default(),
            deleted_at: None,
        };
        let full = RecordsPage::new(vec![record(3), record(7)], 0, 2, 9);
        assert_eq!(full.next, 7);
        let short = RecordsPage::new(vec![record(3)], 0, 2, 9);
        assert_eq!(short.next, 9);
        let empty = RecordsPage::new(vec![], 12, 2, 9);
        assert_eq!(empty.next, 12);
    }
}
