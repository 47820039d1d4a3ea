//! A disk that fills up mid-sync, as a user meets it: the database and its
//! spool on a small tmpfs (in a mount namespace of the test's own, so
//! nothing outlives the test). The sync fails with an error that names the
//! cause and the database, the run stays resumable, the spool is left
//! clean; once the disk has room again the same command resumes the same
//! run and the database ends equal to the source.

use std::process::Command;

mod common;
use common::BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_mid_sync_fails_clearly_and_the_sync_resumes() {
    let sim = common::seeded(8, 2_000).await;
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let db = disk.join("t.db").display().to_string();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let sync = format!(
        "TRIBUTARY_TOKEN=sim-token {BIN} sync --db {db} --base-url {url} --rate-limit off \
         --connection c",
        url = sim.base_url()
    );
    // 6 MiB holds about half of the sync's database; 256 MiB all of it.
    let script = format!(
        "mount -t tmpfs -o size=6m tmpfs {disk} || exit 99
         {sync} > /dev/null 2> {out}/first.err; echo $? > {out}/first.code
         find {disk} -name 'identity.tmp' > {out}/leftovers
         mount -o remount,size=256m {disk} || exit 98
         {sync} > /dev/null 2> {out}/second.err; echo $? > {out}/second.code
         {BIN} records export --db {db} > {out}/export.jsonl 2> {out}/export.err
         {BIN} status --db {db} > {out}/status.out 2>&1",
        disk = disk.display(),
        out = out.display(),
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
        "unshare --user --mount could not mount a tmpfs ({status})"
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();

    let first = read("first.err");
    assert_eq!(read("first.code").trim(), "1", "{first}");
    assert!(
        first.contains(&format!(
            "commit failed: the disk holding the database `{db}` is full (SQLite: database or \
             disk is full); free some space, then run the same command again: it resumes where \
             it stopped"
        )),
        "{first}"
    );
    assert!(
        first.contains("the run keeps its checkpoints: run the same command again to resume it"),
        "{first}"
    );
    assert!(!first.contains("transaction depth"), "{first}");
    assert_eq!(read("leftovers"), "", "no half-written spool files");

    let second = read("second.err");
    assert_eq!(read("second.code").trim(), "0", "{second}");
    assert!(
        second.contains("run 1 (full) succeeded (resumed)"),
        "{second}"
    );
    let status = read("status.out");
    assert!(status.contains("#1 full succeeded"), "{status}");
    assert!(!status.contains("#2 "), "one run, resumed: {status}");

    // The database lived on the tmpfs, gone with the namespace: its export
    // equals the source record by record.
    let exported = read("export.jsonl");
    let expected = common::source(&sim.simulator());
    let mut seen = std::collections::HashSet::new();
    for line in exported.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            v["entity"].as_str().unwrap().to_owned(),
            v["external_id"].as_str().unwrap().to_owned(),
        );
        let (attributes, relationships) = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} is not at the source"));
        assert_eq!(&v["data"], attributes, "{key:?}");
        assert_eq!(&v["relationships"], relationships, "{key:?}");
        assert!(seen.insert(key.clone()), "{key:?} exported twice");
    }
    assert_eq!(seen.len(), expected.len(), "every record of the source");
    sim.shutdown().await;
}
