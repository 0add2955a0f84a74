//! The desired state of a table: [`Desired`], built whole by [`plan_desired`] or followed port
//! by port with [`Desired::update`], and its `ipvsadm`-style listing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use proxy_core::dataplane::SyncProblem;
use proxy_core::diff::ChangeSet;
use proxy_core::select::{select_endpoints, Target};
use proxy_core::table::{
    Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable, TrafficPolicy,
};

use super::state::{IpvsState, ServiceState};
use crate::config::IpvsConfig;
use crate::model::{RealServer, SchedFlags, Scheduler, ServiceKey, VirtualServer};

/// Which of a service port's addresses a virtual server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VipKind {
    /// A cluster IP, on the service port.
    ClusterIp,
    /// An external IP, on the service port.
    ExternalIp,
    /// A load-balancer IP, on the service port.
    LoadBalancerIp,
    /// A node address, on the node port.
    NodePort,
}

impl VipKind {
    /// Whether the address is bound to our dummy interface (node addresses are the node's own).
    pub fn is_bound(self) -> bool {
        self != VipKind::NodePort
    }

    /// Whether external policies apply (everything but cluster IPs).
    pub fn is_external(self) -> bool {
        self != VipKind::ClusterIp
    }
}

impl fmt::Display for VipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VipKind::ClusterIp => "cluster IP",
            VipKind::ExternalIp => "external IP",
            VipKind::LoadBalancerIp => "load-balancer IP",
            VipKind::NodePort => "node port",
        })
    }
}

/// What happens to traffic of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Balanced over its real servers.
    Forward,
    /// No usable endpoint anywhere: refused (ICMP port unreachable).
    Reject,
    /// Endpoints exist, but none on this node for a `Local` policy: dropped.
    Drop,
    /// Endpoints exist, but none on this node for the `Local` external policy of a node port,
    /// external or load-balancer IP: traffic from outside the cluster CIDRs is dropped, and the
    /// virtual server keeps the cluster-wide endpoints, so that pods on this node still reach
    /// the service. kube-proxy's IPVS mode (`syncEndpoint` in `pkg/proxy/ipvs/proxier.go`,
    /// k/k#97081) falls back to the cluster endpoints in the same case.
    DropOutsideCluster,
}

/// Where a desired virtual server comes from, for errors and the companion rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The service port.
    pub port: ServicePortName,
    /// Which of its addresses.
    pub kind: VipKind,
    /// What happens to its traffic.
    pub verdict: Verdict,
    /// Whether the external traffic policy is `Local` (client source kept: no masquerade).
    pub is_local_policy: bool,
    /// Load-balancer source ranges (load-balancer IPs only; empty allows everyone).
    pub source_ranges: Vec<IpNet>,
}

/// The desired IPVS state of a table, with where each virtual server comes from. Built whole
/// by [`plan_desired`], or kept up to date port by port ([`Desired::update`]) so a partial sync
/// costs what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The virtual and real servers.
    pub state: IpvsState,
    /// Per virtual server, its service port and kind.
    pub origins: BTreeMap<ServiceKey, Origin>,
    /// The addresses to bind to the dummy interface (cluster, external and load-balancer IPs),
    /// each with the number of virtual servers on it.
    pub vips: BTreeMap<IpAddr, usize>,
    /// Endpoints that may be reached through a service, by (address, protocol, port), each
    /// with the number of service ports using it: the hairpin set (a pod reaching itself
    /// through its service must be masqueraded).
    pub endpoints: BTreeMap<(IpAddr, Protocol, u16), usize>,
    /// Per service port, what could not be planned (a scheduler IPVS lacks, a clashing address).
    pub problems: BTreeMap<ServicePortName, Vec<SyncProblem>>,
    /// The node addresses the node ports were planned on (after the `node_port_addresses`
    /// filter); they also decide whether a load-balancer IP's source ranges let the node in.
    pub node_ips: BTreeSet<IpAddr>,
    /// The service ports whose virtual servers or entries depend on `node_ips`
    /// ([`depends_on_node_ips`]): what [`Desired::readdress`] plans again.
    pub dependent: BTreeSet<ServicePortName>,
}

