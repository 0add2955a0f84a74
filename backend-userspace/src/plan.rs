//! The userspace model and the pure plan: which listeners should exist, and what each does with
//! a new connection.
//!
//! Every service port gets one listener per (address, port): its cluster, external and
//! load-balancer IPs on the service port, and each node address ([`NodeIps`]) on the node port.
//! Each listener carries a [`Route`]: the endpoints new flows may use (chosen by
//! [`proxy_core::select::select_endpoints`] with the internal policy for cluster IPs and the
//! external one for the rest), the scheduler and the affinity timeout.
//!
//! [`plan`] compares that desired map with what is applied and sorts the listeners into open,
//! update (new route, same socket), keep and close: a full sync, which also repairs drift.
//! [`plan_partial`] does the same for the listeners of the service ports a change set names
//! only (and, when the node's addresses changed, those of the ports that depend on them:
//! [`depends_on_node_ips`]), so that its cost follows the change, not the table. No I/O, clock
//! or randomness: same input, same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use proxy_core::dataplane::SyncProblem;
use proxy_core::select::{select_endpoints, Target};
use proxy_core::table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable,
};

use crate::config::UserspaceConfig;
/// The key of a listener, defined below both this module and [`crate::error`] (whose errors name
/// listeners), under its public path here.
pub use crate::listener::ListenerKey;

mod partial;

pub use partial::{plan_partial, NodeIpsChange};

/// The node addresses node ports are served on, after the `node_port_addresses` filter
/// ([`proxy_core::node_addresses::node_port_ips`]). They also decide whether a load-balancer
/// IP with source ranges lets the node in from the IP itself (see [`Route::source_ranges`]).
pub type NodeIps = BTreeSet<IpAddr>;

/// Whether what `port` plans depends on the node's addresses: a node port (a listener per
/// address), or load-balancer source ranges (the node is let in when a range holds one of its
/// addresses). Only these ports are planned again when the addresses change.
pub fn depends_on_node_ips(port: &ServicePort) -> bool {
    port.node_port.is_some()
        || (!port.load_balancer_ips.is_empty() && !port.load_balancer_source_ranges.is_empty())
}

/// Which of a service port's addresses a listener serves; decides the traffic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressKind {
    /// A cluster IP (internal traffic policy).
    ClusterIp,
    /// An external IP (external traffic policy).
    ExternalIp,
    /// A load-balancer IP (external traffic policy, source ranges).
    LoadBalancerIp,
    /// The node port on a node address (external traffic policy).
    NodePort,
}

impl AddressKind {
    /// Short lower-case name for listings and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressKind::ClusterIp => "cluster-ip",
            AddressKind::ExternalIp => "external-ip",
            AddressKind::LoadBalancerIp => "load-balancer-ip",
            AddressKind::NodePort => "node-port",
        }
    }
}

/// One endpoint a listener may send new flows to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The endpoint's address and port.
    pub addr: SocketAddr,
    /// Its weight (0 takes no new flows).
    pub weight: u32,
}

/// What a listener does with a new flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Balance over these endpoints (never empty).
    Endpoints(Vec<Backend>),
    /// No usable endpoint: refuse (TCP reset; UDP datagram discarded).
    Reject,
    /// Endpoints exist but none local for a `Local` policy: drop.
    Drop,
}

/// Everything a listener needs to handle new flows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The service port the listener belongs to.
    pub service_port: ServicePortName,
    /// Which address of the service port it is.
    pub kind: AddressKind,
    /// Where new flows go.
    pub target: RouteTarget,
    /// Where new flows from pods ([`UserspaceConfig::cluster_cidrs`]) or from the node itself
    /// go instead, for an external address (node port, external or load-balancer IP) of a
    /// service whose external traffic policy is `Local`: every endpoint (kube-proxy's
    /// short-circuit, [`proxy_core::select::EndpointSelection::short_circuit_new`]). `None`:
    /// every client gets [`Route::target`].
    pub short_circuit: Option<RouteTarget>,
    /// The scheduler (the port's hint, else the config's default).
    pub scheduler: Scheduler,
    /// Client-IP affinity timeout, if the port has affinity.
    pub affinity_timeout: Option<Duration>,
    /// The port's own idle timeout ([`proxy_core::table::ServicePort::idle_timeout`]); `None`
    /// uses [`UserspaceConfig::idle_timeout`] for TCP and
    /// [`UserspaceConfig::udp_idle_timeout`] for UDP (see [`Route::idle_timeout`]).
    pub port_idle_timeout: Option<Duration>,
    /// Allowed client ranges (load-balancer IPs only; empty allows all). When a range holds a
    /// node address, the port's load-balancer IPs themselves are allowed too: traffic from
    /// this node to a load-balancer IP it holds locally comes from that IP (kube-proxy's
    /// `allowFromNode`, `pkg/proxy/iptables/proxier.go`).
    pub source_ranges: Vec<IpNet>,
}

