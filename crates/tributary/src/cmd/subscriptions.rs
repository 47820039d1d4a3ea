//! `tributary subscriptions`: webhooks out — URLs that `tributary serve`
//! sends a connection's changes and run ends to, signed (Standard
//! Webhooks) with a secret of their own, sealed at rest and shown once.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tributary_core::{Clock as _, SystemClock};
use tributary_secrets::SecretKey;
use tributary_store::{
    Enqueue, Message, MessageQuery, MessageState, NewSubscription, Store, Subscription,
    SubscriptionEvent, SubscriptionState,
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Subscribes URL to a connection's changes (every entity's, or
    /// --entity's) and/or the ends of its runs, from now on. Prints the
    /// subscription's id and its signing secret (`whsec_...`) — shown this
    /// once: give it to the receiver, which checks each request's
    /// `webhook-signature` with it. Sealed with the key from
    /// TRIBUTARY_SECRET_KEY or TRIBUTARY_SECRET_KEY_FILE.
    Add(AddArgs),
    /// Every subscription: state, cursor, messages pending and dead, last
    /// error.
    List(ListArgs),
    /// One subscription and its undelivered messages (their ids are what
    /// `replay --message` takes).
    Show(ShowArgs),
    /// Removes a subscription and its outbox.
    Remove(IdArgs),
    /// Sends dead letters again (every one with --all, or those named
    /// with --message), from their first attempt.
    Replay(ReplayArgs),
    /// Enables a disabled subscription (its receiver answered 410 Gone, or
    /// its cursor expired): what waits is sent, and what changed
    /// meanwhile follows.
    Enable(IdArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The connection whose changes are sent.
    connection: String,
    /// Where messages are POSTed (http:// or https://).
    url: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Only this entity's changes (default: every entity's).
    #[arg(long)]
    entity: Option<String>,
    /// What is sent, comma-separated: `changes` (batches of changes),
    /// `sync.finished` (a run ended, with its counts).
    #[arg(long, value_delimiter = ',', value_parser = event, default_value = "changes,sync.finished")]
    events: Vec<SubscriptionEvent>,
    /// The connection's adapter from this manifest file instead of a
    /// built-in one (to check --entity).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The id and the secret as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The subscription's id (`subscriptions list`).
    id: i64,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The subscription's id (`subscriptions list`).
    id: i64,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The subscription's id (`subscriptions list`).
    id: i64,
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Every dead letter of the subscription.
    #[arg(long, conflicts_with = "message")]
    all: bool,
    /// This dead letter (its id, `msg_...`, from `subscriptions show`);
    /// may be repeated.
    #[arg(long)]
    message: Vec<String>,
}

