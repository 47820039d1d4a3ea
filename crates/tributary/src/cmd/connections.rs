//! `tributary connections`: add, list, check and remove connections, with
//! their credentials sealed at rest; `keygen` makes the secret key.
//!
//! Secrets never come from argv (other users of the machine can read a
//! process's arguments): they are read from the environment or, with
//! `--secrets-stdin`, from stdin, and are sealed with the key from
//! `TRIBUTARY_SECRET_KEY` / `TRIBUTARY_SECRET_KEY_FILE` before they reach
//! the store. Nothing here prints a secret.

use std::collections::HashMap;
use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::json;
use tributary_core::{Clock, Credentials, OAuth2Credentials, SystemClock};
use tributary_manifest::AuthKind;
use tributary_secrets::{SecretKey, Zeroizing, open_credentials, seal_credentials};
use tributary_store::{Connection, ConnectionStatus, NewConnection, RateBudget};

use super::sync::RateLimitSetting;

const TOKEN: &str = "TRIBUTARY_TOKEN";
const PASSWORD: &str = "TRIBUTARY_PASSWORD";
const CLIENT_SECRET: &str = "TRIBUTARY_CLIENT_SECRET";
const REFRESH_TOKEN: &str = "TRIBUTARY_REFRESH_TOKEN";
const SECRET_NAMES: [&str; 4] = [TOKEN, PASSWORD, CLIENT_SECRET, REFRESH_TOKEN];

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create (or update) a connection and store its credentials, sealed with the secret key.
    ///
    /// Secrets are read from the environment — TRIBUTARY_TOKEN (bearer),
    /// TRIBUTARY_PASSWORD (basic), TRIBUTARY_CLIENT_SECRET and
    /// TRIBUTARY_REFRESH_TOKEN (oauth2) — or, with --secrets-stdin, from
    /// stdin, never from the command line. The key comes from
    /// TRIBUTARY_SECRET_KEY or TRIBUTARY_SECRET_KEY_FILE (see `keygen`).
    Add(AddArgs),
    /// List connections: adapter, base URL, auth kind, status and last run (never a secret).
    List(ListArgs),
    /// Check that a connection's stored credentials open with the configured secret key.
    Check(CheckArgs),
    /// Delete a connection with its credentials, records, runs and change feed.
    Remove(RemoveArgs),
    /// Set a connection's own request budget, over the manifest's policy (e.g. a Clerk
    /// production instance: 1000/10s); `auto` goes back to the manifest's.
    RateLimit(RateLimitArgs),
    /// Print a fresh random secret key (base64) to use as TRIBUTARY_SECRET_KEY or in a key file.
    Keygen,
}

/// The kinds of credentials a connection can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// A static token sent as `Authorization: Bearer`; from TRIBUTARY_TOKEN.
    Bearer,
    /// HTTP Basic (PCO: application id and secret); --user, and TRIBUTARY_PASSWORD.
    Basic,
    /// OAuth2 with a rotating refresh token; --client-id, TRIBUTARY_CLIENT_SECRET and
    /// TRIBUTARY_REFRESH_TOKEN.
    Oauth2,
}

impl Auth {
    fn name(self) -> &'static str {
        match self {
            Auth::Bearer => "bearer",
            Auth::Basic => "basic",
            Auth::Oauth2 => "oauth2",
        }
    }

    fn manifest_kind(self) -> AuthKind {
        match self {
            Auth::Bearer => AuthKind::Bearer,
            Auth::Basic => AuthKind::Basic,
            Auth::Oauth2 => AuthKind::Oauth2,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The connection's name (unique in the store).
    name: String,
    #[command(flatten)]
    target: super::Target,
    /// The kind of credentials.
    #[arg(long, value_enum)]
    auth: Auth,
    /// Basic auth: the user (PCO: the application id). The password comes from
    /// TRIBUTARY_PASSWORD.
    #[arg(long)]
    user: Option<String>,
    /// OAuth2: the client id. The client secret and refresh token come from
    /// TRIBUTARY_CLIENT_SECRET and TRIBUTARY_REFRESH_TOKEN.
    #[arg(long)]
    client_id: Option<String>,
    /// OAuth2: the token endpoint, overriding the manifest's.
    #[arg(long)]
    token_url: Option<String>,
    /// Read the secrets from stdin instead of the environment: lines of
    /// NAME=VALUE with the environment's names (TRIBUTARY_TOKEN,
    /// TRIBUTARY_PASSWORD, TRIBUTARY_CLIENT_SECRET, TRIBUTARY_REFRESH_TOKEN);
    /// blank lines and lines starting with `#` are ignored, and a value may
    /// be wrapped in single or double quotes.
    #[arg(long)]
    secrets_stdin: bool,
    /// The connection's own request budget: `auto` (the manifest's policy), `off`, or
    /// `N/Ss` (e.g. 1000/10s for a Clerk production instance). Every sync, schedule and
    /// webhook run of the connection uses it unless `sync --rate-limit` says otherwise.
    #[arg(long)]
    rate_limit: Option<RateLimitSetting>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RateLimitArgs {
    /// The connection's name.
    name: String,
    /// `auto` (the manifest's policy), `off`, or `N/Ss` (N requests per S seconds).
    budget: RateLimitSetting,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The connection's name.
    name: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The connection's name.
    name: String,
    /// The store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "TRIBUTARY_DB")]
    db: String,
    /// Confirm: the connection's records, runs and change feed are deleted too.
    #[arg(long)]
    yes: bool,
}

/// Runs a `connections` command. Like every command: an error that stops
/// it from running exits 2; `check` whose credentials do not open exits 1.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add(args) => add(args).await?,
        Command::List(args) => list(args).await?,
        Command::Check(args) => return check(args).await,
        Command::Remove(args) => remove(args).await?,
        Command::RateLimit(args) => rate_limit(args).await?,
        Command::Keygen => keygen()?,
    }
    Ok(ExitCode::SUCCESS)
}