impl Route {
    /// Whether a client at `ip` may use this listener (load-balancer source ranges).
    pub fn allows_source(&self, ip: IpAddr) -> bool {
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|net| net.contains(&ip))
    }

    /// How long a connection (TCP) or flow (UDP) of this listener may stay idle: the service
    /// port's own timeout, else the config's for the protocol. A connection keeps the timeout
    /// of the route it was accepted under (a route swap applies to new connections, as it does
    /// for endpoints); a UDP flow likewise.
    pub fn idle_timeout(&self, protocol: Protocol, config: &UserspaceConfig) -> Duration {
        self.port_idle_timeout.unwrap_or(match protocol {
            Protocol::Udp => config.udp_idle_timeout,
            Protocol::Tcp | Protocol::Sctp => config.idle_timeout,
        })
    }
}

/// The listeners, by key: desired (from [`plan`]) or applied (from [`crate::observe`]).
pub type Listeners = BTreeMap<ListenerKey, Route>;

/// Which service ports a [`Plan`] covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every service port of the table ([`plan`]): listeners it leaves out are closed.
    #[default]
    Table,
    /// Only these service ports ([`plan_partial`]): every listener they claim, owned or lost,
    /// is in the plan; listeners of other ports are left as they are.
    Ports(BTreeSet<ServicePortName>),
}

impl Scope {
    /// Whether the plan covers `service_port` (all of its listeners are planned).
    pub fn covers(&self, service_port: &ServicePortName) -> bool {
        match self {
            Scope::Table => true,
            Scope::Ports(ports) => ports.contains(service_port),
        }
    }
}

/// The steps from the applied listeners to the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The service ports planned: the whole table, or those a change set names.
    pub scope: Scope,
    /// Every listener the table asks for ([`Scope::Table`]), or every listener the scope's
    /// ports claim, with the route of the port that owns it ([`Scope::Ports`]).
    pub desired: Listeners,
    /// Listeners to bind (not applied yet).
    pub open: Vec<ListenerKey>,
    /// Listeners that stay open with a new route (endpoints, scheduler, policy...).
    pub update: Vec<ListenerKey>,
    /// Listeners that stay as they are.
    pub keep: Vec<ListenerKey>,
    /// Listeners to close (no longer in the table).
    pub close: Vec<ListenerKey>,
    /// Parts of the table that cannot be planned (an address claimed twice, SCTP), in service
    /// port order: all of them ([`Scope::Table`]), or those of the ports that claim a listener
    /// of the plan ([`Scope::Ports`]).
    pub problems: Vec<SyncProblem>,
}

impl Plan {
    /// Whether applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.open.is_empty() && self.update.is_empty() && self.close.is_empty()
    }

    /// How many listeners the plan looks at (open, update, keep and close): the measure of its
    /// cost, which for [`plan_partial`] follows the change.
    pub fn listeners_planned(&self) -> usize {
        self.open.len() + self.update.len() + self.keep.len() + self.close.len()
    }
}

/// The full plan from `applied` to what `table` asks for under `config`, with node ports on
/// `node_ips`: every listener of the table is planned, and every applied listener it does not
/// ask for is closed. Cost: the table.
pub fn plan(
    table: &ServiceTable,
    config: &UserspaceConfig,
    node_ips: &NodeIps,
    applied: &Listeners,
) -> Plan {
    let (desired, problems) = plan_listeners(table, config, node_ips);
    let mut plan = Plan {
        problems,
        ..Plan::default()
    };
    for (key, route) in &desired {
        match applied.get(key) {
            None => plan.open.push(*key),
            Some(old) if old == route => plan.keep.push(*key),
            Some(_) => plan.update.push(*key),
        }
    }
    plan.close = applied
        .keys()
        .filter(|key| !desired.contains_key(key))
        .copied()
        .collect();
    plan.desired = desired;
    plan
}

