//! Tributary's store.
//!
//! One [`Store`] trait with two implementations — [`SqliteStore`] (the
//! embedded default: one file, zero setup) and [`PgStore`] (production and
//! several nodes) — that behave the same, proven by one test suite run
//! against both (`tests/store_suite.rs`). Each has its own migrations under
//! `migrations/<backend>/`.
//!
//! Architecture invariant: [`Store::apply_page`] is the only way records
//! enter the store, and it writes the page's records, edges, change-feed
//! rows, quarantine rows, the entity's checkpoint and the run's counters in
//! ONE transaction. Nothing else in Tributary commits records.
//!
//! Connection credentials are kept only as opaque sealed bytes
//! ([`SealedCredentials`], sealed by `tributary-secrets`); the store never
//! sees a key or a plaintext secret, and [`Connection`] never carries them.

mod access;
mod deletions;
mod lock;
mod plan;
mod postgres;
mod records_api;
mod rows;
mod sqlite;
mod subscriptions;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tributary_core::{
    ChangeKind, Cursor, PreparedRecord, QuarantinedRecord, RunKind, RunState, Timestamp,
};

pub use access::{ApiToken, AuditEntry, Subject, TokenRole, audit};
pub use deletions::{Burial, Cascade, Deleted, Deletion};
pub use lock::ConnectionLock;
pub use postgres::PgStore;
pub use records_api::{
    IncomingEdge, RecordVersion, RecordsPage, RecordsPageQuery, SearchHit, SearchIndexStep,
    SearchQuery, search_words,
};
pub use sqlite::SqliteStore;
pub use subscriptions::{
    Attempted, Enqueue, FinishedRun, Message, MessageQuery, MessageState, NewMessage,
    NewSubscription, OutboxStats, Subscription, SubscriptionEvent, SubscriptionState,
};
pub use webhooks::{
    Delivery, DeliveryQuery, DeliveryState, NewDelivery, Received, Settled, WebhookSecret,
};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error(
        "unsupported database `{0}`: give a SQLite file path (or sqlite://PATH) or a postgres:// URL"
    )]
    UnsupportedUrl(String),
    /// A row holds something this version cannot read.
    #[error("unreadable row: {0}")]
    Corrupt(String),
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-swap lost: the row changed since the caller read it.
    /// Not retryable as such: re-read, then decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be opened; the message names the place (never
    /// a password), the cause and the fix.
    #[error("{0}")]
    Open(String),
    /// The disk holding the database is full. Nothing was half-written:
    /// the transaction rolled back, and a later attempt resumes.
    #[error("{0}")]
    DiskFull(String),
    /// Another process holds the connection's run lock.
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// Whether trying again later may succeed (lost connections, busy or
    /// locked databases, serialization failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            ) => true,
            Error::Database(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                // SQLite BUSY/LOCKED; PostgreSQL serialization failure, deadlock, admin shutdown.
                matches!(
                    code.as_ref(),
                    "5" | "6" | "517" | "40001" | "40P01" | "57P01"
                )
            }
            _ => false,
        }
    }

    /// Whether a later attempt of the same work may succeed without
    /// anything about the request changing — the disk has room again, the
    /// server is back, the lock is free: what makes a failed run worth
    /// resuming rather than starting afresh.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::DiskFull(_) | Error::Busy(_) | Error::Open(_) => true,
            Error::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Error::Database(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                match code.parse::<i64>() {
                    // SQLite (primary code in the low byte): busy, locked,
                    // I/O error, full, cannot open, protocol.
                    Ok(n) => matches!(n & 0xff, 5 | 6 | 10 | 13 | 14 | 15),
                    // PostgreSQL classes: connection, insufficient
                    // resources (a full disk), operator intervention (a
                    // shutdown), system error, transaction rollback, and a
                    // lock not available.
                    Err(_) => {
                        ["08", "53", "57", "58", "40"]
                            .iter()
                            .any(|class| code.starts_with(class))
                            || code == "55P03"
                    }
                }
            }
            _ => self.is_retryable(),
        }
    }
}

/// A migrator from a backend's embedded `(version, name, SQL)` steps.
fn migrator(steps: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr as _;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The versions of `migrator`'s migrations missing from `applied`.
fn missing_migrations(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<i64> {
    migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect()
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Whether a connection can sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionStatus {
    /// Its credentials are believed good.
    #[default]
    Active,
    /// The API refused its credentials (e.g. a revoked refresh token): a
    /// person must give new ones.
    NeedsReauth,
}

impl ConnectionStatus {
    /// Name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::NeedsReauth => "needs_reauth",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => ConnectionStatus::Active,
            "needs_reauth" => ConnectionStatus::NeedsReauth,
            _ => return None,
        })
    }
}

