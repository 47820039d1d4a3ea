//! The PCO API surface under `/people/v2` and `/groups/v2`: routing, listing, single
//! resources and JSON:API documents (one code path for both applications).

use std::collections::HashSet;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Simulator;
use crate::error::{SimError, json_response};
use crate::query::{parse_list_params, parse_pairs, parse_single_params, with_offset};
use crate::record::{Record, Rel, RelData, push_json, write_resource};
use crate::schema::{App, ResourceKind};
use crate::store::{Scope, Snap};

pub(crate) const API_PREFIX: &str = "/people/v2";
pub(crate) const GROUPS_PREFIX: &str = "/groups/v2";

/// `http://<Host header>` (absolute URLs in documents use the request's Host).
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Side-loaded resources, deduplicated, in order of first reference.
#[derive(Default)]
pub(crate) struct Included {
    seen: HashSet<(ResourceKind, u64)>,
    order: Vec<(ResourceKind, u64)>,
}

impl Included {
    fn add(&mut self, kind: ResourceKind, id: u64) {
        if self.seen.insert((kind, id)) {
            self.order.push((kind, id));
        }
    }
}

/// Renders resources for one request.
pub(crate) struct Renderer<'a> {
    pub(crate) snap: &'a Snap<'a>,
    pub(crate) org_id: &'a str,
    /// `None` renders without `links` (the dump).
    pub(crate) base: Option<&'a str>,
}

impl Renderer<'_> {
    /// The canonical path of a resource.
    pub(crate) fn self_path(rec: &Record) -> String {
        match (rec.kind, rec.links.household, rec.links.group) {
            (ResourceKind::HouseholdMembership, Some(h), _) => {
                format!(
                    "{API_PREFIX}/households/{h}/household_memberships/{}",
                    rec.id
                )
            }
            (ResourceKind::Membership, _, Some(g)) => {
                format!("{GROUPS_PREFIX}/groups/{g}/memberships/{}", rec.id)
            }
            (kind, _, _) => format!("{}/{}/{}", kind.app().prefix(), kind.collection(), rec.id),
        }
    }

    /// Relationships of a resource; `include` adds the included relationships (and their
    /// targets to `included`).
    fn rels(&self, rec: &Record, include: &[&str], included: &mut Included) -> Vec<Rel> {
        let snap = self.snap;
        let mut add_all = |kind: ResourceKind, ids: &[u64]| {
            for id in ids {
                if snap.exists(kind, *id) {
                    included.add(kind, *id);
                }
            }
        };
        let wants = |name: &str| include.contains(&name);
        let one = |name: &'static str, target: Option<(ResourceKind, u64)>| Rel {
            name,
            data: RelData::One(target),
        };
        let mut rels = Vec::new();
        match rec.kind {
            ResourceKind::Person => {
                let campus = rec.links.campus;
                rels.push(one(
                    "primary_campus",
                    campus.map(|c| (ResourceKind::Campus, c)),
                ));
                if wants("primary_campus")
                    && let Some(c) = campus
                {
                    add_all(ResourceKind::Campus, &[c]);
                }
                for (name, kind) in [
                    ("emails", ResourceKind::Email),
                    ("phone_numbers", ResourceKind::PhoneNumber),
                    ("addresses", ResourceKind::Address),
                    ("households", ResourceKind::Household),
                ] {
                    if wants(name) {
                        let ids = if kind == ResourceKind::Household {
                            snap.person_households(rec.id)
                        } else {
                            snap.person_children(kind, rec.id)
                        };
                        add_all(kind, &ids);
                        rels.push(Rel {
                            name,
                            data: RelData::Many(kind, ids),
                        });
                    }
                }
            }
            ResourceKind::Email | ResourceKind::PhoneNumber | ResourceKind::Address => {
                rels.push(one(
                    "person",
                    rec.links.person.map(|p| (ResourceKind::Person, p)),
                ));
            }
            ResourceKind::Household => {
                rels.push(one(
                    "primary_contact",
                    rec.links.person.map(|p| (ResourceKind::Person, p)),
                ));
                let people = snap.household_people(rec.id);
                if wants("people") {
                    add_all(ResourceKind::Person, &people);
                }
                rels.push(Rel {
                    name: "people",
                    data: RelData::Many(ResourceKind::Person, people),
                });
            }
            ResourceKind::HouseholdMembership => {
                for (name, kind, target) in [
                    ("household", ResourceKind::Household, rec.links.household),
                    ("person", ResourceKind::Person, rec.links.person),
                ] {
                    if wants(name)
                        && let Some(t) = target
                    {
                        add_all(kind, &[t]);
                    }
                    rels.push(one(name, target.map(|t| (kind, t))));
                }
            }
            ResourceKind::Campus => rels.push(Rel {
                name: "organization",
                data: RelData::Organization,
            }),
            ResourceKind::GroupType => {}
            ResourceKind::Group | ResourceKind::Membership | ResourceKind::Event => {
                let targets: &[(&'static str, ResourceKind, Option<u64>)] = match rec.kind {
                    ResourceKind::Group => {
                        &[("group_type", ResourceKind::GroupType, rec.links.group_type)]
                    }
                    ResourceKind::Membership => &[
                        ("group", ResourceKind::Group, rec.links.group),
                        ("person", ResourceKind::Person, rec.links.person),
                    ],
                    _ => &[("group", ResourceKind::Group, rec.links.group)],
                };
                for &(name, kind, target) in targets {
                    if wants(name)
                        && let Some(t) = target
                    {
                        add_all(kind, &[t]);
                    }
                    rels.push(one(name, target.map(|t| (kind, t))));
                }
            }
        }
        rels
    }

    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        rec: &Record,
        include: &[&str],
        included: &mut Included,
    ) {
        let rels = self.rels(rec, include, included);
        let link = self
            .base
            .map(|base| format!("{base}{}", Self::self_path(rec)));
        write_resource(out, rec, &rels, self.org_id, link.as_deref());
    }

    /// Writes `,"included":[...]` for everything referenced so far.
    fn write_included(&self, out: &mut Vec<u8>, included: Included) {
        out.extend_from_slice(b",\"included\":[");
        let mut scratch = Included::default();
        let mut first = true;
        for (kind, id) in included.order {
            if let Some(rec) = self.snap.get(kind, id) {
                if !first {
                    out.push(b',');
                }
                first = false;
                self.write(out, &rec, &[], &mut scratch);
            }
        }
        out.push(b']');
    }

    /// One line of `/__sim/dump`.
    pub(crate) fn dump_line(&self, out: &mut Vec<u8>, rec: &Record) {
        self.write(out, rec, &[], &mut Included::default());
        out.push(b'\n');
    }
}

