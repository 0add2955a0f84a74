//! The IPVS dataplane on a real kernel, with real TCP and UDP: a client, a node and a server
//! network namespace joined by veth pairs, the dataplane programming the node.
//!
//! ```text
//!  client ns                 node ns (the test's own)                    server ns
//!  eth0 198.18.2.10/24 ── n-cli 198.18.2.1    svcp-ipvs0 (VIPs)  n-srv 198.18.1.1 ── eth0 198.18.1.10, .11
//!       2001:db8:2::10/64    2001:db8:2::1    IPVS, ipsets,            2001:db8:1::1     2001:db8:1::10, ::11
//!                                             iptables-legacy
//! ```
//!
//! Needs root, IPVS, ipset and iptables: run through `scripts/vm-test`, which boots a VM with
//! them. Each test runs in a namespace of its own (testkit's `in_new_netns`), the node, which
//! goes with the test's thread; the client and server namespaces are testkit `Netns` guards,
//! deleted on drop.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use backend_ipvs::{IptablesVariant, IpvsConfig, IpvsDataplane, IpvsOps, NetlinkIpvs};
use backend_ipvs::{RealServer, Scheduler as KernelScheduler, ServiceKey, VirtualServer};
use ipnet::IpNet;
use proxy_core::dataplane::{SyncMode, SyncReport, SyncRequest};
use proxy_core::diff::diff;
use proxy_core::table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TrafficPolicy,
};

use support::{
    ip, parse_greeting, sa, socket_from, tcp_hello, tcp_spread, udp_spread, Servers, Topology,
    NEEDS_VM, TIMEOUT,
};
use testkit::netns::in_new_netns;
use testkit::process::run;
use testkit::wait::eventually;

// === the dataplane ===

fn config() -> IpvsConfig {
    IpvsConfig {
        node_addresses: vec![ip("198.18.2.1"), ip("2001:db8:2::1")],
        cluster_cidrs: vec!["198.18.1.0/24".parse::<IpNet>().expect("cidr")],
        iptables: IptablesVariant::Legacy,
        graceful_termination: Duration::from_secs(30),
        ..IpvsConfig::default()
    }
}

fn dataplane() -> IpvsDataplane {
    IpvsDataplane::new(config()).unwrap_or_else(|e| panic!("{e:?}: {NEEDS_VM}"))
}

fn port(name: &str, proto: Protocol, vip: &str, port: u16, endpoints: &[&str]) -> ServicePort {
    let mut p = ServicePort::new(ServicePortName::new("default", name, "p"), proto, port)
        .with_cluster_ip(ip(vip));
    p.endpoints = endpoints
        .iter()
        .map(|e| {
            let e = sa(e);
            Endpoint::new(e.ip(), e.port())
        })
        .collect();
    p
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for p in ports {
        builder = builder.insert(p);
    }
    builder.build().expect("valid test table")
}

fn sync(dp: &IpvsDataplane, from: &ServiceTable, to: &ServiceTable, mode: SyncMode) -> SyncReport {
    let changes = diff(from, to);
    let report = dp
        .sync_at(
            &SyncRequest {
                desired: to,
                changes: &changes,
                mode,
            },
            Instant::now(),
        )
        .unwrap_or_else(|e| panic!("sync: {e:?}"));
    assert!(report.is_complete(), "{report}");
    report
}

/// How many UDP conntrack entries of this namespace go to `vip` and are answered by
/// `real_server`.
fn tracked_udp_flows(vip: &str, real_server: std::net::IpAddr) -> usize {
    use nf_conntrack::{ConntrackOps, Family, Netlink, IPPROTO_UDP};
    let vip = sa(vip);
    Netlink
        .dump(Family::of(vip.ip()))
        .unwrap_or_else(|e| panic!("conntrack dump: {e}"))
        .iter()
        .filter(|e| {
            e.proto == IPPROTO_UDP
                && e.dst == vip.ip()
                && e.dport == vip.port()
                && e.reply_src == real_server
        })
        .count()
}

const EP_A: &str = "198.18.1.10:8080";
const EP_B: &str = "198.18.1.11:8080";

