//! What a UDP flow costs in memory, measured: 2,000 flows on loopback, the process's resident
//! set before, with them, after they expire, and with as many again (which must reuse what the
//! first ones freed). Alone in its binary, so that no other test's
//! allocations are counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use common::*;
use proxy_core::table::{Protocol, ServicePort, ServicePortName};

const FLOWS: usize = 2_000;

/// The resident set of this process, in bytes (Linux: `/proc/self/statm`).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

/// Opens one flow per client socket: each sends one datagram and waits for its reply. Blocking
/// std sockets on their own thread, so the clients cost the measured process no heap.
async fn open_flows(to: SocketAddr, clients: &[std::net::UdpSocket]) -> usize {
    let clients: Vec<std::net::UdpSocket> = clients
        .iter()
        .map(|socket| socket.try_clone().expect("clone client socket"))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut answered = 0;
        let mut buf = [0u8; 64];
        for client in &clients {
            client.send_to(b"ping", to).expect("send");
            if client.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        answered
    })
    .await
    .expect("client thread")
}

// One thread: every allocation comes from one malloc arena. With several workers the listener
// task moves between threads, and each thread's arena keeps the pages its frees left behind
// for its own reuse, which would show as growth here without being a leak.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn udp_flows_cost_little_memory_and_give_it_back_when_they_expire() {
    let echo = UdpEcho::start("127.14.9.100", "e").await;
    let vip = "127.14.9.10";
    let port = free_port(vip).await;
    let to: SocketAddr = (ip(vip), port).into();
    let idle = Duration::from_millis(1500);
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        udp_idle_timeout: idle,
        ..config()
    })
    .expect("config");
    let mut sp = ServicePort::new(
        ServicePortName::new("test", "mem", "u"),
        Protocol::Udp,
        port,
    )
    .with_cluster_ip(ip(vip));
    sp.endpoints = vec![echo.endpoint()];
    sync_ok(&mut dp, &table([sp])).await;

    let clients: Vec<std::net::UdpSocket> = (0..FLOWS)
        .map(|_| {
            let socket = std::net::UdpSocket::bind((ip("127.14.9.1"), 0)).expect("bind client");
            socket
                .set_read_timeout(Some(STEP))
                .expect("client read timeout");
            socket
        })
        .collect();
    // Warm up: the first flows allocate what every later one reuses (the runtime's slabs).
    assert_eq!(open_flows(to, &clients[..50]).await, 50);
    tokio::time::sleep(idle * 2).await;
    let before = resident_bytes();
    assert_eq!(open_flows(to, &clients).await, FLOWS, "every flow answered");
    assert_eq!(dp.connections_held().1, FLOWS, "flows held");
    let with_flows = resident_bytes();
    let per_flow = with_flows.saturating_sub(before) / FLOWS as u64;
    tokio::time::sleep(idle * 3).await;
    assert_eq!(dp.connections_held().1, 0, "every flow expired");
    let after = resident_bytes();
    // A second wave as large: what the first left behind (allocator pages the C library keeps
    // for reuse) is reused, not added to.
    assert_eq!(
        open_flows(to, &clients).await,
        FLOWS,
        "every flow answered again"
    );
    let second_wave = resident_bytes();
    tokio::time::sleep(idle * 3).await;
    assert_eq!(dp.connections_held().1, 0, "every flow expired again");
    let grown = with_flows.saturating_sub(before);
    let regrown = second_wave.saturating_sub(after);
    println!(
        "UDP flows: {per_flow} bytes resident per flow ({FLOWS} flows: {} KiB before, {} KiB \
         with them, {} KiB after expiry; a second wave grew it by {} KiB more)",
        before / 1024,
        with_flows / 1024,
        after / 1024,
        regrown / 1024
    );
    assert!(
        per_flow < 4 * 1024,
        "a UDP flow costs {per_flow} bytes resident"
    );
    assert!(
        regrown < grown / 2,
        "a second wave of {FLOWS} flows grew the resident set by {} KiB after the first grew it \
         by {} KiB: expired flows are not reused",
        regrown / 1024,
        grown / 1024
    );
}
