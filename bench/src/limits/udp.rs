//! UDP for the flow scenario: an echo backend, and clients that each open one flow through the
//! proxy (one socket per client, so one source port per flow).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::BenchError;

/// How long a client waits for its echo.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// A UDP echo server on one address; stops when dropped.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpEcho {
    /// Binds `ip:port` (0: any free port) and echoes every datagram to its sender.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] when the address cannot be bound.
    pub async fn start(ip: IpAddr, port: u16) -> Result<UdpEcho, BenchError> {
        let socket = tokio::net::UdpSocket::bind((ip, port))
            .await
            .map_err(|e| BenchError::io(format!("bind UDP echo {ip}:{port}"), e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| BenchError::io("local address of the UDP echo", e))?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((len, from)) => {
                        if let Err(e) = socket.send_to(&buf[..len], from).await {
                            tracing::trace!(error = %e, "UDP echo send");
                        }
                    }
                    Err(e) => {
                        tracing::trace!(error = %e, "UDP echo receive");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        Ok(UdpEcho { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `count` client sockets on `ip`, each on its own port.
///
/// # Errors
///
/// [`BenchError::Io`] when a socket cannot be made (descriptors ran out).
pub fn clients(ip: IpAddr, count: usize) -> Result<Vec<UdpSocket>, BenchError> {
    (0..count)
        .map(|_| {
            let socket =
                UdpSocket::bind((ip, 0)).map_err(|e| BenchError::io(format!("bind {ip}:0"), e))?;
            socket
                .set_read_timeout(Some(REPLY_TIMEOUT))
                .map_err(|e| BenchError::io("SO_RCVTIMEO", e))?;
            Ok(socket)
        })
        .collect()
}

/// Each client sends one datagram to `to` and waits for its echo: one flow per client. Runs on a
/// blocking thread; stops at `time_limit`. Returns how many were answered.
pub async fn open_flows(to: SocketAddr, clients: &[UdpSocket], time_limit: Duration) -> usize {
    let clients: Vec<UdpSocket> = clients
        .iter()
        .filter_map(|socket| socket.try_clone().ok())
        .collect();
    let work = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + time_limit;
        let mut answered = 0;
        let mut buf = [0u8; 64];
        for client in &clients {
            if Instant::now() >= deadline {
                break;
            }
            if client.send_to(b"flow", to).is_ok() && client.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        answered
    });
    work.await.unwrap_or(0)
}

/// Each client sends one datagram to `to` without waiting for a reply (for opening flows past
/// the proxy's limit, whose datagrams are dropped), paced at [`PACE_BURST`] datagrams per
/// millisecond so the listener's receive buffer does not overflow. Returns how many were sent.
pub async fn send_once(to: SocketAddr, clients: &[UdpSocket]) -> usize {
    let clients: Vec<UdpSocket> = clients
        .iter()
        .filter_map(|socket| socket.try_clone().ok())
        .collect();
    let work = tokio::task::spawn_blocking(move || {
        let mut sent = 0;
        for burst in clients.chunks(PACE_BURST) {
            sent += burst
                .iter()
                .filter(|client| client.send_to(b"flow", to).is_ok())
                .count();
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    });
    work.await.unwrap_or(0)
}

/// Datagrams [`send_once`] sends back to back.
const PACE_BURST: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_client_gets_its_echo() {
        let ip: IpAddr = "127.0.0.1".parse().expect("literal");
        let echo = UdpEcho::start(ip, 0).await.expect("bind loopback");
        let clients = clients(ip, 20).expect("20 sockets");
        let ports: std::collections::BTreeSet<u16> = clients
            .iter()
            .filter_map(|c| c.local_addr().ok().map(|a| a.port()))
            .collect();
        assert_eq!(ports.len(), 20, "one source port per client");
        let answered = open_flows(echo.addr(), &clients, Duration::from_secs(10)).await;
        assert_eq!(answered, 20);
        assert_eq!(send_once(echo.addr(), &clients).await, 20);
    }
}
