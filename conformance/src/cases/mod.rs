//! The case list: kube-proxy's packet-flow cases as data, each citing where it comes from.
//!
//! A [`Scenario`] is one kube-proxy test function (`pkg/proxy/iptables/proxier_test.go`, whose
//! twin of the same name is in `pkg/proxy/nftables/proxier_test.go`): the service ports it
//! sets up, translated to this topology's addresses, and its [`Flow`]s, each one of the
//! `packetFlowTest`s that test hands to `runPacketFlowTests`, under kube-proxy's own name for
//! it. Where kube-proxy's tracer answers with DNAT targets, the flow expects those endpoints to
//! answer, every one of them and no other; `masq: true/false` becomes the source the endpoint
//! must see ([`Seen`]); `REJECT` becomes refused fast, `DROP` a timeout, and no match (`""`)
//! "no endpoint answers".
//!
//! Every backend runs every flow unless the flow's notes or [`plan`]'s rules say otherwise,
//! with a reason: a **skip** where the case has no meaning for the backend, a **known failure**
//! where the backend is wrong and the reason says how (the runner fails when a known failure
//! starts passing, so that the list stays honest), or a **shared deviation** where the backend
//! departs from the flow exactly as kube-proxy's own mode of the same kind does, with the
//! source that shows it. A shared deviation is run and must still fail, like a known failure,
//! but is reported apart from the bugs: it is kube-proxy's behaviour, not ours to fix.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proxy_core::table::TrafficPolicy;
use proxy_core::{Protocol, ServicePort};

use crate::topology::{
    Host, BLOCKED_CLIENT_IP, CLIENT_IP, NODE_IP, NODE_OWNED_LB_IP, POD_L1, POD_L2, POD_R2,
};

/// The backends the suite knows, for notes that concern one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// backend-iptables with `iptables-legacy`.
    IptablesLegacy,
    /// backend-iptables with `iptables-nft`.
    IptablesNft,
    /// backend-userspace (capture mode: kube-proxy's old userspace proxier).
    Userspace,
    /// backend-ipvs.
    Ipvs,
    /// backend-nftables (one nf_tables table programmed over netlink).
    Nftables,
    /// kube-proxy's own rule layout for cluster IPs (`backend_iptables::testing::kube_layout`),
    /// the reference that proves the harness.
    KubeProxyLayout,
}

impl Backend {
    /// Every backend, in the order of the README's table.
    pub const ALL: [Backend; 6] = [
        Backend::IptablesLegacy,
        Backend::IptablesNft,
        Backend::Userspace,
        Backend::Ipvs,
        Backend::Nftables,
        Backend::KubeProxyLayout,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::IptablesNft => "iptables-nft",
            Backend::Userspace => "userspace",
            Backend::Ipvs => "ipvs",
            Backend::Nftables => "nftables",
            Backend::KubeProxyLayout => "kube-proxy-layout",
        }
    }
}

/// Where a probe starts: a namespace and the source address it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The namespace.
    pub host: Host,
    /// The bound source address.
    pub addr: IpAddr,
}

/// An external client inside the LB source ranges.
pub const FROM_CLIENT: Source = Source {
    host: Host::Client,
    addr: CLIENT_IP,
};
/// An external client outside the LB source ranges.
pub const FROM_BLOCKED_CLIENT: Source = Source {
    host: Host::Client,
    addr: BLOCKED_CLIENT_IP,
};
/// Pod L1 on this node.
pub const FROM_L1: Source = Source {
    host: Host::PodL1,
    addr: POD_L1,
};
/// Pod L2 on this node.
pub const FROM_L2: Source = Source {
    host: Host::PodL2,
    addr: POD_L2,
};
/// Pod R2 on the other node.
pub const FROM_R2: Source = Source {
    host: Host::NodeB,
    addr: POD_R2,
};
/// The node itself, from its client-facing address.
pub const FROM_NODE: Source = Source {
    host: Host::Node,
    addr: NODE_IP,
};
/// The node itself, from the LB IP it owns.
pub const FROM_NODE_AS_LB: Source = Source {
    host: Host::Node,
    addr: NODE_OWNED_LB_IP,
};
/// The node itself, from loopback.
pub const FROM_LOCALHOST: Source = Source {
    host: Host::Node,
    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
};

/// What kind of service address a flow is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestKind {
    /// A cluster IP.
    ClusterIp,
    /// A node port, on one of the node's addresses.
    NodePort,
    /// An external IP.
    ExternalIp,
    /// A load-balancer IP.
    LoadBalancerIp,
}

