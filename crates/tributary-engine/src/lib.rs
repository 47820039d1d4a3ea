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
//!
//! [`Source`]: tributary_source::Source

mod committer;
mod credentials;
mod entity;
mod fetcher;
mod holder;
pub mod notice;
mod page;
mod payload;
mod progress;
mod reconcile;
mod request;
mod retry;
mod run;
pub mod schedule;
mod service;
mod spool;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use tributary_core::Clock;
use tributary_store::{PageOutcome, PageWrite, Store};

use page::PreparedPage;

pub use credentials::{CredentialsError, SealedCredentialStore};
pub use progress::{NoProgress, Progress};
pub use reconcile::{DeleteGuard, Deletions};
pub use request::{RequestError, RunRequest};
pub use run::{EntityReport, RunReport};
pub use service::{Resolver, Service, ServiceHandle, ServiceOptions};
pub use spool::Spool;
pub use webhook::{DELIVERIES_PER_RUN, MAX_DELIVERY_ATTEMPTS};

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
    /// The engine does not run syncs of this kind (yet).
    #[error("a `{0}` sync cannot be run this way: ask for full, delta or reconcile")]
    UnsupportedKind(&'static str),
    /// The engine is stopping: no run starts.
    #[error("the service is shutting down: no run starts")]
    Stopping,
    /// No run has this id.
    #[error("there is no run {0}: `tributary runs list` shows the runs")]
    RunNotFound(i64),
    /// The run has ended: it cannot be cancelled.
    #[error("run {0} is {1}: only a run that is running or waiting for approval can be cancelled")]
    NotCancellable(i64, &'static str),
    /// The run is not waiting for approval.
    #[error(
        "run {0} is {1}, not waiting for approval: only a reconciliation whose deletions the mass-delete guard held back can be approved or rejected"
    )]
    NotWaiting(i64, &'static str),
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
    /// How far before an entity's high-water mark a delta starts reading:
    /// room for a difference between the API's clock and this machine's,
    /// and for records of the mark's own second that were written after
    /// it was read. The records read twice come back unchanged and change
    /// nothing.
    pub delta_overlap: Duration,
    /// How many deletions a reconciliation may make without approval.
    pub delete_guard: DeleteGuard,
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
            delta_overlap: Duration::from_secs(5),
            delete_guard: DeleteGuard::default(),
        }
    }
}

/// The sync engine. Cheap to clone; clones share the stop signal.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: EngineOptions,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Engine {
    /// An engine over `store`, with time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: EngineOptions) -> Self {
        Self {
            store,
            clock,
            options,
            stop: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Tells every run of this engine (and its clones) to stop: no entity
    /// starts, no page is fetched, a request in flight is dropped; what has
    /// been fetched commits; each run ends failed and resumable, so the
    /// next request of its kind resumes it. For a process shutting down.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether [`Engine::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
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
