//! What a verified request carries: one delivery (Standard Webhooks) or
//! several (a PCO body's `data` array), each with the sender's id for it.

use serde_json::Value;
use tributary_core::Timestamp;

use crate::Rejection;

/// Longest delivery id and event name kept (longer ones are malformed).
const MAX_NAME: usize = 255;

/// One delivery: the unit that is stored once per connection and applied
/// once.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The sender's id for it (PCO: the `EventDelivery` id; Standard
    /// Webhooks: `webhook-id`): a retry repeats it.
    pub id: String,
    /// The event name (`people.v2.events.person.updated`, `user.created`).
    pub event: String,
    /// When the sender says it sent it (Standard Webhooks' timestamp).
    pub sent_at: Option<Timestamp>,
    /// The delivery as JSON text: a PCO `EventDelivery` object, or a
    /// Standard Webhooks body as it came.
    pub payload: String,
}

fn malformed(what: impl Into<String>) -> Rejection {
    Rejection::Malformed(what.into())
}

fn name(value: Option<&Value>, what: &str) -> Result<String, Rejection> {
    match value {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(malformed(format!(
            "{what} is missing, empty or longer than {MAX_NAME} characters"
        ))),
    }
}

impl Delivery {
    /// The deliveries of a PCO body: `{"data": [{"id", "type":
    /// "EventDelivery", "attributes": {"name", "payload", ...}}, ...]}`.
    pub(crate) fn read_pco(body: &[u8]) -> Result<Vec<Delivery>, Rejection> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
        let items = match doc.get("data") {
            Some(Value::Array(items)) if !items.is_empty() => items.as_slice(),
            // One delivery as a bare object is read the same way.
            Some(item @ Value::Object(_)) => std::slice::from_ref(item),
            _ => return Err(malformed("the body has no `data` with an EventDelivery")),
        };
        items
            .iter()
            .map(|item| {
                if item.get("type").and_then(Value::as_str) != Some("EventDelivery") {
                    return Err(malformed("a `data` item is not an EventDelivery"));
                }
                let attributes = item.get("attributes");
                let payload = attributes.and_then(|a| a.get("payload"));
                if !matches!(payload, Some(Value::String(_) | Value::Object(_))) {
                    return Err(malformed("an EventDelivery has no `attributes.payload`"));
                }
                Ok(Delivery {
                    id: name(item.get("id"), "an EventDelivery's `id`")?,
                    event: name(attributes.and_then(|a| a.get("name")), "`attributes.name`")?,
                    sent_at: None,
                    payload: item.to_string(),
                })
            })
            .collect()
    }

    /// The delivery of a Standard Webhooks request: a JSON object whose
    /// `type` is the event (`user.created`).
    pub(crate) fn read_standard(
        id: &str,
        sent_at: Option<Timestamp>,
        body: &[u8],
    ) -> Result<Delivery, Rejection> {
        let text = std::str::from_utf8(body).map_err(|_| malformed("the body is not UTF-8"))?;
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
        if !doc.is_object() {
            return Err(malformed("the body is not a JSON object"));
        }
        Ok(Delivery {
            id: name(Some(&Value::String(id.to_owned())), "webhook-id")?,
            event: name(doc.get("type"), "the body's `type`")?,
            sent_at,
            payload: text.to_owned(),
        })
    }
}
