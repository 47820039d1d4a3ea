//! Payload-applied webhook deliveries (a manifest's `[webhooks] apply =
//! "payload"`: Clerk). Each delivery carries the whole object, so no
//! request is needed to apply it; what matters is which word is the last:
//!
//! - Of several deliveries for one record, the newest wins: by the
//!   object's `updated_at`, then the event's own time; a deletion (which
//!   carries only an id) is as new as its event, and wins a tie.
//! - Against the stored row, an object older than the stored version is
//!   not applied, and neither is one no newer than the record's deletion:
//!   a deletion leaves a tombstone that no late, reordered update brings
//!   back. A deletion deletes the record's dependants by the manifest's
//!   hard relationships (a user's memberships).
//! - A record whose hard parent is unknown here has the parent read by
//!   its `get` path (through the connection's rate budget) and stored in
//!   the same run; one whose parent is deleted — here, in the same burst,
//!   or at the source (a 404) — is not applied.
//! - Objects embedded in another's event (the organization and user in a
//!   membership event) are never applied: their own events and reads are
//!   the only writers of those records, so an old snapshot cannot
//!   overwrite a newer row.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;

use futures_util::stream::{self, StreamExt};
use tributary_core::{PreparedRecord, QuarantinedRecord, SourceRecord, Timestamp};
use tributary_manifest::Manifest;
use tributary_source::Source;
use tributary_store::Stamp;

use crate::Engine;
use crate::retry::{Failure, RetryPolicy, RunControl};
use crate::webhook::{Found, Key, read_record, reads_at_once};

/// One delivery's word on a record.
pub(crate) struct Word {
    /// How new the word is: the object's `updated_at` (a deletion: the
    /// event's time).
    at: Timestamp,
    /// When the event happened (a tie-break).
    sent: Timestamp,
    what: What,
}

enum What {
    Live(Box<SourceRecord>),
    Bad(QuarantinedRecord),
    Gone,
}

impl Word {
    /// The record `object` of `entity` as a delivery sent it at `sent`.
    pub(crate) fn live(
        source: &Source,
        entity: &tributary_manifest::Entity,
        object: &serde_json::Value,
        sent: Timestamp,
    ) -> Self {
        match source.transform_object(entity, object) {
            Ok(record) => Word {
                at: record.source_updated_at.unwrap_or(sent),
                sent,
                what: What::Live(Box::new(record)),
            },
            Err(bad) => Word {
                at: sent,
                sent,
                what: What::Bad(bad),
            },
        }
    }

    /// The record's deletion, announced at `sent`.
    pub(crate) fn gone(sent: Timestamp) -> Self {
        Word {
            at: sent,
            sent,
            what: What::Gone,
        }
    }

    fn version(&self) -> (Timestamp, Timestamp, bool) {
        (self.at, self.sent, matches!(self.what, What::Gone))
    }
}

/// A record waiting for its unknown parents to be read.
struct Waiting {
    key: Key,
    record: Box<SourceRecord>,
    parents: Vec<Key>,
}

/// What became of each record some delivery spoke of (and of each parent
/// read for them).
pub(crate) type Resolved = Vec<(Key, Result<Found, Failure>)>;

