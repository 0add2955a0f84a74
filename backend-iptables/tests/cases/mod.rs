//! The representative tables, in one place (each could become `tests/tables/<name>.yaml` once the
//! loader lands), with the packet flows every one of them must pass.
//!
//! Addresses: pods 198.18.0.0/17 (this node's 198.18.1.0/24, others 198.18.2-3.x); this node
//! 198.18.200.1; clients outside the cluster 198.18.250.0/24 (198.18.251.1 is outside the LB
//! source ranges); cluster IPs 198.19.0.0/16, external IPs 198.19.100.x, LB IPs 198.19.101.x.
//! IPv6 uses the documentation prefix 2001:db8::/32 (pods 2001:db8:18::/48).
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use backend_iptables::apply::{apply_plan, CommandRunner, Variant};
use backend_iptables::config::{DispatchLayout, InlineBalancing, IptablesConfig, TreeConfig};
use backend_iptables::hooks::{ensure_hooks, IptablesHooks};
use backend_iptables::plan::Planner;
use backend_iptables::testing::trace::PacketFlow;
use proxy_core::table::{Endpoint, SessionAffinity, TrafficPolicy};
use proxy_core::{Protocol, ServicePort, ServicePortName, ServiceTable};

pub const NODE_IP: &str = "198.18.200.1";
pub const NODE_IP6: &str = "2001:db8:200::1";
/// A second address of this node, outside 198.18.200.0/24 (for `node_port_addresses`).
pub const NODE_IP_OTHER: &str = "198.18.201.1";
pub const CLIENT: &str = "198.18.250.1";
pub const BLOCKED_CLIENT: &str = "198.18.251.1";
pub const POD: &str = "198.18.5.5";
pub const CLIENT6: &str = "2001:db8:250::1";
pub const POD6: &str = "2001:db8:18:5::5";

