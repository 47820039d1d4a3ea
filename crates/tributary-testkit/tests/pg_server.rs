//! Integration tests: real PostgreSQL servers, reached with sqlx 0.9.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use tributary_testkit::{PgOptions, PgServer, shared};

async fn connect(url: &str) -> PgConnection {
    let options: PgConnectOptions = url.parse().expect("sqlx parses the url");
    tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

async fn scalar_string(conn: &mut PgConnection, sql: &'static str) -> String {
    sqlx::query(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<String, _>(0)
}

#[tokio::test]
async fn start_and_select_one_with_sqlx() {
    let started = Instant::now();
    let server = PgServer::start().expect("start postgres");
    eprintln!("postgres started in {:?}", started.elapsed());
    let url = server.url();
    assert!(
        url.starts_with("postgres://postgres@localhost/postgres?host=/"),
        "{url}"
    );
    assert!(url.ends_with(&format!("&port={}", server.port())), "{url}");
    assert!(server.socket_path().exists());
    assert!(
        server
            .socket_path()
            .to_string_lossy()
            .ends_with(&format!(".s.PGSQL.{}", server.port()))
    );

    let options: PgConnectOptions = url.parse().unwrap();
    assert_eq!(options.get_port(), server.port());
    assert_eq!(
        options.get_socket().map(|p| p.as_path()),
        Some(server.socket_dir())
    );

    let mut conn = connect(&url).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let version = scalar_string(&mut conn, "SHOW server_version").await;
    assert!(!version.is_empty());
    assert_eq!(
        scalar_string(&mut conn, "SHOW server_encoding").await,
        "UTF8"
    );
    assert_eq!(scalar_string(&mut conn, "SHOW lc_collate").await, "C");
    assert_eq!(scalar_string(&mut conn, "SHOW listen_addresses").await, "");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn databases_are_isolated() {
    let server = PgServer::start().expect("start postgres");
    let started = Instant::now();
    let a = server.create_database("isolation test").unwrap();
    let b = server.create_database("isolation test").unwrap();
    eprintln!("two CREATE DATABASE took {:?}", started.elapsed());
    assert_ne!(a, b);

    let mut ca = connect(&a).await;
    let mut cb = connect(&b).await;
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut ca)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (42)")
        .execute(&mut ca)
        .await
        .unwrap();
    let x: i32 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut ca)
        .await
        .unwrap();
    assert_eq!(x, 42);
    let missing = sqlx::query("SELECT x FROM t").fetch_one(&mut cb).await;
    assert!(
        missing.is_err(),
        "table t must not exist in the other database"
    );
    let db_a = scalar_string(&mut ca, "SELECT current_database()::text").await;
    let db_b = scalar_string(&mut cb, "SELECT current_database()::text").await;
    assert_ne!(db_a, db_b);
    assert!(db_a.starts_with("isolation_test_"), "{db_a}");
}

#[test]
fn two_servers_at_once_and_drop_stops_them() {
    let one = PgServer::start().expect("first server");
    let two = PgServer::start().expect("second server");
    assert_ne!(one.socket_dir(), two.socket_dir());
    assert_ne!(one.pid(), two.pid());
    assert_eq!(one.execute("postgres", "SELECT 1").unwrap().trim(), "1");
    assert_eq!(two.execute("postgres", "SELECT 2").unwrap().trim(), "2");
    assert!(one.is_running() && two.is_running());

    let pid = one.pid();
    let dir = one.socket_dir().to_path_buf();
    let socket = one.socket_path();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let started = Instant::now();
    drop(one);
    eprintln!("drop took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!socket.exists(), "socket removed");
    assert!(!dir.exists(), "temp dir removed");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster {pid} gone"
    );
    // The other server is unaffected.
    assert_eq!(two.execute("postgres", "SELECT 3").unwrap().trim(), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_and_non_durable_options() {
    let fast = PgServer::start_with(PgOptions::new().setting("work_mem", "8MB")).unwrap();
    let durable =
        PgServer::start_with(PgOptions::new().durable(true).shared_buffers("32MB")).unwrap();

    let mut f = connect(&fast.url()).await;
    assert_eq!(scalar_string(&mut f, "SHOW fsync").await, "off");
    assert_eq!(
        scalar_string(&mut f, "SHOW synchronous_commit").await,
        "off"
    );
    assert_eq!(scalar_string(&mut f, "SHOW full_page_writes").await, "off");
    assert_eq!(scalar_string(&mut f, "SHOW work_mem").await, "8MB");

    let mut d = connect(&durable.url()).await;
    assert_eq!(scalar_string(&mut d, "SHOW fsync").await, "on");
    assert_eq!(scalar_string(&mut d, "SHOW synchronous_commit").await, "on");
    assert_eq!(scalar_string(&mut d, "SHOW full_page_writes").await, "on");
    assert_eq!(scalar_string(&mut d, "SHOW shared_buffers").await, "32MB");
}

#[tokio::test]
async fn shared_server_and_create_database_inside_runtime() {
    let server = shared();
    assert!(std::ptr::eq(server, shared()));
    let url = server.create_database("shared").unwrap();
    let mut conn = connect(&url).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[test]
fn bad_setting_reports_log_tail() {
    let err = PgServer::start_with(PgOptions::new().setting("no_such_setting_xyz", "1"))
        .expect_err("unknown setting must fail");
    let msg = err.to_string();
    assert!(msg.contains("postgres exited during startup"), "{msg}");
    assert!(msg.contains("no_such_setting_xyz"), "{msg}");
}

const HOLD_ENV: &str = "TRIBUTARY_TESTKIT_HOLD_SHARED";

/// Not a test by itself: run (as a child process) by
/// `killed_test_process_leaves_nothing_behind`.
#[test]
#[ignore = "helper process for killed_test_process_leaves_nothing_behind"]
fn helper_hold_shared_server() {
    if std::env::var_os(HOLD_ENV).is_none() {
        return;
    }
    let server = shared();
    println!("READY {} {}", server.pid(), server.socket_dir().display());
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn killed_test_process_leaves_nothing_behind() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_hold_shared_server",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        // libtest may print "test helper_hold_shared_server ... " first.
        if let Some((_, rest)) = line.split_once("READY ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            ready = Some((pid.parse::<u32>().unwrap(), std::path::PathBuf::from(dir)));
            break;
        }
    }
    let (pid, dir) = ready.expect("helper started the shared server");
    assert!(process_alive(pid));
    assert!(dir.exists());

    // SIGKILL: no destructor, no atexit; only the watchdog can clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while (process_alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !process_alive(pid),
        "postmaster {pid} outlived its test process"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}
