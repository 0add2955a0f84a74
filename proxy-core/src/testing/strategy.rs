//! proptest strategies for valid [`ServiceTable`]s, and for edits of them that go through
//! [`ServiceTable::edit`] (so every untouched service port stays shared by `Arc`).
//!
//! Every table these strategies produce is valid by construction, under all of
//! [`crate::validate`]'s rules: unique keys, no two service ports claiming one (IP, port,
//! protocol), unique node ports and health-check node ports, at most one cluster IP per family,
//! endpoint, external and load-balancer IPs only of the cluster IPs' families, no port 0, affinity
//! timeouts within 1..=86,400 s, no duplicate endpoint in a port, no unspecified or multicast
//! address, no empty name, and named ports whenever a service has several.
//!
//! # Address plan
//!
//! Services are numbered by an *index* `i` (`0..`[`MAX_SERVICE_INDEX`]) written in their name
//! (`ns-x/svc-i`), and each port of a service by a *slot* `j` (`0..`[`MAX_PORTS_PER_SERVICE`])
//! written in its port name (`p{j}`; a service with a single port may call it `http` or leave it
//! unnamed, slot 0). Every address or node port that must be unique derives from `(i, j)`:
//!
//! | what                   | IPv4                   | IPv6                     |
//! |------------------------|------------------------|--------------------------|
//! | cluster IP of `i`      | `198.19.0.(i+1)`       | `2001:db8:1::(i+1)`      |
//! | external IP of `i`     | `198.19.1.(i+1)`       | `2001:db8:2::(i+1)`      |
//! | load-balancer IP of `i`| `198.19.2.(i+1)`       | `2001:db8:3::(i+1)`      |
//! | endpoints (any port)   | `198.18.0.1`-`.16`     | `2001:db8:e::1`-`::10`   |
//! | LB source ranges       | `198.18.0.0/24`, `192.0.2.0/24` | `2001:db8:f::/64` |
//!
//! Node port of `(i, j)`: `30000 + 4i + j`; health-check node port: `31000 + 4i + j`. The ports of
//! one service share its cluster, external and load-balancer IPs with distinct port numbers, so no
//! (IP, port, protocol) is claimed twice. Endpoints come from a small pool so that two arbitrary
//! tables often share endpoint keys (and the diff sees endpoint *changes*, not only adds and
//! removes).
//!
//! ```
//! use proptest::prelude::*;
//! use proxy_core::diff::{apply_changes, diff};
//! use proxy_core::testing::strategy::arb_edited_pair;
//!
//! proptest!(|((before, after) in arb_edited_pair())| {
//!     let changes = diff(&before, &after);
//!     prop_assert_eq!(apply_changes(&before, &changes).unwrap(), after);
//! });
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};

mod edit;

pub use edit::{arb_edited_pair, arb_table_edit};

use crate::table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TableBuilder, TrafficPolicy,
};

/// How many service indices the address plan has room for (`i` in `0..250`).
pub const MAX_SERVICE_INDEX: u16 = 250;
/// How many port slots a service has (`j` in `0..4`); services start with at most 3, edits add up to 4.
pub const MAX_PORTS_PER_SERVICE: u16 = 4;
/// Size of the endpoint address pool, per family.
pub const ENDPOINT_POOL: u8 = 16;

/// Node names used for the table's node and endpoints' nodes.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const ZONES: [&str; 2] = ["zone-1", "zone-2"];
const NAMESPACES: [&str; 3] = ["default", "ns-a", "ns-b"];
/// Service port numbers; the ports of one service take distinct ones.
const PORT_NUMBERS: [u16; 5] = [53, 80, 443, 8080, 9090];
const TARGET_PORTS: [u16; 3] = [80, 8080, 9000];
/// An endpoint's port is its service port's target port, or this one.
const OTHER_ENDPOINT_PORT: u16 = 9000;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

// === Address plan ===

fn planned_addr(family: Family, block: u8, host: u16) -> IpAddr {
    match family {
        Family::V4 => {
            let [hi, lo] = host.to_be_bytes();
            debug_assert_eq!(hi, 0, "v4 hosts stay below 256");
            IpAddr::V4(Ipv4Addr::new(198, 19, block, lo))
        }
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(block) + 1,
            0,
            0,
            0,
            0,
            host,
        )),
    }
}