/// A configured source: an adapter pointed at one account. Never carries
/// its credentials; see [`Store::credentials`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Internal id.
    pub id: i64,
    /// Unique name chosen by the operator.
    pub name: String,
    /// The adapter (manifest) name.
    pub adapter: String,
    /// The API base URL.
    pub base_url: String,
    /// Whether it can sync.
    pub status: ConnectionStatus,
    /// Why it is not active (or what last changed its status).
    pub status_reason: Option<String>,
    /// The kind of its stored credentials (`bearer`, `basic`, `oauth2`), if
    /// it has any.
    pub credentials_kind: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
    /// Its own request budget, over the manifest's policy.
    pub rate_limit: Option<RateBudget>,
}

/// A connection's own request budget: `requests` per `period` (0
/// requests: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    /// Requests per period (0: no limit).
    pub requests: u32,
    /// The period.
    pub period: std::time::Duration,
}

/// A connection's credentials as stored: sealed bytes only the holder of
/// the secret key can open.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredentials {
    /// The kind (`bearer`, `basic`, `oauth2`), stored in the clear for
    /// listings.
    pub kind: String,
    /// The sealed blob.
    pub sealed: Vec<u8>,
    /// Bumped by every write; pass it back to [`Store::set_credentials`]
    /// to replace exactly these credentials.
    pub version: i64,
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredentials")
            .field("kind", &self.kind)
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .field("version", &self.version)
            .finish()
    }
}

/// A connection to create or update.
#[derive(Debug, Clone, Copy)]
pub struct NewConnection<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Adapter name.
    pub adapter: &'a str,
    /// API base URL.
    pub base_url: &'a str,
}

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Pages committed.
    pub pages: i64,
    /// Records seen for the first time.
    pub created: i64,
    /// Records whose content changed.
    pub updated: i64,
    /// Records seen again with the same content.
    pub unchanged: i64,
    /// Records marked deleted.
    pub deleted: i64,
    /// Records quarantined.
    pub quarantined: i64,
    /// Records marked deleted that came back (counted as created too).
    pub restored: i64,
    /// API requests made (pages read from the API).
    pub requests: i64,
    /// Retries spent.
    pub retries: i64,
}

/// One sync run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Internal id.
    pub id: i64,
    /// Its connection.
    pub connection_id: i64,
    /// Kind.
    pub kind: RunKind,
    /// State.
    pub state: RunState,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Start.
    pub started_at: Timestamp,
    /// Last progress.
    pub updated_at: Timestamp,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// Counters.
    pub counts: RunCounts,
    /// Why it failed.
    pub error: Option<String>,
    /// A failed run that met a cause that may pass (an exhausted retry
    /// budget, a server that stopped answering, a full disk) and no refused
    /// credentials: the next request of its kind and scope resumes it from
    /// its checkpoints instead of starting over.
    pub resumable: bool,
    /// What the run covers, as its starter spelled it (see
    /// [`Store::start_run`]).
    pub scope: Option<String>,
}

/// What [`Store::start_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStart {
    /// A new run was created.
    New(Run),
    /// An unfinished run of the same kind (or with the same idempotency
    /// key) exists and is to be resumed.
    Resumed(Run),
    /// A finished run with the same idempotency key exists; nothing to do.
    Finished(Run),
}

impl RunStart {
    /// The run, whichever case.
    pub fn run(&self) -> &Run {
        match self {
            RunStart::New(run) | RunStart::Resumed(run) | RunStart::Finished(run) => run,
        }
    }
}

/// The state of one entity within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityState {
    /// Pages are being committed.
    Running,
    /// The scan finished.
    Done,
    /// The scan stopped on an error.
    Failed,
}

impl EntityState {
    /// Name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityState::Running => "running",
            EntityState::Done => "done",
            EntityState::Failed => "failed",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => EntityState::Running,
            "done" => EntityState::Done,
            "failed" => EntityState::Failed,
            _ => return None,
        })
    }
}

/// Where one entity of one run stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The run.
    pub run_id: i64,
    /// The entity.
    pub entity: String,
    /// The committed cursor.
    pub cursor: Cursor,
    /// State.
    pub state: EntityState,
    /// Pages committed.
    pub pages: i64,
    /// Records committed (written or unchanged) and quarantined.
    pub records: i64,
    /// The source's own count of the collection, when it reports one.
    pub total: Option<i64>,
    /// What its pages and deletions did.
    pub counts: EntityCounts,
    /// Why it failed.
    pub error: Option<String>,
    /// Last commit.
    pub updated_at: Timestamp,
}

/// Per run and entity: records created (of them, `restored`: brought back
/// from deleted), updated, unchanged, quarantined, and deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub quarantined: i64,
    pub restored: i64,
    pub deleted: i64,
}

