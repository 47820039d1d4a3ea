//! The live data: the generated [`Dataset`] plus an overlay of mutations.
//!
//! * A mutated generated resource is copied into the overlay (keeping its id).
//! * A created resource lives only in the overlay, with an id above the generated range.
//! * A deleted generated resource is remembered in a per-kind deleted set; a deleted overlay
//!   resource is simply dropped.
//!
//! Reads go through [`Snap`], a consistent view under the read lock. Listing in the default
//! order (id ascending) without filters costs O(page + deletions); any other order or filter
//! scans the scope once and caches the sorted ids until the next mutation.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::error::SimError;
use crate::generate::Dataset;
use crate::query::{Filter, OrderKey, Search, SortKey, Target, text_eq};
use crate::record::{Attrs, Links, Record};
use crate::schema::{App, AttrType, ResourceKind, attr_type};
use crate::time::{GEN_END_S, format_ms, parse_instant};

/// Mutable per-kind state.
#[derive(Debug, Default)]
pub(crate) struct KindState {
    /// Live resources that differ from (or are absent from) the generated data.
    overlay: HashMap<u64, Record>,
    /// Deleted generated ids.
    deleted: BTreeSet<u64>,
    /// Live created ids (all of them are in `overlay`).
    created: BTreeSet<u64>,
    /// How many resources of this kind were created so far.
    created_total: u64,
}

#[derive(Debug)]
pub(crate) struct State {
    kinds: [KindState; 11],
    /// Overlay Email/PhoneNumber/Address/HouseholdMembership/Membership ids by (kind, person
    /// id).
    pub(crate) by_person: HashMap<(ResourceKind, u64), BTreeSet<u64>>,
    /// Overlay HouseholdMembership ids by household id.
    by_household: HashMap<u64, BTreeSet<u64>>,
    /// Overlay Membership and Event ids by (kind, group id).
    pub(crate) by_group: HashMap<(ResourceKind, u64), BTreeSet<u64>>,
    /// Bumped by every mutation (invalidates cached query results).
    version: u64,
    /// The timestamp of the last mutation, in ms.
    last_ms: i64,
    mutations: u64,
    /// What the mutation under way wrote and removed, in order (what its
    /// webhooks announce).
    touched: Vec<(ResourceKind, u64, Action)>,
}

impl State {
    fn new() -> Self {
        State {
            touched: Vec::new(),
            kinds: Default::default(),
            by_person: HashMap::new(),
            by_household: HashMap::new(),
            by_group: HashMap::new(),
            version: 0,
            last_ms: GEN_END_S * 1000,
            mutations: 0,
        }
    }

    fn ks(&self, kind: ResourceKind) -> &KindState {
        &self.kinds[kind.index()]
    }

    fn ks_mut(&mut self, kind: ResourceKind) -> &mut KindState {
        &mut self.kinds[kind.index()]
    }

    fn unindex(&mut self, rec: &Record) {
        if let Some(p) = rec.links.person
            && indexed_by_person(rec.kind)
            && let Some(set) = self.by_person.get_mut(&(rec.kind, p))
        {
            set.remove(&rec.id);
        }
        if let Some(g) = rec.links.group
            && let Some(set) = self.by_group.get_mut(&(rec.kind, g))
        {
            set.remove(&rec.id);
        }
        if rec.kind == ResourceKind::HouseholdMembership
            && let Some(h) = rec.links.household
            && let Some(set) = self.by_household.get_mut(&h)
        {
            set.remove(&rec.id);
        }
    }

    fn index(&mut self, rec: &Record) {
        if let Some(g) = rec.links.group {
            self.by_group
                .entry((rec.kind, g))
                .or_default()
                .insert(rec.id);
        }
        if let Some(p) = rec.links.person
            && indexed_by_person(rec.kind)
        {
            self.by_person
                .entry((rec.kind, p))
                .or_default()
                .insert(rec.id);
        }
        if rec.kind == ResourceKind::HouseholdMembership
            && let Some(h) = rec.links.household
        {
            self.by_household.entry(h).or_default().insert(rec.id);
        }
    }

    /// Stores a live resource in the overlay.
    pub(crate) fn put(&mut self, rec: Record, created: bool) {
        let kind = rec.kind;
        self.touched.push((
            kind,
            rec.id,
            if created {
                Action::Created
            } else {
                Action::Updated
            },
        ));
        if let Some(old) = self.ks_mut(kind).overlay.remove(&rec.id) {
            self.unindex(&old);
        }
        self.index(&rec);
        let ks = self.ks_mut(kind);
        if created {
            ks.created.insert(rec.id);
        }
        ks.overlay.insert(rec.id, rec);
    }

    /// Deletes a resource (which must exist).
    pub(crate) fn remove(&mut self, data: &Dataset, kind: ResourceKind, id: u64) {
        self.touched.push((kind, id, Action::Destroyed));
        if let Some(old) = self.ks_mut(kind).overlay.remove(&id) {
            self.unindex(&old);
        }
        let ks = self.ks_mut(kind);
        if !ks.created.remove(&id) && data.index(kind, id).is_some() {
            ks.deleted.insert(id);
        }
    }
}

/// Kinds whose overlay resources are indexed by their person.
fn indexed_by_person(kind: ResourceKind) -> bool {
    is_person_child(kind) || kind == ResourceKind::Membership
}

