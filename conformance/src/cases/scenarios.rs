//! The scenarios themselves: kube-proxy's test functions as data, with their flows and the
//! per-backend notes (skips, known failures) on each flow. Long because it is a table: one
//! function per kube-proxy test, one `Flow::new` per `packetFlowTest`.
//!
//! Service addresses: scenario N uses cluster IPs 198.19.N.x, external and LB IPs
//! 198.19.10N.x (but the LB IP the node owns, the topology's) and node ports 30N0x, so that
//! every scenario fits in one table.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use proxy_core::table::{Endpoint, TrafficPolicy};
use proxy_core::{Protocol, ServicePort, ServicePortName};

use super::{
    Backend, DestKind, Expect, Flow, Note, Scenario, Seen, FROM_BLOCKED_CLIENT, FROM_CLIENT,
    FROM_L1, FROM_L2, FROM_LOCALHOST, FROM_NODE, FROM_NODE_AS_LB, FROM_R2, NODE_NAME,
};
use crate::topology::{NODE_IP, NODE_IP_ALT, NODE_OWNED_LB_IP, POD_L1, POD_R1, POD_R2};

// === builders ===

const NS: &str = "conformance";

fn svc(
    name: &str,
    port_name: &str,
    protocol: Protocol,
    vip: [u8; 4],
    port: u16,
    target: u16,
) -> ServicePort {
    let mut p = ServicePort::new(ServicePortName::new(NS, name, port_name), protocol, port)
        .with_cluster_ip(IpAddr::from(vip));
    p.target_port = target;
    p
}

fn ip(octets: [u8; 4]) -> IpAddr {
    IpAddr::from(octets)
}

/// A ready endpoint on this node.
fn local(addr: IpAddr, port: u16) -> Endpoint {
    let mut e = Endpoint::new(addr, port);
    e.node = Some(NODE_NAME.to_owned());
    e.is_local = true;
    e
}

/// A ready endpoint on the other node.
fn remote(addr: IpAddr, port: u16) -> Endpoint {
    let mut e = Endpoint::new(addr, port);
    e.node = Some("node-b".to_owned());
    e
}

/// Serving and terminating: a fallback only.
fn terminating(mut e: Endpoint) -> Endpoint {
    e.ready = false;
    e.serving = true;
    e.terminating = true;
    e
}

/// Neither ready nor serving.
fn unready(mut e: Endpoint) -> Endpoint {
    e.ready = false;
    e.serving = false;
    e.terminating = true;
    e
}

fn answer(from: &[(IpAddr, u16)], seen: Seen) -> Expect {
    Expect::Answer {
        from: from.iter().map(|(a, p)| SocketAddr::new(*a, *p)).collect(),
        seen,
    }
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a valid network in the case list")
}

/// kube-proxy's IPVS mode has no short-circuit either: a virtual server cannot pick its real
/// servers by source.
const IPVS_NO_SHORT_CIRCUIT: &str =
    "no short-circuit of pod and node traffic to an external address of a Local service: one \
     virtual server per address, with this node's endpoints only, and node traffic not \
     masqueraded";
const IPVS_NO_SHORT_CIRCUIT_SOURCE: &str =
    "`pkg/proxy/ipvs/proxier.go` `syncProxyRules`: every external IP, LB IP and node \
     IP:nodePort gets its own virtual server, filled by `syncEndpoint(svcPortName, \
     svcInfo.ExternalPolicyLocal(), serv)` with the local endpoints only; `KUBE-LOAD-BALANCER` \
     and `KUBE-NODE-PORT` RETURN on `KUBE-LOAD-BALANCER-LOCAL` / `KUBE-NODE-PORT-LOCAL-*` before \
     `KUBE-MARK-MASQ`, and `KUBE-EXTERNAL-IP-LOCAL` gets no masquerade rule";

// === the scenarios ===

/// Every scenario, in the README's order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        cluster_ip_general(),
        load_balancer(),
        load_balancer_node_owned_ip(),
        node_ports(),
        external_traffic_policy_cluster(),
        external_traffic_policy_local(),
        internal_traffic_policy_local(),
        terminating_endpoints(),
        masquerade_matrix(),
        no_endpoints(),
    ]
}

