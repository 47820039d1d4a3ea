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
//! read twice changes nothing (same content hash). A walk that waited
//! longer than [`RESTART_AFTER`] between two pages (a resumed one, after a
//! crash) could have had any number of records deleted under it: it
//! starts again from the newest, with the same bound and top.

use chrono::SecondsFormat;
use serde_json::{Value, json};
use tributary_core::{Cursor, Timestamp};
use tributary_manifest::{Delta, Entity};

use crate::{Error, Page, Result, Source};

/// Records each page re-reads of the one before.
pub const PAGE_OVERLAP: u64 = 5;

/// A walk idle this long between pages starts again from the newest.
pub const RESTART_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Where a newest-first walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NewestCursor {
    since: Timestamp,
    offset: u64,
    top: Option<Timestamp>,
    /// When the page before was read.
    read_at: Option<Timestamp>,
}

impl NewestCursor {
    fn to_cursor(self) -> Cursor {
        let ts = |t: Timestamp| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        Cursor(json!({"newest_first": {
            "since": ts(self.since),
            "offset": self.offset,
            "top": self.top.map(ts),
            "read_at": self.read_at.map(ts),
        }}))
    }

    /// Where to read at `now`: here, or — after a pause longer than
    /// [`RESTART_AFTER`] — from the newest again, with the same bound and
    /// top.
    fn resumed(self, now: Timestamp) -> Self {
        match self.read_at {
            Some(before) if now - before > RESTART_AFTER => Self { offset: 0, ..self },
            _ => self,
        }
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
        let optional = |key: &str| match walk.get(key) {
            None | Some(Value::Null) => Ok(None),
            some => time(some).map(Some).ok_or_else(bad),
        };
        Ok(Some(Self {
            since,
            offset,
            top: optional("top")?,
            read_at: optional("read_at")?,
        }))
    }
}

impl Source {
    /// The cursor that starts a newest-first walk down to `since`.
    pub(crate) fn newest_cursor(since: Timestamp) -> Cursor {
        NewestCursor {
            since,
            offset: 0,
            top: None,
            read_at: None,
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
        let now = self.inner.clock.now();
        let at = at.resumed(now);
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
                read_at: Some(now),
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
                read_at: Some(now),
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
            read_at: Some(since + chrono::TimeDelta::hours(2)),
        };
        assert_eq!(NewestCursor::parse(&at.to_cursor()).unwrap(), Some(at));
        let start = Source::newest_cursor(since);
        assert_eq!(
            NewestCursor::parse(&start).unwrap(),
            Some(NewestCursor {
                since,
                offset: 0,
                top: None,
                read_at: None
            })
        );
        assert_eq!(NewestCursor::parse(&Cursor::start()).unwrap(), None);
        let broken = Cursor(json!({"newest_first": {"since": "yesterday", "offset": 0}}));
        assert!(NewestCursor::parse(&broken).is_err());
    }

    #[test]
    fn a_walk_paused_too_long_starts_again_from_the_newest() {
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .to_utc();
        let read_at = since + chrono::TimeDelta::minutes(5);
        let at = NewestCursor {
            since,
            offset: 995,
            top: Some(since + chrono::TimeDelta::minutes(4)),
            read_at: Some(read_at),
        };
        assert_eq!(at.resumed(read_at + chrono::TimeDelta::seconds(1)), at);
        assert_eq!(at.resumed(read_at + RESTART_AFTER), at);
        let restarted = at.resumed(read_at + RESTART_AFTER + chrono::TimeDelta::seconds(1));
        assert_eq!(restarted, NewestCursor { offset: 0, ..at });
        let fresh = NewestCursor {
            read_at: None,
            ..at
        };
        assert_eq!(fresh.resumed(read_at + chrono::TimeDelta::days(1)), fresh);
    }
}
