//! `tributary audit CONNECTION ENTITY ID`: a record's mutations, newest
//! first — each change, when, which fields it changed, the run that made it
//! and the webhook deliveries behind it (as long as the change feed keeps
//! its rows: `serve --feed-retention-days`).

use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connection's name.
    connection: String,
    /// The entity (e.g. Person).
    entity: String,
    /// The record's id at the source.
    id: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// At most this many changes (1 to 10,000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// As a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let result = trail(&args, store.as_ref()).await;
    store.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn trail(args: &Args, store: &dyn tributary_store::Store) -> anyhow::Result<()> {
    let connection = store.connection(&args.connection).await?.with_context(|| {
        format!(
            "no connection `{}` (see `tributary connections list`)",
            args.connection
        )
    })?;
    store
        .record(connection.id, &args.entity, &args.id)
        .await?
        .with_context(|| {
            format!(
                "connection `{}` has no {} `{}` (see `tributary records list`)",
                args.connection, args.entity, args.id
            )
        })?;
    let entries =
        tributary_store::audit(store, connection.id, &args.entity, &args.id, args.limit).await?;
    let names = super::connection_names(store).await?;
    if args.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| crate::server::api::audit_json(e, &names))
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if entries.is_empty() {
        crate::outln!(
            "no changes kept for this record (the feed's retention may have expired them)"
        )?;
    }
    for entry in &entries {
        let change = &entry.change;
        let fields = change
            .fields
            .as_ref()
            .map_or(String::new(), |f| format!(" [{}]", f.join(", ")));
        let by = match &entry.run {
            Some(run) => format!("run {} ({} sync)", run.id, run.kind.as_str()),
            None => "no run".to_owned(),
        };
        crate::outln!(
            "#{:<8} {} {:<8}{fields} by {by}",
            change.seq,
            change.changed_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            change.kind.as_str(),
        )?;
        for d in &entry.deliveries {
            crate::outln!(
                "           webhook delivery {} `{}` ({}), received {}",
                d.id,
                d.delivery_id,
                d.event,
                d.received_at.format("%Y-%m-%d %H:%M:%S UTC")
            )?;
        }
    }
    Ok(())
}
