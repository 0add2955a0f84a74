//! The conformance cases against backend-userspace in capture mode (kube-proxy's old userspace
//! proxier: iptables `REDIRECT`s each service address to the proxy's own listener). A proxy
//! opens its own connection to the endpoint, so flows that check an unmasqueraded source run
//! without that check, and the report says so.

use backend_userspace::{ListenMode, UserspaceConfig, UserspaceDataplane};
use conformance::cases::{Backend, HOST_TIMEOUT};
use conformance::runner::run_backend;
use conformance::topology::CLUSTER_CIDR;

fn dataplane() -> UserspaceDataplane {
    UserspaceDataplane::new(UserspaceConfig {
        mode: ListenMode::Capture,
        // The pod network: pods reaching an external address of a Local service are
        // short-circuited to every endpoint, as with kube-proxy's `--cluster-cidr`.
        cluster_cidrs: vec![CLUSTER_CIDR.parse().expect("cidr")],
        // node_addresses left empty: node ports on every address of the node, as kube-proxy.
        // A dead endpoint is tried for at most this long before the next one.
        connect_timeout: HOST_TIMEOUT,
        ..UserspaceConfig::default()
    })
    .expect("valid config")
}

#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn userspace_passes_the_conformance_cases() {
    let report = run_backend(Backend::Userspace, dataplane, HOST_TIMEOUT);
    report.assert_conformant();
}
