//! `tributary webhooks`: a connection's webhook secrets (sealed at rest,
//! never shown), and the inbox of deliveries `tributary serve` received.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tributary_core::{Clock as _, SystemClock};
use tributary_secrets::{SecretKey, Zeroizing, seal_webhook_secret};
use tributary_store::{Delivery, DeliveryQuery, DeliveryState};
use tributary_webhooks::Scheme;

/// Where a secret is read from (never the command line).
const SECRET_VAR: &str = "TRIBUTARY_WEBHOOK_SECRET";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add, list and remove a connection's webhook secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The deliveries received, oldest first.
    List(ListArgs),
    /// One delivery, with its payload.
    Show(ShowArgs),
    /// Applies deliveries again: the ones named, or every dead letter
    /// (`--dead`, optionally only those received since a time). `serve`
    /// applies them at its next poll.
    Replay(ReplayArgs),
    /// Stops applying a connection's deliveries: they are still verified
    /// and stored, and applied once resumed.
    Pause(PauseArgs),
    /// Applies a paused connection's deliveries again.
    Resume(PauseArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Inbox ids (`webhooks list`).
    ids: Vec<i64>,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Every dead letter.
    #[arg(long, conflicts_with = "ids")]
    dead: bool,
    /// With --dead: only those received at or after this time (RFC 3339,
    /// e.g. 2026-12-07T10:00:00Z).
    #[arg(long, requires = "dead", value_parser = timestamp)]
    since: Option<tributary_core::Timestamp>,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The connection.
    connection: String,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

fn timestamp(text: &str) -> Result<tributary_core::Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.to_utc())
        .map_err(|_| format!("`{text}` is not an RFC 3339 time such as 2026-12-07T10:00:00Z"))
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Adds a secret: from TRIBUTARY_WEBHOOK_SECRET, else the first line of
    /// stdin (never an argument: other users see the process list). PCO
    /// has one per subscription (`--event` its event name); a Standard
    /// Webhooks (Svix, Clerk) secret is `whsec_...`. Sealed with the key
    /// from TRIBUTARY_SECRET_KEY or TRIBUTARY_SECRET_KEY_FILE.
    Add(AddArgs),
    /// Ids, events and dates of the secrets (never their values).
    List(SecretsListArgs),
    /// Removes secret ID.
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The connection.
    connection: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// The only event this secret signs (PCO: the subscription's event
    /// name, e.g. people.v2.events.person.updated); default: any.
    #[arg(long)]
    event: Option<String>,
    /// The connection's adapter from this manifest file instead of a
    /// built-in one.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SecretsListArgs {
    /// Only this connection's.
    connection: Option<String>,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The secret's id (`webhooks secrets list`).
    id: i64,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Only this connection's.
    #[arg(long)]
    connection: Option<String>,
    /// Only those in this state.
    #[arg(long, value_parser = state)]
    state: Option<DeliveryState>,
    /// At most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The delivery's inbox id (`webhooks list`).
    id: i64,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    #[arg(long)]
    json: bool,
}

