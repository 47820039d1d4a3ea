//! Mutations: what they change, the events they emit (in order) and their cascades.
//!
//! | mutation | events |
//! | --- | --- |
//! | create a user | `user.created` |
//! | update a user | `user.updated` |
//! | delete a user | `user.deleted`, then `organization.deleted` for each organization it leaves without members (its memberships go silently) |
//! | create an organization | `organization.created`, then `organizationMembership.created` for its creator (`created_by`, as admin) |
//! | update an organization | `organization.updated` |
//! | delete an organization | `organization.deleted` (its memberships go silently) |
//! | add a member | `organizationMembership.created` |
//! | change a member's role or metadata | `organizationMembership.updated` |
//! | remove a member | `organizationMembership.deleted`, then `organization.deleted` if nobody is left |
//! | invite someone | `organizationInvitation.created` (nothing else changes) |
//!
//! `members_count` is computed, as in Clerk: adding or removing a member does not touch the
//! organization's `updated_at` and emits no `organization.updated` — the membership event
//! carries the organization with its new `members_count`, and a user's deletion lowers the
//! counts of its other organizations without any event. With
//! [`ClerkConfig::organization_updated_on_membership_change`](super::ClerkConfig) set, every
//! such change (a user's deletion included) also bumps the organization's `updated_at` and
//! emits `organization.updated` after the membership (or user) event. Likewise a user's
//! update changes the `public_user_data` of its memberships without touching them.
//!
//! Every mutation takes one timestamp from the simulator's clock, at least 1 ms after the
//! previous mutation's: `updated_at` of a mutated object is strictly increasing.

use serde_json::Value;

use super::ClerkSim;
use super::error::ClerkError;
use super::events::ClerkEvent;
use super::generate::{T_NEW, email_address, random_user};
use super::ids::{day_floor, prefixed};
use super::inputs::{NewUser, UserPatch};
use super::model::Strategy;
use super::store::State;
use crate::rng::Rng;

/// One mutation in progress, under the state's lock: it validates before it changes anything,
/// and collects the events it emits.
pub(crate) struct Tx<'a> {
    pub(crate) state: &'a mut State,
    /// The mutation's timestamp (ms).
    pub(crate) ms: i64,
    seed: u64,
    instance_id: &'a str,
    org_events_on_membership_change: bool,
    pub(crate) events: Vec<ClerkEvent>,
}

impl<'a> Tx<'a> {
    /// A random stream for the next created object.
    pub(crate) fn fresh_rng(&mut self) -> Rng {
        let serial = self.state.next_serial();
        Rng::new(self.seed, T_NEW, serial)
    }

    pub(crate) fn emit(&mut self, event_type: &str, data: Value) {
        let n = (self.state.events.len() + self.events.len()) as u64;
        let id = prefixed(
            "msg",
            self.ms,
            &mut Rng::new(self.seed, T_NEW ^ 0x6D73_6700, n),
        );
        self.events.push(ClerkEvent {
            id,
            event_type: event_type.to_owned(),
            timestamp: self.ms,
            data,
            instance_id: self.instance_id.to_owned(),
        });
    }

    fn user_json(&self, id: &str) -> Result<Value, ClerkError> {
        let user = self.state.users.get(id).ok_or_else(ClerkError::not_found)?;
        Ok(user.to_json())
    }

    pub(crate) fn org_json(&self, id: &str) -> Result<Value, ClerkError> {
        let org = self.state.orgs.get(id).ok_or_else(ClerkError::not_found)?;
        Ok(self.state.org_json(org))
    }

    pub(crate) fn membership_json(&self, id: &str) -> Result<Value, ClerkError> {
        let m = self
            .state
            .memberships
            .get(id)
            .ok_or_else(ClerkError::not_found)?;
        Ok(self.state.membership_json(m))
    }

