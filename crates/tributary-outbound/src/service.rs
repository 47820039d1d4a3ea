//! The service: its passes, its loop and its handle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tributary_core::{Clock, Timestamp};
use tributary_secrets::SecretKey;
use tributary_store::{Attempted, Message, Store, Subscription, SubscriptionState};

use crate::deliver::Sender;
use crate::follow::follow;
use crate::{Error, OutboundOptions};

/// The webhooks-out service, built from its options. [`Outbound::start`]
/// runs its loop; [`Outbound::tick`] runs one pass (what tests drive).
#[derive(Clone)]
pub struct Outbound {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: OutboundOptions,
    sender: Sender,
    /// Deliveries in flight, at most `options.concurrency`.
    slots: Arc<Semaphore>,
    /// Claims in flight: (outbox id → attempt), given back if the service
    /// stops before their attempt ends.
    claims: Mutex<HashMap<i64, i64>>,
    wake: Notify,
    stop: watch::Sender<bool>,
}

/// A cheap handle on a running [`Outbound`].
#[derive(Clone)]
pub struct OutboundHandle {
    outbound: Outbound,
    stopped: watch::Receiver<bool>,
}

impl std::fmt::Debug for OutboundHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundHandle").finish_non_exhaustive()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Messages enqueued.
    pub enqueued: usize,
    /// Attempts made, in the order they ended.
    pub attempts: Vec<Attempt>,
}

/// One attempt at a message, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub subscription_id: i64,
    pub message_id: String,
    /// Its number (1: the first).
    pub attempt: i64,
    pub outcome: Attempted,
}

impl Outbound {
    /// A service over `store` that signs with the subscriptions' secrets,
    /// opened with `key`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: Arc<SecretKey>,
        options: OutboundOptions,
    ) -> Result<Self, Error> {
        let sender = Sender::new(key, &options)?;
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                clock,
                options,
                sender,
                slots,
                claims: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                stop: watch::Sender::new(false),
            }),
        })
    }

    /// One pass: follows every active subscription, then makes every
    /// attempt due (as many at once as the concurrency allows) and waits
    /// for them to end.
    pub async fn tick(&self) -> Result<Tick, Error> {
        let mut tasks = JoinSet::new();
        let enqueued = pass(&self.shared, &mut tasks).await?;
        let mut attempts = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(attempt)) = done {
                attempts.push(attempt);
            }
        }
        Ok(Tick { enqueued, attempts })
    }

    /// Starts the loop: a pass every [`OutboundOptions::poll`], when woken,
    /// when a message falls due and when a delivery ends; deliveries run
    /// beside it.
    pub fn start(self) -> OutboundHandle {
        let (done, stopped) = watch::channel(false);
        tokio::spawn(run(self.shared.clone(), done));
        OutboundHandle {
            outbound: self,
            stopped,
        }
    }
}

impl OutboundHandle {
    /// Something may be new (the feed moved, a run ended): look now.
    pub fn wake(&self) {
        self.outbound.shared.wake.notify_one();
    }

    /// One pass now, beside the loop, waiting for its attempts.
    pub async fn tick(&self) -> Result<Tick, Error> {
        self.outbound.tick().await
    }

    /// Stops the loop: no new pass or attempt starts; attempts in flight
    /// are dropped and their claims given back (due at once, the attempt
    /// uncounted: the next process sends the same message again, under
    /// the same id). Returns once that is done.
    pub async fn shutdown(&self) {
        self.outbound.shared.stop.send_replace(true);
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }
}

