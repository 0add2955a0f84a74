//! Helpers for loopback tests: named backends, clients, tables and syncs. Every test uses its
//! own `127.<net>.<sub>.0/24`-style addresses so tests can run in parallel.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use proxy_core::dataplane::{Dataplane, SyncMode, SyncReport, SyncRequest};
use proxy_core::diff;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Upper bound for any single network step in a test.
pub const STEP: Duration = Duration::from_secs(5);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid ip")
}

/// A config with short timeouts for tests.
pub fn config() -> UserspaceConfig {
    UserspaceConfig {
        connect_timeout: Duration::from_millis(500),
        ejection_time: Duration::from_millis(500),
        ..UserspaceConfig::default()
    }
}

/// A TCP backend that greets each connection with `name\n`, echoes what it reads, and after the
/// client's EOF writes `bye from name` and closes: this shows half-close both ways.
#[derive(Debug)]
pub struct Whoami {
    pub addr: SocketAddr,
    pub name: String,
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Whoami {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Whoami {
    pub async fn start(ip_text: &str, name: &str) -> Whoami {
        Self::start_at(SocketAddr::new(ip(ip_text), 0), name).await
    }

    pub async fn start_at(addr: SocketAddr, name: &str) -> Whoami {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let greeting = name.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    if stream
                        .write_all(format!("{greeting}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                        let _ = write
                            .write_all(format!("bye from {greeting}").as_bytes())
                            .await;
                        let _ = write.shutdown().await;
                    }
                });
            }
        });
        Whoami {
            addr,
            name: name.to_owned(),
            accepted,
            task,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr.ip(), self.addr.port())
    }
}

/// Connects through the proxy and returns the greeting (the backend's name); closes at once.
pub async fn ask(addr: SocketAddr) -> std::io::Result<String> {
    ask_from(None, addr).await
}

/// As [`ask`], from a chosen local address.
pub async fn ask_from(source: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<String> {
    let stream = connect_from(source, addr).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(STEP, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))??;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without greeting",
        ));
    }
    Ok(line.trim_end().to_owned())
}

pub async fn connect_from(source: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    tokio::time::timeout(STEP, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Reads the greeting line of an open connection.
pub async fn greeting(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(STEP, stream.read(&mut byte))
            .await
            .expect("greeting in time")
            .expect("greeting read");
        assert!(
            n == 1,
            "connection closed before the greeting ended: {line:?}"
        );
        if byte[0] == b'\n' {
            return String::from_utf8(line).expect("utf8 greeting");
        }
        line.push(byte[0]);
    }
}

/// An address on `ip` with a port that was free a moment ago.
pub async fn free_port(ip_text: &str) -> u16 {
    let listener = std::net::TcpListener::bind((ip(ip_text), 0)).expect("probe bind");
    let udp = std::net::UdpSocket::bind((ip(ip_text), listener.local_addr().expect("addr").port()));
    let port = listener.local_addr().expect("addr").port();
    drop(udp);
    port
}

/// A TCP service port `ns/name:p` on `vip:port` with `endpoints`.
pub fn service(name: &str, vip: &str, port: u16, endpoints: Vec<Endpoint>) -> ServicePort {
    let mut sp = ServicePort::new(ServicePortName::new("test", name, "p"), Protocol::Tcp, port)
        .with_cluster_ip(ip(vip));
    sp.endpoints = endpoints;
    sp
}

pub fn table(ports: impl IntoIterator<Item = ServicePort>) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for port in ports {
        builder = builder.insert(port);
    }
    builder.build().expect("valid table")
}

/// Syncs `dp` to `table` (full sync, diff from empty).
pub async fn sync(dp: &mut UserspaceDataplane, table: &ServiceTable) -> SyncReport {
    let changes = diff(&ServiceTable::empty(), table);
    dp.sync(SyncRequest {
        desired: table,
        changes: &changes,
        mode: SyncMode::Full,
    })
    .await
    .expect("sync never fails as a whole")
}

/// Syncs and asserts that everything applied.
pub async fn sync_ok(dp: &mut UserspaceDataplane, table: &ServiceTable) {
    let report = sync(dp, table).await;
    assert!(report.is_complete(), "{report}");
}

/// A UDP backend that answers each datagram with `name:payload`.
#[derive(Debug)]
pub struct UdpEcho {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpEcho {
    pub async fn start(ip_text: &str, name: &str) -> UdpEcho {
        let socket = UdpSocket::bind((ip(ip_text), 0))
            .await
            .expect("bind udp backend");
        let addr = socket.local_addr().expect("addr");
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        UdpEcho { addr, task }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr.ip(), self.addr.port())
    }
}

/// Sends `payload` from `socket` to `to` and waits up to `wait` for one reply.
pub async fn udp_ask(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &str,
    wait: Duration,
) -> Option<String> {
    socket
        .send_to(payload.as_bytes(), to)
        .await
        .expect("udp send");
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, to, "reply must come from the service address");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        Ok(Err(error)) => panic!("udp recv: {error}"),
        Err(_) => None,
    }
}
