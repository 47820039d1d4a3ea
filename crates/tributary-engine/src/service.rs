//! The engine as a long-running service: it fires the schedules' due
//! slots, applies the webhook deliveries that wait (a `webhook` run per
//! connection with deliveries due, at once when [`ServiceHandle::wake`] is
//! called, else at the next poll) and runs requested syncs, each through
//! [`Engine::run_request`],
//! never two runs of one connection at once in this process (and, through
//! the connection's lock, not across processes either). Built from its
//! options, it owns its loop; callers reach it through a cheap
//! [`ServiceHandle`].
//!
//! Shutting down ([`ServiceHandle::shutdown`]) stops starting work, tells
//! the engine to stop (in-flight pages commit; each run ends failed and
//! resumable) and waits for the runs to end, at most `grace`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tributary_core::RunKind;
use tributary_store::Connection;

use crate::schedule::Scheduler;
use crate::{Engine, NoProgress, RequestError, RunReport, RunRequest};

/// Builds the request of a run of a stored connection: its adapter's
/// manifest, the key that opens its credentials, its limits.
pub trait Resolver: Send + Sync + 'static {
    /// The request for a run of `kind` of `connection`, or why there is none.
    fn request(&self, connection: &Connection, kind: RunKind) -> Result<RunRequest, String>;
}

/// How a [`Service`] behaves.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// How often the schedules are looked at.
    pub poll: Duration,
    /// How long runs get to stop when the service shuts down.
    pub grace: Duration,
    /// How long after a delivery arrives its connection's deliveries are
    /// applied: the ones that arrive meanwhile (a burst of one record's
    /// events) are applied with it, the record read once.
    pub webhook_window: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(8),
            webhook_window: Duration::from_millis(200),
        }
    }
}

type Reply = oneshot::Sender<Result<RunReport, RequestError>>;

/// A cheap handle on a running [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    engine: Engine,
    requests: mpsc::Sender<(RunRequest, Reply)>,
    done: Arc<tokio::sync::watch::Sender<bool>>,
    wake: Arc<tokio::sync::Notify>,
}

impl ServiceHandle {
    /// Runs `request` in the service (or says why it could not start, e.g.
    /// the connection is busy) and hands back its report.
    pub async fn run(&self, request: RunRequest) -> Result<RunReport, RequestError> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send((request, reply)).await.is_err() {
            return Err(RequestError::Engine(crate::Error::Stopping));
        }
        answer
            .await
            .unwrap_or(Err(RequestError::Engine(crate::Error::Stopping)))
    }

    /// Webhook deliveries were stored: apply them now rather than at the
    /// next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether the service is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.engine.is_stopping()
    }

    /// Stops the service: no new run starts, running ones stop after the
    /// pages in flight commit (resumable), and this returns once they have
    /// — or once the grace period is over.
    pub async fn shutdown(&self) {
        self.engine.stop();
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|done| *done).await.map(|_| ());
    }
}

/// The service: schedules and requested runs over one engine.
pub struct Service {
    engine: Engine,
    scheduler: Scheduler,
    resolver: Arc<dyn Resolver>,
    options: ServiceOptions,
}

impl Service {
    /// A service over `engine` (and its store and clock).
    pub fn new(engine: Engine, resolver: Arc<dyn Resolver>, options: ServiceOptions) -> Self {
        let scheduler = Scheduler::new(engine.store.clone(), engine.clock.clone());
        Self {
            engine,
            scheduler,
            resolver,
            options,
        }
    }

