//! Random mutations: `mutate(count, seed)` applies `count` mutations drawn from this mix,
//! each picking its objects with a stream of `(config seed, seed)`:
//!
//! | share | mutation |
//! | --- | --- |
//! | 15 % | create a user |
//! | 35 % | update a user: rename, change the primary e-mail (to another of its addresses or a new one), add an address, ban/unban, lock/unlock, change `public_metadata`, change or clear the username, sign in |
//! | 5 % | delete a user |
//! | 5 % | create an organization (a random user becomes its admin) |
//! | 10 % | update an organization: rename, change the slug, `public_metadata`, `max_allowed_memberships` |
//! | 2 % | delete an organization |
//! | 15 % | add a member (10 % as admin) |
//! | 8 % | toggle a member's role |
//! | 5 % | remove a member |
//! | 2 % | invite someone (`organizationInvitation.created` only) |
//!
//! A mutation with nothing to act on (no user left to delete, every organization full, …)
//! creates a user instead. From the same state and seed, the same mutations are made; with a
//! [`ManualClock`](crate::ManualClock), the same events too (timestamps and ids included).

use serde_json::json;

use super::ClerkSim;
use super::error::ClerkError;
use super::events::ClerkEvent;
use super::generate::{
    T_MUTATE, random_name, random_org_name, unique_email, unique_slug, unique_username,
};
use super::inputs::{
    MembershipPatch, NewMembership, NewOrganization, NewUser, OrganizationPatch, UserPatch,
};
use super::model::{ADMIN, MEMBER};
use super::mutations::Tx;
use super::words::{PLANS, REGIONS};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateUser,
    UpdateUser,
    DeleteUser,
    CreateOrg,
    UpdateOrg,
    DeleteOrg,
    AddMember,
    ChangeRole,
    RemoveMember,
    Invite,
}

const MIX: &[(Op, u32)] = &[
    (Op::CreateUser, 15),
    (Op::UpdateUser, 35),
    (Op::DeleteUser, 5),
    (Op::CreateOrg, 5),
    (Op::UpdateOrg, 10),
    (Op::DeleteOrg, 2),
    (Op::AddMember, 15),
    (Op::ChangeRole, 8),
    (Op::RemoveMember, 5),
    (Op::Invite, 2),
];

impl ClerkSim {
    /// Applies `count` random mutations (see the module docs of `clerk::mutate` for the mix)
    /// and returns the events they emitted, in order.
    pub fn mutate(&self, count: usize, seed: u64) -> Vec<ClerkEvent> {
        let mut rng = Rng::new(self.inner.config.seed, T_MUTATE, seed);
        let mut events = Vec::new();
        for _ in 0..count {
            let op = *rng.weighted(MIX);
            match self.transact(|tx| random_op(tx, op, &mut rng)) {
                Ok(((), emitted)) => events.extend(emitted),
                Err(e) => tracing::debug!(?op, error = %e, "random mutation refused"),
            }
        }
        events
    }
}

fn random_op(tx: &mut Tx<'_>, op: Op, rng: &mut Rng) -> Result<(), ClerkError> {
    let done = match op {
        Op::CreateUser => None,
        Op::UpdateUser => pick_user(tx, rng).map(|id| {
            let patch = user_patch(tx, &id, rng);
            tx.update_user(&id, patch)
        }),
        Op::DeleteUser => pick_user(tx, rng).map(|id| tx.delete_user(&id)),
        Op::CreateOrg => pick_user(tx, rng).map(|creator| {
            tx.create_org(NewOrganization {
                created_by: Some(creator),
                ..NewOrganization::default()
            })
        }),
        Op::UpdateOrg => pick_org(tx, rng).map(|id| {
            let patch = org_patch(tx, &id, rng);
            tx.update_org(&id, patch)
        }),
        Op::DeleteOrg => pick_org(tx, rng).map(|id| tx.delete_org(&id)),
        Op::AddMember => new_member(tx, rng).map(|new| tx.create_membership(new)),
        Op::ChangeRole => pick_membership(tx, rng).map(|(id, role)| {
            let role = if role == ADMIN { MEMBER } else { ADMIN };
            tx.update_membership(
                &id,
                MembershipPatch {
                    role: Some(role.to_owned()),
                    ..MembershipPatch::default()
                },
            )
        }),
        Op::RemoveMember => pick_membership(tx, rng).map(|(id, _)| tx.delete_membership(&id)),
        Op::Invite => pick_org(tx, rng).map(|org| {
            let (first, last) = random_name(rng);
            let email = unique_email(tx.state, &[], rng, first.as_deref(), last.as_deref(), true);
            tx.invite(&org, &email, MEMBER)
        }),
    };
    match done {
        Some(result) => result.map(drop),
        None => tx.create_user(NewUser::default()).map(drop),
    }
}

