//! Live updates: endpoint swaps under load, drain of removed endpoints, listeners opening and
//! closing, observe matching the plan, cleanup.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_userspace::observe::render;
use backend_userspace::UserspaceDataplane;
use common::*;
use proxy_core::dataplane::Dataplane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_swap_under_load_loses_no_connection() {
    let old = Whoami::start("127.13.1.100", "old").await;
    let new = Whoami::start("127.13.1.101", "new").await;
    let vip = "127.13.1.10";
    let port = free_port(vip).await;
    let addr = (ip(vip), port).into();
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(
        &mut dp,
        &table([service("web", vip, port, vec![old.endpoint()])]),
    )
    .await;

    // Clients hammer the service (bounded in count and time) while the endpoints change.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut failures = Vec::new();
            for _ in 0..500 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                match ask(addr).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => failures.push(error.to_string()),
                }
            }
            failures
        }));
    }
    let listener_before = dp.observe();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let endpoints = match round % 3 {
            0 => vec![old.endpoint(), new.endpoint()],
            1 => vec![new.endpoint()],
            _ => vec![old.endpoint()],
        };
        sync_ok(&mut dp, &table([service("web", vip, port, endpoints)])).await;
    }
    sync_ok(
        &mut dp,
        &table([service("web", vip, port, vec![new.endpoint()])]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let failures = client.await.expect("client task");
        assert!(
            failures.is_empty(),
            "connections failed during updates: {failures:?}"
        );
    }
    assert!(
        done.load(Ordering::SeqCst) >= 20,
        "too little load: {}",
        done.load(Ordering::SeqCst)
    );
    assert_eq!(
        dp.observe().keys().collect::<Vec<_>>(),
        listener_before.keys().collect::<Vec<_>>()
    );
    for _ in 0..3 {
        assert_eq!(
            ask(addr).await.expect("answer"),
            "new",
            "removed endpoint got a new connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_endpoint_drains_while_a_long_transfer_continues() {
    let old = Whoami::start("127.13.2.100", "old").await;
    let new = Whoami::start("127.13.2.101", "new").await;
    let vip = "127.13.2.10";
    let port = free_port(vip).await;
    let addr = (ip(vip), port).into();
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(
        &mut dp,
        &table([service("web", vip, port, vec![old.endpoint()])]),
    )
    .await;

    let mut long = connect_from(None, addr).await.expect("connect");
    assert_eq!(greeting(&mut long).await, "old");
    let chunk = vec![7u8; 64 * 1024];
    let mut back = vec![0u8; chunk.len()];
    for step in 0..20 {
        if step == 5 {
            // Remove the endpoint in the middle of the transfer.
            sync_ok(
                &mut dp,
                &table([service("web", vip, port, vec![new.endpoint()])]),
            )
            .await;
            assert_eq!(
                ask(addr).await.expect("answer"),
                "new",
                "new connections avoid the removed endpoint"
            );
        }
        long.write_all(&chunk).await.expect("write during drain");
        tokio::time::timeout(STEP, long.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("echo during drain");
        assert_eq!(back, chunk, "step {step}");
    }
    long.shutdown().await.expect("half-close");
    let mut trailer = String::new();
    tokio::time::timeout(STEP, long.read_to_string(&mut trailer))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(trailer, "bye from old");
}

#[tokio::test]
async fn removed_service_port_closes_its_listener_but_not_its_connections() {
    let backend = Whoami::start("127.13.3.100", "b1").await;
    let (vip_a, vip_b) = ("127.13.3.10", "127.13.3.11");
    let (port_a, port_b) = (free_port(vip_a).await, free_port(vip_b).await);
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    let a = service("a", vip_a, port_a, vec![backend.endpoint()]);
    let b = service("b", vip_b, port_b, vec![backend.endpoint()]);
    sync_ok(&mut dp, &table([a.clone()])).await;
    let mut open = connect_from(None, (ip(vip_a), port_a).into())
        .await
        .expect("connect");
    assert_eq!(greeting(&mut open).await, "b1");

    sync_ok(&mut dp, &table([b])).await;
    let refused = tokio::net::TcpStream::connect((ip(vip_a), port_a)).await;
    assert!(
        refused.is_err(),
        "listener of the removed port still accepts"
    );
    assert_eq!(
        ask((ip(vip_b), port_b).into()).await.expect("new port"),
        "b1"
    );
    open.write_all(b"still here").await.expect("write");
    let mut buf = [0u8; 10];
    tokio::time::timeout(STEP, open.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&buf, b"still here");

    // The port comes back on the same address at once.
    sync_ok(&mut dp, &table([a])).await;
    assert_eq!(
        ask((ip(vip_a), port_a).into()).await.expect("reopened"),
        "b1"
    );
}

#[tokio::test]
async fn observe_matches_the_plan_and_cleanup_closes_everything() {
    let backend = Whoami::start("127.13.4.100", "b1").await;
    let vip = "127.13.4.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    let t = table([service("web", vip, port, vec![backend.endpoint()])]);
    let planned = dp.plan(&t);
    assert_eq!(planned.open.len(), 1);
    sync_ok(&mut dp, &t).await;
    assert_eq!(dp.observe(), planned.desired);
    assert!(dp.plan(&t).is_noop(), "a second plan has nothing to do");
    let listing = render(&dp.observe());
    assert_eq!(
        listing,
        format!(
            "tcp {vip}:{port} test/web:p cluster-ip rr -> {}\n",
            backend.addr
        )
    );

    let report = dp.cleanup().await.expect("cleanup");
    assert_eq!(report.objects_removed, 1);
    assert!(dp.observe().is_empty());
    assert!(
        tokio::net::TcpStream::connect((ip(vip), port))
            .await
            .is_err(),
        "still listening"
    );
    std::net::TcpListener::bind((ip(vip), port)).expect("address free again after cleanup");
}
