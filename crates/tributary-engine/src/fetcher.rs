//! Fetching an entity's pages: a list paged from its checkpoint, or
//! children a batch of parents at a time; pages a killed run spooled are
//! replayed instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::stream::{self, StreamExt};
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

    /// Pages a top-level list from `cursor` to its end.
    pub(crate) async fn list(
        self,
        mut cursor: Cursor,
        pages: mpsc::Sender<Result<PreparedPage, Failure>>,
    ) {
        // The previous page's ids: an API that serves the same page at ever
        // higher offsets (no `total_count` to notice it by) would otherwise
        // be paged forever.
        let mut previous: Vec<String> = Vec::new();
        loop {
            let result = self.page(&cursor).await.and_then(|(page, key)| {
                let page = PreparedPage::new(page, vec![key]);
                if !page.records.is_empty()
                    && page.records.len() == previous.len()
                    && page
                        .records
                        .iter()
                        .zip(&previous)
                        .all(|(r, p)| &r.external_id == p)
                {
                    return Err(Failure::other(format!(
                        "the API served the same {} records again (next cursor {}): its paging does not advance; stopping",
                        page.records.len(),
                        page.cursor_after.0
                    )));
                }
                Ok(page)
            });
            let (next, finished) = match &result {
                Ok(page) => {
                    previous = page.records.iter().map(|r| r.external_id.clone()).collect();
                    (page.cursor_after.clone(), page.finished)
                }
                Err(_) => (Cursor::start(), true),
            };
            if pages.send(result).await.is_err() || finished {
                return;
            }
            cursor = next;
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
