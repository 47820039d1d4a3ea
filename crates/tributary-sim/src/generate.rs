//! The generated data set: a compact layout (per-person counts as prefix sums, household
//! boundaries) plus pure functions that produce any resource from its index on demand.
//!
//! Nothing but the layout is stored: for a million people it takes about 20 MB and is built in
//! well under a second. Every value comes from [`Rng`] streams keyed by `(seed, tag, index)`.

use std::ops::Range;

use serde_json::{Map, Value};

use crate::groups::GroupsLayout;
use crate::names::{
    CAMPUS_DESCRIPTIONS, CAMPUS_NAMES, CARRIERS, CITIES, EMAIL_DOMAINS, FEMALE_FIRST, LAST,
    MALE_FIRST, MEDICAL_NOTES, NICK_FEMALE, NICK_MALE, STREET_SUFFIXES, STREETS,
    WORK_EMAIL_DOMAINS,
};
use crate::record::{Attrs, Links, Record};
use crate::rng::Rng;
use crate::schema::ResourceKind;
use crate::time::{DAY_S, GEN_BASE_S, GEN_END_S, format_date, format_ms, years_between};

// Rng tags: one per purpose. Never renumber them (that would change every data set).
const T_HOUSEHOLD_SIZE: u64 = 1;
const T_COUNTS: u64 = 2;
const T_PERSON: u64 = 3;
const T_HOUSEHOLD: u64 = 4;
const T_MEMBER: u64 = 5;
const T_EMAIL: u64 = 6;
const T_PHONE: u64 = 7;
const T_ADDRESS: u64 = 8;
const T_CAMPUS: u64 = 9;
const T_CREATED: u64 = 10;
const T_CAMPUS_COUNT: u64 = 11;
const T_MEMBERSHIP: u64 = 12;
const T_UPDATED_BASE: u64 = 100;

/// The largest number of generated people (indices are `u32`).
pub(crate) const MAX_PEOPLE: usize = 100_000_000;

const HOUSEHOLD_SIZES: &[(u32, u32)] = &[(1, 22), (2, 22), (3, 18), (4, 18), (5, 12), (6, 8)];
const PHONE_COUNTS: &[(u32, u32)] = &[(0, 25), (1, 50), (2, 25)];
const MEMBERSHIPS: &[(Option<&str>, u32)] = &[
    (Some("Member"), 40),
    (Some("Regular Attender"), 20),
    (Some("Visitor"), 10),
    (Some("Participant"), 10),
    (Some("In Progress"), 5),
    (None, 15),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Spouse,
    Child,
    OtherAdult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gender {
    M,
    F,
}

#[derive(Debug, Clone)]
struct Member {
    gender: Gender,
    birth_days: i64,
    first: &'static str,
    last: &'static str,
    household_role: &'static str,
}

/// Everything about a household that its members' records need.
#[derive(Debug, Clone)]
struct HouseholdPlan {
    last: &'static str,
    members: Vec<Member>,
    anniversary_days: Option<i64>,
    street_number: i64,
    street: &'static str,
    suffix: &'static str,
    city: usize,
    zip_tail: u64,
    apartment: Option<String>,
}

/// The compact layout of a generated data set.
#[derive(Debug)]
pub(crate) struct Dataset {
    pub(crate) seed: u64,
    pub(crate) people: u32,
    campuses: u32,
    /// `hh_start[h]..hh_start[h + 1]` are the person indices of household `h`.
    hh_start: Vec<u32>,
    /// The household index of each person.
    hh_of: Vec<u32>,
    /// Prefix sums of per-person child counts: person `i` owns `x_start[i]..x_start[i + 1]`.
    email_start: Vec<u32>,
    phone_start: Vec<u32>,
    addr_start: Vec<u32>,
    /// The Groups data (see [`crate::groups`]).
    pub(crate) groups: GroupsLayout,
}

fn ref_days() -> i64 {
    GEN_END_S / DAY_S
}

fn s_to_value(s: i64) -> Value {
    Value::String(format_ms(s * 1000))
}

fn str_value(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, str_value)
}

