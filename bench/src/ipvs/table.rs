//! The benchmark's service tables: [`large_table`]'s shape (protocols, node ports, affinity,
//! traffic policies, terminating endpoints), moved to addresses that do not collide with the
//! namespace topology, and with a last service port whose endpoints are the real servers.
//!
//! `large_table` numbers cluster IPs from 198.18.0.1 up, which are the client's and node's own
//! addresses in [`crate::netns`]. Here, for `n` service ports of `e` endpoints:
//!
//! | what                              | address                                             |
//! |-----------------------------------|-----------------------------------------------------|
//! | cluster IP of port `i`            | 198.19.0.0 + 1 + `i` (`i` < 65,000)                  |
//! | endpoint `j` of port `i` (`i < n-1`) | `k = i*e + j`: 198.18.2.0 + 1 + `k % 64,000`, port 8080 + `k / 64,000` (no traffic goes there) |
//! | endpoints of the last port        | the real servers [`crate::netns::server_addr`]`(0..e)`, port [`SERVER_PORT`] |
//!
//! The last port is TCP port [`VIP_PORT`], all endpoints ready, no affinity, cluster policy:
//! the one the latency load connects to.
//!
//! [`large_table`]: proxy_core::testing::generate::large_table

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proxy_core::table::{Protocol, ServicePort, ServiceTable, SessionAffinity, TrafficPolicy};
use proxy_core::testing::generate::large_table;

use crate::netns::server_addr;

/// The port the real servers listen on (the last service port's target port).
pub const SERVER_PORT: u16 = 8080;
/// The last service port's port on its cluster IP.
pub const VIP_PORT: u16 = 80;
/// Most service ports the address plan holds.
pub const MAX_PORTS: usize = 65_000;

const VIP_BASE: u32 = u32::from_be_bytes([198, 19, 0, 0]);
const ENDPOINT_BASE: u32 = u32::from_be_bytes([198, 18, 2, 0]);
const ENDPOINT_SLOTS: usize = 64_000;

/// Cluster IP of service port `i`.
pub fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(VIP_BASE + 1 + u32::try_from(i).expect("i < MAX_PORTS"))
}

/// Where the latency load connects: the last of `ports` service ports.
pub fn last_vip(ports: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(vip(ports.saturating_sub(1))), VIP_PORT)
}

/// An unroutable endpoint: the `k`th of the table.
fn filler_endpoint(k: usize) -> (IpAddr, u16) {
    let slot = u32::try_from(k % ENDPOINT_SLOTS).expect("below ENDPOINT_SLOTS");
    let port = SERVER_PORT + u16::try_from(k / ENDPOINT_SLOTS).unwrap_or(u16::MAX - SERVER_PORT);
    (IpAddr::V4(Ipv4Addr::from(ENDPOINT_BASE + 1 + slot)), port)
}

/// The table of `ports` service ports with `endpoints` endpoints each (see the module docs).
///
/// # Panics
/// When `ports` is 0 or above [`MAX_PORTS`], `endpoints` is 0 or above 249, or
/// `ports * endpoints` above 64,000 × 57,000 (ports would run past 65,535).
pub fn bench_table(ports: usize, endpoints: usize) -> ServiceTable {
    assert!((1..=MAX_PORTS).contains(&ports), "{ports} service ports");
    assert!(
        (1..250).contains(&endpoints),
        "{endpoints} endpoints per port"
    );
    // large_table's address plan tops out near 11,900 x 10; its shape does not depend on size,
    // so take the shape from a small table, cycling.
    let shapes = large_table(ports.min(1_000), 1);
    let shapes: Vec<_> = shapes.iter().collect();
    let mut builder = ServiceTable::builder().node(proxy_core::testing::generate::NODE);
    for i in 0..ports {
        let mut port = ServicePort::clone(shapes[i % shapes.len()]);
        port.name.name = format!("svc-{i:06}");
        port.name.namespace = format!("ns-{:04}", i / 100);
        port.cluster_ips = vec![IpAddr::V4(vip(i))];
        if i % 5 == 0 && i < 10_000 {
            port.node_port = Some(30_000 + u16::try_from(i / 5).expect("i < 10,000"));
        } else {
            port.node_port = None;
        }
        (port.external_traffic_policy, port.health_check_node_port) = if i % 10 == 5 && i < 7_000 {
            let offset = u16::try_from(i / 10).expect("i < 7,000");
            (TrafficPolicy::Local, Some(32_000 + offset))
        } else {
            (TrafficPolicy::Cluster, None)
        };
        let template = port.endpoints[0].clone();
        port.endpoints = (0..endpoints)
            .map(|j| {
                let mut endpoint = template.clone();
                let (addr, target) = filler_endpoint(i * endpoints + j);
                (endpoint.addr, endpoint.port) = (addr, target);
                endpoint.node = Some(format!("node-{}", j % 3));
                endpoint.is_local = j % 3 == 0;
                (endpoint.ready, endpoint.serving, endpoint.terminating) = if (i + j) % 20 == 19 {
                    (false, true, true)
                } else {
                    (true, true, false)
                };
                endpoint
            })
            .collect();
        if i == ports - 1 {
            make_reachable(&mut port);
        }
        builder.upsert(port);
    }
    match builder.build() {
        Ok(table) => table,
        Err(errors) => panic!("bench table is invalid: {errors}"),
    }
}

