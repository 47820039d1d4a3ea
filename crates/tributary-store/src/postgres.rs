//! The PostgreSQL store: production and several nodes.
//!
//! Pages are written with one statement per table, binding whole columns as
//! arrays (`UNNEST`), so a page costs the same handful of round trips
//! whatever its size.

mod access;
mod records_api;
mod subscriptions;
mod webhooks;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{ConnectOptions as _, Connection as _, Row};
use tributary_core::{ChangeKind, EdgeRef, PreparedRecord, RunKind, RunState, Timestamp};

use crate::Schedule;
use crate::lock::{self, ConnectionLock, PG_LOCK_CLASS, busy};
use crate::plan::{plan, unique_ids};
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

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    /// Entities, by connection, whose last page had none of its records
    /// stored (a first sync): their next pages skip the lookup and insert
    /// every record as new. If one was stored after all, its insert fails
    /// with a unique violation and the group is planned again, with
    /// lookups. Shared by the stores `for_another_runtime` hands out.
    new_only: Arc<Mutex<HashSet<(i64, String)>>>,
}

fn migrator() -> Migrator {
    crate::migrator(&[
        (
            1,
            "init",
            include_str!("../migrations/postgres/0001_init.sql"),
        ),
        (
            2,
            "credentials",
            include_str!("../migrations/postgres/0002_credentials.sql"),
        ),
        (
            3,
            "bulk_writes",
            include_str!("../migrations/postgres/0003_bulk_writes.sql"),
        ),
        (
            4,
            "raw_json_c_collation",
            include_str!("../migrations/postgres/0004_raw_json_c_collation.sql"),
        ),
        (
            5,
            "edges_by_source_only",
            include_str!("../migrations/postgres/0005_edges_by_source_only.sql"),
        ),
        (
            6,
            "resumable_runs",
            include_str!("../migrations/postgres/0006_resumable_runs.sql"),
        ),
        (
            7,
            "marks",
            include_str!("../migrations/postgres/0007_marks.sql"),
        ),
        (
            8,
            "staged_deletions",
            include_str!("../migrations/postgres/0008_staged_deletions.sql"),
        ),
        (
            9,
            "schedules",
            include_str!("../migrations/postgres/0009_schedules.sql"),
        ),
        (
            10,
            "run_figures",
            include_str!("../migrations/postgres/0010_run_figures.sql"),
        ),
        (
            11,
            "webhooks",
            include_str!("../migrations/postgres/0011_webhooks.sql"),
        ),
        (
            12,
            "webhook_processing",
            include_str!("../migrations/postgres/0012_webhook_processing.sql"),
        ),
        (
            13,
            "entity_counts",
            include_str!("../migrations/postgres/0013_entity_counts.sql"),
        ),
        (
            14,
            "changed_fields",
            include_str!("../migrations/postgres/0014_changed_fields.sql"),
        ),
        (
            15,
            "connection_rate_limit",
            include_str!("../migrations/postgres/0015_connection_rate_limit.sql"),
        ),
        (
            16,
            "feed_horizon",
            include_str!("../migrations/postgres/0016_feed_horizon.sql"),
        ),
        (
            17,
            "feed_order",
            include_str!("../migrations/postgres/0017_feed_order.sql"),
        ),
        (
            18,
            "subscriptions",
            include_str!("../migrations/postgres/0018_subscriptions.sql"),
        ),
        (
            19,
            "records_api",
            include_str!("../migrations/postgres/0019_records_api.sql"),
        ),
        (
            20,
            "access",
            include_str!("../migrations/postgres/0020_access.sql"),
        ),
        (
            21,
            "feed_notify",
            include_str!("../migrations/postgres/0021_feed_notify.sql"),
        ),
    ])
}

