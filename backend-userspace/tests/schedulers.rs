//! Distribution per scheduler over real connections, and client-IP affinity.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use backend_userspace::UserspaceDataplane;
use common::*;
use proxy_core::table::{Scheduler, SessionAffinity};

/// Starts `weights.len()` backends `b0, b1...` on `net`, a service with `scheduler` on `net.10`,
/// and returns the dataplane, backends and the service address.
async fn setup(
    net: &str,
    scheduler: Scheduler,
    weights: &[u32],
    affinity: SessionAffinity,
) -> (UserspaceDataplane, Vec<Whoami>, std::net::SocketAddr) {
    let mut backends = Vec::new();
    for (i, _) in weights.iter().enumerate() {
        backends.push(Whoami::start(&format!("{net}.{}", 100 + i), &format!("b{i}")).await);
    }
    let endpoints = backends
        .iter()
        .zip(weights)
        .map(|(b, &w)| {
            let mut ep = b.endpoint();
            ep.weight = w;
            ep
        })
        .collect();
    let vip = format!("{net}.10");
    let port = free_port(&vip).await;
    let mut web = service("web", &vip, port, endpoints);
    web.scheduler = Some(scheduler);
    web.session_affinity = affinity;
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([web])).await;
    (dp, backends, (ip(&vip), port).into())
}

/// Sequential connections, each from `source(i)`; counts answers per backend name.
async fn tally(
    addr: std::net::SocketAddr,
    n: usize,
    source: impl Fn(usize) -> Option<std::net::IpAddr>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let name = ask_from(source(i), addr).await.expect("answer");
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn count(counts: &BTreeMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (_dp, _b, addr) = setup(
        "127.12.1",
        Scheduler::RoundRobin,
        &[1, 1, 1],
        SessionAffinity::None,
    )
    .await;
    let counts = tally(addr, 30, |_| None).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{counts:?}"
    );
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let (_dp, _b, addr) = setup(
        "127.12.2",
        Scheduler::WeightedRoundRobin,
        &[3, 1],
        SessionAffinity::None,
    )
    .await;
    let counts = tally(addr, 40, |_| None).await;
    assert_eq!(
        (count(&counts, "b0"), count(&counts, "b1")),
        (30, 10),
        "{counts:?}"
    );
}

#[tokio::test]
async fn random_follows_weights_within_bounds() {
    let (_dp, _b, addr) = setup(
        "127.12.3",
        Scheduler::Random,
        &[3, 1],
        SessionAffinity::None,
    )
    .await;
    let counts = tally(addr, 200, |_| None).await;
    // Expect 150 for b0; binomial sd ≈ 6.1, allow about 4 sd.
    assert!((125..=175).contains(&count(&counts, "b0")), "{counts:?}");
}

#[tokio::test]
async fn least_connection_sends_new_connections_to_the_idlest() {
    let (_dp, _b, addr) = setup(
        "127.12.4",
        Scheduler::LeastConnection,
        &[1, 1],
        SessionAffinity::None,
    )
    .await;
    // Hold connections open: each new one must go where fewer are open.
    let mut held: BTreeMap<String, Vec<tokio::net::TcpStream>> = BTreeMap::new();
    for _ in 0..4 {
        let mut stream = connect_from(None, addr).await.expect("connect");
        held.entry(greeting(&mut stream).await)
            .or_default()
            .push(stream);
    }
    let sizes: Vec<usize> = held.values().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2], "{:?}", held.keys());
    // Close b0's connections: b0 has 0 open, b1 has 2, so the next two both go to b0.
    held.remove("b0");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut next = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(None, addr).await.expect("connect");
        next.push(greeting(&mut stream).await);
        held.entry("new".into()).or_default().push(stream);
    }
    assert_eq!(next, ["b0", "b0"]);
}

#[tokio::test]
async fn source_hash_and_maglev_keep_each_client_on_one_endpoint() {
    for (net, scheduler) in [
        ("127.12.5", Scheduler::SourceHash),
        ("127.12.6", Scheduler::Maglev),
    ] {
        let (_dp, _b, addr) = setup(net, scheduler, &[1, 1, 1], SessionAffinity::None).await;
        let mut per_client = BTreeMap::new();
        for round in 0..3 {
            for c in 1..=30u8 {
                let source = ip(&format!("{net}.{}", 150 + c));
                let name = ask_from(Some(source), addr).await.expect("answer");
                let first = per_client.entry(c).or_insert_with(|| name.clone());
                assert_eq!(
                    *first, name,
                    "{scheduler}: client {c} moved in round {round}"
                );
            }
        }
        let used: std::collections::BTreeSet<_> = per_client.values().collect();
        assert_eq!(
            used.len(),
            3,
            "{scheduler}: 30 clients should reach all 3 endpoints: {per_client:?}"
        );
    }
}

#[tokio::test]
async fn client_ip_affinity_sticks_then_expires() {
    let affinity = SessionAffinity::ClientIp {
        timeout: Duration::from_secs(1),
    };
    let (_dp, _b, addr) = setup("127.12.7", Scheduler::RoundRobin, &[1, 1], affinity).await;
    let (a, b) = (Some(ip("127.12.7.50")), Some(ip("127.12.7.51")));
    // Round robin alone would alternate b0, b1, b0...; affinity keeps client a on b0.
    assert_eq!(ask_from(a, addr).await.expect("answer"), "b0");
    for i in 0..5 {
        assert_eq!(
            ask_from(a, addr).await.expect("answer"),
            "b0",
            "connection {i} left its endpoint"
        );
    }
    assert_eq!(
        ask_from(b, addr).await.expect("answer"),
        "b1",
        "client b is balanced on its own"
    );
    // After the timeout both pins are gone: b takes round robin's next (b0), and a, no longer
    // pinned, takes the one after (b1).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask_from(b, addr).await.expect("answer"), "b0");
    assert_eq!(
        ask_from(a, addr).await.expect("answer"),
        "b1",
        "a's pin should have expired"
    );
    assert_eq!(
        ask_from(a, addr).await.expect("answer"),
        "b1",
        "and a is pinned anew"
    );
}
