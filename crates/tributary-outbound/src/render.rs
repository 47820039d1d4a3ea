//! What is sent: message ids, batches of changes (never splitting a
//! transaction), and the JSON bodies — `{"type", "timestamp", "data"}`,
//! the Standard Webhooks payload shape — rendered once, at enqueue.

use serde_json::{Value, json};
use tributary_core::Timestamp;
use tributary_store::{Change, Checkpoint, FinishedRun, Run, Subscription, SubscriptionEvent};

/// A new message id: `msg_` and 26 random characters (about 150 bits),
/// the `webhook-id` of every attempt at the message.
pub fn message_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(30);
    id.push_str("msg_");
    for _ in 0..26 {
        id.push(char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]));
    }
    id
}

/// A change as messages (and the change feed) show it.
pub fn render_change(change: &Change, connection: &str) -> Value {
    json!({
        "seq": change.seq,
        "connection": connection,
        "entity": change.entity,
        "external_id": change.external_id,
        "kind": change.kind.as_str(),
        "content_hash": change.content_hash,
        "run_id": change.run_id,
        "changed_at": change.changed_at,
        "fields": change.fields,
    })
}

/// What the changes of one transaction share: their connection, run and
/// commit time.
fn transaction(change: &Change) -> (i64, Option<i64>, Timestamp) {
    (change.connection_id, change.run_id, change.changed_at)
}

/// `changes` (in feed order) cut into batches of at most `limit`, whole
/// transactions only: a transaction joins the batch before it if both fit
/// in `limit` together, else starts one (a transaction larger than
/// `limit` is a batch of its own).
pub(crate) fn batches<'c>(changes: &[&'c Change], limit: usize) -> Vec<Vec<&'c Change>> {
    let mut transactions: Vec<Vec<&Change>> = Vec::new();
    for &change in changes {
        match transactions.last_mut() {
            Some(t) if t.last().map(|c| transaction(c)) == Some(transaction(change)) => {
                t.push(change);
            }
            _ => transactions.push(vec![change]),
        }
    }
    let mut out: Vec<Vec<&Change>> = Vec::new();
    for t in transactions {
        match out.last_mut() {
            Some(batch) if batch.len() + t.len() <= limit.max(1) => batch.extend(t),
            _ => out.push(t),
        }
    }
    out
}

/// The end of a read of `page` (feed order) that never leaves a
/// transaction half read: where the last whole transaction ends, or
/// `None` if the page holds one transaction only (read further).
pub(crate) fn last_whole(page: &[Change]) -> Option<usize> {
    let last = transaction(page.last()?);
    let cut = page.iter().rposition(|c| transaction(c) != last)?;
    Some(cut + 1)
}

/// The body of a batch of changes: the feed position it reaches
/// (`cursor`), the changes in order.
pub(crate) fn changes_body(
    connection: &str,
    subscription: &Subscription,
    changes: &[&Change],
    cursor: i64,
    now: Timestamp,
) -> String {
    json!({
        "type": SubscriptionEvent::Changes.as_str(),
        "timestamp": now,
        "data": {
            "connection": connection,
            "subscription": subscription.id,
            "entity": subscription.entity,
            "cursor": cursor,
            "changes": changes.iter().map(|c| render_change(c, connection)).collect::<Vec<_>>(),
        },
    })
    .to_string()
}

/// The body of a `sync.finished`: how the run ended, its figures and each
/// entity's (only the subscription's entity if it names one), and the
/// feed position up to which every change of the run was enqueued before
/// this message (`cursor`).
pub(crate) fn finished_body(
    connection: &str,
    subscription: &Subscription,
    finish: &FinishedRun,
    run: &Run,
    checkpoints: &[Checkpoint],
    cursor: i64,
    now: Timestamp,
) -> String {
    let entities: serde_json::Map<String, Value> = checkpoints
        .iter()
        .filter(|c| subscription.entity.as_deref().is_none_or(|e| e == c.entity))
        .map(|c| {
            (
                c.entity.clone(),
                json!({
                    "state": c.state.as_str(),
                    "pages": c.pages,
                    "records": c.records,
                    "created": c.counts.created,
                    "updated": c.counts.updated,
                    "unchanged": c.counts.unchanged,
                    "deleted": c.counts.deleted,
                    "quarantined": c.counts.quarantined,
                    "restored": c.counts.restored,
                    "error": c.error,
                }),
            )
        })
        .collect();
    let counts = run.counts;
    json!({
        "type": SubscriptionEvent::SyncFinished.as_str(),
        "timestamp": now,
        "data": {
            "connection": connection,
            "subscription": subscription.id,
            "run": {
                "id": run.id,
                "kind": run.kind.as_str(),
                "state": finish.state.as_str(),
                "started_at": run.started_at,
                "finished_at": finish.finished_at,
                "error": run.error,
            },
            "counts": {
                "pages": counts.pages,
                "created": counts.created,
                "updated": counts.updated,
                "unchanged": counts.unchanged,
                "deleted": counts.deleted,
                "quarantined": counts.quarantined,
                "restored": counts.restored,
                "requests": counts.requests,
                "retries": counts.retries,
            },
            "entities": entities,
            "cursor": cursor,
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use tributary_core::ChangeKind;

    use super::*;

    fn change(seq: i64, run: i64, second: i64) -> Change {
        Change {
            seq,
            connection_id: 1,
            record_id: seq,
            entity: "Person".into(),
            external_id: seq.to_string(),
            kind: ChangeKind::Created,
            content_hash: None,
            run_id: Some(run),
            changed_at: chrono::DateTime::from_timestamp(second, 0).unwrap(),
            fields: None,
        }
    }

    #[test]
    fn batches_never_split_a_transaction() {
        // Transactions of 3, 2 and 4 changes; batches of at most 2 (or 5).
        let changes: Vec<Change> = [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3), (7, 3)]
            .into_iter()
            .map(|(seq, t)| change(seq, 1, t))
            .chain([change(8, 1, 3), change(9, 1, 3)])
            .collect();
        let refs: Vec<&Change> = changes.iter().collect();
        let cut: Vec<Vec<i64>> = batches(&refs, 2)
            .iter()
            .map(|b| b.iter().map(|c| c.seq).collect())
            .collect();
        assert_eq!(cut, [vec![1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]]);
        let cut: Vec<usize> = batches(&refs, 5).iter().map(Vec::len).collect();
        assert_eq!(cut, [5, 4]);
        let cut: Vec<usize> = batches(&refs, 100).iter().map(Vec::len).collect();
        assert_eq!(cut, [9]);
        // A read stops where its last whole transaction ends.
        assert_eq!(last_whole(&changes), Some(5));
        assert_eq!(last_whole(&changes[..3]), None);
        assert_eq!(last_whole(&[]), None);
    }

    #[test]
    fn message_ids_are_fresh() {
        let a = message_id();
        assert!(a.starts_with("msg_") && a.len() == 30, "{a}");
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, message_id());
    }
}
