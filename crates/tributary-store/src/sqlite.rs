//! The SQLite store: the embedded default.
//!
//! One writer connection (SQLite has one writer at a time; a single pooled
//! connection keeps the process's own writers from contending) and a few
//! reader connections, in WAL mode so readers never block the writer.

mod access;
mod records_api;
mod subscriptions;
mod webhooks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Arguments, AssertSqlSafe, ConnectOptions, QueryBuilder, Row, Sqlite};
use tokio::sync::Notify;
use tributary_core::{EdgeRef, PreparedRecord, QuarantinedRecord, RunKind, RunState, Timestamp};

use crate::Schedule;
use crate::lock::{self, ConnectionLock, busy};
use crate::plan::{groups, parse_ts, plan, sqlite_ts, unique_ids};
use crate::rows::{
    CONNECTION_COLUMNS, Columns, RECORD_COLUMNS, change_row, checkpoint_row, connection_row,
    credentials_row, edge_row, entity_count_row, existing_row, quarantined_row, record_row,
    run_row,
};
use crate::run_totals;
use crate::{
    Attempted, Enqueue, FinishedRun, Message, MessageQuery, NewSubscription, OutboxStats,
    Subscription, SubscriptionState,
};
use crate::{
    Backend, Burial, Change, Checkpoint, Connection, ConnectionStatus, Deleted, Deletion,
    EntityCount, EntityState, Error, NewConnection, PageOutcome, PageWrite, Quarantined,
    RateBudget, RecordQuery, Result, Run, RunStart, SealedCredentials, Stamp, Store, StoredRecord,
    missed_swap, quarantine_key,
};
use crate::{Delivery, DeliveryQuery, NewDelivery, Received, Settled, WebhookSecret};
use crate::{IncomingEdge, RecordsPage, RecordsPageQuery, SearchHit, SearchIndexStep, SearchQuery};

/// Rows per multi-row statement, largest first: far below SQLite's
/// bound-variable limit. A group's rows go out in chunks of these sizes
/// only, so a handful of statement texts serve every group: each is
/// prepared once and stays in the driver's statement cache. (Chunks of
/// whatever size a group has would each be a statement of their own —
/// hundreds of large prepared statements, re-prepared as the cache turns
/// over, and megabytes of memory.)
const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// `items` in chunks of the sizes of [`CHUNKS`], largest first.
fn chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNKS.into_iter().find(|&size| size <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The database file as given (for messages) and made absolute (for the
    /// connection locks beside it).
    path: Arc<DbPath>,
    writer: SqlitePool,
    reader: SqlitePool,
    /// `None` when opened read-only.
    checkpointer: Option<Arc<Checkpointer>>,
    /// Woken after each commit that may have written feed rows (this
    /// process's commits only: other processes' are seen by polling).
    watchers: Arc<Mutex<Vec<std::sync::Weak<tokio::sync::Notify>>>>,
}

#[derive(Debug)]
struct DbPath {
    given: String,
    absolute: PathBuf,
}

/// Copies the write-ahead log into the database file on a connection of its
/// own, so the writer never pays for it: SQLite would otherwise checkpoint
/// inside whichever commit crosses 1,000 WAL pages, stalling that commit
/// (and every page queued behind it) by tens of milliseconds. A PASSIVE
/// checkpoint never blocks the writer or readers.
///
/// SQLite starts the log again from its beginning only at the start of a
/// write transaction that finds it wholly copied — which a writer that
/// never pauses never does, so the log would grow by the size of everything
/// written. Once the log is longer than a quarter of the database (at
/// least [`Checkpointer::MIN_LOG_BYTES`]), the checkpointer asks the writer
/// to restart it: before its next transaction the writer runs a PASSIVE
/// checkpoint of its own, which has little left to copy (the
/// checkpointer's passes copied the rest), and the `BEGIN` that follows
/// restarts the log. So the disk a sync needs stays within about 1.25× the
/// database (a RESTART from the checkpointer's connection instead would
/// first have to win the write lock from a writer that retakes it within
/// microseconds, and then hold the writer back for up to seconds).
#[derive(Debug)]
struct Checkpointer {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    /// Set when the log should restart; taken by the writer.
    restart: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Batches the commits of this long before checkpointing them.
    const DELAY: Duration = Duration::from_millis(100);
    /// Checkpoints this often when nobody says a page committed (other writes).
    const IDLE: Duration = Duration::from_secs(2);
    /// A log shorter than this is never restarted early.
    const MIN_LOG_BYTES: i64 = 16 << 20;

    async fn start(options: &SqliteConnectOptions) -> Result<Self> {
        let mut conn = options.connect().await?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await?;
        let wake = Arc::new(Notify::new());
        let notified = wake.clone();
        let restart = Arc::new(AtomicBool::new(false));
        let wanted = restart.clone();
        let task = tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Self::IDLE, notified.notified()).await;
                tokio::time::sleep(Self::DELAY).await;
                match Self::checkpoint(&mut conn, page_size).await {
                    Ok(true) => wanted.store(true, Ordering::Relaxed),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "WAL checkpoint failed; the next one retries");
                    }
                }
            }
        });
        Ok(Self {
            wake,
            task,
            restart,
        })
    }

    /// Copies what it can of the log; true when the log is long enough
    /// that the writer should restart it.
    async fn checkpoint(conn: &mut sqlx::SqliteConnection, page_size: i64) -> Result<bool> {
        let (_busy, log, _copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *conn)
                .await?;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await?;
        let log_bytes = log * page_size;
        Ok(log_bytes > Self::MIN_LOG_BYTES.max(pages * page_size / 4))
    }

    /// Something committed: checkpoint soon.
    fn committed(&self) {
        self.wake.notify_one();
    }

    /// Whether the writer should restart the log now (asked once).
    fn take_restart(&self) -> bool {
        self.restart.swap(false, Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The connection closes with the task; closing the last connection
        // checkpoints whatever is left.
        self.task.abort();
    }
}

fn migrator() -> Migrator {
    crate::migrator(&[
        (
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
        ),
        (
            2,
            "credentials",
            include_str!("../migrations/sqlite/0002_credentials.sql"),
        ),
        (
            3,
            "change_triggers",
            include_str!("../migrations/sqlite/0003_change_triggers.sql"),
        ),
        (
            4,
            "edges_by_source_only",
            include_str!("../migrations/sqlite/0004_edges_by_source_only.sql"),
        ),
        (
            5,
            "resumable_runs",
            include_str!("../migrations/sqlite/0005_resumable_runs.sql"),
        ),
        (
            6,
            "marks",
            include_str!("../migrations/sqlite/0006_marks.sql"),
        ),
        (
            7,
            "staged_deletions",
            include_str!("../migrations/sqlite/0007_staged_deletions.sql"),
        ),
        (
            8,
            "schedules",
            include_str!("../migrations/sqlite/0008_schedules.sql"),
        ),
        (
            9,
            "run_figures",
            include_str!("../migrations/sqlite/0009_run_figures.sql"),
        ),
        (
            10,
            "webhooks",
            include_str!("../migrations/sqlite/0010_webhooks.sql"),
        ),
        (
            11,
            "webhook_processing",
            include_str!("../migrations/sqlite/0011_webhook_processing.sql"),
        ),
        (
            12,
            "entity_counts",
            include_str!("../migrations/sqlite/0012_entity_counts.sql"),
        ),
        (
            13,
            "changed_fields",
            include_str!("../migrations/sqlite/0013_changed_fields.sql"),
        ),
        (
            14,
            "connection_rate_limit",
            include_str!("../migrations/sqlite/0014_connection_rate_limit.sql"),
        ),
        (
            15,
            "feed_horizon",
            include_str!("../migrations/sqlite/0015_feed_horizon.sql"),
        ),
        (
            16,
            "subscriptions",
            include_str!("../migrations/sqlite/0016_subscriptions.sql"),
        ),
        (
            17,
            "records_api",
            include_str!("../migrations/sqlite/0017_records_api.sql"),
        ),
        (
            18,
            "access",
            include_str!("../migrations/sqlite/0018_access.sql"),
        ),
    ])
}

