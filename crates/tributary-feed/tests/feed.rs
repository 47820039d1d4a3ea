//! The change feed over a real (SQLite) store: a reader that resumes from
//! any cursor receives every change after it exactly once, in order, from
//! memory or from the store, a transaction's changes together; filters
//! move the cursor too; a waiter wakes
//! when a change is committed; a cursor below the retention's horizon is
//! told it expired. The search indexer follows the feed, woken or on its
//! own, and stops when told.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tributary_core::{Clock, Cursor, ManualClock, PreparedRecord, RunKind, SourceRecord};
use tributary_feed::{Feed, FeedError, FeedHandle, FeedOptions, Filter, Indexer, IndexerOptions};
use tributary_store::{NewConnection, PageWrite, Store};

struct Db {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let store = tributary_store::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    Db {
        store,
        clock,
        _dir: dir,
    }
}

fn record(entity: &str, id: usize, version: usize) -> PreparedRecord {
    PreparedRecord::new(SourceRecord {
        entity: entity.into(),
        external_id: id.to_string(),
        source_updated_at: None,
        raw: json!({"id": id, "v": version}).into(),
        canonical: json!({"v": version, "word": format!("w{version}")}),
        edges: vec![],
    })
}

/// Commits `n` records of `entity` (version `version`) to connection
/// `name`, one page.
async fn commit(db: &Db, name: &str, entity: &str, n: usize, version: usize) {
    let connection = db
        .store
        .ensure_connection(
            NewConnection {
                name,
                adapter: "test",
                base_url: "http://127.0.0.1:9",
            },
            db.clock.now(),
        )
        .await
        .unwrap();
    let run = db
        .store
        .start_run(connection.id, RunKind::Full, None, None, db.clock.now())
        .await
        .unwrap();
    let records: Vec<_> = (0..n).map(|i| record(entity, i, version)).collect();
    db.store
        .apply_page(PageWrite {
            connection_id: connection.id,
            run_id: run.run().id,
            entity,
            canonical_entity: entity,
            records: &records,
            quarantined: &[],
            cursor: &Cursor::start(),
            finished: false,
            total: None,
            mark: None,
            now: db.clock.now(),
        })
        .await
        .unwrap();
    db.store
        .finish_run(
            run.run().id,
            tributary_core::RunState::Succeeded,
            None,
            false,
            db.clock.now(),
        )
        .await
        .unwrap();
}

async fn feed(db: &Db, options: FeedOptions) -> FeedHandle {
    Feed::new(db.store.clone(), db.clock.clone(), options)
        .start()
        .await
        .unwrap()
}