/// The cluster IP of service `index` in `family` (see the module's address plan).
///
/// # Panics
/// When `index >= MAX_SERVICE_INDEX`.
pub fn cluster_ip(index: u16, family: Family) -> IpAddr {
    assert!(
        index < MAX_SERVICE_INDEX,
        "service index {index} outside the address plan"
    );
    planned_addr(family, 0, index + 1)
}

/// The external IP of service `index` in `family`.
///
/// # Panics
/// When `index >= MAX_SERVICE_INDEX`.
pub fn external_ip(index: u16, family: Family) -> IpAddr {
    assert!(
        index < MAX_SERVICE_INDEX,
        "service index {index} outside the address plan"
    );
    planned_addr(family, 1, index + 1)
}

/// The load-balancer IP of service `index` in `family`.
///
/// # Panics
/// When `index >= MAX_SERVICE_INDEX`.
pub fn load_balancer_ip(index: u16, family: Family) -> IpAddr {
    assert!(
        index < MAX_SERVICE_INDEX,
        "service index {index} outside the address plan"
    );
    planned_addr(family, 2, index + 1)
}

/// Endpoint address number `host` (`1..=ENDPOINT_POOL`) of the pool in `family`.
pub fn endpoint_ip(family: Family, host: u8) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, host)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xe,
            0,
            0,
            0,
            0,
            u16::from(host),
        )),
    }
}

/// The node port of slot `slot` of service `index`.
pub fn node_port(index: u16, slot: u16) -> u16 {
    30_000 + 4 * index + slot
}

/// The health-check node port of slot `slot` of service `index`.
pub fn health_check_node_port(index: u16, slot: u16) -> u16 {
    31_000 + 4 * index + slot
}

fn source_ranges() -> [IpNet; 3] {
    [
        "198.18.0.0/24".parse().expect("literal network"),
        "192.0.2.0/24".parse().expect("literal network"),
        "2001:db8:f::/64".parse().expect("literal network"),
    ]
}

/// The service index written in a service port's name (`svc-12` gives 12), if it has one.
pub fn service_index(name: &ServicePortName) -> Option<u16> {
    name.name.strip_prefix("svc-")?.parse().ok()
}

/// The slot written in a port name: `p2` gives 2; `http` and the empty name give 0.
fn port_slot(name: &ServicePortName) -> u16 {
    name.port
        .strip_prefix('p')
        .and_then(|slot| slot.parse().ok())
        .unwrap_or(0)
}

// === Specs: table-independent random choices, materialized against an index ===

/// The random choices behind one endpoint; its family and port are resolved against the service
/// port it joins.
#[derive(Debug, Clone)]
struct EndpointSpec {
    family_pick: Index,
    host: u8,
    other_port: bool,
    conditions: EndpointConditions,
}

/// Everything about an endpoint but its key.
#[derive(Debug, Clone)]
struct EndpointConditions {
    /// 0: ready; 1: serving and terminating; 2: terminating only; 3: neither.
    state: u8,
    node: Option<usize>,
    is_local: bool,
    zone: Option<usize>,
    weight: u32,
    /// Indices into `ZONES` / `NODES`: the endpoint's topology hints (mostly none).
    zone_hints: Vec<usize>,
    node_hints: Vec<usize>,
}

/// Everything about a service port but its name, cluster IPs, port number and endpoints.
#[derive(Debug, Clone)]
struct PortSettings {
    protocol: Protocol,
    target_port: u16,
    has_node_port: bool,
    external: [bool; 2],
    load_balancer: [bool; 2],
    source_ranges: [bool; 3],
    affinity_secs: Option<u64>,
    external_policy: TrafficPolicy,
    internal_policy: TrafficPolicy,
    scheduler: Option<Scheduler>,
    idle_secs: Option<u64>,
}

#[derive(Debug, Clone)]
struct PortSpec {
    settings: PortSettings,
    endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Clone)]
struct ServiceSpec {
    namespace: usize,
    families: Vec<Family>,
    numbers: Vec<u16>,
    ports: Vec<PortSpec>,
    single_port_name: &'static str,
}

