//! Several pages of one list fetched at once: against a slow API the pages
//! of a list that reports its size are fetched ahead, a window of them at
//! once, and still commit in order, each once; pages fetched past the end
//! of a list that shrank meanwhile are dropped.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Harness, harness_of, pco};
use tributary_core::{RunKind, RunState};
use tributary_engine::{EngineOptions, Progress};
use tributary_sim::{Faults, ResourceKind, SimConfig, Simulator};
use tributary_store::PageOutcome;

const PAGE: u32 = 10;

/// A simulated account of `people` whose every answer takes `latency`.
async fn slow_account(people: usize, latency: Duration) -> Harness {
    let config = SimConfig {
        seed: 23,
        people,
        faults: Faults {
            latency,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    harness_of(config, pco(), PAGE, EngineOptions::default()).await
}

fn people_ids(h: &Harness) -> BTreeSet<String> {
    let sim = h.sim.simulator();
    let n = sim.count(ResourceKind::Person);
    sim.ids(ResourceKind::Person, 0, n)
        .into_iter()
        .map(|id| id.to_string())
        .collect()
}

async fn stored_people(h: &Harness) -> BTreeSet<String> {
    h.stored()
        .await
        .into_keys()
        .filter(|(entity, _)| entity == "Person")
        .map(|(_, id)| id)
        .collect()
}

async fn sync_people(h: &Harness, progress: Arc<dyn Progress>) -> tributary_engine::RunReport {
    let lock = h.engine.lock(&h.connection.name).await.unwrap();
    h.engine
        .sync_locked(
            &lock,
            &h.connection,
            &h.source,
            RunKind::Full,
            Some(&["Person".to_owned()]),
            progress,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_list_is_fetched_several_pages_at_once_each_committed_once() {
    let h = slow_account(300, Duration::from_millis(15)).await;
    let report = sync_people(&h, Arc::new(tributary_engine::NoProgress)).await;
    assert_eq!(report.run.state, RunState::Succeeded, "{:?}", report.run);

    let people = &report.entities[0];
    let pages = 300 / i64::from(PAGE);
    assert_eq!((people.records, people.pages), (300, pages));
    // Every request was a page that committed: nothing fetched twice,
    // nothing fetched and thrown away.
    assert_eq!(people.requests, pages as u64);
    assert_eq!(stored_people(&h).await, people_ids(&h));
    assert_eq!(h.stored().await.len(), 300);
    let stats = h.sim.simulator().stats();
    assert!(
        stats.peak_in_flight >= 3,
        "the commits waited on a slow API, yet at most {} requests were out at once",
        stats.peak_in_flight
    );
    assert_eq!(stats.total, pages as u64);
}

/// Deletes the last `count` people of the list once `after` pages have
/// committed (the window is wide by then): the pages fetched ahead past
/// the new end must not count.
struct Shrink {
    sim: Simulator,
    count: usize,
    after: usize,
    committed: AtomicUsize,
}

impl Progress for Shrink {
    fn page_committed(&self, _: &str, _: &PageOutcome, _: i64, _: Option<i64>) {
        if self.committed.fetch_add(1, Ordering::SeqCst) + 1 != self.after {
            return;
        }
        let n = self.sim.count(ResourceKind::Person);
        for id in self
            .sim
            .ids(ResourceKind::Person, n - self.count, self.count)
        {
            self.sim.delete(ResourceKind::Person, id).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_shrinks_while_pages_are_fetched_ahead_ends_where_it_ends() {
    let h = slow_account(200, Duration::from_millis(15)).await;
    let before = people_ids(&h);
    let shrink = Arc::new(Shrink {
        sim: h.sim.simulator(),
        count: 100,
        after: 8,
        committed: AtomicUsize::new(0),
    });
    let report = sync_people(&h, shrink).await;
    assert_eq!(report.run.state, RunState::Succeeded, "{:?}", report.run);

    let after = people_ids(&h);
    assert_eq!(after.len(), 100);
    let stored = stored_people(&h).await;
    // Everyone still there is stored; anyone else stored was there when
    // the sync began (read before the deletion reached the list).
    assert!(
        after.is_subset(&stored),
        "a person still at the source is missing"
    );
    assert!(stored.is_subset(&before), "a record that never existed");
    let people = &report.entities[0];
    assert_eq!(
        people.records as usize,
        stored.len(),
        "a record counted twice"
    );
    // At most one window of requests went past the list's new end.
    let widest = h.source.manifest().entities["Person"].concurrency as u64;
    assert!(
        people.requests <= people.pages as u64 + widest,
        "{} requests for {} pages",
        people.requests,
        people.pages
    );
}
