//! Records, edges, cursors and the content hash.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Timestamp;
use crate::canonical::{CanonicalJson, canonical_json};

/// One source object, transformed and ready to be committed by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// The manifest's entity name, which is the source's type (`Person`).
    pub entity: String,
    /// The source's id for the object.
    pub external_id: String,
    /// The source's own last-modified time, when it has one.
    pub source_updated_at: Option<Timestamp>,
    /// The object as the source sent it (`type`, `id`, `attributes`,
    /// `relationships`), minus volatile parts such as `links`, as canonical
    /// JSON text: written once, straight from the response body.
    pub raw: CanonicalJson,
    /// The canonical projection built by the manifest's field mapping.
    pub canonical: Value,
    /// Relationships to other records.
    pub edges: Vec<EdgeRef>,
}

impl SourceRecord {
    /// The content hash of this record: see [`content_hash`].
    pub fn content_hash(&self) -> String {
        hash_parts(self.raw.as_str(), &canonical_json(&self.canonical))
    }
}

/// A relationship from one record to another, by the target's external id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeRef {
    /// The relationship's name in the manifest (`person`, `primary_campus`).
    pub rel: String,
    /// The target's entity.
    pub to_entity: String,
    /// The target's external id.
    pub to_external_id: String,
    /// Whether the relationship is a hard dependency (the record belongs to
    /// the target) rather than a soft one.
    pub hard: bool,
}

/// A record that could not be transformed; it is kept with its error while
/// the rest of its page is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// The entity the record was meant for.
    pub entity: String,
    /// The source id, when the object had one.
    pub external_id: Option<String>,
    /// The object as the source sent it.
    pub raw: Value,
    /// What went wrong, in words an operator can act on.
    pub error: String,
}

/// Where an entity's scan stands: adapter-specific, opaque to the engine and
/// the store, committed with the page it follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Cursor(pub Value);

impl Cursor {
    /// The cursor of a scan that has not started.
    pub fn start() -> Self {
        Self(Value::Null)
    }

    /// Whether this is the start of a scan.
    pub fn is_start(&self) -> bool {
        self.0.is_null()
    }
}

/// The kinds of sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Every record of every entity.
    Full,
    /// Records changed since the last high-water mark.
    Delta,
    /// A complete listing of ids that marks missing records deleted.
    Reconcile,
    /// One record, triggered by a webhook.
    Webhook,
}

impl RunKind {
    /// The name used in tables, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Full => "full",
            RunKind::Delta => "delta",
            RunKind::Reconcile => "reconcile",
            RunKind::Webhook => "webhook",
        }
    }

    /// Parses [`RunKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "full" => RunKind::Full,
            "delta" => RunKind::Delta,
            "reconcile" => RunKind::Reconcile,
            "webhook" => RunKind::Webhook,
            _ => return None,
        })
    }
}

/// The states of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Asked for while its connection was busy: it starts when the run
    /// before it ends (a `serve` restarted meanwhile starts it then).
    Queued,
    /// Started and not finished; a run left in this state by a crash is
    /// resumed by the next request for the same kind of run.
    Running,
    /// Every entity finished.
    Succeeded,
    /// At least one entity failed; the others may have finished.
    Failed,
    /// A reconciliation found more deletions than its guard allows: nothing
    /// was deleted, and the run waits for a person to approve or reject them.
    WaitingApproval,
    /// Stopped by a person (cancelled, or its deletions rejected).
    Cancelled,
}

impl RunState {
    /// The name used in tables, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::WaitingApproval => "waiting_approval",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Whether a run in this state has ended (`queued`, `running` and
    /// `waiting_approval` have not).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }

    /// Parses [`RunState::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "waiting_approval" => RunState::WaitingApproval,
            "cancelled" => RunState::Cancelled,
            _ => return None,
        })
    }
}

/// What a committed change did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// First seen.
    Created,
    /// Content changed.
    Updated,
    /// Gone from the source.
    Deleted,
}

impl ChangeKind {
    /// The name used in tables and the change feed.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }

    /// Parses [`ChangeKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "deleted" => ChangeKind::Deleted,
            _ => return None,
        })
    }
}

