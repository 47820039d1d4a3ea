//! Canonical JSON text: compact, object keys sorted, one text per value.
//!
//! The same value always gives the same text whatever the key order (or
//! duplicate keys) the source used, so the content hash of an unchanged
//! record never moves. Two writers produce it:
//!
//! - [`canonical_json`] from an owned [`serde_json::Value`];
//! - [`CanonicalJson::from_borrowed`] and [`CanonicalJson::from_entries`]
//!   from a [`Borrowed`] value that points into a response body. This is the
//!   hot path of a sync: a page is parsed once, without allocating its
//!   strings or building sorted maps, and each record's text is written
//!   straight from the body.
//!
//! Both give byte-identical text for the same JSON (a property test holds
//! them to it): numbers as serde_json prints them, strings as serde_json
//! escapes them, and for a key given twice the last value, as serde_json's
//! own parser keeps it.

use std::sync::Arc;

use serde_json::Value;

/// A JSON value parsed without copying its strings: it borrows from the
/// text it was parsed from.
pub type Borrowed<'a> = serde_json_borrow::Value<'a>;

/// JSON text in canonical form. Cheap to clone: the text is shared, and a
/// store can hand it to its driver as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalJson(Arc<str>);

impl CanonicalJson {
    /// The canonical text of `value`.
    pub fn from_value(value: &Value) -> Self {
        Self(canonical_json(value).into())
    }

    /// The canonical text of a borrowed value.
    pub fn from_borrowed(value: &Borrowed<'_>) -> Self {
        let mut out = Vec::with_capacity(256);
        write_borrowed(value, &mut out);
        Self::from_utf8(out)
    }

    /// The canonical text of the object with these members, in any order
    /// (for a key given twice, the later one counts).
    pub fn from_entries<'v, 'a: 'v>(
        entries: impl IntoIterator<Item = (&'v str, &'v Borrowed<'a>)>,
    ) -> Self {
        let mut out = Vec::with_capacity(1024);
        write_object(entries.into_iter().collect(), &mut out);
        Self::from_utf8(out)
    }

    fn from_utf8(out: Vec<u8>) -> Self {
        // Every piece written is UTF-8: copied keys and serde_json's output.
        Self(
            String::from_utf8(out)
                .expect("canonical JSON is written as UTF-8")
                .into(),
        )
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, shared.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The value the text holds.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).expect("canonical JSON text parses")
    }
}

impl From<Value> for CanonicalJson {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

/// Compact JSON text with object keys sorted: the same value always gives
/// the same text, whatever the key order the source used.
pub fn canonical_json(value: &Value) -> String {
    if maps_iterate_sorted() {
        // serde_json's map is a BTreeMap: its own compact output is already
        // canonical, and much faster than sorting keys ourselves.
        return serde_json::to_string(value).expect("JSON values serialise");
    }
    let mut out = Vec::with_capacity(512);
    write_canonical(value, &mut out);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Whether `serde_json::Map` iterates in key order — true unless some crate
/// in the build enables serde_json's `preserve_order` feature.
fn maps_iterate_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut map = serde_json::Map::new();
        map.insert("b".into(), Value::Null);
        map.insert("a".into(), Value::Null);
        map.keys().next().map(String::as_str) == Some("a")
    })
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&str, &Value)> =
                map.iter().map(|(k, v)| (k.as_str(), v)).collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            write_members(members.into_iter(), out, write_canonical);
        }
        Value::Array(items) => write_array(items, out, write_canonical),
        Value::String(s) => write_string(s, out),
        other => serde_json::to_writer(&mut *out, other).expect("writing to a Vec cannot fail"),
    }
}

fn write_borrowed(value: &Borrowed<'_>, out: &mut Vec<u8>) {
    match value {
        Borrowed::Null => out.extend_from_slice(b"null"),
        Borrowed::Bool(true) => out.extend_from_slice(b"true"),
        Borrowed::Bool(false) => out.extend_from_slice(b"false"),
        Borrowed::Number(n) => {
            // serde_json's own number printing (itoa, ryu): the same text as
            // the owned writer.
            let n: serde_json::Number = (*n).into();
            serde_json::to_writer(&mut *out, &n).expect("writing to a Vec cannot fail");
        }
        Borrowed::Str(s) => write_string(s, out),
        Borrowed::Array(items) => write_array(items, out, write_borrowed),
        Borrowed::Object(object) => write_object(object.iter().collect(), out),
    }
}