fn pick_user(tx: &Tx<'_>, rng: &mut Rng) -> Option<String> {
    let users = &tx.state.users;
    let i = rng.below(users.len() as u64) as usize;
    users.nth(i).map(|u| u.id.clone())
}

fn pick_org(tx: &Tx<'_>, rng: &mut Rng) -> Option<String> {
    let orgs = &tx.state.orgs;
    let i = rng.below(orgs.len() as u64) as usize;
    orgs.nth(i).map(|o| o.id.clone())
}

/// A membership's id and role.
fn pick_membership(tx: &Tx<'_>, rng: &mut Rng) -> Option<(String, String)> {
    let memberships = &tx.state.memberships;
    let i = rng.below(memberships.len() as u64) as usize;
    memberships.nth(i).map(|m| (m.id.clone(), m.role.clone()))
}

/// A user who is not yet a member of an organization with room (a few tries).
fn new_member(tx: &Tx<'_>, rng: &mut Rng) -> Option<NewMembership> {
    for _ in 0..10 {
        let org = tx
            .state
            .orgs
            .nth(rng.below(tx.state.orgs.len() as u64) as usize)?;
        let limit = org.max_allowed_memberships;
        if limit > 0 && tx.state.members_count(&org.id) as i64 >= limit {
            continue;
        }
        let user = pick_user(tx, rng)?;
        if tx.state.membership_of(&org.id, &user).is_none() {
            let role = if rng.chance(100) { ADMIN } else { MEMBER };
            return Some(NewMembership {
                organization_id: org.id.clone(),
                user_id: user,
                role: Some(role.to_owned()),
                public_metadata: None,
            });
        }
    }
    None
}

fn user_patch(tx: &Tx<'_>, id: &str, rng: &mut Rng) -> UserPatch {
    let Some(user) = tx.state.users.get(id) else {
        return UserPatch::default();
    };
    let mut patch = UserPatch::default();
    let new_email = |rng: &mut Rng, work: bool| {
        unique_email(
            tx.state,
            &[],
            rng,
            user.first_name.as_deref(),
            user.last_name.as_deref(),
            work,
        )
    };
    match rng.below(100) {
        0..25 => {
            let (first, last) = random_name(rng);
            (patch.first_name, patch.last_name) = (Some(first), Some(last));
        }
        25..40 => {
            let others: Vec<&str> = user
                .email_addresses
                .iter()
                .map(|e| e.id.as_str())
                .filter(|e| Some(*e) != user.primary_email_address_id.as_deref())
                .collect();
            match others.is_empty() {
                true => patch.primary_email_address = Some(new_email(rng, false)),
                false => {
                    patch.primary_email_address_id = Some((*rng.pick(&others)).to_owned());
                }
            }
        }
        40..50 => patch.add_email_address = Some(new_email(rng, true)),
        50..60 => patch.banned = Some(!user.banned),
        60..65 => patch.locked = Some(!user.locked),
        65..80 => {
            let mut metadata = user.public_metadata.clone();
            metadata.insert("plan".into(), json!(rng.pick(PLANS)));
            patch.public_metadata = Some(metadata);
        }
        80..90 => {
            patch.username = Some(match user.username.is_some() && rng.chance(300) {
                true => None,
                false => Some(unique_username(
                    tx.state,
                    rng,
                    user.first_name.as_deref(),
                    user.last_name.as_deref(),
                )),
            });
        }
        _ => patch.signed_in = true,
    }
    patch
}

fn org_patch(tx: &Tx<'_>, id: &str, rng: &mut Rng) -> OrganizationPatch {
    let Some(org) = tx.state.orgs.get(id) else {
        return OrganizationPatch::default();
    };
    let mut patch = OrganizationPatch::default();
    match rng.below(100) {
        0..40 => patch.name = Some(random_org_name(rng)),
        40..55 => {
            let name = random_org_name(rng);
            patch.slug = Some(unique_slug(tx.state, &name));
        }
        55..85 => {
            let mut metadata = org.public_metadata.clone();
            metadata.insert("region".into(), json!(rng.pick(REGIONS)));
            patch.public_metadata = Some(metadata);
        }
        _ => {
            let members = tx.state.members_count(id) as i64;
            let limit = *rng.pick(&[0, 50, 100]);
            patch.max_allowed_memberships = Some(if limit == 0 { 0 } else { limit.max(members) });
        }
    }
    patch
}