impl Engine {
    /// Decides each record's newest word against the stored rows, reads
    /// the unknown parents, and says what to store, delete or leave.
    pub(crate) async fn resolve_payloads(
        &self,
        connection_id: i64,
        source: &Source,
        words: BTreeMap<Key, Vec<Word>>,
        control: &RunControl,
        requests: &AtomicU64,
        policy: RetryPolicy,
    ) -> crate::Result<Resolved> {
        let manifest = source.manifest().clone();
        let winners: BTreeMap<Key, Word> = words
            .into_iter()
            .filter_map(|(key, words)| {
                let newest = words.into_iter().max_by_key(Word::version)?;
                Some((key, newest))
            })
            .collect();
        // The stored rows of the records and of their hard parents.
        let mut asked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((entity, id), word) in &winners {
            asked.entry(entity.clone()).or_default().insert(id.clone());
            if let What::Live(record) = &word.what {
                for edge in record.edges.iter().filter(|e| e.hard) {
                    asked
                        .entry(edge.to_entity.clone())
                        .or_default()
                        .insert(edge.to_external_id.clone());
                }
            }
        }
        let mut stamps: HashMap<Key, Stamp> = HashMap::new();
        for (entity, ids) in asked {
            let ids: Vec<String> = ids.into_iter().collect();
            for (id, stamp) in self.store.stamps(connection_id, &entity, &ids).await? {
                stamps.insert((entity.clone(), id), stamp);
            }
        }

        let mut resolved: Resolved = Vec::new();
        // Records waiting for their unknown parents to be read.
        let mut waiting: Vec<Waiting> = Vec::new();
        for (key, word) in winners.iter() {
            let stamp = stamps.get(key);
            let record = match &word.what {
                // A deletion of a record never stored is kept as a
                // tombstone, so that its creation, if it comes later, does
                // not bring it back.
                What::Gone if stamp.is_none() => {
                    resolved.push((key.clone(), Ok(Found::Bury)));
                    continue;
                }
                What::Gone => {
                    resolved.push((key.clone(), Ok(Found::Gone)));
                    continue;
                }
                What::Bad(bad) => {
                    let found = match stale(stamp, word.at) {
                        Some(why) => Found::Skipped(why),
                        None => Found::Live(vec![], vec![bad.clone()]),
                    };
                    resolved.push((key.clone(), Ok(found)));
                    continue;
                }
                What::Live(record) => record,
            };
            if let Some(why) = stale(stamp, word.at) {
                resolved.push((key.clone(), Ok(Found::Skipped(why))));
                continue;
            }
            let mut unknown = Vec::new();
            let mut deleted_parent = None;
            for edge in record.edges.iter().filter(|e| e.hard) {
                let parent = (edge.to_entity.clone(), edge.to_external_id.clone());
                let stored = stamps.get(&parent);
                match winners.get(&parent) {
                    Some(Word {
                        what: What::Gone, ..
                    }) => deleted_parent = Some(parent),
                    // Stored by this run (a word that is applied).
                    Some(
                        w @ Word {
                            what: What::Live(_),
                            ..
                        },
                    ) if stale(stored, w.at).is_none() => {}
                    // Otherwise what is stored decides.
                    _ => match stored {
                        Some(stamp) if stamp.deleted_at.is_some() => deleted_parent = Some(parent),
                        Some(_) => {}
                        None if readable(&manifest, &parent.0) => unknown.push(parent),
                        // Nothing to read it by: the record is stored, its
                        // parent comes with the next listing.
                        None => {}
                    },
                }
            }
            if let Some((entity, id)) = deleted_parent {
                let why = format!("not applied: its {entity} {id} is deleted");
                resolved.push((key.clone(), Ok(Found::Skipped(why))));
            } else if !unknown.is_empty() {
                waiting.push(Waiting {
                    key: key.clone(),
                    record: record.clone(),
                    parents: unknown,
                });
            } else {
                let prepared = PreparedRecord::new((**record).clone());
                resolved.push((key.clone(), Ok(Found::Live(vec![prepared], vec![]))));
            }
        }
        resolved.extend(read_parents(&manifest, source, waiting, control, requests, policy).await);
        Ok(resolved)
    }
}

/// Whether records of `entity` can be read one by one.
fn readable(manifest: &Manifest, entity: &str) -> bool {
    manifest
        .entities
        .get(entity)
        .is_some_and(|e| e.get.is_some())
}

/// Why a record's newest word, as new as `at`, is not applied over its
/// stored row, if it is not.
fn stale(stamp: Option<&Stamp>, at: Timestamp) -> Option<String> {
    let stamp = stamp?;
    match (stamp.deleted_at, stamp.source_updated_at) {
        (Some(deleted), _) if at <= deleted => Some(format!(
            "not applied: deleted at {}, and this version ({}) is no newer",
            deleted.to_rfc3339(),
            at.to_rfc3339()
        )),
        (None, Some(stored)) if at < stored => Some(format!(
            "not applied: the stored version ({}) is newer than this one ({})",
            stored.to_rfc3339(),
            at.to_rfc3339()
        )),
        _ => None,
    }
}

/// Reads each unknown parent once, several at once. A record is stored
/// once every parent it waits for is found (a parent found invalid is
/// quarantined, and exists: the record is stored too); one whose parent
/// is gone at the source (a 404) is not applied; a failed read fails it
/// (its deliveries are tried again).
async fn read_parents(
    manifest: &Manifest,
    source: &Source,
    waiting: Vec<Waiting>,
    control: &RunControl,
    requests: &AtomicU64,
    policy: RetryPolicy,
) -> Resolved {
    let concurrency = reads_at_once(manifest);
    let parents: BTreeSet<Key> = waiting
        .iter()
        .flat_map(|w| w.parents.iter().cloned())
        .collect();
    let read: BTreeMap<Key, Result<Found, Failure>> = stream::iter(parents)
        .map(|parent| async move {
            let found = match manifest.entities.get(&parent.0) {
                Some(definition) => {
                    read_record(source, definition, &parent.1, control, requests, policy).await
                }
                None => Err(Failure::other(format!("no entity `{}`", parent.0))),
            };
            (parent, found)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut resolved = Vec::new();
    for child in waiting {
        let mut outcome = Ok(Found::Live(
            vec![PreparedRecord::new(*child.record)],
            vec![],
        ));
        for parent in &child.parents {
            let (entity, id) = parent;
            match read.get(parent) {
                Some(Ok(Found::Live(..))) => {}
                Some(Err(failure)) => {
                    outcome = Err(Failure::other(format!(
                        "reading its {entity} {id} failed: {}",
                        failure.message
                    )));
                    break;
                }
                _ => {
                    outcome = Ok(Found::Skipped(format!(
                        "not applied: its {entity} {id} does not exist at the source"
                    )));
                }
            }
        }
        resolved.push((child.key, outcome));
    }
    // The parents found are stored (a parent not found is not deleted
    // here: nothing said so).
    for (parent, found) in read {
        if let Ok(Found::Live(records, quarantined)) = found {
            resolved.push((parent, Ok(Found::Live(records, quarantined))));
        }
    }
    resolved
}
