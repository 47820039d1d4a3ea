//! The generated Groups data (`/groups/v2`): group types, groups, memberships and events.
//!
//! Like the People data, nothing but a compact layout is stored: per-group membership and
//! event counts as prefix sums, and the generated memberships sorted by person (so deleting a
//! person finds their group memberships). Every value comes from [`Rng`] streams keyed by
//! `(seed, tag, index)`; the tags below are never renumbered.

use std::ops::Range;

use serde_json::{Value, json};

use crate::generate::Dataset;
use crate::record::{Attrs, Links};
use crate::rng::Rng;
use crate::schema::ResourceKind;
use crate::time::{DAY_S, GEN_BASE_S, GEN_END_S, format_ms};

const T_GROUP_TYPE_COUNT: u64 = 13;
const T_GROUP_COUNTS: u64 = 14;
const T_GROUP: u64 = 15;
const T_GROUP_MEMBERS: u64 = 16;
const T_GROUP_MEMBERSHIP: u64 = 17;
const T_EVENT: u64 = 18;
const T_GROUP_TYPE: u64 = 19;

/// Group type names (a seed-dependent rotation picks the first 3–6). Append-only data.
const GROUP_TYPE_NAMES: &[(&str, &str)] = &[
    (
        "Small Groups",
        "Weekly groups that meet in homes across the city.",
    ),
    ("Classes", "Short courses on faith, parenting and finances."),
    (
        "Serving Teams",
        "Teams that serve on Sundays and in the community.",
    ),
    (
        "Bible Studies",
        "Studies working through a book of the Bible.",
    ),
    (
        "Support & Recovery",
        "Confidential groups for support and recovery.",
    ),
    ("Students", "Middle and high school small groups."),
    (
        "Young Adults",
        "Groups for people in their twenties and thirties.",
    ),
    (
        "Care Groups",
        "Groups that care for members through hard seasons.",
    ),
];

const GROUP_COLORS: &[&str] = &[
    "#4a90e2", "#50e3c2", "#f5a623", "#d0021b", "#9013fe", "#7ed321", "#bd10e0", "#8b572a",
];

const GROUP_PREFIXES: &[&str] = &[
    "Northside",
    "Southside",
    "Downtown",
    "Westgate",
    "Eastwood",
    "Riverside",
    "Hillcrest",
    "Lakeview",
    "Monday Night",
    "Tuesday Morning",
    "Wednesday Night",
    "Thursday Lunch",
    "Friday Morning",
    "Saturday",
    "Sunday Evening",
    "Young Families",
    "Empty Nesters",
    "Newly Married",
];

const GROUP_NOUNS: &[&str] = &[
    "Small Group",
    "Bible Study",
    "Prayer Group",
    "Men's Group",
    "Women's Group",
    "Book Club",
    "Running Club",
    "Parenting Class",
    "Financial Peace",
    "Alpha Course",
    "GriefShare",
    "Worship Team",
    "Hospitality Team",
    "Kids Ministry Team",
];

const SCHEDULES: &[&str] = &[
    "Mondays at 7:00pm",
    "Tuesdays at 6:30am",
    "Tuesdays at 7:00pm",
    "Wednesdays at 6:30pm",
    "Thursdays at 12:00pm",
    "Every other Friday at 7:00pm",
    "Saturdays at 8:00am",
    "Sundays at 5:00pm",
    "First Sunday of the month",
];

const EVENT_NAMES: &[&str] = &[
    "Weekly Gathering",
    "Bible Study",
    "Prayer Night",
    "Social Night",
    "Service Project",
    "Potluck Dinner",
    "Kickoff",
    "Game Night",
    "Study Session",
    "End of Season Party",
];

/// The compact layout of the generated Groups data.
#[derive(Debug)]
pub(crate) struct GroupsLayout {
    group_types: u32,
    /// `mem_start[g]..mem_start[g + 1]` are the membership indices of group `g`.
    mem_start: Vec<u32>,
    /// `ev_start[g]..ev_start[g + 1]` are the event indices of group `g`.
    ev_start: Vec<u32>,
    /// `(person index, membership index)` of every generated membership, sorted.
    by_person: Vec<(u32, u32)>,
}

