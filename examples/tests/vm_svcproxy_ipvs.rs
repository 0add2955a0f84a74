//! `svcproxy --backend ipvs` end to end: the real binary, a real table file, real TCP through
//! the kernel's IPVS. The proxy runs in a node namespace; a client and a server namespace hang
//! off it over veth pairs.
//!
//! ```text
//!  client ns                    node ns (svcproxy)                         server ns
//!  eth0 198.18.2.10/24 ── n-cli 198.18.2.1   svcp-ipvs0 (VIPs)   n-srv 198.18.1.1 ── eth0 198.18.1.10 "a"
//!                                            IPVS, ipsets, iptables                      198.18.1.11 "b"
//! ```
//!
//! Needs root and a kernel with IPVS: `scripts/vm-test` runs this binary in a VM. The host's
//! kernel has none, so `scripts/test` skips these tests there (`--skip vm_ipvs_`) and says so.
//! Every test makes its own namespaces and deletes them in a `Drop` guard; every wait is bounded.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use testkit::fs::{replace_file, TempDir};
use testkit::net::AnswerServer;
use testkit::netns::Netns;
use testkit::process::LoggedChild;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const NEEDS_VM: &str = "needs root and IPVS: scripts/vm-test runs it in a VM";
/// Generous: the VM emulates its CPU (TCG), so everything in it is several times slower.
const WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

const WEB_VIP: &str = "198.19.0.10:80";
const API_VIP: &str = "198.19.0.11:80";
const EP_A: &str = "198.18.1.10:8080";
const EP_B: &str = "198.18.1.11:8080";
/// Where svcproxy serves /metrics and /healthz, inside the node namespace.
const STATUS_ADDR: &str = "127.0.0.1:9101";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address literal")
}

// === namespaces ===

/// The node, client and server namespaces, deleted on drop (which also removes everything
/// svcproxy programmed in the node: IPVS, the dummy interface, ipsets, iptables).
struct Topology {
    node: Netns,
    client: Netns,
    server: Netns,
}

impl Topology {
    fn new(tag: &str) -> Self {
        let topo = Self {
            node: Netns::new(&format!("e2e-{tag}-node")),
            client: Netns::new(&format!("e2e-{tag}-cli")),
            server: Netns::new(&format!("e2e-{tag}-srv")),
        };
        // One `ip -batch` per namespace: process starts are slow in the emulated VM.
        topo.node.ip_batch(&[
            "link set lo up".to_owned(),
            format!(
                "link add n-cli type veth peer name eth0 netns {}",
                topo.client.name()
            ),
            format!(
                "link add n-srv type veth peer name eth0 netns {}",
                topo.server.name()
            ),
            "addr add 198.18.2.1/24 dev n-cli".to_owned(),
            "addr add 198.18.1.1/24 dev n-srv".to_owned(),
            "link set n-cli up".to_owned(),
            "link set n-srv up".to_owned(),
        ]);
        for (ns, addrs, gateway) in [
            (&topo.client, &["198.18.2.10/24"][..], "198.18.2.1"),
            (
                &topo.server,
                &["198.18.1.10/24", "198.18.1.11/24"][..],
                "198.18.1.1",
            ),
        ] {
            let mut lines: Vec<String> = addrs
                .iter()
                .map(|addr| format!("addr add {addr} dev eth0"))
                .collect();
            lines.extend([
                "link set lo up".to_owned(),
                "link set eth0 up".to_owned(),
                format!("route add default via {gateway}"),
            ]);
            ns.ip_batch(&lines);
        }
        topo.node.run(|| {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable ip_forward")
        });
        topo
    }

    /// The node's virtual servers, from `ipvsadm -Ln`.
    fn ipvs(&self) -> IpvsListing {
        IpvsListing::parse(&self.node.exec_ok("ipvsadm", &["-Ln"]))
    }

