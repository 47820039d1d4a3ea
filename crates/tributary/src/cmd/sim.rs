//! `tributary sim pco`: the PCO simulator as a standalone server.

use std::process::ExitCode;

use tributary_sim::SimConfig;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A Planning Center People API with deterministic, realistic data.
    Pco(PcoArgs),
}

#[derive(Debug, clap::Args)]
pub struct PcoArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0 picks a free one; the URL is printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of people.
    #[arg(long, default_value_t = 1000)]
    people: usize,
    /// Bearer token accepted.
    #[arg(long, env = "TRIBUTARY_SIM_TOKEN", default_value = "sim-token")]
    token: String,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Pco(args) = command;
    let config = SimConfig {
        seed: args.seed,
        people: args.people,
        token: args.token,
        ..SimConfig::default()
    };
    let sim = tributary_sim::serve(config, std::net::SocketAddr::new(args.host, args.port)).await?;
    // The first stdout line is the URL, for scripts and the benchmark.
    println!("{}", sim.base_url());
    eprintln!(
        "PCO simulator listening on {} with {} people; Ctrl-C stops it",
        sim.base_url(),
        args.people
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
