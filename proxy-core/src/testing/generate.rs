//! Deterministic generators of large synthetic tables, for benchmarks and backends' scale tests,
//! and edit helpers that return a new table sharing every untouched service port by `Arc`.
//!
//! Same arguments, same table: no randomness anywhere.
//!
//! ```
//! use proxy_core::diff::diff;
//! use proxy_core::testing::generate::{large_table, with_endpoint_changed};
//!
//! let table = large_table(100, 10);
//! assert_eq!((table.len(), table.endpoint_count()), (100, 1_000));
//!
//! let edited = with_endpoint_changed(&table, 42);
//! let changes = diff(&table, &edited);
//! assert_eq!(changes.service_ports_changed(), 1);
//! assert_eq!(changes.endpoints_changed(), 1);
//! ```
//!
//! # Table shape
//!
//! Service port `i` (counting from 0) is `ns-<i/100>/svc-<i>` (zero-padded, so the table's name
//! order is `i`'s order), port name `http`, with one IPv4 cluster IP and `endpoints_per_port`
//! endpoints. The table is made for node `node-0`. Deterministic variety, by `i`:
//!
//! | rule                          | what                                                       |
//! |-------------------------------|------------------------------------------------------------|
//! | `i % 10 == 9`                 | UDP port 53 → 5353; otherwise TCP port 80 → 8080            |
//! | `i % 5 == 0`, `i < 10_000`    | node port `30000 + i/5` (30000-31999)                       |
//! | `i % 10 == 5`, `i < 7_000`    | external policy `Local`, health-check node port `32000 + i/10` |
//! | `i % 7 == 3`                  | client-IP session affinity, 10,800 s                        |
//!
//! Endpoint `j` of port `i` runs on node `node-<j % 3>` (local when `j % 3 == 0`), in zone
//! `zone-<j % 2>`, and is ready, except when `(i + j) % 20 == 19`: then serving and terminating.
//!
//! # Address plan
//!
//! All addresses are distinct and inside 198.18.0.0/15 (131,072 addresses), numbered by their
//! offset `k` from 198.18.0.0 (offset 0, 198.18.0.0, is never used):
//!
//! | offsets                                  | what                                      |
//! |------------------------------------------|-------------------------------------------|
//! | `1 + i`                                  | cluster IP of service port `i`            |
//! | `1 + n + i * e + j`                      | endpoint `j` of port `i` (`n` ports, `e` endpoints each) |
//! | from 131,070 (198.19.255.254) downwards  | free addresses taken by [`with_service_added`] |
//!
//! So `1 + n * (1 + e)` must stay below 131,071: 10,000 ports × 10 endpoints use offsets 1 to
//! 110,000 (198.18.0.1 to 198.19.173.112).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::table::{
    Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable, SessionAffinity, TableBuilder,
    TrafficPolicy,
};

/// 198.18.0.0, the base of the address plan.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Offsets `1..LIMIT` are usable: 198.19.255.255 is left out.
const LIMIT: u32 = 131_071;
/// The node the generated tables are made for.
pub const NODE: &str = "node-0";
/// Namespace of the services [`with_service_added`] adds.
pub const ADDED_NAMESPACE: &str = "added";

fn addr(offset: u32) -> IpAddr {
    debug_assert!(
        offset > 0 && offset < LIMIT,
        "offset {offset} outside 198.18.0.0/15"
    );
    IpAddr::V4(Ipv4Addr::from(BASE + offset))
}

fn offset_u32(value: usize) -> u32 {
    u32::try_from(value).expect("checked against LIMIT by large_table")
}

/// A table of `service_ports` service ports with `endpoints_per_port` endpoints each, shaped as
/// described in the [module docs](self). 10,000 × 10 (100,000 endpoints) fits.
///
/// ```
/// use proxy_core::testing::generate::large_table;
///
/// let table = large_table(3, 2);
/// let names: Vec<String> = table.iter().map(|p| p.name.to_string()).collect();
/// assert_eq!(names, ["ns-0000/svc-000000:http", "ns-0000/svc-000001:http", "ns-0000/svc-000002:http"]);
/// let first = table.iter().next().unwrap();
/// assert_eq!(first.cluster_ips, ["198.18.0.1".parse::<std::net::IpAddr>().unwrap()]);
/// assert_eq!(first.endpoints[0].addr, "198.18.0.4".parse::<std::net::IpAddr>().unwrap());
/// assert_eq!(table, large_table(3, 2), "deterministic");
/// ```
///
/// # Panics
/// When the addresses do not fit 198.18.0.0/15: `1 + service_ports * (1 + endpoints_per_port)`
/// must be below 131,071.
pub fn large_table(service_ports: usize, endpoints_per_port: usize) -> ServiceTable {
    let needed = endpoints_per_port
        .checked_add(1)
        .and_then(|per_port| per_port.checked_mul(service_ports))
        .and_then(|total| total.checked_add(1));
    assert!(
        needed.is_some_and(|needed| needed < LIMIT as usize),
        "{service_ports} service ports x {endpoints_per_port} endpoints do not fit 198.18.0.0/15"
    );
    let mut builder = ServiceTable::builder().node(NODE);
    for i in 0..service_ports {
        let endpoints = (0..endpoints_per_port).map(|j| {
            let offset = 1 + service_ports + i * endpoints_per_port + j;
            generated_endpoint(i, j, addr(offset_u32(offset)))
        });
        builder.upsert(generated_port(i, addr(offset_u32(1 + i)), endpoints));
    }
    build(builder)
}