    /// Everything of ours left in the node, by kind; empty after a cleanup.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let links = self.node.exec_ok("ip", &["-o", "link", "show"]);
        if links.contains("svcp-ipvs0") {
            found.push(format!("interface svcp-ipvs0: {links}"));
        }
        let sets = self.node.exec_ok("ipset", &["list", "-n"]);
        if sets.contains("SVCP-IPVS") {
            found.push(format!("ipsets: {sets}"));
        }
        for save in [
            "iptables-legacy-save",
            "iptables-nft-save",
            "ip6tables-legacy-save",
            "ip6tables-nft-save",
        ] {
            let rules = self.node.exec_ok(save, &[]);
            if rules.contains("SVCP-IPVS") {
                found.push(format!("{save}: {rules}"));
            }
        }
        found
    }

    /// How many of `n` new connections to `vip` from the client each backend answered.
    fn spread(&self, vip: &str, n: usize) -> std::io::Result<BTreeMap<String, usize>> {
        let vip = sa(vip);
        self.client.run(move || {
            let mut seen = BTreeMap::new();
            for _ in 0..n {
                *seen.entry(ask(vip)?).or_default() += 1;
            }
            Ok(seen)
        })
    }

    /// Asks until `n` connections in a row to `vip` are answered by exactly `want`; bounded.
    fn wait_for_spread(&self, vip: &str, n: usize, want: &[&str], proxy: &LoggedChild) {
        let spread = poll(WAIT, Duration::from_millis(200), || {
            match self.spread(vip, n) {
                Ok(seen) if seen.keys().map(String::as_str).eq(want.iter().copied()) => Ok(()),
                other => Err(other),
            }
        });
        let Err(last) = spread else { return };
        panic!(
            "{vip} was never answered by exactly {want:?} over {n} connections; last: {last:?}\n\
             ipvsadm:\n{}\nsvcproxy log:\n{}",
            self.ipvs().text,
            proxy.log()
        );
    }

    /// Waits until `ipvsadm -Ln` lists `want` (real servers at weight 0 are draining and left
    /// out); bounded.
    fn wait_for_ipvs(
        &self,
        want: &BTreeMap<String, Vec<String>>,
        proxy: &LoggedChild,
    ) -> IpvsListing {
        poll(WAIT, Duration::from_millis(200), || {
            let listing = self.ipvs();
            if &listing.serving() == want {
                Ok(listing)
            } else {
                Err(listing)
            }
        })
        .unwrap_or_else(|listing| {
            panic!(
                "ipvsadm never listed {want:?}; last:\n{}\nsvcproxy log:\n{}",
                listing.text,
                proxy.log()
            )
        })
    }

    /// GET `path` from svcproxy's status server in the node namespace: the whole response.
    fn status_get(&self, path: &str) -> std::io::Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: svcproxy\r\nConnection: close\r\n\r\n");
        self.node.run(move || {
            let mut stream = TcpStream::connect_timeout(&sa(STATUS_ADDR), CONNECT_TIMEOUT)?;
            stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
    }
}

// === backends and clients ===

/// TCP servers in the server namespace that answer each connection with their name and close.
/// Stopped on drop.
fn start_backends(topo: &Topology, named: &[(&str, &str)]) -> Vec<AnswerServer> {
    named
        .iter()
        .map(|&(addr, name)| {
            let addr = sa(addr);
            // Bound in the server namespace; the socket stays there, served from any thread.
            let listener = topo.server.run(move || {
                TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind backend {addr}: {e}"))
            });
            let name = name.to_owned();
            AnswerServer::start(listener, move |_| name.clone())
        })
        .collect()
}

