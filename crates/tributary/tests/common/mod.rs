//! Shared by the end-to-end tests: comparing what the binary stored with
//! what the simulator serves, record by record.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// The simulator's data as (type, id) → {attributes, relationships}.
pub fn source(sim: &tributary_sim::Simulator) -> BTreeMap<(String, String), (Value, Value)> {
    sim.dump(None)
        .into_iter()
        .map(|v| {
            (
                (
                    v["type"].as_str().unwrap().to_owned(),
                    v["id"].as_str().unwrap().to_owned(),
                ),
                (v["attributes"].clone(), v["relationships"].clone()),
            )
        })
        .collect()
}

/// `tributary records export` as (entity, id) → {data, relationships}.
pub fn exported(db: &str) -> BTreeMap<(String, String), (Value, Value)> {
    let out = Command::new(BIN)
        .args(["records", "export", "--db", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for key in [
            "connection",
            "entity",
            "external_id",
            "source_updated_at",
            "deleted_at",
            "data",
        ] {
            assert!(v.get(key).is_some(), "export lines carry `{key}`: {line}");
        }
        let key = (
            v["entity"].as_str().unwrap().to_owned(),
            v["external_id"].as_str().unwrap().to_owned(),
        );
        let previous = map.insert(key.clone(), (v["data"].clone(), v["relationships"].clone()));
        assert!(previous.is_none(), "{key:?} exported twice");
    }
    map
}

pub fn assert_same(db: &str, sim: &tributary_sim::Simulator) {
    let expected = source(sim);
    let actual = exported(db);
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (key, value) in &expected {
        assert_eq!(
            &actual[key], value,
            "record {key:?} differs from the source"
        );
    }
}

/// Whether this machine lets a test make a user and mount namespace of its
/// own (`unshare --user --map-root-user --mount`), where it can mount a
/// tmpfs or a read-only bind mount that vanishes with it. Where it cannot
/// (a container without unprivileged namespaces), the test says so loudly
/// and does not run.
pub fn namespaces_work() -> bool {
    let works = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!(
            "SKIPPED: this machine does not allow `unshare --user --mount`; the test needs a \
             mount namespace of its own"
        );
    }
    works
}

/// A simulated PCO account of `people` (the default seed) on a free
/// loopback port; it stops when the test shuts it down or ends.
pub async fn simulator(people: usize) -> tributary_sim::SimHandle {
    seeded(tributary_sim::SimConfig::default().seed, people).await
}

/// [`simulator`] with its data generated from `seed`.
pub async fn seeded(seed: u64, people: usize) -> tributary_sim::SimHandle {
    tributary_sim::serve(
        tributary_sim::SimConfig {
            seed,
            people,
            ..tributary_sim::SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// One plain HTTP/1.1 request on loopback: its status and body.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A server may answer (413) before the whole body is sent.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A new secret key from `tributary connections keygen`.
pub fn keygen() -> String {
    let out = std::process::Command::new(BIN)
        .args(["connections", "keygen"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
