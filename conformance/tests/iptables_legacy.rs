//! The conformance cases against backend-iptables through `iptables-legacy`.

use std::sync::Arc;

use backend_iptables::apply::{CommandRunner, Variant};
use backend_iptables::conntrack::Netlink;
use backend_iptables::hooks::IptablesHooks;
use backend_iptables::{DispatchLayout, IptablesConfig, IptablesDataplane, Planner};
use conformance::cases::{Backend, HOST_TIMEOUT};
use conformance::runner::{run_backend, run_backend_as};
use conformance::topology::{node_addresses, CLUSTER_CIDR};

/// The backend with `variant` forced (the host's `iptables` may be either) and `dispatch`,
/// conntrack cleanup in the calling thread's namespace, no owner lock (the namespace is the
/// test's own).
fn dataplane(variant: Variant, dispatch: DispatchLayout) -> IptablesDataplane {
    let config = IptablesConfig {
        cluster_cidrs: vec![CLUSTER_CIDR.parse().expect("cidr")],
        node_ips: node_addresses(),
        dispatch,
        ..IptablesConfig::default()
    };
    let planner = Planner::new(config).expect("valid config");
    let runner = Arc::new(CommandRunner::new(variant));
    IptablesDataplane::with_runners(
        planner,
        runner.clone(),
        runner,
        Arc::new(IptablesHooks::new(variant)),
    )
    .with_conntrack(Arc::new(Netlink))
}

/// The default (tree) dispatch layout.
#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn iptables_legacy_passes_the_conformance_cases() {
    let report = run_backend(
        Backend::IptablesLegacy,
        || dataplane(Variant::Legacy, DispatchLayout::Tree),
        HOST_TIMEOUT,
    );
    report.assert_conformant();
}

/// kube-proxy's flat services chain: the same cases, the other dispatch layout. (Once, with
/// legacy: the layout does not depend on the variant.)
#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn iptables_legacy_flat_dispatch_passes_the_conformance_cases() {
    let report = run_backend_as(
        Backend::IptablesLegacy,
        "iptables-legacy, flat dispatch",
        || dataplane(Variant::Legacy, DispatchLayout::Flat),
        HOST_TIMEOUT,
    );
    report.assert_conformant();
}
