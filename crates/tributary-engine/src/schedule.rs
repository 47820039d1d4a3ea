//! Durable schedules: per connection, a delta every N minutes and a
//! reconciliation by cron (UTC), kept in the store. [`Scheduler::tick`]
//! fires the slots that are due: it moves each slot on with a
//! compare-and-swap, so two processes on one database never fire the same
//! slot, and a slot missed while no process ran fires once — the next slot
//! is the first one after *now*, not after the missed one. Time comes from
//! the [`Clock`], so tests drive it with a `ManualClock`.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use tributary_core::{Clock, RunKind, Timestamp};
use tributary_store::{Schedule, Store};

/// A delta every this long unless told otherwise.
pub const DEFAULT_DELTA_EVERY: Duration = Duration::from_secs(15 * 60);
/// A reconciliation at 03:00 UTC every night unless told otherwise.
pub const DEFAULT_RECONCILE_CRON: &str = "0 3 * * *";

/// Reads an interval: `15m`, `90s`, `1h`, `2h30m` (at least 10 seconds,
/// at most 31 days).
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let usage = || {
        format!(
            "`{text}` is not an interval: give a number with a unit, e.g. 15m, 90s, 1h or 2h30m \
             (10s to 31d)"
        )
    };
    let mut total = 0u64;
    let mut number = String::new();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(usage());
    }
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(usage()),
        };
        let n: u64 = number.parse().map_err(|_| usage())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || !(10..=31 * 86_400).contains(&total) {
        return Err(usage());
    }
    Ok(Duration::from_secs(total))
}

/// Checks a cron expression (five fields, UTC), saying what is wrong.
pub fn check_cron(expression: &str) -> Result<(), String> {
    croner::Cron::from_str(expression)
        .map(|_| ())
        .map_err(|error| {
            format!(
                "`{expression}` is not a cron expression ({error}): give five fields, minute hour \
             day-of-month month day-of-week, e.g. \"0 3 * * *\" for 03:00 UTC every day"
            )
        })
}

/// The first time of `expression` strictly after `after`.
pub fn next_cron(expression: &str, after: Timestamp) -> Result<Timestamp, String> {
    check_cron(expression)?;
    croner::Cron::from_str(expression)
        .and_then(|cron| cron.find_next_occurrence(&after, false))
        .map_err(|error| format!("`{expression}` has no time after {after}: {error}"))
}

/// The first slot of a delta every `every` from `due` on that lies after
/// `now` (`due + k × every`).
fn next_delta(due: Timestamp, every: Duration, now: Timestamp) -> Timestamp {
    let every = chrono::TimeDelta::from_std(every).unwrap_or(chrono::TimeDelta::minutes(15));
    let every_ms = every.num_milliseconds().max(1);
    let behind = (now - due).num_milliseconds().max(0);
    due + chrono::TimeDelta::milliseconds((behind / every_ms + 1) * every_ms)
}

/// A new schedule for `connection_id`, its first delta at once and its
/// first reconciliation at the expression's next time.
pub fn new_schedule(
    connection_id: i64,
    delta_every: Option<Duration>,
    reconcile_cron: Option<&str>,
    now: Timestamp,
) -> Result<Schedule, String> {
    let reconcile_next_at = match reconcile_cron {
        Some(expression) => Some(next_cron(expression, now)?),
        None => None,
    };
    Ok(Schedule {
        connection_id,
        delta_every_secs: delta_every.map(|d| d.as_secs() as i64),
        delta_next_at: delta_every.map(|_| now),
        reconcile_cron: reconcile_cron.map(str::to_owned),
        reconcile_next_at,
        updated_at: now,
    })
}

/// A slot fired: the run it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The connection.
    pub connection_id: i64,
    /// Delta or reconcile.
    pub kind: RunKind,
    /// The slot's time.
    pub slot: Timestamp,
    /// The run's idempotency key: connection, kind and slot.
    pub key: String,
}

/// Fires due slots of the schedules in a store.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Scheduler {
    /// A scheduler over `store`'s schedules, with time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Fires every slot due now that no other process has fired: moves it
    /// on (to the first slot after now) and returns the runs to start.
    pub async fn tick(&self) -> tributary_store::Result<Vec<Due>> {
        let now = self.clock.now();
        let mut fired = Vec::new();
        for schedule in self.store.schedules().await? {
            let mut slots: Vec<(RunKind, Timestamp, Timestamp)> = Vec::new();
            if let (Some(due), Some(every)) = (schedule.delta_next_at, schedule.delta_every_secs)
                && due <= now
            {
                let every = Duration::from_secs(every.max(1) as u64);
                slots.push((RunKind::Delta, due, next_delta(due, every, now)));
            }
            if let (Some(due), Some(expression)) =
                (schedule.reconcile_next_at, &schedule.reconcile_cron)
                && due <= now
            {
                match next_cron(expression, now) {
                    Ok(next) => slots.push((RunKind::Reconcile, due, next)),
                    Err(error) => {
                        tracing::error!(connection = schedule.connection_id, %error, "cannot schedule reconciliations")
                    }
                }
            }
            for (kind, due, next) in slots {
                if self
                    .store
                    .claim_slot(schedule.connection_id, kind, due, next)
                    .await?
                {
                    fired.push(Due {
                        connection_id: schedule.connection_id,
                        kind,
                        slot: due,
                        key: format!(
                            "schedule {} {}",
                            kind.as_str(),
                            due.to_rfc3339_opts(SecondsFormat::Secs, true)
                        ),
                    });
                }
            }
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn intervals_read_as_people_write_them() {
        assert_eq!(parse_every("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_every("2h30m"), Ok(Duration::from_secs(9_000)));
        assert_eq!(parse_every(" 90s "), Ok(Duration::from_secs(90)));
        for bad in ["", "15", "m", "5s", "15x", "-1m", "40d"] {
            let error = parse_every(bad).unwrap_err();
            assert!(error.contains("is not an interval"), "{bad}: {error}");
        }
    }

    #[test]
    fn cron_times_are_utc_and_bad_expressions_say_why() {
        assert_eq!(
            next_cron("0 3 * * *", at("2026-12-07T14:00:00Z")).unwrap(),
            at("2026-12-08T03:00:00Z")
        );
        assert_eq!(
            next_cron("0 3 * * *", at("2026-12-08T03:00:00Z")).unwrap(),
            at("2026-12-09T03:00:00Z"),
            "strictly after"
        );
        let error = check_cron("0 25 * * *").unwrap_err();
        assert!(error.contains("is not a cron expression"), "{error}");
        assert!(check_cron("nightly").is_err());
    }

    #[test]
    fn a_missed_delta_slot_moves_past_now() {
        let due = at("2026-12-07T10:00:00Z");
        let every = Duration::from_secs(900);
        assert_eq!(
            next_delta(due, every, at("2026-12-07T10:00:00Z")),
            at("2026-12-07T10:15:00Z")
        );
        assert_eq!(
            next_delta(due, every, at("2026-12-07T12:07:00Z")),
            at("2026-12-07T12:15:00Z")
        );
    }
}
