//! Endpoint selection: which endpoints a service port's traffic may go to. Written once and shared
//! by every backend, with kube-proxy's semantics (`pkg/proxy/topology.go`, `CategorizeEndpoints`):
//!
//! - **Cluster** endpoints are the *ready* ones; when none is ready anywhere, the *serving and
//!   terminating* ones (so a rolling update does not drop traffic, KEP-1669).
//! - **Local** endpoints are the ready endpoints on this node; when none of those is ready, the
//!   serving-and-terminating ones on this node. The fallback is decided separately from Cluster's.
//! - A list is only computed when some policy uses it: internal `Cluster`, or external `Cluster`
//!   on a port reachable from outside, uses the cluster list; `Local` the local one.
//! - [`EndpointSelection::has_any_endpoints`] tells "no usable endpoint anywhere" (the backend
//!   rejects: ICMP port unreachable or TCP reset) from "usable endpoints, but none local for a
//!   `Local` policy" (the backend drops).
//! - **Weight 0** means "no new connections", as in IPVS (`ipvsadm -w 0` quiesces a real server)
//!   and HAProxy (`weight 0` drains a server): such an endpoint stays in `cluster`, `local` and
//!   `all_reachable` (its open connections and flows drain; IPVS keeps it as a real server of
//!   weight 0), but it is no candidate for a *new* connection:
//!   [`EndpointSelection::internal_new`] and [`EndpointSelection::external_new`] leave it out, and
//!   when every candidate of a policy has weight 0 the port has no usable endpoint for new
//!   connections: the same as no endpoints (reject), or for a `Local` policy with candidates
//!   elsewhere, none local (drop). Backends that choose the endpoint of each new connection
//!   themselves (userspace) or in their rules (iptables) use these.
//!
//! - **Topology hints** narrow the *cluster* list (never the local one, never the fallback), as
//!   kube-proxy's `topologyModeFromHints` does, from the ready endpoints: if every one has a node
//!   hint and one names this node, only endpoints hinted for this node are used
//!   (`PreferSameNode`); else if every one has a zone hint and one names this node's zone, only
//!   those hinted for the zone (`PreferSameZone`); else hints are ignored. One endpoint without
//!   hints, or none for this node or zone, turns the filter off: hints never make a service
//!   unreachable. This node and zone come from the table ([`ServicePort::topology`]).
//!
//! ```
//! use proxy_core::select::{select_endpoints, Target};
//! use proxy_core::table::*;
//!
//! let mut ready = Endpoint::new("198.18.1.10".parse().unwrap(), 8080);
//! ready.is_local = true;
//! let mut draining = Endpoint::new("198.18.1.11".parse().unwrap(), 8080);
//! draining.ready = false;
//! draining.terminating = true;
//! let mut port = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_endpoint(ready)
//!     .with_endpoint(draining);
//! port.internal_traffic_policy = TrafficPolicy::Local;
//!
//! let selection = select_endpoints(&port);
//! match selection.internal() {
//!     Target::Endpoints(eps) => assert_eq!(eps.len(), 1),
//!     other => panic!("expected endpoints, got {other:?}"),
//! }
//! ```

use crate::table::{Endpoint, ServicePort, TrafficPolicy};

