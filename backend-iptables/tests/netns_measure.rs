//! Measurements, not assertions of speed: the time `iptables-restore` takes to load our layout
//! and kube-proxy's at N service ports x 10 endpoints (`MEASURE_N`, default 1,000), for a cold full
//! sync and for one endpoint change, with both variants, each in a fresh namespace. Prints a
//! table; asserts only that every restore succeeded and our input is the smaller. Needs root.

mod cases;

use std::time::{Duration, Instant};

use backend_iptables::apply::Variant;
use backend_iptables::names::Names;
use backend_iptables::plan::{Applied, Planner};
use backend_iptables::rules::{Family, TableName};
use backend_iptables::testing::kube_layout::kube_proxy_nat;
use proxy_core::table::Endpoint;
use proxy_core::{diff, ServicePort, ServicePortName, SyncMode};
use testkit::netns::Netns;
use testkit::process::run_with_stdin;

fn restore(ns: &Netns, variant: Variant, input: &str) -> Duration {
    let start = Instant::now();
    // Panics with the command (which names the variant's binary) and stderr on failure.
    run_with_stdin(
        "ip",
        &[
            "netns",
            "exec",
            ns.name(),
            variant.restore_binary(Family::V4),
            "--noflush",
        ],
        input,
    );
    start.elapsed()
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn measure_full_and_one_endpoint_syncs_against_kube_proxy_layout() {
    let n: u32 = std::env::var("MEASURE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let before = cases::scale_table(n, 10);
    let name = ServicePortName::new("scale", format!("s{}", n / 2), "p");
    let mut port = ServicePort::clone(before.get(&name).expect("exists"));
    port.endpoints[0] = Endpoint::new("198.18.255.1".parse().expect("ip"), 8080);
    let after = before.edit().insert(port).build().expect("valid");

    let planner = Planner::new(cases::config()).expect("valid config");
    let full = planner.plan_full(&before);
    let ours_full: String = full
        .restores
        .iter()
        .filter(|r| r.family == Family::V4)
        .map(|r| r.input())
        .collect();
    let mut applied = Applied::new();
    applied.commit(&full);
    let partial = planner.plan(&after, &diff(&before, &after), &applied, SyncMode::Partial);
    let ours_partial = partial
        .restore(Family::V4, TableName::Nat)
        .map(|r| r.input())
        .unwrap_or_default();

    let kpl = Names::new("KPL-").expect("prefix");
    let kube_full = kube_proxy_nat(&before, &kpl);
    // kube-proxy's partial sync: the services chain in full, plus the changed SVC and SEP chains
    // (the old SEP chain is deleted, as its stale-chain GC does).
    let kube_after = kube_proxy_nat(&after, &kpl);
    let mut kube_partial = kube_after.clone();
    let svc = kpl.service_cluster(&name, proxy_core::Protocol::Tcp);
    let changed: Vec<String> = kube_after
        .chains
        .iter()
        .filter(|c| c.name == kpl.services() || c.name == svc || kube_full.chain(&c.name).is_none())
        .map(|c| c.name.to_string())
        .collect();
    kube_partial
        .chains
        .retain(|c| changed.contains(&c.name.to_string()));
    kube_partial.deleted = kube_full
        .chains
        .iter()
        .filter(|c| kube_after.chain(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();

    println!("\nN = {n} service ports x 10 endpoints (IPv4)");
    println!("| variant | layout | full: bytes | full: chains | full restore | 1-endpoint change: bytes | restore |");
    println!("|---|---|---|---|---|---|---|");
    for variant in [Variant::Legacy, Variant::Nft] {
        for (layout, full_text, chains, partial_text) in [
            (
                "ours (tree)",
                ours_full.clone(),
                full.chains_written(),
                ours_partial.clone(),
            ),
            (
                "kube-proxy",
                kube_full.to_string(),
                kube_full.chains.len(),
                kube_partial.to_string(),
            ),
        ] {
            let ns = Netns::new(&format!("measure-{variant}"));
            let t_full = restore(&ns, variant, &full_text);
            let t_partial = restore(&ns, variant, &partial_text);
            println!(
                "| {variant} | {layout} | {} | {chains} | {:.3} s | {} | {:.3} s |",
                full_text.len(),
                t_full.as_secs_f64(),
                partial_text.len(),
                t_partial.as_secs_f64()
            );
        }
    }
    assert!(ours_partial.len() < kube_partial.to_string().len());
}