/// One page to commit.
#[derive(Debug, Clone, Copy)]
pub struct PageWrite<'a> {
    /// The connection.
    pub connection_id: i64,
    /// The run.
    pub run_id: i64,
    /// The entity.
    pub entity: &'a str,
    /// The canonical entity its records map to.
    pub canonical_entity: &'a str,
    /// Records (unique external ids; later duplicates are the caller's to
    /// drop).
    pub records: &'a [PreparedRecord],
    /// Records that failed to transform.
    pub quarantined: &'a [QuarantinedRecord],
    /// The cursor after this page.
    pub cursor: &'a Cursor,
    /// Whether this page ends the entity's scan.
    pub finished: bool,
    /// The source's count of the collection, if reported.
    pub total: Option<i64>,
    /// The entity's high-water mark once this page has committed: every
    /// change at the source up to this time is stored (see
    /// [`Store::marks`]). A mark never moves back: a lower one is ignored.
    pub mark: Option<Timestamp>,
    /// Commit time.
    pub now: Timestamp,
}

/// Per run of a group of pages: pages, summed outcome and the latest commit
/// time, in order of first appearance — what the runs' counters gain.
pub(crate) fn run_totals(
    pages: &[PageWrite<'_>],
    outcomes: &[PageOutcome],
) -> Vec<(i64, i64, PageOutcome, Timestamp)> {
    let mut totals: Vec<(i64, i64, PageOutcome, Timestamp)> = Vec::new();
    for (page, outcome) in pages.iter().zip(outcomes) {
        let i = match totals.iter().position(|t| t.0 == page.run_id) {
            Some(i) => i,
            None => {
                totals.push((page.run_id, 0, PageOutcome::default(), page.now));
                totals.len() - 1
            }
        };
        let total = &mut totals[i];
        total.1 += 1;
        total.2.created += outcome.created;
        total.2.updated += outcome.updated;
        total.2.unchanged += outcome.unchanged;
        total.2.quarantined += outcome.quarantined;
        total.2.restored += outcome.restored;
        total.3 = total.3.max(page.now);
    }
    totals
}

/// What a committed page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// New records.
    pub created: u64,
    /// Changed records.
    pub updated: u64,
    /// Records with the same content hash as stored.
    pub unchanged: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Of the created, records that were marked deleted (brought back).
    pub restored: u64,
}

impl PageOutcome {
    /// Records the page carried: written, unchanged and quarantined.
    pub fn records(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.quarantined
    }
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Stable internal id.
    pub id: i64,
    /// Connection id.
    pub connection_id: i64,
    /// Connection name.
    pub connection: String,
    /// Entity (source type).
    pub entity: String,
    /// Source id.
    pub external_id: String,
    /// Canonical entity.
    pub canonical_entity: String,
    /// Raw source object.
    pub raw: Value,
    /// Canonical projection.
    pub canonical: Value,
    /// Content hash.
    pub content_hash: String,
    /// Source last-modified time.
    pub source_updated_at: Option<Timestamp>,
    /// First seen.
    pub first_seen_at: Timestamp,
    /// Last content change.
    pub last_modified_at: Timestamp,
    /// When it was found deleted at the source.
    pub deleted_at: Option<Timestamp>,
}

/// A page of records to list, in internal-id order.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    /// Only this connection.
    pub connection_id: Option<i64>,
    /// Only this entity.
    pub entity: Option<String>,
    /// Records with an internal id above this one.
    pub after_id: i64,
    /// At most this many.
    pub limit: u32,
    /// Include records marked deleted.
    pub include_deleted: bool,
}

/// One change-feed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Monotonic sequence number.
    pub seq: i64,
    /// Connection.
    pub connection_id: i64,
    /// Internal record id.
    pub record_id: i64,
    /// Entity.
    pub entity: String,
    /// Source id.
    pub external_id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// Content hash after the change.
    pub content_hash: Option<String>,
    /// The run that made it.
    pub run_id: Option<i64>,
    /// Commit time.
    pub changed_at: Timestamp,
    /// For an update, the canonical fields whose values changed (added,
    /// changed or removed), sorted; `None` for other kinds.
    pub fields: Option<Vec<String>>,
}

/// What the store knows of a record's age: the source's `updated_at` it
/// was stored with, and when it was deleted (a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The source's `updated_at` of the stored version.
    pub source_updated_at: Option<Timestamp>,
    /// When it was deleted, if it is.
    pub deleted_at: Option<Timestamp>,
}

/// A quarantined record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// Connection.
    pub connection_id: i64,
    /// Entity.
    pub entity: String,
    /// Source id (a `?`-prefixed digest when the object had none).
    pub external_id: String,
    /// The run that last saw it.
    pub run_id: Option<i64>,
    /// The object as received.
    pub raw: Value,
    /// Why it was quarantined.
    pub error: String,
    /// First seen.
    pub first_seen_at: Timestamp,
    /// Last seen.
    pub last_seen_at: Timestamp,
}

