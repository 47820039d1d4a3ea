//! Soft deletion: records gone from the source are marked deleted (never
//! removed), with a `deleted` change-feed row each, their outgoing edges
//! removed, and the records that belong to them (a hard relationship)
//! deleted with them — in one transaction that also counts them in the
//! run. A record seen again later is brought back by the next page that
//! carries it (a `created` feed row; the same row, never a duplicate).

use std::collections::BTreeMap;

use sqlx::{QueryBuilder, Row, Sqlite};
use tributary_core::Timestamp;

use crate::plan::sqlite_ts;
use crate::{Error, Result};

/// Records to mark deleted.
#[derive(Debug, Clone, Copy)]
pub struct Deletion<'a> {
    /// The connection.
    pub connection_id: i64,
    /// The run that found them gone (it must be running).
    pub run_id: i64,
    /// Their entity.
    pub entity: &'a str,
    /// Their ids; ids not stored, or already deleted, are skipped.
    pub external_ids: &'a [String],
    /// What belongs to what: records of a dependent entity whose
    /// relationship points at a deleted record go too, and so on down.
    pub cascade: &'a [Cascade],
    /// When.
    pub now: Timestamp,
}

/// Records never stored, to keep as tombstones: a deletion heard before
/// the record itself (a webhook's `deleted` overtaking its `created`), so
/// that the creation, when it comes, does not bring it back.
#[derive(Debug, Clone, Copy)]
pub struct Burial<'a> {
    /// The connection.
    pub connection_id: i64,
    /// The run that heard of the deletion.
    pub run_id: i64,
    /// Their entity.
    pub entity: &'a str,
    /// Its canonical name.
    pub canonical_entity: &'a str,
    /// Their ids; ids stored already are left as they are.
    pub external_ids: &'a [String],
    /// When they were deleted.
    pub now: Timestamp,
}

/// The raw text of a tombstone: the id, marked deleted.
fn tombstone(id: &str) -> String {
    serde_json::json!({"deleted": true, "id": id}).to_string()
}

pub(crate) async fn bury_sqlite(tx: &mut sqlx::SqliteConnection, b: &Burial<'_>) -> Result<u64> {
    let now = sqlite_ts(&b.now);
    let mut buried = 0;
    for chunk in b.external_ids.chunks(CHUNK / 5) {
        // The insert trigger writes the `deleted` feed rows.
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO records (connection_id, entity, external_id, canonical_entity, raw, canonical, \
               content_hash, source_updated_at, first_seen_at, last_modified_at, deleted_at, last_run_id) ",
        );
        q.push_values(chunk, |mut row, id| {
            row.push_bind(b.connection_id)
                .push_bind(b.entity)
                .push_bind(id)
                .push_bind(b.canonical_entity)
                .push_bind(tombstone(id))
                .push("'{}'")
                .push("''")
                .push("NULL")
                .push_bind(&now)
                .push_bind(&now)
                .push_bind(&now)
                .push_bind(b.run_id);
        });
        q.push(" ON CONFLICT (connection_id, entity, external_id) DO NOTHING");
        buried += q.build().execute(&mut *tx).await?.rows_affected();
    }
    Ok(buried)
}

pub(crate) async fn bury_postgres(tx: &mut sqlx::PgConnection, b: &Burial<'_>) -> Result<u64> {
    let raw: Vec<String> = b.external_ids.iter().map(|id| tombstone(id)).collect();
    let rows = sqlx::query(
        "WITH t AS (SELECT * FROM UNNEST($5::text[], $6::text[]) AS t(ext, raw)), \
         up AS ( \
             INSERT INTO records (connection_id, entity, external_id, canonical_entity, raw, canonical, \
               content_hash, source_updated_at, first_seen_at, last_modified_at, deleted_at, last_run_id) \
             SELECT $1, $2, t.ext, $3, t.raw::json, '{}'::jsonb, '', NULL, $4, $4, $4, $7 FROM t \
             ON CONFLICT (connection_id, entity, external_id) DO NOTHING \
             RETURNING id, external_id), \
         fed AS ( \
             INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at) \
             SELECT $1, id, $2, external_id, 'deleted', '', $7, $4 FROM up ORDER BY id) \
         SELECT count(*) FROM up",
    )
    .bind(b.connection_id)
    .bind(b.entity)
    .bind(b.canonical_entity)
    .bind(b.now)
    .bind(b.external_ids)
    .bind(&raw)
    .bind(b.run_id)
    .fetch_one(&mut *tx)
    .await?;
    let buried: i64 = rows.try_get(0)?;
    Ok(buried as u64)
}

/// A hard relationship along which deletion cascades: a record of
/// `entity` whose `rel` points at a deleted record of `parent` is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cascade {
    /// The dependent entity.
    pub entity: String,
    /// Its relationship.
    pub rel: String,
    /// The entity it belongs to.
    pub parent: String,
}

/// Ids per statement.
const CHUNK: usize = 500;

/// Records deleted per entity, the cascade's included.
pub type Deleted = BTreeMap<String, i64>;

