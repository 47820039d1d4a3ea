//! The feed's loop and its handle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tributary_core::Clock;
use tributary_store::{Change, Store};

/// How a [`Feed`] behaves.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// How often the store is asked for new changes when nothing wakes the
    /// feed and other processes' commits cannot (SQLite).
    pub poll: Duration,
    /// The same where every process's commits wake the feed (PostgreSQL's
    /// `LISTEN`/`NOTIFY`): a safety net for a missed notification.
    pub poll_notified: Duration,
    /// Changes read from the store at once.
    pub batch: u32,
    /// Changes kept in memory for the readers near the head.
    pub recent: usize,
    /// How long feed rows are kept (`None`: for ever).
    pub retention: Option<Duration>,
    /// How often the retention is applied.
    pub expire_every: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(10),
            poll_notified: Duration::from_millis(500),
            batch: 1_000,
            recent: 20_000,
            retention: Some(Duration::from_secs(30 * 24 * 3_600)),
            expire_every: Duration::from_secs(3_600),
        }
    }
}

/// A change as the feed hands it out: the change, and the text it is
/// shown as, rendered once however many readers show it (the recent
/// changes are shared by every reader near the head).
#[derive(Debug)]
pub struct Entry {
    change: Change,
    text: OnceLock<Arc<str>>,
}

impl Entry {
    fn new(change: Change) -> Self {
        Self {
            change,
            text: OnceLock::new(),
        }
    }

    /// The change's text: `render`'s, the first time it is asked for.
    pub fn text(&self, render: impl FnOnce(&Change) -> String) -> Arc<str> {
        self.text
            .get_or_init(|| render(&self.change).into())
            .clone()
    }
}

impl std::ops::Deref for Entry {
    type Target = Change;

    fn deref(&self) -> &Change {
        &self.change
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.change == other.change
    }
}

/// Which changes a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this connection's.
    pub connection_id: Option<i64>,
    /// Only this entity's.
    pub entity: Option<String>,
}

impl Filter {
    fn admits(&self, change: &Change) -> bool {
        self.connection_id
            .is_none_or(|id| id == change.connection_id)
            && self.entity.as_deref().is_none_or(|e| e == change.entity)
    }
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// The changes after the cursor that pass the filter, in order.
    pub changes: Vec<Arc<Entry>>,
    /// The cursor to read after next: the last sequence number looked at
    /// (changes the filter left out move it too).
    pub next: i64,
    /// The feed's head when the read was made.
    pub head: i64,
}

/// Why a read returned nothing.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The cursor is below what the retention kept.
    #[error(
        "cursor expired: changes after {after} up to {horizon} were deleted by the feed's retention; re-read the records, then follow the feed from its head"
    )]
    Expired { after: i64, horizon: i64 },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tributary_store::Error),
}

/// The feed service, built from its options; [`Feed::start`] runs it.
pub struct Feed {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: FeedOptions,
}

struct Shared {
    store: Arc<dyn Store>,
    options: FeedOptions,
    head: watch::Sender<i64>,
    horizon: AtomicI64,
    /// The newest changes, in order, at most `options.recent`.
    recent: RwLock<VecDeque<Arc<Entry>>>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
}

/// A cheap handle on a running [`Feed`].
#[derive(Clone)]
pub struct FeedHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FeedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedHandle")
            .field("head", &self.head())
            .field("horizon", &self.horizon())
            .finish()
    }
}

impl Feed {
    /// A feed over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: FeedOptions) -> Self {
        Self {
            store,
            clock,
            options,
        }
    }

    /// Reads the head and the horizon, and starts the loop.
    pub async fn start(self) -> Result<FeedHandle, FeedError> {
        let horizon = self.store.feed_horizon().await?;
        // The head: the newest change there is (the memory starts empty:
        // older reads go to the store).
        let head = self.store.feed_head().await?.max(horizon);
        let shared = Arc::new(Shared {
            store: self.store,
            options: self.options,
            head: watch::Sender::new(head),
            horizon: AtomicI64::new(horizon),
            recent: RwLock::new(VecDeque::new()),
            wake: Arc::new(Notify::new()),
            stop: watch::Sender::new(false),
        });
        // Commits wake the loop: every process's, or this one's (then
        // the others' are polled for).
        let everywhere = shared.store.watch_changes(shared.wake.clone()).await?;
        let poll = match everywhere {
            true => shared.options.poll_notified,
            false => shared.options.poll,
        };
        tokio::spawn(run(shared.clone(), self.clock, poll));
        Ok(FeedHandle { shared })
    }
}

