//! The resource types the simulator serves and what PCO allows on each of them (restated from
//! the People and Groups API definitions: `CanOrderBy`, `CanQueryBy`, `CanInclude`).

use std::fmt;
use std::str::FromStr;

/// A resource type of the simulated People and Groups APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Person,
    Email,
    PhoneNumber,
    Address,
    Household,
    HouseholdMembership,
    Campus,
    /// Groups: a kind of group (`/groups/v2/group_types`).
    GroupType,
    /// Groups: a group (`/groups/v2/groups`).
    Group,
    /// Groups: a person's membership of a group (`/groups/v2/groups/{id}/memberships`; the
    /// control API calls the collection `group_memberships`).
    Membership,
    /// Groups: a group's event (`/groups/v2/events`, `/groups/v2/groups/{id}/events`).
    Event,
}

/// The PCO application a resource kind belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// `/people/v2`
    People,
    /// `/groups/v2`
    Groups,
}

impl App {
    /// The URL prefix of the application's API.
    pub const fn prefix(self) -> &'static str {
        match self {
            App::People => "/people/v2",
            App::Groups => "/groups/v2",
        }
    }
}

impl ResourceKind {
    /// Every kind, in dump order (People before Groups, parents before children).
    pub const ALL: [ResourceKind; 11] = [
        ResourceKind::Campus,
        ResourceKind::Person,
        ResourceKind::Household,
        ResourceKind::HouseholdMembership,
        ResourceKind::Email,
        ResourceKind::PhoneNumber,
        ResourceKind::Address,
        ResourceKind::GroupType,
        ResourceKind::Group,
        ResourceKind::Membership,
        ResourceKind::Event,
    ];

    /// The application serving this kind.
    pub const fn app(self) -> App {
        match self {
            ResourceKind::GroupType
            | ResourceKind::Group
            | ResourceKind::Membership
            | ResourceKind::Event => App::Groups,
            _ => App::People,
        }
    }

