//! Overload: one service's connections cannot starve another's, an endpoint that accepts and
//! resets is ejected, and the proxy's own shortages never eject an endpoint.

mod common;

use std::time::{Duration, Instant};

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use common::*;
use proxy_core::metrics::encode_text;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::table::{Protocol, ServicePortName};
use proxy_core::Dataplane;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Waits until `check` holds, for at most [`STEP`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the proxy refuses a connection to `addr`: resets or closes it without a byte.
async fn is_refused(addr: std::net::SocketAddr) -> bool {
    let mut stream = match connect_from(None, addr).await {
        Ok(stream) => stream,
        // The reset came before the connect was seen to complete.
        Err(error) => return error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(STEP, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("neither answered nor closed within {STEP:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_one_service_leave_room_for_another() {
    let a = Whoami::start("127.15.1.100", "a").await;
    let b = Whoami::start("127.15.1.101", "b").await;
    let (vip_a, vip_b) = ("127.15.1.10", "127.15.1.11");
    let (port_a, port_b) = (free_port(vip_a).await, free_port(vip_b).await);
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        max_connections_per_port: Some(10),
        max_connections: Some(15),
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([
            service("a", vip_a, port_a, vec![a.endpoint()]),
            service("b", vip_b, port_b, vec![b.endpoint()]),
        ]),
    )
    .await;
    let metrics_a = dp
        .metrics()
        .for_service_port(&ServicePortName::new("test", "a", "p"), Protocol::Tcp);
    let metrics_b = dp
        .metrics()
        .for_service_port(&ServicePortName::new("test", "b", "p"), Protocol::Tcp);

    // Service A up to its limit, with idle connections.
    let mut idle_a = Vec::new();
    for i in 0..10 {
        let mut stream = connect_from(None, (ip(vip_a), port_a).into())
            .await
            .expect("connect to A");
        assert_eq!(greeting(&mut stream).await, "a", "connection {i} to A");
        idle_a.push(stream);
    }
    // One more to A is refused, and counted.
    assert!(
        is_refused((ip(vip_a), port_a).into()).await,
        "A's 11th connection refused"
    );
    assert_eq!(metrics_a.port_limit.get(), 1, "refusal counted for A");
    // B still answers, promptly.
    let started = Instant::now();
    assert_eq!(
        ask((ip(vip_b), port_b).into()).await.expect("B answers"),
        "b"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "B took {:?}",
        started.elapsed()
    );

    // B up to the global limit (10 to A + 5 to B), then the global limit refuses.
    eventually("B's first connection released", || {
        dp.connections_held().0 == 10
    })
    .await;
    let mut idle_b = Vec::new();
    for _ in 0..5 {
        let mut stream = connect_from(None, (ip(vip_b), port_b).into())
            .await
            .expect("connect to B");
        assert_eq!(greeting(&mut stream).await, "b");
        idle_b.push(stream);
    }
    assert!(
        is_refused((ip(vip_b), port_b).into()).await,
        "the 16th connection refused"
    );
    assert_eq!(
        metrics_b.global_limit.get(),
        1,
        "global refusal counted for B"
    );
    assert_eq!(metrics_b.port_limit.get(), 0);
    assert_eq!(dp.connections_held().0, 15);
    assert_eq!(
        dp.metrics().endpoint_ejections.get(),
        0,
        "refusals eject nobody"
    );

    // Closed connections give their places back.
    drop(idle_a);
    eventually("A's connections released", || dp.connections_held().0 == 5).await;
    assert_eq!(
        ask((ip(vip_a), port_a).into()).await.expect("A answers"),
        "a"
    );
    let mut registry = Registry::default();
    dp.register_metrics(&mut registry);
    let text = encode_text(&registry).expect("encode");
    for series in [
        r#"svcproxy_userspace_connections_failed_total{service_port="test/a:p",protocol="tcp",reason="service_port_limit"} 1"#,
        r#"svcproxy_userspace_connections_failed_total{service_port="test/b:p",protocol="tcp",reason="global_limit"} 1"#,
        "svcproxy_userspace_endpoint_ejections_total 0",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}

/// A backend that accepts each connection and `after` that, without a byte, resets it
/// (SO_LINGER 0, then close) or closes it.
async fn closer(
    ip_text: &str,
    after: Duration,
    reset: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((ip(ip_text), 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if reset {
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
                drop(stream);
            });
        }
    });
    (addr, task)
}

/// Asks `count` times through a service of a `live` endpoint and `bad`, ejecting after two
/// failures; returns the answers (`None`: closed without one) and the ejections.
async fn ask_with_bad_endpoint(
    net: &str,
    bad: std::net::SocketAddr,
    connect_timeout: Duration,
    count: usize,
) -> (Vec<Option<String>>, u64) {
    let live = Whoami::start(&format!("{net}.100"), "live").await;
    let vip = format!("{net}.10");
    let port = free_port(&vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        eject_after_failures: 2,
        ejection_time: Duration::from_secs(60),
        connect_timeout,
        ..config()
    })
    .expect("config");
    let bad = proxy_core::table::Endpoint::new(bad.ip(), bad.port());
    sync_ok(
        &mut dp,
        &table([service("web", &vip, port, vec![bad, live.endpoint()])]),
    )
    .await;
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(ask((ip(&vip), port).into()).await.ok());
    }
    (answers, dp.metrics().endpoint_ejections.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_that_accepts_then_closes_at_once_is_ejected() {
    // 50 ms: well after the proxy's connect completed, well within its connect timeout.
    let (bad, task) = closer("127.15.6.101", Duration::from_millis(50), false).await;
    let (answers, ejections) =
        ask_with_bad_endpoint("127.15.6", bad, Duration::from_millis(500), 10).await;
    assert_eq!(ejections, 1, "{answers:?}");
    assert!(
        answers[6..].iter().all(|a| a.as_deref() == Some("live")),
        "{answers:?}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_that_closes_a_silent_connection_later_is_not_ejected() {
    // A server's own idle timeout: closes a connection that asked nothing, after the proxy's
    // connect timeout. Not a failure.
    let (bad, task) = closer("127.15.7.101", Duration::from_millis(300), false).await;
    let (answers, ejections) =
        ask_with_bad_endpoint("127.15.7", bad, Duration::from_millis(100), 6).await;
    assert_eq!(ejections, 0, "{answers:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_that_accepts_then_resets_is_ejected_and_traffic_goes_to_the_healthy_one() {
    // 50 ms: well after the proxy's connect completed.
    let (bad, task) = closer("127.15.2.101", Duration::from_millis(50), true).await;
    let (answers, ejections) =
        ask_with_bad_endpoint("127.15.2", bad, Duration::from_millis(500), 12).await;
    let failed = answers.iter().filter(|answer| answer.is_none()).count();
    assert_eq!(
        ejections, 1,
        "the resetting endpoint ejected once: {answers:?}"
    );
    assert_eq!(failed, 2, "two resets before the ejection: {answers:?}");
    assert!(
        answers[6..].iter().all(|a| a.as_deref() == Some("live")),
        "after the ejection every connection goes to the healthy endpoint: {answers:?}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_ejects_nobody() {
    // A backend that answers only after reading a request: clients that connect and leave
    // without one are not the endpoint's failures.
    let listener = TcpListener::bind((ip("127.15.3.100"), 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    let vip = "127.15.3.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        eject_after_failures: 1,
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([service(
            "quiet",
            vip,
            port,
            vec![proxy_core::table::Endpoint::new(addr.ip(), addr.port())],
        )]),
    )
    .await;
    for _ in 0..5 {
        let stream = connect_from(None, (ip(vip), port).into())
            .await
            .expect("connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(stream);
    }
    eventually("connections over", || dp.connections_held().0 == 0).await;
    assert_eq!(dp.metrics().endpoint_ejections.get(), 0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_endpoints_take_no_new_connections_and_all_weight_zero_rejects() {
    let drained = Whoami::start("127.15.5.100", "drained").await;
    let live = Whoami::start("127.15.5.101", "live").await;
    let (vip, quiet_vip) = ("127.15.5.10", "127.15.5.11");
    let (port, quiet_port) = (free_port(vip).await, free_port(quiet_vip).await);
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    let mut drained_ep = drained.endpoint();
    drained_ep.weight = 0;
    let mut quiet_ep = live.endpoint();
    quiet_ep.weight = 0;
    sync_ok(
        &mut dp,
        &table([
            service("web", vip, port, vec![drained_ep, live.endpoint()]),
            service("quiet", quiet_vip, quiet_port, vec![quiet_ep]),
        ]),
    )
    .await;
    for i in 0..6 {
        assert_eq!(
            ask((ip(vip), port).into()).await.expect("answer"),
            "live",
            "connection {i}"
        );
    }
    assert_eq!(
        drained.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // Every endpoint of weight 0: no usable endpoint, rejected as with none at all: nothing
    // listens, so the kernel refuses the SYN (kube-proxy's REJECT), before any accept.
    let refused = connect_from(None, (ip(quiet_vip), quiet_port).into())
        .await
        .expect_err("nothing listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let quiet = dp
        .metrics()
        .for_service_port(&ServicePortName::new("test", "quiet", "p"), Protocol::Tcp);
    assert_eq!(
        quiet.accepted.get(),
        0,
        "refused by the kernel, never accepted"
    );
    assert_eq!(quiet.connect_failed.get(), 0, "no connect was tried");
    assert_eq!(live.accepted.load(std::sync::atomic::Ordering::SeqCst), 6);
}
