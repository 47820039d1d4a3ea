//! Query parameters of the Backend API: paging, `order_by`, flags, `+`/`-` filters, with
//! Clerk's 422 answers, and the sort keys with their null and tie-breaking rules (see `api`).

use std::cmp::Ordering;
use std::collections::HashSet;

use super::error::ClerkError;
use crate::query::parse_pairs;

/// The largest `limit`.
pub(crate) const MAX_LIMIT: usize = 500;
/// `limit` when absent.
pub(crate) const DEFAULT_LIMIT: usize = 10;

/// A query string's parameters.
pub(crate) struct Params(Vec<(String, String)>);

/// A sort field and direction.
pub(crate) struct Order {
    pub(crate) field: String,
    pub(crate) desc: bool,
}

impl Params {
    pub(crate) fn new(raw: Option<String>) -> Self {
        Params(parse_pairs(raw.as_deref()))
    }

    pub(crate) fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter (also `key[]`).
    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        let bracketed = format!("{key}[]");
        self.0
            .iter()
            .filter(|(k, _)| *k == key || *k == bracketed)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn integer(&self, key: &str) -> Result<Option<i64>, ClerkError> {
        self.first(key)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ClerkError::invalid_param(key, format!("{key} must be an integer, got {v:?}"))
                })
            })
            .transpose()
    }

    pub(crate) fn flag(&self, key: &str) -> Result<Option<bool>, ClerkError> {
        match self.first(key).map(str::trim) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ClerkError::invalid_param(
                key,
                format!("{key} must be true or false, got {v:?}"),
            )),
        }
    }

    /// `(limit, offset)`.
    pub(crate) fn page(&self) -> Result<(usize, usize), ClerkError> {
        let limit = self.integer("limit")?.unwrap_or(DEFAULT_LIMIT as i64);
        if !(1..=MAX_LIMIT as i64).contains(&limit) {
            return Err(ClerkError::invalid_param(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
            ));
        }
        let offset = self.integer("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(ClerkError::invalid_param(
                "offset",
                format!("offset must be greater than or equal to 0, got {offset}"),
            ));
        }
        Ok((limit as usize, offset as usize))
    }

    pub(crate) fn order(&self, allowed: &[&str], default: &str) -> Result<Order, ClerkError> {
        let raw = self.first("order_by").unwrap_or(default);
        let trimmed = raw.trim_start_matches(' ');
        let (desc, field) = match trimmed.strip_prefix('-') {
            Some(field) => (true, field),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let field = field.trim();
        if !allowed.contains(&field) {
            return Err(ClerkError::invalid_param(
                "order_by",
                format!(
                    "order_by {raw:?} is invalid: use one of {} with an optional + or - prefix",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Order {
            field: field.to_owned(),
            desc,
        })
    }

    /// `(included, excluded)` values of a `+`/`-` filter such as `user_id`.
    pub(crate) fn signed(&self, key: &str) -> (HashSet<String>, HashSet<String>) {
        let (mut plus, mut minus) = (HashSet::new(), HashSet::new());
        for v in self.all(key) {
            let v = v.trim_start_matches(' ');
            match v.strip_prefix('-') {
                Some(id) => minus.insert(id.to_owned()),
                None => plus.insert(v.strip_prefix('+').unwrap_or(v).to_owned()),
            };
        }
        (plus, minus)
    }
}

/// A sort key: nulls sort after every value.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

fn nulls_last<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

pub(crate) fn compare(a: Key<'_>, b: Key<'_>, a_id: &str, b_id: &str, desc: bool) -> Ordering {
    let by_key = match (a, b) {
        (Key::Int(a), Key::Int(b)) => nulls_last(a, b),
        (Key::Text(a), Key::Text(b)) => nulls_last(a, b),
        (a, b) => a.cmp(&b),
    };
    let ord = by_key.then_with(|| a_id.cmp(b_id));
    if desc { ord.reverse() } else { ord }
}
