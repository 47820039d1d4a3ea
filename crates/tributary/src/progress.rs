//! Progress display: a bar per entity on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tributary_engine::Progress;
use tributary_manifest::Manifest;
use tributary_source::RateStatus;
use tributary_store::{EntityState, PageOutcome};

use crate::cmd::thousands;

/// Picks JSON events with `--log-format json`, bars on a terminal and
/// lines otherwise.
pub fn for_stderr(manifest: &Manifest) -> Arc<dyn Progress> {
    if crate::output::json() {
        Arc::new(Events::default())
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::new(manifest))
    } else {
        Arc::new(Lines::default())
    }
}

/// One bar per entity, in wave order.
pub struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    /// A line under the bars: the connection's request budget.
    budget: std::sync::OnceLock<ProgressBar>,
}

/// Records per second, whole, with thousands separators.
fn rate(state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = write!(out, "{:>9}/s", thousands(state.per_sec() as i64));
}

fn counted_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>28.bold} [{bar:30.cyan/blue}] {human_pos:>9}/{human_len:9} {rate} ETA {eta:>4} {wide_msg}",
    )
    .expect("valid template")
    .with_key("rate", rate)
    .progress_chars("=> ")
}

fn open_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>28.bold} {spinner} {human_pos:>9} records {rate} {wide_msg}",
    )
    .expect("valid template")
    .with_key("rate", rate)
}

impl Bars {
    fn new(manifest: &Manifest) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let mut bars = HashMap::new();
        for (i, wave) in manifest.graph.waves().iter().enumerate() {
            for entity in wave {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(open_style());
                bar.set_prefix(format!("wave {} · {entity}", i + 1));
                bar.set_message("waiting");
                bars.insert(entity.clone(), bar);
            }
        }
        Self {
            multi,
            bars,
            budget: std::sync::OnceLock::new(),
        }
    }
}

impl Progress for Bars {
    fn entity_started(&self, entity: &str, records: i64, total: Option<i64>) {
        if let Some(bar) = self.bars.get(entity) {
            if let Some(total) = total {
                bar.set_style(counted_style());
                bar.set_length(total.max(records) as u64);
            }
            bar.set_position(records as u64);
            bar.reset_eta();
            bar.set_message(if records > 0 { "resumed" } else { "" });
            bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    fn page_committed(
        &self,
        entity: &str,
        _outcome: &PageOutcome,
        records: i64,
        total: Option<i64>,
    ) {
        if let Some(bar) = self.bars.get(entity) {
            if let Some(total) = total {
                if bar.length() == Some(0) {
                    bar.set_style(counted_style());
                }
                bar.set_length(total.max(records) as u64);
            }
            bar.set_position(records as u64);
        }
    }

    fn retrying(&self, entity: &str, error: &str, wait: Duration) {
        if let Some(bar) = self.bars.get(entity) {
            bar.set_message(format!("retrying in {wait:.1?}: {error}"));
        }
    }

    fn budget(&self, status: &RateStatus) {
        let bar = self.budget.get_or_init(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>28.bold} {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix("API budget");
            bar
        });
        bar.set_message(budget_line(status));
    }

    fn entity_finished(&self, entity: &str, state: EntityState, error: Option<&str>) {
        if let Some(bar) = self.bars.get(entity) {
            match state {
                EntityState::Done => match bar.length() {
                    // A counted bar ends full; an open-ended one keeps its
                    // count (finishing it would reset the position to 0).
                    Some(len) if len > 0 => {
                        bar.set_length(bar.position());
                        bar.finish_with_message("done");
                    }
                    _ => bar.abandon_with_message("done"),
                },
                _ => bar
                    .abandon_with_message(format!("FAILED: {}", error.unwrap_or("unknown error"))),
            }
        }
    }
}

/// The request budget in words: "37 of 100 requests per 20s used".
fn budget_line(status: &RateStatus) -> String {
    let mut line = format!(
        "{} of {} requests per {}s used",
        status.used,
        status.limit,
        status.period.as_secs_f64()
    );
    if status.paused {
        line.push_str(" · paused after a 429 (Retry-After)");
    } else if status.used >= status.limit {
        line.push_str(" · waiting for the next window");
    }
    if status.refusals > 0 {
        line.push_str(&format!(" · {} refused (429)", status.refusals));
    }
    line
}

/// Plain progress lines on stderr, at most one per entity every 5 s.
#[derive(Default)]
pub struct Lines {
    last: Throttle,
    /// When the budget line was last printed.
    last_budget: Mutex<Option<Instant>>,
}

impl Progress for Lines {
    fn entity_started(&self, entity: &str, records: i64, total: Option<i64>) {
        let total = total.map_or(String::new(), |t| format!(" of {}", thousands(t)));
        eprintln!("{entity}: started at {} records{total}", thousands(records));
    }

    fn page_committed(
        &self,
        entity: &str,
        _outcome: &PageOutcome,
        records: i64,
        total: Option<i64>,
    ) {
        if self.last.due(entity) {
            let total = total.map_or(String::new(), |t| format!(" of {}", thousands(t)));
            eprintln!("{entity}: {} records{total}", thousands(records));
        }
    }

    fn retrying(&self, entity: &str, error: &str, wait: Duration) {
        eprintln!("{entity}: retrying in {wait:.1?}: {error}");
    }

    /// Only when requests wait, at most every 20 s.
    fn budget(&self, status: &RateStatus) {
        if !(status.paused || status.used >= status.limit) {
            return;
        }
        let mut last = self.last_budget.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(20)) {
            *last = Some(now);
            eprintln!("API budget: {}", budget_line(status));
        }
    }

    fn entity_finished(&self, entity: &str, state: EntityState, error: Option<&str>) {
        match error {
            None => eprintln!("{entity}: {}", state.as_str()),
            Some(error) => eprintln!("{entity}: {}: {error}", state.as_str()),
        }
    }
}

/// Progress as JSON events (`--log-format json`), at most one per entity
/// every 5 s, like [`Lines`].
#[derive(Default)]
pub struct Events {
    last: Throttle,
}

const TARGET: &str = crate::output::TARGET;

impl Progress for Events {
    fn entity_started(&self, entity: &str, records: i64, total: Option<i64>) {
        tracing::info!(target: TARGET, entity, records, total, "entity started");
    }

    fn page_committed(
        &self,
        entity: &str,
        _outcome: &PageOutcome,
        records: i64,
        total: Option<i64>,
    ) {
        if self.last.due(entity) {
            tracing::info!(target: TARGET, entity, records, total, "progress");
        }
    }

    fn retrying(&self, entity: &str, error: &str, wait: Duration) {
        tracing::info!(target: TARGET, entity, error, wait_secs = wait.as_secs_f64(), "retrying");
    }

    fn budget(&self, _status: &RateStatus) {}

    fn entity_finished(&self, entity: &str, state: EntityState, error: Option<&str>) {
        tracing::info!(target: TARGET, entity, state = state.as_str(), error, "entity finished");
    }
}

/// At most one progress line per entity every 5 s.
#[derive(Default)]
struct Throttle(Mutex<HashMap<String, Instant>>);

impl Throttle {
    /// Whether `entity` may report now (and, if so, it has).
    fn due(&self, entity: &str) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = last
            .get(entity)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(5));
        if due {
            last.insert(entity.to_owned(), now);
        }
        due
    }
}
