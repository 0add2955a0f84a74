//! The process out of descriptors (`EMFILE`): listeners back off and count failed accepts, and
//! a connect that fails for want of a descriptor ejects no endpoint. Alone in its binary: it
//! lowers the process's open-file limit and fills it.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::time::{Duration, Instant};

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use common::*;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::AsyncReadExt;

/// Descriptors open in this process now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count() as u64
}

/// Opens `/dev/null` until the process has no descriptor left (at most `most` times).
fn fill_descriptors(most: usize) -> Vec<File> {
    let mut files = Vec::new();
    for _ in 0..most {
        match File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(24), "EMFILE expected: {error}");
                return files;
            }
        }
    }
    panic!("{most} descriptors opened and still no EMFILE");
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_proxy_backs_off_and_ejects_no_endpoint() {
    let a = Whoami::start("127.15.4.100", "a").await;
    let vip = "127.15.4.10";
    let port = free_port(vip).await;
    let mut dp = UserspaceDataplane::new(UserspaceConfig {
        // Limits high enough not to help: this test is about what happens past them.
        max_connections: Some(100_000),
        max_connections_per_port: Some(100_000),
        eject_after_failures: 1,
        connect_attempts: 1,
        ..config()
    })
    .expect("config");
    sync_ok(
        &mut dp,
        &table([service("a", vip, port, vec![a.endpoint()])]),
    )
    .await;
    assert_eq!(ask((ip(vip), port).into()).await.expect("A answers"), "a");
    // That connection's descriptors (client, proxy, backend) all closed before the count below.
    eventually("the first connection over", || dp.connections_held().0 == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, open_descriptors() + 64, hard).expect("setrlimit");
    let mut files = fill_descriptors(1_000);

    // One descriptor for the client: the kernel completes the handshake, the proxy's accept
    // fails with EMFILE and backs off (counted, logged once).
    drop(files.pop());
    let mut client = connect_from(None, (ip(vip), port).into())
        .await
        .expect("the kernel accepts");
    eventually("a failed accept counted", || {
        dp.metrics().accept_errors.get() >= 1
    })
    .await;
    // One more: the accept succeeds, the connect to the endpoint has no descriptor left.
    drop(files.pop());
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(STEP, client.read(&mut byte))
        .await
        .expect("the proxy answers in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "no byte without an upstream: {read:?}"
    );
    assert_eq!(
        dp.metrics().endpoint_ejections.get(),
        0,
        "the proxy's own EMFILE ejects no endpoint"
    );

    drop(files);
    drop(client);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("restore the limit");
    assert_eq!(
        ask((ip(vip), port).into()).await.expect("A answers again"),
        "a"
    );
    assert_eq!(dp.metrics().endpoint_ejections.get(), 0);
}
