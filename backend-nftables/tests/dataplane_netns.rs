//! Root tests: [`NftablesDataplane`] in network namespaces of the test's own, with real TCP
//! through what it programs over netlink:
//!
//! - a cluster IP reaches its endpoint; after a series of partial syncs (a service added, an
//!   endpoint added, a service removed) the table lists as a fresh full sync's, reads back as
//!   the dataplane believes, and still carries traffic;
//! - a restart (a new dataplane, the rules in place) writes nothing and a live TCP connection
//!   keeps working;
//! - drift: a deleted table is seen by `check_drift`, a deleted element and a foreign rule by
//!   the next full sync, and both are repaired;
//! - cleanup removes our table and leaves `table ip kube-proxy` and `table inet firewalld`.
//!
//! Run with `cargo test -p backend-nftables --test dataplane_netns -- --include-ignored` as root.

#[path = "nft_cases.rs"]
mod nft_cases;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use backend_nftables::netlink::NftSocket;
use backend_nftables::observe::observe;
use backend_nftables::NftablesDataplane;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
use proxy_core::{diff, ChangeSet, Dataplane, SyncMode, SyncReport, SyncRequest};
use testkit::netns::{in_new_netns, veth, Netns};
use testkit::process::{run, run_with_stdin};

/// Runs a future that never waits (the dataplane's calls are synchronous inside).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn port(
    name: &str,
    vip: &str,
    proto: Protocol,
    number: u16,
    endpoints: &[(&str, u16)],
) -> ServicePort {
    let mut p = ServicePort::new(ServicePortName::new("shop", name, ""), proto, number)
        .with_cluster_ip(ip(vip));
    for (addr, ep_port) in endpoints {
        p = p.with_endpoint(Endpoint::new(ip(addr), *ep_port));
    }
    p
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut b = ServiceTable::builder().node("node-a");
    for p in ports {
        b = b.insert(p);
    }
    b.build().expect("valid table")
}

fn sync(
    dp: &mut NftablesDataplane,
    desired: &ServiceTable,
    changes: &ChangeSet,
    mode: SyncMode,
) -> SyncReport {
    block_on(dp.sync(SyncRequest {
        desired,
        changes,
        mode,
    }))
    .unwrap_or_else(|e| panic!("{mode} sync: {}", proxy_core::error::error_chain(&e)))
}

fn full(dp: &mut NftablesDataplane, desired: &ServiceTable) -> SyncReport {
    sync(dp, desired, &ChangeSet::default(), SyncMode::Full)
}

fn ask(node: &Netns, vip: &str, number: u16) -> std::io::Result<String> {
    let to = SocketAddr::new(ip(vip), number);
    node.run(move || testkit::net::ask(to, Duration::from_secs(5)))
}

/// The blocks of a listing (sets and chains), sorted: partial syncs create chains in another
/// order than a full sync, which is all that may differ.
fn blocks(listing: &str) -> Vec<String> {
    let mut blocks: Vec<String> = listing.split("\n\n").map(str::to_owned).collect();
    for b in &mut blocks {
        *b = b
            .trim_start_matches("table inet svcproxy {\n")
            .trim_end_matches("}\n")
            .to_string();
    }
    blocks.sort();
    blocks
}

