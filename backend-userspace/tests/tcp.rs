//! Real TCP through the proxy on loopback: round trips, half-close, node ports, reject,
//! failover and ejection, bind problems, idle timeouts (the config's and a service port's).

mod common;

use std::time::Duration;

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use common::*;
use proxy_core::table::{Endpoint, Protocol, ServicePortName, TrafficPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn round_trip_with(splice: bool, net: &str) {
    let backend = Whoami::start(&format!("{net}.100"), "b1").await;
    let vip = format!("{net}.10");
    let port = free_port(&vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig { splice, ..config() }).expect("config");
    sync_ok(
        &mut dp,
        &table([service("web", &vip, port, vec![backend.endpoint()])]),
    )
    .await;

    let mut stream = connect_from(None, (ip(&vip), port).into())
        .await
        .expect("connect via VIP");
    assert_eq!(greeting(&mut stream).await, "b1");
    // 1 MiB each way, then half-close: the backend sees EOF and still answers.
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("write");
        write.shutdown().await.expect("half-close");
    });
    let mut received = Vec::new();
    tokio::time::timeout(STEP, read.read_to_end(&mut received))
        .await
        .expect("in time")
        .expect("read");
    writer.await.expect("writer");
    let (echo, trailer) = received.split_at(payload.len().min(received.len()));
    assert!(
        echo == payload.as_slice(),
        "echo differs ({} bytes back)",
        received.len()
    );
    assert_eq!(
        trailer, b"bye from b1",
        "reply after our half-close must arrive"
    );
    let metrics = dp
        .metrics()
        .for_service_port(&ServicePortName::new("test", "web", "p"), Protocol::Tcp);
    // The pump task may still be finishing its bookkeeping.
    for _ in 0..50 {
        if metrics.active.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.bytes_to_endpoint.get(), 1 << 20);
    let back = (1 << 20) + "b1\n".len() + "bye from b1".len();
    assert_eq!(metrics.bytes_to_client.get(), back as u64);
    assert_eq!(metrics.accepted.get(), 1);
    assert_eq!(metrics.active.get(), 0, "connection over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_round_trip_with_copy_pump_propagates_half_close() {
    round_trip_with(false, "127.11.1").await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_round_trip_with_splice_pump_propagates_half_close() {
    round_trip_with(true, "127.11.2").await;
}

#[tokio::test]
async fn node_port_is_served_on_each_node_address() {
    let backend = Whoami::start("127.11.3.100", "b1").await;
    let port = free_port("127.11.3.1").await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        node_addresses: vec![ip("127.11.3.1"), ip("127.11.3.2")],
        ..config()
    })
    .expect("config");
    let web = service(
        "web",
        "127.11.3.10",
        free_port("127.11.3.10").await,
        vec![backend.endpoint()],
    )
    .with_node_port(port);
    sync_ok(&mut dp, &table([web])).await;
    for node in ["127.11.3.1", "127.11.3.2"] {
        assert_eq!(
            ask((ip(node), port).into()).await.expect(node),
            "b1",
            "via {node}"
        );
    }
    assert_eq!(dp.observe().len(), 3, "cluster IP + two node addresses");
}

#[tokio::test]
async fn service_without_endpoints_is_refused_by_the_kernel_until_it_has_one() {
    let backend = Whoami::start("127.11.4.100", "b1").await;
    let vip = "127.11.4.10";
    let port = free_port(vip).await;
    let to = (ip(vip), port).into();
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([service("empty", vip, port, vec![])])).await;
    // Nothing listens, so the SYN is answered with a RST (kube-proxy's REJECT), never accepted.
    let refused = connect_from(None, to).await.expect_err("refused");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    let with_endpoint = table([service("empty", vip, port, vec![backend.endpoint()])]);
    sync_ok(&mut dp, &with_endpoint).await;
    assert_eq!(ask(to).await.expect("served again"), "b1");

    sync_ok(&mut dp, &table([service("empty", vip, port, vec![])])).await;
    let refused = connect_from(None, to).await.expect_err("refused again");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn connect_failure_fails_over_and_ejects_the_dead_endpoint() {
    let live = Whoami::start("127.11.5.100", "live").await;
    // A port that was just closed: connects to it are refused.
    let dead = Endpoint::new(ip("127.11.5.101"), free_port("127.11.5.101").await);
    let vip = "127.11.5.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        eject_after_failures: 2,
        ejection_time: Duration::from_secs(60),
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([service("web", vip, port, vec![dead, live.endpoint()])]),
    )
    .await;
    for i in 0..10 {
        assert_eq!(
            ask((ip(vip), port).into()).await.expect("answer"),
            "live",
            "connection {i}"
        );
    }
    let ejections = dp.metrics().endpoint_ejections.get();
    assert_eq!(ejections, 1, "dead endpoint ejected once after 2 failures");
}

