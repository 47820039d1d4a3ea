//! The Backend API routes (`/v1/...`): lists, single objects, parameters and their validation.
//!
//! * `limit` (default 10, 1–500) and `offset` (default 0, ≥ 0); anything else is a 422
//!   `form_param_value_invalid` naming the parameter. A repeated parameter counts once (the
//!   first), as Clerk keeps the first `order_by`.
//! * `order_by`: a field with an optional `+` (ascending, the default) or `-` prefix. A raw `+`
//!   in a query string decodes to a space, which is read as `+` too. Unknown fields are a 422.
//!   Ties are broken by id (in the same direction), so paging is stable; ascending puts nulls
//!   last, descending first.
//! * Unknown parameters are ignored.

use std::collections::HashSet;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::ClerkSim;
use super::error::{ClerkError, json_response};
use super::middleware;
use super::model::{Membership, Organization, User};
use super::params::{Key, Params, compare};
use super::store::State as Data;

/// `order_by` fields of `GET /v1/users`.
pub(crate) const USER_ORDERS: &[&str] = &[
    "created_at",
    "updated_at",
    "email_address",
    "web3wallet",
    "first_name",
    "last_name",
    "phone_number",
    "username",
    "last_active_at",
    "last_sign_in_at",
];
/// `order_by` fields of `GET /v1/organizations`.
pub(crate) const ORGANIZATION_ORDERS: &[&str] = &["created_at", "name", "members_count"];
/// `order_by` fields of the membership lists.
pub(crate) const MEMBERSHIP_ORDERS: &[&str] = &[
    "created_at",
    "phone_number",
    "email_address",
    "first_name",
    "last_name",
    "username",
];

pub(crate) fn routes(sim: &ClerkSim) -> Router<ClerkSim> {
    use axum::middleware::from_fn_with_state;
    Router::new()
        .route("/v1/users", get(list_users))
        .route("/v1/users/count", get(count_users))
        .route("/v1/users/{user_id}", get(get_user))
        .route("/v1/organizations", get(list_organizations))
        .route("/v1/organizations/{organization_id}", get(get_organization))
        .route(
            "/v1/organizations/{organization_id}/memberships",
            get(list_organization_memberships),
        )
        .route("/v1/organization_memberships", get(list_memberships))
        .route_layer(from_fn_with_state(sim.clone(), middleware::rate_limit))
        .route_layer(from_fn_with_state(
            sim.clone(),
            middleware::require_secret_key,
        ))
        .route_layer(from_fn_with_state(sim.clone(), middleware::count))
}

/// Unknown paths: 404 `resource_not_found` (counted as `"unmatched"` under `/v1`).
pub(crate) async fn fallback(State(sim): State<ClerkSim>, req: Request) -> Response {
    if req.uri().path().starts_with("/v1") {
        sim.inner.stats.record("unmatched", 404);
    }
    ClerkError::not_found().into_response()
}

fn user_key<'a>(u: &'a User, field: &str) -> Key<'a> {
    match field {
        "created_at" => Key::Int(Some(u.created_at)),
        "updated_at" => Key::Int(Some(u.updated_at)),
        "last_sign_in_at" => Key::Int(u.last_sign_in_at),
        "last_active_at" => Key::Int(u.last_active_at),
        "first_name" => Key::Text(u.first_name.as_deref()),
        "last_name" => Key::Text(u.last_name.as_deref()),
        "username" => Key::Text(u.username.as_deref()),
        "email_address" => Key::Text(u.primary_email().map(|e| e.email_address.as_str())),
        _ => Key::Text(None),
    }
}

