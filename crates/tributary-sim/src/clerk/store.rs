//! The simulator's in-memory state: users, organizations and memberships in insertion-ordered
//! tables, the indexes that keep identifiers unique (e-mail addresses, usernames, slugs) and
//! memberships reachable from both sides, the deleted ids, and the event log.
//!
//! Iteration orders are deterministic (no hash-map iteration anywhere a choice depends on it),
//! so the random mutations of a seed pick the same objects on every run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::events::ClerkEvent;
use super::ids::GENERATED_END_MS;
use super::model::{ADMIN, Membership, OrgCounts, Organization, User};

/// Something stored in a [`Table`] under its id.
pub(crate) trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for User {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Organization {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Membership {
    fn key(&self) -> &str {
        &self.id
    }
}

/// Rows by id, in a vector whose order depends only on the sequence of inserts and removes
/// (a removal moves the last row into the hole): `nth` is a deterministic random pick.
#[derive(Debug)]
pub(crate) struct Table<T> {
    rows: Vec<T>,
    position: HashMap<String, usize>,
}

impl<T: Keyed> Default for Table<T> {
    fn default() -> Self {
        Table {
            rows: Vec::new(),
            position: HashMap::new(),
        }
    }
}

impl<T: Keyed> Table<T> {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.position.get(id).map(|&i| &self.rows[i])
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.position.get(id).map(|&i| &mut self.rows[i])
    }

    /// Inserts `row`, replacing a row with the same id.
    pub(crate) fn insert(&mut self, row: T) {
        match self.position.get(row.key()) {
            Some(&i) => self.rows[i] = row,
            None => {
                self.position.insert(row.key().to_owned(), self.rows.len());
                self.rows.push(row);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        let i = self.position.remove(id)?;
        let row = self.rows.swap_remove(i);
        if let Some(moved) = self.rows.get(i) {
            self.position.insert(moved.key().to_owned(), i);
        }
        Some(row)
    }

    pub(crate) fn nth(&self, i: usize) -> Option<&T> {
        self.rows.get(i)
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.rows.iter()
    }
}

/// The kinds of objects the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClerkKind {
    User,
    Organization,
    OrganizationMembership,
}

/// Ids of deleted objects, in the order they were deleted (memberships removed by a user's or
/// an organization's deletion included).
#[derive(Debug, Default, Clone)]
pub(crate) struct Deleted {
    pub(crate) users: Vec<String>,
    pub(crate) organizations: Vec<String>,
    pub(crate) memberships: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) users: Table<User>,
    pub(crate) orgs: Table<Organization>,
    pub(crate) memberships: Table<Membership>,
    /// slug → organization id.
    pub(crate) slugs: HashMap<String, String>,
    /// Lowercased e-mail address → user id.
    pub(crate) emails: HashMap<String, String>,
    /// Lowercased username → user id.
    pub(crate) usernames: HashMap<String, String>,
    /// organization id → user id → membership id.
    pub(crate) members: HashMap<String, BTreeMap<String, String>>,
    /// user id → organization ids.
    pub(crate) user_orgs: HashMap<String, BTreeSet<String>>,
    pub(crate) deleted: Deleted,
    /// Every event emitted, in order.
    pub(crate) events: Vec<ClerkEvent>,
    /// The last mutation's timestamp (ms).
    pub(crate) last_ms: i64,
    /// Objects created by mutations so far (the index of their random streams).
    pub(crate) serial: u64,
    /// Successful mutations so far.
    pub(crate) mutations: u64,
}

impl State {
    /// The timestamp of a new mutation: the clock's `now_ms`, but at least 1 ms after the
    /// previous mutation and after the generated data.
    pub(crate) fn tick(&mut self, now_ms: i64) -> i64 {
        let ms = now_ms.max(self.last_ms + 1).max(GENERATED_END_MS + 1);
        self.last_ms = ms;
        self.mutations += 1;
        ms
    }

    /// The next index of a created object's random stream.
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    // ---- users ----

    pub(crate) fn insert_user(&mut self, user: User) {
        if let Some(old) = self.users.get(&user.id) {
            let old = old.clone();
            self.unindex_user(&old);
        }
        for email in &user.email_addresses {
            self.emails
                .insert(email.email_address.to_lowercase(), user.id.clone());
        }
        if let Some(username) = &user.username {
            self.usernames
                .insert(username.to_lowercase(), user.id.clone());
        }
        self.users.insert(user);
    }

    fn unindex_user(&mut self, user: &User) {
        for email in &user.email_addresses {
            self.emails.remove(&email.email_address.to_lowercase());
        }
        if let Some(username) = &user.username {
            self.usernames.remove(&username.to_lowercase());
        }
    }

    /// Removes a user, its identifiers and its memberships (no events); returns the user and
    /// the organizations it was a member of.
    pub(crate) fn remove_user(&mut self, id: &str) -> Option<(User, BTreeSet<String>)> {
        let user = self.users.remove(id)?;
        self.unindex_user(&user);
        let orgs = self.user_orgs.remove(id).unwrap_or_default();
        for org in &orgs {
            if let Some(membership) = self.members.get_mut(org).and_then(|m| m.remove(id)) {
                self.memberships.remove(&membership);
                self.deleted.memberships.push(membership);
            }
        }
        self.deleted.users.push(user.id.clone());
        Some((user, orgs))
    }

    /// Whether `email` belongs to a user other than `except`.
    pub(crate) fn email_taken(&self, email: &str, except: Option<&str>) -> bool {
        self.emails
            .get(&email.to_lowercase())
            .is_some_and(|owner| Some(owner.as_str()) != except)
    }

    /// Whether `username` belongs to a user other than `except`.
    pub(crate) fn username_taken(&self, username: &str, except: Option<&str>) -> bool {
        self.usernames
            .get(&username.to_lowercase())
            .is_some_and(|owner| Some(owner.as_str()) != except)
    }

    // ---- organizations ----

    pub(crate) fn insert_org(&mut self, org: Organization) {
        if let Some(old) = self.orgs.get(&org.id) {
            let old_slug = old.slug.clone();
            self.slugs.remove(&old_slug);
        }
        self.slugs.insert(org.slug.clone(), org.id.clone());
        self.members.entry(org.id.clone()).or_default();
        self.orgs.insert(org);
    }

    /// An organization by id or slug.
    pub(crate) fn org(&self, id_or_slug: &str) -> Option<&Organization> {
        self.orgs
            .get(id_or_slug)
            .or_else(|| self.slugs.get(id_or_slug).and_then(|id| self.orgs.get(id)))
    }

    /// Removes an organization and its memberships (no events).
    pub(crate) fn remove_org(&mut self, id: &str) -> Option<Organization> {
        let org = self.orgs.remove(id)?;
        self.slugs.remove(&org.slug);
        for (user, membership) in self.members.remove(id).unwrap_or_default() {
            if let Some(orgs) = self.user_orgs.get_mut(&user) {
                orgs.remove(id);
            }
            self.memberships.remove(&membership);
            self.deleted.memberships.push(membership);
        }
        self.deleted.organizations.push(org.id.clone());
        Some(org)
    }

    pub(crate) fn members_count(&self, org: &str) -> usize {
        self.members.get(org).map_or(0, BTreeMap::len)
    }

    /// Whether no member of `org` is an admin.
    pub(crate) fn missing_admin(&self, org: &str) -> bool {
        !self.members.get(org).is_some_and(|m| {
            m.values()
                .filter_map(|id| self.memberships.get(id))
                .any(|m| m.role == ADMIN)
        })
    }

    /// The organization's JSON with both computed properties.
    pub(crate) fn org_json(&self, org: &Organization) -> Value {
        org.to_json(self.org_counts(org, true, true))
    }

    pub(crate) fn org_counts(&self, org: &Organization, members: bool, admin: bool) -> OrgCounts {
        OrgCounts {
            members_count: members.then(|| self.members_count(&org.id)),
            missing_admin: admin.then(|| self.missing_admin(&org.id)),
        }
    }

    // ---- memberships ----

    pub(crate) fn insert_membership(&mut self, membership: Membership) {
        self.members
            .entry(membership.organization_id.clone())
            .or_default()
            .insert(membership.user_id.clone(), membership.id.clone());
        self.user_orgs
            .entry(membership.user_id.clone())
            .or_default()
            .insert(membership.organization_id.clone());
        self.memberships.insert(membership);
    }

    pub(crate) fn remove_membership(&mut self, id: &str) -> Option<Membership> {
        let membership = self.memberships.remove(id)?;
        if let Some(members) = self.members.get_mut(&membership.organization_id) {
            members.remove(&membership.user_id);
        }
        if let Some(orgs) = self.user_orgs.get_mut(&membership.user_id) {
            orgs.remove(&membership.organization_id);
        }
        self.deleted.memberships.push(membership.id.clone());
        Some(membership)
    }

    /// The membership of `user` in `org`, if any.
    pub(crate) fn membership_of(&self, org: &str, user: &str) -> Option<&Membership> {
        let id = self.members.get(org)?.get(user)?;
        self.memberships.get(id)
    }

    /// The membership's JSON with its organization (with `members_count`) and its user's
    /// public data as they are now.
    pub(crate) fn membership_json(&self, membership: &Membership) -> Value {
        let organization = self
            .orgs
            .get(&membership.organization_id)
            .map_or(Value::Null, |o| self.org_json(o));
        let user = self
            .users
            .get(&membership.user_id)
            .map_or(Value::Null, User::public_user_data);
        membership.to_json(organization, user)
    }
}
