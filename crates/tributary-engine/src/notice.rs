//! What a webhook delivery tells: which record of which entity changed or
//! went, or which person was merged into which — read from the event name
//! (the manifest's entities list the events that touch them) and the
//! delivery's payload. Applying it is the inbox worker's (fetch-on-notify
//! for PCO: the record is read again from the API).

use serde_json::Value;
use tributary_core::Timestamp;
use tributary_manifest::Manifest;

/// PCO's event for a person merged into another.
pub const PERSON_MERGER: &str = "people.v2.events.person_merger.created";

/// What one delivery announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Record `id` of `entity` was created or updated.
    Changed { entity: String, id: String },
    /// Record `id` of `entity` was deleted.
    Deleted { entity: String, id: String },
    /// Person `removed` was merged into person `keep`: `removed` is gone,
    /// what was its now belongs to `keep`.
    Merged { keep: String, removed: String },
    /// An event no entity of the manifest lists: kept, not applied.
    Unmapped,
}

impl Notice {
    /// The record the notice is about, for coalescing notices of one
    /// record (`None`: a merger or an unmapped event).
    pub fn record(&self) -> Option<(&str, &str)> {
        match self {
            Notice::Changed { entity, id } | Notice::Deleted { entity, id } => {
                Some((entity.as_str(), id.as_str()))
            }
            _ => None,
        }
    }
}

/// A delivery read whole: what it announces, the object it carries (its
/// `data`) and when its event happened, if it says (a Standard Webhooks
/// body's `timestamp`, epoch milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// What it announces.
    pub notice: Notice,
    /// The object it carries: the record as the API serves it, for an
    /// event that carries it whole (Clerk), or its id alone.
    pub object: Value,
    /// When the event happened, by the sender's word.
    pub at: Option<Timestamp>,
}

/// Reads a delivery of `event` whose JSON is `delivery` (a PCO
/// `EventDelivery` object, whose `attributes.payload` is the resource's
/// JSON:API document, as a string or an object; or a Standard Webhooks
/// body, `{"type", "data": {...}}`). `Err` says why it cannot be read.
pub fn read_notice(manifest: &Manifest, event: &str, delivery: &str) -> Result<Notice, String> {
    read_announcement(manifest, event, delivery).map(|a| a.notice)
}

/// Reads a delivery like [`read_notice`], keeping its object and time.
pub fn read_announcement(
    manifest: &Manifest,
    event: &str,
    delivery: &str,
) -> Result<Announcement, String> {
    let doc: Value =
        serde_json::from_str(delivery).map_err(|e| format!("the delivery is not JSON: {e}"))?;
    let at = doc
        .get("timestamp")
        .and_then(Value::as_i64)
        .and_then(Timestamp::from_timestamp_millis);
    // PCO: the resource document is inside, often as a string.
    let mut resource = match doc.pointer("/attributes/payload") {
        Some(Value::String(text)) => serde_json::from_str(text)
            .map_err(|e| format!("the delivery's payload is not JSON: {e}"))?,
        Some(other) => other.clone(),
        None => doc,
    };
    let object = resource
        .get_mut("data")
        .map(Value::take)
        .ok_or("the payload has no `data`")?;
    let notice = notice_of(manifest, event, &object)?;
    Ok(Announcement { notice, object, at })
}