fn write_meta_lists(out: &mut Vec<u8>, kind: ResourceKind) {
    out.extend_from_slice(b"\"can_order_by\":");
    push_json(out, kind.can_order_by());
    out.extend_from_slice(b",\"can_query_by\":");
    push_json(out, kind.can_query_by());
    out.extend_from_slice(b",\"can_include\":");
    push_json(out, kind.can_include());
}

fn write_parent(out: &mut Vec<u8>, scope: Scope, org_id: &str) {
    out.extend_from_slice(b"\"parent\":{\"id\":");
    match scope {
        Scope::All => {
            push_json(out, org_id);
            out.extend_from_slice(b",\"type\":\"Organization\"}");
        }
        Scope::Person(p) => {
            push_json(out, &p.to_string());
            out.extend_from_slice(b",\"type\":\"Person\"}");
        }
        Scope::Household(h) => {
            push_json(out, &h.to_string());
            out.extend_from_slice(b",\"type\":\"Household\"}");
        }
        Scope::Group(g) => {
            push_json(out, &g.to_string());
            out.extend_from_slice(b",\"type\":\"Group\"}");
        }
    }
}

/// Builds the scope of a nested route from its parent id.
type ScopeOf = fn(u64) -> Scope;

/// What a `/people/v2/...` or `/groups/v2/...` path addresses.
enum Target {
    Organization(App),
    List(ResourceKind, Scope),
    One(ResourceKind, u64, Scope),
}

