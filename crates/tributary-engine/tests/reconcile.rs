//! Reconciliation against the real simulator: records gone from the source
//! are marked deleted with what belongs to them, a merge ends exactly as
//! the source, a listing cut short deletes nothing, and the mass-delete
//! guard holds deletions until a person approves or rejects them.

mod common;

use std::time::Duration;

use common::{harness, harness_with, pco};
use tributary_core::{ChangeKind, RunKind, RunState};
use tributary_engine::{EngineOptions, Error};
use tributary_sim::ResourceKind;

fn options() -> EngineOptions {
    EngineOptions {
        parent_batch: 16,
        ..EngineOptions::default()
    }
}

#[tokio::test]
async fn gone_records_are_deleted_with_what_belongs_to_them_and_a_merge_ends_as_the_source() {
    let h = harness(300, pco(), 100, Duration::from_secs(5)).await;
    h.sync(RunKind::Full).await;
    let sim = h.sim.simulator();
    // A person (with emails, phones, an address and a membership), an
    // email on its own, a household (with its memberships), and a merge.
    let person = h.id(ResourceKind::Person, 5);
    sim.delete(ResourceKind::Person, person).unwrap();
    let email = h.id(ResourceKind::Email, 40);
    sim.delete(ResourceKind::Email, email).unwrap();
    let household = h.id(ResourceKind::Household, 7);
    sim.delete(ResourceKind::Household, household).unwrap();
    let (keep, merged) = (
        h.id(ResourceKind::Person, 20),
        h.id(ResourceKind::Person, 21),
    );
    sim.merge(keep, merged).unwrap();
    let feed_before = h.store.changes(None, 0, 100_000).await.unwrap().len();

    let report = h.sync(RunKind::Reconcile).await;
    assert_eq!(report.run.kind, RunKind::Reconcile);
    // Live records are exactly the source's, moved children included.
    h.assert_current(&[]).await;
    let deletions = report.deletions.clone().unwrap();
    assert!(
        deletions.held.is_empty() && deletions.skipped.is_empty(),
        "{deletions:?}"
    );
    assert_eq!(deletions.deleted.get("Person"), Some(&2), "{deletions:?}");
    // Each record gone is confirmed by one request, unless it belongs to a
    // record confirmed gone: the deleted person's phones and addresses
    // need none; the lone email and the household one each.
    assert_eq!(
        deletions
            .confirmations
            .iter()
            .map(|(e, n)| (e.as_str(), *n))
            .collect::<Vec<_>>(),
        [("Email", 1), ("Household", 1), ("Person", 2)],
        "{deletions:?}"
    );
    assert!(
        deletions
            .deleted
            .get("HouseholdMembership")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    // Soft deletion: the rows stay, marked, with a `deleted` feed row each.
    let gone = h
        .store
        .record(h.connection.id, "Person", &person.to_string())
        .await
        .unwrap()
        .unwrap();
    assert!(gone.deleted_at.is_some());
    let feed = h.store.changes(None, 0, 100_000).await.unwrap();
    let deleted_rows = feed[feed_before..]
        .iter()
        .filter(|c| c.kind == ChangeKind::Deleted)
        .count() as i64;
    assert_eq!(deleted_rows, deletions.deleted.values().sum::<i64>());
    assert_eq!(report.run.counts.deleted, deleted_rows);
    // A second reconciliation finds nothing more.
    let again = h.sync(RunKind::Reconcile).await;
    assert!(again.deletions.unwrap().deleted.is_empty());
    assert_eq!((again.run.counts.created, again.run.counts.updated), (0, 0));
}

#[tokio::test]
async fn a_listing_that_fails_on_its_last_page_deletes_nothing() {
    let h = harness_with(
        250,
        pco(),
        100,
        EngineOptions {
            retry_budget: 0,
            ..options()
        },
    )
    .await;
    h.sync(RunKind::Full).await;
    let sim = h.sim.simulator();
    let person = h.id(ResourceKind::Person, 3);
    sim.delete(ResourceKind::Person, person).unwrap();
    // People: 3 pages; the third fails.
    sim.set_outage(Some(2));
    let only = ["Person".to_owned()];
    let report = h.try_sync_of(RunKind::Reconcile, Some(&only)).await;
    assert_eq!(report.run.state, RunState::Failed);
    let deletions = report.deletions.unwrap();
    assert!(deletions.deleted.is_empty(), "{deletions:?}");
    assert!(
        deletions.skipped["Person"].starts_with("its listing did not complete"),
        "{deletions:?}"
    );
    let stored = h
        .store
        .record(h.connection.id, "Person", &person.to_string())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.deleted_at.is_none(), "nothing deleted");
    // The API is back: the next reconciliation deletes it.
    sim.set_outage(None);
    let report = h.try_sync_of(RunKind::Reconcile, Some(&only)).await;
    assert_eq!(report.run.state, RunState::Succeeded, "{:?}", report.run);
    assert_eq!(report.deletions.unwrap().deleted.get("Person"), Some(&1));
}

#[tokio::test]
async fn the_guard_holds_mass_deletions_until_a_person_approves_or_rejects_them() {
    let h = harness(200, pco(), 100, Duration::from_secs(5)).await;
    h.sync(RunKind::Full).await;
    let sim = h.sim.simulator();
    // 30 of 200 people (15 % > 10 %) leave the source.
    let ids: Vec<u64> = (0..30)
        .map(|n| h.id(ResourceKind::Person, 100 + n))
        .collect();
    for id in &ids {
        sim.delete(ResourceKind::Person, *id).unwrap();
    }
    let held = h.try_sync(RunKind::Reconcile).await;
    assert_eq!(held.run.state, RunState::WaitingApproval, "{:?}", held.run);
    let message = held.run.error.clone().unwrap();
    assert!(
        message.contains("Person 30 of 200 (15.0%)")
            && message.contains(&format!("tributary runs approve {}", held.run.id)),
        "{message}"
    );
    assert_eq!(held.run.counts.deleted, 0);
    let live = |id: u64| {
        let store = h.store.clone();
        let connection = h.connection.id;
        async move {
            store
                .record(connection, "Person", &id.to_string())
                .await
                .unwrap()
                .unwrap()
                .deleted_at
                .is_none()
        }
    };
    assert!(live(ids[0]).await, "nothing deleted while held");
    // Only a waiting run can be approved; a finished one says why.
    let manifest = pco();
    let first_run = 1;
    let refused = h.engine.approve(first_run, &manifest).await.unwrap_err();
    assert!(
        matches!(refused, Error::NotWaiting(1, "succeeded")),
        "{refused}"
    );
    assert!(matches!(
        h.engine.approve(999, &manifest).await.unwrap_err(),
        Error::RunNotFound(999)
    ));

    // Rejected: nothing deleted, the run cancelled.
    let rejected = h.engine.reject(held.run.id).await.unwrap();
    assert_eq!(rejected.state, RunState::Cancelled);
    assert!(live(ids[0]).await);
    assert!(matches!(
        h.engine.reject(held.run.id).await.unwrap_err(),
        Error::NotWaiting(_, "cancelled")
    ));

    // Held again, then approved: deleted, with what belongs to them.
    let held = h.try_sync(RunKind::Reconcile).await;
    assert_eq!(held.run.state, RunState::WaitingApproval);
    let approved = h.engine.approve(held.run.id, &manifest).await.unwrap();
    assert_eq!(approved.state, RunState::Succeeded);
    assert!(approved.counts.deleted >= 30, "{:?}", approved.counts);
    for id in &ids {
        assert!(!live(*id).await);
    }
    h.assert_current(&[]).await;
}
