//! One module per command.

pub mod audit;
pub mod bench;
mod bench_client;
mod bench_current;
mod bench_feed;
mod bench_records;
mod bench_webhooks;
pub mod connections;
pub mod demo;
mod demo_clerk;
pub mod manifest;
pub mod records;
pub mod runs;
pub mod schedules;
pub mod serve;
pub mod sim;
pub mod status;
pub mod subscriptions;
pub mod sync;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;

use anyhow::Context as _;
use tributary_manifest::Manifest;
use tributary_store::Connection;

/// Where a connection's data lives and which API it talks to: the flags
/// `sync` and `connections add` share.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The store: a SQLite file path (created if missing) or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    pub db: String,
    /// Built-in adapter name (default: a stored connection's own, else pco).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Load the adapter from this manifest file instead of a built-in one.
    #[arg(long)]
    pub manifest: Option<std::path::PathBuf>,
    /// The API's base URL (defaults to the manifest's, or the connection's).
    #[arg(long)]
    pub base_url: Option<String>,
}

impl Target {
    /// The adapter's manifest: `--manifest`, else `--adapter`, else the
    /// adapter of the stored connection (`stored`), else pco. An adapter
    /// other than the stored connection's is refused.
    pub fn load_manifest(&self, stored: Option<&Connection>) -> anyhow::Result<Arc<Manifest>> {
        let adapter = match (self.adapter.as_deref(), stored) {
            (Some(given), Some(connection)) if given != connection.adapter => anyhow::bail!(
                "connection `{}` uses adapter `{}`, not `{given}`: leave out --adapter, or name another connection",
                connection.name,
                connection.adapter
            ),
            (Some(given), _) => given,
            (None, Some(connection)) => connection.adapter.as_str(),
            (None, None) => "pco",
        };
        load_manifest(adapter, self.manifest.as_deref())
    }

    /// The stored connection `name`, if the store has it. The store is
    /// opened as the command will open it (created and migrated if need
    /// be), and a store that cannot be read is an error: guessing the
    /// adapter of a connection that cannot be looked up is never right.
    pub async fn stored_connection(&self, name: &str) -> anyhow::Result<Option<Connection>> {
        if tributary_store::is_new_sqlite(&self.db) {
            return Ok(None);
        }
        let store = tributary_store::open(&self.db).await?;
        let connection = store.connection(name).await;
        store.close().await;
        Ok(connection?)
    }
}

/// Loads the manifest: a file if given, else the built-in adapter.
pub fn load_manifest(
    adapter: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<Manifest>> {
    let manifest = match file {
        Some(path) => tributary_manifest::load(path)?,
        None => tributary_manifest::builtin(adapter).with_context(|| {
            format!(
                "no built-in adapter `{adapter}` (built in: {}); pass --manifest FILE for your own",
                tributary_manifest::builtin_names()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })??,
    };
    Ok(Arc::new(manifest))
}

/// The id of the connection named `name` (`None`: every connection).
pub async fn connection_id(
    store: &dyn tributary_store::Store,
    name: Option<&str>,
) -> anyhow::Result<Option<i64>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let connection = store
        .connection(name)
        .await?
        .with_context(|| format!("no connection named `{name}`"))?;
    Ok(Some(connection.id))
}

/// Connection names by id.
pub async fn connection_names(
    store: &dyn tributary_store::Store,
) -> anyhow::Result<Vec<(i64, String)>> {
    Ok(store
        .connections()
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect())
}

pub fn connection_name(names: &[(i64, String)], id: i64) -> String {
    names
        .iter()
        .find(|(i, _)| *i == id)
        .map_or_else(|| format!("#{id}"), |(_, name)| name.clone())
}

/// The most people a simulated account may have.
pub const MAX_PEOPLE: u64 = 10_000_000;

/// `--people`: a count from `min` to [`MAX_PEOPLE`].
pub fn people(min: u64) -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser as _;
    clap::value_parser!(u64)
        .range(min..=MAX_PEOPLE)
        .map(|n| n as usize)
}

/// A share of requests: a probability from 0 to 1.
pub fn probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a probability between 0 and 1; got {s:?}")),
    }
}

/// Thousands separators for humans.
pub use tributary_core::thousands;