#[tokio::test]
async fn ejected_endpoint_is_retried_after_the_ejection_time() {
    let vip = "127.11.6.10";
    let port = free_port(vip).await;
    let dead_addr = std::net::SocketAddr::new(ip("127.11.6.101"), free_port("127.11.6.101").await);
    let live = Whoami::start("127.11.6.100", "live").await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        eject_after_failures: 1,
        ejection_time: Duration::from_millis(300),
        ..config()
    })
    .expect("config");
    let endpoints = vec![
        Endpoint::new(dead_addr.ip(), dead_addr.port()),
        live.endpoint(),
    ];
    sync_ok(&mut dp, &table([service("web", vip, port, endpoints)])).await;
    for _ in 0..4 {
        assert_eq!(ask((ip(vip), port).into()).await.expect("answer"), "live");
    }
    // The dead endpoint comes back; once its ejection runs out, round robin reaches it again.
    let revived = Whoami::start_at(dead_addr, "revived").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(ask((ip(vip), port).into()).await.expect("answer"));
    }
    assert!(
        names.iter().any(|n| n == "revived"),
        "never retried: {names:?}"
    );
    assert!(revived.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn all_endpoints_down_resets_the_client() {
    let vip = "127.11.7.10";
    let port = free_port(vip).await;
    let dead = Endpoint::new(ip("127.11.7.101"), free_port("127.11.7.101").await);
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([service("web", vip, port, vec![dead])])).await;
    let error = ask((ip(vip), port).into())
        .await
        .expect_err("nothing to reach");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{error}"
    );
    let failed = dp
        .metrics()
        .for_service_port(
            &proxy_core::table::ServicePortName::new("test", "web", "p"),
            proxy_core::table::Protocol::Tcp,
        )
        .connect_failed
        .get();
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn address_that_cannot_be_bound_is_reported_and_the_rest_applies() {
    let backend = Whoami::start("127.11.8.100", "b1").await;
    let taken_vip = "127.11.8.10";
    let squatter = std::net::TcpListener::bind((ip(taken_vip), 0)).expect("squat");
    let taken_port = squatter.local_addr().expect("addr").port();
    let ok_vip = "127.11.8.11";
    let ok_port = free_port(ok_vip).await;
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    let t = table([
        service("blocked", taken_vip, taken_port, vec![backend.endpoint()]),
        service("fine", ok_vip, ok_port, vec![backend.endpoint()]),
    ]);
    let report = sync(&mut dp, &t).await;
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(
        report.problems[0].service_port,
        Some(ServicePortName::new("test", "blocked", "p")),
        "{report}"
    );
    let problem = report.problems[0].to_string();
    assert!(
        problem.contains(&format!("tcp {taken_vip}:{taken_port}")),
        "{problem}"
    );
    assert!(problem.contains("test/blocked:p"), "{problem}");
    assert!(
        problem.to_lowercase().contains("in use"),
        "OS reason missing: {problem}"
    );
    assert_eq!(
        ask((ip(ok_vip), ok_port).into())
            .await
            .expect("other service works"),
        "b1"
    );

    // Once the address is free, the next sync opens it.
    drop(squatter);
    sync_ok(&mut dp, &t).await;
    assert_eq!(
        ask((ip(taken_vip), taken_port).into())
            .await
            .expect("now bound"),
        "b1"
    );
}