fn is_person_child(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Email
            | ResourceKind::PhoneNumber
            | ResourceKind::Address
            | ResourceKind::HouseholdMembership
    )
}

/// Where a listing draws its resources from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    Person(u64),
    Household(u64),
    /// A group's memberships or events.
    Group(u64),
}

struct CacheEntry {
    key: String,
    version: u64,
    ids: Arc<Vec<u64>>,
}

const CACHE_ENTRIES: usize = 8;

/// The data behind a simulator.
pub(crate) struct Store {
    pub(crate) data: Dataset,
    state: RwLock<State>,
    cache: Mutex<VecDeque<CacheEntry>>,
    clock: Arc<dyn Clock>,
    /// Told of every create, update and delete, once it is made (the
    /// webhook dispatcher, once a subscription exists).
    listener: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Changed>>,
}

/// A mutation the store made: what the webhooks announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed {
    pub(crate) kind: ResourceKind,
    pub(crate) id: u64,
    pub(crate) action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Created,
    Updated,
    Destroyed,
    /// Person `id` was merged into person `keep` (announced after the
    /// merger's own changes).
    Merged {
        keep: u64,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// A read view: the generated data plus the overlay, under the read lock.
pub(crate) struct Snap<'a> {
    pub(crate) data: &'a Dataset,
    pub(crate) st: &'a State,
}

pub(crate) struct ReadGuard<'a> {
    data: &'a Dataset,
    guard: RwLockReadGuard<'a, State>,
}

impl ReadGuard<'_> {
    pub(crate) fn snap(&self) -> Snap<'_> {
        Snap {
            data: self.data,
            st: &self.guard,
        }
    }
}

enum Cand<'a> {
    Gen(u32),
    Over(&'a Record),
}

/// One candidate resource while filtering and sorting; generates the full record only when an
/// attribute other than a generated timestamp is needed.
struct Probe<'s, 'a> {
    snap: &'s Snap<'a>,
    kind: ResourceKind,
    id: u64,
    cand: Cand<'s>,
    full: Option<Record>,
}

impl Probe<'_, '_> {
    fn record(&mut self) -> &Record {
        match self.cand {
            Cand::Over(r) => r,
            Cand::Gen(i) => self
                .full
                .get_or_insert_with(|| self.snap.data.record(self.kind, i)),
        }
    }

    fn links(&self) -> Links {
        match self.cand {
            Cand::Over(r) => r.links,
            Cand::Gen(i) => self.snap.data.links(self.kind, i),
        }
    }

    fn time(&mut self, attr: &str) -> Option<i64> {
        if let Cand::Gen(i) = self.cand {
            match attr {
                "created_at" => return self.snap.data.created_s(self.kind, i).map(|s| s * 1000),
                "updated_at" => return self.snap.data.updated_s(self.kind, i).map(|s| s * 1000),
                _ => {}
            }
        }
        self.record().attrs.get_str(attr).and_then(parse_instant)
    }

    fn sort_key(&mut self, attr: &str) -> SortKey {
        if self.kind == ResourceKind::Membership && matches!(attr, "first_name" | "last_name") {
            // A membership sorts by its member's names.
            let person = self
                .links()
                .person
                .and_then(|p| self.snap.get(ResourceKind::Person, p));
            return SortKey::from_value(attr, person.as_ref().and_then(|p| p.attrs.get(attr)));
        }
        if attr_type(attr) == AttrType::Time
            && let Some(ms) = self.time(attr)
        {
            return SortKey::Time(ms);
        }
        SortKey::from_value(attr, self.record().attrs.get(attr))
    }

    fn matches(&mut self, f: &Filter) -> bool {
        match &f.target {
            Target::Id => f.accepts_number(i64::try_from(self.id).ok()),
            Target::PrimaryCampusId => match self.links().campus {
                Some(c) => c.to_string() == f.value,
                None => text_eq(None, &f.value),
            },
            Target::Attr(a) if attr_type(a) == AttrType::Time => {
                let t = self.time(a);
                f.accepts_number(t)
            }
            Target::Attr(a) => f.accepts_value(a, self.record().attrs.get(a)),
            Target::Search(s) => self.search(*s, &f.value),
            Target::ArchiveStatus => {
                let archived = self
                    .record()
                    .attrs
                    .get("archived_at")
                    .is_some_and(|v| !v.is_null());
                match f.value.as_str() {
                    "only" => archived,
                    "not_archived" => !archived,
                    _ => true,
                }
            }
        }
    }

    fn name_contains(&mut self, needle: &str) -> bool {
        self.record()
            .attrs
            .get_str("name")
            .is_some_and(|n| n.to_lowercase().contains(needle))
    }

    fn email_contains(&self, needle: &str) -> bool {
        self.snap
            .person_children(ResourceKind::Email, self.id)
            .into_iter()
            .filter_map(|e| self.snap.get(ResourceKind::Email, e))
            .any(|e| {
                e.attrs
                    .get_str("address")
                    .is_some_and(|a| a.to_lowercase().contains(needle))
            })
    }