fn secret_key() -> anyhow::Result<SecretKey> {
    Ok(SecretKey::from_env()?)
}

async fn open_store(db: &str) -> anyhow::Result<std::sync::Arc<dyn tributary_store::Store>> {
    Ok(tributary_store::open(db).await?)
}

/// For commands that only read: a read-only file works, nothing is created.
async fn open_reader(db: &str) -> anyhow::Result<std::sync::Arc<dyn tributary_store::Store>> {
    Ok(tributary_store::open_read_only(db).await?)
}

/// Where the secrets come from.
struct Secrets {
    /// From stdin (`NAME=VALUE` lines) or `None` for the environment.
    stdin: Option<HashMap<String, Zeroizing<String>>>,
}

impl Secrets {
    fn from_env() -> Self {
        Self { stdin: None }
    }

    /// Parses `NAME=VALUE` lines. Errors name the line number, never its text.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                bail!(
                    "stdin line {} is not NAME=VALUE (--secrets-stdin reads lines like TRIBUTARY_TOKEN=...)",
                    i + 1
                );
            };
            let name = name.trim();
            if !SECRET_NAMES.contains(&name) {
                bail!(
                    "stdin line {}: unknown name `{name}` (expected one of {})",
                    i + 1,
                    SECRET_NAMES.join(", ")
                );
            }
            values.insert(
                name.to_owned(),
                Zeroizing::new(unquote(value.trim()).to_owned()),
            );
        }
        Ok(Self {
            stdin: Some(values),
        })
    }

    /// The secret `name`, which `auth` needs.
    fn get(&self, name: &str, auth: Auth) -> anyhow::Result<Zeroizing<String>> {
        let value = match &self.stdin {
            Some(values) => values.get(name).cloned(),
            None => match std::env::var(name) {
                Ok(value) => Some(Zeroizing::new(value)),
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
            },
        };
        match value {
            Some(value) if !value.is_empty() => Ok(value),
            _ if self.stdin.is_some() => bail!(
                "--auth {} needs {name}: stdin has no `{name}=...` line",
                auth.name()
            ),
            _ => bail!(
                "--auth {} needs {name} in the environment (or a `{name}=...` line on stdin with --secrets-stdin)",
                auth.name()
            ),
        }
    }
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// The credentials `args` describe, with secrets from `secrets`.
fn credentials(args: &AddArgs, secrets: &Secrets) -> anyhow::Result<Credentials> {
    let misplaced = |flag: &str, kind: &str| -> anyhow::Result<()> {
        bail!("{flag} is only for --auth {kind}")
    };
    if args.user.is_some() && args.auth != Auth::Basic {
        misplaced("--user", "basic")?;
    }
    if args.client_id.is_some() && args.auth != Auth::Oauth2 {
        misplaced("--client-id", "oauth2")?;
    }
    if args.token_url.is_some() && args.auth != Auth::Oauth2 {
        misplaced("--token-url", "oauth2")?;
    }
    Ok(match args.auth {
        Auth::Bearer => Credentials::Bearer {
            token: secrets.get(TOKEN, args.auth)?.to_string(),
        },
        Auth::Basic => Credentials::Basic {
            user: args
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .context("--auth basic needs --user USER (PCO: the application id)")?,
            password: secrets.get(PASSWORD, args.auth)?.to_string(),
        },
        Auth::Oauth2 => Credentials::OAuth2(OAuth2Credentials {
            client_id: args
                .client_id
                .clone()
                .filter(|c| !c.is_empty())
                .context("--auth oauth2 needs --client-id ID")?,
            client_secret: secrets.get(CLIENT_SECRET, args.auth)?.to_string(),
            refresh_token: secrets.get(REFRESH_TOKEN, args.auth)?.to_string(),
            access_token: None,
            expires_at: None,
            token_url: args.token_url.clone(),
        }),
    })
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    if args.name.trim().is_empty() {
        bail!("the connection name is empty");
    }
    let stored = args.target.stored_connection(&args.name).await?;
    let manifest = args.target.load_manifest(stored.as_ref())?;
    if !manifest.auth.kinds.contains(&args.auth.manifest_kind()) {
        let accepted: Vec<&str> = [Auth::Bearer, Auth::Basic, Auth::Oauth2]
            .into_iter()
            .filter(|a| manifest.auth.kinds.contains(&a.manifest_kind()))
            .map(Auth::name)
            .collect();
        bail!(
            "adapter `{}` does not accept --auth {} (it accepts: {})",
            manifest.name,
            args.auth.name(),
            accepted.join(", ")
        );
    }
    let base_url = args
        .target
        .base_url
        .clone()
        .unwrap_or_else(|| manifest.base_url.clone())
        .trim_end_matches('/')
        .to_owned();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        bail!("--base-url `{base_url}` is not an http(s) URL");
    }

    // The key first: without one nothing is read or written.
    let key = secret_key()?;
    let secrets = if args.secrets_stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the secrets from stdin")?;
        Secrets::parse(&text)?
    } else {
        Secrets::from_env()
    };
    let credentials = credentials(&args, &secrets)?;
    let sealed = seal_credentials(&key, &credentials, &args.name);

    let store = open_store(&args.target.db).await?;
    let existed = store.connection(&args.name).await?.is_some();
    let now = SystemClock.now();
    let connection = store
        .ensure_connection(
            NewConnection {
                name: &args.name,
                adapter: &manifest.name,
                base_url: &base_url,
            },
            now,
        )
        .await?;
    let version = store
        .set_credentials(connection.id, credentials.kind(), &sealed, None, now)
        .await
        .with_context(|| format!("cannot store the credentials of `{}`", args.name))?;
    if let Some(setting) = args.rate_limit {
        store
            .set_rate_limit(connection.id, setting.budget(), now)
            .await?;
    }
    crate::outln!(
        "connection `{}` {}: adapter {}, {}, {} credentials sealed (version {version})",
        connection.name,
        if existed { "updated" } else { "added" },
        connection.adapter,
        connection.base_url,
        credentials.kind(),
    )?;
    Ok(())
}

