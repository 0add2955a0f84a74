//! `svcproxy` as an operator meets it (issue #11): `--cleanup`, privileges checked at start,
//! what a VIP that is not local needs, error lines, colours, per-port metrics, and the README's
//! flag table against `--help`.
//!
//! Tests that program iptables are `#[ignore = "needs root ..."]` and run in a network namespace
//! of their own; the others stay on loopback (or fail a bind on a documentation address). Each
//! wait is bounded.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::fs::{replace_file, TempDir};
use testkit::net::AnswerServer;
use testkit::netns::Netns;
use testkit::process::LoggedChild;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const WAIT: Duration = Duration::from_secs(10);

/// A one-service table: `default/web` on `vip:port`, one endpoint `endpoint:target`.
fn one_service(vip: &str, port: u16, endpoint: &str, target: u16) -> String {
    format!(
        "services:\n  - name: default/web\n    cluster_ips: [{vip}]\n    ports: [{{name: http, port: {port}, target_port: {target}}}]\n    endpoints: [{{ip: {endpoint}}}]\n"
    )
}

fn write_table(dir: &TempDir, yaml: &str) -> String {
    let path = dir.join("table.yaml");
    std::fs::write(&path, yaml).expect("write table");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Runs `command` to its exit, killing it (and failing the test) after WAIT: a proxy that
/// retries forever must fail here, not hang the suite.
fn run_bounded(command: &mut Command) -> (ExitStatus, String, String) {
    let dir = TempDir::new("bounded");
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start svcproxy");
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    match poll(WAIT, Duration::from_millis(20), || match child.try_wait() {
        Ok(Some(status)) => Ok(status),
        other => Err(other.err()),
    }) {
        Ok(status) => (status, read(&out_path), read(&err_path)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still ran after {WAIT:?}; stderr:\n{}",
                read(&err_path)
            );
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// svcproxy in `ns` with `args`, output collected.
fn in_ns(ns: &Netns, args: &[&str]) -> Output {
    ns.command(SVCPROXY)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run svcproxy in the namespace")
}

/// Every line of `iptables-save` and `ip6tables-save` in `ns`.
fn saved_rules(ns: &Netns) -> String {
    let mut all = ns.exec_ok("iptables-save", &[]);
    all.push_str(&ns.exec_ok("ip6tables-save", &[]));
    all
}

/// A namespace with `lo` up and rules of someone else's in nat and filter, which every cleanup
/// must leave.
fn namespace_with_foreign_rules(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&["link", "set", "lo", "up"]);
    for rule in [
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "192.0.2.0/24",
            "-m",
            "comment",
            "--comment",
            "foreign masquerade",
            "-j",
            "MASQUERADE",
        ][..],
        &[
            "-A",
            "INPUT",
            "-s",
            "192.0.2.1/32",
            "-m",
            "comment",
            "--comment",
            "foreign drop",
            "-j",
            "DROP",
        ][..],
    ] {
        ns.exec_ok("iptables", rule);
    }
    ns
}

/// Waits until `proxy` has programmed its hooks in `ns`.
fn wait_for_our_rules(ns: &Netns, proxy: &LoggedChild) {
    let programmed = poll(WAIT, Duration::from_millis(50), || {
        if saved_rules(ns).contains("-j SVCP-SERVICES") {
            Ok(())
        } else {
            Err(())
        }
    });
    assert!(
        programmed.is_ok(),
        "never programmed; log:\n{}",
        proxy.log()
    );
}

fn assert_foreign_rules_kept(rules: &str) {
    for comment in ["foreign masquerade", "foreign drop"] {
        assert!(rules.contains(comment), "{comment} removed:\n{rules}");
    }
}

// === --cleanup ===

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cleanup_removes_what_an_earlier_iptables_run_left_and_nothing_else() {
    let dir = TempDir::new("cleanup");
    let table = write_table(&dir, &one_service("198.19.0.10", 80, "198.18.1.10", 8080));
    let ns = namespace_with_foreign_rules("cleanup");
    let out = in_ns(
        &ns,
        &["--services", &table, "--backend", "iptables", "--once"],
    );
    assert!(out.status.success(), "--once: {}", text(&out.stderr));
    assert!(
        saved_rules(&ns).contains("-j SVCP-SERVICES"),
        "not programmed"
    );

    // No --services, no --backend: every kernel backend whose tools are present.
    let out = in_ns(&ns, &["--cleanup"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("iptables (") && stdout.contains(" jumps from built-in chains and "),
        "stdout:\n{stdout}"
    );
    for chain in ["ipv4 nat SVCP-SERVICES", "ipv4 filter SVCP-FORWARD"] {
        assert!(stdout.contains(chain), "{chain} not listed:\n{stdout}");
    }
    let rules = saved_rules(&ns);
    assert!(!rules.contains("SVCP-"), "left behind:\n{rules}");
    assert_foreign_rules_kept(&rules);

    // Clean: says so, exit 0.
    let out = in_ns(&ns, &["--cleanup", "--backend", "iptables"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("nothing of ours"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cleanup_refuses_while_a_running_instance_owns_the_chains_naming_it() {
    let dir = TempDir::new("cleanup-live");
    let table = write_table(&dir, &one_service("198.19.0.11", 80, "198.18.1.11", 8080));
    let ns = namespace_with_foreign_rules("live");
    let live = LoggedChild::spawn(
        "svcproxy (owner)",
        ns.command(SVCPROXY)
            .args(["--services", &table, "--backend", "iptables"])
            .env("NO_COLOR", "1"),
    )
    .expect("start the owner");
    wait_for_our_rules(&ns, &live);

    let out = in_ns(&ns, &["--cleanup", "--backend", "iptables"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "cleaned under a live owner");
    assert!(
        stderr.contains("svcproxy: iptables: not cleaned up: ")
            && stderr.contains(&format!("pid {} (", live.id()))
            && stderr.contains("stop it first"),
        "stderr:\n{stderr}"
    );
    assert!(
        saved_rules(&ns).contains("-j SVCP-SERVICES"),
        "removed anyway"
    );

    // Stopped without --cleanup-on-exit, it leaves its rules; now they can go.
    let (status, log) = live.terminate(WAIT);
    assert!(status.success(), "owner: {status}; log:\n{log}");
    assert!(
        saved_rules(&ns).contains("-j SVCP-SERVICES"),
        "gone on exit"
    );
    let out = in_ns(&ns, &["--cleanup", "--backend", "iptables"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rules = saved_rules(&ns);
    assert!(!rules.contains("SVCP-"), "left behind:\n{rules}");
    assert_foreign_rules_kept(&rules);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn nftables_cleanup_refuses_while_a_running_instance_owns_the_table_naming_it() {
    let dir = TempDir::new("cleanup-live-nft");
    let table = write_table(&dir, &one_service("198.19.0.13", 80, "198.18.1.13", 8080));
    let ns = Netns::new("live-nft");
    ns.ip(&["link", "set", "lo", "up"]);
    let listed = |ns: &Netns| {
        let out = ns.exec("nft", &["list", "table", "inet", "svcproxy"]);
        out.status.success().then(|| text(&out.stdout))
    };
    let live = LoggedChild::spawn(
        "svcproxy (owner)",
        ns.command(SVCPROXY)
            .args(["--services", &table, "--backend", "nftables"])
            .env("NO_COLOR", "1"),
    )
    .expect("start the owner");
    let programmed = poll(WAIT, Duration::from_millis(50), || {
        listed(&ns)
            .filter(|t| t.contains("198.19.0.13 . tcp . 80"))
            .ok_or(())
    });
    assert!(programmed.is_ok(), "never programmed; log:\n{}", live.log());

    let out = in_ns(&ns, &["--cleanup", "--backend", "nftables"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "cleaned under a live owner");
    assert!(
        stderr.contains("svcproxy: nftables: not cleaned up: ")
            && stderr.contains(&format!("pid {} (", live.id()))
            && stderr.contains("stop it first"),
        "stderr:\n{stderr}"
    );
    assert!(listed(&ns).is_some(), "removed anyway");

    let (status, log) = live.terminate(WAIT);
    assert!(status.success(), "owner: {status}; log:\n{log}");
    let out = in_ns(&ns, &["--cleanup", "--backend", "nftables"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(listed(&ns).is_none(), "left behind");
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cleanup_that_cannot_remove_a_chain_fails_with_one_error_line() {
    let dir = TempDir::new("cleanup-busy");
    let table = write_table(&dir, &one_service("198.19.0.12", 80, "198.18.1.12", 8080));
    let ns = namespace_with_foreign_rules("busy");
    let out = in_ns(
        &ns,
        &["--services", &table, "--backend", "iptables", "--once"],
    );
    assert!(out.status.success(), "--once: {}", text(&out.stderr));
    // Someone else's rule jumps to one of our chains: the kernel refuses to delete it.
    let foreign_jump = ["FORWARD", "-s", "192.0.2.2/32", "-j", "SVCP-FORWARD"];
    ns.exec_ok("iptables", &[&["-A"][..], &foreign_jump[..]].concat());

    let out = in_ns(&ns, &["--cleanup", "--backend", "iptables"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("svcproxy: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr:\n{stderr}");
    let error = errors[0];
    assert!(
        error.starts_with("svcproxy: iptables: not cleaned up: ") && error.contains("(exit code "),
        "stderr:\n{stderr}"
    );
    assert!(!stderr.contains("Some("), "stderr:\n{stderr}");
    // The command and the tool's message appear once each, not once per layer of the error.
    assert_eq!(
        stderr.matches("failed (exit code").count(),
        1,
        "stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("SVCP-FORWARD").count(),
        1,
        "stderr:\n{stderr}"
    );
    assert_foreign_rules_kept(&saved_rules(&ns));

    ns.exec_ok("iptables", &[&["-D"][..], &foreign_jump[..]].concat());
    let out = in_ns(&ns, &["--cleanup", "--backend", "iptables"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cleanup_on_exit_removes_the_chains_when_stopped() {
    let dir = TempDir::new("on-exit");
    let table = write_table(&dir, &one_service("198.19.0.13", 80, "198.18.1.13", 8080));
    let ns = namespace_with_foreign_rules("on-exit");
    let proxy = LoggedChild::spawn(
        "svcproxy",
        ns.command(SVCPROXY)
            .args(["--services", &table, "--backend", "iptables"])
            .arg("--cleanup-on-exit")
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    wait_for_our_rules(&ns, &proxy);
    // The signal handler is installed once the loop polls for shutdown.
    std::thread::sleep(Duration::from_millis(200));
    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
    let rules = saved_rules(&ns);
    assert!(!rules.contains("SVCP-"), "left behind:\n{rules}");
    assert_foreign_rules_kept(&rules);
}

#[test]
fn cleanup_conflicts_with_once_instead_of_silently_doing_nothing() {
    let out = Command::new(SVCPROXY)
        .args(["--once", "--cleanup"])
        .output()
        .expect("run svcproxy");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("'--cleanup' cannot be used with '--once'")
            || text(&out.stderr).contains("'--once' cannot be used with '--cleanup'"),
        "{}",
        text(&out.stderr)
    );
}

// === Privileges and tools, checked once at start ===

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn iptables_backend_without_cap_net_admin_exits_at_once_with_one_sentence() {
    let dir = TempDir::new("nocap");
    let table = write_table(&dir, &one_service("198.19.0.14", 80, "198.18.1.14", 8080));
    // In a namespace of its own all the same: without the check, the proxy would keep trying.
    let ns = Netns::new("nocap");
    let started = Instant::now();
    let (status, stdout, stderr) = run_bounded(
        ns.command("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-all", "--", SVCPROXY])
            .args(["--services", &table, "--backend", "iptables"])
            .env("NO_COLOR", "1"),
    );
    assert!(!status.success(), "stderr:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, no retries; stderr:\n{stderr}");
    assert!(
        lines[0].starts_with("svcproxy: the iptables backend needs the CAP_NET_ADMIN capability"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        !saved_rules(&ns).contains("SVCP-"),
        "programmed without privileges?"
    );
}

#[test]
fn iptables_backend_without_its_tools_names_them_and_exits() {
    let dir = TempDir::new("notools");
    let table = write_table(&dir, &one_service("198.19.0.15", 80, "198.18.1.15", 8080));
    let empty = TempDir::new("empty-path");
    // No iptables on PATH: nothing can be programmed, wherever this runs.
    let (status, _, stderr) = run_bounded(
        Command::new(SVCPROXY)
            .args(["--services", &table, "--backend", "iptables"])
            .env("PATH", empty.path())
            .env("NO_COLOR", "1"),
    );
    assert!(!status.success(), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines,
        [
            "svcproxy: the iptables backend needs iptables, iptables-save, iptables-restore on \
          PATH, not found: install iptables (nft or legacy)"
        ],
        "stderr:\n{stderr}"
    );
}

// === Errors print once ===

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_failed_sync_prints_its_error_once_with_the_exit_code() {
    let dir = TempDir::new("once-error");
    let table = write_table(&dir, &one_service("198.19.0.16", 80, "198.18.1.16", 8080));
    let ns = namespace_with_foreign_rules("once-error");
    // A stale chain of ours that someone else's rule jumps to: the full sync must delete it,
    // and the kernel refuses (the chain is in use).
    let stale = "SVCP-SVC-AAAAAAAAAAAAAAAA";
    ns.exec_ok("iptables", &["-t", "nat", "-N", stale]);
    ns.exec_ok(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-s",
            "192.0.2.3/32",
            "-j",
            stale,
        ],
    );
    let out = in_ns(
        &ns,
        &["--services", &table, "--backend", "iptables", "--once"],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("svcproxy: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr:\n{stderr}");
    assert!(
        errors[0].contains("failed (exit code "),
        "stderr:\n{stderr}"
    );
    assert!(!stderr.contains("Some("), "stderr:\n{stderr}");
    assert_eq!(
        stderr.matches("failed (exit code").count(),
        1,
        "stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("CHAIN_DEL failed").count(),
        1,
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_missing_table_file_names_the_os_error_once() {
    let dir = TempDir::new("missing");
    let path = dir.join("absent.yaml");
    let out = Command::new(SVCPROXY)
        .arg("--services")
        .arg(&path)
        .arg("--dry-run")
        .env("NO_COLOR", "1")
        .output()
        .expect("run svcproxy");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim_end(),
        format!(
            "svcproxy: cannot start with {0}: cannot read table file {0}: No such file or \
             directory (os error 2)",
            path.display()
        ),
        "stderr:\n{stderr}"
    );
}

// === A VIP that is not local (userspace) ===

#[test]
fn userspace_vip_that_is_not_local_says_what_to_do_and_freebind_serves_it() {
    let dir = TempDir::new("nonlocal");
    // A documentation address no host has: the bind fails, nothing else happens.
    let table = write_table(&dir, &one_service("198.18.250.1", 18080, "127.0.0.1", 9));
    let out = Command::new(SVCPROXY)
        .args(["--services", &table, "--once"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run svcproxy");
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "stdout:\n{stdout}");
    let problem = stdout
        .lines()
        .find(|line| line.contains("problem:"))
        .unwrap_or_else(|| panic!("no problem line:\n{stdout}"));
    for needed in [
        "default/web:http",
        "198.18.250.1:18080",
        "198.18.250.1 is not an address of this host",
        "ip addr add 198.18.250.1/32 dev lo",
        "--userspace-capture",
        "--freebind",
    ] {
        assert!(problem.contains(needed), "{needed:?} missing: {problem}");
    }
    // Said once, by whoever handles it (here the one-shot sync's report on stdout): the backend
    // returns the problem and does not also log it.
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("is not an address of this host"),
        "the problem logged as well as reported:\n{stderr}"
    );

    let out = Command::new(SVCPROXY)
        .args(["--services", &table, "--once", "--freebind"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run svcproxy");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn userspace_capture_serves_a_vip_that_is_not_local_and_cleanup_removes_its_chain() {
    let dir = TempDir::new("capture");
    let ns = Netns::new("capture");
    testkit::netns::veth(&ns, "c0", &ns, "c1");
    ns.ip_batch(&[
        "link set lo up",
        "addr add 198.18.0.1/24 dev c0",
        "link set c0 up",
        "link set c1 up",
    ]);
    let backend = ns.run(|| AnswerServer::named("127.0.0.5:0".parse().expect("addr"), "captured"));
    // 198.18.0.100 is routed (via c0) but not an address of the namespace.
    let table = write_table(
        &dir,
        &one_service("198.18.0.100", 80, "127.0.0.5", backend.addr().port()),
    );
    let proxy = LoggedChild::spawn(
        "svcproxy --userspace-capture",
        ns.command(SVCPROXY)
            .args(["--services", &table, "--userspace-capture"])
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    proxy.wait_for_log("sync loop started", WAIT);
    let vip: SocketAddr = "198.18.0.100:80".parse().expect("addr");
    let answer = ns.run(move || {
        poll(WAIT, Duration::from_millis(50), || match testkit::net::ask(
            vip,
            Duration::from_secs(1),
        ) {
            Ok(answer) if answer == "captured" => Ok(answer),
            other => Err(other),
        })
    });
    assert!(answer.is_ok(), "{answer:?}; log:\n{}", proxy.log());

    // Its chain is in use: refused, by name.
    let out = in_ns(&ns, &["--cleanup", "--backend", "userspace"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(&format!("pid {} (", proxy.id())),
        "{}",
        text(&out.stderr)
    );

    std::thread::sleep(Duration::from_millis(200));
    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
    let out = in_ns(&ns, &["--cleanup"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        // Two nat jumps to the redirects, three filter jumps to the verdicts.
        stdout.contains(
            "userspace capture: removed 5 jumps and chain SVCPROXY-CAPTURE (nat redirects, filter verdicts)"
        ),
        "stdout:\n{stdout}"
    );
    let rules = saved_rules(&ns);
    assert!(!rules.contains("SVCPROXY-CAPTURE"), "left behind:\n{rules}");
}

// === Output ===

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = TempDir::new("colour");
    let table = write_table(&dir, &one_service("127.0.0.91", 18091, "127.0.0.92", 9));
    // Piped stderr and no NO_COLOR: a log file, a journal.
    let out = Command::new(SVCPROXY)
        .args(["--services", &table, "--dry-run"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .expect("run svcproxy");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("table loaded"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes:\n{stderr:?}");
}

// === Metrics per service port ===

/// `/metrics` at `addr`; empty while nothing answers there yet.
fn scrape(addr: SocketAddr) -> String {
    testkit::net::http_get(addr, "/metrics", Duration::from_secs(2))
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn series_of<'a>(metrics: &'a str, port: &str) -> Vec<&'a str> {
    let label = format!("service_port=\"{port}\"");
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(&label))
        .collect()
}

#[test]
fn per_port_series_follow_the_protocol_and_go_with_the_port() {
    let dir = TempDir::new("port-metrics");
    let free = |ip: Ipv4Addr| {
        TcpListener::bind((ip, 0))
            .expect("probe")
            .local_addr()
            .expect("addr")
            .port()
    };
    let (vip, status) = (Ipv4Addr::new(127, 0, 0, 93), Ipv4Addr::LOCALHOST);
    let (web_port, dns_port) = (free(vip), free(vip));
    let status_addr = SocketAddr::from((status, free(status)));
    let dns = format!(
        "  - name: default/dns\n    cluster_ips: [{vip}]\n    ports: [{{name: dns, port: {dns_port}, protocol: udp, target_port: 9}}]\n    endpoints: [{{ip: 127.0.0.94}}]\n"
    );
    let both = format!(
        "{}{dns}",
        one_service(&vip.to_string(), web_port, "127.0.0.94", 9)
    );
    let table = write_table(&dir, &both);
    let proxy = LoggedChild::spawn(
        "svcproxy",
        Command::new(SVCPROXY)
            .args(["--services", &table, "--poll-interval-ms", "50"])
            .args(["--metrics-addr", &status_addr.to_string()])
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    let metrics = poll(WAIT, Duration::from_millis(50), || {
        let metrics = scrape(status_addr);
        if series_of(&metrics, "default/dns:dns").is_empty() {
            Err(metrics)
        } else {
            Ok(metrics)
        }
    })
    .unwrap_or_else(|last| panic!("no series; last scrape:\n{last}\nlog:\n{}", proxy.log()));
    let web = series_of(&metrics, "default/web:http");
    let dns_series = series_of(&metrics, "default/dns:dns");
    assert!(
        !web.iter().any(|s| s.contains("udp_flows_active")),
        "a TCP port has a UDP flow gauge:\n{}",
        web.join("\n")
    );
    assert!(
        dns_series.iter().any(|s| s.contains("udp_flows_active")),
        "{}",
        dns_series.join("\n")
    );
    assert!(
        !dns_series
            .iter()
            .any(|s| s.contains("svcproxy_userspace_connections_active")),
        "a UDP port has a TCP connection gauge:\n{}",
        dns_series.join("\n")
    );
    assert!(
        web.iter()
            .any(|s| s.contains("svcproxy_userspace_connections_active")),
        "{}",
        web.join("\n")
    );

    // web leaves the table: its series go, dns's stay.
    let only_dns = format!("services:\n{dns}");
    replace_file(Path::new(&table), only_dns);
    let after = poll(WAIT, Duration::from_millis(50), || {
        let metrics = scrape(status_addr);
        if series_of(&metrics, "default/web:http").is_empty() {
            Ok(metrics)
        } else {
            Err(metrics)
        }
    })
    .unwrap_or_else(|last| panic!("web's series stayed:\n{last}"));
    assert_eq!(
        series_of(&after, "default/dns:dns").len(),
        dns_series.len(),
        "{after}"
    );
    drop(proxy);
}

// === The README's flag table ===

/// Every long flag `svcproxy --help` lists (`--services`, `--help`...).
fn flags_of_help() -> BTreeSet<String> {
    let out = Command::new(SVCPROXY)
        .arg("--help")
        .output()
        .expect("svcproxy --help");
    assert!(out.status.success());
    text(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            // `--flag <V>` or `-h, --help`: an option's first line.
            let line = match line.split_once(", ") {
                Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
                _ => line,
            };
            line.starts_with("--").then(|| first_flag(line))?
        })
        .collect()
}

/// The first `--name` in `text`.
fn first_flag(text: &str) -> Option<String> {
    flags_in(text).into_iter().next()
}

/// Every `--name` in `text`, in order.
fn flags_in(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let name: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !name.is_empty() {
            flags.push(format!("--{name}"));
        }
        rest = &rest[at + 2 + name.len()..];
    }
    flags
}

/// The first cell of each row of the flag table in the README's `svcproxy` section.
fn readme_flag_cells() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("`svcproxy`, the reference proxy"))
        .expect("the README's svcproxy section");
    let table = section
        .split("\n| flag | what it does |\n")
        .nth(1)
        .expect("a `| flag | what it does |` table");
    table
        .lines()
        .skip(1) // |---|---|
        .take_while(|line| line.starts_with('|'))
        .map(|line| line.split('|').nth(1).unwrap_or_default().trim().to_owned())
        .collect()
}

#[test]
fn readme_flag_table_has_one_row_per_flag_of_help() {
    let help = flags_of_help();
    assert!(help.len() > 20 && help.contains("--services"), "{help:?}");
    let mut readme = BTreeSet::new();
    let mut problems = Vec::new();
    for cell in readme_flag_cells() {
        match flags_in(&cell).as_slice() {
            [flag] => {
                if !readme.insert(flag.clone()) {
                    problems.push(format!("{flag}: two rows"));
                }
            }
            flags => problems.push(format!("row {cell:?}: names {flags:?}, not one flag")),
        }
    }
    for flag in help.difference(&readme) {
        problems.push(format!("{flag}: in --help, no row in the README"));
    }
    for flag in readme.difference(&help) {
        problems.push(format!("{flag}: a README row, not in --help"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