fn cluster_ip_general() -> Scenario {
    use DestKind::ClusterIp;
    let svc1 = [198, 19, 1, 1];
    let svc2 = [198, 19, 1, 2];
    Scenario {
        id: "cluster_ip",
        origin: "TestClusterIPGeneral",
        ports: vec![
            svc("svc1", "http", Protocol::Tcp, svc1, 80, 8080).with_endpoint(local(POD_L1, 8080)),
            svc("svc2", "http", Protocol::Tcp, svc2, 80, 8080)
                .with_endpoint(local(POD_L1, 8080))
                .with_endpoint(remote(POD_R1, 8080)),
            svc("svc2", "https", Protocol::Tcp, svc2, 443, 8443)
                .with_endpoint(local(POD_L1, 8443))
                .with_endpoint(remote(POD_R1, 8443)),
            svc("svc2", "dns-udp", Protocol::Udp, svc2, 53, 8080)
                .with_endpoint(local(POD_L1, 8080))
                .with_endpoint(remote(POD_R1, 8080)),
        ],
        flows: vec![
            Flow::new(
                "simple clusterIP",
                FROM_L2,
                (ip(svc1), 80),
                ClusterIp,
                answer(&[(POD_L1, 8080)], Seen::Client),
            ),
            Flow::new(
                "hairpin to cluster IP",
                FROM_L1,
                (ip(svc1), 80),
                ClusterIp,
                answer(&[(POD_L1, 8080)], Seen::Node),
            ),
            Flow::new(
                "clusterIP with multiple endpoints",
                FROM_L2,
                (ip(svc2), 80),
                ClusterIp,
                answer(&[(POD_L1, 8080), (POD_R1, 8080)], Seen::Client),
            ),
            Flow::new(
                "clusterIP with TargetPort",
                FROM_L2,
                (ip(svc2), 443),
                ClusterIp,
                answer(&[(POD_L1, 8443), (POD_R1, 8443)], Seen::Client),
            ),
            Flow::new(
                "clusterIP with TCP, UDP, and SCTP on same port (UDP)",
                FROM_L2,
                (ip(svc2), 53),
                ClusterIp,
                answer(&[(POD_L1, 8080), (POD_R1, 8080)], Seen::Client),
            )
            .udp(),
            Flow::new(
                "TCP-only port does not match UDP traffic",
                FROM_L2,
                (ip(svc2), 80),
                ClusterIp,
                Expect::NotServed,
            )
            .udp(),
            Flow::new(
                "svc1 does not accept svc2's ports",
                FROM_L2,
                (ip(svc1), 443),
                ClusterIp,
                Expect::NotServed,
            ),
        ],
    }
}

fn load_balancer() -> Scenario {
    use DestKind::{ClusterIp, LoadBalancerIp, NodePort};
    let vip = [198, 19, 2, 1];
    let (lb1, lb2) = (ip([198, 19, 102, 1]), ip([198, 19, 102, 2]));
    let mut port = svc("lb-svc1", "p80", Protocol::Tcp, vip, 80, 8080)
        .with_node_port(30201)
        .with_endpoint(remote(POD_R1, 8080));
    port.load_balancer_ips = vec![lb1, lb2];
    // The client's network, which holds the node's own address too (as the source range in
    // kube-proxy's test holds its testNodeIP).
    port.load_balancer_source_ranges = vec![net("198.18.250.0/24")];
    let ep = answer(&[(POD_R1, 8080)], Seen::Node);
    Scenario {
        id: "load_balancer",
        origin: "TestLoadBalancer",
        ports: vec![port],
        flows: vec![
            Flow::new(
                "pod to cluster IP",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                answer(&[(POD_R1, 8080)], Seen::Client),
            ),
            Flow::new(
                "external to nodePort",
                FROM_CLIENT,
                (NODE_IP, 30201),
                NodePort,
                ep.clone(),
            ),
            Flow::new(
                "nodePort bypasses LoadBalancerSourceRanges",
                FROM_BLOCKED_CLIENT,
                (NODE_IP, 30201),
                NodePort,
                ep.clone(),
            ),
            Flow::new(
                "accepted external to LB1",
                FROM_CLIENT,
                (lb1, 80),
                LoadBalancerIp,
                ep.clone(),
            ),
            Flow::new(
                "accepted external to LB2",
                FROM_CLIENT,
                (lb2, 80),
                LoadBalancerIp,
                ep.clone(),
            ),
            Flow::new(
                "blocked external to LB1",
                FROM_BLOCKED_CLIENT,
                (lb1, 80),
                LoadBalancerIp,
                Expect::Dropped,
            ),
            Flow::new(
                "blocked external to LB2",
                FROM_BLOCKED_CLIENT,
                (lb2, 80),
                LoadBalancerIp,
                Expect::Dropped,
            ),
            Flow::new(
                "pod to LB1 (blocked by LoadBalancerSourceRanges)",
                FROM_L2,
                (lb1, 80),
                LoadBalancerIp,
                Expect::Dropped,
            ),
            Flow::new(
                "node to LB1 (allowed by LoadBalancerSourceRanges)",
                FROM_NODE,
                (lb1, 80),
                LoadBalancerIp,
                ep.clone(),
            ),
            Flow::new(
                "node to LB2 (allowed by LoadBalancerSourceRanges)",
                FROM_NODE,
                (lb2, 80),
                LoadBalancerIp,
                ep,
            ),
        ],
    }
}

