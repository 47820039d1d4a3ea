//! The Groups side of the live data: which memberships and events a group (or a person) has,
//! and the mutations of group types, groups, memberships and events with their cascades.
//!
//! None of the Groups resources has `updated_at` (as in PCO): a mutation changes attributes
//! only. A group's `memberships_count` follows its live memberships.

use serde_json::Value;

use crate::error::SimError;
use crate::generate::Dataset;
use crate::record::{Attrs, Links, Record};
use crate::schema::ResourceKind;
use crate::store::{Mutation, Snap, State, apply_attrs, new_id, rel_one, require, s, snap};
use crate::time::format_ms;

impl Snap<'_> {
    /// Live memberships or events (`kind`) of a group, in id order.
    pub(crate) fn group_children(&self, kind: ResourceKind, group: u64) -> Vec<u64> {
        let generated = self.data.index(ResourceKind::Group, group);
        self.live_ids(
            kind,
            generated
                .into_iter()
                .flat_map(|g| self.data.groups.group_range(kind, g)),
            self.st.by_group.get(&(kind, group)),
        )
    }

    /// Live group memberships of a person, in id order.
    pub(crate) fn person_group_memberships(&self, person: u64) -> Vec<u64> {
        let kind = ResourceKind::Membership;
        let generated = self.data.index(ResourceKind::Person, person);
        let mut out = self.live_ids(
            kind,
            generated
                .into_iter()
                .flat_map(|p| self.data.groups.person_memberships(p)),
            self.st.by_person.get(&(kind, person)),
        );
        // Generated memberships of a person are not in id order.
        out.sort_unstable();
        out
    }
}

/// Complete default attributes for a created Groups resource.
pub(crate) fn default_attrs(kind: ResourceKind, id: u64, now: &Value) -> Attrs {
    let mut a = Attrs::default();
    let n = Value::Null;
    let f = Value::Bool(false);
    match kind {
        ResourceKind::GroupType => {
            a.push("church_center_map_visible", f.clone());
            a.push("church_center_visible", f);
            a.push("color", s("#4a90e2"));
            a.push("description", n);
            a.push("name", Value::String(format!("New Group Type {id}")));
            a.push("position", Value::from(0));
            a.push(
                "public_church_center_web_url",
                Value::String(format!(
                    "https://tributary-sim.churchcenter.com/groups/{id}"
                )),
            );
        }
        ResourceKind::Group => {
            a.push("archived_at", n.clone());
            a.push("chat_enabled", Value::Bool(true));
            a.push("contact_email", n.clone());
            a.push("created_at", now.clone());
            a.push("description", n.clone());
            a.push("description_as_plain_text", n.clone());
            a.push("events_visibility", s("members"));
            a.push("header_image", n.clone());
            a.push("leaders_can_search_people_database", f.clone());
            a.push("listed", f.clone());
            a.push("location_type_preference", s("physical"));
            a.push("members_are_confidential", f);
            a.push("memberships_count", Value::from(0));
            a.push("name", Value::String(format!("New Group {id}")));
            a.push(
                "public_church_center_web_url",
                Value::String(format!(
                    "https://tributary-sim.churchcenter.com/groups/new-group-{id}"
                )),
            );
            a.push("schedule", n.clone());
            a.push("virtual_location_url", n);
        }
        ResourceKind::Membership => {
            a.push("joined_at", now.clone());
            a.push("role", s("member"));
        }
        _ => {
            a.push("attendance_requests_enabled", f.clone());
            a.push("automated_reminder_enabled", f.clone());
            a.push("canceled", f.clone());
            a.push("canceled_at", n.clone());
            a.push("description", n.clone());
            a.push("ends_at", now.clone());
            a.push("location_type_preference", s("physical"));
            a.push("multi_day", f.clone());
            a.push("name", s("New Event"));
            a.push("reminders_sent", f.clone());
            a.push("reminders_sent_at", n.clone());
            a.push("repeating", f);
            a.push("starts_at", now.clone());
            a.push("virtual_location_url", n);
            a.push("visitors_count", Value::from(0));
        }
    }
    a
}