/// Whether what `port` plans depends on the node's addresses: a node port (a virtual server
/// per address), or load-balancer source ranges (the node is let in when a range holds one of
/// its addresses).
pub fn depends_on_node_ips(port: &ServicePort) -> bool {
    port.node_port.is_some()
        || (!port.load_balancer_ips.is_empty() && !port.load_balancer_source_ranges.is_empty())
}

/// The node addresses a fixed `config` serves node ports on: [`IpvsConfig::node_addresses`]
/// within [`IpvsConfig::node_port_addresses`].
pub fn configured_node_ips(config: &IpvsConfig) -> BTreeSet<IpAddr> {
    config
        .node_addresses
        .iter()
        .copied()
        .filter(|ip| {
            config.node_port_addresses.is_empty()
                || config
                    .node_port_addresses
                    .iter()
                    .any(|net| net.contains(ip))
        })
        .collect()
}

/// What an incremental [`Desired::update`] touched: the virtual servers to plan again and the
/// endpoints whose hairpin entry may have come or gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Virtual servers added, removed or changed.
    pub keys: BTreeSet<ServiceKey>,
    /// Endpoints that came into use or went out of use.
    pub endpoints: BTreeSet<(IpAddr, Protocol, u16)>,
}

/// What one service port contributes to the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PortPlan {
    services: Vec<(ServiceState, Origin)>,
    endpoints: BTreeSet<(IpAddr, Protocol, u16)>,
    problems: Vec<SyncProblem>,
}

/// The desired IPVS state of `table`, with node ports on the configured node addresses
/// ([`configured_node_ips`]).
pub fn plan_desired(table: &ServiceTable, config: &IpvsConfig) -> Desired {
    plan_desired_on(table, config, configured_node_ips(config))
}

/// The desired IPVS state of `table`, with node ports on `node_ips`.
pub fn plan_desired_on(
    table: &ServiceTable,
    config: &IpvsConfig,
    node_ips: BTreeSet<IpAddr>,
) -> Desired {
    let mut desired = Desired {
        node_ips,
        ..Desired::default()
    };
    for port in table.iter() {
        desired.insert_port(port, config, &mut Touched::default());
    }
    desired
}

impl Desired {
    /// Every problem, in service port order.
    pub fn problems(&self) -> Vec<SyncProblem> {
        self.problems.values().flatten().cloned().collect()
    }

    /// Moves the node ports to `node_ips`. Of the ports that depend on the node's addresses
    /// ([`Desired::dependent`]) only what the change moves is planned: the node-port virtual
    /// servers on the addresses that went are deleted and those on the addresses that came are
    /// added, so the cost follows the addresses changed times the node ports, not the table. A
    /// port whose load-balancer source ranges change verdict (one holds a node address now, or
    /// no longer), or that has problems (a clash that may be gone), is planned again whole.
    /// `table` is the table the desired state was last built or updated for. Returns what was
    /// touched (nothing when the addresses are the same).
    ///
    /// As with [`Desired::update`], the result equals [`plan_desired_on`] of the new addresses
    /// except in a clash: a node port on an address that came loses to a virtual server already
    /// there (another port's cluster IP on it), whatever their order, until the next full sync.
    pub fn readdress(
        &mut self,
        table: &ServiceTable,
        node_ips: BTreeSet<IpAddr>,
        config: &IpvsConfig,
    ) -> Touched {
        let mut touched = Touched::default();
        if node_ips == self.node_ips {
            return touched;
        }
        let came: BTreeSet<IpAddr> = node_ips.difference(&self.node_ips).copied().collect();
        let went: BTreeSet<IpAddr> = self.node_ips.difference(&node_ips).copied().collect();
        let mut whole: Vec<&ServicePort> = Vec::new();
        let mut moved: Vec<&ServicePort> = Vec::new();
        for port in self.dependent.iter().filter_map(|name| table.get(name)) {
            let verdict_changes = allows_node(port, &self.node_ips) != allows_node(port, &node_ips);
            if verdict_changes || self.problems.contains_key(&port.name) {
                whole.push(port);
            } else if port.node_port.is_some() {
                moved.push(port);
            }
        }
        // As in `update`: every removal (on the old addresses) before any insertion.
        for port in &whole {
            self.remove_port(port, config, &mut touched);
        }
        for port in &moved {
            let Some(node_port) = port.node_port else {
                continue;
            };
            for &ip in &went {
                let key = ServiceKey {
                    addr: ip,
                    protocol: port.protocol,
                    port: node_port,
                };
                let owned = self
                    .origins
                    .get(&key)
                    .is_some_and(|o| o.port == port.name && o.kind == VipKind::NodePort);
                if owned {
                    self.origins.remove(&key);
                    self.state.services.remove(&key);
                    touched.keys.insert(key);
                }
            }
        }
        self.node_ips = node_ips;
        for port in &whole {
            self.insert_port(port, config, &mut touched);
        }
        if came.is_empty() {
            return touched;
        }
        for port in &moved {
            let plan = plan_port(port, config, &came);
            let mut problems = Vec::new();
            let node_ports = plan
                .services
                .into_iter()
                .filter(|(_, origin)| origin.kind == VipKind::NodePort);
            for (service, origin) in node_ports {
                self.insert_service(port, service, origin, &mut problems, &mut touched);
            }
            if !problems.is_empty() {
                self.problems
                    .entry(port.name.clone())
                    .or_default()
                    .extend(problems);
            }
        }
        touched
    }

