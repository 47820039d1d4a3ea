//! `tributary connections` as a user runs it: the real binary, a temporary
//! SQLite file, secrets from the environment or stdin, the key from a key
//! file or the environment. No secret may reach the database file, an
//! export, a listing or an error message.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

const TOKEN: &str = "bearer-s3cret-7f3a9c";
const PASSWORD: &str = "basic-s3cret-51d2e8";
const CLIENT_SECRET: &str = "client-s3cret-0b6e44";
const REFRESH_TOKEN: &str = "refresh-s3cret-c9a170";
const ALL_SECRETS: [&str; 4] = [TOKEN, PASSWORD, CLIENT_SECRET, REFRESH_TOKEN];

struct Env {
    dir: tempfile::TempDir,
    db: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db").display().to_string();
        Self { dir, db }
    }

    /// A fresh key from `tributary connections keygen`, in a private file.
    fn key_file(&self, name: &str) -> PathBuf {
        let out = self.run(&["connections", "keygen"], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("TRIBUTARY_SECRET_KEY_FILE"),
            "keygen says how to use the key: {}",
            stderr(&out)
        );
        let key = String::from_utf8(out.stdout).unwrap();
        assert_eq!(key.trim().len(), 44, "base64 of 32 bytes: {key}");
        let path = self.dir.path().join(name);
        std::fs::write(&path, key).unwrap();
        set_mode(&path, 0o600);
        path
    }

    /// The binary with a clean environment plus `env`.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.dir.path());
        for name in [
            "TRIBUTARY_SECRET_KEY",
            "TRIBUTARY_SECRET_KEY_FILE",
            "TRIBUTARY_TOKEN",
            "TRIBUTARY_PASSWORD",
            "TRIBUTARY_CLIENT_SECRET",
            "TRIBUTARY_REFRESH_TOKEN",
            "TRIBUTARY_DB",
        ] {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().copied());
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        let mut child = self
            .command(args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Every byte the database left on disk (the file and its WAL).
    fn database_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("t.db")
            {
                bytes.extend(std::fs::read(path).unwrap());
            }
        }
        assert!(!bytes.is_empty());
        bytes
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

fn assert_no_secret(what: &str, text: &[u8]) {
    for secret in ALL_SECRETS {
        assert!(
            !text.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what} contains the secret {secret}"
        );
    }
}

