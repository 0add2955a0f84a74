//! The conformance cases against kube-proxy's own cluster-IP rule layout
//! (`backend_iptables::testing::kube_layout`, completed as `pkg/proxy/iptables/proxier.go`
//! writes it): the reference that proves the harness. Only the cluster-IP flows with ready
//! endpoints run; the report lists the others as skipped.

use backend_iptables::apply::Variant;
use conformance::cases::{Backend, HOST_TIMEOUT};
use conformance::kube_layout::KubeProxyLayout;
use conformance::runner::run_backend;
use conformance::topology::CLUSTER_CIDR;

#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn kube_proxy_layout_passes_the_cluster_ip_cases() {
    let report = run_backend(
        Backend::KubeProxyLayout,
        || KubeProxyLayout::new(CLUSTER_CIDR.parse().expect("cidr"), Variant::Nft),
        HOST_TIMEOUT,
    );
    report.assert_conformant();
    // The reference must have proved something.
    let passed = report
        .results
        .iter()
        .filter(|r| r.verdict == conformance::runner::Verdict::Pass)
        .count();
    assert!(
        passed >= 5,
        "only {passed} flows ran on the reference:\n{report}"
    );
}

/// The same reference with its masquerade marks left out must fail exactly the flows it runs
/// that expect masquerade (hairpin, node and external clients to a cluster IP): the harness
/// sees a missing masquerade, not only a missing endpoint.
#[test]
#[ignore = "needs root: scripts/test runs --include-ignored"]
fn the_harness_catches_a_reference_without_masquerade() {
    use conformance::cases::{plan, scenarios, Expect, Plan, Seen};
    use conformance::runner::Verdict;
    use std::collections::BTreeSet;

    let report = run_backend(
        Backend::KubeProxyLayout,
        || {
            KubeProxyLayout::new(CLUSTER_CIDR.parse().expect("cidr"), Variant::Nft)
                .without_masquerade()
        },
        HOST_TIMEOUT,
    );
    let failed: BTreeSet<&str> = report
        .results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail(_)))
        .map(|r| r.flow)
        .collect();
    let masqueraded: BTreeSet<&str> = scenarios()
        .iter()
        .flat_map(|s| {
            s.flows
                .iter()
                .filter(move |f| plan(Backend::KubeProxyLayout, s, f) == Plan::Run)
        })
        .filter(|f| {
            matches!(
                f.expect,
                Expect::Answer {
                    seen: Seen::Node,
                    ..
                }
            )
        })
        .map(|f| f.name)
        .collect();
    assert!(masqueraded.len() >= 3, "{masqueraded:?}");
    assert_eq!(failed, masqueraded, "\n{report}");
}
