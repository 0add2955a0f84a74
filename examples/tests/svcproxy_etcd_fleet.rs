//! Many hosts, one catalogue: three nodes (network namespaces), each running `svcproxy --etcd
//! --backend iptables` against one etcd, and a client on their LAN sending real traffic to each
//! node's node port.
//!
//! ```text
//!   client 198.18.0.50 ─┐
//!   node-1 198.18.0.1 ──┤  br0 in "lan" (198.18.0.100: etcd)
//!   node-2 198.18.0.2 ──┤      each node's pod: 198.18.1.<n>/32 on its loopback, :8080,
//!   node-3 198.18.0.3 ──┘      answering its node's name
//! ```
//!
//! Needs root (`#[ignore]`d otherwise; CI runs it): every rule is programmed inside the test's
//! namespaces, every address is in 198.18.0.0/15.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use testkit::etcd::Etcd;
use testkit::fs::TempDir;
use testkit::net::AnswerServer;
use testkit::netns::{veth, Netns};
use testkit::process::LoggedChild;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const SVCPROXYCTL: &str = env!("CARGO_BIN_EXE_svcproxyctl");
const WAIT: Duration = Duration::from_secs(20);
const NODE_PORT: u16 = 30080;
const DROPPED: &str = "dropped";

struct Node {
    ns: Netns,
    name: String,
    ip: Ipv4Addr,
    _pod: AnswerServer,
}

/// The LAN, etcd on it, three nodes with a pod each, and a client.
struct Fleet {
    _lan: Netns,
    etcd: Etcd,
    nodes: Vec<Node>,
    client: Netns,
}

fn fleet(dir: &TempDir) -> Fleet {
    let lan = Netns::new("lan");
    lan.ip_batch(&[
        "link add br0 type bridge",
        "link set br0 up",
        "addr add 198.18.0.100/24 dev br0",
        "link set lo up",
    ]);
    let mut nodes = Vec::new();
    for n in 1..=3u8 {
        let ns = Netns::new(&format!("node{n}"));
        veth(&ns, "eth0", &lan, &format!("n{n}"));
        lan.ip_batch(&[
            format!("link set n{n} master br0"),
            format!("link set n{n} up"),
        ]);
        let mut routes = vec![
            "link set lo up".to_owned(),
            "link set eth0 up".to_owned(),
            format!("addr add 198.18.0.{n}/24 dev eth0"),
            format!("addr add 198.18.1.{n}/32 dev lo"),
        ];
        for other in (1..=3u8).filter(|other| *other != n) {
            routes.push(format!(
                "route add 198.18.1.{other}/32 via 198.18.0.{other}"
            ));
        }
        ns.ip_batch(&routes);
        ns.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let name = format!("node-{n}");
        let pod_addr = SocketAddr::from((Ipv4Addr::new(198, 18, 1, n), 8080));
        let listener = ns
            .run(move || TcpListener::bind(pod_addr))
            .unwrap_or_else(|e| panic!("bind the pod of {name} on {pod_addr}: {e}"));
        let answer = name.clone();
        let pod = AnswerServer::start(listener, move |_| answer.clone());
        nodes.push(Node {
            ns,
            name,
            ip: Ipv4Addr::new(198, 18, 0, n),
            _pod: pod,
        });
    }
    let client = Netns::new("client");
    veth(&client, "eth0", &lan, "c0");
    lan.ip_batch(&["link set c0 master br0", "link set c0 up"]);
    client.ip_batch(&[
        "link set lo up",
        "link set eth0 up",
        "addr add 198.18.0.50/24 dev eth0",
    ]);
    let etcd = Etcd::start_in(&lan, dir.path(), [198, 18, 0, 100].into());
    Fleet {
        _lan: lan,
        etcd,
        nodes,
        client,
    }
}

/// `shop/web`: node port 30080, `external_traffic_policy: local`, an endpoint on each of
/// `pods` (node numbers).
fn web(pods: &[u8]) -> String {
    let mut yaml = String::from(
        "services:\n  - name: shop/web\n    cluster_ips: [198.19.0.10]\n    \
         ports: [{name: http, port: 80, target_port: 8080, node_port: 30080}]\n    \
         external_traffic_policy: local\n    endpoints:\n",
    );
    for n in pods {
        yaml.push_str(&format!("      - {{ip: 198.18.1.{n}, node: node-{n}}}\n"));
    }
    yaml
}

