//! Delta reads: the records of an entity changed since a time, read in
//! `updated_at` order with a cursor anchored on a *value* (the last
//! `updated_at` read), not on a position in a list that shifts as records
//! change.
//!
//! A delta cursor is `{"since": T, "offset": K}`: the next page is the list
//! filtered to `updated_at >= T` (inclusive), ordered by `updated_at`, from
//! position `K`. After a page whose newest record has `updated_at = T'`
//! (`T' > T`), the cursor moves to `{since: T', offset: 0}`: the records at
//! `T'` already read are read again at the start of the next page (they
//! come back unchanged and change nothing), so a record that changes while
//! the scan runs — and so leaves its place — never makes another one slip
//! past unseen. Only a page that is *all* one timestamp moves by position
//! (`offset` past it), since reading it again would not advance.
//!
//! For an entity read through a parent's include (`parent_include`), the
//! parent's list is the one filtered and ordered, and the records of the
//! page are the included objects of the entity's type.

use chrono::{DurationRound as _, SecondsFormat};
use serde_json::{Value, json};
use tributary_core::{Borrowed, Cursor, Timestamp};
use tributary_manifest::{Delta, Entity};

use crate::transform::{get, member, transform};
use crate::{Error, Page, Result, Source, malformed};

/// Where a delta scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaCursor {
    pub(crate) since: Timestamp,
    pub(crate) offset: u64,
}

impl DeltaCursor {
    /// The cursor's JSON.
    fn to_cursor(self, done: bool) -> Cursor {
        let since = self.since.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut cursor = json!({ "since": since, "offset": self.offset });
        if done {
            cursor["done"] = Value::Bool(true);
        }
        Cursor(cursor)
    }

    /// Reads a delta cursor: `None` for any other cursor.
    pub(crate) fn parse(cursor: &Cursor) -> Result<Option<Self>> {
        let Value::Object(o) = &cursor.0 else {
            return Ok(None);
        };
        let Some(since) = o.get("since") else {
            return Ok(None);
        };
        let bad = || Error::BadCursor(cursor.0.to_string());
        let since = since
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .ok_or_else(bad)?
            .to_utc();
        let offset = o.get("offset").and_then(Value::as_u64).ok_or_else(bad)?;
        Ok(Some(Self { since, offset }))
    }

    /// The cursor after a page read at `self`, whose objects carried the
    /// `updated_at` values `stamps` in order (`None`: none readable).
    fn after(self, stamps: &[Option<Timestamp>]) -> Self {
        let count = stamps.len() as u64;
        let newest = stamps.iter().flatten().max().copied();
        match newest {
            Some(newest) if newest > self.since => {
                let tail = stamps
                    .iter()
                    .rev()
                    .take_while(|s| **s == Some(newest))
                    .count() as u64;
                Self {
                    since: newest,
                    // A page all of one time moves past it; any other starts
                    // the next page at its newest time again.
                    offset: if tail == count { count } else { 0 },
                }
            }
            // Nothing newer than the anchor: the page is all of its time.
            _ => Self {
                since: self.since,
                offset: self.offset + count,
            },
        }
    }
}

/// What a delta page request reads.
pub(crate) struct DeltaRequest<'a> {
    pub(crate) url: String,
    pub(crate) at: DeltaCursor,
    /// The entity whose list is filtered: the entity itself, or the parent
    /// whose include carries it.
    pub(crate) listed: &'a Entity,
    /// The include the records come from (`parent_include`).
    pub(crate) include: Option<&'a str>,
}

impl Source {
    /// The cursor that starts a delta read of `entity`: the records changed
    /// at or after `since` (a newest-first walk down to `since`, for
    /// `newest_first`). An entity without a way to ask for changes since a
    /// time (`full_scan`, `parent`) has none: it is read whole.
    pub fn delta_cursor(&self, entity: &Entity, since: Timestamp) -> Option<Cursor> {
        if let Delta::NewestFirst { .. } = entity.delta {
            return Some(Source::newest_cursor(since));
        }
        matches!(
            entity.delta,
            Delta::Filter { .. } | Delta::ParentInclude { .. }
        )
        .then(|| {
            // Whole seconds, rounded down (the bound is inclusive): every
            // API reads them.
            let since = since
                .duration_trunc(chrono::TimeDelta::seconds(1))
                .unwrap_or(since);
            DeltaCursor { since, offset: 0 }.to_cursor(false)
        })
    }