/// The endpoints a service port's traffic may use, by policy. Lists keep the table's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSelection<'a> {
    /// Endpoints for `Cluster` policies: ready, else serving+terminating. Empty when no policy of
    /// the port is `Cluster`.
    pub cluster: Vec<&'a Endpoint>,
    /// Endpoints for `Local` policies: local ready, else local serving+terminating. Empty when no
    /// policy of the port is `Local`.
    pub local: Vec<&'a Endpoint>,
    /// The union of `cluster` and `local`, without repeats, in table order: every endpoint this
    /// node may send traffic to (for conntrack clean-up and per-endpoint objects).
    pub all_reachable: Vec<&'a Endpoint>,
    /// Whether any endpoint anywhere is usable (ready, or serving+terminating). False means
    /// "reject"; true with an empty list for a policy means "drop".
    pub has_any_endpoints: bool,
    /// `cluster` without weight-0 endpoints: the candidates for new connections.
    cluster_new: Vec<&'a Endpoint>,
    /// `local` without weight-0 endpoints.
    local_new: Vec<&'a Endpoint>,
    /// Whether new connections have somewhere to go: a candidate of weight above 0 in
    /// `cluster_new` or `local_new`, or for a port of `Local` policies only, a usable endpoint
    /// of weight above 0 anywhere (then a `Local` policy without local candidates drops).
    has_any_new_endpoints: bool,
    /// For a port with external addresses and an external `Local` policy: the cluster-wide
    /// candidates (weight above 0) that pod and node traffic to those addresses goes to.
    short_circuit_new: Option<Vec<&'a Endpoint>>,
    internal_policy: TrafficPolicy,
    external_policy: TrafficPolicy,
}

/// Where traffic of one kind (internal or external) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'s, 'a> {
    /// Balance over these endpoints (never empty).
    Endpoints(&'s [&'a Endpoint]),
    /// No usable endpoint anywhere: refuse the connection (ICMP port unreachable / TCP reset), as
    /// kube-proxy's `"... has no endpoints"` REJECT rule does.
    Reject,
    /// Usable endpoints exist, but none on this node for a `Local` policy: drop silently, as
    /// kube-proxy's `"... has no local endpoints"` DROP rule does.
    Drop,
}

impl<'a> EndpointSelection<'a> {
    /// Where traffic to the cluster IPs goes (internal traffic policy).
    pub fn internal(&self) -> Target<'_, 'a> {
        self.target(self.internal_policy)
    }

    /// Where traffic to node ports, external IPs and load-balancer IPs goes (external traffic
    /// policy). Traffic from pods and from the node itself to those addresses is
    /// short-circuited to every endpoint by backends that can tell it apart, as kube-proxy does
    /// ([`EndpointSelection::short_circuit_new`]).
    pub fn external(&self) -> Target<'_, 'a> {
        self.target(self.external_policy)
    }

    /// The endpoints a policy uses (possibly empty).
    pub fn for_policy(&self, policy: TrafficPolicy) -> &[&'a Endpoint] {
        match policy {
            TrafficPolicy::Cluster => &self.cluster,
            TrafficPolicy::Local => &self.local,
        }
    }

    /// Where *new* internal connections go: [`EndpointSelection::internal`] without the
    /// endpoints of weight 0 (see the module docs); `Reject` when every candidate has weight 0.
    pub fn internal_new(&self) -> Target<'_, 'a> {
        self.new_target(self.internal_policy)
    }

    /// Where *new* external connections go: [`EndpointSelection::external`] without the
    /// endpoints of weight 0.
    pub fn external_new(&self) -> Target<'_, 'a> {
        self.new_target(self.external_policy)
    }

    /// The endpoints a policy sends new connections to: [`EndpointSelection::for_policy`]
    /// without those of weight 0 (possibly empty).
    pub fn for_policy_new(&self, policy: TrafficPolicy) -> &[&'a Endpoint] {
        match policy {
            TrafficPolicy::Cluster => &self.cluster_new,
            TrafficPolicy::Local => &self.local_new,
        }
    }

    /// Where *new* connections from pods (the cluster CIDR) or from the node itself to an
    /// external address (node port, external IP, load-balancer IP) go when the external policy
    /// is `Local`: every endpoint, as for a `Cluster` policy, whether or not one is local
    /// (kube-proxy's short-circuit: the `"pod traffic for ... external destinations"` and
    /// `--src-type LOCAL` rules of the external chain in `pkg/proxy/iptables/proxier.go`, which
    /// jump to the cluster chain). `Reject` when no endpoint takes new connections; `None` when
    /// the port has no such short-circuit (external policy `Cluster`, or no external address):
    /// such traffic follows [`EndpointSelection::external_new`] like any other.
    pub fn short_circuit_new(&self) -> Option<Target<'_, 'a>> {
        self.short_circuit_new
            .as_deref()
            .map(|endpoints| Self::target_of(endpoints, false))
    }