/// Every listener `table` asks for, and the problems that keep some from existing.
pub fn plan_listeners(
    table: &ServiceTable,
    config: &UserspaceConfig,
    node_ips: &NodeIps,
) -> (Listeners, Vec<SyncProblem>) {
    let mut listeners = Listeners::new();
    let mut problems = Vec::new();
    for port in table.iter() {
        if port.protocol == Protocol::Sctp {
            problems.push(sctp_problem(&port.name));
            continue;
        }
        // The first claim of an address wins, in service port order (then in the port's own
        // order of addresses); the others are problems of the ports that lost.
        for (key, route) in plan_service_port(port, config, node_ips) {
            if let Some(existing) = listeners.get(&key) {
                problems.push(clash_problem(&port.name, key, &existing.service_port));
                continue;
            }
            listeners.insert(key, route);
        }
    }
    (listeners, problems)
}

/// The problem of a service port the userspace backend cannot serve at all.
fn sctp_problem(service_port: &ServicePortName) -> SyncProblem {
    SyncProblem::of_port(
        service_port.clone(),
        service_port.to_string(),
        "SCTP is not supported by the userspace backend",
    )
}

/// The problem of `service_port`, whose claim on `key` lost to `owner`'s.
fn clash_problem(
    service_port: &ServicePortName,
    key: ListenerKey,
    owner: &ServicePortName,
) -> SyncProblem {
    SyncProblem::of_port(
        service_port.clone(),
        format!("{service_port} {key}"),
        format!("address already claimed by {owner}"),
    )
}

/// The listeners of one service port, in claim order: cluster IPs, external IPs,
/// load-balancer IPs, then the node port on each node address.
pub fn plan_service_port(
    port: &ServicePort,
    config: &UserspaceConfig,
    node_ips: &NodeIps,
) -> Vec<(ListenerKey, Route)> {
    let selection = select_endpoints(port);
    // New flows only: endpoints of weight 0 drain (flows open to them go on) and take none; a
    // port whose endpoints all have weight 0 rejects (proxy_core::select's one meaning).
    let internal = route_target(selection.internal_new());
    let external = route_target(selection.external_new());
    let short_circuit = selection.short_circuit_new().map(route_target);
    let source_ranges = load_balancer_sources(port, node_ips);
    let route = |kind: AddressKind| Route {
        service_port: port.name.clone(),
        kind,
        target: if kind == AddressKind::ClusterIp {
            internal.clone()
        } else {
            external.clone()
        },
        short_circuit: if kind == AddressKind::ClusterIp {
            None
        } else {
            short_circuit.clone()
        },
        scheduler: port.scheduler.unwrap_or(config.default_scheduler),
        affinity_timeout: port.session_affinity.timeout(),
        port_idle_timeout: port.idle_timeout,
        source_ranges: if kind == AddressKind::LoadBalancerIp {
            source_ranges.clone()
        } else {
            Vec::new()
        },
    };
    listener_keys(port, node_ips)
        .into_iter()
        .map(|(key, kind)| (key, route(kind)))
        .collect()
}

/// The sources a load-balancer IP of `port` admits: its source ranges, and when one of them
/// holds a node address, each of its load-balancer IPs (kube-proxy's `allowFromNode`: a
/// node reaching a load-balancer IP it holds locally sends from that IP). Empty: everyone.
fn load_balancer_sources(port: &ServicePort, node_ips: &NodeIps) -> Vec<IpNet> {
    let mut sources = port.load_balancer_source_ranges.clone();
    if allows_node(port, node_ips) {
        sources.extend(port.load_balancer_ips.iter().map(|ip| IpNet::from(*ip)));
    }
    sources
}

/// Whether one of `port`'s load-balancer source ranges holds a node address.
fn allows_node(port: &ServicePort, node_ips: &NodeIps) -> bool {
    port.load_balancer_source_ranges
        .iter()
        .any(|net| node_ips.iter().any(|ip| net.contains(ip)))
}