/// The loop.
async fn run(shared: Arc<Shared>, done: watch::Sender<bool>) {
    let mut stop = shared.stop.subscribe();
    let mut tasks = JoinSet::new();
    let mut last_expiry: Option<Timestamp> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let failed = match pass(&shared, &mut tasks).await {
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(%error, "webhooks out: a pass failed");
                true
            }
        };
        let now = shared.clock.now();
        let due = last_expiry.is_none_or(|at| {
            (now - at).to_std().unwrap_or_default() >= shared.options.expire_every
        });
        if due {
            last_expiry = Some(now);
            expire(&shared, now).await;
        }
        let wait = match shared.store.next_message_due().await {
            Ok(Some(at)) => (at - now).to_std().unwrap_or_default(),
            Ok(None) => shared.options.poll,
            Err(error) => {
                tracing::warn!(%error, "webhooks out: cannot read the outbox");
                shared.options.poll
            }
        };
        // A message due now with every slot taken waits for a slot (or a
        // poll); after a failed pass, the next waits a poll too.
        let wait = match shared.slots.available_permits() {
            0 => shared.options.poll,
            _ if failed => shared.options.poll,
            _ => wait.min(shared.options.poll),
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let left: Vec<(i64, i64)> = lock(&shared.claims).drain().collect();
    let now = shared.clock.now();
    for (id, attempts) in left {
        if let Err(error) = shared.store.release_message(id, attempts, now).await {
            tracing::warn!(%error, message = id, "webhooks out: cannot give a claim back; it is taken again once its lease ends");
        }
    }
    done.send_replace(true);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn expire(shared: &Shared, now: Timestamp) {
    let before =
        now - chrono::Duration::from_std(shared.options.retention).unwrap_or(chrono::Duration::MAX);
    match shared.store.expire_messages(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deleted = n,
            "delivered webhook messages past the retention deleted"
        ),
        Err(error) => tracing::warn!(%error, "webhooks out: the retention failed"),
    }
}

/// Follows every active subscription, then claims what is due (as many as
/// there are free slots) and starts each attempt in `tasks`. The number of
/// messages enqueued.
async fn pass(shared: &Arc<Shared>, tasks: &mut JoinSet<Option<Attempt>>) -> Result<usize, Error> {
    let store = shared.store.as_ref();
    let subscriptions = store.subscriptions().await?;
    let names: HashMap<i64, String> = store
        .connections()
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let mut enqueued = 0;
    if subscriptions
        .iter()
        .any(|s| s.state == SubscriptionState::Active)
    {
        let horizon = store.feed_horizon().await?;
        for subscription in &subscriptions {
            let Some(name) = names.get(&subscription.connection_id) else {
                continue;
            };
            if subscription.state != SubscriptionState::Active {
                continue;
            }
            let now = shared.clock.now();
            match follow(store, &shared.options, subscription, name, horizon, now).await {
                Ok(n) => enqueued += n,
                Err(error) => tracing::warn!(
                    subscription = subscription.id,
                    %error,
                    "webhooks out: cannot follow the feed for a subscription"
                ),
            }
        }
    }
    let free = shared.slots.available_permits();
    if free == 0 {
        return Ok(enqueued);
    }
    let now = shared.clock.now();
    let lease = chrono::Duration::from_std(shared.options.lease()).unwrap_or(chrono::Duration::MAX);
    let claimed = store
        .claim_messages(now, now + lease, u32::try_from(free).unwrap_or(u32::MAX))
        .await?;
    let by_id: HashMap<i64, &Subscription> = subscriptions.iter().map(|s| (s.id, s)).collect();
    for message in claimed {
        // A subscription another process added since the list was read.
        let subscription = match by_id.get(&message.subscription_id) {
            Some(s) => (*s).clone(),
            None => match store.subscription(message.subscription_id).await? {
                Some(s) => s,
                None => continue,
            },
        };
        let Some(name) = names.get(&subscription.connection_id).cloned() else {
            continue;
        };
        lock(&shared.claims).insert(message.id, message.attempts);
        let shared = shared.clone();
        tasks.spawn(async move { deliver(shared, message, subscription, name).await });
    }
    Ok(enqueued)
}

/// One attempt, within a slot.
async fn deliver(
    shared: Arc<Shared>,
    message: Message,
    subscription: Subscription,
    connection: String,
) -> Option<Attempt> {
    let _slot = shared.slots.clone().acquire_owned().await.ok()?;
    let settled = shared
        .sender
        .attempt(
            shared.store.as_ref(),
            shared.clock.as_ref(),
            &shared.options,
            &message,
            &subscription,
            &connection,
        )
        .await;
    // Settled (or not, and then taken again once its lease ends): no
    // longer ours to give back.
    lock(&shared.claims).remove(&message.id);
    match settled {
        Ok(Some(outcome)) => Some(Attempt {
            subscription_id: subscription.id,
            message_id: message.message_id,
            attempt: message.attempts,
            outcome,
        }),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, message = %message.message_id, "webhooks out: cannot record an attempt; it is made again once its lease ends");
            None
        }
    }
}
