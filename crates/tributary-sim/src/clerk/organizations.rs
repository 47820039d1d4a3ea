//! Mutations of organizations and memberships, and invitations (see `mutations` for the
//! events and cascades).

use serde_json::{Value, json};

use super::ClerkSim;
use super::error::ClerkError;
use super::generate::{new_membership, random_org, unique_slug};
use super::ids::prefixed;
use super::inputs::{MembershipPatch, NewMembership, NewOrganization, OrganizationPatch};
use super::model::{ADMIN, MEMBER, role_facts};
use super::mutations::Tx;

fn check_role(role: &str) -> Result<(), ClerkError> {
    match role.strip_prefix("org:") {
        Some(key) if !key.is_empty() => Ok(()),
        _ => Err(ClerkError::invalid_param(
            "role",
            format!("{role:?} is not a role key such as org:admin or org:member"),
        )),
    }
}

fn check_slug(slug: &str) -> Result<(), ClerkError> {
    let ok = !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(ClerkError::invalid_param(
            "slug",
            "slug can contain only lowercase alphanumeric characters and the dash \"-\"",
        )),
    }
}

impl Tx<'_> {
    pub(crate) fn create_org(&mut self, new: NewOrganization) -> Result<Value, ClerkError> {
        if let Some(slug) = &new.slug {
            check_slug(slug)?;
            if self.state.slugs.contains_key(slug) {
                return Err(ClerkError::identifier_exists(
                    "slug",
                    format!("the slug {slug} is taken"),
                ));
            }
        }
        if let Some(creator) = &new.created_by
            && self.state.users.get(creator).is_none()
        {
            return Err(ClerkError::invalid_param(
                "created_by",
                format!("no user {creator}"),
            ));
        }
        let mut rng = self.fresh_rng();
        let ms = self.ms;
        let mut org = random_org(self.state, &mut rng, ms, ms, new.created_by.as_deref());
        if let Some(name) = new.name {
            org.slug = new.slug.unwrap_or_else(|| unique_slug(self.state, &name));
            org.name = name;
        } else if let Some(slug) = new.slug {
            org.slug = slug;
        }
        org.max_allowed_memberships = new
            .max_allowed_memberships
            .unwrap_or(org.max_allowed_memberships)
            .max(0);
        org.public_metadata = new.public_metadata.unwrap_or(org.public_metadata);
        org.private_metadata = new.private_metadata.unwrap_or(org.private_metadata);
        org.pending_invitations_count = 0;
        let org_id = org.id.clone();
        self.state.insert_org(org);
        let admin = new
            .created_by
            .map(|user| new_membership(&mut rng, &org_id, &user, ADMIN, ms, ms));
        let admin_id = admin.as_ref().map(|m| m.id.clone());
        if let Some(admin) = admin {
            self.state.insert_membership(admin);
        }
        let json = self.org_json(&org_id)?;
        self.emit("organization.created", json.clone());
        if let Some(admin_id) = admin_id {
            let membership = self.membership_json(&admin_id)?;
            self.emit("organizationMembership.created", membership);
        }
        Ok(json)
    }

    fn org_id(&self, id_or_slug: &str) -> Result<String, ClerkError> {
        self.state
            .org(id_or_slug)
            .map(|o| o.id.clone())
            .ok_or_else(ClerkError::not_found)
    }

    pub(crate) fn update_org(
        &mut self,
        id_or_slug: &str,
        patch: OrganizationPatch,
    ) -> Result<Value, ClerkError> {
        let id = self.org_id(id_or_slug)?;
        let mut org = self
            .state
            .orgs
            .get(&id)
            .cloned()
            .ok_or_else(ClerkError::not_found)?;
        if let Some(slug) = &patch.slug {
            check_slug(slug)?;
            if self.state.slugs.get(slug).is_some_and(|owner| *owner != id) {
                return Err(ClerkError::identifier_exists(
                    "slug",
                    format!("the slug {slug} is taken"),
                ));
            }
        }
        org.name = patch.name.unwrap_or(org.name);
        org.slug = patch.slug.unwrap_or(org.slug);
        org.max_allowed_memberships = patch
            .max_allowed_memberships
            .map_or(org.max_allowed_memberships, |n| n.max(0));
        org.admin_delete_enabled = patch
            .admin_delete_enabled
            .unwrap_or(org.admin_delete_enabled);
        org.public_metadata = patch.public_metadata.unwrap_or(org.public_metadata);
        org.private_metadata = patch.private_metadata.unwrap_or(org.private_metadata);
        org.updated_at = self.ms;
        self.state.insert_org(org);
        let json = self.org_json(&id)?;
        self.emit("organization.updated", json.clone());
        Ok(json)
    }

    pub(crate) fn delete_org(&mut self, id_or_slug: &str) -> Result<Value, ClerkError> {
        let id = self.org_id(id_or_slug)?;
        let org = self
            .state
            .remove_org(&id)
            .ok_or_else(ClerkError::not_found)?;
        let deleted = org.deleted_json();
        self.emit("organization.deleted", deleted.clone());
        Ok(deleted)
    }

    pub(crate) fn create_membership(&mut self, new: NewMembership) -> Result<Value, ClerkError> {
        let org_id = self.org_id(&new.organization_id)?;
        let role = new.role.unwrap_or_else(|| MEMBER.to_owned());
        check_role(&role)?;
        if self.state.users.get(&new.user_id).is_none() {
            return Err(ClerkError::invalid_param(
                "user_id",
                format!("no user {}", new.user_id),
            ));
        }
        if self.state.membership_of(&org_id, &new.user_id).is_some() {
            return Err(ClerkError {
                param_name: Some("user_id".into()),
                ..ClerkError::new(
                    422,
                    "already_a_member_in_organization",
                    "already a member",
                    format!("{} is already a member of {org_id}", new.user_id),
                )
            });
        }
        let limit = self
            .state
            .orgs
            .get(&org_id)
            .map_or(0, |o| o.max_allowed_memberships);
        if limit > 0 && self.state.members_count(&org_id) as i64 >= limit {
            return Err(ClerkError::new(
                403,
                "organization_membership_quota_exceeded",
                "Membership quota exceeded",
                format!("{org_id} allows at most {limit} memberships"),
            ));
        }
        let mut rng = self.fresh_rng();
        let mut membership =
            new_membership(&mut rng, &org_id, &new.user_id, &role, self.ms, self.ms);
        membership.public_metadata = new.public_metadata.unwrap_or_default();
        let id = membership.id.clone();
        self.state.insert_membership(membership);
        let json = self.membership_json(&id)?;
        self.emit("organizationMembership.created", json.clone());
        self.bump_org_for_members(&org_id);
        Ok(json)
    }

    pub(crate) fn update_membership(
        &mut self,
        id: &str,
        patch: MembershipPatch,
    ) -> Result<Value, ClerkError> {
        let mut membership = self
            .state
            .memberships
            .get(id)
            .cloned()
            .ok_or_else(ClerkError::not_found)?;
        if let Some(role) = &patch.role {
            check_role(role)?;
        }
        membership.role = patch.role.unwrap_or(membership.role);
        membership.public_metadata = patch.public_metadata.unwrap_or(membership.public_metadata);
        membership.private_metadata = patch
            .private_metadata
            .unwrap_or(membership.private_metadata);
        membership.updated_at = self.ms;
        self.state.insert_membership(membership);
        let json = self.membership_json(id)?;
        self.emit("organizationMembership.updated", json.clone());
        Ok(json)
    }

    pub(crate) fn delete_membership(&mut self, id: &str) -> Result<Value, ClerkError> {
        let membership = self
            .state
            .remove_membership(id)
            .ok_or_else(ClerkError::not_found)?;
        let json = self.state.membership_json(&membership);
        self.emit("organizationMembership.deleted", json.clone());
        self.after_membership_change(&membership.organization_id);
        Ok(json)
    }

    /// Emits `organizationInvitation.created` for `email` to `org`, from one of its admins.
    pub(crate) fn invite(
        &mut self,
        org: &str,
        email: &str,
        role: &str,
    ) -> Result<Value, ClerkError> {
        let org_id = self.org_id(org)?;
        check_role(role)?;
        let inviter = self.state.members.get(&org_id).and_then(|members| {
            members
                .values()
                .filter_map(|m| self.state.memberships.get(m))
                .find(|m| m.role == ADMIN)
                .and_then(|m| self.state.users.get(&m.user_id))
        });
        let public_inviter_data = inviter.map(|u| {
            json!({"user_id": u.id, "first_name": u.first_name, "last_name": u.last_name,
                "image_url": u.image_url, "has_image": u.has_image,
                "identifier": u.identifier().unwrap_or(&u.id)})
        });
        let inviter_id = inviter.map(|u| u.id.clone());
        let mut rng = self.fresh_rng();
        let id = prefixed("orginv", self.ms, &mut rng);
        let (role_name, _) = role_facts(role);
        let data = json!({
            "object": "organization_invitation",
            "id": id,
            "email_address": email,
            "role": role,
            "role_name": role_name,
            "organization_id": org_id,
            "inviter_id": inviter_id,
            "public_inviter_data": public_inviter_data,
            "status": "pending",
            "public_metadata": {},
            "private_metadata": {},
            "url": null,
            "expires_at": self.ms + 30 * 86_400_000,
            "created_at": self.ms,
            "updated_at": self.ms,
        });
        self.emit("organizationInvitation.created", data.clone());
        Ok(data)
    }
}