fn endpoint_conditions() -> impl Strategy<Value = EndpointConditions> {
    (
        prop_oneof![4 => Just(0u8), 1 => 1u8..=3],
        prop::option::of(0..NODES.len()),
        any::<bool>(),
        prop::option::of(0..ZONES.len()),
        prop_oneof![4 => Just(1u32), 1 => 0u32..=100],
        prop_oneof![3 => Just(Vec::new()), 1 => vec(0..ZONES.len(), 1..=2)],
        prop_oneof![5 => Just(Vec::new()), 1 => vec(0..NODES.len(), 1..=2)],
    )
        .prop_map(
            |(state, node, is_local, zone, weight, zone_hints, node_hints)| EndpointConditions {
                state,
                node,
                is_local,
                zone,
                weight,
                zone_hints,
                node_hints,
            },
        )
}

fn endpoint_spec() -> impl Strategy<Value = EndpointSpec> {
    (
        any::<Index>(),
        1..=ENDPOINT_POOL,
        prop::bool::weighted(0.2),
        endpoint_conditions(),
    )
        .prop_map(|(family_pick, host, other_port, conditions)| EndpointSpec {
            family_pick,
            host,
            other_port,
            conditions,
        })
}

fn port_settings() -> impl Strategy<Value = PortSettings> {
    let policy = || prop_oneof![3 => Just(TrafficPolicy::Cluster), 1 => Just(TrafficPolicy::Local)];
    (
        select(Protocol::ALL.to_vec()),
        select(TARGET_PORTS.to_vec()),
        any::<bool>(),
        any::<[bool; 2]>(),
        any::<[bool; 2]>(),
        any::<[bool; 3]>(),
        prop::option::weighted(0.3, 1u64..=86_400),
        policy(),
        policy(),
        prop::option::of(select(Scheduler::ALL.to_vec())),
        prop::option::weighted(0.2, 1u64..=86_400),
    )
        .prop_map(
            |(
                protocol,
                target_port,
                has_node_port,
                external,
                load_balancer,
                source_ranges,
                affinity_secs,
                external_policy,
                internal_policy,
                scheduler,
                idle_secs,
            )| PortSettings {
                protocol,
                target_port,
                has_node_port,
                external,
                load_balancer,
                source_ranges,
                affinity_secs,
                external_policy,
                internal_policy,
                scheduler,
                idle_secs,
            },
        )
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    (port_settings(), vec(endpoint_spec(), 0..=5)).prop_map(|(settings, endpoints)| PortSpec {
        settings,
        endpoints,
    })
}

fn service_spec(ports: std::ops::RangeInclusive<usize>) -> BoxedStrategy<ServiceSpec> {
    let families = prop_oneof![
        3 => Just(vec![Family::V4]),
        1 => Just(vec![Family::V6]),
        1 => Just(vec![Family::V4, Family::V6]),
        1 => Just(vec![Family::V6, Family::V4]),
    ];
    (
        0..NAMESPACES.len(),
        families,
        subsequence(PORT_NUMBERS.to_vec(), ports),
        select(vec!["", "http"]),
    )
        .prop_flat_map(|(namespace, families, numbers, single_port_name)| {
            let count = numbers.len();
            (
                Just(namespace),
                Just(families),
                Just(numbers),
                vec(port_spec(), count),
                Just(single_port_name),
            )
        })
        .prop_map(
            |(namespace, families, numbers, ports, single_port_name)| ServiceSpec {
                namespace,
                families,
                numbers,
                ports,
                single_port_name,
            },
        )
        .boxed()
}

// === Materialization ===

fn endpoint_from(families: &[Family], target_port: u16, spec: &EndpointSpec) -> Endpoint {
    let family = families[spec.family_pick.index(families.len())];
    let port = if spec.other_port {
        OTHER_ENDPOINT_PORT
    } else {
        target_port
    };
    let mut endpoint = Endpoint::new(endpoint_ip(family, spec.host), port);
    set_conditions(&mut endpoint, &spec.conditions);
    endpoint
}

