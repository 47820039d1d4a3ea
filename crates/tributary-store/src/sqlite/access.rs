//! SQLite: API tokens and the audit trail.

use tributary_core::Timestamp;

use super::SqliteStore;
use crate::access::{ApiToken, Subject, TOKEN_COLUMNS, TokenRole, token_row};
use crate::plan::sqlite_ts;
use crate::rows::change_row;
use crate::webhooks::{DELIVERY_COLUMNS, Delivery, delivery_row};
use crate::{Change, Result};

impl SqliteStore {
    pub(super) async fn insert_token(
        &self,
        name: &str,
        role: TokenRole,
        hash: &str,
        now: Timestamp,
    ) -> Result<ApiToken> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?) \
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(sqlite_ts(&now))
        .fetch_one(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        token_row(&row)
    }

    pub(super) async fn select_tokens(&self, hash: Option<&str>) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens \
             WHERE ?1 IS NULL OR (hash = ?1 AND revoked_at IS NULL) ORDER BY id"
        )))
        .bind(hash)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(token_row).collect()
    }

    pub(super) async fn update_token_revoked(&self, id: i64, now: Timestamp) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(sqlite_ts(&now))
                .bind(id)
                .execute(&self.writer)
                .await
                .map_err(|e| self.write_error(e.into()))?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn insert_subjects(&self, subjects: &[Subject]) -> Result<()> {
        let mut tx = self.begin().await?;
        for s in subjects {
            sqlx::query(
                "INSERT INTO webhook_subjects (connection_id, entity, external_id, delivery_id) \
                 VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(s.connection_id)
            .bind(&s.entity)
            .bind(&s.external_id)
            .bind(s.delivery_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.write_error(e.into()))?;
        }
        tx.commit().await.map_err(|e| self.write_error(e))?;
        Ok(())
    }

    pub(super) async fn select_record_changes(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
        limit: u32,
    ) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT ch.* FROM records r JOIN changes ch ON ch.record_id = r.id \
             WHERE r.connection_id = ? AND r.entity = ? AND r.external_id = ? \
             ORDER BY ch.seq DESC LIMIT ?",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(change_row).collect()
    }

    pub(super) async fn select_record_deliveries(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id IN ( \
                 SELECT delivery_id FROM webhook_subjects \
                 WHERE connection_id = ? AND entity = ? AND external_id = ?) \
             ORDER BY id"
        )))
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(delivery_row).collect()
    }
}
