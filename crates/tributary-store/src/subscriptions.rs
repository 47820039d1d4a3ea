//! Webhooks out, as stored: subscriptions (a URL that wants a connection's
//! changes and/or the ends of its runs, with its sealed signing secret and
//! its feed cursor), their outbox of messages with each message's attempt
//! state, and the run ends not yet told to them.

use tributary_core::{RunState, Timestamp};

use crate::rows::Columns;
use crate::{Error, Result};

/// The columns of a [`Subscription`].
pub(crate) const SUBSCRIPTION_COLUMNS: &str = "id, connection_id, entity, url, sealed_secret, \
     wants_changes, wants_finished, state, disabled_reason, cursor, created_at, updated_at";

/// The columns of a [`Message`].
pub(crate) const MESSAGE_COLUMNS: &str = "id, subscription_id, message_id, event, body, attempts, \
     next_attempt_at, state, last_status, last_error, created_at, delivered_at";

/// What a subscription may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscriptionEvent {
    /// Batches of the connection's changes (`changes`).
    Changes,
    /// A run of the connection ended (`sync.finished`).
    SyncFinished,
}

impl SubscriptionEvent {
    /// Every event, in the order they are listed.
    pub const ALL: [SubscriptionEvent; 2] =
        [SubscriptionEvent::Changes, SubscriptionEvent::SyncFinished];

    /// Its name, in messages and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionEvent::Changes => "changes",
            SubscriptionEvent::SyncFinished => "sync.finished",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// Whether a subscription is followed and delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// Followed; its messages are delivered.
    Active,
    /// Neither followed nor delivered (its receiver answered 410 Gone, or
    /// a person disabled it); its cursor and messages wait where they are.
    Disabled,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(SubscriptionState::Active),
            "disabled" => Some(SubscriptionState::Disabled),
            _ => None,
        }
    }
}

/// A subscription: where a connection's changes go.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: i64,
    pub connection_id: i64,
    /// Only this entity's changes (`None`: every entity's).
    pub entity: Option<String>,
    /// Where messages are POSTed.
    pub url: String,
    /// The signing secret (`whsec_...`), sealed.
    pub sealed_secret: Vec<u8>,
    /// Whether it wants batches of changes.
    pub wants_changes: bool,
    /// Whether it wants `sync.finished`.
    pub wants_finished: bool,
    pub state: SubscriptionState,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// The last feed sequence number enqueued for it.
    pub cursor: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Subscription {
    /// Whether it wants `event`.
    pub fn wants(&self, event: SubscriptionEvent) -> bool {
        match event {
            SubscriptionEvent::Changes => self.wants_changes,
            SubscriptionEvent::SyncFinished => self.wants_finished,
        }
    }

    /// The events it wants, in [`SubscriptionEvent::ALL`]'s order.
    pub fn events(&self) -> Vec<SubscriptionEvent> {
        SubscriptionEvent::ALL
            .into_iter()
            .filter(|e| self.wants(*e))
            .collect()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("connection_id", &self.connection_id)
            .field("entity", &self.entity)
            .field("url", &tributary_core::redact_url(&self.url))
            .field("events", &self.events())
            .field("state", &self.state)
            .field("disabled_reason", &self.disabled_reason)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// A subscription to create.
#[derive(Debug, Clone, Copy)]
pub struct NewSubscription<'a> {
    pub connection_id: i64,
    pub entity: Option<&'a str>,
    pub url: &'a str,
    pub sealed_secret: &'a [u8],
    pub wants_changes: bool,
    pub wants_finished: bool,
    /// Where it starts following the feed: changes after this sequence
    /// number are sent (usually the feed's head).
    pub cursor: i64,
    pub now: Timestamp,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageState {
    /// Waiting for its next attempt (or in one).
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Every attempt failed: a dead letter, until replayed.
    Dead,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Delivered => "delivered",
            MessageState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(MessageState::Pending),
            "delivered" => Some(MessageState::Delivered),
            "dead" => Some(MessageState::Dead),
            _ => None,
        }
    }
}

/// A message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Outbox row id (the order messages were enqueued in).
    pub id: i64,
    pub subscription_id: i64,
    /// The `webhook-id` (`msg_...`): the same on every attempt.
    pub message_id: String,
    /// `changes` or `sync.finished`.
    pub event: String,
    /// The JSON body, as sent.
    pub body: String,
    /// Attempts made (a claimed message counts the attempt it is in).
    pub attempts: i64,
    /// When it is due (or, while claimed, when the claim's lease ends).
    pub next_attempt_at: Timestamp,
    pub state: MessageState,
    /// The HTTP status of the last attempt, if one answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The `webhook-id` (`msg_...`), unique.
    pub message_id: String,
    pub event: String,
    pub body: String,
}

/// A run that ended, not yet told to a subscription that wants
/// `sync.finished` (written when the run ended, in the same transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    /// The row's id: pass it to [`Enqueue::finished`] once told.
    pub id: i64,
    pub subscription_id: i64,
    pub run_id: i64,
    /// How it ended.
    pub state: RunState,
    pub finished_at: Timestamp,
}

/// What [`crate::Store::enqueue_messages`] commits in ONE transaction.
#[derive(Debug, Clone, Copy)]
pub struct Enqueue<'a> {
    pub subscription_id: i64,
    /// The subscription's cursor the messages were read after: if it is no
    /// longer that (another process enqueued first), nothing is written.
    pub from_cursor: i64,
    /// Its cursor once these messages are enqueued.
    pub to_cursor: i64,
    /// In the order they are to be delivered.
    pub messages: &'a [NewMessage],
    /// The [`FinishedRun`]s these messages tell (ids): all must still be
    /// there, and are deleted.
    pub finished: &'a [i64],
    pub now: Timestamp,
}

