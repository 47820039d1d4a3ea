//! One entity's task: it fetches the entity's pages (a [`Fetcher`] on a
//! task of its own) and commits them in order through the run's committer.

use std::collections::VecDeque;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tributary_core::Timestamp;
use tributary_manifest::Entity;
use tributary_source::Source;
use tributary_store::{Checkpoint, EntityState};

use crate::committer::{self, Committer};
use crate::fetcher::{Fetcher, ParentBatches};
use crate::page::PreparedPage;
use crate::retry::{Failure, RunControl};
use crate::{Engine, EntityReport, Progress, Spool};

/// What of an entity a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Every record (a full sync; in a delta, an entity that has no way to
    /// ask for its changes, or was never read whole). Its high-water mark
    /// becomes the run's start once the scan ends.
    All,
    /// The records changed at or after this time, in `updated_at` order;
    /// each page moves the mark to the newest change it read.
    Since(Timestamp),
    /// The children of the parents this run created or changed; the mark
    /// becomes the run's start once the scan ends.
    ChangedParents,
}

/// Everything one entity task needs.
pub(crate) struct EntityJob {
    pub(crate) engine: Engine,
    pub(crate) source: Source,
    pub(crate) connection_id: i64,
    pub(crate) run_id: i64,
    pub(crate) entity: Arc<Entity>,
    pub(crate) checkpoint: Option<Checkpoint>,
    pub(crate) progress: Arc<dyn Progress>,
    pub(crate) control: Arc<RunControl>,
    pub(crate) committer: Committer,
    pub(crate) spool: Option<Arc<Spool>>,
    /// What of the entity this run reads.
    pub(crate) scan: Scan,
    /// When the run started (the mark a whole scan leaves).
    pub(crate) run_started: Timestamp,
    /// Requests answered for this entity (pages read from the API).
    pub(crate) requests: Arc<AtomicU64>,
    /// A reconciliation's record of the ids the listing saw.
    pub(crate) seen: Option<crate::reconcile::Seen>,
}

impl EntityJob {
    pub(crate) async fn run(self) -> Result<EntityReport, Failure> {
        let entity_name = self.entity.name.clone();
        let (records, pages) = self
            .checkpoint
            .as_ref()
            .map_or((0, 0), |c| (c.records, c.pages));
        self.progress.entity_started(
            &entity_name,
            records,
            self.checkpoint.as_ref().and_then(|c| c.total),
        );
        let result = match self.entity.parent.clone() {
            None => self.sync_list(records, pages).await,
            Some(parent) => self.sync_children(&parent, records, pages).await,
        };
        let requests = self.requests.load(Ordering::Relaxed);
        match result {
            Ok((records, pages)) => {
                self.progress
                    .entity_finished(&entity_name, EntityState::Done, None);
                Ok(EntityReport {
                    entity: entity_name,
                    state: EntityState::Done,
                    records,
                    pages,
                    requests,
                    deleted: 0,
                    error: None,
                })
            }
            Err(error) => Err(error),
        }
    }

