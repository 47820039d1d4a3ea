//! Applying a connection's webhook deliveries: a run of kind `webhook`
//! (through [`Engine::run_request`], like every sync), over the deliveries
//! due now, oldest first.
//!
//! Each delivery says which record changed or went ([`read_notice`]).
//! A manifest whose events carry the whole object (`apply = "payload"`)
//! has them applied as sent, the newest winning: see [`crate::payload`].
//! Otherwise notices of one record are coalesced: the record is read ONCE from the
//! API as it is now (fetch-on-notify, [`Source::fetch_one`]) and stored —
//! or, on a 404, deleted with the manifest's cascades. So order does not
//! matter: a late `updated` after a `destroyed` finds the record gone and
//! never brings it back, and an old event never overwrites newer data (the
//! API's answer is the newest there is). A person merger deletes the
//! merged person WITHOUT its cascade — its children moved to the kept
//! person at the source, so none is lost here; they point at the merged
//! person until their own events, the next delta or the nightly
//! reconciliation read them again — and reads the kept person again.
//!
//! The records commit with their change-feed rows in one transaction
//! (the run names them: `changes.run_id`), and each applied delivery names
//! the run. A delivery whose record could not be read is tried again
//! later (5 s, doubling, at most an hour apart); once it has failed
//! [`MAX_DELIVERY_ATTEMPTS`] times and for [`RETRY_FOR`] since it arrived
//! (the senders' own retry horizon), it is a dead letter, until replayed.
//! An attempt cut short by the service shutting down does not count. One
//! that cannot be read at all is dead at once; one of an event no entity
//! maps is kept, marked applied with a note.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tributary_core::{Cursor, PreparedRecord, QuarantinedRecord, RunKind, RunState, Timestamp};
use tributary_manifest::{Entity, WebhookApply};
use tributary_source::Source;
use tributary_store::{
    Burial, Connection, Deletion, Delivery, EntityState, PageWrite, RunStart, Settled, Subject,
};

use crate::notice::{Notice, PERSON_MERGER, read_announcement};
use crate::payload::Word;
use crate::reconcile::cascade;
use crate::retry::{Failure, RunControl, retrying};
use crate::{Engine, EntityReport, NoProgress, Result, RunReport};

/// Deliveries one run applies at most.
pub const DELIVERIES_PER_RUN: u32 = 500;

/// Failed attempts before a delivery may become a dead letter...
pub const MAX_DELIVERY_ATTEMPTS: i64 = 8;

/// ...and how long since it arrived (senders retry for about a day).
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3_600);

/// The wait after a delivery's `tried`-th failed attempt: 5 s, doubling,
/// at most an hour.
fn backoff(tried: i64) -> Duration {
    let doublings = (tried - 1).clamp(0, 20) as u32;
    Duration::from_secs(5u64.saturating_mul(1 << doublings).min(3_600))
}

/// A record: its entity and id.
pub(crate) type Key = (String, String);

/// What a webhook run writes.
#[derive(Default)]
struct Writes {
    /// Records (and quarantine entries) to store, per entity.
    live: BTreeMap<String, (Vec<PreparedRecord>, Vec<QuarantinedRecord>)>,
    /// Records to delete with their cascades, per entity.
    gone: BTreeMap<String, Vec<String>>,
    /// Records merged into others: deleted without their cascades.
    gone_merged: BTreeMap<String, Vec<String>>,
    /// Records never stored whose deletion was heard: tombstones.
    buried: BTreeMap<String, Vec<String>>,
    /// When the deletions happened, by the source's clock when that is
    /// later than this one's (so a tombstone is compared in the time the
    /// source's `updated_at` is given in); `None`: now.
    deleted_at: Option<Timestamp>,
}

/// What to do with one record a delivery spoke of.
pub(crate) enum Found {
    /// Store it (or its quarantine entry).
    Live(Vec<PreparedRecord>, Vec<QuarantinedRecord>),
    /// Delete it.
    Gone,
    /// Keep a tombstone of it: its deletion was heard, it was never stored.
    Bury,
    /// Leave it, for the reason given (noted on its deliveries): its
    /// entity has no single-record path, or the delivery is older than
    /// what is stored.
    Skipped(String),
}

