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

use serde_json::{Value, json};
use tributary_core::RunState;
use tributary_sim::ResourceKind;

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

/// A token from `tributary tokens create`.
fn token(db: &str, key: &str, role: &str) -> String {
    let out = tributary(&["tokens", "create", "--role", role, "--db", db], key);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An HTTP request with a bearer token: status and JSON body.
fn call(address: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, body) = common::http(
        address,
        method,
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits for run `id` to end; its JSON.
fn finished(address: &str, token: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, run) = call(address, "GET", &format!("/v1/runs/{id}"), token, "");
        assert_eq!(status, 200, "{run}");
        if !matches!(run["state"].as_str(), Some("queued" | "running")) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end: {run}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_tokens_runs_on_request_and_traces_every_mutation() {
    let handle = common::seeded(5, 300).await;
    let sim = handle.simulator();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("api.db").display().to_string();
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
            &handle.base_url(),
        ],
        &key,
    );
    assert!(add.status.success(), "{}", text(&add));
    let read = token(&db, &key, "read");
    let admin = token(&db, &key, "admin");
    let unused = token(&db, &key, "read");
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
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() || get(&address, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "serve never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // No token, a tampered one, a revoked one: 401 with the scheme; a
    // read token reads, and is refused (403) where things change.
    let (status, body) = get(&address, "/v1/connections");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("tokens create"), "{body}");
    let mut tampered = read.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        call(&address, "GET", "/v1/connections", &tampered, "").0,
        401
    );
    let revoke = tributary(&["tokens", "revoke", "3", "--db", &db], &key);
    assert!(revoke.status.success(), "{}", text(&revoke));
    assert_eq!(call(&address, "GET", "/v1/connections", &unused, "").0, 401);
    let (status, connections) = call(&address, "GET", "/v1/connections", &read, "");
    assert_eq!(status, 200, "{connections}");
    assert_eq!(connections["connections"][0]["name"], "pco");
    let full = r#"{"connection": "pco", "kind": "full", "idempotency_key": "first"}"#;
    let (status, refused) = call(&address, "POST", "/v1/runs", &read, full);
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["status"], 403);

    // Bad requests are problems that name the fix; nothing starts.
    let (status, bad) = call(
        &address,
        "POST",
        "/v1/runs",
        &admin,
        r#"{"connection": "pco", "kind": "sideways"}"#,
    );
    assert_eq!(status, 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("`full`"), "{bad}");
    let (status, bad) = call(
        &address,
        "POST",
        "/v1/runs",
        &admin,
        r#"{"connection": "nobody", "kind": "full"}"#,
    );
    assert_eq!(status, 404, "{bad}");
    let (status, bad) = call(&address, "POST", "/v1/runs", &admin, "{not json");
    assert_eq!(status, 400, "{bad}");
    let (_, runs) = call(&address, "GET", "/v1/runs", &read, "");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "{runs}");

    // An admin asks for a full sync; the same key names the same run.
    let (status, run) = call(&address, "POST", "/v1/runs", &admin, full);
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_i64().unwrap();
    let (_, again) = call(&address, "POST", "/v1/runs", &admin, full);
    assert_eq!(again["id"], id, "{again}");
    let run = finished(&address, &read, id);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(run["entities"].as_array().unwrap().len() >= 7, "{run}");
    assert_same(&db, &sim);

    // A person changes at the source; a delta brings it; the audit trail
    // names both mutations, their runs and the field that changed.
    let person = sim.ids(ResourceKind::Person, 3, 1)[0];
    sim.update(
        ResourceKind::Person,
        person,
        &json!({"attributes": {"last_name": "Audited"}}),
    )
    .unwrap();
    let (status, delta) = call(
        &address,
        "POST",
        "/v1/runs",
        &admin,
        r#"{"connection": "pco", "kind": "delta"}"#,
    );
    assert_eq!(status, 202, "{delta}");
    let delta_id = delta["id"].as_i64().unwrap();
    assert_eq!(finished(&address, &read, delta_id)["state"], "succeeded");
    let path = format!("/v1/audit?connection=pco&entity=Person&external_id={person}");
    let (status, trail) = call(&address, "GET", &path, &read, "");
    assert_eq!(status, 200, "{trail}");
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{trail}");
    assert_eq!(entries[0]["kind"], "updated");
    assert_eq!(entries[0]["run"]["id"], delta_id);
    assert_eq!(entries[0]["run"]["kind"], "delta");
    assert!(
        entries[0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("last_name")),
        "{trail}"
    );
    assert_eq!(entries[1]["kind"], "created");
    assert_eq!(entries[1]["run"]["id"], id);
    assert!(entries[0]["seq"].as_i64() > entries[1]["seq"].as_i64());
    let missing = "/v1/audit?connection=pco&entity=Person&external_id=nope";
    assert_eq!(call(&address, "GET", missing, &read, "").0, 404);
    let (status, bad) = call(&address, "GET", "/v1/audit?connection=pco", &read, "");
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["title"], "bad request");

    // The same trail from the command line.
    let cli = tributary(
        &["audit", "pco", "Person", &person.to_string(), "--db", &db],
        &key,
    );
    assert!(cli.status.success(), "{}", text(&cli));
    let cli = text(&cli);
    assert!(
        cli.contains("updated") && cli.contains(&format!("run {delta_id} (delta sync)")),
        "{cli}"
    );

    // Cancelling a finished run is a conflict; an unknown run is 404.
    let cancel = format!("/v1/runs/{id}/cancel");
    assert_eq!(call(&address, "POST", &cancel, &admin, "").0, 409);
    assert_eq!(
        call(&address, "POST", "/v1/runs/999/cancel", &admin, "").0,
        404
    );
    let _ = serve.kill();
    let _ = serve.wait();
}

