//! Real IPv6 TCP through our ip6tables rules, in a namespace this test creates (documentation
//! prefix 2001:db8::/32, never routed outside the namespace): cluster IP to two local backends,
//! node port, and REJECT with no endpoints. Both variants. Needs root; bounded loops.

mod cases;

use std::time::Duration;

use backend_iptables::apply::Variant;
use proxy_core::table::Endpoint;
use proxy_core::{Protocol, ServicePort, ServicePortName, ServiceTable};
use testkit::net::AnswerServer;
use testkit::netns::Netns;
use testkit::process::run;

/// A TCP backend on this thread's namespace that answers every connection with its name.
fn backend(addr: &str, name: &str) -> AnswerServer {
    AnswerServer::named(addr.parse().expect("addr"), name)
}

fn ask(to: &str) -> std::io::Result<String> {
    testkit::net::ask(to.parse().expect("addr"), Duration::from_secs(2))
}

fn table() -> ServiceTable {
    let local = |addr: &str| {
        let mut e = Endpoint::new(addr.parse().expect("ip"), 8080);
        e.is_local = true;
        e
    };
    ServiceTable::builder()
        .node("node-a")
        .insert(
            ServicePort::new(ServicePortName::new("ns", "web6", "p"), Protocol::Tcp, 80)
                .with_cluster_ip("2001:db8:19::10".parse().expect("ip"))
                .with_node_port(30610)
                .with_endpoint(local("2001:db8:18:1::10"))
                .with_endpoint(local("2001:db8:18:1::11")),
        )
        .insert(
            ServicePort::new(ServicePortName::new("ns", "empty6", "p"), Protocol::Tcp, 80)
                .with_cluster_ip("2001:db8:19::11".parse().expect("ip")),
        )
        .build()
        .expect("valid table")
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn ipv6_cluster_ip_node_port_and_reject() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&format!("v6-{variant}"));
        ns.run(move || {
            run("ip", &["link", "set", "lo", "up"]);
            run(
                "ip",
                &[
                    "link", "add", "node0", "type", "veth", "peer", "name", "node1",
                ],
            );
            run(
                "ip",
                &[
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:200::1/64",
                    "dev",
                    "node0",
                    "nodad",
                ],
            );
            run("ip", &["link", "set", "node0", "up"]);
            run("ip", &["link", "set", "node1", "up"]);
            for ep in ["2001:db8:18:1::10/128", "2001:db8:18:1::11/128"] {
                run("ip", &["-6", "addr", "add", ep, "dev", "lo"]);
            }
            run(
                "ip",
                &["-6", "route", "add", "2001:db8:19::/64", "dev", "node0"],
            );
            cases::apply_full_with_hooks(variant, &table());
            let _a = backend("[2001:db8:18:1::10]:8080", "a");
            let _b = backend("[2001:db8:18:1::11]:8080", "b");

            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..30 {
                seen.insert(
                    ask("[2001:db8:19::10]:80").unwrap_or_else(|e| panic!("{variant}: {e}")),
                );
            }
            assert_eq!(seen.len(), 2, "{variant}: {seen:?}");
            let who = ask("[2001:db8:200::1]:30610")
                .unwrap_or_else(|e| panic!("{variant}: node port: {e}"));
            assert!(who == "a" || who == "b", "{variant}: {who:?}");
            let err = ask("[2001:db8:19::11]:80").expect_err("no endpoints must be refused");
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{variant}: {err}"
            );
        });
    }
}