    /// The JSON:API `type` (PascalCase).
    pub const fn type_name(self) -> &'static str {
        match self {
            ResourceKind::Person => "Person",
            ResourceKind::Email => "Email",
            ResourceKind::PhoneNumber => "PhoneNumber",
            ResourceKind::Address => "Address",
            ResourceKind::Household => "Household",
            ResourceKind::HouseholdMembership => "HouseholdMembership",
            ResourceKind::Campus => "Campus",
            ResourceKind::GroupType => "GroupType",
            ResourceKind::Group => "Group",
            ResourceKind::Membership => "Membership",
            ResourceKind::Event => "Event",
        }
    }

    /// The collection name (`people`, `phone_numbers`, ...): the URL path segment of the
    /// collection, and the control API's `{collection}`. Membership is the exception: its URL
    /// segment is `memberships` (only under a group), its control collection
    /// `group_memberships` (to keep it apart from `household_memberships`).
    pub const fn collection(self) -> &'static str {
        match self {
            ResourceKind::Person => "people",
            ResourceKind::Email => "emails",
            ResourceKind::PhoneNumber => "phone_numbers",
            ResourceKind::Address => "addresses",
            ResourceKind::Household => "households",
            ResourceKind::HouseholdMembership => "household_memberships",
            ResourceKind::Campus => "campuses",
            ResourceKind::GroupType => "group_types",
            ResourceKind::Group => "groups",
            ResourceKind::Membership => "group_memberships",
            ResourceKind::Event => "events",
        }
    }

    pub fn from_collection(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.collection() == s)
    }

    pub fn from_type_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.type_name() == s)
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            ResourceKind::Person => 0,
            ResourceKind::Email => 1,
            ResourceKind::PhoneNumber => 2,
            ResourceKind::Address => 3,
            ResourceKind::Household => 4,
            ResourceKind::HouseholdMembership => 5,
            ResourceKind::Campus => 6,
            ResourceKind::GroupType => 7,
            ResourceKind::Group => 8,
            ResourceKind::Membership => 9,
            ResourceKind::Event => 10,
        }
    }

    /// Generated ids of this kind are `id_base + index + 1`. The bases only keep the id ranges of
    /// different kinds apart (for data sets up to a few million people), which makes a consumer
    /// that confuses one kind's id with another's fail loudly.
    pub(crate) const fn id_base(self) -> u64 {
        match self {
            ResourceKind::Person => 10_000_000,
            ResourceKind::Email => 20_000_000,
            ResourceKind::PhoneNumber => 30_000_000,
            ResourceKind::Address => 40_000_000,
            ResourceKind::Household => 50_000_000,
            ResourceKind::HouseholdMembership => 60_000_000,
            ResourceKind::Campus => 70_000,
            ResourceKind::GroupType => 80_000,
            ResourceKind::Group => 70_000_000,
            ResourceKind::Membership => 80_000_000,
            ResourceKind::Event => 90_000_000,
        }
    }

    /// Whether the resource has `created_at` and `updated_at` (HouseholdMembership has none;
    /// of the Groups kinds only Group has a `created_at`, and none has `updated_at`).
    pub const fn has_timestamps(self) -> bool {
        matches!(self.app(), App::People) && !matches!(self, ResourceKind::HouseholdMembership)
    }

    /// The `order` values PCO accepts for this resource.
    pub const fn can_order_by(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Person => &[
                "accounting_administrator",
                "anniversary",
                "birthdate",
                "child",
                "created_at",
                "first_name",
                "gender",
                "given_name",
                "grade",
                "graduation_year",
                "inactivated_at",
                "last_name",
                "membership",
                "middle_name",
                "nickname",
                "people_permissions",
                "remote_id",
                "site_administrator",
                "status",
                "updated_at",
            ],
            ResourceKind::Email => &["address", "created_at", "location", "primary", "updated_at"],
            ResourceKind::PhoneNumber => &[
                "carrier",
                "created_at",
                "location",
                "number",
                "primary",
                "updated_at",
            ],
            ResourceKind::Address => &[
                "city",
                "country_code",
                "created_at",
                "location",
                "primary",
                "state",
                "street_line_1",
                "street_line_2",
                "updated_at",
                "zip",
            ],
            ResourceKind::Household => &[
                "created_at",
                "member_count",
                "name",
                "primary_contact_name",
                "updated_at",
            ],
            ResourceKind::HouseholdMembership => &["pending", "person_name"],
            ResourceKind::Campus => &["created_at", "name", "updated_at"],
            ResourceKind::GroupType => &["name", "position"],
            // enrollment_limit belongs to the group's enrollment, which the simulator does not
            // serve: ordering by it sorts every group as null.
            ResourceKind::Group => &[
                "chat_enabled",
                "contact_email",
                "created_at",
                "enrollment_limit",
                "listed",
                "members_are_confidential",
                "memberships_count",
                "name",
            ],
            // first_name and last_name are the member's (the Person's) names.
            ResourceKind::Membership => &["first_name", "joined_at", "last_name", "role"],
            ResourceKind::Event => &["ends_at", "name", "starts_at"],
        }
    }

    /// The `where[...]` attributes PCO accepts for this resource.
    pub const fn can_query_by(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Person => &[
                "accounting_administrator",
                "anniversary",
                "birthdate",
                "child",
                "created_at",
                "first_name",
                "gender",
                "given_name",
                "grade",
                "graduation_year",
                "id",
                "inactivated_at",
                "last_name",
                "medical_notes",
                "membership",
                "mfa_configured",
                "middle_name",
                "nickname",
                "people_permissions",
                "primary_campus_id",
                "remote_id",
                "search_name",
                "search_name_or_email",
                "search_name_or_email_or_phone_number",
                "search_phone_number",
                "search_phone_number_e164",
                "site_administrator",
                "status",
                "updated_at",
            ],
            ResourceKind::Email => &[
                "address",
                "blocked",
                "created_at",
                "location",
                "primary",
                "updated_at",
            ],
            ResourceKind::PhoneNumber => &[
                "carrier",
                "created_at",
                "location",
                "number",
                "primary",
                "updated_at",
            ],
            ResourceKind::Address => &[
                "city",
                "country_code",
                "location",
                "primary",
                "state",
                "street_line_1",
                "street_line_2",
                "zip",
            ],
            ResourceKind::Household => &[
                "created_at",
                "member_count",
                "name",
                "primary_contact_name",
                "updated_at",
            ],
            ResourceKind::HouseholdMembership => &["pending", "person_name"],
            ResourceKind::Campus => &["created_at", "id", "updated_at"],
            ResourceKind::GroupType => &["id"],
            ResourceKind::Group => &["archive_status", "name"],
            ResourceKind::Membership => &["role"],
            ResourceKind::Event => &["ends_at", "name", "starts_at"],
        }
    }

    /// The `include` values the simulator implements for this resource (a subset of PCO's).
    pub const fn can_include(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Person => &[
                "addresses",
                "emails",
                "households",
                "phone_numbers",
                "primary_campus",
            ],
            ResourceKind::Household => &["people"],
            ResourceKind::HouseholdMembership => &["household", "person"],
            ResourceKind::Group => &["group_type"],
            ResourceKind::Membership => &["person"],
            ResourceKind::Event => &["group"],
            _ => &[],
        }
    }

    /// `include` values PCO accepts but the simulator does not implement (answered with 400).
    pub(crate) const fn unimplemented_includes(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Person => &[
                "field_data",
                "inactive_reason",
                "marital_status",
                "name_prefix",
                "name_suffix",
                "organization",
                "person_apps",
                "platform_notifications",
                "school",
                "social_profiles",
            ],
            ResourceKind::Campus => &["lists", "service_times"],
            ResourceKind::Group => &["enrollment", "location"],
            ResourceKind::Event => &["location"],
            _ => &[],
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

impl FromStr for ResourceKind {
    type Err = String;

    /// Accepts a type name (`PhoneNumber`) or a collection name (`phone_numbers`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_type_name(s)
            .or_else(|| Self::from_collection(s))
            .ok_or_else(|| format!("unknown resource type {s:?}"))
    }
}

/// How attribute values compare in filters and ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrType {
    /// ISO-8601 instants (compared as instants).
    Time,
    /// `YYYY-MM-DD` dates.
    Date,
    /// Integers.
    Int,
    /// Anything else (strings, booleans), compared as text.
    Other,
}

pub(crate) fn attr_type(attr: &str) -> AttrType {
    match attr {
        "created_at" | "updated_at" | "inactivated_at" | "archived_at" | "joined_at"
        | "starts_at" | "ends_at" | "canceled_at" => AttrType::Time,
        "birthdate" | "anniversary" => AttrType::Date,
        "grade" | "graduation_year" | "remote_id" | "member_count" | "memberships_count"
        | "position" | "enrollment_limit" => AttrType::Int,
        _ => AttrType::Other,
    }
}
