//! The simulated objects (users with their e-mail addresses, organizations, memberships) and
//! their JSON as Clerk's Backend API serves it (`User`, `EmailAddress`, `Organization`,
//! `OrganizationMembership`, `DeletedObject`). Timestamps are epoch milliseconds.
//!
//! Properties the simulator does not model are served with Clerk's "nothing here" values:
//! phone numbers, web3 wallets, passkeys and external/SAML/enterprise accounts are empty
//! arrays, `primary_phone_number_id` and `primary_web3_wallet_id` are `null`.

use serde_json::{Map, Value, json};

/// A JSON object (metadata).
pub(crate) type Metadata = Map<String, Value>;

/// How an e-mail address was (or is being) verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// A one-time code sent by e-mail (`verification_otp`).
    EmailCode,
    /// A magic link (`verification_email_link`).
    EmailLink,
    /// Created through the Backend API (`verification_admin`, always verified).
    Admin,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmailAddress {
    pub(crate) id: String,
    pub(crate) email_address: String,
    pub(crate) verified: bool,
    pub(crate) strategy: Strategy,
    pub(crate) attempts: Option<i64>,
    pub(crate) expire_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl EmailAddress {
    pub(crate) fn to_json(&self) -> Value {
        let (object, strategy) = match self.strategy {
            Strategy::EmailCode => ("verification_otp", "email_code"),
            Strategy::EmailLink => ("verification_email_link", "email_link"),
            Strategy::Admin => ("verification_admin", "admin"),
        };
        let status = match self.verified || self.strategy == Strategy::Admin {
            true => "verified",
            false => "unverified",
        };
        json!({
            "id": self.id,
            "object": "email_address",
            "email_address": self.email_address,
            "reserved": false,
            "verification": {
                "object": object,
                "status": status,
                "strategy": strategy,
                "attempts": self.attempts,
                "expire_at": self.expire_at,
                "verified_at_client": null,
            },
            "linked_to": [],
            "matches_sso_connection": false,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) external_id: Option<String>,
    pub(crate) primary_email_address_id: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) locale: Option<String>,
    pub(crate) image_url: String,
    pub(crate) has_image: bool,
    pub(crate) public_metadata: Metadata,
    pub(crate) private_metadata: Metadata,
    pub(crate) unsafe_metadata: Metadata,
    pub(crate) email_addresses: Vec<EmailAddress>,
    pub(crate) password_enabled: bool,
    /// TOTP and backup codes (`two_factor_enabled`, `totp_enabled`, `backup_code_enabled`).
    pub(crate) two_factor_enabled: bool,
    pub(crate) mfa_enabled_at: Option<i64>,
    pub(crate) password_last_updated_at: Option<i64>,
    pub(crate) last_sign_in_at: Option<i64>,
    pub(crate) last_active_at: Option<i64>,
    pub(crate) banned: bool,
    pub(crate) locked: bool,
    pub(crate) legal_accepted_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl User {
    /// The primary e-mail address, if any.
    pub(crate) fn primary_email(&self) -> Option<&EmailAddress> {
        let id = self.primary_email_address_id.as_deref()?;
        self.email_addresses.iter().find(|e| e.id == id)
    }

    /// What identifies the user to other members: the primary e-mail address, else the
    /// username.
    pub(crate) fn identifier(&self) -> Option<&str> {
        self.primary_email()
            .map(|e| e.email_address.as_str())
            .or(self.username.as_deref())
    }

    pub(crate) fn to_json(&self) -> Value {
        let emails: Vec<Value> = self
            .email_addresses
            .iter()
            .map(EmailAddress::to_json)
            .collect();
        // Built from pairs: one `json!` this large would exceed the macro recursion limit.
        let fields: [(&str, Value); 44] = [
            ("id", json!(self.id)),
            ("object", json!("user")),
            ("external_id", json!(self.external_id)),
            (
                "primary_email_address_id",
                json!(self.primary_email_address_id),
            ),
            ("primary_phone_number_id", Value::Null),
            ("primary_web3_wallet_id", Value::Null),
            ("username", json!(self.username)),
            ("first_name", json!(self.first_name)),
            ("last_name", json!(self.last_name)),
            ("locale", json!(self.locale)),
            ("profile_image_url", json!(self.image_url)),
            ("image_url", json!(self.image_url)),
            ("has_image", json!(self.has_image)),
            ("public_metadata", json!(self.public_metadata)),
            ("private_metadata", json!(self.private_metadata)),
            ("unsafe_metadata", json!(self.unsafe_metadata)),
            ("email_addresses", Value::Array(emails)),
            ("phone_numbers", json!([])),
            ("web3_wallets", json!([])),
            ("passkeys", json!([])),
            ("password_enabled", json!(self.password_enabled)),
            ("two_factor_enabled", json!(self.two_factor_enabled)),
            ("totp_enabled", json!(self.two_factor_enabled)),
            ("backup_code_enabled", json!(self.two_factor_enabled)),
            ("mfa_enabled_at", json!(self.mfa_enabled_at)),
            ("mfa_disabled_at", Value::Null),
            (
                "password_last_updated_at",
                json!(self.password_last_updated_at),
            ),
            ("external_accounts", json!([])),
            ("saml_accounts", json!([])),
            ("enterprise_accounts", json!([])),
            ("last_sign_in_at", json!(self.last_sign_in_at)),
            ("banned", json!(self.banned)),
            ("locked", json!(self.locked)),
            ("deprovisioned", json!(false)),
            // Lockout is enabled (100 attempts); a locked user stays locked for 30 minutes.
            (
                "lockout_expires_in_seconds",
                json!(self.locked.then_some(1800)),
            ),
            (
                "verification_attempts_remaining",
                json!(if self.locked { 0 } else { 100 }),
            ),
            ("updated_at", json!(self.updated_at)),
            ("created_at", json!(self.created_at)),
            ("delete_self_enabled", json!(true)),
            ("create_organization_enabled", json!(true)),
            ("create_organizations_limit", Value::Null),
            ("last_active_at", json!(self.last_active_at)),
            ("legal_accepted_at", json!(self.legal_accepted_at)),
            ("bypass_client_trust", json!(false)),
        ];
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// The `DeletedObject` of `user.deleted` and of the delete answer (`external_id` only when
    /// the user had one).
    pub(crate) fn deleted_json(&self) -> Value {
        let mut v = json!({"object": "user", "id": self.id, "deleted": true});
        if let Some(external_id) = &self.external_id {
            v["external_id"] = json!(external_id);
        }
        v
    }

    /// `public_user_data` of this user's memberships.
    pub(crate) fn public_user_data(&self) -> Value {
        json!({
            "user_id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "profile_image_url": self.image_url,
            "image_url": self.image_url,
            "has_image": self.has_image,
            "identifier": self.identifier(),
            "username": self.username,
            "banned": self.banned,
            "deprovisioned": false,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Organization {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) slug: String,
    pub(crate) image_url: String,
    pub(crate) has_image: bool,
    /// 0: unlimited.
    pub(crate) max_allowed_memberships: i64,
    pub(crate) admin_delete_enabled: bool,
    pub(crate) public_metadata: Metadata,
    pub(crate) private_metadata: Metadata,
    pub(crate) created_by: Option<String>,
    pub(crate) pending_invitations_count: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// The computed properties of an organization that Clerk's lists include only when asked
/// (`include_members_count`, `include_missing_member_with_elevated_permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct OrgCounts {
    pub(crate) members_count: Option<usize>,
    /// Whether no member has the admin role.
    pub(crate) missing_admin: Option<bool>,
}

impl Organization {
    pub(crate) fn to_json(&self, counts: OrgCounts) -> Value {
        let mut v = Map::new();
        let mut put = |key: &str, value: Value| {
            v.insert(key.to_owned(), value);
        };
        put("object", json!("organization"));
        put("id", json!(self.id));
        put("name", json!(self.name));
        put("slug", json!(self.slug));
        put("image_url", json!(self.image_url));
        put("has_image", json!(self.has_image));
        if let Some(n) = counts.members_count {
            put("members_count", json!(n));
        }
        if let Some(missing) = counts.missing_admin {
            put("missing_member_with_elevated_permissions", json!(missing));
        }
        put(
            "pending_invitations_count",
            json!(self.pending_invitations_count),
        );
        put(
            "max_allowed_memberships",
            json!(self.max_allowed_memberships),
        );
        put("admin_delete_enabled", json!(self.admin_delete_enabled));
        put("public_metadata", json!(self.public_metadata));
        put("private_metadata", json!(self.private_metadata));
        // `created_by` is a string, not nullable: absent when nobody created it.
        if let Some(created_by) = &self.created_by {
            put("created_by", json!(created_by));
        }
        put("created_at", json!(self.created_at));
        put("updated_at", json!(self.updated_at));
        Value::Object(v)
    }

    /// The `DeletedObject` of `organization.deleted` (with the slug, as Clerk sends it).
    pub(crate) fn deleted_json(&self) -> Value {
        json!({"object": "organization", "id": self.id, "slug": self.slug, "deleted": true})
    }
}

/// `org:admin` or `org:member`.
pub(crate) const ADMIN: &str = "org:admin";
pub(crate) const MEMBER: &str = "org:member";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Membership {
    pub(crate) id: String,
    pub(crate) organization_id: String,
    pub(crate) user_id: String,
    pub(crate) role: String,
    pub(crate) public_metadata: Metadata,
    pub(crate) private_metadata: Metadata,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl Membership {
    /// The membership with its organization (with `members_count`) and its user's public data
    /// embedded, as both the API and the webhooks serve it.
    pub(crate) fn to_json(&self, organization: Value, public_user_data: Value) -> Value {
        let (role_name, permissions) = role_facts(&self.role);
        json!({
            "id": self.id,
            "object": "organization_membership",
            "role": self.role,
            "role_name": role_name,
            "permissions": permissions,
            "public_metadata": self.public_metadata,
            "private_metadata": self.private_metadata,
            "organization": organization,
            "public_user_data": public_user_data,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// The display name and the system permissions of Clerk's two default roles.
pub(crate) fn role_facts(role: &str) -> (&'static str, &'static [&'static str]) {
    const ADMIN_PERMISSIONS: &[&str] = &[
        "org:sys_profile:manage",
        "org:sys_profile:delete",
        "org:sys_memberships:read",
        "org:sys_memberships:manage",
        "org:sys_domains:read",
        "org:sys_domains:manage",
    ];
    match role {
        ADMIN => ("Admin", ADMIN_PERMISSIONS),
        _ => ("Member", &["org:sys_memberships:read"]),
    }
}