#[test]
fn added_credentials_are_listed_by_kind_and_stored_only_sealed() {
    let env = Env::new();
    let key = env.key_file("key");
    let key = key.to_str().unwrap();
    let db = env.db.as_str();

    // Bearer, from the environment.
    let out = env.run(
        &["connections", "add", "main", "--db", db, "--auth", "bearer"],
        &[
            ("TRIBUTARY_SECRET_KEY_FILE", key),
            ("TRIBUTARY_TOKEN", TOKEN),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("connection `main` added"),
        "{}",
        stdout(&out)
    );
    // Basic, from stdin.
    let out = env.run_with_stdin(
        &[
            "connections",
            "add",
            "people",
            "--db",
            db,
            "--auth",
            "basic",
            "--user",
            "app-id-1",
            "--base-url",
            "http://127.0.0.1:9/",
            "--secrets-stdin",
        ],
        &[("TRIBUTARY_SECRET_KEY_FILE", key)],
        &format!("# from the vault\nTRIBUTARY_PASSWORD={PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // OAuth2, from the environment.
    let out = env.run(
        &[
            "connections",
            "add",
            "oauth",
            "--db",
            db,
            "--auth",
            "oauth2",
            "--client-id",
            "client-1",
        ],
        &[
            ("TRIBUTARY_SECRET_KEY_FILE", key),
            ("TRIBUTARY_CLIENT_SECRET", CLIENT_SECRET),
            ("TRIBUTARY_REFRESH_TOKEN", REFRESH_TOKEN),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // `list` shows kinds and status, needs no key, and shows no secret.
    let out = env.run(&["connections", "list", "--db", db], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("main") && lines[1].contains("bearer"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("oauth") && lines[2].contains("oauth2"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("people")
            && lines[3].contains("basic")
            && lines[3].contains("active")
            && lines[3].contains("never")
            && lines[3].ends_with("http://127.0.0.1:9"),
        "{table}"
    );
    assert_no_secret("list", &out.stdout);

    let out = env.run(&["connections", "list", "--db", db, "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_secret("list --json", &out.stdout);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["name"], "main");
    assert_eq!(list[0]["auth"], "bearer");
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["last_run"], serde_json::Value::Null);
    assert_eq!(list[0]["base_url"], "https://api.planningcenteronline.com");

    // `status` shows the auth kind and status too.
    let out = env.run(&["status", "--db", db], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("auth: bearer, status: active"),
        "{}",
        stdout(&out)
    );
    assert_no_secret("status", &out.stdout);

    // `check` opens them with the key, and prints only what is not secret.
    let out = env.run(
        &["connections", "check", "people", "--db", db],
        &[("TRIBUTARY_SECRET_KEY_FILE", key)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("basic credentials (version 1, user app-id-1) open with this key"),
        "{}",
        stdout(&out)
    );
    assert_no_secret("check", &out.stdout);

    // Neither the database file nor an export holds a secret in the clear.
    let bytes = env.database_bytes();
    assert!(
        bytes.windows(18).any(|w| w == b"http://127.0.0.1:9"),
        "the bytes read are the database's"
    );
    assert_no_secret("the database file", &bytes);
    let out = env.run(&["records", "export", "--db", db], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_secret("records export", &out.stdout);

    // Adding again replaces the credentials (a new version).
    let out = env.run(
        &["connections", "add", "main", "--db", db, "--auth", "bearer"],
        &[
            ("TRIBUTARY_SECRET_KEY_FILE", key),
            ("TRIBUTARY_TOKEN", "another-token"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("`main` updated") && stdout(&out).contains("version 2"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn adding_without_a_key_says_how_to_make_one() {
    let env = Env::new();
    let out = env.run(
        &[
            "connections",
            "add",
            "main",
            "--db",
            &env.db,
            "--auth",
            "bearer",
        ],
        &[("TRIBUTARY_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(
        message.contains("no secret key configured")
            && message.contains("TRIBUTARY_SECRET_KEY")
            && message.contains("TRIBUTARY_SECRET_KEY_FILE")
            && message.contains("tributary connections keygen"),
        "{message}"
    );
    assert_no_secret("the error", &out.stderr);
    assert!(
        !Path::new(&env.db).exists(),
        "nothing is written without a key"
    );

    // A key file others can read is refused, with the fix.
    let key = env.key_file("key");
    set_mode(&key, 0o644);
    let out = env.run(
        &[
            "connections",
            "add",
            "main",
            "--db",
            &env.db,
            "--auth",
            "bearer",
        ],
        &[
            ("TRIBUTARY_SECRET_KEY_FILE", key.to_str().unwrap()),
            ("TRIBUTARY_TOKEN", TOKEN),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    #[cfg(unix)]
    assert!(
        stderr(&out).contains(&format!("chmod 600 {}", key.display())),
        "{}",
        stderr(&out)
    );

    // A missing secret names the variable, and the flag that reads stdin.
    set_mode(&key, 0o600);
    let out = env.run(
        &[
            "connections",
            "add",
            "main",
            "--db",
            &env.db,
            "--auth",
            "bearer",
        ],
        &[("TRIBUTARY_SECRET_KEY_FILE", key.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--auth bearer needs TRIBUTARY_TOKEN")
            && stderr(&out).contains("--secrets-stdin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_wrong_key_cannot_read_the_credentials() {
    let env = Env::new();
    let right = env.key_file("right");
    let wrong = env.key_file("wrong");
    let out = env.run(
        &[
            "connections",
            "add",
            "main",
            "--db",
            &env.db,
            "--auth",
            "bearer",
        ],
        &[
            ("TRIBUTARY_SECRET_KEY_FILE", right.to_str().unwrap()),
            ("TRIBUTARY_TOKEN", TOKEN),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let wrong_key = std::fs::read_to_string(&wrong).unwrap();
    let out = env.run(
        &["connections", "check", "main", "--db", &env.db],
        &[("TRIBUTARY_SECRET_KEY", wrong_key.trim())],
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("the credentials of connection `main` do not open")
            && message.contains("wrong secret key"),
        "{message}"
    );
    assert_no_secret("the error", &out.stderr);
    assert!(!message.contains(wrong_key.trim()), "the key is not shown");

    // A malformed key says what is wrong without echoing it.
    let out = env.run(
        &["connections", "check", "main", "--db", &env.db],
        &[("TRIBUTARY_SECRET_KEY", "c2hvcnQ=")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bad secret key from TRIBUTARY_SECRET_KEY: decodes to 5 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("c2hvcnQ="));
}

#[test]
fn remove_needs_yes_and_then_deletes() {
    let env = Env::new();
    let key = env.key_file("key");
    for name in ["doomed", "kept"] {
        let out = env.run(
            &[
                "connections",
                "add",
                name,
                "--db",
                &env.db,
                "--auth",
                "bearer",
            ],
            &[
                ("TRIBUTARY_SECRET_KEY_FILE", key.to_str().unwrap()),
                ("TRIBUTARY_TOKEN", TOKEN),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let names = || {
        let out = env.run(&["connections", "list", "--db", &env.db, "--json"], &[]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let out = env.run(&["connections", "remove", "doomed", "--db", &env.db], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("without --yes"), "{}", stderr(&out));
    assert_eq!(names(), ["doomed", "kept"]);

    let out = env.run(
        &["connections", "remove", "doomed", "--db", &env.db, "--yes"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed connection `doomed`"));
    assert_eq!(names(), ["kept"]);

    let out = env.run(
        &["connections", "remove", "doomed", "--db", &env.db, "--yes"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no connection named `doomed`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_connection_keeps_its_own_request_budget() {
    let env = Env::new();
    let key = env.key_file("key");
    let out = env.run(
        &[
            "connections",
            "add",
            "clerk",
            "--adapter",
            "clerk",
            "--db",
            &env.db,
            "--auth",
            "bearer",
            "--rate-limit",
            "1000/10s",
        ],
        &[
            ("TRIBUTARY_SECRET_KEY_FILE", key.to_str().unwrap()),
            ("TRIBUTARY_TOKEN", TOKEN),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let budget = || {
        let out = env.run(&["connections", "list", "--db", &env.db, "--json"], &[]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list[0]["rate_limit"].clone()
    };
    assert_eq!(budget(), "1000/10s");
    for (setting, listed, said) in [
        (
            "off",
            serde_json::json!("off"),
            "its own request budget, off",
        ),
        ("250/1s", serde_json::json!("250/1s"), "250/1s"),
        (
            "auto",
            serde_json::Value::Null,
            "the manifest's request budget",
        ),
    ] {
        let out = env.run(
            &[
                "connections",
                "rate-limit",
                "clerk",
                setting,
                "--db",
                &env.db,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(said), "{}", stdout(&out));
        assert_eq!(budget(), listed);
    }
    let out = env.run(
        &[
            "connections",
            "rate-limit",
            "clerk",
            "lots",
            "--db",
            &env.db,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a rate limit"),
        "{}",
        stderr(&out)
    );
    let out = env.run(
        &[
            "connections",
            "rate-limit",
            "nobody",
            "off",
            "--db",
            &env.db,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no connection named `nobody`"),
        "{}",
        stderr(&out)
    );
}
