//! `tributary runs list | show` as a user reads them: a database with a
//! succeeded run and a failed, resumable one.

use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::BIN;

fn tributary(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("TRIBUTARY_TOKEN", "sim-token")
        .env_remove("TRIBUTARY_DB")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_and_shown_as_stored() {
    let sim = common::simulator(120).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    let url = sim.base_url();
    let ok = tributary(&[
        "sync",
        "--db",
        &db,
        "--base-url",
        &url,
        "--rate-limit",
        "off",
    ]);
    assert!(ok.status.success());
    // A second connection whose API is down at once: failed, resumable.
    sim.simulator().set_outage(Some(0));
    let failed = tributary(&[
        "sync",
        "--db",
        &db,
        "--base-url",
        &url,
        "--rate-limit",
        "off",
        "--connection",
        "other",
        "--retry-budget",
        "0",
    ]);
    assert_eq!(failed.status.code(), Some(1));

    let out = tributary(&["runs", "list", "--db", &db, "--json"]);
    assert!(out.status.success());
    let runs: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], 2, "newest first");
    assert_eq!(runs[0]["connection"], "other");
    assert_eq!(runs[0]["state"], "failed");
    assert_eq!(runs[0]["resumable"], true);
    assert_eq!(runs[1]["state"], "succeeded");
    assert_eq!(runs[1]["kind"], "full");
    assert!(runs[1]["counts"]["created"].as_i64().unwrap() > 120);

    let out = tributary(&["runs", "list", "--db", &db, "--connection", "pco"]);
    let text = stdout(&out);
    assert!(text.starts_with("   RUN  CONNECTION"), "{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "the header and pco's one run: {text}"
    );
    assert!(text.contains(" pco "), "{text}");

    let out = tributary(&["runs", "show", "2", "--db", &db]);
    let text = stdout(&out);
    assert!(
        text.starts_with("run 2 of connection `other`: full sync, failed (resumable)\n"),
        "{text}"
    );
    assert!(
        text.contains("  resumable: the next sync of its kind resumes it from its checkpoints\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "    Person                 failed   0 records in 0 pages: 0 created (0 restored), 0 updated, 0 unchanged, 0 deleted, 0 quarantined: GET "
        ),
        "{text}"
    );
    let out = tributary(&["runs", "show", "1", "--db", &db, "--json"]);
    let run: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let entities = run["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 11, "People and Groups entities");
    assert!(entities.iter().all(|e| e["state"] == "done"), "{run}");
    // Per entity, what its pages did: a first sync creates every record.
    let people = entities.iter().find(|e| e["entity"] == "Person").unwrap();
    assert_eq!(people["created"], 120, "{people}");
    assert_eq!(people["records"], 120, "{people}");
    assert_eq!(
        (people["updated"].as_i64(), people["deleted"].as_i64()),
        (Some(0), Some(0))
    );
    let created: i64 = entities
        .iter()
        .map(|e| e["created"].as_i64().unwrap())
        .sum();
    assert_eq!(created, run["counts"]["created"].as_i64().unwrap(), "{run}");

    let out = tributary(&["runs", "show", "99", "--db", &db]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no run 99 (see `tributary runs list`)\n"
    );
    sim.shutdown().await;
}
