//! The parts of the service model: a service port's key, its policies, its endpoints. They sit
//! below both [`crate::table`] (which re-exports them, and is their public path) and
//! [`crate::validate`] (which checks them), so that the table can validate what it builds
//! without the two modules importing each other.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The map of a table's service ports: a persistent B-tree ordered by name. Cloning is O(1),
/// an insert O(log N), and two maps that share structure diff in time proportional to what
/// differs.
pub type PortMap = imbl::OrdMap<ServicePortName, Arc<ServicePort>>;

/// The key of a service port: `namespace/name:port`, as kube-proxy's `ServicePortName`.
///
/// Ordered by namespace, then name, then port name, so tables iterate in a stable order.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The service's namespace (`default` in `default/web`).
    pub namespace: String,
    /// The service's name (`web` in `default/web`).
    pub name: String,
    /// The port's name (`http`); may be empty for a service with a single unnamed port.
    pub port: String,
}

impl ServicePortName {
    /// A key from its three parts.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
        }
    }

    /// The service part, `namespace/name`, as written in table files.
    pub fn service(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ServicePortName {
    /// `namespace/name:port`, or `namespace/name` when the port has no name: kube-proxy's form,
    /// used in rule comments and logs. Control characters (which validation rejects, but a name
    /// is printed before it is validated too) are escaped, so that a name never forges a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (namespace, name) = (escape_control(&self.namespace), escape_control(&self.name));
        if self.port.is_empty() {
            write!(f, "{namespace}/{name}")
        } else {
            write!(f, "{namespace}/{name}:{}", escape_control(&self.port))
        }
    }
}

impl fmt::Debug for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Every protocol, in order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The lower-case name used by iptables (`-p tcp`) and in table files.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Session affinity of a service port (Kubernetes `sessionAffinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    /// Every new connection picks an endpoint afresh.
    #[default]
    None,
    /// Connections from one client IP stick to one endpoint until `timeout` passes without traffic
    /// (kube-proxy: `-m recent --rcheck --seconds`; IPVS: persistence).
    ClientIp {
        /// How long a client stays pinned; Kubernetes allows 1 s to 86,400 s (default 10,800 s).
        timeout: Duration,
    },
}

impl SessionAffinity {
    /// Kubernetes' default client-IP affinity timeout: 3 hours.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10_800);
    /// The longest timeout Kubernetes accepts: one day.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

    /// The affinity timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout } => Some(*timeout),
        }
    }
}

/// External or internal traffic policy (Kubernetes `externalTrafficPolicy`/`internalTrafficPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster.
    #[default]
    Cluster,
    /// Only endpoints on this node; traffic is dropped when there are none.
    Local,
}

/// A load-balancing algorithm a service port asks for. A hint: backends that lack it reject the
/// table through their [`crate::dataplane::Capabilities`]. Names are IPVS's (`ipvsadm -s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scheduler {
    /// `rr`: round robin.
    #[serde(rename = "rr")]
    RoundRobin,
    /// `wrr`: weighted round robin.
    #[serde(rename = "wrr")]
    WeightedRoundRobin,
    /// `lc`: least connections.
    #[serde(rename = "lc")]
    LeastConnection,
    /// `wlc`: weighted least connections.
    #[serde(rename = "wlc")]
    WeightedLeastConnection,
    /// `sh`: source hashing.
    #[serde(rename = "sh")]
    SourceHash,
    /// `dh`: destination hashing.
    #[serde(rename = "dh")]
    DestinationHash,
    /// `sed`: shortest expected delay.
    #[serde(rename = "sed")]
    ShortestExpectedDelay,
    /// `nq`: never queue.
    #[serde(rename = "nq")]
    NeverQueue,
    /// `mh`: Maglev consistent hashing.
    #[serde(rename = "mh")]
    Maglev,
    /// `random`: uniform random choice (weights respected); what iptables' statistic match does.
    #[serde(rename = "random")]
    Random,
}

