//! `tributary records export`: JSON Lines, one record per line.

use std::io::Write as _;
use std::process::ExitCode;

use serde_json::json;
use tributary_store::RecordQuery;

use crate::output::StdoutError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write records as JSON Lines to stdout.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Only this connection.
    #[arg(long)]
    connection: Option<String>,
    /// Only this entity (the source type, e.g. Person).
    #[arg(long)]
    entity: Option<String>,
    /// Also records marked deleted.
    #[arg(long)]
    include_deleted: bool,
}

async fn write_records(
    store: &dyn tributary_store::Store,
    connection_id: Option<i64>,
    args: &ExportArgs,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = 0;
    loop {
        let batch = store
            .records(&RecordQuery {
                connection_id,
                entity: args.entity.clone(),
                after_id: after,
                limit: 1000,
                include_deleted: args.include_deleted,
            })
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for r in batch {
            let data = r
                .raw
                .get("attributes")
                .cloned()
                .unwrap_or_else(|| r.raw.clone());
            let line = json!({
                "connection": r.connection,
                "entity": r.entity,
                "external_id": r.external_id,
                "id": r.id,
                "canonical_entity": r.canonical_entity,
                "source_updated_at": r.source_updated_at,
                "first_seen_at": r.first_seen_at,
                "last_modified_at": r.last_modified_at,
                "deleted_at": r.deleted_at,
                "content_hash": r.content_hash,
                "data": data,
                "relationships": r.raw.get("relationships"),
                "canonical": r.canonical,
            });
            writeln!(out, "{line}").map_err(StdoutError)?;
        }
    }
    out.flush().map_err(StdoutError)?;
    Ok(())
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Export(args) = command;
    let store = tributary_store::open_read_only(&args.db).await?;
    let connection_id = super::connection_id(store.as_ref(), args.connection.as_deref()).await?;
    // A reader that closed the pipe (`| head`) ends it quietly (main).
    write_records(store.as_ref(), connection_id, &args).await?;
    Ok(ExitCode::SUCCESS)
}