fn generated_port(
    i: usize,
    cluster_ip: IpAddr,
    endpoints: impl Iterator<Item = Endpoint>,
) -> ServicePort {
    let name = ServicePortName::new(format!("ns-{:04}", i / 100), format!("svc-{i:06}"), "http");
    let (protocol, port, target_port) = if i % 10 == 9 {
        (Protocol::Udp, 53, 5353)
    } else {
        (Protocol::Tcp, 80, 8080)
    };
    let mut port = ServicePort::new(name, protocol, port).with_cluster_ip(cluster_ip);
    port.target_port = target_port;
    if i % 5 == 0 && i < 10_000 {
        port.node_port = Some(30_000 + small(i / 5));
    }
    if i % 10 == 5 && i < 7_000 {
        port.external_traffic_policy = TrafficPolicy::Local;
        port.health_check_node_port = Some(32_000 + small(i / 10));
    }
    if i % 7 == 3 {
        port.session_affinity = SessionAffinity::ClientIp {
            timeout: SessionAffinity::DEFAULT_TIMEOUT,
        };
    }
    port.endpoints = endpoints
        .map(|mut endpoint| {
            endpoint.port = target_port;
            endpoint
        })
        .collect();
    port
}

fn small(value: usize) -> u16 {
    u16::try_from(value).expect("bounded by the shape's rules")
}

fn generated_endpoint(i: usize, j: usize, addr: IpAddr) -> Endpoint {
    let mut endpoint = Endpoint::new(addr, 8080);
    endpoint.node = Some(format!("node-{}", j % 3));
    endpoint.is_local = j % 3 == 0;
    endpoint.zone = Some(format!("zone-{}", j % 2));
    if (i + j) % 20 == 19 {
        endpoint.ready = false;
        endpoint.terminating = true;
    }
    endpoint
}

fn build(builder: TableBuilder) -> ServiceTable {
    match builder.build() {
        Ok(table) => table,
        // A bug in this module, not in the code under test: say which rule the plan broke.
        Err(errors) => panic!("generator produced an invalid table: {errors}"),
    }
}

fn nth_port(table: &ServiceTable, i: usize) -> &Arc<ServicePort> {
    match table.iter().nth(i) {
        Some(port) => port,
        None => panic!("no service port {i} in a table of {}", table.len()),
    }
}

/// `table` with the first endpoint of its `i`-th service port (in name order) flipped between
/// ready and serving-and-terminating: one endpoint change. Every other service port stays shared
/// by `Arc` with `table`.
///
/// ```
/// use std::sync::Arc;
/// use proxy_core::testing::generate::{large_table, with_endpoint_changed};
///
/// let table = large_table(10, 3);
/// let edited = with_endpoint_changed(&table, 4);
/// let (before, after) = (table.iter().nth(4).unwrap(), edited.iter().nth(4).unwrap());
/// assert_ne!(before.endpoints[0].ready, after.endpoints[0].ready);
/// assert!(Arc::ptr_eq(table.iter().nth(5).unwrap(), edited.iter().nth(5).unwrap()));
/// assert_eq!(with_endpoint_changed(&edited, 4), table, "flipping twice restores it");
/// ```
///
/// # Panics
/// When the table has no `i`-th service port, or that port has no endpoint.
pub fn with_endpoint_changed(table: &ServiceTable, i: usize) -> ServiceTable {
    let mut port = ServicePort::clone(nth_port(table, i));
    let Some(endpoint) = port.endpoints.first_mut() else {
        panic!("service port {} has no endpoint to change", port.name);
    };
    if endpoint.ready {
        (endpoint.ready, endpoint.serving, endpoint.terminating) = (false, true, true);
    } else {
        (endpoint.ready, endpoint.serving, endpoint.terminating) = (true, true, false);
    }
    build(table.edit().insert(port))
}