    /// The request of the delta page at `at`.
    pub(crate) fn delta_request<'a>(
        &'a self,
        entity: &'a Entity,
        at: DeltaCursor,
    ) -> Result<DeltaRequest<'a>> {
        let manifest = self.manifest();
        let (listed, include) = match &entity.delta {
            Delta::Filter { .. } => (entity, None),
            Delta::ParentInclude { parent, include } => {
                let parent = manifest.entities.get(parent).ok_or_else(|| {
                    Error::Config(format!(
                        "`{}`'s delta parent `{parent}` is not an entity",
                        entity.name
                    ))
                })?;
                (parent, Some(include.as_str()))
            }
            _ => {
                return Err(Error::Config(format!(
                    "`{}` has no delta filter: it is read whole",
                    entity.name
                )));
            }
        };
        let (Delta::Filter { param }, Some(updated_at)) = (&listed.delta, &listed.updated_at)
        else {
            return Err(Error::Config(format!(
                "`{}` cannot be asked for its changes: it needs a delta filter and an updated_at attribute",
                listed.name
            )));
        };
        let since = at.since.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut url = self.list_url(&listed.list, at.offset, Some(updated_at));
        url.push_str(&format!("&{param}={since}"));
        if let Some(include) = include {
            url.push_str(&format!("&include={include}"));
        }
        Ok(DeltaRequest {
            url,
            at,
            listed,
            include,
        })
    }

    /// Reads the page `request` answered with `body`.
    pub(crate) fn delta_page(
        &self,
        entity: &Entity,
        request: &DeltaRequest<'_>,
        body: &[u8],
    ) -> Result<Page> {
        let url = &request.url;
        let mut page = match request.include {
            None => self.parse_body(entity, url, body, request.at.offset, None)?,
            Some(_) => self.parse_body(request.listed, url, body, request.at.offset, None)?,
        };
        // The anchor moves by the filtered list's own objects, valid or not.
        let mut stamps: Vec<Option<Timestamp>> =
            page.records.iter().map(|r| r.source_updated_at).collect();
        stamps.extend(page.quarantined.iter().map(|_| None));
        if request.include.is_some() {
            // The records are the included objects of the entity's type.
            page.records.clear();
            page.quarantined.clear();
            self.included(entity, url, body, &mut page)?;
        }
        let next = request.at.after(&stamps);
        page.high_water = stamps.iter().flatten().max().copied();
        page.next = next.to_cursor(page.finished);
        Ok(page)
    }

    /// The `included` objects of `entity`'s type, as records.
    fn included(&self, entity: &Entity, url: &str, body: &[u8], page: &mut Page) -> Result<()> {
        let doc: Borrowed<'_> = serde_json::from_slice(body)
            .map_err(|e| malformed(url, &format!("invalid JSON: {e}")))?;
        let Borrowed::Object(doc) = doc else {
            return Err(malformed(url, "the document is not a JSON object"));
        };
        let included = match member(&doc, "included") {
            None | Some(Borrowed::Null) => return Ok(()),
            Some(Borrowed::Array(items)) => items,
            Some(_) => return Err(malformed(url, "`included` is not an array")),
        };
        for object in included {
            let of_type = get(object, "type").and_then(Borrowed::as_str) == Some(&entity.name);
            if of_type {
                match transform(entity, object, None) {
                    Ok(record) => page.records.push(record),
                    Err(bad) => page.quarantined.push(bad),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u32) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(s), 0).unwrap()
    }

    #[test]
    fn the_anchor_moves_to_the_newest_time_and_reads_its_records_again() {
        let at = DeltaCursor {
            since: t(0),
            offset: 0,
        };
        let next = at.after(&[Some(t(0)), Some(t(1)), Some(t(2)), Some(t(2))]);
        assert_eq!(
            next,
            DeltaCursor {
                since: t(2),
                offset: 0
            }
        );
    }

    #[test]
    fn a_page_all_of_one_time_moves_past_it_by_position() {
        let at = DeltaCursor {
            since: t(0),
            offset: 0,
        };
        let same = [Some(t(0)); 3];
        assert_eq!(
            at.after(&same),
            DeltaCursor {
                since: t(0),
                offset: 3
            }
        );
        let again = DeltaCursor {
            since: t(0),
            offset: 3,
        }
        .after(&same);
        assert_eq!(again.offset, 6);
        // All of one newer time: its group starts at this page.
        let newer = DeltaCursor {
            since: t(0),
            offset: 6,
        }
        .after(&[Some(t(5)); 3]);
        assert_eq!(
            newer,
            DeltaCursor {
                since: t(5),
                offset: 3
            }
        );
    }

    #[test]
    fn unreadable_times_move_by_position() {
        let at = DeltaCursor {
            since: t(0),
            offset: 2,
        };
        assert_eq!(at.after(&[None, None]).offset, 4);
        // A trailing object without a time: the newest time is read again.
        assert_eq!(
            at.after(&[Some(t(3)), None]),
            DeltaCursor {
                since: t(3),
                offset: 0
            }
        );
    }

    #[test]
    fn cursors_round_trip_and_other_cursors_are_not_delta_cursors() {
        let at = DeltaCursor {
            since: t(7),
            offset: 4,
        };
        assert_eq!(DeltaCursor::parse(&at.to_cursor(false)).unwrap(), Some(at));
        assert_eq!(
            DeltaCursor::parse(&Cursor(json!({"offset": 3}))).unwrap(),
            None
        );
        assert_eq!(DeltaCursor::parse(&Cursor::start()).unwrap(), None);
        assert!(DeltaCursor::parse(&Cursor(json!({"since": "x", "offset": 1}))).is_err());
    }
}