impl SqliteStore {
    /// Wakes whoever watches this store's commits (the change feed).
    fn wake_watchers(&self) {
        let mut watchers = self
            .watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watchers.retain(|watcher| match watcher.upgrade() {
            Some(wake) => {
                wake.notify_one();
                true
            }
            None => false,
        });
    }

    /// Opens (creating if missing) and migrates the database file at `path`.
    /// Several processes may open one file at once: the migrations run in
    /// one `BEGIN IMMEDIATE` transaction (SQLite's write lock), so one
    /// process applies them and the others find them applied.
    pub async fn open(path: &str) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-16000")
            .pragma("temp_store", "memory")
            // A restarted log is cut back to this size (else its file keeps
            // the largest size it ever had).
            .pragma(
                "journal_size_limit",
                (Checkpointer::MIN_LOG_BYTES).to_string(),
            );
        // SQLite opens a file it may not write read-only without a word,
        // and fails only at the first write: say it now.
        if Path::new(path).is_file() && writable(Path::new(path)).is_err() {
            return Err(open_error(path, Error::Open(String::new()), true));
        }
        let opened = || async {
            // The writer never checkpoints; the checkpointer does.
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
            {
                let mut conn = writer.acquire().await?;
                let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
                migrator().run(&mut *tx).await?;
                tx.commit().await?;
            }
            let reader = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.clone())
                .await?;
            let checkpointer = Arc::new(Checkpointer::start(&options).await?);
            Ok::<_, Error>((writer, reader, checkpointer))
        };
        // Processes that create one new file at the same moment race to
        // switch it to WAL, which SQLite settles by answering "busy" to the
        // loser without waiting: it tries again.
        let mut attempt = 0;
        let (writer, reader, checkpointer) = loop {
            match opened().await {
                Ok(opened) => break opened,
                Err(error) if error.is_retryable() && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt.min(10))).await;
                }
                Err(error) => return Err(open_error(path, error, true)),
            }
        };
        Ok(Self {
            path: Arc::new(DbPath::new(path)),
            writer,
            reader,
            checkpointer: Some(checkpointer),
            watchers: Arc::default(),
        })
    }

    /// Opens the database file at `path` for reading only: nothing is
    /// created, migrated or written, so a read-only file or directory
    /// works. A schema that is not current is an error.
    pub async fn open_read_only(path: &str) -> Result<Self> {
        let file = Path::new(path);
        if file.is_dir() {
            return Err(open_error(path, Error::Open(String::new()), false));
        }
        if !file.exists() {
            return Err(Error::Open(format!(
                "there is no database at `{path}`: nothing has been synced into it yet; \
                 run `tributary sync --db {path}` (or `tributary demo --db {path}`) first"
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(30));
        let connect = |options: SqliteConnectOptions| async move {
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            // Reads the schema: fails here, not later, on a file that is
            // not a database.
            let pending = pending(&pool).await?;
            Ok::<_, Error>((pool, pending))
        };
        let (reader, pending) = match connect(options.clone()).await {
            Ok(opened) => opened,
            // A WAL database in a directory this process cannot write: its
            // shared-memory file cannot be made, so read it as a file that
            // nobody writes (whatever a writer left in its log is not seen).
            Err(Error::Database(sqlx::Error::Database(db)))
                if matches!(db.code().as_deref(), Some("14" | "8")) =>
            {
                connect(options.immutable(true))
                    .await
                    .map_err(|error| open_error(path, error, false))?
            }
            Err(error) => return Err(open_error(path, error, false)),
        };
        if !pending.is_empty() {
            return Err(Error::Open(format!(
                "the database `{path}` was written by an older tributary and needs upgrading \
                 (migrations {pending:?}): run any command that writes, e.g. \
                 `tributary sync --db {path}`, once with write access"
            )));
        }
        Ok(Self {
            path: Arc::new(DbPath::new(path)),
            writer: reader.clone(),
            reader,
            checkpointer: None,
            watchers: Arc::default(),
        })
    }

    /// One transaction of [`Store::apply_pages`].
    async fn try_apply_pages(&self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>> {
        let mut tx = self.begin().await?;
        let mut outcomes = vec![PageOutcome::default(); pages.len()];
        for group in groups(pages) {
            let members: Vec<&PageWrite<'_>> = group.iter().map(|&i| &pages[i]).collect();
            let written = write_group(&mut tx, &members).await?;
            for (&i, outcome) in group.iter().zip(written) {
                outcomes[i] = outcome;
            }
        }
        for (run_id, pages, sum, now) in run_totals(pages, &outcomes) {
            let updated = sqlx::query(
                "UPDATE runs SET pages = pages + ?, records_created = records_created + ?, \
                 records_updated = records_updated + ?, records_unchanged = records_unchanged + ?, \
                 records_quarantined = records_quarantined + ?, records_restored = records_restored + ?, \
                 updated_at = ? WHERE id = ? AND state = 'running'",
            )
            .bind(pages)
            .bind(sum.created as i64)
            .bind(sum.updated as i64)
            .bind(sum.unchanged as i64)
            .bind(sum.quarantined as i64)
            .bind(sum.restored as i64)
            .bind(sqlite_ts(&now))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                // The run finished or vanished: commit nothing.
                tx.rollback().await?;
                return Err(Error::NotFound(format!("running run {run_id}")));
            }
        }
        tx.commit().await?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed();
        }
        self.wake_watchers();
        Ok(outcomes)
    }

    /// One attempt of [`Store::start_run`].
    async fn try_start_run(
        &self,
        connection_id: i64,
        kind: RunKind,
        scope: Option<&str>,
        idempotency_key: Option<&str>,
        now: Timestamp,
    ) -> Result<RunStart> {
        let mut tx = self.begin().await?;
        let now = sqlite_ts(&now);
        if let Some(key) = idempotency_key {
            let row =
                sqlx::query("SELECT * FROM runs WHERE connection_id = ? AND idempotency_key = ?")
                    .bind(connection_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(row) = row {
                let run = run_row(&row)?;
                if run.state == RunState::Queued {
                    // Its turn: it starts now.
                    let row = sqlx::query(
                        "UPDATE runs SET state = 'running', scope = ?, started_at = ?, updated_at = ? \
                         WHERE id = ? RETURNING *",
                    )
                    .bind(scope)
                    .bind(&now)
                    .bind(&now)
                    .bind(run.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let run = run_row(&row)?;
                    tx.commit().await?;
                    return Ok(RunStart::New(run));
                }
                tx.commit().await?;
                return Ok(if run.state == RunState::Running {
                    RunStart::Resumed(run)
                } else {
                    RunStart::Finished(run)
                });
            }
        } else {
            // The latest run of the kind: resumed if a dead process left it
            // running, or if it failed for transient causes only.
            let row = sqlx::query(
                "SELECT * FROM runs WHERE connection_id = ? AND kind = ? AND scope IS ? \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(connection_id)
            .bind(kind.as_str())
            .bind(scope)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let run = run_row(&row)?;
                if run.state == RunState::Running {
                    tx.commit().await?;
                    return Ok(RunStart::Resumed(run));
                }
                if run.state == RunState::Failed && run.resumable {
                    let row = sqlx::query(
                        "UPDATE runs SET state = 'running', error = NULL, resumable = 0, \
                         finished_at = NULL, updated_at = ? WHERE id = ? RETURNING *",
                    )
                    .bind(&now)
                    .bind(run.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE checkpoints SET state = 'running', error = NULL, updated_at = ? \
                         WHERE run_id = ? AND state = 'failed'",
                    )
                    .bind(&now)
                    .bind(run.id)
                    .execute(&mut *tx)
                    .await?;
                    let run = run_row(&row)?;
                    tx.commit().await?;
                    return Ok(RunStart::Resumed(run));
                }
            }
        }
        let row = sqlx::query(
            "INSERT INTO runs (connection_id, kind, state, scope, idempotency_key, started_at, \
             updated_at) VALUES (?, ?, 'running', ?, ?, ?, ?) RETURNING *",
        )
        .bind(connection_id)
        .bind(kind.as_str())
        .bind(scope)
        .bind(idempotency_key)
        .bind(&now)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await?;
        let run = run_row(&row)?;
        tx.commit().await?;
        Ok(RunStart::New(run))
    }

    /// Classifies a failed write: a full disk is said in words that name the
    /// database.
    fn write_error(&self, error: Error) -> Error {
        let full = match &error {
            Error::Database(sqlx::Error::Database(db)) => {
                // SQLITE_FULL (and its extended codes).
                db.code()
                    .and_then(|c| c.parse::<i64>().ok())
                    .is_some_and(|n| n & 0xff == 13)
            }
            Error::Database(sqlx::Error::Io(io)) => io.raw_os_error() == Some(28),
            _ => false,
        };
        if full {
            Error::DiskFull(format!(
                "the disk holding the database `{}` is full (SQLite: database or disk is full); \
                 free some space, then run the same command again: it resumes where it stopped",
                self.path.given
            ))
        } else {
            error
        }
    }

    /// A write transaction on the writer connection: `BEGIN IMMEDIATE`, so
    /// it holds SQLite's write lock from its start.
    async fn begin(&self) -> Result<WriteTx> {
        let conn = self.writer.acquire().await?;
        // Unended until COMMIT or ROLLBACK: a BEGIN that fails, or whose
        // caller goes away, closes the connection rather than return it to
        // the pool inside a transaction.
        let mut tx = WriteTx { conn, ended: false };
        let conn = &mut tx.conn;
        if let Some(checkpointer) = &self.checkpointer
            && checkpointer.take_restart()
        {
            // Copies the little the checkpointer's passes left, so the
            // BEGIN below finds the log wholly copied and restarts it.
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut **conn)
                .await?;
            if busy != 0 {
                // The checkpointer is mid-pass: ask again next time.
                checkpointer.restart.store(true, Ordering::Relaxed);
            }
        }
        sqlx::query("BEGIN IMMEDIATE").execute(&mut **conn).await?;
        Ok(tx)
    }
}

impl DbPath {
    fn new(given: &str) -> Self {
        let file = Path::new(given);
        // The directory is made absolute (the file may not exist yet):
        // every process names the same lock files, whatever its working
        // directory or however it spelled the path.
        let absolute = match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) => {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                std::fs::canonicalize(dir).map_or_else(|_| file.to_path_buf(), |d| d.join(name))
            }
            _ => file.to_path_buf(),
        };
        Self {
            given: given.to_owned(),
            absolute,
        }
    }
}