/// When `serve` runs a connection's syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The connection.
    pub connection_id: i64,
    /// A delta every this many seconds (`None`: no scheduled deltas).
    pub delta_every_secs: Option<i64>,
    /// The next delta slot.
    pub delta_next_at: Option<Timestamp>,
    /// A reconciliation at the times of this cron expression, UTC (`None`:
    /// no scheduled reconciliations).
    pub reconcile_cron: Option<String>,
    /// The next reconciliation slot.
    pub reconcile_next_at: Option<Timestamp>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// Record counts of one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityCount {
    /// Entity.
    pub entity: String,
    /// Records present at the source.
    pub live: i64,
    /// Records marked deleted.
    pub deleted: i64,
}

/// The store. Every implementation passes `tests/store_suite.rs`.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// A handle on the same database for use from another async runtime
    /// (a thread of its own): `None` when this one works from any runtime
    /// (SQLite's connections run on threads of their own), else a new
    /// handle with connections of its own, which the caller closes
    /// ([`Store::close`]) on that runtime when done.
    async fn for_another_runtime(&self) -> Result<Option<Arc<dyn Store>>> {
        Ok(None)
    }

    /// How many [`Store::apply_pages`] calls can usefully run at once: 1 for
    /// a database with one writer (SQLite); more where transactions write
    /// in parallel (PostgreSQL), so a committer can overlap one group's
    /// round trips and commit flush with another's.
    fn commit_lanes(&self) -> usize {
        1
    }

    /// Closes the store's connections once in-flight work is done (SQLite:
    /// after copying the write-ahead log into the database file, so no
    /// large log is left beside it). Further calls fail.
    async fn close(&self);

    /// Creates the connection, or updates its adapter and base URL.
    async fn ensure_connection(&self, new: NewConnection<'_>, now: Timestamp)
    -> Result<Connection>;
    /// A connection by name.
    async fn connection(&self, name: &str) -> Result<Option<Connection>>;
    /// Every connection, by name.
    async fn connections(&self) -> Result<Vec<Connection>>;
    /// Deletes a connection and everything of it — records, edges,
    /// change-feed rows, quarantine, runs and their checkpoints — in one
    /// transaction. `false` if there is no such connection. A sync of it
    /// still running fails at its next commit.
    async fn remove_connection(&self, name: &str) -> Result<bool>;

    /// A connection's sealed credentials, if it has any.
    async fn credentials(&self, connection_id: i64) -> Result<Option<SealedCredentials>>;
    /// Stores sealed credentials and returns their new version; also sets
    /// the connection's status back to active and clears its reason. With
    /// `expected_version` it is a compare-and-swap that fails with
    /// [`Error::Conflict`] unless the stored version is that one (a
    /// connection without credentials is at version 0) — how a refreshed,
    /// rotated OAuth2 token is saved when several processes may race.
    async fn set_credentials(
        &self,
        connection_id: i64,
        kind: &str,
        sealed: &[u8],
        expected_version: Option<i64>,
        now: Timestamp,
    ) -> Result<i64>;
    /// Sets a connection's status and its reason.
    async fn set_connection_status(
        &self,
        connection_id: i64,
        status: ConnectionStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<()>;

    /// Sets (or, with `None`, clears) a connection's own request budget.
    async fn set_rate_limit(
        &self,
        connection_id: i64,
        budget: Option<RateBudget>,
        now: Timestamp,
    ) -> Result<()>;

    /// Takes the right to run `connection`'s syncs, held until the lock is
    /// dropped or the process dies: at most one process (on PostgreSQL, of
    /// any host) holds it at a time. `holder` says who is asking ("pid 12
    /// on host-a since …"); when another process holds the lock the answer
    /// is [`Error::Busy`], naming that holder.
    async fn lock_connection(&self, connection: &str, holder: &str) -> Result<ConnectionLock>;

    /// The migrations this binary knows that the database has not had:
    /// empty when the schema is current.
    async fn pending_migrations(&self) -> Result<Vec<i64>>;

    /// Starts a run, or finds the one to resume: the run with the same
    /// idempotency key if one is given, else the connection's latest run of
    /// the same kind and `scope` (what the run covers — its entities, its
    /// API — as the caller spells it) if it is unfinished (`running`, left
    /// by a process that died) or failed and [`Run::resumable`] — a failed
    /// run is then reopened (`running` again, its error cleared; its
    /// entities keep their checkpoints).
    async fn start_run(
        &self,
        connection_id: i64,
        kind: RunKind,
        scope: Option<&str>,
        idempotency_key: Option<&str>,
        now: Timestamp,
    ) -> Result<RunStart>;
    /// Records a run asked for while its connection was busy: state
    /// `queued`, named by its idempotency key (the run that key already
    /// names, if any). [`Store::start_run`] with the key starts it.
    async fn queue_run(
        &self,
        connection_id: i64,
        kind: RunKind,
        idempotency_key: &str,
        now: Timestamp,
    ) -> Result<Run>;
    /// The queued runs, oldest first.
    async fn queued_runs(&self) -> Result<Vec<Run>>;
    /// Adds to a run's figures the requests it made and the retries it
    /// spent (an invocation's worth; a resumed run adds up).
    async fn add_run_usage(&self, run_id: i64, requests: u64, retries: u64) -> Result<()>;

    /// Ends a running run; `resumable` marks a failed run that the next
    /// request of its kind resumes (see [`Run::resumable`]). A run no longer
    /// running (a person cancelled it) keeps its state.
    async fn finish_run(
        &self,
        run_id: i64,
        state: RunState,
        error: Option<&str>,
        resumable: bool,
        now: Timestamp,
    ) -> Result<()>;
    /// A run by id.
    async fn run(&self, run_id: i64) -> Result<Option<Run>>;
    /// The latest runs, newest first, of one connection or all.
    async fn runs(&self, connection_id: Option<i64>, limit: u32) -> Result<Vec<Run>>;

    /// The checkpoints of a run, by entity.
    async fn checkpoints(&self, run_id: i64) -> Result<Vec<Checkpoint>>;
    /// Sets an entity's state without committing a page (a failure, or a
    /// scan that had nothing to commit).
    async fn set_entity_state(
        &self,
        run_id: i64,
        entity: &str,
        state: EntityState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()>;
    /// Commits one page in one transaction: records, edges, change-feed
    /// rows, quarantine, checkpoint and run counters.
    async fn apply_page(&self, page: PageWrite<'_>) -> Result<PageOutcome> {
        let outcomes = self.apply_pages(std::slice::from_ref(&page)).await?;
        Ok(outcomes[0])
    }
    /// Commits several pages — of any entities and runs — in ONE
    /// transaction (group commit), each exactly as [`Store::apply_page`]
    /// would: all of them or none. Pages of one entity apply in order, so a
    /// later page's checkpoint wins. Fails as a whole (`NotFound`) if any
    /// page's run is no longer running.
    async fn apply_pages(&self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>>;

    /// Marks records deleted in ONE transaction (see [`Deletion`]): their
    /// `deleted_at` set, a `deleted` change-feed row each, their outgoing
    /// edges removed, the records that belong to them (its cascade)
    /// deleted too, and all of it counted in the run — which must be
    /// running ([`Error::NotFound`] otherwise, and nothing changes). Ids
    /// not stored or already deleted are skipped. Returns the records
    /// deleted per entity.
    async fn delete_records(&self, deletion: Deletion<'_>) -> Result<Deleted>;

    /// Keeps tombstones of records never stored (see [`Burial`]), with a
    /// `deleted` feed row each; ids stored already are left alone. The
    /// number buried.
    async fn bury(&self, burial: Burial<'_>) -> Result<u64>;

    /// Keeps deletions a run found but may not make without a person's
    /// approval (the mass-delete guard); read back by
    /// [`Store::staged_deletions`], dropped when [`Store::transition_run`]
    /// ends the run.
    async fn stage_deletions(&self, run_id: i64, entity: &str, ids: &[String]) -> Result<()>;

    /// A run's staged deletions as (entity, external id), ordered.
    async fn staged_deletions(&self, run_id: i64) -> Result<Vec<(String, String)>>;

    /// Moves a run from state `from` to `to` (setting its error if one is
    /// given, and its end if `to` is final) — only if it is in `from`:
    /// `false` if it was not (another process moved it first). A run that
    /// reaches a final state this way drops its staged deletions.
    async fn transition_run(
        &self,
        run_id: i64,
        from: RunState,
        to: RunState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;

    /// Creates or replaces a connection's schedule.
    async fn set_schedule(&self, schedule: &Schedule) -> Result<()>;

    /// Every schedule, by connection id.
    async fn schedules(&self) -> Result<Vec<Schedule>>;

    /// Fires the slot `due` of a connection's schedule of `kind` (delta or
    /// reconcile) by moving its next slot to `next` — only if the next
    /// slot is still `due`: `false` when another process fired it first
    /// (or the schedule changed).
    async fn claim_slot(
        &self,
        connection_id: i64,
        kind: RunKind,
        due: Timestamp,
        next: Timestamp,
    ) -> Result<bool>;

    /// Keeps a webhook secret of the connection, sealed; returns its id.
    async fn add_webhook_secret(
        &self,
        connection_id: i64,
        event: Option<&str>,
        sealed: &[u8],
        now: Timestamp,
    ) -> Result<i64>;
    /// The connection's webhook secrets, oldest first.
    async fn webhook_secrets(&self, connection_id: i64) -> Result<Vec<WebhookSecret>>;
    /// Removes webhook secret `id`; whether there was one.
    async fn remove_webhook_secret(&self, id: i64) -> Result<bool>;
    /// Keeps verified deliveries in the inbox, in ONE transaction (committed
    /// when this returns): each is stored, or a duplicate of one its
    /// connection already has (same sender id), in the order given.
    async fn receive_deliveries(&self, deliveries: &[NewDelivery]) -> Result<Vec<Received>>;
    /// Deliveries in the inbox, oldest first.
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>>;
    /// The connections with deliveries due at `now` (pending, their next
    /// attempt not later), paused connections left out.
    async fn webhook_backlog(&self, now: Timestamp) -> Result<Vec<i64>>;
    /// The connection's deliveries due at `now`, oldest first, at most
    /// `limit` (none while it is paused).
    async fn due_deliveries(
        &self,
        connection_id: i64,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    /// Records attempts at deliveries, in ONE transaction: each of
    /// `(id, attempts, outcome)` counts an attempt and becomes applied,
    /// pending again, or dead — if it is still pending with the `attempts`
    /// its attempt started from (a delivery replayed or settled meanwhile
    /// is left as it is). Returns how many were settled.
    async fn settle_deliveries(
        &self,
        settled: &[(i64, i64, Settled)],
        now: Timestamp,
    ) -> Result<u64>;
    /// Makes deliveries pending again, due at once, their attempts counted
    /// from zero and their last outcome (error, applied time, run)
    /// cleared: the ones in `ids`, or (`ids` empty) every dead one received
    /// at or after `since`. Returns how many.
    async fn replay_deliveries(&self, ids: &[i64], since: Option<Timestamp>) -> Result<u64>;
    /// Pauses or resumes applying a connection's deliveries (they are
    /// still verified and stored).
    async fn set_webhooks_paused(
        &self,
        connection_id: i64,
        paused: bool,
        now: Timestamp,
    ) -> Result<()>;
    /// The paused connections.
    async fn webhook_pauses(&self) -> Result<Vec<i64>>;
    /// Forgets applied deliveries received before `before` (pending and
    /// dead ones are kept); returns how many. A sender's retry of one
    /// received earlier would be stored again, so `before` must lie past
    /// the senders' retry horizon.
    async fn expire_deliveries(&self, before: Timestamp) -> Result<u64>;

    /// Webhooks out: keeps a new subscription (its secret sealed by the
    /// caller), following the feed after `new.cursor`.
    async fn add_subscription(&self, new: &NewSubscription<'_>) -> Result<Subscription>;
    /// Every subscription, oldest first.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;
    /// Subscription `id`.
    async fn subscription(&self, id: i64) -> Result<Option<Subscription>>;
    /// Removes subscription `id` with its outbox and the run ends not yet
    /// told to it, in one transaction; whether there was one.
    async fn remove_subscription(&self, id: i64) -> Result<bool>;
    /// Enables or disables a subscription (`reason`: why it is disabled;
    /// enabling clears it). A disabled subscription is neither followed
    /// nor delivered: its cursor and its messages wait where they are.
    /// Whether there was one.
    async fn set_subscription_state(
        &self,
        id: i64,
        state: SubscriptionState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;
    /// The runs of its connection that ended and are not yet told to
    /// subscription `id` (kept, in the transaction that ends a run, for
    /// every subscription that wants `sync.finished`), oldest first.
    async fn finished_runs(&self, subscription_id: i64) -> Result<Vec<FinishedRun>>;
    /// Enqueues messages and moves the subscription's cursor in ONE
    /// transaction — only if the cursor is still `from_cursor`, the
    /// subscription active, and every finished run named still untold
    /// (they are deleted): `false`, and nothing written, when another
    /// enqueuer was first. So nothing is enqueued twice, and nothing is
    /// skipped: a crash before the commit leaves the cursor where it was.
    async fn enqueue_messages(&self, enqueue: &Enqueue<'_>) -> Result<bool>;
    /// Claims up to `limit` messages due at `now` — each the oldest pending
    /// message of an active subscription (a subscription's messages go out
    /// one at a time, in order) — counting the attempt and moving their
    /// next attempt to `lease_until`, so no other claimer (of any process)
    /// takes them meanwhile. Returned with their new attempt count.
    async fn claim_messages(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Message>>;
    /// Records how the attempt `attempts` at message `id` ended — only if
    /// the message is still pending at that attempt (not replayed, removed
    /// or claimed again meanwhile); [`Attempted::Gone`] disables its
    /// subscription in the same transaction. Whether it was recorded.
    async fn settle_message(
        &self,
        id: i64,
        attempts: i64,
        outcome: &Attempted,
        now: Timestamp,
    ) -> Result<bool>;
    /// Gives back a claim whose attempt never ended (the process is
    /// stopping): due at `now`, the attempt uncounted. Whether it was.
    async fn release_message(&self, id: i64, attempts: i64, now: Timestamp) -> Result<bool>;
    /// Makes a subscription's dead letters pending again, due at `now`,
    /// their attempts counted from zero: the ones named by message id, or
    /// (none named) all. Returns how many.
    async fn replay_messages(
        &self,
        subscription_id: i64,
        message_ids: &[String],
        now: Timestamp,
    ) -> Result<u64>;
    /// Messages in the outbox, oldest first.
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<Message>>;
    /// Each subscription's outbox in figures, by subscription id.
    async fn outbox_stats(&self) -> Result<Vec<OutboxStats>>;
    /// When the next message that [`Store::claim_messages`] could take is
    /// due (`None`: none waits).
    async fn next_message_due(&self) -> Result<Option<Timestamp>>;
    /// Forgets messages delivered before `before`; returns how many.
    async fn expire_messages(&self, before: Timestamp) -> Result<u64>;

    /// The connection's high-water marks, per entity: the time (the
    /// source's clock) up to which every change of the entity is stored,
    /// as pages committed them ([`PageWrite::mark`]).
    async fn marks(&self, connection_id: i64) -> Result<Vec<(String, Timestamp)>>;

    /// External ids of the live records of an entity that run `run_id`
    /// created or changed, in ascending order, after `after` — the parents
    /// whose children a delta sync reads again.
    async fn changed_ids(
        &self,
        connection_id: i64,
        entity: &str,
        run_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;

    /// External ids of the live records of an entity, in ascending order,
    /// after `after` — the parents that child listings walk.
    async fn external_ids(
        &self,
        connection_id: i64,
        entity: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Lists records.
    async fn records(&self, query: &RecordQuery) -> Result<Vec<StoredRecord>>;
    /// One record.
    async fn record(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Option<StoredRecord>>;
    /// When each of these records of `entity` last changed at the source,
    /// and whether it is deleted (records never stored are absent) — what
    /// a payload-applied webhook is compared with (last writer wins).
    async fn stamps(
        &self,
        connection_id: i64,
        entity: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, Stamp>>;
    /// The edges leaving a record.
    async fn edges_from(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<tributary_core::EdgeRef>>;
    /// Change-feed rows after `after_seq`, oldest first.
    async fn changes(
        &self,
        connection_id: Option<i64>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Change>>;
    /// Deletes the feed rows changed before `before` (every row up to the
    /// newest of them, so the feed keeps no gap), raising the horizon to
    /// the highest sequence number deleted; the rows deleted.
    async fn expire_changes(&self, before: Timestamp) -> Result<u64>;
    /// The newest change's sequence number (0: none yet).
    async fn feed_head(&self) -> Result<i64>;
    /// The highest sequence number the feed's retention deleted (0:
    /// none): a reader after a lower one may have missed changes.
    async fn feed_horizon(&self) -> Result<i64>;
    /// Wakes `wake` after each commit that wrote feed rows — every
    /// process's commits where the backend can tell (PostgreSQL: `LISTEN`
    /// and `NOTIFY`), else this process's only (SQLite: other processes'
    /// commits are for the feed to poll for). Whether other processes'
    /// commits wake it. It stops once `wake` is dropped.
    async fn watch_changes(&self, wake: Arc<tokio::sync::Notify>) -> Result<bool>;

    // --- The records API and full-text search (`records_api.rs`) ---
    //
    // A record's *version* is the feed position of its latest change; the
    // records API pages in version order after a cursor that is a feed
    // position, so paging while records change never skips a record nor
    // repeats a version, and the last page's cursor is where to follow
    // the feed from. The search index is a consumer of the feed in the
    // same store, with a durable cursor.

    /// Up to `query.limit` records whose version is above `query.after`,
    /// in version order, and the cursor to ask after next: the last
    /// record's version when the page is full, else the feed's head read
    /// in the same snapshot (every change up to it is reflected in the
    /// records read; later ones follow in the feed after it). On
    /// PostgreSQL a record whose newest change has no feed position yet
    /// is left for a later page (its version will be above this head).
    async fn records_page(&self, query: &RecordsPageQuery) -> Result<RecordsPage>;
    /// The edges pointing at a record (its dependents), by source.
    async fn edges_to(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<IncomingEdge>>;
    /// One step of the search indexer: reads up to `limit` changes after
    /// the index's cursor, re-indexes the records they name as they are
    /// now (drops the deleted and the removed), and moves the cursor to
    /// the last change read — in one transaction. A cursor below the
    /// feed's retention horizon rebuilds the index from every live record
    /// instead. One indexer at a time (others wait for the cursor's lock).
    async fn index_search(&self, limit: u32) -> Result<SearchIndexStep>;
    /// The search index's cursor: every change up to this feed position
    /// is indexed.
    async fn search_cursor(&self) -> Result<i64>;
    /// Live records whose canonical string values hold every word of
    /// `query` (each as a word's start), best first.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>>;
    /// Quarantined records, oldest first.
    async fn quarantined(&self, connection_id: Option<i64>, limit: u32)
    -> Result<Vec<Quarantined>>;
    /// Record counts per entity of a connection.
    async fn entity_counts(&self, connection_id: i64) -> Result<Vec<EntityCount>>;

    // --- The API's access and audit trail ---

    /// Keeps a new API token: its name, role and SHA-256 (hex).
    async fn create_token(
        &self,
        name: &str,
        role: TokenRole,
        hash: &str,
        now: Timestamp,
    ) -> Result<ApiToken>;
    /// Every API token, oldest first, revoked ones too.
    async fn tokens(&self) -> Result<Vec<ApiToken>>;
    /// The token, not revoked, whose SHA-256 (hex) is `hash`.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>>;
    /// Revokes token `id`; false if there is no such token not yet revoked.
    async fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool>;
    /// Notes which records applied webhook deliveries named (a subject
    /// noted before is left as it is).
    async fn add_webhook_subjects(&self, subjects: &[Subject]) -> Result<()>;
    /// A record's feed rows, newest first, at most `limit`.
    async fn record_changes(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
        limit: u32,
    ) -> Result<Vec<Change>>;
    /// The webhook deliveries that named a record, oldest first.
    async fn record_deliveries(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<Delivery>>;
}

/// Opens (and migrates) the store a URL names: a `postgres://` or
/// `postgresql://` URL, or a SQLite file (a path, `sqlite://PATH` or
/// `sqlite:PATH`; created if missing). Several processes may open one
/// database at once: the migrations run under a lock.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if is_postgres(url) {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if let Some(path) = sqlite_path(url) {
        Ok(Arc::new(SqliteStore::open(path).await?))
    } else {
        Err(Error::UnsupportedUrl(tributary_core::redact_url(url)))
    }
}

/// Opens the store a URL names for reading only: a SQLite file is neither
/// created nor migrated nor written (a read-only file or directory works),
/// and a database whose schema is not current is an error that says how to
/// upgrade it.
pub async fn open_read_only(url: &str) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if is_postgres(url) {
        Arc::new(PgStore::connect_read_only(url).await?)
    } else if let Some(path) = sqlite_path(url) {
        Arc::new(SqliteStore::open_read_only(path).await?)
    } else {
        return Err(Error::UnsupportedUrl(tributary_core::redact_url(url)));
    };
    Ok(store)
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Whether `url` names a SQLite file that does not exist yet (a store
/// with nothing in it, which opening would create).
pub fn is_new_sqlite(url: &str) -> bool {
    !is_postgres(url) && sqlite_path(url).is_some_and(|path| !std::path::Path::new(path).exists())
}

fn sqlite_path(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    (!path.is_empty() && !path.contains("://")).then_some(path)
}

/// The error of a [`Store::set_credentials`] that wrote nothing: the
/// connection is missing, or its version is not the expected one.
pub(crate) fn missed_swap(
    connection_id: i64,
    expected_version: Option<i64>,
    stored_version: Option<i64>,
) -> Error {
    match (stored_version, expected_version) {
        (Some(stored), Some(expected)) => Error::Conflict(format!(
            "credentials of connection {connection_id} are at version {stored}, not {expected}: \
             another writer replaced them"
        )),
        _ => Error::NotFound(format!("connection {connection_id}")),
    }
}

/// The column of a schedule's next slot of `kind`.
pub(crate) fn slot_column(kind: RunKind) -> Result<&'static str> {
    match kind {
        RunKind::Delta => Ok("delta_next_at"),
        RunKind::Reconcile => Ok("reconcile_next_at"),
        other => Err(Error::NotFound(format!(
            "a schedule of {} runs (schedules have delta and reconcile runs)",
            other.as_str()
        ))),
    }
}

/// The quarantine key of a record that had no id.
pub(crate) fn quarantine_key(record: &QuarantinedRecord) -> String {
    match &record.external_id {
        Some(id) => id.clone(),
        None => {
            let digest = tributary_core::content_hash(&record.raw, &Value::Null);
            format!("?{}", &digest[..16])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(sqlite_path("./tributary.db"), Some("./tributary.db"));
        assert_eq!(sqlite_path("sqlite://x.db"), Some("x.db"));
        assert_eq!(sqlite_path("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("mysql://x"), None);
        assert_eq!(sqlite_path(""), None);
    }
}
