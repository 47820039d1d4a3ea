//! Following the feed for a subscription: new changes and ended runs
//! become messages, enqueued with the cursor's move in one transaction.

use tributary_core::Timestamp;
use tributary_store::{
    Change, Enqueue, FinishedRun, NewMessage, Store, Subscription, SubscriptionEvent,
    SubscriptionState,
};

use crate::OutboundOptions;
use crate::render::{batches, changes_body, finished_body, last_whole, message_id};

/// Rounds of reading one subscription may take in one pass (so one far
/// behind does not hold the others up for long).
const ROUNDS: usize = 10;

/// Enqueues what is new for `subscription` (of connection `connection`,
/// by name), given the feed's `horizon`; how many messages it enqueued.
pub(crate) async fn follow(
    store: &dyn Store,
    options: &OutboundOptions,
    subscription: &Subscription,
    connection: &str,
    horizon: i64,
    now: Timestamp,
) -> tributary_store::Result<usize> {
    if subscription.cursor < horizon {
        let reason = format!(
            "changes after {} up to {horizon} were deleted by the feed's retention before they \
             were sent; `tributary subscriptions enable {}` resumes after them",
            subscription.cursor, subscription.id
        );
        tracing::warn!(subscription = subscription.id, %reason, "subscription disabled");
        store
            .set_subscription_state(
                subscription.id,
                SubscriptionState::Disabled,
                Some(&reason),
                now,
            )
            .await?;
        return Ok(0);
    }
    let mut cursor = subscription.cursor;
    let mut enqueued = 0;
    for _ in 0..ROUNDS {
        // The run ends first: every change their runs committed is then
        // in the feed read below, so a `sync.finished` always follows its
        // run's changes.
        let finishes = match subscription.wants_finished {
            true => store.finished_runs(subscription.id).await?,
            false => Vec::new(),
        };
        let read = read(store, options, subscription, cursor).await?;
        let mut messages = Vec::new();
        if subscription.wants_changes {
            let admitted: Vec<&Change> = read
                .changes
                .iter()
                .filter(|c| subscription.entity.as_deref().is_none_or(|e| e == c.entity))
                .collect();
            let cut = batches(&admitted, options.batch);
            let count = cut.len();
            for (i, batch) in cut.into_iter().enumerate() {
                // The last batch reaches the end of the read (changes of
                // other entities move the cursor too).
                let reach = match i + 1 == count {
                    true => read.next,
                    false => batch.last().map_or(read.next, |c| c.seq),
                };
                messages.push(NewMessage {
                    message_id: message_id(),
                    event: SubscriptionEvent::Changes.as_str().to_owned(),
                    body: changes_body(connection, subscription, &batch, reach, now),
                });
            }
        }
        // Ends are told once caught up (their runs' changes all enqueued).
        let mut told = Vec::new();
        if read.caught_up {
            for finish in &finishes {
                told.push(finish.id);
                if let Some(body) =
                    finished(store, subscription, connection, finish, read.next, now).await?
                {
                    messages.push(NewMessage {
                        message_id: message_id(),
                        event: SubscriptionEvent::SyncFinished.as_str().to_owned(),
                        body,
                    });
                }
            }
        }
        // Nothing to tell: a subscription to run ends only moves its
        // cursor with an end to tell (not at every move of the feed).
        if told.is_empty() && (read.next == cursor || !subscription.wants_changes) {
            break;
        }
        let written = store
            .enqueue_messages(&Enqueue {
                subscription_id: subscription.id,
                from_cursor: cursor,
                to_cursor: read.next,
                messages: &messages,
                finished: &told,
                now,
            })
            .await?;
        if !written {
            // Another process enqueued from this cursor first (or the
            // subscription changed): it is theirs; look again next pass.
            break;
        }
        enqueued += messages.len();
        cursor = read.next;
        if read.caught_up {
            break;
        }
    }
    Ok(enqueued)
}

/// A read of the feed after a cursor.
struct Read {
    /// The connection's changes after the cursor, whole transactions only.
    changes: Vec<Change>,
    /// The cursor after them (the last change looked at).
    next: i64,
    /// Whether the read reached the feed's head.
    caught_up: bool,
}

async fn read(
    store: &dyn Store,
    options: &OutboundOptions,
    subscription: &Subscription,
    after: i64,
) -> tributary_store::Result<Read> {
    if !subscription.wants_changes {
        // Only run ends: the cursor they tell is the feed's head.
        return Ok(Read {
            changes: Vec::new(),
            next: store.feed_head().await?.max(after),
            caught_up: true,
        });
    }
    let limit = options.read.max(1);
    // The head before the read: every change of the connection up to it
    // is in the read when the read is short, so a caught-up cursor moves
    // to it — past the other connections' changes, and so never left
    // behind the retention's horizon by a quiet connection.
    let head = store.feed_head().await?;
    let mut changes = store
        .changes(Some(subscription.connection_id), after, limit)
        .await?;
    if (changes.len() as u32) < limit {
        let next = changes.last().map_or(after, |c| c.seq).max(head);
        return Ok(Read {
            changes,
            next,
            caught_up: true,
        });
    }
    // A full page: stop where its last whole transaction ends, or — one
    // transaction fills it — read on to that transaction's end.
    if let Some(end) = last_whole(&changes) {
        changes.truncate(end);
    } else {
        loop {
            let last = changes.last().map_or(after, |c| c.seq);
            let more = store
                .changes(Some(subscription.connection_id), last, limit)
                .await?;
            let short = (more.len() as u32) < limit;
            let key = changes.last().map(|c| (c.run_id, c.changed_at));
            let same = more
                .iter()
                .take_while(|c| Some((c.run_id, c.changed_at)) == key)
                .count();
            let ended = same < more.len() || short;
            changes.extend(more.into_iter().take(same));
            if ended {
                break;
            }
        }
    }
    let next = changes.last().map_or(after, |c| c.seq);
    Ok(Read {
        changes,
        next,
        caught_up: false,
    })
}

/// The body of a `sync.finished` for `finish`, or `None` when its run is
/// gone (its connection was removed meanwhile).
async fn finished(
    store: &dyn Store,
    subscription: &Subscription,
    connection: &str,
    finish: &FinishedRun,
    cursor: i64,
    now: Timestamp,
) -> tributary_store::Result<Option<String>> {
    let Some(run) = store.run(finish.run_id).await? else {
        return Ok(None);
    };
    let checkpoints = store.checkpoints(run.id).await?;
    Ok(Some(finished_body(
        connection,
        subscription,
        finish,
        &run,
        &checkpoints,
        cursor,
        now,
    )))
}
