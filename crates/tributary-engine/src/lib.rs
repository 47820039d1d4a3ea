//! The sync engine.
//!
//! The engine turns a request ("full sync of connection X") into a durable
//! run: it walks the manifest's dependency waves (the entities of one wave in
//! parallel), pulls pages from the [`Source`], prepares them (serialise,
//! hash, de-duplicate) and commits each page with its checkpoint in one
//! store transaction. A run left unfinished by a crash is resumed from the
//! last committed page of each entity.
//!
//! Architecture invariant: the engine is the only component that commits.
//! Sources never see the store; the store never sees HTTP. The engine — not
//! the source — decides retries and backoff.

mod committer;
mod credentials;
mod holder;
mod progress;
mod spool;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tributary_core::{Clock, Cursor, PreparedRecord, RunKind, RunState};
use tributary_manifest::Entity;
use tributary_source::{ErrorClass, Page, Source};
use tributary_store::{
    Checkpoint, Connection, ConnectionLock, ConnectionStatus, EntityState, PageOutcome, PageWrite,
    Run, RunStart, Store,
};

use committer::Committer;

pub use credentials::{CredentialsError, SealedCredentialStore};
pub use progress::{NoProgress, Progress};
pub use spool::Spool;

/// Engine errors: what stops a run as a whole (entity failures are recorded
/// in the run instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tributary_store::Error),
    /// The request names an entity the manifest does not have.
    #[error("unknown entity `{0}`: the manifest has {1}")]
    UnknownEntity(String, String),
    /// A sync was asked to run under another connection's lock.
    #[error("the lock held is connection `{0}`'s, not `{1}`'s")]
    WrongLock(String, String),
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tuning knobs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Attempts per request (and per commit) before an entity fails.
    pub max_attempts: usize,
    /// First backoff.
    pub min_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Parents per committed page when an entity is listed under a parent.
    pub parent_batch: u32,
    /// Pages of one entity fetched ahead of their commit, or committing,
    /// at once (at least 1). More keeps the committer's groups full; with a
    /// spool a crash still costs only the requests in flight.
    pub prefetch: usize,
    /// Where fetched pages wait for their commit (see [`Spool`]); `None`:
    /// in memory only, so a crash loses the fetched pages that had not
    /// committed and the resumed run fetches them again.
    pub spool_dir: Option<PathBuf>,
    /// Retries a run may spend across all its entities before failing
    /// requests are given up on: an API that keeps failing stops the run
    /// instead of being hammered for hours.
    pub retry_budget: u32,
    /// Pages of one list fetched at once, once the API has said how long
    /// the list is (offset paging: the next pages' cursors are known); they
    /// still commit in order. 1: one request at a time. The rate budget
    /// bounds them like any request.
    pub list_window: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            parent_batch: 64,
            prefetch: 4,
            spool_dir: None,
            retry_budget: 5_000,
            list_window: 4,
        }
    }
}

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

/// The sync engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: EngineOptions,
}

/// A page fetched and prepared for the store.
struct PreparedPage {
    records: Vec<PreparedRecord>,
    quarantined: Vec<tributary_core::QuarantinedRecord>,
    /// The entity's checkpoint once this page has committed.
    cursor_after: Cursor,
    finished: bool,
    total: Option<i64>,
    /// The spool entries the page was fetched as (its cursor; its
    /// parents' ids for children), removed once it has committed.
    spool_keys: Vec<String>,
}

impl PreparedPage {
    fn new(page: Page, spool_keys: Vec<String>) -> Self {
        Self {
            records: dedupe(page.records.into_iter().map(PreparedRecord::new).collect()),
            quarantined: page.quarantined,
            cursor_after: page.next,
            finished: page.finished,
            total: page.total,
            spool_keys,
        }
    }
}

/// Keeps the last copy of each external id (offset paging over a changing
/// collection can repeat an object within a page).
fn dedupe(records: Vec<PreparedRecord>) -> Vec<PreparedRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut out: Vec<PreparedRecord> = records
        .into_iter()
        .rev()
        .filter(|r| seen.insert(r.external_id.clone()))
        .collect();
    out.reverse();
    out
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