/// The users `GET /v1/users` and `/v1/users/count` select.
fn filter_users<'a>(data: &'a Data, p: &Params) -> Result<Vec<&'a User>, ClerkError> {
    let (ids, not_ids) = p.signed("user_id");
    let (external, not_external) = p.signed("external_id");
    let (orgs, not_orgs) = p.signed("organization_id");
    let emails: HashSet<String> = p
        .all("email_address")
        .iter()
        .map(|e| e.to_lowercase())
        .collect();
    let usernames: HashSet<String> = p.all("username").iter().map(|u| u.to_lowercase()).collect();
    let banned = p.flag("banned")?;
    let query = p
        .first("query")
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let created_before = p.integer("created_at_before")?;
    let created_after = p.integer("created_at_after")?;
    let in_orgs = |u: &User| data.user_orgs.get(&u.id);
    Ok(data
        .users
        .iter()
        .filter(|u| ids.is_empty() || ids.contains(&u.id))
        .filter(|u| !not_ids.contains(&u.id))
        .filter(|u| {
            external.is_empty() || u.external_id.as_ref().is_some_and(|e| external.contains(e))
        })
        .filter(|u| {
            !u.external_id
                .as_ref()
                .is_some_and(|e| not_external.contains(e))
        })
        .filter(|u| {
            orgs.is_empty() || in_orgs(u).is_some_and(|o| o.iter().any(|o| orgs.contains(o)))
        })
        .filter(|u| !in_orgs(u).is_some_and(|o| o.iter().any(|o| not_orgs.contains(o))))
        .filter(|u| {
            emails.is_empty()
                || u.email_addresses
                    .iter()
                    .any(|e| emails.contains(&e.email_address.to_lowercase()))
        })
        .filter(|u| {
            usernames.is_empty()
                || u.username
                    .as_ref()
                    .is_some_and(|n| usernames.contains(&n.to_lowercase()))
        })
        .filter(|u| banned.is_none_or(|b| u.banned == b))
        .filter(|u| created_before.is_none_or(|t| u.created_at < t))
        .filter(|u| created_after.is_none_or(|t| u.created_at > t))
        .filter(|u| query.as_deref().is_none_or(|q| user_matches(u, q)))
        .collect())
}

/// Case-insensitive substring of an e-mail address, username, id, first or last name.
fn user_matches(u: &User, q: &str) -> bool {
    let hit = |s: &str| s.to_lowercase().contains(q);
    hit(&u.id)
        || u.email_addresses.iter().any(|e| hit(&e.email_address))
        || [&u.username, &u.first_name, &u.last_name]
            .into_iter()
            .any(|s| s.as_deref().is_some_and(hit))
}

