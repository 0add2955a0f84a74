//! Real UDP through the proxy: replies reach the right client, flows stick and expire (after the
//! config's idle timeout or a service port's own), the flow table is bounded, and a service
//! without endpoints is refused (ICMP port unreachable: nothing listens).

mod common;

use std::time::Duration;

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use common::*;
use proxy_core::table::{Protocol, ServicePort, ServicePortName};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(2);

fn udp_service(vip: &str, port: u16, endpoints: Vec<proxy_core::table::Endpoint>) -> ServicePort {
    let mut sp = ServicePort::new(
        ServicePortName::new("test", "dns", "udp"),
        Protocol::Udp,
        port,
    )
    .with_cluster_ip(ip(vip));
    sp.endpoints = endpoints;
    sp
}

async fn client(ip_text: &str) -> UdpSocket {
    UdpSocket::bind((ip(ip_text), 0))
        .await
        .expect("bind client")
}

#[tokio::test]
async fn replies_reach_the_right_client_and_flows_stick() {
    let b0 = UdpEcho::start("127.14.1.100", "b0").await;
    let b1 = UdpEcho::start("127.14.1.101", "b1").await;
    let vip = "127.14.1.10";
    let port = free_port(vip).await;
    let to = (ip(vip), port).into();
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(
        &mut dp,
        &table([udp_service(vip, port, vec![b0.endpoint(), b1.endpoint()])]),
    )
    .await;

    let (one, two) = (client("127.14.1.1").await, client("127.14.1.2").await);
    assert_eq!(
        udp_ask(&one, to, "hello-1", WAIT).await.as_deref(),
        Some("b0:hello-1")
    );
    assert_eq!(
        udp_ask(&two, to, "hello-2", WAIT).await.as_deref(),
        Some("b1:hello-2")
    );
    for i in 0..5 {
        let (p1, p2) = (format!("one-{i}"), format!("two-{i}"));
        // Both send before either reads: each must get exactly its own reply.
        one.send_to(p1.as_bytes(), to).await.expect("send");
        two.send_to(p2.as_bytes(), to).await.expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(WAIT, one.recv_from(&mut buf))
            .await
            .expect("reply")
            .expect("recv");
        assert_eq!(&buf[..n], format!("b0:{p1}").as_bytes());
        let (n, _) = tokio::time::timeout(WAIT, two.recv_from(&mut buf))
            .await
            .expect("reply")
            .expect("recv");
        assert_eq!(&buf[..n], format!("b1:{p2}").as_bytes());
    }
}

#[tokio::test]
async fn idle_flow_expires_and_the_next_datagram_opens_a_new_one() {
    let b0 = UdpEcho::start("127.14.2.100", "b0").await;
    let b1 = UdpEcho::start("127.14.2.101", "b1").await;
    let vip = "127.14.2.10";
    let port = free_port(vip).await;
    let to = (ip(vip), port).into();
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        udp_idle_timeout: Duration::from_millis(200),
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([udp_service(vip, port, vec![b0.endpoint(), b1.endpoint()])]),
    )
    .await;
    let c = client("127.14.2.1").await;
    assert_eq!(udp_ask(&c, to, "x", WAIT).await.as_deref(), Some("b0:x"));
    assert_eq!(
        udp_ask(&c, to, "y", WAIT).await.as_deref(),
        Some("b0:y"),
        "same flow"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        udp_ask(&c, to, "z", WAIT).await.as_deref(),
        Some("b1:z"),
        "new flow, next endpoint"
    );
}

#[tokio::test]
async fn flow_table_is_bounded() {
    let b0 = UdpEcho::start("127.14.3.100", "b0").await;
    let vip = "127.14.3.10";
    let port = free_port(vip).await;
    let to = (ip(vip), port).into();
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        udp_max_flows: 1,
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([udp_service(vip, port, vec![b0.endpoint()])]),
    )
    .await;
    let (one, two) = (client("127.14.3.1").await, client("127.14.3.2").await);
    assert_eq!(udp_ask(&one, to, "a", WAIT).await.as_deref(), Some("b0:a"));
    assert_eq!(
        udp_ask(&two, to, "b", Duration::from_millis(300)).await,
        None,
        "table full"
    );
    let full = dp
        .metrics()
        .for_service_port(&ServicePortName::new("test", "dns", "udp"), Protocol::Udp)
        .flow_table_full
        .get();
    assert_eq!(full, 1);
}

