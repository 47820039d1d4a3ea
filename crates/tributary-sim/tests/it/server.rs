use std::time::Duration;

use serde_json::{Value, json};
use tributary_sim::{ResourceKind, SimConfig, serve};

#[tokio::test]
async fn serves_over_a_real_socket() {
    let handle = serve(
        SimConfig {
            seed: 5,
            people: 150,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let base = handle.base_url();
    assert_eq!(base, format!("http://127.0.0.1:{}", handle.addr().port()));
    // reqwest is built with `rustls-no-provider`: a provider must exist even for http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Unauthenticated: a JSON:API 401.
    let r = client
        .get(format!("{base}/people/v2/people"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["status"], "401");

    // Walk people with absolute next links pointing back at this server.
    let mut next = Some(format!("{base}/people/v2/people?per_page=100"));
    let mut seen = Vec::new();
    while let Some(url) = next {
        assert!(url.starts_with(&base), "{url}");
        let doc: Value = client
            .get(&url)
            .bearer_auth("sim-token")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(
            doc["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].clone()),
        );
        next = doc["links"]["next"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 150);

    // Basic auth works too.
    let r = client
        .get(format!("{base}/people/v2/campuses"))
        .basic_auth("sim-app", Some("sim-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Mutate through the control API and read the dump back.
    let r = client
        .patch(format!("{base}/__sim/people/10000001"))
        .json(&json!({"attributes": {"first_name": "Changed"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dump = client
        .get(format!("{base}/__sim/dump?type=Person"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 150);
    assert_eq!(lines[0]["attributes"]["first_name"], "Changed");

    let stats: Value = client
        .get(format!("{base}/__sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_status_class"]["4xx"], 1);
    assert_eq!(stats["by_status_class"]["2xx"], 3);
    assert_eq!(stats["mutations"], 1);
    assert_eq!(handle.simulator().count(ResourceKind::Person), 150);

    let addr = handle.addr();
    tokio::time::timeout(Duration::from_secs(8), handle.shutdown())
        .await
        .expect("shutdown is bounded");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}
