//! How the engine retries: the policy of source requests ([`RetryPolicy`],
//! [`retrying`]), the budget and stop reason every task of a run shares
//! ([`RunControl`]), and how an entity failure is classed ([`Failure`]:
//! other, transient, store, auth).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tributary_source::ErrorClass;

use crate::{Engine, Progress};

/// What every task of one run shares: the retry budget, and the reason to
/// stop when the source refused the credentials for good.
#[derive(Debug)]
pub(crate) struct RunControl {
    budget: u32,
    retries: AtomicU64,
    stop: Mutex<Option<String>>,
    /// Pages read from the spool instead of the API.
    pub(crate) spooled: AtomicU64,
    /// Becomes `true` when the engine is told to stop ([`Engine::stop`]).
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Why an entity stops when its process is shutting down.
pub(crate) const SHUTTING_DOWN: &str =
    "stopped: the process is shutting down; the next run of this kind resumes from here";

impl RunControl {
    pub(crate) fn new(budget: u32, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            budget,
            retries: AtomicU64::new(0),
            stop: Mutex::new(None),
            spooled: AtomicU64::new(0),
            shutdown,
        }
    }

    /// Whether the engine was told to stop.
    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs `work` unless the engine is told to stop first: then the work
    /// is abandoned (a request in flight is dropped; what committed stays)
    /// and the answer is a transient failure, so the run is resumable.
    pub(crate) async fn unless_stopping<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            result = work => result,
            _ = shutdown.wait_for(|stop| *stop) => Err(Failure::transient(SHUTTING_DOWN)),
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    fn take_retry(&self) -> bool {
        self.retries.fetch_add(1, Ordering::Relaxed) < u64::from(self.budget)
    }

    pub(crate) fn retries(&self) -> u64 {
        self.retries
            .load(Ordering::Relaxed)
            .min(u64::from(self.budget))
    }

    /// Why the run is stopping, if it is.
    pub(crate) fn stopped(&self) -> Option<String> {
        self.stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn stop(&self, reason: &str) {
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stop.get_or_insert_with(|| reason.to_owned());
    }
}

/// Why an entity task ended without finishing.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// The credentials were refused for good: the whole run stops.
    pub(crate) auth: bool,
    /// The cause may pass without anything changing (a retry budget spent
    /// on a stubborn API, a server that stopped answering, a full disk):
    /// the run is left for the next request of its kind to resume.
    pub(crate) transient: bool,
}

impl Failure {
    /// A failure that will happen again: a permanent API error, a protocol
    /// the engine cannot follow, a bug.
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            auth: false,
            transient: false,
        }
    }

    /// A failure that a later attempt may not meet.
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::other(message)
        }
    }

    /// A store error met while committing or reading.
    pub(crate) fn store(context: &str, error: &tributary_store::Error) -> Self {
        let message = format!("{context}: {error}");
        if error.is_transient() {
            Self::transient(message)
        } else {
            Self::other(message)
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::other(message)
    }
}

/// How source requests are retried: exponential backoff (without backon's
/// own jitter — [`retrying`] applies full jitter) and the shortest wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    backoff: ExponentialBuilder,
    min_wait: Duration,
}

/// One source request with the engine's retry policy: transient and
/// rate-limited failures are retried with exponential backoff and full
/// jitter (a uniform wait between zero and the exponential bound), or after
/// exactly the `Retry-After` the API asked for; every retry is drawn from
/// the run's budget, logged with its class and reported. An auth failure
/// stops the whole run at once; a permanent one fails the request's entity.
pub(crate) async fn retrying<T, F, Fut>(
    policy: RetryPolicy,
    control: &RunControl,
    entity: &str,
    progress: &dyn Progress,
    mut request: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tributary_source::Error>>,
{
    let attempt = AtomicU64::new(0);
    let budget_spent = std::sync::atomic::AtomicBool::new(false);
    let result = (|| {
        let stopped = control.stopped();
        let call = stopped.is_none().then(&mut request);
        async move {
            match call {
                Some(call) => call.await.map_err(Some),
                None => Err(None),
            }
        }
    })
    .retry(policy.backoff)
    .when(|error: &Option<tributary_source::Error>| {
        error
            .as_ref()
            .is_some_and(tributary_source::Error::is_retryable)
    })
    .adjust(|error, wait| {
        // `None`: the attempts are used up.
        let wait = wait?;
        if !control.take_retry() {
            budget_spent.store(true, Ordering::Relaxed);
            return None;
        }
        Some(match error.as_ref().and_then(|e| e.retry_after()) {
            Some(asked) => asked.max(policy.min_wait),
            None => wait.mul_f64(fastrand::f64()),
        })
    })
    .notify(|error, wait| {
        let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(error) = error {
            tracing::warn!(
                class = ?error.class(),
                attempt = n,
                %error,
                ?wait,
                "request failed; retrying"
            );
            progress.retrying(entity, &error.to_string(), wait);
        }
    })
    .await;
    result.map_err(|error| match error {
        None => Failure::other(format!(
            "stopped: {}",
            control.stopped().unwrap_or_default()
        )),
        Some(error) if error.class() == ErrorClass::Auth => {
            // Every other task of the run stops at its next request.
            control.stop(&format!("the connection needs re-authorisation ({error})"));
            Failure {
                message: error.to_string(),
                auth: true,
                transient: false,
            }
        }
        Some(error) if budget_spent.load(Ordering::Relaxed) => Failure::transient(format!(
            "{error} (gave up: the run's retry budget of {} retries is spent)",
            control.budget
        )),
        Some(error) if error.is_retryable() => Failure::transient(format!(
            "{error} (gave up after {} attempts)",
            attempt.load(Ordering::Relaxed) + 1
        )),
        Some(error) => Failure::other(error.to_string()),
    })
}

impl Engine {
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_attempts.saturating_sub(1))
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff: self.backoff(),
            min_wait: self.options.min_backoff,
        }
    }
}
