//! The sync loop follows a dataplane's node addresses ([`Dataplane::node_addresses`]): each
//! change runs one partial sync (after the minimum period), with nothing in its change set, so
//! the backend re-plans only what depends on the addresses; no change, no sync. With tokio's
//! clock paused.

use std::time::Duration;

use prometheus_client::registry::Registry;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, Dataplane, DryRun, SyncMode, SyncReport, SyncRequest,
};
use proxy_core::node_addresses::NodeAddresses;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
use proxy_core::testing::fake::FakeDataplane;
use proxy_core::{DataplaneError, SyncConfig, SyncLoop};
use tokio::sync::watch;
use tokio::time::sleep;

/// The fake, plus a source of node addresses.
struct Following {
    fake: FakeDataplane,
    addresses: NodeAddresses,
}

#[proxy_core::async_trait]
impl Dataplane for Following {
    fn name(&self) -> &'static str {
        "following"
    }
    fn capabilities(&self) -> Capabilities {
        self.fake.capabilities()
    }
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        self.fake.sync(request).await
    }
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        self.fake.cleanup().await
    }
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        self.fake.dry_run(table)
    }
    fn node_addresses(&self) -> Option<NodeAddresses> {
        Some(self.addresses.clone())
    }
}

fn table() -> ServiceTable {
    let web = ServicePort::new(
        ServicePortName::new("default", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip("198.19.0.10".parse().expect("ip"))
    .with_node_port(30080)
    .with_endpoint(Endpoint::new("198.18.1.10".parse().expect("ip"), 8080));
    ServiceTable::builder()
        .insert(web)
        .build()
        .expect("valid table")
}

#[tokio::test(start_paused = true)]
async fn each_change_of_node_addresses_runs_one_partial_sync() {
    let fake = FakeDataplane::new();
    let (feed, addresses) = NodeAddresses::manual(["198.18.0.1".parse().expect("ip")]);
    let dataplane = Following {
        fake: fake.clone(),
        addresses,
    };
    let mut registry = Registry::default();
    let sync_loop = SyncLoop::new(dataplane, SyncConfig::default(), &mut registry);
    let (tables, source) = watch::channel(ServiceTable::empty());

    // A change before any table syncs nothing: the first sync reads the addresses anyway.
    feed.insert("198.18.0.2".parse().expect("ip"));
    let running = tokio::spawn(sync_loop.run(source, std::future::pending()));
    sleep(Duration::from_secs(5)).await;
    assert!(fake.requests().is_empty());

    tables.send(table()).expect("loop runs");
    sleep(Duration::from_secs(5)).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].mode, SyncMode::Full);

    feed.insert("198.18.0.3".parse().expect("ip"));
    sleep(Duration::from_secs(5)).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "one sync for the change");
    assert_eq!(requests[1].mode, SyncMode::Partial);
    assert!(requests[1].changes.is_empty(), "the table did not change");

    // Setting the same addresses again is no change; a burst of changes is one sync.
    feed.set(["198.18.0.1", "198.18.0.2", "198.18.0.3"].map(|ip| ip.parse().expect("ip")));
    sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.requests().len(), 2, "no change, no sync");
    feed.remove("198.18.0.1".parse().expect("ip"));
    feed.remove("198.18.0.2".parse().expect("ip"));
    sleep(Duration::from_secs(5)).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "a burst coalesces");
    assert!(
        requests[2].at - requests[1].at >= SyncConfig::default().min_sync_period,
        "the minimum period holds"
    );

    // A dropped feed ends the changes, not the loop.
    drop(feed);
    sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.requests().len(), 3);
    tables.send(ServiceTable::empty()).expect("loop still runs");
    sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.requests().len(), 4);
    running.abort();
}
