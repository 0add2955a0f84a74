//! The TCP pump's two modes, seen from outside: short exchanges are copied through without a
//! pipe, bulk transfers switch to `splice(2)` pipes (Linux). Its own test binary (one process)
//! so that no other test's pipes are counted.

mod common;

use std::time::Duration;

use backend_userspace::UserspaceDataplane;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pipes this process holds open.
#[cfg(target_os = "linux")]
fn open_pipes() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// Waits up to [`STEP`] for `check` to hold.
#[cfg(target_os = "linux")]
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + STEP;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_exchanges_use_no_pipe_and_bulk_switches_to_splice() {
    let backend = Whoami::start("127.11.40.100", "b1").await;
    let vip = "127.11.40.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(config()).expect("config");
    sync_ok(
        &mut dp,
        &table([service("web", vip, port, vec![backend.endpoint()])]),
    )
    .await;
    let pipes_before = open_pipes();

    // Request after request on one connection: copied through, no pipe.
    let mut short = connect_from(None, (ip(vip), port).into())
        .await
        .expect("connect");
    assert_eq!(greeting(&mut short).await, "b1");
    for round in 0..20u8 {
        let message = [round; 100];
        short.write_all(&message).await.expect("write");
        let mut echo = [0u8; 100];
        tokio::time::timeout(STEP, short.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(echo, message, "round {round}");
    }
    assert_eq!(open_pipes(), pipes_before, "a short exchange made a pipe");

    // 8 MiB sent while nothing is read back: both directions fill the read buffer, switch to
    // splice and stall with their pipes open (the echo cannot reach us).
    let bulk = connect_from(None, (ip(vip), port).into())
        .await
        .expect("connect");
    let (mut read, mut write) = bulk.into_split();
    let payload: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("write");
        write.shutdown().await.expect("half-close");
    });
    assert!(
        eventually(|| open_pipes() >= pipes_before + 2).await,
        "a bulk transfer must splice: {} pipes, {pipes_before} before",
        open_pipes()
    );
    let mut received = Vec::new();
    tokio::time::timeout(STEP, read.read_to_end(&mut received))
        .await
        .expect("in time")
        .expect("read");
    writer.await.expect("writer");
    let expected = [b"b1\n".as_slice(), &payload, b"bye from b1"].concat();
    assert!(
        received == expected,
        "bytes differ: {} received, {} expected",
        received.len(),
        expected.len()
    );
    drop(read);
    drop(short);
    assert!(
        eventually(|| open_pipes() == pipes_before).await,
        "pipes must close with their connections"
    );
}