    fn check_email_free(&self, email: &str, owner: Option<&str>) -> Result<(), ClerkError> {
        if !email.contains('@') {
            return Err(ClerkError::invalid_param(
                "email_address",
                format!("{email:?} is not an e-mail address"),
            ));
        }
        match self.state.email_taken(email, owner) {
            true => Err(ClerkError::identifier_exists(
                "email_address",
                format!("{email} is taken by another user"),
            )),
            false => Ok(()),
        }
    }

    pub(crate) fn create_user(&mut self, new: NewUser) -> Result<Value, ClerkError> {
        for (i, email) in new.email_address.iter().enumerate() {
            self.check_email_free(email, None)?;
            if new.email_address[..i]
                .iter()
                .any(|e| e.eq_ignore_ascii_case(email))
            {
                return Err(ClerkError::identifier_exists(
                    "email_address",
                    format!("{email} is given twice"),
                ));
            }
        }
        if let Some(username) = &new.username
            && self.state.username_taken(username, None)
        {
            return Err(ClerkError::identifier_exists(
                "username",
                format!("{username} is taken"),
            ));
        }
        let mut rng = self.fresh_rng();
        let ms = self.ms;
        let mut user = random_user(self.state, &mut rng, ms, ms);
        if !new.email_address.is_empty() {
            user.email_addresses = new
                .email_address
                .into_iter()
                .map(|address| {
                    let mut email = email_address(&mut rng, address, ms, 1000);
                    email.strategy = Strategy::Admin;
                    email
                })
                .collect();
            user.primary_email_address_id = user.email_addresses.first().map(|e| e.id.clone());
        }
        user.first_name = new.first_name.or(user.first_name);
        user.last_name = new.last_name.or(user.last_name);
        user.username = new.username.or(user.username);
        user.external_id = new.external_id.or(user.external_id);
        user.public_metadata = new.public_metadata.unwrap_or(user.public_metadata);
        user.private_metadata = new.private_metadata.unwrap_or(user.private_metadata);
        user.unsafe_metadata = new.unsafe_metadata.unwrap_or(user.unsafe_metadata);
        user.banned = new.banned.unwrap_or(false);
        user.locked = false;
        let id = user.id.clone();
        self.state.insert_user(user);
        let json = self.user_json(&id)?;
        self.emit("user.created", json.clone());
        Ok(json)
    }

    pub(crate) fn update_user(&mut self, id: &str, patch: UserPatch) -> Result<Value, ClerkError> {
        let mut user = self
            .state
            .users
            .get(id)
            .cloned()
            .ok_or_else(ClerkError::not_found)?;
        if let Some(Some(username)) = &patch.username
            && self.state.username_taken(username, Some(id))
        {
            return Err(ClerkError::identifier_exists(
                "username",
                format!("{username} is taken"),
            ));
        }
        let ms = self.ms;
        let add = |user: &mut super::model::User, this: &mut Self, address: &str| {
            if let Some(e) = user
                .email_addresses
                .iter()
                .find(|e| e.email_address.eq_ignore_ascii_case(address))
            {
                return Ok(e.id.clone());
            }
            this.check_email_free(address, Some(id))?;
            let mut email = email_address(&mut this.fresh_rng(), address.to_owned(), ms, 1000);
            email.strategy = Strategy::Admin;
            let email_id = email.id.clone();
            user.email_addresses.push(email);
            Ok::<_, ClerkError>(email_id)
        };
        if let Some(address) = &patch.add_email_address {
            add(&mut user, self, address)?;
        }
        if let Some(address) = &patch.primary_email_address {
            user.primary_email_address_id = Some(add(&mut user, self, address)?);
        }
        if let Some(primary) = patch.primary_email_address_id {
            if !user.email_addresses.iter().any(|e| e.id == primary) {
                return Err(ClerkError::invalid_param(
                    "primary_email_address_id",
                    format!("{primary} is not one of the user's e-mail addresses"),
                ));
            }
            user.primary_email_address_id = Some(primary);
        }
        let keep = |field: Option<Option<String>>, old: Option<String>| field.unwrap_or(old);
        user.first_name = keep(patch.first_name, user.first_name);
        user.last_name = keep(patch.last_name, user.last_name);
        user.username = keep(patch.username, user.username);
        user.external_id = keep(patch.external_id, user.external_id);
        user.public_metadata = patch.public_metadata.unwrap_or(user.public_metadata);
        user.private_metadata = patch.private_metadata.unwrap_or(user.private_metadata);
        user.unsafe_metadata = patch.unsafe_metadata.unwrap_or(user.unsafe_metadata);
        user.banned = patch.banned.unwrap_or(user.banned);
        user.locked = patch.locked.unwrap_or(user.locked);
        if patch.signed_in {
            user.last_sign_in_at = Some(ms);
            user.last_active_at = Some(day_floor(ms));
        }
        user.updated_at = ms;
        self.state.insert_user(user);
        let json = self.user_json(id)?;
        self.emit("user.updated", json.clone());
        Ok(json)
    }