impl Scheduler {
    /// Every scheduler, in order.
    pub const ALL: [Scheduler; 10] = [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnection,
        Scheduler::WeightedLeastConnection,
        Scheduler::SourceHash,
        Scheduler::DestinationHash,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
        Scheduler::Maglev,
        Scheduler::Random,
    ];

    /// The short name used in table files and by `ipvsadm` (`rr`, `mh`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::SourceHash => "sh",
            Scheduler::DestinationHash => "dh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::Maglev => "mh",
            Scheduler::Random => "random",
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend of a service port: an address and the port traffic is sent to, with the
/// EndpointSlice conditions kube-proxy reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The endpoint's address (a pod IP).
    pub addr: IpAddr,
    /// The port on the endpoint (the service port's target port).
    pub port: u16,
    /// The node the endpoint runs on, if known.
    pub node: Option<String>,
    /// Whether the endpoint is on this node (drives `Local` traffic policies).
    pub is_local: bool,
    /// Ready: serving and not terminating. New connections go to ready endpoints.
    pub ready: bool,
    /// Serving: able to answer, whether or not it is terminating.
    pub serving: bool,
    /// Terminating: being shut down. Serving+terminating endpoints are a fallback only.
    pub terminating: bool,
    /// The endpoint's zone, if known.
    pub zone: Option<String>,
    /// Relative weight for weighted schedulers; 1 by default, 0 takes no new connections.
    pub weight: u32,
    /// Topology hint: the zones whose nodes should use this endpoint (EndpointSlice
    /// `hints.forZones`, set for topology-aware routing and `trafficDistribution:
    /// PreferSameZone`). Empty: no zone hint. See [`crate::select`] for how hints are read.
    pub zone_hints: Vec<String>,
    /// Topology hint: the nodes that should use this endpoint (`hints.forNodes`, set for
    /// `trafficDistribution: PreferSameNode`). Empty: no node hint.
    pub node_hints: Vec<String>,
}

impl Endpoint {
    /// A ready, serving, non-terminating endpoint of weight 1 on no particular node.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            addr,
            port,
            node: None,
            is_local: false,
            ready: true,
            serving: true,
            terminating: false,
            zone: None,
            weight: 1,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        }
    }

    /// Whether the endpoint carries any topology hint.
    pub fn has_hints(&self) -> bool {
        !self.zone_hints.is_empty() || !self.node_hints.is_empty()
    }

    /// The endpoint's key within its service port: address and port.
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

/// Identifies an endpoint within a service port: `addr:port`. The diff pairs endpoints by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// The endpoint's address.
    pub addr: IpAddr,
    /// The endpoint's port.
    pub port: u16,
}

impl fmt::Display for EndpointKey {
    /// `198.18.1.10:8080` or `[2001:db8::1]:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::net::SocketAddr::new(self.addr, self.port).fmt(f)
    }
}