/// What became of an attempt at a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// A 2xx: delivered.
    Delivered { status: u16 },
    /// Failed; tried again from `at`.
    Retry {
        status: Option<u16>,
        error: String,
        at: Timestamp,
    },
    /// Failed for the last time: a dead letter.
    Dead { status: Option<u16>, error: String },
    /// The receiver answered 410 Gone: the subscription is disabled (with
    /// `error` as its reason); the message waits, due, until it is enabled.
    Gone { error: String },
}

/// Which messages [`crate::Store::messages`] lists, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageQuery {
    pub subscription_id: Option<i64>,
    pub state: Option<MessageState>,
    /// Only those with an outbox id above this.
    pub after_id: i64,
    /// At most this many (0: 100).
    pub limit: u32,
}

impl MessageQuery {
    pub(crate) fn limit(&self) -> i64 {
        match self.limit {
            0 => 100,
            n => i64::from(n),
        }
    }
}

/// A subscription's outbox in figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub subscription_id: i64,
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    /// The error of the newest undelivered message that has one.
    pub last_error: Option<String>,
    /// The newest delivery.
    pub last_delivered_at: Option<Timestamp>,
}

/// A row of [`SUBSCRIPTION_COLUMNS`].
pub(crate) fn subscription_row(row: &impl Columns) -> Result<Subscription> {
    let state: String = row.value("state")?;
    Ok(Subscription {
        id: row.value("id")?,
        connection_id: row.value("connection_id")?,
        entity: row.value("entity")?,
        url: row.value("url")?,
        sealed_secret: row.value("sealed_secret")?,
        wants_changes: row.value("wants_changes")?,
        wants_finished: row.value("wants_finished")?,
        state: SubscriptionState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("subscription state `{state}`")))?,
        disabled_reason: row.value("disabled_reason")?,
        cursor: row.value("cursor")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// A row of [`MESSAGE_COLUMNS`].
pub(crate) fn message_row(row: &impl Columns) -> Result<Message> {
    let state: String = row.value("state")?;
    Ok(Message {
        id: row.value("id")?,
        subscription_id: row.value("subscription_id")?,
        message_id: row.value("message_id")?,
        event: row.value("event")?,
        body: row.value("body")?,
        attempts: row.value("attempts")?,
        next_attempt_at: row.ts("next_attempt_at")?,
        state: MessageState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("message state `{state}`")))?,
        last_status: row.value("last_status")?,
        last_error: row.value("last_error")?,
        created_at: row.ts("created_at")?,
        delivered_at: row.opt_ts("delivered_at")?,
    })
}

/// A row of `subscription_finishes`.
pub(crate) fn finished_row(row: &impl Columns) -> Result<FinishedRun> {
    let state: String = row.value("state")?;
    Ok(FinishedRun {
        id: row.value("id")?,
        subscription_id: row.value("subscription_id")?,
        run_id: row.value("run_id")?,
        state: RunState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("run state `{state}`")))?,
        finished_at: row.ts("finished_at")?,
    })
}

/// A row of the outbox figures: `subscription_id, pending, delivered,
/// dead, last_error, last_delivered_at`.
pub(crate) fn stats_row(row: &impl Columns) -> Result<OutboxStats> {
    Ok(OutboxStats {
        subscription_id: row.value("subscription_id")?,
        pending: row.value("pending")?,
        delivered: row.value("delivered")?,
        dead: row.value("dead")?,
        last_error: row.value("last_error")?,
        last_delivered_at: row.opt_ts("last_delivered_at")?,
    })
}

impl Attempted {
    /// The row's new state, status, error and next attempt.
    pub(crate) fn columns(
        &self,
        now: Timestamp,
    ) -> (MessageState, Option<i64>, Option<&str>, Timestamp) {
        match self {
            Attempted::Delivered { status } => {
                (MessageState::Delivered, Some(i64::from(*status)), None, now)
            }
            Attempted::Retry { status, error, at } => (
                MessageState::Pending,
                status.map(i64::from),
                Some(error),
                *at,
            ),
            Attempted::Dead { status, error } => {
                (MessageState::Dead, status.map(i64::from), Some(error), now)
            }
            Attempted::Gone { error } => (MessageState::Pending, Some(410), Some(error), now),
        }
    }
}

/// The statement that keeps a run's end for every subscription of its
/// connection that wants `sync.finished` (active or disabled: a disabled
/// one is told once enabled, after the changes it missed). Binds: the run
/// id. Run inside the transaction that ends the run.
pub(crate) const NOTE_FINISH: &str = "INSERT INTO subscription_finishes \
     (subscription_id, run_id, state, finished_at) \
     SELECT s.id, r.id, r.state, r.finished_at FROM runs r \
     JOIN subscriptions s ON s.connection_id = r.connection_id \
     WHERE r.id = $1 AND s.wants_finished AND r.finished_at IS NOT NULL \
     ORDER BY s.id";

/// The condition that a pending message `m` is the oldest pending one of
/// its subscription: messages go out one at a time per subscription, in
/// the order they were enqueued.
pub(crate) const HEAD_OF_LINE: &str = "NOT EXISTS (SELECT 1 FROM subscription_messages o \
     WHERE o.subscription_id = m.subscription_id AND o.state = 'pending' AND o.id < m.id)";
