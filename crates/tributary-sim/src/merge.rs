//! [`Simulator::merge`]: PCO's person merger, through the public mutation API.

use crate::{ResourceKind, SimError, Simulator};
use serde_json::Value;

impl Simulator {
    /// Merges person `merged` into person `keep`, as PCO's person merger
    /// does: `merged`'s emails, phone numbers and addresses move to `keep`
    /// (their `updated_at` moves), `keep` joins `merged`'s households and
    /// groups it is not in yet (a group membership keeps its role and
    /// joining date), and `merged` is deleted with its own memberships.
    /// Meant for small data sets: it scans the dump for the children.
    pub fn merge(&self, keep: u64, merged: u64) -> Result<(), SimError> {
        let person_of = |v: &Value| {
            v["relationships"]["person"]["data"]["id"]
                .as_str()
                .and_then(|id| id.parse::<u64>().ok())
        };
        let household_of = |v: &Value| {
            v["relationships"]["household"]["data"]["id"]
                .as_str()
                .and_then(|id| id.parse::<u64>().ok())
        };
        if self.get(ResourceKind::Person, keep).is_none() {
            return Err(SimError::not_found(format!("Person {keep} not found")));
        }
        if self.get(ResourceKind::Person, merged).is_none() {
            return Err(SimError::not_found(format!("Person {merged} not found")));
        }
        for kind in [
            ResourceKind::Email,
            ResourceKind::PhoneNumber,
            ResourceKind::Address,
        ] {
            for child in self.dump(Some(kind)) {
                if person_of(&child) == Some(merged) {
                    let id: u64 = child["id"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .unwrap_or(0);
                    self.update(
                        kind,
                        id,
                        &serde_json::json!({"relationships": {"person": keep.to_string()}}),
                    )?;
                }
            }
        }
        let memberships = self.dump(Some(ResourceKind::HouseholdMembership));
        let households_of = |person: u64| -> Vec<u64> {
            memberships
                .iter()
                .filter(|m| person_of(m) == Some(person))
                .filter_map(household_of)
                .collect()
        };
        let kept_in = households_of(keep);
        for household in households_of(merged) {
            if !kept_in.contains(&household) {
                self.create(
                    ResourceKind::HouseholdMembership,
                    &serde_json::json!({"relationships": {
                        "person": keep.to_string(),
                        "household": household.to_string()
                    }}),
                )?;
            }
        }
        let group_of = |v: &Value| {
            v["relationships"]["group"]["data"]["id"]
                .as_str()
                .and_then(|id| id.parse::<u64>().ok())
        };
        let group_memberships = self.dump(Some(ResourceKind::Membership));
        let kept_groups: Vec<u64> = group_memberships
            .iter()
            .filter(|m| person_of(m) == Some(keep))
            .filter_map(group_of)
            .collect();
        for membership in group_memberships
            .iter()
            .filter(|m| person_of(m) == Some(merged))
        {
            let Some(group) = group_of(membership) else {
                continue;
            };
            if !kept_groups.contains(&group) {
                self.create(
                    ResourceKind::Membership,
                    &serde_json::json!({
                        "attributes": {
                            "role": membership["attributes"]["role"],
                            "joined_at": membership["attributes"]["joined_at"],
                        },
                        "relationships": {
                            "person": keep.to_string(),
                            "group": group.to_string()
                        }
                    }),
                )?;
            }
        }
        self.delete(ResourceKind::Person, merged)?;
        self.inner.store.tell(
            ResourceKind::Person,
            merged,
            crate::store::Action::Merged { keep },
        );
        Ok(())
    }
}
