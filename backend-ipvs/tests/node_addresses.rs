//! Node ports follow the node's addresses through the dataplane, over the in-memory IPVS fake:
//! an embedder's [`NodeAddresses::manual`] feed moves them, and a partial sync after a change
//! adds and deletes only the node-port virtual servers of the addresses that came and went.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use backend_ipvs::testing::FakeIpvs;
use backend_ipvs::{IpvsConfig, IpvsDataplane, IpvsOps};
use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
use proxy_core::diff::diff;
use proxy_core::node_addresses::NodeAddresses;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn table() -> ServiceTable {
    let web = ServicePort::new(
        ServicePortName::new("default", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("198.19.0.10"))
    .with_node_port(30080)
    .with_endpoint(Endpoint::new(ip("198.18.1.10"), 8080));
    let db = ServicePort::new(
        ServicePortName::new("default", "db", "sql"),
        Protocol::Tcp,
        5432,
    )
    .with_cluster_ip(ip("198.19.0.11"))
    .with_endpoint(Endpoint::new(ip("198.18.1.11"), 5432));
    ServiceTable::builder()
        .insert(web)
        .insert(db)
        .build()
        .expect("valid table")
}

/// The virtual servers the fake holds, as `ipvsadm`-style keys.
fn virtual_servers(fake: &FakeIpvs) -> Vec<String> {
    let mut keys: Vec<String> = fake
        .virtual_servers()
        .expect("dump")
        .iter()
        .map(|vs| vs.key().to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_fed_address_change_moves_only_the_node_port_virtual_servers() {
    let fake = Arc::new(FakeIpvs::new());
    let ipvs: Arc<dyn IpvsOps> = fake.clone();
    let (feed, addresses) = NodeAddresses::manual([ip("198.18.0.1"), ip("198.18.5.1")]);
    let config = IpvsConfig {
        node_port_addresses: vec!["198.18.0.0/16".parse().expect("net")],
        ..IpvsConfig::default()
    };
    let dp = IpvsDataplane::with_ops(config, ipvs)
        .expect("valid config")
        .with_node_addresses(addresses);
    let mut follower = dp
        .node_addresses()
        .expect("the dataplane hands its source over");
    let t = table();
    let empty = ServiceTable::empty();
    let sync = |from: &ServiceTable, mode| {
        let changes = diff(from, &t);
        let request = SyncRequest {
            desired: &t,
            changes: &changes,
            mode,
        };
        dp.sync_at(&request, Instant::now()).expect("sync")
    };
    let report = sync(&empty, SyncMode::Full);
    assert!(report.is_complete(), "{report}");
    assert_eq!(
        virtual_servers(&fake),
        [
            "TCP 198.18.0.1:30080",
            "TCP 198.18.5.1:30080",
            "TCP 198.19.0.10:80",
            "TCP 198.19.0.11:5432"
        ]
    );

    // One address goes, one comes (and one outside node_port_addresses is left out).
    feed.set([ip("198.18.0.1"), ip("198.18.6.1"), ip("203.0.113.1")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert!(rt.block_on(follower.changed()), "the sync loop is woken");
    let report = sync(&t, SyncMode::Partial);
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.mode, SyncMode::Partial);
    assert_eq!(
        report.objects_written, 3,
        "delete one virtual server, add one with its real server: {report}"
    );
    assert_eq!(
        virtual_servers(&fake),
        [
            "TCP 198.18.0.1:30080",
            "TCP 198.18.6.1:30080",
            "TCP 198.19.0.10:80",
            "TCP 198.19.0.11:5432"
        ]
    );
}
