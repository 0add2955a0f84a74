use std::net::{Ipv4Addr, TcpListener as StdListener};

use super::*;
use crate::dataplane::SyncMode;
use crate::sync::sync_once;
use crate::table::{Endpoint, Protocol, ServicePortName};
use crate::testing::fake::FakeDataplane;

fn free_port() -> u16 {
    // Bind, read the port, release it: good enough on loopback for a test.
    let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("address").port()
}

fn endpoint(addr: &str, local: bool, ready: bool) -> Endpoint {
    let mut ep = Endpoint::new(addr.parse().expect("ip"), 8080);
    ep.is_local = local;
    ep.ready = ready;
    ep.serving = true;
    ep.terminating = !ready;
    ep
}

/// A `Local` service `ns/name` with a node port and the given health port and endpoints.
fn local_service(
    name: &str,
    port_name: &str,
    vip: &str,
    health: u16,
    endpoints: Vec<Endpoint>,
) -> ServicePort {
    let mut port = ServicePort::new(
        ServicePortName::new("ns", name, port_name),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(vip.parse().expect("ip"));
    port.node_port = Some(30_000 + health % 1_000);
    port.external_traffic_policy = TrafficPolicy::Local;
    port.health_check_node_port = Some(health);
    port.endpoints = endpoints;
    port
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for port in ports {
        builder = builder.insert(port);
    }
    builder.build().expect("valid table")
}

#[test]
fn counts_distinct_local_ready_endpoints_over_the_services_ports() {
    let eps = || {
        vec![
            endpoint("198.18.1.1", true, true),
            endpoint("198.18.1.2", true, false), // terminating: does not count
            endpoint("198.18.1.3", false, true), // remote: does not count
        ]
    };
    let mut https = local_service("web", "https", "198.18.0.1", 31_001, eps());
    https.port = 443;
    https.node_port = Some(30_443);
    https.endpoints.push(endpoint("198.18.1.4", true, true));
    let mut cluster = local_service("other", "", "198.18.0.2", 31_002, eps());
    cluster.external_traffic_policy = TrafficPolicy::Cluster;
    let t = table(vec![
        local_service("web", "http", "198.18.0.1", 31_001, eps()),
        https,
        cluster,
    ]);
    let desired = desired_health(&t);
    assert_eq!(
        desired.into_iter().collect::<Vec<_>>(),
        [(
            31_001,
            ServiceHealth {
                namespace: "ns".into(),
                name: "web".into(),
                local_endpoints: 2,
            }
        )],
        "the Cluster-policy service has no health port; web counts .1 and .4"
    );
}

/// Sends a GET and returns (status code, X-Load-Balancing-Endpoint-Weight, body).
async fn get(port: u16) -> std::io::Result<(u16, String, serde_json::Value)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response"))??;
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let weight = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Load-Balancing-Endpoint-Weight: "))
        .expect("weight header")
        .to_owned();
    Ok((
        status,
        weight,
        serde_json::from_str(body).expect("JSON body"),
    ))
}

#[tokio::test]
async fn answers_200_with_local_endpoints_then_503_then_closes() {
    let port = free_port();
    let mut server = ServiceHealthServer::new(vec![Ipv4Addr::LOCALHOST.into()]);
    let up = table(vec![local_service(
        "web",
        "",
        "198.18.0.1",
        port,
        vec![endpoint("198.18.1.1", true, true)],
    )]);
    server.update(&up).await.expect("port opens");
    assert_eq!(server.open_ports(), [port]);
    let (status, weight, body) = get(port).await.expect("answer");
    assert_eq!((status, weight.as_str()), (200, "1"));
    assert_eq!(
        body,
        serde_json::json!({"service": {"namespace": "ns", "name": "web"},
                           "localEndpoints": 1, "serviceProxyHealthy": true})
    );

    // The only local endpoint starts terminating: the load balancer must move away.
    let draining = table(vec![local_service(
        "web",
        "",
        "198.18.0.1",
        port,
        vec![endpoint("198.18.1.1", true, false)],
    )]);
    server.update(&draining).await.expect("still open");
    let (status, weight, body) = get(port).await.expect("answer");
    assert_eq!((status, weight.as_str()), (503, "0"));
    assert_eq!(body["localEndpoints"], 0);

    server
        .update(&table(vec![]))
        .await
        .expect("nothing to open");
    assert!(server.open_ports().is_empty());
    // The accept loop is aborted; give the runtime a moment to drop the listener.
    let mut refused = false;
    for _ in 0..50 {
        if get(port).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "port {port} still answers after its service went");
}

