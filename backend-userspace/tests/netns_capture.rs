//! Transparent capture mode, as root, in a network namespace the test makes: a VIP that is not
//! a local address (198.18.0.10) reaches the proxy through our iptables REDIRECT chain.
//!
//! The test body runs on its own thread after `unshare(CLONE_NEWNET)`: the namespace (with its
//! iptables rules and interfaces) belongs to that thread alone and disappears when it ends, so
//! the root namespace is never touched.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::Duration;

use backend_userspace::{ListenMode, UserspaceConfig, UserspaceDataplane};
use common::*;
use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
use proxy_core::diff::diff;
use proxy_core::table::{Protocol, ServicePort, ServicePortName, ServiceTable};
use testkit::netns::in_new_netns;
use testkit::process::run;

const CHAIN: &str = "SVCPROXY-TEST";

fn chain_rules() -> Option<String> {
    let output = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", CHAIN])
        .output()
        .expect("run iptables");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

/// A partial sync from `from` to `to` that applies everything.
async fn sync_partial_ok(dp: &mut UserspaceDataplane, from: &ServiceTable, to: &ServiceTable) {
    let changes = diff(from, to);
    let report = dp
        .sync(SyncRequest {
            desired: to,
            changes: &changes,
            mode: SyncMode::Partial,
        })
        .await
        .expect("sync never fails as a whole");
    assert!(report.is_complete(), "{report}");
}

/// Sets up the namespace the test thread is in: `lo` up, 198.18.0.1 local and 198.18.0.0/15
/// routed.
fn setup_netns() {
    run("ip", &["link", "set", "lo", "up"]);
    // 198.18.0.1 is local (the client's address); the rest of 198.18.0.0/15 is only routed
    // (a unicast route, not a local one), so the VIP is not an address of this host.
    run("ip", &["addr", "add", "198.18.0.1/32", "dev", "lo"]);
    run("ip", &["route", "add", "198.18.0.0/15", "dev", "lo"]);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn capture_mode_redirects_a_non_local_vip_to_the_proxy() {
    in_new_netns(|| {
        setup_netns();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(capture_body());
    });
}

async fn capture_body() {
    let tcp_backend = Whoami::start("127.0.0.1", "b1").await;
    let udp_backend = UdpEcho::start("127.0.0.1", "u1").await;
    let vip = "198.18.0.10";
    let web = service("web", vip, 80, vec![tcp_backend.endpoint()]);
    let mut dns = ServicePort::new(
        ServicePortName::new("test", "dns", "udp"),
        Protocol::Udp,
        53,
    )
    .with_cluster_ip(ip(vip));
    dns.endpoints = vec![udp_backend.endpoint()];
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        mode: ListenMode::Capture,
        capture_chain: CHAIN.to_owned(),
        node_addresses: Vec::new(),
        ..config()
    })
    .expect("config");
    sync_ok(&mut dp, &table([web.clone(), dns])).await;

    let bound = dp.bound_addrs();
    let rules = chain_rules().expect("our chain exists");
    for (key, addr) in &bound {
        assert!(
            rules.contains(&format!("--to-ports {}", addr.port())),
            "{key} -> {addr} missing in:\n{rules}"
        );
    }
    assert_eq!(
        ask((ip(vip), 80).into())
            .await
            .expect("TCP through capture"),
        "b1"
    );
    let client = tokio::net::UdpSocket::bind("198.18.0.1:0")
        .await
        .expect("udp client");
    let reply = udp_ask(&client, (ip(vip), 53).into(), "q", Duration::from_secs(2)).await;
    assert_eq!(
        reply.as_deref(),
        Some("u1:q"),
        "UDP through capture, reply from the VIP"
    );

    // Removing the UDP port removes its rule; the TCP one stays and still works.
    sync_ok(&mut dp, &table([web.clone()])).await;
    let rules = chain_rules().expect("our chain exists");
    assert!(!rules.contains("-p udp"), "{rules}");
    assert_eq!(
        ask((ip(vip), 80).into()).await.expect("TCP after update"),
        "b1"
    );

    // Partial syncs edit the chain rule by rule: a second port's rule is appended, then the
    // first one's deleted, and the chain holds what a full rewrite writes.
    let web2 = service("web2", vip, 81, vec![tcp_backend.endpoint()]);
    let both = table([web.clone(), web2.clone()]);
    sync_partial_ok(&mut dp, &table([web]), &both).await;
    let rules = chain_rules().expect("our chain exists");
    assert!(rules.contains("--dport 81 "), "{rules}");
    assert_eq!(
        ask((ip(vip), 81).into())
            .await
            .expect("TCP to the port a partial sync added"),
        "b1"
    );
    let web2_only = table([web2]);
    sync_partial_ok(&mut dp, &both, &web2_only).await;
    let partial = chain_rules().expect("our chain exists");
    assert!(!partial.contains("--dport 80 "), "{partial}");
    sync_ok(&mut dp, &web2_only).await;
    let full = chain_rules().expect("our chain exists");
    assert_eq!(
        sorted_lines(&partial),
        sorted_lines(&full),
        "partial:\n{partial}\nfull:\n{full}"
    );

    let report = dp.cleanup().await.expect("cleanup");
    assert_eq!(report.objects_removed, 1);
    assert_eq!(chain_rules(), None, "cleanup deletes the chain");
    let nat = run("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(!nat.contains(CHAIN), "jumps left behind:\n{nat}");
}
