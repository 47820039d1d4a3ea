//! Clerk webhook events: what a mutation emits, and the JSON envelope Svix delivers.
//!
//! ```json
//! {"data": {...}, "object": "event", "type": "user.updated", "timestamp": 1767225600001,
//!  "instance_id": "ins_…", "event_attributes": {"http_request": {"client_ip": "…",
//!  "user_agent": "…"}}}
//! ```
//!
//! `timestamp` is the mutation's time in epoch milliseconds. A `*.created` or `*.updated`
//! event's `data` is the object as the API served it right after the mutation (an
//! organization with `members_count`); `user.deleted` and `organization.deleted` carry only
//! the `DeletedObject` (`{object, id, deleted: true}`, plus `slug` for an organization and
//! `external_id` for a user that had one); `organizationMembership.deleted` carries the whole
//! membership as it was, its organization's `members_count` already lowered.

use serde::Serialize;
use serde_json::{Value, json};

/// One emitted event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClerkEvent {
    /// The Svix message id (`msg_…`): the `svix-id` of every delivery of this event, retries
    /// and duplicates included.
    pub id: String,
    /// `user.created`, `organizationMembership.deleted`, …
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the mutation happened, in epoch milliseconds.
    pub timestamp: i64,
    /// The object (or `DeletedObject`).
    pub data: Value,
    /// The simulated instance (`ins_…`).
    pub instance_id: String,
}

impl ClerkEvent {
    /// The JSON body Svix POSTs.
    pub fn envelope(&self) -> Value {
        json!({
            "data": self.data,
            "object": "event",
            "type": self.event_type,
            "timestamp": self.timestamp,
            "instance_id": self.instance_id,
            "event_attributes": {"http_request": {
                "client_ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0 (tributary-sim; Clerk Backend API simulator)",
            }},
        })
    }

    /// The object's id (`data.id`).
    pub fn object_id(&self) -> Option<&str> {
        self.data["id"].as_str()
    }

    /// A forgery of this event: the body an attacker would like a receiver to apply. A created
    /// or updated user or organization becomes its `*.deleted` event (same id, a
    /// `DeletedObject`), a created or updated membership becomes `organizationMembership.deleted`;
    /// anything else keeps its body. The simulator signs it with a wrong secret.
    pub(crate) fn forged_envelope(&self) -> Value {
        let mut forged = self.envelope();
        let Some((family, action)) = self.event_type.split_once('.') else {
            return forged;
        };
        if action != "created" && action != "updated" {
            return forged;
        }
        let data = match family {
            "user" => json!({"object": "user", "id": self.data["id"], "deleted": true}),
            "organization" => json!({"object": "organization", "id": self.data["id"],
                "slug": self.data["slug"], "deleted": true}),
            "organizationMembership" => self.data.clone(),
            _ => return forged,
        };
        forged["type"] = json!(format!("{family}.deleted"));
        forged["data"] = data;
        forged
    }
}