fn resolve(path: &str) -> Result<Target, SimError> {
    if let Some(rest) = path.strip_prefix(GROUPS_PREFIX) {
        return resolve_groups(path, rest);
    }
    let rest = path.strip_prefix(API_PREFIX).unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let unknown = || SimError::not_found(format!("no such resource: {path}"));
    let top = |c: &str| {
        ResourceKind::from_collection(c)
            .filter(|k| k.app() == App::People && *k != ResourceKind::HouseholdMembership)
            .ok_or_else(unknown)
    };
    let id = |s: &str| s.parse::<u64>().map_err(|_| unknown());
    let nested = |parent: &str, sub: &str| -> Result<(ResourceKind, ScopeOf), SimError> {
        match (parent, sub) {
            (
                "people",
                "emails" | "phone_numbers" | "addresses" | "households" | "household_memberships",
            ) => Ok((
                ResourceKind::from_collection(sub).ok_or_else(unknown)?,
                Scope::Person,
            )),
            ("households", "household_memberships" | "people") => Ok((
                ResourceKind::from_collection(sub).ok_or_else(unknown)?,
                Scope::Household,
            )),
            _ => Err(unknown()),
        }
    };
    Ok(match segs.as_slice() {
        [] => Target::Organization(App::People),
        [c] => Target::List(top(c)?, Scope::All),
        [c, i] => Target::One(top(c)?, id(i)?, Scope::All),
        [parent, p, sub] => {
            let (kind, scope) = nested(parent, sub)?;
            Target::List(kind, scope(id(p)?))
        }
        [parent, p, sub, i] => {
            let (kind, scope) = nested(parent, sub)?;
            Target::One(kind, id(i)?, scope(id(p)?))
        }
        _ => return Err(unknown()),
    })
}

/// `/groups/v2` routes: `group_types`, `groups`, `events` (top level), and a group's
/// `memberships` and `events` (memberships are listed only under their group, as in PCO).
fn resolve_groups(path: &str, rest: &str) -> Result<Target, SimError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let unknown = || SimError::not_found(format!("no such resource: {path}"));
    let top = |c: &str| match c {
        "group_types" => Ok(ResourceKind::GroupType),
        "groups" => Ok(ResourceKind::Group),
        "events" => Ok(ResourceKind::Event),
        _ => Err(unknown()),
    };
    let id = |s: &str| s.parse::<u64>().map_err(|_| unknown());
    let nested = |parent: &str, sub: &str| match (parent, sub) {
        ("groups", "memberships") => Ok(ResourceKind::Membership),
        ("groups", "events") => Ok(ResourceKind::Event),
        _ => Err(unknown()),
    };
    Ok(match segs.as_slice() {
        [] => Target::Organization(App::Groups),
        [c] => Target::List(top(c)?, Scope::All),
        [c, i] => Target::One(top(c)?, id(i)?, Scope::All),
        [parent, g, sub] => Target::List(nested(parent, sub)?, Scope::Group(id(g)?)),
        [parent, g, sub, i] => Target::One(nested(parent, sub)?, id(i)?, Scope::Group(id(g)?)),
        _ => return Err(unknown()),
    })
}

fn check_parent(snap: &Snap<'_>, scope: Scope) -> Result<(), SimError> {
    let (kind, id) = match scope {
        Scope::All => return Ok(()),
        Scope::Person(p) => (ResourceKind::Person, p),
        Scope::Household(h) => (ResourceKind::Household, h),
        Scope::Group(g) => (ResourceKind::Group, g),
    };
    if snap.exists(kind, id) {
        Ok(())
    } else {
        Err(SimError::not_found(format!("{kind} {id} not found")))
    }
}

