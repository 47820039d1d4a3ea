//! `tributary` — the command-line interface.

mod cmd;
mod progress;

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

/// Tributary keeps your database in sync with SaaS APIs.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, long_about = None)]
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
    /// Show connections, their latest runs and record counts.
    Status(cmd::status::Args),
    /// Add, list, check and remove connections; their credentials are sealed at rest.
    #[command(subcommand)]
    Connections(cmd::connections::Command),
    /// Read synced records.
    #[command(subcommand)]
    Records(cmd::records::Command),
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        // sqlx reports statements over 1 s (a `status` over millions of
        // records) as warnings; they are not problems.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error"));
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
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Sync(args) => cmd::sync::run(args).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Connections(command) => cmd::connections::run(command).await,
            Command::Records(command) => cmd::records::run(command).await,
            Command::Manifest(command) => cmd::manifest::run(command),
            Command::Graph(args) => cmd::manifest::graph(args),
            Command::Sim(command) => cmd::sim::run(command).await,
            Command::Bench(command) => cmd::bench::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
