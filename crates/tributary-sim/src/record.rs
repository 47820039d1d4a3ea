//! The in-memory shape of one resource and its JSON:API serialisation.

use std::borrow::Cow;

use serde_json::Value;

use crate::schema::ResourceKind;

/// Attributes in key order. Generated records borrow their keys; attributes added by a mutation
/// own theirs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Attrs(Vec<(Cow<'static, str>, Value)>);

impl Attrs {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Attrs(Vec::with_capacity(n))
    }

    /// Appends a generated attribute; generators add them in key order.
    pub(crate) fn push(&mut self, key: &'static str, value: Value) {
        debug_assert!(
            self.0.last().is_none_or(|(k, _)| k.as_ref() < key),
            "attribute {key} out of order"
        );
        self.0.push((Cow::Borrowed(key), value));
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub(crate) fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Sets (or adds) an attribute, keeping key order.
    pub(crate) fn set(&mut self, key: &str, value: Value) {
        match self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (Cow::Owned(key.to_owned()), value)),
        }
    }
}

/// Single-valued relationships. Which fields are meaningful depends on the kind:
/// Person: `campus` (primary_campus); Household: `person` (primary_contact);
/// Email/PhoneNumber/Address: `person`; HouseholdMembership: `person` and `household`;
/// Group: `group_type`; Membership: `group` and `person`; Event: `group`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Links {
    pub(crate) person: Option<u64>,
    pub(crate) household: Option<u64>,
    pub(crate) campus: Option<u64>,
    pub(crate) group: Option<u64>,
    pub(crate) group_type: Option<u64>,
}

/// One resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) kind: ResourceKind,
    pub(crate) id: u64,
    pub(crate) attrs: Attrs,
    pub(crate) links: Links,
}

/// The target of a relationship.
#[derive(Debug, Clone)]
pub(crate) enum RelData {
    One(Option<(ResourceKind, u64)>),
    Many(ResourceKind, Vec<u64>),
    /// The organization (its id is the configured org id).
    Organization,
}

#[derive(Debug, Clone)]
pub(crate) struct Rel {
    pub(crate) name: &'static str,
    pub(crate) data: RelData,
}

/// Appends `value` as JSON. Writing to a `Vec` cannot fail and `Value`/`str` always serialise.
pub(crate) fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        tracing::error!("serialising JSON into memory failed: {e}");
    }
}

/// Appends a JSON string; strings that need no escaping (almost all) are copied directly.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // A branch-free scan (vectorises) instead of a short-circuiting one.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        push_json(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Appends a JSON value, with fast paths for the common scalar cases.
pub(crate) fn push_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::String(s) => push_str(out, s),
        other => push_json(out, other),
    }
}

fn push_ident(out: &mut Vec<u8>, kind_name: &str, id: &str) {
    out.extend_from_slice(b"{\"type\":");
    push_str(out, kind_name);
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// Writes `{"type","id","attributes","relationships"[,"links":{"self"}]}`.
pub(crate) fn write_resource(
    out: &mut Vec<u8>,
    rec: &Record,
    rels: &[Rel],
    org_id: &str,
    self_link: Option<&str>,
) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(rec.kind.type_name().as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(rec.id.to_string().as_bytes());
    out.extend_from_slice(b"\",\"attributes\":{");
    for (i, (k, v)) in rec.attrs.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match k {
            // Generated keys are plain identifiers: no escaping needed.
            Cow::Borrowed(k) => {
                out.push(b'"');
                out.extend_from_slice(k.as_bytes());
                out.push(b'"');
            }
            Cow::Owned(k) => push_str(out, k),
        }
        out.push(b':');
        push_value(out, v);
    }
    out.extend_from_slice(b"},\"relationships\":{");
    for (i, rel) in rels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, rel.name);
        out.extend_from_slice(b":{\"data\":");
        match &rel.data {
            RelData::One(None) => out.extend_from_slice(b"null"),
            RelData::One(Some((kind, id))) => push_ident(out, kind.type_name(), &id.to_string()),
            RelData::Many(kind, ids) => {
                out.push(b'[');
                for (j, id) in ids.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    push_ident(out, kind.type_name(), &id.to_string());
                }
                out.push(b']');
            }
            RelData::Organization => {
                out.extend_from_slice(b"{\"type\":\"Organization\",\"id\":");
                push_json(out, org_id);
                out.push(b'}');
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
    if let Some(link) = self_link {
        out.extend_from_slice(b",\"links\":{\"self\":");
        push_str(out, link);
        out.push(b'}');
    }
    out.push(b'}');
}
