//! The library embedded the way an agent does: per-object events into a `ChangeTracker`, a
//! `SyncLoop` on the userspace backend, outcomes read back by generation, real TCP on loopback.
//!
//! Every address is on loopback (127.0.0.0/8); ports are picked free by the OS; every wait is
//! bounded.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use proxy_core::metrics::encode_text;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::sync::{SkipReason, SyncHandle, SyncOutcome, SyncStatus};
use proxy_core::tracker::{
    ChangeTracker, EndpointSlice, Service, ServiceName, ServicePortSpec, SliceEndpoint,
};
use proxy_core::{ServicePortName, SyncConfig, SyncLoop};
use testkit::net::AnswerServer;

const WAIT: Duration = Duration::from_secs(10);
const WEB_VIP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
const API_VIP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const BAD_VIP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("probe bind")
        .local_addr()
        .expect("probe address")
        .port()
}

fn service(name: &ServiceName, vip: Ipv4Addr, port: u16, target_port: u16) -> Service {
    Service::new(name.clone())
        .with_cluster_ip(IpAddr::V4(vip))
        .with_port(ServicePortSpec::tcp("http", port).with_target_port(target_port))
}

fn slice(service: &ServiceName, pods: &[&AnswerServer]) -> EndpointSlice {
    let mut slice = EndpointSlice::new(service.clone(), format!("{}-1", service.name));
    for pod in pods {
        slice = slice.with_endpoint(SliceEndpoint::new(pod.addr().ip()).on_node("node-a"));
    }
    slice
}

/// The names a service answers with over `tries` connections (blocking client, off the runtime).
async fn answers(addr: SocketAddr, tries: usize) -> BTreeSet<String> {
    tokio::task::spawn_blocking(move || {
        (0..tries)
            .map(|_| match testkit::net::ask(addr, Duration::from_secs(2)) {
                Ok(answer) => answer,
                Err(err) => format!("error: {}", err.kind()),
            })
            .collect()
    })
    .await
    .expect("client thread")
}

async fn applied(handle: &SyncHandle, generation: u64) -> SyncOutcome {
    tokio::time::timeout(WAIT, handle.wait_for(generation))
        .await
        .expect("the generation applies in time")
        .expect("the loop runs")
}

