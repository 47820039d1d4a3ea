//! `tributary sim pco` and `tributary sim clerk`: the simulators as standalone servers.
//!
//! Unlike the library defaults, the servers rate-limit like the real APIs unless told
//! `--rate-limit off`: PCO 100 requests per 20 s per principal (75 for offsets above 30,000),
//! Clerk 100 requests per 10 s per secret key (a development instance). Faults, latency and
//! webhook mischief are off unless asked for.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use tributary_sim::clerk::{ClerkConfig, ClerkSim, ClerkWebhookOptions};
use tributary_sim::{Faults, RateLimit, SimConfig};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A Planning Center People API with deterministic, realistic data.
    Pco(PcoArgs),
    /// A Clerk Backend API (users, organizations, memberships) with Svix-signed webhooks.
    Clerk(ClerkArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClerkArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0 picks a free one; the API's base URL is printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed of the generated data (and of ids, secrets and webhook mischief).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of users (at most 1,000,000: the instance lives in memory, about 4 KB a user).
    #[arg(long, default_value_t = 1000, value_parser = clerk_count())]
    users: usize,
    /// Number of organizations (default: a tenth of the users).
    #[arg(long, value_parser = clerk_count())]
    organizations: Option<usize>,
    /// Secret key accepted as `Authorization: Bearer`.
    #[arg(
        long,
        env = "TRIBUTARY_SIM_SECRET_KEY",
        default_value = "sk_test_sim",
        hide_env_values = true
    )]
    secret_key: String,
    /// Rate limit per secret key: `REQUESTS/PERIOD` with the period in `ms`, `s` or `m`
    /// (Clerk's are 100/10s on development instances, 1000/10s on production ones), or `off`.
    #[arg(long, default_value = "100/10s", value_parser = parse_rate_limit)]
    rate_limit: Limit<(u32, Duration)>,
    /// Adding or removing a member also bumps the organization and emits
    /// organization.updated (Clerk does not: members_count is computed).
    #[arg(long)]
    organization_updated_on_membership_change: bool,
    /// Webhooks: an endpoint that receives every event (Svix-signed).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// Webhooks: the endpoint's signing secret (`whsec_` + base64); a new one is printed on
    /// stderr when absent.
    #[arg(
        long,
        value_name = "SECRET",
        requires = "webhook_url",
        env = "TRIBUTARY_SIM_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    webhook_secret: Option<String>,
    /// Webhooks: the share of deliveries sent again after they were acknowledged.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_duplicate: f64,
    /// Webhooks: the share of deliveries held back and sent after the next.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_reorder: f64,
    /// Webhooks: the share of deliveries preceded by a forged one (wrong secret, tampered body).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_forged: f64,
    /// Webhooks: the share of deliveries preceded by a replay with a 10-minute-old timestamp.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = super::probability)]
    webhook_stale: f64,
}

/// The most users (or organizations) a simulated Clerk instance may have.
const MAX_CLERK_OBJECTS: u64 = 1_000_000;

/// `--users`, `--organizations`: a count up to [`MAX_CLERK_OBJECTS`].
fn clerk_count() -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser as _;
    clap::value_parser!(u64)
        .range(0..=MAX_CLERK_OBJECTS)
        .map(|n| n as usize)
}

impl ClerkArgs {
    fn config(&self) -> ClerkConfig {
        ClerkConfig {
            seed: self.seed,
            users: self.users,
            organizations: self.organizations,
            secret_key: self.secret_key.clone(),
            rate_limit: self.rate_limit.0,
            organization_updated_on_membership_change: self
                .organization_updated_on_membership_change,
            webhooks: ClerkWebhookOptions {
                duplicate: self.webhook_duplicate,
                reorder: self.webhook_reorder,
                forged: self.webhook_forged,
                stale: self.webhook_stale,
                ..ClerkWebhookOptions::default()
            },
        }
    }
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
    match command {
        Command::Pco(args) => run_pco(args).await,
        Command::Clerk(args) => run_clerk(args).await,
    }
}