fn write_array<T>(items: &[T], out: &mut Vec<u8>, write: impl Fn(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

fn write_object(mut entries: Vec<(&str, &Borrowed<'_>)>, out: &mut Vec<u8>) {
    // Stable: of equal keys, the one given last stays last, and wins.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let last_of_each_key = entries
        .iter()
        .enumerate()
        .filter(|(i, (key, _))| entries.get(i + 1).is_none_or(|next| next.0 != *key))
        .map(|(_, member)| *member);
    write_members(last_of_each_key, out, write_borrowed);
}

/// `{"key":value,…}` of members already in key order.
fn write_members<'m, T: 'm>(
    members: impl Iterator<Item = (&'m str, &'m T)>,
    out: &mut Vec<u8>,
    write: impl Fn(&T, &mut Vec<u8>),
) {
    out.push(b'{');
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write(value, out);
    }
    out.push(b'}');
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is canonical for a given string.
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn borrowed_text(text: &str) -> String {
        let value: Borrowed<'_> = serde_json::from_str(text).unwrap();
        CanonicalJson::from_borrowed(&value).as_str().to_owned()
    }

    #[test]
    fn slow_and_fast_owned_paths_agree() {
        let v = json!({"z": [1, {"b": "x\u{1}", "a": null}], "a": {"y": 1.5, "x": true}, "é": "ü"});
        let mut slow = Vec::new();
        write_canonical(&v, &mut slow);
        assert_eq!(canonical_json(&v), String::from_utf8(slow).unwrap());
    }

    #[test]
    fn borrowed_text_is_canonical() {
        assert_eq!(
            borrowed_text(
                r#" { "b" : [1, 2.50, -3, 1e2, true, null], "a\u0041": "x\"\u00e9\n", "a": {} } "#
            ),
            r#"{"a":{},"aA":"x\"é\n","b":[1,2.5,-3,100.0,true,null]}"#
        );
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value_as_serde_json_does() {
        let text = r#"{"k": 1, "j": 0, "k": 2, "k": {"x": 1, "x": 3}}"#;
        let owned: Value = serde_json::from_str(text).unwrap();
        assert_eq!(borrowed_text(text), canonical_json(&owned));
        assert_eq!(borrowed_text(text), r#"{"j":0,"k":{"x":3}}"#);
    }

    #[test]
    fn entries_make_an_object() {
        let attributes: Borrowed<'_> = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
        let id = Borrowed::Str("7".into());
        let ty = Borrowed::Str("User".into());
        let text =
            CanonicalJson::from_entries([("type", &ty), ("id", &id), ("attributes", &attributes)]);
        assert_eq!(
            text.as_str(),
            r#"{"attributes":{"a":2,"b":1},"id":"7","type":"User"}"#
        );
        assert_eq!(text.to_value()["attributes"]["a"], 2);
    }

    /// JSON text as a source might send it: any key order, keys given
    /// twice, escapes, number spellings, whitespace.
    fn json_text() -> impl Strategy<Value = String> {
        let quoted = |s: String| serde_json::to_string(&s).unwrap();
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|i| i.to_string()),
            "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,2})?",
            ".{0,12}".prop_map(quoted),
            "\"(\\\\u00[0-7][0-9a-f]|\\\\[nt/\\\\\"]|[a-z]){0,4}\"",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|items| format!("[{}]", items.join(" , "))),
                prop::collection::vec((prop_oneof!["[a-c]{0,2}", ".{0,4}"], inner), 0..6).prop_map(
                    move |members| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(k, v)| format!("{}: {v}", quoted(k)))
                            .collect();
                        format!("{{ {} }}", members.join(","))
                    }
                ),
            ]
        })
    }

    proptest! {
        /// Whatever the JSON, the borrowed writer gives the owned writer's
        /// text: hashes do not depend on which path a record took.
        #[test]
        fn borrowed_and_owned_writers_agree(text in json_text()) {
            let owned: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(borrowed_text(&text), canonical_json(&owned));
        }
    }
}