/// The loop: follow the table, expire what is past the retention.
async fn run(shared: Arc<Shared>, clock: Arc<dyn Clock>, poll: Duration) {
    let mut stop = shared.stop.subscribe();
    let mut last_expiry: Option<tributary_core::Timestamp> = None;
    loop {
        if let Err(error) = follow(&shared).await {
            tracing::warn!(%error, "the change feed cannot read the store");
        }
        if let Some(retention) = shared.options.retention {
            let now = clock.now();
            let due = last_expiry.is_none_or(|at| {
                (now - at).to_std().unwrap_or_default() >= shared.options.expire_every
            });
            if due {
                last_expiry = Some(now);
                if let Err(error) = expire(&shared, now, retention).await {
                    tracing::warn!(%error, "the change feed's retention failed");
                }
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Reads what was committed after the head into memory and moves the head.
async fn follow(shared: &Shared) -> Result<(), FeedError> {
    loop {
        let head = *shared.head.borrow();
        let page = shared
            .store
            .changes(None, head, shared.options.batch)
            .await?;
        let Some(last) = page.last().map(|c| c.seq) else {
            return Ok(());
        };
        let full = page.len() as u32 >= shared.options.batch;
        {
            let mut recent = shared
                .recent
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            recent.extend(page.into_iter().map(|c| Arc::new(Entry::new(c))));
            let excess = recent.len().saturating_sub(shared.options.recent);
            recent.drain(..excess);
        }
        shared.head.send_replace(last);
        if !full {
            return Ok(());
        }
    }
}

async fn expire(
    shared: &Shared,
    now: tributary_core::Timestamp,
    retention: Duration,
) -> Result<(), FeedError> {
    let before = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let deleted = shared.store.expire_changes(before).await?;
    let horizon = shared.store.feed_horizon().await?;
    shared.horizon.fetch_max(horizon, Ordering::Relaxed);
    if deleted > 0 {
        tracing::info!(deleted, horizon, "feed rows past the retention deleted");
    }
    Ok(())
}

impl FeedHandle {
    /// The newest sequence number the feed has seen committed.
    pub fn head(&self) -> i64 {
        *self.shared.head.borrow()
    }

    /// The highest sequence number the retention deleted.
    pub fn horizon(&self) -> i64 {
        self.shared.horizon.load(Ordering::Relaxed)
    }

    /// Tells the feed something was committed: it looks at once.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops the loop (readers may still read from the store).
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Waits until the head passes `after`, at most `timeout`; whether it
    /// did.
    pub async fn wait(&self, after: i64, timeout: Duration) -> bool {
        let mut head = self.shared.head.subscribe();
        tokio::time::timeout(timeout, head.wait_for(|head| *head > after))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Up to `limit` changes after `after` that pass `filter`, in order,
    /// up to the head — more when the last one's transaction goes on: the
    /// changes of one transaction arrive together.
    pub async fn read(&self, filter: &Filter, after: i64, limit: usize) -> Result<Read, FeedError> {
        let horizon = self.horizon();
        if after < horizon {
            return Err(FeedError::Expired { after, horizon });
        }
        let head = self.head();
        let mut read = Read {
            changes: Vec::new(),
            next: after.max(0),
            head,
        };
        if after >= head || limit == 0 {
            return Ok(read);
        }
        if self.read_recent(filter, &mut read, limit) {
            return Ok(read);
        }
        // From the store, a batch at a time, up to the head.
        let batch = self.shared.options.batch;
        let mut last = None;
        while read.next < head {
            let page = self
                .shared
                .store
                .changes(filter.connection_id, read.next, batch)
                .await?;
            let short = (page.len() as u32) < batch;
            for change in page {
                if change.seq > head || full(&read, limit, last, &change) {
                    return Ok(read);
                }
                last = Some(transaction(&change));
                read.next = change.seq;
                if filter.admits(&change) {
                    read.changes.push(Arc::new(Entry::new(change)));
                }
            }
            if short {
                read.next = head;
            }
        }
        Ok(read)
    }

    /// Reads from memory when it holds everything after `read.next`.
    fn read_recent(&self, filter: &Filter, read: &mut Read, limit: usize) -> bool {
        let recent = self
            .shared
            .recent
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(first) = recent.front() else {
            return false;
        };
        // Memory must start at or before the first change wanted.
        if first.seq > read.next + 1 {
            return false;
        }
        let start = recent.partition_point(|c| c.seq <= read.next);
        let mut last = None;
        for change in recent.range(start..) {
            if change.seq > read.head || full(read, limit, last, change) {
                return true;
            }
            last = Some(transaction(change));
            read.next = change.seq;
            if filter.admits(change) {
                read.changes.push(change.clone());
            }
        }
        read.next = read.head.max(read.next);
        true
    }
}

/// What the changes of one transaction share: their connection, run and
/// commit time.
type Transaction = (i64, Option<i64>, tributary_core::Timestamp);

fn transaction(change: &Change) -> Transaction {
    (change.connection_id, change.run_id, change.changed_at)
}

/// Whether a read holding `read` is done before `change`: it has `limit`
/// changes, and `change` is not of the same transaction as the last one
/// looked at (a transaction's changes arrive together).
fn full(read: &Read, limit: usize, last: Option<Transaction>, change: &Change) -> bool {
    read.changes.len() >= limit && last != Some(transaction(change))
}
