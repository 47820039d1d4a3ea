//! Query-string parsing and validation: paging, `order`, `where[...]` and `include`, with the
//! error answers PCO gives for parameters a resource does not allow.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::SimError;
use crate::schema::{AttrType, ResourceKind, attr_type};
use crate::time::{parse_date, parse_instant};

pub(crate) const DEFAULT_PER_PAGE: usize = 25;
pub(crate) const MAX_PER_PAGE: usize = 100;

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `(key, value)` pairs of a raw query string, in order.
pub(crate) fn parse_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The raw query string with `offset` replaced (other parameters kept byte for byte).
pub(crate) fn with_offset(raw: Option<&str>, offset: usize) -> String {
    let mut parts: Vec<String> = raw
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| percent_decode(p.split_once('=').map_or(*p, |(k, _)| k)) != "offset")
        .map(str::to_owned)
        .collect();
    parts.push(format!("offset={offset}"));
    parts.join("&")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    fn accepts(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Gt => ord == Ordering::Greater,
            Op::Gte => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Lte => ord != Ordering::Greater,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Search {
    Name,
    NameOrEmail,
    NameOrEmailOrPhone,
    Phone,
    PhoneE164,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Attr(&'static str),
    Id,
    PrimaryCampusId,
    Search(Search),
    /// Group's `where[archive_status]`: `only`, `not_archived` or `include`.
    ArchiveStatus,
}

/// One `where[...]` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) target: Target,
    pub(crate) op: Op,
    pub(crate) value: String,
    /// The value as an instant (Time attributes) or integer (Int attributes, ids).
    pub(crate) number: Option<i64>,
}

impl Filter {
    /// Compares a value of the filtered attribute (or `None` when it has none or it does not
    /// parse) against the filter.
    pub(crate) fn accepts_number(&self, v: Option<i64>) -> bool {
        match (v, self.number) {
            (Some(v), Some(n)) => self.op.accepts(v.cmp(&n)),
            _ => false,
        }
    }

    /// Evaluates the filter on a raw attribute value (non-Time attributes).
    pub(crate) fn accepts_value(&self, attr: &str, v: Option<&Value>) -> bool {
        match attr_type(attr) {
            AttrType::Int => self.accepts_number(v.and_then(value_as_i64)),
            AttrType::Date if self.op != Op::Eq => match v.and_then(Value::as_str) {
                Some(s) => self.op.accepts(s.cmp(self.value.as_str())),
                None => false,
            },
            AttrType::Time => {
                self.accepts_number(v.and_then(Value::as_str).and_then(parse_instant))
            }
            _ => text_eq(v, &self.value),
        }
    }
}

fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Equality of a JSON value with a query-string value.
pub(crate) fn text_eq(v: Option<&Value>, want: &str) -> bool {
    match v {
        None | Some(Value::Null) => want.is_empty() || want == "null",
        Some(Value::String(s)) => s == want,
        Some(Value::Bool(b)) => want == if *b { "true" } else { "false" },
        Some(Value::Number(n)) => {
            n.to_string() == want
                || want
                    .parse::<f64>()
                    .is_ok_and(|w| n.as_f64().is_some_and(|f| f == w))
        }
        Some(other) => serde_json::to_string(other).is_ok_and(|s| s == want),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderKey {
    pub(crate) attr: &'static str,
    pub(crate) desc: bool,
}

/// Validated list parameters.
#[derive(Debug, Clone)]
pub(crate) struct ListParams {
    pub(crate) per_page: usize,
    pub(crate) offset: usize,
    pub(crate) filters: Vec<Filter>,
    pub(crate) order: Vec<OrderKey>,
    pub(crate) include: Vec<&'static str>,
}

fn find_static(list: &'static [&'static str], s: &str) -> Option<&'static str> {
    list.iter().copied().find(|x| *x == s)
}

fn parse_count(param: &str, v: &str) -> Result<usize, SimError> {
    v.trim().parse::<usize>().map_err(|_| {
        SimError::bad_parameter(
            param,
            format!("{param} must be a non-negative integer, got {v:?}"),
        )
    })
}

pub(crate) fn parse_include(
    kind: ResourceKind,
    value: &str,
) -> Result<Vec<&'static str>, SimError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(inc) = find_static(kind.can_include(), item) {
            if !out.contains(&inc) {
                out.push(inc);
            }
        } else if kind.unimplemented_includes().contains(&item) {
            return Err(SimError::bad_parameter(
                "include",
                format!("include={item} is not implemented by the simulator"),
            ));
        } else {
            return Err(SimError::bad_parameter(
                "include",
                format!(
                    "{item:?} is not a valid include for {kind}; valid includes: [{}]",
                    kind.can_include().join(", ")
                ),
            ));
        }
    }
    Ok(out)
}

