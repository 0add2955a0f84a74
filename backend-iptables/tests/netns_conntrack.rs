//! The UDP blackhole, for real: after an endpoint change a UDP flow keeps its conntrack entry to
//! the old endpoint until we delete it through ctnetlink. In a namespace this test creates; needs
//! root. Both iptables variants.

mod cases;

use std::net::UdpSocket;
use std::time::Duration;

use backend_iptables::apply::{apply_plan, CommandRunner, Variant};
use backend_iptables::conntrack::{flush_stale, plan_conntrack, ConntrackOps, Netlink};
use backend_iptables::hooks::{ensure_hooks, IptablesHooks};
use backend_iptables::plan::{Applied, Planner};
use backend_iptables::rules::Family;
use proxy_core::table::Endpoint;
use proxy_core::{diff, Protocol, ServicePort, ServicePortName, ServiceTable, SyncMode};
use testkit::netns::Netns;

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

fn server(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).expect("bind backend");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    s
}

fn got(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn udp_endpoint_change_has_no_blackhole_after_the_flush() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&format!("ct-{variant}"));
        ns.run(move || {
            cases::setup_node_v4(&["198.18.1.12/32", "198.18.1.13/32"]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let planner = Planner::new(cases::config()).expect("valid config");
            let runner = CommandRunner::new(variant);
            let old = table("198.18.1.12");
            let full = planner.plan_full(&old);
            rt.block_on(apply_plan(&runner, &full)).expect("apply");
            ensure_hooks(&IptablesHooks::new(variant), &planner.hooks()).expect("hooks");
            let mut applied = Applied::new();
            applied.commit(&full);

            let old_backend = server("198.18.1.12:5353");
            let new_backend = server("198.18.1.13:5353");
            let client = UdpSocket::bind("198.18.200.1:40053").expect("client");
            client.send_to(b"1", "198.19.0.12:53").expect("send");
            assert_eq!(
                got(&old_backend).as_deref(),
                Some(&b"1"[..]),
                "{variant}: first datagram"
            );

            let new = table("198.18.1.13");
            let changes = diff(&old, &new);
            let partial = planner.plan(&new, &changes, &applied, SyncMode::Partial);
            rt.block_on(apply_plan(&runner, &partial))
                .expect("apply change");

            // The blackhole: the flow still follows its conntrack entry to the old endpoint.
            client.send_to(b"2", "198.19.0.12:53").expect("send");
            assert_eq!(
                got(&old_backend).as_deref(),
                Some(&b"2"[..]),
                "{variant}: stale entry (control)"
            );
            assert_eq!(got(&new_backend), None);

            let entries = Netlink.dump(Family::V4).expect("dump");
            assert!(
                entries
                    .iter()
                    .any(|e| e.dport == 53 && e.reply_src.to_string() == "198.18.1.12"),
                "{variant}: {entries:?}"
            );
            let flushes = plan_conntrack(&changes);
            let deleted = flush_stale(&Netlink, &flushes).expect("flush");
            assert_eq!(deleted, 1, "{variant}: {flushes:?}");

            client.send_to(b"3", "198.19.0.12:53").expect("send");
            assert_eq!(
                got(&new_backend).as_deref(),
                Some(&b"3"[..]),
                "{variant}: new endpoint after the flush"
            );
        });
    }
}
