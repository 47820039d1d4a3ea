//! `tributary sync`: one run of one connection, for scripts and schedulers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tributary_core::{Clock, RunKind, RunState, SystemClock};
use tributary_engine::{DeleteGuard, Engine, EngineOptions, Progress, RunReport, RunRequest};
use tributary_manifest::Manifest;
use tributary_secrets::SecretKey;
use tributary_source::{Credentials, LocalRateLimiter, RateLimiter, Unlimited};
use tributary_store::RateBudget;

use super::thousands;

/// The kinds of sync this command runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Every record of every entity, resumable.
    Full,
    /// What changed since the last sync, per entity by the manifest's
    /// delta strategy (before any full sync: a full sync).
    Delta,
    /// Every record listed; the stored ones the source no longer has are
    /// marked deleted (with what belongs to them), within the mass-delete
    /// guard.
    Reconcile,
}

impl Kind {
    fn run_kind(self) -> RunKind {
        match self {
            Kind::Full => RunKind::Full,
            Kind::Delta => RunKind::Delta,
            Kind::Reconcile => RunKind::Reconcile,
        }
    }
}

/// How the token is sent.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AuthMode {
    /// `Authorization: Bearer TOKEN`.
    Bearer,
    /// HTTP Basic; the token is `USER:PASSWORD` (PCO: `APP_ID:SECRET`).
    Basic,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::Target,
    /// The API token; prefer the TRIBUTARY_TOKEN environment variable, which
    /// other users of the machine cannot see in the process list. Without
    /// one, the connection's stored credentials are used (see `tributary
    /// connections add`; they need TRIBUTARY_SECRET_KEY or
    /// TRIBUTARY_SECRET_KEY_FILE).
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The request budget: `auto` (the manifest's policy), `off`, or `N/Ss`
    /// (N requests per S seconds); either is corrected by the API's
    /// rate-limit headers where the manifest names them, and a 429 pauses it.
    #[arg(long, default_value = "auto")]
    rate_limit: RateLimitSetting,
    /// Seconds before one request is abandoned (and retried).
    #[arg(long, default_value_t = 30.0, value_parser = parse_timeout)]
    request_timeout: f64,
    /// Retries the run may spend before failing requests are given up on
    /// (0 to 1,000,000; a run that spends them fails resumable: run the
    /// same command again to go on from its checkpoints).
    #[arg(long, default_value_t = EngineOptions::default().retry_budget,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    retry_budget: u32,
    /// How the token is sent.
    #[arg(long, value_enum, default_value_t = AuthMode::Bearer)]
    auth: AuthMode,
    /// The kind of sync.
    #[arg(long, value_enum, default_value_t = Kind::Full)]
    kind: Kind,
    /// How far before each entity's high-water mark a delta starts reading
    /// (room for clock skew and for changes within the mark's second), in
    /// seconds: 0 to 86400.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    delta_overlap: u64,
    /// A reconciliation deletes nothing without approval when it would
    /// delete more than this percentage of an entity's records (0 to 100).
    #[arg(long, default_value_t = 10.0, value_parser = percent)]
    max_delete_percent: f64,
    /// ... or more than this many records of one entity.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    max_delete_count: u64,
    /// The connection's name (defaults to the adapter's name).
    #[arg(long)]
    connection: Option<String>,
    /// Records per request: 1 to the API's maximum (the manifest's
    /// `max_page_size`; PCO: 100).
    #[arg(long)]
    page_size: Option<u32>,
    /// Sync only these entities (comma-separated); entities listed under a
    /// parent walk the parents already in the store.
    #[arg(long, value_delimiter = ',')]
    entities: Option<Vec<String>>,
    /// Where fetched pages wait for their commit, so that a killed sync
    /// resumes without fetching them again (default: beside a SQLite
    /// file, `DB.spool`; for PostgreSQL, in the temporary directory).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Write the run's figures (records/s, pages/s, peak RSS) as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
}