    fn phone_matches(&self, digits: &str, e164: Option<&str>) -> bool {
        let only_digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        self.snap
            .person_children(ResourceKind::PhoneNumber, self.id)
            .into_iter()
            .filter_map(|e| self.snap.get(ResourceKind::PhoneNumber, e))
            .any(|ph| match e164 {
                Some(want) => ph.attrs.get_str("e164") == Some(want),
                None => {
                    !digits.is_empty()
                        && ["number", "e164"].iter().any(|k| {
                            ph.attrs
                                .get_str(k)
                                .is_some_and(|n| only_digits(n).contains(digits))
                        })
                }
            })
    }

    fn search(&mut self, kind: Search, value: &str) -> bool {
        let needle = value.to_lowercase();
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        match kind {
            Search::Name => self.name_contains(&needle),
            Search::NameOrEmail => self.name_contains(&needle) || self.email_contains(&needle),
            Search::NameOrEmailOrPhone => {
                self.name_contains(&needle)
                    || self.email_contains(&needle)
                    || self.phone_matches(&digits, None)
            }
            Search::Phone => self.phone_matches(&digits, None),
            Search::PhoneE164 => self.phone_matches(&digits, Some(value)),
        }
    }
}

impl Snap<'_> {
    fn ks(&self, kind: ResourceKind) -> &KindState {
        self.st.ks(kind)
    }

    /// Whether a generated id is replaced by the overlay or deleted.
    pub(crate) fn shadowed(&self, kind: ResourceKind, id: u64) -> bool {
        let ks = self.ks(kind);
        ks.overlay.contains_key(&id) || ks.deleted.contains(&id)
    }

    pub(crate) fn version(&self) -> u64 {
        self.st.version
    }

    pub(crate) fn mutations(&self) -> u64 {
        self.st.mutations
    }

    pub(crate) fn get(&self, kind: ResourceKind, id: u64) -> Option<Record> {
        let ks = self.ks(kind);
        if let Some(r) = ks.overlay.get(&id) {
            return Some(r.clone());
        }
        let index = self.data.index(kind, id)?;
        (!ks.deleted.contains(&id)).then(|| self.data.record(kind, index))
    }

    pub(crate) fn exists(&self, kind: ResourceKind, id: u64) -> bool {
        let ks = self.ks(kind);
        ks.overlay.contains_key(&id)
            || (self.data.index(kind, id).is_some() && !ks.deleted.contains(&id))
    }

    pub(crate) fn links(&self, kind: ResourceKind, id: u64) -> Option<Links> {
        let ks = self.ks(kind);
        if let Some(r) = ks.overlay.get(&id) {
            return Some(r.links);
        }
        let index = self.data.index(kind, id)?;
        (!ks.deleted.contains(&id)).then(|| self.data.links(kind, index))
    }

    pub(crate) fn live_count(&self, kind: ResourceKind) -> usize {
        let ks = self.ks(kind);
        self.data.count(kind) as usize - ks.deleted.len() + ks.created.len()
    }

    /// Live ids of `kind` in id order, `offset..offset + limit`, in O(limit + deletions).
    pub(crate) fn page_default(&self, kind: ResourceKind, offset: usize, limit: usize) -> Vec<u64> {
        let ks = self.ks(kind);
        let generated = self.data.count(kind) as usize;
        let gen_live = generated - ks.deleted.len();
        let mut out = Vec::with_capacity(limit.min(1024));
        if offset < gen_live {
            // The offset-th generated index that is not deleted.
            let mut index = offset;
            for &d in &ks.deleted {
                let di = (d - kind.id_base() - 1) as usize;
                if di <= index {
                    index += 1;
                } else {
                    break;
                }
            }
            while index < generated && out.len() < limit {
                let id = Dataset::id(kind, index as u32);
                if !ks.deleted.contains(&id) {
                    out.push(id);
                }
                index += 1;
            }
        }
        if out.len() < limit {
            let skip = offset.saturating_sub(gen_live);
            out.extend(ks.created.iter().skip(skip).take(limit - out.len()));
        }
        out
    }

    /// Live children of `kind` (Email, PhoneNumber, Address, HouseholdMembership) of a person,
    /// in id order.
    pub(crate) fn person_children(&self, kind: ResourceKind, person: u64) -> Vec<u64> {
        let generated = self.data.index(ResourceKind::Person, person);
        self.live_ids(
            kind,
            generated
                .into_iter()
                .flat_map(|p| self.data.child_range(kind, p)),
            self.st.by_person.get(&(kind, person)),
        )
    }

    /// Live memberships of a household, in id order.
    pub(crate) fn household_memberships(&self, household: u64) -> Vec<u64> {
        let generated = self.data.index(ResourceKind::Household, household);
        self.live_ids(
            ResourceKind::HouseholdMembership,
            generated
                .into_iter()
                .flat_map(|h| self.data.household_range(h)),
            self.st.by_household.get(&household),
        )
    }

    /// The live ids of `kind` among the generated ones at `indices` (those
    /// no mutation shadows) and the `created` ones, in id order.
    pub(crate) fn live_ids(
        &self,
        kind: ResourceKind,
        indices: impl Iterator<Item = u32>,
        created: Option<&BTreeSet<u64>>,
    ) -> Vec<u64> {
        let mut out: Vec<u64> = indices
            .map(|i| Dataset::id(kind, i))
            .filter(|id| !self.shadowed(kind, *id))
            .collect();
        if let Some(set) = created {
            out.extend(set.iter().copied());
            out.sort_unstable();
        }
        out
    }

    /// Households a person belongs to, in id order.
    pub(crate) fn person_households(&self, person: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .person_children(ResourceKind::HouseholdMembership, person)
            .into_iter()
            .filter_map(|m| self.links(ResourceKind::HouseholdMembership, m)?.household)
            .filter(|h| self.exists(ResourceKind::Household, *h))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Members of a household, in membership order.
    pub(crate) fn household_people(&self, household: u64) -> Vec<u64> {
        let mut seen = BTreeSet::new();
        self.household_memberships(household)
            .into_iter()
            .filter_map(|m| self.links(ResourceKind::HouseholdMembership, m)?.person)
            .filter(|p| self.exists(ResourceKind::Person, *p) && seen.insert(*p))
            .collect()
    }

    /// The ids a nested listing draws from (`scope` must not be `All`), in id order.
    pub(crate) fn scope_ids(&self, kind: ResourceKind, scope: Scope) -> Vec<u64> {
        let mut ids = match (kind, scope) {
            (ResourceKind::Household, Scope::Person(p)) => self.person_households(p),
            (ResourceKind::HouseholdMembership, Scope::Household(h)) => {
                self.household_memberships(h)
            }
            (ResourceKind::Person, Scope::Household(h)) => self.household_people(h),
            (k, Scope::Person(p)) if is_person_child(k) => self.person_children(k, p),
            (ResourceKind::Membership | ResourceKind::Event, Scope::Group(g)) => {
                self.group_children(kind, g)
            }
            _ => Vec::new(),
        };
        ids.sort_unstable();
        ids
    }

    /// Filters and sorts resources of `kind`: those in `ids` (nested scopes), or all of them.
    /// Ties (and the default order) are broken by id.
    pub(crate) fn query(
        &self,
        kind: ResourceKind,
        ids: Option<&[u64]>,
        filters: &[Filter],
        order: &[OrderKey],
    ) -> Vec<u64> {
        let mut rows: Vec<(Vec<SortKey>, u64)> = Vec::new();
        let mut visit = |id: u64, cand: Cand<'_>| {
            let mut probe = Probe {
                snap: self,
                kind,
                id,
                cand,
                full: None,
            };
            if filters.iter().all(|f| probe.matches(f)) {
                let keys = order.iter().map(|o| probe.sort_key(o.attr)).collect();
                rows.push((keys, id));
            }
        };
        let ks = self.ks(kind);
        match ids {
            Some(ids) => {
                for &id in ids {
                    if let Some(r) = ks.overlay.get(&id) {
                        visit(id, Cand::Over(r));
                    } else if let Some(i) = self.data.index(kind, id)
                        && !ks.deleted.contains(&id)
                    {
                        visit(id, Cand::Gen(i));
                    }
                }
            }
            None => {
                for i in 0..self.data.count(kind) {
                    let id = Dataset::id(kind, i);
                    if let Some(r) = ks.overlay.get(&id) {
                        visit(id, Cand::Over(r));
                    } else if !ks.deleted.contains(&id) {
                        visit(id, Cand::Gen(i));
                    }
                }
                for id in &ks.created {
                    if let Some(r) = ks.overlay.get(id) {
                        visit(*id, Cand::Over(r));
                    }
                }
            }
        }
        rows.sort_by(|a, b| {
            for (i, o) in order.iter().enumerate() {
                let c = a.0[i].cmp(&b.0[i]);
                let c = if o.desc { c.reverse() } else { c };
                if c.is_ne() {
                    return c;
                }
            }
            a.1.cmp(&b.1)
        });
        rows.into_iter().map(|(_, id)| id).collect()
    }
}