/// The listener keys one service port claims, in claim order (see [`plan_service_port`]),
/// without working out routes: cheap enough for the old value of a changed port.
fn listener_keys(port: &ServicePort, node_ips: &NodeIps) -> Vec<(ListenerKey, AddressKind)> {
    let key = |ip: IpAddr, p: u16| ListenerKey {
        protocol: port.protocol,
        addr: SocketAddr::new(ip, p),
    };
    let mut out = Vec::new();
    for &ip in &port.cluster_ips {
        out.push((key(ip, port.port), AddressKind::ClusterIp));
    }
    for &ip in &port.external_ips {
        out.push((key(ip, port.port), AddressKind::ExternalIp));
    }
    for &ip in &port.load_balancer_ips {
        out.push((key(ip, port.port), AddressKind::LoadBalancerIp));
    }
    if let Some(node_port) = port.node_port {
        for &ip in node_ips {
            out.push((key(ip, node_port), AddressKind::NodePort));
        }
    }
    out
}

fn route_target(target: Target<'_, '_>) -> RouteTarget {
    match target {
        Target::Endpoints(endpoints) => {
            RouteTarget::Endpoints(endpoints.iter().map(|ep| backend(ep)).collect())
        }
        Target::Reject => RouteTarget::Reject,
        Target::Drop => RouteTarget::Drop,
    }
}

