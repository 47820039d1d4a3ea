//! ONE test suite, run against every store implementation: SQLite in a
//! temporary file and PostgreSQL in a throwaway server started by the test
//! binary itself. A behaviour belongs to the `Store` contract only if it is
//! tested here.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tributary_core::{
    ChangeKind, Cursor, EdgeRef, PreparedRecord, QuarantinedRecord, RunKind, RunState, SourceRecord,
};
use tributary_store::{
    Attempted, Burial, Cascade, ConnectionStatus, Deletion, DeliveryQuery, DeliveryState, Enqueue,
    EntityState, Error, MessageQuery, MessageState, NewConnection, NewDelivery, NewMessage,
    NewSubscription, PageOutcome, PageWrite, RateBudget, Received, RecordQuery, RecordVersion,
    RecordsPageQuery, RunStart, Schedule, SearchQuery, Settled, Stamp, Store, Subject,
    Subscription, SubscriptionEvent, SubscriptionState, TokenRole, search_words,
};

struct TestDb {
    url: String,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = path.to_str().unwrap().to_owned();
    let store = tributary_store::open(&url).await.unwrap();
    TestDb {
        url,
        store,
        _dir: Some(dir),
    }
}

async fn postgres() -> TestDb {
    // A database whose default collation is a language's (as on most
    // production servers), so nothing here passes only because text
    // happens to sort byte by byte.
    let url = tributary_testkit::shared()
        .create_database_icu("store", "en-US")
        .unwrap();
    TestDb {
        store: tributary_store::open(&url).await.unwrap(),
        url,
        _dir: None,
    }
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::sqlite().await;
                    super::$name(db.store.clone()).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::postgres().await;
                    super::$name(db.store.clone()).await;
                }
            )*
        }
    };
}

/// Tests that also open the database a second way (by its URL).
macro_rules! url_suite {
    ($($name:ident),* $(,)?) => {
        mod by_url_on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::sqlite().await;
                    super::$name(db.store.clone(), &db.url).await;
                }
            )*
        }
        mod by_url_on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::postgres().await;
                    super::$name(db.store.clone(), &db.url).await;
                }
            )*
        }
    };
}

url_suite!(
    a_commit_wakes_the_feed_watchers,
    a_change_committed_late_is_never_passed_by,
    a_record_committed_late_is_paged_after_the_cursor,
    connection_lock_is_held_by_one_store_at_a_time,
    read_only_open_reads_and_writes_nothing,
    opening_again_finds_the_migrations_applied,
    concurrent_claimers_never_take_one_message,
);

store_suite!(
    a_transiently_failed_run_is_resumed_a_permanently_failed_one_is_not,
    connections_are_upserted_by_name,
    runs_start_resume_and_finish,
    idempotency_key_names_one_run,
    page_commits_records_edges_changes_and_checkpoint,
    unchanged_page_changes_nothing,
    changed_record_is_updated_and_its_edges_replaced,
    duplicate_ids_in_a_page_count_once,
    quarantine_keeps_bad_records_until_they_heal,
    page_for_a_finished_run_commits_nothing,
    pages_of_several_entities_commit_together,
    pages_of_one_entity_in_a_batch_write_as_one_by_one,
    concurrent_writers_create_a_record_once,
    stored_records_after_all_new_pages_are_planned_right,
    a_group_with_a_finished_run_commits_nothing,
    entity_state_without_a_page,
    external_ids_walk_in_order,
    records_list_filter_and_page,
    timestamps_round_trip,
    credentials_are_opaque_versioned_bytes,
    credentials_compare_and_swap,
    racing_swaps_from_one_version_have_one_winner,
    connection_status_round_trips,
    remove_connection_deletes_everything_of_it_and_nothing_else,
    marks_commit_with_their_page_and_never_move_back,
    changed_ids_are_the_records_a_run_wrote,
    deletion_cascades_feeds_and_comes_back,
    staged_deletions_end_with_their_run,
    schedule_slots_are_claimed_once,
    webhook_secrets_are_kept_sealed_listed_and_removed,
    deliveries_are_kept_once_per_sender_id,
    duplicates_arriving_at_once_are_kept_once,
    deliveries_are_due_settled_replayed_and_paused,
    a_queued_run_starts_by_its_key,
    an_update_names_the_fields_it_changed,
    stamps_tell_each_records_age_and_tombstone,
    a_connection_keeps_its_own_request_budget,
    a_deletion_heard_first_leaves_a_tombstone,
    the_feed_retention_keeps_a_horizon,
    subscriptions_are_kept_disabled_enabled_and_removed,
    an_enqueue_moves_the_cursor_once,
    a_run_end_is_kept_once_for_each_subscription_that_wants_it,
    messages_go_out_in_order_one_at_a_time_per_subscription,
    records_page_in_version_order_and_end_at_the_feed_head,
    paging_while_records_change_never_skips_or_repeats_a_version,
    records_page_filters_and_tombstones,
    a_record_shows_its_incoming_edges,
    search_finds_a_changed_record_and_forgets_a_deleted_one,
    search_index_is_rebuilt_past_the_feed_horizon,
    tokens_are_kept_hashed_looked_up_and_revoked,
    the_audit_trail_names_each_change_its_run_and_deliveries,
);

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456Z")
        .unwrap()
        .to_utc()
}

fn person(id: &str, name: &str, campus: Option<&str>) -> PreparedRecord {
    PreparedRecord::new(SourceRecord {
        entity: "Person".into(),
        external_id: id.into(),
        source_updated_at: Some(t0() - Duration::days(1)),
        raw: json!({"type": "Person", "id": id, "attributes": {"name": name}}).into(),
        canonical: json!({"name": name}),
        edges: campus
            .map(|c| EdgeRef {
                rel: "primary_campus".into(),
                to_entity: "Campus".into(),
                to_external_id: c.into(),
                hard: false,
            })
            .into_iter()
            .collect(),
    })
}

async fn setup(store: &Arc<dyn Store>) -> (i64, i64) {
    let conn = store
        .ensure_connection(
            NewConnection {
                name: "main",
                adapter: "pco",
                base_url: "http://127.0.0.1:1",
            },
            t0(),
        )
        .await
        .unwrap();
    let run = store
        .start_run(conn.id, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    (conn.id, run.run().id)
}

fn page<'a>(
    conn: i64,
    run: i64,
    records: &'a [PreparedRecord],
    quarantined: &'a [QuarantinedRecord],
    cursor: &'a Cursor,
    finished: bool,
) -> PageWrite<'a> {
    PageWrite {
        connection_id: conn,
        run_id: run,
        entity: "Person",
        canonical_entity: "Person",
        records,
        quarantined,
        cursor,
        finished,
        total: Some(3),
        mark: None,
        now: t0(),
    }
}

/// The connection's change feed as (external id, kind), in feed order.
async fn change_kinds(store: &Arc<dyn Store>, conn: i64) -> Vec<(String, ChangeKind)> {
    store
        .changes(Some(conn), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.external_id, c.kind))
        .collect()
}

async fn connections_are_upserted_by_name(store: Arc<dyn Store>) {
    let new = NewConnection {
        name: "main",
        adapter: "pco",
        base_url: "http://a",
    };
    let a = store.ensure_connection(new, t0()).await.unwrap();
    let b = store
        .ensure_connection(new, t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(a, b, "an unchanged connection is not touched");
    let c = store
        .ensure_connection(
            NewConnection {
                base_url: "http://b",
                ..new
            },
            t0() + Duration::hours(2),
        )
        .await
        .unwrap();
    assert_eq!(c.id, a.id);
    assert_eq!(c.base_url, "http://b");
    assert_eq!(c.updated_at, t0() + Duration::hours(2));
    store
        .ensure_connection(
            NewConnection {
                name: "another",
                ..new
            },
            t0(),
        )
        .await
        .unwrap();
    let names: Vec<String> = store
        .connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["another", "main"]);
    assert_eq!(store.connection("main").await.unwrap().unwrap().id, a.id);
    assert!(store.connection("nope").await.unwrap().is_none());
}

async fn runs_start_resume_and_finish(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let again = store
        .start_run(conn, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    assert!(
        matches!(again, RunStart::Resumed(ref r) if r.id == run),
        "{again:?}"
    );
    let delta = store
        .start_run(conn, RunKind::Delta, None, None, t0())
        .await
        .unwrap();
    assert!(matches!(delta, RunStart::New(ref r) if r.id != run && r.kind == RunKind::Delta));
    store
        .finish_run(
            run,
            RunState::Failed,
            Some("boom"),
            false,
            t0() + Duration::seconds(5),
        )
        .await
        .unwrap();
    let finished = store.run(run).await.unwrap().unwrap();
    assert_eq!(finished.state, RunState::Failed);
    assert_eq!(finished.error.as_deref(), Some("boom"));
    assert_eq!(finished.finished_at, Some(t0() + Duration::seconds(5)));
    let next = store
        .start_run(conn, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    assert!(matches!(next, RunStart::New(ref r) if r.id > run));
    let ids: Vec<i64> = store
        .runs(Some(conn), 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(store.runs(None, 1).await.unwrap().len(), 1);
    assert!(
        store
            .finish_run(9999, RunState::Succeeded, None, false, t0())
            .await
            .is_err()
    );
}

async fn idempotency_key_names_one_run(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let first = store
        .start_run(conn, RunKind::Webhook, None, Some("delivery-1"), t0())
        .await
        .unwrap();
    let RunStart::New(first) = first else {
        panic!("{first:?}")
    };
    let again = store
        .start_run(conn, RunKind::Webhook, None, Some("delivery-1"), t0())
        .await
        .unwrap();
    assert_eq!(again, RunStart::Resumed(first.clone()));
    store
        .finish_run(first.id, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    let done = store
        .start_run(conn, RunKind::Webhook, None, Some("delivery-1"), t0())
        .await
        .unwrap();
    assert!(
        matches!(done, RunStart::Finished(ref r) if r.id == first.id && r.state == RunState::Succeeded)
    );
    let other = store
        .start_run(conn, RunKind::Webhook, None, Some("delivery-2"), t0())
        .await
        .unwrap();
    assert!(matches!(other, RunStart::New(ref r) if r.id != first.id));
}

async fn page_commits_records_edges_changes_and_checkpoint(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let records = [person("1", "Ann", Some("10")), person("2", "Bob", None)];
    let cursor = Cursor(json!({"offset": 2}));
    let outcome = store
        .apply_page(page(conn, run, &records, &[], &cursor, false))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PageOutcome {
            created: 2,
            ..Default::default()
        }
    );
    let stored = store.record(conn, "Person", "1").await.unwrap().unwrap();
    assert_eq!(
        stored.raw,
        json!({"type": "Person", "id": "1", "attributes": {"name": "Ann"}})
    );
    assert_eq!(stored.canonical, json!({"name": "Ann"}));
    assert_eq!(*stored.content_hash, *records[0].content_hash);
    assert_eq!(stored.connection, "main");
    assert_eq!(stored.first_seen_at, t0());
    assert_eq!(stored.source_updated_at, Some(t0() - Duration::days(1)));
    assert!(stored.deleted_at.is_none());
    assert_eq!(
        store.edges_from(conn, "Person", "1").await.unwrap(),
        records[0].edges
    );
    let changes = store.changes(Some(conn), 0, 100).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| c.kind == ChangeKind::Created && c.run_id == Some(run))
    );
    assert!(changes[0].seq < changes[1].seq);
    assert_eq!(changes[0].record_id, stored.id);
    let checkpoints = store.checkpoints(run).await.unwrap();
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(checkpoints[0].cursor, cursor);
    assert_eq!(checkpoints[0].state, EntityState::Running);
    assert_eq!(
        (
            checkpoints[0].pages,
            checkpoints[0].records,
            checkpoints[0].total
        ),
        (1, 2, Some(3))
    );
    let r = store.run(run).await.unwrap().unwrap();
    assert_eq!((r.counts.pages, r.counts.created), (1, 2));

    let last = [person("3", "Cy", None)];
    let end = Cursor(json!({"offset": 3, "done": true}));
    store
        .apply_page(page(conn, run, &last, &[], &end, true))
        .await
        .unwrap();
    let checkpoints = store.checkpoints(run).await.unwrap();
    assert_eq!(checkpoints[0].state, EntityState::Done);
    assert_eq!(checkpoints[0].cursor, end);
    assert_eq!((checkpoints[0].pages, checkpoints[0].records), (2, 3));
    let counts = store.entity_counts(conn).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].live, counts[0].deleted), (3, 0));
}

async fn unchanged_page_changes_nothing(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let records = [person("1", "Ann", Some("10")), person("2", "Bob", None)];
    let cursor = Cursor(json!({"offset": 2}));
    store
        .apply_page(page(conn, run, &records, &[], &cursor, false))
        .await
        .unwrap();
    let before = store.record(conn, "Person", "1").await.unwrap().unwrap();
    let later = PageWrite {
        now: t0() + Duration::hours(1),
        ..page(conn, run, &records, &[], &cursor, false)
    };
    let outcome = store.apply_page(later).await.unwrap();
    assert_eq!(
        outcome,
        PageOutcome {
            unchanged: 2,
            ..Default::default()
        }
    );
    assert_eq!(store.changes(Some(conn), 0, 100).await.unwrap().len(), 2);
    assert_eq!(
        store.record(conn, "Person", "1").await.unwrap().unwrap(),
        before
    );
    let r = store.run(run).await.unwrap().unwrap();
    assert_eq!(
        (r.counts.pages, r.counts.created, r.counts.unchanged),
        (2, 2, 2)
    );
}

