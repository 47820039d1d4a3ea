//! End to end, as a user runs it: the real `tributary` binary against the
//! simulator over loopback. The sync is killed with SIGKILL several times
//! mid-run, resumed by running the same command again, and the final
//! database is compared with the simulator record by record.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tributary_sim::SimConfig;

mod common;
use common::{BIN, assert_same, source};

fn sync_command(db: &str, url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["sync", "--db", db, "--base-url", url, "--connection", "e2e"])
        // The test's simulator has no rate limit.
        .args(["--rate-limit", "off"])
        .env("TRIBUTARY_TOKEN", "sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn store_of(db: &str) -> std::sync::Arc<dyn tributary_store::Store> {
    tributary_store::open(db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_syncs_resume_and_end_equal_to_the_source_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    killed_syncs_resume(&dir.path().join("e2e.db").display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_syncs_resume_and_end_equal_to_the_source_on_postgres() {
    let url = tributary_testkit::shared().create_database("e2e").unwrap();
    killed_syncs_resume(&url).await;
}

async fn killed_syncs_resume(db: &str) {
    let sim = tributary_sim::serve(
        SimConfig {
            seed: 11,
            people: 4_000,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let url = sim.base_url();

    // The requests an uninterrupted sync makes (into a database of its own).
    let baseline_dir = tempfile::tempdir().unwrap();
    let baseline_db = baseline_dir
        .path()
        .join("baseline.db")
        .display()
        .to_string();
    let before = sim.simulator().stats().total;
    assert!(sync_command(&baseline_db, &url).status().unwrap().success());
    let uninterrupted = sim.simulator().stats().total - before;
    let before = sim.simulator().stats().total;

    // Kill the sync at growing delays; each restart must resume the same run.
    let mut kills = 0;
    let mut committed_before = 0;
    for delay_ms in [150u64, 300, 450, 600, 750, 900] {
        let mut child = sync_command(db, &url).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_millis(delay_ms);
        let mut finished = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if finished {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let store = store_of(db).await;
        let runs = store.runs(None, 10).await.unwrap();
        if let Some(run) = runs.first() {
            assert_eq!(runs.len(), 1, "a killed run is resumed, never restarted");
            let committed = run.counts.created + run.counts.unchanged;
            assert!(committed >= committed_before, "progress is never lost");
            committed_before = committed;
            if run.state != tributary_core::RunState::Running {
                break; // killed after the run had finished
            }
        }
    }
    assert!(
        kills >= 2,
        "the sync must be killed mid-run at least twice (was {kills})"
    );

    let store = store_of(db).await;
    if store.runs(None, 1).await.unwrap()[0].state == tributary_core::RunState::Running {
        let status = sync_command(db, &url).status().unwrap();
        assert!(status.success(), "the resumed sync succeeds");
    }
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "one run, resumed {kills} times");
    assert_eq!(runs[0].state, tributary_core::RunState::Succeeded);
    // A kill costs only the requests in flight: fetched pages wait in the
    // spool, and the resumed run reads them from there. In flight: one
    // request per top-level entity (at most four at once) and the
    // household-membership requests (16 at once).
    let used = sim.simulator().stats().total - before;
    let extra = used.saturating_sub(uninterrupted);
    assert!(
        extra <= kills * (4 + 16),
        "{kills} kills cost {extra} extra requests ({used} against {uninterrupted} uninterrupted)"
    );

    let expected = source(&sim.simulator());
    assert_same(db, &sim.simulator());
    // Nothing duplicated: exactly one `created` change per record.
    let changes = store.changes(None, 0, 1_000_000).await.unwrap();
    assert_eq!(
        changes.len(),
        expected.len(),
        "one change per record, none repeated"
    );
    assert!(
        changes
            .iter()
            .all(|c| c.kind == tributary_core::ChangeKind::Created)
    );
    assert_eq!(runs[0].counts.created as usize, expected.len());

    // A second full sync is a no-op: nothing new in the feed.
    let status = sync_command(db, &url).status().unwrap();
    assert!(status.success());
    assert_eq!(
        store.changes(None, 0, 1_000_000).await.unwrap().len(),
        changes.len()
    );
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].counts.unchanged as usize, expected.len());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_errors_clearly() {
    // A bad manifest names the file, the line and the fix.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[adapter]\nname = \"x\"\nbase_url = \"https://x\"\n[auth]\nkinds = [\"bearer\"]\n[pagination]\nstyle = \"jsonapi_offset\"\npage_size = 10\npage_size_param = \"per_page\"\noffset_param = \"offset\"\n[entity.A]\nlist = \"/a\"\n[entity.A.relationships]\nb = { to = \"B\", kind = \"hard\" }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["manifest", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:14:", path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("points at `B`, which is not a declared entity"),
        "{stderr}"
    );
    assert!(stderr.contains("help: declared entities: A"), "{stderr}");

    let out = Command::new(BIN)
        .args(["manifest", "check", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // The built-in manifest round-trips through `manifest show` and `check`.
    let shown = Command::new(BIN)
        .args(["manifest", "show", "pco"])
        .output()
        .unwrap();
    let copy = dir.path().join("pco.toml");
    std::fs::write(&copy, shown.stdout).unwrap();
    let out = Command::new(BIN)
        .args(["manifest", "check"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("11 entities in 4 waves"));

    // The graph prints waves, and Mermaid / DOT sources.
    let out = Command::new(BIN)
        .args(["graph", "--adapter", "pco"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("wave 1: Campus, GroupType\nwave 2: Group, Person\n"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["graph", "--format", "mermaid"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("flowchart LR"));
    let out = Command::new(BIN)
        .args(["graph", "--format", "dot"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph"));

    // A sync against an unreachable or unauthorised API fails with exit code 1
    // and says why, without leaking the token.
    let sim = tributary_sim::serve(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = dir.path().join("x.db").display().to_string();
    let out = Command::new(BIN)
        .args(["sync", "--db", &db, "--base-url", &sim.base_url()])
        .env("TRIBUTARY_TOKEN", "wrong-secret-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("wrong-secret-token"),
        "the token never appears: {stderr}"
    );
    sim.shutdown().await;
}