#[tokio::test]
async fn idle_connection_is_closed_after_the_idle_timeout() {
    let backend = Whoami::start("127.11.9.100", "b1").await;
    let vip = "127.11.9.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        idle_timeout: Duration::from_millis(300),
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([service("web", vip, port, vec![backend.endpoint()])]),
    )
    .await;
    let mut stream = connect_from(None, (ip(vip), port).into())
        .await
        .expect("connect");
    assert_eq!(greeting(&mut stream).await, "b1");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, stream.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "idle connection must be closed");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_service_ports_own_idle_timeout_closes_its_connections_and_no_others() {
    let backend = Whoami::start("127.11.13.100", "b1").await;
    let (short_vip, long_vip) = ("127.11.13.10", "127.11.13.11");
    let (short_port, long_port) = (free_port(short_vip).await, free_port(long_vip).await);
    let short = service("short", short_vip, short_port, vec![backend.endpoint()])
        .with_idle_timeout(Duration::from_secs(1));
    let long = service("long", long_vip, long_port, vec![backend.endpoint()]);
    // The backend's default (an hour) for every port that sets none.
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([short, long])).await;

    let mut to_short = connect_from(None, (ip(short_vip), short_port).into())
        .await
        .expect("connect short");
    let mut to_long = connect_from(None, (ip(long_vip), long_port).into())
        .await
        .expect("connect long");
    assert_eq!(greeting(&mut to_short).await, "b1");
    assert_eq!(greeting(&mut to_long).await, "b1");
    let started = std::time::Instant::now();

    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, to_short.read(&mut buf))
        .await
        .expect("the 1 s port's idle connection is closed within 5 s")
        .unwrap_or(0);
    let closed_after = started.elapsed();
    assert_eq!(n, 0, "the idle connection of the 1 s port must be closed");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed too early: {closed_after:?}"
    );

    // The other port's connection, idle as long, is still proxied both ways.
    to_long.write_all(b"ping").await.expect("write to long");
    let mut echo = [0u8; 4];
    tokio::time::timeout(STEP, to_long.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("the default port's connection stays open");
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn load_balancer_source_ranges_admit_only_listed_clients() {
    let backend = Whoami::start("127.11.10.100", "b1").await;
    let lb = "127.11.10.20";
    let port = free_port(lb).await;
    let mut web = service("web", "127.11.10.10", port, vec![backend.endpoint()]);
    web.load_balancer_ips = vec![ip(lb)];
    web.load_balancer_source_ranges = vec!["127.11.10.0/30".parse().expect("net")];
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([web])).await;
    let inside = ask_from(Some(ip("127.11.10.2")), (ip(lb), port).into()).await;
    assert_eq!(inside.expect("allowed source"), "b1");
    let outside = ask_from(Some(ip("127.11.10.5")), (ip(lb), port).into()).await;
    assert!(
        outside.is_err(),
        "source outside the ranges got {outside:?}"
    );
}

