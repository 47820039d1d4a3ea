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
use tributary_core::Timestamp;
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
    /// The page, with the checkpoint it moves its entity to.
    pub(crate) page: PreparedPage,
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
            cursor: &self.page.cursor_after,
            finished: self.page.finished,
            total: self.page.total,
            mark: self.page.mark,
            now: self.now,
        }
    }
}

/// A committed (or refused) page, handed back to its entity task.
pub(crate) type Answer = (PreparedPage, Result<PageOutcome, tributary_store::Error>);

type Queued = (Job, oneshot::Sender<Answer>);

/// What a lane receives.
enum Message {
    /// A page to commit (boxed: a fence is small, a page is not).
    Page(Box<Queued>),
    /// An entity failed (its task ended, or panicked): none of its pages
    /// queued after this commits. Answered once every page queued before
    /// it has been dealt with.
    Fence {
        run_id: i64,
        entity: Arc<str>,
        done: oneshot::Sender<()>,
    },
}

/// The handle entity tasks commit through. Cheap to clone; the committer
/// stops when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Committer {
    lanes: Arc<[mpsc::Sender<Message>]>,
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
        let lane = self.lane(job.run_id, &job.entity);
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(Message::Page(queued))) =
            lane.send(Message::Page(Box::new((job, reply)))).await
        {
            let (job, reply) = *queued;
            let _ = reply.send((job.page, Err(stopped())));
        }
        answer
    }

    /// Marks `entity` failed: the pages it queued before commit (or fail)
    /// first, none it queued after commits. Returns once that is settled,
    /// so the caller's own record of the failure is the last word.
    pub(crate) async fn fence(&self, run_id: i64, entity: &str) {
        let (done, settled) = oneshot::channel();
        let message = Message::Fence {
            run_id,
            entity: entity.into(),
            done,
        };
        if self.lane(run_id, entity).send(message).await.is_ok() {
            let _ = settled.await;
        }
    }

    fn lane(&self, run_id: i64, entity: &str) -> &mpsc::Sender<Message> {
        let mut hasher = DefaultHasher::new();
        (run_id, entity).hash(&mut hasher);
        &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize]
    }
}

fn stopped() -> tributary_store::Error {
    tributary_store::Error::NotFound("the run's committer (it stopped)".into())
}

/// Takes the next group: the first queued page and the pages queued
/// behind it, up to a fence (kept in `ahead` for the next call).
async fn next_group(
    receiver: &mut mpsc::Receiver<Message>,
    ahead: &mut Option<Message>,
) -> Option<Next> {
    let first = match ahead.take() {
        Some(message) => message,
        None => receiver.recv().await?,
    };
    let first = match first {
        Message::Page(page) => *page,
        Message::Fence {
            run_id,
            entity,
            done,
        } => return Some(Next::Fence(run_id, entity, done)),
    };
    let mut records = first.0.page.records.len();
    let mut group = vec![first];
    while group.len() < MAX_PAGES && records < MAX_RECORDS {
        match receiver.try_recv() {
            Ok(Message::Page(next)) => {
                records += next.0.page.records.len();
                group.push(*next);
            }
            Ok(fence) => {
                *ahead = Some(fence);
                break;
            }
            Err(_) => break,
        }
    }
    Some(Next::Group(group))
}

/// What a lane does next.
enum Next {
    Group(Vec<Queued>),
    Fence(i64, Arc<str>, oneshot::Sender<()>),
}

async fn run(engine: Engine, mut receiver: mpsc::Receiver<Message>) {
    // Entities (of a run) one of whose pages failed to commit, or that
    // failed otherwise: their later pages must not commit, or the
    // checkpoint would skip the failed one (or overwrite the failure).
    let mut failed: HashSet<(i64, Arc<str>)> = HashSet::new();
    let mut ahead = None;
    while let Some(next) = next_group(&mut receiver, &mut ahead).await {
        let group = match next {
            Next::Group(group) => group,
            Next::Fence(run_id, entity, done) => {
                failed.insert((run_id, entity));
                let _ = done.send(());
                continue;
            }
        };
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tributary_core::{Clock, Cursor, PreparedRecord, RunKind, SourceRecord, SystemClock};
    use tributary_store::{NewConnection, SqliteStore, Store};

    use super::*;
    use crate::EngineOptions;

    fn page(id: &str) -> PreparedPage {
        PreparedPage {
            records: vec![PreparedRecord::new(SourceRecord {
                entity: "Person".into(),
                external_id: id.into(),
                source_updated_at: None,
                raw: json!({"type": "Person", "id": id}).into(),
                canonical: json!({}),
                edges: vec![],
            })],
            quarantined: vec![],
            cursor_after: Cursor::start(),
            finished: false,
            total: None,
            mark: None,
            high_water: None,
            spool_keys: vec![],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fenced_entity_commits_what_it_queued_before_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db").display().to_string();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let now = SystemClock.now();
        let connection = store
            .ensure_connection(
                NewConnection {
                    name: "c",
                    adapter: "pco",
                    base_url: "http://127.0.0.1:1",
                },
                now,
            )
            .await
            .unwrap();
        let run = store
            .start_run(connection.id, RunKind::Full, None, None, now)
            .await
            .unwrap()
            .run()
            .id;
        let engine = Engine::new(
            store.clone(),
            Arc::new(SystemClock),
            EngineOptions::default(),
        );
        let committer = Committer::start(engine);
        let job = |id: &str, offset: u64| Job {
            connection_id: connection.id,
            run_id: run,
            entity: "Person".into(),
            canonical_entity: "Person".into(),
            page: PreparedPage {
                cursor_after: Cursor(json!({ "offset": offset })),
                ..page(id)
            },
            now,
        };
        let before = committer.submit(job("1", 1)).await;
        committer.fence(run, "Person").await;
        let after = committer.submit(job("2", 2)).await;
        assert!(before.await.unwrap().1.is_ok(), "queued before: committed");
        assert!(after.await.unwrap().1.is_err(), "queued after: refused");
        assert!(
            store
                .record(connection.id, "Person", "1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .record(connection.id, "Person", "2")
                .await
                .unwrap()
                .is_none()
        );
        let checkpoints = store.checkpoints(run).await.unwrap();
        assert_eq!(checkpoints[0].cursor, Cursor(json!({ "offset": 1 })));
    }
}