async fn changed_record_is_updated_and_its_edges_replaced(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let cursor = Cursor::start();
    store
        .apply_page(page(
            conn,
            run,
            &[person("1", "Ann", Some("10"))],
            &[],
            &cursor,
            false,
        ))
        .await
        .unwrap();
    let first = store.record(conn, "Person", "1").await.unwrap().unwrap();
    let changed = [person("1", "Anne", Some("11"))];
    let later = PageWrite {
        now: t0() + Duration::hours(1),
        ..page(conn, run, &changed, &[], &cursor, false)
    };
    let outcome = store.apply_page(later).await.unwrap();
    assert_eq!(outcome.updated, 1);
    let stored = store.record(conn, "Person", "1").await.unwrap().unwrap();
    assert_eq!(stored.id, first.id, "the internal id is stable");
    assert_eq!(stored.canonical, json!({"name": "Anne"}));
    assert_eq!(stored.first_seen_at, t0());
    assert_eq!(stored.last_modified_at, t0() + Duration::hours(1));
    let edges = store.edges_from(conn, "Person", "1").await.unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].to_external_id, "11");
    let kinds: Vec<ChangeKind> = store
        .changes(Some(conn), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, [ChangeKind::Created, ChangeKind::Updated]);
}

async fn duplicate_ids_in_a_page_count_once(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let records = [person("1", "Ann", None), person("1", "Annie", None)];
    let outcome = store
        .apply_page(page(conn, run, &records, &[], &Cursor::start(), false))
        .await
        .unwrap();
    assert_eq!(outcome.created, 1);
    assert_eq!(
        store
            .record(conn, "Person", "1")
            .await
            .unwrap()
            .unwrap()
            .canonical,
        json!({"name": "Annie"})
    );
    assert_eq!(store.changes(Some(conn), 0, 100).await.unwrap().len(), 1);
}

async fn quarantine_keeps_bad_records_until_they_heal(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let bad = [
        QuarantinedRecord {
            entity: "Person".into(),
            external_id: Some("2".into()),
            raw: json!({"id": "2", "attributes": {"birthdate": "not-a-date"}}),
            error: "field `birthdate`: `not-a-date` is not a date".into(),
        },
        QuarantinedRecord {
            entity: "Person".into(),
            external_id: None,
            raw: json!({"attributes": {}}),
            error: "the object has no id".into(),
        },
    ];
    let good = [person("1", "Ann", None)];
    let outcome = store
        .apply_page(page(conn, run, &good, &bad, &Cursor::start(), false))
        .await
        .unwrap();
    assert_eq!((outcome.created, outcome.quarantined), (1, 2));
    let q = store.quarantined(Some(conn), 10).await.unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].external_id, "2");
    assert_eq!(q[0].error, "field `birthdate`: `not-a-date` is not a date");
    assert_eq!(q[0].raw, bad[0].raw);
    assert!(q[1].external_id.starts_with('?'));
    // the same failure again is one row, not two
    store
        .apply_page(page(conn, run, &[], &bad[..1], &Cursor::start(), false))
        .await
        .unwrap();
    assert_eq!(store.quarantined(Some(conn), 10).await.unwrap().len(), 2);
    // fixed at the source: the record lands and leaves quarantine
    store
        .apply_page(page(
            conn,
            run,
            &[person("2", "Bo", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    let q = store.quarantined(Some(conn), 10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].external_id.starts_with('?'));
    assert_eq!(store.run(run).await.unwrap().unwrap().counts.quarantined, 3);
}

async fn page_for_a_finished_run_commits_nothing(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    store
        .finish_run(run, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    let err = store
        .apply_page(page(
            conn,
            run,
            &[person("1", "Ann", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await;
    assert!(err.is_err());
    assert!(store.record(conn, "Person", "1").await.unwrap().is_none());
    assert!(store.changes(Some(conn), 0, 10).await.unwrap().is_empty());
    assert!(store.checkpoints(run).await.unwrap().is_empty());
}

async fn stored_records_after_all_new_pages_are_planned_right(store: Arc<dyn Store>) {
    // Pages of only new records (a first sync) may let a store skip its
    // lookups; a later page that brings stored records back — changed,
    // unchanged, alone or in a group — must still be planned right.
    let (conn, run) = setup(&store).await;
    let cursor = Cursor::start();
    let first = [person("1", "Ann", Some("10")), person("2", "Bob", None)];
    let second = [person("3", "Cy", None), person("4", "Di", None)];
    store
        .apply_pages(&[
            page(conn, run, &first, &[], &cursor, false),
            page(conn, run, &second, &[], &cursor, false),
        ])
        .await
        .unwrap();
    let again = [
        person("5", "Ed", None),
        person("1", "Ann B", Some("11")),
        person("2", "Bob", None),
    ];
    let outcome = store
        .apply_page(page(conn, run, &again, &[], &cursor, false))
        .await
        .unwrap();
    assert_eq!(
        (outcome.created, outcome.updated, outcome.unchanged),
        (1, 1, 1)
    );
    let third = [person("6", "Flo", None)];
    let fourth = [person("3", "Cy", None), person("6", "Flo", None)];
    let outcomes = store
        .apply_pages(&[
            page(conn, run, &third, &[], &cursor, false),
            page(conn, run, &fourth, &[], &cursor, false),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0].created, 1);
    assert_eq!((outcomes[1].created, outcomes[1].unchanged), (0, 2));
    let kinds = change_kinds(&store, conn).await;
    let created = |id: &str| (id.to_owned(), ChangeKind::Created);
    assert_eq!(
        kinds,
        [
            created("1"),
            created("2"),
            created("3"),
            created("4"),
            created("5"),
            ("1".to_owned(), ChangeKind::Updated),
            created("6"),
        ]
    );
    let edges = store.edges_from(conn, "Person", "1").await.unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].to_external_id, "11");
    let run = store.run(run).await.unwrap().unwrap();
    assert_eq!(
        (run.counts.created, run.counts.updated, run.counts.unchanged),
        (6, 1, 3)
    );
}

async fn concurrent_writers_create_a_record_once(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    // Every record names its campus twice: one edge.
    let records: Arc<Vec<PreparedRecord>> = Arc::new(
        (0..40)
            .map(|i| {
                let mut r = person(&i.to_string(), "x", Some("10"));
                r.edges.push(r.edges[0].clone());
                r
            })
            .collect(),
    );
    let writers = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(writers));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, records, barrier) = (store.clone(), records.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let cursor = Cursor::start();
            barrier.wait().await;
            store
                .apply_page(page(conn, run, &records, &[], &cursor, false))
                .await
        }));
    }
    let mut total = PageOutcome::default();
    for task in tasks {
        let outcome = task.await.unwrap().expect("every writer commits");
        total.created += outcome.created;
        total.updated += outcome.updated;
        total.unchanged += outcome.unchanged;
    }
    // Each record is created by exactly one writer; the others find it.
    assert_eq!(
        (total.created, total.updated, total.unchanged),
        (40, 0, 200)
    );
    let changes = store.changes(Some(conn), 0, 1000).await.unwrap();
    assert_eq!(changes.len(), 40);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Created));
    for i in 0..40 {
        let edges = store
            .edges_from(conn, "Person", &i.to_string())
            .await
            .unwrap();
        assert_eq!(edges.len(), 1, "record {i}: {edges:?}");
    }
}

async fn pages_of_several_entities_commit_together(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let people1 = [person("1", "Ann", Some("10")), person("2", "Bob", None)];
    let people2 = [person("2", "Bob", None), person("3", "Cy", None)];
    let mut campus = person("10", "Main", None);
    campus.entity = "Campus".into();
    let campuses = [campus];
    let (c1, c2, c3) = (
        Cursor(json!({"offset": 2})),
        Cursor(json!({"offset": 4})),
        Cursor(json!({"offset": 1, "done": true})),
    );
    let mut campus_page = page(conn, run, &campuses, &[], &c3, true);
    campus_page.entity = "Campus";
    campus_page.canonical_entity = "Campus";
    campus_page.total = Some(1);
    let outcomes = store
        .apply_pages(&[
            page(conn, run, &people1, &[], &c1, false),
            campus_page,
            // A later page of the same entity, repeating a record of the
            // first: applied after it, its checkpoint wins.
            page(conn, run, &people2, &[], &c2, false),
        ])
        .await
        .unwrap();
    let created = |n| PageOutcome {
        created: n,
        ..Default::default()
    };
    assert_eq!(
        outcomes,
        vec![
            created(2),
            created(1),
            PageOutcome {
                created: 1,
                unchanged: 1,
                ..Default::default()
            }
        ]
    );
    let checkpoints = store.checkpoints(run).await.unwrap();
    let by_entity = |e: &str| checkpoints.iter().find(|c| c.entity == e).unwrap().clone();
    let person_cp = by_entity("Person");
    assert_eq!(person_cp.cursor, c2);
    assert_eq!((person_cp.pages, person_cp.records), (2, 4));
    assert_eq!(person_cp.state, EntityState::Running);
    let campus_cp = by_entity("Campus");
    assert_eq!(campus_cp.state, EntityState::Done);
    assert_eq!((campus_cp.pages, campus_cp.records), (1, 1));
    let r = store.run(run).await.unwrap().unwrap();
    assert_eq!(
        (r.counts.pages, r.counts.created, r.counts.unchanged),
        (3, 4, 1)
    );
    let changes = store.changes(Some(conn), 0, 100).await.unwrap();
    assert_eq!(changes.len(), 4);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(store.record(conn, "Campus", "10").await.unwrap().is_some());
}

/// Several pages of one entity in one batch (a store may write them with
/// one set of statements) end as they would page by page: each page's
/// outcome, replaced edges, quarantine entering and healing, and the
/// checkpoint of the last page counting them all.
async fn pages_of_one_entity_in_a_batch_write_as_one_by_one(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let bad = |id: &str| QuarantinedRecord {
        entity: "Person".into(),
        external_id: Some(id.into()),
        raw: json!({"id": id, "attributes": {"birthdate": "never"}}),
        error: format!("record {id} is bad"),
    };
    let (c1, c2, c3) = (
        Cursor(json!({"offset": 2})),
        Cursor(json!({"offset": 4})),
        Cursor(json!({"offset": 6, "done": true})),
    );
    let first = [person("1", "Ann", Some("10")), person("2", "Bob", None)];
    let second = [person("3", "Cy", Some("10"))];
    let bad4 = [bad("4")];
    let outcomes = store
        .apply_pages(&[
            page(conn, run, &first, &[], &c1, false),
            page(conn, run, &second, &bad4, &c2, false),
        ])
        .await
        .unwrap();
    let created = |n, quarantined| PageOutcome {
        created: n,
        quarantined,
        ..Default::default()
    };
    assert_eq!(outcomes, vec![created(2, 0), created(1, 1)]);

    // Ann changes name and campus, 4 heals, Bob turns bad (his stored record stays),
    // Cy is unchanged; the last page reports no total.
    let moved = [person("1", "Anne", Some("11")), person("4", "Di", None)];
    let same = [person("3", "Cy", Some("10"))];
    let bad2 = [bad("2")];
    let mut last = page(conn, run, &same, &bad2, &c3, true);
    last.total = None;
    let outcomes = store
        .apply_pages(&[page(conn, run, &moved, &[], &c2, false), last])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            PageOutcome {
                created: 1,
                updated: 1,
                ..Default::default()
            },
            PageOutcome {
                unchanged: 1,
                quarantined: 1,
                ..Default::default()
            }
        ]
    );
    let targets = |id: &'static str| {
        let store = store.clone();
        async move {
            let edges = store.edges_from(conn, "Person", id).await.unwrap();
            edges
                .into_iter()
                .map(|e| e.to_external_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(targets("1").await, ["11"], "the old edge is replaced");
    assert_eq!(targets("3").await, ["10"]);
    let q = store.quarantined(Some(conn), 10).await.unwrap();
    let quarantined: Vec<&str> = q.iter().map(|q| q.external_id.as_str()).collect();
    assert_eq!(quarantined, ["2"], "4 healed, 2 went bad");
    assert!(store.record(conn, "Person", "2").await.unwrap().is_some());

    let cp = store.checkpoints(run).await.unwrap();
    assert_eq!(cp.len(), 1);
    assert_eq!(cp[0].cursor, c3);
    assert_eq!(cp[0].state, EntityState::Done);
    assert_eq!((cp[0].pages, cp[0].records), (4, 8));
    assert_eq!(cp[0].total, Some(3), "the last total reported stands");
    // Each record's changes in order (the order across records within one
    // transaction is the store's).
    let mut kinds = change_kinds(&store, conn).await;
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("1", ChangeKind::Created),
        ("1", ChangeKind::Updated),
        ("2", ChangeKind::Created),
        ("3", ChangeKind::Created),
        ("4", ChangeKind::Created),
    ];
    assert_eq!(kinds, expected.map(|(id, k)| (id.to_owned(), k)));
    let r = store.run(run).await.unwrap().unwrap();
    assert_eq!(
        (
            r.counts.pages,
            r.counts.created,
            r.counts.updated,
            r.counts.unchanged,
            r.counts.quarantined
        ),
        (4, 4, 1, 1, 2)
    );
}