/// A client on loopback is the node itself, which kube-proxy short-circuits to every endpoint
/// (`--src-type LOCAL`); clients elsewhere are dropped (unit test
/// `balance::tests::pods_and_the_node_take_the_short_circuit_and_other_clients_the_local_policy`,
/// and the conformance suite's `external_traffic_policy_local` flows, through namespaces).
#[tokio::test]
async fn external_local_policy_without_local_endpoints_short_circuits_the_node_itself() {
    let backend = Whoami::start("127.11.11.100", "remote").await;
    let node = "127.11.11.1";
    let node_port = free_port(node).await;
    let vip = "127.11.11.10";
    let port = free_port(vip).await;
    let mut web = service("web", vip, port, vec![backend.endpoint()]).with_node_port(node_port);
    web.external_traffic_policy = TrafficPolicy::Local;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        node_addresses: vec![ip(node)],
        ..config()
    })
    .expect("config");
    sync_ok(&mut dp, &table([web])).await;
    assert_eq!(
        ask((ip(vip), port).into())
            .await
            .expect("cluster IP uses all endpoints"),
        "remote"
    );
    assert_eq!(
        ask((ip(node), node_port).into())
            .await
            .expect("the node reaches every endpoint through its node port"),
        "remote"
    );
    assert_eq!(
        backend.accepted.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn listeners_past_the_limit_are_reported_not_opened_and_open_when_room_is_made() {
    let backend = Whoami::start("127.11.9.100", "b1").await;
    let (first, second) = ("127.11.9.10", "127.11.9.11");
    let (first_port, second_port) = (free_port(first).await, free_port(second).await);
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        max_listeners: Some(1),
        ..config()
    })
    .expect("config");
    let both = table([
        service("a", first, first_port, vec![backend.endpoint()]),
        service("b", second, second_port, vec![backend.endpoint()]),
    ]);
    let report = sync(&mut dp, &both).await;
    assert_eq!(dp.observe().len(), 1, "{report}");
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(
        report.problems[0].service_port,
        Some(ServicePortName::new("test", "b", "p"))
    );
    let problem = report.problems[0].to_string();
    assert!(
        problem.contains("1 listeners are open, the most allowed"),
        "{problem}"
    );
    assert_eq!(
        ask((ip(first), first_port).into())
            .await
            .expect("the first is served"),
        "b1"
    );

    // Without `a`, `b` fits.
    let only_b = table([service("b", second, second_port, vec![backend.endpoint()])]);
    let report = sync(&mut dp, &only_b).await;
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(
        ask((ip(second), second_port).into())
            .await
            .expect("the second is served"),
        "b1"
    );
}

#[test]
fn the_default_listener_limit_keeps_an_eighth_of_the_open_files_for_connections() {
    let config = UserspaceConfig::default();
    assert_eq!(config.listener_limit(20_000), 17_500);
    assert_eq!(config.listener_limit(1_024), 768, "at least 256 kept");
    assert_eq!(config.listener_limit(100), 0);
    let capped = UserspaceConfig {
        max_listeners: Some(5),
        ..config
    };
    assert_eq!(capped.listener_limit(20_000), 5);
}

#[tokio::test]
async fn non_local_address_needs_freebind() {
    // 198.18.0.0/15 is a benchmarking range no host here owns; nothing is sent to it.
    let vip = "198.18.77.10";
    let t = table([service(
        "web",
        vip,
        18080,
        vec![Endpoint::new(ip("127.0.0.1"), 1)],
    )]);
    let mut strict = UserspaceDataplane::new(config()).expect("config");
    let report = sync(&mut strict, &t).await;
    assert_eq!(report.problems.len(), 1, "{report}");
    let problem = report.problems[0].to_string();
    assert!(problem.contains("tcp 198.18.77.10:18080"), "{problem}");
    assert!(problem.contains("assign requested address"), "{problem}");
    assert!(strict.observe().is_empty());

    let mut free = UserspaceDataplane::new(UserspaceConfig {
        freebind: true,
        ..config()
    })
    .expect("config");
    sync_ok(&mut free, &t).await;
    assert_eq!(free.observe().len(), 1);
}

#[tokio::test]
async fn connect_timeout_fails_over_to_the_next_endpoint() {
    // A listener that never accepts, with its queue filled: further SYNs go unanswered.
    let stuck_ip = ip("127.11.12.101");
    let stuck =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    stuck
        .bind(&std::net::SocketAddr::new(stuck_ip, 0).into())
        .expect("bind");
    stuck.listen(0).expect("listen");
    let stuck_addr = stuck.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.connect(&stuck_addr.into());
        fillers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = Whoami::start("127.11.12.100", "live").await;
    let vip = "127.11.12.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        connect_timeout: Duration::from_millis(200),
        ..config()
    })
    .expect("config");
    let endpoints = vec![
        live.endpoint(),
        Endpoint::new(stuck_addr.ip(), stuck_addr.port()),
    ];
    sync_ok(&mut dp, &table([service("web", vip, port, endpoints)])).await;
    // Round robin: the first goes to live, the second tries the stuck one, times out, fails over.
    assert_eq!(ask((ip(vip), port).into()).await.expect("answer"), "live");
    let started = std::time::Instant::now();
    assert_eq!(ask((ip(vip), port).into()).await.expect("answer"), "live");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(180),
        "did not wait for the stuck endpoint: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "connect timeout not applied: {took:?}"
    );
}