fn parse_order(kind: ResourceKind, value: &str) -> Result<Vec<OrderKey>, SimError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (desc, name) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let attr = find_static(kind.can_order_by(), name).ok_or_else(|| {
            SimError::bad_parameter(
                "order",
                format!(
                    "{name:?} is not a valid order for {kind}; valid orders: [{}]",
                    kind.can_order_by().join(", ")
                ),
            )
        })?;
        out.push(OrderKey { attr, desc });
    }
    Ok(out)
}

fn parse_where(kind: ResourceKind, key: &str, value: &str) -> Result<Filter, SimError> {
    let malformed = || SimError::bad_parameter(key, format!("malformed filter parameter {key:?}"));
    let rest = key.strip_prefix("where[").ok_or_else(malformed)?;
    let (name, tail) = rest.split_once(']').ok_or_else(malformed)?;
    let op = match tail {
        "" => Op::Eq,
        "[gt]" => Op::Gt,
        "[gte]" => Op::Gte,
        "[lt]" => Op::Lt,
        "[lte]" => Op::Lte,
        _ => {
            return Err(SimError::bad_parameter(
                key,
                format!("unsupported filter operator in {key:?} (use gt, gte, lt or lte)"),
            ));
        }
    };
    let attr = find_static(kind.can_query_by(), name).ok_or_else(|| {
        SimError::bad_parameter(
            key,
            format!(
                "{key} is not a valid filter: {kind} can be queried by [{}]",
                kind.can_query_by().join(", ")
            ),
        )
    })?;
    let target = match attr {
        "id" => Target::Id,
        "primary_campus_id" => Target::PrimaryCampusId,
        "archive_status" => {
            if !matches!(value, "only" | "not_archived" | "include") {
                return Err(SimError::bad_parameter(
                    key,
                    format!("{key}: {value:?} is not one of only, not_archived, include"),
                ));
            }
            Target::ArchiveStatus
        }
        "search_name" => Target::Search(Search::Name),
        "search_name_or_email" => Target::Search(Search::NameOrEmail),
        "search_name_or_email_or_phone_number" => Target::Search(Search::NameOrEmailOrPhone),
        "search_phone_number" => Target::Search(Search::Phone),
        "search_phone_number_e164" => Target::Search(Search::PhoneE164),
        other => Target::Attr(other),
    };
    let ty = match &target {
        Target::Attr(a) => attr_type(a),
        Target::Id => AttrType::Int,
        _ => AttrType::Other,
    };
    if op != Op::Eq && ty == AttrType::Other {
        return Err(SimError::bad_parameter(
            key,
            format!("{key}: range operators apply only to timestamps, dates and numbers"),
        ));
    }
    let mut filter = Filter {
        target,
        op,
        value: value.to_owned(),
        number: None,
    };
    match ty {
        AttrType::Time => {
            filter.number = Some(parse_instant(value).ok_or_else(|| {
                SimError::bad_parameter(
                    key,
                    format!("{key}: {value:?} is not an ISO 8601 timestamp"),
                )
            })?);
        }
        AttrType::Int => {
            filter.number = Some(value.trim().parse().map_err(|_| {
                SimError::bad_parameter(key, format!("{key}: {value:?} is not an integer"))
            })?);
        }
        AttrType::Date if op != Op::Eq => {
            let d = parse_date(value).ok_or_else(|| {
                SimError::bad_parameter(key, format!("{key}: {value:?} is not a YYYY-MM-DD date"))
            })?;
            filter.value = d.format("%Y-%m-%d").to_string();
        }
        _ => {}
    }
    Ok(filter)
}

/// Parses and validates the query string of a collection request.
pub(crate) fn parse_list_params(
    kind: ResourceKind,
    pairs: &[(String, String)],
) -> Result<ListParams, SimError> {
    let mut params = ListParams {
        per_page: DEFAULT_PER_PAGE,
        offset: 0,
        filters: Vec::new(),
        order: Vec::new(),
        include: Vec::new(),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "per_page" => params.per_page = parse_count(k, v)?.clamp(1, MAX_PER_PAGE),
            "offset" => params.offset = parse_count(k, v)?,
            "order" => params.order = parse_order(kind, v)?,
            "include" => params.include = parse_include(kind, v)?,
            "filter" => {
                return Err(SimError::bad_parameter(
                    "filter",
                    "named filters (filter=...) are not implemented by the simulator",
                ));
            }
            key if key.starts_with("where") => params.filters.push(parse_where(kind, key, v)?),
            // PCO ignores parameters it does not know; so does the simulator.
            _ => {}
        }
    }
    Ok(params)
}

