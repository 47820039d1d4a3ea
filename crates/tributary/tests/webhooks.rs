//! Webhooks in, as an operator and a sender see them: secrets added through
//! the CLI (from the environment or stdin, sealed, never shown), signed PCO
//! deliveries POSTed to `tributary serve` — stored once, duplicates
//! acknowledged, every bad request refused with its status and counted —
//! and a delivery acknowledged just before a `kill -9` still in the inbox.
//! Webhooks out too: a subscription added through the CLI receives a
//! sync's changes and its end from `tributary serve`, signed.

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

mod common;
use common::{BIN, assert_same, http};

const PERSON_SECRET: &str = "person-updated-secret-0123456789";
const ANY_SECRET: &str = "any-event-secret-abcdef";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    db: String,
    key: String,
}

impl Setup {
    fn new() -> Self {
        Self::new_for("http://127.0.0.1:9")
    }

    /// A database with connection `pco` (a bearer token) to `base_url`.
    fn new_for(base_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db").display().to_string();
        let key = common::keygen();
        let setup = Self { _dir: dir, db, key };
        let add = setup.run(
            &[
                "connections",
                "add",
                "pco",
                "--auth",
                "bearer",
                "--base-url",
                base_url,
            ],
            &[("TRIBUTARY_TOKEN", "sim-token")],
            None,
        );
        assert!(add.status.success(), "{}", text(&add));
        setup
    }