/// The source address the answering endpoint must have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The probe's own address: not masqueraded (kube-proxy's `masq: false`).
    Client,
    /// The node's address on the link towards the endpoint: masqueraded (`masq: true`).
    Node,
}

/// What a flow must give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exactly these endpoints answer (each at least once, no other ever), having seen this
    /// source.
    Answer {
        /// The endpoints, as address and target port.
        from: Vec<SocketAddr>,
        /// The source they must see.
        seen: Seen,
    },
    /// Refused fast (kube-proxy's `REJECT`): a RST or an ICMP error.
    Refused,
    /// Dropped (kube-proxy's `DROP`): nothing comes back within the timeout.
    Dropped,
    /// Not the service's traffic (kube-proxy's empty output): no endpoint answers, whatever
    /// else happens to the packet.
    NotServed,
}

/// A note on one backend's result for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The flow has no meaning for the backend; why.
    Skip(&'static str),
    /// The backend gets the flow wrong; how. A bug to fix.
    KnownFailure(&'static str),
    /// The backend departs from the flow as kube-proxy's own mode of the same kind does (the
    /// flows come from the iptables mode's tests): not a pass, but not a bug of ours either.
    SharedDeviation {
        /// How the backend, and kube-proxy's mode, depart from the flow.
        how: &'static str,
        /// Where kube-proxy does the same: file, function, and what it does.
        source: &'static str,
    },
}

/// One packet flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// kube-proxy's name for it (`packetFlowTest.name`).
    pub name: &'static str,
    /// Where it starts.
    pub from: Source,
    /// The service address and port it is sent to.
    pub to: SocketAddr,
    /// What kind of address that is.
    pub kind: DestKind,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// What it must give.
    pub expect: Expect,
    /// Per-backend skips and known failures.
    pub notes: Vec<(Backend, Note)>,
}

impl Flow {
    fn new(
        name: &'static str,
        from: Source,
        to: (IpAddr, u16),
        kind: DestKind,
        expect: Expect,
    ) -> Self {
        Self {
            name,
            from,
            to: SocketAddr::new(to.0, to.1),
            kind,
            protocol: Protocol::Tcp,
            expect,
            notes: Vec::new(),
        }
    }

    fn udp(mut self) -> Self {
        self.protocol = Protocol::Udp;
        self
    }

    fn note(mut self, backends: &[Backend], note: Note) -> Self {
        self.notes.extend(backends.iter().map(|b| (*b, note)));
        self
    }
}

/// One kube-proxy test function's services and flows.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// A short id for reports (`load_balancer`).
    pub id: &'static str,
    /// Where it comes from: the kube-proxy test function(s).
    pub origin: &'static str,
    /// The service ports it sets up.
    pub ports: Vec<ServicePort>,
    /// Its flows.
    pub flows: Vec<Flow>,
}

impl Scenario {
    /// The service port `flow` is sent to, if any of this scenario's is.
    pub fn port_for(&self, flow: &Flow) -> Option<&ServicePort> {
        let (addr, port) = (flow.to.ip(), flow.to.port());
        self.ports.iter().find(|p| {
            p.protocol == flow.protocol
                && match flow.kind {
                    DestKind::ClusterIp => p.cluster_ips.contains(&addr) && p.port == port,
                    DestKind::ExternalIp => p.external_ips.contains(&addr) && p.port == port,
                    DestKind::LoadBalancerIp => {
                        p.load_balancer_ips.contains(&addr) && p.port == port
                    }
                    DestKind::NodePort => p.node_port == Some(port),
                }
        })
    }
}

