//! Reconciliation: after a run has listed every record of an entity (the
//! listing is a full read, which also applies what changed), the stored
//! records it did not see are gone from the source and are marked deleted —
//! with what belongs to them — unless there are so many that a person must
//! approve them first (the mass-delete guard).
//!
//! Deletion is careful: only an entity whose listing completed without
//! error loses records (a listing cut short deletes nothing, and the
//! report says why); a record absent from the listing is confirmed gone by
//! its single-record path where the manifest has one (a listing by offset
//! over a changing collection can pass a record by); and deletion cascades
//! along hard relationships only into entities whose own listing is not
//! known to be incomplete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tributary_core::{RunState, thousands};
use tributary_manifest::{DependencyKind, Manifest};
use tributary_source::Source;
use tributary_store::{Cascade, Deletion, Run};

use crate::retry::{RunControl, retrying};
use crate::{Engine, Error, Progress, Result};

/// The ids a listing saw, per entity.
pub(crate) type Seen = Arc<Mutex<HashSet<String>>>;

/// How many deletions a reconciliation may make without a person's
/// approval, per entity: a larger share of its live records, or a larger
/// count, holds them all back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeleteGuard {
    /// The share of an entity's live records (0.1 = 10 %).
    pub max_share: f64,
    /// The number of records.
    pub max_count: u64,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        Self {
            max_share: 0.10,
            max_count: 1_000,
        }
    }
}

/// What a reconciliation's deletion phase did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deletions {
    /// Records deleted per entity (cascades included).
    pub deleted: BTreeMap<String, i64>,
    /// Deletions the guard held back, per entity: (found, live records).
    pub held: BTreeMap<String, (u64, u64)>,
    /// Entities nothing was deleted of, and why.
    pub skipped: BTreeMap<String, String>,
    /// Requests that confirmed absent records gone, per entity.
    pub confirmations: BTreeMap<String, u64>,
}

impl Deletions {
    /// The guard's message: the numbers, and what to do.
    pub fn held_message(&self, run_id: i64, guard: DeleteGuard) -> Option<String> {
        if self.held.is_empty() {
            return None;
        }
        let numbers: Vec<String> = self
            .held
            .iter()
            .map(|(entity, (found, live))| {
                let share = *found as f64 * 100.0 / (*live).max(1) as f64;
                format!(
                    "{entity} {} of {} ({share:.1}%)",
                    thousands(*found as i64),
                    thousands(*live as i64)
                )
            })
            .collect();
        Some(format!(
            "the mass-delete guard held back deletions ({}; the limit is {:.0}% or {} records per entity): \
             nothing was deleted; approve them with `tributary runs approve {run_id}` or drop them with \
             `tributary runs reject {run_id}`",
            numbers.join(", "),
            guard.max_share * 100.0,
            thousands(guard.max_count as i64),
        ))
    }
}

/// Along which relationships deletion cascades: every hard relationship,
/// except into the entities in `not_into`.
pub(crate) fn cascade(manifest: &Manifest, not_into: &HashSet<String>) -> Vec<Cascade> {
    manifest
        .entities
        .values()
        .filter(|e| !not_into.contains(&e.name))
        .flat_map(|e| {
            e.relationships
                .iter()
                .filter(|r| r.kind == DependencyKind::Hard)
                .map(|r| Cascade {
                    entity: e.name.clone(),
                    rel: r.name.clone(),
                    parent: r.to.clone(),
                })
        })
        .collect()
}

/// What a run's deletion phase works from.
pub(crate) struct Listed<'a> {
    pub(crate) run_id: i64,
    pub(crate) connection_id: i64,
    pub(crate) source: &'a Source,
    /// The ids each completely listed entity saw.
    pub(crate) complete: Vec<(String, HashSet<String>)>,
    /// Entities whose listing did not complete, and why.
    pub(crate) incomplete: BTreeMap<String, String>,
    pub(crate) control: &'a RunControl,
    pub(crate) progress: &'a dyn Progress,
}

