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

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
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
    lanes: Arc<[mpsc::Sender<Queued>]>,
}

impl Committer {
    /// Starts the committer of one run, committing with `engine`'s store
    /// and commit retries: one lane per [`Store::commit_lanes`], each a
    /// task committing the groups of its own queue.
    ///
    /// [`Store::commit_lanes`]: tributary_store::Store::commit_lanes
    pub(crate) fn start(engine: Engine) -> Self {
        let lanes = engine.store().commit_lanes().max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes)
            // Room for every entity task of a wave to queue its pages.
            .map(|_| mpsc::channel(256))
            .unzip();
        // The committer runs on a thread of its own: on the shared runtime
        // it would wait behind the fetch tasks' parsing for every
        // statement's answer, and the database — the bottleneck — would sit
        // idle (a quarter more throughput on a 2-core machine).
        let spawned = std::thread::Builder::new()
            .name("tributary-committer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        // Dropping the receivers fails every commit with
                        // "the committer stopped".
                        tracing::error!(%error, "cannot start the committer's runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    // Connections that belong to another runtime are not
                    // used from this one: the store may hand out its own.
                    let own = match engine.store().for_another_runtime().await {
                        Ok(own) => own,
                        Err(error) => {
                            tracing::error!(%error, "cannot connect the committer to the store");
                            return;
                        }
                    };
                    let engine = match &own {
                        Some(store) => engine.with_store(store.clone()),
                        None => engine,
                    };
                    let lanes: Vec<_> = receivers
                        .into_iter()
                        .map(|receiver| tokio::spawn(run(engine.clone(), receiver)))
                        .collect();
                    for lane in lanes {
                        let _ = lane.await;
                    }
                    if let Some(store) = own {
                        store.close().await;
                    }
                });
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the committer's thread");
        }
        Self {
            lanes: senders.into(),
        }
    }

    /// Queues `job`'s page and returns where its answer will come: once the
    /// transaction holding it committed (or failed), the page is handed
    /// back. Every page of one entity goes to the same lane, so an entity's
    /// pages commit in the order they were queued, and none commits after
    /// an earlier one failed.
    pub(crate) async fn submit(&self, job: Job) -> oneshot::Receiver<Answer> {
        let mut hasher = DefaultHasher::new();
        (job.run_id, &*job.entity).hash(&mut hasher);
        let lane = &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((job, reply))) = lane.send((job, reply)).await {
            let _ = reply.send((job.page, Err(stopped())));
        }
        answer
    }
}

fn stopped() -> tributary_store::Error {
    tributary_store::Error::NotFound("the run's committer (it stopped)".into())
}

/// Takes the next group: the first queued page and whatever queued behind
/// it.
async fn next_group(receiver: &mut mpsc::Receiver<Queued>) -> Option<Vec<Queued>> {
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

async fn run(engine: Engine, mut receiver: mpsc::Receiver<Queued>) {
    // Entities (of a run) one of whose pages failed to commit: their later
    // pages must not commit, or the checkpoint would skip the failed one.
    let mut failed: HashSet<(i64, Arc<str>)> = HashSet::new();
    while let Some(group) = next_group(&mut receiver).await {
        let (group, refused): (Vec<Queued>, Vec<Queued>) = group
            .into_iter()
            .partition(|(job, _)| !failed.contains(&(job.run_id, job.entity.clone())));
        for (job, reply) in refused {
            let error = tributary_store::Error::NotFound(format!(
                "an earlier page of {} failed to commit; not committing later ones",
                job.entity
            ));
            let _ = reply.send((job.page, Err(error)));
        }
        if group.is_empty() {
            continue;
        }
        let writes: Vec<PageWrite<'_>> = group.iter().map(|(job, _)| job.write()).collect();
        let result = engine.commit_pages(&writes).await;
        drop(writes);
        match result {
            Ok(outcomes) => {
                for ((job, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send((job.page, Ok(outcome)));
                }
            }
            // A group failed as a whole (or a page alone): commit its pages
            // one by one so each entity gets its own page's fate, not
            // another's.
            Err(error) => {
                if group.len() > 1 {
                    tracing::warn!(%error, pages = group.len(), "group commit failed; committing its pages one by one");
                }
                let alone = group.len() == 1;
                let mut error = Some(error);
                for (job, reply) in group {
                    let key = (job.run_id, job.entity.clone());
                    let result = if failed.contains(&key) {
                        Err(tributary_store::Error::NotFound(format!(
                            "an earlier page of {} failed to commit; not committing later ones",
                            job.entity
                        )))
                    } else if alone {
                        Err(error.take().expect("one page, one error"))
                    } else {
                        engine
                            .commit_pages(&[job.write()])
                            .await
                            .map(|mut outcomes| outcomes.remove(0))
                    };
                    if result.is_err() {
                        failed.insert(key);
                    }
                    let _ = reply.send((job.page, result));
                }
            }
        }
    }
}
