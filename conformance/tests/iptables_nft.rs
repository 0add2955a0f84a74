//! The conformance cases against backend-iptables through `iptables-nft` (the default, tree,
//! dispatch layout; `iptables_legacy.rs` also runs the flat one).

use std::sync::Arc;

use backend_iptables::apply::{CommandRunner, Variant};
use backend_iptables::conntrack::Netlink;
use backend_iptables::hooks::IptablesHooks;
use backend_iptables::{IptablesConfig, IptablesDataplane, Planner};
use conformance::cases::{Backend, HOST_TIMEOUT};
use conformance::runner::run_backend;
use conformance::topology::{node_addresses, CLUSTER_CIDR};

/// The backend with `iptables-nft` forced (the host's `iptables` may be either), conntrack
/// cleanup in the calling thread's namespace, no owner lock (the namespace is the test's own).
fn dataplane() -> IptablesDataplane {
    let config = IptablesConfig {
        cluster_cidrs: vec![CLUSTER_CIDR.parse().expect("cidr")],
        node_ips: node_addresses(),
        ..IptablesConfig::default()
    };
    let planner = Planner::new(config).expect("valid config");
    let runner = Arc::new(CommandRunner::new(Variant::Nft));
    IptablesDataplane::with_runners(
        planner,
        runner.clone(),
        runner,
        Arc::new(IptablesHooks::new(Variant::Nft)),
    )
    .with_conntrack(Arc::new(Netlink))
}

#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn iptables_nft_passes_the_conformance_cases() {
    let report = run_backend(Backend::IptablesNft, dataplane, HOST_TIMEOUT);
    report.assert_conformant();
}