/// What every task of one run shares: the retry budget, and the reason to
/// stop when the source refused the credentials for good.
#[derive(Debug)]
struct RunControl {
    budget: u32,
    retries: AtomicU64,
    stop: Mutex<Option<String>>,
    /// Pages read from the spool instead of the API.
    spooled: AtomicU64,
}

impl RunControl {
    fn new(budget: u32) -> Self {
        Self {
            budget,
            retries: AtomicU64::new(0),
            stop: Mutex::new(None),
            spooled: AtomicU64::new(0),
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    fn take_retry(&self) -> bool {
        self.retries.fetch_add(1, Ordering::Relaxed) < u64::from(self.budget)
    }

    fn retries(&self) -> u64 {
        self.retries
            .load(Ordering::Relaxed)
            .min(u64::from(self.budget))
    }

    /// Why the run is stopping, if it is.
    fn stopped(&self) -> Option<String> {
        self.stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn stop(&self, reason: &str) {
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stop.get_or_insert_with(|| reason.to_owned());
    }
}

/// Why an entity task ended without finishing.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    /// The credentials were refused for good: the whole run stops.
    auth: bool,
    /// The cause may pass without anything changing (a retry budget spent
    /// on a stubborn API, a server that stopped answering, a full disk):
    /// the run is left for the next request of its kind to resume.
    transient: bool,
}

impl Failure {
    /// A failure that will happen again: a permanent API error, a protocol
    /// the engine cannot follow, a bug.
    fn other(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            auth: false,
            transient: false,
        }
    }

    /// A failure that a later attempt may not meet.
    fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::other(message)
        }
    }

    /// A store error met while committing or reading.
    fn store(context: &str, error: &tributary_store::Error) -> Self {
        let message = format!("{context}: {error}");
        if error.is_transient() {
            Self::transient(message)
        } else {
            Self::other(message)
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::other(message)
    }
}

/// How source requests are retried: exponential backoff (without backon's
/// own jitter — [`retrying`] applies full jitter) and the shortest wait.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    backoff: ExponentialBuilder,
    min_wait: Duration,
}

