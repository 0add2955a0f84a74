//! The desired table of a [`ServiceTable`]: the fixed skeleton, plus what each service port
//! contributes (its elements, and references to the shared chains of its endpoint counts).
//!
//! Endpoint choice is [`proxy_core::select`]'s, never redone here: each address kind reads
//! the target for *new* connections ([`EndpointSelection::internal_new`],
//! [`EndpointSelection::external_new`], [`EndpointSelection::short_circuit_new`]), since the
//! rules only pick endpoints for new connections (conntrack keeps established ones).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::dataplane::SyncProblem;
use proxy_core::diff::ChangeSet;
use proxy_core::select::{select_endpoints, EndpointSelection, Target};
use proxy_core::table::{Endpoint, ServicePort, ServicePortName, ServiceTable, TrafficPolicy};

use super::layout::{chain, skeleton};
use crate::config::NftablesConfig;
use crate::model::{Family, Key, Table, Value, Verdict, SHORT_CIRCUIT_SLOT};
use crate::names::{ChainName, SetName};

/// The desired table, kept up to date port by port ([`DesiredTable::update`]), with the
/// reference counts that tell when a shared chain or element comes or goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTable {
    /// The table.
    pub table: Table,
    /// The configuration it was planned with.
    pub config: NftablesConfig,
    /// The node addresses it was planned with.
    pub node_ips: BTreeSet<IpAddr>,
    /// Service ports per shared chain.
    chain_refs: BTreeMap<ChainName, usize>,
    /// Service ports per shared element (cluster IPs, hairpin pairs).
    element_refs: BTreeMap<(SetName, Key), usize>,
    /// Per service port, what could not be planned.
    pub problems: BTreeMap<ServicePortName, Vec<SyncProblem>>,
}

/// What one service port contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortObjects {
    /// Elements only this port writes.
    pub elements: Vec<(SetName, Key, Value)>,
    /// Elements several ports may write (cluster IPs of a multi-port service, hairpin pairs).
    pub shared: Vec<(SetName, Key)>,
    /// Shared chains the port's elements lead to.
    pub chains: BTreeSet<ChainName>,
    /// What could not be planned.
    pub problems: Vec<SyncProblem>,
}

impl PortObjects {
    /// Every element key the port writes, its own and shared.
    pub fn keys(&self) -> impl Iterator<Item = (SetName, Key)> + '_ {
        let own = self.elements.iter().map(|(s, k, _)| (*s, *k));
        own.chain(self.shared.iter().copied())
    }
}

/// The desired table of `table`: [`DesiredTable`] built whole. `node_ips` are the node's
/// addresses (node ports are served on those within `node_port_addresses`; a load-balancer
/// source range holding one lets the load-balancer IP itself in).
pub fn desired(
    table: &ServiceTable,
    config: &NftablesConfig,
    node_ips: &BTreeSet<IpAddr>,
) -> DesiredTable {
    let mut desired = DesiredTable::empty(config, node_ips);
    for port in table.iter() {
        desired.insert_port(port);
    }
    desired
}

impl DesiredTable {
    /// The skeleton alone: fixed chains and every set, no service.
    /// The node's addresses are `node_ips` and [`NftablesConfig::node_addresses`].
    pub fn empty(config: &NftablesConfig, node_ips: &BTreeSet<IpAddr>) -> Self {
        let node_ips: BTreeSet<IpAddr> = node_ips
            .iter()
            .chain(&config.node_addresses)
            .copied()
            .collect();
        Self {
            table: skeleton(config, &node_ips),
            config: config.clone(),
            node_ips,
            chain_refs: BTreeMap::new(),
            element_refs: BTreeMap::new(),
            problems: BTreeMap::new(),
        }
    }

    /// Every problem, in service port order.
    pub fn problems(&self) -> Vec<SyncProblem> {
        self.problems.values().flatten().cloned().collect()
    }

    /// Follows a table change port by port: each removed or changed port's old contribution
    /// goes, each added or changed port's new one comes. Cost: the ports changed.
    pub fn update(&mut self, changes: &ChangeSet) {
        let previous = changes.changed.iter().map(|c| &c.previous);
        for old in changes.removed.iter().chain(previous) {
            self.remove_port(old);
        }
        let current = changes.changed.iter().map(|c| &c.current);
        for new in current.chain(&changes.added) {
            self.insert_port(new);
        }
    }