/// A record ready for the store: its JSON serialised and its content hash
/// computed outside the database transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRecord {
    /// The entity.
    pub entity: String,
    /// The source id.
    pub external_id: String,
    /// The source's last-modified time.
    pub source_updated_at: Option<Timestamp>,
    /// `raw` as canonical JSON text. Shared, not copied, on its way into
    /// the database: a store can hand it to its driver as is.
    pub raw_json: Arc<str>,
    /// `canonical` as canonical JSON text (shared like `raw_json`).
    pub canonical_json: Arc<str>,
    /// See [`content_hash`].
    pub content_hash: Arc<str>,
    /// Relationships.
    pub edges: Vec<EdgeRef>,
}

impl PreparedRecord {
    /// Serialises and hashes a record.
    pub fn new(record: SourceRecord) -> Self {
        let canonical_json = canonical_json(&record.canonical);
        let content_hash = hash_parts(record.raw.as_str(), &canonical_json);
        Self {
            entity: record.entity,
            external_id: record.external_id,
            source_updated_at: record.source_updated_at,
            raw_json: record.raw.shared(),
            canonical_json: canonical_json.into(),
            content_hash: content_hash.into(),
            edges: record.edges,
        }
    }
}

/// The content hash of a record: SHA-256 over the canonical JSON text (see
/// [`canonical_json`]) of the raw object and of the canonical projection,
/// lowercase hex. Equal content gives an equal hash whatever the key order
/// the source used, so an unchanged record produces no change.
pub fn content_hash(raw: &Value, canonical: &Value) -> String {
    hash_parts(&canonical_json(raw), &canonical_json(canonical))
}

fn hash_parts(raw_json: &str, canonical_json: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(raw_json.as_bytes());
    hasher.update([0u8]);
    hasher.update(canonical_json.as_bytes());
    let mut text = [0u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut text).expect("64 hex digits hold 32 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order() {
        let a = json!({"a": 1, "b": {"x": [1, 2], "y": "z"}});
        let b: Value = serde_json::from_str(r#"{"b":{"y":"z","x":[1,2]},"a":1}"#).unwrap();
        assert_eq!(content_hash(&a, &json!({})), content_hash(&b, &json!({})));
    }

    #[test]
    fn hash_sees_every_difference() {
        let base = content_hash(&json!({"a": 1}), &json!({"a": 1}));
        assert_ne!(base, content_hash(&json!({"a": 2}), &json!({"a": 1})));
        assert_ne!(base, content_hash(&json!({"a": 1}), &json!({"a": 2})));
        assert_ne!(base, content_hash(&json!({"a": "1"}), &json!({"a": 1})));
        // The separator keeps raw and canonical apart.
        assert_ne!(
            content_hash(&json!([1]), &json!([2, 3])),
            content_hash(&json!([1, 2]), &json!([3]))
        );
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn prepared_record_carries_canonical_text_and_hash() {
        let record = SourceRecord {
            entity: "Person".into(),
            external_id: "1".into(),
            source_updated_at: None,
            raw: json!({"id": "1", "attributes": {"b": 2, "a": "x\"y"}}).into(),
            canonical: json!({"name": "x"}),
            edges: vec![],
        };
        let prepared = PreparedRecord::new(record.clone());
        assert_eq!(
            &*prepared.raw_json,
            r#"{"attributes":{"a":"x\"y","b":2},"id":"1"}"#
        );
        assert_eq!(*prepared.content_hash, record.content_hash());
        let parsed: Value = serde_json::from_str(&prepared.raw_json).unwrap();
        assert_eq!(parsed, record.raw.to_value());
    }

    #[test]
    fn names_round_trip() {
        for kind in [
            RunKind::Full,
            RunKind::Delta,
            RunKind::Reconcile,
            RunKind::Webhook,
        ] {
            assert_eq!(RunKind::parse(kind.as_str()), Some(kind));
        }
        for state in [RunState::Running, RunState::Succeeded, RunState::Failed] {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        for change in [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted,
        ] {
            assert_eq!(ChangeKind::parse(change.as_str()), Some(change));
        }
        assert_eq!(RunKind::parse("nope"), None);
    }
}