/// A write transaction begun by [`SqliteStore::begin`]. Ended by
/// [`WriteTx::commit`] or [`WriteTx::rollback`]; one that is dropped
/// unended, or whose end failed, closes its connection (which rolls back):
/// after a failed statement SQLite may already have rolled the
/// transaction back itself (a full disk does), and a connection that
/// believes it is still inside one refuses every later `BEGIN`.
struct WriteTx {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    ended: bool,
}

impl WriteTx {
    async fn commit(mut self) -> Result<()> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.ended = true;
        Ok(())
    }

    async fn rollback(mut self) -> Result<()> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        self.ended = true;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

/// The versions of the migrations this binary knows that the database
/// lacks.
async fn pending(pool: &SqlitePool) -> Result<Vec<i64>> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    let applied: Vec<i64> = if table.is_some() {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(crate::missing_migrations(&migrator(), &applied))
}

/// Says why the database file at `path` cannot be opened, once, with the
/// fix. `write`: it was opened to be written.
fn open_error(path: &str, error: Error, write: bool) -> Error {
    let file = Path::new(path);
    let code = match &error {
        Error::Database(sqlx::Error::Database(db)) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .map(|n| n & 0xff),
        _ => None,
    };
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let cannot = |what: &str| format!("cannot open the database `{path}`: {what}");
    let message = if file.is_dir() {
        cannot(&format!(
            "it is a directory; give the path of a file, e.g. `{}`",
            file.join("tributary.db").display()
        ))
    } else if !parent.is_dir() {
        cannot(&format!(
            "the directory `{}` does not exist; create it (`mkdir -p {}`) or give another path",
            parent.display(),
            parent.display()
        ))
    } else if code == Some(26) {
        cannot("the file is not a SQLite database; give another path")
    } else if write
        && file.exists()
        && let Err(error) = writable(file)
    {
        if error.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            cannot(
                "it is on a read-only file system; copy it somewhere writable, or use a command \
                 that only reads (`tributary status`, `tributary records export`)",
            )
        } else {
            cannot(
                "the file is read-only; make it writable (`chmod u+w`), or use a command that \
                 only reads (`tributary status`, `tributary records export`)",
            )
        }
    } else if write && !can_create_in(parent) {
        cannot(&format!(
            "this user may not create files in `{}`; SQLite writes the database and, beside it, \
             its `-wal` and `-shm` files there: check the directory's permissions, or give \
             another path",
            parent.display()
        ))
    } else {
        match error {
            Error::Database(sqlx::Error::Database(db)) => cannot(db.message()),
            Error::Database(sqlx::Error::Io(io)) => cannot(&io.to_string()),
            other => return other,
        }
    };
    Error::Open(message)
}

/// Whether this process may write `file` (else why not).
fn writable(file: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .map(drop)
}