impl Engine {
    /// Applies the connection's due deliveries in a run of kind `webhook`
    /// (called by [`Engine::sync_keyed`] for that kind, under the
    /// connection's lock).
    pub(crate) async fn apply_webhooks(
        &self,
        connection: &Connection,
        source: &Source,
        started: Instant,
    ) -> Result<RunReport> {
        let store = &self.store;
        let now = self.clock.now();
        let deliveries = store
            .due_deliveries(connection.id, now, DELIVERIES_PER_RUN)
            .await?;
        let scope = format!("{} webhooks", source.base_url());
        let (run, resumed) = match store
            .start_run(connection.id, RunKind::Webhook, Some(&scope), None, now)
            .await?
        {
            RunStart::New(run) => (run, false),
            RunStart::Resumed(run) | RunStart::Finished(run) => (run, true),
        };
        let manifest = source.manifest().clone();
        let mut settled: Vec<(i64, Settled)> = Vec::new();
        // Each record noticed, and the deliveries that noticed it.
        let mut noticed: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        // The records a delivery said were deleted.
        let mut said_deleted: HashSet<(String, String)> = HashSet::new();
        // The people merged into others: deleted without their cascade.
        let mut merged_away: HashSet<(String, String)> = HashSet::new();
        // The entity a person merger is about: the one that lists the event.
        let merger_entity = manifest
            .entities
            .values()
            .find(|e| e.webhooks.iter().any(|w| w == PERSON_MERGER))
            .map_or("Person".to_owned(), |e| e.name.clone());
        // Payload-applied: each record's words, the newest to win.
        let payload = manifest.webhook_apply == WebhookApply::Payload;
        let mut words: BTreeMap<Key, Vec<Word>> = BTreeMap::new();
        // The time of the latest deletion heard.
        let mut latest_deletion: Option<Timestamp> = None;
        for delivery in &deliveries {
            let read = read_announcement(&manifest, &delivery.event, &delivery.payload);
            let sent =
                |at: Option<Timestamp>| at.or(delivery.sent_at).unwrap_or(delivery.received_at);
            match read.map(|a| (a.notice, a.object, a.at)) {
                Ok((Notice::Changed { entity, id }, object, at)) => {
                    if let Some(definition) = manifest.entities.get(&entity).filter(|_| payload) {
                        let word = Word::live(source, definition, &object, sent(at));
                        words
                            .entry((entity.clone(), id.clone()))
                            .or_default()
                            .push(word);
                    }
                    noticed.entry((entity, id)).or_default().push(delivery.id);
                }
                Ok((Notice::Deleted { entity, id }, _, at)) => {
                    if payload {
                        latest_deletion = latest_deletion.max(Some(sent(at)));
                        let word = Word::gone(sent(at));
                        words
                            .entry((entity.clone(), id.clone()))
                            .or_default()
                            .push(word);
                    }
                    said_deleted.insert((entity.clone(), id.clone()));
                    noticed.entry((entity, id)).or_default().push(delivery.id);
                }
                Ok((Notice::Merged { keep, removed }, _, _)) => {
                    let entity = merger_entity.clone();
                    merged_away.insert((entity.clone(), removed.clone()));
                    for id in [removed, keep] {
                        noticed
                            .entry((entity.clone(), id))
                            .or_default()
                            .push(delivery.id);
                    }
                }
                Ok((Notice::Unmapped, _, _)) => settled.push((
                    delivery.id,
                    Settled::Applied {
                        run_id: run.id,
                        note: Some(format!(
                            "event `{}` is not mapped to an entity: kept, not applied",
                            delivery.event
                        )),
                    },
                )),
                Err(why) => settled.push((delivery.id, Settled::Dead { error: why })),
            }
        }
        tracing::info!(run = run.id, connection = %connection.name, deliveries = deliveries.len(), records = noticed.len(), "applying webhook deliveries");

        // Read each record once, several at once.
        let control = RunControl::new(self.options.retry_budget, self.stop.subscribe());
        let requests = AtomicU64::new(0);
        let policy = self.retry_policy();
        let concurrency = reads_at_once(&manifest);
        let found: Vec<(Key, Result<Found, Failure>)> = if payload {
            self.resolve_payloads(connection.id, source, words, &control, &requests, policy)
                .await?
        } else {
            stream::iter(noticed.keys().cloned())
                .map(|(entity, id)| {
                    let (control, requests, source) = (&control, &requests, source);
                    let definition = manifest.entities.get(&entity).cloned();
                    let deleted = said_deleted.contains(&(entity.clone(), id.clone()));
                    async move {
                        let result = match definition {
                            None => Err(Failure::other(format!("no entity `{entity}`"))),
                            // Nothing to read it by: a deletion is applied
                            // as said; a change waits for the next delta.
                            Some(definition) if definition.get.is_none() => Ok(match deleted {
                                true => Found::Gone,
                                false => Found::Skipped(format!(
                                    "entity {entity} has no single-record path: the next delta sync reads {id}"
                                )),
                            }),
                            Some(definition) => {
                                read_record(source, &definition, &id, control, requests, policy)
                                    .await
                            }
                        };
                        ((entity, id), result)
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await
        };

        // Commit: the live records, then the deletions.
        let mut writes = Writes {
            deleted_at: latest_deletion.map(|at| at.max(self.clock.now())),
            ..Writes::default()
        };
        let mut failed: BTreeMap<(String, String), Failure> = BTreeMap::new();
        let mut skipped: BTreeMap<Key, String> = BTreeMap::new();
        for (key, result) in found {
            match result {
                Ok(Found::Skipped(why)) => {
                    skipped.insert(key, why);
                }
                Ok(Found::Live(records, quarantined)) => {
                    let entry = writes.live.entry(key.0.clone()).or_default();
                    entry.0.extend(records);
                    entry.1.extend(quarantined);
                }
                Ok(Found::Gone) if merged_away.contains(&key) => {
                    writes.gone_merged.entry(key.0).or_default().push(key.1)
                }
                Ok(Found::Gone) => writes.gone.entry(key.0).or_default().push(key.1),
                Ok(Found::Bury) => writes.buried.entry(key.0).or_default().push(key.1),
                Err(failure) => {
                    failed.insert(key, failure);
                }
            }
        }
        let commit = self
            .commit_webhook_records(connection.id, run.id, &manifest, &writes)
            .await;
        let mut reports = Vec::new();
        let commit_error = match commit {
            Ok(deleted) => {
                for entity in writes
                    .live
                    .keys()
                    .chain(writes.gone.keys())
                    .chain(writes.gone_merged.keys())
                    .collect::<HashSet<_>>()
                {
                    let records = writes.live.get(entity).map_or(0, |(r, _)| r.len() as i64);
                    reports.push(EntityReport {
                        entity: entity.clone(),
                        state: EntityState::Done,
                        records,
                        pages: i64::from(records > 0),
                        requests: 0,
                        deleted: deleted.get(entity).copied().unwrap_or(0),
                        error: None,
                    });
                }
                reports.sort_by(|a, b| a.entity.cmp(&b.entity));
                None
            }
            Err(error) => Some(error.to_string()),
        };

        // Settle each delivery: applied once all its records are; else
        // tried again later, or dead after the last attempt.
        let attempts: BTreeMap<i64, &Delivery> = deliveries.iter().map(|d| (d.id, d)).collect();
        let mut outcome: BTreeMap<i64, Option<String>> = BTreeMap::new();
        let mut notes: BTreeMap<i64, String> = BTreeMap::new();
        for (key, ids) in &noticed {
            if let Some(why) = skipped.get(key) {
                for id in ids {
                    notes.insert(*id, why.clone());
                }
            }
            let error = match (&commit_error, failed.get(key)) {
                (Some(error), _) => Some(format!("the commit failed: {error}")),
                (None, Some(failure)) => Some(format!(
                    "reading {} {} failed: {}",
                    key.0, key.1, failure.message
                )),
                (None, None) => None,
            };
            for id in ids {
                let slot = outcome.entry(*id).or_default();
                if slot.is_none() {
                    *slot = error.clone();
                }
            }
        }
        let now = self.clock.now();
        let stopping = self.is_stopping();
        let mut retried = 0usize;
        for (id, error) in outcome {
            let Some(delivery) = attempts.get(&id) else {
                continue;
            };
            let tried = delivery.attempts + 1;
            let failing_for = (now - delivery.received_at).to_std().unwrap_or_default();
            settled.push((
                id,
                match error {
                    None => Settled::Applied {
                        run_id: run.id,
                        note: notes.remove(&id),
                    },
                    // Cut short by the shutdown: left as it was, due at
                    // once for the next process.
                    Some(_) if stopping => continue,
                    Some(error) if tried >= MAX_DELIVERY_ATTEMPTS && failing_for >= RETRY_FOR => {
                        Settled::Dead {
                            error: format!("{error} (after {tried} attempts)"),
                        }
                    }
                    Some(error) => {
                        retried += 1;
                        Settled::Retry {
                            error,
                            at: now
                                + chrono::Duration::from_std(backoff(tried))
                                    .unwrap_or_else(|_| chrono::Duration::hours(1)),
                        }
                    }
                },
            ));
        }
        // Each settled from the attempts it was read with: one replayed
        // meanwhile keeps its new start.
        let settled: Vec<(i64, i64, Settled)> = settled
            .into_iter()
            .map(|(id, outcome)| {
                let seen = attempts.get(&id).map_or(0, |d| d.attempts);
                (id, seen, outcome)
            })
            .collect();
        // The audit trail: which records each applied delivery named.
        let applied: HashSet<i64> = settled
            .iter()
            .filter(|(_, _, s)| matches!(s, Settled::Applied { .. }))
            .map(|(id, _, _)| *id)
            .collect();
        let subjects: Vec<Subject> = noticed
            .iter()
            .flat_map(|((entity, external_id), ids)| {
                ids.iter()
                    .filter(|id| applied.contains(id))
                    .map(|id| Subject {
                        connection_id: connection.id,
                        entity: entity.clone(),
                        external_id: external_id.clone(),
                        delivery_id: *id,
                    })
            })
            .collect();
        store.add_webhook_subjects(&subjects).await?;
        store.settle_deliveries(&settled, now).await?;
        let requests = requests.load(Ordering::Relaxed);
        store
            .add_run_usage(run.id, requests, control.retries())
            .await?;
        let dead = settled
            .iter()
            .filter(|(_, _, s)| matches!(s, Settled::Dead { .. }))
            .count();
        let error = match (&commit_error, retried, dead) {
            (Some(error), _, _) => Some(format!("the commit failed: {error}")),
            (None, 0, 0) => None,
            (None, retried, dead) => Some(format!(
                "{retried} deliveries will be tried again, {dead} are dead letters (`tributary webhooks list --state dead`)"
            )),
        };
        let state = match error {
            None => RunState::Succeeded,
            Some(_) => RunState::Failed,
        };
        store
            .finish_run(run.id, state, error.as_deref(), false, self.clock.now())
            .await?;
        let run = store.run(run.id).await?.unwrap_or(run);
        Ok(RunReport {
            run,
            resumed,
            full_instead_of_delta: false,
            deletions: None,
            entities: reports,
            elapsed: started.elapsed(),
            needs_reauth: control.stopped(),
            retries: control.retries(),
            spooled: 0,
        })
    }

    /// Stores the live records (one page per entity), deletes the gone
    /// ones with their cascades and buries the never stored, in
    /// transactions of their own; the deleted per entity.
    async fn commit_webhook_records(
        &self,
        connection_id: i64,
        run_id: i64,
        manifest: &tributary_manifest::Manifest,
        writes: &Writes,
    ) -> Result<BTreeMap<String, i64>> {
        let now = self.clock.now();
        let deleted_at = writes.deleted_at.unwrap_or(now);
        let cursor = Cursor::start();
        let pages: Vec<PageWrite<'_>> = writes
            .live
            .iter()
            .filter_map(|(entity, (records, quarantined))| {
                let definition = manifest.entities.get(entity)?;
                Some(PageWrite {
                    connection_id,
                    run_id,
                    entity,
                    canonical_entity: &definition.canonical,
                    records,
                    quarantined,
                    cursor: &cursor,
                    finished: true,
                    total: None,
                    mark: None,
                    now,
                })
            })
            .collect();
        if !pages.is_empty() {
            self.store.apply_pages(&pages).await?;
        }
        let cascade = cascade(manifest, &HashSet::new());
        let mut deleted = BTreeMap::new();
        let deletions = writes
            .gone
            .iter()
            .map(|(entity, ids)| (entity, ids, cascade.as_slice()))
            .chain(
                writes
                    .gone_merged
                    .iter()
                    .map(|(entity, ids)| (entity, ids, &[][..])),
            );
        for (entity, ids, cascade) in deletions {
            let counts = self
                .store
                .delete_records(Deletion {
                    connection_id,
                    run_id,
                    entity,
                    external_ids: ids,
                    cascade,
                    now: deleted_at,
                })
                .await?;
            for (entity, n) in counts {
                *deleted.entry(entity).or_insert(0) += n;
            }
        }
        for (entity, ids) in &writes.buried {
            let Some(definition) = manifest.entities.get(entity) else {
                continue;
            };
            self.store
                .bury(Burial {
                    connection_id,
                    run_id,
                    entity,
                    canonical_entity: &definition.canonical,
                    external_ids: ids,
                    now: deleted_at,
                })
                .await?;
        }
        Ok(deleted)
    }
}

/// Records a webhook run reads at once: the manifest's largest entity
/// `concurrency`.
pub(crate) fn reads_at_once(manifest: &tributary_manifest::Manifest) -> usize {
    manifest
        .entities
        .values()
        .map(|e| e.concurrency)
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Record `id` of `entity` (which has a single-record path) as the source
/// has it now.
pub(crate) async fn read_record(
    source: &Source,
    entity: &Entity,
    id: &str,
    control: &RunControl,
    requests: &AtomicU64,
    policy: crate::retry::RetryPolicy,
) -> Result<Found, Failure> {
    let page = control
        .unless_stopping(retrying(policy, control, &entity.name, &NoProgress, || {
            requests.fetch_add(1, Ordering::Relaxed);
            source.fetch_one(entity, id)
        }))
        .await?;
    Ok(match page {
        None => Found::Gone,
        Some(page) => Found::Live(
            page.records.into_iter().map(PreparedRecord::new).collect(),
            page.quarantined,
        ),
    })
}