fn load_balancer_node_owned_ip() -> Scenario {
    let vip = [198, 19, 2, 2];
    let mut port = svc("svc-owned-lb", "p80", Protocol::Tcp, vip, 80, 8080)
        .with_endpoint(remote(POD_R1, 8080));
    port.load_balancer_ips = vec![NODE_OWNED_LB_IP];
    port.load_balancer_source_ranges = vec![net("198.18.250.0/24")];
    Scenario {
        id: "load_balancer_node_owned_ip",
        origin: "TestLoadBalancer (the LB IP is one of the node's addresses)",
        ports: vec![port],
        flows: vec![Flow::new(
            "same node to LB1, SNATted to LB1 (implicitly allowed)",
            FROM_NODE_AS_LB,
            (NODE_OWNED_LB_IP, 80),
            DestKind::LoadBalancerIp,
            answer(&[(POD_R1, 8080)], Seen::Node),
        )],
    }
}

fn node_ports() -> Scenario {
    use DestKind::{ClusterIp, NodePort};
    let vip = [198, 19, 3, 1];
    let both = [(POD_R1, 8080), (POD_L1, 8080)];
    Scenario {
        id: "node_ports",
        origin: "TestNodePorts (ipv4, localhost-nodeports disabled)",
        ports: vec![svc("np-svc1", "p80", Protocol::Tcp, vip, 80, 8080)
            .with_node_port(30301)
            .with_endpoint(remote(POD_R1, 8080))
            .with_endpoint(local(POD_L1, 8080))],
        flows: vec![
            Flow::new(
                "pod to cluster IP",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                answer(&both, Seen::Client),
            ),
            Flow::new(
                "external to nodePort",
                FROM_CLIENT,
                (NODE_IP, 30301),
                NodePort,
                answer(&both, Seen::Node),
            ),
            Flow::new(
                "node to nodePort",
                FROM_NODE,
                (NODE_IP, 30301),
                NodePort,
                answer(&both, Seen::Node),
            ),
            Flow::new(
                "external to nodePort on secondary IP",
                FROM_CLIENT,
                (NODE_IP_ALT, 30301),
                NodePort,
                answer(&both, Seen::Node),
            ),
            // We never serve loopback node ports (route_localnet exposes 127/8 to the network,
            // CVE-2020-8558): kube-proxy's `--iptables-localhost-nodeports=false`.
            Flow::new(
                "localhost to nodePort is ignored",
                FROM_LOCALHOST,
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 30301),
                NodePort,
                Expect::NotServed,
            ),
        ],
    }
}

fn external_traffic_policy_cluster() -> Scenario {
    use DestKind::{ClusterIp, ExternalIp, LoadBalancerIp, NodePort};
    let vip = [198, 19, 4, 1];
    let eip = ip([198, 19, 104, 1]);
    let lb = ip([198, 19, 104, 2]);
    let mut port = svc("svc-etp-cluster", "p80", Protocol::Tcp, vip, 80, 8080)
        .with_node_port(30401)
        .with_endpoint(remote(POD_R1, 8080))
        .with_endpoint(local(POD_L1, 8080));
    port.external_ips = vec![eip];
    port.load_balancer_ips = vec![lb];
    let both = [(POD_R1, 8080), (POD_L1, 8080)];
    let masq = answer(&both, Seen::Node);
    Scenario {
        id: "external_traffic_policy_cluster",
        origin: "TestExternalTrafficPolicyCluster",
        ports: vec![port],
        flows: vec![
            Flow::new(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                answer(&both, Seen::Client),
            ),
            Flow::new(
                "pod to external IP hits both endpoints, masqueraded",
                FROM_L2,
                (eip, 80),
                ExternalIp,
                masq.clone(),
            ),
            Flow::new(
                "external to external IP hits both endpoints, masqueraded",
                FROM_CLIENT,
                (eip, 80),
                ExternalIp,
                masq.clone(),
            ),
            Flow::new(
                "pod to LB IP hits both endpoints, masqueraded",
                FROM_L2,
                (lb, 80),
                LoadBalancerIp,
                masq.clone(),
            ),
            Flow::new(
                "external to LB IP hits both endpoints, masqueraded",
                FROM_CLIENT,
                (lb, 80),
                LoadBalancerIp,
                masq.clone(),
            ),
            Flow::new(
                "pod to NodePort hits both endpoints, masqueraded",
                FROM_L2,
                (NODE_IP, 30401),
                NodePort,
                masq.clone(),
            ),
            Flow::new(
                "external to NodePort hits both endpoints, masqueraded",
                FROM_CLIENT,
                (NODE_IP, 30401),
                NodePort,
                masq,
            ),
        ],
    }
}

