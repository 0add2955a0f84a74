//! The namespaces every backend is tested in, one set per test binary, and the addresses in
//! them (all in 198.18.0.0/15, services in 198.19.0.0/16):
//!
//! ```text
//!  client            c1 198.18.250.1, 198.18.251.1 ── c0 198.18.250.254, 198.18.251.254 ─┐
//!  (outside the                                        (NODE_IP = 198.18.250.254)       │
//!   cluster)                                                                            │
//!  pod-l1 (local)    eth0 198.18.1.10 ── l1 198.18.1.1 ─┐                               │
//!  pod-l2 (local)    eth0 198.18.3.10 ── l2 198.18.3.1 ─┼── node: the dataplane under test,
//!  node-b            eth0 198.18.200.2 ── n0 198.18.200.1┘   lo: 198.18.201.1 (a second node
//!  (another node:    lo: remote pods 198.18.2.10, .11)        address), 198.19.101.22 (an LB IP
//!   pods behind it)                                           the node owns)
//! ```
//!
//! Pods on this node each have a namespace of their own, so that a pod reaching itself through
//! its service (hairpin) really leaves and re-enters it. Pods on the other node share one
//! namespace (they are only ever endpoints or sources reached through `n0`). The node routes
//! 198.19.0.0/16 out of `c0`, as a node without the proxy would (service addresses need a
//! route for the first routing decision of a node-originated connection); the pod network is
//! 198.18.0.0/17 (the cluster CIDR), the node's own addresses are outside it.
//!
//! Every endpoint address runs [`crate::endpoints`]' servers on TCP 8080 and 8443 and UDP
//! 8080, answering with their own address and the peer they saw.

use std::net::{IpAddr, Ipv4Addr};

use testkit::netns::{veth, Netns};

use crate::endpoints::EndpointServers;

/// The node's address facing the client (kube-proxy tests' `testNodeIP`).
pub const NODE_IP: IpAddr = v4(198, 18, 250, 254);
/// A second address of the node (on its `lo`; kube-proxy tests' `testNodeIPAlt`).
pub const NODE_IP_ALT: IpAddr = v4(198, 18, 201, 1);
/// The node's second address on the client link (the blocked client's gateway side).
pub const NODE_IP_BLOCKED_SIDE: IpAddr = v4(198, 18, 251, 254);
/// The node's address facing pod L1.
pub const NODE_TO_L1: IpAddr = v4(198, 18, 1, 1);
/// The node's address facing pod L2.
pub const NODE_TO_L2: IpAddr = v4(198, 18, 3, 1);
/// The node's address facing the other node.
pub const NODE_TO_B: IpAddr = v4(198, 18, 200, 1);
/// The other node's address.
pub const NODE_B_IP: IpAddr = v4(198, 18, 200, 2);
/// A load-balancer IP the node owns (on its `lo`), as a cloud load balancer that delivers
/// to the node with the LB IP as destination and source would make it.
pub const NODE_OWNED_LB_IP: IpAddr = v4(198, 19, 101, 22);

/// Every address of the node, as svcproxy reads them at start for the iptables backend's
/// `node_ips` (kube-proxy's node IPs: its `allowFromNode` source-range rule needs them).
pub fn node_addresses() -> Vec<IpAddr> {
    vec![
        NODE_IP,
        NODE_IP_ALT,
        NODE_IP_BLOCKED_SIDE,
        NODE_TO_L1,
        NODE_TO_L2,
        NODE_TO_B,
        NODE_OWNED_LB_IP,
    ]
}

/// An external client inside the LB source ranges (kube-proxy's `testExternalClient`).
pub const CLIENT_IP: IpAddr = v4(198, 18, 250, 1);
/// An external client outside them (kube-proxy's `testExternalClientBlocked`).
pub const BLOCKED_CLIENT_IP: IpAddr = v4(198, 18, 251, 1);
/// Pod L1, on this node.
pub const POD_L1: IpAddr = v4(198, 18, 1, 10);
/// Pod L2, on this node.
pub const POD_L2: IpAddr = v4(198, 18, 3, 10);
/// Pod R1, on the other node.
pub const POD_R1: IpAddr = v4(198, 18, 2, 10);
/// Pod R2, on the other node.
pub const POD_R2: IpAddr = v4(198, 18, 2, 11);

/// The pod network (kube-proxy's `--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "198.18.0.0/17";
/// Where service addresses live.
pub const SERVICE_RANGE: &str = "198.19.0.0/16";

/// The TCP ports every endpoint serves.
pub const TCP_PORTS: [u16; 2] = [8080, 8443];
/// The UDP port every endpoint serves.
pub const UDP_PORT: u16 = 8080;

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Which namespace a probe runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    /// The external client.
    Client,
    /// Pod L1 (on this node).
    PodL1,
    /// Pod L2 (on this node).
    PodL2,
    /// The other node, where pods R1 and R2 live.
    NodeB,
    /// The node itself.
    Node,
}

/// Every endpoint address, with the namespace it lives in.
pub const ENDPOINTS: [(IpAddr, Host); 4] = [
    (POD_L1, Host::PodL1),
    (POD_L2, Host::PodL2),
    (POD_R1, Host::NodeB),
    (POD_R2, Host::NodeB),
];