/// Reads everything after `after` through `feed`, `limit` at a time.
async fn read_all(feed: &FeedHandle, filter: &Filter, mut after: i64, limit: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    loop {
        let read = feed.read(filter, after, limit).await.unwrap();
        assert!(read.next >= after, "the cursor never moves back");
        seqs.extend(read.changes.iter().map(|c| c.seq));
        if read.next >= read.head {
            return seqs;
        }
        after = read.next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_resuming_anywhere_gets_every_change_once_in_order() {
    let db = db().await;
    commit(&db, "a", "Person", 40, 1).await;
    // Memory holds only the newest 30: older reads go to the store.
    let feed = feed(
        &db,
        FeedOptions {
            recent: 30,
            batch: 7,
            ..FeedOptions::default()
        },
    )
    .await;
    for version in 2..5 {
        commit(&db, "a", "Person", 20, version).await;
        commit(&db, "b", "Email", 5, version).await;
    }
    assert!(feed.wait(0, Duration::from_secs(5)).await);
    let head = db.store.feed_head().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while feed.head() < head {
        assert!(tokio::time::Instant::now() < deadline, "the feed follows");
        feed.wake();
        tokio::task::yield_now().await;
    }
    let all: Vec<i64> = db
        .store
        .changes(None, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(all.len(), 40 + 3 * 25);
    for after in [0, 1, 17, 39, 40, 41, 70, 90, 114, head] {
        for limit in [1, 3, 50, 1_000] {
            let got = read_all(&feed, &Filter::default(), after, limit).await;
            let expected: Vec<i64> = all.iter().copied().filter(|s| *s > after).collect();
            assert_eq!(got, expected, "after {after}, {limit} at a time");
        }
    }
    // The changes of one transaction arrive together, whatever the limit:
    // the first commit was 40 records, each later one 20 or 5.
    let first = feed.read(&Filter::default(), 0, 1).await.unwrap();
    assert_eq!(first.changes.len(), 40);
    let second = feed.read(&Filter::default(), first.next, 1).await.unwrap();
    assert_eq!(second.changes.len(), 20);
    let from_inside = feed.read(&Filter::default(), 5, 2).await.unwrap();
    assert_eq!(from_inside.changes.len(), 35, "the rest of the transaction");
    // A filter keeps its own changes and moves past the others.
    let emails = Filter {
        entity: Some("Email".into()),
        ..Filter::default()
    };
    let got = read_all(&feed, &emails, 0, 4).await;
    assert_eq!(got.len(), 15);
    let b = db.store.connection("b").await.unwrap().unwrap();
    let of_b = Filter {
        connection_id: Some(b.id),
        ..Filter::default()
    };
    assert_eq!(read_all(&feed, &of_b, 0, 1_000).await, got);
    feed.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_on_a_commit_and_times_out_without_one() {
    let db = db().await;
    let feed = feed(&db, FeedOptions::default()).await;
    assert_eq!(feed.head(), 0);
    assert!(!feed.wait(0, Duration::from_millis(50)).await);
    let waiter = {
        let feed = feed.clone();
        tokio::spawn(async move { feed.wait(0, Duration::from_secs(10)).await })
    };
    commit(&db, "a", "Person", 3, 1).await;
    feed.wake();
    assert!(waiter.await.unwrap());
    let read = feed.read(&Filter::default(), 0, 10).await.unwrap();
    assert_eq!(read.changes.len(), 3);
    assert_eq!(read.next, 3);
    feed.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_below_the_retention_is_told_it_expired() {
    let db = db().await;
    commit(&db, "a", "Person", 10, 1).await;
    db.clock.advance(chrono::TimeDelta::days(40));
    commit(&db, "a", "Person", 10, 2).await;
    // Retention applied at start: the first ten are 40 days old.
    let feed = feed(
        &db,
        FeedOptions {
            retention: Some(Duration::from_secs(30 * 24 * 3_600)),
            ..FeedOptions::default()
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while feed.horizon() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "the retention runs");
        tokio::task::yield_now().await;
    }
    match feed.read(&Filter::default(), 3, 100).await {
        Err(error @ FeedError::Expired { .. }) => {
            assert!(error.to_string().contains("re-read the records"), "{error}");
        }
        other => panic!("expected an expired cursor, got {other:?}"),
    }
    let read = feed.read(&Filter::default(), 10, 100).await.unwrap();
    assert_eq!(
        read.changes.len(),
        10,
        "after the horizon nothing is missing"
    );
    assert_eq!(db.store.feed_horizon().await.unwrap(), 10);
    feed.shutdown();
}

/// The ids of the records the search for `word` finds.
async fn found(db: &Db, word: &str) -> Vec<String> {
    let mut ids: Vec<String> = db
        .store
        .search(&tributary_store::SearchQuery {
            words: vec![word.into()],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.external_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_follows_the_feed_when_woken_and_stops() {
    let db = db().await;
    commit(&db, "a", "Person", 3, 1).await;
    // It never polls here: only its first pass and wakes move it.
    let indexer = Indexer::new(
        db.store.clone(),
        IndexerOptions {
            poll: Duration::from_secs(3_600),
            batch: 2,
            duty: 1.0,
        },
    )
    .start()
    .await
    .unwrap();
    let head = db.store.feed_head().await.unwrap();
    assert!(indexer.wait(head, Duration::from_secs(10)).await);
    assert_eq!(found(&db, "w1").await, ["0", "1", "2"]);
    commit(&db, "a", "Person", 2, 2).await;
    indexer.wake();
    let head = db.store.feed_head().await.unwrap();
    assert!(indexer.wait(head, Duration::from_secs(10)).await);
    assert_eq!(indexer.cursor(), head);
    assert_eq!(found(&db, "w2").await, ["0", "1"]);
    assert_eq!(found(&db, "w1").await, ["2"]);
    // Stopped: a change is no longer indexed.
    indexer.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    commit(&db, "a", "Person", 1, 3).await;
    indexer.wake();
    let head = db.store.feed_head().await.unwrap();
    assert!(!indexer.wait(head, Duration::from_millis(300)).await);
    assert!(found(&db, "w3").await.is_empty());
}