/// A service port: the virtual addresses and ports a service answers on, its policies, and its
/// endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `namespace/name:port`.
    pub name: ServicePortName,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// Cluster IPs: at most one IPv4 and one IPv6 address.
    pub cluster_ips: Vec<IpAddr>,
    /// The service port, on the cluster, external and load-balancer IPs.
    pub port: u16,
    /// The default port on endpoints (each [`Endpoint`] carries its own resolved port).
    pub target_port: u16,
    /// The node port, on every local address of the node, if any.
    pub node_port: Option<u16>,
    /// External IPs: addresses routed to this node that also serve the port.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// Sources allowed to reach the load-balancer IPs; empty allows everyone.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// Client-IP stickiness.
    pub session_affinity: SessionAffinity,
    /// Policy for traffic from outside (node ports, external and load-balancer IPs).
    pub external_traffic_policy: TrafficPolicy,
    /// Policy for traffic to the cluster IPs.
    pub internal_traffic_policy: TrafficPolicy,
    /// The load-balancing algorithm asked for, if any; backends use their default otherwise.
    pub scheduler: Option<Scheduler>,
    /// The node port on which a health check answers for `Local` external policies.
    pub health_check_node_port: Option<u16>,
    /// How long a proxied connection (TCP) or flow (UDP) of this port may stay idle, with no
    /// byte either way, before it is closed; `None` leaves it to the backend's default. Whole
    /// seconds, 1 s to [`ServicePort::MAX_IDLE_TIMEOUT`] (kube-proxy's userspace mode had one
    /// `--udp-timeout` for every service; HAProxy's `timeout client`/`timeout server` are set per
    /// frontend and backend). Only the userspace backend reads it: the kernel backends' timeouts
    /// (IPVS `--set`, conntrack's `nf_conntrack_tcp_timeout_*`) are per network namespace, not
    /// per service, so iptables and IPVS ignore it.
    pub idle_timeout: Option<Duration>,
    /// The endpoints, in a stable order (sorted by [`EndpointKey`] when built).
    pub endpoints: Vec<Endpoint>,
    /// This node's name and zone, against which the endpoints' topology hints are read.
    /// [`TableBuilder::build`](crate::table::TableBuilder::build) sets it from the table on
    /// every port that has an endpoint with hints (the name only if some endpoint has node
    /// hints, the zone only if some has zone hints) and clears it on the others, whatever was
    /// set before: a port changes when the node's name or zone changes only if its hints read it.
    pub topology: Option<NodeTopology>,
}

/// Where this node is, for reading topology hints: its name and its zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeTopology {
    /// This node's name (matched against [`Endpoint::node_hints`]); set only on ports with
    /// node hints.
    pub node: Option<String>,
    /// This node's zone (matched against [`Endpoint::zone_hints`]); set only on ports with
    /// zone hints.
    pub zone: Option<String>,
}

impl NodeTopology {
    /// What `endpoints`' hints read of this node: its name if any has node hints, its zone if
    /// any has zone hints; `None` when there are no hints.
    pub(crate) fn read_by(
        endpoints: &[Endpoint],
        node: &Option<String>,
        zone: &Option<String>,
    ) -> Option<NodeTopology> {
        let node_hints = endpoints.iter().any(|ep| !ep.node_hints.is_empty());
        let zone_hints = endpoints.iter().any(|ep| !ep.zone_hints.is_empty());
        (node_hints || zone_hints).then(|| NodeTopology {
            node: node.clone().filter(|_| node_hints),
            zone: zone.clone().filter(|_| zone_hints),
        })
    }
}

impl ServicePort {
    /// A service port with no addresses and no endpoints, cluster policies, no affinity; the target
    /// port defaults to `port`.
    pub fn new(name: ServicePortName, protocol: Protocol, port: u16) -> Self {
        Self {
            name,
            protocol,
            cluster_ips: Vec::new(),
            port,
            target_port: port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            scheduler: None,
            health_check_node_port: None,
            idle_timeout: None,
            endpoints: Vec::new(),
            topology: None,
        }
    }

    /// The longest idle timeout a port may ask for: one day (as Kubernetes' longest affinity
    /// timeout).
    pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400);

    /// Adds a cluster IP.
    pub fn with_cluster_ip(mut self, ip: IpAddr) -> Self {
        self.cluster_ips.push(ip);
        self
    }

    /// Sets the node port.
    pub fn with_node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }

    /// Sets the idle timeout of this port's connections and flows.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = Some(idle_timeout);
        self
    }

    /// Adds an endpoint.
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Every virtual address this port answers on with `port` (not node ports): cluster, external,
    /// then load-balancer IPs.
    pub fn service_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.cluster_ips
            .iter()
            .chain(&self.external_ips)
            .chain(&self.load_balancer_ips)
            .copied()
    }

    /// Whether traffic from outside (node port, external or LB IP) can reach this port at all.
    pub fn has_external_addresses(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// `text` with each control character escaped as Rust writes it (`\n`, `\0`, `\u{1b}`), so
/// that a name printed in a log line, an error or a terminal stays one harmless line.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}