fn port(service: &ServiceName) -> ServicePortName {
    service.port("http")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_feeds_objects_and_reads_back_what_applied() {
    let pod_port = free_port(Ipv4Addr::new(127, 0, 0, 2));
    let pod_a = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 2), pod_port).into(), "pod-a");
    let pod_b = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 3), pod_port).into(), "pod-b");
    let pod_c = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 4), pod_port).into(), "pod-c");
    let web_port = free_port(WEB_VIP);
    let api_port = free_port(API_VIP);
    let web_addr = SocketAddr::from((WEB_VIP, web_port));
    let api_addr = SocketAddr::from((API_VIP, api_port));

    let dataplane = UserspaceDataplane::new(UserspaceConfig::default()).expect("userspace");
    let (mut tracker, source) = ChangeTracker::for_dataplane(&dataplane);
    let config = SyncConfig {
        min_sync_period: Duration::from_millis(10),
        cleanup_on_shutdown: true,
        ..SyncConfig::default()
    };
    let mut registry = Registry::default();
    let sync_loop = SyncLoop::new(dataplane, config, &mut registry);
    let handle = sync_loop.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(sync_loop.run(source, async {
        let _ = stopped.await;
    }));

    // Two good services and a bad one (two IPv4 cluster IPs), with their endpoints.
    let web = ServiceName::new("default", "web");
    let api = ServiceName::new("default", "api");
    let bad = ServiceName::new("default", "bad");
    tracker
        .set_node(Some("node-a".to_owned()))
        .expect("a plain node name");
    tracker.set_service(service(&web, WEB_VIP, web_port, pod_port));
    tracker.set_service(service(&api, API_VIP, api_port, pod_port));
    let mut broken = service(&bad, BAD_VIP, 80, pod_port);
    broken
        .cluster_ips
        .push(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 13)));
    tracker.set_service(broken);
    tracker.set_endpoint_slice(slice(&web, &[&pod_a, &pod_b]));
    tracker.set_endpoint_slice(slice(&bad, &[&pod_c]));
    let generation = tracker.set_endpoint_slice(slice(&api, &[&pod_c]));

    let outcome = applied(&handle, generation).await;
    assert_eq!(outcome.applied_generation, generation, "{outcome}");
    assert_eq!(outcome.status, SyncStatus::Applied, "{outcome}");
    assert_eq!(outcome.service_ports, 2, "web and api run: {outcome}");
    let skipped = &outcome.skipped[&port(&bad)];
    assert_eq!(skipped.reason, SkipReason::Invalid);
    assert!(
        skipped.problems[0].to_string().starts_with(
            "services[default/bad].ports[http].cluster_ips[1]: second IPv4 cluster IP"
        ),
        "{skipped}"
    );
    assert_eq!(answers(web_addr, 6).await, set(&["pod-a", "pod-b"]));
    assert_eq!(answers(api_addr, 2).await, set(&["pod-c"]));
    let health = handle.health();
    assert!(health.is_degraded(), "a skipped port degrades the node");
    assert!(health
        .problems()
        .iter()
        .any(|p| p.starts_with("default/bad:http")));

    // A newcomer on web's VIP and port is blamed; web keeps answering.
    let copy = ServiceName::new("default", "aaa-copy");
    let generation = tracker.set_service(service(&copy, WEB_VIP, web_port, pod_port));
    let outcome = applied(&handle, generation).await;
    assert_eq!(outcome.skipped[&port(&copy)].reason, SkipReason::Clash);
    assert!(!outcome.skipped.contains_key(&port(&web)));
    assert_eq!(answers(web_addr, 4).await, set(&["pod-a", "pod-b"]));

    // An endpoint leaves: real traffic stops reaching it.
    let generation = tracker.set_endpoint_slice(slice(&web, &[&pod_b]));
    let outcome = applied(&handle, generation).await;
    assert_eq!(
        outcome.endpoints, 2,
        "web's pod-b and api's pod-c: {outcome}"
    );
    assert_eq!(answers(web_addr, 6).await, set(&["pod-b"]));

    // A service is deleted: its VIP stops answering; the others do not move.
    let generation = tracker.delete_service(&api);
    applied(&handle, generation).await;
    let refused = answers(api_addr, 1).await;
    assert!(
        refused.iter().all(|a| a.starts_with("error")),
        "{refused:?}"
    );
    assert_eq!(answers(web_addr, 2).await, set(&["pod-b"]));

    // The bad service is fixed: it applies, and nothing is skipped but the clash.
    let generation = tracker.set_service(service(&bad, BAD_VIP, free_port(BAD_VIP), pod_port));
    let outcome = applied(&handle, generation).await;
    let still: Vec<&ServicePortName> = outcome.skipped.keys().collect();
    assert_eq!(still, [&port(&copy)]);

    let metrics = encode_text(&registry).expect("metrics encode");
    assert!(
        metrics.contains("svcproxy_sync_skipped_service_ports{reason=\"clash\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"));

    // A dry run while the loop runs: the backend's own rendering of the desired table.
    let dry_run = handle.dry_run().await.expect("dry run");
    assert!(dry_run.rendered.contains("default/web:http"), "{dry_run}");

    // Clean shutdown with cleanup: every listener closes.
    stop.send(()).expect("the loop runs");
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the loop stops in time")
        .expect("the loop task does not panic")
        .expect("cleanup succeeds");
    let closed = answers(web_addr, 1).await;
    assert!(closed.iter().all(|a| a.starts_with("error")), "{closed:?}");
    assert!(handle.resync().is_err(), "the loop is gone");
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn the_embed_example_runs_its_script_and_stops() {
    let output = Command::new(env!("CARGO_BIN_EXE_embed"))
        .output()
        .expect("run the embed example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "answers: pod-a",
        "default/web-copy:http: skipped (clash)",
        "event: service default/web deleted",
        "stopped, listeners closed",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}
