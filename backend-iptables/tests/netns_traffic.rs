//! Real TCP and UDP through our rules, in a namespace this test creates: a "node" with its address
//! on a veth interface, local backends on loopback addresses, and a client on the node (the
//! OUTPUT path). Both iptables variants. Needs root; loops are bounded in count and time.

mod cases;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use backend_iptables::apply::Variant;
use proxy_core::table::Endpoint;
use proxy_core::{Protocol, ServicePort, ServicePortName, ServiceTable};
use testkit::net::AnswerServer;
use testkit::netns::Netns;

/// A TCP backend on this thread's namespace that answers every connection with its name.
fn tcp_backend(addr: &str, name: &str) -> AnswerServer {
    AnswerServer::named(addr.parse().expect("addr"), name)
}

fn ask(to: &str) -> std::io::Result<String> {
    testkit::net::ask(to.parse().expect("addr"), Duration::from_secs(2))
}

fn table() -> ServiceTable {
    let name = |n: &str| ServicePortName::new("ns", n, "p");
    let local = |addr: &str, port| {
        let mut e = Endpoint::new(addr.parse().expect("ip"), port);
        e.is_local = true;
        e
    };
    ServiceTable::builder()
        .node("node-a")
        .insert(
            ServicePort::new(name("web"), Protocol::Tcp, 80)
                .with_cluster_ip("198.19.0.10".parse().expect("ip"))
                .with_node_port(30010)
                .with_endpoint(local("198.18.1.10", 8080))
                .with_endpoint(local("198.18.1.11", 8080)),
        )
        .insert(
            ServicePort::new(name("empty"), Protocol::Tcp, 80)
                .with_cluster_ip("198.19.0.11".parse().expect("ip")),
        )
        .insert(
            ServicePort::new(name("dns"), Protocol::Udp, 53)
                .with_cluster_ip("198.19.0.12".parse().expect("ip"))
                .with_endpoint(local("198.18.1.12", 5353)),
        )
        .build()
        .expect("valid table")
}

fn setup_node(variant: Variant) {
    cases::setup_node_v4(&["198.18.1.10/32", "198.18.1.11/32", "198.18.1.12/32"]);
    cases::apply_full_with_hooks(variant, &table());
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn real_traffic_through_cluster_ip_node_port_reject_and_udp() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&format!("traffic-{variant}"));
        ns.run(move || {
            setup_node(variant);

            // Cluster IP: 40 connections reach both backends.
            const N: usize = 40;
            let a = tcp_backend("198.18.1.10:8080", "a");
            let b = tcp_backend("198.18.1.11:8080", "b");
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..N {
                let who =
                    ask("198.19.0.10:80").unwrap_or_else(|e| panic!("{variant}: cluster IP: {e}"));
                *seen.entry(who).or_insert(0) += 1;
            }
            assert_eq!(
                seen.len(),
                2,
                "{variant}: both backends should answer: {seen:?}"
            );

            // Node port on the node's address.
            let who =
                ask("198.18.200.1:30010").unwrap_or_else(|e| panic!("{variant}: node port: {e}"));
            assert!(who == "a" || who == "b", "{variant}: {who:?}");

            // No endpoints: refused at once (TCP reset from the filter REJECT).
            let err = ask("198.19.0.11:80").expect_err("no endpoints must be refused");
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{variant}: {err}"
            );

            // A port the service does not have: not ours, nothing listens behind it.
            assert!(ask("198.19.0.10:81").is_err());

            // UDP through the cluster IP to the backend's own port.
            let server = UdpSocket::bind("198.18.1.12:5353").expect("bind udp");
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let client = UdpSocket::bind("0.0.0.0:0").expect("bind client");
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            client.send_to(b"ping", "198.19.0.12:53").expect("send");
            let mut buf = [0u8; 16];
            let (n, from) = server
                .recv_from(&mut buf)
                .expect("backend got the datagram");
            assert_eq!(&buf[..n], b"ping");
            server.send_to(b"pong", from).expect("reply");
            let (n, reply_from) = client.recv_from(&mut buf).expect("reply through conntrack");
            assert_eq!(&buf[..n], b"pong");
            assert_eq!(
                reply_from,
                "198.19.0.12:53".parse::<SocketAddr>().expect("addr"),
                "reply is un-NATed"
            );

            // Every connection above reached a backend.
            let served = a.stop() + b.stop();
            assert!(served >= N, "{variant}: served {served}");
        });
    }
}