pub(crate) async fn sqlite(tx: &mut sqlx::SqliteConnection, d: &Deletion<'_>) -> Result<Deleted> {
    let now = sqlite_ts(&d.now);
    let mut deleted = Deleted::new();
    let mut frontier = vec![(d.entity.to_owned(), d.external_ids.to_vec())];
    while let Some((entity, ids)) = frontier.pop() {
        let mut gone: Vec<String> = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            // The trigger of migration 0003 writes the `deleted` feed row.
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE records SET deleted_at = ");
            q.push_bind(&now)
                .push(", last_modified_at = ")
                .push_bind(&now)
                .push(", last_run_id = ")
                .push_bind(d.run_id)
                .push(" WHERE connection_id = ")
                .push_bind(d.connection_id)
                .push(" AND entity = ")
                .push_bind(&entity)
                .push(" AND deleted_at IS NULL AND external_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            q.push(") RETURNING external_id");
            for row in q.build().fetch_all(&mut *tx).await? {
                gone.push(row.try_get(0)?);
            }
        }
        if gone.is_empty() {
            continue;
        }
        *deleted.entry(entity.clone()).or_default() += gone.len() as i64;
        for chunk in gone.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM edges WHERE connection_id = ");
            q.push_bind(d.connection_id)
                .push(" AND from_entity = ")
                .push_bind(&entity)
                .push(" AND from_external_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        for c in d.cascade.iter().filter(|c| c.parent == entity) {
            let mut children = Vec::new();
            for chunk in gone.chunks(CHUNK) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "SELECT from_external_id FROM edges WHERE connection_id = ",
                );
                q.push_bind(d.connection_id)
                    .push(" AND from_entity = ")
                    .push_bind(&c.entity)
                    .push(" AND rel = ")
                    .push_bind(&c.rel)
                    .push(" AND to_entity = ")
                    .push_bind(&entity)
                    .push(" AND to_external_id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id);
                }
                q.push(")");
                for row in q.build().fetch_all(&mut *tx).await? {
                    children.push(row.try_get(0)?);
                }
            }
            if !children.is_empty() {
                frontier.push((c.entity.clone(), children));
            }
        }
    }
    count_in_run_sqlite(tx, d, &deleted, &now).await?;
    Ok(deleted)
}

async fn count_in_run_sqlite(
    tx: &mut sqlx::SqliteConnection,
    d: &Deletion<'_>,
    deleted: &Deleted,
    now: &str,
) -> Result<()> {
    for (entity, n) in deleted {
        sqlx::query(
            "INSERT INTO checkpoints (run_id, entity, cursor, state, deleted, updated_at) \
             VALUES (?, ?, 'null', 'done', ?, ?) \
             ON CONFLICT (run_id, entity) DO UPDATE SET deleted = deleted + excluded.deleted",
        )
        .bind(d.run_id)
        .bind(entity)
        .bind(n)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let updated = sqlx::query(
        "UPDATE runs SET records_deleted = records_deleted + ?, updated_at = ? \
         WHERE id = ? AND state = 'running'",
    )
    .bind(deleted.values().sum::<i64>())
    .bind(now)
    .bind(d.run_id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(Error::NotFound(format!("running run {}", d.run_id)));
    }
    Ok(())
}

pub(crate) async fn postgres(tx: &mut sqlx::PgConnection, d: &Deletion<'_>) -> Result<Deleted> {
    let mut deleted = Deleted::new();
    let mut frontier = vec![(d.entity.to_owned(), d.external_ids.to_vec())];
    while let Some((entity, ids)) = frontier.pop() {
        // The records and their `deleted` feed rows in one statement.
        let rows = sqlx::query(
            "WITH gone AS ( \
                 UPDATE records SET deleted_at = $1, last_modified_at = $1, last_run_id = $2 \
                 WHERE connection_id = $3 AND entity = $4 AND deleted_at IS NULL \
                 AND external_id = ANY($5::text[]) \
                 RETURNING id, external_id, content_hash), \
             fed AS ( \
                 INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at) \
                 SELECT $3, id, $4, external_id, 'deleted', content_hash, $2, $1 FROM gone ORDER BY id) \
             SELECT external_id FROM gone",
        )
        .bind(d.now)
        .bind(d.run_id)
        .bind(d.connection_id)
        .bind(&entity)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let gone: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if gone.is_empty() {
            continue;
        }
        *deleted.entry(entity.clone()).or_default() += gone.len() as i64;
        sqlx::query(
            "DELETE FROM edges WHERE connection_id = $1 AND from_entity = $2 \
             AND from_external_id = ANY($3::text[])",
        )
        .bind(d.connection_id)
        .bind(&entity)
        .bind(&gone)
        .execute(&mut *tx)
        .await?;
        for c in d.cascade.iter().filter(|c| c.parent == entity) {
            let rows = sqlx::query(
                "SELECT from_external_id FROM edges WHERE connection_id = $1 AND from_entity = $2 \
                 AND rel = $3 AND to_entity = $4 AND to_external_id = ANY($5::text[])",
            )
            .bind(d.connection_id)
            .bind(&c.entity)
            .bind(&c.rel)
            .bind(&entity)
            .bind(&gone)
            .fetch_all(&mut *tx)
            .await?;
            let children: Vec<String> = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if !children.is_empty() {
                frontier.push((c.entity.clone(), children));
            }
        }
    }
    for (entity, n) in &deleted {
        sqlx::query(
            "INSERT INTO checkpoints (run_id, entity, cursor, state, deleted, updated_at) \
             VALUES ($1, $2, 'null', 'done', $3, $4) \
             ON CONFLICT (run_id, entity) DO UPDATE SET deleted = checkpoints.deleted + excluded.deleted",
        )
        .bind(d.run_id)
        .bind(entity)
        .bind(n)
        .bind(d.now)
        .execute(&mut *tx)
        .await?;
    }
    let updated = sqlx::query(
        "UPDATE runs SET records_deleted = records_deleted + $1, updated_at = $2 \
         WHERE id = $3 AND state = 'running'",
    )
    .bind(deleted.values().sum::<i64>())
    .bind(d.now)
    .bind(d.run_id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(Error::NotFound(format!("running run {}", d.run_id)));
    }
    Ok(deleted)
}
