//! The service table at each size: N service ports x `endpoints` endpoints, cluster IPs only
//! (what kube-proxy's generated layout models), every address in 198.18.0.0/15.
//!
//! `proxy_core::testing::generate::large_table` gives every endpoint its own address, which
//! cannot fit 50,000 x 10 into a /15 (131,070 addresses); here cluster IPs take 198.19.0.0/16
//! and endpoints cycle through 198.18.0.0/16, so several service ports share a pod address
//! (as pods behind several services do). Every tenth port is UDP 53, the rest TCP 80, as in
//! the generator; endpoints listen on 8080 (5353 for UDP).

use std::net::{IpAddr, Ipv4Addr};

use proxy_core::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

/// The most service ports [`table`] numbers (198.19.0.1 up to 198.19.255.254).
pub const MAX_PORTS: usize = 65_534;
/// Endpoint addresses used, cyclically: 198.18.0.1 .. 198.18.255.254.
const ENDPOINT_POOL: usize = 65_534;
/// The pod network the masquerade rules exempt (both layouts): the endpoints' /16.
pub const CLUSTER_CIDR: &str = "198.18.0.0/16";

/// The cluster IP of service port `i`.
///
/// # Panics
/// When `i` is not below [`MAX_PORTS`].
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    assert!(i < MAX_PORTS, "service port {i} beyond 198.19.0.0/16");
    let offset = u32::try_from(i + 1).expect("below MAX_PORTS");
    Ipv4Addr::from(u32::from_be_bytes([198, 19, 0, 0]) + offset)
}

/// The address of the `k`th endpoint overall (cycling through the pool).
fn endpoint_ip(k: usize) -> Ipv4Addr {
    let offset = u32::try_from(k % ENDPOINT_POOL + 1).expect("below the pool size");
    Ipv4Addr::from(u32::from_be_bytes([198, 18, 0, 0]) + offset)
}

/// The table at size `n`, deterministic.
///
/// # Panics
/// When `n` is 0 or above [`MAX_PORTS`], or `endpoints` is 0 or above 1,000 (a port's
/// endpoints must be distinct).
pub fn table(n: usize, endpoints: usize) -> ServiceTable {
    assert!(
        (1..=MAX_PORTS).contains(&n) && (1..=1_000).contains(&endpoints),
        "n={n} endpoints={endpoints}"
    );
    let mut builder = ServiceTable::builder().node(proxy_core::testing::generate::NODE);
    for i in 0..n {
        let name =
            ServicePortName::new(format!("ns-{:04}", i / 100), format!("svc-{i:06}"), "http");
        let (protocol, port, target_port) = if i % 10 == 9 {
            (Protocol::Udp, 53, 5353)
        } else {
            (Protocol::Tcp, 80, 8080)
        };
        let mut service =
            ServicePort::new(name, protocol, port).with_cluster_ip(IpAddr::V4(cluster_ip(i)));
        service.target_port = target_port;
        service.endpoints = (0..endpoints)
            .map(|j| Endpoint::new(IpAddr::V4(endpoint_ip(i * endpoints + j)), target_port))
            .collect();
        builder.upsert(service);
    }
    match builder.build() {
        Ok(table) => table,
        Err(errors) => panic!("benchmark table invalid: {errors}"),
    }
}

/// `table` with the first endpoint of its `i`-th service port (in name order) moved to another
/// address of the pool (a pod replaced by one elsewhere): the port keeps its endpoint count.
/// `r` picks the address, so that successive moves of one port differ.
///
/// # Panics
/// When the table has no `i`-th service port, or that port has no endpoint.
pub fn with_endpoint_moved(table: &ServiceTable, i: usize, r: usize) -> ServiceTable {
    let mut port = ServicePort::clone(table.iter().nth(i).expect("the i-th service port"));
    let endpoints = port.endpoints.len();
    let first = port.endpoints.first_mut().expect("an endpoint");
    // The port's own endpoints are `endpoints` consecutive addresses of the pool; one
    // further along (by less than the pool's size) is none of them.
    let own = u32::from(match first.addr {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => panic!("the benchmark table is IPv4"),
    }) - u32::from_be_bytes([198, 18, 0, 1]);
    let own = usize::try_from(own).expect("32 bits");
    first.addr = IpAddr::V4(endpoint_ip(
        own + endpoints + r % (ENDPOINT_POOL - endpoints),
    ));
    let mut builder = table.edit();
    builder.upsert(port);
    match builder.build() {
        Ok(table) => table,
        Err(errors) => panic!("benchmark table invalid: {errors}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_thousand_by_ten_fits_the_test_range() {
        let table = table(50_000, 10);
        assert_eq!(table.len(), 50_000);
        let range: ipnet::Ipv4Net = "198.18.0.0/15".parse().expect("a network");
        for port in table.iter() {
            for ip in port
                .service_ips()
                .chain(port.endpoints.iter().map(|e| e.addr))
            {
                let IpAddr::V4(v4) = ip else {
                    panic!("{ip} is not IPv4")
                };
                assert!(range.contains(&v4), "{ip} outside 198.18.0.0/15");
            }
        }
        let last = table.iter().last().expect("not empty");
        assert_eq!(
            last.cluster_ips,
            [IpAddr::V4(Ipv4Addr::new(198, 19, 195, 80))]
        );
    }

    #[test]
    fn a_port_never_repeats_an_endpoint() {
        let table = table(7_000, 10);
        for port in table.iter() {
            let distinct: std::collections::BTreeSet<_> =
                port.endpoints.iter().map(|e| e.addr).collect();
            assert_eq!(distinct.len(), 10, "{}", port.name);
        }
    }

    #[test]
    fn a_moved_endpoint_keeps_the_count_and_leaves_other_ports_alone() {
        let table = table(100, 10);
        let moved = with_endpoint_moved(&table, 7, 3);
        let diff = proxy_core::diff::diff(&table, &moved);
        assert_eq!(diff.changed.len(), 1);
        assert!(diff.added.is_empty() && diff.removed.is_empty());
        let change = &diff.changed[0];
        assert_eq!(change.current.endpoints.len(), 10);
        assert_ne!(
            change.previous.endpoints[0].addr,
            change.current.endpoints[0].addr
        );
        let distinct: std::collections::BTreeSet<_> =
            change.current.endpoints.iter().map(|e| e.addr).collect();
        assert_eq!(distinct.len(), 10, "still ten distinct endpoints");
        assert_ne!(with_endpoint_moved(&moved, 7, 4), moved);
    }
}