fn external_traffic_policy_local() -> Scenario {
    use DestKind::{ClusterIp, ExternalIp, LoadBalancerIp, NodePort};
    let vip = [198, 19, 5, 1];
    let none_vip = [198, 19, 5, 2];
    let eip = ip([198, 19, 105, 1]);
    let lb = ip([198, 19, 105, 2]);
    let mut with_local = svc("svc-etp", "p80", Protocol::Tcp, vip, 80, 8080)
        .with_node_port(30501)
        .with_endpoint(remote(POD_R1, 8080))
        .with_endpoint(local(POD_L1, 8080));
    with_local.external_ips = vec![eip];
    with_local.load_balancer_ips = vec![lb];
    with_local.external_traffic_policy = TrafficPolicy::Local;
    let mut no_local = svc("svc-etp-none", "p80", Protocol::Tcp, none_vip, 80, 8080)
        .with_node_port(30502)
        .with_endpoint(remote(POD_R1, 8080));
    no_local.external_traffic_policy = TrafficPolicy::Local;
    let both = [(POD_R1, 8080), (POD_L1, 8080)];
    let local_only = answer(&[(POD_L1, 8080)], Seen::Client);
    let ipvs = [Backend::Ipvs];
    let as_kube_proxy_ipvs = Note::SharedDeviation {
        how: IPVS_NO_SHORT_CIRCUIT,
        source: IPVS_NO_SHORT_CIRCUIT_SOURCE,
    };
    Scenario {
        id: "external_traffic_policy_local",
        origin: "TestExternalTrafficPolicyLocal (+ TestOverallIPTablesRules ns2/svc2: LOCAL \
                 traffic, no local endpoints)",
        ports: vec![with_local, no_local],
        flows: vec![
            Flow::new(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                answer(&both, Seen::Client),
            ),
            Flow::new(
                "pod to external IP hits both endpoints, unmasqueraded",
                FROM_L2,
                (eip, 80),
                ExternalIp,
                answer(&both, Seen::Client),
            )
            .note(&ipvs, as_kube_proxy_ipvs),
            Flow::new(
                "external to external IP hits only local endpoint, unmasqueraded",
                FROM_CLIENT,
                (eip, 80),
                ExternalIp,
                local_only.clone(),
            ),
            Flow::new(
                "pod to LB IP hits only both endpoints, unmasqueraded",
                FROM_L2,
                (lb, 80),
                LoadBalancerIp,
                answer(&both, Seen::Client),
            )
            .note(&ipvs, as_kube_proxy_ipvs),
            Flow::new(
                "external to LB IP hits only local endpoint, unmasqueraded",
                FROM_CLIENT,
                (lb, 80),
                LoadBalancerIp,
                local_only.clone(),
            ),
            Flow::new(
                "pod to NodePort hits both endpoints, unmasqueraded",
                FROM_L2,
                (NODE_IP, 30501),
                NodePort,
                answer(&both, Seen::Client),
            )
            .note(&ipvs, as_kube_proxy_ipvs),
            Flow::new(
                "external to NodePort hits only local endpoint, unmasqueraded",
                FROM_CLIENT,
                (NODE_IP, 30501),
                NodePort,
                local_only,
            ),
            // TestOverallIPTablesRules, ns2/svc2: "masquerade LOCAL traffic for ns2/svc2:p80
            // external destinations", then "route LOCAL traffic" to every endpoint.
            Flow::new(
                "node to LB IP hits both endpoints, masqueraded",
                FROM_NODE,
                (lb, 80),
                LoadBalancerIp,
                answer(&both, Seen::Node),
            )
            .note(&ipvs, as_kube_proxy_ipvs),
            // ns2/svc2: "has no local endpoints" -m addrtype --dst-type LOCAL ... -j DROP.
            Flow::new(
                "external to NodePort with no local endpoints is dropped",
                FROM_CLIENT,
                (NODE_IP, 30502),
                NodePort,
                Expect::Dropped,
            ),
            // ns2/svc2: "pod traffic for external destinations" goes to the cluster chain,
            // local endpoints or not.
            Flow::new(
                "pod to NodePort with no local endpoints hits the remote endpoint",
                FROM_L2,
                (NODE_IP, 30502),
                NodePort,
                answer(&[(POD_R1, 8080)], Seen::Client),
            ),
        ],
    }
}

