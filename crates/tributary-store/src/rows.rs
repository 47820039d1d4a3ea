//! Rows to the store's types, once for every backend.
//!
//! Each mapping reads its columns through [`Columns`]: text, integers,
//! flags and bytes decode the same way on every backend ([`Decodes`]);
//! timestamps and JSON, which each backend stores its own way, are the
//! three methods a backend implements for its row type.

use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};
use tributary_core::{ChangeKind, Cursor, EdgeRef, RunKind, RunState, Timestamp};

use crate::plan::Existing;
use crate::{
    Change, Checkpoint, Connection, ConnectionStatus, EntityCount, EntityCounts, EntityState,
    Error, Quarantined, Result, Run, RunCounts, SealedCredentials, StoredRecord,
};

/// The columns of a [`Connection`]: never the sealed credentials.
pub(crate) const CONNECTION_COLUMNS: &str = "id, name, adapter, base_url, status, status_reason, \
     credentials_kind, created_at, updated_at, rate_limit_requests, rate_limit_period_ms";

/// The columns of a [`StoredRecord`], from `records r JOIN connections c`.
pub(crate) const RECORD_COLUMNS: &str = "r.id, r.connection_id, c.name AS connection, r.entity, r.external_id, \
     r.canonical_entity, r.raw, r.canonical, r.content_hash, r.source_updated_at, r.first_seen_at, \
     r.last_modified_at, r.deleted_at";

/// A column value that every backend decodes alike (as sqlx does).
pub(crate) trait Decodes<T> {
    /// The value of the column called `name`.
    fn value(&self, name: &str) -> Result<T>;
    /// The value of the column at `index`.
    fn value_at(&self, index: usize) -> Result<T>;
}

impl<R, T> Decodes<T> for R
where
    R: Row,
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
    usize: ColumnIndex<R>,
{
    fn value(&self, name: &str) -> Result<T> {
        Ok(self.try_get(name)?)
    }

    fn value_at(&self, index: usize) -> Result<T> {
        Ok(self.try_get(index)?)
    }
}

/// A backend's row, as the mappings read it.
pub(crate) trait Columns:
    Decodes<String>
    + Decodes<Option<String>>
    + Decodes<i64>
    + Decodes<Option<i64>>
    + Decodes<bool>
    + Decodes<Vec<u8>>
{
    /// The timestamp in the column called `name`.
    fn ts(&self, name: &str) -> Result<Timestamp>;
    /// The timestamp, if any, in the column called `name`.
    fn opt_ts(&self, name: &str) -> Result<Option<Timestamp>>;
    /// The JSON value in the column called `name`.
    fn json(&self, name: &str) -> Result<Value>;
}

/// A row of [`CONNECTION_COLUMNS`].
pub(crate) fn connection_row(row: &impl Columns) -> Result<Connection> {
    let status: String = row.value("status")?;
    Ok(Connection {
        id: row.value("id")?,
        name: row.value("name")?,
        adapter: row.value("adapter")?,
        base_url: row.value("base_url")?,
        status: ConnectionStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("connection status `{status}`")))?,
        status_reason: row.value("status_reason")?,
        credentials_kind: row.value("credentials_kind")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
        rate_limit: rate_budget(
            row.value("rate_limit_requests")?,
            row.value("rate_limit_period_ms")?,
        ),
    })
}

/// A connection's budget from its two columns.
fn rate_budget(requests: Option<i64>, period_ms: Option<i64>) -> Option<crate::RateBudget> {
    Some(crate::RateBudget {
        requests: u32::try_from(requests?).ok()?,
        period: std::time::Duration::from_millis(u64::try_from(period_ms?).ok()?),
    })
}

/// A row of `credentials_kind, credentials_sealed, credentials_version` of
/// connection `connection_id`, which has credentials.
pub(crate) fn credentials_row(row: &impl Columns, connection_id: i64) -> Result<SealedCredentials> {
    let kind: Option<String> = row.value_at(0)?;
    Ok(SealedCredentials {
        kind: kind.ok_or_else(|| {
            Error::Corrupt(format!(
                "connection {connection_id}: credentials without a kind"
            ))
        })?,
        sealed: row.value_at(1)?,
        version: row.value_at(2)?,
    })
}

