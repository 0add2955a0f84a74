//! The endpoints' servers: each answers a TCP connection or a UDP datagram with one line,
//! `<its own address:port> <the peer address it saw>`, so a probe learns which endpoint
//! answered and whether the connection was masqueraded on the way.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use testkit::netns::Netns;

use crate::topology::{TCP_PORTS, UDP_PORT};

/// How often the serving threads look at their stop flag when idle.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// What an endpoint answered: who it is and whom it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Answer {
    /// The endpoint's own address and port.
    pub endpoint: SocketAddr,
    /// The source address of the connection as the endpoint saw it.
    pub peer: IpAddr,
}

impl Answer {
    /// The line an endpoint sends.
    pub fn render(endpoint: SocketAddr, peer: IpAddr) -> String {
        format!("{endpoint} {peer}\n")
    }

    /// Reads a line sent by an endpoint; `None` when it is not one.
    pub fn parse(line: &str) -> Option<Self> {
        let (endpoint, peer) = line.trim().split_once(' ')?;
        Some(Self {
            endpoint: endpoint.parse().ok()?,
            peer: peer.parse().ok()?,
        })
    }
}

/// The servers of one endpoint address: TCP on [`TCP_PORTS`], UDP on [`UDP_PORT`]. Stopped on
/// drop.
#[derive(Debug)]
pub struct EndpointServers {
    addr: IpAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EndpointServers {
    /// Binds every server of `addr` inside `ns` (a socket stays in the namespace it was made
    /// in; the serving threads may run anywhere) and starts serving.
    ///
    /// # Panics
    ///
    /// When a socket cannot be bound.
    pub fn start(ns: &Netns, addr: IpAddr) -> Self {
        let (listeners, udp) = ns.run(move || {
            let listeners: Vec<TcpListener> = TCP_PORTS
                .iter()
                .map(|&port| {
                    TcpListener::bind((addr, port))
                        .unwrap_or_else(|e| panic!("bind endpoint {addr}:{port}/tcp: {e}"))
                })
                .collect();
            let udp = UdpSocket::bind((addr, UDP_PORT))
                .unwrap_or_else(|e| panic!("bind endpoint {addr}:{UDP_PORT}/udp: {e}"));
            (listeners, udp)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads: Vec<JoinHandle<()>> = listeners
            .into_iter()
            .map(|listener| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || serve_tcp(&listener, &stop))
            })
            .collect();
        let udp_stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || serve_udp(&udp, &udp_stop)));
        Self {
            addr,
            stop,
            threads,
        }
    }

    /// The endpoint address these servers answer on.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
}

impl Drop for EndpointServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &AtomicBool) {
    // Polled, so that the stop flag is seen within a few milliseconds.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(local) = listener.local_addr() else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, peer)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = conn.write_all(Answer::render(local, peer.ip()).as_bytes());
            }
            Err(_) => std::thread::sleep(IDLE_POLL),
        }
    }
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool) {
    if socket.set_read_timeout(Some(IDLE_POLL * 5)).is_err() {
        return;
    }
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(Answer::render(local, peer.ip()).as_bytes(), peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips_through_its_line() {
        let endpoint: SocketAddr = "198.18.1.10:8080".parse().expect("addr");
        let peer: IpAddr = "198.18.250.1".parse().expect("ip");
        let line = Answer::render(endpoint, peer);
        assert_eq!(line, "198.18.1.10:8080 198.18.250.1\n");
        assert_eq!(Answer::parse(&line), Some(Answer { endpoint, peer }));
        assert_eq!(Answer::parse("garbage"), None);
    }
}
