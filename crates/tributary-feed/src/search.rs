//! The search indexer: a consumer of the change feed in the same store.
//!
//! [`Indexer`], built from [`IndexerOptions`], owns a loop that asks the
//! store to index what changed after the index's durable cursor
//! ([`tributary_store::Store::index_search`]: the changed records are
//! indexed again as they are now, deleted ones dropped, and the cursor
//! moves in the same transaction) — every `poll`, or at once when woken —
//! until it has caught up. It is reached through a cheap
//! [`IndexerHandle`] that tells the cursor, waits for it, wakes the loop
//! and stops it. A process that dies loses nothing: the next one starts
//! from the stored cursor, and several processes take turns (the store
//! serialises the steps).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tributary_store::Store;

/// How an [`Indexer`] behaves.
#[derive(Debug, Clone)]
pub struct IndexerOptions {
    /// How often the store is asked for new changes when nothing wakes
    /// the indexer.
    pub poll: Duration,
    /// Changes indexed per transaction.
    pub batch: u32,
    /// The most of the time the indexer works while it has a backlog (a
    /// sync's burst of changes): after each step it rests so that its
    /// steps take at most this share of the time, leaving the store's
    /// single writer (on SQLite) and the CPU to the sync. A step that
    /// catches up rests not at all: a trickle of changes is searchable at
    /// once.
    pub duty: f64,
}

impl Default for IndexerOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(200),
            batch: 1_000,
            duty: 0.1,
        }
    }
}

/// The indexer service; [`Indexer::start`] runs it.
pub struct Indexer {
    store: Arc<dyn Store>,
    options: IndexerOptions,
}

struct Shared {
    store: Arc<dyn Store>,
    options: IndexerOptions,
    cursor: watch::Sender<i64>,
    wake: Notify,
    stop: watch::Sender<bool>,
}

/// A cheap handle on a running [`Indexer`].
#[derive(Clone)]
pub struct IndexerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IndexerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexerHandle")
            .field("cursor", &self.cursor())
            .finish()
    }
}

impl Indexer {
    /// An indexer over `store`.
    pub fn new(store: Arc<dyn Store>, options: IndexerOptions) -> Self {
        Self { store, options }
    }

    /// Reads the index's cursor and starts the loop.
    pub async fn start(self) -> Result<IndexerHandle, tributary_store::Error> {
        let cursor = self.store.search_cursor().await?;
        let shared = Arc::new(Shared {
            store: self.store,
            options: self.options,
            cursor: watch::Sender::new(cursor),
            wake: Notify::new(),
            stop: watch::Sender::new(false),
        });
        tokio::spawn(run(shared.clone()));
        Ok(IndexerHandle { shared })
    }
}

async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        if let Err(error) = catch_up(&shared).await {
            tracing::warn!(%error, "the search indexer cannot update the index");
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.options.poll) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Indexes batches until one finds less than a batch.
async fn catch_up(shared: &Shared) -> Result<(), tributary_store::Error> {
    loop {
        let started = tokio::time::Instant::now();
        let step = shared.store.index_search(shared.options.batch).await?;
        let took = started.elapsed();
        shared.cursor.send_replace(step.cursor);
        if step.rebuilt {
            tracing::info!(
                cursor = step.cursor,
                "the search index was rebuilt (its cursor was past the feed's retention)"
            );
        }
        if step.changes < u64::from(shared.options.batch) && !step.rebuilt {
            return Ok(());
        }
        if *shared.stop.borrow() {
            return Ok(());
        }
        // A backlog: rest, so the steps take at most `duty` of the time.
        let duty = shared.options.duty.clamp(0.01, 1.0);
        let rest = took.mul_f64((1.0 - duty) / duty);
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(rest) => {}
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        }
    }
}

impl IndexerHandle {
    /// Every change up to this feed position is in the index.
    pub fn cursor(&self) -> i64 {
        *self.shared.cursor.borrow()
    }

    /// Tells the indexer something was committed: it looks at once.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops the loop (searches still read the index).
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Waits until the index's cursor reaches `position`, at most
    /// `timeout`; whether it did.
    pub async fn wait(&self, position: i64, timeout: Duration) -> bool {
        let mut cursor = self.shared.cursor.subscribe();
        tokio::time::timeout(timeout, cursor.wait_for(|c| *c >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