// === the tests ===

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_tcp_and_udp_through_a_cluster_ip_reach_both_endpoints() {
    in_new_netns(|| {
        let topo = Topology::new("spread");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let t = table(vec![
            port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A, EP_B]),
            port("dns", Protocol::Udp, "198.19.0.10", 53, &[EP_A, EP_B]),
        ]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        let tcp = tcp_spread(&topo, "198.19.0.10:80", 10);
        assert_eq!(
            tcp,
            BTreeMap::from([(sa(EP_A), 5), (sa(EP_B), 5)]),
            "rr over TCP"
        );
        let udp = udp_spread(&topo, "198.19.0.10:53", 10);
        assert_eq!(
            udp,
            BTreeMap::from([(sa(EP_A), 5), (sa(EP_B), 5)]),
            "rr over UDP"
        );
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_weighted_round_robin_splits_by_weight() {
    in_new_netns(|| {
        let topo = Topology::new("wrr");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let mut p = port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A, EP_B]);
        p.scheduler = Some(Scheduler::WeightedRoundRobin);
        p.endpoints[0].weight = 3;
        sync(&dp, &ServiceTable::empty(), &table(vec![p]), SyncMode::Full);
        let tcp = tcp_spread(&topo, "198.19.0.10:80", 12);
        assert_eq!(tcp, BTreeMap::from([(sa(EP_A), 9), (sa(EP_B), 3)]));
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_client_ip_affinity_sticks_to_one_endpoint() {
    in_new_netns(|| {
        let topo = Topology::new("sticky");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let mut p = port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A, EP_B]);
        p.session_affinity = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(60),
        };
        sync(&dp, &ServiceTable::empty(), &table(vec![p]), SyncMode::Full);
        let tcp = tcp_spread(&topo, "198.19.0.10:80", 8);
        assert_eq!(tcp.len(), 1, "one client, one endpoint: {tcp:?}");
        assert_eq!(tcp.values().sum::<usize>(), 8);
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_graceful_termination_keeps_an_open_connection_then_deletes() {
    in_new_netns(|| {
        let topo = Topology::new("drain");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let both = table(vec![port(
            "web",
            Protocol::Tcp,
            "198.19.0.10",
            80,
            &[EP_A, EP_B],
        )]);
        let only_a = table(vec![port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A])]);
        sync(&dp, &ServiceTable::empty(), &both, SyncMode::Full);

        // Open connections until one lands on B, and keep it.
        let vip = sa("198.19.0.10:80");
        let (to_b_tx, to_b_rx) = std::sync::mpsc::channel::<()>();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let client = topo.client.spawn(move || {
            let mut held = None;
            for _ in 0..4 {
                let conn = TcpStream::connect_timeout(&vip, TIMEOUT).expect("connect");
                conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("greeting");
                if parse_greeting(&line).0 == sa(EP_B) {
                    held = Some((conn, reader));
                    break;
                }
            }
            let (mut conn, mut reader) = held.expect("a connection to B");
            opened_tx.send(()).expect("signal");
            to_b_rx.recv().expect("wait");
            conn.write_all(b"still there\n")
                .expect("write on the draining connection");
            let mut echo = String::new();
            reader.read_line(&mut echo).expect("echo");
            echo
        });
        opened_rx
            .recv_timeout(TIMEOUT)
            .expect("connection to B open");

        sync(&dp, &both, &only_a, SyncMode::Partial);
        let key = ServiceKey {
            addr: ip("198.19.0.10"),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let ipvs = NetlinkIpvs::connect().expect("ipvs");
        let b = ipvs
            .real_servers(&key)
            .expect("dump")
            .into_iter()
            .find(|rs| rs.socket_addr() == sa(EP_B))
            .expect("B is still there, draining");
        assert_eq!(b.weight, 0, "{b:?}");
        assert_eq!(b.conns.map(|c| c.active), Some(1), "{b:?}");
        assert_eq!(dp.draining().len(), 1);
        // New connections all go to A now.
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 4),
            BTreeMap::from([(sa(EP_A), 4)])
        );
        // The open connection still works.
        to_b_tx.send(()).expect("signal");
        let echo = client
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_eq!(echo, "still there\n");

        // Closed (the client thread ended): the next sync deletes B.
        eventually("B deleted", TIMEOUT, Duration::from_millis(100), || {
            sync(&dp, &only_a, &only_a, SyncMode::Partial);
            let left: Vec<SocketAddr> = ipvs
                .real_servers(&key)
                .expect("dump")
                .iter()
                .map(RealServer::socket_addr)
                .collect();
            if left == [sa(EP_A)] {
                Ok(())
            } else {
                Err(left)
            }
        });
        assert!(dp.draining().is_empty());
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_full_sync_restores_a_virtual_server_deleted_by_hand() {
    in_new_netns(|| {
        let topo = Topology::new("drift");
        let _servers = Servers::start(&topo, &[EP_A]);
        let dp = dataplane();
        let t = table(vec![port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A])]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        let key = ServiceKey {
            addr: ip("198.19.0.10"),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let ipvs = NetlinkIpvs::connect().expect("ipvs");
        ipvs.delete_virtual_server(&key).expect("delete by hand");
        let vip = sa("198.19.0.10:80");
        let refused = topo.client(move || tcp_hello(vip).is_err());
        assert!(refused, "gone by hand: no service");
        sync(&dp, &t, &t, SyncMode::Full);
        let restored = ipvs.real_servers(&key).expect("dump");
        assert_eq!(
            restored
                .iter()
                .map(RealServer::socket_addr)
                .collect::<Vec<_>>(),
            [sa(EP_A)],
            "the full sync put the virtual server and its real server back"
        );
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 2),
            BTreeMap::from([(sa(EP_A), 2)])
        );
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_foreign_virtual_server_survives_sync_and_cleanup_which_removes_all_of_ours() {
    in_new_netns(|| {
        let _topo = Topology::new("owner");
        let ipvs = NetlinkIpvs::connect().expect("ipvs");
        let foreign = VirtualServer::new(
            ip("198.18.2.1"),
            Protocol::Tcp,
            9999,
            KernelScheduler::Maglev,
        );
        ipvs.add_virtual_server(&foreign).expect("foreign add");
        ipvs.add_real_server(&foreign.key(), &RealServer::new(ip("198.18.1.10"), 80, 5))
            .expect("foreign rs");

        let dp = dataplane();
        let mut web = port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A]);
        web.node_port = Some(30080);
        let t = table(vec![
            web,
            port(
                "dns",
                Protocol::Udp,
                "2001:db8:19::53",
                53,
                &["[2001:db8:1::10]:53"],
            ),
        ]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        sync(&dp, &t, &t, SyncMode::Full);
        let all = ipvs.virtual_servers().expect("dump");
        assert_eq!(
            all.len(),
            1 + 2 + 1,
            "foreign + web (cluster IP, IPv4 node port) + dns: {all:?}"
        );
        assert!(run("ipset", &["list", "-n"]).contains("SVCP-IPVS-CLUSTER-IP"));
        assert!(run("iptables-legacy-save", &["-t", "nat"]).contains("-j SVCP-IPVS-SERVICES"));

        let report = dp.cleanup_now().expect("cleanup");
        assert!(report.objects_removed >= 5, "{report:?}");
        assert_eq!(ipvs.virtual_servers().expect("dump"), vec![foreign.clone()]);
        assert_eq!(ipvs.real_servers(&foreign.key()).expect("dump").len(), 1);
        let links = run("ip", &["-o", "link", "show"]);
        assert!(!links.contains("svcp-ipvs0"), "{links}");
        let sets = run("ipset", &["list", "-n"]);
        assert!(!sets.contains("SVCP"), "{sets}");
        for save in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            let rules = run(save, &[]);
            assert!(!rules.contains("SVCP"), "{save}: {rules}");
        }
        // A second cleanup finds nothing of ours and fails on nothing.
        dp.cleanup_now().expect("second cleanup");
        assert_eq!(ipvs.virtual_servers().expect("dump"), vec![foreign]);
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_ipv6_cluster_ip_over_tcp_and_udp() {
    in_new_netns(|| {
        let topo = Topology::new("ipv6");
        let a = "[2001:db8:1::10]:8080";
        let b = "[2001:db8:1::11]:8080";
        let _servers = Servers::start(&topo, &[a, b]);
        let dp = dataplane();
        let t = table(vec![
            port("web6", Protocol::Tcp, "2001:db8:19::10", 80, &[a, b]),
            port("dns6", Protocol::Udp, "2001:db8:19::10", 53, &[a, b]),
        ]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        let addrs = run("ip", &["-6", "-o", "addr", "show", "dev", "svcp-ipvs0"]);
        assert!(addrs.contains("2001:db8:19::10/128"), "{addrs}");
        assert!(!addrs.contains("tentative"), "nodad: {addrs}");
        let tcp = tcp_spread(&topo, "[2001:db8:19::10]:80", 4);
        assert_eq!(tcp, BTreeMap::from([(sa(a), 2), (sa(b), 2)]));
        let udp = udp_spread(&topo, "[2001:db8:19::10]:53", 4);
        assert_eq!(udp, BTreeMap::from([(sa(a), 2), (sa(b), 2)]));
        // The VIP goes with its service.
        sync(&dp, &t, &ServiceTable::empty(), SyncMode::Full);
        let addrs = run("ip", &["-6", "-o", "addr", "show", "dev", "svcp-ipvs0"]);
        assert!(!addrs.contains("2001:db8:19::10"), "{addrs}");
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_node_ports_masquerade_unless_local_and_empty_services_refuse() {
    in_new_netns(|| {
        let topo = Topology::new("nodeport");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let mut cluster = port("np", Protocol::Tcp, "198.19.0.20", 80, &[EP_A]);
        cluster.node_port = Some(30080);
        let mut local = port("local", Protocol::Tcp, "198.19.0.21", 80, &[EP_B]);
        local.node_port = Some(30081);
        local.external_traffic_policy = TrafficPolicy::Local;
        local.endpoints[0].is_local = true;
        let empty = port("empty", Protocol::Tcp, "198.19.0.30", 80, &[]);
        sync(
            &dp,
            &ServiceTable::empty(),
            &table(vec![cluster, local, empty]),
            SyncMode::Full,
        );

        let (server, peer) = topo
            .client(|| tcp_hello(sa("198.18.2.1:30080")))
            .expect("node port");
        assert_eq!(server, sa(EP_A));
        assert_eq!(
            peer.ip(),
            ip("198.18.1.1"),
            "eTP=Cluster node port: masqueraded"
        );
        let (server, peer) = topo
            .client(|| tcp_hello(sa("198.18.2.1:30081")))
            .expect("local node port");
        assert_eq!(server, sa(EP_B));
        assert_eq!(
            peer.ip(),
            ip("198.18.2.10"),
            "eTP=Local: client address kept"
        );
        let (_, peer) = topo
            .client(|| tcp_hello(sa("198.19.0.20:80")))
            .expect("cluster IP");
        assert_eq!(
            peer.ip(),
            ip("198.18.1.1"),
            "a client outside the cluster CIDR reaching a cluster IP is masqueraded"
        );
        let err = topo
            .client(|| tcp_hello(sa("198.19.0.30:80")))
            .expect_err("no endpoints");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_removed_udp_endpoint_goes_at_once_and_its_flow_moves_on() {
    in_new_netns(|| {
        let topo = Topology::new("udpgone");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let both = table(vec![port(
            "dns",
            Protocol::Udp,
            "198.19.0.53",
            53,
            &[EP_A, EP_B],
        )]);
        sync(&dp, &ServiceTable::empty(), &both, SyncMode::Full);

        // One client socket (one flow) throughout.
        let vip = sa("198.19.0.53:53");
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let client = topo.client.spawn(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind client");
            let ask = |timeout| -> Option<SocketAddr> {
                socket.set_read_timeout(Some(timeout)).expect("timeout");
                socket.send_to(b"hello", vip).expect("send");
                let mut buf = [0u8; 512];
                let (len, _) = socket.recv_from(&mut buf).ok()?;
                Some(parse_greeting(&String::from_utf8_lossy(&buf[..len])).0)
            };
            let first = ask(TIMEOUT).expect("first answer");
            assert_eq!(ask(TIMEOUT), Some(first), "one flow, one real server");
            first_tx.send(first).expect("send first");
            go_rx.recv().expect("wait for the sync");
            // The first datagram after the delete may be dropped while IPVS expires the flow.
            (0..5).find_map(|_| ask(Duration::from_millis(500)))
        });
        let first = first_rx.recv_timeout(TIMEOUT).expect("first answer");
        let other = if first == sa(EP_A) { EP_B } else { EP_A };
        assert_eq!(
            tracked_udp_flows("198.19.0.53:53", first.ip()),
            1,
            "the flow is tracked, answered by {first}"
        );
        let remaining = table(vec![port(
            "dns",
            Protocol::Udp,
            "198.19.0.53",
            53,
            &[other],
        )]);
        sync(&dp, &both, &remaining, SyncMode::Partial);
        assert!(dp.draining().is_empty(), "UDP real servers do not drain");
        let key = ServiceKey {
            addr: ip("198.19.0.53"),
            protocol: Protocol::Udp,
            port: 53,
        };
        let left: Vec<SocketAddr> = NetlinkIpvs::connect()
            .expect("ipvs")
            .real_servers(&key)
            .expect("dump")
            .iter()
            .map(RealServer::socket_addr)
            .collect();
        assert_eq!(left, [sa(other)]);
        assert_eq!(dp.wait_for_flow_cleanup(), None);
        assert_eq!(
            tracked_udp_flows("198.19.0.53:53", first.ip()),
            0,
            "the sync deleted the flow's conntrack entry (over ctnetlink)"
        );
        go_tx.send(()).expect("signal");
        let after = client
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_eq!(
            after,
            Some(sa(other)),
            "the flow moved to the remaining endpoint"
        );
    });
}

/// Kernels since 5.9 also drop the conntrack entries of a deleted real server's connections
/// themselves when `expire_nodest_conn` is set (a delayed work in `net/netfilter/ipvs/
/// ip_vs_conn.c`), so this test turns that sysctl off to see our own ctnetlink deletion alone.
#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_removed_udp_real_server_loses_its_conntrack_entries_over_ctnetlink() {
    in_new_netns(|| {
        let topo = Topology::new("udpct");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let both = table(vec![port(
            "dns",
            Protocol::Udp,
            "198.19.0.53",
            53,
            &[EP_A, EP_B],
        )]);
        sync(&dp, &ServiceTable::empty(), &both, SyncMode::Full);
        // Only full syncs set the sysctls; the partial sync below leaves this.
        std::fs::write("/proc/sys/net/ipv4/vs/expire_nodest_conn", "0")
            .expect("expire_nodest_conn");

        let vip = sa("198.19.0.53:53");
        let first = topo.client(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind client");
            socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            socket.send_to(b"hello", vip).expect("send");
            let mut buf = [0u8; 512];
            let (len, _) = socket.recv_from(&mut buf).expect("first answer");
            parse_greeting(&String::from_utf8_lossy(&buf[..len])).0
        });
        let other = if first == sa(EP_A) { EP_B } else { EP_A };
        assert_eq!(
            tracked_udp_flows("198.19.0.53:53", first.ip()),
            1,
            "tracked"
        );

        let remaining = table(vec![port(
            "dns",
            Protocol::Udp,
            "198.19.0.53",
            53,
            &[other],
        )]);
        sync(&dp, &both, &remaining, SyncMode::Partial);
        // The deletion runs off the sync's path: wait for it.
        assert_eq!(dp.wait_for_flow_cleanup(), None);
        assert_eq!(
            tracked_udp_flows("198.19.0.53:53", first.ip()),
            0,
            "the sync deleted the entry answered by the removed {first}"
        );
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_load_balancer_source_ranges_and_local_policy_without_local_endpoints_drop() {
    in_new_netns(|| {
        let topo = Topology::new("ranges");
        let _servers = Servers::start(&topo, &[EP_A]);
        let dp = dataplane();
        let mut allowed = port("allowed", Protocol::Tcp, "198.19.0.40", 80, &[EP_A]);
        allowed.load_balancer_ips = vec![ip("198.19.5.1")];
        allowed.load_balancer_source_ranges = vec!["198.18.2.0/24".parse().expect("net")];
        let mut denied = port("denied", Protocol::Tcp, "198.19.0.41", 80, &[EP_A]);
        denied.load_balancer_ips = vec![ip("198.19.5.2")];
        denied.load_balancer_source_ranges = vec!["198.18.3.0/24".parse().expect("net")];
        let mut remote = port("remote", Protocol::Tcp, "198.19.0.42", 80, &[EP_A]);
        remote.external_ips = vec![ip("198.19.6.1")];
        remote.external_traffic_policy = TrafficPolicy::Local;
        sync(
            &dp,
            &ServiceTable::empty(),
            &table(vec![allowed, denied, remote]),
            SyncMode::Full,
        );

        let connect = |vip: &'static str| {
            topo.client(move || {
                match TcpStream::connect_timeout(&sa(vip), Duration::from_millis(700)) {
                    Ok(_) => "connected".to_owned(),
                    Err(e) => format!("{:?}", e.kind()),
                }
            })
        };
        assert_eq!(
            connect("198.19.5.1:80"),
            "connected",
            "source in the LB's ranges"
        );
        assert_eq!(
            connect("198.19.5.2:80"),
            "TimedOut",
            "source outside the ranges: dropped"
        );
        assert_eq!(
            connect("198.19.0.41:80"),
            "connected",
            "ranges only guard the LB IP"
        );
        assert_eq!(
            connect("198.19.6.1:80"),
            "TimedOut",
            "eTP=Local, endpoints only elsewhere: dropped, not refused"
        );
        assert_eq!(
            connect("198.19.0.42:80"),
            "connected",
            "the cluster IP still serves"
        );
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_an_endpoint_reaching_itself_through_its_service_is_masqueraded() {
    in_new_netns(|| {
        let topo = Topology::new("hairpin");
        let _servers = Servers::start(&topo, &[EP_A]);
        // The default `Auto` variant: plain `iptables` in the VM is the nft one (`iptables --version`).
        let dp = IpvsDataplane::new(IpvsConfig {
            iptables: IptablesVariant::Auto,
            ..config()
        })
        .expect("dataplane");
        let t = table(vec![port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A])]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        // From the endpoint's own namespace and address: IPVS sends it back to itself.
        let answer = topo.server.run(|| {
            let conn = socket_from(sa("198.18.1.10:0"), sa("198.19.0.10:80"));
            conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let mut line = String::new();
            BufReader::new(conn).read_line(&mut line).expect("greeting");
            parse_greeting(&line)
        });
        assert_eq!(answer.0, sa(EP_A));
        assert_eq!(
            answer.1.ip(),
            ip("198.18.1.1"),
            "hairpin traffic is masqueraded to the node, so the reply comes back through IPVS"
        );
        let nft = run("iptables-nft-save", &["-t", "nat"]);
        assert!(nft.contains("-j SVCP-IPVS-SERVICES"), "{nft}");
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_a_restarted_dataplane_recognises_its_vips_and_removes_stale_services() {
    in_new_netns(|| {
        let topo = Topology::new("restart");
        let _servers = Servers::start(&topo, &[EP_A]);
        let old = table(vec![port("old", Protocol::Tcp, "198.19.0.70", 80, &[EP_A])]);
        let new = table(vec![port("new", Protocol::Tcp, "198.19.0.71", 80, &[EP_A])]);
        let first = dataplane();
        sync(&first, &ServiceTable::empty(), &old, SyncMode::Full);
        drop(first);

        // A new process knows nothing it created, but the VIP on the interface is ours.
        let second = dataplane();
        sync(&second, &ServiceTable::empty(), &new, SyncMode::Full);
        let keys: Vec<String> = NetlinkIpvs::connect()
            .expect("ipvs")
            .virtual_servers()
            .expect("dump")
            .iter()
            .map(|vs| vs.key().to_string())
            .collect();
        assert_eq!(keys, ["TCP 198.19.0.71:80"]);
        let addrs = run("ip", &["-4", "-o", "addr", "show", "dev", "svcp-ipvs0"]);
        assert!(!addrs.contains("198.19.0.70"), "stale VIP unbound: {addrs}");
        assert_eq!(
            tcp_spread(&topo, "198.19.0.71:80", 2),
            BTreeMap::from([(sa(EP_A), 2)])
        );
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_every_scheduler_is_programmed_and_serves() {
    in_new_netns(|| {
        let topo = Topology::new("scheds");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let dp = dataplane();
        let schedulers: Vec<Scheduler> = Scheduler::ALL
            .into_iter()
            .filter(|s| *s != Scheduler::Random)
            .collect();
        let ports: Vec<ServicePort> = schedulers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut p = port(
                    s.as_str(),
                    Protocol::Tcp,
                    "198.19.0.80",
                    8000 + i as u16,
                    &[EP_A, EP_B],
                );
                p.scheduler = Some(*s);
                p
            })
            .collect();
        sync(&dp, &ServiceTable::empty(), &table(ports), SyncMode::Full);
        let ipvs = NetlinkIpvs::connect().expect("ipvs");
        let mut dumped: Vec<(u16, String)> = ipvs
            .virtual_servers()
            .expect("dump")
            .iter()
            .map(|vs| (vs.port, vs.scheduler.name().to_owned()))
            .collect();
        dumped.sort();
        let want: Vec<(u16, String)> = schedulers
            .iter()
            .enumerate()
            .map(|(i, s)| (8000 + i as u16, s.as_str().to_owned()))
            .collect();
        assert_eq!(dumped, want, "the kernel loaded every scheduler module");
        for (i, s) in schedulers.iter().enumerate() {
            let vip = format!("198.19.0.80:{}", 8000 + i);
            let seen = tcp_spread(&topo, &vip, 2);
            assert_eq!(seen.values().sum::<usize>(), 2, "{s}: {seen:?}");
        }
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_strict_arp_and_connection_timeouts_are_set_on_a_full_sync() {
    use backend_ipvs::ConnectionTimeouts;
    const ARP_IGNORE: &str = "/proc/sys/net/ipv4/conf/all/arp_ignore";
    const ARP_ANNOUNCE: &str = "/proc/sys/net/ipv4/conf/all/arp_announce";
    in_new_netns(|| {
        let _topo = Topology::new("arp");
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .to_owned()
        };
        assert_eq!(
            (read(ARP_IGNORE), read(ARP_ANNOUNCE)),
            ("0".to_owned(), "0".to_owned()),
            "a fresh namespace starts with the kernel's ARP defaults"
        );
        let dp = IpvsDataplane::new(IpvsConfig {
            strict_arp: true,
            timeouts: ConnectionTimeouts {
                tcp_seconds: 7200,
                tcp_fin_seconds: 0,
                udp_seconds: 60,
            },
            ..config()
        })
        .unwrap_or_else(|e| panic!("{e:?}: {NEEDS_VM}"));
        let t = table(vec![port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A])]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        assert_eq!(
            (read(ARP_IGNORE), read(ARP_ANNOUNCE)),
            ("1".to_owned(), "2".to_owned())
        );
        let timeouts = NetlinkIpvs::connect()
            .expect("IPVS")
            .timeouts()
            .expect("timeouts");
        assert_eq!(
            (timeouts.tcp, timeouts.tcp_fin, timeouts.udp),
            (
                Duration::from_secs(7200),
                Duration::from_secs(120), // zero asked: the kernel's default stays
                Duration::from_secs(60)
            )
        );
        let listing = run("ipvsadm", &["-L", "--timeout"]);
        assert!(listing.contains("7200 120 60"), "{listing}");
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_vips_bound_as_local_routes_serve_ipv4_and_ipv6_and_go_with_their_service() {
    use backend_ipvs::VipBinding;
    in_new_netns(|| {
        let topo = Topology::new("routes");
        let a6 = "[2001:db8:1::10]:8080";
        let _servers = Servers::start(&topo, &[EP_A, EP_B, a6]);
        let dp = IpvsDataplane::new(IpvsConfig {
            vip_binding: VipBinding::LocalRoutes,
            ..config()
        })
        .unwrap_or_else(|e| panic!("{e:?}: {NEEDS_VM}"));
        let t = table(vec![
            port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A, EP_B]),
            port("web6", Protocol::Tcp, "2001:db8:19::10", 80, &[a6]),
        ]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        let routes = run(
            "ip",
            &["route", "show", "table", "local", "dev", "svcp-ipvs0"],
        );
        assert!(routes.contains("local 198.19.0.10 "), "{routes}");
        let routes6 = run(
            "ip",
            &["-6", "route", "show", "table", "local", "dev", "svcp-ipvs0"],
        );
        assert!(routes6.contains("local 2001:db8:19::10 "), "{routes6}");
        let addrs = run("ip", &["-o", "addr", "show", "dev", "svcp-ipvs0"]);
        assert!(
            !addrs.contains("198.19.0.10") && !addrs.contains("2001:db8:19::10"),
            "no VIP is an address: {addrs}"
        );
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 10),
            BTreeMap::from([(sa(EP_A), 5), (sa(EP_B), 5)]),
            "IPVS serves a VIP that is only a local route"
        );
        assert_eq!(
            tcp_spread(&topo, "[2001:db8:19::10]:80", 2),
            BTreeMap::from([(sa(a6), 2)])
        );
        // A resync reads the routes back as ours: no route is added twice or dropped.
        sync(&dp, &t, &t, SyncMode::Full);
        let again = run(
            "ip",
            &["route", "show", "table", "local", "dev", "svcp-ipvs0"],
        );
        assert_eq!(again, routes, "resync keeps the routes as they were");

        // The IPv4 service goes: so does its route; the other stays.
        let only6 = table(vec![port(
            "web6",
            Protocol::Tcp,
            "2001:db8:19::10",
            80,
            &[a6],
        )]);
        sync(&dp, &t, &only6, SyncMode::Partial);
        let routes = run(
            "ip",
            &["route", "show", "table", "local", "dev", "svcp-ipvs0"],
        );
        assert!(!routes.contains("198.19.0.10"), "{routes}");
        let routes6 = run(
            "ip",
            &["-6", "route", "show", "table", "local", "dev", "svcp-ipvs0"],
        );
        assert!(routes6.contains("local 2001:db8:19::10 "), "{routes6}");

        dp.cleanup_now().expect("cleanup");
        let links = run("ip", &["-o", "link", "show"]);
        assert!(!links.contains("svcp-ipvs0"), "{links}");
    });
}

// === construction: nothing opened until the first sync, in that sync's namespace ===

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_a_dataplane_programs_the_namespace_of_its_first_sync_and_refuses_another() {
    use backend_ipvs::BackendError;
    use std::sync::Arc;
    // Made on the harness's thread, in the VM's root namespace: it opens nothing there.
    let node = Arc::new(dataplane());
    in_new_netns(move || {
        let topo = Topology::new("lazy");
        let _servers = Servers::start(&topo, &[EP_A]);
        let t = table(vec![port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A])]);
        sync(&node, &ServiceTable::empty(), &t, SyncMode::Full);
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 2),
            BTreeMap::from([(sa(EP_A), 2)]),
            "the first sync's namespace is programmed"
        );
        // A thread of another namespace: refused, nothing done there.
        let elsewhere = Arc::clone(&node);
        let refused = in_new_netns(move || {
            let changes = diff(&ServiceTable::empty(), &ServiceTable::empty());
            let request = SyncRequest {
                desired: &ServiceTable::empty(),
                changes: &changes,
                mode: SyncMode::Full,
            };
            let result = elsewhere.sync_at(&request, Instant::now());
            (result, run("ip", &["-o", "link", "show"]))
        });
        match refused {
            (Err(BackendError::Namespace { .. }), links) => {
                assert!(!links.contains("svcp-ipvs0"), "{links}")
            }
            (other, _) => panic!("expected a namespace error, got {other:?}"),
        }
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 2),
            BTreeMap::from([(sa(EP_A), 2)]),
            "the refused sync removed nothing"
        );
        node.cleanup_now().expect("cleanup");
        let links = run("ip", &["-o", "link", "show"]);
        assert!(!links.contains("svcp-ipvs0"), "{links}");
    });
    let root_links = run("ip", &["-o", "link", "show"]);
    assert!(
        !root_links.contains("svcp-ipvs0"),
        "the root namespace was never touched: {root_links}"
    );
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_the_async_dataplane_connects_on_a_blocking_thread_and_records_metrics() {
    use proxy_core::Dataplane;
    in_new_netns(|| {
        let topo = Topology::new("async");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let mut registry = prometheus_client::registry::Registry::default();
        let mut dp = dataplane();
        dp.register_metrics(&mut registry);
        let t = table(vec![port(
            "web",
            Protocol::Tcp,
            "198.19.0.10",
            80,
            &[EP_A, EP_B],
        )]);
        let changes = diff(&ServiceTable::empty(), &t);
        // Built on this thread: its blocking threads start in this namespace.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let report = runtime
            .block_on(dp.sync(SyncRequest {
                desired: &t,
                changes: &changes,
                mode: SyncMode::Full,
            }))
            .unwrap_or_else(|e| panic!("{e:?}: {NEEDS_VM}"));
        assert!(report.is_complete(), "{report}");
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 4),
            BTreeMap::from([(sa(EP_A), 2), (sa(EP_B), 2)])
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0"),
            "{text}"
        );
        let written = text
            .lines()
            .find_map(|l| l.strip_prefix("svcproxy_ipvs_objects_written_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no objects written in:\n{text}"));
        assert!(written >= 3.0, "a virtual server, two real servers: {text}");
        runtime.block_on(dp.cleanup()).expect("cleanup");
        let links = run("ip", &["-o", "link", "show"]);
        assert!(!links.contains("svcp-ipvs0"), "{links}");
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_the_drift_check_sees_a_real_server_edited_by_hand_and_nothing_when_untouched() {
    use proxy_core::Dataplane;
    in_new_netns(|| {
        let topo = Topology::new("audit");
        let _servers = Servers::start(&topo, &[EP_A, EP_B]);
        let mut dp = dataplane();
        let t = table(vec![
            port("web", Protocol::Tcp, "198.19.0.10", 80, &[EP_A, EP_B]),
            port("dns", Protocol::Udp, "198.19.0.53", 53, &[EP_A]),
        ]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        // Built on this thread: its blocking threads start in this namespace.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // What the kernel reports back must compare equal to what we applied, or every check
        // would repair a healthy table.
        assert!(
            !runtime.block_on(dp.check_drift()).expect("drift check"),
            "untouched: no drift"
        );
        assert!(
            !runtime.block_on(dp.check_drift()).expect("drift check"),
            "untouched: still no drift"
        );

        run(
            "ipvsadm",
            &["-e", "-t", "198.19.0.10:80", "-r", EP_A, "-m", "-w", "0"],
        );
        assert!(
            runtime.block_on(dp.check_drift()).expect("drift check"),
            "a weight edited by ipvsadm -e is drift"
        );
        sync(&dp, &t, &t, SyncMode::Full);
        assert!(
            !runtime.block_on(dp.check_drift()).expect("drift check"),
            "repaired by the full sync"
        );
        run("ipvsadm", &["-d", "-t", "198.19.0.10:80", "-r", EP_B]);
        assert!(
            runtime.block_on(dp.check_drift()).expect("drift check"),
            "a real server deleted by ipvsadm -d is drift"
        );
        sync(&dp, &t, &t, SyncMode::Full);
        assert_eq!(
            tcp_spread(&topo, "198.19.0.10:80", 4),
            BTreeMap::from([(sa(EP_A), 2), (sa(EP_B), 2)]),
            "both real servers serve again, at their weights"
        );
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_node_ports_follow_the_nodes_addresses_but_not_our_vips() {
    in_new_netns(|| {
        let topo = Topology::new("follow");
        let _servers = Servers::start(&topo, &[EP_A]);
        // No node_addresses: the node's own, followed (kube-proxy's default).
        let config = IpvsConfig {
            node_addresses: Vec::new(),
            ..config()
        };
        let dp = IpvsDataplane::new(config).unwrap_or_else(|e| panic!("{e:?}: {NEEDS_VM}"));
        let mut web = port("web", Protocol::Tcp, "198.19.0.50", 80, &[EP_A]);
        web.node_port = Some(30090);
        web.external_ips = vec![ip("198.19.6.50")];
        let t = table(vec![web]);
        sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
        let node_port_vips = || -> Vec<String> {
            dp.applied()
                .services
                .keys()
                .filter(|k| k.port == 30090)
                .map(|k| k.addr.to_string())
                .collect()
        };
        // The node's IPv4 addresses (the service is IPv4 only), not the VIPs bound to our
        // interface, nor loopback.
        assert_eq!(node_port_vips(), ["198.18.1.1", "198.18.2.1"]);
        let (server, _) = topo
            .client(|| tcp_hello(sa("198.18.2.1:30090")))
            .expect("node port on the node's address");
        assert_eq!(server, sa(EP_A));

        // An address added while running: a partial sync (the sync loop runs one when the
        // source changes) puts a virtual server on it.
        run("ip", &["addr", "add", "198.18.2.2/24", "dev", "n-cli"]);
        let started = Instant::now();
        eventually(
            "node port on the added address",
            Duration::from_secs(3),
            Duration::from_millis(50),
            || {
                let report = sync(&dp, &t, &t, SyncMode::Partial);
                let vips = node_port_vips();
                if vips.contains(&"198.18.2.2".to_owned()) {
                    Ok(report)
                } else {
                    Err(vips)
                }
            },
        );
        eprintln!(
            "node port on an added address after {:?}",
            started.elapsed()
        );
        let (server, _) = topo
            .client(|| tcp_hello(sa("198.18.2.2:30090")))
            .expect("node port on the added address");
        assert_eq!(server, sa(EP_A));

        run("ip", &["addr", "del", "198.18.2.2/24", "dev", "n-cli"]);
        eventually(
            "node port gone with its address",
            Duration::from_secs(3),
            Duration::from_millis(50),
            || {
                sync(&dp, &t, &t, SyncMode::Partial);
                let vips = node_port_vips();
                if vips == ["198.18.1.1", "198.18.2.1"] {
                    Ok(())
                } else {
                    Err(vips)
                }
            },
        );
    });
}

/// kube-proxy's IPVS mode (`syncEndpoint`, k/k#97081): an external IP or node port of an
/// eTP=Local service with no local endpoint keeps the cluster-wide endpoints, so pods still
/// reach it, unmasqueraded, while sources outside the cluster CIDRs find it dropped. Here the
/// client's network is the cluster CIDR (the client is a pod), then, on the same table, not.
#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn vm_pods_reach_a_local_policy_address_without_local_endpoints_and_others_are_dropped() {
    in_new_netns(|| {
        let topo = Topology::new("podlocal");
        let _servers = Servers::start(&topo, &[EP_A]);
        let mut remote = port("remote", Protocol::Tcp, "198.19.0.43", 80, &[EP_A]);
        remote.external_ips = vec![ip("198.19.6.2")];
        remote.node_port = Some(30043);
        remote.external_traffic_policy = TrafficPolicy::Local;
        let t = table(vec![remote]);
        let pods = IpvsDataplane::new(IpvsConfig {
            cluster_cidrs: vec!["198.18.2.0/24".parse::<IpNet>().expect("cidr")],
            ..config()
        })
        .expect("dataplane");
        sync(&pods, &ServiceTable::empty(), &t, SyncMode::Full);
        for vip in ["198.19.6.2:80", "198.18.2.1:30043"] {
            let (server, peer) = topo
                .client(move || tcp_hello(sa(vip)))
                .unwrap_or_else(|e| panic!("{vip}: a pod reaches the remote endpoint: {e}"));
            assert_eq!(server, sa(EP_A), "{vip}");
            assert_eq!(peer.ip(), ip("198.18.2.10"), "{vip}: not masqueraded");
        }
        pods.cleanup_now().expect("cleanup");
        // One dataplane per namespace: the next one takes the lock this one holds.
        drop(pods);

        let others = dataplane();
        sync(&others, &ServiceTable::empty(), &t, SyncMode::Full);
        for vip in ["198.19.6.2:80", "198.18.2.1:30043"] {
            let got = topo.client(move || {
                match TcpStream::connect_timeout(&sa(vip), Duration::from_millis(700)) {
                    Ok(_) => "connected".to_owned(),
                    Err(e) => format!("{:?}", e.kind()),
                }
            });
            assert_eq!(got, "TimedOut", "{vip}: from outside the cluster: dropped");
        }
    });
}
