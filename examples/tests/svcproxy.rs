//! `svcproxy` end to end: the real binary, a real table file, real TCP on loopback.
//!
//! Every address is on loopback (127.0.0.0/8); ports are picked free by the OS. Each wait is
//! bounded, so a broken proxy fails the test instead of hanging it.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::fs::{replace_file, TempDir};
use testkit::net::AnswerServer;
use testkit::netns::Netns;
use testkit::process::LoggedChild;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const WAIT: Duration = Duration::from_secs(10);

/// A backend on `ip:port` (0: any free port) that answers every connection with its name and
/// closes.
fn named_backend(ip: Ipv4Addr, port: u16, name: &str) -> AnswerServer {
    AnswerServer::named((ip, port).into(), name)
}

/// A free TCP port on `ip` (bound, then released: the proxy binds it right after).
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("probe bind")
        .local_addr()
        .expect("probe address")
        .port()
}

fn table(vip: Ipv4Addr, port: u16, backends: &[&AnswerServer]) -> String {
    let mut yaml = format!(
        "node: test\nservices:\n  - name: default/web\n    cluster_ips: [{vip}]\n    ports:\n      - {{name: http, port: {port}, target_port: {}}}\n    endpoints:\n",
        backends.first().map(|b| b.addr().port()).unwrap_or(1)
    );
    for backend in backends {
        assert_eq!(
            backend.addr().port(),
            backends[0].addr().port(),
            "one target port per service"
        );
        yaml.push_str(&format!("      - {{ip: {}}}\n", backend.addr().ip()));
    }
    yaml
}

/// Runs svcproxy to completion on the table at `path` with `flags` (`--dry-run`, `--once`...).
fn run_to_completion(path: &Path, flags: &[&str]) -> std::process::Output {
    Command::new(SVCPROXY)
        .arg("--services")
        .arg(path)
        .args(flags)
        .output()
        .expect("run svcproxy")
}

/// What the service at `addr` answers, or the error.
fn ask(addr: SocketAddr) -> std::io::Result<String> {
    testkit::net::ask(addr, Duration::from_secs(2))
}

/// Asks until the answer is `want` (bounded by WAIT).
fn wait_for_answer(addr: SocketAddr, want: &str) {
    let answered = poll(WAIT, Duration::from_millis(50), || match ask(addr) {
        Ok(answer) if answer == want => Ok(()),
        other => Err(other),
    });
    if let Err(last) = answered {
        panic!("{addr} never answered {want:?}; last: {last:?}");
    }
}