/// `table` with its `i`-th service port (in name order) removed; every other one stays shared.
///
/// ```
/// use proxy_core::testing::generate::{large_table, with_service_removed};
///
/// let table = large_table(10, 3);
/// let smaller = with_service_removed(&table, 0);
/// assert_eq!((smaller.len(), smaller.endpoint_count()), (9, 27));
/// ```
///
/// # Panics
/// When the table has no `i`-th service port.
pub fn with_service_removed(table: &ServiceTable, i: usize) -> ServiceTable {
    let name = nth_port(table, i).name.clone();
    let mut builder = table.edit();
    builder.remove(&name);
    build(builder)
}

/// `table` with one more service port, `added/svc-<n>:http` for the smallest free `n`: TCP port
/// 80 → 8080, as many endpoints as the table's first service port has (at least one), on
/// addresses no service port of `table` uses (taken from the top of 198.18.0.0/15 downwards).
/// Every existing service port stays shared.
///
/// ```
/// use proxy_core::testing::generate::{large_table, with_service_added};
///
/// let table = large_table(10, 3);
/// let bigger = with_service_added(&with_service_added(&table));
/// assert_eq!((bigger.len(), bigger.endpoint_count()), (12, 36));
/// let added = bigger.iter().next().unwrap();
/// assert_eq!(added.name.to_string(), "added/svc-000000:http");
/// assert_eq!(added.cluster_ips, ["198.19.255.254".parse::<std::net::IpAddr>().unwrap()]);
/// ```
///
/// Cost: one pass over every address of `table`.
///
/// # Panics
/// When 198.18.0.0/15 has no free address left.
pub fn with_service_added(table: &ServiceTable) -> ServiceTable {
    let used: HashSet<IpAddr> = table
        .iter()
        .flat_map(|port| {
            port.service_ips()
                .chain(port.endpoints.iter().map(|endpoint| endpoint.addr))
        })
        .collect();
    let mut free = (1..LIMIT).rev().map(addr).filter(|ip| !used.contains(ip));
    let mut next_free = || match free.next() {
        Some(ip) => ip,
        None => panic!("198.18.0.0/15 is full"),
    };
    let name = (0..)
        .map(|n| ServicePortName::new(ADDED_NAMESPACE, format!("svc-{n:06}"), "http"))
        .find(|name| table.get(name).is_none())
        .expect("an unbounded range has a free name");
    let endpoint_count = table.iter().next().map_or(1, |p| p.endpoints.len().max(1));
    let cluster_ip = next_free();
    let mut port = ServicePort::new(name, Protocol::Tcp, 80).with_cluster_ip(cluster_ip);
    port.target_port = 8080;
    for _ in 0..endpoint_count {
        port.endpoints.push(Endpoint::new(next_free(), 8080));
    }
    build(table.edit().insert(port))
}

