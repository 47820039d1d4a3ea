use axum::http::Method;
use tributary_sim::{ResourceKind, SimConfig, Simulator};

use crate::common::*;

#[tokio::test]
async fn same_seed_same_data_different_seed_different_data() {
    let a = Simulator::new(config(77, 150));
    let b = Simulator::new(config(77, 150));
    let c = Simulator::new(config(78, 150));
    let (da, db, dc) = (a.dump(None), b.dump(None), c.dump(None));
    assert!(da.len() > 150 * 3);
    assert_eq!(da, db);
    assert_ne!(da, dc);

    // The HTTP dump is the same as the in-process one, and generated data ignores the clock.
    let r = call(&a.router(), Method::GET, "/__sim/dump", Auth::None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    assert_eq!(r.lines(), da);
    let (manual, _) = sim(77, 150);
    assert_eq!(manual.dump(None), da);

    let r = call(
        &a.router(),
        Method::GET,
        "/__sim/dump?type=Person",
        Auth::None,
        None,
    )
    .await;
    let people = r.lines();
    assert_eq!(people.len(), 150);
    assert!(
        people
            .iter()
            .all(|p| p["type"] == "Person" && p.get("links").is_none())
    );
    let r = call(
        &a.router(),
        Method::GET,
        "/__sim/dump?type=phone_numbers",
        Auth::None,
        None,
    )
    .await;
    assert_eq!(r.lines().len(), a.count(ResourceKind::PhoneNumber));
    let r = call(
        &a.router(),
        Method::GET,
        "/__sim/dump?type=Pet",
        Auth::None,
        None,
    )
    .await;
    r.error(400);
}

#[test]
fn a_million_people_start_quickly() {
    let started = std::time::Instant::now();
    let sim = Simulator::new(SimConfig {
        people: 1_000_000,
        ..SimConfig::default()
    });
    assert_eq!(sim.count(ResourceKind::Person), 1_000_000);
    let households = sim.count(ResourceKind::Household);
    assert!((300_000..=370_000).contains(&households), "{households}");
    let last = sim.ids(ResourceKind::Person, 999_999, 10);
    assert_eq!(last, vec![11_000_000]);
    assert!(sim.get(ResourceKind::Person, 11_000_000).is_some());
    // Debug builds are slow; release startup is far below this bound.
    assert!(started.elapsed().as_secs() < 10);
}