/// Answers a GET under `/people/v2` or `/groups/v2`.
fn api_get(
    sim: &Simulator,
    path: &str,
    raw_query: Option<&str>,
    base: &str,
) -> Result<Vec<u8>, SimError> {
    let target = resolve(path)?;
    let pairs = parse_pairs(raw_query);
    let store = &sim.inner.store;
    let org_id = sim.inner.config.org_id.as_str();
    let guard = store.read();
    let snap = guard.snap();
    let r = Renderer {
        snap: &snap,
        org_id,
        base: Some(base),
    };
    let mut out = Vec::with_capacity(16 * 1024);
    match target {
        Target::Organization(app) => {
            out.extend_from_slice(b"{\"data\":{\"type\":\"Organization\",\"id\":");
            push_json(&mut out, org_id);
            out.extend_from_slice(b",\"attributes\":");
            push_json(
                &mut out,
                &serde_json::json!({
                    "avatar_url": null,
                    "church_center_subdomain": "tributary-sim",
                    "contact_website": "https://church.example.org",
                    "country_code": "US",
                    "created_at": "2018-06-01T12:00:00Z",
                    "date_format": "%m/%d/%Y",
                    "name": "Tributary Simulated Church",
                    "time_zone": "America/Chicago",
                }),
            );
            out.extend_from_slice(b",\"links\":{\"self\":");
            push_json(&mut out, &format!("{base}{}", app.prefix()));
            out.extend_from_slice(b"}}}");
        }
        Target::One(kind, id, scope) => {
            let include = parse_single_params(kind, &pairs)?;
            check_parent(&snap, scope)?;
            let not_found = || SimError::not_found(format!("{kind} {id} not found"));
            if scope != Scope::All && !snap.scope_ids(kind, scope).contains(&id) {
                return Err(not_found());
            }
            let rec = snap.get(kind, id).ok_or_else(not_found)?;
            let mut included = Included::default();
            out.extend_from_slice(b"{\"data\":");
            r.write(&mut out, &rec, &include, &mut included);
            if !include.is_empty() {
                r.write_included(&mut out, included);
            }
            out.extend_from_slice(b",\"meta\":{\"can_include\":");
            push_json(&mut out, kind.can_include());
            out.push(b',');
            write_parent(&mut out, scope, org_id);
            out.extend_from_slice(b"}}");
        }
        Target::List(kind, scope) => {
            let params = parse_list_params(kind, &pairs)?;
            check_parent(&snap, scope)?;
            let (offset, per_page) = (params.offset, params.per_page);
            let plain = params.filters.is_empty() && params.order.is_empty();
            let slice = |ids: &[u64]| {
                let start = offset.min(ids.len());
                let end = offset.saturating_add(per_page).min(ids.len());
                ids[start..end].to_vec()
            };
            let (total, page) = match scope {
                Scope::All if plain => (
                    snap.live_count(kind),
                    snap.page_default(kind, offset, per_page),
                ),
                Scope::All => {
                    let ids = store.query_all(&snap, kind, &params.filters, &params.order);
                    (ids.len(), slice(&ids))
                }
                _ => {
                    let mut ids = snap.scope_ids(kind, scope);
                    if !plain {
                        ids = snap.query(kind, Some(&ids), &params.filters, &params.order);
                    }
                    (ids.len(), slice(&ids))
                }
            };
            let next = offset.saturating_add(per_page);
            let has_next = next < total;

            out.extend_from_slice(b"{\"links\":{\"self\":");
            let self_link = match raw_query {
                Some(q) if !q.is_empty() => format!("{base}{path}?{q}"),
                _ => format!("{base}{path}"),
            };
            push_json(&mut out, &self_link);
            if has_next {
                out.extend_from_slice(b",\"next\":");
                push_json(
                    &mut out,
                    &format!("{base}{path}?{}", with_offset(raw_query, next)),
                );
            }
            out.extend_from_slice(b"},\"data\":[");
            let mut included = Included::default();
            let mut count = 0usize;
            for id in &page {
                if let Some(rec) = snap.get(kind, *id) {
                    if count > 0 {
                        out.push(b',');
                    }
                    r.write(&mut out, &rec, &params.include, &mut included);
                    count += 1;
                }
            }
            out.push(b']');
            if !params.include.is_empty() {
                r.write_included(&mut out, included);
            }
            out.extend_from_slice(b",\"meta\":{\"total_count\":");
            out.extend_from_slice(total.to_string().as_bytes());
            out.extend_from_slice(b",\"count\":");
            out.extend_from_slice(count.to_string().as_bytes());
            if has_next {
                out.extend_from_slice(b",\"next\":{\"offset\":");
                out.extend_from_slice(next.to_string().as_bytes());
                out.push(b'}');
            }
            out.push(b',');
            write_meta_lists(&mut out, kind);
            out.push(b',');
            write_parent(&mut out, scope, org_id);
            out.extend_from_slice(b"}}");
        }
    }
    Ok(out)
}

/// The handler of every route under `/people/v2` and `/groups/v2` (auth has already been
/// checked).
pub(crate) async fn handle(State(sim): State<Simulator>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return SimError::method_not_allowed(format!(
            "{} is not supported by the simulated API (use the /__sim control API to mutate data)",
            req.method()
        ))
        .into_response();
    }
    let base = base_url(req.headers());
    match api_get(&sim, req.uri().path(), req.uri().query(), &base) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

/// JSON:API 404 for any unknown route.
pub(crate) async fn not_found(req: Request) -> Response {
    SimError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}