    /// `tributary ARGS --db DB` with the secret key, `env`, and `stdin`.
    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--db", &self.db])
            .env("TRIBUTARY_SECRET_KEY", &self.key)
            .env("TRIBUTARY_TOKEN", "sim-token")
            .env_remove("TRIBUTARY_WEBHOOK_SECRET")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(stdin) = stdin {
            input.write_all(stdin.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn serve(&self) -> Serve {
        self.serve_with(&[])
    }

    /// `serve` with `extra` flags.
    fn serve_with(&self, extra: &[&str]) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(BIN)
            .args(["serve", "--db", &self.db, "--listen", &address])
            .args(extra)
            .env("TRIBUTARY_SECRET_KEY", &self.key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "serve never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve { child, address }
    }

    fn deliveries(&self) -> Vec<Value> {
        let list = self.run(&["webhooks", "list", "--json"], &[], None);
        assert!(list.status.success(), "{}", text(&list));
        serde_json::from_slice(&list.stdout).unwrap()
    }
}

struct Serve {
    child: Child,
    address: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A PCO delivery body for `event` about person `person`.
fn delivery(id: &str, event: &str, person: &str) -> String {
    let payload = serde_json::json!({"data": {"type": "Person", "id": person,
        "attributes": {"first_name": "Ann", "updated_at": "2026-12-07T10:00:00Z"}}})
    .to_string();
    serde_json::json!({"data": [{"id": id, "type": "EventDelivery", "attributes": {
        "name": event, "attempt": 1, "payload": payload},
        "relationships": {"organization": {"data": {"type": "Organization", "id": "1"}}}}]})
    .to_string()
}

const UPDATED: &str = "people.v2.events.person.updated";
const CREATED: &str = "people.v2.events.person.created";

fn post(serve: &Serve, path: &str, signature: Option<&str>, body: &str) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(signature) = signature {
        headers.push(("X-PCO-Webhooks-Authenticity", signature));
    }
    http(&serve.address, "POST", path, &headers, body.as_bytes())
}

#[test]
fn signed_deliveries_are_stored_once_and_bad_ones_refused() {
    let setup = Setup::new();

    // Secrets: one for person.updated from the environment, one for any
    // event from stdin; never from argv, never shown.
    let add = setup.run(
        &["webhooks", "secrets", "add", "pco", "--event", UPDATED],
        &[("TRIBUTARY_WEBHOOK_SECRET", PERSON_SECRET)],
        None,
    );
    assert!(add.status.success(), "{}", text(&add));
    assert!(
        text(&add).contains("webhook secret 1 of connection `pco`"),
        "{}",
        text(&add)
    );
    let none = setup.run(&["webhooks", "secrets", "add", "pco"], &[], Some(""));
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(
        text(&none).contains("no secret: set TRIBUTARY_WEBHOOK_SECRET"),
        "{}",
        text(&none)
    );
    let unknown = setup.run(&["webhooks", "secrets", "add", "nope"], &[], Some("x\n"));
    assert!(
        text(&unknown).contains("no connection named `nope`"),
        "{}",
        text(&unknown)
    );
    let from_stdin = setup.run(
        &["webhooks", "secrets", "add", "pco"],
        &[],
        Some(&format!("{ANY_SECRET}\n")),
    );
    assert!(from_stdin.status.success(), "{}", text(&from_stdin));
    let listed = setup.run(&["webhooks", "secrets", "list"], &[], None);
    let listed = text(&listed);
    assert!(
        listed.contains(UPDATED) && listed.contains("(any)"),
        "{listed}"
    );
    assert!(
        !listed.contains(PERSON_SECRET) && !listed.contains(ANY_SECRET),
        "{listed}"
    );
    let raw_db = std::fs::read(&setup.db).unwrap();
    for secret in [PERSON_SECRET, ANY_SECRET] {
        assert!(
            !raw_db.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret in the clear in the database"
        );
    }

    let serve = setup.serve();
    let path = "/webhooks/pco";
    let first = delivery("d-1", UPDATED, "42");
    let (status, body) = post(&serve, path, Some(&sign(PERSON_SECRET, &first)), &first);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["duplicates"], 0);
    assert_eq!(answer["stored"].as_array().unwrap().len(), 1);
    // The sender retries: 200, stored once.
    let (status, body) = post(&serve, path, Some(&sign(PERSON_SECRET, &first)), &first);
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["duplicates"].as_u64()
        ),
        (200, Some(1))
    );
    // The any-event secret signs another event.
    let second = delivery("d-2", CREATED, "43");
    assert_eq!(
        post(&serve, path, Some(&sign(ANY_SECRET, &second)), &second).0,
        200
    );

    // Refusals, none of them stored.
    let third = delivery("d-3", UPDATED, "44");
    let tampered = third.replace("Ann", "Bob");
    let refusals = [
        (
            "tampered body",
            post(&serve, path, Some(&sign(PERSON_SECRET, &third)), &tampered),
            401,
        ),
        ("no signature", post(&serve, path, None, &third), 401),
        (
            "wrong secret",
            post(&serve, path, Some(&sign("guess", &third)), &third),
            401,
        ),
        (
            "the person.updated secret on person.created",
            post(
                &serve,
                path,
                Some(&sign(PERSON_SECRET, &delivery("d-4", CREATED, "45"))),
                &delivery("d-4", CREATED, "45"),
            ),
            401,
        ),
        (
            "authentic, not a delivery",
            post(&serve, path, Some(&sign(ANY_SECRET, "{}")), "{}"),
            400,
        ),
        (
            "unknown connection",
            post(
                &serve,
                "/webhooks/nope",
                Some(&sign(ANY_SECRET, &third)),
                &third,
            ),
            404,
        ),
    ];
    for (what, (status, body), expected) in &refusals {
        assert_eq!(status, expected, "{what}: {body}");
        assert!(
            !body.contains(PERSON_SECRET) && !body.contains(ANY_SECRET),
            "{what}: {body}"
        );
    }
    let big = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        post(&serve, path, Some(&sign(ANY_SECRET, &big)), &big).0,
        413
    );

    let (_, metrics) = http(&serve.address, "GET", "/metrics", &[], b"");
    for line in [
        "tributary_webhook_deliveries_total{outcome=\"stored\"} 2",
        "tributary_webhook_deliveries_total{outcome=\"duplicate\"} 1",
        "tributary_webhook_refused_total{reason=\"bad_signature\"} 2",
        "tributary_webhook_refused_total{reason=\"missing_header\"} 1",
        "tributary_webhook_refused_total{reason=\"wrong_event\"} 1",
        "tributary_webhook_refused_total{reason=\"malformed\"} 1",
        "tributary_webhook_refused_total{reason=\"not_found\"} 1",
        "tributary_webhook_refused_total{reason=\"too_large\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    // A secret added while serve runs works on its next delivery.
    let rotated = "rotated-secret-for-person-updated";
    let add = setup.run(
        &["webhooks", "secrets", "add", "pco", "--event", UPDATED],
        &[("TRIBUTARY_WEBHOOK_SECRET", rotated)],
        None,
    );
    assert!(add.status.success(), "{}", text(&add));
    assert_eq!(
        post(&serve, path, Some(&sign(rotated, &third)), &third).0,
        200
    );

    // Acknowledged, then killed at once: the delivery is in the inbox.
    let last = delivery("d-5", UPDATED, "46");
    assert_eq!(
        post(&serve, path, Some(&sign(PERSON_SECRET, &last)), &last).0,
        200
    );
    let mut serve = serve;
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();

    let deliveries = setup.deliveries();
    let ids: Vec<&str> = deliveries
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d-1", "d-2", "d-3", "d-5"]);
    assert!(deliveries.iter().all(|d| d["state"] == "pending"));
    assert_eq!(deliveries[0]["event"], UPDATED);
    let show = setup.run(&["webhooks", "show", "1", "--json"], &[], None);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["payload"]["id"], "d-1");
    assert_eq!(shown["payload"]["attributes"]["name"], UPDATED);

    // Removing a secret refuses what it signed.
    let remove = setup.run(&["webhooks", "secrets", "remove", "1"], &[], None);
    assert!(remove.status.success(), "{}", text(&remove));
    let again = setup.run(&["webhooks", "secrets", "remove", "1"], &[], None);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let serve = setup.serve();
    let later = delivery("d-6", UPDATED, "47");
    assert_eq!(
        post(&serve, path, Some(&sign(PERSON_SECRET, &later)), &later).0,
        401
    );
}

