//! `tributary status`: connections, their latest runs and record counts.

use std::process::ExitCode;

use super::thousands;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Runs to show per connection (1 to 1,000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    runs: u32,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Only reads: works on a read-only file, and creates nothing.
    let store = tributary_store::open_read_only(&args.db).await?;
    let connections = store.connections().await?;
    if connections.is_empty() {
        crate::outln!("no connections yet (run `tributary demo` or `tributary sync`)")?;
    }
    for connection in connections {
        crate::outln!(
            "connection {} ({}, {})",
            connection.name,
            connection.adapter,
            connection.base_url
        )?;
        crate::outln!(
            "  auth: {}, status: {}",
            connection
                .credentials_kind
                .as_deref()
                .unwrap_or("none stored"),
            super::connections::status_text(&connection)
        )?;
        let counts = store.entity_counts(connection.id).await?;
        let total: i64 = counts.iter().map(|c| c.live).sum();
        crate::outln!("  records: {}", thousands(total))?;
        for c in &counts {
            let deleted = if c.deleted > 0 {
                format!(" ({} deleted)", thousands(c.deleted))
            } else {
                String::new()
            };
            crate::outln!("    {:<22} {:>10}{deleted}", c.entity, thousands(c.live))?;
        }
        let quarantined = store.quarantined(Some(connection.id), 1000).await?;
        if !quarantined.is_empty() {
            crate::outln!("  quarantined: {}", quarantined.len())?;
            for q in quarantined.iter().take(5) {
                crate::outln!("    {} {}: {}", q.entity, q.external_id, q.error)?;
            }
        }
        crate::outln!("  runs:")?;
        for run in store.runs(Some(connection.id), args.runs).await? {
            let c = run.counts;
            let took = run
                .finished_at
                .map(|f| format!(" in {:.1}s", (f - run.started_at).as_seconds_f64()))
                .unwrap_or_default();
            crate::outln!(
                "    #{} {} {} started {}{took}: {} pages, {} created, {} updated, {} unchanged, {} quarantined",
                run.id,
                run.kind.as_str(),
                run.state.as_str(),
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                thousands(c.pages),
                thousands(c.created),
                thousands(c.updated),
                thousands(c.unchanged),
                thousands(c.quarantined),
            )?;
            if let Some(error) = &run.error {
                crate::outln!("      error: {error}")?;
            }
            if run.state == tributary_core::RunState::Running {
                for cp in store.checkpoints(run.id).await? {
                    let total = cp
                        .total
                        .map_or(String::new(), |t| format!("/{}", thousands(t)));
                    crate::outln!(
                        "      {:<22} {:<8} {}{total} records, cursor {}",
                        cp.entity,
                        cp.state.as_str(),
                        thousands(cp.records),
                        cp.cursor.0
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