/// One source request with the engine's retry policy: transient and
/// rate-limited failures are retried with exponential backoff and full
/// jitter (a uniform wait between zero and the exponential bound), or after
/// exactly the `Retry-After` the API asked for; every retry is drawn from
/// the run's budget, logged with its class and reported. An auth failure
/// stops the whole run at once; a permanent one fails the request's entity.
async fn retrying<T, F, Fut>(
    policy: RetryPolicy,
    control: &RunControl,
    entity: &str,
    progress: &dyn Progress,
    mut request: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tributary_source::Error>>,
{
    let attempt = AtomicU64::new(0);
    let budget_spent = std::sync::atomic::AtomicBool::new(false);
    let result = (|| {
        let stopped = control.stopped();
        let call = stopped.is_none().then(&mut request);
        async move {
            match call {
                Some(call) => call.await.map_err(Some),
                None => Err(None),
            }
        }
    })
    .retry(policy.backoff)
    .when(|error: &Option<tributary_source::Error>| {
        error
            .as_ref()
            .is_some_and(tributary_source::Error::is_retryable)
    })
    .adjust(|error, wait| {
        // `None`: the attempts are used up.
        let wait = wait?;
        if !control.take_retry() {
            budget_spent.store(true, Ordering::Relaxed);
            return None;
        }
        Some(match error.as_ref().and_then(|e| e.retry_after()) {
            Some(asked) => asked.max(policy.min_wait),
            None => wait.mul_f64(fastrand::f64()),
        })
    })
    .notify(|error, wait| {
        let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(error) = error {
            tracing::warn!(
                class = ?error.class(),
                attempt = n,
                %error,
                ?wait,
                "request failed; retrying"
            );
            progress.retrying(entity, &error.to_string(), wait);
        }
    })
    .await;
    result.map_err(|error| match error {
        None => Failure::other(format!(
            "stopped: {}",
            control.stopped().unwrap_or_default()
        )),
        Some(error) if error.class() == ErrorClass::Auth => {
            // Every other task of the run stops at its next request.
            control.stop(&format!("the connection needs re-authorisation ({error})"));
            Failure {
                message: error.to_string(),
                auth: true,
                transient: false,
            }
        }
        Some(error) if budget_spent.load(Ordering::Relaxed) => Failure::transient(format!(
            "{error} (gave up: the run's retry budget of {} retries is spent)",
            control.budget
        )),
        Some(error) if error.is_retryable() => Failure::transient(format!(
            "{error} (gave up after {} attempts)",
            attempt.load(Ordering::Relaxed) + 1
        )),
        Some(error) => Failure::other(error.to_string()),
    })
}

/// Everything one entity task needs.
struct EntityJob {
    engine: Engine,
    source: Source,
    connection_id: i64,
    run_id: i64,
    entity: Arc<Entity>,
    checkpoint: Option<Checkpoint>,
    progress: Arc<dyn Progress>,
    control: Arc<RunControl>,
    committer: Committer,
    spool: Option<Arc<Spool>>,
}

impl Engine {
    /// An engine over `store`, with time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: EngineOptions) -> Self {
        Self {
            store,
            clock,
            options,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The same engine over another handle on its store.
    fn with_store(&self, store: Arc<dyn Store>) -> Self {
        Self {
            store,
            ..self.clone()
        }
    }

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
        let (run, resumed) = match self
            .store
            .start_run(
                connection.id,
                RunKind::Full,
                Some(&scope),
                None,
                self.clock.now(),
            )
            .await?
        {
            RunStart::New(run) => (run, false),
            RunStart::Resumed(run) => (run, true),
            RunStart::Finished(run) => (run, false),
        };
        tracing::info!(run = run.id, connection = %connection.name, kind = "full", resumed, "full sync started");

        let mut checkpoints: HashMap<String, Checkpoint> = self
            .store
            .checkpoints(run.id)
            .await?
            .into_iter()
            .map(|c| (c.entity.clone(), c))
            .collect();
        let mut reports = Vec::new();
        let control = Arc::new(RunControl::new(self.options.retry_budget));
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
                        error: None,
                    });
                    release(name, &mut waiting_for, &mut ready);
                    continue;
                }
                let blocked = match control.stopped() {
                    Some(reason) => Some(format!("not started: {reason}")),
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
                    // Neither transient nor permanent: it goes with its cause.
                    failed.insert(name.to_owned(), (error.clone(), false));
                    reports.push(EntityReport {
                        entity: name.to_owned(),
                        state: EntityState::Failed,
                        records: checkpoint.as_ref().map_or(0, |c| c.records),
                        pages: checkpoint.as_ref().map_or(0, |c| c.pages),
                        error: Some(error),
                    });
                    release(name, &mut waiting_for, &mut ready);
                    continue;
                }
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
        let unrecorded = self
            .store
            .finish_run(run.id, state, error.as_deref(), resumable, self.clock.now())
            .await
            .err();
        if let Some(failure) = &unrecorded {
            tracing::error!(run = run.id, error = %failure, "cannot record how the run ended; the next sync of its kind resumes it");
        }
        tracing::info!(run = run.id, connection = %connection.name, state = state.as_str(), "full sync finished");
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

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_attempts.saturating_sub(1))
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff: self.backoff(),
            min_wait: self.options.min_backoff,
        }
    }

    /// Commits pages in one transaction, retrying on retryable store errors.
    async fn commit_pages(
        &self,
        pages: &[PageWrite<'_>],
    ) -> Result<Vec<PageOutcome>, tributary_store::Error> {
        (|| async { self.store.apply_pages(pages).await })
            .retry(self.backoff().with_jitter())
            .when(tributary_store::Error::is_retryable)
            .notify(|error, wait| tracing::warn!(%error, ?wait, "commit failed; retrying"))
            .await
    }
}