/// Parses the query string of a single-resource request (only `include` matters).
pub(crate) fn parse_single_params(
    kind: ResourceKind,
    pairs: &[(String, String)],
) -> Result<Vec<&'static str>, SimError> {
    let mut include = Vec::new();
    for (k, v) in pairs {
        if k == "include" {
            include = parse_include(kind, v)?;
        }
    }
    Ok(include)
}

/// A total order over attribute values for `order=`: booleans, numbers, instants, strings,
/// other JSON, then nulls (ascending puts nulls last, like PostgreSQL).
#[derive(Debug, Clone)]
pub(crate) enum SortKey {
    Bool(bool),
    Num(f64),
    Time(i64),
    Str(String),
    Other(String),
    Null,
}

impl SortKey {
    fn rank(&self) -> u8 {
        match self {
            SortKey::Bool(_) => 0,
            SortKey::Num(_) => 1,
            SortKey::Time(_) => 2,
            SortKey::Str(_) => 3,
            SortKey::Other(_) => 4,
            SortKey::Null => 5,
        }
    }

    pub(crate) fn from_value(attr: &str, v: Option<&Value>) -> SortKey {
        match v {
            None | Some(Value::Null) => SortKey::Null,
            Some(Value::Bool(b)) => SortKey::Bool(*b),
            Some(Value::Number(n)) => SortKey::Num(n.as_f64().unwrap_or(0.0)),
            Some(Value::String(s)) => {
                if attr_type(attr) == AttrType::Time
                    && let Some(ms) = parse_instant(s)
                {
                    return SortKey::Time(ms);
                }
                SortKey::Str(s.clone())
            }
            Some(other) => SortKey::Other(other.to_string()),
        }
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (SortKey::Bool(a), SortKey::Bool(b)) => a.cmp(b),
            (SortKey::Num(a), SortKey::Num(b)) => a.total_cmp(b),
            (SortKey::Time(a), SortKey::Time(b)) => a.cmp(b),
            (SortKey::Str(a), SortKey::Str(b)) | (SortKey::Other(a), SortKey::Other(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_rebuilds_queries() {
        assert_eq!(
            percent_decode("where%5Bupdated_at%5D%5Bgte%5D"),
            "where[updated_at][gte]"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%"), "%");
        let pairs = parse_pairs(Some("per_page=10&where%5Bname%5D=A%20B&offset=5&flag"));
        assert_eq!(
            pairs,
            vec![
                ("per_page".into(), "10".into()),
                ("where[name]".into(), "A B".into()),
                ("offset".into(), "5".into()),
                ("flag".into(), "".into()),
            ]
        );
        assert_eq!(
            with_offset(Some("per_page=10&offset=5&order=-updated_at"), 15),
            "per_page=10&order=-updated_at&offset=15"
        );
        assert_eq!(with_offset(None, 25), "offset=25");
    }

    #[test]
    fn validates_parameters() {
        let p = |q: &str| parse_list_params(ResourceKind::Person, &parse_pairs(Some(q)));
        assert_eq!(p("per_page=1000").unwrap().per_page, 100);
        assert_eq!(p("per_page=0").unwrap().per_page, 1);
        assert!(p("per_page=ten").is_err());
        assert!(p("offset=-1").is_err());
        assert!(p("order=shoe_size").is_err());
        assert_eq!(
            p("order=-updated_at").unwrap().order,
            vec![OrderKey {
                attr: "updated_at",
                desc: true
            }]
        );
        assert!(p("include=emails,nope").is_err());
        assert!(p("where[shoe_size]=9").is_err());
        assert!(p("where[updated_at][gte]=not-a-date").is_err());
        assert!(p("where[first_name][gt]=A").is_err());
        assert!(p("where[updated_at][between]=2020-01-01").is_err());
        let addr = parse_list_params(
            ResourceKind::Address,
            &parse_pairs(Some("where[updated_at][gte]=2020-01-01T00:00:00Z")),
        )
        .unwrap_err();
        assert_eq!(addr.status, 400);
        assert_eq!(addr.parameter.as_deref(), Some("where[updated_at][gte]"));
    }

    #[test]
    fn sort_keys_order_nulls_last() {
        let mut keys = vec![
            SortKey::Null,
            SortKey::Str("b".into()),
            SortKey::Num(2.0),
            SortKey::Str("a".into()),
            SortKey::Bool(true),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                SortKey::Bool(true),
                SortKey::Num(2.0),
                SortKey::Str("a".into()),
                SortKey::Str("b".into()),
                SortKey::Null
            ]
        );
    }
}