    /// Follows a table change port by port: each removed or changed port's old contribution
    /// goes, each added or changed port's new one comes. Returns what was touched.
    ///
    /// The result equals [`plan_desired`] of the new table, except when two ports clash on one
    /// virtual server and the first goes: the second then waits for the next full sync.
    pub fn update(&mut self, changes: &ChangeSet, config: &IpvsConfig) -> Touched {
        let mut touched = Touched::default();
        // Every removal before any insertion: two ports may swap an address and port in one
        // change, and inserting one before the other left would look like a clash.
        let previous = changes.changed.iter().map(|c| &c.previous);
        for old in changes.removed.iter().chain(previous) {
            self.remove_port(old, config, &mut touched);
        }
        let current = changes.changed.iter().map(|c| &c.current);
        for new in current.chain(&changes.added) {
            self.insert_port(new, config, &mut touched);
        }
        touched
    }

    fn insert_port(&mut self, port: &ServicePort, config: &IpvsConfig, touched: &mut Touched) {
        if depends_on_node_ips(port) {
            self.dependent.insert(port.name.clone());
        }
        let plan = plan_port(port, config, &self.node_ips);
        let mut problems = plan.problems;
        for (service, origin) in plan.services {
            self.insert_service(port, service, origin, &mut problems, touched);
        }
        for ep in plan.endpoints {
            let count = self.endpoints.entry(ep).or_default();
            *count += 1;
            if *count == 1 {
                touched.endpoints.insert(ep);
            }
        }
        if !problems.is_empty() {
            self.problems.insert(port.name.clone(), problems);
        }
    }

    /// Adds one virtual server of `port`, unless another port's already serves its key (then
    /// a problem of `port`).
    fn insert_service(
        &mut self,
        port: &ServicePort,
        service: ServiceState,
        origin: Origin,
        problems: &mut Vec<SyncProblem>,
        touched: &mut Touched,
    ) {
        let key = service.vs.key();
        if let Some(other) = self.origins.get(&key) {
            problems.push(SyncProblem::of_port(
                port.name.clone(),
                format!("{} {} {key}", port.name, origin.kind),
                format!("already served by {} {}", other.port, other.kind),
            ));
            return;
        }
        if origin.kind.is_bound() {
            *self.vips.entry(key.addr).or_default() += 1;
        }
        self.origins.insert(key, origin);
        self.state.services.insert(key, service);
        touched.keys.insert(key);
    }

    fn remove_port(&mut self, port: &ServicePort, config: &IpvsConfig, touched: &mut Touched) {
        self.dependent.remove(&port.name);
        let plan = plan_port(port, config, &self.node_ips);
        for (service, origin) in plan.services {
            let key = service.vs.key();
            // Only what this port holds: a clashing key belongs to the other port.
            if self.origins.get(&key).map(|o| &o.port) != Some(&port.name) {
                continue;
            }
            if origin.kind.is_bound() {
                decrement(&mut self.vips, key.addr);
            }
            self.origins.remove(&key);
            self.state.services.remove(&key);
            touched.keys.insert(key);
        }
        for ep in plan.endpoints {
            if decrement(&mut self.endpoints, ep) {
                touched.endpoints.insert(ep);
            }
        }
        self.problems.remove(&port.name);
    }
}