/// `svcproxyctl put` of `yaml`, run in the client's namespace (etcd is on the LAN).
fn put(fleet: &Fleet, dir: &TempDir, yaml: &str) {
    let path = dir.join("web.yaml");
    std::fs::write(&path, yaml).expect("write table");
    let out = fleet
        .client
        .command(SVCPROXYCTL)
        .args(["--etcd", &fleet.etcd.url(), "put"])
        .arg(&path)
        .output()
        .expect("run svcproxyctl");
    assert!(out.status.success(), "svcproxyctl put: {out:?}");
}

/// What the client gets from `node`'s node port: the answer, `dropped` when the connection
/// times out (`Local` with no endpoint on the node: dropped, as kube-proxy does), or the error
/// (refused: nothing programmed there).
fn ask_node(fleet: &Fleet, node: &Node) -> String {
    let addr = SocketAddr::from((node.ip, NODE_PORT));
    let answer = fleet
        .client
        .run(move || testkit::net::ask(addr, Duration::from_millis(700)));
    match answer {
        Ok(answer) => answer,
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            DROPPED.to_owned()
        }
        Err(e) => format!("error: {e}"),
    }
}

/// Waits until each node answers as `want` says, five times in a row: `Local` must never reach
/// another node's pod.
fn wait_for_answers(fleet: &Fleet, want: &[&str], proxies: &[LoggedChild]) {
    for (node, want) in fleet.nodes.iter().zip(want) {
        let settled = poll(WAIT, Duration::from_millis(100), || {
            let answers: Vec<String> = (0..5).map(|_| ask_node(fleet, node)).collect();
            if answers.iter().all(|a| a == want) {
                Ok(())
            } else {
                Err(answers)
            }
        });
        if let Err(last) = settled {
            let logs: Vec<String> = proxies.iter().map(LoggedChild::log).collect();
            panic!(
                "{} never answered {want:?} (last: {last:?}); logs:\n{}",
                node.name,
                logs.join("\n---\n")
            );
        }
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn three_nodes_follow_one_etcd_catalogue_with_local_policy_and_survive_an_etcd_restart() {
    let dir = TempDir::new("fleet");
    let mut fleet = fleet(&dir);
    put(&fleet, &dir, &web(&[1, 2]));
    let proxies: Vec<LoggedChild> = fleet
        .nodes
        .iter()
        .map(|node| {
            LoggedChild::spawn(
                &format!("svcproxy on {}", node.name),
                node.ns
                    .command(SVCPROXY)
                    .args(["--etcd", &fleet.etcd.url(), "--backend", "iptables"])
                    .args(["--node-name", &node.name])
                    .args(["--node-address", &node.ip.to_string()])
                    .env("RUST_LOG", "info")
                    .env("NO_COLOR", "1"),
            )
            .expect("start svcproxy")
        })
        .collect();

    // Local: each node reaches only its own pod; node-3 has none and drops.
    wait_for_answers(&fleet, &["node-1", "node-2", DROPPED], &proxies);

    // One write reaches all three nodes.
    put(&fleet, &dir, &web(&[1, 2, 3]));
    wait_for_answers(&fleet, &["node-1", "node-2", "node-3"], &proxies);

    // etcd restarts: every node keeps serving meanwhile, then follows the next write.
    fleet.etcd.stop();
    for proxy in &proxies {
        proxy.wait_for_log("etcd watch ended", WAIT);
    }
    wait_for_answers(&fleet, &["node-1", "node-2", "node-3"], &proxies);
    fleet.etcd.resume();
    for proxy in &proxies {
        proxy.wait_for_log("catalogue read again", WAIT);
    }
    put(&fleet, &dir, &web(&[2, 3]));
    wait_for_answers(&fleet, &[DROPPED, "node-2", "node-3"], &proxies);

    for proxy in proxies {
        let (status, log) = proxy.terminate(WAIT);
        assert!(status.success(), "{status}; log:\n{log}");
    }
}
