//! SQLite: subscriptions (webhooks out) and their outbox.
//!
//! One writer: every write below runs on the writer connection, so a
//! claim (one `UPDATE ... RETURNING` statement) and an enqueue (one
//! `BEGIN IMMEDIATE` transaction) never interleave with another process's.

use tributary_core::Timestamp;

use super::SqliteStore;
use crate::Result;
use crate::plan::sqlite_ts;
use crate::subscriptions::{
    Attempted, Enqueue, FinishedRun, HEAD_OF_LINE, MESSAGE_COLUMNS, Message, MessageQuery,
    MessageState, NewSubscription, OutboxStats, SUBSCRIPTION_COLUMNS, Subscription,
    SubscriptionState, finished_row, message_row, stats_row, subscription_row,
};

impl SqliteStore {
    pub(super) async fn insert_subscription(
        &self,
        new: &NewSubscription<'_>,
    ) -> Result<Subscription> {
        let now = sqlite_ts(&new.now);
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO subscriptions (connection_id, entity, url, sealed_secret, wants_changes, \
             wants_finished, cursor, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING {SUBSCRIPTION_COLUMNS}"
        )))
        .bind(new.connection_id)
        .bind(new.entity)
        .bind(new.url)
        .bind(new.sealed_secret)
        .bind(new.wants_changes)
        .bind(new.wants_finished)
        .bind(new.cursor)
        .bind(&now)
        .bind(&now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        subscription_row(&row)
    }

    pub(super) async fn select_subscriptions(&self, id: Option<i64>) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE (?1 IS NULL OR id = ?1) \
             ORDER BY id"
        )))
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(subscription_row).collect()
    }

    pub(super) async fn delete_subscription(&self, id: i64) -> Result<bool> {
        let result = async {
            let mut tx = self.begin().await?;
            for sql in [
                "DELETE FROM subscription_messages WHERE subscription_id = ?",
                "DELETE FROM subscription_finishes WHERE subscription_id = ?",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
            let gone = sqlx::query("DELETE FROM subscriptions WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(gone > 0)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    pub(super) async fn update_subscription_state(
        &self,
        id: i64,
        state: SubscriptionState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE subscriptions SET state = ?, disabled_reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(reason.filter(|_| state == SubscriptionState::Disabled))
        .bind(sqlite_ts(&now))
        .bind(id)
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn select_finished(&self, subscription_id: i64) -> Result<Vec<FinishedRun>> {
        let rows = sqlx::query(
            "SELECT id, subscription_id, run_id, state, finished_at FROM subscription_finishes \
             WHERE subscription_id = ? ORDER BY id",
        )
        .bind(subscription_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(finished_row).collect()
    }

    pub(super) async fn insert_messages(&self, enqueue: &Enqueue<'_>) -> Result<bool> {
        let result = async {
            let mut tx = self.begin().await?;
            let now = sqlite_ts(&enqueue.now);
            // The cursor moves only from where the messages were read
            // after: a second enqueuer of the same changes finds it moved
            // and writes nothing.
            let moved = sqlx::query(
                "UPDATE subscriptions SET cursor = ?, updated_at = ? \
                 WHERE id = ? AND cursor = ? AND state = 'active'",
            )
            .bind(enqueue.to_cursor)
            .bind(&now)
            .bind(enqueue.subscription_id)
            .bind(enqueue.from_cursor)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            for id in enqueue.finished {
                let told = sqlx::query(
                    "DELETE FROM subscription_finishes WHERE id = ? AND subscription_id = ?",
                )
                .bind(id)
                .bind(enqueue.subscription_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if told != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            for message in enqueue.messages {
                sqlx::query(
                    "INSERT INTO subscription_messages (subscription_id, message_id, event, body, \
                     next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(enqueue.subscription_id)
                .bind(&message.message_id)
                .bind(&message.event)
                .bind(&message.body)
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    pub(super) async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // One statement: atomic against every other writer.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscription_messages SET attempts = attempts + 1, next_attempt_at = ?1 \
             WHERE id IN (SELECT m.id FROM subscription_messages m \
               JOIN subscriptions s ON s.id = m.subscription_id AND s.state = 'active' \
               WHERE m.state = 'pending' AND m.next_attempt_at <= ?2 AND {HEAD_OF_LINE} \
               ORDER BY m.next_attempt_at, m.id LIMIT ?3) \
             RETURNING {MESSAGE_COLUMNS}"
        )))
        .bind(sqlite_ts(&lease_until))
        .bind(sqlite_ts(&now))
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
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
        let result = async {
            let mut tx = self.begin().await?;
            let (state, status, error, next) = outcome.columns(now);
            let subscription: Option<i64> = sqlx::query_scalar(
                "UPDATE subscription_messages SET state = ?, last_status = ?, last_error = ?, \
                 next_attempt_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE NULL END \
                 WHERE id = ? AND attempts = ? AND state = 'pending' RETURNING subscription_id",
            )
            .bind(state.as_str())
            .bind(status)
            .bind(error)
            .bind(sqlite_ts(&next))
            .bind(state.as_str())
            .bind(sqlite_ts(&now))
            .bind(id)
            .bind(attempts)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(subscription), Attempted::Gone { error }) = (subscription, outcome) {
                sqlx::query(
                    "UPDATE subscriptions SET state = 'disabled', disabled_reason = ?, \
                     updated_at = ? WHERE id = ?",
                )
                .bind(error)
                .bind(sqlite_ts(&now))
                .bind(subscription)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(subscription.is_some())
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    pub(super) async fn release(&self, id: i64, attempts: i64, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE subscription_messages SET attempts = attempts - 1, next_attempt_at = ? \
             WHERE id = ? AND attempts = ? AND state = 'pending'",
        )
        .bind(sqlite_ts(&now))
        .bind(id)
        .bind(attempts)
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn replay(
        &self,
        subscription_id: i64,
        message_ids: &[String],
        now: Timestamp,
    ) -> Result<u64> {
        let result = async {
            let mut tx = self.begin().await?;
            let sql = "UPDATE subscription_messages SET state = 'pending', attempts = 0, \
                 next_attempt_at = ?1, last_error = NULL, last_status = NULL, delivered_at = NULL \
                 WHERE subscription_id = ?2 AND state = 'dead' AND (?3 IS NULL OR message_id = ?3)";
            let mut n = 0;
            if message_ids.is_empty() {
                n += sqlx::query(sql)
                    .bind(sqlite_ts(&now))
                    .bind(subscription_id)
                    .bind(None::<&str>)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            for message_id in message_ids {
                n += sqlx::query(sql)
                    .bind(sqlite_ts(&now))
                    .bind(subscription_id)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(n)
        }
        .await;
        result.map_err(|error| self.write_error(error))
    }

    pub(super) async fn select_messages(&self, query: &MessageQuery) -> Result<Vec<Message>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM subscription_messages \
             WHERE (?1 IS NULL OR subscription_id = ?1) AND (?2 IS NULL OR state = ?2) AND id > ?3 \
             ORDER BY id LIMIT ?4"
        )))
        .bind(query.subscription_id)
        .bind(query.state.map(MessageState::as_str))
        .bind(query.after_id)
        .bind(query.limit())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(message_row).collect()
    }

    pub(super) async fn select_outbox_stats(&self) -> Result<Vec<OutboxStats>> {
        let rows = sqlx::query(
            "SELECT s.id AS subscription_id, \
               (SELECT count(*) FROM subscription_messages m WHERE m.subscription_id = s.id AND m.state = 'pending') AS pending, \
               (SELECT count(*) FROM subscription_messages m WHERE m.subscription_id = s.id AND m.state = 'delivered') AS delivered, \
               (SELECT count(*) FROM subscription_messages m WHERE m.subscription_id = s.id AND m.state = 'dead') AS dead, \
               (SELECT m.last_error FROM subscription_messages m WHERE m.subscription_id = s.id \
                  AND m.state <> 'delivered' AND m.last_error IS NOT NULL ORDER BY m.id DESC LIMIT 1) AS last_error, \
               (SELECT max(m.delivered_at) FROM subscription_messages m WHERE m.subscription_id = s.id) AS last_delivered_at \
             FROM subscriptions s ORDER BY s.id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(stats_row).collect()
    }

    pub(super) async fn select_next_due(&self) -> Result<Option<Timestamp>> {
        let next: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT min(m.next_attempt_at) FROM subscription_messages m \
             JOIN subscriptions s ON s.id = m.subscription_id AND s.state = 'active' \
             WHERE m.state = 'pending' AND {HEAD_OF_LINE}"
        )))
        .fetch_one(&self.reader)
        .await?;
        next.as_deref().map(crate::plan::parse_ts).transpose()
    }

    pub(super) async fn delete_delivered(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM subscription_messages WHERE state = 'delivered' AND delivered_at < ?",
        )
        .bind(sqlite_ts(&before))
        .execute(&self.writer)
        .await
        .map_err(|e| self.write_error(e.into()))?
        .rows_affected())
    }
}
