//! From one source object to a [`SourceRecord`] — or to quarantine.
//!
//! Pure functions: the field mapping and type coercion declared in the
//! manifest, the relationship edges, and the source's `updated_at`. The
//! object is read where it was parsed, in the response body ([`Borrowed`]):
//! only the mapped fields are copied out, and the raw text is written once,
//! in canonical form, straight from the body.

use serde_json::{Map, Value};
use serde_json_borrow::ObjectAsVec;
use tributary_core::{
    Borrowed, CanonicalJson, EdgeRef, QuarantinedRecord, SourceRecord, Timestamp,
};
use tributary_manifest::{Entity, Field, FieldType, RelationshipSource};

/// Members of a source object that change without its content changing
/// (URLs, request metadata): left out of the raw text and its hash.
const VOLATILE: [&str; 2] = ["links", "meta"];

/// How a source object is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON:API resource object: `type`, `id`, `attributes`,
    /// `relationships`; `links` and `meta` are left out of the raw text.
    JsonApi,
    /// A plain JSON object: its members are the attributes, `id` among
    /// them; the raw text is the object as the API sent it.
    Plain,
}

/// Transforms one JSON:API resource object of `entity`. `parent_id` is the
/// parent the object was listed under, if any.
pub fn transform(
    entity: &Entity,
    object: &Borrowed<'_>,
    parent_id: Option<&str>,
) -> Result<SourceRecord, QuarantinedRecord> {
    transform_shaped(entity, object, parent_id, Shape::JsonApi)
}

/// Transforms one object of `entity` laid out as `shape`.
pub fn transform_shaped(
    entity: &Entity,
    object: &Borrowed<'_>,
    parent_id: Option<&str>,
    shape: Shape,
) -> Result<SourceRecord, QuarantinedRecord> {
    let Borrowed::Object(members) = object else {
        return Err(quarantine(
            entity,
            None,
            Value::from(object),
            "the object is not a JSON object".into(),
        ));
    };
    let kept = || {
        members
            .iter()
            .filter(move |(key, _)| shape == Shape::Plain || !VOLATILE.contains(key))
    };
    let owned = || {
        Value::Object(
            kept()
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect(),
        )
    };
    let id = match member(members, "id") {
        Some(Borrowed::Str(s)) if !s.is_empty() => s.to_string(),
        Some(Borrowed::Number(n)) => number(n).to_string(),
        _ => {
            return Err(quarantine(
                entity,
                None,
                owned(),
                "the object has no `id` (a non-empty string or number)".into(),
            ));
        }
    };
    if shape == Shape::JsonApi
        && let Some(Borrowed::Str(ty)) = member(members, "type")
        && *ty != entity.name
    {
        let message = format!("the object's type is `{ty}`, expected `{}`", entity.name);
        return Err(quarantine(entity, Some(id), owned(), message));
    }
    let attributes = match shape {
        Shape::Plain => Ok(Some(members)),
        Shape::JsonApi => match member(members, "attributes") {
            Some(Borrowed::Object(a)) => Ok(Some(a)),
            None | Some(Borrowed::Null) => Ok(None),
            Some(_) => Err("`attributes` is not an object".to_owned()),
        },
    };
    let built =
        attributes.and_then(|attributes| build(entity, &id, members, attributes, parent_id));
    match built {
        Ok((canonical, edges, source_updated_at)) => Ok(SourceRecord {
            entity: entity.name.clone(),
            external_id: id,
            source_updated_at,
            raw: CanonicalJson::from_entries(kept()),
            canonical: Value::Object(canonical),
            edges,
        }),
        Err(message) => Err(quarantine(entity, Some(id), owned(), message)),
    }
}

/// The member `key` of an object; of a key given twice, the last, as
/// serde_json (and so the raw text) keeps it.
pub(crate) fn member<'v, 'a>(object: &'v ObjectAsVec<'a>, key: &str) -> Option<&'v Borrowed<'a>> {
    object
        .as_vec()
        .iter()
        .rev()
        .find(|(k, _)| &**k == key)
        .map(|(_, v)| v)
}

/// `value[key]` when `value` is an object that has it.
pub(crate) fn get<'v, 'a>(value: &'v Borrowed<'a>, key: &str) -> Option<&'v Borrowed<'a>> {
    match value {
        Borrowed::Object(object) => member(object, key),
        _ => None,
    }
}

/// A number as serde_json holds (and prints) it.
fn number(n: &serde_json_borrow::Number) -> serde_json::Number {
    (*n).into()
}