fn percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage: give 0 to 100, e.g. 10")),
    }
}

pub fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 3_600.0 => Ok(secs),
        _ => Err(format!(
            "`{s}` is not a timeout: give seconds, more than 0 and at most 3600"
        )),
    }
}

/// The request budget of a sync.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateLimitSetting {
    /// The manifest's policy, corrected by the API's headers.
    Auto,
    /// No limit (a local simulator without one).
    Off,
    /// This many requests per period, corrected by the API's headers.
    Fixed(u32, Duration),
}

impl std::str::FromStr for RateLimitSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("`{s}` is not a rate limit: use auto, off or N/Ss (e.g. 100/20s)");
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "off" | "none" => Ok(Self::Off),
            other => {
                let (n, period) = other.split_once('/').ok_or_else(usage)?;
                let n: u32 = n.trim().parse().map_err(|_| usage())?;
                let secs: f64 = period
                    .trim()
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|_| usage())?;
                if n == 0 || !(secs > 0.0 && secs <= 86_400.0) {
                    return Err(usage());
                }
                Ok(Self::Fixed(n, Duration::from_secs_f64(secs)))
            }
        }
    }
}

impl RateLimitSetting {
    /// The setting as a connection's own budget (`None`: the manifest's).
    pub fn budget(self) -> Option<RateBudget> {
        match self {
            Self::Auto => None,
            Self::Off => Some(RateBudget {
                requests: 0,
                period: Duration::from_secs(1),
            }),
            Self::Fixed(requests, period) => Some(RateBudget { requests, period }),
        }
    }

    /// The limiter for a source; `None` leaves the choice to the manifest.
    pub fn limiter(self) -> Option<Arc<dyn RateLimiter>> {
        match self {
            Self::Auto => None,
            Self::Off => Some(Arc::new(Unlimited::default())),
            Self::Fixed(n, period) => Some(Arc::new(LocalRateLimiter::new(n, period))),
        }
    }
}

pub fn credentials(token: &str, auth: AuthMode) -> anyhow::Result<Credentials> {
    Ok(match auth {
        AuthMode::Bearer => Credentials::bearer(token),
        AuthMode::Basic => {
            let (user, password) = token
                .split_once(':')
                .context("--auth basic needs the token as USER:PASSWORD")?;
            Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }
        }
    })
}

/// What a sync needs.
pub struct FullSync<'a> {
    pub db: &'a str,
    pub manifest: Arc<Manifest>,
    pub kind: RunKind,
    pub base_url: Option<String>,
    /// `None`: the connection's stored credentials.
    pub credentials: Option<Credentials>,
    pub connection: &'a str,
    pub page_size: Option<u32>,
    pub rate_limit: RateLimitSetting,
    pub request_timeout: Duration,
    pub retry_budget: u32,
    pub delta_overlap: Duration,
    pub delete_guard: DeleteGuard,
    pub entities: Option<Vec<String>>,
    /// `None`: [`default_spool_dir`] of the store.
    pub spool_dir: Option<PathBuf>,
}

impl<'a> FullSync<'a> {
    /// A full sync with default budgets and timeouts.
    pub fn new(
        db: &'a str,
        manifest: Arc<Manifest>,
        credentials: Option<Credentials>,
        connection: &'a str,
    ) -> Self {
        Self {
            db,
            manifest,
            kind: RunKind::Full,
            base_url: None,
            credentials,
            connection,
            page_size: None,
            rate_limit: RateLimitSetting::Auto,
            request_timeout: Duration::from_secs(30),
            retry_budget: EngineOptions::default().retry_budget,
            delta_overlap: EngineOptions::default().delta_overlap,
            delete_guard: DeleteGuard::default(),
            spool_dir: None,
            entities: None,
        }
    }
}