#[test]
fn webhook_commands_refuse_bad_input_with_the_fix() {
    let setup = Setup::new();
    let bad_state = setup.run(&["webhooks", "list", "--state", "done"], &[], None);
    assert_eq!(bad_state.status.code(), Some(2), "{}", text(&bad_state));
    assert!(
        text(&bad_state).contains("expected pending, applied or dead"),
        "{}",
        text(&bad_state)
    );
    let missing = setup.run(&["webhooks", "show", "7"], &[], None);
    assert!(
        text(&missing).contains("no delivery 7 (see `tributary webhooks list`)"),
        "{}",
        text(&missing)
    );
    let empty = setup.run(&["webhooks", "list"], &[], None);
    assert!(text(&empty).contains("no deliveries"), "{}", text(&empty));
    let event = setup.run(
        &["webhooks", "secrets", "add", "pco", "--event", " "],
        &[("TRIBUTARY_WEBHOOK_SECRET", "s")],
        None,
    );
    assert!(
        text(&event).contains("--event is empty"),
        "{}",
        text(&event)
    );
    let no_key = Command::new(BIN)
        .args(["webhooks", "secrets", "add", "pco", "--db", &setup.db])
        .env_remove("TRIBUTARY_SECRET_KEY")
        .env_remove("TRIBUTARY_SECRET_KEY_FILE")
        .env("TRIBUTARY_WEBHOOK_SECRET", "s")
        .output()
        .unwrap();
    assert!(!no_key.status.success());
    assert!(
        text(&no_key).contains("TRIBUTARY_SECRET_KEY"),
        "{}",
        text(&no_key)
    );
    let secrets = setup.run(&["webhooks", "secrets", "list", "--json"], &[], None);
    assert_eq!(
        serde_json::from_slice::<Value>(&secrets.stdout).unwrap(),
        Value::Array(vec![])
    );
}

/// A simulated account, and a database with connection `pco` to it after
/// a full sync (equal to the source).
async fn synced(seed: u64, people: usize) -> (tributary_sim::SimHandle, Setup) {
    let handle = common::seeded(seed, people).await;
    let setup = Setup::new_for(&handle.base_url());
    let full = setup.run(
        &["sync", "--connection", "pco", "--rate-limit", "off"],
        &[],
        None,
    );
    assert!(full.status.success(), "{}", text(&full));
    assert_same(&setup.db, &handle.simulator());
    (handle, setup)
}

