//! `tributary sim pco`: the PCO simulator as a standalone server.
//!
//! Unlike the library default, the server rate-limits like PCO (100 requests per 20 s per
//! principal, 75 for offsets above 30,000) unless told `--rate-limit off`. Faults and latency
//! are off unless asked for.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use tributary_sim::{Faults, RateLimit, SimConfig};

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
    /// Seed of the generated data (and of tokens and injected faults).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of people.
    #[arg(long, default_value_t = 1000, value_parser = super::people(0))]
    people: usize,
    /// Bearer token accepted.
    #[arg(long, env = "TRIBUTARY_SIM_TOKEN", default_value = "sim-token")]
    token: String,
    /// Rate limit per token, Basic app or OAuth grant: `REQUESTS/PERIOD` with the period in
    /// `ms`, `s` or `m` (`100/20s` is PCO's), or `off`.
    #[arg(long, default_value = "100/20s", value_parser = parse_rate_limit)]
    rate_limit: Limit<(u32, Duration)>,
    /// The lower limit for requests with an offset above 30,000, or `off`.
    #[arg(long, default_value = "75", value_parser = parse_deep_offset_limit)]
    deep_offset_limit: Limit<u32>,
    /// Lifetime of OAuth access tokens, in seconds.
    #[arg(long, default_value_t = 7200, value_parser = clap::value_parser!(u64).range(1..))]
    token_ttl: u64,
    /// OAuth client id accepted by /oauth/authorize and /oauth/token.
    #[arg(long, default_value = "sim-client")]
    client_id: String,
    /// OAuth client secret accepted by /oauth/token.
    #[arg(
        long,
        env = "TRIBUTARY_SIM_CLIENT_SECRET",
        default_value = "sim-client-secret",
        hide_env_values = true
    )]
    client_secret: String,
    /// Probability (0..=1) of an injected 429 with `Retry-After: 1`.
    #[arg(long = "fault-429", value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    fault_429: f64,
    /// Probability (0..=1) of a 500, 502 (HTML), 503 or 504.
    #[arg(long = "fault-5xx", value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    fault_5xx: f64,
    /// Probability (0..=1) of a request hanging for --hang-ms, then answering 504.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    fault_timeout: f64,
    /// Probability (0..=1) of the connection breaking in the middle of the body.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    fault_reset: f64,
    /// Probability (0..=1) of a 200 whose JSON body is cut in half.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    fault_malformed: f64,
    /// Attempts of one URL from this one on (counting from 0) are never faulted.
    #[arg(long, value_name = "N", default_value_t = Faults::default().max_per_url,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    fault_max_per_url: u32,
    /// Latency added to every API request, in milliseconds.
    #[arg(long, value_name = "L", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
    /// How long a timeout fault hangs before answering 504, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    hang_ms: u64,
    /// Webhooks: the share of deliveries sent twice (a sender's retry).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_duplicate: f64,
    /// Webhooks: the share of deliveries held back and sent after the next.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_reorder: f64,
    /// Webhooks: the share of deliveries signed with a wrong secret.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_bad_signature: f64,
    /// Webhooks: how long each delivery waits before it is sent, in ms.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    webhook_delay_ms: u64,
}

/// A limit that can be switched `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit<T>(Option<T>);

fn parse_off<T>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Limit<T>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        Ok(Limit(None))
    } else {
        parse(s.trim()).map(|v| Limit(Some(v)))
    }
}

