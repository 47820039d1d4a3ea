//! The API's access and its audit trail, as stored: API tokens (only
//! their SHA-256), and which records each applied webhook delivery named —
//! with the change feed's rows and the runs, that is every mutation's
//! audit trail: which run or delivery made it, when, and which fields
//! changed.

use std::collections::BTreeMap;

use tributary_core::Timestamp;

use crate::rows::Columns;
use crate::{Change, Delivery, Error, Result, Run, Store};

/// The columns of an [`ApiToken`].
pub(crate) const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenRole {
    /// Only read: records, the change feed, search, the audit trail, runs.
    Read,
    /// Everything, reading included.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Read => "read",
            TokenRole::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(TokenRole::Read),
            "admin" => Some(TokenRole::Admin),
            _ => None,
        }
    }
}

/// An API token as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    /// A name for people (who or what holds it).
    pub name: String,
    pub role: TokenRole,
    pub created_at: Timestamp,
    /// When it was revoked: it no longer opens anything.
    pub revoked_at: Option<Timestamp>,
}

/// A record an applied webhook delivery named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub connection_id: i64,
    pub entity: String,
    pub external_id: String,
    /// The inbox row (`Delivery::id`).
    pub delivery_id: i64,
}

/// One mutation of a record: its feed row, the run that made it, and the
/// webhook deliveries that run applied for this record (none for a
/// scheduled or manual sync).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub change: Change,
    pub run: Option<Run>,
    pub deliveries: Vec<Delivery>,
}

/// A row of [`TOKEN_COLUMNS`].
pub(crate) fn token_row(row: &impl Columns) -> Result<ApiToken> {
    let role: String = row.value("role")?;
    Ok(ApiToken {
        id: row.value("id")?,
        name: row.value("name")?,
        role: TokenRole::parse(&role)
            .ok_or_else(|| Error::Corrupt(format!("token role `{role}`")))?,
        created_at: row.ts("created_at")?,
        revoked_at: row.opt_ts("revoked_at")?,
    })
}

/// The audit trail of one record, newest first, at most `limit` changes
/// (kept as long as the change feed keeps its rows).
pub async fn audit(
    store: &dyn Store,
    connection_id: i64,
    entity: &str,
    external_id: &str,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let changes = store
        .record_changes(connection_id, entity, external_id, limit)
        .await?;
    let mut runs: BTreeMap<i64, Option<Run>> = BTreeMap::new();
    for run_id in changes.iter().filter_map(|c| c.run_id) {
        if let std::collections::btree_map::Entry::Vacant(slot) = runs.entry(run_id) {
            slot.insert(store.run(run_id).await?);
        }
    }
    let deliveries = store
        .record_deliveries(connection_id, entity, external_id)
        .await?;
    Ok(changes
        .into_iter()
        .map(|change| {
            let run = change
                .run_id
                .and_then(|id| runs.get(&id).cloned().flatten());
            let deliveries = deliveries
                .iter()
                .filter(|d| d.run_id.is_some() && d.run_id == change.run_id)
                .cloned()
                .collect();
            AuditEntry {
                change,
                run,
                deliveries,
            }
        })
        .collect())
}
