//! Fetching an entity's pages: a list paged from its checkpoint, or
//! children a batch of parents at a time; pages a killed run spooled are
//! replayed instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::collections::VecDeque;

use futures_util::stream::{self, FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tributary_core::Cursor;
use tributary_manifest::Entity;
use tributary_source::{Page, Source};
use tributary_store::Store;

use crate::page::PreparedPage;
use crate::retry::{Failure, RetryPolicy, RunControl, retrying};
use crate::{Progress, Spool};

/// Where the parents of an entity listed under a parent come from.
pub(crate) struct ParentBatches {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) connection_id: i64,
    pub(crate) parent: String,
    pub(crate) batch_size: u32,
    /// Only the parents this run created or changed (a delta's `parent`
    /// strategy); `None`: every live parent.
    pub(crate) changed_in: Option<i64>,
}

/// Fetches an entity's pages in order, one request (or, for children,
/// `concurrency` requests) at a time, and hands them on prepared; reads a
/// page from the spool instead when a killed run had fetched it, and
/// spools every page it fetches.
pub(crate) struct Fetcher {
    pub(crate) source: Source,
    pub(crate) entity: Arc<Entity>,
    pub(crate) control: Arc<RunControl>,
    pub(crate) progress: Arc<dyn Progress>,
    pub(crate) policy: RetryPolicy,
    pub(crate) spool: Option<Arc<Spool>>,
    /// Requests answered (pages read from the API, not the spool).
    pub(crate) requests: Arc<AtomicU64>,
    /// Set when the commits ran out of pages and waited for the next.
    pub(crate) starved: Arc<AtomicBool>,
}

impl Fetcher {
    /// The page a killed run fetched and spooled under `key`, parsed by
    /// `parse`; `None` if there is none, or if it no longer parses (it is
    /// then fetched again).
    fn replay(
        &self,
        key: &str,
        parse: impl FnOnce(Vec<Vec<u8>>) -> Result<Page, String>,
    ) -> Option<Page> {
        let bodies = self.spool.as_ref()?.take(&self.entity.name, key)?;
        match parse(bodies) {
            Ok(page) => {
                self.control.spooled.fetch_add(1, Ordering::Relaxed);
                Some(page)
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring a spooled page");
                None
            }
        }
    }

    /// The page at `cursor`: from the spool if a previous process fetched
    /// it, else from the API (and then spooled).
    async fn page(&self, cursor: &Cursor) -> Result<(Page, String), Failure> {
        let key = cursor.0.to_string();
        let replayed = self.replay(&key, |mut bodies| match bodies.len() {
            1 => self
                .source
                .parse_page(&self.entity, cursor, bodies.remove(0))
                .map_err(|e| e.to_string()),
            n => Err(format!("a list page has one body, not {n}")),
        });
        if let Some(page) = replayed {
            return Ok((page, key));
        }
        let page = self
            .control
            .unless_stopping(retrying(
                self.policy,
                &self.control,
                &self.entity.name,
                self.progress.as_ref(),
                || self.source.fetch_page(&self.entity, cursor),
            ))
            .await?;
        self.requests
            .fetch_add(page.bodies.len() as u64, Ordering::Relaxed);
        self.keep(&key, &page.bodies);
        Ok((page, key))
    }

    fn keep(&self, key: &str, bodies: &[Vec<u8>]) {
        if let Some(spool) = &self.spool
            && let Err(error) = spool.put(&self.entity.name, key, bodies)
        {
            tracing::warn!(%error, "cannot spool a fetched page; a crash would fetch it again");
        }
    }