/// Counts one use of `key` less; true when that was the last one.
fn decrement<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) -> bool {
    match counts.get_mut(&key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            counts.remove(&key);
            true
        }
        None => false,
    }
}

fn plan_port(port: &ServicePort, config: &IpvsConfig, node_ips: &BTreeSet<IpAddr>) -> PortPlan {
    let mut plan = PortPlan::default();
    let asked = port.scheduler.unwrap_or(config.default_scheduler);
    let scheduler = match Scheduler::try_from(asked) {
        Ok(s) => s,
        Err(e) => {
            plan.problems.push(SyncProblem::of_port(
                port.name.clone(),
                port.name.to_string(),
                e.to_string(),
            ));
            return plan;
        }
    };
    let selection = select_endpoints(port);
    let internal = selection.internal();
    let external = selection.external();
    let is_local_policy = port.external_traffic_policy == TrafficPolicy::Local;
    let source_ranges = load_balancer_sources(port, node_ips);

    let mut vips: Vec<(IpAddr, u16, VipKind, Target<'_, '_>)> = Vec::new();
    vips.extend(
        port.cluster_ips
            .iter()
            .map(|ip| (*ip, port.port, VipKind::ClusterIp, internal)),
    );
    vips.extend(
        port.external_ips
            .iter()
            .map(|ip| (*ip, port.port, VipKind::ExternalIp, external)),
    );
    vips.extend(
        port.load_balancer_ips
            .iter()
            .map(|ip| (*ip, port.port, VipKind::LoadBalancerIp, external)),
    );
    if let Some(node_port) = port.node_port {
        // Node ports only on node addresses of a family the service has (kube-proxy: the node
        // IPs of the service's IP families), else a v4-only service would get a v6 node port
        // with no real server.
        let mut families: BTreeSet<bool> = port.service_ips().map(|ip| ip.is_ipv4()).collect();
        if families.is_empty() {
            families.extend(port.endpoints.iter().map(|ep| ep.addr.is_ipv4()));
        }
        vips.extend(
            node_ips
                .iter()
                .filter(|ip| families.contains(&ip.is_ipv4()))
                .map(|ip| (*ip, node_port, VipKind::NodePort, external)),
        );
    }

    plan.endpoints.extend(
        selection
            .all_reachable
            .iter()
            .map(|ep| (ep.addr, port.protocol, ep.port)),
    );

    for (addr, vport, kind, target) in vips {
        let vs = VirtualServer {
            sched_flags: SchedFlags {
                // kube-proxy sets only the port flag for mh (`FlagSourceHash`, 0x10): connections
                // from one client spread over real servers by source port too.
                flag2: scheduler == Scheduler::Maglev,
                ..SchedFlags::default()
            },
            persistence: port.session_affinity.timeout(),
            // `port.idle_timeout` has no virtual-server attribute: IPVS connection timeouts are
            // per namespace (see `IpvsDataplane::supported`).
            ..VirtualServer::new(addr, port.protocol, vport, scheduler.clone())
        };
        let (verdict, endpoints): (Verdict, &[&Endpoint]) = match target {
            Target::Endpoints(eps) => (Verdict::Forward, eps),
            Target::Reject => (Verdict::Reject, &[]),
            // kube-proxy's IPVS mode gives such an address the cluster-wide endpoints (its
            // virtual servers cannot tell pods from outside clients); the companions keep the
            // policy's drop for sources outside the cluster CIDRs. Without cluster-wide
            // endpoints (both policies `Local`) there is nothing to fall back to: drop.
            Target::Drop if kind.is_external() && !selection.cluster.is_empty() => {
                (Verdict::DropOutsideCluster, &selection.cluster[..])
            }
            Target::Drop => (Verdict::Drop, &[]),
        };
        let mut service = ServiceState::new(vs);
        // IPVS masquerading forwards within the VIP's family only.
        for ep in endpoints
            .iter()
            .filter(|ep| ep.addr.is_ipv4() == addr.is_ipv4())
        {
            let rs = RealServer::new(ep.addr, ep.port, ep.weight);
            service.real_servers.insert(rs.socket_addr(), rs);
        }
        let origin = Origin {
            port: port.name.clone(),
            kind,
            verdict,
            is_local_policy: is_local_policy && kind.is_external(),
            source_ranges: if kind == VipKind::LoadBalancerIp {
                source_ranges.clone()
            } else {
                Vec::new()
            },
        };
        plan.services.push((service, origin));
    }
    plan
}