/// Opens the store and runs (or resumes) the sync through the engine's
/// one entry point ([`Engine::run_request`]).
pub async fn full_sync(
    request: FullSync<'_>,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<RunReport> {
    // What cannot work is said before anything is opened or sent.
    tributary_source::check_page_size(&request.manifest, request.page_size)?;
    if let Some(url) = &request.base_url {
        tributary_source::check_base_url(url)?;
    }
    let store = tributary_store::open(request.db).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Engine::new(
        store.clone(),
        clock,
        EngineOptions {
            retry_budget: request.retry_budget,
            delta_overlap: request.delta_overlap,
            delete_guard: request.delete_guard,
            spool_dir: Some(
                request
                    .spool_dir
                    .clone()
                    .unwrap_or_else(|| default_spool_dir(request.db)),
            ),
            ..EngineOptions::default()
        },
    );
    // The key is read only when stored credentials are used.
    let secret_key = match request.credentials {
        Some(_) => Err(String::new()),
        None => SecretKey::from_env()
            .map(Arc::new)
            .map_err(|error| error.to_string()),
    };
    let report = engine
        .run_request(
            RunRequest {
                base_url: request.base_url,
                credentials: request.credentials,
                secret_key,
                page_size: request.page_size,
                rate_limiter: request.rate_limit.limiter(),
                request_timeout: request.request_timeout,
                entities: request.entities,
                ..RunRequest::new(request.connection, request.kind, request.manifest)
            },
            progress,
        )
        .await;
    store.close().await;
    Ok(report?)
}

/// Where a store's sync keeps fetched pages until they commit: beside a
/// SQLite file (`tributary.db.spool`); for PostgreSQL, in the user's cache
/// directory (`$XDG_CACHE_HOME` or `~/.cache`, else the temporary
/// directory), named after the user, server and database — never the
/// password.
pub fn default_spool_dir(db: &str) -> PathBuf {
    if !db.starts_with("postgres://") && !db.starts_with("postgresql://") {
        let path = db.strip_prefix("sqlite://").unwrap_or(db);
        return PathBuf::from(format!("{path}.spool"));
    }
    // postgres://user:password@host:port/db?options -> user@host:port/db.
    let rest = db.split_once("://").map_or(db, |(_, rest)| rest);
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let place = match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{user}@{host}-{path}")
        }
        None => format!("{authority}-{path}"),
    };
    let safe: String = place
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("tributary").join("spool").join(safe)
}

