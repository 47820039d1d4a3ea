//! The resilient client, end to end: the real binary against a simulator
//! that throttles, fails, hangs, breaks connections, garbles bodies and
//! expires OAuth2 tokens faster than the sync runs. The final database must
//! equal the source exactly; a refused refresh token must stop the run and
//! mark the connection; a broken entity must fail alone.

use std::process::{Command, Output};
use std::time::Duration;

use tributary_sim::{Faults, SimConfig, SimHandle};

mod common;
use common::{BIN, assert_same};

/// A test environment: a temp dir with the store, and a secret key.
struct Env {
    dir: tempfile::TempDir,
    db: String,
    key: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("faults.db").display().to_string();
        let out = Command::new(BIN)
            .args(["connections", "keygen"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Self { dir, db, key }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("TRIBUTARY_TOKEN")
            .env_remove("TRIBUTARY_SECRET_KEY_FILE")
            .env("TRIBUTARY_SECRET_KEY", &self.key);
        cmd
    }

    /// Adds an OAuth2 connection whose secrets come from the environment.
    fn add_oauth(&self, name: &str, sim: &SimHandle, refresh_token: &str) {
        let out = self
            .command(&[
                "connections",
                "add",
                name,
                "--db",
                &self.db,
                "--auth",
                "oauth2",
                "--client-id",
                &sim.simulator().config().oauth_client_id,
                "--base-url",
                &sim.base_url(),
            ])
            .env(
                "TRIBUTARY_CLIENT_SECRET",
                &sim.simulator().config().oauth_client_secret,
            )
            .env("TRIBUTARY_REFRESH_TOKEN", refresh_token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    fn sync(&self, connection: &str, extra: &[&str]) -> Output {
        self.command(&["sync", "--db", &self.db, "--connection", connection])
            .args(["--rate-limit", "off", "--request-timeout", "1"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn list(&self) -> String {
        let out = self
            .command(&["connections", "list", "--db", &self.db])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }
}

/// A simulator of 300 people with `config`'s other settings.
async fn small_sim(config: SimConfig) -> SimHandle {
    tributary_sim::serve(
        SimConfig {
            people: 300,
            ..config
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_through_every_fault_equals_the_source() {
    let config = SimConfig {
        seed: 11,
        people: 20_000,
        // Expires many times during the sync.
        token_ttl: Duration::from_secs(4),
        faults: Faults {
            p429: 0.05,
            p5xx: 0.05,
            timeout: 0.01,
            reset: 0.01,
            malformed: 0.01,
            // Longer than the client's 1 s request timeout.
            hang: Duration::from_secs(3),
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let sim = tributary_sim::serve(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let env = Env::new();
    let grant = sim.simulator().issue_grant();
    env.add_oauth("faulty", &sim, &grant.refresh_token);

    let out = env.sync("faulty", &[]);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "the sync survives every fault: {stderr}"
    );
    for secret in [
        grant.refresh_token.as_str(),
        grant.access_token.as_str(),
        sim.simulator().config().oauth_client_secret.as_str(),
    ] {
        assert!(!stderr.contains(secret), "no secret in the log");
    }
    assert_same(&env.db, &sim.simulator());

    let stats = sim.simulator().stats();
    let faults = stats.faults;
    assert!(
        faults.too_many_requests > 0
            && faults.server_error > 0
            && faults.timeout > 0
            && faults.reset > 0
            && faults.malformed > 0,
        "every kind of fault was met: {faults:?}"
    );
    assert!(
        stats.oauth.refreshes >= 2,
        "the token expired during the sync and was refreshed: {:?}",
        stats.oauth
    );
    assert_eq!(stats.oauth.errors, 0, "never two refreshes of one token");
    for class in ["Transient", "RateLimited"] {
        assert!(
            stderr.contains(&format!("class={class}")),
            "retries are logged with their class: {class}"
        );
    }

    // The rotated refresh token was persisted: a new process with the stored
    // credentials (its access token long expired) refreshes and syncs. One
    // small entity is enough to prove it; it changes nothing.
    let refreshes = stats.oauth.refreshes;
    let out = env.sync("faulty", &["--entities", "Campus"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("0 created, 0 updated"),
        "{}",
        text(&out.stderr)
    );
    assert!(sim.simulator().stats().oauth.refreshes > refreshes);
    assert_eq!(sim.simulator().stats().oauth.errors, 0);
    assert_same(&env.db, &sim.simulator());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_stops_the_run_and_marks_the_connection() {
    let sim = small_sim(SimConfig::default()).await;
    let env = Env::new();
    env.add_oauth("revoked", &sim, "not-a-valid-refresh-token");

    let out = env.sync("revoked", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("re-authorisation") && stderr.contains("invalid_grant"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-a-valid-refresh-token"), "{stderr}");
    let listing = env.list();
    assert!(listing.contains("needs_reauth"), "{listing}");

    // The next sync refuses at once and says how to fix it.
    let out = env.sync("revoked", &[]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("needs re-authorisation") && stderr.contains("connections add"),
        "{stderr}"
    );

    // New credentials make it active again, and the sync works.
    let grant = sim.simulator().issue_grant();
    env.add_oauth("revoked", &sim, &grant.refresh_token);
    assert!(env.list().contains("active"));
    let out = env.sync("revoked", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_its_entity_and_the_others_go_on() {
    let sim = small_sim(SimConfig::default()).await;
    let env = Env::new();
    // The built-in manifest with two endpoints that do not exist: a list,
    // and a list under each parent.
    let manifest = tributary_manifest::builtin_text("pco")
        .unwrap()
        .replace(
            "list = \"/people/v2/emails\"",
            "list = \"/people/v2/e_mails\"",
        )
        .replace("/household_memberships\"", "/household_members\"");
    let path = env.dir.path().join("broken.toml");
    std::fs::write(&path, manifest).unwrap();

    let out = env
        .command(&[
            "sync",
            "--db",
            &env.db,
            "--manifest",
            path.to_str().unwrap(),
            "--base-url",
            &sim.base_url(),
            "--rate-limit",
            "off",
        ])
        .env("TRIBUTARY_TOKEN", &sim.simulator().config().token)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Email") && stderr.contains("404"),
        "the failed entity and why: {stderr}"
    );
    assert!(
        stderr.contains("HouseholdMembership")
            && stderr.contains("Households answered 404")
            && stderr.contains("the list endpoint is probably wrong"),
        "a child list that 404s for every parent is an error, not an empty entity: {stderr}"
    );
    // Everything else arrived.
    let store = tributary_store::open(&env.db).await.unwrap();
    let connection = store.connection("pco").await.unwrap().unwrap();
    let counts = store.entity_counts(connection.id).await.unwrap();
    for entity in ["Person", "Household", "Address", "PhoneNumber"] {
        assert!(
            counts.iter().any(|c| c.entity == entity && c.live > 0),
            "{entity} synced despite Email failing: {counts:?}"
        );
    }
    for entity in ["Email", "HouseholdMembership"] {
        assert!(!counts.iter().any(|c| c.entity == entity && c.live > 0));
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_syncing_in_parallel_share_one_budget_and_meet_no_429() {
    // A limit the manifest does not declare (it says 100 per 20 s): the
    // client must learn it from the headers and keep every parallel entity
    // sync of the connection inside it.
    let sim = small_sim(SimConfig {
        rate_limit: Some(tributary_sim::RateLimit::new(15, Duration::from_secs(1))),
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    let out = env
        .command(&[
            "sync",
            "--db",
            &env.db,
            "--base-url",
            &sim.base_url(),
            "--rate-limit",
            "auto",
        ])
        .env("TRIBUTARY_TOKEN", &sim.simulator().config().token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats = sim.simulator().stats();
    assert!(stats.total > 60, "enough requests to span several windows");
    assert_eq!(stats.rate_limited, 0, "no 429: {stats:?}");
    assert_same(&env.db, &sim.simulator());
    sim.shutdown().await;
}