fn quarantine(
    entity: &Entity,
    external_id: Option<String>,
    raw: Value,
    error: String,
) -> QuarantinedRecord {
    QuarantinedRecord {
        entity: entity.name.clone(),
        external_id,
        raw,
        error,
    }
}

type Built = (Map<String, Value>, Vec<EdgeRef>, Option<Timestamp>);

fn build(
    entity: &Entity,
    id: &str,
    object: &ObjectAsVec<'_>,
    attributes: Option<&ObjectAsVec<'_>>,
    parent_id: Option<&str>,
) -> Result<Built, String> {
    // An attribute by name, or by a dotted path into nested objects
    // (`organization.id`).
    let attribute = |name: &str| {
        let mut parts = name.split('.');
        let first = parts.next()?;
        let mut current = attributes.and_then(|a| member(a, first))?;
        for part in parts {
            current = step(current, part)?;
        }
        Some(current)
    };

    let mut canonical = Map::new();
    for field in &entity.fields {
        let value = lookup(id, attributes, &field.from);
        canonical.insert(field.name.clone(), coerce(field, value)?);
    }

    let source_updated_at =
        match &entity.updated_at {
            None => None,
            Some(attr) => match attribute(attr) {
                None | Some(Borrowed::Null) => None,
                Some(Borrowed::Str(s)) => Some(parse_instant(s).ok_or_else(|| {
                    format!("`{attr}` is `{s}`, which is not an RFC 3339 timestamp")
                })?),
                // Epoch milliseconds (Clerk's timestamps).
                Some(number @ Borrowed::Number(_)) => {
                    let value = Value::from(number);
                    Some(value.as_i64().and_then(instant_of_millis).ok_or_else(|| {
                        format!("`{attr}` is {value}, not a timestamp in epoch milliseconds")
                    })?)
                }
                Some(other) => {
                    return Err(format!(
                        "`{attr}` is {}, not a timestamp",
                        Value::from(other)
                    ));
                }
            },
        };

    let mut edges = Vec::new();
    for rel in &entity.relationships {
        let hard = rel.kind == tributary_manifest::DependencyKind::Hard;
        let mut push = |target: String| {
            edges.push(EdgeRef {
                rel: rel.name.clone(),
                to_entity: rel.to.clone(),
                to_external_id: target,
                hard,
            })
        };
        match rel.source {
            RelationshipSource::Parent => {
                if let Some(parent) = parent_id {
                    push(parent.to_owned());
                }
            }
            RelationshipSource::Attribute => {
                let attr = rel.attribute.as_deref().unwrap_or(&rel.name);
                match attribute(attr) {
                    None | Some(Borrowed::Null) => {}
                    Some(Borrowed::Str(s)) if !s.is_empty() => push(s.to_string()),
                    Some(Borrowed::Number(n)) => push(number(n).to_string()),
                    Some(other) => {
                        return Err(format!(
                            "relationship `{}`: `{attr}` is {}, not an id",
                            rel.name,
                            Value::from(other)
                        ));
                    }
                }
            }
            RelationshipSource::Relationship => {
                let data = member(object, "relationships")
                    .and_then(|r| get(r, &rel.name))
                    .and_then(|r| get(r, "data"));
                match data {
                    None | Some(Borrowed::Null) => {}
                    Some(Borrowed::Array(items)) => {
                        for item in items {
                            push(identifier(&rel.name, item)?);
                        }
                    }
                    Some(item) => push(identifier(&rel.name, item)?),
                }
            }
        }
    }
    Ok((canonical, edges, source_updated_at))
}

fn identifier(rel: &str, item: &Borrowed<'_>) -> Result<String, String> {
    match get(item, "id") {
        Some(Borrowed::Str(s)) if !s.is_empty() => Ok(s.to_string()),
        Some(Borrowed::Number(n)) => Ok(number(n).to_string()),
        _ => Err(format!(
            "relationship `{rel}` holds {}, not a resource identifier",
            Value::from(item)
        )),
    }
}

/// The value at `path` in the attributes (`$id` is the object's id), copied
/// out of the body.
fn lookup(id: &str, attributes: Option<&ObjectAsVec<'_>>, path: &[String]) -> Option<Value> {
    if path.len() == 1 && path[0] == "$id" {
        return Some(Value::String(id.to_owned()));
    }
    let attributes = attributes?;
    let mut current = member(attributes, &path[0])?;
    for segment in &path[1..] {
        current = match select(segment) {
            // `[id=$primary_email_address_id]`: the array's item whose
            // `id` equals that attribute of the object.
            Some((key, attribute)) => {
                let wanted = Value::from(member(attributes, attribute)?);
                match current {
                    Borrowed::Array(items) => items
                        .iter()
                        .find(|item| get(item, key).map(Value::from).as_ref() == Some(&wanted))?,
                    _ => return None,
                }
            }
            None => step(current, segment)?,
        };
    }
    Some(Value::from(current))
}