/// A running svcproxy whose stderr is collected; killed on drop.
fn start_proxy(args: &[&str]) -> LoggedChild {
    LoggedChild::spawn(
        "svcproxy",
        Command::new(SVCPROXY)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy")
}

/// svcproxy watching `dir/table.yaml` (polled every 50 ms, plus `flags`), which serves
/// `default/web` on `vip` (a free port) from `backend`; returns once the service answers with the
/// backend's `name`, with the proxy, the table's path and the service's address.
fn watching(
    dir: &TempDir,
    vip: Ipv4Addr,
    backend: &AnswerServer,
    name: &str,
    flags: &[&str],
) -> (LoggedChild, PathBuf, SocketAddr) {
    let service = SocketAddr::from((vip, free_port(vip)));
    let path = dir.join("table.yaml");
    std::fs::write(&path, table(vip, service.port(), &[backend])).expect("write table");
    let mut args = vec![
        "--services",
        path.to_str().expect("utf-8 path"),
        "--poll-interval-ms",
        "50",
    ];
    args.extend_from_slice(flags);
    let proxy = start_proxy(&args);
    wait_for_answer(service, name);
    (proxy, path, service)
}

#[test]
fn applies_replaced_file_keeps_table_on_invalid_change_and_stops_on_sigterm() {
    let dir = TempDir::new("watch");
    let vip = Ipv4Addr::new(127, 0, 0, 21);
    let blue = named_backend(Ipv4Addr::new(127, 0, 0, 22), 0, "blue");
    // The same target port on another address, so that the table can list either.
    let green = named_backend(Ipv4Addr::new(127, 0, 0, 23), blue.addr().port(), "green");
    let (proxy, path, service) = watching(&dir, vip, &blue, "blue", &[]);
    let port = service.port();

    // An editor-style replacement is picked up.
    replace_file(&path, table(vip, port, &[&green]));
    wait_for_answer(service, "green");

    // A file that does not parse is reported with its line and column, and the running table
    // stays.
    replace_file(
        &path,
        "services:\n  - name: default/web\n    prots: [{port: 80}]\n",
    );
    proxy.wait_for_log("ignoring the changed table file", WAIT);
    assert!(
        proxy.log().contains("table.yaml:3:5: unknown field"),
        "log:\n{}",
        proxy.log()
    );
    assert_eq!(ask(service).expect("still served"), "green");

    // A value out of range is reported by service port and field; that service keeps its last
    // good version running.
    replace_file(
        &path,
        "services:\n  - name: default/web\n    ports: [{name: http, port: 99999}]\n",
    );
    proxy.wait_for_log("skipped (invalid", WAIT);
    assert!(
        proxy
            .log()
            .contains("services[0].ports[0].port: 99999 is outside 1-65535"),
        "log:\n{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("its last good version runs"),
        "log:\n{}",
        proxy.log()
    );
    assert_eq!(ask(service).expect("still served"), "green");

    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

/// The health-check node port of a `local` external-policy service, as a load balancer polls it.
fn health_status(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    testkit::net::http_get(addr, "/healthz", Duration::from_secs(2))
}

#[test]
fn serves_health_check_node_ports_of_local_services() {
    let dir = TempDir::new("health");
    let node_ip = Ipv4Addr::new(127, 0, 0, 41);
    let backend = named_backend(Ipv4Addr::new(127, 0, 0, 42), 0, "local");
    let health = free_port(node_ip);
    let node_port = free_port(node_ip);
    let service_port = free_port(Ipv4Addr::new(127, 0, 0, 43));
    let table = |ready: bool| {
        format!(
            "node: node-a\nservices:\n  - name: shop/web\n    cluster_ips: [127.0.0.43]\n    ports: [{{port: {service_port}, target_port: {}, node_port: {node_port}}}]\n    external_traffic_policy: local\n    health_check_node_port: {health}\n    endpoints: [{{ip: 127.0.0.42, node: node-a, ready: {ready}, serving: true, terminating: {}}}]\n",
            backend.addr().port(),
            !ready
        )
    };
    let path = dir.join("table.yaml");
    std::fs::write(&path, table(true)).expect("write table");
    let proxy = start_proxy(&[
        "--services",
        path.to_str().expect("utf-8 path"),
        "--node-address",
        "127.0.0.41",
        "--poll-interval-ms",
        "50",
    ]);
    let addr = SocketAddr::from((node_ip, health));
    let wait_for = |want: u16| {
        poll(WAIT, Duration::from_millis(50), || {
            match health_status(addr) {
                Ok((status, body)) if status == want => Ok(body),
                other => Err(other),
            }
        })
        .unwrap_or_else(|last| {
            panic!(
                "{addr} never answered {want}; last: {last:?}; log:\n{}",
                proxy.log()
            )
        })
    };
    let body = wait_for(200);
    assert!(body.contains("\"localEndpoints\":1"), "{body}");
    assert!(body.contains("\"name\":\"web\""), "{body}");

    // The only local endpoint starts terminating: the node tells the load balancer to go away.
    replace_file(&path, table(false));
    let body = wait_for(503);
    assert!(body.contains("\"localEndpoints\":0"), "{body}");

    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn dry_run_prints_listeners_and_endpoints_without_binding() {
    let dir = TempDir::new("dry");
    let path = dir.join("table.yaml");
    std::fs::write(
        &path,
        "services:\n  - name: shop/web\n    cluster_ips: [127.0.0.31]\n    ports: [{name: http, port: 18080, target_port: 9080}]\n    endpoints: [{ip: 127.0.0.32}, {ip: 127.0.0.33}]\n",
    )
    .expect("write table");
    let out = run_to_completion(&path, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tcp 127.0.0.31:18080 shop/web:http"),
        "stdout:\n{stdout}"
    );
    assert!(
        stdout.contains("127.0.0.32:9080") && stdout.contains("127.0.0.33:9080"),
        "stdout:\n{stdout}"
    );
    // Nothing was bound: the port is still free.
    TcpListener::bind("127.0.0.31:18080").expect("dry run bound nothing");
}

#[test]
fn dry_run_warns_of_a_port_whose_endpoints_all_have_weight_zero() {
    let dir = TempDir::new("dry-weight");
    let path = dir.join("table.yaml");
    std::fs::write(
        &path,
        "services:\n  - name: shop/drained\n    cluster_ips: [127.0.0.34]\n    ports: [{name: http, port: 18081}]\n    endpoints: [{ip: 127.0.0.35, weight: 0}, {ip: 127.0.0.36, weight: 0}]\n  - name: shop/web\n    cluster_ips: [127.0.0.37]\n    ports: [{name: http, port: 18082}]\n    endpoints: [{ip: 127.0.0.35, weight: 0}, {ip: 127.0.0.36}]\n",
    )
    .expect("write table");
    let out = run_to_completion(&path, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a warning is no error; stderr: {stderr}"
    );
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("# warning: "))
        .collect();
    assert_eq!(
        warnings,
        ["# warning: services[shop/drained].ports[http].endpoints: every endpoint has weight 0: \
          new connections are rejected (open ones drain)"],
        "stdout:\n{stdout}"
    );
    assert!(
        stdout.contains("tcp 127.0.0.34:18081 shop/drained:http cluster-ip rr -> reject"),
        "the port still runs, rejecting; stdout:\n{stdout}"
    );
    // The tracker logged it too, naming the service port.
    assert!(
        stderr.contains("WARN") && stderr.contains("shop/drained:http"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn invalid_file_at_start_fails_with_file_line_and_column() {
    let dir = TempDir::new("bad");
    let path = dir.join("table.yaml");
    std::fs::write(&path, "services:\n  - name: default/web\n    portz: []\n")
        .expect("write table");
    let out = run_to_completion(&path, &["--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("table.yaml:3:5"), "stderr:\n{stderr}");
    assert!(stderr.contains("unknown field"), "stderr:\n{stderr}");
}

#[test]
fn once_syncs_prints_the_report_and_exits() {
    let dir = TempDir::new("once");
    let vip = Ipv4Addr::new(127, 0, 0, 41);
    let port = free_port(vip);
    let backend = named_backend(Ipv4Addr::new(127, 0, 0, 42), 0, "only");
    let path = dir.join("table.yaml");
    std::fs::write(&path, table(vip, port, &[&backend])).expect("write table");
    let out = run_to_completion(&path, &["--once"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("full sync: 1 service ports, 1 endpoints"),
        "stdout:\n{stdout}"
    );
}

#[test]
fn unbindable_address_is_reported_and_the_rest_applies() {
    let dir = TempDir::new("bind");
    let taken = TcpListener::bind("127.0.0.51:0").expect("occupy a port");
    let taken_port = taken.local_addr().expect("address").port();
    let backend = named_backend(Ipv4Addr::new(127, 0, 0, 52), 0, "ok");
    let free = free_port(Ipv4Addr::new(127, 0, 0, 53));
    let yaml = format!(
        "services:\n  - name: default/clash\n    cluster_ips: [127.0.0.51]\n    ports: [{{port: {taken_port}, target_port: {tp}}}]\n    endpoints: [{{ip: 127.0.0.52}}]\n  - name: default/fine\n    cluster_ips: [127.0.0.53]\n    ports: [{{port: {free}, target_port: {tp}}}]\n    endpoints: [{{ip: 127.0.0.52}}]\n",
        tp = backend.addr().port()
    );
    let path = dir.join("table.yaml");
    std::fs::write(&path, yaml).expect("write table");
    let proxy = start_proxy(&["--services", path.to_str().expect("utf-8 path")]);
    wait_for_answer(SocketAddr::from(([127, 0, 0, 53], free)), "ok");
    proxy.wait_for_log(&format!("127.0.0.51:{taken_port}"), WAIT);
    let log = proxy.log();
    assert!(
        log.contains("Address already in use") || log.contains("address in use"),
        "log:\n{log}"
    );
    drop(taken);
}

#[test]
fn metrics_and_healthz_are_served() {
    let dir = TempDir::new("metrics");
    let vip = Ipv4Addr::new(127, 0, 0, 61);
    let backend = named_backend(Ipv4Addr::new(127, 0, 0, 62), 0, "m");
    let status_port = free_port(Ipv4Addr::LOCALHOST);
    let status_addr = format!("127.0.0.1:{status_port}");
    let (proxy, path, service) =
        watching(&dir, vip, &backend, "m", &["--metrics-addr", &status_addr]);
    let port = service.port();
    let get = |path: &str| -> String {
        let mut stream = TcpStream::connect(&status_addr).expect("connect status server");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        response
    };
    let health = get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "healthz: {health}");
    let metrics = get("/metrics");
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
        "metrics:\n{metrics}"
    );
    assert!(
        metrics.contains("service_port=\"default/web:http\""),
        "metrics:\n{metrics}"
    );
    assert!(health.contains("\"degraded\": false"), "healthz: {health}");

    // A second service on web's VIP and port: skipped by name, shown by /healthz and counted.
    let mut clashing = table(vip, port, &[&backend]);
    clashing.push_str(&format!(
        "  - name: default/copy\n    cluster_ips: [{vip}]\n    ports: [{{name: http, port: {port}}}]\n"
    ));
    replace_file(&path, clashing);
    proxy.wait_for_log("skipped (clash)", WAIT);
    let degraded = poll(WAIT, Duration::from_millis(50), || {
        let health = get("/healthz");
        if health.contains("\"degraded\": true") {
            Ok(health)
        } else {
            Err(health)
        }
    })
    .expect("healthz shows the skipped port");
    assert!(
        degraded.starts_with("HTTP/1.1 200"),
        "still healthy: {degraded}"
    );
    assert!(
        degraded.contains("default/copy:http: skipped (clash)"),
        "healthz: {degraded}"
    );
    let metrics = get("/metrics");
    assert!(
        metrics.contains("svcproxy_sync_skipped_service_ports{reason=\"clash\"} 1"),
        "metrics:\n{metrics}"
    );
    assert_eq!(
        ask(SocketAddr::from((vip, port))).expect("web still served"),
        "m"
    );
    drop(proxy);
}

/// A table file in `dir` with one service, default/web at 198.19.0.10:80 (target port 8080), on
/// `endpoints`.
fn web_table(dir: &TempDir, endpoints: &[&str]) -> std::path::PathBuf {
    let path = dir.join("table.yaml");
    let endpoints: Vec<String> = endpoints.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    std::fs::write(
        &path,
        format!(
            "services:\n  - name: default/web\n    cluster_ips: [198.19.0.10]\n    ports: [{{name: http, port: 80, target_port: 8080}}]\n    endpoints: [{}]\n",
            endpoints.join(", ")
        ),
    )
    .expect("write table");
    path
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn iptables_backend_once_programs_our_chains_in_a_namespace() {
    let dir = TempDir::new("iptables");
    let path = web_table(&dir, &["198.18.1.10", "198.18.1.11"]);
    let ns = Netns::new("once");
    let out = ns.exec(
        SVCPROXY,
        &[
            "--services",
            path.to_str().expect("utf-8 path"),
            "--backend",
            "iptables",
            "--once",
        ],
    );
    assert!(
        out.status.success(),
        "svcproxy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("full sync: 1 service ports, 2 endpoints"),
        "stdout:\n{stdout}"
    );

    let save = ns.exec("iptables-save", &["-t", "nat"]);
    let rules = String::from_utf8_lossy(&save.stdout);
    assert!(
        rules.contains("-A PREROUTING -m comment --comment \"service portals\" -j SVCP-SERVICES"),
        "{rules}"
    );
    // The service's rules, by name: in a chain of its own (iptables-legacy) or inline in the
    // dispatch chain, guarded by its VIP and port (iptables-nft's default layout).
    assert!(
        rules.contains("--comment \"default/web:http cluster IP\"")
            || rules.contains(
                "-A SVCP-SERVICES -d 198.19.0.10/32 -p tcp -m comment --comment \"default/web:http"
            ),
        "{rules}"
    );
    assert!(
        rules.contains("--to-destination 198.18.1.10:8080"),
        "{rules}"
    );
    assert!(
        rules.contains("--to-destination 198.18.1.11:8080"),
        "{rules}"
    );
}

/// kube-proxy's conntrack tuning through svcproxy's flags, in a namespace of the test's: the TCP
/// timeouts (per namespace) are set there after the sync; the table size (global, read-only
/// outside the host's namespace) is refused and logged, and the run still succeeds. The host's
/// values are read before and after: untouched.
#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn conntrack_tuning_sets_the_namespace_timeouts_and_leaves_the_host_alone() {
    let dir = TempDir::new("ct-tune");
    let path = web_table(&dir, &["198.18.1.10"]);
    let sysctl = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
    let max = "/proc/sys/net/netfilter/nf_conntrack_max";
    let read = |p: &str| std::fs::read_to_string(p).map(|v| v.trim().to_owned());
    let ns = Netns::new("ct-tune");
    let huge = "2000000000";
    // (Before the run the module may not be loaded yet: then there is nothing to compare.)
    let host_before = (read(max).ok(), read(sysctl).ok());
    let out = ns.exec(
        SVCPROXY,
        &[
            "--services",
            path.to_str().expect("utf-8 path"),
            "--backend",
            "iptables",
            "--once",
            "--conntrack-max-per-core",
            huge,
            "--conntrack-tcp-timeout-established",
            "2h",
            "--conntrack-tcp-timeout-close-wait",
            "7m",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "svcproxy failed: {stderr}");
    // The sync loaded nf_conntrack (NAT rules), so the files exist now.
    let in_ns =
        |p: &'static str| ns.run(move || std::fs::read_to_string(p).map(|v| v.trim().to_owned()));
    assert_eq!(in_ns(sysctl).expect("read in the namespace"), "7200");
    assert_eq!(
        in_ns("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait").expect("read"),
        "420"
    );
    assert!(
        stderr.contains("conntrack not tuned") && stderr.contains("nf_conntrack_max"),
        "{stderr}"
    );
    let host_after = (read(max).ok(), read(sysctl).ok());
    assert_ne!(
        host_after.0.as_deref(),
        Some(huge),
        "the host's table size changed"
    );
    if host_before.0.is_some() {
        assert_eq!(
            host_before, host_after,
            "the host's conntrack settings changed"
        );
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn nftables_backend_once_programs_our_table_and_cleanup_removes_only_it() {
    let dir = TempDir::new("nftables");
    let path = web_table(&dir, &["198.18.1.10", "198.18.1.11"]);
    let ns = Netns::new("nft-once");
    // A table of someone else's, which our cleanup must leave as it is.
    let foreign =
        "table ip kube-proxy {\n\tchain services {\n\t\tip daddr 198.19.0.99 drop\n\t}\n}\n";
    let foreign_file = dir.join("foreign.nft");
    std::fs::write(&foreign_file, foreign).expect("write foreign table");
    let loaded = ns.exec("nft", &["-f", foreign_file.to_str().expect("utf-8 path")]);
    assert!(
        loaded.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let table = path.to_str().expect("utf-8 path");

    let out = ns.exec(
        SVCPROXY,
        &["--services", table, "--backend", "nftables", "--once"],
    );
    assert!(
        out.status.success(),
        "svcproxy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("full sync: 1 service ports, 2 endpoints"),
        "stdout:\n{stdout}"
    );
    let listed = ns.exec("nft", &["list", "table", "inet", "svcproxy"]);
    let rules = String::from_utf8_lossy(&listed.stdout);
    assert!(
        rules.contains("198.19.0.10 . tcp . 80 : goto service-2"),
        "{rules}"
    );
    assert!(rules.contains(": 198.18.1.10 . 8080"), "{rules}");
    assert!(rules.contains(": 198.18.1.11 . 8080"), "{rules}");

    // A second --once over the table in place writes nothing new and still succeeds.
    let again = ns.exec(
        SVCPROXY,
        &["--services", table, "--backend", "nftables", "--once"],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let relisted = ns.exec("nft", &["list", "table", "inet", "svcproxy"]);
    assert_eq!(String::from_utf8_lossy(&relisted.stdout), rules);

    let cleaned = ns.exec(SVCPROXY, &["--cleanup", "--backend", "nftables"]);
    assert!(
        cleaned.status.success(),
        "{}",
        String::from_utf8_lossy(&cleaned.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&cleaned.stdout),
        "nftables: removed table inet svcproxy\n"
    );
    let ruleset = ns.exec("nft", &["list", "ruleset"]);
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(!ruleset.contains("svcproxy"), "{ruleset}");
    assert!(ruleset.contains("ip daddr 198.19.0.99 drop"), "{ruleset}");
    let again = ns.exec(SVCPROXY, &["--cleanup", "--backend", "nftables"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "nftables: nothing of ours (table inet svcproxy)\n"
    );
}

// === Hostile files (issue #10) ===

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}: {status}", path.display());
}

/// Runs svcproxy with `args` to its exit and returns its status and stderr; fails the test (and
/// kills it) if it runs longer than WAIT: a proxy frozen on its table file must fail, not hang
/// the suite.
fn run_bounded(dir: &TempDir, args: &[&str]) -> (std::process::ExitStatus, String) {
    let log_path = dir.join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("create log");
    let mut child = Command::new(SVCPROXY)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start svcproxy");
    let exited = poll(WAIT, Duration::from_millis(20), || match child.try_wait() {
        Ok(Some(status)) => Ok(status),
        other => Err(other.err()),
    });
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    match exited {
        Ok(status) => (status, read_log()),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "svcproxy {args:?} still ran after {WAIT:?}; log:\n{}",
                read_log()
            );
        }
    }
}

#[test]
fn fifo_or_device_at_the_table_path_fails_at_start_with_a_clear_error() {
    let dir = TempDir::new("fifo-start");
    let fifo = dir.join("table.yaml");
    mkfifo(&fifo);
    let zero = dir.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let logs = TempDir::new("fifo-start-logs");
    for (path, kind) in [
        (&fifo, "a FIFO"),
        (&zero, "a character device"),
        (&dir.join(""), "a directory"),
    ] {
        // Bounded: a proxy that opened the FIFO would block forever, one that read /dev/zero
        // would grow until killed.
        let (status, log) = run_bounded(
            &logs,
            &[
                "--services",
                path.to_str().expect("utf-8 path"),
                "--dry-run",
            ],
        );
        assert!(!status.success(), "{}: exit {status}", path.display());
        assert!(
            log.contains(&format!("is {kind}, not a regular file")),
            "{}: log:\n{log}",
            path.display()
        );
    }
}

#[test]
fn table_above_the_size_limit_is_refused_naming_the_flag() {
    let dir = TempDir::new("limit");
    let path = dir.join("table.yaml");
    let backend = named_backend(Ipv4Addr::new(127, 0, 0, 72), 0, "big");
    std::fs::write(&path, table(Ipv4Addr::new(127, 0, 0, 71), 80, &[&backend])).expect("write");
    let out = run_to_completion(&path, &["--dry-run", "--max-table-bytes", "100"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains("larger than the limit of 100 bytes")
            && stderr.contains("raise it with --max-table-bytes"),
        "stderr:\n{stderr}"
    );
    let out = run_to_completion(&path, &["--dry-run", "--max-table-bytes", "100000"]);
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fifo_swapped_in_while_running_is_refused_the_table_stays_and_sigterm_stops_it() {
    let dir = TempDir::new("fifo-run");
    let vip = Ipv4Addr::new(127, 0, 0, 73);
    let backend = named_backend(Ipv4Addr::new(127, 0, 0, 74), 0, "steady");
    let (proxy, path, service) = watching(&dir, vip, &backend, "steady", &[]);
    let port = service.port();

    // A FIFO renamed over the table: no writer ever opens it.
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &path).expect("rename the FIFO over the table");
    proxy.wait_for_log("is a FIFO, not a regular file", WAIT);
    assert_eq!(ask(service).expect("still served"), "steady");
    // Logged once, not at every poll.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        proxy.log().matches("is a FIFO").count(),
        1,
        "log:\n{}",
        proxy.log()
    );

    // A good file again is applied.
    replace_file(
        &path,
        table(vip, port, &[&backend]).replace("node: test", "node: other"),
    );
    proxy.wait_for_log("table file applied", WAIT);

    let started = std::time::Instant::now();
    let status = proxy.terminate(Duration::from_secs(5)).0;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "slow stop: {:?}",
        started.elapsed()
    );
}

#[test]
fn half_written_table_is_not_applied_while_the_writer_pauses() {
    let dir = TempDir::new("half");
    let (web_vip, api_vip) = (Ipv4Addr::new(127, 0, 0, 75), Ipv4Addr::new(127, 0, 0, 76));
    let (web_port, api_port) = (free_port(web_vip), free_port(api_vip));
    let blue = named_backend(Ipv4Addr::new(127, 0, 0, 77), 0, "blue");
    let green = named_backend(Ipv4Addr::new(127, 0, 0, 78), blue.addr().port(), "green");
    let api = named_backend(Ipv4Addr::new(127, 0, 0, 79), 0, "api");
    let service = |name: &str, vip: Ipv4Addr, port: u16, backend: &AnswerServer| {
        format!(
            "  - name: default/{name}\n    cluster_ips: [{vip}]\n    ports: [{{port: {port}, target_port: {}}}]\n    endpoints: [{{ip: {}}}]\n",
            backend.addr().port(),
            backend.addr().ip()
        )
    };
    let head = "node: test\nservices:\n";
    let path = dir.join("table.yaml");
    std::fs::write(
        &path,
        format!(
            "{head}{}{}",
            service("web", web_vip, web_port, &blue),
            service("api", api_vip, api_port, &api)
        ),
    )
    .expect("write table");
    let proxy = start_proxy(&[
        "--services",
        path.to_str().expect("utf-8 path"),
        "--poll-interval-ms",
        "50",
    ]);
    let (web, api_addr) = (
        SocketAddr::from((web_vip, web_port)),
        SocketAddr::from((api_vip, api_port)),
    );
    wait_for_answer(web, "blue");
    wait_for_answer(api_addr, "api");

    // Written in place, in two parts: the first (web moved to green, api not yet written) is a
    // valid table on its own. The writer pauses for ten settle periods in between.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("open the table in place");
    file.write_all(format!("{head}{}", service("web", web_vip, web_port, &green)).as_bytes())
        .expect("write the first part");
    file.flush().expect("flush");
    let pause = std::time::Instant::now();
    while pause.elapsed() < Duration::from_millis(500) {
        assert_eq!(
            ask(api_addr).ok().as_deref(),
            Some("api"),
            "the half-written table was applied; log:\n{}",
            proxy.log()
        );
        assert_eq!(
            ask(web).ok().as_deref(),
            Some("blue"),
            "log:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    file.write_all(service("api", api_vip, api_port, &api).as_bytes())
        .expect("write the rest");
    drop(file);

    wait_for_answer(web, "green");
    assert_eq!(ask(api_addr).expect("api still served"), "api");
    assert!(
        !proxy.log().contains("service_ports=1"),
        "a one-service table was applied; log:\n{}",
        proxy.log()
    );
    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn file_renamed_into_place_applies_without_waiting_for_the_settle_time() {
    let dir = TempDir::new("rename");
    let vip = Ipv4Addr::new(127, 0, 0, 83);
    let blue = named_backend(Ipv4Addr::new(127, 0, 0, 84), 0, "blue");
    let green = named_backend(Ipv4Addr::new(127, 0, 0, 85), blue.addr().port(), "green");
    let (proxy, path, service) = watching(&dir, vip, &blue, "blue", &["--settle-ms", "60000"]);
    let port = service.port();

    // The safe way to write: a temporary file, then a rename. The rename comes a little after
    // the last write, so the inode's change time (the rename) is after its mtime.
    let tmp = dir.join(".table.yaml.tmp");
    std::fs::write(&tmp, table(vip, port, &[&green])).expect("write the temporary file");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(&tmp, &path).expect("rename over the table");
    wait_for_answer(service, "green");

    // Written in place and not closed, the same change waits for the settle time (a minute
    // here); longer than the sync loop's 1 s minimum period, so a sync would have run. (Closed
    // after the write, it applies at once: tests/watch_inotify.rs.)
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("open the table in place");
    file.write_all(table(vip, port, &[&blue]).as_bytes())
        .expect("write in place");
    file.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ask(service).expect("served"),
        "green",
        "log:\n{}",
        proxy.log()
    );
    drop(file);
    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn control_characters_in_names_are_rejected_and_printed_escaped() {
    let dir = TempDir::new("control");
    let path = dir.join("table.yaml");
    std::fs::write(
        &path,
        "services:\n  - name: \"shop/we\\eb\\nFAKE LOG LINE\"\n    cluster_ips: [127.0.0.80]\n    ports: [{name: http, port: 18081}]\n    endpoints: [{ip: 127.0.0.81}]\n  - name: shop/fine\n    cluster_ips: [127.0.0.82]\n    ports: [{name: http, port: 18082}]\n    endpoints: [{ip: 127.0.0.81}]\n",
    )
    .expect("write table");
    let out = Command::new(SVCPROXY)
        .arg("--services")
        .arg(&path)
        .arg("--dry-run")
        .env("NO_COLOR", "1")
        .output()
        .expect("run svcproxy");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stderr:\n{stderr}");
    assert!(stdout.contains("shop/fine:http"), "stdout:\n{stdout}");
    assert!(
        stdout.contains("# shop/we\\u{1b}b\\nFAKE LOG LINE:http: skipped (invalid)"),
        "stdout:\n{stdout}"
    );
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains('\u{1b}'), "raw ESC in {what}:\n{text:?}");
        assert!(
            !text.lines().any(|line| line.starts_with("FAKE LOG LINE")),
            "forged line in {what}:\n{text}"
        );
    }
}

#[test]
fn demo_writes_its_table_in_a_private_directory_and_follows_no_planted_symlink() {
    let tmp = TempDir::new("demo-tmp");
    let victim = tmp.join("victim");
    let demo = LoggedChild::spawn(
        "svcproxy demo",
        Command::new(SVCPROXY)
            .args(["demo", "--metrics-addr", "127.0.0.1:0"])
            .env("TMPDIR", tmp.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
    .expect("start the demo");
    // The old name was `$TMPDIR/svcproxy-demo-<pid>.yaml`: plant a symlink there at once, before
    // the demo gets to write its table.
    let planted = tmp.join(format!("svcproxy-demo-{}.yaml", demo.id()));
    std::os::unix::fs::symlink(&victim, &planted).expect("plant the symlink");
    demo.wait_for_log("sync loop started", WAIT);

    assert!(
        !victim.exists(),
        "the demo wrote through the planted symlink"
    );
    let private: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list TMPDIR")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_dir())
        .collect();
    assert_eq!(private.len(), 1, "{private:?}");
    let dir = &private[0];
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    assert!(
        name.starts_with("svcproxy-demo-") && name.len() >= 14 + 16,
        "{name}"
    );
    let mode = std::fs::metadata(dir).expect("stat").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    let table = dir.join("demo.yaml");
    assert!(
        std::fs::symlink_metadata(&table)
            .expect("the demo table")
            .is_file(),
        "{}",
        table.display()
    );

    // The signal handler is installed once the loop polls for shutdown.
    std::thread::sleep(Duration::from_millis(300));
    let (status, log) = demo.terminate(WAIT);
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