/// Whether this process may create files in `dir` (tried, then removed).
fn can_create_in(dir: &Path) -> bool {
    let probe = dir.join(format!(".tributary-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(error) => error.kind() == std::io::ErrorKind::AlreadyExists,
    }
}

/// SQLite keeps timestamps as RFC 3339 text (see [`sqlite_ts`]) and JSON
/// as text.
impl Columns for SqliteRow {
    fn ts(&self, name: &str) -> Result<Timestamp> {
        parse_ts(self.try_get(name)?)
    }

    fn opt_ts(&self, name: &str) -> Result<Option<Timestamp>> {
        let text: Option<&str> = self.try_get(name)?;
        text.map(parse_ts).transpose()
    }

    fn json(&self, name: &str) -> Result<serde_json::Value> {
        let text: &str = self.try_get(name)?;
        serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("json: {e}")))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn close(&self) {
        let Some(checkpointer) = &self.checkpointer else {
            self.reader.close().await;
            return;
        };
        checkpointer.task.abort();
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(%error, "final WAL checkpoint failed; the log is replayed on next open");
        }
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn ensure_connection(
        &self,
        new: NewConnection<'_>,
        now: Timestamp,
    ) -> Result<Connection> {
        let now = sqlite_ts(&now);
        let sql = format!(
            "INSERT INTO connections (name, adapter, base_url, created_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET \
               updated_at = CASE WHEN adapter = excluded.adapter AND base_url = excluded.base_url \
                            THEN updated_at ELSE excluded.updated_at END, \
               adapter = excluded.adapter, base_url = excluded.base_url \
             RETURNING {CONNECTION_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(new.name)
            .bind(new.adapter)
            .bind(new.base_url)
            .bind(&now)
            .bind(&now)
            .fetch_one(&self.writer)
            .await?;
        connection_row(&row)
    }

    async fn connection(&self, name: &str) -> Result<Option<Connection>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(connection_row).transpose()
    }

    async fn connections(&self) -> Result<Vec<Connection>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(connection_row).collect()
    }

    async fn remove_connection(&self, name: &str) -> Result<bool> {
        // BEGIN IMMEDIATE: no other writer (a sync's page) interleaves.
        let mut tx = self.begin().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM connections WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            tx.rollback().await?;
            return Ok(false);
        };
        for sql in [
            "DELETE FROM changes WHERE connection_id = ?",
            "DELETE FROM marks WHERE connection_id = ?",
            "DELETE FROM subscription_messages WHERE subscription_id IN (SELECT id FROM subscriptions WHERE connection_id = ?)",
            "DELETE FROM subscription_finishes WHERE subscription_id IN (SELECT id FROM subscriptions WHERE connection_id = ?)",
            "DELETE FROM subscriptions WHERE connection_id = ?",
            "DELETE FROM webhook_deliveries WHERE connection_id = ?",
            "DELETE FROM webhook_subjects WHERE connection_id = ?",
            "DELETE FROM webhook_secrets WHERE connection_id = ?",
            "DELETE FROM webhook_pauses WHERE connection_id = ?",
            "DELETE FROM schedules WHERE connection_id = ?",
            "DELETE FROM quarantine WHERE connection_id = ?",
            "DELETE FROM edges WHERE connection_id = ?",
            "DELETE FROM record_search WHERE rowid IN (SELECT id FROM records WHERE connection_id = ?)",
            "DELETE FROM record_versions WHERE connection_id = ?",
            "DELETE FROM records WHERE connection_id = ?",
            "DELETE FROM checkpoints WHERE run_id IN (SELECT id FROM runs WHERE connection_id = ?)",
            "DELETE FROM staged_deletions WHERE run_id IN (SELECT id FROM runs WHERE connection_id = ?)",
            "DELETE FROM runs WHERE connection_id = ?",
            "DELETE FROM connections WHERE id = ?",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn credentials(&self, connection_id: i64) -> Result<Option<SealedCredentials>> {
        let row = sqlx::query(
            "SELECT credentials_kind, credentials_sealed, credentials_version FROM connections \
             WHERE id = ? AND credentials_sealed IS NOT NULL",
        )
        .bind(connection_id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| credentials_row(&row, connection_id))
            .transpose()
    }

    async fn set_credentials(
        &self,
        connection_id: i64,
        kind: &str,
        sealed: &[u8],
        expected_version: Option<i64>,
        now: Timestamp,
    ) -> Result<i64> {
        // One statement: the version check and the write cannot be split by
        // another writer.
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE connections SET credentials_sealed = ?1, credentials_kind = ?2, \
               credentials_version = credentials_version + 1, status = 'active', status_reason = NULL, \
               updated_at = ?3 \
             WHERE id = ?4 AND (?5 IS NULL OR credentials_version = ?5) \
             RETURNING credentials_version",
        )
        .bind(sealed)
        .bind(kind)
        .bind(sqlite_ts(&now))
        .bind(connection_id)
        .bind(expected_version)
        .fetch_optional(&self.writer)
        .await?;
        match version {
            Some(version) => Ok(version),
            None => {
                let stored: Option<i64> =
                    sqlx::query_scalar("SELECT credentials_version FROM connections WHERE id = ?")
                        .bind(connection_id)
                        .fetch_optional(&self.writer)
                        .await?;
                Err(missed_swap(connection_id, expected_version, stored))
            }
        }
    }

    async fn set_connection_status(
        &self,
        connection_id: i64,
        status: ConnectionStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE connections SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(sqlite_ts(&now))
        .bind(connection_id)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("connection {connection_id}")));
        }
        Ok(())
    }

    async fn set_rate_limit(
        &self,
        connection_id: i64,
        budget: Option<RateBudget>,
        now: Timestamp,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE connections SET rate_limit_requests = ?, rate_limit_period_ms = ?, updated_at = ? WHERE id = ?",
        )
        .bind(budget.map(|b| i64::from(b.requests)))
        .bind(budget.map(|b| i64::try_from(b.period.as_millis()).unwrap_or(i64::MAX)))
        .bind(sqlite_ts(&now))
        .bind(connection_id)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("connection {connection_id}")));
        }
        Ok(())
    }

    async fn lock_connection(&self, connection: &str, holder: &str) -> Result<ConnectionLock> {
        let dir = PathBuf::from(format!("{}.locks", self.path.absolute.display()));
        let file = dir.join(lock::file_name(connection));
        let cannot = |error: std::io::Error| {
            Error::Open(format!(
                "cannot take the lock of connection `{connection}` ({}): {error}; check that \
                 the database's directory is writable",
                file.display()
            ))
        };
        std::fs::create_dir_all(&dir).map_err(cannot)?;
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&file)
            .map_err(cannot)?;
        match lock.try_lock() {
            Ok(()) => {
                use std::io::{Seek, Write};
                // Who holds it, for the message another process shows:
                // written over the last holder's words, then cut to length,
                // so a reader never finds the file empty.
                let noted = lock
                    .seek(std::io::SeekFrom::Start(0))
                    .and_then(|_| lock.write_all(holder.as_bytes()))
                    .and_then(|()| lock.set_len(holder.len() as u64));
                if let Err(error) = noted {
                    tracing::warn!(%error, "cannot note the lock's holder");
                }
                Ok(ConnectionLock::new(connection, lock))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                // A holder that has only just taken a new lock file may not
                // have written its name yet.
                let mut held_by = None;
                for _ in 0..20 {
                    held_by = std::fs::read_to_string(&file)
                        .ok()
                        .filter(|h| !h.trim().is_empty());
                    if held_by.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(busy(connection, held_by.as_deref()))
            }
            Err(std::fs::TryLockError::Error(error)) => Err(cannot(error)),
        }
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        pending(&self.reader).await
    }

    async fn start_run(
        &self,
        connection_id: i64,
        kind: RunKind,
        scope: Option<&str>,
        idempotency_key: Option<&str>,
        now: Timestamp,
    ) -> Result<RunStart> {
        self.try_start_run(connection_id, kind, scope, idempotency_key, now)
            .await
            .map_err(|e| self.write_error(e))
    }

    async fn finish_run(
        &self,
        run_id: i64,
        state: RunState,
        error: Option<&str>,
        resumable: bool,
        now: Timestamp,
    ) -> Result<()> {
        let now = sqlite_ts(&now);
        let result = async {
            let mut tx = self.begin().await?;
            let done = sqlx::query(
                "UPDATE runs SET state = ?, error = ?, resumable = ?, updated_at = ?, finished_at = ? \
                 WHERE id = ? AND state = 'running'",
            )
            .bind(state.as_str())
            .bind(error)
            .bind(resumable && state == RunState::Failed)
            .bind(&now)
            .bind(state.is_final().then_some(&now))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            // The end is told to the connection's subscriptions (webhooks
            // out) exactly once: kept in the transaction that ends the run.
            if done.rows_affected() == 1 && state.is_final() {
                sqlx::query(crate::subscriptions::NOTE_FINISH)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(done)
        }
        .await;
        let done = result.map_err(|error| self.write_error(error))?;
        // Not running: a person cancelled it meanwhile, and that stands.
        if done.rows_affected() == 0 && self.run(run_id).await?.is_none() {
            return Err(Error::NotFound(format!("run {run_id}")));
        }
        Ok(())
    }

    async fn queue_run(
        &self,
        connection_id: i64,
        kind: RunKind,
        idempotency_key: &str,
        now: Timestamp,
    ) -> Result<Run> {
        let now = sqlite_ts(&now);
        sqlx::query(
            "INSERT INTO runs (connection_id, kind, state, idempotency_key, started_at, updated_at) \
             VALUES (?, ?, 'queued', ?, ?, ?) ON CONFLICT (connection_id, idempotency_key) DO NOTHING",
        )
        .bind(connection_id)
        .bind(kind.as_str())
        .bind(idempotency_key)
        .bind(&now)
        .bind(&now)
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        let row = sqlx::query("SELECT * FROM runs WHERE connection_id = ? AND idempotency_key = ?")
            .bind(connection_id)
            .bind(idempotency_key)
            .fetch_one(&self.writer)
            .await?;
        run_row(&row)
    }

    async fn queued_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE state = 'queued' ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(run_row).collect()
    }

    async fn add_run_usage(&self, run_id: i64, requests: u64, retries: u64) -> Result<()> {
        sqlx::query("UPDATE runs SET requests = requests + ?, retries = retries + ? WHERE id = ?")
            .bind(requests as i64)
            .bind(retries as i64)
            .bind(run_id)
            .execute(&self.writer)
            .await
            .map_err(|e| self.write_error(e.into()))?;
        Ok(())
    }

    async fn run(&self, run_id: i64) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    async fn runs(&self, connection_id: Option<i64>, limit: u32) -> Result<Vec<Run>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE (?1 IS NULL OR connection_id = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(connection_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(run_row).collect()
    }

    async fn checkpoints(&self, run_id: i64) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY entity")
            .bind(run_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(checkpoint_row).collect()
    }

    async fn set_entity_state(
        &self,
        run_id: i64,
        entity: &str,
        state: EntityState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO checkpoints (run_id, entity, cursor, state, error, updated_at) VALUES (?, ?, 'null', ?, ?, ?) \
             ON CONFLICT (run_id, entity) DO UPDATE SET state = excluded.state, error = excluded.error, \
             updated_at = excluded.updated_at",
        )
        .bind(run_id)
        .bind(entity)
        .bind(state.as_str())
        .bind(error)
        .bind(sqlite_ts(&now))
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        Ok(())
    }

    async fn apply_pages(&self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>> {
        self.try_apply_pages(pages)
            .await
            .map_err(|error| self.write_error(error))
    }

    async fn delete_records(&self, deletion: Deletion<'_>) -> Result<Deleted> {
        let result = async {
            let mut tx = self.begin().await?;
            let deleted = crate::deletions::sqlite(&mut tx, &deletion).await?;
            tx.commit().await?;
            self.wake_watchers();
            Ok(deleted)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    async fn bury(&self, burial: Burial<'_>) -> Result<u64> {
        let result = async {
            let mut tx = self.begin().await?;
            let buried = crate::deletions::bury_sqlite(&mut tx, &burial).await?;
            tx.commit().await?;
            self.wake_watchers();
            Ok(buried)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    async fn stage_deletions(&self, run_id: i64, entity: &str, ids: &[String]) -> Result<()> {
        let result = async {
            let mut tx = self.begin().await?;
            for chunk in ids.chunks(500) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT OR IGNORE INTO staged_deletions (run_id, entity, external_id) ",
                );
                q.push_values(chunk, |mut b, id| {
                    b.push_bind(run_id).push_bind(entity).push_bind(id);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    async fn staged_deletions(&self, run_id: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT entity, external_id FROM staged_deletions WHERE run_id = ? ORDER BY entity, external_id",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn transition_run(
        &self,
        run_id: i64,
        from: RunState,
        to: RunState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let now = sqlite_ts(&now);
        let result = async {
            let mut tx = self.begin().await?;
            let done = sqlx::query(
                "UPDATE runs SET state = ?, error = coalesce(?, error), updated_at = ?, \
                 finished_at = ?, resumable = 0 WHERE id = ? AND state = ?",
            )
            .bind(to.as_str())
            .bind(error)
            .bind(&now)
            .bind(to.is_final().then_some(&now))
            .bind(run_id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
            let moved = done.rows_affected() == 1;
            if moved && to.is_final() {
                sqlx::query("DELETE FROM staged_deletions WHERE run_id = ?")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                if !from.is_final() {
                    sqlx::query(crate::subscriptions::NOTE_FINISH)
                        .bind(run_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(moved)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    async fn set_schedule(&self, schedule: &Schedule) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (connection_id, delta_every_secs, delta_next_at, reconcile_cron, \
             reconcile_next_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (connection_id) DO UPDATE SET delta_every_secs = excluded.delta_every_secs, \
             delta_next_at = excluded.delta_next_at, reconcile_cron = excluded.reconcile_cron, \
             reconcile_next_at = excluded.reconcile_next_at, updated_at = excluded.updated_at",
        )
        .bind(schedule.connection_id)
        .bind(schedule.delta_every_secs)
        .bind(schedule.delta_next_at.as_ref().map(sqlite_ts))
        .bind(&schedule.reconcile_cron)
        .bind(schedule.reconcile_next_at.as_ref().map(sqlite_ts))
        .bind(sqlite_ts(&schedule.updated_at))
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        let rows = sqlx::query(
            "SELECT connection_id, delta_every_secs, delta_next_at, reconcile_cron, reconcile_next_at, \
             updated_at FROM schedules ORDER BY connection_id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let ts = |name: &str| -> Result<Option<Timestamp>> {
                    r.try_get::<Option<String>, _>(name)?
                        .map(|t| parse_ts(&t))
                        .transpose()
                };
                Ok(Schedule {
                    connection_id: r.try_get("connection_id")?,
                    delta_every_secs: r.try_get("delta_every_secs")?,
                    delta_next_at: ts("delta_next_at")?,
                    reconcile_cron: r.try_get("reconcile_cron")?,
                    reconcile_next_at: ts("reconcile_next_at")?,
                    updated_at: parse_ts(&r.try_get::<String, _>("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn claim_slot(
        &self,
        connection_id: i64,
        kind: RunKind,
        due: Timestamp,
        next: Timestamp,
    ) -> Result<bool> {
        let column = crate::slot_column(kind)?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE schedules SET {column} = ? WHERE connection_id = ? AND {column} = ?"
        )))
        .bind(sqlite_ts(&next))
        .bind(connection_id)
        .bind(sqlite_ts(&due))
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_webhook_secret(
        &self,
        connection_id: i64,
        event: Option<&str>,
        sealed: &[u8],
        now: Timestamp,
    ) -> Result<i64> {
        self.insert_webhook_secret(connection_id, event, sealed, now)
            .await
    }

    async fn webhook_secrets(&self, connection_id: i64) -> Result<Vec<WebhookSecret>> {
        self.select_webhook_secrets(connection_id).await
    }

    async fn remove_webhook_secret(&self, id: i64) -> Result<bool> {
        self.delete_webhook_secret(id).await
    }

    async fn receive_deliveries(&self, deliveries: &[NewDelivery]) -> Result<Vec<Received>> {
        self.insert_deliveries(deliveries).await
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        self.select_deliveries(query).await
    }

    async fn webhook_backlog(&self, now: Timestamp) -> Result<Vec<i64>> {
        self.select_backlog(now).await
    }

    async fn due_deliveries(
        &self,
        connection_id: i64,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.select_due(connection_id, now, limit).await
    }

    async fn settle_deliveries(
        &self,
        settled: &[(i64, i64, Settled)],
        now: Timestamp,
    ) -> Result<u64> {
        self.update_settled(settled, now).await
    }

    async fn replay_deliveries(&self, ids: &[i64], since: Option<Timestamp>) -> Result<u64> {
        self.update_replayed(ids, since).await
    }

    async fn set_webhooks_paused(
        &self,
        connection_id: i64,
        paused: bool,
        now: Timestamp,
    ) -> Result<()> {
        self.update_paused(connection_id, paused, now).await
    }

    async fn webhook_pauses(&self) -> Result<Vec<i64>> {
        self.select_pauses().await
    }

    async fn expire_deliveries(&self, before: Timestamp) -> Result<u64> {
        self.delete_expired(before).await
    }

    async fn add_subscription(&self, new: &NewSubscription<'_>) -> Result<Subscription> {
        self.insert_subscription(new).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.select_subscriptions(None).await
    }

    async fn subscription(&self, id: i64) -> Result<Option<Subscription>> {
        Ok(self.select_subscriptions(Some(id)).await?.pop())
    }

    async fn remove_subscription(&self, id: i64) -> Result<bool> {
        self.delete_subscription(id).await
    }

    async fn set_subscription_state(
        &self,
        id: i64,
        state: SubscriptionState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        self.update_subscription_state(id, state, reason, now).await
    }

    async fn finished_runs(&self, subscription_id: i64) -> Result<Vec<FinishedRun>> {
        self.select_finished(subscription_id).await
    }

    async fn enqueue_messages(&self, enqueue: &Enqueue<'_>) -> Result<bool> {
        self.insert_messages(enqueue).await
    }

    async fn claim_messages(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.claim(now, lease_until, limit).await
    }

    async fn settle_message(
        &self,
        id: i64,
        attempts: i64,
        outcome: &Attempted,
        now: Timestamp,
    ) -> Result<bool> {
        self.settle(id, attempts, outcome, now).await
    }

    async fn release_message(&self, id: i64, attempts: i64, now: Timestamp) -> Result<bool> {
        self.release(id, attempts, now).await
    }

    async fn replay_messages(
        &self,
        subscription_id: i64,
        message_ids: &[String],
        now: Timestamp,
    ) -> Result<u64> {
        self.replay(subscription_id, message_ids, now).await
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<Message>> {
        self.select_messages(query).await
    }

    async fn outbox_stats(&self) -> Result<Vec<OutboxStats>> {
        self.select_outbox_stats().await
    }

    async fn next_message_due(&self) -> Result<Option<Timestamp>> {
        self.select_next_due().await
    }

    async fn expire_messages(&self, before: Timestamp) -> Result<u64> {
        self.delete_delivered(before).await
    }

    async fn marks(&self, connection_id: i64) -> Result<Vec<(String, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT entity, high_water FROM marks WHERE connection_id = ? ORDER BY entity",
        )
        .bind(connection_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, crate::plan::parse_ts(r.try_get(1)?)?)))
            .collect()
    }

    async fn changed_ids(
        &self,
        connection_id: i64,
        entity: &str,
        run_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        // The unique index walked in order, filtered: one pass over the
        // entity's ids across all batches.
        let rows = sqlx::query(
            "SELECT external_id FROM records WHERE connection_id = ? AND entity = ? AND deleted_at IS NULL \
             AND external_id > ? AND last_run_id = ? ORDER BY external_id LIMIT ?",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(after.unwrap_or(""))
        .bind(run_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn external_ids(
        &self,
        connection_id: i64,
        entity: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT external_id FROM records WHERE connection_id = ? AND entity = ? AND deleted_at IS NULL \
             AND external_id > ? ORDER BY external_id LIMIT ?",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn records(&self, query: &RecordQuery) -> Result<Vec<StoredRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records r JOIN connections c ON c.id = r.connection_id \
             WHERE r.id > ?1 AND (?2 IS NULL OR r.connection_id = ?2) AND (?3 IS NULL OR r.entity = ?3) \
             AND (?4 OR r.deleted_at IS NULL) ORDER BY r.id LIMIT ?5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.after_id)
            .bind(query.connection_id)
            .bind(query.entity.as_deref())
            .bind(query.include_deleted)
            .bind(i64::from(query.limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(record_row).collect()
    }

    async fn record(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Option<StoredRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records r JOIN connections c ON c.id = r.connection_id \
             WHERE r.connection_id = ? AND r.entity = ? AND r.external_id = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(connection_id)
            .bind(entity)
            .bind(external_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(record_row).transpose()
    }

    async fn stamps(
        &self,
        connection_id: i64,
        entity: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, Stamp>> {
        let mut stamps = HashMap::new();
        if external_ids.is_empty() {
            return Ok(stamps);
        }
        let rows = sqlx::query(
            "SELECT external_id, source_updated_at, deleted_at FROM records \
             WHERE connection_id = ? AND entity = ? AND external_id IN (SELECT value FROM json_each(?))",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(serde_json::to_string(external_ids).map_err(|e| Error::Corrupt(e.to_string()))?)
        .fetch_all(&self.reader)
        .await?;
        for row in &rows {
            stamps.insert(
                row.try_get::<String, _>("external_id")?,
                Stamp {
                    source_updated_at: row.opt_ts("source_updated_at")?,
                    deleted_at: row.opt_ts("deleted_at")?,
                },
            );
        }
        Ok(stamps)
    }

    async fn expire_changes(&self, before: Timestamp) -> Result<u64> {
        let result = async {
            let mut tx = self.begin().await?;
            let gone: Option<i64> =
                sqlx::query_scalar("SELECT max(seq) FROM changes WHERE changed_at < ?")
                    .bind(sqlite_ts(&before))
                    .fetch_one(&mut *tx)
                    .await?;
            let Some(gone) = gone else {
                return Ok(0);
            };
            let deleted = sqlx::query("DELETE FROM changes WHERE seq <= ?")
                .bind(gone)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("UPDATE feed_horizon SET seq = max(seq, ?) WHERE id = 1")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(deleted)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    async fn feed_head(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM changes")
            .fetch_one(&self.reader)
            .await?;
        Ok(seq)
    }

    async fn feed_horizon(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM feed_horizon WHERE id = 1")
            .fetch_one(&self.reader)
            .await?;
        Ok(seq)
    }

    async fn edges_from(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<EdgeRef>> {
        let rows = sqlx::query(
            "SELECT rel, to_entity, to_external_id, hard FROM edges WHERE connection_id = ? AND from_entity = ? \
             AND from_external_id = ? ORDER BY rel, to_entity, to_external_id",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(edge_row).collect()
    }

    async fn changes(
        &self,
        connection_id: Option<i64>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT * FROM changes WHERE seq > ?1 AND (?2 IS NULL OR connection_id = ?2) ORDER BY seq LIMIT ?3",
        )
        .bind(after_seq)
        .bind(connection_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(change_row).collect()
    }

    async fn quarantined(
        &self,
        connection_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Quarantined>> {
        let rows = sqlx::query(
            "SELECT * FROM quarantine WHERE (?1 IS NULL OR connection_id = ?1) ORDER BY id LIMIT ?2",
        )
        .bind(connection_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(quarantined_row).collect()
    }

    async fn entity_counts(&self, connection_id: i64) -> Result<Vec<EntityCount>> {
        let rows = sqlx::query(
            "SELECT entity, sum(deleted_at IS NULL), sum(deleted_at IS NOT NULL) FROM records \
             WHERE connection_id = ? GROUP BY entity ORDER BY entity",
        )
        .bind(connection_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(entity_count_row).collect()
    }

    async fn watch_changes(&self, wake: Arc<tokio::sync::Notify>) -> Result<bool> {
        self.watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::downgrade(&wake));
        Ok(false)
    }

    async fn create_token(
        &self,
        name: &str,
        role: crate::TokenRole,
        hash: &str,
        now: Timestamp,
    ) -> Result<crate::ApiToken> {
        self.insert_token(name, role, hash, now).await
    }

    async fn tokens(&self) -> Result<Vec<crate::ApiToken>> {
        self.select_tokens(None).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<crate::ApiToken>> {
        Ok(self.select_tokens(Some(hash)).await?.into_iter().next())
    }

    async fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool> {
        self.update_token_revoked(id, now).await
    }

    async fn add_webhook_subjects(&self, subjects: &[crate::Subject]) -> Result<()> {
        if subjects.is_empty() {
            return Ok(());
        }
        self.insert_subjects(subjects).await
    }

    async fn record_changes(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
        limit: u32,
    ) -> Result<Vec<Change>> {
        self.select_record_changes(connection_id, entity, external_id, limit)
            .await
    }

    async fn record_deliveries(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<Delivery>> {
        self.select_record_deliveries(connection_id, entity, external_id)
            .await
    }

    async fn records_page(&self, query: &RecordsPageQuery) -> Result<RecordsPage> {
        self.select_records_page(query).await
    }

    async fn edges_to(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<IncomingEdge>> {
        self.select_edges_to(connection_id, entity, external_id)
            .await
    }

    async fn index_search(&self, limit: u32) -> Result<SearchIndexStep> {
        self.index_search_step(limit).await
    }

    async fn search_cursor(&self) -> Result<i64> {
        self.select_search_cursor().await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        self.select_search(query).await
    }
}

/// Writes a group of pages (see [`groups`]: one connection, run and entity,
/// no row touched twice) inside the caller's transaction with one set of
/// multi-row statements — everything but the runs' counters (see
/// [`run_totals`]) — and returns each page's outcome. Statements are what
/// a SQLite commit pays for beyond the rows themselves (each is a round
/// trip to the driver's thread), so a group of sixteen pages costs about as
/// many as one did. Groups are written in the order they were opened, so
/// the change feed orders a batch's entities by their first page; each
/// record's changes stay in order.
async fn write_group(
    tx: &mut sqlx::SqliteConnection,
    pages: &[&PageWrite<'_>],
) -> Result<Vec<PageOutcome>> {
    let (first, last) = match pages {
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
        [] => return Ok(Vec::new()),
    };
    // Disjoint across the group's pages, by construction.
    let ids: Vec<&str> = pages.iter().flat_map(|p| unique_ids(p.records)).collect();

    // 1. What is stored for these ids.
    let mut existing = HashMap::with_capacity(ids.len());
    for chunk in chunks(&ids) {
        let mut q = by_ids(
            "SELECT external_id, content_hash, deleted_at IS NOT NULL AS deleted FROM records \
             WHERE connection_id = ",
            first,
            "entity",
            "external_id",
            chunk,
        );
        for row in q.build().fetch_all(&mut *tx).await? {
            let (id, stored) = existing_row(&row)?;
            existing.insert(id, stored);
        }
    }
    let plans: Vec<_> = pages.iter().map(|p| plan(p.records, &existing)).collect();

    // 2. Records, 3. their edges, 4. change-feed rows. The JSON texts are
    // shared with the driver, not copied; the values every row repeats are
    // shared too. (Numbered parameters would bind them once, but sqlx looks
    // each one up by name — quadratic in the statement's parameters.)
    let entity: Arc<str> = first.entity.into();
    let canonical_entity: Arc<str> = first.canonical_entity.into();
    let writes: Vec<(&PreparedRecord, Arc<str>)> = pages
        .iter()
        .zip(&plans)
        .flat_map(|(page, plan)| {
            let now: Arc<str> = sqlite_ts(&page.now).into();
            plan.writes.iter().map(move |(r, _)| (*r, now.clone()))
        })
        .collect();
    for chunk in chunks(&writes) {
        let mut args = SqliteArguments::default();
        for (r, now) in chunk {
            add(&mut args, first.connection_id)?;
            add(&mut args, entity.clone())?;
            add(&mut args, r.external_id.as_str())?;
            add(&mut args, canonical_entity.clone())?;
            add(&mut args, r.raw_json.clone())?;
            add(&mut args, r.canonical_json.clone())?;
            add(&mut args, r.content_hash.clone())?;
            add(&mut args, r.source_updated_at.as_ref().map(sqlite_ts))?;
            add(&mut args, now.clone())?; // first seen
            add(&mut args, now.clone())?; // last modified
            add(&mut args, first.run_id)?;
        }
        sqlx::query_with(AssertSqlSafe(statements::records(chunk.len())), args)
            .execute(&mut *tx)
            .await?;

        // Records stored before (changed or back from deleted) lose their old edges.
        let replaced: Vec<&str> = chunk
            .iter()
            .map(|(r, _)| r.external_id.as_str())
            .filter(|id| existing.contains_key(*id))
            .collect();
        if !replaced.is_empty() {
            let mut q = by_ids(
                "DELETE FROM edges WHERE connection_id = ",
                first,
                "from_entity",
                "from_external_id",
                &replaced,
            );
            q.build().execute(&mut *tx).await?;
        }

        let edges: Vec<(&str, &EdgeRef)> = chunk
            .iter()
            .flat_map(|(r, _)| r.edges.iter().map(move |e| (r.external_id.as_str(), e)))
            .collect();
        for edge_chunk in chunks(&edges) {
            let mut args = SqliteArguments::default();
            for (from, e) in edge_chunk {
                add(&mut args, first.connection_id)?;
                add(&mut args, entity.clone())?;
                add(&mut args, *from)?;
                add(&mut args, e.rel.as_str())?;
                add(&mut args, e.to_entity.as_str())?;
                add(&mut args, e.to_external_id.as_str())?;
                add(&mut args, e.hard)?;
            }
            sqlx::query_with(AssertSqlSafe(statements::edges(edge_chunk.len())), args)
                .execute(&mut *tx)
                .await?;
        }
        // 4. The change-feed rows are written by the triggers of migration
        // 0003, inside the insert.
    }

    // 5. Quarantine: records that failed now, and records that no longer fail.
    let bad: Vec<(&QuarantinedRecord, String)> = pages
        .iter()
        .flat_map(|page| {
            let now = sqlite_ts(&page.now);
            page.quarantined.iter().map(move |q| (q, now.clone()))
        })
        .collect();
    for chunk in chunks(&bad) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO quarantine (connection_id, entity, external_id, run_id, raw, error, first_seen_at, last_seen_at) ",
        );
        q.push_values(chunk, |mut b, (bad, now)| {
            b.push_bind(first.connection_id)
                .push_bind(first.entity)
                .push_bind(quarantine_key(bad))
                .push_bind(first.run_id)
                .push_bind(tributary_core::canonical_json(&bad.raw))
                .push_bind(bad.error.as_str())
                .push_bind(now.as_str())
                .push_bind(now.as_str());
        });
        q.push(
            " ON CONFLICT (connection_id, entity, external_id) DO UPDATE SET run_id = excluded.run_id, \
             raw = excluded.raw, error = excluded.error, last_seen_at = excluded.last_seen_at",
        );
        q.build().execute(&mut *tx).await?;
    }
    // Records that no longer fail leave quarantine (skipped when this
    // entity has nothing quarantined: one index probe instead of a
    // lookup per record).
    let any_quarantined: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM quarantine WHERE connection_id = ? AND entity = ?)",
    )
    .bind(first.connection_id)
    .bind(first.entity)
    .fetch_one(&mut *tx)
    .await?;
    for chunk in chunks(&ids).filter(|_| any_quarantined) {
        let mut q = by_ids(
            "DELETE FROM quarantine WHERE connection_id = ",
            first,
            "entity",
            "external_id",
            chunk,
        );
        q.build().execute(&mut *tx).await?;
    }

    // 6. The entity's checkpoint moves to where the group's last page
    // leaves it, counting every page (7. run counters: the caller).
    let outcomes: Vec<PageOutcome> = pages
        .iter()
        .zip(&plans)
        .map(|(page, plan)| plan.outcome(page.quarantined.len()))
        .collect();
    let seen: u64 = outcomes.iter().map(PageOutcome::records).sum();
    let state = if last.finished {
        EntityState::Done
    } else {
        EntityState::Running
    };
    // Each page's total replaces the last one it reports.
    let total = pages.iter().rev().find_map(|p| p.total);
    let sum = |f: fn(&PageOutcome) -> u64| outcomes.iter().map(f).sum::<u64>() as i64;
    sqlx::query(
        "INSERT INTO checkpoints (run_id, entity, cursor, state, pages, records, total, updated_at, \
         created, updated, unchanged, quarantined, restored) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (run_id, entity) DO UPDATE SET cursor = excluded.cursor, state = excluded.state, \
         pages = pages + excluded.pages, records = records + excluded.records, total = coalesce(excluded.total, total), \
         created = created + excluded.created, updated = updated + excluded.updated, \
         unchanged = unchanged + excluded.unchanged, quarantined = quarantined + excluded.quarantined, \
         restored = restored + excluded.restored, \
         error = NULL, updated_at = excluded.updated_at",
    )
    .bind(first.run_id)
    .bind(first.entity)
    .bind(serde_json::to_string(&last.cursor.0).expect("json values serialise"))
    .bind(state.as_str())
    .bind(pages.len() as i64)
    .bind(seen as i64)
    .bind(total)
    .bind(sqlite_ts(&last.now))
    .bind(sum(|o| o.created))
    .bind(sum(|o| o.updated))
    .bind(sum(|o| o.unchanged))
    .bind(sum(|o| o.quarantined))
    .bind(sum(|o| o.restored))
    .execute(&mut *tx)
    .await?;
    // 7. The entity's high-water mark, in the same transaction.
    if let Some(mark) = pages.iter().filter_map(|p| p.mark).max() {
        sqlx::query(
            "INSERT INTO marks (connection_id, entity, high_water, run_id, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (connection_id, entity) DO UPDATE SET high_water = max(high_water, excluded.high_water), \
             run_id = excluded.run_id, updated_at = excluded.updated_at",
        )
        .bind(first.connection_id)
        .bind(first.entity)
        .bind(sqlite_ts(&mark))
        .bind(first.run_id)
        .bind(sqlite_ts(&last.now))
        .execute(&mut *tx)
        .await?;
    }
    Ok(outcomes)
}

/// `head` (ending in `connection_id = `) completed for the rows of `page`'s
/// connection and entity whose `id_column` is one of `ids`.
fn by_ids<'a>(
    head: &str,
    page: &PageWrite<'a>,
    entity_column: &str,
    id_column: &str,
    ids: &[&'a str],
) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(head);
    q.push_bind(page.connection_id)
        .push(format_args!(" AND {entity_column} = "))
        .push_bind(page.entity)
        .push(format_args!(" AND {id_column} IN ("));
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
    q
}

/// Binds one more argument.
fn add<'t, T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>>(
    args: &mut SqliteArguments,
    value: T,
) -> Result<()> {
    args.add(value)
        .map_err(|e| Error::Database(sqlx::Error::Encode(e)))
}

/// The multi-row statements of [`write_page`], by row count: built once per
/// size and shared (the driver's statement cache then finds them by text).
mod statements {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Kind {
        Records,
        Edges,
    }

    type Cache = Mutex<HashMap<(Kind, usize), Arc<str>>>;

    fn cached(kind: Kind, rows: usize, build: impl FnOnce() -> String) -> Arc<str> {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .entry((kind, rows))
            .or_insert_with(|| build().into())
            .clone()
    }

    /// `VALUES (tuple), (tuple), …` with `rows` tuples.
    fn values(rows: usize, tuple: &str) -> String {
        let mut sql = String::with_capacity(8 + rows * (tuple.len() + 2));
        sql.push_str("VALUES ");
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(tuple);
        }
        sql
    }

    /// Per row: connection, entity, external id, canonical entity, raw,
    /// canonical, hash, updated_at, now (first seen), now (last modified),
    /// run.
    pub(super) fn records(rows: usize) -> Arc<str> {
        cached(Kind::Records, rows, || {
            format!(
                "INSERT INTO records (connection_id, entity, external_id, canonical_entity, raw, canonical, \
                 content_hash, source_updated_at, first_seen_at, last_modified_at, deleted_at, last_run_id) {} \
                 ON CONFLICT (connection_id, entity, external_id) DO UPDATE SET \
                 canonical_entity = excluded.canonical_entity, raw = excluded.raw, canonical = excluded.canonical, \
                 content_hash = excluded.content_hash, source_updated_at = excluded.source_updated_at, \
                 last_modified_at = excluded.last_modified_at, deleted_at = NULL, last_run_id = excluded.last_run_id",
                values(rows, "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)")
            )
        })
    }

    /// Per row: connection, entity, from id, rel, to entity, to id, hard.
    pub(super) fn edges(rows: usize) -> Arc<str> {
        cached(Kind::Edges, rows, || {
            format!(
                "INSERT INTO edges (connection_id, from_entity, from_external_id, rel, to_entity, to_external_id, hard) \
                 {} ON CONFLICT DO NOTHING",
                values(rows, "(?, ?, ?, ?, ?, ?, ?)")
            )
        })
    }
}
