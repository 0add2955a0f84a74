//! Real traffic from an external client through a node to pods, each in a namespace this test
//! creates, joined by veth pairs (routed, like a CNI without a bridge):
//!
//! ```text
//!  client 198.18.250.1, 198.18.251.1 ── c1|c0 198.18.250.254, 198.18.251.254 ── node (our rules)
//!  node a0 198.18.2.1 ── a1 pod A 198.18.2.10      node b0 198.18.3.1 ── b1 pod B 198.18.3.10
//! ```
//!
//! Checks masquerade for node ports (eTP=Cluster), source preservation for eTP=Local, LB source
//! ranges, client-IP affinity, and hairpin (a pod reaching itself through its service). Both iptables variants. Needs
//! root; every command runs with `ip -n`/`ip netns exec` or on a thread inside a test namespace.

mod cases;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use backend_iptables::apply::Variant;
use proxy_core::table::{Endpoint, SessionAffinity, TrafficPolicy};
use proxy_core::{Protocol, ServicePort, ServicePortName, ServiceTable};
use testkit::net::AnswerServer;
use testkit::netns::{veth, Netns};

struct Topology {
    node: Netns,
    client: Netns,
    pod_a: Netns,
    pod_b: Netns,
}

fn sysctl(ns: &Netns, setting: &str) {
    ns.exec_ok("sysctl", &["-q", "-w", setting]);
}

fn topology(variant: Variant) -> Topology {
    let t = Topology {
        node: Netns::new(&format!("node-{variant}")),
        client: Netns::new(&format!("client-{variant}")),
        pod_a: Netns::new(&format!("poda-{variant}")),
        pod_b: Netns::new(&format!("podb-{variant}")),
    };
    for ns in [&t.node, &t.client, &t.pod_a, &t.pod_b] {
        ns.ip(&["link", "set", "lo", "up"]);
    }
    let link = |node_if: &str,
                peer_if: &str,
                peer: &Netns,
                node_addrs: &[&str],
                peer_addrs: &[&str],
                gw: &str| {
        veth(&t.node, node_if, peer, peer_if);
        for a in node_addrs {
            t.node.ip(&["addr", "add", a, "dev", node_if]);
        }
        for a in peer_addrs {
            peer.ip(&["addr", "add", a, "dev", peer_if]);
        }
        t.node.ip(&["link", "set", node_if, "up"]);
        peer.ip(&["link", "set", peer_if, "up"]);
        peer.ip(&["route", "add", "default", "via", gw]);
    };
    link(
        "c0",
        "c1",
        &t.client,
        &["198.18.250.254/24", "198.18.251.254/24"],
        &["198.18.250.1/24", "198.18.251.1/24"],
        "198.18.250.254",
    );
    link(
        "a0",
        "a1",
        &t.pod_a,
        &["198.18.2.1/24"],
        &["198.18.2.10/24"],
        "198.18.2.1",
    );
    link(
        "b0",
        "b1",
        &t.pod_b,
        &["198.18.3.1/24"],
        &["198.18.3.10/24"],
        "198.18.3.1",
    );
    // Service addresses are routed on the node (back towards the client: nothing owns them).
    t.node.ip(&["route", "add", "198.19.0.0/16", "dev", "c0"]);
    sysctl(&t.node, "net.ipv4.ip_forward=1");
    sysctl(&t.node, "net.ipv4.conf.all.rp_filter=0");
    t
}

fn local(addr: &str) -> Endpoint {
    let mut e = Endpoint::new(addr.parse().expect("ip"), 8080);
    e.is_local = true;
    e
}

fn table() -> ServiceTable {
    let name = |n: &str| ServicePortName::new("ns", n, "p");
    let mut etp_local = ServicePort::new(name("keep-source"), Protocol::Tcp, 80)
        .with_cluster_ip("198.19.0.7".parse().expect("ip"))
        .with_endpoint(local("198.18.2.10"));
    etp_local.external_ips = vec!["198.19.100.7".parse().expect("ip")];
    etp_local.external_traffic_policy = TrafficPolicy::Local;
    let mut lb = ServicePort::new(name("lb"), Protocol::Tcp, 80)
        .with_cluster_ip("198.19.0.5".parse().expect("ip"))
        .with_endpoint(local("198.18.3.10"));
    lb.load_balancer_ips = vec!["198.19.101.5".parse().expect("ip")];
    lb.load_balancer_source_ranges = vec!["198.18.250.0/24".parse().expect("range")];
    ServiceTable::builder()
        .node("node-a")
        .insert(
            ServicePort::new(name("web"), Protocol::Tcp, 80)
                .with_cluster_ip("198.19.0.10".parse().expect("ip"))
                .with_node_port(30010)
                .with_endpoint(local("198.18.2.10"))
                .with_endpoint(local("198.18.3.10")),
        )
        .insert(etp_local)
        .insert(lb)
        .insert({
            let mut sticky = ServicePort::new(name("sticky"), Protocol::Tcp, 80)
                .with_cluster_ip("198.19.0.6".parse().expect("ip"))
                .with_endpoint(local("198.18.2.10"))
                .with_endpoint(local("198.18.3.10"));
            sticky.session_affinity = SessionAffinity::ClientIp {
                timeout: Duration::from_secs(60),
            };
            sticky
        })
        .build()
        .expect("valid table")
}