/// The connection's status for humans: `active`, or `needs_reauth (why)`.
pub fn status_text(connection: &Connection) -> String {
    match (&connection.status, &connection.status_reason) {
        (ConnectionStatus::Active, None) => "active".into(),
        (status, Some(reason)) => format!("{} ({reason})", status.as_str()),
        (status, None) => status.as_str().into(),
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = open_reader(&args.db).await?;
    let connections = store.connections().await?;
    let mut rows = Vec::with_capacity(connections.len());
    for connection in connections {
        let last = store.runs(Some(connection.id), 1).await?.into_iter().next();
        rows.push((connection, last));
    }
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(c, last)| {
                json!({
                    "name": c.name,
                    "adapter": c.adapter,
                    "base_url": c.base_url,
                    "auth": c.credentials_kind,
                    "status": c.status.as_str(),
                    "status_reason": c.status_reason,
                    "rate_limit": c.rate_limit.map(budget_text),
                    "last_run": last.as_ref().map(|r| json!({
                        "id": r.id,
                        "kind": r.kind.as_str(),
                        "state": r.state.as_str(),
                        "started_at": r.started_at,
                        "finished_at": r.finished_at,
                        "error": r.error,
                    })),
                    "created_at": c.created_at,
                    "updated_at": c.updated_at,
                })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if rows.is_empty() {
        crate::outln!("no connections (add one with `tributary connections add NAME --auth ...`)")?;
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|(c, last)| {
            [
                c.name.clone(),
                c.adapter.clone(),
                c.credentials_kind.clone().unwrap_or_else(|| "none".into()),
                status_text(c),
                last.as_ref().map_or("never".into(), |r| {
                    format!(
                        "#{} {} {}",
                        r.id,
                        r.state.as_str(),
                        r.started_at.format("%Y-%m-%d %H:%M UTC")
                    )
                }),
                c.base_url.clone(),
            ]
        })
        .collect();
    let header = ["NAME", "ADAPTER", "AUTH", "STATUS", "LAST RUN", "BASE URL"];
    let mut widths = header.map(str::len);
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out
    };
    crate::outln!("{}", line(header))?;
    for row in &table {
        crate::outln!("{}", line(row.each_ref().map(String::as_str)))?;
    }
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let key = secret_key()?;
    let store = open_reader(&args.db).await?;
    let connection = store
        .connection(&args.name)
        .await?
        .with_context(|| format!("no connection named `{}`", args.name))?;
    let sealed = store.credentials(connection.id).await?.with_context(|| {
        format!(
            "connection `{}` has no stored credentials; add them with `tributary connections add {} --auth ...`",
            args.name, args.name
        )
    })?;
    let credentials = match open_credentials(&key, &sealed.sealed, &connection.name) {
        Ok(credentials) => credentials,
        Err(error) => {
            crate::output::note(&format!(
                "error: the credentials of connection `{}` do not open: {error}",
                args.name
            ));
            return Ok(ExitCode::from(crate::exit::FAILED));
        }
    };
    let detail = match &credentials {
        Credentials::Bearer { .. } => String::new(),
        Credentials::Basic { user, .. } => format!(", user {user}"),
        Credentials::OAuth2(oauth) => format!(
            ", client id {}{}{}",
            oauth.client_id,
            oauth
                .token_url
                .as_ref()
                .map_or(String::new(), |u| format!(", token URL {u}")),
            oauth
                .expires_at
                .map_or(String::new(), |t| format!(", access token expires {t}")),
        ),
    };
    crate::outln!(
        "connection `{}`: {} credentials (version {}{detail}) open with this key; status {}",
        connection.name,
        credentials.kind(),
        sealed.version,
        status_text(&connection),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A budget for humans: `1000/10s`, or `off`.
pub fn budget_text(budget: RateBudget) -> String {
    match budget.requests {
        0 => "off".into(),
        n => format!("{n}/{}s", budget.period.as_secs_f64()),
    }
}

async fn rate_limit(args: RateLimitArgs) -> anyhow::Result<()> {
    let store = open_store(&args.db).await?;
    let Some(connection) = store.connection(&args.name).await? else {
        bail!("no connection named `{}`", args.name);
    };
    let budget = args.budget.budget();
    store
        .set_rate_limit(connection.id, budget, SystemClock.now())
        .await?;
    crate::outln!(
        "connection `{}`: {}",
        connection.name,
        match budget {
            None => "the manifest's request budget".to_owned(),
            Some(budget) => format!("its own request budget, {}", budget_text(budget)),
        }
    )?;
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    if !args.yes {
        bail!(
            "not removing connection `{}` without --yes: it deletes the connection, its credentials \
             and all its records, runs and change feed",
            args.name
        );
    }
    let store = open_store(&args.db).await?;
    if !store.remove_connection(&args.name).await? {
        bail!("no connection named `{}`", args.name);
    }
    crate::outln!(
        "removed connection `{}` with its credentials, records, runs and change feed",
        args.name
    )?;
    Ok(())
}

fn keygen() -> anyhow::Result<()> {
    let key = SecretKey::generate();
    crate::outln!("{}", key.to_base64().as_str())?;
    crate::output::note(
        "keep this key safe (without it stored credentials cannot be read): put it in a file, \
         `chmod 600` it and set TRIBUTARY_SECRET_KEY_FILE to its path, or set TRIBUTARY_SECRET_KEY",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_secrets_are_name_value_lines() {
        let secrets = Secrets::parse(
            "# secrets\n\nTRIBUTARY_TOKEN = \"tok en\"\nTRIBUTARY_PASSWORD='pw'\r\nTRIBUTARY_CLIENT_SECRET=a=b\n",
        )
        .unwrap();
        assert_eq!(secrets.get(TOKEN, Auth::Bearer).unwrap().as_str(), "tok en");
        assert_eq!(secrets.get(PASSWORD, Auth::Basic).unwrap().as_str(), "pw");
        assert_eq!(
            secrets.get(CLIENT_SECRET, Auth::Oauth2).unwrap().as_str(),
            "a=b"
        );
        let missing = secrets
            .get(REFRESH_TOKEN, Auth::Oauth2)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("TRIBUTARY_REFRESH_TOKEN"), "{missing}");
    }

    #[test]
    fn bad_stdin_lines_are_named_by_number_only() {
        let error = Secrets::parse("TRIBUTARY_TOKEN=x\nhunter2\n")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = Secrets::parse("TOKEN=hunter2\n").err().unwrap().to_string();
        assert!(error.contains("unknown name `TOKEN`"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
