//! PostgreSQL: subscriptions (webhooks out) and their outbox.
//!
//! Several processes may follow and deliver at once: an enqueue moves the
//! subscription's cursor by a compare-and-swap on its row (a second
//! enqueuer waits for the first, then finds the cursor moved and writes
//! nothing), and a claim locks the messages it takes `FOR UPDATE SKIP
//! LOCKED` and moves them past their lease before it commits, so two
//! claimers never take the same message and never wait on each other.

use tributary_core::Timestamp;

use super::PgStore;
use crate::Result;
use crate::subscriptions::{
    Attempted, Enqueue, FinishedRun, HEAD_OF_LINE, MESSAGE_COLUMNS, Message, MessageQuery,
    MessageState, NewSubscription, OutboxStats, SUBSCRIPTION_COLUMNS, Subscription,
    SubscriptionState, finished_row, message_row, stats_row, subscription_row,
};

impl PgStore {
    pub(super) async fn insert_subscription(
        &self,
        new: &NewSubscription<'_>,
    ) -> Result<Subscription> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO subscriptions (connection_id, entity, url, sealed_secret, wants_changes, \
             wants_finished, cursor, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             RETURNING {SUBSCRIPTION_COLUMNS}"
        )))
        .bind(new.connection_id)
        .bind(new.entity)
        .bind(new.url)
        .bind(new.sealed_secret)
        .bind(new.wants_changes)
        .bind(new.wants_finished)
        .bind(new.cursor)
        .bind(new.now)
        .fetch_one(&self.pool)
        .await?;
        subscription_row(&row)
    }

    pub(super) async fn select_subscriptions(&self, id: Option<i64>) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE ($1::BIGINT IS NULL OR id = $1) \
             ORDER BY id"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_row).collect()
    }

    pub(super) async fn delete_subscription(&self, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The row first: an enqueue in flight (which holds it) ends before
        // its messages are deleted, and none starts after.
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM subscriptions WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        for sql in [
            "DELETE FROM subscription_messages WHERE subscription_id = $1",
            "DELETE FROM subscription_finishes WHERE subscription_id = $1",
            "DELETE FROM subscriptions WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn update_subscription_state(
        &self,
        id: i64,
        state: SubscriptionState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE subscriptions SET state = $1, disabled_reason = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(state.as_str())
        .bind(reason.filter(|_| state == SubscriptionState::Disabled))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn select_finished(&self, subscription_id: i64) -> Result<Vec<FinishedRun>> {
        let rows = sqlx::query(
            "SELECT id, subscription_id, run_id, state, finished_at FROM subscription_finishes \
             WHERE subscription_id = $1 ORDER BY id",
        )
        .bind(subscription_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(finished_row).collect()
    }

    pub(super) async fn insert_messages(&self, enqueue: &Enqueue<'_>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The cursor moves only from where the messages were read after. A
        // second enqueuer of the same changes waits on the row, then finds
        // the cursor moved (the update re-reads the committed row) and
        // writes nothing.
        let moved = sqlx::query(
            "UPDATE subscriptions SET cursor = $1, updated_at = $2 \
             WHERE id = $3 AND cursor = $4 AND state = 'active'",
        )
        .bind(enqueue.to_cursor)
        .bind(enqueue.now)
        .bind(enqueue.subscription_id)
        .bind(enqueue.from_cursor)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if !enqueue.finished.is_empty() {
            let told = sqlx::query(
                "DELETE FROM subscription_finishes WHERE id = ANY($1) AND subscription_id = $2",
            )
            .bind(enqueue.finished)
            .bind(enqueue.subscription_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if told != enqueue.finished.len() as u64 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        if !enqueue.messages.is_empty() {
            let ids: Vec<&str> = enqueue
                .messages
                .iter()
                .map(|m| m.message_id.as_str())
                .collect();
            let events: Vec<&str> = enqueue.messages.iter().map(|m| m.event.as_str()).collect();
            let bodies: Vec<&str> = enqueue.messages.iter().map(|m| m.body.as_str()).collect();
            sqlx::query(
                "INSERT INTO subscription_messages (subscription_id, message_id, event, body, \
                 next_attempt_at, created_at) \
                 SELECT $1, t.message_id, t.event, t.body, $5, $5 \
                 FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
                   AS t(message_id, event, body, ord) ORDER BY t.ord",
            )
            .bind(enqueue.subscription_id)
            .bind(&ids)
            .bind(&events)
            .bind(&bodies)
            .bind(enqueue.now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // Rows another claimer has locked are skipped, not waited for; a
        // row that claimer committed meanwhile is re-checked as committed
        // (its next attempt moved past the lease) and left out.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH due AS ( \
               SELECT m.id FROM subscription_messages m \
               JOIN subscriptions s ON s.id = m.subscription_id AND s.state = 'active' \
               WHERE m.state = 'pending' AND m.next_attempt_at <= $2 AND {HEAD_OF_LINE} \
               ORDER BY m.next_attempt_at, m.id LIMIT $3 \
               FOR UPDATE OF m SKIP LOCKED) \
             UPDATE subscription_messages SET attempts = attempts + 1, next_attempt_at = $1 \
             FROM due WHERE subscription_messages.id = due.id \
             RETURNING {}",
            MESSAGE_COLUMNS
                .split(", ")
                .map(|c| format!("subscription_messages.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows.iter().map(message_row).collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|m| m.id);
        Ok(claimed)
    }

    pub(super) async fn settle(
        &self,
        id: i64,
        attempts: i64,
        outcome: &Attempted,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let (state, status, error, next) = outcome.columns(now);
        let subscription: Option<i64> = sqlx::query_scalar(
            "UPDATE subscription_messages SET state = $1, last_status = $2, last_error = $3, \
             next_attempt_at = $4, delivered_at = CASE WHEN $1 = 'delivered' THEN $5 ELSE NULL END \
             WHERE id = $6 AND attempts = $7 AND state = 'pending' RETURNING subscription_id",
        )
        .bind(state.as_str())
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(now)
        .bind(id)
        .bind(attempts)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(subscription), Attempted::Gone { error }) = (subscription, outcome) {
            sqlx::query(
                "UPDATE subscriptions SET state = 'disabled', disabled_reason = $1, \
                 updated_at = $2 WHERE id = $3",
            )
            .bind(error)
            .bind(now)
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(subscription.is_some())
    }

    pub(super) async fn release(&self, id: i64, attempts: i64, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE subscription_messages SET attempts = attempts - 1, next_attempt_at = $1 \
             WHERE id = $2 AND attempts = $3 AND state = 'pending'",
        )
        .bind(now)
        .bind(id)
        .bind(attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn replay(
        &self,
        subscription_id: i64,
        message_ids: &[String],
        now: Timestamp,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE subscription_messages SET state = 'pending', attempts = 0, \
             next_attempt_at = $1, last_error = NULL, last_status = NULL, delivered_at = NULL \
             WHERE subscription_id = $2 AND state = 'dead' \
             AND (cardinality($3::text[]) = 0 OR message_id = ANY($3))",
        )
        .bind(now)
        .bind(subscription_id)
        .bind(message_ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn select_messages(&self, query: &MessageQuery) -> Result<Vec<Message>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM subscription_messages \
             WHERE ($1::BIGINT IS NULL OR subscription_id = $1) AND ($2::TEXT IS NULL OR state = $2) \
             AND id > $3 ORDER BY id LIMIT $4"
        )))
        .bind(query.subscription_id)
        .bind(query.state.map(MessageState::as_str))
        .bind(query.after_id)
        .bind(query.limit())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_row).collect()
    }

    pub(super) async fn select_outbox_stats(&self) -> Result<Vec<OutboxStats>> {
        let rows = sqlx::query(
            "SELECT s.id AS subscription_id, \
               count(m.id) FILTER (WHERE m.state = 'pending') AS pending, \
               count(m.id) FILTER (WHERE m.state = 'delivered') AS delivered, \
               count(m.id) FILTER (WHERE m.state = 'dead') AS dead, \
               (SELECT e.last_error FROM subscription_messages e WHERE e.subscription_id = s.id \
                  AND e.state <> 'delivered' AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1) AS last_error, \
               max(m.delivered_at) AS last_delivered_at \
             FROM subscriptions s LEFT JOIN subscription_messages m ON m.subscription_id = s.id \
             GROUP BY s.id ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stats_row).collect()
    }

    pub(super) async fn select_next_due(&self) -> Result<Option<Timestamp>> {
        let next: Option<Timestamp> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT min(m.next_attempt_at) FROM subscription_messages m \
             JOIN subscriptions s ON s.id = m.subscription_id AND s.state = 'active' \
             WHERE m.state = 'pending' AND {HEAD_OF_LINE}"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    pub(super) async fn delete_delivered(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM subscription_messages WHERE state = 'delivered' AND delivered_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