/// This node's addresses, for `-m addrtype LOCAL`.
pub fn local_addrs() -> Vec<IpAddr> {
    vec![ip(NODE_IP), ip(NODE_IP_OTHER), ip(NODE_IP6)]
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A ready endpoint on another node.
pub fn remote(addr: &str, port: u16) -> Endpoint {
    let mut e = Endpoint::new(ip(addr), port);
    e.node = Some("node-b".into());
    e
}

/// A ready endpoint on this node.
pub fn local(addr: &str, port: u16) -> Endpoint {
    let mut e = Endpoint::new(ip(addr), port);
    e.node = Some("node-a".into());
    e.is_local = true;
    e
}

pub fn port(name: &str, proto: Protocol, cluster_ip: &str, port: u16) -> ServicePort {
    ServicePort::new(ServicePortName::new("ns", name, "p"), proto, port)
        .with_cluster_ip(ip(cluster_ip))
}

/// The config every case uses unless it says otherwise.
pub fn config() -> IptablesConfig {
    IptablesConfig {
        cluster_cidrs: vec![
            "198.18.0.0/17".parse().expect("cidr"),
            "2001:db8:18::/48".parse().expect("cidr"),
        ],
        ..IptablesConfig::default()
    }
}

pub struct Case {
    pub name: &'static str,
    pub table: ServiceTable,
    pub config: IptablesConfig,
    pub flows: Vec<PacketFlow>,
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut b = ServiceTable::builder().node("node-a");
    for p in ports {
        b = b.insert(p);
    }
    b.build().expect("valid test table")
}

fn case(name: &'static str, ports: Vec<ServicePort>, flows: Vec<PacketFlow>) -> Case {
    Case {
        name,
        table: table(ports),
        config: config(),
        flows,
    }
}

fn tcp(
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    dport: u16,
    want: &'static str,
) -> PacketFlow {
    PacketFlow::tcp(name, src, dst, dport, want)
}

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "cluster_ip_three_endpoints",
            vec![port("web", Protocol::Tcp, "198.19.0.1", 80)
                .with_endpoint(remote("198.18.2.1", 8080))
                .with_endpoint(remote("198.18.2.2", 8080))
                .with_endpoint(local("198.18.1.3", 8080))],
            vec![
                tcp(
                    "pod to cluster IP",
                    POD,
                    "198.19.0.1",
                    80,
                    "198.18.1.3:8080, 198.18.2.1:8080, 198.18.2.2:8080",
                ),
                tcp(
                    "outside client is masqueraded",
                    CLIENT,
                    "198.19.0.1",
                    80,
                    "198.18.1.3:8080, 198.18.2.1:8080, 198.18.2.2:8080",
                )
                .masq(),
                tcp(
                    "node to cluster IP is masqueraded",
                    NODE_IP,
                    "198.19.0.1",
                    80,
                    "198.18.1.3:8080, 198.18.2.1:8080, 198.18.2.2:8080",
                )
                .masq()
                .from_node(),
                tcp("wrong port is not ours", POD, "198.19.0.1", 81, "ACCEPT"),
                tcp(
                    "wrong protocol is not ours",
                    POD,
                    "198.19.0.1",
                    80,
                    "ACCEPT",
                )
                .proto(Protocol::Udp),
            ],
        ),
        case(
            "weights",
            vec![
                port("weighted", Protocol::Tcp, "198.19.0.2", 80)
                    .with_endpoint({
                        let mut e = remote("198.18.2.21", 80);
                        e.weight = 1;
                        e
                    })
                    .with_endpoint({
                        let mut e = remote("198.18.2.22", 80);
                        e.weight = 2;
                        e
                    })
                    .with_endpoint({
                        let mut e = remote("198.18.2.23", 80);
                        e.weight = 3;
                        e
                    })
                    .with_endpoint({
                        let mut e = remote("198.18.2.24", 80);
                        e.weight = 0;
                        e
                    }),
                // Every endpoint of weight 0: no endpoint for new connections (proxy_core::select).
                port("quiesced", Protocol::Tcp, "198.19.0.3", 80)
                    .with_endpoint({
                        let mut e = remote("198.18.2.25", 80);
                        e.weight = 0;
                        e
                    })
                    .with_endpoint({
                        let mut e = remote("198.18.2.26", 80);
                        e.weight = 0;
                        e
                    }),
            ],
            vec![
                tcp(
                    "weight 0 takes no new connections",
                    POD,
                    "198.19.0.2",
                    80,
                    "198.18.2.21:80, 198.18.2.22:80, 198.18.2.23:80",
                ),
                tcp(
                    "every endpoint of weight 0 rejects",
                    POD,
                    "198.19.0.3",
                    80,
                    "REJECT",
                ),
            ],
        ),
        Case {
            name: "node_port_addresses",
            table: table(vec![port("npa", Protocol::Tcp, "198.19.0.20", 80)
                .with_node_port(30020)
                .with_endpoint(remote("198.18.2.20", 80))]),
            config: IptablesConfig {
                node_port_addresses: vec!["198.18.200.0/24".parse().expect("cidr")],
                ..config()
            },
            flows: vec![
                tcp(
                    "node port on a node address inside node_port_addresses",
                    CLIENT,
                    NODE_IP,
                    30020,
                    "198.18.2.20:80",
                )
                .masq(),
                tcp(
                    "node port on a node address outside them is not ours",
                    CLIENT,
                    NODE_IP_OTHER,
                    30020,
                    "ACCEPT",
                ),
                tcp(
                    "the cluster IP is served as ever",
                    POD,
                    "198.19.0.20",
                    80,
                    "198.18.2.20:80",
                ),
            ],
        },
        case(
            "node_port",
            vec![port("np", Protocol::Tcp, "198.19.0.3", 80)
                .with_node_port(30003)
                .with_endpoint(local("198.18.1.4", 80))
                .with_endpoint(remote("198.18.2.4", 80))],
            vec![
                tcp(
                    "node port from outside",
                    CLIENT,
                    NODE_IP,
                    30003,
                    "198.18.1.4:80, 198.18.2.4:80",
                )
                .masq(),
                tcp(
                    "node port from a pod is masqueraded too",
                    POD,
                    NODE_IP,
                    30003,
                    "198.18.1.4:80, 198.18.2.4:80",
                )
                .masq(),
                tcp(
                    "node port from the node",
                    NODE_IP,
                    NODE_IP,
                    30003,
                    "198.18.1.4:80, 198.18.2.4:80",
                )
                .masq()
                .from_node(),
                tcp(
                    "node port on another address is not ours",
                    CLIENT,
                    "198.18.200.2",
                    30003,
                    "ACCEPT",
                ),
                tcp(
                    "cluster IP still works",
                    POD,
                    "198.19.0.3",
                    80,
                    "198.18.1.4:80, 198.18.2.4:80",
                ),
            ],
        ),
        case(
            "external_ip",
            vec![{
                let mut p = port("ext", Protocol::Tcp, "198.19.0.4", 80)
                    .with_endpoint(remote("198.18.2.5", 80));
                p.external_ips = vec![ip("198.19.100.4")];
                p
            }],
            vec![
                tcp(
                    "external IP from outside",
                    CLIENT,
                    "198.19.100.4",
                    80,
                    "198.18.2.5:80",
                )
                .masq(),
                tcp(
                    "external IP from a pod",
                    POD,
                    "198.19.100.4",
                    80,
                    "198.18.2.5:80",
                )
                .masq(),
                tcp(
                    "external IP other port",
                    CLIENT,
                    "198.19.100.4",
                    81,
                    "ACCEPT",
                ),
            ],
        ),
        case(
            "lb_source_ranges",
            vec![{
                let mut p = port("lb", Protocol::Tcp, "198.19.0.5", 80)
                    .with_endpoint(remote("198.18.2.6", 80));
                p.load_balancer_ips = vec![ip("198.19.101.5")];
                p.load_balancer_source_ranges = vec!["198.18.250.0/24".parse().expect("range")];
                p
            }],
            vec![
                tcp(
                    "allowed source",
                    CLIENT,
                    "198.19.101.5",
                    80,
                    "198.18.2.6:80",
                )
                .masq(),
                tcp(
                    "source outside the ranges is dropped",
                    BLOCKED_CLIENT,
                    "198.19.101.5",
                    80,
                    "DROP",
                ),
                tcp(
                    "cluster IP ignores the ranges",
                    BLOCKED_CLIENT,
                    "198.19.0.5",
                    80,
                    "198.18.2.6:80",
                )
                .masq(),
            ],
        ),
        Case {
            name: "lb_source_ranges_from_node",
            table: table(vec![
                {
                    // A range holds this node's address: the node may reach the LB IP from
                    // the LB IP itself (kube-proxy's allowFromNode).
                    let mut p = port("lbnode", Protocol::Tcp, "198.19.0.15", 80)
                        .with_endpoint(remote("198.18.2.15", 80));
                    p.load_balancer_ips = vec![ip("198.19.101.15")];
                    p.load_balancer_source_ranges = vec![
                        "198.18.200.0/24".parse().expect("range"),
                        "198.18.250.0/24".parse().expect("range"),
                    ];
                    p
                },
                {
                    // No range holds a node address: its LB IP is no source of its own.
                    let mut p = port("lbfar", Protocol::Tcp, "198.19.0.16", 80)
                        .with_endpoint(remote("198.18.2.16", 80));
                    p.load_balancer_ips = vec![ip("198.19.101.16")];
                    p.load_balancer_source_ranges = vec!["198.18.250.0/24".parse().expect("range")];
                    p
                },
            ]),
            config: IptablesConfig {
                node_ips: vec![ip(NODE_IP), ip(NODE_IP6)],
                ..config()
            },
            flows: vec![
                tcp(
                    "the node to its LB IP, from the LB IP",
                    "198.19.101.15",
                    "198.19.101.15",
                    80,
                    "198.18.2.15:80",
                )
                .masq(),
                tcp(
                    "the node from its own address",
                    NODE_IP,
                    "198.19.101.15",
                    80,
                    "198.18.2.15:80",
                )
                .masq(),
                tcp(
                    "a client in a range",
                    CLIENT,
                    "198.19.101.15",
                    80,
                    "198.18.2.15:80",
                )
                .masq(),
                tcp(
                    "a client outside the ranges is dropped",
                    BLOCKED_CLIENT,
                    "198.19.101.15",
                    80,
                    "DROP",
                ),
                tcp(
                    "the LB IP as source, no range holding the node: dropped",
                    "198.19.101.16",
                    "198.19.101.16",
                    80,
                    "DROP",
                ),
                tcp(
                    "another LB IP as source is no exception",
                    "198.19.101.16",
                    "198.19.101.15",
                    80,
                    "DROP",
                ),
            ],
        },
        case(
            "affinity",
            vec![{
                let mut p = port("sticky", Protocol::Tcp, "198.19.0.6", 80)
                    .with_endpoint(remote("198.18.2.7", 80))
                    .with_endpoint(remote("198.18.2.8", 80));
                p.session_affinity = SessionAffinity::ClientIp {
                    timeout: Duration::from_secs(10_800),
                };
                p
            }],
            vec![tcp(
                "new client balances",
                POD,
                "198.19.0.6",
                80,
                "198.18.2.7:80, 198.18.2.8:80",
            )],
        ),
        case(
            "etp_local",
            vec![{
                let mut p = port("etpl", Protocol::Tcp, "198.19.0.7", 80)
                    .with_node_port(30007)
                    .with_endpoint(local("198.18.1.7", 80))
                    .with_endpoint(remote("198.18.2.9", 80));
                p.external_ips = vec![ip("198.19.100.7")];
                p.external_traffic_policy = TrafficPolicy::Local;
                p
            }],
            vec![
                tcp(
                    "outside client keeps its source, local endpoint only",
                    CLIENT,
                    "198.19.100.7",
                    80,
                    "198.18.1.7:80",
                ),
                tcp(
                    "node port, local endpoint only",
                    CLIENT,
                    NODE_IP,
                    30007,
                    "198.18.1.7:80",
                ),
                tcp(
                    "pod short-circuit to all endpoints",
                    POD,
                    "198.19.100.7",
                    80,
                    "198.18.1.7:80, 198.18.2.9:80",
                ),
                tcp(
                    "node-originated is masqueraded, all endpoints",
                    NODE_IP,
                    "198.19.100.7",
                    80,
                    "198.18.1.7:80, 198.18.2.9:80",
                )
                .masq()
                .from_node(),
                tcp(
                    "cluster IP uses cluster policy",
                    POD,
                    "198.19.0.7",
                    80,
                    "198.18.1.7:80, 198.18.2.9:80",
                ),
            ],
        ),
        case(
            "etp_local_no_local_endpoints",
            vec![{
                let mut p = port("etpl-none", Protocol::Tcp, "198.19.0.17", 80)
                    .with_node_port(30017)
                    .with_endpoint(remote("198.18.2.17", 80));
                p.external_traffic_policy = TrafficPolicy::Local;
                p
            }],
            vec![
                tcp("outside client is dropped", CLIENT, NODE_IP, 30017, "DROP"),
                tcp(
                    "pod still short-circuits",
                    POD,
                    NODE_IP,
                    30017,
                    "198.18.2.17:80",
                ),
                tcp("cluster IP works", POD, "198.19.0.17", 80, "198.18.2.17:80"),
            ],
        ),
        case(
            "itp_local",
            vec![
                {
                    let mut p = port("itpl", Protocol::Tcp, "198.19.0.8", 80)
                        .with_endpoint(local("198.18.1.8", 80))
                        .with_endpoint(remote("198.18.2.10", 80));
                    p.internal_traffic_policy = TrafficPolicy::Local;
                    p
                },
                {
                    let mut p = port("itpl-none", Protocol::Tcp, "198.19.0.18", 80)
                        .with_endpoint(remote("198.18.2.18", 80));
                    p.internal_traffic_policy = TrafficPolicy::Local;
                    p
                },
            ],
            vec![
                tcp(
                    "local endpoint only",
                    POD,
                    "198.19.0.8",
                    80,
                    "198.18.1.8:80",
                ),
                tcp(
                    "outside client masqueraded, local endpoint only",
                    CLIENT,
                    "198.19.0.8",
                    80,
                    "198.18.1.8:80",
                )
                .masq(),
                tcp("no local endpoint drops", POD, "198.19.0.18", 80, "DROP"),
            ],
        ),
        case(
            "no_endpoints",
            vec![
                port("empty", Protocol::Tcp, "198.19.0.9", 80).with_node_port(30009),
                port("empty-udp", Protocol::Udp, "198.19.0.9", 53),
                port("not-serving", Protocol::Tcp, "198.19.0.19", 80).with_endpoint({
                    let mut e = remote("198.18.2.19", 80);
                    e.ready = false;
                    e.serving = false;
                    e
                }),
            ],
            vec![
                tcp("cluster IP rejects", POD, "198.19.0.9", 80, "REJECT"),
                tcp("node port rejects", CLIENT, NODE_IP, 30009, "REJECT"),
                tcp("udp rejects", POD, "198.19.0.9", 53, "REJECT").proto(Protocol::Udp),
                tcp(
                    "unready non-serving endpoint is no endpoint",
                    POD,
                    "198.19.0.19",
                    80,
                    "REJECT",
                ),
            ],
        ),
        case(
            "terminating_fallback",
            vec![port("term", Protocol::Tcp, "198.19.0.10", 80)
                .with_endpoint({
                    let mut e = remote("198.18.2.30", 80);
                    e.ready = false;
                    e.terminating = true;
                    e
                })
                .with_endpoint({
                    let mut e = local("198.18.1.30", 80);
                    e.ready = false;
                    e.terminating = true;
                    e
                })
                .with_endpoint({
                    let mut e = remote("198.18.2.31", 80);
                    e.ready = false;
                    e.serving = false;
                    e.terminating = true;
                    e
                })],
            vec![tcp(
                "serving terminating endpoints are used when none is ready",
                POD,
                "198.19.0.10",
                80,
                "198.18.1.30:80, 198.18.2.30:80",
            )],
        ),
        case(
            "ipv6",
            vec![port("v6", Protocol::Tcp, "2001:db8:19::11", 80)
                .with_node_port(30011)
                .with_endpoint(remote("2001:db8:18:2::1", 80))
                .with_endpoint(remote("2001:db8:18:2::2", 80))],
            vec![
                tcp(
                    "pod to v6 cluster IP",
                    POD6,
                    "2001:db8:19::11",
                    80,
                    "[2001:db8:18:2::1]:80, [2001:db8:18:2::2]:80",
                ),
                tcp(
                    "outside client masqueraded",
                    CLIENT6,
                    "2001:db8:19::11",
                    80,
                    "[2001:db8:18:2::1]:80, [2001:db8:18:2::2]:80",
                )
                .masq(),
                tcp(
                    "v6 node port",
                    CLIENT6,
                    NODE_IP6,
                    30011,
                    "[2001:db8:18:2::1]:80, [2001:db8:18:2::2]:80",
                )
                .masq(),
            ],
        ),
        case(
            "dual_stack",
            vec![port("dual", Protocol::Tcp, "198.19.0.12", 80)
                .with_cluster_ip(ip("2001:db8:19::12"))
                .with_node_port(30012)
                .with_endpoint(remote("198.18.2.12", 80))
                .with_endpoint(remote("2001:db8:18:2::12", 80))],
            vec![
                tcp(
                    "v4 cluster IP to v4 endpoint",
                    POD,
                    "198.19.0.12",
                    80,
                    "198.18.2.12:80",
                ),
                tcp(
                    "v6 cluster IP to v6 endpoint",
                    POD6,
                    "2001:db8:19::12",
                    80,
                    "[2001:db8:18:2::12]:80",
                ),
                tcp("v4 node port", CLIENT, NODE_IP, 30012, "198.18.2.12:80").masq(),
                tcp(
                    "v6 node port",
                    CLIENT6,
                    NODE_IP6,
                    30012,
                    "[2001:db8:18:2::12]:80",
                )
                .masq(),
            ],
        ),
        Case {
            name: "tree_40_services",
            table: table(forty_services()),
            config: IptablesConfig {
                dispatch: DispatchLayout::Tree,
                ..config()
            },
            flows: vec![
                tcp(
                    "first service",
                    POD,
                    "198.19.1.0",
                    80,
                    "198.18.10.0:80, 198.18.11.0:80",
                ),
                tcp(
                    "a middle service",
                    POD,
                    "198.19.1.20",
                    80,
                    "198.18.10.20:80, 198.18.11.20:80",
                ),
                tcp(
                    "its udp port on the same VIP",
                    POD,
                    "198.19.1.20",
                    53,
                    "198.18.10.20:53",
                )
                .proto(Protocol::Udp),
                tcp(
                    "last service",
                    POD,
                    "198.19.1.39",
                    80,
                    "198.18.10.39:80, 198.18.11.39:80",
                ),
                tcp(
                    "a free address in the range is not ours",
                    POD,
                    "198.19.1.200",
                    80,
                    "ACCEPT",
                ),
                tcp(
                    "node port after the tree",
                    CLIENT,
                    NODE_IP,
                    30039,
                    "198.18.10.39:80, 198.18.11.39:80",
                )
                .masq(),
            ],
        },
        Case {
            name: "tree_40_services_port_chains",
            table: table(forty_services()),
            config: IptablesConfig {
                dispatch: DispatchLayout::Tree,
                tree: TreeConfig {
                    inline_balancing: InlineBalancing::Never,
                    ..TreeConfig::default()
                },
                ..config()
            },
            flows: vec![tcp(
                "its udp port on the same VIP, through its own chain",
                POD,
                "198.19.1.20",
                53,
                "198.18.10.20:53",
            )
            .proto(Protocol::Udp)],
        },
        Case {
            name: "tree_inline_leaves",
            table: table(inline_leaves()),
            config: IptablesConfig {
                dispatch: DispatchLayout::Tree,
                // Small leaves, so 12 ports make a tree and one port does not fit in a leaf.
                tree: TreeConfig {
                    leaf_max_rules: 10,
                    ..TreeConfig::default()
                },
                ..config()
            },
            flows: vec![
                tcp(
                    "the first port, whose leaf it shares with its neighbour",
                    POD,
                    "198.19.2.0",
                    80,
                    "198.18.2.0:80, 198.18.3.0:80, 198.18.4.0:80",
                ),
                tcp(
                    "a port with a hairpin endpoint, behind a neighbour in its leaf",
                    POD,
                    "198.19.2.3",
                    80,
                    "198.18.1.3:80, 198.18.3.3:80, 198.18.4.3:80",
                ),
                tcp(
                    "the port too large for a leaf, through its own chain",
                    POD,
                    "198.19.2.5",
                    80,
                    "198.18.2.5:80, 198.18.3.5:80, 198.18.4.5:80, 198.18.5.5:80, 198.18.6.5:80, 198.18.7.5:80, 198.18.8.5:80, 198.18.9.5:80, 198.18.10.5:80, 198.18.11.5:80",
                ),
                tcp(
                    "the last port",
                    POD,
                    "198.19.2.11",
                    80,
                    "198.18.2.11:80, 198.18.3.11:80, 198.18.4.11:80",
                ),
                tcp(
                    "its port number only: another port of a VIP is not its",
                    POD,
                    "198.19.2.11",
                    81,
                    "ACCEPT",
                ),
                tcp(
                    "from outside the cluster: masqueraded in the leaf",
                    CLIENT,
                    "198.19.2.7",
                    80,
                    "198.18.2.7:80, 198.18.3.7:80, 198.18.4.7:80",
                )
                .masq(),
            ],
        },
    ]
}