    /// Follows a change of the node's addresses (`node_ips`, plus the configured ones): only
    /// what depends on them is planned again, the `nodeport-ips` elements and the ports of
    /// `table` whose load-balancer source ranges now admit the node, or no longer do
    /// ([`allows_node`]). Returns every element that may have changed, for a partial plan.
    pub fn readdress(
        &mut self,
        table: &ServiceTable,
        node_ips: &BTreeSet<IpAddr>,
    ) -> BTreeSet<(SetName, Key)> {
        let node_ips: BTreeSet<IpAddr> = node_ips
            .iter()
            .chain(&self.config.node_addresses)
            .copied()
            .collect();
        let mut touched = BTreeSet::new();
        if node_ips == self.node_ips {
            return touched;
        }
        let moved: Vec<&ServicePort> = table
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| allows_node(p, &self.node_ips) != allows_node(p, &node_ips))
            .collect();
        for port in &moved {
            touched.extend(self.port_objects(port).keys());
            self.remove_port(port);
        }
        let fresh = skeleton(&self.config, &node_ips);
        for (name, set) in fresh.sets {
            let follows_addresses = matches!(name, SetName::NodePortIps(_) | SetName::NodeIps(_));
            if let (true, Some(have)) = (follows_addresses, self.table.sets.get_mut(&name)) {
                touched.extend(have.elements.keys().map(|k| (name, *k)));
                touched.extend(set.elements.keys().map(|k| (name, *k)));
                have.elements = set.elements;
            }
        }
        self.node_ips = node_ips;
        for port in &moved {
            touched.extend(self.port_objects(port).keys());
            self.insert_port(port);
        }
        touched
    }

    /// What `port` contributes under this table's configuration and node addresses.
    pub fn port_objects(&self, port: &ServicePort) -> PortObjects {
        plan_port(port, &self.config, &self.node_ips)
    }

    fn insert_port(&mut self, port: &ServicePort) {
        let objects = self.port_objects(port);
        for (set, key, value) in objects.elements {
            if let Some(s) = self.table.sets.get_mut(&set) {
                s.elements.insert(key, value);
            }
        }
        for (set, key) in objects.shared {
            let count = self.element_refs.entry((set, key)).or_default();
            *count += 1;
            if *count == 1 {
                if let Some(s) = self.table.sets.get_mut(&set) {
                    s.elements.insert(key, Value::None);
                }
            }
        }
        for name in objects.chains {
            let count = self.chain_refs.entry(name).or_default();
            *count += 1;
            if *count == 1 {
                self.table.chains.insert(name, chain(name, &self.config));
            }
        }
        if !objects.problems.is_empty() {
            self.problems.insert(port.name.clone(), objects.problems);
        }
    }

    fn remove_port(&mut self, port: &ServicePort) {
        let objects = self.port_objects(port);
        for (set, key, _) in objects.elements {
            if let Some(s) = self.table.sets.get_mut(&set) {
                s.elements.remove(&key);
            }
        }
        for (set, key) in objects.shared {
            if decrement(&mut self.element_refs, (set, key)) {
                if let Some(s) = self.table.sets.get_mut(&set) {
                    s.elements.remove(&key);
                }
            }
        }
        for name in objects.chains {
            if decrement(&mut self.chain_refs, name) {
                self.table.chains.remove(&name);
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

/// The balancing slots of `endpoints` (those of `family` only): each endpoint repeated by its
/// weight (divided by the weights' greatest common divisor, scaled down to `max_slots`).
pub fn slots(endpoints: &[&Endpoint], family: Family, max_slots: u32) -> Vec<SocketAddr> {
    let eps: Vec<&&Endpoint> = endpoints
        .iter()
        .filter(|ep| Family::of(ep.addr) == family && ep.weight > 0)
        .collect();
    let g = eps.iter().fold(0u32, |g, ep| gcd(g, ep.weight)).max(1);
    let counts: Vec<u64> = eps.iter().map(|ep| u64::from(ep.weight / g)).collect();
    let sum: u64 = counts.iter().sum();
    let max = u64::from(max_slots.max(1));
    let counts: Vec<u64> = if sum > max {
        counts.iter().map(|c| (c * max / sum).max(1)).collect()
    } else {
        counts
    };
    let mut out = Vec::new();
    for (ep, n) in eps.iter().zip(counts) {
        for _ in 0..n {
            out.push(SocketAddr::new(ep.addr, ep.port));
        }
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The families `port` serves: those of its service addresses, else of its endpoints (a
/// node-port-only port).
fn families(port: &ServicePort) -> BTreeSet<Family> {
    let mut families: BTreeSet<Family> = port.service_ips().map(Family::of).collect();
    if families.is_empty() {
        families.extend(port.endpoints.iter().map(|ep| Family::of(ep.addr)));
    }
    families
}

/// Whether one of `port`'s load-balancer source ranges holds a node address (kube-proxy then
/// lets the load-balancer IPs themselves in: a node reaching a load-balancer IP it holds sends
/// from that IP, `pkg/proxy/nftables/proxier.go`, `allowFromNode`).
pub fn allows_node(port: &ServicePort, node_ips: &BTreeSet<IpAddr>) -> bool {
    port.load_balancer_source_ranges
        .iter()
        .any(|net| node_ips.iter().any(|ip| net.contains(ip)))
}

/// Where one address of a port leads: its dispatch kind.
#[derive(Clone, Copy)]
enum Dispatch {
    /// A cluster IP (internal policy).
    Internal,
    /// An external or load-balancer IP, or a node port (external policy).
    External,
}

/// One service address: the keys of its dispatch, no-endpoint and slot elements.
struct Address {
    /// Dispatch and no-endpoint map of this address kind.
    dispatch_map: SetName,
    no_endpoint_map: SetName,
    /// The dispatch key.
    key: Key,
    /// The slot key for slot `i`.
    slot: fn(Key, u32) -> Key,
    /// The endpoints map the slots go in.
    endpoints_map: SetName,
    is_node_port: bool,
}

fn service_slot(key: Key, slot: u32) -> Key {
    match key {
        Key::Dest { addr, proto, port } => Key::Slot {
            addr,
            proto,
            port,
            slot,
        },
        other => other,
    }
}

fn node_port_slot(key: Key, slot: u32) -> Key {
    match key {
        Key::Port { proto, port } => Key::PortSlot { proto, port, slot },
        other => other,
    }
}

/// What `port` contributes.
pub fn plan_port(
    port: &ServicePort,
    config: &NftablesConfig,
    node_ips: &BTreeSet<IpAddr>,
) -> PortObjects {
    let mut objects = PortObjects::default();
    let selection = select_endpoints(port);
    let proto = port.protocol;
    let mut addresses: Vec<(Family, Dispatch, Address)> = Vec::new();
    let dest = |addr: IpAddr| {
        let family = Family::of(addr);
        Address {
            dispatch_map: SetName::ServiceIps(family),
            no_endpoint_map: SetName::NoEndpointServices(family),
            key: Key::Dest {
                addr,
                proto,
                port: port.port,
            },
            slot: service_slot,
            endpoints_map: SetName::Endpoints(family),
            is_node_port: false,
        }
    };
    for &ip in &port.cluster_ips {
        let family = Family::of(ip);
        objects
            .shared
            .push((SetName::ClusterIps(family), Key::Addr(ip)));
        addresses.push((family, Dispatch::Internal, dest(ip)));
    }
    for &ip in port.external_ips.iter().chain(&port.load_balancer_ips) {
        addresses.push((Family::of(ip), Dispatch::External, dest(ip)));
    }
    if let Some(node_port) = port.node_port {
        for family in families(port) {
            addresses.push((
                family,
                Dispatch::External,
                Address {
                    dispatch_map: SetName::ServiceNodePorts(family),
                    no_endpoint_map: SetName::NoEndpointNodePorts(family),
                    key: Key::Port {
                        proto,
                        port: node_port,
                    },
                    slot: node_port_slot,
                    endpoints_map: SetName::NodePortEndpoints(family),
                    is_node_port: true,
                },
            ));
        }
    }
    for (family, dispatch, address) in addresses {
        plan_address(
            &mut objects,
            port,
            &selection,
            config,
            family,
            dispatch,
            &address,
        );
    }
    plan_source_ranges(&mut objects, port, node_ips);
    for ep in &selection.all_reachable {
        objects.shared.push((
            SetName::Hairpin(Family::of(ep.addr)),
            Key::Pair(ep.addr, ep.addr),
        ));
    }
    objects
}

/// The target's endpoints of `family`, or the verdict when there are none.
fn endpoints_of<'a>(target: Target<'_, 'a>, family: Family) -> Result<Vec<&'a Endpoint>, Verdict> {
    match target {
        Target::Endpoints(eps) => {
            let eps: Vec<&Endpoint> = eps
                .iter()
                .copied()
                .filter(|ep| Family::of(ep.addr) == family)
                .collect();
            if eps.is_empty() {
                Err(Verdict::Goto(ChainName::RejectChain))
            } else {
                Ok(eps)
            }
        }
        Target::Reject => Err(Verdict::Goto(ChainName::RejectChain)),
        Target::Drop => Err(Verdict::Drop),
    }
}

fn plan_address(
    objects: &mut PortObjects,
    port: &ServicePort,
    selection: &EndpointSelection<'_>,
    config: &NftablesConfig,
    family: Family,
    dispatch: Dispatch,
    address: &Address,
) {
    let is_local = matches!(dispatch, Dispatch::External)
        && port.external_traffic_policy == TrafficPolicy::Local;
    let target = match dispatch {
        Dispatch::Internal => selection.internal_new(),
        Dispatch::External => selection.external_new(),
    };
    let main = endpoints_of(target, family);
    let short: Vec<SocketAddr> = match selection.short_circuit_new() {
        Some(t) if is_local => match endpoints_of(t, family) {
            Ok(eps) => slots(&eps, family, config.max_slots),
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    let main_slots = match &main {
        Ok(eps) => slots(eps, family, config.max_slots),
        Err(_) => Vec::new(),
    };
    if let Err(verdict) = main {
        objects.elements.push((
            address.no_endpoint_map,
            address.key,
            Value::Verdict(verdict),
        ));
        // Reject, or a `Cluster` policy's drop: nothing to dispatch. A `Local` policy's drop
        // still dispatches pods and the node to the cluster-wide endpoints (short-circuit);
        // the filter chains drop the rest, which was not DNATed.
        if short.is_empty() || verdict != Verdict::Drop {
            return;
        }
    }
    let k = count(main_slots.len());
    let j = count(short.len());
    let chain = match (
        address.is_node_port,
        is_local,
        matches!(dispatch, Dispatch::Internal),
    ) {
        (false, _, true) => ChainName::Service(k),
        (false, false, false) => ChainName::External(k),
        (false, true, false) => ChainName::ExternalLocal(k, j),
        (true, false, _) => ChainName::NodePortExternal(k),
        (true, true, _) => ChainName::NodePortLocal(k, j),
    };
    objects.chains.insert(chain);
    objects.chains.extend(chain.leads_to());
    objects.elements.push((
        address.dispatch_map,
        address.key,
        Value::Verdict(Verdict::Goto(chain)),
    ));
    plan_affinity(objects, port, family, address);
    for (i, ep) in main_slots.iter().enumerate() {
        objects.elements.push((
            address.endpoints_map,
            (address.slot)(address.key, count(i)),
            Value::Endpoint(*ep),
        ));
    }
    for (i, ep) in short.iter().enumerate() {
        objects.elements.push((
            address.endpoints_map,
            (address.slot)(address.key, SHORT_CIRCUIT_SLOT + count(i)),
            Value::Endpoint(*ep),
        ));
    }
}

/// Client-IP affinity of one dispatched address: its element in `affinity-services`
/// (`affinity-nodeports`), leading to the chain of the port's timeout.
fn plan_affinity(objects: &mut PortObjects, port: &ServicePort, family: Family, address: &Address) {
    let affinity = port.session_affinity.timeout();
    if let Some(timeout) = affinity {
        // Recorded after DNAT under the original destination (see `Rule::AffinityDispatch`).
        let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        let map = if address.is_node_port {
            SetName::AffinityNodePorts(family)
        } else {
            SetName::AffinityServices(family)
        };
        let chain = match family {
            Family::V4 => ChainName::Affinity(secs),
            Family::V6 => ChainName::AffinityV6(secs),
        };
        objects.chains.insert(chain);
        objects
            .elements
            .push((map, address.key, Value::Verdict(Verdict::Jump(chain))));
    }
}

/// Load-balancer source ranges: each load-balancer IP with ranges is in `firewall-ips`, and
/// `firewall-allow` holds what it admits: its ranges of its family, and the IP itself when a
/// range holds a node address.
fn plan_source_ranges(objects: &mut PortObjects, port: &ServicePort, node_ips: &BTreeSet<IpAddr>) {
    if port.load_balancer_source_ranges.is_empty() {
        return;
    }
    let from_node = allows_node(port, node_ips);
    for &ip in &port.load_balancer_ips {
        let family = Family::of(ip);
        let (proto, p) = (port.protocol, port.port);
        objects.elements.push((
            SetName::FirewallIps(family),
            Key::Dest {
                addr: ip,
                proto,
                port: p,
            },
            Value::None,
        ));
        let mut sources: BTreeSet<IpNet> = port
            .load_balancer_source_ranges
            .iter()
            .filter(|n| Family::of(n.addr()) == family)
            .map(IpNet::trunc)
            .collect();
        if from_node {
            sources.insert(IpNet::from(ip));
        }
        for source in sources {
            objects.elements.push((
                SetName::FirewallAllow(family),
                Key::DestSource {
                    addr: ip,
                    proto,
                    port: p,
                    source,
                },
                Value::None,
            ));
        }
    }
}