async fn run_pco(args: PcoArgs) -> anyhow::Result<ExitCode> {
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

async fn run_clerk(args: ClerkArgs) -> anyhow::Result<ExitCode> {
    let config = args.config();
    let sim = ClerkSim::new(config.clone());
    let mut active = vec![
        match config.rate_limit {
            Some((limit, period)) => {
                format!("rate limit: {limit} requests per {period:?} per secret key")
            }
            None => "rate limit: off".into(),
        },
        format!(
            "control API: POST /control/users, /control/organizations, /control/memberships, \
             /control/mutate {{\"count\": N, \"seed\": S}}, /control/webhook_endpoints; GET /control/dump, /control/stats"
        ),
    ];
    if let Some(url) = &args.webhook_url {
        match &args.webhook_secret {
            Some(secret) => sim.add_endpoint_with_secret(url, secret)?,
            None => {
                let secret = sim.add_endpoint(url)?;
                active.push(format!("webhook secret of {url}: {secret}"));
            }
        }
        let w = &config.webhooks;
        active.push(format!(
            "webhooks to {url}: {} duplicated, {} reordered, {} forged, {} stale",
            percent(w.duplicate),
            percent(w.reorder),
            percent(w.forged),
            percent(w.stale)
        ));
    }
    let handle =
        tributary_sim::clerk::serve_clerk(sim, std::net::SocketAddr::new(args.host, args.port))
            .await?;
    // The first stdout line is the API's base URL, for scripts and the benchmark.
    crate::outln!("{}", handle.base_url())?;
    crate::output::note(&format!(
        "Clerk simulator listening on {} with {} users and {} organizations; Ctrl-C stops it",
        handle.base_url(),
        config.users,
        config.organization_count()
    ));
    for line in active {
        crate::output::note(&format!("  {line}"));
    }
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
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

    #[derive(Debug, clap::Parser)]
    struct ClerkCli {
        #[command(flatten)]
        args: ClerkArgs,
    }

    fn parse_clerk(args: &[&str]) -> Result<ClerkArgs, clap::Error> {
        ClerkCli::try_parse_from(std::iter::once("clerk").chain(args.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn clerk_defaults_rate_limit_like_a_development_instance() {
        let config = parse_clerk(&[]).unwrap().config();
        assert_eq!(config.rate_limit, Some((100, Duration::from_secs(10))));
        assert_eq!((config.users, config.organization_count()), (1000, 100));
        assert_eq!(config.seed, 42);
        assert!(!config.organization_updated_on_membership_change);
        assert_eq!(config.webhooks, ClerkWebhookOptions::default());
    }

    #[test]
    fn clerk_flags_configure_the_simulator() {
        let args = parse_clerk(&[
            "--users",
            "50",
            "--organizations",
            "7",
            "--secret-key",
            "sk_test_x",
            "--rate-limit",
            "off",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--webhook-duplicate",
            "0.1",
            "--webhook-reorder",
            "0.2",
            "--webhook-forged",
            "0.3",
            "--webhook-stale",
            "0.4",
            "--organization-updated-on-membership-change",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!((config.users, config.organization_count()), (50, 7));
        assert_eq!(config.secret_key, "sk_test_x");
        assert_eq!(config.rate_limit, None);
        assert!(config.organization_updated_on_membership_change);
        let w = &config.webhooks;
        assert_eq!(
            (w.duplicate, w.reorder, w.forged, w.stale),
            (0.1, 0.2, 0.3, 0.4)
        );
        assert_eq!(args.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
        let err = parse_clerk(&["--webhook-secret", "whsec_x"]).unwrap_err();
        assert!(err.to_string().contains("--webhook-url"), "{err}");
        assert!(parse_clerk(&["--users", "1000001"]).is_err());
        let err = parse_clerk(&["--webhook-forged", "2"]).unwrap_err();
        assert!(err.to_string().contains("probability"), "{err}");
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