/// 12 cluster-IP-only ports on 198.19.2.0..198.19.2.11 with 3 remote endpoints each
/// (198.18.{2,3,4}.i), except port 3, whose first endpoint is on this node (198.18.1.3: hairpin
/// rules), and port 5, with 10 endpoints (198.18.{2..11}.5: more rules than a leaf of
/// `tree_inline_leaves` holds).
fn inline_leaves() -> Vec<ServicePort> {
    (0..12u8)
        .map(|i| {
            let count = if i == 5 { 10 } else { 3 };
            let mut p = port(
                &format!("c{i:02}"),
                Protocol::Tcp,
                &format!("198.19.2.{i}"),
                80,
            );
            p.target_port = 80;
            for net in 2..2 + count {
                p = if i == 3 && net == 2 {
                    p.with_endpoint(local("198.18.1.3", 80))
                } else {
                    p.with_endpoint(remote(&format!("198.18.{net}.{i}"), 80))
                };
            }
            p
        })
        .collect()
}

/// 40 services of 2 endpoints on 198.19.1.0..198.19.1.39 (node ports 30000 + i), every fifth with a
/// second (UDP) port on the same VIP.
fn forty_services() -> Vec<ServicePort> {
    let mut ports = Vec::new();
    for i in 0..40u32 {
        let vip: IpAddr =
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 19, 1, 0)) + i).into();
        let ep = |net: u8| -> Endpoint {
            let addr =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, net, 0)) + i);
            remote(&addr.to_string(), 80)
        };
        let name = format!("svc{i:02}");
        let mut p = ServicePort::new(
            ServicePortName::new("ns", name.clone(), "http"),
            Protocol::Tcp,
            80,
        )
        .with_cluster_ip(vip)
        .with_node_port(30000 + i as u16)
        .with_endpoint(ep(10))
        .with_endpoint(ep(11));
        p.target_port = 80;
        ports.push(p);
        if i % 5 == 0 {
            let mut e = ep(10);
            e.port = 53;
            ports.push(
                ServicePort::new(ServicePortName::new("ns", name, "dns"), Protocol::Udp, 53)
                    .with_cluster_ip(vip)
                    .with_endpoint(e),
            );
        }
    }
    ports
}