/// A backend in `ns` that answers each connection with "<its name> <peer address>".
fn backend(ns: &Netns, addr: &'static str, name: &'static str) -> AnswerServer {
    let listener = ns.run(move || TcpListener::bind(addr).expect("bind backend"));
    AnswerServer::start(listener, move |peer| format!("{name} {}", peer.ip()))
}

/// Connects from `src` (bound) to `dst`; returns the backend's answer.
fn ask(src: &str, dst: &str) -> std::io::Result<String> {
    let socket = nix_bind_connect(src, dst)?;
    let mut conn = socket;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out)
}

fn nix_bind_connect(src: &str, dst: &str) -> std::io::Result<TcpStream> {
    // std cannot bind a source address before connecting; the client has two addresses.
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let src: SocketAddr = format!("{src}:0").parse().expect("src");
    let dst: SocketAddr = dst.parse().expect("dst");
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(src))?;
    let stream = TcpStream::from(fd);
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // A blocking connect; a DROP shows as a timeout, bounded by the kernel's SYN retries, so use
    // a non-blocking connect with our own 1.5 s limit.
    stream.set_nonblocking(true)?;
    match connect(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        &SockaddrIn::from(dst),
    ) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let start = Instant::now();
    loop {
        match stream.peer_addr() {
            Ok(_) => break,
            Err(_) if start.elapsed() < Duration::from_millis(1500) => {
                if let Ok(Some(e)) = stream.take_error() {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn answers(src: &'static str, dst: &'static str, n: usize, ns: &Netns) -> BTreeMap<String, usize> {
    ns.run(move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let answer = ask(src, dst).unwrap_or_else(|e| format!("error {:?}", e.kind()));
            *seen.entry(answer).or_insert(0) += 1;
        }
        seen
    })
}

/// Packets counted by our filter FIREWALL DROP rules on the node.
fn firewall_drops(node: &Netns, variant: Variant) -> u64 {
    let save = variant.save_binary(backend_iptables::rules::Family::V4);
    let out = node.exec(save, &["-c", "-t", "filter"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("-A SVCP-FIREWALL") && l.ends_with("-j DROP"))
        .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn external_clients_node_ports_local_policy_source_ranges_and_hairpin() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let t = topology(variant);
        t.node.run(move || {
            cases::apply_full_with_hooks(variant, &table());
        });
        let _a = backend(&t.pod_a, "198.18.2.10:8080", "a");
        let _b = backend(&t.pod_b, "198.18.3.10:8080", "b");

        // Node port, eTP=Cluster: masqueraded to the node's address on the way to the pod.
        let seen = answers("198.18.250.1", "198.18.250.254:30010", 20, &t.client);
        let want: BTreeMap<String, usize> = seen
            .keys()
            .filter(|k| *k == "a 198.18.2.1" || *k == "b 198.18.3.1")
            .map(|k| (k.clone(), seen[k]))
            .collect();
        assert_eq!(
            seen, want,
            "{variant}: node port answers must come from masqueraded sources"
        );
        assert_eq!(seen.len(), 2, "{variant}: both pods: {seen:?}");

        // External IP, eTP=Local: the pod sees the client's own address.
        let seen = answers("198.18.250.1", "198.19.100.7:80", 3, &t.client);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["a 198.18.250.1"],
            "{variant}: {seen:?}"
        );

        // LB source ranges: allowed source through (masqueraded: eTP=Cluster), other source
        // dropped (times out).
        let seen = answers("198.18.250.1", "198.19.101.5:80", 2, &t.client);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["b 198.18.3.1"],
            "{variant}: {seen:?}"
        );
        let seen = answers("198.18.251.1", "198.19.101.5:80", 1, &t.client);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["error TimedOut"],
            "{variant}: {seen:?}"
        );
        let drops = firewall_drops(&t.node, variant);
        assert!(
            drops > 0,
            "{variant}: the FIREWALL DROP rule must have counted the SYN"
        );

        // Client-IP affinity: every connection of one client goes to the same pod.
        let seen = answers("198.18.250.1", "198.19.0.6:80", 10, &t.client);
        assert_eq!(seen.len(), 1, "{variant}: sticky: {seen:?}");
        assert_eq!(seen.values().sum::<usize>(), 10, "{variant}: {seen:?}");

        // Hairpin: pod A through the cluster IP. Picking itself works and is masqueraded to the
        // node's address; picking B keeps A's address.
        let seen = answers("198.18.2.10", "198.19.0.10:80", 30, &t.pod_a);
        let mut keys: Vec<&String> = seen.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["a 198.18.2.1", "b 198.18.2.10"],
            "{variant}: {seen:?}"
        );
    }
}
