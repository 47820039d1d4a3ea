//! Batches of the change feed rendered once for every subscriber at the
//! same place. Subscribers that keep up all stand at the same cursor when
//! a commit wakes them, and each reads the same changes: the first to ask
//! renders the WebSocket message and the SSE events, the others send the
//! same bytes (a reference count, no copy). A batch is named by its filter
//! and the cursors it runs from and to, so two readers share one only if
//! it holds the same changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use tributary_feed::{Entry, Filter, Read};

/// How many recent batches are kept.
const KEPT: usize = 64;

/// What names a batch: the same filter, from the same cursor to the same
/// cursor, is the same changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    filter: Filter,
    after: i64,
    next: i64,
}

/// One batch, in each form it is sent in (rendered when first asked for).
#[derive(Debug)]
pub struct Batch {
    /// The changes' JSON texts, in order.
    texts: Vec<Arc<str>>,
    changes: Vec<Arc<Entry>>,
    next: i64,
    socket: OnceLock<Utf8Bytes>,
    events: OnceLock<Bytes>,
}

impl Batch {
    /// `{"type":"changes","changes":[...],"next":N}`.
    pub fn socket_message(&self) -> Utf8Bytes {
        self.socket
            .get_or_init(|| {
                let mut text = String::with_capacity(
                    48 + self.texts.iter().map(|t| t.len() + 1).sum::<usize>(),
                );
                text.push_str(r#"{"type":"changes","changes":["#);
                for (n, change) in self.texts.iter().enumerate() {
                    if n > 0 {
                        text.push(',');
                    }
                    text.push_str(change);
                }
                text.push_str(r#"],"next":"#);
                text.push_str(&self.next.to_string());
                text.push('}');
                Utf8Bytes::from(text)
            })
            .clone()
    }

    /// One `change` event per change (`id:` its sequence number).
    pub fn events(&self) -> Bytes {
        self.events
            .get_or_init(|| {
                let mut text =
                    String::with_capacity(self.texts.iter().map(|t| t.len() + 40).sum::<usize>());
                for (change, data) in self.changes.iter().zip(&self.texts) {
                    text.push_str("event: change\nid: ");
                    text.push_str(&change.seq.to_string());
                    text.push_str("\ndata: ");
                    text.push_str(data);
                    text.push_str("\n\n");
                }
                Bytes::from(text)
            })
            .clone()
    }
}

/// The recent batches.
#[derive(Debug, Default)]
pub struct Batches {
    recent: Mutex<VecDeque<(Key, Arc<Batch>)>>,
}

impl Batches {
    /// The batch of `read` (read with `filter` after `after`), rendered
    /// by `render` unless another reader has it already.
    pub fn batch(
        &self,
        filter: &Filter,
        after: i64,
        read: &Read,
        names: &HashMap<i64, String>,
        render: impl Fn(&tributary_store::Change, &HashMap<i64, String>) -> String,
    ) -> Arc<Batch> {
        let key = Key {
            filter: filter.clone(),
            after,
            next: read.next,
        };
        if let Some((_, batch)) = self.kept().iter().find(|(k, _)| *k == key) {
            return batch.clone();
        }
        let batch = Arc::new(Batch {
            texts: read
                .changes
                .iter()
                .map(|entry| entry.text(|c| render(c, names)))
                .collect(),
            changes: read.changes.clone(),
            next: read.next,
            socket: OnceLock::new(),
            events: OnceLock::new(),
        });
        let mut kept = self.kept();
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back((key, batch.clone()));
        batch
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<(Key, Arc<Batch>)>> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
