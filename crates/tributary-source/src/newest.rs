//! Newest-first delta reads (`delta = { strategy = "newest_first", order =
//! "-updated_at" }`): for an API that can sort a list by change time but
//! cannot filter it on one (Clerk's users). The list is walked from the
//! newest change down, and the walk stops at the first page that reaches a
//! record older than the bound (the mark less the overlap) or the list's
//! end.
//!
//! The cursor is `{"newest_first": {"since": T, "offset": K, "top": T'}}`:
//! the bound, the next position, and the newest change read so far. Only
//! the last page reports a high-water mark (`top`): a walk cut short
//! leaves the mark where it was, so the next delta walks the same range
//! again instead of skipping what the cut walk had not reached.
//!
//! A list walked by position shifts under a record that changes while the
//! walk runs: a change moves a record to the front (newer than the mark
//! the walk leaves, so the next delta reads it); a deletion moves every
//! later record one place up, which could pass one by. Each page therefore
//! starts [`PAGE_OVERLAP`] records before the previous one ended: a record
//! read twice changes nothing (same content hash).

use chrono::SecondsFormat;
use serde_json::{Value, json};
use tributary_core::{Cursor, Timestamp};
use tributary_manifest::{Delta, Entity};

use crate::{Error, Page, Result, Source};

/// Records each page re-reads of the one before.
pub const PAGE_OVERLAP: u64 = 5;

/// Where a newest-first walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NewestCursor {
    since: Timestamp,
    offset: u64,
    top: Option<Timestamp>,
}

impl NewestCursor {
    fn to_cursor(self) -> Cursor {
        let ts = |t: Timestamp| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        Cursor(json!({"newest_first": {
            "since": ts(self.since),
            "offset": self.offset,
            "top": self.top.map(ts),
        }}))
    }

    /// Reads a newest-first cursor: `None` for any other cursor.
    pub(crate) fn parse(cursor: &Cursor) -> Result<Option<Self>> {
        let Some(walk) = cursor.0.get("newest_first") else {
            return Ok(None);
        };
        let bad = || Error::BadCursor(cursor.0.to_string());
        let time = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.to_utc())
        };
        let since = time(walk.get("since")).ok_or_else(bad)?;
        let offset = walk.get("offset").and_then(Value::as_u64).ok_or_else(bad)?;
        let top = match walk.get("top") {
            None | Some(Value::Null) => None,
            some => Some(time(some).ok_or_else(bad)?),
        };
        Ok(Some(Self { since, offset, top }))
    }
}

impl Source {
    /// The cursor that starts a newest-first walk down to `since`.
    pub(crate) fn newest_cursor(since: Timestamp) -> Cursor {
        NewestCursor {
            since,
            offset: 0,
            top: None,
        }
        .to_cursor()
    }

    /// The page of a newest-first walk at `at`.
    pub(crate) async fn fetch_newest(&self, entity: &Entity, at: NewestCursor) -> Result<Page> {
        let Delta::NewestFirst { order } = &entity.delta else {
            return Err(Error::Config(format!(
                "`{}` is not read newest first",
                entity.name
            )));
        };
        let url = self.list_url(&entity.list, at.offset, Some(order));
        let body = self.get_json(&url).await?;
        let mut page = self.parse_body(entity, &url, &body, at.offset, None)?;
        page.bodies = vec![body];
        let stamps: Vec<Timestamp> = page
            .records
            .iter()
            .filter_map(|r| r.source_updated_at)
            .collect();
        let top = stamps.iter().copied().chain(at.top).max();
        let reached = stamps.iter().any(|t| *t < at.since);
        let read = (page.records.len() + page.quarantined.len()) as u64;
        if page.finished || reached || read == 0 {
            page.finished = true;
            page.high_water = top;
            let mut done = NewestCursor {
                since: at.since,
                offset: at.offset + read,
                top,
            }
            .to_cursor();
            done.0["newest_first"]["done"] = Value::Bool(true);
            page.next = done;
        } else {
            page.high_water = None;
            page.next = NewestCursor {
                since: at.since,
                offset: at.offset + read.saturating_sub(PAGE_OVERLAP).max(1),
                top,
            }
            .to_cursor();
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_other_cursors_are_not_read() {
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00.250Z")
            .unwrap()
            .to_utc();
        let at = NewestCursor {
            since,
            offset: 95,
            top: Some(since + chrono::TimeDelta::hours(1)),
        };
        assert_eq!(NewestCursor::parse(&at.to_cursor()).unwrap(), Some(at));
        let start = Source::newest_cursor(since);
        assert_eq!(
            NewestCursor::parse(&start).unwrap(),
            Some(NewestCursor {
                since,
                offset: 0,
                top: None
            })
        );
        assert_eq!(NewestCursor::parse(&Cursor::start()).unwrap(), None);
        let broken = Cursor(json!({"newest_first": {"since": "yesterday", "offset": 0}}));
        assert!(NewestCursor::parse(&broken).is_err());
    }
}