fn internal_traffic_policy_local() -> Scenario {
    use DestKind::ClusterIp;
    let vip = [198, 19, 6, 1];
    let none_vip = [198, 19, 6, 2];
    let mut with_local = svc("svc-itp", "p80", Protocol::Tcp, vip, 80, 8080)
        .with_endpoint(local(POD_L1, 8080))
        .with_endpoint(remote(POD_R1, 8080));
    with_local.internal_traffic_policy = TrafficPolicy::Local;
    let mut no_local = svc("svc-itp-none", "p80", Protocol::Tcp, none_vip, 80, 8080)
        .with_endpoint(remote(POD_R1, 8080));
    no_local.internal_traffic_policy = TrafficPolicy::Local;
    Scenario {
        id: "internal_traffic_policy_local",
        origin: "TestInternalTrafficPolicy",
        ports: vec![with_local, no_local],
        flows: vec![
            Flow::new(
                "internalTrafficPolicy Local with local endpoints: local only",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                answer(&[(POD_L1, 8080)], Seen::Client),
            ),
            Flow::new(
                "internalTrafficPolicy Local with no local endpoints: dropped",
                FROM_L2,
                (ip(none_vip), 80),
                ClusterIp,
                Expect::Dropped,
            ),
        ],
    }
}

fn terminating_endpoints() -> Scenario {
    use DestKind::{ClusterIp, NodePort};
    let ready_vip = [198, 19, 7, 1];
    let fallback_vip = [198, 19, 7, 2];
    let local_vip = [198, 19, 7, 3];
    let mut local_fallback = svc("svc-term-local", "p80", Protocol::Tcp, local_vip, 80, 8080)
        .with_node_port(30703)
        .with_endpoint(terminating(local(POD_L1, 8080)))
        .with_endpoint(remote(POD_R1, 8080));
    local_fallback.external_traffic_policy = TrafficPolicy::Local;
    Scenario {
        id: "terminating_endpoints",
        origin: "TestTerminatingEndpointsTrafficPolicyCluster / \
                 TestTerminatingEndpointsTrafficPolicyLocal",
        ports: vec![
            svc("svc-term-ready", "p80", Protocol::Tcp, ready_vip, 80, 8080)
                .with_endpoint(local(POD_L1, 8080))
                .with_endpoint(terminating(remote(POD_R1, 8080))),
            svc(
                "svc-term-fallback",
                "p80",
                Protocol::Tcp,
                fallback_vip,
                80,
                8080,
            )
            .with_endpoint(terminating(remote(POD_R1, 8080)))
            .with_endpoint(unready(remote(POD_R2, 8080))),
            local_fallback,
        ],
        flows: vec![
            Flow::new(
                "ready endpoints only while one is ready",
                FROM_L2,
                (ip(ready_vip), 80),
                ClusterIp,
                answer(&[(POD_L1, 8080)], Seen::Client),
            ),
            Flow::new(
                "serving terminating endpoints when none is ready",
                FROM_L2,
                (ip(fallback_vip), 80),
                ClusterIp,
                answer(&[(POD_R1, 8080)], Seen::Client),
            ),
            Flow::new(
                "externalTrafficPolicy Local falls back to a serving terminating local endpoint",
                FROM_CLIENT,
                (NODE_IP, 30703),
                NodePort,
                answer(&[(POD_L1, 8080)], Seen::Client),
            ),
        ],
    }
}