impl PgStore {
    /// One attempt at [`Store::apply_pages`]; `look_up` forces every
    /// page's lookup (see [`PgStore::new_only`]).
    async fn try_apply_pages(
        &self,
        pages: &[PageWrite<'_>],
        look_up: bool,
    ) -> Result<Vec<PageOutcome>> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(pages.len());
        for page in pages {
            let key = (page.connection_id, page.entity.to_owned());
            let assume_new = !look_up && self.new_only().contains(&key);
            let (outcome, looked_up) = write_page(&mut tx, page, assume_new).await?;
            if let Some(found_stored) = looked_up {
                let mut hints = self.new_only();
                if found_stored || page.records.is_empty() {
                    hints.remove(&key);
                } else {
                    hints.insert(key);
                }
            }
            outcomes.push(outcome);
        }
        for (run_id, pages, sum, now) in run_totals(pages, &outcomes) {
            let updated = sqlx::query(
                "UPDATE runs SET pages = pages + $1, records_created = records_created + $2, \
                 records_updated = records_updated + $3, records_unchanged = records_unchanged + $4, \
                 records_quarantined = records_quarantined + $5, records_restored = records_restored + $8, \
                 updated_at = $6 WHERE id = $7 AND state = 'running'",
            )
            .bind(pages)
            .bind(sum.created as i64)
            .bind(sum.updated as i64)
            .bind(sum.unchanged as i64)
            .bind(sum.quarantined as i64)
            .bind(now)
            .bind(run_id)
            .bind(sum.restored as i64)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                tx.rollback().await?;
                return Err(Error::NotFound(format!("running run {run_id}")));
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    fn new_only(&self) -> std::sync::MutexGuard<'_, HashSet<(i64, String)>> {
        self.new_only
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connects to and migrates the database at `url`. Several processes
    /// may connect at once: the migrations run under an advisory lock.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::connect_unmigrated(url).await?;
        migrator().run(&store.pool).await?;
        Ok(store)
    }

    /// Connects to the database at `url` without migrating it; a schema
    /// that is not current is an error that says how to upgrade it.
    pub async fn connect_read_only(url: &str) -> Result<Self> {
        let store = Self::connect_unmigrated(url).await?;
        let pending = store.pending_migrations().await?;
        if !pending.is_empty() {
            return Err(Error::Open(format!(
                "{} was written by an older tributary and needs upgrading (migrations \
                 {pending:?}): run any command that writes, e.g. `tributary sync`, once",
                place(&store.options)
            )));
        }
        Ok(store)
    }

    async fn connect_unmigrated(url: &str) -> Result<Self> {
        // Asynchronous commit: a commit returns before its WAL reaches disk.
        // Safe here because every page commits its records and its
        // checkpoint in one transaction — if the server itself crashes, the
        // last few pages are lost together with their checkpoints and are
        // simply fetched again; nothing is ever half-applied. (The same
        // reasoning as SQLite's WAL with synchronous=NORMAL.) Tributary's own
        // process dying loses nothing at all.
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| {
                Error::Open(format!(
                    "`{}` is not a PostgreSQL URL ({error}); write it as \
                     postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                    tributary_core::redact_url(url)
                ))
            })?
            .options([("synchronous_commit", "off")]);
        // One connection first, on a short leash: a server that is down or
        // a database that does not exist is said at once, in words (a pool
        // retries a refused connection until its own timeout, and then
        // says only that it timed out).
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await;
        match probe {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(error)) => return Err(connect_error(&options, error)),
            Err(_) => {
                return Err(Error::Open(format!(
                    "cannot reach {}: no answer within {} s; check the host and port, and that \
                     the server is running",
                    place(&options),
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|error| connect_error(&options, error))?;
        Ok(Self {
            pool,
            options,
            new_only: Arc::default(),
        })
    }
}

/// How long connecting may take before the server is called unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a connection goes, in words: the server (host and port, or its
/// socket), the database and the user — never the password.
fn place(options: &PgConnectOptions) -> String {
    format!(
        "database `{}` on {} (user `{}`)",
        options.get_database().unwrap_or(options.get_username()),
        server(options),
        options.get_username()
    )
}

fn server(options: &PgConnectOptions) -> String {
    match options.get_socket() {
        Some(dir) => format!(
            "the PostgreSQL server at socket {}/.s.PGSQL.{}",
            dir.display(),
            options.get_port()
        ),
        None if options.get_host().starts_with('/') => format!(
            "the PostgreSQL server at socket {}/.s.PGSQL.{}",
            options.get_host(),
            options.get_port()
        ),
        None => format!(
            "the PostgreSQL server at {}:{}",
            options.get_host(),
            options.get_port()
        ),
    }
}

/// Says why connecting failed, once, with the fix.
fn connect_error(options: &PgConnectOptions, error: sqlx::Error) -> Error {
    let server = server(options);
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    let message = match &error {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => format!(
                "nothing answers at {server} ({}): start the server, or fix the host, port or \
                 socket in the URL",
                if io.kind() == std::io::ErrorKind::NotFound {
                    "no such socket"
                } else {
                    "connection refused"
                }
            ),
            _ => format!("cannot reach {server}: {io}"),
        },
        sqlx::Error::PoolTimedOut => format!(
            "cannot reach {server}: no connection within the pool's timeout; check that the \
             server is running and accepts more connections"
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => format!(
                "database `{database}` does not exist on {server}: create it (`createdb \
                 {database}`), or fix the database name in the URL"
            ),
            Some("28P01") => format!(
                "{server} refused the password of user `{user}`: fix the user or password in \
                 the URL"
            ),
            Some("28000") => format!(
                "{server} does not let user `{user}` in ({}): allow it in pg_hba.conf, or \
                 connect as another user",
                db.message()
            ),
            Some("53300") => format!(
                "{server} has no connection slots left ({}): raise max_connections or close \
                 other clients",
                db.message()
            ),
            _ => format!("cannot open {}: {}", place(options), db.message()),
        },
        other => format!("cannot open {}: {other}", place(options)),
    };
    Error::Open(message)
}

/// PostgreSQL decodes `timestamptz` and `json`/`jsonb` columns itself.
impl Columns for PgRow {
    fn ts(&self, name: &str) -> Result<Timestamp> {
        Ok(self.try_get(name)?)
    }

    fn opt_ts(&self, name: &str) -> Result<Option<Timestamp>> {
        Ok(self.try_get(name)?)
    }

    fn json(&self, name: &str) -> Result<Value> {
        Ok(self.try_get(name)?)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn for_another_runtime(&self) -> Result<Option<Arc<dyn Store>>> {
        // A connection belongs to the runtime that opened it: the other
        // runtime gets a pool of its own (one connection per commit lane).
        let pool = PgPoolOptions::new()
            .max_connections(self.commit_lanes() as u32)
            .connect_with(self.options.clone())
            .await?;
        Ok(Some(Arc::new(Self {
            pool,
            options: self.options.clone(),
            new_only: self.new_only.clone(),
        })))
    }

    fn commit_lanes(&self) -> usize {
        // Of the pool's 10 connections, leaving room for readers and for
        // listing parents while pages commit.
        4
    }

    async fn ensure_connection(
        &self,
        new: NewConnection<'_>,
        now: Timestamp,
    ) -> Result<Connection> {
        let sql = format!(
            "INSERT INTO connections (name, adapter, base_url, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET \
               updated_at = CASE WHEN connections.adapter = excluded.adapter AND connections.base_url = excluded.base_url \
                            THEN connections.updated_at ELSE excluded.updated_at END, \
               adapter = excluded.adapter, base_url = excluded.base_url \
             RETURNING {CONNECTION_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(new.name)
            .bind(new.adapter)
            .bind(new.base_url)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        connection_row(&row)
    }

    async fn connection(&self, name: &str) -> Result<Option<Connection>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(connection_row).transpose()
    }

    async fn connections(&self) -> Result<Vec<Connection>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(connection_row).collect()
    }

    async fn remove_connection(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Lock the connection, then its runs: a page being committed holds
        // a lock on its run's row (checkpoint foreign key, counters), so
        // this waits for pages in flight and makes later ones fail; new
        // runs and records need the connection row. Every DELETE below then
        // sees everything committed for this connection.
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM connections WHERE name = $1 FOR UPDATE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query("SELECT id FROM runs WHERE connection_id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM changes WHERE connection_id = $1",
            "DELETE FROM marks WHERE connection_id = $1",
            "DELETE FROM subscription_messages m USING subscriptions s WHERE m.subscription_id = s.id AND s.connection_id = $1",
            "DELETE FROM subscription_finishes f USING subscriptions s WHERE f.subscription_id = s.id AND s.connection_id = $1",
            "DELETE FROM subscriptions WHERE connection_id = $1",
            "DELETE FROM webhook_deliveries WHERE connection_id = $1",
            "DELETE FROM webhook_subjects WHERE connection_id = $1",
            "DELETE FROM webhook_secrets WHERE connection_id = $1",
            "DELETE FROM webhook_pauses WHERE connection_id = $1",
            "DELETE FROM schedules WHERE connection_id = $1",
            "DELETE FROM quarantine WHERE connection_id = $1",
            "DELETE FROM edges WHERE connection_id = $1",
            "DELETE FROM record_search s USING records r WHERE s.record_id = r.id AND r.connection_id = $1",
            "DELETE FROM record_versions WHERE connection_id = $1",
            "DELETE FROM records WHERE connection_id = $1",
            "DELETE FROM checkpoints c USING runs r WHERE c.run_id = r.id AND r.connection_id = $1",
            "DELETE FROM staged_deletions s USING runs r WHERE s.run_id = r.id AND r.connection_id = $1",
            "DELETE FROM runs WHERE connection_id = $1",
            "DELETE FROM connections WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn credentials(&self, connection_id: i64) -> Result<Option<SealedCredentials>> {
        let row = sqlx::query(
            "SELECT credentials_kind, credentials_sealed, credentials_version FROM connections \
             WHERE id = $1 AND credentials_sealed IS NOT NULL",
        )
        .bind(connection_id)
        .fetch_optional(&self.pool)
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
        // One statement: under READ COMMITTED the row lock makes a racing
        // writer re-check `credentials_version` after the first commits, so
        // exactly one of two swaps from the same version wins.
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE connections SET credentials_sealed = $1, credentials_kind = $2, \
               credentials_version = credentials_version + 1, status = 'active', status_reason = NULL, \
               updated_at = $3 \
             WHERE id = $4 AND ($5::bigint IS NULL OR credentials_version = $5) \
             RETURNING credentials_version",
        )
        .bind(sealed)
        .bind(kind)
        .bind(now)
        .bind(connection_id)
        .bind(expected_version)
        .fetch_optional(&self.pool)
        .await?;
        match version {
            Some(version) => Ok(version),
            None => {
                let stored: Option<i64> =
                    sqlx::query_scalar("SELECT credentials_version FROM connections WHERE id = $1")
                        .bind(connection_id)
                        .fetch_optional(&self.pool)
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
            "UPDATE connections SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .bind(connection_id)
        .execute(&self.pool)
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
            "UPDATE connections SET rate_limit_requests = $1, rate_limit_period_ms = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(budget.map(|b| i64::from(b.requests)))
        .bind(budget.map(|b| i64::try_from(b.period.as_millis()).unwrap_or(i64::MAX)))
        .bind(now)
        .bind(connection_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("connection {connection_id}")));
        }
        Ok(())
    }

    async fn lock_connection(&self, connection: &str, holder: &str) -> Result<ConnectionLock> {
        // A session of its own: the lock lives as long as it does, and the
        // server ends both when this process dies.
        let mut conn = self
            .options
            .clone()
            .application_name(&format!("tributary {holder}"))
            .connect()
            .await?;
        let key = lock::key(connection);
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(PG_LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if taken {
            return Ok(ConnectionLock::new(connection, conn));
        }
        // Advisory locks belong to a database; pg_locks shows the server's.
        // (The two-int4 form keeps the first key in classid, the second in
        // objid, and sets objsubid to 2.)
        let held_by: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 2 LIMIT 1",
        )
        .bind(i64::from(PG_LOCK_CLASS))
        .bind(i64::from(key as u32))
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten();
        let _ = conn.close().await;
        Err(busy(
            connection,
            held_by
                .as_deref()
                .map(|h| h.strip_prefix("tributary ").unwrap_or(h)),
        ))
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await?;
        let applied: Vec<i64> = if table.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(crate::missing_migrations(&migrator(), &applied))
    }

    async fn start_run(
        &self,
        connection_id: i64,
        kind: RunKind,
        scope: Option<&str>,
        idempotency_key: Option<&str>,
        now: Timestamp,
    ) -> Result<RunStart> {
        let mut tx = self.pool.begin().await?;
        // Serialise run starts per connection across processes.
        sqlx::query("SELECT pg_advisory_xact_lock(7413, $1::int)")
            .bind(connection_id as i32)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = idempotency_key {
            let row =
                sqlx::query("SELECT * FROM runs WHERE connection_id = $1 AND idempotency_key = $2")
                    .bind(connection_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(row) = row {
                let run = run_row(&row)?;
                if run.state == RunState::Queued {
                    // Its turn: it starts now.
                    let row = sqlx::query(
                        "UPDATE runs SET state = 'running', scope = $1, started_at = $2, updated_at = $2 \
                         WHERE id = $3 RETURNING *",
                    )
                    .bind(scope)
                    .bind(now)
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
                "SELECT * FROM runs WHERE connection_id = $1 AND kind = $2 \
                 AND scope IS NOT DISTINCT FROM $3 ORDER BY id DESC LIMIT 1",
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
                        "UPDATE runs SET state = 'running', error = NULL, resumable = false, \
                         finished_at = NULL, updated_at = $1 WHERE id = $2 RETURNING *",
                    )
                    .bind(now)
                    .bind(run.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE checkpoints SET state = 'running', error = NULL, updated_at = $1 \
                         WHERE run_id = $2 AND state = 'failed'",
                    )
                    .bind(now)
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
             updated_at) VALUES ($1, $2, 'running', $3, $4, $5, $5) RETURNING *",
        )
        .bind(connection_id)
        .bind(kind.as_str())
        .bind(scope)
        .bind(idempotency_key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let run = run_row(&row)?;
        tx.commit().await?;
        Ok(RunStart::New(run))
    }

    async fn finish_run(
        &self,
        run_id: i64,
        state: RunState,
        error: Option<&str>,
        resumable: bool,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = $2, resumable = $3, updated_at = $4, \
             finished_at = $5 WHERE id = $6 AND state = 'running'",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(resumable && state == RunState::Failed)
        .bind(now)
        .bind(state.is_final().then_some(now))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // The end is told to the connection's subscriptions (webhooks out)
        // exactly once: kept in the transaction that ends the run.
        if done.rows_affected() == 1 && state.is_final() {
            sqlx::query(crate::subscriptions::NOTE_FINISH)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        sqlx::query(
            "INSERT INTO runs (connection_id, kind, state, idempotency_key, started_at, updated_at) \
             VALUES ($1, $2, 'queued', $3, $4, $4) ON CONFLICT (connection_id, idempotency_key) DO NOTHING",
        )
        .bind(connection_id)
        .bind(kind.as_str())
        .bind(idempotency_key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row =
            sqlx::query("SELECT * FROM runs WHERE connection_id = $1 AND idempotency_key = $2")
                .bind(connection_id)
                .bind(idempotency_key)
                .fetch_one(&self.pool)
                .await?;
        run_row(&row)
    }

    async fn queued_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE state = 'queued' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_row).collect()
    }

    async fn add_run_usage(&self, run_id: i64, requests: u64, retries: u64) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET requests = requests + $1, retries = retries + $2 WHERE id = $3",
        )
        .bind(requests as i64)
        .bind(retries as i64)
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn run(&self, run_id: i64) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    async fn runs(&self, connection_id: Option<i64>, limit: u32) -> Result<Vec<Run>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE ($1::bigint IS NULL OR connection_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(connection_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    async fn checkpoints(&self, run_id: i64) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query("SELECT * FROM checkpoints WHERE run_id = $1 ORDER BY entity")
            .bind(run_id)
            .fetch_all(&self.pool)
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
            "INSERT INTO checkpoints (run_id, entity, cursor, state, error, updated_at) \
             VALUES ($1, $2, 'null'::jsonb, $3, $4, $5) \
             ON CONFLICT (run_id, entity) DO UPDATE SET state = excluded.state, error = excluded.error, \
             updated_at = excluded.updated_at",
        )
        .bind(run_id)
        .bind(entity)
        .bind(state.as_str())
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn apply_pages(&self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>> {
        // A unique violation means one of the records inserted as new was
        // stored after all: another writer created it after the page's
        // lookup, or the lookup was skipped (see `new_only`). Plan again,
        // looking every page up: the record is then found, and upserted.
        let mut attempts = 0;
        loop {
            match self.try_apply_pages(pages, attempts > 0).await {
                Err(error) if attempts < 5 && is_unique_violation(&error) => {
                    attempts += 1;
                    tracing::debug!(%error, attempts, "a concurrent writer created a record; planning the group again");
                }
                result => return result,
            }
        }
    }

    async fn delete_records(&self, deletion: Deletion<'_>) -> Result<Deleted> {
        let mut tx = self.pool.begin().await?;
        let deleted = crate::deletions::postgres(&mut tx, &deletion).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn bury(&self, burial: Burial<'_>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let buried = crate::deletions::bury_postgres(&mut tx, &burial).await?;
        tx.commit().await?;
        Ok(buried)
    }

    async fn stage_deletions(&self, run_id: i64, entity: &str, ids: &[String]) -> Result<()> {
        sqlx::query(
            "INSERT INTO staged_deletions (run_id, entity, external_id) \
             SELECT $1, $2, id FROM UNNEST($3::text[]) AS u(id) ON CONFLICT DO NOTHING",
        )
        .bind(run_id)
        .bind(entity)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn staged_deletions(&self, run_id: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT entity, external_id FROM staged_deletions WHERE run_id = $1 ORDER BY entity, external_id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = coalesce($2, error), updated_at = $3, \
             finished_at = $4, resumable = false WHERE id = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(error)
        .bind(now)
        .bind(to.is_final().then_some(now))
        .bind(run_id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        let moved = done.rows_affected() == 1;
        if moved && to.is_final() {
            sqlx::query("DELETE FROM staged_deletions WHERE run_id = $1")
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

    async fn set_schedule(&self, schedule: &Schedule) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (connection_id, delta_every_secs, delta_next_at, reconcile_cron, \
             reconcile_next_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (connection_id) DO UPDATE SET delta_every_secs = excluded.delta_every_secs, \
             delta_next_at = excluded.delta_next_at, reconcile_cron = excluded.reconcile_cron, \
             reconcile_next_at = excluded.reconcile_next_at, updated_at = excluded.updated_at",
        )
        .bind(schedule.connection_id)
        .bind(schedule.delta_every_secs)
        .bind(schedule.delta_next_at)
        .bind(&schedule.reconcile_cron)
        .bind(schedule.reconcile_next_at)
        .bind(schedule.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        let rows = sqlx::query(
            "SELECT connection_id, delta_every_secs, delta_next_at, reconcile_cron, reconcile_next_at, \
             updated_at FROM schedules ORDER BY connection_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Schedule {
                    connection_id: r.try_get("connection_id")?,
                    delta_every_secs: r.try_get("delta_every_secs")?,
                    delta_next_at: r.try_get("delta_next_at")?,
                    reconcile_cron: r.try_get("reconcile_cron")?,
                    reconcile_next_at: r.try_get("reconcile_next_at")?,
                    updated_at: r.try_get("updated_at")?,
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
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE schedules SET {column} = $1 WHERE connection_id = $2 AND {column} = $3"
        )))
        .bind(next)
        .bind(connection_id)
        .bind(due)
        .execute(&self.pool)
        .await?;
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
            "SELECT entity, high_water FROM marks WHERE connection_id = $1 ORDER BY entity",
        )
        .bind(connection_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
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
        let rows = sqlx::query(
            "SELECT external_id FROM records WHERE connection_id = $1 AND entity = $2 AND deleted_at IS NULL \
             AND external_id > $3 AND last_run_id = $4 ORDER BY external_id LIMIT $5",
        )
        .persistent(false)
        .bind(connection_id)
        .bind(entity)
        .bind(after.unwrap_or(""))
        .bind(run_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
            "SELECT external_id FROM records WHERE connection_id = $1 AND entity = $2 AND deleted_at IS NULL \
             AND external_id > $3 ORDER BY external_id LIMIT $4",
        )
        // Planned afresh each time: a cached plan from when the table was
        // small would sort the whole entity on every call.
        .persistent(false)
        .bind(connection_id)
        .bind(entity)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn records(&self, query: &RecordQuery) -> Result<Vec<StoredRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records r JOIN connections c ON c.id = r.connection_id \
             WHERE r.id > $1 AND ($2::bigint IS NULL OR r.connection_id = $2) AND ($3::text IS NULL OR r.entity = $3) \
             AND ($4 OR r.deleted_at IS NULL) ORDER BY r.id LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.after_id)
            .bind(query.connection_id)
            .bind(query.entity.as_deref())
            .bind(query.include_deleted)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
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
             WHERE r.connection_id = $1 AND r.entity = $2 AND r.external_id = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(connection_id)
            .bind(entity)
            .bind(external_id)
            .fetch_optional(&self.pool)
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
             WHERE connection_id = $1 AND entity = $2 AND external_id = ANY($3::text[])",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_ids)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        sequence_changes(&mut tx).await?;
        let gone: Option<i64> =
            sqlx::query_scalar("SELECT max(pos) FROM changes WHERE changed_at < $1")
                .bind(before)
                .fetch_one(&mut *tx)
                .await?;
        let Some(gone) = gone else {
            return Ok(0);
        };
        let deleted = sqlx::query("DELETE FROM changes WHERE pos <= $1")
            .bind(gone)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE feed_horizon SET seq = greatest(seq, $1) WHERE id = 1")
            .bind(gone)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn feed_head(&self) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        sequence_changes(&mut tx).await?;
        tx.commit().await?;
        let pos: i64 = sqlx::query_scalar(
            "SELECT greatest(coalesce(max(pos), 0), (SELECT seq FROM feed_horizon WHERE id = 1)) FROM changes",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(pos)
    }

    async fn feed_horizon(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM feed_horizon WHERE id = 1")
            .fetch_one(&self.pool)
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
            "SELECT rel, to_entity, to_external_id, hard FROM edges WHERE connection_id = $1 AND from_entity = $2 \
             AND from_external_id = $3 ORDER BY rel, to_entity, to_external_id",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(edge_row).collect()
    }

    async fn changes(
        &self,
        connection_id: Option<i64>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Change>> {
        // Committed rows get their feed positions first (see
        // `sequence_changes`); the feed's `seq` is the position.
        let mut tx = self.pool.begin().await?;
        sequence_changes(&mut tx).await?;
        tx.commit().await?;
        let rows = sqlx::query(
            "SELECT pos AS seq, connection_id, record_id, entity, external_id, kind, content_hash, run_id, \
             changed_at, fields FROM changes \
             WHERE pos > $1 AND ($2::bigint IS NULL OR connection_id = $2) ORDER BY pos LIMIT $3",
        )
        .bind(after_seq)
        .bind(connection_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_row).collect()
    }

    async fn quarantined(
        &self,
        connection_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Quarantined>> {
        let rows = sqlx::query(
            "SELECT * FROM quarantine WHERE ($1::bigint IS NULL OR connection_id = $1) ORDER BY id LIMIT $2",
        )
        .bind(connection_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(quarantined_row).collect()
    }

    async fn entity_counts(&self, connection_id: i64) -> Result<Vec<EntityCount>> {
        let rows = sqlx::query(
            "SELECT entity, count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) \
             FROM records WHERE connection_id = $1 GROUP BY entity ORDER BY entity",
        )
        .bind(connection_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entity_count_row).collect()
    }

    async fn watch_changes(&self, wake: Arc<tokio::sync::Notify>) -> Result<bool> {
        // A connection of its own, outside the pool: the pool's close
        // (at shutdown) never waits for it, and it takes none of the
        // pool's connections.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options.clone())
            .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
        listener.listen(FEED_CHANNEL).await?;
        let wake = Arc::downgrade(&wake);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => match wake.upgrade() {
                        Some(wake) => wake.notify_one(),
                        None => return,
                    },
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(error) => {
                        // The listener reconnects on its next receive;
                        // meanwhile the feed polls.
                        if wake.strong_count() == 0 {
                            return;
                        }
                        tracing::warn!(%error, "the change feed's LISTEN connection failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(true)
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

/// The channel a commit that wrote feed rows notifies (migration 21).
const FEED_CHANNEL: &str = "tributary_feed";

/// The advisory lock (class, id) of the feed's sequencer.
const SEQUENCER_LOCK: (i32, i32) = (0x7472_6962, 1);

/// Rows a sequencer numbers at once.
const SEQUENCE_BATCH: i64 = 50_000;

/// Gives the committed feed rows that have no position yet one, after
/// every position given before, in `seq` order — inside the caller's
/// transaction, holding the sequencer's lock until it ends, so sequencers
/// (of any process) take turns and each sees the positions of the one
/// before it (every statement of a READ COMMITTED transaction reads what
/// was committed when it began). A row committed later can therefore only
/// be numbered after every row a reader may already have passed: the
/// feed's order is the order in which commits became visible, and the
/// rows of one transaction are numbered together. The rows numbered.
async fn sequence_changes(tx: &mut sqlx::PgConnection) -> Result<u64> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(SEQUENCER_LOCK.0)
        .bind(SEQUENCER_LOCK.1)
        .execute(&mut *tx)
        .await?;
    let mut numbered = 0;
    loop {
        // The records' versions (`record_versions`, the records API's
        // order) move with their changes' positions, in this statement:
        // a version is the position of the record's newest change. (A
        // record updated again meanwhile keeps a change without a
        // position, which pages wait for.)
        let done: i64 = sqlx::query_scalar(
            "WITH base AS ( \
               SELECT greatest((SELECT coalesce(max(pos), 0) FROM changes), \
                               (SELECT seq FROM feed_horizon WHERE id = 1)) AS b), \
             todo AS ( \
               SELECT seq, row_number() OVER (ORDER BY seq) AS r FROM changes \
               WHERE pos IS NULL ORDER BY seq LIMIT $1), \
             numbered AS ( \
               UPDATE changes c SET pos = base.b + todo.r FROM todo, base WHERE c.seq = todo.seq \
               RETURNING c.record_id, c.connection_id, c.entity, c.pos), \
             versioned AS ( \
               INSERT INTO record_versions (record_id, connection_id, entity, version) \
               SELECT DISTINCT ON (n.record_id) n.record_id, n.connection_id, n.entity, n.pos \
               FROM numbered n WHERE EXISTS (SELECT 1 FROM records r WHERE r.id = n.record_id) \
               ORDER BY n.record_id, n.pos DESC \
               ON CONFLICT (record_id) DO UPDATE \
               SET version = greatest(record_versions.version, excluded.version)) \
             SELECT count(*) FROM numbered",
        )
        .bind(SEQUENCE_BATCH)
        .fetch_one(&mut *tx)
        .await?;
        let done = done as u64;
        numbered += done;
        if done < SEQUENCE_BATCH as u64 {
            return Ok(numbered);
        }
    }
}

fn is_unique_violation(error: &Error) -> bool {
    matches!(error, Error::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505"))
}

/// New records: plain inserts, and their change-feed rows in page order.
const INSERT_RECORDS: &str = "WITH t AS ( \
       SELECT * FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::text[]) \
         WITH ORDINALITY AS t(ext, raw, canonical, hash, updated_at, kind, ord) \
     ), up AS ( \
       INSERT INTO records (connection_id, entity, external_id, canonical_entity, raw, canonical, \
         content_hash, source_updated_at, first_seen_at, last_modified_at, deleted_at, last_run_id) \
       SELECT $1, $2, t.ext, $3, t.raw::json, t.canonical::jsonb, t.hash, t.updated_at, $4, $4, NULL, $5 FROM t \
       RETURNING id, external_id \
     ) \
     INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at) \
     SELECT $1, up.id, $2, t.ext, t.kind, t.hash, $5, $4 FROM up JOIN t ON t.ext = up.external_id \
     ORDER BY t.ord";
/// Records stored before: upserts (locking their rows). An update's feed
/// row names the canonical fields it changed, compared with the version
/// the statement replaces (`old`: every part of one statement reads the
/// rows as they were before it; one unique-index probe per updated record,
/// the LATERAL form of `write_page`'s lookup, for the same reason).
const UPSERT_RECORDS: &str = "WITH t AS ( \
       SELECT * FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::text[]) \
         WITH ORDINALITY AS t(ext, raw, canonical, hash, updated_at, kind, ord) \
     ), old AS ( \
       SELECT t.ext AS external_id, o.canonical FROM t \
       CROSS JOIN LATERAL (SELECT r.canonical FROM records r \
         WHERE r.connection_id = $1 AND r.entity = $2 AND r.external_id = t.ext AND r.deleted_at IS NULL \
         LIMIT 1) AS o \
       WHERE t.kind = 'updated' \
     ), up AS ( \
       INSERT INTO records (connection_id, entity, external_id, canonical_entity, raw, canonical, \
         content_hash, source_updated_at, first_seen_at, last_modified_at, deleted_at, last_run_id) \
       SELECT $1, $2, t.ext, $3, t.raw::json, t.canonical::jsonb, t.hash, t.updated_at, $4, $4, NULL, $5 FROM t \
       ON CONFLICT (connection_id, entity, external_id) DO UPDATE SET \
         canonical_entity = excluded.canonical_entity, raw = excluded.raw, canonical = excluded.canonical, \
         content_hash = excluded.content_hash, source_updated_at = excluded.source_updated_at, \
         last_modified_at = excluded.last_modified_at, deleted_at = NULL, last_run_id = excluded.last_run_id \
       RETURNING id, external_id \
     ) \
     INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at, fields) \
     SELECT $1, up.id, $2, t.ext, t.kind, t.hash, $5, $4, \
       CASE WHEN t.kind = 'updated' AND old.canonical IS NOT NULL THEN ( \
         SELECT coalesce(jsonb_agg(f.k ORDER BY f.k), '[]'::jsonb)::text FROM ( \
           SELECT n.key AS k FROM jsonb_each(t.canonical::jsonb) n \
            WHERE (old.canonical -> n.key) IS DISTINCT FROM n.value \
           UNION \
           SELECT o.key FROM jsonb_each(old.canonical) o WHERE NOT (t.canonical::jsonb ? o.key) \
         ) f) END \
     FROM up JOIN t ON t.ext = up.external_id LEFT JOIN old ON old.external_id = t.ext \
     ORDER BY t.ord";

/// Writes records of a page and their change-feed rows in one statement:
/// plain inserts of new records, or (`upsert`) records stored before. The
/// feed rows take the ids the write returns, in page order.
async fn write_records(
    tx: &mut sqlx::PgConnection,
    page: &PageWrite<'_>,
    writes: &[&(&PreparedRecord, ChangeKind)],
    upsert: bool,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let ext: Vec<&str> = writes.iter().map(|(r, _)| r.external_id.as_str()).collect();
    let raw: Vec<&str> = writes.iter().map(|(r, _)| &*r.raw_json).collect();
    let canonical: Vec<&str> = writes.iter().map(|(r, _)| &*r.canonical_json).collect();
    let hashes: Vec<&str> = writes.iter().map(|(r, _)| &*r.content_hash).collect();
    let updated_at: Vec<Option<Timestamp>> =
        writes.iter().map(|(r, _)| r.source_updated_at).collect();
    let kinds: Vec<&str> = writes.iter().map(|(_, k)| k.as_str()).collect();
    let fed = sqlx::query(if upsert {
        UPSERT_RECORDS
    } else {
        INSERT_RECORDS
    })
    .bind(page.connection_id)
    .bind(page.entity)
    .bind(page.canonical_entity)
    .bind(page.now)
    .bind(page.run_id)
    .bind(&ext)
    .bind(&raw)
    .bind(&canonical)
    .bind(&hashes)
    .bind(&updated_at)
    .bind(&kinds)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fed != writes.len() as u64 {
        return Err(Error::Corrupt(format!(
            "{fed} change rows for {} written records",
            writes.len()
        )));
    }
    Ok(())
}

/// Writes one page inside the caller's transaction: everything but the
/// run's counters (see [`run_totals`]).
///
/// With `assume_new`, the lookup is skipped and every record planned as
/// new (its insert fails if it is not). Returns the outcome and, if the
/// lookup ran, whether it found any of the page's records stored.
async fn write_page(
    tx: &mut sqlx::PgConnection,
    page: &PageWrite<'_>,
    assume_new: bool,
) -> Result<(PageOutcome, Option<bool>)> {
    let ids: Vec<&str> = unique_ids(page.records);

    // 1. What is stored for these ids: one unique-index probe per id. The
    // LATERAL ... LIMIT 1 form leaves the planner no hash join to pick —
    // with a plain join (or `= ANY`), a table that grew from empty
    // without being analysed yet (a first sync) gets a plan that scans
    // the whole entity per page, and the sync turns quadratic. Lookups
    // by id are also planned afresh each time (not persistent).
    let rows = if assume_new || ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT u.ext, r.content_hash, r.deleted \
             FROM UNNEST($3::text[]) AS u(ext) \
             CROSS JOIN LATERAL (SELECT content_hash, deleted_at IS NOT NULL AS deleted FROM records \
               WHERE connection_id = $1 AND entity = $2 AND external_id = u.ext LIMIT 1) AS r",
        )
        .persistent(false)
        .bind(page.connection_id)
        .bind(page.entity)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
    };
    let looked_up = (!assume_new).then_some(!rows.is_empty());
    let mut existing = HashMap::with_capacity(rows.len());
    for row in rows {
        let (id, stored) = existing_row(&row)?;
        existing.insert(id, stored);
    }
    let plan = plan(page.records, &existing);

    if !plan.writes.is_empty() {
        // 2. Records and 4. their change-feed rows. New records are plain
        // inserts: the lookup above found none of them, and a writer that
        // created one since (another run of this connection) makes the
        // insert fail with a unique violation, which `apply_pages` answers
        // by reading and planning the group again. `ON CONFLICT` would
        // probe the unique index once more per row for a conflict that
        // almost never comes (a seventh of a full sync's time). Records
        // stored before are upserted, which locks their rows.
        let (stored, new): (Vec<_>, Vec<_>) = plan
            .writes
            .iter()
            .partition(|(r, _)| existing.contains_key(&r.external_id));
        write_records(tx, page, &new, false).await?;
        write_records(tx, page, &stored, true).await?;

        // 3. Edges: records stored before lose their old edges first; a
        // stored record's row is locked by its upsert, a new record's key by
        // its insert, so no other writer touches these edges before commit.
        if !stored.is_empty() {
            let replaced: Vec<&str> = stored.iter().map(|(r, _)| r.external_id.as_str()).collect();
            sqlx::query(
                "DELETE FROM edges e USING UNNEST($3::text[]) AS u(ext) \
                 WHERE e.connection_id = $1 AND e.from_entity = $2 AND e.from_external_id = u.ext",
            )
            .persistent(false)
            .bind(page.connection_id)
            .bind(page.entity)
            .bind(&replaced)
            .execute(&mut *tx)
            .await?;
        }
        // A record's repeated relationship is one edge (the first copy).
        let mut seen = HashSet::new();
        let edges: Vec<(&str, &EdgeRef)> = plan
            .writes
            .iter()
            .flat_map(|(r, _)| r.edges.iter().map(move |e| (r.external_id.as_str(), e)))
            .filter(|(from, e)| seen.insert((*from, &e.rel, &e.to_entity, &e.to_external_id)))
            .collect();
        if !edges.is_empty() {
            let from: Vec<&str> = edges.iter().map(|(f, _)| *f).collect();
            let rel: Vec<&str> = edges.iter().map(|(_, e)| e.rel.as_str()).collect();
            let to_entity: Vec<&str> = edges.iter().map(|(_, e)| e.to_entity.as_str()).collect();
            let to_id: Vec<&str> = edges
                .iter()
                .map(|(_, e)| e.to_external_id.as_str())
                .collect();
            let hard: Vec<bool> = edges.iter().map(|(_, e)| e.hard).collect();
            sqlx::query(
                "INSERT INTO edges (connection_id, from_entity, from_external_id, rel, to_entity, to_external_id, hard) \
                 SELECT $1, $2, t.f, t.r, t.te, t.ti, t.h \
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::bool[]) AS t(f, r, te, ti, h)",
            )
            .bind(page.connection_id)
            .bind(page.entity)
            .bind(&from)
            .bind(&rel)
            .bind(&to_entity)
            .bind(&to_id)
            .bind(&hard)
            .execute(&mut *tx)
            .await?;
        }
    }

    // 5. Quarantine: records that failed now, and records that no longer fail.
    if !page.quarantined.is_empty() {
        let keys: Vec<String> = page.quarantined.iter().map(quarantine_key).collect();
        let raw: Vec<String> = page
            .quarantined
            .iter()
            .map(|q| tributary_core::canonical_json(&q.raw))
            .collect();
        let errors: Vec<&str> = page.quarantined.iter().map(|q| q.error.as_str()).collect();
        sqlx::query(
            "INSERT INTO quarantine (connection_id, entity, external_id, run_id, raw, error, first_seen_at, last_seen_at) \
             SELECT $1, $2, t.k, $3, t.raw::jsonb, t.err, $4, $4 \
             FROM UNNEST($5::text[], $6::text[], $7::text[]) AS t(k, raw, err) \
             ON CONFLICT (connection_id, entity, external_id) DO UPDATE SET run_id = excluded.run_id, \
             raw = excluded.raw, error = excluded.error, last_seen_at = excluded.last_seen_at",
        )
        .bind(page.connection_id)
        .bind(page.entity)
        .bind(page.run_id)
        .bind(page.now)
        .bind(&keys)
        .bind(&raw)
        .bind(&errors)
        .execute(&mut *tx)
        .await?;
    }
    // Records that no longer fail leave quarantine (skipped when this entity
    // has nothing quarantined: one index probe instead of one per record).
    let any_quarantined: bool = if ids.is_empty() {
        false
    } else {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM quarantine WHERE connection_id = $1 AND entity = $2)",
        )
        .bind(page.connection_id)
        .bind(page.entity)
        .fetch_one(&mut *tx)
        .await?
    };
    if any_quarantined {
        sqlx::query(
            "DELETE FROM quarantine q USING UNNEST($3::text[]) AS u(ext) \
             WHERE q.connection_id = $1 AND q.entity = $2 AND q.external_id = u.ext",
        )
        .persistent(false)
        .bind(page.connection_id)
        .bind(page.entity)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }

    // 6. Checkpoint and 7. run counters.
    let outcome = plan.outcome(page.quarantined.len());
    let seen = outcome.records() as i64;
    let state = if page.finished {
        EntityState::Done
    } else {
        EntityState::Running
    };
    sqlx::query(
        "INSERT INTO checkpoints (run_id, entity, cursor, state, pages, records, total, updated_at, \
         created, updated, unchanged, quarantined, restored) \
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (run_id, entity) DO UPDATE SET cursor = excluded.cursor, state = excluded.state, \
         pages = checkpoints.pages + 1, records = checkpoints.records + excluded.records, \
         total = coalesce(excluded.total, checkpoints.total), \
         created = checkpoints.created + excluded.created, updated = checkpoints.updated + excluded.updated, \
         unchanged = checkpoints.unchanged + excluded.unchanged, \
         quarantined = checkpoints.quarantined + excluded.quarantined, \
         restored = checkpoints.restored + excluded.restored, \
         error = NULL, updated_at = excluded.updated_at",
    )
    .bind(page.run_id)
    .bind(page.entity)
    .bind(Json(&page.cursor.0))
    .bind(state.as_str())
    .bind(seen)
    .bind(page.total)
    .bind(page.now)
    .bind(outcome.created as i64)
    .bind(outcome.updated as i64)
    .bind(outcome.unchanged as i64)
    .bind(outcome.quarantined as i64)
    .bind(outcome.restored as i64)
    .execute(&mut *tx)
    .await?;
    // The entity's high-water mark, in the same transaction.
    if let Some(mark) = page.mark {
        sqlx::query(
            "INSERT INTO marks (connection_id, entity, high_water, run_id, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (connection_id, entity) DO UPDATE SET high_water = greatest(marks.high_water, excluded.high_water), \
             run_id = excluded.run_id, updated_at = excluded.updated_at",
        )
        .bind(page.connection_id)
        .bind(page.entity)
        .bind(mark)
        .bind(page.run_id)
        .bind(page.now)
        .execute(&mut *tx)
        .await?;
    }
    Ok((outcome, looked_up))
}
