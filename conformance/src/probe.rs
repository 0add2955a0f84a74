//! One probe: a TCP connection or a UDP datagram from a bound source address to a service
//! address, run on a thread inside the source's namespace, and what came of it.

use std::fmt;
use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proxy_core::Protocol;
use socket2::{Domain, Socket, Type};

use crate::endpoints::Answer;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An endpoint answered.
    Answered(Answer),
    /// Refused fast: a TCP RST or an ICMP error (port or host unreachable, prohibited) to the
    /// SYN, or an ICMP error to the datagram.
    Refused(ErrorKind),
    /// Nothing came back within the timeout (dropped, or sent where nobody answers).
    TimedOut,
    /// The TCP connection was accepted, then closed or reset without an answer (a proxy that
    /// accepts first and finds no endpoint after).
    ClosedWithoutAnswer,
    /// Anything else (a local error, an answer that is not an endpoint's line).
    Other(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered(a) => write!(f, "answered by {} (saw {})", a.endpoint, a.peer),
            Outcome::Refused(kind) => write!(f, "refused ({kind:?})"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::ClosedWithoutAnswer => f.write_str("accepted, then closed without answer"),
            Outcome::Other(what) => write!(f, "error: {what}"),
        }
    }
}

/// How long a probe waits for an answer once it can come: bounded, but long enough for an
/// endpoint's thread (or a proxy) to be scheduled on a loaded host.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one probe from `src` (bound, port chosen by the kernel) to `dst` over `protocol`, in
/// the calling thread's namespace. `connect_timeout` bounds a TCP connect, after which a
/// dropped SYN counts as dropped; [`ANSWER_TIMEOUT`] (or `connect_timeout` if longer) bounds
/// each read, and the wait for a UDP answer (a dropped datagram looks like no answer).
pub fn probe(
    protocol: Protocol,
    src: IpAddr,
    dst: SocketAddr,
    connect_timeout: Duration,
) -> Outcome {
    let answer_timeout = ANSWER_TIMEOUT.max(connect_timeout);
    let result = match protocol {
        Protocol::Udp => probe_udp(src, dst, answer_timeout),
        _ => probe_tcp(src, dst, connect_timeout, answer_timeout),
    };
    result.unwrap_or_else(|e| Outcome::Other(e.to_string()))
}

fn bound_socket(src: IpAddr, dst: SocketAddr, ty: Type) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dst), ty, None)?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    Ok(socket)
}

/// Whether an error to a connect or a datagram means "refused fast".
fn is_refusal(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
    )
}

fn probe_tcp(
    src: IpAddr,
    dst: SocketAddr,
    connect_timeout: Duration,
    answer_timeout: Duration,
) -> std::io::Result<Outcome> {
    let socket = bound_socket(src, dst, Type::STREAM)?;
    if let Err(e) = socket.connect_timeout(&dst.into(), connect_timeout) {
        return Ok(match e.kind() {
            kind if is_refusal(kind) => Outcome::Refused(kind),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::TimedOut,
            _ => Outcome::Other(format!("connect: {e}")),
        });
    }
    socket.set_read_timeout(Some(answer_timeout))?;
    let mut stream: std::net::TcpStream = socket.into();
    let mut text = String::new();
    match stream.read_to_string(&mut text) {
        Ok(_) => {}
        Err(e) if text.is_empty() && e.kind() == ErrorKind::ConnectionReset => {
            return Ok(Outcome::ClosedWithoutAnswer)
        }
        Err(e)
            if text.is_empty()
                && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
        {
            return Ok(Outcome::Other(format!(
                "connected, no answer within {answer_timeout:?}"
            )))
        }
        Err(e) if text.is_empty() => return Ok(Outcome::Other(format!("read: {e}"))),
        // An answer followed by a reset still names the endpoint.
        Err(_) => {}
    }
    Ok(if text.is_empty() {
        Outcome::ClosedWithoutAnswer
    } else {
        match Answer::parse(&text) {
            Some(answer) => Outcome::Answered(answer),
            None => Outcome::Other(format!("not an endpoint's answer: {text:?}")),
        }
    })
}

fn probe_udp(src: IpAddr, dst: SocketAddr, timeout: Duration) -> std::io::Result<Outcome> {
    let socket = bound_socket(src, dst, Type::DGRAM)?;
    // Connected, so that an ICMP error to the datagram comes back as ECONNREFUSED.
    socket.connect(&dst.into())?;
    socket.set_read_timeout(Some(timeout))?;
    let socket: std::net::UdpSocket = socket.into();
    socket.send(b"who are you?\n")?;
    let mut buf = [0u8; 512];
    Ok(match socket.recv(&mut buf) {
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            match Answer::parse(&text) {
                Some(answer) => Outcome::Answered(answer),
                None => Outcome::Other(format!("not an endpoint's answer: {text:?}")),
            }
        }
        Err(e) if is_refusal(e.kind()) => Outcome::Refused(e.kind()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::TimedOut
        }
        Err(e) => Outcome::Other(format!("recv: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn tcp_probe_reads_an_answer_and_sees_a_refusal() {
        let listener = TcpListener::bind((LO, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().expect("accept");
            std::io::Write::write_all(&mut conn, Answer::render(addr, peer.ip()).as_bytes())
                .expect("write");
        });
        let outcome = probe(Protocol::Tcp, LO, addr, Duration::from_secs(2));
        server.join().expect("server");
        assert_eq!(
            outcome,
            Outcome::Answered(Answer {
                endpoint: addr,
                peer: LO
            })
        );
        // Nothing listens there any more: the kernel answers the SYN with a RST.
        assert_eq!(
            probe(Protocol::Tcp, LO, addr, Duration::from_secs(2)),
            Outcome::Refused(ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn udp_probe_reads_an_answer_and_sees_a_port_unreachable() {
        let socket = UdpSocket::bind((LO, 0)).expect("bind");
        let addr = socket.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (_, peer) = socket.recv_from(&mut buf).expect("recv");
            socket
                .send_to(Answer::render(addr, peer.ip()).as_bytes(), peer)
                .expect("send");
        });
        let outcome = probe(Protocol::Udp, LO, addr, Duration::from_secs(2));
        server.join().expect("server");
        assert!(
            matches!(outcome, Outcome::Answered(a) if a.endpoint == addr),
            "{outcome}"
        );
        assert_eq!(
            probe(Protocol::Udp, LO, addr, Duration::from_secs(2)),
            Outcome::Refused(ErrorKind::ConnectionRefused)
        );
    }
}
