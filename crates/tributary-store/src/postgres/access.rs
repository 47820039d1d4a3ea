//! PostgreSQL: API tokens and the audit trail.

use tributary_core::Timestamp;

use super::PgStore;
use crate::access::{ApiToken, Subject, TOKEN_COLUMNS, TokenRole, token_row};
use crate::rows::change_row;
use crate::webhooks::{DELIVERY_COLUMNS, Delivery, delivery_row};
use crate::{Change, Result};

impl PgStore {
    pub(super) async fn insert_token(
        &self,
        name: &str,
        role: TokenRole,
        hash: &str,
        now: Timestamp,
    ) -> Result<ApiToken> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        token_row(&row)
    }

    pub(super) async fn select_tokens(&self, hash: Option<&str>) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens \
             WHERE $1::text IS NULL OR (hash = $1 AND revoked_at IS NULL) ORDER BY id"
        )))
        .bind(hash)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_row).collect()
    }

    pub(super) async fn update_token_revoked(&self, id: i64, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn insert_subjects(&self, subjects: &[Subject]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for s in subjects {
            sqlx::query(
                "INSERT INTO webhook_subjects (connection_id, entity, external_id, delivery_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(s.connection_id)
            .bind(&s.entity)
            .bind(&s.external_id)
            .bind(s.delivery_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn select_record_changes(
        &self,
        connection_id: i64,
        entity: &str,
        external_id: &str,
        limit: u32,
    ) -> Result<Vec<Change>> {
        // Committed rows get their feed positions first, as the feed's
        // reads do: a change is shown at its position.
        let mut tx = self.pool.begin().await?;
        super::sequence_changes(&mut tx).await?;
        tx.commit().await?;
        let rows = sqlx::query(
            "SELECT ch.pos AS seq, ch.connection_id, ch.record_id, ch.entity, ch.external_id, \
             ch.kind, ch.content_hash, ch.run_id, ch.changed_at, ch.fields \
             FROM records r JOIN changes ch ON ch.record_id = r.id \
             WHERE r.connection_id = $1 AND r.entity = $2 AND r.external_id = $3 \
               AND ch.pos IS NOT NULL \
             ORDER BY ch.pos DESC LIMIT $4",
        )
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
                 WHERE connection_id = $1 AND entity = $2 AND external_id = $3) \
             ORDER BY id"
        )))
        .bind(connection_id)
        .bind(entity)
        .bind(external_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }
}
