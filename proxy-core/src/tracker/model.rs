//! What an embedder tells the [`ChangeTracker`](super::ChangeTracker), object by object: a
//! [`Service`] (its ports and policies) and the [`EndpointSlice`]s of a service, keyed the way
//! Kubernetes keys EndpointSlices so that several slices of one service merge.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::table::{Protocol, Scheduler, ServicePortName, SessionAffinity, TrafficPolicy};

/// A service's key: `namespace/name`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// The namespace (`default` in `default/web`).
    pub namespace: String,
    /// The name (`web` in `default/web`).
    pub name: String,
}

impl ServiceName {
    /// A key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of this service's port named `port` (`""` for a single unnamed port).
    pub fn port(&self, port: impl Into<String>) -> ServicePortName {
        ServicePortName::new(self.namespace.clone(), self.name.clone(), port)
    }

    /// The service a service port belongs to.
    pub fn of(port: &ServicePortName) -> Self {
        Self::new(port.namespace.clone(), port.name.clone())
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// One port of a [`Service`] (a Kubernetes `ServicePort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortSpec {
    /// The port's name; may be empty only when the service has a single port.
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The service port, on the cluster, external and load-balancer IPs.
    pub port: u16,
    /// The port on endpoints, used when the endpoint slices name no port of this name (see
    /// [`EndpointSlice::ports`]).
    pub target_port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
}

impl ServicePortSpec {
    /// A TCP port whose target port is the same number, with no node port.
    pub fn tcp(name: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            protocol: Protocol::Tcp,
            port,
            target_port: port,
            node_port: None,
        }
    }

    /// A UDP port whose target port is the same number, with no node port.
    pub fn udp(name: impl Into<String>, port: u16) -> Self {
        Self {
            protocol: Protocol::Udp,
            ..Self::tcp(name, port)
        }
    }

    /// The same port, sending to `target_port` on endpoints.
    #[must_use]
    pub fn with_target_port(mut self, target_port: u16) -> Self {
        self.target_port = target_port;
        self
    }

    /// The same port, also on node port `node_port`.
    #[must_use]
    pub fn with_node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }
}

/// A service: its ports, the addresses it answers on and its policies (a Kubernetes `Service`,
/// in our model's terms). Its endpoints come separately, in [`EndpointSlice`]s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// `namespace/name`.
    pub name: ServiceName,
    /// The ports; each becomes one service port of the table.
    pub ports: Vec<ServicePortSpec>,
    /// Cluster IPs: at most one IPv4 and one IPv6 address.
    pub cluster_ips: Vec<IpAddr>,
    /// External IPs.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// Sources allowed to reach the load-balancer IPs; empty allows everyone.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// Client-IP stickiness.
    pub session_affinity: SessionAffinity,
    /// Policy for node ports, external and load-balancer IPs.
    pub external_traffic_policy: TrafficPolicy,
    /// Policy for cluster IPs.
    pub internal_traffic_policy: TrafficPolicy,
    /// A scheduler hint.
    pub scheduler: Option<Scheduler>,
    /// The health-check node port of a `Local` external policy.
    pub health_check_node_port: Option<u16>,
    /// How long a connection or UDP flow of any of its ports may stay idle before it is closed
    /// (whole seconds, 1 s to a day); `None`: the backend's default. See
    /// [`crate::table::ServicePort::idle_timeout`] for which backends read it.
    pub idle_timeout: Option<Duration>,
}

impl Service {
    /// A service with no ports, no addresses, cluster policies and no affinity.
    pub fn new(name: ServiceName) -> Self {
        Self {
            name,
            ports: Vec::new(),
            cluster_ips: Vec::new(),
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            scheduler: None,
            health_check_node_port: None,
            idle_timeout: None,
        }
    }

    /// The same service with one more cluster IP.
    #[must_use]
    pub fn with_cluster_ip(mut self, ip: IpAddr) -> Self {
        self.cluster_ips.push(ip);
        self
    }

    /// The same service with one more port.
    #[must_use]
    pub fn with_port(mut self, port: ServicePortSpec) -> Self {
        self.ports.push(port);
        self
    }

    /// The same service, closing connections and flows idle for `idle_timeout`.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = Some(idle_timeout);
        self
    }
}

/// A named port of an [`EndpointSlice`]: the service port of the same name sends to `port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlicePort {
    /// The service port's name this port serves (`""` for an unnamed port).
    pub name: String,
    /// The port on the slice's endpoints.
    pub port: u16,
}

/// One endpoint of an [`EndpointSlice`], with the conditions kube-proxy reads. Whether it is
/// local is not said here: the tracker compares [`SliceEndpoint::node`] with this node's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceEndpoint {
    /// The endpoint's address.
    pub addr: IpAddr,
    /// The node it runs on (`nodeName`).
    pub node: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Ready: takes new connections.
    pub ready: bool,
    /// Serving: answers, whether or not it is terminating.
    pub serving: bool,
    /// Terminating: being shut down.
    pub terminating: bool,
    /// Relative weight for weighted schedulers.
    pub weight: u32,
    /// Topology hint `forZones`.
    pub zone_hints: Vec<String>,
    /// Topology hint `forNodes`.
    pub node_hints: Vec<String>,
    /// A port for every service port, overriding the slice's ports and the target ports (the
    /// table file's per-endpoint `port`).
    pub port: Option<u16>,
    /// Overrides locality (the table file's `local`); `None`, the normal case, derives it from
    /// `node`.
    pub local: Option<bool>,
}

impl SliceEndpoint {
    /// A ready, serving, non-terminating endpoint of weight 1 on no particular node.
    pub fn new(addr: IpAddr) -> Self {
        Self {
            addr,
            node: None,
            zone: None,
            ready: true,
            serving: true,
            terminating: false,
            weight: 1,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
            port: None,
            local: None,
        }
    }

    /// The same endpoint, on node `node`.
    #[must_use]
    pub fn on_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// The same endpoint, terminating: not ready, still serving.
    #[must_use]
    pub fn terminating(mut self) -> Self {
        self.ready = false;
        self.serving = true;
        self.terminating = true;
        self
    }
}

/// A set of endpoints of one service, keyed by `(service, name)` as an EndpointSlice is: the
/// tracker merges every slice of a service. A slice whose `ports` is empty serves every service
/// port at its target port; otherwise service port `p` gets the slice's endpoints at the slice
/// port named like `p`, and none from this slice if there is no such port (kube-proxy's join).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSlice {
    /// The service whose endpoints these are.
    pub service: ServiceName,
    /// The slice's name, unique within the service.
    pub name: String,
    /// The slice's ports, by service port name; empty means "each service port's target port".
    pub ports: Vec<SlicePort>,
    /// The endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

impl EndpointSlice {
    /// A slice with no ports (every service port's target port) and no endpoints.
    pub fn new(service: ServiceName, name: impl Into<String>) -> Self {
        Self {
            service,
            name: name.into(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// The same slice with one more endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: SliceEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// The same slice with one more named port.
    #[must_use]
    pub fn with_port(mut self, name: impl Into<String>, port: u16) -> Self {
        self.ports.push(SlicePort {
            name: name.into(),
            port,
        });
        self
    }
}