impl EntityJob {
    async fn run(self) -> Result<EntityReport, Failure> {
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
        match result {
            Ok((records, pages)) => {
                self.progress
                    .entity_finished(&entity_name, EntityState::Done, None);
                Ok(EntityReport {
                    entity: entity_name,
                    state: EntityState::Done,
                    records,
                    pages,
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
                    pages.recv().await
                } else {
                    match pages.try_recv() {
                        Ok(page) => Some(page),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                let page = match next {
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
        let start = self
            .checkpoint
            .as_ref()
            .map(|c| c.cursor.clone())
            .unwrap_or_default();
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
        let fetcher = Fetcher {
            source: self.source.clone(),
            entity: self.entity.clone(),
            control: self.control.clone(),
            progress: self.progress.clone(),
            policy: self.engine.retry_policy(),
            spool: self.spool.clone(),
            window: self.engine.options.list_window,
        };
        // Keep the run/connection/entity span on the fetcher's log lines.
        let span = tracing::Span::current();
        let task = tokio::spawn(tracing::Instrument::instrument(
            fetch(fetcher, sender),
            span,
        ));
        let result = self.commit_in_order(receiver, records, pages).await;
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
        let after: Option<String> = self
            .checkpoint
            .as_ref()
            .and_then(|c| c.cursor.0.get("after"))
            .and_then(|a| a.as_str())
            .map(str::to_owned);
        let batches = ParentBatches {
            store: self.engine.store.clone(),
            connection_id: self.connection_id,
            parent: parent.to_owned(),
            batch_size: self.engine.options.parent_batch,
        };
        self.fetch_and_commit(
            |fetcher, sender| fetcher.children(batches, after, sender),
            records,
            pages,
        )
        .await
    }
}

/// Where the parents of an entity listed under a parent come from.
struct ParentBatches {
    store: Arc<dyn Store>,
    connection_id: i64,
    parent: String,
    batch_size: u32,
}

/// Fetches an entity's pages in order, one request (or, for children,
/// `concurrency` requests) at a time, and hands them on prepared; reads a
/// page from the spool instead when a killed run had fetched it, and
/// spools every page it fetches.
struct Fetcher {
    source: Source,
    entity: Arc<Entity>,
    control: Arc<RunControl>,
    progress: Arc<dyn Progress>,
    policy: RetryPolicy,
    spool: Option<Arc<Spool>>,
    /// Pages of a list fetched at once once their cursors are known.
    window: usize,
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
        let page = retrying(
            self.policy,
            &self.control,
            &self.entity.name,
            self.progress.as_ref(),
            || self.source.fetch_page(&self.entity, cursor),
        )
        .await?;
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

    /// Pages a top-level list from `cursor` to its end. Once the API has
    /// said how long the list is, the next `list_window` pages are fetched
    /// at once (their cursors are known: offset paging) and handed on in
    /// order; a page whose `next` leaves that path ends the window, and
    /// paging goes on from where the API leads.
    async fn list(self, mut cursor: Cursor, pages: mpsc::Sender<Result<PreparedPage, Failure>>) {
        // The previous page's ids: an API that serves the same page at ever
        // higher offsets (no `total_count` to notice it by) would otherwise
        // be paged forever.
        let mut previous: Vec<String> = Vec::new();
        let mut total: Option<i64> = None;
        loop {
            let window = self.source.window(&cursor, total, self.window.max(1));
            let width = window.len();
            let this = &self;
            let mut fetched = stream::iter(window)
                .map(|at| async move {
                    let result = this.page(&at).await;
                    (at, result)
                })
                .buffered(width);
            while let Some((at, result)) = fetched.next().await {
                if at != cursor {
                    // The list moved under the window: go on from `cursor`.
                    break;
                }
                let result = result.and_then(|(page, key)| {
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
                        total = page.total.or(total);
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
    }

    /// The children of every parent after `after`, a batch of parents at
    /// a time; each batch is one page.
    async fn children(
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
        let parents = batches
            .store
            .external_ids(
                batches.connection_id,
                parent,
                after.as_deref(),
                batches.batch_size,
            )
            .await
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
                let page = retrying(
                    self.policy,
                    &self.control,
                    &self.entity.name,
                    self.progress.as_ref(),
                    || async {
                        match self.source.fetch_children(&self.entity, &parent_id).await {
                            // A parent deleted since it was listed has no
                            // children (`None`: told apart below).
                            Err(tributary_source::Error::Status { status: 404, .. }) => Ok(None),
                            other => other.map(Some),
                        }
                    },
                )
                .await?;
                if let Some(page) = &page {
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
        combined.next = Cursor(json!({ "after": last, "done": finished }));
        Ok((PreparedPage::new(combined, parents), last))
    }
}
