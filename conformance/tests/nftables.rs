//! The conformance cases against backend-nftables: one `inet` table of its own, programmed
//! over netlink in the node's namespace (the socket is opened at the first sync, on the
//! driver's thread, so it and the conntrack cleanup both land there).

use backend_nftables::{NftablesConfig, NftablesDataplane};
use conformance::cases::{Backend, HOST_TIMEOUT};
use conformance::runner::run_backend;
use conformance::topology::{node_addresses, CLUSTER_CIDR};

/// The pod network as kube-proxy's `--cluster-cidr`, the node's addresses as the other
/// backends get them; node ports on every local address (no `node_port_addresses`), as
/// kube-proxy. `new` deletes stale UDP conntrack entries over ctnetlink, in the namespace of
/// the thread that syncs: the node's.
fn dataplane() -> NftablesDataplane {
    NftablesDataplane::new(NftablesConfig {
        cluster_cidrs: vec![CLUSTER_CIDR.parse().expect("cidr")],
        node_addresses: node_addresses(),
        ..NftablesConfig::default()
    })
}

#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn nftables_passes_the_conformance_cases() {
    let report = run_backend(Backend::Nftables, dataplane, HOST_TIMEOUT);
    report.assert_conformant();
}
