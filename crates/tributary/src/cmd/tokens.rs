//! `tributary tokens create | list | revoke`: the API tokens that open the
//! `/v1` routes of `tributary serve`. A token is shown once, when it is
//! created; the store keeps only its SHA-256.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use tributary_core::{Clock as _, SystemClock};
use tributary_store::TokenRole;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a token and print it (once: only its hash is kept).
    Create(CreateArgs),
    /// List the tokens (never the tokens themselves).
    List(ListArgs),
    /// Revoke a token: `serve` refuses it within 10 seconds.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Role {
    /// Read records, the change feed, search, runs and the audit trail.
    Read,
    /// Everything `read` may, and ask for or cancel runs.
    Admin,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// What the token may do.
    #[arg(long, value_enum)]
    role: Role,
    /// A name for people: who or what holds it.
    #[arg(long, default_value = "api")]
    name: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// As a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token's id (`tokens list` shows them).
    id: i64,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create(args) => create(args).await?,
        Command::List(args) => list(args).await?,
        Command::Revoke(args) => revoke(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let name = args.name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 100,
        "--name must be 1 to 100 characters"
    );
    let role = match args.role {
        Role::Read => TokenRole::Read,
        Role::Admin => TokenRole::Admin,
    };
    let store = tributary_store::open(&args.db).await?;
    let (token, hash) = tributary_secrets::new_api_token();
    let created = store
        .create_token(name, role, &hash, SystemClock.now())
        .await;
    store.close().await;
    let created = created?;
    crate::output::note(&format!(
        "token {} (`{}`, {}) created; it is shown only now — keep it secret:",
        created.id,
        created.name,
        created.role.as_str()
    ));
    crate::outln!("{}", *token)?;
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = tributary_store::open_read_only(&args.db).await?;
    let tokens = store.tokens().await;
    store.close().await;
    let tokens = tokens?;
    if args.json {
        let list: Vec<_> = tokens
            .iter()
            .map(|t| {
                json!({
                    "id": t.id, "name": t.name, "role": t.role.as_str(),
                    "created_at": t.created_at, "revoked_at": t.revoked_at,
                })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if tokens.is_empty() {
        crate::outln!("no tokens (create one: `tributary tokens create --role read`)")?;
    }
    for t in &tokens {
        crate::outln!(
            "{:>4}  {:<6} {:<24} created {}{}",
            t.id,
            t.role.as_str(),
            t.name,
            t.created_at.format("%Y-%m-%d %H:%M UTC"),
            t.revoked_at.map_or(String::new(), |at| format!(
                ", revoked {}",
                at.format("%Y-%m-%d %H:%M UTC")
            ))
        )?;
    }
    Ok(())
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let store = tributary_store::open(&args.db).await?;
    let revoked = store.revoke_token(args.id, SystemClock.now()).await;
    store.close().await;
    let revoked = revoked?;
    (revoked)
        .then_some(())
        .with_context(|| format!("no live token {} (see `tributary tokens list`)", args.id))?;
    crate::output::note(&format!("token {} revoked", args.id));
    Ok(())
}