/// The sources a load-balancer IP of `port` admits: its source ranges, and when one of them
/// holds a node address, each of its load-balancer IPs as a host network. kube-proxy's
/// `allowFromNode` (`pkg/proxy/ipvs/proxier.go`, the `KUBE-LOAD-BALANCER-SOURCE-IP` entries): a
/// node reaching a load-balancer IP it holds locally sends from that IP, which no range names.
fn load_balancer_sources(port: &ServicePort, node_ips: &BTreeSet<IpAddr>) -> Vec<IpNet> {
    let mut sources = port.load_balancer_source_ranges.clone();
    if allows_node(port, node_ips) {
        sources.extend(port.load_balancer_ips.iter().map(|ip| IpNet::from(*ip)));
    }
    sources
}

/// Whether one of `port`'s load-balancer source ranges holds a node address.
fn allows_node(port: &ServicePort, node_ips: &BTreeSet<IpAddr>) -> bool {
    port.load_balancer_source_ranges
        .iter()
        .any(|net| node_ips.iter().any(|ip| net.contains(ip)))
}

/// An `ipvsadm -Ln`-style listing of a desired state, with each virtual server's service port,
/// kind and verdict as a comment, and its problems as `# problem:` lines: what the golden files
/// pin, and what `svcproxy --dry-run` prints after its summary line.
///
/// ```text
/// # default/web:http cluster IP
/// TCP  198.19.0.10:80 wrr
///   -> 198.18.1.10:8080  Masq  3
/// # bound to the dummy interface: 198.19.0.10
/// ```
pub fn render_listing(desired: &Desired) -> String {
    use std::fmt::Write as _;
    let mut out = render_state(desired);
    for problem in desired.problems() {
        let _ = writeln!(out, "# problem: {problem}");
    }
    out
}

/// [`render_listing`] without the problems: the virtual servers and the VIPs to bind
/// (`DryRun::rendered`; the dry run carries the problems apart, typed).
pub fn render_state(desired: &Desired) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (key, service) in &desired.state.services {
        if let Some(origin) = desired.origins.get(key) {
            let verdict = match origin.verdict {
                Verdict::Forward => "",
                Verdict::Reject => ", no endpoints: reject",
                Verdict::Drop => ", no local endpoints: drop",
                Verdict::DropOutsideCluster => {
                    ", no local endpoints: drop from outside the cluster, pods reach these"
                }
            };
            let local = if origin.is_local_policy {
                ", local"
            } else {
                ""
            };
            let _ = writeln!(out, "# {} {}{local}{verdict}", origin.port, origin.kind);
        }
        let vs = &service.vs;
        let _ = write!(out, "{key} {}", vs.scheduler);
        let flags: Vec<&str> = [
            (vs.sched_flags.flag1, "flag-1"),
            (vs.sched_flags.flag2, "flag-2"),
            (vs.sched_flags.flag3, "flag-3"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if !flags.is_empty() {
            let _ = write!(out, " ({})", flags.join(","));
        }
        if let Some(timeout) = vs.persistence {
            let _ = write!(out, " persistent {}", timeout.as_secs());
        }
        out.push('\n');
        for rs in service.real_servers.values() {
            let _ = writeln!(out, "  -> {}  Masq  {}", rs.socket_addr(), rs.weight);
        }
    }
    let vips: Vec<String> = desired.vips.keys().map(IpAddr::to_string).collect();
    let _ = writeln!(out, "# bound to the dummy interface: {}", vips.join(" "));
    out
}