    /// Pages a top-level list from `cursor` to its end and hands the pages
    /// on in order. Where the source can tell which pages follow (a list
    /// paged by offset that reports its size: [`Source::pages_ahead`]),
    /// several are fetched at once: a [`Window`] of them, wide while the
    /// commits wait on the API and narrow while the API waits on the
    /// commits. A prediction the list contradicts (it shrank or grew
    /// meanwhile) is dropped, unapplied, and paging goes on from where the
    /// list says.
    pub(crate) async fn list(
        self,
        mut cursor: Cursor,
        pages: mpsc::Sender<Result<PreparedPage, Failure>>,
    ) {
        let me = &self;
        let fetch = |at: Cursor| async move { me.page(&at).await };
        let mut window = Window::new(self.entity.concurrency);
        // The fetches under way, in list order; the ones already answered
        // while a page waited for room in the queue; and the cursors of
        // both, answered first.
        let mut fetches = FuturesOrdered::new();
        let mut ready = VecDeque::new();
        let mut ahead: VecDeque<Cursor> = VecDeque::new();
        // The previous page's ids: an API that serves the same page at ever
        // higher offsets (no `total_count` to notice it by) would otherwise
        // be paged forever.
        let mut previous: Vec<String> = Vec::new();
        loop {
            if ahead.is_empty() {
                ahead.push_back(cursor.clone());
                fetches.push_back(fetch(cursor.clone()));
            }
            let fetched = match ready.pop_front() {
                Some(fetched) => fetched,
                None => match fetches.next().await {
                    Some(fetched) => fetched,
                    None => Err(Failure::other("the page fetcher lost a fetch")),
                },
            };
            ahead.pop_front();
            let (page, key) = match fetched {
                Ok(fetched) => fetched,
                Err(failure) => {
                    self.drop_ahead(&mut ahead);
                    let _ = pages.send(Err(failure)).await;
                    return;
                }
            };
            window.adjust(
                self.starved.swap(false, Ordering::Relaxed),
                pages.capacity() == 0,
            );
            let following = self.source.pages_ahead(&cursor, &page, window.width());
            // The fetches under way must be the pages that follow this one.
            if ahead.len() > following.len() || ahead.iter().zip(&following).any(|(a, f)| a != f) {
                fetches = FuturesOrdered::new();
                ready.clear();
                self.drop_ahead(&mut ahead);
            }
            for next in following.into_iter().skip(ahead.len()) {
                ahead.push_back(next.clone());
                fetches.push_back(fetch(next));
            }
            let page = PreparedPage::new(page, vec![key]);
            let repeated = !page.records.is_empty()
                && page.records.len() == previous.len()
                && page
                    .records
                    .iter()
                    .zip(&previous)
                    .all(|(r, p)| &r.external_id == p);
            if repeated {
                self.drop_ahead(&mut ahead);
                let _ = pages
                    .send(Err(Failure::other(format!(
                        "the API served the same {} records again (next cursor {}): its paging does not advance; stopping",
                        page.records.len(),
                        page.cursor_after.0
                    ))))
                    .await;
                return;
            }
            previous = page.records.iter().map(|r| r.external_id.clone()).collect();
            let (next, finished) = (page.cursor_after.clone(), page.finished);
            // Waiting for room in the queue, the fetches ahead go on (their
            // answers wait in `ready`): a request is never left half-read.
            let room = loop {
                tokio::select! {
                    room = pages.reserve() => break room,
                    Some(done) = fetches.next(), if !fetches.is_empty() => ready.push_back(done),
                }
            };
            match room {
                Ok(room) => room.send(Ok(page)),
                Err(_) => {
                    self.drop_ahead(&mut ahead);
                    return;
                }
            }
            if finished {
                self.drop_ahead(&mut ahead);
                return;
            }
            cursor = next;
        }
    }

    /// Forgets the pages fetched ahead that will not be applied (their
    /// fetches, if still under way, are dropped with their futures).
    fn drop_ahead(&self, ahead: &mut VecDeque<Cursor>) {
        for cursor in ahead.drain(..) {
            if let Some(spool) = &self.spool {
                spool.discard(&self.entity.name, &cursor.0.to_string());
            }
        }
    }

    /// The children of every parent after `after`, a batch of parents at
    /// a time; each batch is one page.
    pub(crate) async fn children(
        self,
        batches: ParentBatches,
        mut after: Option<String>,
        pages: mpsc::Sender<Result<PreparedPage, Failure>>,
    ) {
        loop {
            let result = self.batch(&batches, after.clone()).await;
            let (next, finished) = match &result {
                Ok((page, last)) => (last.clone(), page.finished),
                Err(_) => (None, true),
            };
            if pages.send(result.map(|(page, _)| page)).await.is_err() || finished {
                return;
            }
            after = next;
        }
    }