/// The name the backend behind `addr` answers with (run from the client namespace).
fn ask(addr: SocketAddr) -> std::io::Result<String> {
    testkit::net::ask(addr, CONNECT_TIMEOUT)
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

// === ipvsadm ===

/// `ipvsadm -Ln`, parsed: each virtual server ("TCP 198.19.0.10:80 rr") with its real servers
/// ("198.18.1.10:8080 Masq 1"), sorted.
#[derive(Debug)]
struct IpvsListing {
    text: String,
    services: BTreeMap<String, Vec<String>>,
}

impl IpvsListing {
    fn parse(text: &str) -> Self {
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current = None;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["TCP" | "UDP" | "SCTP", ..] => {
                    let key = words.join(" ");
                    services.entry(key.clone()).or_default();
                    current = Some(key);
                }
                ["->", "RemoteAddress:Port", ..] => {}
                ["->", addr, forward, weight, ..] => {
                    let key = current.as_ref().unwrap_or_else(|| {
                        panic!("real server before any virtual server in:\n{text}")
                    });
                    services
                        .entry(key.clone())
                        .or_default()
                        .push(format!("{addr} {forward} {weight}"));
                }
                _ => {}
            }
        }
        for real in services.values_mut() {
            real.sort();
        }
        Self {
            text: text.to_owned(),
            services,
        }
    }

    /// The virtual servers with the real servers that take new connections (weight above 0).
    fn serving(&self) -> BTreeMap<String, Vec<String>> {
        self.services
            .iter()
            .map(|(vs, real)| {
                let serving = real
                    .iter()
                    .filter(|rs| !rs.ends_with(" 0"))
                    .cloned()
                    .collect();
                (vs.clone(), serving)
            })
            .collect()
    }
}

/// The listing expected for `services`: (virtual server, real servers) pairs.
fn expected(services: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    services
        .iter()
        .map(|(vs, real)| {
            (
                (*vs).to_owned(),
                real.iter().map(|rs| format!("{rs} Masq 1")).collect(),
            )
        })
        .collect()
}

// === the table file ===

/// A table of TCP services: (name, cluster IP:port, endpoints), all with target port 8080.
fn table(services: &[(&str, &str, &[&str])]) -> String {
    let mut yaml = String::from("node: node-a\nservices:\n");
    for (name, vip, endpoints) in services {
        let vip = sa(vip);
        yaml.push_str(&format!(
            "  - name: default/{name}\n    cluster_ips: [{}]\n    ports: [{{name: http, port: {}, target_port: 8080}}]\n    endpoints:\n",
            vip.ip(),
            vip.port()
        ));
        for endpoint in *endpoints {
            assert_eq!(sa(endpoint).port(), 8080, "one target port per service");
            yaml.push_str(&format!("      - {{ip: {}}}\n", sa(endpoint).ip()));
        }
    }
    yaml
}

// === svcproxy ===