/// Turns `port` into the latency target: TCP, plain round robin over the real servers.
fn make_reachable(port: &mut ServicePort) {
    port.protocol = Protocol::Tcp;
    port.port = VIP_PORT;
    port.target_port = SERVER_PORT;
    port.session_affinity = SessionAffinity::None;
    port.external_traffic_policy = TrafficPolicy::Cluster;
    port.health_check_node_port = None;
    for (j, endpoint) in port.endpoints.iter_mut().enumerate() {
        endpoint.addr = IpAddr::V4(server_addr(u8::try_from(j).expect("below 250")));
        endpoint.port = SERVER_PORT;
        (endpoint.ready, endpoint.serving, endpoint.terminating) = (true, true, false);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::netns::{CLIENT_ADDR, NODE_CLIENT_SIDE, NODE_SERVER_SIDE};

    #[test]
    fn addresses_stay_clear_of_the_topology_and_in_the_benchmark_range() {
        let table = bench_table(10_000, 10);
        assert_eq!((table.len(), table.endpoint_count()), (10_000, 100_000));
        let range: ipnet::IpNet = "198.18.0.0/15".parse().expect("literal");
        let topology = [CLIENT_ADDR, NODE_CLIENT_SIDE, NODE_SERVER_SIDE].map(IpAddr::V4);
        let mut endpoints = HashSet::new();
        for (i, port) in table.iter().enumerate() {
            for ip in port.service_ips() {
                assert!(range.contains(&ip), "{ip}");
                assert!(!topology.contains(&ip), "VIP {ip} is a topology address");
                assert!(
                    !ip.to_string().starts_with("198.18.1."),
                    "VIP {ip} on the server /24"
                );
            }
            for endpoint in &port.endpoints {
                assert!(range.contains(&endpoint.addr), "{}", endpoint.addr);
                assert!(!topology.contains(&endpoint.addr));
                if i + 1 < table.len() {
                    assert!(
                        endpoints.insert((endpoint.addr, endpoint.port)),
                        "endpoint {}:{} twice",
                        endpoint.addr,
                        endpoint.port
                    );
                }
            }
        }
    }

    #[test]
    fn the_last_port_is_tcp_to_the_real_servers() {
        for ports in [1, 100, 1_000] {
            let table = bench_table(ports, 10);
            let last = table.iter().last().expect("non-empty");
            assert_eq!(last.protocol, Protocol::Tcp, "{ports}");
            assert_eq!(
                last.cluster_ips,
                [last_vip(ports).ip()],
                "{ports}: the load's target is the last port"
            );
            assert_eq!(last.port, last_vip(ports).port());
            let addrs: Vec<IpAddr> = last.endpoints.iter().map(|e| e.addr).collect();
            let servers: Vec<IpAddr> = (0..10).map(|n| IpAddr::V4(server_addr(n))).collect();
            assert_eq!(addrs, servers);
            assert!(last
                .endpoints
                .iter()
                .all(|e| e.ready && e.port == SERVER_PORT));
        }
    }

    #[test]
    fn the_shape_varies_like_large_table() {
        let table = bench_table(100, 10);
        let udp = table.iter().filter(|p| p.protocol == Protocol::Udp).count();
        let node_ports = table.iter().filter(|p| p.node_port.is_some()).count();
        let terminating = table
            .iter()
            .flat_map(|p| &p.endpoints)
            .filter(|e| e.terminating)
            .count();
        assert_eq!(udp, 9, "i % 10 == 9 except the last port, made TCP");
        assert_eq!(node_ports, 20);
        assert!(terminating > 0);
        assert_eq!(table, bench_table(100, 10), "deterministic");
    }
}