/// The node's address on the link towards `endpoint`: what the endpoint sees as the source of
/// a masqueraded connection (MASQUERADE picks the outgoing interface's address).
pub fn node_facing(endpoint: IpAddr) -> Option<IpAddr> {
    match endpoint {
        POD_L1 => Some(NODE_TO_L1),
        POD_L2 => Some(NODE_TO_L2),
        POD_R1 | POD_R2 => Some(NODE_TO_B),
        _ => None,
    }
}

/// The namespaces, their links and the endpoint servers; dropping it removes them all.
#[derive(Debug)]
pub struct Topology {
    // Servers first: they stop before their namespaces go.
    servers: Vec<EndpointServers>,
    client: Netns,
    pod_l1: Netns,
    pod_l2: Netns,
    node_b: Netns,
    node: Netns,
}

impl Topology {
    /// Builds the namespaces, named after `tag`, and starts the endpoint servers. Needs root.
    ///
    /// # Panics
    ///
    /// When a namespace, a link or a server cannot be made (not root, no `ip`).
    pub fn new(tag: &str) -> Self {
        let mut t = Self {
            servers: Vec::new(),
            client: Netns::new(&format!("{tag}-client")),
            pod_l1: Netns::new(&format!("{tag}-l1")),
            pod_l2: Netns::new(&format!("{tag}-l2")),
            node_b: Netns::new(&format!("{tag}-nodeb")),
            node: Netns::new(&format!("{tag}-node")),
        };
        t.wire();
        for (addr, host) in ENDPOINTS {
            let servers = EndpointServers::start(t.netns(host), addr);
            t.servers.push(servers);
        }
        t
    }

    fn wire(&self) {
        veth(&self.node, "c0", &self.client, "c1");
        veth(&self.node, "l1", &self.pod_l1, "eth0");
        veth(&self.node, "l2", &self.pod_l2, "eth0");
        veth(&self.node, "n0", &self.node_b, "eth0");
        self.node.ip_batch(&[
            "link set lo up".to_owned(),
            format!("addr add {NODE_IP}/24 dev c0"),
            format!("addr add {NODE_IP_BLOCKED_SIDE}/24 dev c0"),
            format!("addr add {NODE_TO_L1}/24 dev l1"),
            format!("addr add {NODE_TO_L2}/24 dev l2"),
            format!("addr add {NODE_TO_B}/24 dev n0"),
            format!("addr add {NODE_IP_ALT}/32 dev lo"),
            format!("addr add {NODE_OWNED_LB_IP}/32 dev lo"),
            "link set c0 up".to_owned(),
            "link set l1 up".to_owned(),
            "link set l2 up".to_owned(),
            "link set n0 up".to_owned(),
            format!("route add {POD_R1}/31 via {NODE_B_IP}"),
            format!("route add {SERVICE_RANGE} dev c0"),
        ]);
        self.client.ip_batch(&[
            "link set lo up".to_owned(),
            format!("addr add {CLIENT_IP}/24 dev c1"),
            format!("addr add {BLOCKED_CLIENT_IP}/24 dev c1"),
            "link set c1 up".to_owned(),
            format!("route add default via {NODE_IP}"),
        ]);
        for (ns, pod, gw) in [
            (&self.pod_l1, POD_L1, NODE_TO_L1),
            (&self.pod_l2, POD_L2, NODE_TO_L2),
        ] {
            ns.ip_batch(&[
                "link set lo up".to_owned(),
                format!("addr add {pod}/24 dev eth0"),
                "link set eth0 up".to_owned(),
                format!("route add default via {gw}"),
            ]);
        }
        self.node_b.ip_batch(&[
            "link set lo up".to_owned(),
            format!("addr add {NODE_B_IP}/24 dev eth0"),
            format!("addr add {POD_R1}/32 dev lo"),
            format!("addr add {POD_R2}/32 dev lo"),
            "link set eth0 up".to_owned(),
            format!("route add default via {NODE_TO_B}"),
        ]);
        // The node routes between its links; reverse-path filtering would drop the replies of
        // the other node's pods (their addresses sit on its lo) and the hairpin's.
        //
        // No ICMP redirects from the node: an un-DNATed packet from the client to a service
        // address leaves by `c0`, the link it came in on (the service range is routed there),
        // so the kernel would redirect the client; a redirect restarts the client's ICMP
        // rate-limit bucket (`inet_peer`'s `rate_last`, shared with `icmp_ratelimit`), and the
        // `reject` that follows (an ICMP port unreachable, kube-proxy's nftables `reject-chain`)
        // would then be swallowed: a refused flow would look dropped.
        for (ns, settings) in [
            (
                &self.node,
                &[
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.default.send_redirects=0",
                    "net.ipv4.conf.c0.send_redirects=0",
                    "net.ipv4.conf.l1.send_redirects=0",
                    "net.ipv4.conf.l2.send_redirects=0",
                    "net.ipv4.conf.n0.send_redirects=0",
                ][..],
            ),
            (
                &self.node_b,
                &[
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ][..],
            ),
        ] {
            let mut args = vec!["-q", "-w"];
            args.extend_from_slice(settings);
            ns.exec_ok("sysctl", &args);
        }
    }

    /// The namespace of `host`.
    pub fn netns(&self, host: Host) -> &Netns {
        match host {
            Host::Client => &self.client,
            Host::PodL1 => &self.pod_l1,
            Host::PodL2 => &self.pod_l2,
            Host::NodeB => &self.node_b,
            Host::Node => &self.node,
        }
    }

    /// The node's namespace, where the dataplane runs.
    pub fn node(&self) -> &Netns {
        &self.node
    }
}