    /// Lists the next batch of parents after `after` and fetches their
    /// children (`concurrency` parents at once).
    async fn batch(
        &self,
        batches: &ParentBatches,
        after: Option<String>,
    ) -> Result<(PreparedPage, Option<String>), Failure> {
        let parent = &batches.parent;
        let parents = match batches.changed_in {
            None => {
                batches
                    .store
                    .external_ids(
                        batches.connection_id,
                        parent,
                        after.as_deref(),
                        batches.batch_size,
                    )
                    .await
            }
            Some(run_id) => {
                batches
                    .store
                    .changed_ids(
                        batches.connection_id,
                        parent,
                        run_id,
                        after.as_deref(),
                        batches.batch_size,
                    )
                    .await
            }
        }
        .map_err(|e| Failure::store(&format!("listing {parent} ids failed"), &e))?;
        let finished = parents.len() < batches.batch_size as usize;
        let concurrency = self.entity.concurrency.max(1);
        let fetched: Vec<Result<Option<Page>, Failure>> = stream::iter(parents.clone())
            .map(|parent_id| async move {
                let replayed = self.replay(&parent_id, |bodies| {
                    self.source
                        .parse_children(&self.entity, &parent_id, bodies)
                        .map_err(|e| e.to_string())
                });
                if let Some(page) = replayed {
                    return Ok(Some(page));
                }
                let page = self
                    .control
                    .unless_stopping(retrying(
                        self.policy,
                        &self.control,
                        &self.entity.name,
                        self.progress.as_ref(),
                        || async {
                            match self.source.fetch_children(&self.entity, &parent_id).await {
                                // A parent deleted since it was listed has no
                                // children (`None`: told apart below).
                                Err(tributary_source::Error::Status { status: 404, .. }) => {
                                    Ok(None)
                                }
                                other => other.map(Some),
                            }
                        },
                    ))
                    .await?;
                if let Some(page) = &page {
                    self.requests
                        .fetch_add(page.bodies.len() as u64, Ordering::Relaxed);
                    self.keep(&parent_id, &page.bodies);
                }
                Ok(page)
            })
            .buffered(concurrency)
            .collect()
            .await;
        let mut combined = Page {
            finished,
            ..Page::default()
        };
        // An auth failure outranks any other: it stops the run.
        if let Some(Err(failure)) = fetched
            .iter()
            .find(|r| matches!(r, Err(Failure { auth: true, .. })))
        {
            return Err(failure.clone());
        }
        let gone = fetched.iter().filter(|r| matches!(r, Ok(None))).count();
        if gone >= 3 && gone == fetched.len() {
            return Err(Failure::other(format!(
                "every one of {gone} {parent}s answered 404 for `{}`: the list endpoint is probably wrong",
                self.entity.list
            )));
        }
        for page in fetched {
            let Some(page) = page? else { continue };
            combined.records.extend(page.records);
            combined.quarantined.extend(page.quarantined);
        }
        let last = parents.last().cloned().or(after);
        combined.next = self.source.children_cursor(last.as_deref(), finished);
        Ok((PreparedPage::new(combined, parents), last))
    }
}

/// How many pages of a list are fetched at once: between one and the
/// entity's `concurrency`. It widens by one each time a page is ready
/// after the commits ran out of pages and waited (they wait on the API:
/// more requests at once help), and narrows by one each time the pages
/// fetched ahead fill the queue to the commits (they wait on the store:
/// more requests would only add work to busy cores).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    width: usize,
    widest: usize,
}

impl Window {
    pub(crate) fn new(widest: usize) -> Self {
        Self {
            width: 1,
            widest: widest.max(1),
        }
    }

    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Adjusts the width as a page is ready: `starved`, the commits waited
    /// for a page since the last one; `full`, the queue to them is full.
    pub(crate) fn adjust(&mut self, starved: bool, full: bool) {
        if full {
            self.width = self.width.saturating_sub(1).max(1);
        } else if starved {
            self.width = (self.width + 1).min(self.widest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn the_window_widens_while_commits_wait_and_narrows_while_they_lag() {
        let mut window = Window::new(4);
        assert_eq!(window.width(), 1);
        for _ in 0..10 {
            window.adjust(true, false);
        }
        assert_eq!(
            window.width(),
            4,
            "never wider than the entity's concurrency"
        );
        window.adjust(false, false);
        assert_eq!(
            window.width(),
            4,
            "commits neither waiting nor behind keep it"
        );
        window.adjust(true, true);
        assert_eq!(window.width(), 3, "a full queue outranks an earlier wait");
        for _ in 0..10 {
            window.adjust(false, true);
        }
        assert_eq!(window.width(), 1, "never narrower than one page");
        let mut single = Window::new(0);
        single.adjust(true, false);
        assert_eq!(single.width(), 1);
    }
}
