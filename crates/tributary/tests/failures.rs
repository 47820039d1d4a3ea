//! Failures as a user meets them, through the real binary: a run that fails
//! on a transient cause resumes from its checkpoints; a configuration that
//! cannot work fails at once, before anything is opened or sent; a store
//! that cannot be opened says why, once, with the fix; a read-only
//! database can still be read.

use std::process::{Command, Output, Stdio};

use tributary_core::RunState;

mod common;
use common::{BIN, assert_same};

fn tributary(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("TRIBUTARY_TOKEN", "sim-token")
        .env_remove("TRIBUTARY_DB")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sync(db: &str, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["sync", "--db", db, "--base-url", url, "--connection", "c"])
        .args(["--rate-limit", "off"])
        .args(extra)
        .env("TRIBUTARY_TOKEN", "sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_by_an_api_outage_resumes_from_its_checkpoints_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    failed_run_resumes(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_by_an_api_outage_resumes_from_its_checkpoints_on_postgres() {
    let db = tributary_testkit::shared()
        .create_database("failed_run")
        .unwrap();
    failed_run_resumes(&db).await;
}

/// The API goes down (every request answers 503) two thirds into a sync
/// that may not retry (`--retry-budget 0`): the run fails, resumable,
/// keeping its checkpoints. Once the API is back the same command resumes
/// the same run and fetches only what was left.
async fn failed_run_resumes(db: &str) {
    let sim = common::seeded(21, 3_000).await;
    let simulator = sim.simulator();
    let url = sim.base_url();

    // What a whole sync costs, into a database of its own.
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db").display().to_string();
    let before = simulator.stats().total;
    assert!(sync(&fresh, &url, &[]).status().unwrap().success());
    let whole = simulator.stats().total - before;

    simulator.set_outage(Some(whole * 2 / 3));
    let before = simulator.stats().total;
    let out = sync(db, &url, &["--retry-budget", "0"]).output().unwrap();
    let first = simulator.stats().total - before;
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("answered 503: Service Unavailable: the service is down for maintenance (a simulated outage) \
                       (gave up: the run's retry budget of 0 retries is spent)"),
        "{text}"
    );
    assert!(
        text.contains("the run keeps its checkpoints: run the same command again to resume it"),
        "{text}"
    );
    let store = tributary_store::open_read_only(db).await.unwrap();
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Failed);
    assert!(runs[0].resumable, "{:?}", runs[0]);
    store.close().await;

    // The API is back. Another selection of entities is another run: it
    // does not finish this one.
    simulator.set_outage(None);
    let out = sync(db, &url, &["--entities", "Campus"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The same command resumes the failed run.
    let before = simulator.stats().total;
    let out = sync(db, &url, &[]).output().unwrap();
    let second = simulator.stats().total - before;
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("run 1 (full) succeeded (resumed)"), "{text}");
    let store = tributary_store::open_read_only(db).await.unwrap();
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "the failed run was resumed, not restarted");
    let full = runs.iter().find(|r| r.id == 1).unwrap();
    assert_eq!(full.state, RunState::Succeeded);
    assert!(!full.resumable);
    store.close().await;
    assert_same(db, &simulator);
    // Resuming fetched what was left, not the whole again.
    assert!(
        second <= whole / 2,
        "the resumed run made {second} requests; a whole sync makes {whole} (the failed one {first})"
    );
    sim.shutdown().await;
}

#[test]
fn a_base_url_that_cannot_work_fails_at_once_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    for (url, why) in [
        ("not a url", "relative URL without a base"),
        ("ftp://example.com", "the scheme `ftp` is not supported"),
        ("http://[::1", "invalid IPv6 address"),
        ("http://", "empty host"),
    ] {
        let out = tributary(&["sync", "--db", &db, "--base-url", url]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "error: invalid base URL `{url}`: {why}; give an absolute http:// or https:// URL, \
                 e.g. https://api.example.com\n"
            )
        );
    }
    assert!(
        !std::path::Path::new(&db).exists(),
        "nothing was opened or created"
    );
}