impl Engine {
    /// Marks deleted what the complete listings did not see (confirmed
    /// gone), or stages it all for approval when the guard trips.
    pub(crate) async fn delete_missing(&self, listed: Listed<'_>) -> Result<Deletions> {
        let manifest = listed.source.manifest().clone();
        let mut out = Deletions {
            skipped: listed
                .incomplete
                .iter()
                .map(|(entity, why)| {
                    (
                        entity.clone(),
                        format!("its listing did not complete ({why})"),
                    )
                })
                .collect(),
            ..Deletions::default()
        };
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        // Confirmed gone so far, by entity: parents come first (the
        // listings are in dependency order), so a missing record that
        // belongs to a parent already confirmed gone needs no request of
        // its own.
        let mut gone: HashMap<String, HashSet<String>> = HashMap::new();
        for (entity, seen) in &listed.complete {
            let (missing, live) = self.missing(listed.connection_id, entity, seen).await?;
            if missing.is_empty() {
                continue;
            }
            let spec = &manifest.entities[entity];
            let (mut confirmed, ask) = self
                .split_by_parent(listed.connection_id, spec, missing, &gone)
                .await?;
            if spec.get.is_some() && !ask.is_empty() {
                out.confirmations.insert(entity.clone(), ask.len() as u64);
            }
            match self.confirm_gone(&listed, spec, ask).await {
                Ok(asked) => confirmed.extend(asked),
                Err(why) => {
                    out.skipped.insert(entity.clone(), why);
                    continue;
                }
            }
            if confirmed.is_empty() {
                continue;
            }
            gone.entry(entity.clone())
                .or_default()
                .extend(confirmed.iter().cloned());
            let count = confirmed.len() as u64;
            if count > self.options.delete_guard.max_count
                || count as f64 > self.options.delete_guard.max_share * live as f64
            {
                out.held.insert(entity.clone(), (count, live));
            }
            found.push((entity.clone(), confirmed));
        }
        if !out.held.is_empty() {
            for (entity, ids) in &found {
                self.store
                    .stage_deletions(listed.run_id, entity, ids)
                    .await?;
            }
            return Ok(out);
        }
        let not_into: HashSet<String> = listed.incomplete.keys().cloned().collect();
        let cascade = cascade(&manifest, &not_into);
        for (entity, ids) in &found {
            let deleted = self
                .store
                .delete_records(Deletion {
                    connection_id: listed.connection_id,
                    run_id: listed.run_id,
                    entity,
                    external_ids: ids,
                    cascade: &cascade,
                    now: self.clock.now(),
                })
                .await?;
            for (entity, n) in deleted {
                *out.deleted.entry(entity).or_default() += n;
            }
        }
        for (entity, n) in &out.deleted {
            tracing::info!(%entity, deleted = n, "records gone from the source marked deleted");
        }
        Ok(out)
    }

    /// Splits missing records into those that belong (a hard relationship,
    /// as stored) to a record confirmed gone — gone with it, no request
    /// needed — and those the source must be asked about.
    async fn split_by_parent(
        &self,
        connection_id: i64,
        entity: &tributary_manifest::Entity,
        missing: Vec<String>,
        gone: &HashMap<String, HashSet<String>>,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let hard = entity
            .relationships
            .iter()
            .any(|r| r.kind == DependencyKind::Hard && gone.contains_key(&r.to));
        if !hard {
            return Ok((Vec::new(), missing));
        }
        let (mut with_parent, mut ask) = (Vec::new(), Vec::new());
        for id in missing {
            let edges = self
                .store
                .edges_from(connection_id, &entity.name, &id)
                .await?;
            let parent_gone = edges.iter().any(|e| {
                e.hard
                    && gone
                        .get(&e.to_entity)
                        .is_some_and(|ids| ids.contains(&e.to_external_id))
            });
            if parent_gone {
                with_parent.push(id);
            } else {
                ask.push(id);
            }
        }
        Ok((with_parent, ask))
    }

    /// The live stored ids of `entity` that `seen` lacks, and how many live
    /// records it has.
    async fn missing(
        &self,
        connection_id: i64,
        entity: &str,
        seen: &HashSet<String>,
    ) -> Result<(Vec<String>, u64)> {
        let mut missing = Vec::new();
        let mut live = 0u64;
        let mut after: Option<String> = None;
        loop {
            let ids = self
                .store
                .external_ids(connection_id, entity, after.as_deref(), 5_000)
                .await?;
            live += ids.len() as u64;
            let last = ids.last().cloned();
            missing.extend(ids.into_iter().filter(|id| !seen.contains(id)));
            match last {
                Some(last) => after = Some(last),
                None => return Ok((missing, live)),
            }
        }
    }