/// The body of a control-API mutation: `{"attributes": {...}, "relationships": {...}}`
/// (optionally wrapped in `{"data": ...}`).
#[derive(Debug, Default)]
pub(crate) struct Mutation {
    pub(crate) attributes: Map<String, Value>,
    pub(crate) relationships: Map<String, Value>,
}

impl Mutation {
    pub(crate) fn from_json(body: &Value) -> Result<Self, SimError> {
        let body = match body.get("data") {
            Some(d) if d.is_object() => d,
            _ => body,
        };
        let obj = body
            .as_object()
            .ok_or_else(|| SimError::bad_request("the body must be a JSON object"))?;
        let field = |name: &str| -> Result<Map<String, Value>, SimError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(SimError::bad_request(format!("{name} must be an object"))),
            }
        };
        Ok(Mutation {
            attributes: field("attributes")?,
            relationships: field("relationships")?,
        })
    }
}

/// Reads a to-one relationship value: `"123"`, `123`, `null`, `{"id": "123"}` or
/// `{"data": {"type": "Person", "id": "123"}}`.
pub(crate) fn rel_one(name: &str, v: &Value) -> Result<Option<u64>, SimError> {
    let bad = || {
        SimError::bad_request(format!(
            "relationship {name}: expected an id, null or {{\"data\": {{\"id\": ...}}}}"
        ))
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) => s.trim().parse().map(Some).map_err(|_| bad()),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(bad),
        Value::Object(o) => match o.get("data").or_else(|| o.get("id")) {
            Some(inner) => rel_one(name, inner),
            None => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Reads a to-many relationship value: an array of to-one values, or `{"data": [...]}`.
fn rel_many(name: &str, v: &Value) -> Result<Vec<u64>, SimError> {
    let items = match v {
        Value::Array(items) => items,
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(SimError::bad_request(format!(
                    "relationship {name}: expected an array"
                )));
            }
        },
        _ => {
            return Err(SimError::bad_request(format!(
                "relationship {name}: expected an array"
            )));
        }
    };
    items
        .iter()
        .map(|i| {
            rel_one(name, i)?
                .ok_or_else(|| SimError::bad_request(format!("relationship {name}: null in array")))
        })
        .collect()
}

