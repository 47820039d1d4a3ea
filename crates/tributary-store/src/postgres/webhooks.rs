//! PostgreSQL: webhook secrets and the inbox.

use tributary_core::Timestamp;

use super::PgStore;
use crate::Result;
use crate::webhooks::{
    DELIVERY_COLUMNS, Delivery, DeliveryQuery, DeliveryState, NewDelivery, Received,
    SECRET_COLUMNS, Settled, WebhookSecret, delivery_row, secret_row,
};

impl PgStore {
    pub(super) async fn insert_webhook_secret(
        &self,
        connection_id: i64,
        event: Option<&str>,
        sealed: &[u8],
        now: Timestamp,
    ) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_secrets (connection_id, event, sealed, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(connection_id)
        .bind(event)
        .bind(sealed)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub(super) async fn select_webhook_secrets(
        &self,
        connection_id: i64,
    ) -> Result<Vec<WebhookSecret>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM webhook_secrets WHERE connection_id = $1 ORDER BY id"
        )))
        .bind(connection_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(secret_row).collect()
    }

    pub(super) async fn delete_webhook_secret(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhook_secrets WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn insert_deliveries(
        &self,
        deliveries: &[NewDelivery],
    ) -> Result<Vec<Received>> {
        let mut tx = self.pool.begin().await?;
        // In one order (by sender id) whatever the batch's: two batches
        // with ids in common never wait on each other's rows crosswise.
        let mut order: Vec<usize> = (0..deliveries.len()).collect();
        order.sort_by(|&a, &b| deliveries[a].delivery_id.cmp(&deliveries[b].delivery_id));
        let mut received = vec![Received::Duplicate; deliveries.len()];
        for i in order {
            let d = &deliveries[i];
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO webhook_deliveries (connection_id, delivery_id, event, sent_at, \
                 received_at, payload) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (connection_id, delivery_id) DO NOTHING RETURNING id",
            )
            .bind(d.connection_id)
            .bind(&d.delivery_id)
            .bind(&d.event)
            .bind(d.sent_at)
            .bind(d.received_at)
            .bind(&d.payload)
            .fetch_optional(&mut *tx)
            .await?;
            received[i] = id.map_or(Received::Duplicate, Received::Stored);
        }
        tx.commit().await?;
        Ok(received)
    }

    pub(super) async fn select_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE ($1::BIGINT IS NULL OR connection_id = $1) AND ($2::TEXT IS NULL OR state = $2) \
             AND id > $3 ORDER BY id LIMIT $4"
        )))
        .bind(query.connection_id)
        .bind(query.state.map(|s| s.as_str()))
        .bind(query.after_id)
        .bind(query.limit())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    pub(super) async fn select_backlog(&self, now: Timestamp) -> Result<Vec<i64>> {
        let ids = sqlx::query_scalar(
            "SELECT DISTINCT connection_id FROM webhook_deliveries \
             WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1) \
             AND connection_id NOT IN (SELECT connection_id FROM webhook_pauses) \
             ORDER BY connection_id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    pub(super) async fn select_due(
        &self,
        connection_id: i64,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE connection_id = $1 AND state = 'pending' \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
             AND NOT EXISTS (SELECT 1 FROM webhook_pauses p WHERE p.connection_id = $1) \
             ORDER BY id LIMIT $3"
        )))
        .bind(connection_id)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    pub(super) async fn update_settled(
        &self,
        settled: &[(i64, i64, Settled)],
        now: Timestamp,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for (id, attempts, outcome) in settled {
            let (state, error, next, run) = outcome.columns();
            n += sqlx::query(
                "UPDATE webhook_deliveries SET state = $1, error = $2, next_attempt_at = $3, \
                 run_id = COALESCE($4, run_id), attempts = attempts + 1, \
                 applied_at = CASE WHEN $1 = 'applied' THEN $5 ELSE applied_at END \
                 WHERE id = $6 AND state = 'pending' AND attempts = $7",
            )
            .bind(state.as_str())
            .bind(error)
            .bind(next)
            .bind(run)
            .bind(now)
            .bind(id)
            .bind(attempts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn update_replayed(
        &self,
        ids: &[i64],
        since: Option<Timestamp>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        if ids.is_empty() {
            n = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = NULL, \
                 error = NULL, applied_at = NULL, run_id = NULL \
                 WHERE state = $1 AND ($2::TIMESTAMPTZ IS NULL OR received_at >= $2)",
            )
            .bind(DeliveryState::Dead.as_str())
            .bind(since)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for id in ids {
            n += sqlx::query(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = NULL, \
                 error = NULL, applied_at = NULL, run_id = NULL \
                 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn update_paused(
        &self,
        connection_id: i64,
        paused: bool,
        now: Timestamp,
    ) -> Result<()> {
        let query = match paused {
            true => sqlx::query(
                "INSERT INTO webhook_pauses (connection_id, paused_at) VALUES ($1, $2) \
                 ON CONFLICT (connection_id) DO NOTHING",
            )
            .bind(connection_id)
            .bind(now),
            false => sqlx::query("DELETE FROM webhook_pauses WHERE connection_id = $1")
                .bind(connection_id),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn delete_expired(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state = 'applied' AND received_at < $1",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // The audit trail's notes of them go with them.
        sqlx::query(
            "DELETE FROM webhook_subjects s WHERE NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.id = s.delivery_id)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    pub(super) async fn select_pauses(&self) -> Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT connection_id FROM webhook_pauses ORDER BY connection_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