    fn target(&self, policy: TrafficPolicy) -> Target<'_, 'a> {
        Self::target_of(self.for_policy(policy), self.has_any_endpoints)
    }

    fn new_target(&self, policy: TrafficPolicy) -> Target<'_, 'a> {
        // `Cluster`: the cluster list holds every candidate, so none of weight above 0 is none
        // at all (reject), even with a local fallback endpoint of weight above 0 elsewhere.
        let has_any = policy == TrafficPolicy::Local && self.has_any_new_endpoints;
        Self::target_of(self.for_policy_new(policy), has_any)
    }

    fn target_of<'s>(endpoints: &'s [&'a Endpoint], has_any: bool) -> Target<'s, 'a> {
        if !endpoints.is_empty() {
            Target::Endpoints(endpoints)
        } else if has_any {
            Target::Drop
        } else {
            Target::Reject
        }
    }
}

/// Whether any traffic to `port` uses the cluster-wide endpoint list.
pub fn uses_cluster_endpoints(port: &ServicePort) -> bool {
    port.internal_traffic_policy == TrafficPolicy::Cluster
        || (port.has_external_addresses() && port.external_traffic_policy == TrafficPolicy::Cluster)
}

/// Whether any traffic to `port` uses the node-local endpoint list.
pub fn uses_local_endpoints(port: &ServicePort) -> bool {
    port.internal_traffic_policy == TrafficPolicy::Local
        || (port.has_external_addresses() && port.external_traffic_policy == TrafficPolicy::Local)
}

/// Whether pod and node traffic to `port`'s external addresses is short-circuited to the
/// cluster-wide endpoints ([`EndpointSelection::short_circuit_new`]).
pub fn uses_short_circuit(port: &ServicePort) -> bool {
    port.has_external_addresses() && port.external_traffic_policy == TrafficPolicy::Local
}

/// The cluster-wide candidates: ready endpoints (narrowed by topology hints), else the serving
/// and terminating ones.
fn cluster_candidates(port: &ServicePort) -> Vec<&Endpoint> {
    let endpoints = &port.endpoints;
    let topology = topology_filter(port);
    let mut cluster: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|ep| ep.ready && topology.admits(ep))
        .collect();
    if cluster.is_empty() {
        cluster.extend(endpoints.iter().filter(|ep| is_serving_terminating(ep)));
    }
    cluster
}

fn is_serving_terminating(endpoint: &Endpoint) -> bool {
    endpoint.serving && endpoint.terminating
}

/// How topology hints narrow a port's cluster endpoints: kube-proxy's topology mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyFilter<'p> {
    /// No filtering: no hints, incomplete hints, or none for this node or zone.
    Off,
    /// `PreferSameNode`: only endpoints hinted for this node.
    SameNode(&'p str),
    /// `PreferSameZone`: only endpoints hinted for this zone.
    SameZone(&'p str),
}

impl TopologyFilter<'_> {
    fn admits(self, endpoint: &Endpoint) -> bool {
        match self {
            TopologyFilter::Off => true,
            TopologyFilter::SameNode(node) => endpoint.node_hints.iter().any(|n| n == node),
            TopologyFilter::SameZone(zone) => endpoint.zone_hints.iter().any(|z| z == zone),
        }
    }
}

/// The topology mode of `port`, read from its ready endpoints' hints.
fn topology_filter(port: &ServicePort) -> TopologyFilter<'_> {
    let Some(here) = &port.topology else {
        return TopologyFilter::Off;
    };
    let endpoints = &port.endpoints;
    if let Some(node) = hinted_for(endpoints, |ep| &ep.node_hints, here.node.as_deref()) {
        TopologyFilter::SameNode(node)
    } else if let Some(zone) = hinted_for(endpoints, |ep| &ep.zone_hints, here.zone.as_deref()) {
        TopologyFilter::SameZone(zone)
    } else {
        TopologyFilter::Off
    }
}