    pub(crate) fn delete_user(&mut self, id: &str) -> Result<Value, ClerkError> {
        let (user, orgs) = self
            .state
            .remove_user(id)
            .ok_or_else(ClerkError::not_found)?;
        let deleted = user.deleted_json();
        self.emit("user.deleted", deleted.clone());
        for org in orgs {
            self.after_membership_change(&org);
        }
        Ok(deleted)
    }

    /// After a member left `org`: deletes it when nobody is left, else (with the knob) bumps
    /// it and emits `organization.updated`.
    pub(crate) fn after_membership_change(&mut self, org: &str) {
        if self.state.orgs.get(org).is_none() {
            return;
        }
        if self.state.members_count(org) == 0 {
            if let Some(org) = self.state.remove_org(org) {
                self.emit("organization.deleted", org.deleted_json());
            }
        } else {
            self.bump_org_for_members(org);
        }
    }

    pub(crate) fn bump_org_for_members(&mut self, org: &str) {
        if !self.org_events_on_membership_change {
            return;
        }
        let ms = self.ms;
        if let Some(o) = self.state.orgs.get_mut(org) {
            o.updated_at = ms;
        }
        if let Ok(json) = self.org_json(org) {
            self.emit("organization.updated", json);
        }
    }
}

impl ClerkSim {
    /// Runs one mutation under the state's lock: on success its timestamp is taken, its events
    /// are logged and queued for the webhook endpoints (in order); on error nothing changed.
    pub(crate) fn transact<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, ClerkError>,
    ) -> Result<(T, Vec<ClerkEvent>), ClerkError> {
        let now = self.now_ms();
        let mut state = self.state();
        let (ms, mutations) = (state.last_ms, state.mutations);
        let mut tx = Tx {
            ms: state.tick(now),
            state: &mut state,
            seed: self.inner.config.seed,
            instance_id: &self.inner.instance_id,
            org_events_on_membership_change: self
                .inner
                .config
                .organization_updated_on_membership_change,
            events: Vec::new(),
        };
        let out = f(&mut tx);
        let events = std::mem::take(&mut tx.events);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                (state.last_ms, state.mutations) = (ms, mutations);
                return Err(e);
            }
        };
        for event in &events {
            self.inner.webhooks.enqueue(event);
        }
        state.events.extend(events.iter().cloned());
        Ok((out, events))
    }

    /// Creates a user; returns it as the API serves it. Emits `user.created`.
    pub fn create_user(&self, new: NewUser) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.create_user(new)).map(|(v, _)| v)
    }

    /// Updates a user. Emits `user.updated`.
    pub fn update_user(&self, id: &str, patch: UserPatch) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.update_user(id, patch))
            .map(|(v, _)| v)
    }

    /// Deletes a user and its memberships; returns the `DeletedObject`. Emits `user.deleted`
    /// (and `organization.deleted` for organizations left without members).
    pub fn delete_user(&self, id: &str) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.delete_user(id)).map(|(v, _)| v)
    }
}