/// Subscribes `url` to `event` at the simulator and stores the
/// subscription's secret for connection `pco` (from stdin).
fn subscribe(sim: &tributary_sim::Simulator, setup: &Setup, event: &str, url: &str) {
    let subscription = sim.subscribe(event, url);
    let add = setup.run(
        &["webhooks", "secrets", "add", "pco", "--event", event],
        &[],
        Some(&subscription.authenticity_secret),
    );
    assert!(add.status.success(), "{}", text(&add));
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_changes_reach_the_database_through_webhooks_alone() {
    let (handle, setup) = synced(21, 40).await;
    let sim = handle.simulator();

    // `serve` takes the simulator's deliveries: one subscription per event
    // the adapter maps, each with its own secret, stored through the CLI.
    let serve = setup.serve();
    let url = format!("http://{}/webhooks/pco", serve.address);
    let events: Vec<String> = [
        "campus",
        "person",
        "household",
        "email",
        "phone_number",
        "address",
    ]
    .iter()
    .flat_map(|t| ["created", "updated", "destroyed"].map(|a| format!("people.v2.events.{t}.{a}")))
    .collect();
    for event in &events {
        subscribe(&sim, &setup, event, &url);
    }

    // Changes of every kind, some to one record in a burst.
    let person = |n| sim.ids(tributary_sim::ResourceKind::Person, n, 1)[0];
    let kind = tributary_sim::ResourceKind::Person;
    for round in 0..3 {
        sim.update(
            kind,
            person(0),
            &serde_json::json!({"attributes": {"first_name": format!("Burst {round}")}}),
        )
        .unwrap();
    }
    let created = sim
        .create(
            kind,
            &serde_json::json!({"attributes": {"first_name": "Via", "last_name": "Webhook"}}),
        )
        .unwrap();
    sim.create(
        tributary_sim::ResourceKind::Email,
        &serde_json::json!({"attributes": {"address": "via@example.com", "location": "Home"},
            "relationships": {"person": created["id"]}}),
    )
    .unwrap();
    let email = sim.ids(tributary_sim::ResourceKind::Email, 3, 1)[0];
    sim.update(
        tributary_sim::ResourceKind::Email,
        email,
        &serde_json::json!({"attributes": {"address": "changed@example.com"}}),
    )
    .unwrap();
    let phone = sim.ids(tributary_sim::ResourceKind::PhoneNumber, 0, 1)[0];
    sim.delete(tributary_sim::ResourceKind::PhoneNumber, phone)
        .unwrap();
    let household = sim.ids(tributary_sim::ResourceKind::Household, 0, 1)[0];
    sim.update(
        tributary_sim::ResourceKind::Household,
        household,
        &serde_json::json!({"attributes": {"name": "Renamed Household"}}),
    )
    .unwrap();
    // A person leaves with everything that is theirs.
    sim.delete(kind, person(5)).unwrap();
    let expected = 3 + 1 + 1 + 1 + 1 + 1 + 1;

    eventually("every delivery acknowledged", async || {
        sim.webhook_stats().acknowledged >= expected
    })
    .await;
    eventually("every delivery applied", async || {
        let list = setup.deliveries();
        list.len() as u64 >= expected && list.iter().all(|d| d["state"] == "applied")
    })
    .await;
    // No delta, no reconciliation: the webhooks alone made it equal.
    assert_same(&setup.db, &sim);
    let runs = setup.run(&["runs", "list", "--json"], &[], None);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let kinds: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"webhook") && !kinds.contains(&"delta") && !kinds.contains(&"reconcile"),
        "{kinds:?}"
    );
    drop(serve);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_connection_keeps_its_deliveries_until_resumed_and_dead_letters_replay() {
    let (handle, setup) = synced(22, 10).await;
    let sim = handle.simulator();
    let paused = setup.run(&["webhooks", "pause", "pco"], &[], None);
    assert!(
        text(&paused).contains("webhooks of `pco` paused"),
        "{}",
        text(&paused)
    );
    let serve = setup.serve();
    let url = format!("http://{}/webhooks/pco", serve.address);
    let event = "people.v2.events.person.updated";
    subscribe(&sim, &setup, event, &url);
    let person = sim.ids(tributary_sim::ResourceKind::Person, 0, 1)[0];
    sim.update(
        tributary_sim::ResourceKind::Person,
        person,
        &serde_json::json!({"attributes": {"first_name": "Paused"}}),
    )
    .unwrap();
    eventually("the delivery acknowledged", async || {
        sim.webhook_stats().acknowledged >= 1
    })
    .await;
    // Stored, not applied, while paused (several polls).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(setup.deliveries()[0]["state"], "pending");
    let resumed = setup.run(&["webhooks", "resume", "pco"], &[], None);
    assert!(resumed.status.success(), "{}", text(&resumed));
    eventually("applied once resumed", async || {
        setup.deliveries()[0]["state"] == "applied"
    })
    .await;
    assert_same(&setup.db, &sim);

    // Replay: by id (applied again: the record is unchanged), and refusals.
    let replay = setup.run(&["webhooks", "replay", "1"], &[], None);
    assert!(
        text(&replay).contains("1 deliveries pending again"),
        "{}",
        text(&replay)
    );
    eventually("applied again", async || {
        setup.deliveries()[0]["state"] == "applied"
    })
    .await;
    let none = setup.run(&["webhooks", "replay"], &[], None);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    let missing = setup.run(&["webhooks", "replay", "99"], &[], None);
    assert!(
        text(&missing).contains("no delivery 99"),
        "{}",
        text(&missing)
    );
    let dead = setup.run(
        &["webhooks", "replay", "--dead", "--since", "yesterday"],
        &[],
        None,
    );
    assert!(
        text(&dead).contains("is not an RFC 3339 time"),
        "{}",
        text(&dead)
    );
    let dead = setup.run(&["webhooks", "replay", "--dead"], &[], None);
    assert!(
        text(&dead).contains("0 deliveries pending again"),
        "{}",
        text(&dead)
    );
    drop(serve);
    handle.shutdown().await;
}