/// How a backend runs one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Run it and check everything.
    Run,
    /// Run it, check the endpoints, but not the source they saw; why.
    RunWithoutSourceCheck(&'static str),
    /// Do not run it; why.
    Skip(String),
    /// Run it; it is expected to fail, for this reason.
    KnownFailure(&'static str),
    /// Run it; it is expected to fail, as kube-proxy's own mode does (how, and where it does).
    SharedDeviation {
        /// How it departs from the flow.
        how: &'static str,
        /// Where kube-proxy does the same.
        source: &'static str,
    },
}

const USERSPACE_SOURCE: &str =
    "a proxy opens its own connection to the endpoint, which always sees the node: \
     masquerade has no meaning";

/// How `backend` runs `flow` of `scenario`: the flow's own notes first, then the rules that
/// follow from what a backend is.
pub fn plan(backend: Backend, scenario: &Scenario, flow: &Flow) -> Plan {
    if let Some((_, note)) = flow.notes.iter().find(|(b, _)| *b == backend) {
        return match note {
            Note::Skip(why) => Plan::Skip((*why).to_owned()),
            Note::KnownFailure(why) => Plan::KnownFailure(why),
            Note::SharedDeviation { how, source } => Plan::SharedDeviation { how, source },
        };
    }
    match backend {
        Backend::KubeProxyLayout => {
            let rendered = flow.kind == DestKind::ClusterIp
                && (flow.expect == Expect::NotServed
                    || scenario.port_for(flow).is_some_and(|p| {
                        p.internal_traffic_policy == TrafficPolicy::Cluster
                            && !p.endpoints.is_empty()
                            && p.endpoints.iter().all(|e| e.ready)
                    }));
            if rendered {
                Plan::Run
            } else {
                Plan::Skip(
                    "kube_layout.rs renders cluster IPs with ready endpoints only (no node \
                     ports, external or LB addresses, REJECT, policies or terminating endpoints)"
                        .to_owned(),
                )
            }
        }
        Backend::Userspace => match flow.expect {
            Expect::Answer {
                seen: Seen::Client, ..
            } => Plan::RunWithoutSourceCheck(USERSPACE_SOURCE),
            _ => Plan::Run,
        },
        Backend::IptablesLegacy | Backend::IptablesNft | Backend::Ipvs | Backend::Nftables => {
            Plan::Run
        }
    }
}

/// This node's name in the tables.
pub const NODE_NAME: &str = "node-a";

/// How long a TCP connect may take on this host before the SYN counts as dropped. Short, so
/// that the drop cases cost little; the VM passes a longer one. (Answers, and UDP datagrams,
/// get [`crate::probe::ANSWER_TIMEOUT`].)
pub const HOST_TIMEOUT: Duration = Duration::from_millis(300);

mod scenarios;
mod table;

pub use scenarios::scenarios;
pub use table::markdown_table;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_flow_targets_a_port_of_its_scenario() {
        for scenario in scenarios() {
            for flow in &scenario.flows {
                let found = scenario.port_for(flow).is_some();
                let not_ours = flow.expect == Expect::NotServed;
                assert!(
                    found || not_ours,
                    "{}: {:?} targets no service port",
                    scenario.id,
                    flow.name
                );
            }
        }
    }

    #[test]
    fn the_scenarios_make_one_valid_table() {
        let table = crate::runner::table_of(&scenarios());
        assert!(table.len() > 10);
        let ids: BTreeSet<_> = scenarios().iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), scenarios().len(), "scenario ids are unique");
    }

    #[test]
    fn the_reference_layout_runs_only_cluster_ip_flows() {
        for scenario in scenarios() {
            for flow in &scenario.flows {
                if plan(Backend::KubeProxyLayout, &scenario, flow) == Plan::Run {
                    assert_eq!(flow.kind, DestKind::ClusterIp, "{}", flow.name);
                }
            }
        }
        let runs = scenarios()
            .iter()
            .flat_map(|s| {
                s.flows
                    .iter()
                    .map(move |f| plan(Backend::KubeProxyLayout, s, f))
            })
            .filter(|p| *p == Plan::Run)
            .count();
        assert!(
            runs >= 5,
            "the reference must prove the harness on several flows: {runs}"
        );
    }

    #[test]
    fn shared_deviations_cite_kube_proxy_and_are_listed_apart_from_passes_and_bugs() {
        let mut deviations = 0;
        for scenario in scenarios() {
            for flow in &scenario.flows {
                for backend in Backend::ALL {
                    if let Plan::SharedDeviation { how, source } = plan(backend, &scenario, flow) {
                        deviations += 1;
                        assert!(!how.is_empty(), "{}", flow.name);
                        assert!(
                            source.contains("pkg/proxy/"),
                            "{}: a shared deviation names kube-proxy's source: {source}",
                            flow.name
                        );
                    }
                }
            }
        }
        assert!(
            deviations > 0,
            "the IPVS short-circuit flows are shared deviations"
        );
        let table = markdown_table();
        let (bugs, shared) = table
            .split_once("Deviations kube-proxy's own mode shares")
            .expect("a section of its own");
        assert!(
            !bugs.contains("(kube-proxy: `pkg/proxy/"),
            "not among the bugs"
        );
        assert_eq!(
            shared.lines().filter(|l| l.starts_with("  - ")).count(),
            deviations
        );
    }

    #[test]
    fn userspace_never_checks_an_unmasqueraded_source() {
        for scenario in scenarios() {
            for flow in &scenario.flows {
                if let Expect::Answer {
                    seen: Seen::Client, ..
                } = flow.expect
                {
                    assert_ne!(
                        plan(Backend::Userspace, &scenario, flow),
                        Plan::Run,
                        "{}",
                        flow.name
                    );
                }
            }
        }
    }
}
