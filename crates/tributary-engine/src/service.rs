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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tributary_core::RunKind;
use tributary_store::{Connection, Run};

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
    /// How long applied deliveries are kept (so a sender's late retry is
    /// still known as a duplicate; senders retry for about a day); older
    /// ones are forgotten once an hour. Pending and dead ones are kept.
    pub inbox_retention: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(8),
            webhook_window: Duration::from_millis(200),
            inbox_retention: Duration::from_secs(7 * 24 * 3_600),
        }
    }
}

type Reply = oneshot::Sender<Result<RunReport, RequestError>>;

/// The service's runs: those under way (each task ends with its
/// connection's name), the connections they hold, and the requests that
/// wait for one of those connections, in order.
#[derive(Default)]
struct Runs {
    running: JoinSet<String>,
    busy: Arc<Mutex<HashSet<String>>>,
    waiting: HashMap<String, VecDeque<(RunRequest, Option<Reply>)>>,
    /// Per connection, why its last webhook run could not start: said
    /// once (a warning), not at every poll.
    webhook_errors: Arc<Mutex<HashMap<String, String>>>,
}

impl Runs {
    fn is_busy(&self, connection: &str) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(connection)
    }
}

/// A cheap handle on a running [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    engine: Engine,
    requests: mpsc::Sender<(RunRequest, Reply)>,
    queued: mpsc::Sender<(Connection, RunKind, String)>,
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

    /// Asks for a run of `connection` without waiting for it: the run is
    /// recorded `queued` under `idempotency_key` and starts as soon as
    /// the connection is free. A key asked for before names the run it
    /// made, and nothing new starts.
    pub async fn request(
        &self,
        connection: &Connection,
        kind: RunKind,
        idempotency_key: &str,
    ) -> Result<Run, RequestError> {
        if self.is_stopping() {
            return Err(RequestError::Engine(crate::Error::Stopping));
        }
        let store = &self.engine.store;
        let run = store
            .queue_run(
                connection.id,
                kind,
                idempotency_key,
                self.engine.clock.now(),
            )
            .await?;
        if run.state == tributary_core::RunState::Queued && run.kind == kind {
            self.queued
                .send((connection.clone(), kind, idempotency_key.to_owned()))
                .await
                .map_err(|_| RequestError::Engine(crate::Error::Stopping))?;
        }
        Ok(run)
    }

    /// Cancels a run that is queued, running or waiting for approval (see
    /// [`Engine::cancel`]).
    pub async fn cancel(&self, run_id: i64) -> crate::Result<Run> {
        self.engine.cancel(run_id).await
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

/// Ends the `queued` run that `key` names failed, saying why it could not
/// start (a run that started, or none, is left as it is).
async fn fail_queued(engine: &Engine, connection: &str, kind: RunKind, key: &str, why: &str) {
    let store = &engine.store;
    let now = engine.clock.now();
    let ended = async {
        let Some(found) = store.connection(connection).await? else {
            return Ok(());
        };
        let run = store.queue_run(found.id, kind, key, now).await?;
        if run.state == tributary_core::RunState::Queued {
            store
                .transition_run(
                    run.id,
                    tributary_core::RunState::Queued,
                    tributary_core::RunState::Failed,
                    Some(&format!("the run could not start: {why}")),
                    now,
                )
                .await?;
        }
        Ok::<_, tributary_store::Error>(())
    };
    if let Err(error) = ended.await {
        tracing::warn!(%connection, %error, "cannot record why the run did not start");
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
        let (queued, asked) = mpsc::channel(64);
        let done = Arc::new(tokio::sync::watch::Sender::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let handle = ServiceHandle {
            engine: self.engine.clone(),
            requests,
            queued,
            done: done.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(async move {
            self.run(inbox, asked, wake).await;
            done.send_replace(true);
        });
        handle
    }

    async fn run(
        self,
        mut inbox: mpsc::Receiver<(RunRequest, Reply)>,
        mut asked: mpsc::Receiver<(Connection, RunKind, String)>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let mut runs = Runs::default();
        // Runs queued before a restart start (in turn) now.
        self.start_queued(&mut runs).await;
        let mut stop = self.engine.stop.subscribe();
        let mut tick = tokio::time::interval(self.options.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the deliveries that woke the service are applied.
        let mut webhooks_at: Option<tokio::time::Instant> = None;
        // Applied deliveries past their retention are forgotten hourly.
        let mut expiry = tokio::time::interval(Duration::from_secs(3_600));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
                Some((request, reply)) = inbox.recv() => {
                    self.spawn(&mut runs, request, Some(reply));
                }
                Some((connection, kind, key)) = asked.recv() => {
                    match self.resolver.request(&connection, kind) {
                        Ok(request) => {
                            let request = RunRequest { idempotency_key: Some(key), ..request };
                            self.spawn(&mut runs, request, None);
                        }
                        Err(error) => {
                            tracing::error!(connection = %connection.name, kind = kind.as_str(), %error, "cannot start the requested run");
                        }
                    }
                }
                _ = tick.tick() => {
                    self.fire_due(&mut runs).await;
                    self.apply_webhooks(&mut runs).await;
                }
                _ = expiry.tick() => self.expire_deliveries().await,
                _ = wake.notified() => {
                    webhooks_at.get_or_insert_with(|| tokio::time::Instant::now() + self.options.webhook_window);
                }
                _ = async { tokio::time::sleep_until(webhooks_at.unwrap_or_else(tokio::time::Instant::now)).await }, if webhooks_at.is_some() => {
                    webhooks_at = None;
                    self.apply_webhooks(&mut runs).await;
                }
                Some(ended) = runs.running.join_next(), if !runs.running.is_empty() => {
                    // The next request waiting for that connection starts.
                    if let Ok(name) = ended
                        && let Some((request, reply)) =
                            runs.waiting.get_mut(&name).and_then(VecDeque::pop_front)
                    {
                        self.spawn(&mut runs, request, reply);
                    }
                }
            }
        }
        tracing::info!(
            runs = runs.running.len(),
            "shutting down: runs stop after their pages in flight commit"
        );
        // Waiting requests are not started; a queued run stays queued in
        // the store, and the next service starts it.
        for (_, reply) in runs.waiting.drain().flat_map(|(_, waiting)| waiting) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(RequestError::Engine(crate::Error::Stopping)));
            }
        }
        let running = &mut runs.running;
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

    /// Forgets applied deliveries older than the retention.
    async fn expire_deliveries(&self) {
        let retention = chrono::Duration::from_std(self.options.inbox_retention)
            .unwrap_or(chrono::Duration::MAX);
        let Some(before) = self.engine.clock.now().checked_sub_signed(retention) else {
            return;
        };
        match self.engine.store.expire_deliveries(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deliveries = n,
                "forgot applied webhook deliveries past their retention"
            ),
            Err(error) => tracing::warn!(%error, "cannot expire webhook deliveries"),
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
    async fn fire_due(&self, runs: &mut Runs) {
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
                    self.spawn(runs, request, None);
                }
                Err(error) => {
                    tracing::error!(connection = %connection.name, kind = slot.kind.as_str(), %error, "cannot run the scheduled sync");
                }
            }
        }
    }

    /// Starts a `webhook` run for each connection with deliveries due that
    /// this process is not running now (a busy one's wait: they are kept).
    async fn apply_webhooks(&self, runs: &mut Runs) {
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
            if runs.is_busy(&connection.name) {
                continue;
            }
            match self.resolver.request(connection, RunKind::Webhook) {
                Ok(request) => self.spawn(runs, request, None),
                Err(error) => {
                    tracing::error!(connection = %connection.name, %error, "cannot apply the webhook deliveries");
                }
            }
        }
    }

    /// Starts the runs a previous service queued and did not start.
    async fn start_queued(&self, runs: &mut Runs) {
        let queued = match self.engine.store.queued_runs().await {
            Ok(queued) => queued,
            Err(error) => {
                tracing::error!(%error, "cannot read the queued runs");
                return;
            }
        };
        if queued.is_empty() {
            return;
        }
        let Some(connections) = self.connections().await else {
            return;
        };
        for run in queued {
            let Some(connection) = connections.iter().find(|c| c.id == run.connection_id) else {
                continue;
            };
            match self.resolver.request(connection, run.kind) {
                Ok(request) => {
                    tracing::info!(connection = %connection.name, run = run.id, kind = run.kind.as_str(), "starting a run queued before the restart");
                    let request = RunRequest {
                        idempotency_key: run.idempotency_key.clone(),
                        ..request
                    };
                    self.spawn(runs, request, None);
                }
                Err(error) => {
                    tracing::error!(connection = %connection.name, run = run.id, %error, "cannot start a queued run");
                }
            }
        }
    }

    /// Runs `request` on a task of its own — or, while this process runs
    /// its connection, queues it to start when that run ends (a run with
    /// an idempotency key, such as a schedule's slot, is recorded as
    /// `queued`). Webhook runs are not queued: the next poll asks again.
    fn spawn(&self, runs: &mut Runs, request: RunRequest, reply: Option<Reply>) {
        let name = request.connection.clone();
        let taken = runs
            .busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.clone());
        if !taken {
            if request.kind == RunKind::Webhook {
                return;
            }
            tracing::info!(connection = %name, kind = request.kind.as_str(), "a run of this connection is in progress here: queued after it");
            if let Some(key) = request.idempotency_key.clone() {
                let (store, clock, kind) = (
                    self.engine.store.clone(),
                    self.engine.clock.clone(),
                    request.kind,
                );
                let connection = name.clone();
                tokio::spawn(async move {
                    let queued = async {
                        let Some(found) = store.connection(&connection).await? else {
                            return Ok(());
                        };
                        store
                            .queue_run(found.id, kind, &key, clock.now())
                            .await
                            .map(|_| ())
                    };
                    if let Err(error) = queued.await {
                        tracing::warn!(%connection, %error, "cannot record the queued run");
                    }
                });
            }
            runs.waiting
                .entry(name)
                .or_default()
                .push_back((request, reply));
            return;
        }
        let engine = self.engine.clone();
        let busy = runs.busy.clone();
        let webhook_errors = runs.webhook_errors.clone();
        runs.running.spawn(async move {
            let kind = request.kind;
            let key = request.idempotency_key.clone();
            let result = engine.run_request(request, Arc::new(NoProgress)).await;
            busy.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&name);
            if result.is_ok() && kind == RunKind::Webhook {
                webhook_errors
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&name);
            }
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
                Err(error) if kind == RunKind::Webhook => {
                    let said = webhook_errors
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(name.clone(), error.to_string());
                    if said.as_deref() == Some(error.to_string().as_str()) {
                        tracing::debug!(connection = %name, %error, "webhook deliveries still not applied");
                    } else {
                        tracing::warn!(connection = %name, %error, "webhook deliveries cannot be applied (said once; they wait in the inbox)");
                    }
                }
                Err(error) => {
                    tracing::warn!(connection = %name, kind = kind.as_str(), %error, "run not started");
                    // A run recorded `queued` (asked for through the API, or
                    // a schedule's slot) ends failed with the reason, never
                    // left queued for ever.
                    if let Some(key) = &key {
                        fail_queued(&engine, &name, kind, key, &error.to_string()).await;
                    }
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
            name
        });
    }
}