/// `100/20s`, `10/500ms`, `600/1m`, `100/20` (seconds) or `off`.
fn parse_rate_limit(s: &str) -> Result<Limit<(u32, Duration)>, String> {
    parse_off(s, |s| {
        let usage = || format!("expected REQUESTS/PERIOD such as 100/20s, or off; got {s:?}");
        let (limit, period) = s.split_once('/').ok_or_else(usage)?;
        let limit: u32 = limit.trim().parse().map_err(|_| usage())?;
        let period = period.trim();
        let (number, unit) = period
            .find(|c: char| !c.is_ascii_digit())
            .map_or((period, ""), |i| period.split_at(i));
        let number: u64 = number.parse().map_err(|_| usage())?;
        let period = match unit {
            "ms" => Duration::from_millis(number),
            "" | "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            _ => return Err(usage()),
        };
        if limit == 0 || period.is_zero() {
            return Err(format!(
                "the rate limit needs at least 1 request per non-zero period; got {s:?} (use off to disable it)"
            ));
        }
        Ok((limit, period))
    })
}

fn parse_deep_offset_limit(s: &str) -> Result<Limit<u32>, String> {
    parse_off(s, |s| match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a positive number of requests, or off; got {s:?}"
        )),
    })
}

impl PcoArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let faults = Faults {
            p429: self.fault_429,
            p5xx: self.fault_5xx,
            timeout: self.fault_timeout,
            reset: self.fault_reset,
            malformed: self.fault_malformed,
            latency: Duration::from_millis(self.latency_ms),
            hang: Duration::from_millis(self.hang_ms),
            max_per_url: self.fault_max_per_url,
        };
        let sum = faults.p429 + faults.p5xx + faults.timeout + faults.reset + faults.malformed;
        if sum > 1.0 + 1e-9 {
            bail!("the fault probabilities add up to {sum}, more than 1");
        }
        Ok(SimConfig {
            seed: self.seed,
            people: self.people,
            token: self.token.clone(),
            rate_limit: self.rate_limit.0.map(|(limit, period)| RateLimit {
                limit,
                period,
                deep_offset_limit: self.deep_offset_limit.0,
            }),
            oauth_client_id: self.client_id.clone(),
            oauth_client_secret: self.client_secret.clone(),
            token_ttl: Duration::from_secs(self.token_ttl),
            faults,
            webhooks: tributary_sim::WebhookOptions {
                duplicate: self.webhook_duplicate,
                reorder: self.webhook_reorder,
                bad_signature: self.webhook_bad_signature,
                delay: Duration::from_millis(self.webhook_delay_ms),
                ..tributary_sim::WebhookOptions::default()
            },
            ..SimConfig::default()
        })
    }
}

/// What is active, one line each (for stderr at startup).
fn describe(config: &SimConfig) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(match config.rate_limit {
        Some(r) => {
            let deep = match r.deep_offset_limit {
                Some(d) => format!(", {d} for offsets above 30000"),
                None => String::new(),
            };
            format!(
                "rate limit: {} requests per {:?} per token, app or OAuth grant{deep}",
                r.limit, r.period
            )
        }
        None => "rate limit: off".into(),
    });
    lines.push(format!(
        "oauth: client id {:?}, access tokens valid {} s (GET /oauth/authorize, POST /oauth/token, POST /__sim/oauth/grant)",
        config.oauth_client_id,
        config.token_ttl.as_secs()
    ));
    let f = &config.faults;
    let mut faults: Vec<String> = [
        ("429", f.p429),
        ("5xx", f.p5xx),
        ("timeout", f.timeout),
        ("reset", f.reset),
        ("malformed", f.malformed),
    ]
    .into_iter()
    .filter(|(_, p)| *p > 0.0)
    .map(|(name, p)| format!("{name} {:.2}%", p * 100.0))
    .collect();
    if f.timeout > 0.0 {
        faults.push(format!("timeouts hang {:?}", f.hang));
    }
    if f.any() {
        faults.push(format!("at most {} per URL", f.max_per_url));
    }
    lines.push(if faults.is_empty() {
        "faults: none".into()
    } else {
        format!("faults: {}", faults.join(", "))
    });
    lines.push(if f.latency.is_zero() {
        "latency: none".into()
    } else {
        format!("latency: {:?} per API request", f.latency)
    });
    let w = &config.webhooks;
    lines.push(format!(
        "webhooks: subscriptions at /webhooks/v2/webhook_subscriptions; deliveries {} duplicated, {} reordered, {} badly signed, {:?} delay",
        percent(w.duplicate),
        percent(w.reorder),
        percent(w.bad_signature),
        w.delay
    ));
    lines
}

