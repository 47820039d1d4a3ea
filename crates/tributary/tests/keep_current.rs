//! Keeping a connection current, as a user runs it: the real binary
//! against the simulator. A full sync; then changes of every kind at the
//! source (updates, creations, deletions, a merge, child-only changes); a
//! delta makes the database equal to the source but for the deletions; a
//! reconciliation makes it equal. Mass deletions wait for `runs approve`.

use std::process::{Command, Output};

use serde_json::json;
use tributary_sim::ResourceKind;

mod common;
use common::{BIN, assert_same};

fn sync(db: &str, url: &str, kind: &str) -> Output {
    Command::new(BIN)
        .args(["sync", "--db", db, "--base-url", url, "--connection", "pco"])
        .args(["--rate-limit", "off", "--kind", kind])
        .env("TRIBUTARY_TOKEN", "sim-token")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn id(sim: &tributary_sim::Simulator, kind: ResourceKind, n: usize) -> u64 {
    sim.ids(kind, n, 1)[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_delta_then_reconcile_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    keep_current(&dir.path().join("t.db").display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_delta_then_reconcile_on_postgres() {
    let url = tributary_testkit::shared().create_database("keep").unwrap();
    keep_current(&url).await;
}

async fn keep_current(db: &str) {
    let handle = common::seeded(5, 800).await;
    let url = handle.base_url();
    let sim = handle.simulator();

    // A delta before any full sync is a full sync, and says so.
    let first = sync(db, &url, "delta");
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("no full sync of this connection has finished yet: running a full sync instead of a delta"),
        "{}",
        text(&first)
    );
    assert!(
        text(&first).contains("(full) succeeded"),
        "{}",
        text(&first)
    );
    assert_same(db, &sim);

    // Changes of every kind.
    let person = id(&sim, ResourceKind::Person, 3);
    sim.update(
        ResourceKind::Person,
        person,
        &json!({"attributes": {"last_name": "Changed"}}),
    )
    .unwrap();
    let address = id(&sim, ResourceKind::Address, 9);
    sim.update(
        ResourceKind::Address,
        address,
        &json!({"attributes": {"street_line_1": "1 Only Street"}}),
    )
    .unwrap();
    sim.create(
        ResourceKind::PhoneNumber,
        &json!({"attributes": {"number": "555-0199"}, "relationships": {"person": person.to_string()}}),
    )
    .unwrap();
    sim.create(
        ResourceKind::Person,
        &json!({"attributes": {"first_name": "New", "last_name": "Comer"}}),
    )
    .unwrap();
    let leaver = id(&sim, ResourceKind::Person, 50);
    sim.delete(ResourceKind::Person, leaver).unwrap();
    let (keep, merged) = (
        id(&sim, ResourceKind::Person, 60),
        id(&sim, ResourceKind::Person, 61),
    );
    sim.merge(keep, merged).unwrap();

    // A delta: equal but for the deleted records (the leaver and the
    // merged person with their children and memberships).
    let delta = sync(db, &url, "delta");
    assert!(delta.status.success(), "{}", text(&delta));
    assert!(
        text(&delta).contains("(delta) succeeded"),
        "{}",
        text(&delta)
    );
    let expected = common::source(&sim);
    let actual = common::exported(db);
    for (key, value) in &expected {
        assert_eq!(actual.get(key), Some(value), "{key:?} after the delta");
    }
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        extra.contains(&&("Person".to_owned(), leaver.to_string()))
            && extra.contains(&&("Person".to_owned(), merged.to_string())),
        "{extra:?}"
    );

    // A reconciliation: equal.
    let reconcile = sync(db, &url, "reconcile");
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    assert!(
        text(&reconcile).contains("deleted (gone from the source): ")
            && text(&reconcile).contains("Person 2"),
        "{}",
        text(&reconcile)
    );
    assert_same(db, &sim);

    // Mass deletion: held, exit 4, nothing deleted; approved: applied.
    for n in 0..100 {
        let gone = id(&sim, ResourceKind::Person, 100 + n);
        sim.delete(ResourceKind::Person, gone).unwrap();
    }
    let held = sync(db, &url, "reconcile");
    assert_eq!(held.status.code(), Some(4), "{}", text(&held));
    assert!(
        text(&held).contains("the mass-delete guard held back deletions (")
            && text(&held).contains("Person 100 of 799 (12.5%)")
            && text(&held).contains("nothing deleted: held for approval (below)"),
        "{}",
        text(&held)
    );
    let run = text(&held)
        .split("tributary runs approve ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap()
        .to_owned();
    assert!(common::exported(db).len() > common::source(&sim).len());
    // A run that is not waiting cannot be approved: said, nothing changed.
    let wrong = Command::new(BIN)
        .args(["runs", "approve", "1", "--db", db])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("run 1 is succeeded, not waiting for approval"),
        "{}",
        text(&wrong)
    );
    let approve = Command::new(BIN)
        .args(["runs", "approve", &run, "--db", db])
        .output()
        .unwrap();
    assert!(approve.status.success(), "{}", text(&approve));
    assert!(
        text(&approve).contains("deletions approved and applied"),
        "{}",
        text(&approve)
    );
    assert_same(db, &sim);
    // A finished run cannot be cancelled: said, nothing changed.
    let cancel = Command::new(BIN)
        .args(["runs", "cancel", &run, "--db", db])
        .output()
        .unwrap();
    assert_eq!(cancel.status.code(), Some(2), "{}", text(&cancel));
    assert!(
        text(&cancel).contains(&format!(
            "run {run} is succeeded: only a run that is running or waiting for approval can be cancelled"
        )),
        "{}",
        text(&cancel)
    );
    // Each run says what it cost and what started it.
    let show = Command::new(BIN)
        .args(["runs", "show", "2", "--db", db])
        .output()
        .unwrap();
    assert!(
        text(&show).contains("requests, 0 retries; trigger: manual"),
        "{}",
        text(&show)
    );
    handle.shutdown().await;
}