    /// Starts the service's loop on a task of its own.
    pub fn start(self) -> ServiceHandle {
        let (requests, inbox) = mpsc::channel(64);
        let done = Arc::new(tokio::sync::watch::Sender::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let handle = ServiceHandle {
            engine: self.engine.clone(),
            requests,
            done: done.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(async move {
            self.run(inbox, wake).await;
            done.send_replace(true);
        });
        handle
    }

    async fn run(
        self,
        mut inbox: mpsc::Receiver<(RunRequest, Reply)>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut running: JoinSet<()> = JoinSet::new();
        let mut stop = self.engine.stop.subscribe();
        let mut tick = tokio::time::interval(self.options.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the deliveries that woke the service are applied.
        let mut webhooks_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
                Some((request, reply)) = inbox.recv() => {
                    self.spawn(&mut running, &busy, request, Some(reply));
                }
                _ = tick.tick() => {
                    self.fire_due(&mut running, &busy).await;
                    self.apply_webhooks(&mut running, &busy).await;
                }
                _ = wake.notified() => {
                    webhooks_at.get_or_insert_with(|| tokio::time::Instant::now() + self.options.webhook_window);
                }
                _ = async { tokio::time::sleep_until(webhooks_at.unwrap_or_else(tokio::time::Instant::now)).await }, if webhooks_at.is_some() => {
                    webhooks_at = None;
                    self.apply_webhooks(&mut running, &busy).await;
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        tracing::info!(
            runs = running.len(),
            "shutting down: runs stop after their pages in flight commit"
        );
        let drained = tokio::time::timeout(self.options.grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                runs = running.len(),
                "runs still going after the grace period: abandoned (they resume on the next run)"
            );
            running.abort_all();
        }
        // Requests that arrived too late are told so.
        inbox.close();
        while let Some((_, reply)) = inbox.recv().await {
            let _ = reply.send(Err(RequestError::Engine(crate::Error::Stopping)));
        }
    }

    /// The stored connections (`None`, said in the log: the store failed).
    async fn connections(&self) -> Option<Vec<Connection>> {
        match self.engine.store.connections().await {
            Ok(connections) => Some(connections),
            Err(error) => {
                tracing::error!(%error, "cannot read the connections");
                None
            }
        }
    }

    /// Fires the schedules' due slots.
    async fn fire_due(&self, running: &mut JoinSet<()>, busy: &Arc<Mutex<HashSet<String>>>) {
        let due = match self.scheduler.tick().await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "cannot read the schedules");
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let Some(connections) = self.connections().await else {
            return;
        };
        for slot in due {
            let Some(connection) = connections.iter().find(|c| c.id == slot.connection_id) else {
                continue;
            };
            match self.resolver.request(connection, slot.kind) {
                Ok(request) => {
                    tracing::info!(connection = %connection.name, kind = slot.kind.as_str(), slot = %slot.slot, "scheduled run");
                    let request = RunRequest {
                        idempotency_key: Some(slot.key),
                        ..request
                    };
                    self.spawn(running, busy, request, None);
                }
                Err(error) => {
                    tracing::error!(connection = %connection.name, kind = slot.kind.as_str(), %error, "cannot run the scheduled sync");
                }
            }
        }
    }

    /// Starts a `webhook` run for each connection with deliveries due that
    /// this process is not running now (a busy one's wait: they are kept).
    async fn apply_webhooks(&self, running: &mut JoinSet<()>, busy: &Arc<Mutex<HashSet<String>>>) {
        let backlog = match self
            .engine
            .store
            .webhook_backlog(self.engine.clock.now())
            .await
        {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::error!(%error, "cannot read the webhook inbox");
                return;
            }
        };
        if backlog.is_empty() {
            return;
        }
        let Some(connections) = self.connections().await else {
            return;
        };
        for connection in connections.iter().filter(|c| backlog.contains(&c.id)) {
            let running_here = busy
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(&connection.name);
            if running_here {
                continue;
            }
            match self.resolver.request(connection, RunKind::Webhook) {
                Ok(request) => self.spawn(running, busy, request, None),
                Err(error) => {
                    tracing::error!(connection = %connection.name, %error, "cannot apply the webhook deliveries");
                }
            }
        }
    }

    /// Runs `request` on a task of its own, unless this process is already
    /// running its connection.
    fn spawn(
        &self,
        running: &mut JoinSet<()>,
        busy: &Arc<Mutex<HashSet<String>>>,
        request: RunRequest,
        reply: Option<Reply>,
    ) {
        let name = request.connection.clone();
        let taken = busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.clone());
        if !taken {
            tracing::info!(connection = %name, kind = request.kind.as_str(), "a run of this connection is in progress here: not started");
            if let Some(reply) = reply {
                let _ = reply.send(Err(RequestError::Engine(crate::Error::Store(
                    tributary_store::Error::Busy(format!(
                        "connection `{name}` is busy: this process is running its sync"
                    )),
                ))));
            }
            return;
        }
        let engine = self.engine.clone();
        let busy = busy.clone();
        running.spawn(async move {
            let kind = request.kind;
            let result = engine.run_request(request, Arc::new(NoProgress)).await;
            busy.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&name);
            match &result {
                Ok(report) => tracing::info!(
                    connection = %name,
                    run = report.run.id,
                    kind = report.run.kind.as_str(),
                    state = report.run.state.as_str(),
                    created = report.run.counts.created,
                    updated = report.run.counts.updated,
                    deleted = report.run.counts.deleted,
                    error = report.run.error.as_deref(),
                    "run ended"
                ),
                // Deliveries wait while another process runs the connection.
                Err(error @ RequestError::Engine(crate::Error::Store(tributary_store::Error::Busy(_))))
                    if kind == RunKind::Webhook =>
                {
                    tracing::debug!(connection = %name, %error, "webhook deliveries wait: the connection is busy")
                }
                Err(error) => tracing::warn!(connection = %name, kind = kind.as_str(), %error, "run not started"),
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        });
    }
}
