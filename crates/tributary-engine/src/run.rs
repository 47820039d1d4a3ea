//! A run's lifecycle: the connection's lock, starting or resuming the run,
//! scheduling its entities in dependency order, and how it ended
//! ([`RunReport`], [`EntityReport`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::StreamExt;
use tributary_core::{RunKind, RunState};
use tributary_manifest::Delta;
use tributary_source::Source;
use tributary_store::{
    Checkpoint, Connection, ConnectionLock, ConnectionStatus, EntityState, Run, RunStart,
};

use crate::committer::Committer;
use crate::entity::{EntityJob, Scan};
use crate::retry::{Failure, RunControl, SHUTTING_DOWN};
use crate::{Engine, Error, Progress, Result, Spool, holder};

/// How one entity ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityReport {
    /// Entity.
    pub entity: String,
    /// Final state.
    pub state: EntityState,
    /// Records committed (all runs of this entity in this run, resumed ones
    /// included).
    pub records: i64,
    /// Pages committed.
    pub pages: i64,
    /// Requests the API answered for it in this invocation (pages read
    /// from the API; a resumed run's spooled pages are not requests).
    pub requests: u64,
    /// Records a reconciliation marked deleted (cascades included).
    pub deleted: i64,
    /// Why it failed.
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run as stored at the end.
    pub run: Run,
    /// Whether an unfinished run was resumed.
    pub resumed: bool,
    /// A delta was asked for before any full sync of the connection had
    /// finished an entity: this run is a full sync instead.
    pub full_instead_of_delta: bool,
    /// A reconciliation's deletion phase: what it deleted, held back for
    /// approval, or skipped and why.
    pub deletions: Option<crate::Deletions>,
    /// Per entity, in wave order.
    pub entities: Vec<EntityReport>,
    /// Wall time of this invocation.
    pub elapsed: Duration,
    /// Set when the source refused the credentials for good: the run
    /// stopped, and the connection needs re-authorisation.
    pub needs_reauth: Option<String>,
    /// Retries spent by this invocation.
    pub retries: u64,
    /// Pages read from the spool (fetched by a process that died before
    /// committing them) instead of the API.
    pub spooled: u64,
}

/// `name` finished (in any way): each entity depending on it waits for one
/// entity less, and is ready when it waits for none.
fn release_dependents<'a>(
    name: &str,
    dependents: &HashMap<&'a str, Vec<&'a str>>,
    waiting_for: &mut HashMap<&'a str, usize>,
    ready: &mut VecDeque<&'a str>,
) {
    for &dependent in dependents.get(name).into_iter().flatten() {
        if let Some(count) = waiting_for.get_mut(dependent) {
            *count -= 1;
            if *count == 0 {
                ready.push_back(dependent);
            }
        }
    }
}

