//! Two `tributary sync`s of one connection started at the same moment, as a
//! cron job and a person at a terminal would: on a fresh database (both
//! migrate it at once) and on an existing one, on SQLite and PostgreSQL.
//! One runs the sync; the other is refused at once with exit code 3 and a
//! message naming the process that holds the connection — or, when the
//! first had already finished, runs a sync of its own. Either way no
//! migration fails, every stored run ends in the state its process
//! reported, and the database equals the source.

use std::process::{Command, Stdio};

use tributary_core::RunState;
use tributary_sim::SimConfig;

mod common;
use common::{BIN, assert_same};

const TRIALS: usize = 10;

fn sync(db: &str, url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "sync",
        "--db",
        db,
        "--base-url",
        url,
        "--connection",
        "race",
    ])
    .args(["--rate-limit", "off"])
    .env("TRIBUTARY_TOKEN", "sim-token")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// One trial: both processes started back to back, then waited for.
/// Returns how many of the two were refused.
async fn race(db: &str, sim: &tributary_sim::SimHandle, one: u64, trial: usize) -> usize {
    let url = sim.base_url();
    let before = sim.simulator().stats().total;
    let runs_before = match tributary_store::open_read_only(db).await {
        Ok(store) => store.runs(None, 1_000).await.unwrap().len(),
        Err(_) => 0, // a fresh database
    };
    let first = sync(db, &url).spawn().unwrap();
    let second = sync(db, &url).spawn().unwrap();
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut ran = 0;
    let mut refused = 0;
    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("migration"),
            "trial {trial}: no migration error: {stderr}"
        );
        match out.status.code() {
            Some(0) => ran += 1,
            Some(3) => {
                refused += 1;
                assert!(
                    stderr.starts_with("error: connection `race` is busy: another process (pid ")
                        && stderr.contains(" is running its sync; try again when it has finished"),
                    "trial {trial}: {stderr}"
                );
            }
            other => panic!("trial {trial}: exit {other:?}: {stderr}"),
        }
    }
    assert!(ran >= 1, "trial {trial}: one of them ran the sync");

    // The stored runs are the truth: one per process that ran, each
    // succeeded (none left running, none failed by the other process).
    let store = tributary_store::open_read_only(db).await.unwrap();
    let runs = store.runs(None, 1_000).await.unwrap();
    assert_eq!(
        runs.len(),
        runs_before + ran,
        "trial {trial}: one run per process that ran ({ran} ran, {refused} refused)"
    );
    for run in &runs {
        assert_eq!(run.state, RunState::Succeeded, "trial {trial}: {run:?}");
    }
    store.close().await;
    assert_same(db, &sim.simulator());

    // A refused process sent nothing: the requests are one sync's.
    if refused == 1 {
        let used = sim.simulator().stats().total - before;
        assert!(
            used <= one + one / 10,
            "trial {trial}: {used} requests against {one} for one sync"
        );
    }
    refused
}

fn config() -> SimConfig {
    SimConfig {
        seed: 5,
        people: 600,
        ..SimConfig::default()
    }
}

async fn trials(fresh_db: impl Fn(usize) -> String) {
    let sim = tributary_sim::serve(config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // What one sync costs, into a database of its own.
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("alone.db").display().to_string();
    let before = sim.simulator().stats().total;
    assert!(sync(&alone, &sim.base_url()).status().unwrap().success());
    let one = sim.simulator().stats().total - before;
    let mut refused = 0;
    for trial in 0..TRIALS {
        refused += race(&fresh_db(trial), &sim, one, trial).await;
    }
    // Started together, a sync takes long enough that they meet: the
    // refusal path is what these trials are for.
    assert!(
        refused >= 3,
        "only {refused} of {TRIALS} trials had the two processes meet"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_at_once_on_fresh_sqlite_files() {
    let dir = tempfile::tempdir().unwrap();
    trials(|trial| {
        dir.path()
            .join(format!("fresh-{trial}.db"))
            .display()
            .to_string()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_at_once_on_one_existing_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("existing.db").display().to_string();
    trials(|_| db.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_at_once_on_fresh_postgres_databases() {
    trials(|_| tributary_testkit::shared().create_database("race").unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_at_once_on_one_existing_postgres_database() {
    let db = tributary_testkit::shared()
        .create_database("race_existing")
        .unwrap();
    trials(|_| db.clone()).await;
}