impl ClerkSim {
    /// Creates an organization (and its creator's admin membership).
    pub fn create_organization(&self, new: NewOrganization) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.create_org(new)).map(|(v, _)| v)
    }

    /// Updates an organization (by id or slug). Emits `organization.updated`.
    pub fn update_organization(
        &self,
        id_or_slug: &str,
        patch: OrganizationPatch,
    ) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.update_org(id_or_slug, patch))
            .map(|(v, _)| v)
    }

    /// Deletes an organization and its memberships. Emits `organization.deleted` only.
    pub fn delete_organization(&self, id_or_slug: &str) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.delete_org(id_or_slug))
            .map(|(v, _)| v)
    }

    /// Adds a member. Emits `organizationMembership.created`.
    pub fn create_membership(&self, new: NewMembership) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.create_membership(new))
            .map(|(v, _)| v)
    }

    /// Changes a membership's role or metadata. Emits `organizationMembership.updated`.
    pub fn update_membership(&self, id: &str, patch: MembershipPatch) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.update_membership(id, patch))
            .map(|(v, _)| v)
    }

    /// Removes a member; returns the membership as it was. Emits
    /// `organizationMembership.deleted` (and `organization.deleted` if nobody is left).
    pub fn delete_membership(&self, id: &str) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.delete_membership(id)).map(|(v, _)| v)
    }

    /// Invites `email` to an organization (id or slug) with `role`: emits
    /// `organizationInvitation.created` and changes nothing else. Returns the invitation.
    pub fn invite(&self, organization: &str, email: &str, role: &str) -> Result<Value, ClerkError> {
        self.transact(|tx| tx.invite(organization, email, role))
            .map(|(v, _)| v)
    }
}
