//! The contract test: real answers of the Clerk simulator, over HTTP, checked against
//! `clerk_contract.json` — the required properties and JSON types of Clerk's schemas, restated
//! from the official specification — and the webhook events against the envelope and the
//! event payload schemas.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_sim::clerk::{ClerkConfig, serve_clerk};

use crate::clerk_common::{KEY, config, sim_with};

const CONTRACT: &str = include_str!("clerk_contract.json");

struct Contract {
    doc: Value,
    /// Objects checked per schema (every schema must be exercised).
    checked: BTreeMap<String, usize>,
    errors: Vec<String>,
}

/// The JSON kind of a value, as the contract names types.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Contract {
    fn new() -> Self {
        Contract {
            doc: serde_json::from_str(CONTRACT).expect("clerk_contract.json is JSON"),
            checked: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Checks `value` against a type such as `string|null` or `array<User>`.
    fn check_type(&mut self, ty: &str, value: &Value, path: &str) {
        let actual = kind(value);
        let Some(alternative) = ty
            .split('|')
            .find(|alt| alt.split('<').next() == Some(actual))
        else {
            self.errors
                .push(format!("{path}: expected {ty}, got {actual} {value}"));
            return;
        };
        let Some(inner) = alternative
            .split_once('<')
            .and_then(|(_, rest)| rest.strip_suffix('>'))
        else {
            return;
        };
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check_schema(inner, item, &format!("{path}[{i}]"));
                }
            }
            _ => self.check_schema(inner, value, path),
        }
    }

    /// Checks an object against a schema of the contract.
    fn check_schema(&mut self, name: &str, value: &Value, path: &str) {
        let schema = self.doc["schemas"][name].clone();
        assert!(schema.is_object(), "no schema {name} in the contract");
        *self.checked.entry(name.to_owned()).or_default() += 1;
        let Some(object) = value.as_object() else {
            self.errors.push(format!("{path}: {name} is not an object"));
            return;
        };
        let required = schema["required"].as_object().unwrap();
        let optional = schema["optional"].as_object().unwrap();
        for (key, ty) in required {
            match object.get(key) {
                Some(v) => self.check_type(ty.as_str().unwrap(), v, &format!("{path}.{key}")),
                None => self
                    .errors
                    .push(format!("{path}: {name} lacks required {key}")),
            }
        }
        for (key, ty) in optional {
            if let Some(v) = object.get(key) {
                self.check_type(ty.as_str().unwrap(), v, &format!("{path}.{key}"));
            }
        }
        if schema["closed"] == true {
            for key in object.keys() {
                if !required.contains_key(key) && !optional.contains_key(key) {
                    self.errors
                        .push(format!("{path}: {name} has no property {key} in the spec"));
                }
            }
        }
        if let Some(constants) = schema["constants"].as_object() {
            for (key, want) in constants {
                if object.get(key) != Some(want) {
                    self.errors.push(format!(
                        "{path}.{key}: expected {want}, got {:?}",
                        object.get(key)
                    ));
                }
            }
        }
    }

    /// Checks an API answer against the contract's type of `route`.
    fn check_answer(&mut self, route: &str, value: &Value) {
        let ty = self.doc["lists"][route]
            .as_str()
            .unwrap_or_else(|| panic!("no list {route} in the contract"))
            .to_owned();
        self.check_type(&ty, value, route);
    }

    /// Checks a webhook envelope and its data.
    fn check_event(&mut self, event: &Value, path: &str) {
        self.check_schema("WebhookEvent", event, path);
        let ty = event["type"].as_str().unwrap_or_default();
        match self.doc["events"][ty].as_str().map(str::to_owned) {
            Some(schema) => self.check_schema(&schema, &event["data"], &format!("{path}.data")),
            None => self
                .errors
                .push(format!("{path}: unexpected event type {ty:?}")),
        }
        if ty.ends_with(".deleted") && !ty.starts_with("organizationMembership") {
            let keys: Vec<&String> = event["data"].as_object().unwrap().keys().collect();
            if keys
                .iter()
                .any(|k| !["object", "id", "deleted", "slug", "external_id"].contains(&k.as_str()))
            {
                self.errors.push(format!(
                    "{path}: a deleted object carries only its id: {keys:?}"
                ));
            }
            if event["data"]["deleted"] != true || !event["data"]["id"].is_string() {
                self.errors.push(format!("{path}: {}", event["data"]));
            }
        }
    }
}