/// The flags every run here shares: the ipvs backend, the node's address, the pod network.
fn ipvs_flags(table: &Path) -> Vec<String> {
    [
        "--services",
        table.to_str().expect("utf-8 temp path"),
        "--backend",
        "ipvs",
        "--node-address",
        "198.18.2.1",
        "--cluster-cidr",
        "198.18.1.0/24",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// svcproxy running in the node namespace, its stderr collected; killed on drop.
fn start_proxy(topo: &Topology, args: &[String]) -> LoggedChild {
    // `ip netns exec` execs svcproxy in place: SIGTERM to the child reaches svcproxy itself.
    LoggedChild::spawn(
        "svcproxy",
        topo.node
            .command(SVCPROXY)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
    .unwrap_or_else(|e| panic!("start svcproxy: {e}; {NEEDS_VM}"))
}

// === the tests ===

#[test]
#[ignore = "needs root and IPVS: scripts/vm-test runs it in a VM"]
fn vm_ipvs_svcproxy_serves_the_file_follows_edits_and_cleans_up_on_sigterm() {
    let topo = Topology::new("life");
    let _backends = start_backends(&topo, &[(EP_A, "a"), (EP_B, "b")]);
    let dir = TempDir::new("life");
    let path = dir.join("table.yaml");
    std::fs::write(&path, table(&[("web", WEB_VIP, &[EP_A, EP_B])])).expect("write table");

    let mut args = ipvs_flags(&path);
    args.extend(
        [
            "--cleanup-on-exit",
            "--poll-interval-ms",
            "100",
            "--metrics-addr",
            STATUS_ADDR,
        ]
        .map(str::to_owned),
    );
    let proxy = start_proxy(&topo, &args);

    // Both endpoints take connections to the cluster IP (round robin: half each).
    topo.wait_for_spread(WEB_VIP, 2, &["a", "b"], &proxy);
    let seen = topo.spread(WEB_VIP, 20).expect("20 connections to web");
    assert_eq!(
        seen,
        BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 10)]),
        "round robin over 20 connections"
    );
    let listing = topo.ipvs();
    assert_eq!(
        listing.services,
        expected(&[("TCP 198.19.0.10:80 rr", &[EP_A, EP_B])]),
        "ipvsadm -Ln:\n{}",
        listing.text
    );
    let vips = topo
        .node
        .exec_ok("ip", &["-o", "-4", "addr", "show", "dev", "svcp-ipvs0"]);
    assert!(vips.contains("198.19.0.10/32"), "{vips}");
    assert!(
        topo.leftovers().len() >= 2,
        "the ipsets and iptables rules that cleanup must remove were not programmed: {:?}",
        topo.leftovers()
    );

    // Health and metrics, from inside the node namespace, once the first sync has finished
    // (IPVS serves before the companion ipsets and rules are written).
    proxy.wait_for_log("sync complete", WAIT);
    let health = topo.status_get("/healthz").expect("GET /healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "healthz: {health}");
    let metrics = topo.status_get("/metrics").expect("GET /metrics");
    assert_eq!(metric(&metrics, "svcproxy_sync_service_ports"), 1.0);
    assert_eq!(metric(&metrics, "svcproxy_sync_endpoints"), 2.0);
    for positive in [
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "svcproxy_ipvs_objects_written_total",
    ] {
        assert!(
            metric(&metrics, positive) > 0.0,
            "{positive} in:\n{metrics}"
        );
    }

    // An edit (renamed over the file) removes endpoint b from web and adds an api service on b.
    replace_file(
        &path,
        table(&[("web", WEB_VIP, &[EP_A]), ("api", API_VIP, &[EP_B])]),
    );
    topo.wait_for_ipvs(
        &expected(&[
            ("TCP 198.19.0.10:80 rr", &[EP_A]),
            ("TCP 198.19.0.11:80 rr", &[EP_B]),
        ]),
        &proxy,
    );
    topo.wait_for_spread(WEB_VIP, 6, &["a"], &proxy);
    topo.wait_for_spread(API_VIP, 6, &["b"], &proxy);

    // An edit that does not parse is reported with its place, and the running table stays.
    // (One that parses but holds a bad value skips only that service: examples/tests/svcproxy.rs.)
    replace_file(
        &path,
        "services:\n  - name: default/web\n    prots: [{port: 80}]\n",
    );
    proxy.wait_for_log("ignoring the changed table file", WAIT);
    assert!(
        proxy.log().contains(":3:5: unknown field"),
        "log:\n{}",
        proxy.log()
    );
    let listing = topo.ipvs();
    assert_eq!(
        listing.serving(),
        expected(&[
            ("TCP 198.19.0.10:80 rr", &[EP_A]),
            ("TCP 198.19.0.11:80 rr", &[EP_B]),
        ]),
        "ipvsadm -Ln after the invalid edit:\n{}",
        listing.text
    );
    let web = topo.spread(WEB_VIP, 4).expect("web still served");
    let api = topo.spread(API_VIP, 4).expect("api still served");
    assert_eq!(web, BTreeMap::from([("a".to_owned(), 4)]));
    assert_eq!(api, BTreeMap::from([("b".to_owned(), 4)]));

    // SIGTERM with --cleanup-on-exit: a clean exit that leaves nothing of ours.
    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "exit status {status}; log:\n{log}");
    let listing = topo.ipvs();
    assert!(
        listing.services.is_empty(),
        "virtual servers left after cleanup:\n{}\nlog:\n{log}",
        listing.text
    );
    assert_eq!(topo.leftovers(), Vec::<String>::new(), "log:\n{log}");
    assert!(
        topo.spread(WEB_VIP, 1).is_err(),
        "the cluster IP still answers after cleanup"
    );
}