fn allowed_rels(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::GroupType => &[],
        ResourceKind::Group => &["group_type"],
        ResourceKind::Membership => &["group", "person"],
        ResourceKind::Event => &["group"],
        ResourceKind::Person => &["primary_campus"],
        ResourceKind::Email | ResourceKind::PhoneNumber | ResourceKind::Address => &["person"],
        ResourceKind::Household => &["primary_contact", "people"],
        ResourceKind::HouseholdMembership => &["person", "household"],
        ResourceKind::Campus => &[],
    }
}

fn check_rel_names(kind: ResourceKind, m: &Mutation) -> Result<(), SimError> {
    for name in m.relationships.keys() {
        if !allowed_rels(kind).contains(&name.as_str()) {
            return Err(SimError::bad_request(format!(
                "{kind} has no settable relationship {name:?} (settable: [{}])",
                allowed_rels(kind).join(", ")
            )));
        }
    }
    Ok(())
}

pub(crate) fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn person_name(rec: &Record) -> Value {
    rec.attrs.get("name").cloned().unwrap_or(Value::Null)
}

impl Store {
    pub(crate) fn new(data: Dataset, clock: Arc<dyn Clock>) -> Self {
        Store {
            data,
            state: RwLock::new(State::new()),
            cache: Mutex::new(VecDeque::new()),
            clock,
            listener: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn read(&self) -> ReadGuard<'_> {
        ReadGuard {
            data: &self.data,
            guard: self.state.read().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// [`Snap::query`] over every resource of `kind`, cached until the next mutation.
    pub(crate) fn query_all(
        &self,
        snap: &Snap<'_>,
        kind: ResourceKind,
        filters: &[Filter],
        order: &[OrderKey],
    ) -> Arc<Vec<u64>> {
        let key = format!("{kind:?}|{filters:?}|{order:?}");
        let version = snap.version();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = cache.iter().find(|e| e.key == key && e.version == version) {
                return Arc::clone(&e.ids);
            }
        }
        let ids = Arc::new(snap.query(kind, None, filters, order));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|e| e.version == version && e.key != key);
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back(CacheEntry {
            key,
            version,
            ids: Arc::clone(&ids),
        });
        ids
    }

    /// Runs one mutation under the write lock with its timestamp (ms).
    fn mutate<T>(
        &self,
        f: impl FnOnce(&Dataset, &mut State, i64) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now().timestamp_millis();
        let ts = now.max(st.last_ms + 1);
        st.touched.clear();
        let out = f(&self.data, &mut st, ts);
        let touched = std::mem::take(&mut st.touched);
        let out = out?;
        st.last_ms = ts;
        st.version += 1;
        st.mutations += 1;
        // Each resource once, in the order first touched: gone if it was
        // removed, created if it was new, else updated.
        let mut seen: Vec<(ResourceKind, u64, Action)> = Vec::new();
        for (kind, id, action) in touched {
            match seen.iter_mut().find(|(k, i, _)| *k == kind && *i == id) {
                Some(entry) => {
                    if action == Action::Destroyed || entry.2 == Action::Updated {
                        entry.2 = action;
                    }
                }
                None => seen.push((kind, id, action)),
            }
        }
        for (kind, id, action) in seen {
            self.tell(kind, id, action);
        }
        Ok(out)
    }

    /// Sets the listener told of every mutation from now on (once).
    pub(crate) fn listen(&self, listener: tokio::sync::mpsc::UnboundedSender<Changed>) {
        let _ = self.listener.set(listener);
    }

    pub(crate) fn tell(&self, kind: ResourceKind, id: u64, action: Action) {
        if let Some(listener) = self.listener.get() {
            let _ = listener.send(Changed { kind, id, action });
        }
    }

    pub(crate) fn create(&self, kind: ResourceKind, body: &Value) -> Result<Record, SimError> {
        let m = Mutation::from_json(body)?;
        check_rel_names(kind, &m)?;
        self.mutate(|data, st, ts| create(data, st, ts, kind, m))
    }

    pub(crate) fn update(
        &self,
        kind: ResourceKind,
        id: u64,
        body: &Value,
    ) -> Result<Record, SimError> {
        let m = Mutation::from_json(body)?;
        check_rel_names(kind, &m)?;
        self.mutate(|data, st, ts| update(data, st, ts, kind, id, m))
    }

    pub(crate) fn delete(&self, kind: ResourceKind, id: u64) -> Result<(), SimError> {
        self.mutate(|data, st, ts| delete(data, st, ts, kind, id))
    }
}

pub(crate) fn snap<'a>(data: &'a Dataset, st: &'a State) -> Snap<'a> {
    Snap { data, st }
}

pub(crate) fn not_found(kind: ResourceKind, id: u64) -> SimError {
    SimError::not_found(format!("{kind} {id} not found"))
}

pub(crate) fn require(
    data: &Dataset,
    st: &State,
    kind: ResourceKind,
    id: u64,
    what: &str,
) -> Result<Record, SimError> {
    snap(data, st)
        .get(kind, id)
        .ok_or_else(|| SimError::unprocessable(format!("{what}: {kind} {id} does not exist")))
}

/// Complete default attributes for a created resource.
fn default_attrs(kind: ResourceKind, id: u64, now: &Value) -> Attrs {
    let mut a = Attrs::default();
    let n = Value::Null;
    let f = Value::Bool(false);
    let mut put = |k: &'static str, v: Value| a.push(k, v);
    match kind {
        ResourceKind::Person => {
            put("accounting_administrator", f.clone());
            put("anniversary", n.clone());
            put(
                "avatar",
                s("https://people.example.com/static/no_photo_thumbnail_gray.svg"),
            );
            put("birthdate", n.clone());
            put("can_create_forms", f.clone());
            put("can_email_lists", f.clone());
            put("child", f.clone());
            put("created_at", now.clone());
            put(
                "demographic_avatar_url",
                s("https://people.example.com/static/no_photo_thumbnail_gray.svg"),
            );
            put("directory_shared_info", Value::Object(Map::new()));
            put("directory_status", s("no_access"));
            put("first_name", s("New"));
            put("gender", n.clone());
            put("given_name", n.clone());
            put("grade", n.clone());
            put("graduation_year", n.clone());
            put("inactivated_at", n.clone());
            put("last_name", s("Person"));
            put("login_identifier", n.clone());
            put("medical_notes", n.clone());
            put("membership", n.clone());
            put("mfa_configured", f.clone());
            put("middle_name", n.clone());
            put("name", s("New Person"));
            put("nickname", n.clone());
            put("passed_background_check", f.clone());
            put("people_permissions", n.clone());
            put("remote_id", n.clone());
            put("resource_permission_flags", Value::Object(Map::new()));
            put("school_type", n.clone());
            put("site_administrator", f.clone());
            put("status", s("active"));
            put("stripe_customer_identifier", n.clone());
            put("updated_at", now.clone());
        }
        ResourceKind::Email => {
            put("address", Value::String(format!("new+{id}@example.com")));
            put("blocked", f.clone());
            put("created_at", now.clone());
            put("location", s("Home"));
            put("primary", f.clone());
            put("updated_at", now.clone());
        }
        ResourceKind::PhoneNumber => {
            put("carrier", n.clone());
            put("country_code", s("US"));
            put("created_at", now.clone());
            put("e164", s("+15555550100"));
            put("formatted_number", s("(555) 555-0100"));
            put("international", s("+1 555-555-0100"));
            put("location", s("Mobile"));
            put("national", s("(555) 555-0100"));
            put("number", s("(555) 555-0100"));
            put("primary", f.clone());
            put("updated_at", now.clone());
        }
        ResourceKind::Address => {
            put("city", s("Springfield"));
            put("country_code", s("US"));
            put("country_name", s("United States"));
            put("created_at", now.clone());
            put("location", s("Home"));
            put("primary", f.clone());
            put("state", s("IL"));
            put("street_line_1", s("1 Main St"));
            put("street_line_2", n.clone());
            put("updated_at", now.clone());
            put("zip", s("62701"));
        }
        ResourceKind::Household => {
            put(
                "avatar",
                s("https://people.example.com/static/no_photo_thumbnail_household_gray.svg"),
            );
            put("created_at", now.clone());
            put("member_count", Value::from(0));
            put("name", s("New Household"));
            put("primary_contact_id", n.clone());
            put("primary_contact_name", n.clone());
            put("updated_at", now.clone());
        }
        ResourceKind::HouseholdMembership => {
            put("household_role", s("adult"));
            put("pending", f.clone());
            put("person_name", n.clone());
        }
        ResourceKind::GroupType
        | ResourceKind::Group
        | ResourceKind::Membership
        | ResourceKind::Event => return crate::groups_store::default_attrs(kind, id, now),
        ResourceKind::Campus => {
            put("avatar_url", n.clone());
            put("church_center_enabled", Value::Bool(true));
            put("city", s("Springfield"));
            put("contact_email_address", n.clone());
            put("country", s("US"));
            put("created_at", now.clone());
            put("date_format", s("%m/%d/%Y"));
            put("description", n.clone());
            put("geolocation_set_manually", f.clone());
            put("latitude", n.clone());
            put("longitude", n.clone());
            put("name", Value::String(format!("New Campus {id}")));
            put("phone_number", n.clone());
            put("state", s("IL"));
            put("street", n.clone());
            put("time_zone", s("America/Chicago"));
            put("time_zone_raw", s("America/Chicago"));
            put("twenty_four_hour_time", f.clone());
            put("updated_at", now.clone());
            put("website", n.clone());
            put("zip", n);
        }
    }
    a
}

pub(crate) fn apply_attrs(rec: &mut Record, attrs: &Map<String, Value>) {
    for (k, v) in attrs {
        rec.attrs.set(k, v.clone());
    }
}

/// Sets a household's primary contact (relationship and the attributes mirroring it).
fn set_primary_contact(data: &Dataset, st: &State, household: &mut Record, person: Option<u64>) {
    household.links.person = person;
    let contact = person.and_then(|p| snap(data, st).get(ResourceKind::Person, p));
    household.attrs.set(
        "primary_contact_id",
        person.map_or(Value::Null, |p| Value::String(p.to_string())),
    );
    household.attrs.set(
        "primary_contact_name",
        contact.as_ref().map_or(Value::Null, person_name),
    );
}

/// Brings a household's member count and primary contact up to date after its memberships
/// changed, bumping `updated_at`.
fn refresh_household(data: &Dataset, st: &mut State, ts: i64, household: u64) {
    let view = snap(data, st);
    let Some(mut rec) = view.get(ResourceKind::Household, household) else {
        return;
    };
    let members = view.household_people(household);
    rec.attrs.set("member_count", Value::from(members.len()));
    if rec.links.person.is_none_or(|p| !members.contains(&p)) {
        set_primary_contact(data, st, &mut rec, members.first().copied());
    }
    rec.attrs.set("updated_at", Value::String(format_ms(ts)));
    st.put(rec, false);
}

pub(crate) fn new_id(data: &Dataset, st: &mut State, kind: ResourceKind) -> u64 {
    let ks = st.ks_mut(kind);
    ks.created_total += 1;
    kind.id_base() + u64::from(data.count(kind)) + ks.created_total
}

fn create(
    data: &Dataset,
    st: &mut State,
    ts: i64,
    kind: ResourceKind,
    m: Mutation,
) -> Result<Record, SimError> {
    if kind.app() == App::Groups {
        return crate::groups_store::create(data, st, ts, kind, m);
    }
    let now = Value::String(format_ms(ts));
    let rel = |name: &str| -> Result<Option<u64>, SimError> {
        m.relationships
            .get(name)
            .map_or(Ok(None), |v| rel_one(name, v))
    };
    // Validate references before allocating anything.
    let mut links = Links::default();
    let mut people = Vec::new();
    match kind {
        ResourceKind::Person => {
            links.campus = rel("primary_campus")?;
            if let Some(c) = links.campus {
                require(data, st, ResourceKind::Campus, c, "primary_campus")?;
            }
        }
        ResourceKind::Email | ResourceKind::PhoneNumber | ResourceKind::Address => {
            let p = rel("person")?.ok_or_else(|| {
                SimError::unprocessable(format!("a new {kind} needs relationships.person"))
            })?;
            require(data, st, ResourceKind::Person, p, "person")?;
            links.person = Some(p);
        }
        ResourceKind::Household => {
            if let Some(v) = m.relationships.get("people") {
                people = rel_many("people", v)?;
            }
            for p in &people {
                require(data, st, ResourceKind::Person, *p, "people")?;
            }
            links.person = rel("primary_contact")?.or(people.first().copied());
            if let Some(p) = links.person {
                require(data, st, ResourceKind::Person, p, "primary_contact")?;
                if !people.contains(&p) {
                    people.insert(0, p);
                }
            }
        }
        ResourceKind::HouseholdMembership => {
            let p = rel("person")?.ok_or_else(|| {
                SimError::unprocessable("a new HouseholdMembership needs relationships.person")
            })?;
            let h = rel("household")?.ok_or_else(|| {
                SimError::unprocessable("a new HouseholdMembership needs relationships.household")
            })?;
            require(data, st, ResourceKind::Person, p, "person")?;
            require(data, st, ResourceKind::Household, h, "household")?;
            if snap(data, st).household_people(h).contains(&p) {
                return Err(SimError::unprocessable(format!(
                    "Person {p} is already a member of Household {h}"
                )));
            }
            links.person = Some(p);
            links.household = Some(h);
        }
        // Handled by groups_store::create above.
        ResourceKind::Campus
        | ResourceKind::GroupType
        | ResourceKind::Group
        | ResourceKind::Membership
        | ResourceKind::Event => {}
    }

    let id = new_id(data, st, kind);
    let mut rec = Record {
        kind,
        id,
        attrs: default_attrs(kind, id, &now),
        links,
    };
    // Defaults that depend on related resources.
    let view = snap(data, st);
    match kind {
        ResourceKind::Email | ResourceKind::PhoneNumber | ResourceKind::Address => {
            let owner = links.person.unwrap_or_default();
            let first = view.person_children(kind, owner).is_empty();
            rec.attrs.set("primary", Value::Bool(first));
        }
        ResourceKind::HouseholdMembership => {
            let person = links.person.and_then(|p| view.get(ResourceKind::Person, p));
            rec.attrs.set(
                "person_name",
                person.as_ref().map_or(Value::Null, person_name),
            );
        }
        ResourceKind::Household => {
            if let Some(contact) = links.person.and_then(|p| view.get(ResourceKind::Person, p)) {
                if let Some(last) = contact.attrs.get_str("last_name") {
                    rec.attrs
                        .set("name", Value::String(format!("{last} Household")));
                }
                rec.attrs
                    .set("primary_contact_id", Value::String(contact.id.to_string()));
                rec.attrs.set("primary_contact_name", person_name(&contact));
            }
            rec.attrs.set("member_count", Value::from(people.len()));
        }
        _ => {}
    }
    apply_attrs(&mut rec, &m.attributes);
    if kind == ResourceKind::Person && !m.attributes.contains_key("name") {
        let first = rec
            .attrs
            .get_str("first_name")
            .unwrap_or_default()
            .to_owned();
        let last = rec
            .attrs
            .get_str("last_name")
            .unwrap_or_default()
            .to_owned();
        rec.attrs.set(
            "name",
            Value::String(format!("{first} {last}").trim().to_owned()),
        );
    }
    st.put(rec.clone(), true);

    match kind {
        ResourceKind::Household => {
            for p in people {
                let mid = new_id(data, st, ResourceKind::HouseholdMembership);
                let person = snap(data, st).get(ResourceKind::Person, p);
                let mut mem = Record {
                    kind: ResourceKind::HouseholdMembership,
                    id: mid,
                    attrs: default_attrs(ResourceKind::HouseholdMembership, mid, &now),
                    links: Links {
                        person: Some(p),
                        household: Some(id),
                        ..Links::default()
                    },
                };
                mem.attrs.set(
                    "person_name",
                    person.as_ref().map_or(Value::Null, person_name),
                );
                st.put(mem, true);
            }
        }
        ResourceKind::HouseholdMembership => {
            if let Some(h) = links.household {
                refresh_household(data, st, ts, h);
            }
        }
        _ => {}
    }
    Ok(rec)
}

fn update(
    data: &Dataset,
    st: &mut State,
    ts: i64,
    kind: ResourceKind,
    id: u64,
    m: Mutation,
) -> Result<Record, SimError> {
    let mut rec = snap(data, st)
        .get(kind, id)
        .ok_or_else(|| not_found(kind, id))?;
    for (name, v) in &m.relationships {
        match (kind, name.as_str()) {
            (ResourceKind::Group, "group_type") => {
                let t = rel_one(name, v)?;
                if let Some(t) = t {
                    require(data, st, ResourceKind::GroupType, t, name)?;
                }
                rec.links.group_type = t;
            }
            (ResourceKind::Person, "primary_campus") => {
                let c = rel_one(name, v)?;
                if let Some(c) = c {
                    require(data, st, ResourceKind::Campus, c, name)?;
                }
                rec.links.campus = c;
            }
            (ResourceKind::Email | ResourceKind::PhoneNumber | ResourceKind::Address, "person") => {
                let p = rel_one(name, v)?.ok_or_else(|| {
                    SimError::unprocessable(format!("{kind} must belong to a person"))
                })?;
                require(data, st, ResourceKind::Person, p, name)?;
                rec.links.person = Some(p);
            }
            (ResourceKind::Household, "primary_contact") => {
                let p = rel_one(name, v)?;
                if let Some(p) = p {
                    require(data, st, ResourceKind::Person, p, name)?;
                }
                set_primary_contact(data, st, &mut rec, p);
            }
            _ => {
                return Err(SimError::bad_request(format!(
                    "relationship {name} of {kind} cannot be changed; delete and create instead"
                )));
            }
        }
    }
    apply_attrs(&mut rec, &m.attributes);
    if kind.has_timestamps() && !m.attributes.contains_key("updated_at") {
        rec.attrs.set("updated_at", Value::String(format_ms(ts)));
    }
    st.put(rec.clone(), false);
    Ok(rec)
}

fn delete(
    data: &Dataset,
    st: &mut State,
    ts: i64,
    kind: ResourceKind,
    id: u64,
) -> Result<(), SimError> {
    let view = snap(data, st);
    if !view.exists(kind, id) {
        return Err(not_found(kind, id));
    }
    let mut households = Vec::new();
    let mut groups = Vec::new();
    let mut cascade: Vec<(ResourceKind, u64)> = Vec::new();
    crate::groups_store::delete_cascade(&view, kind, id, &mut cascade, &mut groups);
    match kind {
        ResourceKind::Person => {
            for child in [
                ResourceKind::Email,
                ResourceKind::PhoneNumber,
                ResourceKind::Address,
                ResourceKind::HouseholdMembership,
            ] {
                for c in view.person_children(child, id) {
                    if child == ResourceKind::HouseholdMembership
                        && let Some(h) = view.links(child, c).and_then(|l| l.household)
                    {
                        households.push(h);
                    }
                    cascade.push((child, c));
                }
            }
        }
        ResourceKind::Household => {
            for mem in view.household_memberships(id) {
                cascade.push((ResourceKind::HouseholdMembership, mem));
            }
        }
        ResourceKind::HouseholdMembership => {
            if let Some(h) = view.links(kind, id).and_then(|l| l.household) {
                households.push(h);
            }
        }
        _ => {}
    }
    for (k, c) in cascade {
        st.remove(data, k, c);
    }
    st.remove(data, kind, id);
    households.sort_unstable();
    households.dedup();
    for h in households {
        refresh_household(data, st, ts, h);
    }
    groups.sort_unstable();
    groups.dedup();
    for g in groups {
        crate::groups_store::refresh_group(data, st, g);
    }
    Ok(())
}
