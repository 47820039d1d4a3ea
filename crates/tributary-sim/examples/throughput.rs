//! Measures the simulator's serving speed over loopback.
//!
//! `cargo run --release -p tributary-sim --example throughput -- [PEOPLE] [SECONDS]`
//!
//! Reports startup time, resident memory, and pages of 100 people per second for sequential
//! keep-alive requests (default order, no includes) and for `include=emails,phone_numbers`.

use std::time::{Duration, Instant};

use tributary_sim::{SimConfig, serve};

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn run(client: &reqwest::Client, base: &str, query: &str, people: usize, secs: u64) -> f64 {
    let started = Instant::now();
    let mut pages = 0u64;
    let mut offset = 0usize;
    while started.elapsed() < Duration::from_secs(secs) {
        let url = format!("{base}/people/v2/people?per_page=100&offset={offset}{query}");
        let body = client
            .get(&url)
            .bearer_auth("sim-token")
            .send()
            .await
            .expect("request")
            .error_for_status()
            .expect("status")
            .bytes()
            .await
            .expect("body");
        assert!(body.len() > 1000);
        pages += 1;
        offset = (offset + 100) % people.max(100);
    }
    pages as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let people: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let started = Instant::now();
    let handle = serve(
        SimConfig {
            people,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("bind");
    println!(
        "people={people} startup={:.0} ms rss={:.0} MB",
        started.elapsed().as_secs_f64() * 1000.0,
        rss_mb().unwrap_or(0.0)
    );
    let client = reqwest::Client::new();
    let base = handle.base_url();
    let plain = run(&client, &base, "", people, secs).await;
    println!("plain pages of 100 people: {plain:.0}/s (client and server on one thread)");
    let inc = run(
        &client,
        &base,
        "&include=emails,phone_numbers",
        people,
        secs,
    )
    .await;
    println!("pages of 100 people with include=emails,phone_numbers: {inc:.0}/s");
    let t = Instant::now();
    let doc: serde_json::Value = client
        .get(format!(
            "{base}/people/v2/people?per_page=100&order=-updated_at&where[updated_at][gte]=2025-01-01T00:00:00Z"
        ))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "first filtered+ordered page (full scan, then cached): {:.0} ms, total_count={}",
        t.elapsed().as_secs_f64() * 1000.0,
        doc["meta"]["total_count"]
    );
    println!("rss after runs={:.0} MB", rss_mb().unwrap_or(0.0));
    handle.shutdown().await;
}
