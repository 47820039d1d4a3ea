//! PostgreSQL: the records API (pages in version order) and full-text
//! search (`tsvector` with a GIN index), see [`crate::records_api`].

use sqlx::{AssertSqlSafe, Connection as _, Row};

use super::{PgStore, sequence_changes};
use crate::Result;
use crate::records_api::{
    IncomingEdge, RecordsPage, RecordsPageQuery, SearchHit, SearchIndexStep, SearchQuery,
    VERSION_COLUMNS, incoming_row, index_batch, version_row,
};
use crate::rows::Columns;

/// The feed's head: the newest position given, or the retention's horizon
/// when it deleted every row.
const HEAD: &str = "SELECT greatest((SELECT coalesce(max(pos), 0) FROM changes), \
     (SELECT seq FROM feed_horizon WHERE id = 1))";

/// The text a record is found by: the string values of its canonical JSON.
const BODY: &str = "coalesce((SELECT string_agg(s #>> '{}', ' ') \
     FROM jsonb_path_query(r.canonical, 'strict $.**') s WHERE jsonb_typeof(s) = 'string'), '')";

/// Its words: the text split at spaces and punctuation as SQLite's FTS5
/// splits it (so an e-mail address is found by its parts on both).
///
/// Only the first 200,000 characters are indexed: PostgreSQL refuses a
/// `tsvector` over 1 MB, and one huge record must not stop the index.
const DOC: &str = "to_tsvector('simple', regexp_replace(left(b.body, 200000), '[[:space:][:punct:]]+', ' ', 'g'))";

impl PgStore {
    pub(super) async fn select_records_page(
        &self,
        query: &RecordsPageQuery,
    ) -> Result<RecordsPage> {
        // Committed changes get their positions, and their records their
        // versions, first.
        let mut tx = self.pool.begin().await?;
        sequence_changes(&mut tx).await?;
        tx.commit().await?;
        let mut sql = format!(
            "SELECT {VERSION_COLUMNS} FROM record_versions v \
             JOIN records r ON r.id = v.record_id JOIN connections c ON c.id = r.connection_id \
             WHERE v.version > $1"
        );
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if query.connection_id.is_some() {
            sql.push_str(&format!(" AND v.connection_id = ${}", next()));
        }
        if query.entity.is_some() {
            sql.push_str(&format!(" AND v.entity = ${}", next()));
        }
        if query.modified_after.is_some() {
            sql.push_str(&format!(" AND r.last_modified_at > ${}", next()));
        }
        if !query.include_deleted {
            sql.push_str(" AND r.deleted_at IS NULL");
        }
        // A record whose newest change has no position yet (committed
        // after the sequencing above) shows its new content under its old
        // version: it waits for its new version, above this page's head.
        sql.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM changes u WHERE u.record_id = v.record_id AND u.pos IS NULL) \
             ORDER BY v.version LIMIT ${}",
            next()
        ));
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
        if let Some(after) = query.modified_after {
            statement = statement.bind(after);
        }
        statement = statement.bind(i64::from(query.limit));
        // The page and the head from one snapshot.
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let head: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *tx).await?;
        let rows = statement.fetch_all(&mut *tx).await?;
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
             WHERE connection_id = $1 AND to_entity = $2 AND to_external_id = $3 \
             ORDER BY from_entity, from_external_id, rel",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(incoming_row).collect()
    }

    pub(super) async fn select_search_cursor(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM search_cursor WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }

    pub(super) async fn index_search_step(&self, limit: u32) -> Result<SearchIndexStep> {
        // Committed changes get their positions first (in a transaction of
        // its own: the sequencer's lock is not held while indexing).
        let mut tx = self.pool.begin().await?;
        sequence_changes(&mut tx).await?;
        tx.commit().await?;
        let (cursor, head, horizon): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT seq FROM search_cursor WHERE id = 1), \
             (SELECT coalesce(max(pos), 0) FROM changes), (SELECT seq FROM feed_horizon WHERE id = 1)",
        )
        .fetch_one(&self.pool)
        .await?;
        if cursor >= horizon && head <= cursor {
            return Ok(SearchIndexStep {
                cursor,
                ..SearchIndexStep::default()
            });
        }
        let mut tx = self.pool.begin().await?;
        // One indexer at a time (of any process).
        let cursor: i64 =
            sqlx::query_scalar("SELECT seq FROM search_cursor WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let horizon: i64 = sqlx::query_scalar("SELECT seq FROM feed_horizon WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        if cursor < horizon {
            // Changes the index has not seen are gone: index every live
            // record as it is now. The head is read first: what commits
            // later has a position above it, and is indexed again.
            let head: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *tx).await?;
            sqlx::query("DELETE FROM record_search")
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO record_search (record_id, body, doc) SELECT b.id, b.body, {DOC} \
                 FROM (SELECT r.id, {BODY} AS body FROM records r WHERE r.deleted_at IS NULL) b"
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE search_cursor SET seq = $1 WHERE id = 1")
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
        let rows =
            sqlx::query("SELECT pos, record_id FROM changes WHERE pos > $1 ORDER BY pos LIMIT $2")
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
        let mut ids = rows
            .iter()
            .map(|row| row.try_get::<i64, _>(1))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        ids.dedup();
        sqlx::query("DELETE FROM record_search WHERE record_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO record_search (record_id, body, doc) SELECT b.id, b.body, {DOC} \
             FROM (SELECT r.id, {BODY} AS body FROM records r \
                   WHERE r.id = ANY($1) AND r.deleted_at IS NULL) b"
        )))
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE search_cursor SET seq = $1 WHERE id = 1")
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

    pub(super) async fn select_search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        if query.words.is_empty() {
            return Ok(Vec::new());
        }
        // Each word a quoted prefix (words are letters and digits only).
        let pattern = query
            .words
            .iter()
            .map(|w| format!("'{}':*", w.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" & ");
        let mut filters = String::new();
        let mut n = 1;
        if query.connection_id.is_some() {
            n += 1;
            filters.push_str(&format!(" AND r.connection_id = ${n}"));
        }
        if query.entity.is_some() {
            n += 1;
            filters.push_str(&format!(" AND r.entity = ${n}"));
        }
        n += 1;
        // The snippets of the page's hits only (a headline parses the text).
        let sql = format!(
            "SELECT h.*, ts_headline('simple', s.body, q, \
               'StartSel=\"«\", StopSel=\"»\", MaxWords=24, MinWords=6, MaxFragments=2, FragmentDelimiter=\" … \"') \
               AS snippet \
             FROM (SELECT r.id, r.connection_id, c.name AS connection, r.entity, r.external_id, \
                     r.canonical, ts_rank_cd(s.doc, q)::float8 AS score \
                   FROM record_search s JOIN records r ON r.id = s.record_id \
                   JOIN connections c ON c.id = r.connection_id, to_tsquery('simple', $1) q \
                   WHERE s.doc @@ q AND r.deleted_at IS NULL{filters} \
                   ORDER BY score DESC, r.id LIMIT ${n}) h \
             JOIN record_search s ON s.record_id = h.id, to_tsquery('simple', $1) q \
             ORDER BY h.score DESC, h.id"
        );
        let mut statement = sqlx::query(AssertSqlSafe(sql)).bind(pattern);
        if let Some(id) = query.connection_id {
            statement = statement.bind(id);
        }
        if let Some(entity) = &query.entity {
            statement = statement.bind(entity.as_str());
        }
        let rows = statement
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
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
