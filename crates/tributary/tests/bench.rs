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

#[test]
fn full_sync_bench_prints_the_median_run_and_the_range() {
    let output = Command::new(BIN)
        .args([
            "bench",
            "full-sync",
            "--people",
            "300",
            "--backend",
            "sqlite",
            "--runs",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
fn keep_current_bench_checks_the_store_and_counts_requests_per_entity() {
    let output = Command::new(BIN)
        .args(["bench", "keep-current", "--people", "400"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