/// schemathesis (from PyPI, pinned), in a virtualenv under the target
/// directory: made once, then reused.
fn schemathesis() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-4.32.5");
    let st = venv.join("bin").join("st");
    if st.exists() {
        return st;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 runs");
    assert!(made.status.success(), "{}", text(&made));
    let pip = Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "schemathesis==4.32.5",
        ])
        .output()
        .unwrap();
    assert!(pip.status.success(), "pip: {}", text(&pip));
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_the_server_answers() {
    let handle = common::seeded(11, 150).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spec.db").display().to_string();
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
            &handle.base_url(),
        ],
        &key,
    );
    assert!(add.status.success(), "{}", text(&add));
    let sync = tributary(&["sync", "--db", &db, "--connection", "pco"], &key);
    assert!(sync.status.success(), "{}", text(&sync));
    let admin = token(&db, &key, "admin");
    let st = schemathesis();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    // A short longest long poll: a generated `wait` is answered in time.
    let mut serve = Command::new(BIN)
        .args([
            "serve",
            "--db",
            &db,
            "--listen",
            &address,
            "--max-wait",
            "2",
        ])
        .env("TRIBUTARY_SECRET_KEY", &key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() || get(&address, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "serve never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The document is served without a token, and names every route.
    let (status, body) = get(&address, "/v1/openapi.json");
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).unwrap();
    for path in [
        "/v1/changes",
        "/v1/changes/stream",
        "/v1/changes/ws",
        "/v1/connections",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/cancel",
        "/v1/audit",
        "/v1/records",
        "/v1/records/{connection}/{entity}/{external_id}",
        "/v1/search",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    let wait = document["paths"]["/v1/changes"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wait")
        .unwrap();
    assert_eq!(wait["schema"]["maximum"], 2.0);

    // Every check schemathesis has, over every route but the two streams
    // (an SSE stream never ends; a WebSocket needs its handshake): no
    // server error, every status, content type, header and body as
    // documented, bad input refused, good input accepted, auth enforced.
    let mut run = Command::new(st)
        .args([
            "run",
            &format!("http://{address}/v1/openapi.json"),
            "-H",
            &format!("Authorization: Bearer {admin}"),
            "--checks",
            "all",
            "--exclude-path",
            "/v1/changes/stream",
            "--exclude-path",
            "/v1/changes/ws",
            "--max-examples",
            "60",
            "--seed",
            "20261207",
            // A loaded CI machine answers slowly now and then: a slow
            // answer is not what this run looks for.
            "--request-timeout",
            "30",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(420);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("schemathesis did not finish within 7 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = run.wait_with_output().unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        status.success(),
        "schemathesis found problems:\n{}",
        text(&out)
    );
}
