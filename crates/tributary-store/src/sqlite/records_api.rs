//! SQLite: the records API (pages in version order) and full-text search
//! (FTS5), see [`crate::records_api`].

use sqlx::{AssertSqlSafe, Row};

use super::SqliteStore;
use crate::Result;
use crate::plan::sqlite_ts;
use crate::records_api::{
    IncomingEdge, RecordsPage, RecordsPageQuery, SearchHit, SearchIndexStep, SearchQuery,
    VERSION_COLUMNS, incoming_row, index_batch, version_row,
};
use crate::rows::Columns;

/// The feed's head: the newest feed row, or the retention's horizon when
/// it deleted every row.
const HEAD: &str = "SELECT max(coalesce((SELECT max(seq) FROM changes), 0), \
     (SELECT seq FROM feed_horizon WHERE id = 1))";

/// The text a record is found by: the string values of its canonical JSON.
const BODY: &str = "coalesce((SELECT group_concat(j.value, ' ') FROM json_tree(r.canonical) j \
     WHERE j.type = 'text'), '')";

impl SqliteStore {
    pub(super) async fn select_records_page(
        &self,
        query: &RecordsPageQuery,
    ) -> Result<RecordsPage> {
        let mut sql = format!(
            "SELECT {VERSION_COLUMNS} FROM record_versions v \
             JOIN records r ON r.id = v.record_id JOIN connections c ON c.id = r.connection_id \
             WHERE v.version > ?"
        );
        if query.connection_id.is_some() {
            sql.push_str(" AND v.connection_id = ?");
        }
        if query.entity.is_some() {
            sql.push_str(" AND v.entity = ?");
        }
        if query.modified_after.is_some() {
            sql.push_str(" AND r.last_modified_at > ?");
        }
        if !query.include_deleted {
            sql.push_str(" AND r.deleted_at IS NULL");
        }
        sql.push_str(" ORDER BY v.version LIMIT ?");
        // Version 0 (records whose feed rows the retention deleted before
        // versions existed) is in the start's pages.
        // 0 is the start: before the records older than the feed too.
        let after = if query.after == 0 {
            i64::MIN
        } else {
            query.after
        };
        let mut statement = sqlx::query(AssertSqlSafe(sql)).bind(after);
        if let Some(id) = query.connection_id {
            statement = statement.bind(id);
        }
        if let Some(entity) = &query.entity {
            statement = statement.bind(entity.as_str());
        }
        if let Some(after) = &query.modified_after {
            statement = statement.bind(sqlite_ts(after));
        }
        statement = statement.bind(i64::from(query.limit));
        // One read transaction: the page and the head from one snapshot.
        let mut tx = self.reader.begin().await?;
        let rows = statement.fetch_all(&mut *tx).await?;
        let head: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let records = rows.iter().map(version_row).collect::<Result<Vec<_>>>()?;
        Ok(RecordsPage::new(records, query.after, query.limit, head))
    }

    pub(super) async fn select_edges_to(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<IncomingEdge>> {
        let rows = sqlx::query(
            "SELECT from_entity, from_external_id, rel, hard FROM edges \
             WHERE connection_id = ? AND to_entity = ? AND to_external_id = ? \
             ORDER BY from_entity, from_external_id, rel",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(incoming_row).collect()
    }

    pub(super) async fn select_search_cursor(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM search_cursor WHERE id = 1")
            .fetch_one(&self.reader)
            .await?;
        Ok(seq)
    }

    pub(super) async fn index_search_step(&self, limit: u32) -> Result<SearchIndexStep> {
        // Whether there is anything to do, asked without the write lock.
        let (cursor, head, horizon): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT seq FROM search_cursor WHERE id = 1), \
             (SELECT coalesce(max(seq), 0) FROM changes), (SELECT seq FROM feed_horizon WHERE id = 1)",
        )
        .fetch_one(&self.reader)
        .await?;
        if cursor >= horizon && head <= cursor {
            return Ok(SearchIndexStep {
                cursor,
                ..SearchIndexStep::default()
            });
        }
        let result = async {
            let mut tx = self.begin().await?;
            let (cursor, horizon): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT seq FROM search_cursor WHERE id = 1), \
                 (SELECT seq FROM feed_horizon WHERE id = 1)",
            )
            .fetch_one(&mut *tx)
            .await?;
            if cursor < horizon {
                // Changes the index has not seen are gone: index every
                // live record as it is now, up to the head.
                sqlx::query("DELETE FROM record_search")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO record_search (rowid, body) SELECT r.id, {BODY} FROM records r \
                     WHERE r.deleted_at IS NULL"
                )))
                .execute(&mut *tx)
                .await?;
                let head: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *tx).await?;
                sqlx::query("UPDATE search_cursor SET seq = ? WHERE id = 1")
                    .bind(head)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(SearchIndexStep {
                    cursor: head,
                    changes: 0,
                    rebuilt: true,
                });
            }
            let rows = sqlx::query(
                "SELECT seq, record_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(cursor)
            .bind(index_batch(limit))
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows
                .last()
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()?
            else {
                tx.rollback().await?;
                return Ok(SearchIndexStep {
                    cursor,
                    ..SearchIndexStep::default()
                });
            };
            let ids = rows
                .iter()
                .map(|row| row.try_get::<i64, _>(1))
                .collect::<Result<Vec<_>, _>>()?;
            let ids = serde_json::Value::from(ids).to_string();
            sqlx::query(
                "DELETE FROM record_search WHERE rowid IN (SELECT value FROM json_each(?))",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO record_search (rowid, body) SELECT r.id, {BODY} FROM records r \
                 WHERE r.id IN (SELECT DISTINCT value FROM json_each(?)) AND r.deleted_at IS NULL"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE search_cursor SET seq = ? WHERE id = 1")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(SearchIndexStep {
                cursor: last,
                changes: rows.len() as u64,
                rebuilt: false,
            })
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    pub(super) async fn select_search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        if query.words.is_empty() {
            return Ok(Vec::new());
        }
        // Each word a quoted prefix: nothing the user types is FTS5 syntax.
        let pattern = query
            .words
            .iter()
            .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut sql = String::from(
            "SELECT r.connection_id, c.name AS connection, r.entity, r.external_id, r.canonical, \
             -bm25(record_search) AS score, \
             snippet(record_search, 0, '«', '»', '…', 16) AS snippet \
             FROM record_search JOIN records r ON r.id = record_search.rowid \
             JOIN connections c ON c.id = r.connection_id \
             WHERE record_search MATCH ? AND r.deleted_at IS NULL",
        );
        if query.connection_id.is_some() {
            sql.push_str(" AND r.connection_id = ?");
        }
        if query.entity.is_some() {
            sql.push_str(" AND r.entity = ?");
        }
        sql.push_str(" ORDER BY bm25(record_search), r.id LIMIT ?");
        let mut statement = sqlx::query(AssertSqlSafe(sql)).bind(pattern);
        if let Some(id) = query.connection_id {
            statement = statement.bind(id);
        }
        if let Some(entity) = &query.entity {
            statement = statement.bind(entity.as_str());
        }
        let rows = statement
            .bind(i64::from(query.limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SearchHit {
                    connection_id: row.try_get("connection_id")?,
                    connection: row.try_get("connection")?,
                    entity: row.try_get("entity")?,
                    external_id: row.try_get("external_id")?,
                    canonical: row.json("canonical")?,
                    rank: row.try_get("score")?,
                    snippet: row.try_get("snippet")?,
                })
            })
            .collect()
    }
}