#[test]
#[ignore = "needs root and IPVS: scripts/vm-test runs it in a VM"]
fn vm_ipvs_once_leaves_the_kernel_serving_and_a_later_cleanup_removes_only_ours() {
    let topo = Topology::new("once");
    let _backends = start_backends(&topo, &[(EP_A, "a"), (EP_B, "b")]);
    let dir = TempDir::new("once");
    let path = dir.join("table.yaml");
    std::fs::write(&path, table(&[("web", WEB_VIP, &[EP_A, EP_B])])).expect("write table");

    // --once programs the kernel and exits: the kernel serves on without svcproxy.
    let mut once = topo.node.command(SVCPROXY);
    once.args(ipvs_flags(&path)).arg("--once");
    let out = once
        .output()
        .unwrap_or_else(|e| panic!("run svcproxy --once: {e}; {NEEDS_VM}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "svcproxy --once: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("full sync: 1 service ports, 2 endpoints"),
        "stdout:\n{stdout}"
    );
    let seen = topo
        .spread(WEB_VIP, 10)
        .expect("web served after --once exited");
    assert_eq!(
        seen,
        BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 5)])
    );

    // A virtual server of someone else's, on an address that is not on our interface.
    topo.node
        .exec_ok("ipvsadm", &["-A", "-t", "198.18.2.1:9999", "-s", "rr"]);
    topo.node.exec_ok(
        "ipvsadm",
        &["-a", "-t", "198.18.2.1:9999", "-r", EP_A, "-m"],
    );

    // A later run with another table and --cleanup-on-exit removes the first run's service too (its
    // VIP is on our interface), and leaves the foreign one.
    std::fs::write(&path, table(&[("api", API_VIP, &[EP_B])])).expect("write table");
    let mut args = ipvs_flags(&path);
    args.push("--cleanup-on-exit".to_owned());
    let proxy = start_proxy(&topo, &args);
    let foreign = ("TCP 198.18.2.1:9999 rr", &[EP_A][..]);
    topo.wait_for_ipvs(
        &expected(&[("TCP 198.19.0.11:80 rr", &[EP_B]), foreign]),
        &proxy,
    );
    topo.wait_for_spread(API_VIP, 4, &["b"], &proxy);
    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "exit status {status}; log:\n{log}");
    let listing = topo.ipvs();
    assert_eq!(
        listing.services,
        expected(&[foreign]),
        "only the foreign virtual server may stay:\n{}\nlog:\n{log}",
        listing.text
    );
    assert_eq!(topo.leftovers(), Vec::<String>::new(), "log:\n{log}");
}

#[test]
#[ignore = "needs root and IPVS: scripts/vm-test runs it in a VM"]
fn vm_ipvs_cleanup_removes_what_once_left_and_keeps_the_foreign_virtual_server() {
    let topo = Topology::new("cleanup");
    let _backends = start_backends(&topo, &[(EP_A, "a")]);
    let dir = TempDir::new("cleanup");
    let path = dir.join("table.yaml");
    std::fs::write(&path, table(&[("web", WEB_VIP, &[EP_A])])).expect("write table");
    let mut once = topo.node.command(SVCPROXY);
    once.args(ipvs_flags(&path)).arg("--once");
    let out = once
        .output()
        .unwrap_or_else(|e| panic!("run svcproxy --once: {e}; {NEEDS_VM}"));
    assert!(
        out.status.success(),
        "svcproxy --once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    topo.node
        .exec_ok("ipvsadm", &["-A", "-t", "198.18.2.1:9999", "-s", "rr"]);

    // kube-proxy's --cleanup: no table, no running proxy; every kernel backend here.
    let cleanup = |backend: Option<&str>| {
        let mut command = topo.node.command(SVCPROXY);
        command.arg("--cleanup").env("NO_COLOR", "1");
        if let Some(backend) = backend {
            command.args(["--backend", backend]);
        }
        let out = command.output().expect("run svcproxy --cleanup");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "--cleanup: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        stdout
    };
    let stdout = cleanup(None);
    assert!(stdout.contains("ipvs: removed "), "stdout:\n{stdout}");
    let listing = topo.ipvs();
    assert_eq!(
        listing.services,
        expected(&[("TCP 198.18.2.1:9999 rr", &[][..])]),
        "only the foreign virtual server may stay:\n{}",
        listing.text
    );
    assert_eq!(topo.leftovers(), Vec::<String>::new());
    let stdout = cleanup(Some("ipvs"));
    assert!(
        stdout.contains("ipvs: nothing of ours"),
        "stdout:\n{stdout}"
    );
}