fn list(node: &Netns) -> String {
    node.run(|| run("nft", &["list", "table", "inet", "svcproxy"]))
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cluster_ip_then_partial_syncs_equal_a_fresh_full_sync() {
    let (node, pod) = nft_cases::node_and_pod("nftdp");
    let web = |eps: &[(&str, u16)]| port("web", "198.19.0.10", Protocol::Tcp, 80, eps);
    let t1 = table(vec![web(&[("198.18.1.10", 8080)])]);
    let config = nft_cases::config();
    let (dp, report) = node.run({
        let t1 = t1.clone();
        move || {
            let mut dp = NftablesDataplane::new(config);
            let report = full(&mut dp, &t1);
            (dp, report)
        }
    });
    assert_eq!(report.mode, SyncMode::Full);
    assert!(report.objects_written > 0, "{report}");
    let listener = pod
        .run(|| TcpListener::bind("198.18.1.10:8080"))
        .expect("bind the endpoint");
    let server = testkit::net::AnswerServer::start(listener, |peer| format!("pod sees {peer}\n"));
    let answer = ask(&node, "198.19.0.10", 80).expect("cluster IP answers");
    assert!(
        answer.starts_with("pod sees 198.18.1.1:"),
        "answer: {answer}"
    );

    // Partial syncs: a UDP service added, a second endpoint for web (a new slot count), the
    // UDP service removed, then web back to its own endpoint plus a TCP service without any.
    let t2 = table(vec![
        web(&[("198.18.1.10", 8080)]),
        port(
            "dns",
            "198.19.0.11",
            Protocol::Udp,
            53,
            &[("198.18.1.10", 5353)],
        ),
    ]);
    let t3 = table(vec![
        web(&[("198.18.1.10", 8080), ("198.18.1.10", 8081)]),
        port(
            "dns",
            "198.19.0.11",
            Protocol::Udp,
            53,
            &[("198.18.1.10", 5353)],
        ),
    ]);
    let t4 = table(vec![web(&[("198.18.1.10", 8080), ("198.18.1.10", 8081)])]);
    let t5 = table(vec![
        web(&[("198.18.1.10", 8080)]),
        port("empty", "198.19.0.12", Protocol::Tcp, 443, &[]),
    ]);
    let steps = [
        (t1, t2.clone()),
        (t2, t3.clone()),
        (t3, t4.clone()),
        (t4, t5.clone()),
    ];
    let (reports, listed, believed, observed) = node.run({
        let t5 = t5.clone();
        move || {
            let mut dp = dp;
            let reports: Vec<SyncReport> = steps
                .iter()
                .map(|(old, new)| sync(&mut dp, new, &diff(old, new), SyncMode::Partial))
                .collect();
            let listed = run("nft", &["list", "table", "inet", "svcproxy"]);
            let believed = dp.kernel().clone();
            let mut socket = NftSocket::open().expect("socket");
            let desired =
                backend_nftables::plan::desired(&t5, &nft_cases::config(), &Default::default());
            let observed = observe(&mut socket, "svcproxy", &desired.table)
                .expect("observed")
                .expect("table");
            (reports, listed, believed, observed.table)
        }
    });
    for r in &reports {
        assert_eq!(r.mode, SyncMode::Partial, "{r}");
        assert!(
            r.objects_written > 0 && r.objects_written < 20,
            "cost follows the change: {r}"
        );
    }
    assert_eq!(
        believed, observed,
        "what the dataplane believes is what the kernel holds"
    );
    let fresh = in_new_netns(move || {
        // The node's address, which `node-ips` follows, as in the node namespace.
        run(
            "ip",
            &["link", "add", "p0", "type", "veth", "peer", "name", "p1"],
        );
        run("ip", &["addr", "add", "198.18.1.1/24", "dev", "p0"]);
        run("ip", &["link", "set", "p0", "up"]);
        let mut dp = NftablesDataplane::new(nft_cases::config());
        full(&mut dp, &t5);
        run("nft", &["list", "table", "inet", "svcproxy"])
    });
    assert_eq!(
        blocks(&listed),
        blocks(&fresh),
        "partial syncs == a fresh full sync\n--- partial\n{listed}\n--- full\n{fresh}"
    );
    let answer = ask(&node, "198.19.0.10", 80).expect("cluster IP still answers");
    assert!(answer.starts_with("pod sees"), "answer: {answer}");
    let refused = ask(&node, "198.19.0.12", 443).expect_err("no endpoints: refused");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert_eq!(server.stop(), 2);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn restart_adopts_the_table_writes_nothing_and_keeps_a_live_connection() {
    let (node, pod) = nft_cases::node_and_pod("nftdp");
    let t = table(vec![port(
        "web",
        "198.19.0.10",
        Protocol::Tcp,
        80,
        &[("198.18.1.10", 8080)],
    )]);
    let listener = pod
        .run(|| TcpListener::bind("198.18.1.10:8080"))
        .expect("bind the endpoint");
    // An echo server: one line in, the same line out, for as long as the connection lives.
    let echo = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut lines = 0;
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            writer.write_all(line.as_bytes()).expect("echo");
            line.clear();
            lines += 1;
        }
        lines
    });
    node.run({
        let t = t.clone();
        move || {
            let mut dp = NftablesDataplane::new(nft_cases::config());
            full(&mut dp, &t);
            // dropped without cleanup: the process "restarts"
        }
    });
    let stream = node
        .run(|| {
            TcpStream::connect_timeout(
                &"198.19.0.10:80".parse().expect("addr"),
                Duration::from_secs(5),
            )
        })
        .expect("connect through the cluster IP");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut roundtrip = |text: &str| {
        writer
            .write_all(format!("{text}\n").as_bytes())
            .expect("send");
        let mut line = String::new();
        reader.read_line(&mut line).expect("echoed");
        line
    };
    assert_eq!(roundtrip("before"), "before\n");
    let before = list(&node);
    let (report, generation_kept) = node.run(move || {
        let mut socket = NftSocket::open().expect("socket");
        let generation = socket.generation().expect("generation");
        let mut dp = NftablesDataplane::new(nft_cases::config());
        let report = full(&mut dp, &t);
        (
            report,
            socket.generation().expect("generation") == generation,
        )
    });
    assert_eq!(
        report.objects_written, 0,
        "a restart with the rules in place writes nothing: {report}"
    );
    assert!(generation_kept, "no transaction was committed");
    assert_eq!(list(&node), before);
    assert_eq!(roundtrip("after"), "after\n", "the connection lives on");
    drop(writer);
    drop(reader);
    assert_eq!(echo.join().expect("echo server"), 2);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn drift_is_seen_and_repaired() {
    let t = table(vec![
        port(
            "web",
            "198.19.0.10",
            Protocol::Tcp,
            80,
            &[("198.18.1.10", 8080)],
        ),
        port(
            "dns",
            "198.19.0.11",
            Protocol::Udp,
            53,
            &[("198.18.1.10", 5353), ("198.18.1.11", 5353)],
        ),
    ]);
    let out = in_new_netns(move || {
        let mut dp = NftablesDataplane::new(nft_cases::config());
        full(&mut dp, &t);
        let golden = run("nft", &["list", "table", "inet", "svcproxy"]);
        let quiet = block_on(dp.check_drift()).expect("check");
        // A foreign table changes the generation, not ours.
        run_with_stdin(
            "nft",
            &["-f", "-"],
            "table ip other {\n\tchain c {\n\t}\n}\n",
        );
        let foreign_only = block_on(dp.check_drift()).expect("check");
        // Someone deletes an element of ours and adds a rule to our services chain: the
        // cheap check cannot see it, the next full sync repairs it.
        run(
            "nft",
            &[
                "delete",
                "element",
                "inet",
                "svcproxy",
                "service-ips-v4",
                "{ 198.19.0.10 . tcp . 80 }",
            ],
        );
        run(
            "nft",
            &["add", "rule", "inet", "svcproxy", "services", "counter"],
        );
        let repair = full(&mut dp, &t);
        let repaired = run("nft", &["list", "table", "inet", "svcproxy"]);
        // Someone deletes our whole table: check_drift sees it.
        run("nft", &["delete", "table", "inet", "svcproxy"]);
        let gone = block_on(dp.check_drift()).expect("check");
        full(&mut dp, &t);
        let restored = run("nft", &["list", "table", "inet", "svcproxy"]);
        (
            golden,
            quiet,
            foreign_only,
            repair,
            repaired,
            gone,
            restored,
        )
    });
    let (golden, quiet, foreign_only, repair, repaired, gone, restored) = out;
    assert!(!quiet, "no drift right after a sync");
    assert!(
        !foreign_only,
        "a change to another table is not drift of ours"
    );
    assert!(
        repair.objects_written >= 2,
        "the element and the chain are rewritten: {repair}"
    );
    assert_eq!(repaired, golden, "the repair restores the table");
    assert!(gone, "a deleted table is drift");
    assert_eq!(restored, golden);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cleanup_removes_our_table_and_nothing_else() {
    let t = table(vec![port(
        "web",
        "198.19.0.10",
        Protocol::Tcp,
        80,
        &[("198.18.1.10", 8080)],
    )]);
    let (before, after, ours_before, ours_after, removed, again) = in_new_netns(move || {
        run_with_stdin(
            "nft",
            &["-f", "-"],
            "table ip kube-proxy {\n\tchain services {\n\t\tip daddr 198.19.0.99 drop\n\t}\n}\n\
             table inet firewalld {\n\tset trusted {\n\t\ttype ipv4_addr\n\t\telements = { 198.18.9.9 }\n\t}\n}\n",
        );
        let mut dp = NftablesDataplane::new(nft_cases::config());
        full(&mut dp, &t);
        let foreign = || {
            format!(
                "{}{}",
                run("nft", &["list", "table", "ip", "kube-proxy"]),
                run("nft", &["list", "table", "inet", "firewalld"])
            )
        };
        let tables = || run("nft", &["list", "tables"]);
        let before = foreign();
        let ours_before = tables();
        let removed = block_on(dp.cleanup()).expect("cleanup").objects_removed;
        let again = block_on(dp.cleanup())
            .expect("cleanup again")
            .objects_removed;
        (before, foreign(), ours_before, tables(), removed, again)
    });
    assert!(ours_before.contains("table inet svcproxy"), "{ours_before}");
    assert!(
        !ours_after.contains("svcproxy"),
        "our table is gone: {ours_after}"
    );
    assert!(
        ours_after.contains("table ip kube-proxy") && ours_after.contains("table inet firewalld")
    );
    assert_eq!(before, after, "foreign tables untouched");
    assert_eq!((removed, again), (1, 0));
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn ipv6_cluster_ip_reaches_its_endpoint() {
    let node = Netns::new("nftdp6node");
    let pod = Netns::new("nftdp6pod");
    veth(&node, "p0", &pod, "eth0");
    node.ip_batch(&[
        "link set lo up",
        "addr add 2001:db8:1::1/64 dev p0 nodad",
        "link set p0 up",
        "route add 2001:db8:19::/64 dev p0",
    ]);
    pod.ip_batch(&[
        "link set lo up",
        "addr add 2001:db8:1::10/64 dev eth0 nodad",
        "link set eth0 up",
        "route add default via 2001:db8:1::1",
    ]);
    let t = table(vec![port(
        "web6",
        "2001:db8:19::10",
        Protocol::Tcp,
        80,
        &[("2001:db8:1::10", 8080)],
    )]);
    node.run(move || {
        let mut dp = NftablesDataplane::new(nft_cases::config());
        full(&mut dp, &t);
    });
    let listener = pod
        .run(|| TcpListener::bind("[2001:db8:1::10]:8080"))
        .expect("bind the endpoint");
    let server = testkit::net::AnswerServer::start(listener, |peer| format!("pod sees {peer}\n"));
    let answer = ask(&node, "2001:db8:19::10", 80).expect("the IPv6 cluster IP answers");
    assert!(
        answer.starts_with("pod sees [2001:db8:1::1]:"),
        "answer: {answer}"
    );
    assert_eq!(server.stop(), 1);
}

/// IPv6 client-IP affinity, over netlink (`nft` 1.0.6 cannot load its `update` rule, but lists
/// it): one client reaches one of two IPv6 endpoints every time, and `affinity-v6` holds its
/// element with the port's timeout.
#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn ipv6_client_ip_affinity_sends_a_client_to_the_same_endpoint() {
    let node = Netns::new("aff6node");
    let pod = Netns::new("aff6pod");
    veth(&node, "p0", &pod, "eth0");
    node.ip_batch(&[
        "link set lo up",
        "addr add 2001:db8:18:1::1/64 dev p0 nodad",
        "link set p0 up",
        "route add 2001:db8:19::/64 dev p0",
    ]);
    pod.ip_batch(&[
        "link set lo up",
        "addr add 2001:db8:18:1::10/64 dev eth0 nodad",
        "addr add 2001:db8:18:1::11/64 dev eth0 nodad",
        "link set eth0 up",
        "route add default via 2001:db8:18:1::1",
    ]);
    let mut sticky = port(
        "sticky",
        "2001:db8:19::10",
        Protocol::Tcp,
        80,
        &[("2001:db8:18:1::10", 8080), ("2001:db8:18:1::11", 8080)],
    );
    sticky.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
        timeout: Duration::from_secs(600),
    };
    let t = table(vec![sticky]);
    let servers = nft_cases::endpoint_servers(
        &pod,
        &["[2001:db8:18:1::10]:8080", "[2001:db8:18:1::11]:8080"],
    );
    let (answers, listed, purged) = node.run(move || {
        let mut dp = NftablesDataplane::new(nft_cases::config());
        let report = full(&mut dp, &t);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let vip = SocketAddr::new(ip("2001:db8:19::10"), 80);
        let answers: std::collections::BTreeSet<String> = (0..16)
            .map(|_| testkit::net::ask(vip, Duration::from_secs(5)).expect("cluster IP answers"))
            .collect();
        let listed = run("nft", &["list", "map", "inet", "svcproxy", "affinity-v6"]);
        // The chosen endpoint leaves: a partial sync purges the elements leading to it.
        let chosen = answers
            .iter()
            .next()
            .map(|a| a.trim().to_owned())
            .unwrap_or_default();
        let keep = if chosen.contains("::10]") {
            "2001:db8:18:1::11"
        } else {
            "2001:db8:18:1::10"
        };
        let mut after = port(
            "sticky",
            "2001:db8:19::10",
            Protocol::Tcp,
            80,
            &[(keep, 8080)],
        );
        after.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
            timeout: Duration::from_secs(600),
        };
        let next = table(vec![after]);
        let changes = diff(&t, &next);
        let report = sync(&mut dp, &next, &changes, SyncMode::Partial);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let purged = run("nft", &["list", "map", "inet", "svcproxy", "affinity-v6"]);
        (answers, listed, purged)
    });
    assert_eq!(
        answers.len(),
        1,
        "one client, several endpoints: {answers:?}\n{listed}"
    );
    let element = listed
        .lines()
        .find(|l| l.contains("2001:db8:18:1::1 . 2001:db8:19::10 . tcp . 80 "));
    assert!(
        element.is_some_and(|l| l.contains(" timeout 10m ")),
        "the affinity map holds the client's endpoint:\n{listed}"
    );
    assert!(
        !purged.contains("2001:db8:18:1::1 . 2001:db8:19::10 . tcp . 80 "),
        "the element of an endpoint gone is purged:\n{purged}"
    );
    let served: usize = servers.into_iter().map(|s| s.stop()).sum();
    assert_eq!(served, 16);
}

