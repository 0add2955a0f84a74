//! The conformance cases against backend-ipvs. Needs root and a kernel with IPVS: it runs in
//! the VM (`scripts/vm-test`); its test names start with `vm_ipvs_`, which `scripts/test`
//! skips on the host (listing them as skipped).

use std::time::Duration;

use backend_ipvs::{IptablesVariant, IpvsConfig, IpvsDataplane};
use conformance::cases::Backend;
use conformance::runner::run_backend;
use conformance::topology::CLUSTER_CIDR;

/// Connects and datagram waits in the VM (emulated, no KVM) take longer than on the host.
const VM_TIMEOUT: Duration = Duration::from_millis(1500);

fn dataplane() -> IpvsDataplane {
    IpvsDataplane::new(IpvsConfig {
        // node_addresses left empty: node ports on every address of the node, as kube-proxy.
        cluster_cidrs: vec![CLUSTER_CIDR.parse().expect("cidr")],
        iptables: IptablesVariant::Legacy,
        ..IpvsConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e:?} (needs root and IPVS: run via scripts/vm-test)"))
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_ipvs_passes_the_conformance_cases() {
    let report = run_backend(Backend::Ipvs, dataplane, VM_TIMEOUT);
    report.assert_conformant();
}