async fn a_group_with_a_finished_run_commits_nothing(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    // A second connection whose run has finished.
    let other = store
        .ensure_connection(
            NewConnection {
                name: "other",
                adapter: "pco",
                base_url: "http://127.0.0.1:2",
            },
            t0(),
        )
        .await
        .unwrap();
    let done = store
        .start_run(other.id, RunKind::Full, None, None, t0())
        .await
        .unwrap()
        .run()
        .id;
    store
        .finish_run(done, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    let (ours, theirs) = ([person("1", "Ann", None)], [person("2", "Bob", None)]);
    let cursor = Cursor(json!({"offset": 1}));
    let result = store
        .apply_pages(&[
            page(conn, run, &ours, &[], &cursor, false),
            page(other.id, done, &theirs, &[], &cursor, false),
        ])
        .await;
    assert!(result.is_err());
    // All or nothing: the page of the running run did not commit either.
    assert!(store.record(conn, "Person", "1").await.unwrap().is_none());
    assert!(store.changes(None, 0, 10).await.unwrap().is_empty());
    assert!(store.checkpoints(run).await.unwrap().is_empty());
    let r = store.run(run).await.unwrap().unwrap();
    assert_eq!(r.counts.pages, 0);
}

async fn entity_state_without_a_page(store: Arc<dyn Store>) {
    let (_, run) = setup(&store).await;
    store
        .set_entity_state(
            run,
            "Email",
            EntityState::Failed,
            Some("403 forbidden"),
            t0(),
        )
        .await
        .unwrap();
    store
        .set_entity_state(run, "Campus", EntityState::Done, None, t0())
        .await
        .unwrap();
    let cps = store.checkpoints(run).await.unwrap();
    assert_eq!(cps.len(), 2);
    assert_eq!(
        (cps[0].entity.as_str(), cps[0].state),
        ("Campus", EntityState::Done)
    );
    assert_eq!(cps[1].error.as_deref(), Some("403 forbidden"));
    assert!(cps[1].cursor.is_start());
}

async fn external_ids_walk_in_order(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let records: Vec<PreparedRecord> = ["3", "10", "2", "1", "b", "_c", "A", "é"]
        .iter()
        .map(|id| person(id, "x", None))
        .collect();
    store
        .apply_page(page(conn, run, &records, &[], &Cursor::start(), false))
        .await
        .unwrap();
    // Byte order on every backend, whatever the database's collation.
    let first = store.external_ids(conn, "Person", None, 2).await.unwrap();
    assert_eq!(first, ["1", "10"]);
    let rest = store
        .external_ids(conn, "Person", Some("10"), 10)
        .await
        .unwrap();
    assert_eq!(rest, ["2", "3", "A", "_c", "b", "é"]);
    assert!(
        store
            .external_ids(conn, "Email", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn records_list_filter_and_page(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let records: Vec<PreparedRecord> = (1..=5).map(|i| person(&i.to_string(), "x", None)).collect();
    store
        .apply_page(page(conn, run, &records, &[], &Cursor::start(), false))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let batch = store
            .records(&RecordQuery {
                connection_id: Some(conn),
                entity: Some("Person".into()),
                after_id: after,
                limit: 2,
                include_deleted: false,
            })
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        after = batch.last().unwrap().id;
        seen.extend(batch.into_iter().map(|r| r.external_id));
    }
    seen.sort();
    assert_eq!(seen, ["1", "2", "3", "4", "5"]);
    let none = store
        .records(&RecordQuery {
            entity: Some("Email".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn timestamps_round_trip(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let r = store.run(run).await.unwrap().unwrap();
    assert_eq!(r.started_at, t0(), "microseconds survive");
    assert_eq!(store.connection("main").await.unwrap().unwrap().id, conn);
}

async fn credentials_are_opaque_versioned_bytes(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    assert!(store.credentials(conn).await.unwrap().is_none());
    let fresh = store.connection("main").await.unwrap().unwrap();
    assert_eq!(fresh.status, ConnectionStatus::Active);
    assert_eq!(fresh.status_reason, None);
    assert_eq!(fresh.credentials_kind, None);

    // Every byte value survives (a sealed blob is arbitrary binary).
    let blob: Vec<u8> = (0..=255).collect();
    let later = t0() + Duration::minutes(5);
    let v1 = store
        .set_credentials(conn, "bearer", &blob, None, later)
        .await
        .unwrap();
    assert_eq!(v1, 1, "a connection without credentials is at version 0");
    let stored = store.credentials(conn).await.unwrap().unwrap();
    assert_eq!(
        (stored.kind.as_str(), &stored.sealed, stored.version),
        ("bearer", &blob, 1)
    );
    assert!(
        !format!("{stored:?}").contains("255"),
        "Debug shows no blob bytes"
    );
    let shown = store.connection("main").await.unwrap().unwrap();
    assert_eq!(shown.credentials_kind.as_deref(), Some("bearer"));
    assert_eq!(shown.updated_at, later);
    assert_eq!(
        store.connections().await.unwrap()[0]
            .credentials_kind
            .as_deref(),
        Some("bearer")
    );

    // An unconditional write replaces whatever is there.
    let v2 = store
        .set_credentials(conn, "oauth2", b"second", None, later)
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let stored = store.credentials(conn).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.kind.as_str(),
            stored.sealed.as_slice(),
            stored.version
        ),
        ("oauth2", &b"second"[..], 2)
    );

    // Unknown connections are not found, with or without a version.
    for expected in [None, Some(0)] {
        let error = store
            .set_credentials(conn + 1000, "bearer", b"x", expected, later)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::NotFound(_)), "{error}");
    }
    assert!(store.credentials(conn + 1000).await.unwrap().is_none());
}

async fn credentials_compare_and_swap(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    // The first write can be conditional too: on version 0.
    assert_eq!(
        store
            .set_credentials(conn, "oauth2", b"first", Some(0), t0())
            .await
            .unwrap(),
        1
    );
    // A writer that read version 1 replaces it...
    assert_eq!(
        store
            .set_credentials(conn, "oauth2", b"rotated", Some(1), t0())
            .await
            .unwrap(),
        2
    );
    // ...and a second writer that also read version 1 loses and changes nothing.
    let error = store
        .set_credentials(conn, "oauth2", b"stale", Some(1), t0())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Conflict(_)), "{error}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("version 2, not 1"), "{error}");
    let stored = store.credentials(conn).await.unwrap().unwrap();
    assert_eq!(
        (stored.sealed.as_slice(), stored.version),
        (&b"rotated"[..], 2)
    );
}

async fn racing_swaps_from_one_version_have_one_winner(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    store
        .set_credentials(conn, "oauth2", b"v1", None, t0())
        .await
        .unwrap();
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .set_credentials(conn, "oauth2", &[i], Some(1), t0())
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        match writer.await.unwrap() {
            Ok(version) => won.push((i, version)),
            Err(Error::Conflict(_)) => {}
            Err(other) => panic!("writer {i}: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one swap wins: {won:?}");
    let (winner, version) = won[0];
    let stored = store.credentials(conn).await.unwrap().unwrap();
    assert_eq!(
        (stored.sealed, stored.version),
        (vec![winner as u8], version)
    );
    assert_eq!(version, 2);
}

async fn connection_status_round_trips(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let later = t0() + Duration::hours(1);
    store
        .set_connection_status(
            conn,
            ConnectionStatus::NeedsReauth,
            Some("refresh token revoked (400 invalid_grant)"),
            later,
        )
        .await
        .unwrap();
    let c = store.connection("main").await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::NeedsReauth);
    assert_eq!(
        c.status_reason.as_deref(),
        Some("refresh token revoked (400 invalid_grant)")
    );
    assert_eq!(c.updated_at, later);
    for status in [ConnectionStatus::Active, ConnectionStatus::NeedsReauth] {
        assert_eq!(ConnectionStatus::parse(status.as_str()), Some(status));
    }

    // New credentials make it active again and clear the reason.
    store
        .set_credentials(conn, "bearer", b"new", None, later)
        .await
        .unwrap();
    let c = store.connection("main").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.status_reason),
        (ConnectionStatus::Active, None)
    );

    let error = store
        .set_connection_status(conn + 1000, ConnectionStatus::Active, None, later)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotFound(_)), "{error}");
}

