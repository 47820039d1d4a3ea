//! Webhooks in, as stored: a connection's sealed secrets, and the inbox of
//! verified deliveries (once per sender id).

use tributary_core::Timestamp;

use crate::rows::Columns;
use crate::{Error, Result};

/// The columns of a [`WebhookSecret`].
pub(crate) const SECRET_COLUMNS: &str = "id, connection_id, event, sealed, created_at";

/// The columns of a [`Delivery`].
pub(crate) const DELIVERY_COLUMNS: &str = "id, connection_id, delivery_id, event, sent_at, \
     received_at, payload, state, attempts, next_attempt_at, error, applied_at, run_id";

/// One of a connection's webhook secrets, sealed (only the holder of the
/// secret key opens it).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    pub id: i64,
    pub connection_id: i64,
    /// The one event it signs; `None`: any.
    pub event: Option<String>,
    pub sealed: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("id", &self.id)
            .field("connection_id", &self.connection_id)
            .field("event", &self.event)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A verified delivery to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub connection_id: i64,
    /// The sender's id for it: a second delivery with the same id (per
    /// connection) is a duplicate.
    pub delivery_id: String,
    pub event: String,
    pub sent_at: Option<Timestamp>,
    pub received_at: Timestamp,
    /// The delivery as JSON text.
    pub payload: String,
}

/// What became of a delivery handed to [`crate::Store::receive_deliveries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Kept, as inbox row `id`.
    Stored(i64),
    /// The connection already had a delivery with this sender id: nothing
    /// was written.
    Duplicate,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Stored, not yet applied.
    Pending,
    /// Applied to the records.
    Applied,
    /// Failed every attempt; waits for a replay.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Applied => "applied",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "applied" => Some(DeliveryState::Applied),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// A delivery in the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub connection_id: i64,
    pub delivery_id: String,
    pub event: String,
    pub sent_at: Option<Timestamp>,
    pub received_at: Timestamp,
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub error: Option<String>,
    pub applied_at: Option<Timestamp>,
    /// The webhook run that applied it.
    pub run_id: Option<i64>,
}

/// What became of an attempt at a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Applied by run `run_id` (`note`: e.g. an event no entity maps,
    /// kept and not applied).
    Applied { run_id: i64, note: Option<String> },
    /// Failed; tried again from `at`.
    Retry { error: String, at: Timestamp },
    /// Failed for good: a dead letter, until replayed.
    Dead { error: String },
}

/// Which deliveries [`crate::Store::deliveries`] lists, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub connection_id: Option<i64>,
    pub state: Option<DeliveryState>,
    /// Only those with an inbox id above this.
    pub after_id: i64,
    /// At most this many (0: 100).
    pub limit: u32,
}

impl DeliveryQuery {
    pub(crate) fn limit(&self) -> i64 {
        match self.limit {
            0 => 100,
            n => i64::from(n),
        }
    }
}

/// A row of [`SECRET_COLUMNS`].
pub(crate) fn secret_row(row: &impl Columns) -> Result<WebhookSecret> {
    Ok(WebhookSecret {
        id: row.value("id")?,
        connection_id: row.value("connection_id")?,
        event: row.value("event")?,
        sealed: row.value("sealed")?,
        created_at: row.ts("created_at")?,
    })
}

/// A row of [`DELIVERY_COLUMNS`].
pub(crate) fn delivery_row(row: &impl Columns) -> Result<Delivery> {
    let state: String = row.value("state")?;
    Ok(Delivery {
        id: row.value("id")?,
        connection_id: row.value("connection_id")?,
        delivery_id: row.value("delivery_id")?,
        event: row.value("event")?,
        sent_at: row.opt_ts("sent_at")?,
        received_at: row.ts("received_at")?,
        payload: row.value("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("delivery state `{state}`")))?,
        attempts: row.value("attempts")?,
        next_attempt_at: row.opt_ts("next_attempt_at")?,
        error: row.value("error")?,
        applied_at: row.opt_ts("applied_at")?,
        run_id: row.value("run_id")?,
    })
}

impl Settled {
    /// The row's new state, error, next attempt and run.
    pub(crate) fn columns(&self) -> (DeliveryState, Option<&str>, Option<Timestamp>, Option<i64>) {
        match self {
            Settled::Applied { run_id, note } => {
                (DeliveryState::Applied, note.as_deref(), None, Some(*run_id))
            }
            Settled::Retry { error, at } => (DeliveryState::Pending, Some(error), Some(*at), None),
            Settled::Dead { error } => (DeliveryState::Dead, Some(error), None, None),
        }
    }
}