fn state(text: &str) -> Result<DeliveryState, String> {
    DeliveryState::parse(text.trim())
        .ok_or_else(|| format!("unknown state `{text}`: expected pending, applied or dead"))
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Secrets(SecretsCommand::Add(args)) => add(args).await?,
        Command::Secrets(SecretsCommand::List(args)) => list_secrets(args).await?,
        Command::Secrets(SecretsCommand::Remove(args)) => remove(args).await?,
        Command::List(args) => list(args).await?,
        Command::Show(args) => show(args).await?,
        Command::Replay(args) => replay(args).await?,
        Command::Pause(args) => pause(args, true).await?,
        Command::Resume(args) => pause(args, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The secret from the environment, else stdin's first line.
fn read_secret() -> anyhow::Result<Zeroizing<String>> {
    if let Some(value) = std::env::var_os(SECRET_VAR) {
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{SECRET_VAR} is not UTF-8"))?;
        return Ok(Zeroizing::new(value.trim().to_owned()));
    }
    let mut input = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the secret from stdin")?;
    let line = input.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        bail!("no secret: set {SECRET_VAR}, or pipe the secret to stdin");
    }
    Ok(Zeroizing::new(line.to_owned()))
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let key = SecretKey::from_env()?;
    let store = tributary_store::open(&args.db).await?;
    let result = async {
        let connection = store.connection(&args.connection).await?.with_context(|| {
            format!(
                "no connection named `{}`: add it with `tributary connections add`",
                args.connection
            )
        })?;
        let manifest = super::load_manifest(&connection.adapter, args.manifest.as_deref())?;
        let Some(scheme) = manifest.webhook_scheme else {
            bail!(
                "adapter `{}` sends no webhooks: its manifest has no [webhooks] section",
                connection.adapter
            );
        };
        let scheme = scheme_of(scheme);
        if let Some(event) = &args.event
            && event.trim().is_empty()
        {
            bail!("--event is empty: give the event name the secret signs, or leave it out");
        }
        let secret = read_secret()?;
        scheme
            .key(&secret)
            .map_err(|why| anyhow::anyhow!("not a {} secret: {why}", scheme.name()))?;
        let sealed = seal_webhook_secret(&key, &secret, &connection.name);
        let id = store
            .add_webhook_secret(
                connection.id,
                args.event.as_deref(),
                &sealed,
                SystemClock.now(),
            )
            .await?;
        anyhow::Ok(format!(
            "webhook secret {id} of connection `{}` ({}) added, sealed; deliveries to POST /webhooks/{} of `tributary serve` are checked against it",
            connection.name,
            args.event
                .as_deref()
                .map_or("any event".to_owned(), |e| format!("event {e}")),
            connection.name
        ))
    }
    .await;
    store.close().await;
    crate::output::note(&result?);
    Ok(())
}

/// The webhooks crate's scheme for a manifest's.
pub(crate) fn scheme_of(scheme: tributary_manifest::WebhookScheme) -> Scheme {
    match scheme {
        tributary_manifest::WebhookScheme::Pco => Scheme::Pco,
        tributary_manifest::WebhookScheme::StandardWebhooks => Scheme::StandardWebhooks,
    }
}

async fn list_secrets(args: SecretsListArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let connections = match &args.connection {
        Some(name) => vec![
            store
                .connection(name)
                .await?
                .with_context(|| format!("no connection named `{name}`"))?,
        ],
        None => store.connections().await?,
    };
    let mut rows = Vec::new();
    for connection in &connections {
        for secret in store.webhook_secrets(connection.id).await? {
            rows.push(json!({
                "id": secret.id,
                "connection": connection.name,
                "event": secret.event,
                "created_at": secret.created_at,
            }));
        }
    }
    store.close().await;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if rows.is_empty() {
        crate::outln!(
            "no webhook secrets (add one with `tributary webhooks secrets add CONNECTION`)"
        )?;
        return Ok(());
    }
    crate::outln!(
        "{:>6}  {:<16} {:<44} CREATED (UTC)",
        "ID",
        "CONNECTION",
        "EVENT"
    )?;
    for row in &rows {
        crate::outln!(
            "{:>6}  {:<16} {:<44} {}",
            row["id"],
            row["connection"].as_str().unwrap_or_default(),
            row["event"].as_str().unwrap_or("(any)"),
            row["created_at"].as_str().unwrap_or_default()
        )?;
    }
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let store = tributary_store::open(&args.db).await?;
    let removed = store.remove_webhook_secret(args.id).await;
    store.close().await;
    if !removed? {
        bail!(
            "no webhook secret {} (see `tributary webhooks secrets list`)",
            args.id
        );
    }
    crate::output::note(&format!(
        "webhook secret {} removed: deliveries signed with it are refused from now on (by a running `tributary serve` within {} s)",
        args.id,
        crate::server::webhooks::SECRETS_FRESH_FOR.as_secs()
    ));
    Ok(())
}

fn delivery_json(d: &Delivery, connection: &str, payload: bool) -> Value {
    let mut value = json!({
        "id": d.id,
        "connection": connection,
        "delivery_id": d.delivery_id,
        "event": d.event,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "sent_at": d.sent_at,
        "received_at": d.received_at,
        "next_attempt_at": d.next_attempt_at,
        "applied_at": d.applied_at,
        "error": d.error,
    });
    if payload {
        value["payload"] =
            serde_json::from_str(&d.payload).unwrap_or(Value::String(d.payload.clone()));
    }
    value
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let connection_id = super::connection_id(store.as_ref(), args.connection.as_deref()).await?;
    let deliveries = store
        .deliveries(&DeliveryQuery {
            connection_id,
            state: args.state,
            after_id: 0,
            limit: args.limit,
        })
        .await?;
    let names = super::connection_names(store.as_ref()).await?;
    store.close().await;
    if args.json {
        let list: Vec<Value> = deliveries
            .iter()
            .map(|d| delivery_json(d, &super::connection_name(&names, d.connection_id), false))
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if deliveries.is_empty() {
        crate::outln!("no deliveries (`tributary serve` takes them at POST /webhooks/CONNECTION)")?;
        return Ok(());
    }
    crate::outln!(
        "{:>8}  {:<16} {:<8} {:>8}  {:<20} {:<40} DELIVERY",
        "ID",
        "CONNECTION",
        "STATE",
        "ATTEMPTS",
        "RECEIVED (UTC)",
        "EVENT"
    )?;
    for d in &deliveries {
        crate::outln!(
            "{:>8}  {:<16} {:<8} {:>8}  {:<20} {:<40} {}",
            d.id,
            &super::connection_name(&names, d.connection_id),
            d.state.as_str(),
            d.attempts,
            d.received_at.format("%Y-%m-%d %H:%M:%S"),
            d.event,
            d.delivery_id
        )?;
    }
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let found = store
        .deliveries(&DeliveryQuery {
            after_id: args.id - 1,
            limit: 1,
            ..DeliveryQuery::default()
        })
        .await?
        .into_iter()
        .find(|d| d.id == args.id);
    let names = super::connection_names(store.as_ref()).await?;
    store.close().await;
    let d = found
        .with_context(|| format!("no delivery {} (see `tributary webhooks list`)", args.id))?;
    let value = delivery_json(&d, &super::connection_name(&names, d.connection_id), true);
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    crate::outln!(
        "delivery {} of connection `{}`: {} ({}), {} after {} attempt(s)",
        d.id,
        &super::connection_name(&names, d.connection_id),
        d.event,
        d.delivery_id,
        d.state.as_str(),
        d.attempts
    )?;
    crate::outln!("received {}", d.received_at.to_rfc3339())?;
    if let Some(sent) = d.sent_at {
        crate::outln!("sent {}", sent.to_rfc3339())?;
    }
    if let Some(error) = &d.error {
        crate::outln!("error: {error}")?;
    }
    crate::outln!("{}", serde_json::to_string_pretty(&value["payload"])?)?;
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if args.ids.is_empty() && !args.dead {
        bail!(
            "name the deliveries to replay (ids from `tributary webhooks list`), or pass --dead for every dead letter"
        );
    }
    let store = tributary_store::open(&args.db).await?;
    let result = async {
        if !args.ids.is_empty() {
            // Every id must exist: a typo says so and replays nothing.
            for id in &args.ids {
                let found = store
                    .deliveries(&DeliveryQuery {
                        after_id: id - 1,
                        limit: 1,
                        ..DeliveryQuery::default()
                    })
                    .await?;
                if found.first().is_none_or(|d| d.id != *id) {
                    bail!("no delivery {id} (see `tributary webhooks list`); nothing replayed");
                }
            }
        }
        let ids = if args.dead {
            Vec::new()
        } else {
            args.ids.clone()
        };
        Ok(store.replay_deliveries(&ids, args.since).await?)
    }
    .await;
    store.close().await;
    let n = result?;
    crate::output::note(&format!(
        "{n} deliveries pending again; `tributary serve` applies them"
    ));
    Ok(())
}

async fn pause(args: PauseArgs, paused: bool) -> anyhow::Result<()> {
    let store = tributary_store::open(&args.db).await?;
    let result = async {
        let connection = store
            .connection(&args.connection)
            .await?
            .with_context(|| format!("no connection named `{}`", args.connection))?;
        store
            .set_webhooks_paused(connection.id, paused, SystemClock.now())
            .await?;
        anyhow::Ok(connection.name)
    }
    .await;
    store.close().await;
    let name = result?;
    crate::output::note(&match paused {
        true => format!(
            "webhooks of `{name}` paused: deliveries are still verified and stored, and applied once resumed (`tributary webhooks resume {name}`)"
        ),
        false => format!("webhooks of `{name}` resumed: `tributary serve` applies what waits"),
    });
    Ok(())
}