async fn remove_connection_deletes_everything_of_it_and_nothing_else(store: Arc<dyn Store>) {
    // Two connections with the same ids in every table.
    let mut ids = Vec::new();
    for name in ["doomed", "kept"] {
        let conn = store
            .ensure_connection(
                NewConnection {
                    name,
                    adapter: "pco",
                    base_url: "http://127.0.0.1:1",
                },
                t0(),
            )
            .await
            .unwrap()
            .id;
        store
            .set_credentials(conn, "bearer", b"sealed", None, t0())
            .await
            .unwrap();
        let run = store
            .start_run(conn, RunKind::Full, None, None, t0())
            .await
            .unwrap()
            .run()
            .id;
        let bad = [QuarantinedRecord {
            entity: "Person".into(),
            external_id: Some("9".into()),
            raw: json!({"id": "9"}),
            error: "bad".into(),
        }];
        store
            .apply_page(page(
                conn,
                run,
                &[person("1", "Ann", Some("10")), person("2", "Bob", None)],
                &bad,
                &Cursor(json!({"offset": 2})),
                false,
            ))
            .await
            .unwrap();
        store
            .set_entity_state(run, "Email", EntityState::Failed, Some("x"), t0())
            .await
            .unwrap();
        // Webhook secrets, deliveries and a pause of its own.
        store
            .add_webhook_secret(conn, None, b"sealed", t0())
            .await
            .unwrap();
        store
            .receive_deliveries(&[delivery(conn, "d", "{}")])
            .await
            .unwrap();
        store.set_webhooks_paused(conn, true, t0()).await.unwrap();
        ids.push((conn, run));
    }
    let [(doomed, doomed_run), (kept, kept_run)] = ids[..] else {
        unreachable!()
    };

    assert!(store.remove_connection("doomed").await.unwrap());
    assert!(store.connection("doomed").await.unwrap().is_none());
    assert!(store.credentials(doomed).await.unwrap().is_none());
    assert!(store.run(doomed_run).await.unwrap().is_none());
    assert!(store.checkpoints(doomed_run).await.unwrap().is_empty());
    assert!(store.runs(Some(doomed), 10).await.unwrap().is_empty());
    assert!(store.record(doomed, "Person", "1").await.unwrap().is_none());
    assert!(
        store
            .edges_from(doomed, "Person", "1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.changes(Some(doomed), 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .quarantined(Some(doomed), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.entity_counts(doomed).await.unwrap().is_empty());
    assert!(store.webhook_secrets(doomed).await.unwrap().is_empty());
    assert_eq!(store.webhook_pauses().await.unwrap(), vec![kept]);
    let inbox = store.deliveries(&DeliveryQuery::default()).await.unwrap();
    assert_eq!(
        inbox.iter().map(|d| d.connection_id).collect::<Vec<_>>(),
        vec![kept]
    );
    assert_eq!(store.webhook_secrets(kept).await.unwrap().len(), 1);

    // The other connection is untouched.
    let names: Vec<String> = store
        .connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(store.credentials(kept).await.unwrap().unwrap().version, 1);
    assert_eq!(store.runs(Some(kept), 10).await.unwrap().len(), 1);
    assert_eq!(store.checkpoints(kept_run).await.unwrap().len(), 2);
    assert_eq!(
        store.edges_from(kept, "Person", "1").await.unwrap().len(),
        1
    );
    assert_eq!(store.changes(None, 0, 10).await.unwrap().len(), 2);
    assert_eq!(store.quarantined(None, 10).await.unwrap().len(), 1);
    assert_eq!(
        store
            .records(&RecordQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        2
    );

    // Gone is gone; the name can be used again.
    assert!(!store.remove_connection("doomed").await.unwrap());
    store
        .ensure_connection(
            NewConnection {
                name: "doomed",
                adapter: "pco",
                base_url: "http://127.0.0.1:1",
            },
            t0(),
        )
        .await
        .unwrap();
    let reborn = store.connection("doomed").await.unwrap().unwrap();
    assert_eq!(reborn.credentials_kind, None);
    assert!(store.credentials(reborn.id).await.unwrap().is_none());
}

async fn a_transiently_failed_run_is_resumed_a_permanently_failed_one_is_not(
    store: Arc<dyn Store>,
) {
    let (conn, run) = setup(&store).await;
    let cursor = Cursor(json!({"offset": 100}));
    store
        .apply_page(PageWrite {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            canonical_entity: "Person",
            records: &[person("1", "Ada", None)],
            quarantined: &[],
            cursor: &cursor,
            finished: false,
            total: None,
            mark: None,
            now: t0(),
        })
        .await
        .unwrap();
    store
        .set_entity_state(run, "Person", EntityState::Failed, Some("502"), t0())
        .await
        .unwrap();
    store
        .set_entity_state(run, "Campus", EntityState::Done, None, t0())
        .await
        .unwrap();
    store
        .finish_run(run, RunState::Failed, Some("Person: 502"), true, t0())
        .await
        .unwrap();
    let failed = store.run(run).await.unwrap().unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert!(failed.resumable);
    assert_eq!(failed.error.as_deref(), Some("Person: 502"));

    // The next request of the kind reopens it, checkpoints kept.
    let again = store
        .start_run(conn, RunKind::Full, None, None, t0() + Duration::seconds(1))
        .await
        .unwrap();
    let RunStart::Resumed(resumed) = again else {
        panic!("{again:?}")
    };
    assert_eq!(resumed.id, run);
    assert_eq!(resumed.state, RunState::Running);
    assert_eq!(resumed.error, None);
    assert!(!resumed.resumable);
    assert_eq!(resumed.finished_at, None);
    assert_eq!(resumed.counts.created, 1, "counters are kept");
    let checkpoints = store.checkpoints(run).await.unwrap();
    let person = checkpoints.iter().find(|c| c.entity == "Person").unwrap();
    assert_eq!(person.state, EntityState::Running);
    assert_eq!(person.cursor, cursor);
    assert_eq!(person.error, None);
    let campus = checkpoints.iter().find(|c| c.entity == "Campus").unwrap();
    assert_eq!(
        campus.state,
        EntityState::Done,
        "finished entities stay done"
    );

    // Another kind, or another scope, is not resumed by it.
    let delta = store
        .start_run(conn, RunKind::Delta, None, None, t0())
        .await
        .unwrap();
    assert!(matches!(delta, RunStart::New(_)), "{delta:?}");
    let other_scope = store
        .start_run(conn, RunKind::Full, Some("Campus"), None, t0())
        .await
        .unwrap();
    assert!(
        matches!(other_scope, RunStart::New(ref r) if r.scope.as_deref() == Some("Campus")),
        "{other_scope:?}"
    );
    let same_scope = store
        .start_run(conn, RunKind::Full, Some("Campus"), None, t0())
        .await
        .unwrap();
    assert!(
        matches!(same_scope, RunStart::Resumed(ref r) if r.id == other_scope.run().id),
        "{same_scope:?}"
    );

    // A permanent failure stays failed: the next request starts afresh.
    store
        .finish_run(run, RunState::Failed, Some("Person: 403"), false, t0())
        .await
        .unwrap();
    let next = store
        .start_run(conn, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    assert!(
        matches!(next, RunStart::New(ref r) if r.id > run),
        "{next:?}"
    );
    assert_eq!(
        store.run(run).await.unwrap().unwrap().state,
        RunState::Failed
    );

    // Only the latest run of a kind is resumed: an older resumable failure
    // behind a newer run stays as it is.
    let RunStart::New(newer) = next else {
        unreachable!()
    };
    store
        .finish_run(run, RunState::Failed, Some("x"), true, t0())
        .await
        .unwrap();
    store
        .finish_run(newer.id, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    let after = store
        .start_run(conn, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    assert!(
        matches!(after, RunStart::New(ref r) if r.id > newer.id),
        "{after:?}"
    );
    // A resumable flag means nothing on a run that did not fail.
    assert!(!store.run(newer.id).await.unwrap().unwrap().resumable);
}

async fn connection_lock_is_held_by_one_store_at_a_time(store: Arc<dyn Store>, url: &str) {
    let held = store
        .lock_connection("main", "pid 1 on host-a since 10:00")
        .await
        .unwrap();
    assert_eq!(held.connection(), "main");
    // Another handle on the database (as another process would open it).
    let other = tributary_store::open(url).await.unwrap();
    let error = other
        .lock_connection("main", "pid 2 on host-b since 10:01")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Busy(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert!(error.is_transient(), "the lock is free again later");
    assert_eq!(
        error.to_string(),
        "connection `main` is busy: another process (pid 1 on host-a since 10:00) is running \
         its sync; try again when it has finished"
    );
    // The same handle is refused too: one holder, whoever asks.
    assert!(store.lock_connection("main", "again").await.is_err());
    // Another connection's lock is free, whatever its name holds.
    let _second = other
        .lock_connection("second / \"quoted\" ü", "pid 2")
        .await
        .unwrap();
    drop(held);
    // Released on drop (PostgreSQL: once the server sees the session end).
    let mut taken = None;
    for _ in 0..100 {
        if let Ok(lock) = other.lock_connection("main", "pid 2").await {
            taken = Some(lock);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        taken.is_some(),
        "the lock is free once its holder dropped it"
    );
    other.close().await;
}

async fn read_only_open_reads_and_writes_nothing(store: Arc<dyn Store>, url: &str) {
    let (conn, run) = setup(&store).await;
    store
        .apply_page(PageWrite {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            canonical_entity: "Person",
            records: &[person("1", "Ada", None)],
            quarantined: &[],
            cursor: &Cursor(json!({"offset": 1})),
            finished: true,
            total: None,
            mark: None,
            now: t0(),
        })
        .await
        .unwrap();
    let reader = tributary_store::open_read_only(url).await.unwrap();
    assert_eq!(reader.connections().await.unwrap().len(), 1);
    assert!(reader.record(conn, "Person", "1").await.unwrap().is_some());
    assert!(reader.pending_migrations().await.unwrap().is_empty());
    if reader.backend() == tributary_store::Backend::Sqlite {
        // Nothing can be written through it.
        assert!(
            reader
                .ensure_connection(
                    NewConnection {
                        name: "x",
                        adapter: "pco",
                        base_url: "http://127.0.0.1:1",
                    },
                    t0(),
                )
                .await
                .is_err()
        );
        // A file that is not there is not created.
        let missing = format!("{url}.missing");
        let error = tributary_store::open_read_only(&missing).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "there is no database at `{missing}`: nothing has been synced into it yet; run \
                 `tributary sync --db {missing}` (or `tributary demo --db {missing}`) first"
            )
        );
        assert!(!std::path::Path::new(&missing).exists());
    }
    reader.close().await;
}

async fn opening_again_finds_the_migrations_applied(store: Arc<dyn Store>, url: &str) {
    assert!(store.pending_migrations().await.unwrap().is_empty());
    // Several openers at once: one applies nothing new, none fails.
    let opened = futures_util::future::join_all((0..4).map(|_| tributary_store::open(url))).await;
    for store in opened {
        let store = store.unwrap();
        assert!(store.pending_migrations().await.unwrap().is_empty());
        store.close().await;
    }
}

async fn marks_commit_with_their_page_and_never_move_back(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    assert!(store.marks(conn).await.unwrap().is_empty());
    let records = [person("1", "Ada", None)];
    let cursor = Cursor(json!({"offset": 1}));
    let at = |mark| PageWrite {
        mark: Some(mark),
        ..page(conn, run, &records, &[], &cursor, false)
    };
    store.apply_page(at(t0())).await.unwrap();
    assert_eq!(
        store.marks(conn).await.unwrap(),
        [("Person".to_owned(), t0())]
    );
    // A lower mark is ignored; a higher one moves it.
    store
        .apply_page(at(t0() - Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(store.marks(conn).await.unwrap()[0].1, t0());
    // Pages of one group: the highest wins.
    let later = t0() + Duration::milliseconds(1500);
    store
        .apply_pages(&[at(later), at(t0() + Duration::seconds(1))])
        .await
        .unwrap();
    assert_eq!(store.marks(conn).await.unwrap()[0].1, later);
    // A page refused (its run has ended) moves no mark.
    store
        .finish_run(run, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    assert!(
        store
            .apply_page(at(t0() + Duration::days(1)))
            .await
            .is_err()
    );
    assert_eq!(store.marks(conn).await.unwrap()[0].1, later);
    // Removing the connection removes its marks.
    assert!(store.remove_connection("main").await.unwrap());
    assert!(store.marks(conn).await.unwrap().is_empty());
}

async fn changed_ids_are_the_records_a_run_wrote(store: Arc<dyn Store>) {
    let (conn, first) = setup(&store).await;
    let records: Vec<PreparedRecord> = ["1", "2", "3", "4"]
        .iter()
        .map(|id| person(id, "x", None))
        .collect();
    store
        .apply_page(page(conn, first, &records, &[], &Cursor::start(), true))
        .await
        .unwrap();
    store
        .finish_run(first, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    assert_eq!(
        store
            .changed_ids(conn, "Person", first, None, 10)
            .await
            .unwrap(),
        ["1", "2", "3", "4"]
    );
    let second = store
        .start_run(conn, RunKind::Delta, None, None, t0())
        .await
        .unwrap()
        .run()
        .id;
    // 2 and 4 change, 1 comes again unchanged, 5 is new.
    let again = [
        person("1", "x", None),
        person("2", "y", None),
        person("4", "y", None),
        person("5", "x", None),
    ];
    store
        .apply_page(page(conn, second, &again, &[], &Cursor::start(), true))
        .await
        .unwrap();
    let changed = |after: Option<&'static str>, limit| {
        let store = store.clone();
        async move {
            store
                .changed_ids(conn, "Person", second, after, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(changed(None, 10).await, ["2", "4", "5"]);
    assert_eq!(changed(None, 2).await, ["2", "4"]);
    assert_eq!(changed(Some("4"), 2).await, ["5"]);
    assert!(
        store
            .changed_ids(conn, "Email", second, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn email_of(id: &str, person: &str) -> PreparedRecord {
    PreparedRecord::new(SourceRecord {
        entity: "Email".into(),
        external_id: id.into(),
        source_updated_at: None,
        raw: json!({"type": "Email", "id": id, "attributes": {"address": id}}).into(),
        canonical: json!({"address": id}),
        edges: vec![EdgeRef {
            rel: "person".into(),
            to_entity: "Person".into(),
            to_external_id: person.into(),
            hard: true,
        }],
    })
}

async fn deletion_cascades_feeds_and_comes_back(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let people = [person("1", "Ada", Some("c")), person("2", "Bo", None)];
    store
        .apply_page(page(conn, run, &people, &[], &Cursor::start(), true))
        .await
        .unwrap();
    let emails = [
        email_of("e1", "1"),
        email_of("e2", "1"),
        email_of("e3", "2"),
    ];
    store
        .apply_page(PageWrite {
            entity: "Email",
            canonical_entity: "Email",
            ..page(conn, run, &emails, &[], &Cursor::start(), true)
        })
        .await
        .unwrap();
    let cascade = [Cascade {
        entity: "Email".into(),
        rel: "person".into(),
        parent: "Person".into(),
    }];
    let gone = ["1".to_owned(), "missing".to_owned()];
    let deleted = store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &gone,
            cascade: &cascade,
            now: t0() + Duration::hours(1),
        })
        .await
        .unwrap();
    assert_eq!(
        deleted.into_iter().collect::<Vec<_>>(),
        [("Email".to_owned(), 2), ("Person".to_owned(), 1)]
    );
    // Soft: the rows stay, marked; live listings skip them.
    let ada = store.record(conn, "Person", "1").await.unwrap().unwrap();
    assert_eq!(ada.deleted_at, Some(t0() + Duration::hours(1)));
    assert_eq!(
        store.external_ids(conn, "Email", None, 10).await.unwrap(),
        ["e3"]
    );
    assert!(
        store
            .edges_from(conn, "Person", "1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .edges_from(conn, "Email", "e1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.edges_from(conn, "Email", "e3").await.unwrap().len(),
        1
    );
    let feed = change_kinds(&store, conn).await;
    let tail: Vec<_> = feed[feed.len() - 3..].to_vec();
    assert!(
        tail.contains(&("1".to_owned(), ChangeKind::Deleted)),
        "{feed:?}"
    );
    assert!(
        tail.contains(&("e1".to_owned(), ChangeKind::Deleted)),
        "{feed:?}"
    );
    assert!(
        tail.contains(&("e2".to_owned(), ChangeKind::Deleted)),
        "{feed:?}"
    );
    assert_eq!(store.run(run).await.unwrap().unwrap().counts.deleted, 3);
    // Deleting again deletes nothing more.
    let again = store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &gone,
            cascade: &cascade,
            now: t0(),
        })
        .await
        .unwrap();
    assert!(again.is_empty());
    // Seen again: the same row comes back, fed as created.
    let before = ada.id;
    let outcome = store
        .apply_page(page(conn, run, &people[..1], &[], &Cursor::start(), true))
        .await
        .unwrap();
    assert_eq!((outcome.created, outcome.restored), (1, 1));
    assert_eq!(store.run(run).await.unwrap().unwrap().counts.restored, 1);
    let back = store.record(conn, "Person", "1").await.unwrap().unwrap();
    assert_eq!((back.id, back.deleted_at), (before, None));
    assert_eq!(
        change_kinds(&store, conn).await.last().unwrap(),
        &("1".to_owned(), ChangeKind::Created)
    );
    assert_eq!(
        store.edges_from(conn, "Person", "1").await.unwrap().len(),
        1
    );
    // A run that has ended deletes nothing.
    store
        .finish_run(run, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    let refused = store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &["2".to_owned()],
            cascade: &cascade,
            now: t0(),
        })
        .await;
    assert!(matches!(refused, Err(Error::NotFound(_))), "{refused:?}");
    assert!(
        store
            .record(conn, "Person", "2")
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_none()
    );
}

async fn staged_deletions_end_with_their_run(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let _ = conn;
    store
        .stage_deletions(run, "Person", &["2".to_owned(), "1".to_owned()])
        .await
        .unwrap();
    store
        .stage_deletions(run, "Email", &["e1".to_owned(), "1".to_owned()])
        .await
        .unwrap();
    assert!(
        store
            .transition_run(
                run,
                RunState::Running,
                RunState::WaitingApproval,
                Some("held"),
                t0()
            )
            .await
            .unwrap()
    );
    let waiting = store.run(run).await.unwrap().unwrap();
    assert_eq!(
        (waiting.state, waiting.error.as_deref(), waiting.finished_at),
        (RunState::WaitingApproval, Some("held"), None)
    );
    assert_eq!(
        store.staged_deletions(run).await.unwrap(),
        [
            ("Email".to_owned(), "1".to_owned()),
            ("Email".to_owned(), "e1".to_owned()),
            ("Person".to_owned(), "1".to_owned()),
            ("Person".to_owned(), "2".to_owned()),
        ]
    );
    // A transition from the wrong state moves nothing.
    assert!(
        !store
            .transition_run(run, RunState::Running, RunState::Cancelled, None, t0())
            .await
            .unwrap()
    );
    // Not resumed by the next request of its kind.
    let next = store
        .start_run(conn, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    assert!(matches!(next, RunStart::New(_)), "{next:?}");
    assert!(
        store
            .transition_run(
                run,
                RunState::WaitingApproval,
                RunState::Cancelled,
                Some("rejected"),
                t0()
            )
            .await
            .unwrap()
    );
    let ended = store.run(run).await.unwrap().unwrap();
    assert_eq!(ended.state, RunState::Cancelled);
    assert_eq!(ended.finished_at, Some(t0()));
    assert!(store.staged_deletions(run).await.unwrap().is_empty());
}

async fn schedule_slots_are_claimed_once(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let schedule = Schedule {
        connection_id: conn,
        delta_every_secs: Some(900),
        delta_next_at: Some(t0()),
        reconcile_cron: Some("0 3 * * *".into()),
        reconcile_next_at: Some(t0() + Duration::hours(3)),
        updated_at: t0(),
    };
    store.set_schedule(&schedule).await.unwrap();
    assert_eq!(
        store.schedules().await.unwrap(),
        std::slice::from_ref(&schedule)
    );
    // Ten claims of one slot at once: one wins.
    let next = t0() + Duration::minutes(15);
    let claims = futures_util::future::join_all(
        (0..10).map(|_| store.claim_slot(conn, RunKind::Delta, t0(), next)),
    )
    .await;
    assert_eq!(claims.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    let stored = &store.schedules().await.unwrap()[0];
    assert_eq!(stored.delta_next_at, Some(next));
    assert_eq!(stored.reconcile_next_at, schedule.reconcile_next_at);
    // Not a schedule's kind: refused.
    assert!(
        store
            .claim_slot(conn, RunKind::Full, t0(), next)
            .await
            .is_err()
    );
    // Replaced whole; removed with the connection.
    let off = Schedule {
        delta_every_secs: None,
        delta_next_at: None,
        ..schedule
    };
    store.set_schedule(&off).await.unwrap();
    assert_eq!(store.schedules().await.unwrap(), [off]);
    assert!(store.remove_connection("main").await.unwrap());
    assert!(store.schedules().await.unwrap().is_empty());
}

async fn webhook_secrets_are_kept_sealed_listed_and_removed(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let any = store
        .add_webhook_secret(conn, None, b"sealed-1", t0())
        .await
        .unwrap();
    let one = store
        .add_webhook_secret(
            conn,
            Some("people.v2.events.person.updated"),
            b"sealed-2",
            t0(),
        )
        .await
        .unwrap();
    let secrets = store.webhook_secrets(conn).await.unwrap();
    assert_eq!(
        secrets
            .iter()
            .map(|s| (s.id, s.event.as_deref(), s.sealed.as_slice(), s.created_at))
            .collect::<Vec<_>>(),
        vec![
            (any, None, &b"sealed-1"[..], t0()),
            (
                one,
                Some("people.v2.events.person.updated"),
                &b"sealed-2"[..],
                t0()
            ),
        ]
    );
    // Debug output never shows the sealed bytes.
    assert!(!format!("{:?}", secrets[0]).contains("sealed"));
    assert!(store.webhook_secrets(conn + 1).await.unwrap().is_empty());
    assert!(store.remove_webhook_secret(any).await.unwrap());
    assert!(!store.remove_webhook_secret(any).await.unwrap());
    assert_eq!(store.webhook_secrets(conn).await.unwrap().len(), 1);
}

fn delivery(conn: i64, id: &str, payload: &str) -> NewDelivery {
    NewDelivery {
        connection_id: conn,
        delivery_id: id.into(),
        event: "people.v2.events.person.updated".into(),
        sent_at: Some(t0() - Duration::seconds(2)),
        received_at: t0(),
        payload: payload.into(),
    }
}

async fn deliveries_are_kept_once_per_sender_id(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let other = store
        .ensure_connection(
            NewConnection {
                name: "other",
                adapter: "pco",
                base_url: "http://127.0.0.1:1",
            },
            t0(),
        )
        .await
        .unwrap()
        .id;
    let first = store
        .receive_deliveries(&[
            delivery(conn, "d1", "{\"a\":1}"),
            delivery(conn, "d2", "{}"),
        ])
        .await
        .unwrap();
    let [Received::Stored(d1), Received::Stored(d2)] = first[..] else {
        panic!("{first:?}");
    };
    assert!(d1 < d2);
    // A retry of d1 (another body, even) is a duplicate; the same id on
    // another connection is not; a duplicate within one batch counts once.
    let again = store
        .receive_deliveries(&[
            delivery(conn, "d1", "{\"a\":2}"),
            delivery(other, "d1", "{}"),
            delivery(conn, "d3", "{}"),
            delivery(conn, "d3", "{}"),
        ])
        .await
        .unwrap();
    assert!(matches!(
        again[..],
        [
            Received::Duplicate,
            Received::Stored(_),
            Received::Stored(_),
            Received::Duplicate
        ]
    ));
    let kept = store
        .deliveries(&DeliveryQuery {
            connection_id: Some(conn),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        kept.iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["d1", "d2", "d3"]
    );
    let d = &kept[0];
    assert_eq!(d.payload, "{\"a\":1}", "the first copy is the one kept");
    assert_eq!(
        (d.state, d.attempts, d.error.as_deref()),
        (DeliveryState::Pending, 0, None)
    );
    assert_eq!(
        (d.sent_at, d.received_at),
        (Some(t0() - Duration::seconds(2)), t0())
    );
    assert_eq!(d.event, "people.v2.events.person.updated");
    // Filters and paging.
    let all = DeliveryQuery::default();
    assert_eq!(store.deliveries(&all).await.unwrap().len(), 4);
    let page = DeliveryQuery {
        after_id: d1,
        limit: 1,
        ..DeliveryQuery::default()
    };
    assert_eq!(store.deliveries(&page).await.unwrap()[0].id, d2);
    let dead = DeliveryQuery {
        state: Some(DeliveryState::Dead),
        ..DeliveryQuery::default()
    };
    assert!(store.deliveries(&dead).await.unwrap().is_empty());
}

async fn duplicates_arriving_at_once_are_kept_once(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .receive_deliveries(&[delivery(conn, "same", "{}")])
                    .await
                    .unwrap()[0]
            })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Received::Stored(_)) {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "one of eight identical deliveries is kept");
    assert_eq!(
        store
            .deliveries(&DeliveryQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn deliveries_are_due_settled_replayed_and_paused(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let ids: Vec<i64> = store
        .receive_deliveries(&[
            delivery(conn, "a", "{}"),
            delivery(conn, "b", "{}"),
            delivery(conn, "c", "{}"),
        ])
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Received::Stored(id) => id,
            Received::Duplicate => panic!("a duplicate"),
        })
        .collect();
    let due = |at| {
        let store = store.clone();
        async move {
            store
                .due_deliveries(conn, at, 10)
                .await
                .unwrap()
                .iter()
                .map(|d| d.delivery_id.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(due(t0()).await, ["a", "b", "c"]);
    assert_eq!(store.webhook_backlog(t0()).await.unwrap(), vec![conn]);
    assert_eq!(store.due_deliveries(conn, t0(), 2).await.unwrap().len(), 2);

    let settled = store
        .settle_deliveries(
            &[
                (
                    ids[0],
                    0,
                    Settled::Applied {
                        run_id: run,
                        note: None,
                    },
                ),
                (
                    ids[1],
                    0,
                    Settled::Retry {
                        error: "503 from the API".into(),
                        at: t0() + Duration::seconds(30),
                    },
                ),
                (
                    ids[2],
                    0,
                    Settled::Dead {
                        error: "no `id` in the payload".into(),
                    },
                ),
            ],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(settled, 3);
    // An attempt that started from another count (the delivery was
    // replayed or settled meanwhile) changes nothing.
    let stale = store
        .settle_deliveries(
            &[(
                ids[1],
                0,
                Settled::Dead {
                    error: "late".into(),
                },
            )],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(stale, 0);
    let stale = store
        .settle_deliveries(
            &[(
                ids[0],
                1,
                Settled::Dead {
                    error: "not pending".into(),
                },
            )],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(stale, 0);
    let all = store.deliveries(&DeliveryQuery::default()).await.unwrap();
    let a = &all[0];
    assert_eq!(
        (a.state, a.attempts, a.run_id, a.applied_at),
        (DeliveryState::Applied, 1, Some(run), Some(t0()))
    );
    let b = &all[1];
    assert_eq!(
        (b.state, b.attempts, b.error.as_deref(), b.next_attempt_at),
        (
            DeliveryState::Pending,
            1,
            Some("503 from the API"),
            Some(t0() + Duration::seconds(30))
        )
    );
    assert_eq!((all[2].state, all[2].attempts), (DeliveryState::Dead, 1));
    // b waits for its next attempt; c is dead.
    assert!(due(t0()).await.is_empty());
    assert!(store.webhook_backlog(t0()).await.unwrap().is_empty());
    assert_eq!(due(t0() + Duration::seconds(30)).await, ["b"]);

    // Replay: the dead ones received since a time, or named ones.
    assert_eq!(
        store
            .replay_deliveries(&[], Some(t0() + Duration::seconds(1)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.replay_deliveries(&[], Some(t0())).await.unwrap(), 1);
    let c = &store.deliveries(&DeliveryQuery::default()).await.unwrap()[2];
    assert_eq!(
        (c.state, c.attempts, c.next_attempt_at, c.error.as_deref()),
        (DeliveryState::Pending, 0, None, None)
    );
    assert_eq!(due(t0()).await, ["c"]);
    assert_eq!(store.replay_deliveries(&[ids[0]], None).await.unwrap(), 1);
    let a = &store.deliveries(&DeliveryQuery::default()).await.unwrap()[0];
    assert_eq!(
        (a.state, a.run_id, a.applied_at),
        (DeliveryState::Pending, None, None)
    );
    assert_eq!(due(t0()).await, ["a", "c"]);

    // Paused: nothing due, still listed; resumed: due again.
    store.set_webhooks_paused(conn, true, t0()).await.unwrap();
    store.set_webhooks_paused(conn, true, t0()).await.unwrap();
    assert_eq!(store.webhook_pauses().await.unwrap(), vec![conn]);
    assert!(due(t0()).await.is_empty());
    assert!(store.webhook_backlog(t0()).await.unwrap().is_empty());
    store.set_webhooks_paused(conn, false, t0()).await.unwrap();
    assert!(store.webhook_pauses().await.unwrap().is_empty());
    assert_eq!(due(t0()).await, ["a", "c"]);

    // Expiry forgets applied deliveries received before a time, only.
    store
        .settle_deliveries(
            &[(
                ids[0],
                0,
                Settled::Applied {
                    run_id: run,
                    note: None,
                },
            )],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(store.expire_deliveries(t0()).await.unwrap(), 0);
    assert_eq!(
        store
            .expire_deliveries(t0() + Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = store
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(left, ["b", "c"]);
}

async fn a_queued_run_starts_by_its_key(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let key = "schedule delta 2026-03-04T05:00:00Z";
    let queued = store
        .queue_run(conn, RunKind::Delta, key, t0())
        .await
        .unwrap();
    assert_eq!(
        (queued.state, queued.kind),
        (RunState::Queued, RunKind::Delta)
    );
    // Queued again under the same key: the same run.
    let again = store
        .queue_run(conn, RunKind::Delta, key, t0())
        .await
        .unwrap();
    assert_eq!(again.id, queued.id);
    assert_eq!(
        store
            .queued_runs()
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![queued.id]
    );
    // Its turn: started by its key, as a new run, with its scope.
    let later = t0() + Duration::seconds(60);
    let started = store
        .start_run(conn, RunKind::Delta, Some("scope"), Some(key), later)
        .await
        .unwrap();
    let RunStart::New(run) = started else {
        panic!("{started:?}")
    };
    assert_eq!(
        (run.id, run.state, run.started_at),
        (queued.id, RunState::Running, later)
    );
    assert!(store.queued_runs().await.unwrap().is_empty());
    // A queued run cancelled before its turn never starts.
    let other = store
        .queue_run(conn, RunKind::Reconcile, "schedule reconcile x", t0())
        .await
        .unwrap();
    assert!(
        store
            .transition_run(
                other.id,
                RunState::Queued,
                RunState::Cancelled,
                Some("no"),
                t0()
            )
            .await
            .unwrap()
    );
    let start = store
        .start_run(
            conn,
            RunKind::Reconcile,
            None,
            Some("schedule reconcile x"),
            t0(),
        )
        .await
        .unwrap();
    assert!(matches!(start, RunStart::Finished(_)), "{start:?}");
}

/// A person whose canonical form is `canonical`.
fn person_with(id: &str, canonical: serde_json::Value) -> PreparedRecord {
    PreparedRecord::new(SourceRecord {
        entity: "Person".into(),
        external_id: id.into(),
        source_updated_at: Some(t0()),
        raw: json!({"id": id, "canonical": canonical.clone()}).into(),
        canonical,
        edges: vec![],
    })
}

async fn an_update_names_the_fields_it_changed(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let cursor = Cursor::start();
    let write = |records: Vec<PreparedRecord>| {
        let store = store.clone();
        let cursor = cursor.clone();
        async move {
            store
                .apply_page(page(conn, run, &records, &[], &cursor, false))
                .await
                .unwrap();
        }
    };
    write(vec![
        person_with(
            "1",
            json!({"name": "Zoë", "email": "z@x", "tags": [1, 2], "age": 30, "vip": true}),
        ),
        person_with("2", json!({"name": "Ann"})),
    ])
    .await;
    // A changed value, a changed array, a value turned null, a field
    // removed and one added; the unchanged fields are not named.
    write(vec![
        person_with("1", json!({"name": "Zoë", "email": "zoe@x", "tags": [1, 2, 3], "age": null, "nick": "Z", "vip": true})),
        person_with("2", json!({"name": "Ann"})),
    ])
    .await;
    // A boolean flip, and a number that only changes its type.
    write(vec![person_with("1", json!({"name": "Zoë", "email": "zoe@x", "tags": [1, 2, 3], "age": "30", "nick": "Z", "vip": false}))]).await;
    store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &["2".to_owned()],
            cascade: &[],
            now: t0(),
        })
        .await
        .unwrap();
    let feed: Vec<(String, ChangeKind, Option<Vec<String>>)> = store
        .changes(Some(conn), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.external_id, c.kind, c.fields))
        .collect();
    let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        feed,
        [
            ("1".into(), ChangeKind::Created, None),
            ("2".into(), ChangeKind::Created, None),
            (
                "1".into(),
                ChangeKind::Updated,
                names(&["age", "email", "nick", "tags"])
            ),
            ("1".into(), ChangeKind::Updated, names(&["age", "vip"])),
            ("2".into(), ChangeKind::Deleted, None),
        ]
    );
}

async fn stamps_tell_each_records_age_and_tombstone(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let cursor = Cursor::start();
    let records = [person("1", "Ann", None), person("2", "Bob", None)];
    store
        .apply_page(page(conn, run, &records, &[], &cursor, false))
        .await
        .unwrap();
    store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &["2".to_owned()],
            cascade: &[],
            now: t0() + Duration::minutes(1),
        })
        .await
        .unwrap();
    let ids: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
    let stamps = store.stamps(conn, "Person", &ids).await.unwrap();
    assert_eq!(stamps.len(), 2, "a record never stored has no stamp");
    assert_eq!(
        stamps["1"],
        Stamp {
            source_updated_at: Some(t0() - Duration::days(1)),
            deleted_at: None
        }
    );
    assert_eq!(stamps["2"].deleted_at, Some(t0() + Duration::minutes(1)));
    assert!(store.stamps(conn, "Person", &[]).await.unwrap().is_empty());
    assert!(store.stamps(conn, "Email", &ids).await.unwrap().is_empty());
}

async fn a_connection_keeps_its_own_request_budget(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let main = || async { store.connection("main").await.unwrap().unwrap() };
    assert_eq!(main().await.rate_limit, None);
    let budget = RateBudget {
        requests: 1_000,
        period: std::time::Duration::from_secs(10),
    };
    store
        .set_rate_limit(conn, Some(budget), t0())
        .await
        .unwrap();
    assert_eq!(main().await.rate_limit, Some(budget));
    assert_eq!(
        store.connections().await.unwrap()[0].rate_limit,
        Some(budget)
    );
    store.set_rate_limit(conn, None, t0()).await.unwrap();
    assert_eq!(main().await.rate_limit, None);
    assert!(store.set_rate_limit(conn + 99, None, t0()).await.is_err());
}

async fn a_deletion_heard_first_leaves_a_tombstone(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let cursor = Cursor::start();
    store
        .apply_page(page(
            conn,
            run,
            &[person("1", "Ann", None)],
            &[],
            &cursor,
            false,
        ))
        .await
        .unwrap();
    let ids: Vec<String> = vec!["1".into(), "2".into()];
    let burial = Burial {
        connection_id: conn,
        run_id: run,
        entity: "Person",
        canonical_entity: "Person",
        external_ids: &ids,
        now: t0() + Duration::minutes(3),
    };
    assert_eq!(
        store.bury(burial).await.unwrap(),
        1,
        "the stored one is left alone"
    );
    assert_eq!(store.bury(burial).await.unwrap(), 0, "once");
    let stamps = store.stamps(conn, "Person", &ids).await.unwrap();
    assert_eq!(stamps["1"].deleted_at, None);
    assert_eq!(stamps["2"].deleted_at, Some(t0() + Duration::minutes(3)));
    assert_eq!(
        change_kinds(&store, conn).await,
        [
            ("1".to_owned(), ChangeKind::Created),
            ("2".to_owned(), ChangeKind::Deleted)
        ]
    );
    // A later page that carries it brings it back, as any deleted record.
    let outcome = store
        .apply_page(page(
            conn,
            run,
            &[person("2", "Bo", None)],
            &[],
            &cursor,
            false,
        ))
        .await
        .unwrap();
    assert_eq!(outcome.restored, 1);
}

async fn the_feed_retention_keeps_a_horizon(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    assert_eq!(store.feed_head().await.unwrap(), 0);
    assert_eq!(store.feed_horizon().await.unwrap(), 0);
    let cursor = Cursor::start();
    let old = [person("1", "Ann", None), person("2", "Bob", None)];
    store
        .apply_page(page(conn, run, &old, &[], &cursor, false))
        .await
        .unwrap();
    let newer = [person("3", "Cy", None)];
    store
        .apply_page(PageWrite {
            now: t0() + Duration::days(40),
            ..page(conn, run, &newer, &[], &cursor, false)
        })
        .await
        .unwrap();
    let head = store.feed_head().await.unwrap();
    let all = store.changes(None, 0, 100).await.unwrap();
    assert_eq!(all.last().unwrap().seq, head);
    // Nothing before t0: nothing goes.
    assert_eq!(store.expire_changes(t0()).await.unwrap(), 0);
    assert_eq!(store.feed_horizon().await.unwrap(), 0);
    // The two old rows go; the horizon is the newest of them.
    assert_eq!(
        store
            .expire_changes(t0() + Duration::days(10))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.feed_horizon().await.unwrap(), all[1].seq);
    let left = store.changes(None, 0, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].external_id, "3");
    assert_eq!(store.feed_head().await.unwrap(), head);
    // The horizon never moves back.
    assert_eq!(store.expire_changes(t0()).await.unwrap(), 0);
    assert_eq!(store.feed_horizon().await.unwrap(), all[1].seq);
}

/// Two writers whose commits come in the other order than their feed rows
/// were inserted: a reader that read the second writer's rows, and keeps
/// its cursor, still receives the first writer's row once it commits.
/// (SQLite has one writer at a time: nothing to race.)
async fn a_change_committed_late_is_never_passed_by(store: Arc<dyn Store>, url: &str) {
    use sqlx::Connection as _;
    if !url.starts_with("postgres") {
        return;
    }
    let (conn, run) = setup(&store).await;
    let mut early = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = early.begin().await.unwrap();
    // Its feed row is inserted first (the lower `seq`) ...
    sqlx::query(
        "INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at) \
         VALUES ($1, 0, 'Person', 'early', 'created', NULL, $2, now())",
    )
    .bind(conn)
    .bind(run)
    .execute(&mut *tx)
    .await
    .unwrap();
    // ... while a page commits after it.
    let cursor = Cursor::start();
    store
        .apply_page(page(
            conn,
            run,
            &[person("1", "Ann", None)],
            &[],
            &cursor,
            false,
        ))
        .await
        .unwrap();
    let seen = store.changes(Some(conn), 0, 100).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].external_id, "1");
    let after = seen[0].seq;
    // The first writer commits now: its row comes after the cursor.
    tx.commit().await.unwrap();
    let next = store.changes(Some(conn), after, 100).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|c| c.external_id.as_str())
            .collect::<Vec<_>>(),
        ["early"],
        "the late commit is not passed by"
    );
    assert!(next[0].seq > after);
    assert_eq!(store.feed_head().await.unwrap(), next[0].seq);
}

async fn tokens_are_kept_hashed_looked_up_and_revoked(store: Arc<dyn Store>) {
    let read = store
        .create_token("dashboard", TokenRole::Read, &"a".repeat(64), t0())
        .await
        .unwrap();
    let admin = store
        .create_token("ops", TokenRole::Admin, &"b".repeat(64), t0())
        .await
        .unwrap();
    assert_eq!((read.role, admin.role), (TokenRole::Read, TokenRole::Admin));
    assert_eq!(
        store.token_by_hash(&"a".repeat(64)).await.unwrap(),
        Some(read.clone())
    );
    assert_eq!(store.token_by_hash(&"c".repeat(64)).await.unwrap(), None);
    // A hash is kept once.
    assert!(
        store
            .create_token("again", TokenRole::Admin, &"a".repeat(64), t0())
            .await
            .is_err()
    );
    assert!(store.revoke_token(read.id, t0()).await.unwrap());
    assert!(!store.revoke_token(read.id, t0()).await.unwrap());
    assert_eq!(store.token_by_hash(&"a".repeat(64)).await.unwrap(), None);
    let listed = store.tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].revoked_at, Some(t0()));
    assert_eq!(listed[1], admin);
}

async fn the_audit_trail_names_each_change_its_run_and_deliveries(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let cursor = Cursor::start();
    for name in ["Ann", "Anne"] {
        store
            .apply_page(page(
                conn,
                run,
                &[person_with("1", json!({ "name": name }))],
                &[],
                &cursor,
                false,
            ))
            .await
            .unwrap();
    }
    store
        .apply_page(page(
            conn,
            run,
            &[person_with("2", json!({"name": "Bo"}))],
            &[],
            &cursor,
            false,
        ))
        .await
        .unwrap();
    // A delivery that named person 1, applied by the run.
    let received = store
        .receive_deliveries(&[delivery(conn, "d1", "{}"), delivery(conn, "d2", "{}")])
        .await
        .unwrap();
    let [Received::Stored(d1), Received::Stored(d2)] = received[..] else {
        panic!("{received:?}");
    };
    let subject = |external_id: &str, delivery_id: i64| Subject {
        connection_id: conn,
        entity: "Person".into(),
        external_id: external_id.into(),
        delivery_id,
    };
    store
        .add_webhook_subjects(&[subject("1", d1), subject("2", d2), subject("1", d1)])
        .await
        .unwrap();
    store
        .settle_deliveries(
            &[
                (
                    d1,
                    0,
                    Settled::Applied {
                        run_id: run,
                        note: None,
                    },
                ),
                (
                    d2,
                    0,
                    Settled::Applied {
                        run_id: run,
                        note: None,
                    },
                ),
            ],
            t0(),
        )
        .await
        .unwrap();
    let trail = tributary_store::audit(store.as_ref(), conn, "Person", "1", 10)
        .await
        .unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| e.change.kind).collect();
    assert_eq!(kinds, [ChangeKind::Updated, ChangeKind::Created]);
    assert!(trail[0].change.seq > trail[1].change.seq);
    assert_eq!(trail[0].change.fields, Some(vec!["name".to_owned()]));
    for entry in &trail {
        assert_eq!(entry.run.as_ref().map(|r| r.id), Some(run));
        let named: Vec<_> = entry
            .deliveries
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect();
        assert_eq!(named, ["d1"]);
    }
    let limited = tributary_store::audit(store.as_ref(), conn, "Person", "1", 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert!(
        tributary_store::audit(store.as_ref(), conn, "Person", "9", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A commit that writes feed rows wakes the feed's watchers: on
/// PostgreSQL a commit through another handle (another process, as far as
/// the database can tell) too; on SQLite this store's own commits.
async fn a_commit_wakes_the_feed_watchers(store: Arc<dyn Store>, url: &str) {
    let (conn, run) = setup(&store).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let everywhere = store.watch_changes(wake.clone()).await.unwrap();
    assert_eq!(everywhere, url.starts_with("postgres"));
    let writer = match everywhere {
        true => tributary_store::open(url).await.unwrap(),
        false => store.clone(),
    };
    let cursor = Cursor::start();
    for (n, name) in ["Ann", "Bo", "Cy"].into_iter().enumerate() {
        let woken = wake.notified();
        writer
            .apply_page(page(
                conn,
                run,
                &[person(&n.to_string(), name, None)],
                &[],
                &cursor,
                false,
            ))
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), woken)
            .await
            .unwrap_or_else(|_| panic!("commit {n} woke nobody"));
    }
    // A page that changes nothing writes no feed row and wakes nobody on
    // PostgreSQL (SQLite cannot tell from here, and wakes: harmless).
    if everywhere {
        let woken = wake.notified();
        writer
            .apply_page(page(
                conn,
                run,
                &[person("0", "Ann", None)],
                &[],
                &cursor,
                false,
            ))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), woken)
                .await
                .is_err()
        );
    }
}

/// Every record after `after` (all filters off but the connection), read
/// `limit` at a time up to the end: the records and the final cursor.
async fn read_records(
    store: &Arc<dyn Store>,
    conn: i64,
    after: i64,
    limit: u32,
) -> (Vec<RecordVersion>, i64) {
    let mut all = Vec::new();
    let mut after = after;
    loop {
        let page = store
            .records_page(&RecordsPageQuery {
                connection_id: Some(conn),
                after,
                limit,
                include_deleted: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let done = page.next >= page.head;
        after = page.next;
        all.extend(page.records);
        if done {
            return (all, after);
        }
    }
}

async fn records_page_in_version_order_and_end_at_the_feed_head(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let empty = store
        .records_page(&RecordsPageQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(empty.records.is_empty());
    assert_eq!((empty.next, empty.head), (0, 0));
    let people: Vec<PreparedRecord> = (1..=5)
        .map(|i| person(&i.to_string(), &format!("P{i}"), None))
        .collect();
    store
        .apply_page(page(conn, run, &people, &[], &Cursor::start(), false))
        .await
        .unwrap();
    let first = store
        .records_page(&RecordsPageQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.records.len(), 2);
    assert!(first.records[0].version < first.records[1].version);
    assert_eq!(first.next, first.records[1].version);
    assert_eq!(first.records[0].canonical, json!({"name": "P1"}));
    assert_eq!(first.records[0].connection, "main");
    let (rest, end) = read_records(&store, conn, first.next, 2).await;
    assert_eq!(
        rest.iter()
            .map(|r| r.external_id.as_str())
            .collect::<Vec<_>>(),
        ["3", "4", "5"]
    );
    // The end is the feed's head: the feed after it holds nothing yet.
    assert_eq!(end, store.feed_head().await.unwrap());
    assert!(store.changes(None, end, 10).await.unwrap().is_empty());
    // A record's version is its latest change's feed position.
    let feed = store.changes(None, 0, 10).await.unwrap();
    assert_eq!(rest[2].version, feed[4].seq);
    // A change after the cursor: in the records after it and in the feed
    // after it, once.
    store
        .apply_page(page(
            conn,
            run,
            &[person("2", "Two", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    let (changed, later) = read_records(&store, conn, end, 10).await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].external_id, "2");
    assert_eq!(changed[0].canonical, json!({"name": "Two"}));
    let fed = store.changes(None, end, 10).await.unwrap();
    assert_eq!(fed.len(), 1);
    assert_eq!(fed[0].seq, changed[0].version);
    assert_eq!(later, fed[0].seq);
}

/// A client pages through the records while they are created, changed
/// and deleted between its pages: it never sees a version twice, versions
/// only grow, and what it saw last of each record is the record as it
/// ends — nothing skipped.
async fn paging_while_records_change_never_skips_or_repeats_a_version(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let people: Vec<PreparedRecord> = (0..40)
        .map(|i| person(&format!("p{i:02}"), "v0", None))
        .collect();
    store
        .apply_page(page(conn, run, &people, &[], &Cursor::start(), false))
        .await
        .unwrap();
    let mut seen: Vec<RecordVersion> = Vec::new();
    let mut after = 0;
    let mut step = 0;
    loop {
        let page_read = store
            .records_page(&RecordsPageQuery {
                connection_id: Some(conn),
                after,
                limit: 3,
                include_deleted: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let done = page_read.next >= page_read.head;
        after = page_read.next;
        seen.extend(page_read.records);
        if done && step >= 12 {
            break;
        }
        // Between pages: change a record already read, one not read yet,
        // create one, and delete one.
        if step < 12 {
            let name = format!("v{}", step + 1);
            let changed = [
                person(&format!("p{:02}", step), &name, None),
                person(&format!("p{:02}", 39 - step), &name, None),
                person(&format!("new{step}"), &name, None),
            ];
            store
                .apply_page(page(conn, run, &changed, &[], &Cursor::start(), false))
                .await
                .unwrap();
            store
                .delete_records(Deletion {
                    connection_id: conn,
                    run_id: run,
                    entity: "Person",
                    external_ids: &[format!("p{:02}", 20 + step)],
                    cascade: &[],
                    now: t0() + Duration::hours(1),
                })
                .await
                .unwrap();
        }
        step += 1;
        assert!(step < 1_000, "the pages never ended");
    }
    let versions: Vec<i64> = seen.iter().map(|r| r.version).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions grow strictly, none repeats: {versions:?}"
    );
    // What the client saw last of each record is the record now.
    let mut last = std::collections::BTreeMap::new();
    for r in &seen {
        last.insert(
            r.external_id.clone(),
            (r.canonical.clone(), r.deleted_at.is_some()),
        );
    }
    let stored = store
        .records(&RecordQuery {
            connection_id: Some(conn),
            limit: 1_000,
            include_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let now: std::collections::BTreeMap<_, _> = stored
        .into_iter()
        .map(|r| (r.external_id, (r.canonical, r.deleted_at.is_some())))
        .collect();
    assert_eq!(last.len(), 52);
    assert_eq!(last, now);
    // And the feed after the last cursor holds nothing more.
    assert!(
        store
            .changes(Some(conn), after, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn records_page_filters_and_tombstones(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let other = store
        .ensure_connection(
            NewConnection {
                name: "other",
                adapter: "pco",
                base_url: "http://127.0.0.1:1",
            },
            t0(),
        )
        .await
        .unwrap()
        .id;
    let other_run = store
        .start_run(other, RunKind::Full, None, None, t0())
        .await
        .unwrap()
        .run()
        .id;
    let people = [person("1", "Ann", None), person("2", "Bob", None)];
    store
        .apply_page(page(conn, run, &people, &[], &Cursor::start(), false))
        .await
        .unwrap();
    store
        .apply_page(page(
            other,
            other_run,
            &people,
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    store
        .apply_page(PageWrite {
            entity: "Email",
            canonical_entity: "Email",
            now: t0() + Duration::hours(2),
            ..page(
                conn,
                run,
                &[email_of("e1", "1")],
                &[],
                &Cursor::start(),
                false,
            )
        })
        .await
        .unwrap();
    store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &["2".to_owned()],
            cascade: &[],
            now: t0() + Duration::hours(1),
        })
        .await
        .unwrap();
    let ids = |query: RecordsPageQuery| {
        let store = store.clone();
        async move {
            store
                .records_page(&RecordsPageQuery {
                    limit: 100,
                    ..query
                })
                .await
                .unwrap()
                .records
                .into_iter()
                .map(|r| format!("{}/{}/{}", r.connection, r.entity, r.external_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids(RecordsPageQuery {
            connection_id: Some(conn),
            ..Default::default()
        })
        .await,
        ["main/Person/1", "main/Email/e1"]
    );
    // Tombstones only when asked for, at their deletion's place.
    let with_tombstones = store
        .records_page(&RecordsPageQuery {
            connection_id: Some(conn),
            include_deleted: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let tombstone = with_tombstones.records.last().unwrap();
    assert_eq!(tombstone.external_id, "2");
    assert_eq!(tombstone.deleted_at, Some(t0() + Duration::hours(1)));
    assert_eq!(
        ids(RecordsPageQuery {
            connection_id: Some(conn),
            entity: Some("Person".into()),
            ..Default::default()
        })
        .await,
        ["main/Person/1"]
    );
    assert_eq!(
        ids(RecordsPageQuery {
            entity: Some("Person".into()),
            ..Default::default()
        })
        .await,
        ["main/Person/1", "other/Person/1", "other/Person/2"]
    );
    assert_eq!(
        ids(RecordsPageQuery {
            modified_after: Some(t0() + Duration::minutes(30)),
            ..Default::default()
        })
        .await,
        ["main/Email/e1"]
    );
    // Removing a connection removes its records from the pages.
    assert!(store.remove_connection("other").await.unwrap());
    assert_eq!(
        ids(RecordsPageQuery {
            entity: Some("Person".into()),
            ..Default::default()
        })
        .await,
        ["main/Person/1"]
    );
}

async fn a_record_shows_its_incoming_edges(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    store
        .apply_page(page(
            conn,
            run,
            &[person("1", "Ann", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    store
        .apply_page(PageWrite {
            entity: "Email",
            canonical_entity: "Email",
            ..page(
                conn,
                run,
                &[
                    email_of("e1", "1"),
                    email_of("e2", "1"),
                    email_of("e3", "2"),
                ],
                &[],
                &Cursor::start(),
                false,
            )
        })
        .await
        .unwrap();
    let incoming = store.edges_to(conn, "Person", "1").await.unwrap();
    assert_eq!(
        incoming
            .iter()
            .map(|e| (
                e.from_entity.as_str(),
                e.from_external_id.as_str(),
                e.rel.as_str()
            ))
            .collect::<Vec<_>>(),
        [("Email", "e1", "person"), ("Email", "e2", "person")]
    );
    assert!(
        store
            .edges_to(conn, "Person", "9")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Runs the indexer until it has read every change.
async fn index_all(store: &Arc<dyn Store>) -> i64 {
    loop {
        let step = store.index_search(7).await.unwrap();
        if step.changes == 0 && !step.rebuilt {
            return step.cursor;
        }
    }
}

async fn find(store: &Arc<dyn Store>, text: &str) -> Vec<String> {
    store
        .search(&SearchQuery {
            words: search_words(text),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.external_id)
        .collect()
}

async fn search_finds_a_changed_record_and_forgets_a_deleted_one(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let records = [
        person_with(
            "1",
            json!({"name": "Ada Lovelace", "email": "ada@example.com", "age": 36}),
        ),
        person_with(
            "2",
            json!({"name": "Charles Babbage", "notes": ["engine", "Ada's friend"]}),
        ),
        person_with(
            "3",
            json!({"name": "Zoë Ångström", "address": {"city": "Uppsala"}}),
        ),
    ];
    store
        .apply_page(page(conn, run, &records, &[], &Cursor::start(), false))
        .await
        .unwrap();
    assert!(find(&store, "ada").await.is_empty(), "nothing indexed yet");
    let cursor = index_all(&store).await;
    assert_eq!(cursor, store.feed_head().await.unwrap());
    assert_eq!(store.search_cursor().await.unwrap(), cursor);
    let mut ada = find(&store, "Ada").await;
    ada.sort();
    assert_eq!(ada, ["1", "2"], "every string value, nested ones too");
    assert_eq!(find(&store, "lovelace ada").await, ["1"]);
    assert_eq!(find(&store, "exam").await, ["1"], "a word's start");
    assert_eq!(find(&store, "uppsala").await, ["3"]);
    assert_eq!(find(&store, "Zoë").await, ["3"]);
    assert!(find(&store, "36").await.is_empty(), "strings only");
    assert!(find(&store, "ada babbage lovelace").await.is_empty());
    // The best match first, with a snippet.
    let hits = store
        .search(&SearchQuery {
            words: search_words("lovelace"),
            connection_id: Some(conn),
            entity: Some("Person".into()),
            limit: 5,
        })
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert!(
        hits[0].snippet.contains("«Lovelace»"),
        "{}",
        hits[0].snippet
    );
    assert_eq!(hits[0].canonical["name"], "Ada Lovelace");
    assert_eq!(hits[0].connection, "main");
    assert!(
        store
            .search(&SearchQuery {
                words: search_words("lovelace"),
                entity: Some("Email".into()),
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    // A change: found by its new words, not its old ones.
    store
        .apply_page(page(
            conn,
            run,
            &[person_with(
                "1",
                json!({"name": "Ada Byron", "email": "ada@example.com"}),
            )],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    index_all(&store).await;
    assert_eq!(find(&store, "byron").await, ["1"]);
    assert!(find(&store, "lovelace").await.is_empty());
    // A deletion: gone from the index.
    store
        .delete_records(Deletion {
            connection_id: conn,
            run_id: run,
            entity: "Person",
            external_ids: &["1".to_owned()],
            cascade: &[],
            now: t0() + Duration::hours(1),
        })
        .await
        .unwrap();
    index_all(&store).await;
    assert!(find(&store, "byron").await.is_empty());
    assert_eq!(find(&store, "ada").await, ["2"]);
    // Nothing new: a step reads nothing and keeps its cursor.
    let step = store.index_search(100).await.unwrap();
    assert_eq!((step.changes, step.rebuilt), (0, false));
    assert_eq!(step.cursor, store.feed_head().await.unwrap());
    // A removed connection's records leave the index with it.
    assert!(store.remove_connection("main").await.unwrap());
    assert!(find(&store, "babbage").await.is_empty());
}

async fn search_index_is_rebuilt_past_the_feed_horizon(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    store
        .apply_page(page(
            conn,
            run,
            &[person("1", "Ann", None), person("2", "Bob", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    store
        .apply_page(PageWrite {
            now: t0() + Duration::days(40),
            ..page(
                conn,
                run,
                &[person("3", "Cy", None)],
                &[],
                &Cursor::start(),
                false,
            )
        })
        .await
        .unwrap();
    // The first two feed rows expire before the indexer has read them.
    assert_eq!(
        store
            .expire_changes(t0() + Duration::days(10))
            .await
            .unwrap(),
        2
    );
    let step = store.index_search(100).await.unwrap();
    assert!(step.rebuilt);
    assert_eq!(step.cursor, store.feed_head().await.unwrap());
    assert_eq!(find(&store, "ann").await, ["1"]);
    assert_eq!(find(&store, "cy").await, ["3"]);
    // The records API still lists them all from the start.
    let (all, _) = read_records(&store, conn, 0, 10).await;
    assert_eq!(all.len(), 3);
}

/// A writer that changes a record and commits after a reader has paged
/// past the positions given so far: the record comes after the reader's
/// cursor, with its new content, once. (SQLite has one writer at a time.)
async fn a_record_committed_late_is_paged_after_the_cursor(store: Arc<dyn Store>, url: &str) {
    use sqlx::Connection as _;
    if !url.starts_with("postgres") {
        return;
    }
    let (conn, run) = setup(&store).await;
    store
        .apply_page(page(
            conn,
            run,
            &[person("early", "Old", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    let (before, _) = read_records(&store, conn, 0, 10).await;
    assert_eq!(before.len(), 1);
    // A writer updates the record (and writes its feed row, as a page
    // does) but does not commit yet ...
    let mut early = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = early.begin().await.unwrap();
    let record_id: i64 = sqlx::query_scalar(
        "UPDATE records SET canonical = '{\"name\": \"New\"}', content_hash = 'new' \
         WHERE connection_id = $1 AND external_id = 'early' RETURNING id",
    )
    .bind(conn)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at) \
         VALUES ($1, $2, 'Person', 'early', 'updated', 'new', $3, now())",
    )
    .bind(conn)
    .bind(record_id)
    .bind(run)
    .execute(&mut *tx)
    .await
    .unwrap();
    // ... while a page commits after it, and a reader pages to the end.
    store
        .apply_page(page(
            conn,
            run,
            &[person("later", "L", None)],
            &[],
            &Cursor::start(),
            false,
        ))
        .await
        .unwrap();
    let (seen, cursor) = read_records(&store, conn, 0, 10).await;
    assert_eq!(
        seen.iter()
            .map(|r| (
                r.external_id.as_str(),
                r.canonical["name"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("early", "Old"), ("later", "L")]
    );
    // The writer commits now: its change is numbered after the cursor,
    // and so is the record's version.
    tx.commit().await.unwrap();
    let (next, end) = read_records(&store, conn, cursor, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].external_id, "early");
    assert_eq!(next[0].canonical, json!({"name": "New"}));
    assert!(next[0].version > cursor);
    // The feed after the same cursor holds exactly that change.
    let fed = store.changes(Some(conn), cursor, 10).await.unwrap();
    assert_eq!(fed.len(), 1);
    assert_eq!(fed[0].seq, next[0].version);
    assert_eq!(end, next[0].version);
    // From the start, every record once, at its latest version.
    let (all, _) = read_records(&store, conn, 0, 1).await;
    assert_eq!(
        all.iter()
            .map(|r| r.external_id.as_str())
            .collect::<Vec<_>>(),
        ["later", "early"]
    );
}

/// A subscription of connection `conn` following the feed after `cursor`.
async fn subscribe(
    store: &Arc<dyn Store>,
    conn: i64,
    entity: Option<&str>,
    finished: bool,
    cursor: i64,
) -> Subscription {
    store
        .add_subscription(&NewSubscription {
            connection_id: conn,
            entity,
            url: "http://127.0.0.1:9/hook",
            sealed_secret: b"sealed-secret",
            wants_changes: true,
            wants_finished: finished,
            cursor,
            now: t0(),
        })
        .await
        .unwrap()
}

fn message(id: &str) -> NewMessage {
    NewMessage {
        message_id: id.to_owned(),
        event: "changes".to_owned(),
        body: format!(r#"{{"id":"{id}"}}"#),
    }
}

async fn subscriptions_are_kept_disabled_enabled_and_removed(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let all = subscribe(&store, conn, None, true, 7).await;
    let people = subscribe(&store, conn, Some("Person"), false, 0).await;
    assert_eq!(all.cursor, 7);
    assert_eq!(all.sealed_secret, b"sealed-secret");
    assert_eq!(
        all.events(),
        [SubscriptionEvent::Changes, SubscriptionEvent::SyncFinished]
    );
    assert_eq!(people.entity.as_deref(), Some("Person"));
    assert_eq!(people.events(), [SubscriptionEvent::Changes]);
    assert!(!format!("{all:?}").contains("sealed"), "no secret in Debug");
    assert_eq!(
        store.subscriptions().await.unwrap(),
        [all.clone(), people.clone()]
    );
    assert_eq!(store.subscription(all.id).await.unwrap(), Some(all.clone()));

    // Disabled with a reason; enabled again without one.
    let later = t0() + Duration::seconds(1);
    assert!(
        store
            .set_subscription_state(all.id, SubscriptionState::Disabled, Some("410 Gone"), later)
            .await
            .unwrap()
    );
    let disabled = store.subscription(all.id).await.unwrap().unwrap();
    assert_eq!(disabled.state, SubscriptionState::Disabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("410 Gone"));
    assert_eq!(disabled.updated_at, later);
    assert!(
        store
            .set_subscription_state(all.id, SubscriptionState::Active, Some("x"), later)
            .await
            .unwrap()
    );
    let enabled = store.subscription(all.id).await.unwrap().unwrap();
    assert_eq!(
        (enabled.state, enabled.disabled_reason),
        (SubscriptionState::Active, None)
    );
    assert!(
        !store
            .set_subscription_state(999, SubscriptionState::Active, None, later)
            .await
            .unwrap()
    );

    // Removed with its outbox; ids are never reused.
    store
        .enqueue_messages(&Enqueue {
            subscription_id: all.id,
            from_cursor: 7,
            to_cursor: 9,
            messages: &[message("msg_a")],
            finished: &[],
            now: t0(),
        })
        .await
        .unwrap();
    assert!(store.remove_subscription(all.id).await.unwrap());
    assert!(!store.remove_subscription(all.id).await.unwrap());
    assert!(store.subscription(all.id).await.unwrap().is_none());
    assert!(
        store
            .messages(&MessageQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    let again = subscribe(&store, conn, None, false, 0).await;
    assert!(again.id > people.id);

    // Removed with its connection.
    store
        .enqueue_messages(&Enqueue {
            subscription_id: people.id,
            from_cursor: 0,
            to_cursor: 1,
            messages: &[message("msg_b")],
            finished: &[],
            now: t0(),
        })
        .await
        .unwrap();
    assert!(store.remove_connection("main").await.unwrap());
    assert!(store.subscriptions().await.unwrap().is_empty());
    assert!(
        store
            .messages(&MessageQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_enqueue_moves_the_cursor_once(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let sub = subscribe(&store, conn, None, true, 0).await;
    store
        .finish_run(run, RunState::Succeeded, None, false, t0())
        .await
        .unwrap();
    let finished = store.finished_runs(sub.id).await.unwrap();
    assert_eq!(finished.len(), 1);
    let told = [finished[0].id];
    let batch = [message("msg_1"), message("msg_2")];
    let enqueue = Enqueue {
        subscription_id: sub.id,
        from_cursor: 0,
        to_cursor: 40,
        messages: &batch,
        finished: &told,
        now: t0(),
    };
    // Ten enqueuers of the same read at once: one writes, the others
    // find the cursor moved and write nothing.
    let tries =
        futures_util::future::join_all((0..10).map(|_| store.enqueue_messages(&enqueue))).await;
    assert_eq!(tries.iter().filter(|t| *t.as_ref().unwrap()).count(), 1);
    assert_eq!(
        store.subscription(sub.id).await.unwrap().unwrap().cursor,
        40
    );
    assert!(store.finished_runs(sub.id).await.unwrap().is_empty());
    let queued = store.messages(&MessageQuery::default()).await.unwrap();
    assert_eq!(
        queued
            .iter()
            .map(|m| (m.message_id.as_str(), m.state, m.attempts))
            .collect::<Vec<_>>(),
        [
            ("msg_1", MessageState::Pending, 0),
            ("msg_2", MessageState::Pending, 0)
        ]
    );
    assert_eq!(queued[0].body, r#"{"id":"msg_1"}"#);
    assert_eq!(queued[0].next_attempt_at, t0());

    // A run end already told cannot be told twice, even from the cursor
    // the subscription has.
    let again = Enqueue {
        from_cursor: 40,
        to_cursor: 41,
        messages: &[],
        ..enqueue
    };
    assert!(!store.enqueue_messages(&again).await.unwrap());
    assert_eq!(
        store.subscription(sub.id).await.unwrap().unwrap().cursor,
        40
    );
    // A disabled subscription is not enqueued to.
    store
        .set_subscription_state(sub.id, SubscriptionState::Disabled, Some("off"), t0())
        .await
        .unwrap();
    let plain = Enqueue {
        finished: &[],
        ..again
    };
    assert!(!store.enqueue_messages(&plain).await.unwrap());
    store
        .set_subscription_state(sub.id, SubscriptionState::Active, None, t0())
        .await
        .unwrap();
    assert!(store.enqueue_messages(&plain).await.unwrap());
    assert_eq!(
        store.subscription(sub.id).await.unwrap().unwrap().cursor,
        41
    );
}

async fn a_run_end_is_kept_once_for_each_subscription_that_wants_it(store: Arc<dyn Store>) {
    let (conn, run) = setup(&store).await;
    let wants = subscribe(&store, conn, None, true, 0).await;
    let changes_only = subscribe(&store, conn, None, false, 0).await;
    let other = store
        .ensure_connection(
            NewConnection {
                name: "other",
                adapter: "pco",
                base_url: "http://127.0.0.1:1",
            },
            t0(),
        )
        .await
        .unwrap();
    let elsewhere = subscribe(&store, other.id, None, true, 0).await;
    let end = t0() + Duration::seconds(9);
    store
        .finish_run(run, RunState::Failed, Some("boom"), true, end)
        .await
        .unwrap();
    // Ending it again (it is no longer running) tells nothing more.
    store
        .finish_run(run, RunState::Succeeded, None, false, end)
        .await
        .unwrap();
    let told = store.finished_runs(wants.id).await.unwrap();
    assert_eq!(
        told.iter()
            .map(|f| (f.subscription_id, f.run_id, f.state, f.finished_at))
            .collect::<Vec<_>>(),
        [(wants.id, run, RunState::Failed, end)]
    );
    assert!(
        store
            .finished_runs(changes_only.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.finished_runs(elsewhere.id).await.unwrap().is_empty());

    // A resumed run that ends again is told again; a reconciliation that
    // waits for approval is told when a person ends it.
    let resumed = store
        .start_run(conn, RunKind::Full, None, None, t0())
        .await
        .unwrap();
    assert_eq!(resumed.run().id, run);
    store
        .finish_run(run, RunState::Succeeded, None, false, end)
        .await
        .unwrap();
    let reconcile = store
        .start_run(conn, RunKind::Reconcile, None, None, t0())
        .await
        .unwrap()
        .run()
        .id;
    store
        .finish_run(reconcile, RunState::WaitingApproval, None, false, end)
        .await
        .unwrap();
    assert_eq!(store.finished_runs(wants.id).await.unwrap().len(), 2);
    assert!(
        store
            .transition_run(
                reconcile,
                RunState::WaitingApproval,
                RunState::Cancelled,
                None,
                end
            )
            .await
            .unwrap()
    );
    let told = store.finished_runs(wants.id).await.unwrap();
    assert_eq!(
        told.iter().map(|f| (f.run_id, f.state)).collect::<Vec<_>>(),
        [
            (run, RunState::Failed),
            (run, RunState::Succeeded),
            (reconcile, RunState::Cancelled)
        ]
    );
}

async fn messages_go_out_in_order_one_at_a_time_per_subscription(store: Arc<dyn Store>) {
    let (conn, _) = setup(&store).await;
    let a = subscribe(&store, conn, None, false, 0).await;
    let b = subscribe(&store, conn, None, false, 0).await;
    for (sub, ids) in [(&a, ["a1", "a2", "a3"]), (&b, ["b1", "b2", "b3"])] {
        let batch: Vec<NewMessage> = ids.iter().map(|id| message(id)).collect();
        assert!(
            store
                .enqueue_messages(&Enqueue {
                    subscription_id: sub.id,
                    from_cursor: 0,
                    to_cursor: 3,
                    messages: &batch,
                    finished: &[],
                    now: t0(),
                })
                .await
                .unwrap()
        );
    }
    let lease = t0() + Duration::seconds(75);
    let ids = |claimed: &[tributary_store::Message]| {
        claimed
            .iter()
            .map(|m| (m.message_id.clone(), m.attempts))
            .collect::<Vec<_>>()
    };
    // Only the oldest pending message of each subscription; the claim
    // counts the attempt and holds it until the lease ends.
    let first = store.claim_messages(t0(), lease, 10).await.unwrap();
    assert_eq!(ids(&first), [("a1".into(), 1), ("b1".into(), 1)]);
    assert!(first.iter().all(|m| m.next_attempt_at == lease));
    assert!(
        store
            .claim_messages(t0(), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_message_due().await.unwrap(), Some(lease));

    // a1 delivered: a2 is next. b1 failed: retried at 5 s, b2 waits.
    let now = t0() + Duration::seconds(1);
    assert!(
        store
            .settle_message(first[0].id, 1, &Attempted::Delivered { status: 204 }, now)
            .await
            .unwrap()
    );
    let retry_at = now + Duration::seconds(5);
    assert!(
        store
            .settle_message(
                first[1].id,
                1,
                &Attempted::Retry {
                    status: Some(500),
                    error: "500 Internal Server Error".into(),
                    at: retry_at,
                },
                now,
            )
            .await
            .unwrap()
    );
    // A stale settle (an attempt number not the current one) is ignored.
    assert!(
        !store
            .settle_message(first[1].id, 7, &Attempted::Delivered { status: 200 }, now)
            .await
            .unwrap()
    );
    assert_eq!(store.next_message_due().await.unwrap(), Some(t0()));
    let second = store.claim_messages(now, lease, 10).await.unwrap();
    assert_eq!(ids(&second), [("a2".into(), 1)]);
    assert!(
        store
            .claim_messages(retry_at, lease, 10)
            .await
            .unwrap()
            .iter()
            .all(|m| m.message_id == "b1" && m.attempts == 2)
    );

    // Released (the process stops): due at once, the attempt uncounted.
    assert!(store.release_message(second[0].id, 1, now).await.unwrap());
    let again = store.claim_messages(now, lease, 10).await.unwrap();
    assert_eq!(ids(&again), [("a2".into(), 1)]);
    // Dead: the next message goes.
    assert!(
        store
            .settle_message(
                again[0].id,
                1,
                &Attempted::Dead {
                    status: None,
                    error: "timed out".into()
                },
                now
            )
            .await
            .unwrap()
    );
    let third = store.claim_messages(now, lease, 10).await.unwrap();
    assert_eq!(ids(&third), [("a3".into(), 1)]);

    // 410 Gone disables the subscription in the same transaction; its
    // messages wait, due.
    assert!(
        store
            .settle_message(
                third[0].id,
                1,
                &Attempted::Gone {
                    error: "the receiver answered 410 Gone".into()
                },
                now
            )
            .await
            .unwrap()
    );
    let gone = store.subscription(a.id).await.unwrap().unwrap();
    assert_eq!(gone.state, SubscriptionState::Disabled);
    assert_eq!(
        gone.disabled_reason.as_deref(),
        Some("the receiver answered 410 Gone")
    );
    let later = t0() + Duration::hours(1);
    assert!(
        store
            .claim_messages(later, later + Duration::seconds(75), 10)
            .await
            .unwrap()
            .iter()
            .all(|m| m.subscription_id == b.id)
    );

    // Figures: pending, delivered, dead and the last error.
    let stats = store.outbox_stats().await.unwrap();
    let of_a = stats.iter().find(|s| s.subscription_id == a.id).unwrap();
    assert_eq!((of_a.pending, of_a.delivered, of_a.dead), (1, 1, 1));
    assert_eq!(
        of_a.last_error.as_deref(),
        Some("the receiver answered 410 Gone")
    );
    assert_eq!(of_a.last_delivered_at, Some(now));

    // Replayed dead letters go out again once the subscription is enabled.
    assert_eq!(
        store
            .replay_messages(a.id, &["nope".into()], later)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.replay_messages(a.id, &[], later).await.unwrap(), 1);
    let replayed = store
        .messages(&MessageQuery {
            subscription_id: Some(a.id),
            ..MessageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        replayed
            .iter()
            .map(|m| (m.message_id.as_str(), m.state, m.attempts))
            .collect::<Vec<_>>(),
        [
            ("a1", MessageState::Delivered, 1),
            ("a2", MessageState::Pending, 0),
            ("a3", MessageState::Pending, 1)
        ]
    );
    store
        .set_subscription_state(a.id, SubscriptionState::Active, None, later)
        .await
        .unwrap();
    let resumed = store.claim_messages(later, later, 10).await.unwrap();
    assert!(resumed.iter().any(|m| m.message_id == "a2"));

    // Delivered messages are forgotten after the retention.
    assert_eq!(store.expire_messages(now).await.unwrap(), 0);
    assert_eq!(store.expire_messages(later).await.unwrap(), 1);
}

/// Several stores on one database (on PostgreSQL, processes with
/// connections of their own) claim at once: each message is taken once.
async fn concurrent_claimers_never_take_one_message(store: Arc<dyn Store>, url: &str) {
    let (conn, _) = setup(&store).await;
    let mut subs = Vec::new();
    for n in 0..8 {
        let sub = subscribe(&store, conn, None, false, 0).await;
        let batch: Vec<NewMessage> = (0..5).map(|i| message(&format!("m{n}_{i}"))).collect();
        store
            .enqueue_messages(&Enqueue {
                subscription_id: sub.id,
                from_cursor: 0,
                to_cursor: 5,
                messages: &batch,
                finished: &[],
                now: t0(),
            })
            .await
            .unwrap();
        subs.push(sub);
    }
    let mut stores = vec![store.clone()];
    for _ in 0..2 {
        stores.push(tributary_store::open(url).await.unwrap());
    }
    let claimers = stores.iter().map(|store| {
        let store = store.clone();
        async move {
            let mut taken = Vec::new();
            let lease = t0() + Duration::seconds(75);
            for _ in 0..200 {
                let claimed = store.claim_messages(t0(), lease, 3).await.unwrap();
                for m in &claimed {
                    taken.push(m.message_id.clone());
                    assert!(
                        store
                            .settle_message(
                                m.id,
                                m.attempts,
                                &Attempted::Delivered { status: 200 },
                                t0()
                            )
                            .await
                            .unwrap()
                    );
                }
                if claimed.is_empty() && store.next_message_due().await.unwrap().is_none() {
                    break;
                }
            }
            taken
        }
    });
    let taken: Vec<String> = futures_util::future::join_all(claimers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut unique = taken.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(taken.len(), 40, "{taken:?}");
    assert_eq!(unique.len(), 40);
}