/// Creates a GroupType, Group, Membership or Event.
pub(crate) fn create(
    data: &Dataset,
    st: &mut State,
    ts: i64,
    kind: ResourceKind,
    m: Mutation,
) -> Result<Record, SimError> {
    let now = Value::String(format_ms(ts));
    let rel = |name: &str| -> Result<Option<u64>, SimError> {
        m.relationships
            .get(name)
            .map_or(Ok(None), |v| rel_one(name, v))
    };
    let required = |name: &str| -> Result<u64, SimError> {
        rel(name)?.ok_or_else(|| {
            SimError::unprocessable(format!("a new {kind} needs relationships.{name}"))
        })
    };
    // Validate references before allocating anything.
    let mut links = Links::default();
    match kind {
        ResourceKind::Group => {
            links.group_type = rel("group_type")?;
            if let Some(t) = links.group_type {
                require(data, st, ResourceKind::GroupType, t, "group_type")?;
            }
        }
        ResourceKind::Membership => {
            let g = required("group")?;
            let p = required("person")?;
            require(data, st, ResourceKind::Group, g, "group")?;
            require(data, st, ResourceKind::Person, p, "person")?;
            let view = snap(data, st);
            let taken = view
                .group_children(ResourceKind::Membership, g)
                .into_iter()
                .any(|mid| {
                    view.links(ResourceKind::Membership, mid)
                        .and_then(|l| l.person)
                        == Some(p)
                });
            if taken {
                return Err(SimError::unprocessable(format!(
                    "Person {p} is already a member of Group {g}"
                )));
            }
            links.group = Some(g);
            links.person = Some(p);
        }
        ResourceKind::Event => {
            let g = required("group")?;
            require(data, st, ResourceKind::Group, g, "group")?;
            links.group = Some(g);
        }
        _ => {}
    }

    let id = new_id(data, st, kind);
    let mut rec = Record {
        kind,
        id,
        attrs: default_attrs(kind, id, &now),
        links,
    };
    match kind {
        ResourceKind::GroupType => {
            let position = snap(data, st).live_count(ResourceKind::GroupType) + 1;
            rec.attrs.set("position", Value::from(position));
        }
        ResourceKind::Event => {
            rec.attrs
                .set("ends_at", Value::String(format_ms(ts + 3_600_000)));
        }
        _ => {}
    }
    apply_attrs(&mut rec, &m.attributes);
    st.put(rec.clone(), true);
    if let (ResourceKind::Membership, Some(g)) = (kind, links.group) {
        refresh_group(data, st, g);
    }
    Ok(rec)
}

/// What deleting `kind` `id` takes with it (pushed to `cascade`), and the groups whose
/// `memberships_count` must then be refreshed (pushed to `groups`).
pub(crate) fn delete_cascade(
    view: &Snap<'_>,
    kind: ResourceKind,
    id: u64,
    cascade: &mut Vec<(ResourceKind, u64)>,
    groups: &mut Vec<u64>,
) {
    match kind {
        ResourceKind::Person => {
            for m in view.person_group_memberships(id) {
                if let Some(g) = view
                    .links(ResourceKind::Membership, m)
                    .and_then(|l| l.group)
                {
                    groups.push(g);
                }
                cascade.push((ResourceKind::Membership, m));
            }
        }
        ResourceKind::Group => {
            for child in [ResourceKind::Membership, ResourceKind::Event] {
                for c in view.group_children(child, id) {
                    cascade.push((child, c));
                }
            }
        }
        ResourceKind::Membership => {
            if let Some(g) = view.links(kind, id).and_then(|l| l.group) {
                groups.push(g);
            }
        }
        _ => {}
    }
}

/// Brings a group's `memberships_count` up to date after its memberships changed (a deleted
/// group is left alone). Groups have no `updated_at`, so nothing else moves.
pub(crate) fn refresh_group(data: &Dataset, st: &mut State, group: u64) {
    let view = snap(data, st);
    let Some(mut rec) = view.get(ResourceKind::Group, group) else {
        return;
    };
    let count = view.group_children(ResourceKind::Membership, group).len();
    rec.attrs.set("memberships_count", Value::from(count));
    st.put(rec, false);
}
