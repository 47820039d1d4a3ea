//! Fault injection, seen by a real HTTP client over a real socket.

use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_sim::{Faults, RateLimit, SimConfig, SimHandle, serve};

use crate::common::client;

async fn start(seed: u64, faults: Faults) -> SimHandle {
    start_with(SimConfig {
        seed,
        people: 120,
        faults,
        ..SimConfig::default()
    })
    .await
}

async fn start_with(config: SimConfig) -> SimHandle {
    serve(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// What a client makes of one GET: `ok`, a status code, `html-502`, `reset` or `malformed`.
async fn fate(client: &reqwest::Client, url: &str) -> String {
    let r = match client.get(url).bearer_auth("sim-token").send().await {
        Ok(r) => r,
        Err(e) => return format!("send error: {e}"),
    };
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let Ok(body) = r.bytes().await else {
        return "reset".into();
    };
    match (status, serde_json::from_slice::<Value>(&body)) {
        (200, Ok(_)) => "ok".into(),
        (200, Err(_)) => {
            assert!(ct.starts_with("application/json"), "{ct}");
            "malformed".into()
        }
        (502, Err(_)) => {
            assert!(ct.starts_with("text/html"), "{ct}");
            "html-502".into()
        }
        (status, Ok(doc)) => {
            assert!(ct.starts_with("application/json"), "{ct}");
            assert_eq!(doc["errors"][0]["status"], status.to_string());
            status.to_string()
        }
        (status, Err(e)) => panic!("{status} with a body that is not JSON: {e}"),
    }
}

fn people_url(base: &str, offset: usize) -> String {
    format!("{base}/people/v2/people?per_page=10&offset={offset}")
}

#[tokio::test]
async fn each_kind_of_fault_is_observable_by_a_client() {
    let client = client();
    let only = |f: fn(&mut Faults)| {
        let mut faults = Faults {
            hang: Duration::from_millis(300),
            ..Faults::default()
        };
        f(&mut faults);
        faults
    };

    // Injected 429: Retry-After 1 and a JSON:API body.
    let sim = start(81, only(|f| f.p429 = 1.0)).await;
    let r = client
        .get(people_url(&sim.base_url(), 0))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["title"], "Too Many Requests");
    assert_eq!(sim.simulator().stats().faults.too_many_requests, 1);
    // Control and OAuth endpoints are never faulted.
    let r = client
        .get(format!("{}/__sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{}/__sim/oauth/grant", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let grant: Value = r.json().await.unwrap();
    let r = client
        .post(format!("{}/oauth/token", sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", grant["refresh_token"].as_str().unwrap()),
            ("client_id", "sim-client"),
            ("client_secret", "sim-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;

    // 5xx: all four codes show up; 502 is a proxy's HTML page.
    let sim = start(82, only(|f| f.p5xx = 1.0)).await;
    let mut seen = std::collections::BTreeSet::new();
    for offset in 0..200 {
        seen.insert(fate(&client, &people_url(&sim.base_url(), offset)).await);
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["500", "503", "504", "html-502"]
    );
    sim.shutdown().await;

    // Reset: the status and headers arrive, the body breaks off.
    let sim = start(83, only(|f| f.reset = 1.0)).await;
    let r = client
        .get(people_url(&sim.base_url(), 0))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "the body must not complete");
    sim.shutdown().await;

    // Malformed: a 200 whose JSON does not parse.
    let sim = start(84, only(|f| f.malformed = 1.0)).await;
    let r = client
        .get(people_url(&sim.base_url(), 0))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let err = r.json::<Value>().await.unwrap_err();
    assert!(err.is_decode(), "{err}");
    sim.shutdown().await;

    // Timeout: nothing for `hang`, then a 504.
    let sim = start(85, only(|f| f.timeout = 1.0)).await;
    let started = Instant::now();
    assert_eq!(fate(&client, &people_url(&sim.base_url(), 0)).await, "504");
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.shutdown().await;

    // Latency applies to every API request, faulted or not.
    let sim = start(
        86,
        Faults {
            latency: Duration::from_millis(150),
            ..Faults::default()
        },
    )
    .await;
    let started = Instant::now();
    assert_eq!(fate(&client, &people_url(&sim.base_url(), 0)).await, "ok");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(sim.simulator().stats().faults.total(), 0);
    sim.shutdown().await;
}

/// The fates of `attempts` attempts of each of `urls` URLs, the URLs in parallel.
async fn fates(seed: u64, urls: usize, attempts: usize) -> Vec<Vec<String>> {
    let sim = start(
        seed,
        Faults {
            p429: 0.1,
            p5xx: 0.1,
            timeout: 0.05,
            reset: 0.1,
            malformed: 0.1,
            hang: Duration::from_millis(20),
            ..Faults::default()
        },
    )
    .await;
    let client = client();
    let tasks: Vec<_> = (0..urls)
        .map(|i| {
            let (client, url) = (client.clone(), people_url(&sim.base_url(), i));
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..attempts {
                    out.push(fate(&client, &url).await);
                }
                out
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    sim.shutdown().await;
    out
}

#[tokio::test]
async fn fates_are_deterministic_per_seed_even_with_concurrent_clients() {
    let a = fates(91, 16, 6).await;
    let b = fates(91, 16, 6).await;
    assert_eq!(a, b);
    let c = fates(92, 16, 6).await;
    assert_ne!(a, c);
    let faulted = a.iter().flatten().filter(|f| *f != "ok").count();
    assert!((10..=60).contains(&faulted), "{faulted} of 96: {a:?}");
    // Attempts from max_per_url (5) on always succeed.
    assert!(a.iter().all(|attempts| attempts[5] == "ok"), "{a:?}");
}

#[tokio::test]
async fn every_url_eventually_succeeds() {
    let sim = start(
        93,
        Faults {
            p429: 0.2,
            p5xx: 0.2,
            timeout: 0.2,
            reset: 0.2,
            malformed: 0.2,
            hang: Duration::from_millis(10),
            max_per_url: 3,
            ..Faults::default()
        },
    )
    .await;
    let client = client();
    let mut attempts = 0;
    for offset in 0..12 {
        let url = people_url(&sim.base_url(), offset * 10);
        let mut n = 0;
        while fate(&client, &url).await != "ok" {
            n += 1;
        }
        assert_eq!(
            n, 3,
            "every attempt below max_per_url fails when the odds are 1"
        );
        attempts += n + 1;
    }
    let stats = sim.simulator().stats();
    assert_eq!(stats.faults.total(), 36);
    assert_eq!(stats.total, attempts);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_hung_request() {
    let sim = start(
        94,
        Faults {
            timeout: 1.0,
            hang: Duration::from_secs(30),
            ..Faults::default()
        },
    )
    .await;
    let url = people_url(&sim.base_url(), 0);
    let request = tokio::spawn(async move { fate(&client(), &url).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.simulator().stats().faults.timeout == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    sim.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    let fate = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the hung request ends with the server")
        .unwrap();
    assert!(fate == "504" || fate.starts_with("send error"), "{fate}");
}

#[tokio::test]
async fn stats_split_real_and_injected_429s_and_count_each_fault() {
    // Every request is an injected 429 until the real limit (2 per window) refuses it first.
    let sim = start_with(SimConfig {
        seed: 95,
        people: 20,
        rate_limit: Some(RateLimit::new(2, Duration::from_secs(60))),
        faults: Faults {
            p429: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let url = people_url(&sim.base_url(), 0);
    let mut counts = Vec::new();
    for _ in 0..3 {
        let r = client
            .get(&url)
            .bearer_auth("sim-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        // Injected faults carry the rate headers too: they passed the real limiter.
        counts.push(r.headers()["x-pco-api-request-rate-count"].clone());
    }
    assert_eq!(counts, ["1", "2", "2"]);
    let stats: Value = client
        .get(format!("{}/__sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rate_limited"], 1);
    assert_eq!(stats["faults"]["too_many_requests"], 2);
    assert_eq!(stats["by_status"]["429"], 3);
    sim.shutdown().await;

    // One of each kind, counted separately.
    let sim = start(
        96,
        Faults {
            p5xx: 0.25,
            timeout: 0.25,
            reset: 0.25,
            malformed: 0.25,
            hang: Duration::from_millis(10),
            ..Faults::default()
        },
    )
    .await;
    let mut expected = [0u64; 4];
    for offset in 0..40 {
        match fate(&client, &people_url(&sim.base_url(), offset))
            .await
            .as_str()
        {
            "500" | "503" | "html-502" => expected[0] += 1,
            // A 504 is either a 5xx or a timeout; the stats tell them apart.
            "504" => {}
            "reset" => expected[2] += 1,
            "malformed" => expected[3] += 1,
            other => panic!("{other}"),
        }
    }
    let faults = sim.simulator().stats().faults;
    assert!(
        faults.server_error >= expected[0] && faults.timeout > 0,
        "{faults:?}"
    );
    assert_eq!(faults.reset, expected[2]);
    assert_eq!(faults.malformed, expected[3]);
    assert_eq!(faults.total(), 40);
    assert_eq!(faults.too_many_requests, 0);
    let r = client
        .delete(format!("{}/__sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sim.simulator().stats().faults.total(), 0);
    sim.shutdown().await;
}