fn answer(result: Result<Value, ClerkError>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, body.to_string()),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/users`: a bare array.
async fn list_users(State(sim): State<ClerkSim>, RawQuery(q): RawQuery) -> Response {
    answer(users(&sim, &Params::new(q)))
}

fn users(sim: &ClerkSim, p: &Params) -> Result<Value, ClerkError> {
    let (limit, offset) = p.page()?;
    let order = p.order(USER_ORDERS, "-created_at")?;
    let data = sim.state();
    let mut users = filter_users(&data, p)?;
    users.sort_by(|a, b| {
        compare(
            user_key(a, &order.field),
            user_key(b, &order.field),
            &a.id,
            &b.id,
            order.desc,
        )
    });
    let page: Vec<Value> = users
        .iter()
        .skip(offset)
        .take(limit)
        .map(|u| u.to_json())
        .collect();
    Ok(Value::Array(page))
}

/// `GET /v1/users/count`.
async fn count_users(State(sim): State<ClerkSim>, RawQuery(q): RawQuery) -> Response {
    let p = Params::new(q);
    let data = sim.state();
    answer(
        filter_users(&data, &p)
            .map(|users| json!({"object": "total_count", "total_count": users.len()})),
    )
}

/// `GET /v1/users/{user_id}`.
async fn get_user(State(sim): State<ClerkSim>, Path(id): Path<String>) -> Response {
    let data = sim.state();
    answer(
        data.users
            .get(&id)
            .map(User::to_json)
            .ok_or_else(ClerkError::not_found),
    )
}

/// Which computed properties an organization list or GET includes.
fn org_flags(p: &Params) -> Result<(bool, bool), ClerkError> {
    Ok((
        p.flag("include_members_count")?.unwrap_or(false),
        p.flag("include_missing_member_with_elevated_permissions")?
            .unwrap_or(false),
    ))
}

fn org_key<'a>(data: &Data, o: &'a Organization, field: &str) -> Key<'a> {
    match field {
        "name" => Key::Text(Some(&o.name)),
        "members_count" => Key::Int(Some(data.members_count(&o.id) as i64)),
        _ => Key::Int(Some(o.created_at)),
    }
}

/// `GET /v1/organizations`: `{data, total_count}`.
async fn list_organizations(State(sim): State<ClerkSim>, RawQuery(q): RawQuery) -> Response {
    answer(organizations(&sim, &Params::new(q)))
}

fn organizations(sim: &ClerkSim, p: &Params) -> Result<Value, ClerkError> {
    let (limit, offset) = p.page()?;
    let order = p.order(ORGANIZATION_ORDERS, "-created_at")?;
    let (members, admin) = org_flags(p)?;
    let (ids, not_ids) = p.signed("organization_id");
    let (users, _) = p.signed("user_id");
    let query = p
        .first("query")
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let data = sim.state();
    let member_of = |o: &Organization| {
        data.members
            .get(&o.id)
            .is_some_and(|m| m.keys().any(|u| users.contains(u)))
    };
    let mut orgs: Vec<&Organization> = data
        .orgs
        .iter()
        .filter(|o| ids.is_empty() || ids.contains(&o.id))
        .filter(|o| !not_ids.contains(&o.id))
        .filter(|o| users.is_empty() || member_of(o))
        .filter(|o| {
            query.as_deref().is_none_or(|q| {
                o.id == q || o.name.to_lowercase().contains(q) || o.slug.contains(q)
            })
        })
        .collect();
    orgs.sort_by(|a, b| {
        compare(
            org_key(&data, a, &order.field),
            org_key(&data, b, &order.field),
            &a.id,
            &b.id,
            order.desc,
        )
    });
    let page: Vec<Value> = orgs
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| o.to_json(data.org_counts(o, members, admin)))
        .collect();
    Ok(json!({"data": page, "total_count": orgs.len()}))
}

/// `GET /v1/organizations/{organization_id}` (an id or a slug).
async fn get_organization(
    State(sim): State<ClerkSim>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::new(q);
    let data = sim.state();
    answer(org_flags(&p).and_then(|(members, admin)| {
        let org = data.org(&id).ok_or_else(ClerkError::not_found)?;
        Ok(org.to_json(data.org_counts(org, members, admin)))
    }))
}

fn membership_key<'a>(data: &'a Data, m: &'a Membership, field: &str) -> Key<'a> {
    let user = data.users.get(&m.user_id);
    match field {
        "created_at" => Key::Int(Some(m.created_at)),
        "first_name" => Key::Text(user.and_then(|u| u.first_name.as_deref())),
        "last_name" => Key::Text(user.and_then(|u| u.last_name.as_deref())),
        "username" => Key::Text(user.and_then(|u| u.username.as_deref())),
        "email_address" => Key::Text(
            user.and_then(User::primary_email)
                .map(|e| e.email_address.as_str()),
        ),
        _ => Key::Text(None),
    }
}

/// A page of memberships (`{data, total_count}`), ordered and filtered.
fn membership_page(
    data: &Data,
    p: &Params,
    mut list: Vec<&Membership>,
) -> Result<Value, ClerkError> {
    let (limit, offset) = p.page()?;
    let order = p.order(MEMBERSHIP_ORDERS, "-created_at")?;
    let (users, not_users) = p.signed("user_id");
    let roles = p.all("role");
    list.retain(|m| {
        (users.is_empty() || users.contains(&m.user_id))
            && !not_users.contains(&m.user_id)
            && (roles.is_empty() || roles.contains(&m.role.as_str()))
    });
    list.sort_by(|a, b| {
        compare(
            membership_key(data, a, &order.field),
            membership_key(data, b, &order.field),
            &a.id,
            &b.id,
            order.desc,
        )
    });
    let page: Vec<Value> = list
        .iter()
        .skip(offset)
        .take(limit)
        .map(|m| data.membership_json(m))
        .collect();
    Ok(json!({"data": page, "total_count": list.len()}))
}

/// `GET /v1/organization_memberships` (every membership of the instance).
async fn list_memberships(State(sim): State<ClerkSim>, RawQuery(q): RawQuery) -> Response {
    let p = Params::new(q);
    let data = sim.state();
    answer(membership_page(
        &data,
        &p,
        data.memberships.iter().collect(),
    ))
}

/// `GET /v1/organizations/{organization_id}/memberships`.
async fn list_organization_memberships(
    State(sim): State<ClerkSim>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::new(q);
    let data = sim.state();
    let Some(org) = data.org(&id) else {
        return ClerkError::not_found().into_response();
    };
    let list = data
        .members
        .get(&org.id)
        .map(|m| {
            m.values()
                .filter_map(|id| data.memberships.get(id))
                .collect()
        })
        .unwrap_or_default();
    answer(membership_page(&data, &p, list))
}