#[tokio::test]
async fn clerk_contract_api_answers_and_webhook_events_match_the_spec() {
    let (sim, _) = sim_with(ClerkConfig {
        rate_limit: Some((1_000, Duration::from_secs(60))),
        ..config(77, 150)
    });
    // Mutations first, so deleted and mutated objects are served too.
    sim.mutate(300, 1);
    let handle = serve_clerk(sim.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = crate::common::client();
    let base = handle.base_url();
    let get = |path: String, key: Option<&'static str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let mut contract = Contract::new();
    let users = get("/users?limit=500".into(), Some(KEY)).await;
    assert_eq!(users.0, 200);
    contract.check_answer("GET /users", &users.1);
    let user_id = users.1[0]["id"].as_str().unwrap().to_owned();
    let (status, user) = get(format!("/users/{user_id}"), Some(KEY)).await;
    assert_eq!(status, 200);
    contract.check_answer("GET /users/{user_id}", &user);
    contract.check_answer(
        "GET /users/count",
        &get("/users/count".into(), Some(KEY)).await.1,
    );
    let flags = "include_members_count=true&include_missing_member_with_elevated_permissions=true";
    for query in [String::new(), format!("?{flags}")] {
        let sep = if query.is_empty() { '?' } else { '&' };
        let (status, orgs) = get(format!("/organizations{query}{sep}limit=500"), Some(KEY)).await;
        assert_eq!(status, 200, "{orgs}");
        contract.check_answer("GET /organizations", &orgs);
        let org_id = orgs["data"][0]["id"].as_str().unwrap().to_owned();
        let (status, org) = get(format!("/organizations/{org_id}{query}"), Some(KEY)).await;
        assert_eq!(status, 200);
        contract.check_answer("GET /organizations/{organization_id}", &org);
        let (status, members) =
            get(format!("/organizations/{org_id}/memberships"), Some(KEY)).await;
        assert_eq!(status, 200);
        contract.check_answer("GET /organizations/{organization_id}/memberships", &members);
    }
    let (status, memberships) = get("/organization_memberships?limit=500".into(), Some(KEY)).await;
    assert_eq!(status, 200);
    contract.check_answer("GET /organization_memberships", &memberships);
    // Errors: 401, 404, 422.
    for (path, key, want) in [
        ("/users", None, 401),
        ("/users", Some("sk_test_nope"), 401),
        ("/users/user_missing", Some(KEY), 404),
        ("/users?limit=0", Some(KEY), 422),
        ("/organizations?offset=-3", Some(KEY), 422),
    ] {
        let (status, body) = get(path.into(), key).await;
        assert_eq!(status, want, "{path}");
        contract.check_answer("error", &body);
    }
    // Webhook events as delivered (the control API lists the envelopes).
    let events: Value = client
        .get(format!("{}/events", handle.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = events["data"].as_array().unwrap();
    assert!(events.len() >= 300);
    for (i, event) in events.iter().enumerate() {
        contract.check_event(event, &format!("event[{i}]"));
    }
    handle.shutdown().await;

    // A 429 has the error shape too.
    let (limited, _) = sim_with(ClerkConfig {
        rate_limit: Some((1, Duration::from_secs(60))),
        ..config(1, 3)
    });
    let handle = serve_clerk(limited, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("{}/users", handle.base_url());
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let refused = client.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    contract.check_answer("error", &refused.json::<Value>().await.unwrap());
    handle.shutdown().await;

    assert!(
        contract.errors.is_empty(),
        "{} violations:\n{}",
        contract.errors.len(),
        contract.errors[..contract.errors.len().min(40)].join("\n")
    );
    for schema in contract.doc["schemas"].as_object().unwrap().keys() {
        assert!(
            contract.checked.get(schema).is_some_and(|n| *n > 0),
            "schema {schema} never exercised: {:?}",
            contract.checked
        );
    }
}

#[test]
fn clerk_contract_catches_violations() {
    let mut contract = Contract::new();
    contract.check_schema(
        "DeletedObject",
        &json!({"object": "user", "deleted": "yes", "extra": 1}),
        "x",
    );
    contract.check_schema(
        "Organization",
        &json!({"object": "organization", "id": 1}),
        "y",
    );
    contract.check_type("string|null", &json!(null), "z");
    contract.check_type("integer", &json!(1.5), "w");
    let errors = contract.errors.join("\n");
    assert!(errors.contains("x.deleted: expected boolean"), "{errors}");
    assert!(errors.contains("has no property extra"), "{errors}");
    assert!(errors.contains("lacks required name"), "{errors}");
    assert!(errors.contains("y.id: expected string"), "{errors}");
    assert!(errors.contains("w: expected integer"), "{errors}");
    assert!(!errors.contains("z:"), "{errors}");
}