/// A table equal to `table` that shares no `Arc` with it, as if parsed afresh from a file: the
/// worst case for [`crate::diff::diff`], which must then compare every entry deeply.
///
/// ```
/// use std::sync::Arc;
/// use proxy_core::testing::generate::{deep_copy, large_table};
///
/// let table = large_table(5, 2);
/// let copy = deep_copy(&table);
/// assert_eq!(copy, table);
/// assert!(table.iter().zip(copy.iter()).all(|(a, b)| !Arc::ptr_eq(a, b)));
/// ```
pub fn deep_copy(table: &ServiceTable) -> ServiceTable {
    let mut builder = ServiceTable::builder();
    builder.set_node(table.node().map(str::to_owned));
    builder.set_zone(table.zone().map(str::to_owned));
    for port in table.iter() {
        builder.upsert(ServicePort::clone(port));
    }
    build(builder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::diff;

    #[test]
    fn large_table_addresses_are_distinct_and_in_range() {
        let table = large_table(2_000, 10);
        let range: ipnet::IpNet = "198.18.0.0/15".parse().expect("literal network");
        let mut seen = HashSet::new();
        for port in table.iter() {
            for ip in port
                .service_ips()
                .chain(port.endpoints.iter().map(|e| e.addr))
            {
                assert!(range.contains(&ip), "{ip} outside 198.18.0.0/15");
                assert!(seen.insert(ip), "{ip} used twice");
            }
        }
        assert_eq!(seen.len(), 2_000 * 11);
    }

    #[test]
    fn generated_and_edited_tables_pass_validation() {
        // `build` panics on a table that validation rejects.
        let table = large_table(10_000, 2);
        let edited = with_service_added(&with_endpoint_changed(&table, 9_999));
        assert_eq!(edited.len(), 10_001);
    }

    #[test]
    fn largest_planned_table_fits() {
        // 11,915 × 10 + 11,915 + 1 = 131,066 < 131,071.
        let table = large_table(11_915, 10);
        assert_eq!(table.endpoint_count(), 119_150);
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn too_large_a_table_panics() {
        large_table(13_108, 9);
    }

    #[test]
    fn name_order_is_generation_order() {
        let table = large_table(250, 1);
        let indices: Vec<usize> = table
            .iter()
            .map(|p| p.name.name["svc-".len()..].parse().expect("svc-<i>"))
            .collect();
        assert_eq!(indices, (0..250).collect::<Vec<_>>());
    }

    #[test]
    fn edits_change_exactly_what_they_say() {
        let table = large_table(50, 4);
        let removed = with_service_removed(&table, 7);
        let changes = diff(&table, &removed);
        assert_eq!(changes.removed.len(), 1);
        assert_eq!(changes.removed[0].name.name, "svc-000007");
        assert_eq!(changes.service_ports_changed(), 1);

        let added = with_service_added(&removed);
        let changes = diff(&removed, &added);
        assert_eq!(changes.added.len(), 1);
        assert_eq!(changes.added[0].endpoints.len(), 4);
        assert_eq!(changes.service_ports_changed(), 1);
    }
}

/// A table file's text, written out in full as a generator or an operator writes it (one entry
/// per service, one port each, no anchors), for tables too large for [`large_table`]'s unique
/// addresses: `services` cluster IPs (198.19.0.0/16, then 198.18.128.0/17 past 65,536) and
/// `endpoints` per service drawn from 198.18.0.0/17, reused across services. YAML, or JSON when
/// `json` is set; both parse to the same table.
///
/// ```
/// use proxy_core::file::parse_table;
/// use proxy_core::testing::generate::table_file_text;
///
/// let yaml = parse_table(&table_file_text(300, 3, false), "t.yaml").unwrap();
/// let json = parse_table(&table_file_text(300, 3, true), "t.json").unwrap();
/// assert_eq!(yaml, json);
/// assert_eq!((yaml.len(), yaml.endpoint_count()), (300, 900));
/// ```
pub fn table_file_text(services: u32, endpoints: u32, json: bool) -> String {
    if json {
        let services: Vec<serde_json::Value> = (0..services)
            .map(|i| {
                let eps: Vec<serde_json::Value> = (0..endpoints)
                    .map(|j| {
                        serde_json::json!({
                            "ip": file_endpoint_ip(i, j, endpoints),
                            "node": format!("node-{}", j % 3),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": format!("ns-{}/svc-{i}", i % 100),
                    "cluster_ips": [file_cluster_ip(i)],
                    "ports": [{"name": "http", "port": 80, "target_port": 8080}],
                    "endpoints": eps,
                })
            })
            .collect();
        return serde_json::json!({"node": "node-0", "services": services}).to_string();
    }
    let mut text = String::with_capacity(services as usize * (120 + 45 * endpoints as usize));
    text.push_str("node: node-0\nservices:\n");
    for i in 0..services {
        text.push_str(&format!(
            "  - name: ns-{}/svc-{i}\n    cluster_ips: [{}]\n    ports: [{{name: http, port: 80, target_port: 8080}}]\n    endpoints:\n",
            i % 100,
            file_cluster_ip(i)
        ));
        for j in 0..endpoints {
            text.push_str(&format!(
                "      - {{ip: {}, node: node-{}}}\n",
                file_endpoint_ip(i, j, endpoints),
                j % 3
            ));
        }
    }
    text
}

/// The `i`-th service's cluster IP in [`table_file_text`]'s tables (unique up to 98,304).
pub fn file_cluster_ip(i: u32) -> IpAddr {
    let [_, hi_extra, hi, lo] = i.to_be_bytes();
    if hi_extra == 0 {
        Ipv4Addr::new(198, 19, hi, lo).into()
    } else {
        Ipv4Addr::new(198, 18, 128 + (hi & 0x7f), lo).into()
    }
}

fn file_endpoint_ip(service: u32, endpoint: u32, per_service: u32) -> IpAddr {
    let [_, _, hi, lo] = ((service * per_service + endpoint) % 32_768).to_be_bytes();
    Ipv4Addr::new(198, 18, hi, lo).into()
}

#[cfg(test)]
mod file_text_tests {
    use super::*;

    #[test]
    fn file_cluster_ips_stay_unique_and_in_the_benchmarking_range_past_65536() {
        let ips: HashSet<IpAddr> = (0..70_000).map(file_cluster_ip).collect();
        assert_eq!(ips.len(), 70_000);
        let range: ipnet::IpNet = "198.18.0.0/15".parse().expect("range");
        assert!(ips.iter().all(|ip| range.contains(ip)));
    }
}