fn backend(endpoint: &Endpoint) -> Backend {
    Backend {
        addr: SocketAddr::new(endpoint.addr, endpoint.port),
        weight: endpoint.weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::table::{SessionAffinity, TrafficPolicy};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    fn web() -> ServicePort {
        let mut local = Endpoint::new(ip("127.0.0.50"), 8080);
        local.is_local = true;
        ServicePort::new(
            ServicePortName::new("default", "web", "http"),
            Protocol::Tcp,
            8000,
        )
        .with_cluster_ip(ip("127.0.0.10"))
        .with_node_port(30080)
        .with_endpoint(local)
        .with_endpoint(Endpoint::new(ip("127.0.0.51"), 8080))
    }

    fn config() -> UserspaceConfig {
        UserspaceConfig {
            node_addresses: vec![ip("127.0.0.1"), ip("127.0.0.2")],
            ..UserspaceConfig::default()
        }
    }

    fn ips() -> NodeIps {
        config().node_addresses.into_iter().collect()
    }

    fn table(ports: Vec<ServicePort>) -> ServiceTable {
        let mut builder = ServiceTable::builder().node("node-a");
        for p in ports {
            builder = builder.insert(p);
        }
        builder.build().expect("valid table")
    }

    fn key(s: &str) -> ListenerKey {
        ListenerKey {
            protocol: Protocol::Tcp,
            addr: s.parse().expect("socket addr"),
        }
    }

    #[test]
    fn pods_and_the_node_reach_every_endpoint_through_an_external_address_of_a_local_service() {
        let mut port = web();
        port.external_traffic_policy = TrafficPolicy::Local;
        port.external_ips = vec![ip("127.0.0.11")];
        let p = plan(
            &table(vec![port.clone()]),
            &config(),
            &ips(),
            &Listeners::new(),
        );
        let both = RouteTarget::Endpoints(vec![
            Backend {
                addr: "127.0.0.50:8080".parse().expect("addr"),
                weight: 1,
            },
            Backend {
                addr: "127.0.0.51:8080".parse().expect("addr"),
                weight: 1,
            },
        ]);
        for listener in ["127.0.0.11:8000", "127.0.0.1:30080"] {
            let route = &p.desired[&key(listener)];
            let RouteTarget::Endpoints(local) = &route.target else {
                panic!("{listener}: {route:?}");
            };
            assert_eq!(local.len(), 1, "{listener}: others get the local endpoint");
            assert_eq!(route.short_circuit.as_ref(), Some(&both), "{listener}");
        }
        let cluster_ip = &p.desired[&key("127.0.0.10:8000")];
        assert_eq!(cluster_ip.target, both);
        assert_eq!(
            cluster_ip.short_circuit, None,
            "the internal policy decides"
        );

        // No local endpoint: others are dropped, pods and the node still get through.
        port.endpoints.retain(|endpoint| !endpoint.is_local);
        let p = plan(&table(vec![port]), &config(), &ips(), &Listeners::new());
        let route = &p.desired[&key("127.0.0.1:30080")];
        assert_eq!(route.target, RouteTarget::Drop);
        assert!(
            matches!(&route.short_circuit, Some(RouteTarget::Endpoints(remote)) if remote.len() == 1),
            "{route:?}"
        );
        // A Cluster policy has no short-circuit.
        let p = plan(&table(vec![web()]), &config(), &ips(), &Listeners::new());
        assert!(p
            .desired
            .values()
            .all(|route| route.short_circuit.is_none()));
    }

    #[test]
    fn one_listener_per_address_and_node_address() {
        let mut port = web();
        port.external_ips = vec![ip("127.0.0.11")];
        port.load_balancer_ips = vec![ip("127.0.0.12")];
        port.load_balancer_source_ranges = vec!["127.0.0.0/24".parse().expect("net")];
        let p = plan(&table(vec![port]), &config(), &ips(), &Listeners::new());
        let keys: Vec<String> = p.open.iter().map(ToString::to_string).collect();
        assert_eq!(
            keys,
            [
                "tcp 127.0.0.1:30080",
                "tcp 127.0.0.2:30080",
                "tcp 127.0.0.10:8000",
                "tcp 127.0.0.11:8000",
                "tcp 127.0.0.12:8000"
            ]
        );
        assert!(p.problems.is_empty());
        let lb = &p.desired[&key("127.0.0.12:8000")];
        assert_eq!(lb.kind, AddressKind::LoadBalancerIp);
        assert!(lb.allows_source(ip("127.0.0.9")) && !lb.allows_source(ip("127.0.1.9")));
        assert!(p.desired[&key("127.0.0.10:8000")].source_ranges.is_empty());
    }

    #[test]
    fn a_source_range_holding_a_node_address_lets_the_node_in_from_the_load_balancer_ip() {
        // kube-proxy's allowFromNode: the node reaching a load-balancer IP it holds locally
        // sends from that IP, which no range names.
        let mut port = web();
        port.load_balancer_ips = vec![ip("198.18.7.1"), ip("198.18.7.2")];
        port.load_balancer_source_ranges = vec!["127.0.0.0/30".parse().expect("net")];
        let p = plan(
            &table(vec![port.clone()]),
            &config(),
            &ips(),
            &Listeners::new(),
        );
        let lb = &p.desired[&key("198.18.7.1:8000")];
        assert!(lb.allows_source(ip("127.0.0.2")), "inside the range");
        assert!(lb.allows_source(ip("198.18.7.1")), "{:?}", lb.source_ranges);
        assert!(lb.allows_source(ip("198.18.7.2")), "{:?}", lb.source_ranges);
        assert!(!lb.allows_source(ip("198.18.7.3")));

        // No range holds a node address: the load-balancer IP is no source of its own.
        port.load_balancer_source_ranges = vec!["198.18.9.0/24".parse().expect("net")];
        let p = plan(&table(vec![port]), &config(), &ips(), &Listeners::new());
        let lb = &p.desired[&key("198.18.7.1:8000")];
        assert!(lb.allows_source(ip("198.18.9.9")));
        assert!(
            !lb.allows_source(ip("198.18.7.1")),
            "{:?}",
            lb.source_ranges
        );
    }

    #[test]
    fn policies_choose_endpoints_per_address_kind() {
        let mut port = web();
        port.external_traffic_policy = TrafficPolicy::Local;
        let p = plan(&table(vec![port]), &config(), &ips(), &Listeners::new());
        let addrs = |k: &str| match &p.desired[&key(k)].target {
            RouteTarget::Endpoints(b) => b.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            addrs("127.0.0.10:8000"),
            ["127.0.0.50:8080", "127.0.0.51:8080"]
        );
        assert_eq!(
            addrs("127.0.0.1:30080"),
            ["127.0.0.50:8080"],
            "external Local: local only"
        );
    }

    #[test]
    fn no_endpoints_rejects_and_no_local_drops() {
        let mut empty = web();
        empty.endpoints.clear();
        let mut remote = web();
        remote.name = ServicePortName::new("default", "remote", "http");
        remote.cluster_ips = vec![ip("127.0.0.20")];
        remote.node_port = None;
        remote.internal_traffic_policy = TrafficPolicy::Local;
        remote.endpoints.retain(|ep| !ep.is_local);
        let p = plan(
            &table(vec![empty, remote]),
            &config(),
            &ips(),
            &Listeners::new(),
        );
        assert_eq!(
            p.desired[&key("127.0.0.10:8000")].target,
            RouteTarget::Reject
        );
        assert_eq!(p.desired[&key("127.0.0.20:8000")].target, RouteTarget::Drop);
    }

    #[test]
    fn weight_zero_endpoints_get_no_new_flows_and_all_weight_zero_rejects() {
        let mut drained = web();
        drained.endpoints[0].weight = 0;
        let mut quiesced = web();
        quiesced.name = ServicePortName::new("default", "quiesced", "http");
        quiesced.cluster_ips = vec![ip("127.0.0.20")];
        quiesced.node_port = None;
        for endpoint in &mut quiesced.endpoints {
            endpoint.weight = 0;
        }
        let p = plan(
            &table(vec![drained, quiesced]),
            &config(),
            &ips(),
            &Listeners::new(),
        );
        let backends = |k: &str| match &p.desired[&key(k)].target {
            RouteTarget::Endpoints(b) => b.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(backends("127.0.0.10:8000"), ["127.0.0.51:8080"]);
        assert_eq!(backends("127.0.0.1:30080"), ["127.0.0.51:8080"]);
        assert_eq!(
            p.desired[&key("127.0.0.20:8000")].target,
            RouteTarget::Reject,
            "every endpoint of weight 0: no endpoint for new flows"
        );
    }

    #[test]
    fn replan_keeps_updates_opens_and_closes() {
        let first = plan(&table(vec![web()]), &config(), &ips(), &Listeners::new());
        let applied = first.desired.clone();
        let same = plan(&table(vec![web()]), &config(), &ips(), &applied);
        assert!(same.is_noop(), "{same:?}");
        assert_eq!(same.keep.len(), 3);

        let mut changed = web();
        changed.endpoints.pop();
        changed.node_port = Some(30081);
        changed.session_affinity = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(5),
        };
        let p = plan(&table(vec![changed]), &config(), &ips(), &applied);
        assert_eq!(p.update, [key("127.0.0.10:8000")]);
        assert_eq!(p.open, [key("127.0.0.1:30081"), key("127.0.0.2:30081")]);
        assert_eq!(p.close, [key("127.0.0.1:30080"), key("127.0.0.2:30080")]);
        assert!(p.keep.is_empty());
        let route = &p.desired[&key("127.0.0.10:8000")];
        assert_eq!(route.affinity_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_ports_idle_timeout_updates_its_routes_and_overrides_the_configs_default() {
        let first = plan(&table(vec![web()]), &config(), &ips(), &Listeners::new());
        let route = &first.desired[&key("127.0.0.10:8000")];
        assert_eq!(route.port_idle_timeout, None);
        assert_eq!(
            route.idle_timeout(Protocol::Tcp, &config()),
            config().idle_timeout
        );
        assert_eq!(
            route.idle_timeout(Protocol::Udp, &config()),
            config().udp_idle_timeout
        );

        let short = web().with_idle_timeout(Duration::from_secs(7));
        let p = plan(&table(vec![short]), &config(), &ips(), &first.desired);
        assert_eq!(
            p.update.len(),
            3,
            "every listener's route is swapped: {p:?}"
        );
        assert!(p.open.is_empty() && p.close.is_empty(), "{p:?}");
        for route in p.desired.values() {
            assert_eq!(route.port_idle_timeout, Some(Duration::from_secs(7)));
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                assert_eq!(
                    route.idle_timeout(protocol, &config()),
                    Duration::from_secs(7)
                );
            }
        }
    }

    #[test]
    fn node_port_clashing_with_a_service_address_is_a_problem() {
        let mut other = web();
        other.name = ServicePortName::new("default", "other", "http");
        other.cluster_ips = vec![ip("127.0.0.1")];
        other.port = 30080;
        other.node_port = None;
        let p = plan(
            &table(vec![web(), other]),
            &config(),
            &ips(),
            &Listeners::new(),
        );
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert_eq!(
            p.problems[0].service_port,
            Some(ServicePortName::new("default", "web", "http")),
            "the port that did not get the address owns the problem"
        );
        assert!(
            p.problems[0].object.contains("tcp 127.0.0.1:30080"),
            "{}",
            p.problems[0]
        );
        assert!(
            p.problems[0].reason.contains("default/other:http"),
            "{}",
            p.problems[0]
        );
    }

    #[test]
    fn scheduler_hint_overrides_default() {
        let mut port = web();
        port.scheduler = Some(Scheduler::Maglev);
        let p = plan(&table(vec![port]), &config(), &ips(), &Listeners::new());
        assert!(p.desired.values().all(|r| r.scheduler == Scheduler::Maglev));
        let p = plan(&table(vec![web()]), &config(), &ips(), &Listeners::new());
        assert!(p
            .desired
            .values()
            .all(|r| r.scheduler == Scheduler::RoundRobin));
    }
}