/// A task stopped when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    /// Runs (or resumes) a full sync of `connection` from `source`: every
    /// record of every entity, wave by wave.
    pub async fn full_sync(
        &self,
        connection: &Connection,
        source: &Source,
        progress: Arc<dyn Progress>,
    ) -> Result<RunReport> {
        self.full_sync_of(connection, source, None, progress).await
    }

    /// [`Self::full_sync`] of some entities only (`None`: all of them). An
    /// entity listed under a parent walks the parents already in the store.
    pub async fn full_sync_of(
        &self,
        connection: &Connection,
        source: &Source,
        only: Option<&[String]>,
        progress: Arc<dyn Progress>,
    ) -> Result<RunReport> {
        let lock = self.lock(&connection.name).await?;
        self.full_sync_locked(&lock, connection, source, only, progress)
            .await
    }

    /// Takes the right to run the syncs of the connection named
    /// `connection`, held until the lock is dropped: a second process (or a
    /// second taker in this one) is refused with [`Error::Store`]
    /// ([`tributary_store::Error::Busy`]), naming this process. Take it
    /// before changing anything of the connection.
    pub async fn lock(&self, connection: &str) -> Result<ConnectionLock> {
        Ok(self
            .store
            .lock_connection(connection, &holder::describe(self.clock.now()))
            .await?)
    }

    /// [`Self::full_sync_of`] under a lock the caller took with
    /// [`Self::lock`] (and holds until this returns).
    pub async fn full_sync_locked(
        &self,
        lock: &ConnectionLock,
        connection: &Connection,
        source: &Source,
        only: Option<&[String]>,
        progress: Arc<dyn Progress>,
    ) -> Result<RunReport> {
        self.sync_locked(lock, connection, source, RunKind::Full, only, progress)
            .await
    }

    /// Runs (or resumes) a sync of `kind` — [`RunKind::Full`] or
    /// [`RunKind::Delta`] — of some entities (`None`: all) under a lock the
    /// caller took with [`Self::lock`].
    ///
    /// A delta reads, per entity, what changed since its high-water mark
    /// less [`EngineOptions::delta_overlap`], by the manifest's strategy:
    /// `filter` and `parent_include` ask the API for the records changed
    /// since then; `parent` reads again the children of the parents this
    /// run created or changed; `full_scan` reads every record and keeps
    /// only what changed (by content hash). An entity never read whole is
    /// read whole; a delta of a connection no full sync has finished an
    /// entity of is a full sync, and its report says so.
    ///
    /// [`EngineOptions::delta_overlap`]: crate::EngineOptions::delta_overlap
    pub async fn sync_locked(
        &self,
        lock: &ConnectionLock,
        connection: &Connection,
        source: &Source,
        kind: RunKind,
        only: Option<&[String]>,
        progress: Arc<dyn Progress>,
    ) -> Result<RunReport> {
        self.sync_keyed(lock, connection, source, kind, only, None, progress)
            .await
    }

    /// [`Self::sync_locked`] with an idempotency key (e.g. connection, kind
    /// and schedule slot): a request whose key names a run already made
    /// returns that run — finished, it is reported as it ended and nothing
    /// runs; unfinished, it is resumed.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync_keyed(
        &self,
        lock: &ConnectionLock,
        connection: &Connection,
        source: &Source,
        kind: RunKind,
        only: Option<&[String]>,
        idempotency_key: Option<&str>,
        progress: Arc<dyn Progress>,
    ) -> Result<RunReport> {
        if lock.connection() != connection.name {
            return Err(Error::WrongLock(
                lock.connection().to_owned(),
                connection.name.clone(),
            ));
        }
        let started = Instant::now();
        let manifest = source.manifest().clone();
        if let Some(unknown) = only
            .into_iter()
            .flatten()
            .find(|name| !manifest.entities.contains_key(name.as_str()))
        {
            let known: Vec<&str> = manifest.entities.keys().map(String::as_str).collect();
            return Err(Error::UnknownEntity(unknown.clone(), known.join(", ")));
        }
        let selected = |name: &str| only.is_none_or(|only| only.iter().any(|o| o == name));
        // The request budget, for progress displays, while the run lasts.
        // (Stopped when dropped, however this returns.)
        let _budget_ticker = (source.rate_status().limit != u32::MAX).then(|| {
            let (source, progress) = (source.clone(), progress.clone());
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    progress.budget(&source.rate_status());
                }
            }))
        });
        // A run resumes only a run of the same scope: its entities and its
        // API (checkpoints of another account's pages mean nothing here).
        let scope = format!(
            "{} {}",
            source.base_url(),
            match only {
                None => "*".to_owned(),
                Some(only) => {
                    let mut names = only.to_vec();
                    names.sort();
                    names.dedup();
                    names.join(",")
                }
            }
        );
        if kind == RunKind::Webhook {
            return self.apply_webhooks(connection, source, started).await;
        }
        if !matches!(kind, RunKind::Full | RunKind::Delta | RunKind::Reconcile) {
            return Err(Error::UnsupportedKind(kind.as_str()));
        }
        let marks: HashMap<String, tributary_core::Timestamp> =
            self.store.marks(connection.id).await?.into_iter().collect();
        let full_instead_of_delta = kind == RunKind::Delta && marks.is_empty();
        let kind = if full_instead_of_delta {
            tracing::info!(connection = %connection.name, "no full sync has finished yet: running a full sync instead of a delta");
            RunKind::Full
        } else {
            kind
        };
        let (run, resumed) = match self
            .store
            .start_run(
                connection.id,
                kind,
                Some(&scope),
                idempotency_key,
                self.clock.now(),
            )
            .await?
        {
            RunStart::New(run) => (run, false),
            RunStart::Resumed(run) => (run, true),
            RunStart::Finished(run) => {
                tracing::info!(
                    run = run.id,
                    key = idempotency_key,
                    "the run this request names has ended: nothing to do"
                );
                return Ok(RunReport {
                    run,
                    resumed: false,
                    full_instead_of_delta: false,
                    deletions: None,
                    entities: Vec::new(),
                    elapsed: started.elapsed(),
                    needs_reauth: None,
                    retries: 0,
                    spooled: 0,
                });
            }
        };
        tracing::info!(run = run.id, connection = %connection.name, kind = kind.as_str(), resumed, "sync started");

        let mut checkpoints: HashMap<String, Checkpoint> = self
            .store
            .checkpoints(run.id)
            .await?
            .into_iter()
            .map(|c| (c.entity.clone(), c))
            .collect();
        // A reconciliation lists every entity whole in one invocation: the
        // ids it saw live in memory, so a resumed one lists afresh.
        if kind == RunKind::Reconcile {
            checkpoints.clear();
        }
        let mut reports = Vec::new();
        let control = Arc::new(RunControl::new(
            self.options.retry_budget,
            self.stop.subscribe(),
        ));
        // Every page of the run commits through it; it stops with the last
        // entity task.
        let committer = Committer::start(self.clone());
        let spool = self.options.spool_dir.as_ref().and_then(|root| {
            // Ids start at 1 in every database: the run's start time, the
            // connection's name and URL and the page size tell this run's
            // spool from another's (a page of another size would page on
            // differently).
            let identity = format!(
                "{}\n{}\n{}\n{}",
                run.started_at.to_rfc3339(),
                connection.name,
                connection.base_url,
                source.page_size()
            );
            Spool::open(root, connection.id, run.id, &identity, self.clock.clone())
                .map_err(|error| {
                    tracing::warn!(%error, dir = %root.display(), "cannot open the spool; fetched pages are kept in memory only");
                })
                .ok()
                .map(Arc::new)
        });

        // Entities start as soon as every entity they depend on (hard or
        // soft) has finished — not when their whole wave has: an entity of
        // a later wave whose own dependencies are done already runs beside
        // the rest of the earlier wave. (The waves are this order's
        // summary: every entity of one wave can run at once.) Each entity
        // counts the dependencies it still waits for, so the bookkeeping
        // is linear in the graph however many entities are skipped.
        let order: Vec<String> = manifest
            .graph
            .waves()
            .iter()
            .flatten()
            .filter(|name| selected(name))
            .cloned()
            .collect();
        let mut waiting_for: HashMap<&str, usize> =
            order.iter().map(|name| (name.as_str(), 0)).collect();
        let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut hard_dependencies: HashMap<&str, Vec<&str>> = HashMap::new();
        for dependency in manifest.graph.dependencies() {
            if !(selected(&dependency.from) && selected(&dependency.to)) {
                continue;
            }
            *waiting_for.entry(dependency.from.as_str()).or_default() += 1;
            dependents
                .entry(dependency.to.as_str())
                .or_default()
                .push(dependency.from.as_str());
            if dependency.kind == tributary_manifest::DependencyKind::Hard {
                hard_dependencies
                    .entry(dependency.from.as_str())
                    .or_default()
                    .push(dependency.to.as_str());
            }
        }
        let mut ready: VecDeque<&str> = order
            .iter()
            .map(String::as_str)
            .filter(|name| waiting_for[name] == 0)
            .collect();
        // An entity finished (in any way): its dependents wait for one less.
        let release = |name: &str, waiting_for: &mut _, ready: &mut _| {
            release_dependents(name, &dependents, waiting_for, ready);
        };
        // Entity → (why it failed, whether the cause may pass).
        let mut failed: HashMap<String, (String, bool)> = HashMap::new();
        // Requests per entity, failed ones included.
        let requests: HashMap<&str, Arc<AtomicU64>> = order
            .iter()
            .map(|name| (name.as_str(), Arc::default()))
            .collect();
        let requests_of = |name: &str| requests[name].load(Ordering::Relaxed);
        let seen = (kind == RunKind::Reconcile)
            .then(|| crate::reconcile::seen_sets(order.iter().map(String::as_str)));
        let overlap = self.options.delta_overlap;
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            while let Some(name) = ready.pop_front() {
                let entity = Arc::new(manifest.entities[name].clone());
                let checkpoint = checkpoints.remove(name);
                if let Some(cp) = &checkpoint
                    && cp.state == EntityState::Done
                {
                    progress.entity_started(name, cp.records, cp.total);
                    progress.entity_finished(name, EntityState::Done, None);
                    reports.push(EntityReport {
                        entity: name.to_owned(),
                        state: EntityState::Done,
                        records: cp.records,
                        pages: cp.pages,
                        requests: 0,
                        deleted: 0,
                        error: None,
                    });
                    release(name, &mut waiting_for, &mut ready);
                    continue;
                }
                let shutting_down = control.shutting_down();
                let blocked = match control.stopped() {
                    Some(reason) => Some(format!("not started: {reason}")),
                    None if shutting_down => Some(format!("not started: {SHUTTING_DOWN}")),
                    None => hard_dependencies
                        .get(name)
                        .into_iter()
                        .flatten()
                        .find(|dep| failed.contains_key(**dep))
                        .map(|dep| format!("skipped: it depends on {dep}, which failed")),
                };
                if let Some(error) = blocked {
                    self.record_failed(run.id, name, &error).await;
                    progress.entity_finished(name, EntityState::Failed, Some(&error));
                    // Neither transient nor permanent: it goes with its
                    // cause (a shutdown's passes).
                    failed.insert(name.to_owned(), (error.clone(), shutting_down));
                    reports.push(EntityReport {
                        entity: name.to_owned(),
                        state: EntityState::Failed,
                        records: checkpoint.as_ref().map_or(0, |c| c.records),
                        pages: checkpoint.as_ref().map_or(0, |c| c.pages),
                        requests: 0,
                        deleted: 0,
                        error: Some(error),
                    });
                    release(name, &mut waiting_for, &mut ready);
                    continue;
                }
                let scan = match (kind, &entity.delta, marks.get(name)) {
                    (
                        RunKind::Delta,
                        Delta::Filter { .. }
                        | Delta::ParentInclude { .. }
                        | Delta::NewestFirst { .. },
                        Some(mark),
                    ) => Scan::Since(*mark - overlap),
                    (RunKind::Delta, Delta::Parent, Some(_)) if entity.parent.is_some() => {
                        Scan::ChangedParents
                    }
                    _ => Scan::All,
                };
                let job = EntityJob {
                    engine: self.clone(),
                    source: source.clone(),
                    connection_id: connection.id,
                    run_id: run.id,
                    entity,
                    checkpoint,
                    progress: progress.clone(),
                    control: control.clone(),
                    committer: committer.clone(),
                    spool: spool.clone(),
                    scan,
                    run_started: run.started_at,
                    requests: requests[name].clone(),
                    seen: seen.as_ref().map(|sets| sets[name].clone()),
                };
                // At WARN level so that the span (and its run / connection /
                // entity fields) is on every warning and error even when
                // info-level logging is off.
                let entity_span = tracing::warn_span!("entity", run = run.id, connection = %connection.name, entity = %name);
                let task = tokio::spawn(tracing::Instrument::instrument(job.run(), entity_span));
                running.push(async move { (name, task.await) });
            }
            let Some((name, joined)) = running.next().await else {
                break;
            };
            let outcome = joined.unwrap_or_else(|panic| {
                Err(Failure::other(format!("entity task panicked: {panic}")))
            });
            match outcome {
                Ok(report) => reports.push(report),
                Err(Failure {
                    message: error,
                    auth,
                    transient,
                }) => {
                    if auth {
                        control.stop(&format!("the connection needs re-authorisation ({error})"));
                    }
                    tracing::error!(entity = %name, %error, "entity failed");
                    // Pages the entity queued before it failed settle
                    // first; none queued after commits, so the failure
                    // recorded next is the last word on its state.
                    committer.fence(run.id, name).await;
                    self.record_failed(run.id, name, &error).await;
                    progress.entity_finished(name, EntityState::Failed, Some(&error));
                    let cp = self
                        .store
                        .checkpoints(run.id)
                        .await
                        .ok()
                        .into_iter()
                        .flatten()
                        .find(|c| c.entity == name);
                    reports.push(EntityReport {
                        entity: name.to_owned(),
                        state: EntityState::Failed,
                        records: cp.as_ref().map_or(0, |c| c.records),
                        pages: cp.as_ref().map_or(0, |c| c.pages),
                        requests: requests_of(name),
                        deleted: 0,
                        error: Some(error.clone()),
                    });
                    failed.insert(name.to_owned(), (error, transient && !auth));
                }
            }
            release(name, &mut waiting_for, &mut ready);
        }
        let position: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        reports.sort_by_key(|r| position.get(r.entity.as_str()).copied());

        drop(committer);
        if let Some(spool) = spool {
            spool.close();
        }
        let needs_reauth = control.stopped();
        // A reconciliation deletes what its complete listings did not see.
        let mut deletions = None;
        if let (Some(seen), None) = (&seen, &needs_reauth) {
            let mut complete = Vec::new();
            let mut incomplete = std::collections::BTreeMap::new();
            for report in &reports {
                let name = report.entity.as_str();
                match (&report.error, report.state) {
                    (None, EntityState::Done) => {
                        let ids = std::mem::take(
                            &mut *seen[name].lock().unwrap_or_else(|p| p.into_inner()),
                        );
                        complete.push((report.entity.clone(), ids));
                    }
                    (error, _) => {
                        incomplete.insert(
                            report.entity.clone(),
                            error.clone().unwrap_or_else(|| "it did not finish".into()),
                        );
                    }
                }
            }
            match self
                .delete_missing(crate::reconcile::Listed {
                    run_id: run.id,
                    connection_id: connection.id,
                    source,
                    complete,
                    incomplete,
                    control: &control,
                    progress: progress.as_ref(),
                })
                .await
            {
                Ok(done) => {
                    for report in &mut reports {
                        report.deleted = done.deleted.get(&report.entity).copied().unwrap_or(0);
                        let asked = done.confirmations.get(&report.entity).copied().unwrap_or(0);
                        report.requests += asked;
                        if let Some(counter) = requests.get(report.entity.as_str()) {
                            counter.fetch_add(asked, Ordering::Relaxed);
                        }
                    }
                    deletions = Some(done);
                }
                Err(error) => {
                    let transient = matches!(&error, Error::Store(e) if e.is_transient());
                    failed.insert(
                        "(deletions)".to_owned(),
                        (
                            format!("deleting what the source no longer has failed: {error}"),
                            transient,
                        ),
                    );
                }
            }
        }
        let held = deletions
            .as_ref()
            .and_then(|d| d.held_message(run.id, self.options.delete_guard));
        // Only stored credentials make a connection need re-authorisation;
        // a token given for one run says nothing about them.
        if let Some(reason) = needs_reauth
            .as_ref()
            .filter(|_| source.persists_credentials())
        {
            // Best effort: the run's end (below) is recorded either way.
            if let Err(error) = self
                .store
                .set_connection_status(
                    connection.id,
                    ConnectionStatus::NeedsReauth,
                    Some(reason),
                    self.clock.now(),
                )
                .await
            {
                tracing::error!(%error, "cannot mark the connection as needing re-authorisation");
            }
            tracing::error!(run = run.id, connection = %connection.name, %reason, "run stopped");
        }
        let (state, error) = if let Some(reason) = &needs_reauth {
            (RunState::Failed, Some(format!("stopped: {reason}")))
        } else if let Some(held) = held {
            let failures: Vec<String> = failed
                .iter()
                .map(|(entity, (error, _))| format!("{entity}: {error}"))
                .collect();
            let error = if failures.is_empty() {
                held
            } else {
                format!("{held}; {}", failures.join("; "))
            };
            (RunState::WaitingApproval, Some(error))
        } else if failed.is_empty() {
            (RunState::Succeeded, None)
        } else {
            let mut names: Vec<_> = failed.iter().collect();
            names.sort();
            let summary = names
                .iter()
                .map(|(entity, (error, _))| format!("{entity}: {error}"))
                .collect::<Vec<_>>()
                .join("; ");
            (RunState::Failed, Some(summary))
        };
        // A run that failed for a cause that may pass is resumed by the
        // next request of its kind; one that met a permanent error only
        // (or refused credentials) stays failed, and the next request
        // starts afresh.
        let resumable = needs_reauth.is_none() && failed.values().any(|(_, transient)| *transient);
        // Recording the end can fail for the reason the run failed (a full
        // disk): the run then stays `running` in the store, which the next
        // request of its kind resumes — as after a crash — and the report
        // says how it ended.
        let requests_made: u64 = requests.values().map(|r| r.load(Ordering::Relaxed)).sum();
        if let Err(failure) = self
            .store
            .add_run_usage(run.id, requests_made, control.retries())
            .await
        {
            tracing::warn!(run = run.id, error = %failure, "cannot record the run's requests and retries");
        }
        let unrecorded = self
            .store
            .finish_run(run.id, state, error.as_deref(), resumable, self.clock.now())
            .await
            .err();
        if let Some(failure) = &unrecorded {
            tracing::error!(run = run.id, error = %failure, "cannot record how the run ended; the next sync of its kind resumes it");
        }
        tracing::info!(run = run.id, connection = %connection.name, kind = kind.as_str(), state = state.as_str(), "sync finished");
        // As stored (with this invocation's counters); as known here if the
        // store cannot be read either.
        let mut run = match self.store.run(run.id).await {
            Ok(Some(stored)) => stored,
            Ok(None) | Err(_) => Run {
                finished_at: Some(self.clock.now()),
                ..run
            },
        };
        if unrecorded.is_some() {
            run.state = state;
            run.error = error;
            run.resumable = state == RunState::Failed;
        }
        Ok(RunReport {
            run,
            resumed,
            full_instead_of_delta,
            deletions,
            entities: reports,
            elapsed: started.elapsed(),
            needs_reauth,
            retries: control.retries(),
            spooled: control.spooled.load(Ordering::Relaxed),
        })
    }

    /// Records that `entity` failed (or was skipped). Best effort: the store
    /// may be failing for the very reason the entity did (a full disk), and
    /// the run's error names the entity's failure either way.
    async fn record_failed(&self, run_id: i64, entity: &str, error: &str) {
        if let Err(failure) = self
            .store
            .set_entity_state(
                run_id,
                entity,
                EntityState::Failed,
                Some(error),
                self.clock.now(),
            )
            .await
        {
            tracing::warn!(%entity, error = %failure, "cannot record an entity's failure");
        }
    }
}
