//! The golden cases: `tables/<case>.yaml` and the configuration they are planned with. Used
//! by `nft_golden.rs` and `nft_load.rs` (`#[path]`-included), and a test target of its own that
//! checks every case loads and plans.
//!
//! Addresses: pods 198.18.0.0/17 (this node's 198.18.1.0/24) and 2001:db8:18::/48; this node
//! 198.18.200.1 and 2001:db8:200::1; cluster IPs 198.19.0.x, external IPs 198.19.100.x, LB IPs
//! 198.19.101.x; clients 198.18.250.0/24.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use backend_nftables::config::NftablesConfig;
use backend_nftables::plan::{desired, DesiredTable};
use testkit::netns::{veth, Netns};

/// The configuration of every case.
pub fn config() -> NftablesConfig {
    NftablesConfig {
        cluster_cidrs: vec![
            "198.18.0.0/17".parse().expect("cidr"),
            "2001:db8:18::/48".parse().expect("cidr"),
        ],
        ..NftablesConfig::default()
    }
}

/// The configuration of one case: [`config`], except `node_port_addresses` (node ports on
/// 198.18.200.0/24 only, and `--masquerade-all`).
pub fn config_for(case: &str) -> NftablesConfig {
    let mut config = config();
    if case == "node_port_addresses" {
        config.node_port_addresses = vec!["198.18.200.0/24".parse().expect("cidr")];
        config.masquerade_all = true;
    }
    config
}

/// This node's addresses.
pub fn node_ips() -> BTreeSet<IpAddr> {
    ["198.18.200.1", "2001:db8:200::1"]
        .iter()
        .map(|s| s.parse().expect("address"))
        .collect()
}

pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Cases whose table `nft` 1.0.6 lists but cannot load back: an IPv6 affinity `update` (a
/// 40-byte key and 20 bytes of data) aborts its register allocation (`netlink_gen_expr:
/// Assertion 'dreg < ctx->reg_low' failed`). We program them over netlink; the tests that load
/// a golden with `nft -f` check that it still fails, so that an `nft` that learns it shows up.
pub const NFT_CANNOT_LOAD: &[&str] = &["affinity_ipv6"];

/// Every case, by name, in name order.
pub fn cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(dir("tables"))
        .expect("tests/tables")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_string();
            (stem, p)
        })
        .collect();
    cases.sort();
    cases
}

/// The desired table of one case.
pub fn plan_case(path: &Path) -> DesiredTable {
    let table =
        proxy_core::file::load_table(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    desired(&table, &config_for(case), &node_ips())
}

#[test]
fn every_case_loads_and_plans() {
    let cases = cases();
    assert!(cases.len() >= 10, "expected the 10 cases, found {cases:?}");
    for (name, path) in cases {
        let d = plan_case(&path);
        assert!(d.table.element_count() > 0, "{name}: no element planned");
    }
}

/// One server per `addrs` (`ip:port`) inside `pod`, each answering its own address and a
/// newline, so that a client sees which endpoint it reached.
pub fn endpoint_servers(pod: &Netns, addrs: &[&'static str]) -> Vec<testkit::net::AnswerServer> {
    addrs
        .iter()
        .map(|&addr| {
            let listener = pod
                .run(move || std::net::TcpListener::bind(addr))
                .expect("bind an endpoint");
            testkit::net::AnswerServer::start(listener, move |_| format!("{addr}\n"))
        })
        .collect()
}

/// A node namespace (our rules) and a pod namespace (the endpoint), named from `prefix`, joined
/// by a veth pair: node 198.18.1.1/24 on `p0`, pod 198.18.1.10/24 on `eth0`; the node routes
/// the cluster IPs out of `p0` so that locally sent traffic to them reaches the nat output hook.
pub fn node_and_pod(prefix: &str) -> (Netns, Netns) {
    let node = Netns::new(&format!("{prefix}node"));
    let pod = Netns::new(&format!("{prefix}pod"));
    veth(&node, "p0", &pod, "eth0");
    node.ip_batch(&[
        "link set lo up",
        "addr add 198.18.1.1/24 dev p0",
        "link set p0 up",
        "route add 198.19.0.0/16 dev p0",
    ]);
    pod.ip_batch(&[
        "link set lo up",
        "addr add 198.18.1.10/24 dev eth0",
        "link set eth0 up",
        "route add default via 198.18.1.1",
    ]);
    (node, pod)
}
