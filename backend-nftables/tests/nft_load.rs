//! Root tests: what the renderer writes is what nft programs. Each golden file is loaded with
//! `nft -f` in a fresh network namespace and `nft list table` must print it back byte for byte;
//! a partial plan's `nft -f` script turns the kernel's table into the next desired one; and
//! real TCP through rules loaded this way reaches an endpoint of a cluster IP, or is refused
//! when the service has none.
//!
//! Run with `cargo test -p backend-nftables --test nft_load -- --include-ignored` as root.

#[path = "nft_cases.rs"]
mod nft_cases;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use backend_nftables::plan::{desired, plan, render_changes};
use backend_nftables::render::render_table;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
use testkit::netns::in_new_netns;
use testkit::process::{run, run_with_stdin};

/// Loads `script` with `nft -f -` in the current thread's namespace, then lists our table.
fn load_and_list(script: &str, table: &str) -> String {
    run_with_stdin("nft", &["-f", "-"], script);
    run("nft", &["list", "table", "inet", table])
}

/// The golden text without its `# problem:` comment lines: the table itself.
fn table_text(golden: &str) -> String {
    golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn goldens_load_and_list_back_byte_equal() {
    let mut failures = Vec::new();
    for (name, _) in nft_cases::cases() {
        let path = nft_cases::dir("golden").join(format!("{name}.nft"));
        let golden = std::fs::read_to_string(&path).expect("golden file");
        let text = table_text(&golden);
        if nft_cases::NFT_CANNOT_LOAD.contains(&name.as_str()) {
            // `encode_netns` programs it over netlink and lists it equal to the golden.
            let script = text.clone();
            let loaded = in_new_netns(move || {
                let mut child = std::process::Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("run nft");
                use std::io::Write as _;
                let _ = child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(script.as_bytes());
                child.wait().expect("nft exits").success()
            });
            if loaded {
                failures.push(format!(
                    "{name}: nft now loads it: move it out of NFT_CANNOT_LOAD"
                ));
            }
            continue;
        }
        let table = nft_cases::config().table;
        let script = text.clone();
        let listed = in_new_netns(move || load_and_list(&script, &table));
        if listed != text {
            failures.push(format!(
                "{name}: nft list differs from the golden\n--- golden\n{text}\n--- listed\n{listed}"
            ));
        }
        // The full plan from nothing, as commands, programs the same table.
        let desired = nft_cases::plan_case(&nft_cases::dir("tables").join(format!("{name}.yaml")));
        let commands = render_changes(&desired.table.name, &plan(&desired, None, None));
        let table = desired.table.name.clone();
        let input = commands.clone();
        let listed = in_new_netns(move || load_and_list(&input, &table));
        if listed != text {
            failures.push(format!(
                "{name}: the full plan's commands list differently\n--- commands\n{commands}\n--- golden\n{text}\n--- listed\n{listed}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn web(endpoints: &[&str]) -> ServicePort {
    let mut port = ServicePort::new(
        ServicePortName::new("shop", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("198.19.0.10"));
    for ep in endpoints {
        port = port.with_endpoint(Endpoint::new(ip(ep), 8080));
    }
    port
}

/// The blocks of a listing (sets and chains, split at blank lines), sorted: a partial sync
/// creates new chains after the old ones, so only the creation order may differ.
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

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn partial_plan_script_turns_the_kernel_table_into_the_next() {
    let config = nft_cases::config();
    let node_ips = nft_cases::node_ips();
    let before = ServiceTable::builder()
        .node("node-a")
        .insert(web(&["198.18.2.10", "198.18.2.11"]))
        .build()
        .expect("valid table");
    // A third endpoint: a new count (service-3), three slots rewritten.
    let after = before
        .edit()
        .insert(web(&["198.18.2.10", "198.18.2.11", "198.18.2.12"]))
        .build()
        .expect("valid table");
    let first = desired(&before, &config, &node_ips);
    let mut next = first.clone();
    let changes = proxy_core::diff::diff(&before, &after);
    next.update(&changes);
    assert_eq!(
        next,
        desired(&after, &config, &node_ips),
        "update differs from a full build"
    );
    let partial = plan(&next, Some(&first.table), Some(&changes));
    let script = format!(
        "{}{}",
        render_table(&first.table),
        render_changes(&config.table, &partial)
    );
    let (table, input) = (config.table.clone(), script.clone());
    let listed = in_new_netns(move || load_and_list(&input, &table));
    assert_eq!(
        blocks(&listed),
        blocks(&render_table(&next.table)),
        "after the partial script {script}\nthe kernel lists\n{listed}"
    );
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn cluster_ip_dnats_to_its_endpoint_and_empty_service_is_refused() {
    let (node, pod) = nft_cases::node_and_pod("nft");
    let empty = ServicePort::new(ServicePortName::new("shop", "empty", ""), Protocol::Tcp, 80)
        .with_cluster_ip(ip("198.19.0.40"));
    let table = ServiceTable::builder()
        .node("node-a")
        .insert(web(&["198.18.1.10"]))
        .insert(empty)
        .build()
        .expect("valid table");
    let config = nft_cases::config();
    let d = desired(&table, &config, &BTreeSet::new());
    let script = render_table(&d.table);
    node.run(move || run_with_stdin("nft", &["-f", "-"], &script));
    let listener = pod
        .run(|| TcpListener::bind("198.18.1.10:8080"))
        .expect("bind the endpoint");
    let server = testkit::net::AnswerServer::start(listener, |peer| format!("pod sees {peer}\n"));
    let answer = node.run(|| {
        testkit::net::ask(
            SocketAddr::new(ip("198.19.0.10"), 80),
            Duration::from_secs(5),
        )
    });
    let answer = answer.expect("cluster IP answers through the endpoint");
    assert!(
        answer.starts_with("pod sees 198.18.1.1:"),
        "answer: {answer}"
    );
    let refused = node.run(|| {
        testkit::net::ask(
            SocketAddr::new(ip("198.19.0.40"), 80),
            Duration::from_secs(5),
        )
    });
    let err = refused.expect_err("a service without endpoints must not answer");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(server.stop(), 1);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn client_ip_affinity_sends_a_client_to_the_same_endpoint() {
    let (node, pod) = nft_cases::node_and_pod("nft");
    pod.ip(&["addr", "add", "198.18.1.11/24", "dev", "eth0"]);
    let mut port = web(&["198.18.1.10", "198.18.1.11"]);
    port.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
        timeout: Duration::from_secs(600),
    };
    let table = ServiceTable::builder()
        .node("node-a")
        .insert(port)
        .build()
        .expect("valid table");
    let d = desired(&table, &nft_cases::config(), &BTreeSet::new());
    let script = render_table(&d.table);
    node.run(move || run_with_stdin("nft", &["-f", "-"], &script));
    let servers = nft_cases::endpoint_servers(&pod, &["198.18.1.10:8080", "198.18.1.11:8080"]);
    let mut answers = BTreeSet::new();
    for _ in 0..16 {
        let answer = node
            .run(|| {
                testkit::net::ask(
                    SocketAddr::new(ip("198.19.0.10"), 80),
                    Duration::from_secs(5),
                )
            })
            .expect("cluster IP answers");
        answers.insert(answer);
    }
    let affinity = node.exec_ok("nft", &["list", "map", "inet", "svcproxy", "affinity-v4"]);
    assert_eq!(
        answers.len(),
        1,
        "one client, several endpoints: {answers:?}\n{affinity}"
    );
    let endpoint = answers
        .iter()
        .next()
        .expect("one answer")
        .trim()
        .replace(':', " . ");
    // `client . vip . proto . port timeout 10m expires ... : endpoint`: the port's timeout.
    let element = affinity
        .lines()
        .find(|l| l.contains("198.18.1.1 . 198.19.0.10 . tcp . 80 "));
    assert!(
        element.is_some_and(
            |l| l.contains(" timeout 10m ") && l.ends_with(&format!(": {endpoint} }}"))
        ),
        "the affinity map holds the client's endpoint {endpoint}:\n{affinity}"
    );
    let served: usize = servers.into_iter().map(|s| s.stop()).sum();
    assert_eq!(served, 16);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn node_port_and_load_balancer_source_ranges_through_loaded_rules() {
    let (node, pod) = nft_cases::node_and_pod("nft");
    // Reached from the node, 198.18.1.1: the node port, an LB IP whose range holds the node,
    // and an LB IP whose range does not (dropped before DNAT: the connect times out).
    let mut open = web(&["198.18.1.10"]).with_node_port(30080);
    open.load_balancer_ips = vec![ip("198.19.101.10")];
    open.load_balancer_source_ranges = vec!["198.18.1.0/24".parse().expect("range")];
    let mut closed = ServicePort::new(
        ServicePortName::new("shop", "closed", ""),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("198.19.0.11"))
    .with_endpoint(Endpoint::new(ip("198.18.1.10"), 8080));
    closed.load_balancer_ips = vec![ip("198.19.101.11")];
    closed.load_balancer_source_ranges = vec!["198.18.250.0/24".parse().expect("range")];
    let table = ServiceTable::builder()
        .node("node-a")
        .insert(open)
        .insert(closed)
        .build()
        .expect("valid table");
    let node_ips: BTreeSet<IpAddr> = [ip("198.18.1.1")].into();
    let d = desired(&table, &nft_cases::config(), &node_ips);
    let script = render_table(&d.table);
    node.run(move || run_with_stdin("nft", &["-f", "-"], &script));
    let listener = pod
        .run(|| TcpListener::bind("198.18.1.10:8080"))
        .expect("bind the endpoint");
    let server = testkit::net::AnswerServer::start(listener, |peer| format!("pod sees {peer}\n"));
    let ask = |addr: &str, port: u16, secs: u64| {
        let to = SocketAddr::new(ip(addr), port);
        node.run(move || testkit::net::ask(to, Duration::from_secs(secs)))
    };
    let via_node_port = ask("198.18.1.1", 30080, 5).expect("the node port answers");
    assert!(
        via_node_port.starts_with("pod sees 198.18.1.1:"),
        "{via_node_port}"
    );
    let via_open_lb = ask("198.19.101.10", 80, 5).expect("the LB IP admits the node's range");
    assert!(
        via_open_lb.starts_with("pod sees 198.18.1.1:"),
        "{via_open_lb}"
    );
    let blocked = ask("198.19.101.11", 80, 1);
    let err = blocked.expect_err("a source outside the LB's ranges must not get through");
    assert_ne!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "dropped, not refused: {err}"
    );
    assert_eq!(server.stop(), 2);
}