/// What the event `event` about `data` announces.
fn notice_of(manifest: &Manifest, event: &str, data: &Value) -> Result<Notice, String> {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if event == PERSON_MERGER {
        let attributes = data.get("attributes");
        let keep = text(attributes.and_then(|a| a.get("person_to_keep_id")))
            .ok_or("a person merger without `person_to_keep_id`")?;
        let removed = text(attributes.and_then(|a| a.get("person_to_remove_id")))
            .ok_or("a person merger without `person_to_remove_id`")?;
        return Ok(Notice::Merged { keep, removed });
    }
    let Some(entity) = manifest
        .entities
        .values()
        .find(|e| e.webhooks.iter().any(|w| w == event))
    else {
        return Ok(Notice::Unmapped);
    };
    let id = text(data.get("id")).ok_or("the payload's `data` has no `id`")?;
    let entity = entity.name.clone();
    let deleted = [".destroyed", ".deleted"]
        .iter()
        .any(|suffix| event.ends_with(suffix));
    Ok(match deleted {
        true => Notice::Deleted { entity, id },
        false => Notice::Changed { entity, id },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pco() -> Manifest {
        tributary_manifest::builtin("pco").unwrap().unwrap()
    }

    /// A PCO `EventDelivery` with the resource document as a string.
    fn delivery(event: &str, data: Value) -> String {
        json!({"id": "d-1", "type": "EventDelivery", "attributes": {
            "name": event, "attempt": 1, "payload": json!({"data": data}).to_string()}})
        .to_string()
    }

    #[test]
    fn pco_events_name_their_entity_record_and_action() {
        let m = pco();
        let person = json!({"type": "Person", "id": "42", "attributes": {}});
        assert_eq!(
            read_notice(
                &m,
                "people.v2.events.person.updated",
                &delivery("people.v2.events.person.updated", person.clone())
            ),
            Ok(Notice::Changed {
                entity: "Person".into(),
                id: "42".into()
            })
        );
        assert_eq!(
            read_notice(&m, "people.v2.events.person.created", &delivery("", person)),
            Ok(Notice::Changed {
                entity: "Person".into(),
                id: "42".into()
            })
        );
        let email = json!({"type": "Email", "id": 7});
        assert_eq!(
            read_notice(&m, "people.v2.events.email.destroyed", &delivery("", email)),
            Ok(Notice::Deleted {
                entity: "Email".into(),
                id: "7".into()
            })
        );
        let merger = json!({"type": "PersonMerger", "id": "1-2", "attributes": {
            "person_to_keep_id": "1", "person_to_remove_id": "2"}});
        assert_eq!(
            read_notice(&m, PERSON_MERGER, &delivery(PERSON_MERGER, merger)),
            Ok(Notice::Merged {
                keep: "1".into(),
                removed: "2".into()
            })
        );
        let notice = read_notice(
            &m,
            "people.v2.events.list.updated",
            &delivery("", json!({"id": "3"})),
        );
        assert_eq!(notice, Ok(Notice::Unmapped));
        assert_eq!(Notice::Unmapped.record(), None);
    }

    #[test]
    fn a_payload_as_an_object_or_a_bare_body_reads_the_same() {
        let m = pco();
        let object = json!({"attributes": {"payload": {"data": {"type": "Person", "id": "5"}}}});
        let bare = json!({"type": "user.updated", "data": {"id": "5"}});
        for body in [object, bare] {
            let notice = read_notice(&m, "people.v2.events.person.updated", &body.to_string());
            assert_eq!(notice.unwrap().record(), Some(("Person", "5")));
        }
    }

    #[test]
    fn unreadable_deliveries_say_why() {
        let m = pco();
        let e = "people.v2.events.person.updated";
        assert!(read_notice(&m, e, "nope").unwrap_err().contains("not JSON"));
        let string_payload = json!({"attributes": {"payload": "{oops"}}).to_string();
        assert!(
            read_notice(&m, e, &string_payload)
                .unwrap_err()
                .contains("payload is not JSON")
        );
        assert!(
            read_notice(&m, e, &json!({"x": 1}).to_string())
                .unwrap_err()
                .contains("no `data`")
        );
        let no_id = delivery(e, json!({"type": "Person"}));
        assert!(read_notice(&m, e, &no_id).unwrap_err().contains("no `id`"));
        let half = delivery(
            PERSON_MERGER,
            json!({"attributes": {"person_to_keep_id": "1"}}),
        );
        assert!(
            read_notice(&m, PERSON_MERGER, &half)
                .unwrap_err()
                .contains("person_to_remove_id")
        );
    }
}