fn percent(p: f64) -> String {
    format!("{:.2}%", p * 100.0)
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Pco(args) = command;
    let config = args.config()?;
    let active = describe(&config);
    let sim = tributary_sim::serve(config, std::net::SocketAddr::new(args.host, args.port)).await?;
    // The first stdout line is the URL, for scripts and the benchmark.
    crate::outln!("{}", sim.base_url())?;
    crate::output::note(&format!(
        "PCO simulator listening on {} with {} people; Ctrl-C stops it",
        sim.base_url(),
        args.people
    ));
    for line in active {
        crate::output::note(&format!("  {line}"));
    }
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: PcoArgs,
    }

    fn parse(args: &[&str]) -> Result<PcoArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("pco").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_rate_limit_like_pco_without_faults() {
        let config = parse(&[]).unwrap().config().unwrap();
        assert_eq!(config.rate_limit, Some(RateLimit::pco()));
        assert_eq!(config.token_ttl, Duration::from_secs(7200));
        assert_eq!(config.oauth_client_id, "sim-client");
        assert!(!config.faults.any());
        assert_eq!(config.faults.hang, Duration::from_secs(30));
        assert!(config.faults.latency.is_zero());
    }

    #[test]
    fn flags_configure_limits_and_faults() {
        let config = parse(&[
            "--rate-limit",
            "10/500ms",
            "--deep-offset-limit",
            "off",
            "--token-ttl",
            "60",
            "--client-id",
            "app",
            "--client-secret",
            "shh",
            "--fault-429",
            "0.1",
            "--fault-5xx",
            "0.2",
            "--fault-timeout",
            "0.05",
            "--fault-reset",
            "0",
            "--fault-malformed",
            "1e-2",
            "--latency-ms",
            "25",
            "--hang-ms",
            "1000",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(
            config.rate_limit,
            Some(RateLimit::new(10, Duration::from_millis(500)))
        );
        assert_eq!(config.token_ttl, Duration::from_secs(60));
        assert_eq!(
            (
                config.oauth_client_id.as_str(),
                config.oauth_client_secret.as_str()
            ),
            ("app", "shh")
        );
        let f = &config.faults;
        assert_eq!(
            (f.p429, f.p5xx, f.timeout, f.reset, f.malformed),
            (0.1, 0.2, 0.05, 0.0, 0.01)
        );
        assert_eq!(
            (f.latency, f.hang),
            (Duration::from_millis(25), Duration::from_secs(1))
        );
        let described = describe(&config).join("\n");
        assert!(described.contains("429 10.00%"), "{described}");

        let off = parse(&["--rate-limit", "off"]).unwrap().config().unwrap();
        assert_eq!(off.rate_limit, None);
        assert!(describe(&off)[0].ends_with("off"));
        let minute = parse(&["--rate-limit", "600/1m"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(minute.rate_limit.unwrap().period, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_are_refused_clearly() {
        for (args, needle) in [
            (&["--fault-429", "1.5"][..], "probability between 0 and 1"),
            (&["--fault-5xx=-0.1"], "probability between 0 and 1"),
            (&["--fault-reset", "often"], "often"),
            (&["--rate-limit", "100"], "REQUESTS/PERIOD"),
            (&["--rate-limit", "0/20s"], "at least 1 request"),
            (&["--rate-limit", "100/20h"], "REQUESTS/PERIOD"),
            (&["--deep-offset-limit", "0"], "positive number"),
            (&["--token-ttl", "0"], "--token-ttl"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let err = parse(&["--fault-429", "0.6", "--fault-5xx", "0.6"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("more than 1"), "{err}");
    }
}