/// What a connected client gets for one datagram: the answer, or the error the kernel
/// reported (ICMP port unreachable is `ConnectionRefused`).
async fn connected_ask(c: &UdpSocket, payload: &str) -> std::io::Result<String> {
    c.send(payload.as_bytes()).await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, c.recv(&mut buf))
        .await
        .expect("an answer or an error within the wait")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn service_without_endpoints_is_refused_until_it_has_one_again() {
    let b0 = UdpEcho::start("127.14.4.100", "b0").await;
    let vip = "127.14.4.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([udp_service(vip, port, vec![])])).await;
    let c = client("127.14.4.1").await;
    c.connect((ip(vip), port)).await.expect("connect");
    // Nothing listens: the kernel answers ICMP port unreachable, as kube-proxy's REJECT.
    let refused = connected_ask(&c, "q").await.expect_err("no endpoints");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        dp.bound_addrs().is_empty(),
        "no socket: {:?}",
        dp.bound_addrs()
    );
    assert_eq!(dp.observe().len(), 1, "the listener is there, rejecting");

    sync_ok(
        &mut dp,
        &table([udp_service(vip, port, vec![b0.endpoint()])]),
    )
    .await;
    assert_eq!(connected_ask(&c, "a").await.expect("served"), "b0:a");

    sync_ok(&mut dp, &table([udp_service(vip, port, vec![])])).await;
    let c = client("127.14.4.2").await;
    c.connect((ip(vip), port)).await.expect("connect");
    let refused = connected_ask(&c, "q")
        .await
        .expect_err("no endpoints again");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn flows_are_bounded_across_listeners_and_expired_ones_make_room() {
    let b0 = UdpEcho::start("127.14.5.100", "b0").await;
    let (vip_a, vip_b) = ("127.14.5.10", "127.14.5.11");
    let (port_a, port_b) = (free_port(vip_a).await, free_port(vip_b).await);
    let (to_a, to_b) = ((ip(vip_a), port_a).into(), (ip(vip_b), port_b).into());
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        udp_max_flows_total: Some(2),
        udp_idle_timeout: Duration::from_secs(1),
        ..config()
    })
    .expect("config");
    let mut b = udp_service(vip_b, port_b, vec![b0.endpoint()]);
    b.name = ServicePortName::new("test", "dns-b", "udp");
    sync_ok(
        &mut dp,
        &table([udp_service(vip_a, port_a, vec![b0.endpoint()]), b]),
    )
    .await;
    let clients = [
        client("127.14.5.1").await,
        client("127.14.5.2").await,
        client("127.14.5.3").await,
    ];
    assert_eq!(
        udp_ask(&clients[0], to_a, "1", WAIT).await.as_deref(),
        Some("b0:1")
    );
    assert_eq!(
        udp_ask(&clients[1], to_b, "2", WAIT).await.as_deref(),
        Some("b0:2")
    );
    // A third flow, on either listener, is over the limit across listeners.
    assert_eq!(
        udp_ask(&clients[2], to_a, "3", Duration::from_millis(200)).await,
        None
    );
    let metrics = dp
        .metrics()
        .for_service_port(&ServicePortName::new("test", "dns", "udp"), Protocol::Udp);
    assert_eq!(metrics.global_limit.get(), 1, "refusal counted");
    assert_eq!(dp.connections_held().1, 2);
    // Once the two flows expire, their places are free again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        dp.connections_held().1,
        0,
        "expired flows give their places back"
    );
    assert_eq!(
        udp_ask(&clients[2], to_a, "4", WAIT).await.as_deref(),
        Some("b0:4")
    );
}

#[tokio::test]
async fn a_service_ports_own_idle_timeout_expires_its_flows_and_no_others() {
    let b0 = UdpEcho::start("127.14.6.100", "b0").await;
    let (short_vip, long_vip) = ("127.14.6.10", "127.14.6.11");
    let (short_port, long_port) = (free_port(short_vip).await, free_port(long_vip).await);
    let mut short = udp_service(short_vip, short_port, vec![b0.endpoint()])
        .with_idle_timeout(Duration::from_secs(1));
    short.name = ServicePortName::new("test", "short", "udp");
    let mut long = udp_service(long_vip, long_port, vec![b0.endpoint()]);
    long.name = ServicePortName::new("test", "long", "udp");
    // The config's UDP default (30 s) for the port that sets none.
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(&mut dp, &table([short, long])).await;
    let client = client("127.14.6.1").await;
    let to_short = (ip(short_vip), short_port).into();
    let to_long = (ip(long_vip), long_port).into();
    assert_eq!(
        udp_ask(&client, to_short, "1", WAIT).await.as_deref(),
        Some("b0:1")
    );
    assert_eq!(
        udp_ask(&client, to_long, "2", WAIT).await.as_deref(),
        Some("b0:2")
    );
    let flows = |name: &str| {
        dp.metrics()
            .for_service_port(&ServicePortName::new("test", name, "udp"), Protocol::Udp)
            .udp_flows
            .get()
    };
    assert_eq!((flows("short"), flows("long")), (1, 1));
    let started = std::time::Instant::now();
    // Bounded: 50 polls of 100 ms.
    for _ in 0..50 {
        if flows("short") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired_after = started.elapsed();
    assert_eq!(flows("short"), 0, "the 1 s port's flow must expire");
    assert!(
        expired_after >= Duration::from_millis(800),
        "expired too early: {expired_after:?}"
    );
    assert_eq!(flows("long"), 1, "the default port's flow stays");
    assert_eq!(dp.connections_held().1, 1);
}