/// Peak resident set size of this process in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stored = match &args.connection {
        Some(name) => args.target.stored_connection(name).await?,
        None => None,
    };
    let manifest = args.target.load_manifest(stored.as_ref())?;
    let connection = args
        .connection
        .clone()
        .unwrap_or_else(|| manifest.name.clone());
    let progress = crate::progress::for_stderr(&manifest);
    let report = full_sync(
        FullSync {
            base_url: args.target.base_url.clone(),
            page_size: args.page_size,
            rate_limit: args.rate_limit,
            request_timeout: Duration::from_secs_f64(args.request_timeout),
            retry_budget: args.retry_budget,
            entities: args.entities.clone(),
            spool_dir: args.spool_dir.clone(),
            kind: args.kind.run_kind(),
            delta_overlap: Duration::from_secs(args.delta_overlap),
            delete_guard: DeleteGuard {
                max_share: args.max_delete_percent / 100.0,
                max_count: args.max_delete_count,
            },
            ..FullSync::new(
                &args.target.db,
                manifest,
                args.token
                    .as_deref()
                    .map(|token| credentials(token, args.auth))
                    .transpose()?,
                &connection,
            )
        },
        progress,
    )
    .await?;
    let c = report.run.counts;
    let records = c.created + c.updated + c.unchanged + c.quarantined;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let requests: u64 = report.entities.iter().map(|e| e.requests).sum();
    let summary = format!(
        "run {} ({}) {}{}: {} records ({} created, {} updated, {} unchanged, {} deleted, {} quarantined) in {} pages, {} requests, {:.1}s",
        report.run.id,
        report.run.kind.as_str(),
        report.run.state.as_str(),
        if report.resumed { " (resumed)" } else { "" },
        thousands(records),
        thousands(c.created),
        thousands(c.updated),
        thousands(c.unchanged),
        thousands(c.deleted),
        thousands(c.quarantined),
        thousands(c.pages),
        thousands(requests as i64),
        secs,
    );
    if let Some(deletions) = &report.deletions {
        let deleted: Vec<String> = deletions
            .deleted
            .iter()
            .map(|(entity, n)| format!("{entity} {}", thousands(*n)))
            .collect();
        if deletions.held.is_empty() {
            crate::output::note(&format!(
                "deleted (gone from the source): {}",
                if deleted.is_empty() {
                    "nothing".to_owned()
                } else {
                    deleted.join(", ")
                }
            ));
        } else {
            crate::output::note("nothing deleted: held for approval (below)");
        }
        for (entity, why) in &deletions.skipped {
            crate::output::note(&format!("nothing of {entity} deleted: {why}"));
        }
    }
    if report.full_instead_of_delta {
        crate::output::note(
            "no full sync of this connection has finished yet: running a full sync instead of a delta",
        );
    }
    if crate::output::json() {
        tracing::info!(
            target: crate::output::TARGET,
            run = report.run.id,
            kind = report.run.kind.as_str(),
            full_instead_of_delta = report.full_instead_of_delta,
            requests,
            state = report.run.state.as_str(),
            resumed = report.resumed,
            resumable = report.run.resumable,
            records,
            pages = c.pages,
            created = c.created,
            updated = c.updated,
            unchanged = c.unchanged,
            deleted = c.deleted,
            quarantined = c.quarantined,
            elapsed_secs = secs,
            error = report.run.error.as_deref(),
            "{summary}"
        );
    } else {
        crate::output::note(&summary);
        if let Some(error) = &report.run.error {
            crate::output::note(&format!("error: {error}"));
        }
        if report.run.resumable {
            crate::output::note(
                "the run keeps its checkpoints: run the same command again to resume it",
            );
        }
    }
    if let Some(path) = &args.stats_json {
        let per_entity: serde_json::Map<String, serde_json::Value> = report
            .entities
            .iter()
            .map(|e| {
                (
                    e.entity.clone(),
                    json!({"requests": e.requests, "records": e.records, "pages": e.pages}),
                )
            })
            .collect();
        let stats = json!({
            "run_id": report.run.id,
            "kind": report.run.kind.as_str(),
            "full_instead_of_delta": report.full_instead_of_delta,
            "requests": requests,
            "deleted": c.deleted,
            "entities": per_entity,
            "state": report.run.state.as_str(),
            "resumed": report.resumed,
            "records": records,
            "pages": c.pages,
            "elapsed_secs": secs,
            "records_per_sec": records as f64 / secs,
            "pages_per_sec": c.pages as f64 / secs,
            "peak_rss_kib": peak_rss_kib(),
            "retries": report.retries,
            "spooled_pages": report.spooled,
            "needs_reauth": report.needs_reauth,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&stats)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(match report.run.state {
        RunState::Succeeded => ExitCode::SUCCESS,
        // Held for a person's decision: the run did its work, and waits.
        RunState::WaitingApproval => ExitCode::from(crate::exit::WAITING),
        _ => ExitCode::from(crate::exit::FAILED),
    })
}

#[cfg(test)]
mod spool_dir_tests {
    use super::default_spool_dir;

    #[test]
    fn sqlite_spools_beside_its_file_and_postgres_never_names_the_password() {
        assert_eq!(
            default_spool_dir("./data/t.db"),
            std::path::PathBuf::from("./data/t.db.spool")
        );
        let dir = default_spool_dir("postgres://app:s3cret@db.example:5433/prod?sslmode=require");
        let text = dir.display().to_string();
        assert!(text.ends_with("app@db.example_5433-prod"), "{text}");
        assert!(!text.contains("s3cret"));
        assert!(text.contains("tributary"));
    }
}