/// A row of `runs`.
pub(crate) fn run_row(row: &impl Columns) -> Result<Run> {
    let kind: String = row.value("kind")?;
    let state: String = row.value("state")?;
    Ok(Run {
        id: row.value("id")?,
        connection_id: row.value("connection_id")?,
        kind: RunKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("run kind `{kind}`")))?,
        state: RunState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("run state `{state}`")))?,
        idempotency_key: row.value("idempotency_key")?,
        started_at: row.ts("started_at")?,
        updated_at: row.ts("updated_at")?,
        finished_at: row.opt_ts("finished_at")?,
        counts: RunCounts {
            pages: row.value("pages")?,
            created: row.value("records_created")?,
            updated: row.value("records_updated")?,
            unchanged: row.value("records_unchanged")?,
            deleted: row.value("records_deleted")?,
            quarantined: row.value("records_quarantined")?,
            restored: row.value("records_restored")?,
            requests: row.value("requests")?,
            retries: row.value("retries")?,
        },
        error: row.value("error")?,
        resumable: row.value("resumable")?,
        scope: row.value("scope")?,
    })
}

/// A row of `checkpoints`.
pub(crate) fn checkpoint_row(row: &impl Columns) -> Result<Checkpoint> {
    let state: String = row.value("state")?;
    Ok(Checkpoint {
        run_id: row.value("run_id")?,
        entity: row.value("entity")?,
        cursor: Cursor(row.json("cursor")?),
        state: EntityState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("entity state `{state}`")))?,
        pages: row.value("pages")?,
        records: row.value("records")?,
        total: row.value("total")?,
        counts: EntityCounts {
            created: row.value("created")?,
            updated: row.value("updated")?,
            unchanged: row.value("unchanged")?,
            quarantined: row.value("quarantined")?,
            restored: row.value("restored")?,
            deleted: row.value("deleted")?,
        },
        error: row.value("error")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// A row of [`RECORD_COLUMNS`].
pub(crate) fn record_row(row: &impl Columns) -> Result<StoredRecord> {
    Ok(StoredRecord {
        id: row.value("id")?,
        connection_id: row.value("connection_id")?,
        connection: row.value("connection")?,
        entity: row.value("entity")?,
        external_id: row.value("external_id")?,
        canonical_entity: row.value("canonical_entity")?,
        raw: row.json("raw")?,
        canonical: row.json("canonical")?,
        content_hash: row.value("content_hash")?,
        source_updated_at: row.opt_ts("source_updated_at")?,
        first_seen_at: row.ts("first_seen_at")?,
        last_modified_at: row.ts("last_modified_at")?,
        deleted_at: row.opt_ts("deleted_at")?,
    })
}

/// A row of `external_id, content_hash, deleted` (a flag) of a stored
/// record: its id and what a plan compares.
pub(crate) fn existing_row(row: &impl Columns) -> Result<(String, Existing)> {
    Ok((
        row.value_at(0)?,
        Existing {
            hash: row.value_at(1)?,
            deleted: row.value_at(2)?,
        },
    ))
}

/// A row of `rel, to_entity, to_external_id, hard` of `edges`.
pub(crate) fn edge_row(row: &impl Columns) -> Result<EdgeRef> {
    Ok(EdgeRef {
        rel: row.value_at(0)?,
        to_entity: row.value_at(1)?,
        to_external_id: row.value_at(2)?,
        hard: row.value_at(3)?,
    })
}

/// A row of `changes`.
pub(crate) fn change_row(row: &impl Columns) -> Result<Change> {
    let kind: String = row.value("kind")?;
    let fields: Option<String> = row.value("fields")?;
    Ok(Change {
        seq: row.value("seq")?,
        connection_id: row.value("connection_id")?,
        record_id: row.value("record_id")?,
        entity: row.value("entity")?,
        external_id: row.value("external_id")?,
        kind: ChangeKind::parse(&kind)
            .ok_or_else(|| Error::Corrupt(format!("change kind `{kind}`")))?,
        content_hash: row.value("content_hash")?,
        run_id: row.value("run_id")?,
        changed_at: row.ts("changed_at")?,
        fields: fields
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| Error::Corrupt(format!("changed fields `{text}`: {e}")))
            })
            .transpose()?,
    })
}

/// A row of `quarantine`.
pub(crate) fn quarantined_row(row: &impl Columns) -> Result<Quarantined> {
    Ok(Quarantined {
        connection_id: row.value("connection_id")?,
        entity: row.value("entity")?,
        external_id: row.value("external_id")?,
        run_id: row.value("run_id")?,
        raw: row.json("raw")?,
        error: row.value("error")?,
        first_seen_at: row.ts("first_seen_at")?,
        last_seen_at: row.ts("last_seen_at")?,
    })
}

/// A row of `entity, live count, deleted count`.
pub(crate) fn entity_count_row(row: &impl Columns) -> Result<EntityCount> {
    Ok(EntityCount {
        entity: row.value_at(0)?,
        live: row.value_at(1)?,
        deleted: row.value_at(2)?,
    })
}