#[tokio::test]
async fn a_port_in_use_is_reported_by_name_and_the_others_open() {
    let taken = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let busy = taken.local_addr().expect("address").port();
    let free = free_port();
    let mut server = ServiceHealthServer::new(vec![Ipv4Addr::LOCALHOST.into()]);
    let t = table(vec![
        local_service(
            "busy",
            "",
            "198.18.0.1",
            busy,
            vec![endpoint("198.18.1.1", true, true)],
        ),
        local_service(
            "free",
            "",
            "198.18.0.2",
            free,
            vec![endpoint("198.18.1.2", true, true)],
        ),
    ]);
    let err = server.update(&t).await.expect_err("busy port");
    assert_eq!(err.failures.len(), 1);
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{busy}")) && text.contains("ns/busy"),
        "{text}"
    );
    assert_eq!(server.open_ports(), [free]);
    assert_eq!(get(free).await.expect("answer").0, 200);

    // Freed: the next update opens it.
    drop(taken);
    server.update(&t).await.expect("both open now");
    let mut open = server.open_ports();
    open.sort_unstable();
    let mut want = vec![busy, free];
    want.sort_unstable();
    assert_eq!(open, want);
}

#[tokio::test]
async fn the_wrapper_opens_ports_after_a_sync_and_closes_them_on_cleanup() {
    let port = free_port();
    let mut dataplane =
        WithServiceHealth::new(FakeDataplane::new(), vec![Ipv4Addr::LOCALHOST.into()]);
    let t = table(vec![local_service(
        "web",
        "",
        "198.18.0.1",
        port,
        vec![endpoint("198.18.1.1", true, true)],
    )]);
    sync_once(&mut dataplane, &t, SyncMode::Full)
        .await
        .expect("sync");
    assert_eq!(dataplane.health().open_ports(), [port]);
    assert_eq!(get(port).await.expect("answer").0, 200);
    dataplane.cleanup().await.expect("cleanup");
    assert!(dataplane.health().open_ports().is_empty());
}

#[tokio::test]
async fn a_failed_sync_leaves_the_health_ports_as_they_were() {
    let port = free_port();
    let fake = FakeDataplane::new();
    let mut dataplane = WithServiceHealth::new(fake.clone(), vec![Ipv4Addr::LOCALHOST.into()]);
    let t = table(vec![local_service(
        "web",
        "",
        "198.18.0.1",
        port,
        vec![endpoint("198.18.1.1", true, true)],
    )]);
    fake.fail_next(1);
    sync_once(&mut dataplane, &t, SyncMode::Full)
        .await
        .expect_err("injected failure");
    assert!(dataplane.health().open_ports().is_empty());
}

#[tokio::test]
async fn a_partial_sync_updates_the_answers_of_the_ports_it_touches() {
    use crate::diff::diff;
    let port = free_port();
    let mut dataplane =
        WithServiceHealth::new(FakeDataplane::new(), vec![Ipv4Addr::LOCALHOST.into()]);
    let web = |ready| {
        local_service(
            "web",
            "",
            "198.18.0.1",
            port,
            vec![endpoint("198.18.1.1", true, ready)],
        )
    };
    let other = |n: u8| {
        let mut p = ServicePort::new(ServicePortName::new("ns", "other", ""), Protocol::Tcp, 80)
            .with_cluster_ip("198.18.0.2".parse().expect("ip"));
        p.endpoints = vec![endpoint(&format!("198.18.2.{n}"), false, true)];
        p
    };
    let before = table(vec![web(true), other(1)]);
    sync_once(&mut dataplane, &before, SyncMode::Full)
        .await
        .expect("sync");
    assert_eq!(
        dataplane.health().health(port).map(|h| h.local_endpoints),
        Some(1)
    );

    let partial = |from: &ServiceTable, to: &ServiceTable| {
        let changes = diff(from, to);
        (to.clone(), changes)
    };
    // Another service changes: the answer stays.
    let (unrelated, changes) = partial(&before, &table(vec![web(true), other(2)]));
    dataplane
        .sync(SyncRequest {
            desired: &unrelated,
            changes: &changes,
            mode: SyncMode::Partial,
        })
        .await
        .expect("partial sync");
    assert_eq!(
        dataplane.health().health(port).map(|h| h.local_endpoints),
        Some(1)
    );
    // The health-checked service loses its ready local endpoint: the answer follows.
    let (draining, changes) = partial(&unrelated, &table(vec![web(false), other(2)]));
    dataplane
        .sync(SyncRequest {
            desired: &draining,
            changes: &changes,
            mode: SyncMode::Partial,
        })
        .await
        .expect("partial sync");
    assert_eq!(
        dataplane.health().health(port).map(|h| h.local_endpoints),
        Some(0)
    );
}

/// A dataplane whose state is always found drifted.
#[derive(Debug)]
struct AlwaysDrifted;

#[async_trait]
impl Dataplane for AlwaysDrifted {
    fn name(&self) -> &'static str {
        "drifted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::everything()
    }
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        Ok(SyncReport::for_request(&request))
    }
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        Ok(CleanupReport::default())
    }
    fn dry_run(&self, _table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        Ok(DryRun::default())
    }
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        Ok(true)
    }
}

#[tokio::test]
async fn the_wrapper_passes_the_drift_check_through() {
    // svcproxy wraps every backend: a wrapper answering the trait's default `false` would hide
    // every drift its backend finds.
    let mut wrapped = WithServiceHealth::new(AlwaysDrifted, vec![Ipv4Addr::LOCALHOST.into()]);
    assert!(wrapped.check_drift().await.expect("check"));
}
