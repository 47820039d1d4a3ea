//! What the mutations take: the bodies of the control API's `POST` and `PATCH` requests, also
//! used by the library methods. Unknown fields are refused; in a patch an absent field stays
//! as it is and `null` clears a nullable one.

use serde::Deserialize;

use super::model::Metadata;

/// Deserializes a present field (`null` included) as `Some`: `Option<Option<T>>` tells an
/// absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A user to create (`POST /control/users`). Absent fields are generated as for a sign-up.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewUser {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    /// E-mail addresses (created verified, the first is primary).
    pub email_address: Vec<String>,
    pub external_id: Option<String>,
    pub public_metadata: Option<Metadata>,
    pub private_metadata: Option<Metadata>,
    pub unsafe_metadata: Option<Metadata>,
    pub banned: Option<bool>,
}

/// Changes to a user (`PATCH /control/users/{id}`); absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserPatch {
    #[serde(deserialize_with = "nullable")]
    pub first_name: Option<Option<String>>,
    #[serde(deserialize_with = "nullable")]
    pub last_name: Option<Option<String>>,
    #[serde(deserialize_with = "nullable")]
    pub username: Option<Option<String>>,
    #[serde(deserialize_with = "nullable")]
    pub external_id: Option<Option<String>>,
    /// One of the user's e-mail address ids.
    pub primary_email_address_id: Option<String>,
    /// Makes this address primary, adding it (verified) if the user does not have it.
    pub primary_email_address: Option<String>,
    /// Adds a verified address (not primary).
    pub add_email_address: Option<String>,
    pub public_metadata: Option<Metadata>,
    pub private_metadata: Option<Metadata>,
    pub unsafe_metadata: Option<Metadata>,
    pub banned: Option<bool>,
    pub locked: Option<bool>,
    /// Records a sign-in now (`last_sign_in_at`, `last_active_at`).
    pub signed_in: bool,
}

/// An organization to create (`POST /control/organizations`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewOrganization {
    /// Generated when absent.
    pub name: Option<String>,
    /// Derived from the name when absent.
    pub slug: Option<String>,
    /// A user id: becomes the organization's admin.
    pub created_by: Option<String>,
    pub max_allowed_memberships: Option<i64>,
    pub public_metadata: Option<Metadata>,
    pub private_metadata: Option<Metadata>,
}

/// Changes to an organization (`PATCH /control/organizations/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrganizationPatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub max_allowed_memberships: Option<i64>,
    pub admin_delete_enabled: Option<bool>,
    pub public_metadata: Option<Metadata>,
    pub private_metadata: Option<Metadata>,
}

/// A membership to create (`POST /control/memberships`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewMembership {
    /// Id or slug.
    pub organization_id: String,
    pub user_id: String,
    /// `org:member` when absent.
    pub role: Option<String>,
    pub public_metadata: Option<Metadata>,
}

/// Changes to a membership (`PATCH /control/memberships/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipPatch {
    pub role: Option<String>,
    pub public_metadata: Option<Metadata>,
    pub private_metadata: Option<Metadata>,
}