impl GroupsLayout {
    /// 3–6 group types; about `people / 20` groups with 3–15 members each (never more than
    /// there are people) and 0–6 events each.
    pub(crate) fn new(seed: u64, people: u32) -> Self {
        let group_types = 3 + Rng::new(seed, T_GROUP_TYPE_COUNT, 0).below(4) as u32;
        let groups = if people == 0 { 0 } else { (people + 10) / 20 };
        let mut mem_start = Vec::with_capacity(groups as usize + 1);
        let mut ev_start = Vec::with_capacity(groups as usize + 1);
        let (mut m, mut e) = (0u32, 0u32);
        for g in 0..groups {
            mem_start.push(m);
            ev_start.push(e);
            let mut r = Rng::new(seed, T_GROUP_COUNTS, u64::from(g));
            m += (r.range(3, 15) as u32).min(people);
            e += r.range(0, 6) as u32;
        }
        mem_start.push(m);
        ev_start.push(e);
        let mut layout = GroupsLayout {
            group_types,
            mem_start,
            ev_start,
            by_person: Vec::with_capacity(m as usize),
        };
        let mut by_person = Vec::with_capacity(m as usize);
        for g in 0..groups {
            let first = layout.mem_start[g as usize];
            for (k, p) in layout.members(seed, people, g).into_iter().enumerate() {
                by_person.push((p, first + k as u32));
            }
        }
        by_person.sort_unstable();
        layout.by_person = by_person;
        layout
    }

    fn groups(&self) -> u32 {
        (self.mem_start.len() - 1) as u32
    }

    pub(crate) fn count(&self, kind: ResourceKind) -> u32 {
        match kind {
            ResourceKind::GroupType => self.group_types,
            ResourceKind::Group => self.groups(),
            ResourceKind::Membership => *self.mem_start.last().unwrap_or(&0),
            ResourceKind::Event => *self.ev_start.last().unwrap_or(&0),
            _ => 0,
        }
    }

    /// The indices of `kind` (Membership or Event) that generated group `g` owns.
    pub(crate) fn group_range(&self, kind: ResourceKind, g: u32) -> Range<u32> {
        let starts = match kind {
            ResourceKind::Membership => &self.mem_start,
            ResourceKind::Event => &self.ev_start,
            _ => return 0..0,
        };
        starts[g as usize]..starts[g as usize + 1]
    }

