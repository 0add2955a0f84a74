//! The `netns` setting, for real: a dataplane built and driven from outside a namespace
//! (`IptablesConfig::netns`) puts its chains, its hooks and its conntrack deletions in that
//! namespace and nowhere else. The caller runs in a second namespace of its own, so a command
//! that ignored the setting would land there (and fail this test), never in the root namespace,
//! which is only read. Needs root; the variant is the host's, as `new` detects it.

mod cases;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use backend_iptables::apply::Variant;
use backend_iptables::rules::Family;
use backend_iptables::{IptablesConfig, IptablesDataplane};
use proxy_core::table::Endpoint;
use proxy_core::{
    diff, Dataplane, Protocol, ServicePort, ServicePortName, ServiceTable, SyncMode, SyncRequest,
};
use testkit::netns::Netns;

const HOOK: &str = "-A PREROUTING -m comment --comment \"service portals\" -j SVCP-SERVICES";

fn table(endpoint: &str) -> ServiceTable {
    let mut e = Endpoint::new(endpoint.parse().expect("ip"), 5353);
    e.is_local = true;
    ServiceTable::builder()
        .node("node-a")
        .insert(
            ServicePort::new(ServicePortName::new("ns", "dns", "p"), Protocol::Udp, 53)
                .with_cluster_ip("198.19.0.12".parse().expect("ip"))
                .with_endpoint(e),
        )
        .build()
        .expect("valid table")
}

/// `iptables-save` of `variant` and `family`, under `ip netns exec NAME` when given, else in
/// the calling thread's namespace. Only reads.
fn save_family(variant: Variant, netns: Option<&str>, family: Family) -> String {
    let mut argv: Vec<&str> = netns.map_or(vec![], |n| vec!["ip", "netns", "exec", n]);
    argv.push(variant.save_binary(family));
    let o = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("run save");
    assert!(o.status.success(), "{argv:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The lines of both families' saves that name one of our chains (the default prefix).
fn ours(variant: Variant, netns: Option<&str>) -> Vec<String> {
    Family::ALL
        .into_iter()
        .flat_map(|family| {
            save_family(variant, netns, family)
                .lines()
                .filter(|l| l.contains("SVCP-"))
                .map(|l| format!("{family} {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The host's variant, as plain `iptables --version` names it (read only).
fn host_variant() -> Variant {
    let o = Command::new("iptables")
        .arg("--version")
        .output()
        .expect("iptables --version");
    Variant::from_version_output(&String::from_utf8_lossy(&o.stdout)).expect("a known variant")
}

fn udp(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    s
}

fn got(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

async fn sync(dp: &mut IptablesDataplane, before: &ServiceTable, after: &ServiceTable) {
    let changes = diff(before, after);
    let report = dp
        .sync(SyncRequest {
            desired: after,
            changes: &changes,
            mode: SyncMode::Partial,
        })
        .await
        .expect("sync");
    assert!(report.is_complete(), "{report}");
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_dataplane_with_netns_set_programs_only_that_namespace() {
    let variant = host_variant();
    let root_before = ours(variant, None);
    let target = Netns::new("ipt-target");
    let caller = Netns::new("ipt-caller");
    // Sockets keep the namespace they were made in, whichever thread uses them later.
    let (client, old_backend, new_backend) = target.run(|| {
        cases::setup_node_v4(&["198.18.1.12/32", "198.18.1.13/32"]);
        (
            udp("198.18.200.1:40053"),
            udp("198.18.1.12:5353"),
            udp("198.18.1.13:5353"),
        )
    });
    let name = target.name().to_owned();
    caller.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = IptablesConfig {
            netns: Some(name.clone()),
            ..cases::config()
        };
        let mut dp = IptablesDataplane::new(config).expect("valid config");
        let (old, new) = (table("198.18.1.12"), table("198.18.1.13"));
        rt.block_on(sync(&mut dp, &ServiceTable::empty(), &old));
        assert_eq!(dp.variant(), Some(variant), "detected at the first sync");

        // Chains and hooks in the target (IPv4 only: the table has no IPv6 service, so IPv6 is
        // left alone); nothing in the caller's namespace.
        let there = save_family(variant, Some(&name), Family::V4);
        assert!(there.contains(":SVCP-SERVICES"), "{variant}:\n{there}");
        assert!(there.contains(HOOK), "{variant}:\n{there}");
        let v6 = save_family(variant, Some(&name), Family::V6);
        assert!(!v6.contains("SVCP-"), "{variant}: IPv6 touched:\n{v6}");
        let here = ours(variant, None);
        assert!(
            here.is_empty(),
            "{variant}: leaked to the caller: {here:#?}"
        );

        // Conntrack: the flow sticks to the old endpoint until the sync's deletion, which must
        // happen in the target's table for the next datagram to reach the new endpoint.
        client.send_to(b"1", "198.19.0.12:53").expect("send");
        assert_eq!(got(&old_backend).as_deref(), Some(&b"1"[..]), "{variant}");
        rt.block_on(sync(&mut dp, &old, &new));
        client.send_to(b"2", "198.19.0.12:53").expect("send");
        assert_eq!(
            got(&new_backend).as_deref(),
            Some(&b"2"[..]),
            "{variant}: the stale entry was not deleted in the target namespace"
        );
        assert_eq!(got(&old_backend), None, "{variant}");

        // Cleanup removes it all, there.
        let removed = rt.block_on(dp.cleanup()).expect("cleanup");
        assert!(removed.objects_removed >= 8, "{removed:?}");
        let left = ours(variant, Some(&name));
        assert!(left.is_empty(), "{variant}: left behind: {left:#?}");
        assert!(ours(variant, None).is_empty(), "{variant}");
    });
    // The root namespace is only read: what it holds of our prefix (nothing, normally) is as
    // it was.
    assert_eq!(
        ours(variant, None),
        root_before,
        "{variant}: root namespace changed"
    );
}