fn masquerade_matrix() -> Scenario {
    use DestKind::{ClusterIp, LoadBalancerIp, NodePort};
    let vip = [198, 19, 8, 1];
    let lb = ip([198, 19, 108, 1]);
    let mut port = svc("svc-masq", "p80", Protocol::Tcp, vip, 80, 8080)
        .with_node_port(30801)
        .with_endpoint(local(POD_L1, 8080));
    port.load_balancer_ips = vec![lb];
    let l1 = [(POD_L1, 8080)];
    Scenario {
        id: "masquerade",
        origin: "TestInternalExternalMasquerade (cluster-CIDR local detector, no masqueradeAll)",
        ports: vec![port],
        flows: vec![
            Flow::new(
                "pod to ClusterIP",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                answer(&l1, Seen::Client),
            ),
            Flow::new(
                "pod to NodePort",
                FROM_L2,
                (NODE_IP, 30801),
                NodePort,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "pod to LB",
                FROM_L2,
                (lb, 80),
                LoadBalancerIp,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "node to ClusterIP",
                FROM_NODE,
                (ip(vip), 80),
                ClusterIp,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "node to NodePort",
                FROM_NODE,
                (NODE_IP, 30801),
                NodePort,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "node to LB",
                FROM_NODE,
                (lb, 80),
                LoadBalancerIp,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "external to ClusterIP",
                FROM_CLIENT,
                (ip(vip), 80),
                ClusterIp,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "external to NodePort",
                FROM_CLIENT,
                (NODE_IP, 30801),
                NodePort,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "external to LB",
                FROM_CLIENT,
                (lb, 80),
                LoadBalancerIp,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "pod on another node to NodePort",
                FROM_R2,
                (NODE_IP, 30801),
                NodePort,
                answer(&l1, Seen::Node),
            ),
            // Not one of kube-proxy's flows: "hairpin to cluster IP" (TestClusterIPGeneral)
            // through the node port and the LB IP, which masquerade anyway.
            Flow::new(
                "hairpin to NodePort (added here, as \"hairpin to cluster IP\")",
                FROM_L1,
                (NODE_IP, 30801),
                NodePort,
                answer(&l1, Seen::Node),
            ),
            Flow::new(
                "hairpin to LB (added here, as \"hairpin to cluster IP\")",
                FROM_L1,
                (lb, 80),
                LoadBalancerIp,
                answer(&l1, Seen::Node),
            ),
        ],
    }
}

fn no_endpoints() -> Scenario {
    use DestKind::{ClusterIp, ExternalIp, LoadBalancerIp, NodePort};
    let vip = [198, 19, 9, 1];
    let unready_vip = [198, 19, 9, 2];
    let eip = ip([198, 19, 109, 1]);
    let lb = ip([198, 19, 109, 2]);
    let mut tcp = svc("noep-svc1", "p80", Protocol::Tcp, vip, 80, 8080).with_node_port(30901);
    tcp.external_ips = vec![eip];
    tcp.load_balancer_ips = vec![lb];
    Scenario {
        id: "no_endpoints",
        origin: "TestNoEndpointsReject",
        ports: vec![
            tcp,
            svc("noep-svc1", "dns", Protocol::Udp, vip, 53, 8080),
            svc("svc-unready", "p80", Protocol::Tcp, unready_vip, 80, 8080)
                .with_endpoint(unready(remote(POD_R1, 8080))),
        ],
        flows: vec![
            Flow::new(
                "pod to cluster IP with no endpoints",
                FROM_L2,
                (ip(vip), 80),
                ClusterIp,
                Expect::Refused,
            ),
            Flow::new(
                "external to external IP with no endpoints",
                FROM_CLIENT,
                (eip, 80),
                ExternalIp,
                Expect::Refused,
            ),
            Flow::new(
                "pod to NodePort with no endpoints",
                FROM_L2,
                (NODE_IP, 30901),
                NodePort,
                Expect::Refused,
            ),
            Flow::new(
                "external to NodePort with no endpoints",
                FROM_CLIENT,
                (NODE_IP, 30901),
                NodePort,
                Expect::Refused,
            ),
            Flow::new(
                "pod to LoadBalancer IP with no endpoints",
                FROM_L2,
                (lb, 80),
                LoadBalancerIp,
                Expect::Refused,
            ),
            Flow::new(
                "external to LoadBalancer IP with no endpoints",
                FROM_CLIENT,
                (lb, 80),
                LoadBalancerIp,
                Expect::Refused,
            ),
            Flow::new(
                "UDP pod to cluster IP with no endpoints",
                FROM_L2,
                (ip(vip), 53),
                ClusterIp,
                Expect::Refused,
            )
            .udp(),
            Flow::new(
                "only unready endpoints is no endpoints",
                FROM_L2,
                (ip(unready_vip), 80),
                ClusterIp,
                Expect::Refused,
            ),
        ],
    }
}