    /// The ids among `missing` that the source confirms gone (all of them
    /// when the entity has no single-record path); `Err` with the reason
    /// when the source cannot say.
    async fn confirm_gone(
        &self,
        listed: &Listed<'_>,
        entity: &tributary_manifest::Entity,
        missing: Vec<String>,
    ) -> std::result::Result<Vec<String>, String> {
        if entity.get.is_none() {
            return Ok(missing);
        }
        let policy = self.retry_policy();
        let answers: Vec<(String, std::result::Result<bool, String>)> = stream::iter(missing)
            .map(|id| async move {
                let answer = retrying(
                    policy,
                    listed.control,
                    &entity.name,
                    listed.progress,
                    || async {
                        match listed.source.exists(entity, &id).await {
                            Some(answer) => answer,
                            None => Ok(false),
                        }
                    },
                )
                .await
                .map_err(|failure| failure.message);
                (id, answer)
            })
            .buffered(entity.concurrency.max(1))
            .collect()
            .await;
        let mut gone = Vec::new();
        for (id, answer) in answers {
            match answer {
                Ok(false) => gone.push(id),
                // Passed by while the list shifted: it is there.
                Ok(true) => {
                    tracing::info!(entity = %entity.name, %id, "a record the listing missed still exists; kept")
                }
                Err(why) => {
                    return Err(format!(
                        "cannot confirm that {} {id} is gone: {why}",
                        entity.name
                    ));
                }
            }
        }
        Ok(gone)
    }

    /// Applies the deletions a reconciliation's guard held back, and ends
    /// the run `succeeded`. Only a run `waiting_approval` can be approved.
    pub async fn approve(&self, run_id: i64, manifest: &Manifest) -> Result<Run> {
        let run = self.waiting(run_id).await?;
        let connection = self
            .store
            .connections()
            .await?
            .into_iter()
            .find(|c| c.id == run.connection_id)
            .ok_or_else(|| Error::RunNotFound(run_id))?;
        let _lock = self.lock(&connection.name).await?;
        if !self
            .store
            .transition_run(
                run_id,
                RunState::WaitingApproval,
                RunState::Running,
                None,
                self.clock.now(),
            )
            .await?
        {
            return Err(self.not_waiting(run_id).await);
        }
        let staged = self.store.staged_deletions(run_id).await?;
        let mut by_entity: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (entity, id) in staged {
            by_entity.entry(entity).or_default().push(id);
        }
        let cascade = cascade(manifest, &HashSet::new());
        for (entity, ids) in &by_entity {
            self.store
                .delete_records(Deletion {
                    connection_id: connection.id,
                    run_id,
                    entity,
                    external_ids: ids,
                    cascade: &cascade,
                    now: self.clock.now(),
                })
                .await?;
        }
        self.store
            .transition_run(
                run_id,
                RunState::Running,
                RunState::Succeeded,
                Some("deletions approved"),
                self.clock.now(),
            )
            .await?;
        self.store
            .run(run_id)
            .await?
            .ok_or(Error::RunNotFound(run_id))
    }

    /// Drops the deletions a reconciliation's guard held back, and ends
    /// the run `cancelled`. Only a run `waiting_approval` can be rejected.
    pub async fn reject(&self, run_id: i64) -> Result<Run> {
        self.waiting(run_id).await?;
        if !self
            .store
            .transition_run(
                run_id,
                RunState::WaitingApproval,
                RunState::Cancelled,
                Some("deletions rejected: nothing was deleted"),
                self.clock.now(),
            )
            .await?
        {
            return Err(self.not_waiting(run_id).await);
        }
        self.store
            .run(run_id)
            .await?
            .ok_or(Error::RunNotFound(run_id))
    }

    /// Cancels a run that is running or waiting for approval: it ends
    /// `cancelled` and is never resumed. A run going on in a process
    /// commits nothing more (its next commit is refused) and stops.
    pub async fn cancel(&self, run_id: i64) -> Result<Run> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or(Error::RunNotFound(run_id))?;
        if !matches!(
            run.state,
            RunState::Queued | RunState::Running | RunState::WaitingApproval
        ) || !self
            .store
            .transition_run(
                run_id,
                run.state,
                RunState::Cancelled,
                Some("cancelled by a person"),
                self.clock.now(),
            )
            .await?
        {
            let state = self.store.run(run_id).await?.map_or(run.state, |r| r.state);
            return Err(Error::NotCancellable(run_id, state.as_str()));
        }
        self.store
            .run(run_id)
            .await?
            .ok_or(Error::RunNotFound(run_id))
    }

    async fn waiting(&self, run_id: i64) -> Result<Run> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or(Error::RunNotFound(run_id))?;
        if run.state != RunState::WaitingApproval {
            return Err(Error::NotWaiting(run_id, run.state.as_str()));
        }
        Ok(run)
    }

    async fn not_waiting(&self, run_id: i64) -> Error {
        match self.store.run(run_id).await {
            Ok(Some(run)) => Error::NotWaiting(run_id, run.state.as_str()),
            Ok(None) => Error::RunNotFound(run_id),
            Err(error) => error.into(),
        }
    }
}

/// The entities' seen-id sets of a reconciliation, shared with their tasks.
pub(crate) fn seen_sets<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, Seen> {
    names.map(|name| (name, Seen::default())).collect()
}