    /// Commits the pages `pages` yields, in order, through the run's
    /// committer: up to `prefetch` of them fetched ahead or committing at
    /// once. A committed page leaves the spool.
    async fn commit_in_order(
        &self,
        mut pages: mpsc::Receiver<Result<PreparedPage, Failure>>,
        starved: &AtomicBool,
        mut records: i64,
        mut pages_done: i64,
    ) -> Result<(i64, i64), Failure> {
        let depth = self.engine.options.prefetch.max(1);
        let mut in_flight: VecDeque<oneshot::Receiver<committer::Answer>> = VecDeque::new();
        let mut fetching = true;
        // A fetch failure ends the entity once the pages fetched before it
        // have committed (they are good; committing them keeps the work).
        let mut fetch_failure: Option<Failure> = None;
        loop {
            // Take fetched pages while there is room and they are ready (or
            // while nothing is committing, wait for the next).
            while fetching && in_flight.len() < depth {
                let next = if in_flight.is_empty() {
                    // Nothing to commit: the fetcher is the slower side.
                    if pages.is_empty() {
                        starved.store(true, Ordering::Relaxed);
                    }
                    pages.recv().await
                } else {
                    match pages.try_recv() {
                        Ok(page) => Some(page),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                let mut page = match next {
                    Some(Ok(page)) => page,
                    Some(Err(failure)) => {
                        fetch_failure = Some(failure);
                        fetching = false;
                        break;
                    }
                    None => {
                        fetching = false;
                        break;
                    }
                };
                // The mark the page leaves: the newest change a delta page
                // read; the run's start once a whole scan ends.
                page.mark = match self.scan {
                    Scan::Since(_) => page.high_water,
                    Scan::All | Scan::ChangedParents => page.finished.then_some(self.run_started),
                };
                let answer = self
                    .committer
                    .submit(committer::Job {
                        connection_id: self.connection_id,
                        run_id: self.run_id,
                        entity: self.entity.name.as_str().into(),
                        canonical_entity: self.entity.canonical.as_str().into(),
                        page,
                        now: self.engine.clock.now(),
                    })
                    .await;
                in_flight.push_back(answer);
            }
            let Some(answer) = in_flight.pop_front() else {
                return Err(fetch_failure
                    .unwrap_or_else(|| Failure::other("the page fetcher stopped early")));
            };
            // The committer hands the page back with its fate.
            let (page, outcome) = match answer.await {
                Ok((page, Ok(outcome))) => (page, outcome),
                Ok((_, Err(error))) => {
                    return Err(Failure::store("commit failed", &error));
                }
                Err(_) => return Err(Failure::transient("commit failed: the committer stopped")),
            };
            if let Some(seen) = &self.seen {
                let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                seen.extend(page.records.iter().map(|r| r.external_id.clone()));
                // A record that arrives invalid still exists at the source.
                seen.extend(
                    page.quarantined
                        .iter()
                        .filter_map(|q| q.external_id.clone()),
                );
            }
            records += outcome.records() as i64;
            pages_done += 1;
            self.progress
                .page_committed(&self.entity.name, &outcome, records, page.total);
            if let Some(spool) = &self.spool {
                for key in &page.spool_keys {
                    spool.committed(&self.entity.name, key);
                }
            }
            if page.finished {
                return Ok((records, pages_done));
            }
        }
    }

    /// A top-level collection, page by page from the checkpoint: a fetcher
    /// task pages through the list (one request at a time) while earlier
    /// pages commit.
    async fn sync_list(&self, records: i64, pages: i64) -> Result<(i64, i64), Failure> {
        let start = match (&self.checkpoint, self.scan) {
            (Some(checkpoint), _) => checkpoint.cursor.clone(),
            (None, Scan::Since(since)) => self
                .source
                .delta_cursor(&self.entity, since)
                .unwrap_or_default(),
            (None, _) => tributary_core::Cursor::start(),
        };
        self.fetch_and_commit(
            |fetcher, sender| fetcher.list(start, sender),
            records,
            pages,
        )
        .await
    }

    /// Runs `fetch` — the entity's fetcher, handing pages on through a
    /// channel of `prefetch` pages — on a task of its own while the pages
    /// it hands on commit in order.
    async fn fetch_and_commit<F, Fut>(
        &self,
        fetch: F,
        records: i64,
        pages: i64,
    ) -> Result<(i64, i64), Failure>
    where
        F: FnOnce(Fetcher, mpsc::Sender<Result<PreparedPage, Failure>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(self.engine.options.prefetch.max(1));
        let starved = Arc::new(AtomicBool::new(false));
        let fetcher = Fetcher {
            source: self.source.clone(),
            entity: self.entity.clone(),
            control: self.control.clone(),
            progress: self.progress.clone(),
            policy: self.engine.retry_policy(),
            spool: self.spool.clone(),
            requests: self.requests.clone(),
            starved: starved.clone(),
        };
        // Keep the run/connection/entity span on the fetcher's log lines.
        let span = tracing::Span::current();
        let task = tokio::spawn(tracing::Instrument::instrument(
            fetch(fetcher, sender),
            span,
        ));
        let result = self
            .commit_in_order(receiver, &starved, records, pages)
            .await;
        task.abort();
        result
    }

    /// An entity listed under a parent: the parents' ids come from the store
    /// (the parent synced in an earlier wave), a batch at a time; each batch
    /// of children commits as one page whose cursor is the batch's last
    /// parent.
    async fn sync_children(
        &self,
        parent: &str,
        records: i64,
        pages: i64,
    ) -> Result<(i64, i64), Failure> {
        // The cursor is the source's to read.
        let after = match &self.checkpoint {
            Some(checkpoint) => self
                .source
                .children_after(&checkpoint.cursor)
                .map_err(|e| Failure::other(e.to_string()))?,
            None => None,
        };
        let batches = ParentBatches {
            store: self.engine.store.clone(),
            connection_id: self.connection_id,
            parent: parent.to_owned(),
            batch_size: self.engine.options.parent_batch,
            changed_in: (self.scan == Scan::ChangedParents).then_some(self.run_id),
        };
        self.fetch_and_commit(
            |fetcher, sender| fetcher.children(batches, after, sender),
            records,
            pages,
        )
        .await
    }
}