/// A path segment `[KEY=$ATTRIBUTE]`: (KEY, ATTRIBUTE).
fn select(segment: &str) -> Option<(&str, &str)> {
    let inner = segment.strip_prefix('[')?.strip_suffix(']')?;
    let (key, attribute) = inner.split_once("=$")?;
    Some((key, attribute))
}

/// One step down a path: an object's member, or an array's item by its
/// index (`email_addresses.0.email_address`).
fn step<'v, 'a>(value: &'v Borrowed<'a>, segment: &str) -> Option<&'v Borrowed<'a>> {
    match value {
        Borrowed::Array(items) => items.get(segment.parse::<usize>().ok()?),
        other => get(other, segment),
    }
}

/// A time given in milliseconds since the Unix epoch.
fn instant_of_millis(ms: i64) -> Option<Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms)
}

fn parse_instant(s: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.to_utc())
}

/// Coerces a source value to the field's type.
pub fn coerce(field: &Field, value: Option<Value>) -> Result<Value, String> {
    // Named in errors only: joined when one is written.
    let source = || field.from.join(".");
    let value = match value {
        None | Some(Value::Null) => {
            return if field.required {
                Err(format!(
                    "field `{}` (from `{}`) is required but missing or null",
                    field.name,
                    source()
                ))
            } else {
                Ok(Value::Null)
            };
        }
        Some(v) => v,
    };
    let fail = |what: &str| {
        Err(format!(
            "field `{}` (from `{}`): expected {what}, got {value}",
            field.name,
            source()
        ))
    };
    match field.ty {
        FieldType::Json => Ok(value),
        FieldType::String => match &value {
            Value::String(_) => Ok(value),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => fail("text"),
        },
        FieldType::Integer => match &value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value),
            Value::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) =>
            {
                Ok(Value::from(n.as_f64().unwrap_or_default() as i64))
            }
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => Ok(Value::from(i)),
                Err(_) => fail("a whole number"),
            },
            _ => fail("a whole number"),
        },
        FieldType::Float => match &value {
            Value::Number(_) => Ok(value),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::from(f)),
                _ => fail("a decimal number"),
            },
            _ => fail("a decimal number"),
        },
        FieldType::Boolean => match &value {
            Value::Bool(_) => Ok(value),
            Value::String(s) if s == "true" => Ok(Value::Bool(true)),
            Value::String(s) if s == "false" => Ok(Value::Bool(false)),
            _ => fail("true or false"),
        },
        FieldType::Date => match &value {
            Value::String(s) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
                Ok(value)
            }
            _ => fail("a date YYYY-MM-DD"),
        },
        FieldType::Datetime => match &value {
            Value::String(s) => match parse_instant(s) {
                Some(t) => Ok(Value::String(
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )),
                None => fail("an RFC 3339 timestamp"),
            },
            // Epoch milliseconds (Clerk's timestamps), written as RFC 3339.
            Value::Number(n) => match n.as_i64().and_then(instant_of_millis) {
                Some(t) => Ok(Value::String(
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )),
                None => fail("an RFC 3339 timestamp or epoch milliseconds"),
            },
            _ => fail("an RFC 3339 timestamp or epoch milliseconds"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Transforms an owned value, as a body holding it would be.
    fn transform_json(
        entity: &Entity,
        object: Value,
        parent_id: Option<&str>,
    ) -> Result<SourceRecord, QuarantinedRecord> {
        transform(entity, &Borrowed::from(&object), parent_id)
    }

    fn manifest() -> tributary_manifest::Manifest {
        tributary_manifest::builtin("pco").unwrap().unwrap()
    }

    fn person(attributes: Value) -> Value {
        json!({
            "type": "Person",
            "id": "42",
            "attributes": attributes,
            "relationships": {"primary_campus": {"data": {"type": "Campus", "id": "7"}}},
            "links": {"self": "http://127.0.0.1:9/people/v2/people/42"}
        })
    }

    #[test]
    fn person_maps_to_canonical_with_edges() {
        let m = manifest();
        let record = transform_json(
            m.entity("Person").unwrap(),
            person(json!({
                "first_name": "Ann", "last_name": "Lee", "name": "Ann Lee", "child": false,
                "birthdate": "1990-02-03", "grade": null, "updated_at": "2024-05-06T07:08:09-05:00",
                "created_at": "2020-01-01T00:00:00Z", "site_administrator": "true", "unknown_new_field": 1
            })),
            None,
        )
        .unwrap();
        assert_eq!(record.external_id, "42");
        assert!(
            record.raw.to_value().get("links").is_none(),
            "volatile links are dropped"
        );
        assert_eq!(
            record.raw.to_value()["attributes"]["unknown_new_field"],
            1,
            "unknown fields stay in raw"
        );
        assert_eq!(
            record.source_updated_at.unwrap().to_rfc3339(),
            "2024-05-06T12:08:09+00:00"
        );
        assert_eq!(record.edges.len(), 1);
        assert_eq!(record.edges[0].to_entity, "Campus");
        assert!(!record.edges[0].hard);
        insta::assert_json_snapshot!(record.canonical);
    }

    #[test]
    fn bad_values_quarantine_with_a_clear_error() {
        let m = manifest();
        let entity = m.entity("Person").unwrap();
        let cases = [
            (
                json!({"birthdate": "not-a-date"}),
                "field `birthdate` (from `birthdate`): expected a date YYYY-MM-DD, got \"not-a-date\"",
            ),
            (
                json!({"grade": "seventh"}),
                "field `grade` (from `grade`): expected a whole number, got \"seventh\"",
            ),
            (
                json!({"child": "yes"}),
                "field `child` (from `child`): expected true or false, got \"yes\"",
            ),
            (
                json!({"updated_at": "yesterday"}),
                "field `updated_at` (from `updated_at`): expected an RFC 3339 timestamp, got \"yesterday\"",
            ),
            (
                json!({"first_name": ["a"]}),
                "field `first_name` (from `first_name`): expected text, got [\"a\"]",
            ),
        ];
        for (attributes, expected) in cases {
            let bad = transform_json(entity, person(attributes), None).unwrap_err();
            assert_eq!(bad.error, expected);
            assert_eq!(bad.external_id.as_deref(), Some("42"));
            assert_eq!(bad.entity, "Person");
        }
    }

    #[test]
    fn missing_id_and_wrong_type_are_quarantined() {
        let m = manifest();
        let entity = m.entity("Email").unwrap();
        let bad =
            transform_json(entity, json!({"type": "Email", "attributes": {}}), None).unwrap_err();
        assert_eq!(bad.external_id, None);
        assert!(bad.error.contains("no `id`"));
        let bad = transform_json(entity, json!({"type": "Person", "id": "1"}), None).unwrap_err();
        assert_eq!(bad.error, "the object's type is `Person`, expected `Email`");
        let bad = transform_json(
            entity,
            json!({"type": "Email", "id": "1", "attributes": {}}),
            None,
        )
        .unwrap_err();
        assert_eq!(
            bad.error,
            "field `address` (from `address`) is required but missing or null"
        );
    }

    #[test]
    fn epoch_milliseconds_are_timestamps_too() {
        let m = manifest();
        let entity = m.entity("Person").unwrap();
        // Clerk writes times as milliseconds since the epoch.
        let record = transform_json(
            entity,
            person(
                json!({"first_name": "Zoë", "last_name": "Ŝ", "created_at": 1_700_000_000_123i64,
                "updated_at": 1_700_000_100_000i64}),
            ),
            None,
        )
        .unwrap();
        assert_eq!(record.canonical["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(
            record.source_updated_at.unwrap().timestamp_millis(),
            1_700_000_100_000
        );
        let bad = transform_json(entity, person(json!({"updated_at": 1.5})), None).unwrap_err();
        assert!(bad.error.contains("epoch milliseconds"), "{}", bad.error);
    }

    #[test]
    fn parent_relationship_comes_from_the_listing() {
        let m = manifest();
        let entity = m.entity("HouseholdMembership").unwrap();
        let record = transform_json(
            entity,
            json!({"type": "HouseholdMembership", "id": "5", "attributes": {"household_role": "adult", "pending": false},
                   "relationships": {"person": {"data": {"type": "Person", "id": "9"}}}}),
            Some("77"),
        )
        .unwrap();
        let edges: Vec<(&str, &str, bool)> = record
            .edges
            .iter()
            .map(|e| (e.rel.as_str(), e.to_external_id.as_str(), e.hard))
            .collect();
        assert_eq!(edges, [("household", "77", true), ("person", "9", true)]);
        assert_eq!(record.canonical["role"], "adult");
    }
}
