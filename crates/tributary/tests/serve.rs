//! `tributary serve`, as an operator runs it: a stored connection with a
//! schedule, the process answering /healthz and /readyz, its first
//! scheduled run (a full sync: no full sync had finished) stopped by
//! SIGTERM mid-way — the process exits within 10 seconds leaving the run
//! resumable — and the same run resumed by `tributary sync`, ending equal
//! to the source. Bad schedule input is refused with the fix, changing
//! nothing.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tributary_core::RunState;

mod common;
use common::{BIN, assert_same};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tributary(args: &[&str], key: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env("TRIBUTARY_SECRET_KEY", key)
        .env("TRIBUTARY_TOKEN", "sim-token")
        .output()
        .unwrap()
}

/// A plain HTTP GET on loopback: status and body.
fn get(address: &str, path: &str) -> (u16, String) {
    common::http(address, "GET", path, &[], b"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_schedule_stops_on_sigterm_and_the_run_resumes() {
    let handle = common::seeded(9, 20_000).await;
    let url = handle.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    let key = common::keygen();

    let add = tributary(
        &[
            "connections",
            "add",
            "pco",
            "--db",
            &db,
            "--auth",
            "bearer",
            "--base-url",
            &url,
        ],
        &key,
    );
    assert!(add.status.success(), "{}", text(&add));

    // Bad input: said in one line with the fix; nothing stored.
    let bad = tributary(
        &["schedules", "set", "pco", "--db", &db, "--delta-every", "5"],
        &key,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("`5` is not an interval"),
        "{}",
        text(&bad)
    );
    let bad = tributary(
        &[
            "schedules",
            "set",
            "pco",
            "--db",
            &db,
            "--reconcile-cron",
            "at night",
        ],
        &key,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("is not a cron expression"),
        "{}",
        text(&bad)
    );
    let unknown = tributary(&["schedules", "set", "nope", "--db", &db], &key);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("no connection named `nope`"),
        "{}",
        text(&unknown)
    );
    let list = tributary(&["schedules", "list", "--db", &db], &key);
    assert!(text(&list).contains("no schedules yet"), "{}", text(&list));

    let set = tributary(&["schedules", "set", "pco", "--db", &db], &key);
    assert!(set.status.success(), "{}", text(&set));
    assert!(
        text(&set).contains(
            "connection `pco`: a delta every 15m, a reconciliation at \"0 3 * * *\" (UTC)"
        ),
        "{}",
        text(&set)
    );

    // Serve on a free port; its first delta is due at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut serve = Command::new(BIN)
        .args(["serve", "--db", &db, "--listen", &address])
        .env("TRIBUTARY_SECRET_KEY", &key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = serve.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            lines.push(line.unwrap_or_default());
        }
        lines.join("\n")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(&address).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "serve never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get(&address, "/healthz"),
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    assert_eq!(
        get(&address, "/readyz"),
        (200, r#"{"status":"ready"}"#.to_owned())
    );

    // Wait until the scheduled run has committed some pages, then SIGTERM.
    let store = tributary_store::open_read_only(&db).await.unwrap();
    let run = loop {
        let runs = store.runs(None, 10).await.unwrap();
        if let Some(run) = runs.iter().find(|r| r.counts.pages >= 3) {
            break run.clone();
        }
        assert!(Instant::now() < deadline, "no scheduled run started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        run.idempotency_key
            .as_deref()
            .map(|k| k.starts_with("schedule delta ")),
        Some(true)
    );
    // While serve runs the connection, a `sync` of it is refused (exit 3).
    let busy = tributary(
        &[
            "sync",
            "--db",
            &db,
            "--connection",
            "pco",
            "--rate-limit",
            "off",
        ],
        &key,
    );
    assert_eq!(busy.status.code(), Some(3), "{}", text(&busy));
    assert!(
        text(&busy).contains("connection `pco` is busy"),
        "{}",
        text(&busy)
    );
    let stopped_at = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "serve did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.join().unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    let ended = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(ended.state, RunState::Failed, "{ended:?}\n{log}");
    assert!(ended.resumable, "{ended:?}");
    assert!(
        ended
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("shutting down"),
        "{ended:?}"
    );
    store.close().await;

    // The same run resumes (a full sync: the scheduled delta ran as one).
    let resume = tributary(
        &[
            "sync",
            "--db",
            &db,
            "--connection",
            "pco",
            "--rate-limit",
            "off",
        ],
        &key,
    );
    assert!(resume.status.success(), "{}", text(&resume));
    assert!(
        text(&resume).contains(&format!("run {} (full) succeeded (resumed)", run.id)),
        "{}",
        text(&resume)
    );
    assert_same(&db, &handle.simulator());
    handle.shutdown().await;
}
