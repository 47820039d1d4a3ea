//! Group commit: one task commits every page of a run.
//!
//! Entity tasks hand their prepared pages to the run's [`Committer`] and
//! wait for the answer; the committer takes whatever has queued up since
//! its last commit — pages of any entity — and commits it in ONE store
//! transaction (each page still with its own checkpoint). A store with one
//! writer (SQLite) then pays a transaction's fixed costs — begin, commit,
//! the run's counters — once per group instead of once per page, and its
//! writer never waits for an entity task to be scheduled between pages.
//! Durability is unchanged: a page's entity task moves on only once the
//! transaction holding its page is committed.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tributary_core::{Cursor, Timestamp};
use tributary_store::{PageOutcome, PageWrite};

use crate::{Engine, PreparedPage};

/// Pages committed together at most.
const MAX_PAGES: usize = 16;
/// Records committed together at most (a group stops growing past this).
const MAX_RECORDS: usize = 2_000;

/// A page waiting for its commit.
pub(crate) struct Job {
    pub(crate) connection_id: i64,
    pub(crate) run_id: i64,
    pub(crate) entity: Arc<str>,
    pub(crate) canonical_entity: Arc<str>,
    pub(crate) page: PreparedPage,
    pub(crate) cursor: Cursor,
    pub(crate) finished: bool,
    pub(crate) total: Option<i64>,
    pub(crate) now: Timestamp,
}

impl Job {
    fn write(&self) -> PageWrite<'_> {
        PageWrite {
            connection_id: self.connection_id,
            run_id: self.run_id,
            entity: &self.entity,
            canonical_entity: &self.canonical_entity,
            records: &self.page.records,
            quarantined: &self.page.quarantined,
            cursor: &self.cursor,
            finished: self.finished,
            total: self.total,
            now: self.now,
        }
    }
}

/// A committed (or refused) page, handed back to its entity task.
pub(crate) type Answer = (PreparedPage, Result<PageOutcome, tributary_store::Error>);

type Queued = (Job, oneshot::Sender<Answer>);

/// The handle entity tasks commit through. Cheap to clone; the committer
/// stops when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Queued>,
}

impl Committer {
    /// Starts the committer task of one run, committing with `engine`'s
    /// store and commit retries.
    pub(crate) fn start(engine: Engine) -> Self {
        // Enough room for every entity task of a wave to queue its page.
        let (queue, receiver) = mpsc::channel(64);
        // Several lanes where the store writes in parallel: each takes the
        // next group from the shared queue. An entity has at most one page
        // queued or committing, so its pages still commit in order.
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..engine.store().commit_lanes().max(1) {
            tokio::spawn(run(engine.clone(), receiver.clone()));
        }
        Self { queue }
    }

    /// Commits `job`'s page; resolves once its transaction committed (or
    /// failed), handing the page back.
    pub(crate) async fn commit(&self, job: Job) -> Answer {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((job, _))) = self.queue.send((job, reply)).await {
            return (job.page, Err(stopped()));
        }
        answer.await.unwrap_or_else(|_| {
            // The committer is gone (the runtime is shutting down): the page
            // is lost with its task, and nothing was committed for it.
            (PreparedPage::empty(), Err(stopped()))
        })
    }
}

fn stopped() -> tributary_store::Error {
    tributary_store::Error::NotFound("the run's committer (it stopped)".into())
}

/// Takes the next group: the first queued page and whatever queued behind it.
async fn next_group(receiver: &Mutex<mpsc::Receiver<Queued>>) -> Option<Vec<Queued>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut records = first.0.page.records.len();
    let mut group = vec![first];
    while group.len() < MAX_PAGES && records < MAX_RECORDS {
        match receiver.try_recv() {
            Ok(next) => {
                records += next.0.page.records.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    Some(group)
}

async fn run(engine: Engine, receiver: Arc<Mutex<mpsc::Receiver<Queued>>>) {
    while let Some(mut group) = next_group(&receiver).await {
        let writes: Vec<PageWrite<'_>> = group.iter().map(|(job, _)| job.write()).collect();
        let result = engine.commit_pages(&writes).await;
        drop(writes);
        match result {
            Ok(outcomes) => {
                for ((job, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send((job.page, Ok(outcome)));
                }
            }
            // One page alone: its own error.
            Err(error) if group.len() == 1 => {
                let (job, reply) = group.pop().expect("one page");
                let _ = reply.send((job.page, Err(error)));
            }
            // A group failed as a whole: commit its pages one by one so each
            // entity gets its own page's fate, not another's.
            Err(error) => {
                tracing::warn!(%error, pages = group.len(), "group commit failed; committing its pages one by one");
                for (job, reply) in group {
                    let result = engine
                        .commit_pages(&[job.write()])
                        .await
                        .map(|mut outcomes| outcomes.remove(0));
                    let _ = reply.send((job.page, result));
                }
            }
        }
    }
}