/// Signs `body` as a Standard Webhooks sender does (`v1,` base64).
fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

#[test]
fn an_adapter_signed_by_standard_webhooks_takes_svix_and_webhook_headers() {
    let setup = Setup::new();
    // A manifest of its own: the PCO adapter renamed, signed the Svix way.
    let manifest = setup._dir.path().join("hooked.toml");
    let shown = Command::new(BIN)
        .args(["manifest", "show", "pco"])
        .output()
        .unwrap();
    let text_of = String::from_utf8(shown.stdout)
        .unwrap()
        .replacen("name = \"pco\"", "name = \"hooked\"", 1)
        .replacen("scheme = \"pco\"", "scheme = \"standard_webhooks\"", 1);
    std::fs::write(&manifest, text_of).unwrap();
    let manifest = manifest.display().to_string();
    let add = setup.run(
        &[
            "connections",
            "add",
            "hooked",
            "--adapter",
            "hooked",
            "--manifest",
            &manifest,
            "--auth",
            "bearer",
            "--base-url",
            "http://127.0.0.1:9",
        ],
        &[],
        None,
    );
    assert!(add.status.success(), "{}", text(&add));
    let bad = setup.run(
        &[
            "webhooks",
            "secrets",
            "add",
            "hooked",
            "--manifest",
            &manifest,
        ],
        &[("TRIBUTARY_WEBHOOK_SECRET", "whsec_not base64!")],
        None,
    );
    assert!(
        text(&bad).contains("not a standard_webhooks secret"),
        "{}",
        text(&bad)
    );
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let add = setup.run(
        &[
            "webhooks",
            "secrets",
            "add",
            "hooked",
            "--manifest",
            &manifest,
        ],
        &[("TRIBUTARY_WEBHOOK_SECRET", secret)],
        None,
    );
    assert!(add.status.success(), "{}", text(&add));

    let serve = setup.serve_with(&["--manifest", &manifest]);
    let now = tributary_core::Clock::now(&tributary_core::SystemClock).timestamp();
    let body = r#"{"type":"people.v2.events.person.updated","data":{"type":"Person","id":"1"}}"#;
    let post = |prefix: &str, id: &str, timestamp: i64, signature: &str| {
        let (id_h, ts_h, sig_h) = (
            format!("{prefix}-id"),
            format!("{prefix}-timestamp"),
            format!("{prefix}-signature"),
        );
        http(
            &serve.address,
            "POST",
            "/webhooks/hooked",
            &[
                (id_h.as_str(), id),
                (ts_h.as_str(), &timestamp.to_string()),
                (sig_h.as_str(), signature),
            ],
            body.as_bytes(),
        )
        .0
    };
    assert_eq!(
        post(
            "svix",
            "msg_1",
            now,
            &sign_standard(secret, "msg_1", now, body)
        ),
        200
    );
    assert_eq!(
        post(
            "webhook",
            "msg_2",
            now,
            &sign_standard(secret, "msg_2", now, body)
        ),
        200
    );
    // The sender retries msg_1: acknowledged, kept once.
    assert_eq!(
        post(
            "svix",
            "msg_1",
            now,
            &sign_standard(secret, "msg_1", now, body)
        ),
        200
    );
    // Ten minutes old, or signed for another id: refused.
    let old = now - 600;
    assert_eq!(
        post(
            "svix",
            "msg_3",
            old,
            &sign_standard(secret, "msg_3", old, body)
        ),
        401
    );
    assert_eq!(
        post(
            "svix",
            "msg_4",
            now,
            &sign_standard(secret, "msg_1", now, body)
        ),
        401
    );
    let ids: Vec<String> = setup
        .deliveries()
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["msg_1", "msg_2"]);
}

