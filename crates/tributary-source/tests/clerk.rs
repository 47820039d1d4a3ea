//! The built-in `clerk` adapter's mapping, object by object, in the shapes
//! Clerk's Backend API sends: one snapshot per entity of what is stored
//! (id, canonical record, edges, the source's `updated_at`), and the
//! records quarantined with their error.

use serde_json::{Value, json};
use tributary_core::Borrowed;
use tributary_source::{Shape, transform_shaped};

fn clerk() -> tributary_manifest::Manifest {
    tributary_manifest::builtin("clerk").unwrap().unwrap()
}

fn user() -> Value {
    json!({
        "id": "user_2ZkQ", "object": "user", "external_id": null,
        "primary_email_address_id": "idn_2", "primary_phone_number_id": null,
        "username": "zoë", "first_name": "Zoë", "last_name": "Łukasiewicz",
        "image_url": "https://img.clerk.com/zoe", "has_image": true,
        "public_metadata": {"plan": "pro"}, "private_metadata": {}, "unsafe_metadata": {},
        "email_addresses": [
            {"id": "idn_1", "object": "email_address", "email_address": "old@example.com",
             "verification": {"status": "unverified", "strategy": "email_code"}, "linked_to": []},
            {"id": "idn_2", "object": "email_address", "email_address": "zoe@example.com",
             "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []}
        ],
        "phone_numbers": [], "banned": false, "locked": false,
        "last_sign_in_at": 1_700_000_500_000i64,
        "created_at": 1_690_000_000_000i64, "updated_at": 1_700_000_600_000i64
    })
}

fn stored(entity: &str, object: &Value) -> Value {
    let manifest = clerk();
    let record = transform_shaped(
        &manifest.entities[entity],
        &Borrowed::from(object),
        None,
        Shape::Plain,
    )
    .unwrap();
    // The raw JSON is the object as sent.
    assert_eq!(
        &serde_json::from_str::<Value>(record.raw.as_str()).unwrap(),
        object
    );
    json!({
        "external_id": record.external_id,
        "canonical": record.canonical,
        "edges": record.edges.iter().map(|e| json!([e.rel, e.to_entity, e.to_external_id, e.hard])).collect::<Vec<_>>(),
        "source_updated_at": record.source_updated_at,
    })
}

#[test]
fn a_user_maps_its_primary_email_and_keeps_every_email_with_its_verification() {
    insta::assert_json_snapshot!(stored("User", &user()));
}

#[test]
fn an_organization_maps() {
    let org = json!({
        "object": "organization", "id": "org_9", "name": "Ørsted Ærø", "slug": "orsted-aero",
        "image_url": null, "has_image": false, "members_count": 3,
        "max_allowed_memberships": 5, "admin_delete_enabled": true,
        "public_metadata": {"tier": 2}, "private_metadata": {},
        "created_by": "user_2ZkQ",
        "created_at": 1_690_000_000_000i64, "updated_at": 1_700_000_000_000i64
    });
    insta::assert_json_snapshot!(stored("Organization", &org));
}

#[test]
fn a_membership_belongs_to_its_organization_and_user() {
    let membership = json!({
        "id": "orgmem_5", "object": "organization_membership", "role": "org:admin",
        "role_name": "Admin", "permissions": [], "public_metadata": {}, "private_metadata": {},
        "organization": {"object": "organization", "id": "org_9", "name": "Ørsted Ærø",
            "slug": "orsted-aero", "created_at": 1_690_000_000_000i64, "updated_at": 1_700_000_000_000i64},
        "public_user_data": {"user_id": "user_2ZkQ", "first_name": "Zoë", "last_name": "Łukasiewicz",
            "profile_image_url": "", "image_url": "", "has_image": false, "identifier": "zoe@example.com"},
        "created_at": 1_695_000_000_000i64, "updated_at": 1_699_000_000_000i64
    });
    insta::assert_json_snapshot!(stored("OrganizationMembership", &membership));
}

#[test]
fn a_user_without_emails_or_timestamps_is_quarantined_with_the_reason() {
    let manifest = clerk();
    let entity = &manifest.entities["User"];
    let mut no_email = user();
    no_email["email_addresses"] = json!([]);
    let bad = transform_shaped(entity, &Borrowed::from(&no_email), None, Shape::Plain).unwrap_err();
    assert_eq!(bad.external_id.as_deref(), Some("user_2ZkQ"));
    assert!(
        bad.error.contains("`primary_email`") && bad.error.contains("required"),
        "{}",
        bad.error
    );
    let mut no_time = user();
    no_time.as_object_mut().unwrap().remove("created_at");
    let bad = transform_shaped(entity, &Borrowed::from(&no_time), None, Shape::Plain).unwrap_err();
    assert!(bad.error.contains("`created_at`"), "{}", bad.error);
    // The quarantined record keeps the object as sent.
    assert_eq!(bad.raw, no_time);
}