fn set_conditions(endpoint: &mut Endpoint, conditions: &EndpointConditions) {
    (endpoint.ready, endpoint.serving, endpoint.terminating) = match conditions.state {
        0 => (true, true, false),
        1 => (false, true, true),
        2 => (false, false, true),
        _ => (false, false, false),
    };
    endpoint.node = conditions.node.map(|n| NODES[n].to_owned());
    endpoint.is_local = conditions.is_local;
    endpoint.zone = conditions.zone.map(|z| ZONES[z].to_owned());
    endpoint.weight = conditions.weight;
    endpoint.zone_hints = conditions
        .zone_hints
        .iter()
        .map(|&z| ZONES[z].to_owned())
        .collect();
    endpoint.node_hints = conditions
        .node_hints
        .iter()
        .map(|&n| NODES[n].to_owned())
        .collect();
}

/// Endpoints with distinct keys (a later spec with the same key as an earlier one is dropped).
fn endpoints_from(families: &[Family], target_port: u16, specs: &[EndpointSpec]) -> Vec<Endpoint> {
    let mut by_key = BTreeMap::new();
    for spec in specs {
        let endpoint = endpoint_from(families, target_port, spec);
        by_key.entry(endpoint.key()).or_insert(endpoint);
    }
    by_key.into_values().collect()
}

/// Sets every field `settings` covers, deriving addresses and node ports from `(index, slot)` and
/// the families of `port.cluster_ips`.
fn apply_settings(port: &mut ServicePort, index: u16, slot: u16, settings: &PortSettings) {
    let families: Vec<Family> = port.cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
    let has = |family: Family| families.contains(&family);
    let chosen = |flags: [bool; 2]| {
        [Family::V4, Family::V6]
            .into_iter()
            .zip(flags)
            .filter(move |(family, flag)| *flag && has(*family))
            .map(|(family, _)| family)
    };
    port.protocol = settings.protocol;
    port.target_port = settings.target_port;
    port.node_port = settings.has_node_port.then(|| node_port(index, slot));
    port.external_ips = chosen(settings.external)
        .map(|family| external_ip(index, family))
        .collect();
    port.load_balancer_ips = chosen(settings.load_balancer)
        .map(|family| load_balancer_ip(index, family))
        .collect();
    port.load_balancer_source_ranges = if port.load_balancer_ips.is_empty() {
        Vec::new()
    } else {
        source_ranges()
            .into_iter()
            .zip(settings.source_ranges)
            .filter(|(net, flag)| *flag && has(Family::of(net.addr())))
            .map(|(net, _)| net)
            .collect()
    };
    port.session_affinity = match settings.affinity_secs {
        None => SessionAffinity::None,
        Some(secs) => SessionAffinity::ClientIp {
            timeout: Duration::from_secs(secs),
        },
    };
    port.external_traffic_policy = settings.external_policy;
    port.internal_traffic_policy = settings.internal_policy;
    port.scheduler = settings.scheduler;
    port.idle_timeout = settings.idle_secs.map(Duration::from_secs);
    // As in Kubernetes: a health check only for a `Local` external policy on a port reachable from
    // outside.
    port.health_check_node_port = (port.external_traffic_policy == TrafficPolicy::Local
        && port.has_external_addresses())
    .then(|| health_check_node_port(index, slot));
}

fn service_from(index: u16, spec: &ServiceSpec) -> Vec<ServicePort> {
    let single = spec.ports.len() == 1;
    spec.ports
        .iter()
        .zip(&spec.numbers)
        .enumerate()
        .map(|(slot, (port_spec, number))| {
            let slot = u16::try_from(slot).expect("at most 3 ports per service");
            let port_name = if single {
                spec.single_port_name.to_owned()
            } else {
                format!("p{slot}")
            };
            let name = ServicePortName::new(
                NAMESPACES[spec.namespace],
                format!("svc-{index}"),
                port_name,
            );
            let mut port = ServicePort::new(name, Protocol::Tcp, *number);
            port.cluster_ips = spec
                .families
                .iter()
                .map(|family| cluster_ip(index, *family))
                .collect();
            apply_settings(&mut port, index, slot, &port_spec.settings);
            port.endpoints = endpoints_from(&spec.families, port.target_port, &port_spec.endpoints);
            port
        })
        .collect()
}