    /// The indices of the generated memberships of person index `p`.
    pub(crate) fn person_memberships(&self, p: u32) -> impl Iterator<Item = u32> + '_ {
        let start = self.by_person.partition_point(|&(q, _)| q < p);
        self.by_person[start..]
            .iter()
            .take_while(move |&&(q, _)| q == p)
            .map(|&(_, m)| m)
    }

    /// `(group index, position in the group)` of a membership or event index.
    fn owner(&self, kind: ResourceKind, index: u32) -> (u32, u32) {
        let starts = match kind {
            ResourceKind::Membership => &self.mem_start,
            _ => &self.ev_start,
        };
        let g = starts.partition_point(|&s| s <= index) - 1;
        (g as u32, index - starts[g])
    }

    /// The distinct person indices of group `g`'s members, in membership order.
    fn members(&self, seed: u64, people: u32, g: u32) -> Vec<u32> {
        let n = self.group_range(ResourceKind::Membership, g).len();
        let mut r = Rng::new(seed, T_GROUP_MEMBERS, u64::from(g));
        let mut out: Vec<u32> = Vec::with_capacity(n);
        while out.len() < n {
            let p = r.below(u64::from(people)) as u32;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn at(seconds: i64) -> Value {
    Value::String(format_ms(seconds * 1000))
}

impl Dataset {
    fn gl(&self) -> &GroupsLayout {
        &self.groups
    }

    /// `created_at` of generated group `g`, in seconds: groups are spread over the generated
    /// period in id order.
    pub(crate) fn group_created_s(&self, g: u32) -> i64 {
        let n = i64::from(self.gl().groups().max(1));
        let span = GEN_END_S - 60 * DAY_S - GEN_BASE_S;
        let slot = span / n;
        let jitter = Rng::new(self.seed, T_GROUP, u64::from(g)).below((slot / 2).max(1) as u64);
        GEN_BASE_S + i64::from(g) * span / n + jitter as i64
    }

    /// The single-valued relationships of a generated Groups resource.
    pub(crate) fn groups_links(&self, kind: ResourceKind, index: u32) -> Links {
        match kind {
            ResourceKind::Group => {
                let mut r = Rng::new(self.seed, T_GROUP, u64::from(index));
                r.next_u64(); // the created_at jitter
                Links {
                    group_type: Some(Self::id(
                        ResourceKind::GroupType,
                        r.below(u64::from(self.gl().group_types)) as u32,
                    )),
                    ..Links::default()
                }
            }
            ResourceKind::Membership => {
                let (g, k) = self.gl().owner(kind, index);
                let members = self.gl().members(self.seed, self.people, g);
                Links {
                    group: Some(Self::id(ResourceKind::Group, g)),
                    person: Some(Self::id(ResourceKind::Person, members[k as usize])),
                    ..Links::default()
                }
            }
            ResourceKind::Event => Links {
                group: Some(Self::id(
                    ResourceKind::Group,
                    self.gl().owner(kind, index).0,
                )),
                ..Links::default()
            },
            _ => Links::default(),
        }
    }

    /// The attributes of a generated Groups resource (keys in order).
    pub(crate) fn groups_attrs(&self, kind: ResourceKind, index: u32) -> Attrs {
        match kind {
            ResourceKind::GroupType => self.group_type(index),
            ResourceKind::Group => self.group(index),
            ResourceKind::Membership => self.group_membership(index),
            _ => self.event(index),
        }
    }

    fn group_type(&self, t: u32) -> Attrs {
        let offset = (self.seed % GROUP_TYPE_NAMES.len() as u64) as usize;
        let (name, description) = GROUP_TYPE_NAMES[(offset + t as usize) % GROUP_TYPE_NAMES.len()];
        let mut r = Rng::new(self.seed, T_GROUP_TYPE, u64::from(t));
        let color = *r.pick(GROUP_COLORS);
        let visible = r.chance(800);
        let map = visible && r.chance(500);
        let id = Self::id(ResourceKind::GroupType, t);

        let mut a = Attrs::with_capacity(7);
        a.push("church_center_map_visible", Value::Bool(map));
        a.push("church_center_visible", Value::Bool(visible));
        a.push("color", s(color));
        a.push("description", s(description));
        a.push("name", s(name));
        a.push("position", Value::from(t + 1));
        a.push(
            "public_church_center_web_url",
            Value::String(format!(
                "https://tributary-sim.churchcenter.com/groups/{id}"
            )),
        );
        a
    }

    fn group(&self, g: u32) -> Attrs {
        let created = self.group_created_s(g);
        let mut r = Rng::new(self.seed, T_GROUP, u64::from(g));
        r.next_u64(); // the created_at jitter
        r.next_u64(); // the group type
        let name = format!("{} {}", r.pick(GROUP_PREFIXES), r.pick(GROUP_NOUNS));
        let archived = r.chance(80);
        let archived_at = created + r.below((GEN_END_S - created).max(1) as u64) as i64;
        let schedule = r.chance(850).then(|| *r.pick(SCHEDULES));
        let chat = r.chance(600);
        let listed = !archived && r.chance(700);
        let confidential = r.chance(150);
        let leaders_search = r.chance(100);
        let virtual_meeting = r.chance(150);
        let contact = r.chance(400);
        let events_public = r.chance(300);
        let members = self.gl().group_range(ResourceKind::Membership, g).len();
        let id = Self::id(ResourceKind::Group, g);
        let slug: String = name
            .chars()
            .filter_map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' => Some(c.to_ascii_lowercase()),
                ' ' => Some('-'),
                _ => None,
            })
            .collect();
        let description = format!("{name} meets {}.", schedule.unwrap_or("regularly"));

        let mut a = Attrs::with_capacity(17);
        a.push(
            "archived_at",
            if archived {
                at(archived_at)
            } else {
                Value::Null
            },
        );
        a.push("chat_enabled", Value::Bool(chat));
        a.push(
            "contact_email",
            if contact {
                Value::String(format!("{slug}@church.example.org"))
            } else {
                Value::Null
            },
        );
        a.push("created_at", at(created));
        a.push(
            "description",
            Value::String(format!("<p>{description}</p>")),
        );
        a.push("description_as_plain_text", Value::String(description));
        a.push(
            "events_visibility",
            s(if events_public { "public" } else { "members" }),
        );
        a.push(
            "header_image",
            json!({
                "thumbnail": format!("https://groups.example.com/groups/{id}/thumbnail.png"),
                "medium": format!("https://groups.example.com/groups/{id}/medium.png"),
                "original": format!("https://groups.example.com/groups/{id}/original.png"),
            }),
        );
        a.push(
            "leaders_can_search_people_database",
            Value::Bool(leaders_search),
        );
        a.push("listed", Value::Bool(listed));
        a.push(
            "location_type_preference",
            s(if virtual_meeting {
                "virtual"
            } else {
                "physical"
            }),
        );
        a.push("members_are_confidential", Value::Bool(confidential));
        a.push("memberships_count", Value::from(members));
        a.push("name", Value::String(name));
        a.push(
            "public_church_center_web_url",
            Value::String(format!(
                "https://tributary-sim.churchcenter.com/groups/{slug}-{id}"
            )),
        );
        a.push("schedule", schedule.map_or(Value::Null, s));
        a.push(
            "virtual_location_url",
            if virtual_meeting {
                Value::String(format!("https://meet.example.com/g{id}"))
            } else {
                Value::Null
            },
        );
        a
    }

    fn group_membership(&self, m: u32) -> Attrs {
        let (g, k) = self.gl().owner(ResourceKind::Membership, m);
        let person = self.gl().members(self.seed, self.people, g)[k as usize];
        let mut r = Rng::new(self.seed, T_GROUP_MEMBERSHIP, u64::from(m));
        let leader = k == 0 || (k == 1 && r.chance(400));
        let from = self.group_created_s(g).max(
            self.created_s(ResourceKind::Person, person)
                .unwrap_or(GEN_BASE_S),
        );
        let joined = from + r.below((GEN_END_S - from).max(1) as u64) as i64;

        let mut a = Attrs::with_capacity(2);
        a.push("joined_at", at(joined));
        a.push("role", s(if leader { "leader" } else { "member" }));
        a
    }

    fn event(&self, e: u32) -> Attrs {
        let (g, _) = self.gl().owner(ResourceKind::Event, e);
        let created = self.group_created_s(g);
        let mut r = Rng::new(self.seed, T_EVENT, u64::from(e));
        let name = *r.pick(EVENT_NAMES);
        let day =
            created / DAY_S + 1 + r.below(((GEN_END_S - created) / DAY_S - 5).max(1) as u64) as i64;
        let starts = day * DAY_S + r.range(13, 23) * 3600 + [0, 1800][r.below(2) as usize];
        let multi_day = r.chance(50);
        let ends = if multi_day {
            starts + r.range(1, 3) * DAY_S
        } else {
            starts + r.range(1, 3) * 3600
        };
        let canceled = r.chance(60);
        let canceled_at = (starts - r.range(3600, 3 * DAY_S)).max(created);
        let reminders = r.chance(500);
        let repeating = r.chance(700);
        let virtual_meeting = r.chance(100);
        let visitors = if canceled { 0 } else { r.range(0, 4) };
        let id = Self::id(ResourceKind::Event, e);

        let mut a = Attrs::with_capacity(15);
        a.push("attendance_requests_enabled", Value::Bool(false));
        a.push("automated_reminder_enabled", Value::Bool(reminders));
        a.push("canceled", Value::Bool(canceled));
        a.push(
            "canceled_at",
            if canceled {
                at(canceled_at)
            } else {
                Value::Null
            },
        );
        a.push("description", Value::Null);
        a.push("ends_at", at(ends));
        a.push(
            "location_type_preference",
            s(if virtual_meeting {
                "virtual"
            } else {
                "physical"
            }),
        );
        a.push("multi_day", Value::Bool(multi_day));
        a.push("name", s(name));
        a.push("reminders_sent", Value::Bool(reminders && !canceled));
        a.push(
            "reminders_sent_at",
            if reminders && !canceled {
                at(starts - DAY_S)
            } else {
                Value::Null
            },
        );
        a.push("repeating", Value::Bool(repeating));
        a.push("starts_at", at(starts));
        a.push(
            "virtual_location_url",
            if virtual_meeting {
                Value::String(format!("https://meet.example.com/e{id}"))
            } else {
                Value::Null
            },
        );
        a.push("visitors_count", Value::from(visitors));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_shape_is_realistic() {
        let d = Dataset::new(5, 2000);
        assert!((3..=6).contains(&d.count(ResourceKind::GroupType)));
        assert_eq!(d.count(ResourceKind::Group), 100);
        let gl = &d.groups;
        for g in 0..100 {
            let n = gl.group_range(ResourceKind::Membership, g).len();
            assert!((3..=15).contains(&n), "{n}");
            assert!(gl.group_range(ResourceKind::Event, g).len() <= 6);
            let members = gl.members(5, 2000, g);
            let mut dedup = members.clone();
            dedup.sort_unstable();
            dedup.dedup();
            assert_eq!(dedup.len(), members.len());
        }
        // by_person finds every membership of a person.
        let m = d.record(ResourceKind::Membership, 17);
        let p = d
            .index(ResourceKind::Person, m.links.person.unwrap())
            .unwrap();
        assert!(gl.person_memberships(p).any(|x| x == 17));
        // Groups are created in id order; members join after their group and themselves exist.
        let mut prev = 0;
        for g in 0..100 {
            let c = d.group_created_s(g);
            assert!(c >= prev && c < GEN_END_S);
            prev = c;
        }
        // Tiny data sets stay consistent.
        let tiny = Dataset::new(1, 10);
        assert_eq!(tiny.count(ResourceKind::Group), 1);
        assert!((3..=10).contains(&tiny.count(ResourceKind::Membership)));
        assert_eq!(Dataset::new(1, 9).count(ResourceKind::Group), 0);
        assert_eq!(Dataset::new(1, 0).count(ResourceKind::Membership), 0);
    }
}