fn event(text: &str) -> Result<SubscriptionEvent, String> {
    SubscriptionEvent::parse(text.trim()).ok_or_else(|| {
        format!("unknown event `{text}`: expected changes or sync.finished (comma-separated)")
    })
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add(args) => add(args).await?,
        Command::List(args) => list(args).await?,
        Command::Show(args) => show(args).await?,
        Command::Remove(args) => remove(args).await?,
        Command::Replay(args) => replay(args).await?,
        Command::Enable(args) => enable(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` on the store at `db` (opened for writing), then closes it.
async fn with_store<T>(
    db: &str,
    work: impl AsyncFnOnce(&dyn Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = tributary_store::open(db).await?;
    let result = work(store.as_ref()).await;
    store.close().await;
    result
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    // Everything is checked before anything is written.
    tributary_outbound::check_url(&args.url).map_err(anyhow::Error::msg)?;
    if args.events.is_empty() {
        bail!("--events is empty: give changes, sync.finished or both");
    }
    if let Some(entity) = &args.entity
        && !args.events.contains(&SubscriptionEvent::Changes)
    {
        bail!(
            "--entity {entity} filters changes, and --events has no `changes`: add it, or leave out --entity"
        );
    }
    let key = SecretKey::from_env()?;
    let (subscription, connection, secret) = with_store(&args.db, async |store| {
        let connection = store.connection(&args.connection).await?.with_context(|| {
            format!(
                "no connection named `{}`: add it with `tributary connections add`, or see `tributary connections list`",
                args.connection
            )
        })?;
        if let Some(entity) = &args.entity {
            let manifest = super::load_manifest(&connection.adapter, args.manifest.as_deref())?;
            if manifest.entity(entity).is_none() {
                bail!(
                    "adapter `{}` has no entity `{entity}`: give one of {}, or leave out --entity",
                    connection.adapter,
                    manifest
                        .entities
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let secret = tributary_secrets::generate_signing_secret();
        let sealed =
            tributary_secrets::seal_subscription_secret(&key, &secret, &connection.name);
        // From now on: changes after the feed's head.
        let cursor = store.feed_head().await?;
        let subscription = store
            .add_subscription(&NewSubscription {
                connection_id: connection.id,
                entity: args.entity.as_deref(),
                url: &args.url,
                sealed_secret: &sealed,
                wants_changes: args.events.contains(&SubscriptionEvent::Changes),
                wants_finished: args.events.contains(&SubscriptionEvent::SyncFinished),
                cursor,
                now: SystemClock.now(),
            })
            .await?;
        Ok((subscription, connection.name, secret))
    })
    .await?;
    if args.json {
        let mut value = subscription_json(&subscription, &connection, None);
        value["secret"] = json!(secret.as_str());
        crate::outln!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        crate::outln!("{}", subscription.id)?;
        crate::outln!("{}", secret.as_str())?;
    }
    crate::output::note(&format!(
        "subscription {} added: {} of connection `{connection}` ({}) go to {} once `tributary serve` runs; \
         its signing secret (above) is shown this once — the receiver checks each request's webhook-signature with it",
        subscription.id,
        subscription
            .events()
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(" and "),
        subscription
            .entity
            .as_deref()
            .map_or("every entity".to_owned(), |e| format!("entity {e}")),
        tributary_core::redact_url(&subscription.url),
    ));
    Ok(())
}

fn subscription_json(
    s: &Subscription,
    connection: &str,
    stats: Option<&tributary_store::OutboxStats>,
) -> Value {
    let mut value = json!({
        "id": s.id,
        "connection": connection,
        "entity": s.entity,
        "url": tributary_core::redact_url(&s.url),
        "events": s.events().iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "state": s.state.as_str(),
        "disabled_reason": s.disabled_reason,
        "cursor": s.cursor,
        "created_at": s.created_at,
    });
    if let Some(stats) = stats {
        value["pending"] = json!(stats.pending);
        value["delivered"] = json!(stats.delivered);
        value["dead"] = json!(stats.dead);
        value["last_error"] = json!(stats.last_error);
        value["last_delivered_at"] = json!(stats.last_delivered_at);
    }
    value
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let read = async {
        let subscriptions = store.subscriptions().await?;
        let stats = store.outbox_stats().await?;
        let names = super::connection_names(store.as_ref()).await?;
        anyhow::Ok((subscriptions, stats, names))
    }
    .await;
    store.close().await;
    let (subscriptions, stats, names) = read?;
    let rows: Vec<Value> = subscriptions
        .iter()
        .map(|s| {
            let stats = stats.iter().find(|t| t.subscription_id == s.id);
            subscription_json(s, &super::connection_name(&names, s.connection_id), stats)
        })
        .collect();
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if rows.is_empty() {
        crate::outln!(
            "no subscriptions (add one with `tributary subscriptions add CONNECTION URL`)"
        )?;
        return Ok(());
    }
    crate::outln!(
        "{:>4}  {:<16} {:<14} {:<22} {:<8} {:>8} {:>7} {:>5}  URL / LAST ERROR",
        "ID",
        "CONNECTION",
        "ENTITY",
        "EVENTS",
        "STATE",
        "CURSOR",
        "PENDING",
        "DEAD"
    )?;
    for row in &rows {
        let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
        let events: Vec<&str> = row["events"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        crate::outln!(
            "{:>4}  {:<16} {:<14} {:<22} {:<8} {:>8} {:>7} {:>5}  {}",
            row["id"],
            text("connection"),
            row["entity"].as_str().unwrap_or("(all)"),
            events.join(","),
            text("state"),
            row["cursor"],
            row["pending"],
            row["dead"],
            text("url")
        )?;
        let why = row["disabled_reason"]
            .as_str()
            .or_else(|| row["last_error"].as_str());
        if let Some(why) = why {
            crate::outln!("{:>4}  {why}", "")?;
        }
    }
    Ok(())
}

/// Subscription `id`, or an error that says how to find one.
async fn subscription(store: &dyn Store, id: i64) -> anyhow::Result<Subscription> {
    store.subscription(id).await?.with_context(|| {
        format!("no subscription {id} (see `tributary subscriptions list`); nothing changed")
    })
}

fn message_json(m: &Message) -> Value {
    json!({
        "message_id": m.message_id,
        "event": m.event,
        "state": m.state.as_str(),
        "attempts": m.attempts,
        "next_attempt_at": m.next_attempt_at,
        "last_status": m.last_status,
        "last_error": m.last_error,
        "created_at": m.created_at,
        "delivered_at": m.delivered_at,
    })
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let read = async {
        let s = subscription(store.as_ref(), args.id).await?;
        let mut undelivered = Vec::new();
        for state in [MessageState::Pending, MessageState::Dead] {
            undelivered.extend(
                store
                    .messages(&MessageQuery {
                        subscription_id: Some(s.id),
                        state: Some(state),
                        after_id: 0,
                        limit: 1_000,
                    })
                    .await?,
            );
        }
        undelivered.sort_by_key(|m| m.id);
        let stats = store.outbox_stats().await?;
        let names = super::connection_names(store.as_ref()).await?;
        anyhow::Ok((s, undelivered, stats, names))
    }
    .await;
    store.close().await;
    let (s, undelivered, stats, names) = read?;
    let mut value = subscription_json(
        &s,
        &super::connection_name(&names, s.connection_id),
        stats.iter().find(|t| t.subscription_id == s.id),
    );
    value["messages"] = undelivered.iter().map(message_json).collect();
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    crate::outln!(
        "subscription {} of connection `{}` ({}): {} to {}",
        s.id,
        value["connection"].as_str().unwrap_or_default(),
        s.entity.as_deref().unwrap_or("every entity"),
        s.events()
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        value["url"].as_str().unwrap_or_default()
    )?;
    crate::outln!(
        "{}, cursor {}, {} delivered",
        s.state.as_str(),
        s.cursor,
        value["delivered"]
    )?;
    if let Some(reason) = &s.disabled_reason {
        crate::outln!("disabled: {reason}")?;
    }
    if undelivered.is_empty() {
        crate::outln!("nothing waits")?;
    }
    for m in &undelivered {
        crate::outln!(
            "{}  {:<13} {:<7} attempts {:>2}  next {}  {}",
            m.message_id,
            m.event,
            m.state.as_str(),
            m.attempts,
            m.next_attempt_at.format("%Y-%m-%d %H:%M:%S"),
            m.last_error.as_deref().unwrap_or_default()
        )?;
    }
    Ok(())
}

async fn remove(args: IdArgs) -> anyhow::Result<()> {
    let removed = with_store(&args.db, async |store| {
        Ok(store.remove_subscription(args.id).await?)
    })
    .await?;
    if !removed {
        bail!(
            "no subscription {} (see `tributary subscriptions list`); nothing changed",
            args.id
        );
    }
    crate::output::note(&format!(
        "subscription {} removed with its messages",
        args.id
    ));
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if !args.all && args.message.is_empty() {
        bail!(
            "name the dead letters to send again (--message MSG, ids from `tributary subscriptions show {}`), or pass --all",
            args.id
        );
    }
    let (n, state) = with_store(&args.db, async |store| {
        let s = subscription(store, args.id).await?;
        // Every message named must be a dead letter of it: a typo says so
        // and replays nothing.
        if !args.message.is_empty() {
            let dead = store
                .messages(&MessageQuery {
                    subscription_id: Some(s.id),
                    state: Some(MessageState::Dead),
                    after_id: 0,
                    limit: u32::MAX,
                })
                .await?;
            for id in &args.message {
                if !dead.iter().any(|m| &m.message_id == id) {
                    bail!(
                        "subscription {} has no dead letter `{id}` (see `tributary subscriptions show {}`); nothing replayed",
                        s.id,
                        s.id
                    );
                }
            }
        }
        let n = store
            .replay_messages(s.id, &args.message, SystemClock.now())
            .await?;
        Ok((n, s.state))
    })
    .await?;
    let mut note = format!(
        "{n} dead letter(s) of subscription {} pending again; `tributary serve` sends them",
        args.id
    );
    if state == SubscriptionState::Disabled {
        note.push_str(&format!(
            " once the subscription is enabled (`tributary subscriptions enable {}`)",
            args.id
        ));
    }
    crate::output::note(&note);
    Ok(())
}

async fn enable(args: IdArgs) -> anyhow::Result<()> {
    let skipped = with_store(&args.db, async |store| {
        let s = subscription(store, args.id).await?;
        let now = SystemClock.now();
        store
            .set_subscription_state(s.id, SubscriptionState::Active, None, now)
            .await?;
        // A cursor the feed's retention passed resumes after what it
        // deleted (the changes are gone; the subscription was told so).
        let horizon = store.feed_horizon().await?;
        if s.cursor < horizon {
            store
                .enqueue_messages(&Enqueue {
                    subscription_id: s.id,
                    from_cursor: s.cursor,
                    to_cursor: horizon,
                    messages: &[],
                    finished: &[],
                    now,
                })
                .await?;
            return Ok(Some((s.cursor, horizon)));
        }
        Ok(None)
    })
    .await?;
    let mut note = format!(
        "subscription {} enabled: `tributary serve` sends what waits, then what follows",
        args.id
    );
    if let Some((from, to)) = skipped {
        note.push_str(&format!(
            " (changes after {from} up to {to} were deleted by the feed's retention and are not sent)"
        ));
    }
    crate::output::note(&note);
    Ok(())
}
