//! What the commands write, wherever it goes: every command that prints
//! ends quietly (exit 0, nothing on stderr) when its reader closes the pipe
//! (`| head -1`), and with a clean error (exit 2) when stdout cannot be
//! written (`> /dev/full`); with `--log-format json` stderr carries JSON
//! only; `RUST_LOG` is honoured like `TRIBUTARY_LOG`.

use std::process::{Command, Stdio};

mod common;
use common::BIN;

/// A database with one synced connection, and the commands that print.
struct Printing {
    dir: tempfile::TempDir,
    db: String,
    manifest: String,
    /// The secret key the stored connections are sealed with.
    key: String,
}

impl Printing {
    async fn new() -> Self {
        let sim = common::simulator(200).await;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db").display().to_string();
        let status = Command::new(BIN)
            .args(["sync", "--db", &db, "--base-url", &sim.base_url()])
            .args(["--rate-limit", "off"])
            .env("TRIBUTARY_TOKEN", "sim-token")
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        sim.shutdown().await;
        let manifest = dir.path().join("pco.toml").display().to_string();
        let shown = Command::new(BIN)
            .args(["manifest", "show", "pco"])
            .output()
            .unwrap();
        std::fs::write(&manifest, shown.stdout).unwrap();
        let key = Command::new(BIN)
            .args(["connections", "keygen"])
            .output()
            .unwrap();
        let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();
        let printing = Self {
            dir,
            db,
            manifest,
            key,
        };
        for name in ["stored", "gone"] {
            let out = printing
                .command(&[
                    "connections",
                    "add",
                    name,
                    "--db",
                    &printing.db,
                    "--auth",
                    "bearer",
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        printing
    }

    /// The binary with `args`, the key and a token in its environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("TRIBUTARY_SECRET_KEY", &self.key)
            .env("TRIBUTARY_TOKEN", "sim-token");
        command
    }

    /// Every command that writes to stdout.
    fn commands(&self) -> Vec<Vec<String>> {
        let db = self.db.as_str();
        let demo_db = self.dir.path().join("demo.db").display().to_string();
        [
            vec!["status", "--db", db],
            vec!["connections", "list", "--db", db],
            vec!["connections", "list", "--db", db, "--json"],
            vec!["records", "export", "--db", db],
            vec!["manifest", "show", "pco"],
            vec!["manifest", "check", &self.manifest],
            vec!["graph", "--adapter", "pco"],
            vec!["graph", "--format", "mermaid"],
            vec!["connections", "keygen"],
            vec!["runs", "list", "--db", db],
            vec!["runs", "show", "1", "--db", db, "--json"],
            vec![
                "connections",
                "add",
                "extra",
                "--db",
                db,
                "--auth",
                "bearer",
            ],
            vec!["connections", "check", "stored", "--db", db],
            vec!["connections", "remove", "gone", "--db", db, "--yes"],
            vec!["demo", "--people", "50", "--exit", "--db", &demo_db],
            vec!["sim", "pco", "--people", "10"],
            vec![
                "bench",
                "full-sync",
                "--people",
                "100",
                "--backend",
                "sqlite",
            ],
        ]
        .into_iter()
        .map(|args| args.into_iter().map(str::to_owned).collect())
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_every_command_quietly() {
    let printing = Printing::new().await;
    for args in printing.commands() {
        // The reader goes away before the command writes (as `| head -1`
        // does once it has its line).
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = printing
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        // (What a command says along the way, like the demo's progress, is
        // its own; nothing about the pipe.)
        for word in ["error", "panicked", "Broken pipe", "os error"] {
            assert!(
                !stderr.contains(word),
                "{args:?}: nothing said about a closed pipe: {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stdout_is_a_clean_error() {
    let printing = Printing::new().await;
    for args in printing.commands() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = printing
            .command(&args)
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.ends_with(
                "error: cannot write to standard output: No space left on device (os error 28)\n"
            ),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_keep_stderr_json_only() {
    let sim = common::simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    let json_lines = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .env("TRIBUTARY_TOKEN", "sim-token")
            .env_remove("TRIBUTARY_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let events: Vec<serde_json::Value> = stderr
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"))
            })
            .collect();
        (out.status.code(), events)
    };
    // A sync: progress and its summary as JSON events.
    let (code, events) = json_lines(&[
        "sync",
        "--db",
        &db,
        "--base-url",
        &sim.base_url(),
        "--rate-limit",
        "off",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "entity finished" && e["entity"] == "Person"),
        "{events:?}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["state"], "succeeded", "{summary}");
    assert_eq!(summary["run"], 1);
    assert!(summary["records"].as_i64().unwrap() > 300);
    // An error: one JSON event that says it.
    let (code, events) = json_lines(&["status", "--db", &format!("{db}.missing")]);
    assert_eq!(code, Some(2));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["level"], "ERROR");
    assert!(
        events[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("there is no database at"),
        "{events:?}"
    );
    // Notes of other commands too.
    let (code, events) = json_lines(&["connections", "keygen"]);
    assert_eq!(code, Some(0));
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("keep this key safe")
    );
    sim.shutdown().await;
}

#[test]
fn rust_log_is_honoured_and_named_in_help() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db").display().to_string();
    for variable in ["RUST_LOG", "TRIBUTARY_LOG"] {
        let out = Command::new(BIN)
            .args([
                "--log-format",
                "json",
                "sync",
                "--db",
                &db,
                "--page-size",
                "0",
            ])
            .env_remove("TRIBUTARY_LOG")
            .env_remove("RUST_LOG")
            .env(variable, "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "{variable}=off silences everything"
        );
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("TRIBUTARY_LOG (or RUST_LOG)"), "{help}");
    assert!(help.contains("3  busy: another process is running this connection's sync"));
}