fn build(builder: TableBuilder) -> ServiceTable {
    match builder.build() {
        Ok(table) => table,
        // A bug in this module, not in the code under test: say which rule the plan broke.
        Err(errors) => panic!("strategy produced an invalid table: {errors}"),
    }
}

// === Public strategies ===

/// One endpoint of `family` for a service port whose target port is `target_port`: any
/// conditions (ready; serving and terminating; terminating; none), node, locality, zone, weight.
pub fn arb_endpoint(family: Family, target_port: u16) -> impl Strategy<Value = Endpoint> {
    endpoint_spec().prop_map(move |spec| endpoint_from(&[family], target_port, &spec))
}

/// The service ports (1 to 3) of one service with index `index` (see the address plan): every
/// field arbitrary, addresses and node ports derived from the index.
///
/// # Panics
/// When `index >= MAX_SERVICE_INDEX`.
pub fn arb_service(index: u16) -> impl Strategy<Value = Vec<ServicePort>> {
    assert!(
        index < MAX_SERVICE_INDEX,
        "service index {index} outside the address plan"
    );
    service_spec(1..=3).prop_map(move |spec| service_from(index, &spec))
}

/// One service port, alone in its service with index `index`.
///
/// # Panics
/// When `index >= MAX_SERVICE_INDEX`.
pub fn arb_service_port(index: u16) -> impl Strategy<Value = ServicePort> {
    assert!(
        index < MAX_SERVICE_INDEX,
        "service index {index} outside the address plan"
    );
    service_spec(1..=1).prop_map(move |spec| {
        let mut ports = service_from(index, &spec);
        ports.pop().expect("one port asked for")
    })
}

/// A valid table of up to 8 services (up to 24 service ports), for an arbitrary node or none.
pub fn arb_table() -> impl Strategy<Value = ServiceTable> {
    arb_table_with(8)
}

/// A valid table of up to `max_services` services with indices `0..n`.
///
/// # Panics
/// When `max_services > MAX_SERVICE_INDEX`.
pub fn arb_table_with(max_services: usize) -> impl Strategy<Value = ServiceTable> {
    assert!(
        max_services <= usize::from(MAX_SERVICE_INDEX),
        "{max_services} services do not fit the address plan"
    );
    (
        prop::option::of(0..NODES.len()),
        prop::option::of(0..ZONES.len()),
        vec(service_spec(1..=3), 0..=max_services),
    )
        .prop_map(|(node, zone, specs)| {
            let mut builder = ServiceTable::builder();
            builder.set_node(node.map(|n| NODES[n].to_owned()));
            builder.set_zone(zone.map(|z| ZONES[z].to_owned()));
            for (index, spec) in specs.iter().enumerate() {
                let index = u16::try_from(index).expect("bounded by MAX_SERVICE_INDEX");
                for port in service_from(index, spec) {
                    builder.upsert(port);
                }
            }
            build(builder)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The plan keeps every derived address inside the documentation ranges and apart.
    #[test]
    fn address_plan_stays_in_test_ranges_and_apart() {
        let v4: IpNet = "198.18.0.0/15".parse().expect("literal network");
        let v6: IpNet = "2001:db8::/32".parse().expect("literal network");
        let mut seen = BTreeSet::new();
        for index in 0..MAX_SERVICE_INDEX {
            for family in [Family::V4, Family::V6] {
                for addr in [
                    cluster_ip(index, family),
                    external_ip(index, family),
                    load_balancer_ip(index, family),
                ] {
                    assert!(v4.contains(&addr) || v6.contains(&addr), "{addr}");
                    assert!(seen.insert(addr), "{addr} planned twice");
                }
            }
            let last = MAX_PORTS_PER_SERVICE - 1;
            assert!(node_port(index, last) < health_check_node_port(0, 0));
            assert!(health_check_node_port(index, last) <= 32_767);
        }
        for host in 1..=ENDPOINT_POOL {
            for family in [Family::V4, Family::V6] {
                let addr = endpoint_ip(family, host);
                assert!(v4.contains(&addr) || v6.contains(&addr), "{addr}");
                assert!(
                    seen.insert(addr),
                    "endpoint {addr} overlaps a service address"
                );
            }
        }
    }
}