/// `n` service ports of `endpoints` endpoints each, all in 198.18.0.0/15: VIPs from 198.19.0.0,
/// endpoints from 198.18.0.0 (the scale tests' table).
pub fn scale_table(n: u32, endpoints: u32) -> ServiceTable {
    let mut b = ServiceTable::builder().node("node-a");
    let vip_base = u32::from(std::net::Ipv4Addr::new(198, 19, 0, 0));
    let ep_base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0));
    for i in 0..n {
        let vip: IpAddr = std::net::Ipv4Addr::from(vip_base + i).into();
        let mut p = ServicePort::new(
            ServicePortName::new("scale", format!("s{i}"), "p"),
            Protocol::Tcp,
            80,
        )
        .with_cluster_ip(vip);
        for j in 0..endpoints {
            let addr: IpAddr = std::net::Ipv4Addr::from(ep_base + i * endpoints + j).into();
            p = p.with_endpoint(Endpoint::new(addr, 8080));
        }
        b = b.insert(p);
    }
    b.build().expect("valid scale table")
}

/// Plans `table` in full with [`config`], restores it with `variant` and installs the hooks, in
/// the calling thread's network namespace: for namespace tests, on a thread that has entered the
/// test's own namespace (`testkit::netns`).
///
/// # Panics
///
/// When planning, the restore or the hooks fail.
pub fn apply_full_with_hooks(variant: Variant, table: &ServiceTable) {
    let planner = Planner::new(config()).expect("valid config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(apply_plan(
        &CommandRunner::new(variant),
        &planner.plan_full(table),
    ))
    .expect("apply");
    ensure_hooks(&IptablesHooks::new(variant), &planner.hooks()).expect("hooks");
}

/// Makes the calling thread's namespace (a test's own, entered with `testkit::netns`) an IPv4
/// node: `lo` up with `local_addrs` on it (the local endpoints), the node's interface `node0` (one
/// end of a veth pair: the host may lack `dummy`) with [`NODE_IP`]/24, and the cluster IPs
/// (198.19.0.0/16) routed out of it, since service addresses need a route for the first routing
/// decision, as on a real node.
///
/// # Panics
///
/// When `ip` fails (needs root).
pub fn setup_node_v4(local_addrs: &[&str]) {
    let mut lines = vec![
        "link set lo up".to_owned(),
        "link add node0 type veth peer name node1".to_owned(),
        format!("addr add {NODE_IP}/24 dev node0"),
        "link set node0 up".to_owned(),
        "link set node1 up".to_owned(),
        "route add 198.19.0.0/16 dev node0".to_owned(),
    ];
    lines.extend(local_addrs.iter().map(|a| format!("addr add {a} dev lo")));
    testkit::process::run_with_stdin("ip", &["-batch", "-"], &(lines.join("\n") + "\n"));
}
