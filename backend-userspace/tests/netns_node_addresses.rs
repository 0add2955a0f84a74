//! Node ports follow the node's addresses, as root, in a network namespace the test makes: with
//! the default config (no `node_addresses`), a node port answers on a veth address of the
//! namespace, on a second address added while the proxy runs, and stops answering on that one
//! once it is removed; the sync loop runs the proxy, as an embedder's would. A second test,
//! without root, moves them with an embedder's own feed on loopback addresses.
//!
//! The test body runs on its own thread after `unshare(CLONE_NEWNET)`: the namespace (with its
//! interfaces and addresses) belongs to that thread alone and disappears when it ends, so the
//! root namespace is never touched.
#![cfg(target_os = "linux")]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backend_userspace::UserspaceDataplane;
use common::*;
use proxy_core::node_addresses::NodeAddresses;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::table::ServiceTable;
use proxy_core::{SyncConfig, SyncLoop};
use testkit::netns::in_new_netns;
use testkit::process::run;
use tokio::sync::watch;

/// How long a change of addresses may take to reach the listeners.
const FOLLOW: Duration = Duration::from_secs(3);
const NODE_PORT: u16 = 30_480;

fn setup_netns() {
    run("ip", &["link", "set", "lo", "up"]);
    run(
        "ip",
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    );
    run("ip", &["link", "set", "v0", "up"]);
    run("ip", &["link", "set", "v1", "up"]);
    run("ip", &["addr", "add", "198.18.40.1/24", "dev", "v0"]);
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn node_ports_follow_the_addresses_of_the_node() {
    in_new_netns(|| {
        setup_netns();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(follow_body());
    });
}

/// Polls `check` every 50 ms until it holds or `FOLLOW` passes; how long it took.
async fn within<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < FOLLOW, "{what}: not within {FOLLOW:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this address and port is free: no listener of ours holds it. `IP_FREEBIND` lets the
/// probe bind an address that is no longer local.
fn is_free(addr: SocketAddr) -> bool {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_freebind_v4(true).expect("freebind");
    // Connections the test made leave TIME_WAIT sockets on the address; only a listener
    // should keep the probe out.
    socket.set_reuse_address(true).expect("reuseaddr");
    socket.bind(&addr.into()).is_ok()
}

async fn follow_body() {
    let backend = Whoami::start("127.0.0.1", "np").await;
    let mut port = service("web", "127.0.0.10", 80, vec![backend.endpoint()]);
    port.node_port = Some(NODE_PORT);
    let table: ServiceTable = table([port]);

    // The default config: node ports on every address of the node but loopback, followed.
    let config = config();
    assert!(config.node_addresses.is_empty());
    let dataplane = UserspaceDataplane::new(config).expect("valid config");
    let mut registry = Registry::default();
    let sync_loop = SyncLoop::new(dataplane, SyncConfig::default(), &mut registry);
    let handle = sync_loop.handle();
    let (tables, source) = watch::channel(ServiceTable::empty());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(sync_loop.run(source, async {
        let _ = stopped.await;
    }));
    tables.send(table).expect("loop runs");

    let first = SocketAddr::new(ip("198.18.40.1"), NODE_PORT);
    let second = SocketAddr::new(ip("198.18.40.2"), NODE_PORT);
    let loopback = SocketAddr::new(ip("127.0.0.1"), NODE_PORT);
    within("first sync", || {
        let latest = handle.latest();
        async move { latest.service_ports == 1 }
    })
    .await;
    assert_eq!(ask(first).await.expect("node port on 198.18.40.1"), "np");
    assert!(is_free(loopback), "loopback is not a default node address");

    run("ip", &["addr", "add", "198.18.40.2/24", "dev", "v0"]);
    let added = within("node port on the added address", || async {
        ask(second).await.is_ok_and(|name| name == "np")
    })
    .await;

    run("ip", &["addr", "del", "198.18.40.2/24", "dev", "v0"]);
    let removed = within("listener on the removed address closed", || async {
        is_free(second)
    })
    .await;
    assert_eq!(ask(first).await.expect("first address still served"), "np");
    eprintln!("node port on an added address after {added:?}, closed on removal after {removed:?}");

    let _ = stop.send(());
    running
        .await
        .expect("loop task")
        .expect("loop ends cleanly");
}

#[tokio::test]
async fn an_embedders_feed_moves_the_node_ports() {
    let backend = Whoami::start("127.41.0.50", "fed").await;
    let node_port = free_port("127.41.0.1").await;
    let mut port = service("fed", "127.41.0.10", 80, vec![backend.endpoint()]);
    port.node_port = Some(node_port);
    let (feed, addresses) = NodeAddresses::manual([ip("127.41.0.1")]);
    let dataplane = UserspaceDataplane::new(config())
        .expect("valid config")
        .with_node_addresses(addresses);
    let mut registry = Registry::default();
    let sync_loop = SyncLoop::new(dataplane, SyncConfig::default(), &mut registry);
    let handle = sync_loop.handle();
    let (tables, source) = watch::channel(ServiceTable::empty());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(sync_loop.run(source, async {
        let _ = stopped.await;
    }));
    tables.send(table([port])).expect("loop runs");
    within("first sync", || {
        let latest = handle.latest();
        async move { latest.service_ports == 1 }
    })
    .await;
    let first = SocketAddr::new(ip("127.41.0.1"), node_port);
    let second = SocketAddr::new(ip("127.41.0.2"), node_port);
    assert_eq!(ask(first).await.expect("fed address"), "fed");
    assert!(ask(second).await.is_err(), "not fed yet");

    feed.set([ip("127.41.0.2")]);
    within("node port on the fed address", || async {
        ask(second).await.is_ok_and(|name| name == "fed")
    })
    .await;
    within("node port gone from the address no longer fed", || async {
        ask(first).await.is_err()
    })
    .await;

    let _ = stop.send(());
    running
        .await
        .expect("loop task")
        .expect("loop ends cleanly");
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn the_kernel_source_follows_addresses_and_forgets_an_excluded_link() {
    in_new_netns(|| {
        setup_netns();
        // A link standing for a backend's dummy interface (the host may lack the dummy module).
        run(
            "ip",
            &[
                "link", "add", "vips0", "type", "veth", "peer", "name", "vips1",
            ],
        );
        run("ip", &["link", "set", "vips0", "up"]);
        run("ip", &["addr", "add", "198.18.41.10/32", "dev", "vips0"]);
        run(
            "ip",
            &["addr", "add", "2001:db8:41::1/64", "dev", "v0", "nodad"],
        );
        let source = NodeAddresses::kernel();
        assert!(source.current().is_empty(), "nothing before start");
        source.start().expect("dump");
        let ips = |source: &NodeAddresses| -> Vec<String> {
            source.current().iter().map(|a| a.ip.to_string()).collect()
        };
        // Loopback and the IPv6 link-local addresses the veth got are left out.
        assert_eq!(
            ips(&source),
            ["198.18.40.1", "198.18.41.10", "2001:db8:41::1"]
        );
        let vips = source
            .current()
            .iter()
            .find(|a| a.ip == ip("198.18.41.10"))
            .expect("the dummy's address")
            .link;
        source.exclude_link(vips);
        run("ip", &["addr", "add", "198.18.41.11/32", "dev", "vips0"]);
        run("ip", &["addr", "add", "198.18.40.3/24", "dev", "v0"]);
        let started = Instant::now();
        while ips(&source) != ["198.18.40.1", "198.18.40.3", "2001:db8:41::1"] {
            assert!(
                started.elapsed() < FOLLOW,
                "not followed within {FOLLOW:?}: {:?}",
                ips(&source)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}