fn slug(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Dataset {
    pub(crate) fn new(seed: u64, people: usize) -> Self {
        let people = people.min(MAX_PEOPLE) as u32;
        let campuses = 3 + Rng::new(seed, T_CAMPUS_COUNT, 0).below(4) as u32;

        let mut hh_start = Vec::with_capacity(people as usize / 3 + 2);
        let mut hh_of = Vec::with_capacity(people as usize);
        hh_start.push(0u32);
        let mut p = 0u32;
        let mut h = 0u32;
        while p < people {
            let size = (*Rng::new(seed, T_HOUSEHOLD_SIZE, u64::from(h)).weighted(HOUSEHOLD_SIZES))
                .min(people - p);
            hh_of.extend(std::iter::repeat_n(h, size as usize));
            p += size;
            h += 1;
            hh_start.push(p);
        }

        let n = people as usize + 1;
        let (mut email_start, mut phone_start, mut addr_start) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut e, mut ph, mut a) = (0u32, 0u32, 0u32);
        for i in 0..people {
            email_start.push(e);
            phone_start.push(ph);
            addr_start.push(a);
            let mut r = Rng::new(seed, T_COUNTS, u64::from(i));
            e += 1 + u32::from(r.chance(350));
            ph += *r.weighted(PHONE_COUNTS);
            a += u32::from(r.chance(700));
        }
        email_start.push(e);
        phone_start.push(ph);
        addr_start.push(a);

        Dataset {
            seed,
            people,
            campuses,
            hh_start,
            hh_of,
            email_start,
            phone_start,
            addr_start,
            groups: GroupsLayout::new(seed, people),
        }
    }

    pub(crate) fn households(&self) -> u32 {
        (self.hh_start.len() - 1) as u32
    }

    /// How many resources of `kind` were generated.
    pub(crate) fn count(&self, kind: ResourceKind) -> u32 {
        match kind {
            ResourceKind::Person | ResourceKind::HouseholdMembership => self.people,
            ResourceKind::Email => self.email_start[self.people as usize],
            ResourceKind::PhoneNumber => self.phone_start[self.people as usize],
            ResourceKind::Address => self.addr_start[self.people as usize],
            ResourceKind::Household => self.households(),
            ResourceKind::Campus => self.campuses,
            ResourceKind::GroupType
            | ResourceKind::Group
            | ResourceKind::Membership
            | ResourceKind::Event => self.groups.count(kind),
        }
    }

    pub(crate) fn id(kind: ResourceKind, index: u32) -> u64 {
        kind.id_base() + u64::from(index) + 1
    }

    /// The index of a generated id, if `id` is in the generated range.
    pub(crate) fn index(&self, kind: ResourceKind, id: u64) -> Option<u32> {
        let base = kind.id_base();
        (id > base && id - base <= u64::from(self.count(kind))).then(|| (id - base - 1) as u32)
    }

    /// The indices of `kind` children (Email, PhoneNumber, Address, HouseholdMembership) that
    /// generated person `person` owns.
    pub(crate) fn child_range(&self, kind: ResourceKind, person: u32) -> Range<u32> {
        let i = person as usize;
        match kind {
            ResourceKind::Email => self.email_start[i]..self.email_start[i + 1],
            ResourceKind::PhoneNumber => self.phone_start[i]..self.phone_start[i + 1],
            ResourceKind::Address => self.addr_start[i]..self.addr_start[i + 1],
            ResourceKind::HouseholdMembership => person..person + 1,
            _ => 0..0,
        }
    }

    /// Person (and membership) indices of household `h`.
    pub(crate) fn household_range(&self, h: u32) -> Range<u32> {
        self.hh_start[h as usize]..self.hh_start[h as usize + 1]
    }

    fn starts(&self, kind: ResourceKind) -> &[u32] {
        match kind {
            ResourceKind::Email => &self.email_start,
            ResourceKind::PhoneNumber => &self.phone_start,
            _ => &self.addr_start,
        }
    }

    /// `(person index, position among that person's children of this kind)`.
    fn owner(&self, kind: ResourceKind, index: u32) -> (u32, u32) {
        let starts = self.starts(kind);
        let person = starts.partition_point(|&s| s <= index) - 1;
        (person as u32, index - starts[person])
    }

    /// The single-valued relationships of a generated resource (cheap: no attributes).
    pub(crate) fn links(&self, kind: ResourceKind, index: u32) -> Links {
        match kind {
            ResourceKind::Person => {
                let h = self.hh_of[index as usize];
                Links {
                    campus: self
                        .household_campus(h)
                        .map(|c| Self::id(ResourceKind::Campus, c)),
                    ..Links::default()
                }
            }
            ResourceKind::Email | ResourceKind::PhoneNumber | ResourceKind::Address => Links {
                person: Some(Self::id(ResourceKind::Person, self.owner(kind, index).0)),
                ..Links::default()
            },
            ResourceKind::Household => Links {
                person: Some(Self::id(
                    ResourceKind::Person,
                    self.hh_start[index as usize],
                )),
                ..Links::default()
            },
            ResourceKind::HouseholdMembership => Links {
                person: Some(Self::id(ResourceKind::Person, index)),
                household: Some(Self::id(
                    ResourceKind::Household,
                    self.hh_of[index as usize],
                )),
                ..Links::default()
            },
            ResourceKind::Campus => Links::default(),
            ResourceKind::GroupType
            | ResourceKind::Group
            | ResourceKind::Membership
            | ResourceKind::Event => self.groups_links(kind, index),
        }
    }

    // ---- timestamps -------------------------------------------------------------------------

    fn person_created_s(&self, i: u32) -> i64 {
        let span = i128::from(GEN_END_S - 30 * DAY_S - GEN_BASE_S);
        let n = i128::from(self.people.max(1));
        let slot = (span / n) as i64;
        let t = GEN_BASE_S + (i128::from(i) * span / n) as i64;
        let jitter_max = slot / 4;
        if jitter_max > 0 {
            t + Rng::new(self.seed, T_CREATED, u64::from(i)).below(jitter_max as u64) as i64
        } else {
            t
        }
    }

    fn campus_created_s(&self, c: u32) -> i64 {
        GEN_BASE_S - i64::from(self.campuses - c) * 45 * DAY_S + 9 * 3600
    }

    fn raw_updated_s(&self, kind: ResourceKind, index: u32, created: i64) -> i64 {
        let mut r = Rng::new(
            self.seed,
            T_UPDATED_BASE + kind.index() as u64,
            u64::from(index),
        );
        if r.chance(300) {
            created
        } else {
            created + r.below((GEN_END_S - created).max(0) as u64 + 1) as i64
        }
    }

    /// `created_at` of a generated resource, in seconds (None for the kinds without one).
    pub(crate) fn created_s(&self, kind: ResourceKind, index: u32) -> Option<i64> {
        Some(match kind {
            ResourceKind::Person => self.person_created_s(index),
            ResourceKind::Email | ResourceKind::PhoneNumber => {
                let (p, k) = self.owner(kind, index);
                self.person_created_s(p) + 1 + i64::from(k)
            }
            ResourceKind::Address => self.person_created_s(self.owner(kind, index).0) + 1,
            ResourceKind::Household => self.person_created_s(self.hh_start[index as usize]),
            ResourceKind::Campus => self.campus_created_s(index),
            ResourceKind::Group => self.group_created_s(index),
            ResourceKind::HouseholdMembership
            | ResourceKind::GroupType
            | ResourceKind::Membership
            | ResourceKind::Event => return None,
        })
    }

    /// `updated_at` of a generated resource, in seconds (None for the kinds without one).
    pub(crate) fn updated_s(&self, kind: ResourceKind, index: u32) -> Option<i64> {
        if !kind.has_timestamps() {
            return None;
        }
        let created = self.created_s(kind, index)?;
        let updated = self.raw_updated_s(kind, index, created);
        Some(if kind == ResourceKind::Household {
            // A household changes when its last member joins.
            let last = self.hh_start[index as usize + 1] - 1;
            updated.max(self.person_created_s(last))
        } else {
            updated
        })
    }

    // ---- households -------------------------------------------------------------------------

    fn household_campus(&self, h: u32) -> Option<u32> {
        let mut r = Rng::new(self.seed, T_HOUSEHOLD, u64::from(h));
        r.next_u64(); // last name
        r.chance(900)
            .then(|| r.below(u64::from(self.campuses)) as u32)
    }

    fn plan(&self, h: u32) -> HouseholdPlan {
        let range = self.household_range(h);
        let mut r = Rng::new(self.seed, T_HOUSEHOLD, u64::from(h));
        let last = *r.pick(LAST);
        // The campus draw (see household_campus) keeps the stream aligned.
        let _campus = r.chance(900).then(|| r.below(u64::from(self.campuses)));
        let street_number = r.range(100, 9999);
        let street = *r.pick(STREETS);
        let suffix = *r.pick(STREET_SUFFIXES);
        let city = r.below(CITIES.len() as u64) as usize;
        let zip_tail = r.below(100);
        let apartment = r.chance(200).then(|| {
            format!(
                "Apt {}{}",
                r.range(1, 40),
                char::from(b'A' + r.below(6) as u8)
            )
        });
        let married = r.chance(700);
        let married_years = r.next_u64();
        let married_day = r.below(365) as i64;

        let mut members: Vec<Member> = Vec::with_capacity(range.len());
        let mut primary_age = 0i64;
        let mut primary_gender = Gender::M;
        let mut roles: Vec<(Role, i64)> = Vec::with_capacity(range.len());
        for (pos, person) in range.clone().enumerate() {
            let mut m = Rng::new(self.seed, T_MEMBER, u64::from(person));
            let (role, gender, age) = match pos {
                0 => {
                    let g = if m.chance(500) { Gender::F } else { Gender::M };
                    (Role::Primary, g, m.range(22, 80))
                }
                1 if m.chance(750) => {
                    let g = match (primary_gender, m.chance(950)) {
                        (Gender::M, true) | (Gender::F, false) => Gender::F,
                        _ => Gender::M,
                    };
                    (
                        Role::Spouse,
                        g,
                        (primary_age + m.range(-6, 6)).clamp(19, 90),
                    )
                }
                _ => {
                    if pos >= 2 && m.chance(100) {
                        let g = if m.chance(500) { Gender::F } else { Gender::M };
                        (Role::OtherAdult, g, m.range(19, 85))
                    } else {
                        let g = if m.chance(500) { Gender::F } else { Gender::M };
                        let max_age = (primary_age - 18).clamp(0, 16);
                        (Role::Child, g, m.range(0, max_age))
                    }
                }
            };
            if pos == 0 {
                primary_age = age;
                primary_gender = gender;
            }
            let birth_days = ref_days() - age * 36_525 / 100 - m.below(360) as i64 - 1;
            let first = *m.pick(if gender == Gender::F {
                FEMALE_FIRST
            } else {
                MALE_FIRST
            });
            let own_last = *m.pick(LAST);
            let guardian = m.chance(300);
            roles.push((role, age));
            members.push(Member {
                gender,
                birth_days,
                first,
                last: if role == Role::OtherAdult {
                    own_last
                } else {
                    last
                },
                household_role: match role {
                    Role::Primary | Role::Spouse if guardian => "parent_guardian",
                    Role::Primary | Role::Spouse => "adult",
                    Role::Child => "child_or_dependent",
                    Role::OtherAdult => "other_adult",
                },
            });
        }
        let has_children = roles.iter().any(|(r, _)| *r == Role::Child);
        if !has_children {
            for m in &mut members {
                if m.household_role == "parent_guardian" {
                    m.household_role = "adult";
                }
            }
        }
        let anniversary_days = match roles.get(1) {
            Some((Role::Spouse, spouse_age)) if married => {
                let max_years = (primary_age.min(*spouse_age) - 18).max(1) as u64;
                let years = (married_years % max_years) as i64;
                Some(ref_days() - years * 36_525 / 100 - married_day - 1)
            }
            _ => None,
        };
        HouseholdPlan {
            last,
            members,
            anniversary_days,
            street_number,
            street,
            suffix,
            city,
            zip_tail,
            apartment,
        }
    }

    fn member_name(plan: &HouseholdPlan, pos: usize) -> String {
        let m = &plan.members[pos];
        format!("{} {}", m.first, m.last)
    }

    // ---- records ----------------------------------------------------------------------------

    /// The full generated record of `kind` at `index` (`index < count(kind)`).
    pub(crate) fn record(&self, kind: ResourceKind, index: u32) -> Record {
        let attrs = match kind {
            ResourceKind::Person => self.person(index),
            ResourceKind::Email => self.email(index),
            ResourceKind::PhoneNumber => self.phone(index),
            ResourceKind::Address => self.address(index),
            ResourceKind::Household => self.household(index),
            ResourceKind::HouseholdMembership => self.membership(index),
            ResourceKind::Campus => self.campus(index),
            ResourceKind::GroupType
            | ResourceKind::Group
            | ResourceKind::Membership
            | ResourceKind::Event => self.groups_attrs(kind, index),
        };
        Record {
            kind,
            id: Self::id(kind, index),
            attrs,
            links: self.links(kind, index),
        }
    }

    fn email_address(&self, index: u32, first: &str, last: &str, work: bool) -> String {
        let mut r = Rng::new(self.seed, T_EMAIL, u64::from(index));
        let domain = if work {
            *r.pick(WORK_EMAIL_DOMAINS)
        } else {
            *r.pick(EMAIL_DOMAINS)
        };
        format!(
            "{}.{}+{}@{}",
            slug(first),
            slug(last),
            Self::id(ResourceKind::Email, index),
            domain
        )
    }

    fn person(&self, i: u32) -> Attrs {
        let h = self.hh_of[i as usize];
        let pos = (i - self.hh_start[h as usize]) as usize;
        let plan = self.plan(h);
        let member = &plan.members[pos];
        let mut r = Rng::new(self.seed, T_PERSON, u64::from(i));
        let id = Self::id(ResourceKind::Person, i);

        let years = years_between(member.birth_days, ref_days());
        let child = years < 18;
        let created = self.person_created_s(i);
        let updated = self.updated_s(ResourceKind::Person, i).unwrap_or(created);

        // Draw every random value in a fixed order.
        let membership = *r.weighted(MEMBERSHIPS);
        let inactive = r.chance(80);
        let inactivated_at = created + r.below((updated - created).max(0) as u64 + 1) as i64;
        let nickname = r.chance(80).then(|| {
            *r.pick(if member.gender == Gender::F {
                NICK_FEMALE
            } else {
                NICK_MALE
            })
        });
        let middle = r.chance(400).then(|| {
            *r.pick(if member.gender == Gender::F {
                FEMALE_FIRST
            } else {
                MALE_FIRST
            })
        });
        let given = r.chance(100);
        let site_admin = r.chance(5);
        let accounting_admin = r.chance(5);
        let background = !child && r.chance(250);
        let remote_id = r.chance(50).then(|| r.range(100_000, 999_999));
        let medical = r
            .chance(if child { 100 } else { 20 })
            .then(|| *r.pick(MEDICAL_NOTES));
        let permissions =
            (!child && r.chance(50)).then(|| *r.pick(&["Editor", "Manager", "Viewer"]));
        let directory = *r.weighted(&[("no_access", 70), ("shared", 20), ("hidden", 10)]);
        let mfa = r.chance(100);
        let forms = r.chance(50);
        let email_lists = r.chance(50);
        let stripe = r.chance(30).then(|| {
            format!(
                "cus_{}",
                r.token(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                    14
                )
            )
        });
        let photo = r.chance(150);
        let photo_token = r.token(b"0123456789abcdef", 8);

        let kid = years < 13;
        let demographic = format!(
            "https://people.example.com/static/no_photo_thumbnail_{}_gray.svg",
            match (member.gender, kid) {
                (Gender::M, false) => "man",
                (Gender::F, false) => "woman",
                (Gender::M, true) => "boy",
                (Gender::F, true) => "girl",
            }
        );
        let avatar = if photo {
            format!("https://avatars.example.com/uploads/person/{id}/avatar-{photo_token}.jpg")
        } else {
            demographic.clone()
        };
        let grade = (child && years >= 5).then_some(years - 5);
        let school_type = grade.map(|g| match g {
            0..=5 => "Elementary",
            6..=8 => "Middle School",
            _ => "High School",
        });
        let anniversary = match (pos, plan.anniversary_days) {
            (0 | 1, Some(days)) if !child => Some(format_date(days)),
            _ => None,
        };
        let login = (!child).then(|| {
            self.email_address(
                self.email_start[i as usize],
                member.first,
                member.last,
                false,
            )
        });
        let (y, _, _) = crate::time::civil_from_days(ref_days());

        let mut a = Attrs::with_capacity(34);
        a.push("accounting_administrator", Value::Bool(accounting_admin));
        a.push(
            "anniversary",
            anniversary.map_or(Value::Null, Value::String),
        );
        a.push("avatar", Value::String(avatar));
        a.push("birthdate", Value::String(format_date(member.birth_days)));
        a.push("can_create_forms", Value::Bool(forms));
        a.push("can_email_lists", Value::Bool(email_lists));
        a.push("child", Value::Bool(child));
        a.push("created_at", s_to_value(created));
        a.push("demographic_avatar_url", Value::String(demographic));
        a.push("directory_shared_info", Value::Object(Map::new()));
        a.push("directory_status", str_value(directory));
        a.push("first_name", str_value(member.first));
        a.push(
            "gender",
            str_value(if member.gender == Gender::F { "F" } else { "M" }),
        );
        a.push(
            "given_name",
            if given {
                str_value(member.first)
            } else {
                Value::Null
            },
        );
        a.push("grade", grade.map_or(Value::Null, Value::from));
        a.push(
            "graduation_year",
            grade.map_or(Value::Null, |g| Value::from(y + 12 - g)),
        );
        a.push(
            "inactivated_at",
            if inactive {
                s_to_value(inactivated_at)
            } else {
                Value::Null
            },
        );
        a.push("last_name", str_value(member.last));
        a.push("login_identifier", login.map_or(Value::Null, Value::String));
        a.push("medical_notes", opt_str(medical));
        a.push("membership", opt_str(membership));
        a.push("mfa_configured", Value::Bool(mfa));
        a.push("middle_name", opt_str(middle));
        a.push("name", Value::String(Self::member_name(&plan, pos)));
        a.push("nickname", opt_str(nickname));
        a.push("passed_background_check", Value::Bool(background));
        a.push("people_permissions", opt_str(permissions));
        a.push("remote_id", remote_id.map_or(Value::Null, Value::from));
        a.push("resource_permission_flags", Value::Object(Map::new()));
        a.push("school_type", opt_str(school_type));
        a.push("site_administrator", Value::Bool(site_admin));
        a.push(
            "status",
            str_value(if inactive { "inactive" } else { "active" }),
        );
        a.push(
            "stripe_customer_identifier",
            stripe.map_or(Value::Null, Value::String),
        );
        a.push("updated_at", s_to_value(updated));
        a
    }

    fn timestamps(&self, kind: ResourceKind, index: u32) -> (Value, Value) {
        let created = self.created_s(kind, index).unwrap_or(GEN_BASE_S);
        let updated = self.updated_s(kind, index).unwrap_or(created);
        (s_to_value(created), s_to_value(updated))
    }

    fn email(&self, index: u32) -> Attrs {
        let (p, k) = self.owner(ResourceKind::Email, index);
        let h = self.hh_of[p as usize];
        let plan = self.plan(h);
        let member = &plan.members[(p - self.hh_start[h as usize]) as usize];
        let mut r = Rng::new(self.seed, T_EMAIL, u64::from(index));
        r.next_u64(); // the domain, drawn by email_address
        let work = k > 0 && r.chance(600);
        let location = if k == 0 {
            if r.chance(900) { "Home" } else { "Other" }
        } else if work {
            "Work"
        } else {
            *r.pick(&["Home", "Other"])
        };
        let blocked = r.chance(10);
        let (created, updated) = self.timestamps(ResourceKind::Email, index);

        let mut a = Attrs::with_capacity(6);
        a.push(
            "address",
            Value::String(self.email_address(index, member.first, member.last, work)),
        );
        a.push("blocked", Value::Bool(blocked));
        a.push("created_at", created);
        a.push("location", str_value(location));
        a.push("primary", Value::Bool(k == 0));
        a.push("updated_at", updated);
        a
    }

    fn phone(&self, index: u32) -> Attrs {
        let (p, k) = self.owner(ResourceKind::PhoneNumber, index);
        let plan = self.plan(self.hh_of[p as usize]);
        let mut r = Rng::new(self.seed, T_PHONE, u64::from(index));
        let area = if r.chance(850) {
            CITIES[plan.city].3
        } else {
            r.pick(CITIES).3
        };
        let line = r.below(10_000);
        let carrier = r.chance(400).then(|| *r.pick(CARRIERS));
        let location = if k == 0 {
            "Mobile"
        } else {
            *r.pick(&["Home", "Work", "Mobile"])
        };
        let national = format!("({area}) 555-{line:04}");
        let (created, updated) = self.timestamps(ResourceKind::PhoneNumber, index);

        let mut a = Attrs::with_capacity(11);
        a.push("carrier", opt_str(carrier));
        a.push("country_code", str_value("US"));
        a.push("created_at", created);
        a.push("e164", Value::String(format!("+1{area}555{line:04}")));
        a.push("formatted_number", Value::String(national.clone()));
        a.push(
            "international",
            Value::String(format!("+1 {area}-555-{line:04}")),
        );
        a.push("location", str_value(location));
        a.push("national", Value::String(national.clone()));
        a.push("number", Value::String(national));
        a.push("primary", Value::Bool(k == 0));
        a.push("updated_at", updated);
        a
    }

    fn address(&self, index: u32) -> Attrs {
        let (p, _) = self.owner(ResourceKind::Address, index);
        let plan = self.plan(self.hh_of[p as usize]);
        let mut r = Rng::new(self.seed, T_ADDRESS, u64::from(index));
        // Most members share the household's address; some list a place of their own.
        let own = r.chance(80);
        let (number, street, suffix, city, zip_tail, apartment) = if own {
            (
                r.range(100, 9999),
                *r.pick(STREETS),
                *r.pick(STREET_SUFFIXES),
                r.below(CITIES.len() as u64) as usize,
                r.below(100),
                None,
            )
        } else {
            (
                plan.street_number,
                plan.street,
                plan.suffix,
                plan.city,
                plan.zip_tail,
                plan.apartment.clone(),
            )
        };
        let (city_name, state, zip_prefix, _, _) = CITIES[city];
        let (created, updated) = self.timestamps(ResourceKind::Address, index);

        let mut a = Attrs::with_capacity(11);
        a.push("city", str_value(city_name));
        a.push("country_code", str_value("US"));
        a.push("country_name", str_value("United States"));
        a.push("created_at", created);
        a.push("location", str_value(if own { "Other" } else { "Home" }));
        a.push("primary", Value::Bool(true));
        a.push("state", str_value(state));
        a.push(
            "street_line_1",
            Value::String(format!("{number} {street} {suffix}")),
        );
        a.push(
            "street_line_2",
            apartment.map_or(Value::Null, Value::String),
        );
        a.push("updated_at", updated);
        a.push(
            "zip",
            Value::String(format!("{zip_prefix:03}{zip_tail:02}")),
        );
        a
    }

    fn household(&self, h: u32) -> Attrs {
        let plan = self.plan(h);
        let range = self.household_range(h);
        let (created, updated) = self.timestamps(ResourceKind::Household, h);

        let mut a = Attrs::with_capacity(7);
        a.push(
            "avatar",
            str_value("https://people.example.com/static/no_photo_thumbnail_household_gray.svg"),
        );
        a.push("created_at", created);
        a.push("member_count", Value::from(range.len()));
        a.push("name", Value::String(format!("{} Household", plan.last)));
        a.push(
            "primary_contact_id",
            Value::String(Self::id(ResourceKind::Person, range.start).to_string()),
        );
        a.push(
            "primary_contact_name",
            Value::String(Self::member_name(&plan, 0)),
        );
        a.push("updated_at", updated);
        a
    }

    fn membership(&self, i: u32) -> Attrs {
        let h = self.hh_of[i as usize];
        let pos = (i - self.hh_start[h as usize]) as usize;
        let plan = self.plan(h);
        let pending = Rng::new(self.seed, T_MEMBERSHIP, u64::from(i)).chance(20);

        let mut a = Attrs::with_capacity(3);
        a.push(
            "household_role",
            str_value(plan.members[pos].household_role),
        );
        a.push("pending", Value::Bool(pending));
        a.push("person_name", Value::String(Self::member_name(&plan, pos)));
        a
    }

    fn campus(&self, c: u32) -> Attrs {
        let mut r = Rng::new(self.seed, T_CAMPUS, u64::from(c));
        let offset = (self.seed % CAMPUS_NAMES.len() as u64) as usize;
        let name = CAMPUS_NAMES[(offset + c as usize) % CAMPUS_NAMES.len()];
        let (city, state, zip_prefix, area, tz) = *r.pick(CITIES);
        let number = r.range(100, 9999);
        let street = *r.pick(STREETS);
        let suffix = *r.pick(STREET_SUFFIXES);
        let zip_tail = r.below(100);
        let line = r.below(10_000);
        let latitude = (r.range(25_000_000, 48_000_000) as f64) / 1e6;
        let longitude = -(r.range(75_000_000, 122_000_000) as f64) / 1e6;
        let description = *r.pick(CAMPUS_DESCRIPTIONS);
        let church_center = r.chance(850);
        let slug = slug(name);
        let (created, updated) = self.timestamps(ResourceKind::Campus, c);

        let mut a = Attrs::with_capacity(21);
        a.push(
            "avatar_url",
            Value::String(format!("https://avatars.example.com/campuses/{slug}.png")),
        );
        a.push("church_center_enabled", Value::Bool(church_center));
        a.push("city", str_value(city));
        a.push(
            "contact_email_address",
            Value::String(format!("{slug}@church.example.org")),
        );
        a.push("country", str_value("US"));
        a.push("created_at", created);
        a.push("date_format", str_value("%m/%d/%Y"));
        a.push("description", str_value(description));
        a.push("geolocation_set_manually", Value::Bool(false));
        a.push("latitude", Value::from(latitude));
        a.push("longitude", Value::from(longitude));
        a.push("name", str_value(name));
        a.push(
            "phone_number",
            Value::String(format!("({area}) 555-{line:04}")),
        );
        a.push("state", str_value(state));
        a.push(
            "street",
            Value::String(format!("{number} {street} {suffix}")),
        );
        a.push("time_zone", str_value(tz));
        a.push("time_zone_raw", str_value(tz));
        a.push("twenty_four_hour_time", Value::Bool(false));
        a.push("updated_at", updated);
        a.push(
            "website",
            Value::String(format!("https://church.example.org/{slug}")),
        );
        a.push(
            "zip",
            Value::String(format!("{zip_prefix:03}{zip_tail:02}")),
        );
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn ms(v: &Value) -> i64 {
        parse_instant(v.as_str().unwrap()).unwrap()
    }

    #[test]
    fn layout_shape_is_realistic() {
        let d = Dataset::new(7, 3000);
        assert_eq!(d.count(ResourceKind::Person), 3000);
        let hh = d.households();
        assert!((850..=1150).contains(&hh), "households {hh}");
        assert!((3..=6).contains(&d.count(ResourceKind::Campus)));
        for h in 0..hh {
            let n = d.household_range(h).len();
            assert!((1..=6).contains(&n));
        }
        let emails = d.count(ResourceKind::Email);
        assert!((3000..=6000).contains(&emails));
        assert!(d.count(ResourceKind::PhoneNumber) <= 6000);
        assert!(d.count(ResourceKind::Address) <= 3000);
    }

    #[test]
    fn records_are_consistent() {
        let d = Dataset::new(11, 500);
        for kind in ResourceKind::ALL {
            let mut prev_created = i64::MIN;
            for i in 0..d.count(kind) {
                let rec = d.record(kind, i);
                assert_eq!(d.index(kind, rec.id), Some(i));
                if kind.has_timestamps() {
                    let c = ms(rec.attrs.get("created_at").unwrap());
                    let u = ms(rec.attrs.get("updated_at").unwrap());
                    assert!(u >= c, "{kind} {i}");
                    assert!(u <= GEN_END_S * 1000);
                    assert!(c >= prev_created, "{kind} ids must ascend with created_at");
                    prev_created = c;
                    assert_eq!(Some(c / 1000), d.created_s(kind, i));
                    assert_eq!(Some(u / 1000), d.updated_s(kind, i));
                }
            }
        }
        // Exactly one primary email per person; child flag matches grade.
        for p in 0..500 {
            let primaries = d
                .child_range(ResourceKind::Email, p)
                .filter(|&e| {
                    d.record(ResourceKind::Email, e).attrs.get("primary")
                        == Some(&Value::Bool(true))
                })
                .count();
            assert_eq!(primaries, 1);
            let person = d.record(ResourceKind::Person, p);
            let child = person.attrs.get("child").unwrap().as_bool().unwrap();
            if !child {
                assert_eq!(person.attrs.get("grade"), Some(&Value::Null));
            }
            let name = format!(
                "{} {}",
                person.attrs.get_str("first_name").unwrap(),
                person.attrs.get_str("last_name").unwrap()
            );
            assert_eq!(person.attrs.get_str("name"), Some(name.as_str()));
        }
    }
}
