//! `tributary bench full-sync` as a user runs it: the real binary starts
//! its own simulator and syncs it, here a small account into SQLite three
//! times. Checks the table it prints, not the speed (never timed in tests).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

fn number(cell: &str) -> f64 {
    cell.trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: `{cell}`"))
}

/// The stdout of `tributary ARGS`, which must succeed.
fn bench(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn full_sync_bench_prints_the_median_run_and_the_range() {
    let stdout = bench(&[
        "bench",
        "full-sync",
        "--people",
        "300",
        "--backend",
        "sqlite",
        "--runs",
        "3",
    ]);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| SQLite"))
        .map(|l| l.trim_matches('|').split('|').collect())
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    let row = &rows[0];
    assert_eq!(row[1].trim(), "300");
    // About 5.4 records per person: every entity of the account.
    let records = number(row[2]);
    assert!((1_200.0..2_400.0).contains(&records), "{stdout}");
    assert!(number(row[3]) > 0.0 && number(row[4]) > 0.0);
    // The median run lies within the range of the three.
    let (runs, range) = row[9].trim().split_once(": ").expect("runs: low–high");
    assert_eq!(runs, "3");
    let (low, high) = range.split_once('–').expect("low–high");
    let median = number(row[5]);
    assert!(number(low) <= median && median <= number(high), "{stdout}");
    assert!(number(row[7]) > 0.0, "peak RSS: {stdout}");
    // The database, its log and spool at their largest, over the database.
    assert!(number(row[8]) >= 1.0, "peak disk: {stdout}");
}

#[test]
fn full_sync_bench_runs_against_another_binary_in_turns_over_a_slow_api() {
    // The binary against itself: two rows of one entity, and the ratio.
    let stdout = bench(&[
        "bench",
        "full-sync",
        "--people",
        "200",
        "--entities",
        "Person",
        "--latency-ms",
        "5",
        "--runs",
        "2",
        "--against",
        BIN,
    ]);
    for binary in ["against", "this"] {
        let row: Vec<&str> = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {binary} | SQLite")))
            .unwrap_or_else(|| panic!("no row for {binary}: {stdout}"))
            .trim_matches('|')
            .split('|')
            .collect();
        assert_eq!(number(row[3]), 200.0, "Person only: {stdout}");
        assert!(row[10].trim().starts_with("2: "), "{stdout}");
    }
    let ratio = stdout
        .lines()
        .find_map(|l| l.strip_prefix("this ÷ against, records/s of each run's pair: median "))
        .unwrap_or_else(|| panic!("no ratio: {stdout}"));
    let median = number(ratio.split_whitespace().next().unwrap());
    assert!(median > 0.0, "{stdout}");

    let missing = Command::new(BIN)
        .args(["bench", "full-sync", "--against", "/nonexistent/tributary"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("--against /nonexistent/tributary: no such file"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn keep_current_bench_checks_the_store_and_counts_requests_per_entity() {
    let stdout = bench(&["bench", "keep-current", "--people", "400"]);
    let row = |entity: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {entity} |")))
            .unwrap_or_else(|| panic!("no row for {entity}: {stdout}"));
        line.trim_matches('|')
            .split('|')
            .skip(1)
            .filter(|cell| !cell.contains('%'))
            .map(number)
            .collect()
    };
    // full, delta, reconcile: the delta reads one page of changed people,
    // the addresses whole.
    let person = row("Person");
    assert_eq!(person.len(), 3, "{stdout}");
    assert_eq!(person[1], 1.0, "{stdout}");
    let address = row("Address");
    assert_eq!(address[0], address[1], "{stdout}");
    assert!(
        stdout.contains("After the delta the store equals the source"),
        "{stdout}"
    );
}

#[test]
fn webhooks_bench_acknowledges_every_delivery_and_finds_each_in_the_inbox_once() {
    let stdout = bench(&[
        "bench",
        "webhooks",
        "--deliveries",
        "300",
        "--concurrency",
        "8",
        "--duplicates",
        "0.1",
        "--apply",
        "5",
        "--apply-rate",
        "50",
    ]);
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("| SQLite"))
        .unwrap_or_else(|| panic!("no SQLite row: {stdout}"))
        .trim_matches('|')
        .split('|')
        .collect();
    // 300 deliveries and 30 retries of them; each stored once.
    assert_eq!(number(row[1]), 330.0, "{stdout}");
    assert_eq!(number(row[8]), 300.0, "stored: {stdout}");
    assert_eq!(number(row[9]), 30.0, "duplicates answered: {stdout}");
    assert_eq!((number(row[10]), number(row[11])), (0.0, 0.0), "{stdout}");
    let (p50, p99) = (number(row[5]), number(row[6]));
    assert!(p50 > 0.0 && p50 <= p99, "{stdout}");
    // Five changes at the simulator, each applied through its webhook.
    let applied: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| SQLite"))
        .nth(1)
        .unwrap_or_else(|| panic!("no apply row: {stdout}"))
        .trim_matches('|')
        .split('|')
        .collect();
    assert_eq!(
        (number(applied[1]), number(applied[2])),
        (5.0, 5.0),
        "{stdout}"
    );
    assert!(number(applied[3]) <= number(applied[4]), "{stdout}");
}

#[test]
fn feed_bench_delivers_every_change_to_every_subscriber() {
    let stdout = bench(&[
        "bench",
        "feed",
        "--people",
        "150",
        "--subscribers",
        "6",
        "--sample",
        "5",
        "--trickle",
        "3",
    ]);
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("| 150 "))
        .unwrap_or_else(|| panic!("no full-sync row: {stdout}"))
        .trim_matches('|')
        .split('|')
        .collect();
    assert_eq!(number(row[1]), 6.0, "{stdout}");
    // Every change went to every subscriber (the bench fails otherwise).
    assert!(number(row[6]) > 500.0, "{stdout}");
    let trickle: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("| 3 "))
        .unwrap_or_else(|| panic!("no trickle row: {stdout}"))
        .trim_matches('|')
        .split('|')
        .collect();
    // Each of the three changes measured at each of the 3 + 3 subscribers.
    assert_eq!(trickle[2].trim(), "9 / 9", "{stdout}");
}

#[test]
fn records_bench_pages_every_record_with_a_token() {
    let stdout = bench(&[
        "bench",
        "records",
        "--people",
        "150",
        "--runs",
        "1",
        "--searches",
        "5",
    ]);
    assert!(
        stdout.lines().any(|l| l.starts_with("| SQLite")),
        "{stdout}"
    );
}