#[test]
fn one_delivery_sent_twice_at_the_same_moment_is_stored_once() {
    let setup = Setup::new();
    let add = setup.run(
        &["webhooks", "secrets", "add", "pco"],
        &[("TRIBUTARY_WEBHOOK_SECRET", ANY_SECRET)],
        None,
    );
    assert!(add.status.success(), "{}", text(&add));
    let serve = setup.serve();
    let body = delivery("same", UPDATED, "42");
    let signature = sign(ANY_SECRET, &body);
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| post(&serve, "/webhooks/pco", Some(&signature), &body)))
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let stored: usize = answers
        .iter()
        .map(|(_, body)| {
            serde_json::from_str::<Value>(body).unwrap()["stored"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(stored, 1, "{answers:?}");
    assert_eq!(setup.deliveries().len(), 1);
}

/// What a subscription's receiver got: bodies of requests whose signature
/// the `standardwebhooks` crate verified, once per `webhook-id`.
#[derive(Clone, Default)]
struct Received {
    secret: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl Received {
    /// Serves on a free loopback port for the rest of the test; its URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = self.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let received = received.clone();
                    async move {
                        let secret = received.secret.lock().unwrap().clone().unwrap();
                        // serve signs with the wall clock's time: verified whole.
                        standardwebhooks::Webhook::new(&secret)
                            .unwrap()
                            .verify(&body, &headers)
                            .expect("signed with the subscription's secret");
                        let id = headers["webhook-id"].to_str().unwrap().to_owned();
                        let mut bodies = received.bodies.lock().unwrap();
                        if !bodies.iter().any(|(seen, _)| *seen == id) {
                            bodies.push((id, serde_json::from_slice(&body).unwrap()));
                        }
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}/hooks")
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_receives_a_syncs_changes_and_its_end_through_serve() {
    let handle = common::seeded(31, 25).await;
    let setup = Setup::new_for(&handle.base_url());
    let received = Received::default();
    let url = received.serve().await;

    // Bad input: one line naming the fix; nothing stored.
    for (args, says) in [
        (
            vec!["subscriptions", "add", "nope", url.as_str()],
            "no connection named `nope`",
        ),
        (
            vec!["subscriptions", "add", "pco", "localhost/hooks"],
            "invalid URL `localhost/hooks`",
        ),
        (
            vec![
                "subscriptions",
                "add",
                "pco",
                url.as_str(),
                "--events",
                "changes,sync.done",
            ],
            "unknown event `sync.done`",
        ),
        (
            vec![
                "subscriptions",
                "add",
                "pco",
                url.as_str(),
                "--entity",
                "Nope",
            ],
            "adapter `pco` has no entity `Nope`",
        ),
        (vec!["subscriptions", "remove", "9"], "no subscription 9"),
        (
            vec!["subscriptions", "replay", "9", "--all"],
            "no subscription 9",
        ),
    ] {
        let out = setup.run(&args, &[], None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        // One line says it (clap adds its pointer to --help after it).
        let first = text(&out).lines().next().unwrap_or_default().to_owned();
        assert!(first.contains(says), "{args:?}: {}", text(&out));
    }
    let listed = setup.run(&["subscriptions", "list"], &[], None);
    assert!(
        text(&listed).contains("no subscriptions"),
        "{}",
        text(&listed)
    );

    // Added: its id and its secret, shown once.
    let add = setup.run(&["subscriptions", "add", "pco", &url, "--json"], &[], None);
    assert!(add.status.success(), "{}", text(&add));
    let added: Value = serde_json::from_slice(&add.stdout).unwrap();
    let secret = added["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{added}");
    assert_eq!(
        added["events"],
        serde_json::json!(["changes", "sync.finished"])
    );
    *received.secret.lock().unwrap() = Some(secret.clone());
    let listed = setup.run(&["subscriptions", "list", "--json"], &[], None);
    assert!(
        !text(&listed).contains(&secret),
        "the secret is never shown again"
    );

    // A sync through serve: its first scheduled delta (a full sync: the
    // connection has no marks) is due at once.
    let set = setup.run(&["schedules", "set", "pco"], &[], None);
    assert!(set.status.success(), "{}", text(&set));
    let serve = setup.serve();
    eventually("the run's end is received", async || {
        received
            .bodies()
            .iter()
            .any(|b| b["type"] == "sync.finished")
    })
    .await;
    let bodies = received.bodies();
    let finished = bodies.last().unwrap();
    assert_eq!(finished["type"], "sync.finished", "the end comes last");
    assert_eq!(finished["data"]["run"]["state"], "succeeded");
    let changes: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["type"] == "changes")
        .flat_map(|b| b["data"]["changes"].as_array().unwrap())
        .collect();
    let seqs: Vec<i64> = changes.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each once, in order");
    let created = finished["data"]["counts"]["created"].as_i64().unwrap();
    assert!(created > 25, "{finished}");
    assert_eq!(changes.len() as i64, created, "every change of the run");
    let people = finished["data"]["entities"]["Person"]["created"]
        .as_i64()
        .unwrap();
    assert_eq!(people, 25);
    assert_eq!(
        changes.iter().filter(|c| c["entity"] == "Person").count(),
        25
    );
    assert_eq!(finished["data"]["cursor"], *seqs.last().unwrap());
    assert!(
        bodies
            .iter()
            .filter(|b| b["type"] == "changes")
            .all(|b| b["data"]["changes"].as_array().unwrap().len() <= 100)
    );

    // Listed: delivered, nothing pending or dead, the cursor at the end.
    eventually("the outbox is delivered", async || {
        let listed = setup.run(&["subscriptions", "list", "--json"], &[], None);
        let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
        listed[0]["pending"] == 0 && listed[0]["dead"] == 0
    })
    .await;
    let listed = setup.run(&["subscriptions", "list", "--json"], &[], None);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[0]["cursor"], finished["data"]["cursor"]);
    let id = added["id"].to_string();
    let replay = setup.run(
        &["subscriptions", "replay", &id, "--message", "msg_nope"],
        &[],
        None,
    );
    assert_eq!(replay.status.code(), Some(2), "{}", text(&replay));
    assert!(
        text(&replay).contains("has no dead letter `msg_nope`"),
        "{}",
        text(&replay)
    );
    drop(serve);
    let removed = setup.run(&["subscriptions", "remove", &id], &[], None);
    assert!(removed.status.success(), "{}", text(&removed));
    let listed = setup.run(&["subscriptions", "list"], &[], None);
    assert!(
        text(&listed).contains("no subscriptions"),
        "{}",
        text(&listed)
    );
    handle.shutdown().await;
}
