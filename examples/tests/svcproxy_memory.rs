//! svcproxy gives memory back: the resident set of the released binary grows with UDP flows and
//! falls back once they expire (issue #10: with glibc's malloc, 453 MB stayed resident after
//! 20,000 flows had expired, and a second wave on other threads grew it again). Alone in its
//! binary: it opens thousands of sockets and reads svcproxy's `VmRSS`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::fs::TempDir;
use testkit::process::LoggedChild;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const VIP: Ipv4Addr = Ipv4Addr::new(127, 14, 10, 10);
const ECHO: Ipv4Addr = Ipv4Addr::new(127, 14, 10, 100);
const CLIENTS: Ipv4Addr = Ipv4Addr::new(127, 14, 10, 1);
const FLOWS: usize = 6_000;

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A UDP echo server on its own thread (so the test's clients and it cost svcproxy nothing).
fn start_echo() -> SocketAddr {
    let socket = UdpSocket::bind((ECHO, 0)).expect("bind echo");
    let addr = socket.local_addr().expect("echo address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// One datagram and its echo through the proxy per client socket (so one flow each); how many
/// were answered.
fn open_flows(to: SocketAddr, clients: &[UdpSocket]) -> usize {
    let mut buf = [0u8; 64];
    clients
        .iter()
        .filter(|client| {
            client.send_to(b"ping", to).expect("send");
            client.recv_from(&mut buf).is_ok()
        })
        .count()
}

fn clients(count: usize) -> Vec<UdpSocket> {
    (0..count)
        .map(|_| {
            let socket = UdpSocket::bind((CLIENTS, 0)).expect("bind client");
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("read timeout");
            socket
        })
        .collect()
}

#[test]
fn the_memory_of_expired_udp_flows_goes_back_to_the_system() {
    // Room for the clients' sockets (the soft limit may be 1,024; the hard one is higher).
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(
        hard >= 2 * FLOWS as u64,
        "open-file hard limit {hard} is too low for the test"
    );
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the soft open-file limit");

    let echo = start_echo();
    let port = UdpSocket::bind((VIP, 0))
        .and_then(|probe| probe.local_addr())
        .expect("probe a free port")
        .port();
    let dir = TempDir::new("svcproxy-memory");
    let table = dir.join("table.yaml");
    std::fs::write(
        &table,
        format!(
            "node: test\nservices:\n  - name: default/dns\n    cluster_ips: [{VIP}]\n    \
             idle_timeout_seconds: 1\n    ports:\n      - {{name: dns, protocol: udp, port: \
             {port}, target_port: {}}}\n    endpoints:\n      - {{ip: {ECHO}}}\n",
            echo.port()
        ),
    )
    .expect("write table");
    let proxy = LoggedChild::spawn(
        "svcproxy",
        Command::new(SVCPROXY)
            .arg("--services")
            .arg(&table)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    let pid = proxy.id();
    let to = SocketAddr::from((VIP, port));

    // Warm up (the runtime's threads, the first allocations), let those flows expire.
    let warm = clients(50);
    poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match open_flows(to, &warm[..1]) {
            1 => Ok(()),
            n => Err(n),
        },
    )
    .unwrap_or_else(|_| panic!("the proxy never answered; log:\n{}", proxy.log()));
    assert_eq!(open_flows(to, &warm), warm.len(), "warm-up flows");
    std::thread::sleep(Duration::from_secs(4));
    let base = rss_kib(pid);

    let flows = clients(FLOWS);
    let answered = open_flows(to, &flows);
    assert!(
        answered >= FLOWS * 9 / 10,
        "only {answered} of {FLOWS} flows answered"
    );
    let with = rss_kib(pid);
    let grown = with.saturating_sub(base);
    assert!(
        grown >= 4 * 1024,
        "{FLOWS} flows should cost megabytes (grew {grown} KiB): nothing measured"
    );

    // The flows expire after 1 s idle; the allocator then has its decay time to give the pages
    // back. Wait for the resident set to fall to within a quarter of the growth.
    let started = Instant::now();
    let mut now = with;
    while started.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(500));
        now = rss_kib(pid);
        if now.saturating_sub(base) <= grown / 4 {
            break;
        }
    }
    assert!(
        now.saturating_sub(base) <= grown / 4,
        "resident set: {base} KiB before, {with} KiB with {answered} flows, still {now} KiB \
         {:.0} s after they expired",
        started.elapsed().as_secs_f64()
    );
    drop(flows);
    let (_, log) = proxy.terminate(Duration::from_secs(5));
    assert!(!log.contains("panicked"), "{log}");
}
