//! `tributary` — the command-line interface.

mod cmd;
mod output;
mod progress;
mod server;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: far less time in malloc/free than glibc's allocator under the
// engine's many small, short-lived JSON allocations across threads, and less
// fragmentation, so peak memory stays flat. (Its `override` feature, which
// would serve SQLite's malloc too, saved ~5 % CPU but cost ~20 MiB of peak
// RSS against the 100 MB budget: not taken.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, the same for every command.
pub mod exit {
    /// The command did what was asked.
    pub const SUCCESS: u8 = 0;
    /// The work ran and did not succeed: a sync run that failed (its
    /// checkpoints are kept; a resumable one resumes on the next run), a
    /// manifest with errors, credentials that do not open.
    pub const FAILED: u8 = 1;
    /// The command could not start: bad flags or configuration, a store
    /// that cannot be opened, output that cannot be written.
    pub const USAGE: u8 = 2;
    /// The connection is busy: another process is running its sync.
    /// Nothing was done; try again later.
    pub const BUSY: u8 = 3;
    pub const WAITING: u8 = 4;
}

const AFTER_HELP: &str = "\
Exit codes (every command):
  0  done
  1  the work ran and failed (a failed sync run keeps its checkpoints)
  2  could not start: bad flags or configuration, store unavailable
  3  busy: another process is running this connection's sync
  4  waiting: a reconciliation's deletions wait for `runs approve` or `runs reject`

Environment:
  TRIBUTARY_DB               the store, for --db
  TRIBUTARY_TOKEN            an API token for `sync` / `connections add`
  TRIBUTARY_SECRET_KEY[_FILE] the key that seals stored credentials
  TRIBUTARY_LOG (or RUST_LOG) log filter, e.g. `info` or `warn,tributary_engine=debug`";

/// Tributary keeps your database in sync with SaaS APIs.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a simulated Planning Center account and sync it into SQLite, with progress bars.
    Demo(cmd::demo::Args),
    /// Run a sync of one connection, non-interactively (exit code 0 only on success).
    Sync(cmd::sync::Args),
    /// Run the long-lived process: scheduled syncs, /healthz and /readyz.
    Serve(cmd::serve::Args),
    /// Set and list when `serve` runs each connection's delta and reconciliation.
    #[command(subcommand)]
    Schedules(cmd::schedules::Command),
    /// Webhook secrets, and the deliveries `serve` received.
    #[command(subcommand)]
    Webhooks(cmd::webhooks::Command),
    /// Webhooks out: URLs that `serve` sends a connection's changes and run ends to.
    #[command(subcommand)]
    Subscriptions(cmd::subscriptions::Command),
    /// Show connections, their latest runs and record counts.
    Status(cmd::status::Args),
    /// List runs, show one, approve or reject a reconciliation's held deletions.
    #[command(subcommand)]
    Runs(cmd::runs::Command),
    /// Add, list, check and remove connections; their credentials are sealed at rest.
    #[command(subcommand)]
    Connections(cmd::connections::Command),
    /// Read synced records.
    #[command(subcommand)]
    Records(cmd::records::Command),
    /// A record's mutations: when, which fields, which run or webhook delivery.
    Audit(cmd::audit::Args),
    /// API tokens for the /v1 routes of `serve` (read or admin).
    #[command(subcommand)]
    Tokens(cmd::tokens::Command),
    /// Work with adapter manifests.
    #[command(subcommand)]
    Manifest(cmd::manifest::Command),
    /// Print an adapter's entity dependency graph and its waves.
    Graph(cmd::manifest::GraphArgs),
    /// Run an API simulator (part of the product: demo, tests, benchmarks).
    #[command(subcommand)]
    Sim(cmd::sim::Command),
    /// Measure throughput and memory.
    #[command(subcommand)]
    Bench(cmd::bench::Command),
}

fn init_logging(format: LogFormat) {
    output::set_json(matches!(format, LogFormat::Json));
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        // sqlx reports statements over 1 s (a `status` over millions of
        // records) as warnings; they are not problems. The CLI's notes and
        // progress are events only in JSON mode.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "warn,sqlx::query=error,{}=info",
                output::TARGET
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return fail(&anyhow::Error::new(error).context("cannot start the runtime"));
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Sync(args) => cmd::sync::run(args).await,
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Schedules(command) => cmd::schedules::run(command).await,
            Command::Webhooks(command) => cmd::webhooks::run(command).await,
            Command::Subscriptions(command) => cmd::subscriptions::run(command).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Connections(command) => cmd::connections::run(command).await,
            Command::Runs(command) => cmd::runs::run(command).await,
            Command::Records(command) => cmd::records::run(command).await,
            Command::Audit(args) => cmd::audit::run(args).await,
            Command::Tokens(command) => cmd::tokens::run(command).await,
            Command::Manifest(command) => cmd::manifest::run(command),
            Command::Graph(args) => cmd::manifest::graph(args),
            Command::Sim(command) => cmd::sim::run(command).await,
            Command::Bench(command) => cmd::bench::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => fail(&error),
    }
}

/// Says why a command could not run, once, and picks its exit code. A
/// closed stdout (`| head`) is no failure: the reader has what it wanted.
fn fail(error: &anyhow::Error) -> ExitCode {
    if output::is_closed_pipe(error) {
        return ExitCode::SUCCESS;
    }
    let text = output::error_text(error);
    if output::json() {
        tracing::error!(target: output::TARGET, error = %text, "command failed");
    } else {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "error: {text}");
    }
    ExitCode::from(if is_busy(error) {
        exit::BUSY
    } else {
        exit::USAGE
    })
}

fn is_busy(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<tributary_store::Error>(),
            Some(tributary_store::Error::Busy(_))
        ) || matches!(
            cause.downcast_ref::<tributary_engine::Error>(),
            Some(tributary_engine::Error::Store(
                tributary_store::Error::Busy(_)
            ))
        ) || matches!(
            cause.downcast_ref::<tributary_engine::RequestError>(),
            Some(tributary_engine::RequestError::Engine(
                tributary_engine::Error::Store(tributary_store::Error::Busy(_))
            ))
        )
    })
}