#[test]
fn numeric_flags_out_of_range_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    for size in ["0", "101", "100000"] {
        let out = tributary(&["sync", "--db", &db, "--page-size", size]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "error: page size {size} is outside 1..=100: the `pco` API serves 1 to 100 \
                 records per request\n"
            )
        );
    }
    assert!(!std::path::Path::new(&db).exists());
    // The range is in clap's own message for flags with fixed ranges.
    for (args, range) in [
        (
            vec!["sync", "--db", &db, "--retry-budget", "2000000"],
            "0..=1000000",
        ),
        (vec!["status", "--db", &db, "--runs", "0"], "1..=1000"),
        (vec!["demo", "--people", "0"], "1..=10000000"),
        (vec!["sim", "pco", "--people", "20000000"], "0..=10000000"),
        (vec!["sim", "pco", "--fault-max-per-url", "0"], "1..=100"),
        (vec!["bench", "resume", "--kills", "0"], "1..=100"),
    ] {
        let out = tributary(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(&format!("is not in {range}")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = tributary(&["sync", "--db", &db, "--request-timeout", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("give seconds, more than 0 and at most 3600"));
}

#[test]
fn a_sqlite_store_that_cannot_be_opened_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let adir = dir.path().join("adir");
    std::fs::create_dir(&adir).unwrap();
    let adir = adir.display().to_string();
    for command in ["status", "sync"] {
        let out = tributary(&[command, "--db", &adir]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "error: cannot open the database `{adir}`: it is a directory; give the path of a \
                 file, e.g. `{adir}/tributary.db`\n"
            )
        );
    }
    let missing = dir.path().join("nope").join("t.db").display().to_string();
    let out = tributary(&["sync", "--db", &missing]);
    assert_eq!(out.status.code(), Some(2));
    let parent = dir.path().join("nope").display().to_string();
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot open the database `{missing}`: the directory `{parent}` does not \
             exist; create it (`mkdir -p {parent}`) or give another path\n"
        )
    );
    // Reading a database that is not there creates nothing.
    let out = tributary(&["status", "--db", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: there is no database at `{missing}`: nothing has been synced into it yet; \
             run `tributary sync --db {missing}` (or `tributary demo --db {missing}`) first\n"
        )
    );
    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(&not_a_db, "x".repeat(4096)).unwrap();
    let not_a_db = not_a_db.display().to_string();
    let out = tributary(&["status", "--db", &not_a_db]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot open the database `{not_a_db}`: the file is not a SQLite database; \
             give another path\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_that_cannot_be_reached_says_why_at_once() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:s3cret@127.0.0.1:{port}/appdb");
    let out = tributary(&["status", "--db", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: nothing answers at the PostgreSQL server at 127.0.0.1:{port} (connection \
             refused): start the server, or fix the host, port or socket in the URL\n"
        )
    );
    // A URL that is not one never shows its password either.
    let out = tributary(&["status", "--db", "postgres://app:s3cret@[::1/appdb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: `postgres://app:***@[::1/appdb` is not a PostgreSQL URL"),
        "{}",
        stderr(&out)
    );
    let out = tributary(&[
        "status",
        "--db",
        "postgres://app@localhost/appdb?host=/nonexistent-dir&port=5999",
    ]);
    assert_eq!(
        stderr(&out),
        "error: nothing answers at the PostgreSQL server at socket \
         /nonexistent-dir/.s.PGSQL.5999 (no such socket): start the server, or fix the host, \
         port or socket in the URL\n"
    );
    // A server that is up, without the database.
    let server = tributary_testkit::shared();
    let url = server.database_url("no_such_database");
    let out = tributary(&["sync", "--db", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: database `no_such_database` does not exist on the PostgreSQL server at \
             socket {}/.s.PGSQL.{}: create it (`createdb no_such_database`), or fix the \
             database name in the URL\n",
            server.socket_dir().display(),
            server.port()
        )
    );
}

/// A database on a read-only file system (a read-only bind mount in a
/// mount namespace of the test's own): the commands that only read work,
/// and a sync says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_can_still_be_read() {
    let sim = common::simulator(50).await;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let db = ro.join("t.db").display().to_string();
    assert!(sync(&db, &sim.base_url(), &[]).status().unwrap().success());
    let expected = common::exported(&db);
    let ro = ro.display().to_string();
    let script = format!(
        "mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} || exit 99; \
         {BIN} status --db {db} > {out}/status.out 2> {out}/status.err; echo $? > {out}/status.code; \
         {BIN} records export --db {db} > {out}/export.out 2> {out}/export.err; echo $? > {out}/export.code; \
         {BIN} connections list --db {db} > {out}/list.out 2> {out}/list.err; echo $? > {out}/list.code; \
         TRIBUTARY_TOKEN=sim-token {BIN} sync --db {db} --base-url {url} > /dev/null 2> {out}/sync.err; echo $? > {out}/sync.code",
        out = dir.path().display(),
        url = sim.base_url(),
    );
    if !common::namespaces_work() {
        return;
    }
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "unshare --user --mount could not make a read-only mount ({status})"
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("status.code").trim(), "0", "{}", read("status.err"));
    assert!(read("status.out").contains("connection c (pco, "));
    assert_eq!(read("export.code").trim(), "0", "{}", read("export.err"));
    assert_eq!(read("list.code").trim(), "0", "{}", read("list.err"));
    assert_eq!(
        read("export.out").lines().count(),
        expected.len(),
        "every record exported"
    );
    assert_eq!(read("sync.code").trim(), "2");
    assert_eq!(
        read("sync.err"),
        format!(
            "error: cannot open the database `{db}`: it is on a read-only file system; copy it \
             somewhere writable, or use a command that only reads (`tributary status`, \
             `tributary records export`)\n"
        )
    );
    sim.shutdown().await;
}