/// Node-port affinity records only connections to a node address: a cluster IP whose port
/// number equals an affinity node port's stays unsticky (it used to be keyed by `proto . port`
/// alone), while the node port itself sticks.
#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn node_port_affinity_does_not_stick_a_cluster_ip_of_the_same_port_number() {
    let (node, pod) = nft_cases::node_and_pod("npaff");
    pod.ip(&["addr", "add", "198.18.1.11/24", "dev", "eth0"]);
    let endpoints = [("198.18.1.10", 8080), ("198.18.1.11", 8080)];
    let plain = port("plain", "198.19.0.20", Protocol::Tcp, 30080, &endpoints);
    let mut sticky = port("sticky", "198.19.0.21", Protocol::Tcp, 80, &endpoints);
    sticky.node_port = Some(30080);
    sticky.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
        timeout: Duration::from_secs(600),
    };
    let t = table(vec![plain, sticky]);
    let servers = nft_cases::endpoint_servers(&pod, &["198.18.1.10:8080", "198.18.1.11:8080"]);
    let (plain_answers, node_port_answers, listed) = node.run(move || {
        let mut dp = NftablesDataplane::new(nft_cases::config());
        let report = full(&mut dp, &t);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let ask_all = |to: SocketAddr| -> std::collections::BTreeSet<String> {
            (0..16)
                .map(|_| testkit::net::ask(to, Duration::from_secs(5)).expect("answers"))
                .collect()
        };
        let plain = ask_all(SocketAddr::new(ip("198.19.0.20"), 30080));
        let node_port = ask_all(SocketAddr::new(ip("198.18.1.1"), 30080));
        let listed = run("nft", &["list", "map", "inet", "svcproxy", "affinity-v4"]);
        (plain, node_port, listed)
    });
    assert_eq!(
        plain_answers.len(),
        2,
        "the cluster IP without affinity balances: {plain_answers:?}\n{listed}"
    );
    assert!(
        !listed.contains(". 198.19.0.20 . tcp . 30080 "),
        "no affinity element for the cluster IP:\n{listed}"
    );
    assert_eq!(
        node_port_answers.len(),
        1,
        "the affinity node port sticks: {node_port_answers:?}\n{listed}"
    );
    assert!(
        listed.contains(". 198.18.1.1 . tcp . 30080 "),
        "the node port's element is recorded under the node address:\n{listed}"
    );
    let served: usize = servers.into_iter().map(|s| s.stop()).sum();
    assert_eq!(served, 32);
}
