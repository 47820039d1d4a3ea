//! Changes out: the change feed as a service.
//!
//! Every committed change already has a sequence number (`changes.seq`);
//! the table is the truth. [`Feed`] is the long-lived part that follows
//! it: built from [`FeedOptions`], it owns a loop that reads what was
//! committed after its head (every `poll`, or at once when woken), keeps
//! the newest changes in memory for the readers near the head, publishes
//! the head, and applies the feed's retention. It is reached through a
//! cheap [`FeedHandle`]:
//!
//! - [`FeedHandle::read`] returns the changes after a sequence number, in
//!   order, that pass a [`Filter`] — from memory when they are recent, from
//!   the store otherwise — with the cursor to read after next. A reader
//!   that keeps the cursor it was given and reads again receives every
//!   change exactly once, in order, whatever it missed while away.
//! - [`FeedHandle::wait`] waits (bounded) until the head passes a cursor.
//! - A cursor below the retention's horizon is [`FeedError::Expired`]:
//!   the changes it would need are gone, and the reader must re-read the
//!   records — never a silent gap.
//!
//! Readers pull at their own pace: nothing is buffered per reader, so a
//! slow one never slows a sync or another reader.

//!
//! [`Indexer`] is the feed's consumer inside the store: it keeps the
//! full-text search index current from the `changes` table, with a
//! durable cursor moved in the transaction that updates the index (see
//! [`search`]).

mod hub;
pub mod search;

pub use hub::{Entry, Feed, FeedError, FeedHandle, FeedOptions, Filter, Read};
pub use search::{Indexer, IndexerHandle, IndexerOptions};