/// `name` if every ready endpoint has a hint of this kind and one of them names `name`.
fn hinted_for<'p>(
    endpoints: &[Endpoint],
    hints: fn(&Endpoint) -> &[String],
    name: Option<&'p str>,
) -> Option<&'p str> {
    let name = name?;
    let mut ready = endpoints.iter().filter(|ep| ep.ready);
    let mut ours = false;
    let all_hinted = ready.all(|ep| {
        let hints = hints(ep);
        ours |= hints.iter().any(|h| h == name);
        !hints.is_empty()
    });
    (all_hinted && ours).then_some(name)
}

/// Picks the endpoints of `port` per traffic policy: kube-proxy's `CategorizeEndpoints`.
///
/// Pure and cheap (one or two passes over the endpoints); backends call it for each service port
/// they plan.
pub fn select_endpoints(port: &ServicePort) -> EndpointSelection<'_> {
    let endpoints = &port.endpoints;
    let mut has_any_endpoints = false;

    let mut cluster = Vec::new();
    if uses_cluster_endpoints(port) {
        cluster = cluster_candidates(port);
        // Any ready endpoint anywhere lands in `cluster`, so non-empty means "has endpoints".
        has_any_endpoints = !cluster.is_empty();
    }

    let mut local = Vec::new();
    if uses_local_endpoints(port) {
        let mut has_local_ready = false;
        let mut has_local_serving_terminating = false;
        for ep in endpoints {
            if ep.ready {
                has_any_endpoints = true;
                has_local_ready |= ep.is_local;
            } else if is_serving_terminating(ep) {
                has_any_endpoints = true;
                has_local_serving_terminating |= ep.is_local;
            }
        }
        if has_local_ready {
            local.extend(endpoints.iter().filter(|ep| ep.is_local && ep.ready));
        } else if has_local_serving_terminating {
            local.extend(
                endpoints
                    .iter()
                    .filter(|ep| ep.is_local && is_serving_terminating(ep)),
            );
        }
    }

    let all_reachable = if local.is_empty() {
        cluster.clone()
    } else if cluster.is_empty() {
        local.clone()
    } else {
        // Both lists keep table order, so a filter over the table gives the ordered union.
        endpoints
            .iter()
            .filter(|ep| {
                cluster
                    .iter()
                    .chain(&local)
                    .any(|chosen| std::ptr::eq(*chosen, *ep))
            })
            .collect()
    };

    let takes_new = |ep: &&&Endpoint| ep.weight > 0;
    let cluster_new: Vec<&Endpoint> = cluster.iter().filter(takes_new).copied().collect();
    let short_circuit_new = if !uses_short_circuit(port) {
        None
    } else if uses_cluster_endpoints(port) {
        Some(cluster_new.clone())
    } else {
        // Internal `Local` too: the cluster list was not needed for a policy, but the
        // short-circuit uses it (kube-proxy's `UsesClusterEndpoints` is true for every
        // externally reachable port for this reason).
        Some(
            cluster_candidates(port)
                .iter()
                .filter(takes_new)
                .copied()
                .collect(),
        )
    };
    let local_new: Vec<&Endpoint> = local.iter().filter(takes_new).copied().collect();
    let has_any_new_endpoints = !cluster_new.is_empty()
        || !local_new.is_empty()
        || (!uses_cluster_endpoints(port)
            && endpoints
                .iter()
                .any(|ep| ep.weight > 0 && (ep.ready || is_serving_terminating(ep))));

    EndpointSelection {
        cluster,
        local,
        all_reachable,
        has_any_endpoints,
        cluster_new,
        local_new,
        has_any_new_endpoints,
        short_circuit_new,
        internal_policy: port.internal_traffic_policy,
        external_policy: port.external_traffic_policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Protocol, ServicePortName};

    fn ep(last: u8, local: bool, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        let mut ep = Endpoint::new(format!("198.18.1.{last}").parse().expect("valid ip"), 8080);
        ep.is_local = local;
        ep.ready = ready;
        ep.serving = serving;
        ep.terminating = terminating;
        ep
    }

    fn ready(last: u8, local: bool) -> Endpoint {
        ep(last, local, true, true, false)
    }

    fn terminating(last: u8, local: bool) -> Endpoint {
        ep(last, local, false, true, true)
    }

    fn port(endpoints: Vec<Endpoint>) -> ServicePort {
        let mut port = ServicePort::new(ServicePortName::new("ns", "svc", "p"), Protocol::Tcp, 80);
        port.endpoints = endpoints;
        port
    }

    fn lasts(eps: &[&Endpoint]) -> Vec<u8> {
        eps.iter()
            .map(|ep| match ep.addr {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                std::net::IpAddr::V6(_) => unreachable!("tests use IPv4"),
            })
            .collect()
    }

    #[test]
    fn cluster_policy_uses_ready_endpoints_only() {
        let p = port(vec![
            ready(1, false),
            terminating(2, false),
            ep(3, false, false, false, false),
        ]);
        let s = select_endpoints(&p);
        assert_eq!(lasts(&s.cluster), [1]);
        assert!(s.local.is_empty(), "no local policy, no local list");
        assert_eq!(lasts(&s.all_reachable), [1]);
        assert!(s.has_any_endpoints);
        assert_eq!(s.internal(), Target::Endpoints(&s.cluster));
    }

    #[test]
    fn cluster_falls_back_to_serving_terminating_when_none_ready() {
        let p = port(vec![
            terminating(1, false),
            ep(2, false, false, false, true),
            terminating(3, true),
        ]);
        let s = select_endpoints(&p);
        assert_eq!(
            lasts(&s.cluster),
            [1, 3],
            "not-serving terminating endpoint 2 is never used"
        );
        assert!(s.has_any_endpoints);
    }

    #[test]
    fn no_endpoints_rejects() {
        let s_empty = port(vec![]);
        let s = select_endpoints(&s_empty);
        assert_eq!(s.internal(), Target::Reject);
        assert!(!s.has_any_endpoints);

        let not_serving = port(vec![ep(1, true, false, false, false)]);
        let s = select_endpoints(&not_serving);
        assert_eq!(
            s.internal(),
            Target::Reject,
            "an unready, non-serving endpoint is no endpoint"
        );
    }

    #[test]
    fn internal_local_uses_local_ready_and_drops_when_only_remote() {
        let mut p = port(vec![ready(1, false), ready(2, true), ready(3, true)]);
        p.internal_traffic_policy = TrafficPolicy::Local;
        let s = select_endpoints(&p);
        assert_eq!(lasts(&s.local), [2, 3]);
        assert!(
            s.cluster.is_empty(),
            "cluster list unused: internal Local, no external addresses"
        );
        assert_eq!(lasts(&s.all_reachable), [2, 3]);

        let mut remote_only = port(vec![ready(1, false)]);
        remote_only.internal_traffic_policy = TrafficPolicy::Local;
        let s = select_endpoints(&remote_only);
        assert_eq!(
            s.internal(),
            Target::Drop,
            "endpoints exist elsewhere: drop, not reject"
        );
    }

    #[test]
    fn local_fallback_is_decided_apart_from_cluster() {
        // A ready endpoint elsewhere and a terminating one here: cluster uses the ready one, local
        // falls back to the local terminating one.
        let mut p = port(vec![ready(1, false), terminating(2, true)]);
        p.external_traffic_policy = TrafficPolicy::Local;
        p.node_port = Some(30080);
        let s = select_endpoints(&p);
        assert_eq!(lasts(&s.cluster), [1]);
        assert_eq!(lasts(&s.local), [2]);
        assert_eq!(lasts(&s.all_reachable), [1, 2]);
        assert_eq!(s.internal(), Target::Endpoints(&s.cluster));
        assert_eq!(s.external(), Target::Endpoints(&s.local));
    }

    #[test]
    fn local_prefers_ready_over_terminating() {
        let mut p = port(vec![terminating(1, true), ready(2, true)]);
        p.internal_traffic_policy = TrafficPolicy::Local;
        assert_eq!(lasts(&select_endpoints(&p).local), [2]);
    }

    #[test]
    fn external_local_policy_ignored_without_external_addresses() {
        let mut p = port(vec![ready(1, false)]);
        p.external_traffic_policy = TrafficPolicy::Local;
        let s = select_endpoints(&p);
        assert!(
            !uses_local_endpoints(&p),
            "eTP only matters for externally reachable ports"
        );
        assert!(s.local.is_empty());
        assert_eq!(s.internal(), Target::Endpoints(&s.cluster));
    }

    #[test]
    fn external_local_without_local_endpoints_drops() {
        let mut p = port(vec![ready(1, false)]);
        p.external_traffic_policy = TrafficPolicy::Local;
        p.external_ips = vec!["198.19.5.5".parse().expect("valid ip")];
        let s = select_endpoints(&p);
        assert_eq!(s.external(), Target::Drop);
        assert_eq!(s.internal(), Target::Endpoints(&s.cluster));
    }

    #[test]
    fn short_circuit_sends_pod_and_node_traffic_of_a_local_service_to_every_endpoint() {
        let mut p = port(vec![
            ready(1, false),
            ready(2, true),
            weighted(ready(3, false), 0),
        ]);
        p.external_traffic_policy = TrafficPolicy::Local;
        p.node_port = Some(30080);
        let s = select_endpoints(&p);
        assert_eq!(new_lasts(s.external_new()), Ok(vec![2]));
        let short = s
            .short_circuit_new()
            .expect("a Local service with a node port");
        assert_eq!(
            new_lasts(short),
            Ok(vec![1, 2]),
            "weight 0 takes no new flows"
        );

        // No local endpoint: external traffic drops, pod and node traffic still goes through.
        let mut remote_only = port(vec![ready(1, false)]);
        remote_only.external_traffic_policy = TrafficPolicy::Local;
        remote_only.internal_traffic_policy = TrafficPolicy::Local;
        remote_only.external_ips = vec!["198.19.5.5".parse().expect("valid ip")];
        let s = select_endpoints(&remote_only);
        assert_eq!(s.external_new(), Target::Drop);
        assert_eq!(s.internal_new(), Target::Drop);
        assert_eq!(
            s.short_circuit_new().map(new_lasts),
            Some(Ok(vec![1])),
            "computed even when no policy uses the cluster list"
        );
        assert!(s.cluster.is_empty() && lasts(&s.all_reachable).is_empty());

        let mut none = port(vec![]);
        none.external_traffic_policy = TrafficPolicy::Local;
        none.node_port = Some(30081);
        assert_eq!(
            select_endpoints(&none).short_circuit_new(),
            Some(Target::Reject)
        );
    }

    #[test]
    fn no_short_circuit_for_cluster_policies_or_ports_without_external_addresses() {
        let mut cluster = port(vec![ready(1, false)]);
        cluster.node_port = Some(30080);
        assert_eq!(select_endpoints(&cluster).short_circuit_new(), None);
        let mut internal_only = port(vec![ready(1, false)]);
        internal_only.external_traffic_policy = TrafficPolicy::Local;
        assert_eq!(select_endpoints(&internal_only).short_circuit_new(), None);
    }

    #[test]
    fn union_keeps_table_order_without_repeats() {
        let mut p = port(vec![ready(1, true), ready(2, false), ready(3, true)]);
        p.internal_traffic_policy = TrafficPolicy::Cluster;
        p.external_traffic_policy = TrafficPolicy::Local;
        p.node_port = Some(30000);
        let s = select_endpoints(&p);
        assert_eq!(lasts(&s.cluster), [1, 2, 3]);
        assert_eq!(lasts(&s.local), [1, 3]);
        assert_eq!(lasts(&s.all_reachable), [1, 2, 3]);
    }

    // === topology hints ===

    fn zoned(mut ep: Endpoint, zones: &[&str]) -> Endpoint {
        ep.zone_hints = zones.iter().map(|z| (*z).to_owned()).collect();
        ep
    }

    fn for_nodes(mut ep: Endpoint, nodes: &[&str]) -> Endpoint {
        ep.node_hints = nodes.iter().map(|n| (*n).to_owned()).collect();
        ep
    }

    /// `endpoints` in a port of a table built for node-a in zone-a (which stamps the topology).
    fn in_zone_a(endpoints: Vec<Endpoint>) -> std::sync::Arc<ServicePort> {
        let mut p = port(endpoints);
        p.cluster_ips.push("198.18.0.1".parse().expect("valid ip"));
        let table = crate::ServiceTable::builder()
            .node("node-a")
            .zone("zone-a")
            .insert(p)
            .build()
            .expect("valid table");
        let port = std::sync::Arc::clone(table.iter().next().expect("one port"));
        port
    }

    #[test]
    fn zone_hints_for_this_zone_narrow_the_cluster_list() {
        let p = in_zone_a(vec![
            zoned(ready(1, false), &["zone-a"]),
            zoned(ready(2, false), &["zone-b"]),
            zoned(ready(3, false), &["zone-b", "zone-a"]),
        ]);
        assert!(
            p.topology.is_some(),
            "the table stamps ports that have hints"
        );
        let s = select_endpoints(&p);
        assert_eq!(lasts(&s.cluster), [1, 3]);
        assert_eq!(lasts(&s.all_reachable), [1, 3]);
    }

    #[test]
    fn one_ready_endpoint_without_a_hint_turns_hints_off() {
        let p = in_zone_a(vec![
            zoned(ready(1, false), &["zone-a"]),
            ready(2, false),
            zoned(ready(3, false), &["zone-b"]),
        ]);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [1, 2, 3]);
    }

    #[test]
    fn hints_that_name_another_zone_only_are_ignored() {
        let p = in_zone_a(vec![
            zoned(ready(1, false), &["zone-b"]),
            zoned(ready(2, false), &["zone-c"]),
        ]);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [1, 2]);
    }

    #[test]
    fn node_hints_come_before_zone_hints() {
        let p = in_zone_a(vec![
            for_nodes(zoned(ready(1, false), &["zone-a"]), &["node-b"]),
            for_nodes(zoned(ready(2, false), &["zone-a"]), &["node-a"]),
            for_nodes(zoned(ready(3, false), &["zone-b"]), &["node-c"]),
        ]);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [2]);
    }

    #[test]
    fn incomplete_node_hints_fall_through_to_zone_hints() {
        let p = in_zone_a(vec![
            for_nodes(zoned(ready(1, false), &["zone-a"]), &["node-a"]),
            zoned(ready(2, false), &["zone-a"]),
            zoned(ready(3, false), &["zone-b"]),
        ]);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [1, 2]);
    }

    #[test]
    fn hints_are_read_from_ready_endpoints_and_never_filter_the_fallback() {
        // The unhinted endpoint is not ready: it does not turn hints off.
        let p = in_zone_a(vec![
            zoned(ready(1, false), &["zone-a"]),
            terminating(2, false),
            zoned(ready(3, false), &["zone-b"]),
        ]);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [1]);
        // None ready: the serving-and-terminating fallback is not filtered by hints.
        let p = in_zone_a(vec![
            zoned(terminating(1, false), &["zone-b"]),
            zoned(terminating(2, false), &["zone-b"]),
        ]);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [1, 2]);
    }

    #[test]
    fn hints_do_not_touch_the_local_list() {
        let mut p = port(vec![
            zoned(ready(1, true), &["zone-b"]),
            zoned(ready(2, false), &["zone-a"]),
        ]);
        p.internal_traffic_policy = TrafficPolicy::Local;
        p.cluster_ips.push("198.18.0.1".parse().expect("valid ip"));
        let table = crate::ServiceTable::builder()
            .node("node-a")
            .zone("zone-a")
            .insert(p)
            .build()
            .expect("valid table");
        let p = std::sync::Arc::clone(table.iter().next().expect("one port"));
        assert_eq!(lasts(&select_endpoints(&p).local), [1]);
    }

    #[test]
    fn a_port_outside_a_table_has_no_topology_and_ignores_hints() {
        let p = port(vec![
            zoned(ready(1, false), &["zone-a"]),
            zoned(ready(2, false), &["zone-b"]),
        ]);
        assert_eq!(p.topology, None);
        assert_eq!(lasts(&select_endpoints(&p).cluster), [1, 2]);
    }

    fn weighted(mut endpoint: Endpoint, weight: u32) -> Endpoint {
        endpoint.weight = weight;
        endpoint
    }

    fn new_lasts<'s, 'a>(target: Target<'s, 'a>) -> Result<Vec<u8>, Target<'s, 'a>> {
        match target {
            Target::Endpoints(eps) => Ok(lasts(eps)),
            other => Err(other),
        }
    }

    #[test]
    fn weight_zero_endpoints_take_no_new_connections_but_stay_reachable() {
        let port = port(vec![weighted(ready(1, false), 0), ready(2, false)]);
        let selection = select_endpoints(&port);
        assert_eq!(new_lasts(selection.internal_new()), Ok(vec![2]));
        assert_eq!(new_lasts(selection.external_new()), Ok(vec![2]));
        // Open connections to the weight-0 endpoint drain: it stays in every list.
        assert_eq!(lasts(&selection.cluster), [1, 2]);
        assert_eq!(lasts(&selection.all_reachable), [1, 2]);
        assert_eq!(new_lasts(selection.internal()), Ok(vec![1, 2]));
    }

    #[test]
    fn every_endpoint_of_weight_zero_rejects_new_connections() {
        let port = port(vec![
            weighted(ready(1, false), 0),
            weighted(ready(2, true), 0),
        ]);
        let selection = select_endpoints(&port);
        assert_eq!(selection.internal_new(), Target::Reject);
        assert_eq!(selection.external_new(), Target::Reject);
        assert!(selection.has_any_endpoints, "they still drain");
        assert_eq!(lasts(&selection.all_reachable), [1, 2]);
    }

    #[test]
    fn cluster_policy_whose_candidates_all_have_weight_zero_rejects_despite_a_local_fallback() {
        // Ready (remote, weight 0) and a local terminating endpoint of weight 1: the cluster list
        // is the ready one, so internal Cluster traffic has no candidate; external Local traffic
        // uses the local fallback.
        let mut port = port(vec![weighted(ready(1, false), 0), terminating(2, true)]);
        port.external_ips = vec!["198.19.0.1".parse().expect("ip")];
        port.external_traffic_policy = TrafficPolicy::Local;
        let selection = select_endpoints(&port);
        assert_eq!(selection.internal_new(), Target::Reject);
        assert_eq!(new_lasts(selection.external_new()), Ok(vec![2]));
    }

    #[test]
    fn local_policy_with_only_weight_zero_local_endpoints_drops_new_connections() {
        let mut port = port(vec![weighted(ready(1, true), 0), ready(2, false)]);
        port.internal_traffic_policy = TrafficPolicy::Local;
        let selection = select_endpoints(&port);
        assert_eq!(
            selection.internal_new(),
            Target::Drop,
            "usable endpoints elsewhere"
        );
        assert_eq!(
            lasts(selection.for_policy_new(TrafficPolicy::Local)),
            [] as [u8; 0]
        );
        assert_eq!(lasts(selection.for_policy(TrafficPolicy::Local)), [1]);
        port.endpoints[1].weight = 0;
        assert_eq!(select_endpoints(&port).internal_new(), Target::Reject);
    }
}
